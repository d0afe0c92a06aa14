#include "core/hash.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void to_hex(const unsigned char *digest, char hex[HASH_HEX_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < 32; i++) {
        hex[2 * i] = digits[digest[i] >> 4];
        hex[2 * i + 1] = digits[digest[i] & 0xF];
    }
    hex[HASH_HEX_LEN] = '\0';
}

void hash_sha256_hex(const void *data, size_t len, char hex[HASH_HEX_LEN + 1])
{
    unsigned char digest[32];
    unsigned int digest_len = 0;
    EVP_Digest(data, len, digest, &digest_len, EVP_sha256(), NULL);
    to_hex(digest, hex);
}

int hash_file_sha256(const char *path, char hex[HASH_HEX_LEN + 1], uint64_t *size, struct err *err)
{
    /* never blocking on a FIFO in a file's place: refused below instead */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        err_set_errno(err, errno == ENOENT ? ERR_NOT_FOUND : ERR_INTERNAL, errno, "cannot open %s",
                      path);
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        err_set(err, ERR_INVALID, "%s is not a regular file", path);
        return -1;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(ctx);
        close(fd);
        err_set(err, ERR_INTERNAL, "cannot start SHA-256");
        return -1;
    }
    unsigned char buf[65536];
    uint64_t total = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err_set_errno(err, ERR_INTERNAL, errno, "cannot read %s", path);
            EVP_MD_CTX_free(ctx);
            close(fd);
            return -1;
        }
        if (n == 0)
            break;
        EVP_DigestUpdate(ctx, buf, (size_t)n);
        total += (uint64_t)n;
    }
    close(fd);
    unsigned char digest[32];
    unsigned int digest_len = 0;
    EVP_DigestFinal_ex(ctx, digest, &digest_len);
    EVP_MD_CTX_free(ctx);
    to_hex(digest, hex);
    if (size)
        *size = total;
    return 0;
}

bool hash_is_hex(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (!isxdigit((unsigned char)s[i]))
            return false;
    }
    return true;
}

bool hash_parse_full(const char *text, char hex[HASH_HEX_LEN + 1])
{
    if (strncmp(text, HASH_PREFIX, HASH_PREFIX_LEN) == 0)
        text += HASH_PREFIX_LEN;
    if (strlen(text) != HASH_HEX_LEN || !hash_is_hex(text, HASH_HEX_LEN))
        return false;
    for (int i = 0; i < HASH_HEX_LEN; i++)
        hex[i] = (char)tolower((unsigned char)text[i]);
    hex[HASH_HEX_LEN] = '\0';
    return true;
}

void hash_spell(const char *hex, char out[HASH_SPELLED_LEN + 1])
{
    memcpy(out, HASH_PREFIX, HASH_PREFIX_LEN);
    memcpy(out + HASH_PREFIX_LEN, hex, HASH_HEX_LEN);
    out[HASH_SPELLED_LEN] = '\0';
}
