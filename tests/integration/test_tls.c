/*
 * HTTPS: with http.tls_certificate and http.tls_key the control plane
 * speaks TLS 1.2 or 1.3 only, with the certificate given: every call works
 * as over HTTP (a read, an upload's body), the certificate's end of
 * validity is a metric and a log line, a plain-HTTP client gets a 400 that
 * says why, a connection that sends nothing is closed at the idle timeout,
 * and the server goes on serving. Settings that cannot work (one of the two
 * files, a missing file, no certificate in it, a key under a passphrase, a
 * key of another certificate) stop the start with a message naming the
 * setting and the file, before the state is touched. SIGHUP serves a
 * renewed pair without a restart, and refuses one that fails those checks.
 * Handshakes take AEAD ciphers only (no CBC); a service
 * manager hears each reload's outcome; `serve --check` names the
 * certificate.
 *
 * Certificates are made for each run with the openssl command.
 */
#include "testutil.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A self-signed certificate for 127.0.0.1 valid `days`, and its key, under
 * dir as <name>.crt and <name>.key. */
static void make_certificate(const char *dir, const char *name, int days)
{
    char *out = NULL;
    int rc = tu_run(&out,
                    "cd '%s' && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
                    "-nodes -keyout '%s.key' -out '%s.crt' -days %d -subj /CN=127.0.0.1 "
                    "-addext subjectAltName=IP:127.0.0.1 2>&1",
                    dir, name, name, days);
    if (rc != 0)
        fail_msg("openssl could not make a certificate: %s", out ? out : "");
    free(out);
}

/* Starts the server with dir/<name>.crt and dir/<name>.key, and `more`
 * lines of the http section. */
static void start_with_certificate_and(struct tu_server *srv, const char *dir, const char *name,
                                       const char *more)
{
    char *yaml = tu_path("http:\n  tls_certificate: %s/%s.crt\n  tls_key: %s/%s.key\n%s", dir, name,
                         dir, name, more);
    struct tu_server_options opts = {.config_yaml = yaml};
    tu_server_start(srv, &opts);
    free(yaml);
}

static void start_with_certificate(struct tu_server *srv, const char *dir, const char *name)
{
    start_with_certificate_and(srv, dir, name, "");
}

/* A plain TCP connection to the server's port. */
static int connect_to_port(const struct tu_server *srv)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)srv->port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    return fd;
}

/* One GET over TLS no newer than 1.1; the curl result. */
static CURLcode get_with_old_tls(const struct tu_server *srv, const char *ca)
{
    CURL *curl = curl_easy_init();
    assert_non_null(curl);
    char *url = tu_path("%s/healthz", srv->base_url);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CAINFO, ca);
    curl_easy_setopt(curl, CURLOPT_SSLVERSION,
                     (long)(CURL_SSLVERSION_TLSv1_0 | CURL_SSLVERSION_MAX_TLSv1_1));
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    CURLcode rc = curl_easy_perform(curl);
    curl_easy_cleanup(curl);
    free(url);
    return rc;
}

/* `request` sent in the clear to the HTTPS port: what came back before the
 * connection closed (malloc'ed, maybe empty), or NULL when it stayed open
 * for 30 s. */
static char *plain_http_answer(const struct tu_server *srv, const char *request)
{
    int fd = connect_to_port(srv);
    size_t len = strlen(request);
    assert_int_equal(send(fd, request, len, MSG_NOSIGNAL), (ssize_t)len);
    char *got = calloc(1, 4096);
    assert_non_null(got);
    len = 0;
    for (;;) {
        struct pollfd pfd = {fd, POLLIN, 0};
        if (poll(&pfd, 1, 30000) <= 0) {
            free(got);
            got = NULL;
            break;
        }
        ssize_t n = recv(fd, got + len, 4095 - len, 0);
        if (n <= 0 || len + (size_t)n >= 4095)
            break;
        len += (size_t)n;
    }
    close(fd);
    return got;
}

/* The cipher `openssl s_client <options>` negotiates with the server, or
 * NULL when no handshake completed. */
static char *negotiated_cipher(const struct tu_server *srv, const char *options)
{
    char *out = NULL;
    tu_run(&out, "echo | openssl s_client -connect 127.0.0.1:%d %s 2>&1", srv->port, options);
    const char *at = strstr(out, "Cipher is ");
    char *cipher = NULL;
    if (at) {
        at += strlen("Cipher is ");
        cipher = strndup(at, strcspn(at, "\n"));
    }
    free(out);
    if (cipher && strcmp(cipher, "(NONE)") == 0) {
        free(cipher);
        cipher = NULL;
    }
    return cipher;
}

