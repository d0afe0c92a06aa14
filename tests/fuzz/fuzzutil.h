/*
 * Helpers shared by the libFuzzer harnesses: the entry points' prototypes,
 * a NUL-terminated copy of an input, and invariant checks that abort (which
 * libFuzzer records as a crash, keeping the input).
 */
#ifndef STRATD_TESTS_FUZZUTIL_H
#define STRATD_TESTS_FUZZUTIL_H

#include "core/err.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Reports a broken invariant and aborts. */
__attribute__((format(printf, 1, 2), noreturn)) static inline void fuzz_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("fuzz invariant broken: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

#define fuzz_check(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fuzz_fail(__VA_ARGS__);                                                                \
    } while (0)

/* The input as a malloc'ed C string (it may hold NULs of its own). */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        abort();
    if (size)
        memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

/* Where harnesses keep their files: tmpfs when there is one, because
 * rewriting or fsyncing a file on a disk costs milliseconds per input. */
static inline const char *fuzz_tmpdir(void)
{
    if (access("/dev/shm", W_OK | X_OK) == 0)
        return "/dev/shm";
    const char *tmp = getenv("TMPDIR");
    return tmp && *tmp ? tmp : "/tmp";
}

/* A failure of a pure function over untrusted input is the input's fault:
 * it must say so with one of the expected kinds and a message. */
static inline void fuzz_check_err(const struct err *err, const char *what, unsigned kinds)
{
    fuzz_check(err->kind != ERR_NONE && (kinds & (1u << err->kind)), "%s: unexpected kind %s: %s",
               what, err_kind_name(err->kind), err->message);
    fuzz_check(err->message[0] != '\0', "%s: failed without a message", what);
    fuzz_check(!err->details || json_is_object(err->details), "%s: details is not an object", what);
}

#define FUZZ_KIND(k) (1u << (k))

#endif
