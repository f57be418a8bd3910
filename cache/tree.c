/*
 * The tree fs/ sees: lookups and listings are single queries; every change
 * is one transaction that also queues what the server must be told, so a
 * change accepted here is never lost (docs/design.md §2-4, 7, 8).
 */
#include "cache_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

struct node {
	int64_t ino, parent, cid, size, mtime_ns;
	int kind, draft, written, chosen;
	char name[256];
};

#define NODE_COLS "ino, parent, cid, size, mtime_ns, kind, draft, written, chosen, name"

static void node_read(sqlite3_stmt *st, struct node *n)
{
	const unsigned char *name = sqlite3_column_text(st, 9);

	n->ino = sqlite3_column_int64(st, 0);
	n->parent = sqlite3_column_int64(st, 1);
	n->cid = sqlite3_column_int64(st, 2);
	n->size = sqlite3_column_int64(st, 3);
	n->mtime_ns = sqlite3_column_int64(st, 4);
	n->kind = sqlite3_column_int(st, 5);
	n->draft = sqlite3_column_int(st, 6);
	n->written = sqlite3_column_int(st, 7);
	n->chosen = sqlite3_column_int(st, 8);
	snprintf(n->name, sizeof(n->name), "%s", name ? (const char *)name : "");
}

/* 0, -ENOENT or -errno. */
static int node_query(sqlite3 *db, struct node *n, const char *sql, const char *fmt, int64_t a,
		      const char *b)
{
	sqlite3_stmt *st;
	int r = fmt[1] ? cache_db_prepare(db, &st, sql, fmt, a, b)
		       : cache_db_prepare(db, &st, sql, fmt, a);

	if (r)
		return r;
	r = cache_db_step(st);
	if (r == 1)
		node_read(st, n);
	cache_db_release(st);
	return r == 1 ? 0 : r == 0 ? -ENOENT : r;
}

static int node_get(sqlite3 *db, int64_t ino, struct node *n)
{
	return node_query(db, n, "SELECT " NODE_COLS " FROM nodes WHERE ino = ?", "i", ino, NULL);
}

static int node_find(sqlite3 *db, int64_t parent, const char *name, struct node *n)
{
	return node_query(db, n, "SELECT " NODE_COLS " FROM nodes WHERE parent = ? AND name = ?",
			  "it", parent, name);
}

/* The node that shows contact cid: 0, -ENOENT. */
static int node_of_contact(sqlite3 *db, int64_t cid, struct node *n)
{
	return node_query(db, n, "SELECT " NODE_COLS " FROM nodes WHERE cid = ?", "i", cid, NULL);
}

static void attr_of(const struct node *n, struct cache_attr *a)
{
	memset(a, 0, sizeof(*a));
	a->ino = (uint64_t)n->ino;
	a->parent = (uint64_t)n->parent;
	a->kind = (enum cache_kind)n->kind;
	a->size = (uint64_t)n->size;
	a->mtime_ns = n->mtime_ns;
	a->contact = n->cid != 0;
	a->draft = n->draft;
}

static int is_dir(int kind)
{
	return kind == CACHE_FOLDER || kind == CACHE_SCRATCH_DIR;
}

int cache_is_vcf_name(const char *name)
{
	size_t n = strlen(name);

	return n > 4 && name[0] != '.' && !strcmp(name + n - 4, ".vcf");
}

/* ---- small shared helpers ----------------------------------------------------- */

int64_t cache_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t cache_now_ms(void)
{
	return cache_now_ns() / 1000000;
}

const char *cache_jstr(const cJSON *o, const char *key)
{
	return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, key));
}

int cache_patch_is_empty(const cJSON *patch, const cJSON *base)
{
	const cJSON *dn = cJSON_GetObjectItemCaseSensitive(patch, "displayName");

	return cJSON_GetArraySize(patch) == 1 && dn &&
	       cJSON_Compare(dn, cJSON_GetObjectItemCaseSensitive(base, "displayName"), 1);
}

cJSON *cache_ext_of(const cJSON *contact)
{
	cJSON *x;

	cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(contact, "extensions"))
	{
		const char *n = cache_jstr(x, "extensionName"), *id = cache_jstr(x, "id");
		size_t k = id ? strlen(id) : 0, m = strlen(VCARD_EXTENSION_NAME);

		if ((n && !strcasecmp(n, VCARD_EXTENSION_NAME)) ||
		    (k >= m && !strcasecmp(id + k - m, VCARD_EXTENSION_NAME)))
			return x;
	}
	return NULL;
}

int cache_card_flag(const struct cache *c, struct vcard *card, cJSON **flag,
		    struct vcard_error *err)
{
	int r;

	*flag = NULL;
	if (!c->cfg.followup)
		return 0;
	if ((r = vcard_followup_read(card, flag, err)))
		return r;
	vcard_followup_remove(card);
	return 0;
}

cJSON *cache_flag_of(sqlite3 *db, int64_t cid)
{
	sqlite3_stmt *st;
	cJSON *flag = NULL;

	if (cache_db_prepare(db, &st, "SELECT flag FROM contacts WHERE cid = ?", "i", cid))
		return NULL;
	if (cache_db_step(st) == 1 && sqlite3_column_text(st, 0))
		flag = cJSON_Parse((const char *)sqlite3_column_text(st, 0));
	cache_db_release(st);
	return flag;
}

void cache_new_key(char out[33])
{
	unsigned char b[16];
	/* getrandom: one system call, no file (a key is made for each new
	 * file written through the mount). 16 bytes never come short. */
	ssize_t n = getrandom(b, sizeof(b), 0);

	if (n != (ssize_t)sizeof(b)) {
		/* Never expected; keys must still differ. */
		uint64_t t = (uint64_t)cache_now_ns() ^ ((uint64_t)getpid() << 32);

		for (size_t i = 0; i < sizeof(b); i++)
			b[i] = (unsigned char)(t >> (8 * (i % 8))) ^ (unsigned char)(i * 131);
	}
	for (size_t i = 0; i < sizeof(b); i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* Log msg at level and keep it for .contactfs/errors. */
static void record(sqlite3 *db, enum log_level level, const char *what, const char *msg)
{
	log_msg(level, "%s: %s", what, msg);
	if (cache_db_run(db, "INSERT INTO errors(time, what, message) VALUES(?, ?, ?)", "itt",
			 (int64_t)time(NULL), what, msg) ||
	    cache_db_run(db, "DELETE FROM errors WHERE seq <= (SELECT max(seq) - 1000 FROM errors)",
			 NULL))
		log_err("cache: could not record that error");
}

void cache_error(sqlite3 *db, const char *what, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	record(db, LOG_LVL_ERR, what, msg);
}

void cache_repairs(sqlite3 *db, const char *what, struct vcard *const *cards, size_t n)
{
	char msg[1024];

	for (size_t i = 0; i < n; i++) {
		const char *s = cards[i]->warning;

		while (s && *s) {
			const char *nl = strchr(s, '\n');
			int len = nl ? (int)(nl - s) : (int)strlen(s);

			if (n > 1)
				snprintf(msg, sizeof(msg), "card %zu: read with a repair: %.*s",
					 i + 1, len, s);
			else
				snprintf(msg, sizeof(msg), "read with a repair: %.*s", len, s);
			record(db, LOG_LVL_WARNING, what, msg);
			s = nl ? nl + 1 : NULL;
		}
	}
}

void cache_events_add(struct events *ev, enum cache_event what, uint64_t ino, uint64_t parent,
		      const char *name, uint64_t old_parent, const char *old_name)
{
	struct cache_change *ch;

	if (!ev)
		return;
	if (ev->n == ev->size) {
		size_t size = ev->size ? 2 * ev->size : 16;
		struct cache_change *v = realloc(ev->v, size * sizeof(*v));

		if (!v)
			return; /* the kernel's view expires by itself */
		ev->v = v;
		ev->size = size;
	}
	ch = &ev->v[ev->n++];
	ch->what = what;
	ch->ino = ino;
	ch->parent = parent;
	ch->name = name ? strdup(name) : NULL;
	ch->old_parent = old_parent;
	ch->old_name = old_name ? strdup(old_name) : NULL;
}

void cache_events_flush(struct cache *c, struct events *ev, int committed)
{
	for (size_t i = 0; i < ev->n; i++) {
		if (committed && c->cfg.on_change)
			c->cfg.on_change(c->cfg.ctx, &ev->v[i]);
		free((char *)ev->v[i].name);
		free((char *)ev->v[i].old_name);
	}
	free(ev->v);
	memset(ev, 0, sizeof(*ev));
}

int cache_tree_unique_name(sqlite3 *db, uint64_t dir, const char *name, char *out)
{
	size_t n = strlen(name);
	int vcf = n > 4 && !strcmp(name + n - 4, ".vcf");
	char stem[256];
	struct node x;
	int r;

	snprintf(out, 256, "%s", name);
	if ((r = node_find(db, (int64_t)dir, out, &x)) != 0)
		return r == -ENOENT ? 0 : r;
	snprintf(stem, sizeof(stem), "%.*s", (int)(vcf ? n - 4 : n), name);
	/* The numbered names of this stem sort together: one walk finds the
	 * highest number, so a thousand namesakes cost a thousand rows, not
	 * a million lookups. */
	{
		char lo[272], hi[272];
		sqlite3_stmt *st;
		unsigned long top = 1;

		snprintf(lo, sizeof(lo), "%s (", stem);
		snprintf(hi, sizeof(hi), "%s )", stem); /* ')' follows '(' */
		if ((r = cache_db_prepare(
			     db, &st,
			     "SELECT name FROM nodes WHERE parent = ? AND name >= ? AND name < ?",
			     "itt", (int64_t)dir, lo, hi)))
			return r;
		while (cache_db_step(st) == 1) {
			const char *nm = (const char *)sqlite3_column_text(st, 0) + strlen(lo);
			char *end;
			unsigned long k = strtoul(nm, &end, 10);

			if (end != nm && *end == ')' && !strcmp(end + 1, vcf ? ".vcf" : "") &&
			    k > top)
				top = k;
		}
		cache_db_release(st);
		if (top + 1 < 100000 &&
		    !cache_numbered_name(stem, vcf ? ".vcf" : "", (unsigned)top + 1, out, 256) &&
		    (r = node_find(db, (int64_t)dir, out, &x)) != 0)
			return r == -ENOENT ? 0 : r;
	}
	for (unsigned k = 2; k < 100000; k++) {
		if (cache_numbered_name(stem, vcf ? ".vcf" : "", k, out, 256))
			return -ENAMETOOLONG;
		if ((r = node_find(db, (int64_t)dir, out, &x)) != 0)
			return r == -ENOENT ? 0 : r;
	}
	return -EEXIST;
}

int cache_folder_base(sqlite3 *db, int64_t folder, char *out, size_t size)
{
	sqlite3_stmt *st;
	int r;

	if (folder == CACHE_ROOT_INO) {
		out[0] = '\0';
		return 0;
	}
	if ((r = cache_db_prepare(db, &st, "SELECT id FROM folders WHERE ino = ?", "i", folder)))
		return r;
	r = cache_db_step(st);
	if (r == 1 && sqlite3_column_text(st, 0))
		snprintf(out, size, "/contactFolders/%s", sqlite3_column_text(st, 0));
	else if (r >= 0)
		r = -EAGAIN;
	cache_db_release(st);
	return r < 0 ? r : 0;
}

/* ---- the outbox, enqueue side --------------------------------------------------- */

int cache_outbox_add(sqlite3 *db, enum op op, int64_t cid, int64_t folder, const char *arg,
		     int64_t not_before_ms)
{
	char key[32];

	if (op == OP_REQUEST)
		snprintf(key, sizeof(key), "r");
	else if (op == OP_DROP_FILE)
		snprintf(key, sizeof(key), "d");
	else if (cid)
		snprintf(key, sizeof(key), "c%lld", (long long)cid);
	else
		snprintf(key, sizeof(key), "f%lld", (long long)folder);
	return cache_db_run(
		db,
		"INSERT INTO outbox(op, key, cid, folder, arg, not_before) VALUES(?, ?, "
		"nullif(?, 0), nullif(?, 0), ?, ?)",
		"itiiti", (int64_t)op, key, cid, folder, arg, not_before_ms);
}

int cache_outbox_has(sqlite3 *db, int64_t cid)
{
	int64_t n = 0;
	int r = cache_db_int(db, &n, "SELECT count(*) FROM outbox WHERE cid = ?", "i", cid);

	return r < 0 ? r : n > 0;
}

int cache_outbox_add_flag(sqlite3 *db, int64_t cid, int64_t folder)
{
	/* Behind what was queued for the contact just now: a flag the server
	 * refused (parked) must not hold back the card's other changes. */
	int r = cache_db_run(
		db, "DELETE FROM outbox WHERE cid = ? AND op = ? AND inflight = 0 AND stage = ?",
		"iii", cid, (int64_t)OP_FLAG, (int64_t)STAGE_SEND);

	return r ? r : cache_outbox_add(db, OP_FLAG, cid, folder, NULL, 0);
}

/* The waiting (not in flight, not begun) entry of op for cid: its seq, 0
 * when none, or -errno. */
static int64_t waiting_entry(sqlite3 *db, enum op op, int64_t cid)
{
	int64_t seq = 0;
	int r = cache_db_int(db, &seq,
			     "SELECT seq FROM outbox WHERE cid = ? AND op = ? AND inflight = 0 AND "
			     "stage = ? AND sent = 0 ORDER BY seq DESC LIMIT 1",
			     "iii", cid, (int64_t)op, (int64_t)STAGE_SEND);

	return r < 0 ? r : r ? seq : 0;
}

/* Queue op for cid unless one is already waiting (it will send the file as
 * it is then); a parked one is given a fresh start. */
static int enqueue_once(sqlite3 *db, enum op op, int64_t cid, int64_t folder)
{
	int64_t seq = waiting_entry(db, op, cid);

	if (seq < 0)
		return (int)seq;
	if (seq)
		return cache_db_run(db,
				    "UPDATE outbox SET parked = 0, attempts = 0, not_before = 0, "
				    "result = 0, error = NULL WHERE seq = ?",
				    "i", seq);
	return cache_outbox_add(db, op, cid, folder, NULL, 0);
}

/*
 * Contact cid is to go from the server: its file no longer shows it. Queue
 * the delete after the grace period; a contact that never reached the
 * server (and cannot have: its create has not been sent) is just dropped.
 */
static int contact_gone(struct cache *c, sqlite3 *db, int64_t cid)
{
	int64_t busy = 0, has_id = 0;
	int r;

	if ((r = cache_db_int(db, &has_id, "SELECT id IS NOT NULL FROM contacts WHERE cid = ?", "i",
			      cid)) < 0)
		return r;
	if ((r = cache_db_int(
		     db, &busy,
		     "SELECT count(*) FROM outbox WHERE cid = ? AND (inflight OR sent OR stage > "
		     "? OR op = ?)",
		     "iii", cid, (int64_t)STAGE_SEND, (int64_t)OP_MOVE)) < 0)
		return r;
	if (!has_id && !busy) {
		if ((r = cache_db_run(db, "DELETE FROM outbox WHERE cid = ?", "i", cid)))
			return r;
		return cache_db_run(db, "DELETE FROM contacts WHERE cid = ?", "i", cid);
	}
	/* Updates of a contact that goes are moot; a create or move under
	 * way finishes first, so the delete knows the id. */
	if ((r = cache_db_run(
		     db,
		     "DELETE FROM outbox WHERE cid = ? AND op IN (?, ?, ?) AND inflight = 0 AND "
		     "stage = ?",
		     "iiiii", cid, (int64_t)OP_UPDATE, (int64_t)OP_PHOTO, (int64_t)OP_FLAG,
		     (int64_t)STAGE_SEND)))
		return r;
	if ((r = cache_db_run(db, "UPDATE contacts SET gone = 1 WHERE cid = ?", "i", cid)))
		return r;
	if ((r = cache_db_run(db, "UPDATE nodes SET cid = NULL WHERE cid = ?", "i", cid)))
		return r;
	return cache_outbox_add(db, OP_DELETE, cid, 0, NULL,
				cache_now_ms() +
					(c->cfg.delete_grace_ms ? c->cfg.delete_grace_ms : 5000));
}

/* Contact cid leaves the tree: its file, if it has one, goes. */
static int unshow(sqlite3 *db, int64_t cid, struct events *ev)
{
	struct node n;
	int r = node_of_contact(db, cid, &n);

	if (r)
		return r == -ENOENT ? 0 : r;
	if ((r = cache_db_run(db, "DELETE FROM nodes WHERE ino = ?", "i", n.ino)))
		return r;
	cache_events_add(ev, CACHE_REMOVED, (uint64_t)n.ino, (uint64_t)n.parent, n.name, 0, NULL);
	return 0;
}

/*
 * Contact copy, new from the server, is what the create of contact mine
 * made (a POST carried out whose answer we never had: a kill, a lost
 * answer, a lookup that ran before the server had carried it out). mine
 * takes its id, change key and fields as from the create's answer, copy's
 * row and file go, and the create goes on to its photo: it is never sent
 * again. In a transaction.
 */
static int adopt_own_copy(sqlite3 *db, int64_t mine, int64_t copy, const cJSON *ext,
			  struct events *ev)
{
	sqlite3_stmt *st;
	cJSON *json = NULL;
	char *id = NULL, *ck = NULL, *text = NULL;
	int r;

	if ((r = cache_db_prepare(db, &st, "SELECT id, change_key, json FROM contacts WHERE cid = ?",
				  "i", copy)))
		return r;
	if ((r = cache_db_step(st)) == 1) {
		id = cache_db_strdup(st, 0);
		ck = cache_db_strdup(st, 1);
		json = cJSON_Parse((const char *)sqlite3_column_text(st, 2));
	}
	cache_db_release(st);
	if (r < 0 || !id || !json) {
		r = r < 0 ? r : -ENOMEM;
		goto out;
	}
	/* Answers of an incremental round carry no extension yet. */
	if (!cJSON_GetObjectItemCaseSensitive(json, "extensions")) {
		cJSON *arr = cJSON_AddArrayToObject(json, "extensions");

		if (!arr || !cJSON_AddItemToArray(arr, cJSON_Duplicate(ext, 1))) {
			r = -ENOMEM;
			goto out;
		}
	}
	if (!(text = cJSON_PrintUnformatted(json))) {
		r = -ENOMEM;
		goto out;
	}
	log_info("cache: contact %lld is the create of contact %lld, whose answer was lost: "
		 "taken as it",
		 (long long)copy, (long long)mine);
	if ((r = unshow(db, copy, ev)) ||
	    (r = cache_db_run(db, "DELETE FROM contacts WHERE cid = ?", "i", copy)) ||
	    (r = cache_db_run(db,
			      "UPDATE contacts SET id = ?, change_key = ?, json = ?, photo_state = 1, "
			      "render = 1, flag = NULL WHERE cid = ?",
			      "ttti", id, ck, text, mine)))
		goto out;
	r = cache_db_run(db,
			 "UPDATE outbox SET stage = ?, inflight = 0, sent = 0, attempts = 0, "
			 "parked = 0, not_before = 0, error = NULL, result = 0 WHERE cid = ? AND "
			 "op = ? AND stage = ?",
			 "iiii", (int64_t)STAGE_PHOTO, mine, (int64_t)OP_CREATE,
			 (int64_t)STAGE_SEND);
out:
	free(id);
	free(ck);
	free(text);
	cJSON_Delete(json);
	return r;
}

int cache_tree_drop_stray(struct cache *c, sqlite3 *db, int64_t cid, const cJSON *ext,
			  struct events *ev)
{
	const char *key = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ext, "key"));
	int64_t mine = 0;
	int r;

	(void)c;
	if (!key || !*key)
		return 0;
	/* A create of ours with this key, not answered yet: the copy is its
	 * own (the sync thread sends nothing while a round runs, so no
	 * answer of it is on the way). */
	if ((r = cache_db_int(
		     db, &mine,
		     "SELECT c.cid FROM contacts c JOIN outbox o ON o.cid = c.cid WHERE c.ckey = ? "
		     "AND c.cid != ? AND c.id IS NULL AND NOT c.gone AND o.op = ? AND o.stage = ? "
		     "AND NOT o.inflight ORDER BY o.seq LIMIT 1",
		     "tiii", key, cid, (int64_t)OP_CREATE, (int64_t)STAGE_SEND)) < 0)
		return r;
	if (r)
		return (r = adopt_own_copy(db, mine, cid, ext, ev)) ? r : 1;
	if ((r = cache_db_int(
		     db, &mine,
		     "SELECT cid FROM contacts WHERE ckey = ? AND cid != ? AND id IS NOT NULL",
		     "ti", key, cid)) <= 0)
		return r;
	if ((r = unshow(db, cid, ev)))
		return r;
	log_warn("contact %lld is a second copy of contact %lld made by a create sent again "
		 "after its answer was lost: deleting it on the server",
		 (long long)cid, (long long)mine);
	/* No UID: a file that appears later is never taken as this copy. */
	if ((r = cache_db_run(db, "UPDATE contacts SET gone = 1, uid = NULL WHERE cid = ?", "i",
			      cid)))
		return r;
	return (r = cache_outbox_add(db, OP_DELETE, cid, 0, NULL, 0)) ? r : 1;
}

