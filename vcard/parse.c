/*
 * The vCard reader: 2.1, 3.0 and 4.0 as they are written in the wild.
 *
 * Input goes through three layers: physical lines (any of CRLF, LF, CR,
 * CR CR LF), logical lines (folding undone; quoted-printable soft breaks and
 * 2.1's unindented base64 joined), and properties (group, name, parameters,
 * value). Values are decoded to UTF-8 (quoted-printable, CHARSET, base64,
 * data: URIs) before escapes are undone, so a Shift_JIS byte that looks like
 * a backslash is never taken for one.
 */
#include "vcard.h"
#include "vcard_int.h"

#include "util.h"

#include <errno.h>
#include <iconv.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct parser {
	const char *p, *end; /* unread input */
	unsigned lineno;     /* number of the next physical line */
	struct vcard_error *err;
	struct buf line; /* the current logical line */
	struct buf tmp;	 /* scratch for decoding */
	struct buf tmp2;
	unsigned line_first; /* physical line where the logical line starts */
};

static int fail(struct parser *ps, unsigned line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct parser *ps, unsigned line, const char *fmt, ...)
{
	va_list ap;
	int n = 0;

	if (!ps->err)
		return -EINVAL;
	ps->err->line = line;
	if (line)
		n = snprintf(ps->err->msg, sizeof(ps->err->msg), "line %u: ", line);
	if (n < 0 || (size_t)n >= sizeof(ps->err->msg))
		n = 0;
	va_start(ap, fmt);
	vsnprintf(ps->err->msg + n, sizeof(ps->err->msg) - (size_t)n, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* A short printable excerpt of s for error messages. */
static const char *excerpt(const char *s, size_t n, char out[48])
{
	size_t i, k = 0;

	for (i = 0; i < n && k < 40; i++)
		out[k++] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
	if (i < n) {
		out[k++] = '.';
		out[k++] = '.';
		out[k++] = '.';
	}
	out[k] = '\0';
	return out;
}

/* Repairs a card may list; more are counted in one last line. */
#define MAX_WARNINGS 16

/*
 * Record a repair on card: card->warning holds one "line N: what" a line,
 * in input order. Past MAX_WARNINGS repairs only their number grows, so a
 * hostile input cannot make the list quadratic.
 */
static int warn(struct vcard *card, unsigned line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int warn(struct vcard *card, unsigned line, const char *fmt, ...)
{
	struct buf b;
	va_list ap;
	char msg[200];
	int n, r;

	card->nwarnings++;
	if (card->nwarnings > MAX_WARNINGS + 1)
		return 0;
	if (card->nwarnings == MAX_WARNINGS + 1) {
		snprintf(msg, sizeof(msg), "line %u: more repairs in this card, not listed", line);
	} else {
		n = snprintf(msg, sizeof(msg), "line %u: ", line);
		if (n < 0 || (size_t)n >= sizeof(msg))
			n = 0;
		va_start(ap, fmt);
		vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
		va_end(ap);
	}
	buf_init(&b, 0);
	r = card->warning ? buf_add(&b, card->warning, strlen(card->warning)) : 0;
	if (!r && card->warning)
		r = buf_addch(&b, '\n');
	if (!r)
		r = buf_add(&b, msg, strlen(msg));
	if (!r) {
		card->warning = vcard_arena_strndup(card->arena, b.data, b.len);
		r = card->warning ? 0 : -ENOMEM;
	}
	buf_release(&b);
	return r;
}

/*
 * Remove from s[0..*n) the control characters RFC 6350 and 2426 allow in no
 * value: C0 controls but tab and the line ends, and DEL. A reader shows none
 * of them, and kept they would make what we write not strict (libical's
 * reader skips them too). Each removal is a repair of card at line: "what:
 * N control characters removed from where (the first U+001B)". 0 or -ENOMEM.
 */
static int remove_controls(struct vcard *card, unsigned line, const char *what, const char *where,
			   char *s, size_t *n)
{
	size_t k = 0, dropped = 0;
	unsigned char first = 0;

	for (size_t i = 0; i < *n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if ((ch < 0x20 && ch != '\t' && ch != '\r' && ch != '\n') || ch == 0x7f) {
			if (!dropped++)
				first = ch;
			continue;
		}
		s[k++] = (char)ch;
	}
	if (!dropped)
		return 0;
	/* A struct buf's text ends in NUL (util.h): so does the shorter one. */
	s[k] = '\0';
	*n = k;
	return warn(card, line, "%s: %zu control character%s removed from %s (the first U+%04X)",
		    what, dropped, dropped == 1 ? "" : "s", where, (unsigned)first);
}

/* ---- physical lines ----------------------------------------------------- */

/* The next physical line, without its line end; 0 at end of input. Any run
 * of CRs followed by an optional LF is one line end: CRLF, LF, CR and the
 * CR CR LF that some Windows tools produce. */
static int next_physical(struct parser *ps, const char **s, size_t *n)
{
	const char *p = ps->p, *e = ps->end;

	if (p >= e)
		return 0;
	*s = p;
	{
		const char *lf = memchr(p, '\n', (size_t)(e - p));
		const char *cr = memchr(p, '\r', (size_t)((lf ? lf : e) - p));

		p = cr ? cr : lf ? lf : e;
	}
	*n = (size_t)(p - *s);
	while (p < e && *p == '\r')
		p++;
	if (p < e && *p == '\n')
		p++;
	ps->p = p;
	ps->lineno++;
	return 1;
}

/* Look at the next physical line without consuming it. */
static int peek_physical(struct parser *ps, const char **s, size_t *n)
{
	struct parser save = *ps;
	int r = next_physical(ps, s, n);

	ps->p = save.p;
	ps->lineno = save.lineno;
	return r;
}

/* ---- logical lines -------------------------------------------------------- */

/* Where the value starts: the first ':' outside double quotes, or (if the
 * quotes do not balance) the first ':' at all. */
static const char *find_colon(const char *s, size_t n)
{
	int quoted = 0;

	for (size_t i = 0; i < n; i++) {
		if (s[i] == '"')
			quoted = !quoted;
		else if (s[i] == ':' && !quoted)
			return s + i;
	}
	return memchr(s, ':', n);
}

/* The property part (before the value) of the current logical line. */
static size_t head_len(const struct parser *ps)
{
	const char *c = find_colon(ps->line.data, ps->line.len);

	return c ? (size_t)(c - ps->line.data) : ps->line.len;
}

/* Whether s[0..n) ends in an odd run of backslashes (the last one escapes
 * what follows). */
static int odd_backslashes(const char *s, size_t n)
{
	size_t k = 0;

	while (k < n && s[n - 1 - k] == '\\')
		k++;
	return k % 2;
}

/* Whether s[0..n) is token, ignoring ASCII case. */
static int token_is(const char *s, size_t n, const char *token)
{
	return strlen(token) == n && vcard_prefix_ci(s, n, token);
}

/* Whether the parameters of the current logical line (the ';'-separated
 * parts between the name and the value, outside quotes) say quoted-printable
 * or base64, ignoring case. */
static void head_encodings(const struct parser *ps, int *qp, int *b64)
{
	const char *s = ps->line.data;
	size_t n = head_len(ps), i = 0;

	*qp = *b64 = 0;
	while (i < n && s[i] != ';')
		i++;
	while (i < n) {
		size_t start = ++i, len;
		int quoted = 0;

		while (i < n && (quoted || s[i] != ';')) {
			if (s[i] == '"')
				quoted = !quoted;
			i++;
		}
		len = i - start;
		if (token_is(s + start, len, "QUOTED-PRINTABLE") ||
		    token_is(s + start, len, "ENCODING=QUOTED-PRINTABLE"))
			*qp = 1;
		else if (token_is(s + start, len, "BASE64") ||
			 token_is(s + start, len, "ENCODING=BASE64") ||
			 token_is(s + start, len, "ENCODING=B"))
			*b64 = 1;
	}
}

static int is_base64_line(const char *s, size_t n)
{
	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '+' || c == '/' || c == '=' || c == ' ' || c == '\t'))
			return 0;
	}
	return 1;
}

