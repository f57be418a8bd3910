/*
 * cache/: the SQLite replica and the sync engine, against the Graph
 * emulator (docs/design.md §2-8, 11, 12).
 *
 * Each case gets a fresh temporary directory for its cache and, when it
 * talks to Graph, an emulator of its own. Cases run through RUN(): the case's
 * body may fail a CHECK and return early; RUN then still closes the cache,
 * stops the emulator and removes the directory.
 *
 * Nothing sleeps for a fixed time where a drain, cache_wait_file or a status
 * poll says when something happened; where no such signal exists, the test
 * polls for the state it expects, with a deadline.
 */
#include "check.h"
#include "emulator.h"

#include "cache.h"
#include "graph.h"
#include "util.h"
#include "vcard.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ME "me@contoso.example"

/* Deadlines. Generous: a loaded CI machine runs the sanitizer build too. */
#define SYNC_MS 30000
#define DRAIN_MS 30000

/* ---- time --------------------------------------------------------------------------- */

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The pause between two looks of a poll (never a wait for an outcome). */
static void poll_pause(void)
{
	struct timespec ts = {0, 20 * 1000000L};

	nanosleep(&ts, NULL);
}

/* ---- files ---------------------------------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void rm_tree(const char *path)
{
	if (path[0])
		nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A whole file, malloc'd (NUL-terminated); NULL when it cannot be read. */
static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *data = NULL;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (data = malloc((size_t)n + 1)) != NULL) {
		if (fread(data, 1, (size_t)n, f) != (size_t)n) {
			free(data);
			data = NULL;
		} else {
			data[n] = '\0';
			*len = (size_t)n;
		}
	}
	fclose(f);
	return data;
}

static int spit(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	int ok = f && fwrite(data, 1, len, f) == len;

	if (f && fclose(f))
		ok = 0;
	return ok ? 0 : -1;
}

/* Whether the file at path holds exactly data[0..len). */
static int same_bytes(const char *path, const char *data, size_t len)
{
	size_t n = 0;
	char *now = slurp(path, &n);
	int same = now && n == len && !memcmp(now, data, len);

	free(now);
	return same;
}

static unsigned mode_of(const char *path)
{
	struct stat st;

	return stat(path, &st) ? 0xffffu : (unsigned)(st.st_mode & 07777);
}

/* ---- what the cache tells ------------------------------------------------------------- */

struct told {
	enum cache_event what;
	uint64_t ino, parent, old_parent;
	char name[256], old_name[256];
};

struct recorder {
	pthread_mutex_t lock;
	struct told *v;
	size_t n, size;
};

static void record_change(void *ctx, const struct cache_change *ch)
{
	struct recorder *r = ctx;

	pthread_mutex_lock(&r->lock);
	if (r->n == r->size) {
		size_t size = r->size ? 2 * r->size : 64;
		struct told *v = realloc(r->v, size * sizeof(*v));

		if (!v) {
			pthread_mutex_unlock(&r->lock);
			return;
		}
		r->v = v;
		r->size = size;
	}
	r->v[r->n].what = ch->what;
	r->v[r->n].ino = ch->ino;
	r->v[r->n].parent = ch->parent;
	r->v[r->n].old_parent = ch->old_parent;
	snprintf(r->v[r->n].name, sizeof(r->v[r->n].name), "%s", ch->name ? ch->name : "");
	snprintf(r->v[r->n].old_name, sizeof(r->v[r->n].old_name), "%s",
		 ch->old_name ? ch->old_name : "");
	r->n++;
	pthread_mutex_unlock(&r->lock);
}

/* Whether the cache told what happened to parent/name (and, for a rename,
 * that it was old_name before; NULL: any). */
static int was_told(struct recorder *r, enum cache_event what, uint64_t parent, const char *name,
		    const char *old_name)
{
	int found = 0;

	pthread_mutex_lock(&r->lock);
	for (size_t i = 0; i < r->n && !found; i++)
		found = r->v[i].what == what && r->v[i].parent == parent &&
			!strcmp(r->v[i].name, name) &&
			(!old_name || !strcmp(r->v[i].old_name, old_name));
	pthread_mutex_unlock(&r->lock);
	return found;
}

/* ---- a test's world: a temp dir, an emulator, two clients, a cache ---------------------- */

struct opts {
	const char *seed; /* POST /_emulator/reset body; NULL: the empty mailbox */
	int grace_ms;	  /* delete_grace_ms */
	int max_attempts; /* of the cache's Graph client; 0: graph's default */
	int no_emulator;  /* schema tests: a directory only */
	int photos;	  /* cfg.photos */
};

struct env {
	struct opts o;
	char tmp[256]; /* the temporary directory */
	char dir[320]; /* the cache directory in it */
	char db[340];  /* dir/cache.db */
	struct emulator e;
	char graph_url[96], auth_url[64], cmd[128], api_cmd[128];
	struct graph *g;   /* the cache's client */
	struct graph *api; /* the test's own, for changes made "elsewhere" */
	struct cache_config cfg;
	struct cache *c;
	struct recorder rec;
};

static struct graph *new_client(struct env *v, char *cmd, size_t size, int max_attempts)
{
	struct graph_config cfg = {0};
	int err;

	snprintf(cmd, size, "echo %s", v->e.token);
	cfg.graph_url = v->graph_url;
	cfg.auth_url = v->auth_url;
	cfg.token_cmd = cmd;
	cfg.timeout_s = 20;
	cfg.max_attempts = max_attempts;
	return graph_new(&cfg, &err);
}

/* An admin request whose answer must be a JSON object without "error". */
static int admin_ok(struct env *v, const char *method, const char *path, const char *body)
{
	cJSON *j = emulator_admin(&v->e, method, path, body);
	int ok = cJSON_IsObject(j) && !cJSON_GetObjectItemCaseSensitive(j, "error");

	if (!ok)
		fprintf(stderr, "%s %s refused: %s\n", method, path, body ? body : "");
	cJSON_Delete(j);
	return ok ? 0 : -1;
}

static int faults(struct env *v, const char *json)
{
	return admin_ok(v, "POST", "/_emulator/faults", json);
}

static struct cache *open_cache(struct env *v, char *errbuf, size_t size, int *err)
{
	return cache_open(&v->cfg, v->g, errbuf, size, err);
}

static void env_down(struct env *v)
{
	if (!v)
		return;
	cache_close(v->c);
	graph_free(v->g);
	graph_free(v->api);
	if (v->e.pid > 0)
		emulator_stop(&v->e);
	rm_tree(v->tmp);
	pthread_mutex_destroy(&v->rec.lock);
	free(v->rec.v);
	free(v);
}

static struct env *env_up(const struct opts *o)
{
	struct env *v = calloc(1, sizeof(*v));
	const char *t = getenv("TMPDIR");
	char errbuf[512];
	int err;

	if (!v)
		return NULL;
	if (getenv("CONTACTFS_TEST_DEBUG"))
		log_set_level(LOG_LVL_DEBUG);
	v->o = *o;
	pthread_mutex_init(&v->rec.lock, NULL);
	snprintf(v->tmp, sizeof(v->tmp), "%s/cfs-test-cache-XXXXXX", t && *t ? t : "/tmp");
	if (!mkdtemp(v->tmp)) {
		perror("mkdtemp");
		v->tmp[0] = '\0';
		goto fail;
	}
	snprintf(v->dir, sizeof(v->dir), "%s/cache", v->tmp);
	snprintf(v->db, sizeof(v->db), "%s/cache.db", v->dir);
	v->cfg.dir = v->dir;
	v->cfg.poll_s = -1;
	v->cfg.delete_grace_ms = o->grace_ms;
	v->cfg.photos = o->photos;
	v->cfg.on_change = record_change;
	v->cfg.ctx = &v->rec;
	if (o->no_emulator)
		return v;
	if (emulator_start(&v->e, NULL))
		goto fail;
	snprintf(v->graph_url, sizeof(v->graph_url), "%s", v->e.graph_url);
	snprintf(v->auth_url, sizeof(v->auth_url), "%s", v->e.url);
	if (admin_ok(v, "POST", "/_emulator/reset", o->seed ? o->seed : "{}"))
		goto fail;
	v->g = new_client(v, v->cmd, sizeof(v->cmd), o->max_attempts);
	v->api = new_client(v, v->api_cmd, sizeof(v->api_cmd), 0);
	if (!v->g || !v->api)
		goto fail;
	if (!(v->c = open_cache(v, errbuf, sizeof(errbuf), &err))) {
		fprintf(stderr, "cache_open: %s\n", errbuf);
		goto fail;
	}
	return v;
fail:
	env_down(v);
	return NULL;
}

/* Run body(check_failed_, env) in a fresh world, and take it down whatever
 * the body's CHECKs said. */
#define RUN(body, ...)                                                                  \
	do {                                                                            \
		struct opts o_ = {__VA_ARGS__};                                         \
		struct env *v_;                                                         \
		if (!o_.no_emulator)                                                    \
			EMULATOR_NEEDED();                                              \
		v_ = env_up(&o_);                                                       \
		if (!v_)                                                                \
			CHECK(!"the test's emulator, client or cache did not come up"); \
		body(check_failed_, v_);                                                \
		env_down(v_);                                                           \
	} while (0)

#define BODY(name) static void name(int *check_failed_, struct env *v)

/* ---- the server's side ------------------------------------------------------------- */

/* GET /_emulator/state; *box: our mailbox in it. The document, to free. */
static cJSON *server_state(struct env *v, const cJSON **box)
{
	cJSON *doc = emulator_admin(&v->e, "GET", "/_emulator/state", NULL);

	*box = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(doc, "mailboxes"),
						ME);
	return doc;
}

static const char *jstr(const cJSON *o, const char *key)
{
	return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, key));
}

/* How many contacts of the mailbox (all folders) have this display name
 * (NULL: every contact); -1 when the state cannot be read. */
static int server_count(struct env *v, const char *display_name)
{
	const cJSON *box, *it;
	cJSON *doc = server_state(v, &box);
	int n = box ? 0 : -1;

	cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(box, "contacts"))
	{
		const char *dn = jstr(it, "displayName");

		if (!display_name || (dn && !strcmp(dn, display_name)))
			n++;
	}
	cJSON_Delete(doc);
	return n;
}

/* A copy of the first contact with this display name, or NULL. */
static cJSON *server_contact(struct env *v, const char *display_name)
{
	const cJSON *box, *it;
	cJSON *doc = server_state(v, &box), *found = NULL;

	cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(box, "contacts"))
	{
		const char *dn = jstr(it, "displayName");

		if (dn && !strcmp(dn, display_name)) {
			found = cJSON_Duplicate(it, 1);
			break;
		}
	}
	cJSON_Delete(doc);
	return found;
}

/* A field of that contact, malloc'd ("" for null), or NULL when there is no
 * such contact. */
static char *server_field(struct env *v, const char *display_name, const char *field)
{
	cJSON *c = server_contact(v, display_name);
	const char *s = c ? jstr(c, field) : NULL;
	char *out = c ? strdup(s ? s : "") : NULL;

	cJSON_Delete(c);
	return out;
}

/* Whether Deleted Items hold the contact with this id. */
static int server_deleted(struct env *v, const char *id)
{
	const cJSON *box, *it;
	cJSON *doc = server_state(v, &box);
	int found = 0;

	cJSON_ArrayForEach(
		it, cJSON_GetObjectItemCaseSensitive(
			    cJSON_GetObjectItemCaseSensitive(box, "deletedItems"), "contacts"))
		found |= jstr(it, "id") && !strcmp(jstr(it, "id"), id);
	cJSON_Delete(doc);
	return found;
}

/* One count of /_emulator/requests: table "by_route" ($batch items
 * included: how often a route was asked for) or "by_status" (how many
 * answers had a status). -1 on error. */
static int request_count(struct env *v, const char *table, const char *key)
{
	cJSON *j = emulator_admin(&v->e, "GET", "/_emulator/requests", NULL);
	const cJSON *by = cJSON_GetObjectItemCaseSensitive(j, table);
	const cJSON *n = cJSON_GetObjectItemCaseSensitive(by, key);
	int count = !by ? -1 : cJSON_IsNumber(n) ? n->valueint : 0;

	cJSON_Delete(j);
	return count;
}

static int route_count(struct env *v, const char *route)
{
	return request_count(v, "by_route", route);
}

static int status_count(struct env *v, const char *status)
{
	return request_count(v, "by_status", status);
}

/* Change a contact on the server as another client (Outlook) would:
 * PATCH /contacts/{id} with body (JSON text). */
static int server_patch(struct env *v, const char *id, const char *body)
{
	cJSON *b = cJSON_Parse(body), *out = NULL;
	char path[512];
	int r;

	if (!b)
		return -EINVAL;
	snprintf(path, sizeof(path), "/contacts/%s", id);
	r = graph_send_json(v->api, "PATCH", path, b, NULL, 0, &out);
	cJSON_Delete(b);
	cJSON_Delete(out);
	return r;
}

static int server_delete(struct env *v, const char *id)
{
	struct graph_response resp;
	char path[512];
	int r;

	graph_response_init(&resp);
	snprintf(path, sizeof(path), "/contacts/%s", id);
	r = graph_request(v->api, "DELETE", path, NULL, 0, NULL, 0, NULL, &resp);
	if (!r && resp.status != 204)
		r = graph_errno(resp.status, resp.code);
	graph_response_release(&resp);
	return r;
}

/* ---- the cache's side --------------------------------------------------------------- */

/* Start the sync thread and wait for the first sync to complete. */
static int start_synced(struct env *v)
{
	int64_t deadline = mono_ms() + SYNC_MS;
	struct cache_status st;

	if (cache_start(v->c))
		return -1;
	cache_sync_now(v->c);
	while (!cache_status(v->c, &st) && !st.synced) {
		if (mono_ms() > deadline)
			return -1;
		poll_pause();
	}
	return st.synced ? 0 : -1;
}

/*
 * Wait for a delta round that began after this call. last_sync counts whole
 * seconds: a round that ends in a later second than the call ended after
 * it, and the round that ends after that one began after the call.
 */
static int fresh_round(struct env *v)
{
	int64_t deadline = mono_ms() + SYNC_MS;
	time_t mark = time(NULL);

	for (int phase = 0; phase < 2; phase++) {
		struct cache_status st;

		for (;;) {
			cache_sync_now(v->c);
			if (cache_status(v->c, &st))
				return -1;
			if (st.last_sync > mark)
				break;
			if (mono_ms() > deadline)
				return -1;
			poll_pause();
		}
		mark = st.last_sync;
	}
	return 0;
}

/* Create (when new) and write a file; the cache_write result. */
static int put(struct env *v, uint64_t parent, const char *name, const char *text, uint64_t *ino)
{
	struct vcard_error err;
	struct cache_attr a;
	int r = cache_lookup(v->c, parent, name, &a);

	if (r == -ENOENT)
		r = cache_create(v->c, parent, name, CACHE_FILE, NULL, &a);
	if (r)
		return r;
	if (ino)
		*ino = a.ino;
	r = cache_write(v->c, a.ino, text, strlen(text), 0, &err);
	if (r)
		fprintf(stderr, "cache_write %s: %s (%s)\n", name, strerror(-r), err.msg);
	return r;
}

/* A file's bytes (malloc'd, NUL-terminated), or NULL. */
static char *read_ino(struct env *v, uint64_t ino)
{
	struct buf b;

	buf_init(&b, 0);
	if (cache_read(v->c, ino, &b)) {
		buf_release(&b);
		return NULL;
	}
	return buf_detach(&b, NULL);
}

