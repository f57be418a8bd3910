/* The Graph client against the emulator: paging, delta, $batch, conflicts,
 * the scheduler, photos, and what it refuses. */
#include "check.h"
#include "emulator.h"

#include "graph.h"

#include <errno.h>
#include <pthread.h>

/* A client for the emulator, signed in through token_cmd. */
static struct graph *client(struct emulator *e, char *cmd, size_t size)
{
	struct graph_config cfg = {0};
	int err;

	snprintf(cmd, size, "echo %s", e->token);
	cfg.graph_url = e->graph_url;
	cfg.auth_url = e->url;
	cfg.token_cmd = cmd;
	cfg.timeout_s = 20;
	return graph_new(&cfg, &err);
}

#define START(e, g, ...)                           \
	char cmd_[128];                            \
	const char *args_[] = {__VA_ARGS__, NULL}; \
	EMULATOR_NEEDED();                         \
	CHECK(emulator_start(&(e), args_) == 0);   \
	(g) = client(&(e), cmd_, sizeof(cmd_));    \
	CHECK((g) != NULL)

static int count_item(const cJSON *item, void *ctx)
{
	(void)item;
	(*(int *)ctx)++;
	return 0;
}

TEST(graph_refuses_plain_http_to_a_host_that_is_not_loopback)
{
	struct graph_config cfg = {0};
	int err = 0;

	cfg.graph_url = "http://graph.example.com/v1.0";
	CHECK(graph_new(&cfg, &err) == NULL);
	CHECK_INT(err, -EINVAL);
	cfg.graph_url = "http://127.0.0.1:9/v1.0";
	cfg.auth_url = "http://login.example.com";
	CHECK(graph_new(&cfg, &err) == NULL);
	CHECK_INT(err, -EINVAL);
out:;
}

TEST(graph_errno_maps_each_status_once)
{
	CHECK_INT(graph_errno(200, NULL), 0);
	CHECK_INT(graph_errno(204, NULL), 0);
	CHECK_INT(graph_errno(400, "ErrorInvalidProperty"), -EINVAL);
	CHECK_INT(graph_errno(400, "syncStateNotFound"), -ESTALE);
	CHECK_INT(graph_errno(401, NULL), -EACCES);
	CHECK_INT(graph_errno(403, "ErrorAccessDenied"), -EACCES);
	CHECK_INT(graph_errno(404, "ErrorItemNotFound"), -ENOENT);
	CHECK_INT(graph_errno(409, "ErrorFolderExists"), -EEXIST);
	CHECK_INT(graph_errno(410, NULL), -ESTALE);
	CHECK_INT(graph_errno(412, "ErrorIrresolvableConflict"), -ESTALE);
	CHECK_INT(graph_errno(413, NULL), -E2BIG);
	CHECK_INT(graph_errno(429, "ApplicationThrottled"), -EAGAIN);
	CHECK_INT(graph_errno(500, NULL), -EIO);
out:;
}

TEST(graph_list_follows_next_links_across_pages)
{
	struct emulator e = {0};
	struct graph *g = NULL;
	int paged = 0, whole = 0;

	START(e, g, "--contacts", "60", "--folders", "0");
	CHECK(graph_list(g, "/contacts?$top=7&$select=id", NULL, 0, count_item, &paged) == 0);
	CHECK(graph_list(g, "/contacts?$top=1000&$select=id", NULL, 0, count_item, &whole) == 0);
	CHECK_INT(paged, 60);
	CHECK_INT(whole, 60);
out:
	graph_free(g);
	EMULATOR_DOWN(e);
}

TEST(graph_does_not_follow_a_link_to_another_host)
{
	struct emulator e = {0};
	struct graph *g = NULL;
	int n = 0;

	START(e, g, "--contacts", "1");
	CHECK_INT(
		graph_list(g, "https://evil.example.com/v1.0/me/contacts", NULL, 0, count_item, &n),
		-EPROTO);
out:
	graph_free(g);
	EMULATOR_DOWN(e);
}

