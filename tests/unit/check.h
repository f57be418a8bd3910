/*
 * check — the unit-test harness. A test file defines cases with TEST(name);
 * each registers itself at start-up. The binary runs the case named by its
 * first argument (how ctest calls it, one ctest test per case) or, with no
 * argument, every case. A failed CHECK prints file, line and the expression
 * and ends the case; the process exits 1 if any case failed.
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
			return;                                                                  \
		}                                                                                \
	} while (0)

#define CHECK_STR(got, want)                                                                 \
	do {                                                                                 \
		const char *g_ = (got), *w_ = (want);                                        \
		if (!g_ || !w_ || strcmp(g_, w_) != 0) {                                     \
			fprintf(stderr, "%s:%d: %s\n   got: [%s]\n  want: [%s]\n", __FILE__, \
				__LINE__, #got, g_ ? g_ : "(null)", w_ ? w_ : "(null)");     \
			*check_failed_ = 1;                                                  \
			return;                                                              \
		}                                                                            \
	} while (0)

#define CHECK_INT(got, want)                                                                  \
	do {                                                                                  \
		long long g_ = (long long)(got), w_ = (long long)(want);                      \
		if (g_ != w_) {                                                               \
			fprintf(stderr, "%s:%d: %s is %lld, want %lld\n", __FILE__, __LINE__, \
				#got, g_, w_);                                                \
			*check_failed_ = 1;                                                   \
			return;                                                               \
		}                                                                             \
	} while (0)

/* A test's failed flag, for helpers that take it along. */
#define CHECK_FAILED (*check_failed_)

#endif
