/*
 * libFuzzer target for the Graph contact JSON -> vCard mapping.
 *
 * Parse the input as JSON; for an object (or each object of an array), map it
 * to a card, write that as vCard 3.0, parse it back (which must succeed: a
 * contact from the server must always render as a file we can read), and map
 * the card back to a Graph create-contact body. JSON the mapping refuses is
 * fine; crashes, leaks and unreadable output are not.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "util.h"
#include "vcard.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void one_contact(const cJSON *contact)
{
	struct vcard_error err = {0};
	struct vcard *card = NULL;
	struct vcard **again = NULL;
	size_t nagain = 0;
	cJSON *body = NULL;
	struct buf out;
	int r;

	buf_init(&out, 0);
	if (vcard_from_graph(contact, NULL, 0, NULL, &card, &err) != 0)
		goto out;
	r = vcard_write(card, VCARD_V30, &out);
	if (r == -ENOMEM || r == -E2BIG)
		goto out;
	if (r != 0) {
		fprintf(stderr, "vcard_write of a card from Graph JSON failed: %d\n", r);
		abort();
	}
	r = vcard_parse(out.data, out.len, &again, &nagain, &err);
	if (r == -ENOMEM)
		goto out;
	if (r != 0 || nagain != 1) {
		fprintf(stderr,
			"vCard written from Graph JSON does not parse back (%d, %zu cards): %s\n"
			"---\n%.*s---\n",
			r, nagain, err.msg, (int)out.len, out.data);
		abort();
	}
	/* -EINVAL is allowed here only as a refusal with a reason; it must not
	 * crash or leak. */
	if (vcard_to_graph(again[0], &body, &err) == 0)
		cJSON_Delete(body);
out:
	if (again)
		vcard_free_all(again, nagain);
	vcard_free(card);
	buf_release(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	cJSON *json = cJSON_ParseWithLength((const char *)data, size);
	const cJSON *item;

	if (!json)
		return 0;
	if (cJSON_IsObject(json)) {
		one_contact(json);
	} else if (cJSON_IsArray(json)) {
		cJSON_ArrayForEach(item, json)
		{
			if (cJSON_IsObject(item))
				one_contact(item);
		}
	}
	cJSON_Delete(json);
	return 0;
}
