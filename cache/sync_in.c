/*
 * Changes from the server into the replica (docs/design.md §11): folder delta,
 * then contact delta per folder, several folders side by side, extensions
 * (Graph's delta does not carry them), rendering, and photos in the
 * background.
 *
 * A delta round stores the server's JSON as it comes, a page at a time in
 * one transaction, and marks the contact for rendering; the cursor is kept
 * only when the round completes, so a crash replays the round (replays are
 * harmless: an unchanged change key is skipped). A contact with local
 * changes still queued is left alone: its update carries If-Match, and a
 * conflict is resolved when the server answers 412.
 */
#include "cache_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define APPLY_CHUNK 200

/* ---- folders ------------------------------------------------------------------------------ */

/* Delta rounds between two listings of the folder tree while delta has not
 * shown that it reports nested folders (docs/graph.md, "Folders"). */
#define FOLDER_WALK_EVERY 5

struct folder_round {
	cJSON *items; /* the round's items, applied once complete (parents first) */
	const char *default_id; /* the default folder's: never a folder of its own */
};

static int collect(const cJSON *item, void *ctx)
{
	struct folder_round *f = ctx;
	cJSON *copy = cJSON_Duplicate(item, 1);

	if (!copy || !cJSON_AddItemToArray(f->items, copy)) {
		cJSON_Delete(copy);
		return -ENOMEM;
	}
	return 0;
}

static int folder_ino(sqlite3 *db, const char *id, int64_t *ino)
{
	int r = cache_db_int(db, ino, "SELECT ino FROM folders WHERE id = ?", "t", id);

	return r < 0 ? r : r ? 0 : -ENOENT;
}

/* Remove a folder and all it holds from the replica (gone on the server). */
static int drop_subtree(sqlite3 *db, int64_t ino, struct events *ev)
{
	sqlite3_stmt *st;
	int64_t parent = 0;
	char name[256] = "";
	int r;

	if ((r = cache_db_prepare(db, &st, "SELECT parent, name FROM nodes WHERE ino = ?", "i",
				  ino)))
		return r;
	if (cache_db_step(st) == 1) {
		parent = sqlite3_column_int64(st, 0);
		snprintf(name, sizeof(name), "%s", sqlite3_column_text(st, 1));
	}
	cache_db_release(st);
	r = cache_db_run(
		db,
		"WITH RECURSIVE sub(ino) AS (SELECT ? UNION ALL SELECT n.ino FROM nodes n JOIN sub "
		"ON n.parent = sub.ino) "
		"DELETE FROM contacts WHERE cid IN (SELECT cid FROM nodes WHERE ino IN sub) OR "
		"folder IN sub",
		"i", ino);
	if (!r)
		r = cache_db_run(
			db,
			"WITH RECURSIVE sub(ino) AS (SELECT ? UNION ALL SELECT n.ino FROM nodes n "
			"JOIN sub ON n.parent = sub.ino) DELETE FROM folders WHERE ino IN sub",
			"i", ino);
	if (!r)
		r = cache_db_run(
			db,
			"WITH RECURSIVE sub(ino) AS (SELECT ? UNION ALL SELECT n.ino FROM nodes n "
			"JOIN sub ON n.parent = sub.ino) DELETE FROM nodes WHERE ino IN sub",
			"i", ino);
	if (!r)
		cache_events_add(ev, CACHE_REMOVED, (uint64_t)ino, (uint64_t)parent, name, 0, NULL);
	return r;
}

/* Whether anything is queued for folder ino or a contact in it. */
static int folder_busy(sqlite3 *db, int64_t ino)
{
	int64_t n = 0;
	int r = cache_db_int(
		db, &n,
		"SELECT count(*) FROM outbox WHERE folder = ? OR cid IN (SELECT cid FROM "
		"contacts WHERE folder = ?)",
		"ii", ino, ino);

	return r < 0 ? r : n > 0;
}

/*
 * A folder new to us that delta brings may be our own mkdir, whose POST the
 * server carried out while its answer was lost: a folder of ours with no id
 * yet, a create of it queued, in the same parent and of the same name (Graph
 * compares folder names without case). Folders carry no client key; a name
 * is unique among its siblings on the server, so that folder is ours: it
 * takes the id and its create is done. 1 when adopted.
 */
static int adopt_own_folder(sqlite3 *db, const char *id, int64_t parent, const char *name)
{
	int64_t ino = 0;
	int r = cache_db_int(
		db, &ino,
		"SELECT f.ino FROM folders f JOIN nodes n ON n.ino = f.ino WHERE f.id IS NULL AND "
		"n.parent = ? AND n.name = ? COLLATE NOCASE AND EXISTS (SELECT 1 FROM outbox o "
		"WHERE o.folder = f.ino AND o.op = ?) ORDER BY f.ino LIMIT 1",
		"iti", parent, name, (int64_t)OP_FOLDER_CREATE);

	if (r <= 0)
		return r;
	log_info("cache: folder %s is our own create, whose answer was lost: taken as ours", name);
	if ((r = cache_db_run(db, "UPDATE folders SET id = ? WHERE ino = ?", "ti", id, ino)) ||
	    (r = cache_db_run(db, "DELETE FROM outbox WHERE folder = ? AND op = ?", "ii", ino,
			      (int64_t)OP_FOLDER_CREATE)))
		return r;
	return 1;
}

static int apply_folder(const struct folder_round *f, sqlite3 *db, const cJSON *item,
			struct events *ev)
{
	const char *id = cache_jstr(item, "id"), *name = cache_jstr(item, "displayName");
	const char *parent_id = cache_jstr(item, "parentFolderId");
	int64_t ino = 0, parent = CACHE_ROOT_INO;
	char safe[256], unique[256];
	int r;

	/* A reading of contactFolders/delta that lists the default folder
	 * too: it is the mount's root, not a folder in it. */
	if (!id || !strcmp(id, f->default_id))
		return 0;
	r = folder_ino(db, id, &ino);
	if (r && r != -ENOENT)
		return r;
	if (cJSON_GetObjectItemCaseSensitive(item, "@removed")) {
		/* A folder we do not know (or no longer: our own rmdir) has
		 * nothing to remove; one with changes of ours queued stays. */
		if (r == -ENOENT)
			return 0;
		if ((r = folder_busy(db, ino)) != 0)
			return r < 0 ? r : 0;
		return drop_subtree(db, ino, ev);
	}
	if (parent_id && folder_ino(db, parent_id, &parent))
		parent = CACHE_ROOT_INO; /* the default folder, or one we do not know */
	if (!cache_safe_name(name, "", safe, sizeof(safe)))
		snprintf(safe, sizeof(safe), "Folder");
	if (r == -ENOENT) {
		if ((r = adopt_own_folder(db, id, parent, safe)) != 0)
			return r < 0 ? r : 0;
		if ((r = cache_tree_unique_name(db, (uint64_t)parent, safe, unique)) ||
		    (r = cache_db_run(
			     db,
			     "INSERT INTO nodes(parent, name, kind, mtime_ns) VALUES(?, ?, ?, ?)",
			     "itii", parent, unique, (int64_t)CACHE_FOLDER, cache_now_ns())))
			return r;
		ino = sqlite3_last_insert_rowid(db);
		if ((r = cache_db_run(db, "INSERT INTO folders(ino, id) VALUES(?, ?)", "it", ino,
				      id)))
			return r;
		cache_events_add(ev, CACHE_ADDED, (uint64_t)ino, (uint64_t)parent, unique, 0, NULL);
		return 0;
	}
	/* Renamed or moved on the server, unless a rename of ours waits. */
	{
		sqlite3_stmt *st;
		int64_t old_parent = 0, busy = 0;
		char old[256] = "";

		if ((r = cache_db_prepare(db, &st, "SELECT parent, name FROM nodes WHERE ino = ?",
					  "i", ino)))
			return r;
		if (cache_db_step(st) == 1) {
			old_parent = sqlite3_column_int64(st, 0);
			snprintf(old, sizeof(old), "%s", sqlite3_column_text(st, 1));
		}
		cache_db_release(st);
		if ((r = cache_db_int(db, &busy,
				      "SELECT count(*) FROM outbox WHERE folder = ? AND op = ?",
				      "ii", ino, (int64_t)OP_FOLDER_RENAME)) < 0)
			return r;
		if (busy || (old_parent == parent && !strcmp(old, safe)))
			return 0;
		if (old_parent == parent && !strncmp(old, safe, strlen(safe)) &&
		    !strncmp(old + strlen(safe), " (", 2))
			return 0; /* numbered beside a namesake */
		if ((r = cache_tree_unique_name(db, (uint64_t)parent, safe, unique)) ||
		    (r = cache_db_run(db, "UPDATE nodes SET parent = ?, name = ? WHERE ino = ?",
				      "iti", parent, unique, ino)))
			return r;
		cache_events_add(ev, CACHE_RENAMED, (uint64_t)ino, (uint64_t)parent, unique,
				 (uint64_t)old_parent, old);
	}
	return 0;
}

