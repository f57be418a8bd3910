/*
 * cache-drive — drive cache/ from the command line, for the crash, fault
 * and memory tests (tests/python/test_cache_engine.py) and by hand:
 *
 *   cache-drive --dir DIR --url GRAPH_URL --token TOKEN [--user UPN]
 *               [--poll S] [--grace MS] [--photos] COMMAND [ARG]
 *
 *   apply FILE    local changes, one a line (fields separated by tabs), each committed:
 *                   put PATH SOURCE   write SOURCE's bytes to PATH (created if new)
 *                   rm PATH           unlink
 *                   mv PATH NEWPATH   rename
 *                   mkdir PATH
 *                 PATH is relative to the mount root ("Work/Jane.vcf").
 *                 Prints "applied N"; exit 1 at the first failing line.
 *   drain [S]     start the sync thread; exit 0 once the outbox is empty
 *                 (S seconds at most, default 600): 1 timeout, 2 offline.
 *   sync [S]      start the sync thread, wait for a delta round and the
 *                 photos, print "contacts N" and the peak resident memory.
 *   ls            every node: "PATH<TAB>SIZE<TAB>INO"
 *   cat PATH      a file's bytes
 *   status        the status query, and the error log
 */
#include "cache.h"
#include "graph.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static struct cache *cache;

/* Split PATH into its directory (looked up) and its last name. *ino: the
 * node itself, or 0 when it does not exist. */
static int resolve(const char *path, uint64_t *parent, char *leaf, uint64_t *ino)
{
	uint64_t at = CACHE_ROOT_INO;
	const char *p = path;
	struct cache_attr a;

	for (;;) {
		const char *slash = strchr(p, '/');
		char part[256];
		size_t n = slash ? (size_t)(slash - p) : strlen(p);

		if (n == 0 || n > 255)
			return -EINVAL;
		memcpy(part, p, n);
		part[n] = '\0';
		if (!slash) {
			memcpy(leaf, part, n + 1);
			*parent = at;
			*ino = cache_lookup(cache, at, part, &a) ? 0 : a.ino;
			return 0;
		}
		if (cache_lookup(cache, at, part, &a))
			return -ENOENT;
		at = a.ino;
		p = slash + 1;
	}
}

