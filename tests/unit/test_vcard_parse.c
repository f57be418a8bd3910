/* The vCard reader, rule by rule. */
#include "check.h"

#include "util.h"
#include "vcard.h"
#include "vcard_int.h"

#include <errno.h>

/* Parse text (exactly one card expected) or fail the test. */
#define PARSE1(card, text)                                                                        \
	do {                                                                                      \
		struct vcard_error e_ = {0};                                                      \
		int r_ = vcard_parse_one((text), sizeof(text) - 1, &(card), &e_);                 \
		if (r_) {                                                                         \
			fprintf(stderr, "%s:%d: parse failed: %s\n", __FILE__, __LINE__, e_.msg); \
			CHECK_FAILED = 1;                                                         \
			goto out;                                                                 \
		}                                                                                 \
	} while (0)

/* The text of the first property called name. */
static const char *text_of(struct vcard *card, const char *name)
{
	struct vcard_prop *p = vcard_find(card, name);

	return p ? vcard_text(card, p) : NULL;
}

static int parse_fails(const char *text, struct vcard_error *err)
{
	struct vcard **cards;
	size_t n;
	int r = vcard_parse(text, strlen(text), &cards, &n, err);

	if (r == 0)
		vcard_free_all(cards, n);
	return r;
}

TEST(reads_crlf_lf_cr_and_crcrlf_line_ends)
{
	static const char *const inputs[] = {
		"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:A B\r\nEND:VCARD\r\n",
		"BEGIN:VCARD\nVERSION:3.0\nFN:A B\nEND:VCARD\n",
		"BEGIN:VCARD\rVERSION:3.0\rFN:A B\rEND:VCARD\r",
		"BEGIN:VCARD\r\r\nVERSION:3.0\r\r\nFN:A B\r\r\nEND:VCARD\r\r\n",
		"BEGIN:VCARD\nVERSION:3.0\r\nFN:A B\rEND:VCARD",
	};

	for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
		struct vcard *card;
		struct vcard_error err;

		CHECK_INT(vcard_parse_one(inputs[i], strlen(inputs[i]), &card, &err), 0);
		CHECK_INT(card->nprops, 1);
		CHECK_STR(text_of(card, "FN"), "A B");
		vcard_free(card);
	}
out:;
}

TEST(counts_lines_the_same_for_every_line_end)
{
	struct vcard_error err;

	CHECK_INT(
		parse_fails("BEGIN:VCARD\r\r\nVERSION:3.0\r\r\nbroken\r\r\nEND:VCARD\r\r\n", &err),
		-EINVAL);
	CHECK_INT(err.line, 3);
	CHECK_INT(parse_fails("BEGIN:VCARD\rVERSION:3.0\rbroken\rEND:VCARD\r", &err), -EINVAL);
	CHECK_INT(err.line, 3);
out:;
}

TEST(unfolds_30_lines_removing_one_whitespace)
{
	struct vcard *card = NULL;

	PARSE1(card, "BEGIN:VCARD\r\nVERSION:3.0\r\nNOTE:This is a lo\r\n ng note\r\n\t with a tab "
		     "fold\r\nEND:VCARD\r\n");
	CHECK_STR(text_of(card, "NOTE"), "This is a long note with a tab fold");
out:
	vcard_free(card);
}

TEST(unfolds_inside_a_utf8_character)
{
	struct vcard *card = NULL;

	/* "é" is C3 A9; the fold falls between its two bytes. */
	PARSE1(card, "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Ren\xc3\r\n \xa9 Dupont\r\nEND:VCARD\r\n");
	CHECK_STR(text_of(card, "FN"), "Ren\xc3\xa9 Dupont");
	CHECK(card->warning == NULL);
out:
	vcard_free(card);
}

TEST(keeps_the_whitespace_of_21_folds)
{
	struct vcard *card = NULL;

	PARSE1(card, "BEGIN:VCARD\r\nVERSION:2.1\r\nEMAIL;INTERNET:\"Omega\"\r\n  "
		     "<omega@example.com>\r\nEND:VCARD\r\n");
	CHECK_STR(text_of(card, "EMAIL"), "\"Omega\"  <omega@example.com>");
out:
	vcard_free(card);
}

TEST(decodes_quoted_printable_with_soft_breaks)
{
	struct vcard *card = NULL;

	PARSE1(card,
	       "BEGIN:VCARD\r\nVERSION:2.1\r\nNOTE;ENCODING=QUOTED-PRINTABLE:First=0D=0ASec=\r\n"
	       "ond=3D line=\r\n\r\nFN:X\r\nEND:VCARD\r\n");
	CHECK_STR(text_of(card, "NOTE"), "First\nSecond= line");
	CHECK_STR(text_of(card, "FN"), "X");
	/* ENCODING was understood and is not kept as a parameter. */
	CHECK(vcard_param(vcard_find(card, "NOTE"), "ENCODING") == NULL);
out:
	vcard_free(card);
}

TEST(decodes_bare_21_quoted_printable_and_utf8_charset)
{
	struct vcard *card = NULL;

	PARSE1(card,
	       "BEGIN:VCARD\r\nVERSION:2.1\r\nN;CHARSET=UTF-8;QUOTED-PRINTABLE:=E5=B1=B1=E7=94=B0;"
	       "=E5=A4=AA=E9=83=8E\r\nEND:VCARD\r\n");
	{
		struct vcard_prop *n = vcard_find(card, "N");

		CHECK(n != NULL);
		CHECK_STR(vcard_comp(card, n, 0, ","), "\xe5\xb1\xb1\xe7\x94\xb0");
		CHECK_STR(vcard_comp(card, n, 1, ","), "\xe5\xa4\xaa\xe9\x83\x8e");
		CHECK(vcard_param(n, "TYPE") == NULL);
	}
out:
	vcard_free(card);
}

TEST(converts_iso8859_windows125x_and_shift_jis_charsets)
{
	struct vcard *card = NULL;

	PARSE1(card, "BEGIN:VCARD\r\nVERSION:2.1\r\n"
		     "FN;CHARSET=ISO-8859-1:Andr\xe9\r\n"
		     "NOTE;CHARSET=WINDOWS-1252;ENCODING=QUOTED-PRINTABLE:=80 5\r\n"
		     "TITLE;CHARSET=ISO-8859-2:Krak\xf3w ma\xb3opolskie\r\n"
		     "ORG;CHARSET=Windows-1251:\xcc\xee\xf1\xea\xe2\xe0\r\n"
		     "X-SJIS;CHARSET=SHIFT_JIS:\x83\x5c\x83\x74\x83\x67\r\n"
		     "END:VCARD\r\n");
	CHECK_STR(text_of(card, "FN"), "Andr\xc3\xa9");
	CHECK_STR(text_of(card, "NOTE"), "\xe2\x82\xac 5");
	CHECK_STR(text_of(card, "TITLE"), "Krak\xc3\xb3w ma\xc5\x82opolskie");
	CHECK_STR(text_of(card, "ORG"), "\xd0\x9c\xd0\xbe\xd1\x81\xd0\xba\xd0\xb2\xd0\xb0");
	/* 0x5C inside a Shift_JIS character is not a backslash escape. */
	CHECK_STR(text_of(card, "X-SJIS"), "\xe3\x82\xbd\xe3\x83\x95\xe3\x83\x88");
	CHECK(card->warning == NULL);
out:
	vcard_free(card);
}

