/*
 * Private to cache/: the struct, the SQLite helpers and the pieces of the
 * sync engine.
 *
 * Connections: c->db serves the cache_* calls (any thread, under api_lock);
 * the sync thread has its own connection, c->sdb. Both write; SQLite's
 * locking (WAL, busy timeout, BEGIN IMMEDIATE) orders them. No transaction
 * is ever open across a network call.
 *
 * Lock order: api_lock, then lock. lock is a leaf: never held across SQLite
 * or the network.
 */
#ifndef CONTACTFS_CACHE_INT_H
#define CONTACTFS_CACHE_INT_H

#include "cache.h"

#include "graph.h"
#include "util.h"
#include "vcard.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>

/* Our open extension as $filter and $expand name it: by its short name, the
 * one form the docs show in every place (opentypeextension-get.md). Answers
 * carry a longer id that ends with it (cache_ext_of). */
#define EXT_ID VCARD_EXTENSION_NAME

/* Outbox operations (the op column). Stored: never renumber. */
enum op {
	OP_CREATE = 1,	      /* cid: POST the file's card (STAGE_PHOTO: its photo) */
	OP_UPDATE = 2,	      /* cid: PATCH the diff (STAGE_EXT_*: the extension) */
	OP_PHOTO = 3,	      /* cid: PUT the file's photo */
	OP_DELETE = 4,	      /* cid: DELETE, after not_before */
	OP_MOVE = 5,	      /* cid from folder: POST in the contact's folder, photo, DELETE old */
	OP_FOLDER_CREATE = 6, /* folder */
	OP_FOLDER_RENAME = 7, /* folder */
	OP_FOLDER_DELETE = 8, /* folder, arg: its id */
	OP_REQUEST = 9,	      /* arg: {"method","path","body"} */
	OP_DROP_FILE = 10,    /* folder, arg {"ino"}: remove an imported file of cards */
	OP_FLAG = 11,	      /* cid: beta PATCH of the file's follow-up flag (-o followup) */
};
#define OP_DROP_FILE_TEXT "10" /* for SQL text */

/*
 * Where an entry is (the stage column): each stage is one request, durable,
 * and the answer moves the entry on (docs/cache.md, "Out"). A value means
 * something else for each op, hence the aliases. Stored: never renumber.
 */
enum stage {
	STAGE_SEND = 0,	     /* every op's first request: the POST of a create or a
			      * move, the PATCH of an update, the PUT of a photo, the
			      * beta PATCH of a flag, the DELETE of a delete */
	STAGE_PHOTO = 1,     /* create, move: PUT of the file's photo */
	STAGE_EXT_PATCH = 1, /* update: PATCH of our extension */
	STAGE_OLD_COPY = 2,  /* move: DELETE of the old copy (its id in arg) */
	STAGE_EXT_POST = 2,  /* update: POST of our extension (the PATCH found none) */
	/* create, move, update, photo, flag: read the contact back after a
	 * write that gives it a new change key without returning it (an
	 * extension write, a photo PUT, a flag). The key is adopted only when
	 * the contact says what we stored, so a change made elsewhere
	 * meanwhile still comes in with the next delta round. */
	STAGE_REFRESH = 3,
	/* move: GET of the old copy before its DELETE; changed elsewhere
	 * since we copied it, the change is carried into the new copy */
	STAGE_OLD_READ = 4,
};

struct cache {
	struct cache_config cfg;
	char *dir;
	char *path; /* the database file */
	char *mailbox;
	struct graph *g;

	pthread_mutex_t api_lock; /* serialises use of db */
	sqlite3 *db;
	sqlite3 *sdb; /* the sync thread's */
	/* Serialises sdb among the folder workers of a delta round
	 * (sync_in.c): taken around each use of sdb there, never across a
	 * network call or a kernel notification. Outside a round the sync
	 * thread alone uses sdb and does not take it. Lock order: before
	 * c->lock. */
	pthread_mutex_t sdb_lock;
	/* birthdays.ics as last made (under api_lock), and the state of the
	 * database it was made from: PRAGMA data_version (commits of the
	 * sync thread) and total changes on db (ours). */
	char *ics;
	size_t ics_len;
	int64_t ics_version, ics_changes;

