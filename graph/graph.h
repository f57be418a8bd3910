/*
 * graph — the Microsoft Graph client: one struct graph per mailbox.
 *
 * Invariants:
 *  - At most GRAPH_MAX_IN_FLIGHT requests of one mailbox are on the wire at
 *    once; a $batch counts as min(items, 4) (Outlook runs 4 items of a batch
 *    at a time). Callers beyond that wait their turn.
 *  - A Retry-After (429 or 503) pauses the whole mailbox until it has passed;
 *    503/504 and network errors are retried with exponential backoff and
 *    jitter; every request has a timeout. A call returns a result or an
 *    errno; it never hangs.
 *  - TLS is always verified; plain http:// is refused unless the host is a
 *    loopback address (the emulator).
 *  - No token, refresh token or Authorization header is ever logged, at any
 *    level: curl's debug output is redacted before it reaches the log.
 *  - HTTP status and curl errors become one errno in one place
 *    (graph_errno()); the Graph error code is kept for the log.
 *
 * Thread safety: every function may be called from any thread on the same
 * struct graph, except graph_free(), which must be the last call.
 * Lock order: graph->lock is a leaf (never held across a network call).
 */
#ifndef CONTACTFS_GRAPH_H
#define CONTACTFS_GRAPH_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "util.h"

#define GRAPH_MUST_CHECK __attribute__((warn_unused_result))

#define GRAPH_MAX_IN_FLIGHT 4
#define GRAPH_BATCH_MAX 20
#define GRAPH_DEFAULT_URL "https://graph.microsoft.com/v1.0"
#define GRAPH_DEFAULT_AUTH_URL "https://login.microsoftonline.com"
/* A path that starts with this is sent to the beta service root (see
 * graph_request): "beta:/contacts/ID", "beta://$batch". */
#define GRAPH_BETA "beta:"

/* What a mount or a command is pointed at. Strings are borrowed for the
 * life of the struct graph unless said otherwise. */
struct graph_config {
	const char *graph_url;	/* NULL: GRAPH_DEFAULT_URL */
	const char *auth_url;	/* NULL: GRAPH_DEFAULT_AUTH_URL */
	const char *tenant;	/* NULL: "common" */
	const char *client_id;	/* the user's own app registration */
	const char *user;	/* UPN for /users/{upn}; NULL: /me */
	const char *token_cmd;	/* a program that prints an access token */
	const char *config_dir; /* NULL: $XDG_CONFIG_HOME/contactfs, else
				   $HOME/.config/contactfs */
	int timeout_s;		/* per request; 0: 60 */
	int max_attempts;	/* per request, retries included; 0: 8 */
};

/*
 * Parse one -o OPTIONS (libfuse style: comma-separated key=value; "\," and
 * "\\" for a comma or a backslash inside a value) into cfg: graph_url,
 * auth_url, user, token_cmd, client_id, tenant; cache_dir is accepted and
 * ignored (it is the mount's). Shared by every command that talks to Graph.
 *
 * Ownership: the strings set in cfg point into *copy, a malloc'd copy owned
 * by the caller. Start with *copy == NULL, pass the same copy to every call
 * (one per -o; a later value wins), and free(*copy) once cfg is no longer
 * used (graph_new copies what it keeps). A call parses the earlier specs
 * again, so set cfg fields yourself after the last call, not between calls.
 *
 * 0; -EINVAL with the reason in errbuf (an unknown key, a missing value), or
 * -ENOMEM. On failure cfg and *copy are unchanged.
 */
int graph_options_parse(const char *spec, struct graph_config *cfg, char **copy, char *errbuf,
			size_t errsize) GRAPH_MUST_CHECK;

struct graph;

/* A new client, or NULL with *err set (-EINVAL for a bad URL, such as
 * http:// to a host that is not loopback; -ENOENT when config_dir is NULL
 * and neither XDG_CONFIG_HOME nor HOME is an absolute path; -ENOMEM). No
 * network traffic. */
struct graph *graph_new(const struct graph_config *cfg, int *err);
void graph_free(struct graph *g);

/* ---- requests --------------------------------------------------------------- */

struct graph_response {
	long status;	 /* HTTP status; 0 when no response came */
	struct buf body; /* the body, NUL-terminated */
	char content_type[96];
	char etag[160];	    /* ETag header, if any */
	char location[512]; /* Location header, if any (410 on delta) */
	char code[64];	    /* the Graph error code of an error body, if any */
};

void graph_response_init(struct graph_response *r);
void graph_response_release(struct graph_response *r);

/* One request header besides the ones the client always sends. */
struct graph_header {
	const char *name;
	const char *value;
};

