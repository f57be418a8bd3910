/*
 * What the kernel holds: how many times it looked up each inode (so that
 * notifications go only where the kernel has something to drop, and status
 * can say how many it holds), and the files it has open.
 *
 * Lookup counts live in an open-addressing table (linear probing, deleted
 * slots marked with a tombstone, grown at 50 % load and rebuilt when
 * tombstones pile up). Open files are in a chained hash table. Both are
 * protected by fs->lock, a leaf lock.
 */
#include "mount_int.h"

#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define KNOWN_EMPTY 0
#define KNOWN_GONE UINT64_MAX
#define FILES_BUCKETS 256

static size_t hash_ino(uint64_t ino)
{
	ino ^= ino >> 33;
	ino *= UINT64_C(0xff51afd7ed558ccd);
	ino ^= ino >> 33;
	return (size_t)ino;
}

int fs_nodes_init(struct fs *fs)
{
	fs->known_size = 1024;
	fs->known = calloc(fs->known_size, sizeof(*fs->known));
	fs->files_size = FILES_BUCKETS;
	fs->files = calloc(fs->files_size, sizeof(*fs->files));
	if (!fs->known || !fs->files) {
		fs_nodes_release(fs);
		return -ENOMEM;
	}
	return pthread_mutex_init(&fs->lock, NULL) ? -ENOMEM : 0;
}

void fs_nodes_release(struct fs *fs)
{
	if (fs->files) {
		for (size_t i = 0; i < fs->files_size; i++) {
			while (fs->files[i]) {
				struct fs_file *f = fs->files[i];

				fs->files[i] = f->next;
				buf_release(&f->data);
				pthread_mutex_destroy(&f->lock);
				free(f);
			}
		}
		pthread_mutex_destroy(&fs->lock);
	}
	free(fs->known);
	free(fs->files);
	fs->known = NULL;
	fs->files = NULL;
}

/* ---- lookup counts --------------------------------------------------------------- */

/* The slot of ino, or the slot where it would go (the first tombstone on
 * the way, else the empty slot that ends the probe). */
static struct fs_known *known_slot(struct fs_known *t, size_t size, uint64_t ino)
{
	struct fs_known *grave = NULL;

	for (size_t i = hash_ino(ino) & (size - 1);; i = (i + 1) & (size - 1)) {
		if (t[i].ino == ino)
			return &t[i];
		if (t[i].ino == KNOWN_GONE && !grave)
			grave = &t[i];
		if (t[i].ino == KNOWN_EMPTY)
			return grave ? grave : &t[i];
	}
}

/* Rebuild at a size that keeps the load under 50 %. */
static int known_rehash(struct fs *fs)
{
	size_t size = fs->known_size;
	struct fs_known *t;

	while (fs->known_live * 2 + 2 > size / 2)
		size *= 2;
	t = calloc(size, sizeof(*t));
	if (!t)
		return -ENOMEM;
	for (size_t i = 0; i < fs->known_size; i++) {
		const struct fs_known *k = &fs->known[i];

		if (k->ino != KNOWN_EMPTY && k->ino != KNOWN_GONE)
			*known_slot(t, size, k->ino) = *k;
	}
	free(fs->known);
	fs->known = t;
	fs->known_size = size;
	fs->known_used = fs->known_live;
	return 0;
}

void fs_known_add(struct fs *fs, uint64_t ino, uint64_t n)
{
	struct fs_known *k;

	if (ino == FUSE_ROOT_ID || !n)
		return; /* the root is never forgotten */
	pthread_mutex_lock(&fs->lock);
	if ((fs->known_used + 1) * 2 > fs->known_size && known_rehash(fs)) {
		pthread_mutex_unlock(&fs->lock);
		log_err("out of memory counting the kernel's lookups of inode %llu",
			(unsigned long long)ino);
		return;
	}
	k = known_slot(fs->known, fs->known_size, ino);
	if (k->ino != ino) {
		if (k->ino == KNOWN_EMPTY)
			fs->known_used++;
		k->ino = ino;
		k->count = 0;
		fs->known_live++;
	}
	k->count += n;
	pthread_mutex_unlock(&fs->lock);
}

