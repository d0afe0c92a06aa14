/*
 * stratd bootstrap: brings a strategies directory of any older layout into
 * the content-addressed one, merges registry.json, and lists revisions
 * nobody runs.
 *
 *   stratd bootstrap -root <dir> [-write] [--usage usage.json] [--json]
 *
 * Every flag takes one or two dashes, and a value either as the next word
 * or after '=' (-root=dir). Without -write nothing under the root changes;
 * with it, the plan is applied through the catalogue API, under the same
 * lock the server takes, so it is safe against a live server's directory
 * (which sees the result after POST /strategies/refresh).
 *
 * --json names every file of the table: a path that is not valid UTF-8 is
 * given lossily (U+FFFD) and exactly, in hex, beside it (bootstrap_json_set_path).
 *
 * Exit status: 0 when everything went well; 1 when some file did not
 * validate or could not be placed, a step failed (everything else is
 * still done) or the report could not be written to stdout; 2 on bad usage or bad input, with one
 * line on stderr, before anything is changed; 3 when -write could not apply
 * the plan at all (the registry's lock could not be taken, registry.json
 * could not be written): the registry is as it was, and a rerun completes
 * whatever revision files were written. A --usage report without -write exits 0 whenever it
 * ran: it is a report, and invalid files do not make it less true.
 */
#include "cmd/bootstrap.h"
#include "cmd/commands.h"

#include "core/fsutil.h"
#include "core/jsonutil.h"
#include "core/log.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define USAGE_LINE "usage: stratd bootstrap -root <dir> [-write] [--usage usage.json] [--json]"

struct options {
    const char *root;
    const char *usage;
    bool write;
    bool json;
};

/* ------------------------------------------------------ command line */

static void print_help(void)
{
    printf(USAGE_LINE
           "\n\n"
           "Moves strategy modules from older layouts (<name>.js, <name>/<tag>/<name>.js)\n"
           "into <name>/<sha256>/<name>.js, merges registry.json, and reports what it\n"
           "would do. Flags take one or two dashes; values as '-root dir' or '-root=dir'.\n\n"
           "  -root DIR       the strategies directory (required)\n"
           "  -write          apply the plan (default: print it, change nothing)\n"
           "  -usage FILE     list revisions with no running instance, from the\n"
           "                  GET /strategies/registry export (or {\"usage\": [...]})\n"
           "  -json           print JSON instead of tables\n\n"
           "exit status: 0 done, 1 some files did not validate or conflicted, a step\n"
           "             failed, or the report could not be written; 2 bad usage or bad\n"
           "             input, nothing changed; 3 -write could not apply the plan (the\n"
           "             registry's lock or registry.json), the registry is unchanged\n");
}

/* One line on stderr: the reason, then how to call the command. */
__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "stratd bootstrap: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (" USAGE_LINE ")\n");
    va_end(ap);
    return BOOTSTRAP_EXIT_USAGE;
}

/* A flag's value: after '=' or the next word. */
static int take_value(int argc, char **argv, int *i, const char *inline_value, const char *flag,
                      const char **out)
{
    const char *value = inline_value;
    if (!value && *i + 1 < argc)
        value = argv[++*i];
    if (!value || !*value)
        return usage_error("-%s needs a value", flag);
    if (*out)
        return usage_error("-%s is given twice", flag);
    *out = value;
    return -1;
}

static int parse_flag(int argc, char **argv, int *i, struct options *o)
{
    const char *arg = argv[*i];
    if (arg[0] != '-' || !arg[1])
        return usage_error("unexpected argument '%s'", arg);
    const char *name = arg + (arg[1] == '-' ? 2 : 1);
    char flag[32];
    const char *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    if (len == 0 || len >= sizeof flag)
        return usage_error("unknown flag '%s'", arg);
    memcpy(flag, name, len);
    flag[len] = '\0';
    const char *value = eq ? eq + 1 : NULL;
    if (strcmp(flag, "root") == 0)
        return take_value(argc, argv, i, value, flag, &o->root);
    if (strcmp(flag, "usage") == 0)
        return take_value(argc, argv, i, value, flag, &o->usage);
    bool *toggle = strcmp(flag, "write") == 0  ? &o->write
                   : strcmp(flag, "json") == 0 ? &o->json
                                               : NULL;
    if (toggle && !value) {
        *toggle = true;
        return -1;
    }
    if (toggle)
        return usage_error("-%s takes no value", flag);
    if (strcmp(flag, "help") == 0 || strcmp(flag, "h") == 0) {
        print_help();
        return BOOTSTRAP_EXIT_OK;
    }
    return usage_error("unknown flag '%s'", arg);
}

