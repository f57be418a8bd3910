/*
 * The mailbox's master category list as a text file (docs/design.md §10):
 * .contactfs/categories, one category a line, "name: colour", with
 * Outlook's colour names. Graph cannot rename a category: a renamed line is
 * one deleted and one created, and contacts keep the old name (shown
 * without a colour, as Outlook shows a category that is not in the list).
 *
 * Nothing here waits for the network on the caller's thread (issue 21):
 *  - Reading shows the stored list, and asks the sync thread to read the
 *    server's when the stored one is older than the poll interval (or was
 *    never read: then the file says so). The sync thread also reads it at
 *    its start when it was never read, so a first look normally finds it.
 *  - Writing the file whole takes its difference from the list the file
 *    showed (what the writer saw), by name: a new line or a changed
 *    colour is "this name, this colour", a line gone is "this name
 *    removed". Those edits are stored (EDITS, each name once: a later
 *    write replaces what an earlier said of it) and the shown list becomes
 *    the one written. The sync thread reads the server's list and turns
 *    the edits into requests against it (POST, PATCH of the colour,
 *    DELETE, by the ids the server has now), in the outbox; a category
 *    made elsewhere that the writer never saw is left alone. It does so
 *    only while none of our requests to the list waits, so a name is never
 *    created twice, and reads the list again once they went out.
 *
 * The list is kept in the meta table as the JSON of the server's answer
 * ("categories", with "categories_at" in ms, absent until the first
 * answer): Graph has no delta for it, and a delta round does not ask for it
 * (the file is read rarely).
 */
#include "cache_int.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PATH "/outlook/masterCategories"
/* The meta key of the edits written and not yet made requests. */
#define EDITS "categories_edits"

/* Shown before the first answer: a write then can only add or recolour. */
#define UNREAD_TEXT                                                                            \
	"# Not read from the server yet: it is being asked for. Lines written now are added\n" \
	"# to the list or recolour a category; nothing else on the server is removed.\n"

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

/* The JSON array kept under key in meta: a new empty one when there is
 * none (NULL only when out of memory). "categories": the list shown;
 * EDITS: the changes written and not yet made requests. */
static cJSON *stored(sqlite3 *db, const char *key)
{
	char *text = cache_db_meta_get(db, key);
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
	int r = text ? cache_db_meta_set(db, "categories", text) : -ENOMEM;

	free(text);
	if (!r && fetched) {
		snprintf(when, sizeof(when), "%lld", (long long)cache_now_ms());
		r = cache_db_meta_set(db, "categories_at", when);
	}
	return r;
}

