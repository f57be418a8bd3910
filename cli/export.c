/*
 * contactfs export: the whole mailbox into a directory as a vdir — one
 * directory per contact folder (nested as in Outlook; the default folder is
 * DIR itself), one .vcf per contact, names as docs/design.md §1 says.
 *
 * Requests: one folder listing; per folder, one contact delta round (paged)
 * and one list of the contacts that carry our extension (Graph's delta does
 * not return extensions), one of those Outlook's PidLidHasPicture marks; a
 * photo request, sent 20 to a $batch, for each of those and for a sample of
 * the others (for every contact when the server refuses the list or the
 * sample finds a photo the flag does not show).
 * They are the sync engine's own (cache_fetch_* in cache/fetch.c): a folder
 * is read the same way here and in the mount.
 * Folders are worked on by a few threads; the graph/ scheduler keeps the
 * mailbox at 4 requests in flight whatever the number of threads.
 */
#include "cli_int.h"

#include "cache.h"
#include "graph.h"
#include "util.h"
#include "vcard.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EXPORT_THREADS 4

struct folder {
	char *id;     /* NULL for the default folder */
	char *parent; /* parentFolderId */
	char *name;   /* displayName */
	char *path;   /* directory, relative to the export root ("" for it) */
	unsigned contacts;
	unsigned photos;
	int trusted; /* written with photos chosen by PidLidHasPicture */
};

struct export
{
	struct graph *g;
	const char *root;
	enum vcard_version version;
	struct folder *folders;
	size_t nfolders;
	char *default_id; /* the default folder's id; NULL: it holds nothing */
	int tty;

	pthread_mutex_t lock; /* protects the fields below */
	size_t next;	      /* next folder to work on */
	unsigned done_folders;
	unsigned contacts;
	unsigned photos;
	int error;	       /* first error, -errno */
	int photo_flags_off;   /* PidLidHasPicture not used: every photo probed */
	int photo_flags_wrong; /* a sample had a photo the flag did not show */
};

/* ---- progress -------------------------------------------------------------- */

static void progress(struct export *x)
{
	if (!x->tty)
		return;
	pthread_mutex_lock(&x->lock);
	fprintf(stderr, "\rexporting: %u contacts, %u photos, %u of %zu folders", x->contacts,
		x->photos, x->done_folders, x->nfolders);
	fflush(stderr);
	pthread_mutex_unlock(&x->lock);
}

/* ---- folders ----------------------------------------------------------------- */

static int add_folder(const cJSON *item, void *ctx)
{
	struct export *x = ctx;
	const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(item, "id"));
	const char *name =
		cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(item, "displayName"));
	const char *parent =
		cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(item, "parentFolderId"));
	struct folder *f;

	if (!id || cJSON_GetObjectItemCaseSensitive(item, "@removed") ||
	    (x->default_id && !strcmp(id, x->default_id)))
		return 0; /* the default folder is the export's root */
	/* Delta may repeat an item: the last one wins. */
	for (size_t i = 1; i < x->nfolders; i++) {
		if (!strcmp(x->folders[i].id, id)) {
			free(x->folders[i].name);
			free(x->folders[i].parent);
			x->folders[i].name = strdup(name ? name : "");
			x->folders[i].parent = strdup(parent ? parent : "");
			return x->folders[i].name && x->folders[i].parent ? 0 : -ENOMEM;
		}
	}
	f = realloc(x->folders, (x->nfolders + 1) * sizeof(*f));
	if (!f)
		return -ENOMEM;
	x->folders = f;
	f = &x->folders[x->nfolders++];
	memset(f, 0, sizeof(*f));
	f->id = strdup(id);
	f->name = strdup(name ? name : "");
	f->parent = strdup(parent ? parent : "");
	return f->id && f->name && f->parent ? 0 : -ENOMEM;
}

static struct folder *folder_by_id(struct export *x, const char *id)
{
	for (size_t i = 1; i < x->nfolders; i++)
		if (!strcmp(x->folders[i].id, id))
			return &x->folders[i];
	return NULL;
}

