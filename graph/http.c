/*
 * The request engine: libcurl with a shared connection cache, a per-mailbox
 * scheduler (slots, Retry-After pauses, backoff), and the one place where
 * HTTP outcomes become errno.
 */
#include "graph_int.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define BODY_CAP ((size_t)64 << 20)
#define BACKOFF_FIRST_MS 250
#define BACKOFF_MAX_MS 30000

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

static void curl_init(void)
{
	curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- time ------------------------------------------------------------------- */

static struct timespec now_mono(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t;
}

static struct timespec ts_add_ms(struct timespec t, long ms)
{
	t.tv_sec += ms / 1000;
	t.tv_nsec += (ms % 1000) * 1000000L;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	return t;
}

static int ts_before(struct timespec a, struct timespec b)
{
	return a.tv_sec < b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec < b.tv_nsec);
}

/* ---- URLs --------------------------------------------------------------------- */

/* Whether url is https://, or http:// to a loopback host. */
static int url_allowed(const char *url)
{
	const char *host, *end;
	size_t n;

	if (!strncasecmp(url, "https://", 8))
		return 1;
	if (strncasecmp(url, "http://", 7) != 0)
		return 0;
	host = url + 7;
	end = host + strcspn(host, ":/?#");
	n = (size_t)(end - host);
	if (n == 9 && !strncasecmp(host, "localhost", 9))
		return 1;
	if (n == 5 && !strncmp(host, "[::1]", 5))
		return 1;
	return n >= 4 && !strncmp(host, "127.", 4) && strspn(host, "0123456789.") == n;
}

static char *dup_trimmed(const char *s)
{
	char *d = strdup(s);
	size_t n;

	if (!d)
		return NULL;
	n = strlen(d);
	while (n && d[n - 1] == '/')
		d[--n] = '\0';
	return d;
}

/* The beta service root of a trimmed graph_url: the same URL with its final
 * "/v1.0" as "/beta" (NULL with *err 0 when it has none, or -ENOMEM). The
 * two roots are siblings (the beta reference's examples are the v1.0 paths
 * under https://graph.microsoft.com/beta), so a graph_url that points
 * elsewhere (a proxy with its own layout) has no beta root we could guess. */
static char *beta_root(const char *graph_url, int *err)
{
	static const char v1[] = "/v1.0";
	size_t n = strlen(graph_url), k = sizeof(v1) - 1;
	struct buf b;

	*err = 0;
	if (n < k || strcmp(graph_url + n - k, v1) != 0)
		return NULL;
	buf_init(&b, n + 8);
	if ((*err = buf_printf(&b, "%.*s/beta", (int)(n - k), graph_url))) {
		buf_release(&b);
		return NULL;
	}
	return buf_detach(&b, NULL);
}

/* "/users/<upn>" with the UPN percent-encoded, or "/me". */
static char *mailbox_path(const char *user)
{
	static const char hex[] = "0123456789ABCDEF";
	struct buf b;

	buf_init(&b, 4096);
	if (!user || !*user)
		return buf_addstr(&b, "/me") ? NULL : buf_detach(&b, NULL);
	if (buf_addstr(&b, "/users/"))
		goto fail;
	for (const unsigned char *p = (const unsigned char *)user; *p; p++) {
		int r;

		if (isalnum(*p) || strchr("@.-_~", *p))
			r = buf_addch(&b, (char)*p);
		else
			r = buf_printf(&b, "%%%c%c", hex[*p >> 4], hex[*p & 15]);
		if (r)
			goto fail;
	}
	return buf_detach(&b, NULL);
fail:
	buf_release(&b);
	return NULL;
}

/* $XDG_CONFIG_HOME/contactfs or $HOME/.config/contactfs; never a relative
 * path: NULL with *err = -ENOENT when neither is absolute. */
