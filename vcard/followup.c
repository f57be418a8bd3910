/*
 * The contact's follow-up flag as one vCard property (docs/mapping.md,
 * "Follow-up flag"):
 *
 *   X-CONTACTFS-FOLLOWUP;START="<dateTime> <timeZone>";DUE="...";COMPLETED="...":<flagStatus>
 *
 * Graph has the flag in beta only (api-reference/beta/resources/
 * followupflag.md): flagStatus notFlagged, complete or flagged, and three
 * dateTimeTimeZone values. Each date parameter is the dateTime, a space,
 * and the timeZone, split again at the first space (a dateTime has none;
 * a time zone name may, "W. Europe Standard Time"). What Graph gives is
 * written as it is, so Graph -> card -> Graph gives the same strings.
 *
 * Reading is lenient (parameters in any order or case, unknown ones
 * ignored, any status word); what Graph could not take is said by
 * vcard_followup_check, which the cache asks only of a flag it is about to
 * send.
 */
#include "vcard.h"
#include "vcard_int.h"

#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The dates: Graph's member, our parameter. */
static const struct {
	const char *member, *param;
} dates[] = {
	{"startDateTime", "START"},
	{"dueDateTime", "DUE"},
	{"completedDateTime", "COMPLETED"},
};
#define NDATES (sizeof(dates) / sizeof(dates[0]))

static const char *const statuses[] = {"notFlagged", "complete", "flagged"};
#define NOT_FLAGGED "notFlagged"

static int fail(struct vcard_error *err, unsigned line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct vcard_error *err, unsigned line, const char *fmt, ...)
{
	va_list ap;
	int n = 0;

	if (!err)
		return -EINVAL;
	err->line = line;
	if (line)
		n = snprintf(err->msg, sizeof(err->msg), "line %u: ", line);
	if (n < 0 || (size_t)n >= sizeof(err->msg))
		n = 0;
	va_start(ap, fmt);
	vsnprintf(err->msg + n, sizeof(err->msg) - (size_t)n, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static const char *member_str(const cJSON *o, const char *key)
{
	return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, key));
}

/* A flag's status: Graph's word, NOT_FLAGGED when it has none. */
static const char *status_of(const cJSON *flag)
{
	const char *s = member_str(flag, "flagStatus");

	return s && *s ? s : NOT_FLAGGED;
}

/* A date of flag when it names one (an object with a dateTime or a
 * timeZone), else NULL: Graph writes null for a date that is not set. */
static const cJSON *date_of(const cJSON *flag, const char *member)
{
	const cJSON *d = cJSON_GetObjectItemCaseSensitive(flag, member);
	const char *t = member_str(d, "dateTime"), *z = member_str(d, "timeZone");

	return cJSON_IsObject(d) && ((t && *t) || (z && *z)) ? d : NULL;
}

/* Whether flag says anything: a status other than notFlagged, or a date. */
static int says_something(const cJSON *flag)
{
	if (strcmp(status_of(flag), NOT_FLAGGED) != 0)
		return 1;
	for (size_t i = 0; i < NDATES; i++)
		if (date_of(flag, dates[i].member))
			return 1;
	return 0;
}

/* ---- reading the card ---------------------------------------------------------- */

/* s[0..n) without the blanks around it, as a malloc'd string (NULL: out of
 * memory). */
static char *trimmed(const char *s, size_t n)
{
	while (n && (*s == ' ' || *s == '\t')) {
		s++;
		n--;
	}
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	return strndup(s, n);
}

/* The text of a parameter, its values joined by ',' (a time zone name with
 * a comma that was not quoted), trimmed: malloc'd into *out. */
static int param_text(const struct vcard_param *pm, char **out)
{
	struct buf b;
	int r = 0;

	*out = NULL;
	buf_init(&b, 4096);
	for (size_t i = 0; i < pm->nvals && !r; i++)
		if ((i && (r = buf_addch(&b, ','))) || (r = buf_addstr(&b, pm->vals[i])))
			break;
	if (!r && !(*out = trimmed(b.data, b.len)))
		r = -ENOMEM;
	buf_release(&b);
	return r == -E2BIG ? -EINVAL : r;
}