TEST(converts_charset_in_30_and_40_too_silently)
{
	struct vcard *card = NULL;

	/* Android converts by CHARSET in every version; what we write is
	 * UTF-8, so the parameter goes. */
	PARSE1(card, "BEGIN:VCARD\r\nVERSION:3.0\r\nFN;CHARSET=ISO-8859-1:Andr\xe9\r\n"
		     "N;CHARSET=UTF-8:M\xc3\xbcller;Jo;;;\r\nEND:VCARD\r\n");
	CHECK_STR(text_of(card, "FN"), "Andr\xc3\xa9");
	CHECK_STR(vcard_comp(card, vcard_find(card, "N"), 0, ","), "M\xc3\xbcller");
	CHECK(vcard_param(vcard_find(card, "FN"), "CHARSET") == NULL);
	CHECK(card->warning == NULL);
	vcard_free(card);
	card = NULL;
	PARSE1(card, "BEGIN:VCARD\r\nVERSION:4.0\r\nFN;CHARSET=Windows-1252:\x80 5\r\n"
		     "END:VCARD\r\n");
	CHECK_STR(text_of(card, "FN"), "\xe2\x82\xac 5");
	CHECK(card->warning == NULL);
out:
	vcard_free(card);
}

TEST(skips_empty_lines_between_properties_and_cards_silently)
{
	struct vcard **cards = NULL;
	struct vcard_error err;
	size_t n = 0;
	static const char text[] = "\r\nBEGIN:VCARD\r\nVERSION:3.0\r\n\r\nFN:A\r\n\r\n"
				   "END:VCARD\r\n\r\n\r\nBEGIN:VCARD\r\nVERSION:3.0\r\nFN:B\r\n"
				   "END:VCARD\r\n\r\n";

	CHECK_INT(vcard_parse(text, sizeof(text) - 1, &cards, &n, &err), 0);
	CHECK_INT(n, 2);
	CHECK_STR(text_of(cards[0], "FN"), "A");
	CHECK_STR(text_of(cards[1], "FN"), "B");
	CHECK(cards[0]->warning == NULL && cards[1]->warning == NULL);
out:
	vcard_free_all(cards, n);
}

TEST(reads_stray_non_utf8_bytes_as_windows1252_with_a_warning)
{
	struct vcard *card = NULL;

	PARSE1(card, "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Caf\xe9 \xc3\xa9\r\nEND:VCARD\r\n");
	CHECK_STR(text_of(card, "FN"), "Caf\xc3\xa9 \xc3\xa9");
	CHECK(card->warning != NULL);
	CHECK(strstr(card->warning, "line 3") != NULL);
out:
	vcard_free(card);
}

TEST(decodes_base64_in_the_21_spelling_with_unindented_lines)
{
	struct vcard *card = NULL;
	struct vcard_prop *p;

	PARSE1(card, "BEGIN:VCARD\r\nVERSION:2.1\r\nPHOTO;ENCODING=BASE64;TYPE=JPEG:\r\n"
		     "SGVsbG8s\r\nIHdvcmxk\r\n\r\nFN:X\r\nEND:VCARD\r\n");
	p = vcard_find(card, "PHOTO");
	CHECK(p && p->kind == VCARD_BINARY);
	CHECK_INT(p->len, 12);
	CHECK(memcmp(p->data, "Hello, world", 12) == 0);
	CHECK_STR(p->mediatype, "image/jpeg");
	CHECK(vcard_param(p, "TYPE") == NULL);
	CHECK_STR(text_of(card, "FN"), "X");
out:
	vcard_free(card);
}

TEST(decodes_base64_in_the_30_spelling)
{
	struct vcard *card = NULL;
	struct vcard_prop *p;

	PARSE1(card, "BEGIN:VCARD\r\nVERSION:3.0\r\nLOGO;ENCODING=b;TYPE=PNG:SGVs\r\n bG8=\r\n"
		     "END:VCARD\r\n");
	p = vcard_find(card, "LOGO");
	CHECK(p && p->kind == VCARD_BINARY);
	CHECK_INT(p->len, 5);
	CHECK(memcmp(p->data, "Hello", 5) == 0);
	CHECK_STR(p->mediatype, "image/png");
out:
	vcard_free(card);
}

TEST(decodes_base64_in_40_data_uris)
{
	struct vcard *card = NULL;
	struct vcard_prop *p;

	PARSE1(card, "BEGIN:VCARD\r\nVERSION:4.0\r\nPHOTO:data:image/gif;base64,SGk=\r\n"
		     "LOGO:http://example.com/logo.png\r\nEND:VCARD\r\n");
	p = vcard_find(card, "PHOTO");
	CHECK(p && p->kind == VCARD_BINARY);
	CHECK_INT(p->len, 2);
	CHECK(memcmp(p->data, "Hi", 2) == 0);
	CHECK_STR(p->mediatype, "image/gif");
	p = vcard_find(card, "LOGO");
	CHECK(p && p->kind == VCARD_RAW);
	CHECK_STR(vcard_text(card, p), "http://example.com/logo.png");
out:
	vcard_free(card);
}

TEST(skips_characters_outside_base64_naming_the_line)
{
	struct vcard *card = NULL;
	const struct vcard_prop *p;

	/* "QUJD" is "ABC", "REVG" "DEF": the ':' between them goes. */
	PARSE1(card, "BEGIN:VCARD\r\nVERSION:2.1\r\nN:x\r\nPHOTO;ENCODING=BASE64:QUJD:REVG\r\n"
		     "END:VCARD\r\n");
	p = vcard_find(card, "PHOTO");
	CHECK_INT(p->kind, VCARD_BINARY);
	CHECK_INT(p->len, 6);
	CHECK(p->len == 6 && !memcmp(p->data, "ABCDEF", 6));
	CHECK(card->warning &&
	      strstr(card->warning, "line 4: PHOTO: invalid base64 from character 5"));
out:
	vcard_free(card);
}

TEST(keeps_groups_with_their_properties)
{
	struct vcard *card = NULL;
	struct vcard_prop *p;

	PARSE1(card, "BEGIN:VCARD\r\nVERSION:3.0\r\nitem1.TEL;type=pref:+1 555\r\n"
		     "item1.X-ABLabel:_$!<Mobile>!$_\r\nEND:VCARD\r\n");
	CHECK_INT(card->nprops, 2);
	p = &card->props[0];
	CHECK_STR(p->group, "item1");
	CHECK_STR(p->name, "TEL");
	CHECK_STR(card->props[1].group, "item1");
	CHECK_STR(card->props[1].name, "X-ABLABEL");
	CHECK_STR(vcard_text(card, &card->props[1]), "_$!<Mobile>!$_");
	CHECK(vcard_has_type(p, "PREF"));
out:
	vcard_free(card);
}

TEST(decodes_rfc6868_caret_escapes_in_parameters)
{
	struct vcard *card = NULL;
	const struct vcard_param *pm;

	PARSE1(card,
	       "BEGIN:VCARD\r\nVERSION:4.0\r\nGEO;X-ADDRESS=\"Pittsburgh Pirates^n115 Federal "
	       "St^nPittsburgh, PA 15212\";X-Q=^'hi^' ^^:geo:40.446816,-80.00566\r\nEND:VCARD\r\n");
	pm = vcard_param(vcard_find(card, "GEO"), "X-ADDRESS");
	CHECK(pm && pm->nvals == 1);
	CHECK_STR(pm->vals[0], "Pittsburgh Pirates\n115 Federal St\nPittsburgh, PA 15212");
	pm = vcard_param(vcard_find(card, "GEO"), "X-Q");
	CHECK(pm && pm->nvals == 1);
	CHECK_STR(pm->vals[0], "\"hi\" ^");
out:
	vcard_free(card);
}

