/*
 * Authentication: where the access token of every request comes from, the
 * device code login, and the token file.
 *
 * Invariants:
 *  - No access token, refresh token or device code is ever logged, at any
 *    level; token responses are parsed, never printed. Buffers that held one
 *    are wiped before they are freed (best effort: not every copy libcurl or
 *    cJSON made).
 *  - The token file <config_dir>/<user or "me">.token is written whole or not
 *    at all (a temporary file in the same directory, fsync, rename) and never
 *    exists with a mode looser than 0600; one that is accessible by group or
 *    others, or not ours, is refused.
 *  - One refresh at a time: auth_lock within the process, and an flock on
 *    the config directory across processes (a mount and an export may share
 *    a token file). The refresh token is read from the file under that lock,
 *    so a token another process has just rotated is the one used.
 *
 * The token file holds {"refresh_token","client_id","tenant","auth_url"}: a
 * refresh token is bound to the client and authority that issued it, so a
 * later mount refreshes with the stored values, whatever it was given.
 */
#include "graph_int.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/*
 * Scopes. offline_access brings the refresh token; Contacts.ReadWrite is the
 * mailbox's own contacts; People.Read the People API; MailboxSettings.
 * ReadWrite the master category list, which categories are read from and
 * added to. No openid/profile: we never read an id token.
 *
 * Contacts.ReadWrite.Shared is what /users/{upn} needs for a mailbox that is
 * not the signed-in person's (shared or delegated folders), but Microsoft
 * accounts cannot consent to it (docs/graph.md, "Signing in"), and asking for
 * it would make their sign-in fail. So it is asked for only when user= names
 * a mailbox, which only work or school accounts can do anyway. The refresh
 * grant asks for the same set as the login did: the token file is per user=,
 * so both see the same g->user.
 */
#define SCOPES_OWN                                                       \
	"offline_access https://graph.microsoft.com/Contacts.ReadWrite " \
	"https://graph.microsoft.com/People.Read "                       \
	"https://graph.microsoft.com/MailboxSettings.ReadWrite"
#define SCOPE_SHARED " https://graph.microsoft.com/Contacts.ReadWrite.Shared"

#define DEVICE_CODE_GRANT "urn:ietf:params:oauth:grant-type:device_code"

#define EARLY_REFRESH_S 60 /* refresh a token with less life than this */
#define TOKEN_CMD_TIMEOUT_S 30
#define TOKEN_CMD_MAX_OUT 16384
#define TOKEN_FILE_MAX 65536
#define SLOW_DOWN_STEP_S 5  /* RFC 8628 §3.5 */
#define POLL_MAX_FAILURES 3 /* unanswered polls in a row before giving up */

/* ---- small helpers ---------------------------------------------------------- */

static void wipe_free(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

static void buf_wipe_release(struct buf *b)
{
	explicit_bzero(b->data, b->size); /* size 0: the shared empty string, untouched */
	buf_release(b);
}

static void response_wipe_release(struct graph_response *r)
{
	buf_wipe_release(&r->body);
}

/* cJSON_Delete, wiping the strings of an object's members first (a token
 * response or the token file). */
static void json_wipe_delete(cJSON *j)
{
	cJSON *item;

	cJSON_ArrayForEach(item, j)
	{
		if (cJSON_IsString(item) && item->valuestring)
			explicit_bzero(item->valuestring, strlen(item->valuestring));
	}
	cJSON_Delete(j);
}

/* A string member of a JSON object, or NULL. */
static const char *json_str(const cJSON *j, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, name);

	return cJSON_IsString(v) && v->valuestring && *v->valuestring ? v->valuestring : NULL;
}

/* A number member (a number, or a string holding one as some servers send),
 * or def. */
static long json_long(const cJSON *j, const char *name, long def)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, name);

	if (cJSON_IsNumber(v))
		return (long)v->valuedouble;
	if (cJSON_IsString(v) && v->valuestring) {
		char *end;
		long n = strtol(v->valuestring, &end, 10);

		if (end != v->valuestring && !*end)
			return n;
	}
	return def;
}

/* Whether s can go into an Authorization header: printable ASCII without
 * spaces (a JWT or an opaque token), so nothing can be smuggled into the
 * request as another header. */
static int token_ok(const char *s)
{
	size_t n = 0;

	if (!s)
		return 0;
	for (; s[n]; n++)
		if ((unsigned char)s[n] < 0x21 || (unsigned char)s[n] > 0x7e)
			return 0;
	return n > 0 && n < 7000;
}

