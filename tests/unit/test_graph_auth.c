/*
 * Authentication (graph/auth.c): the device code login, the token file,
 * refreshes on expiry and on a 401, token_cmd, logout, and that no secret
 * reaches the log.
 *
 * Two servers: the Graph emulator (tests/graph_emulator/server.py) for the
 * end-to-end cases, and a scripted identity endpoint in this file, which
 * records when each request arrived and what it carried, for the exact
 * cases the emulator cannot stage (slow_down, timing, the request bodies).
 */
#include "check.h"
#include "emulator.h"

#include "graph_int.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

/* ---- the test's world: a temporary XDG_CONFIG_HOME, the emulator ----------------- */

static char home[256];	    /* the temporary XDG_CONFIG_HOME */
static struct emulator emu; /* stopped at exit, whatever failed */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void cleanup(void)
{
	if (emu.pid > 0)
		emulator_stop(&emu);
	if (home[0])
		nftw(home, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh, empty XDG_CONFIG_HOME. 0 or -1. */
static int make_home(void)
{
	static int registered;

	if (!registered) {
		atexit(cleanup);
		registered = 1;
	}
	snprintf(home, sizeof(home), "/tmp/contactfs-auth-XXXXXX");
	if (!mkdtemp(home))
		return -1;
	return setenv("XDG_CONFIG_HOME", home, 1);
}

#define NEED_EMULATOR(...)                                \
	do {                                              \
		const char *args_[] = {__VA_ARGS__ NULL}; \
		EMULATOR_NEEDED();                        \
		CHECK(emulator_start(&emu, args_) == 0);  \
	} while (0)

static struct graph *new_graph(const char *auth_url, const char *graph_url, const char *user,
			       const char *token_cmd)
{
	struct graph_config cfg = {0};
	int err;

	cfg.graph_url = graph_url;
	cfg.auth_url = auth_url;
	cfg.client_id = "test-client-id";
	cfg.user = user;
	cfg.token_cmd = token_cmd;
	cfg.timeout_s = 20;
	return graph_new(&cfg, &err);
}

static struct graph *emulator_graph(void)
{
	return new_graph(emu.url, emu.graph_url, NULL, NULL);
}

struct shown {
	int calls;
	char url[256];
	char code[64];
	char message[512];
};

static void show(const char *url, const char *code, const char *message, void *ctx)
{
	struct shown *s = ctx;

	s->calls++;
	snprintf(s->message, sizeof(s->message), "%s", message ? message : "");
	snprintf(s->url, sizeof(s->url), "%s", url);
	snprintf(s->code, sizeof(s->code), "%s", code);
}

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* A whole file, malloc'd and NUL-terminated, or NULL. */
static char *slurp(const char *path)
{
	struct buf b;
	char chunk[4096];
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return NULL;
	buf_init(&b, 0);
	while ((n = read(fd, chunk, sizeof(chunk))) > 0)
		if (buf_add(&b, chunk, (size_t)n))
			break;
	close(fd);
	if (buf_addstr(&b, "")) {
		buf_release(&b);
		return NULL;
	}
	return buf_detach(&b, NULL);
}

/* The refresh token in the token file, malloc'd, or NULL. */
static char *stored_refresh_token(struct graph *g)
{
	char *path = graph_token_path(g), *text = path ? slurp(path) : NULL, *rt = NULL;
	cJSON *j = text ? cJSON_Parse(text) : NULL;
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "refresh_token");

	if (cJSON_IsString(v))
		rt = strdup(v->valuestring);
	cJSON_Delete(j);
	free(text);
	free(path);
	return rt;
}

static char *cached_access_token(struct graph *g)
{
	char *t;

	pthread_mutex_lock(&g->auth_lock);
	t = g->access_token ? strdup(g->access_token) : NULL;
	pthread_mutex_unlock(&g->auth_lock);
	return t;
}

/* Put a token the server never issued in the cache, as if ours had been
 * revoked, with an hour to live so only a 401 can replace it. */
static void cache_bogus_token(struct graph *g)
{
	pthread_mutex_lock(&g->auth_lock);
	free(g->access_token);
	g->access_token = strdup("revoked-token-the-server-never-issued");
	g->access_expires = time(NULL) + 3600;
	pthread_mutex_unlock(&g->auth_lock);
}

/* Write the token file by hand with the given mode. 0 or -1. */
static int write_token_file(struct graph *g, const char *json, mode_t mode)
{
	char *path = graph_token_path(g), dir[512];
	int fd, r = -1;

	snprintf(dir, sizeof(dir), "%s/contactfs", home);
	mkdir(dir, 0700);
	fd = path ? open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600) : -1;
	if (fd >= 0 && write(fd, json, strlen(json)) == (ssize_t)strlen(json) &&
	    fchmod(fd, mode) == 0)
		r = 0;
	if (fd >= 0)
		close(fd);
	free(path);
	return r;
}

