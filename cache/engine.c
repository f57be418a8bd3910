/*
 * Opening the cache, the sync thread's loop, and the questions asked of it
 * (drained yet? status, errors).
 *
 * The loop: send the outbox first (so that creates whose answer was lost
 * are resolved before a delta round could show them as strangers), then a
 * delta round when one is due, then photos and rendering in small steps so
 * that new local changes never wait long. Offline is a state: the loop
 * backs off and tries again by itself.
 */
#include "cache_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int cache_offline_errno(int r)
{
	/* -ECANCELED: not sent because the process is ending (graph_cancel),
	 * which leaves a change pending as no network does. */
	return r == -ECONNREFUSED || r == -EHOSTUNREACH || r == -ENETUNREACH || r == -ETIMEDOUT ||
	       r == -EHOSTDOWN || r == -ECONNRESET || r == -ECANCELED;
}

/* mkdir -p with mode 0700 for what it creates; *made: whether path itself
 * was created now. */
static int make_dirs(const char *path, int *made)
{
	char tmp[4096];
	size_t n = strlen(path);

	*made = 0;
	if (n >= sizeof(tmp))
		return -ENAMETOOLONG;
	memcpy(tmp, path, n + 1);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0700) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (!mkdir(tmp, 0700))
		*made = 1;
	else if (errno != EEXIST)
		return -errno;
	return 0;
}

/*
 * A cache directory that was there before: used as it is, its mode never
 * changed (cache_dir=$HOME must not lock the home). It must belong to the
 * user, be closed to everyone else, and be empty or hold a cache.db (which
 * cache_db_schema then checks is this mailbox's contactfs cache). 0, or -errno
 * with the sentence in errbuf.
 */
static int existing_dir_ok(const char *dir, char *errbuf, size_t errsize)
{
	struct stat st;
	struct dirent *e;
	int other = 0, db = 0;
	DIR *d;

	if (stat(dir, &st) || !(d = opendir(dir))) {
		int r = -errno;

		snprintf(errbuf, errsize, "%s: %s", dir, strerror(-r));
		return r;
	}
	while ((e = readdir(d)))
		if (!strcmp(e->d_name, "cache.db"))
			db = 1;
		else if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			other = 1;
	closedir(d);
	if (st.st_uid != geteuid()) {
		snprintf(errbuf, errsize,
			 "%s: belongs to uid %u, not to you: give a directory of yours", dir,
			 (unsigned)st.st_uid);
		return -EACCES;
	}
	if (st.st_mode & 077) {
		snprintf(errbuf, errsize,
			 "%s: other users can open it (mode %04o), and contactfs changes the mode "
			 "only of a directory it creates: chmod 700 it, or give a cache_dir that "
			 "does not exist yet",
			 dir, (unsigned)(st.st_mode & 07777));
		return -EACCES;
	}
	if (other && !db) {
		snprintf(
			errbuf, errsize,
			"%s: holds other files and no contactfs cache: give an empty directory, or "
			"a cache_dir that does not exist yet",
			dir);
		return -ENOTEMPTY;
	}
	return 0;
}

static char *default_dir(const char *mailbox)
{
	const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
	struct buf b;

	buf_init(&b, 8192);
	if (xdg && *xdg == '/') {
		if (buf_printf(&b, "%s/contactfs/%s", xdg, mailbox))
			goto fail;
	} else if (home && *home == '/') {
		if (buf_printf(&b, "%s/.cache/contactfs/%s", home, mailbox))
			goto fail;
	} else {
		goto fail;
	}
	return buf_detach(&b, NULL);
fail:
	buf_release(&b);
	return NULL;
}

