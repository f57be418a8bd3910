/*
 * The Graph mapping (vcard/graph.c), as docs/mapping.md specifies it: what a
 * Graph contact becomes as a vCard and back, what a vCard becomes as Graph
 * JSON and back, the slot limits, birthdays, and the minimal PATCH.
 *
 * JSON fixtures are written with single quotes for readability; fixture_jq() turns
 * them into double quotes (no fixture needs an apostrophe).
 */
#include "check.h"
#include "util.h"
#include "vcard.h"
#include "vcard_fixtures.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- helpers ------------------------------------------------------------- */

/* card as a file of version v holds it: malloc'd text. */
static char *text_of(const struct vcard *card, enum vcard_version v)
{
	struct buf b;

	buf_init(&b, 0);
	if (vcard_write(card, v, &b)) {
		buf_release(&b);
		return NULL;
	}
	return buf_detach(&b, NULL);
}

/* What reading back a written card gives: the card as a file holds it. */
static struct vcard *reread(const struct vcard *card, enum vcard_version v)
{
	char *text = text_of(card, v);
	struct vcard *out = text ? fixture_card_of(text) : NULL;

	free(text);
	return out;
}

static struct vcard *from_json(const cJSON *contact)
{
	struct vcard_error err;
	struct vcard *card;
	int r = vcard_from_graph(contact, NULL, 0, NULL, &card, &err);

	if (r)
		fprintf(stderr, "vcard_from_graph: %d: %s\n", r, err.msg);
	return r ? NULL : card;
}

static cJSON *to_json(const struct vcard *card)
{
	struct vcard_error err;
	cJSON *out;
	int r = vcard_to_graph(card, &out, &err);

	if (r)
		fprintf(stderr, "vcard_to_graph: %d: %s\n", r, err.msg);
	return r ? NULL : out;
}

static const char *jstr(const cJSON *obj, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int jsize(const cJSON *obj, const char *key)
{
	return cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(obj, key));
}

/* Element i of the array obj[key], when it is a string. */
static const char *jitem(const cJSON *obj, const char *key, int i)
{
	const cJSON *v = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(obj, key), i);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Member key of element i of the array obj[arr]. */
static const char *jmember(const cJSON *obj, const char *arr, int i, const char *key)
{
	return jstr(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(obj, arr), i), key);
}

/* Our extension in a create body or a GET response, or NULL. */
static const cJSON *ext_of(const cJSON *contact)
{
	return cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(contact, "extensions"), 0);
}

static int count_props(const struct vcard *card, const char *name)
{
	int n = 0;

	for (size_t i = 0; i < card->nprops; i++)
		n += !strcmp(card->props[i].name, name);
	return n;
}

/* The text of the first property called name, or NULL: one value of one
 * component, as most of the checks below need. */
static const char *value_of(const struct vcard *card, const char *name)
{
	const struct vcard_prop *p = vcard_find(card, name);

	return p && p->ncomps ? p->comps[0].vals[0] : NULL;
}

static const char *value_of_prop(const struct vcard_prop *p)
{
	return p->ncomps ? p->comps[0].vals[0] : "";
}

/* Whether the written text holds this exact line, once unfolded. */
static int has_line(const char *text, const char *line)
{
	char *flat = malloc(text ? strlen(text) + 1 : 1), *o = flat, *p;
	size_t n = strlen(line);
	int found = 0;

	if (!flat || !text) {
		free(flat);
		return 0;
	}
	for (const char *t = text; *t; t++) {
		if (t[0] == '\r' && t[1] == '\n' && t[2] == ' ')
			t += 2;
		else
			*o++ = *t;
	}
	*o = '\0';
	for (p = flat; !found && (p = strstr(p, line)); p += n)
		found = (p == flat || p[-1] == '\n') && (p[n] == '\r' || p[n] == '\n');
	free(flat);
	return found;
}

/* A fixture file from the shared test data (../shared relative to the repo
 * root, found from this file's path), or NULL when it is not there; path
 * gets where it was looked for. */
static char *shared_file(const char *name, char *path, size_t size)
{
	const char *f = __FILE__, *tail = strstr(f, "tests/unit/");
	struct buf b;
	char chunk[4096];
	size_t n;
	FILE *fp;

	snprintf(path, size, "%.*s../shared/testdata/graph/%s", (int)(tail ? tail - f : 0), f,
		 name);
	if (!(fp = fopen(path, "rb")))
		return NULL;
	buf_init(&b, 0);
	while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0)
		if (buf_add(&b, chunk, n))
			break;
	fclose(fp);
	return buf_detach(&b, NULL);
}

/* ---- a spec-level normaliser, independent of the implementation ----------- */

static const char *const graph_fields[] = {
	"displayName",	  "givenName",
	"middleName",	  "surname",
	"title",	  "generation",
	"nickName",	  "initials",
	"fileAs",	  "yomiGivenName",
	"yomiSurname",	  "yomiCompanyName",
	"companyName",	  "department",
	"jobTitle",	  "profession",
	"officeLocation", "manager",
	"assistantName",  "spouseName",
	"children",	  "emailAddresses",
	"imAddresses",	  "businessPhones",
	"homePhones",	  "mobilePhone",
	"homeAddress",	  "businessAddress",
	"otherAddress",	  "businessHomePage",
	"birthday",	  "personalNotes",
	"categories",	  NULL,
};

static int is_empty(const cJSON *v)
{
	return !v || cJSON_IsNull(v) || (cJSON_IsString(v) && !v->valuestring[0]) ||
	       ((cJSON_IsArray(v) || cJSON_IsObject(v)) && !v->child);
}

/* A Graph field as the mapping promises to keep it: null, "", [], {} and
 * empty members are absent; a birthday is its date; an email's name equal to
 * its address is no name. NULL when absent. */
static cJSON *norm(const cJSON *contact, const char *field)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(contact, field);
	cJSON *out, *e;

	if (is_empty(v))
		return NULL;
	if (!strcmp(field, "birthday") && cJSON_IsString(v)) {
		char date[11];

		snprintf(date, sizeof(date), "%.10s", v->valuestring);
		return cJSON_CreateString(date);
	}
	out = cJSON_Duplicate(v, 1);
	if (cJSON_IsObject(out) || cJSON_IsArray(out)) {
		cJSON *c = out->child, *next;

		for (; c; c = next) {
			next = c->next;
			if (is_empty(c))
				cJSON_Delete(cJSON_DetachItemViaPointer(out, c));
		}
	}
	for (e = out ? out->child : NULL; e; e = e->next) {
		const char *name = jstr(e, "name"), *addr = jstr(e, "address");

		if (cJSON_IsObject(e) && name && (!name[0] || (addr && !strcmp(name, addr))))
			cJSON_DeleteItemFromObjectCaseSensitive(e, "name");
	}
	return out;
}

/* The first mapped field where a and b differ once normalised, or "". */
static const char *first_difference(const cJSON *a, const cJSON *b)
{
	for (size_t i = 0; graph_fields[i]; i++) {
		cJSON *x = norm(a, graph_fields[i]), *y = norm(b, graph_fields[i]);
		int same;

		if (!strcmp(graph_fields[i], "birthday") && x && y)
			same = !strncmp(x->valuestring, y->valuestring, 10);
		else
			same = (!x && !y) || (x && y && cJSON_Compare(x, y, 1));
		if (!same) {
			char *sx = x ? cJSON_PrintUnformatted(x) : NULL;
			char *sy = y ? cJSON_PrintUnformatted(y) : NULL;

			fprintf(stderr, "%s: %s != %s\n", graph_fields[i], sx ? sx : "(absent)",
				sy ? sy : "(absent)");
			free(sx);
			free(sy);
		}
		cJSON_Delete(x);
		cJSON_Delete(y);
		if (!same)
			return graph_fields[i];
	}
	return "";
}

/* ---- comparing cards as multisets of properties ----------------------------- */

static int skipped_in_compare(const struct vcard_prop *p)
{
	return !strcmp(p->name, "REV") || !strcmp(p->name, "X-CONTACTFS-CREATED");
}

static void print_prop(const char *what, const struct vcard_prop *p)
{
	struct vcard *tmp = vcard_new();
	char *text = NULL;

	if (tmp && !vcard_add_copy(tmp, p))
		text = text_of(tmp, VCARD_V30);
	fprintf(stderr, "%s: %s", what,
		text ? text + strlen("BEGIN:VCARD\r\nVERSION:3.0\r\n") : "?\n");
	free(text);
	vcard_free(tmp);
}

/* Whether a and b hold the same properties (vcard_prop_equal), in any order,
 * REV and X-CONTACTFS-CREATED aside; prints what does not match. */
static int same_props(const struct vcard *a, const struct vcard *b)
{
	unsigned char used[512] = {0};
	int ok = 1;

	if (b->nprops > sizeof(used))
		return 0;
	for (size_t i = 0; i < a->nprops; i++) {
		size_t j;

		if (skipped_in_compare(&a->props[i]))
			continue;
		for (j = 0; j < b->nprops; j++)
			if (!used[j] && vcard_prop_equal(&a->props[i], &b->props[j]))
				break;
		if (j == b->nprops) {
			print_prop("only in the first", &a->props[i]);
			ok = 0;
		} else {
			used[j] = 1;
		}
	}
	for (size_t j = 0; j < b->nprops; j++) {
		if (!used[j] && !skipped_in_compare(&b->props[j])) {
			print_prop("only in the second", &b->props[j]);
			ok = 0;
		}
	}
	return ok;
}

/* ---- fixtures ------------------------------------------------------------- */

