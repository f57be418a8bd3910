/*
 * The outbox, sending side (docs/design.md §4-8; the requests: docs/graph.md).
 *
 * A pass repeats: pick the sendable entries (the first of each key, due,
 * not in flight), decide each one's next request from the state as it is
 * now, mark them in flight in one transaction (a create also "sent", so a
 * crash or a lost answer leads to a lookup by client key before sending
 * again), send (JSON requests together in $batch, photos one by one), and
 * apply the answers in one transaction. No transaction is open while a
 * request is on the wire.
 */
#include "cache_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A pass sends at most one round of requests sent alone (photos, lookups),
 * each on a slot, and then a $batch of JSON requests. */
#define PICK_JSON GRAPH_BATCH_MAX
#define PICK_ALONE GRAPH_MAX_IN_FLIGHT
#define PICK_MAX (PICK_JSON + PICK_ALONE)
#define LOOKUP_SELECT                                                                  \
	"/contacts?$select=id&$top=1000&$filter=Extensions/any(f:f/id%20eq%20'" EXT_ID \
	"')&$expand=Extensions($filter=id%20eq%20'" EXT_ID "')"

enum plan {
	PLAN_WAIT,   /* not now (a folder without its id yet) */
	PLAN_DONE,   /* nothing left to send: the entry is finished */
	PLAN_JSON,   /* one JSON request, batchable */
	PLAN_PHOTO,  /* PUT of the photo bytes */
	PLAN_LOOKUP, /* a create that may have reached the server: look it up */
};

struct entry {
	int64_t seq, cid, folder;
	int op;
	enum stage stage;
	int sent, attempts, parked;
	char *arg;

	enum plan plan;
	char method[8];
	char url[1024];
	char if_match[200];
	char base[512]; /* the contact's folder, "" for the default one */
	cJSON *body;
	struct buf photo;
	char photo_type[64];
	char name[256]; /* the file, for messages */
	char key[40];	/* client key of a create */
	char token[300]; /* the version the file named when planned ("" none) */

	/* the answer */
	int err; /* -errno when no answer came */
	int status;
	char code[64];
	cJSON *response;
};

static void entry_release(struct entry *e)
{
	free(e->arg);
	cJSON_Delete(e->body);
	cJSON_Delete(e->response);
	buf_release(&e->photo);
}

/* ---- planning ------------------------------------------------------------------------- */

struct contact_row {
	char *id, *json, *ckey, *change_key;
	int64_t folder;
	int gone;
};

static void contact_row_release(struct contact_row *k)
{
	free(k->id);
	free(k->json);
	free(k->ckey);
	free(k->change_key);
}

static int contact_row_get(sqlite3 *db, int64_t cid, struct contact_row *k)
{
	sqlite3_stmt *st;
	int r;

	memset(k, 0, sizeof(*k));
	if ((r = cache_db_prepare(
		     db, &st,
		     "SELECT id, json, ckey, change_key, folder, gone FROM contacts WHERE cid = ?",
		     "i", cid)))
		return r;
	r = cache_db_step(st);
	if (r == 1) {
		k->id = cache_db_strdup(st, 0);
		k->json = cache_db_strdup(st, 1);
		k->ckey = cache_db_strdup(st, 2);
		k->change_key = cache_db_strdup(st, 3);
		k->folder = sqlite3_column_int64(st, 4);
		k->gone = sqlite3_column_int(st, 5);
	}
	cache_db_release(st);
	return r == 1 ? 0 : r == 0 ? -ENOENT : r;
}

/*
 * The card in the file that shows cid (and the file's name), or -ENOENT.
 * With -o followup the card comes without its X-CONTACTFS-FOLLOWUP (the
 * v1.0 fields and the extension never carry the flag) and *flag, when flag
 * is not NULL, is the flag it had; a property that does not read stays in
 * the card as an unknown one, and *flag is NULL. Without, *flag is NULL.
 */
static int file_card(struct cache *c, sqlite3 *db, int64_t cid, struct vcard **card, cJSON **flag,
		     char *name, size_t size)
{
	struct vcard_error e;
	sqlite3_stmt *st;
	cJSON *f = NULL;
	int r;

	*card = NULL;
	if (flag)
		*flag = NULL;
	int64_t ino = 0;

	if ((r = cache_db_prepare(db, &st, "SELECT data, name, draft, ino FROM nodes WHERE cid = ?",
				  "i", cid)))
		return r;
	r = cache_db_step(st);
	if (r == 1) {
		snprintf(name, size, "%s", sqlite3_column_text(st, 1));
		ino = sqlite3_column_int64(st, 3);
		r = sqlite3_column_int(st, 2)
			    ? -ENOENT
			    : vcard_parse_one(
				      sqlite3_column_blob(st, 0) ? sqlite3_column_blob(st, 0) : "",
				      (size_t)sqlite3_column_bytes(st, 0), card, &e);
	} else if (r == 0) {
		r = -ENOENT;
	}
	cache_db_release(st);
	/* Written without its version line by a handle that loaded one. */
	if (!r && (r = cache_tree_card_loaded(db, ino, *card))) {
		vcard_free(*card);
		*card = NULL;
	}
	if (r)
		return r;
	r = cache_card_flag(c, *card, &f, &e);
	if (r == -EINVAL) {
		log_warn("%s: %s; it stays an unknown property", name, e.msg);
		r = 0;
	}
	if (r) {
		vcard_free(*card);
		*card = NULL;
	} else if (flag) {
		*flag = f;
		f = NULL;
	}
	cJSON_Delete(f);
	return r;
}

/* A create's body: the card, and our extension carrying the client key. */
static int create_body(const struct vcard *card, const char *key, cJSON **out)
{
	struct vcard_error e;
	cJSON *body = NULL, *exts, *x, *mine = NULL;
	int r = vcard_to_graph(card, &body, &e);

	*out = NULL;
	if (r)
		return r;
	exts = cJSON_GetObjectItemCaseSensitive(body, "extensions");
	if (!exts) {
		exts = cJSON_AddArrayToObject(body, "extensions");
		if (!exts)
			goto nomem;
	}
	cJSON_ArrayForEach(x, exts)
	{
		const char *n =
			cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(x, "extensionName"));

		if (n && !strcasecmp(n, VCARD_EXTENSION_NAME))
			mine = x;
	}
	if (!mine) {
		mine = cJSON_CreateObject();
		if (!mine || !cJSON_AddItemToArray(exts, mine) ||
		    !cJSON_AddStringToObject(mine, "@odata.type",
					     "microsoft.graph.openTypeExtension") ||
		    !cJSON_AddStringToObject(mine, "extensionName", VCARD_EXTENSION_NAME))
			goto nomem;
	}
	cJSON_DeleteItemFromObjectCaseSensitive(mine, "key");
	if (!cJSON_AddStringToObject(mine, "key", key))
		goto nomem;
	*out = body;
	return 0;
nomem:
	cJSON_Delete(body);
	return -ENOMEM;
}

static int plan_photo(struct entry *e, const struct vcard *card, const char *id)
{
	const struct vcard_prop *p = vcard_photo(card);

	if (!p)
		return PLAN_DONE;
	if (p->len >= GRAPH_PHOTO_MAX)
		return -EFBIG; /* refused where it was written; never sent */
	buf_init(&e->photo, (size_t)8 << 20);
	if (buf_add(&e->photo, p->data, p->len))
		return -ENOMEM;
	snprintf(e->photo_type, sizeof(e->photo_type), "%s",
		 p->mediatype ? p->mediatype : "image/jpeg");
	snprintf(e->url, sizeof(e->url), "%s/contacts/%s/photo/$value", e->base, id);
	snprintf(e->method, sizeof(e->method), "PUT");
	return PLAN_PHOTO;
}

