/*
 * The mailbox's master category list as a text file (docs/design.md §10):
 * .contactfs/categories, one category a line, "name: colour", with
 * Outlook's colour names. Reading shows the list as the server last gave
 * it (fetched again when older than the poll interval, and never while
 * changes to it wait in the outbox); writing the file whole turns the
 * difference into requests: a new line is a POST, a line gone a DELETE, a
 * changed colour a PATCH. Graph cannot rename a category: a renamed line is
 * one deleted and one created, and contacts keep the old name (shown
 * without a colour, as Outlook shows a category that is not in the list).
 *
 * The list is kept in the meta table as the JSON of the server's answer
 * ("categories", with "categories_at" in ms): Graph has no delta for it,
 * and a round does not ask for it (the file is read rarely).
 */
#include "cache_int.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PATH "/outlook/masterCategories"

/* Another mailbox's master category list (-o user=) is not asked for: the
 * delegated permissions to read it are for one's own mailbox only, there is
 * no .Shared one (outlookuser-list-mastercategories.md), so it would be
 * 403 at every read. */
#define SHARED_TEXT                                                                          \
	"# The master category list of another mailbox cannot be read or changed: Graph has\n" \
	"# no delegated permission for it. Contacts keep their categories (CATEGORIES).\n"

/* Outlook's names of preset0 ... preset24. */
static const char *const COLOURS[] = {
	"Red",	    "Orange",	  "Brown",     "Yellow",     "Green",
	"Teal",	    "Olive",	  "Blue",      "Purple",     "Cranberry",
	"Steel",    "DarkSteel",  "Gray",      "DarkGray",   "Black",
	"DarkRed",  "DarkOrange", "DarkBrown", "DarkYellow", "DarkGreen",
	"DarkTeal", "DarkOlive",  "DarkBlue",  "DarkPurple", "DarkCranberry",
};
#define NCOLOURS (sizeof(COLOURS) / sizeof(COLOURS[0]))

/* "preset7" -> "Blue"; "none" (or anything else) -> "None". */
static const char *colour_name(const char *graph)
{
	char *end;
	long n;

	if (graph && !strncmp(graph, "preset", 6)) {
		n = strtol(graph + 6, &end, 10);
		if (end != graph + 6 && !*end && n >= 0 && n < (long)NCOLOURS)
			return COLOURS[n];
	}
	return "None";
}

/* "blue", "Blue" or "preset7" -> "preset7" in out; "none" -> "none".
 * 0, or -EINVAL for a colour Outlook does not have. */
static int colour_graph(const char *text, char *out, size_t size)
{
	char *end;
	long n;

	if (!strcasecmp(text, "none")) {
		snprintf(out, size, "none");
		return 0;
	}
	for (size_t i = 0; i < NCOLOURS; i++) {
		if (!strcasecmp(text, COLOURS[i])) {
			snprintf(out, size, "preset%zu", i);
			return 0;
		}
	}
	if (!strncasecmp(text, "preset", 6)) {
		n = strtol(text + 6, &end, 10);
		if (end != text + 6 && !*end && n >= 0 && n < (long)NCOLOURS) {
			snprintf(out, size, "preset%ld", n);
			return 0;
		}
	}
	return -EINVAL;
}

/* ---- the stored list ------------------------------------------------------------ */

static cJSON *stored(sqlite3 *db)
{
	char *text = db_meta_get(db, "categories");
	cJSON *list = text ? cJSON_Parse(text) : NULL;

	free(text);
	if (!cJSON_IsArray(list)) {
		cJSON_Delete(list);
		list = cJSON_CreateArray();
	}
	return list;
}

static int store(sqlite3 *db, const cJSON *list, int fetched)
{
	char *text = cJSON_PrintUnformatted(list), when[32];
	int r = text ? db_meta_set(db, "categories", text) : -ENOMEM;

	free(text);
	if (!r && fetched) {
		snprintf(when, sizeof(when), "%lld", (long long)cache_now_ms());
		r = db_meta_set(db, "categories_at", when);
	}
	return r;
}

/* Changes to the list that wait in the outbox (parked ones aside). */
static int waiting(sqlite3 *db)
{
	int64_t n = 0;
	int r = db_int(db, &n,
		       "SELECT count(*) FROM outbox WHERE op = ? AND parked = 0 AND "
		       "json_extract(arg, '$.path') LIKE '" PATH "%'",
		       "i", (int64_t)OP_REQUEST);

	return r < 0 ? r : n > 0;
}

