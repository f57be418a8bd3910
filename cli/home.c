/*
 * HOME, XDG_CONFIG_HOME and XDG_CACHE_HOME as the real user's own.
 *
 * graph/ finds the token file, and cache/ the cache, through these three
 * variables, and they are not always the user's. mount(8) runs the helper of
 * a "user" mount from /etc/fstab with the environment of a setuid program,
 * from which util-linux drops HOME; su and sudo may leave another user's
 * (HOME=/root). A token or cache looked for there is not found, or a path
 * relative to the working directory is used.
 *
 * So HOME is kept when it is an absolute path to a directory the real user
 * owns, and otherwise set to that user's home in the password database
 * (getpwuid_r of the real uid). An XDG_* variable naming an existing
 * directory of another user is dropped, so that the default below HOME
 * applies. The real uid is the one that matters: it is the user the mount
 * belongs to (mount(8) drops to it before running the helper).
 */
#include "cli_int.h"

#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Whether path is an absolute path to an existing directory owned by uid. */
static int owned_dir(const char *path, uid_t uid)
{
	struct stat st;

	return path && path[0] == '/' && !stat(path, &st) && S_ISDIR(st.st_mode) &&
	       st.st_uid == uid;
}

/* Whether path is an existing directory that belongs to someone else. */
static int foreign_dir(const char *path, uid_t uid)
{
	struct stat st;

	return path && path[0] == '/' && !stat(path, &st) && st.st_uid != uid;
}

int cli_home_init(char *errbuf, size_t errsize)
{
	const char *home = getenv("HOME");
	uid_t uid = getuid();
	struct passwd pw, *found = NULL;
	char *scratch = NULL;
	long size = sysconf(_SC_GETPW_R_SIZE_MAX);
	int r = 0;

	if (!owned_dir(home, uid)) {
		if (size <= 0)
			size = 16384;
		if (!(scratch = malloc((size_t)size))) {
			snprintf(errbuf, errsize, "out of memory");
			return -ENOMEM;
		}
		r = getpwuid_r(uid, &pw, scratch, (size_t)size, &found);
		if (found && found->pw_dir[0] == '/') {
			r = setenv("HOME", found->pw_dir, 1) ? -errno : 0;
			if (r)
				snprintf(errbuf, errsize, "setting HOME: %s", strerror(-r));
		} else if (home && home[0] == '/') {
			r = 0; /* not the user's, but nothing better is known */
		} else {
			snprintf(errbuf, errsize,
				 "no home directory: HOME is %s and uid %u has no home in the "
				 "password database%s%s; set HOME",
				 home ? "relative" : "not set", (unsigned)uid, r ? ": " : "",
				 r ? strerror(r) : "");
			r = -ENOENT;
		}
	}
	free(scratch);
	if (r)
		return r;
	if (foreign_dir(getenv("XDG_CONFIG_HOME"), uid))
		unsetenv("XDG_CONFIG_HOME");
	if (foreign_dir(getenv("XDG_CACHE_HOME"), uid))
		unsetenv("XDG_CACHE_HOME");
	return 0;
}