struct delta_seen {
	int items, removed;
	char last_removed[256];
};

static int see_delta(const cJSON *item, void *ctx)
{
	struct delta_seen *s = ctx;
	const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(item, "id"));

	if (cJSON_GetObjectItemCaseSensitive(item, "@removed")) {
		s->removed++;
		snprintf(s->last_removed, sizeof(s->last_removed), "%s", id ? id : "");
	} else {
		s->items++;
	}
	return 0;
}

static int first_id(const cJSON *item, void *ctx)
{
	const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(item, "id"));

	snprintf(ctx, 256, "%s", id ? id : "");
	return 1; /* stop */
}

TEST(graph_delta_reports_changes_removals_and_an_expired_cursor)
{
	struct delta_seen first = {0}, second = {0}, third = {0};
	struct emulator e = {0};
	struct graph *g = NULL;
	char *link = NULL, *link2 = NULL, *link3 = NULL, victim[256] = "", path[512];
	cJSON *body, *made = NULL;

	char *def = NULL, first_path[512];

	START(e, g, "--contacts", "30", "--folders", "0");
	/* The default folder's delta, by its id: the documented form. */
	CHECK(graph_default_folder(g, &def) == 0 && def);
	snprintf(first_path, sizeof(first_path),
		 "/contactFolders/%s/contacts/delta?$select=displayName", def);
	free(def);
	CHECK(graph_delta(g, first_path, 7, see_delta, &first, &link) == 0);
	CHECK(link != NULL);
	CHECK_INT(first.items, 30);
	CHECK_INT(first.removed, 0);
	/* One new contact, one deleted. */
	CHECK(graph_list(g, "/contacts?$select=id", NULL, 0, first_id, victim) == 1);
	snprintf(path, sizeof(path), "/contacts/%s", victim);
	CHECK(graph_send_json(g, "DELETE", path, NULL, NULL, 0, NULL) == 0);
	body = cJSON_Parse("{\"givenName\":\"New\",\"surname\":\"Person\"}");
	CHECK(graph_send_json(g, "POST", "/contacts", body, NULL, 0, &made) == 0);
	cJSON_Delete(body);
	CHECK(made && cJSON_GetObjectItemCaseSensitive(made, "id"));
	cJSON_Delete(made);
	CHECK(graph_delta(g, link, 0, see_delta, &second, &link2) == 0);
	CHECK(second.items >= 1);
	CHECK_INT(second.removed, 1);
	CHECK_STR(second.last_removed, victim);
	/* The server forgets its cursors: resync needed. */
	cJSON_Delete(emulator_admin(&e, "POST", "/_emulator/faults", "{\"expire_delta\": true}"));
	CHECK_INT(graph_delta(g, link2, 0, see_delta, &third, &link3), -ESTALE);
	CHECK(link3 == NULL);
out:
	free(link);
	free(link2);
	graph_free(g);
	EMULATOR_DOWN(e);
}

/* Folders as the walk saw them: "name<parent name" a line. */
struct walked {
	cJSON *names; /* id -> displayName */
	struct buf seen;
};

static int see_folder(const cJSON *item, void *ctx)
{
	struct walked *w = ctx;
	const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(item, "id"));
	const char *name =
		cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(item, "displayName"));
	const char *pid =
		cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(item, "parentFolderId"));
	const char *pname = pid ? cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(w->names, pid))
				: NULL;

	if (!id || !name)
		return -EPROTO;
	cJSON_AddStringToObject(w->names, id, name);
	return buf_printf(&w->seen, "%s<%s\n", name, pname ? pname : "default");
}

static const char nested_seed[] =
	"{\"mailboxes\": {\"me@contoso.example\": {\"folders\": ["
	"{\"displayName\": \"Work\", \"childFolders\": [{\"displayName\": \"Clients\", "
	"\"childFolders\": [{\"displayName\": \"Key accounts\"}]}]},"
	"{\"displayName\": \"Family\"}]}}}";