static void set_json(struct entry *e, const char *method, cJSON *body, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void set_json(struct entry *e, const char *method, cJSON *body, const char *fmt, ...)
{
	va_list ap;

	snprintf(e->method, sizeof(e->method), "%s", method);
	va_start(ap, fmt);
	vsnprintf(e->url, sizeof(e->url), fmt, ap);
	va_end(ap);
	if (e->body != body)
		cJSON_Delete(e->body);
	e->body = body;
}

/*
 * The follow-up flag of the file (-o followup): a beta PATCH of it when it
 * differs from the flag stored, else nothing. The flag goes by
 * /contacts/{id}, whatever the folder: in beta that reaches any contact of
 * the mailbox, and the folder path failed there (concepts/known-issues.md).
 */
static int plan_flag(struct cache *c, sqlite3 *db, struct entry *e, const struct contact_row *k)
{
	struct vcard *card = NULL;
	struct vcard_error ve;
	cJSON *mine = NULL, *theirs = NULL, *body;
	int r;

	r = file_card(c, db, e->cid, &card, &mine, e->name, sizeof(e->name));
	vcard_free(card);
	if (r == -ENOENT || r == -EINVAL || !k->id || k->gone) {
		r = r && r != -ENOENT && r != -EINVAL ? r : PLAN_DONE;
		goto out;
	}
	if (r)
		goto out;
	if (!c->cfg.followup) {
		/* Queued on a mount with -o followup, found on one without:
		 * this mount sends nothing to beta. */
		cache_error(db, e->name,
			    "its follow-up flag was not sent: this mount runs without -o followup "
			    "(save the file again on a mount with it)");
		r = PLAN_DONE;
		goto out;
	}
	if (!mine) {
		cache_error(db, e->name, "its follow-up flag does not read: not sent");
		r = PLAN_DONE;
		goto out;
	}
	theirs = cache_flag_of(db, e->cid);
	if (vcard_followup_same(mine, theirs)) {
		r = PLAN_DONE;
		goto out;
	}
	if (vcard_followup_check(mine, &ve)) {
		/* Checked where the file was written; the stored flag has
		 * changed since, so this one is to be sent after all. */
		cache_error(db, e->name, "the follow-up flag cannot go to Outlook: %s; not sent",
			    ve.msg);
		r = PLAN_DONE;
		goto out;
	}
	if (!(body = vcard_followup_patch(mine))) {
		r = -ENOMEM;
		goto out;
	}
	set_json(e, "PATCH", body, GRAPH_BETA "/contacts/%s", k->id);
	r = PLAN_JSON;
out:
	cJSON_Delete(mine);
	cJSON_Delete(theirs);
	return r;
}

static int merge_versions(struct cache *c, sqlite3 *db, struct entry *e, const cJSON *base,
			  const cJSON *theirs, struct vcard *card, const cJSON *flag, int stale,
			  struct events *ev);

/*
 * The version card names as its base when that is not the cache's present
 * one but an older one it keeps (or the writer's last save, merged since):
 * *old is its JSON (the card was written from a buffer read before the
 * server changed). 0 with *old NULL when the card names the present
 * version, none, or one the cache no longer knows (tree.c told the error
 * log at the write).
 */
static int stale_base(sqlite3 *db, int64_t cid, struct vcard *card, cJSON **old)
{
	int r = cache_card_base(db, cid, card, 0, old);

	return r < 0 ? r : 0;
}

/*
 * Our own write made version to of contact cid out of version from: a card
 * naming from is based on to (cache_card_base). token is the version the
 * file named when the write was planned: a local state of the file on top
 * of from ("<from>+<n>") went with it, and so did the ones before it; one
 * made later, while the request was on its way, did not.
 */
static int own_step(sqlite3 *db, int64_t cid, const char *from, const char *to, const char *token)
{
	size_t len = from ? strlen(from) : 0;
	int r;

	if (!from || !to || !strcmp(from, to))
		return 0;
	if (token && !strncmp(token, from, len) && token[len] == '+' &&
	    (r = cache_db_run(
		     db,
		     "UPDATE versions SET ours_to = ? WHERE cid = ? AND ours_to IS NULL AND "
		     "substr(change_key, 1, length(?) + 1) = ? || '+' AND "
		     "CAST(substr(change_key, length(?) + 2) AS INTEGER) <= ?",
		     "tittti", to, cid, from, from, from,
		     (int64_t)strtoll(token + len + 1, NULL, 10))))
		return r;
	return cache_db_run(db, "UPDATE versions SET ours_to = ? WHERE cid = ? AND change_key = ?",
			    "tit", to, cid, from);
}

/* A create that was sent and never answered: look it up by client key
 * before sending it again. */
static int plan_lookup(sqlite3 *db, struct entry *e)
{
	sqlite3_stmt *st;

	if (!cache_db_prepare(db, &st, "SELECT name FROM nodes WHERE cid = ?", "i", e->cid)) {
		if (cache_db_step(st) == 1)
			snprintf(e->name, sizeof(e->name), "%s", sqlite3_column_text(st, 0));
		cache_db_release(st);
	}
	return PLAN_LOOKUP;
}

/* The POST of a create or a move (STAGE_SEND: card with our extension
 * carrying the client key), or its photo PUT (STAGE_PHOTO). */
static int plan_post(struct entry *e, const struct vcard *card, const struct contact_row *k)
{
	int r;

	if (e->stage == STAGE_PHOTO)
		return k->id ? plan_photo(e, card, k->id) : PLAN_DONE;
	if ((r = create_body(card, e->key, &e->body)))
		return r;
	set_json(e, "POST", e->body, "%s/contacts", e->base);
	return PLAN_JSON;
}

/* A read of the contact after a write that gave it a new change key
 * without returning it (STAGE_REFRESH). */
static int plan_refresh(struct entry *e, const struct contact_row *k)
{
	if (!k->id || k->gone)
		return PLAN_DONE;
	set_json(e, "GET", NULL, "%s/contacts/%s?$select=%s", e->base, k->id, VCARD_GRAPH_SELECT);
	return PLAN_JSON;
}

/* OP_DELETE: DELETE of the contact; one the server never had is done. */
static int plan_delete(struct entry *e, const struct contact_row *k)
{
	if (!k->id)
		return PLAN_DONE;
	set_json(e, "DELETE", NULL, "%s/contacts/%s", e->base, k->id);
	return PLAN_JSON;
}

/* OP_CREATE: POST of the file's card (STAGE_SEND), then its photo
 * (STAGE_PHOTO). */
static int plan_create(struct cache *c, sqlite3 *db, struct entry *e, const struct contact_row *k)
{
	struct vcard *card = NULL;
	int r;

	if (e->stage == STAGE_SEND && k->id)
		return PLAN_DONE; /* a lookup found it */
	if (e->stage == STAGE_SEND && e->sent)
		return plan_lookup(db, e);
	r = file_card(c, db, e->cid, &card, NULL, e->name, sizeof(e->name));
	if (r == -ENOENT || r == -EINVAL)
		r = PLAN_DONE; /* the file went meanwhile (its delete follows) */
	else if (!r)
		r = plan_post(e, card, k);
	vcard_free(card);
	return r;
}

/* A move's read (STAGE_OLD_READ) or DELETE (STAGE_OLD_COPY) of the old
 * copy, whose id the POST's answer left in arg; e->base is the old
 * folder's. */
static int plan_old_copy(struct entry *e)
{
	if (e->stage == STAGE_OLD_READ)
		set_json(e, "GET", NULL, "%s/contacts/%s?$expand=Extensions($filter=id%%20eq%%20'%s')",
			 e->base, e->arg ? e->arg : "", EXT_ID);
	else
		set_json(e, "DELETE", NULL, "%s/contacts/%s", e->base, e->arg ? e->arg : "");
	return e->arg ? PLAN_JSON : PLAN_DONE;
}

/* A move with no photo to carry (or no file any more): on to the delete of
 * the old copy, in the old folder. */
static int plan_move_skip_photo(sqlite3 *db, struct entry *e)
{
	int r;

	if ((r = cache_db_run(db, "UPDATE outbox SET stage = ? WHERE seq = ?", "ii",
			      (int64_t)STAGE_OLD_READ, e->seq)) ||
	    (r = cache_folder_base(db, e->folder, e->base, sizeof(e->base))))
		return r;
	e->stage = STAGE_OLD_READ;
	return plan_old_copy(e);
}

/* OP_MOVE from folder e->folder: POST in the contact's folder (STAGE_SEND),
 * its photo (STAGE_PHOTO), DELETE of the old copy (STAGE_OLD_COPY). */
static int plan_move(struct cache *c, sqlite3 *db, struct entry *e, const struct contact_row *k)
{
	struct vcard *card = NULL;
	int r;

	if (e->stage == STAGE_OLD_READ || e->stage == STAGE_OLD_COPY)
		return plan_old_copy(e);
	if (e->stage == STAGE_SEND && (!k->id || k->folder == e->folder))
		return PLAN_DONE; /* never created, or moved back */
	if (e->stage == STAGE_SEND && e->sent)
		return plan_lookup(db, e);
	r = file_card(c, db, e->cid, &card, NULL, e->name, sizeof(e->name));
	if (e->stage == STAGE_PHOTO &&
	    (r == -ENOENT || r == -EINVAL || (!r && !vcard_photo(card)))) {
		r = plan_move_skip_photo(db, e);
	} else if (r == -ENOENT || r == -EINVAL) {
		/* The file went meanwhile (its delete follows): a move leaves
		 * the contact where the server has it. */
		r = 0;
		if (e->stage == STAGE_SEND)
			r = cache_db_run(db, "UPDATE contacts SET folder = ? WHERE cid = ?", "ii",
					 e->folder, e->cid);
		r = r ? r : PLAN_DONE;
	} else if (!r) {
		r = plan_post(e, card, k);
	}
	vcard_free(card);
	return r;
}

/* OP_PHOTO: PUT of the file's photo. */
static int plan_photo_put(struct cache *c, sqlite3 *db, struct entry *e,
			  const struct contact_row *k)
{
	struct vcard *card = NULL;
	int r;

	if (!k->id)
		return PLAN_DONE;
	r = file_card(c, db, e->cid, &card, NULL, e->name, sizeof(e->name));
	if (r == -ENOENT || r == -EINVAL)
		r = PLAN_DONE;
	else if (!r)
		r = plan_photo(e, card, k->id);
	vcard_free(card);
	return r;
}

/*
 * An update's card written from an older version than the present one
 * (base): merged with the present one first, and *card read again: what is
 * left of it is sent. 0 to go on with *card, PLAN_DONE when nothing is left
 * to send (or no file), or -errno.
 */
static int plan_merge_stale(struct cache *c, sqlite3 *db, struct entry *e, const cJSON *base,
			    struct vcard **card, struct events *ev)
{
	struct vcard *again = NULL;
	cJSON *old = NULL, *flag = NULL;
	int r;

	if ((r = stale_base(db, e->cid, *card, &old)) || !old)
		return r;
	/* pick's transaction goes on past a failed plan: the merge is all or
	 * nothing within it. */
	if ((r = cache_db_run(db, "SAVEPOINT merge", NULL))) {
		cJSON_Delete(old);
		return r;
	}
	/* The file's own follow-up flag stays its own. */
	if (!file_card(c, db, e->cid, &again, &flag, e->name, sizeof(e->name)))
		vcard_free(again);
	r = merge_versions(c, db, e, old, base, *card, flag, 1, ev);
	cJSON_Delete(flag);
	cJSON_Delete(old);
	if (r < 0 && cache_db_run(db, "ROLLBACK TO merge", NULL))
		log_err("cache: undoing a failed merge failed");
	if (cache_db_run(db, "RELEASE merge", NULL) && r >= 0)
		r = -EIO;
	if (r)
		return r < 0 ? r : PLAN_DONE;
	vcard_free(*card);
	*card = NULL;
	r = file_card(c, db, e->cid, card, NULL, e->name, sizeof(e->name));
	return r == -ENOENT || r == -EINVAL ? PLAN_DONE : r;
}

/* An update's PATCH of the contact (STAGE_SEND): the diff, against the
 * change key of base. Takes *patch. */
static int plan_patch(struct entry *e, const struct contact_row *k, const cJSON *base,
		      struct vcard *card, cJSON **patch, const cJSON *ext)
{
	char photo[16];

	if (!cache_version_of(card, e->token, sizeof(e->token), photo, sizeof(photo)))
		e->token[0] = '\0';
	if (cache_patch_is_empty(*patch, base) && !ext)
		return PLAN_DONE;
	set_json(e, "PATCH", *patch, "%s/contacts/%s", e->base, k->id);
	*patch = NULL;
	snprintf(e->if_match, sizeof(e->if_match), "W/\"%s\"", k->change_key ? k->change_key : "");
	return PLAN_JSON;
}

/* An update's write of our extension: PATCH (STAGE_EXT_PATCH), or POST
 * when the contact had none (STAGE_EXT_POST). Takes *ext. */
static int plan_ext(struct entry *e, const struct contact_row *k, cJSON **ext)
{
	if (!*ext)
		return PLAN_DONE;
	if (e->stage == STAGE_EXT_PATCH)
		/* The URL names an extension by its short name
		 * (opentypeextension-update.md); $filter by its id. */
		set_json(e, "PATCH", *ext, "%s/contacts/%s/extensions/%s", e->base, k->id,
			 VCARD_EXTENSION_NAME);
	else
		set_json(e, "POST", *ext, "%s/contacts/%s/extensions", e->base, k->id);
	*ext = NULL;
	return PLAN_JSON;
}

/* OP_UPDATE: PATCH of vcard_graph_diff's fields with If-Match
 * (STAGE_SEND), then of the extension (STAGE_EXT_PATCH, STAGE_EXT_POST). */
static int plan_update(struct cache *c, sqlite3 *db, struct entry *e, const struct contact_row *k,
		       struct events *ev)
{
	struct vcard *card = NULL;
	struct vcard_error ve;
	cJSON *base = NULL, *patch = NULL, *ext = NULL;
	int r;

	if (!k->id)
		return PLAN_DONE;
	r = file_card(c, db, e->cid, &card, NULL, e->name, sizeof(e->name));
	if (r == -ENOENT || r == -EINVAL)
		return PLAN_DONE;
	if (r)
		return r;
	if (!(base = k->json ? cJSON_Parse(k->json) : NULL)) {
		r = -EIO;
		goto out;
	}
	/* Written from an older version: merged with the present one first;
	 * what is left is sent below. */
	if (e->stage == STAGE_SEND && (r = plan_merge_stale(c, db, e, base, &card, ev)))
		goto out;
	if ((r = vcard_graph_diff(base, card, &patch, &ext, &ve))) {
		cache_error(db, e->name, "cannot be sent: %s", ve.msg);
		goto out;
	}
	r = e->stage == STAGE_SEND ? plan_patch(e, k, base, card, &patch, ext)
				   : plan_ext(e, k, &ext);
out:
	cJSON_Delete(base);
	cJSON_Delete(patch);
	cJSON_Delete(ext);
	vcard_free(card);
	return r;
}

/* Decide what contact entry e sends now, from its op and stage. Returns a
 * plan or -errno. */
static int plan_contact(struct cache *c, sqlite3 *db, struct entry *e, struct events *ev)
{
	struct contact_row k;
	int64_t folder;
	int r;

	if ((r = contact_row_get(db, e->cid, &k)))
		return r == -ENOENT ? PLAN_DONE : r;
	/* A move's old copy is in the folder it came from (e->folder). */
	folder = e->op == OP_MOVE && (e->stage == STAGE_OLD_COPY || e->stage == STAGE_OLD_READ)
			 ? e->folder
			 : k.folder;
	/* Until a move has made the new copy, the contact (k.id) is where
	 * the move came from, and changes queued before it go there. */
	if (e->op != OP_MOVE && k.id &&
	    (r = cache_db_int(db, &folder,
			      "SELECT folder FROM outbox WHERE cid = ? AND op = ? AND stage = ? "
			      "ORDER BY seq LIMIT 1",
			      "iii", e->cid, (int64_t)OP_MOVE, (int64_t)STAGE_SEND)) < 0)
		goto out;
	r = cache_folder_base(db, folder, e->base, sizeof(e->base));
	if (r == -EAGAIN) {
		r = PLAN_WAIT;
		goto out;
	}
	if (r)
		goto out;
	snprintf(e->key, sizeof(e->key), "%s", k.ckey ? k.ckey : "");
	if (e->stage == STAGE_REFRESH && e->op != OP_DELETE) {
		r = plan_refresh(e, &k);
		goto out;
	}
	switch (e->op) {
	case OP_DELETE:
		r = plan_delete(e, &k);
		break;
	case OP_CREATE:
		r = plan_create(c, db, e, &k);
		break;
	case OP_MOVE:
		r = plan_move(c, db, e, &k);
		break;
	case OP_FLAG:
		r = plan_flag(c, db, e, &k);
		break;
	case OP_UPDATE:
		r = plan_update(c, db, e, &k, ev);
		break;
	case OP_PHOTO:
		r = plan_photo_put(c, db, e, &k);
		break;
	default:
		r = PLAN_DONE;
	}
out:
	contact_row_release(&k);
	return r;
}

/* {"displayName": name}, or NULL when out of memory. */
static cJSON *name_body(const char *name)
{
	cJSON *body = cJSON_CreateObject();

	if (body && !cJSON_AddStringToObject(body, "displayName", name)) {
		cJSON_Delete(body);
		body = NULL;
	}
	return body;
}

/* A folder's node name and its parent's Graph path ("" for the root, which
 * has no path of its own: /contactFolders). */
static int plan_folder(sqlite3 *db, struct entry *e)
{
	sqlite3_stmt *st;
	char *id = NULL, *name = NULL;
	int64_t parent = 0;
	int r;

	if ((r = cache_db_prepare(
		     db, &st,
		     "SELECT f.id, n.name, n.parent FROM folders f LEFT JOIN nodes n ON n.ino = "
		     "f.ino WHERE f.ino = ?",
		     "i", e->folder)))
		return r;
	r = cache_db_step(st);
	if (r == 1) {
		id = cache_db_strdup(st, 0);
		name = cache_db_strdup(st, 1);
		parent = sqlite3_column_int64(st, 2);
	}
	cache_db_release(st);
	if (r < 0)
		return r;
	snprintf(e->name, sizeof(e->name), "%s", name ? name : "");
	if (r == 0) {
		r = PLAN_DONE;
		goto out;
	}
	switch (e->op) {
	case OP_FOLDER_CREATE: {
		cJSON *body;

		if (id || !name) {
			r = PLAN_DONE;
			break;
		}
		r = cache_folder_base(db, parent, e->base, sizeof(e->base));
		if (r == -EAGAIN) {
			r = PLAN_WAIT;
			break;
		}
		if (r)
			break;
		if (!(body = name_body(name))) {
			r = -ENOMEM;
			break;
		}
		if (parent == CACHE_ROOT_INO)
			set_json(e, "POST", body, "/contactFolders");
		else
			set_json(e, "POST", body, "%s/childFolders", e->base);
		r = PLAN_JSON;
		break;
	}
	case OP_FOLDER_RENAME: {
		cJSON *body;

		if (!name) {
			r = PLAN_DONE;
			break;
		}
		if (!id) {
			r = PLAN_WAIT;
			break;
		}
		if (!(body = name_body(name))) {
			r = -ENOMEM;
			break;
		}
		set_json(e, "PATCH", body, "/contactFolders/%s", id);
		r = PLAN_JSON;
		break;
	}
	case OP_FOLDER_DELETE:
		if (!id) {
			r = cache_db_run(db, "DELETE FROM folders WHERE ino = ?", "i", e->folder);
			r = r ? r : PLAN_DONE;
			break;
		}
		set_json(e, "DELETE", NULL, "/contactFolders/%s", id);
		r = PLAN_JSON;
		break;
	default:
		r = PLAN_DONE;
	}
out:
	free(id);
	free(name);
	return r;
}

static int plan_request(struct entry *e)
{
	cJSON *o = e->arg ? cJSON_Parse(e->arg) : NULL;
	const char *m = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "method"));
	const char *p = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "path"));
	const char *b = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "body"));
	int r = PLAN_DONE;

	if (m && p && strlen(m) < sizeof(e->method)) {
		set_json(e, m, b ? cJSON_Parse(b) : NULL, "%s", p);
		snprintf(e->name, sizeof(e->name), "%s %s", m, p);
		r = PLAN_JSON;
	}
	cJSON_Delete(o);
	return r;
}

