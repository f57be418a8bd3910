/*
 * fs — the FUSE filesystem: the mailbox's contacts, as cache/ keeps them, at
 * a mount point. The only module that includes FUSE headers; this header
 * does not, so the command line (cli/) calls it without them.
 *
 * The whole API is the mount command's entry: it parses the mount's own
 * options and libfuse's, opens the cache, mounts, and serves until
 * unmounted. Nothing here includes cli/.
 */
#ifndef CONTACTFS_FS_H
#define CONTACTFS_FS_H

#include <stdio.h>

/*
 * contactfs [-f] [-d] [-o OPTIONS] [SOURCE] MOUNTPOINT: mount the mailbox
 * (argv[0] is the program's name). Returns the process's exit status (0:
 * mounted and unmounted cleanly; else util.h's EXIT_*). Without -f it forks:
 * the parent exits from here once the child has mounted or given up.
 * Call once per process, before any thread starts.
 */
int fs_mount_main(int argc, char **argv);

/* The mount's usage text, written to f. */
void fs_mount_usage(FILE *f);

#endif