TEST(splits_structured_values_before_unescaping)
{
	struct vcard *card = NULL;
	struct vcard_prop *p;

	PARSE1(card,
	       "BEGIN:VCARD\r\nVERSION:3.0\r\nADR:;;1 Main St\\; Apt 2\\, rear;Town;;;Land\r\n"
	       "N:Doe;Jane;Ann,Marie;;\r\nEND:VCARD\r\n");
	p = vcard_find(card, "ADR");
	CHECK_INT(p->ncomps, 7);
	CHECK_STR(vcard_comp(card, p, 2, ","), "1 Main St; Apt 2, rear");
	CHECK_INT(p->comps[2].nvals, 1);
	CHECK_STR(vcard_comp(card, p, 3, ","), "Town");
	p = vcard_find(card, "N");
	CHECK_INT(p->ncomps, 5);
	CHECK_INT(p->comps[2].nvals, 2);
	CHECK_STR(p->comps[2].vals[1], "Marie");
out:
	vcard_free(card);
}

TEST(undoes_text_escapes)
{
	struct vcard *card = NULL;

	PARSE1(card,
	       "BEGIN:VCARD\r\nVERSION:3.0\r\nNOTE:a\\nb\\Nc\\\\d\\,e\\;f\\qg\r\nEND:VCARD\r\n");
	CHECK_STR(text_of(card, "NOTE"), "a\nb\nc\\d,e;f\\qg");
out:
	vcard_free(card);
}

TEST(reads_an_escaped_quote_as_a_quote_in_30_and_40_with_a_warning)
{
	struct vcard *card = NULL, *again;
	struct vcard_error err;
	struct buf b;

	/* Apple's Mac export writes \" for a quote; other backslashes stay. */
	PARSE1(card, "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:x\r\n"
		     "NOTE:provided \\\"AS IS\\\" by C:\\q\r\nEND:VCARD\r\n");
	CHECK_STR(text_of(card, "NOTE"), "provided \"AS IS\" by C:\\q");
	CHECK_STR(card->warning, "line 4: NOTE: backslash before '\"' dropped");
	buf_init(&b, 0);
	CHECK_INT(vcard_write(card, VCARD_V40, &b), 0);
	CHECK_INT(vcard_parse_one(b.data, b.len, &again, &err), 0);
	CHECK_STR(text_of(again, "NOTE"), "provided \"AS IS\" by C:\\q");
	CHECK(again->warning == NULL);
	vcard_free(again);
	vcard_free(card);
	card = NULL;
	buf_release(&b);

	/* 2.1 knows no such escape: the backslash is text there. */
	PARSE1(card, "BEGIN:VCARD\r\nVERSION:2.1\r\nNOTE:a\\\"b\r\nEND:VCARD\r\n");
	CHECK_STR(text_of(card, "NOTE"), "a\\\"b");
	CHECK(card->warning == NULL);
out:
	vcard_free(card);
}

TEST(keeps_backslash_n_literal_in_21)
{
	struct vcard *card = NULL;

	PARSE1(card, "BEGIN:VCARD\r\nVERSION:2.1\r\nNOTE:C:\\new\\;x, y\r\nEND:VCARD\r\n");
	CHECK_STR(text_of(card, "NOTE"), "C:\\new;x, y");
	CHECK_INT(vcard_find(card, "NOTE")->comps[0].nvals, 1);
out:
	vcard_free(card);
}

TEST(continues_a_21_value_after_a_trailing_backslash)
{
	struct vcard *card = NULL;
	struct vcard_prop *p;

	PARSE1(card,
	       "BEGIN:VCARD\r\nVERSION:2.1\r\nADR;HOME:;;Hermann v. Brevern\\\r\n9999999\\\r\n"
	       "Packstation 999;Hamburg;;99999;Deutschland\r\nEND:VCARD\r\n");
	p = vcard_find(card, "ADR");
	CHECK_INT(p->ncomps, 7);
	CHECK_STR(vcard_comp(card, p, 2, ","), "Hermann v. Brevern\n9999999\nPackstation 999");
out:
	vcard_free(card);
}

TEST(turns_bare_21_parameters_into_type)
{
	struct vcard *card = NULL;
	struct vcard_prop *p;

	PARSE1(card, "BEGIN:VCARD\r\nVERSION:2.1\r\nTEL;WORK;VOICE:+1 111\r\nEND:VCARD\r\n");
	p = vcard_find(card, "TEL");
	CHECK(vcard_has_type(p, "WORK") && vcard_has_type(p, "voice"));
	CHECK_INT(p->nparams, 1);
	CHECK(card->warning == NULL);
out:
	vcard_free(card);
}

TEST(reads_bare_parameters_in_30_and_40_as_21_does_with_a_warning)
{
	struct vcard *card = NULL, *again;
	struct vcard_error err;
	const struct vcard_prop *p;
	struct buf b;

	/* The Mac's export: a bare BASE64 in 3.0, the data on lines indented
	 * by two blanks. */
	PARSE1(card, "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:x\r\nTEL;CELL:+1 555\r\n"
		     "PHOTO;BASE64:\r\n  QUJD\r\n  REVG\r\nEND:VCARD\r\n");
	CHECK(vcard_has_type(vcard_find(card, "TEL"), "CELL"));
	p = vcard_find(card, "PHOTO");
	CHECK_INT(p->kind, VCARD_BINARY);
	CHECK(p->len == 6 && !memcmp(p->data, "ABCDEF", 6));
	CHECK_STR(card->warning,
		  "line 4: TEL: parameter \"CELL\" without a name; read as TYPE=CELL\n"
		  "line 5: PHOTO: parameter \"BASE64\" without a name; read as ENCODING=BASE64");
	/* What is written back says TYPE= and ENCODING=, and needs no repair. */
	buf_init(&b, 0);
	CHECK_INT(vcard_write(card, VCARD_V30, &b), 0);
	CHECK_INT(vcard_parse_one(b.data, b.len, &again, &err), 0);
	CHECK(again->warning == NULL);
	p = vcard_find(again, "PHOTO");
	CHECK(p->kind == VCARD_BINARY && p->len == 6 && !memcmp(p->data, "ABCDEF", 6));
	vcard_free(again);
	vcard_free(card);
	card = NULL;
	buf_release(&b);

	PARSE1(card, "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:x\r\nTEL;work,voice:tel:+1-555\r\n"
		     "END:VCARD\r\n");
	p = vcard_find(card, "TEL");
	CHECK(vcard_has_type(p, "work") && vcard_has_type(p, "voice"));
	CHECK(card->warning &&
	      strstr(card->warning, "line 4: TEL: parameter \"work,voice\" without a name"));
out:
	vcard_free(card);
}