/* -1 to go on, else the exit status. */
static int parse_args(int argc, char **argv, struct options *o)
{
    memset(o, 0, sizeof *o);
    for (int i = 1; i < argc; i++) {
        int rc = parse_flag(argc, argv, &i, o);
        if (rc >= 0)
            return rc;
    }
    if (!o->root)
        return usage_error("missing -root");
    return -1;
}

static int check_root(const char *root)
{
    struct stat st;
    if (stat(root, &st) != 0) {
        fprintf(stderr, "stratd bootstrap: the root '%s' does not exist\n", root);
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        fprintf(stderr, "stratd bootstrap: the root '%s' is not a directory\n", root);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------ read-only view */

/*
 * Without -write the tool must not change a byte under the root, yet it
 * reads the registry through the catalogue so that the plan is made from
 * exactly what the server would see. Opening the catalogue on the root
 * would create .registry.lock and sweep stale temporary files, so a dry run
 * opens it on a private directory instead: a copy of registry.json and one
 * symbolic link per strategy folder, through which the catalogue reads (and
 * verifies) the revision files in place.
 */
struct shadow {
    char *dir;
};

static int link_strategies(const char *abs_root, const char *dir, struct err *err)
{
    DIR *d = opendir(abs_root);
    if (!d) {
        err_set_errno(err, ERR_INVALID, errno, "cannot read the root '%s'", abs_root);
        return -1;
    }
    int rc = 0;
    struct dirent *entry;
    while (rc == 0 && (entry = readdir(d)) != NULL) {
        if (!names_valid_strategy(entry->d_name))
            continue;
        char *target = fsutil_join(abs_root, entry->d_name);
        char *link = fsutil_join(dir, entry->d_name);
        if (!target || !link) {
            err_set(err, ERR_INTERNAL, "out of memory");
            rc = -1;
        } else if (fsutil_is_dir(target) && symlink(target, link) != 0) {
            err_set_errno(err, ERR_INTERNAL, errno, "cannot create %s", link);
            rc = -1;
        }
        free(target);
        free(link);
    }
    closedir(d);
    return rc;
}

static int copy_registry(const char *abs_root, const char *dir, struct err *err)
{
    char *from = fsutil_join(abs_root, REGISTRY_FILE);
    char *to = fsutil_join(dir, REGISTRY_FILE);
    char *data = NULL;
    size_t len = 0;
    struct err e = ERR_INIT;
    int rc = from && to ? 0 : -1;
    if (rc != 0)
        err_set(err, ERR_INTERNAL, "out of memory");
    else if (fsutil_read_file(from, BOOTSTRAP_SOURCE_MAX * 4, &data, &len, &e) == 0)
        rc = fsutil_write_atomic(to, data, len, 0644, err);
    else if (e.kind != ERR_NOT_FOUND) {
        err_set(err, ERR_INVALID, "cannot read %s: %s", from, e.message);
        rc = -1;
    }
    err_clear(&e);
    free(data);
    free(from);
    free(to);
    return rc;
}

/* shadow_mu is held while a shadow is made and opened, or removed, and
 * `live_shadow` is the one that exists: the interruption thread (below)
 * removes it without ever seeing one half made. */
static pthread_mutex_t shadow_mu = PTHREAD_MUTEX_INITIALIZER;
static struct shadow *live_shadow;

static void shadow_empty(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *entry;
    while (d && (entry = readdir(d)) != NULL) {
        if (strcmp(entry->d_name, ".") != 0 && strcmp(entry->d_name, "..") != 0)
            unlinkat(dirfd(d), entry->d_name, 0);
    }
    if (d)
        closedir(d);
}

/* Removes what the shadow holds without ever following a link; the caller
 * holds shadow_mu. */
static void shadow_remove_locked(struct shadow *sh)
{
    if (live_shadow == sh)
        live_shadow = NULL;
    if (!sh->dir)
        return;
    shadow_empty(sh->dir);
    rmdir(sh->dir);
    free(sh->dir);
    sh->dir = NULL;
}

static void shadow_remove(struct shadow *sh)
{
    pthread_mutex_lock(&shadow_mu);
    shadow_remove_locked(sh);
    pthread_mutex_unlock(&shadow_mu);
}

static int shadow_make(const char *root, struct shadow *sh, struct err *err)
{
    const char *tmp = getenv("TMPDIR");
    char *abs_root = realpath(root, NULL);
    if (!abs_root) {
        err_set_errno(err, ERR_INVALID, errno, "cannot resolve the root '%s'", root);
        return -1;
    }
    sh->dir = fsutil_format("%s/stratd-bootstrap-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!sh->dir || !mkdtemp(sh->dir)) {
        err_set_errno(err, ERR_INTERNAL, errno, "cannot create a temporary directory");
        free(abs_root);
        free(sh->dir);
        sh->dir = NULL;
        return -1;
    }
    live_shadow = sh;
    int rc = link_strategies(abs_root, sh->dir, err);
    if (rc == 0)
        rc = copy_registry(abs_root, sh->dir, err);
    free(abs_root);
    if (rc != 0)
        shadow_remove_locked(sh);
    return rc;
}

/* ------------------------------------------------------ interruption */

/* SIGINT, SIGTERM and SIGHUP are blocked in every thread (the mask is set
 * before the command starts any) and taken by one thread of their own,
 * which removes a dry run's shadow directory, the one thing the command
 * leaves outside the root, and then dies of the signal as the process
 * would have. With -write the shadow is gone before anything is applied,
 * so an interrupted -write stops as a killed one does (a rerun completes
 * it). */
static sigset_t interrupt_signals;

static void *interrupt_main(void *arg)
{
    (void)arg;
    int sig = 0;
    while (sigwait(&interrupt_signals, &sig) != 0) {
    }
    pthread_mutex_lock(&shadow_mu); /* kept: nothing makes another shadow */
    if (live_shadow)
        shadow_remove_locked(live_shadow);
    sigset_t only;
    sigemptyset(&only);
    sigaddset(&only, sig);
    /* dies of the signal; should any of these fail, exits as a shell
     * reports a death by signal */
    (void)signal(sig, SIG_DFL);
    (void)pthread_sigmask(SIG_UNBLOCK, &only, NULL);
    (void)raise(sig);
    _exit(128 + sig);
}

/* -1 with err set when the thread cannot start; the signals are then
 * left as they were. */
static int interrupt_watch(struct err *err)
{
    sigemptyset(&interrupt_signals);
    sigaddset(&interrupt_signals, SIGINT);
    sigaddset(&interrupt_signals, SIGTERM);
    sigaddset(&interrupt_signals, SIGHUP);
    sigset_t old;
    pthread_t thread;
    int rc = pthread_sigmask(SIG_BLOCK, &interrupt_signals, &old);
    if (rc == 0)
        rc = pthread_create(&thread, NULL, interrupt_main, NULL);
    if (rc != 0) {
        (void)pthread_sigmask(SIG_SETMASK, &old, NULL);
        err_set_errno(err, ERR_INTERNAL, rc, "cannot watch for interruptions");
        return -1;
    }
    (void)pthread_detach(thread);
    return 0;
}

/* ------------------------------------------------------------ session */

struct session {
    struct options opts;
    struct bootstrap_checks checks;
    struct shadow shadow;
    struct catalog *cat;
    struct registry *snapshot;
    struct bootstrap_scan scan;
    struct bootstrap_plan plan;
    struct bootstrap_usage usage;
    struct bootstrap_outcome outcome;
};

static int open_on(struct session *s, const char *dir, struct err *err)
{
    /* the shadow's links lead into the root, which a dry run leaves as is */
    bool shadow = dir == s->shadow.dir;
    struct catalog_options copts = {dir, bootstrap_catalog_metadata, &s->checks, shadow};
    struct err e = ERR_INIT;
    if (catalog_open(&copts, &s->cat, &e) == 0)
        return 0;
    err_set(err, ERR_INVALID, "%s/%s cannot be used: %s", s->opts.root, REGISTRY_FILE, e.message);
    err_clear(&e);
    return -1;
}

/* The registry is always read through the shadow first: a registry.json
 * that cannot be used is bad input, and bad input must leave the tree as it
 * was (opening the real catalogue would already create its lock file).
 * -write then reopens on the root itself, under the real lock. */
static int open_catalog(struct session *s, struct err *err)
{
    /* the catalogue creates its root and lock file when it opens: an
     * interruption waits for that, so the shadow it removes stays removed */
    pthread_mutex_lock(&shadow_mu);
    int rc = shadow_make(s->opts.root, &s->shadow, err);
    if (rc == 0)
        rc = open_on(s, s->shadow.dir, err);
    pthread_mutex_unlock(&shadow_mu);
    if (rc != 0)
        return -1;
    if (s->opts.write) {
        catalog_close(s->cat);
        s->cat = NULL;
        shadow_remove(&s->shadow);
        if (open_on(s, s->opts.root, err) != 0)
            return -1;
    }
    s->snapshot = catalog_snapshot(s->cat);
    return 0;
}

static int prepare(struct session *s, struct err *err)
{
    if (s->opts.usage && bootstrap_usage_load(s->opts.usage, &s->usage, err) != 0)
        return -1;
    if (open_catalog(s, err) != 0)
        return -1;
    if (bootstrap_scan_tree(s->opts.root, &s->checks, &s->scan, err) != 0 ||
        bootstrap_scan_settle_marked(&s->scan, s->snapshot, err) != 0)
        return -1;
    return bootstrap_plan_build(&s->plan, s->opts.root, &s->scan, s->snapshot, err);
}

static void session_free(struct session *s)
{
    bootstrap_outcome_free(&s->outcome);
    bootstrap_usage_free(&s->usage);
    bootstrap_plan_free(&s->plan);
    bootstrap_scan_free(&s->scan);
    registry_release(s->snapshot);
    catalog_close(s->cat);
    shadow_remove(&s->shadow);
    bootstrap_checks_free(&s->checks);
}

static int print_json(FILE *out, json_t *doc)
{
    char *text = doc ? jsonutil_dump_pretty(doc, NULL) : NULL;
    json_decref(doc);
    if (!text)
        return -1;
    fputs(text, out);
    free(text);
    return 0;
}

/* The plan, then (with -write) its application. The table goes out before
 * anything changes, so an operator watching sees what is being done; the
 * JSON document comes at the end, whole. A --usage --json report owns
 * stdout, so the plan then goes to stderr. -1 with err set, or
 * BOOTSTRAP_EXIT_NOT_APPLIED when the plan could not be applied at all. */
static int migrate(struct session *s, struct err *err)
{
    FILE *out = s->opts.usage && s->opts.json ? stderr : stdout;
    bool as_json = s->opts.json && !s->opts.usage;
    struct bootstrap_report_ctx ctx = {s->opts.root, &s->scan, &s->plan, s->opts.write};
    if (!as_json)
        bootstrap_report_text(out, &ctx);
    fflush(out);
    if (s->opts.write) {
        if (bootstrap_apply(s->cat, s->opts.root, &s->plan, &s->scan, &s->outcome, err) != 0)
            return BOOTSTRAP_EXIT_NOT_APPLIED;
        if (!as_json)
            bootstrap_report_outcome(out, &s->outcome);
    }
    if (as_json &&
        print_json(out, bootstrap_report_json(&ctx, s->opts.write ? &s->outcome : NULL)) != 0) {
        err_set(err, ERR_INTERNAL, "out of memory writing the plan");
        return -1;
    }
    return 0;
}

static int run(struct session *s)
{
    struct err err = ERR_INIT;
    if (prepare(s, &err) != 0) {
        fprintf(stderr, "stratd bootstrap: %s\n", err.message);
        err_clear(&err);
        return BOOTSTRAP_EXIT_USAGE;
    }
    bool report_only = s->opts.usage && !s->opts.write;
    int rc = report_only ? 0 : migrate(s, &err);
    size_t pending = s->opts.write ? 0 : bootstrap_plan_pending(&s->plan);
    if (rc == 0 && s->opts.usage)
        rc = bootstrap_usage_report(stdout, &s->usage, &s->plan, s->opts.root, s->opts.json,
                                    pending, &err);
    if (rc == BOOTSTRAP_EXIT_NOT_APPLIED) {
        fprintf(stderr, "stratd bootstrap: nothing was applied: %s\n", err.message);
        err_clear(&err);
        return BOOTSTRAP_EXIT_NOT_APPLIED;
    }
    if (rc != 0) {
        fprintf(stderr, "stratd bootstrap: %s\n", err.message);
        err_clear(&err);
        return BOOTSTRAP_EXIT_PROBLEMS;
    }
    bool problems =
        bootstrap_report_has_problems(&s->scan) || s->plan.nnotes > 0 || s->outcome.failed > 0;
    return problems && !report_only ? BOOTSTRAP_EXIT_PROBLEMS : BOOTSTRAP_EXIT_OK;
}

int cmd_bootstrap(int argc, char **argv)
{
    struct session s;
    memset(&s, 0, sizeof s);
    int rc = parse_args(argc, argv, &s.opts);
    if (rc >= 0)
        return rc;
    if (check_root(s.opts.root) != 0)
        return BOOTSTRAP_EXIT_USAGE;
    /* Findings are reported in the plan; the libraries' own warnings about
     * the same files would only repeat them as log lines. */
    log_set_level(LOG_LEVEL_ERROR);
    struct err err = ERR_INIT;
    if (interrupt_watch(&err) != 0) {
        fprintf(stderr, "stratd bootstrap: %s\n", err.message);
        return BOOTSTRAP_EXIT_PROBLEMS;
    }
    bootstrap_checks_init(&s.checks);
    rc = run(&s);
    session_free(&s);
    return rc;
}
