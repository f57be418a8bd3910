/*
 * check — the unit-test harness. A test file defines cases with TEST(name);
 * each registers itself at start-up. The binary runs the case named by its
 * first argument (how ctest calls it, one ctest test per case) or, with no
 * argument, every case. A failed CHECK prints file, line and the expression
 * and ends the case through its out: label (below). SKIP ends a case that cannot run here (a missing program
 * or fixture) as skipped, never as passed, and prints its reason on one line
 * ("SKIP name: reason"). The process exits 1 if any case failed, else
 * CHECK_SKIP_STATUS if every case it ran was skipped (ctest's SKIP_RETURN_CODE,
 * set in CMakeLists.txt, counts that as a skip), else 0. Run with no
 * argument, it ends with "N passed, M failed, K skipped".
 *
 * Cleanup: a case ends as the project's functions do, through one `out:`
 * label that frees what the case owns, so a failed CHECK or a SKIP leaks
 * nothing (a leak under ASan would hide the real failure). So every function
 * that uses CHECK or SKIP has an out: label; owned pointers start NULL and
 * buffers are set up before the first CHECK, so the cleanup after out: is
 * right wherever the case stopped. A case that owns nothing ends "out:;".
 */
#ifndef CONTACTFS_CHECK_H
#define CONTACTFS_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct check_case {
	const char *name;
	void (*fn)(int *failed);
	struct check_case *next;
};

extern struct check_case *check_cases;

/* How a failed CHECK or a SKIP leaves the case. */
#define CHECK_END_ goto out

/* The exit status of a run whose cases were all skipped (as automake's). */
#define CHECK_SKIP_STATUS 77
/* A case's failed flag after SKIP: nonzero, so helpers that stop on
 * CHECK_FAILED stop on a skip too. */
#define CHECK_SKIPPED 2

/* Mark the case skipped with a reason (printf-style, one line). Use SKIP. */
void check_skip(int *failed, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define TEST(name)                                                           \
	static void test_##name(int *check_failed_);                         \
	__attribute__((constructor)) static void check_register_##name(void) \
	{                                                                    \
		static struct check_case c = {#name, test_##name, NULL};     \
		c.next = check_cases;                                        \
		check_cases = &c;                                            \
	}                                                                    \
	static void test_##name(int *check_failed_)

#define CHECK(expr)                                                                              \
	do {                                                                                     \
		if (!(expr)) {                                                                   \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #expr); \
			*check_failed_ = 1;                                                      \
			CHECK_END_;                                                              \
		}                                                                                \
	} while (0)

#define CHECK_STR(got, want)                                                                 \
	do {                                                                                 \
		const char *g_ = (got), *w_ = (want);                                        \
		if (!g_ || !w_ || strcmp(g_, w_) != 0) {                                     \
			fprintf(stderr, "%s:%d: %s\n   got: [%s]\n  want: [%s]\n", __FILE__, \
				__LINE__, #got, g_ ? g_ : "(null)", w_ ? w_ : "(null)");     \
			*check_failed_ = 1;                                                  \
			CHECK_END_;                                                          \
		}                                                                            \
	} while (0)

#define CHECK_INT(got, want)                                                                  \
	do {                                                                                  \
		long long g_ = (long long)(got), w_ = (long long)(want);                      \
		if (g_ != w_) {                                                               \
			fprintf(stderr, "%s:%d: %s is %lld, want %lld\n", __FILE__, __LINE__, \
				#got, g_, w_);                                                \
			*check_failed_ = 1;                                                   \
			CHECK_END_;                                                           \
		}                                                                             \
	} while (0)

/* End the case as skipped, saying why: SKIP("%s is missing", path). Only for
 * what the machine lacks, never for a result the case did not expect. */
#define SKIP(...)                                       \
	do {                                            \
		check_skip(check_failed_, __VA_ARGS__); \
		CHECK_END_;                             \
	} while (0)

/* A test's failed flag, for helpers that take it along. */
#define CHECK_FAILED (*check_failed_)

#endif
