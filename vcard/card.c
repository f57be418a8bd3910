/* Building, reading and comparing cards in memory. */
#include "vcard.h"
#include "vcard_int.h"

#include "util.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int vcard_strcaseeq(const char *a, const char *b)
{
	for (;; a++, b++) {
		unsigned char x = (unsigned char)*a, y = (unsigned char)*b;

		if (x >= 'a' && x <= 'z')
			x -= 32;
		if (y >= 'a' && y <= 'z')
			y -= 32;
		if (x != y)
			return 0;
		if (!x)
			return 1;
	}
}

int vcard_prefix_ci(const char *s, size_t n, const char *prefix)
{
	size_t k = strlen(prefix);

	if (n < k)
		return 0;
	for (size_t i = 0; i < k; i++) {
		unsigned char a = (unsigned char)s[i], b = (unsigned char)prefix[i];

		if (a >= 'a' && a <= 'z')
			a -= 32;
		if (b >= 'a' && b <= 'z')
			b -= 32;
		if (a != b)
			return 0;
	}
	return 1;
}

int vcard_contains_ci(const char *s, size_t n, const char *needle)
{
	size_t k = strlen(needle);

	for (size_t i = 0; i + k <= n; i++)
		if (vcard_prefix_ci(s + i, n - i, needle))
			return 1;
	return 0;
}

size_t vcard_utf8_char(const char *str, size_t n)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t need;
	uint32_t cp;

	if (n == 0)
		return 0;
	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		need = 1;
		cp = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		need = 2;
		cp = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		need = 3;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (n <= need)
		return 0;
	for (size_t i = 1; i <= need; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((need == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (need == 3 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return need + 1;
}

int vcard_utf8_valid(const char *s, size_t n)
{
	size_t i = 0, k;

	while (i < n) {
		if ((k = vcard_utf8_char(s + i, n - i)) == 0)
			return 0;
		i += k;
	}
	return 1;
}

int vcard_base64_encode(struct buf *out, const void *bytes, size_t len)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char *data = bytes;
	char chunk[1024];
	size_t i, k = 0;
	int r;

	for (i = 0; i + 2 < len; i += 3) {
		chunk[k++] = tab[data[i] >> 2];
		chunk[k++] = tab[((data[i] & 3) << 4) | (data[i + 1] >> 4)];
		chunk[k++] = tab[((data[i + 1] & 15) << 2) | (data[i + 2] >> 6)];
		chunk[k++] = tab[data[i + 2] & 63];
		if (k == sizeof(chunk)) {
			if ((r = buf_add(out, chunk, k)))
				return r;
			k = 0;
		}
	}
	if (i < len) {
		chunk[k++] = tab[data[i] >> 2];
		if (i + 1 < len) {
			chunk[k++] = tab[((data[i] & 3) << 4) | (data[i + 1] >> 4)];
			chunk[k++] = tab[(data[i + 1] & 15) << 2];
		} else {
			chunk[k++] = tab[(data[i] & 3) << 4];
			chunk[k++] = '=';
		}
		chunk[k++] = '=';
	}
	return buf_add(out, chunk, k);
}

int vcard_mediatype_ok(const char *s, size_t n)
{
	size_t slashes = 0;

	if (n == 0 || n > 127 || s[0] == '/' || s[n - 1] == '/')
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (c == '/')
			slashes++;
		else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			   (c >= '0' && c <= '9') || strchr("!#$&-^_.+", c)))
			return 0;
	}
	return slashes == 1;
}

/* Base64 digit values, standard and URL-safe alphabets: -1 invalid, -2
 * whitespace (skipped), -3 padding (the end). */
static const signed char b64_value[256] = {
	/* clang-format off */
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -2, -2, -1, -1, -2, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-2, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 62, -1, 62, -1, 63,
	52, 53, 54, 55, 56, 57, 58, 59, 60, 61, -1, -1, -1, -3, -1, -1,
	-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
	15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, -1, -1, -1, -1, 63,
	-1, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
	41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	/* clang-format on */
};

