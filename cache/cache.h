/*
 * cache — the local replica of one mailbox and the sync engine between it
 * and Microsoft Graph. Knows nothing of FUSE: fs/ reads and writes the tree
 * through these calls and learns of remote changes through a callback.
 *
 * Invariants:
 *  - Everything lives in one SQLite database (WAL) under the cache
 *    directory (0700; files 0600). A call that changes the tree commits
 *    before it returns: a change accepted here survives a crash.
 *  - The tree is made of nodes with persistent inode numbers that are never
 *    reused: folders (contact folders of the mailbox), scratch directories
 *    (names starting with '.'), files and symlinks. A file whose name ends in
 *    ".vcf" in a folder shows a contact; any other file is a scratch file,
 *    kept locally and never uploaded.
 *  - A contact is not its file: it keeps its Graph id, its UID and its
 *    server version whatever happens to the file that shows it. A .vcf that
 *    appears in a folder carrying the UID of a contact of that folder whose
 *    deletion is pending (or that no file shows) is an update of it.
 *  - Every local change of a contact or folder becomes an entry of the
 *    outbox, an ordered durable log. Entries for one contact or folder go
 *    out in order; independent ones go out together in $batch requests. An
 *    entry is never dropped: after repeated failure it is parked and retried
 *    later.
 *  - Calls from fs/ never wait on the network: reads are local queries, and
 *    no lock is held across a network call. What has no delta in Graph
 *    (the master category list, the people) is shown from a stored copy;
 *    a look at a stale one asks the sync thread to read it again.
 *
 * Threads: every cache_* call may come from any thread. The sync thread
 * (cache_start) is the only one that talks to Graph. The change callback
 * runs on the sync thread with no lock held and no transaction open.
 */
#ifndef CONTACTFS_CACHE_H
#define CONTACTFS_CACHE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "util.h"
#include "vcard.h"

#define CACHE_MUST_CHECK __attribute__((warn_unused_result))

#define CACHE_ROOT_INO 1 /* the default contact folder */
#define CACHE_SCHEMA_VERSION 5

struct graph;
struct buf;

/* ---- names (docs/design.md §1) -------------------------------------------- */

/*
 * A file or directory name made safe from a name on the server: '/',
 * control characters and invalid UTF-8 become '_', no leading '.' or blank,
 * at most 255 bytes with suffix, cut on a character boundary. Writes the
 * NUL-terminated name into out; returns its length, or 0 when nothing usable
 * is left (the caller picks another name).
 */
size_t cache_safe_name(const char *name, const char *suffix, char *out, size_t size);

/* A contact's file name: its display name, else its first email address,
 * else its company, else "Unnamed", made safe, with ".vcf". Returns the
 * length (never 0 for size >= 16). */
size_t cache_contact_name(const cJSON *contact, char *out, size_t size);

/* "base (n)suffix" within 255 bytes (base cut on a character boundary).
 * 0, or -1 when it cannot fit. */
int cache_numbered_name(const char *base, const char *suffix, unsigned n, char *out, size_t size);

/* ---- reading a folder from Graph (fetch.c) ------------------------------------ */

/*
 * The requests that read a contact folder, shared by the sync engine and
 * contactfs export, so that a change to how they are made is made once.
 * They use only g: no cache is needed. A folder's collection ("base") is
 * "" for the default folder (/contacts) and "/contactFolders/ID" for the
 * others; a contact's requests go through its folder's.
 */

/* One delta round (every page) of a folder's contacts with the fields the
 * vCard mapping reads: from the cursor link when not NULL, else from the
 * start (folder_id: by id, the default folder's too; delta is documented by
 * folder id only). fn and *next as for graph_delta. */
int cache_fetch_contacts(struct graph *g, const char *folder_id, const char *link,
			 int (*fn)(const cJSON *item, void *ctx), void *ctx,
			 char **next) CACHE_MUST_CHECK;

/* Every contact of collection base that carries our open extension, every
 * page (Graph's delta does not return extensions): fn(id, ext, ctx) for
 * each, ext the extension object (borrowed for the call). A non-zero
 * return of fn stops the listing and is returned. */