TEST(splits_a_quoted_type_list_in_30_and_40_with_a_warning)
{
	struct vcard *card = NULL, *again;
	struct vcard_error err;
	const struct vcard_prop *p;
	struct buf b;

	/* RFC 6350's own examples quote the list: TYPE="voice,home". */
	PARSE1(card, "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:x\r\n"
		     "TEL;VALUE=uri;TYPE=\"voice,home\";PREF=1:tel:+1-555\r\n"
		     "ADR;TYPE=\"work\":;;1 Main St;;;;\r\nEND:VCARD\r\n");
	p = vcard_find(card, "TEL");
	CHECK(vcard_has_type(p, "home") && vcard_has_type(p, "voice"));
	CHECK_INT(vcard_param(p, "TYPE")->nvals, 2);
	CHECK(vcard_has_type(vcard_find(card, "ADR"), "work"));
	CHECK_STR(card->warning,
		  "line 4: TEL: commas inside the quotes of TYPE=\"voice,home\" read "
		  "as separating types");
	buf_init(&b, 0);
	CHECK_INT(vcard_write(card, VCARD_V40, &b), 0);
	CHECK_INT(vcard_parse_one(b.data, b.len, &again, &err), 0);
	CHECK(again->warning == NULL);
	CHECK(vcard_has_type(vcard_find(again, "TEL"), "home"));
	vcard_free(again);
	vcard_free(card);
	card = NULL;
	buf_release(&b);

	/* Only TYPE: SORT-AS keeps its quoted value whole. */
	PARSE1(card, "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:x\r\n"
		     "N;SORT-AS=\"Mann,James\":de Mann;James;;;\r\nEND:VCARD\r\n");
	CHECK_INT(vcard_param(vcard_find(card, "N"), "SORT-AS")->nvals, 1);
	CHECK(card->warning == NULL);
	vcard_free(card);
	card = NULL;

	/* 2.1 too, named or bare, so that no type we keep holds a comma. */
	PARSE1(card, "BEGIN:VCARD\r\nVERSION:2.1\r\nFN:x\r\nTEL;TYPE=\"work,voice\":1\r\n"
		     "EMAIL;\"home,internet\":a@b.c\r\nEND:VCARD\r\n");
	CHECK_INT(vcard_param(vcard_find(card, "TEL"), "TYPE")->nvals, 2);
	CHECK_INT(vcard_param(vcard_find(card, "EMAIL"), "TYPE")->nvals, 2);
	CHECK(card->warning && strstr(card->warning, "line 4: TEL: commas inside the quotes") &&
	      strstr(card->warning, "line 5: EMAIL: commas inside the quotes of "
				    "TYPE=\"home,internet\""));
out:
	vcard_free(card);
}

TEST(merges_repeated_parameters)
{
	struct vcard *card = NULL;
	const struct vcard_param *t;

	PARSE1(card, "BEGIN:VCARD\r\nVERSION:3.0\r\nADR;type=WORK;type=pref:;;a;b;c;d;e\r\nEND:"
		     "VCARD\r\n");
	t = vcard_param(vcard_find(card, "ADR"), "TYPE");
	CHECK(t && t->nvals == 2);
	CHECK_STR(t->vals[0], "WORK");
	CHECK_STR(t->vals[1], "pref");
out:
	vcard_free(card);
}

TEST(reads_several_cards_from_one_input)
{
	static const char in[] = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:One\r\nEND:VCARD\r\n\r\n"
				 "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Two\r\nEND:VCARD\r\n"
				 "BEGIN:VCARD\r\nVERSION:2.1\r\nFN:Three\r\nEND:VCARD\r\n";
	struct vcard **cards = NULL;
	struct vcard_error err;
	size_t n = 0;

	CHECK_INT(vcard_parse(in, sizeof(in) - 1, &cards, &n, &err), 0);
	CHECK_INT(n, 3);
	CHECK_STR(text_of(cards[0], "FN"), "One");
	CHECK_INT(cards[1]->version, VCARD_V40);
	CHECK_STR(text_of(cards[2], "FN"), "Three");
	CHECK_INT(cards[2]->line, 10);
out:
	vcard_free_all(cards, n);
}

TEST(parse_one_refuses_a_second_card)
{
	static const char in[] = "BEGIN:VCARD\r\nFN:One\r\nEND:VCARD\r\nBEGIN:VCARD\r\nFN:Two\r\n"
				 "END:VCARD\r\n";
	struct vcard *card;
	struct vcard_error err;

	CHECK_INT(vcard_parse_one(in, sizeof(in) - 1, &card, &err), -EINVAL);
	CHECK(card == NULL);
	CHECK_INT(err.line, 4);
out:;
}

TEST(skips_a_utf8_bom)
{
	struct vcard *card = NULL;

	PARSE1(card, "\xef\xbb\xbf"
		     "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Bom\r\nEND:VCARD\r\n");
	CHECK_STR(text_of(card, "FN"), "Bom");
out:
	vcard_free(card);
}

TEST(reads_names_and_markers_in_any_case)
{
	struct vcard *card = NULL;

	PARSE1(card, "begin:vCard\r\nversion:3.0\r\nfn:Low\r\nX-Custom-Thing;x-Param=Keep:v\r\n"
		     "End:VCARD \r\n");
	CHECK_STR(text_of(card, "FN"), "Low");
	CHECK_STR(card->props[0].name, "FN");
	CHECK_STR(card->props[1].name, "X-CUSTOM-THING");
	CHECK_STR(vcard_param(&card->props[1], "X-PARAM")->vals[0], "Keep");
out:
	vcard_free(card);
}

TEST(keeps_unknown_properties_parameters_and_groups)
{
	struct vcard *card = NULL;
	struct vcard_prop *p;

	PARSE1(card, "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:X\r\ng1.X-FOO;X-A=1,2;X-B=\"q;r\":a;b,c\r\n"
		     "X-MESSAGING/GADU-ALL:123\r\nEND:VCARD\r\n");
	p = vcard_find(card, "X-FOO");
	CHECK(p != NULL);
	CHECK_STR(p->group, "g1");
	CHECK_INT(vcard_param(p, "X-A")->nvals, 2);
	CHECK_STR(vcard_param(p, "X-B")->vals[0], "q;r");
	CHECK_INT(p->ncomps, 2);
	CHECK_INT(p->comps[1].nvals, 2);
	CHECK_STR(text_of(card, "X-MESSAGING/GADU-ALL"), "123");
out:
	vcard_free(card);
}

TEST(keeps_uri_values_verbatim)
{
	struct vcard *card = NULL;

	PARSE1(card, "BEGIN:VCARD\r\nVERSION:3.0\r\nURL:http\\://example.com/a,b;c\r\n"
		     "TEL;VALUE=uri:tel:+1-555-0100;ext=2\r\nEND:VCARD\r\n");
	CHECK_INT(vcard_find(card, "URL")->kind, VCARD_RAW);
	CHECK_STR(text_of(card, "URL"), "http://example.com/a,b;c");
	CHECK_INT(vcard_find(card, "TEL")->kind, VCARD_RAW);
	CHECK_STR(text_of(card, "TEL"), "tel:+1-555-0100;ext=2");
out:
	vcard_free(card);
}

TEST(repairs_a_missing_end_at_end_of_input_with_a_warning)
{
	struct vcard *card = NULL;

	PARSE1(card, "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Cut short\r\n");
	CHECK_STR(text_of(card, "FN"), "Cut short");
	CHECK(card->warning && strstr(card->warning, "missing END:VCARD"));
out:
	vcard_free(card);
}

TEST(reads_a_card_without_version_as_30_with_a_warning)
{
	struct vcard *card = NULL;

	PARSE1(card, "BEGIN:VCARD\r\nFN:Old\\, style\r\nEND:VCARD\r\n");
	CHECK_INT(card->version, VCARD_V30);
	CHECK_STR(text_of(card, "FN"), "Old, style");
	CHECK(card->warning && strstr(card->warning, "VERSION"));
out:
	vcard_free(card);
}