/*
 * Read the next logical line into ps->line. Returns 1, 0 at end of input, or
 * -errno. Folding: a line starting with a space or tab continues the previous
 * one; in 2.1 the whitespace is part of the value (RFC 822 folding), in 3.0
 * and 4.0 one character of it is removed. A quoted-printable value ending in
 * '=' continues on the next line whatever that starts with. A 2.1 base64
 * value continues on lines that hold only base64 (Android and others do not
 * indent them); 3.0 and 4.0 fold base64 like any value.
 */
static int next_logical(struct parser *ps, enum vcard_version version)
{
	const char *s;
	size_t n;
	int r, qp = -1, b64 = -1;

	buf_reset(&ps->line);
	if (!next_physical(ps, &s, &n))
		return 0;
	ps->line_first = ps->lineno;
	if ((r = buf_add(&ps->line, s, n)))
		return r;
	for (;;) {
		if (!peek_physical(ps, &s, &n))
			break;
		if (qp < 0)
			head_encodings(ps, &qp, &b64);
		if (qp && ps->line.len && ps->line.data[ps->line.len - 1] == '=') {
			/* A soft line break: the '=' and the line end go, and
			 * the next line is value whatever it starts with
			 * (RFC 2045's "come=\r\n to the aid"). */
			next_physical(ps, &s, &n);
			ps->line.len--;
			if ((r = buf_add(&ps->line, s, n)))
				return r;
			continue;
		}
		if (n > 0 && (s[0] == ' ' || s[0] == '\t')) {
			next_physical(ps, &s, &n);
			if (version != VCARD_V21) {
				s++;
				n--;
			}
			if ((r = buf_add(&ps->line, s, n)))
				return r;
			continue;
		}
		if (b64 && version == VCARD_V21 && !memchr(s, ':', n) && is_base64_line(s, n)) {
			next_physical(ps, &s, &n);
			if ((r = buf_add(&ps->line, s, n)))
				return r;
			continue;
		}
		if (version == VCARD_V21 && n > 0 && !memchr(s, ':', n) && ps->line.len &&
		    odd_backslashes(ps->line.data, ps->line.len)) {
			/* 2.1 writers (Android) continue a value after a
			 * backslash at the line end: the line break is part
			 * of the value. */
			next_physical(ps, &s, &n);
			ps->line.data[ps->line.len - 1] = '\n';
			if ((r = buf_add(&ps->line, s, n)))
				return r;
			continue;
		}
		if (b64 && n == 0) {
			/* 2.1 ends base64 with a blank line. */
			next_physical(ps, &s, &n);
		}
		break;
	}
	if (ps->line.len && memchr(ps->line.data, '\0', ps->line.len))
		return fail(ps, ps->line_first, "NUL byte in the line");
	return 1;
}

/* ---- decoding --------------------------------------------------------------- */

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Quoted-printable to bytes; soft line breaks ("=" at a line end, already
 * joined by next_logical) disappear; a malformed escape is kept as is. */
static int qp_decode(struct buf *out, const char *s, size_t n)
{
	int r = 0;

	for (size_t i = 0; i < n && !r; i++) {
		if (s[i] != '=') {
			r = buf_addch(out, s[i]);
		} else if (i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
			r = buf_addch(out, (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2])));
			i += 2;
		} else if (i + 1 == n) {
			/* soft break at the very end */
		} else {
			r = buf_addch(out, '=');
		}
	}
	return r;
}

static const unsigned short cp1252_high[32] = {
	0x20ac, 0x0081, 0x201a, 0x0192, 0x201e, 0x2026, 0x2020, 0x2021, 0x02c6, 0x2030, 0x0160,
	0x2039, 0x0152, 0x008d, 0x017d, 0x008f, 0x0090, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022,
	0x2013, 0x2014, 0x02dc, 0x2122, 0x0161, 0x203a, 0x0153, 0x009d, 0x017e, 0x0178,
};

static int put_utf8(struct buf *out, unsigned cp)
{
	char b[3];

	if (cp < 0x80)
		return buf_addch(out, (char)cp);
	if (cp < 0x800) {
		b[0] = (char)(0xc0 | (cp >> 6));
		b[1] = (char)(0x80 | (cp & 0x3f));
		return buf_add(out, b, 2);
	}
	b[0] = (char)(0xe0 | (cp >> 12));
	b[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
	b[2] = (char)(0x80 | (cp & 0x3f));
	return buf_add(out, b, 3);
}

/* Windows-1252 to UTF-8; the five bytes it leaves undefined map to the C1
 * controls of the same number, so every byte survives. */
static int cp1252_decode(struct buf *out, const char *s, size_t n)
{
	int r = 0;

	for (size_t i = 0; i < n && !r; i++) {
		unsigned char c = (unsigned char)s[i];

		r = put_utf8(out, c >= 0x80 && c < 0xa0 ? cp1252_high[c - 0x80] : c);
	}
	return r;
}

/* Text that should be UTF-8 but is not: keep every valid character and
 * read each stray byte as Windows-1252. */
static int utf8_repair(struct buf *out, const char *s, size_t n)
{
	int r = 0;

	for (size_t i = 0; i < n && !r;) {
		size_t k = vcard_utf8_char(s + i, n - i);

		if (k) {
			r = buf_add(out, s + i, k);
			i += k;
		} else {
			r = cp1252_decode(out, s + i, 1);
			i++;
		}
	}
	return r;
}

/* Convert s from charset to UTF-8 with iconv. -EILSEQ for bytes that are not
 * valid in that charset, -EINVAL for a charset iconv does not know. */
static int iconv_decode(struct buf *out, const char *charset, const char *s, size_t n)
{
	iconv_t cd = iconv_open("UTF-8", charset);
	char chunk[1024];
	char *in = (char *)s;
	size_t left = n;
	int r = 0;

	if (cd == (iconv_t)-1)
		return -EINVAL;
	while (left > 0 && !r) {
		char *o = chunk;
		size_t room = sizeof(chunk);
		size_t k = iconv(cd, &in, &left, &o, &room);

		if ((r = buf_add(out, chunk, sizeof(chunk) - room)))
			break;
		if (k == (size_t)-1 && errno != E2BIG)
			r = -EILSEQ;
	}
	iconv_close(cd);
	return r;
}

static int is_utf8_name(const char *cs)
{
	return vcard_strcaseeq(cs, "UTF-8") || vcard_strcaseeq(cs, "UTF8") ||
	       vcard_strcaseeq(cs, "US-ASCII") || vcard_strcaseeq(cs, "ASCII");
}

/* ---- properties ------------------------------------------------------------ */

struct rawparam {
	const char *name; /* NULL for a bare 2.1 parameter */
	size_t name_len;
	const char *val;
	size_t val_len;
};

static int valid_name_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

/* Property names: RFC letters, digits and '-', plus '_' and '/' that
 * Android and KDE write ("X-messaging/gadu-All"). */
static int valid_prop_char(char c)
{
	return valid_name_char(c) || c == '/';
}

/* RFC 6868: ^n newline, ^^ caret, ^' double quote; anything else stays. */
static char *param_value_dup(struct vcard_arena *a, const char *s, size_t n, int rfc6868)
{
	char *out = vcard_arena_alloc(a, n + 1), *o = out;

	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		if (rfc6868 && s[i] == '^' && i + 1 < n &&
		    (s[i + 1] == 'n' || s[i + 1] == 'N' || s[i + 1] == '^' || s[i + 1] == '\'')) {
			i++;
			*o++ = s[i] == '^' ? '^' : s[i] == '\'' ? '"' : '\n';
		} else {
			*o++ = s[i];
		}
	}
	*o = '\0';
	return out;
}

