/*
 * util — the few helpers every contactfs module shares: a growable byte
 * buffer with a hard size cap, and the log.
 *
 * Invariants:
 *  - a struct buf's data is always a NUL-terminated string (data[len] == 0)
 *    from buf_init on, so it can be passed as a C string without a check for
 *    NULL; it may also hold NUL bytes in the middle (binary content). Before
 *    the first append (and after buf_release or buf_detach) data points to a
 *    shared, read-only empty string and size is 0: never write through it,
 *    never free it, and take the content over only with buf_detach.
 *  - a buffer never grows past its cap; an append that would is refused with
 *    -E2BIG and leaves the buffer as it was.
 *  - nothing here logs secrets: callers redact before they log.
 */
#ifndef CONTACTFS_UTIL_H
#define CONTACTFS_UTIL_H

#include <stdarg.h>
#include <stddef.h>

#define UTIL_MUST_CHECK __attribute__((warn_unused_result))
#define UTIL_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))

/* Default cap: large enough for any contact with a 4 MB photo in base64. */
#define BUF_DEFAULT_CAP ((size_t)16 << 20)

struct buf {
	char *data;  /* never NULL after buf_init; owned by the buffer if size > 0 */
	size_t len;  /* bytes in use, not counting the terminating NUL */
	size_t size; /* bytes allocated */
	size_t cap;  /* hard limit on len; 0 means BUF_DEFAULT_CAP */
};

/* Set up an empty buffer that may grow to cap bytes (0: the default cap).
 * Every buffer must be set up with this before use: a zeroed struct buf
 * has data NULL and breaks the invariant. Allocates nothing. */
void buf_init(struct buf *b, size_t cap);

/* Free the buffer's memory; it is then empty (data is "") and may be reused. */
void buf_release(struct buf *b);

/* Forget the content but keep the memory. Cannot fail. */
void buf_reset(struct buf *b);

/* Append n bytes. 0, or -ENOMEM, or -E2BIG when the cap would be passed. */
int buf_add(struct buf *b, const void *p, size_t n) UTIL_MUST_CHECK;
int buf_addstr(struct buf *b, const char *s) UTIL_MUST_CHECK;
int buf_addch(struct buf *b, char c) UTIL_MUST_CHECK;
int buf_printf(struct buf *b, const char *fmt, ...) UTIL_PRINTF(2, 3) UTIL_MUST_CHECK;
int buf_vprintf(struct buf *b, const char *fmt, va_list ap) UTIL_PRINTF(2, 0) UTIL_MUST_CHECK;

/* Set the length to len: shorter cuts, longer appends NUL bytes. 0, or as
 * buf_add. */
int buf_resize(struct buf *b, size_t len) UTIL_MUST_CHECK;

/* Write n bytes at offset off, growing the buffer (a gap past the end is
 * filled with NUL bytes, as in a sparse file). 0, or as buf_add; on failure
 * the buffer is unchanged. */
int buf_write_at(struct buf *b, size_t off, const void *p, size_t n) UTIL_MUST_CHECK;

/* Hand the content over to the caller (to free()) and leave the buffer
 * empty. Returns "" (freshly allocated) for a buffer that never grew, or
 * NULL if that allocation fails. */
char *buf_detach(struct buf *b, size_t *len);

/* Syslog levels. */
enum log_level { LOG_LVL_ERR = 3, LOG_LVL_WARNING = 4, LOG_LVL_INFO = 6, LOG_LVL_DEBUG = 7 };

/* Messages at or below this level are written (default LOG_LVL_INFO). */
void log_set_level(enum log_level level);

/* Whether messages of this level are written. */
int log_enabled(enum log_level level);

/* From now on write to syslog (facility daemon, with ident) instead of
 * stderr: for a daemon whose stderr is gone. */
void log_to_syslog(const char *ident);

/* Write one line to stderr: "contactfs: <level>: <message>". The message
 * says what failed first, in lower case, and carries the contact or folder
 * id; it must never contain a token. */
void log_msg(enum log_level level, const char *fmt, ...) UTIL_PRINTF(2, 3);

#define log_err(...) log_msg(LOG_LVL_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARNING, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

/* The contactfs command's exit statuses: sysexits.h's, spelled out so no
 * header is needed (cli/ returns them, and so does fs_mount_main). */
enum {
	EXIT_USAGE = 64,       /* bad command line */
	EXIT_DATAERR = 65,     /* invalid input */
	EXIT_NOINPUT = 66,     /* input file cannot be opened */
	EXIT_UNAVAILABLE = 69, /* the service cannot be reached */
	EXIT_SOFTWARE = 70,    /* out of memory or an internal error */
	EXIT_CANTCREAT = 73,   /* cannot create the output */
	EXIT_IOERR = 74,       /* cannot write the output */
	EXIT_TEMPFAIL = 75,    /* try again (a sign-in code expired) */
	EXIT_PROTOCOL = 76,    /* the service answered something unexpected */
	EXIT_NOPERM = 77,      /* not signed in, or access refused */
};

#endif