/* Every mapped field set, with the awkward characters each can hold. */
static const char rich_json[] =
	"{'id': 'AAMkRICH=', 'changeKey': 'EQAAAB', 'parentFolderId': 'AAMkFOLDER=',"
	" '@odata.etag': 'W/\\'EQAAAB\\'',"
	" 'createdDateTime': '2020-01-02T03:04:05Z',"
	" 'lastModifiedDateTime': '2021-02-03T04:05:06.1234567Z',"
	" 'displayName': 'Dr. Jane Q. Doe, PhD', 'givenName': 'Jane', 'middleName': 'Quinn',"
	" 'surname': 'Doe', 'title': 'Dr.', 'generation': 'PhD', 'nickName': 'JD',"
	" 'initials': 'J.Q.D.', 'fileAs': 'Doe, Jane', 'yomiGivenName': '\xe3\x82\xb8\xe3\x82\xa7',"
	" 'yomiSurname': '\xe3\x83\x89\xe3\x82\xa6', 'yomiCompanyName': 'Ekusa',"
	" 'companyName': 'Example, Inc.', 'department': 'Research; Lab 3',"
	" 'jobTitle': 'Chief Scientist', 'profession': 'Physicist',"
	" 'officeLocation': 'Building 7; Room 12', 'manager': 'Alice Boss',"
	" 'assistantName': 'Bob Helper', 'spouseName': 'Sam Doe', 'children': ['Kim', 'Lee'],"
	" 'emailAddresses': [{'name': 'Jane Doe', 'address': 'jane@work.example'},"
	"   {'name': 'jane@home.example', 'address': 'jane@home.example'},"
	"   {'address': 'jd@third.example'}],"
	" 'imAddresses': ['sip:jane@work.example', 'xmpp:jane@jabber.example'],"
	" 'businessPhones': ['+1 555 0100', '+1 555 0101'],"
	" 'homePhones': ['+1 555 0200', '+1 555 0201'], 'mobilePhone': '+1 555 0300',"
	" 'homeAddress': {'street': 'PO Box 12\\nApt 4\\n1 Main St', 'city': 'Springfield',"
	"   'state': 'IL', 'postalCode': '62701', 'countryOrRegion': 'USA'},"
	" 'businessAddress': {'street': '10 Lab Way', 'city': 'Chicago', 'state': 'IL',"
	"   'postalCode': '60601', 'countryOrRegion': 'USA'},"
	" 'otherAddress': {'city': 'Paris', 'countryOrRegion': 'France'},"
	" 'businessHomePage': 'https://example.com/~jane?a=1,b=2;c',"
	" 'birthday': '1604-04-01T11:59:00Z',"
	" 'personalNotes': 'Line one\\nLine two; with, punctuation \\\\ backslash',"
	" 'categories': ['Friends', 'Work, Important']}";

/* A card with everything Graph cannot hold as it is. */
static const char rich_card[] =
	"BEGIN:VCARD\n"
	"VERSION:3.0\n"
	"PRODID:-//Apple Inc.//iPhone OS 17.0//EN\n"
	"UID:4fbe8971-0bc3-424c-9c26-36c3e1eff6b1\n"
	"FN:Jane Q. Doe\n"
	"N:Doe;Jane;Quinn,Q.;Dr.;PhD\n"
	"NICKNAME:JD\n"
	"ORG:Example Corp;Research;Lab 3\n"
	"TITLE:Chief Scientist\n"
	"ROLE:Physicist\n"
	"EMAIL;TYPE=INTERNET,WORK:jane@work.example\n"
	"EMAIL;TYPE=HOME:jane@home.example\n"
	"item1.EMAIL;TYPE=INTERNET:jane@lab.example\n"
	"item1.X-ABLabel:Lab\n"
	"EMAIL:jane@old.example\n"
	"EMAIL;TYPE=INTERNET,PREF:jd@fifth.example\n"
	"TEL;TYPE=WORK,VOICE:+1 555 0100\n"
	"TEL;TYPE=WORK:+1 555 0101\n"
	"TEL;TYPE=WORK,VOICE,PREF:+1 555 0102\n"
	"TEL;TYPE=WORK,FAX:+1 555 0199\n"
	"TEL;TYPE=CELL:+1 555 0123\n"
	"TEL;TYPE=HOME:+1 555 0188\n"
	"item2.TEL:+1 555 0177\n"
	"item2.X-ABLabel:_$!<Other>!$_\n"
	"ADR;TYPE=HOME:PO Box 12;Apt 4;1 Main St;Springfield;IL;62701;USA\n"
	"ADR;TYPE=WORK:;;10 Lab Way;Chicago;IL;60601;USA\n"
	"URL;TYPE=WORK:https://work.example/jane\n"
	"URL:https://jane.example/blog\n"
	"BDAY;X-APPLE-OMIT-YEAR=1604:1604-04-01\n"
	"ANNIVERSARY:20010609\n"
	"X-MS-ANNIVERSARY:2001-06-09\n"
	"RELATED;TYPE=spouse:urn:uuid:03a0e51f-d1aa-4385-8a53-e29025acd8af\n"
	"GEO:37.386013;-122.082932\n"
	"CATEGORIES:Friends,Work\n"
	"NOTE:Met at the conference.\\nLikes tea\\, not coffee.\n"
	"NOTE:A second note\n"
	"X-MS-MANAGER:Alice Boss\n"
	"X-CUSTOM-THING;X-PARAM=1:some value\n"
	"X-SOCIALPROFILE;TYPE=twitter:https://twitter.com/jane\n"
	"IMPP:xmpp:jane@jabber.example\n"
	"KIND:individual\n"
	"GENDER:F\n"
	"LABEL;TYPE=HOME:PO Box 12\\nSpringfield\n"
	"KEY;TYPE=PGP:https://keys.example/jane.asc\n"
	"PHOTO;ENCODING=b;TYPE=JPEG:/9j/4AAQSkZJRgABAQ==\n"
	"PHOTO;VALUE=uri:https://example.com/jane.jpg\n"
	"REV:2024-01-01T00:00:00Z\n"
	"END:VCARD\n";

/* What Graph would hand back for a create body: the body with server fields
 * added, absent fields in the forms Outlook uses (null, "", [], {}), and the
 * extension as GET shows it. Returns a new object. */
static cJSON *as_server(const cJSON *body, const char *id)
{
	static const char *const strings[] = {
		"middleName", "title",	       "generation",  "profession",
		"manager",    "personalNotes", "mobilePhone", NULL,
	};
	static const char *const lists[] = {"children", "homePhones", "categories", NULL};
	static const char *const addrs[] = {"homeAddress", "businessAddress", "otherAddress", NULL};
	cJSON *s = cJSON_Duplicate(body, 1), *ext;

	cJSON_AddStringToObject(s, "id", id);
	cJSON_AddStringToObject(s, "changeKey", "EQAAABYAAACd9nJ");
	cJSON_AddStringToObject(s, "parentFolderId", "AAMkAGI2AAEOAAA=");
	cJSON_AddStringToObject(s, "createdDateTime", "2014-10-19T23:08:24Z");
	cJSON_AddStringToObject(s, "lastModifiedDateTime", "2014-10-19T23:08:24Z");
	for (size_t i = 0; strings[i]; i++)
		if (!cJSON_GetObjectItemCaseSensitive(s, strings[i]))
			cJSON_AddItemToObject(s, strings[i],
					      i % 2 ? cJSON_CreateString("") : cJSON_CreateNull());
	for (size_t i = 0; lists[i]; i++)
		if (!cJSON_GetObjectItemCaseSensitive(s, lists[i]))
			cJSON_AddItemToObject(s, lists[i], cJSON_CreateArray());
	for (size_t i = 0; addrs[i]; i++)
		if (!cJSON_GetObjectItemCaseSensitive(s, addrs[i]))
			cJSON_AddItemToObject(s, addrs[i], cJSON_CreateObject());
	if ((ext = (cJSON *)ext_of(s))) {
		cJSON_DeleteItemFromObjectCaseSensitive(ext, "@odata.type");
		cJSON_AddStringToObject(ext, "@odata.type", "#microsoft.graph.openTypeExtension");
		cJSON_AddStringToObject(
			ext, "id",
			"Microsoft.OutlookServices.OpenTypeExtension.org.contactfs.vcard");
	}
	return s;
}

/* ---- 1. Graph JSON -> vCard -> Graph JSON keeps every mapped field ---------- */

/* Through a file of version v and back. */
static cJSON *json_round_trip(const cJSON *contact, enum vcard_version v)
{
	struct vcard *card = from_json(contact), *file = card ? reread(card, v) : NULL;
	cJSON *out = file ? to_json(file) : NULL;

	vcard_free(card);
	vcard_free(file);
	return out;
}

TEST(graph_docs_example_survives_json_to_vcard_to_json)
{
	char path[1024], *text = shared_file("v1-get-contact-response.json", path, sizeof(path));
	cJSON *contact = NULL, *back3 = NULL, *back4 = NULL;

	if (!text)
		SKIP("%s is not there (the shared test data)", path);
	contact = cJSON_Parse(text);
	free(text);
	CHECK(contact);
	back3 = json_round_trip(contact, VCARD_V30);
	back4 = json_round_trip(contact, VCARD_V40);
	CHECK(back3 && back4);
	CHECK_STR(first_difference(contact, back3), "");
	CHECK_STR(first_difference(contact, back4), "");
	CHECK_STR(jstr(back3, "birthday"), "1974-07-22T11:59:00Z");
	/* The UID is the Graph id, so nothing needs the extension. */
	CHECK(!cJSON_GetObjectItemCaseSensitive(back3, "extensions") || ext_of(back3));
out:
	cJSON_Delete(contact);
	cJSON_Delete(back3);
	cJSON_Delete(back4);
}

TEST(graph_rich_contact_survives_json_to_vcard_to_json)
{
	cJSON *contact = fixture_jq(rich_json), *back3 = NULL, *back4 = NULL;

	CHECK(contact);
	back3 = json_round_trip(contact, VCARD_V30);
	back4 = json_round_trip(contact, VCARD_V40);
	CHECK(back3 && back4);
	CHECK_STR(first_difference(contact, back3), "");
	CHECK_STR(first_difference(contact, back4), "");
	CHECK_STR(jstr(back3, "birthday"), "1604-04-01T11:59:00Z");
	CHECK_STR(jstr(back3, "department"), "Research; Lab 3");
out:
	cJSON_Delete(contact);
	cJSON_Delete(back3);
	cJSON_Delete(back4);
}

