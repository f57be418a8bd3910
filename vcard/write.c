/*
 * The vCard writer: 3.0 and 4.0, deterministic, CRLF, folded at 75 octets
 * on UTF-8 character boundaries.
 */
#include "vcard.h"
#include "vcard_int.h"

#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* The fixed order is the rank in vcard_known(): what a person looks for
 * first comes first; unknown properties come after the known content in the
 * order they had; bookkeeping and large binary values come last. */
static unsigned prop_rank(const struct vcard_prop *p)
{
	return p->known ? p->known->rank : VCARD_RANK_UNKNOWN;
}

struct slot {
	unsigned rank; /* the group's best rank for grouped properties */
	size_t first;  /* index of the group's first member, or own index */
	size_t index;
};

static int slot_cmp(const void *a, const void *b)
{
	const struct slot *x = a, *y = b;

	if (x->rank != y->rank)
		return x->rank < y->rank ? -1 : 1;
	if (x->first != y->first)
		return x->first < y->first ? -1 : 1;
	return x->index < y->index ? -1 : x->index > y->index;
}

/* Fill order[] with the property indexes in output order. */
static void sort_props(const struct vcard *card, struct slot *order)
{
	for (size_t i = 0; i < card->nprops; i++) {
		order[i].rank = prop_rank(&card->props[i]);
		order[i].first = i;
		order[i].index = i;
	}
	/* Members of one group travel together, at the place of the group's
	 * best-ranked member. Quadratic in the number of grouped properties,
	 * which is small. */
	for (size_t i = 0; i < card->nprops; i++) {
		const char *g = card->props[i].group;

		if (!g)
			continue;
		for (size_t j = 0; j < card->nprops; j++) {
			const char *h = card->props[j].group;

			if (h && vcard_strcaseeq(g, h)) {
				if (order[j].rank < order[i].rank)
					order[i].rank = order[j].rank;
				if (j < order[i].first)
					order[i].first = j;
			}
		}
	}
	if (card->nprops)
		qsort(order, card->nprops, sizeof(*order), slot_cmp);
}

/* ---- one logical line ---------------------------------------------------- */

static int needs_quotes(const char *v)
{
	size_t n = strlen(v);

	/* Blanks at either end are the value's own: unquoted, a reader takes
	 * them for blanks around '=' or ','. */
	return strpbrk(v, ",;:") != NULL ||
	       (n && (v[0] == ' ' || v[0] == '	' || v[n - 1] == ' ' || v[n - 1] == '	'));
}

/* A parameter value, RFC 6868-escaped, quoted when it must be. */
static int put_param_value(struct buf *b, const char *v)
{
	int q = needs_quotes(v), r = 0;

	if (q && (r = buf_addch(b, '"')))
		return r;
	for (const char *p = v; *p && !r; p++) {
		if (*p == '^')
			r = buf_add(b, "^^", 2);
		else if (*p == '\n')
			r = buf_add(b, "^n", 2);
		else if (*p == '"')
			r = buf_add(b, "^'", 2);
		else if (*p != '\r')
			r = buf_addch(b, *p);
	}
	if (!r && q)
		r = buf_addch(b, '"');
	return r;
}

static int is_pref(const char *v)
{
	return vcard_strcaseeq(v, "PREF");
}

static int has_type_value(const struct vcard_param *pm, const char *v)
{
	for (size_t j = 0; j < pm->nvals; j++)
		if (vcard_strcaseeq(pm->vals[j], v))
			return 1;
	return 0;
}

/* The parameters, with 3.0's TYPE=pref and 4.0's PREF=n translated for the
 * version written. */
static int put_params(struct buf *b, const struct vcard_prop *prop, enum vcard_version version)
{
	int pref3 = version == VCARD_V30 && vcard_param(prop, "PREF");
	int pref4 = version == VCARD_V40 && !vcard_param(prop, "PREF");
	int saw_type = 0, r;

	for (size_t i = 0; i < prop->nparams; i++) {
		const struct vcard_param *pm = &prop->params[i];
		int is_type = !strcmp(pm->name, "TYPE"), first = 1, had_pref = 0;

		if (pref3 && !strcmp(pm->name, "PREF"))
			continue;
		for (size_t j = 0; j < pm->nvals; j++) {
			if (is_type && pref4 && is_pref(pm->vals[j])) {
				had_pref = 1;
				continue;
			}
			if ((r = buf_printf(b, first ? ";%s=" : ",", pm->name)))
				return r;
			if ((r = put_param_value(b, pm->vals[j])))
				return r;
			first = 0;
		}
		if (is_type) {
			saw_type = 1;
			if (pref3 && !has_type_value(pm, "PREF") &&
			    (r = buf_addstr(b, first ? ";TYPE=pref" : ",pref")))
				return r;
		}
		if (had_pref && (r = buf_addstr(b, ";PREF=1")))
			return r;
	}
	if (pref3 && !saw_type && (r = buf_addstr(b, ";TYPE=pref")))
		return r;
	return 0;
}

