/*
 * The People API as read-only vCards (docs/design.md §10):
 * .contactfs/people/, the CACHE_PEOPLE_MAX people most relevant to the
 * mailbox, most relevant first. Graph's person is not a contact: it is turned
 * into a contact's JSON (the fields the two share) and rendered by the
 * mapping, then given what a contact cannot hold (other phone types, a
 * group's KIND).
 *
 * The list is kept in the meta table as the server's JSON ("people", with
 * "people_at" in ms), so the directory reads offline. Nothing here waits
 * for the network on the caller's thread (issue 21): a look at the
 * directory shows the stored list and, when it is older than the poll
 * interval, asks the sync thread to read it again. The sync thread also
 * reads it at its start when it was never read, so that a first look
 * normally finds it; after that, a cache whose people/ is never opened
 * never asks (the delta round does not). The rendered files are kept as a
 * snapshot shared by reference until the next answer replaces it.
 *
 * A file's name starts with the person's rank in the server's list, so a
 * person that cannot be shown (refused by the mapping, or a card over
 * PERSON_CARD_CAP) is left out, logged by id, and leaves a gap: the others
 * keep their names.
 */
#include "cache_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIELDS                                                                                    \
	"id,displayName,givenName,surname,birthday,personNotes,jobTitle,companyName,yomiCompany," \
	"department,officeLocation,profession,imAddress,scoredEmailAddresses,phones,websites,"    \
	"personType"

/* The most a person's card may take. */
#define PERSON_CARD_CAP ((size_t)1 << 20)
#define PERSON_CARD_CAP_TEXT "1 MiB"

/* ---- a person as a card ---------------------------------------------------------- */

static int copy_str(cJSON *to, const char *key, const cJSON *from, const char *from_key)
{
	const char *v = cache_jstr(from, from_key);

	if (!v || !*v)
		return 0;
	return cJSON_AddStringToObject(to, key, v) ? 0 : -ENOMEM;
}

static int add_to_list(cJSON *o, const char *key, cJSON *item)
{
	cJSON *list = cJSON_GetObjectItemCaseSensitive(o, key);

	if (!item)
		return -ENOMEM;
	if (!list && !(list = cJSON_AddArrayToObject(o, key))) {
		cJSON_Delete(item);
		return -ENOMEM;
	}
	cJSON_AddItemToArray(list, item);
	return 0;
}

/* The phones of a person: the types a contact has go in its fields, the
 * rest into extra as "type\tnumber" (a TEL each, later). */
static int person_phones(const cJSON *person, cJSON *contact, cJSON *extra)
{
	const cJSON *ph;
	int nbus = 0, nhome = 0, r = 0;

	cJSON_ArrayForEach(ph, cJSON_GetObjectItemCaseSensitive(person, "phones"))
	{
		const char *type = cache_jstr(ph, "type"), *num = cache_jstr(ph, "number");

		if (!num || !*num || r)
			continue;
		type = type ? type : "other";
		if (!strcmp(type, "business") && nbus < 2) {
			nbus++;
			r = add_to_list(contact, "businessPhones", cJSON_CreateString(num));
		} else if (!strcmp(type, "home") && nhome < 2) {
			nhome++;
			r = add_to_list(contact, "homePhones", cJSON_CreateString(num));
		} else if (!strcmp(type, "mobile") &&
			   !cJSON_GetObjectItemCaseSensitive(contact, "mobilePhone")) {
			r = cJSON_AddStringToObject(contact, "mobilePhone", num) ? 0 : -ENOMEM;
		} else {
			cJSON *pair = cJSON_CreateArray();

			if (pair) {
				cJSON_AddItemToArray(pair, cJSON_CreateString(type));
				cJSON_AddItemToArray(pair, cJSON_CreateString(num));
			}
			r = add_to_list(extra, "tel", pair);
		}
	}
	return r;
}

