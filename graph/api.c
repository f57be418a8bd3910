/*
 * What callers use on top of the request engine: JSON in and out, paging,
 * delta rounds, $batch with per-item retries, photos.
 */
#include "graph_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Log a failed answer once, with the Graph code (never the body: it may
 * hold personal data). */
static int answer_errno(const struct graph *g, const char *method, const char *path,
			const struct graph_response *resp)
{
	int e = graph_errno(resp->status, resp->code);
	char shown[512];

	if (e && e != -ENOENT)
		log_warn("%s %s: HTTP %ld %s", method, graph_path_for_log(g, path, shown, sizeof(shown)),
			 resp->status, resp->code[0] ? resp->code : "");
	return e;
}

static int parse_body(const struct graph_response *resp, cJSON **out)
{
	*out = cJSON_ParseWithLength(resp->body.data, resp->body.len);
	return *out ? 0 : -EPROTO;
}

int graph_get_json(struct graph *g, const char *path, const struct graph_header *headers,
		   size_t nheaders, cJSON **out)
{
	struct graph_response resp;
	int r;

	*out = NULL;
	graph_response_init(&resp);
	r = graph_request(g, "GET", path, headers, nheaders, NULL, 0, NULL, &resp);
	if (!r)
		r = answer_errno(g, "GET", path, &resp);
	if (!r)
		r = parse_body(&resp, out);
	graph_response_release(&resp);
	return r;
}

int graph_send_json(struct graph *g, const char *method, const char *path, const cJSON *body,
		    const struct graph_header *headers, size_t nheaders, cJSON **out)
{
	struct graph_response resp;
	char *text = body ? cJSON_PrintUnformatted(body) : NULL;
	int r;

	if (out)
		*out = NULL;
	if (body && !text)
		return -ENOMEM;
	graph_response_init(&resp);
	r = graph_request(g, method, path, headers, nheaders, text, text ? strlen(text) : 0,
			  text ? "application/json" : NULL, &resp);
	if (!r)
		r = answer_errno(g, method, path, &resp);
	if (!r && out && resp.body.len)
		r = parse_body(&resp, out);
	graph_response_release(&resp);
	free(text);
	return r;
}

/* ---- collections ---------------------------------------------------------------- */

static const char *link_of(const cJSON *page, const char *name)
{
	const cJSON *l = cJSON_GetObjectItemCaseSensitive(page, name);

	return cJSON_IsString(l) ? l->valuestring : NULL;
}

/* Call fn for each item of page's "value". */
static int each_item(const cJSON *page, graph_item_fn fn, void *ctx)
{
	const cJSON *value = cJSON_GetObjectItemCaseSensitive(page, "value"), *item;
	int r;

	if (!cJSON_IsArray(value))
		return -EPROTO;
	cJSON_ArrayForEach(item, value)
	{
		if ((r = fn(item, ctx)))
			return r;
	}
	return 0;
}

int graph_list(struct graph *g, const char *path, const struct graph_header *headers,
	       size_t nheaders, graph_item_fn fn, void *ctx)
{
	char *url = strdup(path);
	cJSON *page = NULL;
	int r = url ? 0 : -ENOMEM;

	while (!r && url) {
		const char *next;

		if ((r = graph_get_json(g, url, headers, nheaders, &page)) ||
		    (r = each_item(page, fn, ctx)))
			break;
		next = link_of(page, "@odata.nextLink");
		free(url);
		url = next ? strdup(next) : NULL;
		if (next && !url)
			r = -ENOMEM;
		cJSON_Delete(page);
		page = NULL;
	}
	cJSON_Delete(page);
	free(url);
	return r;
}

/* Whether an answer to a delta request means the cursor is gone: 410, a
 * sync-state error code, or a 400 about the token we sent. */
static int cursor_expired(const struct graph_response *resp, const char *url)
{
	if (graph_errno(resp->status, resp->code) == -ESTALE && resp->status != 412)
		return 1;
	return resp->status == 400 && (strstr(url, "deltatoken=") || strstr(url, "skiptoken="));
}

