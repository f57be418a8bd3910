/* What vcard/ knows about property names: how their values are shaped and
 * where the writer puts them. One table, looked up by binary search. */
#include "vcard_int.h"

#include <stdlib.h>
#include <string.h>

#define S VCARD_SHAPE_SINGLE
#define C VCARD_SHAPE_COMPS
#define L VCARD_SHAPE_LIST
#define F VCARD_SHAPE_FULL
#define U VCARD_RANK_UNKNOWN

/* Sorted by name (strcmp order): vcard_known() relies on it, and the unit
 * test known_properties_are_found_by_name checks it. */
/* clang-format off */
static const struct vcard_known known[] = {
	/* name                      shape raw bin rank */
	{"ADR",                      F, 0, 0, 16},
	{"AGENT",                    S, 0, 0, U},
	{"ANNIVERSARY",              S, 0, 0, 22},
	{"BDAY",                     S, 0, 0, 21},
	{"CALADRURI",                S, 1, 0, U},
	{"CALURI",                   S, 1, 0, U},
	{"CATEGORIES",               L, 0, 0, 31},
	{"CLASS",                    S, 0, 0, U},
	{"CLIENTPIDMAP",             C, 0, 0, U},
	{"EMAIL",                    S, 0, 0, 14},
	{"FBURL",                    S, 1, 0, U},
	{"FN",                       S, 0, 0, 1},
	{"GENDER",                   C, 0, 0, 8},
	{"GEO",                      S, 1, 0, 33},
	{"IMPP",                     S, 1, 0, 19},
	{"KEY",                      S, 1, 1, 37},
	{"KIND",                     S, 0, 0, 7},
	{"LABEL",                    S, 0, 0, 17},
	{"LANG",                     S, 0, 0, 35},
	{"LOGO",                     S, 1, 1, 65},
	{"MAILER",                   S, 0, 0, U},
	{"MEMBER",                   S, 1, 0, 36},
	{"N",                        F, 0, 0, 2},
	{"NAME",                     S, 0, 0, U},
	{"NICKNAME",                 L, 0, 0, 3},
	{"NOTE",                     S, 0, 0, 32},
	{"ORG",                      C, 0, 0, 9},
	{"PHOTO",                    S, 1, 1, 64},
	{"PRODID",                   S, 0, 0, 63},
	{"PROFILE",                  S, 0, 0, U},
	{"RELATED",                  S, 0, 0, 28},
	{"REV",                      S, 0, 0, 62},
	{"ROLE",                     S, 0, 0, 12},
	{"SORT-STRING",              S, 0, 0, U},
	{"SOUND",                    S, 1, 1, 66},
	{"SOURCE",                   S, 1, 0, U},
	{"TEL",                      S, 0, 0, 15},
	{"TITLE",                    S, 0, 0, 11},
	{"TZ",                       S, 0, 0, 34},
	{"UID",                      S, 0, 0, 60},
	{"URL",                      S, 1, 0, 18},
	{"X-CONTACTFS-CREATED",      S, 0, 0, 61},
	{"X-CONTACTFS-INITIALS",     S, 0, 0, 29},
	{"X-EVOLUTION-FILE-AS",      S, 0, 0, 30},
	{"X-KADDRESSBOOK-X-OFFICE",  S, 0, 0, 13},
	{"X-MS-ANNIVERSARY",         S, 0, 0, 23},
	{"X-MS-ASSISTANT",           S, 0, 0, 27},
	{"X-MS-CHILD",               S, 0, 0, 25},
	{"X-MS-IMADDRESS",           S, 0, 0, 20},
	{"X-MS-MANAGER",             S, 0, 0, 26},
	{"X-MS-SPOUSE",              S, 0, 0, 24},
	{"X-PHONETIC-FIRST-NAME",    S, 0, 0, 4},
	{"X-PHONETIC-LAST-NAME",     S, 0, 0, 6},
	{"X-PHONETIC-MIDDLE-NAME",   S, 0, 0, 5},
	{"X-PHONETIC-ORG",           S, 0, 0, 10},
	{"XML",                      S, 0, 0, U},
};
/* clang-format on */

static int known_cmp(const void *key, const void *entry)
{
	return strcmp(key, ((const struct vcard_known *)entry)->name);
}

const struct vcard_known *vcard_known(const char *name)
{
	return bsearch(name, known, sizeof(known) / sizeof(known[0]), sizeof(known[0]), known_cmp);
}

const struct vcard_known *vcard_known_at(size_t i)
{
	return i < sizeof(known) / sizeof(known[0]) ? &known[i] : NULL;
}