/* Split one parameter's value list on commas outside quotes, unquote each
 * value and add it to prop. lists: a quoted value is itself a list, split
 * on its commas too (*split counts those that were). */
static int add_param_values(struct vcard *card, struct vcard_prop *prop, const char *name,
			    const char *s, size_t n, int rfc6868, int lists, unsigned *split)
{
	size_t i = 0;

	do {
		size_t start = i, end;
		int quoted = 0, inner = 0;
		char *v;
		int r;

		while (i < n && (quoted || s[i] != ',')) {
			if (s[i] == '"')
				quoted = !quoted;
			else if (s[i] == ',')
				inner = 1;
			i++;
		}
		end = i;
		if (end - start >= 2 && s[start] == '"' && s[end - 1] == '"') {
			start++;
			end--;
		}
		v = param_value_dup(card->arena, s + start, end - start, rfc6868);
		if (!v)
			return -ENOMEM;
		if (lists && inner) {
			/* TYPE="work,voice", as RFC 6350's own examples
			 * write it: the types, one by one. Never a type
			 * with a comma in it, so what we write needs no
			 * such repair. */
			char *next;

			(*split)++;
			for (char *t = v; t; t = next) {
				next = strchr(t, ',');
				if (next)
					*next++ = '\0';
				if ((r = vcard_add_param(card, prop, name, t)))
					return r;
			}
			continue;
		}
		/* Drop stray quotes around a value, keep inner ones. */
		if ((r = vcard_add_param(card, prop, name, v)))
			return r;
	} while (i++ < n);
	return 0;
}

/* Parameters that tell how the value is encoded; read, then dropped. */
struct encoding {
	int qp, b64;
	char charset[48];
};

static int is_bare_encoding(const char *s, size_t n, struct encoding *enc)
{
	if (token_is(s, n, "QUOTED-PRINTABLE"))
		enc->qp = 1;
	else if (token_is(s, n, "BASE64"))
		enc->b64 = 1;
	else if (!token_is(s, n, "8BIT") && !token_is(s, n, "7BIT"))
		return 0;
	return 1;
}

/*
 * The value v[0..vn) of prop's parameter name without its control
 * characters (remove_controls), before anything reads it: *v and *vn then
 * point at a copy in ps->tmp. 0 or -errno.
 */
static int param_value_clean(struct parser *ps, struct vcard *card, const struct vcard_prop *prop,
			     const char *name, const char **v, size_t *vn)
{
	char where[80];
	int r;

	buf_reset(&ps->tmp);
	if ((r = buf_add(&ps->tmp, *v, *vn)))
		return r;
	snprintf(where, sizeof(where), "parameter %s", name);
	r = remove_controls(card, ps->line_first, prop->name, where, ps->tmp.data, &ps->tmp.len);
	*v = ps->tmp.data;
	*vn = ps->tmp.len;
	return r;
}

/*
 * Parse the parameters in s[0..n) (the text after the property name, each
 * starting with ';') into prop, taking out ENCODING and CHARSET into enc.
 */
static int parse_params(struct parser *ps, struct vcard *card, struct vcard_prop *prop,
			const char *s, size_t n, struct encoding *enc)
{
	size_t i = 0;
	int rfc6868 = card->version != VCARD_V21;

	while (i < n) {
		size_t start, eq = 0, end, ne, vs;
		int quoted = 0, r;
		unsigned split;
		char name[64], ex[48];

		if (s[i] != ';')
			return fail(ps, ps->line_first, "%s: unexpected '%c' in parameters",
				    prop->name, s[i]);
		start = ++i;
		while (i < n && (quoted || s[i] != ';')) {
			if (s[i] == '"')
				quoted = !quoted;
			else if (s[i] == '=' && !eq && !quoted)
				eq = i;
			i++;
		}
		end = i;
		while (start < end && (s[start] == ' ' || s[start] == '\t'))
			start++;
		if (start == end)
			continue; /* ";;" or a trailing ';': nothing to keep */
		if (!eq) {
			/* A bare 2.1 parameter: TEL;WORK;VOICE or ;QUOTED-PRINTABLE.
			 * 3.0 and 4.0 have none, but Apple's Mac export writes
			 * PHOTO;BASE64: in 3.0: read as in 2.1, and told. */
			int is_enc = is_bare_encoding(s + start, end - start, enc);
			const char *v = s + start, *bare;
			size_t vn = end - start;

			if (!is_enc) {
				if ((r = param_value_clean(ps, card, prop, "TYPE", &v, &vn)))
					return r;
				if (vn == 0)
					continue; /* control characters alone */
			}
			bare = excerpt(v, vn, ex);
			if (card->version != VCARD_V21 &&
			    (r = warn(card, ps->line_first,
				      "%s: parameter \"%s\" without a name; read as %s=%s",
				      prop->name, bare, is_enc ? "ENCODING" : "TYPE", bare)))
				return r;
			if (is_enc)
				continue;
			if (vn > 1000)
				return fail(ps, ps->line_first, "%s: parameter too long",
					    prop->name);
			split = 0;
			r = add_param_values(card, prop, "TYPE", v, vn, 0, 1, &split);
			if (!r && split)
				r = warn(card, ps->line_first,
					 "%s: commas inside the quotes of TYPE=%s read as "
					 "separating "
					 "types",
					 prop->name, bare);
			if (r)
				return r;
			continue;
		}
		/* "TYPE = work": blanks around '=' belong to neither the name
		 * nor the value, and are dropped. */
		ne = eq;
		vs = eq + 1;
		while (ne > start && (s[ne - 1] == ' ' || s[ne - 1] == '\t'))
			ne--;
		while (vs < end && (s[vs] == ' ' || s[vs] == '\t'))
			vs++;
		if (ne == start || ne - start >= sizeof(name))
			return fail(ps, ps->line_first, "%s: parameter without a valid name",
				    prop->name);
		for (size_t k = start; k < ne; k++) {
			if (!valid_name_char(s[k]))
				return fail(ps, ps->line_first,
					    "%s: invalid character in parameter name", prop->name);
			name[k - start] = (char)(s[k] >= 'a' && s[k] <= 'z' ? s[k] - 32 : s[k]);
		}
		name[ne - start] = '\0';
		if ((ne != eq || vs != eq + 1) &&
		    (r = warn(card, ps->line_first, "%s: blanks around '=' of %s dropped",
			      prop->name, name)))
			return r;
		if (!strcmp(name, "ENCODING")) {
			const char *v = s + vs;
			size_t vn = end - vs;

			if (token_is(v, vn, "QUOTED-PRINTABLE"))
				enc->qp = 1;
			else if (token_is(v, vn, "BASE64") || token_is(v, vn, "B"))
				enc->b64 = 1;
			else if (!token_is(v, vn, "8BIT") && !token_is(v, vn, "7BIT"))
				return fail(ps, ps->line_first, "%s: unknown ENCODING", prop->name);
			continue;
		}
		if (!strcmp(name, "CHARSET")) {
			size_t vn = end - vs;
			const char *v = s + vs;

			/* iconv ignores them in a name; told, as elsewhere. */
			if ((r = param_value_clean(ps, card, prop, name, &v, &vn)))
				return r;
			if (vn >= 2 && v[0] == '"' && v[vn - 1] == '"') {
				v++;
				vn -= 2;
			}
			if (vn == 0 || vn >= sizeof(enc->charset))
				return fail(ps, ps->line_first, "%s: invalid CHARSET", prop->name);
			memcpy(enc->charset, v, vn);
			enc->charset[vn] = '\0';
			continue;
		}
		{
			const char *v = s + vs;
			size_t vn = end - vs;

			if ((r = param_value_clean(ps, card, prop, name, &v, &vn)))
				return r;
			split = 0;
			r = add_param_values(card, prop, name, v, vn, rfc6868,
					     !strcmp(name, "TYPE"), &split);
			if (r)
				return r;
			if (split &&
			    (r = warn(card, ps->line_first,
				      "%s: commas inside the quotes of TYPE=%s read as separating "
				      "types",
				      prop->name, excerpt(v, vn, ex))))
				return r;
		}
	}
	return 0;
}

