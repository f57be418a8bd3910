/*
 * The follow-up flag's property (vcard/followup.c), as docs/mapping.md
 * ("Follow-up flag") specifies it: Graph's flag to the card and back with
 * the same strings, a lenient reader, what is refused before sending, the
 * PATCH body, and that the rest of the mapping keeps the property as any
 * unknown one when the flag is not mapped.
 *
 * JSON fixtures use single quotes; fixture_jq() makes them double.
 */
#include "check.h"
#include "util.h"
#include "vcard.h"
#include "vcard_fixtures.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *jstr(const cJSON *o, const char *key)
{
	return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, key));
}

/* Member key of flag's date member. */
static const char *date_part(const cJSON *flag, const char *member, const char *key)
{
	return jstr(cJSON_GetObjectItemCaseSensitive(flag, member), key);
}

static const char *const FLAG =
	"{'flagStatus':'flagged',"
	"'startDateTime':{'dateTime':'2026-05-01T09:00:00.0000000','timeZone':'W. Europe Standard "
	"Time'},"
	"'dueDateTime':{'dateTime':'2026-05-03T17:30:00.0000000','timeZone':'W. Europe Standard "
	"Time'},"
	"'completedDateTime':null}";

TEST(followup_graph_flag_is_one_property_and_reads_back_the_same_strings)
{
	static const char *const line =
		"X-CONTACTFS-FOLLOWUP;START=\"2026-05-01T09:00:00.0000000 W. Europe Standard "
		"Time\";DUE=\"2026-05-03T17:30:00.0000000 W. Europe Standard Time\":flagged\r\n";
	enum vcard_version versions[] = {VCARD_V30, VCARD_V40};
	cJSON *flag = fixture_jq(FLAG), *back = NULL;
	struct vcard_error err;

	CHECK(flag);
	for (size_t i = 0; i < 2; i++) {
		struct vcard *card = fixture_card_of(
				     "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Jane\r\nEND:VCARD\r\n"),
			     *again;
		char *text;

		CHECK(card);
		CHECK_INT(vcard_followup_add(card, flag, &err), 0);
		text = fixture_unfolded(card, versions[i]);
		CHECK(text && strstr(text, line));
		again = fixture_card_of(text);
		free(text);
		CHECK(again);
		CHECK_INT(vcard_followup_read(again, &back, &err), 0);
		CHECK_STR(jstr(back, "flagStatus"), "flagged");
		CHECK_STR(date_part(back, "startDateTime", "dateTime"),
			  "2026-05-01T09:00:00.0000000");
		CHECK_STR(date_part(back, "startDateTime", "timeZone"), "W. Europe Standard Time");
		CHECK_STR(date_part(back, "dueDateTime", "dateTime"),
			  "2026-05-03T17:30:00.0000000");
		CHECK_STR(date_part(back, "dueDateTime", "timeZone"), "W. Europe Standard Time");
		CHECK(!cJSON_GetObjectItemCaseSensitive(back, "completedDateTime"));
		CHECK(vcard_followup_same(flag, back));
		cJSON_Delete(back);
		back = NULL;
		vcard_free(card);
		vcard_free(again);
	}
out:
	cJSON_Delete(flag);
}

TEST(followup_complete_with_its_completion_date_and_an_odd_time_zone_survive)
{
	cJSON *flag = fixture_jq(
		"{'flagStatus':'complete','startDateTime':{'dateTime':"
		"'2026-01-02T08:00:00.0000000','timeZone':'UTC'},'completedDateTime':{"
		"'dateTime':'2026-01-05T12:00:00.0000000','timeZone':'Pacific/Chatham, \\'x\\''}}");
	struct vcard *card = fixture_card_of("BEGIN:VCARD\r\nVERSION:4.0\r\nFN:J\r\nEND:VCARD\r\n"),
		     *again = NULL;
	struct vcard_error err;
	cJSON *back = NULL;
	char *text;

	CHECK(flag && card);
	CHECK_INT(vcard_followup_add(card, flag, &err), 0);
	text = fixture_unfolded(card, VCARD_V40);
	CHECK(text);
	again = fixture_card_of(text);
	free(text);
	CHECK(again);
	CHECK_INT(vcard_followup_read(again, &back, &err), 0);
	CHECK_STR(jstr(back, "flagStatus"), "complete");
	CHECK_STR(date_part(back, "completedDateTime", "timeZone"), "Pacific/Chatham, \"x\"");
	CHECK_STR(date_part(back, "completedDateTime", "dateTime"), "2026-01-05T12:00:00.0000000");
	CHECK(vcard_followup_same(flag, back));
out:
	cJSON_Delete(back);
	cJSON_Delete(flag);
	vcard_free(card);
	vcard_free(again);
}