TEST(graph_rich_contact_renders_the_documented_properties)
{
	cJSON *contact = fixture_jq(rich_json);
	struct vcard *card = from_json(contact);
	char *text = card ? text_of(card, VCARD_V30) : NULL;

	CHECK(text);
	CHECK(has_line(text, "FN:Dr. Jane Q. Doe\\, PhD"));
	CHECK(has_line(text, "N:Doe;Jane;Quinn;Dr.;PhD"));
	CHECK(has_line(text, "ORG:Example\\, Inc.;Research\\; Lab 3"));
	CHECK(has_line(text, "X-KADDRESSBOOK-X-OFFICE:Building 7\\; Room 12"));
	CHECK(has_line(text, "X-MS-MANAGER:Alice Boss"));
	CHECK(has_line(text, "X-MS-ASSISTANT:Bob Helper"));
	CHECK(has_line(text, "X-MS-SPOUSE:Sam Doe"));
	CHECK(has_line(text, "X-MS-CHILD:Kim"));
	CHECK(has_line(text, "X-MS-CHILD:Lee"));
	CHECK(has_line(text, "X-CONTACTFS-INITIALS:J.Q.D."));
	CHECK(has_line(text, "X-EVOLUTION-FILE-AS:Doe\\, Jane"));
	CHECK(has_line(text, "X-PHONETIC-ORG:Ekusa"));
	CHECK(has_line(text, "EMAIL;X-CONTACTFS-NAME=Jane Doe:jane@work.example"));
	CHECK(has_line(text, "EMAIL:jane@home.example"));
	CHECK(has_line(text, "TEL;TYPE=WORK,VOICE:+1 555 0100"));
	CHECK(has_line(text, "TEL;TYPE=HOME,VOICE:+1 555 0201"));
	CHECK(has_line(text, "TEL;TYPE=CELL:+1 555 0300"));
	CHECK(has_line(text,
		       "ADR;TYPE=HOME:;;PO Box 12\\nApt 4\\n1 Main St;Springfield;IL;62701;USA"));
	CHECK(has_line(text, "ADR;TYPE=POSTAL:;;;Paris;;;France"));
	CHECK(has_line(text, "URL;TYPE=WORK:https://example.com/~jane?a=1,b=2;c"));
	CHECK(has_line(text, "BDAY:--04-01"));
	CHECK(has_line(text, "CATEGORIES:Friends,Work\\, Important"));
	CHECK(has_line(text, "X-MS-IMADDRESS:xmpp:jane@jabber.example"));
	CHECK(has_line(text, "UID:AAMkRICH="));
	CHECK(has_line(text, "REV:2021-02-03T04:05:06Z"));
	CHECK(has_line(text, "X-CONTACTFS-CREATED:2020-01-02T03:04:05Z"));
	CHECK(!strstr(text, "changeKey") && !strstr(text, "EQAAAB") && !strstr(text, "AAMkFOLDER"));
out:
	free(text);
	vcard_free(card);
	cJSON_Delete(contact);
}

/* ---- 2. vCard -> Graph JSON (+ extension) -> vCard keeps every property ----- */

/* card0 through Graph and back to a file of version v. */
static struct vcard *card_round_trip(const struct vcard *card0, enum vcard_version v)
{
	const struct vcard_prop *photo = vcard_photo(card0);
	cJSON *body = to_json(card0), *server = NULL;
	struct vcard *card = NULL, *file = NULL;
	struct vcard_error err;
	char *wire;

	if (!body)
		return NULL;
	/* Through the wire as text, as the server would see it. */
	wire = cJSON_PrintUnformatted(body);
	cJSON_Delete(body);
	body = wire ? cJSON_Parse(wire) : NULL;
	free(wire);
	if (body)
		server = as_server(body, "AAMkSERVER=");
	if (server && !vcard_from_graph(server, photo ? photo->data : NULL, photo ? photo->len : 0,
					photo ? photo->mediatype : NULL, &card, &err))
		file = reread(card, v);
	vcard_free(card);
	cJSON_Delete(body);
	cJSON_Delete(server);
	return file;
}

TEST(graph_rich_card_survives_vcard_to_json_to_vcard)
{
	struct vcard *card0 = fixture_card_of(rich_card), *back = NULL;

	CHECK(card0);
	back = card_round_trip(card0, VCARD_V30);
	CHECK(back);
	CHECK(same_props(card0, back));
	vcard_free(back);
	back = NULL;
	/* And again: a second trip changes nothing. */
	back = card_round_trip(card0, VCARD_V30);
	CHECK(back);
	{
		struct vcard *again = card_round_trip(back, VCARD_V30);

		CHECK(again);
		CHECK(same_props(back, again));
		vcard_free(again);
	}
out:
	vcard_free(back);
	vcard_free(card0);
}

TEST(graph_vcard4_card_survives_vcard_to_json_to_vcard)
{
	static const char text[] = "BEGIN:VCARD\r\nVERSION:4.0\r\n"
				   "UID:urn:uuid:4fbe8971-0bc3-424c-9c26-36c3e1eff6b1\r\n"
				   "FN:Jane Doe\r\nN:Doe;Jane;;;\r\n"
				   "EMAIL;TYPE=work;PREF=1:jane@work.example\r\n"
				   "TEL;VALUE=uri;TYPE=cell:tel:+1-555-0100\r\n"
				   "TEL;VALUE=uri;TYPE=\"voice,work\":tel:+1-555-0101\r\n"
				   "BDAY:--0401\r\nANNIVERSARY:20010609\r\n"
				   "GEO:geo:37.386013,-122.082932\r\n"
				   "PHOTO:data:image/png;base64,iVBORw0KGgo=\r\n"
				   "END:VCARD\r\n";
	struct vcard *card0 = fixture_card_of(text), *back = NULL;
	cJSON *json;

	CHECK(card0);
	json = to_json(card0);
	CHECK(json);
	CHECK_STR(jstr(json, "mobilePhone"), "+1-555-0100");
	CHECK_STR(jstr(json, "birthday"), "1604-04-01T11:59:00Z");
	cJSON_Delete(json);
	back = card_round_trip(card0, VCARD_V40);
	CHECK(back);
	CHECK(same_props(card0, back));
out:
	vcard_free(back);
	vcard_free(card0);
}

TEST(graph_extension_keeps_properties_named_like_the_frame)
{
	/* The parser keeps a second VERSION as a property (BEGIN and END that
	 * are not exactly the markers are refused: test_vcard_parse). */
	static const char text[] = "BEGIN:VCARD\nVERSION:3.0\nFN:F\nVERSION:4.0\n"
				   "g.VERSION:2.1\nEND:VCARD\n";
	struct vcard *card0 = fixture_card_of(text), *back = NULL;

	CHECK(card0);
	CHECK_INT(card0->nprops, 3);
	back = card_round_trip(card0, VCARD_V30);
	CHECK(back);
	vcard_remove(back, (size_t)(vcard_find(back, "UID") - back->props));
	vcard_remove(back, (size_t)(vcard_find(back, "N") - back->props));
	CHECK(same_props(card0, back));
out:
	vcard_free(back);
	vcard_free(card0);
}

TEST(graph_card_carrying_our_slot_parameter_keeps_it)
{
	static const char text[] = "BEGIN:VCARD\nVERSION:3.0\nFN:S\nUID:u1\n"
				   "EMAIL;X-CONTACTFS-SLOT=mine:a@x.example\n"
				   "X-FOO;X-CONTACTFS-SLOT=name:1\n"
				   "N;X-CONTACTFS-SLOT=emailAddresses:Doe;Jo;;;\nEND:VCARD\n";
	struct vcard *card0 = fixture_card_of(text), *back = NULL;

	CHECK(card0);
	back = card_round_trip(card0, VCARD_V30);
	CHECK(back);
	CHECK(same_props(card0, back));
out:
	vcard_free(back);
	vcard_free(card0);
}

TEST(graph_card_maps_fields_and_keeps_the_rest_in_the_extension)
{
	struct vcard *card = fixture_card_of(rich_card);
	cJSON *json = card ? to_json(card) : NULL;
	const cJSON *ext;
	const char *extra, *orig;

	CHECK(json);
	CHECK_INT(jsize(json, "emailAddresses"), 3);
	CHECK_INT(jsize(json, "businessPhones"), 2);
	CHECK_INT(jsize(json, "homePhones"), 2);
	CHECK_STR(jitem(json, "homePhones", 0), "+1 555 0188");
	CHECK_STR(jitem(json, "homePhones", 1), "+1 555 0177");
	CHECK_STR(jstr(json, "mobilePhone"), "+1 555 0123");
	CHECK_STR(jmember(json, "emailAddresses", 2, "address"), "jane@lab.example");
	CHECK_STR(jstr(json, "companyName"), "Example Corp");
	CHECK_STR(jstr(json, "department"), "Research; Lab 3");
	CHECK_STR(jstr(json, "middleName"), "Quinn Q.");
	CHECK_STR(jstr(json, "businessHomePage"), "https://work.example/jane");
	CHECK_STR(jstr(json, "birthday"), "1604-04-01T11:59:00Z");
	CHECK_STR(jstr(json, "personalNotes"), "Met at the conference.\nLikes tea, not coffee.");
	CHECK_STR(jstr(json, "manager"), "Alice Boss");
	CHECK_STR(jstr(cJSON_GetObjectItemCaseSensitive(json, "homeAddress"), "street"),
		  "PO Box 12\nApt 4\n1 Main St");
	CHECK_INT(jsize(json, "imAddresses"), 1);
	ext = ext_of(json);
	CHECK(ext);
	CHECK_STR(jstr(ext, "extensionName"), VCARD_EXTENSION_NAME);
	CHECK_STR(jstr(ext, "@odata.type"), "microsoft.graph.openTypeExtension");
	CHECK_STR(jstr(ext, "uid"), "4fbe8971-0bc3-424c-9c26-36c3e1eff6b1");
	extra = jstr(ext, "extra");
	orig = jstr(ext, "orig");
	CHECK(extra && orig);
	CHECK(has_line(extra, "EMAIL:jane@old.example"));
	CHECK(has_line(extra, "TEL;TYPE=WORK,VOICE,PREF:+1 555 0102"));
	CHECK(has_line(extra, "TEL;TYPE=WORK,FAX:+1 555 0199"));
	CHECK(has_line(extra, "URL:https://jane.example/blog"));
	CHECK(has_line(extra, "GEO:37.386013;-122.082932"));
	CHECK(has_line(extra, "item1.X-ABLABEL:Lab"));
	CHECK(has_line(extra, "NOTE:A second note"));
	CHECK(has_line(extra, "PRODID:-//Apple Inc.//iPhone OS 17.0//EN"));
	CHECK(has_line(extra, "PHOTO;VALUE=uri:https://example.com/jane.jpg"));
	CHECK(!strstr(extra, "REV") && !strstr(extra, "/9j/"));
	CHECK(has_line(orig, "EMAIL;TYPE=INTERNET,WORK;X-CONTACTFS-SLOT=emailAddresses:"
			     "jane@work.example"));
	CHECK(has_line(orig, "item1.EMAIL;TYPE=INTERNET;X-CONTACTFS-SLOT=emailAddresses:"
			     "jane@lab.example"));
	CHECK(has_line(orig, "item2.TEL;X-CONTACTFS-SLOT=homePhones:+1 555 0177"));
	CHECK(has_line(orig, "N;X-CONTACTFS-SLOT=name:Doe;Jane;Quinn,Q.;Dr.;PhD"));
	CHECK(has_line(orig, "ADR;TYPE=HOME;X-CONTACTFS-SLOT=homeAddress:"
			     "PO Box 12;Apt 4;1 Main St;Springfield;IL;62701;USA"));
	CHECK(has_line(orig, "BDAY;X-APPLE-OMIT-YEAR=1604;X-CONTACTFS-SLOT=birthday:1604-04-01"));
	CHECK(has_line(orig, "IMPP;X-CONTACTFS-SLOT=imAddresses:xmpp:jane@jabber.example"));
	/* What we would write ourselves is not kept twice. */
	CHECK(!strstr(orig, "TEL;TYPE=WORK,VOICE;") && !strstr(orig, "FN"));
out:
	cJSON_Delete(json);
	vcard_free(card);
}