/* Append s percent-encoded: everything but RFC 3986's unreserved
 * characters, so it is safe in a path segment and in a form value. */
static int escape_add(struct buf *b, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		int r;

		if (isalnum(*p) || strchr("-._~", *p))
			r = buf_addch(b, (char)*p);
		else
			r = buf_printf(b, "%%%c%c", hex[*p >> 4], hex[*p & 15]);
		if (r)
			return r;
	}
	return 0;
}

/* application/x-www-form-urlencoded: append "[&]name=value". */
static int form_add(struct buf *b, const char *name, const char *value)
{
	int r;

	if (b->len && (r = buf_addch(b, '&')))
		return r;
	if ((r = buf_addstr(b, name)) || (r = buf_addch(b, '=')))
		return r;
	return escape_add(b, value);
}

/* "<auth_url>/<tenant>/oauth2/v2.0/<what>", malloc'd, or NULL. */
static char *identity_url(const char *auth_url, const char *tenant, const char *what)
{
	struct buf b;

	buf_init(&b, 8192);
	if (buf_printf(&b, "%s/", auth_url) || escape_add(&b, tenant) ||
	    buf_printf(&b, "/oauth2/v2.0/%s", what)) {
		buf_release(&b);
		return NULL;
	}
	return buf_detach(&b, NULL);
}

static const char *scopes(const struct graph *g)
{
	return g->user ? SCOPES_OWN SCOPE_SHARED : SCOPES_OWN;
}

static long mono_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long)t.tv_sec;
}

static void sleep_s(long s)
{
	struct timespec t = {s, 0};

	while (nanosleep(&t, &t) == -1 && errno == EINTR)
		;
}

/* Replace the cached access token (taking ownership of token). Called with
 * auth_lock held. */
static void cache_token(struct graph *g, char *token, long expires_in)
{
	wipe_free(g->access_token);
	g->access_token = token;
	g->access_expires = token && expires_in > 0 ? time(NULL) + expires_in : 0;
}

/* ---- the token file ------------------------------------------------------------ */

/* What the token file holds; all malloc'd or NULL. */
struct stored {
	char *refresh_token;
	char *client_id;
	char *tenant;
	char *auth_url;
};

static void stored_release(struct stored *s)
{
	wipe_free(s->refresh_token);
	free(s->client_id);
	free(s->tenant);
	free(s->auth_url);
	memset(s, 0, sizeof(*s));
}

char *graph_token_path(const struct graph *g)
{
	static const char hex[] = "0123456789ABCDEF";
	struct buf b;
	int r;

	buf_init(&b, 8192);
	/* graph_new always sets config_dir (an absolute path unless the
	 * caller gave a relative one). */
	r = buf_printf(&b, "%s/", g->config_dir);
	if (!r && !g->user)
		r = buf_addstr(&b, "me");
	/* UPNs are case-insensitive: one file per mailbox, and nothing in a
	 * UPN can leave the directory ('/' and a leading '.' are escaped). */
	for (const char *p = g->user; !r && p && *p; p++) {
		unsigned char c = (unsigned char)*p;

		if ((isalnum(c) || strchr("@._-+", c)) && !(c == '.' && p == g->user))
			r = buf_addch(&b, (char)tolower(c));
		else
			r = buf_printf(&b, "%%%c%c", hex[c >> 4], hex[c & 15]);
	}
	if (!r)
		r = buf_addstr(&b, ".token");
	if (r) {
		buf_release(&b);
		return NULL;
	}
	return buf_detach(&b, NULL);
}

/* The directory part of path, malloc'd. */
static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}

/* mkdir -p, creating missing directories with mode 0700. */
static int make_dirs(const char *dir)
{
	char *p = strdup(dir);
	int r = 0;

	if (!p)
		return -ENOMEM;
	for (char *s = p + 1;; s++) {
		if (*s == '/' || !*s) {
			char c = *s;

			*s = '\0';
			if (mkdir(p, 0700) && errno != EEXIST) {
				r = -errno;
				log_err("cannot create %s: %s", p, strerror(errno));
				goto out;
			}
			*s = c;
			if (!c)
				break;
		}
	}
out:
	free(p);
	return r;
}

/* Take the cross-process lock of the config directory: an fd to close, or
 * -errno (-ENOENT when the directory does not exist). */