/* ---- capturing stderr (the log) --------------------------------------------------- */

struct capture {
	int saved;
	char path[300];
};

static int capture_start(struct capture *c)
{
	int fd;

	fflush(stderr);
	snprintf(c->path, sizeof(c->path), "/tmp/contactfs-auth-log-XXXXXX");
	fd = mkstemp(c->path);
	if (fd < 0)
		return -1;
	c->saved = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);
	close(fd);
	return 0;
}

/* Restore stderr; what was written meanwhile, malloc'd (also echoed, so a
 * failing test shows it). */
static char *capture_end(struct capture *c)
{
	char *text;

	fflush(stderr);
	dup2(c->saved, STDERR_FILENO);
	close(c->saved);
	text = slurp(c->path);
	unlink(c->path);
	if (text && getenv("AUTH_TEST_ECHO"))
		fputs(text, stderr);
	return text ? text : strdup("");
}

/* ---- a scripted identity endpoint ------------------------------------------------- */

#define FAKE_MAX_REQ 32

struct fake_request {
	double t; /* monotonic seconds when it arrived */
	char path[128];
	char body[2048];
};

struct fake {
	int fd, port;
	char url[64];
	pthread_t thread;
	int stop;
	const char *devicecode;	  /* body of the 200 devicecode answer */
	const char *const *polls; /* token answers in turn; NULL-terminated; the last repeats */
	int npolls_given;
	pthread_mutex_t lock;
	int nreq;
	struct fake_request req[FAKE_MAX_REQ];
};

static void fake_answer(int c, struct fake *f, const char *path)
{
	const char *body;
	char head[256];
	int status = 200;

	if (strstr(path, "/devicecode")) {
		body = f->devicecode;
	} else {
		int i = 0;

		while (i < f->npolls_given && f->polls[i + 1])
			i++;
		body = f->polls[i];
		f->npolls_given++;
		if (strstr(body, "\"error\""))
			status = 400;
	}
	snprintf(head, sizeof(head),
		 "HTTP/1.1 %d X\r\nContent-Type: application/json; charset=utf-8\r\n"
		 "Content-Length: %zu\r\nConnection: close\r\n\r\n",
		 status, strlen(body));
	if (write(c, head, strlen(head)) < 0 || write(c, body, strlen(body)) < 0)
		return;
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;

	while (!__atomic_load_n(&f->stop, __ATOMIC_RELAXED)) {
		struct pollfd p = {f->fd, POLLIN, 0};
		char req[8192];
		size_t len = 0;
		char *end, *cl;
		long clen = 0;
		int c;

		if (poll(&p, 1, 50) <= 0)
			continue;
		c = accept(f->fd, NULL, NULL);
		if (c < 0)
			continue;
		/* Headers, then Content-Length bytes of body. */
		for (;;) {
			ssize_t n = read(c, req + len, sizeof(req) - 1 - len);

			if (n <= 0)
				break;
			len += (size_t)n;
			req[len] = '\0';
			end = strstr(req, "\r\n\r\n");
			if (!end)
				continue;
			cl = strcasestr(req, "\r\nContent-Length:");
			clen = cl ? strtol(cl + 17, NULL, 10) : 0;
			if ((size_t)(end + 4 - req) + (size_t)clen <= len || len >= sizeof(req) - 1)
				break;
		}
		req[len] = '\0';
		end = strstr(req, "\r\n\r\n");
		pthread_mutex_lock(&f->lock);
		if (end && f->nreq < FAKE_MAX_REQ) {
			struct fake_request *r = &f->req[f->nreq++];

			r->t = now_s();
			sscanf(req, "%*s %127s", r->path);
			snprintf(r->body, sizeof(r->body), "%s", end + 4);
			fake_answer(c, f, r->path);
		}
		pthread_mutex_unlock(&f->lock);
		close(c);
	}
	return NULL;
}

static int fake_start(struct fake *f, const char *devicecode, const char *const *polls)
{
	struct sockaddr_in a = {0};
	socklen_t alen = sizeof(a);

	memset(f, 0, sizeof(*f));
	f->devicecode = devicecode;
	f->polls = polls;
	pthread_mutex_init(&f->lock, NULL);
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	f->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (f->fd < 0 || bind(f->fd, (struct sockaddr *)&a, sizeof(a)) || listen(f->fd, 16) ||
	    getsockname(f->fd, (struct sockaddr *)&a, &alen))
		return -1;
	f->port = ntohs(a.sin_port);
	snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%d", f->port);
	return pthread_create(&f->thread, NULL, fake_main, f) ? -1 : 0;
}