struct cache *cache_open(const struct cache_config *cfg, struct graph *g, char *errbuf,
			 size_t errsize, int *err)
{
	struct cache *c = calloc(1, sizeof(*c));
	int fd, made, r = -ENOMEM;

	snprintf(errbuf, errsize, "out of memory");
	if (!c)
		goto fail_early;
	c->cfg = *cfg;
	c->g = g;
	pthread_mutex_init(&c->api_lock, NULL);
	pthread_mutex_init(&c->sdb_lock, NULL);
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->wake, NULL);
	pthread_cond_init(&c->pass, NULL);
	c->online = 1;
	c->mailbox = strdup(cfg->mailbox && *cfg->mailbox ? cfg->mailbox : "me");
	if (!c->mailbox || strchr(c->mailbox, '/') || c->mailbox[0] == '.') {
		r = c->mailbox ? -EINVAL : -ENOMEM;
		snprintf(errbuf, errsize, "invalid mailbox name");
		goto fail;
	}
	c->dir = cfg->dir ? strdup(cfg->dir) : default_dir(c->mailbox);
	if (!c->dir) {
		snprintf(errbuf, errsize, "no cache directory: set XDG_CACHE_HOME or HOME");
		r = -EINVAL;
		goto fail;
	}
	if ((r = make_dirs(c->dir, &made))) {
		snprintf(errbuf, errsize, "%s: cannot create the cache directory: %s", c->dir,
			 strerror(-r));
		goto fail;
	}
	/* Made now: 0700 from the start. There before: nothing in it is for
	 * other users' eyes, and it is not ours to chmod. */
	if (!made && (r = existing_dir_ok(c->dir, errbuf, errsize)))
		goto fail;
	{
		struct buf b;

		buf_init(&b, 8192);
		if (buf_printf(&b, "%s/cache.db", c->dir))
			goto fail;
		c->path = buf_detach(&b, NULL);
		if (!c->path)
			goto fail;
	}
	/* Create the file 0600 ourselves; SQLite gives the -wal and -shm
	 * files the database's mode. An existing file is made 0600 only once
	 * it is known to be ours. */
	fd = open(c->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0 && errno != EEXIST) {
		r = -errno;
		snprintf(errbuf, errsize, "%s: %s", c->path, strerror(errno));
		goto fail;
	}
	if (fd >= 0)
		close(fd);
	if ((r = cache_db_connect(c, &c->db, errbuf, errsize)))
		goto fail;
	if ((r = cache_db_schema(c, c->db, errbuf, errsize)))
		goto fail;
	if (chmod(c->path, 0600) ||
	    sqlite3_exec(c->db, "PRAGMA journal_mode = WAL", NULL, NULL, NULL) != SQLITE_OK) {
		r = -EIO;
		snprintf(errbuf, errsize, "%s: cannot set up the cache: %s", c->path,
			 sqlite3_errmsg(c->db));
		goto fail;
	}
	if ((r = cache_db_connect(c, &c->sdb, errbuf, errsize)))
		goto fail;
	/* The last process may have died mid-request: what was in flight is
	 * pending again (a create keeps "sent" and is looked up first). */
	if ((r = cache_db_run(c->db, "UPDATE outbox SET inflight = 0 WHERE inflight", NULL))) {
		snprintf(errbuf, errsize, "%s: %s", c->path, strerror(-r));
		goto fail;
	}
	{
		char *last = cache_db_meta_get(c->db, "last_sync");

		c->synced = last != NULL;
		c->last_sync = last ? (time_t)strtoll(last, NULL, 10) : 0;
		free(last);
	}
	*err = 0;
	errbuf[0] = '\0';
	return c;
fail:
	cache_close(c);
fail_early:
	*err = r;
	return NULL;
}

/*
 * A Retry-After was given to the mailbox, not to the process: one still
 * running when this process ends (a drain that ran out of time, a round cut
 * short, a kill) is waited out by the next one too, so a quick remount does
 * not come back inside it. Kept in meta as "paused_until" (wall clock, ms
 * since the epoch) when the pause is set (pause_set, graph's hook: a
 * process killed keeps nothing at its exit), and again at a clean exit.
 */
static void pause_keep(struct cache *c, long left)
{
	char until[32];

	if (left <= 0)
		return;
	snprintf(until, sizeof(until), "%lld", (long long)(cache_now_ms() + left));
	pthread_mutex_lock(&c->api_lock);
	if (cache_db_meta_set(c->db, "paused_until", until))
		log_warn("cache: could not keep the server's pause (%ld ms left) for the next mount",
			 left);
	pthread_mutex_unlock(&c->api_lock);
}