static int plan_entry(struct cache *c, sqlite3 *db, struct entry *e, struct events *ev)
{
	switch (e->op) {
	case OP_FOLDER_CREATE:
	case OP_FOLDER_RENAME:
	case OP_FOLDER_DELETE:
		return plan_folder(db, e);
	case OP_REQUEST:
		return plan_request(e);
	case OP_DROP_FILE:
		return PLAN_DONE; /* local: done when picked (see pick) */
	default:
		return plan_contact(c, db, e, ev);
	}
}

/* ---- picking ---------------------------------------------------------------------------- */

/* Finish entry e: delete it, and for a delete of a contact, the contact. */
static int entry_done(sqlite3 *db, const struct entry *e)
{
	int r = cache_db_run(db, "DELETE FROM outbox WHERE seq = ?", "i", e->seq);

	if (!r && e->op == OP_DELETE)
		r = cache_db_run(db, "DELETE FROM contacts WHERE cid = ? AND gone", "i", e->cid);
	if (!r && e->op == OP_FOLDER_DELETE)
		r = cache_db_run(db, "DELETE FROM folders WHERE ino = ?", "i", e->folder);
	return r;
}

/* An imported file of cards whose time is up goes (cache_tree_drop_imported). */
static int drop_file(sqlite3 *db, const struct entry *e, struct events *ev)
{
	cJSON *o = e->arg ? cJSON_Parse(e->arg) : NULL;
	const cJSON *ino = cJSON_GetObjectItemCaseSensitive(o, "ino");
	int r = cJSON_IsNumber(ino) ? cache_tree_drop_imported(db, (int64_t)ino->valuedouble, ev)
				    : 0;

	cJSON_Delete(o);
	return r;
}

/* Whether e's next request may be one sent alone (the PUT of a photo, the
 * lookup of a create by its client key), told before it is planned:
 * planning an update may merge, and is done only when there is room. */
static int may_go_alone(const struct entry *e)
{
	switch (e->op) {
	case OP_CREATE:
	case OP_MOVE:
		return e->stage == STAGE_PHOTO || (e->stage == STAGE_SEND && e->sent);
	case OP_PHOTO:
		return e->stage == STAGE_SEND;
	default:
		return 0;
	}
}

/*
 * Pick up to PICK_JSON entries with a JSON request and PICK_ALONE with one
 * sent alone, plan them, and mark in flight those with something to send.
 * *n: how many in v. A full batch goes with requests sent alone only when
 * they fill a round of slots: the batch holds every slot while it runs
 * (graph_batch), so a photo or two beside it cost a whole round trip of
 * their own, once per pass; they wait for the next pass instead, and with
 * *deferred set the next pass sends them whatever their number. Each
 * entry's key keeps its order: only the first entry of a key is picked.
 */
