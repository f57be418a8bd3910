/*
 * libFuzzer target: any vCard the parser accepts goes vCard -> Graph JSON
 * (+ our open extension) -> vCard and must come back with the same
 * properties, and the update from the server's copy to the unchanged file
 * must be displayName only, with no extension change. A group holding two
 * mapped properties may be reordered by the writer once (docs/mapping.md,
 * "Open points"): then one PATCH is applied as the server would, and the
 * round after it must be quiet.
 */
#include "util.h"
#include "vcard.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Properties we write from server fields, or derive, rather than carry. */
static int ours(const struct vcard_prop *p)
{
	if (!strcmp(p->name, "FN") && p->ncomps == 1 && p->comps[0].nvals == 1 &&
	    !p->comps[0].vals[0][0])
		return 1; /* an empty FN is replaced by a derived name */
	return !strcmp(p->name, "REV") || !strcmp(p->name, "X-CONTACTFS-CREATED") ||
	       (!strcmp(p->name, "PRODID") && p->ncomps &&
		strcasestr(p->comps[0].vals[0], "contactfs"));
}

/* Every property of a is in b, once; b may add only FN, N and UID. */
static int same_props(const struct vcard *a, const struct vcard *b, int exact)
{
	unsigned char *used = calloc(b->nprops + 1, 1);
	int ok = used != NULL;

	for (size_t i = 0; ok && i < a->nprops; i++) {
		size_t j;

		if (!exact && ours(&a->props[i]))
			continue;
		for (j = 0; j < b->nprops; j++)
			if (!used[j] && vcard_prop_equal(&a->props[i], &b->props[j]))
				break;
		if (j == b->nprops)
			ok = 0;
		else
			used[j] = 1;
	}
	for (size_t j = 0; ok && j < b->nprops; j++)
		if (!used[j] &&
		    (exact || (!ours(&b->props[j]) && strcmp(b->props[j].name, "FN") &&
			       strcmp(b->props[j].name, "N") && strcmp(b->props[j].name, "UID"))))
			ok = 0;
	free(used);
	return ok;
}

/* The card as the file would hold it: written in version, read back. */
static struct vcard *as_file(const struct vcard *card, enum vcard_version version)
{
	struct vcard_error err;
	struct vcard *out = NULL;
	struct buf b;

	buf_init(&b, 0);
	if (vcard_write(card, version, &b) || vcard_parse_one(b.data, b.len, &out, &err))
		out = NULL;
	buf_release(&b);
	return out;
}

static struct vcard *render(const cJSON *contact, const struct vcard_prop *photo,
			    enum vcard_version version)
{
	struct vcard_error err;
	struct vcard *card = NULL, *file;

	if (vcard_from_graph(contact, photo ? photo->data : NULL, photo ? photo->len : 0,
			     photo ? photo->mediatype : NULL, &card, &err))
		abort();
	file = as_file(card, version);
	vcard_free(card);
	if (!file)
		abort();
	return file;
}

/* Apply a PATCH and an extension update to the server's copy. */
static void apply(cJSON *server, const cJSON *patch, const cJSON *ext)
{
	const cJSON *e;
	cJSON *arr, *old;

	cJSON_ArrayForEach(e, patch)
	{
		cJSON_DeleteItemFromObjectCaseSensitive(server, e->string);
		cJSON_AddItemToObject(server, e->string, cJSON_Duplicate(e, 1));
	}
	if (!ext)
		return;
	arr = cJSON_GetObjectItemCaseSensitive(server, "extensions");
	if (!arr)
		arr = cJSON_AddArrayToObject(server, "extensions");
	old = cJSON_GetArrayItem(arr, 0);
	if (!old) {
		old = cJSON_CreateObject();
		cJSON_AddItemToArray(arr, old);
	}
	cJSON_ArrayForEach(e, ext)
	{
		cJSON_DeleteItemFromObjectCaseSensitive(old, e->string);
		cJSON_AddItemToObject(old, e->string, cJSON_Duplicate(e, 1));
	}
}

/* Whether the update from server to file is displayName only. */
static int quiet(const cJSON *server, const struct vcard *file, cJSON **patch, cJSON **ext)
{
	struct vcard_error err;

	if (vcard_graph_diff(server, file, patch, ext, &err))
		abort();
	return cJSON_GetArraySize(*patch) == 1 &&
	       cJSON_GetObjectItemCaseSensitive(*patch, "displayName") && !*ext;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vcard *in = NULL, *file = NULL, *again = NULL, *back = NULL;
	cJSON *server = NULL, *patch = NULL, *ext = NULL;
	struct vcard_error err;
	enum vcard_version v;

	if (vcard_parse_one((const char *)data, size, &in, &err))
		return 0;
	v = in->version == VCARD_V40 ? VCARD_V40 : VCARD_V30;
	/* Start from the file as we would hold it; where writing it twice is
	 * not yet a fixed point, the parser and writer are what is tested
	 * (fuzz_vcard_parse), not the mapping. */
	file = as_file(in, v);
	again = file ? as_file(file, v) : NULL;
	if (!file || !again || !same_props(file, again, 1))
		goto out;
	if (vcard_to_graph(file, &server, &err))
		abort();
	cJSON_AddStringToObject(server, "id", "AAMkFUZZ=");
	back = render(server, vcard_photo(file), v);
	if (!same_props(file, back, 0))
		abort();
	if (!quiet(server, back, &patch, &ext)) {
		apply(server, patch, ext);
		cJSON_Delete(patch);
		cJSON_Delete(ext);
		patch = ext = NULL;
		vcard_free(back);
		back = render(server, vcard_photo(file), v);
		if (!quiet(server, back, &patch, &ext))
			abort();
	}
out:
	cJSON_Delete(server);
	cJSON_Delete(patch);
	cJSON_Delete(ext);
	vcard_free(in);
	vcard_free(file);
	vcard_free(again);
	vcard_free(back);
	return 0;
}
