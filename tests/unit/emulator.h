/*
 * emulator — start tests/graph_emulator/server.py for a C test, talk to its
 * admin endpoints, stop it. The source tree comes from $CONTACTFS_SRC (set by
 * CMake for every unit test).
 */
#ifndef CONTACTFS_TEST_EMULATOR_H
#define CONTACTFS_TEST_EMULATOR_H

#include <sys/types.h>
#include <unistd.h>

#include <cjson/cJSON.h>

struct emulator {
	pid_t pid;
	int port;
	char url[64];       /* "http://127.0.0.1:PORT" */
	char graph_url[96]; /* url + "/v1.0" */
	char token[64];     /* an access token it always accepts */
};

/* The interpreter the emulator runs under (scripts/setup installs it). */
#define EMULATOR_PYTHON "/usr/bin/python3"

/* Skip the calling case when EMULATOR_PYTHON cannot be run here. */
#define EMULATOR_NEEDED()                                                                   \
	do {                                                                                \
		if (access(EMULATOR_PYTHON, X_OK))                                          \
			SKIP(EMULATOR_PYTHON " is missing: the Graph emulator cannot run"); \
	} while (0)

/* Start the emulator with extra arguments (NULL-terminated, may be NULL),
 * wait for "listening on". 0, or -1 with a message on stderr. */
int emulator_start(struct emulator *e, const char *const *args);

/* Stop it (SIGTERM, then wait). Returns its exit status, or -1. */
int emulator_stop(struct emulator *e);

/* For a test's out: label: stop the emulator if it runs, and fail the test
 * if it did not exit 0 (without a jump, so the rest of the cleanup runs).
 * The test declares its emulator "= {0}", so this is right before the start. */
#define EMULATOR_DOWN(e)                                                                     \
	do {                                                                                 \
		if ((e).pid > 0 && emulator_stop(&(e)) != 0) {                               \
			fprintf(stderr, "%s:%d: the emulator did not exit 0\n", __FILE__, __LINE__); \
			CHECK_FAILED = 1;                                                    \
		}                                                                            \
	} while (0)

/* An admin request (no token): method, path ("/_emulator/faults"), JSON
 * body or NULL. Returns the parsed answer (to cJSON_Delete) or NULL. */
cJSON *emulator_admin(struct emulator *e, const char *method, const char *path, const char *body);

/* A number from /_emulator/requests, e.g. "max_in_flight"; -1 on error. */
double emulator_stat(struct emulator *e, const char *key);

#endif