	pthread_t thread;
	int started;
	/* The sync thread's own: delta rounds left before the folder tree is
	 * listed again (sync_in.c; 0: at the next round). */
	int folder_walk_in;
	/* The same for the follow-up flags of every folder (0: at the next
	 * round, so the first round of a mount reads them), and whether a
	 * refusal to read them was told in .contactfs/errors yet (during a
	 * round, under sdb_lock). */
	int flag_list_in;
	int flag_refusal_told;
	/* The sync thread's own (sync_in.c; during a round, under sdb_lock):
	 * PidLidHasPicture is not used for the rest of the mount (the server
	 * refused the list, or a contact it said has no photo had one): every
	 * photo is probed. */
	int photo_flags_off;
	/* The sync thread's own (categories.c): requests to the category list
	 * were queued (read it again once they went), and a failure to read it
	 * with edits waiting was told in .contactfs/errors. */
	int categories_sent;
	int categories_told;

	pthread_mutex_t lock;			 /* protects the fields below */
	pthread_cond_t wake;			 /* the sync thread waits on it */
	pthread_cond_t pass;			 /* broadcast after each outbox pass */
	int stop, asked, kicked, online, synced; /* asked: a delta round; kicked: the outbox */
	int hurried; /* kicked by one who waits on the pass (fsync, the drain): no gap */
	unsigned passes;
	unsigned lists; /* the lists of .contactfs a reader asked for (CACHE_LIST_*) */
	time_t last_sync;
	struct cache_people *people; /* .contactfs/people/ as last made (people.c) */
	unsigned people_gen;	     /* counts the lists stored */
	struct name_hold *holds;     /* files with writers, or just closed (engine.c) */
	size_t nholds, holds_size;
};

/* A file whose name a writer holds (cache_name_hold). */
struct name_hold {
	uint64_t ino;
	unsigned writers;
	int64_t until_ms; /* with no writer: held until then */
};

/* The lists of .contactfs that the sync thread reads from the server
 * (Graph has no delta for them). A reader asks (cache_ask_list) and goes
 * on with the stored copy: it never waits for the network. */
#define CACHE_LIST_CATEGORIES 1u
#define CACHE_LIST_PEOPLE 2u

/* Ask the sync thread to read the lists (CACHE_LIST_* bits) again when
 * they are older than the poll interval; does not wait (engine.c). Takes
 * c->lock. */
void cache_ask_list(struct cache *c, unsigned lists);

/* How the sync thread reads a list. */
enum list_read {
	LIST_WRITTEN,  /* only to send what was written (categories' edits) */
	LIST_IF_NEVER, /* also when it was never read (the start of the thread) */
	LIST_IF_STALE, /* also when older than the poll interval (a reader asked) */
};

/* On the sync thread: read the master category list when how says so or
 * edits wait, and turn the edits into outbox requests (categories.c).
 * 1 when requests were queued, 0, -EHOSTDOWN offline, or -errno (logged). */
int cache_categories_sync(struct cache *c, enum list_read how) CACHE_MUST_CHECK;

/* On the sync thread: read the people when how says so, and make
 * .contactfs/people/ show them (people.c). 0, -EHOSTDOWN offline, or -errno
 * (logged). */
int cache_people_sync(struct cache *c, enum list_read how) CACHE_MUST_CHECK;

/* Whether file ino's name is held now (engine.c). Takes c->lock. */
int cache_names_held(struct cache *c, uint64_t ino);
/* The earliest time a held name is let go, in ms; 0 for none. Takes
 * c->lock. */
int64_t cache_names_next_release(struct cache *c);

/* ---- db.c ---------------------------------------------------------------- */

/* The errno for a SQLite result code: the one place they are translated. */
int cache_db_errno(int rc);

/*
 * Prepare sql and bind the arguments fmt describes, one letter each:
 * 'i' int64_t, 't' const char * (NULL binds NULL), 'b' const void *, size_t.
 * sql must be a string literal: prepared statements are kept by its address
 * (cache_db_release hands them back for the next call).
 * 0 with *st ready to step, or -errno (logged).
 */
int cache_db_prepare(sqlite3 *db, sqlite3_stmt **st, const char *sql, const char *fmt,
		     ...) CACHE_MUST_CHECK;
/* Give a statement from cache_db_prepare back (reset, kept for the next caller),
 * or finalize it. NULL is a no-op. */
void cache_db_release(sqlite3_stmt *st);
/* Close a connection and its kept statements. */
void cache_db_disconnect(sqlite3 *db);
/* Prepare, bind, step to completion, release. */
int cache_db_run(sqlite3 *db, const char *sql, const char *fmt, ...) CACHE_MUST_CHECK;
/* Run sql, a change of at most a chunk of rows (a LIMIT of its own) that
 * makes them match it no more, each time in a transaction of its own,
 * until it changes nothing. For a change that may reach every contact of a
 * folder: one statement that changes many rows makes SQLite hold their
 * pages in temporary storage until it commits, in memory with our
 * temp_store and WAL (150 MB for 100,000 contacts). Never inside a
 * transaction. */