/* contactFolders/delta may leave nested folders out (whether it lists them
 * is not documented): the walk lists them, parents first, under every
 * reading, and never the default folder. */
TEST(graph_folder_walk_finds_nested_folders_whatever_delta_lists)
{
	static const char *const readings[] = {"all", "top", "with_default"};
	struct emulator e = {0};
	struct graph *g = NULL;
	struct walked w = {NULL, {0}};
	char knob[64], *def = NULL;
	cJSON *a;

	buf_init(&w.seen, 0);
	for (size_t i = 0; i < 3; i++) {
		w.names = cJSON_CreateObject();
		START(e, g, "--contacts", "0", "--folders", "0");
		cJSON_Delete(emulator_admin(&e, "POST", "/_emulator/reset", nested_seed));
		snprintf(knob, sizeof(knob), "{\"folder_delta\": \"%s\"}", readings[i]);
		a = emulator_admin(&e, "POST", "/_emulator/faults", knob);
		CHECK(a != NULL);
		cJSON_Delete(a);
		/* An empty default folder: its id comes from a folder in it. */
		CHECK(graph_default_folder(g, &def) == 0 && def);
		CHECK(graph_folder_walk(g, see_folder, &w) == 0);
		CHECK_STR(w.seen.data,
			  "Work<default\nFamily<default\nClients<Work\nKey accounts<Clients\n");
		CHECK(!cJSON_GetObjectItemCaseSensitive(w.names, def));
		free(def);
		def = NULL;
		buf_release(&w.seen);
		cJSON_Delete(w.names);
		w.names = NULL;
		graph_free(g);
		g = NULL;
		EMULATOR_DOWN(e);
	}
out:
	free(def);
	buf_release(&w.seen);
	cJSON_Delete(w.names);
	graph_free(g);
	EMULATOR_DOWN(e);
}

/* A mailbox with nothing in its default folder cannot name it: NULL, not an
 * error. */
TEST(graph_default_folder_of_an_empty_mailbox_is_unknown_not_an_error)
{
	struct emulator e = {0};
	struct graph *g = NULL;
	char *def = (char *)"unset";

	START(e, g, "--contacts", "0", "--folders", "0");
	CHECK(graph_default_folder(g, &def) == 0);
	CHECK(def == NULL);
out:
	graph_free(g);
	EMULATOR_DOWN(e);
}

TEST(graph_if_match_with_a_stale_change_key_is_a_conflict)
{
	struct emulator e = {0};
	struct graph *g = NULL;
	struct graph_header h = {"If-Match", "W/\"stale-change-key\""};
	char id[256] = "", path[512];
	cJSON *patch = cJSON_Parse("{\"displayName\":\"Changed\"}");

	START(e, g, "--contacts", "3", "--folders", "0");
	CHECK(graph_list(g, "/contacts?$select=id", NULL, 0, first_id, id) == 1);
	snprintf(path, sizeof(path), "/contacts/%s", id);
	CHECK_INT(graph_send_json(g, "PATCH", path, patch, &h, 1, NULL), -ESTALE);
out:
	cJSON_Delete(patch);
	graph_free(g);
	EMULATOR_DOWN(e);
}

struct hammer {
	struct graph *g;
	int failures;
};

static void *hammer_run(void *arg)
{
	struct hammer *h = arg;

	for (int i = 0; i < 5; i++) {
		cJSON *j = NULL;

		if (graph_get_json(h->g, "/contacts?$top=1&$select=id", NULL, 0, &j))
			h->failures++;
		cJSON_Delete(j);
	}
	return NULL;
}

