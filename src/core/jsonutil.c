#include "core/jsonutil.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

json_t *jsonutil_parse(const char *data, size_t len, struct err *err)
{
    json_error_t jerr;
    json_t *value = json_loadb(data, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (value)
        return value;
    err_set(err, ERR_INVALID, "invalid JSON at line %d, column %d: %s", jerr.line, jerr.column,
            jerr.text);
    err_add_detail(err, "line", json_integer(jerr.line));
    err_add_detail(err, "column", json_integer(jerr.column));
    err_add_detail(err, "position", json_integer(jerr.position));
    return NULL;
}

json_t *jsonutil_parse_object(const char *data, size_t len, struct err *err)
{
    json_t *value = jsonutil_parse(data, len, err);
    if (value && !json_is_object(value)) {
        json_decref(value);
        err_set(err, ERR_INVALID, "expected a JSON object at the top level");
        return NULL;
    }
    return value;
}

/* Length of the valid UTF-8 sequence starting at s, or 0 if invalid. */
static size_t utf8_sequence_length(const unsigned char *s, size_t left)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if ((c & 0xE0) == 0xC0) {
        n = 2;
        cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3;
        cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n > left)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    static const uint32_t min_for_length[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_for_length[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

json_t *jsonutil_string_lossy(const char *data, size_t len)
{
    json_t *value = json_stringn(data, len);
    if (value)
        return value;
    /* Worst case every byte becomes the 3-byte replacement character. */
    char *clean = malloc(len * 3 + 1);
    if (!clean)
        return NULL;
    size_t out = 0;
    const unsigned char *s = (const unsigned char *)data;
    for (size_t i = 0; i < len;) {
        size_t n = s[i] ? utf8_sequence_length(s + i, len - i) : 0;
        if (n == 0) {
            memcpy(clean + out, "\xEF\xBF\xBD", 3);
            out += 3;
            i++;
        } else {
            memcpy(clean + out, s + i, n);
            out += n;
            i += n;
        }
    }
    value = json_stringn(clean, out);
    free(clean);
    return value;
}

/* Reals at 15 significant digits: every decimal a person typed survives
 * (0.0005 stays 0.0005 instead of 0.00050000000000000001), and sums such as
 * fees print without binary noise. */
char *jsonutil_dump(const json_t *value, size_t *len)
{
    char *text = json_dumps(value, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY |
                                       JSON_REAL_PRECISION(15));
    if (text && len)
        *len = strlen(text);
    return text;
}

char *jsonutil_dump_pretty(const json_t *value, size_t *len)
{
    char *text = json_dumps(value, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (!text)
        return NULL;
    size_t n = strlen(text);
    char *with_newline = realloc(text, n + 2);
    if (!with_newline) {
        free(text);
        return NULL;
    }
    with_newline[n] = '\n';
    with_newline[n + 1] = '\0';
    if (len)
        *len = n + 1;
    return with_newline;
}

static int wrong_type(const char *key, const char *expected, struct err *err)
{
    err_set(err, ERR_INVALID, "field '%s' must be %s", key, expected);
    err_add_detail(err, "field", json_string(key));
    return -1;
}

int jsonutil_get_string(const json_t *obj, const char *key, const char **value, struct err *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return 1;
    if (!json_is_string(v))
        return wrong_type(key, "a string", err);
    *value = json_string_value(v);
    return 0;
}

int jsonutil_get_bool(const json_t *obj, const char *key, bool *value, struct err *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return 1;
    if (!json_is_boolean(v))
        return wrong_type(key, "a boolean", err);
    *value = json_is_true(v);
    return 0;
}

int jsonutil_get_int(const json_t *obj, const char *key, long long *value, struct err *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return 1;
    if (!json_is_integer(v))
        return wrong_type(key, "an integer", err);
    *value = json_integer_value(v);
    return 0;
}

int jsonutil_get_string_array(const json_t *obj, const char *key, const json_t **value,
                              struct err *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return 1;
    if (!json_is_array(v))
        return wrong_type(key, "an array of strings", err);
    size_t i;
    json_t *item;
    json_array_foreach(v, i, item)
    {
        if (!json_is_string(item))
            return wrong_type(key, "an array of strings", err);
    }
    *value = v;
    return 0;
}

void jsonutil_put_string(struct strbuf *sb, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    for (; *p; p++) {
        if (*p < 0x20 || *p >= 0x80 || *p == '"' || *p == '\\')
            break;
    }
    if (!*p) { /* the usual case: nothing to escape */
        strbuf_putc(sb, '"');
        strbuf_puts(sb, s);
        strbuf_putc(sb, '"');
        return;
    }
    /* escapes and UTF-8 checks exactly as jansson writes them */
    json_t *str = json_string(s);
    size_t len = 0;
    char *text = str ? jsonutil_dump(str, &len) : NULL;
    json_decref(str);
    if (text)
        strbuf_append(sb, text, len);
    else
        strbuf_puts(sb, "null");
    free(text);
}