static char *read_name(struct env *v, uint64_t parent, const char *name)
{
	struct cache_attr a;

	return cache_lookup(v->c, parent, name, &a) ? NULL : read_ino(v, a.ino);
}

/* The text value of a property of a vCard (malloc'd), or NULL. */
static char *card_prop(const char *text, const char *prop)
{
	struct vcard *card = NULL;
	struct vcard_error e;
	const struct vcard_prop *p;
	char *out = NULL;

	if (!text || vcard_parse_one(text, strlen(text), &card, &e))
		return NULL;
	p = vcard_find(card, prop);
	if (p) {
		const char *s = vcard_text(card, p);

		out = s ? strdup(s) : NULL;
	}
	vcard_free(card);
	return out;
}

/* Whether a file's property is value. */
static int file_says(struct env *v, uint64_t parent, const char *name, const char *prop,
		     const char *value)
{
	char *text = read_name(v, parent, name), *got = card_prop(text, prop);
	int same = got && !strcmp(got, value);

	free(text);
	free(got);
	return same;
}

/* text with the (unfolded) line that starts with prefix replaced by line,
 * or line added before END:VCARD when there is none. malloc'd. */
static char *with_line(const char *text, const char *prefix, const char *line)
{
	struct buf b;
	const char *p = text;
	int done = 0;

	buf_init(&b, 0);
	while (*p) {
		const char *eol = strstr(p, "\r\n");
		size_t n = eol ? (size_t)(eol - p) + 2 : strlen(p);

		if (!strncmp(p, prefix, strlen(prefix)) && !done) {
			if (buf_printf(&b, "%s\r\n", line))
				goto fail;
			done = 1;
		} else if (!strncmp(p, "END:VCARD", 9) && !done) {
			if (buf_printf(&b, "%s\r\n", line) || buf_add(&b, p, n))
				goto fail;
			done = 1;
		} else if (buf_add(&b, p, n)) {
			goto fail;
		}
		p += n;
	}
	return buf_detach(&b, NULL);
fail:
	buf_release(&b);
	return NULL;
}

/* A vCard 3.0 of a person. extra: more lines, each ending in CRLF. */
static void person(char *out, size_t size, const char *given, const char *family, const char *note,
		   const char *extra)
{
	snprintf(out, size,
		 "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:%s %s\r\nN:%s;%s;;;\r\n%sNOTE:%s\r\n"
		 "END:VCARD\r\n",
		 given, family, family, given, extra ? extra : "", note);
}

struct listing {
	int files, vcfs, dirs;
	char names[64][256];
	struct cache_attr attrs[64];
	size_t n;
};

static int list_entry(const char *name, const struct cache_attr *a, void *ctx)
{
	struct listing *l = ctx;
	size_t len = strlen(name);

	if (a->kind == CACHE_FOLDER || a->kind == CACHE_SCRATCH_DIR)
		l->dirs++;
	else
		l->files++;
	if (a->kind == CACHE_FILE && len > 4 && !strcmp(name + len - 4, ".vcf"))
		l->vcfs++;
	if (l->n < 64) {
		snprintf(l->names[l->n], sizeof(l->names[0]), "%s", name);
		l->attrs[l->n++] = *a;
	}
	return 0;
}

static int list_dir(struct env *v, uint64_t dir, struct listing *l)
{
	memset(l, 0, sizeof(*l));
	return cache_readdir(v->c, dir, 0, list_entry, l);
}

/* How many names in the listing start with prefix. */
static int names_with(const struct listing *l, const char *prefix)
{
	int n = 0;

	for (size_t i = 0; i < l->n; i++)
		n += !strncmp(l->names[i], prefix, strlen(prefix));
	return n;
}

struct error_log {
	int n;
	char what[16][256];
	char message[16][1024];
};

static int collect_error(time_t when, const char *what, const char *message, void *ctx)
{
	struct error_log *l = ctx;

	(void)when;
	if (l->n < 16) {
		snprintf(l->what[l->n], sizeof(l->what[0]), "%s", what ? what : "");
		snprintf(l->message[l->n], sizeof(l->message[0]), "%s", message ? message : "");
		l->n++;
	}
	return 0;
}

/* Whether the error log has an entry about what whose message contains
 * needle (NULL: any). */
static int logged(struct env *v, const char *what, const char *needle)
{
	struct error_log l;

	memset(&l, 0, sizeof(l));
	if (cache_errors(v->c, 16, collect_error, &l))
		return 0;
	for (int i = 0; i < l.n; i++)
		if (!strcmp(l.what[i], what) && (!needle || strstr(l.message[i], needle)))
			return 1;
	return 0;
}

/* ==== 1. the schema =================================================================== */

/* A cache opened without Graph (g = NULL), as the schema tests need. */
static struct cache *open_local(struct env *v, const char *mailbox, char *errbuf, size_t size,
				int *err)
{
	struct cache_config cfg = v->cfg;

	cfg.mailbox = mailbox;
	return cache_open(&cfg, NULL, errbuf, size, err);
}

static const char CARD_KEEP[] = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Keep Me\r\nN:Me;Keep;;;\r\n"
				"UID:urn:uuid:6a1c4a5e-keep-me\r\nEND:VCARD\r\n";

BODY(private_modes)
{
	struct vcard_error verr;
	struct cache_attr a;
	char errbuf[512], path[400];
	int err, fd;

	/* The directory exists already, open to others: refused, its mode left
	 * alone (it may be a home), and nothing created in it. */
	CHECK(mkdir(v->dir, 0755) == 0);
	CHECK(chmod(v->dir, 0755) == 0);
	v->c = open_local(v, NULL, errbuf, sizeof(errbuf), &err);
	CHECK(v->c == NULL);
	CHECK_INT(err, -EACCES);
	CHECK(strstr(errbuf, v->dir) && strstr(errbuf, "mode 0755") && strstr(errbuf, "chmod 700"));
	CHECK_INT(mode_of(v->dir), 0755);
	CHECK(access(v->db, F_OK) != 0);

	/* Closed to others but holding other files and no cache: refused. */
	CHECK(chmod(v->dir, 0700) == 0);
	snprintf(path, sizeof(path), "%s/notes.txt", v->dir);
	CHECK((fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600)) >= 0);
	close(fd);
	v->c = open_local(v, NULL, errbuf, sizeof(errbuf), &err);
	CHECK(v->c == NULL);
	CHECK_INT(err, -ENOTEMPTY);
	CHECK(strstr(errbuf, v->dir) && strstr(errbuf, "no contactfs cache"));
	CHECK(access(v->db, F_OK) != 0);
	CHECK(unlink(path) == 0);

	/* Empty and 0700: used as it is. */
	v->c = open_local(v, NULL, errbuf, sizeof(errbuf), &err);
	CHECK(v->c != NULL);
	CHECK_INT(err, 0);
	CHECK(cache_create(v->c, CACHE_ROOT_INO, "notes.txt", CACHE_FILE, NULL, &a) == 0);
	CHECK(cache_write(v->c, a.ino, "hello", 5, 0, &verr) == 0);
	CHECK_INT(mode_of(v->dir), 0700);
	CHECK_INT(mode_of(v->db), 0600);
	snprintf(path, sizeof(path), "%s-wal", v->db);
	if (access(path, F_OK) == 0)
		CHECK_INT(mode_of(path), 0600);
	snprintf(path, sizeof(path), "%s-shm", v->db);
	if (access(path, F_OK) == 0)
		CHECK_INT(mode_of(path), 0600);
	cache_close(v->c);
	v->c = NULL;

	/* Holding its cache (and the cache's -wal and -shm): opened again. */
	v->c = open_local(v, NULL, errbuf, sizeof(errbuf), &err);
	CHECK(v->c != NULL);
	cache_close(v->c);
	v->c = NULL;

	/* A directory it creates (parents too) is 0700 from the start. */
	snprintf(path, sizeof(path), "%s/deeper/cache", v->tmp);
	v->cfg.dir = path;
	v->c = open_local(v, NULL, errbuf, sizeof(errbuf), &err);
	v->cfg.dir = v->dir;
	CHECK(v->c != NULL);
	CHECK_INT(mode_of(path), 0700);
	snprintf(path, sizeof(path), "%s/deeper", v->tmp);
	CHECK_INT(mode_of(path), 0700);
	snprintf(path, sizeof(path), "%s/deeper/cache/cache.db", v->tmp);
	CHECK_INT(mode_of(path), 0600);
out:;
}

TEST(cache_open_makes_its_directory_0700_and_never_chmods_one_that_exists)
{
	RUN(private_modes, .no_emulator = 1);
out:;
}

BODY(reopen_keeps_data)
{
	struct vcard_error verr;
	struct cache_attr note, card, gone, later, got;
	struct cache_status st;
	char errbuf[512], *text = NULL;
	int err;

	v->c = open_local(v, NULL, errbuf, sizeof(errbuf), &err);
	CHECK(v->c != NULL);
	CHECK(cache_create(v->c, CACHE_ROOT_INO, "notes.txt", CACHE_FILE, NULL, &note) == 0);
	CHECK(cache_write(v->c, note.ino, "kept across a remount\n", 22, 0, &verr) == 0);
	CHECK(cache_create(v->c, CACHE_ROOT_INO, "Keep Me.vcf", CACHE_FILE, NULL, &card) == 0);
	CHECK(cache_write(v->c, card.ino, CARD_KEEP, strlen(CARD_KEEP), 0, &verr) == 0);
	CHECK(cache_create(v->c, CACHE_ROOT_INO, "gone.txt", CACHE_FILE, NULL, &gone) == 0);
	CHECK(cache_unlink(v->c, CACHE_ROOT_INO, "gone.txt") == 0);
	cache_close(v->c);

	v->c = open_local(v, NULL, errbuf, sizeof(errbuf), &err);
	CHECK(v->c != NULL);
	CHECK(cache_lookup(v->c, CACHE_ROOT_INO, "notes.txt", &got) == 0);
	CHECK_INT(got.ino, note.ino);
	text = read_ino(v, got.ino);
	CHECK(text != NULL);
	CHECK_STR(text, "kept across a remount\n");
	free(text);
	text = NULL;
	CHECK(cache_lookup(v->c, CACHE_ROOT_INO, "Keep Me.vcf", &got) == 0);
	CHECK_INT(got.ino, card.ino);
	CHECK(got.contact);
	text = read_ino(v, got.ino);
	CHECK(text != NULL);
	CHECK_STR(text, CARD_KEEP);
	free(text);
	text = NULL;
	CHECK_INT(cache_lookup(v->c, CACHE_ROOT_INO, "gone.txt", &got), -ENOENT);
	/* The create queued before the remount is still queued. */
	CHECK(cache_status(v->c, &st) == 0);
	CHECK_INT(st.pending, 1);
	CHECK_INT(st.contacts, 1);
	/* Inode numbers are never reused, remount or not. */
	CHECK(cache_create(v->c, CACHE_ROOT_INO, "later.txt", CACHE_FILE, NULL, &later) == 0);
	CHECK(later.ino > gone.ino);
out:
	free(text);
}

TEST(cache_reopened_keeps_its_files_inodes_and_queued_changes)
{
	RUN(reopen_keeps_data, .no_emulator = 1);
out:;
}

/* Opened again: the file, its bytes and its queued create are there, and
 * the file's user_version is this contactfs's; *db is left open for the
 * caller's own look at the schema (close it). */
static void reopened_keeps(int *check_failed_, struct env *v, uint64_t ino, sqlite3 **db)
{
	struct cache_attr got;
	struct cache_status st;
	char errbuf[512], *text = NULL;
	int64_t version = 0;
	sqlite3_stmt *q = NULL;
	int err = 0, rc;

	v->c = open_local(v, NULL, errbuf, sizeof(errbuf), &err);
	if (!v->c)
		fprintf(stderr, "errbuf: %s\n", errbuf);
	CHECK(v->c != NULL);
	CHECK(cache_lookup(v->c, CACHE_ROOT_INO, "Keep Me.vcf", &got) == 0);
	CHECK_INT(got.ino, ino);
	text = read_ino(v, got.ino);
	CHECK(text != NULL);
	CHECK_STR(text, CARD_KEEP);
	free(text);
	text = NULL;
	CHECK(cache_status(v->c, &st) == 0);
	CHECK_INT(st.pending, 1);
	cache_close(v->c);
	v->c = NULL;
	rc = sqlite3_open(v->db, db);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(*db, "PRAGMA user_version", -1, &q, NULL);
	if (rc == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW)
		version = sqlite3_column_int64(q, 0);
	sqlite3_finalize(q);
	q = NULL;
	CHECK_INT(rc, SQLITE_OK);
	CHECK_INT(version, CACHE_SCHEMA_VERSION);
out:
	free(text);
	sqlite3_finalize(q);
}

/* A cache holding one queued card, its inode in *ino, taken back to an
 * older schema by sql. */
static void downgraded(int *check_failed_, struct env *v, const char *sql, uint64_t *ino)
{
	struct vcard_error verr;
	struct cache_attr card;
	char errbuf[512];
	sqlite3 *db = NULL;
	int err, rc;

	v->c = open_local(v, NULL, errbuf, sizeof(errbuf), &err);
	CHECK(v->c != NULL);
	CHECK(cache_create(v->c, CACHE_ROOT_INO, "Keep Me.vcf", CACHE_FILE, NULL, &card) == 0);
	CHECK(cache_write(v->c, card.ino, CARD_KEEP, strlen(CARD_KEEP), 0, &verr) == 0);
	*ino = card.ino;
	cache_close(v->c);
	v->c = NULL;
	rc = sqlite3_open(v->db, &db);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
	sqlite3_close(db);
	CHECK_INT(rc, SQLITE_OK);
out:;
}

/* A cache made by the first schema (as contactfs 1 made it) is migrated
 * on open: its files and queue stay, and what versions 2, 3 and 4 added is
 * there. */
BODY(migrate_v1)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *q = NULL;
	int64_t tables = 0;
	uint64_t ino = 0;
	int rc;

	downgraded(check_failed_, v,
		   "DROP TABLE names_past; DROP TABLE names_due; DROP TRIGGER contacts_versions; "
		   "DROP TABLE versions; DROP TABLE merges; ALTER TABLE nodes DROP COLUMN basis; "
		   "ALTER TABLE contacts DROP COLUMN flag; ALTER TABLE nodes DROP COLUMN loaded; "
		   "DROP TABLE exts_due; PRAGMA user_version = 1",
		   &ino);
	if (CHECK_FAILED)
		return;
	reopened_keeps(check_failed_, v, ino, &db);
	if (CHECK_FAILED) {
		sqlite3_close(db);
		return;
	}
	rc = sqlite3_prepare_v2(db,
				"SELECT count(*) FROM sqlite_master WHERE name IN "
				"('names_past', 'names_due', 'versions', 'contacts_versions') OR "
				"(name = 'nodes' AND sql LIKE '%basis%') OR "
				"(name = 'contacts' AND sql LIKE '%flag TEXT%') OR "
				"(name = 'merges' AND sql LIKE '%local INTEGER%')",
				-1, &q, NULL);
	if (rc == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW)
		tables = sqlite3_column_int64(q, 0);
	sqlite3_finalize(q);
	q = NULL;
	sqlite3_close(db);
	CHECK_INT(rc, SQLITE_OK);
	CHECK_INT(tables, 7);
out:
	sqlite3_finalize(q);
}

TEST(cache_open_migrates_a_cache_of_the_first_schema_keeping_its_files_and_queue)
{
	RUN(migrate_v1, .no_emulator = 1);
out:;
}

