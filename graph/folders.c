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

static int add_folder(const cJSON *item, void *ctx)
{
	cJSON *copy = cJSON_Duplicate(item, 1);

	if (!copy || !cJSON_AddItemToArray(ctx, copy)) {
		cJSON_Delete(copy);
		return -ENOMEM;
	}
	return 0;
}

static const char *field(const cJSON *item, const char *name)
{
	return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(item, name));
}

/* Whether a folder of list has this id. */
static const cJSON *listed(const cJSON *list, const char *id)
{
	const cJSON *x;

	cJSON_ArrayForEach(x, list)
	{
		if (id && field(x, "id") && !strcmp(field(x, "id"), id))
			return x;
	}
	return NULL;
}

/*
 * The default folder from the folder listing (user-list-contactfolders.md).
 * Its text says the listing is of the folders in the default one, which
 * leaves the default out (concepts/known-issues.md); its example lists a
 * "Contacts" folder that may be the default itself, whose parent is the
 * mailbox's root. Under either reading, the folders whose parent is not
 * listed share one parent P: when P is a contact folder (GET answers), it is
 * the default; when it is not, the one listed folder inside P is.
 */
static int default_from_listing(struct graph *g, char **id)
{
	cJSON *list = cJSON_CreateArray(), *probe = NULL;
	const cJSON *x;
	const char *top = NULL, *inner = NULL;
	char path[1024];
	int n_inner = 0, r;

	if (!list)
		return -ENOMEM;
	if ((r = graph_list(g, "/contactFolders?$select=id,parentFolderId", NULL, 0, add_folder,
			    list)))
		goto out;
	cJSON_ArrayForEach(x, list)
	{
		const char *p = field(x, "parentFolderId");

		if (!p || listed(list, p))
			continue;
		if (top && strcmp(top, p)) {
			r = 0; /* two roots: cannot tell */
			goto out;
		}
		top = p;
		inner = field(x, "id");
		n_inner++;
	}
	if (!top || strpbrk(top, "/?#") ||
	    snprintf(path, sizeof(path), "/contactFolders/%s?$select=id", top) >= (int)sizeof(path))
		goto out;
	r = graph_get_json(g, path, NULL, 0, &probe);
	if (!r) {
		*id = strdup(top); /* a contact folder: the default */
	} else if (r == -ENOENT || r == -EINVAL) {
		r = 0; /* no contact folder (the mailbox's root) */
		if (n_inner != 1 || !inner)
			goto out;
		*id = strdup(inner);
	} else {
		goto out;
	}
	if (!*id)
		r = -ENOMEM;
out:
	cJSON_Delete(probe);
	cJSON_Delete(list);
	return r;
}

int graph_default_folder(struct graph *g, char **id)
{
	char *from_contact = NULL;
	int r;

	*id = NULL;
	/* The folder listing first: it says the most about the tree. Then the
	 * known-issues workaround, a contact of the default folder naming its
	 * parent (user-list-contacts.md: /contacts is the default folder). */
	if ((r = default_from_listing(g, id)) || *id)
		return r;
	r = graph_list(g, "/contacts?$top=1&$select=parentFolderId", NULL, 0, first_parent,
		       &from_contact);
	if (r == 1) {
		*id = from_contact;
		return 0;
	}
	free(from_contact);
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

/* One folder's childFolders listing, on a thread of its own: the folders
 * of a level of the tree are listed side by side (the scheduler keeps the
 * mailbox at GRAPH_MAX_IN_FLIGHT), and handed to the walk in order. */
struct child_list {
	struct graph *g;
	char path[1024];
	cJSON *items; /* the listing's items, in order */
	int r;
	pthread_t thread;
	int started;
};

static void *list_children(void *arg)
{
	struct child_list *x = arg;

	x->r = graph_list(x->g, x->path, NULL, 0, add_folder, x->items);
	return NULL;
}

int graph_folder_walk(struct graph *g, graph_item_fn fn, void *ctx)
{
	struct walk w = {fn, ctx, cJSON_CreateArray(), cJSON_CreateObject(), 0};
	struct child_list x[GRAPH_MAX_IN_FLIGHT];
	int r;

	if (!w.queue || !w.seen) {
		r = -ENOMEM;
		goto out;
	}
	/* user-list-contactfolders.md: the folders in the default one; then
	 * contactfolder-list-childfolders.md for each, to any depth, a few at
	 * a time; fn sees them in the order a walk one by one would. */
	r = graph_list(g, "/contactFolders", NULL, 0, walk_item, &w);
	while (!r && cJSON_GetArraySize(w.queue) > 0) {
		size_t n = 0;

		for (; n < GRAPH_MAX_IN_FLIGHT && cJSON_GetArraySize(w.queue) > 0 && !r; n++) {
			cJSON *head = cJSON_DetachItemFromArray(w.queue, 0);
			const char *id = cJSON_GetStringValue(head);

			x[n] = (struct child_list){.g = g, .items = cJSON_CreateArray()};
			if (!id || strpbrk(id, "/?#") ||
			    snprintf(x[n].path, sizeof(x[n].path),
				     "/contactFolders/%s/childFolders",
				     id) >= (int)sizeof(x[n].path))
				r = -EPROTO;
			else if (!x[n].items)
				r = -ENOMEM;
			cJSON_Delete(head);
		}
		for (size_t i = 0; i < n && !r; i++)
			x[i].started = !pthread_create(&x[i].thread, NULL, list_children, &x[i]);
		for (size_t i = 0; i < n && !r; i++) {
			if (x[i].started)
				pthread_join(x[i].thread, NULL);
			else
				list_children(&x[i]); /* no thread: in turn, then */
		}
		for (size_t i = 0; i < n; i++) {
			const cJSON *item;

			if (!r)
				r = x[i].r;
			cJSON_ArrayForEach(item, x[i].items)
			{
				if (!r)
					r = walk_item(item, &w);
			}
			cJSON_Delete(x[i].items);
		}
	}
out:
	cJSON_Delete(w.queue);
	cJSON_Delete(w.seen);
	return r;
}