static void fake_stop(struct fake *f)
{
	__atomic_store_n(&f->stop, 1, __ATOMIC_RELAXED);
	pthread_join(f->thread, NULL);
	close(f->fd);
	pthread_mutex_destroy(&f->lock);
}

#define FAKE_DEVICE_CODE "DEVICECODE-must-never-be-logged-4f1c"
#define FAKE_ACCESS "ACCESS-must-never-be-logged-9a2b"
#define FAKE_REFRESH "REFRESH-must-never-be-logged-7c3d"

#define FAKE_DEVICECODE(interval, expires)                                                    \
	"{\"device_code\":\"" FAKE_DEVICE_CODE "\",\"user_code\":\"ABCD-EFGH\","              \
	"\"verification_uri\":\"https://microsoft.com/devicelogin\",\"expires_in\":" #expires \
	",\"interval\":" #interval ",\"message\":\"To sign in, use a web browser.\"}"

static const char pending[] = "{\"error\":\"authorization_pending\","
			      "\"error_description\":\"AADSTS70016: pending\"}";
static const char granted[] = "{\"token_type\":\"Bearer\",\"expires_in\":3599,"
			      "\"access_token\":\"" FAKE_ACCESS "\","
			      "\"refresh_token\":\"" FAKE_REFRESH "\"}";

/* ---- the device code login, exactly -------------------------------------------------- */

TEST(login_polls_at_the_given_interval_and_sends_the_exact_requests)
{
	const char *polls[] = {pending, pending, granted, NULL};
	struct fake f;
	struct shown s = {0};
	struct graph *g = NULL;
	int r;

	CHECK(make_home() == 0);
	CHECK(fake_start(&f, FAKE_DEVICECODE(1, 900), polls) == 0);
	g = new_graph(f.url, NULL, NULL, NULL);
	CHECK(g != NULL);
	r = graph_login(g, show, &s);
	fake_stop(&f);
	CHECK_INT(r, 0);
	CHECK_INT(s.calls, 1);
	CHECK_STR(s.code, "ABCD-EFGH");
	CHECK_STR(s.url, "https://microsoft.com/devicelogin");
	CHECK_INT(f.nreq, 4);
	CHECK_STR(f.req[0].path, "/common/oauth2/v2.0/devicecode");
	CHECK_STR(f.req[0].body,
		  "client_id=test-client-id&scope=offline_access%20https%3A%2F%2Fgraph.microsoft."
		  "com%2FContacts.ReadWrite%20https%3A%2F%2Fgraph.microsoft.com%2FPeople.Read%20"
		  "https%3A%2F%2Fgraph.microsoft.com%2FMailboxSettings.ReadWrite");
	for (int i = 1; i < 4; i++) {
		double gap = f.req[i].t - f.req[i - 1].t;

		CHECK_STR(f.req[i].path, "/common/oauth2/v2.0/token");
		CHECK_STR(f.req[i].body,
			  "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3A"
			  "device_code&client_id=test-client-id&device_code=" FAKE_DEVICE_CODE);
		/* Never early; not needlessly late either. */
		CHECK(gap >= 1.0);
		CHECK(gap < 1.5);
	}
out:
	graph_free(g);
}

TEST(login_adds_five_seconds_to_the_interval_on_slow_down)
{
	const char *polls[] = {"{\"error\":\"slow_down\"}", granted, NULL};
	struct fake f;
	struct shown s = {0};
	struct graph *g = NULL;
	int r;

	CHECK(make_home() == 0);
	CHECK(fake_start(&f, FAKE_DEVICECODE(1, 900), polls) == 0);
	g = new_graph(f.url, NULL, NULL, NULL);
	CHECK(g != NULL);
	r = graph_login(g, show, &s);
	fake_stop(&f);
	CHECK_INT(r, 0);
	CHECK_INT(f.nreq, 3);
	CHECK(f.req[1].t - f.req[0].t >= 1.0);
	CHECK(f.req[2].t - f.req[1].t >= 6.0); /* 1 s + 5 s */
	CHECK(f.req[2].t - f.req[1].t < 6.5);
out:
	graph_free(g);
}

