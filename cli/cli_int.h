/*
 * Private to cli/: the subcommands of the contactfs command line, one file
 * each. main.c picks one; the mount itself is fs/'s (fs_mount_main).
 * Exit statuses are util.h's (sysexits.h's, spelled out).
 */
#ifndef CONTACTFS_CLI_INT_H
#define CONTACTFS_CLI_INT_H

#include <stddef.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "util.h"

/* contactfs convert --to json|vcard [--vcard-version 3.0|4.0] [FILE] */
int convert_main(int argc, char **argv);

/* contactfs export [-o OPTIONS] [--vcard-version 3.0|4.0] DIR */
int export_main(int argc, char **argv);

/* contactfs login [--tenant T] --client-id ID [-o OPTIONS] */
int login_main(int argc, char **argv);

/* contactfs logout [-o OPTIONS] */
int logout_main(int argc, char **argv);

/* contactfs status [MOUNTPOINT...]: what a mount is doing, in words. */
int status_main(int argc, char **argv);

/*
 * Make HOME the real user's home (cli/home.c says when it is not): kept when
 * it is an absolute path to a directory the real user owns, else set from
 * the password database; XDG_CONFIG_HOME and XDG_CACHE_HOME are dropped when
 * they name another user's directory. Call before any thread starts. 0, or
 * -ENOENT with the reason in errbuf when there is no absolute HOME to be had
 * (then nothing was changed), or -ENOMEM.
 */
int cli_home_init(char *errbuf, size_t errsize) __attribute__((warn_unused_result));

#endif