/* Make v->db an SQLite database of another program. */
static int foreign_database(struct env *v)
{
	sqlite3 *db = NULL;
	int rc;

	if (mkdir(v->dir, 0700))
		return -1;
	rc = sqlite3_open(v->db, &db);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db,
				  "CREATE TABLE songs(title TEXT, artist TEXT);"
				  "INSERT INTO songs VALUES('Help!', 'The Beatles');",
				  NULL, NULL, NULL);
	sqlite3_close(db);
	return rc == SQLITE_OK ? 0 : -1;
}

BODY(refuse_foreign)
{
	char errbuf[512];
	int err = 0;

	CHECK(foreign_database(v) == 0);
	errbuf[0] = '\0';
	CHECK(open_local(v, NULL, errbuf, sizeof(errbuf), &err) == NULL);
	CHECK_INT(err, -EINVAL);
	if (!strstr(errbuf, "not a contactfs cache"))
		fprintf(stderr, "errbuf: %s\n", errbuf);
	CHECK(strstr(errbuf, "not a contactfs cache") != NULL);
out:;
}

TEST(cache_open_refuses_another_programs_sqlite_database)
{
	RUN(refuse_foreign, .no_emulator = 1);
out:;
}

BODY(foreign_untouched)
{
	char errbuf[512], *before = NULL;
	size_t len = 0;
	int err = 0;

	CHECK(foreign_database(v) == 0);
	before = slurp(v->db, &len);
	CHECK(before != NULL);
	CHECK(open_local(v, NULL, errbuf, sizeof(errbuf), &err) == NULL);
	CHECK_INT(err, -EINVAL);
	/* Refused means untouched: not even its journal mode is ours to set. */
	if (!same_bytes(v->db, before, len)) {
		free(before);
		before = NULL;
		CHECK(!"the refused database was changed");
	}
out:
	free(before);
}

TEST(cache_open_leaves_another_programs_database_as_it_was)
{
	RUN(foreign_untouched, .no_emulator = 1);
out:;
}

BODY(refuse_noise)
{
	char noise[3 * 4096], errbuf[512];
	uint32_t x = 2463534242u;
	int err = 0;

	CHECK(mkdir(v->dir, 0700) == 0);
	for (size_t i = 0; i < sizeof(noise); i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		noise[i] = (char)(x >> 24);
	}
	CHECK(spit(v->db, noise, sizeof(noise)) == 0);
	errbuf[0] = '\0';
	CHECK(open_local(v, NULL, errbuf, sizeof(errbuf), &err) == NULL);
	CHECK_INT(err, -EINVAL);
	CHECK(errbuf[0] != '\0');
	CHECK(same_bytes(v->db, noise, sizeof(noise)));
out:;
}

TEST(cache_open_refuses_a_file_that_is_not_sqlite)
{
	RUN(refuse_noise, .no_emulator = 1);
out:;
}

BODY(refuse_newer)
{
	char errbuf[512], sql[64];
	sqlite3 *db = NULL;
	int err = 0, rc;

	v->c = open_local(v, NULL, errbuf, sizeof(errbuf), &err);
	CHECK(v->c != NULL);
	cache_close(v->c);
	v->c = NULL;
	snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", CACHE_SCHEMA_VERSION + 1);
	rc = sqlite3_open(v->db, &db);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
	sqlite3_close(db);
	CHECK_INT(rc, SQLITE_OK);
	errbuf[0] = '\0';
	CHECK(open_local(v, NULL, errbuf, sizeof(errbuf), &err) == NULL);
	CHECK_INT(err, -EINVAL);
	if (!strstr(errbuf, "newer"))
		fprintf(stderr, "errbuf: %s\n", errbuf);
	CHECK(strstr(errbuf, "newer") != NULL);
out:;
}

TEST(cache_open_refuses_a_database_of_a_newer_schema)
{
	RUN(refuse_newer, .no_emulator = 1);
out:;
}

/* A cache as schema version `from` left it (sql takes a new one there) is
 * migrated on open, keeping what it holds; then query prepares. */
static void migrated_from(int *check_failed_, struct env *v, const char *sql, const char *query)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *q = NULL;
	uint64_t ino = 0;
	int rc;

	downgraded(check_failed_, v, sql, &ino);
	if (CHECK_FAILED)
		return;
	reopened_keeps(check_failed_, v, ino, &db);
	if (CHECK_FAILED) {
		sqlite3_close(db);
		return;
	}
	rc = sqlite3_prepare_v2(db, query, -1, &q, NULL);
	sqlite3_finalize(q);
	q = NULL;
	sqlite3_close(db);
	CHECK_INT(rc, SQLITE_OK);
out:
	sqlite3_finalize(q);
}

BODY(migrate_v2)
{
	/* No contacts.flag, no merges.local. */
	migrated_from(
		check_failed_, v,
		"ALTER TABLE contacts DROP COLUMN flag; ALTER TABLE merges DROP COLUMN local; "
		"ALTER TABLE nodes DROP COLUMN loaded; DROP TABLE exts_due; PRAGMA user_version = 2;",
		"SELECT c.flag, m.local, n.loaded, d.id FROM contacts c, merges m, nodes n, exts_due d");
}

BODY(migrate_v3)
{
	/* No merges.local. */
	migrated_from(check_failed_, v,
		      "ALTER TABLE merges DROP COLUMN local; ALTER TABLE nodes DROP COLUMN loaded; "
		      "DROP TABLE exts_due; PRAGMA user_version = 3;",
		      "SELECT m.local, n.loaded, d.id FROM merges m, nodes n, exts_due d");
}

BODY(migrate_v4)
{
	/* No exts_due. */
	migrated_from(check_failed_, v, "DROP TABLE exts_due; PRAGMA user_version = 4;",
		      "SELECT d.id FROM exts_due d");
}

TEST(cache_open_migrates_a_schema_4_cache_adding_the_extensions_due_and_keeps_what_it_holds)
{
	RUN(migrate_v4, .no_emulator = 1);
out:;
}

TEST(cache_open_migrates_a_schema_3_cache_adding_which_merges_are_local_and_keeps_what_it_holds)
{
	RUN(migrate_v3, .no_emulator = 1);
out:;
}

TEST(cache_open_migrates_a_schema_2_cache_adding_the_follow_up_flag_and_keeps_what_it_holds)
{
	RUN(migrate_v2, .no_emulator = 1);
out:;
}

BODY(refuse_mailbox)
{
	char errbuf[512];
	int err = 0;

	v->c = open_local(v, "alice@contoso.example", errbuf, sizeof(errbuf), &err);
	CHECK(v->c != NULL);
	cache_close(v->c);
	v->c = NULL;
	errbuf[0] = '\0';
	CHECK(open_local(v, "bob@contoso.example", errbuf, sizeof(errbuf), &err) == NULL);
	CHECK_INT(err, -EINVAL);
	CHECK(strstr(errbuf, "alice@contoso.example") != NULL);
	/* Nor is it the signed-in user's ("me"). */
	err = 0;
	CHECK(open_local(v, NULL, errbuf, sizeof(errbuf), &err) == NULL);
	CHECK_INT(err, -EINVAL);
	/* Its own mailbox still opens it. */
	v->c = open_local(v, "alice@contoso.example", errbuf, sizeof(errbuf), &err);
	CHECK(v->c != NULL);
out:;
}

TEST(cache_open_refuses_the_cache_of_another_mailbox)
{
	RUN(refuse_mailbox, .no_emulator = 1);
out:;
}

BODY(refuse_corrupt)
{
	struct vcard_error verr;
	char errbuf[512], name[64], filler[1000], wal[400], *bytes = NULL;
	size_t len = 0, page, pages;
	int err = 0;

	v->c = open_local(v, NULL, errbuf, sizeof(errbuf), &err);
	CHECK(v->c != NULL);
	memset(filler, 'x', sizeof(filler));
	for (int i = 0; i < 300; i++) {
		struct cache_attr a;

		snprintf(name, sizeof(name), "scratch-%03d.txt", i);
		CHECK(cache_create(v->c, CACHE_ROOT_INO, name, CACHE_FILE, NULL, &a) == 0);
		CHECK(cache_write(v->c, a.ino, filler, sizeof(filler), 0, &verr) == 0);
	}
	cache_close(v->c);
	v->c = NULL;
	/* Closed cleanly: everything is in the main file. */
	snprintf(wal, sizeof(wal), "%s-wal", v->db);
	CHECK(access(wal, F_OK) != 0);

	bytes = slurp(v->db, &len);
	CHECK(bytes != NULL);
	page = ((size_t)(unsigned char)bytes[16] << 8) | (unsigned char)bytes[17];
	if (page == 1)
		page = 65536;
	pages = page ? len / page : 0;
	if (pages < 8) {
		free(bytes);
		bytes = NULL;
		CHECK(!"the database is too small to damage in the middle");
	}
	/* Damage the b-tree headers of the pages in the middle of the file
	 * (page 1, the header, stays intact). */
	for (size_t p = pages / 4; p < 3 * pages / 4; p++)
		memset(bytes + p * page, 0xA5, 12);
	if (spit(v->db, bytes, len)) {
		free(bytes);
		bytes = NULL;
		CHECK(!"could not write the damaged database");
	}
	errbuf[0] = '\0';
	v->c = open_local(v, NULL, errbuf, sizeof(errbuf), &err);
	if (v->c || err != -EINVAL || !same_bytes(v->db, bytes, len)) {
		fprintf(stderr, "open: %s, err %d, errbuf: %s\n", v->c ? "accepted" : "refused",
			err, errbuf);
		free(bytes);
		bytes = NULL;
		CHECK(v->c == NULL);
		CHECK_INT(err, -EINVAL);
		CHECK(!"the damaged database was changed");
	}
	free(bytes);
	bytes = NULL;
	CHECK(strstr(errbuf, "damaged") != NULL);
out:
	free(bytes);
}

TEST(cache_open_refuses_a_damaged_database_and_leaves_its_bytes_alone)
{
	RUN(refuse_corrupt, .no_emulator = 1);
out:;
}

/*
 * The mailboxes the cases start from (POST /_emulator/reset documents).
 * Same "seed", same ids: a restarted emulator loaded with the same document
 * has the same contacts.
 */
/* clang-format off */
#define SEED(contacts, folders) \
	"{\"seed\":1,\"mailboxes\":{\"" ME "\":{" \
	"\"contacts\":[" contacts "],\"folders\":[" folders "]}}}"
#define PERSON(given, family, more) \
	"{\"givenName\":\"" given "\",\"surname\":\"" family "\"," \
	"\"displayName\":\"" given " " family "\"" more "}"
#define EMAIL(address) ",\"emailAddresses\":[{\"address\":\"" address "\"}]"
#define NOTES(text) ",\"personalNotes\":\"" text "\""
#define FOLDER(name, contacts, children) \
	"{\"displayName\":\"" name "\",\"contacts\":[" contacts "]," \
	"\"childFolders\":[" children "]}"

static const char SEED_TREE[] = SEED(
	PERSON("Jane", "Doe", EMAIL("jane.one@example.com")) ","
	PERSON("Jane", "Doe", EMAIL("jane.two@example.com")) ","
	"{\"displayName\":\"AC/DC\",\"companyName\":\"AC/DC\"}",
	FOLDER("Work", PERSON("Bob", "Worker", ""),
	       FOLDER("Clients", PERSON("Carl", "Client", ""),
		      FOLDER("Key accounts", PERSON("Kim", "Key", ""), ""))));

static const char SEED_GRACE[] = SEED(
	PERSON("Grace", "Hopper", NOTES("first")) ","
	PERSON("Delete", "Dora", ""),
	"");

static const char SEED_MERGE[] = SEED(
	PERSON("Merge", "Me", NOTES("original") ",\"jobTitle\":\"Clerk\""),
	"");

static const char SEED_REMOTE[] = SEED(
	PERSON("Remote", "Rita", NOTES("as seeded")) ","
	PERSON("Gone", "Gary", "") ","
	PERSON("Old", "Name", ""),
	"");

static const char SEED_OFFLINE[] = SEED(
	PERSON("Offline", "Olga", NOTES("before")),
	"");

static const char SEED_CURSOR[] = SEED(
	PERSON("Cursor", "Alpha", NOTES("a0")) ","
	PERSON("Cursor", "Beta", NOTES("b0")),
	FOLDER("Team", PERSON("Cursor", "Gamma", ""), ""));
/* clang-format on */

/* ==== 2. the first sync ============================================================== */

/* Every file of dir has the size a read gives (the listing first: a
 * readdir callback must not call back into the cache). 0 when all do. */
static int sizes_exact(struct env *v, uint64_t dir)
{
	struct listing l;
	int bad = 0;

	if (list_dir(v, dir, &l))
		return -1;
	for (size_t i = 0; i < l.n; i++) {
		struct buf b;

		if (l.attrs[i].kind != CACHE_FILE)
			continue;
		buf_init(&b, 0);
		if (cache_read(v->c, l.attrs[i].ino, &b) || b.len != l.attrs[i].size) {
			fprintf(stderr, "%s: size %llu, read %zu bytes\n", l.names[i],
				(unsigned long long)l.attrs[i].size, b.len);
			bad++;
		}
		buf_release(&b);
	}
	return bad;
}

BODY(first_sync)
{
	struct cache_attr work, clients, key, a;
	struct listing l;
	struct cache_status st;
	char *one = NULL, *two = NULL;

	CHECK(start_synced(v) == 0);
	CHECK(list_dir(v, CACHE_ROOT_INO, &l) == 0);
	CHECK_INT(l.vcfs, 3);
	CHECK_INT(l.dirs, 1);
	CHECK(cache_lookup(v->c, CACHE_ROOT_INO, "Work", &work) == 0);
	CHECK_INT(work.kind, CACHE_FOLDER);
	CHECK(cache_lookup(v->c, work.ino, "Clients", &clients) == 0);
	CHECK_INT(clients.kind, CACHE_FOLDER);
	CHECK(cache_lookup(v->c, clients.ino, "Key accounts", &key) == 0);
	CHECK_INT(key.kind, CACHE_FOLDER);

	/* One name, two contacts: "Jane Doe.vcf" and "Jane Doe (2).vcf". */
	one = read_name(v, CACHE_ROOT_INO, "Jane Doe.vcf");
	two = read_name(v, CACHE_ROOT_INO, "Jane Doe (2).vcf");
	if (!one || !two) {
		free(one);
		one = NULL;
		free(two);
		two = NULL;
		CHECK(!"Jane Doe.vcf and Jane Doe (2).vcf are not both there");
	}
	{
		char *e1 = card_prop(one, "EMAIL"), *e2 = card_prop(two, "EMAIL");
		int distinct = e1 && e2 && strcmp(e1, e2) != 0;

		free(e1);
		free(e2);
		free(one);
		one = NULL;
		free(two);
		two = NULL;
		CHECK(distinct);
	}
	/* '/' is not a file name character. */
	CHECK(cache_lookup(v->c, CACHE_ROOT_INO, "AC_DC.vcf", &a) == 0);
	CHECK(a.contact);
	CHECK(file_says(v, work.ino, "Bob Worker.vcf", "FN", "Bob Worker"));
	CHECK(file_says(v, clients.ino, "Carl Client.vcf", "FN", "Carl Client"));
	CHECK(file_says(v, key.ino, "Kim Key.vcf", "FN", "Kim Key"));
	CHECK(list_dir(v, work.ino, &l) == 0);
	CHECK_INT(l.vcfs, 1);
	CHECK_INT(l.dirs, 1);
	CHECK(list_dir(v, key.ino, &l) == 0);
	CHECK_INT(l.vcfs, 1);
	CHECK_INT(l.dirs, 0);

	/* Sizes are exact. */
	CHECK_INT(sizes_exact(v, CACHE_ROOT_INO), 0);
	CHECK_INT(sizes_exact(v, work.ino), 0);
	CHECK_INT(sizes_exact(v, clients.ino), 0);
	CHECK_INT(sizes_exact(v, key.ino), 0);

	CHECK(cache_status(v->c, &st) == 0);
	CHECK_INT(st.contacts, 6);
	CHECK_INT(st.pending, 0);
	CHECK(st.online);

	/* fs/ was told of every node that appeared. */
	CHECK(was_told(&v->rec, CACHE_ADDED, CACHE_ROOT_INO, "Jane Doe.vcf", NULL));
	CHECK(was_told(&v->rec, CACHE_ADDED, CACHE_ROOT_INO, "Jane Doe (2).vcf", NULL));
	CHECK(was_told(&v->rec, CACHE_ADDED, CACHE_ROOT_INO, "AC_DC.vcf", NULL));
	CHECK(was_told(&v->rec, CACHE_ADDED, CACHE_ROOT_INO, "Work", NULL));
	CHECK(was_told(&v->rec, CACHE_ADDED, work.ino, "Bob Worker.vcf", NULL));
	CHECK(was_told(&v->rec, CACHE_ADDED, work.ino, "Clients", NULL));
	CHECK(was_told(&v->rec, CACHE_ADDED, clients.ino, "Carl Client.vcf", NULL));
	CHECK(was_told(&v->rec, CACHE_ADDED, clients.ino, "Key accounts", NULL));
	CHECK(was_told(&v->rec, CACHE_ADDED, key.ino, "Kim Key.vcf", NULL));
out:
	free(one);
	free(two);
}