TEST(login_gives_up_with_etimedout_once_the_code_has_expired)
{
	const char *polls[] = {pending, NULL};
	struct fake f;
	struct shown s = {0};
	struct graph *g = NULL;
	double t0 = now_s();
	int r;

	CHECK(make_home() == 0);
	CHECK(fake_start(&f, FAKE_DEVICECODE(1, 3), polls) == 0);
	g = new_graph(f.url, NULL, NULL, NULL);
	CHECK(g != NULL);
	r = graph_login(g, show, &s);
	fake_stop(&f);
	CHECK_INT(r, -ETIMEDOUT);
	CHECK(now_s() - t0 < 5.0);
	CHECK(f.nreq >= 2);
out:
	graph_free(g);
}

TEST(login_reports_an_unexpected_oauth_error_as_eio_with_its_code_only)
{
	const char *polls[] = {"{\"error\":\"invalid_client\",\"error_description\":"
			       "\"DESCRIPTION-NOT-LOGGED\"}",
			       NULL};
	struct fake f;
	struct shown s = {0};
	struct capture c;
	struct graph *g = NULL;
	char *log = NULL;
	int r;

	CHECK(make_home() == 0);
	CHECK(fake_start(&f, FAKE_DEVICECODE(1, 900), polls) == 0);
	g = new_graph(f.url, NULL, NULL, NULL);
	CHECK(g != NULL);
	CHECK(capture_start(&c) == 0);
	r = graph_login(g, show, &s);
	log = capture_end(&c);
	fake_stop(&f);
	CHECK_INT(r, -EIO);
	CHECK(strstr(log, "invalid_client") != NULL);
	CHECK(strstr(log, "DESCRIPTION-NOT-LOGGED") == NULL);
out:
	free(log);
	graph_free(g);
}

TEST(login_for_another_mailbox_also_asks_for_shared_contacts)
{
	const char *polls[] = {"{\"error\":\"authorization_declined\"}", NULL};
	struct fake f;
	struct shown s = {0};
	struct graph *g = NULL;
	int r;

	CHECK(make_home() == 0);
	CHECK(fake_start(&f, FAKE_DEVICECODE(1, 900), polls) == 0);
	g = new_graph(f.url, NULL, "shared@contoso.com", NULL);
	CHECK(g != NULL);
	r = graph_login(g, show, &s);
	fake_stop(&f);
	CHECK_INT(r, -EACCES);
	CHECK(strstr(f.req[0].body, "%2FContacts.ReadWrite.Shared") != NULL);
	CHECK(strstr(f.req[0].body, "offline_access") != NULL);
out:
	graph_free(g);
}

TEST(login_stores_the_refresh_token_0600_in_a_0700_directory_with_how_to_refresh)
{
	const char *polls[] = {granted, NULL};
	struct fake f;
	struct shown s = {0};
	struct stat st;
	struct graph *g = NULL;
	char *path = NULL, *text = NULL, want[512], *access = NULL;
	int r;

	CHECK(make_home() == 0);
	CHECK(fake_start(&f, FAKE_DEVICECODE(1, 900), polls) == 0);
	g = new_graph(f.url, NULL, NULL, NULL);
	CHECK(g != NULL);
	umask(0); /* the file must not depend on the umask */
	r = graph_login(g, show, &s);
	umask(022);
	fake_stop(&f);
	CHECK_INT(r, 0);
	path = graph_token_path(g);
	snprintf(want, sizeof(want), "%s/contactfs/me.token", home);
	CHECK_STR(path, want);
	CHECK(stat(path, &st) == 0);
	CHECK_INT(st.st_mode & 07777, 0600);
	snprintf(want, sizeof(want), "%s/contactfs", home);
	CHECK(stat(want, &st) == 0);
	CHECK_INT(st.st_mode & 07777, 0700);
	text = slurp(path);
	CHECK(text != NULL);
	CHECK(strstr(text, "\"refresh_token\":\t\"" FAKE_REFRESH "\"") ||
	      strstr(text, "\"refresh_token\":\"" FAKE_REFRESH "\""));
	CHECK(strstr(text, "test-client-id") != NULL);
	CHECK(strstr(text, "\"common\"") != NULL);
	CHECK(strstr(text, f.url) != NULL);
	CHECK(strstr(text, FAKE_ACCESS) == NULL); /* access tokens stay in memory */
	access = cached_access_token(g);
	CHECK_STR(access, FAKE_ACCESS);
out:
	free(access);
	free(text);
	free(path);
	graph_free(g);
}

TEST(the_token_file_of_a_upn_is_its_lowercased_name_and_cannot_leave_the_directory)
{
	struct graph *g = NULL;
	char *path = NULL, want[512];

	CHECK(make_home() == 0);
	g = new_graph("http://127.0.0.1:9", NULL, "Alice@Contoso.com", NULL);
	CHECK(g != NULL);
	path = graph_token_path(g);
	snprintf(want, sizeof(want), "%s/contactfs/alice@contoso.com.token", home);
	CHECK_STR(path, want);
	free(path);
	path = NULL;
	graph_free(g);
	g = new_graph("http://127.0.0.1:9", NULL, "../../x/y", NULL);
	CHECK(g != NULL);
	path = graph_token_path(g);
	snprintf(want, sizeof(want), "%s/contactfs/%%2E.%%2F..%%2Fx%%2Fy.token", home);
	CHECK_STR(path, want);
out:
	free(path);
	graph_free(g);
}

