/*
 * tls: the control plane's certificate and private key. They are read and
 * checked before the HTTP server starts, so that an operator learns at
 * start-up, with the file named, what libmicrohttpd would only refuse as
 * "cannot start": a missing or unreadable file, a file without a PEM
 * certificate or key, a key under a passphrase, a key that is not the
 * certificate's. They are read again on request (the gateway's SIGHUP), so
 * that a renewed certificate is served without a restart: a pair that fails
 * the same checks is refused and the one served goes on.
 *
 * Handshakes take the certificate through api_tls_retrieve(), which
 * libmicrohttpd's GnuTLS calls with no context of its own: a process serves
 * one HTTPS control plane at a time (api_tls_attach).
 *
 * Ownership: api_tls_load() creates the struct, api_tls_free() frees it
 * after the server that used it has stopped. Every pair ever served stays
 * in memory until then (a handshake under way may still hold the one it
 * was given; a reload whose files did not change makes no new one).
 *
 * Threads: api_tls_load, api_tls_reload, api_tls_subject and api_tls_free
 * on one thread (the main thread); api_tls_not_after,
 * api_tls_reload_failures and api_tls_retrieve on any thread.
 *
 * Errors: api_tls_load() returns -1 with ERR_INVALID naming the setting,
 * the file and what is wrong with it (ERR_INTERNAL when memory ran out);
 * nothing is left allocated. api_tls_reload() returns the same errors and
 * leaves the pair served as it was.
 */
#ifndef STRATD_API_TLS_H
#define STRATD_API_TLS_H

#include "core/err.h"

#include <gnutls/abstract.h>
#include <stddef.h>
#include <stdint.h>

struct api_tls;

/* GnuTLS's priorities for the HTTPS port: TLS 1.3 and 1.2 only (the
 * versions before are broken or deprecated) and AEAD ciphers only: TLS
 * 1.2's CBC suites, which have a history of padding-oracle attacks, are
 * refused, as current server guidance has it. The client's order decides
 * among the rest: a server order would make GnuTLS ask a client whose key
 * share is not its own first group for another one, a round trip more. */
#define API_TLS_PRIORITIES                                                                         \
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:"            \
    "+CHACHA20-POLY1305"

/* Room for a certificate's subject, one line, for the log. */
#define API_TLS_SUBJECT_MAX 256

int api_tls_load(struct api_tls **out, const char *certificate_path, const char *key_path,
                 struct err *err);

/* Reads both files again: 1 when a new pair is served from now on, 0 when
 * the files hold the pair served already, -1 (counted) when they hold no
 * pair that could be served. */
int api_tls_reload(struct api_tls *tls, struct err *err);

/* The served certificate's end of validity (Unix seconds) and subject. */
int64_t api_tls_not_after(const struct api_tls *tls);
void api_tls_subject(const struct api_tls *tls, char *out, size_t size);

/* Reloads refused since the start. */
uint64_t api_tls_reload_failures(const struct api_tls *tls);

/* Makes `tls` the pair api_tls_retrieve() hands out; -1 (ERR_CONFLICT)
 * when another is attached. Detach before freeing. */
int api_tls_attach(struct api_tls *tls, struct err *err);
void api_tls_detach(struct api_tls *tls);

/* GnuTLS's certificate callback (MHD_OPTION_HTTPS_CERT_CALLBACK). */
gnutls_certificate_retrieve_function2 api_tls_retrieve;

void api_tls_free(struct api_tls *tls);

#endif