TEST(first_sync_shows_one_vcf_per_contact_and_folders_as_directories)
{
	RUN(first_sync, .seed = SEED_TREE);
out:;
}

BODY(names_stay)
{
	struct cache_attr one, two, again;
	char errbuf[512];
	int err;

	CHECK(start_synced(v) == 0);
	CHECK(cache_lookup(v->c, CACHE_ROOT_INO, "Jane Doe.vcf", &one) == 0);
	CHECK(cache_lookup(v->c, CACHE_ROOT_INO, "Jane Doe (2).vcf", &two) == 0);
	cache_close(v->c);
	v->c = open_cache(v, errbuf, sizeof(errbuf), &err);
	CHECK(v->c != NULL);
	CHECK(cache_start(v->c) == 0);
	CHECK(fresh_round(v) == 0);
	CHECK(cache_lookup(v->c, CACHE_ROOT_INO, "Jane Doe.vcf", &again) == 0);
	CHECK_INT(again.ino, one.ino);
	CHECK(cache_lookup(v->c, CACHE_ROOT_INO, "Jane Doe (2).vcf", &again) == 0);
	CHECK_INT(again.ino, two.ino);
out:;
}

TEST(file_names_and_inodes_stay_the_same_across_a_remount)
{
	RUN(names_stay, .seed = SEED_TREE);
out:;
}

/* ==== 3. ordering and batching ======================================================== */

BODY(one_contact_in_order)
{
	char text[1024], *note = NULL;
	uint64_t ino;

	CHECK(start_synced(v) == 0);
	/* Slow answers, so that the create is still on the wire when the
	 * updates are written. */
	CHECK(faults(v, "{\"latency_ms\": 300}") == 0);
	CHECK(admin_ok(v, "POST", "/_emulator/requests/reset", "{}") == 0);
	person(text, sizeof(text), "Zed", "Last", "v1", NULL);
	CHECK(put(v, CACHE_ROOT_INO, "Zed Last.vcf", text, &ino) == 0);
	{
		int64_t deadline = mono_ms() + SYNC_MS;

		while (route_count(v, "POST /me/contacts") < 1) {
			CHECK(mono_ms() < deadline);
			poll_pause();
		}
	}
	for (int i = 2; i <= 4; i++) {
		char note_v[8];

		snprintf(note_v, sizeof(note_v), "v%d", i);
		person(text, sizeof(text), "Zed", "Last", note_v, NULL);
		CHECK(put(v, CACHE_ROOT_INO, "Zed Last.vcf", text, NULL) == 0);
	}
	CHECK_INT(cache_drain(v->c, DRAIN_MS), 0);
	CHECK(faults(v, "{\"latency_ms\": 0}") == 0);
	CHECK_INT(cache_wait_file(v->c, ino, 1000), 0);

	CHECK_INT(server_count(v, "Zed Last"), 1);
	CHECK_INT(server_count(v, NULL), 1);
	CHECK_INT(route_count(v, "POST /me/contacts"), 1);
	/* The updates written while the create was on the wire followed it. */
	CHECK(route_count(v, "PATCH /me/contacts/{id}") >= 1);
	note = server_field(v, "Zed Last", "personalNotes");
	CHECK(note != NULL);
	CHECK_STR(note, "v4");
	free(note);
	note = NULL;
	CHECK(file_says(v, CACHE_ROOT_INO, "Zed Last.vcf", "NOTE", "v4"));
out:
	free(note);
}

TEST(a_create_and_three_updates_end_as_one_server_contact_with_the_last_content)
{
	RUN(one_contact_in_order, .seed = NULL);
out:;
}

#define MANY 40

BODY(batched)
{
	struct listing l;
	double items;
	int batches;

	/* Written before the engine runs: all are waiting at its first pass. */
	for (int i = 0; i < MANY; i++) {
		char text[1024], family[32], name[64];

		snprintf(family, sizeof(family), "Batch%02d", i);
		snprintf(name, sizeof(name), "Bea %s.vcf", family);
		person(text, sizeof(text), "Bea", family, "batched", NULL);
		CHECK(put(v, CACHE_ROOT_INO, name, text, NULL) == 0);
	}
	CHECK(admin_ok(v, "POST", "/_emulator/requests/reset", "{}") == 0);
	CHECK(start_synced(v) == 0);
	CHECK_INT(cache_drain(v->c, DRAIN_MS), 0);

	CHECK_INT(server_count(v, NULL), MANY);
	CHECK_INT(route_count(v, "POST /me/contacts"), MANY);
	items = emulator_stat(&v->e, "batch_items");
	batches = route_count(v, "POST /$batch");
	fprintf(stderr, "%d creates: %d $batch requests, %.0f batch items\n", MANY, batches, items);
	CHECK(items >= MANY);
	CHECK(batches >= 1);
	CHECK(batches <= MANY / 10);

	/* The sync that follows shows each once. */
	CHECK(fresh_round(v) == 0);
	CHECK(list_dir(v, CACHE_ROOT_INO, &l) == 0);
	CHECK_INT(l.vcfs, MANY);
out:;
}

TEST(creates_of_many_contacts_go_out_together_in_batch_requests)
{
	RUN(batched, .seed = NULL);
out:;
}

/* ==== 4. deletes wait a grace period; a UID brings the contact back ==================== */

BODY(grace_reconcile)
{
	struct cache_attr a;
	cJSON *before = NULL, *after = NULL;
	char *text = NULL, *changed = NULL, *uid = NULL;
	const char *id_before, *id_after;
	int ok;

	CHECK(start_synced(v) == 0);
	before = server_contact(v, "Grace Hopper");
	CHECK(before != NULL);
	text = read_name(v, CACHE_ROOT_INO, "Grace Hopper.vcf");
	uid = card_prop(text, "UID");
	changed = with_line(text ? text : "", "NOTE:", "NOTE:restored with a change");
	free(text);
	text = NULL;
	if (!uid || !changed) {
		cJSON_Delete(before);
		before = NULL;
		free(uid);
		uid = NULL;
		free(changed);
		changed = NULL;
		CHECK(!"the synced file has no UID");
	}
	free(uid);
	uid = NULL;
	CHECK(admin_ok(v, "POST", "/_emulator/requests/reset", "{}") == 0);

	/* rm, then a new file carrying its UID, as a restore from a backup
	 * or an editor's "delete and write anew" does. */
	ok = cache_unlink(v->c, CACHE_ROOT_INO, "Grace Hopper.vcf") == 0 &&
	     put(v, CACHE_ROOT_INO, "Grace restored.vcf", changed, NULL) == 0;
	free(changed);
	changed = NULL;
	if (!ok) {
		cJSON_Delete(before);
		before = NULL;
	}
	CHECK(ok);
	CHECK_INT(cache_drain(v->c, DRAIN_MS), 0);

	after = server_contact(v, "Grace Hopper");
	id_before = jstr(before, "id");
	id_after = jstr(after, "id");
	ok = after && id_before && id_after && !strcmp(id_before, id_after) &&
	     jstr(after, "personalNotes") &&
	     !strcmp(jstr(after, "personalNotes"), "restored with a change");
	cJSON_Delete(before);
	before = NULL;
	cJSON_Delete(after);
	after = NULL;
	CHECK(ok);
	CHECK_INT(server_count(v, "Grace Hopper"), 1);
	CHECK_INT(route_count(v, "DELETE /me/contacts/{id}"), 0);
	CHECK_INT(route_count(v, "POST /me/contacts"), 0);
	CHECK(cache_lookup(v->c, CACHE_ROOT_INO, "Grace restored.vcf", &a) == 0);
	CHECK(a.contact);
out:
	free(text);
	cJSON_Delete(before);
	free(uid);
	free(changed);
	cJSON_Delete(after);
}

TEST(a_vcf_with_the_uid_of_a_contact_deleted_within_the_grace_period_updates_it)
{
	RUN(grace_reconcile, .seed = SEED_GRACE, .grace_ms = 3000);
out:;
}

BODY(duplicate_uid)
{
	struct vcard_error verr;
	struct cache_attr copy, tmp, a;
	char *text = NULL, *back = NULL;
	int same;

	CHECK(start_synced(v) == 0);
	text = read_name(v, CACHE_ROOT_INO, "Grace Hopper.vcf");
	CHECK(text != NULL);
	CHECK(admin_ok(v, "POST", "/_emulator/requests/reset", "{}") == 0);

	/* cp "Grace Hopper.vcf" "Grace copy.vcf": refused, kept as a draft. */
	if (cache_create(v->c, CACHE_ROOT_INO, "Grace copy.vcf", CACHE_FILE, NULL, &copy) ||
	    cache_write(v->c, copy.ino, text, strlen(text), 0, &verr) != -EEXIST) {
		free(text);
		text = NULL;
		CHECK(!"a second file with a contact's UID was not refused with EEXIST");
	}
	CHECK(logged(v, "Grace copy.vcf", "Grace Hopper.vcf"));
	CHECK(cache_getattr(v->c, copy.ino, &a) == 0);
	CHECK(a.draft && !a.contact);
	back = read_ino(v, copy.ino);
	same = back && !strcmp(back, text);
	free(back);
	back = NULL;
	if (!same) {
		free(text);
		text = NULL;
	}
	CHECK(same);

	/* A scratch file with that UID renamed onto a new .vcf name: refused,
	 * nothing changes. */
	if (cache_create(v->c, CACHE_ROOT_INO, ".tmp123", CACHE_FILE, NULL, &tmp) ||
	    cache_write(v->c, tmp.ino, text, strlen(text), 0, &verr)) {
		free(text);
		text = NULL;
		CHECK(!"writing the scratch file failed");
	}
	free(text);
	text = NULL;
	CHECK_INT(cache_rename(v->c, CACHE_ROOT_INO, ".tmp123", CACHE_ROOT_INO, "Other.vcf", 0,
			       &verr),
		  -EEXIST);
	CHECK(cache_lookup(v->c, CACHE_ROOT_INO, ".tmp123", &a) == 0);
	CHECK_INT(cache_lookup(v->c, CACHE_ROOT_INO, "Other.vcf", &a), -ENOENT);
	/* Renamed over the contact's own file, it is an edit of it. */
	CHECK_INT(cache_rename(v->c, CACHE_ROOT_INO, ".tmp123", CACHE_ROOT_INO, "Grace Hopper.vcf",
			       0, &verr),
		  0);
	CHECK_INT(cache_drain(v->c, DRAIN_MS), 0);
	CHECK_INT(server_count(v, "Grace Hopper"), 1);
	CHECK_INT(route_count(v, "POST /me/contacts"), 0);
	CHECK_INT(route_count(v, "DELETE /me/contacts/{id}"), 0);
out:
	free(text);
	free(back);
}

TEST(a_second_file_with_a_contacts_uid_in_its_folder_is_refused_and_kept_as_a_draft)
{
	RUN(duplicate_uid, .seed = SEED_GRACE, .grace_ms = 3000);
out:;
}

BODY(grace_delete)
{
	struct cache_status st;
	char *id = NULL;
	int64_t t0, waited;

	CHECK(start_synced(v) == 0);
	id = server_field(v, "Delete Dora", "id");
	CHECK(id != NULL);
	t0 = mono_ms();
	if (cache_unlink(v->c, CACHE_ROOT_INO, "Delete Dora.vcf")) {
		free(id);
		id = NULL;
		CHECK(!"unlink failed");
	}
	/* Within the grace period the server still has it. */
	if (server_count(v, "Delete Dora") != 1) {
		free(id);
		id = NULL;
		CHECK(!"deleted on the server before the grace period ended");
	}
	if (cache_drain(v->c, DRAIN_MS)) {
		free(id);
		id = NULL;
		CHECK(!"the delete did not drain");
	}
	waited = mono_ms() - t0;
	if (waited < 2900 || server_count(v, "Delete Dora") != 0 || !server_deleted(v, id)) {
		fprintf(stderr, "drained after %lld ms\n", (long long)waited);
		free(id);
		id = NULL;
		CHECK(waited >= 2900);
		CHECK(!"the contact is not in Deleted Items");
	}
	free(id);
	id = NULL;
	CHECK_INT(route_count(v, "DELETE /me/contacts/{id}"), 1);
	CHECK_INT(server_count(v, "Grace Hopper"), 1);
	CHECK(cache_status(v->c, &st) == 0);
	CHECK_INT(st.contacts, 1);
out:
	free(id);
}

TEST(an_unlinked_contact_goes_to_deleted_items_after_the_grace_period)
{
	RUN(grace_delete, .seed = SEED_GRACE, .grace_ms = 3000);
out:;
}

/* ==== 5. conflicts ====================================================================== */

/* Change the contact on the server, then the file here, before any sync
 * could tell the cache of the server's change. */
static int both_sides(struct env *v, const char *server_body, const char *local_prefix,
		      const char *local_line, char **ours)
{
	char *id = server_field(v, "Merge Me", "id"), *text;
	int r;

	*ours = NULL;
	if (!id)
		return -1;
	r = server_patch(v, id, server_body);
	free(id);
	if (r)
		return -1;
	text = read_name(v, CACHE_ROOT_INO, "Merge Me.vcf");
	*ours = text ? with_line(text, local_prefix, local_line) : NULL;
	free(text);
	if (!*ours)
		return -1;
	return put(v, CACHE_ROOT_INO, "Merge Me.vcf", *ours, NULL) ? -1 : 0;
}

