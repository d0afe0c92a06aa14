/*
 * tls: PEM files checked with OpenSSL's libcrypto (already linked for
 * SHA-256), the same checks libmicrohttpd's GnuTLS makes when it starts,
 * but each with its own message (tls.h).
 */
#include "api/tls.h"

#include "core/fsutil.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdbool.h>
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

/* Parses both and checks they belong together; fills the certificate's
 * facts. */
static int check_pair(struct api_tls *tls, size_t cert_len, size_t key_len,
                      const char *certificate_path, const char *key_path, struct err *err)
{
    bool asked = false;
    X509 *cert = read_certificate(tls->certificate_pem, cert_len);
    EVP_PKEY *key = cert ? read_key(tls->key_pem, key_len, &asked) : NULL;
    int rc = -1;
    if (!cert)
        err_set(err, ERR_INVALID, "http.tls_certificate: %s holds no PEM certificate",
                certificate_path);
    else if (!key && asked)
        err_set(err, ERR_INVALID,
                "http.tls_key: %s is encrypted; give the key without a passphrase (keep the "
                "file readable by the gateway's user only)",
                key_path);
    else if (!key)
        err_set(err, ERR_INVALID, "http.tls_key: %s holds no PEM private key", key_path);
    else if (X509_check_private_key(cert, key) != 1)
        err_set(err, ERR_INVALID,
                "http.tls_key: the key in %s is not the one of the certificate in %s", key_path,
                certificate_path);
    else {
        tls->not_after_s = not_after(cert);
        X509_NAME_oneline(X509_get_subject_name(cert), tls->subject, sizeof tls->subject);
        rc = 0;
    }
    EVP_PKEY_free(key);
    X509_free(cert);
    ERR_clear_error();
    return rc;
}

int api_tls_load(struct api_tls *tls, const char *certificate_path, const char *key_path,
                 struct err *err)
{
    memset(tls, 0, sizeof *tls);
    struct err inner = ERR_INIT;
    size_t cert_len = 0, key_len = 0;
    const char *which = "http.tls_certificate";
    int rc =
        fsutil_read_file(certificate_path, PEM_MAX_BYTES, &tls->certificate_pem, &cert_len, &inner);
    if (rc == 0) {
        which = "http.tls_key";
        rc = fsutil_read_file(key_path, PEM_MAX_BYTES, &tls->key_pem, &key_len, &inner);
    }
    if (rc != 0) {
        err_set(err, ERR_INVALID, "%s: %s", which, inner.message);
        err_clear(&inner);
    } else {
        rc = check_pair(tls, cert_len, key_len, certificate_path, key_path, err);
    }
    if (rc != 0)
        api_tls_free(tls);
    return rc;
}

void api_tls_free(struct api_tls *tls)
{
    if (!tls)
        return;
    free(tls->certificate_pem);
    if (tls->key_pem) /* the key does not linger in freed memory */
        OPENSSL_cleanse(tls->key_pem, strlen(tls->key_pem));
    free(tls->key_pem);
    memset(tls, 0, sizeof *tls);
}