static char *default_config_dir(int *err)
{
	const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
	struct buf b;
	int r;

	buf_init(&b, 4096);
	if (xdg && *xdg == '/') {
		r = buf_printf(&b, "%s/contactfs", xdg);
	} else if (home && *home == '/') {
		r = buf_printf(&b, "%s/.config/contactfs", home);
	} else {
		*err = -ENOENT;
		return NULL;
	}
	if (r) {
		buf_release(&b);
		return NULL;
	}
	return buf_detach(&b, NULL);
}

/* ---- the client ----------------------------------------------------------------- */

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *ctx)
{
	struct graph *g = ctx;

	(void)h;
	(void)access;
	pthread_mutex_lock(&g->share_locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *ctx)
{
	struct graph *g = ctx;

	(void)h;
	pthread_mutex_unlock(&g->share_locks[data]);
}

struct graph *graph_new(const struct graph_config *cfg, int *err)
{
	const char *gurl = cfg->graph_url ? cfg->graph_url : GRAPH_DEFAULT_URL;
	const char *aurl = cfg->auth_url ? cfg->auth_url : GRAPH_DEFAULT_AUTH_URL;
	struct graph *g;
	int e = -ENOMEM, beta_err = 0;

	pthread_once(&curl_once, curl_init);
	if (curl_init_result != CURLE_OK) {
		*err = -EIO;
		return NULL;
	}
	if (!url_allowed(gurl) || !url_allowed(aurl)) {
		log_err("refusing %s: only https://, or http:// to a loopback address",
			url_allowed(gurl) ? aurl : gurl);
		*err = -EINVAL;
		return NULL;
	}
	g = calloc(1, sizeof(*g));
	if (!g)
		goto fail;
	pthread_mutex_init(&g->lock, NULL);
	pthread_cond_init(&g->cond, NULL);
	pthread_mutex_init(&g->auth_lock, NULL);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&g->share_locks[i], NULL);
	g->rng = (unsigned)getpid() ^ (unsigned)now_mono().tv_nsec;
	g->timeout_s = cfg->timeout_s > 0 ? cfg->timeout_s : 60;
	g->max_attempts = cfg->max_attempts > 0 ? cfg->max_attempts : 8;
	g->graph_url = dup_trimmed(gurl);
	g->beta_url = g->graph_url ? beta_root(g->graph_url, &beta_err) : NULL;
	g->auth_url = dup_trimmed(aurl);
	g->tenant = strdup(cfg->tenant ? cfg->tenant : "common");
	g->client_id = cfg->client_id ? strdup(cfg->client_id) : NULL;
	g->user = cfg->user && *cfg->user ? strdup(cfg->user) : NULL;
	g->token_cmd = cfg->token_cmd ? strdup(cfg->token_cmd) : NULL;
	g->config_dir = cfg->config_dir ? strdup(cfg->config_dir) : default_config_dir(&e);
	g->mailbox = mailbox_path(cfg->user);
	g->share = curl_share_init();
	if (!g->graph_url || beta_err || !g->auth_url || !g->tenant ||
	    (cfg->client_id && !g->client_id) || (cfg->user && *cfg->user && !g->user) ||
	    (cfg->token_cmd && !g->token_cmd) || !g->config_dir || !g->mailbox || !g->share)
		goto fail;
	curl_share_setopt(g->share, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(g->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(g->share, CURLSHOPT_USERDATA, g);
	curl_share_setopt(g->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
	curl_share_setopt(g->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(g->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	return g;
fail:
	graph_free(g);
	*err = e;
	return NULL;
}

void graph_free(struct graph *g)
{
	if (!g)
		return;
	if (g->share)
		curl_share_cleanup(g->share);
	graph_auth_release(g);
	free(g->graph_url);
	free(g->beta_url);
	free(g->auth_url);
	free(g->tenant);
	free(g->client_id);
	free(g->user);
	free(g->token_cmd);
	free(g->config_dir);
	free(g->mailbox);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&g->share_locks[i]);
	pthread_mutex_destroy(&g->auth_lock);
	pthread_cond_destroy(&g->cond);
	pthread_mutex_destroy(&g->lock);
	free(g);
}

void graph_stats(struct graph *g, struct graph_stats *out)
{
	pthread_mutex_lock(&g->lock);
	*out = g->stats;
	pthread_mutex_unlock(&g->lock);
}

/* ---- the scheduler ------------------------------------------------------------- */

/* Take n slots, waiting while the mailbox is paused or full; -ECANCELED
 * (and no slot) once graph_cancel asked for it. */
static int slots_take(struct graph *g, int n)
{
	if (n > GRAPH_MAX_IN_FLIGHT)
		n = GRAPH_MAX_IN_FLIGHT;
	pthread_mutex_lock(&g->lock);
	for (;;) {
		struct timespec now = now_mono();

		if (g->cancel) {
			pthread_mutex_unlock(&g->lock);
			return -ECANCELED;
		}
		if (ts_before(now, g->paused_until)) {
			/* Wait on a realtime deadline: convert the remaining
			 * monotonic time. */
			struct timespec left, wake;
			long ms;

			left.tv_sec = g->paused_until.tv_sec - now.tv_sec;
			left.tv_nsec = g->paused_until.tv_nsec - now.tv_nsec;
			ms = left.tv_sec * 1000 + left.tv_nsec / 1000000 + 1;
			clock_gettime(CLOCK_REALTIME, &wake);
			wake = ts_add_ms(wake, ms);
			pthread_cond_timedwait(&g->cond, &g->lock, &wake);
			continue;
		}
		if (g->in_flight + n <= GRAPH_MAX_IN_FLIGHT)
			break;
		pthread_cond_wait(&g->cond, &g->lock);
	}
	g->in_flight += n;
	if (g->in_flight > g->stats.max_in_flight)
		g->stats.max_in_flight = g->in_flight;
	pthread_mutex_unlock(&g->lock);
	return 0;
}

static void slots_give(struct graph *g, int n)
{
	if (n > GRAPH_MAX_IN_FLIGHT)
		n = GRAPH_MAX_IN_FLIGHT;
	pthread_mutex_lock(&g->lock);
	g->in_flight -= n;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
}

/* Pause the whole mailbox for ms milliseconds (never shortening a pause),
 * plus a margin: the server counts the wait from when it answered, a little
 * before we read the answer, and a request that arrives a millisecond early
 * is one it may throttle again. */
#define PAUSE_MARGIN_MS 50

void graph_pause(struct graph *g, long ms)
{
	struct timespec until = ts_add_ms(now_mono(), ms + PAUSE_MARGIN_MS);
	void (*hook)(void *, long) = NULL;
	void *arg = NULL;

	pthread_mutex_lock(&g->lock);
	if (ts_before(g->paused_until, until)) {
		g->paused_until = until;
		hook = g->pause_hook;
		arg = g->pause_arg;
	}
	pthread_mutex_unlock(&g->lock);
	if (hook)
		hook(arg, ms + PAUSE_MARGIN_MS);
}

void graph_on_pause(struct graph *g, void (*hook)(void *arg, long ms), void *arg)
{
	pthread_mutex_lock(&g->lock);
	g->pause_hook = hook;
	g->pause_arg = arg;
	pthread_mutex_unlock(&g->lock);
}

long graph_pause_left_ms(struct graph *g)
{
	struct timespec now = now_mono();
	long ms = 0;

	pthread_mutex_lock(&g->lock);
	if (ts_before(now, g->paused_until))
		ms = (long)(g->paused_until.tv_sec - now.tv_sec) * 1000 +
		     (g->paused_until.tv_nsec - now.tv_nsec) / 1000000 + 1;
	pthread_mutex_unlock(&g->lock);
	return ms;
}

/* Backoff before attempt+1: exponential with jitter in [50%, 100%]. */
static long backoff_ms(struct graph *g, int attempt)
{
	long ms = BACKOFF_FIRST_MS;
	unsigned r;

	for (int i = 0; i < attempt && ms < BACKOFF_MAX_MS; i++)
		ms *= 2;
	if (ms > BACKOFF_MAX_MS)
		ms = BACKOFF_MAX_MS;
	pthread_mutex_lock(&g->lock);
	g->rng = g->rng * 1103515245u + 12345u;
	r = (g->rng >> 16) & 0x7fff;
	pthread_mutex_unlock(&g->lock);
	return ms / 2 + (long)((unsigned long)(ms / 2) * r / 0x7fff);
}

/* Wait ms before a retry; -ECANCELED at once when graph_cancel asks. */
static int backoff_wait(struct graph *g, long ms)
{
	struct timespec wake;
	int r = 0;

	clock_gettime(CLOCK_REALTIME, &wake);
	wake = ts_add_ms(wake, ms);
	pthread_mutex_lock(&g->lock);
	while (!g->cancel && pthread_cond_timedwait(&g->cond, &g->lock, &wake) != ETIMEDOUT)
		;
	if (g->cancel)
		r = -ECANCELED;
	pthread_mutex_unlock(&g->lock);
	return r;
}

void graph_cancel(struct graph *g, int on)
{
	pthread_mutex_lock(&g->lock);
	g->cancel = on;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
}

/* ---- one exchange ----------------------------------------------------------------- */

struct exchange {
	struct graph *g;
	struct graph_response *resp;
	long status;	    /* from the status line, as it arrives */
	double retry_after; /* seconds; < 0: none */
	int held;	    /* not sent: the mailbox was paused meanwhile */
	int scheduled;	    /* a Graph request (not the identity endpoint) */
};

/* Whether the mailbox is paused now. */
static int paused(struct graph *g)
{
	struct timespec now = now_mono();
	int p;

	pthread_mutex_lock(&g->lock);
	p = ts_before(now, g->paused_until);
	pthread_mutex_unlock(&g->lock);
	return p;
}

/*
 * Called by curl once the connection is chosen, just before the request
 * goes out. Another request may have been told to wait (Retry-After) after
 * this one took its slot; then this one is held back too, not sent. The
 * pause is set as soon as the Retry-After header arrives (on_header), before
 * that connection can be reused, so no request leaves during a pause.
 */
static int on_prereq(void *ctx, char *ip, char *local_ip, int port, int local_port)
{
	struct exchange *x = ctx;

	(void)ip;
	(void)local_ip;
	(void)port;
	(void)local_port;
	if (!x->scheduled || !paused(x->g))
		return CURL_PREREQFUNC_OK;
	x->held = 1;
	return CURL_PREREQFUNC_ABORT;
}

static size_t on_body(char *p, size_t size, size_t n, void *ctx)
{
	struct exchange *x = ctx;

	return buf_add(&x->resp->body, p, size * n) ? 0 : size * n;
}

static void header_value(const char *line, size_t n, size_t name_len, char *out, size_t size)
{
	const char *v = line + name_len;
	size_t k = n - name_len;

	while (k && (*v == ' ' || *v == '\t')) {
		v++;
		k--;
	}
	while (k && (v[k - 1] == '\r' || v[k - 1] == '\n' || v[k - 1] == ' '))
		k--;
	if (k >= size)
		k = size - 1;
	memcpy(out, v, k);
	out[k] = '\0';
}

static size_t on_header(char *line, size_t size, size_t n, void *ctx)
{
	struct exchange *x = ctx;
	size_t len = size * n;
	char v[64];

	if (len > 12 && !strncasecmp(line, "Retry-After:", 12)) {
		char *end;
		double s;

		header_value(line, len, 12, v, sizeof(v));
		s = strtod(v, &end);
		if (end != v && s >= 0 && s < 3600) {
			x->retry_after = s;
			/* Pause at once, before this connection can carry
			 * another request (see on_prereq). */
			if (x->scheduled && (x->status == 429 || x->status == 503))
				graph_pause(x->g, (long)(s * 1000 + 0.5));
		}
	} else if (len > 5 && !strncasecmp(line, "ETag:", 5)) {
		header_value(line, len, 5, x->resp->etag, sizeof(x->resp->etag));
	} else if (len > 9 && !strncasecmp(line, "Location:", 9)) {
		header_value(line, len, 9, x->resp->location, sizeof(x->resp->location));
	} else if (len > 13 && !strncasecmp(line, "Content-Type:", 13)) {
		header_value(line, len, 13, x->resp->content_type, sizeof(x->resp->content_type));
	} else if (len >= 5 && !strncmp(line, "HTTP/", 5)) {
		/* A new response (after a 100 Continue): start over. */
		const char *sp = memchr(line, ' ', len);

		x->resp->etag[0] = x->resp->location[0] = x->resp->content_type[0] = '\0';
		x->retry_after = -1;
		x->status = sp ? strtol(sp + 1, NULL, 10) : 0;
	}
	return len;
}

/* curl's debug output, with credentials and bodies kept out of the log. */
static int on_debug(CURL *h, curl_infotype type, char *data, size_t size, void *ctx)
{
	char line[512];
	size_t n;

	(void)h;
	(void)ctx;
	if (type != CURLINFO_TEXT && type != CURLINFO_HEADER_OUT && type != CURLINFO_HEADER_IN)
		return 0; /* bodies: token responses and contacts stay out */
	while (size > 0) {
		const char *nl = memchr(data, '\n', size);
		size_t k = nl ? (size_t)(nl - data) + 1 : size;

		n = k < sizeof(line) - 1 ? k : sizeof(line) - 1;
		memcpy(line, data, n);
		while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			n--;
		line[n] = '\0';
		if (!strncasecmp(line, "Authorization:", 14))
			snprintf(line + 14, sizeof(line) - 14, " [redacted]");
		if (n)
			log_debug("http %s %s",
				  type == CURLINFO_HEADER_OUT  ? ">"
				  : type == CURLINFO_HEADER_IN ? "<"
							       : "*",
				  line);
		data += k;
		size -= k;
	}
	return 0;
}

/* The Graph error code of an error body ({"error":{"code":...}}) or of an
 * OAuth error ({"error":"..."}). */
static void error_code(struct graph_response *resp)
{
	cJSON *j, *e;

	resp->code[0] = '\0';
	if (resp->status < 400 || !resp->body.len)
		return;
	j = cJSON_ParseWithLength(resp->body.data, resp->body.len);
	e = cJSON_GetObjectItemCaseSensitive(j, "error");
	if (cJSON_IsObject(e))
		e = cJSON_GetObjectItemCaseSensitive(e, "code");
	if (cJSON_IsString(e))
		snprintf(resp->code, sizeof(resp->code), "%s", e->valuestring);
	cJSON_Delete(j);
}

static int curl_errno(CURLcode c)
{
	switch (c) {
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return -EHOSTUNREACH;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLE_WRITE_ERROR:
		return -E2BIG; /* the body outgrew its cap */
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CONNECT_ERROR:
		return -EPROTO;
	default:
		return -EIO;
	}
}

/* Whether a failed exchange may simply be tried again: nothing reached the
 * server, or the request is idempotent. */
static int retryable(CURLcode c, int idempotent)
{
	switch (c) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
		return 1;
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_GOT_NOTHING:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_PARTIAL_FILE:
		return idempotent;
	default:
		return 0;
	}
}

/* The body of a request that must not be sent twice, handed to curl
 * through a read callback without a seek callback. */
struct upload {
	const char *data;
	size_t len, off;
};

static size_t on_read(char *out, size_t size, size_t n, void *ctx)
{
	struct upload *u = ctx;
	size_t k = u->len - u->off < size * n ? u->len - u->off : size * n;

	memcpy(out, u->data + u->off, k);
	u->off += k;
	return k;
}

/*
 * One HTTP exchange, no retries. Returns the CURLcode; *retry_after is set
 * from the answer's Retry-After (seconds) or -1.
 *
 * libcurl sends a request again by itself when a reused connection turns
 * out dead, even when the server had received it (a lost answer), as long
 * as it can rewind the body. A request that is not idempotent gets its body
 * through a callback that cannot rewind: curl then fails the exchange
 * (CURLE_SEND_FAIL_REWIND) and the caller decides, e.g. by looking the
 * create up first.
 */
static CURLcode exchange(struct graph *g, const char *method, const char *url,
			 const struct curl_slist *headers, const void *body, size_t len,
			 struct graph_response *resp, int scheduled, int idempotent,
			 double *retry_after, int *held)
{
	struct exchange x = {g, resp, 0, -1, 0, scheduled};
	struct upload up = {body, len, 0};
	CURL *h = curl_easy_init();
	CURLcode c;

	if (!h)
		return CURLE_OUT_OF_MEMORY;
	buf_reset(&resp->body);
	resp->status = 0;
	resp->etag[0] = resp->location[0] = resp->content_type[0] = resp->code[0] = '\0';
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_SHARE, g->share);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https,http");
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, (long)g->timeout_s);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 15L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &x);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &x);
	curl_easy_setopt(h, CURLOPT_PREREQFUNCTION, on_prereq);
	curl_easy_setopt(h, CURLOPT_PREREQDATA, &x);
	curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
	if (body && !idempotent) {
		curl_easy_setopt(h, CURLOPT_POST, 1L);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(h, CURLOPT_READDATA, &up);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	} else if (body) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	} else if (!strcmp(method, "POST") || !strcmp(method, "PUT") || !strcmp(method, "PATCH")) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
	}
	if (!strcmp(method, "HEAD"))
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	curl_easy_setopt(h, CURLOPT_DEBUGFUNCTION, on_debug);
	curl_easy_setopt(h, CURLOPT_VERBOSE, log_enabled(LOG_LVL_DEBUG) ? 1L : 0L);
	c = curl_easy_perform(h);
	if (c == CURLE_OK) {
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
		error_code(resp);
	}
	curl_easy_cleanup(h);
	*retry_after = x.retry_after;
	*held = x.held;
	return c;
}