BODY(merge_fields)
{
	char *ours = NULL, *title = NULL, *note = NULL;
	struct listing l;

	CHECK(start_synced(v) == 0);
	if (both_sides(v, "{\"jobTitle\":\"Manager\"}", "NOTE:", "NOTE:changed here", &ours)) {
		free(ours);
		ours = NULL;
		CHECK(!"could not change the contact on both sides");
	}
	free(ours);
	ours = NULL;
	CHECK_INT(cache_drain(v->c, DRAIN_MS), 0);
	CHECK(status_count(v, "412") >= 1);

	title = server_field(v, "Merge Me", "jobTitle");
	note = server_field(v, "Merge Me", "personalNotes");
	if (!title || !note || strcmp(title, "Manager") || strcmp(note, "changed here")) {
		fprintf(stderr, "server: jobTitle [%s], personalNotes [%s]\n",
			title ? title : "(none)", note ? note : "(none)");
		free(title);
		title = NULL;
		free(note);
		note = NULL;
		CHECK(!"the server does not have both changes");
	}
	free(title);
	title = NULL;
	free(note);
	note = NULL;
	CHECK(file_says(v, CACHE_ROOT_INO, "Merge Me.vcf", "TITLE", "Manager"));
	CHECK(file_says(v, CACHE_ROOT_INO, "Merge Me.vcf", "NOTE", "changed here"));
	CHECK_INT(server_count(v, NULL), 1);
	CHECK(list_dir(v, CACHE_ROOT_INO, &l) == 0);
	CHECK_INT(l.files, 1); /* no conflict copy */
out:
	free(ours);
	free(title);
	free(note);
}

TEST(a_conflict_on_different_fields_is_merged_on_the_server_and_in_the_file)
{
	RUN(merge_fields, .seed = SEED_MERGE);
out:;
}

BODY(conflict_same_field)
{
	static const char prefix[] = "Merge Me.vcf.conflict-";
	char *ours = NULL, *note = NULL, *kept = NULL;
	struct cache_attr a;
	struct listing l;
	int found = -1;

	CHECK(start_synced(v) == 0);
	if (both_sides(v, "{\"personalNotes\":\"changed there\"}", "NOTE:", "NOTE:changed here",
		       &ours)) {
		free(ours);
		ours = NULL;
		CHECK(!"could not change the contact on both sides");
	}
	if (cache_drain(v->c, DRAIN_MS)) {
		free(ours);
		ours = NULL;
		CHECK(!"the conflict did not drain");
	}
	if (status_count(v, "412") < 1) {
		free(ours);
		ours = NULL;
		CHECK(!"the update never met the server's newer version (412)");
	}
	note = server_field(v, "Merge Me", "personalNotes");
	if (!note || strcmp(note, "changed there")) {
		fprintf(stderr, "server: personalNotes [%s]\n", note ? note : "(none)");
		free(note);
		note = NULL;
		free(ours);
		ours = NULL;
		CHECK(!"the server's value did not win");
	}
	free(note);
	note = NULL;
	if (!file_says(v, CACHE_ROOT_INO, "Merge Me.vcf", "NOTE", "changed there")) {
		free(ours);
		ours = NULL;
		CHECK(!"the file does not show the server's version");
	}
	/* Ours is kept beside it, byte for byte, as a scratch file. */
	if (list_dir(v, CACHE_ROOT_INO, &l)) {
		free(ours);
		ours = NULL;
		CHECK(!"readdir failed");
	}
	for (size_t i = 0; i < l.n; i++) {
		const char *n = l.names[i], *stamp = n + strlen(prefix);

		if (strncmp(n, prefix, strlen(prefix)) || strlen(stamp) != 16 || stamp[8] != 'T' ||
		    stamp[15] != 'Z')
			continue;
		found = (int)i;
	}
	if (found < 0) {
		for (size_t i = 0; i < l.n; i++)
			fprintf(stderr, "  %s\n", l.names[i]);
		free(ours);
		ours = NULL;
		CHECK(!"no Merge Me.vcf.conflict-<UTC> beside the file");
	}
	kept = read_ino(v, l.attrs[found].ino);
	if (!kept || strcmp(kept, ours)) {
		free(kept);
		kept = NULL;
		free(ours);
		ours = NULL;
		CHECK(!"the conflict copy does not hold our bytes");
	}
	free(kept);
	kept = NULL;
	free(ours);
	ours = NULL;
	CHECK(cache_lookup(v->c, CACHE_ROOT_INO, l.names[found], &a) == 0);
	CHECK(!a.contact);
	CHECK(was_told(&v->rec, CACHE_ADDED, CACHE_ROOT_INO, l.names[found], NULL));
	CHECK(logged(v, "Merge Me.vcf", "conflict"));
	CHECK(logged(v, "Merge Me.vcf", l.names[found]));
	CHECK_INT(server_count(v, NULL), 1);
out:
	free(ours);
	free(note);
	free(kept);
}

TEST(a_conflict_on_one_field_keeps_the_servers_value_and_ours_beside_it)
{
	RUN(conflict_same_field, .seed = SEED_MERGE);
out:;
}

/* ==== 6. a create whose answer was lost is not made twice ============================== */

/* Wait until the create of contact name has been carried out by the
 * server and an answer lost (with rate_drop_after 1 every request loses
 * its answer, the sync thread's delta requests too: counting drops alone
 * is not enough). */
static int wait_dropped(struct env *v, const char *name)
{
	int64_t deadline = mono_ms() + SYNC_MS;

	while (emulator_stat(&v->e, "dropped") < 1 || server_count(v, name) < 1) {
		if (mono_ms() > deadline)
			return -1;
		poll_pause();
	}
	return 0;
}

/* Drain, waiting for the engine to find the server again first (a lost
 * answer may have made it think it was offline). */
static int drain_when_online(struct env *v)
{
	int64_t deadline = mono_ms() + DRAIN_MS;
	int r;

	for (;;) {
		cache_sync_now(v->c);
		r = cache_drain(v->c, (int)(deadline - mono_ms() > 0 ? deadline - mono_ms() : 0));
		if (r != -EHOSTDOWN || mono_ms() > deadline)
			return r;
		poll_pause();
	}
}

BODY(lost_answer)
{
	struct listing l;
	char text[1024];
	uint64_t ino;

	CHECK(start_synced(v) == 0);
	CHECK(faults(v, "{\"rate_drop_after\": 1}") == 0);
	person(text, sizeof(text), "Lost", "Answer", "created once", NULL);
	CHECK(put(v, CACHE_ROOT_INO, "Lost Answer.vcf", text, &ino) == 0);
	CHECK(wait_dropped(v, "Lost Answer") == 0);
	CHECK(faults(v, "{\"rate_drop_after\": 0}") == 0);
	/* The create reached the server; only its answer was lost. */
	CHECK_INT(server_count(v, "Lost Answer"), 1);
	CHECK_INT(drain_when_online(v), 0);
	CHECK_INT(cache_wait_file(v->c, ino, 1000), 0);
	CHECK_INT(server_count(v, "Lost Answer"), 1);
	CHECK(fresh_round(v) == 0);
	CHECK(list_dir(v, CACHE_ROOT_INO, &l) == 0);
	CHECK_INT(names_with(&l, "Lost Answer"), 1);
	CHECK_INT(server_count(v, "Lost Answer"), 1);
out:;
}

TEST(a_create_whose_answer_was_lost_is_not_made_twice)
{
	RUN(lost_answer, .seed = NULL);
out:;
}

BODY(crash_create)
{
	struct listing l;
	char text[1024], errbuf[512];
	int err;

	CHECK(start_synced(v) == 0);
	CHECK(faults(v, "{\"rate_drop_after\": 1}") == 0);
	person(text, sizeof(text), "Crash", "Create", "sent before the crash", NULL);
	CHECK(put(v, CACHE_ROOT_INO, "Crash Create.vcf", text, NULL) == 0);
	CHECK(wait_dropped(v, "Crash Create") == 0);
	/* The process goes away with the create sent and no answer. */
	cache_close(v->c);
	v->c = NULL;
	CHECK(faults(v, "{\"rate_drop_after\": 0}") == 0);
	CHECK_INT(server_count(v, "Crash Create"), 1);

	v->c = open_cache(v, errbuf, sizeof(errbuf), &err);
	CHECK(v->c != NULL);
	CHECK(cache_start(v->c) == 0);
	CHECK_INT(drain_when_online(v), 0);
	CHECK_INT(server_count(v, "Crash Create"), 1);
	CHECK(fresh_round(v) == 0);
	CHECK(list_dir(v, CACHE_ROOT_INO, &l) == 0);
	CHECK_INT(names_with(&l, "Crash Create"), 1);
	CHECK_INT(server_count(v, "Crash Create"), 1);
out:;
}

TEST(a_create_sent_just_before_a_crash_is_not_made_twice_after_reopening)
{
	/* Two attempts per request: closing does not wait out a long retry
	 * loop of lookups whose answers are lost too. */
	RUN(crash_create, .seed = NULL, .max_attempts = 2);
out:;
}

/*
 * The same two cases with the create as the client's first request, so on a
 * connection of its own: the lost answer is then surely the engine's one
 * attempt (on a reused keep-alive connection libcurl may send a request
 * again by itself), and what is pinned is the engine's lookup by client key.
 */
BODY(lost_answer_first)
{
	struct listing l;
	char text[1024];
	uint64_t ino;

	CHECK(faults(v, "{\"rate_drop_after\": 1}") == 0);
	person(text, sizeof(text), "Lost", "Answer", "created once", NULL);
	CHECK(put(v, CACHE_ROOT_INO, "Lost Answer.vcf", text, &ino) == 0);
	CHECK(cache_start(v->c) == 0);
	CHECK(wait_dropped(v, "Lost Answer") == 0);
	CHECK(faults(v, "{\"rate_drop_after\": 0}") == 0);
	CHECK_INT(server_count(v, "Lost Answer"), 1);
	CHECK_INT(drain_when_online(v), 0);
	CHECK_INT(cache_wait_file(v->c, ino, 1000), 0);
	CHECK_INT(server_count(v, "Lost Answer"), 1);
	CHECK_INT(route_count(v, "POST /me/contacts"), 1);
	CHECK(fresh_round(v) == 0);
	CHECK(list_dir(v, CACHE_ROOT_INO, &l) == 0);
	CHECK_INT(names_with(&l, "Lost Answer"), 1);
	CHECK(l.attrs[0].contact);
	CHECK_INT(server_count(v, NULL), 1);
out:;
}

TEST(a_create_whose_answer_was_lost_is_looked_up_by_its_key_not_sent_again)
{
	RUN(lost_answer_first, .seed = NULL);
out:;
}

BODY(crash_create_first)
{
	struct listing l;
	char text[1024], errbuf[512];
	int err;

	CHECK(faults(v, "{\"rate_drop_after\": 1}") == 0);
	person(text, sizeof(text), "Crash", "Create", "sent before the crash", NULL);
	CHECK(put(v, CACHE_ROOT_INO, "Crash Create.vcf", text, NULL) == 0);
	CHECK(cache_start(v->c) == 0);
	CHECK(wait_dropped(v, "Crash Create") == 0);
	cache_close(v->c);
	v->c = NULL;
	CHECK(faults(v, "{\"rate_drop_after\": 0}") == 0);
	CHECK_INT(server_count(v, "Crash Create"), 1);

	v->c = open_cache(v, errbuf, sizeof(errbuf), &err);
	CHECK(v->c != NULL);
	CHECK(cache_start(v->c) == 0);
	CHECK_INT(drain_when_online(v), 0);
	CHECK_INT(server_count(v, "Crash Create"), 1);
	CHECK_INT(route_count(v, "POST /me/contacts"), 1);
	CHECK(fresh_round(v) == 0);
	CHECK(list_dir(v, CACHE_ROOT_INO, &l) == 0);
	CHECK_INT(names_with(&l, "Crash Create"), 1);
	CHECK_INT(server_count(v, NULL), 1);
out:;
}

TEST(a_create_in_flight_at_a_crash_is_looked_up_by_its_key_after_reopening)
{
	RUN(crash_create_first, .seed = NULL, .max_attempts = 2);
out:;
}

/*
 * A copy that a create of ours made on the server, brought by a delta round
 * before the create had its answer (the daemon killed after the POST left,
 * then a lookup that ran before the server had carried it out, on a slow
 * server): it is that create, taken as it, never a second contact shown
 * beside it and never sent again. Here the create is refused (read-only
 * mailbox, parked) so that the round surely runs before any answer; the copy
 * is POSTed with the create's client key as the lost request would have.
 */
static char *contact_ckey(struct env *v, uint64_t ino)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *q = NULL;
	char *key = NULL;

	if (sqlite3_open_v2(v->db, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
	    sqlite3_prepare_v2(db,
			       "SELECT c.ckey FROM contacts c JOIN nodes n ON n.cid = c.cid "
			       "WHERE n.ino = ?",
			       -1, &q, NULL) == SQLITE_OK &&
	    sqlite3_bind_int64(q, 1, (sqlite3_int64)ino) == SQLITE_OK &&
	    sqlite3_step(q) == SQLITE_ROW && sqlite3_column_text(q, 0))
		key = strdup((const char *)sqlite3_column_text(q, 0));
	sqlite3_finalize(q);
	sqlite3_close(db);
	return key;
}

static int post_own_copy(struct env *v, const char *key)
{
	char body[1024];
	cJSON *b, *out = NULL;
	int r;

	snprintf(body, sizeof(body),
		 "{\"givenName\":\"Early\",\"surname\":\"Copy\",\"displayName\":\"Early Copy\","
		 "\"personalNotes\":\"made once\",\"extensions\":[{\"@odata.type\":"
		 "\"microsoft.graph.openTypeExtension\",\"extensionName\":\"%s\",\"key\":\"%s\"}]}",
		 VCARD_EXTENSION_NAME, key);
	if (!(b = cJSON_Parse(body)))
		return -EINVAL;
	r = graph_send_json(v->api, "POST", "/contacts", b, NULL, 0, &out);
	cJSON_Delete(b);
	cJSON_Delete(out);
	return r;
}

/* The copy in an incremental round (its extension read after it). */
BODY(early_copy_incremental)
{
	struct listing l;
	char text[1024], *key = NULL;
	uint64_t ino;

	CHECK(start_synced(v) == 0);
	CHECK(faults(v, "{\"readonly_users\": [\"" ME "\"]}") == 0);
	person(text, sizeof(text), "Early", "Copy", "made once", NULL);
	CHECK(put(v, CACHE_ROOT_INO, "Early Copy.vcf", text, &ino) == 0);
	CHECK_INT(cache_wait_file(v->c, ino, DRAIN_MS), -EACCES);
	CHECK(faults(v, "{\"readonly_users\": []}") == 0);
	CHECK((key = contact_ckey(v, ino)) != NULL);
	CHECK_INT(post_own_copy(v, key), 0);
	CHECK(fresh_round(v) == 0);
	CHECK(list_dir(v, CACHE_ROOT_INO, &l) == 0);
	CHECK_INT(names_with(&l, "Early Copy"), 1);
	CHECK_INT(cache_wait_file(v->c, ino, DRAIN_MS), 0);
	CHECK_INT(cache_drain(v->c, DRAIN_MS), 0);
	CHECK(fresh_round(v) == 0);
	CHECK_INT(server_count(v, "Early Copy"), 1);
	/* The copy's POST and the refused one: never another. */
	CHECK_INT(route_count(v, "POST /me/contacts"), 2);
	CHECK(list_dir(v, CACHE_ROOT_INO, &l) == 0);
	CHECK_INT(names_with(&l, "Early Copy"), 1);
	CHECK(file_says(v, CACHE_ROOT_INO, "Early Copy.vcf", "NOTE", "made once"));
out:
	free(key);
}

TEST(a_copy_of_our_create_that_delta_brings_before_its_answer_is_that_contact)
{
	RUN(early_copy_incremental, .seed = SEED_REMOTE);
out:;
}