static int collect(const cJSON *item, void *ctx)
{
	cJSON *keep = cJSON_CreateObject();
	const char *name = cache_jstr(item, "displayName");

	if (!keep)
		return -ENOMEM;
	if (!name || !cJSON_AddStringToObject(keep, "displayName", name) ||
	    !cJSON_AddStringToObject(keep, "id", cache_jstr(item, "id") ?: "") ||
	    !cJSON_AddStringToObject(keep, "color", cache_jstr(item, "color") ?: "none")) {
		cJSON_Delete(keep);
		return name ? -ENOMEM : 0;
	}
	cJSON_AddItemToArray(ctx, keep);
	return 0;
}

/* Ask the server for the list when the stored one is older than max_age_ms
 * (always with 0) and nothing of ours waits to change it. Offline, or a
 * mount without a server: the stored list stands. */
static void refresh(struct cache *c, int64_t max_age_ms)
{
	cJSON *list;
	char *at;
	int r;

	if (!c->g || !c->started || c->cfg.mailbox)
		return;
	/* Offline, a request here would hold the FUSE request (a stat) for
	 * the client's retries: the stored list stands until the sync thread
	 * reaches the server again. */
	pthread_mutex_lock(&c->lock);
	r = c->online;
	pthread_mutex_unlock(&c->lock);
	if (!r)
		return;
	pthread_mutex_lock(&c->api_lock);
	at = db_meta_get(c->db, "categories_at");
	r = waiting(c->db);
	pthread_mutex_unlock(&c->api_lock);
	if (r || (at && max_age_ms && cache_now_ms() - strtoll(at, NULL, 10) < max_age_ms)) {
		free(at);
		return;
	}
	free(at);
	if (!(list = cJSON_CreateArray()))
		return;
	r = graph_list(c->g, PATH, NULL, 0, collect, list);
	if (r) {
		if (!cache_offline_errno(r))
			log_warn("cache: reading the master category list: %s", strerror(-r));
		cJSON_Delete(list);
		return;
	}
	pthread_mutex_lock(&c->api_lock);
	/* Unless a write came in the meantime: its list is newer. */
	if (!(r = waiting(c->db)) && db_begin(c->db) == 0) {
		r = store(c->db, list, 1);
		r = r ? (db_rollback(c->db), r) : db_commit(c->db);
	}
	pthread_mutex_unlock(&c->api_lock);
	if (r < 0)
		log_warn("cache: keeping the master category list: %s", strerror(-r));
	cJSON_Delete(list);
}

/* ---- reading ------------------------------------------------------------------ */

int cache_categories_text(struct cache *c, struct buf *out)
{
	const cJSON *x;
	cJSON *list;
	int r;

	if (c->cfg.mailbox)
		return buf_printf(out, "%s", SHARED_TEXT);
	refresh(c, (int64_t)(c->cfg.poll_s > 0 ? c->cfg.poll_s : 300) * 1000);
	pthread_mutex_lock(&c->api_lock);
	list = stored(c->db);
	pthread_mutex_unlock(&c->api_lock);
	if (!list)
		return -ENOMEM;
	r = buf_printf(out, "# The mailbox's categories, one a line: \"name: colour\". Add a line "
			    "to create one,\n# remove a line to delete it, change a colour to "
			    "recolour it.\n# Colours: None");
	for (size_t i = 0, col = 17; i < NCOLOURS && !r; i++) {
		int wrap = col + 2 + strlen(COLOURS[i]) > 90;

		r = buf_printf(out, wrap ? ",\n#   %s" : ", %s", COLOURS[i]);
		col = wrap ? 4 + strlen(COLOURS[i]) : col + 2 + strlen(COLOURS[i]);
	}
	if (!r)
		r = buf_printf(out, "\n");
	cJSON_ArrayForEach(x, list)
	{
		if (!r)
			r = buf_printf(out, "%s: %s\n", cache_jstr(x, "displayName"),
				       colour_name(cache_jstr(x, "color")));
	}
	cJSON_Delete(list);
	return r;
}

/* ---- writing ------------------------------------------------------------------ */

