#include "core/log.h"

#include "core/clock.h"
#include "core/jsonutil.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static atomic_int log_min_level = LOG_LEVEL_INFO;
static atomic_int log_fd = STDERR_FILENO;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(enum log_level level)
{
    atomic_store(&log_min_level, (int)level);
}

bool log_enabled(enum log_level level)
{
    return (int)level >= atomic_load(&log_min_level);
}

int log_parse_level(const char *name, enum log_level *level)
{
    for (int i = 0; i <= LOG_LEVEL_ERROR; i++) {
        if (strcasecmp(name, level_names[i]) == 0) {
            *level = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

void log_set_fd(int fd)
{
    atomic_store(&log_fd, fd);
}

static void write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n <= 0)
            return; /* nowhere left to report a logging failure */
        data += n;
        len -= (size_t)n;
    }
}

/* Where a message over LOG_MESSAGE_MAX is cut: at the last character
 * boundary at or before the limit, so that the cut leaves no piece of a
 * character (which would read as U+FFFD). */
static size_t character_cut(const char *msg)
{
    size_t cut = LOG_MESSAGE_MAX;
    for (int i = 0; i < 3 && cut > 0 && ((unsigned char)msg[cut] & 0xC0) == 0x80; i++)
        cut--;
    return cut;
}

void log_json(enum log_level level, const char *component, const char *msg, json_t *fields)
{
    if (!log_enabled(level)) {
        json_decref(fields);
        return;
    }
    json_t *line = json_object();
    if (!line) {
        json_decref(fields);
        return;
    }
    char ts[40];
    clock_format_rfc3339(clock_wall_ms(), ts, sizeof ts);
    json_object_set_new(line, "ts", json_string(ts));
    json_object_set_new(line, "level", json_string(level_names[level]));
    json_object_set_new(line, "component", json_string(component));
    size_t msg_len = strlen(msg);
    if (msg_len > LOG_MESSAGE_MAX) {
        json_object_set_new(line, "msg", jsonutil_string_lossy(msg, character_cut(msg)));
        json_object_set_new(line, "truncated", json_true());
    } else {
        json_object_set_new(line, "msg", jsonutil_string_lossy(msg, msg_len));
    }
    if (fields)
        json_object_update_missing(line, fields);
    json_decref(fields);
    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    json_decref(line);
    if (!text)
        return;
    size_t len = strlen(text);
    text[len] = '\n'; /* json_dumps leaves room: the NUL becomes the newline */
    pthread_mutex_lock(&log_lock);
    write_all(atomic_load(&log_fd), text, len + 1);
    pthread_mutex_unlock(&log_lock);
    free(text);
}

void log_msg(enum log_level level, const char *component, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    char msg[LOG_MESSAGE_MAX + 1];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_json(level, component, msg, NULL);
}
