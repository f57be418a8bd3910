#include "check.h"

#include <stdarg.h>

struct check_case *check_cases;

static char skip_reason[512];

void check_skip(int *failed, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(skip_reason, sizeof(skip_reason), fmt, ap);
	va_end(ap);
	*failed = CHECK_SKIPPED;
}

int main(int argc, char **argv)
{
	int passed = 0, failures = 0, skipped = 0;

	for (struct check_case *c = check_cases; c; c = c->next) {
		int failed = 0;

		if (argc > 1 && strcmp(argv[1], c->name) != 0)
			continue;
		skip_reason[0] = '\0';
		c->fn(&failed);
		if (failed == CHECK_SKIPPED) {
			skipped++;
			fprintf(stderr, "SKIP %s: %s\n", c->name, skip_reason);
		} else if (failed) {
			failures++;
			fprintf(stderr, "FAIL %s\n", c->name);
		} else {
			passed++;
			if (argc <= 1)
				fprintf(stderr, "ok   %s\n", c->name);
		}
	}
	if (passed + failures + skipped == 0) {
		fprintf(stderr, "no test named %s\n", argc > 1 ? argv[1] : "(any)");
		return 2;
	}
	if (argc <= 1)
		fprintf(stderr, "%d passed, %d failed, %d skipped\n", passed, failures, skipped);
	if (failures)
		return 1;
	return passed ? 0 : CHECK_SKIP_STATUS;
}
