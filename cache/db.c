/*
 * The SQLite side of the cache: connections, the schema and its
 * migrations, and small statement helpers. SQLite result codes become errno
 * here and nowhere else.
 */
#include "cache_int.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* "cfs1": PRAGMA application_id of a contactfs cache. */
#define APPLICATION_ID 0x63667331

int cache_db_errno(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_ROW:
	case SQLITE_DONE:
		return 0;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_READONLY:
		return -EROFS;
	case SQLITE_PERM:
	case SQLITE_AUTH:
	case SQLITE_CANTOPEN:
		return -EACCES;
	case SQLITE_CONSTRAINT:
		return -EEXIST;
	case SQLITE_TOOBIG:
		return -E2BIG;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		return -EUCLEAN;
	default:
		return -EIO;
	}
}

static int bind_args(sqlite3_stmt *st, const char *fmt, va_list ap)
{
	int rc = SQLITE_OK;

	for (int i = 1; fmt && *fmt && rc == SQLITE_OK; fmt++, i++) {
		switch (*fmt) {
		case 'i':
			rc = sqlite3_bind_int64(st, i, va_arg(ap, int64_t));
			break;
		case 't': {
			const char *s = va_arg(ap, const char *);

			rc = s ? sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT)
			       : sqlite3_bind_null(st, i);
			break;
		}
		case 'b': {
			const void *p = va_arg(ap, const void *);
			size_t n = va_arg(ap, size_t);

			rc = p ? sqlite3_bind_blob64(st, i, n ? p : "", n, SQLITE_TRANSIENT)
			       : sqlite3_bind_null(st, i);
			break;
		}
		default:
			return SQLITE_MISUSE;
		}
	}
	return rc;
}

/*
 * Prepared statements are kept per connection and SQL text, and handed out
 * again once released: preparing is most of the cost of a small query. A
 * statement still in use (a walk that runs another query of the same text)
 * makes the second caller prepare its own, finalized on release.
 */
#define STMT_SLOTS 1024
#define PROBE 8

/* Slots are found by connection and the caller's SQL pointer (the SQL is
 * a literal: the same text comes at the same address), and again by the
 * statement when it is released. */
struct stmt_slot {
	sqlite3 *db;
	const char *sql;
	sqlite3_stmt *st;
	int busy;
};

static struct stmt_slot slots[STMT_SLOTS];
static int by_stmt[STMT_SLOTS]; /* slot + 1 of a statement, by its address */
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER; /* protects both */

static size_t ptr_hash(const void *a, const void *b)
{
	uint64_t h = ((uint64_t)(uintptr_t)a * 0x9e3779b97f4a7c15ULL) ^
		     ((uint64_t)(uintptr_t)b * 0xc2b2ae3d27d4eb4fULL);

	return (size_t)(h >> 40) % STMT_SLOTS;
}

/* A cached statement for sql on db, marked busy, or NULL. */
static sqlite3_stmt *slot_take(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st = NULL;

	pthread_mutex_lock(&slots_lock);
	for (size_t i = 0, k = ptr_hash(db, sql); i < PROBE; i++, k = (k + 1) % STMT_SLOTS) {
		struct stmt_slot *s = &slots[k];

		if (s->st && s->db == db && s->sql == sql && !s->busy) {
			s->busy = 1;
			st = s->st;
			break;
		}
	}
	pthread_mutex_unlock(&slots_lock);
	return st;
}

/* Keep a new statement in a free slot (busy), if there is one near. */
static void slot_put(sqlite3 *db, const char *sql, sqlite3_stmt *st)
{
	pthread_mutex_lock(&slots_lock);
	for (size_t i = 0, k = ptr_hash(db, sql); i < PROBE; i++, k = (k + 1) % STMT_SLOTS) {
		if (slots[k].st)
			continue;
		for (size_t j = 0, m = ptr_hash(st, NULL); j < PROBE;
		     j++, m = (m + 1) % STMT_SLOTS) {
			if (by_stmt[m])
				continue;
			slots[k] = (struct stmt_slot){db, sql, st, 1};
			by_stmt[m] = (int)k + 1;
			break;
		}
		break;
	}
	pthread_mutex_unlock(&slots_lock);
}