/* Whether another folder with the same parent already has this path. */
static int path_taken(struct export *x, const char *path)
{
	for (size_t i = 0; i < x->nfolders; i++)
		if (x->folders[i].path && !strcmp(x->folders[i].path, path))
			return 1;
	return 0;
}

/* Give f (and, first, its ancestors) a directory path. depth bounds a
 * parent cycle, which the server should never send. */
static int folder_path(struct export *x, struct folder *f, int depth)
{
	struct folder *parent = folder_by_id(x, f->parent);
	const char *base = "";
	char name[256], numbered[256];
	struct buf b;
	int r;

	if (f->path)
		return 0;
	if (depth > 64)
		return -ELOOP;
	if (parent) {
		if ((r = folder_path(x, parent, depth + 1)))
			return r;
		base = parent->path;
	}
	if (!cache_safe_name(f->name, "", name, sizeof(name)))
		snprintf(name, sizeof(name), "Folder");
	buf_init(&b, 1 << 16);
	for (unsigned n = 1;; n++) {
		const char *leaf = name;

		if (n > 1) {
			if (cache_numbered_name(name, "", n, numbered, sizeof(numbered)))
				return -ENAMETOOLONG;
			leaf = numbered;
		}
		buf_reset(&b);
		if ((r = buf_printf(&b, "%s%s%s", base, *base ? "/" : "", leaf))) {
			buf_release(&b);
			return r;
		}
		if (!path_taken(x, b.data))
			break;
	}
	f->path = buf_detach(&b, NULL);
	return f->path ? 0 : -ENOMEM;
}

static int load_folders(struct export *x)
{
	int r;

	x->folders = calloc(1, sizeof(*x->folders));
	if (!x->folders)
		return -ENOMEM;
	x->nfolders = 1; /* [0] is the default folder: the export root */
	x->folders[0].path = strdup("");
	x->folders[0].name = strdup("");
	x->folders[0].parent = strdup("");
	if (!x->folders[0].path || !x->folders[0].name || !x->folders[0].parent)
		return -ENOMEM;
	/* A listing of the tree, not contactFolders/delta: what delta includes
	 * (nested folders? the default one?) is not documented. */
	r = graph_default_folder(x->g, &x->default_id);
	if (!r)
		r = graph_folder_walk(x->g, add_folder, x);
	for (size_t i = 1; !r && i < x->nfolders; i++)
		r = folder_path(x, &x->folders[i], 0);
	/* Every directory before any worker starts. A parent's path is a
	 * prefix of its child's, so a pass creates at least one level more. */
	for (size_t pass = 0; !r && pass < x->nfolders; pass++) {
		size_t left = 0;

		for (size_t i = 1; !r && i < x->nfolders; i++) {
			char dir[4096];
			struct stat st;

			snprintf(dir, sizeof(dir), "%s/%s", x->root, x->folders[i].path);
			if (!stat(dir, &st) || !mkdir(dir, 0700))
				continue;
			if (errno == ENOENT)
				left++; /* its parent comes in a later pass */
			else
				r = -errno;
		}
		if (!left)
			break;
	}
	return r;
}

/* ---- one folder's contacts ------------------------------------------------------ */

struct contacts {
	cJSON *list;  /* array of contact objects, by id */
	cJSON *by_id; /* object: id -> index in list (as number) */
};

static int add_contact(const cJSON *item, void *ctx)
{
	struct contacts *c = ctx;
	const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(item, "id"));
	const cJSON *at;
	cJSON *copy;

	if (!id)
		return 0;
	at = cJSON_GetObjectItemCaseSensitive(c->by_id, id);
	if (cJSON_GetObjectItemCaseSensitive(item, "@removed")) {
		/* Removed within the same round: replace with null. */
		if (at)
			cJSON_ReplaceItemInArray(c->list, (int)at->valuedouble, cJSON_CreateNull());
		return 0;
	}
	if (!(copy = cJSON_Duplicate(item, 1)))
		return -ENOMEM;
	if (at)
		return cJSON_ReplaceItemInArray(c->list, (int)at->valuedouble, copy) ? 0 : -ENOMEM;
	if (!cJSON_AddNumberToObject(c->by_id, id, cJSON_GetArraySize(c->list)) ||
	    !cJSON_AddItemToArray(c->list, copy)) {
		cJSON_Delete(copy);
		return -ENOMEM;
	}
	return 0;
}