/* ---- requests ------------------------------------------------------------------ */

void graph_response_init(struct graph_response *r)
{
	memset(r, 0, sizeof(*r));
	buf_init(&r->body, BODY_CAP);
}

void graph_response_release(struct graph_response *r)
{
	buf_release(&r->body);
}

/* The length of graph_url's origin (scheme, host and port). */
static size_t origin_len(const struct graph *g)
{
	const char *root = strstr(g->graph_url + 8, "/");

	return root ? (size_t)(root - g->graph_url) : strlen(g->graph_url);
}

int graph_link_is_ours(const struct graph *g, const char *url)
{
	size_t origin = origin_len(g);

	return !strncasecmp(url, g->graph_url, origin) &&
	       (url[origin] == '/' || url[origin] == '\0');
}

int graph_has_beta(const struct graph *g)
{
	return g->beta_url != NULL;
}

int graph_path_is_beta(const char *path)
{
	return !strncmp(path, GRAPH_BETA, sizeof(GRAPH_BETA) - 1);
}

/* The full URL for a path (see graph_request). NULL: -ENOMEM, a foreign
 * absolute URL, or beta without a beta root (*err says which). */
static char *full_url(struct graph *g, const char *path, int *err)
{
	const char *root = g->graph_url;
	struct buf b;
	int r;

	if (graph_path_is_beta(path)) {
		path += sizeof(GRAPH_BETA) - 1;
		root = g->beta_url;
		if (!root) {
			log_err("no beta service root: graph_url %s does not end in /v1.0",
				g->graph_url);
			*err = -ENOTSUP;
			return NULL;
		}
	}
	buf_init(&b, 1 << 20);
	if (root == g->graph_url &&
	    (!strncasecmp(path, "https://", 8) || !strncasecmp(path, "http://", 7))) {
		/* Only links into our own service root are followed: a
		 * nextLink must never carry the token elsewhere. */
		if (!graph_link_is_ours(g, path)) {
			log_err("refusing to follow a link outside %.*s", (int)origin_len(g),
				g->graph_url);
			*err = -EPROTO;
			return NULL;
		}
		r = buf_addstr(&b, path);
	} else if (!strncmp(path, "//", 2)) {
		r = buf_printf(&b, "%s%s", root, path + 1);
	} else {
		r = buf_printf(&b, "%s%s%s", root, g->mailbox, path);
	}
	if (r) {
		buf_release(&b);
		*err = r == -E2BIG ? -EINVAL : r;
		return NULL;
	}
	return buf_detach(&b, NULL);
}

