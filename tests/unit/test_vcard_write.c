/* The vCard writer: bytes, order, escaping, folding, versions. */
#include "check.h"

#include "util.h"
#include "vcard.h"

#include <errno.h>

static struct vcard *parse_or_null(const char *text)
{
	struct vcard *card = NULL;
	struct vcard_error err;

	if (vcard_parse_one(text, strlen(text), &card, &err)) {
		fprintf(stderr, "parse failed: %s\n", err.msg);
		return NULL;
	}
	return card;
}

/* Write card as version into a fresh string (to free()), or NULL. */
static char *write_str(const struct vcard *card, enum vcard_version v)
{
	struct buf b;

	buf_init(&b, 0);
	if (vcard_write(card, v, &b)) {
		buf_release(&b);
		return NULL;
	}
	return buf_detach(&b, NULL);
}

/* Every line of out ends in CRLF, none is longer than 75 octets, and no
 * continuation line starts inside a UTF-8 character. */
static int well_formed(const char *out)
{
	const char *line = out;

	while (*line) {
		const char *end = strstr(line, "\r\n");

		if (!end || end - line > 75 || memchr(line, '\n', (size_t)(end - line)) ||
		    memchr(line, '\r', (size_t)(end - line)))
			return 0;
		if (line[0] == ' ' && ((unsigned char)line[1] & 0xc0) == 0x80)
			return 0;
		line = end + 2;
	}
	return 1;
}

static const char rich[] =
	"BEGIN:VCARD\r\nVERSION:3.0\r\n"
	"PHOTO;ENCODING=b;TYPE=JPEG:/9j/4AAQSkZJRgABAQ==\r\n"
	"X-UNKNOWN-LATER:z\r\n"
	"NOTE:Line one\\nLine two\\, with comma\\; and semicolon \\\\ backslash\r\n"
	"item2.X-ABLabel:Custom\r\n"
	"EMAIL;TYPE=work:w@example.com\r\n"
	"item2.URL:https://example.com/a,b\r\n"
	"X-UNKNOWN-EARLIER:a\r\n"
	"N:Doe;Jane;;Dr.;\r\n"
	"UID:urn:uuid:1234\r\n"
	"FN:Jane Doe\r\n"
	"TEL;TYPE=CELL:+1 555 0100\r\n"
	"END:VCARD\r\n";

TEST(writes_crlf_and_the_version_asked_for)
{
	struct vcard *card = parse_or_null(rich);
	char *out3 = NULL, *out4 = NULL;

	CHECK(card);
	out3 = write_str(card, VCARD_V30);
	out4 = write_str(card, VCARD_V40);
	CHECK(out3 && out4);
	CHECK(strncmp(out3, "BEGIN:VCARD\r\nVERSION:3.0\r\n", 26) == 0);
	CHECK(strncmp(out4, "BEGIN:VCARD\r\nVERSION:4.0\r\n", 26) == 0);
	CHECK(strlen(out3) > 13 && strcmp(out3 + strlen(out3) - 11, "END:VCARD\r\n") == 0);
	CHECK(well_formed(out3));
	CHECK(well_formed(out4));
out:
	free(out3);
	free(out4);
	vcard_free(card);
}

TEST(refuses_to_write_21)
{
	struct vcard *card = vcard_new();
	struct buf b;

	buf_init(&b, 0);
	CHECK_INT(vcard_write(card, VCARD_V21, &b), -EINVAL);
out:
	buf_release(&b);
	vcard_free(card);
}

TEST(writes_properties_in_a_fixed_order)
{
	struct vcard *card = parse_or_null(rich);
	char *out = card ? write_str(card, VCARD_V30) : NULL;
	const char *fn, *n, *email, *tel, *url, *note, *earlier, *later, *uid, *photo;

	CHECK(out);
	fn = strstr(out, "\r\nFN:");
	n = strstr(out, "\r\nN:");
	email = strstr(out, "\r\nEMAIL");
	tel = strstr(out, "\r\nTEL");
	url = strstr(out, "\r\nitem2.URL");
	note = strstr(out, "\r\nNOTE");
	earlier = strstr(out, "\r\nX-UNKNOWN-EARLIER");
	later = strstr(out, "\r\nX-UNKNOWN-LATER");
	uid = strstr(out, "\r\nUID");
	photo = strstr(out, "\r\nPHOTO");
	CHECK(fn && n && email && tel && url && note && earlier && later && uid && photo);
	CHECK(fn < n && n < email && email < tel && tel < url && url < note);
	/* Unknown properties keep their relative order after the known ones. */
	CHECK(note < later && later < earlier && earlier < uid && uid < photo);
out:
	free(out);
	vcard_free(card);
}

