#include "vcard_int.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct arena_chunk {
	struct arena_chunk *next;
	size_t used;
	size_t size;
	_Alignas(8) unsigned char data[];
};

struct vcard_arena {
	struct arena_chunk *head;
	size_t next_size; /* size of the next chunk; doubles up to a limit */
};

enum { ARENA_FIRST = 2048, ARENA_MAX_CHUNK = 256 * 1024 };

struct vcard_arena *vcard_arena_new(void)
{
	struct vcard_arena *a = calloc(1, sizeof(*a));

	if (a)
		a->next_size = ARENA_FIRST;
	return a;
}

void vcard_arena_free(struct vcard_arena *a)
{
	struct arena_chunk *c, *next;

	if (!a)
		return;
	for (c = a->head; c; c = next) {
		next = c->next;
		free(c);
	}
	free(a);
}

void *vcard_arena_alloc(struct vcard_arena *a, size_t n)
{
	struct arena_chunk *c = a->head;
	size_t size;
	void *p;

	n = (n + 7) & ~(size_t)7;
	if (n == 0)
		n = 8;
	if (!c || c->size - c->used < n) {
		size = a->next_size;
		if (size < n)
			size = n;
		if (n > SIZE_MAX - sizeof(*c))
			return NULL;
		c = malloc(sizeof(*c) + size);
		if (!c)
			return NULL;
		c->used = 0;
		c->size = size;
		/* A big one-off block goes behind the current chunk so the
		 * current chunk's free space stays usable. */
		if (a->head && n > a->next_size) {
			c->next = a->head->next;
			a->head->next = c;
		} else {
			c->next = a->head;
			a->head = c;
			if (a->next_size < ARENA_MAX_CHUNK)
				a->next_size *= 2;
		}
	}
	p = c->data + c->used;
	c->used += n;
	memset(p, 0, n);
	return p;
}

char *vcard_arena_strndup(struct vcard_arena *a, const char *s, size_t n)
{
	char *p = n == SIZE_MAX ? NULL : vcard_arena_alloc(a, n + 1);

	if (p) {
		memcpy(p, s, n);
		p[n] = '\0';
	}
	return p;
}

char *vcard_arena_strdup(struct vcard_arena *a, const char *s)
{
	return vcard_arena_strndup(a, s, strlen(s));
}