/* ---- the token file ----------------------------------------------------------------- */

TEST(without_a_token_file_requests_fail_eacces_with_a_login_hint)
{
	struct graph *g = NULL;
	struct capture c;
	char auth[8192], *log = NULL;
	int r;

	CHECK(make_home() == 0);
	g = new_graph("http://127.0.0.1:9", "http://127.0.0.1:9/v1.0", NULL, NULL);
	CHECK(g != NULL);
	CHECK(capture_start(&c) == 0);
	r = graph_auth_header(g, 0, auth, sizeof(auth));
	log = capture_end(&c);
	CHECK_INT(r, -EACCES);
	CHECK(strstr(log, "not signed in: run contactfs login --client-id test-client-id") != NULL);
out:
	free(log);
	graph_free(g);
}

TEST(a_token_file_readable_by_others_is_refused)
{
	struct graph *g = NULL;
	struct capture c;
	char auth[8192], *log = NULL;
	int r;

	CHECK(make_home() == 0);
	g = new_graph("http://127.0.0.1:9", "http://127.0.0.1:9/v1.0", NULL, NULL);
	CHECK(g != NULL);
	CHECK(write_token_file(g, "{\"refresh_token\":\"rt\",\"client_id\":\"c\"}", 0644) == 0);
	CHECK(capture_start(&c) == 0);
	r = graph_auth_header(g, 0, auth, sizeof(auth));
	log = capture_end(&c);
	CHECK_INT(r, -EACCES);
	CHECK(strstr(log, "refusing the token file") != NULL);
	CHECK(strstr(log, "mode 0644") != NULL);
out:
	free(log);
	graph_free(g);
}

TEST(a_token_file_that_is_a_symlink_is_refused)
{
	struct graph *g = NULL;
	char auth[8192], *path = NULL, target[512];

	CHECK(make_home() == 0);
	g = new_graph("http://127.0.0.1:9", "http://127.0.0.1:9/v1.0", NULL, NULL);
	CHECK(g != NULL);
	CHECK(write_token_file(g, "{\"refresh_token\":\"rt\"}", 0600) == 0);
	path = graph_token_path(g);
	snprintf(target, sizeof(target), "%s.real", path);
	CHECK(rename(path, target) == 0);
	CHECK(symlink(target, path) == 0);
	CHECK_INT(graph_auth_header(g, 0, auth, sizeof(auth)), -EACCES);
out:
	free(path);
	graph_free(g);
}

/* ---- token_cmd ------------------------------------------------------------------------ */

TEST(token_cmd_failure_gives_eacces_and_logs_the_status_not_the_output)
{
	struct graph *g;
	struct capture c;
	char auth[8192], *log;
	int r1, r2, r3;

	CHECK(make_home() == 0);
	g = new_graph("http://127.0.0.1:9", "http://127.0.0.1:9/v1.0", NULL,
		      "echo SECRET-OUTPUT-NOT-LOGGED; exit 3");
	CHECK(g != NULL);
	CHECK(capture_start(&c) == 0);
	r1 = graph_auth_header(g, 0, auth, sizeof(auth));
	log = capture_end(&c);
	graph_free(g);
	CHECK_INT(r1, -EACCES);
	CHECK(strstr(log, "token_cmd exited with status 3") != NULL);
	CHECK(strstr(log, "SECRET-OUTPUT-NOT-LOGGED") == NULL);
	free(log);

	/* Nothing printed; a token with a line break (a header injection). */
	g = new_graph("http://127.0.0.1:9", NULL, NULL, "true");
	CHECK(g != NULL);
	r2 = graph_auth_header(g, 0, auth, sizeof(auth));
	graph_free(g);
	g = new_graph("http://127.0.0.1:9", NULL, NULL, "printf 'abc\\r\\nX-Evil: 1'");
	CHECK(g != NULL);
	r3 = graph_auth_header(g, 0, auth, sizeof(auth));
	graph_free(g);
	CHECK_INT(r2, -EACCES);
	CHECK_INT(r3, -EACCES);
out:;
}