/* A Graph contact's JSON with what a person shares with contacts. */
static int person_contact(const cJSON *person, cJSON *contact, cJSON *extra)
{
	static const char *const same[][2] = {
		{"id", "id"},
		{"displayName", "displayName"},
		{"givenName", "givenName"},
		{"surname", "surname"},
		{"jobTitle", "jobTitle"},
		{"companyName", "companyName"},
		{"yomiCompanyName", "yomiCompany"},
		{"department", "department"},
		{"officeLocation", "officeLocation"},
		{"profession", "profession"},
		{"personalNotes", "personNotes"},
	};
	const char *bday = cache_jstr(person, "birthday"), *im = cache_jstr(person, "imAddress");
	const cJSON *x;
	int y, m, d, n = 0, r = 0;

	for (size_t i = 0; i < sizeof(same) / sizeof(same[0]) && !r; i++)
		r = copy_str(contact, same[i][0], person, same[i][1]);
	if (!r && bday && !vcard_date(bday, &y, &m, &d))
		r = copy_str(contact, "birthday", person, "birthday");
	cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(person, "scoredEmailAddresses"))
	{
		const char *a = cache_jstr(x, "address");
		cJSON *e;

		if (r || !a || !*a || n++ >= 3)
			continue;
		if (!(e = cJSON_CreateObject()) || !cJSON_AddStringToObject(e, "address", a)) {
			cJSON_Delete(e);
			r = -ENOMEM;
			continue;
		}
		r = add_to_list(contact, "emailAddresses", e);
	}
	if (!r && im && *im)
		r = add_to_list(contact, "imAddresses", cJSON_CreateString(im));
	x = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(person, "websites"), 0);
	if (!r)
		r = copy_str(contact, "businessHomePage", x, "address");
	return r ? r : person_phones(person, contact, extra);
}

/* Graph's phone types that contacts lack, as vCard TEL types: one value
 * each (TYPE=FAX,WORK), upper case, as the mapping writes a contact's. */
static const char *const *tel_types(const char *graph)
{
	static const struct {
		const char *graph;
		const char *types[3];
	} map[] = {
		{"businessFax", {"FAX", "WORK"}},
		{"homeFax", {"FAX", "HOME"}},
		{"otherFax", {"FAX"}},
		{"pager", {"PAGER"}},
		{"radio", {"X-RADIO"}},
		{"assistant", {"X-ASSISTANT"}},
		{"mobile", {"CELL"}},
		{"business", {"WORK", "VOICE"}},
		{"home", {"HOME", "VOICE"}},
	};
	static const char *const voice[] = {"VOICE", NULL};

	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (!strcmp(graph, map[i].graph))
			return map[i].types;
	return voice;
}

/* What the mapping could not carry: more phones, and a group's kind. */
static int person_extra(struct vcard *card, const cJSON *person, const cJSON *extra,
			enum vcard_version version)
{
	const char *cls =
		cache_jstr(cJSON_GetObjectItemCaseSensitive(person, "personType"), "class");
	struct vcard_prop *p;
	const cJSON *t;
	int r = 0;

	cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(extra, "tel"))
	{
		const char *type = cJSON_GetStringValue(cJSON_GetArrayItem(t, 0));
		const char *num = cJSON_GetStringValue(cJSON_GetArrayItem(t, 1));

		if (r || !type || !num)
			continue;
		if (!(p = vcard_add(card, NULL, "TEL")))
			return -ENOMEM;
		r = vcard_set_text(card, p, num);
		for (const char *const *v = tel_types(type); !r && *v; v++)
			r = vcard_add_param(card, p, "TYPE", *v);
	}
	if (!r && cls && !strcmp(cls, "Group")) {
		if (!(p = vcard_add(card, NULL,
				    version == VCARD_V40 ? "KIND" : "X-ADDRESSBOOKSERVER-KIND")))
			return -ENOMEM;
		r = vcard_set_text(card, p, "group");
	}
	return r;
}

