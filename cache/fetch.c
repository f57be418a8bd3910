/*
 * Reading a contact folder from Graph: its contacts by delta, the ones that
 * carry our extension, their photos. The sync engine (sync_in.c) and
 * contactfs export both read a folder through these, so a request is
 * shaped in one place; what each does with the answers is its own.
 */
#include "cache_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* The page size of a contact delta round. */
#define CONTACT_PAGE 200
#define EXT_LIST                                                                       \
	"/contacts?$select=id&$top=1000&$filter=Extensions/any(f:f/id%20eq%20'" EXT_ID \
	"')&$expand=Extensions($filter=id%20eq%20'" EXT_ID "')"

int cache_fetch_contacts(struct graph *g, const char *folder_id, const char *link,
			 int (*fn)(const cJSON *item, void *ctx), void *ctx, char **next)
{
	char first[2048];

	/* Contact delta is documented for a folder (contact-delta.md), the
	 * default one included, by its id; never as /contacts/delta. */
	if (!link) {
		if ((size_t)snprintf(first, sizeof(first),
				     "/contactFolders/%s/contacts/delta?$select=%s", folder_id,
				     VCARD_GRAPH_SELECT) >= sizeof(first))
			return -ENAMETOOLONG;
		link = first;
	}
	return graph_delta(g, link, CONTACT_PAGE, fn, ctx, next);
}

struct ext_walk {
	int (*fn)(const char *id, const cJSON *ext, void *ctx);
	void *ctx;
};

static int on_ext(const cJSON *item, void *ctx)
{
	struct ext_walk *w = ctx;
	const cJSON *ext = cache_ext_of(item);
	const char *id = cache_jstr(item, "id");

	return ext && id ? w->fn(id, ext, w->ctx) : 0;
}

int cache_fetch_exts(struct graph *g, const char *base,
		     int (*fn)(const char *id, const cJSON *ext, void *ctx), void *ctx)
{
	struct ext_walk w = {fn, ctx};
	char path[1024];

	if ((size_t)snprintf(path, sizeof(path), "%s%s", base, EXT_LIST) >= sizeof(path))
		return -ENAMETOOLONG;
	return graph_list(g, path, NULL, 0, on_ext, &w);
}

/*
 * PidLidHasPicture (MS-OXPROPS: PSETID_Address, 0x8015, PT_BOOLEAN) in the
 * id form of extended-properties-overview.md, and the collection filter of
 * singlevaluelegacyextendedproperty-get.md: a value that is not a string is
 * compared through cast(). Colon, slash and space are encoded as that page
 * asks, the braces too (they are not URL characters).
 */
#define HAS_PICTURE_ID "Boolean%20%7B00062004-0000-0000-C000-000000000046%7D%20Id%200x8015"
#define PHOTO_FLAG_LIST                                                                       \
	"/contacts?$select=id&$top=1000&$filter=singleValueExtendedProperties%2FAny(ep%3A%20" \
	"ep%2Fid%20eq%20'" HAS_PICTURE_ID "'%20and%20cast(ep%2Fvalue,%20Edm.Boolean)%20eq%20true)"

struct flag_walk {
	int (*fn)(const char *id, void *ctx);
	void *ctx;
};

static int on_flagged(const cJSON *item, void *ctx)
{
	struct flag_walk *w = ctx;
	const char *id = cache_jstr(item, "id");

	return id ? w->fn(id, w->ctx) : 0;
}

int cache_fetch_photo_flags(struct graph *g, const char *base, int (*fn)(const char *id, void *ctx),
			    void *ctx)
{
	struct flag_walk w = {fn, ctx};
	char path[1024];

	if ((size_t)snprintf(path, sizeof(path), "%s%s", base, PHOTO_FLAG_LIST) >= sizeof(path))
		return -ENAMETOOLONG;
	return graph_list(g, path, NULL, 0, on_flagged, &w);
}

int cache_photo_flags_refused(int r)
{
	/* 400 and 501 (graph_errno: -EINVAL, -EIO); a 5xx that outlived the
	 * retries is -EIO too, and probing is right then as well. */
	return r == -EINVAL || r == -EIO;
}

size_t cache_photo_sample(size_t nfolders)
{
	return nfolders ? (CACHE_PHOTO_SAMPLE + nfolders - 1) / nfolders : CACHE_PHOTO_SAMPLE;
}

void cache_photos_init(struct cache_photo *p, size_t n)
{
	memset(p, 0, n * sizeof(*p));
	for (size_t i = 0; i < n; i++)
		buf_init(&p[i].data, (size_t)8 << 20);
}

void cache_photos_release(struct cache_photo *p, size_t n)
{
	for (size_t i = 0; p && i < n; i++)
		buf_release(&p[i].data);
}

int cache_fetch_photos(struct graph *g, struct cache_photo *p, size_t n)
{
	struct graph_batch_item items[GRAPH_BATCH_MAX];
	char urls[GRAPH_BATCH_MAX][1024];
	int r = 0;

	for (size_t start = 0; start < n && !r; start += GRAPH_BATCH_MAX) {
		size_t k = n - start < GRAPH_BATCH_MAX ? n - start : GRAPH_BATCH_MAX;

		memset(items, 0, k * sizeof(items[0]));
		for (size_t i = 0; i < k; i++) {
			snprintf(urls[i], sizeof(urls[i]), "%s/contacts/%s/photo/$value",
				 p[start + i].base, p[start + i].id);
			items[i].method = "GET";
			items[i].url = urls[i];
		}
		if ((r = graph_batch(g, items, k))) {
			graph_batch_release(items, k);
			break;
		}
		for (size_t i = 0; i < k && !r; i++) {
			struct cache_photo *ph = &p[start + i];
			const cJSON *body = items[i].response;

			ph->status = items[i].status;
			snprintf(ph->code, sizeof(ph->code), "%s", items[i].code);
			snprintf(ph->type, sizeof(ph->type), "%s",
				 items[i].content_type[0] ? items[i].content_type : "image/jpeg");
			buf_reset(&ph->data);
			/* Binary bodies come base64-encoded in a batch. */
			if (ph->status == 200 && cJSON_IsString(body))
				r = vcard_base64_decode(&ph->data, body->valuestring,
							strlen(body->valuestring), NULL);
			else if (ph->status == 200)
				log_warn("photo of contact %s: HTTP 200 without a body; none shown",
					 ph->id);
		}
		graph_batch_release(items, k);
	}
	return r;
}