TEST(token_cmd_output_is_trimmed_into_the_header)
{
	struct graph *g = NULL;
	char auth[8192];

	CHECK(make_home() == 0);
	g = new_graph("http://127.0.0.1:9", NULL, NULL, "printf '  tok.en-1 \\n\\n'");
	CHECK(g != NULL);
	CHECK_INT(graph_auth_header(g, 0, auth, sizeof(auth)), 0);
	CHECK_STR(auth, "Authorization: Bearer tok.en-1");
out:
	graph_free(g);
}

TEST(token_cmd_runs_once_and_again_only_after_a_401)
{
	struct graph *g = NULL;
	cJSON *j = NULL;
	char cmd[512], runs[300], *text = NULL;
	int r1, r2, r3;

	NEED_EMULATOR();
	CHECK(make_home() == 0);
	snprintf(runs, sizeof(runs), "%s/runs", home);
	snprintf(cmd, sizeof(cmd), "echo run >> %s; echo %s", runs, emu.token);
	g = new_graph(emu.url, emu.graph_url, NULL, cmd);
	CHECK(g != NULL);
	r1 = graph_get_json(g, "/contacts", NULL, 0, &j);
	cJSON_Delete(j);
	r2 = graph_get_json(g, "/contacts", NULL, 0, &j);
	cJSON_Delete(j);
	text = slurp(runs);
	CHECK_INT(r1, 0);
	CHECK_INT(r2, 0);
	CHECK_STR(text, "run\n");
	free(text);
	text = NULL;
	cache_bogus_token(g);
	r3 = graph_get_json(g, "/contacts", NULL, 0, &j);
	cJSON_Delete(j);
	text = slurp(runs);
	CHECK_INT(r3, 0);
	CHECK_STR(text, "run\nrun\n");
out:
	free(text);
	graph_free(g);
}

/* ---- against the emulator ------------------------------------------------------------------ */

/* A count from the emulator's GET /_emulator/requests: group "by_route"
 * or "by_status", then the key. -1 on error. */
static int emulator_count(const char *group, const char *key)
{
	cJSON *j = emulator_admin(&emu, "GET", "/_emulator/requests", NULL);
	const cJSON *v =
		cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, group), key);
	int n = cJSON_IsNumber(v) ? v->valueint : j ? 0 : -1;

	cJSON_Delete(j);
	return n;
}

/* Token endpoint requests so far: device code polls and refresh grants. */
static int token_grants(void)
{
	return emulator_count("by_route", "POST /{tenant}/oauth2/v2.0/token");
}

static int emulator_faults(const char *json)
{
	cJSON *a = emulator_admin(&emu, "POST", "/_emulator/faults", json);
	int ok = cJSON_GetObjectItemCaseSensitive(a, "token_ttl_s") != NULL;

	cJSON_Delete(a);
	return ok ? 0 : -1;
}

/* Sign g in through the emulator, approved at the first poll (the tests
 * that are not about the login itself need not wait for more). */
static int emulator_login(struct graph *g, struct shown *s)
{
	if (emulator_faults("{\"device_pending_polls\":0}"))
		return -1;
	return graph_login(g, show, s);
}

TEST(login_against_the_emulator_end_to_end_then_requests_work)
{
	struct shown s = {0};
	struct stat st;
	struct graph *g = NULL;
	cJSON *j = NULL;
	char *path, *rt;
	int r;

	NEED_EMULATOR();
	CHECK(make_home() == 0);
	g = emulator_graph();
	CHECK(g != NULL);
	CHECK_INT(graph_login(g, show, &s), 0); /* pending twice, then approved */
	CHECK_INT(s.calls, 1);
	/* The emulator's code: its own message carries it. */
	CHECK(strlen(s.code) == 9);
	CHECK(strstr(s.message, s.code) != NULL);
	CHECK_STR(s.url, "https://microsoft.com/devicelogin");
	path = graph_token_path(g);
	CHECK(stat(path, &st) == 0);
	CHECK_INT(st.st_mode & 07777, 0600);
	free(path);
	rt = stored_refresh_token(g);
	CHECK(rt != NULL && rt[0]);
	free(rt);
	r = graph_get_json(g, "/contacts", NULL, 0, &j);
	CHECK_INT(r, 0);
	CHECK(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "value")));
out:
	cJSON_Delete(j);
	graph_free(g);
}

TEST(login_declined_gives_eacces_and_stores_nothing)
{
	struct shown s = {0};
	struct stat st;
	struct graph *g = NULL;
	char *path = NULL;

	NEED_EMULATOR();
	CHECK(make_home() == 0);
	CHECK(emulator_faults("{\"next_device_flow\":\"declined\"}") == 0);
	g = emulator_graph();
	CHECK(g != NULL);
	CHECK_INT(emulator_login(g, &s), -EACCES);
	path = graph_token_path(g);
	CHECK(stat(path, &st) == -1 && errno == ENOENT);
out:
	free(path);
	graph_free(g);
}