void cache_db_release(sqlite3_stmt *st)
{
	int kept = 0;

	if (!st)
		return;
	pthread_mutex_lock(&slots_lock);
	for (size_t i = 0, m = ptr_hash(st, NULL); i < PROBE; i++, m = (m + 1) % STMT_SLOTS) {
		int k = by_stmt[m] - 1;

		if (k >= 0 && slots[k].st == st) {
			sqlite3_reset(st);
			sqlite3_clear_bindings(st);
			slots[k].busy = 0;
			kept = 1;
			break;
		}
	}
	pthread_mutex_unlock(&slots_lock);
	if (!kept)
		sqlite3_finalize(st);
}

void cache_db_disconnect(sqlite3 *db)
{
	if (!db)
		return;
	pthread_mutex_lock(&slots_lock);
	for (size_t m = 0; m < STMT_SLOTS; m++)
		if (by_stmt[m] && slots[by_stmt[m] - 1].db == db)
			by_stmt[m] = 0;
	for (size_t k = 0; k < STMT_SLOTS; k++) {
		if (slots[k].db == db) {
			sqlite3_finalize(slots[k].st);
			memset(&slots[k], 0, sizeof(slots[k]));
		}
	}
	pthread_mutex_unlock(&slots_lock);
	sqlite3_close(db);
}

static int prepare_v(sqlite3 *db, sqlite3_stmt **st, const char *sql, const char *fmt, va_list ap)
{
	int rc = SQLITE_OK;

	*st = slot_take(db, sql);
	if (!*st) {
		rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);
		if (rc == SQLITE_OK && *st)
			slot_put(db, sql, *st);
	}
	if (rc == SQLITE_OK)
		rc = bind_args(*st, fmt, ap);
	if (rc != SQLITE_OK) {
		log_err("cache: preparing \"%.60s\": %s", sql, sqlite3_errmsg(db));
		cache_db_release(*st);
		*st = NULL;
		return cache_db_errno(rc);
	}
	return 0;
}

int cache_db_prepare(sqlite3 *db, sqlite3_stmt **st, const char *sql, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = prepare_v(db, st, sql, fmt, ap);
	va_end(ap);
	return r;
}

int cache_db_step(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);

	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE)
		return 0;
	if ((rc & 0xff) != SQLITE_CONSTRAINT)
		log_err("cache: \"%.60s\": %s", sqlite3_sql(st),
			sqlite3_errmsg(sqlite3_db_handle(st)));
	return cache_db_errno(rc);
}

int cache_db_run(sqlite3 *db, const char *sql, const char *fmt, ...)
{
	sqlite3_stmt *st;
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = prepare_v(db, &st, sql, fmt, ap);
	va_end(ap);
	if (r)
		return r;
	while ((r = cache_db_step(st)) == 1)
		;
	cache_db_release(st);
	return r;
}

int cache_db_run_chunked(sqlite3 *db, const char *sql, const char *fmt, ...)
{
	int r, changed;

	do {
		sqlite3_stmt *st;
		va_list ap;

		if ((r = cache_db_begin(db)))
			return r;
		va_start(ap, fmt);
		r = prepare_v(db, &st, sql, fmt, ap);
		va_end(ap);
		if (!r) {
			while ((r = cache_db_step(st)) == 1)
				;
			cache_db_release(st);
		}
		changed = r ? 0 : sqlite3_changes(db);
		r = r ? (cache_db_rollback(db), r) : cache_db_commit(db);
	} while (!r && changed > 0);
	return r;
}

int cache_db_int(sqlite3 *db, int64_t *out, const char *sql, const char *fmt, ...)
{
	sqlite3_stmt *st;
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = prepare_v(db, &st, sql, fmt, ap);
	va_end(ap);
	if (r)
		return r;
	r = cache_db_step(st);
	if (r == 1)
		*out = sqlite3_column_int64(st, 0);
	cache_db_release(st);
	return r;
}

int cache_db_begin(sqlite3 *db)
{
	return cache_db_run(db, "BEGIN IMMEDIATE", NULL);
}

int cache_db_commit(sqlite3 *db)
{
	int r = cache_db_run(db, "COMMIT", NULL);

	if (r)
		cache_db_rollback(db);
	return r;
}