TEST(graph_keeps_four_requests_in_flight_and_is_never_throttled_for_it)
{
	struct emulator e = {0};
	struct graph *g = NULL;
	struct hammer h[8];
	pthread_t t[8];
	struct graph_stats st;

	START(e, g, "--contacts", "5", "--folders", "0", "--latency-ms", "60");
	for (int i = 0; i < 8; i++) {
		h[i].g = g;
		h[i].failures = 0;
		CHECK(pthread_create(&t[i], NULL, hammer_run, &h[i]) == 0);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		CHECK_INT(h[i].failures, 0);
	}
	graph_stats(g, &st);
	CHECK_INT(st.max_in_flight, 4);
	CHECK(emulator_stat(&e, "max_in_flight") <= 4);
	CHECK(emulator_stat(&e, "max_in_flight") >= 2);
	CHECK_INT(emulator_stat(&e, "throttled"), 0);
out:
	graph_free(g);
	EMULATOR_DOWN(e);
}

static int collect_ids(const cJSON *item, void *ctx)
{
	cJSON *ids = ctx;
	const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(item, "id"));

	return id && cJSON_AddItemToArray(ids, cJSON_CreateString(id)) ? 0 : -ENOMEM;
}

TEST(graph_batch_retries_throttled_items_after_retry_after)
{
	struct emulator e = {0};
	struct graph *g = NULL;
	struct graph_batch_item items[25];
	char urls[25][300];
	cJSON *ids = cJSON_CreateArray();
	int n;

	START(e, g, "--contacts", "25", "--folders", "0");
	CHECK(graph_list(g, "/contacts?$select=id&$top=100", NULL, 0, collect_ids, ids) == 0);
	n = cJSON_GetArraySize(ids);
	CHECK_INT(n, 25);
	cJSON_Delete(emulator_admin(&e, "POST", "/_emulator/faults",
				    "{\"rate_429\": 0.3, \"retry_after\": 1}"));
	cJSON_Delete(emulator_admin(&e, "POST", "/_emulator/requests/reset", "{}"));
	for (int i = 0; i < n; i++) {
		snprintf(urls[i], sizeof(urls[i]), "/contacts/%s?$select=displayName",
			 cJSON_GetArrayItem(ids, i)->valuestring);
		memset(&items[i], 0, sizeof(items[i]));
		items[i].method = "GET";
		items[i].url = urls[i];
	}
	CHECK(graph_batch(g, items, (size_t)n) == 0);
	for (int i = 0; i < n; i++) {
		CHECK_INT(items[i].status, 200);
		CHECK(cJSON_GetObjectItemCaseSensitive(items[i].response, "displayName"));
	}
	graph_batch_release(items, (size_t)n);
	CHECK(emulator_stat(&e, "throttled") > 0);
	CHECK_INT(emulator_stat(&e, "early_retries"), 0);
out:
	cJSON_Delete(ids);
	graph_free(g);
	EMULATOR_DOWN(e);
}

TEST(graph_photo_round_trips_and_a_missing_one_is_enoent)
{
	struct emulator e = {0};
	struct graph *g = NULL;
	struct buf a, b;
	cJSON *ids = cJSON_CreateArray();
	char type[64];
	const char *with = NULL, *without = NULL;

	/* Two contacts, one of them with a photo the emulator made. */
	buf_init(&a, 0);
	buf_init(&b, 0);
	START(e, g, "--contacts", "2", "--folders", "0", "--photos", "1");
	CHECK(graph_list(g, "/contacts?$select=id", NULL, 0, collect_ids, ids) == 0);
	CHECK_INT(cJSON_GetArraySize(ids), 2);
	for (int i = 0; i < 2; i++) {
		const char *id = cJSON_GetArrayItem(ids, i)->valuestring;
		int r = graph_photo_get(g, id, &a, type, sizeof(type));

		CHECK(r == 0 || r == -ENOENT);
		if (r == 0)
			with = id;
		else
			without = id;
	}
	CHECK(with && without);
	CHECK(graph_photo_get(g, with, &a, type, sizeof(type)) == 0);
	CHECK(a.len > 100);
	CHECK_STR(type, "image/jpeg");
	CHECK(graph_photo_put(g, without, a.data, a.len, "image/jpeg") == 0);
	CHECK(graph_photo_get(g, without, &b, type, sizeof(type)) == 0);
	CHECK_INT(b.len, a.len);
	CHECK(memcmp(a.data, b.data, a.len) == 0);
out:
	buf_release(&a);
	buf_release(&b);
	cJSON_Delete(ids);
	graph_free(g);
	EMULATOR_DOWN(e);
}

