/* File and directory names from names on the server (docs/design.md §1). */
#include "cache.h"

#include <stdio.h>
#include <string.h>

/* Length of the valid UTF-8 character at s (1..4), or 0. */
static size_t utf8_len(const unsigned char *s)
{
	size_t n;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		n = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		n = 4;
	else
		return 0;
	for (size_t i = 1; i < n; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	return n;
}

size_t cache_safe_name(const char *name, const char *suffix, char *out, size_t size)
{
	size_t slen = strlen(suffix), max = size - 1 < 255 ? size - 1 : 255, k = 0;
	const unsigned char *s = (const unsigned char *)(name ? name : "");

	if (max <= slen)
		return 0;
	max -= slen;
	/* No leading dot (hidden, and "." and ".."), no leading blanks. */
	while (*s == '.' || *s == ' ')
		s++;
	while (*s) {
		size_t n = utf8_len(s);
		const char *rep = NULL;

		if (n == 0 || *s < 0x20 || *s == 0x7f || *s == '/')
			rep = "_";
		if (rep) {
			if (k + 1 > max)
				break;
			out[k++] = '_';
			s += n ? n : 1;
			continue;
		}
		if (k + n > max)
			break; /* cut on a character boundary */
		memcpy(out + k, s, n);
		k += n;
		s += n;
	}
	while (k && out[k - 1] == ' ')
		k--;
	if (k == 0)
		return 0;
	memcpy(out + k, suffix, slen + 1);
	return k + slen;
}

int cache_numbered_name(const char *base, const char *suffix, unsigned n, char *out, size_t size)
{
	char tail[32];
	size_t tl, bl = strlen(base), sl = strlen(suffix);

	tl = (size_t)snprintf(tail, sizeof(tail), " (%u)", n);
	if (size < 2 || tl + sl + 1 >= size || tl + sl >= 255)
		return -1;
	/* Make room for " (n)" within 255 bytes, cutting on a boundary. */
	while (bl && (bl + tl + sl > 255 || bl + tl + sl + 1 > size))
		do
			bl--;
		while (bl && ((unsigned char)base[bl] & 0xc0) == 0x80);
	memcpy(out, base, bl);
	memcpy(out + bl, tail, tl);
	memcpy(out + bl + tl, suffix, sl + 1);
	return 0;
}

static const char *json_text(const cJSON *obj, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

	return cJSON_IsString(v) && v->valuestring[0] ? v->valuestring : NULL;
}

size_t cache_contact_name(const cJSON *contact, char *out, size_t size)
{
	const cJSON *emails = cJSON_GetObjectItemCaseSensitive(contact, "emailAddresses");
	const char *candidates[3] = {json_text(contact, "displayName"), NULL,
				     json_text(contact, "companyName")};
	size_t n;

	if (cJSON_IsArray(emails))
		candidates[1] = json_text(cJSON_GetArrayItem(emails, 0), "address");
	for (size_t i = 0; i < 3; i++)
		if (candidates[i] && (n = cache_safe_name(candidates[i], ".vcf", out, size)))
			return n;
	return cache_safe_name("Unnamed", ".vcf", out, size);
}
