/*
 * Unit tests of graph/options.c: -o OPTIONS as every command that talks to
 * Graph reads them.
 */
#include "graph.h"

#include <errno.h>
#include <stdlib.h>

#include "check.h"

TEST(options_sets_every_graph_key)
{
	struct graph_config cfg = {0};
	char *copy = NULL, err[256];

	CHECK_INT(
		graph_options_parse("graph_url=http://127.0.0.1:1/v1.0,auth_url=http://127.0.0.1:2,"
				    "user=Alice@Contoso.com,token_cmd=printf tok,client_id=cid,"
				    "tenant=organizations,cache_dir=/tmp/x",
				    &cfg, &copy, err, sizeof(err)),
		0);
	CHECK_STR(cfg.graph_url, "http://127.0.0.1:1/v1.0");
	CHECK_STR(cfg.auth_url, "http://127.0.0.1:2");
	CHECK_STR(cfg.user, "Alice@Contoso.com");
	CHECK_STR(cfg.token_cmd, "printf tok");
	CHECK_STR(cfg.client_id, "cid");
	CHECK_STR(cfg.tenant, "organizations");
	CHECK(cfg.config_dir == NULL);
out:
	free(copy);
}

TEST(options_unescapes_a_comma_and_a_backslash_in_a_value)
{
	struct graph_config cfg = {0};
	char *copy = NULL, err[256];

	CHECK_INT(graph_options_parse("token_cmd=jq -r .a\\,.b \\\\n,user=u", &cfg, &copy, err,
				      sizeof(err)),
		  0);
	CHECK_STR(cfg.token_cmd, "jq -r .a,.b \\n");
	CHECK_STR(cfg.user, "u");
out:
	free(copy);
}

TEST(options_keeps_everything_after_the_first_equals_sign)
{
	struct graph_config cfg = {0};
	char *copy = NULL, err[256];

	CHECK_INT(graph_options_parse("token_cmd=get --scope=graph", &cfg, &copy, err, sizeof(err)),
		  0);
	CHECK_STR(cfg.token_cmd, "get --scope=graph");
out:
	free(copy);
}

TEST(options_refuses_an_unknown_key_and_leaves_cfg_alone)
{
	struct graph_config cfg = {.tenant = "common"};
	char *copy = NULL, err[256];

	CHECK_INT(graph_options_parse("user=u,colour=blue", &cfg, &copy, err, sizeof(err)),
		  -EINVAL);
	CHECK(strstr(err, "unknown option 'colour'") != NULL);
	CHECK(cfg.user == NULL);
	CHECK_STR(cfg.tenant, "common");
	CHECK(copy == NULL);
out:;
}

TEST(options_refuses_a_key_without_a_value)
{
	struct graph_config cfg = {0};
	char *copy = NULL, err[256];

	CHECK_INT(graph_options_parse("user", &cfg, &copy, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "'user' needs a value") != NULL);
	CHECK_INT(graph_options_parse("user=", &cfg, &copy, err, sizeof(err)), -EINVAL);
	CHECK(copy == NULL);
out:;
}

TEST(options_skips_empty_items)
{
	struct graph_config cfg = {0};
	char *copy = NULL, err[256];

	CHECK_INT(graph_options_parse(",,user=u,", &cfg, &copy, err, sizeof(err)), 0);
	CHECK_STR(cfg.user, "u");
out:
	free(copy);
}

TEST(options_from_several_dash_o_accumulate_later_wins_one_free)
{
	struct graph_config cfg = {0};
	char *copy = NULL, err[256];

	CHECK_INT(graph_options_parse("user=first,tenant=t", &cfg, &copy, err, sizeof(err)), 0);
	CHECK_INT(graph_options_parse("user=second,client_id=c", &cfg, &copy, err, sizeof(err)), 0);
	CHECK_STR(cfg.user, "second");
	CHECK_STR(cfg.tenant, "t");
	CHECK_STR(cfg.client_id, "c");
	/* A failed call keeps what the earlier ones set, still valid. */
	CHECK_INT(graph_options_parse("nope=1", &cfg, &copy, err, sizeof(err)), -EINVAL);
	CHECK_STR(cfg.tenant, "t");
	CHECK_STR(cfg.user, "second");
	free(copy); /* ASan's leak check proves one free is enough */
out:;
}
