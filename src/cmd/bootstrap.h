/*
 * bootstrap: private interface between the files of `stratd bootstrap`.
 *
 * The command runs in stages, one or two files each:
 *
 *   bootstrap.c          the command line, the read-only view of the
 *                        registry for dry runs, and the order of the stages
 *   bootstrap_scan.c     walks the root, hashes and validates every *.js file
 *                        (bootstrap_check.c caches the validator by hash)
 *   bootstrap_plan.c     groups the files into revisions, merges them with the
 *                        catalogue's snapshot and assigns tags
 *   bootstrap_order.c    decides `latest` and orders the steps so that a crash
 *                        at any point leaves a tree a second run completes
 *   bootstrap_registry.c replays the steps on registry.json to show the result
 *   bootstrap_apply.c    performs the steps through the catalogue API
 *   bootstrap_report.c   prints the plan (table or JSON)
 *   bootstrap_usage.c    the --usage report
 *   bootstrap_semver.c   version ordering
 *
 * Ownership: every struct here owns the strings and arrays it points to
 * unless a field says "borrowed"; the *_free functions release them. Nothing
 * here is thread-safe except struct bootstrap_checks, which the catalogue's
 * verification threads call into.
 */
#ifndef STRATD_CMD_BOOTSTRAP_H
#define STRATD_CMD_BOOTSTRAP_H

#include "core/err.h"
#include "core/hash.h"
#include "core/names.h"
#include "registry/registry.h"

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define BOOTSTRAP_SOURCE_MAX ((size_t)64 << 20) /* the largest module we read */
#define BOOTSTRAP_DEFAULT_TAG "v1.0.0"
#define BOOTSTRAP_SHORT_HEX 12
/* "<name>/<hex>/<name>.js" plus the NUL. */
#define BOOTSTRAP_REL_MAX (NAMES_STRATEGY_MAX * 2 + HASH_HEX_LEN + 6)

/* Exit statuses. */
#define BOOTSTRAP_EXIT_OK 0
#define BOOTSTRAP_EXIT_PROBLEMS 1 /* files did not validate, conflicted, or a step failed */
#define BOOTSTRAP_EXIT_USAGE 2    /* bad usage or bad input; nothing was changed */
/* -write could not apply the plan: the registry's lock could not be taken
 * or registry.json could not be written, so the registry is as it was (new
 * revision files may have been written; a rerun completes the run). */
#define BOOTSTRAP_EXIT_NOT_APPLIED 3

/* ------------------------------------------------------------ semver */

/* Orders two tags as versions: vMAJOR.MINOR.PATCH[-pre] (the v optional) by
 * semantic-version precedence; every tag that is not a version sorts below
 * every one that is, and two such tags compare equal. */
int bootstrap_semver_compare(const char *a, const char *b);
bool bootstrap_semver_valid(const char *tag);

/* ------------------------------------------------- validation results */

/* What the validator said about one byte sequence. */
struct bootstrap_check {
    char hex[HASH_HEX_LEN + 1];
    json_t *metadata;    /* normalised metadata, or NULL when invalid */
    char *message;       /* the validator's sentence when invalid */
    json_t *diagnostics; /* array of {stage, message, line, column, hint}, or NULL */
};

/* A cache of checks by hash, so equal bytes are validated once whether the
 * catalogue or the scan asks first. Thread-safe. */
struct bootstrap_checks {
    pthread_mutex_t mu;
    struct bootstrap_check **items; /* sorted by hex; each item's address is stable */
    size_t n, cap;
};

void bootstrap_checks_init(struct bootstrap_checks *checks);
void bootstrap_checks_free(struct bootstrap_checks *checks);
/* The check for these bytes (hex is their hash), validating on first use.
 * The pointer lives as long as the cache; NULL only when out of memory. */
const struct bootstrap_check *bootstrap_checks_get(struct bootstrap_checks *checks, const char *hex,
                                                   const char *source, size_t len,
                                                   const char *filename);
/* The catalogue's metadata callback; ctx is a struct bootstrap_checks. */
json_t *bootstrap_catalog_metadata(void *ctx, const char *name, const char *hex, const char *source,
                                   size_t len, char **reason);

/* --------------------------------------------------------------- scan */

enum bootstrap_layout {
    BOOTSTRAP_LAYOUT_FLAT,    /* <root>/<x>.js */
    BOOTSTRAP_LAYOUT_TAG,     /* <root>/<folder>/<tag>/<x>.js */
    BOOTSTRAP_LAYOUT_CURRENT, /* <root>/<folder>/<64 hex>/<x>.js */
    BOOTSTRAP_LAYOUT_UNKNOWN, /* anywhere else */
};

enum bootstrap_file_state {
    BOOTSTRAP_FILE_OK,       /* belongs to a revision */
    BOOTSTRAP_FILE_INVALID,  /* does not validate (check->diagnostics say why) */
    BOOTSTRAP_FILE_CONFLICT, /* cannot be placed; `problem` says why */
};

