/* Private to fs/: the subcommands of the contactfs command line. */
#ifndef CONTACTFS_FS_INT_H
#define CONTACTFS_FS_INT_H

/* Exit codes from sysexits.h, spelled out so no header is needed. */
enum {
	EXIT_USAGE = 64,    /* bad command line */
	EXIT_DATAERR = 65,  /* invalid input */
	EXIT_NOINPUT = 66,  /* input file cannot be opened */
	EXIT_SOFTWARE = 70, /* out of memory or an internal error */
	EXIT_IOERR = 74,    /* cannot write the output */
};

/* contactfs convert --to json|vcard [--vcard-version 3.0|4.0] [FILE] */
int convert_main(int argc, char **argv);

#endif
