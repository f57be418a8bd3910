/*
 * The three-way merge of a written card with two Graph versions of its
 * contact (docs/design.md §6): ours is what the card changes against the
 * version it was made from (base), theirs the version it meets. A field only
 * ours changed is ours, a field only theirs changed stays theirs, and one
 * both changed to different values is a conflict. Used by the outbox (an
 * update meeting a newer server version) and at a write (a card made from
 * an older version than what the file shows).
 */
#include "cache_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char *const NOT_FIELDS[] = {
	"@odata.etag",	   "@odata.context", "id",	   "changeKey", "lastModifiedDateTime",
	"createdDateTime", "parentFolderId", "extensions", NULL};

static int is_field(const char *k)
{
	for (size_t i = 0; NOT_FIELDS[i]; i++)
		if (!strcmp(k, NOT_FIELDS[i]))
			return 0;
	return k[0] != '@';
}

static int same_value(const cJSON *a, const cJSON *b)
{
	if (!a || cJSON_IsNull(a))
		return !b || cJSON_IsNull(b) || (cJSON_IsArray(b) && !cJSON_GetArraySize(b)) ||
		       (cJSON_IsString(b) && !*b->valuestring);
	if (!b || cJSON_IsNull(b))
		return same_value(b, a);
	return cJSON_Compare(a, b, 1);
}

/* An object with no member set (an address of nulls and empty strings)
 * says nothing, as an absent one. */
static int blank_object(const cJSON *o)
{
	const cJSON *m;

	if (!cJSON_IsObject(o))
		return 0;
	cJSON_ArrayForEach(m, o)
	{
		if (!same_value(m, NULL) && !blank_object(m))
			return 0;
	}
	return 1;
}

int cache_same_fields(const cJSON *answer, const cJSON *stored)
{
	const cJSON *a;

	cJSON_ArrayForEach(a, answer)
	{
		const cJSON *b = cJSON_GetObjectItemCaseSensitive(stored, a->string);

		if (!is_field(a->string) || same_value(a, b) ||
		    (blank_object(a) && (!b || same_value(b, NULL) || blank_object(b))))
			continue;
		if (cJSON_IsObject(a) && cJSON_IsObject(b)) {
			/* Addresses: member by member, absent = null. */
			const cJSON *m;
			int same = 1;

			cJSON_ArrayForEach(m, a) same &= same_value(
				m, cJSON_GetObjectItemCaseSensitive(b, m->string));
			cJSON_ArrayForEach(m, b) same &= same_value(
				m, cJSON_GetObjectItemCaseSensitive(a, m->string));
			if (same)
				continue;
		}
		return 0;
	}
	return 1;
}

/* Whether the extension texts (uid, extra, orig) of two versions differ. */
static int ext_differs(const cJSON *a, const cJSON *b)
{
	static const char *const keys[] = {"uid", "extra", "orig"};

	for (size_t i = 0; i < 3; i++) {
		const char *x = a ? cache_jstr(a, keys[i]) : NULL,
			   *y = b ? cache_jstr(b, keys[i]) : NULL;

		if (strcmp(x ? x : "", y ? y : ""))
			return 1;
	}
	return 0;
}

/* Whether field f is one our edit changed (it is in our diff against the
 * base, and not just the display name repeated). */
static int claimed(const char *f, const cJSON *patch, const cJSON *base, const cJSON *theirs)
{
	const cJSON *p = cJSON_GetObjectItemCaseSensitive(patch, f);

	if (!p)
		return 0;
	if (!strcmp(f, "displayName"))
		return !same_value(p, cJSON_GetObjectItemCaseSensitive(base, f)) &&
		       !same_value(p, cJSON_GetObjectItemCaseSensitive(theirs, f));
	return 1;
}

/* Our extension's members in ext (a diff's) set in json's copy of it. */
static void put_ext(cJSON *json, const cJSON *ext)
{
	cJSON *exts, *mine, *it;

	if (!json || !ext)
		return;
	exts = cJSON_GetObjectItemCaseSensitive(json, "extensions");
	mine = cache_ext_of(json);
	if (!exts)
		exts = cJSON_AddArrayToObject(json, "extensions");
	if (mine) {
		cJSON_ArrayForEach(it, ext)
		{
			cJSON_DeleteItemFromObjectCaseSensitive(mine, it->string);
			cJSON_AddItemToObject(mine, it->string, cJSON_Duplicate(it, 1));
		}
	} else if (exts) {
		cJSON_AddItemToArray(exts, cJSON_Duplicate(ext, 1));
	}
}