/*
 * The contact of folder whose UID is uid and that no file shows (its
 * deletion pending, or its file renamed away): 0 when none. One whose
 * delete is already on the wire is not taken back.
 */
static int64_t reconcile(sqlite3 *db, int64_t folder, const char *uid)
{
	int64_t cid = 0;
	int r;

	if (!uid || !*uid)
		return 0;
	r = cache_db_int(
		db, &cid,
		"SELECT cid FROM contacts c WHERE folder = ? AND uid = ? AND NOT EXISTS (SELECT "
		"1 FROM nodes WHERE cid = c.cid) AND NOT EXISTS (SELECT 1 FROM outbox WHERE "
		"cid = c.cid AND op = ? AND inflight) ORDER BY gone, cid LIMIT 1",
		"iti", folder, uid, (int64_t)OP_DELETE);
	return r < 0 ? r : r ? cid : 0;
}

/*
 * Whether a file other than skip1 and skip2 shows a contact of folder with
 * this UID: 1 with its name in out, 0, or -errno. A folder holds a contact
 * once (docs/design.md §2): a second file with its UID (cp a.vcf b.vcf, a file
 * manager's copy and paste) is refused rather than made a second contact
 * or silently taken as an edit of the first.
 */
static int uid_shown_elsewhere(sqlite3 *db, int64_t folder, const char *uid, int64_t skip1,
			       int64_t skip2, char *out, size_t size)
{
	sqlite3_stmt *st;
	int r;

	if (!uid || !*uid)
		return 0;
	if ((r = cache_db_prepare(
		     db, &st,
		     "SELECT n.name FROM contacts c JOIN nodes n ON n.cid = c.cid "
		     "WHERE c.folder = ? AND c.uid = ? AND n.ino NOT IN (?, ?) LIMIT 1",
		     "itii", folder, uid, skip1, skip2)))
		return r;
	r = cache_db_step(st);
	if (r == 1)
		snprintf(out, size, "%s", (const char *)sqlite3_column_text(st, 0));
	cache_db_release(st);
	return r;
}

/* 0 when no file but skip1 and skip2 shows a contact of folder with this
 * UID; else the refusal of name is logged (what: what happens to it) and
 * CACHE_KEPT_DUPLICATE returned; or -errno. */
static int refuse_duplicate(sqlite3 *db, int64_t folder, const char *uid, int64_t skip1,
			    int64_t skip2, const char *name, const char *what)
{
	char other[256];
	int r = uid_shown_elsewhere(db, folder, uid, skip1, skip2, other, sizeof(other));

	if (r <= 0)
		return r;
	cache_error(db, name,
		    "carries the UID of \"%s\", a contact of this folder, and a folder holds a "
		    "contact once: %s (edit \"%s\" instead, or give this card a UID of its own)",
		    other, what, other);
	return CACHE_KEPT_DUPLICATE;
}

/* The photo of contact cid as stored: 1 when it equals data[0..len), 0
 * when it differs, -errno. */
static int same_photo(sqlite3 *db, int64_t cid, const void *data, size_t len)
{
	sqlite3_stmt *st;
	int r = cache_db_prepare(db, &st, "SELECT photo FROM contacts WHERE cid = ?", "i", cid);

	if (r)
		return r;
	r = cache_db_step(st);
	if (r == 1) {
		const void *p = sqlite3_column_blob(st, 0);
		size_t n = (size_t)sqlite3_column_bytes(st, 0);

		r = (!p && !data) || (p && data && n == len && !memcmp(p, data, len));
	}
	cache_db_release(st);
	return r;
}

/*
 * A valid card was written into file n (a .vcf in folder): decide which
 * contact it is (its own, one its UID names, or a new one) and queue what
 * the server must be told. In a transaction.
 */
/* Whether Outlook can take card's photo: a photo of GRAPH_PHOTO_MAX bytes or
 * more would be refused by the server after the contact exists (and a move
 * would leave two copies), so such a card is refused here. 0, or -EFBIG
 * with why in msg. */
static int photo_fits(const struct vcard *card, char *msg, size_t size)
{
	const struct vcard_prop *photo = vcard_photo(card);

	if (!photo || photo->len < GRAPH_PHOTO_MAX)
		return 0;
	snprintf(msg, size, "its photo is %zu bytes; Outlook takes photos under %zu bytes (4 MB)",
		 photo->len, GRAPH_PHOTO_MAX);
	return -EFBIG;
}

int cache_tree_keep_beside(sqlite3 *db, int64_t cid, const struct buf *ours, char *kept,
			   size_t size, struct events *ev)
{
	char name[256], stamp[32], want[300];
	int64_t folder = 0, ino;
	time_t now = time(NULL);
	struct tm tm;
	int r;

	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	if ((r = cache_db_int(db, &folder, "SELECT folder FROM contacts WHERE cid = ?", "i", cid)) <
	    0)
		return r;
	{
		sqlite3_stmt *st;

		if ((r = cache_db_prepare(db, &st, "SELECT name FROM nodes WHERE cid = ?", "i",
					  cid)))
			return r;
		snprintf(want, sizeof(want), "contact.vcf.conflict-%s", stamp);
		if (cache_db_step(st) == 1) {
			const char *n = (const char *)sqlite3_column_text(st, 0);
			size_t room = 255 - strlen(".conflict-") - strlen(stamp);

			snprintf(want, sizeof(want), "%.*s.conflict-%s", (int)room, n, stamp);
		}
		cache_db_release(st);
	}
	if ((r = cache_tree_unique_name(db, (uint64_t)folder, want, name)))
		return r;
	if ((r = cache_db_run(
		     db,
		     "INSERT INTO nodes(parent, name, kind, mtime_ns, size, data, written, chosen) "
		     "VALUES(?, ?, ?, ?, ?, ?, 1, 1)",
		     "itiiib", folder, name, (int64_t)CACHE_FILE, cache_now_ns(),
		     (int64_t)ours->len, ours->data, ours->len)))
		return r;
	ino = sqlite3_last_insert_rowid(db);
	cache_events_add(ev, CACHE_ADDED, (uint64_t)ino, (uint64_t)folder, name, 0, NULL);
	snprintf(kept, size, "%s", name);
	return 0;
}