/* Whether the value is a URI or otherwise never escaped. */
static int is_raw_prop(const struct vcard_prop *prop, const struct vcard_known *k)
{
	const struct vcard_param *v = vcard_param(prop, "VALUE");

	if (v && v->nvals &&
	    (vcard_strcaseeq(v->vals[0], "uri") || vcard_strcaseeq(v->vals[0], "url")))
		return 1;
	return k && k->raw;
}

/* Undo escapes in a raw value: only \\ \, \; \: (Apple writes "http\://") and \n. */
static int set_raw(struct vcard *card, struct vcard_prop *prop, const char *s, size_t n)
{
	char *out = vcard_arena_alloc(card->arena, n + 1), *o = out;
	const char **vals = vcard_arena_alloc(card->arena, sizeof(*vals));
	struct vcard_comp *comp = vcard_arena_alloc(card->arena, sizeof(*comp));

	if (!out || !vals || !comp)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\\' && i + 1 < n && strchr("\\,;:nN", s[i + 1])) {
			i++;
			*o++ = s[i] == 'n' || s[i] == 'N' ? '\n' : s[i];
			continue;
		}
		*o++ = s[i];
	}
	*o = '\0';
	vals[0] = out;
	comp->vals = vals;
	comp->nvals = 1;
	prop->kind = VCARD_RAW;
	prop->comps = comp;
	prop->ncomps = 1;
	return 0;
}

/*
 * Split escaped text into components (';') and list values (',') as the
 * property's shape says, undoing escapes. 3.0/4.0: \\ \, \; \n \N (and \:
 * leniently), and \" that Apple's Mac export writes for a quote (counted in
 * *quotes, a repair); other backslashes stay. 2.1: only \\ \; \, \: are escapes, and
 * newlines come from quoted-printable. CR LF and CR become LF. A separator the shape does not have is
 * kept as text, so an unescaped ';' in a NOTE stays in the note.
 */
static int set_text(struct vcard *card, struct vcard_prop *prop, const struct vcard_known *k,
		    const char *s, size_t n, unsigned *quotes)
{
	int v21 = card->version == VCARD_V21;
	/* Unknown properties keep whatever structure they were written with;
	 * 2.1 has no lists, so a comma in its N or ADR is text. */
	enum vcard_shape shape = k ? k->shape : VCARD_SHAPE_FULL;
	int lists = shape == VCARD_SHAPE_LIST || (shape == VCARD_SHAPE_FULL && !v21);
	int comps_on = shape == VCARD_SHAPE_COMPS || shape == VCARD_SHAPE_FULL;
	size_t ncomps = 1, nvals = 1, ci = 0, vi = 0;
	struct vcard_comp *comps;
	const char **vals;
	char *out, *o;

	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\\')
			i++;
		else if (s[i] == ';' && comps_on)
			ncomps++, nvals++;
		else if (s[i] == ',' && lists)
			nvals++;
	}
	comps = vcard_arena_alloc(card->arena, ncomps * sizeof(*comps));
	vals = vcard_arena_alloc(card->arena, nvals * sizeof(*vals));
	out = o = vcard_arena_alloc(card->arena, n + nvals);
	if (!comps || !vals || !out)
		return -ENOMEM;
	comps[0].vals = vals;
	vals[0] = o;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (c == '\\' && i + 1 < n) {
			char e = s[i + 1];

			if (e == '\\' || e == ',' || e == ';' || e == ':') {
				*o++ = e;
				i++;
			} else if (!v21 && (e == 'n' || e == 'N')) {
				*o++ = '\n';
				i++;
			} else if (!v21 && e == '"') {
				*o++ = e;
				i++;
				(*quotes)++;
			} else {
				*o++ = c;
			}
		} else if (c == '\r') {
			/* 2.1's "=0D=0A": one newline, as 3.0's "\n" is. */
			if (i + 1 >= n || s[i + 1] != '\n')
				*o++ = '\n';
		} else if ((c == ';' && comps_on) || (c == ',' && lists)) {
			*o++ = '\0';
			comps[ci].nvals++;
			vi++;
			if (c == ';') {
				ci++;
				comps[ci].vals = vals + vi;
			}
			vals[vi] = o;
		} else {
			*o++ = c;
		}
	}
	*o = '\0';
	comps[ci].nvals++;
	prop->kind = VCARD_TEXT;
	prop->comps = comps;
	prop->ncomps = ncomps;
	return 0;
}

/* The media type a 3.0 TYPE value of PHOTO/LOGO/SOUND names (JPEG ->
 * image/jpeg, or a media type written out), in *out; NULL when it names
 * none we can write back. 0 or -ENOMEM. */