static struct curl_slist *build_headers(const char *auth, const struct graph_header *headers,
					size_t nheaders, const char *content_type, int *err)
{
	struct curl_slist *list = NULL, *t;
	char line[1024];

	*err = -ENOMEM;
#define ADD(s)                                           \
	do {                                             \
		if (!(t = curl_slist_append(list, (s)))) \
			goto fail;                       \
		list = t;                                \
	} while (0)
	ADD(auth);
	ADD("Accept: application/json");
	ADD("Expect:");
	if (content_type) {
		snprintf(line, sizeof(line), "Content-Type: %s", content_type);
		ADD(line);
	}
	for (size_t i = 0; i < nheaders; i++) {
		if (!strcasecmp(headers[i].name, "Prefer"))
			continue;
		if (snprintf(line, sizeof(line), "%s: %s", headers[i].name, headers[i].value) >=
		    (int)sizeof(line)) {
			*err = -EINVAL;
			goto fail;
		}
		ADD(line);
	}
	/* Every request asks for immutable ids (concepts/outlook-immutable-id.md:
	 * the preference holds for the request that carries it). A caller's
	 * own preferences join it in the one Prefer header, comma-separated. */
	snprintf(line, sizeof(line), "Prefer: %s", GRAPH_PREFER_IDS);
	for (size_t i = 0; i < nheaders; i++) {
		size_t used = strlen(line);

		if (strcasecmp(headers[i].name, "Prefer"))
			continue;
		if (snprintf(line + used, sizeof(line) - used, ", %s", headers[i].value) >=
		    (int)(sizeof(line) - used)) {
			*err = -EINVAL;
			goto fail;
		}
	}
	ADD(line);
#undef ADD
	*err = 0;
	return list;
fail:
	curl_slist_free_all(list);
	return NULL;
}

