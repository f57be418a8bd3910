/*
 * The Microsoft Graph mapping: contact JSON <-> card, and the minimal PATCH
 * between the server's version and an edited card. docs/mapping.md is the
 * specification; the slot table below is its main table.
 *
 * Both directions go through a "model": a cJSON object keyed by slot name
 * whose values are normalised fragments of a Graph contact (absent values
 * are left out, so two models compare with cJSON_Compare):
 *  - text slots: a non-empty string; collections: a non-empty array;
 *  - name, org: an object of the non-empty Graph fields they stand for;
 *  - addresses: an object of the non-empty physicalAddress fields;
 *  - emails: {"address", "name"} with name only when non-empty and not the
 *    address itself;
 *  - birthday: "YYYY-MM-DD", year 1604 for a date without a year;
 *  - line breaks in any string are LF only;
 *  - uid: the vCard UID, which lives in our open extension.
 * Graph JSON <-> model: model_from_graph(), model_to_graph().
 * Property <-> fragment: read_prop(), gen_prop().
 *
 * What a card holds beyond the model travels in the open extension:
 * "extra" (properties that map to nothing) and "orig" (mapped properties
 * whose exact form we would not regenerate, tagged with their slot).
 * Nothing here reads a clock or the time zone.
 */
#include "vcard.h"
#include "vcard_int.h"

#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLOT_PARAM "X-CONTACTFS-SLOT"
#define NAME_PARAM "X-CONTACTFS-NAME"
#define PHOTO_SLOT "photo" /* orig's tag for the photo's form */
#define CREATED_PROP "X-CONTACTFS-CREATED"
#define EXT_TYPE "microsoft.graph.openTypeExtension"
#define EXT_VERSION 1
#define NO_YEAR VCARD_NO_YEAR
#define BDAY_TIME "T11:59:00Z" /* Outlook's own time for birthdays */
#define NO_LIMIT ((unsigned)-1)
#define BROKEN_EXT "the contactfs extension does not parse; its properties are left out"

enum slot_kind {
	SK_TEXT,  /* a string <-> the text of one property */
	SK_MULTI, /* a string collection <-> one property per string */
	SK_TEL,	  /* a phone number (in a collection or alone) <-> TEL */
	SK_URL,	  /* a string <-> a URI value */
	SK_EMAIL, /* an emailAddress collection <-> one EMAIL each */
	SK_NAME,  /* surname, givenName, middleName, title, generation <-> N */
	SK_ORG,	  /* companyName, department <-> ORG */
	SK_ADR,	  /* a physicalAddress <-> ADR */
	SK_BDAY,  /* a date <-> BDAY */
	SK_LIST,  /* a string collection <-> the list values of one property */
};

struct slot {
	const char *name; /* model key, X-CONTACTFS-SLOT value, Graph field */
	const char *prop; /* the property we write */
	enum slot_kind kind;
	unsigned max;		   /* 0: one value; else a collection of at most max */
	const char *types[3];	   /* the TYPE values we write */
	const char *const *fields; /* SK_NAME, SK_ORG, SK_ADR: the Graph fields */
	unsigned always : 1;	   /* FN and N: written even when empty */
	unsigned ext_only : 1;	   /* not a Graph field (the UID) */
};

/* N components 0..4. */
static const char *const name_fields[] = {
	"surname", "givenName", "middleName", "title", "generation", NULL,
};
static const char *const org_fields[] = {"companyName", "department", NULL};
/* ADR components 2..6 (0 and 1, post office box and extended address, are
 * read into street). */
static const char *const adr_fields[] = {
	"street", "city", "state", "postalCode", "countryOrRegion", NULL,
};

static const struct slot slots[] = {
	{"displayName", "FN", SK_TEXT, 0, {NULL}, NULL, 1, 0},
	{"name", "N", SK_NAME, 0, {NULL}, name_fields, 1, 0},
	{"nickName", "NICKNAME", SK_TEXT, 0, {NULL}, NULL, 0, 0},
	{"org", "ORG", SK_ORG, 0, {NULL}, org_fields, 0, 0},
	{"jobTitle", "TITLE", SK_TEXT, 0, {NULL}, NULL, 0, 0},
	{"profession", "ROLE", SK_TEXT, 0, {NULL}, NULL, 0, 0},
	{"officeLocation", "X-KADDRESSBOOK-X-OFFICE", SK_TEXT, 0, {NULL}, NULL, 0, 0},
	{"manager", "X-MS-MANAGER", SK_TEXT, 0, {NULL}, NULL, 0, 0},
	{"assistantName", "X-MS-ASSISTANT", SK_TEXT, 0, {NULL}, NULL, 0, 0},
	{"spouseName", "X-MS-SPOUSE", SK_TEXT, 0, {NULL}, NULL, 0, 0},
	{"children", "X-MS-CHILD", SK_MULTI, NO_LIMIT, {NULL}, NULL, 0, 0},
	{"initials", "X-CONTACTFS-INITIALS", SK_TEXT, 0, {NULL}, NULL, 0, 0},
	{"fileAs", "X-EVOLUTION-FILE-AS", SK_TEXT, 0, {NULL}, NULL, 0, 0},
	{"yomiGivenName", "X-PHONETIC-FIRST-NAME", SK_TEXT, 0, {NULL}, NULL, 0, 0},
	{"yomiSurname", "X-PHONETIC-LAST-NAME", SK_TEXT, 0, {NULL}, NULL, 0, 0},
	{"yomiCompanyName", "X-PHONETIC-ORG", SK_TEXT, 0, {NULL}, NULL, 0, 0},
	{"emailAddresses", "EMAIL", SK_EMAIL, 3, {NULL}, NULL, 0, 0},
	{"businessPhones", "TEL", SK_TEL, 2, {"WORK", "VOICE"}, NULL, 0, 0},
	{"homePhones", "TEL", SK_TEL, 2, {"HOME", "VOICE"}, NULL, 0, 0},
	{"mobilePhone", "TEL", SK_TEL, 0, {"CELL"}, NULL, 0, 0},
	{"homeAddress", "ADR", SK_ADR, 0, {"HOME"}, adr_fields, 0, 0},
	{"businessAddress", "ADR", SK_ADR, 0, {"WORK"}, adr_fields, 0, 0},
	{"otherAddress", "ADR", SK_ADR, 0, {"POSTAL"}, adr_fields, 0, 0},
	{"businessHomePage", "URL", SK_URL, 0, {"WORK"}, NULL, 0, 0},
	{"birthday", "BDAY", SK_BDAY, 0, {NULL}, NULL, 0, 0},
	{"personalNotes", "NOTE", SK_TEXT, 0, {NULL}, NULL, 0, 0},
	{"categories", "CATEGORIES", SK_LIST, 0, {NULL}, NULL, 0, 0},
	{"imAddresses", "X-MS-IMADDRESS", SK_MULTI, 3, {NULL}, NULL, 0, 0},
	{"uid", "UID", SK_TEXT, 0, {NULL}, NULL, 0, 1},
};

#define NSLOTS (sizeof(slots) / sizeof(slots[0]))

/* ---- small helpers ---------------------------------------------------------- */

static int fail(struct vcard_error *err, int r, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct vcard_error *err, int r, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return r;
	err->line = 0;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return r;
}

static void err_clear(struct vcard_error *err)
{
	if (err) {
		err->line = 0;
		err->msg[0] = '\0';
	}
}

/* A message for failures that did not say what went wrong themselves. */
static int err_finish(struct vcard_error *err, int r)
{
	if (!r || !err || err->msg[0])
		return r;
	if (r == -ENOMEM)
		return fail(err, r, "out of memory");
	if (r == -E2BIG)
		return fail(err, r, "contact too large");
	return fail(err, r, "cannot map the contact (error %d)", -r);
}

static const struct slot *slot_named(const char *name)
{
	for (size_t i = 0; i < NSLOTS; i++)
		if (!strcmp(slots[i].name, name))
			return &slots[i];
	return NULL;
}

static int is_collection(const struct slot *s)
{
	return s->max > 0;
}