TEST(followup_not_flagged_is_no_property_unless_it_carries_a_date)
{
	struct vcard *card = fixture_card_of("BEGIN:VCARD\r\nVERSION:3.0\r\nFN:J\r\nEND:VCARD\r\n");
	cJSON *none =
		fixture_jq("{'flagStatus':'notFlagged','startDateTime':null,'dueDateTime':null}");
	cJSON *dated = fixture_jq("{'flagStatus':'notFlagged','startDateTime':{'dateTime':"
				  "'2026-05-01T09:00:00.0000000','timeZone':'UTC'}}");
	cJSON *null = cJSON_CreateNull();
	struct vcard_error err;

	CHECK(card && none && dated && null);
	CHECK_INT(vcard_followup_add(card, NULL, &err), 0);
	CHECK_INT(vcard_followup_add(card, null, &err), 0);
	CHECK_INT(vcard_followup_add(card, none, &err), 0);
	CHECK(!vcard_find(card, VCARD_FOLLOWUP_PROP));
	CHECK_INT(vcard_followup_add(card, dated, &err), 0);
	CHECK(vcard_find(card, VCARD_FOLLOWUP_PROP));
	CHECK(vcard_followup_same(none, NULL));
	CHECK(!vcard_followup_same(dated, NULL));
out:
	cJSON_Delete(none);
	cJSON_Delete(dated);
	cJSON_Delete(null);
	vcard_free(card);
}

TEST(followup_reader_takes_parameters_in_any_order_and_case)
{
	struct vcard *card = fixture_card_of(
		"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:J\r\n"
		"item1.x-contactfs-followup;x-other=1;due=\"2026-05-03T17:00 UTC\";"
		"Start=\"2026-05-01T09:00 Pacific Standard Time\":FLAGGED \r\nEND:VCARD\r\n");
	struct vcard *bare = fixture_card_of("BEGIN:VCARD\r\nVERSION:3.0\r\nFN:J\r\nEND:VCARD\r\n");
	struct vcard_error err;
	cJSON *flag = NULL;

	CHECK(card && bare);
	CHECK_INT(vcard_followup_read(card, &flag, &err), 0);
	CHECK_STR(jstr(flag, "flagStatus"), "flagged");
	CHECK_STR(date_part(flag, "startDateTime", "dateTime"), "2026-05-01T09:00");
	CHECK_STR(date_part(flag, "startDateTime", "timeZone"), "Pacific Standard Time");
	CHECK_STR(date_part(flag, "dueDateTime", "dateTime"), "2026-05-03T17:00");
	CHECK_STR(date_part(flag, "dueDateTime", "timeZone"), "UTC");
	cJSON_Delete(flag);
	CHECK_INT(vcard_followup_read(bare, &flag, &err), 0);
	CHECK_STR(jstr(flag, "flagStatus"), "notFlagged");
	CHECK_INT(cJSON_GetArraySize(flag), 1);
	cJSON_Delete(flag);
	vcard_followup_remove(card);
	CHECK(!vcard_find(card, VCARD_FOLLOWUP_PROP));
	CHECK(vcard_find(card, "FN"));
out:
	vcard_free(card);
	vcard_free(bare);
}

TEST(followup_reader_refuses_two_flags_an_empty_status_and_an_empty_date)
{
	static const char *const bad[] = {
		"X-CONTACTFS-FOLLOWUP:flagged\r\nX-CONTACTFS-FOLLOWUP:complete\r\n",
		"X-CONTACTFS-FOLLOWUP;START=\"2026-05-01T09:00 UTC\":\r\n",
		"X-CONTACTFS-FOLLOWUP;START=:flagged\r\n",
		"X-CONTACTFS-FOLLOWUP:flagged;complete\r\n",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char text[512];
		struct vcard *card;
		struct vcard_error err;
		cJSON *flag = NULL;

		snprintf(text, sizeof(text),
			 "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:J\r\n%sEND:VCARD\r\n", bad[i]);
		card = fixture_card_of(text);
		CHECK(card);
		CHECK_INT(vcard_followup_read(card, &flag, &err), -EINVAL);
		CHECK(flag == NULL);
		CHECK(strstr(err.msg, "line 4: X-CONTACTFS-FOLLOWUP") == err.msg ||
		      strstr(err.msg, "line 5: X-CONTACTFS-FOLLOWUP") == err.msg);
		vcard_free(card);
	}
out:;
}