/* The copy in the first round of a mount (extensions listed first). */
BODY(early_copy_first_round)
{
	struct listing l;
	char text[1024], *key = NULL;
	uint64_t ino;

	person(text, sizeof(text), "Early", "Copy", "made once", NULL);
	CHECK(put(v, CACHE_ROOT_INO, "Early Copy.vcf", text, &ino) == 0);
	CHECK((key = contact_ckey(v, ino)) != NULL);
	CHECK_INT(post_own_copy(v, key), 0);
	CHECK(faults(v, "{\"readonly_users\": [\"" ME "\"]}") == 0);
	CHECK(cache_start(v->c) == 0);
	CHECK(fresh_round(v) == 0);
	CHECK(list_dir(v, CACHE_ROOT_INO, &l) == 0);
	CHECK_INT(names_with(&l, "Early Copy"), 1);
	CHECK(faults(v, "{\"readonly_users\": []}") == 0);
	CHECK_INT(cache_drain(v->c, DRAIN_MS), 0);
	CHECK(fresh_round(v) == 0);
	CHECK_INT(server_count(v, "Early Copy"), 1);
	/* The copy's POST and the refused one: never another. */
	CHECK_INT(route_count(v, "POST /me/contacts"), 2);
	CHECK(list_dir(v, CACHE_ROOT_INO, &l) == 0);
	CHECK_INT(names_with(&l, "Early Copy"), 1);
out:
	free(key);
}

TEST(a_copy_of_our_create_in_the_first_round_of_a_mount_is_that_contact)
{
	RUN(early_copy_first_round, .seed = SEED_REMOTE);
out:;
}

/* ==== 7. failures park an entry; nothing else waits on it ============================== */

BODY(readonly_parked)
{
	struct cache_status st;
	char text[1024];
	uint64_t ino;

	CHECK(start_synced(v) == 0);
	CHECK(faults(v, "{\"readonly_users\": [\"" ME "\"]}") == 0);
	person(text, sizeof(text), "Read", "Only", "refused", NULL);
	CHECK(put(v, CACHE_ROOT_INO, "Read Only.vcf", text, &ino) == 0);
	CHECK_INT(cache_wait_file(v->c, ino, DRAIN_MS), -EACCES);
	CHECK(cache_status(v->c, &st) == 0);
	CHECK_INT(st.parked, 1);
	CHECK_INT(st.pending, 0);
	CHECK(logged(v, "Read Only.vcf", NULL));
	/* Parked entries do not hold up a drain. */
	CHECK_INT(cache_drain(v->c, DRAIN_MS), 0);
	CHECK_INT(server_count(v, "Read Only"), 0);
	/* The file is still there, as written. */
	CHECK(file_says(v, CACHE_ROOT_INO, "Read Only.vcf", "NOTE", "refused"));
out:;
}

TEST(a_write_refused_by_the_server_is_parked_with_an_error_naming_the_file)
{
	RUN(readonly_parked, .seed = SEED_REMOTE);
out:;
}

BODY(photo_parked)
{
	struct cache_status st;
	char text[2048], photo[256];
	uint64_t bad, good;

	CHECK(start_synced(v) == 0);
	/* A PHOTO that says JPEG but is not one: the server refuses the
	 * upload (400) after the contact itself was created. */
	snprintf(photo, sizeof(photo), "PHOTO;ENCODING=b;TYPE=JPEG:%s\r\n",
		 "VGhpcyBpcyBub3QgYSBKUEVHIGF0IGFsbCwganVzdCB0ZXh0Lg==");
	person(text, sizeof(text), "Bad", "Photo", "photo refused", photo);
	CHECK(put(v, CACHE_ROOT_INO, "Bad Photo.vcf", text, &bad) == 0);
	CHECK_INT(cache_wait_file(v->c, bad, DRAIN_MS), -EINVAL);
	CHECK(logged(v, "Bad Photo.vcf", NULL));

	/* Another contact goes out past it. */
	person(text, sizeof(text), "After", "Photo", "lands", NULL);
	CHECK(put(v, CACHE_ROOT_INO, "After Photo.vcf", text, &good) == 0);
	CHECK_INT(cache_wait_file(v->c, good, DRAIN_MS), 0);
	CHECK_INT(cache_drain(v->c, DRAIN_MS), 0);
	CHECK_INT(server_count(v, "After Photo"), 1);
	CHECK_INT(server_count(v, "Bad Photo"), 1);
	CHECK(cache_status(v->c, &st) == 0);
	CHECK_INT(st.parked, 1);
	CHECK_INT(cache_wait_file(v->c, bad, 1000), -EINVAL);
out:;
}

TEST(a_parked_photo_upload_does_not_hold_back_another_contacts_create)
{
	RUN(photo_parked, .seed = SEED_REMOTE);
out:;
}

BODY(parked_create_no_block)
{
	char text[1024], *id = NULL;
	uint64_t ino;
	int64_t deadline;
	int r;

	CHECK(start_synced(v) == 0);
	CHECK(faults(v, "{\"readonly_users\": [\"" ME "\"]}") == 0);
	person(text, sizeof(text), "Parked", "Create", "refused", NULL);
	CHECK(put(v, CACHE_ROOT_INO, "Parked Create.vcf", text, &ino) == 0);
	CHECK_INT(cache_wait_file(v->c, ino, DRAIN_MS), -EACCES);
	CHECK(faults(v, "{\"readonly_users\": []}") == 0);

	/* Someone else changes another contact of the same folder. */
	id = server_field(v, "Remote Rita", "id");
	CHECK(id != NULL);
	r = server_patch(v, id, "{\"personalNotes\":\"changed elsewhere\"}");
	free(id);
	id = NULL;
	CHECK_INT(r, 0);
	deadline = mono_ms() + 15000;
	while (!file_says(v, CACHE_ROOT_INO, "Remote Rita.vcf", "NOTE", "changed elsewhere")) {
		CHECK(mono_ms() < deadline);
		cache_sync_now(v->c);
		poll_pause();
	}
out:
	free(id);
}

TEST(remote_changes_still_arrive_in_a_folder_with_a_parked_create)
{
	RUN(parked_create_no_block, .seed = SEED_REMOTE);
out:;
}

/* ==== 8. offline ========================================================================== */

BODY(offline)
{
	struct cache_status st;
	char port[16], text[1024], *changed = NULL, *id_before = NULL, *id_after = NULL,
				   *note = NULL;
	const char *args[3] = {"--port", port, NULL};
	uint64_t olga, fresh;
	int64_t deadline;
	int r;

	CHECK(start_synced(v) == 0);
	id_before = server_field(v, "Offline Olga", "id");
	CHECK(id_before != NULL);
	free(id_before);
	id_before = NULL;
	snprintf(port, sizeof(port), "%d", v->e.port);
	CHECK_INT(emulator_stop(&v->e), 0);

	/* Writes are accepted and reads served with no server. */
	{
		char *t = read_name(v, CACHE_ROOT_INO, "Offline Olga.vcf");

		changed = t ? with_line(t, "NOTE:", "NOTE:written offline") : NULL;
		free(t);
	}
	CHECK(changed != NULL);
	r = put(v, CACHE_ROOT_INO, "Offline Olga.vcf", changed, &olga);
	free(changed);
	changed = NULL;
	CHECK_INT(r, 0);
	person(text, sizeof(text), "Offline", "Newcomer", "made offline", NULL);
	CHECK(put(v, CACHE_ROOT_INO, "Offline Newcomer.vcf", text, &fresh) == 0);
	CHECK(file_says(v, CACHE_ROOT_INO, "Offline Olga.vcf", "NOTE", "written offline"));
	CHECK(file_says(v, CACHE_ROOT_INO, "Offline Newcomer.vcf", "NOTE", "made offline"));

	deadline = mono_ms() + SYNC_MS;
	for (;;) {
		cache_sync_now(v->c);
		CHECK(cache_status(v->c, &st) == 0);
		if (!st.online)
			break;
		CHECK(mono_ms() < deadline);
		poll_pause();
	}
	CHECK(st.pending >= 2);
	CHECK_INT(cache_drain(v->c, 2000), -EHOSTDOWN);
	CHECK_INT(cache_wait_file(v->c, fresh, 2000), -EHOSTDOWN);
	CHECK(file_says(v, CACHE_ROOT_INO, "Offline Olga.vcf", "NOTE", "written offline"));

	/* The server comes back (same port, same mailbox): all goes out. */
	CHECK(emulator_start(&v->e, args) == 0);
	CHECK(admin_ok(v, "POST", "/_emulator/reset", SEED_OFFLINE) == 0);
	CHECK_INT(drain_when_online(v), 0);
	/* online is settled at the end of the engine's round. */
	deadline = mono_ms() + SYNC_MS;
	for (;;) {
		CHECK(cache_status(v->c, &st) == 0);
		if (st.online)
			break;
		CHECK(mono_ms() < deadline);
		poll_pause();
	}
	CHECK_INT(st.pending, 0);
	CHECK_INT(st.parked, 0);
	CHECK_INT(server_count(v, "Offline Newcomer"), 1);
	CHECK_INT(server_count(v, "Offline Olga"), 1);
	note = server_field(v, "Offline Olga", "personalNotes");
	CHECK(note != NULL);
	r = strcmp(note, "written offline");
	free(note);
	note = NULL;
	CHECK_INT(r, 0);
	id_after = server_field(v, "Offline Olga", "id");
	CHECK(id_after != NULL);
	free(id_after);
	id_after = NULL;
	CHECK_INT(server_count(v, NULL), 2);
out:
	free(id_before);
	free(changed);
	free(note);
	free(id_after);
}

TEST(offline_reads_and_writes_work_and_the_changes_go_out_when_the_server_is_back)
{
	/* Two attempts per request: the engine notices at once that the
	 * server is gone. */
	RUN(offline, .seed = SEED_OFFLINE, .max_attempts = 2);
out:;
}

/* ==== 9. an expired delta cursor ======================================================== */

BODY(expired_cursor)
{
	struct cache_attr team;
	struct listing l;
	char *alpha_id = NULL, *beta_id = NULL, *t = NULL, *changed = NULL, *note = NULL,
	     *id_now = NULL;
	int64_t deadline;
	int r;

	CHECK(start_synced(v) == 0);
	CHECK(cache_lookup(v->c, CACHE_ROOT_INO, "Team", &team) == 0);
	alpha_id = server_field(v, "Cursor Alpha", "id");
	beta_id = server_field(v, "Cursor Beta", "id");
	r = alpha_id && beta_id ? server_patch(v, beta_id, "{\"personalNotes\":\"b1 there\"}") : -1;
	free(beta_id);
	beta_id = NULL;
	if (r) {
		free(alpha_id);
		alpha_id = NULL;
		CHECK(!"could not change Cursor Beta on the server");
	}
	if (faults(v, "{\"expire_delta\": true, \"latency_ms\": 150}") ||
	    admin_ok(v, "POST", "/_emulator/requests/reset", "{}")) {
		free(alpha_id);
		alpha_id = NULL;
		CHECK(!"faults refused");
	}
	/* The round starts and meets the expired cursor; the local change is
	 * made while the folder is read again. */
	cache_sync_now(v->c);
	deadline = mono_ms() + SYNC_MS;
	while (route_count(v, "GET /me/contactFolders/{id}/contacts/delta") < 1 &&
	       mono_ms() < deadline)
		poll_pause();
	t = read_name(v, CACHE_ROOT_INO, "Cursor Alpha.vcf");
	changed = t ? with_line(t, "NOTE:", "NOTE:a1 here") : NULL;
	free(t);
	t = NULL;
	r = changed ? put(v, CACHE_ROOT_INO, "Cursor Alpha.vcf", changed, NULL) : -1;
	free(changed);
	changed = NULL;
	if (r) {
		free(alpha_id);
		alpha_id = NULL;
		CHECK(!"the local change was not accepted");
	}
	if (cache_drain(v->c, DRAIN_MS) || faults(v, "{\"latency_ms\": 0}") || fresh_round(v)) {
		free(alpha_id);
		alpha_id = NULL;
		CHECK(!"no drain and round after the resync");
	}

	/* The other change came in; ours went out, to the same contact. */
	if (!file_says(v, CACHE_ROOT_INO, "Cursor Beta.vcf", "NOTE", "b1 there")) {
		free(alpha_id);
		alpha_id = NULL;
		CHECK(!"the server's change did not come in");
	}
	note = server_field(v, "Cursor Alpha", "personalNotes");
	id_now = server_field(v, "Cursor Alpha", "id");
	r = note && id_now && !strcmp(note, "a1 here") && !strcmp(id_now, alpha_id);
	if (!r)
		fprintf(stderr, "server: Cursor Alpha personalNotes [%s]\n",
			note ? note : "(none)");
	free(note);
	note = NULL;
	free(id_now);
	id_now = NULL;
	free(alpha_id);
	alpha_id = NULL;
	CHECK(r);
	CHECK(file_says(v, CACHE_ROOT_INO, "Cursor Alpha.vcf", "NOTE", "a1 here"));
	/* The cursor did expire, and the folder was read again. */
	CHECK(status_count(v, "410") >= 1);
	/* Each of the two folders (the root and Team): the 410, then the
	 * folder read again. */
	CHECK(route_count(v, "GET /me/contactFolders/{id}/contacts/delta") >= 4);
	/* Nothing twice, here or there. */
	CHECK_INT(server_count(v, NULL), 3);
	CHECK(list_dir(v, CACHE_ROOT_INO, &l) == 0);
	CHECK_INT(l.vcfs, 2);
	CHECK_INT(l.files, 2);
	CHECK(list_dir(v, team.ino, &l) == 0);
	CHECK_INT(l.vcfs, 1);
out:
	free(beta_id);
	free(alpha_id);
	free(t);
	free(changed);
	free(note);
	free(id_now);
}

TEST(an_expired_delta_cursor_resyncs_and_keeps_a_local_change_made_meanwhile)
{
	RUN(expired_cursor, .seed = SEED_CURSOR);
out:;
}

/* ==== 10. changes made on the server ==================================================== */

BODY(remote_delete)
{
	struct cache_attr gary;
	struct cache_status st;
	char *id = NULL;
	int64_t deadline;
	int r;

	CHECK(start_synced(v) == 0);
	CHECK(cache_lookup(v->c, CACHE_ROOT_INO, "Gone Gary.vcf", &gary) == 0);
	id = server_field(v, "Gone Gary", "id");
	CHECK(id != NULL);
	r = server_delete(v, id);
	free(id);
	id = NULL;
	CHECK_INT(r, 0);
	deadline = mono_ms() + SYNC_MS;
	while (cache_lookup(v->c, CACHE_ROOT_INO, "Gone Gary.vcf", &gary) == 0) {
		CHECK(mono_ms() < deadline);
		cache_sync_now(v->c);
		poll_pause();
	}
	CHECK(was_told(&v->rec, CACHE_REMOVED, CACHE_ROOT_INO, "Gone Gary.vcf", NULL));
	CHECK(file_says(v, CACHE_ROOT_INO, "Remote Rita.vcf", "FN", "Remote Rita"));
	CHECK(cache_status(v->c, &st) == 0);
	CHECK_INT(st.contacts, 2);
	CHECK_INT(st.pending, 0);
	/* Nothing of that was sent back. */
	CHECK_INT(server_count(v, NULL), 2);
out:
	free(id);
}

TEST(a_contact_deleted_on_the_server_leaves_the_tree)
{
	RUN(remote_delete, .seed = SEED_REMOTE);
out:;
}