TEST(graph_survives_503s_and_dropped_connections_on_reads)
{
	struct emulator e = {0};
	struct graph *g = NULL;
	int n = 0;

	START(e, g, "--contacts", "40", "--folders", "0");
	cJSON_Delete(emulator_admin(&e, "POST", "/_emulator/faults",
				    "{\"rate_503\": 0.2, \"rate_drop\": 0.1}"));
	CHECK(graph_list(g, "/contacts?$top=5&$select=id", NULL, 0, count_item, &n) == 0);
	CHECK_INT(n, 40);
out:
	graph_free(g);
	EMULATOR_DOWN(e);
}

static int has_items(const cJSON *page)
{
	return cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(page, "value"));
}

TEST(graph_reaches_folders_extensions_categories_and_people)
{
	struct emulator e = {0};
	struct graph *g = NULL;
	char id[256] = "", fid[256], path[768];
	cJSON *made = NULL, *got = NULL, *body;
	const cJSON *exts;

	START(e, g, "--contacts", "4", "--folders", "0");
	/* Folders: create, rename, nest, delete. */
	body = cJSON_Parse("{\"displayName\":\"Projects\"}");
	CHECK(graph_send_json(g, "POST", "/contactFolders", body, NULL, 0, &made) == 0);
	CHECK_INT(graph_send_json(g, "POST", "/contactFolders", body, NULL, 0, NULL), -EEXIST);
	cJSON_Delete(body);
	snprintf(fid, sizeof(fid), "%s", cJSON_GetStringValue(cJSON_GetObjectItem(made, "id")));
	cJSON_Delete(made);
	snprintf(path, sizeof(path), "/contactFolders/%s", fid);
	body = cJSON_Parse("{\"displayName\":\"Projects 2026\"}");
	CHECK(graph_send_json(g, "PATCH", path, body, NULL, 0, NULL) == 0);
	cJSON_Delete(body);
	snprintf(path, sizeof(path), "/contactFolders/%s/childFolders", fid);
	body = cJSON_Parse("{\"displayName\":\"Inner\"}");
	CHECK(graph_send_json(g, "POST", path, body, NULL, 0, NULL) == 0);
	cJSON_Delete(body);
	CHECK(graph_get_json(g, path, NULL, 0, &got) == 0);
	CHECK_INT(has_items(got), 1);
	cJSON_Delete(got);
	got = NULL;
	snprintf(path, sizeof(path), "/contactFolders/%s", fid);
	CHECK(graph_send_json(g, "DELETE", path, NULL, NULL, 0, NULL) == 0);
	CHECK_INT(graph_get_json(g, path, NULL, 0, &got), -ENOENT);
	/* An open extension: create, read back expanded, merge, delete. */
	CHECK(graph_list(g, "/contacts?$select=id", NULL, 0, first_id, id) == 1);
	snprintf(path, sizeof(path), "/contacts/%s/extensions", id);
	body = cJSON_Parse("{\"@odata.type\":\"microsoft.graph.openTypeExtension\","
			   "\"extensionName\":\"org.contactfs.vcard\",\"uid\":\"u-1\"}");
	CHECK(graph_send_json(g, "POST", path, body, NULL, 0, NULL) == 0);
	cJSON_Delete(body);
	snprintf(path, sizeof(path), "/contacts/%s?$expand=extensions", id);
	CHECK(graph_get_json(g, path, NULL, 0, &got) == 0);
	exts = cJSON_GetObjectItemCaseSensitive(got, "extensions");
	CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(exts, 0), "uid")),
		  "u-1");
	cJSON_Delete(got);
	got = NULL;
	snprintf(path, sizeof(path), "/contacts/%s/extensions/org.contactfs.vcard", id);
	CHECK(graph_send_json(g, "DELETE", path, NULL, NULL, 0, NULL) == 0);
	CHECK_INT(graph_get_json(g, path, NULL, 0, &got), -ENOENT);
	/* Master categories and People. */
	body = cJSON_Parse("{\"displayName\":\"Board\",\"color\":\"preset3\"}");
	CHECK(graph_send_json(g, "POST", "/outlook/masterCategories", body, NULL, 0, NULL) == 0);
	CHECK_INT(graph_send_json(g, "POST", "/outlook/masterCategories", body, NULL, 0, NULL),
		  -EEXIST);
	cJSON_Delete(body);
	CHECK(graph_get_json(g, "/outlook/masterCategories", NULL, 0, &got) == 0);
	CHECK(has_items(got) >= 1);
	cJSON_Delete(got);
	got = NULL;
	CHECK(graph_get_json(g, "/people?$top=3", NULL, 0, &got) == 0);
	CHECK(has_items(got) >= 1);
