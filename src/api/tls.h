/*
 * tls: the control plane's certificate and private key, read and checked
 * before the HTTP server starts, so that an operator learns at start-up,
 * with the file named, what libmicrohttpd would only refuse as "cannot
 * start": a missing or unreadable file, a file without a PEM certificate
 * or key, a key under a passphrase, a key that is not the certificate's.
 *
 * Ownership and threads: api_tls_load() fills a caller's struct with
 * malloc'ed PEM text, freed by api_tls_free(); the struct must outlive the
 * api it is given to (api_options.tls). Main thread.
 *
 * Errors: api_tls_load() returns -1 with ERR_INVALID naming the file and
 * what is wrong with it; nothing is left allocated.
 */
#ifndef STRATD_API_TLS_H
#define STRATD_API_TLS_H

#include "core/err.h"

#include <stdint.h>

struct api_tls {
    char *certificate_pem; /* the certificate, then any chain, as read */
    char *key_pem;
    int64_t not_after_s; /* the certificate's end of validity, Unix seconds */
    char subject[256];   /* its subject, one line, for the log */
};

int api_tls_load(struct api_tls *tls, const char *certificate_path, const char *key_path,
                 struct err *err);
void api_tls_free(struct api_tls *tls);

#endif
