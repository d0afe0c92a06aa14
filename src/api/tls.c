/*
 * tls: PEM files checked with OpenSSL's libcrypto (already linked for
 * SHA-256), the same checks GnuTLS makes, but each with its own message;
 * then imported into GnuTLS, which libmicrohttpd serves with, as one
 * immutable pair published through an atomic pointer (tls.h).
 */
#include "api/tls.h"

#include "core/fsutil.h"
#include "core/hash.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PEM_MAX_BYTES (1 << 20)

/* OpenSSL asks for a passphrase only for an encrypted key: refused. */
static int refuse_passphrase(char *buf, int size, int rwflag, void *asked)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    *(bool *)asked = true;
    return -1;
}

static X509 *read_certificate(const char *pem, size_t len)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    X509 *cert = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    return cert;
}

static EVP_PKEY *read_key(const char *pem, size_t len, bool *asked)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, refuse_passphrase, asked) : NULL;
    BIO_free(bio);
    return key;
}

static int64_t not_after(const X509 *cert)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) != 1)
        return 0;
    return (int64_t)timegm(&tm);
}

/* One certificate chain and its key as GnuTLS serves them; never changed
 * once published. */
struct tls_pair {
    gnutls_pcert_st *chain;
    unsigned chain_len;
    gnutls_privkey_t key;
    char certificate_sha256[HASH_HEX_LEN + 1]; /* of the files' bytes, to tell a change */
    char key_sha256[HASH_HEX_LEN + 1];
    int64_t not_after_s;
    char subject[API_TLS_SUBJECT_MAX];
    struct tls_pair *older; /* the pairs served before (tls.h says why kept) */
};

struct api_tls {
    char *certificate_path;
    char *key_path;
    _Atomic(struct tls_pair *) served;
    atomic_uint_least64_t reload_failures;
};

/* The struct api_tls_retrieve() serves from (tls.h). */
static _Atomic(struct api_tls *) attached;

/* Both files as read; the key's bytes are wiped when freed. */
struct pem_files {
    char *certificate;
    size_t certificate_len;
    char *key;
    size_t key_len;
};

static void pem_files_free(struct pem_files *f)
{
    free(f->certificate);
    if (f->key) /* the key does not linger in freed memory */
        OPENSSL_cleanse(f->key, f->key_len);
    free(f->key);
    memset(f, 0, sizeof *f);
}

static int read_files(const struct api_tls *tls, struct pem_files *f, struct err *err)
{
    memset(f, 0, sizeof *f);
    struct err inner = ERR_INIT;
    const char *which = "http.tls_certificate";
    int rc = fsutil_read_file(tls->certificate_path, PEM_MAX_BYTES, &f->certificate,
                              &f->certificate_len, &inner);
    if (rc == 0) {
        which = "http.tls_key";
        rc = fsutil_read_file(tls->key_path, PEM_MAX_BYTES, &f->key, &f->key_len, &inner);
    }
    if (rc != 0) {
        err_set(err, ERR_INVALID, "%s: %s", which, inner.message);
        err_clear(&inner);
        pem_files_free(f);
    }
    return rc;
}

/* Parses both with libcrypto and checks they belong together; fills the
 * certificate's facts. */
static int check_pair(struct tls_pair *pair, const struct pem_files *f, const struct api_tls *tls,
                      struct err *err)
{
    bool asked = false;
    X509 *cert = read_certificate(f->certificate, f->certificate_len);
    EVP_PKEY *key = cert ? read_key(f->key, f->key_len, &asked) : NULL;
    int rc = -1;
    if (!cert)
        err_set(err, ERR_INVALID, "http.tls_certificate: %s holds no PEM certificate",
                tls->certificate_path);
    else if (!key && asked)
        err_set(err, ERR_INVALID,
                "http.tls_key: %s is encrypted; give the key without a passphrase (keep the "
                "file readable by the gateway's user only)",
                tls->key_path);
    else if (!key)
        err_set(err, ERR_INVALID, "http.tls_key: %s holds no PEM private key", tls->key_path);
    else if (X509_check_private_key(cert, key) != 1)
        err_set(err, ERR_INVALID,
                "http.tls_key: the key in %s is not the one of the certificate in %s",
                tls->key_path, tls->certificate_path);
    else {
        pair->not_after_s = not_after(cert);
        X509_NAME_oneline(X509_get_subject_name(cert), pair->subject, sizeof pair->subject);
        rc = 0;
    }
    EVP_PKEY_free(key);
    X509_free(cert);
    ERR_clear_error();
    return rc;
}

/* An upper bound of the certificates in a PEM text: its armour lines. */
static unsigned count_pem_blocks(const char *pem)
{
    unsigned n = 0;
    for (const char *p = pem; (p = strstr(p, "-----BEGIN ")) != NULL; p++)
        n++;
    return n ? n : 1;
}