static int put_text(struct buf *b, const char *s)
{
	int r = 0;

	while (*s && !r) {
		size_t run = strcspn(s, "\\,;\r\n");

		if (run) {
			r = buf_add(b, s, run);
			s += run;
			continue;
		}
		switch (*s) {
		case '\\':
			r = buf_add(b, "\\\\", 2);
			break;
		case ',':
			r = buf_add(b, "\\,", 2);
			break;
		case ';':
			r = buf_add(b, "\\;", 2);
			break;
		default: /* CR, LF or CR LF: one newline */
			r = buf_add(b, "\\n", 2);
			if (s[0] == '\r' && s[1] == '\n')
				s++;
		}
		s++;
	}
	return r;
}

/* A raw value goes out as it is, with two exceptions: a line break cannot,
 * and a backslash that the reader would take for an escape (before \ , ; or
 * :, which it undoes in raw values) is doubled. */
static int put_raw(struct buf *b, const char *s)
{
	int r = 0;

	while (*s && !r) {
		size_t run = strcspn(s, "\r\n\\");

		if (run) {
			r = buf_add(b, s, run);
			s += run;
			continue;
		}
		if (*s == '\n')
			r = buf_add(b, "\\n", 2);
		else if (*s == '\\')
			r = s[1] && strchr("\\,;:nN", s[1]) ? buf_add(b, "\\\\", 2)
							    : buf_addch(b, '\\');
		s++;
	}
	return r;
}

/* Whether s[0..n) is a decimal coordinate such as -122.082932. */
static int is_coord(const char *s, size_t n)
{
	if (n == 0 || n > 32)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '-' || s[i] == '+'))
			return 0;
	return 1;
}

/* GEO is "lat;lon" in 3.0 and "geo:lat,lon" in 4.0 (2.1 writers such as
 * Android write "lat,lon"). Only a pair of plain coordinates is translated;
 * anything else is written as it is. */
static int put_geo(struct buf *b, const char *v, enum vcard_version version)
{
	const char *lat = strncmp(v, "geo:", 4) ? v : v + 4;
	size_t n = strcspn(lat, ",;");
	const char *lon = lat[n] ? lat + n + 1 : NULL;

	if (!lon || !is_coord(lat, n) || !is_coord(lon, strlen(lon)))
		return put_raw(b, v);
	if (version == VCARD_V40)
		return buf_printf(b, "geo:%.*s,%s", (int)n, lat, lon);
	return buf_printf(b, "%.*s;%s", (int)n, lat, lon);
}

static int is_date_prop(const char *name)
{
	return !strcmp(name, "BDAY") || !strcmp(name, "ANNIVERSARY") ||
	       !strcmp(name, "DEATHDATE") || !strcmp(name, "REV");
}

static int digits(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return 0;
	return 1;
}

/* Take n digits from *s into out, skipping one separator sep before them if
 * there is one. */
static int take(const char **s, char sep, size_t n, char *out)
{
	if (sep && **s == sep)
		(*s)++;
	if (strlen(*s) < n || !digits(*s, n))
		return 0;
	memcpy(out, *s, n);
	out[n] = '\0';
	*s += n;
	return 1;
}

/*
 * Dates and date-times for 4.0, which allows only ISO 8601's basic form:
 * 1974-07-22 -> 19740722, --07-22 -> --0722, 2014-10-19T23:08:24Z ->
 * 20141019T230824Z. (3.0 allows both forms, so 3.0 writes dates as they are.)
 * Anything else is left alone. Returns 1 if v was a date it wrote, 0 if not,
 * or -errno.
 */
static int put_date(struct buf *b, const char *v, enum vcard_version version)
{
	char year[5] = "", mon[3], day[3], hh[3], mm[3], ss[3];
	const char *s = v, *sep = version == VCARD_V30 ? "-" : "", *tsep;
	int has_time = 0, r;

	if (!strncmp(s, "--", 2))
		s += 2;
	else if (!take(&s, 0, 4, year))
		return 0;
	if (!take(&s, year[0] ? '-' : 0, 2, mon) || !take(&s, '-', 2, day))
		return 0;
	if (*s == 'T') {
		s++;
		if (!take(&s, 0, 2, hh) || !take(&s, ':', 2, mm) || !take(&s, ':', 2, ss))
			return 0;
		has_time = 1;
	}
	if (*s != '\0' && !(has_time && !strcmp(s, "Z")))
		return 0;
	if (year[0])
		r = buf_printf(b, "%s%s%s%s%s", year, sep, mon, sep, day);
	else
		r = buf_printf(b, "--%s%s%s", mon, sep, day);
	if (!r && has_time) {
		tsep = version == VCARD_V30 ? ":" : "";
		r = buf_printf(b, "T%s%s%s%s%s%s", hh, tsep, mm, tsep, ss, s);
	}
	return r ? r : 1;
}

