/*
 * libFuzzer target for the vCard parser and writer.
 *
 * Parse the input; for every card, write it as 3.0 and as 4.0 and parse what
 * we wrote. Whatever the input, the parser must answer 0 or an error (never
 * crash, hang or leak), and our own output must always parse again, with no
 * repair: a card we accepted but cannot read back would be a file the mount
 * serves and then refuses on the next save, and one that needs a repair would
 * not be the strict RFC output we promise.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "util.h"
#include "vcard.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void write_and_reparse(const struct vcard *card, enum vcard_version version)
{
	struct vcard_error err = {0};
	struct vcard **again = NULL;
	size_t nagain = 0;
	struct buf out;
	int r;

	buf_init(&out, 0);
	r = vcard_write(card, version, &out);
	if (r == -ENOMEM || r == -E2BIG)
		goto out;
	if (r != 0) {
		fprintf(stderr, "vcard_write(%d) of a parsed card failed: %d\n", version, r);
		abort();
	}
	r = vcard_parse(out.data, out.len, &again, &nagain, &err);
	if (r == -ENOMEM)
		goto out;
	/* Our output is strict: reading it back needs no repair, so no
	 * repair of the input survives into a file we write. */
	if (r != 0 || nagain != 1 || again[0]->warning) {
		fprintf(stderr,
			"our own vCard %d.%d output does not parse back strictly (%d, %zu cards): "
			"%s%s\n---\n%.*s---\n",
			version / 10, version % 10, r, nagain, err.msg,
			r == 0 && nagain == 1 && again[0]->warning ? again[0]->warning : "",
			(int)out.len, out.data);
		abort();
	}
	vcard_free_all(again, nagain);
out:
	buf_release(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vcard_error err = {0};
	struct vcard **cards = NULL;
	size_t ncards = 0;

	if (vcard_parse((const char *)data, size, &cards, &ncards, &err) != 0)
		return 0;
	for (size_t i = 0; i < ncards; i++) {
		write_and_reparse(cards[i], VCARD_V30);
		write_and_reparse(cards[i], VCARD_V40);
	}
	vcard_free_all(cards, ncards);
	return 0;
}