int cache_fetch_exts(struct graph *g, const char *base,
		     int (*fn)(const char *id, const cJSON *ext, void *ctx),
		     void *ctx) CACHE_MUST_CHECK;

/* Every contact of collection base whose PidLidHasPicture (Outlook's "has
 * a photo" flag) is true, every page: fn(id, ctx) for each. Other contacts
 * may still have a photo (a client that does not set the flag): callers
 * check a sample of them (CACHE_PHOTO_SAMPLE) and probe every contact when
 * one has. 0, a non-zero return of fn, or -errno as graph_list; a server
 * that does not take the query answers 400 (-EINVAL) or 501 (-EIO), which
 * cache_photo_flags_refused() tells apart. */
int cache_fetch_photo_flags(struct graph *g, const char *base, int (*fn)(const char *id, void *ctx),
			    void *ctx) CACHE_MUST_CHECK;

/* Whether r from cache_fetch_photo_flags means the server does not take the
 * query (then probe every photo), rather than a failure to try again. */
int cache_photo_flags_refused(int r);

/* Contacts the flag says have no photo that are probed anyway when the
 * mailbox is read in full (a mount's first round, an export), to learn
 * whether its photos carry the flag: this many, shared out over the
 * folders. */
#define CACHE_PHOTO_SAMPLE 20

/* Each folder's share of the sample among nfolders: CACHE_PHOTO_SAMPLE /
 * nfolders rounded up, so every folder is checked (all of a folder's
 * photo-less contacts when it has fewer). */
size_t cache_photo_sample(size_t nfolders);

/* One contact's photo, for cache_fetch_photos. */
struct cache_photo {
	/* in */
	const char *base; /* the contact's folder's collection */
	const char *id;	  /* the contact's Graph id */
	/* out */
	int status;	 /* 200: the photo is in data; 404: the contact has none;
			  * else not answered (the item's HTTP status): try later */
	char code[64];	 /* the Graph error code of a refusal, if any */
	char type[96];	 /* the photo's media type (image/jpeg when unsaid) */
	struct buf data; /* the photo's bytes; empty unless status is 200 */
};

/* Set up n photos with base and id still to fill (data empty). */
void cache_photos_init(struct cache_photo *p, size_t n);
/* Free their data. */
void cache_photos_release(struct cache_photo *p, size_t n);

/* The photos of n contacts, GRAPH_BATCH_MAX to a $batch: each p[i]'s out
 * fields are set. 0 when every batch was answered (items themselves may
 * have failed: see status); -errno of a batch that failed, or of a body
 * that does not decode (then the later ones are not fetched). */
int cache_fetch_photos(struct graph *g, struct cache_photo *p, size_t n) CACHE_MUST_CHECK;

/* ---- opening ----------------------------------------------------------------- */

enum cache_event {
	CACHE_ADDED,   /* a node appeared: parent/name */
	CACHE_CHANGED, /* a file's bytes or attributes changed */
	CACHE_REMOVED, /* a node went away from parent/name */
	CACHE_RENAMED, /* old_parent/old_name is now parent/name */
};

struct cache_change {
	enum cache_event what;
	uint64_t ino;
	uint64_t parent;
	const char *name;
	uint64_t old_parent; /* CACHE_RENAMED only */
	const char *old_name;
};

/* Told of every change the sync thread makes to the tree. The strings are
 * valid during the call only. */
typedef void (*cache_change_fn)(void *ctx, const struct cache_change *change);

struct cache_config {
	const char *dir;     /* the cache directory; NULL: $XDG_CACHE_HOME/contactfs/<mailbox>,
				else $HOME/.cache/contactfs/<mailbox> */
	const char *mailbox; /* UPN, or NULL for the signed-in user ("me") */
	enum vcard_version version; /* of rendered vCards; 0: 3.0 */
	int poll_s;		    /* seconds between delta rounds; 0: 300; < 0: only on demand */
	int delete_grace_ms;	    /* how long a delete waits; 0: 5000 */
	int park_after;		    /* failed attempts before an entry is parked; 0: 5 */
	int park_retry_s;	    /* when a parked entry is tried again; 0: 600 */
	int photos;		    /* fetch photos in the background; 0: no, 1: yes */
	/* Map the contact's follow-up flag (-o followup; docs/mapping.md):
	 * read it from Graph's beta, show it as X-CONTACTFS-FOLLOWUP, send
	 * changes of it to beta. 0: nothing is sent to beta, and the property
	 * is an unknown one, kept in the open extension. */
	int followup;
	cache_change_fn on_change; /* or NULL */
	void *ctx;
};

