/*
 * contactfs status [MOUNTPOINT...]: what each mount is doing, read from its
 * .contactfs/status. Without a mount point, every contactfs mount of this
 * user found in /proc/self/mountinfo.
 */
#include "cli_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Print MOUNTPOINT/.contactfs/status. 0, or an exit code. */
static int show(const char *mountpoint)
{
	char path[4096], data[8192];
	ssize_t n;
	int fd, bol = 1;

	if ((size_t)snprintf(path, sizeof(path), "%s/.contactfs/status", mountpoint) >=
	    sizeof(path)) {
		fprintf(stderr, "contactfs status: %s: path too long\n", mountpoint);
		return EXIT_USAGE;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "contactfs status: %s: %s\n", mountpoint,
			errno == ENOENT ? "not a contactfs mount" : strerror(errno));
		return EXIT_NOINPUT;
	}
	printf("%s\n", mountpoint);
	while ((n = read(fd, data, sizeof(data))) > 0) {
		/* Indent every line under the mount point. */
		for (ssize_t i = 0; i < n; i++) {
			if (bol)
				fputs("  ", stdout);
			putchar(data[i]);
			bol = data[i] == '\n';
		}
	}
	close(fd);
	if (n < 0) {
		fprintf(stderr, "contactfs status: %s: %s\n", path, strerror(errno));
		return EXIT_IOERR;
	}
	return 0;
}

/* Split s in place at spaces into at most max fields; returns how many. */
static int split(char *s, char **fields, int max)
{
	int k = 0;

	while (*s && k < max) {
		while (*s == ' ')
			s++;
		if (!*s)
			break;
		fields[k++] = s;
		while (*s && *s != ' ')
			s++;
		if (*s)
			*s++ = '\0';
	}
	return k;
}

/* Undo mountinfo's octal escapes (\040 for a space) in place. */
static void unescape(char *s)
{
	char *w = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*w++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*w++ = *s;
		}
	}
	*w = '\0';
}

int status_main(int argc, char **argv)
{
	FILE *f;
	char *line = NULL;
	size_t cap = 0;
	int rc = 0, found = 0;

	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		printf("usage: contactfs status [MOUNTPOINT...]\n"
		       "Shows each contactfs mount's sync state, pending and parked changes and\n"
		       "last errors (all mounts when none is given).\n");
		return 0;
	}
	if (argc >= 2) {
		for (int i = 1; i < argc; i++) {
			int r = show(argv[i]);

			if (r && !rc)
				rc = r;
		}
		return rc;
	}
	f = fopen("/proc/self/mountinfo", "re");
	if (!f) {
		fprintf(stderr, "contactfs status: /proc/self/mountinfo: %s\n", strerror(errno));
		return EXIT_NOINPUT;
	}
	while (getline(&line, &cap, f) > 0) {
		/* id parent major:minor root MOUNTPOINT options ... - FSTYPE source ... */
		char *fields[6], *after[1], *sep = strstr(line, " - ");

		if (!sep)
			continue;
		*sep = '\0';
		if (split(sep + 3, after, 1) < 1 || strcmp(after[0], "fuse.contactfs") ||
		    split(line, fields, 6) < 5)
			continue;
		unescape(fields[4]);
		if (found++)
			putchar('\n');
		if (show(fields[4]) && !rc)
			rc = EXIT_NOINPUT;
	}
	free(line);
	fclose(f);
	if (!found) {
		fprintf(stderr, "contactfs status: no contactfs mount\n");
		return EXIT_NOINPUT;
	}
	return rc;
}
