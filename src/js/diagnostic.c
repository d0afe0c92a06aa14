/*
 * diagnostic: the {"stage", "message", "line", "column", "hint"} records
 * that compile, load and validation failures carry in err details.
 */
#include "js/internal.h"

#include "core/jsonutil.h"

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