int graph_delta(struct graph *g, const char *link, int page_size, graph_item_fn fn, void *ctx,
		char **next)
{
	struct graph_header prefer;
	struct graph_response resp;
	char pref[64], *url = strdup(link);
	cJSON *page = NULL;
	int r = url ? 0 : -ENOMEM;

	*next = NULL;
	snprintf(pref, sizeof(pref), "odata.maxpagesize=%d", page_size);
	prefer.name = "Prefer";
	prefer.value = pref;
	graph_response_init(&resp);
	while (!r) {
		const char *nl, *dl;

		r = graph_request(g, "GET", url, &prefer, page_size > 0 ? 1 : 0, NULL, 0, NULL,
				  &resp);
		if (r)
			break;
		if (cursor_expired(&resp, url)) {
			log_info("delta cursor expired (HTTP %ld %s): resync needed", resp.status,
				 resp.code);
			r = -ESTALE;
			break;
		}
		if ((r = answer_errno(g, "GET", "delta", &resp)) || (r = parse_body(&resp, &page)) ||
		    (r = each_item(page, fn, ctx)))
			break;
		nl = link_of(page, "@odata.nextLink");
		dl = link_of(page, "@odata.deltaLink");
		free(url);
		url = NULL;
		if (nl) {
			if (!(url = strdup(nl)))
				r = -ENOMEM;
		} else if (dl) {
			if (!(*next = strdup(dl)))
				r = -ENOMEM;
			break;
		} else {
			r = -EPROTO; /* a last page must carry the deltaLink */
		}
		cJSON_Delete(page);
		page = NULL;
	}
	cJSON_Delete(page);
	graph_response_release(&resp);
	free(url);
	return r;
}

/* ---- $batch -------------------------------------------------------------------- */

/* The body of one $batch request for items[idx[0..n)]. */
static cJSON *batch_body(struct graph *g, const struct graph_batch_item *items, const size_t *idx,
			 size_t n)
{
	cJSON *body = cJSON_CreateObject(), *reqs = cJSON_AddArrayToObject(body, "requests");
	char id[24], url[2048];

	if (!body || !reqs)
		goto fail;
	for (size_t k = 0; k < n; k++) {
		const struct graph_batch_item *it = &items[idx[k]];
		const char *path = it->url;
		cJSON *req = cJSON_CreateObject(), *hdrs = NULL;

		if (!req || !cJSON_AddItemToArray(reqs, req))
			goto fail;
		snprintf(id, sizeof(id), "%zu", idx[k]);
		/* Relative to the root the batch is sent to (batch_once). */
		if (graph_path_is_beta(path))
			path += sizeof(GRAPH_BETA) - 1;
		if (!strncmp(path, "//", 2))
			snprintf(url, sizeof(url), "%s", path + 1);
		else
			snprintf(url, sizeof(url), "%s%s", g->mailbox, path);
		if (!cJSON_AddStringToObject(req, "id", id) ||
		    !cJSON_AddStringToObject(req, "method", it->method) ||
		    !cJSON_AddStringToObject(req, "url", url))
			goto fail;
		/* An item is a request of its own: the envelope's headers do
		 * not reach it (concepts/json-batching.md), so it asks for
		 * immutable ids itself. */
		if (!(hdrs = cJSON_AddObjectToObject(req, "headers")) ||
		    !cJSON_AddStringToObject(hdrs, "Prefer", GRAPH_PREFER_IDS))
			goto fail;
		if (it->body && !cJSON_AddStringToObject(hdrs, "Content-Type", "application/json"))
			goto fail;
		if (it->if_match && !cJSON_AddStringToObject(hdrs, "If-Match", it->if_match))
			goto fail;
		if (it->body && !cJSON_AddItemToObject(req, "body", cJSON_Duplicate(it->body, 1)))
			goto fail;
	}
	return body;
fail:
	cJSON_Delete(body);
	return NULL;
}

/* A header of a batch response item, or NULL. */
static const char *item_header(const cJSON *resp, const char *name)
{
	const cJSON *h = cJSON_GetObjectItemCaseSensitive(resp, "headers"), *v;

	cJSON_ArrayForEach(v, h)
	{
		if (v->string && !strcasecmp(v->string, name) && cJSON_IsString(v))
			return v->valuestring;
	}
	return NULL;
}

/* The longest Retry-After among the throttled items of a $batch answer
 * (ms), or -1; with any throttled item and no Retry-After, 1000. */