/* 3.0 names the image format in TYPE: image/jpeg -> JPEG. */
static int put_binary_type30(struct buf *b, const char *mediatype)
{
	const char *slash = mediatype ? strchr(mediatype, '/') : NULL;
	int r;

	if (!slash || !vcard_mediatype_ok(mediatype, strlen(mediatype)) ||
	    (strncmp(mediatype, "image/", 6) && strncmp(mediatype, "audio/", 6)))
		return 0;
	if ((r = buf_addstr(b, ";TYPE=")))
		return r;
	for (const char *p = slash + 1; *p && *p != ';'; p++)
		if ((r = buf_addch(b, (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p))))
			return r;
	return 0;
}

/* The media type of a 4.0 data: URI: the value's own if it is one we can
 * write, else the generic one. */
static const char *data_mediatype(const char *mt)
{
	return mt && vcard_mediatype_ok(mt, strlen(mt)) ? mt : "application/octet-stream";
}

static int put_line(struct buf *b, const struct vcard_prop *prop, enum vcard_version version)
{
	int r;

	if (prop->group && (r = buf_printf(b, "%s.", prop->group)))
		return r;
	if ((r = buf_addstr(b, prop->name)))
		return r;
	if (prop->kind == VCARD_BINARY && version == VCARD_V30) {
		if ((r = buf_addstr(b, ";ENCODING=b")) ||
		    (r = put_binary_type30(b, prop->mediatype)))
			return r;
	}
	if ((r = put_params(b, prop, version)) || (r = buf_addch(b, ':')))
		return r;
	if (prop->kind == VCARD_BINARY) {
		if (version == VCARD_V40 &&
		    (r = buf_printf(b, "data:%s;base64,", data_mediatype(prop->mediatype))))
			return r;
		return vcard_base64_encode(b, prop->data, prop->len);
	}
	if (version == VCARD_V40 && prop->kind != VCARD_BINARY && prop->ncomps == 1 &&
	    prop->comps[0].nvals == 1 && is_date_prop(prop->name) && !vcard_param(prop, "VALUE")) {
		size_t mark = b->len;

		if ((r = put_date(b, prop->comps[0].vals[0], version)) < 0)
			return r;
		if (r == 1)
			return 0;
		b->len = mark;
	}
	if (prop->kind == VCARD_RAW) {
		if (!strcmp(prop->name, "GEO"))
			return put_geo(b, prop->comps[0].vals[0], version);
		return put_raw(b, prop->comps[0].vals[0]);
	}
	for (size_t i = 0; i < prop->ncomps; i++) {
		if (i && (r = buf_addch(b, ';')))
			return r;
		for (size_t j = 0; j < prop->comps[i].nvals; j++) {
			if (j && (r = buf_addch(b, ',')))
				return r;
			if ((r = put_text(b, prop->comps[i].vals[j])))
				return r;
		}
	}
	return 0;
}

/* ---- folding ------------------------------------------------------------- */

/* Whether s[0..n) ends in an odd run of backslashes: the last one then
 * starts an escape. */
static int odd_backslashes(const char *s, size_t n)
{
	size_t k = 0;

	while (k < n && s[n - 1 - k] == '\\')
		k++;
	return k % 2;
}

/* Append line to out, folded so that no physical line exceeds 75 octets,
 * never inside a UTF-8 character or between a backslash and what it
 * escapes. */
static int put_folded(struct buf *out, const char *s, size_t n)
{
	size_t i = 0, room = 75;
	int r;

	while (n - i > room) {
		size_t k = i + room;

		while (k > i + 1 && ((unsigned char)s[k] & 0xc0) == 0x80)
			k--;
		if (k > i + 2 && odd_backslashes(s + i, k - i))
			k--;
		if ((r = buf_add(out, s + i, k - i)) || (r = buf_add(out, "\r\n ", 3)))
			return r;
		i = k;
		room = 74;
	}
	if ((r = buf_add(out, s + i, n - i)))
		return r;
	return buf_add(out, "\r\n", 2);
}

int vcard_write_prop(const struct vcard_prop *prop, enum vcard_version version, struct buf *out)
{
	if (version != VCARD_V30 && version != VCARD_V40)
		return -EINVAL;
	return put_line(out, prop, version);
}

int vcard_write(const struct vcard *card, enum vcard_version version, struct buf *out)
{
	struct slot *order = NULL;
	struct buf line;
	int r;

	if (version != VCARD_V30 && version != VCARD_V40)
		return -EINVAL;
	buf_init(&line, out->cap);
	if (card->nprops && !(order = malloc(card->nprops * sizeof(*order))))
		return -ENOMEM;
	sort_props(card, order);
	r = buf_addstr(out, version == VCARD_V40 ? "BEGIN:VCARD\r\nVERSION:4.0\r\n"
						 : "BEGIN:VCARD\r\nVERSION:3.0\r\n");
	for (size_t i = 0; i < card->nprops && !r; i++) {
		buf_reset(&line);
		r = put_line(&line, &card->props[order[i].index], version);
		if (!r)
			r = put_folded(out, line.data, line.len);
	}
	if (!r)
		r = buf_addstr(out, "END:VCARD\r\n");
	buf_release(&line);
	free(order);
	return r;
}