/* After reading every folder: those the server no longer has (and that
 * have nothing of ours queued) go. */
static int drop_unseen_folders(sqlite3 *db, const cJSON *seen, struct events *ev)
{
	sqlite3_stmt *st;
	int64_t gone[64];
	size_t n = 0;
	int r = cache_db_prepare(db, &st, "SELECT ino, id FROM folders WHERE id IS NOT NULL", NULL);

	while (!r && n < 64 && (r = cache_db_step(st)) == 1) {
		r = 0;
		if (!cJSON_GetObjectItemCaseSensitive(seen,
						      (const char *)sqlite3_column_text(st, 1)))
			gone[n++] = sqlite3_column_int64(st, 0);
	}
	if (st)
		cache_db_release(st);
	if (r < 0)
		return r;
	r = 0;
	for (size_t i = 0; i < n && !r; i++) {
		int busy = folder_busy(db, gone[i]);

		r = busy < 0 ? busy : busy ? 0 : drop_subtree(db, gone[i], ev);
	}
	return r;
}

/* Whether delta named a folder inside another one: then it reports nested
 * folders, and the tree need not be listed between full rounds. */
static int delta_shows_nesting(sqlite3 *db, const struct folder_round *f, int delta_items)
{
	for (int i = 0; i < delta_items; i++) {
		const cJSON *it = cJSON_GetArrayItem(f->items, i);
		const char *pid = cache_jstr(it, "parentFolderId");
		int64_t ino;

		if (!pid || !strcmp(pid, f->default_id) ||
		    cJSON_GetObjectItemCaseSensitive(it, "@removed"))
			continue;
		if (!folder_ino(db, pid, &ino))
			return 1;
		for (int j = 0; j < delta_items; j++)
			if (j != i &&
			    !strcmp(pid, cache_jstr(cJSON_GetArrayItem(f->items, j), "id") ?: ""))
				return 1;
	}
	return 0;
}

/* The default folder's id, learned once and kept in meta; NULL (0
 * returned) while the mailbox cannot tell (nothing in its default folder). */
static int default_folder(struct cache *c, char **id)
{
	int r;

	if ((*id = cache_db_meta_get(c->sdb, "default_folder")))
		return 0;
	if ((r = graph_default_folder(c->g, id)) || !*id)
		return r;
	if ((r = cache_db_meta_set(c->sdb, "default_folder", *id))) {
		free(*id);
		*id = NULL;
	}
	return r;
}

static int sync_folders(struct cache *c, const char *default_id)
{
	sqlite3 *db = c->sdb;
	char *link = cache_db_meta_get(db, "folders_delta"), *next = NULL, *nested = NULL;
	struct events ev = {0};
	struct folder_round f = {cJSON_CreateArray(), default_id};
	cJSON *seen = NULL;
	int full = !link, walk, delta_items, r;

	if (!f.items) {
		free(link);
		return -ENOMEM;
	}
	if (link && !graph_link_is_ours(c->g, link)) {
		/* Another graph_url than the cursors were made with. */
		log_info("cache: the stored delta cursors are of another service root; reading "
			 "every folder again");
		free(link);
		link = NULL;
		full = 1;
	}
	r = graph_delta(c->g, link ? link : "/contactFolders/delta", 0, collect, &f, &next);
	if (r == -ESTALE) {
		log_info("cache: the folder delta cursor expired; reading every folder again");
		cJSON_Delete(f.items);
		f.items = cJSON_CreateArray();
		full = 1;
		free(next);
		next = NULL;
		r = f.items ? graph_delta(c->g, "/contactFolders/delta", 0, collect, &f, &next)
			    : -ENOMEM;
	}
	if (r)
		goto out;
	/* Whether delta lists nested folders is not documented: unless it has
	 * shown that it does, the tree is also listed, on full rounds and
	 * every FOLDER_WALK_EVERY rounds, and the listing is complete. */
	delta_items = cJSON_GetArraySize(f.items);
	nested = cache_db_meta_get(db, "folders_nested");
	if (!nested && delta_shows_nesting(db, &f, delta_items)) {
		if ((r = cache_db_meta_set(db, "folders_nested", "delta")))
			goto out;
		nested = strdup("delta");
	}
	walk = full || (!nested && c->folder_walk_in <= 0);
	if (walk) {
		if ((r = graph_folder_walk(c->g, collect, &f)))
			goto out;
		full = 1;
		c->folder_walk_in = FOLDER_WALK_EVERY;
	} else {
		c->folder_walk_in--;
	}
	if (full && !(seen = cJSON_CreateObject())) {
		r = -ENOMEM;
		goto out;
	}
	for (int i = 0; full && i < cJSON_GetArraySize(f.items); i++) {
		const cJSON *it = cJSON_GetArrayItem(f.items, i);
		const char *id = cache_jstr(it, "id");

		if (id && !cJSON_GetObjectItemCaseSensitive(it, "@removed") &&
		    !cJSON_GetObjectItemCaseSensitive(seen, id) &&
		    !cJSON_AddTrueToObject(seen, id)) {
			r = -ENOMEM;
			goto out;
		}
	}
	if ((r = cache_db_begin(db)))
		goto out;
	/* Parents first: a pass places every folder whose parent is known;
	 * repeat while that helps. */
	for (int pass = 0; pass < 64 && cJSON_GetArraySize(f.items) > 0 && !r; pass++) {
		int before = cJSON_GetArraySize(f.items);

		for (int i = 0; i < cJSON_GetArraySize(f.items) && !r;) {
			cJSON *it = cJSON_GetArrayItem(f.items, i);
			const char *pid = cache_jstr(it, "parentFolderId");
			int64_t pino;
			int known = !pid || cJSON_GetObjectItemCaseSensitive(it, "@removed") ||
				    !strcmp(pid, default_id) || !folder_ino(db, pid, &pino);
			int pending = 0;

			/* Is the parent itself still waiting in this round? */
			for (int j = 0; !known && j < cJSON_GetArraySize(f.items); j++) {
				const char *jid = cache_jstr(cJSON_GetArrayItem(f.items, j), "id");

				if (j != i && jid && pid && !strcmp(jid, pid))
					pending = 1;
			}
			if (!known && pending && pass < 63) {
				i++;
				continue;
			}
			/* Neither in the default folder nor in one of its
			 * folders (the default folder itself, in a reading of
			 * delta that lists it): not a folder of the mount. */
			if (!known && !pending) {
				cJSON_DeleteItemFromArray(f.items, i);
				continue;
			}
			r = apply_folder(&f, db, it, &ev);
			cJSON_DeleteItemFromArray(f.items, i);
		}
		if (cJSON_GetArraySize(f.items) == before)
			break;
	}
	if (!r && full)
		r = drop_unseen_folders(db, seen, &ev);
	if (!r && next)
		r = cache_db_meta_set(db, "folders_delta", next);
	r = r ? (cache_db_rollback(db), r) : cache_db_commit(db);
out:
	cache_events_flush(c, &ev, !r);
	cJSON_Delete(f.items);
	cJSON_Delete(seen);
	free(nested);
	free(link);
	free(next);
	return r;
}

/* ---- contacts ------------------------------------------------------------------------------ */

