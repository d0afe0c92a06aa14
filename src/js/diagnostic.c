/*
 * diagnostic: the {"stage", "message", "line", "column", "hint"} records
 * that compile, load and validation failures carry in err details.
 */
#include "js/internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

json_t *js__diagnostic(const char *stage, const char *message, int line, int column,
                       const char *hint)
{
    return json_pack("{s:s, s:s, s:i, s:i, s:s}", "stage", stage, "message", message ? message : "",
                     "line", line, "column", column, "hint", hint ? hint : "");
}

void js__fail(struct err *err, json_t *diagnostics, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_vset(err, ERR_UNPROCESSABLE, fmt, ap);
    va_end(ap);
    if (!diagnostics)
        return; /* out of memory: the message still says what failed */
    err_set_details(err, json_pack("{s:o}", "diagnostics", diagnostics));
}

void js__format_bytes(size_t bytes, char *out, size_t size)
{
    if (bytes >= ((size_t)1 << 20) && bytes % ((size_t)1 << 20) == 0)
        snprintf(out, size, "%zu MiB", bytes >> 20);
    else if (bytes >= 1024 && bytes % 1024 == 0)
        snprintf(out, size, "%zu KiB", bytes >> 10);
    else
        snprintf(out, size, "%zu bytes", bytes);
}

const char *js__source_line(const char *source, size_t len, int line, size_t *line_len)
{
    if (line < 1)
        return NULL;
    const char *p = source, *end = source + len;
    for (int i = 1; i < line; i++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            return NULL;
        p = nl + 1;
    }
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    *line_len = (size_t)((nl ? nl : end) - p);
    if (*line_len > 0 && p[*line_len - 1] == '\r')
        (*line_len)--;
    return p;
}