/* "<dateTime> <timeZone>" as a dateTimeTimeZone added to flag as member. */
static int add_date(cJSON *flag, const char *member, const char *text)
{
	const char *sp = strchr(text, ' ');
	cJSON *d = cJSON_CreateObject();
	char *dt = strndup(text, sp ? (size_t)(sp - text) : strlen(text));
	int r = d && dt ? 0 : -ENOMEM;

	if (!r && *dt && !cJSON_AddStringToObject(d, "dateTime", dt))
		r = -ENOMEM;
	if (!r && sp) {
		while (*sp == ' ')
			sp++;
		if (*sp && !cJSON_AddStringToObject(d, "timeZone", sp))
			r = -ENOMEM;
	}
	if (!r && !cJSON_AddItemToObject(flag, member, d))
		r = -ENOMEM;
	if (r)
		cJSON_Delete(d);
	free(dt);
	return r;
}

/* The flag property p says, into the new object *out. */
static int read_prop(const struct vcard_prop *p, cJSON **out, struct vcard_error *err)
{
	const char *word;
	char *text = NULL;
	cJSON *flag;
	int r = 0;

	*out = NULL;
	if (p->kind == VCARD_BINARY || p->ncomps != 1 || p->comps[0].nvals != 1)
		return fail(err, p->line,
			    "%s: the value is one word, flagged, complete or notFlagged",
			    VCARD_FOLLOWUP_PROP);
	if (!(text = trimmed(p->comps[0].vals[0], strlen(p->comps[0].vals[0]))))
		return -ENOMEM;
	if (!*text) {
		free(text);
		return fail(err, p->line, "%s: no status (flagged, complete or notFlagged)",
			    VCARD_FOLLOWUP_PROP);
	}
	if (!(flag = cJSON_CreateObject())) {
		free(text);
		return -ENOMEM;
	}
	word = text;
	/* Graph's spelling of a status we know, whatever the case; another
	 * word as written (vcard_followup_check refuses to send it). */
	for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++)
		if (vcard_strcaseeq(word, statuses[i]))
			word = statuses[i];
	if (!cJSON_AddStringToObject(flag, "flagStatus", word))
		r = -ENOMEM;
	free(text);
	for (size_t i = 0; i < NDATES && !r; i++) {
		const struct vcard_param *pm = vcard_param(p, dates[i].param);
		char *value = NULL;

		if (!pm)
			continue;
		if ((r = param_text(pm, &value)))
			break;
		if (!*value)
			r = fail(err, p->line,
				 "%s: %s is empty (a date and time, a space, a time zone)",
				 VCARD_FOLLOWUP_PROP, dates[i].param);
		else
			r = add_date(flag, dates[i].member, value);
		free(value);
	}
	if (r) {
		cJSON_Delete(flag);
		return r;
	}
	*out = flag;
	return 0;
}

int vcard_followup_read(const struct vcard *card, cJSON **out, struct vcard_error *err)
{
	const struct vcard_prop *found = NULL;

	*out = NULL;
	if (err) {
		err->line = 0;
		err->msg[0] = '\0';
	}
	for (size_t i = 0; i < card->nprops; i++) {
		const struct vcard_prop *p = &card->props[i];

		if (!vcard_strcaseeq(p->name, VCARD_FOLLOWUP_PROP))
			continue;
		if (found)
			return fail(err, p->line,
				    "%s given twice: a contact has one follow-up flag",
				    VCARD_FOLLOWUP_PROP);
		found = p;
	}
	if (found)
		return read_prop(found, out, err);
	*out = cJSON_CreateObject();
	if (!*out || !cJSON_AddStringToObject(*out, "flagStatus", NOT_FLAGGED)) {
		cJSON_Delete(*out);
		*out = NULL;
		return -ENOMEM;
	}
	return 0;
}