TEST(keeps_the_members_of_a_group_together)
{
	struct vcard *card = parse_or_null(rich);
	char *out = card ? write_str(card, VCARD_V30) : NULL;
	const char *url, *label;

	CHECK(out);
	url = strstr(out, "item2.URL:");
	label = strstr(out, "item2.X-ABLABEL:Custom\r\n");
	CHECK(url && label);
	/* Adjacent, in the order they were read: the label came first. */
	CHECK(strstr(label, "\r\n") + 2 == url);
out:
	free(out);
	vcard_free(card);
}

TEST(writes_the_same_bytes_for_the_same_card)
{
	struct vcard *a = parse_or_null(rich), *b = parse_or_null(rich), *c = NULL;
	char *oa = NULL, *ob = NULL, *oc = NULL;

	CHECK(a && b);
	oa = write_str(a, VCARD_V30);
	ob = write_str(b, VCARD_V30);
	CHECK(oa && ob);
	CHECK_STR(oa, ob);
	/* And writing what was written changes nothing: a fixed point. */
	c = parse_or_null(oa);
	CHECK(c);
	oc = write_str(c, VCARD_V30);
	CHECK_STR(oc, oa);
out:
	free(oa);
	free(ob);
	free(oc);
	vcard_free(a);
	vcard_free(b);
	vcard_free(c);
}

TEST(escapes_text_but_not_uris)
{
	struct vcard *card = parse_or_null(rich);
	char *out = card ? write_str(card, VCARD_V30) : NULL;

	CHECK(out);
	CHECK(strstr(out,
		     "NOTE:Line one\\nLine two\\, with comma\\; and semicolon \\\\ backslash\r\n"));
	CHECK(strstr(out, "item2.URL:https://example.com/a,b\r\n"));
	CHECK(strstr(out, "UID:urn:uuid:1234\r\n"));
out:
	free(out);
	vcard_free(card);
}

TEST(escapes_built_values_so_they_read_back_the_same)
{
	struct vcard *card = vcard_new(), *back = NULL;
	struct vcard_prop *p;
	const char *comps[] = {"Doe; Jr", "Jane, \"JJ\"", "", "", "C:\\dir"};
	char *out = NULL;

	CHECK(card);
	p = vcard_add(card, NULL, "N");
	CHECK(p && vcard_set_comps(card, p, comps, 5) == 0);
	p = vcard_add(card, NULL, "NOTE");
	CHECK(p && vcard_set_text(card, p, "two\r\nlines\nand\rthree") == 0);
	out = write_str(card, VCARD_V40);
	CHECK(out);
	back = parse_or_null(out);
	CHECK(back);
	p = vcard_find(back, "N");
	CHECK_INT(p->ncomps, 5);
	for (size_t i = 0; i < 5; i++)
		CHECK_STR(vcard_comp(back, p, i, ","), comps[i]);
	CHECK_STR(vcard_text(back, vcard_find(back, "NOTE")), "two\nlines\nand\nthree");
out:
	free(out);
	vcard_free(card);
	vcard_free(back);
}

TEST(folds_at_75_octets_on_character_boundaries)
{
	struct vcard *card = vcard_new(), *back = NULL;
	struct vcard_prop *p;
	char text[2000];
	size_t k = 0;
	char *out = NULL;

	CHECK(card);
	/* A mix of 1-, 2-, 3- and 4-byte characters and escapes. */
	while (k + 16 < sizeof(text)) {
		memcpy(text + k, "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80,;\\\n", 14);
		k += 14;
	}
	text[k] = '\0';
	p = vcard_add(card, NULL, "NOTE");
	CHECK(p && vcard_set_text(card, p, text) == 0);
	out = write_str(card, VCARD_V30);
	CHECK(out);
	CHECK(well_formed(out));
	back = parse_or_null(out);
	CHECK(back);
	CHECK_STR(vcard_text(back, vcard_find(back, "NOTE")), text);
out:
	free(out);
	vcard_free(card);
	vcard_free(back);
}