/* Exactly n decimal digits at s, as a number; -1 if they are not. */
static int digits(const char *s, size_t n)
{
	int v = 0;

	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

/* ---- cJSON helpers: every allocation failure is -ENOMEM ----------------------- */

/* Add item to obj under key; takes item, even on failure. */
static int json_add(cJSON *obj, const char *key, cJSON *item)
{
	if (!item)
		return -ENOMEM;
	if (!cJSON_AddItemToObject(obj, key, item)) {
		cJSON_Delete(item);
		return -ENOMEM;
	}
	return 0;
}

static int json_append(cJSON *arr, cJSON *item)
{
	if (!item)
		return -ENOMEM;
	if (!cJSON_AddItemToArray(arr, item)) {
		cJSON_Delete(item);
		return -ENOMEM;
	}
	return 0;
}

static int json_add_str(cJSON *obj, const char *key, const char *s)
{
	return json_add(obj, key, cJSON_CreateString(s));
}

static const cJSON *json_get(const cJSON *obj, const char *key)
{
	return cJSON_GetObjectItemCaseSensitive(obj, key);
}

/* The string at key, or NULL when it is missing, not a string, or empty. */
static const char *json_str(const cJSON *obj, const char *key)
{
	const cJSON *v = json_get(obj, key);

	return cJSON_IsString(v) && v->valuestring[0] ? v->valuestring : NULL;
}

static int str_eq(const char *a, const char *b)
{
	return a && b ? strcmp(a, b) == 0 : a == b;
}

/* Line breaks as a vCard carries them (the writer turns CRLF and CR into
 * LF): in every string of v, in place, since the text only shrinks. Outlook
 * writes CRLF in notes and streets; without this, every save would PATCH. */
static void lf_only(cJSON *v)
{
	if (cJSON_IsString(v)) {
		char *o = v->valuestring;

		for (const char *s = v->valuestring; *s; s++) {
			char c = *s;

			*o++ = c == '\r' ? '\n' : c;
			if (c == '\r' && s[1] == '\n')
				s++;
		}
		*o = '\0';
	}
	for (cJSON *c = v ? v->child : NULL; c; c = c->next)
		lf_only(c);
}

/* ---- dates ------------------------------------------------------------------ */

struct date {
	int year; /* NO_YEAR: none */
	int month, day;
};

static int is_leap(int y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int date_valid(const struct date *d)
{
	static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

	if (d->year < 1 || d->month < 1 || d->month > 12 || d->day < 1)
		return 0;
	if (d->month == 2 && d->day == 29)
		return is_leap(d->year);
	return d->day <= mdays[d->month - 1];
}

/*
 * The date at the start of s: YYYY-MM-DD, YYYYMMDD, --MM-DD or --MMDD,
 * followed by the end or a time part ('T...'), which is ignored. The date is
 * taken as written: no time zone is ever applied. 0 or -EINVAL.
 */
static int parse_date(const char *s, struct date *d)
{
	size_t n = strlen(s), k;

	if (n >= 4 && s[0] == '-' && s[1] == '-') {
		d->year = NO_YEAR;
		s += 2;
		n -= 2;
	} else {
		if ((d->year = digits(s, 4)) < 0)
			return -EINVAL;
		s += 4;
		n -= 4;
		if (n && *s == '-') {
			s++;
			n--;
		}
	}
	k = n >= 5 && s[2] == '-' ? 3 : 2;
	if (n < k + 2)
		return -EINVAL;
	d->month = digits(s, 2);
	d->day = digits(s + k, 2);
	s += k + 2;
	if (*s && *s != 'T' && *s != 't')
		return -EINVAL;
	return date_valid(d) ? 0 : -EINVAL;
}

int vcard_date(const char *s, int *year, int *month, int *day)
{
	struct date d;
	int r = parse_date(s, &d);

	if (!r) {
		*year = d.year;
		*month = d.month;
		*day = d.day;
	}
	return r;
}

/* The model's form of a date: "YYYY-MM-DD". */
static cJSON *date_json(const struct date *d)
{
	char s[16];

	snprintf(s, sizeof(s), "%04d-%02d-%02d", d->year % 10000, d->month, d->day);
	return cJSON_CreateString(s);
}

/* A BDAY value as a 3.0 card holds it: "1974-07-22", or "--07-22" without a
 * year. (vcard_write spells it for the version it writes.) */
static void date_vcard(const struct date *d, char s[16])
{
	if (d->year == NO_YEAR)
		snprintf(s, 16, "--%02d-%02d", d->month, d->day);
	else
		snprintf(s, 16, "%04d-%02d-%02d", d->year % 10000, d->month, d->day);
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant). */
static long long days_from_civil(long long y, int m, int d)
{
	long long era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static void civil_from_days(long long z, long long *y, int *m, int *d)
{
	long long era, doe, yoe, doy, mp;

	z += 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*d = (int)(doy - (153 * mp + 2) / 5 + 1);
	*m = (int)(mp < 10 ? mp + 3 : mp - 9);
	*y = yoe + era * 400 + (*m <= 2);
}

/*
 * A Graph DateTimeOffset ("2014-10-19T23:08:24Z", with an optional fraction
 * and an optional offset) as a UTC time stamp, "2014-10-19T23:08:24Z". Pure
 * arithmetic: no time zone is consulted.
 */
static int utc_stamp(const char *s, char out[64])
{
	int h, mi, sec, off = 0, m, d;
	long long y, t;
	struct date dt;
	const char *p;

	if (strlen(s) < 19 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || parse_date(s, &dt))
		return -EINVAL;
	h = digits(s + 11, 2);
	mi = digits(s + 14, 2);
	sec = digits(s + 17, 2);
	if (h < 0 || h > 23 || mi < 0 || mi > 59 || sec < 0 || sec > 60 || s[13] != ':' ||
	    s[16] != ':')
		return -EINVAL;
	for (p = s + 19; *p == '.' || (*p >= '0' && *p <= '9'); p++)
		;
	if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':' && digits(p + 1, 2) >= 0 &&
	    digits(p + 4, 2) >= 0)
		off = (*p == '-' ? -1 : 1) * (digits(p + 1, 2) * 60 + digits(p + 4, 2));
	else if (*p && strcmp(p, "Z") && strcmp(p, "z"))
		return -EINVAL;
	t = days_from_civil(dt.year, dt.month, dt.day) * 86400 + h * 3600 + mi * 60 + sec -
	    off * 60LL;
	civil_from_days(t >= 0 ? t / 86400 : (t - 86399) / 86400, &y, &m, &d);
	t -= days_from_civil(y, m, d) * 86400;
	if (y < 1 || y > 9999)
		return -EINVAL;
	snprintf(out, 64, "%04lld-%02d-%02dT%02lld:%02lld:%02lldZ", y, m, d, t / 3600, t / 60 % 60,
		 t % 60);
	return 0;
}

/* ---- reading property values -------------------------------------------------- */

/* Append component i of p (nothing if p has none), list values joined by sep. */
static int add_comp(struct buf *b, const struct vcard_prop *p, size_t i, const char *sep)
{
	int r;

	if (p->kind == VCARD_BINARY || i >= p->ncomps)
		return 0;
	for (size_t j = 0; j < p->comps[i].nvals; j++)
		if ((j && (r = buf_addstr(b, sep))) || (r = buf_addstr(b, p->comps[i].vals[j])))
			return r;
	return 0;
}

/* Append the whole value of p: components joined by ';', values by ','. */
static int add_text(struct buf *b, const struct vcard_prop *p)
{
	int r;

	for (size_t i = 0; i < p->ncomps && p->kind != VCARD_BINARY; i++)
		if ((i && (r = buf_addch(b, ';'))) || (r = add_comp(b, p, i, ",")))
			return r;
	return 0;
}

/* The first value of parameter name, or NULL. */
static const char *param_val(const struct vcard_prop *p, const char *name)
{
	const struct vcard_param *par = vcard_param(p, name);

	return par && par->nvals ? par->vals[0] : NULL;
}

static cJSON *email_json(const char *address, const char *name)
{
	cJSON *o = cJSON_CreateObject();

	if (!o)
		return NULL;
	if (json_add_str(o, "address", address) ||
	    (name && name[0] && strcmp(name, address) && json_add_str(o, "name", name))) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

/* Whether TEL p holds a tel: URI (4.0's VALUE=uri). */
static int is_tel_uri(const struct vcard_prop *p, const char *t, size_t n)
{
	const char *v = param_val(p, "VALUE");

	return vcard_prefix_ci(t, n, "tel:") &&
	       (p->kind == VCARD_RAW || (v && vcard_strcaseeq(v, "uri")));
}

/* The text of p as a string fragment (an emailAddress object for EMAIL);
 * none for an empty value unless the slot is always written. Phone numbers
 * lose their "tel:". */
static int read_text(const struct vcard_prop *p, const struct slot *s, cJSON **frag)
{
	struct buf b;
	const char *t;
	int r;

	buf_init(&b, 0);
	r = add_text(&b, p);
	t = b.data;
	if (!r && s->kind == SK_TEL && is_tel_uri(p, t, b.len))
		t += 4;
	if (!r && (*t || s->always)) {
		*frag = s->kind == SK_EMAIL ? email_json(t, param_val(p, NAME_PARAM))
					    : cJSON_CreateString(t);
		if (!*frag)
			r = -ENOMEM;
	}
	buf_release(&b);
	return r;
}

/* Add field = b's text to obj when it is not empty. */
static int add_field(cJSON *obj, const char *field, const struct buf *b)
{
	return b->len ? json_add_str(obj, field, b->data) : 0;
}

/* N: component i (values joined by ' ') is name_fields[i]. */
static int read_n(const struct vcard_prop *p, cJSON *o, struct buf *b)
{
	int r = 0;

	for (size_t i = 0; name_fields[i] && !r; i++) {
		buf_reset(b);
		r = add_comp(b, p, i, " ");
		r = r ? r : add_field(o, name_fields[i], b);
	}
	return r;
}

/* ORG: component 0 is the company; the others, joined by "; ", the
 * department. */
static int read_org(const struct vcard_prop *p, cJSON *o, struct buf *b)
{
	int r;

	buf_reset(b);
	if ((r = add_comp(b, p, 0, ",")) || (r = add_field(o, "companyName", b)))
		return r;
	buf_reset(b);
	for (size_t i = 1; i < p->ncomps; i++)
		if ((i > 1 && (r = buf_addstr(b, "; "))) || (r = add_comp(b, p, i, ",")))
			return r;
	return add_field(o, "department", b);
}

/* ADR: street is the non-empty of post office box, extended address and
 * street, one per line, so nothing is lost if Outlook rewrites it. */
static int read_adr(const struct vcard_prop *p, cJSON *o, struct buf *b)
{
	struct buf part;
	int r = 0;

	buf_reset(b);
	buf_init(&part, 0);
	for (size_t i = 0; i < 3 && !r; i++) {
		buf_reset(&part);
		r = add_comp(&part, p, i, ",");
		if (!r && part.len && b->len)
			r = buf_addch(b, '\n');
		if (!r && part.len)
			r = buf_add(b, part.data, part.len);
	}
	buf_release(&part);
	if (!r)
		r = add_field(o, "street", b);
	for (size_t i = 1; adr_fields[i] && !r; i++) {
		buf_reset(b);
		if (!(r = add_comp(b, p, i + 2, ",")))
			r = add_field(o, adr_fields[i], b);
	}
	return r;
}

/* N, ORG and ADR: an object of their non-empty fields. Only N maps when
 * all are empty. */
static int read_fields(const struct vcard_prop *p, const struct slot *s, cJSON **frag)
{
	cJSON *o = cJSON_CreateObject();
	struct buf b;
	int r;

	if (!o)
		return -ENOMEM;
	buf_init(&b, 0);
	if (s->kind == SK_NAME)
		r = read_n(p, o, &b);
	else if (s->kind == SK_ORG)
		r = read_org(p, o, &b);
	else
		r = read_adr(p, o, &b);
	buf_release(&b);
	if (r || (!o->child && !s->always)) {
		cJSON_Delete(o);
		return r;
	}
	*frag = o;
	return 0;
}

/* BDAY: a date (not VALUE=text); X-APPLE-OMIT-YEAR names a year that
 * stands for "none". */
static int read_bday(const struct vcard_prop *p, cJSON **frag)
{
	const char *value = param_val(p, "VALUE"), *omit = param_val(p, "X-APPLE-OMIT-YEAR");
	struct buf b;
	struct date d;
	int r;

	if (value && vcard_strcaseeq(value, "text"))
		return 0;
	buf_init(&b, 0);
	r = add_text(&b, p);
	if (!r && !parse_date(b.data, &d)) {
		if (omit && strlen(omit) == 4 && digits(omit, 4) == d.year)
			d.year = NO_YEAR;
		if (!(*frag = date_json(&d)))
			r = -ENOMEM;
	}
	buf_release(&b);
	return r;
}

/* CATEGORIES: every non-empty list value. */
static int read_list(const struct vcard_prop *p, cJSON **frag)
{
	cJSON *a = cJSON_CreateArray();
	int r = 0;

	if (!a)
		return -ENOMEM;
	for (size_t i = 0; i < p->ncomps && !r; i++)
		for (size_t j = 0; j < p->comps[i].nvals && !r; j++)
			if (p->comps[i].vals[j][0])
				r = json_append(a, cJSON_CreateString(p->comps[i].vals[j]));
	if (r || !a->child) {
		cJSON_Delete(a);
		return r;
	}
	*frag = a;
	return 0;
}

/*
 * The model fragment property p gives slot s, in *frag (NULL when p does not
 * map to it: empty, or not a date, or bytes). 0 or -ENOMEM.
 */
static int read_prop(const struct vcard_prop *p, const struct slot *s, cJSON **frag)
{
	int r = 0;

	*frag = NULL;
	if (p->kind == VCARD_BINARY)
		return 0;
	switch (s->kind) {
	case SK_TEXT:
	case SK_MULTI:
	case SK_TEL:
	case SK_URL:
	case SK_EMAIL:
		r = read_text(p, s, frag);
		break;
	case SK_NAME:
	case SK_ORG:
	case SK_ADR:
		r = read_fields(p, s, frag);
		break;
	case SK_BDAY:
		r = read_bday(p, frag);
		break;
	case SK_LIST:
		r = read_list(p, frag);
		break;
	}
	lf_only(*frag);
	return r;
}

/* ---- generating properties ---------------------------------------------------- */

/* The string field of an object fragment, "" when absent. */
static const char *field_or_empty(const cJSON *frag, const char *field)
{
	const char *s = json_str(frag, field);

	return s ? s : "";
}

static int gen_fields(struct vcard *card, struct vcard_prop *p, const struct slot *s,
		      const cJSON *frag)
{
	const char *comps[7];
	size_t n = 0;

	if (s->kind == SK_ADR) {
		comps[n++] = "";
		comps[n++] = "";
	}
	for (size_t i = 0; s->fields[i]; i++)
		comps[n++] = field_or_empty(frag, s->fields[i]);
	if (s->kind == SK_ORG && !comps[1][0])
		n = 1;
	return vcard_set_comps(card, p, comps, n);
}

static int gen_list(struct vcard *card, struct vcard_prop *p, const cJSON *frag)
{
	int n = cJSON_GetArraySize(frag), i = 0, r;
	const char **vals = calloc(n > 0 ? (size_t)n : 1, sizeof(*vals));
	const cJSON *e;

	if (!vals)
		return -ENOMEM;
	for (e = frag ? frag->child : NULL; e; e = e->next)
		vals[i++] = e->valuestring;
	r = vcard_set_list(card, p, 0, vals, (size_t)i);
	free(vals);
	return r;
}

static int gen_bday(struct vcard *card, struct vcard_prop *p, const cJSON *frag)
{
	struct date d;
	char s[16];

	if (!cJSON_IsString(frag) || parse_date(frag->valuestring, &d))
		return -EINVAL;
	date_vcard(&d, s);
	return vcard_set_text(card, p, s);
}

static int gen_email(struct vcard *card, struct vcard_prop *p, const cJSON *frag)
{
	const char *name = json_str(frag, "name");
	int r = vcard_set_text(card, p, field_or_empty(frag, "address"));

	if (!r && name)
		r = vcard_add_param(card, p, NAME_PARAM, name);
	return r;
}

/*
 * Append to card the property we write for fragment frag of slot s, in the
 * form a 3.0 card (what vcard_from_graph builds) holds it. 0, -ENOMEM, or
 * -EINVAL for a fragment of the wrong shape (cannot come from a model).
 */
static int gen_prop(struct vcard *card, const struct slot *s, const cJSON *frag)
{
	struct vcard_prop *p = vcard_add(card, NULL, s->prop);
	int r = 0;

	if (!p)
		return -ENOMEM;
	for (size_t i = 0; i < 3 && s->types[i] && !r; i++)
		r = vcard_add_param(card, p, "TYPE", s->types[i]);
	if (r)
		return r;
	switch (s->kind) {
	case SK_TEXT:
	case SK_MULTI:
	case SK_TEL:
		return vcard_set_text(card, p, cJSON_IsString(frag) ? frag->valuestring : "");
	case SK_URL:
		return vcard_set_raw(card, p, cJSON_IsString(frag) ? frag->valuestring : "");
	case SK_EMAIL:
		return gen_email(card, p, frag);
	case SK_NAME:
	case SK_ORG:
	case SK_ADR:
		return gen_fields(card, p, s, frag);
	case SK_BDAY:
		return gen_bday(card, p, frag);
	case SK_LIST:
		return gen_list(card, p, frag);
	}
	return 0;
}

/*
 * Our slot tag on an orig property is the last value of its X-CONTACTFS-SLOT
 * parameter, so that a card which carries that parameter itself keeps it.
 */
static int add_tagged(struct vcard *card, const struct vcard_prop *p, const char *slot)
{
	int r = vcard_add_copy(card, p);

	return r ? r : vcard_add_param(card, &card->props[card->nprops - 1], SLOT_PARAM, slot);
}

static const char *slot_tag(const struct vcard_prop *p)
{
	const struct vcard_param *par = vcard_param(p, SLOT_PARAM);

	return par && par->nvals ? par->vals[par->nvals - 1] : NULL;
}

/* Append a copy of orig property p without our tag. */
static int add_untagged(struct vcard *card, const struct vcard_prop *p)
{
	struct vcard_param *params = calloc(p->nparams ? p->nparams : 1, sizeof(*params));
	struct vcard_prop tmp = *p;
	int r;

	if (!params)
		return -ENOMEM;
	tmp.params = params;
	tmp.nparams = 0;
	for (size_t i = 0; i < p->nparams; i++) {
		params[tmp.nparams] = p->params[i];
		if (vcard_strcaseeq(p->params[i].name, SLOT_PARAM))
			params[tmp.nparams].nvals--;
		if (params[tmp.nparams].nvals)
			tmp.nparams++;
	}
	r = vcard_add_copy(card, &tmp);
	free(params);
	return r;
}

/* ---- the model ------------------------------------------------------------------ */

/* Whether slot s of the model holds all it can. */
static int slot_full(const cJSON *model, const struct slot *s)
{
	const cJSON *v = json_get(model, s->name);

	if (!v)
		return 0;
	return !is_collection(s) || (unsigned)cJSON_GetArraySize(v) >= s->max;
}

/* Put frag (taken, even on failure) into slot s of the model. */
static int model_put(cJSON *model, const struct slot *s, cJSON *frag)
{
	cJSON *arr;
	int r;

	if (!is_collection(s))
		return json_add(model, s->name, frag);
	arr = cJSON_GetObjectItemCaseSensitive(model, s->name);
	if (!arr && (r = json_add(model, s->name, arr = cJSON_CreateArray()))) {
		cJSON_Delete(frag);
		return r;
	}
	return json_append(arr, frag);
}

/* The display name a contact without one gets: given and surname, else the
 * first email address, else the company, else "Unnamed". */
static int derived_name(const cJSON *model, struct buf *b)
{
	const cJSON *name = json_get(model, "name");
	const char *given = json_str(name, "givenName"), *sur = json_str(name, "surname");
	const cJSON *email = cJSON_GetArrayItem(json_get(model, "emailAddresses"), 0);
	const char *company = json_str(json_get(model, "org"), "companyName");

	if (given || sur)
		return buf_printf(b, "%s%s%s", given ? given : "", given && sur ? " " : "",
				  sur ? sur : "");
	if (json_str(email, "address"))
		return buf_addstr(b, json_str(email, "address"));
	return buf_addstr(b, company ? company : "Unnamed");
}

/* The fragment written for a slot that is always written but absent: the
 * derived display name, or an empty N. NULL for any other slot. */
static cJSON *slot_default(const cJSON *model, const struct slot *s)
{
	struct buf b;
	cJSON *v = NULL;

	if (s->kind == SK_NAME)
		return cJSON_CreateObject();
	if (strcmp(s->name, "displayName") != 0)
		return NULL;
	buf_init(&b, 0);
	if (!derived_name(model, &b))
		v = cJSON_CreateString(b.data);
	buf_release(&b);
	return v;
}

/* ---- Graph JSON -> model ----------------------------------------------------- */

/* The string obj[key]: *out NULL when absent (missing, null or ""), -EINVAL
 * naming ctx+key for any other type. */
static int graph_str(const cJSON *obj, const char *ctx, const char *key, const char **out,
		     struct vcard_error *err)
{
	const cJSON *v = json_get(obj, key);

	*out = NULL;
	if (!v || cJSON_IsNull(v))
		return 0;
	if (!cJSON_IsString(v))
		return fail(err, -EINVAL, "%s%s: expected a string", ctx, key);
	*out = v->valuestring[0] ? v->valuestring : NULL;
	return 0;
}

/* The array obj[key]: *out NULL when missing or null, -EINVAL otherwise. */
static int graph_array(const cJSON *obj, const char *key, const cJSON **out,
		       struct vcard_error *err)
{
	const cJSON *v = json_get(obj, key);

	*out = NULL;
	if (!v || cJSON_IsNull(v))
		return 0;
	if (!cJSON_IsArray(v))
		return fail(err, -EINVAL, "%s: expected an array", key);
	*out = v;
	return 0;
}

/* String fields of obj (contact, or an address object named ctx) into a new
 * object holding the non-empty ones; *frag NULL when none is. */
static int graph_fields(const cJSON *obj, const char *ctx, const char *const *fields, cJSON **frag,
			struct vcard_error *err)
{
	cJSON *o = cJSON_CreateObject();
	const char *v;
	int r = 0;

	if (!o)
		return -ENOMEM;
	for (size_t i = 0; fields[i] && !r; i++)
		if (!(r = graph_str(obj, ctx, fields[i], &v, err)) && v)
			r = json_add_str(o, fields[i], v);
	if (r || !o->child) {
		cJSON_Delete(o);
		return r;
	}
	*frag = o;
	return 0;
}

static int graph_address(const cJSON *c, const char *key, cJSON **frag, struct vcard_error *err)
{
	const cJSON *v = json_get(c, key);
	char ctx[40];

	if (!v || cJSON_IsNull(v))
		return 0;
	if (!cJSON_IsObject(v))
		return fail(err, -EINVAL, "%s: expected an object", key);
	snprintf(ctx, sizeof(ctx), "%s.", key);
	return graph_fields(v, ctx, adr_fields, frag, err);
}

/* A string collection: null and "" elements are skipped. */
static int graph_strings(const cJSON *c, const char *key, cJSON **frag, struct vcard_error *err)
{
	const cJSON *arr, *e;
	cJSON *out;
	int i = 0, r = graph_array(c, key, &arr, err);

	if (r || !arr)
		return r;
	if (!(out = cJSON_CreateArray()))
		return -ENOMEM;
	for (e = arr ? arr->child : NULL; e; e = e->next) {
		if (!cJSON_IsNull(e) && !cJSON_IsString(e))
			r = fail(err, -EINVAL, "%s[%d]: expected a string", key, i);
		else if (cJSON_IsString(e) && e->valuestring[0])
			r = json_append(out, cJSON_CreateString(e->valuestring));
		if (r)
			break;
		i++;
	}
	if (r || !out->child) {
		cJSON_Delete(out);
		return r;
	}
	*frag = out;
	return 0;
}

/* One emailAddress object (or null) into arr; ctx names it for errors. */
static int graph_email(const cJSON *e, const char *ctx, cJSON *arr, struct vcard_error *err)
{
	const char *address, *name;
	char sub[48];
	int r;

	if (!e || cJSON_IsNull(e))
		return 0;
	if (!cJSON_IsObject(e))
		return fail(err, -EINVAL, "%s: expected an object", ctx);
	snprintf(sub, sizeof(sub), "%s.", ctx);
	if ((r = graph_str(e, sub, "address", &address, err)) ||
	    (r = graph_str(e, sub, "name", &name, err)) || !address)
		return r;
	return json_append(arr, email_json(address, name));
}

/* emailAddresses; when it holds none, the read-only primaryEmailAddress,
 * secondaryEmailAddress and tertiaryEmailAddress stand in. */
static int graph_emails(const cJSON *c, cJSON **frag, struct vcard_error *err)
{
	static const char *const single[] = {"primaryEmailAddress", "secondaryEmailAddress",
					     "tertiaryEmailAddress"};
	cJSON *out = cJSON_CreateArray();
	const cJSON *arr, *e;
	char ctx[40];
	int i = 0, r;

	if (!out)
		return -ENOMEM;
	r = graph_array(c, "emailAddresses", &arr, err);
	for (e = arr ? arr->child : NULL; e; e = e->next) {
		snprintf(ctx, sizeof(ctx), "emailAddresses[%d]", i++);
		if ((r = graph_email(e, ctx, out, err)))
			break;
	}
	if (!r && !out->child)
		for (size_t k = 0; k < 3 && !r; k++)
			r = graph_email(json_get(c, single[k]), single[k], out, err);
	if (r || !out->child) {
		cJSON_Delete(out);
		return r;
	}
	*frag = out;
	return 0;
}

/* A birthday: only the date part of the string counts. */
static int graph_birthday(const cJSON *c, cJSON **frag, struct vcard_error *err)
{
	const char *s;
	struct date d;
	int r = graph_str(c, "", "birthday", &s, err);

	if (r || !s)
		return r;
	if (parse_date(s, &d))
		return fail(err, -EINVAL, "birthday: expected a date, not \"%.40s\"", s);
	*frag = date_json(&d);
	return *frag ? 0 : -ENOMEM;
}

/* The fragment(s) of slot s in Graph contact c, into the model. */
static int graph_slot(const cJSON *c, const struct slot *s, cJSON *model, struct vcard_error *err)
{
	cJSON *frag = NULL;
	const char *str;
	int r;

	switch (s->kind) {
	case SK_NAME:
	case SK_ORG:
		r = graph_fields(c, "", s->fields, &frag, err);
		break;
	case SK_ADR:
		r = graph_address(c, s->name, &frag, err);
		break;
	case SK_EMAIL:
		r = graph_emails(c, &frag, err);
		break;
	case SK_BDAY:
		r = graph_birthday(c, &frag, err);
		break;
	default:
		if (is_collection(s) || s->kind == SK_LIST) {
			r = graph_strings(c, s->name, &frag, err);
			break;
		}
		r = graph_str(c, "", s->name, &str, err);
		if (!r && str && !(frag = cJSON_CreateString(str)))
			r = -ENOMEM;
	}
	if (r || !frag)
		return r;
	return json_add(model, s->name, frag);
}

/* Graph contact JSON to a model (without the uid). -EINVAL names the field
 * of the wrong type; the server fields we read are checked too, so that
 * every function refuses the same contacts. */
static int model_from_graph(const cJSON *c, cJSON *model, struct vcard_error *err)
{
	static const char *const server_fields[] = {"id", "createdDateTime", "lastModifiedDateTime",
						    NULL};
	const char *s;
	int r = 0;

	if (!cJSON_IsObject(c))
		return fail(err, -EINVAL, "contact: expected an object");
	for (size_t i = 0; server_fields[i] && !r; i++)
		r = graph_str(c, "", server_fields[i], &s, err);
	for (size_t i = 0; i < NSLOTS && !r; i++)
		if (!slots[i].ext_only)
			r = graph_slot(c, &slots[i], model, err);
	lf_only(model);
	return r;
}

/* ---- model -> Graph JSON ------------------------------------------------------ */

/* The Graph form of the fragment of slot s: a copy, but birthdays get
 * Outlook's time of day. */
static cJSON *graph_value(const struct slot *s, const cJSON *frag)
{
	char stamp[32];

	if (s->kind != SK_BDAY)
		return cJSON_Duplicate(frag, 1);
	snprintf(stamp, sizeof(stamp), "%.10s%s", frag->valuestring, BDAY_TIME);
	return cJSON_CreateString(stamp);
}

/* The Graph fields of a model into out: absent ones are left out; name and
 * org spread into their fields; displayName is derived when absent. */
static int model_to_graph(const cJSON *model, cJSON *out)
{
	const struct slot *dn = slot_named("displayName");
	const cJSON *v;
	cJSON *e;
	int r;

	v = json_str(model, dn->name) ? json_get(model, dn->name) : NULL;
	if ((r = json_add(out, dn->name, v ? cJSON_Duplicate(v, 1) : slot_default(model, dn))))
		return r;
	for (size_t i = 0; i < NSLOTS; i++) {
		const struct slot *s = &slots[i];

		if (s == dn || s->ext_only || !(v = json_get(model, s->name)))
			continue;
		if (s->kind != SK_NAME && s->kind != SK_ORG) {
			if ((r = json_add(out, s->name, graph_value(s, v))))
				return r;
			continue;
		}
		for (e = v ? v->child : NULL; e; e = e->next)
			if ((r = json_add(out, e->string, cJSON_Duplicate(e, 1))))
				return r;
	}
	return 0;
}

/* ---- card -> model -------------------------------------------------------------- */

/* Our bookkeeping, rewritten from the server on every read: REV,
 * X-CONTACTFS-CREATED, X-CONTACTFS-VERSION and a PRODID naming contactfs. */
static int prop_ignored(const struct vcard_prop *p)
{
	if (!strcmp(p->name, "REV") || !strcmp(p->name, CREATED_PROP) ||
	    !strcmp(p->name, VCARD_VERSION_PROP))
		return 1;
	return !strcmp(p->name, "PRODID") && p->kind != VCARD_BINARY && p->ncomps &&
	       p->comps[0].nvals &&
	       vcard_contains_ci(p->comps[0].vals[0], strlen(p->comps[0].vals[0]), "contactfs");
}

/* The phone slot of a TEL: none for fax, pager and other non-voice types;
 * CELL, WORK and HOME go to their slots; anything else to the first of
 * business and home phones with room. */
static const struct slot *tel_slot(const cJSON *model, const struct vcard_prop *p)
{
	static const char *const other[] = {
		"FAX",	 "PAGER", "CAR", "ISDN", "VIDEO", "TEXTPHONE",
		"MODEM", "BBS",	  "MSG", "TEXT", NULL,
	};
	const struct slot *work = slot_named("businessPhones");

	for (size_t i = 0; other[i]; i++)
		if (vcard_has_type(p, other[i]))
			return NULL;
	if (vcard_has_type(p, "CELL"))
		return slot_named("mobilePhone");
	if (vcard_has_type(p, "WORK"))
		return work;
	if (vcard_has_type(p, "HOME") || slot_full(model, work))
		return slot_named("homePhones");
	return work;
}

static const struct slot *adr_slot(const struct vcard_prop *p)
{
	if (vcard_has_type(p, "HOME"))
		return slot_named("homeAddress");
	return slot_named(vcard_has_type(p, "WORK") ? "businessAddress" : "otherAddress");
}

/* The slot property p goes to, given what the model already holds; NULL
 * when p maps to nothing or its slot is full. */
static const struct slot *classify(const cJSON *model, const struct vcard_prop *p)
{
	const struct slot *s = NULL;

	if (!strcmp(p->name, "TEL"))
		s = tel_slot(model, p);
	else if (!strcmp(p->name, "ADR"))
		s = adr_slot(p);
	else if (!strcmp(p->name, "IMPP"))
		s = slot_named("imAddresses");
	else
		for (size_t i = 0; i < NSLOTS && !s; i++)
			if (!strcmp(slots[i].prop, p->name))
				s = &slots[i];
	return s && !slot_full(model, s) ? s : NULL;
}

/* A card being read into a model. */
struct reading {
	const struct vcard *card;
	cJSON *model;
	struct vcard *extra;   /* properties that map to nothing */
	struct vcard *orig;    /* mapped properties we would not write so, tagged */
	struct vcard *scratch; /* where gen_prop's output is compared */
};

static void reading_release(struct reading *rd)
{
	cJSON_Delete(rd->model);
	vcard_free(rd->extra);
	vcard_free(rd->orig);
	vcard_free(rd->scratch);
}

/* Whether a and b are written as the same line in the card's version (2.1
 * cards are compared as 3.0, the version we would write them in). */
static int written_same(const struct vcard_prop *a, const struct vcard_prop *b,
			enum vcard_version version)
{
	struct buf x, y;
	int same;

	if (version != VCARD_V40)
		version = VCARD_V30;
	buf_init(&x, 0);
	buf_init(&y, 0);
	same = !vcard_write_prop(a, version, &x) && !vcard_write_prop(b, version, &y) &&
	       x.len == y.len && (x.len == 0 || !memcmp(x.data, y.data, x.len));
	buf_release(&x);
	buf_release(&y);
	return same;
}

/* If p would not be written exactly as what vcard_from_graph writes for
 * frag, keep it in orig, tagged with its slot. Compared as written, so a
 * 4.0 "BDAY:19740722" is what we write too, while "BDAY;X-APPLE-OMIT-YEAR=
 * 1604:1604-07-22" is kept and comes back as it was. */
static int keep_orig(struct reading *rd, const struct vcard_prop *p, const struct slot *s,
		     const cJSON *frag)
{
	struct vcard *sc = rd->scratch;
	int r = gen_prop(sc, s, frag), same;

	if (r)
		return r;
	same = written_same(&sc->props[sc->nprops - 1], p, rd->card->version);
	vcard_remove(sc, sc->nprops - 1);
	return same ? 0 : add_tagged(rd->orig, p, s->name);
}

/* The photo's bytes go to Graph apart from the contact; its group and
 * parameters (Apple's X-ABCROP-RECTANGLE, say) are kept in orig, on a PHOTO
 * without bytes tagged "photo". */
static int keep_photo_form(struct reading *rd, const struct vcard_prop *p)
{
	struct vcard_prop *kept;
	int r;

	if (!p->group && !p->nparams)
		return 0;
	if ((r = add_tagged(rd->orig, p, PHOTO_SLOT)))
		return r;
	kept = &rd->orig->props[rd->orig->nprops - 1];
	return vcard_set_binary(rd->orig, kept, "", 0, p->mediatype);
}

/* Read card into rd: the model, extra and orig. */
static int read_card(struct reading *rd, const struct vcard *card)
{
	const struct vcard_prop *photo = vcard_photo(card);
	int r = 0;

	memset(rd, 0, sizeof(*rd));
	rd->card = card;
	rd->model = cJSON_CreateObject();
	rd->extra = vcard_new();
	rd->orig = vcard_new();
	rd->scratch = vcard_new();
	if (!rd->model || !rd->extra || !rd->orig || !rd->scratch)
		return -ENOMEM;
	for (size_t i = 0; i < card->nprops && !r; i++) {
		const struct vcard_prop *p = &card->props[i];
		const struct slot *s;
		cJSON *frag = NULL;

		if (p == photo) {
			r = keep_photo_form(rd, p);
			continue;
		}
		if (prop_ignored(p))
			continue;
		s = classify(rd->model, p);
		if (s && (r = read_prop(p, s, &frag)))
			break;
		if (!frag)
			r = vcard_add_copy(rd->extra, p);
		else if ((r = keep_orig(rd, p, s, frag)))
			cJSON_Delete(frag);
		else
			r = model_put(rd->model, s, frag);
	}
	return r;
}

/* ---- the open extension -------------------------------------------------------- */

/* Our extension's fields in a Graph contact: borrowed, NULL when absent. */
struct ext {
	const char *uid, *extra, *orig;
};

/* Whether e is our extension: by extensionName, or by an id such as
 * "Microsoft.OutlookServices.OpenTypeExtension.org.contactfs.vcard". */
static int ext_matches(const cJSON *e)
{
	const char *name = json_str(e, "extensionName"), *id = json_str(e, "id");
	size_t n = strlen(VCARD_EXTENSION_NAME), k = id ? strlen(id) : 0;

	if (name && vcard_strcaseeq(name, VCARD_EXTENSION_NAME))
		return 1;
	return k >= n && vcard_strcaseeq(id + k - n, VCARD_EXTENSION_NAME) &&
	       (k == n || id[k - n - 1] == '.');
}

static int ext_find(const cJSON *c, struct ext *x, struct vcard_error *err)
{
	const cJSON *arr, *e;
	char ctx[40];
	int i = 0, r = graph_array(c, "extensions", &arr, err);

	memset(x, 0, sizeof(*x));
	for (e = arr ? arr->child : NULL; e; e = e->next) {
		if (r)
			break;
		if (!cJSON_IsObject(e))
			return fail(err, -EINVAL, "extensions[%d]: expected an object", i);
		snprintf(ctx, sizeof(ctx), "extensions[%d].", i++);
		if (!ext_matches(e))
			continue;
		if (!(r = graph_str(e, ctx, "uid", &x->uid, err)) &&
		    !(r = graph_str(e, ctx, "extra", &x->extra, err)))
			r = graph_str(e, ctx, "orig", &x->orig, err);
		break;
	}
	return r;
}

/* The properties in lines (vCard 4.0 property lines) as a card, without our
 * bookkeeping. -EINVAL when they do not parse. */
static int ext_card(const char *lines, struct vcard **out)
{
	size_t n = strlen(lines);
	struct vcard_error e;
	struct buf b;
	int r;

	*out = NULL;
	buf_init(&b, 0);
	r = buf_addstr(&b, "BEGIN:VCARD\r\nVERSION:4.0\r\n");
	if (!r)
		r = buf_addstr(&b, lines);
	if (!r && n && lines[n - 1] != '\n')
		r = buf_addstr(&b, "\r\n");
	if (!r)
		r = buf_addstr(&b, "END:VCARD\r\n");
	if (!r)
		r = vcard_parse_one(b.data, b.len, out, &e);
	buf_release(&b);
	if (r == -E2BIG)
		r = -EINVAL;
	for (size_t i = *out ? (*out)->nprops : 0; i-- > 0;)
		if (prop_ignored(&(*out)->props[i]))
			vcard_remove(*out, i);
	return r;
}

/*
 * The properties of tmp as property lines, without the card's frame: *out
 * is malloc'd, or NULL when tmp has none. The lines are vcard_write output
 * in version ver minus its first two lines (BEGIN, VERSION) and its last
 * (END); only those are cut, since a card may hold a property called END or
 * VERSION. They are read back under VERSION:4.0 (ext_card), which the
 * parser reads as it reads 3.0; writing them in the version the card came
 * in keeps them exact, where a 3.0 TYPE=PREF written as 4.0 would come back
 * as PREF=1.
 */
static int card_lines(const struct vcard *tmp, enum vcard_version ver, char **out)
{
	static const char end[] = "END:VCARD\r\n";
	size_t start = 0, n = sizeof(end) - 1;
	struct buf all;
	int r;

	*out = NULL;
	if (!tmp->nprops)
		return 0;
	buf_init(&all, 0);
	r = vcard_write(tmp, ver == VCARD_V40 ? VCARD_V40 : VCARD_V30, &all);
	for (int k = 0; k < 2 && !r; k++) {
		const char *nl = memchr(all.data + start, '\n', all.len - start);

		if (!nl)
			r = -EINVAL; /* not the writer we know */
		else
			start = (size_t)(nl - all.data) + 1;
	}
	if (!r && (all.len < start + n || memcmp(all.data + all.len - n, end, n)))
		r = -EINVAL;
	if (!r) {
		n = all.len - start - n;
		if ((*out = malloc(n + 1))) {
			memcpy(*out, all.data + start, n);
			(*out)[n] = '\0';
		} else {
			r = -ENOMEM;
		}
	}
	buf_release(&all);
	return r;
}

/* Whether a and b hold the same properties, in any order. 1, 0 or -ENOMEM. */
static int same_props(const struct vcard *a, const struct vcard *b)
{
	unsigned char *used;
	size_t i, j;

	if (a->nprops != b->nprops)
		return 0;
	if (!(used = calloc(b->nprops + 1, 1)))
		return -ENOMEM;
	for (i = 0; i < a->nprops; i++) {
		for (j = 0; j < b->nprops; j++)
			if (!used[j] && vcard_prop_equal(&a->props[i], &b->props[j]))
				break;
		if (j == b->nprops)
			break;
		used[j] = 1;
	}
	free(used);
	return i == a->nprops;
}

/* Whether two "extra" or "orig" texts hold the same properties: 1, 0 or
 * -ENOMEM. Text that does not parse differs from anything. */
static int same_lines(const char *a, const char *b)
{
	struct vcard *ca = NULL, *cb = NULL;
	int r;

	if (str_eq(a, b))
		return 1;
	if (!a || !b)
		return 0;
	r = ext_card(a, &ca);
	if (!r)
		r = ext_card(b, &cb);
	if (!r)
		r = same_props(ca, cb);
	vcard_free(ca);
	vcard_free(cb);
	return r == -EINVAL ? 0 : r;
}

/* Our extension's body holding the fields given; a field that is NULL here
 * but set in clear is sent as "", so that a PATCH (which merges) empties it. */
static cJSON *ext_body(const struct ext *x, const struct ext *clear)
{
	static const char *const keys[] = {"uid", "extra", "orig"};
	const char *vals[] = {x->uid, x->extra, x->orig};
	const char *old[] = {clear ? clear->uid : NULL, clear ? clear->extra : NULL,
			     clear ? clear->orig : NULL};
	cJSON *o = cJSON_CreateObject();
	int r;

	if (!o)
		return NULL;
	r = json_add_str(o, "@odata.type", EXT_TYPE);
	if (!r)
		r = json_add_str(o, "extensionName", VCARD_EXTENSION_NAME);
	if (!r)
		r = json_add(o, "version", cJSON_CreateNumber(EXT_VERSION));
	for (size_t i = 0; i < 3 && !r; i++)
		if (vals[i] || old[i])
			r = json_add_str(o, keys[i], vals[i] ? vals[i] : "");
	if (r) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

/* The extension texts of a read card: *extra and *orig are malloc'd or
 * NULL; x points into them and the model. */
static int ext_of_reading(const struct reading *rd, char **extra, char **orig, struct ext *x)
{
	int r = card_lines(rd->extra, rd->card->version, extra);

	if (!r)
		r = card_lines(rd->orig, rd->card->version, orig);
	x->uid = json_str(rd->model, "uid");
	x->extra = *extra;
	x->orig = *orig;
	return r;
}

/* ---- model -> card -------------------------------------------------------------- */

struct render {
	struct vcard *card;
	const struct vcard *orig; /* the extension's orig properties, or NULL */
	unsigned char *used;	  /* which of them were written */
};

/* Write fragment frag of slot s: an unused orig property of that slot that
 * maps to the same value if there is one, else the property we generate. */
static int emit(struct render *rd, const struct slot *s, const cJSON *frag)
{
	for (size_t i = 0; rd->orig && i < rd->orig->nprops; i++) {
		const struct vcard_prop *p = &rd->orig->props[i];
		const char *tag = slot_tag(p);
		cJSON *of;
		int r, same;

		if (rd->used[i] || !tag || !vcard_strcaseeq(tag, s->name))
			continue;
		if ((r = read_prop(p, s, &of)))
			return r;
		same = of && cJSON_Compare(of, frag, 1);
		cJSON_Delete(of);
		if (same) {
			rd->used[i] = 1;
			return add_untagged(rd->card, p);
		}
	}
	return gen_prop(rd->card, s, frag);
}

static int render_slots(struct render *rd, const cJSON *model)
{
	int r = 0;

	for (size_t i = 0; i < NSLOTS && !r; i++) {
		const struct slot *s = &slots[i];
		const cJSON *v = json_get(model, s->name), *e;
		cJSON *dflt = NULL;

		if (is_collection(s)) {
			for (e = v ? v->child : NULL; e; e = e->next)
				if ((r = emit(rd, s, e)))
					break;
			continue;
		}
		if (!v && s->always && !(v = dflt = slot_default(model, s)))
			r = -ENOMEM;
		if (v && !r)
			r = emit(rd, s, v);
		cJSON_Delete(dflt);
	}
	return r;
}

/* REV or X-CONTACTFS-CREATED from a Graph time stamp; a stamp that does
 * not parse is left out. */
static int render_time(struct vcard *card, const char *prop, const cJSON *c, const char *key,
		       struct vcard_error *err)
{
	struct vcard_prop *p;
	char stamp[64];
	const char *s;
	int r = graph_str(c, "", key, &s, err);

	if (r || !s || utc_stamp(s, stamp))
		return r;
	if (!(p = vcard_add(card, NULL, prop)))
		return -ENOMEM;
	return vcard_set_text(card, p, stamp);
}

/* The PHOTO from the caller's bytes, in the form orig kept for it if any. */
static int render_photo(struct render *rd, const void *data, size_t len, const char *type)
{
	struct vcard_prop *p = NULL;
	int r;

	if (!data || !len)
		return 0;
	for (size_t i = 0; rd->orig && i < rd->orig->nprops && !p; i++) {
		const char *tag = slot_tag(&rd->orig->props[i]);

		if (rd->used[i] || !tag || !vcard_strcaseeq(tag, PHOTO_SLOT))
			continue;
		rd->used[i] = 1;
		if ((r = add_untagged(rd->card, &rd->orig->props[i])))
			return r;
		p = &rd->card->props[rd->card->nprops - 1];
	}
	if (!p && !(p = vcard_add(rd->card, NULL, "PHOTO")))
		return -ENOMEM;
	return vcard_set_binary(rd->card, p, data, len, type);
}

/* The extension's extra and orig as cards (NULL when absent). -EINVAL when
 * one does not parse. */
static int ext_cards(const struct ext *x, struct vcard **extra, struct vcard **orig)
{
	int r = 0;

	*extra = *orig = NULL;
	if (x->extra)
		r = ext_card(x->extra, extra);
	if (!r && x->orig)
		r = ext_card(x->orig, orig);
	if (r) {
		vcard_free(*extra);
		vcard_free(*orig);
		*extra = *orig = NULL;
	}
	return r;
}

/* The model's uid: the extension's, else the Graph id. */
static int set_uid(cJSON *model, const cJSON *c, const struct ext *x, struct vcard_error *err)
{
	const char *id;
	int r = graph_str(c, "", "id", &id, err);

	if (r || (!x->uid && !id))
		return r;
	return json_add_str(model, "uid", x->uid ? x->uid : id);
}

/* ---- the public functions ---------------------------------------------------------- */

const struct vcard_prop *vcard_photo(const struct vcard *card)
{
	for (size_t i = 0; card && i < card->nprops; i++) {
		const struct vcard_prop *p = &card->props[i];

		if (!strcmp(p->name, "PHOTO") && p->kind == VCARD_BINARY && p->len > 0)
			return p;
	}
	return NULL;
}

int vcard_from_graph(const cJSON *contact, const void *photo, size_t photo_len,
		     const char *photo_type, struct vcard **out, struct vcard_error *err)
{
	struct vcard *extra = NULL, *orig = NULL;
	struct render rd = {NULL, NULL, NULL};
	cJSON *model = cJSON_CreateObject();
	int r, broken = 0;
	struct ext x;

	*out = NULL;
	err_clear(err);
	if (!model) {
		r = -ENOMEM;
		goto out;
	}
	if ((r = model_from_graph(contact, model, err)) || (r = ext_find(contact, &x, err)) ||
	    (r = set_uid(model, contact, &x, err)))
		goto out;
	if ((r = ext_cards(&x, &extra, &orig)) == -EINVAL) {
		broken = 1;
		r = 0;
	}
	if (r || !(rd.card = vcard_new()) || (orig && !(rd.used = calloc(orig->nprops + 1, 1)))) {
		r = r ? r : -ENOMEM;
		goto out;
	}
	rd.orig = orig;
	if ((r = render_slots(&rd, model)) ||
	    (r = render_photo(&rd, photo, photo_len, photo_type)) ||
	    (r = render_time(rd.card, "REV", contact, "lastModifiedDateTime", err)) ||
	    (r = render_time(rd.card, CREATED_PROP, contact, "createdDateTime", err)))
		goto out;
	for (size_t i = 0; extra && i < extra->nprops && !r; i++)
		r = vcard_add_copy(rd.card, &extra->props[i]);
	if (!r && broken && !(rd.card->warning = vcard_arena_strdup(rd.card->arena, BROKEN_EXT)))
		r = -ENOMEM;
	if (!r) {
		*out = rd.card;
		rd.card = NULL;
	}
out:
	vcard_free(rd.card);
	free(rd.used);
	vcard_free(extra);
	vcard_free(orig);
	cJSON_Delete(model);
	return err_finish(err, r);
}

int vcard_to_graph(const struct vcard *card, cJSON **out, struct vcard_error *err)
{
	char *extra = NULL, *orig = NULL;
	cJSON *body = NULL, *arr;
	struct reading rd;
	struct ext x;
	int r;

	*out = NULL;
	err_clear(err);
	if ((r = read_card(&rd, card)) || (r = ext_of_reading(&rd, &extra, &orig, &x)))
		goto out;
	if (!(body = cJSON_CreateObject())) {
		r = -ENOMEM;
		goto out;
	}
	if ((r = model_to_graph(rd.model, body)))
		goto out;
	if ((x.uid || x.extra || x.orig) &&
	    (!(arr = cJSON_CreateArray()) || (r = json_add(body, "extensions", arr)) ||
	     (r = json_append(arr, ext_body(&x, NULL))))) {
		r = r ? r : -ENOMEM;
		goto out;
	}
	*out = body;
	body = NULL;
out:
	cJSON_Delete(body);
	free(extra);
	free(orig);
	reading_release(&rd);
	return err_finish(err, r);
}

/*
 * A physicalAddress for a PATCH: every field, null where adr has none (adr
 * may be NULL: all null). Nothing documented says that {} or a partial
 * object clears the fields it leaves out, and PATCH keeps what a body does
 * not name (contact-update.md), so each field is named.
 */
static cJSON *address_body(const cJSON *adr)
{
	cJSON *o = cJSON_CreateObject();

	for (size_t k = 0; o && adr_fields[k]; k++) {
		const cJSON *v = json_get(adr, adr_fields[k]);

		if (json_add(o, adr_fields[k], v ? cJSON_Duplicate(v, 1) : cJSON_CreateNull())) {
			cJSON_Delete(o);
			return NULL;
		}
	}
	return o;
}

/* The body's value for a Graph field that is no longer set. */
static cJSON *cleared(const struct slot *s)
{
	if (is_collection(s) || s->kind == SK_LIST)
		return cJSON_CreateArray();
	return s->kind == SK_ADR ? address_body(NULL) : cJSON_CreateNull();
}

/* Add field to patch if it differs between the Graph forms old and new. */
static int patch_field(cJSON *patch, const struct slot *s, const char *field, const cJSON *old,
		       const cJSON *new)
{
	const cJSON *a = json_get(old, field), *b = json_get(new, field);

	if ((!a && !b) || (a && b && cJSON_Compare(a, b, 1)))
		return 0;
	if (!b)
		return json_add(patch, field, cleared(s));
	return json_add(patch, field,
			s->kind == SK_ADR ? address_body(b) : cJSON_Duplicate(b, 1));
}

/* The PATCH body from model old to model new: displayName and every field
 * that differs. */
static int patch_body(const cJSON *old_model, const cJSON *new_model, cJSON *patch)
{
	cJSON *old = cJSON_CreateObject(), *new = cJSON_CreateObject();
	int r = old && new ? 0 : -ENOMEM;

	if (!r && !(r = model_to_graph(old_model, old)) && !(r = model_to_graph(new_model, new)))
		r = json_add(patch, "displayName",
			     cJSON_Duplicate(json_get(new, "displayName"), 1));
	for (size_t i = 0; i < NSLOTS && !r; i++) {
		const struct slot *s = &slots[i];

		if (s->ext_only || !strcmp(s->name, "displayName"))
			continue;
		if (s->kind != SK_NAME && s->kind != SK_ORG) {
			r = patch_field(patch, s, s->name, old, new);
			continue;
		}
		for (size_t k = 0; s->fields[k] && !r; k++)
			r = patch_field(patch, s, s->fields[k], old, new);
	}
	cJSON_Delete(old);
	cJSON_Delete(new);
	return r;
}

/* *out: our extension's new body if x differs from the server's sx, else
 * NULL. A uid equal to the contact's id counts as none. */
static int ext_update(struct ext x, struct ext sx, const char *id, cJSON **out)
{
	int same;

	*out = NULL;
	if (id && str_eq(x.uid, id))
		x.uid = NULL;
	if (id && str_eq(sx.uid, id))
		sx.uid = NULL;
	same = str_eq(x.uid, sx.uid);
	if (same == 1)
		same = same_lines(x.extra, sx.extra);
	if (same == 1)
		same = same_lines(x.orig, sx.orig);
	if (same)
		return same < 0 ? same : 0;
	*out = ext_body(&x, &sx);
	return *out ? 0 : -ENOMEM;
}

/*
 * An EMAIL that names no one keeps the name the server has for that address:
 * programs that rewrite a card from their own model (khard) drop parameters
 * they do not know, such as X-CONTACTFS-NAME, and an edit of the note must
 * not rename every address in Outlook. 0 or -ENOMEM.
 */
static int keep_email_names(const cJSON *smodel, cJSON *model)
{
	const cJSON *theirs = cJSON_GetObjectItemCaseSensitive(smodel, "emailAddresses"), *t;
	cJSON *mine = cJSON_GetObjectItemCaseSensitive(model, "emailAddresses"), *e;

	cJSON_ArrayForEach(e, mine)
	{
		const char *address = json_str(e, "address");

		if (!address || cJSON_GetObjectItemCaseSensitive(e, "name"))
			continue;
		cJSON_ArrayForEach(t, theirs)
		{
			const char *a = json_str(t, "address"), *n = json_str(t, "name");

			if (a && n && !strcasecmp(a, address)) {
				if (json_add_str(e, "name", n))
					return -ENOMEM;
				break;
			}
		}
	}
	return 0;
}

int vcard_graph_diff(const cJSON *server, const struct vcard *card, cJSON **patch, cJSON **ext,
		     struct vcard_error *err)
{
	cJSON *smodel = cJSON_CreateObject(), *body = cJSON_CreateObject(), *e = NULL;
	char *extra = NULL, *orig = NULL;
	struct reading rd;
	struct ext x, sx;
	const char *id;
	int r;

	*patch = *ext = NULL;
	err_clear(err);
	memset(&rd, 0, sizeof(rd));
	if (!smodel || !body) {
		r = -ENOMEM;
		goto out;
	}
	if ((r = model_from_graph(server, smodel, err)) || (r = ext_find(server, &sx, err)) ||
	    (r = graph_str(server, "", "id", &id, err)))
		goto out;
	if ((r = read_card(&rd, card)) || (r = ext_of_reading(&rd, &extra, &orig, &x)) ||
	    (r = keep_email_names(smodel, rd.model)) || (r = patch_body(smodel, rd.model, body)) ||
	    (r = ext_update(x, sx, id, &e)))
		goto out;
	*patch = body;
	*ext = e;
	body = e = NULL;
out:
	cJSON_Delete(smodel);
	cJSON_Delete(body);
	cJSON_Delete(e);
	free(extra);
	free(orig);
	reading_release(&rd);
	return err_finish(err, r);
}
