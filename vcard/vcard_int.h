/*
 * Private to vcard/: the per-card arena and helpers shared by the parser,
 * the writer and the Graph mapping.
 */
#ifndef CONTACTFS_VCARD_INT_H
#define CONTACTFS_VCARD_INT_H

#include "vcard.h"

#include <stddef.h>

/* A bump allocator: everything a card holds lives in its arena and is freed
 * at once with the card. Allocations are 8-byte aligned. */
struct vcard_arena;

struct vcard_arena *vcard_arena_new(void);
void vcard_arena_free(struct vcard_arena *a);
/* n bytes (zeroed), or NULL when out of memory. */
void *vcard_arena_alloc(struct vcard_arena *a, size_t n);
/* A NUL-terminated copy of s[0..n), or NULL. */
char *vcard_arena_strndup(struct vcard_arena *a, const char *s, size_t n);
char *vcard_arena_strdup(struct vcard_arena *a, const char *s);

/* Case-insensitive ASCII comparison, independent of the locale. */
int vcard_strcaseeq(const char *a, const char *b);

/* Whether s[0..n) starts with prefix / contains needle, ignoring ASCII
 * case. */
int vcard_prefix_ci(const char *s, size_t n, const char *prefix);
int vcard_contains_ci(const char *s, size_t n, const char *needle);

/* Length of the valid UTF-8 character at s[0..n), or 0 if there is none
 * (invalid, overlong, surrogate, truncated). */
size_t vcard_utf8_char(const char *s, size_t n);

/* Whether s[0..n) is valid UTF-8 (no overlongs, no surrogates). */
int vcard_utf8_valid(const char *s, size_t n);

/* Whether s[0..n) is a media type we can write unquoted: type "/" subtype
 * of RFC 6838 name characters, at most 127 bytes. */
int vcard_mediatype_ok(const char *s, size_t n);

/* Append prop as vcard_write() would write it in version, on one line
 * (unfolded, no line end). 0, -EINVAL for a version it cannot write,
 * -ENOMEM or -E2BIG. */
int vcard_write_prop(const struct vcard_prop *prop, enum vcard_version version, struct buf *out);

/* How a text property's value is structured. */
enum vcard_shape {
	VCARD_SHAPE_SINGLE, /* one text: ';' and ',' are part of it (FN, NOTE) */
	VCARD_SHAPE_COMPS,  /* components, no lists (ORG) */
	VCARD_SHAPE_LIST,   /* one list (CATEGORIES, NICKNAME) */
	VCARD_SHAPE_FULL,   /* components of lists (N, ADR, unknown properties) */
};

/* Where unknown properties go in the written order. */
#define VCARD_RANK_UNKNOWN 50

/* What the module knows about a property name. */
struct vcard_known {
	const char *name;     /* upper-case */
	unsigned char shape;  /* enum vcard_shape, for text values */
	unsigned char raw;    /* the value is a URI or otherwise never escaped */
	unsigned char binary; /* the value may be base64 bytes */
	unsigned char rank;   /* place in the written order, lower first */
};

/* The entry for an upper-case property name, or NULL if it is unknown. */
const struct vcard_known *vcard_known(const char *name);

/* Entry i of the table, NULL past its end (for tests). */
const struct vcard_known *vcard_known_at(size_t i);

#endif