struct wanted {
	char *name;
	char colour[16];
	int line;
};

struct write_args {
	const char *text;
	size_t len;
	char *why;
	size_t whysize;
};

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
		*--e = '\0';
	return s;
}

/* The lines of text as categories; -EINVAL with why ("line N: ...") for
 * the first line that is not one. */
static int parse(const char *text, size_t len, struct wanted **out, size_t *n, char *why,
		 size_t whysize)
{
	struct wanted *v = NULL;
	char *copy = malloc(len + 1), *line, *save = NULL;
	int r = 0, no = 0;

	*out = NULL;
	*n = 0;
	if (!copy)
		return -ENOMEM;
	memcpy(copy, text, len);
	copy[len] = '\0';
	if (len == 0) {
		/* `> categories` by mistake must not empty the mailbox's list. */
		snprintf(why, whysize,
			 "the file was written empty (to delete every category, keep a line "
			 "starting with #)");
		free(copy);
		return -EINVAL;
	}
	if (memchr(text, '\0', len)) {
		snprintf(why, whysize, "the text holds a NUL byte");
		free(copy);
		return -EINVAL;
	}
	for (char *p = copy; p && !r; p = save) {
		char *colon, *name, *colour, *more;

		save = strchr(p, '\n');
		if (save)
			*save++ = '\0';
		no++;
		line = trim(p);
		if (!*line || *line == '#')
			continue;
		if (!(colon = strrchr(line, ':'))) {
			snprintf(why, whysize, "line %d: no colour: write \"name: colour\"", no);
			r = -EINVAL;
			break;
		}
		*colon = '\0';
		name = trim(line);
		colour = trim(colon + 1);
		if (!*name) {
			snprintf(why, whysize, "line %d: no name before the colon", no);
			r = -EINVAL;
			break;
		}
		for (const unsigned char *q = (const unsigned char *)name; *q && !r; q++) {
			if (*q < 0x20 || *q == 0x7f) {
				snprintf(why, whysize, "line %d: a control character in the name",
					 no);
				r = -EINVAL;
			}
		}
		if (r)
			break;
		for (size_t i = 0; i < *n; i++) {
			if (!strcasecmp(v[i].name, name)) {
				snprintf(why, whysize,
					 "line %d: \"%.200s\" is already on line %d (names are "
					 "compared without case, as Outlook does)",
					 no, name, v[i].line);
				r = -EINVAL;
				break;
			}
		}
		if (r)
			break;
		if (!(more = realloc(v, (*n + 1) * sizeof(*v)))) {
			r = -ENOMEM;
			break;
		}
		v = (struct wanted *)more;
		v[*n].line = no;
		if (colour_graph(colour, v[*n].colour, sizeof(v[*n].colour))) {
			snprintf(why, whysize,
				 "line %d: \"%.40s\" is not an Outlook colour (the comment at the "
				 "top of "
				 "the file lists them)",
				 no, colour);
			r = -EINVAL;
			break;
		}
		if (!(v[*n].name = strdup(name))) {
			r = -ENOMEM;
			break;
		}
		(*n)++;
	}
	free(copy);
	if (r) {
		for (size_t i = 0; i < *n; i++)
			free(v[i].name);
		free(v);
		*n = 0;
		return r;
	}
	*out = v;
	return 0;
}

static int enqueue(sqlite3 *db, const char *method, const char *path, const cJSON *body)
{
	char *text = body ? cJSON_PrintUnformatted(body) : NULL;
	int r = body && !text ? -ENOMEM : outbox_add_request(db, method, path, text);

	free(text);
	return r;
}

/* A create of name still waiting to be sent is taken back; 1 if there was
 * one. */
static int take_back_create(sqlite3 *db, const char *name)
{
	int r = db_run(
		db,
		"DELETE FROM outbox WHERE op = ? AND inflight = 0 AND "
		"json_extract(arg, '$.method') = 'POST' AND json_extract(arg, '$.path') = '" PATH
		"' AND lower(json_extract(json_extract(arg, '$.body'), '$.displayName')) = "
		"lower(?)",
		"it", (int64_t)OP_REQUEST, name);

	return r < 0 ? r : sqlite3_changes(db) > 0;
}

