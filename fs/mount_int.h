/*
 * Private to fs/: the mounted filesystem. mount.c parses the mount's
 * options and owns the session (fs.h's fs_mount_main), ops.c answers the
 * kernel, nodes.c keeps what the kernel holds (lookup counts, open files),
 * ctl.c the .contactfs/ directory, notify.c tells the kernel what the sync
 * thread changed.
 *
 * Inode numbers are the cache's (CACHE_ROOT_INO is FUSE_ROOT_ID); the few
 * nodes that exist only here (.contactfs/ and its files) have numbers from
 * FS_CTL_INO up, far above anything SQLite's AUTOINCREMENT hands out.
 *
 * Locks, in the order they may be taken:
 *   struct fs_file.lock  (one open file's bytes; held across cache_write)
 *   the cache's locks    (inside cache_* calls, and around cache_readdir's
 *                         callback)
 *   struct fs.lock       (a leaf: the lookup counts and the open-file table)
 *   struct fs_notify.lock (a leaf: the queue of kernel notifications)
 * Neither fs.lock nor notify.lock is ever held across a cache call, a
 * reply to the kernel, or a notification.
 */
#ifndef CONTACTFS_MOUNT_INT_H
#define CONTACTFS_MOUNT_INT_H

#include "cache.h"
#include "util.h"

#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#define FS_CTL_NAME ".contactfs"
#define FS_CTL_INO (UINT64_C(1) << 62)
#define FS_CTL_STATUS_INO (FS_CTL_INO + 1)
#define FS_CTL_ERRORS_INO (FS_CTL_INO + 2)
#define FS_CTL_CATEGORIES_INO (FS_CTL_INO + 3)
#define FS_CTL_BIRTHDAYS_INO (FS_CTL_INO + 4)
#define FS_CTL_PEOPLE_INO (FS_CTL_INO + 5) /* people/; person i is + 1 + i */
#define FS_CTL_LAST_INO (FS_CTL_PEOPLE_INO + CACHE_PEOPLE_MAX)

/* The biggest file we hold in memory: a vCard with a 4 MB photo in base64
 * is about 5.5 MB. */
#define FS_FILE_MAX ((size_t)16 << 20)

/* What the command line set, beyond libfuse's own options. */
struct fs_options {
	const char *cache_dir; /* NULL: the default */
	const char *mailbox;   /* the user= UPN, or NULL for "me" */
	int poll_s;	       /* seconds between delta rounds */
	int fsync_timeout_s;   /* how long fsync waits for the server */
	int drain_timeout_s;   /* how long unmounting waits for the outbox */
	int offline;	       /* never talk to the server */
	int followup;	       /* -o followup: map the follow-up flag (beta) */
	enum vcard_version version;
};

/* One file the kernel has open, shared by every handle on it. */
struct fs_file {
	uint64_t ino;
	unsigned refs; /* handles, plus callers holding it: under fs.lock */
	int stale;     /* the cache changed it: reload unless dirty (under fs.lock) */

	pthread_mutex_t lock; /* protects the fields below */
	struct buf data;      /* the file's bytes as the handles see them */
	int loaded;	      /* data holds the file */
	int dirty;	      /* written since the last commit */
	unsigned writers;     /* handles open for writing */
	int64_t mtime_ns;     /* of the last write, while dirty */
	struct fs_file *next; /* in the table's bucket: under fs.lock */
};

struct fs_notify {
	pthread_mutex_t lock; /* protects the fields below */
	pthread_cond_t cond;
	struct fs_event *head, *tail;
	int stop;
	int running;
	pthread_t thread;
};

struct fs {
	struct cache *cache;
	struct fuse_session *se;
	struct fs_options opt;
	uid_t uid;
	gid_t gid;
	double timeout; /* entry and attribute validity, seconds */

	pthread_mutex_t lock;	/* protects the fields below */
	struct fs_known *known; /* open-addressing table: ino -> lookup count */
	size_t known_size, known_used, known_live;
	struct fs_file **files; /* hash table of open files by inode */
	size_t files_size, files_open;
	time_t asked; /* when opendir last asked for a delta round */
	/* .contactfs/categories: a hash of what it showed last and since
	 * when (an editor that finds the mtime moved refuses to save). */
	uint64_t ctl_hash;
	struct timespec ctl_mtime;