/* Attach a listed contact's extension to the contact from the delta. */
static int attach_extension(const char *id, const cJSON *ext, void *ctx)
{
	struct contacts *c = ctx;
	const cJSON *at = cJSON_GetObjectItemCaseSensitive(c->by_id, id);
	cJSON *contact, *exts;

	if (!at)
		return 0;
	contact = cJSON_GetArrayItem(c->list, (int)at->valuedouble);
	if (!cJSON_IsObject(contact))
		return 0;
	cJSON_DeleteItemFromObjectCaseSensitive(contact, "extensions");
	exts = cJSON_AddArrayToObject(contact, "extensions");
	return exts && cJSON_AddItemToArray(exts, cJSON_Duplicate(ext, 1)) ? 0 : -ENOMEM;
}

/* Write data to dir/name atomically, mode 0600. */
static int write_file(const char *dir, const char *name, const char *data, size_t len)
{
	char tmp[4352], path[4352];
	int fd, r = 0;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path) ||
	    (size_t)snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name) >= sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	for (size_t off = 0; off < len && !r;) {
		ssize_t n = write(fd, data + off, len - off);

		if (n < 0 && errno != EINTR)
			r = -errno;
		else if (n > 0)
			off += (size_t)n;
	}
	if (close(fd) && !r)
		r = -errno;
	if (!r && rename(tmp, path))
		r = -errno;
	if (r)
		unlink(tmp);
	return r;
}

/* ---- which contacts have a photo ----------------------------------------- */

static int add_flagged(const char *id, void *ctx)
{
	return cJSON_AddTrueToObject(ctx, id) ? 0 : -ENOMEM;
}

static int photo_flags_used(struct export *x)
{
	int used;

	pthread_mutex_lock(&x->lock);
	used = !x->photo_flags_off;
	pthread_mutex_unlock(&x->lock);
	return used;
}

/* Stop using the flag for the rest of the export, said once. wrong: a
 * sample showed it wrong, so the folders written on its word are read again
 * (cmd_export). */
static void photo_flags_drop(struct export *x, const char *why, int wrong)
{
	pthread_mutex_lock(&x->lock);
	x->photo_flags_wrong |= wrong;
	if (!x->photo_flags_off)
		log_info("%s; probing every contact's photo", why);
	x->photo_flags_off = 1;
	pthread_mutex_unlock(&x->lock);
}

/*
 * Which of the folder's n contacts to ask for a photo (ask[i] = 1, or 2 for
 * one of the sample): those PidLidHasPicture marks, and the folder's share
 * of the sample (cache_photo_sample) of the others, at random; every one
 * when the flag is not used (refused here or before, or a sample found a
 * photo it did not show). *trusted: whether the flag chose.
 */
static int photo_choice(struct export *x, const char *base, const cJSON *list, size_t n,
			unsigned char *ask, int *trusted)
{
	cJSON *flagged = NULL;
	size_t *others = NULL, nothers = 0, take;
	unsigned seed = (unsigned)time(NULL) ^ (unsigned)(uintptr_t)ask;
	int r = 0;

	memset(ask, 1, n);
	*trusted = 0;
	if (!n || !photo_flags_used(x))
		return 0;
	if (!(flagged = cJSON_CreateObject()) || !(others = calloc(n, sizeof(*others)))) {
		r = -ENOMEM;
		goto out;
	}
	r = cache_fetch_photo_flags(x->g, base, add_flagged, flagged);
	if (cache_photo_flags_refused(r)) {
		photo_flags_drop(x, "the server does not list contacts by PidLidHasPicture", 0);
		r = 0;
		goto out;
	}
	if (r)
		goto out;
	for (size_t i = 0; i < n; i++) {
		const char *id = cJSON_GetStringValue(
			cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(list, (int)i), "id"));

		if (id && !cJSON_GetObjectItemCaseSensitive(flagged, id)) {
			ask[i] = 0;
			others[nothers++] = i;
		}
	}
	*trusted = 1;
	take = cache_photo_sample(x->nfolders);
	take = nothers < take ? nothers : take;
	/* The sample: a partial shuffle of the others. */
	for (size_t k = 0; k < take; k++) {
		size_t j = k + (size_t)rand_r(&seed) % (nothers - k), t = others[j];

		others[j] = others[k];
		others[k] = t;
		ask[t] = 2;
	}