static int do_write(struct cache *c, void *arg)
{
	struct write_args *a = arg;
	sqlite3 *db = c->db;
	struct wanted *v = NULL;
	size_t n = 0;
	cJSON *old = NULL, *now = NULL, *x;
	char path[512];
	int r;

	if ((r = parse(a->text, a->len, &v, &n, a->why, a->whysize))) {
		if (r == -EINVAL) {
			cache_error(db, "categories", "%s; nothing changed", a->why);
			return CACHE_EINVAL_KEEP;
		}
		return r;
	}
	old = stored(db);
	now = cJSON_CreateArray();
	if (!old || !now) {
		r = -ENOMEM;
		goto out;
	}
	/* Gone, or recoloured. */
	cJSON_ArrayForEach(x, old)
	{
		const char *name = cache_jstr(x, "displayName"), *id = cache_jstr(x, "id");
		const char *colour = cache_jstr(x, "color");
		struct wanted *w = NULL;
		cJSON *body;

		for (size_t i = 0; i < n && !w; i++)
			if (name && !strcasecmp(v[i].name, name))
				w = &v[i];
		if (w && colour && !strcmp(colour, w->colour))
			continue;
		if (id && *id) {
			snprintf(path, sizeof(path), PATH "/%s", id);
			if (w) {
				body = cJSON_CreateObject();
				r = body && cJSON_AddStringToObject(body, "color", w->colour)
					    ? enqueue(db, "PATCH", path, body)
					    : -ENOMEM;
				cJSON_Delete(body);
			} else {
				r = enqueue(db, "DELETE", path, NULL);
			}
		} else if (name) {
			/* Not on the server yet: its create is changed or taken
			 * back (sent already: the next read shows it). */
			r = take_back_create(db, name);
			if (r > 0 && w) {
				body = cJSON_CreateObject();
				r = body && cJSON_AddStringToObject(body, "displayName", name) &&
						    cJSON_AddStringToObject(body, "color",
									    w->colour)
					    ? enqueue(db, "POST", PATH, body)
					    : -ENOMEM;
				cJSON_Delete(body);
			}
		}
		if (r < 0)
			goto out;
		r = 0;
	}
	/* New, and the list as it now is (ids kept). */
	for (size_t i = 0; i < n && !r; i++) {
		const cJSON *was = NULL;
		cJSON *item = cJSON_CreateObject();

		cJSON_ArrayForEach(x, old)
		{
			const char *name = cache_jstr(x, "displayName");

			if (!was && name && !strcasecmp(name, v[i].name))
				was = x;
		}
		if (!item ||
		    !cJSON_AddStringToObject(item, "displayName",
					     was ? cache_jstr(was, "displayName") : v[i].name) ||
		    !cJSON_AddStringToObject(item, "id", was ? cache_jstr(was, "id") ?: "" : "") ||
		    !cJSON_AddStringToObject(item, "color", v[i].colour)) {
			cJSON_Delete(item);
			r = -ENOMEM;
			break;
		}
		cJSON_AddItemToArray(now, item);
		if (!was) {
			cJSON *body = cJSON_CreateObject();

			r = body && cJSON_AddStringToObject(body, "displayName", v[i].name) &&
					    cJSON_AddStringToObject(body, "color", v[i].colour)
				    ? enqueue(db, "POST", PATH, body)
				    : -ENOMEM;
			cJSON_Delete(body);
		}
	}
	if (!r)
		r = store(db, now, 0);
out:
	for (size_t i = 0; i < n; i++)
		free(v[i].name);
	free(v);
	cJSON_Delete(old);
	cJSON_Delete(now);
	return r;
}

int cache_categories_write(struct cache *c, const char *text, size_t len, char *why, size_t whysize)
{
	struct write_args a = {text, len, why, whysize};

	if (whysize)
		why[0] = '\0';
	if (c->cfg.mailbox) {
		snprintf(why, whysize, "another mailbox's category list cannot be changed");
		pthread_mutex_lock(&c->api_lock);
		cache_error(c->db, "categories", "%s: Graph has no delegated permission for it",
			    why);
		pthread_mutex_unlock(&c->api_lock);
		return -EACCES;
	}
	/* The difference is taken against the server's list as it is now
	 * (ids of categories made since the last read included). */
	refresh(c, 0);
	return cache_in_txn(c, do_write, &a);
}