/* ---- the version a card was made from (docs/design.md §6) ---------------------------- */

/* 12 hex digits of the SHA-256 of a photo, or "0" for none. out: 16 bytes. */
static void photo_tag(const void *photo, size_t len, char *out)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	snprintf(out, 16, "0");
	if (photo && len && EVP_Digest(photo, len, md, &mdlen, EVP_sha256(), NULL) && mdlen >= 6)
		snprintf(out, 16, "%02x%02x%02x%02x%02x%02x", md[0], md[1], md[2], md[3], md[4],
			 md[5]);
}

/* How many things card changes against base (the fields of the minimal
 * PATCH, the display name it always repeats aside, and the extension), or
 * -errno. */
static int changes_against(const cJSON *base, const struct vcard *card)
{
	cJSON *patch = NULL, *ext = NULL;
	struct vcard_error e;
	int n = vcard_graph_diff(base, card, &patch, &ext, &e);

	if (!n) {
		const cJSON *dn = cJSON_GetObjectItemCaseSensitive(patch, "displayName");

		n = cJSON_GetArraySize(patch) + (ext != NULL);
		if (dn && cJSON_Compare(dn, cJSON_GetObjectItemCaseSensitive(base, "displayName"), 1))
			n--;
	}
	cJSON_Delete(patch);
	cJSON_Delete(ext);
	return n;
}

/* JSON of version ck of contact cid: the present one (*present set) or one
 * kept in versions, with the version our own write made of it in next
 * (""). 1, 0 when unknown, -errno. */
static int version_json(sqlite3 *db, int64_t cid, const char *ck, cJSON **json, int *present,
			char *next, size_t size)
{
	sqlite3_stmt *st;
	int r;

	*json = NULL;
	*present = 0;
	next[0] = '\0';
	if ((r = cache_db_prepare(db, &st,
				  "SELECT json FROM contacts WHERE cid = ? AND change_key = ?",
				  "it", cid, ck)))
		return r;
	if ((r = cache_db_step(st)) == 1) {
		*present = 1;
		if (!(*json = cJSON_Parse((const char *)sqlite3_column_text(st, 0))))
			r = -ENOMEM;
	}
	cache_db_release(st);
	if (r)
		return r;
	if ((r = cache_db_prepare(
		     db, &st, "SELECT json, ours_to FROM versions WHERE cid = ? AND change_key = ?",
		     "it", cid, ck)))
		return r;
	if ((r = cache_db_step(st)) == 1) {
		if (!(*json = cJSON_Parse((const char *)sqlite3_column_text(st, 0))))
			r = -ENOMEM;
		else if (sqlite3_column_text(st, 1))
			snprintf(next, size, "%s", (const char *)sqlite3_column_text(st, 1));
	}
	cache_db_release(st);
	return r;
}

/*
 * The candidates for the base of a card naming version ck: that version,
 * the versions our own writes made of it one after the other (a writer's
 * buffer holds its own saves, which became those versions), and what the
 * cards merged since that named it said (kept in merges, the latest last). The base is the one the
 * card changes least against; of equals, the later (a writer changing one
 * field twice is not in conflict with itself). A change made elsewhere is
 * never a candidate.
 */
int cache_card_base(sqlite3 *db, int64_t cid, struct vcard *card, int local_ok, cJSON **json)
{
	char ck[256], photo[16], next[256];
	cJSON *best = NULL, *cand = NULL;
	int best_n = -1, best_present = 0, present, n, r = 0;
	sqlite3_stmt *st;

	if (json)
		*json = NULL;
	if (!cache_version_of(card, ck, sizeof(ck), photo, sizeof(photo)))
		return CACHE_BASE_UNNAMED;
	/* A local state (a merge the file showed, "<change key>+<n>") is not
	 * a server version: for the server's side it stands for the version
	 * our write made of it, or else the one it was made from. */
	if (!local_ok && strchr(ck, '+')) {
		int had = version_json(db, cid, ck, &cand, &present, next, sizeof(next));

		cJSON_Delete(cand);
		cand = NULL;
		if (had < 0)
			return had;
		if (next[0])
			snprintf(ck, sizeof(ck), "%s", next);
		else
			*strchr(ck, '+') = '\0';
	}
	for (int step = 0; step < 64 && ck[0]; step++) {
		if ((r = version_json(db, cid, ck, &cand, &present, next, sizeof(next))) <= 0)
			break;
		if ((n = changes_against(cand, card)) < 0) {
			r = n;
			break;
		}
		if (best_n < 0 || n <= best_n) {
			cJSON_Delete(best);
			best = cand;
			best_n = n;
			best_present = present;
		} else {
			cJSON_Delete(cand);
		}
		cand = NULL;
		if (present)
			break;
		snprintf(ck, sizeof(ck), "%s", next);
	}
	cJSON_Delete(cand);
	cand = NULL;
	if (r < 0)
		goto out;
	(void)cache_version_of(card, ck, sizeof(ck), photo, sizeof(photo));
	if ((r = cache_db_prepare(
		     db, &st,
		     "SELECT json FROM merges WHERE cid = ? AND named = ? AND (? OR NOT local) "
		     "ORDER BY seq",
		     "iti", cid, ck, (int64_t)local_ok)))
		goto out;
	while (r >= 0 && (r = cache_db_step(st)) == 1) {
		if (!(cand = cJSON_Parse((const char *)sqlite3_column_text(st, 0))))
			r = -ENOMEM;
		else if ((n = changes_against(cand, card)) < 0)
			r = n;
		else if (best_n < 0 || n <= best_n) {
			cJSON_Delete(best);
			best = cand;
			cand = NULL;
			best_n = n;
			best_present = 0;
		}
		cJSON_Delete(cand);
		cand = NULL;
	}
	cache_db_release(st);
	if (r < 0)
		goto out;
	r = best_n < 0 ? CACHE_BASE_UNKNOWN : best_present ? CACHE_BASE_PRESENT : CACHE_BASE_OLDER;
	if (r == CACHE_BASE_OLDER && json) {
		*json = best;
		best = NULL;
	}
out:
	cJSON_Delete(best);
	return r;
}

int cache_tree_card_loaded(sqlite3 *db, int64_t ino, struct vcard *card)
{
	struct vcard_prop *p;
	sqlite3_stmt *st;
	char *loaded = NULL;
	int r;

	if (vcard_find(card, VCARD_VERSION_PROP))
		return 0;
	if ((r = cache_db_prepare(db, &st, "SELECT loaded FROM nodes WHERE ino = ?", "i", ino)))
		return r;
	if (cache_db_step(st) == 1)
		loaded = cache_db_strdup(st, 0);
	cache_db_release(st);
	if (loaded && *loaded)
		r = (p = vcard_add(card, NULL, VCARD_VERSION_PROP)) ? vcard_set_text(card, p, loaded)
								   : -ENOMEM;
	free(loaded);
	return r;
}

int cache_token_of(const void *data, size_t len, char *out, size_t size)
{
	struct vcard_error e;
	struct vcard *card = NULL;
	const struct vcard_prop *p;
	int found = 0;

	out[0] = '\0';
	if (!data || vcard_parse_one(data, len, &card, &e))
		return 0;
	if ((p = vcard_find(card, VCARD_VERSION_PROP)) && *vcard_text(card, p)) {
		snprintf(out, size, "%s", vcard_text(card, p));
		found = 1;
	}
	vcard_free(card);
	return found;
}

int cache_version_of(struct vcard *card, char *ck, size_t cksize, char *photo, size_t psize)
{
	const struct vcard_prop *p = vcard_find(card, VCARD_VERSION_PROP);
	const char *t = p ? vcard_text(card, p) : NULL, *dot = t ? strrchr(t, '.') : NULL;

	if (!t || !*t)
		return 0;
	/* Not one of ours (no photo part): a version nobody knows. */
	if (!dot)
		dot = t + strlen(t);
	snprintf(ck, cksize, "%.*s", (int)(dot - t), t);
	snprintf(photo, psize, "%s", *dot ? dot + 1 : "");
	return 1;
}

/* ---- names a writer chose (docs/design.md §1) --------------------------------------- */

/* How long a contact's former file name stays its own: a save there is an
 * update of that contact (an editor that keeps a file's name in its buffer
 * and saves to it after the file was renamed under it). */
#define NAMES_PAST_MS (24LL * 3600 * 1000)

/* Contact cid's file left name in folder: remember the name (and forget
 * names older than NAMES_PAST_MS). */
static int name_left(sqlite3 *db, int64_t folder, const char *name, int64_t cid)
{
	int64_t now = cache_now_ms();
	int r = cache_db_run(db, "DELETE FROM names_past WHERE at < ?", "i", now - NAMES_PAST_MS);

	if (!r && cid && cache_is_vcf_name(name))
		r = cache_db_run(
			db,
			"INSERT OR REPLACE INTO names_past(folder, name, cid, at) VALUES(?, ?, "
			"?, ?)",
			"itii", folder, name, cid, now);
	return r;
}

/*
 * A card carrying uid written at name in folder by file ino, which shows no
 * contact yet: when the contact of the folder with that UID had its file at
 * this name, the card is that contact. The file that shows it now goes (the
 * kernel is told), and its cid is returned. 0 when none, or -errno.
 */
static int64_t former_owner(sqlite3 *db, int64_t folder, const char *uid, int64_t ino,
			    const char *name, struct events *ev)
{
	struct node o;
	int64_t cid = 0;
	int r;

	if (!uid || !*uid)
		return 0;
	r = cache_db_int(
		db, &cid,
		"SELECT p.cid FROM names_past p JOIN contacts c ON c.cid = p.cid WHERE "
		"p.folder = ? AND p.name = ? AND p.at >= ? AND c.folder = ? AND c.uid = ? AND "
		"NOT c.gone",
		"itiit", folder, name, cache_now_ms() - NAMES_PAST_MS, folder, uid);
	if (r <= 0)
		return r;
	r = node_of_contact(db, cid, &o);
	if (r == -ENOENT || (!r && o.ino == ino))
		return cid;
	if (r)
		return r;
	if ((r = cache_db_run(db, "DELETE FROM nodes WHERE ino = ?", "i", o.ino)) ||
	    (r = cache_db_run(db, "DELETE FROM names_due WHERE ino = ?", "i", o.ino)) ||
	    (r = name_left(db, o.parent, o.name, cid)))
		return r;
	if (ev)
		cache_events_add(ev, CACHE_REMOVED, (uint64_t)o.ino, (uint64_t)o.parent, o.name, 0,
				 NULL);
	log_info("\"%s\": a save at a former name of contact %lld, which showed as \"%s\"",
		 name, (long long)cid, o.name);
	return cid;
}

/*
 * File n, written with card, now shows contact cid: its name is the
 * writer's choice and no longer follows the card. When the card changes
 * what names a file (its display name, or what stands in for one), the
 * display name the name was settled against (nodes.basis) is forgotten and
 * settled again by the server's answer to this write, whatever display name
 * Outlook makes of it; otherwise it stays, so a rename from the server that
 * waits for this writer is still made.
 */
static int name_chosen(sqlite3 *db, const struct node *n, int64_t cid, const struct vcard *card)
{
	char server_want[256], card_want[256];
	cJSON *server = NULL, *mine = NULL;
	struct vcard_error e;
	sqlite3_stmt *st;
	int same = 0, r;

	if ((r = cache_db_prepare(db, &st, "SELECT json FROM contacts WHERE cid = ?", "i", cid)))
		return r;
	if (cache_db_step(st) == 1 && sqlite3_column_text(st, 0))
		server = cJSON_Parse((const char *)sqlite3_column_text(st, 0));
	cache_db_release(st);
	if (server && !vcard_to_graph(card, &mine, &e)) {
		cache_contact_name(server, server_want, sizeof(server_want));
		cache_contact_name(mine, card_want, sizeof(card_want));
		same = !strcmp(server_want, card_want);
	}
	r = same ? cache_db_run(db, "UPDATE nodes SET chosen = 1 WHERE ino = ?", "i", n->ino)
		 : cache_db_run(db, "UPDATE nodes SET chosen = 1, basis = NULL WHERE ino = ?", "i",
				n->ino);
	cJSON_Delete(server);
	cJSON_Delete(mine);
	return r;
}

/*
 * With -o followup, whether the flag card carries may go to the server when
 * it has to (it differs from the one contact cid has; cid 0: a new
 * contact). 0; or -EINVAL with why recorded against name (and in err, when
 * not NULL), the card to be refused where it was written; -ENOMEM.
 */