TEST(login_with_an_expired_code_gives_etimedout)
{
	struct shown s = {0};
	struct graph *g = NULL;

	NEED_EMULATOR();
	CHECK(make_home() == 0);
	CHECK(emulator_faults("{\"next_device_flow\":\"expired\"}") == 0);
	g = emulator_graph();
	CHECK(g != NULL);
	CHECK_INT(emulator_login(g, &s), -ETIMEDOUT);
out:
	graph_free(g);
}

TEST(an_expiring_access_token_is_refreshed_and_the_rotated_refresh_token_stored)
{
	struct shown s = {0};
	struct graph_stats st;
	struct graph *g = NULL;
	cJSON *j = NULL;
	char *rt0 = NULL, *rt1 = NULL, *at0 = NULL, *at1 = NULL;
	int r, grants0, grants1;

	NEED_EMULATOR();
	CHECK(make_home() == 0);
	/* Access tokens live 1 s from now on: the login's included. */
	CHECK(emulator_faults("{\"token_ttl_s\":1}") == 0);
	g = emulator_graph();
	CHECK(g != NULL);
	CHECK_INT(emulator_login(g, &s), 0);
	rt0 = stored_refresh_token(g);
	at0 = cached_access_token(g);
	grants0 = token_grants();
	sleep(2);
	r = graph_get_json(g, "/contacts", NULL, 0, &j);
	cJSON_Delete(j);
	graph_stats(g, &st);
	grants1 = token_grants();
	rt1 = stored_refresh_token(g);
	at1 = cached_access_token(g);
	CHECK_INT(r, 0);
	CHECK_INT(grants1 - grants0, 1); /* one refresh grant */
	CHECK(rt0 && rt1 && strcmp(rt0, rt1) != 0);
	CHECK(at0 && at1 && strcmp(at0, at1) != 0);
	/* Refreshed before sending: the request went out once, no 401. */
	CHECK_INT(st.requests, 1);
	CHECK_INT(emulator_count("by_status", "401"), 0);
out:
	free(rt0);
	free(rt1);
	free(at0);
	free(at1);
	graph_free(g);
}

TEST(a_401_forces_one_refresh_and_the_request_then_succeeds)
{
	struct shown s = {0};
	struct graph_stats st;
	struct graph *g = NULL;
	cJSON *j = NULL;
	char *rt0 = NULL, *rt1 = NULL;
	int r, grants0, grants1;

	NEED_EMULATOR();
	CHECK(make_home() == 0);
	g = emulator_graph();
	CHECK(g != NULL);
	CHECK_INT(emulator_login(g, &s), 0);
	rt0 = stored_refresh_token(g);
	/* The server ends our token's life early; we still think it has an
	 * hour: only the 401 can tell us. */
	CHECK(emulator_faults("{\"expire_tokens\":true}") == 0);
	grants0 = token_grants();
	r = graph_get_json(g, "/contacts", NULL, 0, &j);
	cJSON_Delete(j);
	graph_stats(g, &st);
	grants1 = token_grants();
	rt1 = stored_refresh_token(g);
	CHECK_INT(r, 0);
	CHECK_INT(st.requests, 2); /* the 401, then the retry */
	CHECK_INT(emulator_count("by_status", "401"), 1);
	CHECK_INT(grants1 - grants0, 1);
	CHECK(rt0 && rt1 && strcmp(rt0, rt1) != 0);
out:
	free(rt0);
	free(rt1);
	graph_free(g);
}

TEST(a_revoked_refresh_token_gives_eacces_and_a_login_hint)
{
	struct shown s = {0};
	struct capture c;
	struct graph *g = NULL;
	cJSON *j = NULL;
	char *log = NULL, *rt = NULL;
	int r;

	NEED_EMULATOR();
	CHECK(make_home() == 0);
	g = emulator_graph();
	CHECK(g != NULL);
	CHECK_INT(emulator_login(g, &s), 0);
	rt = stored_refresh_token(g);
	CHECK(emulator_faults("{\"revoke_refresh_tokens\":true,\"expire_tokens\":true}") == 0);
	CHECK(capture_start(&c) == 0);
	r = graph_get_json(g, "/contacts", NULL, 0, &j);
	log = capture_end(&c);
	cJSON_Delete(j);
	CHECK_INT(r, -EACCES);
	CHECK(strstr(log, "refresh token was refused (invalid_grant): run contactfs login") !=
	      NULL);
	CHECK(rt && strstr(log, rt) == NULL);
out:
	free(rt);
	free(log);
	graph_free(g);
}

