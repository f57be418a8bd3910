/*
 * .contactfs/ in the root: not listed by readdir (so backups do not sweep
 * it up) but found by name, like ZFS's .zfs. Its files are made when they
 * are opened (and for stat, so st_size is exact):
 *   status  what the mount is doing, one "key: value" line each, in words
 *   errors  the error log, oldest first, one line each
 *   categories  the master category list, "name: colour" a line; the one
 *           file that may be written (whole: the difference is sent)
 *   birthdays.ics  contacts' birthdays and anniversaries, yearly events
 *   people/  the People API's most relevant people, one read-only vCard
 *           each, "NNN Name.vcf" by rank; every write fails with EROFS
 */
#include "mount_int.h"

#include "cache.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static const struct {
	const char *name;
	uint64_t ino;
} ctl_files[] = {
	/* clang-format off */
	{"status", FS_CTL_STATUS_INO},
	{"errors", FS_CTL_ERRORS_INO},
	{"categories", FS_CTL_CATEGORIES_INO},
	{"birthdays.ics", FS_CTL_BIRTHDAYS_INO},
	{"people", FS_CTL_PEOPLE_INO},
	/* clang-format on */
};

#define NFILES (sizeof(ctl_files) / sizeof(ctl_files[0]))
#define STATUS_ERRORS 5 /* the last errors repeated in status */

int fs_ctl_is_people(uint64_t ino)
{
	return ino >= FS_CTL_PEOPLE_INO && ino <= FS_CTL_LAST_INO;
}

/* The people as last fetched (NULL when they cannot be had). */
static struct cache_people *people(struct fs *fs, int ask)
{
	struct cache_people *p = NULL;
	int r = cache_people_get(fs->cache, ask && !fs->opt.offline, &p);

	if (r)
		log_warn(".contactfs/people: %s", strerror(-r));
	return p;
}

void fs_ctl_opendir(struct fs *fs, uint64_t ino)
{
	if (ino == FS_CTL_PEOPLE_INO)
		cache_people_put(fs->cache, people(fs, 1));
}

uint64_t fs_ctl_lookup(struct fs *fs, uint64_t parent, const char *name)
{
	struct cache_people *p;
	uint64_t ino = 0;

	if (parent == FS_CTL_INO) {
		for (size_t i = 0; i < NFILES; i++)
			if (!strcmp(name, ctl_files[i].name))
				ino = ctl_files[i].ino;
		fs_ctl_opendir(fs, ino); /* `ls people/` looks it up first */
		return ino;
	}
	if (parent != FS_CTL_PEOPLE_INO || !(p = people(fs, 0)))
		return 0;
	for (size_t i = 0; i < p->n && !ino; i++)
		if (!strcmp(name, p->v[i].name))
			ino = FS_CTL_PEOPLE_INO + 1 + i;
	cache_people_put(fs->cache, p);
	return ino;
}

static void utc(time_t t, char *out, size_t size)
{
	struct tm tm;

	if (!gmtime_r(&t, &tm) || !strftime(out, size, "%Y-%m-%d %H:%M:%S UTC", &tm))
		snprintf(out, size, "%lld", (long long)t);
}

/* "3 s", "5 min", "2 h", "4 days" */
static void ago(time_t secs, char *out, size_t size)
{
	if (secs < 120)
		snprintf(out, size, "%lld s", (long long)secs);
	else if (secs < 7200)
		snprintf(out, size, "%lld min", (long long)(secs / 60));
	else if (secs < 2 * 86400)
		snprintf(out, size, "%lld h", (long long)(secs / 3600));
	else
		snprintf(out, size, "%lld days", (long long)(secs / 86400));
}

struct error_lines {
	struct buf *out;
	const char *indent;
	int r;
};

static int add_error_line(time_t when, const char *what, const char *message, void *ctx)
{
	struct error_lines *e = ctx;
	char t[64];

	utc(when, t, sizeof(t));
	e->r = buf_printf(e->out, "%s%s  %s: %s\n", e->indent, t, what && *what ? what : "-",
			  message);
	return e->r;
}

