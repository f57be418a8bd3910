/*
 * vcard-bench — parse + write throughput of the vcard module, for
 * scripts/bench-vcard.
 *
 * usage: vcard-bench [-n REPETITIONS] FILE
 *
 * Reads FILE once, then REPETITIONS times (default 5): parses every card and
 * writes every card as vCard 3.0 into one buffer. Prints one line of
 * key=value pairs:
 *   vcard-bench file=F cards=C bytes=B reps=N seconds=S cards_per_s=X mb_per_s=Y
 * where seconds is the wall time (CLOCK_MONOTONIC) of all repetitions and
 * MB/s counts input bytes (1 MB = 10^6 bytes). Exit 0, or 1 on any error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"
#include "vcard.h"

static int read_file(const char *path, struct buf *b)
{
	char chunk[1 << 16];
	FILE *f = fopen(path, "rb");
	size_t n;
	int r = 0;

	if (!f)
		return -errno;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		r = buf_add(b, chunk, n);
		if (r)
			break;
	}
	if (!r && ferror(f))
		r = -EIO;
	fclose(f);
	return r;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One repetition: parse all, write all as 3.0. Returns the number of cards
 * or -1 (after printing why). */
static long one_pass(const struct buf *in, struct buf *out)
{
	struct vcard_error err = {0};
	struct vcard **cards = NULL;
	size_t n = 0;
	int r;

	r = vcard_parse(in->data, in->len, &cards, &n, &err);
	if (r) {
		fprintf(stderr, "vcard-bench: parse failed (%d): %s\n", r, err.msg);
		return -1;
	}
	buf_reset(out);
	for (size_t i = 0; i < n; i++) {
		r = vcard_write(cards[i], VCARD_V30, out);
		if (r) {
			fprintf(stderr, "vcard-bench: write of card %zu failed: %d\n", i + 1, r);
			vcard_free_all(cards, n);
			return -1;
		}
	}
	vcard_free_all(cards, n);
	return (long)n;
}

int main(int argc, char **argv)
{
	struct buf in, out;
	const char *path = NULL;
	long reps = 5, cards = 0;
	double t0, secs;
	int rc = 1;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-n") && i + 1 < argc) {
			char *end;

			reps = strtol(argv[++i], &end, 10);
			if (*end || reps < 1) {
				fprintf(stderr, "vcard-bench: -n takes a positive number\n");
				return 2;
			}
		} else if (!path && argv[i][0] != '-') {
			path = argv[i];
		} else {
			path = NULL;
			break;
		}
	}
	if (!path) {
		fprintf(stderr, "usage: vcard-bench [-n REPETITIONS] FILE\n");
		return 2;
	}

	buf_init(&in, (size_t)1 << 30);
	buf_init(&out, (size_t)1 << 30);
	if (read_file(path, &in)) {
		fprintf(stderr, "vcard-bench: cannot read %s\n", path);
		goto out;
	}
	/* One untimed pass warms the caches and the allocator. */
	if (one_pass(&in, &out) < 0)
		goto out;
	t0 = now();
	for (long i = 0; i < reps; i++) {
		cards = one_pass(&in, &out);
		if (cards < 0)
			goto out;
	}
	secs = now() - t0;
	printf("vcard-bench file=%s cards=%ld bytes=%zu reps=%ld seconds=%.6f cards_per_s=%.0f "
	       "mb_per_s=%.2f\n",
	       path, cards, in.len, reps, secs, (double)cards * (double)reps / secs,
	       (double)in.len * (double)reps / secs / 1e6);
	rc = 0;
out:
	buf_release(&in);
	buf_release(&out);
	return rc;
}