out:
	cJSON_Delete(flagged);
	free(others);
	return r;
}

/* Ask for the photos of the contacts of list whose ask[i] is in [lo, hi]
 * and that were not asked yet. */
static int fetch_photos(struct export *x, const cJSON *list, size_t n, const char *base,
			const unsigned char *ask, int lo, int hi, struct cache_photo *photos,
			size_t *np, struct cache_photo **photo_of)
{
	size_t first = *np;

	for (size_t i = 0; i < n; i++) {
		const char *id = cJSON_GetStringValue(
			cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(list, (int)i), "id"));

		if (!id || strpbrk(id, "/?#") || photo_of[i] || ask[i] < lo || ask[i] > hi)
			continue;
		photos[*np].base = base;
		photos[*np].id = id;
		photo_of[i] = &photos[(*np)++];
	}
	return cache_fetch_photos(x->g, photos + first, *np - first);
}

static int export_folder(struct export *x, struct folder *f)
{
	struct contacts c = {cJSON_CreateArray(), cJSON_CreateObject()};
	char base[1024], dir[4096], name[256], numbered[256];
	const char *delta_id = f->id ? f->id : x->default_id;
	struct cache_photo *photos = NULL, **photo_of = NULL;
	unsigned char *ask = NULL;
	struct buf out;
	cJSON *names = cJSON_CreateObject();
	char *next = NULL;
	size_t n = 0, np = 0;
	int r;

	buf_init(&out, 0);
	if (!c.list || !c.by_id || !names) {
		r = -ENOMEM;
		goto out;
	}
	/* The default folder is /contacts; the others /contactFolders/ID/contacts.
	 * Delta is only documented by folder id (contact-delta.md), the
	 * default folder's included; without that id the folder is empty. */
	if (!delta_id) {
		r = 0;
		goto out;
	}
	if (f->id)
		snprintf(base, sizeof(base), "/contactFolders/%s", f->id);
	else
		base[0] = '\0';
	if ((r = cache_fetch_contacts(x->g, delta_id, NULL, add_contact, &c, &next)) ||
	    (r = cache_fetch_exts(x->g, base, attach_extension, &c)))
		goto out;
	n = (size_t)cJSON_GetArraySize(c.list);
	photos = calloc(n ? n : 1, sizeof(*photos));
	photo_of = calloc(n ? n : 1, sizeof(*photo_of));
	ask = calloc(n ? n : 1, 1);
	if (!photos || !photo_of || !ask) {
		r = -ENOMEM;
		goto out;
	}
	cache_photos_init(photos, n);
	/* A photo through its folder: /contacts/ID is the default folder's. */
	if ((r = photo_choice(x, base, c.list, n, ask, &f->trusted)) ||
	    (r = fetch_photos(x, c.list, n, base, ask, 1, 2, photos, &np, photo_of)))
		goto out;
	for (size_t i = 0; i < n; i++) {
		if (ask[i] == 2 && photo_of[i] && photo_of[i]->status == 200) {
			char why[640];

			snprintf(why, sizeof(why),
				 "contact %s has a photo that its PidLidHasPicture does not show",
				 photo_of[i]->id);
			photo_flags_drop(x, why, 1);
			f->trusted = 0;
			r = fetch_photos(x, c.list, n, base, ask, 0, 0, photos, &np, photo_of);
			break;
		}
	}
	if (r)
		goto out;
	for (size_t j = 0; j < np; j++)
		if (photos[j].status != 200 && photos[j].status != 404)
			log_warn("photo of contact %s: HTTP %d %s", photos[j].id, photos[j].status,
				 photos[j].code);
	snprintf(dir, sizeof(dir), "%s%s%s", x->root, *f->path ? "/" : "", f->path);
	for (size_t i = 0; i < n; i++) {
		const cJSON *contact = cJSON_GetArrayItem(c.list, (int)i);
		const struct cache_photo *ph = photo_of[i];
		size_t plen = ph && ph->status == 200 ? ph->data.len : 0;
		struct vcard_error err;
		struct vcard *card = NULL;
		const char *file = name;

		if (!cJSON_IsObject(contact))
			continue; /* removed while we read */
		r = vcard_from_graph(contact, plen ? ph->data.data : NULL, plen,
				     plen ? ph->type : NULL, &card, &err);
		if (r == -EINVAL) {
			log_err("contact %s: %s; skipped",
				cJSON_GetStringValue(
					cJSON_GetObjectItemCaseSensitive(contact, "id")),
				err.msg);
			r = 0;
			continue;
		}
		buf_reset(&out);
		if (r || (r = vcard_write(card, x->version, &out))) {
			vcard_free(card);
			goto out;
		}
		vcard_free(card);
		cache_contact_name(contact, name, sizeof(name));
		/* Two contacts never share a file: "Jane Doe (2).vcf". */
		for (unsigned k = 2; cJSON_GetObjectItemCaseSensitive(names, file); k++) {
			size_t bl = strlen(name) - 4;
			char stem[256];

			memcpy(stem, name, bl);
			stem[bl] = '\0';
			if (cache_numbered_name(stem, ".vcf", k, numbered, sizeof(numbered))) {
				r = -ENAMETOOLONG;
				goto out;
			}
			file = numbered;
		}
		if (!cJSON_AddTrueToObject(names, file)) {
			r = -ENOMEM;
			goto out;
		}
		if ((r = write_file(dir, file, out.data, out.len))) {
			log_err("writing %s/%s: %s", dir, file, strerror(-r));
			goto out;
		}
		pthread_mutex_lock(&x->lock);
		x->contacts++;
		x->photos += plen > 0;
		pthread_mutex_unlock(&x->lock);
		f->contacts++;
		f->photos += plen > 0;
	}
out:
	if (photos)
		cache_photos_release(photos, n);
	free(photos);
	free(photo_of);
	free(ask);
	free(next);
	buf_release(&out);
	cJSON_Delete(names);
	cJSON_Delete(c.list);
	cJSON_Delete(c.by_id);
	return r;
}

