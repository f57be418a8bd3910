#include "check.h"

struct check_case *check_cases;

int main(int argc, char **argv)
{
	int failures = 0, ran = 0;

	for (struct check_case *c = check_cases; c; c = c->next) {
		int failed = 0;

		if (argc > 1 && strcmp(argv[1], c->name) != 0)
			continue;
		c->fn(&failed);
		ran++;
		if (failed) {
			failures++;
			fprintf(stderr, "FAIL %s\n", c->name);
		} else if (argc <= 1) {
			fprintf(stderr, "ok   %s\n", c->name);
		}
	}
	if (ran == 0) {
		fprintf(stderr, "no test named %s\n", argc > 1 ? argv[1] : "(any)");
		return 2;
	}
	return failures ? 1 : 0;
}