/* graph's hook: a pause was set or made longer (no cache lock is held). */
static void pause_set(void *arg, long ms)
{
	pause_keep(arg, ms);
}

/* The pause a previous process left, if it still runs. */
static void pause_resume(struct cache *c)
{
	char *until = cache_db_meta_get(c->db, "paused_until");
	int64_t left = until ? strtoll(until, NULL, 10) - cache_now_ms() : 0;

	free(until);
	if (left <= 0)
		return;
	if (left > 3600 * 1000)
		left = 3600 * 1000; /* a clock set back: never more than graph takes */
	log_info("the server asked to be left alone %lld ms more when the last mount ended: "
		 "waiting before the first request",
		 (long long)left);
	graph_pause(c->g, (long)left);
}

void cache_close(struct cache *c)
{
	if (!c)
		return;
	if (c->started) {
		pthread_mutex_lock(&c->lock);
		c->stop = 1;
		pthread_cond_broadcast(&c->wake);
		pthread_mutex_unlock(&c->lock);
		/* A request waiting out a Retry-After or a backoff gives up:
		 * it is still pending, and goes at the next mount. */
		graph_cancel(c->g, 1);
		pthread_join(c->thread, NULL);
		pause_keep(c, graph_pause_left_ms(c->g));
		graph_on_pause(c->g, NULL, NULL);
		graph_cancel(c->g, 0);
	}
	cache_db_disconnect(c->sdb);
	cache_db_disconnect(c->db);
	cache_people_put(c, c->people);
	free(c->holds);
	pthread_cond_destroy(&c->pass);
	pthread_cond_destroy(&c->wake);
	pthread_mutex_destroy(&c->lock);
	pthread_mutex_destroy(&c->api_lock);
	pthread_mutex_destroy(&c->sdb_lock);
	free(c->ics);
	free(c->path);
	free(c->dir);
	free(c->mailbox);
	free(c);
}

/* ---- the sync thread ------------------------------------------------------------- */

int cache_stopping(struct cache *c)
{
	int s;

	pthread_mutex_lock(&c->lock);
	s = c->stop;
	pthread_mutex_unlock(&c->lock);
	return s;
}

void cache_set_online(struct cache *c, int online)
{
	pthread_mutex_lock(&c->lock);
	if (c->online != online)
		log_info("cache: %s",
			 online ? "back online" : "offline: changes are kept and sent later");
	c->online = online;
	pthread_mutex_unlock(&c->lock);
}

/* Read the lists of .contactfs asked for (*lists) or never read
 * (*first), and send what was written to the category list. A list read,
 * or refused for good, leaves the bits; offline they stay for the next
 * pass. *again: requests were queued, to be sent at once. */
static int sync_lists(struct cache *c, unsigned *lists, unsigned *first, int *again)
{
	static const struct {
		unsigned bit;
		int (*sync)(struct cache *, enum list_read);
	} each[] = {
		{CACHE_LIST_CATEGORIES, cache_categories_sync},
		{CACHE_LIST_PEOPLE, cache_people_sync},
	};
	int r = 0;

	for (size_t i = 0; i < sizeof(each) / sizeof(each[0]) && r != -EHOSTDOWN; i++) {
		/* Categories also without a bit: written edits wait there. */
		if (!((*lists | *first) & each[i].bit) && each[i].bit != CACHE_LIST_CATEGORIES)
			continue;
		r = each[i].sync(c, *lists & each[i].bit   ? LIST_IF_STALE
				    : *first & each[i].bit ? LIST_IF_NEVER
							   : LIST_WRITTEN);
		if (r == 1)
			*again = 1;
		if (r != -EHOSTDOWN) {
			*lists &= ~each[i].bit;
			*first &= ~each[i].bit;
		}
	}
	return r == -EHOSTDOWN ? r : 0;
}

/* The least time from the end of one pass to the start of the next one a
 * kick asks for (sync_main). */
