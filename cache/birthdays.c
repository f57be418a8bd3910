/*
 * .contactfs/birthdays.ics (docs/design.md §10): every contact's birthday and
 * anniversary as a yearly all-day event, built with libical from the cards
 * the mount shows (so what a person wrote and what Outlook holds agree).
 *
 * Dates are read by vcard_date(); Outlook's year 1604, a date without a
 * year and Apple's X-APPLE-OMIT-YEAR all mean "no year". An event without a year starts in 1604
 * (a leap year, as Outlook does), one with a year on the date itself. A 29
 * February recurs on the last day of February: the 29th in leap years, the
 * 28th in the others (RRULE BYMONTHDAY=-1), not only once in four years.
 * UIDs are the contact's UID with "-birthday" or "-anniversary": the same
 * event keeps its UID across reads, edits and remounts.
 */
#include "cache_int.h"

#include <errno.h>
#include <libical/ical.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define NO_YEAR VCARD_NO_YEAR

static int add_event(icalcomponent *cal, const char *uid, const char *what, const char *who,
		     struct vcard *card, const struct vcard_prop *p)
{
	const struct vcard_param *omit = vcard_param(p, "X-APPLE-OMIT-YEAR");
	const char *value = vcard_text(card, p);
	struct icaltimetype start = icaltime_null_date(), stamp;
	struct icalrecurrencetype rule;
	icalcomponent *ev;
	char text[1024];
	int y, m, d;

	if (!value || vcard_date(value, &y, &m, &d))
		return 0; /* VALUE=text ("circa 1800") or not a date: no event */
	if (omit && omit->nvals && y == atoi(omit->vals[0]))
		y = NO_YEAR;
	start.year = y;
	start.month = m;
	start.day = d;
	icalrecurrencetype_clear(&rule);
	rule.freq = ICAL_YEARLY_RECURRENCE;
	if (m == 2 && d == 29) {
		rule.by_month[0] = 2;
		rule.by_month[1] = ICAL_RECURRENCE_ARRAY_MAX;
		rule.by_month_day[0] = -1;
		rule.by_month_day[1] = ICAL_RECURRENCE_ARRAY_MAX;
	}
	stamp = icaltime_from_timet_with_zone(0, 0, icaltimezone_get_utc_timezone());
	if (!(ev = icalcomponent_new(ICAL_VEVENT_COMPONENT)))
		return -ENOMEM;
	snprintf(text, sizeof(text), "%s-%s", uid, what);
	icalcomponent_add_property(ev, icalproperty_new_uid(text));
	icalcomponent_add_property(ev, icalproperty_new_dtstamp(stamp));
	icalcomponent_add_property(ev, icalproperty_new_dtstart(start));
	icalcomponent_add_property(ev, icalproperty_new_rrule(rule));
	snprintf(text, sizeof(text), "%s (%s)", who, what);
	icalcomponent_add_property(ev, icalproperty_new_summary(text));
	if (y == NO_YEAR)
		icalcomponent_add_property(ev, icalproperty_new_description("year unknown"));
	icalcomponent_add_property(ev, icalproperty_new_transp(ICAL_TRANSP_TRANSPARENT));
	icalcomponent_add_property(ev, icalproperty_new_categories(what));
	icalcomponent_add_component(cal, ev);
	return 0;
}

static const char *const ANNIVERSARIES[] = {"ANNIVERSARY", "X-ANNIVERSARY", "X-MS-ANNIVERSARY",
					    "X-EVOLUTION-ANNIVERSARY"};

/* The calendar of the cards as they are now, into *text (malloc'd). Under
 * api_lock. */
static int make(struct cache *c, char **text)
{
	icalcomponent *cal;
	sqlite3_stmt *st;
	int r;

	*text = NULL;
	cal = icalcomponent_vanew(ICAL_VCALENDAR_COMPONENT, icalproperty_new_version("2.0"),
				  icalproperty_new_prodid("-//contactfs//birthdays//EN"),
				  icalproperty_new_calscale("GREGORIAN"), (void *)0);
	if (!cal)
		return -ENOMEM;
	r = cache_db_prepare(
		c->db, &st,
		"SELECT n.data, k.id FROM nodes n JOIN contacts k ON k.cid = n.cid WHERE "
		"n.cid IS NOT NULL ORDER BY n.ino",
		NULL);
	while (!r && (r = cache_db_step(st)) == 1) {
		const char *data = (const char *)sqlite3_column_blob(st, 0);
		const char *id = (const char *)sqlite3_column_text(st, 1);
		struct vcard_prop *p, *uidp, *fn;
		struct vcard_error e;
		struct vcard *card = NULL;
		const char *uid, *who;

		r = 0;
		if (!data || vcard_parse_one(data, (size_t)sqlite3_column_bytes(st, 0), &card, &e))
			continue;
		uidp = vcard_find(card, "UID");
		fn = vcard_find(card, "FN");
		uid = uidp ? vcard_text(card, uidp) : id;
		who = fn ? vcard_text(card, fn) : NULL;
		if (uid && *uid) {
			if ((p = vcard_find(card, "BDAY")))
				r = add_event(cal, uid, "birthday", who && *who ? who : uid, card,
					      p);
			for (size_t i = 0; !r && i < sizeof(ANNIVERSARIES) / sizeof(*ANNIVERSARIES);
			     i++) {
				if ((p = vcard_find(card, ANNIVERSARIES[i]))) {
					r = add_event(cal, uid, "anniversary",
						      who && *who ? who : uid, card, p);
					break;
				}
			}
		}
		vcard_free(card);
	}
	if (st)
		cache_db_release(st);
	if (!r && !(*text = icalcomponent_as_ical_string_r(cal)))
		r = -ENOMEM;
	icalcomponent_free(cal);
	return r < 0 ? r : 0;
}

int cache_birthdays_ics(struct cache *c, struct buf *out)
{
	int64_t version = 0, changes;
	int r;

	/* Made again only when the database changed since: a stat of the
	 * file (ls -l .contactfs) would otherwise parse every card. */
	pthread_mutex_lock(&c->api_lock);
	r = cache_db_int(c->db, &version, "PRAGMA data_version", NULL);
	changes = (int64_t)sqlite3_total_changes(c->db);
	if (r >= 0 && (!c->ics || version != c->ics_version || changes != c->ics_changes)) {
		char *text;

		if (!(r = make(c, &text))) {
			free(c->ics);
			c->ics = text;
			c->ics_len = strlen(text);
			c->ics_version = version;
			c->ics_changes = changes;
		}
	}
	if (r >= 0)
		r = buf_add(out, c->ics, c->ics_len);
	pthread_mutex_unlock(&c->api_lock);
	return r < 0 ? r : 0;
}