int vcard_base64_decode(struct buf *out, const char *s, size_t n, size_t *bad)
{
	unsigned char chunk[1024];
	unsigned acc = 0;
	size_t k = 0;
	int bits = 0, r;

	for (size_t i = 0; i < n; i++) {
		int v = b64_value[(unsigned char)s[i]];

		if (v == -2)
			continue;
		if (v == -3)
			break;
		if (v < 0) {
			if (bad)
				*bad = i;
			return -EINVAL;
		}
		acc = ((acc << 6) | (unsigned)v) & 0xffffff;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			chunk[k++] = (unsigned char)((acc >> bits) & 0xff);
			if (k == sizeof(chunk)) {
				if ((r = buf_add(out, chunk, k)))
					return r;
				k = 0;
			}
		}
	}
	return buf_add(out, chunk, k);
}

struct vcard *vcard_new(void)
{
	struct vcard *card = calloc(1, sizeof(*card));

	if (!card)
		return NULL;
	card->arena = vcard_arena_new();
	if (!card->arena) {
		free(card);
		return NULL;
	}
	card->version = VCARD_V30;
	return card;
}

void vcard_free(struct vcard *card)
{
	if (!card)
		return;
	vcard_arena_free(card->arena);
	free(card->props);
	free(card);
}

void vcard_free_all(struct vcard **cards, size_t n)
{
	if (!cards)
		return;
	for (size_t i = 0; i < n; i++)
		vcard_free(cards[i]);
	free(cards);
}

static char *upper_dup(struct vcard_arena *a, const char *s)
{
	char *p = vcard_arena_strdup(a, s);

	if (p)
		for (char *q = p; *q; q++)
			if (*q >= 'a' && *q <= 'z')
				*q -= 32;
	return p;
}

/* One empty component: the value of a new property. */
static struct vcard_comp *empty_comps(struct vcard_arena *a)
{
	struct vcard_comp *c = vcard_arena_alloc(a, sizeof(*c));
	const char **vals = vcard_arena_alloc(a, sizeof(*vals));

	if (!c || !vals)
		return NULL;
	vals[0] = "";
	c->vals = vals;
	c->nvals = 1;
	return c;
}

struct vcard_prop *vcard_add(struct vcard *card, const char *group, const char *name)
{
	struct vcard_prop *p;

	if (card->nprops == card->props_size) {
		size_t size = card->props_size ? card->props_size * 2 : 16;
		struct vcard_prop *props = realloc(card->props, size * sizeof(*props));

		if (!props)
			return NULL;
		card->props = props;
		card->props_size = size;
	}
	p = &card->props[card->nprops];
	memset(p, 0, sizeof(*p));
	p->name = upper_dup(card->arena, name);
	p->group = group ? vcard_arena_strdup(card->arena, group) : NULL;
	p->comps = empty_comps(card->arena);
	if (!p->name || (group && !p->group) || !p->comps)
		return NULL;
	p->ncomps = 1;
	p->kind = VCARD_TEXT;
	p->known = vcard_known(p->name);
	card->nprops++;
	return p;
}

void vcard_remove(struct vcard *card, size_t i)
{
	if (i >= card->nprops)
		return;
	memmove(&card->props[i], &card->props[i + 1],
		(card->nprops - i - 1) * sizeof(card->props[0]));
	card->nprops--;
}

static const char **dup_vals(struct vcard_arena *a, const char *const *vals, size_t n)
{
	const char **out = vcard_arena_alloc(a, (n ? n : 1) * sizeof(*out));

	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (!(out[i] = vcard_arena_strdup(a, vals[i])))
			return NULL;
	return out;
}

int vcard_add_copy(struct vcard *card, const struct vcard_prop *src)
{
	struct vcard_arena *a = card->arena;
	struct vcard_prop *p = vcard_add(card, src->group, src->name);
	int r;

	if (!p)
		return -ENOMEM;
	p->line = src->line;
	for (size_t i = 0; i < src->nparams; i++)
		for (size_t j = 0; j < src->params[i].nvals; j++)
			if ((r = vcard_add_param(card, p, src->params[i].name,
						 src->params[i].vals[j])))
				return r;
	if (src->kind == VCARD_BINARY)
		return vcard_set_binary(card, p, src->data, src->len, src->mediatype);
	p->kind = src->kind;
	p->comps = vcard_arena_alloc(a, src->ncomps * sizeof(*p->comps));
	if (!p->comps)
		return -ENOMEM;
	p->ncomps = src->ncomps;
	for (size_t i = 0; i < src->ncomps; i++) {
		p->comps[i].vals = dup_vals(a, src->comps[i].vals, src->comps[i].nvals);
		p->comps[i].nvals = src->comps[i].nvals;
		if (!p->comps[i].vals)
			return -ENOMEM;
	}
	return 0;
}