static long batch_wait_ms(const cJSON *answer)
{
	const cJSON *resp;
	long wait = -1;

	cJSON_ArrayForEach(resp, cJSON_GetObjectItemCaseSensitive(answer, "responses"))
	{
		const cJSON *st = cJSON_GetObjectItemCaseSensitive(resp, "status");
		const char *ra = item_header(resp, "Retry-After");
		long ms;

		if (!cJSON_IsNumber(st) ||
		    (st->valueint != 429 && st->valueint != 503 && st->valueint != 504))
			continue;
		ms = ra ? (long)(strtod(ra, NULL) * 1000 + 0.5) : 1000;
		if (ms > wait)
			wait = ms;
	}
	return wait;
}

/* Pause the mailbox for throttled items before the batch's slots are given
 * back, so no other request leaves inside their Retry-After. */
static void batch_answer(struct graph *g, const struct graph_response *resp)
{
	cJSON *answer;
	long wait;

	if (resp->status != 200 || !resp->body.len)
		return;
	answer = cJSON_ParseWithLength(resp->body.data, resp->body.len);
	wait = batch_wait_ms(answer);
	if (wait > 0)
		graph_pause(g, wait);
	cJSON_Delete(answer);
}

/*
 * Send items[idx[0..n)] as one $batch (to the beta root when beta) and
 * record each answer. Items that got 429/503, or no answer, go to retry[]
 * (their count in *again) and *wait_ms is the longest Retry-After among
 * them (-1 when none said).
 */
static int batch_once(struct graph *g, int beta, struct graph_batch_item *items, const size_t *idx,
		      size_t n, size_t *retry, size_t *again, long *wait_ms)
{
	cJSON *body = batch_body(g, items, idx, n), *answer = NULL, *resp;
	struct graph_response http;
	char *text = body ? cJSON_PrintUnformatted(body) : NULL;
	int idempotent = 1, r;

	*again = 0;
	*wait_ms = -1;
	if (!text) {
		cJSON_Delete(body);
		return -ENOMEM;
	}
	for (size_t k = 0; k < n; k++)
		if (strcmp(items[idx[k]].method, "GET") != 0)
			idempotent = 0;
	graph_response_init(&http);
	/* A batch takes every slot, whatever its size: an item may be told to
	 * wait (429 in its own status) long before the batch's answer says so,
	 * and no other request may leave meanwhile. */
	r = graph_request_slots(g, "POST", beta ? GRAPH_BETA "//$batch" : "//$batch", NULL, 0, text,
				strlen(text), "application/json", idempotent, GRAPH_MAX_IN_FLIGHT,
				batch_answer, &http);
	if (!r)
		r = answer_errno(g, "POST", "$batch", &http);
	if (!r)
		r = parse_body(&http, &answer);
	if (r)
		goto out;
	cJSON_ArrayForEach(resp, cJSON_GetObjectItemCaseSensitive(answer, "responses"))
	{
		const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(resp, "id"));
		const cJSON *st = cJSON_GetObjectItemCaseSensitive(resp, "status");
		struct graph_batch_item *it;
		char *end;
		unsigned long i;

		if (!id || !cJSON_IsNumber(st))
			continue;
		i = strtoul(id, &end, 10);
		if (*end || i >= (unsigned long)-1)
			continue;
		/* Only ids we sent in this round count. */
		it = NULL;
		for (size_t k = 0; k < n; k++)
			if (idx[k] == i)
				it = &items[i];
		if (!it)
			continue;
		it->status = (int)st->valuedouble;
		cJSON_Delete(it->response);
		it->response = cJSON_DetachItemFromObjectCaseSensitive(resp, "body");
		it->code[0] = '\0';
		/* A photo comes base64 in the body, its type in the item's own
		 * Content-Type (concepts/json-batching.md). */
		snprintf(it->content_type, sizeof(it->content_type), "%s",
			 item_header(resp, "Content-Type") ? item_header(resp, "Content-Type")
							    : "");
		it->content_type[strcspn(it->content_type, "; ")] = '\0';
		if (it->status >= 400) {
			const cJSON *e = cJSON_GetObjectItemCaseSensitive(it->response, "error");
			const char *c =
				cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "code"));

			if (c)
				snprintf(it->code, sizeof(it->code), "%s", c);
		}
	}
	*wait_ms = batch_wait_ms(answer);
	/* Throttled items, and any the answer left out, are tried again. */
	for (size_t k = 0; k < n; k++) {
		int st = items[idx[k]].status;

		if (st == 0 || st == 429 || st == 503 || st == 504)
			retry[(*again)++] = idx[k];
	}
