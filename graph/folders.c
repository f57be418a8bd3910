/*
 * Contact folders as Graph documents them (docs/graph.md, "Folders"): the
 * default folder's id, which no listing gives directly, and the whole tree
 * by listing, which does not depend on what contactFolders/delta includes.
 */
#include "graph_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bounds a folder tree that would never end (a cycle the server should
 * never send). */
#define WALK_MAX 10000

static int first_parent(const cJSON *item, void *ctx)
{
	char **id = ctx;
	const char *p = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(item, "parentFolderId"));

	if (!p || !*p)
		return 0;
	*id = strdup(p);
	return *id ? 1 : -ENOMEM; /* 1: stop the walk, found */
}

int graph_default_folder(struct graph *g, char **id)
{
	/* concepts/known-issues.md: /me/contactFolders leaves the default
	 * folder out; a contact of it, or a folder in it, names it as its
	 * parent. */
	static const char *const ask[] = {
		"/contacts?$top=1&$select=parentFolderId",
		"/contactFolders?$top=1&$select=parentFolderId",
	};
	int r = 0;

	*id = NULL;
	for (size_t i = 0; i < sizeof(ask) / sizeof(ask[0]) && !*id; i++) {
		r = graph_list(g, ask[i], NULL, 0, first_parent, id);
		if (r == 1)
			r = 0;
		if (r)
			break;
	}
	if (r) {
		free(*id);
		*id = NULL;
	}
	return r;
}

struct walk {
	graph_item_fn fn;
	void *ctx;
	cJSON *queue; /* folder ids whose children are still to list */
	cJSON *seen;  /* id -> true */
	int count;
};

static int walk_item(const cJSON *item, void *ctx)
{
	struct walk *w = ctx;
	const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(item, "id"));
	int r;

	if (!id || cJSON_GetObjectItemCaseSensitive(w->seen, id))
		return 0;
	if (++w->count > WALK_MAX)
		return -ELOOP;
	if (!cJSON_AddTrueToObject(w->seen, id) ||
	    !cJSON_AddItemToArray(w->queue, cJSON_CreateString(id)))
		return -ENOMEM;
	r = w->fn(item, w->ctx);
	return r;
}

int graph_folder_walk(struct graph *g, graph_item_fn fn, void *ctx)
{
	struct walk w = {fn, ctx, cJSON_CreateArray(), cJSON_CreateObject(), 0};
	char path[1024];
	int r;

	if (!w.queue || !w.seen) {
		r = -ENOMEM;
		goto out;
	}
	/* user-list-contactfolders.md: the folders in the default one; then
	 * contactfolder-list-childfolders.md for each, to any depth. */
	r = graph_list(g, "/contactFolders", NULL, 0, walk_item, &w);
	while (!r && cJSON_GetArraySize(w.queue) > 0) {
		cJSON *head = cJSON_DetachItemFromArray(w.queue, 0);
		const char *id = cJSON_GetStringValue(head);

		if (!id || strpbrk(id, "/?#") ||
		    snprintf(path, sizeof(path), "/contactFolders/%s/childFolders", id) >=
			    (int)sizeof(path))
			r = -EPROTO;
		else
			r = graph_list(g, path, NULL, 0, walk_item, &w);
		cJSON_Delete(head);
	}
out:
	cJSON_Delete(w.queue);
	cJSON_Delete(w.seen);
	return r;
}
