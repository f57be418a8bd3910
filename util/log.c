#include "util.h"

#include <stdio.h>
#include <syslog.h>

static enum log_level log_level = LOG_LVL_INFO;
static int log_syslog;

void log_to_syslog(const char *ident)
{
	openlog(ident, LOG_PID, LOG_DAEMON);
	log_syslog = 1;
}

void log_set_level(enum log_level level)
{
	log_level = level;
}

int log_enabled(enum log_level level)
{
	return level <= log_level;
}

static const char *log_level_name(enum log_level level)
{
	switch (level) {
	case LOG_LVL_ERR:
		return "error";
	case LOG_LVL_WARNING:
		return "warning";
	case LOG_LVL_INFO:
		return "info";
	case LOG_LVL_DEBUG:
		return "debug";
	}
	return "log";
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	if (level > log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (log_syslog) {
		syslog((int)level, "%s: %s", log_level_name(level), line);
		return;
	}
	/* One fprintf per line so lines from threads do not interleave. */
	fprintf(stderr, "contactfs: %s: %s\n", log_level_name(level), line);
}