struct cache;

/*
 * Open (or create) the replica. g may be NULL for a cache that is only read
 * (then cache_start fails). Refuses, with -EINVAL and a sentence in errbuf,
 * a database that is not a contactfs cache, one of a newer schema, one of
 * another mailbox, or one that SQLite finds corrupt: never silently reset.
 * The directory is made 0700 (with its missing parents) when it does not
 * exist. One that exists is used as it is, never chmod'ed: -EACCES when it
 * is not the caller's or others can open it, -ENOTEMPTY when it holds other
 * files and no cache.db; errbuf says which and what to do.
 * Entries that were in flight when the last process stopped are made
 * pending again (creates among them are looked up on the server before they
 * are sent again).
 */
struct cache *cache_open(const struct cache_config *cfg, struct graph *g, char *errbuf,
			 size_t errsize, int *err);

/* Stop the sync thread (waiting for the request in flight) and close. */
void cache_close(struct cache *c);

/* Start the sync thread: first sync if there was none, then rounds every
 * poll_s and when asked. 0 or -errno. */
int cache_start(struct cache *c) CACHE_MUST_CHECK;

/* Ask for a delta round and an outbox pass now (does not wait). */
void cache_sync_now(struct cache *c);

/*
 * Writers of file ino through the mount (docs/design.md §1). While a file has
 * one, and for CACHE_NAME_GRACE_MS after the last one closes (an editor's
 * save and reopen), a display-name change from the server does not rename
 * it: the rename waits and is made then. Call cache_name_hold when a file
 * gets its first writer and cache_name_release when its last one closes.
 * cache_name_hold returns 0 or -ENOMEM (then the name is not held).
 */
#define CACHE_NAME_GRACE_MS 3000
int cache_name_hold(struct cache *c, uint64_t ino) CACHE_MUST_CHECK;
void cache_name_release(struct cache *c, uint64_t ino);

/*
 * Wait until the outbox holds no entry that can be sent now (pending deletes
 * waiting their grace period count as sendable: the wait covers them) or
 * timeout_ms passes. 0 when drained, -ETIMEDOUT, or -EHOSTDOWN when offline
 * with entries left. Parked entries do not count.
 */
int cache_drain(struct cache *c, int timeout_ms) CACHE_MUST_CHECK;

/* Wait until no entry for the contact that file ino shows is pending, or
 * timeout_ms. 0: on the server; the -errno of a rejection (the entry was
 * parked); -ETIMEDOUT; -EHOSTDOWN when offline. 0 for a scratch file. For
 * an imported file of cards: until no entry of its folder is pending. */
int cache_wait_file(struct cache *c, uint64_t ino, int timeout_ms) CACHE_MUST_CHECK;

/* Put every change committed so far on stable storage (commits are safe
 * from a crash of the process when the call that made them returns, from a
 * power cut only after this). For fsync when the server has not answered.
 * 0, or -errno of the failed fsync (logged). */
int cache_sync_disk(struct cache *c) CACHE_MUST_CHECK;

/* ---- the tree (what fs/ calls) --------------------------------------------- */

enum cache_kind {
	CACHE_FOLDER = 1,  /* a contact folder (a directory on the server) */
	CACHE_SCRATCH_DIR, /* a directory whose name starts with '.' */
	CACHE_FILE,	   /* a .vcf in a folder (contact) or a scratch file */
	CACHE_SYMLINK,
};

struct cache_attr {
	uint64_t ino;
	uint64_t parent;
	enum cache_kind kind;
	uint64_t size;	  /* bytes of the file, of the symlink's target; 0 for dirs */
	int64_t mtime_ns; /* since the epoch */
	int contact;	  /* a file that shows a contact */
	int draft;	  /* a .vcf whose bytes did not parse: local only; or
			   * CACHE_IMPORTED */
};