static int media_from_type(struct vcard *card, const char *prop, const char *type, const char **out)
{
	char buf[64];
	int k;

	*out = NULL;
	if (!strchr(type, '/')) {
		k = snprintf(buf, sizeof(buf), "%s/%s", !strcmp(prop, "SOUND") ? "audio" : "image",
			     type);
		if (k < 0 || (size_t)k >= sizeof(buf))
			return 0;
		for (char *p = buf; *p; p++)
			if (*p >= 'A' && *p <= 'Z')
				*p += 32;
		type = buf;
	}
	if (!vcard_mediatype_ok(type, strlen(type)))
		return 0;
	*out = vcard_arena_strdup(card->arena, type);
	return *out ? 0 : -ENOMEM;
}

/* Move the media type of a binary PHOTO/LOGO/SOUND from its TYPE parameter to
 * prop->mediatype; other TYPE values stay, and so does a TYPE that names no
 * media type (KEY's TYPE=X509, say). */
static int take_media_type(struct vcard *card, struct vcard_prop *prop)
{
	for (size_t i = 0; i < prop->nparams; i++) {
		struct vcard_param *t = &prop->params[i];
		int r;

		if (strcmp(t->name, "TYPE") != 0 || t->nvals == 0 || !strcmp(prop->name, "KEY"))
			continue;
		if ((r = media_from_type(card, prop->name, t->vals[0], &prop->mediatype)))
			return r;
		if (!prop->mediatype)
			break;
		t->vals++;
		if (--t->nvals == 0) {
			memmove(t, t + 1, (prop->nparams - i - 1) * sizeof(*t));
			prop->nparams--;
		}
		break;
	}
	return 0;
}

static int set_binary_from(struct parser *ps, struct vcard *card, struct vcard_prop *prop,
			   const char *s, size_t n)
{
	unsigned char *data;
	size_t bad = 0;
	int r;

	buf_reset(&ps->tmp2);
	r = vcard_base64_decode(&ps->tmp2, s, n, &bad);
	if (r == -EINVAL) {
		/* Characters outside the alphabet ("...AAAG:ASDF==" in an
		 * Android test card, which Android itself refuses) are
		 * skipped, as KContacts (Qt's decoder), python-vobject and
		 * ez-vcard do; the photo is what the rest decodes to. */
		size_t k = 0;

		if ((r = warn(card, ps->line_first,
			      "%s: invalid base64 from character %zu of the value; characters "
			      "outside the alphabet skipped",
			      prop->name, bad + 1)))
			return r;
		buf_reset(&ps->tmp);
		for (size_t i = 0; i < n && !r; i++) {
			buf_reset(&ps->tmp2);
			if (vcard_base64_decode(&ps->tmp2, s + i, 1, NULL) == 0) {
				r = buf_addch(&ps->tmp, s[i]);
				k++;
			}
		}
		buf_reset(&ps->tmp2);
		if (!r)
			r = vcard_base64_decode(&ps->tmp2, k ? ps->tmp.data : "", k, NULL);
	}
	if (r)
		return r;
	data = vcard_arena_alloc(card->arena, ps->tmp2.len ? ps->tmp2.len : 1);
	if (!data)
		return -ENOMEM;
	if (ps->tmp2.len)
		memcpy(data, ps->tmp2.data, ps->tmp2.len);
	prop->kind = VCARD_BINARY;
	prop->data = data;
	prop->len = ps->tmp2.len;
	prop->comps = NULL;
	prop->ncomps = 0;
	return 0;
}

/* data:[<mediatype>][;base64],<data> — only base64 data URIs become bytes. */
static int try_data_uri(struct parser *ps, struct vcard *card, struct vcard_prop *prop,
			const char *s, size_t n, int *done)
{
	const char *comma, *semi;
	int r;

	*done = 0;
	if (n < 5 || !vcard_prefix_ci(s, 5, "data:"))
		return 0;
	comma = memchr(s, ',', n);
	if (!comma)
		return 0;
	semi = NULL;
	for (const char *p = s + 5; p + 7 <= comma; p++)
		if (p + 7 == comma && vcard_prefix_ci(p, 7, ";base64"))
			semi = p;
	if (!semi)
		return 0;
	if ((r = set_binary_from(ps, card, prop, comma + 1, (size_t)(s + n - comma - 1))))
		return r;
	{
		const char *mt_end = memchr(s + 5, ';', (size_t)(semi - s - 5));

		if (!mt_end)
			mt_end = semi;
		if (mt_end > s + 5 && vcard_mediatype_ok(s + 5, (size_t)(mt_end - s - 5)) &&
		    !token_is(s + 5, (size_t)(mt_end - s - 5), "application/octet-stream")) {
			prop->mediatype =
				vcard_arena_strndup(card->arena, s + 5, (size_t)(mt_end - s - 5));
			if (!prop->mediatype)
				return -ENOMEM;
		}
	}
	*done = 1;
	return 0;
}

/* Decode the value bytes v[0..n) of prop to UTF-8 text in ps->tmp. */
static int decode_text(struct parser *ps, struct vcard *card, struct vcard_prop *prop,
		       const struct encoding *enc, const char **v, size_t *n)
{
	const char *s = *v;
	size_t len = *n;
	int r;

	if (enc->qp) {
		buf_reset(&ps->tmp2);
		if ((r = qp_decode(&ps->tmp2, s, len)))
			return r;
		s = ps->tmp2.data;
		len = ps->tmp2.len;
	}
	buf_reset(&ps->tmp);
	if (enc->charset[0] && !is_utf8_name(enc->charset)) {
		r = iconv_decode(&ps->tmp, enc->charset, s, len);
		if (r == -EINVAL || r == -EILSEQ) {
			buf_reset(&ps->tmp);
			if ((r = warn(card, ps->line_first, "%s",
				      r == -EINVAL ? "unknown CHARSET, read as Windows-1252"
						   : "value not valid in its CHARSET, read as "
						     "Windows-1252")))
				return r;
			r = cp1252_decode(&ps->tmp, s, len);
		}
	} else if (!vcard_utf8_valid(s, len)) {
		if ((r = warn(card, ps->line_first, "%s",
			      "text is not valid UTF-8; stray bytes read as Windows-1252")))
			return r;
		r = utf8_repair(&ps->tmp, s, len);
	} else {
		r = buf_add(&ps->tmp, s, len);
	}
	if (r)
		return r;
	if (ps->tmp.len && memchr(ps->tmp.data, '\0', ps->tmp.len))
		return fail(ps, ps->line_first, "%s: NUL character in the value", prop->name);
	/* The value as written had its control characters removed already
	 * (parse_property); these came from quoted-printable ("=1B") or a
	 * charset, and go too, so that the text is what we can write. */
	if ((r = remove_controls(card, ps->line_first, prop->name, "the decoded value",
				 ps->tmp.data, &ps->tmp.len)))
		return r;
	*v = ps->tmp.data;
	*n = ps->tmp.len;
	return 0;
}

/*
 * Whether a line without ':' is a property name alone ("N", "item1.TEL",
 * "X-FOO;TYPE=a"): a known name or an X- name, so that a stray word of a
 * badly folded value is never taken for a property.
 */