TEST(refuses_a_line_without_colon_naming_the_line)
{
	struct vcard_error err;

	/* Not a property name alone: text, or a word that is no known or X-
	 * name (a badly folded value would be taken for a property). */
	CHECK_INT(parse_fails("BEGIN:VCARD\nVERSION:3.0\nFN:x\nN Doe\nEND:VCARD\n", &err), -EINVAL);
	CHECK_INT(err.line, 4);
	CHECK(strstr(err.msg, "line 4:") == err.msg);
	CHECK(strstr(err.msg, "no ':'"));
	CHECK_INT(parse_fails("BEGIN:VCARD\nVERSION:3.0\nNOTE:a\nSmith\nEND:VCARD\n", &err),
		  -EINVAL);
	CHECK_INT(err.line, 4);
out:;
}

TEST(reads_a_known_name_without_colon_as_an_empty_value_with_a_warning)
{
	struct vcard *card = NULL;

	PARSE1(card, "BEGIN:VCARD\r\nVERSION:3.0\r\nN\r\nX-FOO;TYPE=a\r\nFN:John Doe\r\n"
		     "END:VCARD\r\n");
	CHECK_STR(text_of(card, "N"), "");
	CHECK_STR(text_of(card, "X-FOO"), "");
	CHECK_STR(vcard_param(vcard_find(card, "X-FOO"), "TYPE")->vals[0], "a");
	CHECK_STR(text_of(card, "FN"), "John Doe");
	CHECK(card->warning && strstr(card->warning, "line 3: no ':' after \"N\""));
	CHECK(strstr(card->warning, "line 4: no ':'"));
	CHECK_INT(card->nwarnings, 2);
out:
	vcard_free(card);
}

TEST(refuses_text_outside_a_card)
{
	struct vcard_error err;

	CHECK_INT(parse_fails("\r\nFN:x\r\nVERSION:3.0\r\nEND:VCARD\r\n", &err), -EINVAL);
	CHECK_INT(err.line, 2);
	CHECK(strstr(err.msg, "expected BEGIN:VCARD"));
	CHECK_INT(parse_fails("BEGIN:VCARDinvalid\r\nFN:x\r\nEND:VCARD\r\n", &err), -EINVAL);
	CHECK_INT(err.line, 1);
	CHECK_INT(parse_fails("BEGIN:VCARD\r\nFN:x\r\nEND:VCARD\r\ntrailing junk\r\n", &err),
		  -EINVAL);
	CHECK_INT(err.line, 4);
out:;
}

TEST(refuses_begin_inside_a_card)
{
	struct vcard_error err;

	CHECK_INT(parse_fails("BEGIN:VCARD\r\nFN:x\r\nBEGIN:VCARD\r\nFN:y\r\nEND:VCARD\r\n", &err),
		  -EINVAL);
	CHECK_INT(err.line, 3);
	CHECK(strstr(err.msg, "begun at line 1"));
out:;
}

TEST(refuses_empty_input_and_unknown_versions)
{
	struct vcard_error err;

	CHECK_INT(parse_fails("", &err), -EINVAL);
	CHECK(strstr(err.msg, "no vCard"));
	CHECK_INT(parse_fails("\r\n\r\n", &err), -EINVAL);
	CHECK_INT(parse_fails("BEGIN:VCARD\r\nVERSION:5.0\r\nEND:VCARD\r\n", &err), -EINVAL);
	CHECK_INT(err.line, 2);
out:;
}

TEST(refuses_invalid_names)
{
	struct vcard_error err;

	CHECK_INT(parse_fails("BEGIN:VCARD\r\nFN X:y\r\nEND:VCARD\r\n", &err), -EINVAL);
	CHECK_INT(err.line, 2);
	CHECK_INT(parse_fails("BEGIN:VCARD\r\na b.FN:y\r\nEND:VCARD\r\n", &err), -EINVAL);
	CHECK_INT(parse_fails("BEGIN:VCARD\r\nFN;X A=1:y\r\nEND:VCARD\r\n", &err), -EINVAL);
	CHECK_INT(parse_fails("BEGIN:VCARD\r\n:y\r\nEND:VCARD\r\n", &err), -EINVAL);
out:;
}

TEST(does_not_hang_or_overread_on_truncated_input)
{
	static const char *const cuts[] = {
		"BEGIN:VCARD\r\nNOTE;ENCODING=QUOTED-PRINTABLE:abc=",
		"BEGIN:VCARD\r\nNOTE;ENCODING=QUOTED-PRINTABLE:abc=4",
		"BEGIN:VCARD\r\nPHOTO;ENCODING=BASE64:\r\n",
		"BEGIN:VCARD\r\nN;X=\"unterminated:v\r\n",
		"BEGIN:VCARD\r\nNOTE:trailing backslash\\",
		"BEGIN:VCARD\r\n ",
	};

	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		struct vcard **cards;
		struct vcard_error err;
		size_t n;
		int r = vcard_parse(cuts[i], strlen(cuts[i]), &cards, &n, &err);

		CHECK(r == 0 || r == -EINVAL);
		if (r == 0)
			vcard_free_all(cards, n);
		else
			CHECK(err.msg[0] != '\0');
	}
out:;
}

TEST(known_properties_are_found_by_name)
{
	const struct vcard_known *k, *prev = NULL;

	for (size_t i = 0; (k = vcard_known_at(i)); i++) {
		CHECK(vcard_known(k->name) == k);
		if (prev)
			CHECK(strcmp(prev->name, k->name) < 0);
		prev = k;
	}
	CHECK(prev != NULL);
	CHECK(vcard_known("X-NOT-A-KNOWN-ONE") == NULL);
out:;
}

TEST(a_qp_soft_break_keeps_the_next_lines_leading_space)
{
	struct vcard *card = NULL;

	PARSE1(card, "BEGIN:VCARD\r\nVERSION:2.1\r\nNOTE;ENCODING=QUOTED-PRINTABLE:to come=\r\n"
		     " to the aid\r\nEND:VCARD\r\n");
	CHECK_STR(text_of(card, "NOTE"), "to come to the aid");
out:
	vcard_free(card);
}

TEST(refuses_nul_bytes_naming_the_line)
{
	static const char raw[] = "BEGIN:VCARD\nVERSION:3.0\nFN:x\nEND:VCARD\0\n";
	static const char qp[] = "BEGIN:VCARD\nVERSION:2.1\nFN;ENCODING=QUOTED-PRINTABLE:a=00b\n"
				 "END:VCARD\n";
	struct vcard **cards;
	struct vcard_error err;
	size_t n;

	CHECK_INT(vcard_parse(raw, sizeof(raw) - 1, &cards, &n, &err), -EINVAL);
	CHECK_INT(err.line, 4);
	CHECK(strstr(err.msg, "NUL"));
	CHECK_INT(vcard_parse(qp, sizeof(qp) - 1, &cards, &n, &err), -EINVAL);
	CHECK_INT(err.line, 3);
	CHECK(strstr(err.msg, "NUL"));
out:;
}

TEST(refuses_malformed_begin_and_end_lines_inside_a_card)
{
	struct vcard_error err;

	CHECK_INT(parse_fails("BEGIN:VCARD\r\nFN:x\r\nEND;;;:VCARD\r\nEND:VCARD\r\n", &err),
		  -EINVAL);
	CHECK_INT(err.line, 3);
	CHECK(strstr(err.msg, "malformed END"));
	CHECK_INT(parse_fails("BEGIN:VCARD\r\nFN:x\r\nitem1.BEGIN:VCARD\r\nEND:VCARD\r\n", &err),
		  -EINVAL);
	CHECK_INT(err.line, 3);
out:;
}