static void *worker(void *arg)
{
	struct export *x = arg;

	for (;;) {
		struct folder *f;
		int r;

		pthread_mutex_lock(&x->lock);
		if (x->next >= x->nfolders || x->error) {
			pthread_mutex_unlock(&x->lock);
			return NULL;
		}
		f = &x->folders[x->next++];
		pthread_mutex_unlock(&x->lock);
		r = export_folder(x, f);
		pthread_mutex_lock(&x->lock);
		x->done_folders++;
		if (r && !x->error) {
			x->error = r;
			log_err("exporting folder \"%s\": %s", f->name, strerror(-r));
		}
		pthread_mutex_unlock(&x->lock);
		progress(x);
	}
}

/* ---- the command ------------------------------------------------------------------ */

static int usage(const char *what)
{
	fprintf(stderr,
		"contactfs export: %s\n"
		"usage: contactfs export [-o OPTIONS] [--vcard-version 3.0|4.0] DIR\n"
		"OPTIONS: graph_url=,auth_url=,user=UPN,token_cmd=,client_id=,tenant=\n",
		what);
	return EXIT_USAGE;
}

/* DIR must not exist or be empty: an export never mixes with other files. */
static int prepare_root(const char *root)
{
	if (mkdir(root, 0700) == 0)
		return 0;
	if (errno != EEXIST)
		return -errno;
	if (rmdir(root) == 0)
		return mkdir(root, 0700) ? -errno : 0; /* it was empty */
	return errno == ENOTEMPTY || errno == EEXIST ? -ENOTEMPTY : -errno;
}