/* cache_attr.draft of a file of several cards already imported into its
 * folder (each card a contact of its own); it goes after the grace period. */
#define CACHE_IMPORTED 2

/* The node called name in directory parent. -ENOENT, -ENOTDIR. */
int cache_lookup(struct cache *c, uint64_t parent, const char *name,
		 struct cache_attr *out) CACHE_MUST_CHECK;
int cache_getattr(struct cache *c, uint64_t ino, struct cache_attr *out) CACHE_MUST_CHECK;

/* Called for each entry of a directory in a stable order (by inode), from
 * after offset (0: from the start); each entry's cookie is the offset to
 * resume after it (its inode number). A non-zero return stops the walk and
 * is returned. The callback must not call into the cache (it runs under
 * the cache's lock): collect, then act. */
typedef int (*cache_dir_fn)(const char *name, const struct cache_attr *attr, void *ctx);
int cache_readdir(struct cache *c, uint64_t dir, uint64_t offset, cache_dir_fn fn,
		  void *ctx) CACHE_MUST_CHECK;

/* The whole content of a file (or a symlink's target) appended to out. */
int cache_read(struct cache *c, uint64_t ino, struct buf *out) CACHE_MUST_CHECK;

/*
 * A new empty file, directory or symlink called name in parent (-EEXIST
 * when taken). A directory in a folder whose name does not start with '.'
 * is a new contact folder, created on the server; any other is a scratch
 * directory. Symlinks are scratch only. target: the symlink's target, else
 * NULL.
 */
int cache_create(struct cache *c, uint64_t parent, const char *name, enum cache_kind kind,
		 const char *target, struct cache_attr *out) CACHE_MUST_CHECK;

/*
 * Replace the content of file ino (what close() of a written file does).
 * For a .vcf in a folder the bytes are parsed: valid, they are stored and
 * the contact's create or update is queued (committed before this returns);
 * invalid, the bytes are kept as a draft, nothing is queued, the reason is
 * recorded in the error log and in err, and -EINVAL is returned. A valid
 * card carrying the UID of a contact that another file of the folder shows
 * is kept as a draft too, logged, and -EEXIST is returned: a folder holds a
 * contact once. A scratch file just stores the bytes. mtime_ns: the new
 * mtime (0: now).
 */
int cache_write(struct cache *c, uint64_t ino, const void *data, size_t len, int64_t mtime_ns,
		struct vcard_error *err) CACHE_MUST_CHECK;

/* cache_write of bytes a handle wrote after it had loaded the file at
 * version loaded (the X-CONTACTFS-VERSION value the file showed then; NULL
 * or "": none): a card written without a version line is based on it (an
 * editor that drops the line still merges with what it read). */
int cache_write_loaded(struct cache *c, uint64_t ino, const void *data, size_t len,
		       int64_t mtime_ns, const char *loaded,
		       struct vcard_error *err) CACHE_MUST_CHECK;

/* The X-CONTACTFS-VERSION value of the card in data into out: 1, or 0 when
 * data is not one card or carries none (out ""). */
int cache_token_of(const void *data, size_t len, char *out, size_t size);

/* Set a node's mtime (utimens). */
int cache_set_mtime(struct cache *c, uint64_t ino, int64_t mtime_ns) CACHE_MUST_CHECK;

/* Remove a file or symlink (a contact's deletion is queued after the grace
 * period) or an empty directory (-ENOTEMPTY; a folder's deletion is queued;
 * the root cannot go: -EBUSY). */
int cache_unlink(struct cache *c, uint64_t parent, const char *name) CACHE_MUST_CHECK;

#define CACHE_RENAME_NOREPLACE 1

/*
 * Rename, as docs/design.md §3 and §8 mean it: within a folder a
 * contact's file is renamed only; into another folder the contact moves
 * (create there, then delete here); onto a non-.vcf name or into a scratch
 * directory the contact's deletion is queued and the file stays as a
 * scratch file; a scratch file renamed onto a .vcf name in a folder is
 * committed as that contact (-EINVAL, and nothing changes, when it does not
 * parse; err says why; -EEXIST, and nothing changes, when it carries the UID
 * of a contact another file of that folder shows; the same for a contact
 * moved into a folder that shows one with its UID). A replaced target goes
 * as if unlinked. A folder
 * renamed is renamed on the server. -EEXIST with CACHE_RENAME_NOREPLACE
 * when newname is taken; -ENOTEMPTY for a non-empty directory target.
 */