TEST(graph_create_body_holds_no_server_fields)
{
	struct vcard *card = fixture_card_of(rich_card);
	cJSON *json = card ? to_json(card) : NULL;
	static const char *const never[] = {
		"id",
		"parentFolderId",
		"changeKey",
		"@odata.etag",
		"@odata.context",
		"createdDateTime",
		"lastModifiedDateTime",
		"primaryEmailAddress",
		"secondaryEmailAddress",
		"tertiaryEmailAddress",
		"uid",
		"name",
		"org",
		"photo",
		NULL,
	};
	const cJSON *e;

	CHECK(json);
	for (size_t i = 0; never[i]; i++)
		CHECK(!cJSON_GetObjectItemCaseSensitive(json, never[i]));
	for (e = json ? json->child : NULL; e; e = e->next)
		CHECK(!is_empty(e));
out:
	cJSON_Delete(json);
	vcard_free(card);
}

TEST(graph_card_without_extras_needs_no_extension)
{
	struct vcard *card = fixture_card_of("BEGIN:VCARD\nVERSION:3.0\nFN:Ann Lee\nN:Lee;Ann;;;\n"
					     "EMAIL:ann@example.com\nTEL;TYPE=CELL:+1 555 0100\n"
					     "REV:2020-01-01T00:00:00Z\nEND:VCARD\n");
	cJSON *json = card ? to_json(card) : NULL;

	CHECK(json);
	CHECK(!cJSON_GetObjectItemCaseSensitive(json, "extensions"));
	CHECK_STR(jstr(json, "displayName"), "Ann Lee");
	CHECK_STR(jstr(json, "givenName"), "Ann");
	CHECK_STR(jstr(json, "mobilePhone"), "+1 555 0100");
out:
	cJSON_Delete(json);
	vcard_free(card);
}

/* ---- 3. birthdays ------------------------------------------------------------ */

static char *bday_of_json(const char *birthday)
{
	char json[128];
	cJSON *c;
	struct vcard *card;
	char *out = NULL;

	snprintf(json, sizeof(json), "{\"displayName\":\"B\",\"birthday\":\"%s\"}", birthday);
	c = cJSON_Parse(json);
	card = c ? from_json(c) : NULL;
	if (card && value_of(card, "BDAY"))
		out = strdup(value_of(card, "BDAY"));
	vcard_free(card);
	cJSON_Delete(c);
	return out;
}

/* The Graph birthday a card with this BDAY line sends, or "" for none. */
static char *birthday_of_card(const char *version, const char *bday_line)
{
	char text[256];
	struct vcard *card;
	cJSON *json;
	char *out = NULL;

	snprintf(text, sizeof(text), "BEGIN:VCARD\nVERSION:%s\nFN:B\n%s\nEND:VCARD\n", version,
		 bday_line);
	card = fixture_card_of(text);
	json = card ? to_json(card) : NULL;
	if (json)
		out = strdup(jstr(json, "birthday") ? jstr(json, "birthday") : "");
	cJSON_Delete(json);
	vcard_free(card);
	return out;
}

TEST(graph_birthday_never_shifts_with_tz)
{
	static const char *const zones[] = {
		"Pacific/Kiritimati", "America/Adak", "UTC", "XST-14", "YST+12", NULL};
	const char *saved = getenv("TZ");
	char *keep = saved ? strdup(saved) : NULL;
	int ok = 1;

	for (size_t i = 0; zones[i] && ok; i++) {
		char *noon, *midnight, *plain, *sent;

		setenv("TZ", zones[i], 1);
		tzset();
		noon = bday_of_json("1974-07-22T11:59:00Z");
		midnight = bday_of_json("1974-07-22T00:00:00Z");
		plain = bday_of_json("1974-07-22");
		sent = birthday_of_card("3.0", "BDAY:1974-07-22");
		ok = noon && midnight && plain && sent && !strcmp(noon, "1974-07-22") &&
		     !strcmp(midnight, "1974-07-22") && !strcmp(plain, "1974-07-22") &&
		     !strcmp(sent, "1974-07-22T11:59:00Z");
		if (!ok)
			fprintf(stderr, "TZ=%s: %s %s %s %s\n", zones[i], noon, midnight, plain,
				sent);
		free(noon);
		free(midnight);
		free(plain);
		free(sent);
	}
	if (keep)
		setenv("TZ", keep, 1);
	else
		unsetenv("TZ");
	tzset();
	free(keep);
	CHECK(ok);
out:;
}

TEST(graph_birthday_1604_means_no_year)
{
	char *b = bday_of_json("1604-07-22T11:59:00Z");

	CHECK_STR(b, "--07-22");
	free(b);
	b = bday_of_json("1604-02-29T00:00:00Z");
	CHECK_STR(b, "--02-29");
	free(b);
	b = birthday_of_card("3.0", "BDAY:--07-22");
	CHECK_STR(b, "1604-07-22T11:59:00Z");
	free(b);
	b = birthday_of_card("4.0", "BDAY:--0722");
	CHECK_STR(b, "1604-07-22T11:59:00Z");
	free(b);
	b = birthday_of_card("3.0", "BDAY;X-APPLE-OMIT-YEAR=1604:1604-07-22");
	CHECK_STR(b, "1604-07-22T11:59:00Z");
	free(b);
	b = birthday_of_card("3.0", "BDAY;X-APPLE-OMIT-YEAR=1900:1900-07-22");
	CHECK_STR(b, "1604-07-22T11:59:00Z");
out:
	free(b);
}

TEST(graph_birthday_reads_every_date_form)
{
	static const struct {
		const char *version, *line, *want;
	} cases[] = {
		{"3.0", "BDAY:1974-07-22", "1974-07-22T11:59:00Z"},
		{"4.0", "BDAY:19740722", "1974-07-22T11:59:00Z"},
		{"3.0", "BDAY:1974-07-22T00:00:00Z", "1974-07-22T11:59:00Z"},
		{"4.0", "BDAY:19740722T235959-0800", "1974-07-22T11:59:00Z"},
		{"3.0", "BDAY;VALUE=date:2000-02-29", "2000-02-29T11:59:00Z"},
		{"4.0", "BDAY:--0229", "1604-02-29T11:59:00Z"},
		{"3.0", "BDAY:1975-02-29", ""},
		{"3.0", "BDAY:1974-13-01", ""},
		{"4.0", "BDAY;VALUE=text:circa 1800", ""},
		{"4.0", "BDAY:---22", ""},
		{"3.0", "BDAY:", ""},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *got = birthday_of_card(cases[i].version, cases[i].line);

		if (!got || strcmp(got, cases[i].want))
			fprintf(stderr, "%s -> %s\n", cases[i].line, got ? got : "(error)");
		CHECK_STR(got, cases[i].want);
		free(got);
	}
out:;
}

TEST(graph_birthday_that_is_no_date_stays_in_the_extension)
{
	struct vcard *card = fixture_card_of("BEGIN:VCARD\nVERSION:4.0\nFN:B\n"
					     "BDAY;VALUE=text:circa 1800\nEND:VCARD\n");
	cJSON *json = card ? to_json(card) : NULL;

	CHECK(json);
	CHECK(!cJSON_GetObjectItemCaseSensitive(json, "birthday"));
	CHECK(has_line(jstr(ext_of(json), "extra"), "BDAY;VALUE=text:circa 1800"));
out:
	cJSON_Delete(json);
	vcard_free(card);
}

TEST(graph_leap_day_birthday_round_trips)
{
	char *b = bday_of_json("2000-02-29T00:00:00Z"), *back = NULL;

	CHECK_STR(b, "2000-02-29");
	back = birthday_of_card("3.0", "BDAY:2000-02-29");
	CHECK_STR(back, "2000-02-29T11:59:00Z");
out:
	free(b);
	free(back);
}

/* ---- 4. slot limits ------------------------------------------------------------ */

TEST(graph_fourth_email_goes_to_the_extension)
{
	struct vcard *card =
		fixture_card_of("BEGIN:VCARD\nVERSION:3.0\nFN:E\nN:;E;;;\nUID:AAMkE=\n"
				"EMAIL:a@x.example\n"
				"EMAIL:b@x.example\nEMAIL:c@x.example\nEMAIL:d@x.example\n"
				"END:VCARD\n");
	cJSON *json = card ? to_json(card) : NULL, *server = NULL;
	struct vcard *back = NULL;

	CHECK(json);
	CHECK_INT(jsize(json, "emailAddresses"), 3);
	CHECK_STR(jmember(json, "emailAddresses", 2, "address"), "c@x.example");
	CHECK(has_line(jstr(ext_of(json), "extra"), "EMAIL:d@x.example"));
	CHECK(!jstr(ext_of(json), "orig"));
	server = as_server(json, "AAMkE=");
	back = from_json(server);
	CHECK(back);
	CHECK_INT(count_props(back, "EMAIL"), 4);
	CHECK(same_props(card, back));
out:
	vcard_free(back);
	cJSON_Delete(server);
	cJSON_Delete(json);
	vcard_free(card);
}