static int read_file(const char *path, struct buf *out)
{
	FILE *f = fopen(path, "rb");
	char chunk[65536];
	size_t n;
	int r = 0;

	if (!f)
		return -errno;
	while (!r && (n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		r = buf_add(out, chunk, n);
	fclose(f);
	return r;
}

static int apply_line(char *line)
{
	char *cmd = strtok(line, "\t\n"), *a = strtok(NULL, "\t\n"), *b = strtok(NULL, "\t\n");
	char leaf[256], leaf2[256];
	uint64_t parent, ino, parent2, ino2;
	struct vcard_error err = {0};
	struct cache_attr attr;
	int r;

	if (!cmd || *cmd == '#')
		return 0;
	if (!a || (r = resolve(a, &parent, leaf, &ino)))
		return a ? r : -EINVAL;
	if (!strcmp(cmd, "put") && b) {
		struct buf data;

		buf_init(&data, 0);
		r = read_file(b, &data);
		if (!r && !ino) {
			r = cache_create(cache, parent, leaf, CACHE_FILE, NULL, &attr);
			ino = attr.ino;
		}
		if (!r)
			r = cache_write(cache, ino, data.data, data.len, 0, &err);
		if (r == -EINVAL && err.msg[0])
			fprintf(stderr, "%s: %s\n", a, err.msg);
		buf_release(&data);
		return r;
	}
	if (!strcmp(cmd, "rm"))
		return cache_unlink(cache, parent, leaf);
	if (!strcmp(cmd, "mkdir"))
		return cache_create(cache, parent, leaf, CACHE_FOLDER, NULL, &attr);
	if (!strcmp(cmd, "mv") && b) {
		if ((r = resolve(b, &parent2, leaf2, &ino2)))
			return r;
		r = cache_rename(cache, parent, leaf, parent2, leaf2, 0, &err);
		if (r == -EINVAL && err.msg[0])
			fprintf(stderr, "%s: %s\n", a, err.msg);
		return r;
	}
	return -EINVAL;
}

static int cmd_apply(const char *file)
{
	FILE *f = fopen(file, "r");
	char line[8192];
	unsigned n = 0, lineno = 0;

	if (!f) {
		perror(file);
		return 1;
	}
	while (fgets(line, sizeof(line), f)) {
		int r;

		lineno++;
		r = apply_line(line);
		if (r) {
			fprintf(stderr, "%s:%u: %s\n", file, lineno, strerror(-r));
			fclose(f);
			printf("applied %u\n", n);
			return 1;
		}
		n++;
	}
	fclose(f);
	printf("applied %u\n", n);
	return 0;
}

/* Directories are listed after the walk of their parent (a callback must
 * not call back into the cache). */
struct walk {
	char (*paths)[4096];
	uint64_t *inos;
	size_t n, size;
	const char *prefix;
};

static int print_entry(const char *name, const struct cache_attr *a, void *ctx)
{
	struct walk *w = ctx;
	char path[4096];

	snprintf(path, sizeof(path), "%s%s%s", w->prefix, *w->prefix ? "/" : "", name);
	printf("%s\t%llu\t%llu\n", path, (unsigned long long)a->size, (unsigned long long)a->ino);
	if (a->kind != CACHE_FOLDER && a->kind != CACHE_SCRATCH_DIR)
		return 0;
	if (w->n == w->size) {
		size_t size = w->size ? 2 * w->size : 16;
		void *p = realloc(w->paths, size * sizeof(*w->paths)), *q;

		if (!p)
			return -ENOMEM;
		w->paths = p;
		q = realloc(w->inos, size * sizeof(*w->inos));
		if (!q)
			return -ENOMEM;
		w->inos = q;
		w->size = size;
	}
	memcpy(w->paths[w->n], path, sizeof(path));
	w->inos[w->n++] = a->ino;
	return 0;
}

static int list_tree(void)
{
	struct walk w = {NULL, NULL, 0, 0, ""};
	int r = cache_readdir(cache, CACHE_ROOT_INO, 0, print_entry, &w);

	for (size_t i = 0; !r && i < w.n; i++) {
		w.prefix = w.paths[i];
		r = cache_readdir(cache, w.inos[i], 0, print_entry, &w);
	}
	free(w.paths);
	free(w.inos);
	return r;
}

static long peak_rss_kb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kb = -1;

	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmHWM:", 6))
			kb = strtol(line + 6, NULL, 10);
	if (f)
		fclose(f);
	return kb;
}

static int print_error(time_t when, const char *what, const char *message, void *ctx)
{
	(void)ctx;
	printf("error %lld %s: %s\n", (long long)when, what ? what : "", message ? message : "");
	return 0;
}

static int usage(void)
{
	fprintf(stderr,
		"usage: cache-drive --dir DIR --url URL --token TOKEN [--user UPN] [--poll S] "
		"[--grace MS] [--photos] apply FILE | drain [S] | sync [S] | ls | cat PATH | "
		"status\n");
	return 64;
}

int main(int argc, char **argv)
{
	struct cache_config cc = {0};
	struct graph_config gc = {0};
	struct graph *g = NULL;
	const char *token = NULL, *cmd = NULL, *arg = NULL;
	char tokcmd[512], errbuf[512];
	int err, rc = 1, i;

	cc.poll_s = -1;
	for (i = 1; i < argc && argv[i][0] == '-'; i += 2) {
		if (!strcmp(argv[i], "--photos")) {
			cc.photos = 1;
			i--;
			continue;
		}
		if (i + 1 >= argc)
			return usage();
		if (!strcmp(argv[i], "--dir"))
			cc.dir = argv[i + 1];
		else if (!strcmp(argv[i], "--url"))
			gc.graph_url = argv[i + 1];
		else if (!strcmp(argv[i], "--token"))
			token = argv[i + 1];
		else if (!strcmp(argv[i], "--user"))
			gc.user = cc.mailbox = argv[i + 1];
		else if (!strcmp(argv[i], "--poll"))
			cc.poll_s = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--grace"))
			cc.delete_grace_ms = atoi(argv[i + 1]);
		else
			return usage();
	}
	if (i >= argc)
		return usage();
	cmd = argv[i];
	arg = i + 1 < argc ? argv[i + 1] : NULL;
	if (getenv("CACHE_DRIVE_DEBUG"))
		log_set_level(LOG_LVL_DEBUG);
	if (gc.graph_url && token) {
		snprintf(tokcmd, sizeof(tokcmd), "echo %s", token);
		gc.token_cmd = tokcmd;
		gc.timeout_s = 30;
		if (!(g = graph_new(&gc, &err))) {
			fprintf(stderr, "graph_new: %s\n", strerror(-err));
			return 1;
		}
	}
	cache = cache_open(&cc, g, errbuf, sizeof(errbuf), &err);
	if (!cache) {
		fprintf(stderr, "cache-drive: %s\n", errbuf);
		graph_free(g);
		return 3;
	}
	if (!strcmp(cmd, "apply") && arg) {
		rc = cmd_apply(arg);
	} else if (!strcmp(cmd, "drain")) {
		int r = cache_start(cache);

		if (!r)
			r = cache_drain(cache, (arg ? atoi(arg) : 600) * 1000);
		rc = r == 0 ? 0 : r == -ETIMEDOUT ? 1 : r == -EHOSTDOWN ? 2 : 1;
		if (r)
			fprintf(stderr, "drain: %s\n", strerror(-r));
	} else if (!strcmp(cmd, "sync")) {
		struct cache_status st;
		int r = cache_start(cache);
		time_t end = time(NULL) + (arg ? atoi(arg) : 600);

		cache_sync_now(cache);
		while (!r && time(NULL) < end) {
			if ((r = cache_status(cache, &st)))
				break;
			if (st.synced && !st.photos_pending && cache_drain(cache, 1000) == 0)
				break;
			usleep(100000);
		}
		if (!r)
			r = cache_status(cache, &st);
		if (!r) {
			printf("contacts %u\nsynced %d\nrequests %lu\npeak_rss_kb %ld\n",
			       st.contacts, st.synced, st.requests, peak_rss_kb());
			rc = st.synced ? 0 : 1;
		}
	} else if (!strcmp(cmd, "ls")) {
		rc = list_tree() ? 1 : 0;
	} else if (!strcmp(cmd, "cat") && arg) {
		uint64_t parent, ino;
		char leaf[256];
		struct buf b;

		buf_init(&b, 0);
		if (!resolve(arg, &parent, leaf, &ino) && ino && !cache_read(cache, ino, &b)) {
			fwrite(b.data, 1, b.len, stdout);
			rc = 0;
		}
		buf_release(&b);
	} else if (!strcmp(cmd, "status")) {
		struct cache_status st;

		if (!cache_status(cache, &st)) {
			printf("online %d\nsynced %d\nlast_sync %lld\npending %u\nparked "
			       "%u\ncontacts %u\n",
			       st.online, st.synced, (long long)st.last_sync, st.pending, st.parked,
			       st.contacts);
			rc = cache_errors(cache, 100, print_error, NULL) ? 1 : 0;
		}
	} else {
		rc = usage();
	}
	cache_close(cache);
	graph_free(g);
	return rc;
}
