/*
 * Private to graph/: the client's state, shared by the request engine
 * (http.c), authentication (auth.c) and the API calls (api.c).
 */
#ifndef CONTACTFS_GRAPH_INT_H
#define CONTACTFS_GRAPH_INT_H

#include "graph.h"

#include <pthread.h>
#include <time.h>

#include <curl/curl.h>

/* The preference every request carries, $batch items included: ids that do
 * not change when a contact moves (concepts/outlook-immutable-id.md). */
#define GRAPH_PREFER_IDS "IdType=\"ImmutableId\""

struct graph {
	/* Set by graph_new, read-only afterwards. */
	char *graph_url; /* no trailing '/' */
	char *beta_url;	 /* graph_url with its final "/v1.0" as "/beta"; NULL: none */
	char *auth_url;	 /* no trailing '/' */
	char *tenant;
	char *client_id;  /* may be NULL */
	char *user;	  /* UPN or NULL */
	char *token_cmd;  /* may be NULL */
	char *config_dir; /* where the refresh token lives */
	char *mailbox;	  /* "/me" or "/users/<escaped upn>" */
	int timeout_s;
	int max_attempts;
	CURLSH *share; /* connection cache, DNS and TLS sessions */

	/*
	 * lock protects everything below; cond is signalled when a slot frees
	 * or a pause ends. Never held across a network call or a program run.
	 */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int in_flight;		      /* slots taken */
	int cancel;		      /* graph_cancel: waiting requests give up */
	struct timespec paused_until; /* CLOCK_MONOTONIC; 0: not paused */
	void (*pause_hook)(void *arg, long ms); /* graph_on_pause */
	void *pause_arg;
	struct graph_stats stats;
	unsigned rng;					  /* jitter */
	pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST]; /* for the CURLSH */

	/* auth_lock protects the cached access token; it is taken without
	 * lock held, and may be held across a token refresh (one refresh at a
	 * time; others wait for its result). Lock order: auth_lock, then
	 * lock. */
	pthread_mutex_t auth_lock;
	char *access_token;    /* cached; NULL: none yet */
	time_t access_expires; /* wall clock; 0: unknown */
};

/*
 * Put "Authorization: Bearer <token>" into out (size bytes). With
 * force_refresh, the cached token is dropped first (after a 401). Sources,
 * in order: token_cmd; the cached access token while it has more than a
 * minute left; the stored refresh token (refresh grant against auth_url).
 * -EACCES when there is no way to get a token (not logged in), -EIO when the
 * identity endpoint could not be reached. Never logs the token.
 */
int graph_auth_header(struct graph *g, int force_refresh, char *out, size_t size);

/* A plain HTTP exchange outside the scheduler (identity endpoints): form
 * POST of body to url. Same TLS rules and redaction as graph_request. */
int graph_http_form(struct graph *g, const char *url, const char *body,
		    struct graph_response *resp);

/* Looks at an answer while its request still holds its slots (so a pause it
 * sets is in force before anything else is sent). */
typedef void (*graph_answer_fn)(struct graph *g, const struct graph_response *resp);

/* graph_request, with the caller saying whether the request may be sent
 * twice (then a lost answer is retried, else -EIO with the outcome unknown),
 * how many scheduler slots it takes, and what to do with each answer before
 * the slots are given back (on_answer, may be NULL). */
int graph_request_slots(struct graph *g, const char *method, const char *path,
			const struct graph_header *headers, size_t nheaders, const void *body,
			size_t len, const char *content_type, int idempotent, int slots,
			graph_answer_fn on_answer, struct graph_response *resp);

/* path as the log shows it (out: size bytes, 512 is plenty): a link the
 * server gave (nextLink, deltaLink) without the service root, and a long
 * query cut, so that a line about it keeps its status (a $deltatoken is some
 * 1,500 characters). Returns path itself or out. */
const char *graph_path_for_log(const struct graph *g, const char *path, char *out, size_t size);

/* Whether a path is addressed to the beta service root (GRAPH_BETA). */
int graph_path_is_beta(const char *path);

/* Free the cached access token. */
void graph_auth_release(struct graph *g);

#endif