static int flag_refused(struct cache *c, sqlite3 *db, int64_t cid, const struct vcard *card,
			const char *name, const char *what, struct vcard_error *err)
{
	struct vcard_error e;
	cJSON *mine = NULL, *theirs = NULL;
	int r;

	if (!c->cfg.followup)
		return 0;
	memset(&e, 0, sizeof(e));
	r = vcard_followup_read(card, &mine, &e);
	if (!r) {
		theirs = cid ? cache_flag_of(db, cid) : NULL;
		r = vcard_followup_same(mine, theirs) ? 0 : vcard_followup_check(mine, &e);
	}
	cJSON_Delete(mine);
	cJSON_Delete(theirs);
	if (r == -EINVAL) {
		if (err)
			*err = e;
		cache_error(db, name, "the follow-up flag cannot go to Outlook: %s; %s", e.msg,
			    what);
	}
	return r;
}

/* The card file ino holds as written here and not yet taken by a server
 * version (local edits), parsed; NULL for none. */
static struct vcard *written_card(sqlite3 *db, int64_t ino)
{
	struct vcard *card = NULL;
	struct vcard_error e;
	sqlite3_stmt *st;

	if (cache_db_prepare(db, &st,
			     "SELECT data FROM nodes WHERE ino = ? AND written AND NOT draft", "i",
			     ino))
		return NULL;
	if (cache_db_step(st) == 1 &&
	    vcard_parse_one(sqlite3_column_blob(st, 0) ? sqlite3_column_blob(st, 0) : "",
			    (size_t)sqlite3_column_bytes(st, 0), &card, &e))
		card = NULL;
	cache_db_release(st);
	return card;
}

/* Render contact cid with the photo of card (none when it has none), then
 * put the stored photo back: cache_tree_render_local's photo. */
static int render_with_photo(struct cache *c, sqlite3 *db, int64_t cid, const struct vcard *card,
			     struct events *ev)
{
	const struct vcard_prop *p = vcard_photo(card);
	sqlite3_stmt *st;
	struct buf photo;
	char *type = NULL;
	int had = 0, r;

	buf_init(&photo, (size_t)8 << 20);
	if ((r = cache_db_prepare(db, &st, "SELECT photo, photo_type FROM contacts WHERE cid = ?",
				  "i", cid)))
		return r;
	if (cache_db_step(st) == 1 && sqlite3_column_blob(st, 0)) {
		had = 1;
		r = buf_add(&photo, sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0));
		type = cache_db_strdup(st, 1);
	}
	cache_db_release(st);
	if (!r)
		r = cache_db_run(db, "UPDATE contacts SET photo = ?, photo_type = ? WHERE cid = ?",
				 "bti", p ? p->data : NULL, p ? p->len : 0,
				 p ? (p->mediatype ? p->mediatype : "image/jpeg") : NULL, cid);
	if (!r)
		r = cache_tree_render(c, db, cid, ev);
	if (!r)
		r = cache_db_run(db, "UPDATE contacts SET photo = ?, photo_type = ? WHERE cid = ?",
				 "bti", had ? photo.data : NULL, had ? photo.len : 0, type, cid);
	buf_release(&photo);
	free(type);
	return r;
}

int cache_tree_render_local(struct cache *c, sqlite3 *db, int64_t cid, const cJSON *json,
			    const cJSON *mflag, const struct vcard *photo, struct events *ev)
{
	char *text = NULL, *server = NULL, *flag = NULL, *mine = NULL, token[300];
	cJSON *local = cJSON_Duplicate(json, 1);
	const char *ck = cache_jstr(json, "changeKey");
	sqlite3_stmt *st;
	int64_t n = 0;
	int r = local ? 0 : -ENOMEM;

	/* The state the file shows gets a token of its own, kept as a
	 * version: a card written from it is based on exactly it. */
	if (!r && ck &&
	    (r = cache_db_int(db, &n,
			      "SELECT count(*) FROM versions WHERE cid = ? AND "
			      "substr(change_key, 1, length(?) + 1) = ? || '+'",
			      "itt", cid, ck, ck)) >= 0) {
		snprintf(token, sizeof(token), "%s+%lld", ck, (long long)n + 1);
		cJSON_DeleteItemFromObjectCaseSensitive(local, "changeKey");
		r = cJSON_AddStringToObject(local, "changeKey", token) ? 0 : -ENOMEM;
	}
	if (r >= 0 && !(text = cJSON_PrintUnformatted(local)))
		r = -ENOMEM;
	if (r > 0)
		r = 0;
	if (!r && ck)
		r = cache_db_run(
			db,
			"INSERT OR REPLACE INTO versions(cid, change_key, json, at) VALUES(?, ?, "
			"?, ?)",
			"itti", cid, token, text, cache_now_ms());
	cJSON_Delete(local);

	if (!r && !(r = cache_db_prepare(db, &st, "SELECT json, flag FROM contacts WHERE cid = ?",
					 "i", cid))) {
		if (cache_db_step(st) == 1) {
			server = cache_db_strdup(st, 0);
			flag = cache_db_strdup(st, 1);
		}
		cache_db_release(st);
	}
	if (!r && mflag && !(mine = cJSON_PrintUnformatted(mflag)))
		r = -ENOMEM;
	if (!r && mine)
		r = cache_db_run(db, "UPDATE contacts SET flag = ? WHERE cid = ?", "ti", mine, cid);
	if (!r)
		r = cache_db_run(db, "UPDATE contacts SET json = ? WHERE cid = ?", "ti", text, cid);
	if (!r)
		r = cache_db_run(db, "UPDATE nodes SET written = 0 WHERE cid = ?", "i", cid);
	if (!r)
		r = photo ? render_with_photo(c, db, cid, photo, ev)
			  : cache_tree_render(c, db, cid, ev);
	if (!r)
		r = cache_db_run(db, "UPDATE contacts SET json = ? WHERE cid = ?", "ti", server,
				 cid);
	if (!r && mine)
		r = cache_db_run(db, "UPDATE contacts SET flag = ? WHERE cid = ?", "ti", flag, cid);
	if (!r)
		r = cache_db_run(db, "UPDATE nodes SET written = 1, mtime_ns = ? WHERE cid = ?",
				 "ii", cache_now_ns(), cid);
	free(text);
	free(server);
	free(flag);
	free(mine);
	return r;
}

/*
 * A card written over contact cid's file, made from another version than
 * what the file showed (an editor's buffer read before a change reached
 * the file; the file's own local edits not sent yet, prev, count as part of
 * what it showed), is merged with what the file showed before it is queued,
 * so that neither a change made elsewhere nor another writer's save is
 * undone (docs/design.md §6): a field only the card changed is the card's, a
 * field only the file had changed stays, one both changed differently is a
 * conflict (the card kept beside the file, the file as it was, the error
 * log says so). A card that holds everything the file showed stays as
 * written, byte for byte. 0 or -errno.
 */
/*
 * The file a save renamed away before it wrote the contact's new file
 * (vim's and emacs's backup, "name~"): it no longer shows the contact (its
 * cid went), but it holds what the contact's file showed. Of the files in
 * n's folder that show no contact, the latest written one with card's UID;
 * NULL for none (errno ENOMEM when out of memory). A conflict copy
 * (cache_tree_keep_beside's NAME.conflict-TIME) carries the UID too but holds
 * the save that lost, never what the file showed: taken for it, that save
 * would come back over the server's side of the conflict.
 */
static struct vcard *renamed_away(sqlite3 *db, const struct node *n, struct vcard *card)
{
	const struct vcard_prop *uidp = vcard_find(card, "UID");
	const char *uid = uidp ? vcard_text(card, uidp) : NULL;
	struct vcard *found = NULL;
	sqlite3_stmt *st;

	errno = 0;
	if (!uid || !*uid ||
	    cache_db_prepare(
		    db, &st,
		    "SELECT ino FROM nodes WHERE parent = ? AND kind = ? AND cid IS NULL AND "
		    "ino != ? AND written AND NOT draft AND name NOT GLOB '*.conflict-*' "
		    "ORDER BY mtime_ns DESC LIMIT 16",
		    "iii", n->parent, (int64_t)CACHE_FILE, n->ino))
		return NULL;
	while (!found && cache_db_step(st) == 1) {
		struct vcard *v = written_card(db, sqlite3_column_int64(st, 0));
		const struct vcard_prop *p = v ? vcard_find(v, "UID") : NULL;

		if (p && !strcmp(vcard_text(v, p), uid))
			found = v;
		else
			vcard_free(v);
	}
	cache_db_release(st);
	return found;
}

/*
 * Whether card, written over contact cid's file, keeps the photo of the
 * version it names while the file showed another (prev, or else the
 * server's): the writer never saw that photo, so the file is to show it
 * again. 1, 0, or -errno.
 */
static int stale_photo(sqlite3 *db, int64_t cid, struct vcard *card, const struct vcard *prev)
{
	const struct vcard_prop *p = vcard_photo(card), *q = prev ? vcard_photo(prev) : NULL;
	char ck[256], named[16], mine[16], shown[16];
	sqlite3_stmt *st;
	int r;

	if (!cache_version_of(card, ck, sizeof(ck), named, sizeof(named)))
		return 0;
	photo_tag(p ? p->data : NULL, p ? p->len : 0, mine);
	if (strcmp(mine, named))
		return 0; /* the writer's own photo (or its removal) */
	if (prev) {
		photo_tag(q ? q->data : NULL, q ? q->len : 0, shown);
		return strcmp(shown, mine) != 0;
	}
	if ((r = cache_db_prepare(db, &st, "SELECT photo FROM contacts WHERE cid = ?", "i", cid)))
		return r;
	if ((r = cache_db_step(st)) == 1) {
		photo_tag(sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0), shown);
		r = strcmp(shown, mine) != 0;
	}
	cache_db_release(st);
	return r;
}

static int merge_at_write(struct cache *c, sqlite3 *db, struct node *n, int64_t cid,
			  struct vcard *card, const struct vcard *prev, struct events *ev)
{
	cJSON *server = NULL, *base = NULL, *theirs = NULL, *pp = NULL, *px = NULL;
	struct vcard *other = NULL;
	const struct vcard *shows;
	cJSON *mflag = NULL;
	int stale;
	struct cache_merge m;
	struct vcard_error e;
	struct buf ours;
	sqlite3_stmt *st;
	char kept[256];
	int kind, r;

	memset(&m, 0, sizeof(m));
	buf_init(&ours, (size_t)64 << 20);
	/* Saved as a new file after the old one was renamed away (the
	 * contact's other file still holds what it showed). */
	if (!prev && (prev = other = renamed_away(db, n, card)) == NULL && errno == ENOMEM) {
		r = -ENOMEM;
		goto out;
	}
	if ((r = kind = cache_card_base(db, cid, card, 1, &base)) < 0)
		goto out;
	r = 0;
	if (kind == CACHE_BASE_UNNAMED || kind == CACHE_BASE_UNKNOWN)
		goto out;
	if ((r = cache_db_prepare(db, &st, "SELECT json FROM contacts WHERE cid = ?", "i", cid)))
		goto out;
	if (cache_db_step(st) == 1 && sqlite3_column_text(st, 0))
		server = cJSON_Parse((const char *)sqlite3_column_text(st, 0));
	cache_db_release(st);
	if (!server)
		goto out;
	/* What the file showed: the server's version with its local edits. */
	if (prev && !vcard_graph_diff(server, prev, &pp, &px, &e) &&
	    (!cache_patch_is_empty(pp, server) || px) &&
	    !(theirs = cache_merge_said(server, pp, px))) {
		r = -ENOMEM;
		goto out;
	}
	if (kind == CACHE_BASE_PRESENT && !(base = cJSON_Duplicate(server, 1))) {
		r = -ENOMEM;
		goto out;
	}
	if (!theirs) {
		theirs = server;
		server = NULL;
	}
	if (c->cfg.followup && vcard_followup_read(card, &mflag, &e))
		mflag = NULL;
	if ((r = cache_merge(base, theirs, card, &m)))
		goto out;
	/* What the card said is a base for the next card naming its version
	 * (the same buffer saved again, a reader of these bytes); a card in
	 * conflict is not (the conflict copy holds it). */
	if (!m.overlap && (r = cache_merge_remember(db, cid, card, base, &m, 1)))
		goto out;
	if ((stale = stale_photo(db, cid, card, prev)) < 0) {
		r = stale;
		goto out;
	}
	if (!m.lacks && !m.overlap && !stale)
		goto out; /* holds all the file showed: as written */
	/* The photo the merge shows: the card's own, unless it is the one
	 * of the version it names and the file showed another. */
	shows = stale ? prev : card;
	if (!m.overlap) {
		r = cache_tree_render_local(c, db, cid, m.pending ? m.merged : theirs, mflag, shows,
					    ev);
		if (!r)
			log_info("\"%s\" was written from an older version of the contact: merged "
				 "with what the file showed",
				 n->name);
		goto out;
	}
	if ((r = cache_db_prepare(db, &st, "SELECT data FROM nodes WHERE ino = ?", "i", n->ino)))
		goto out;
	if (cache_db_step(st) == 1)
		r = buf_add(&ours, sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0));
	cache_db_release(st);
	if (!r)
		r = cache_tree_keep_beside(db, cid, &ours, kept, sizeof(kept), ev);
	if (!r)
		r = cache_tree_render_local(c, db, cid, theirs, mflag, prev, ev);
	if (!r)
		cache_error(db, n->name,
			    "conflict: changed elsewhere and in this save in the same fields (%s); "
			    "the file holds what it showed before, the save is kept as %s",
			    m.fields.data, kept);
out:
	cJSON_Delete(mflag);
	vcard_free(other);
	cache_merge_release(&m);
	buf_release(&ours);
	cJSON_Delete(server);
	cJSON_Delete(base);
	cJSON_Delete(theirs);
	cJSON_Delete(pp);
	cJSON_Delete(px);
	return r;
}