static int pick(struct cache *c, struct entry *v, size_t *n, size_t *finished, int64_t now,
		struct events *ev, int *deferred)
{
	sqlite3 *db = c->sdb;
	sqlite3_stmt *st = NULL;
	size_t k = 0, json = 0, alone = 0;
	int may_defer = !*deferred, r;

	*n = 0;
	if ((r = cache_db_begin(db)))
		return r;
	r = cache_db_prepare(
		db, &st,
		"SELECT seq, op, coalesce(cid, 0), coalesce(folder, 0), arg, stage, sent, "
		"attempts, parked FROM outbox o WHERE inflight = 0 AND not_before <= ? AND NOT "
		"EXISTS (SELECT 1 FROM outbox p WHERE p.key = o.key AND p.seq < o.seq) ORDER BY "
		"seq LIMIT 200",
		"i", now);
	*deferred = 0;
	while (!r && (json < PICK_JSON || alone < PICK_ALONE) && (r = cache_db_step(st)) == 1) {
		struct entry *e = &v[k];
		int plan;

		r = 0;
		memset(e, 0, sizeof(*e));
		buf_init(&e->photo, 0);
		e->seq = sqlite3_column_int64(st, 0);
		e->op = sqlite3_column_int(st, 1);
		e->cid = sqlite3_column_int64(st, 2);
		e->folder = sqlite3_column_int64(st, 3);
		e->arg = cache_db_strdup(st, 4);
		e->stage = sqlite3_column_int(st, 5);
		e->sent = sqlite3_column_int(st, 6);
		e->attempts = sqlite3_column_int(st, 7);
		e->parked = sqlite3_column_int(st, 8);
		if (may_go_alone(e) ? alone == PICK_ALONE : json == PICK_JSON) {
			entry_release(e); /* no room in this pass: planned in a later one */
			continue;
		}
		plan = plan_entry(c, db, e, ev);
		if (plan < 0) {
			log_err("cache: outbox entry %lld: %s", (long long)e->seq, strerror(-plan));
			entry_release(e);
			r = plan == -ENOMEM ? plan : 0;
			continue;
		}
		e->plan = (enum plan)plan;
		if (e->plan == PLAN_WAIT) {
			entry_release(e);
			continue;
		}
		if (e->plan == PLAN_DONE) {
			(*finished)++;
			if (e->op == OP_DROP_FILE)
				r = drop_file(db, e, ev);
			if (!r)
				r = entry_done(db, e);
			entry_release(e);
			continue;
		}
		if (e->plan == PLAN_JSON ? json == PICK_JSON : alone == PICK_ALONE) {
			entry_release(e); /* guessed wrong above: a later pass */
			continue;
		}
		*(e->plan == PLAN_JSON ? &json : &alone) += 1;
		k++;
	}
	if (r == 1)
		r = 0;
	cache_db_release(st);
	if (may_defer && json == PICK_JSON && alone && alone < PICK_ALONE) {
		size_t kept = 0;

		for (size_t i = 0; i < k; i++) {
			if (v[i].plan == PLAN_JSON)
				v[kept++] = v[i];
			else
				entry_release(&v[i]);
		}
		k = kept;
		*deferred = 1;
	}
	/* Durable before the request leaves: a create may reach the server
	 * even if we never hear back. */
	for (size_t i = 0; i < k && !r; i++)
		r = cache_db_run(
			db, "UPDATE outbox SET inflight = 1, sent = sent OR ? WHERE seq = ?", "ii",
			(int64_t)(v[i].plan == PLAN_JSON && !strcmp(v[i].method, "POST") &&
				  (v[i].op == OP_CREATE || v[i].op == OP_MOVE)),
			v[i].seq);
	if (!r)
		r = cache_db_commit(db);
	else
		cache_db_rollback(db);
	if (r) {
		for (size_t i = 0; i < k; i++)
			entry_release(&v[i]);
		return r;
	}
	*n = k;
	return 0;
}

/* ---- sending ------------------------------------------------------------------------------ */

static void send_one(struct cache *c, struct entry *e)
{
	struct graph_response resp;
	struct graph_header h = {"If-Match", e->if_match};
	char *text = NULL;
	int r;

	graph_response_init(&resp);
	if (e->plan == PLAN_PHOTO) {
		r = graph_request(c->g, "PUT", e->url, NULL, 0, e->photo.data, e->photo.len,
				  e->photo_type, &resp);
	} else {
		text = e->body ? cJSON_PrintUnformatted(e->body) : NULL;
		r = graph_request(c->g, e->method, e->url, &h, e->if_match[0] ? 1 : 0, text,
				  text ? strlen(text) : 0, text ? "application/json" : NULL, &resp);
	}
	e->err = r;
	if (!r) {
		e->status = (int)resp.status;
		snprintf(e->code, sizeof(e->code), "%s", resp.code);
		if (resp.body.len)
			e->response = cJSON_Parse(resp.body.data);
	}
	free(text);
	graph_response_release(&resp);
}

static void send_batch(struct cache *c, struct entry **v, size_t n)
{
	struct graph_batch_item items[PICK_JSON];
	int r;

	if (n == 1) {
		send_one(c, v[0]);
		return;
	}
	memset(items, 0, sizeof(items));
	for (size_t i = 0; i < n; i++) {
		items[i].method = v[i]->method;
		items[i].url = v[i]->url;
		items[i].body = v[i]->body;
		items[i].if_match = v[i]->if_match[0] ? v[i]->if_match : NULL;
	}
	r = graph_batch(c->g, items, n);
	for (size_t i = 0; i < n; i++) {
		/* An item answered before another batch of the call failed
		 * (the v1.0 one, say, before the beta one) keeps its answer. */
		v[i]->err = items[i].status ? 0 : r;
		if (v[i]->err)
			continue;
		v[i]->status = items[i].status;
		snprintf(v[i]->code, sizeof(v[i]->code), "%s", items[i].code);
		v[i]->response = items[i].response;
		items[i].response = NULL;
	}
	/* Answers of an earlier round of a batch that failed later are
	 * freed here too. */
	graph_batch_release(items, n);
}

/* ---- photos and lookups, side by side with the batch ---------------------------------------- */

static void lookup(struct cache *c, struct entry *e);

struct sender {
	struct cache *c;
	struct entry *e;
	pthread_t thread;
	int started;
};

static void *send_alone(void *arg)
{
	struct sender *s = arg;

	if (s->e->plan == PLAN_PHOTO)
		send_one(s->c, s->e);
	else
		lookup(s->c, s->e);
	return NULL;
}

/* Send the pass's requests: each photo and lookup on a thread of its own,
 * side by side (one after the other, 100 photos of an rsync took 100 round
 * trips instead of 25), then the JSON ones in a batch on this thread. The
 * batch takes every slot (graph_batch), so it could not run beside them
 * anyway; waiting for them keeps a round of them together. */
static void send_pass(struct cache *c, struct entry *v, size_t n)
{
	struct entry *json[PICK_JSON];
	struct sender s[PICK_ALONE];
	size_t nj = 0, ns = 0;

	for (size_t i = 0; i < n; i++) {
		if (v[i].plan == PLAN_JSON) {
			json[nj++] = &v[i];
		} else if (v[i].plan == PLAN_PHOTO || v[i].plan == PLAN_LOOKUP) {
			s[ns] = (struct sender){c, &v[i], 0, 0};
			s[ns].started = !pthread_create(&s[ns].thread, NULL, send_alone, &s[ns]);
			if (!s[ns].started)
				send_alone(&s[ns]); /* no thread: in turn, then */
			ns++;
		}
	}
	for (size_t i = 0; i < ns; i++)
		if (s[i].started)
			pthread_join(s[i].thread, NULL);
	if (nj)
		send_batch(c, json, nj);
}

/* Creates that may have reached the server: find them by client key in
 * their folder. Found: the answer is made to look like the create's. */
struct found {
	const char *key;
	char *id;
};

static int match_key(const cJSON *item, void *ctx)
{
	struct found *f = ctx;
	const cJSON *x;

	cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(item, "extensions"))
	{
		const char *key = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(x, "key"));

		if (key && !strcmp(key, f->key) && !f->id) {
			f->id = strdup(
				cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(item, "id"))
					?: "");
			return 1;
		}
	}
	return 0;
}

static void lookup(struct cache *c, struct entry *e)
{
	struct found f = {e->key, NULL};
	char path[1024], one[1200];
	int r;

	snprintf(path, sizeof(path), "%s%s", e->base, LOOKUP_SELECT);
	r = graph_list(c->g, path, NULL, 0, match_key, &f);
	if (r == 1)
		r = 0;
	e->err = r;
	if (r) {
		free(f.id);
		return;
	}
	if (!f.id || !*f.id) {
		e->status = 404; /* not there: send it again */
		free(f.id);
		return;
	}
	snprintf(one, sizeof(one), "%s/contacts/%s?$expand=Extensions($filter=id%%20eq%%20'%s')",
		 e->base, f.id, EXT_ID);
	free(f.id);
	r = graph_get_json(c->g, one, NULL, 0, &e->response);
	e->err = r == -ENOENT ? 0 : r;
	e->status = r == 0 ? 201 : r == -ENOENT ? 404 : 0;
	log_info("cache: %s: the create whose answer was lost is %s on the server",
		 e->name[0] ? e->name : e->key, r == 0 ? "already" : "not");
}

/* ---- applying the answers ------------------------------------------------------------------- */

/* The server's version after a create or update: the answer with our
 * extension as we sent it (answers do not carry extensions). */
static char *server_json(const cJSON *answer, const cJSON *ext_src)
{
	cJSON *j = cJSON_Duplicate(answer, 1), *exts;
	char *text;

	if (!j)
		return NULL;
	if (!cJSON_GetObjectItemCaseSensitive(j, "extensions") && ext_src &&
	    (exts = cJSON_Duplicate(ext_src, 1)) && !cJSON_AddItemToObject(j, "extensions", exts))
		cJSON_Delete(exts);
	text = cJSON_PrintUnformatted(j);
	cJSON_Delete(j);
	return text;
}

