/*
 * vcard — parse and write vCard 2.1/3.0/4.0, and map vCards to and from
 * Microsoft Graph contact JSON. Pure functions: no I/O, no globals, no locks;
 * safe to call from any thread on distinct objects.
 *
 * Invariants:
 *  - A struct vcard owns every string and array reachable from it (they live
 *    in the card's arena); they stay valid until vcard_free().
 *  - Text in a parsed card is UTF-8, whatever the input's charset and
 *    transfer encoding; escapes are undone, folding is undone.
 *  - Values are kept structured: a property value is a list of components
 *    (separated by ';' in the file), each a list of values (separated by ',').
 *    Writing the same structure back escapes exactly what must be escaped, so
 *    parse(write(card)) has the same properties, parameters and values.
 *  - Property and parameter names are upper-cased; groups and parameter
 *    values are kept as written. Nothing the parser does not understand is
 *    dropped.
 *  - vcard_write() is deterministic: the same card gives the same bytes.
 *  - Errors name the line (1-based, in the input) and what is wrong.
 */
#ifndef CONTACTFS_VCARD_H
#define CONTACTFS_VCARD_H

#include <stddef.h>

#include <cjson/cJSON.h>

#define VCARD_MUST_CHECK __attribute__((warn_unused_result))

enum vcard_version {
	VCARD_V21 = 21,
	VCARD_V30 = 30,
	VCARD_V40 = 40,
};

/* How a property's value is held. */
enum vcard_kind {
	/* Structured text: comps[i].vals[j], unescaped. Most properties. */
	VCARD_TEXT,
	/* One string kept as written: URIs (URL, IMPP, PHOTO by reference,
	 * VALUE=uri, ...) and GEO. The reader undoes only \\ \, \; \: \n
	 * (Apple writes "http\://"); the writer doubles a backslash only
	 * where the reader would take it for one of those. Held in
	 * comps[0].vals[0]. */
	VCARD_RAW,
	/* Bytes decoded from base64 (ENCODING=b/BASE64 or a data: URI). */
	VCARD_BINARY,
};

struct vcard_known;

struct vcard_param {
	const char *name;  /* upper-case, e.g. "TYPE"; bare 2.1 params become TYPE */
	const char **vals; /* unquoted, RFC 6868 decoded */
	size_t nvals;
};

struct vcard_comp {
	const char **vals;
	size_t nvals; /* >= 1: an empty component holds one "" */
};

struct vcard_prop {
	const char *group; /* NULL when the property has none */
	const char *name;  /* upper-case */
	struct vcard_param *params;
	size_t nparams;
	enum vcard_kind kind;
	struct vcard_comp *comps; /* VCARD_TEXT, VCARD_RAW: ncomps >= 1 */
	size_t ncomps;
	const unsigned char *data;	 /* VCARD_BINARY: the bytes ... */
	size_t len;			 /* ... their length ... */
	const char *mediatype;		 /* ... and type, e.g. "image/jpeg", or NULL */
	unsigned line;			 /* first input line, 0 if built in memory */
	const struct vcard_known *known; /* internal: vcard/'s entry for name, or NULL */
};

struct vcard {
	enum vcard_version version; /* as read; VCARD_V30 for a new card */
	struct vcard_prop *props;   /* BEGIN, VERSION and END are not included */
	size_t nprops;
	size_t props_size;
	unsigned line; /* line of BEGIN:VCARD */
	/* The repairs the parser made, one "line N: what" a line ('\n'
	 * between them, in input order), or NULL when it made none. */
	const char *warning;
	unsigned nwarnings; /* how many repairs, listed or not */
	struct vcard_arena *arena;
};

struct vcard_error {
	unsigned line; /* 1-based input line the error is about; 0: none */
	char msg[200]; /* "line 12: ..." , NUL-terminated */
};

/* ---- parsing ----------------------------------------------------------- */

/*
 * Parse every card in data[0..len). On success returns 0 and sets *cards to
 * a malloc'd array of *ncards cards (free with vcard_free_all()); an input
 * with no card at all is an error. On failure returns -EINVAL (err says
 * which line and why) or -ENOMEM, and *cards is NULL. Input that other
 * readers take although it breaks the grammar is repaired as docs/vcard.md
 * lists (a missing BEGIN or END, a missing VERSION, a group on BEGIN/END,
 * text that is not valid UTF-8, ...); each repair adds a line to the card's
 * warning. Everything else that breaks the grammar is refused.
 */
int vcard_parse(const char *data, size_t len, struct vcard ***cards, size_t *ncards,
		struct vcard_error *err) VCARD_MUST_CHECK;

/* Parse exactly one card; more than one is an error (-EINVAL). */
int vcard_parse_one(const char *data, size_t len, struct vcard **card,
		    struct vcard_error *err) VCARD_MUST_CHECK;

void vcard_free(struct vcard *card);
void vcard_free_all(struct vcard **cards, size_t n);

/* ---- building and reading ------------------------------------------------ */

/* An empty card (version 3.0), or NULL when out of memory. */
struct vcard *vcard_new(void);

