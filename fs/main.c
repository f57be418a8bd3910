/* contactfs: the command line. */
#include "fs_int.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *f)
{
	fputs("usage: contactfs convert --to json|vcard [--vcard-version 3.0|4.0] [FILE]\n"
	      "       contactfs --help | --version\n"
	      "\n"
	      "convert --to json    read vCards (FILE or standard input), write the Graph\n"
	      "                     create-contact body (an array for several cards)\n"
	      "convert --to vcard   read Graph contact JSON (object or array), write vCard\n"
	      "                     (3.0 unless --vcard-version 4.0)\n"
	      "Exit status: 0 success, 64 usage, 65 invalid input, 66 cannot open FILE.\n",
	      f);
}

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "convert"))
		return convert_main(argc - 1, argv + 1);
	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		usage(stdout);
		return 0;
	}
	if (argc == 2 && (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V"))) {
		printf("contactfs %s\n", CONTACTFS_VERSION);
		return 0;
	}
	usage(stderr);
	return EXIT_USAGE;
}
