/*
 * stratd serve --check: reads what a start would read, the way a start
 * reads it, and says whether it can be served, without serving it or
 * changing anything: no directory is created, no lock is taken that a
 * running gateway holds, nothing is written. An operator runs it on a new
 * configuration, a renewed certificate or a restored tree before
 * restarting the gateway that serves the old ones.
 */
#include "cmd/commands.h"
#include "cmd/config.h"

#include "api/tls.h"
#include "core/clock.h"
#include "core/fsutil.h"
#include "registry/registry.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The certificate served, and a problem when it has ended or soon will. */
static int check_certificate(const struct api_tls *tls)
{
    if (!tls) {
        printf("%-12s none: plain HTTP\n", "certificate");
        return 0;
    }
    char subject[API_TLS_SUBJECT_MAX], until[32];
    api_tls_subject(tls, subject, sizeof subject);
    int64_t not_after_s = api_tls_not_after(tls);
    clock_format_rfc3339(not_after_s * 1000, until, sizeof until);
    int64_t left_s = not_after_s - clock_wall_ms() / 1000;
    printf("%-12s %s, valid until %s\n", "certificate", subject, until);
    if (left_s <= 0) {
        printf("problem: the certificate has expired: clients will refuse it\n");
        return 1;
    }
    if (left_s < CMD_CERTIFICATE_WARN_S) {
        printf("problem: the certificate ends in %lld days and %lld hours\n",
               (long long)(left_s / 86400), (long long)(left_s % 86400 / 3600));
        return 1;
    }
    return 0;
}

/* A directory the start would create (its nearest existing ancestor must
 * take it) or one it would use as it is. */
static int check_directory(const char *what, const char *dir, struct err *err)
{
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            err_set(err, ERR_INVALID, "%s %s is not a directory", what, dir);
            return -1;
        }
        if (access(dir, R_OK | W_OK | X_OK) != 0) {
            err_set_errno(err, ERR_INVALID, errno, "%s %s cannot be written", what, dir);
            return -1;
        }
        return 1;
    }
    if (errno != ENOENT) {
        err_set_errno(err, ERR_INVALID, errno, "%s %s", what, dir);
        return -1;
    }
    char *parent = fsutil_dir_of(dir);
    while (parent && !fsutil_exists(parent)) {
        char *up = fsutil_dir_of(parent);
        free(parent);
        parent = up;
    }
    int rc = parent && access(parent, W_OK | X_OK) == 0 ? 0 : -1;
    if (rc != 0)
        err_set(err, ERR_INVALID, "%s %s does not exist and %s cannot take it", what, dir,
                parent ? parent : "its parent");
    free(parent);
    return rc;
}

/* Every revision registry.json names, read and hashed as a start does; a
 * file that is missing or whose bytes changed is a problem (the start
 * serves the rest). Whether each module validates is the start's to say:
 * it judges a stored revision by the metadata it cached when the revision
 * came in. */
static int check_catalogue(const char *dir, struct err *err)
{
    struct catalog_options opts = {.root = dir, .no_sweep = true};
    struct catalog *cat = NULL;
    if (catalog_open(&opts, &cat, err) != 0)
        return -1;
    struct registry *reg = catalog_snapshot(cat);
    size_t revisions = 0, problems = 0;
    for (size_t i = 0; i < reg->nstrategies; i++) {
        const struct registry_strategy *st = reg->strategies[i];
        revisions += st->nrevisions;
        for (size_t j = 0; j < st->nrevisions; j++) {
            const struct registry_revision *rev = &st->revisions[j];
            if (!rev->invalid)
                continue;
            printf("problem: %s@sha256:%s: %s\n", st->name, rev->hex,
                   rev->invalid_reason ? rev->invalid_reason : "not served");
            problems++;
        }
    }
    printf("%-12s %s: %zu strateg%s, %zu revision%s, %zu with a problem\n", "strategies", dir,
           reg->nstrategies, reg->nstrategies == 1 ? "y" : "ies", revisions,
           revisions == 1 ? "" : "s", problems);
    registry_release(reg);
    catalog_close(cat);
    return problems ? 1 : 0;
}

int cmd_serve_check(const struct config *cfg, const struct api_tls *tls, const char *url)
{
    struct err err = ERR_INIT;
    printf("%-12s %s (%zu API token%s)\n", "listen", url, cfg->ntokens,
           cfg->ntokens == 1 ? "" : "s");
    int worst = check_certificate(tls);
    int rc = check_directory("the strategies directory", cfg->strategies_dir, &err);
    if (rc == 0) {
        printf("%-12s %s: does not exist yet, created empty at the start\n", "strategies",
               cfg->strategies_dir);
    } else if (rc > 0) {
        rc = check_catalogue(cfg->strategies_dir, &err);
        worst = rc > worst ? rc : worst;
    }
    if (rc >= 0) {
        rc = check_directory("the state directory", cfg->state_dir, &err);
        if (rc >= 0)
            printf("%-12s %s%s\n", "state", cfg->state_dir,
                   rc == 0 ? ": does not exist yet, created at the start" : "");
    }
    if (rc >= 0 && json_array_size(cfg->providers) == 0)
        printf("%-12s the embedded simulated exchange\n", "providers");
    else if (rc >= 0)
        printf("%-12s %zu configured\n", "providers", json_array_size(cfg->providers));
    if (rc < 0) {
        printf("refused: %s\n", err.message);
        fflush(stdout);
        fprintf(stderr, "stratd serve --check: %s\n", err.message);
        err_clear(&err);
        return 2;
    }
    printf(worst ? "served, with the problems above\n" : "ok\n");
    return worst;
}