static int bare_name(const char *s, size_t n)
{
	const char *semi = memchr(s, ';', n), *dot;
	size_t len = semi ? (size_t)(semi - s) : n;
	char name[64];

	dot = memchr(s, '.', len);
	if (dot) {
		len -= (size_t)(dot + 1 - s);
		s = dot + 1;
	}
	if (len == 0 || len >= sizeof(name))
		return 0;
	for (size_t i = 0; i < len; i++) {
		if (!valid_prop_char(s[i]))
			return 0;
		name[i] = (char)(s[i] >= 'a' && s[i] <= 'z' ? s[i] - 32 : s[i]);
	}
	name[len] = '\0';
	return vcard_known(name) || (len > 2 && name[0] == 'X' && name[1] == '-');
}

/* Parse the logical line in ps->line as a property of card. */
static int parse_property(struct parser *ps, struct vcard *card)
{
	const char *s = ps->line.data, *colon, *name, *dot, *p;
	size_t n = ps->line.len, name_len;
	struct encoding enc = {0};
	const struct vcard_known *k;
	struct vcard_prop *prop;
	char namebuf[128], groupbuf[128], ex[48];
	int r, done;
	unsigned quotes = 0;

	colon = find_colon(s, n);
	if (!colon && !bare_name(s, n))
		return fail(ps, ps->line_first, "not a property (no ':'): \"%s\"",
			    excerpt(s, n, ex));
	if (!colon) {
		if ((r = warn(card, ps->line_first, "no ':' after \"%s\"; read as an empty value",
			      excerpt(s, n, ex))))
			return r;
		colon = s + n;
	}
	/* group.NAME */
	p = s;
	while (p < colon && *p != ';')
		p++;
	name = s;
	name_len = (size_t)(p - s);
	while (name_len && (name[name_len - 1] == ' ' || name[name_len - 1] == '\t'))
		name_len--;
	groupbuf[0] = '\0';
	dot = memchr(name, '.', name_len);
	if (dot) {
		size_t gl = (size_t)(dot - name);

		if (gl == 0 && (r = warn(card, ps->line_first, "empty group before \"%s\" dropped",
					 excerpt(dot + 1, (size_t)(colon - dot - 1), ex))))
			return r;
		if (gl >= sizeof(groupbuf))
			return fail(ps, ps->line_first, "invalid group in \"%s\"",
				    excerpt(s, (size_t)(colon - s), ex));
		for (size_t i = 0; i < gl; i++)
			if (!valid_name_char(name[i]))
				return fail(ps, ps->line_first, "invalid group in \"%s\"",
					    excerpt(s, (size_t)(colon - s), ex));
		memcpy(groupbuf, name, gl);
		groupbuf[gl] = '\0';
		name = dot + 1;
		name_len -= gl + 1;
	}
	if (name_len == 0 || name_len >= sizeof(namebuf))
		return fail(ps, ps->line_first, "property without a valid name: \"%s\"",
			    excerpt(s, n, ex));
	for (size_t i = 0; i < name_len; i++) {
		if (!valid_prop_char(name[i]))
			return fail(ps, ps->line_first, "invalid property name \"%s\"",
				    excerpt(name, name_len, ex));
		namebuf[i] = name[i];
	}
	namebuf[name_len] = '\0';

	/* "END;;:VCARD" is not a property but a broken marker; kept as a
	 * property it would be written as the real thing. */
	if (vcard_strcaseeq(namebuf, "BEGIN") || vcard_strcaseeq(namebuf, "END"))
		return fail(ps, ps->line_first, "malformed %s line \"%s\"", namebuf,
			    excerpt(s, n, ex));
	prop = vcard_add(card, groupbuf[0] ? groupbuf : NULL, namebuf);
	if (!prop)
		return -ENOMEM;
	prop->line = ps->line_first;
	k = prop->known;
	if ((r = parse_params(ps, card, prop, p, (size_t)(colon - p), &enc)))
		return r;

	s = colon < ps->line.data + ps->line.len ? colon + 1 : colon;
	n = ps->line.len - (size_t)(s - ps->line.data);
	/* Control characters go where the value is split from its line, before
	 * anything reads it (a data: URI, base64, escapes): the value we keep
	 * is then read as what we write of it will be read. */
	r = remove_controls(card, ps->line_first, prop->name, "the value",
			    ps->line.data + (s - ps->line.data), &n);
	ps->line.len = (size_t)(s - ps->line.data) + n;
	if (r)
		return r;
	if (enc.b64) {
		/* "ENCODING=b:data:image/jpeg;base64,..." says base64 twice;
		 * the URI's bytes are the value. */
		if ((r = try_data_uri(ps, card, prop, s, n, &done)))
			return r;
		if (done &&
		    (r = warn(card, ps->line_first,
			      "%s: a data: URI under ENCODING=b; its bytes taken", prop->name)))
			return r;
		if (!done && (r = set_binary_from(ps, card, prop, s, n)))
			return r;
		return prop->mediatype ? 0 : take_media_type(card, prop);
	}
	if (k && k->binary) {
		if ((r = try_data_uri(ps, card, prop, s, n, &done)))
			return r;
		if (done)
			return 0;
	}
	if ((r = decode_text(ps, card, prop, &enc, &s, &n)))
		return r;
	if (is_raw_prop(prop, k))
		return set_raw(card, prop, s, n);
	if ((r = set_text(card, prop, k, s, n, &quotes)))
		return r;
	return quotes ? warn(card, ps->line_first, "%s: backslash before '\"' dropped", prop->name)
		      : 0;
}

/* Length of a group prefix ("item1.", or "." alone) at the start of
 * s[0..n), or 0 when there is none. */
static size_t group_prefix(const char *s, size_t n)
{
	size_t i = 0;

	while (i < n && valid_name_char(s[i]))
		i++;
	return i < n && s[i] == '.' ? i + 1 : 0;
}

/* How a line names BEGIN:VCARD or END:VCARD. */
enum marker {
	MARKER_NO,
	MARKER_EXACT,	 /* in any case, with trailing blanks */
	MARKER_REPAIRED, /* with a group, or blanks around ':' */
};

/* Whether the logical line is "KEYWORD:VCARD" (BEGIN or END), tolerating
 * case and trailing blanks, and (as a repair) a group prefix and blanks
 * around the ':'. "BEGIN:VCARDinvalid" is none. */
static enum marker is_marker(const struct buf *line, const char *keyword)
{
	size_t k = strlen(keyword), n = line->len, g;
	const char *s = line->data;
	int repaired;

	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	g = group_prefix(s, n);
	repaired = g > 0;
	s += g;
	n -= g;
	if (n < k || !vcard_prefix_ci(s, k, keyword))
		return MARKER_NO;
	s += k;
	n -= k;
	while (n && (*s == ' ' || *s == '\t')) {
		s++;
		n--;
		repaired = 1;
	}
	if (!n || *s != ':')
		return MARKER_NO;
	s++;
	n--;
	while (n && (*s == ' ' || *s == '\t')) {
		s++;
		n--;
		repaired = 1;
	}
	if (n != 5 || !vcard_prefix_ci(s, 5, "VCARD"))
		return MARKER_NO;
	return repaired ? MARKER_REPAIRED : MARKER_EXACT;
}

static int is_blank(const struct buf *line)
{
	for (size_t i = 0; i < line->len; i++)
		if (line->data[i] != ' ' && line->data[i] != '\t')
			return 0;
	return 1;
}