struct contact_round {
	struct cache *c;
	int64_t folder;
	int full;	  /* no cursor: every contact comes; the rest are gone */
	cJSON *pending;	  /* items not yet applied */
	unsigned changed; /* contacts stored for rendering */
	struct events *ev;
	cJSON *changed_ids; /* incremental rounds, -o followup: ids stored (flags read again) */
};

/* The stored extension of contact id (from a first sync's listing). */
static cJSON *stored_ext(sqlite3 *db, const char *id)
{
	sqlite3_stmt *st;
	cJSON *ext = NULL;

	if (cache_db_prepare(db, &st, "SELECT body FROM exts WHERE id = ?", "t", id))
		return NULL;
	if (cache_db_step(st) == 1)
		ext = cJSON_Parse((const char *)sqlite3_column_text(st, 0));
	cache_db_release(st);
	return ext;
}

static int apply_contact(struct contact_round *cr, sqlite3 *db, cJSON *item)
{
	const char *id = cache_jstr(item, "id"), *ck = cache_jstr(item, "changeKey");
	sqlite3_stmt *st;
	int64_t cid = 0, folder = 0;
	char *old_ck = NULL, *old_json = NULL;
	cJSON *exts = NULL;
	char *text = NULL;
	int r, busy;

	if (!id)
		return 0;
	if (cr->full && (r = cache_db_run(db, "INSERT OR IGNORE INTO seen(id) VALUES(?)", "t", id)))
		return r;
	if ((r = cache_db_prepare(db, &st,
				  "SELECT cid, folder, change_key, json FROM contacts WHERE id = ?",
				  "t", id)))
		return r;
	if ((r = cache_db_step(st)) == 1) {
		cid = sqlite3_column_int64(st, 0);
		folder = sqlite3_column_int64(st, 1);
		old_ck = cache_db_strdup(st, 2);
		old_json = cache_db_strdup(st, 3);
	}
	cache_db_release(st);
	if (r < 0)
		goto out;
	r = 0;
	if (!cid) {
		/* The old copy of a move of ours, not deleted yet: the move
		 * reads it before deleting it and carries a change of it into
		 * the new copy (outbox.c carry_old_change); never a stranger. */
		int64_t moving = 0;

		if ((r = cache_db_int(db, &moving,
				      "SELECT count(*) FROM outbox WHERE op = ? AND arg = ?", "it",
				      (int64_t)OP_MOVE, id)) < 0)
			goto out;
		r = 0;
		if (moving)
			goto out;
	}
	busy = cid ? cache_outbox_has(db, cid) : 0;
	if (busy < 0) {
		r = busy;
		goto out;
	}
	if (cJSON_GetObjectItemCaseSensitive(item, "@removed")) {
		struct {
			int64_t ino, parent;
			char name[256];
		} g = {0};

		/* Not ours, ours elsewhere (moved out of this folder), or
		 * with changes of ours queued: left alone. */
		if (!cid || folder != cr->folder || busy)
			goto out;
		if ((r = cache_db_prepare(db, &st,
					  "SELECT ino, parent, name FROM nodes WHERE cid = ?", "i",
					  cid)))
			goto out;
		if (cache_db_step(st) == 1) {
			g.ino = sqlite3_column_int64(st, 0);
			g.parent = sqlite3_column_int64(st, 1);
			snprintf(g.name, sizeof(g.name), "%s", sqlite3_column_text(st, 2));
		}
		cache_db_release(st);
		if ((r = cache_db_run(db, "DELETE FROM nodes WHERE cid = ?", "i", cid)) ||
		    (r = cache_db_run(db, "DELETE FROM contacts WHERE cid = ?", "i", cid)))
			goto out;
		if (g.ino)
			cache_events_add(cr->ev, CACHE_REMOVED, (uint64_t)g.ino, (uint64_t)g.parent,
					 g.name, 0, NULL);
		goto out;
	}
	if (busy)
		goto out; /* our update's If-Match settles it */
	if (cid && folder == cr->folder && old_ck && ck && !strcmp(old_ck, ck))
		goto out; /* a replay, or our own change coming back */
	/* Graph's delta has no extensions: keep the ones we know. */
	if (cr->full && (exts = stored_ext(db, id)) != NULL) {
		cJSON *arr = cJSON_CreateArray();

		if (!arr || !cJSON_AddItemToArray(arr, exts)) {
			cJSON_Delete(arr);
			cJSON_Delete(exts);
			r = -ENOMEM;
			goto out;
		}
		cJSON_AddItemToObject(item, "extensions", arr);
	} else if (old_json) {
		cJSON *old = cJSON_Parse(old_json);
		cJSON *oe = old ? cJSON_DetachItemFromObjectCaseSensitive(old, "extensions") : NULL;

		if (oe)
			cJSON_AddItemToObject(item, "extensions", oe);
		cJSON_Delete(old);
	}
	text = cJSON_PrintUnformatted(item);
	if (!text) {
		r = -ENOMEM;
		goto out;
	}
	if (cid)
		r = cache_db_run(
			db,
			"UPDATE contacts SET folder = ?, change_key = ?, json = ?, render = 1, "
			"photo_state = 0 WHERE cid = ?",
			"itti", cr->folder, ck, text, cid);
	else
		r = cache_db_run(
			db,
			"INSERT INTO contacts(id, folder, change_key, json, render) VALUES(?, "
			"?, ?, "
			"?, 1)",
			"titt", id, cr->folder, ck, text);
	cr->changed++;
out:
	free(old_ck);
	free(old_json);
	free(text);
	return r;
}

/* Apply the buffered items of a round in one transaction, rendering each
 * at once (so a file never shows an older version than its base). */
static int flush_items(struct contact_round *cr)
{
	sqlite3 *db = cr->c->sdb;
	int n = cJSON_GetArraySize(cr->pending), r;

	if (!n)
		return 0;
	pthread_mutex_lock(&cr->c->sdb_lock);
	if ((r = cache_db_begin(db))) {
		pthread_mutex_unlock(&cr->c->sdb_lock);
		return r;
	}
	for (int i = 0; i < n && !r; i++) {
		cJSON *it = cJSON_GetArrayItem(cr->pending, i);
		unsigned before = cr->changed;

		r = apply_contact(cr, db, it);
		if (!r && cr->changed != before) {
			int64_t cid = 0;

			r = cache_db_int(db, &cid, "SELECT cid FROM contacts WHERE id = ?", "t",
					 cache_jstr(it, "id"));
			/* A first round knows the extensions already (listed
			 * before): a stray copy of ours never gets a file. */
			if (r == 1 && cr->full) {
				r = cache_tree_drop_stray(cr->c, db, cid, cache_ext_of(it), cr->ev);
				r = r < 0 ? r : r ? 0 : 1;
			}
			r = r < 0 ? r : r ? cache_tree_render(cr->c, db, cid, cr->ev) : 0;
			/* Its extension is read after the page (refresh_exts),
			 * due until then. */
			if (!r && !cr->full)
				r = cache_db_run(db, "INSERT OR IGNORE INTO exts_due(id) VALUES(?)",
						 "t", cache_jstr(it, "id"));
			if (!r && cr->changed_ids && !cr->full)
				cJSON_AddItemToArray(cr->changed_ids,
						     cJSON_CreateString(cache_jstr(it, "id")));
		}
	}
	r = r ? (cache_db_rollback(db), r) : cache_db_commit(db);
	pthread_mutex_unlock(&cr->c->sdb_lock);
	cJSON_Delete(cr->pending);
	cr->pending = cJSON_CreateArray();
	if (!r) {
		cache_events_flush(cr->c, cr->ev, 1);
		memset(cr->ev, 0, sizeof(*cr->ev));
	}
	return r ? r : cr->pending ? 0 : -ENOMEM;
}

static int on_contact(const cJSON *item, void *ctx)
{
	struct contact_round *cr = ctx;
	cJSON *copy = cJSON_Duplicate(item, 1);

	if (!copy || !cJSON_AddItemToArray(cr->pending, copy)) {
		cJSON_Delete(copy);
		return -ENOMEM;
	}
	return cJSON_GetArraySize(cr->pending) >= APPLY_CHUNK ? flush_items(cr) : 0;
}

/* ---- extensions -------------------------------------------------------------------------------- */