	struct fs_notify notify;
};

struct fs_known {
	uint64_t ino; /* 0: empty, UINT64_MAX: deleted */
	uint64_t count;
};

/* ---- nodes.c -------------------------------------------------------------- */

int fs_nodes_init(struct fs *fs) __attribute__((warn_unused_result));
void fs_nodes_release(struct fs *fs);

/* The kernel learnt of ino n more times (a lookup reply). Never fails: a
 * count that cannot be stored is logged and then not tracked. */
void fs_known_add(struct fs *fs, uint64_t ino, uint64_t n);
/* The kernel forgot ino n times. */
void fs_known_forget(struct fs *fs, uint64_t ino, uint64_t n);
/* The lookup count the kernel holds for ino (0: it does not know it). */
uint64_t fs_known_count(struct fs *fs, uint64_t ino);
/* How many inodes the kernel holds. */
size_t fs_known_live(struct fs *fs);

/* The open file for ino, with a reference (created empty, not loaded, when
 * create is set). NULL when it is not open (or out of memory with create). */
struct fs_file *fs_file_get(struct fs *fs, uint64_t ino, int create);
/* Whether ino is open (fs.lock only: safe under the cache's lock). */
int fs_file_is_open(struct fs *fs, uint64_t ino);
/* Drop a reference; the last one frees the file. */
void fs_file_put(struct fs *fs, struct fs_file *f);
/* The cache changed ino: an open copy that is not dirty reloads. */
void fs_file_mark_stale(struct fs *fs, uint64_t ino);
/* Take and clear the stale mark. */
int fs_file_take_stale(struct fs *fs, struct fs_file *f);
size_t fs_files_open(struct fs *fs);

/* ---- ctl.c ------------------------------------------------------------------ */

/* Attributes of a .contactfs node (size 0 for the directory). */
int fs_ctl_getattr(struct fs *fs, uint64_t ino, struct stat *st);
/* A .contactfs file's content, appended to out. */
int fs_ctl_render(struct fs *fs, uint64_t ino, struct buf *out) __attribute__((warn_unused_result));
/* The node called name in directory parent of .contactfs (itself or
 * people/), or 0. */
uint64_t fs_ctl_lookup(struct fs *fs, uint64_t parent, const char *name);
/* Whether a .contactfs file may be written (categories). */
int fs_ctl_writable(uint64_t ino);
/* Whether ino is people/ or a file in it: read-only, writes fail with
 * EROFS (the rest of .contactfs answers EPERM or EACCES). */
int fs_ctl_is_people(uint64_t ino);
/* people/ is opened: when the stored list is older than the poll
 * interval, the sync thread is asked to read it again (no wait here). */
void fs_ctl_opendir(struct fs *fs, uint64_t ino);
/* A written .contactfs file's new content: 0, or an errno (EINVAL: refused,
 * the reason is in .contactfs/errors). */
int fs_ctl_commit(struct fs *fs, uint64_t ino, const struct buf *text);
int fs_ctl_readdir(fuse_req_t req, struct fs *fs, uint64_t dir, size_t size, off_t off, int plus);

/* ---- notify.c ----------------------------------------------------------------- */

int fs_notify_start(struct fs *fs) __attribute__((warn_unused_result));
/* Stop the thread; later events are dropped. */
void fs_notify_stop(struct fs *fs);
/* Have the kernel drop what it caches of ino (attributes, pages). */
void fs_notify_inode(struct fs *fs, uint64_t ino);
/* The cache's change callback (runs on the sync thread). */
void fs_notify_change(void *ctx, const struct cache_change *change);

/* ---- ops.c --------------------------------------------------------------------- */

extern const struct fuse_lowlevel_ops fs_ops;

/* Fill st for a cache node. */
void fs_stat(const struct fs *fs, const struct cache_attr *a, struct stat *st);

#endif