struct bootstrap_file {
    char *rel; /* relative to the root */
    enum bootstrap_layout layout;
    char *folder;               /* TAG and CURRENT: the first component; else NULL */
    char *sub;                  /* TAG: the tag folder; CURRENT: the hash folder; else NULL */
    char hex[HASH_HEX_LEN + 1]; /* "" when unreadable */
    uint64_t size;
    int64_t mtime_ns;
    const struct bootstrap_check *check; /* borrowed from the cache; NULL when unreadable */
    enum bootstrap_file_state state;
    char *problem; /* INVALID and CONFLICT: one sentence */
};

/* A sorted list of relative paths. */
struct bootstrap_paths {
    char **items;
    size_t n, cap;
};

struct bootstrap_scan {
    struct bootstrap_file *files; /* sorted by rel */
    size_t nfiles, cap;
    struct bootstrap_paths empty; /* empty folders left by an interrupted run */
    struct bootstrap_paths stale; /* temporary files of writers that died */
};

/* Walks `root` (never following symbolic links), reading, hashing and
 * validating every *.js file. Fails only when the root itself cannot be read
 * or memory runs out; problems with single files are recorded on them. */
int bootstrap_scan_tree(const char *root, struct bootstrap_checks *checks,
                        struct bootstrap_scan *scan, struct err *err);
void bootstrap_scan_free(struct bootstrap_scan *scan);
/* A <name>/<hash>/<name>.js whose folder a change killed midway marked
 * pending, and that reg does not name, is what the catalogue's next open
 * removes (registry.h, CATALOG_PENDING_KIND): moved from the files to the
 * stale list, so that a dry run plans what -write does. */
int bootstrap_scan_settle_marked(struct bootstrap_scan *scan, const struct registry *reg,
                                 struct err *err);
/* A file's name as its metadata says (NULL when it did not validate). */
const char *bootstrap_file_name(const struct bootstrap_file *file);
/* Records why a file is left alone (the first reason wins). 0, or -1 if out
 * of memory. */