static void expect_cipher(const struct tu_server *srv, const char *options, const char *expected)
{
    char *cipher = negotiated_cipher(srv, options);
    if (expected ? !cipher || strcmp(cipher, expected) != 0 : cipher != NULL)
        fail_msg("openssl s_client %s negotiated %s, expected %s", options,
                 cipher ? cipher : "nothing", expected ? expected : "a refusal");
    free(cipher);
}

static void test_https_serves_with_the_certificate(void **state)
{
    struct tu_server *srv = *state;
    char *dir = tu_tempdir("stratd-tls");
    make_certificate(dir, "gw", 30);
    start_with_certificate(srv, dir, "gw");
    assert_int_equal(strncmp(srv->base_url, "https://", 8), 0);
    char *ca = tu_path("%s/gw.crt", dir);
    tu_trust_certificate(ca);

    json_t *health = tu_get_json(srv, 200, "/healthz");
    assert_string_equal(tu_jstr(health, "status"), "ok");
    json_decref(health);
    char *src = tu_module_source("secure", NULL, NULL);
    tu_upload_expect(srv, src, NULL, 201, NULL);
    free(src);
    json_t *m = tu_get_json(srv, 200, "/strategies/modules/secure");
    assert_int_equal(json_array_size(json_object_get(m, "revisions")), 1);
    json_decref(m);

    /* the certificate's end of validity: 30 days from its making */
    double expiry = tu_metric(srv, "stratd_tls_certificate_expiry_timestamp_seconds");
    double expected = (double)time(NULL) + 30 * 86400.0;
    if (expiry < expected - 3600 || expiry > expected + 60)
        fail_msg("stratd_tls_certificate_expiry_timestamp_seconds reads %.0f, expected about %.0f",
                 expiry, expected);
    json_t *line = tu_wait_log(
        srv, NULL, "serving HTTPS with the TLS certificate /CN=127.0.0.1, valid until", TU_WAIT_S);
    json_decref(line);

    /* what the server refuses: TLS before 1.2, and plain HTTP */
    CURLcode old = get_with_old_tls(srv, ca);
    if (old == CURLE_OK)
        fail_msg("a client limited to TLS 1.1 was served");
    /* AEAD ciphers only, in the client's order; TLS 1.2's CBC suites refused */
    expect_cipher(srv, "-tls1_3 -ciphersuites TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256",
                  "TLS_AES_256_GCM_SHA384");
    expect_cipher(srv, "-tls1_3 -ciphersuites TLS_CHACHA20_POLY1305_SHA256",
                  "TLS_CHACHA20_POLY1305_SHA256");
    expect_cipher(srv, "-tls1_2 -cipher ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-SHA",
                  "ECDHE-ECDSA-AES128-GCM-SHA256");
    expect_cipher(srv, "-tls1_2 -cipher ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384", NULL);
    char *plain = plain_http_answer(srv, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n");
    if (!plain)
        fail_msg("a plain-HTTP request on the HTTPS port was held open for 30 s");
    if (strncmp(plain, "HTTP/1.1 400 ", 13) != 0 || !strstr(plain, "\r\nConnection: close\r\n") ||
        !strstr(plain, "{\"error\":\"this port speaks HTTPS only and the request came in plain "
                       "HTTP: call it with an https:// URL\",\"details\":{}}"))
        fail_msg("a plain-HTTP request on the HTTPS port was not told why it failed: %s", plain);
    free(plain);
    /* a request whose headers trickle in is told the same */
    plain = plain_http_answer(srv, "P");
    if (!plain || strncmp(plain, "HTTP/1.1 400 ", 13) != 0)
        fail_msg("a plain-HTTP request's first byte alone was not answered 400: %s",
                 plain ? plain : "(held open)");
    free(plain);
    assert_true(tu_metric(srv, "stratd_http_plain_requests_on_https_total") == 2.0);
    health = tu_get_json(srv, 200, "/healthz");
    json_decref(health);

    tu_trust_certificate(NULL);
    tu_server_stop(srv);
    free(ca);
    tu_remove_tree(dir);
    free(dir);
}

/* Connections to the HTTPS port wait for their first byte before the TLS
 * server takes them: one that sends nothing is closed at the idle timeout
 * and counted, while the others are served meanwhile. */
static void test_silent_connections_to_the_https_port_are_closed(void **state)
{
    struct tu_server *srv = *state;
    char *dir = tu_tempdir("stratd-tls");
    make_certificate(dir, "gw", 30);
    start_with_certificate_and(srv, dir, "gw", "  idle_timeout_seconds: 2\n");
    char *ca = tu_path("%s/gw.crt", dir);
    tu_trust_certificate(ca);
    int fd = connect_to_port(srv);
    json_t *health = tu_get_json(srv, 200, "/healthz");
    json_decref(health);
    struct pollfd pfd = {fd, POLLIN, 0};
    if (poll(&pfd, 1, 30000) != 1)
        fail_msg("a connection to the HTTPS port that sent nothing was open after 30 s");
    char byte;
    assert_int_equal(recv(fd, &byte, 1, 0), 0);
    close(fd);
    assert_true(tu_metric(srv, "stratd_http_silent_connections_closed_total") == 1.0);
    assert_true(tu_metric(srv, "stratd_http_plain_requests_on_https_total") == 0.0);
    tu_trust_certificate(NULL);
    tu_server_stop(srv);
    free(ca);
    tu_remove_tree(dir);
    free(dir);
}

/* A self-signed certificate that ended yesterday, and its key, under dir
 * as old.crt and old.key (the openssl command cannot date one back). */
static void make_expired_certificate(const char *dir)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *cert = X509_new();
    assert_non_null(key);
    assert_non_null(cert);
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 7);
    X509_gmtime_adj(X509_getm_notBefore(cert), -2L * 86400);
    X509_gmtime_adj(X509_getm_notAfter(cert), -86400L);
    X509_NAME *name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"127.0.0.1", -1, -1,
                               0);
    X509_set_issuer_name(cert, name);
    X509_set_pubkey(cert, key);
    assert_true(X509_sign(cert, key, EVP_sha256()) > 0);
    char *crt_path = tu_path("%s/old.crt", dir), *key_path = tu_path("%s/old.key", dir);
    FILE *f = fopen(crt_path, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_X509(f, cert), 1);
    fclose(f);
    f = fopen(key_path, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
    free(crt_path);
    free(key_path);
    X509_free(cert);
    EVP_PKEY_free(key);
}