static int commit_contact(struct cache *c, sqlite3 *db, struct node *n, int64_t folder,
			  struct vcard *card, const struct vcard *prev, struct events *ev)
{
	const struct vcard_prop *uidp = vcard_find(card, "UID");
	const char *uid = uidp ? vcard_text(card, uidp) : NULL;
	const struct vcard_prop *photo = vcard_photo(card);
	char base_ck[256], base_photo[16], card_photo[16];
	int64_t cid = n->cid, has_id = 0;
	int based, r;

	if (!cid) {
		cid = reconcile(db, folder, uid);
		if (cid < 0)
			return (int)cid;
		if (cid) {
			/* A delete waiting its grace period is cancelled. */
			if ((r = cache_db_run(
				     db,
				     "DELETE FROM outbox WHERE cid = ? AND op = ? AND inflight = 0",
				     "ii", cid, (int64_t)OP_DELETE)) ||
			    (r = cache_db_run(db, "UPDATE contacts SET gone = 0 WHERE cid = ?", "i",
					      cid)))
				return r;
		}
	}
	if (!cid && (cid = former_owner(db, folder, uid, n->ino, n->name, ev)) < 0)
		return (int)cid;
	if (!cid) {
		char key[33];
		int k;

		if ((r = refuse_duplicate(db, folder, uid, n->ino, 0, n->name,
					  "kept here as a local draft, not sent"))) {
			if (r == CACHE_KEPT_DUPLICATE &&
			    (k = cache_db_run(db, "UPDATE nodes SET draft = 1 WHERE ino = ?", "i",
					      n->ino)))
				return k;
			return r;
		}
		cache_new_key(key);
		if ((r = cache_db_run(db, "INSERT INTO contacts(folder, uid, ckey) VALUES(?, ?, ?)",
				      "itt", folder, uid, key)))
			return r;
		cid = sqlite3_last_insert_rowid(db);
		if ((r = cache_db_run(db, "UPDATE nodes SET cid = ? WHERE ino = ?", "ii", cid,
				      n->ino)) ||
		    (r = name_chosen(db, n, cid, card)))
			return r;
		n->cid = cid;
		if ((r = cache_outbox_add(db, OP_CREATE, cid, folder, NULL, 0)))
			return r;
		/* v1.0 cannot carry the flag: it follows the create. */
		return c->cfg.followup ? cache_outbox_add_flag(db, cid, folder) : 0;
	}
	if ((r = name_chosen(db, n, cid, card)) ||
	    (r = cache_db_run(db, "UPDATE nodes SET cid = ? WHERE ino = ?", "ii", cid, n->ino)) ||
	    (r = cache_db_run(
		     db,
		     "UPDATE contacts SET lrev = lrev + 1, uid = coalesce(?, uid) WHERE cid = ?",
		     "ti", uid, cid)))
		return r;
	n->cid = cid;
	if ((r = cache_db_int(db, &has_id, "SELECT id IS NOT NULL FROM contacts WHERE cid = ?", "i",
			      cid)) < 0)
		return r;
	/* A create that has not left sends the file as it is when it does. */
	if (!has_id && waiting_entry(db, OP_CREATE, cid) > 0)
		return 0;
	if ((r = enqueue_once(db, OP_UPDATE, cid, folder)))
		return r;
	based = cache_version_of(card, base_ck, sizeof(base_ck), base_photo, sizeof(base_photo));
	if (based && (r = cache_card_base(db, cid, card, 1, NULL)) <= CACHE_BASE_UNKNOWN) {
		if (r < 0)
			return r;
		cache_error(db, n->name,
			    "applied over newer changes on the server, which it could not be "
			    "merged with: it was written from a version of the contact this mount "
			    "no longer knows (older than a day, or shown by another cache)");
	}
	if ((r = merge_at_write(c, db, n, cid, card, prev, ev)))
		return r;
	if (!photo) {
		/* Made from a version without a photo (read before it came):
		 * it removes nothing. */
		if (!(based && !strcmp(base_photo, "0")) && (r = same_photo(db, cid, NULL, 0)) == 0)
			cache_error(
				db, n->name,
				"the photo was removed here, but Graph cannot delete a contact's "
				"photo: it stays on the server");
	} else if ((r = same_photo(db, cid, photo->data, photo->len)) == 0) {
		/* The photo of the version it was made from: the server's
		 * newer one stays. */
		photo_tag(photo->data, photo->len, card_photo);
		if (!based || strcmp(base_photo, card_photo))
			r = enqueue_once(db, OP_PHOTO, cid, folder);
	}
	if (r < 0)
		return r;
	/* The flag goes last, and only when it differs (decided when sent). */
	return c->cfg.followup ? cache_outbox_add_flag(db, cid, folder) : 0;
}

/* ---- a file of several cards: an import ------------------------------------------------ */

/*
 * Google, Apple and Outlook export a whole address book as one file of
 * cards. Dropped into a folder, each card becomes a contact of that folder,
 * in a file of its own named as any contact's; the file of cards itself is
 * not a contact (its draft is CACHE_IMPORTED, and the sync thread removes
 * it after the grace period: cp -p, tar and file managers set its times
 * after closing it, by name). A card whose UID a contact of the folder has
 * updates that contact; a card without a UID gets one derived from its
 * text, so the same export dropped again matches instead of duplicating.
 */

struct import_counts {
	unsigned created, updated, same, refused;
};

/* "urn:uuid:..." from the SHA-256 of the card's text (a UUID of version 8,
 * RFC 9562: a name-based one with a hash of our choice). */
static int derived_uid(const struct vcard *card, char *out, size_t size)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	struct buf b;
	int r;

	buf_init(&b, (size_t)64 << 20);
	r = vcard_write(card, VCARD_V40, &b);
	if (!r && !EVP_Digest(b.data, b.len, md, &mdlen, EVP_sha256(), NULL))
		r = -ENOMEM;
	buf_release(&b);
	if (r)
		return r;
	md[6] = (unsigned char)((md[6] & 0x0f) | 0x80);
	md[8] = (unsigned char)((md[8] & 0x3f) | 0x80);
	snprintf(out, size,
		 "urn:uuid:%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 md[0], md[1], md[2], md[3], md[4], md[5], md[6], md[7], md[8], md[9], md[10],
		 md[11], md[12], md[13], md[14], md[15]);
	return 0;
}

/* The card's UID, given one first when it has none (or an empty one).
 * NULL when out of memory. */
static const char *import_uid(struct vcard *card)
{
	struct vcard_prop *p = vcard_find(card, "UID");
	const char *uid = p ? vcard_text(card, p) : NULL;
	char made[64];

	if (uid && *uid)
		return uid;
	if (derived_uid(card, made, sizeof(made)) || (!p && !(p = vcard_add(card, NULL, "UID"))) ||
	    vcard_set_text(card, p, made))
		return NULL;
	return vcard_text(card, p);
}

/* Whether file n (showing contact n->cid) already says what card says:
 * its bytes are the card's, or the server's version differs in nothing
 * the card would change. 1, 0 or -errno. */
static int import_same(struct cache *c, sqlite3 *db, const struct node *n, struct vcard *card,
		       const struct buf *text)
{
	const struct vcard_prop *photo = vcard_photo(card);
	cJSON *server = NULL, *patch = NULL, *ext = NULL, *mine = NULL, *theirs = NULL;
	struct vcard_error e;
	sqlite3_stmt *st;
	int r;

	if ((r = cache_db_prepare(db, &st,
				  "SELECT data, (SELECT json FROM contacts WHERE cid = ?) "
				  "FROM nodes WHERE ino = ?",
				  "ii", n->cid, n->ino)))
		return r;
	if ((r = cache_db_step(st)) == 1) {
		const void *data = sqlite3_column_blob(st, 0);
		size_t len = (size_t)sqlite3_column_bytes(st, 0);

		r = len == text->len && data && !memcmp(data, text->data, len);
		if (!r && sqlite3_column_text(st, 1))
			server = cJSON_Parse((const char *)sqlite3_column_text(st, 1));
	}
	cache_db_release(st);
	if (r || !server)
		return r < 0 ? r : r == 1;
	/* The flag, when mapped, is compared apart (the card is done with
	 * after this: its property may go). */
	r = cache_card_flag(c, card, &mine, &e);
	if (!r && mine && !vcard_followup_same(mine, theirs = cache_flag_of(db, n->cid)))
		r = -EINVAL; /* differs: not the same */
	if (!r)
		r = vcard_graph_diff(server, card, &patch, &ext, &e);
	if (!r)
		r = cache_patch_is_empty(patch, server) && !ext;
	if (r == 1 && photo)
		r = same_photo(db, n->cid, photo->data, photo->len);
	cJSON_Delete(server);
	cJSON_Delete(patch);
	cJSON_Delete(ext);
	cJSON_Delete(mine);
	cJSON_Delete(theirs);
	return r == -EINVAL ? 0 : r;
}

/* Card number i of file `from` (text: the card written out) into folder. */
static int import_card(struct cache *c, sqlite3 *db, int64_t folder, struct vcard *card,
		       const struct buf *text, const char *from, size_t i, struct import_counts *k,
		       struct events *ev)
{
	const struct vcard_prop *uidp = vcard_find(card, "UID");
	const char *uid = uidp ? vcard_text(card, uidp) : NULL;
	char want[256], name[256];
	struct vcard_error e;
	int64_t ino = 0, now = cache_now_ns();
	cJSON *json = NULL;
	struct node n;
	char why[160];
	int r;

	if (photo_fits(card, why, sizeof(why))) {
		cache_error(db, from, "card %zu (line %u) not imported: %s", i + 1, card->line,
			    why);
		k->refused++;
		return 0;
	}
	if ((r = cache_db_int(
		     db, &ino,
		     "SELECT n.ino FROM contacts c JOIN nodes n ON n.cid = c.cid WHERE c.folder = "
		     "? AND c.uid = ? LIMIT 1",
		     "it", folder, uid)) < 0)
		return r;
	if (r == 1) {
		/* An update of the contact with that UID. */
		if ((r = node_get(db, ino, &n)))
			return r;
		if ((r = flag_refused(c, db, n.cid, card, from, "not imported", NULL)) == -EINVAL) {
			k->refused++;
			return 0;
		}
		if (r)
			return r;
		if ((r = import_same(c, db, &n, card, text)) != 0) {
			k->same += r == 1;
			return r < 0 ? r : 0;
		}
		if ((r = cache_db_run(
			     db,
			     "UPDATE nodes SET data = ?, size = ?, mtime_ns = ?, written = 1, "
			     "draft = 0, loaded = NULL WHERE ino = ?",
			     "biii", text->data, text->len, (int64_t)text->len, now, n.ino)) ||
		    (r = commit_contact(c, db, &n, folder, card, NULL, ev)))
			return r;
		cache_events_add(ev, CACHE_CHANGED, (uint64_t)n.ino, (uint64_t)n.parent, n.name, 0,
				 NULL);
		k->updated++;
		return 0;
	}
	/* A new contact, in a file named as the server's version would be. */
	if ((r = flag_refused(c, db, 0, card, from, "not imported", NULL)) == -EINVAL) {
		k->refused++;
		return 0;
	}
	if (r)
		return r;
	if ((r = vcard_to_graph(card, &json, &e)) == -EINVAL) {
		cache_error(db, from, "card %zu (line %u) not imported: %s", i + 1, card->line,
			    e.msg);
		k->refused++;
		return 0;
	}
	if (r)
		return r;
	cache_contact_name(json, want, sizeof(want));
	cJSON_Delete(json);
	if ((r = cache_tree_unique_name(db, (uint64_t)folder, want, name)) ||
	    (r = cache_db_run(
		     db,
		     "INSERT INTO nodes(parent, name, kind, mtime_ns, size, data, written) "
		     "VALUES(?, ?, ?, ?, ?, ?, 1)",
		     "itiiib", folder, name, (int64_t)CACHE_FILE, now, (int64_t)text->len,
		     text->data, text->len)) ||
	    (r = node_get(db, sqlite3_last_insert_rowid(db), &n)) ||
	    (r = commit_contact(c, db, &n, folder, card, NULL, ev)))
		return r;
	cache_events_add(ev, CACHE_ADDED, (uint64_t)n.ino, (uint64_t)folder, n.name, 0, NULL);
	k->created++;
	return 0;
}

/*
 * File n of folder holds cards[0..ncards), more than one: import each. The
 * file itself is removed after the grace period (an outbox entry that
 * sends nothing). A card that cannot become a contact is logged; then the
 * file stays (nothing of it is lost) and CACHE_KEPT_INVALID is returned. A
 * file that shows a contact is not an import: refused as a draft, as any
 * write a contact cannot take.
 */
static int import_cards(struct cache *c, sqlite3 *db, struct node *n, int64_t folder,
			struct vcard **cards, size_t ncards, struct events *ev)
{
	struct import_counts k = {0};
	char arg[64];
	int r = 0;