TEST(writes_binary_values_in_each_versions_spelling)
{
	struct vcard *card = parse_or_null(rich), *back = NULL;
	char *o3 = NULL, *o4 = NULL;
	struct vcard_prop *p;

	CHECK(card);
	o3 = write_str(card, VCARD_V30);
	o4 = write_str(card, VCARD_V40);
	CHECK(o3 && o4);
	CHECK(strstr(o3, "PHOTO;ENCODING=b;TYPE=JPEG:/9j/4AAQSkZJRgABAQ==\r\n"));
	CHECK(strstr(o4, "PHOTO:data:image/jpeg;base64,/9j/4AAQSkZJRgABAQ==\r\n"));
	back = parse_or_null(o4);
	CHECK(back);
	p = vcard_find(back, "PHOTO");
	CHECK(p && p->kind == VCARD_BINARY);
	CHECK(vcard_prop_equal(p, vcard_find(card, "PHOTO")));
out:
	free(o3);
	free(o4);
	vcard_free(card);
	vcard_free(back);
}

TEST(quotes_and_caret_escapes_parameter_values)
{
	struct vcard *card = vcard_new(), *back = NULL;
	struct vcard_prop *p;
	char *out = NULL;

	CHECK(card);
	p = vcard_add(card, NULL, "X-THING");
	CHECK(p && vcard_set_text(card, p, "v") == 0);
	CHECK(vcard_add_param(card, p, "X-LABEL", "a:b;c") == 0);
	CHECK(vcard_add_param(card, p, "X-NOTE", "say \"hi\"\nbye ^") == 0);
	out = write_str(card, VCARD_V40);
	CHECK(out);
	CHECK(strstr(out, "X-THING;X-LABEL=\"a:b;c\";X-NOTE=say ^'hi^'^nbye ^^:v\r\n"));
	back = parse_or_null(out);
	CHECK(back);
	CHECK(vcard_prop_equal(vcard_find(back, "X-THING"), p));
out:
	free(out);
	vcard_free(card);
	vcard_free(back);
}

TEST(translates_pref_between_30_and_40)
{
	struct vcard *c3 =
		parse_or_null("BEGIN:VCARD\r\nVERSION:3.0\r\nEMAIL;TYPE=work,pref:a@b\r\n"
			      "END:VCARD\r\n");
	struct vcard *c4 =
		parse_or_null("BEGIN:VCARD\r\nVERSION:4.0\r\nEMAIL;TYPE=work;PREF=1:a@b\r\n"
			      "END:VCARD\r\n");
	char *o4 = NULL, *o3 = NULL;

	CHECK(c3 && c4);
	o4 = write_str(c3, VCARD_V40);
	o3 = write_str(c4, VCARD_V30);
	CHECK(o4 && o3);
	CHECK(strstr(o4, "EMAIL;TYPE=work;PREF=1:a@b\r\n"));
	CHECK(strstr(o3, "EMAIL;TYPE=work,pref:a@b\r\n"));
out:
	free(o3);
	free(o4);
	vcard_free(c3);
	vcard_free(c4);
}

TEST(translates_geo_between_30_and_40)
{
	struct vcard *c3 =
		parse_or_null("BEGIN:VCARD\r\nVERSION:3.0\r\nGEO:37.386013;-122.082932\r\n"
			      "END:VCARD\r\n");
	char *o4 = NULL, *o3 = NULL;
	struct vcard *c4 = NULL;

	CHECK(c3);
	o4 = write_str(c3, VCARD_V40);
	CHECK(o4 && strstr(o4, "GEO:geo:37.386013,-122.082932\r\n"));
	c4 = parse_or_null(o4);
	CHECK(c4);
	o3 = write_str(c4, VCARD_V30);
	CHECK(o3 && strstr(o3, "GEO:37.386013;-122.082932\r\n"));
out:
	free(o3);
	free(o4);
	vcard_free(c3);
	vcard_free(c4);
}

