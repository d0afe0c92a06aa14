/*
 * text: JavaScript strings as the C strings the rest of stratd keeps and
 * writes into JSON (lastError, log lines, stacks, diagnostics).
 *
 * QuickJS hands out a string as UTF-8, except that a lone surrogate (a
 * message cut with slice() in the middle of an emoji) comes out as the
 * three bytes of its code unit, which are not UTF-8: jansson refuses the
 * whole string, and a lastError built from it was lost. A NUL is a
 * character like any other in JavaScript and ended every C string at it.
 */
#include "js/sandbox.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define REPLACEMENT "\xEF\xBF\xBD"
#define NUL_ESCAPE "\\u0000"

/* Bytes of the well-formed UTF-8 sequence at s (1 to 4), or 0. */
static size_t sequence_length(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80)
        return 1;
    size_t need = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (s[0] >= 0xC2 && s[0] <= 0xDF) {
        need = 2;
    } else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
        need = 3;
        lo = s[0] == 0xE0 ? 0xA0 : 0x80; /* no overlong forms */
        hi = s[0] == 0xED ? 0x9F : 0xBF; /* no surrogates */
    } else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
        need = 4;
        lo = s[0] == 0xF0 ? 0x90 : 0x80;
        hi = s[0] == 0xF4 ? 0x8F : 0xBF; /* nothing above U+10FFFF */
    } else {
        return 0;
    }
    if (n < need || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < need; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    }
    return need;
}

/* The three bytes QuickJS writes for a lone surrogate (U+D800..U+DFFF). */
static bool encoded_surrogate(const unsigned char *s, size_t n)
{
    return n >= 3 && s[0] == 0xED && s[1] >= 0xA0 && s[1] <= 0xBF && (s[2] & 0xC0) == 0x80;
}

char *js_text_clean(const char *text, size_t len, size_t max, bool *cut)
{
    const unsigned char *s = (const unsigned char *)text;
    /* at worst every byte becomes the six bytes of the NUL escape */
    size_t room = len < SIZE_MAX / 6 && len * 6 < max ? len * 6 : max;
    char *out = malloc(room + 1);
    if (!out)
        return NULL;
    size_t used = 0, i = 0;
    while (i < len) {
        size_t in = sequence_length(s + i, len - i);
        const char *piece = text + i;
        size_t piece_len = in;
        if (in == 1 && s[i] == '\0') {
            piece = NUL_ESCAPE;
            piece_len = sizeof(NUL_ESCAPE) - 1;
        } else if (in == 0) {
            in = encoded_surrogate(s + i, len - i) ? 3 : 1;
            piece = REPLACEMENT;
            piece_len = sizeof(REPLACEMENT) - 1;
        }
        if (piece_len > room - used)
            break;
        memcpy(out + used, piece, piece_len);
        used += piece_len;
        i += in;
    }
    out[used] = '\0';
    if (cut)
        *cut = i < len;
    return out;
}

char *js_text_of(JSContext *ctx, JSValueConst value, size_t max)
{
    size_t len = 0;
    const char *text = JS_ToCStringLen(ctx, &len, value);
    if (!text)
        return NULL;
    char *out = js_text_clean(text, len, max, NULL);
    JS_FreeCString(ctx, text);
    return out;
}

void js_text_fit(char *text)
{
    size_t len = strlen(text);
    for (size_t back = 1; back <= 4 && back <= len; back++) {
        unsigned char c = (unsigned char)text[len - back];
        if ((c & 0xC0) == 0x80)
            continue; /* a continuation byte: its lead is further back */
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        if (back < need)
            text[len - back] = '\0';
        return;
    }
}
