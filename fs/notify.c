/*
 * Telling the kernel what the sync thread changed (docs/design.md §11). The
 * cache's callback runs on the sync thread after the change is committed; it
 * only queues an event (a notification sent from there could wait on a kernel
 * lock held by a FUSE request that waits on the cache). A thread of our own
 * sends them: inval_entry for names that appeared or moved (so a cached
 * "no such file" goes), notify_delete for names that went, inval_inode for
 * files whose bytes changed (page cache and attributes). Events about
 * directories the kernel never looked into are dropped at once: it holds
 * nothing there to invalidate.
 */
#include "mount_int.h"

#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct fs_event {
	struct fs_event *next;
	enum cache_event what;
	uint64_t ino, parent, old_parent;
	char *name, *old_name; /* in the same allocation as the event */
};

static void send_one(struct fs *fs, const struct fs_event *e)
{
	struct fuse_session *se = fs->se;
	int r = 0;

	switch (e->what) {
	case CACHE_ADDED:
		r = fuse_lowlevel_notify_inval_entry(se, e->parent, e->name, strlen(e->name));
		break;
	case CACHE_REMOVED:
		r = fuse_lowlevel_notify_delete(se, e->parent, e->ino, e->name, strlen(e->name));
		break;
	case CACHE_CHANGED:
		r = fuse_lowlevel_notify_inval_inode(se, e->ino, 0, 0);
		break;
	case CACHE_RENAMED:
		if (e->old_name)
			r = fuse_lowlevel_notify_inval_entry(se, e->old_parent, e->old_name,
							     strlen(e->old_name));
		if (!r || r == -ENOENT)
			r = fuse_lowlevel_notify_inval_entry(se, e->parent, e->name,
							     strlen(e->name));
		break;
	}
	/* -ENOENT: the kernel had dropped it already. */
	if (r && r != -ENOENT && r != -ENOTCONN)
		log_warn("telling the kernel of a change of inode %llu failed: %s",
			 (unsigned long long)e->ino, strerror(-r));
	/* The parent's attributes (mtime) are stale too. */
	if (e->what != CACHE_CHANGED && fs_known_count(fs, e->parent))
		(void)fuse_lowlevel_notify_inval_inode(se, e->parent, -1, 0);
}

static void *notify_thread(void *arg)
{
	struct fs *fs = arg;
	struct fs_notify *n = &fs->notify;

	pthread_mutex_lock(&n->lock);
	for (;;) {
		struct fs_event *e;

		while (!n->head && !n->stop)
			pthread_cond_wait(&n->cond, &n->lock);
		if (n->stop)
			break;
		e = n->head;
		n->head = e->next;
		if (!n->head)
			n->tail = NULL;
		pthread_mutex_unlock(&n->lock);
		send_one(fs, e);
		free(e);
		pthread_mutex_lock(&n->lock);
	}
	pthread_mutex_unlock(&n->lock);
	return NULL;
}

int fs_notify_start(struct fs *fs)
{
	struct fs_notify *n = &fs->notify;
	int r;

	pthread_mutex_init(&n->lock, NULL);
	pthread_cond_init(&n->cond, NULL);
	if ((r = pthread_create(&n->thread, NULL, notify_thread, fs)))
		return -r;
	n->running = 1;
	return 0;
}

void fs_notify_stop(struct fs *fs)
{
	struct fs_notify *n = &fs->notify;
	struct fs_event *e;

	if (!n->running)
		return;
	pthread_mutex_lock(&n->lock);
	n->stop = 1;
	pthread_cond_signal(&n->cond);
	pthread_mutex_unlock(&n->lock);
	pthread_join(n->thread, NULL);
	/* The queue stays usable (stop drops new events) until the cache,
	 * whose callback feeds it, is closed; free what is left now. */
	pthread_mutex_lock(&n->lock);
	while ((e = n->head)) {
		n->head = e->next;
		free(e);
	}
	n->tail = NULL;
	n->running = 0;
	pthread_mutex_unlock(&n->lock);
}

void fs_notify_change(void *ctx, const struct cache_change *c)
{
	struct fs *fs = ctx;
	struct fs_notify *n = &fs->notify;
	size_t len = strlen(c->name) + 1;
	size_t old_len = c->what == CACHE_RENAMED && c->old_name ? strlen(c->old_name) + 1 : 0;
	struct fs_event *e;

	/* A changed file's open copy reloads, whatever the kernel holds. */
	if (c->what == CACHE_CHANGED)
		fs_file_mark_stale(fs, c->ino);
	/* Nothing cached in the kernel, nothing to drop. */
	if (c->what == CACHE_CHANGED
		    ? !fs_known_count(fs, c->ino)
		    : !fs_known_count(fs, c->parent) &&
			      !(c->what == CACHE_RENAMED && fs_known_count(fs, c->old_parent)))
		return;
	e = malloc(sizeof(*e) + len + old_len);
	if (!e) {
		log_err("out of memory queueing a kernel notification for inode %llu",
			(unsigned long long)c->ino);
		return;
	}
	e->next = NULL;
	e->what = c->what;
	e->ino = c->ino;
	e->parent = c->parent;
	e->old_parent = c->old_parent;
	e->name = (char *)(e + 1);
	memcpy(e->name, c->name, len);
	e->old_name = NULL;
	if (old_len) {
		e->old_name = e->name + len;
		memcpy(e->old_name, c->old_name, old_len);
	}
	pthread_mutex_lock(&n->lock);
	if (n->stop || !n->running) {
		pthread_mutex_unlock(&n->lock);
		free(e);
		return;
	}
	if (n->tail)
		n->tail->next = e;
	else
		n->head = e;
	n->tail = e;
	pthread_cond_signal(&n->cond);
	pthread_mutex_unlock(&n->lock);
}

void fs_notify_inode(struct fs *fs, uint64_t ino)
{
	struct cache_change c = {.what = CACHE_CHANGED, .ino = ino, .name = ""};

	fs_notify_change(fs, &c);
}
