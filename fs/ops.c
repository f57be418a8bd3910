/*
 * The FUSE low-level operations: every request is answered from the cache
 * (cache_* calls are local queries and transactions). Two kinds wait on the
 * network, each bounded: fsync of a file, which waits for the server's
 * verdict by design (up to fsync_timeout), and, in fs/ctl.c, the lookup,
 * stat, open or listing of .contactfs/categories and .contactfs/people/
 * when the stored list is older than the poll interval (one request, on the
 * caller's thread).
 *
 * An open file's bytes live in a struct fs_file shared by every handle on
 * it: writes change that copy, and the first flush (close) after a write
 * hands the whole file to cache_write, which parses it and queues the
 * upload before close returns. So close is where an invalid vCard fails
 * with EINVAL, and a file is never uploaded half written.
 *
 * Every reply that hands the kernel an inode (lookup, create, mkdir,
 * symlink, link, mknod, readdirplus) counts one lookup in nodes.c; forget
 * takes it back. A reply the kernel never got is taken back at once.
 */
#include "mount_int.h"

#include "cache.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h> /* RENAME_NOREPLACE */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* What fi->fh points to. */
struct fs_handle {
	struct fs_file *file; /* a cache file; NULL for a .contactfs file */
	struct buf text;      /* a .contactfs file's content, made at open */
	/* A .contactfs file opened for writing (categories): text is what
	 * this handle wrote, committed whole at flush, fsync or release.
	 * A cache file's handle: dirty while the file holds writes made
	 * through it (or its O_TRUNC) that no commit has taken yet. */
	int writable, dirty;
	/* A cache file's writable handle: the version of the card it last
	 * loaded (X-CONTACTFS-VERSION; "" none), the base of a card it writes
	 * without that line. */
	char loaded[200];
	pthread_mutex_t lock;
};

/* A written .contactfs file's text goes to the cache (once per change). */
static int ctl_commit(struct fs *fs, uint64_t ino, struct fs_handle *h)
{
	int r = 0;

	pthread_mutex_lock(&h->lock);
	if (h->dirty) {
		h->dirty = 0; /* refused or not: said once, at this close */
		r = fs_ctl_commit(fs, ino, &h->text);
	}
	pthread_mutex_unlock(&h->lock);
	return r;
}

static struct fs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static int is_ctl(uint64_t ino)
{
	return ino >= FS_CTL_INO && ino <= FS_CTL_LAST_INO;
}

/* What a change to a .contactfs node gets: people/ is a read-only
 * directory tree, the rest is ours. */
static int ctl_refusal(uint64_t ino)
{
	return fs_ctl_is_people(ino) ? EROFS : EPERM;
}