int vcard_set_text(struct vcard *card, struct vcard_prop *prop, const char *text)
{
	return vcard_set_comps(card, prop, &text, 1);
}

int vcard_set_comps(struct vcard *card, struct vcard_prop *prop, const char *const *comps, size_t n)
{
	struct vcard_comp *c;

	if (n == 0)
		return vcard_set_comps(card, prop, (const char *const[]){""}, 1);
	c = vcard_arena_alloc(card->arena, n * sizeof(*c));
	if (!c)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		c[i].vals = dup_vals(card->arena, &comps[i], 1);
		c[i].nvals = 1;
		if (!c[i].vals)
			return -ENOMEM;
	}
	prop->kind = VCARD_TEXT;
	prop->comps = c;
	prop->ncomps = n;
	prop->data = NULL;
	prop->len = 0;
	return 0;
}

int vcard_set_list(struct vcard *card, struct vcard_prop *prop, size_t i, const char *const *vals,
		   size_t n)
{
	struct vcard_comp *c = prop->comps;

	if (prop->kind != VCARD_TEXT || i >= prop->ncomps) {
		size_t ncomps = prop->kind == VCARD_TEXT && prop->ncomps > i ? prop->ncomps : i + 1;

		c = vcard_arena_alloc(card->arena, ncomps * sizeof(*c));
		if (!c)
			return -ENOMEM;
		for (size_t k = 0; k < ncomps; k++) {
			if (prop->kind == VCARD_TEXT && k < prop->ncomps) {
				c[k] = prop->comps[k];
			} else {
				c[k].vals = dup_vals(card->arena, (const char *const[]){""}, 1);
				c[k].nvals = 1;
				if (!c[k].vals)
					return -ENOMEM;
			}
		}
		prop->comps = c;
		prop->ncomps = ncomps;
		prop->kind = VCARD_TEXT;
	}
	if (n == 0)
		return vcard_set_list(card, prop, i, (const char *const[]){""}, 1);
	c[i].vals = dup_vals(card->arena, vals, n);
	c[i].nvals = n;
	return c[i].vals ? 0 : -ENOMEM;
}

int vcard_set_raw(struct vcard *card, struct vcard_prop *prop, const char *raw)
{
	int r = vcard_set_comps(card, prop, &raw, 1);

	if (!r)
		prop->kind = VCARD_RAW;
	return r;
}

int vcard_set_binary(struct vcard *card, struct vcard_prop *prop, const void *data, size_t len,
		     const char *mediatype)
{
	unsigned char *copy = vcard_arena_alloc(card->arena, len ? len : 1);

	if (!copy)
		return -ENOMEM;
	if (len)
		memcpy(copy, data, len);
	prop->mediatype = NULL;
	if (mediatype && !(prop->mediatype = vcard_arena_strdup(card->arena, mediatype)))
		return -ENOMEM;
	prop->kind = VCARD_BINARY;
	prop->data = copy;
	prop->len = len;
	prop->comps = NULL;
	prop->ncomps = 0;
	return 0;
}

int vcard_add_param(struct vcard *card, struct vcard_prop *prop, const char *name,
		    const char *value)
{
	struct vcard_param *param = NULL;
	const char **vals;

	for (size_t i = 0; i < prop->nparams; i++)
		if (vcard_strcaseeq(prop->params[i].name, name))
			param = &prop->params[i];
	if (!param) {
		struct vcard_param *params =
			vcard_arena_alloc(card->arena, (prop->nparams + 1) * sizeof(*params));

		if (!params)
			return -ENOMEM;
		if (prop->nparams)
			memcpy(params, prop->params, prop->nparams * sizeof(*params));
		prop->params = params;
		param = &params[prop->nparams++];
		if (!(param->name = upper_dup(card->arena, name)))
			return -ENOMEM;
	}
	vals = vcard_arena_alloc(card->arena, (param->nvals + 1) * sizeof(*vals));
	if (!vals)
		return -ENOMEM;
	if (param->nvals)
		memcpy(vals, param->vals, param->nvals * sizeof(*vals));
	if (!(vals[param->nvals] = vcard_arena_strdup(card->arena, value)))
		return -ENOMEM;
	param->vals = vals;
	param->nvals++;
	return 0;
}

