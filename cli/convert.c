/*
 * contactfs convert: vCard to Graph JSON and back, through the same vcard/
 * code the filesystem uses.
 *
 * Graph keeps a contact's photo apart from the contact (PUT photo/$value),
 * so a create body cannot carry it. To let `convert --to json | convert --to
 * vcard` keep the photo, the JSON carries it as the instance annotation
 * "@contactfs.photo" (a data: URI), which Graph ignores and --to vcard reads.
 */
#include "cli_int.h"

#include "util.h"
#include "vcard.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONVERT_MAX_INPUT ((size_t)256 << 20)
#define PHOTO_ANNOTATION "@contactfs.photo"

struct convert_opts {
	int to_json;
	enum vcard_version version;
	const char *file; /* NULL: standard input */
};

static int read_all(int fd, struct buf *b)
{
	char chunk[65536];

	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));
		int r;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return 0;
		if ((r = buf_add(b, chunk, (size_t)n)))
			return r;
	}
}

static const char *input_name(const struct convert_opts *o)
{
	return o->file ? o->file : "<stdin>";
}

/* Attach the card's photo to the JSON body as a data: URI annotation. */
static int annotate_photo(const struct vcard *card, cJSON *body)
{
	const struct vcard_prop *photo = vcard_photo(card);
	struct buf b;
	int r;

	if (!photo)
		return 0;
	buf_init(&b, 0);
	r = buf_printf(&b, "data:%s;base64,", photo->mediatype ? photo->mediatype : "image/jpeg");
	if (!r)
		r = vcard_base64_encode(&b, photo->data, photo->len);
	if (!r && !cJSON_AddStringToObject(body, PHOTO_ANNOTATION, b.data))
		r = -ENOMEM;
	buf_release(&b);
	return r;
}

/* Each repair the reader made in card, one "warning:" line on stderr, as
 * "contactfs: warning: FILE: line N: what". */
static void print_repairs(const struct convert_opts *o, const struct vcard *card)
{
	const char *s = card->warning;

	while (s && *s) {
		const char *nl = strchr(s, '\n');
		int len = nl ? (int)(nl - s) : (int)strlen(s);

		fprintf(stderr, "contactfs: warning: %s: %.*s\n", input_name(o), len, s);
		s = nl ? nl + 1 : NULL;
	}
}

static int to_json(const struct convert_opts *o, const struct buf *in)
{
	struct vcard_error err = {0};
	struct vcard **cards = NULL;
	cJSON *out = NULL, *body = NULL;
	char *text = NULL;
	size_t n = 0;
	int r, rc = EXIT_DATAERR;

	r = vcard_parse(in->data, in->len, &cards, &n, &err);
	if (r == -EINVAL) {
		fprintf(stderr, "contactfs: %s: %s\n", input_name(o), err.msg);
		goto out;
	}
	rc = EXIT_SOFTWARE;
	if (r)
		goto out;
	if (n > 1 && !(out = cJSON_CreateArray()))
		goto out;
	for (size_t i = 0; i < n; i++) {
		print_repairs(o, cards[i]);
		r = vcard_to_graph(cards[i], &body, &err);
		if (r == -EINVAL) {
			fprintf(stderr, "contactfs: %s: card at line %u: %s\n", input_name(o),
				cards[i]->line, err.msg);
			rc = EXIT_DATAERR;
			goto out;
		}
		if (r || annotate_photo(cards[i], body))
			goto out;
		if (n == 1)
			out = body;
		else
			cJSON_AddItemToArray(out, body);
		body = NULL;
	}
	text = cJSON_Print(out);
	if (!text)
		goto out;
	rc = EXIT_IOERR;
	if (printf("%s\n", text) < 0 || fflush(stdout))
		goto out;
	rc = 0;
out:
	if (rc == EXIT_SOFTWARE)
		fprintf(stderr, "contactfs: %s: out of memory\n", input_name(o));
	free(text);
	cJSON_Delete(body);
	cJSON_Delete(out);
	vcard_free_all(cards, n);
	return rc;
}

static unsigned json_error_line(const struct buf *in, const char *at)
{
	unsigned line = 1;

	if (!at || at < in->data || at > in->data + in->len)
		return 0;
	for (const char *p = in->data; p < at; p++)
		line += *p == '\n';
	return line;
}

/* The photo annotation of a contact, decoded: 1 if present, 0 if not, -1 if
 * malformed. */
static int photo_from_annotation(const cJSON *contact, struct buf *bytes, char *type, size_t tsize)
{
	const cJSON *a = cJSON_GetObjectItemCaseSensitive(contact, PHOTO_ANNOTATION);
	const char *s, *comma;

	if (!a)
		return 0;
	if (!cJSON_IsString(a) || strncmp(a->valuestring, "data:", 5) != 0)
		return -1;
	s = a->valuestring + 5;
	comma = strstr(s, ";base64,");
	if (!comma || (size_t)(comma - s) >= tsize)
		return -1;
	memcpy(type, s, (size_t)(comma - s));
	type[comma - s] = '\0';
	s = comma + 8;
	return vcard_base64_decode(bytes, s, strlen(s), NULL) ? -1 : 1;
}