TEST(graph_phones_fill_their_slots_in_order)
{
	struct vcard *card = fixture_card_of("BEGIN:VCARD\nVERSION:3.0\nFN:P\n"
					     "TEL:+1 0001\n"		   /* untyped: business */
					     "TEL;TYPE=WORK:+1 0002\n"	   /* business */
					     "TEL;TYPE=WORK:+1 0003\n"	   /* business full */
					     "TEL;TYPE=VOICE:+1 0004\n"	   /* untyped: home */
					     "TEL;TYPE=HOME:+1 0005\n"	   /* home */
					     "TEL;TYPE=PREF:+1 0006\n"	   /* all full */
					     "TEL;TYPE=CELL:+1 0007\n"	   /* mobile */
					     "TEL;TYPE=cell:+1 0008\n"	   /* mobile full */
					     "TEL;TYPE=HOME,FAX:+1 0009\n" /* not a Graph phone */
					     "TEL;TYPE=PAGER:+1 0010\n"
					     "TEL;TYPE=WORK,MSG:+1 0011\n"
					     "END:VCARD\n");
	cJSON *json = card ? to_json(card) : NULL;
	const char *extra;
	char *s;

	CHECK(json);
	s = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(json, "businessPhones"));
	CHECK_STR(s, "[\"+1 0001\",\"+1 0002\"]");
	free(s);
	s = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(json, "homePhones"));
	CHECK_STR(s, "[\"+1 0004\",\"+1 0005\"]");
	free(s);
	CHECK_STR(jstr(json, "mobilePhone"), "+1 0007");
	extra = jstr(ext_of(json), "extra");
	CHECK(extra);
	for (int i = 3; i <= 11; i++) {
		char num[16];

		snprintf(num, sizeof(num), "+1 %04d", i);
		if (i == 4 || i == 5 || i == 7)
			continue;
		CHECK(strstr(extra, num));
	}
out:
	cJSON_Delete(json);
	vcard_free(card);
}

TEST(graph_tel_uri_sends_the_bare_number)
{
	struct vcard *card =
		fixture_card_of("BEGIN:VCARD\nVERSION:4.0\nFN:T\n"
				"TEL;VALUE=uri;TYPE=work:tel:+1-555-0100\nEND:VCARD\n");
	cJSON *json = card ? to_json(card) : NULL;

	CHECK(json);
	CHECK_STR(jitem(json, "businessPhones", 0), "+1-555-0100");
	CHECK(has_line(jstr(ext_of(json), "orig"),
		       "TEL;VALUE=uri;TYPE=work;X-CONTACTFS-SLOT=businessPhones:tel:+1-555-0100"));
out:
	cJSON_Delete(json);
	vcard_free(card);
}

TEST(graph_urls_ims_and_addresses_respect_their_slots)
{
	struct vcard *card =
		fixture_card_of("BEGIN:VCARD\nVERSION:3.0\nFN:U\n"
				"URL:https://a.example\nURL;TYPE=WORK:https://b.example\n"
				"X-MS-IMADDRESS:im1\nIMPP:xmpp:im2@x\nX-MS-IMADDRESS:im3\n"
				"X-MS-IMADDRESS:im4\n"
				"ADR:;;1 Other St;;;;\nADR;TYPE=WORK:;;1 Work St;;;;\n"
				"ADR;TYPE=WORK:;;2 Work St;;;;\nADR;TYPE=INTL:;;;;;;\n"
				"END:VCARD\n");
	cJSON *json = card ? to_json(card) : NULL;
	const char *extra;

	CHECK(json);
	CHECK_STR(jstr(json, "businessHomePage"), "https://a.example");
	CHECK_INT(jsize(json, "imAddresses"), 3);
	CHECK_STR(jstr(cJSON_GetObjectItemCaseSensitive(json, "otherAddress"), "street"),
		  "1 Other St");
	CHECK_STR(jstr(cJSON_GetObjectItemCaseSensitive(json, "businessAddress"), "street"),
		  "1 Work St");
	CHECK(!cJSON_GetObjectItemCaseSensitive(json, "homeAddress"));
	extra = jstr(ext_of(json), "extra");
	CHECK(extra);
	CHECK(has_line(extra, "URL;TYPE=WORK:https://b.example"));
	CHECK(has_line(extra, "X-MS-IMADDRESS:im4"));
	CHECK(has_line(extra, "ADR;TYPE=WORK:;;2 Work St;;;;"));
	CHECK(has_line(extra, "ADR;TYPE=INTL:;;;;;;"));
out:
	cJSON_Delete(json);
	vcard_free(card);
}

/* ---- rendering rules ------------------------------------------------------------ */