	if (n->cid) {
		cache_error(db, n->name,
			    "holds %zu cards, and a contact's file holds one: kept here as a local "
			    "draft, not sent (drop a file of several cards under a new name to "
			    "import them)",
			    ncards);
		r = cache_db_run(db, "UPDATE nodes SET draft = 1 WHERE ino = ?", "i", n->ino);
		return r ? r : CACHE_KEPT_INVALID;
	}
	for (size_t i = 0; i < ncards && !r; i++) {
		struct buf text;

		buf_init(&text, (size_t)64 << 20);
		if (!import_uid(cards[i]))
			r = -ENOMEM;
		else if (!(r = vcard_write(cards[i], c->cfg.version ? c->cfg.version : VCARD_V30,
					   &text)))
			r = import_card(c, db, folder, cards[i], &text, n->name, i, &k, ev);
		buf_release(&text);
	}
	if (r)
		return r;
	log_info("%s: %zu cards imported: %u new contacts, %u updated, %u unchanged, %u refused",
		 n->name, ncards, k.created, k.updated, k.same, k.refused);
	if (k.refused) {
		r = cache_db_run(db, "UPDATE nodes SET draft = 1 WHERE ino = ?", "i", n->ino);
		return r ? r : CACHE_KEPT_INVALID;
	}
	snprintf(arg, sizeof(arg), "{\"ino\":%lld}", (long long)n->ino);
	if ((r = cache_db_run(db, "UPDATE nodes SET draft = ? WHERE ino = ?", "ii",
			      (int64_t)CACHE_IMPORTED, n->ino)))
		return r;
	return cache_outbox_add(db, OP_DROP_FILE, 0, folder, arg,
				cache_now_ms() +
					(c->cfg.delete_grace_ms ? c->cfg.delete_grace_ms : 5000));
}

int cache_tree_drop_imported(sqlite3 *db, int64_t ino, struct events *ev)
{
	struct node n;
	int r = node_get(db, ino, &n);

	if (r == -ENOENT || (!r && (n.draft != CACHE_IMPORTED || n.cid)))
		return 0; /* gone, or written again since */
	if (r || (r = cache_db_run(db, "DELETE FROM nodes WHERE ino = ?", "i", n.ino)))
		return r;
	cache_events_add(ev, CACHE_REMOVED, (uint64_t)n.ino, (uint64_t)n.parent, n.name, 0, NULL);
	return 0;
}

/* ---- reading ------------------------------------------------------------------------ */

int cache_lookup(struct cache *c, uint64_t parent, const char *name, struct cache_attr *out)
{
	struct node n;
	int r;

	pthread_mutex_lock(&c->api_lock);
	r = node_find(c->db, (int64_t)parent, name, &n);
	if (r == -ENOENT && node_get(c->db, (int64_t)parent, &n) == 0 && !is_dir(n.kind))
		r = -ENOTDIR;
	pthread_mutex_unlock(&c->api_lock);
	if (!r)
		attr_of(&n, out);
	return r;
}

int cache_getattr(struct cache *c, uint64_t ino, struct cache_attr *out)
{
	struct node n;
	int r;

	pthread_mutex_lock(&c->api_lock);
	r = node_get(c->db, (int64_t)ino, &n);
	pthread_mutex_unlock(&c->api_lock);
	if (!r)
		attr_of(&n, out);
	return r;
}

int cache_readdir(struct cache *c, uint64_t dir, uint64_t offset, cache_dir_fn fn, void *ctx)
{
	sqlite3_stmt *st = NULL;
	struct node n;
	int r;

	pthread_mutex_lock(&c->api_lock);
	r = node_get(c->db, (int64_t)dir, &n);
	if (!r && !is_dir(n.kind))
		r = -ENOTDIR;
	if (!r)
		r = cache_db_prepare(c->db, &st,
				     "SELECT " NODE_COLS
				     " FROM nodes WHERE parent = ? AND ino > ? ORDER BY ino",
				     "ii", (int64_t)dir, (int64_t)offset);
	while (!r && (r = cache_db_step(st)) == 1) {
		struct cache_attr a;

		node_read(st, &n);
		attr_of(&n, &a);
		r = fn(n.name, &a, ctx);
	}
	cache_db_release(st);
	pthread_mutex_unlock(&c->api_lock);
	return r;
}

int cache_read(struct cache *c, uint64_t ino, struct buf *out)
{
	sqlite3_stmt *st;
	int r;

	pthread_mutex_lock(&c->api_lock);
	r = cache_db_prepare(c->db, &st, "SELECT kind, data FROM nodes WHERE ino = ?", "i",
			     (int64_t)ino);
	if (!r) {
		r = cache_db_step(st);
		if (r == 1 && is_dir(sqlite3_column_int(st, 0)))
			r = -EISDIR;
		else if (r == 1)
			r = buf_add(out, sqlite3_column_blob(st, 1),
				    (size_t)sqlite3_column_bytes(st, 1));
		else if (r == 0)
			r = -ENOENT;
		cache_db_release(st);
	}
	pthread_mutex_unlock(&c->api_lock);
	return r;
}

/* ---- changing ------------------------------------------------------------------------- */

static void wake_sync(struct cache *c)
{
	pthread_mutex_lock(&c->lock);
	/* Kicked already: the sync thread knows, and waits out its gap
	 * (engine.c) without being woken for each commit of a run. */
	if (!c->kicked) {
		c->kicked = 1;
		pthread_cond_signal(&c->wake);
	}
	pthread_mutex_unlock(&c->lock);
}

/* The -errno a caller gets for a refusal committed all the same; 0 for
 * any other result. */
static int kept_errno(int r)
{
	switch (r) {
	case CACHE_KEPT_INVALID:
		return -EINVAL;
	case CACHE_KEPT_DUPLICATE:
		return -EEXIST;
	case CACHE_KEPT_TOO_BIG:
		return -EFBIG;
	default:
		return 0;
	}
}

int cache_in_txn(struct cache *c, int (*fn)(struct cache *, void *), void *arg, int *committed)
{
	int r;

	if (committed)
		*committed = 0;
	pthread_mutex_lock(&c->api_lock);
	r = cache_db_begin(c->db);
	if (!r) {
		int kept;

		r = fn(c, arg);
		kept = kept_errno(r);
		if (r && !kept) {
			cache_db_rollback(c->db);
		} else if (!(r = cache_db_commit(c->db))) {
			r = kept;
			if (committed)
				*committed = 1;
		}
	}
	pthread_mutex_unlock(&c->api_lock);
	if (!r)
		wake_sync(c);
	return r;
}

struct op_args {
	uint64_t parent, newparent, ino;
	const char *name, *newname, *target;
	enum cache_kind kind;
	const void *data;
	size_t len;
	int64_t mtime_ns;
	unsigned flags;
	const char *loaded; /* cache_write_loaded's */
	struct vcard_error *err;
	struct cache_attr *out;
	struct events ev; /* told once committed (an import's files) */
};

static int do_create(struct cache *c, void *arg)
{
	struct op_args *a = arg;
	sqlite3 *db = c->db;
	struct node p, n;
	int kind = a->kind, r;
	int64_t now = cache_now_ns();

	if ((r = node_get(db, (int64_t)a->parent, &p)))
		return r;
	if (!is_dir(p.kind))
		return -ENOTDIR;
	if (!*a->name || strlen(a->name) > 255 || strchr(a->name, '/'))
		return -EINVAL;
	if ((r = node_find(db, (int64_t)a->parent, a->name, &n)) != -ENOENT)
		return r ? r : -EEXIST;
	if (kind == CACHE_FOLDER || kind == CACHE_SCRATCH_DIR)
		kind = p.kind == CACHE_FOLDER && a->name[0] != '.' ? CACHE_FOLDER
								   : CACHE_SCRATCH_DIR;
	r = cache_db_run(
		db,
		"INSERT INTO nodes(parent, name, kind, mtime_ns, size, data, chosen) VALUES(?, ?, "
		"?, ?, ?, ?, 1)",
		"itiiib", (int64_t)a->parent, a->name, (int64_t)kind, now,
		(int64_t)(a->target ? strlen(a->target) : 0), a->target ? a->target : "",
		a->target ? strlen(a->target) : 0);
	if (r)
		return r;
	n.ino = sqlite3_last_insert_rowid(db);
	if (kind == CACHE_FOLDER) {
		if ((r = cache_db_run(db, "INSERT INTO folders(ino) VALUES(?)", "i", n.ino)) ||
		    (r = cache_outbox_add(db, OP_FOLDER_CREATE, 0, n.ino, NULL, 0)))
			return r;
	}
	if (a->out && !(r = node_get(db, n.ino, &n)))
		attr_of(&n, a->out);
	return r;
}

int cache_create(struct cache *c, uint64_t parent, const char *name, enum cache_kind kind,
		 const char *target, struct cache_attr *out)
{
	struct op_args a = {
		.parent = parent, .name = name, .kind = kind, .target = target, .out = out};

	if (kind == CACHE_SYMLINK && !target)
		return -EINVAL;
	return cache_in_txn(c, do_create, &a, NULL);
}

/* do_write's body; *prev is the caller's to free. */
static int write_file(struct cache *c, struct op_args *a, struct vcard **prev)
{
	sqlite3 *db = c->db;
	struct vcard **cards = NULL;
	size_t ncards = 0;
	struct vcard_error e;
	struct node n, p;
	char why[160];
	int r;

	if ((r = node_get(db, (int64_t)a->ino, &n)))
		return r;
	if (n.kind != CACHE_FILE)
		return is_dir(n.kind) ? -EISDIR : -EINVAL;
	if ((r = node_get(db, n.parent, &p)))
		return r;
	/* Local edits the file holds, merged with what replaces them. */
	if (n.cid)
		*prev = written_card(db, n.ino);
	if ((r = cache_db_run(
		     db,
		     "UPDATE nodes SET data = ?, size = ?, mtime_ns = ?, written = 1, loaded = ? "
		     "WHERE ino = ?",
		     "biiti", a->data, a->len, (int64_t)a->len,
		     a->mtime_ns ? a->mtime_ns : cache_now_ns(), a->loaded, n.ino)))
		return r;
	if (p.kind != CACHE_FOLDER || !cache_is_vcf_name(n.name))
		return 0; /* a scratch file */
	r = vcard_parse(a->data, a->len, &cards, &ncards, &e);
	if (!r && ncards == 1)
		r = cache_tree_card_loaded(db, n.ino, cards[0]);
	if (r == -EINVAL) {
		if (a->err)
			*a->err = e;
		cache_error(db, n.name, "not a valid vCard, kept here and not sent: %s", e.msg);
		r = cache_db_run(db, "UPDATE nodes SET draft = 1 WHERE ino = ?", "i", n.ino);
		return r ? r : CACHE_KEPT_INVALID;
	}
	if (!r)
		cache_repairs(db, n.name, cards, ncards);
	if (!r && ncards == 1 && photo_fits(cards[0], why, sizeof(why))) {
		cache_error(db, n.name, "%s: kept here as a local draft, not sent", why);
		r = cache_db_run(db, "UPDATE nodes SET draft = 1 WHERE ino = ?", "i", n.ino);
		vcard_free_all(cards, ncards);
		return r ? r : CACHE_KEPT_TOO_BIG;
	}
	/* A flag Outlook would refuse (a due date without a start date) is
	 * refused here, as an invalid card is: nothing of it is sent. */
	if (!r && ncards == 1 &&
	    (r = flag_refused(c, db, n.cid, cards[0], n.name,
			      "kept here as a local draft, not sent", a->err)) == -EINVAL) {
		r = cache_db_run(db, "UPDATE nodes SET draft = 1 WHERE ino = ?", "i", n.ino);
		vcard_free_all(cards, ncards);
		return r ? r : CACHE_KEPT_INVALID;
	}
	if (!r && ncards > 1)
		r = import_cards(c, db, &n, p.ino, cards, ncards, &a->ev);
	else if (!r &&
		 !(r = cache_db_run(db, "UPDATE nodes SET draft = 0 WHERE ino = ?", "i", n.ino)))
		r = commit_contact(c, db, &n, p.ino, cards[0], *prev, &a->ev);
	vcard_free_all(cards, ncards);
	return r;
}

static int do_write(struct cache *c, void *arg)
{
	struct vcard *prev = NULL;
	int r = write_file(c, arg, &prev);

	vcard_free(prev);
	return r;
}

int cache_write(struct cache *c, uint64_t ino, const void *data, size_t len, int64_t mtime_ns,
		struct vcard_error *err)
{
	return cache_write_loaded(c, ino, data, len, mtime_ns, NULL, err);
}

int cache_write_loaded(struct cache *c, uint64_t ino, const void *data, size_t len,
		       int64_t mtime_ns, const char *loaded, struct vcard_error *err)
{
	struct op_args a = {.ino = ino,
			    .data = data,
			    .len = len,
			    .mtime_ns = mtime_ns,
			    .loaded = loaded && *loaded ? loaded : NULL,
			    .err = err};
	int committed, r;

	if (err)
		memset(err, 0, sizeof(*err));
	r = cache_in_txn(c, do_write, &a, &committed);
	cache_events_flush(c, &a.ev, committed);
	return r;
}

static int do_set_mtime(struct cache *c, void *arg)
{
	struct op_args *a = arg;
	int64_t one = 0;
	int r = cache_db_int(c->db, &one, "SELECT 1 FROM nodes WHERE ino = ?", "i",
			     (int64_t)a->ino);

	if (r <= 0)
		return r ? r : -ENOENT;
	return cache_db_run(c->db, "UPDATE nodes SET mtime_ns = ? WHERE ino = ?", "ii", a->mtime_ns,
			    (int64_t)a->ino);
}

int cache_set_mtime(struct cache *c, uint64_t ino, int64_t mtime_ns)
{
	struct op_args a = {.ino = ino, .mtime_ns = mtime_ns};

	return cache_in_txn(c, do_set_mtime, &a, NULL);
}