void vcard_followup_remove(struct vcard *card)
{
	for (size_t i = card->nprops; i-- > 0;)
		if (vcard_strcaseeq(card->props[i].name, VCARD_FOLLOWUP_PROP))
			vcard_remove(card, i);
}

/* ---- writing the card ------------------------------------------------------------- */

/* Whether v, a member of a dateTimeTimeZone, is absent, null or a string. */
static int text_or_null(const cJSON *v)
{
	return !v || cJSON_IsNull(v) || cJSON_IsString(v);
}

int vcard_followup_add(struct vcard *card, const cJSON *flag, struct vcard_error *err)
{
	struct vcard_prop *p;
	int r = 0;

	if (!flag || cJSON_IsNull(flag))
		return 0;
	if (!cJSON_IsObject(flag))
		return fail(err, 0, "flag: expected an object");
	if (!text_or_null(cJSON_GetObjectItemCaseSensitive(flag, "flagStatus")))
		return fail(err, 0, "flag.flagStatus: expected a string");
	for (size_t i = 0; i < NDATES; i++) {
		const cJSON *d = cJSON_GetObjectItemCaseSensitive(flag, dates[i].member);

		if (d && !cJSON_IsNull(d) &&
		    (!cJSON_IsObject(d) ||
		     !text_or_null(cJSON_GetObjectItemCaseSensitive(d, "dateTime")) ||
		     !text_or_null(cJSON_GetObjectItemCaseSensitive(d, "timeZone"))))
			return fail(err, 0, "flag.%s: expected a dateTimeTimeZone",
				    dates[i].member);
	}
	if (!says_something(flag))
		return 0; /* notFlagged: no property */
	if (!(p = vcard_add(card, NULL, VCARD_FOLLOWUP_PROP)))
		return -ENOMEM;
	for (size_t i = 0; i < NDATES && !r; i++) {
		const cJSON *d = date_of(flag, dates[i].member);
		const char *t, *z;
		struct buf b;

		if (!d)
			continue;
		t = member_str(d, "dateTime");
		z = member_str(d, "timeZone");
		buf_init(&b, 4096);
		r = buf_printf(&b, "%s%s%s", t ? t : "", z && *z ? " " : "", z && *z ? z : "");
		if (!r)
			r = vcard_add_param(card, p, dates[i].param, b.data);
		buf_release(&b);
	}
	if (r)
		return r == -E2BIG ? fail(err, 0, "flag: a date too long to write") : r;
	return vcard_set_text(card, p, status_of(flag));
}

/* ---- comparing and sending ----------------------------------------------------------- */

/* A Graph local date and time in the form Graph writes it,
 * "YYYY-MM-DDTHH:MM:SS.fffffff", into out; 0, or -1 when s is not one. */
static int canonical_time(const char *s, char out[32])
{
	int y, mo, d, h, mi, sec = 0, n = 0;
	char frac[8] = "0000000";
	const char *p;

	if (sscanf(s, "%4d-%2d-%2dT%2d:%2d%n", &y, &mo, &d, &h, &mi, &n) != 5 || n != 16)
		return -1;
	p = s + n;
	if (*p == ':') {
		if (p[1] < '0' || p[1] > '9' || p[2] < '0' || p[2] > '9')
			return -1;
		sec = (p[1] - '0') * 10 + (p[2] - '0');
		p += 3;
		if (*p == '.') {
			size_t k = 0;

			for (p++; *p >= '0' && *p <= '9'; p++)
				if (k < 7)
					frac[k++] = *p;
				else if (*p != '0')
					return -1; /* finer than Graph keeps: not the same */
			if (!k)
				return -1;
		}
	}
	if (*p == 'Z')
		p++;
	if (*p)
		return -1;
	snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%s", y, mo, d, h, mi, sec, frac);
	return 0;
}