/* Changes to the list that wait in the outbox (parked ones aside). */
static int waiting(sqlite3 *db)
{
	int64_t n = 0;
	int r = cache_db_int(db, &n,
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

/* The member of list called name (compared without case, as Outlook
 * does), or NULL. */
static cJSON *named(const cJSON *list, const char *name)
{
	cJSON *x;

	cJSON_ArrayForEach(x, list)
	{
		const char *n = cache_jstr(x, "displayName");

		if (n && name && !strcasecmp(n, name))
			return x;
	}
	return NULL;
}

static int enqueue(sqlite3 *db, const char *method, const char *path, const cJSON *body)
{
	char *text = body ? cJSON_PrintUnformatted(body) : NULL;
	int r = body && !text ? -ENOMEM : cache_outbox_add_request(db, method, path, text);

	free(text);
	return r;
}

/* One change written (an object of EDITS) made requests against list, the
 * server's, which is changed to what it will be once they are carried
 * out. In the open transaction. */
static int apply_edit(sqlite3 *db, cJSON *list, const cJSON *edit)
{
	const char *name = cache_jstr(edit, "displayName"), *colour = cache_jstr(edit, "color");
	cJSON *have = named(list, name), *body = NULL, *item;
	const char *id = have ? cache_jstr(have, "id") : NULL;
	char path[512];
	int r = 0;

	if (!name)
		return 0;
	if (have && id && *id)
		snprintf(path, sizeof(path), PATH "/%s", id);
	if (!colour) { /* removed */
		if (have && id && *id)
			r = enqueue(db, "DELETE", path, NULL);
		if (!r && have)
			cJSON_Delete(cJSON_DetachItemViaPointer(list, have));
		return r;
	}
	if (have) {
		const char *now = cache_jstr(have, "color");

		if (now && !strcmp(now, colour))
			return 0;
		if (id && *id) {
			body = cJSON_CreateObject();
			r = body && cJSON_AddStringToObject(body, "color", colour)
				    ? enqueue(db, "PATCH", path, body)
				    : -ENOMEM;
		}
		cJSON_Delete(body);
		if (!r)
			cJSON_ReplaceItemInObjectCaseSensitive(have, "color",
							       cJSON_CreateString(colour));
		return r;
	}
	body = cJSON_CreateObject();
	item = cJSON_CreateObject();
	if (!body || !item || !cJSON_AddStringToObject(body, "displayName", name) ||
	    !cJSON_AddStringToObject(body, "color", colour) ||
	    !cJSON_AddStringToObject(item, "displayName", name) ||
	    !cJSON_AddStringToObject(item, "id", "") ||
	    !cJSON_AddStringToObject(item, "color", colour)) {
		r = -ENOMEM;
	} else if (!(r = enqueue(db, "POST", PATH, body))) {
		cJSON_AddItemToArray(list, item);
		item = NULL;
	}
	cJSON_Delete(body);
	cJSON_Delete(item);
	return r;
}

struct sync_args {
	cJSON *list;  /* the server's answer */
	int requests; /* out: requests were queued */
};

/* The sync thread's transaction: the changes written meanwhile become
 * requests against the server's list, and the list as it will be is
 * stored. */
static int sync_store(sqlite3 *db, struct sync_args *a)
{
	cJSON *edits;
	const cJSON *e;
	int r;

	if ((r = waiting(db)) != 0)
		return r < 0 ? r : 0; /* queued meanwhile: they go first, then a new read */
	if (!(edits = stored(db, EDITS)))
		return -ENOMEM;
	cJSON_ArrayForEach(e, edits)
	{
		if ((r = apply_edit(db, a->list, e)))
			break;
	}
	if (!r && (r = waiting(db)) > 0) {
		a->requests = 1;
		r = 0;
	}
	if (!r)
		r = cache_db_run(db, "DELETE FROM meta WHERE key = '" EDITS "'", NULL);
	if (!r)
		r = store(db, a->list, 1);
	cJSON_Delete(edits);
	return r;
}

int cache_categories_sync(struct cache *c, enum list_read how)
{
	int64_t max_age = (int64_t)(c->cfg.poll_s > 0 ? c->cfg.poll_s : 300) * 1000;
	struct sync_args a = {0};
	int64_t edits = 0;
	char *at = NULL;
	int r, read;

	if (!c->g || c->cfg.mailbox)
		return 0;
	/* Our requests go out first; the list is read after them. */
	if ((r = waiting(c->sdb)) != 0)
		return r < 0 ? r : 0;
	r = cache_db_int(c->sdb, &edits,
			 "SELECT json_array_length(value) FROM meta WHERE key = '" EDITS "'", NULL);
	if (r < 0)
		return r;
	at = cache_db_meta_get(c->sdb, "categories_at");
	read = edits > 0 || c->categories_sent || (how != LIST_WRITTEN && !at) ||
	       (how == LIST_IF_STALE && cache_now_ms() - strtoll(at, NULL, 10) >= max_age);
	free(at);
	if (!read)
		return 0;
	if (!(a.list = cJSON_CreateArray()))
		return -ENOMEM;
	r = graph_list(c->g, PATH, NULL, 0, collect, a.list);
	if (r) {
		if (cache_offline_errno(r)) {
			r = -EHOSTDOWN;
		} else if (edits > 0 && !c->categories_told) {
			c->categories_told = 1;
			cache_error(c->sdb, "categories",
				    "reading the list to send the changes written to it: %s; "
				    "they wait and are tried again",
				    strerror(-r));
		} else {
			log_warn("cache: reading the master category list: %s", strerror(-r));
		}
		goto out;
	}
	if (!(r = cache_db_begin(c->sdb))) {
		r = sync_store(c->sdb, &a);
		r = r ? (cache_db_rollback(c->sdb), r) : cache_db_commit(c->sdb);
	}
	if (r < 0) {
		log_warn("cache: keeping the master category list: %s", strerror(-r));
		goto out;
	}
	/* Once they are carried out, the list is read again: the file shows
	 * what the server made of them (a refusal, the ids). */
	c->categories_sent = a.requests;
	c->categories_told = 0;
	r = a.requests;
out:
	cJSON_Delete(a.list);
	return r;
}

/* ---- reading ------------------------------------------------------------------ */

int cache_categories_text(struct cache *c, struct buf *out)
{
	const cJSON *x;
	int64_t max_age = (int64_t)(c->cfg.poll_s > 0 ? c->cfg.poll_s : 300) * 1000;
	char *at;
	cJSON *list;
	int r;

	if (c->cfg.mailbox)
		return buf_printf(out, "%s", SHARED_TEXT);
	pthread_mutex_lock(&c->api_lock);
	list = stored(c->db, "categories");
	at = cache_db_meta_get(c->db, "categories_at");
	pthread_mutex_unlock(&c->api_lock);
	/* The stored copy is shown; the sync thread reads the server's. */
	if (!at || cache_now_ms() - strtoll(at, NULL, 10) >= max_age)
		cache_ask_list(c, CACHE_LIST_CATEGORIES);
	if (!list) {
		free(at);
		return -ENOMEM;
	}
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
	if (!r && !at)
		r = buf_printf(out, "%s", UNREAD_TEXT);
	free(at);
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

/* Record that name is to be as edit says (an object {"displayName",
 * "color"}, or {"displayName"} alone for a removal): it replaces what an
 * earlier write said of that name. Takes edit. */
static int edit_add(cJSON *edits, cJSON *edit)
{
	cJSON *was = named(edits, cache_jstr(edit, "displayName"));

	if (was)
		return cJSON_ReplaceItemViaPointer(edits, was, edit) ? 0 : -ENOMEM;
	cJSON_AddItemToArray(edits, edit);
	return 0;
}

/* An edit of name: to colour, or (colour NULL) removed. Added to edits. */
static int edit_name(cJSON *edits, const char *name, const char *colour)
{
	cJSON *e = cJSON_CreateObject();

	if (!e || !cJSON_AddStringToObject(e, "displayName", name) ||
	    (colour && !cJSON_AddStringToObject(e, "color", colour))) {
		cJSON_Delete(e);
		return -ENOMEM;
	}
	return edit_add(edits, e);
}

static int do_write(struct cache *c, void *arg)
{
	struct write_args *a = arg;
	sqlite3 *db = c->db;
	struct wanted *v = NULL;
	size_t n = 0;
	cJSON *old = NULL, *now = NULL, *edits = NULL, *x;
	char *text = NULL;
	int r;

	if ((r = parse(a->text, a->len, &v, &n, a->why, a->whysize))) {
		if (r == -EINVAL) {
			cache_error(db, "categories", "%s; nothing changed", a->why);
			return CACHE_KEPT_INVALID;
		}
		return r;
	}
	/* The difference from the list the file showed: what the writer
	 * saw is what they changed. */
	old = stored(db, "categories");
	now = cJSON_CreateArray();
	edits = stored(db, EDITS);
	if (!old || !now || !edits) {
		r = -ENOMEM;
		goto out;
	}
	/* Gone, or recoloured. */
	cJSON_ArrayForEach(x, old)
	{
		const char *name = cache_jstr(x, "displayName"), *colour = cache_jstr(x, "color");
		struct wanted *w = NULL;

		for (size_t i = 0; i < n && !w; i++)
			if (name && !strcasecmp(v[i].name, name))
				w = &v[i];
		if (name && (!w || !colour || strcmp(colour, w->colour)))
			r = edit_name(edits, name, w ? w->colour : NULL);
		if (r)
			goto out;
	}
	/* New, and the list as it now is (ids kept). */
	for (size_t i = 0; i < n && !r; i++) {
		const cJSON *was = named(old, v[i].name);
		cJSON *item = cJSON_CreateObject();

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
		if (!was)
			r = edit_name(edits, v[i].name, v[i].colour);
	}
	if (!r && cJSON_GetArraySize(edits) == 0)
		r = cache_db_run(db, "DELETE FROM meta WHERE key = '" EDITS "'", NULL);
	else if (!r && !(text = cJSON_PrintUnformatted(edits)))
		r = -ENOMEM;
	else if (!r)
		r = cache_db_meta_set(db, EDITS, text);
	if (!r)
		r = store(db, now, 0);
out:
	for (size_t i = 0; i < n; i++)
		free(v[i].name);
	free(v);
	free(text);
	cJSON_Delete(old);
	cJSON_Delete(now);
	cJSON_Delete(edits);
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
	/* Stored, and the sync thread woken: it reads the server's list and
	 * turns the changes into requests. No network here. */
	return cache_in_txn(c, do_write, &a, NULL);
}