/* A comment line ('#' first), which Android's reader skips. */
static int is_comment(const struct buf *line)
{
	return line->len && line->data[0] == '#';
}

/* Whether only blank lines are left in the input. */
static int rest_is_blank(const struct parser *ps)
{
	for (const char *p = ps->p; p < ps->end; p++)
		if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
			return 0;
	return 1;
}

/* Whether the line is a start of "END:VCARD" cut short ("E", "END:VC"). */
static int is_cut_end(const struct buf *line)
{
	static const char end[] = "END:VCARD";

	if (line->len == 0 || line->len >= sizeof(end) - 1)
		return 0;
	for (size_t i = 0; i < line->len; i++) {
		char c = line->data[i];

		if ((c >= 'a' && c <= 'z' ? c - 32 : c) != end[i])
			return 0;
	}
	return 1;
}

/*
 * Whether the logical line is a VERSION line: "VERSION:", and as a repair
 * (*repaired set) a group before it or blanks around the ':'. *value is
 * where the value starts.
 */
static int is_version_line(const struct buf *line, const char **value, int *repaired)
{
	const char *s = line->data;
	size_t n = line->len, g = group_prefix(s, n);

	*repaired = g > 0;
	s += g;
	n -= g;
	if (n < 7 || !vcard_prefix_ci(s, 7, "VERSION"))
		return 0;
	s += 7;
	n -= 7;
	while (n && (*s == ' ' || *s == '\t')) {
		s++;
		n--;
		*repaired = 1;
	}
	if (!n || *s != ':')
		return 0;
	s++;
	n--;
	if (n && (*s == ' ' || *s == '\t'))
		*repaired = 1;
	*value = s;
	return 1;
}

static int set_version(struct parser *ps, struct vcard *card, const char *v)
{
	size_t n = ps->line.len - (size_t)(v - ps->line.data);
	char ex[48];

	while (n && (*v == ' ' || *v == '\t')) {
		v++;
		n--;
	}
	while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	if (n == 3 && !memcmp(v, "2.1", 3))
		card->version = VCARD_V21;
	else if ((n == 3 && !memcmp(v, "3.0", 3)) || (n == 1 && v[0] == '3'))
		card->version = VCARD_V30;
	else if ((n == 3 && !memcmp(v, "4.0", 3)) || (n == 1 && v[0] == '4'))
		card->version = VCARD_V40;
	else
		return fail(ps, ps->line_first, "unsupported VERSION \"%s\" (2.1, 3.0 and 4.0 are)",
			    excerpt(v, n, ex));
	return 0;
}

/* Whether the last property of a 2.1 card is an AGENT whose value is a
 * whole vCard to come: empty (the card follows on the next lines) or
 * "BEGIN:VCARD" (the card started on the AGENT line). 3.0 and 4.0 carry
 * the card as escaped text on the AGENT line: a value that is just
 * "BEGIN:VCARD" there is text like any other. */
static int agent_opens_card(const struct vcard *card, int *begun)
{
	const struct vcard_prop *p = card->nprops ? &card->props[card->nprops - 1] : NULL;
	const char *v;

	if (!p || card->version != VCARD_V21 || strcmp(p->name, "AGENT") != 0 ||
	    p->kind != VCARD_TEXT || p->ncomps != 1 || p->comps[0].nvals != 1)
		return 0;
	v = p->comps[0].vals[0];
	*begun = vcard_strcaseeq(v, "BEGIN:VCARD");
	return *begun || v[0] == '\0';
}

/* Whether a line of a nested 2.1 card is "AGENT[;params]:BEGIN:VCARD", an
 * agent of the agent begun on its own line. */
static int is_agent_begin(const struct buf *line)
{
	const char *s = line->data, *colon;
	size_t n = line->len, g = group_prefix(s, n);

	colon = find_colon(s, n);
	if (!colon || (size_t)(colon - s) < g + 5 || !vcard_prefix_ci(s + g, 5, "AGENT") ||
	    (s + g + 5 != colon && s[g + 5] != ';'))
		return 0;
	n -= (size_t)(colon + 1 - s);
	s = colon + 1;
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	return n == 11 && vcard_prefix_ci(s, 11, "BEGIN:VCARD");
}

/*
 * A vCard 2.1 AGENT carries a whole card on the lines after it. Read them
 * (nested AGENTs included) up to the matching END:VCARD, and make the text
 * of the lines, one '\n' after each, the AGENT's value: one contact with
 * its agent kept, as 3.0's escaped AGENT text would hold it. begun: the
 * AGENT line itself held BEGIN:VCARD. An empty AGENT that no BEGIN:VCARD
 * follows stays empty, and the input is left where it was.
 */
static int read_agent(struct parser *ps, struct vcard *card, int begun)
{
	const char *p = ps->p;
	unsigned at = ps->line_first, lineno = ps->lineno;
	struct buf text;
	int depth = begun, r;

	buf_init(&text, 0);
	if (begun && (r = buf_add(&text, "BEGIN:VCARD\n", 12)))
		goto out;
	for (;;) {
		r = next_logical(ps, card->version);
		if (r < 0)
			goto out;
		if (r == 0 && depth) {
			r = fail(ps, at, "AGENT: the vCard it carries has no END:VCARD");
			goto out;
		}
		if (r && !depth && is_blank(&ps->line))
			continue;
		if (r == 0 || (!depth && !is_marker(&ps->line, "BEGIN"))) {
			ps->p = p;
			ps->lineno = lineno;
			r = 0;
			goto out;
		}
		/* The nested card's lines are all the AGENT's value, so its
		 * control characters go as a value's do, before its markers
		 * are looked for. */
		if ((r = remove_controls(card, ps->line_first, "AGENT", "the vCard it carries",
					 ps->line.data, &ps->line.len)))
			goto out;
		if (is_marker(&ps->line, "BEGIN") || (depth && is_agent_begin(&ps->line)))
			depth++;
		else if (is_marker(&ps->line, "END"))
			depth--;
		if ((r = buf_add(&text, ps->line.data, ps->line.len)) ||
		    (r = buf_addch(&text, '\n')))
			goto out;
		if (!depth)
			break;
	}
	/* The nested card's lines are kept as written, charsets and all:
	 * bytes that are not UTF-8 are read as text is elsewhere. */
	if (!vcard_utf8_valid(text.data, text.len)) {
		if ((r = warn(card, at,
			      "AGENT: the vCard it carries is not valid UTF-8; stray bytes read "
			      "as Windows-1252")))
			goto out;
		buf_reset(&ps->tmp);
		if ((r = utf8_repair(&ps->tmp, text.data, text.len)))
			goto out;
		buf_reset(&text);
		if ((r = buf_add(&text, ps->tmp.data, ps->tmp.len)))
			goto out;
	}
	if (!(r = buf_addch(&text, '\0')))
		r = vcard_set_text(card, &card->props[card->nprops - 1], text.data);
out:
	buf_release(&text);
	return r;
}

/* How a card opens. */
enum opening {
	OPEN_BEGIN,	     /* BEGIN:VCARD */
	OPEN_BEGIN_REPAIRED, /* BEGIN:VCARD with a group or blanks */
	OPEN_VERSION,	     /* a VERSION line without BEGIN before it */
};