BODY(remote_rename)
{
	struct cache_attr before, after;
	char *id = NULL;
	int64_t deadline;
	int r;

	CHECK(start_synced(v) == 0);
	CHECK(cache_lookup(v->c, CACHE_ROOT_INO, "Old Name.vcf", &before) == 0);
	id = server_field(v, "Old Name", "id");
	CHECK(id != NULL);
	r = server_patch(v, id, "{\"displayName\":\"New Name\",\"givenName\":\"New\"}");
	free(id);
	id = NULL;
	CHECK_INT(r, 0);
	deadline = mono_ms() + SYNC_MS;
	while (cache_lookup(v->c, CACHE_ROOT_INO, "New Name.vcf", &after) != 0) {
		CHECK(mono_ms() < deadline);
		cache_sync_now(v->c);
		poll_pause();
	}
	CHECK_INT(after.ino, before.ino);
	CHECK_INT(cache_lookup(v->c, CACHE_ROOT_INO, "Old Name.vcf", &before), -ENOENT);
	CHECK(file_says(v, CACHE_ROOT_INO, "New Name.vcf", "FN", "New Name"));
	CHECK(was_told(&v->rec, CACHE_RENAMED, CACHE_ROOT_INO, "New Name.vcf", "Old Name.vcf"));
	CHECK_INT(server_count(v, NULL), 3);
out:
	free(id);
}

TEST(a_contact_renamed_on_the_server_gets_its_new_file_name)
{
	RUN(remote_rename, .seed = SEED_REMOTE);
out:;
}

/* ==== local-only files ===================================================================== */

BODY(local_only)
{
	struct vcard_error verr;
	struct cache_attr draft, scratch, a;
	struct cache_status st;
	static const char bad[] = "BEGIN:VCARD\r\nVERSION:3.0\r\nthis is not a property\r\n";
	char *text = NULL;

	CHECK(start_synced(v) == 0);
	CHECK(admin_ok(v, "POST", "/_emulator/requests/reset", "{}") == 0);
	CHECK(cache_create(v->c, CACHE_ROOT_INO, "notes.txt", CACHE_FILE, NULL, &scratch) == 0);
	CHECK(cache_write(v->c, scratch.ino, "BEGIN:VCARD\r\nEND:VCARD\r\n", 24, 0, &verr) == 0);
	CHECK(cache_create(v->c, CACHE_ROOT_INO, "Broken.vcf", CACHE_FILE, NULL, &draft) == 0);
	CHECK_INT(cache_write(v->c, draft.ino, bad, strlen(bad), 0, &verr), -EINVAL);
	CHECK(verr.msg[0] != '\0');
	CHECK(logged(v, "Broken.vcf", NULL));
	CHECK(cache_getattr(v->c, draft.ino, &a) == 0);
	CHECK(a.draft);
	CHECK_INT(a.size, strlen(bad));
	text = read_ino(v, draft.ino);
	CHECK(text != NULL);
	{
		int same = !strcmp(text, bad);

		free(text);
		text = NULL;
		CHECK(same);
	}
	CHECK(cache_status(v->c, &st) == 0);
	CHECK_INT(st.pending, 0);
	CHECK_INT(cache_drain(v->c, DRAIN_MS), 0);
	CHECK(fresh_round(v) == 0);
	CHECK_INT(server_count(v, NULL), 3);
	CHECK_INT(route_count(v, "POST /me/contacts"), 0);
	CHECK(cache_lookup(v->c, CACHE_ROOT_INO, "notes.txt", &a) == 0);
	CHECK(cache_lookup(v->c, CACHE_ROOT_INO, "Broken.vcf", &a) == 0);
out:
	free(text);
}

TEST(scratch_files_and_invalid_vcards_stay_local)
{
	RUN(local_only, .seed = SEED_REMOTE);
out:;
}

/* ==== 11. moves, folders, photos, raw requests =========================================== */

/* A field of the server folder with this display name (malloc'd, "" for
 * null), or NULL when there is no such folder. */
static char *server_folder_field(struct env *v, const char *display_name, const char *field)
{
	const cJSON *box, *it;
	cJSON *doc = server_state(v, &box);
	char *out = NULL;

	cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(box, "folders"))
	{
		const char *dn = jstr(it, "displayName");

		if (dn && !strcmp(dn, display_name)) {
			const char *s = jstr(it, field);

			out = strdup(s ? s : "");
			break;
		}
	}
	cJSON_Delete(doc);
	return out;
}

/* Whether the server's field of the contact (or folder) is want. */
static int server_says(struct env *v, int folder, const char *display_name, const char *field,
		       const char *want)
{
	char *got = folder ? server_folder_field(v, display_name, field)
			   : server_field(v, display_name, field);
	int same = got && want && !strcmp(got, want);

	if (!same)
		fprintf(stderr, "%s.%s is [%s], want [%s]\n", display_name, field,
			got ? got : "(none)", want ? want : "(null)");
	free(got);
	return same;
}

/* How many master categories of the mailbox have this display name; -1
 * when the state cannot be read. */
static int server_categories(struct env *v, const char *display_name)
{
	const cJSON *box, *it;
	cJSON *doc = server_state(v, &box);
	int n = box ? 0 : -1;

	cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(box, "categories"))
	{
		const char *dn = jstr(it, "displayName");

		n += dn && !strcmp(dn, display_name);
	}
	cJSON_Delete(doc);
	return n;
}

/* How many requests that change something (POST, PATCH, PUT, DELETE,
 * $batch included) the server was asked for; -1 on error. */
static int write_count(struct env *v)
{
	cJSON *j = emulator_admin(&v->e, "GET", "/_emulator/requests", NULL);
	const cJSON *by = cJSON_GetObjectItemCaseSensitive(j, "by_route"), *it;
	static const char *const verbs[] = {"POST ", "PATCH ", "PUT ", "DELETE "};
	int n = by ? 0 : -1;

	cJSON_ArrayForEach(it, by)
	{
		for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
			if (!strncmp(it->string, verbs[i], strlen(verbs[i])) && cJSON_IsNumber(it))
				n += it->valueint;
	}
	cJSON_Delete(j);
	return n;
}

/* Whether any entry of the error log has a message that contains needle. */
static int logged_anywhere(struct env *v, const char *needle)
{
	struct error_log l;

	memset(&l, 0, sizeof(l));
	if (cache_errors(v->c, 16, collect_error, &l))
		return 0;
	for (int i = 0; i < l.n; i++)
		if (strstr(l.message[i], needle))
			return 1;
	return 0;
}

/* The UID of a file (malloc'd), or NULL. */
static char *file_uid(struct env *v, uint64_t parent, const char *name)
{
	char *text = read_name(v, parent, name), *uid = card_prop(text, "UID");

	free(text);
	return uid;
}

/* clang-format off */
static const char SEED_MOVE[] = SEED(
	PERSON("Move", "Me", NOTES("moving")),
	FOLDER("Work", "", ""));
/* clang-format on */

BODY(move_keeps_uid)
{
	struct vcard_error verr;
	struct cache_attr work, a;
	char *uid_before = NULL, *uid_after = NULL, *old_id = NULL, *work_id = NULL, *new_id = NULL;
	int ok;

	CHECK(start_synced(v) == 0);
	CHECK(cache_lookup(v->c, CACHE_ROOT_INO, "Work", &work) == 0);
	uid_before = file_uid(v, CACHE_ROOT_INO, "Move Me.vcf");
	old_id = server_field(v, "Move Me", "id");
	work_id = server_folder_field(v, "Work", "id");
	ok = uid_before && old_id && work_id;
	if (ok) {
		ok = cache_rename(v->c, CACHE_ROOT_INO, "Move Me.vcf", work.ino, "Move Me.vcf", 0,
				  &verr) == 0 &&
		     cache_drain(v->c, DRAIN_MS) == 0;
		if (!ok)
			fprintf(stderr, "the move was refused or did not drain\n");
	}
	if (ok) {
		new_id = server_field(v, "Move Me", "id");
		uid_after = file_uid(v, work.ino, "Move Me.vcf");
		ok = server_count(v, "Move Me") == 1 &&
		     server_says(v, 0, "Move Me", "parentFolderId", work_id) && new_id &&
		     strcmp(new_id, old_id) != 0 && server_deleted(v, old_id) && uid_after &&
		     !strcmp(uid_after, uid_before);
		if (!ok)
			fprintf(stderr,
				"after the move: %d on the server, id %s (was %s), old id deleted: "
				"%d, "
				"UID [%s] (was [%s])\n",
				server_count(v, "Move Me"), new_id ? new_id : "(none)", old_id,
				server_deleted(v, old_id), uid_after ? uid_after : "(none)",
				uid_before);
	}
	free(uid_before);
	uid_before = NULL;
	free(uid_after);
	uid_after = NULL;
	free(old_id);
	old_id = NULL;
	free(work_id);
	work_id = NULL;
	free(new_id);
	new_id = NULL;
	CHECK(ok);
	CHECK_INT(cache_lookup(v->c, CACHE_ROOT_INO, "Move Me.vcf", &a), -ENOENT);
	CHECK(file_says(v, work.ino, "Move Me.vcf", "NOTE", "moving"));

	/* Within one folder a rename is the file's only: nothing is sent. */
	CHECK(admin_ok(v, "POST", "/_emulator/requests/reset", "{}") == 0);
	CHECK(cache_rename(v->c, work.ino, "Move Me.vcf", work.ino, "Moved Along.vcf", 0, &verr) ==
	      0);
	CHECK_INT(cache_drain(v->c, DRAIN_MS), 0);
	CHECK(fresh_round(v) == 0);
	CHECK_INT(write_count(v), 0);
	CHECK(cache_lookup(v->c, work.ino, "Moved Along.vcf", &a) == 0);
	CHECK_INT(cache_lookup(v->c, work.ino, "Move Me.vcf", &a), -ENOENT);
	CHECK_INT(server_count(v, "Move Me"), 1);
	CHECK_INT(server_count(v, NULL), 1);

	/* A copy in the root is a contact of the root with the same UID:
	 * moving the original there too would make two: refused, unmoved. */
	{
		char *text = read_name(v, work.ino, "Moved Along.vcf");
		int put_ok = text && put(v, CACHE_ROOT_INO, "Copy.vcf", text, NULL) == 0;

		free(text);
		CHECK(put_ok);
	}
	CHECK_INT(cache_rename(v->c, work.ino, "Moved Along.vcf", CACHE_ROOT_INO, "Moved Along.vcf",
			       0, &verr),
		  -EEXIST);
	CHECK(cache_lookup(v->c, work.ino, "Moved Along.vcf", &a) == 0);
	CHECK(logged(v, "Moved Along.vcf", "Copy.vcf"));
out:
	free(uid_before);
	free(uid_after);
	free(old_id);
	free(work_id);
	free(new_id);
}

TEST(a_contact_renamed_into_another_folder_is_moved_with_its_uid_and_the_old_copy_deleted)
{
	RUN(move_keeps_uid, .seed = SEED_MOVE);
out:;
}

BODY(move_crash)
{
	struct vcard_error verr;
	struct cache_attr work, a;
	struct listing l;
	char errbuf[512], *work_id = NULL;
	int64_t deadline;
	int err, ok;

	CHECK(start_synced(v) == 0);
	CHECK(cache_lookup(v->c, CACHE_ROOT_INO, "Work", &work) == 0);
	CHECK(faults(v, "{\"rate_drop_after\": 1}") == 0);
	CHECK(cache_rename(v->c, CACHE_ROOT_INO, "Move Me.vcf", work.ino, "Move Me.vcf", 0,
			   &verr) == 0);
	/* The create in Work was carried out, its answer lost; the old copy
	 * is still there. */
	deadline = mono_ms() + SYNC_MS;
	while (emulator_stat(&v->e, "dropped") < 1 || server_count(v, "Move Me") < 2) {
		CHECK(mono_ms() < deadline);
		poll_pause();
	}
	cache_close(v->c);
	v->c = NULL;
	CHECK(faults(v, "{\"rate_drop_after\": 0}") == 0);
	CHECK_INT(server_count(v, "Move Me"), 2);

	v->c = open_cache(v, errbuf, sizeof(errbuf), &err);
	CHECK(v->c != NULL);
	CHECK(cache_start(v->c) == 0);
	CHECK_INT(drain_when_online(v), 0);
	CHECK_INT(server_count(v, "Move Me"), 1);
	work_id = server_folder_field(v, "Work", "id");
	ok = work_id && server_says(v, 0, "Move Me", "parentFolderId", work_id);
	free(work_id);
	work_id = NULL;
	CHECK(ok);
	CHECK(fresh_round(v) == 0);
	CHECK_INT(cache_lookup(v->c, CACHE_ROOT_INO, "Move Me.vcf", &a), -ENOENT);
	CHECK(list_dir(v, work.ino, &l) == 0);
	CHECK_INT(names_with(&l, "Move Me"), 1);
	CHECK_INT(server_count(v, "Move Me"), 1);
out:
	free(work_id);
}

TEST(a_move_interrupted_after_its_create_finishes_after_reopening)
{
	RUN(move_crash, .seed = SEED_MOVE, .max_attempts = 2);
out:;
}

BODY(folder_life)
{
	struct vcard_error verr;
	struct cache_attr proj, other, a;
	char text[1024], *pid = NULL;
	int ok;

	CHECK(start_synced(v) == 0);
	CHECK(cache_create(v->c, CACHE_ROOT_INO, "Projects", CACHE_FOLDER, NULL, &proj) == 0);
	CHECK_INT(proj.kind, CACHE_FOLDER);
	person(text, sizeof(text), "Pia", "Project", "in a new folder", NULL);
	CHECK(put(v, proj.ino, "Pia Project.vcf", text, NULL) == 0);
	CHECK_INT(cache_drain(v->c, DRAIN_MS), 0);
	pid = server_folder_field(v, "Projects", "id");
	CHECK(pid != NULL);
	ok = *pid && server_count(v, "Pia Project") == 1 &&
	     server_says(v, 0, "Pia Project", "parentFolderId", pid);
	if (!ok) {
		free(pid);
		pid = NULL;
		CHECK(!"the contact is not in the new folder on the server");
	}

	/* Renamed in place: the same folder on the server, a new name. */
	ok = cache_rename(v->c, CACHE_ROOT_INO, "Projects", CACHE_ROOT_INO, "Projects 2026", 0,
			  &verr) == 0 &&
	     cache_drain(v->c, DRAIN_MS) == 0 && server_says(v, 1, "Projects 2026", "id", pid) &&
	     !server_folder_field(v, "Projects", "id");
	free(pid);
	pid = NULL;
	CHECK(ok);

	/* Into another parent: refused, nothing changes. */
	CHECK(cache_create(v->c, CACHE_ROOT_INO, "Other", CACHE_FOLDER, NULL, &other) == 0);
	CHECK_INT(cache_rename(v->c, CACHE_ROOT_INO, "Projects 2026", other.ino, "Projects 2026", 0,
			       &verr),
		  -EXDEV);
	CHECK(cache_lookup(v->c, CACHE_ROOT_INO, "Projects 2026", &a) == 0);
	CHECK_INT(a.ino, proj.ino);
	CHECK_INT(cache_lookup(v->c, other.ino, "Projects 2026", &a), -ENOENT);

	/* Emptied, then removed: gone from the server. */
	CHECK_INT(cache_unlink(v->c, CACHE_ROOT_INO, "Projects 2026"), -ENOTEMPTY);
	CHECK(cache_unlink(v->c, proj.ino, "Pia Project.vcf") == 0);
	CHECK_INT(cache_drain(v->c, DRAIN_MS), 0);
	CHECK_INT(server_count(v, "Pia Project"), 0);
	CHECK(cache_unlink(v->c, CACHE_ROOT_INO, "Projects 2026") == 0);
	CHECK_INT(cache_drain(v->c, DRAIN_MS), 0);
	pid = server_folder_field(v, "Projects 2026", "id");
	ok = pid == NULL;
	free(pid);
	pid = NULL;
	CHECK(ok);
	pid = server_folder_field(v, "Other", "id");
	ok = pid != NULL;
	free(pid);
	pid = NULL;
	CHECK(ok);
	CHECK(fresh_round(v) == 0);
	CHECK_INT(cache_lookup(v->c, CACHE_ROOT_INO, "Projects 2026", &a), -ENOENT);
out:
	free(pid);
}