TEST(finds_encodings_only_in_parameters)
{
	struct vcard *card = NULL;

	/* "QUOTED-PRINTABLE" in another parameter's value is not the
	 * encoding: the '=' at the end is text, and the next line a fold. */
	PARSE1(card, "BEGIN:VCARD\r\nVERSION:3.0\r\nNOTE;X-A=QUOTED-PRINTABLE:a=\r\n b\r\n"
		     "X-B;X-C=BASE64:v\r\nEND:VCARD\r\n");
	CHECK_STR(text_of(card, "NOTE"), "a=b");
	CHECK_STR(text_of(card, "X-B"), "v");
	CHECK_STR(vcard_param(vcard_find(card, "NOTE"), "X-A")->vals[0], "QUOTED-PRINTABLE");
out:
	vcard_free(card);
}

/* ---- repairs of what other readers take (docs/vcard.md) ------------------ */

TEST(begins_a_card_at_a_version_line_without_begin_with_a_warning)
{
	struct vcard **cards = NULL;
	struct vcard_error err;
	size_t n = 0;
	static const char in[] = "\nVERSION:3.0\r\nFN:No Begin\r\nEND:VCARD\r\n"
				 "VERSION:2.1\r\nFN:Second\r\nEND:VCARD\r\n";

	CHECK_INT(vcard_parse(in, sizeof(in) - 1, &cards, &n, &err), 0);
	CHECK_INT(n, 2);
	CHECK_STR(text_of(cards[0], "FN"), "No Begin");
	CHECK_INT(cards[0]->line, 2);
	CHECK(cards[0]->warning && strstr(cards[0]->warning, "line 2: no BEGIN:VCARD"));
	CHECK_INT(cards[1]->version, VCARD_V21);
	CHECK(cards[1]->warning && strstr(cards[1]->warning, "line 5: no BEGIN:VCARD"));
out:
	vcard_free_all(cards, n);
}

TEST(reads_begin_end_and_version_with_a_group_or_blanks_with_warnings)
{
	struct vcard *card = NULL;

	PARSE1(card, "TEST.BEGIN:VCARD\r\n.VERSION : 4.0\r\nTEST.N:Doe;John;;;\r\n"
		     ".FN:John Doe\r\nEND : vcard\r\n");
	CHECK_INT(card->version, VCARD_V40);
	CHECK_STR(vcard_find(card, "N")->group, "TEST");
	CHECK(vcard_find(card, "FN")->group == NULL);
	CHECK_STR(text_of(card, "FN"), "John Doe");
	CHECK(card->warning && strstr(card->warning, "line 1: BEGIN:VCARD with a group"));
	CHECK(strstr(card->warning, "line 2: VERSION with a group or blanks; read as VERSION:4.0"));
	CHECK(strstr(card->warning, "line 4: empty group before \"FN\" dropped"));
	CHECK(strstr(card->warning, "line 5: END:VCARD with a group or blanks"));
	CHECK_INT(card->nwarnings, 4);
out:
	vcard_free(card);
}

TEST(reads_version_with_blanks_after_the_colon)
{
	struct vcard *card = NULL;

	PARSE1(card, "BEGIN:VCARD\r\nVERSION: 2.1\r\nN;CHARSET=UTF-8:a\\;b\r\nEND:VCARD\r\n");
	CHECK_INT(card->version, VCARD_V21);
	CHECK(card->warning && strstr(card->warning, "line 2: VERSION with a group or blanks"));
out:
	vcard_free(card);
}

TEST(refuses_begin_naming_another_object)
{
	struct vcard_error err;

	CHECK_INT(parse_fails("BEGIN:VCARDinvalid\r\nVERSION:3.0\r\nFN:x\r\nEND:VCARD\r\n", &err),
		  -EINVAL);
	CHECK_INT(err.line, 1);
	CHECK(strstr(err.msg, "expected BEGIN:VCARD, found \"BEGIN:VCARDinvalid\""));
	CHECK_INT(parse_fails("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n", &err),
		  -EINVAL);
	CHECK_INT(err.line, 1);
out:;
}

TEST(reads_a_cut_end_at_end_of_input_with_a_warning)
{
	struct vcard *card;
	struct vcard_error err;

	PARSE1(card, "BEGIN:vCard\nVERSION:3.0\nFN:Frank\nE\n\n");
	CHECK_STR(text_of(card, "FN"), "Frank");
	CHECK_INT(card->nprops, 1);
	CHECK(card->warning &&
	      strstr(card->warning, "line 4: \"E\" at end of input read as a cut"));
	vcard_free(card);
	PARSE1(card, "BEGIN:VCARD\nVERSION:3.0\nFN:Frank\nEND:VC");
	CHECK_INT(card->nprops, 1);
	vcard_free(card);
	/* Not at the end: a line without ':' like any other. */
	CHECK_INT(parse_fails("BEGIN:VCARD\nVERSION:3.0\nE\nFN:x\nEND:VCARD\n", &err), -EINVAL);
	CHECK_INT(err.line, 3);
out:;
}

TEST(skips_comment_lines_with_a_warning)
{
	struct vcard *card = NULL;

	PARSE1(card, "# exported by a phone\r\nBEGIN:VCARD\r\nVERSION:2.1\r\n# a comment\r\n"
		     "FN:Com Ment\r\nEND:VCARD\r\n# trailer\r\n");
	CHECK_INT(card->nprops, 1);
	CHECK_STR(text_of(card, "FN"), "Com Ment");
	CHECK(card->warning && strstr(card->warning, "line 1: comment lines before the card"));
	CHECK(strstr(card->warning, "line 4: comment line skipped"));
	CHECK(strstr(card->warning, "line 7: comment lines after the card"));
out:
	vcard_free(card);
}

TEST(reads_the_lines_before_a_late_version_as_that_version)
{
	struct vcard *card = NULL;

	/* 2.1 folding keeps the blank and 2.1 has no \n escape: read as 3.0
	 * the NOTE would be "a\nb" and the address one line. */
	PARSE1(card, "BEGIN:VCARD\r\nNOTE:a\\nb\r\nADR:;;1 Main\r\n  St;;;;\r\nVERSION:2.1\r\n"
		     "END:VCARD\r\n");
	CHECK_INT(card->version, VCARD_V21);
	CHECK_STR(text_of(card, "NOTE"), "a\\nb");
	CHECK_STR(vcard_comp(card, vcard_find(card, "ADR"), 2, ","), "1 Main  St");
	CHECK(card->warning == NULL);
out:
	vcard_free(card);
}

TEST(keeps_a_21_agent_card_inside_its_contact)
{
	struct vcard **cards = NULL;
	struct vcard_error err;
	size_t n = 0;
	static const char in[] = "BEGIN:VCARD\r\nVERSION:2.1\r\nFN:Boss\r\nAGENT:\r\n"
				 "BEGIN:VCARD\r\nVERSION:2.1\r\nFN:Assistant\r\n"
				 "TEL;WORK:+1 555 0100\r\nEND:VCARD\r\nEMAIL:boss@example.org\r\n"
				 "END:VCARD\r\n";

	CHECK_INT(vcard_parse(in, sizeof(in) - 1, &cards, &n, &err), 0);
	CHECK_INT(n, 1);
	CHECK_STR(text_of(cards[0], "FN"), "Boss");
	CHECK_STR(text_of(cards[0], "AGENT"), "BEGIN:VCARD\nVERSION:2.1\nFN:Assistant\n"
					      "TEL;WORK:+1 555 0100\nEND:VCARD\n");
	CHECK_STR(text_of(cards[0], "EMAIL"), "boss@example.org");
	CHECK(cards[0]->warning == NULL);
out:
	vcard_free_all(cards, n);
}