/* An expiring certificate is served and the log warns when; an expired
 * one still starts (refusing to would stop the trading of a gateway
 * restarted at night), says so at error level, and clients refuse it. */
static void test_a_certificate_near_its_end_is_named_in_the_log(void **state)
{
    struct tu_server *srv = *state;
    char *dir = tu_tempdir("stratd-tls");
    make_certificate(dir, "soon", 3);
    start_with_certificate(srv, dir, "soon");
    json_t *line = tu_wait_log(
        srv, NULL, "serving HTTPS with the TLS certificate /CN=127.0.0.1, which expires at",
        TU_WAIT_S);
    assert_string_equal(tu_jstr(line, "level"), "warn");
    if (!strstr(tu_jstr(line, "msg"), " days and "))
        fail_msg("the warning does not say the time left: %s", tu_jstr(line, "msg"));
    json_decref(line);
    tu_server_cleanup(srv);

    make_expired_certificate(dir);
    start_with_certificate(srv, dir, "old");
    line = tu_wait_log(srv, NULL,
                       "serving HTTPS with the TLS certificate /CN=127.0.0.1, which expired at",
                       TU_WAIT_S);
    assert_string_equal(tu_jstr(line, "level"), "error");
    json_decref(line);
    char *ca = tu_path("%s/old.crt", dir);
    tu_trust_certificate(ca);
    struct tu_response res;
    char *url = tu_path("%s/healthz", srv->base_url);
    if (tu_http_try(&res, "GET", url, NULL) == 0)
        fail_msg("a client verifying the certificate was served with an expired one (HTTP %ld)",
                 res.status);
    tu_response_free(&res);
    free(url);
    tu_trust_certificate(NULL);
    free(ca);
    tu_server_stop(srv);
    tu_remove_tree(dir);
    free(dir);
}

/* Puts dir/<name>.crt and dir/<name>.key where the server reads its pair
 * (dir/live.crt and dir/live.key), each by a rename, as a renewal does. */
static void install_pair(const char *dir, const char *crt_name, const char *key_name)
{
    char *out = NULL;
    if (tu_run(&out,
               "cd '%s' && cp '%s.crt' live.crt.new && mv live.crt.new live.crt && "
               "cp '%s.key' live.key.new && mv live.key.new live.key 2>&1",
               dir, crt_name, key_name) != 0)
        fail_msg("could not install %s.crt and %s.key: %s", crt_name, key_name, out ? out : "");
    free(out);
}