#define PASS_GAP_MS 10

/* Wait on c->wake until the wall clock reads until_ms, or until woken for
 * a reason to stop waiting: a stop, a delta round or a list asked for, a
 * pass waited on, or, unless kicks_wait, any kick. Called with c->lock
 * held. */
static void wait_locked(struct cache *c, int64_t until_ms, int kicks_wait)
{
	struct timespec ts = {.tv_sec = until_ms / 1000, .tv_nsec = (until_ms % 1000) * 1000000};

	while (!c->stop && !c->asked && !c->lists && !c->hurried && (kicks_wait || !c->kicked) &&
	       cache_now_ms() < until_ms)
		if (pthread_cond_timedwait(&c->wake, &c->lock, &ts) == ETIMEDOUT)
			break;
}

static void *sync_main(void *arg)
{
	struct cache *c = arg;
	int64_t next_round = 0, retry_at = 0, backoff = 1000, in_backoff = 2000;
	int poll_ms = c->cfg.poll_s > 0 ? c->cfg.poll_s * 1000 : c->cfg.poll_s < 0 ? -1 : 300000;
	int want_round = 1; /* the first round, whatever the poll interval */
	/* The lists of .contactfs readers asked for; at the start, those
	 * never read are read (before the first round), so that a first look
	 * finds them stored. */
	unsigned lists = 0, first_lists = CACHE_LIST_CATEGORIES | CACHE_LIST_PEOPLE;

	while (!cache_stopping(c)) {
		int64_t now = cache_now_ms(), next_out = 0, next_names, wait;
		int r, left = 0, again = 0, offline = 0;

		pthread_mutex_lock(&c->lock);
		if (c->asked)
			want_round = 1;
		c->asked = 0;
		c->kicked = 0;
		c->hurried = 0;
		lists |= c->lists;
		c->lists = 0;
		pthread_mutex_unlock(&c->lock);
		if (poll_ms >= 0 && now >= next_round)
			want_round = 1;

		r = cache_outbox_pass(c, &next_out);
		offline = r == -EHOSTDOWN;
		/* After the outbox (our requests to a list go before it is read
		 * again), before a delta round that can take long. */
		if (!offline)
			offline = sync_lists(c, &lists, &first_lists, &again) == -EHOSTDOWN;
		/* Files whose upload just finished are looked at again before
		 * a delta round can take seconds (a card written without a
		 * UID gets its UID before the next save needs it). */
		if (cache_sync_render(c))
			log_warn("cache: rendering contacts failed; trying again later");
		if (!offline && want_round && now >= retry_at) {
			int64_t started = cache_now_ms();

			r = cache_sync_in(c);
			offline = r == -EHOSTDOWN;
			if (!r) {
				char when[32];

				pthread_mutex_lock(&c->lock);
				c->synced = 1;
				c->last_sync = time(NULL);
				snprintf(when, sizeof(when), "%lld", (long long)c->last_sync);
				pthread_mutex_unlock(&c->lock);
				if (cache_db_meta_set(c->sdb, "last_sync", when))
					log_warn("cache: could not record the time of the last "
						 "sync");
				want_round = 0;
				retry_at = 0;
				in_backoff = 2000;
				/* poll is from the start of one round to the
				 * start of the next: a change made on the
				 * server just after its folder was read is
				 * seen within poll plus one request, however
				 * long the round took. A round longer than
				 * poll is followed by a pause of a second. */
				next_round = started + (poll_ms > 0 ? poll_ms : 0);
				if (poll_ms > 0 && next_round < cache_now_ms() + 1000)
					next_round = cache_now_ms() + 1000;
			} else if (!offline) {
				/* Not the network: try again later, not at once. */
				retry_at = cache_now_ms() + in_backoff;
				in_backoff = in_backoff < 60000 ? in_backoff * 2 : 60000;
			}
		}
		if (!offline && c->cfg.photos) {
			r = cache_sync_photos(c, 200, &left);
			offline = r == -EHOSTDOWN;
		}
		if (cache_sync_render(c))
			log_warn("cache: rendering contacts failed; trying again later");
		if (!cache_stopping(c)) /* requests given up at the exit: no news */
			cache_set_online(c, !offline);
		pthread_mutex_lock(&c->lock);
		c->passes++;
		pthread_cond_broadcast(&c->pass);
		pthread_mutex_unlock(&c->lock);

		/* Sleep until something is due, or until woken. */
		now = cache_now_ms();
		if (offline) {
			wait = backoff;
			backoff = backoff < 30000 ? backoff * 2 : 30000;
		} else {
			backoff = 1000;
			wait = want_round     ? retry_at - now
			       : poll_ms >= 0 ? next_round - now
					      : 3600000;
			if (next_out && next_out - now < wait)
				wait = next_out - now;
			/* A rename that waited for a writer is made once the
			 * name is let go (cache_sync_render). */
			if ((next_names = cache_names_next_release(c)) && next_names - now < wait)
				wait = next_names - now;
			if (left || again)
				wait = 0;
		}
		if (wait <= 0)
			continue;
		pthread_mutex_lock(&c->lock);
		if (!c->asked && !c->kicked && !c->lists && !c->stop)
			wait_locked(c, now + wait, 0);
		/* Kicked: a change was committed through the mount. Changes
		 * come in runs (a save is a few operations, rsync or cp of a
		 * folder thousands), so a pass a kick starts waits until
		 * PASS_GAP_MS after the last one ended: one pass serves the
		 * run, and the writers do not meet the sync thread at each
		 * step. A lone save is sent at once, and so is a pass someone
		 * waits on. */
		if (c->kicked && !c->hurried && !c->asked && !c->lists && !c->stop)
			wait_locked(c, now + PASS_GAP_MS, 1);
		pthread_mutex_unlock(&c->lock);
	}
	return NULL;
}