TEST(converts_21_input_to_30_with_every_value)
{
	struct vcard *c21 =
		parse_or_null("BEGIN:VCARD\r\nVERSION:2.1\r\nN:Doe;John;Richter,James;Mr.;Sr.\r\n"
			      "FN;CHARSET=ISO-8859-1:J\xf6hn\r\nTEL;WORK;VOICE:(905) 555-1234\r\n"
			      "NOTE;ENCODING=QUOTED-PRINTABLE:a=0D=0Ab, c; d\r\nEND:VCARD\r\n");
	struct vcard *c30 = NULL;
	char *out = NULL;

	CHECK(c21);
	out = write_str(c21, VCARD_V30);
	CHECK(out);
	CHECK(strstr(out, "N:Doe;John;Richter\\,James;Mr.;Sr.\r\n"));
	CHECK(strstr(out, "FN:J\xc3\xb6hn\r\n"));
	CHECK(strstr(out, "TEL;TYPE=WORK,VOICE:(905) 555-1234\r\n"));
	CHECK(strstr(out, "NOTE:a\\nb\\, c\\; d\r\n"));
	c30 = parse_or_null(out);
	CHECK(c30);
	CHECK_INT(c30->nprops, c21->nprops);
	for (size_t i = 0; i < c21->nprops; i++) {
		struct vcard_prop *p = vcard_find(c30, c21->props[i].name);

		CHECK(p);
		CHECK_STR(vcard_text(c30, p), vcard_text(c21, &c21->props[i]));
	}
out:
	free(out);
	vcard_free(c21);
	vcard_free(c30);
}

TEST(stops_at_the_buffer_cap)
{
	struct vcard *card = parse_or_null(rich);
	struct buf b;

	buf_init(&b, 40);
	CHECK(card);
	CHECK_INT(vcard_write(card, VCARD_V30, &b), -E2BIG);
	CHECK(b.len <= 40);
out:
	buf_release(&b);
	vcard_free(card);
}

TEST(writes_dates_in_40s_basic_form_and_leaves_30s_alone)
{
	struct vcard *card = parse_or_null("BEGIN:VCARD\r\nVERSION:3.0\r\nBDAY:1974-07-22\r\n"
					   "ANNIVERSARY:--02-29\r\nREV:2014-10-19T23:08:24Z\r\n"
					   "X-DATE:1974-07-22\r\nEND:VCARD\r\n");
	struct vcard *other = parse_or_null("BEGIN:VCARD\r\nVERSION:4.0\r\nBDAY;VALUE=text:circa "
					    "1800\r\nDEATHDATE:1974-07-22T10:00:00+02:00\r\n"
					    "ANNIVERSARY:19740722\r\nEND:VCARD\r\n");
	char *o3 = NULL, *o4 = NULL, *x3 = NULL, *x4 = NULL;

	CHECK(card && other);
	o4 = write_str(card, VCARD_V40);
	o3 = write_str(card, VCARD_V30);
	CHECK(o4 && o3);
	CHECK(strstr(o4, "BDAY:19740722\r\n"));
	CHECK(strstr(o4, "ANNIVERSARY:--0229\r\n"));
	CHECK(strstr(o4, "REV:20141019T230824Z\r\n"));
	CHECK(strstr(o4, "X-DATE:1974-07-22\r\n")); /* not a date property: untouched */
	/* 3.0 allows both forms: written as read. */
	CHECK(strstr(o3, "BDAY:1974-07-22\r\n"));
	CHECK(strstr(o3, "REV:2014-10-19T23:08:24Z\r\n"));
	/* Text, offsets and basic forms stay as written. */
	x4 = write_str(other, VCARD_V40);
	x3 = write_str(other, VCARD_V30);
	CHECK(x4 && x3);
	CHECK(strstr(x4, "BDAY;VALUE=text:circa 1800\r\n"));
	CHECK(strstr(x4, "DEATHDATE:1974-07-22T10:00:00+02:00\r\n"));
	CHECK(strstr(x3, "ANNIVERSARY:19740722\r\n"));
out:
	free(o3);
	free(o4);
	free(x3);
	free(x4);
	vcard_free(card);
	vcard_free(other);
}

TEST(raw_values_with_backslashes_read_back_the_same)
{
	static const char *const values[] = {"http://x/a\\b", "http://x/\\\\b", "x\\:y\\,z\\;",
					     "ends\\", "\\\\\\"};

	for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
		struct vcard *card = vcard_new(), *back;
		struct vcard_prop *p = card ? vcard_add(card, NULL, "URL") : NULL;
		char *out;

		CHECK(p && vcard_set_raw(card, p, values[i]) == 0);
		out = write_str(card, VCARD_V30);
		CHECK(out);
		back = parse_or_null(out);
		CHECK(back);
		CHECK_STR(vcard_text(back, vcard_find(back, "URL")), values[i]);
		free(out);
		vcard_free(card);
		vcard_free(back);
	}
