/* contactfs: the command line. */
#include "cli_int.h"

#include "fs.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *f)
{
	fputs("usage: contactfs [-f] [-d] [-o OPTIONS] [SOURCE] MOUNTPOINT\n"
	      "       contactfs status [MOUNTPOINT...]\n"
	      "       contactfs convert --to json|vcard [--vcard-version 3.0|4.0] [FILE]\n"
	      "       contactfs export [-o OPTIONS] [--vcard-version 3.0|4.0] DIR\n"
	      "       contactfs login [--tenant T] --client-id ID [-o OPTIONS]\n"
	      "       contactfs logout [-o OPTIONS]\n"
	      "       contactfs --help | --version\n"
	      "\n"
	      "MOUNTPOINT           mount the mailbox's contacts there (see below and\n"
	      "                     man contactfs); unmount with fusermount3 -u\n"
	      "status               what each mount is doing: sync state, pending and\n"
	      "                     parked changes, last errors\n"
	      "convert --to json    read vCards (FILE or standard input), write the Graph\n"
	      "                     create-contact body (an array for several cards)\n"
	      "convert --to vcard   read Graph contact JSON (object or array), write vCard\n"
	      "                     (3.0 unless --vcard-version 4.0)\n"
	      "export               write the whole mailbox into DIR as a vdir: a directory\n"
	      "                     per contact folder, a .vcf per contact\n"
	      "login                sign in with the device code flow (open the URL shown,\n"
	      "                     enter the code) and store the refresh token; ID is\n"
	      "                     your app registration's client id\n"
	      "logout               forget the stored refresh token\n"
	      "OPTIONS              graph_url=,auth_url=,user=UPN,token_cmd=CMD,client_id=,\n"
	      "                     tenant= (comma-separated; \\, for a comma in a value)\n"
	      "Exit status: 0 success, 64 usage, 65 invalid input, 66 cannot open FILE.\n"
	      "\n",
	      f);
	fs_mount_usage(f);
}

int main(int argc, char **argv)
{
	char errbuf[512];

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
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	/* Every other command may read the token or the cache: find them in
	 * the user's own home, never relative to the working directory. */
	if (cli_home_init(errbuf, sizeof(errbuf))) {
		fprintf(stderr, "contactfs: %s\n", errbuf);
		return EXIT_USAGE;
	}
	if (argc >= 2 && !strcmp(argv[1], "export"))
		return export_main(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "login"))
		return login_main(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "logout"))
		return logout_main(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "status"))
		return status_main(argc - 1, argv + 1);
	return fs_mount_main(argc, argv);
}