/*
 * Send one request and wait for its final answer, retrying 429, 503, 504 and
 * network errors (Retry-After honoured, backoff with jitter) up to
 * max_attempts. path is relative to the mailbox ("/contacts/ID" becomes
 * ".../me/contacts/ID"), or to the service root when it starts with "//"
 * ("//$batch"), or an absolute URL of graph_url's host (a nextLink).
 * Prefixed with GRAPH_BETA, either of the first two forms names the same
 * place under the beta service root instead: graph_url with its final
 * "/v1.0" replaced by "/beta" (-ENOTSUP when graph_url does not end in
 * "/v1.0": see graph_has_beta). body may be NULL. Returns 0 when a
 * response arrived (any status: look at resp->status) or -errno when none
 * did (-ETIMEDOUT, -ECONNREFUSED, -EHOSTUNREACH, -EIO, -ENOMEM, -EACCES for
 * an authentication failure, -ENOTSUP for a beta path without a beta
 * root). resp must have been initialised; it is reset first.
 */
int graph_request(struct graph *g, const char *method, const char *path,
		  const struct graph_header *headers, size_t nheaders, const void *body, size_t len,
		  const char *content_type, struct graph_response *resp) GRAPH_MUST_CHECK;

/* Whether this client can address the beta service root: graph_url ends in
 * "/v1.0" (the default does). */
int graph_has_beta(const struct graph *g);

/* Whether an absolute URL (a stored nextLink or deltaLink) is on this
 * client's service root (scheme, host and port of graph_url): only those
 * are followed. */
int graph_link_is_ours(const struct graph *g, const char *url);

/* The errno for an HTTP status and Graph error code: 0 for 2xx, -ENOENT for
 * 404, -EEXIST for 409, -ESTALE for 412 and for an expired delta cursor (410,
 * syncStateNotFound, resyncRequired), -EACCES for 401/403, -EINVAL for other
 * 400s, -E2BIG for 413, -EAGAIN for 429/503 that outlived the retries,
 * -EIO otherwise. The one place where Graph errors become errno. */
int graph_errno(long status, const char *code);

/* Whether a request that ended with status (0: no answer at all) may
 * succeed when sent again later: the server was busy or away (429 past the
 * retries, 5xx). Any other failure would only come again. */
int graph_status_transient(long status);

/* GET path and parse the body as JSON into *out (to cJSON_Delete). 0 or
 * -errno as graph_errno() says; -EPROTO for a body that is not JSON. */
int graph_get_json(struct graph *g, const char *path, const struct graph_header *headers,
		   size_t nheaders, cJSON **out) GRAPH_MUST_CHECK;

/* Send a JSON body (POST, PATCH, PUT) and parse the answer into *out when
 * out is not NULL and the answer has a body. */
int graph_send_json(struct graph *g, const char *method, const char *path, const cJSON *body,
		    const struct graph_header *headers, size_t nheaders,
		    cJSON **out) GRAPH_MUST_CHECK;

/* ---- collections ---------------------------------------------------------- */

/* Called once per item of a collection; a non-zero return stops the walk
 * and is returned by the walker. */
typedef int (*graph_item_fn)(const cJSON *item, void *ctx);

/* Walk a collection page by page, following @odata.nextLink. */
int graph_list(struct graph *g, const char *path, const struct graph_header *headers,
	       size_t nheaders, graph_item_fn fn, void *ctx) GRAPH_MUST_CHECK;

/*
 * One delta round: start from link (a stored @odata.deltaLink, or a first
 * delta path such as "/contactFolders/ID/contacts/delta?$select=..."),
 * follow @odata.nextLink pages, call fn for every item (removed ones carry
 * "@removed"; the same item may come twice), and on success set *next to
 * the new @odata.deltaLink (malloc'd). page_size: Prefer: odata.maxpagesize
 * (0: the server's). Returns -ESTALE when the cursor expired and the folder
 * must be synchronised again from scratch.
 */
int graph_delta(struct graph *g, const char *link, int page_size, graph_item_fn fn, void *ctx,
		char **next) GRAPH_MUST_CHECK;

/* ---- contact folders --------------------------------------------------------- */

/*
 * The default Contacts folder's id (malloc'd) into *id. No call names it, so
 * it is read off the folder listing (the parent of the folders in it, or,
 * where the listing includes the default folder, the folder whose parent is
 * not a contact folder), else off a contact of it (the documented
 * workaround): docs/graph.md, "Folders". 0 with *id NULL when the mailbox
 * cannot tell: the default folder holds no contact and no folder. -errno
 * when a request failed (*id NULL).
 */
int graph_default_folder(struct graph *g, char **id) GRAPH_MUST_CHECK;

