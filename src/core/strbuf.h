/*
 * strbuf: a growable, always NUL-terminated byte buffer.
 *
 * Contract
 * - STRBUF_INIT is a valid empty buffer; `data` is NULL until the first
 *   append, so use strbuf_cstr() to read it as a string.
 * - Allocation failure is sticky: appends after a failure do nothing and
 *   strbuf_failed() reports it, so a caller may append many pieces and check
 *   once at the end.
 * - The buffer owns `data`; strbuf_release() frees it, strbuf_detach() hands
 *   it to the caller (who then frees it with free()).
 * - Not thread-safe; a buffer belongs to one thread at a time.
 */
#ifndef STRATD_CORE_STRBUF_H
#define STRATD_CORE_STRBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct strbuf {
    char *data;
    size_t len;
    size_t cap;
    bool failed;
};

/* one line: the formatter would spread the initializer over four */
/* clang-format off */
#define STRBUF_INIT {NULL, 0, 0, false}
/* clang-format on */

bool strbuf_reserve(struct strbuf *sb, size_t extra);
void strbuf_append(struct strbuf *sb, const void *data, size_t len);
void strbuf_puts(struct strbuf *sb, const char *s);
void strbuf_putc(struct strbuf *sb, char c);
/* v in decimal, as "%lld" would write it, without the formatter's cost
 * (record writers append many). */
void strbuf_put_int64(struct strbuf *sb, int64_t v);
__attribute__((format(printf, 2, 3))) void strbuf_printf(struct strbuf *sb, const char *fmt, ...);
void strbuf_reset(struct strbuf *sb);
void strbuf_release(struct strbuf *sb);
char *strbuf_detach(struct strbuf *sb, size_t *len);
static inline bool strbuf_failed(const struct strbuf *sb)
{
    return sb->failed;
}
static inline const char *strbuf_cstr(const struct strbuf *sb)
{
    return sb->data ? sb->data : "";
}

#endif