const char *graph_path_for_log(const struct graph *g, const char *path, char *out, size_t size)
{
	const char *roots[] = {g->graph_url, g->beta_url}, *q;
	size_t n;

	for (size_t i = 0; i < sizeof(roots) / sizeof(roots[0]); i++) {
		n = roots[i] ? strlen(roots[i]) : 0;
		if (n && !strncmp(path, roots[i], n) && path[n] == '/') {
			path += n;
			break;
		}
	}
	q = strchr(path, '?');
	if (!q || strlen(q) <= 64)
		return path;
	snprintf(out, size, "%.*s%.48s...", (int)(q - path), path, q);
	return out;
}

/* graph_request, with the caller saying whether the request may be sent
 * twice (then a lost answer is retried) and how many slots it takes. */
int graph_request_slots(struct graph *g, const char *method, const char *path,
			const struct graph_header *headers, size_t nheaders, const void *body,
			size_t len, const char *content_type, int idempotent, int slots,
			graph_answer_fn on_answer, struct graph_response *resp)
{
	char auth[8192], shown[512];
	char *url = NULL;
	struct curl_slist *list = NULL;
	int r = 0, refreshed = 0;

	url = full_url(g, path, &r);
	if (!url)
		return r;
	for (int attempt = 0;; attempt++) {
		double retry_after;
		int held;
		CURLcode c;

		curl_slist_free_all(list);
		list = NULL;
		if ((r = graph_auth_header(g, refreshed == 1, auth, sizeof(auth))))
			break;
		if (refreshed == 1)
			refreshed = 2;
		list = build_headers(auth, headers, nheaders, content_type, &r);
		memset(auth, 0, sizeof(auth));
		if (!list)
			break;
		if ((r = slots_take(g, slots)))
			break;
		c = exchange(g, method, url, list, body, len, resp, 1, idempotent, &retry_after,
			     &held);
		if (c == CURLE_OK && on_answer)
			on_answer(g, resp);
		slots_give(g, slots);
		if (held) {
			/* Never sent: wait out the pause and send it then. */
			attempt--;
			continue;
		}
		pthread_mutex_lock(&g->lock);
		g->stats.requests++;
		if (attempt)
			g->stats.retries++;
		if (resp->status == 429)
			g->stats.throttled++;
		pthread_mutex_unlock(&g->lock);

		if (c != CURLE_OK) {
			r = curl_errno(c);
			log_debug("%s %s: %s (attempt %d)", method,
				  graph_path_for_log(g, path, shown, sizeof(shown)), curl_easy_strerror(c),
				  attempt + 1);
			if (!retryable(c, idempotent) || attempt + 1 >= g->max_attempts)
				break;
			if ((r = backoff_wait(g, backoff_ms(g, attempt))))
				break;
			continue;
		}
		r = 0;
		if (resp->status == 401 && !refreshed) {
			/* The token expired or was revoked: one forced refresh. */
			refreshed = 1;
			attempt--;
			continue;
		}
		if (resp->status == 429 || resp->status == 503 || resp->status == 504) {
			long wait = retry_after >= 0 ? (long)(retry_after * 1000 + 0.5)
						     : backoff_ms(g, attempt);

			log_info("%s %s: %ld %s, waiting %ld ms (attempt %d of %d)", method,
				 graph_path_for_log(g, path, shown, sizeof(shown)), resp->status, resp->code[0] ? resp->code : "", wait, attempt + 1,
				 g->max_attempts);
			if (attempt + 1 >= g->max_attempts)
				break;
			if (retry_after >= 0)
				graph_pause(g, wait);
			else if ((r = backoff_wait(g, wait)))
				break;
			continue;
		}
		break;
	}
	curl_slist_free_all(list);
	free(url);
	return r;
}