int bootstrap_file_conflict(struct bootstrap_file *file, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* --------------------------------------------------------------- plan */

enum bootstrap_fate {
    BOOTSTRAP_KEEP,     /* registered and in place (or left as is) */
    BOOTSTRAP_ADD,      /* to be written and registered through the catalogue */
    BOOTSTRAP_DROP,     /* registered, but its bytes are nowhere: entry removed */
    BOOTSTRAP_CONFLICT, /* cannot be added (tag taken, canonical path occupied);
                           its files are left */
};

struct bootstrap_revision {
    char name[NAMES_STRATEGY_MAX + 1];
    char hex[HASH_HEX_LEN + 1];
    const struct registry_revision *registered; /* borrowed from the snapshot, or NULL */
    const struct bootstrap_check *check;        /* borrowed; NULL for revisions seen only
                                                   in the registry */
    enum bootstrap_fate fate;
    bool in_place;       /* a valid copy sits at the canonical path */
    bool explicit_tag;   /* the tag came from metadata or a tag folder */
    bool new_strategy;   /* its strategy is not in the registry yet */
    const char *version; /* the highest tag it will carry, for `latest` (borrowed) */
    char *tag;           /* primary tag to apply (ADD), or the registry's */
    char **aliases;      /* further tags to apply (ADD) */
    size_t naliases;
    size_t *copies; /* indexes of the files holding these bytes */
    size_t ncopies;
    long source;      /* the copy whose bytes are uploaded; -1 when none */
    int64_t mtime_ns; /* newest copy */
    uint64_t size;
};

enum bootstrap_step_kind {
    BOOTSTRAP_STEP_ADD,    /* write + register a revision, then remove its old copies */
    BOOTSTRAP_STEP_LATEST, /* move `latest` (a strategy whose latest is gone) */
    BOOTSTRAP_STEP_DROP,   /* remove a registry entry whose file is gone */
    BOOTSTRAP_STEP_DEDUPE, /* remove extra copies of a registered revision */
    BOOTSTRAP_STEP_STALE,  /* remove a dead writer's temporary file (under the lock) */
    BOOTSTRAP_STEP_RMDIR,  /* remove an empty folder */
};

struct bootstrap_step {
    enum bootstrap_step_kind kind;
    size_t revision;  /* all but STALE and RMDIR */
    const char *path; /* STALE and RMDIR: borrowed from the scan */
};

struct bootstrap_tag_change {
    char *strategy;
    char *tag;
    char before[HASH_HEX_LEN + 1]; /* "" when the tag is new */
    char after[HASH_HEX_LEN + 1];  /* "" when the tag goes away */
};

/* Something the plan does not do, and why (an alias already taken, a
 * registry entry kept). Printed with the conflicts. */
struct bootstrap_note {
    char *path; /* the file or folder concerned */
    char *message;
};

struct bootstrap_plan {
    const char *root;                     /* borrowed */
    struct bootstrap_revision *revisions; /* sorted by name, hex */
    size_t nrevisions;
    struct bootstrap_step *steps; /* in the order they are applied */
    size_t nsteps, step_cap;
    struct bootstrap_tag_change *changes; /* sorted by strategy, tag */
    size_t nchanges, change_cap;
    struct bootstrap_note *notes;
    size_t nnotes, note_cap;
    json_t *before; /* registry.json of the snapshot */
    json_t *after;  /* registry.json as the plan leaves it */
};

/* Builds the plan from the scan and the catalogue's snapshot. Marks the
 * files that cannot be placed as conflicts. */
int bootstrap_plan_build(struct bootstrap_plan *plan, const char *root, struct bootstrap_scan *scan,
                         const struct registry *snapshot, struct err *err);
void bootstrap_plan_free(struct bootstrap_plan *plan);
/* "<name>/<hex>/<name>.js" */
void bootstrap_canonical_rel(const char *name, const char *hex, char out[BOOTSTRAP_REL_MAX]);
/* True for a copy outside the current layout: migrating its revision
 * removes it. (A current-layout copy that passed the scan is canonical.) */
static inline bool bootstrap_file_is_legacy(const struct bootstrap_file *file)
{
    return file->layout != BOOTSTRAP_LAYOUT_CURRENT;
}
const struct bootstrap_revision *bootstrap_plan_find(const struct bootstrap_plan *plan,
                                                     const char *name, const char *hex);
int bootstrap_plan_note(struct bootstrap_plan *plan, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* bootstrap_order.c: `latest` and the order of the steps. */
int bootstrap_plan_order(struct bootstrap_plan *plan, const struct registry *snapshot,
                         const struct bootstrap_scan *scan, struct err *err);
/* bootstrap_registry.c: plan->after from plan->before and the revisions'
 * fates, then the tag changes between them. */
int bootstrap_plan_registry(struct bootstrap_plan *plan, struct err *err);
int bootstrap_plan_diff(struct bootstrap_plan *plan, struct err *err);

/* -------------------------------------------------------------- apply */

struct bootstrap_outcome {
    size_t added;   /* revisions written and registered */
    size_t removed; /* old copies removed */
    size_t dropped; /* registry entries removed */
    size_t moved;   /* `latest` moves */
    size_t rmdirs;  /* empty folders removed */
    size_t stale;   /* dead writers' temporary files removed */
    size_t failed;  /* steps that failed (each reported on stderr) */
    json_t *errors; /* [{"step", "strategy", "hash", "message"}] */
};

/* Applies every step; a failed step is reported and the others go on (except
 * the rest of a new strategy whose first revision failed). */
int bootstrap_apply(struct catalog *cat, const char *root, struct bootstrap_plan *plan,
                    const struct bootstrap_scan *scan, struct bootstrap_outcome *out,
                    struct err *err);
void bootstrap_outcome_free(struct bootstrap_outcome *out);

/* ------------------------------------------------------------- report */

struct bootstrap_report_ctx {
    const char *root;
    const struct bootstrap_scan *scan;
    const struct bootstrap_plan *plan;
    bool write;
};

/* The plan as a table for people. */
void bootstrap_report_text(FILE *out, const struct bootstrap_report_ctx *ctx);
/* The outcome of -write, after the table. */
void bootstrap_report_outcome(FILE *out, const struct bootstrap_outcome *outcome);
/* The plan (and outcome, when given) as one JSON document; NULL if out of
 * memory. */
json_t *bootstrap_report_json(const struct bootstrap_report_ctx *ctx,
                              const struct bootstrap_outcome *outcome);
/* Sets obj[key] to a file or folder path. A path that is not valid UTF-8
 * (a name in another encoding) is set with each invalid byte replaced by
 * U+FFFD, and its exact bytes go to obj[key + "Hex"] in lower-case hex, so
 * no entry is dropped and a script can still name the file. -1 if out of
 * memory. */
int bootstrap_json_set_path(json_t *obj, const char *key, const char *path);
/* True when some file did not validate or could not be placed. */
bool bootstrap_report_has_problems(const struct bootstrap_scan *scan);
/* How many steps the plan holds; 0 means the tree is already done. */
size_t bootstrap_plan_pending(const struct bootstrap_plan *plan);

/* -------------------------------------------------------------- usage */

struct bootstrap_usage_entry {
    char *strategy;
    char hex[HASH_HEX_LEN + 1];
    long long count;
    char *last_seen; /* NULL when never seen */
};

struct bootstrap_usage {
    struct bootstrap_usage_entry *entries; /* sorted by strategy, hex */
    size_t n;
};

/* Reads a GET /strategies/registry export (or a bare {"usage": [...]}).
 * ERR_NOT_FOUND / ERR_INVALID with one sentence naming the problem. */
int bootstrap_usage_load(const char *path, struct bootstrap_usage *usage, struct err *err);
void bootstrap_usage_free(struct bootstrap_usage *usage);
/* Lists every revision of plan->after with no running instance; `pending`
 * is the number of steps not applied (a dry run), mentioned in the output. */
int bootstrap_usage_report(FILE *out, const struct bootstrap_usage *usage,
                           const struct bootstrap_plan *plan, const char *root, bool json,
                           size_t pending, struct err *err);

#endif