/* Remove node n from the tree, with what that means on the server. */
static int remove_node(struct cache *c, sqlite3 *db, const struct node *n)
{
	int64_t children = 0;
	int r;

	if (is_dir(n->kind)) {
		if (n->ino == CACHE_ROOT_INO)
			return -EBUSY;
		if ((r = cache_db_int(db, &children, "SELECT count(*) FROM nodes WHERE parent = ?",
				      "i", n->ino)) < 0)
			return r;
		if (children)
			return -ENOTEMPTY;
	}
	if (n->kind == CACHE_FOLDER) {
		int64_t waiting = 0;

		/* A folder whose create has not left is simply forgotten. */
		if ((r = cache_db_int(
			     db, &waiting,
			     "SELECT seq FROM outbox WHERE folder = ? AND op = ? AND inflight = "
			     "0 AND "
			     "sent = 0",
			     "ii", n->ino, (int64_t)OP_FOLDER_CREATE)) < 0)
			return r;
		if (r == 1) {
			char key[32];

			snprintf(key, sizeof(key), "f%lld", (long long)n->ino);
			if ((r = cache_db_run(db, "DELETE FROM outbox WHERE key = ?", "t", key)) ||
			    (r = cache_db_run(db, "DELETE FROM folders WHERE ino = ?", "i",
					      n->ino)))
				return r;
		} else if ((r = cache_outbox_add(db, OP_FOLDER_DELETE, 0, n->ino, NULL, 0))) {
			return r;
		}
	}
	if (n->cid && (r = contact_gone(c, db, n->cid)))
		return r;
	return cache_db_run(db, "DELETE FROM nodes WHERE ino = ?", "i", n->ino);
}

static int do_unlink(struct cache *c, void *arg)
{
	struct op_args *a = arg;
	struct node n;
	int r = node_find(c->db, (int64_t)a->parent, a->name, &n);

	return r ? r : remove_node(c, c->db, &n);
}

int cache_unlink(struct cache *c, uint64_t parent, const char *name)
{
	struct op_args a = {.parent = parent, .name = name};

	return cache_in_txn(c, do_unlink, &a, NULL);
}

/* Move contact cid (shown by a file now in folder to) out of folder from.
 * followup: the flag is mapped, and the copy made in the new folder must
 * get it too (a create carries none). */
static int contact_move(sqlite3 *db, int64_t cid, int64_t from, int64_t to, int followup)
{
	int64_t has_id = 0, seq = 0;
	char key[33];
	int r;

	if ((r = cache_db_run(db, "UPDATE contacts SET folder = ? WHERE cid = ?", "ii", to, cid)))
		return r;
	if ((r = cache_db_int(db, &has_id, "SELECT id IS NOT NULL FROM contacts WHERE cid = ?", "i",
			      cid)) < 0)
		return r;
	/* Not on the server yet, and its create has not left: it is created
	 * where it is when it does. */
	if (!has_id && waiting_entry(db, OP_CREATE, cid) > 0)
		return 0;
	/* A move that has not begun keeps its source: A -> B -> C is A -> C,
	 * and A -> B -> A is nothing. */
	if ((r = cache_db_int(
		     db, &seq,
		     "SELECT seq FROM outbox WHERE cid = ? AND op = ? AND inflight = 0 AND stage = "
		     "? AND sent = 0",
		     "iii", cid, (int64_t)OP_MOVE, (int64_t)STAGE_SEND)) < 0)
		return r;
	if (r == 1) {
		int64_t src = 0;

		if ((r = cache_db_int(db, &src, "SELECT folder FROM outbox WHERE seq = ?", "i",
				      seq)) < 0)
			return r;
		if (src == to)
			return cache_db_run(db, "DELETE FROM outbox WHERE seq = ?", "i", seq);
		return 0;
	}
	/* The POST of a move carries the contact's client key, by which the
	 * lookup after a lost answer finds this copy. A contact that came from
	 * the server has none yet: with an empty key the lookup took the first
	 * contact of the folder that had one too (another one moved there). */
	cache_new_key(key);
	if ((r = cache_db_run(db,
			      "UPDATE contacts SET ckey = ? WHERE cid = ? AND (ckey IS NULL OR ckey = '')",
			      "ti", key, cid)))
		return r;
	if ((r = cache_outbox_add(db, OP_MOVE, cid, from, NULL, 0)))
		return r;
	return followup ? cache_outbox_add_flag(db, cid, to) : 0;
}

/*
 * The checks of rename(2): a->name in a->parent is *src, whose parent is
 * *op; the new parent *np must be a directory, a->newname a name; the
 * target, when there is one (*dst, *has_dst), of the same type as src and
 * replaceable; no directory into itself. 0 to go on, 1 when the target is
 * src itself (nothing to do), or -errno.
 */
static int rename_check(sqlite3 *db, const struct op_args *a, struct node *src, struct node *np,
			struct node *op, struct node *dst, int *has_dst)
{
	int r;

	if ((r = node_find(db, (int64_t)a->parent, a->name, src)))
		return r;
	if ((r = node_get(db, (int64_t)a->newparent, np)) || (r = node_get(db, src->parent, op)))
		return r;
	if (!is_dir(np->kind))
		return -ENOTDIR;
	if (!*a->newname || strlen(a->newname) > 255 || strchr(a->newname, '/'))
		return -EINVAL;
	r = node_find(db, (int64_t)a->newparent, a->newname, dst);
	if (r && r != -ENOENT)
		return r;
	*has_dst = !r;
	if (*has_dst && dst->ino == src->ino)
		return 1;
	if (*has_dst && (a->flags & CACHE_RENAME_NOREPLACE))
		return -EEXIST;
	if (*has_dst && is_dir(dst->kind) && !is_dir(src->kind))
		return -EISDIR;
	if (*has_dst && !is_dir(dst->kind) && is_dir(src->kind))
		return -ENOTDIR;
	/* No directory into itself. */
	for (int64_t up = np->ino, depth = 0; is_dir(src->kind) && up && depth < 4096; depth++) {
		struct node x;

		if (up == src->ino)
			return -EINVAL;
		if ((r = node_get(db, up, &x)))
			return r;
		up = x.parent;
	}
	return 0;
}

/* Directory src renamed to a->newname in np, replacing dst (NULL: none). */
static int rename_dir(struct cache *c, sqlite3 *db, const struct op_args *a, const struct node *src,
		      const struct node *np, const struct node *dst)
{
	int folder_after = np->kind == CACHE_FOLDER && a->newname[0] != '.';
	int64_t seq = 0;
	int r;

	/* Graph renames folders; a folder that changes parent, or a
	 * directory that changes between folder and scratch, is
	 * copied by the caller (mv does so on EXDEV). */
	if ((src->kind == CACHE_FOLDER) != folder_after ||
	    (src->kind == CACHE_FOLDER && np->ino != src->parent))
		return -EXDEV;
	if (dst && (r = remove_node(c, db, dst)))
		return r;
	if ((r = cache_db_run(db, "UPDATE nodes SET parent = ?, name = ?, chosen = 1 WHERE ino = ?",
			      "iti", np->ino, a->newname, src->ino)))
		return r;
	if (src->kind != CACHE_FOLDER || !strcmp(a->name, a->newname))
		return 0;
	/* A create or rename that has not left sends the name then. */
	if ((r = cache_db_int(db, &seq,
			      "SELECT seq FROM outbox WHERE folder = ? AND op IN (?, ?) AND "
			      "inflight = 0 AND sent = 0",
			      "iii", src->ino, (int64_t)OP_FOLDER_CREATE,
			      (int64_t)OP_FOLDER_RENAME)) < 0)
		return r;
	r = r ? 0 : cache_outbox_add(db, OP_FOLDER_RENAME, 0, src->ino, NULL, 0);
	return r < 0 ? r : 0;
}

/*
 * A scratch file src renamed onto a .vcf name in folder np (replacing dst,
 * NULL: none) becomes a contact only if it holds one: its cards in *cards,
 * *ncards, and *card when there is exactly one, which must fit, carry a
 * flag Outlook takes and be no second copy of a contact of np. 0, a
 * refusal (CACHE_KEPT_INVALID, CACHE_KEPT_TOO_BIG: the error log says why)
 * or -errno.
 */
static int rename_scratch_card(struct cache *c, sqlite3 *db, struct op_args *a,
			       const struct node *src, const struct node *np,
			       const struct node *dst, struct vcard ***cards, size_t *ncards,
			       struct vcard **card)
{
	const struct vcard_prop *uidp;
	const char *uid;
	struct vcard_error e;
	sqlite3_stmt *st;
	char why[160];
	int64_t cid;
	int r;

	if ((r = cache_db_prepare(db, &st, "SELECT data FROM nodes WHERE ino = ?", "i", src->ino)))
		return r;
	if ((r = cache_db_step(st)) == 1)
		r = vcard_parse(sqlite3_column_blob(st, 0) ? sqlite3_column_blob(st, 0) : "",
				(size_t)sqlite3_column_bytes(st, 0), cards, ncards, &e);
	cache_db_release(st);
	if (!r && *ncards == 1)
		*card = (*cards)[0];
	if (r == -EINVAL) {
		if (a->err)
			*a->err = e;
		/* Nothing changes, so nothing to commit but the log. */
		cache_error(db, a->newname, "not a valid vCard, not renamed: %s", e.msg);
		return CACHE_KEPT_INVALID;
	}
	if (r || !*card)
		return r;
	if (photo_fits(*card, why, sizeof(why))) {
		cache_error(db, a->newname, "%s: not renamed", why);
		return CACHE_KEPT_TOO_BIG;
	}
	if ((r = flag_refused(c, db, 0, *card, a->newname, "not renamed", a->err)))
		return r == -EINVAL ? CACHE_KEPT_INVALID : r;
	uidp = vcard_find(*card, "UID");
	uid = uidp ? vcard_text(*card, uidp) : NULL;
	cid = reconcile(db, np->ino, uid);
	/* At a name the contact's file had: that contact. */
	if (!cid && !dst)
		cid = former_owner(db, np->ino, uid, src->ino, a->newname, &a->ev);
	/* Replacing the file that shows it is an edit (the target goes
	 * first); another file showing it is not. */
	if (cid)
		return cid < 0 ? (int)cid : 0;
	return refuse_duplicate(db, np->ino, uid, src->ino, dst ? dst->ino : 0, a->newname,
				"not renamed");
}

/* A contact moved into another folder np that already shows a contact
 * with its UID would be a second one there: -EEXIST (refuse_duplicate). */
static int rename_refuse_copy(sqlite3 *db, const struct op_args *a, const struct node *src,
			      const struct node *np, const struct node *dst)
{
	char uid[512] = "";
	sqlite3_stmt *st;
	int r;

	if ((r = cache_db_prepare(db, &st, "SELECT uid FROM contacts WHERE cid = ?", "i",
				  src->cid)))
		return r;
	if (cache_db_step(st) == 1 && sqlite3_column_text(st, 0))
		snprintf(uid, sizeof(uid), "%s", (const char *)sqlite3_column_text(st, 0));
	cache_db_release(st);
	return refuse_duplicate(db, np->ino, uid, src->ino, dst ? dst->ino : 0, a->newname,
				"not moved");
}

/* File src (in op) renamed to a->newname in np, replacing dst (NULL: none):
 * what it shows follows it (docs/cache.md, the table of changes). */
static int rename_file(struct cache *c, sqlite3 *db, struct op_args *a, struct node *src,
		       const struct node *np, const struct node *op, const struct node *dst)
{
	struct vcard **cards = NULL, *card = NULL, *prev = NULL;
	size_t ncards = 0;
	int src_vcf = op->kind == CACHE_FOLDER && cache_is_vcf_name(src->name);
	int dst_vcf = np->kind == CACHE_FOLDER && cache_is_vcf_name(a->newname);
	int r = 0;

	if (!src->cid && dst_vcf && !src_vcf)
		r = rename_scratch_card(c, db, a, src, np, dst, &cards, &ncards, &card);
	else if (src->cid && dst_vcf && np->ino != op->ino)
		r = rename_refuse_copy(db, a, src, np, dst);
	if (r)
		goto out;
	/* The replaced file's local edits, merged with what replaces them. */
	if (dst && dst->cid && card)
		prev = written_card(db, dst->ino);
	if (dst && (r = remove_node(c, db, dst)))
		goto out;
	if ((src->cid && (r = name_left(db, op->ino, src->name, src->cid))) ||
	    (r = cache_db_run(db, "UPDATE nodes SET parent = ?, name = ?, chosen = 1 WHERE ino = ?",
			      "iti", np->ino, a->newname, src->ino)))
		goto out;
	src->parent = np->ino;
	snprintf(src->name, sizeof(src->name), "%s", a->newname);
	if (src->cid && dst_vcf) {
		if (np->ino != op->ino)
			r = contact_move(db, src->cid, op->ino, np->ino, c->cfg.followup);
	} else if (src->cid) {
		/* Out of the folders, or to a scratch name: the file stays,
		 * the contact goes (and comes back by UID within the grace
		 * period). */
		r = contact_gone(c, db, src->cid);
		if (!r)
			r = cache_db_run(db, "UPDATE nodes SET written = 1 WHERE ino = ?", "i",
					 src->ino);
	} else if (card) {
		r = commit_contact(c, db, src, np->ino, card, prev, &a->ev);
	} else if (cards) {
		r = import_cards(c, db, src, np->ino, cards, ncards, &a->ev);
	}
out:
	vcard_free(prev);
	vcard_free_all(cards, ncards);
	return r;
}