/* Append a property; group may be NULL. The strings are copied. Returns the
 * new property (valid until the next vcard_add on this card) or NULL when out
 * of memory. It starts as VCARD_TEXT with one empty component. */
struct vcard_prop *vcard_add(struct vcard *card, const char *group, const char *name);

/* Append a copy of prop (from any card) to card. 0 or -ENOMEM. */
int vcard_add_copy(struct vcard *card, const struct vcard_prop *prop) VCARD_MUST_CHECK;

/* Remove the property at index i. Cannot fail. */
void vcard_remove(struct vcard *card, size_t i);

/* Set the value of prop (a property of card). Strings and bytes are copied.
 * 0 or -ENOMEM. */
int vcard_set_text(struct vcard *card, struct vcard_prop *prop, const char *text) VCARD_MUST_CHECK;
int vcard_set_comps(struct vcard *card, struct vcard_prop *prop, const char *const *comps,
		    size_t n) VCARD_MUST_CHECK;
/* Component i becomes the list vals[0..n); components before it are created
 * empty. */
int vcard_set_list(struct vcard *card, struct vcard_prop *prop, size_t i, const char *const *vals,
		   size_t n) VCARD_MUST_CHECK;
int vcard_set_raw(struct vcard *card, struct vcard_prop *prop, const char *raw) VCARD_MUST_CHECK;
int vcard_set_binary(struct vcard *card, struct vcard_prop *prop, const void *data, size_t len,
		     const char *mediatype) VCARD_MUST_CHECK;

/* Add value to parameter name of prop (creating the parameter). */
int vcard_add_param(struct vcard *card, struct vcard_prop *prop, const char *name,
		    const char *value) VCARD_MUST_CHECK;

/* The first property called name (case-insensitive), or NULL. */
struct vcard_prop *vcard_find(const struct vcard *card, const char *name);

/* The parameter called name, or NULL. */
const struct vcard_param *vcard_param(const struct vcard_prop *prop, const char *name);

/* Whether prop has TYPE=type (case-insensitive), counting 4.0's PREF as
 * TYPE=PREF. */
int vcard_has_type(const struct vcard_prop *prop, const char *type);

/* The value of prop as one string: components joined by ';' and list values
 * by ',', unescaped. Lives in card's arena; NULL only when out of memory or
 * for a binary value. */
const char *vcard_text(struct vcard *card, const struct vcard_prop *prop);

/* Component i joined by sep (or "" when there is no component i). Arena
 * string as above. */
const char *vcard_comp(struct vcard *card, const struct vcard_prop *prop, size_t i,
		       const char *sep);

/* Whether two properties have the same group, name, parameters (any order)
 * and value. */
int vcard_prop_equal(const struct vcard_prop *a, const struct vcard_prop *b);

/* ---- writing ------------------------------------------------------------- */

struct buf;

/*
 * Append card to out as vCard 3.0 or 4.0: CRLF line ends, folded at 75
 * octets on character boundaries, escaped per property, properties in a
 * fixed order (see docs/mapping.md) with grouped properties kept together.
 * What the versions spell differently is translated: dates (BDAY,
 * ANNIVERSARY, DEATHDATE, REV: 1974-07-22 in 3.0, 19740722 in 4.0), GEO,
 * TYPE=pref / PREF=1, and binary values (ENCODING=b / data: URIs).
 * Returns 0, -EINVAL for a version it cannot write, -ENOMEM or -E2BIG (the
 * buffer's cap). On failure out may hold part of the card.
 */
int vcard_write(const struct vcard *card, enum vcard_version version,
		struct buf *out) VCARD_MUST_CHECK;

/* ---- base64 (used by the writer, the mapping and the command line) ------ */

/* Append data base64-encoded (standard alphabet, padded, no line breaks).
 * 0, -ENOMEM or -E2BIG. */
int vcard_base64_encode(struct buf *out, const void *data, size_t len) VCARD_MUST_CHECK;

/* Append the bytes that s[0..n) encodes: standard or URL-safe alphabet,
 * whitespace skipped, decoding stops at the first '='. 0; -EINVAL for any
 * other character (*bad, if not NULL, is its offset); -ENOMEM or -E2BIG. */
int vcard_base64_decode(struct buf *out, const char *s, size_t n, size_t *bad) VCARD_MUST_CHECK;

/* ---- dates ---------------------------------------------------------------- */

#define VCARD_NO_YEAR 1604 /* Outlook's and Apple's year for "no year" */

/* A date value (BDAY, ANNIVERSARY): "1974-07-22", "19740722", "--07-22" or
 * "--0722", a time after it ignored. *year is VCARD_NO_YEAR without one.
 * 0, or -EINVAL for anything else or a day the month does not have. */
int vcard_date(const char *s, int *year, int *month, int *day) VCARD_MUST_CHECK;

/* ---- Microsoft Graph mapping ------------------------------------------- */

/* Name of the open extension that carries what Graph cannot hold. */
#define VCARD_EXTENSION_NAME "org.contactfs.vcard"

/* The property the mount adds to every card it shows, naming the server
 * version (and photo) it was made from, so that a card written back can be
 * merged against that version. Bookkeeping, like REV: the mapping ignores
 * it when it reads a card. */