TEST(followup_same_compares_times_as_graph_writes_them)
{
	cJSON *a =
		fixture_jq("{'flagStatus':'flagged','startDateTime':{'dateTime':'2026-05-01T09:00',"
			   "'timeZone':'UTC'}}");
	cJSON *b =
		fixture_jq("{'flagStatus':'flagged','startDateTime':{'dateTime':"
			   "'2026-05-01T09:00:00.0000000','timeZone':'UTC'},'dueDateTime':null}");
	cJSON *c = fixture_jq("{'flagStatus':'flagged','startDateTime':{'dateTime':"
			      "'2026-05-01T09:00:00.0000000','timeZone':'Romance Standard Time'}}");
	cJSON *d = fixture_jq("{'flagStatus':'complete','startDateTime':{'dateTime':"
			      "'2026-05-01T09:00:00','timeZone':'UTC'}}");
	cJSON *e = fixture_jq("{'flagStatus':'flagged','startDateTime':{'dateTime':"
			      "'2026-05-01T09:00:01','timeZone':'UTC'}}");

	CHECK(a && b && c && d && e);
	CHECK(vcard_followup_same(a, b));
	CHECK(vcard_followup_same(b, a));
	CHECK(!vcard_followup_same(a, c));
	CHECK(!vcard_followup_same(a, d));
	CHECK(!vcard_followup_same(a, e));
	CHECK(!vcard_followup_same(a, NULL));
out:
	cJSON_Delete(a);
	cJSON_Delete(b);
	cJSON_Delete(c);
	cJSON_Delete(d);
	cJSON_Delete(e);
}

TEST(followup_check_refuses_what_graph_would_due_without_start_and_no_time_zone)
{
	static const struct {
		const char *json, *why;
	} cases[] = {
		{"{'flagStatus':'flagged','dueDateTime':{'dateTime':'2026-05-03T17:00',"
		 "'timeZone':'UTC'}}",
		 "DUE without START"},
		{"{'flagStatus':'flagged','startDateTime':{'dateTime':'2026-05-03T17:00'}}",
		 "START has no time zone"},
		{"{'flagStatus':'flaged'}", "'flaged' is not a flag status"},
	};
	struct vcard_error err;
	cJSON *ok = fixture_jq(FLAG), *off = fixture_jq("{'flagStatus':'notFlagged'}");

	CHECK(ok && off);
	CHECK_INT(vcard_followup_check(ok, &err), 0);
	CHECK_INT(vcard_followup_check(off, &err), 0);
	CHECK_INT(vcard_followup_check(NULL, &err), 0);
	cJSON_Delete(ok);
	cJSON_Delete(off);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cJSON *f = fixture_jq(cases[i].json);

		CHECK(f);
		CHECK_INT(vcard_followup_check(f, &err), -EINVAL);
		if (!strstr(err.msg, cases[i].why))
			fprintf(stderr, "message: %s\n", err.msg);
		CHECK(strstr(err.msg, cases[i].why));
		cJSON_Delete(f);
	}
out:;
}

TEST(followup_patch_names_every_date_null_where_there_is_none)
{
	cJSON *flag = fixture_jq(FLAG), *body = vcard_followup_patch(flag), *clear = NULL;
	char *text = NULL;

	CHECK(body);
	text = cJSON_PrintUnformatted(body);
	CHECK_STR(text,
		  "{\"flag\":{\"flagStatus\":\"flagged\",\"startDateTime\":{\"dateTime\":"
		  "\"2026-05-01T09:00:00.0000000\",\"timeZone\":\"W. Europe Standard Time\"},"
		  "\"dueDateTime\":{\"dateTime\":\"2026-05-03T17:30:00.0000000\",\"timeZone\":"
		  "\"W. Europe Standard Time\"},\"completedDateTime\":null}}");
	free(text);
	text = NULL;
	cJSON_Delete(body);
	clear = vcard_followup_patch(NULL);
	text = cJSON_PrintUnformatted(clear);
	CHECK_STR(text, "{\"flag\":{\"flagStatus\":\"notFlagged\",\"startDateTime\":null,"
			"\"dueDateTime\":null,\"completedDateTime\":null}}");
out:
	free(text);
	cJSON_Delete(clear);
	cJSON_Delete(flag);
}

TEST(followup_unmapped_the_property_travels_in_the_extension_like_any_unknown_one)
{
	struct vcard *card = fixture_card_of(
		"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Jane Doe\r\nN:Doe;Jane;;;\r\nUID:u-1\r\n"
		"X-CONTACTFS-FOLLOWUP;START=\"2026-05-01T09:00:00 UTC\":flagged\r\nEND:VCARD\r\n");
	struct vcard *back = NULL;
	struct vcard_error err;
	cJSON *json = NULL, *flag = NULL;
	const cJSON *ext;

	CHECK(card);
	CHECK_INT(vcard_to_graph(card, &json, &err), 0);
	CHECK(!cJSON_GetObjectItemCaseSensitive(json, "flag"));
	ext = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(json, "extensions"), 0);
	CHECK(jstr(ext, "extra") && strstr(jstr(ext, "extra"), "X-CONTACTFS-FOLLOWUP;START="));
	cJSON_AddStringToObject(json, "id", "AAMk-1");
	CHECK_INT(vcard_from_graph(json, NULL, 0, NULL, &back, &err), 0);
	CHECK_INT(vcard_followup_read(back, &flag, &err), 0);
	CHECK_STR(jstr(flag, "flagStatus"), "flagged");
	CHECK_STR(date_part(flag, "startDateTime", "dateTime"), "2026-05-01T09:00:00");
out:
	cJSON_Delete(flag);
	cJSON_Delete(json);
	vcard_free(card);
	vcard_free(back);
}