TEST(a_new_folder_is_created_then_renamed_then_deleted_on_the_server)
{
	RUN(folder_life, .seed = NULL, .grace_ms = 200);
out:;
}

/* ---- one entry that fails, and the folder a lost answer showed twice ------------------ */

/* A second connection to the running cache's database, as another process
 * would have it; NULL on error. */
static sqlite3 *side_db(struct env *v)
{
	sqlite3 *db = NULL;

	if (sqlite3_open_v2(v->db, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
		fprintf(stderr, "%s: %s\n", v->db, db ? sqlite3_errmsg(db) : "cannot open");
		sqlite3_close(db);
		return NULL;
	}
	sqlite3_busy_timeout(db, 10000);
	return db;
}

/* The first column of the first row of sql, or -1. */
static int64_t side_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st = NULL;
	int64_t n = -1;

	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return n;
}

static int side_run(sqlite3 *db, const char *sql)
{
	char *msg = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);

	if (rc != SQLITE_OK)
		fprintf(stderr, "%s: %s\n", sql, msg ? msg : "failed");
	sqlite3_free(msg);
	return rc == SQLITE_OK ? 0 : -1;
}

/* Until sql's number is want, or SYNC_MS. */
static int side_wait(sqlite3 *db, const char *sql, int64_t want)
{
	int64_t deadline = mono_ms() + SYNC_MS;

	while (side_int(db, sql) != want) {
		if (mono_ms() > deadline)
			return -1;
		poll_pause();
	}
	return 0;
}

BODY(one_entry_fails)
{
	char text[1024], *note = NULL;
	sqlite3 *db = NULL;

	person(text, sizeof(text), "Stuck", "One", "v1", NULL);
	CHECK(put(v, CACHE_ROOT_INO, "Stuck One.vcf", text, NULL) == 0);
	person(text, sizeof(text), "Free", "Two", "v1", NULL);
	CHECK(put(v, CACHE_ROOT_INO, "Free Two.vcf", text, NULL) == 0);
	CHECK(start_synced(v) == 0);
	CHECK_INT(cache_drain(v->c, DRAIN_MS), 0);
	CHECK((db = side_db(v)) != NULL);
	/* Storing the answer to an update of Stuck One fails, every time. */
	CHECK(side_run(db, "CREATE TRIGGER stuck BEFORE UPDATE OF change_key ON contacts WHEN "
			   "OLD.cid = (SELECT cid FROM nodes WHERE name = 'Stuck One.vcf') "
			   "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END") == 0);
	person(text, sizeof(text), "Stuck", "One", "v2", NULL);
	CHECK(put(v, CACHE_ROOT_INO, "Stuck One.vcf", text, NULL) == 0);
	person(text, sizeof(text), "Free", "Two", "v2", NULL);
	CHECK(put(v, CACHE_ROOT_INO, "Free Two.vcf", text, NULL) == 0);

	/* Free Two's update is sent and finished while Stuck One's fails. */
	CHECK(side_wait(db,
			"SELECT count(*) FROM outbox WHERE cid = (SELECT cid FROM nodes WHERE "
			"name = 'Free Two.vcf')",
			0) == 0);
	note = server_field(v, "Free Two", "personalNotes");
	CHECK(note != NULL);
	CHECK_STR(note, "v2");
	CHECK(side_int(db, "SELECT count(*) FROM outbox WHERE cid = (SELECT cid FROM nodes WHERE "
			   "name = 'Stuck One.vcf') AND attempts > 0 AND error LIKE "
			   "'%answer could not be stored%'") == 1);
out:
	if (db) {
		if (side_run(db, "DROP TRIGGER IF EXISTS stuck"))
			CHECK_FAILED = 1;
		sqlite3_close(db);
	}
	free(note);
}

TEST(an_answer_that_cannot_be_stored_holds_back_no_other_change)
{
	RUN(one_entry_fails, .seed = NULL);
out:;
}

BODY(folder_shown_twice)
{
	struct cache_attr proj, a;
	char *pid = NULL, sql[512];
	sqlite3 *db = NULL;

	CHECK(start_synced(v) == 0);
	CHECK(faults(v, "{\"drop_after_route\": \"POST /me/contactFolders\"}") == 0);
	CHECK(cache_create(v->c, CACHE_ROOT_INO, "Projects", CACHE_FOLDER, NULL, &proj) == 0);
	{
		int64_t deadline = mono_ms() + SYNC_MS;

		while (!(pid = server_folder_field(v, "Projects", "id"))) {
			CHECK(mono_ms() < deadline);
			poll_pause();
		}
	}
	/* What a delta round of an older version made of the server's folder
	 * while the create waited for its retry: a second folder. */
	CHECK((db = side_db(v)) != NULL);
	snprintf(sql, sizeof(sql),
		 "INSERT INTO nodes(parent, name, kind) VALUES(%d, 'Projects (2)', %d); "
		 "INSERT INTO folders(ino, id) VALUES(last_insert_rowid(), '%s')",
		 (int)CACHE_ROOT_INO, (int)CACHE_FOLDER, pid);
	CHECK(side_run(db, sql) == 0);
	CHECK(faults(v, "{\"drop_after_route\": null}") == 0);

	/* The retry meets the folder (409), takes its id and merges the copy. */
	CHECK_INT(cache_drain(v->c, DRAIN_MS), 0);
	CHECK(cache_lookup(v->c, CACHE_ROOT_INO, "Projects", &a) == 0);
	CHECK_INT(a.ino, proj.ino);
	CHECK_INT(cache_lookup(v->c, CACHE_ROOT_INO, "Projects (2)", &a), -ENOENT);
	snprintf(sql, sizeof(sql), "SELECT ino FROM folders WHERE id = '%s'", pid);
	CHECK_INT(side_int(db, sql), (int64_t)proj.ino);
	CHECK_INT(side_int(db, "SELECT count(*) FROM nodes WHERE name LIKE 'Projects%'"), 1);
	CHECK_INT(side_int(db, "SELECT count(*) FROM folders WHERE ino NOT IN (SELECT ino FROM "
			       "nodes)"),
		  0);
	CHECK(was_told(&v->rec, CACHE_REMOVED, CACHE_ROOT_INO, "Projects (2)", NULL));
out:
	sqlite3_close(db);
	free(pid);
}

TEST(a_folder_create_whose_answer_was_lost_merges_the_copy_a_delta_round_showed)
{
	RUN(folder_shown_twice, .seed = NULL);
out:;
}

/* An 8x8 grey JPEG (tests/graph_emulator/generator.py tiny_jpeg). */
#define TINY_JPEG                                                         \
	"/9j/4AAQSkZJRgABAQAAAQABAAD/"                                    \
	"2wBDAAEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE" \
	"BAQEBAQEBAQEBAQEBAQEBAQEBAQH/wAALCAAIAAgBAREA/"                  \
	"8QAMQAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoLEAE"                  \
	"AAAAAAAAAAAAAAAAAAAAA/9oACAEBAAA/AB//2Q=="

/* clang-format off */
static const char SEED_PHOTO[] = SEED(
	PERSON("Photo", "Phil", ",\"photo_base64\":\"" TINY_JPEG "\""),
	"");
/* clang-format on */

BODY(photos_in_background)
{
	struct cache_attr before, after;
	struct cache_status st;
	char *text = NULL;
	int64_t deadline;
	int had_photo;

	/* Slow answers: the photo is surely not there yet when the first
	 * sync completes. */
	CHECK(faults(v, "{\"latency_ms\": 400}") == 0);
	CHECK(start_synced(v) == 0);
	CHECK(cache_lookup(v->c, CACHE_ROOT_INO, "Photo Phil.vcf", &before) == 0);
	text = read_ino(v, before.ino);
	CHECK(text != NULL);
	had_photo = strstr(text, "\nPHOTO") != NULL;
	free(text);
	text = NULL;
	CHECK(!had_photo);
	CHECK(faults(v, "{\"latency_ms\": 0}") == 0);

	deadline = mono_ms() + SYNC_MS;
	for (;;) {
		CHECK(cache_status(v->c, &st) == 0);
		if (st.photos_pending == 0 &&
		    was_told(&v->rec, CACHE_CHANGED, CACHE_ROOT_INO, "Photo Phil.vcf", NULL))
			break;
		if (mono_ms() > deadline) {
			fprintf(stderr, "photos_pending %u, told of a change: %d\n",
				st.photos_pending,
				was_told(&v->rec, CACHE_CHANGED, CACHE_ROOT_INO, "Photo Phil.vcf",
					 NULL));
			CHECK(!"the photo did not arrive");
		}
		cache_sync_now(v->c);
		poll_pause();
	}
	CHECK(cache_lookup(v->c, CACHE_ROOT_INO, "Photo Phil.vcf", &after) == 0);
	CHECK_INT(after.ino, before.ino);
	CHECK(after.size > before.size);
	text = read_ino(v, after.ino);
	CHECK(text != NULL);
	had_photo = strstr(text, "\nPHOTO") != NULL && strlen(text) == after.size;
	free(text);
	text = NULL;
	CHECK(had_photo);
	CHECK(cache_status(v->c, &st) == 0);
	CHECK_INT(st.pending, 0);
out:
	free(text);
}

TEST(photos_are_fetched_in_the_background_and_shown_in_the_file)
{
	RUN(photos_in_background, .seed = SEED_PHOTO, .photos = 1);
out:;
}

BODY(raw_request)
{
	static const char body[] = "{\"displayName\":\"Cache Test\",\"color\":\"preset3\"}";
	struct cache_status st;
	char text[1024];
	uint64_t ino;

	CHECK(start_synced(v) == 0);
	CHECK(cache_enqueue_request(v->c, "POST", "/outlook/masterCategories", body) == 0);
	CHECK_INT(cache_drain(v->c, DRAIN_MS), 0);
	CHECK_INT(server_categories(v, "Cache Test"), 1);
	CHECK(cache_status(v->c, &st) == 0);
	CHECK_INT(st.parked, 0);

	/* The same again: 409, parked with an error; a contact goes out past it. */
	CHECK(cache_enqueue_request(v->c, "POST", "/outlook/masterCategories", body) == 0);
	person(text, sizeof(text), "After", "Request", "not blocked", NULL);
	CHECK(put(v, CACHE_ROOT_INO, "After Request.vcf", text, &ino) == 0);
	CHECK_INT(cache_wait_file(v->c, ino, DRAIN_MS), 0);
	CHECK_INT(cache_drain(v->c, DRAIN_MS), 0);
	CHECK_INT(server_count(v, "After Request"), 1);
	CHECK_INT(server_categories(v, "Cache Test"), 1);
	CHECK(status_count(v, "409") >= 1);
	CHECK(cache_status(v->c, &st) == 0);
	CHECK(st.parked >= 1);
	CHECK_INT(st.pending, 0);
	CHECK(logged_anywhere(v, "409"));
out:;
}

TEST(a_queued_request_creates_a_master_category)
{
	RUN(raw_request, .seed = NULL);
out:;
}

/* ==== 12. reading a folder (fetch.c: the sync engine's requests, and export's) ============ */

static int fetch_collect_id(const cJSON *item, void *ctx)
{
	const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(item, "id"));

	return id && !cJSON_AddItemToArray(ctx, cJSON_CreateString(id)) ? -ENOMEM : 0;
}

static int fetch_collect_flagged(const char *id, void *ctx)
{
	return cJSON_AddItemToArray(ctx, cJSON_CreateString(id)) ? 0 : -ENOMEM;
}

TEST(a_folder_is_read_by_delta_and_its_photos_in_batches_each_with_its_status)
{
	const char *args[] = {"--contacts", "24", "--folders", "0", "--photos", "3", NULL};
	struct graph_config cfg = {0};
	struct cache_photo p[24];
	struct emulator e;
	struct graph *g;
	cJSON *ids = cJSON_CreateArray();
	char cmd[128], *fid = NULL, *next = NULL;
	int err = 0, with = 0;

	EMULATOR_NEEDED();
	CHECK(emulator_start(&e, args) == 0);
	snprintf(cmd, sizeof(cmd), "echo %s", e.token);
	cfg.graph_url = e.graph_url;
	cfg.auth_url = e.url;
	cfg.token_cmd = cmd;
	cfg.timeout_s = 20;
	g = graph_new(&cfg, &err);
	CHECK(g != NULL);
	CHECK_INT(graph_default_folder(g, &fid), 0);
	CHECK(fid != NULL);
	CHECK_INT(cache_fetch_contacts(g, fid, NULL, fetch_collect_id, ids, &next), 0);
	CHECK_INT(cJSON_GetArraySize(ids), 24);
	CHECK(next != NULL); /* the cursor of the next round */

	/* More than one $batch: every contact answered, 3 with a photo. */
	cache_photos_init(p, 24);
	for (int i = 0; i < 24; i++) {
		p[i].base = "";
		p[i].id = cJSON_GetArrayItem(ids, i)->valuestring;
	}
	CHECK_INT(cache_fetch_photos(g, p, 24), 0);
	for (int i = 0; i < 24; i++) {
		if (p[i].status == 200) {
			with++;
			CHECK(p[i].data.len > 100);
			CHECK_STR(p[i].type, "image/jpeg");
		} else {
			CHECK_INT(p[i].status, 404);
			CHECK_INT(p[i].data.len, 0);
		}
	}
	CHECK_INT(with, 3);

	/* PidLidHasPicture names exactly those three, in one list; a server
	 * that refuses the list is told apart from a failure. */
	{
		cJSON *flagged = cJSON_CreateArray(), *faults;

		CHECK_INT(cache_fetch_photo_flags(g, "", fetch_collect_flagged, flagged), 0);
		CHECK_INT(cJSON_GetArraySize(flagged), 3);
		for (int i = 0; i < 24; i++) {
			int listed = 0;

			for (int j = 0; j < cJSON_GetArraySize(flagged); j++)
				listed |= !strcmp(cJSON_GetArrayItem(flagged, j)->valuestring,
						  p[i].id);
			CHECK_INT(listed, p[i].status == 200);
		}
		for (int status = 400; status <= 501; status += 101) {
			char body[64];
			int r;

			snprintf(body, sizeof(body), "{\"has_picture_filter_error\": %d}", status);
			faults = emulator_admin(&e, "POST", "/_emulator/faults", body);
			CHECK(faults != NULL);
			cJSON_Delete(faults);
			r = cache_fetch_photo_flags(g, "", fetch_collect_flagged, flagged);
			CHECK(r < 0);
			CHECK(cache_photo_flags_refused(r));
		}
		CHECK(!cache_photo_flags_refused(-EHOSTDOWN) &&
		      !cache_photo_flags_refused(-EAGAIN));
		cJSON_Delete(flagged);
	}
	cache_photos_release(p, 24);
	cJSON_Delete(ids);
	ids = NULL;
	free(fid);
	fid = NULL;
	free(next);
	next = NULL;
	graph_free(g);
	CHECK_INT(emulator_stop(&e), 0);
out:
	cJSON_Delete(ids);
	free(fid);
	free(next);
}