/* The same for the name in parent (people/ itself in .contactfs). */
static int ctl_name_refusal(uint64_t parent, const char *name)
{
	if (parent == FS_CTL_INO && !strcmp(name, "people"))
		return EROFS;
	return ctl_refusal(parent);
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static struct timespec ns_to_ts(int64_t ns)
{
	struct timespec ts;

	ts.tv_sec = (time_t)(ns / 1000000000);
	ts.tv_nsec = (long)(ns % 1000000000);
	if (ts.tv_nsec < 0) {
		ts.tv_sec--;
		ts.tv_nsec += 1000000000;
	}
	return ts;
}

void fs_stat(const struct fs *fs, const struct cache_attr *a, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = a->ino;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	switch (a->kind) {
	case CACHE_FOLDER:
	case CACHE_SCRATCH_DIR:
		/* nlink 1: "unknown", so find does not guess subdirectories
		 * from it (as btrfs does). */
		st->st_mode = S_IFDIR | 0700;
		st->st_nlink = 1;
		break;
	case CACHE_SYMLINK:
		st->st_mode = S_IFLNK | 0777;
		st->st_nlink = 1;
		break;
	case CACHE_FILE:
	default:
		st->st_mode = S_IFREG | 0600;
		st->st_nlink = 1;
		break;
	}
	st->st_size = (off_t)a->size;
	st->st_blksize = 4096;
	st->st_blocks = (blkcnt_t)((a->size + 511) / 512);
	st->st_mtim = ns_to_ts(a->mtime_ns);
	st->st_ctim = st->st_mtim;
	st->st_atim = st->st_mtim;
}

/* A file written and not yet committed shows its new size and time. */
static void overlay_open(struct fs *fs, struct stat *st)
{
	struct fs_file *f;

	if (!S_ISREG(st->st_mode) || !(f = fs_file_get(fs, (uint64_t)st->st_ino, 0)))
		return;
	pthread_mutex_lock(&f->lock);
	if (f->dirty) {
		st->st_size = (off_t)f->data.len;
		st->st_blocks = (blkcnt_t)((f->data.len + 511) / 512);
		st->st_mtim = ns_to_ts(f->mtime_ns);
		st->st_ctim = st->st_mtim;
	}
	pthread_mutex_unlock(&f->lock);
	fs_file_put(fs, f);
}

static int getattr_any(struct fs *fs, uint64_t ino, struct stat *st)
{
	struct cache_attr a;
	int r;

	if (is_ctl(ino))
		return fs_ctl_getattr(fs, ino, st);
	if ((r = cache_getattr(fs->cache, ino, &a)))
		return r;
	fs_stat(fs, &a, st);
	overlay_open(fs, st);
	return 0;
}

/* The entry the kernel gets for st; the lookup it will hold is counted
 * (the caller takes it back if the reply does not reach the kernel). */
static void entry_of(struct fs *fs, const struct stat *st, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	e->ino = st->st_ino;
	e->attr = *st;
	/* .contactfs files change with every look: never cache their size;
	 * people/'s names change with the list. */
	e->attr_timeout = is_ctl(e->ino) ? 0 : fs->timeout;
	e->entry_timeout = fs_ctl_is_people(e->ino) ? 0 : fs->timeout;
	fs_known_add(fs, e->ino, 1);
}

/* Answer with an entry and count the lookup the kernel now holds. */
static void reply_entry(fuse_req_t req, struct fs *fs, const struct stat *st)
{
	struct fuse_entry_param e;

	entry_of(fs, st, &e);
	if (fuse_reply_entry(req, &e))
		fs_known_forget(fs, e.ino, 1); /* the kernel never got it */
}

static void reply_attr_entry(fuse_req_t req, struct fs *fs, const struct cache_attr *a)
{
	struct stat st;

	fs_stat(fs, a, &st);
	reply_entry(req, fs, &st);
}

/* Names in the root that are ours: nothing may be created over them. */
static int reserved(uint64_t parent, const char *name)
{
	return parent == CACHE_ROOT_INO && !strcmp(name, FS_CTL_NAME);
}

/* The error a person should see for a cache failure that is not errno-ish. */
static int err_of(int r)
{
	return r < 0 ? -r : EIO;
}

/* ---- lookup, attributes ------------------------------------------------------------- */

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct cache_attr a;
	struct stat st;
	int r;

	if (reserved(parent, name) || parent == FS_CTL_INO || parent == FS_CTL_PEOPLE_INO) {
		uint64_t ino = is_ctl(parent) ? fs_ctl_lookup(fs, parent, name) : FS_CTL_INO;

		if (!ino || (r = fs_ctl_getattr(fs, ino, &st))) {
			fuse_reply_err(req, ENOENT);
			return;
		}
		reply_entry(req, fs, &st);
		return;
	}
	if (is_ctl(parent)) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	if ((r = cache_lookup(fs->cache, parent, name, &a))) {
		if (r == -ENOENT) {
			/* A negative entry, cached as long as a positive one:
			 * the notify thread drops it when the name appears. */
			struct fuse_entry_param e;

			memset(&e, 0, sizeof(e));
			e.entry_timeout = fs->timeout;
			fuse_reply_entry(req, &e);
			return;
		}
		fuse_reply_err(req, err_of(r));
		return;
	}
	fs_stat(fs, &a, &st);
	overlay_open(fs, &st);
	reply_entry(req, fs, &st);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	fs_known_forget(fs_of(req), ino, nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	struct fs *fs = fs_of(req);

	for (size_t i = 0; i < count; i++)
		fs_known_forget(fs, forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct stat st;
	int r;

	(void)fi;
	if ((r = getattr_any(fs, ino, &st)))
		fuse_reply_err(req, err_of(r));
	else
		fuse_reply_attr(req, &st, is_ctl(ino) ? 0 : fs->timeout);
}

/*
 * access(2), asked only when the kernel does not check modes itself (no
 * default_permissions: a mount only its owner reaches, mount.c). The owner's
 * bits answer, as the kernel would answer them, so that "test -w" says no for
 * what open refuses anyway (.contactfs/status) and no file is executable.
 */
static void op_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	struct fs *fs = fs_of(req);
	struct stat st;
	int r;

	if ((r = getattr_any(fs, ino, &st))) {
		fuse_reply_err(req, err_of(r));
		return;
	}
	mask &= R_OK | W_OK | X_OK;
	fuse_reply_err(req, mask & ~((st.st_mode & S_IRWXU) >> 6) ? EACCES : 0);
}

/* Commit f's bytes to the cache if they were written. Called with f->lock
 * held. 0, or the errno close() should return. */
static int commit_locked(struct fs *fs, struct fs_file *f, const char *loaded)
{
	struct vcard_error err;
	int r;

	if (!f->dirty)
		return 0;
	r = cache_write_loaded(fs->cache, f->ino, f->data.data, f->data.len, f->mtime_ns, loaded,
			       &err);
	if (r == -EINVAL || r == -EEXIST || r == -EFBIG) {
		/* Kept as a draft; .contactfs/errors says why. */
		log_warn("inode %llu: %s, kept locally and not sent%s%s", (unsigned long long)f->ino,
			 r == -EINVAL   ? "refused"
			 : r == -EEXIST ? "carries the UID of another file's contact in its folder"
					: "its photo is too large for Outlook",
			 r == -EINVAL ? ": " : "", r == -EINVAL ? err.msg : "");
		f->dirty = 0;
		return -r;
	}
	if (r == -ENOENT) {
		f->dirty = 0; /* removed while open: the bytes go with it */
		return 0;
	}
	if (r) {
		log_err("inode %llu: saving %zu bytes failed: %s", (unsigned long long)f->ino,
			f->data.len, strerror(-r));
		return err_of(r);
	}
	f->dirty = 0;
	return 0;
}

/*
 * Commit at h's flush, fsync or release: only what h wrote, or, once no
 * writer is left, what a truncate(2) by path left behind. A reader's late
 * release, or a writer's release after its flush, must not commit the
 * empty text of another handle's O_TRUNC before that handle has written.
 * Called with f->lock held.
 */
static int commit_handle_locked(struct fs *fs, struct fs_handle *h)
{
	struct fs_file *f = h->file;

	if (!h->dirty && f->writers)
		return 0;
	h->dirty = 0;
	return commit_locked(fs, f, h->loaded);
}

static int truncate_file(struct fs *fs, uint64_t ino, off_t size, struct fs_handle *h)
{
	struct fs_file *f;
	int r = 0;

	if (size < 0)
		return EINVAL;
	if ((size_t)size > FS_FILE_MAX)
		return EFBIG;
	f = fs_file_get(fs, ino, 0);
	if (f) {
		/* Open: the handles' copy changes; close commits it. */
		pthread_mutex_lock(&f->lock);
		if (!f->loaded) {
			buf_reset(&f->data);
			r = cache_read(fs->cache, ino, &f->data);
			f->loaded = !r;
		}
		if (!r && (r = buf_resize(&f->data, (size_t)size)) == 0) {
			f->dirty = 1;
			f->mtime_ns = now_ns();
			if (h && h->file == f)
				h->dirty = 1; /* ftruncate: this handle's change */
		}
		pthread_mutex_unlock(&f->lock);
		fs_file_put(fs, f);
		return r ? err_of(r) : 0;
	} else {
		/* truncate(2) of a closed file: commit at once. */
		struct buf b;
		struct vcard_error err;

		buf_init(&b, FS_FILE_MAX);
		r = cache_read(fs->cache, ino, &b);
		if (!r)
			r = buf_resize(&b, (size_t)size);
		if (!r)
			r = cache_write(fs->cache, ino, b.data, b.len, 0, &err);
		buf_release(&b);
		return r ? err_of(r) : 0;
	}
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct stat st;
	int r;

	if (is_ctl(ino)) {
		struct fs_handle *h = fi ? (struct fs_handle *)(uintptr_t)fi->fh : NULL;

		/* ftruncate of a .contactfs file open for writing cuts what
		 * this handle will commit; anything else changes nothing. */
		if (!h || !h->writable ||
		    (to_set &
		     ~(FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW |
		       FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_CTIME))) {
			fuse_reply_err(req, ctl_refusal(ino));
			return;
		}
		if ((r = fs_ctl_getattr(fs, ino, &st))) {
			fuse_reply_err(req, err_of(r));
			return;
		}
		pthread_mutex_lock(&h->lock);
		if (to_set & FUSE_SET_ATTR_SIZE) {
			r = attr->st_size < 0 || (uint64_t)attr->st_size > FS_FILE_MAX
				    ? -EFBIG
				    : buf_resize(&h->text, (size_t)attr->st_size);
			if (!r)
				h->dirty = 1;
		}
		st.st_size = (off_t)h->text.len;
		pthread_mutex_unlock(&h->lock);
		if (r)
			fuse_reply_err(req, err_of(r));
		else
			fuse_reply_attr(req, &st, 0);
		return;
	}
	if ((r = getattr_any(fs, ino, &st))) {
		fuse_reply_err(req, err_of(r));
		return;
	}
	/* chown: only to the owner (so rsync -a and tar x run clean). */
	if (((to_set & FUSE_SET_ATTR_UID) && attr->st_uid != fs->uid) ||
	    ((to_set & FUSE_SET_ATTR_GID) && attr->st_gid != fs->gid)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	/* chmod succeeds and changes nothing: modes are fixed (docs/design.md §9). */
	if (to_set & FUSE_SET_ATTR_SIZE) {
		if (!S_ISREG(st.st_mode)) {
			fuse_reply_err(req, S_ISDIR(st.st_mode) ? EISDIR : EINVAL);
			return;
		}
		if ((r = truncate_file(fs, ino, attr->st_size,
				       fi ? (struct fs_handle *)(uintptr_t)fi->fh : NULL))) {
			/* Refused as a vCard, but cut all the same (a draft):
			 * the kernel's cached size must go, from the notify
			 * thread (never from inside a request). */
			if (r == EINVAL)
				fs_notify_inode(fs, ino);
			fuse_reply_err(req, r);
			return;
		}
	}
	if (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW)) {
		int64_t t = (to_set & FUSE_SET_ATTR_MTIME_NOW)
				    ? now_ns()
				    : (int64_t)attr->st_mtim.tv_sec * 1000000000 +
					      attr->st_mtim.tv_nsec;
		struct fs_file *f = fs_file_get(fs, ino, 0);

		if (f) {
			pthread_mutex_lock(&f->lock);
			if (f->dirty)
				f->mtime_ns = t; /* the commit at close keeps it */
			pthread_mutex_unlock(&f->lock);
			fs_file_put(fs, f);
		}
		if ((r = cache_set_mtime(fs->cache, ino, t))) {
			fuse_reply_err(req, err_of(r));
			return;
		}
	}
	/* chmod, chown to ourselves and atime changed nothing: st stands. */
	if ((to_set & (FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW)) &&
	    (r = getattr_any(fs, ino, &st)))
		fuse_reply_err(req, err_of(r));
	else
		fuse_reply_attr(req, &st, fs->timeout);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = fs_of(req);
	struct buf b;
	int r;

	buf_init(&b, 4096);
	r = cache_read(fs->cache, ino, &b);
	if (r)
		fuse_reply_err(req, err_of(r));
	else
		fuse_reply_readlink(req, b.data);
	buf_release(&b);
}

/* ---- making and removing names ------------------------------------------------------- */

static int check_new_name(uint64_t parent, const char *name)
{
	if (is_ctl(parent))
		return ctl_refusal(parent);
	if (reserved(parent, name))
		return EEXIST;
	if (strlen(name) > 255)
		return ENAMETOOLONG;
	return 0;
}

static void make_node(fuse_req_t req, fuse_ino_t parent, const char *name, enum cache_kind kind,
		      const char *target)
{
	struct fs *fs = fs_of(req);
	struct cache_attr a;
	int r;

	if ((r = check_new_name(parent, name))) {
		fuse_reply_err(req, r);
		return;
	}
	if ((r = cache_create(fs->cache, parent, name, kind, target, &a)))
		fuse_reply_err(req, err_of(r));
	else
		reply_attr_entry(req, fs, &a);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	(void)mode;
	make_node(req, parent, name, CACHE_FOLDER, NULL);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	make_node(req, parent, name, CACHE_SYMLINK, link);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	(void)rdev;
	if (!S_ISREG(mode)) {
		fuse_reply_err(req, EPERM); /* no devices, fifos or sockets here */
		return;
	}
	make_node(req, parent, name, CACHE_FILE, NULL);
}

/*
 * link(): the tree has no hard links, so the new name gets a copy of the
 * file, committed at once (a .vcf in a folder becomes a contact). This is
 * how vdirsyncer and khard create files: write a temporary file, link it to
 * its final name, unlink the temporary one. A contact's own file cannot be
 * linked: that would be a second file for one contact.
 */
static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	struct fs *fs = fs_of(req);
	struct cache_attr src, a;
	struct vcard_error err;
	struct fs_file *f;
	struct buf b;
	int r;

	if (is_ctl(ino)) {
		fuse_reply_err(req, ctl_refusal(ino));
		return;
	}
	if ((r = check_new_name(newparent, newname))) {
		fuse_reply_err(req, r);
		return;
	}
	if ((r = cache_getattr(fs->cache, ino, &src))) {
		fuse_reply_err(req, err_of(r));
		return;
	}
	if (src.kind != CACHE_FILE || src.contact) {
		fuse_reply_err(req, EPERM);
		return;
	}
	buf_init(&b, FS_FILE_MAX);
	f = fs_file_get(fs, ino, 0);
	if (f) {
		/* An open file: what its handles wrote, committed or not. */
		pthread_mutex_lock(&f->lock);
		r = f->loaded ? buf_add(&b, f->data.data, f->data.len)
			      : cache_read(fs->cache, ino, &b);
		pthread_mutex_unlock(&f->lock);
		fs_file_put(fs, f);
	} else {
		r = cache_read(fs->cache, ino, &b);
	}
	if (!r)
		r = cache_create(fs->cache, newparent, newname, CACHE_FILE, NULL, &a);
	if (!r) {
		r = cache_write(fs->cache, a.ino, b.data, b.len, 0, &err);
		if (r) {
			/* The name must not stay behind as an empty file. */
			if (cache_unlink(fs->cache, newparent, newname))
				log_err("link: removing the failed \"%s\" again failed", newname);
			if (r == -EINVAL)
				log_warn("link to \"%s\": refused: %s", newname, err.msg);
		}
	}
	if (!r)
		r = cache_getattr(fs->cache, a.ino, &a);
	buf_release(&b);
	if (r)
		fuse_reply_err(req, err_of(r));
	else
		reply_attr_entry(req, fs, &a);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	int r;

	if (is_ctl(parent) || reserved(parent, name)) {
		fuse_reply_err(req, ctl_name_refusal(parent, name));
		return;
	}
	r = cache_unlink(fs->cache, parent, name);
	fuse_reply_err(req, r ? err_of(r) : 0);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	op_unlink(req, parent, name);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	struct fs *fs = fs_of(req);
	struct vcard_error err;
	struct cache_attr a;
	int r;

	if (flags & ~(unsigned)RENAME_NOREPLACE) {
		fuse_reply_err(req, EINVAL); /* RENAME_EXCHANGE, RENAME_WHITEOUT */
		return;
	}
	if (is_ctl(parent) || reserved(parent, name)) {
		fuse_reply_err(req, ctl_name_refusal(parent, name));
		return;
	}
	if ((r = check_new_name(newparent, newname))) {
		fuse_reply_err(req, r);
		return;
	}
	/* A file open with unsaved writes goes with its bytes: commit first,
	 * so that the rename sees what was written. */
	if (!cache_lookup(fs->cache, parent, name, &a) && a.kind == CACHE_FILE) {
		struct fs_file *f = fs_file_get(fs, a.ino, 0);

		if (f) {
			pthread_mutex_lock(&f->lock);
			r = commit_locked(fs, f, NULL);
			pthread_mutex_unlock(&f->lock);
			fs_file_put(fs, f);
			if (r && r != EINVAL) {
				fuse_reply_err(req, r);
				return;
			}
		}
	}
	r = cache_rename(fs->cache, parent, name, newparent, newname,
			 (flags & RENAME_NOREPLACE) ? CACHE_RENAME_NOREPLACE : 0, &err);
	if (r == -EINVAL && err.msg[0])
		log_warn("rename of \"%s\" onto \"%s\": refused: %s", name, newname, err.msg);
	fuse_reply_err(req, r ? err_of(r) : 0);
}