static int set_ext(struct cache *c, sqlite3 *db, const char *id, const cJSON *ext,
		   struct events *ev);

struct ext_list {
	struct cache *c;
	cJSON *buf; /* [id, body] pairs not yet stored */
	int late;   /* after the folder was read: given to the contacts without one */
};

/* Contact id, listed with extension ext after its folder was read in full,
 * gets it if it was stored without one (its extension was made after the
 * first listing, whose bodies are in exts until the round ends). In a
 * transaction. */
static int late_ext(struct cache *c, sqlite3 *db, const char *id, const cJSON *ext,
		    struct events *ev)
{
	sqlite3_stmt *st;
	int64_t known = 0;
	int r, bare = 0;

	/* Listed the first time: the contact has it already. */
	if ((r = cache_db_int(db, &known, "SELECT count(*) FROM exts WHERE id = ?", "t", id)) < 0)
		return r;
	if (known)
		return 0;
	if ((r = cache_db_prepare(db, &st, "SELECT json FROM contacts WHERE id = ?", "t", id)))
		return r;
	if ((r = cache_db_step(st)) == 1) {
		cJSON *json = cJSON_Parse((const char *)sqlite3_column_text(st, 0));

		bare = json && !cache_ext_of(json);
		cJSON_Delete(json);
	}
	cache_db_release(st);
	if (r < 0)
		return r;
	return bare ? set_ext(c, db, id, ext, ev) : 0;
}

static int store_exts(struct ext_list *x)
{
	sqlite3 *db = x->c->sdb;
	struct events ev = {0};
	int r, n = cJSON_GetArraySize(x->buf);

	if (!n)
		return 0;
	pthread_mutex_lock(&x->c->sdb_lock);
	if (!(r = cache_db_begin(db))) {
		for (int i = 0; i + 1 < n && !r; i += 2) {
			const char *id = cJSON_GetStringValue(cJSON_GetArrayItem(x->buf, i));
			const cJSON *ext = cJSON_GetArrayItem(x->buf, i + 1);
			char *body;

			if (x->late) {
				r = late_ext(x->c, db, id, ext, &ev);
				continue;
			}
			body = cJSON_PrintUnformatted(ext);
			r = body ? cache_db_run(db,
						"INSERT OR REPLACE INTO exts(id, body) VALUES(?, ?)",
						"tt", id, body)
				 : -ENOMEM;
			free(body);
		}
		r = r ? (cache_db_rollback(db), r) : cache_db_commit(db);
	}
	pthread_mutex_unlock(&x->c->sdb_lock);
	cache_events_flush(x->c, &ev, !r);
	cJSON_Delete(x->buf);
	x->buf = cJSON_CreateArray();
	return r ? r : x->buf ? 0 : -ENOMEM;
}

static int on_ext(const char *id, const cJSON *e, void *ctx)
{
	struct ext_list *x = ctx;

	if (!cJSON_AddItemToArray(x->buf, cJSON_CreateString(id)) ||
	    !cJSON_AddItemToArray(x->buf, cJSON_Duplicate(e, 1)))
		return -ENOMEM;
	return cJSON_GetArraySize(x->buf) >= 1000 ? store_exts(x) : 0;
}

/* Every extension of the folder into the exts table; late: to the contacts
 * stored without one instead (store_exts). */
static int list_exts(struct cache *c, const char *base, int late)
{
	struct ext_list x = {c, cJSON_CreateArray(), late};
	int r;

	if (!x.buf)
		return -ENOMEM;
	r = cache_fetch_exts(c->g, base, on_ext, &x);
	if (!r)
		r = store_exts(&x);
	cJSON_Delete(x.buf);
	return r;
}

/* ---- which contacts have a photo ---------------------------------------------------------------- */

/*
 * photo_state (docs/cache.md): 0 to fetch, 1 known, 2 to probe as a check
 * of PidLidHasPicture, 3 none by PidLidHasPicture (not probed). A contact
 * is marked 3 only when no photo of it is stored: one that had a photo is
 * always probed, so a flag that is wrong can never take a photo away.
 */

/* Contacts whose photo_state one transaction changes (cache_db_run_chunked). */
#define PHOTO_CHUNK "1000"

static int on_photo_flag(const char *id, void *ctx)
{
	return cJSON_AddItemToArray(ctx, cJSON_CreateString(id)) ? 0 : -ENOMEM;
}

/* Stop trusting the flag for this mount: everything it said has no photo
 * is probed. */
static int photo_flags_fallback(struct cache *c, const char *why)
{
	if (!c->photo_flags_off)
		log_info("cache: %s; probing every contact's photo for this mount", why);
	c->photo_flags_off = 1;
	return cache_db_run_chunked(c->sdb,
				    "UPDATE contacts SET photo_state = 0 WHERE cid IN (SELECT cid FROM "
				    "contacts WHERE photo_state IN (2, 3) LIMIT " PHOTO_CHUNK ")",
				    NULL);
}

/* After a folder's round: its contacts still to fetch, with no photo
 * stored, whose flag is not true are marked 3. One list of the folder's
 * flagged contacts, and only when there is such a contact. Then sample of
 * those, at random, are probed all the same (2): if one has a photo,
 * whoever writes this mailbox does not keep the flag, and every contact is
 * probed (cache_sync_photos). */
static int photo_flags_read(struct cache *c, int64_t folder, const char *base, int64_t sample)
{
	sqlite3 *db = c->sdb;
	cJSON *ids = NULL;
	int64_t todo = 0;
	int r;

	if (!c->cfg.photos)
		return 0;
	pthread_mutex_lock(&c->sdb_lock);
	r = c->photo_flags_off
		    ? 0
		    : cache_db_int(db, &todo,
				   "SELECT count(*) FROM contacts WHERE folder = ? AND "
				   "photo_state = 0 AND photo IS NULL AND id IS NOT NULL",
				   "i", folder);
	pthread_mutex_unlock(&c->sdb_lock);
	if (r < 0 || !todo)
		return r < 0 ? r : 0;
	if (!(ids = cJSON_CreateArray()))
		return -ENOMEM;
	r = cache_fetch_photo_flags(c->g, base, on_photo_flag, ids);
	pthread_mutex_lock(&c->sdb_lock);
	if (cache_photo_flags_refused(r)) {
		r = photo_flags_fallback(c, "the server does not list contacts by "
					    "PidLidHasPicture");
		goto out;
	}
	if (r || (r = cache_db_begin(db)))
		goto out;
	r = cache_db_run(
		db,
		"CREATE TEMP TABLE IF NOT EXISTS photo_flagged(id TEXT PRIMARY KEY) WITHOUT "
		"ROWID",
		NULL);
	if (!r)
		r = cache_db_run(db, "DELETE FROM temp.photo_flagged", NULL);
	for (int i = 0; !r && i < cJSON_GetArraySize(ids); i++)
		r = cache_db_run(db, "INSERT OR IGNORE INTO temp.photo_flagged(id) VALUES(?)", "t",
				 cJSON_GetStringValue(cJSON_GetArrayItem(ids, i)));
	r = r ? (cache_db_rollback(db), r) : cache_db_commit(db);
	/* A chunk at a time: the folder may hold every contact of the
	 * mailbox. Cut short (a crash), the rest stay 0 and are probed; the
	 * folder's cursor is stored only after this, so its next round does
	 * it all again, the sample too. */
	if (!r)
		r = cache_db_run_chunked(
			db,
			"UPDATE contacts SET photo_state = 3 WHERE cid IN (SELECT cid FROM contacts "
			"WHERE folder = ? AND photo_state = 0 AND photo IS NULL AND id IS NOT NULL "
			"AND id NOT IN (SELECT id FROM temp.photo_flagged) LIMIT " PHOTO_CHUNK ")",
			"i", folder);
	if (!r && sample)
		r = cache_db_run(
			db,
			"UPDATE contacts SET photo_state = 2 WHERE cid IN (SELECT cid FROM "
			"contacts WHERE folder = ? AND photo_state = 3 ORDER BY random() LIMIT ?)",
			"ii", folder, sample);
out:
	pthread_mutex_unlock(&c->sdb_lock);
	cJSON_Delete(ids);
	return r;
}