int cache_db_run_chunked(sqlite3 *db, const char *sql, const char *fmt, ...) CACHE_MUST_CHECK;
/* Prepare, bind, step once: 1 with *out set to column 0 as an integer when
 * a row came, 0 when none, -errno. */
int cache_db_int(sqlite3 *db, int64_t *out, const char *sql, const char *fmt, ...) CACHE_MUST_CHECK;
/* 0 after SQLITE_DONE, 1 after SQLITE_ROW, else -errno (logged). */
int cache_db_step(sqlite3_stmt *st);

int cache_db_begin(sqlite3 *db) CACHE_MUST_CHECK; /* BEGIN IMMEDIATE */
int cache_db_commit(sqlite3 *db) CACHE_MUST_CHECK;
void cache_db_rollback(sqlite3 *db);

/* A column as a malloc'd string (NULL when NULL or out of memory). */
char *cache_db_strdup(sqlite3_stmt *st, int col);

/* Open a connection to c->path with the pragmas every connection uses. */
int cache_db_connect(struct cache *c, sqlite3 **out, char *errbuf, size_t errsize) CACHE_MUST_CHECK;

/* Check or create the schema. */
int cache_db_schema(struct cache *c, sqlite3 *db, char *errbuf, size_t errsize) CACHE_MUST_CHECK;

/* meta table. cache_db_meta_get: malloc'd value or NULL. */
char *cache_db_meta_get(sqlite3 *db, const char *key);
int cache_db_meta_set(sqlite3 *db, const char *key, const char *value) CACHE_MUST_CHECK;

/* ---- shared helpers (tree.c) ------------------------------------------------- */

int64_t cache_now_ns(void);
int64_t cache_now_ms(void);

/* A refusal that a transaction body commits all the same: what it recorded
 * (the draft, the error log) stays, and cache_in_txn's caller gets the
 * errno named here. Negative and below every -errno, so a body returns one
 * as it returns any error. */
enum cache_kept {
	CACHE_KEPT_INVALID = -4096,   /* -EINVAL: an invalid card kept as a draft */
	CACHE_KEPT_DUPLICATE = -4097, /* -EEXIST: the UID of a contact another file shows */
	CACHE_KEPT_TOO_BIG = -4098,   /* -EFBIG: a photo Outlook refuses for its size */
};

/* Run fn in a transaction on the API connection (under the API lock) and
 * wake the sync thread when it committed. fn returns 0 (committed), a
 * CACHE_KEPT_* refusal (committed, and the caller gets its errno) or
 * -errno (rolled back). *committed (if not NULL) says whether it was: the
 * kernel is told of what a committed transaction changed, and of nothing
 * a rolled-back one did. */
int cache_in_txn(struct cache *c, int (*fn)(struct cache *, void *), void *arg, int *committed);