out:
	cJSON_Delete(answer);
	cJSON_Delete(body);
	free(text);
	graph_response_release(&http);
	return r;
}

/* The items items[idx[0..k)], all on one root, with the retries of their
 * throttled ones. idx is the caller's scratch space (reused), retry too. */
static int batch_run(struct graph *g, int beta, struct graph_batch_item *items, size_t *idx,
		     size_t k, size_t *retry)
{
	int r = 0;

	for (int attempt = 0; k > 0; attempt++) {
		long wait;
		size_t again;

		if ((r = batch_once(g, beta, items, idx, k, retry, &again, &wait)))
			break;
		if (again == 0 || attempt + 1 >= g->max_attempts)
			break;
		memcpy(idx, retry, again * sizeof(idx[0]));
		/* Throttled items: the mailbox waits as a whole. */
		log_info("$batch: %zu of %zu items to retry after %ld ms", again, k,
			 wait < 0 ? 0 : wait);
		graph_pause(g, wait >= 0 ? wait : 1000L << (attempt < 5 ? attempt : 5));
		for (size_t j = 0; j < again; j++)
			items[idx[j]].status = 0;
		k = again;
	}
	return r;
}

int graph_batch(struct graph *g, struct graph_batch_item *items, size_t n)
{
	size_t idx[GRAPH_BATCH_MAX], retry[GRAPH_BATCH_MAX];
	int r = 0;

	for (size_t i = 0; i < n; i++) {
		items[i].status = 0;
		items[i].response = NULL;
		items[i].code[0] = '\0';
		items[i].content_type[0] = '\0';
	}
	/* The v1.0 items first, then the beta ones: a $batch goes to one
	 * service root, and its items' URLs are relative to it
	 * (concepts/json-batching.md). */
	for (int beta = 0; beta < 2 && !r; beta++) {
		for (size_t next = 0; next < n && !r;) {
			size_t k = 0;

			for (; next < n && k < GRAPH_BATCH_MAX; next++)
				if (graph_path_is_beta(items[next].url) == beta)
					idx[k++] = next;
			if (k)
				r = batch_run(g, beta, items, idx, k, retry);
		}
	}
	return r;
}

void graph_batch_release(struct graph_batch_item *items, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		cJSON_Delete(items[i].response);
		items[i].response = NULL;
	}
}

/* ---- photos ------------------------------------------------------------------------ */

static int photo_path(char *out, size_t size, const char *contact_id)
{
	int n = snprintf(out, size, "/contacts/%s/photo/$value", contact_id);

	return n < 0 || (size_t)n >= size || strpbrk(contact_id, "/?#") ? -EINVAL : 0;
}

int graph_photo_get(struct graph *g, const char *contact_id, struct buf *out, char *type,
		    size_t type_size)
{
	struct graph_response resp;
	char path[1024];
	int r = photo_path(path, sizeof(path), contact_id);

	if (r)
		return r;
	graph_response_init(&resp);
	r = graph_request(g, "GET", path, NULL, 0, NULL, 0, NULL, &resp);
	if (!r)
		r = answer_errno(g, "GET", path, &resp);
	if (!r) {
		buf_reset(out);
		r = buf_add(out, resp.body.data, resp.body.len);
		snprintf(type, type_size, "%s",
			 resp.content_type[0] ? resp.content_type : "image/jpeg");
		type[strcspn(type, "; ")] = '\0';
	}
	graph_response_release(&resp);
	return r;
}

int graph_photo_put(struct graph *g, const char *contact_id, const void *data, size_t len,
		    const char *type)
{
	struct graph_response resp;
	char path[1024];
	int r = photo_path(path, sizeof(path), contact_id);

	if (r)
		return r;
	if (len >= GRAPH_PHOTO_MAX)
		return -E2BIG;
	graph_response_init(&resp);
	r = graph_request(g, "PUT", path, NULL, 0, data, len, type ? type : "image/jpeg", &resp);
	if (!r)
		r = answer_errno(g, "PUT", path, &resp);
	graph_response_release(&resp);
	return r;
}