TEST(a_later_client_refreshes_from_the_token_file_alone)
{
	struct graph_config cfg = {0};
	struct shown s = {0};
	struct graph *g = NULL;
	char auth[8192];
	int err;

	NEED_EMULATOR();
	CHECK(make_home() == 0);
	g = emulator_graph();
	CHECK(g != NULL);
	CHECK_INT(emulator_login(g, &s), 0);
	graph_free(g);
	g = NULL;
	/* A mount that knows neither the client id nor the identity endpoint:
	 * the token file tells it. */
	cfg.graph_url = emu.graph_url;
	cfg.auth_url = "https://login.invalid";
	g = graph_new(&cfg, &err);
	CHECK(g != NULL);
	CHECK_INT(graph_auth_header(g, 0, auth, sizeof(auth)), 0);
	CHECK(strncmp(auth, "Authorization: Bearer ", 22) == 0);
out:
	graph_free(g);
}

TEST(logout_removes_the_token_file_and_the_cached_token)
{
	struct shown s = {0};
	struct stat st;
	struct graph *g = NULL;
	char auth[8192], *path;

	NEED_EMULATOR();
	CHECK(make_home() == 0);
	g = emulator_graph();
	CHECK(g != NULL);
	CHECK_INT(emulator_login(g, &s), 0);
	path = graph_token_path(g);
	CHECK(stat(path, &st) == 0);
	CHECK_INT(graph_logout(g), 0);
	CHECK(stat(path, &st) == -1 && errno == ENOENT);
	free(path);
	CHECK_INT(graph_auth_header(g, 0, auth, sizeof(auth)), -EACCES);
	CHECK_INT(graph_logout(g), 0); /* nothing stored: still fine */
out:
	graph_free(g);
}

/* ---- redaction ----------------------------------------------------------------------- */

TEST(no_token_refresh_token_or_device_code_reaches_the_debug_log)
{
	const char *polls[] = {pending, granted, NULL};
	struct fake f;
	struct shown s = {0};
	struct capture c;
	struct graph *g = NULL, *g2 = NULL;
	cJSON *j = NULL;
	char *log = NULL, *secrets[8] = {0};
	int n = 0, r1, r2, r3, r4;

	NEED_EMULATOR();
	CHECK(make_home() == 0);
	CHECK(fake_start(&f, FAKE_DEVICECODE(1, 900), polls) == 0);
	log_set_level(LOG_LVL_DEBUG);
	CHECK(capture_start(&c) == 0);
	/* A login whose device code, access and refresh tokens we know. */
	g = new_graph(f.url, NULL, NULL, NULL);
	r1 = g ? graph_login(g, show, &s) : -1;
	graph_free(g);
	fake_stop(&f);
	/* A login, a request, a forced refresh and a refresh on expiry
	 * against the emulator, with its tokens collected as they go. */
	nftw(home, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	mkdir(home, 0700);
	g2 = emulator_graph();
	r2 = g2 ? graph_login(g2, show, &s) : -1;
	secrets[n++] = cached_access_token(g2);
	secrets[n++] = stored_refresh_token(g2);
	r3 = graph_get_json(g2, "/contacts", NULL, 0, &j);
	cJSON_Delete(j);
	cache_bogus_token(g2);
	r4 = graph_get_json(g2, "/contacts", NULL, 0, &j);
	cJSON_Delete(j);
	secrets[n++] = cached_access_token(g2);
	secrets[n++] = stored_refresh_token(g2);
	graph_free(g2);
	log = capture_end(&c);
	log_set_level(LOG_LVL_INFO);

	CHECK_INT(r1, 0);
	CHECK_INT(r2, 0);
	CHECK_INT(r3, 0);
	CHECK_INT(r4, 0);
	/* Debug logging was on and saw the requests, Authorization included. */
	CHECK(strstr(log, "Authorization: [redacted]") != NULL);
	CHECK(strstr(log, "/oauth2/v2.0/token") != NULL);
	CHECK(strstr(log, FAKE_DEVICE_CODE) == NULL);
	CHECK(strstr(log, FAKE_ACCESS) == NULL);
	CHECK(strstr(log, FAKE_REFRESH) == NULL);
	CHECK(strstr(log, "refresh_token=") == NULL);
	CHECK(strstr(log, "device_code=") == NULL);
	CHECK(strstr(log, "Authorization: Bearer") == NULL);
	for (int i = 0; i < n; i++) {
		CHECK(secrets[i] != NULL && strlen(secrets[i]) >= 8);
		CHECK(strstr(log, secrets[i]) == NULL);
		free(secrets[i]);
	}
out:
	free(log);
}