/* Merge the extension body sent into the stored version's extension. */
static int merge_ext(sqlite3 *db, int64_t cid, const cJSON *sent)
{
	sqlite3_stmt *st;
	cJSON *json = NULL, *exts, *mine = NULL, *it;
	char *text = NULL;
	int r;

	if ((r = cache_db_prepare(db, &st, "SELECT json FROM contacts WHERE cid = ?", "i", cid)))
		return r;
	if (cache_db_step(st) == 1)
		json = cJSON_Parse((const char *)sqlite3_column_text(st, 0));
	cache_db_release(st);
	if (!json)
		return 0;
	exts = cJSON_GetObjectItemCaseSensitive(json, "extensions");
	if (!exts)
		exts = cJSON_AddArrayToObject(json, "extensions");
	mine = cache_ext_of(json);
	if (!mine && exts && (mine = cJSON_CreateObject()))
		cJSON_AddItemToArray(exts, mine);
	if (mine) {
		cJSON_ArrayForEach(it, sent)
		{
			cJSON_DeleteItemFromObjectCaseSensitive(mine, it->string);
			cJSON_AddItemToObject(mine, it->string, cJSON_Duplicate(it, 1));
		}
	}
	text = cJSON_PrintUnformatted(json);
	r = text ? cache_db_run(db, "UPDATE contacts SET json = ? WHERE cid = ?", "ti", text, cid)
		 : -ENOMEM;
	free(text);
	cJSON_Delete(json);
	return r;
}

/* The next stage of e: it stays, ready at once. */
static int entry_next(sqlite3 *db, struct entry *e, enum stage stage)
{
	return cache_db_run(
		db,
		"UPDATE outbox SET stage = ?, inflight = 0, sent = 0, attempts = 0, parked = 0, "
		"not_before = 0, error = NULL, result = 0 WHERE seq = ?",
		"ii", (int64_t)stage, e->seq);
}

/* The answer of a STAGE_REFRESH read: its change key becomes the contact's
 * when every field it carries is the one stored (the change key is then of
 * our own writes); otherwise someone changed the contact meanwhile and the
 * old key stays, so that the next delta round brings their change. */
static int adopt_change_key(sqlite3 *db, const struct entry *e)
{
	sqlite3_stmt *st;
	cJSON *stored = NULL;
	const char *ck = cache_jstr(e->response, "changeKey");
	int r;

	if (!ck)
		return 0;
	if ((r = cache_db_prepare(db, &st, "SELECT json FROM contacts WHERE cid = ?", "i", e->cid)))
		return r;
	if (cache_db_step(st) == 1 && sqlite3_column_text(st, 0))
		stored = cJSON_Parse((const char *)sqlite3_column_text(st, 0));
	cache_db_release(st);
	if (!stored)
		return 0;
	if (cache_same_fields(e->response, stored)) {
		char *old_ck = strdup(cache_jstr(stored, "changeKey") ? cache_jstr(stored, "changeKey")
								       : "");

		cJSON_DeleteItemFromObjectCaseSensitive(stored, "changeKey");
		if (!old_ck || !cJSON_AddStringToObject(stored, "changeKey", ck))
			r = -ENOMEM;
		else {
			char *text = cJSON_PrintUnformatted(stored);

			r = text ? cache_db_run(db,
						"UPDATE contacts SET change_key = ?, json = ? "
						"WHERE cid = ?",
						"tti", ck, text, e->cid)
				 : -ENOMEM;
			free(text);
			if (!r)
				r = own_step(db, e->cid, old_ck, ck, e->token);
		}
		free(old_ck);
	} else {
		log_info("cache: %s changed on the server since our write; the next delta round "
			 "brings it",
			 e->name[0] ? e->name : "a contact");
	}
	cJSON_Delete(stored);
	return r;
}

/* The flag after a beta PATCH of it: as the answer gives it, else as sent
 * (an answer without a body). The file is looked at again once the queue is
 * empty: kept as written when it says the same. */
static int store_flag(sqlite3 *db, const struct entry *e)
{
	const cJSON *f = cJSON_GetObjectItemCaseSensitive(e->response, "flag");
	char *text;
	int r;

	if (!cJSON_IsObject(f))
		f = cJSON_GetObjectItemCaseSensitive(e->body, "flag");
	if (!(text = cJSON_PrintUnformatted(f)))
		return -ENOMEM;
	r = cache_db_run(db, "UPDATE contacts SET flag = ?, render = 1 WHERE cid = ?", "ti", text,
			 e->cid);
	free(text);
	return r;
}

/* An entry whose requests are all answered is done, but for a move, whose
 * old copy is deleted next. */
static int entry_finished(sqlite3 *db, struct entry *e)
{
	return e->op == OP_MOVE ? entry_next(db, e, STAGE_OLD_READ) : entry_done(db, e);
}

/* The answer of a STAGE_REFRESH read: the change key is adopted, and the
 * entry is finished. */
static int refreshed(sqlite3 *db, struct entry *e)
{
	int r = adopt_change_key(db, e);

	return r ? r : entry_finished(db, e);
}

/* The photo we PUT is the contact's stored photo. */
static int store_photo(sqlite3 *db, const struct entry *e)
{
	return cache_db_run(db,
			    "UPDATE contacts SET photo = ?, photo_type = ?, photo_state = 1 WHERE "
			    "cid = ?",
			    "bti", e->photo.data, e->photo.len, e->photo_type, e->cid);
}

/* The POST of a create or a move was taken: the contact has the answer's
 * id and change key, and no flag yet (a new contact has none); a move's old
 * id waits in the entry's arg for the delete of the old copy. Next: the
 * photo. */
static int new_copy_sent(sqlite3 *db, struct entry *e)
{
	const cJSON *resp = e->response;
	const char *id = cache_jstr(resp, "id");
	const cJSON *exts = cJSON_GetObjectItemCaseSensitive(e->body, "extensions");
	char *json;
	int r = 0;

	if (!id)
		return -EPROTO;
	if (!(json = server_json(resp, exts)))
		return -ENOMEM;
	if (e->op == OP_MOVE)
		r = cache_db_run(db,
				 "UPDATE outbox SET arg = (SELECT id FROM contacts WHERE cid = ?) "
				 "WHERE seq = ?",
				 "ii", e->cid, e->seq);
	if (!r)
		r = cache_db_run(db,
				 "UPDATE contacts SET id = ?, change_key = ?, json = ?, "
				 "photo_state = 1, render = 1, flag = NULL "
				 "WHERE cid = ?",
				 "ttti", id, cache_jstr(resp, "changeKey"), json, e->cid);
	if (!r)
		r = entry_next(db, e, STAGE_PHOTO);
	free(json);
	return r;
}

/* A create or a move: the POST, then the photo PUT (stored, then its change
 * key read back) or none, then for a move the delete of the old copy. */
static int new_copy_answered(sqlite3 *db, struct entry *e)
{
	int r;

	if (e->stage == STAGE_SEND)
		return new_copy_sent(db, e);
	if (e->stage == STAGE_PHOTO && e->plan == PLAN_PHOTO) {
		r = store_photo(db, e);
		return r ? r : entry_next(db, e, STAGE_REFRESH);
	}
	if (e->stage == STAGE_PHOTO)
		return entry_finished(db, e);
	if (e->stage == STAGE_REFRESH)
		return refreshed(db, e);
	return entry_done(db, e); /* the old copy is deleted */
}

/* The PATCH of an update was taken: the contact has the answer's fields and
 * change key (the step from the old key is ours), and is looked at again
 * once the queue is empty (kept as written unless it lacks a UID). Next:
 * the PATCH of our extension. */
static int update_sent(sqlite3 *db, struct entry *e)
{
	const cJSON *resp = e->response;
	sqlite3_stmt *st;
	cJSON *old = NULL;
	char *old_ck = NULL, *json;
	int r;

	if ((r = cache_db_prepare(db, &st, "SELECT json, change_key FROM contacts WHERE cid = ?",
				  "i", e->cid)))
		return r;
	if (cache_db_step(st) == 1) {
		old = cJSON_Parse((const char *)sqlite3_column_text(st, 0));
		old_ck = cache_db_strdup(st, 1);
	}
	cache_db_release(st);
	json = server_json(resp, cJSON_GetObjectItemCaseSensitive(old, "extensions"));
	cJSON_Delete(old);
	if (!json) {
		free(old_ck);
		return -ENOMEM;
	}
	r = cache_db_run(db,
			 "UPDATE contacts SET change_key = ?, json = ?, render = 1 WHERE "
			 "cid = ?",
			 "tti", cache_jstr(resp, "changeKey"), json, e->cid);
	if (!r)
		r = own_step(db, e->cid, old_ck, cache_jstr(resp, "changeKey"), e->token);
	free(old_ck);
	free(json);
	return r ? r : entry_next(db, e, STAGE_EXT_PATCH);
}

/* An update: the PATCH, then our extension's PATCH (or POST), merged into
 * the stored contact, then its change key read back. */
static int update_answered(sqlite3 *db, struct entry *e)
{
	int r;

	if (e->stage == STAGE_SEND)
		return update_sent(db, e);
	if (e->stage == STAGE_REFRESH)
		return refreshed(db, e);
	r = merge_ext(db, e->cid, e->body);
	return r ? r : entry_next(db, e, STAGE_REFRESH);
}

/* A flag's beta PATCH or a photo PUT: what it set is stored (store), then
 * the change key it made is read back. */
static int stored_then_refreshed(sqlite3 *db, struct entry *e,
				 int (*store)(sqlite3 *, const struct entry *))
{
	int r;

	if (e->stage == STAGE_REFRESH)
		return refreshed(db, e);
	r = store(db, e);
	return r ? r : entry_next(db, e, STAGE_REFRESH);
}

/* A folder's POST: the folder has the answer's id. */
static int folder_created(sqlite3 *db, struct entry *e)
{
	const char *id = cache_jstr(e->response, "id");
	int r;

	if (!id)
		return -EPROTO;
	r = cache_db_run(db, "UPDATE folders SET id = ? WHERE ino = ?", "ti", id, e->folder);
	return r ? r : entry_done(db, e);
}

/* The request of e's stage was answered with success: store what the answer
 * says and move e on to its next stage, or end it. */