static int dir_lock(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	while (flock(fd, LOCK_EX) == -1) {
		if (errno != EINTR) {
			int e = -errno;

			close(fd);
			return e;
		}
	}
	return fd;
}

static void dir_unlock(int fd)
{
	if (fd >= 0)
		close(fd); /* releases the flock */
}

/*
 * Read the token file into *s. -ENOENT when there is none; -EACCES (logged)
 * when it is not a regular file of ours with mode 0600 or stricter; -EPROTO
 * (logged) when it is damaged.
 */
static int token_file_read(const char *path, struct stored *s)
{
	struct buf b;
	struct stat st;
	cJSON *j = NULL;
	int fd, r = 0;

	memset(s, 0, sizeof(*s));
	buf_init(&b, TOKEN_FILE_MAX);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
	if (fd < 0) {
		r = -errno;
		if (r == -ELOOP) {
			log_err("refusing the token file %s: it is a symbolic link", path);
			r = -EACCES;
		} else if (r != -ENOENT) {
			log_err("cannot open the token file %s: %s", path, strerror(-r));
		}
		goto out;
	}
	if (fstat(fd, &st)) {
		r = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		log_err("refusing the token file %s: not a regular file", path);
		r = -EACCES;
		goto out;
	}
	if (st.st_uid != geteuid()) {
		log_err("refusing the token file %s: owned by uid %u, not by us (uid %u)", path,
			(unsigned)st.st_uid, (unsigned)geteuid());
		r = -EACCES;
		goto out;
	}
	if (st.st_mode & 077) {
		log_err("refusing the token file %s: mode %04o lets others read or change it; "
			"run contactfs login again",
			path, (unsigned)(st.st_mode & 07777));
		r = -EACCES;
		goto out;
	}
	for (;;) {
		char chunk[4096];
		ssize_t n = read(fd, chunk, sizeof(chunk));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			log_err("cannot read the token file %s: %s", path, strerror(-r));
			explicit_bzero(chunk, sizeof(chunk));
			goto out;
		}
		if (n == 0)
			break;
		r = buf_add(&b, chunk, (size_t)n);
		explicit_bzero(chunk, sizeof(chunk));
		if (r) {
			log_err("refusing the token file %s: larger than %d bytes", path,
				TOKEN_FILE_MAX);
			r = -EPROTO;
			goto out;
		}
	}
	j = cJSON_ParseWithLength(b.data, b.len);
	if (!json_str(j, "refresh_token") || !token_ok(json_str(j, "refresh_token"))) {
		log_err("the token file %s is damaged: run contactfs login again", path);
		r = -EPROTO;
		goto out;
	}
	s->refresh_token = strdup(json_str(j, "refresh_token"));
	if (json_str(j, "client_id"))
		s->client_id = strdup(json_str(j, "client_id"));
	if (json_str(j, "tenant"))
		s->tenant = strdup(json_str(j, "tenant"));
	if (json_str(j, "auth_url"))
		s->auth_url = strdup(json_str(j, "auth_url"));
	if (!s->refresh_token || (json_str(j, "client_id") && !s->client_id) ||
	    (json_str(j, "tenant") && !s->tenant) || (json_str(j, "auth_url") && !s->auth_url)) {
		stored_release(s);
		r = -ENOMEM;
	}