struct vcard_prop *vcard_find(const struct vcard *card, const char *name)
{
	for (size_t i = 0; i < card->nprops; i++)
		if (vcard_strcaseeq(card->props[i].name, name))
			return &card->props[i];
	return NULL;
}

const struct vcard_param *vcard_param(const struct vcard_prop *prop, const char *name)
{
	for (size_t i = 0; i < prop->nparams; i++)
		if (vcard_strcaseeq(prop->params[i].name, name))
			return &prop->params[i];
	return NULL;
}

int vcard_has_type(const struct vcard_prop *prop, const char *type)
{
	const struct vcard_param *t = vcard_param(prop, "TYPE");

	for (size_t i = 0; t && i < t->nvals; i++)
		if (vcard_strcaseeq(t->vals[i], type))
			return 1;
	return vcard_strcaseeq(type, "PREF") && vcard_param(prop, "PREF") != NULL;
}

/* Join the values of components [from, to) with the separators given. */
static const char *join(struct vcard *card, const struct vcard_prop *prop, size_t from, size_t to,
			const char *comp_sep, const char *val_sep)
{
	size_t len = 0, csl = strlen(comp_sep), vsl = strlen(val_sep);
	char *out, *p;

	if (prop->kind == VCARD_BINARY)
		return NULL;
	if (to > prop->ncomps)
		to = prop->ncomps;
	if (from >= to)
		return "";
	if (to - from == 1 && prop->comps[from].nvals == 1)
		return prop->comps[from].vals[0];
	for (size_t i = from; i < to; i++)
		for (size_t j = 0; j < prop->comps[i].nvals; j++)
			len += strlen(prop->comps[i].vals[j]) + csl + vsl;
	out = p = vcard_arena_alloc(card->arena, len + 1);
	if (!out)
		return NULL;
	for (size_t i = from; i < to; i++) {
		if (i > from) {
			memcpy(p, comp_sep, csl);
			p += csl;
		}
		for (size_t j = 0; j < prop->comps[i].nvals; j++) {
			size_t n = strlen(prop->comps[i].vals[j]);

			if (j) {
				memcpy(p, val_sep, vsl);
				p += vsl;
			}
			memcpy(p, prop->comps[i].vals[j], n);
			p += n;
		}
	}
	*p = '\0';
	return out;
}

const char *vcard_text(struct vcard *card, const struct vcard_prop *prop)
{
	return join(card, prop, 0, prop->ncomps, ";", ",");
}

const char *vcard_comp(struct vcard *card, const struct vcard_prop *prop, size_t i, const char *sep)
{
	return join(card, prop, i, i + 1, "", sep);
}

static int streq_null(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

static int param_equal(const struct vcard_param *a, const struct vcard_param *b)
{
	if (!vcard_strcaseeq(a->name, b->name) || a->nvals != b->nvals)
		return 0;
	for (size_t i = 0; i < a->nvals; i++)
		if (strcmp(a->vals[i], b->vals[i]) != 0)
			return 0;
	return 1;
}

int vcard_prop_equal(const struct vcard_prop *a, const struct vcard_prop *b)
{
	if (!vcard_strcaseeq(a->name, b->name) || a->kind != b->kind || a->nparams != b->nparams)
		return 0;
	if (!(a->group && b->group ? vcard_strcaseeq(a->group, b->group) : a->group == b->group))
		return 0;
	for (size_t i = 0; i < a->nparams; i++) {
		const struct vcard_param *pb = vcard_param(b, a->params[i].name);

		if (!pb || !param_equal(&a->params[i], pb))
			return 0;
	}
	if (a->kind == VCARD_BINARY)
		return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0) &&
		       streq_null(a->mediatype, b->mediatype);
	if (a->ncomps != b->ncomps)
		return 0;
	for (size_t i = 0; i < a->ncomps; i++) {
		if (a->comps[i].nvals != b->comps[i].nvals)
			return 0;
		for (size_t j = 0; j < a->comps[i].nvals; j++)
			if (strcmp(a->comps[i].vals[j], b->comps[i].vals[j]) != 0)
				return 0;
	}
	return 1;
}