/*
 * Every contact folder below the default one, by listing rather than delta:
 * GET /contactFolders, then each folder's childFolders, to any depth,
 * parents before children. fn gets each folder as Graph returns it (id,
 * displayName, parentFolderId: the default folder's id for the top level)
 * and may stop the walk with a non-zero return, which is returned. The
 * default folder itself is never among them.
 */
int graph_folder_walk(struct graph *g, graph_item_fn fn, void *ctx) GRAPH_MUST_CHECK;

/* ---- $batch --------------------------------------------------------------- */

struct graph_batch_item {
	/* in */
	const char *method;
	const char *url;      /* relative to the mailbox, like graph_request's path
			       * (GRAPH_BETA-prefixed: on the beta root) */
	const cJSON *body;    /* or NULL */
	const char *if_match; /* or NULL */
	/* out */
	int status;	       /* HTTP status of the item */
	char code[64];	       /* Graph error code, if any */
	char content_type[96]; /* its media type, without parameters; "" if none */
	cJSON *response;       /* its body, or NULL; freed by graph_batch_release */
};

/*
 * Send items (any number) in $batch requests of at most GRAPH_BATCH_MAX,
 * the v1.0 items and the beta ones (GRAPH_BETA) in batches of their own
 * (a $batch goes to one service root, its items relative to it), retrying
 * items that got 429/503 after their Retry-After (the mailbox is paused
 * meanwhile) until they get another answer or max_attempts pass.
 * Returns 0 when every item has a final status (look at each), or -errno
 * when a batch as a whole failed; then the items with a status (not 0) were
 * answered all the same, and the others were not.
 */
int graph_batch(struct graph *g, struct graph_batch_item *items, size_t n) GRAPH_MUST_CHECK;
void graph_batch_release(struct graph_batch_item *items, size_t n);

/* ---- photos ---------------------------------------------------------------- */

/* A contact's photo bytes into out and its media type into type. -ENOENT
 * when the contact has none. */
int graph_photo_get(struct graph *g, const char *contact_id, struct buf *out, char *type,
		    size_t type_size) GRAPH_MUST_CHECK;

/* The largest photo Graph takes is under 4 MB (profilephoto-update.md). */
#define GRAPH_PHOTO_MAX ((size_t)4 << 20)

/* Set a contact's photo (JPEG, PNG or GIF, under GRAPH_PHOTO_MAX bytes:
 * -E2BIG without a request otherwise). */
int graph_photo_put(struct graph *g, const char *contact_id, const void *data, size_t len,
		    const char *type) GRAPH_MUST_CHECK;

/* ---- authentication ------------------------------------------------------ */

/*
 * The device code flow: ask for a code, call show(url, code) so the person
 * can sign in elsewhere, poll at the given interval (authorization_pending,
 * slow_down), and store the refresh token in <config_dir>/<user or "me">.token
 * with mode 0600. -EACCES when the person declined, -ETIMEDOUT when the code
 * expired.
 */
int graph_login(struct graph *g,
		void (*show)(const char *url, const char *code, const char *message, void *ctx),
		void *ctx) GRAPH_MUST_CHECK;

/* Where the refresh token of this client's user is stored (malloc'd), or
 * NULL when out of memory. */
char *graph_token_path(const struct graph *g);

/* Forget the stored tokens. 0 also when there were none. */
int graph_logout(struct graph *g) GRAPH_MUST_CHECK;

/* ---- pauses ---------------------------------------------------------------- */

/* Pause the whole mailbox for ms milliseconds: no request leaves before it
 * has passed. A running pause is never shortened. */
void graph_pause(struct graph *g, long ms);

/* How long the running pause still lasts (ms); 0: none. A process that ends
 * inside a pause keeps its end for the next one (the server's Retry-After
 * was given to the mailbox, not to the process). */
long graph_pause_left_ms(struct graph *g);

/* hook(arg, ms) is called each time a pause is set or made longer, ms
 * from now, outside the client's locks, on the thread whose request met
 * the Retry-After (to keep the pause where a process killed meanwhile
 * leaves it for the next one). NULL: none. Set it before any request. */
void graph_on_pause(struct graph *g, void (*hook)(void *arg, long ms), void *arg);

/* With on, every request not yet on the wire gives up at once with
 * -ECANCELED instead of waiting for a slot, a pause or a backoff (one on the
 * wire finishes): an exit that does not wait out a Retry-After or a network
 * that is gone. Off lets requests go again. */
void graph_cancel(struct graph *g, int on);

/* ---- statistics ------------------------------------------------------------ */

struct graph_stats {
	unsigned long requests;	 /* HTTP requests sent (batches count once) */
	unsigned long retries;	 /* of those, retries */
	unsigned long throttled; /* 429 answers */
	int max_in_flight;	 /* the most slots taken at once */
};

void graph_stats(struct graph *g, struct graph_stats *out);

#endif