out:
	json_wipe_delete(j);
	buf_wipe_release(&b);
	if (fd >= 0)
		close(fd);
	return r;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t k = write(fd, p, n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/*
 * Replace the token file with s, atomically: a new file created 0600 with
 * O_EXCL in the same directory, written, fsync'd and renamed over the old
 * one, then the directory fsync'd. The directory must exist. Errors logged.
 */
static int token_file_write(const char *path, const struct stored *s)
{
	static unsigned counter;
	cJSON *j = cJSON_CreateObject();
	char *text = NULL, *dir = NULL;
	struct buf tmp;
	int fd = -1, dfd = -1, r = -ENOMEM;

	buf_init(&tmp, 8192);
	if (!j || !cJSON_AddStringToObject(j, "refresh_token", s->refresh_token) ||
	    (s->client_id && !cJSON_AddStringToObject(j, "client_id", s->client_id)) ||
	    (s->tenant && !cJSON_AddStringToObject(j, "tenant", s->tenant)) ||
	    (s->auth_url && !cJSON_AddStringToObject(j, "auth_url", s->auth_url)))
		goto out;
	if (!(text = cJSON_Print(j)) || !(dir = dir_of(path)))
		goto out;
	for (int attempt = 0; fd < 0; attempt++) {
		struct timespec t;

		clock_gettime(CLOCK_REALTIME, &t);
		buf_reset(&tmp);
		if ((r = buf_printf(&tmp, "%s.tmp-%ld-%u-%lx", path, (long)getpid(),
				    __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED),
				    (unsigned long)t.tv_nsec)))
			goto out;
		/* O_EXCL: never an existing file, never through a symlink;
		 * 0600 from the first moment (a umask can only narrow it). */
		fd = open(tmp.data, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd < 0 && (errno != EEXIST || attempt >= 100)) {
			r = -errno;
			log_err("cannot create a file in %s: %s", dir, strerror(-r));
			buf_reset(&tmp); /* not ours: nothing to remove */
			goto out;
		}
	}
	if ((r = write_all(fd, text, strlen(text))) || (r = write_all(fd, "\n", 1)) ||
	    (fsync(fd) && (r = -errno))) {
		log_err("cannot write %s: %s", tmp.data, strerror(-r));
		goto out;
	}
	r = close(fd) ? -errno : 0;
	fd = -1;
	if (r || (rename(tmp.data, path) && (r = -errno))) {
		log_err("cannot store the token in %s: %s", path, strerror(-r));
		goto out;
	}
	buf_reset(&tmp); /* renamed: nothing to remove */
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd); /* best effort: the file itself is on disk */
		close(dfd);
	}
	r = 0;
out:
	if (fd >= 0)
		close(fd);
	if (tmp.len)
		unlink(tmp.data);
	buf_release(&tmp);
	wipe_free(text);
	json_wipe_delete(j);
	free(dir);
	return r;
}

/* ---- token_cmd ----------------------------------------------------------------- */

/* Trim whitespace at both ends, in place. */
static char *trim(char *s)
{
	size_t n;

	while (*s && isspace((unsigned char)*s))
		s++;
	n = strlen(s);
	while (n && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
	return s;
}

/* Wait for pid until deadline (monotonic seconds), then kill its process
 * group. 0 with *status set, -ETIMEDOUT when it had to be killed, or
 * -errno. */
static int wait_until(pid_t pid, int *status, long deadline)
{
	for (;;) {
		pid_t w = waitpid(pid, status, WNOHANG);

		if (w == pid)
			return 0;
		if (w < 0 && errno != EINTR)
			return -errno;
		if (mono_s() >= deadline) {
			kill(-pid, SIGKILL);
			while (waitpid(pid, status, 0) < 0 && errno == EINTR)
				;
			return -ETIMEDOUT;
		}
		poll(NULL, 0, 50);
	}
}

/*
 * Run token_cmd with /bin/sh -c, in its own process group (so a timeout
 * kills all of it), stdin from /dev/null, stderr inherited, and take what it
 * prints on stdout, trimmed, as the access token (*out, malloc'd). -EACCES
 * (logged with the exit status, never the output) when it fails, prints
 * nothing usable, or runs longer than TOKEN_CMD_TIMEOUT_S.
 */
static int run_token_cmd(const char *cmd, char **out)
{
	char *argv[] = {"sh", "-c", (char *)cmd, NULL};
	long deadline = mono_s() + TOKEN_CMD_TIMEOUT_S;
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t mask;
	struct buf b;
	pid_t pid;
	int pipefd[2];
	int status = 0, too_long = 0, exited = 0, r;

	*out = NULL;
	buf_init(&b, TOKEN_CMD_MAX_OUT);
	if (pipe2(pipefd, O_CLOEXEC | O_NONBLOCK))
		return -errno;
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&attr);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
						POSIX_SPAWN_SETSIGDEF);
	posix_spawnattr_setpgroup(&attr, 0);
	sigemptyset(&mask);
	posix_spawnattr_setsigmask(&attr, &mask);
	sigaddset(&mask, SIGPIPE); /* ignored by us, maybe; not by it */
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGHUP);
	posix_spawnattr_setsigdefault(&attr, &mask);
	r = posix_spawn(&pid, "/bin/sh", &fa, &attr, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	close(pipefd[1]);
	if (r) {
		log_err("cannot run token_cmd: %s", strerror(r));
		r = -EACCES;
		goto out;
	}

	/* Read until EOF, or until it has exited and the pipe is drained (a
	 * daemon it started may hold the pipe open), or the deadline. */
	for (;;) {
		struct pollfd p = {pipefd[0], POLLIN, 0};
		char chunk[1024];
		ssize_t n = read(pipefd[0], chunk, sizeof(chunk));

		if (n > 0) {
			if (buf_add(&b, chunk, (size_t)n))
				too_long = 1; /* drain on; refuse at the end */
			explicit_bzero(chunk, sizeof(chunk));
			continue;
		}
		if (n == 0 || (errno != EAGAIN && errno != EINTR))
			break;
		if (waitpid(pid, &status, WNOHANG) == pid) {
			/* Exited: one last read for what it wrote just before. */
			while ((n = read(pipefd[0], chunk, sizeof(chunk))) > 0)
				if (buf_add(&b, chunk, (size_t)n))
					too_long = 1;
			explicit_bzero(chunk, sizeof(chunk));
			exited = 1;
			break;
		}
		if (mono_s() >= deadline)
			break;
		poll(&p, 1, 100);
	}
	if (!exited && (r = wait_until(pid, &status, deadline))) {
		if (r == -ETIMEDOUT)
			log_err("token_cmd did not finish within %d s: killed",
				TOKEN_CMD_TIMEOUT_S);
		else
			log_err("token_cmd: cannot wait for it: %s", strerror(-r));
		r = -EACCES;
		goto out;
	}
	if (WIFSIGNALED(status)) {
		log_err("token_cmd was killed by signal %d", WTERMSIG(status));
		r = -EACCES;
	} else if (!WIFEXITED(status) || WEXITSTATUS(status)) {
		log_err("token_cmd exited with status %d", WEXITSTATUS(status));
		r = -EACCES;
	} else if (too_long) {
		log_err("token_cmd printed more than %d bytes: not an access token",
			TOKEN_CMD_MAX_OUT);
		r = -EACCES;
	} else if (!token_ok(trim(b.data))) {
		log_err("token_cmd printed %s, not an access token",
			b.len ? "something else" : "nothing");
		r = -EACCES;
	} else if (!(*out = strdup(trim(b.data)))) {
		r = -ENOMEM;
	}
out:
	close(pipefd[0]);
	buf_wipe_release(&b);
	return r;
}