static int on_success(sqlite3 *db, struct entry *e)
{
	switch (e->op) {
	case OP_CREATE:
	case OP_MOVE:
		return new_copy_answered(db, e);
	case OP_UPDATE:
		return update_answered(db, e);
	case OP_FLAG:
		return stored_then_refreshed(db, e, store_flag);
	case OP_PHOTO:
		return stored_then_refreshed(db, e, store_photo);
	case OP_FOLDER_CREATE:
		return folder_created(db, e);
	default:
		return entry_done(db, e);
	}
}

static int backoff_ms(int attempts)
{
	int base = 1000 << (attempts < 6 ? attempts : 6);

	return base / 2 + rand() % (base / 2 + 1); /* jitter: half to full */
}

/* A failed attempt: retried after a backoff, parked after park_after. */
static int on_failure(struct cache *c, sqlite3 *db, struct entry *e, int permanent, int err,
		      const char *why)
{
	int park = permanent || e->attempts + 1 >= (c->cfg.park_after ? c->cfg.park_after : 5);
	int64_t retry = park ? (int64_t)(c->cfg.park_retry_s ? c->cfg.park_retry_s : 600) * 1000
			     : backoff_ms(e->attempts);
	/* A 4xx answer says the request was not carried out: a create that
	 * got one needs no lookup. */
	int refused = e->status >= 400 && e->status < 500;
	const char *then = "parked after repeated failures; tried again later";
	int64_t later = 0;
	int r = 0;

	/* A flag's PATCH is planned from the file as it was then; a save
	 * since queued the flag again. That entry sends the file's flag as it
	 * is now, so this one is history: parked, it would hold the newer one
	 * and every other change of the contact behind it until its retry. */
	if (e->op == OP_FLAG && park)
		r = cache_db_int(db, &later,
				 "SELECT count(*) FROM outbox WHERE cid = ? AND op = ? AND seq > ?",
				 "iii", e->cid, (int64_t)OP_FLAG, e->seq);
	if (r < 0)
		return r;
	if (later) {
		r = cache_db_run(db, "DELETE FROM outbox WHERE seq = ?", "i", e->seq);
		if (!r)
			cache_error(db, e->name[0] ? e->name : "outbox",
				    "%s; the file was saved again since: its flag as it is now goes "
				    "next",
				    why);
		return r;
	}
	r = cache_db_run(
		db,
		"UPDATE outbox SET inflight = 0, attempts = attempts + 1, parked = ?, "
		"not_before = ?, result = ?, error = ?, sent = sent AND NOT ? WHERE seq = ?",
		"iiitii", (int64_t)park, cache_now_ms() + retry, (int64_t)err, why,
		(int64_t)refused, e->seq);

	if (permanent)
		then = e->op == OP_FLAG ? "the file keeps the flag: fix X-CONTACTFS-FOLLOWUP (or "
					  "remove it) and save again"
					: "kept here and not sent: fix the file (or remove it) and "
					  "save again";
	if (!r && park && (!e->parked || permanent))
		cache_error(db, e->name[0] ? e->name : "outbox", "%s; %s", why, then);
	else
		log_warn("cache: %s: %s; trying again in %lld ms", e->name[0] ? e->name : "outbox",
			 why, (long long)retry);
	return r;
}

/* The contact went from the server while we had changes for it: our
 * version is created again, nothing of ours is lost (its flag follows the
 * create, as for any new contact). */
static int recreate(struct cache *c, sqlite3 *db, struct entry *e)
{
	char key[33];
	int r;

	cache_new_key(key);
	log_info(
		"cache: %s was deleted on the server; creating it again with the changes made here",
		e->name);
	r = cache_db_run(
		db,
		"UPDATE contacts SET id = NULL, json = NULL, change_key = NULL, flag = NULL, "
		"ckey = ? WHERE cid = ?",
		"ti", key, e->cid);
	if (!r)
		r = cache_db_run(
			db,
			"UPDATE outbox SET op = ?, stage = ?, sent = 0, inflight = 0, attempts = 0 "
			"WHERE seq = ?",
			"iii", (int64_t)OP_CREATE, (int64_t)STAGE_SEND, e->seq);
	if (!r && c->cfg.followup)
		r = cache_outbox_add_flag(db, e->cid, e->folder);
	return r;
}

enum after { AFTER_NOTHING, AFTER_CONFLICT, AFTER_FOLDER_EXISTS, AFTER_OLD_CHANGED };

/* The version of contact cid's old copy id that we copied (its last before
 * the move's POST, kept by the versions trigger), in *out; NULL when the
 * cache no longer holds it (versions are kept a day). */
static int old_copy_base(sqlite3 *db, int64_t cid, const char *id, cJSON **out)
{
	sqlite3_stmt *st;
	int r;

	*out = NULL;
	if ((r = cache_db_prepare(db, &st,
				  "SELECT json FROM versions WHERE cid = ? AND "
				  "json_extract(json, '$.id') = ? ORDER BY at DESC LIMIT 1",
				  "it", cid, id)))
		return r;
	if ((r = cache_db_step(st)) == 1 && !(*out = cJSON_Parse(
						     (const char *)sqlite3_column_text(st, 0))))
		r = -ENOMEM;
	cache_db_release(st);
	return r < 0 ? r : 0;
}

/* A move read its old copy before deleting it (e->response). Its change key
 * the one we copied: on to the delete. Otherwise someone changed it since
 * (Outlook, a phone, between our POST and now): that change is carried into
 * the new copy first (carry_old_change, after the pass). */
static int old_copy_read(sqlite3 *db, struct entry *e, enum after *after)
{
	cJSON *base = NULL;
	const char *ck = cache_jstr(e->response, "changeKey");
	int r = old_copy_base(db, e->cid, e->arg ? e->arg : "", &base);

	if (!r && base && ck && strcmp(ck, cache_jstr(base, "changeKey") ?: "") &&
	    !cache_same_fields(e->response, base))
		*after = AFTER_OLD_CHANGED;
	else if (!r)
		r = entry_next(db, e, STAGE_OLD_COPY);
	cJSON_Delete(base);
	return r;
}

/* Apply one answer. *after: work that needs the network first. */
static int apply(struct cache *c, sqlite3 *db, struct entry *e, int *offline, enum after *after)
{
	char why[1600];
	const char *msg;
	int st = e->status;

	*after = AFTER_NOTHING;
	if (e->err) {
		if (cache_offline_errno(e->err)) {
			*offline = 1;
			return cache_db_run(db, "UPDATE outbox SET inflight = 0 WHERE seq = ?", "i",
					    e->seq);
		}
		snprintf(why, sizeof(why), "no answer from the server: %s", strerror(-e->err));
		return on_failure(c, db, e, 0, e->err, why);
	}
	if (st >= 200 && st < 300 && e->op == OP_MOVE && e->stage == STAGE_OLD_READ)
		return old_copy_read(db, e, after);
	if (st >= 200 && st < 300) {
		int r = on_success(db, e);

		if (r == -EPROTO) {
			snprintf(why, sizeof(why), "the server's answer to %s %s has no id",
				 e->method, e->url);
			return on_failure(c, db, e, 0, r, why);
		}
		return r;
	}
	if (e->plan == PLAN_LOOKUP && st == 404) /* not there: send it again */
		return cache_db_run(db, "UPDATE outbox SET inflight = 0, sent = 0 WHERE seq = ?",
				    "i", e->seq);
	if (st == 404 && e->stage == STAGE_REFRESH) /* gone meanwhile: delta says so */
		return e->op == OP_MOVE ? entry_next(db, e, STAGE_OLD_READ) : entry_done(db, e);
	if (st == 404) {
		switch (e->op) {
		case OP_UPDATE:
			return e->stage == STAGE_SEND ? recreate(c, db, e)
						      : entry_next(db, e, STAGE_EXT_POST);
		case OP_PHOTO:
		case OP_FLAG:
		case OP_DELETE:
		case OP_FOLDER_RENAME:
		case OP_FOLDER_DELETE:
		case OP_REQUEST:
			return entry_done(db, e);
		case OP_MOVE:
			/* The old copy went meanwhile: the contact lives on in
			 * the new one. */
			if (e->stage == STAGE_OLD_COPY || e->stage == STAGE_OLD_READ)
				return entry_done(db, e);
			break;
		default:
			break;
		}
	}
	if ((st == 412 || st == 409) && e->op == OP_UPDATE && e->stage == STAGE_SEND) {
		*after = AFTER_CONFLICT;
		return 0;
	}
	if (st == 409 && e->op == OP_FOLDER_CREATE) {
		*after = AFTER_FOLDER_EXISTS;
		return 0;
	}
	msg = cache_jstr(cJSON_GetObjectItemCaseSensitive(e->response, "error"), "message");
	if (e->op == OP_FLAG && e->stage == STAGE_SEND)
		snprintf(why, sizeof(why),
			 "Outlook refused its follow-up flag (PATCH of the flag in Graph's beta: "
			 "HTTP %d %s%s%s); the rest of the card is on the server",
			 st, e->code, msg ? ": " : "", msg ? msg : "");
	else
		snprintf(why, sizeof(why), "%s %s: HTTP %d %s%s%s", e->method,
			 e->op == OP_REQUEST ? e->url : "", st, e->code, msg ? ": " : "",
			 msg ? msg : "");
	if (graph_status_transient(st))
		return on_failure(c, db, e, 0, st ? graph_errno(st, e->code) : -EIO, why);
	return on_failure(c, db, e, 1, graph_errno(st, e->code), why);
}

/* Apply e's answer in a savepoint of its own: an answer that cannot be
 * stored (a bug, a state the cache did not expect) is undone alone and
 * counts as a failed attempt of e, retried after a backoff and parked with
 * an error line like any other, so every other entry of the pass goes on. */
static int apply_alone(struct cache *c, sqlite3 *db, struct entry *e, int *offline,
		       enum after *after)
{
	char why[256];
	int r, err;

	if ((r = cache_db_run(db, "SAVEPOINT answer", NULL)))
		return r;
	err = apply(c, db, e, offline, after);
	if (err && err != -ENOMEM) {
		*after = AFTER_NOTHING;
		snprintf(why, sizeof(why), "the server's answer could not be stored: %s",
			 strerror(-err));
		log_err("cache: %s: %s", e->name[0] ? e->name : "outbox", why);
		if (!(r = cache_db_run(db, "ROLLBACK TO answer", NULL)))
			r = on_failure(c, db, e, 0, err, why);
	} else {
		r = err;
	}
	return r ? r : cache_db_run(db, "RELEASE answer", NULL);
}