TEST(graph_missing_display_name_is_derived)
{
	static const struct {
		const char *json, *fn;
	} cases[] = {
		{"{'givenName':'Ann','surname':'Lee','displayName':''}", "Ann Lee"},
		{"{'surname':'Lee','displayName':null}", "Lee"},
		{"{'emailAddresses':[{'address':'a@x.example'}],'companyName':'Co'}",
		 "a@x.example"},
		{"{'companyName':'Co'}", "Co"},
		{"{}", "Unnamed"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cJSON *c = fixture_jq(cases[i].json);
		struct vcard *card = c ? from_json(c) : NULL;

		CHECK(card);
		CHECK_STR(value_of(card, "FN"), cases[i].fn);
		CHECK_INT(count_props(card, "N"), 1);
		vcard_free(card);
		cJSON_Delete(c);
	}
out:;
}

TEST(graph_absent_values_are_all_the_same)
{
	cJSON *c = fixture_jq("{'id':'AAMkX=','displayName':'A','givenName':'','surname':null,"
			      "'emailAddresses':[],'homeAddress':{},'businessAddress':{'street':'',"
			      "'city':null},'businessPhones':[''],'categories':[],'birthday':null,"
			      "'personalNotes':'','mobilePhone':null,'children':[null]}");
	struct vcard *card = c ? from_json(c) : NULL;
	cJSON *back = card ? to_json(card) : NULL;
	const cJSON *e;
	int n = 0;

	CHECK(back);
	CHECK_INT(card->nprops, 3); /* FN, N, UID */
	CHECK_STR(value_of(card, "N"), "");
	for (e = back ? back->child : NULL; e; e = e->next)
		n++;
	CHECK_INT(n, 2); /* displayName, and the extension holding the uid */
	CHECK_STR(jstr(ext_of(back), "uid"), "AAMkX=");
out:
	cJSON_Delete(back);
	vcard_free(card);
	cJSON_Delete(c);
}

TEST(graph_uid_is_the_extension_uid_else_the_id)
{
	cJSON *c = fixture_jq("{'id':'AAMkID=','displayName':'U','extensions':[{'extensionName':"
			      "'org.contactfs.vcard','uid':'my-own-uid'}]}");
	cJSON *d = fixture_jq("{'id':'AAMkID=','displayName':'U'}");
	struct vcard *a = c ? from_json(c) : NULL, *b = d ? from_json(d) : NULL;

	CHECK(a && b);
	CHECK_STR(value_of(a, "UID"), "my-own-uid");
	CHECK_STR(value_of(b, "UID"), "AAMkID=");
out:
	vcard_free(a);
	vcard_free(b);
	cJSON_Delete(c);
	cJSON_Delete(d);
}

TEST(graph_extension_is_found_by_name_or_id)
{
	/* As GET shows it: by name (any case), or by either id form Graph uses. */
	static const char *const keys[] = {"extensionName", "id", "id"};
	static const char *const names[] = {
		"Org.ContactFS.VCard",
		"Microsoft.OutlookServices.OpenTypeExtension.org.contactfs.vcard",
		"microsoft.graph.openTypeExtension.org.contactfs.vcard",
	};
	static const char *const ends[] = {"\\r\\n", "", "\\n"};

	for (size_t i = 0; i < 3; i++) {
		char json[512];
		cJSON *c;
		struct vcard *card;

		snprintf(json, sizeof(json),
			 "{'displayName':'X','extensions':[{'extensionName':'Com.Other',"
			 "'extra':'X-B:2'},{'%s':'%s','extra':'X-A:1%s'}]}",
			 keys[i], names[i], ends[i]);
		c = fixture_jq(json);
		card = c ? from_json(c) : NULL;
		CHECK(card);
		CHECK_STR(value_of(card, "X-A"), "1");
		CHECK(!vcard_find(card, "X-B"));
		vcard_free(card);
		cJSON_Delete(c);
	}
out:;
}

TEST(graph_broken_extension_is_a_warning_not_a_failure)
{
	cJSON *c = fixture_jq(
		"{'displayName':'W','extensions':[{'extensionName':'org.contactfs.vcard',"
		"'extra':'END:VCARD\\r\\nBEGIN:VCARD\\r\\nFN:evil\\r\\n'}]}");
	struct vcard *card = c ? from_json(c) : NULL;

	CHECK(card);
	CHECK(card->warning);
	CHECK_STR(value_of(card, "FN"), "W");
	CHECK_INT(count_props(card, "FN"), 1);
out:
	vcard_free(card);
	cJSON_Delete(c);
}

TEST(graph_email_name_travels_in_a_parameter)
{
	cJSON *c = fixture_jq(
		"{'displayName':'E','emailAddresses':[{'name':'Jane, Doe','address':'j@x.example'},"
		"{'name':'k@x.example','address':'k@x.example'},{'name':'','address':'l@x.example'}"
		"]}");
	struct vcard *card = c ? from_json(c) : NULL, *file = card ? reread(card, VCARD_V40) : NULL;
	cJSON *back = file ? to_json(file) : NULL;
	char *text = card ? text_of(card, VCARD_V30) : NULL;
	const cJSON *emails;

	CHECK(back && text);
	CHECK(has_line(text, "EMAIL;X-CONTACTFS-NAME=\"Jane, Doe\":j@x.example"));
	CHECK(has_line(text, "EMAIL:k@x.example"));
	CHECK(has_line(text, "EMAIL:l@x.example"));
	emails = cJSON_GetObjectItemCaseSensitive(back, "emailAddresses");
	CHECK_STR(jstr(cJSON_GetArrayItem(emails, 0), "name"), "Jane, Doe");
	CHECK(!jstr(cJSON_GetArrayItem(emails, 1), "name"));
	CHECK(!jstr(cJSON_GetArrayItem(emails, 2), "name"));
	CHECK(!cJSON_GetObjectItemCaseSensitive(back, "extensions"));
out:
	free(text);
	cJSON_Delete(back);
	vcard_free(file);
	vcard_free(card);
	cJSON_Delete(c);
}

TEST(graph_read_only_email_fields_stand_in_only_without_email_addresses)
{
	cJSON *a = fixture_jq(
		"{'displayName':'P','primaryEmailAddress':{'address':'p@x.example'},"
		"'secondaryEmailAddress':null,'tertiaryEmailAddress':{'name':'T','address':"
		"'t@x.example'}}");
	cJSON *b = fixture_jq("{'displayName':'P','emailAddresses':[{'address':'e@x.example'}],"
			      "'primaryEmailAddress':{'address':'p@x.example'}}");
	struct vcard *ca = a ? from_json(a) : NULL, *cb = b ? from_json(b) : NULL;
	cJSON *ja = ca ? to_json(ca) : NULL;

	CHECK(ca && cb && ja);
	CHECK_INT(count_props(ca, "EMAIL"), 2);
	CHECK_INT(count_props(cb, "EMAIL"), 1);
	CHECK_STR(value_of(cb, "EMAIL"), "e@x.example");
	CHECK(!cJSON_GetObjectItemCaseSensitive(ja, "primaryEmailAddress"));
	CHECK_INT(jsize(ja, "emailAddresses"), 2);
out:
	cJSON_Delete(ja);
	vcard_free(ca);
	vcard_free(cb);
	cJSON_Delete(a);
	cJSON_Delete(b);
}

TEST(graph_unchanged_contact_renders_its_original_properties)
{
	struct vcard *card =
		fixture_card_of("BEGIN:VCARD\nVERSION:3.0\nFN:O\n"
				"item1.EMAIL;TYPE=home:a@x.example\nitem1.X-ABLabel:Home\n"
				"ADR;TYPE=HOME:PO Box 1;;1 Main St;Town;;;\nEND:VCARD\n");
	cJSON *json = card ? to_json(card) : NULL, *server = NULL;
	struct vcard *back = NULL;
	char *text = NULL;

	CHECK(json);
	server = as_server(json, "AAMkO=");
	back = from_json(server);
	CHECK(back);
	text = text_of(back, VCARD_V30);
	CHECK(has_line(text, "item1.EMAIL;TYPE=home:a@x.example"));
	CHECK(has_line(text, "ADR;TYPE=HOME:PO Box 1;;1 Main St;Town;;;"));
	CHECK(!strstr(text, "X-CONTACTFS-SLOT"));
out:
	free(text);
	vcard_free(back);
	cJSON_Delete(server);
	cJSON_Delete(json);
	vcard_free(card);
}

TEST(graph_field_changed_in_outlook_renders_fresh)
{
	struct vcard *card =
		fixture_card_of("BEGIN:VCARD\nVERSION:3.0\nFN:O\n"
				"EMAIL;TYPE=home:a@x.example\nEMAIL;TYPE=work:b@x.example\n"
				"ADR;TYPE=HOME:PO Box 1;;1 Main St;Town;;;\nEND:VCARD\n");
	cJSON *json = card ? to_json(card) : NULL, *server = NULL, *emails, *home;
	struct vcard *back = NULL;
	char *text = NULL;

	CHECK(json);
	server = as_server(json, "AAMkO=");
	emails = cJSON_GetObjectItemCaseSensitive(server, "emailAddresses");
	cJSON_ReplaceItemInObjectCaseSensitive(cJSON_GetArrayItem(emails, 0), "address",
					       cJSON_CreateString("new@x.example"));
	home = cJSON_GetObjectItemCaseSensitive(server, "homeAddress");
	cJSON_ReplaceItemInObjectCaseSensitive(home, "city", cJSON_CreateString("City"));
	back = from_json(server);
	CHECK(back);
	text = text_of(back, VCARD_V30);
	CHECK(has_line(text, "EMAIL:new@x.example"));
	CHECK(has_line(text, "EMAIL;TYPE=work:b@x.example"));
	CHECK(!strstr(text, "a@x.example"));
	CHECK(has_line(text, "ADR;TYPE=HOME:;;PO Box 1\\n1 Main St;City;;;"));
out:
	free(text);
	vcard_free(back);
	cJSON_Delete(server);
	cJSON_Delete(json);
	vcard_free(card);
}

TEST(graph_photo_is_bytes_in_the_card_and_never_in_json)
{
	static const unsigned char jpeg[] = {0xff, 0xd8, 0xff, 0xe0, 0x00,
					     0x10, 'J',	 'F',  'I',  'F'};
	cJSON *c = fixture_jq("{'displayName':'Ph'}");
	struct vcard *card = NULL;
	struct vcard_error err;
	const struct vcard_prop *p;
	cJSON *json;
	char *s;

	CHECK(c);
	CHECK_INT(vcard_from_graph(c, jpeg, sizeof(jpeg), "image/jpeg", &card, &err), 0);
	p = vcard_photo(card);
	CHECK(p && p->kind == VCARD_BINARY && p->len == sizeof(jpeg));
	CHECK(!memcmp(p->data, jpeg, sizeof(jpeg)));
	CHECK_STR(p->mediatype, "image/jpeg");
	json = to_json(card);
	CHECK(json);
	s = cJSON_PrintUnformatted(json);
	CHECK(s && !strstr(s, "PHOTO") && !strstr(s, "/9j/") && !strstr(s, "extensions"));
	free(s);
	cJSON_Delete(json);
	vcard_free(card);
	cJSON_Delete(c);
	CHECK(!vcard_photo(NULL));
out:;
}

TEST(graph_times_are_written_in_utc)
{
	cJSON *c =
		fixture_jq("{'displayName':'T','lastModifiedDateTime':'2014-10-20T01:08:24+02:00',"
			   "'createdDateTime':'2014-12-31T23:30:00-01:00'}");
	struct vcard *card = c ? from_json(c) : NULL;

	CHECK(card);
	CHECK_STR(value_of(card, "REV"), "2014-10-19T23:08:24Z");
	CHECK_STR(value_of(card, "X-CONTACTFS-CREATED"), "2015-01-01T00:30:00Z");
out:
	vcard_free(card);
	cJSON_Delete(c);
}

TEST(graph_bookkeeping_properties_are_ignored_when_read)
{
	struct vcard *card = fixture_card_of(
		"BEGIN:VCARD\nVERSION:3.0\nFN:K\n"
		"REV:2020-01-01T00:00:00Z\nX-CONTACTFS-CREATED:2019-01-01T00:00:00Z\n"
		"X-CONTACTFS-VERSION:EQAAABYAAAA3c6+9Z/lhl.0\n"
		"PRODID:-//contactfs//contactfs 0.1//EN\nEND:VCARD\n");
	cJSON *json = card ? to_json(card) : NULL;

	CHECK(json);
	CHECK(!cJSON_GetObjectItemCaseSensitive(json, "extensions"));
out:
	cJSON_Delete(json);
	vcard_free(card);
}

/* ---- 5. the minimal PATCH ------------------------------------------------------- */

struct diffed {
	cJSON *patch, *ext;
};

static int diff(const cJSON *server, const struct vcard *card, struct diffed *d)
{
	struct vcard_error err;
	int r = vcard_graph_diff(server, card, &d->patch, &d->ext, &err);

	if (r)
		fprintf(stderr, "vcard_graph_diff: %d: %s\n", r, err.msg);
	return r;
}

static void diffed_release(struct diffed *d)
{
	cJSON_Delete(d->patch);
	cJSON_Delete(d->ext);
}

/* The patch's keys, comma-separated, in its order. */
static char *keys_of(const cJSON *patch)
{
	struct buf b;
	const cJSON *e;

	buf_init(&b, 0);
	for (e = patch ? patch->child : NULL; e; e = e->next)
		if (buf_printf(&b, "%s%s", b.len ? "," : "", e->string))
			break;
	return buf_detach(&b, NULL);
}

/* A server contact (the rich card, created and read back) and the card the
 * file system shows for it. */
static int rich_server(cJSON **server, struct vcard **file)
{
	struct vcard *card0 = fixture_card_of(rich_card), *card = NULL;
	cJSON *body = card0 ? to_json(card0) : NULL;

	*server = body ? as_server(body, "AAMkSERVER=") : NULL;
	card = *server ? from_json(*server) : NULL;
	*file = card ? reread(card, VCARD_V30) : NULL;
	vcard_free(card0);
	vcard_free(card);
	cJSON_Delete(body);
	return *file ? 0 : -1;
}

TEST(graph_diff_of_unchanged_card_is_display_name_only)
{
	struct diffed d = {NULL, NULL};
	struct vcard *file = NULL;
	cJSON *server = NULL;
	char *keys = NULL;

	CHECK(!rich_server(&server, &file));
	CHECK(!diff(server, file, &d));
	keys = keys_of(d.patch);
	CHECK_STR(keys, "displayName");
	CHECK_STR(jstr(d.patch, "displayName"), "Jane Q. Doe");
	CHECK(!d.ext);
out:
	free(keys);
	diffed_release(&d);
	vcard_free(file);
	cJSON_Delete(server);
}

/* A PATCH names every field of an address it changes: nothing documented
 * says that {} or a partial object clears what it leaves out. */
TEST(graph_diff_names_every_address_field_it_changes_or_clears)
{
	struct diffed d = {NULL, NULL};
	struct vcard *card =
		fixture_card_of("BEGIN:VCARD\nVERSION:3.0\nFN:Ann Lee\nN:Lee;Ann;;;\n"
				"ADR;TYPE=WORK:;;1 Main St;;;;\nUID:AAMkSERVER=\nEND:VCARD\n");
	cJSON *server = cJSON_Parse(
		"{\"id\":\"AAMkSERVER=\",\"displayName\":\"Ann Lee\",\"givenName\":\"Ann\","
		"\"surname\":\"Lee\",\"homeAddress\":{\"street\":\"2 Elm St\",\"city\":"
		"\"Oslo\"},\"businessAddress\":{\"street\":\"1 Main St\",\"city\":\"Bergen\","
		"\"postalCode\":\"5003\"}}");
	const cJSON *home, *work;
	static const char *const fields[] = {"street", "city", "state", "postalCode",
					     "countryOrRegion"};

	CHECK(card && server);
	CHECK(!diff(server, card, &d));
	home = cJSON_GetObjectItemCaseSensitive(d.patch, "homeAddress");
	work = cJSON_GetObjectItemCaseSensitive(d.patch, "businessAddress");
	CHECK(cJSON_IsObject(home) && cJSON_IsObject(work));
	for (size_t i = 0; i < 5; i++) {
		/* Cleared: every field null. */
		CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(home, fields[i])));
		CHECK(cJSON_GetObjectItemCaseSensitive(work, fields[i]));
	}
	/* Changed: the street kept, the fields the card no longer has null. */
	CHECK_STR(jstr(work, "street"), "1 Main St");
	CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(work, "city")));
	CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(work, "postalCode")));
	CHECK(!cJSON_GetObjectItemCaseSensitive(d.patch, "otherAddress"));