out:
	cJSON_Delete(got);
	graph_free(g);
	EMULATOR_DOWN(e);
}

TEST(graph_user_option_reaches_a_shared_mailbox_and_a_read_only_grant_is_eacces)
{
	struct graph_config cfg = {0};
	struct emulator e = {0};
	struct graph *g = NULL, *shared = NULL;
	char cmd[128];
	cJSON *got = NULL, *body;
	int err, n = 0;

	START(e, g, "--contacts", "2");
	cJSON_Delete(emulator_admin(
		&e, "POST", "/_emulator/reset",
		"{\"mailboxes\":{\"me@contoso.example\":{},\"garth@contoso.example\":"
		"{\"readonly\":true,\"contacts\":[{\"givenName\":\"Only\",\"surname\":\"One\"}]}}"
		"}"));
	snprintf(cmd, sizeof(cmd), "echo %s", e.token);
	cfg.graph_url = e.graph_url;
	cfg.auth_url = e.url;
	cfg.token_cmd = cmd;
	cfg.user = "garth@contoso.example";
	shared = graph_new(&cfg, &err);
	CHECK(shared);
	CHECK(graph_list(shared, "/contacts?$select=displayName", NULL, 0, count_item, &n) == 0);
	CHECK_INT(n, 1);
	body = cJSON_Parse("{\"givenName\":\"Not\",\"surname\":\"Allowed\"}");
	CHECK_INT(graph_send_json(shared, "POST", "/contacts", body, NULL, 0, &got), -EACCES);
	cJSON_Delete(body);
	CHECK(got == NULL);
	CHECK(emulator_stat(&e, "total") > 0);
out:
	graph_free(shared);
	graph_free(g);
	EMULATOR_DOWN(e);
}

/* A route's count in the emulator's /_emulator/requests (0 when absent). */
static double route_count(struct emulator *e, const char *route)
{
	cJSON *st = emulator_admin(e, "GET", "/_emulator/requests", NULL);
	const cJSON *n = cJSON_GetObjectItemCaseSensitive(
		cJSON_GetObjectItemCaseSensitive(st, "by_route"), route);
	double v = cJSON_IsNumber(n) ? n->valuedouble : 0;

	cJSON_Delete(st);
	return v;
}

static const char *flag_status(const cJSON *contact)
{
	return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
		cJSON_GetObjectItemCaseSensitive(contact, "flag"), "flagStatus"));
}

