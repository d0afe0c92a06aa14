/*
 * log: structured logging, one JSON object per line on stderr (or the fd
 * given to log_set_fd).
 *
 * Every line carries "ts" (RFC 3339, UTC, milliseconds), "level",
 * "component" and "msg", then the caller's fields. Lines are written with a
 * single write(2) under a mutex, so lines from different threads never
 * interleave.
 *
 * Contract: callable from any thread. log_json() steals `fields` (a JSON
 * object or NULL). Messages longer than LOG_MESSAGE_MAX bytes are cut
 * after the last whole UTF-8 character that fits and marked "truncated":
 * true, so a noisy caller cannot produce unbounded lines. Secrets (API
 * tokens) must never be passed in.
 */
#ifndef STRATD_CORE_LOG_H
#define STRATD_CORE_LOG_H

#include <jansson.h>
#include <stdbool.h>

enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

#define LOG_MESSAGE_MAX 4096

void log_set_level(enum log_level level);
bool log_enabled(enum log_level level);
/* Parses "debug", "info", "warn", "error"; returns -1 on anything else. */
int log_parse_level(const char *name, enum log_level *level);
void log_set_fd(int fd);

__attribute__((format(printf, 3, 4))) void log_msg(enum log_level level, const char *component,
                                                   const char *fmt, ...);
void log_json(enum log_level level, const char *component, const char *msg, json_t *fields);

#define log_info(component, ...) log_msg(LOG_LEVEL_INFO, component, __VA_ARGS__)
#define log_warn(component, ...) log_msg(LOG_LEVEL_WARN, component, __VA_ARGS__)
#define log_error(component, ...) log_msg(LOG_LEVEL_ERROR, component, __VA_ARGS__)
#define log_debug(component, ...) log_msg(LOG_LEVEL_DEBUG, component, __VA_ARGS__)

#endif