static int write_contact(const struct convert_opts *o, const cJSON *contact, size_t index,
			 struct buf *out)
{
	struct vcard_error err = {0};
	struct vcard *card = NULL;
	struct buf photo;
	char type[64] = "";
	int has_photo, r, rc = EXIT_DATAERR;

	buf_init(&photo, 0);
	has_photo = photo_from_annotation(contact, &photo, type, sizeof(type));
	if (has_photo < 0) {
		fprintf(stderr, "contactfs: %s: contact %zu: %s is not a base64 data: URI\n",
			input_name(o), index + 1, PHOTO_ANNOTATION);
		goto out;
	}
	r = vcard_from_graph(contact, has_photo ? photo.data : NULL, has_photo ? photo.len : 0,
			     has_photo ? type : NULL, &card, &err);
	if (r == -EINVAL) {
		fprintf(stderr, "contactfs: %s: contact %zu: %s\n", input_name(o), index + 1,
			err.msg);
		goto out;
	}
	rc = EXIT_SOFTWARE;
	if (r || vcard_write(card, o->version, out))
		goto out;
	rc = 0;
out:
	if (rc == EXIT_SOFTWARE)
		fprintf(stderr, "contactfs: %s: out of memory\n", input_name(o));
	buf_release(&photo);
	vcard_free(card);
	return rc;
}

static int to_vcard(const struct convert_opts *o, const struct buf *in)
{
	cJSON *json = cJSON_ParseWithLength(in->data, in->len);
	struct buf out;
	int rc = EXIT_DATAERR;

	buf_init(&out, 0);
	if (!json) {
		unsigned line = json_error_line(in, cJSON_GetErrorPtr());

		if (line)
			fprintf(stderr, "contactfs: %s: line %u: invalid JSON\n", input_name(o),
				line);
		else
			fprintf(stderr, "contactfs: %s: invalid JSON\n", input_name(o));
		goto out;
	}
	if (cJSON_IsObject(json)) {
		if ((rc = write_contact(o, json, 0, &out)))
			goto out;
	} else if (cJSON_IsArray(json) && cJSON_GetArraySize(json) > 0) {
		size_t i = 0;
		const cJSON *c;

		cJSON_ArrayForEach(c, json)
		{
			if (!cJSON_IsObject(c)) {
				fprintf(stderr,
					"contactfs: %s: element %zu is not a contact object\n",
					input_name(o), i + 1);
				rc = EXIT_DATAERR;
				goto out;
			}
			if ((rc = write_contact(o, c, i++, &out)))
				goto out;
		}
	} else {
		fprintf(stderr, "contactfs: %s: expected a contact object or a non-empty array\n",
			input_name(o));
		goto out;
	}
	rc = EXIT_IOERR;
	if (fwrite(out.data, 1, out.len, stdout) != out.len || fflush(stdout))
		goto out;
	rc = 0;
out:
	buf_release(&out);
	cJSON_Delete(json);
	return rc;
}

static int usage_error(const char *what)
{
	fprintf(stderr,
		"contactfs convert: %s\n"
		"usage: contactfs convert --to json|vcard [--vcard-version 3.0|4.0] [FILE]\n",
		what);
	return EXIT_USAGE;
}

int convert_main(int argc, char **argv)
{
	struct convert_opts o = {.to_json = -1, .version = VCARD_V30};
	struct buf in;
	int fd = 0, r, rc;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--to") && i + 1 < argc) {
			a = argv[++i];
			if (!strcmp(a, "json"))
				o.to_json = 1;
			else if (!strcmp(a, "vcard"))
				o.to_json = 0;
			else
				return usage_error("--to takes json or vcard");
		} else if (!strcmp(a, "--vcard-version") && i + 1 < argc) {
			a = argv[++i];
			if (!strcmp(a, "3.0"))
				o.version = VCARD_V30;
			else if (!strcmp(a, "4.0"))
				o.version = VCARD_V40;
			else
				return usage_error("--vcard-version takes 3.0 or 4.0");
		} else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage_error("converts between vCard and Graph contact JSON");
			return 0;
		} else if (a[0] == '-' && a[1] != '\0') {
			return usage_error("unknown option");
		} else if (!o.file) {
			o.file = strcmp(a, "-") ? a : NULL;
			if (!o.file && i + 1 < argc)
				return usage_error("too many arguments");
		} else {
			return usage_error("too many arguments");
		}
	}
	if (o.to_json < 0)
		return usage_error("--to json or --to vcard is required");

	if (o.file && (fd = open(o.file, O_RDONLY | O_CLOEXEC)) < 0) {
		fprintf(stderr, "contactfs: %s: %s\n", o.file, strerror(errno));
		return EXIT_NOINPUT;
	}
	buf_init(&in, CONVERT_MAX_INPUT);
	r = read_all(fd, &in);
	if (o.file)
		close(fd);
	if (r) {
		fprintf(stderr, "contactfs: %s: %s\n", input_name(&o),
			r == -E2BIG ? "input larger than 256 MiB" : strerror(-r));
		buf_release(&in);
		return r == -E2BIG ? EXIT_DATAERR : EXIT_IOERR;
	}
	rc = o.to_json ? to_json(&o, &in) : to_vcard(&o, &in);
	buf_release(&in);
	return rc;
}