/* Work after an answer (a conflict, a folder to adopt) that failed: a
 * failed attempt of e alone, in a transaction of its own. No network is
 * no failure of e: the pass ends and e is tried again, as for a request. */
static int failed_after(struct cache *c, struct entry *e, int err)
{
	char why[256];
	int r;

	if (err == -ENOMEM || cache_offline_errno(err))
		return err;
	snprintf(why, sizeof(why), "%s: %s",
		 e->op == OP_FOLDER_CREATE ? "taking the folder the server has as ours"
					   : "resolving the conflict",
		 strerror(-err));
	log_err("cache: %s: %s", e->name[0] ? e->name : "outbox", why);
	if ((r = cache_db_begin(c->sdb)))
		return r;
	r = on_failure(c, c->sdb, e, 0, err, why);
	return r ? (cache_db_rollback(c->sdb), r) : cache_db_commit(c->sdb);
}

/* ---- conflicts (docs/design.md §6) --------------------------------------------------------- */

/* Store contact theirs as the base and write the file from merged (a local
 * state under a token of its own, cache_tree_render_local), or from theirs when
 * merged is NULL; mflag, when not NULL, is the follow-up flag the file shows
 * (the flag stored stays what is stored). */
static int take_server(struct cache *c, sqlite3 *db, int64_t cid, const cJSON *theirs,
		       const cJSON *merged, const cJSON *mflag, struct events *ev)
{
	cJSON *stored = NULL;
	char *text = cJSON_PrintUnformatted(theirs), *ftext = NULL, *stext = NULL;
	int r = text ? 0 : -ENOMEM;

	if (merged) {
		if (!r)
			r = cache_db_run(
				db, "UPDATE contacts SET json = ?, change_key = ? WHERE cid = ?",
				"tti", text, cache_jstr(theirs, "changeKey"), cid);
		free(text);
		return r ? r : cache_tree_render_local(c, db, cid, merged, mflag, NULL, ev);
	}
	if (!r && mflag &&
	    (!(ftext = cJSON_PrintUnformatted(mflag)) ||
	     ((stored = cache_flag_of(db, cid)) && !(stext = cJSON_PrintUnformatted(stored)))))
		r = -ENOMEM;
	/* Render with the file's flag, then put the stored one back. */
	if (!r && ftext)
		r = cache_db_run(db, "UPDATE contacts SET flag = ? WHERE cid = ?", "ti", ftext,
				 cid);
	if (!r)
		r = cache_db_run(
			db,
			"UPDATE contacts SET json = ?, change_key = ?, render = 1 WHERE cid = ?",
			"tti", text, cache_jstr(theirs, "changeKey"), cid);
	if (!r)
		r = cache_db_run(db, "UPDATE nodes SET written = 0 WHERE cid = ?", "i", cid);
	if (!r)
		r = cache_tree_render(c, db, cid, ev);
	if (!r && ftext)
		r = cache_db_run(db, "UPDATE contacts SET flag = ? WHERE cid = ?", "ti", stext,
				 cid);
	cJSON_Delete(stored);
	free(text);
	free(ftext);
	free(stext);
	return r;
}

/* The bytes contact cid's file shows now are kept beside it as a conflict
 * file (cache_tree_keep_beside); its name in kept. */
static int keep_file_beside(sqlite3 *db, int64_t cid, char *kept, size_t size,
			    struct events *ev)
{
	struct buf ours;
	sqlite3_stmt *st;
	int r;

	buf_init(&ours, (size_t)64 << 20);
	if (!(r = cache_db_prepare(db, &st, "SELECT data FROM nodes WHERE cid = ?", "i", cid))) {
		if (cache_db_step(st) == 1)
			r = buf_add(&ours, sqlite3_column_blob(st, 0),
				    (size_t)sqlite3_column_bytes(st, 0));
		cache_db_release(st);
	}
	if (!r)
		r = cache_tree_keep_beside(db, cid, &ours, kept, size, ev);
	buf_release(&ours);
	return r;
}

/*
 * Three-way merge of the card written into e's file (ours) with base, the
 * server version it was written against, and theirs, the server's version
 * now; in the open transaction. A field only ours changed is sent, a field
 * only theirs changed is kept, and the two changing one field differently is
 * a conflict: theirs wins the file, ours is kept beside it, and the error
 * log says so. With stale (the card named a base older than what the cache
 * holds, found before anything was sent), theirs is the cache's own version
 * already and the file is always rewritten to show the outcome. 0 when the
 * entry still has something to send (the file shows the merge, to be sent
 * against theirs), 1 when it is done, or -errno.
 */
static int merge_versions(struct cache *c, sqlite3 *db, struct entry *e, const cJSON *base,
			  const cJSON *theirs, struct vcard *card, const cJSON *flag, int stale,
			  struct events *ev)
{
	struct cache_merge m;
	char kept[256];
	int r;

	if ((r = cache_merge(base, theirs, card, &m)) ||
	    (r = cache_merge_remember(db, e->cid, card, base, &m, 0)))
		goto out;
	if (!m.pending) {
		/* The server holds our change already (or the card changed
		 * nothing): its version is the base now. After a conflict
		 * the file stays as written; a stale card shows theirs. */
		char *text = stale ? NULL : cJSON_PrintUnformatted(theirs);

		if (stale)
			r = take_server(c, db, e->cid, theirs, NULL, NULL, ev);
		else
			r = text ? cache_db_run(
					   db,
					   "UPDATE contacts SET json = ?, change_key = ? WHERE "
					   "cid = ?",
					   "tti", text, cache_jstr(theirs, "changeKey"), e->cid)
				 : -ENOMEM;
		free(text);
		if (!r && stale)
			log_info("cache: %s was written from an older version of the contact and "
				 "changed nothing of its own: it shows the server's version",
				 e->name);
		r = r ? r : 1;
		goto out;
	}
	if (!m.overlap) {
		/* Theirs plus our fields: the file shows the merge, and the
		 * entry sends our fields against their version. The file
		 * keeps its own flag too: the flag's entry, queued after
		 * this one, sends it from the file. */
		r = take_server(c, db, e->cid, theirs, m.merged, flag, ev);
		log_info("cache: %s changed on the server and here in different fields: merged",
			 e->name);
		goto out;
	}
	/* Both changed the same field: the server's version wins the file;
	 * ours is kept beside it. */
	r = keep_file_beside(db, e->cid, kept, sizeof(kept), ev);
	if (!r)
		r = take_server(c, db, e->cid, theirs, NULL, NULL, ev);
	if (!r) {
		cache_error(db, e->name,
			    "conflict: changed on the server and here in the same fields (%s); the "
			    "file now holds the server's version, ours is kept as %s",
			    m.fields.data, kept);
		r = cache_db_run(db, "DELETE FROM outbox WHERE cid = ? AND op = ? AND inflight = 0",
				 "ii", e->cid, (int64_t)OP_PHOTO);
	}
	r = r ? r : 1;
out:
	cache_merge_release(&m);
	return r;
}

/* The contact went from the server meanwhile: ours is created again
 * (recreate). */
static int conflict_gone(struct cache *c, struct entry *e)
{
	sqlite3 *db = c->sdb;
	int r;

	if (!(r = cache_db_begin(db))) {
		r = recreate(c, db, e);
		r = r ? (cache_db_rollback(db), r) : cache_db_commit(db);
	}
	return r;
}

/* Their version could not be fetched (err): offline, the entry waits for
 * the network; otherwise it is a failed attempt. Returns err. */
static int conflict_unfetched(struct cache *c, struct entry *e, int err)
{
	sqlite3 *db = c->sdb;

	if (!cache_db_begin(db)) {
		int r = cache_offline_errno(err)
				? cache_db_run(db, "UPDATE outbox SET inflight = 0 WHERE seq = ?",
					       "i", e->seq)
				: on_failure(c, db, e, 0, err,
					     "fetching the server's version after a conflict");

		if (r || cache_db_commit(db))
			cache_db_rollback(db);
	}
	return err;
}

/* Merge the file with theirs against the version the update was based on
 * (merge_versions): the entry is done when nothing is left to send, else
 * it goes again against their version. */
static int conflict_merge(struct cache *c, struct entry *e, const cJSON *theirs, struct events *ev)
{
	sqlite3 *db = c->sdb;
	cJSON *base = NULL, *flag = NULL;
	struct contact_row k;
	struct vcard *card = NULL;
	int r;

	memset(&k, 0, sizeof(k));
	if ((r = cache_db_begin(db)))
		return r;
	if ((r = contact_row_get(db, e->cid, &k)) ||
	    (r = file_card(c, db, e->cid, &card, &flag, e->name, sizeof(e->name)))) {
		/* Nothing of ours left to merge. */
		r = entry_done(db, e);
		goto commit;
	}
	/* The base: what the card was written from, when that is older than
	 * the version the update was sent against (another writer's save
	 * since); else that version. */
	if ((r = cache_card_base(db, e->cid, card, 0, &base)) < 0)
		goto commit;
	if (!base)
		base = k.json ? cJSON_Parse(k.json) : NULL;
	r = base ? merge_versions(c, db, e, base, theirs, card, flag, 0, ev) : -EIO;
	if (r == 1)
		r = entry_done(db, e);
	else if (!r)
		r = cache_db_run(db, "UPDATE outbox SET inflight = 0, attempts = 0 WHERE seq = ?",
				 "i", e->seq);
commit:
	if (r)
		cache_db_rollback(db);
	else
		r = cache_db_commit(db);
	cJSON_Delete(base);
	cJSON_Delete(flag);
	vcard_free(card);
	contact_row_release(&k);
	return r;
}

/*
 * The update of e met a newer server version. Fetch it and merge the file
 * with it against the version the update was based on (merge_versions);
 * what is left to send is sent again against their version.
 */
static int resolve_conflict(struct cache *c, struct entry *e, struct events *ev)
{
	cJSON *theirs = NULL;
	char path[1200];
	int r;

	snprintf(path, sizeof(path), "%s?$expand=Extensions($filter=id%%20eq%%20'%s')", e->url,
		 EXT_ID);
	r = graph_get_json(c->g, path, NULL, 0, &theirs);
	if (r == -ENOENT)
		r = conflict_gone(c, e);
	else if (r)
		r = conflict_unfetched(c, e, r);
	else
		r = conflict_merge(c, e, theirs, ev);
	cJSON_Delete(theirs);
	return r;
}