int cache_rename(struct cache *c, uint64_t parent, const char *name, uint64_t newparent,
		 const char *newname, unsigned flags, struct vcard_error *err) CACHE_MUST_CHECK;

/* ---- categories and other raw changes -------------------------------------- */

/* Queue one request (method, path relative to the mailbox, JSON body or
 * NULL) that has no contact: master categories. Committed before return. */
int cache_enqueue_request(struct cache *c, const char *method, const char *path,
			  const char *body) CACHE_MUST_CHECK;

/* .contactfs/categories: the stored master category list as text, "name:
 * colour" a line (with a comment saying so when the server was never read).
 * When the stored list is older than the poll interval, the sync thread is
 * asked to read the server's (this does not wait for it). */
int cache_categories_text(struct cache *c, struct buf *out) CACHE_MUST_CHECK;

/* The file written whole: its difference from the list the file showed
 * (names added, recoloured, removed) is stored, committed before this
 * returns, and the file shows the list written; the sync thread makes it
 * requests (POST, PATCH of the colour, DELETE) against the server's list as
 * it then is, and the outbox sends them (their refusals go to the errors).
 * Never waits for the network. -EINVAL with why ("line N: ...", also in
 * the errors) when a line is not "name: colour" with an Outlook colour, or
 * names a category twice; nothing changes then. -EACCES for another
 * mailbox's list. */
int cache_categories_write(struct cache *c, const char *text, size_t len, char *why,
			   size_t whysize) CACHE_MUST_CHECK;

/* .contactfs/birthdays.ics: an iCalendar with a yearly all-day event for
 * each contact's birthday and anniversary (see birthdays.c). */
int cache_birthdays_ics(struct cache *c, struct buf *out) CACHE_MUST_CHECK;

/* .contactfs/people/: the people the People API finds most relevant,
 * most relevant first, as read-only vCards. */
#define CACHE_PEOPLE_MAX 100
#define CACHE_PEOPLE_MAX_TEXT "100"

struct cache_person {
	char name[256];	  /* "001 Megan Bowen.vcf": the rank first, so ls sorts by it */
	const char *card; /* the vCard */
	size_t len;
};

struct cache_people {
	size_t n;
	struct cache_person *v;
	int64_t mtime_ns; /* when the server gave the list (0: never) */
	unsigned refs;	  /* the cache's */
};

/* The people as the server last gave them (none before the first answer,
 * which the sync thread reads at its start when it was never read).
 * ask: when the stored list is older than the poll interval, ask the sync
 * thread to read it again (this does not wait for it: the next call shows
 * the new list). Hand the snapshot back with cache_people_put. */
int cache_people_get(struct cache *c, int ask, struct cache_people **out) CACHE_MUST_CHECK;
void cache_people_put(struct cache *c, struct cache_people *p);

/* ---- status ------------------------------------------------------------------ */

struct cache_status {
	int online;		 /* the last request reached the server */
	int synced;		 /* a first sync has completed */
	time_t last_sync;	 /* end of the last complete delta round, 0: none */
	unsigned pending;	 /* outbox entries waiting or in flight */
	unsigned parked;	 /* entries parked after repeated failure */
	unsigned contacts;	 /* contacts in the replica */
	unsigned photos_pending; /* photos not fetched yet (with photos on) */
	unsigned long requests;	 /* HTTP requests sent by this process */
};

int cache_status(struct cache *c, struct cache_status *out) CACHE_MUST_CHECK;

/* Called for each recorded error, oldest first (at most the last limit).
 * As with cache_readdir, the callback must not call into the cache. */
typedef int (*cache_error_fn)(time_t when, const char *what, const char *message, void *ctx);
int cache_errors(struct cache *c, unsigned limit, cache_error_fn fn, void *ctx) CACHE_MUST_CHECK;

/* Whether name is a contact file name ("*.vcf", not starting with '.'). */
int cache_is_vcf_name(const char *name);

#endif