/*
 * Read one card. ps is just past its BEGIN line, or (OPEN_VERSION) just past
 * the VERSION line that begins a card without BEGIN, that line still in
 * ps->line. comment: the first comment line before the card, or 0. version:
 * the version to read lines with until VERSION says otherwise (0: 3.0, the
 * common case); a VERSION that comes after other properties and names
 * another version reads the card again from the start with it.
 */
static int parse_card(struct parser *ps, struct vcard **out, unsigned begin, enum opening how,
		      unsigned comment, enum vcard_version version)
{
	struct vcard *card = vcard_new();
	const char *start = ps->p, *v;
	unsigned start_line = ps->lineno;
	int have_version = 0, first = how == OPEN_VERSION, repaired, begun, r;

	if (!card)
		return -ENOMEM;
	card->line = begin;
	card->version = version ? version : VCARD_V30;
	if (comment && (r = warn(card, comment, "comment lines before the card skipped")))
		goto out;
	if (how == OPEN_BEGIN_REPAIRED &&
	    (r = warn(card, begin, "BEGIN:VCARD with a group or blanks; read as BEGIN:VCARD")))
		goto out;
	if (how == OPEN_VERSION &&
	    (r = warn(card, begin, "no BEGIN:VCARD before this VERSION line; card begun here")))
		goto out;
	for (;;) {
		r = first ? 1 : next_logical(ps, card->version);
		first = 0;
		if (r < 0)
			goto out;
		if (r == 0) {
			if ((r = warn(card, ps->lineno,
				      "missing END:VCARD at end of input; card closed")))
				goto out;
			break;
		}
		if (is_blank(&ps->line))
			continue;
		if (is_comment(&ps->line)) {
			if ((r = warn(card, ps->line_first, "comment line skipped")))
				goto out;
			continue;
		}
		switch (is_marker(&ps->line, "END")) {
		case MARKER_REPAIRED:
			if ((r = warn(card, ps->line_first,
				      "END:VCARD with a group or blanks; read as END:VCARD")))
				goto out;
			goto done;
		case MARKER_EXACT:
			goto done;
		case MARKER_NO:
			break;
		}
		if (is_marker(&ps->line, "BEGIN")) {
			r = fail(
				ps, ps->line_first,
				"BEGIN:VCARD inside the card begun at line %u (missing END:VCARD?)",
				begin);
			goto out;
		}
		if (is_cut_end(&ps->line) && rest_is_blank(ps)) {
			if ((r = warn(card, ps->line_first,
				      "\"%.*s\" at end of input read as a cut END:VCARD",
				      (int)ps->line.len, ps->line.data)))
				goto out;
			break;
		}
		if (!have_version && is_version_line(&ps->line, &v, &repaired)) {
			if ((r = set_version(ps, card, v)))
				goto out;
			have_version = 1;
			if (card->nprops && !version && card->version != VCARD_V30) {
				/* The lines before it were read as 3.0: again,
				 * as what the card says it is. */
				enum vcard_version found = card->version;

				vcard_free(card);
				card = NULL;
				ps->p = start;
				ps->lineno = start_line;
				r = parse_card(ps, out, begin, how, comment, found);
				goto out;
			}
			if (repaired &&
			    (r = warn(card, ps->line_first,
				      "VERSION with a group or blanks; read as VERSION:%s",
				      card->version == VCARD_V21   ? "2.1"
				      : card->version == VCARD_V30 ? "3.0"
								   : "4.0")))
				goto out;
			continue;
		}
		if ((r = parse_property(ps, card)))
			goto out;
		if (agent_opens_card(card, &begun) && (r = read_agent(ps, card, begun)))
			goto out;
	}
done:
	if (!have_version && (r = warn(card, begin, "no VERSION; read as 3.0")))
		goto out;
	*out = card;
	card = NULL;
	r = 0;
out:
	vcard_free(card);
	return r;
}

int vcard_parse(const char *data, size_t len, struct vcard ***cards, size_t *ncards,
		struct vcard_error *err)
{
	struct parser ps = {.p = data, .end = data + len, .err = err};
	struct vcard **list = NULL, *card = NULL;
	size_t n = 0, size = 0;
	unsigned comment = 0;
	const char *v;
	char ex[48];
	int r, repaired, from_version;
	enum marker m;

	*cards = NULL;
	*ncards = 0;
	if (err) {
		err->line = 0;
		err->msg[0] = '\0';
	}
	buf_init(&ps.line, 0);
	buf_init(&ps.tmp, 0);
	buf_init(&ps.tmp2, 0);
	if (len >= 3 && !memcmp(data, "\xef\xbb\xbf", 3))
		ps.p += 3;
	for (;;) {
		r = next_logical(&ps, VCARD_V30);
		if (r < 0)
			goto out;
		if (r == 0)
			break;
		if (is_blank(&ps.line))
			continue;
		if (is_comment(&ps.line)) {
			if (!comment)
				comment = ps.line_first;
			continue;
		}
		m = is_marker(&ps.line, "BEGIN");
		from_version = m == MARKER_NO && is_version_line(&ps.line, &v, &repaired);
		if (m == MARKER_NO && !from_version) {
			r = fail(&ps, ps.line_first, "expected BEGIN:VCARD, found \"%s\"",
				 excerpt(ps.line.data, ps.line.len, ex));
			goto out;
		}
		if (n == size) {
			struct vcard **l;

			size = size ? size * 2 : 4;
			l = realloc(list, size * sizeof(*l));
			if (!l) {
				r = -ENOMEM;
				goto out;
			}
			list = l;
		}
		r = parse_card(&ps, &card, ps.line_first,
			       from_version	      ? OPEN_VERSION
			       : m == MARKER_REPAIRED ? OPEN_BEGIN_REPAIRED
						      : OPEN_BEGIN,
			       comment, 0);
		if (r)
			goto out;
		list[n++] = card;
		comment = 0;
	}
	if (n == 0) {
		r = fail(&ps, ps.lineno ? ps.lineno : 1, "no vCard in input (no BEGIN:VCARD)");
		goto out;
	}
	if (comment && (r = warn(list[n - 1], comment, "comment lines after the card skipped")))
		goto out;
	*cards = list;
	*ncards = n;
	list = NULL;
	n = 0;
	r = 0;
out:
	vcard_free_all(list, n);
	buf_release(&ps.line);
	buf_release(&ps.tmp);
	buf_release(&ps.tmp2);
	if (r == -E2BIG)
		r = fail(&ps, ps.line_first, "line too long");
	return r;
}

int vcard_parse_one(const char *data, size_t len, struct vcard **card, struct vcard_error *err)
{
	struct vcard **cards;
	size_t n;
	int r = vcard_parse(data, len, &cards, &n, err);

	*card = NULL;
	if (r)
		return r;
	if (n != 1) {
		if (err) {
			err->line = cards[1]->line;
			snprintf(err->msg, sizeof(err->msg),
				 "line %u: a second vCard where one was expected", cards[1]->line);
		}
		vcard_free_all(cards, n);
		return -EINVAL;
	}
	*card = cards[0];
	free(cards);
	return 0;
}