/* ---- the refresh grant ------------------------------------------------------------- */

static void not_signed_in(const struct graph *g)
{
	static int said;

	if (!__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED))
		log_err("not signed in: run contactfs login --client-id %s%s%s",
			g->client_id ? g->client_id : "ID", g->user ? " -o user=" : "",
			g->user ? g->user : "");
}

/*
 * Get a new access token with the stored refresh token and cache it; store
 * the rotated refresh token. Called with auth_lock held. -EACCES (logged)
 * when not signed in or the refresh token was refused; -EIO when the
 * identity endpoint gave no usable answer.
 */
static int refresh(struct graph *g)
{
	struct stored st = {0};
	struct graph_response resp;
	struct buf form;
	cJSON *j = NULL;
	char *path = graph_token_path(g), *dir = NULL, *url = NULL, *token = NULL;
	const char *client_id, *tenant, *auth_url, *rotated;
	int lock = -1, r;

	graph_response_init(&resp);
	buf_init(&form, 65536);
	if (!path || !(dir = dir_of(path))) {
		r = -ENOMEM;
		goto out;
	}
	lock = dir_lock(dir);
	if (lock == -ENOENT) {
		not_signed_in(g);
		r = -EACCES;
		goto out;
	}
	if (lock < 0) {
		log_err("cannot lock %s: %s", dir, strerror(-lock));
		r = -EACCES;
		goto out;
	}
	r = token_file_read(path, &st);
	if (r == -ENOENT)
		not_signed_in(g);
	if (r) {
		r = r == -ENOMEM ? r : -EACCES;
		goto out;
	}
	client_id = st.client_id ? st.client_id : g->client_id;
	tenant = st.tenant ? st.tenant : g->tenant;
	auth_url = st.auth_url ? st.auth_url : g->auth_url;
	if (!client_id) {
		log_err("the token file %s names no client id: run contactfs login --client-id ID",
			path);
		r = -EACCES;
		goto out;
	}
	if (g->client_id && strcmp(g->client_id, client_id))
		log_warn("using client id %s from %s (the refresh token belongs to it), not %s",
			 client_id, path, g->client_id);
	url = identity_url(auth_url, tenant, "token");
	if (!url || (r = form_add(&form, "grant_type", "refresh_token")) ||
	    (r = form_add(&form, "client_id", client_id)) ||
	    (r = form_add(&form, "refresh_token", st.refresh_token)) ||
	    (r = form_add(&form, "scope", scopes(g)))) {
		r = -ENOMEM;
		goto out;
	}
	log_debug("refreshing the access token at %s", url);
	r = graph_http_form(g, url, form.data, &resp);
	if (r == -EINVAL) {
		log_err("refusing the identity endpoint %s from %s: only https://, or http:// "
			"to a loopback address",
			auth_url, path);
		r = -EACCES;
		goto out;
	}
	if (r) {
		log_err("cannot refresh the access token: %s: %s", auth_url, strerror(-r));
		r = r == -ENOMEM ? r : -EIO;
		goto out;
	}
	if (resp.status != 200) {
		if (resp.status >= 500 || !strcmp(resp.code, "temporarily_unavailable")) {
			log_err("cannot refresh the access token: %s answered %ld %s", auth_url,
				resp.status, resp.code);
			r = -EIO;
		} else if (!strcmp(resp.code, "invalid_grant")) {
			log_err("the stored refresh token was refused (invalid_grant): "
				"run contactfs login --client-id %s again",
				client_id);
			r = -EACCES;
		} else {
			log_err("cannot refresh the access token: %s answered %ld %s", auth_url,
				resp.status, resp.code[0] ? resp.code : "(no error code)");
			r = -EACCES;
		}
		goto out;
	}
	j = cJSON_ParseWithLength(resp.body.data, resp.body.len);
	if (!token_ok(json_str(j, "access_token"))) {
		log_err("cannot refresh the access token: %s answered 200 without one", auth_url);
		r = -EIO;
		goto out;
	}
	if (!(token = strdup(json_str(j, "access_token")))) {
		r = -ENOMEM;
		goto out;
	}
	cache_token(g, token, json_long(j, "expires_in", 0));
	/* Rotated: keep the new one, so the next refresh still works. The
	 * access token is good either way; a failed write is logged. */
	rotated = json_str(j, "refresh_token");
	if (rotated && token_ok(rotated) && strcmp(rotated, st.refresh_token)) {
		char *old = st.refresh_token;

		st.refresh_token = (char *)rotated;
		if (token_file_write(path, &st))
			log_err("the new refresh token could not be stored; the next refresh may "
				"fail");
		st.refresh_token = old;
	}
	r = 0;
out:
	dir_unlock(lock);
	json_wipe_delete(j);
	response_wipe_release(&resp);
	buf_wipe_release(&form);
	stored_release(&st);
	free(url);
	free(dir);
	free(path);
	return r;
}