out:;
}

TEST(writes_an_empty_card)
{
	struct vcard *card = vcard_new();
	char *out = card ? write_str(card, VCARD_V40) : NULL;

	CHECK(out);
	CHECK_STR(out, "BEGIN:VCARD\r\nVERSION:4.0\r\nEND:VCARD\r\n");
out:
	free(out);
	vcard_free(card);
}

TEST(writes_only_media_types_that_read_back)
{
	struct vcard *card = parse_or_null("BEGIN:VCARD\r\nVERSION:4.0\r\n"
					   "PHOTO:data:image/p(n)g;base64,SGk=\r\n"
					   "LOGO;ENCODING=b;TYPE=\"JP:EG\":SGk=\r\nEND:VCARD\r\n");
	char *o3 = card ? write_str(card, VCARD_V30) : NULL;
	char *o4 = card ? write_str(card, VCARD_V40) : NULL;
	struct vcard *b3 = NULL, *b4 = NULL;

	CHECK(o3 && o4);
	CHECK(strstr(o4, "PHOTO:data:application/octet-stream;base64,SGk=\r\n"));
	b3 = parse_or_null(o3);
	b4 = parse_or_null(o4);
	CHECK(b3 && b4);
	CHECK_INT(b3->nprops, 2);
	CHECK_INT(b4->nprops, 2);
	for (size_t i = 0; i < 2; i++) {
		CHECK(vcard_prop_equal(vcard_find(b3, card->props[i].name), &card->props[i]));
		CHECK(vcard_prop_equal(vcard_find(b4, card->props[i].name), &card->props[i]));
	}
out:
	free(o3);
	free(o4);
	vcard_free(card);
	vcard_free(b3);
	vcard_free(b4);
}

TEST(translates_only_plain_coordinates_in_geo)
{
	struct vcard *card = parse_or_null("BEGIN:VCARD\r\nVERSION:2.1\r\nGEO:35.65,139.69\r\n"
					   "X-A:1\r\nEND:VCARD\r\n");
	struct vcard *odd = parse_or_null("BEGIN:VCARD\r\nVERSION:2.1\r\nGEO:geo:1,2x\\\r\n"
					  "three\r\nEND:VCARD\r\n");
	char *o3 = card ? write_str(card, VCARD_V30) : NULL;
	char *x3 = odd ? write_str(odd, VCARD_V30) : NULL;
	struct vcard *back = NULL;

	CHECK(o3 && x3);
	CHECK(strstr(o3, "GEO:35.65;139.69\r\n"));
	CHECK(well_formed(x3));
	back = parse_or_null(x3);
	CHECK(back);
	CHECK(vcard_prop_equal(vcard_find(back, "GEO"), vcard_find(odd, "GEO")));
out:
	free(o3);
	free(x3);
	vcard_free(card);
	vcard_free(odd);
	vcard_free(back);
}

TEST(a_long_property_name_after_base64_reads_back)
{
	/* A folded name made of base64 letters must not be taken for more
	 * base64 of the property before it. */
	char name[120];
	struct vcard *card = vcard_new(), *back = NULL;
	struct vcard_prop *p;
	char *out = NULL;

	memset(name, 'L', sizeof(name) - 4);
	memcpy(name + sizeof(name) - 4, "URL", 4);
	CHECK(card);
	p = vcard_add(card, NULL, "KEY");
	CHECK(p && vcard_set_binary(card, p, "\x01\x02\x03", 3, NULL) == 0);
	p = vcard_add(card, NULL, name);
	CHECK(p && vcard_set_text(card, p, "v") == 0);
	out = write_str(card, VCARD_V30);
	CHECK(out);
	back = parse_or_null(out);
	CHECK(back);
	CHECK_INT(back->nprops, 2);
	CHECK(vcard_prop_equal(&back->props[0], &card->props[0]));
	CHECK(vcard_prop_equal(&back->props[1], &card->props[1]));
out:
	free(out);
	vcard_free(card);
	vcard_free(back);
}