/* ---- files ------------------------------------------------------------------------- */

static int load_locked(struct fs *fs, struct fs_file *f)
{
	int r;

	buf_reset(&f->data);
	r = cache_read(fs->cache, f->ino, &f->data);
	f->loaded = !r;
	return r;
}

/* A file's first writer holds its name: a display-name change from the
 * server waits until the last one has closed (docs/design.md §1). Under
 * f->lock. */
static void writer_came_locked(struct fs *fs, struct fs_file *f)
{
	if (f->writers++ == 0 && cache_name_hold(fs->cache, f->ino))
		log_warn("inode %llu: out of memory: its name is not held while written",
			 (unsigned long long)f->ino);
}

static void writer_gone_locked(struct fs *fs, struct fs_file *f)
{
	if (--f->writers == 0)
		cache_name_release(fs->cache, f->ino);
}

/* A cache file's handle goes: its file loses a writer and a reference. */
static void handle_drop(struct fs *fs, struct fs_handle *h, struct fs_file *f)
{
	if (f) {
		if (h->writable) {
			pthread_mutex_lock(&f->lock);
			writer_gone_locked(fs, f);
			pthread_mutex_unlock(&f->lock);
		}
		fs_file_put(fs, f);
	}
	free(h);
}

static void open_file(fuse_req_t req, struct fs *fs, uint64_t ino, struct fuse_file_info *fi,
		      const struct cache_attr *created)
{
	struct fs_handle *h = calloc(1, sizeof(*h));
	struct fs_file *f = NULL;
	int r = 0;

	if (!h || !(f = fs_file_get(fs, ino, 1))) {
		fs_file_put(fs, f);
		free(h);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	h->writable = (fi->flags & O_ACCMODE) != O_RDONLY;
	pthread_mutex_lock(&f->lock);
	if (h->writable)
		writer_came_locked(fs, f);
	if (created) {
		if (!f->loaded) {
			buf_reset(&f->data);
			f->loaded = 1;
		}
	} else if ((fi->flags & O_TRUNC) && (fi->flags & O_ACCMODE) != O_RDONLY) {
		buf_reset(&f->data);
		f->loaded = 1;
		f->dirty = 1;
		h->dirty = 1;
		f->mtime_ns = now_ns();
		fs_file_take_stale(fs, f);
	} else if (!f->loaded || (fs_file_take_stale(fs, f) && !f->dirty)) {
		r = load_locked(fs, f);
	}
	if (!r && h->writable && !(fi->flags & O_TRUNC) && !created)
		(void)cache_token_of(f->data.data, f->data.len, h->loaded, sizeof(h->loaded));
	pthread_mutex_unlock(&f->lock);
	if (r)
		goto fail;
	h->file = f;
	fi->fh = (uintptr_t)h;
	/* The kernel's pages of the file stay valid from one open to the next:
	 * writes go through it, and every change the sync thread makes is
	 * invalidated by the notify thread (notify.c), so grep and tar of a
	 * warm tree read from the page cache. */
	fi->keep_cache = 1;
	/* A read-only handle has nothing to commit: spare the FLUSH at close. */
	fi->noflush = (fi->flags & O_ACCMODE) == O_RDONLY;
	if (created) {
		struct stat st;
		struct fuse_entry_param e;

		fs_stat(fs, created, &st);
		entry_of(fs, &st, &e);
		if (fuse_reply_create(req, &e, fi)) {
			fs_known_forget(fs, e.ino, 1);
			handle_drop(fs, h, f);
		}
		return;
	}
	if (fuse_reply_open(req, fi))
		handle_drop(fs, h, f);
	return;
fail:
	handle_drop(fs, h, f);
	fuse_reply_err(req, err_of(r));
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct cache_attr a;
	int r;

	if (is_ctl(ino)) {
		struct fs_handle *h;

		if (ino == FS_CTL_INO || ino == FS_CTL_PEOPLE_INO) {
			fuse_reply_err(req, EISDIR);
			return;
		}
		if (((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) &&
		    !fs_ctl_writable(ino)) {
			fuse_reply_err(req, fs_ctl_is_people(ino) ? EROFS : EACCES);
			return;
		}
		if (!(h = calloc(1, sizeof(*h)))) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		pthread_mutex_init(&h->lock, NULL);
		h->writable = (fi->flags & O_ACCMODE) != O_RDONLY;
		buf_init(&h->text, FS_FILE_MAX);
		/* O_TRUNC: an empty text, committed at close like any write. */
		if (h->writable && (fi->flags & O_TRUNC))
			h->dirty = 1;
		else if ((r = fs_ctl_render(fs, ino, &h->text))) {
			buf_release(&h->text);
			pthread_mutex_destroy(&h->lock);
			free(h);
			fuse_reply_err(req, err_of(r));
			return;
		}
		fi->fh = (uintptr_t)h;
		fi->direct_io = 1; /* its size is what it is at each open */
		if (fuse_reply_open(req, fi)) {
			buf_release(&h->text);
			pthread_mutex_destroy(&h->lock);
			free(h);
		}
		return;
	}
	if ((r = cache_getattr(fs->cache, ino, &a))) {
		fuse_reply_err(req, err_of(r));
		return;
	}
	if (a.kind != CACHE_FILE) {
		fuse_reply_err(req, a.kind == CACHE_SYMLINK ? ELOOP : EISDIR);
		return;
	}
	open_file(req, fs, ino, fi, NULL);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct cache_attr a;
	int r;

	(void)mode;
	if ((r = check_new_name(parent, name))) {
		fuse_reply_err(req, r);
		return;
	}
	if ((r = cache_create(fs->cache, parent, name, CACHE_FILE, NULL, &a))) {
		fuse_reply_err(req, err_of(r));
		return;
	}
	open_file(req, fs, a.ino, fi, &a);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;
	const struct buf *src;
	struct fs_file *f = h->file;
	char *copy = NULL;
	size_t n = 0;
	int r = 0;

	/*
	 * Replies are made from a copy: once the kernel has the bytes, the
	 * reader may close and the release free the handle while this thread
	 * is still returning from writev (ASan's writev interceptor looks at
	 * the buffer after the call).
	 */
	(void)ino;
	if (!f) {
		pthread_mutex_lock(&h->lock);
		src = &h->text;
		if ((size_t)off < src->len)
			n = src->len - (size_t)off < size ? src->len - (size_t)off : size;
		if (n && (copy = malloc(n)))
			memcpy(copy, src->data + off, n);
		pthread_mutex_unlock(&h->lock);
		if (n && !copy)
			fuse_reply_err(req, ENOMEM);
		else
			fuse_reply_buf(req, copy, n);
		free(copy);
		return;
	}
	pthread_mutex_lock(&f->lock);
	if (fs_file_take_stale(fs, f) && !f->dirty && !(r = load_locked(fs, f)) && h->writable)
		(void)cache_token_of(f->data.data, f->data.len, h->loaded, sizeof(h->loaded));
	if (!r && (size_t)off < f->data.len) {
		n = f->data.len - (size_t)off < size ? f->data.len - (size_t)off : size;
		if (!(copy = malloc(n)))
			r = -ENOMEM;
		else
			memcpy(copy, f->data.data + off, n);
	}
	pthread_mutex_unlock(&f->lock);
	if (r)
		fuse_reply_err(req, err_of(r));
	else
		fuse_reply_buf(req, copy, n);
	free(copy);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *data, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;
	struct fs_file *f = h->file;
	int r = 0;

	(void)ino;
	if (!f) {
		if (!h->writable) {
			fuse_reply_err(req, EBADF);
			return;
		}
		if (off < 0 || (size_t)off > FS_FILE_MAX || size > FS_FILE_MAX - (size_t)off) {
			fuse_reply_err(req, EFBIG);
			return;
		}
		pthread_mutex_lock(&h->lock);
		r = buf_write_at(&h->text, (size_t)off, data, size);
		if (!r)
			h->dirty = 1;
		pthread_mutex_unlock(&h->lock);
		if (r)
			fuse_reply_err(req, r == -E2BIG ? EFBIG : err_of(r));
		else
			fuse_reply_write(req, size);
		return;
	}
	if (off < 0 || (size_t)off > FS_FILE_MAX || size > FS_FILE_MAX - (size_t)off) {
		fuse_reply_err(req, EFBIG);
		return;
	}
	pthread_mutex_lock(&f->lock);
	if (!f->loaded)
		r = load_locked(fs, f);
	if (!r)
		r = buf_write_at(&f->data, (size_t)off, data, size);
	if (!r) {
		f->dirty = 1;
		h->dirty = 1;
		f->mtime_ns = now_ns();
	}
	pthread_mutex_unlock(&f->lock);
	if (r)
		fuse_reply_err(req, r == -E2BIG ? EFBIG : err_of(r));
	else
		fuse_reply_write(req, size);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;
	struct fs_file *f = h->file;
	int r = 0;

	if (f) {
		pthread_mutex_lock(&f->lock);
		r = commit_handle_locked(fs, h);
		pthread_mutex_unlock(&f->lock);
	} else if (h->writable) {
		r = ctl_commit(fs, ino, h);
	}
	fuse_reply_err(req, r);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;
	struct fs_file *f = h->file;

	(void)ino;
	if (f) {
		int r;

		/* flush normally committed already; this catches the rest. */
		pthread_mutex_lock(&f->lock);
		if (h->writable)
			writer_gone_locked(fs, f);
		r = commit_handle_locked(fs, h);
		pthread_mutex_unlock(&f->lock);
		if (r && r != EINVAL)
			log_err("inode %llu: written bytes could not be saved at release: %s",
				(unsigned long long)f->ino, strerror(r));
		fs_file_put(fs, f);
	} else {
		if (h->writable)
			(void)ctl_commit(fs, ino, h); /* fs_ctl_commit logs a failure */
		pthread_mutex_destroy(&h->lock);
	}
	buf_release(&h->text);
	free(h);
	fuse_reply_err(req, 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;
	struct fs_file *f = h->file;
	int r = 0;

	(void)datasync;
	if (!f) {
		fuse_reply_err(req, h->writable ? ctl_commit(fs, ino, h) : 0);
		return;
	}
	pthread_mutex_lock(&f->lock);
	r = commit_handle_locked(fs, h);
	pthread_mutex_unlock(&f->lock);
	if (r) {
		fuse_reply_err(req, r);
		return;
	}
	/* Committed locally now; wait for the server's verdict, bounded. No
	 * verdict (offline, or none within fsync_timeout) is 0 as for a local
	 * file, once the change is on disk: it is not lost, and is sent later. */
	r = fs->opt.offline ? -EHOSTDOWN
			    : cache_wait_file(fs->cache, ino, fs->opt.fsync_timeout_s * 1000);
	if (r == -EHOSTDOWN || r == -ETIMEDOUT) {
		if (!fs->opt.offline)
			log_info("fsync of inode %llu: %s; the change is saved locally and will "
				 "be sent",
				 (unsigned long long)ino,
				 r == -EHOSTDOWN ? "offline" : "the server did not answer in time");
		r = cache_sync_disk(fs->cache);
	}
	fuse_reply_err(req, r ? err_of(r) : 0);
}

/* ---- directories --------------------------------------------------------------------- */

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct cache_attr a;
	time_t now = time(NULL);
	int r, ask = 0;

	if (ino == FS_CTL_INO || ino == FS_CTL_PEOPLE_INO) {
		fs_ctl_opendir(fs, ino);
		fuse_reply_open(req, fi);
		return;
	}
	if (is_ctl(ino)) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	if ((r = cache_getattr(fs->cache, ino, &a))) {
		fuse_reply_err(req, err_of(r));
		return;
	}
	if (a.kind != CACHE_FOLDER && a.kind != CACHE_SCRATCH_DIR) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	/* A directory opened after the last round went stale asks for a new
	 * one (docs/design.md §11); at most once per poll interval. */
	pthread_mutex_lock(&fs->lock);
	if (fs->opt.poll_s > 0 && now - fs->asked >= fs->opt.poll_s) {
		fs->asked = now;
		ask = 1;
	}
	pthread_mutex_unlock(&fs->lock);
	if (ask && !fs->opt.offline)
		cache_sync_now(fs->cache);
	fuse_reply_open(req, fi);
}

/*
 * Directory offsets: 0 is the start, 1 follows ".", 2 follows ".." (and
 * is where the cache's entries start), and an entry of inode i is
 * followed by offset i + 2. Inode numbers only grow, so an offset stays
 * valid whatever is added or removed meanwhile.
 */
#define DIR_OFF_FIRST 2

struct dir_fill {
	fuse_req_t req;
	struct fs *fs;
	char *buf;
	size_t size, used;
	int plus;
	int full;
	uint64_t *counted; /* inodes whose lookup this reply counted */
	size_t ncounted;
};

static int add_entry(struct dir_fill *d, const char *name, const struct stat *st, off_t next,
		     int count)
{
	size_t need;

	if (d->plus) {
		struct fuse_entry_param e;

		memset(&e, 0, sizeof(e));
		e.attr = *st;
		if (count) {
			e.ino = st->st_ino;
			e.attr_timeout = d->fs->timeout;
			e.entry_timeout = d->fs->timeout;
		}
		need = fuse_add_direntry_plus(d->req, d->buf + d->used, d->size - d->used, name, &e,
					      next);
	} else {
		need = fuse_add_direntry(d->req, d->buf + d->used, d->size - d->used, name, st,
					 next);
	}
	if (need > d->size - d->used) {
		d->full = 1;
		return 1;
	}
	d->used += need;
	if (d->plus && count) {
		fs_known_add(d->fs, (uint64_t)st->st_ino, 1);
		/* At most one entry per 24 bytes of the reply: room enough. */
		d->counted[d->ncounted++] = (uint64_t)st->st_ino;
	}
	return 0;
}

static int fill_one(const char *name, const struct cache_attr *a, void *ctx)
{
	struct dir_fill *d = ctx;
	struct stat st;

	fs_stat(d->fs, a, &st);
	/* An open file may hold writes the cache has not seen, and its lock
	 * cannot be taken here (this runs under the cache's lock, which a
	 * committing close takes while holding it): it goes out as a bare name
	 * and its attributes come from a lookup. */
	return add_entry(d, name, &st, (off_t)(a->ino + DIR_OFF_FIRST),
			 a->kind != CACHE_FILE || !fs_file_is_open(d->fs, a->ino));
}

static void readdir_any(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, int plus)
{
	struct fs *fs = fs_of(req);
	struct dir_fill d = {.req = req, .fs = fs, .size = size, .plus = plus};
	struct stat st;
	int r = 0;

	if (ino == FS_CTL_INO || ino == FS_CTL_PEOPLE_INO) {
		r = fs_ctl_readdir(req, fs, ino, size, off, plus);
		if (r)
			fuse_reply_err(req, err_of(r));
		return;
	}
	d.buf = malloc(size);
	d.counted = plus ? malloc((size / 24 + 1) * sizeof(*d.counted)) : NULL;
	if (!d.buf || (plus && !d.counted)) {
		free(d.buf);
		free(d.counted);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	memset(&st, 0, sizeof(st));
	st.st_mode = S_IFDIR;
	if (off < 1) {
		st.st_ino = ino;
		add_entry(&d, ".", &st, 1, 0);
	}
	if (off < 2 && !d.full) {
		struct cache_attr a;

		st.st_ino = ino;
		if (ino != CACHE_ROOT_INO && !cache_getattr(fs->cache, ino, &a))
			st.st_ino = a.parent;
		add_entry(&d, "..", &st, 2, 0);
	}
	if (!d.full) {
		r = cache_readdir(fs->cache, ino,
				  off > DIR_OFF_FIRST ? (uint64_t)off - DIR_OFF_FIRST : 0, fill_one,
				  &d);
		if (r == 1)
			r = 0; /* the buffer is full */
	}
	if (r && !d.used) {
		fuse_reply_err(req, err_of(r));
	} else if (fuse_reply_buf(req, d.buf, d.used)) {
		/* The kernel never got these entries: take their lookups back. */
		for (size_t i = 0; i < d.ncounted; i++)
			fs_known_forget(fs, d.counted[i], 1);
	}
	free(d.buf);
	free(d.counted);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	(void)fi;
	readdir_any(req, ino, size, off, 0);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	(void)fi;
	readdir_any(req, ino, size, off, 1);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	/* Every change of a directory was committed before its call returned;
	 * fsync puts the commits on disk. */
	int r = cache_sync_disk(fs_of(req)->cache);

	(void)ino;
	(void)datasync;
	(void)fi;
	fuse_reply_err(req, r ? err_of(r) : 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = fs_of(req);
	struct cache_status cs;
	struct statvfs sv;

	(void)ino;
	memset(&sv, 0, sizeof(sv));
	if (cache_status(fs->cache, &cs))
		cs.contacts = 0;
	/* Nothing here is bounded by blocks: report room enough that copy
	 * tools that check free space go ahead. */
	sv.f_bsize = 4096;
	sv.f_frsize = 4096;
	sv.f_blocks = (fsblkcnt_t)1 << 24;
	sv.f_bfree = sv.f_blocks - (fsblkcnt_t)cs.contacts;
	sv.f_bavail = sv.f_bfree;
	sv.f_files = (fsfilcnt_t)1 << 24;
	sv.f_ffree = sv.f_files - (fsfilcnt_t)cs.contacts;
	sv.f_favail = sv.f_ffree;
	sv.f_namemax = 255;
	fuse_reply_statfs(req, &sv);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	/* O_TRUNC comes with open, so "open, truncate" is one step. */
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	/* No writeback cache: every write reaches us, and close commits (it
	 * would also cost rsync -a more requests a file: docs/design.md §11). */
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO;
}

const struct fuse_lowlevel_ops fs_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.access = op_access,
	.setattr = op_setattr,
	.readlink = op_readlink,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.symlink = op_symlink,
	.rename = op_rename,
	.link = op_link,
	.open = op_open,
	.create = op_create,
	.read = op_read,
	.write = op_write,
	.flush = op_flush,
	.release = op_release,
	.fsync = op_fsync,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.fsyncdir = op_fsyncdir,
	.statfs = op_statfs,
};