/* The checked pair in GnuTLS's form. */
static int import_pair(struct tls_pair *pair, const struct pem_files *f, const struct api_tls *tls,
                       struct err *err)
{
    unsigned max = count_pem_blocks(f->certificate);
    pair->chain = calloc(max, sizeof *pair->chain);
    if (!pair->chain || gnutls_privkey_init(&pair->key) != GNUTLS_E_SUCCESS) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    gnutls_datum_t certificate = {(unsigned char *)f->certificate, (unsigned)f->certificate_len};
    gnutls_datum_t key = {(unsigned char *)f->key, (unsigned)f->key_len};
    int rc =
        gnutls_pcert_list_import_x509_raw(pair->chain, &max, &certificate, GNUTLS_X509_FMT_PEM, 0);
    if (rc < 0) {
        err_set(err, ERR_INVALID, "http.tls_certificate: GnuTLS cannot read %s: %s",
                tls->certificate_path, gnutls_strerror(rc));
        return -1;
    }
    pair->chain_len = max;
    rc = gnutls_privkey_import_x509_raw(pair->key, &key, GNUTLS_X509_FMT_PEM, NULL, 0);
    if (rc < 0) {
        err_set(err, ERR_INVALID, "http.tls_key: GnuTLS cannot read %s: %s", tls->key_path,
                gnutls_strerror(rc));
        return -1;
    }
    return 0;
}

static void pair_free(struct tls_pair *pair)
{
    for (unsigned i = 0; i < pair->chain_len; i++)
        gnutls_pcert_deinit(&pair->chain[i]);
    free(pair->chain);
    if (pair->key)
        gnutls_privkey_deinit(pair->key);
    free(pair);
}

/* A served pair made of the files' bytes, or NULL with err set. */
static struct tls_pair *make_pair(const struct api_tls *tls, const struct pem_files *f,
                                  struct err *err)
{
    struct tls_pair *pair = calloc(1, sizeof *pair);
    if (!pair) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    if (check_pair(pair, f, tls, err) != 0 || import_pair(pair, f, tls, err) != 0) {
        pair_free(pair);
        return NULL;
    }
    hash_sha256_hex(f->certificate, f->certificate_len, pair->certificate_sha256);
    hash_sha256_hex(f->key, f->key_len, pair->key_sha256);
    return pair;
}

int api_tls_load(struct api_tls **out, const char *certificate_path, const char *key_path,
                 struct err *err)
{
    *out = NULL;
    struct api_tls *tls = calloc(1, sizeof *tls);
    if (!tls || !(tls->certificate_path = strdup(certificate_path)) ||
        !(tls->key_path = strdup(key_path))) {
        api_tls_free(tls);
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    struct pem_files f;
    struct tls_pair *pair = read_files(tls, &f, err) == 0 ? make_pair(tls, &f, err) : NULL;
    pem_files_free(&f);
    if (!pair) {
        api_tls_free(tls);
        return -1;
    }
    atomic_init(&tls->served, pair);
    *out = tls;
    return 0;
}

static bool same_files(const struct tls_pair *pair, const struct pem_files *f)
{
    char hex[HASH_HEX_LEN + 1];
    hash_sha256_hex(f->certificate, f->certificate_len, hex);
    if (strcmp(hex, pair->certificate_sha256) != 0)
        return false;
    hash_sha256_hex(f->key, f->key_len, hex);
    return strcmp(hex, pair->key_sha256) == 0;
}

int api_tls_reload(struct api_tls *tls, struct err *err)
{
    struct tls_pair *served = atomic_load(&tls->served);
    struct pem_files f;
    if (read_files(tls, &f, err) != 0) {
        atomic_fetch_add(&tls->reload_failures, 1);
        return -1;
    }
    int rc = 0;
    if (!same_files(served, &f)) {
        struct tls_pair *pair = make_pair(tls, &f, err);
        if (pair) {
            pair->older = served;
            atomic_store_explicit(&tls->served, pair, memory_order_release);
            rc = 1;
        } else {
            atomic_fetch_add(&tls->reload_failures, 1);
            rc = -1;
        }
    }
    pem_files_free(&f);
    return rc;
}

int64_t api_tls_not_after(const struct api_tls *tls)
{
    return atomic_load_explicit(&tls->served, memory_order_acquire)->not_after_s;
}

void api_tls_subject(const struct api_tls *tls, char *out, size_t size)
{
    snprintf(out, size, "%s", atomic_load(&tls->served)->subject);
}

uint64_t api_tls_reload_failures(const struct api_tls *tls)
{
    return atomic_load(&tls->reload_failures);
}

int api_tls_attach(struct api_tls *tls, struct err *err)
{
    struct api_tls *none = NULL;
    if (!atomic_compare_exchange_strong(&attached, &none, tls)) {
        err_set(err, ERR_CONFLICT, "another HTTPS server of this process holds the certificate");
        return -1;
    }
    return 0;
}

void api_tls_detach(struct api_tls *tls)
{
    struct api_tls *mine = tls;
    atomic_compare_exchange_strong(&attached, &mine, NULL);
}

int api_tls_retrieve(gnutls_session_t session, const gnutls_datum_t *req_ca_rdn, int nreqs,
                     const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length,
                     gnutls_pcert_st **chain, unsigned int *chain_len, gnutls_privkey_t *key)
{
    (void)session;
    (void)req_ca_rdn;
    (void)nreqs;
    (void)pk_algos;
    (void)pk_algos_length;
    struct api_tls *tls = atomic_load_explicit(&attached, memory_order_acquire);
    if (!tls)
        return -1;
    struct tls_pair *pair = atomic_load_explicit(&tls->served, memory_order_acquire);
    *chain = pair->chain;
    *chain_len = pair->chain_len;
    *key = pair->key;
    return 0;
}

void api_tls_free(struct api_tls *tls)
{
    if (!tls)
        return;
    struct tls_pair *pair = atomic_load(&tls->served);
    while (pair) {
        struct tls_pair *older = pair->older;
        pair_free(pair);
        pair = older;
    }
    free(tls->certificate_path);
    free(tls->key_path);
    free(tls);
}