#define VCARD_VERSION_PROP "X-CONTACTFS-VERSION"

/* The contact fields the mapping reads, for $select (delta, lists). */
#define VCARD_GRAPH_SELECT                                                                         \
	"displayName,givenName,surname,middleName,title,generation,nickName,initials,fileAs,"       \
	"yomiGivenName,yomiSurname,yomiCompanyName,companyName,department,jobTitle,profession,"    \
	"officeLocation,manager,assistantName,spouseName,children,emailAddresses,businessPhones,"  \
	"homePhones,mobilePhone,homeAddress,businessAddress,otherAddress,businessHomePage,"        \
	"birthday,personalNotes,categories,imAddresses,createdDateTime,lastModifiedDateTime,"      \
	"changeKey,parentFolderId"

/*
 * Graph contact JSON (as GET returns it, optionally with $expand=extensions)
 * to a card. photo/photo_len/photo_type: the contact's photo bytes and media
 * type, or NULL/0/NULL. *out is a new card on success, NULL on failure.
 * Returns 0, -EINVAL (err says what) or -ENOMEM.
 */
int vcard_from_graph(const cJSON *contact, const void *photo, size_t photo_len,
		     const char *photo_type, struct vcard **out,
		     struct vcard_error *err) VCARD_MUST_CHECK;

/*
 * A card to the body of a Graph create-contact request, with our open
 * extension inline in "extensions" when the card holds anything Graph cannot.
 * The PHOTO is not in the body: find it with vcard_photo(). *out is a new
 * cJSON object on success. Returns 0, -EINVAL or -ENOMEM.
 */
int vcard_to_graph(const struct vcard *card, cJSON **out, struct vcard_error *err) VCARD_MUST_CHECK;

/* The card's photo property if it holds bytes (a binary PHOTO), else NULL. */
const struct vcard_prop *vcard_photo(const struct vcard *card);

/*
 * The minimal update from the server's last version of a contact (GET JSON,
 * with extensions expanded) to the edited card: *patch is the PATCH body
 * (always holding displayName); *ext is the open extension's new body when it
 * changed, else NULL. Returns 0, -EINVAL or -ENOMEM; on failure both are NULL.
 */
int vcard_graph_diff(const cJSON *server, const struct vcard *card, cJSON **patch, cJSON **ext,
		     struct vcard_error *err) VCARD_MUST_CHECK;

/* ---- the follow-up flag (docs/mapping.md, "Follow-up flag") ---------------- */

/*
 * A contact's follow-up flag (Graph beta's followupFlag) as one property:
 *   X-CONTACTFS-FOLLOWUP;START="<dateTime> <timeZone>";DUE="...";COMPLETED="...":<flagStatus>
 * The mapping above never reads or writes it: without -o followup it is an
 * unknown property like any other. These functions are for a caller that
 * maps the flag; flags are followupFlag JSON objects as Graph gives them.
 */
#define VCARD_FOLLOWUP_PROP "X-CONTACTFS-FOLLOWUP"

/*
 * The flag card carries, as a new followupFlag object *out: its
 * flagStatus (Graph's spelling for the three known words, in any case;
 * another word as written) and each date it names as {dateTime, timeZone},
 * split at the first space. {"flagStatus":"notFlagged"} when the card has
 * no such property. Parameters are found in any order and case; unknown
 * ones are ignored. -EINVAL (err names the line) for a value that is not
 * one word, an empty date, or the property given twice; -ENOMEM. *out is
 * NULL on failure.
 */
int vcard_followup_read(const struct vcard *card, cJSON **out,
			struct vcard_error *err) VCARD_MUST_CHECK;

/* Remove every X-CONTACTFS-FOLLOWUP property of card. Cannot fail. */
void vcard_followup_remove(struct vcard *card);

/*
 * Append the property for flag to card: nothing for NULL, JSON null, or
 * notFlagged without a date; otherwise the status and each date Graph gives,
 * written as given, so that vcard_followup_read gives the same strings
 * back. 0, -EINVAL (err says what in flag is not a followupFlag), -ENOMEM.
 */
int vcard_followup_add(struct vcard *card, const cJSON *flag,
		       struct vcard_error *err) VCARD_MUST_CHECK;

/* Whether two flags (NULL: not flagged) say the same: the same status, and
 * for each date the same time zone and the same local time, however many
 * digits of it are written ("T09:00" is Graph's "T09:00:00.0000000"). */
int vcard_followup_same(const cJSON *a, const cJSON *b);

/* Whether Graph can take flag: 0, or -EINVAL with err saying why (a status
 * it does not know, a date without its time or its time zone, a due date
 * without a start date: followupflag.md). */
int vcard_followup_check(const cJSON *flag, struct vcard_error *err) VCARD_MUST_CHECK;

/* The beta PATCH body that sets flag: {"flag": {"flagStatus", and each of
 * the three dates, null where flag has none}}. New object, or NULL when out
 * of memory. */
cJSON *vcard_followup_patch(const cJSON *flag);

#endif