/* Whether a client trusting only dir/<name>.crt is served /healthz. */
static bool served_to_client_trusting(const struct tu_server *srv, const char *dir,
                                      const char *name)
{
    char *ca = tu_path("%s/%s.crt", dir, name);
    char *url = tu_path("%s/healthz", srv->base_url);
    tu_trust_certificate(ca);
    struct tu_response res;
    bool served = tu_http_try(&res, "GET", url, NULL) == 0 && res.status == 200;
    tu_response_free(&res);
    tu_trust_certificate(NULL);
    free(url);
    free(ca);
    return served;
}

/* A metric read by a client trusting only dir/<trusted>.crt. */
static double metric_trusting(struct tu_server *srv, const char *dir, const char *trusted,
                              const char *sample)
{
    char *ca = tu_path("%s/%s.crt", dir, trusted);
    tu_trust_certificate(ca);
    double value = tu_metric(srv, sample);
    tu_trust_certificate(NULL);
    free(ca);
    return value;
}

/* The certificate's end of validity as the metric reads, in days from
 * now. */
static double expiry_in_days(struct tu_server *srv, const char *dir, const char *trusted)
{
    double at =
        metric_trusting(srv, dir, trusted, "stratd_tls_certificate_expiry_timestamp_seconds");
    return (at - (double)time(NULL)) / 86400.0;
}

/* A GET on a handle kept open; the connections it had to open for it. */
static long get_on(CURL *curl, const char *url)
{
    curl_easy_setopt(curl, CURLOPT_URL, url);
    CURLcode rc = curl_easy_perform(curl);
    if (rc != CURLE_OK)
        fail_msg("GET %s on a kept-alive connection: %s", url, curl_easy_strerror(rc));
    long connects = -1;
    curl_easy_getinfo(curl, CURLINFO_NUM_CONNECTS, &connects);
    return connects;
}

static size_t discard(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    (void)ptr;
    (void)userdata;
    return size * nmemb;
}

/* After a SIGHUP: the service manager hears RELOADING=1, then READY=1
 * with the reload's outcome in STATUS. */
static void manager_hears_reload(int fd, const char *outcome)
{
    char *reloading = tu_manager_hears(fd);
    char *flag = tu_notification_value(reloading, "RELOADING");
    if (!flag || strcmp(flag, "1") != 0)
        fail_msg("expected RELOADING=1, the service manager heard '%s'", reloading);
    char *ready = tu_manager_hears(fd);
    char *status = tu_notification_value(ready, "STATUS");
    if (!strstr(ready, "READY=1") || !status || !strstr(status, outcome))
        fail_msg("expected READY=1 with '%s' in STATUS, the service manager heard '%s'", outcome,
                 ready);
    free(status);
    free(ready);
    free(flag);
    free(reloading);
}

/* A renewed certificate is served after SIGHUP, without a restart: new
 * handshakes get it, a connection open before keeps its session, the
 * expiry metric follows. A pair that cannot be served (a key of another
 * certificate, a missing key) is refused with the reason in the log and a
 * counter, and the pair served before goes on; a SIGHUP with nothing
 * changed (a log rotation's) changes nothing. */