void fs_known_forget(struct fs *fs, uint64_t ino, uint64_t n)
{
	struct fs_known *k;

	if (ino == FUSE_ROOT_ID)
		return;
	pthread_mutex_lock(&fs->lock);
	k = known_slot(fs->known, fs->known_size, ino);
	if (k->ino != ino) {
		log_debug("kernel forgot inode %llu it was never told of", (unsigned long long)ino);
	} else if (k->count <= n) {
		if (k->count < n)
			log_warn("kernel forgot inode %llu %llu times, it was told %llu",
				 (unsigned long long)ino, (unsigned long long)n,
				 (unsigned long long)k->count);
		k->ino = KNOWN_GONE;
		k->count = 0;
		fs->known_live--;
	} else {
		k->count -= n;
	}
	pthread_mutex_unlock(&fs->lock);
}

uint64_t fs_known_count(struct fs *fs, uint64_t ino)
{
	const struct fs_known *k;
	uint64_t n;

	if (ino == FUSE_ROOT_ID)
		return 1;
	pthread_mutex_lock(&fs->lock);
	k = known_slot(fs->known, fs->known_size, ino);
	n = k->ino == ino ? k->count : 0;
	pthread_mutex_unlock(&fs->lock);
	return n;
}

size_t fs_known_live(struct fs *fs)
{
	size_t n;

	pthread_mutex_lock(&fs->lock);
	n = fs->known_live;
	pthread_mutex_unlock(&fs->lock);
	return n;
}

/* ---- open files -------------------------------------------------------------------- */

static struct fs_file **file_bucket(struct fs *fs, uint64_t ino)
{
	return &fs->files[hash_ino(ino) & (fs->files_size - 1)];
}

/* The open file of ino, or NULL. Under fs->lock. */
static struct fs_file *file_find(struct fs *fs, uint64_t ino)
{
	struct fs_file *f;

	for (f = *file_bucket(fs, ino); f && f->ino != ino; f = f->next)
		;
	return f;
}

struct fs_file *fs_file_get(struct fs *fs, uint64_t ino, int create)
{
	struct fs_file **b, *f;

	pthread_mutex_lock(&fs->lock);
	b = file_bucket(fs, ino);
	f = file_find(fs, ino);
	if (f) {
		f->refs++;
	} else if (create && (f = calloc(1, sizeof(*f)))) {
		f->ino = ino;
		f->refs = 1;
		buf_init(&f->data, FS_FILE_MAX);
		pthread_mutex_init(&f->lock, NULL);
		f->next = *b;
		*b = f;
		fs->files_open++;
	}
	pthread_mutex_unlock(&fs->lock);
	return f;
}

int fs_file_is_open(struct fs *fs, uint64_t ino)
{
	int open;

	pthread_mutex_lock(&fs->lock);
	open = file_find(fs, ino) != NULL;
	pthread_mutex_unlock(&fs->lock);
	return open;
}

void fs_file_put(struct fs *fs, struct fs_file *f)
{
	struct fs_file **p;

	if (!f)
		return;
	pthread_mutex_lock(&fs->lock);
	if (--f->refs) {
		pthread_mutex_unlock(&fs->lock);
		return;
	}
	for (p = file_bucket(fs, f->ino); *p != f; p = &(*p)->next)
		;
	*p = f->next;
	fs->files_open--;
	pthread_mutex_unlock(&fs->lock);
	buf_release(&f->data);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

void fs_file_mark_stale(struct fs *fs, uint64_t ino)
{
	struct fs_file *f;

	pthread_mutex_lock(&fs->lock);
	if ((f = file_find(fs, ino)))
		f->stale = 1;
	pthread_mutex_unlock(&fs->lock);
}

int fs_file_take_stale(struct fs *fs, struct fs_file *f)
{
	int stale;

	pthread_mutex_lock(&fs->lock);
	stale = f->stale;
	f->stale = 0;
	pthread_mutex_unlock(&fs->lock);
	return stale;
}

size_t fs_files_open(struct fs *fs)
{
	size_t n;

	pthread_mutex_lock(&fs->lock);
	n = fs->files_open;
	pthread_mutex_unlock(&fs->lock);
	return n;
}
