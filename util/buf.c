#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What an empty buffer's data points to until its first append: never
 * written, never freed (a buffer owns its memory exactly when size > 0). */
static char buf_empty[1];

void buf_init(struct buf *b, size_t cap)
{
	b->data = buf_empty;
	b->len = 0;
	b->size = 0;
	b->cap = cap ? cap : BUF_DEFAULT_CAP;
}

void buf_release(struct buf *b)
{
	if (b->size)
		free(b->data);
	b->data = buf_empty;
	b->len = 0;
	b->size = 0;
}

void buf_reset(struct buf *b)
{
	b->len = 0;
	if (b->size)
		b->data[0] = '\0';
}

/* Make room for n more bytes plus the terminating NUL. */
static int buf_grow(struct buf *b, size_t n)
{
	size_t cap = b->cap ? b->cap : BUF_DEFAULT_CAP;
	size_t need, size;
	char *p;

	if (n > cap || b->len > cap - n)
		return -E2BIG;
	need = b->len + n + 1;
	if (need <= b->size)
		return 0;
	size = b->size ? b->size : 64;
	while (size < need)
		size = size > ((size_t)-1) / 2 ? need : size * 2;
	p = realloc(b->size ? b->data : NULL, size);
	if (!p)
		return -ENOMEM;
	b->data = p;
	b->size = size;
	return 0;
}

int buf_add(struct buf *b, const void *p, size_t n)
{
	int r = buf_grow(b, n);

	if (r)
		return r;
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

int buf_resize(struct buf *b, size_t len)
{
	int r;

	if (len <= b->len) {
		if (b->size) {
			b->len = len;
			b->data[len] = '\0';
		}
		return 0;
	}
	if ((r = buf_grow(b, len - b->len)))
		return r;
	memset(b->data + b->len, 0, len - b->len + 1);
	b->len = len;
	return 0;
}

int buf_write_at(struct buf *b, size_t off, const void *p, size_t n)
{
	size_t end = off + n;
	int r;

	if (end < off)
		return -E2BIG;
	if (end > b->len && (r = buf_resize(b, end)))
		return r;
	if (n)
		memcpy(b->data + off, p, n);
	return 0;
}

int buf_addstr(struct buf *b, const char *s)
{
	return buf_add(b, s, strlen(s));
}

int buf_addch(struct buf *b, char c)
{
	return buf_add(b, &c, 1);
}

int buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
	va_list aq;
	int n, r;

	va_copy(aq, ap);
	n = vsnprintf(NULL, 0, fmt, aq);
	va_end(aq);
	if (n < 0)
		return -EINVAL;
	r = buf_grow(b, (size_t)n);
	if (r)
		return r;
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
	return 0;
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = buf_vprintf(b, fmt, ap);
	va_end(ap);
	return r;
}

char *buf_detach(struct buf *b, size_t *len)
{
	char *p = b->size ? b->data : calloc(1, 1);

	if (len)
		*len = b->len;
	b->data = buf_empty;
	b->len = 0;
	b->size = 0;
	return p;
}
