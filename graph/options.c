/*
 * -o OPTIONS, spelled as libfuse spells mount options: comma-separated
 * key=value pairs, a comma or backslash inside a value escaped with a
 * backslash (-o 'token_cmd=jq -r .a\,.b'). Shared by every command that
 * talks to Graph (login, logout, export, the mount).
 */
#include "graph.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const known =
	"graph_url, auth_url, user, token_cmd, client_id, tenant, cache_dir";

/* Parse the split copy at p into cfg. 0, or -EINVAL with errbuf set. */
static int parse_items(char *p, struct graph_config *cfg, char *errbuf, size_t errsize)
{
	while (*p) {
		char *item = p, *w = p, *value;

		/* Unescape in place up to the next unescaped comma. */
		while (*p && *p != ',') {
			if (*p == '\\' && p[1])
				p++;
			*w++ = *p++;
		}
		if (*p == ',')
			p++;
		*w = '\0';
		if (!*item)
			continue; /* ",," */
		value = strchr(item, '=');
		if (!value) {
			snprintf(errbuf, errsize, "option '%s' needs a value (key=value)", item);
			return -EINVAL;
		}
		*value++ = '\0';
		if (!*value) {
			snprintf(errbuf, errsize, "option '%s' needs a value", item);
			return -EINVAL;
		}
		if (!strcmp(item, "graph_url"))
			cfg->graph_url = value;
		else if (!strcmp(item, "auth_url"))
			cfg->auth_url = value;
		else if (!strcmp(item, "user"))
			cfg->user = value;
		else if (!strcmp(item, "token_cmd"))
			cfg->token_cmd = value;
		else if (!strcmp(item, "client_id"))
			cfg->client_id = value;
		else if (!strcmp(item, "tenant"))
			cfg->tenant = value;
		else if (!strcmp(item, "cache_dir"))
			; /* accepted; the cache does not exist yet */
		else {
			snprintf(errbuf, errsize, "unknown option '%s' (known: %s)", item, known);
			return -EINVAL;
		}
	}
	return 0;
}

int graph_options_parse(const char *spec, struct graph_config *cfg, char **copy, char *errbuf,
			size_t errsize)
{
	/* *copy is "<every spec so far, joined by ','>\0<the same, split>": a
	 * later call re-parses the joined text into a new copy, so one free()
	 * of the last copy releases everything. */
	const char *before = *copy;
	size_t n = (before ? strlen(before) + 1 : 0) + strlen(spec);
	struct graph_config next = *cfg;
	char *joined;
	int r;

	if (errsize)
		errbuf[0] = '\0';
	joined = malloc(2 * n + 2);
	if (!joined) {
		snprintf(errbuf, errsize, "out of memory");
		return -ENOMEM;
	}
	snprintf(joined, n + 1, "%s%s%s", before ? before : "", before ? "," : "", spec);
	memcpy(joined + n + 1, joined, n + 1);
	r = parse_items(joined + n + 1, &next, errbuf, errsize);
	if (r) {
		free(joined);
		return r;
	}
	*cfg = next;
	free(*copy);
	*copy = joined;
	return 0;
}