TEST(graph_beta_paths_reach_the_beta_root_and_a_batch_splits_by_root)
{
	struct emulator e = {0};
	struct graph *g = NULL;
	struct graph_batch_item items[3];
	char id[256] = "", path[768], fid[300];
	cJSON *got = NULL, *body, *st;
	int n = 0;

	START(e, g, "--contacts", "12", "--folders", "0");
	CHECK(graph_has_beta(g));
	CHECK(graph_list(g, "/contacts?$select=id", NULL, 0, first_id, id) == 1);
	/* PATCH and GET under /beta: the flag exists there only. */
	snprintf(path, sizeof(path), GRAPH_BETA "/contacts/%s", id);
	body = cJSON_Parse("{\"flag\":{\"flagStatus\":\"flagged\","
			   "\"startDateTime\":{\"dateTime\":\"2026-05-01T09:00:00\","
			   "\"timeZone\":\"UTC\"}}}");
	CHECK(graph_send_json(g, "PATCH", path, body, NULL, 0, NULL) == 0);
	cJSON_Delete(body);
	snprintf(path, sizeof(path), GRAPH_BETA "/contacts/%s?$select=flag", id);
	CHECK(graph_get_json(g, path, NULL, 0, &got) == 0);
	CHECK_STR(flag_status(got), "flagged");
	cJSON_Delete(got);
	CHECK_INT(route_count(&e, "PATCH beta /me/contacts/{id}"), 1);
	CHECK_INT(route_count(&e, "GET beta /me/contacts/{id}"), 1);
	/* A beta list pages by its absolute nextLinks, as a v1.0 one does. */
	st = emulator_admin(&e, "GET", "/_emulator/state", NULL);
	CHECK(st);
	snprintf(fid, sizeof(fid), "%s",
		 cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
			 cJSON_GetObjectItemCaseSensitive(st, "mailboxes")->child,
			 "defaultFolderId")));
	cJSON_Delete(st);
	snprintf(path, sizeof(path), GRAPH_BETA "/contactFolders/%s/contacts?$select=flag&$top=5",
		 fid);
	CHECK(graph_list(g, path, NULL, 0, count_item, &n) == 0);
	CHECK_INT(n, 12);
	CHECK_INT(route_count(&e, "GET beta /me/contactFolders/{id}/contacts"), 3);
	/* One call, two roots: a v1.0 batch and a beta one. */
	memset(items, 0, sizeof(items));
	snprintf(path, sizeof(path), GRAPH_BETA "/contacts/%s?$select=flag", id);
	items[0].method = "GET";
	items[0].url = path;
	items[1].method = "GET";
	items[1].url = "/contactFolders?$select=id";
	items[2].method = "GET";
	items[2].url = GRAPH_BETA "/contacts/nosuchid?$select=flag";
	CHECK(graph_batch(g, items, 3) == 0);
	CHECK_INT(items[0].status, 200);
	CHECK_STR(flag_status(items[0].response), "flagged");
	CHECK_INT(items[1].status, 200);
	CHECK_INT(items[2].status, 404);
	graph_batch_release(items, 3);
	CHECK_INT(route_count(&e, "POST /$batch"), 1);
	CHECK_INT(route_count(&e, "POST beta /$batch"), 1);
out:
	graph_free(g);
	EMULATOR_DOWN(e);
}

TEST(graph_without_a_v1_root_has_no_beta_and_refuses_beta_paths)
{
	struct graph_config cfg = {0};
	struct graph_response resp;
	struct graph *g = NULL;
	int err = 0;

	cfg.graph_url = "http://127.0.0.1:9/graph";
	cfg.token_cmd = "echo t";
	g = graph_new(&cfg, &err);
	CHECK(g);
	CHECK(!graph_has_beta(g));
	graph_response_init(&resp);
	CHECK_INT(graph_request(g, "GET", GRAPH_BETA "/contacts/x", NULL, 0, NULL, 0, NULL, &resp),
		  -ENOTSUP);
	graph_response_release(&resp);
	graph_free(g);
	g = NULL;
	cfg.graph_url = "http://127.0.0.1:9/v1.0/";
	g = graph_new(&cfg, &err);
	CHECK(g);
	CHECK(graph_has_beta(g));
out:
	graph_free(g);
}