/* Set contact id's extension to ext (or leave it) and render it again if
 * that changed anything. In a transaction. */
static int set_ext(struct cache *c, sqlite3 *db, const char *id, const cJSON *ext,
		   struct events *ev)
{
	sqlite3_stmt *st;
	cJSON *json = NULL, *arr;
	int64_t cid = 0;
	char *text = NULL;
	int r, busy;

	if ((r = cache_db_prepare(db, &st, "SELECT cid, json FROM contacts WHERE id = ?", "t", id)))
		return r;
	if (cache_db_step(st) == 1) {
		cid = sqlite3_column_int64(st, 0);
		json = cJSON_Parse((const char *)sqlite3_column_text(st, 1));
	}
	cache_db_release(st);
	if (!json)
		return 0;
	if ((r = cache_tree_drop_stray(c, db, cid, ext, ev)) != 0) {
		cJSON_Delete(json);
		return r < 0 ? r : 0;
	}
	if (cJSON_Compare(cache_ext_of(json), ext, 1) || (busy = cache_outbox_has(db, cid)) != 0) {
		cJSON_Delete(json);
		return 0;
	}
	cJSON_DeleteItemFromObjectCaseSensitive(json, "extensions");
	arr = cJSON_AddArrayToObject(json, "extensions");
	if (arr && ext)
		cJSON_AddItemToArray(arr, cJSON_Duplicate(ext, 1));
	text = cJSON_PrintUnformatted(json);
	r = text ? cache_db_run(db, "UPDATE contacts SET json = ? WHERE cid = ?", "ti", text, cid)
		 : -ENOMEM;
	if (!r)
		r = cache_tree_render(c, db, cid, ev);
	free(text);
	cJSON_Delete(json);
	return r;
}

/*
 * The extensions of the folder's contacts that incremental rounds stored
 * and that were not read since (exts_due; Graph's delta has none). One the
 * server does not give now stays due for the next round: the folder's
 * cursor moves on, so the contact comes again only when it changes, and
 * its extension (the UID another client gave it; the key that shows a copy
 * of our own create, set_ext) would never be read.
 */
static int refresh_exts(struct cache *c, int64_t folder, const char *base)
{
	cJSON *ids = cJSON_CreateArray();
	struct events ev = {0};
	sqlite3_stmt *st;
	int n, r, left = 0;

	if (!ids)
		return -ENOMEM;
	pthread_mutex_lock(&c->sdb_lock);
	if (!(r = cache_db_prepare(c->sdb, &st,
				   "SELECT d.id FROM exts_due d JOIN contacts c ON c.id = d.id "
				   "WHERE c.folder = ? ORDER BY c.cid",
				   "i", folder))) {
		while ((r = cache_db_step(st)) == 1)
			if (!cJSON_AddItemToArray(ids, cJSON_CreateString((const char *)
									   sqlite3_column_text(st, 0)))) {
				r = -ENOMEM;
				break;
			}
		cache_db_release(st);
	}
	pthread_mutex_unlock(&c->sdb_lock);
	n = cJSON_GetArraySize(ids);
	for (int start = 0; start < n && !r; start += GRAPH_BATCH_MAX) {
		struct graph_batch_item items[GRAPH_BATCH_MAX];
		char urls[GRAPH_BATCH_MAX][1024];
		int k = 0;

		memset(items, 0, sizeof(items));
		for (int i = start; i < n && k < GRAPH_BATCH_MAX; i++, k++) {
			snprintf(urls[k], sizeof(urls[k]),
				 "%s/contacts/"
				 "%s?$select=id&$expand=Extensions($filter=id%%20eq%%20'%s')",
				 base, cJSON_GetStringValue(cJSON_GetArrayItem(ids, i)), EXT_ID);
			items[k].method = "GET";
			items[k].url = urls[k];
		}
		if ((r = graph_batch(c->g, items, (size_t)k))) {
			graph_batch_release(items, (size_t)k);
			break;
		}
		pthread_mutex_lock(&c->sdb_lock);
		if (!(r = cache_db_begin(c->sdb))) {
			for (int i = 0; i < k && !r; i++) {
				const char *id = cJSON_GetStringValue(cJSON_GetArrayItem(ids, start + i));

				if (graph_status_transient(items[i].status)) {
					left++;
					continue;
				}
				/* 404: gone since; delta says so. Another
				 * refusal would only come again. */
				if (items[i].status == 200)
					r = set_ext(c, c->sdb, id, cache_ext_of(items[i].response), &ev);
				if (!r)
					r = cache_db_run(c->sdb, "DELETE FROM exts_due WHERE id = ?", "t",
							 id);
			}
			r = r ? (cache_db_rollback(c->sdb), r) : cache_db_commit(c->sdb);
		}
		pthread_mutex_unlock(&c->sdb_lock);
		graph_batch_release(items, (size_t)k);
		cache_events_flush(c, &ev, !r);
	}
	if (left)
		log_warn("cache: the server did not give the extensions of %d contacts of folder "
			 "%lld; asking again at the next round",
			 left, (long long)folder);
	cJSON_Delete(ids);
	return r;
}

/* ---- follow-up flags (-o followup) -------------------------------------------------------------------- */

/* Delta rounds between two listings of every folder's flags. Whether a
 * change of the flag alone gives the contact a new change key (so that
 * v1.0 delta reports it) is not documented: the listing on the first round
 * of a mount, on full rounds and every so many rounds finds what delta
 * does not say. */
#define FLAG_LIST_EVERY 12
#define FLAG_LIST "/contacts?$select=flag&$top=1000"

/* Store flag (as Graph's beta gives it) for contact id, and render the
 * contact again when the flag says something else now (later, if changes
 * of ours wait). In a transaction. */
static int set_flag(struct cache *c, sqlite3 *db, const char *id, const cJSON *flag,
		    struct events *ev)
{
	sqlite3_stmt *st;
	cJSON *old = NULL;
	char *text = NULL, *old_text = NULL;
	int64_t cid = 0;
	int r, busy;

	if (!id || !cJSON_IsObject(flag))
		return 0;
	if ((r = cache_db_prepare(db, &st, "SELECT cid, flag FROM contacts WHERE id = ?", "t", id)))
		return r;
	if ((r = cache_db_step(st)) == 1) {
		cid = sqlite3_column_int64(st, 0);
		old_text = cache_db_strdup(st, 1);
	}
	cache_db_release(st);
	if (r <= 0)
		return r; /* not ours (yet): delta brings it, and a read of its flag */
	if (!(text = cJSON_PrintUnformatted(flag))) {
		r = -ENOMEM;
		goto out;
	}
	if (old_text && !strcmp(old_text, text)) {
		r = 0;
		goto out;
	}
	old = old_text ? cJSON_Parse(old_text) : NULL;
	if ((r = cache_db_run(db, "UPDATE contacts SET flag = ? WHERE cid = ?", "ti", text, cid)) ||
	    vcard_followup_same(old, flag))
		goto out;
	busy = cache_outbox_has(db, cid);
	if (busy < 0)
		r = busy;
	else if (busy) /* cache_sync_render shows it once our changes are sent */
		r = cache_db_run(db, "UPDATE contacts SET render = 1 WHERE cid = ?", "i", cid);
	else
		r = cache_tree_render(c, db, cid, ev);
out:
	cJSON_Delete(old);
	free(old_text);
	free(text);
	return r;
}

struct flag_list {
	struct cache *c;
	cJSON *buf; /* [id, flag] pairs not yet stored */
};

static int store_flags(struct flag_list *x)
{
	struct events ev = {0};
	sqlite3 *db = x->c->sdb;
	int r, n = cJSON_GetArraySize(x->buf);

	if (!n)
		return 0;
	pthread_mutex_lock(&x->c->sdb_lock);
	if ((r = cache_db_begin(db))) {
		pthread_mutex_unlock(&x->c->sdb_lock);
		return r;
	}
	for (int i = 0; i + 1 < n && !r; i += 2)
		r = set_flag(x->c, db, cJSON_GetStringValue(cJSON_GetArrayItem(x->buf, i)),
			     cJSON_GetArrayItem(x->buf, i + 1), &ev);
	r = r ? (cache_db_rollback(db), r) : cache_db_commit(db);
	pthread_mutex_unlock(&x->c->sdb_lock);
	cache_events_flush(x->c, &ev, !r);
	cJSON_Delete(x->buf);
	x->buf = cJSON_CreateArray();
	return r ? r : x->buf ? 0 : -ENOMEM;
}