static int same_text(const char *a, const char *b)
{
	return !strcmp(a ? a : "", b ? b : "");
}

static int same_date(const cJSON *a, const cJSON *b)
{
	const char *ta, *tb;
	char ca[32], cb[32];

	if (!a || !b)
		return !a && !b;
	if (!same_text(member_str(a, "timeZone"), member_str(b, "timeZone")))
		return 0;
	ta = member_str(a, "dateTime");
	tb = member_str(b, "dateTime");
	if (ta && tb && !canonical_time(ta, ca) && !canonical_time(tb, cb))
		return !strcmp(ca, cb);
	return same_text(ta, tb);
}

int vcard_followup_same(const cJSON *a, const cJSON *b)
{
	if (strcmp(status_of(a), status_of(b)) != 0)
		return 0;
	for (size_t i = 0; i < NDATES; i++)
		if (!same_date(date_of(a, dates[i].member), date_of(b, dates[i].member)))
			return 0;
	return 1;
}

int vcard_followup_check(const cJSON *flag, struct vcard_error *err)
{
	const char *st = status_of(flag);
	int known = 0;

	if (err) {
		err->line = 0;
		err->msg[0] = '\0';
	}
	for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++)
		known |= !strcmp(st, statuses[i]);
	if (!known)
		return fail(err, 0,
			    "%s: '%s' is not a flag status (flagged, complete or notFlagged)",
			    VCARD_FOLLOWUP_PROP, st);
	for (size_t i = 0; i < NDATES; i++) {
		const cJSON *d = date_of(flag, dates[i].member);
		const char *t = member_str(d, "dateTime"), *z = member_str(d, "timeZone");

		if (d && (!t || !*t))
			return fail(err, 0, "%s: %s has no date and time", VCARD_FOLLOWUP_PROP,
				    dates[i].param);
		if (d && (!z || !*z))
			return fail(err, 0,
				    "%s: %s has no time zone: write the date and time, a space "
				    "and the zone (\"%s UTC\")",
				    VCARD_FOLLOWUP_PROP, dates[i].param, t);
	}
	/* followupflag.md: a due date without a start date is 400. */
	if (date_of(flag, "dueDateTime") && !date_of(flag, "startDateTime"))
		return fail(err, 0,
			    "%s: DUE without START; Outlook needs a start date with a due date "
			    "(add START=, the same as DUE if nothing else)",
			    VCARD_FOLLOWUP_PROP);
	return 0;
}

/* dateTimeTimeZone d as a new object with both members (a missing one as
 * ""), or NULL when out of memory. */
static cJSON *date_body(const cJSON *d)
{
	const char *t = member_str(d, "dateTime"), *z = member_str(d, "timeZone");
	cJSON *v = cJSON_CreateObject();

	if (v && cJSON_AddStringToObject(v, "dateTime", t ? t : "") &&
	    cJSON_AddStringToObject(v, "timeZone", z ? z : ""))
		return v;
	cJSON_Delete(v);
	return NULL;
}

cJSON *vcard_followup_patch(const cJSON *flag)
{
	cJSON *body = cJSON_CreateObject(), *f = cJSON_AddObjectToObject(body, "flag");

	if (!f || !cJSON_AddStringToObject(f, "flagStatus", status_of(flag)))
		goto fail;
	/* Every date named, null where the flag has none: nothing documented
	 * says that a PATCH clears the members a complex value leaves out. */
	for (size_t i = 0; i < NDATES; i++) {
		const cJSON *d = date_of(flag, dates[i].member);
		cJSON *v = d ? date_body(d) : cJSON_CreateNull();

		if (!v || !cJSON_AddItemToObject(f, dates[i].member, v)) {
			cJSON_Delete(v);
			goto fail;
		}
	}
	return body;
fail:
	cJSON_Delete(body);
	return NULL;
}