int export_main(int argc, char **argv)
{
	struct graph_config cfg = {0};
	struct export x = {0};
	pthread_t threads[EXPORT_THREADS];
	struct graph_stats st;
	struct timespec t0, t1;
	char *opts = NULL, errbuf[256];
	int nthreads = 0, r, rc = EXIT_SOFTWARE;

	x.version = VCARD_V30;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-o") && i + 1 < argc) {
			if (graph_options_parse(argv[++i], &cfg, &opts, errbuf, sizeof(errbuf)))
				return usage(errbuf);
		} else if (!strcmp(argv[i], "--vcard-version") && i + 1 < argc) {
			i++;
			if (!strcmp(argv[i], "3.0"))
				x.version = VCARD_V30;
			else if (!strcmp(argv[i], "4.0"))
				x.version = VCARD_V40;
			else
				return usage("--vcard-version takes 3.0 or 4.0");
		} else if (argv[i][0] == '-' && argv[i][1]) {
			return usage("unknown option");
		} else if (!x.root) {
			x.root = argv[i];
		} else {
			return usage("too many arguments");
		}
	}
	if (!x.root)
		return usage("DIR is required");
	if ((r = prepare_root(x.root))) {
		fprintf(stderr, "contactfs export: %s: %s\n", x.root,
			r == -ENOTEMPTY ? "not empty (export into a new or empty directory)"
					: strerror(-r));
		free(opts);
		return EXIT_CANTCREAT;
	}
	x.g = graph_new(&cfg, &r);
	if (!x.g) {
		free(opts);
		return r == -EINVAL ? EXIT_USAGE : EXIT_SOFTWARE;
	}
	pthread_mutex_init(&x.lock, NULL);
	x.tty = isatty(STDERR_FILENO);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if ((r = load_folders(&x))) {
		fprintf(stderr, "contactfs export: reading the folders: %s\n", strerror(-r));
		rc = r == -EACCES ? EXIT_NOPERM : EXIT_UNAVAILABLE;
		goto out;
	}
	for (; nthreads < EXPORT_THREADS; nthreads++)
		if (pthread_create(&threads[nthreads], NULL, worker, &x))
			break;
	if (nthreads == 0)
		worker(&x);
	for (int i = 0; i < nthreads; i++)
		pthread_join(threads[i], NULL);
	/* A sample showed PidLidHasPicture wrong: the folders whose photos it
	 * chose are read again, every photo probed (a missed photo must not
	 * be written as none). */
	for (size_t i = 0; !x.error && x.photo_flags_wrong && i < x.nfolders; i++) {
		struct folder *f = &x.folders[i];

		if (!f->trusted)
			continue;
		x.contacts -= f->contacts;
		x.photos -= f->photos;
		f->contacts = f->photos = 0;
		f->trusted = 0;
		if ((x.error = export_folder(&x, f)))
			log_err("exporting folder \"%s\": %s", f->name, strerror(-x.error));
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	graph_stats(x.g, &st);
	if (x.tty)
		fputc('\n', stderr);
	if (x.error) {
		fprintf(stderr, "contactfs export: incomplete: %s\n", strerror(-x.error));
		rc = x.error == -EACCES ? EXIT_NOPERM : EXIT_UNAVAILABLE;
		goto out;
	}
	fprintf(stderr,
		"exported %u contacts (%u photos) in %zu folders to %s: %lu requests, %lu retries, "
		"%.1f s\n",
		x.contacts, x.photos, x.nfolders, x.root, st.requests, st.retries,
		(double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	rc = 0;
out:
	for (size_t i = 0; i < x.nfolders; i++) {
		free(x.folders[i].id);
		free(x.folders[i].parent);
		free(x.folders[i].name);
		free(x.folders[i].path);
	}
	free(x.folders);
	free(x.default_id);
	pthread_mutex_destroy(&x.lock);
	graph_free(x.g);
	free(opts);
	return rc;
}