cJSON *cache_merge_said(const cJSON *base, const cJSON *patch, const cJSON *ext)
{
	cJSON *said = cJSON_Duplicate(base, 1), *it;

	if (!said)
		return NULL;
	cJSON_ArrayForEach(it, patch)
	{
		cJSON_DeleteItemFromObjectCaseSensitive(said, it->string);
		cJSON_AddItemToObject(said, it->string, cJSON_Duplicate(it, 1));
	}
	put_ext(said, ext);
	return said;
}

int cache_merge(const cJSON *base, const cJSON *theirs, const struct vcard *card,
		struct cache_merge *m)
{
	struct vcard_error ve;
	cJSON *it;
	int r;

	memset(m, 0, sizeof(*m));
	buf_init(&m->fields, 4096);
	/* Ours: what the card changed against the version it was based on.
	 * Still to send: what it says otherwise than theirs. */
	if ((r = vcard_graph_diff(base, card, &m->patch, &m->ext, &ve)) ||
	    (r = vcard_graph_diff(theirs, card, &m->todo, &m->todo_ext, &ve)))
		return r;
	cJSON_ArrayForEach(it, m->todo)
	{
		const char *f = it->string;

		if (!is_field(f))
			continue;
		if (!claimed(f, m->patch, base, theirs)) {
			/* Theirs changed it; the card says what base said. */
			if (strcmp(f, "displayName") ||
			    !same_value(it, cJSON_GetObjectItemCaseSensitive(theirs, f)))
				m->lacks++;
			continue;
		}
		m->pending++;
		/* They changed it too, to something else. */
		if (!same_value(cJSON_GetObjectItemCaseSensitive(base, f),
				cJSON_GetObjectItemCaseSensitive(theirs, f))) {
			m->overlap = 1;
			if (buf_printf(&m->fields, "%s%s", m->fields.len ? ", " : "", f))
				return -ENOMEM;
		}
	}
	if (m->todo_ext && !m->ext)
		m->lacks++;
	if (m->ext && m->todo_ext) {
		m->pending++;
		if (ext_differs(cache_ext_of(base), cache_ext_of(theirs))) {
			m->overlap = 1;
			if (buf_printf(&m->fields, "%sthe properties Graph has no field for",
				       m->fields.len ? ", " : ""))
				return -ENOMEM;
		}
	}
	if (!m->pending || m->overlap)
		return 0;
	/* Theirs plus our fields, and our extension if our edit changed it. */
	if (!(m->merged = cJSON_Duplicate(theirs, 1)))
		return -ENOMEM;
	cJSON_ArrayForEach(it, m->todo)
	{
		if (!is_field(it->string) || !claimed(it->string, m->patch, base, theirs))
			continue;
		cJSON_DeleteItemFromObjectCaseSensitive(m->merged, it->string);
		cJSON_AddItemToObject(m->merged, it->string, cJSON_Duplicate(it, 1));
	}
	if (m->ext)
		put_ext(m->merged, m->todo_ext);
	return 0;
}

int cache_merge_remember(sqlite3 *db, int64_t cid, struct vcard *card, const cJSON *base,
			 const struct cache_merge *m, int local)
{
	char ck[256], photo[16], *text = NULL;
	cJSON *said;
	int r;

	if (!cache_version_of(card, ck, sizeof(ck), photo, sizeof(photo)))
		return 0;
	if (!(said = cache_merge_said(base, m->patch, m->ext)))
		return -ENOMEM;
	text = cJSON_PrintUnformatted(said);
	r = text ? cache_db_run(
			   db,
			   "INSERT INTO merges(cid, named, json, at, local) VALUES(?, ?, ?, ?, ?)",
			   "ittii", cid, ck, text, cache_now_ms(), (int64_t)local)
		 : -ENOMEM;
	if (!r)
		r = cache_db_run(
			db,
			"DELETE FROM merges WHERE at < ? OR (cid = ? AND seq NOT IN (SELECT seq "
			"FROM merges WHERE cid = ? ORDER BY seq DESC LIMIT 32))",
			"iii", cache_now_ms() - 24LL * 3600 * 1000, cid, cid);
	free(text);
	cJSON_Delete(said);
	return r;
}

void cache_merge_release(struct cache_merge *m)
{
	cJSON_Delete(m->patch);
	cJSON_Delete(m->ext);
	cJSON_Delete(m->todo);
	cJSON_Delete(m->todo_ext);
	cJSON_Delete(m->merged);
	buf_release(&m->fields);
	memset(m, 0, sizeof(*m));
}