/* ---- the Authorization header -------------------------------------------------------- */

int graph_auth_header(struct graph *g, int force_refresh, char *out, size_t size)
{
	int n, r = 0;

	pthread_mutex_lock(&g->auth_lock);
	if (force_refresh || (g->access_token && g->access_expires &&
			      time(NULL) + EARLY_REFRESH_S >= g->access_expires))
		cache_token(g, NULL, 0);
	if (!g->access_token) {
		if (g->token_cmd) {
			char *token;

			/* No expiry known: kept until a 401 forces a new one. */
			if (!(r = run_token_cmd(g->token_cmd, &token)))
				cache_token(g, token, 0);
		} else {
			r = refresh(g);
		}
		if (r)
			goto out;
	}
	n = snprintf(out, size, "Authorization: Bearer %s", g->access_token);
	if (n < 0 || (size_t)n >= size) {
		explicit_bzero(out, size);
		r = -E2BIG;
	}
out:
	pthread_mutex_unlock(&g->auth_lock);
	return r;
}

void graph_auth_release(struct graph *g)
{
	cache_token(g, NULL, 0);
}

/* ---- login and logout ----------------------------------------------------------------- */

/* Store a new refresh token for g (creating config_dir 0700) under the
 * cross-process lock. */
static int store_login(struct graph *g, const char *refresh_token, char **path_out)
{
	struct stored st = {(char *)refresh_token, g->client_id, g->tenant, g->auth_url};
	char *path = graph_token_path(g), *dir = NULL;
	int lock = -1, r;

	if (!path || !(dir = dir_of(path))) {
		r = -ENOMEM;
		goto out;
	}
	if ((r = make_dirs(dir)))
		goto out;
	lock = dir_lock(dir);
	if (lock < 0) {
		r = lock;
		log_err("cannot lock %s: %s", dir, strerror(-r));
		goto out;
	}
	r = token_file_write(path, &st);
out:
	dir_unlock(lock);
	free(dir);
	if (!r && path_out) {
		*path_out = path;
		path = NULL;
	}
	free(path);
	return r;
}

