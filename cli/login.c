/*
 * contactfs login / logout: the device code sign-in, and forgetting it.
 *
 * login prints the URL and code on stderr, waits while the person signs in
 * elsewhere (any browser, any device), and leaves the refresh token in the
 * token file (graph_login says where and how). Nothing secret is printed: the
 * code shown is the one the person types, not the device code.
 */
#include "cli_int.h"

#include "graph.h"
#include "graph.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int usage(const char *cmd, const char *what)
{
	if (what)
		fprintf(stderr, "contactfs %s: %s\n", cmd, what);
	fprintf(stderr,
		"usage: contactfs login [--tenant T] --client-id ID [-o OPTIONS]\n"
		"       contactfs logout [-o OPTIONS]\n"
		"OPTIONS: graph_url=,auth_url=,user=UPN,client_id=,tenant= (comma-separated)\n"
		"login exits 0 when signed in, 69 when the identity endpoint cannot be\n"
		"reached, 75 when the code expired, 77 when the sign-in was declined.\n");
	return EXIT_USAGE;
}

/* The options both commands take; --tenant and --client-id win over -o. */
static int parse_args(const char *cmd, int argc, char **argv, struct graph_config *cfg, char **copy)
{
	const char *tenant = NULL, *client_id = NULL;
	char errbuf[256];

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if ((!strcmp(a, "--tenant") || !strcmp(a, "--client-id") || !strcmp(a, "-o")) &&
		    i + 1 >= argc)
			return usage(cmd, "an option is missing its value");
		if (!strcmp(a, "--tenant"))
			tenant = argv[++i];
		else if (!strncmp(a, "--tenant=", 9))
			tenant = a + 9;
		else if (!strcmp(a, "--client-id"))
			client_id = argv[++i];
		else if (!strncmp(a, "--client-id=", 12))
			client_id = a + 12;
		else if (!strcmp(a, "-o") || (!strncmp(a, "-o", 2) && a[2])) {
			if (graph_options_parse(a[2] ? a + 2 : argv[++i], cfg, copy, errbuf,
						sizeof(errbuf)))
				return usage(cmd, errbuf);
		} else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(cmd, NULL);
			return -1;
		} else {
			return usage(cmd, "unknown argument");
		}
	}
	if (tenant && *tenant)
		cfg->tenant = tenant;
	if (client_id && *client_id)
		cfg->client_id = client_id;
	return 0;
}

static void show_code(const char *url, const char *code, const char *message, void *ctx)
{
	(void)ctx;
	fprintf(stderr, "To sign in, open %s and enter the code %s\n", url, code);
	if (message && *message)
		fprintf(stderr, "%s\n", message);
	fprintf(stderr, "Waiting for the sign-in...\n");
	fflush(stderr);
}

/* What graph_login's errno means to the person who ran login (the log line
 * before it has the details). */
static const char *login_reason(int r)
{
	switch (r) {
	case -EACCES:
		return "the sign-in was declined or refused";
	case -ETIMEDOUT:
		return "the code expired; run contactfs login again";
	case -EHOSTUNREACH:
	case -ECONNREFUSED:
	case -ENETUNREACH:
		return "the identity endpoint cannot be reached";
	case -EIO:
	case -EPROTO:
		return "the identity endpoint answered something unexpected";
	default:
		return strerror(-r);
	}
}

/* Exit status for graph_login's errno (sysexits.h). */
static int login_status(int r)
{
	switch (r) {
	case -EACCES:
	case -EPERM:
		return EXIT_NOPERM; /* declined, or the client was refused */
	case -ETIMEDOUT:
		return EXIT_TEMPFAIL; /* the code expired: run login again */
	case -EHOSTUNREACH:
	case -ECONNREFUSED:
	case -ENETUNREACH:
		return EXIT_UNAVAILABLE;
	case -EINVAL:
		return EXIT_USAGE;
	case -ENOMEM:
		return EXIT_SOFTWARE;
	case -EIO:
	case -EPROTO:
		return EXIT_PROTOCOL;
	default:
		return EXIT_CANTCREAT; /* the token file could not be written */
	}
}

int login_main(int argc, char **argv)
{
	struct graph_config cfg = {0};
	struct graph *g = NULL;
	char *copy = NULL, *path = NULL;
	int r, rc;

	rc = parse_args("login", argc, argv, &cfg, &copy);
	if (rc) {
		rc = rc < 0 ? 0 : rc;
		goto out;
	}
	if (!cfg.client_id) {
		rc = usage("login", "--client-id ID is required: the application (client) id "
				    "of your app registration");
		goto out;
	}
	if (cfg.token_cmd) {
		rc = usage("login", "token_cmd takes tokens from a program: nothing to sign in");
		goto out;
	}
	g = graph_new(&cfg, &r);
	if (!g) {
		rc = r == -EINVAL ? EXIT_USAGE : EXIT_SOFTWARE;
		goto out;
	}
	r = graph_login(g, show_code, NULL);
	if (r) {
		fprintf(stderr, "contactfs login: not signed in: %s\n", login_reason(r));
		rc = login_status(r);
		goto out;
	}
	path = graph_token_path(g);
	fprintf(stderr, "signed in; refresh token stored in %s\n", path ? path : "the token file");
	rc = 0;
out:
	free(path);
	graph_free(g);
	free(copy);
	return rc;
}

int logout_main(int argc, char **argv)
{
	struct graph_config cfg = {0};
	struct graph *g = NULL;
	struct stat st;
	char *copy = NULL, *path = NULL;
	int r, rc, had;

	rc = parse_args("logout", argc, argv, &cfg, &copy);
	if (rc) {
		rc = rc < 0 ? 0 : rc;
		goto out;
	}
	g = graph_new(&cfg, &r);
	if (!g) {
		rc = r == -EINVAL ? EXIT_USAGE : EXIT_SOFTWARE;
		goto out;
	}
	path = graph_token_path(g);
	if (!path) {
		rc = EXIT_SOFTWARE;
		goto out;
	}
	had = lstat(path, &st) == 0;
	r = graph_logout(g);
	if (r) {
		fprintf(stderr, "contactfs logout: %s: %s\n", path, strerror(-r));
		rc = EXIT_CANTCREAT;
		goto out;
	}
	if (had)
		fprintf(stderr, "signed out; removed %s\n", path);
	else
		fprintf(stderr, "not signed in (no %s)\n", path);
	rc = 0;
out:
	free(path);
	graph_free(g);
	free(copy);
	return rc;
}