int cache_start(struct cache *c)
{
	if (!c->g)
		return -EINVAL;
	if (c->started)
		return 0;
	pause_resume(c);
	graph_on_pause(c->g, pause_set, c);
	if (pthread_create(&c->thread, NULL, sync_main, c)) {
		graph_on_pause(c->g, NULL, NULL);
		return -EAGAIN;
	}
	c->started = 1;
	return 0;
}

/* ---- names held by writers ------------------------------------------------------ */

/* The hold of ino, or NULL. Under c->lock. Entries that lapsed go first. */
static struct name_hold *hold_find(struct cache *c, uint64_t ino)
{
	int64_t now = cache_now_ms();
	struct name_hold *found = NULL;
	size_t k = 0;

	for (size_t i = 0; i < c->nholds; i++) {
		struct name_hold *h = &c->holds[i];

		if (!h->writers && h->until_ms <= now)
			continue; /* lapsed */
		c->holds[k] = *h;
		if (c->holds[k].ino == ino)
			found = &c->holds[k];
		k++;
	}
	c->nholds = k;
	return found;
}

int cache_name_hold(struct cache *c, uint64_t ino)
{
	struct name_hold *h;
	int r = 0;

	pthread_mutex_lock(&c->lock);
	if ((h = hold_find(c, ino)) != NULL) {
		h->writers++;
	} else if (c->nholds == c->holds_size &&
		   !(h = realloc(c->holds, (c->holds_size ? c->holds_size * 2 : 16) *
						   sizeof(*c->holds)))) {
		r = -ENOMEM;
	} else {
		if (c->nholds == c->holds_size) {
			c->holds = h;
			c->holds_size = c->holds_size ? c->holds_size * 2 : 16;
		}
		c->holds[c->nholds++] = (struct name_hold){.ino = ino, .writers = 1};
	}
	pthread_mutex_unlock(&c->lock);
	return r;
}