int graph_request(struct graph *g, const char *method, const char *path,
		  const struct graph_header *headers, size_t nheaders, const void *body, size_t len,
		  const char *content_type, struct graph_response *resp)
{
	return graph_request_slots(g, method, path, headers, nheaders, body, len, content_type,
				   strcmp(method, "POST") != 0, 1, NULL, resp);
}

int graph_http_form(struct graph *g, const char *url, const char *body, struct graph_response *resp)
{
	struct curl_slist *list = NULL, *t;
	double retry_after;
	int held;
	CURLcode c = CURLE_OUT_OF_MEMORY;

	if (!url_allowed(url))
		return -EINVAL;
	t = curl_slist_append(NULL, "Content-Type: application/x-www-form-urlencoded");
	if (t && (list = t) && (t = curl_slist_append(list, "Accept: application/json")))
		c = exchange(g, "POST", url, (list = t), body, strlen(body), resp, 0, 0,
			     &retry_after, &held);
	curl_slist_free_all(list);
	return c == CURLE_OK ? 0 : curl_errno(c);
}

int graph_status_transient(long status)
{
	return status == 0 || status == 429 || status >= 500;
}

int graph_errno(long status, const char *code)
{
	if (status >= 200 && status < 300)
		return 0;
	if (code && (!strcmp(code, "syncStateNotFound") || !strcmp(code, "resyncRequired") ||
		     !strcmp(code, "SyncStateNotFound")))
		return -ESTALE;
	switch (status) {
	case 400:
		return -EINVAL;
	case 401:
	case 403:
		return -EACCES;
	case 404:
		return -ENOENT;
	case 409:
		return -EEXIST;
	case 410:
	case 412:
		return -ESTALE;
	case 413:
		return -E2BIG;
	case 429:
	case 503:
	case 504:
		return -EAGAIN;
	default:
		return -EIO;
	}
}