TEST(keeps_an_agent_card_begun_on_the_agent_line_and_nested_ones)
{
	struct vcard *card = NULL;

	PARSE1(card, "BEGIN:VCARD\nVERSION:2.1\nAGENT:BEGIN:VCARD\nFN:A\nAGENT:\nBEGIN:VCARD\n"
		     "FN:B\nEND:VCARD\nEND:VCARD\nFN:Top\nEND:VCARD\n");
	CHECK_STR(text_of(card, "FN"), "Top");
	CHECK_STR(text_of(card, "AGENT"),
		  "BEGIN:VCARD\nFN:A\nAGENT:\nBEGIN:VCARD\nFN:B\nEND:VCARD\nEND:VCARD\n");
	vcard_free(card);
	card = NULL;
	PARSE1(card, "BEGIN:VCARD\nVERSION:2.1\nAGENT:\nBEGIN:VCARD\nFN:A\nAGENT:BEGIN:VCARD\n"
		     "FN:B\nEND:VCARD\nEND:VCARD\nFN:Top\nEND:VCARD\n");
	CHECK_STR(text_of(card, "FN"), "Top");
	CHECK_STR(text_of(card, "AGENT"),
		  "BEGIN:VCARD\nFN:A\nAGENT:BEGIN:VCARD\nFN:B\nEND:VCARD\nEND:VCARD\n");
	vcard_free(card);
	card = NULL;
	/* Its text is UTF-8 like any text of a card. */
	PARSE1(card, "BEGIN:VCARD\nVERSION:2.1\nAGENT:\nBEGIN:VCARD\nFN:Jos\xe9\nEND:VCARD\n"
		     "END:VCARD\n");
	CHECK_STR(text_of(card, "AGENT"), "BEGIN:VCARD\nFN:Jos\xc3\xa9\nEND:VCARD\n");
	CHECK(card->warning && strstr(card->warning, "line 3: AGENT: the vCard it carries is not"));
	vcard_free(card);
	card = NULL;
	/* An empty AGENT that no card follows stays empty. */
	PARSE1(card, "BEGIN:VCARD\nVERSION:2.1\nAGENT:\n\nFN:x\nEND:VCARD\n");
	CHECK_STR(text_of(card, "AGENT"), "");
	CHECK_STR(text_of(card, "FN"), "x");
out:
	vcard_free(card);
}

TEST(refuses_an_agent_card_without_end)
{
	struct vcard_error err;

	CHECK_INT(parse_fails("BEGIN:VCARD\nVERSION:2.1\nAGENT:\nBEGIN:VCARD\nFN:x\n", &err),
		  -EINVAL);
	CHECK_INT(err.line, 3);
	CHECK(strstr(err.msg, "AGENT: the vCard it carries has no END:VCARD"));
out:;
}

TEST(takes_the_bytes_of_a_data_uri_under_encoding_b_with_a_warning)
{
	struct vcard *card = NULL;
	const struct vcard_prop *p;

	PARSE1(card, "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:x\r\n"
		     "PHOTO;ENCODING=b;TYPE=JPEG:data:image/png;base64,QUJD\r\nEND:VCARD\r\n");
	p = vcard_find(card, "PHOTO");
	CHECK_INT(p->kind, VCARD_BINARY);
	CHECK(p->len == 3 && !memcmp(p->data, "ABC", 3));
	CHECK_STR(p->mediatype, "image/png");
	CHECK(card->warning &&
	      strstr(card->warning, "line 4: PHOTO: a data: URI under ENCODING=b"));
out:
	vcard_free(card);
}

TEST(reads_base64_with_breaks_blanks_and_no_padding_silently)
{
	struct vcard *card = NULL;
	const struct vcard_prop *p;

	PARSE1(card, "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:x\r\nPHOTO;ENCODING=b:QU JD\r\n  R A\r\n"
		     "END:VCARD\r\n");
	p = vcard_find(card, "PHOTO");
	CHECK(p->len == 4 && !memcmp(p->data, "ABCD", 4));
	CHECK(card->warning == NULL);
out:
	vcard_free(card);
}

TEST(drops_blanks_around_parameter_equals_with_a_warning)
{
	struct vcard *card = NULL;

	PARSE1(card,
	       "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:x\r\nTEL;TYPE = work:+1 555\r\nEND:VCARD\r\n");
	CHECK_STR(vcard_param(vcard_find(card, "TEL"), "TYPE")->vals[0], "work");
	CHECK(card->warning && strstr(card->warning, "line 4: TEL: blanks around '=' of TYPE"));
out:
	vcard_free(card);
}

TEST(lists_at_most_sixteen_repairs_and_counts_the_rest)
{
	struct buf b;
	struct vcard *card = NULL;
	struct vcard_error err;
	size_t lines = 0;

	buf_init(&b, 0);
	CHECK_INT(buf_printf(&b, "BEGIN:VCARD\r\nVERSION:3.0\r\n"), 0);
	for (int i = 0; i < 40; i++)
		CHECK_INT(buf_printf(&b, "# comment %d\r\n", i), 0);
	CHECK_INT(buf_printf(&b, "END:VCARD\r\n"), 0);
	CHECK_INT(vcard_parse_one(b.data, b.len, &card, &err), 0);
	CHECK_INT(card->nwarnings, 40);
	for (const char *s = card->warning; s; s = strchr(s + 1, '\n'))
		lines++;
	CHECK_INT(lines, 17);
	CHECK(strstr(card->warning, "more repairs in this card, not listed"));
out:
	vcard_free(card);
	buf_release(&b);
}

TEST(an_agent_in_30_is_text_even_when_it_reads_begin_vcard)
{
	struct vcard *card = NULL, *again = NULL;
	struct vcard_error err;
	struct buf b;

	buf_init(&b, 0);
	/* Only 2.1 carries the agent's card on the lines after it; in 3.0
	 * "BEGIN:VCARD" is the value, and writing it must read back the same. */
	PARSE1(card, "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:x\r\nAGENT:BEGIN:VCARD\r\nEND:VCARD\r\n");
	CHECK_STR(text_of(card, "AGENT"), "BEGIN:VCARD");
	CHECK_INT(vcard_write(card, VCARD_V30, &b), 0);
	CHECK_INT(vcard_parse_one(b.data, b.len, &again, &err), 0);
	CHECK_STR(text_of(again, "AGENT"), "BEGIN:VCARD");
	CHECK(again->warning == NULL);
out:
	vcard_free(again);
	vcard_free(card);
	buf_release(&b);
}

/* Whether card, written as 3.0 and as 4.0, is strict: no control character
 * but tab and the line ends, and read back with no repair. */