/* Person number rank (0-based) into one file of the snapshot. -EINVAL
 * for a person the mapping refuses, -E2BIG for one whose card would pass
 * PERSON_CARD_CAP: both logged here, and left out by the caller. */
static int render_person(const cJSON *person, size_t rank, enum vcard_version version,
			 struct cache_person *out)
{
	cJSON *contact = cJSON_CreateObject(), *extra = cJSON_CreateObject();
	struct vcard *card = NULL;
	struct vcard_error e;
	struct buf b;
	char name[252];
	int r;

	buf_init(&b, PERSON_CARD_CAP);
	r = contact && extra ? person_contact(person, contact, extra) : -ENOMEM;
	if (!r && (r = vcard_from_graph(contact, NULL, 0, NULL, &card, &e)) == -EINVAL)
		log_warn("cache: person \"%s\" cannot be shown: %s",
			 cache_jstr(person, "displayName") ?: "?", e.msg);
	if (!r)
		r = person_extra(card, person, extra, version);
	if (!r && (r = vcard_write(card, version, &b)) == -E2BIG)
		log_warn("cache: person %s cannot be shown: its card is over %s",
			 cache_jstr(person, "id") ?: "?", PERSON_CARD_CAP_TEXT);
	if (!r) {
		cache_contact_name(contact, name, sizeof(name));
		snprintf(out->name, sizeof(out->name), "%03zu %s", rank + 1, name);
		if (!(out->card = buf_detach(&b, &out->len)))
			r = -ENOMEM;
	}
	buf_release(&b);
	vcard_free(card);
	cJSON_Delete(contact);
	cJSON_Delete(extra);
	return r;
}

/* ---- the snapshot ------------------------------------------------------------------- */

static void snapshot_free(struct cache_people *p)
{
	for (size_t i = 0; p && i < p->n; i++)
		free((char *)p->v[i].card);
	if (p)
		free(p->v);
	free(p);
}

void cache_people_put(struct cache *c, struct cache_people *p)
{
	int last;

	if (!p)
		return;
	pthread_mutex_lock(&c->lock);
	last = --p->refs == 0;
	pthread_mutex_unlock(&c->lock);
	if (last)
		snapshot_free(p);
}

/* The files of the stored list. */
static int snapshot_make(struct cache *c, struct cache_people **out)
{
	enum vcard_version version = c->cfg.version ? c->cfg.version : VCARD_V30;
	struct cache_people *p = calloc(1, sizeof(*p));
	char *text, *at;
	cJSON *list;
	const cJSON *x;
	size_t rank = 0;
	int r = 0;

	if (!p)
		return -ENOMEM;
	pthread_mutex_lock(&c->api_lock);
	text = cache_db_meta_get(c->db, "people");
	at = cache_db_meta_get(c->db, "people_at");
	pthread_mutex_unlock(&c->api_lock);
	list = text ? cJSON_Parse(text) : NULL;
	p->mtime_ns = at ? strtoll(at, NULL, 10) * 1000000 : 0;
	free(text);
	free(at);
	if (cJSON_GetArraySize(list) > 0 &&
	    !(p->v = calloc((size_t)cJSON_GetArraySize(list), sizeof(*p->v))))
		r = -ENOMEM;
	cJSON_ArrayForEach(x, list)
	{
		if (r || rank >= CACHE_PEOPLE_MAX)
			break;
		r = render_person(x, rank++, version, &p->v[p->n]);
		if (r == -EINVAL || r == -E2BIG)
			r = 0; /* left out, logged; the next keeps its own rank */
		else if (!r)
			p->n++;
	}
	cJSON_Delete(list);
	if (r) {
		snapshot_free(p);
		return r;
	}
	*out = p;
	return 0;
}

/* ---- asking the server (the sync thread) ------------------------------------------ */