out:
	diffed_release(&d);
	vcard_free(card);
	cJSON_Delete(server);
}

TEST(graph_diff_keeps_the_servers_email_name_when_the_card_names_no_one)
{
	struct diffed d = {NULL, NULL};
	struct vcard *card =
		fixture_card_of("BEGIN:VCARD\nVERSION:3.0\nFN:Alice Archer\nN:Archer;Alice;;;\n"
				"EMAIL;TYPE=internet:ALICE@example.org\nEMAIL:new@example.org\n"
				"UID:AAMkSERVER=\nEND:VCARD\n");
	cJSON *server = cJSON_Parse(
		"{\"id\":\"AAMkSERVER=\",\"displayName\":\"Alice Archer\",\"givenName\":"
		"\"Alice\",\"surname\":\"Archer\",\"emailAddresses\":[{\"address\":"
		"\"alice@example.org\",\"name\":\"Alice Archer\"}]}");
	const cJSON *emails;

	CHECK(card && server);
	CHECK(!diff(server, card, &d));
	/* The second address is new; the first keeps its name. */
	emails = cJSON_GetObjectItemCaseSensitive(d.patch, "emailAddresses");
	CHECK_INT(cJSON_GetArraySize(emails), 2);
	CHECK_STR(jstr(cJSON_GetArrayItem(emails, 0), "name"), "Alice Archer");
	CHECK(!cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(emails, 1), "name"));
out:
	diffed_release(&d);
	vcard_free(card);
	cJSON_Delete(server);
}

TEST(graph_diff_of_unchanged_docs_example_is_display_name_only)
{
	char path[1024], *text = shared_file("v1-get-contact-response.json", path, sizeof(path));
	struct diffed d = {NULL, NULL};
	struct vcard *card = NULL, *file = NULL;
	cJSON *server = NULL;
	char *keys = NULL;

	if (!text)
		SKIP("%s is not there (the shared test data)", path);
	server = cJSON_Parse(text);
	free(text);
	card = server ? from_json(server) : NULL;
	file = card ? reread(card, VCARD_V40) : NULL;
	CHECK(file);
	CHECK(!diff(server, file, &d));
	keys = keys_of(d.patch);
	CHECK_STR(keys, "displayName");
	CHECK(!d.ext);
out:
	free(keys);
	diffed_release(&d);
	vcard_free(card);
	vcard_free(file);
	cJSON_Delete(server);
}

TEST(graph_diff_sends_a_changed_email_collection_whole)
{
	struct diffed d = {NULL, NULL};
	struct vcard *file = NULL;
	cJSON *server = NULL;
	char *keys = NULL;

	CHECK(!rich_server(&server, &file));
	for (size_t i = 0; i < file->nprops; i++)
		if (!strcmp(file->props[i].name, "EMAIL") &&
		    !strcmp(value_of_prop(&file->props[i]), "jane@home.example"))
			CHECK(!vcard_set_text(file, &file->props[i], "jane@new.example"));
	CHECK(!diff(server, file, &d));
	keys = keys_of(d.patch);
	CHECK_STR(keys, "displayName,emailAddresses");
	CHECK_INT(jsize(d.patch, "emailAddresses"), 3);
	CHECK_STR(jmember(d.patch, "emailAddresses", 1, "address"), "jane@new.example");
	/* The changed EMAIL had TYPE=HOME, which orig now records for it. */
	CHECK(d.ext);
	CHECK(strstr(jstr(d.ext, "orig"), "jane@new.example"));
out:
	free(keys);
	diffed_release(&d);
	vcard_free(file);
	cJSON_Delete(server);
}

TEST(graph_diff_clears_what_the_card_no_longer_has)
{
	struct diffed d = {NULL, NULL};
	struct vcard *file = NULL;
	cJSON *server = NULL;
	char *keys = NULL;

	CHECK(!rich_server(&server, &file));
	for (size_t i = file->nprops; i-- > 0;) {
		const char *n = file->props[i].name;

		if (!strcmp(n, "NOTE") && !strcmp(value_of_prop(&file->props[i]), "A second note"))
			continue;
		if (!strcmp(n, "NOTE") || !strcmp(n, "ADR") || !strcmp(n, "CATEGORIES") ||
		    !strcmp(n, "BDAY") ||
		    (!strcmp(n, "TEL") && vcard_has_type(&file->props[i], "CELL")))
			vcard_remove(file, i);
	}
	CHECK(!diff(server, file, &d));
	keys = keys_of(d.patch);
	/* The second NOTE, once kept in the extension, now maps. */
	CHECK_STR(keys, "displayName,mobilePhone,homeAddress,businessAddress,birthday,"
			"personalNotes,categories");
	CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(d.patch, "mobilePhone")));
	/* A cleared address names each field null (docs/graph.md). */
	CHECK(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(d.patch, "homeAddress")));
	CHECK(cJSON_IsNull(
		cJSON_GetObjectItemCaseSensitive(
		cJSON_GetObjectItemCaseSensitive(d.patch, "homeAddress"), "street")));
	CHECK(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(d.patch, "categories")));
	CHECK_INT(jsize(d.patch, "categories"), 0);
	CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(d.patch, "birthday")));
	CHECK_STR(jstr(d.patch, "personalNotes"), "A second note");
out:
	free(keys);
	diffed_release(&d);
	vcard_free(file);
	cJSON_Delete(server);
}

TEST(graph_diff_clears_a_removed_note_with_null)
{
	cJSON *server = fixture_jq("{'id':'AAMkN=','displayName':'N','personalNotes':'old note'}");
	struct vcard *card =
		fixture_card_of("BEGIN:VCARD\nVERSION:3.0\nFN:N\nUID:AAMkN=\nEND:VCARD\n");
	struct diffed d = {NULL, NULL};
	char *keys = NULL;

	CHECK(server && card);
	CHECK(!diff(server, card, &d));
	keys = keys_of(d.patch);
	CHECK_STR(keys, "displayName,personalNotes");
	CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(d.patch, "personalNotes")));
	CHECK(!d.ext);
out:
	free(keys);
	diffed_release(&d);
	vcard_free(card);
	cJSON_Delete(server);
}

TEST(graph_diff_ignores_crlf_that_a_vcard_cannot_carry)
{
	cJSON *server = fixture_jq(
		"{'id':'AAMkC=','displayName':'C','personalNotes':'one\\r\\ntwo\\rthree',"
		"'homeAddress':{'street':'1 Main St\\r\\nFloor 2','city':'Town'}}");
	struct vcard *card = server ? from_json(server) : NULL;
	struct vcard *file = card ? reread(card, VCARD_V30) : NULL;
	struct diffed d = {NULL, NULL};
	char *keys = NULL;

	CHECK(file);
	CHECK_STR(value_of(file, "NOTE"), "one\ntwo\nthree");
	CHECK(!diff(server, file, &d));
	keys = keys_of(d.patch);
	CHECK_STR(keys, "displayName");
	CHECK(!d.ext);
out:
	free(keys);
	diffed_release(&d);
	vcard_free(file);
	vcard_free(card);
	cJSON_Delete(server);
}

TEST(graph_diff_compares_birthdays_by_date)
{
	cJSON *server =
		fixture_jq("{'id':'AAMkB=','displayName':'B','birthday':'1974-07-22T00:00:00Z'}");
	struct vcard *same = fixture_card_of("BEGIN:VCARD\nVERSION:3.0\nFN:B\nUID:AAMkB=\n"
					     "BDAY:1974-07-22\nEND:VCARD\n");
	struct vcard *other = fixture_card_of("BEGIN:VCARD\nVERSION:3.0\nFN:B\nUID:AAMkB=\n"
					      "BDAY:1974-07-23\nEND:VCARD\n");
	struct diffed d = {NULL, NULL}, e = {NULL, NULL};
	char *keys;

	CHECK(server && same && other);
	CHECK(!diff(server, same, &d));
	keys = keys_of(d.patch);
	CHECK_STR(keys, "displayName");
	free(keys);
	CHECK(!diff(server, other, &e));
	CHECK_STR(jstr(e.patch, "birthday"), "1974-07-23T11:59:00Z");
out:
	diffed_release(&d);
	diffed_release(&e);
	vcard_free(same);
	vcard_free(other);
	cJSON_Delete(server);
}

TEST(graph_diff_treats_email_name_equal_to_address_as_none)
{
	cJSON *server = fixture_jq("{'id':'AAMkM=','displayName':'M','emailAddresses':["
				   "{'name':'m@x.example','address':'m@x.example'}]}");
	struct vcard *card = fixture_card_of("BEGIN:VCARD\nVERSION:3.0\nFN:M\nUID:AAMkM=\n"
					     "EMAIL:m@x.example\nEND:VCARD\n");
	struct diffed d = {NULL, NULL};
	char *keys = NULL;

	CHECK(server && card);
	CHECK(!diff(server, card, &d));
	keys = keys_of(d.patch);
	CHECK_STR(keys, "displayName");
out:
	free(keys);
	diffed_release(&d);
	vcard_free(card);
	cJSON_Delete(server);
}

TEST(graph_diff_detects_extension_changes)
{
	struct diffed d = {NULL, NULL};
	struct vcard_prop *p;
	struct vcard *file = NULL;
	cJSON *server = NULL;
	char *keys = NULL;

	CHECK(!rich_server(&server, &file));
	CHECK((p = vcard_add(file, NULL, "X-NEW")));
	CHECK(!vcard_set_text(file, p, "added"));
	CHECK(!diff(server, file, &d));
	keys = keys_of(d.patch);
	CHECK_STR(keys, "displayName");
	CHECK(d.ext);
	CHECK_STR(jstr(d.ext, "extensionName"), VCARD_EXTENSION_NAME);
	CHECK(has_line(jstr(d.ext, "extra"), "X-NEW:added"));
	CHECK(has_line(jstr(d.ext, "extra"), "GEO:37.386013;-122.082932"));
	CHECK(jstr(d.ext, "orig") && jstr(d.ext, "uid"));
out:
	free(keys);
	diffed_release(&d);
	vcard_free(file);
	cJSON_Delete(server);
}