void cache_db_rollback(sqlite3 *db)
{
	if (!sqlite3_get_autocommit(db))
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
}

char *cache_db_strdup(sqlite3_stmt *st, int col)
{
	const unsigned char *s = sqlite3_column_text(st, col);

	return s ? strdup((const char *)s) : NULL;
}

char *cache_db_meta_get(sqlite3 *db, const char *key)
{
	sqlite3_stmt *st;
	char *v = NULL;

	if (cache_db_prepare(db, &st, "SELECT value FROM meta WHERE key = ?", "t", key))
		return NULL;
	if (cache_db_step(st) == 1)
		v = cache_db_strdup(st, 0);
	cache_db_release(st);
	return v;
}

int cache_db_meta_set(sqlite3 *db, const char *key, const char *value)
{
	return cache_db_run(db, "INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", "tt", key,
			    value);
}

/* ---- connections -------------------------------------------------------------- */

/*
 * The two connections of a cache (FUSE threads, sync thread) wait for each
 * other's write transactions, which last a millisecond or so. SQLite's own
 * busy timeout sleeps 1, 2, 5, 10... ms: a FUSE request stuck behind an
 * upload's transaction slept far longer than the transaction. This one
 * looks again every 100 us for the first 10 ms, then every ms, then every
 * 10 ms, and gives up after 30 s.
 */
static int busy_wait(void *arg, int count)
{
	(void)arg;
	if (count < 100)
		usleep(100);
	else if (count < 1000)
		usleep(1000);
	else if (count < 1000 + 2910)
		usleep(10000);
	else
		return 0;
	return 1;
}