int cache_people_sync(struct cache *c, enum list_read how)
{
	int64_t max_age = (int64_t)(c->cfg.poll_s > 0 ? c->cfg.poll_s : 300) * 1000;
	struct cache_people *old;
	cJSON *answer = NULL;
	char *at, *text, when[32];
	int r;

	if (!c->g || how == LIST_WRITTEN)
		return 0;
	at = cache_db_meta_get(c->sdb, "people_at");
	r = at && (how == LIST_IF_NEVER || cache_now_ms() - strtoll(at, NULL, 10) < max_age);
	free(at);
	if (r)
		return 0;
	r = graph_get_json(c->g, "/people?$top=" CACHE_PEOPLE_MAX_TEXT "&$select=" FIELDS, NULL, 0,
			   &answer);
	if (r == -EACCES && c->cfg.mailbox && how == LIST_IF_NEVER) {
		/* Read ahead of any look: the refusal is told when someone
		 * looks (below), not in every mount of a shared mailbox. */
		log_info("cache: the people of %s cannot be read without People.Read.All",
			 c->cfg.mailbox);
		return 0;
	} else if (r == -EACCES && c->cfg.mailbox) {
		/* Another mailbox's people need People.Read.All, which needs an
		 * administrator's consent (user-list-people.md) and which we do
		 * not ask for: an empty list, said once a poll interval. */
		cache_error(
			c->sdb, "people",
			"the people of %s cannot be read: that needs the permission "
			"People.Read.All, which an administrator must grant; people/ stays empty",
			c->cfg.mailbox);
		text = strdup("[]");
	} else if (r) {
		if (cache_offline_errno(r))
			return -EHOSTDOWN;
		log_warn("cache: reading the people list: %s", strerror(-r));
		return r;
	} else {
		text = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(answer, "value"));
		cJSON_Delete(answer);
	}
	if (!text)
		return -ENOMEM;
	snprintf(when, sizeof(when), "%lld", (long long)cache_now_ms());
	if (!(r = cache_db_begin(c->sdb))) {
		if ((r = cache_db_meta_set(c->sdb, "people", text)) ||
		    (r = cache_db_meta_set(c->sdb, "people_at", when)))
			cache_db_rollback(c->sdb);
		else
			r = cache_db_commit(c->sdb);
	}
	free(text);
	if (r) {
		log_warn("cache: keeping the people list: %s", strerror(-r));
		return r;
	}
	/* The next look makes the files of the new list. */
	pthread_mutex_lock(&c->lock);
	old = c->people;
	c->people = NULL;
	c->people_gen++;
	pthread_mutex_unlock(&c->lock);
	cache_people_put(c, old);
	return 0;
}

int cache_people_get(struct cache *c, int ask, struct cache_people **out)
{
	int64_t max_age = (int64_t)(c->cfg.poll_s > 0 ? c->cfg.poll_s : 300) * 1000;
	struct cache_people *p, *old = NULL;
	unsigned gen;
	int r;

	*out = NULL;
	pthread_mutex_lock(&c->lock);
	if ((p = c->people))
		p->refs++;
	gen = c->people_gen;
	pthread_mutex_unlock(&c->lock);
	if (!p) {
		if ((r = snapshot_make(c, &p)))
			return r;
		pthread_mutex_lock(&c->lock);
		if (c->people) {
			/* Made meanwhile by another caller: take that one. */
			old = p;
			p = c->people;
		} else if (c->people_gen == gen) {
			c->people = p;
			p->refs = 1; /* the cache's own */
		} /* else a newer list came meanwhile: this one serves this caller only */
		p->refs++;
		pthread_mutex_unlock(&c->lock);
		snapshot_free(old);
	}
	/* The stored list is shown; the sync thread reads the server's. */
	if (ask && (!p->mtime_ns || cache_now_ms() - p->mtime_ns / 1000000 >= max_age))
		cache_ask_list(c, CACHE_LIST_PEOPLE);
	*out = p;
	return 0;
}