/* Record an error for .contactfs/errors and the log. */
void cache_error(sqlite3 *db, const char *what, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Record each repair the reader made in cards[0..n) (their warning lines)
 * for .contactfs/errors, and log it as a warning: "read with a repair: line
 * N: what", with "card I: " first when there are several cards. */
void cache_repairs(sqlite3 *db, const char *what, struct vcard *const *cards, size_t n);

/* Events collected in a transaction and told after it commits. */
struct events {
	struct cache_change *v;
	size_t n, size;
};
void cache_events_add(struct events *ev, enum cache_event what, uint64_t ino, uint64_t parent,
		      const char *name, uint64_t old_parent, const char *old_name);
/* Tell them (if committed) and free them. */
void cache_events_flush(struct cache *c, struct events *ev, int committed);

/* A name in dir that no node has: name itself, else "stem (n).vcf" /
 * "name (n)". out has 256 bytes. */
int cache_tree_unique_name(sqlite3 *db, uint64_t dir, const char *name, char *out) CACHE_MUST_CHECK;

/* Queue an entry in the open transaction. */
int cache_outbox_add(sqlite3 *db, enum op op, int64_t cid, int64_t folder, const char *arg,
		     int64_t not_before_ms) CACHE_MUST_CHECK;

/* Queue a request that has no contact (OP_REQUEST: master categories):
 * method, path relative to the mailbox, JSON body text or NULL. In the
 * open transaction. */
int cache_outbox_add_request(sqlite3 *db, const char *method, const char *path,
			     const char *body) CACHE_MUST_CHECK;

/* Whether a PATCH body changes nothing (it always repeats the display
 * name). */
int cache_patch_is_empty(const cJSON *patch, const cJSON *base);

/* The sync thread's side of an import (tree.c): file ino, a file of cards
 * already imported, goes, unless it was written again since. In a
 * transaction. */
int cache_tree_drop_imported(sqlite3 *db, int64_t ino, struct events *ev) CACHE_MUST_CHECK;

/* The follow-up flag (-o followup; docs/mapping.md). The flag of a contact
 * lives in contacts.flag as Graph's beta last gave it, apart from the v1.0
 * JSON, so that nothing of the v1.0 mapping carries it. */

/* With c->cfg.followup: the flag card carries (a new followupFlag object in
 * *flag) and card without its X-CONTACTFS-FOLLOWUP, so that the rest of the
 * mapping (v1.0 fields, the open extension) never sees it. Without: *flag
 * is NULL and card is left as it is. 0, -EINVAL (err says why), -ENOMEM. */
int cache_card_flag(const struct cache *c, struct vcard *card, cJSON **flag,
		    struct vcard_error *err) CACHE_MUST_CHECK;

/* The flag stored for contact cid: a new object, or NULL (never read). */
cJSON *cache_flag_of(sqlite3 *db, int64_t cid);

/* Queue contact cid's flag to be sent after everything queued for it so
 * far (one that waits moves to the end). In a transaction. */
int cache_outbox_add_flag(sqlite3 *db, int64_t cid, int64_t folder) CACHE_MUST_CHECK;

/* Whether contact cid has any outbox entry. 1, 0 or -errno. */
int cache_outbox_has(sqlite3 *db, int64_t cid) CACHE_MUST_CHECK;

/* The version card was made from (VCARD_VERSION_PROP, "<change key>.<photo>"
 * where photo is 12 hex digits of the SHA-256 of the photo shown, or "0"):
 * 1 with both parts copied out (a value without a '.' is all change key,
 * and the photo part ""), or 0 when it names none (tree.c). */
int cache_version_of(struct vcard *card, char *ck, size_t cksize, char *photo, size_t psize);

/* ---- merge.c ---------------------------------------------------------------- */

/* Whether every field of answer (a contact as Graph returns it) has the
 * value stored has for it (addresses member by member, absent = null). */
int cache_same_fields(const cJSON *answer, const cJSON *stored);

/* A three-way merge of a card (ours) with base, the version it was made
 * from, and theirs, the version it meets. */
struct cache_merge {
	cJSON *patch, *ext;	/* the card against base: ours */
	cJSON *todo, *todo_ext; /* the card against theirs */
	unsigned pending;	/* fields ours changed that theirs lacks */
	unsigned lacks;		/* fields theirs changed that the card lacks */
	int overlap;		/* one of them theirs changed too, otherwise */
	struct buf fields;	/* those fields, for the error log */
	cJSON *merged;		/* with pending and no overlap: theirs plus ours */
};

/* Merge card with base and theirs into *m (release it with
 * cache_merge_release, also on failure). 0 or -errno. */
int cache_merge(const cJSON *base, const cJSON *theirs, const struct vcard *card,
		struct cache_merge *m) CACHE_MUST_CHECK;
void cache_merge_release(struct cache_merge *m);

/* What a card said, as Graph JSON: base with the card's patch and
 * extension against it applied. NULL when out of memory. */
cJSON *cache_merge_said(const cJSON *base, const cJSON *patch, const cJSON *ext);

/* What a card said (m, merged against base) is kept in merges: a base for
 * a later card naming the same version (cache_card_base). local: a card
 * written through the mount, not yet on the server (a base for the file's
 * writers only, never for what is sent); else one the outbox merged to
 * send. In the open transaction. 0 or -errno. */
int cache_merge_remember(sqlite3 *db, int64_t cid, struct vcard *card, const cJSON *base,
			 const struct cache_merge *m, int local) CACHE_MUST_CHECK;

/* A card of file ino without a version line gets the one the handle that
 * wrote it had loaded (nodes.loaded, cache_write_loaded), if any. 0 or
 * -errno. */
int cache_tree_card_loaded(sqlite3 *db, int64_t ino, struct vcard *card) CACHE_MUST_CHECK;

/* Write json (what contact cid's file should show: a merge, not a server
 * version) into the file as the mount renders it, under a version token of
 * its own ("<changeKey>+<n>", kept in versions: a card written from it is
 * based on exactly it), with mflag as its follow-up flag when not NULL and
 * photo's PHOTO (none when it has none) when photo is not NULL, else the
 * stored photo; the contact's server version stays as it was. The file counts as written (its
 * changes are still to send). In the open transaction. 0 or -errno. */
int cache_tree_render_local(struct cache *c, sqlite3 *db, int64_t cid, const cJSON *json,
			    const cJSON *mflag, const struct vcard *photo,
			    struct events *ev) CACHE_MUST_CHECK;

/* Keep ours (a card's bytes) beside contact cid's file as
 * "<name>.conflict-<UTC time>", a scratch file; its name in kept. */
int cache_tree_keep_beside(sqlite3 *db, int64_t cid, const struct buf *ours, char *kept,
			   size_t size, struct events *ev) CACHE_MUST_CHECK;

/* What a written card of contact cid is based on (cache_card_base). */
enum cache_base {
	CACHE_BASE_UNKNOWN = 0, /* names a version the cache does not know */
	CACHE_BASE_PRESENT = 1, /* the cache's present version */
	CACHE_BASE_OLDER = 2,	/* an older version, or the writer's last save */
	CACHE_BASE_UNNAMED = 3, /* names none: taken as the present version */
};

/* The base of card, written into the file of contact cid: of the version it
 * names, the versions our own writes made of that one after the other, and
 * what the cards merged since that named it said, the one the card changes
 * least against (tree.c). With CACHE_BASE_OLDER, *json (when json is not NULL)
 * is the base; the caller frees it. Or -errno. */
int cache_card_base(sqlite3 *db, int64_t cid, struct vcard *card, int local_ok, cJSON **json);

/* Render contact cid from its server JSON (and photo) into the file that
 * shows it, creating or renaming that file as needed. In a transaction. */
int cache_tree_render(struct cache *c, sqlite3 *db, int64_t cid,
		      struct events *ev) CACHE_MUST_CHECK;

/*
 * A contact that arrived from the server carrying ext, our extension: when
 * its client key is another contact's (a create whose answer was lost, sent
 * again after a lookup that ran before the first one was carried out), it
 * is a stray copy: its file goes, and it is deleted on the server. 1 when
 * it was one, 0, or -errno. In a transaction.
 */
int cache_tree_drop_stray(struct cache *c, sqlite3 *db, int64_t cid, const cJSON *ext,
			  struct events *ev) CACHE_MUST_CHECK;

/* The Graph path of a folder's contacts collection ("" for the default
 * folder, "/contactFolders/ID" otherwise) into out. -EAGAIN when the
 * folder has no id yet. */
int cache_folder_base(sqlite3 *db, int64_t folder, char *out, size_t size) CACHE_MUST_CHECK;

/* A string member of a JSON object, or NULL. */
const char *cache_jstr(const cJSON *o, const char *key);

/* Our open extension in a contact's JSON ("extensions"), or NULL. */
cJSON *cache_ext_of(const cJSON *contact);

/* A random client key (32 hex digits + NUL). */
void cache_new_key(char out[33]);

/* ---- outbox.c / sync_in.c (run on the sync thread) -------------------------- */

/* One outbox pass: send everything sendable now. 0, or -EHOSTDOWN when the
 * server could not be reached. *next_ms: when the next entry is due (0:
 * none waiting). */
int cache_outbox_pass(struct cache *c, int64_t *next_ms) CACHE_MUST_CHECK;

/* One delta round over every folder. 0, -EHOSTDOWN, or -errno. */
int cache_sync_in(struct cache *c) CACHE_MUST_CHECK;

/* Fetch photos not yet known, at most max contacts. *left: whether more
 * remain. */
int cache_sync_photos(struct cache *c, int max, int *left) CACHE_MUST_CHECK;

/* Render every contact marked for it. */
int cache_sync_render(struct cache *c) CACHE_MUST_CHECK;

/* Record whether the server answers (logged when it changes). */
void cache_set_online(struct cache *c, int online);

/* Whether cache_close asked the sync thread to stop: long loops (a delta
 * round over every folder, an outbox pass, photos) end at their next step
 * instead of holding the exit up (a folder not read keeps its old delta
 * link and is read at the next mount). */
int cache_stopping(struct cache *c);

/* Whether a graph/ error means the server could not be reached (or was not
 * asked: -ECANCELED, the process is ending). */
int cache_offline_errno(int r);

#endif
