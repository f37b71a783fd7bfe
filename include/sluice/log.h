/* log: the error log (levelled, greppable `level module: message key=value`) and the access
 * log (one line per request, format in docs/logging.md). Both are reopened on SIGUSR1. */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

#include <stddef.h>
#include <stdint.h>

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Open the logs: NULL error_log = stderr; NULL access_log = none; "-" = stdout. 0 or -1. */
int log_open(const char *error_log, const char *access_log, int level);

/* Reopen both files in place (after rotation). 0 or -1. */
int log_reopen(void);

/* Close the files. */
void log_close(void);

/* Write one error-log line if level is enabled. */
void log_msg(int level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* 1 if the access log is open. */
int log_access_enabled(void);

/* Append one complete access-log line (with its newline) in a single write. */
void log_access(const char *line, size_t len);

/* Access-log lines lost to failed writes (a full disk), since start. */
uint64_t log_access_lost(void);

/* Format the current wall-clock time as ISO 8601 UTC with milliseconds into buf (>= 32). */
size_t log_time(char *buf, size_t len);

#define log_error(mod, ...) log_msg(LOG_ERROR, mod, __VA_ARGS__)
#define log_warn(mod, ...)  log_msg(LOG_WARN, mod, __VA_ARGS__)
#define log_info(mod, ...)  log_msg(LOG_INFO, mod, __VA_ARGS__)
#define log_debug(mod, ...) log_msg(LOG_DEBUG, mod, __VA_ARGS__)

#endif