/* Network failures of the login, as one errno: -EHOSTUNREACH (the identity
 * endpoint did not answer), or -ENOMEM. */
static int unreachable(struct graph *g, int r)
{
	if (r == -ENOMEM)
		return r;
	log_err("cannot reach the identity endpoint %s: %s", g->auth_url, strerror(-r));
	return -EHOSTUNREACH;
}

/* The device code request (docs/graph.md): 0 with *dc the answer, which
 * holds a device code, a user code and a verification URI; or -errno
 * (logged). *dc may be set on failure too; the caller frees it. */
static int login_request(struct graph *g, const char *dc_url, struct buf *form,
			 struct graph_response *resp, cJSON **dc)
{
	int r;

	if (form_add(form, "client_id", g->client_id) || form_add(form, "scope", scopes(g)))
		return -ENOMEM;
	r = graph_http_form(g, dc_url, form->data, resp);
	if (r == -EINVAL) {
		log_err("refusing %s: only https://, or http:// to a loopback address", dc_url);
		return r;
	}
	if (r || resp->status >= 500)
		return unreachable(g, r ? r : -EIO);
	*dc = cJSON_ParseWithLength(resp->body.data, resp->body.len);
	if (resp->status != 200) {
		/* This answer holds no secret (we sent none): its description
		 * is what tells a person their app registration is wrong. */
		const char *desc = json_str(*dc, "error_description");

		log_err("the identity endpoint refused the sign-in: %ld %s%s%.*s", resp->status,
			resp->code[0] ? resp->code : "(no error code)", desc ? ": " : "",
			desc ? (int)strcspn(desc, "\r\n") : 0, desc ? desc : "");
		return -EIO;
	}
	if (!json_str(*dc, "device_code") || !json_str(*dc, "user_code") ||
	    !json_str(*dc, "verification_uri")) {
		log_err("the identity endpoint answered the device code request without a code");
		return -EPROTO;
	}
	return 0;
}

/* The token endpoint's final answer to a poll, other than the tokens: the
 * person declined, the code expired, or another error (logged). */
static int login_refused(struct graph *g, const struct graph_response *resp)
{
	if (!strcmp(resp->code, "authorization_declined")) {
		log_err("the sign-in was declined");
		return -EACCES;
	}
	if (!strcmp(resp->code, "expired_token") || !strcmp(resp->code, "bad_verification_code")) {
		log_err("the code expired before the sign-in was completed (%s)", resp->code);
		return -ETIMEDOUT;
	}
	log_err("the sign-in failed: %s answered %ld %s", g->auth_url, resp->status,
		resp->code[0] ? resp->code : "(no error code)");
	return -EIO;
}

/*
 * Poll the token endpoint every interval seconds (slower when it says
 * slow_down) until the person has signed in: 0 with the answer in *resp.
 * -ETIMEDOUT when the code expires (at deadline, on mono_s's clock),
 * -EHOSTUNREACH after POLL_MAX_FAILURES failed polls in a row, or what
 * login_refused says.
 */
static int login_poll(struct graph *g, const char *tok_url, const char *device_code, long interval,
		      long deadline, struct buf *form, struct graph_response *resp)
{
	int failures = 0, r;

	for (;;) {
		sleep_s(interval);
		if (mono_s() >= deadline) {
			log_err("the code expired before the sign-in was completed");
			return -ETIMEDOUT;
		}
		buf_wipe_release(form);
		if (form_add(form, "grant_type", DEVICE_CODE_GRANT) ||
		    form_add(form, "client_id", g->client_id) ||
		    form_add(form, "device_code", device_code))
			return -ENOMEM;
		r = graph_http_form(g, tok_url, form->data, resp);
		if (r || resp->status >= 500 || !strcmp(resp->code, "temporarily_unavailable")) {
			if (r == -ENOMEM)
				return r;
			if (++failures >= POLL_MAX_FAILURES)
				return unreachable(g, r ? r : -EIO);
			log_warn("polling for the sign-in: %s %s; trying again", g->auth_url,
				 r ? strerror(-r) : "did not answer");
			continue;
		}
		failures = 0;
		if (resp->status == 200)
			return 0;
		if (!strcmp(resp->code, "authorization_pending"))
			continue;
		if (!strcmp(resp->code, "slow_down")) {
			interval += SLOW_DOWN_STEP_S;
			log_debug("polling for the sign-in: slow_down, now every %ld s", interval);
			continue;
		}
		return login_refused(g, resp);
	}
}