void cache_name_release(struct cache *c, uint64_t ino)
{
	struct name_hold *h;

	pthread_mutex_lock(&c->lock);
	h = hold_find(c, ino);
	if (h && h->writers && !--h->writers) {
		h->until_ms = cache_now_ms() + CACHE_NAME_GRACE_MS;
		/* The sync thread sleeps until the earliest release it knew
		 * of: wake it to learn of this one (kicked already, it
		 * learns of it in the pass it is about to make). */
		if (!c->kicked) {
			c->kicked = 1;
			pthread_cond_signal(&c->wake);
		}
	}
	pthread_mutex_unlock(&c->lock);
}

int cache_names_held(struct cache *c, uint64_t ino)
{
	int held;

	pthread_mutex_lock(&c->lock);
	held = hold_find(c, ino) != NULL;
	pthread_mutex_unlock(&c->lock);
	return held;
}

int64_t cache_names_next_release(struct cache *c)
{
	int64_t next = 0;

	pthread_mutex_lock(&c->lock);
	(void)hold_find(c, 0);
	for (size_t i = 0; i < c->nholds; i++)
		if (!c->holds[i].writers && (!next || c->holds[i].until_ms < next))
			next = c->holds[i].until_ms;
	pthread_mutex_unlock(&c->lock);
	return next;
}

void cache_ask_list(struct cache *c, unsigned lists)
{
	pthread_mutex_lock(&c->lock);
	if ((c->lists & lists) != lists) {
		c->lists |= lists;
		pthread_cond_signal(&c->wake);
	}
	pthread_mutex_unlock(&c->lock);
}

void cache_sync_now(struct cache *c)
{
	pthread_mutex_lock(&c->lock);
	c->asked = 1;
	pthread_cond_signal(&c->wake);
	pthread_mutex_unlock(&c->lock);
}

/* ---- waiting and asking ------------------------------------------------------------- */

/* Wait until sql (a count, of arg) is 0; with verdict, stop at the first
 * parked entry verdict_sql (its result, of arg) finds. */
static int wait_until(struct cache *c, int timeout_ms, const char *sql, int64_t arg,
		      const char *verdict_sql, int *verdict)
{
	int64_t deadline = cache_now_ms() + timeout_ms;

	for (;;) {
		int64_t n = 0, parked = 0;
		unsigned passes;
		int r, online;

		pthread_mutex_lock(&c->api_lock);
		r = cache_db_int(c->db, &n, sql, arg ? "i" : "", arg);
		if (r >= 0 && verdict && arg)
			r = cache_db_int(c->db, &parked, verdict_sql, "i", arg);
		pthread_mutex_unlock(&c->api_lock);
		if (r < 0)
			return r;
		if (verdict && parked) {
			*verdict = (int)parked;
			return 0;
		}
		if (n == 0)
			return 0;
		pthread_mutex_lock(&c->lock);
		online = c->online;
		passes = c->passes;
		pthread_mutex_unlock(&c->lock);
		if (!online)
			return -EHOSTDOWN;
		if (cache_now_ms() >= deadline)
			return -ETIMEDOUT;
		pthread_mutex_lock(&c->lock);
		c->kicked = 1; /* the outbox, not a delta round */
		c->hurried = 1;
		pthread_cond_signal(&c->wake);
		pthread_mutex_unlock(&c->lock);
		pthread_mutex_lock(&c->lock);
		while (c->passes == passes && !c->stop) {
			struct timespec ts;
			int64_t left = deadline - cache_now_ms();

			if (left <= 0)
				break;
			if (left > 200)
				left = 200;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += left * 1000000;
			ts.tv_sec += ts.tv_nsec / 1000000000;
			ts.tv_nsec %= 1000000000;
			pthread_cond_timedwait(&c->pass, &c->lock, &ts);
		}
		pthread_mutex_unlock(&c->lock);
	}
}

/* Changes of the category list written and not yet made requests
 * (categories.c) count as pending changes, one a name. */
#define CATEGORY_EDITS_SQL                                                                      \
	"coalesce((SELECT json_array_length(value) FROM meta WHERE key = 'categories_edits'), " \
	"0)"

int cache_drain(struct cache *c, int timeout_ms)
{
	return wait_until(
		c, timeout_ms,
		"SELECT (SELECT count(*) FROM outbox WHERE parked = 0) + " CATEGORY_EDITS_SQL, 0,
		NULL, NULL);
}