static int render_status(struct fs *fs, struct buf *out)
{
	struct cache_status cs;
	struct error_lines e = {out, "  ", 0};
	char t[64], a[32];
	time_t now = time(NULL);
	int r;

	if ((r = cache_status(fs->cache, &cs)))
		return r;
	r = buf_printf(out, "mailbox: %s\n", fs->opt.mailbox ? fs->opt.mailbox : "me");
	if (!r && fs->opt.offline)
		r = buf_printf(out,
			       "state: offline (mounted with -o offline): changes wait here\n");
	else if (!r)
		r = buf_printf(out, "state: %s\n",
			       cs.online ? "online"
					 : "offline: the server cannot be reached; changes wait "
					   "here and are sent when it can");
	if (!r && fs->opt.followup)
		r = buf_printf(out,
			       "follow-up flags: shown as X-CONTACTFS-FOLLOWUP (-o followup)\n");
	if (!r && cs.last_sync) {
		utc(cs.last_sync, t, sizeof(t));
		ago(now > cs.last_sync ? now - cs.last_sync : 0, a, sizeof(a));
		r = buf_printf(out, "last sync: %s (%s ago)\n", t, a);
	} else if (!r) {
		r = buf_printf(out, "last sync: %s\n",
			       cs.synced ? "none in this session" : "never (first sync not done)");
	}
	if (!r)
		r = buf_printf(out, "contacts: %u\n", cs.contacts);
	if (!r)
		r = buf_printf(out, "pending changes: %u%s\n", cs.pending,
			       cs.pending ? " (waiting to be sent to the server)" : "");
	if (!r)
		r = buf_printf(out, "parked changes: %u%s\n", cs.parked,
			       cs.parked ? " (failed repeatedly; tried again later, see errors)"
					 : "");
	if (!r && cs.photos_pending)
		r = buf_printf(out, "photos still to check: %u\n", cs.photos_pending);
	if (!r)
		r = buf_printf(out, "requests sent: %lu\n", cs.requests);
	if (!r)
		r = buf_printf(out, "kernel: %zu inodes looked up, %zu files open\n",
			       fs_known_live(fs), fs_files_open(fs));
	if (!r)
		r = buf_printf(out, "last errors:\n");
	if (!r) {
		size_t before = out->len;

		r = cache_errors(fs->cache, STATUS_ERRORS, add_error_line, &e);
		if (!r)
			r = e.r;
		if (!r && out->len == before)
			r = buf_printf(out, "  none\n");
	}
	return r;
}

/* Person file ino: its card appended to out, or its attributes into st
 * (either may be NULL). -ENOENT when the list has no such rank (any
 * more). */
static int render_person(struct fs *fs, uint64_t ino, struct buf *out, struct stat *st)
{
	struct cache_people *p;
	size_t i = (size_t)(ino - FS_CTL_PEOPLE_INO - 1);
	int r = -ENOENT;

	if (ino <= FS_CTL_PEOPLE_INO || !fs_ctl_is_people(ino))
		return -ENOENT;
	if (!(p = people(fs, 0)))
		return -EIO;
	if (i < p->n) {
		r = out ? buf_add(out, p->v[i].card, p->v[i].len) : 0;
		if (st) {
			st->st_mode = S_IFREG | 0400;
			st->st_size = (off_t)p->v[i].len;
			st->st_mtim.tv_sec = p->mtime_ns / 1000000000;
			st->st_mtim.tv_nsec = p->mtime_ns % 1000000000;
			st->st_ctim = st->st_mtim;
		}
	}
	cache_people_put(fs->cache, p);
	return r;
}

int fs_ctl_render(struct fs *fs, uint64_t ino, struct buf *out)
{
	struct error_lines e = {out, "", 0};
	int r;

	switch (ino) {
	case FS_CTL_STATUS_INO:
		return render_status(fs, out);
	case FS_CTL_ERRORS_INO:
		r = cache_errors(fs->cache, 1000, add_error_line, &e);
		return r ? r : e.r;
	case FS_CTL_CATEGORIES_INO:
		return cache_categories_text(fs->cache, out);
	case FS_CTL_BIRTHDAYS_INO:
		return cache_birthdays_ics(fs->cache, out);
	default:
		return render_person(fs, ino, out, NULL);
	}
}

int fs_ctl_writable(uint64_t ino)
{
	return ino == FS_CTL_CATEGORIES_INO;
}

int fs_ctl_commit(struct fs *fs, uint64_t ino, const struct buf *text)
{
	char why[512];
	int r;

	if (ino != FS_CTL_CATEGORIES_INO)
		return EACCES;
	r = cache_categories_write(fs->cache, text->data, text->len, why, sizeof(why));
	if (r == -EINVAL)
		return EINVAL; /* the reason is in the errors already */
	if (r == -EACCES)
		return EACCES; /* another mailbox's list (-o user=): said in the errors */
	if (r) {
		log_err(".contactfs/categories: saving the list failed: %s", strerror(-r));
		return r == -ENOMEM ? ENOMEM : EIO;
	}
	return 0;
}