/* The sign-in answer (resp): its refresh token stored (store_login), its
 * access token cached for g. -EPROTO when it lacks either. */
static int login_store(struct graph *g, const struct graph_response *resp)
{
	cJSON *tok = cJSON_ParseWithLength(resp->body.data, resp->body.len);
	char *access;
	int r;

	if (!token_ok(json_str(tok, "access_token"))) {
		log_err("the sign-in answer holds no access token");
		r = -EPROTO;
		goto out;
	}
	if (!token_ok(json_str(tok, "refresh_token"))) {
		log_err("the sign-in answer holds no refresh token (was offline_access granted?)");
		r = -EPROTO;
		goto out;
	}
	if ((r = store_login(g, json_str(tok, "refresh_token"), NULL)))
		goto out;
	if (!(access = strdup(json_str(tok, "access_token")))) {
		r = -ENOMEM;
		goto out;
	}
	pthread_mutex_lock(&g->auth_lock);
	cache_token(g, access, json_long(tok, "expires_in", 0));
	pthread_mutex_unlock(&g->auth_lock);
out:
	json_wipe_delete(tok);
	return r;
}

/*
 * Beyond graph.h: -EINVAL without a client id; -EHOSTUNREACH when the
 * identity endpoint could not be reached (no answer, or a 5xx, also after
 * POLL_MAX_FAILURES polls in a row); -EIO for another OAuth error (its code
 * logged, never the body); -EPROTO when the answer had no refresh token; the
 * errno of the failed write when the token file could not be stored.
 */
int graph_login(struct graph *g,
		void (*show)(const char *url, const char *code, const char *message, void *ctx),
		void *ctx)
{
	struct graph_response resp;
	struct buf form;
	cJSON *dc = NULL;
	char *dc_url = NULL, *tok_url = NULL;
	long interval, deadline;
	int r;

	graph_response_init(&resp);
	buf_init(&form, 65536);
	if (!g->client_id) {
		log_err("login needs the client id of your app registration (--client-id)");
		r = -EINVAL;
		goto out;
	}
	dc_url = identity_url(g->auth_url, g->tenant, "devicecode");
	tok_url = identity_url(g->auth_url, g->tenant, "token");
	if (!dc_url || !tok_url) {
		r = -ENOMEM;
		goto out;
	}
	if ((r = login_request(g, dc_url, &form, &resp, &dc)))
		goto out;
	interval = json_long(dc, "interval", 5);
	if (interval < 1)
		interval = 5;
	deadline = mono_s() + json_long(dc, "expires_in", 900);
	show(json_str(dc, "verification_uri"), json_str(dc, "user_code"), json_str(dc, "message"),
	     ctx);
	r = login_poll(g, tok_url, json_str(dc, "device_code"), interval, deadline, &form, &resp);
	if (!r)
		r = login_store(g, &resp);
out:
	json_wipe_delete(dc);
	response_wipe_release(&resp);
	buf_wipe_release(&form);
	free(dc_url);
	free(tok_url);
	return r;
}

int graph_logout(struct graph *g)
{
	char *path = graph_token_path(g), *dir = NULL;
	int lock = -1, r = 0;

	pthread_mutex_lock(&g->auth_lock);
	cache_token(g, NULL, 0);
	pthread_mutex_unlock(&g->auth_lock);
	if (!path || !(dir = dir_of(path))) {
		r = -ENOMEM;
		goto out;
	}
	lock = dir_lock(dir);
	if (lock == -ENOENT)
		goto out; /* no directory: nothing stored */
	if (lock < 0) {
		r = lock;
		log_err("cannot lock %s: %s", dir, strerror(-r));
		goto out;
	}
	if (unlink(path) && errno != ENOENT) {
		r = -errno;
		log_err("cannot remove the token file %s: %s", path, strerror(-r));
	}
out:
	dir_unlock(lock);
	free(dir);
	free(path);
	return r;
}
