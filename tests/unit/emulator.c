#include "emulator.h"

#include "util.h"

#include <curl/curl.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

int emulator_start(struct emulator *e, const char *const *args)
{
	const char *src = getenv("CONTACTFS_SRC");
	char script[4096], line[256];
	const char *argv[32];
	int fds[2], n = 0;
	FILE *out;

	memset(e, 0, sizeof(*e));
	if (!src) {
		fprintf(stderr, "CONTACTFS_SRC is not set\n");
		return -1;
	}
	snprintf(script, sizeof(script), "%s/tests/graph_emulator/server.py", src);
	snprintf(e->token, sizeof(e->token), "test-token-%d", (int)getpid());
	argv[n++] = EMULATOR_PYTHON;
	argv[n++] = script;
	argv[n++] = "--port";
	argv[n++] = "0";
	argv[n++] = "--token";
	argv[n++] = e->token;
	for (int i = 0; args && args[i] && n < 30; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	if (pipe(fds))
		return -1;
	e->pid = fork();
	if (e->pid < 0)
		return -1;
	if (e->pid == 0) {
		/* A test that fails between start and stop must not leave the
		 * server behind. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		dup2(fds[1], STDOUT_FILENO);
		close(fds[0]);
		close(fds[1]);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(fds[1]);
	out = fdopen(fds[0], "r");
	if (!out || !fgets(line, sizeof(line), out) ||
	    sscanf(line, "listening on http://127.0.0.1:%d", &e->port) != 1) {
		fprintf(stderr, "the emulator did not start (%s)\n", script);
		if (out)
			fclose(out);
		emulator_stop(e);
		return -1;
	}
	fclose(out);
	snprintf(e->url, sizeof(e->url), "http://127.0.0.1:%d", e->port);
	snprintf(e->graph_url, sizeof(e->graph_url), "%s/v1.0", e->url);
	return 0;
}

int emulator_stop(struct emulator *e)
{
	int status;

	if (e->pid <= 0)
		return -1;
	kill(e->pid, SIGTERM);
	if (waitpid(e->pid, &status, 0) != e->pid)
		return -1;
	e->pid = 0;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static size_t on_body(char *p, size_t size, size_t n, void *ctx)
{
	return buf_add(ctx, p, size * n) ? 0 : size * n;
}

cJSON *emulator_admin(struct emulator *e, const char *method, const char *path, const char *body)
{
	CURL *h = curl_easy_init();
	struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
	char url[512];
	struct buf b;
	cJSON *j = NULL;

	buf_init(&b, 0);
	snprintf(url, sizeof(url), "%s%s", e->url, path);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
	if (body)
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	if (curl_easy_perform(h) == CURLE_OK && b.len)
		j = cJSON_ParseWithLength(b.data, b.len);
	curl_slist_free_all(hdr);
	curl_easy_cleanup(h);
	buf_release(&b);
	return j;
}

double emulator_stat(struct emulator *e, const char *key)
{
	cJSON *j = emulator_admin(e, "GET", "/_emulator/requests", NULL);
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
	double d = cJSON_IsNumber(v) ? v->valuedouble : -1;

	cJSON_Delete(j);
	return d;
}