static int on_flag(const cJSON *item, void *ctx)
{
	struct flag_list *x = ctx;
	const char *id = cache_jstr(item, "id");
	const cJSON *flag = cJSON_GetObjectItemCaseSensitive(item, "flag");

	if (!id || !cJSON_IsObject(flag))
		return 0;
	if (!cJSON_AddItemToArray(x->buf, cJSON_CreateString(id)) ||
	    !cJSON_AddItemToArray(x->buf, cJSON_Duplicate(flag, 1)))
		return -ENOMEM;
	return cJSON_GetArraySize(x->buf) >= 1000 ? store_flags(x) : 0;
}

/* Every flag of a folder, by the beta list of its contacts (collection:
 * "/contactFolders/ID", the default folder's by its id too: in beta,
 * /contacts spans the whole mailbox). */
static int list_flags(struct cache *c, const char *collection)
{
	struct flag_list x = {c, cJSON_CreateArray()};
	char path[1024];
	int r;

	if (!x.buf)
		return -ENOMEM;
	snprintf(path, sizeof(path), GRAPH_BETA "%s" FLAG_LIST, collection);
	r = graph_list(c->g, path, NULL, 0, on_flag, &x);
	if (!r)
		r = store_flags(&x);
	cJSON_Delete(x.buf);
	return r;
}

/* The flags of the contacts an incremental round reported changed: a beta
 * $batch of GET /contacts/{id}?$select=flag (any folder, in beta). */
static int refresh_flags(struct cache *c, const cJSON *ids)
{
	int n = cJSON_GetArraySize(ids), r = 0, refused = 0;

	for (int start = 0; start < n && !r; start += GRAPH_BATCH_MAX) {
		struct graph_batch_item items[GRAPH_BATCH_MAX];
		char urls[GRAPH_BATCH_MAX][1024];
		struct events ev = {0};
		int k = 0;

		memset(items, 0, sizeof(items));
		for (int i = start; i < n && k < GRAPH_BATCH_MAX; i++, k++) {
			snprintf(urls[k], sizeof(urls[k]), GRAPH_BETA "/contacts/%s?$select=flag",
				 cJSON_GetStringValue(cJSON_GetArrayItem(ids, i)));
			items[k].method = "GET";
			items[k].url = urls[k];
		}
		if ((r = graph_batch(c->g, items, (size_t)k))) {
			graph_batch_release(items, (size_t)k);
			break;
		}
		pthread_mutex_lock(&c->sdb_lock);
		if (!(r = cache_db_begin(c->sdb))) {
			for (int i = 0; i < k && !r; i++) {
				if (items[i].status == 200)
					r = set_flag(c, c->sdb,
						     cJSON_GetStringValue(
							     cJSON_GetArrayItem(ids, start + i)),
						     cJSON_GetObjectItemCaseSensitive(
							     items[i].response, "flag"),
						     &ev);
				else if (items[i].status != 404 && !refused) /* 404: gone */
					refused = graph_errno(items[i].status, items[i].code);
			}
			r = r ? (cache_db_rollback(c->sdb), r) : cache_db_commit(c->sdb);
		}
		pthread_mutex_unlock(&c->sdb_lock);
		graph_batch_release(items, (size_t)k);
		cache_events_flush(c, &ev, !r);
	}
	return r ? r : refused;
}

/* What became of reading flags (r, from list_flags or refresh_flags) in
 * folder: a server that cannot be reached ends the round as any request
 * does (0 or -errno); a refusal is logged (and told in .contactfs/errors
 * once a mount) and 1 returned: the v1.0 round goes on, and the next
 * listing of every flag asks again. */
static int flags_read(struct cache *c, int64_t folder, int r)
{
	if (!r || cache_offline_errno(r) || r == -ENOMEM)
		return r;
	log_warn("cache: reading the follow-up flags of folder %lld from Graph's beta: %s",
		 (long long)folder, strerror(-r));
	pthread_mutex_lock(&c->sdb_lock);
	if (!c->flag_refusal_told && !cache_db_begin(c->sdb)) {
		cache_error(c->sdb, ".contactfs",
			    "the follow-up flags could not be read from Graph's beta (%s); files "
			    "show the flags read before, and they are read again every 12 rounds",
			    strerror(-r));
		if (cache_db_commit(c->sdb))
			cache_db_rollback(c->sdb);
		c->flag_refusal_told = 1;
	}
	pthread_mutex_unlock(&c->sdb_lock);
	return 1;
}

/* ---- one folder's round --------------------------------------------------------------------------- */

/* After a full round: contacts of the folder that did not come (in the
 * reading of any folder this round: one moved here from another folder is
 * moved by that folder's round) are gone from the server, unless we have
 * changes queued for them. */
static int drop_unseen(struct cache *c, int64_t folder, struct events *ev)
{
	sqlite3 *db = c->sdb;
	sqlite3_stmt *st = NULL;
	int64_t *cids = NULL;
	size_t n = 0;
	int r;

	pthread_mutex_lock(&c->sdb_lock);
	if ((r = cache_db_begin(db))) {
		pthread_mutex_unlock(&c->sdb_lock);
		return r;
	}
	r = cache_db_prepare(
		db, &st,
		"SELECT n.ino, n.parent, n.name, c.cid FROM contacts c LEFT JOIN nodes n ON n.cid "
		"= c.cid WHERE c.folder = ? AND c.id IS NOT NULL AND c.id NOT IN (SELECT id FROM "
		"seen) AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.cid = c.cid)",
		"i", folder);
	/* Collected first: no deleting under a running SELECT. */
	while (!r && (r = cache_db_step(st)) == 1) {
		int64_t *more;

		r = 0;
		if (sqlite3_column_type(st, 0) != SQLITE_NULL)
			cache_events_add(ev, CACHE_REMOVED, (uint64_t)sqlite3_column_int64(st, 0),
					 (uint64_t)sqlite3_column_int64(st, 1),
					 (const char *)sqlite3_column_text(st, 2), 0, NULL);
		if (!(more = realloc(cids, (n + 1) * sizeof(*cids)))) {
			r = -ENOMEM;
			break;
		}
		cids = more;
		cids[n++] = sqlite3_column_int64(st, 3);
	}
	cache_db_release(st);
	for (size_t i = 0; i < n && !r; i++) {
		r = cache_db_run(db, "DELETE FROM nodes WHERE cid = ?", "i", cids[i]);
		if (!r)
			r = cache_db_run(db, "DELETE FROM contacts WHERE cid = ?", "i", cids[i]);
	}
	free(cids);
	/* The folder's two listings gave every contact its extension. */
	if (!r)
		r = cache_db_run(db,
				 "DELETE FROM exts_due WHERE id IN (SELECT id FROM contacts WHERE "
				 "folder = ?)",
				 "i", folder);
	r = r ? (cache_db_rollback(db), r) : cache_db_commit(db);
	pthread_mutex_unlock(&c->sdb_lock);
	cache_events_flush(c, ev, !r);
	return r;
}

/*
 * One folder's round, on a worker of the round (cache_sync_in): every use
 * of c->sdb under c->sdb_lock, none across a request. want_flags: read
 * every flag of the folder too (with -o followup; a full round of the
 * folder reads them anyway). sample: how many contacts PidLidHasPicture
 * calls photo-less are probed all the same when the folder is read in full
 * (cache_photo_sample). *skipped is set when the folder was left for a
 * later round (a create of it to settle first), so its flags were not read
 * (a refusal to read them counts as read: asking again at once would only
 * be refused again).
 */