static int do_rename(struct cache *c, void *arg)
{
	struct op_args *a = arg;
	struct node src, dst, np, op;
	int has_dst = 0;
	int r = rename_check(c->db, a, &src, &np, &op, &dst, &has_dst);

	if (r)
		return r < 0 ? r : 0;
	if (is_dir(src.kind))
		return rename_dir(c, c->db, a, &src, &np, has_dst ? &dst : NULL);
	return rename_file(c, c->db, a, &src, &np, &op, has_dst ? &dst : NULL);
}

int cache_rename(struct cache *c, uint64_t parent, const char *name, uint64_t newparent,
		 const char *newname, unsigned flags, struct vcard_error *err)
{
	struct op_args a = {.parent = parent,
			    .name = name,
			    .newparent = newparent,
			    .newname = newname,
			    .flags = flags,
			    .err = err};

	int committed, r;

	if (err)
		memset(err, 0, sizeof(*err));
	r = cache_in_txn(c, do_rename, &a, &committed);
	cache_events_flush(c, &a.ev, committed);
	return r;
}

int cache_outbox_add_request(sqlite3 *db, const char *method, const char *path, const char *body)
{
	cJSON *o = cJSON_CreateObject();
	char *text = NULL;
	int r = -ENOMEM;

	if (o && cJSON_AddStringToObject(o, "method", method) &&
	    cJSON_AddStringToObject(o, "path", path) &&
	    (!body || cJSON_AddStringToObject(o, "body", body)) &&
	    (text = cJSON_PrintUnformatted(o)))
		r = cache_outbox_add(db, OP_REQUEST, 0, 0, text, 0);
	free(text);
	cJSON_Delete(o);
	return r;
}

static int do_request(struct cache *c, void *arg)
{
	struct op_args *a = arg;

	return cache_outbox_add_request(c->db, a->name, a->newname, a->target);
}

int cache_enqueue_request(struct cache *c, const char *method, const char *path, const char *body)
{
	struct op_args a = {.name = method, .newname = path, .target = body};

	return cache_in_txn(c, do_request, &a, NULL);
}

/* ---- rendering a server version into the tree ------------------------------------- */

/* Seconds since the epoch of an ISO 8601 UTC time, as nanoseconds; 0 when
 * it does not parse. */
static int64_t iso_ns(const char *s)
{
	struct tm tm = {0};
	double frac = 0;
	const char *dot;
	time_t t;

	if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
			 &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
		return 0;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	t = timegm(&tm);
	if ((dot = strchr(s, '.')) != NULL)
		frac = strtod(dot, NULL);
	return (int64_t)t * 1000000000 + (int64_t)(frac * 1e9);
}

/* Whether name is want or a numbered form of it ("Jane Doe (2).vcf"). */
static int same_stem(const char *name, const char *want)
{
	size_t wl = strlen(want) - 4, nl = strlen(name);

	if (!strcmp(name, want))
		return 1;
	if (nl < wl + 8 || strncmp(name, want, wl) || strncmp(name + wl, " (", 2) ||
	    strcmp(name + nl - 5, ").vcf"))
		return 0;
	for (size_t i = wl + 2; i < nl - 5; i++)
		if (name[i] < '0' || name[i] > '9')
			return 0;
	return 1;
}

/* Whether the bytes of a file say what the server's version says (so a
 * file as a person wrote it is kept, not replaced by our rendering); flag:
 * the follow-up flag stored, when it is mapped. */
static int says_the_same(const struct cache *c, const cJSON *server, const cJSON *flag,
			 const void *data, size_t len)
{
	struct vcard *card = NULL;
	struct vcard_error e;
	cJSON *patch = NULL, *ext = NULL, *mine = NULL;
	int same = 0;

	if (!data || vcard_parse_one(data, len, &card, &e))
		return 0;
	/* The flag as written counts when it is the same flag ("T09:00" for
	 * Graph's "T09:00:00.0000000"). */
	if (cache_card_flag(c, card, &mine, &e) || (mine && !vcard_followup_same(mine, flag)))
		goto out;
	/* A card written without a UID gets the one it has now (its Graph
	 * id): identity goes by UID (docs/design.md §2), and an editor that saves by
	 * writing a new file must carry it. */
	if (vcard_find(card, "UID") && !vcard_graph_diff(server, card, &patch, &ext, &e) && !ext &&
	    patch) {
		const cJSON *dn = cJSON_GetObjectItemCaseSensitive(patch, "displayName");

		same = cJSON_GetArraySize(patch) == 1 && dn &&
		       cJSON_Compare(dn, cJSON_GetObjectItemCaseSensitive(server, "displayName"),
				     1);
	}
out:
	cJSON_Delete(patch);
	cJSON_Delete(ext);
	cJSON_Delete(mine);
	vcard_free(card);
	return same;
}

/*
 * The server's version of the contact file n shows gives it the name want.
 * n is renamed when the server's display name changed since n's name was
 * settled (nodes.basis; a file rendered before there was one follows want
 * unless its name was chosen here), but not while a writer holds the name:
 * then the rename waits (names_due) until cache_sync_render finds it let go. A
 * name a writer chose stays while the display name is what it settled to.
 */
static int name_settle(struct cache *c, sqlite3 *db, struct node *n, const char *want,
		       struct events *ev)
{
	char basis[256] = "", name[256];
	int has_basis = 0, rename, r;
	sqlite3_stmt *st;

	if ((r = cache_db_prepare(db, &st, "SELECT basis FROM nodes WHERE ino = ?", "i", n->ino)))
		return r;
	if (cache_db_step(st) == 1 && sqlite3_column_text(st, 0)) {
		has_basis = 1;
		snprintf(basis, sizeof(basis), "%s", (const char *)sqlite3_column_text(st, 0));
	}
	cache_db_release(st);
	rename = (has_basis ? strcmp(basis, want) != 0 : !n->chosen) && !same_stem(n->name, want);
	if (rename && cache_names_held(c, (uint64_t)n->ino))
		return cache_db_run(db, "INSERT OR IGNORE INTO names_due(ino) VALUES(?)", "i",
				    n->ino);
	if (!rename)
		return has_basis && !strcmp(basis, want)
			       ? 0
			       : cache_db_run(db, "UPDATE nodes SET basis = ? WHERE ino = ?", "ti",
					      want, n->ino);
	if ((r = cache_tree_unique_name(db, (uint64_t)n->parent, want, name)) ||
	    (r = name_left(db, n->parent, n->name, n->cid)) ||
	    (r = cache_db_run(db, "UPDATE nodes SET name = ?, basis = ?, chosen = 0 WHERE ino = ?",
			      "tti", name, want, n->ino)))
		return r;
	cache_events_add(ev, CACHE_RENAMED, (uint64_t)n->ino, (uint64_t)n->parent, name,
			 (uint64_t)n->parent, n->name);
	snprintf(n->name, sizeof(n->name), "%s", name);
	return 0;
}

/* With -o followup, card shows flag (the stored one) and nothing else as
 * X-CONTACTFS-FOLLOWUP: a copy in the extension's extra (written while the
 * option was off) gives way to Graph's flag. A stored flag that is not a
 * followupFlag is logged and left out. */
static int render_flag(const struct cache *c, struct vcard *card, const cJSON *flag, const char *id)
{
	struct vcard_error e;
	int r;

	if (!c->cfg.followup)
		return 0;
	vcard_followup_remove(card);
	r = vcard_followup_add(card, flag, &e);
	if (r == -EINVAL) {
		log_warn("contact %s: its follow-up flag cannot be shown: %s", id ? id : "", e.msg);
		vcard_followup_remove(card);
		r = 0;
	}
	return r;
}

int cache_tree_render(struct cache *c, sqlite3 *db, int64_t cid, struct events *ev)
{
	sqlite3_stmt *st = NULL, *nd = NULL;
	cJSON *json = NULL, *flag = NULL;
	struct vcard *card = NULL;
	struct vcard_error e;
	struct buf out, tag;
	char want[256], name[256], uidbuf[512] = "";
	const char *ck;
	int64_t folder, mtime;
	struct node n;
	int has_node, r;

	buf_init(&out, (size_t)64 << 20);
	buf_init(&tag, 4096);
	if ((r = cache_db_prepare(
		     db, &st,
		     "SELECT folder, json, photo, photo_type, id, flag FROM contacts WHERE cid = ?",
		     "i", cid)))
		goto out;
	if ((r = cache_db_step(st)) != 1) {
		r = r < 0 ? r : 0; /* gone meanwhile */
		goto out;
	}
	folder = sqlite3_column_int64(st, 0);
	json = cJSON_Parse((const char *)sqlite3_column_text(st, 1));
	if (!json) {
		r = 0;
		goto done;
	}
	r = vcard_from_graph(json, sqlite3_column_blob(st, 2), (size_t)sqlite3_column_bytes(st, 2),
			     (const char *)sqlite3_column_text(st, 3), &card, &e);
	if (r == -EINVAL) {
		cache_error(db, (const char *)sqlite3_column_text(st, 4),
			    "the server's version of this contact cannot be shown: %s", e.msg);
		r = 0;
		goto done;
	}
	if (!r && sqlite3_column_text(st, 5))
		flag = cJSON_Parse((const char *)sqlite3_column_text(st, 5));
	if (!r)
		r = render_flag(c, card, flag, (const char *)sqlite3_column_text(st, 4));
	if (!r && (ck = cache_jstr(json, "changeKey")) != NULL && *ck) {
		/* Which version this is: a card written back from it is
		 * merged against it. */
		struct vcard_prop *vp = vcard_add(card, NULL, VCARD_VERSION_PROP);
		char ph[16];

		photo_tag(sqlite3_column_blob(st, 2), (size_t)sqlite3_column_bytes(st, 2), ph);
		if (!vp || buf_printf(&tag, "%s.%s", ck, ph) || vcard_set_text(card, vp, tag.data))
			r = -ENOMEM;
	}
	if (r || (r = vcard_write(card, c->cfg.version ? c->cfg.version : VCARD_V30, &out)))
		goto out;
	{
		const struct vcard_prop *u = vcard_find(card, "UID");
		const char *t = u ? vcard_text(card, u) : NULL;

		snprintf(uidbuf, sizeof(uidbuf), "%s", t ? t : "");
	}
	mtime = iso_ns(cJSON_GetStringValue(
		cJSON_GetObjectItemCaseSensitive(json, "lastModifiedDateTime")));
	if (!mtime)
		mtime = cache_now_ns();
	cache_contact_name(json, want, sizeof(want));
	r = node_of_contact(db, cid, &n);
	if (r && r != -ENOENT)
		goto out;
	has_node = !r;
	if (!has_node) {
		if ((r = cache_tree_unique_name(db, (uint64_t)folder, want, name)) ||
		    (r = cache_db_run(
			     db,
			     "INSERT INTO nodes(parent, name, kind, mtime_ns, size, data, cid, "
			     "basis) VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
			     "itiiibit", folder, name, (int64_t)CACHE_FILE, mtime, (int64_t)out.len,
			     out.data, out.len, cid, want)))
			goto out;
		cache_events_add(ev, CACHE_ADDED, (uint64_t)sqlite3_last_insert_rowid(db),
				 (uint64_t)folder, name, 0, NULL);
		goto done;
	}
	/* Moved on the server (Outlook can): the file follows. */
	if (n.parent != folder) {
		if ((r = cache_tree_unique_name(db, (uint64_t)folder, n.chosen ? n.name : want,
						name)) ||
		    (r = cache_db_run(db, "UPDATE nodes SET parent = ?, name = ? WHERE ino = ?",
				      "iti", folder, name, n.ino)))
			goto out;
		cache_events_add(ev, CACHE_RENAMED, (uint64_t)n.ino, (uint64_t)folder, name,
				 (uint64_t)n.parent, n.name);
		n.parent = folder;
		snprintf(n.name, sizeof(n.name), "%s", name);
		if ((r = cache_db_run(db, "UPDATE nodes SET basis = ? WHERE ino = ?", "ti", want,
				      n.ino)))
			goto out;
	} else if ((r = name_settle(c, db, &n, want, ev))) {
		goto out;
	}
	if (n.written) {
		if ((r = cache_db_prepare(db, &nd, "SELECT data FROM nodes WHERE ino = ?", "i",
					  n.ino)))
			goto out;
		if (cache_db_step(nd) == 1 &&
		    says_the_same(c, json, flag, sqlite3_column_blob(nd, 0),
				  (size_t)sqlite3_column_bytes(nd, 0)))
			/* The bytes as written stay, byte for byte: their
			 * X-CONTACTFS-VERSION names the version they were
			 * made from, and the version our write made of it
			 * is found from there (cache_card_base). */
			goto done;
	}
	if ((r = cache_db_run(
		     db,
		     "UPDATE nodes SET data = ?, size = ?, mtime_ns = ?, written = 0, draft = 0, "
		     "loaded = NULL WHERE ino = ?",
		     "biii", out.data, out.len, (int64_t)out.len, mtime, n.ino)))
		goto out;
	cache_events_add(ev, CACHE_CHANGED, (uint64_t)n.ino, (uint64_t)n.parent, n.name, 0, NULL);
done:
	r = cache_db_run(
		db,
		"UPDATE contacts SET render = 0, uid = coalesce(nullif(?, ''), uid) WHERE cid = ?",
		"ti", uidbuf, cid);
out:
	cache_db_release(st);
	cache_db_release(nd);
	cJSON_Delete(json);
	cJSON_Delete(flag);
	vcard_free(card);
	buf_release(&out);
	buf_release(&tag);
	return r;
}