static void test_sighup_serves_a_renewed_certificate(void **state)
{
    struct tu_server *srv = *state;
    char *dir = tu_tempdir("stratd-tls");
    make_certificate(dir, "first", 30);
    make_certificate(dir, "second", 90);
    install_pair(dir, "first", "first");
    char *manager = NULL;
    int heard = tu_manager_socket(dir, false, &manager);
    setenv("NOTIFY_SOCKET", manager, 1);
    start_with_certificate(srv, dir, "live");
    unsetenv("NOTIFY_SOCKET");
    free(tu_manager_hears(heard)); /* READY=1 */
    assert_true(served_to_client_trusting(srv, dir, "first"));
    assert_false(served_to_client_trusting(srv, dir, "second"));
    double days = expiry_in_days(srv, dir, "first");
    if (days < 29 || days > 30.01)
        fail_msg("the first certificate's expiry is %.2f days away, expected 30", days);

    CURL *kept = curl_easy_init();
    assert_non_null(kept);
    char *ca = tu_path("%s/first.crt", dir), *url = tu_path("%s/healthz", srv->base_url);
    curl_easy_setopt(kept, CURLOPT_CAINFO, ca);
    curl_easy_setopt(kept, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(kept, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(kept, CURLOPT_TIMEOUT, 30L);
    assert_int_equal(get_on(kept, url), 1);

    install_pair(dir, "second", "second");
    tu_hangup_and_wait(srv, "SIGHUP: now serving the TLS certificate /CN=127.0.0.1, valid until",
                       1);
    manager_hears_reload(heard, "; the TLS certificate renewed");
    assert_true(served_to_client_trusting(srv, dir, "second"));
    assert_false(served_to_client_trusting(srv, dir, "first"));
    days = expiry_in_days(srv, dir, "second");
    if (days < 89 || days > 90.01)
        fail_msg("after the reload the expiry is %.2f days away, expected 90", days);
    /* the connection opened before goes on, with no new handshake */
    assert_int_equal(get_on(kept, url), 0);
    curl_easy_cleanup(kept);

    tu_hangup_and_wait(srv, "SIGHUP: the TLS certificate and key are unchanged", 1);
    manager_hears_reload(heard, "; the TLS certificate unchanged");
    assert_true(served_to_client_trusting(srv, dir, "second"));

    /* a certificate with another's key, then no key at all: refused */
    install_pair(dir, "first", "second");
    tu_hangup_and_wait(srv, "SIGHUP: http.tls_key: the key in ", 1);
    manager_hears_reload(heard,
                         "; the TLS certificate and key refused, the pair before still served");
    json_t *line = tu_wait_log(srv, NULL, "SIGHUP: http.tls_key: the key in ", TU_WAIT_S);
    assert_string_equal(tu_jstr(line, "level"), "error");
    if (!strstr(tu_jstr(line, "msg"), "; still serving the TLS certificate /CN=127.0.0.1"))
        fail_msg("the refusal does not say what is served: %s", tu_jstr(line, "msg"));
    json_decref(line);
    assert_true(served_to_client_trusting(srv, dir, "second"));
    char *key = tu_path("%s/live.key", dir);
    assert_int_equal(unlink(key), 0);
    tu_hangup_and_wait(srv, "SIGHUP: http.tls_key: ", 2);
    manager_hears_reload(heard,
                         "; the TLS certificate and key refused, the pair before still served");
    assert_true(served_to_client_trusting(srv, dir, "second"));
    assert_true(
        metric_trusting(srv, dir, "second", "stratd_tls_certificate_reload_failures_total") == 2.0);
    days = expiry_in_days(srv, dir, "second");
    if (days < 89 || days > 90.01)
        fail_msg("a refused reload moved the expiry to %.2f days away", days);

    /* mended, the next SIGHUP serves it */
    install_pair(dir, "first", "first");
    tu_hangup_and_wait(srv, "SIGHUP: now serving the TLS certificate /CN=127.0.0.1, valid until",
                       2);
    manager_hears_reload(heard, "; the TLS certificate renewed");
    assert_true(served_to_client_trusting(srv, dir, "first"));

    tu_server_stop(srv);
    close(heard);
    free(manager);
    free(key);
    free(url);
    free(ca);
    tu_remove_tree(dir);
    free(dir);
}

/* `text` with each '@' replaced by `dir`. */
static char *with_dir(const char *text, const char *dir)
{
    char *out = strdup("");
    assert_non_null(out);
    for (const char *p = text; *p; p++) {
        char *more = *p == '@' ? tu_path("%s%s", out, dir) : tu_path("%s%c", out, *p);
        free(out);
        out = more;
    }
    return out;
}

/* Each setting that cannot work stops the start (exit 2) with a message
 * naming the setting and, where there is one, the file; the state
 * directory is not even made. */
static void test_tls_settings_are_checked_at_start(void **state)
{
    (void)state;
    char *dir = tu_tempdir("stratd-tls");
    make_certificate(dir, "a", 30);
    make_certificate(dir, "b", 30);
    char *out = NULL;
    char *garbage = tu_path("%s/garbage.crt", dir);
    tu_write_text(garbage, "not a certificate\n");
    if (tu_run(&out,
               "cd '%s' && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 "
               "-aes256 -pass pass:secret -out locked.key 2>&1",
               dir) != 0)
        fail_msg("openssl could not make an encrypted key: %s", out ? out : "");
    free(out);
    const struct {
        const char *yaml, *says;
    } bad[] = {
        {"http:\n  tls_certificate: @/a.crt\n", "http.tls_certificate is set without http.tls_key"},
        {"http:\n  tls_key: @/a.key\n", "http.tls_key is set without http.tls_certificate"},
        {"http:\n  tls_certificate: @/none.crt\n  tls_key: @/a.key\n", "http.tls_certificate: "},
        {"http:\n  tls_certificate: @/a.crt\n  tls_key: @/none.key\n", "http.tls_key: "},
        {"http:\n  tls_certificate: @/garbage.crt\n  tls_key: @/a.key\n",
         "garbage.crt holds no PEM certificate"},
        {"http:\n  tls_certificate: @/a.crt\n  tls_key: @/a.crt\n",
         "a.crt holds no PEM private key"},
        {"http:\n  tls_certificate: @/a.crt\n  tls_key: @/b.key\n",
         "the key in @/b.key is not the one of the certificate"},
        {"http:\n  tls_certificate: @/a.crt\n  tls_key: @/locked.key\n", "locked.key is encrypted"},
        {"http:\n  tls_certificate: ''\n  tls_key: @/a.key\n",
         "http.tls_certificate: must not be empty"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *yaml = with_dir(bad[i].yaml, dir);
        char *says = with_dir(bad[i].says, dir);
        char *cfg = tu_path("%s/c%zu.yaml", dir, i);
        tu_write_text(cfg, yaml);
        char *state_dir = tu_path("%s/v%zu", dir, i);
        int code = tu_run(
            &out,
            "'%s' serve --listen 127.0.0.1:0 --strategies '%s/s' --state '%s' --config '%s' 2>&1",
            getenv("STRATD_TEST_BINARY") ? getenv("STRATD_TEST_BINARY") : STRATD_BINARY, dir,
            state_dir, cfg);
        if (code != 2 || !strstr(out, says))
            fail_msg("case %zu (%s): exit %d, output (should say '%s'):\n%s", i, yaml, code, says,
                     out);
        struct stat st;
        if (stat(state_dir, &st) == 0)
            fail_msg("case %zu: the state directory was made before the start was refused", i);
        free(out);
        /* `serve --check` refuses it the same way */
        char *args = tu_path("--strategies '%s/s' --state '%s' --config '%s'", dir, state_dir, cfg);
        code = tu_serve_check(&out, args);
        if (code != 2 || !strstr(out, says))
            fail_msg("case %zu (%s): --check exit %d, output (should say '%s'):\n%s", i, yaml, code,
                     says, out);
        free(out);
        free(args);
        free(state_dir);
        free(cfg);
        free(says);
        free(yaml);
    }
    free(garbage);
    tu_remove_tree(dir);
    free(dir);
}

/* `serve --check` names the certificate a start would serve and until when,
 * and calls one that ends within 14 days a problem (exit 1). */
static void test_check_names_the_certificate(void **state)
{
    (void)state;
    char *dir = tu_tempdir("stratd-tls");
    make_certificate(dir, "month", 30);
    make_certificate(dir, "days", 3);
    const struct {
        const char *name;
        int code;
        const char *says;
    } cases[] = {
        {"month", 0, "\nok\n"},
        {"days", 1, "problem: the certificate ends in "},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *cfg = tu_path("%s/%s.yaml", dir, cases[i].name);
        char *yaml = tu_path("http:\n  tls_certificate: %s/%s.crt\n  tls_key: %s/%s.key\n", dir,
                             cases[i].name, dir, cases[i].name);
        tu_write_text(cfg, yaml);
        char *args = tu_path("--strategies '%s/s' --state '%s/v' --config '%s'", dir, dir, cfg);
        char *out = NULL;
        int code = tu_serve_check(&out, args);
        if (code != cases[i].code || !strstr(out, cases[i].says) ||
            !strstr(out, "certificate  /CN=127.0.0.1, valid until ") ||
            !strstr(out, "listen       https://127.0.0.1:8880 (0 API tokens)"))
            fail_msg("%s: exit %d, expected %d and '%s' in:\n%s", cases[i].name, code,
                     cases[i].code, cases[i].says, out);
        free(out);
        free(args);
        free(yaml);
        free(cfg);
    }
    tu_remove_tree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_https_serves_with_the_certificate, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_a_certificate_near_its_end_is_named_in_the_log,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_sighup_serves_a_renewed_certificate, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_silent_connections_to_the_https_port_are_closed,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test(test_tls_settings_are_checked_at_start),
        cmocka_unit_test(test_check_names_the_certificate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