static int sync_folder(struct cache *c, const char *default_id, int64_t folder, char *link,
		       int want_flags, int64_t sample, int *skipped)
{
	struct events ev = {0};
	struct contact_round cr = {c, folder, !link, cJSON_CreateArray(), 0, &ev, NULL};
	char base[512];
	const char *folder_id;
	char *next = NULL;
	int64_t uncertain = 0;
	int r;

	/* Only -o followup reads them (refresh_flags). */
	cr.changed_ids = c->cfg.followup ? cJSON_CreateArray() : NULL;
	if (!cr.pending || (c->cfg.followup && !cr.changed_ids)) {
		r = -ENOMEM;
		goto out;
	}
	if (link && !graph_link_is_ours(c->g, link)) {
		link = NULL; /* made with another graph_url: read the folder again */
		cr.full = 1;
	}
	/* A create that may have reached the server is settled first, or it
	 * would come in as a stranger. */
	pthread_mutex_lock(&c->sdb_lock);
	if (!(r = cache_folder_base(c->sdb, folder, base, sizeof(base))))
		r = cache_db_int(c->sdb, &uncertain,
				 "SELECT count(*) FROM outbox o JOIN contacts k ON k.cid = o.cid "
				 "WHERE o.sent AND NOT o.parked AND k.folder = ?",
				 "i", folder);
	pthread_mutex_unlock(&c->sdb_lock);
	if (r < 0)
		goto out;
	r = 0;
	if (uncertain) {
		*skipped = 1;
		goto out;
	}
	/* Delta reads a folder by its id, the default one's too; base is
	 * "/contactFolders/ID" for the others. */
	folder_id = folder == CACHE_ROOT_INO ? default_id : base + strlen("/contactFolders/");
again:
	if (cr.full && (r = list_exts(c, base, 0)))
		goto out;
	r = cache_fetch_contacts(c->g, folder_id, link, on_contact, &cr, &next);
	if (!r)
		r = flush_items(&cr);
	if (r == -ESTALE && link) {
		log_info(
			"cache: the delta cursor of folder %lld expired; reading it again (changes "
			"queued here are kept)",
			(long long)folder);
		link = NULL;
		cr.full = 1;
		cJSON_Delete(cr.pending);
		cr.pending = cJSON_CreateArray();
		free(next);
		next = NULL;
		goto again;
	}
	/* Extensions were listed before the folder was read: one made in
	 * between (a late copy of a create of ours whose lookup found
	 * nothing, or another client's contact) came without its own. A
	 * second listing gives it, and a copy of ours goes (set_ext). */
	if (!r && cr.full)
		r = list_exts(c, base, 1);
	if (r)
		goto out;
	if (cr.full)
		r = drop_unseen(c, folder, &ev);
	else
		r = refresh_exts(c, folder, base);
	if (!r)
		r = photo_flags_read(c, folder, base, cr.full ? sample : 0);
	if (!r && c->cfg.followup) {
		char coll[600];

		if (folder == CACHE_ROOT_INO)
			snprintf(coll, sizeof(coll), "/contactFolders/%s", default_id);
		else
			snprintf(coll, sizeof(coll), "%s", base);
		if (cr.full || want_flags)
			r = flags_read(c, folder, list_flags(c, coll));
		else if (cJSON_GetArraySize(cr.changed_ids) > 0)
			r = flags_read(c, folder, refresh_flags(c, cr.changed_ids));
		if (r == 1)
			r = 0; /* refused: asked again at the next listing, not at once */
	}
	if (!r && next) {
		pthread_mutex_lock(&c->sdb_lock);
		r = cache_db_run(c->sdb, "UPDATE folders SET delta = ? WHERE ino = ?", "ti", next,
				 folder);
		pthread_mutex_unlock(&c->sdb_lock);
	}
out:
	cache_events_flush(c, &ev, 0);
	cJSON_Delete(cr.pending);
	cJSON_Delete(cr.changed_ids);
	free(next);
	return r;
}

/* The folders of a round, read side by side (cache_sync_in). */
struct round {
	struct cache *c;
	const char *default_id;
	const int64_t *inos;
	char **links;
	size_t n;
	int want_flags;
	int64_t sample;

	pthread_mutex_t lock; /* protects the fields below */
	size_t next;	      /* the next folder to read */
	int r;		      /* the round's error: the first, or the first offline one */
	int skipped;	      /* a folder was left for a later round */
	int gone;	      /* a folder is not on the server any more */
};

/* One folder's outcome into the round: a folder gone (404) lists the tree
 * at the next round and is no error; a folder that failed does not stop
 * the others, but a failure of the network (or memory) does: no other
 * folder starts, and the round ends with it. */
static void round_done(struct round *rd, size_t i, int r, int skipped)
{
	pthread_mutex_lock(&rd->lock);
	rd->skipped |= skipped;
	if (r == -ENOENT && rd->inos[i] != CACHE_ROOT_INO) {
		/* Gone on the server, which a delta that leaves out nested
		 * folders does not say. */
		log_info("cache: folder %lld is not on the server any more; listing the folders "
			 "again",
			 (long long)rd->inos[i]);
		rd->gone = 1;
	} else if (r) {
		int stop = cache_offline_errno(r) || r == -ENOMEM;

		if (!stop)
			log_warn("cache: reading folder %lld: %s; the other folders go on",
				 (long long)rd->inos[i], strerror(-r));
		if (!rd->r || (stop && !cache_offline_errno(rd->r)))
			rd->r = r;
		if (stop)
			rd->next = rd->n;
	}
	pthread_mutex_unlock(&rd->lock);
}

static void *round_worker(void *arg)
{
	struct round *rd = arg;

	for (;;) {
		size_t i;
		int r, skipped = 0, stop = cache_stopping(rd->c);

		pthread_mutex_lock(&rd->lock);
		if (stop) { /* the folders not read yet: at the next mount */
			if (!rd->r)
				rd->r = -ECANCELED;
			rd->next = rd->n;
		}
		i = rd->next < rd->n ? rd->next++ : rd->n;
		pthread_mutex_unlock(&rd->lock);
		if (i == rd->n)
			return NULL;
		r = sync_folder(rd->c, rd->default_id, rd->inos[i], rd->links[i], rd->want_flags,
				rd->sample, &skipped);
		round_done(rd, i, r, skipped);
	}
}

/* A first reading of a folder keeps the ids it saw (seen) and the
 * extensions listed (exts) until the round ends: the tables are the
 * round's, shared by its folders (an id is one contact whatever folder
 * lists it), and emptied before and after it. */
static int round_tables_clear(struct cache *c)
{
	int r = cache_db_begin(c->sdb);

	if (!r && !(r = cache_db_run(c->sdb, "DELETE FROM seen", NULL)))
		r = cache_db_run(c->sdb, "DELETE FROM exts", NULL);
	/* And the extensions due of contacts gone since (refresh_exts reads
	 * those of a folder's contacts). */
	if (!r)
		r = cache_db_run(c->sdb,
				 "DELETE FROM exts_due WHERE NOT EXISTS (SELECT 1 FROM contacts c "
				 "WHERE c.id = exts_due.id)",
				 NULL);
	return r ? (cache_db_rollback(c->sdb), r) : cache_db_commit(c->sdb);
}

/*
 * Every folder's round, side by side: up to GRAPH_MAX_IN_FLIGHT workers
 * take the folders in turn, so the chains of round trips of several
 * folders (delta pages, extension list, has-photo list) overlap; the graph
 * client's scheduler keeps the mailbox at GRAPH_MAX_IN_FLIGHT requests on
 * the wire and honours Retry-After for all of them. Each folder's round is
 * what it was alone: its cursor is stored only when it completed.
 */