int cache_db_connect(struct cache *c, sqlite3 **out, char *errbuf, size_t errsize)
{
	sqlite3 *db = NULL;
	int rc, r;

	*out = NULL;
	rc = sqlite3_open_v2(c->path, &db,
			     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
			     NULL);
	if (rc != SQLITE_OK) {
		snprintf(errbuf, errsize, "%s: cannot open the cache: %s", c->path,
			 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
		sqlite3_close(db);
		return cache_db_errno(rc);
	}
	sqlite3_busy_handler(db, busy_wait, NULL);
	sqlite3_extended_result_codes(db, 1);
	/* Nothing here writes to the file: a database that turns out not
	 * to be ours must be left exactly as it was (journal_mode = WAL
	 * comes after cache_db_schema). */
	rc = sqlite3_exec(db,
			  "PRAGMA synchronous = NORMAL; PRAGMA temp_store = MEMORY;"
			  "PRAGMA cache_size = -4000;",
			  NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		r = cache_db_errno(rc);
		snprintf(errbuf, errsize, "%s: %s: %s", c->path,
			 r == -EUCLEAN ? "not a contactfs cache, or a damaged one"
				       : "cannot use the cache",
			 sqlite3_errmsg(db));
		sqlite3_close(db);
		return r == -EUCLEAN ? -EINVAL : r;
	}
	*out = db;
	return 0;
}

/* ---- the schema ------------------------------------------------------------------- */

/*
 * Version 1. nodes is the tree fs/ shows (inode numbers never reused:
 * AUTOINCREMENT); contacts are the mailbox's contacts (a node shows one
 * through nodes.cid); folders holds each folder's Graph id and delta
 * cursor; outbox the local changes in order; exts the extension bodies of a
 * first sync; errors what went wrong, for .contactfs/errors.
 */
static const char SCHEMA_V1[] =
	"CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;"
	"CREATE TABLE nodes("
	"  ino INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  parent INTEGER,"
	"  name TEXT NOT NULL,"
	"  kind INTEGER NOT NULL,"
	"  mtime_ns INTEGER NOT NULL DEFAULT 0,"
	"  size INTEGER NOT NULL DEFAULT 0,"
	"  data BLOB,"
	"  cid INTEGER,"			/* the contact this file shows */
	"  draft INTEGER NOT NULL DEFAULT 0,"	/* bytes that did not parse */
	"  written INTEGER NOT NULL DEFAULT 0," /* bytes as written here, not rendered */
	"  chosen INTEGER NOT NULL DEFAULT 0);" /* name chosen here: kept */
	"CREATE UNIQUE INDEX nodes_name ON nodes(parent, name);"
	"CREATE INDEX nodes_cid ON nodes(cid) WHERE cid IS NOT NULL;"
	"CREATE TABLE folders("
	"  ino INTEGER PRIMARY KEY,"
	"  id TEXT UNIQUE,"
	"  delta TEXT);"
	"CREATE TABLE contacts("
	"  cid INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  id TEXT UNIQUE,"
	"  folder INTEGER NOT NULL,"
	"  uid TEXT,"
	"  ckey TEXT,"
	"  change_key TEXT,"
	"  json TEXT,"
	"  photo BLOB,"
	"  photo_type TEXT,"
	"  photo_state INTEGER NOT NULL DEFAULT 0," /* 0: to fetch, 1: known */
	"  render INTEGER NOT NULL DEFAULT 0,"
	"  lrev INTEGER NOT NULL DEFAULT 0,"  /* local writes */
	"  gone INTEGER NOT NULL DEFAULT 0);" /* its deletion is queued */
	"CREATE INDEX contacts_uid ON contacts(folder, uid);"
	"CREATE INDEX contacts_render ON contacts(render) WHERE render;"
	"CREATE INDEX contacts_photo ON contacts(photo_state) WHERE photo_state = 0;"
	"CREATE TABLE exts(id TEXT PRIMARY KEY, body TEXT) WITHOUT ROWID;"
	"CREATE TABLE seen(id TEXT PRIMARY KEY) WITHOUT ROWID;"
	"CREATE TABLE outbox("
	"  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  op INTEGER NOT NULL,"
	"  key TEXT NOT NULL," /* entries of one key go in order */
	"  cid INTEGER,"
	"  folder INTEGER,"
	"  arg TEXT,"
	"  stage INTEGER NOT NULL DEFAULT 0,"
	"  not_before INTEGER NOT NULL DEFAULT 0," /* ms since the epoch */
	"  attempts INTEGER NOT NULL DEFAULT 0,"
	"  sent INTEGER NOT NULL DEFAULT 0," /* a create may have reached the server */
	"  inflight INTEGER NOT NULL DEFAULT 0,"
	"  parked INTEGER NOT NULL DEFAULT 0,"
	"  result INTEGER NOT NULL DEFAULT 0," /* -errno of the last failure */
	"  error TEXT);"
	"CREATE INDEX outbox_key ON outbox(key, seq);"
	"CREATE TABLE errors("
	"  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  time INTEGER NOT NULL,"
	"  what TEXT,"
	"  message TEXT);";

/*
 * MIGRATIONS[i] takes a database from version i + 1 to i + 2; a new cache
 * is made at version 1 and migrated like an old one.
 *
 * Version 2: the names of contact files (docs/design.md §1). nodes.basis is
 * the name the server's display name gave when the file's name was last
 * settled (NULL: settle at the next version from the server, the echo of a
 * write); names_past holds the names a contact's file had in its folder,
 * so that a save at one of them is that contact; names_due the files whose
 * rename waits for a writer. versions and merges: what a card written back
 * may name as its base (docs/design.md §6, the merge).
 *
 * Version 3: contacts.flag, the contact's follow-up flag as Graph's beta
 * last gave it (followupFlag JSON; NULL: never read), with -o followup.
 *
 * Version 4: merges.local, a card written through the mount (kept as a base
 * for the file's next writers, never for what is sent to the server); and
 * nodes.loaded, the version the handle that wrote the file had loaded (the
 * base of a card written without its version line).
 *
 * Version 5: exts_due, the contacts an incremental round stored whose
 * extension is still to read (committed with the contact, so that a read
 * that fails, or a process that dies, leaves it due).
 */
static const char *const MIGRATIONS[] = {
	"ALTER TABLE nodes ADD COLUMN basis TEXT;"

	"CREATE TABLE names_past("
	"  folder INTEGER NOT NULL,"
	"  name TEXT NOT NULL,"
	"  cid INTEGER NOT NULL,"
	"  at INTEGER NOT NULL," /* ms since the epoch the file left the name */
	"  PRIMARY KEY(folder, name)) WITHOUT ROWID;"
	"CREATE INDEX names_past_cid ON names_past(cid);"
	"CREATE TABLE names_due(ino INTEGER PRIMARY KEY);" /* renames waiting for a writer */
	/* Server versions a contact had, kept a day after they were
	 * superseded (at most 32 a contact): the base of a card written from
	 * one of them (X-CONTACTFS-VERSION). */
	"CREATE TABLE versions("
	"  cid INTEGER NOT NULL,"
	"  change_key TEXT NOT NULL,"
	"  json TEXT NOT NULL,"
	"  at INTEGER NOT NULL," /* ms since the epoch it was superseded */
	"  ours_to TEXT,"	  /* the version our own write made of it */
	"  PRIMARY KEY(cid, change_key)) WITHOUT ROWID;"
	"CREATE INDEX versions_at ON versions(at);"
	/* Cards merged with a newer version than the one they named (a day,
	 * 16 a contact), as JSON: a base for the next card naming it, which
	 * may hold what they said (a writer's next save, a reader of their
	 * bytes). */
	"CREATE TABLE merges("
	"  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  cid INTEGER NOT NULL,"
	"  named TEXT NOT NULL,"
	"  json TEXT NOT NULL,"
	"  at INTEGER NOT NULL);"
	"CREATE INDEX merges_cid ON merges(cid, named);"
	/* The first JSON a version had is kept (a merge rewrites the JSON of
	 * the base for a moment; see outbox.c take_server). */
	"CREATE TRIGGER contacts_versions AFTER UPDATE OF json ON contacts "
	"WHEN old.json IS NOT NULL AND old.change_key IS NOT NULL AND new.json IS NOT old.json "
	"BEGIN "
	"  INSERT OR IGNORE INTO versions(cid, change_key, json, at) VALUES(old.cid, "
	"    old.change_key, old.json, CAST((julianday('now') - 2440587.5) * 86400000 AS "
	"    INTEGER));"
	"  DELETE FROM versions WHERE at < CAST((julianday('now') - 2440588.5) * 86400000 AS "
	"    INTEGER);"
	"  DELETE FROM versions WHERE cid = old.cid AND change_key NOT IN (SELECT change_key "
	"    FROM versions WHERE cid = old.cid ORDER BY at DESC LIMIT 32);"
	"END;",
	"ALTER TABLE contacts ADD COLUMN flag TEXT;",
	("ALTER TABLE merges ADD COLUMN local INTEGER NOT NULL DEFAULT 0;"
	 "ALTER TABLE nodes ADD COLUMN loaded TEXT;"),
	"CREATE TABLE exts_due(id TEXT PRIMARY KEY) WITHOUT ROWID;",
};
_Static_assert(sizeof(MIGRATIONS) / sizeof(MIGRATIONS[0]) == CACHE_SCHEMA_VERSION - 1,
	       "one migration per schema version after the first");

static int create_schema(struct cache *c, sqlite3 *db)
{
	char sql[256];
	int r;

	if ((r = cache_db_begin(db)))
		return r;
	r = sqlite3_exec(db, SCHEMA_V1, NULL, NULL, NULL) == SQLITE_OK ? 0 : -EIO;
	if (!r)
		r = cache_db_run(
			db,
			"INSERT INTO nodes(ino, parent, name, kind, mtime_ns) VALUES(?, NULL, "
			"'', ?, ?)",
			"iii", (int64_t)CACHE_ROOT_INO, (int64_t)CACHE_FOLDER, cache_now_ns());
	if (!r)
		r = cache_db_run(db, "INSERT INTO folders(ino) VALUES(?)", "i",
				 (int64_t)CACHE_ROOT_INO);
	if (!r)
		r = cache_db_meta_set(db, "mailbox", c->mailbox);
	if (!r)
		r = cache_db_meta_set(db, "application", "contactfs");
	snprintf(sql, sizeof(sql), "PRAGMA application_id = %d; PRAGMA user_version = 1",
		 APPLICATION_ID);
	if (!r && sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
		r = -EIO;
	if (r) {
		log_err("cache: creating the schema: %s", sqlite3_errmsg(db));
		cache_db_rollback(db);
		return r;
	}
	return cache_db_commit(db);
}

int cache_db_schema(struct cache *c, sqlite3 *db, char *errbuf, size_t errsize)
{
	int64_t app = 0, version = 0, tables = 0;
	char *mailbox = NULL, *check = NULL;
	sqlite3_stmt *st;
	int r;

	if ((r = cache_db_int(db, &app, "PRAGMA application_id", NULL)) < 0 ||
	    (r = cache_db_int(db, &version, "PRAGMA user_version", NULL)) < 0 ||
	    (r = cache_db_int(db, &tables, "SELECT count(*) FROM sqlite_master", NULL)) < 0) {
		snprintf(errbuf, errsize, "%s: not a contactfs cache, or a damaged one: %s",
			 c->path, sqlite3_errmsg(db));
		return -EINVAL;
	}
	if (app == 0 && version == 0 && tables == 0) {
		if ((r = create_schema(c, db)))
			return r;
		app = APPLICATION_ID;
		version = 1;
	}
	if (app != APPLICATION_ID) {
		snprintf(errbuf, errsize,
			 "%s: not a contactfs cache (another program's database); move it away "
			 "or choose another cache_dir",
			 c->path);
		return -EINVAL;
	}
	if (version > CACHE_SCHEMA_VERSION) {
		snprintf(errbuf, errsize,
			 "%s: made by a newer contactfs (schema %lld, this one knows %d); use "
			 "that version or another cache_dir",
			 c->path, (long long)version, CACHE_SCHEMA_VERSION);
		return -EINVAL;
	}
	/* A damaged file is refused, never reset: it may hold changes that
	 * have not reached the server. */
	if ((r = cache_db_prepare(db, &st, "PRAGMA quick_check(1)", NULL)))
		return r;
	if (cache_db_step(st) == 1)
		check = cache_db_strdup(st, 0);
	cache_db_release(st);
	if (!check || strcmp(check, "ok") != 0) {
		snprintf(errbuf, errsize,
			 "%s: the cache is damaged (%s); it is left as it is: move it away to "
			 "start a new one (pending changes in it are lost then)",
			 c->path, check ? check : sqlite3_errmsg(db));
		free(check);
		return -EINVAL;
	}
	free(check);
	for (int64_t v = version; v < CACHE_SCHEMA_VERSION; v++) {
		char sql[64];

		if ((r = cache_db_begin(db)))
			return r;
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %lld", (long long)v + 1);
		if (sqlite3_exec(db, MIGRATIONS[v - 1], NULL, NULL, NULL) != SQLITE_OK ||
		    sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK) {
			snprintf(errbuf, errsize, "%s: migrating the cache to schema %lld: %s",
				 c->path, (long long)v + 1, sqlite3_errmsg(db));
			cache_db_rollback(db);
			return -EIO;
		}
		if ((r = cache_db_commit(db)))
			return r;
		log_info("cache: %s migrated to schema %lld", c->path, (long long)v + 1);
	}
	mailbox = cache_db_meta_get(db, "mailbox");
	if (!mailbox || strcasecmp(mailbox, c->mailbox) != 0) {
		snprintf(errbuf, errsize,
			 "%s: this cache belongs to mailbox %s, not %s; choose another cache_dir",
			 c->path, mailbox ? mailbox : "(none)", c->mailbox);
		free(mailbox);
		return -EINVAL;
	}
	free(mailbox);
	return 0;
}

/* fsync one file by name; a file that is not there has nothing to sync. */
static int sync_file(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW), r = 0;

	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	if (fsync(fd))
		r = -errno;
	close(fd);
	return r;
}

int cache_sync_disk(struct cache *c)
{
	struct buf b;
	int r;

	/* The database commits with synchronous=NORMAL: a commit is in the
	 * WAL, safe from a crash of the process but not yet from a power cut
	 * until the next checkpoint. fsync of the WAL (and of the database,
	 * for what a checkpoint moved there) makes every commit so far
	 * durable. */
	buf_init(&b, 8192);
	r = buf_printf(&b, "%s-wal", c->path);
	if (!r)
		r = sync_file(b.data);
	if (!r)
		r = sync_file(c->path);
	buf_release(&b);
	if (r)
		log_err("cache: syncing %s to disk: %s", c->path, strerror(-r));
	return r;
}