/*
 * The old copy of e's move was changed elsewhere after we copied it
 * (e->response, theirs): merge the file with it against the version we
 * copied, as for a conflict (design.md §6), then send the outcome to the
 * new copy with an update and delete the old copy. A field both changed is
 * a conflict: the file shows theirs, ours is kept beside it.
 */
static int carry_old_change(struct cache *c, struct entry *e, struct events *ev)
{
	sqlite3 *db = c->sdb;
	const cJSON *theirs = e->response;
	struct cache_merge m;
	struct vcard *card = NULL;
	cJSON *base = NULL, *flag = NULL;
	char kept[256];
	int64_t folder = 0;
	int r;

	memset(&m, 0, sizeof(m));
	if ((r = cache_db_begin(db)))
		goto out;
	if ((r = old_copy_base(db, e->cid, e->arg ? e->arg : "", &base)) || !base ||
	    file_card(c, db, e->cid, &card, &flag, e->name, sizeof(e->name))) {
		/* Nothing to merge against, or no file left: as before. */
		r = r ? r : entry_next(db, e, STAGE_OLD_COPY);
		goto commit;
	}
	if ((r = cache_merge(base, theirs, card, &m)))
		goto commit;
	if (m.overlap) {
		r = keep_file_beside(db, e->cid, kept, sizeof(kept), ev);
		if (!r)
			cache_error(db, e->name,
				    "conflict: changed in its old folder on the server while it "
				    "moved, and here, in the same fields (%s); the file now holds "
				    "the server's version, ours is kept as %s",
				    m.fields.data, kept);
	}
	if (!r)
		r = cache_tree_render_local(c, db, e->cid,
					    m.pending && !m.overlap ? m.merged : theirs, flag, NULL,
					    ev);
	if (!r)
		log_info("cache: %s changed on the server in its old folder while it moved: "
			 "the change goes to its new copy",
			 e->name);
	if (!r)
		r = cache_db_int(db, &folder, "SELECT folder FROM contacts WHERE cid = ?", "i",
				 e->cid) < 0
			    ? -EIO
			    : 0;
	if (!r)
		r = cache_outbox_add(db, OP_UPDATE, e->cid, folder, NULL, 0);
	if (!r)
		r = entry_next(db, e, STAGE_OLD_COPY);
commit:
	r = r ? (cache_db_rollback(db), r) : cache_db_commit(db);
out:
	cache_merge_release(&m);
	cJSON_Delete(base);
	cJSON_Delete(flag);
	vcard_free(card);
	return r;
}

/* A folder create met a folder of that name (our own create, whose answer
 * was lost, or one made elsewhere): take it as ours. */
struct named {
	const char *name;
	char *id;
};

static int match_name(const cJSON *item, void *ctx)
{
	struct named *n = ctx;
	const char *name = cache_jstr(item, "displayName"), *id = cache_jstr(item, "id");

	if (name && id && !strcasecmp(name, n->name) && !n->id)
		n->id = strdup(id);
	return 0;
}

/* Folder dup shows the server folder our folder into is: everything in it
 * (files, contacts, queued changes) goes into ours, and dup goes. */
static int merge_folder(sqlite3 *db, int64_t into, int64_t dup, struct events *ev)
{
	sqlite3_stmt *st;
	int r;

	log_warn("cache: folder %lld is a second copy of folder %lld, whose create's answer was "
		 "lost: merged into it",
		 (long long)dup, (long long)into);
	if ((r = cache_db_prepare(db, &st, "SELECT ino, name FROM nodes WHERE parent = ?", "i",
				  dup)))
		return r;
	while ((r = cache_db_step(st)) == 1) {
		int64_t ino = sqlite3_column_int64(st, 0);
		char old[256], unique[256];

		snprintf(old, sizeof(old), "%s", (const char *)sqlite3_column_text(st, 1));
		if ((r = cache_tree_unique_name(db, (uint64_t)into, old, unique)) ||
		    (r = cache_db_run(db, "UPDATE nodes SET parent = ?, name = ? WHERE ino = ?",
				      "iti", into, unique, ino)))
			break;
		cache_events_add(ev, CACHE_RENAMED, (uint64_t)ino, (uint64_t)into, unique,
				 (uint64_t)dup, old);
	}
	cache_db_release(st);
	if (r < 0)
		return r;
	if ((r = cache_db_run(db, "UPDATE contacts SET folder = ? WHERE folder = ?", "ii", into,
			      dup)) ||
	    (r = cache_db_run(db, "DELETE FROM names_past WHERE folder = ?", "i", dup)) ||
	    (r = cache_db_run(db, "DELETE FROM outbox WHERE folder = ? AND op IN (?, ?, ?)", "iiii",
			      dup, (int64_t)OP_FOLDER_CREATE, (int64_t)OP_FOLDER_RENAME,
			      (int64_t)OP_FOLDER_DELETE)) ||
	    (r = cache_db_run(db, "UPDATE outbox SET folder = ? WHERE folder = ?", "ii", into,
			      dup)) ||
	    (r = cache_db_run(
		     db,
		     "UPDATE folders SET delta = (SELECT delta FROM folders WHERE ino = ?) "
		     "WHERE ino = ?",
		     "ii", dup, into)) ||
	    (r = cache_db_run(db, "DELETE FROM folders WHERE ino = ?", "i", dup)))
		return r;
	if ((r = cache_db_prepare(db, &st, "SELECT parent, name FROM nodes WHERE ino = ?", "i",
				  dup)))
		return r;
	if ((r = cache_db_step(st)) == 1)
		cache_events_add(ev, CACHE_REMOVED, (uint64_t)dup,
				 (uint64_t)sqlite3_column_int64(st, 0),
				 (const char *)sqlite3_column_text(st, 1), 0, NULL);
	cache_db_release(st);
	if (r < 0)
		return r;
	return cache_db_run(db, "DELETE FROM nodes WHERE ino = ?", "i", dup);
}

/* The folder of e takes id; a row that already has it (the server's
 * folder, shown as a second one by a delta round) is merged into it. */
static int take_folder_id(sqlite3 *db, struct entry *e, const char *id, struct events *ev)
{
	int64_t other = 0;
	int r = cache_db_int(db, &other, "SELECT ino FROM folders WHERE id = ? AND ino != ?", "ti",
			     id, e->folder);

	if (r < 0)
		return r;
	if (r && (r = cache_db_run(db, "UPDATE folders SET id = NULL WHERE ino = ?", "i", other)))
		return r;
	if ((r = cache_db_run(db, "UPDATE folders SET id = ? WHERE ino = ?", "ti", id, e->folder)))
		return r;
	return other ? merge_folder(db, e->folder, other, ev) : 0;
}

static int adopt_folder(struct cache *c, struct entry *e)
{
	struct named n = {e->name, NULL};
	struct events ev = {0}; /* told once committed */
	char path[1200];
	int r;

	if (!strcmp(e->url, "/contactFolders"))
		snprintf(path, sizeof(path), "/contactFolders");
	else
		snprintf(path, sizeof(path), "%s", e->url); /* .../childFolders */
	r = graph_list(c->g, path, NULL, 0, match_name, &n);
	if (!r && (r = cache_db_begin(c->sdb)) == 0) {
		if (n.id)
			r = take_folder_id(c->sdb, e, n.id, &ev);
		if (!r)
			r = n.id ? entry_done(c->sdb, e)
				 : on_failure(c, c->sdb, e, 0, -EEXIST,
					      "the folder exists but was not found");
		r = r ? (cache_db_rollback(c->sdb), r) : cache_db_commit(c->sdb);
	}
	cache_events_flush(c, &ev, !r);
	free(n.id);
	return r;
}

/* ---- the pass ------------------------------------------------------------------------------- */

static int64_t next_due(sqlite3 *db)
{
	int64_t t = 0;

	if (cache_db_int(db, &t,
			 "SELECT min(not_before) FROM outbox WHERE inflight = 0 AND not_before > ?",
			 "i", cache_now_ms()) != 1)
		return 0;
	return t;
}

int cache_outbox_pass(struct cache *c, int64_t *next_ms)
{
	struct entry v[PICK_MAX];
	int offline = 0, deferred = 0, r = 0;

	*next_ms = 0;
	for (int round = 0; round < 1000 && !offline && !cache_stopping(c); round++) {
		enum after after[PICK_MAX];
		struct events ev = {0};
		size_t n = 0, finished = 0;

		if ((r = pick(c, v, &n, &finished, cache_now_ms(), &ev, &deferred))) {
			cache_events_flush(c, &ev, 0);
			break;
		}
		if (n == 0 && finished == 0)
			break; /* (finished entries may free the next of their key) */
		send_pass(c, v, n);
		for (size_t i = 0; i < n; i++)
			if (!v[i].err)
				cache_set_online(c, 1); /* an answer came: at once, for waiters */
		if (!(r = cache_db_begin(c->sdb))) {
			for (size_t i = 0; i < n && !r; i++)
				r = apply_alone(c, c->sdb, &v[i], &offline, &after[i]);
			r = r ? (cache_db_rollback(c->sdb), r) : cache_db_commit(c->sdb);
		}
		for (size_t i = 0; i < n && !r; i++) {
			int err = 0;

			if (after[i] == AFTER_CONFLICT)
				err = resolve_conflict(c, &v[i], &ev);
			else if (after[i] == AFTER_FOLDER_EXISTS)
				err = adopt_folder(c, &v[i]);
			else if (after[i] == AFTER_OLD_CHANGED)
				err = carry_old_change(c, &v[i], &ev);
			r = err ? failed_after(c, &v[i], err) : 0;
		}
		cache_events_flush(c, &ev, !r);
		for (size_t i = 0; i < n; i++)
			entry_release(&v[i]);
		if (r) {
			/* The entries stay in flight in the database: clear
			 * them so they are tried again. */
			if (cache_db_run(c->sdb, "UPDATE outbox SET inflight = 0 WHERE inflight",
					 NULL))
				log_err("cache: could not reset the outbox after an error");
			break;
		}
	}
	*next_ms = next_due(c->sdb);
	if (r)
		log_err("cache: sending the outbox: %s", strerror(-r));
	return offline ? -EHOSTDOWN : r;
}
