/*
 * diagnostic: the {"stage", "message", "line", "column", "hint"} records
 * that compile, load and validation failures carry in err details.
 */
#include "js/internal.h"

#include "core/jsonutil.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Messages quote the author's text and JS exception messages, which may be
 * cut mid-character or hold lone surrogates: build them lossily so that a
 * diagnostic is never lost to a UTF-8 error. */
json_t *js__diagnostic(const char *stage, const char *message, int line, int column,
                       const char *hint)
{
    message = message ? message : "";
    hint = hint ? hint : "";
    json_t *diag = json_object();
    /* json_object_set_new() releases the value when it fails */
    int rc = json_object_set_new(diag, "stage", json_string(stage));
    rc |= json_object_set_new(diag, "message", jsonutil_string_lossy(message, strlen(message)));
    rc |= json_object_set_new(diag, "line", json_integer(line));
    rc |= json_object_set_new(diag, "column", json_integer(column));
    rc |= json_object_set_new(diag, "hint", jsonutil_string_lossy(hint, strlen(hint)));
    if (rc != 0) {
        json_decref(diag);
        return NULL;
    }
    return diag;
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

int js__fail_one(struct err *err, json_t *diagnostic, const char *filename, int line, int column,
                 const char *message)
{
    json_t *list = diagnostic ? json_pack("[o]", diagnostic) : NULL;
    if (line > 0)
        js__fail(err, list, "%s:%d:%d: %s", filename, line, column, message);
    else
        js__fail(err, list, "%s: %s", filename, message);
    return -1;
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

void js__skip_byte_order_mark(const char **source, size_t *len)
{
    if (*len >= 3 && memcmp(*source, "\xEF\xBB\xBF", 3) == 0) {
        *source += 3;
        *len -= 3;
    }
}

size_t js__line_break(const char *p, const char *end)
{
    if (p >= end)
        return 0;
    if (*p == '\n')
        return 1;
    if (*p == '\r')
        return end - p > 1 && p[1] == '\n' ? 2 : 1;
    if (end - p >= 3 && (unsigned char)p[0] == 0xE2 && (unsigned char)p[1] == 0x80 &&
        ((unsigned char)p[2] == 0xA8 || (unsigned char)p[2] == 0xA9))
        return 3;
    return 0;
}

/* The end of the line at p: its line break, or the end of the source. */
static const char *line_end(const char *p, const char *end)
{
    while (p < end && !js__line_break(p, end))
        p++;
    return p;
}

const char *js__source_line(const char *source, size_t len, int line, size_t *line_len)
{
    if (line < 1)
        return NULL;
    const char *p = source, *end = source + len;
    for (int i = 1; i < line; i++) {
        p = line_end(p, end);
        if (p == end)
            return NULL;
        p += js__line_break(p, end);
    }
    *line_len = (size_t)(line_end(p, end) - p);
    return p;
}

/* QuickJS counts a line at each LF; the engine compiles sources with each
 * lone CR made an LF (js__engine_text), so a lone CR ends its line too. */
static const char *engine_line_end(const char *p, const char *end)
{
    for (; p < end; p++) {
        if (*p == '\n' || (*p == '\r' && (end - p == 1 || p[1] != '\n')))
            return p;
    }
    return NULL;
}

void js__engine_text(char *text, size_t len)
{
    char *end = text + len;
    for (char *p = memchr(text, '\r', len); p; p = memchr(p + 1, '\r', (size_t)(end - p - 1))) {
        if (end - p == 1 || p[1] != '\n')
            *p = '\n';
        if (end - p == 1)
            break;
    }
}

size_t js__engine_offset(const char *source, size_t len, int line, int column)
{
    const char *p = source, *end = source + len;
    for (int i = 1; i < line; i++) {
        const char *nl = engine_line_end(p, end);
        if (!nl)
            return len;
        p = nl + 1;
    }
    const char *nl = engine_line_end(p, end);
    return (size_t)(p - source) + js__column_offset(p, (size_t)((nl ? nl : end) - p), column);
}

void js__offset_position(const char *source, size_t len, size_t off, int *line, int *column)
{
    const char *at = source + (off < len ? off : len), *line_start = source;
    int n = 1;
    for (const char *p = source; p < at;) {
        size_t brk = js__line_break(p, source + len);
        /* a position between a CR and its LF is still on the CR's line */
        if (brk == 0 || brk > (size_t)(at - p)) {
            p++;
            continue;
        }
        p += brk;
        line_start = p;
        if (n < INT_MAX)
            n++;
    }
    *line = n;
    *column = js__offset_column(line_start, (size_t)(at - line_start));
}

void js__engine_position(const char *source, size_t len, int *line, int *column)
{
    if (*line < 1)
        return;
    js__offset_position(source, len, js__engine_offset(source, len, *line, *column), line, column);
}

int js__offset_column(const char *line, size_t off)
{
    int column = 1;
    for (size_t i = 0; i < off; i++)
        column += ((unsigned char)line[i] & 0xC0) != 0x80;
    return column;
}

size_t js__column_offset(const char *line, size_t len, int column)
{
    size_t off = 0;
    for (int c = 1; c < column && off < len; c++) {
        off++;
        while (off < len && ((unsigned char)line[off] & 0xC0) == 0x80)
            off++;
    }
    return off;
}
