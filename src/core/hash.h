/*
 * hash: SHA-256 of revisions, spelled the way stratd shows hashes.
 *
 * A revision hash is shown everywhere as "sha256:" followed by 64 lowercase
 * hex digits (HASH_SPELLED_LEN characters). Thread-safe; no allocation.
 */
#ifndef STRATD_CORE_HASH_H
#define STRATD_CORE_HASH_H

#include "core/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HASH_HEX_LEN 64
#define HASH_PREFIX "sha256:"
#define HASH_PREFIX_LEN 7
#define HASH_SPELLED_LEN (HASH_PREFIX_LEN + HASH_HEX_LEN)

/* Writes 64 lowercase hex digits and a NUL into hex[HASH_HEX_LEN + 1]. */
void hash_sha256_hex(const void *data, size_t len, char hex[HASH_HEX_LEN + 1]);
/* Hashes a file by streaming it; also reports its size. ERR_NOT_FOUND when it
 * does not exist, ERR_INTERNAL on other I/O errors. */
int hash_file_sha256(const char *path, char hex[HASH_HEX_LEN + 1], uint64_t *size, struct err *err);
/* True when s[0..len) is all hex digits (either case). */
bool hash_is_hex(const char *s, size_t len);
/* Accepts "sha256:<64 hex>" or "<64 hex>", either case; writes the lowercase
 * 64 hex digits. Returns false on anything else. */
bool hash_parse_full(const char *text, char hex[HASH_HEX_LEN + 1]);
/* Writes "sha256:<hex>" into out[HASH_SPELLED_LEN + 1]. */
void hash_spell(const char *hex, char out[HASH_SPELLED_LEN + 1]);

#endif