static int writes_strict(const struct vcard *card)
{
	static const enum vcard_version versions[] = {VCARD_V30, VCARD_V40};
	int ok = 1;

	for (size_t v = 0; v < 2 && ok; v++) {
		struct vcard_error err;
		struct vcard *again = NULL;
		struct buf b;

		buf_init(&b, 0);
		ok = vcard_write(card, versions[v], &b) == 0;
		for (size_t i = 0; ok && i < b.len; i++) {
			unsigned char ch = (unsigned char)b.data[i];

			ok = (ch >= 0x20 && ch != 0x7f) || ch == '\t' || ch == '\r' || ch == '\n';
		}
		ok = ok && vcard_parse_one(b.data, b.len, &again, &err) == 0 && !again->warning;
		vcard_free(again);
		buf_release(&b);
	}
	return ok;
}

TEST(removes_control_characters_from_a_value_with_a_warning)
{
	struct vcard *card = NULL;

	/* ESC in FN, BEL and DEL in NOTE; its tab stays. */
	PARSE1(card, "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:a\x1b"
		     "b\r\nNOTE:x\x07y\\nz\x7f\tq\r\nEND:VCARD\r\n");
	CHECK_STR(text_of(card, "FN"), "ab");
	CHECK_STR(text_of(card, "NOTE"), "xy\nz\tq");
	CHECK_STR(card->warning,
		  "line 3: FN: 1 control character removed from the value (the first U+001B)\n"
		  "line 4: NOTE: 2 control characters removed from the value (the first U+0007)");
	CHECK(writes_strict(card));
out:
	vcard_free(card);
}

TEST(removes_control_characters_that_quoted_printable_decodes_to)
{
	struct vcard *card = NULL;

	/* "=1B" is ESC only once decoded; "=0D=0A" and "=09" are a line
	 * break and a tab, and stay. */
	PARSE1(card, "BEGIN:VCARD\r\nVERSION:2.1\r\nFN:x\r\n"
		     "NOTE;ENCODING=QUOTED-PRINTABLE:a=1Bb=0D=0Ac=09d=7F\r\nEND:VCARD\r\n");
	CHECK_STR(text_of(card, "NOTE"), "ab\nc\td");
	CHECK_STR(card->warning, "line 4: NOTE: 2 control characters removed from the decoded "
				 "value (the first U+001B)");
	CHECK(writes_strict(card));
out:
	vcard_free(card);
}

TEST(removes_control_characters_from_a_21_agent_card_at_their_lines)
{
	struct vcard *card = NULL;

	/* Line 5 carries ESC in a nested value, line 6 a form feed in a
	 * nested name: all of it is the AGENT's text. */
	PARSE1(card, "BEGIN:VCARD\nVERSION:2.1\nFN:Boss\nAGENT:\nBEGIN:VCARD\nFN:A\x1bssistant\n"
		     "T\fEL:1\nEND:VCARD\nEND:VCARD\n");
	CHECK_STR(text_of(card, "AGENT"), "BEGIN:VCARD\nFN:Assistant\nTEL:1\nEND:VCARD\n");
	CHECK_STR(card->warning, "line 6: AGENT: 1 control character removed from the vCard it "
				 "carries (the first U+001B)\n"
				 "line 7: AGENT: 1 control character removed from the vCard it "
				 "carries (the first U+000C)");
	CHECK(writes_strict(card));
out:
	vcard_free(card);
}

TEST(removes_control_characters_before_a_data_uri_is_looked_for)
{
	struct vcard *card = NULL;
	const struct vcard_prop *p;

	/* Without its SUB and DC3 the value is a data: URI; read as one the
	 * first time, it is what every later read of our output sees. */
	PARSE1(card, "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:x\r\n"
		     "PHOTO:data:image/\x1apng;\x13"
		     "base64,QUJD\r\nEND:VCARD\r\n");
	p = vcard_find(card, "PHOTO");
	CHECK_INT(p->kind, VCARD_BINARY);
	CHECK(p->len == 3 && !memcmp(p->data, "ABC", 3));
	CHECK_STR(p->mediatype, "image/png");
	CHECK_STR(card->warning, "line 4: PHOTO: 2 control characters removed from the value "
				 "(the first U+001A)");
	CHECK(writes_strict(card));
out:
	vcard_free(card);
}

TEST(removes_control_characters_from_parameter_values_and_refuses_them_in_names)
{
	struct vcard_error err;
	struct vcard *card;
	const struct vcard_param *t;

	PARSE1(card, "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:x\r\nTEL;TYPE=ce\x01ll,\"wo\x1frk\":1\r\n"
		     "X-A;X-P=\"^\x1bn\";\x02:2\r\nEND:VCARD\r\n");
	t = vcard_param(vcard_find(card, "TEL"), "TYPE");
	CHECK_INT(t->nvals, 2);
	CHECK_STR(t->vals[0], "cell");
	CHECK_STR(t->vals[1], "work");
	/* Removed before RFC 6868 is undone: "^n" is a newline. */
	CHECK_STR(vcard_param(vcard_find(card, "X-A"), "X-P")->vals[0], "\n");
	CHECK(vcard_param(vcard_find(card, "X-A"), "TYPE") == NULL);
	CHECK_STR(card->warning,
		  "line 4: TEL: 2 control characters removed from parameter TYPE (the first "
		  "U+0001)\n"
		  "line 5: X-A: 1 control character removed from parameter X-P (the first "
		  "U+001B)\n"
		  "line 5: X-A: 1 control character removed from parameter TYPE (the first "
		  "U+0002)");
	CHECK(writes_strict(card));
	vcard_free(card);

	/* A CHARSET is read without them too (iconv would ignore them
	 * silently). */
	PARSE1(card, "BEGIN:VCARD\nVERSION:2.1\nFN;CHARSET=ISO-8859-1\x01:Andr\xe9\nEND:VCARD\n");
	CHECK_STR(text_of(card, "FN"), "Andr\xc3\xa9");
	CHECK_STR(card->warning, "line 3: FN: 1 control character removed from parameter CHARSET "
				 "(the first U+0001)");
	vcard_free(card);

	/* An ENCODING decides which lines the value spans before it is read:
	 * not guessed. Nor is a VERSION; its message shows no raw control. */
	CHECK_INT(parse_fails("BEGIN:VCARD\nVERSION:3.0\nFN;ENCODING=b\x01:x\nEND:VCARD\n", &err),
		  -EINVAL);
	CHECK_STR(err.msg, "line 3: FN: unknown ENCODING");
	CHECK_INT(parse_fails("BEGIN:VCARD\nVERSION:3.0\x1b\nFN:x\nEND:VCARD\n", &err), -EINVAL);
	CHECK_STR(err.msg, "line 2: unsupported VERSION \"3.0?\" (2.1, 3.0 and 4.0 are)");

	/* Names are no values: a control character there is refused. */
	CHECK_INT(parse_fails("BEGIN:VCARD\nVERSION:3.0\nF\x1bN:x\nEND:VCARD\n", &err), -EINVAL);
	CHECK_STR(err.msg, "line 3: invalid property name \"F?N\"");
	CHECK_INT(parse_fails("BEGIN:VCARD\nVERSION:3.0\ngr\x1b.FN:x\nEND:VCARD\n", &err), -EINVAL);
	CHECK_STR(err.msg, "line 3: invalid group in \"gr?.FN\"");
	CHECK_INT(parse_fails("BEGIN:VCARD\nVERSION:3.0\nTEL;TY\x1bPE=x:1\nEND:VCARD\n", &err),
		  -EINVAL);
	CHECK_STR(err.msg, "line 3: TEL: invalid character in parameter name");
out:;
}