TEST(graph_diff_empties_a_stale_extension)
{
	cJSON *server = fixture_jq(
		"{'id':'AAMkS=','displayName':'S','extensions':[{'id':"
		"'microsoft.graph.openTypeExtension.org.contactfs.vcard','extensionName':"
		"'org.contactfs.vcard','uid':'AAMkS=','extra':'X-OLD:1\\r\\n','orig':"
		"'FN;X-CONTACTFS-SLOT=displayName:S\\r\\n'}]}");
	struct vcard *card =
		fixture_card_of("BEGIN:VCARD\nVERSION:3.0\nFN:S\nUID:AAMkS=\nEND:VCARD\n");
	struct diffed d = {NULL, NULL};

	CHECK(server && card);
	CHECK(!diff(server, card, &d));
	CHECK(d.ext);
	CHECK_STR(jstr(d.ext, "extra"), "");
	CHECK_STR(jstr(d.ext, "orig"), "");
	CHECK(!cJSON_GetObjectItemCaseSensitive(d.ext, "uid")); /* the id, as good as none */
out:
	diffed_release(&d);
	vcard_free(card);
	cJSON_Delete(server);
}

TEST(graph_diff_of_a_changed_uid_updates_the_extension)
{
	cJSON *server = fixture_jq("{'id':'AAMkS=','displayName':'S'}");
	struct vcard *card =
		fixture_card_of("BEGIN:VCARD\nVERSION:3.0\nFN:S\nUID:my-uid\nEND:VCARD\n");
	struct diffed d = {NULL, NULL};

	CHECK(server && card);
	CHECK(!diff(server, card, &d));
	CHECK(d.ext);
	CHECK_STR(jstr(d.ext, "uid"), "my-uid");
	CHECK(!cJSON_GetObjectItemCaseSensitive(d.ext, "extra"));
out:
	diffed_release(&d);
	vcard_free(card);
	cJSON_Delete(server);
}

/* ---- 6. bad JSON ------------------------------------------------------------------ */

TEST(graph_wrong_types_are_einval_naming_the_field)
{
	static const struct {
		const char *json, *msg;
	} cases[] = {
		{"[]", "contact: expected an object"},
		{"'a string'", "contact: expected an object"},
		{"{'displayName':42}", "displayName: expected a string"},
		{"{'givenName':true}", "givenName: expected a string"},
		{"{'emailAddresses':'a@b'}", "emailAddresses: expected an array"},
		{"{'emailAddresses':[1]}", "emailAddresses[0]: expected an object"},
		{"{'emailAddresses':[{'address':'a@b'},{'address':7}]}",
		 "emailAddresses[1].address: expected a string"},
		{"{'emailAddresses':[{'address':'a@b','name':{}}]}",
		 "emailAddresses[0].name: expected a string"},
		{"{'primaryEmailAddress':'p@x'}", "primaryEmailAddress: expected an object"},
		{"{'businessPhones':{'a':1}}", "businessPhones: expected an array"},
		{"{'homePhones':['1',2]}", "homePhones[1]: expected a string"},
		{"{'mobilePhone':['1']}", "mobilePhone: expected a string"},
		{"{'homeAddress':'1 Main St'}", "homeAddress: expected an object"},
		{"{'businessAddress':{'city':5}}", "businessAddress.city: expected a string"},
		{"{'birthday':19740722}", "birthday: expected a string"},
		{"{'birthday':'July'}", "birthday: expected a date"},
		{"{'categories':'Work'}", "categories: expected an array"},
		{"{'children':[[]]}", "children[0]: expected a string"},
		{"{'extensions':{}}", "extensions: expected an array"},
		{"{'extensions':[5]}", "extensions[0]: expected an object"},
		{"{'extensions':[{'extensionName':'org.contactfs.vcard','extra':5}]}",
		 "extensions[0].extra: expected a string"},
		{"{'id':5}", "id: expected a string"},
		{"{'lastModifiedDateTime':5}", "lastModifiedDateTime: expected a string"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cJSON *c = fixture_jq(cases[i].json);
		struct vcard_error err = {99, "unset"};
		struct vcard *card = (struct vcard *)1;
		cJSON *patch = (cJSON *)1, *ext = (cJSON *)1;
		struct vcard *empty = vcard_new();

		CHECK(c && empty);
		CHECK_INT(vcard_from_graph(c, NULL, 0, NULL, &card, &err), -EINVAL);
		CHECK(!card);
		CHECK_INT(err.line, 0);
		if (!strstr(err.msg, cases[i].msg))
			fprintf(stderr, "case %zu: %s\n", i, err.msg);
		CHECK(strstr(err.msg, cases[i].msg));
		CHECK_INT(vcard_graph_diff(c, empty, &patch, &ext, &err), -EINVAL);
		CHECK(!patch && !ext);
		CHECK(strstr(err.msg, cases[i].msg));
		vcard_free(empty);
		cJSON_Delete(c);
	}
out:;
}

TEST(graph_any_value_in_any_field_never_crashes)
{
	static const char *const values[] = {
		"42",
		"true",
		"null",
		"'text'",
		"''",
		"[]",
		"[1]",
		"[null]",
		"['a', 2]",
		"{}",
		"{'address':7}",
		"[{'address':7}]",
		"[{'name':'n'}]",
		"[{}]",
		"{'street':[]}",
		"'1974-07-22T00:00:00Z'",
		"'--07-22'",
		"'9999-12-31T23:59:59-14:00'",
		"[{'extensionName':'org.contactfs.vcard','extra':'X-A:1','orig':'N:;;;;'}]",
		"[{'extensionName':'org.contactfs.vcard','orig':'TEL;X-CONTACTFS-SLOT=nope:1'}]",
	};
	cJSON *rich = fixture_jq(rich_json);
	const cJSON *f;
	int ok = 0, einval = 0;

	CHECK(rich);
	cJSON_AddItemToObject(rich, "extensions", cJSON_CreateArray());
	cJSON_AddItemToObject(rich, "primaryEmailAddress", cJSON_CreateNull());
	for (f = rich ? rich->child : NULL; f; f = f->next) {
		for (size_t v = 0; v < sizeof(values) / sizeof(values[0]); v++) {
			cJSON *c = cJSON_Duplicate(rich, 1), *patch, *ext;
			struct vcard_error err;
			struct vcard *card, *empty = vcard_new();
			int r;

			CHECK(c && empty);
			cJSON_ReplaceItemInObjectCaseSensitive(c, f->string, fixture_jq(values[v]));
			r = vcard_from_graph(c, NULL, 0, NULL, &card, &err);
			CHECK(r == 0 || r == -EINVAL);
			if (r) {
				CHECK(!card && err.line == 0 && strstr(err.msg, f->string));
				einval++;
			} else {
				CHECK(card && card->nprops > 0);
				ok++;
			}
			vcard_free(card);
			r = vcard_graph_diff(c, empty, &patch, &ext, &err);
			CHECK(r == 0 || r == -EINVAL);
			cJSON_Delete(patch);
			cJSON_Delete(ext);
			vcard_free(empty);
			cJSON_Delete(c);
		}
	}
	CHECK(ok > 0 && einval > 0);
out:
	cJSON_Delete(rich);
}

TEST(graph_huge_strings_are_carried_whole)
{
	size_t n = (size_t)1 << 20;
	char *big = malloc(n + 1);
	cJSON *c = cJSON_CreateObject();
	struct vcard *card = NULL;
	cJSON *back = NULL;

	CHECK(big && c);
	memset(big, 'x', n);
	big[n] = '\0';
	cJSON_AddStringToObject(c, "displayName", big);
	cJSON_AddStringToObject(c, "personalNotes", big);
	card = from_json(c);
	CHECK(card);
	CHECK_INT(strlen(value_of(card, "NOTE")), n);
	back = to_json(card);
	CHECK(back);
	CHECK_INT(strlen(jstr(back, "displayName")), n);
out:
	cJSON_Delete(back);
	vcard_free(card);
	cJSON_Delete(c);
	free(big);
}

TEST(graph_photo_keeps_its_group_and_parameters)
{
	/* Apple writes a crop rectangle on the photo; the bytes go to Graph's
	 * photo endpoint, the rest must come back too. */
	static const char text[] = "BEGIN:VCARD\nVERSION:3.0\nFN:P\nUID:p1\n"
				   "g1.PHOTO;ENCODING=b;TYPE=JPEG;X-ABCROP-RECTANGLE=ABClipRect_1&0&0&"
				   "1&1&abc:/9j/4AAQSkZJRg==\nEND:VCARD\n";
	struct vcard *card0 = fixture_card_of(text), *back = NULL;
	const struct vcard_prop *p;

	CHECK(card0);
	back = card_round_trip(card0, VCARD_V30);
	CHECK(back);
	p = vcard_photo(back);
	CHECK(p);
	CHECK(vcard_prop_equal(p, vcard_photo(card0)));
	CHECK_STR(p->group, "g1");
out:
	vcard_free(back);
	vcard_free(card0);
}

TEST(vcard_date_reads_every_spelling_of_a_date_and_refuses_days_the_month_lacks)
{
	int y = 0, m = 0, d = 0;

	CHECK_INT(vcard_date("1974-07-22", &y, &m, &d), 0);
	CHECK(y == 1974 && m == 7 && d == 22);
	CHECK_INT(vcard_date("19740722T000000Z", &y, &m, &d), 0);
	CHECK(y == 1974 && m == 7 && d == 22);
	CHECK_INT(vcard_date("--07-22", &y, &m, &d), 0);
	CHECK(y == VCARD_NO_YEAR && m == 7 && d == 22);
	CHECK_INT(vcard_date("--0229", &y, &m, &d), 0);
	CHECK(y == VCARD_NO_YEAR && m == 2 && d == 29);
	CHECK_INT(vcard_date("1992-02-29", &y, &m, &d), 0);
	CHECK_INT(vcard_date("1993-02-29", &y, &m, &d), -EINVAL);
	CHECK_INT(vcard_date("1974-04-31", &y, &m, &d), -EINVAL);
	CHECK_INT(vcard_date("circa 1800", &y, &m, &d), -EINVAL);
	CHECK_INT(vcard_date("", &y, &m, &d), -EINVAL);
out:;
}
