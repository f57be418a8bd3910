/* What the vCard unit tests share (vcard_fixtures.h). */
#include "vcard_fixtures.h"

#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

cJSON *fixture_jq(const char *text)
{
	char *s = strdup(text);
	cJSON *j;

	if (!s)
		return NULL;
	for (char *p = s; *p; p++)
		if (*p == '\'')
			*p = '"';
	j = cJSON_Parse(s);
	if (!j)
		fprintf(stderr, "bad JSON fixture near: %.40s\n", cJSON_GetErrorPtr());
	free(s);
	return j;
}

struct vcard *fixture_card_of(const char *text)
{
	struct vcard_error err;
	struct vcard *card;

	if (vcard_parse_one(text, strlen(text), &card, &err)) {
		fprintf(stderr, "fixture does not parse: %s\n", err.msg);
		return NULL;
	}
	return card;
}

char *fixture_unfolded(const struct vcard *card, enum vcard_version v)
{
	struct buf b;
	char *s, *w;

	buf_init(&b, 0);
	if (vcard_write(card, v, &b)) {
		buf_release(&b);
		return NULL;
	}
	s = buf_detach(&b, NULL);
	w = s;
	for (const char *p = s; p && *p; p++) {
		if (p[0] == '\r' && p[1] == '\n' && (p[2] == ' ' || p[2] == '\t')) {
			p += 2;
			continue;
		}
		*w++ = *p;
	}
	if (w)
		*w = '\0';
	return s;
}
