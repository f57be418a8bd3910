/*
 * vcard_fixtures — what the vCard unit tests share: JSON fixtures written
 * with single quotes, cards parsed from text, and written cards unfolded.
 */
#ifndef CONTACTFS_TEST_VCARD_FIXTURES_H
#define CONTACTFS_TEST_VCARD_FIXTURES_H

#include "vcard.h"

#include <cjson/cJSON.h>

/* text as JSON, with every ' read as " (no fixture needs an apostrophe).
 * NULL, saying where, when it does not parse. The caller frees it. */
cJSON *fixture_jq(const char *text);

/* The one card in text, or NULL, saying why, when it does not parse. The
 * caller frees it with vcard_free(). */
struct vcard *fixture_card_of(const char *text);

/* card written in version v, its folded lines joined: malloc'd, or NULL
 * when writing failed. */
char *fixture_unfolded(const struct vcard *card, enum vcard_version v);

#endif