int fs_ctl_getattr(struct fs *fs, uint64_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_nlink = 1;
	clock_gettime(CLOCK_REALTIME, &st->st_mtim);
	st->st_ctim = st->st_atim = st->st_mtim;
	if (ino == FS_CTL_INO || ino == FS_CTL_PEOPLE_INO) {
		st->st_mode = S_IFDIR | 0500;
	} else if (fs_ctl_is_people(ino)) {
		return render_person(fs, ino, NULL, st);
	} else {
		struct buf b;
		int r;

		buf_init(&b, FS_FILE_MAX);
		r = fs_ctl_render(fs, ino, &b);
		st->st_size = (off_t)b.len;
		if (!r && fs_ctl_writable(ino)) {
			/* Its mtime moves when its text does, not at each look. */
			uint64_t h = 1469598103934665603ULL;

			for (size_t i = 0; i < b.len; i++)
				h = (h ^ (unsigned char)b.data[i]) * 1099511628211ULL;
			pthread_mutex_lock(&fs->lock);
			if (h != fs->ctl_hash || !fs->ctl_mtime.tv_sec) {
				fs->ctl_hash = h;
				fs->ctl_mtime = st->st_mtim;
			}
			st->st_mtim = st->st_ctim = fs->ctl_mtime;
			pthread_mutex_unlock(&fs->lock);
		}
		buf_release(&b);
		if (r)
			return r;
		st->st_mode = S_IFREG | (fs_ctl_writable(ino) ? 0600 : 0400);
	}
	return 0;
}

/* The entries of a .contactfs directory: names (pointing into ctl_files
 * or the snapshot p) and inodes. */
static size_t dir_entries(struct fs *fs, uint64_t dir, struct cache_people **p, const char ***names,
			  uint64_t **inos)
{
	size_t n = dir == FS_CTL_INO ? NFILES : (*p = people(fs, 0)) ? (*p)->n : 0;

	*names = calloc(n + 1, sizeof(**names));
	*inos = calloc(n + 1, sizeof(**inos));
	if (!*names || !*inos)
		return 0;
	for (size_t i = 0; i < n; i++) {
		(*names)[i] = dir == FS_CTL_INO ? ctl_files[i].name : (*p)->v[i].name;
		(*inos)[i] = dir == FS_CTL_INO ? ctl_files[i].ino : FS_CTL_PEOPLE_INO + 1 + i;
	}
	return n;
}

int fs_ctl_readdir(fuse_req_t req, struct fs *fs, uint64_t dir, size_t size, off_t off, int plus)
{
	struct cache_people *p = NULL;
	const char **names = NULL;
	uint64_t *inos = NULL;
	size_t n = dir_entries(fs, dir, &p, &names, &inos), used = 0;
	char *buf = malloc(size);
	int r = 0;

	if (!buf || !names || !inos) {
		r = -ENOMEM;
		goto out;
	}
	for (off_t i = off; i < (off_t)n + 2; i++) {
		const char *name = i == 0 ? "." : i == 1 ? ".." : names[i - 2];
		struct fuse_entry_param e;
		size_t need;

		memset(&e, 0, sizeof(e));
		if (i < 2) {
			e.attr.st_mode = S_IFDIR;
			e.attr.st_ino = i == 0		    ? dir
					: dir == FS_CTL_INO ? CACHE_ROOT_INO
							    : FS_CTL_INO;
		} else if ((r = fs_ctl_getattr(fs, inos[i - 2], &e.attr))) {
			break;
		}
		if (plus) {
			if (i >= 2) {
				e.ino = e.attr.st_ino;
				e.attr_timeout = e.entry_timeout = 0;
			}
			need = fuse_add_direntry_plus(req, buf + used, size - used, name, &e,
						      i + 1);
		} else {
			need = fuse_add_direntry(req, buf + used, size - used, name, &e.attr,
						 i + 1);
		}
		if (need > size - used)
			break;
		used += need;
		if (plus && e.ino)
			fs_known_add(fs, e.ino, 1);
	}
	if (!r)
		fuse_reply_buf(req, buf, used);
out:
	if (p)
		cache_people_put(fs->cache, p);
	free(names);
	free(inos);
	free(buf);
	return r;
}
