/* Private to fs/: the subcommands of the contactfs command line. */
#ifndef CONTACTFS_FS_INT_H
#define CONTACTFS_FS_INT_H

/* Exit codes from sysexits.h, spelled out so no header is needed. */
enum {
	EXIT_USAGE = 64,       /* bad command line */
	EXIT_DATAERR = 65,     /* invalid input */
	EXIT_NOINPUT = 66,     /* input file cannot be opened */
	EXIT_UNAVAILABLE = 69, /* the service cannot be reached */
	EXIT_SOFTWARE = 70,    /* out of memory or an internal error */
	EXIT_CANTCREAT = 73,   /* cannot create the output */
	EXIT_IOERR = 74,       /* cannot write the output */
	EXIT_TEMPFAIL = 75,    /* try again (a sign-in code expired) */
	EXIT_PROTOCOL = 76,    /* the service answered something unexpected */
	EXIT_NOPERM = 77,      /* not signed in, or access refused */
};

#include <stddef.h>
#include <stdio.h>

#include <cjson/cJSON.h>

/* contactfs convert --to json|vcard [--vcard-version 3.0|4.0] [FILE] */
int convert_main(int argc, char **argv);

/* contactfs export [-o OPTIONS] [--vcard-version 3.0|4.0] DIR */
int export_main(int argc, char **argv);

/* contactfs login [--tenant T] --client-id ID [-o OPTIONS] */
int login_main(int argc, char **argv);

/* contactfs logout [-o OPTIONS] */
int logout_main(int argc, char **argv);

/* contactfs [-f] [-d] [-o OPTIONS] [SOURCE] MOUNTPOINT: mount the mailbox. */
int mount_main(int argc, char **argv);
/* The mount's usage text. */
void mount_usage(FILE *f);

/* contactfs status [MOUNTPOINT...]: what a mount is doing, in words. */
int status_main(int argc, char **argv);

/*
 * Make HOME the real user's home (fs/home.c says when it is not): kept when
 * it is an absolute path to a directory the real user owns, else set from
 * the password database; XDG_CONFIG_HOME and XDG_CACHE_HOME are dropped when
 * they name another user's directory. Call before any thread starts. 0, or
 * -ENOENT with the reason in errbuf when there is no absolute HOME to be had
 * (then nothing was changed), or -ENOMEM.
 */
int fs_home_init(char *errbuf, size_t errsize) __attribute__((warn_unused_result));

struct graph_config;

/*
 * Parse one -o OPTIONS (libfuse style: comma-separated key=value; "\," and
 * "\\" for a comma or a backslash inside a value) into cfg: graph_url,
 * auth_url, user, token_cmd, client_id, tenant; cache_dir is accepted and
 * ignored for now.
 *
 * Ownership: the strings set in cfg point into *copy, a malloc'd copy owned
 * by the caller. Start with *copy == NULL, pass the same copy to every call
 * (one per -o; a later value wins), and free(*copy) once cfg is no longer
 * used (graph_new copies what it keeps). A call parses the earlier specs
 * again, so set cfg fields yourself after the last call, not between calls.
 *
 * 0; -EINVAL with the reason in errbuf (an unknown key, a missing value), or
 * -ENOMEM. On failure cfg and *copy are unchanged.
 */
int options_parse(const char *spec, struct graph_config *cfg, char **copy, char *errbuf,
		  size_t errsize) __attribute__((warn_unused_result));

#endif