int cache_wait_file(struct cache *c, uint64_t ino, int timeout_ms)
{
	struct cache_attr a;
	int64_t cid = 0;
	int verdict = 0, r;

	pthread_mutex_lock(&c->api_lock);
	r = cache_db_int(c->db, &cid, "SELECT coalesce(cid, 0) FROM nodes WHERE ino = ?", "i",
			 (int64_t)ino);
	pthread_mutex_unlock(&c->api_lock);
	if (r < 0)
		return r;
	if (r == 0)
		return cache_getattr(c, ino, &a);
	if (!cid) {
		/* An imported file of cards: its folder's changes. */
		if ((r = cache_getattr(c, ino, &a)) || a.draft != CACHE_IMPORTED)
			return r;
		r = wait_until(c, timeout_ms,
			       "SELECT count(*) FROM outbox WHERE folder = ? AND parked = 0 AND "
			       "op != " OP_DROP_FILE_TEXT,
			       (int64_t)a.parent,
			       "SELECT result FROM outbox WHERE folder = ? AND parked ORDER BY seq "
			       "LIMIT 1",
			       &verdict);
		return r ? r : verdict;
	}
	r = wait_until(c, timeout_ms, "SELECT count(*) FROM outbox WHERE cid = ? AND parked = 0",
		       cid,
		       "SELECT result FROM outbox WHERE cid = ? AND parked ORDER BY seq LIMIT 1",
		       &verdict);
	return r ? r : verdict;
}

int cache_status(struct cache *c, struct cache_status *out)
{
	struct graph_stats gs;
	int64_t pending = 0, parked = 0, contacts = 0, photos = 0;
	int r;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&c->api_lock);
	/* An imported file waiting to go is no change for the server. */
	r = cache_db_int(c->db, &pending,
			 "SELECT (SELECT count(*) FROM outbox WHERE parked = 0 AND op != ?) "
			 "+ " CATEGORY_EDITS_SQL,
			 "i", (int64_t)OP_DROP_FILE);
	if (r >= 0)
		r = cache_db_int(c->db, &parked, "SELECT count(*) FROM outbox WHERE parked", NULL);
	if (r >= 0)
		r = cache_db_int(c->db, &contacts,
				 /* files that show a contact: an index, not a scan */
				 "SELECT count(*) FROM nodes WHERE cid IS NOT NULL", NULL);
	if (r >= 0 && c->cfg.photos)
		r = cache_db_int(c->db, &photos,
				 "SELECT count(*) FROM contacts WHERE photo_state IN (0, 2) AND id "
				 "IS NOT NULL",
				 NULL);
	pthread_mutex_unlock(&c->api_lock);
	if (r < 0)
		return r;
	pthread_mutex_lock(&c->lock);
	out->online = c->online;
	out->synced = c->synced;
	out->last_sync = c->last_sync;
	pthread_mutex_unlock(&c->lock);
	out->pending = (unsigned)pending;
	out->parked = (unsigned)parked;
	out->contacts = (unsigned)contacts;
	out->photos_pending = (unsigned)photos;
	if (c->g) {
		graph_stats(c->g, &gs);
		out->requests = gs.requests;
	}
	return 0;
}

int cache_errors(struct cache *c, unsigned limit, cache_error_fn fn, void *ctx)
{
	sqlite3_stmt *st;
	int r;

	pthread_mutex_lock(&c->api_lock);
	r = cache_db_prepare(
		c->db, &st,
		"SELECT time, what, message FROM (SELECT * FROM errors ORDER BY seq DESC "
		"LIMIT ?) ORDER BY seq",
		"i", (int64_t)limit);
	while (!r && (r = cache_db_step(st)) == 1)
		r = fn((time_t)sqlite3_column_int64(st, 0),
		       (const char *)sqlite3_column_text(st, 1),
		       (const char *)sqlite3_column_text(st, 2), ctx);
	if (st)
		cache_db_release(st);
	pthread_mutex_unlock(&c->api_lock);
	return r;
}