int cache_sync_in(struct cache *c)
{
	sqlite3_stmt *st;
	int64_t inos[4096];
	char *links[4096], *default_id = NULL;
	pthread_t threads[GRAPH_MAX_IN_FLIGHT];
	struct round rd = {.c = c};
	size_t n = 0, nthreads = 0;
	int full = 0, r = default_folder(c, &default_id);

	/* A mailbox that cannot name its default folder has no contact in it
	 * and no folder below it: there is nothing to read yet. */
	if (r || !default_id)
		goto out;
	if ((r = sync_folders(c, default_id)))
		goto out;
	if ((r = cache_db_prepare(
		     c->sdb, &st,
		     "SELECT ino, delta FROM folders WHERE ino = ? OR id IS NOT NULL ORDER BY ino",
		     "i", (int64_t)CACHE_ROOT_INO)))
		goto out;
	while (n < 4096 && (r = cache_db_step(st)) == 1) {
		inos[n] = sqlite3_column_int64(st, 0);
		links[n] = cache_db_strdup(st, 1);
		full |= !links[n++];
	}
	cache_db_release(st);
	r = r < 0 ? r : 0;
	if (!r && full)
		r = round_tables_clear(c);
	rd.default_id = default_id;
	rd.inos = inos;
	rd.links = links;
	rd.n = r ? 0 : n;
	rd.want_flags = c->cfg.followup && c->flag_list_in <= 0;
	rd.sample = (int64_t)cache_photo_sample(n);
	pthread_mutex_init(&rd.lock, NULL);
	for (; nthreads < rd.n && nthreads < GRAPH_MAX_IN_FLIGHT; nthreads++)
		if (pthread_create(&threads[nthreads], NULL, round_worker, &rd))
			break;
	if (!nthreads)
		round_worker(&rd); /* no thread: one folder after the other */
	for (size_t i = 0; i < nthreads; i++)
		pthread_join(threads[i], NULL);
	pthread_mutex_destroy(&rd.lock);
	for (size_t i = 0; i < n; i++)
		free(links[i]);
	if (!r)
		r = rd.r;
	if (full && round_tables_clear(c))
		log_warn("cache: could not empty the tables of a first reading");
	/* The next round lists the tree. */
	if (rd.gone)
		c->folder_walk_in = 0;
	/* Every folder's flags read: not again for a while. */
	if (!r && rd.want_flags && !rd.skipped)
		c->flag_list_in = FLAG_LIST_EVERY;
	else if (!r && c->cfg.followup && !rd.want_flags)
		c->flag_list_in--;
out:
	free(default_id);
	if (r && r != -EHOSTDOWN) {
		if (cache_offline_errno(r))
			r = -EHOSTDOWN;
		else
			log_err("cache: delta round: %s", strerror(-r));
	}
	return r;
}

/* ---- photos and rendering ----------------------------------------------------------------------------- */

int cache_sync_photos(struct cache *c, int max, int *left)
{
	sqlite3 *db = c->sdb;
	sqlite3_stmt *st;
	int64_t cids[GRAPH_BATCH_MAX];
	char bases[GRAPH_BATCH_MAX][512], ids[GRAPH_BATCH_MAX][512];
	struct cache_photo photos[GRAPH_BATCH_MAX];
	int checks[GRAPH_BATCH_MAX], had[GRAPH_BATCH_MAX];
	int r = 0, done = 0, answered = 0;

	*left = 0;
	cache_photos_init(photos, GRAPH_BATCH_MAX);
	while (done < max && !r && !cache_stopping(c)) {
		struct events ev = {0};
		const char *disagrees = NULL;
		size_t k = 0;

		if ((r = cache_db_prepare(
			     db, &st,
			     "SELECT cid, id, folder, photo_state, photo IS NOT NULL FROM contacts "
			     "WHERE photo_state IN (0, 2) AND id IS NOT NULL LIMIT ?",
			     "i", (int64_t)GRAPH_BATCH_MAX)))
			break;
		while (k < GRAPH_BATCH_MAX && cache_db_step(st) == 1) {
			if (cache_folder_base(db, sqlite3_column_int64(st, 2), bases[k],
					      sizeof(bases[k])))
				continue;
			cids[k] = sqlite3_column_int64(st, 0);
			checks[k] = sqlite3_column_int(st, 3) == 2;
			had[k] = sqlite3_column_int(st, 4);
			snprintf(ids[k], sizeof(ids[k]), "%s", sqlite3_column_text(st, 1));
			photos[k].base = bases[k];
			photos[k].id = ids[k];
			k++;
		}
		cache_db_release(st);
		if (!k)
			break;
		if ((r = cache_fetch_photos(c->g, photos, k)))
			break;
		if (!(r = cache_db_begin(db))) {
			for (size_t i = 0; i < k && !r; i++) {
				const struct cache_photo *ph = &photos[i];
				int busy;

				if (ph->status != 200 && ph->status != 404)
					continue; /* tried again later */
				answered++;
				if (checks[i] && ph->status == 200)
					disagrees = ph->id;
				r = cache_db_run(db,
						 "UPDATE contacts SET photo = ?, photo_type = ?, "
						 "photo_state "
						 "= 1 WHERE cid = ?",
						 "bti", ph->data.len ? ph->data.data : NULL,
						 ph->data.len, ph->data.len ? ph->type : NULL,
						 cids[i]);
				busy = r ? 0 : cache_outbox_has(db, cids[i]);
				/* A photo gone (removed in Outlook) is a new
				 * file as much as one come. */
				if (!r && busy == 0 && (ph->status == 200 || had[i]))
					r = cache_tree_render(c, db, cids[i], &ev);
				else if (busy < 0)
					r = busy;
			}
			r = r ? (cache_db_rollback(db), r) : cache_db_commit(db);
		}
		if (!r && disagrees) {
			char why[640];

			snprintf(why, sizeof(why),
				 "contact %s has a photo that its PidLidHasPicture does not show",
				 disagrees);
			r = photo_flags_fallback(c, why);
		}
		cache_events_flush(c, &ev, !r);
		done += (int)k;
		/* The same rows would come again: wait for a later turn. */
		if (!answered)
			break;
		answered = 0;
	}
	cache_photos_release(photos, GRAPH_BATCH_MAX);
	if (!r) {
		int64_t more = 0;

		if (cache_db_int(db, &more,
				 "SELECT count(*) FROM contacts WHERE photo_state IN (0, 2) AND "
				 "id IS NOT NULL",
				 NULL) == 1)
			*left = more > 0 && done >= max; /* stopped by max, not by failures */
	}
	if (r && cache_offline_errno(r))
		r = -EHOSTDOWN;
	return r;
}

/* Renames that waited for a writer (cache_tree_render): those whose name is let
 * go are rendered again, which makes them. */
static int names_let_go(struct cache *c)
{
	sqlite3 *db = c->sdb;
	sqlite3_stmt *st;
	int64_t inos[64];
	size_t n = 0;
	int r;

	if ((r = cache_db_prepare(db, &st, "SELECT ino FROM names_due LIMIT 64", NULL)))
		return r;
	while (n < 64 && cache_db_step(st) == 1) {
		int64_t ino = sqlite3_column_int64(st, 0);

		if (!cache_names_held(c, (uint64_t)ino))
			inos[n++] = ino;
	}
	cache_db_release(st);
	if (!n || (r = cache_db_begin(db)))
		return r;
	for (size_t i = 0; i < n && !r; i++)
		if (!(r = cache_db_run(db, "DELETE FROM names_due WHERE ino = ?", "i", inos[i])))
			r = cache_db_run(
				db,
				"UPDATE contacts SET render = 1 WHERE cid = (SELECT cid FROM "
				"nodes WHERE ino = ?)",
				"i", inos[i]);
	return r ? (cache_db_rollback(db), r) : cache_db_commit(db);
}

int cache_sync_render(struct cache *c)
{
	sqlite3 *db = c->sdb;
	int r;

	if ((r = names_let_go(c)))
		return r;
	for (;;) {
		struct events ev = {0};
		sqlite3_stmt *st;
		int64_t cids[200];
		size_t n = 0;

		if ((r = cache_db_prepare(db, &st,
					  "SELECT cid FROM contacts k WHERE render AND NOT EXISTS "
					  "(SELECT 1 FROM "
					  "outbox o WHERE o.cid = k.cid) LIMIT 200",
					  NULL)))
			break;
		while (n < 200 && cache_db_step(st) == 1)
			cids[n++] = sqlite3_column_int64(st, 0);
		cache_db_release(st);
		if (!n || (r = cache_db_begin(db)))
			break;
		for (size_t i = 0; i < n && !r; i++)
			r = cache_tree_render(c, db, cids[i], &ev);
		r = r ? (cache_db_rollback(db), r) : cache_db_commit(db);
		cache_events_flush(c, &ev, !r);
		if (r)
			break;
	}
	return r;
}
