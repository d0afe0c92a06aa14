/*
 * registry: the catalogue of strategy revisions, as stored on disk.
 *
 *   <root>/registry.json                   source of truth for tags
 *   <root>/<name>/<64 hex>/<name>.js        one file per revision
 *
 * registry.json maps each strategy to
 *   {"tags": {tag: "sha256:<hex>"},
 *    "hashes": {"sha256:<hex>": {"tag": primary tag, "path": "<name>/<hex>/<name>.js"}}}
 * Strategies are written sorted by name, tags sorted by tag, hashes in the
 * order they were added (that order defines "newest").
 *
 * Two layers:
 *
 * struct registry  an immutable, reference-counted snapshot. Readers get one
 *                  from catalog_snapshot(), read it from any thread without
 *                  locks, and registry_release() it. Nothing in a snapshot
 *                  ever changes after it is published.
 *
 * struct catalog   owns the current snapshot and the root directory, and
 *                  performs every change. A change runs under an in-process
 *                  mutex plus an flock on <root>/.registry.lock (the lock the
 *                  bootstrap tool takes too). Under the lock it first checks
 *                  whether registry.json changed on disk since the snapshot
 *                  was built (another process wrote it) and reloads if so, so
 *                  a change never overwrites someone else's. It then builds a
 *                  new snapshot, writes revision files (before the registry
 *                  entry that names them) and registry.json atomically and
 *                  durably (fsutil_write_atomic), and only then publishes the
 *                  new snapshot. If any write fails, the published snapshot
 *                  and the files on disk are the old ones.
 *
 * Every registered file is verified when the catalogue is loaded or
 * reloaded: hashed again, unless its identity shows that nothing wrote it
 * since it last hashed to its name (catalog_verify.c says why that is
 * enough). A revision whose file is missing or whose bytes do not hash to
 * its name is kept in the snapshot with `invalid` set and a reason, is logged,
 * and can never be resolved by a selector (ERR_CONFLICT).
 *
 * Errors: ERR_INVALID (malformed name/tag/hash), ERR_NOT_FOUND (unknown
 * strategy, tag or revision), ERR_CONFLICT (ambiguous prefix: details
 * {"candidates": [...]}; a version tag that names another revision; deleting
 * `latest` or an orphaning tag delete; a guard refusal; an invalid revision),
 * ERR_NO_SPACE / ERR_INTERNAL (I/O). All catalog functions are thread-safe.
 */
#ifndef STRATD_REGISTRY_REGISTRY_H
#define STRATD_REGISTRY_REGISTRY_H

#include "core/err.h"
#include "core/fsutil.h"
#include "core/hash.h"
#include "registry/selector.h"

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REGISTRY_FILE "registry.json"
#define REGISTRY_LOCK_FILE ".registry.lock"
/* The registry.json before last, whose blocks the next write reuses. */
#define REGISTRY_SPARE_FILE ".registry.json.spare"
#define REGISTRY_LATEST "latest"
/* A change that adds or removes a revision's file marks the revision's
 * folder with "<name>.js.pending.<pid>.<n>" (fsutil_is_writer_name) while
 * registry.json and the folder may disagree: from before the file is put
 * in place, or before the registry stops naming it, until the registry has
 * the last word. The catalogue's open removes a marked folder's file when
 * registry.json does not name the revision, so that no crash leaves a file
 * a later scan would take for a revision. */
#define CATALOG_PENDING_KIND "pending"

/* ------------------------------------------------------------ snapshot */

struct registry_revision {
    char hex[HASH_HEX_LEN + 1];
    char *tag;            /* primary tag, as written in hashes[h].tag */
    char *path;           /* relative to the root: "<name>/<hex>/<name>.js" */
    uint64_t size;        /* bytes of the file (0 when missing) */
    uint64_t order;       /* insertion order within the registry; larger is newer */
    bool invalid;         /* missing, unreadable, wrong bytes, or does not validate */
    char *invalid_reason; /* NULL when valid */
    json_t *metadata;     /* normalised metadata (see js/validate.h); NULL if unknown */
};

struct registry_tag {
    char *tag;
    char hex[HASH_HEX_LEN + 1];
};

struct registry_strategy {
    atomic_int refs; /* strategies are shared between snapshots */
    char name[NAMES_STRATEGY_MAX + 1];
    struct registry_tag *tags; /* sorted by tag */
    size_t ntags;
    struct registry_revision *revisions; /* oldest first */
    size_t nrevisions;
    /* This strategy's line of registry.json, `"name": {...}`, cached by the
     * catalogue that writes it. Private to the catalogue: only ever read or
     * filled under its change lock, never by snapshot readers. */
    char *text;
    size_t text_len;
    /* The line's width in the file, padded with spaces: a change that
     * keeps within it leaves every other line where it was (0: not yet
     * written by this catalogue). Carried over to a strategy's copies. */
    size_t text_room;
};

struct registry {
    atomic_int refs;
    uint64_t generation;                   /* increases with every published snapshot */
    struct registry_strategy **strategies; /* sorted by name */
    size_t nstrategies;
};

void registry_retain(struct registry *reg);
void registry_release(struct registry *reg);

const struct registry_strategy *registry_find_strategy(const struct registry *reg,
                                                       const char *name);
const struct registry_revision *registry_find_revision(const struct registry_strategy *st,
                                                       const char *hex);
/* The hex a tag points at, or NULL. */
const char *registry_tag_target(const struct registry_strategy *st, const char *tag);
/* The revision `latest` points at (NULL only for an empty strategy). */
const struct registry_revision *registry_latest(const struct registry_strategy *st);
/* Tags pointing at hex, sorted, as a new JSON array of strings. */
json_t *registry_tags_of(const struct registry_strategy *st, const char *hex);

struct registry_resolution {
    const struct registry_strategy *strategy;
    const struct registry_revision *revision;
    const char *tag; /* the tag the selector went through, or NULL for hashes */
};

/* Resolves a parsed selector against the snapshot. The pointers in *out live
 * as long as the snapshot. ERR_NOT_FOUND for unknown names, tags or hashes;
 * ERR_CONFLICT for an ambiguous prefix (details.candidates lists
 * "name@sha256:<hex>" strings) and for an invalid revision. */
int registry_resolve(const struct registry *reg, const struct selector *sel,
                     struct registry_resolution *out, struct err *err);
/* Parses and resolves in one step. */
int registry_resolve_text(const struct registry *reg, const char *selector_text,
                          struct registry_resolution *out, struct err *err);

/* The registry.json document for this snapshot (new reference). */
json_t *registry_to_json(const struct registry *reg);
/* The bytes of registry.json for this snapshot, as the catalogue writes
 * them: the document of registry_to_json(), one strategy a line so that two
 * versions diff by strategy. Malloc'ed, NUL-terminated (not counted in
 * *len); NULL if out of memory. Reads only the snapshot: any thread. */
char *registry_to_text(const struct registry *reg, size_t *len);

/* ------------------------------------------------------------- catalog */

/* Supplies metadata for a revision whose file verified, e.g. by running the
 * validator (with a cache by hash). Returns a new JSON reference, or NULL and
 * sets *reason (malloc'ed) when the module does not validate; the revision is
 * then marked invalid. Called without the catalog's locks held by other
 * threads' readers; it may be called concurrently for different revisions. */
typedef json_t *(*catalog_metadata_fn)(void *ctx, const char *name, const char *hex,
                                       const char *source, size_t len, char **reason);

/* Vetoes a delete: return 0 to allow, or -1 with err set (ERR_CONFLICT,
 * details.instances) to refuse. hex is NULL when the whole strategy goes.
 * Called with the catalog's write lock held: it must not call back into the
 * catalog. */
typedef int (*catalog_guard_fn)(void *ctx, const char *name, const char *hex, struct err *err);

struct catalog_options {
    const char *root;             /* the strategies directory; created if missing */
    catalog_metadata_fn metadata; /* may be NULL: revisions keep metadata NULL */
    void *metadata_ctx;
    bool no_sweep; /* leave the stale temporaries a crash left (a read-only view) */
};

struct catalog;

/* Loads the registry (a missing registry.json is an empty catalogue) and
 * verifies every file. A registry.json that is not valid JSON or not in the
 * format is ERR_INVALID: nothing is served from it. */
int catalog_open(const struct catalog_options *opts, struct catalog **out, struct err *err);
/* Waits for the writers of prewrites still running (their callers must have
 * ended them, see catalog_prewrite_begin), then frees everything. No other
 * thread may use cat during or after the call. */
void catalog_close(struct catalog *cat);
const char *catalog_root(const struct catalog *cat);

/* Where the file system cannot exchange names or grant leases, a change
 * keeps the registry.json it replaced under a hard link, so that freeing
 * its blocks (milliseconds for a large catalogue) is not on the change's
 * path; this hands that file to a thread that removes it. Call it once the
 * caller's own durable work is done (the server: after the response).
 * Otherwise the next change or catalog_close does it. Any thread; never
 * blocks on a change in progress; nothing to do in the common case. */
void catalog_housekeep(struct catalog *cat);

/* The current snapshot, retained for the caller. Never NULL after open. */
struct registry *catalog_snapshot(struct catalog *cat);

/* Re-reads registry.json and re-hashes every file (hand edits, bootstrap).
 * On a registry.json that no longer parses, the previous snapshot stays
 * published and ERR_INVALID says why. *problems (if non-NULL) receives a new
 * array of {"strategy", "hash", "message"} for every invalid revision. */
int catalog_reload(struct catalog *cat, json_t **problems, struct err *err);

/* What one change did, for callers that report it (the audit, the tag
 * metrics): the published snapshot just before the change and the one just
 * after it, both taken under the change's lock. Their difference in the
 * changed strategy is this change's tag moves and nobody else's, however
 * many changes run at once; snapshots a caller takes itself around the call
 * can hold other requests' changes too. Filled when the call succeeds
 * (both retained; the same snapshot twice when nothing changed), and when
 * it fails after publishing the change all the same (registry.json took
 * the change but its directory's sync failed: the call returns -1, and the
 * change is what every reader sees); NULL otherwise.
 * catalog_change_release() gives them back. */
struct catalog_change {
    struct registry *before;
    struct registry *after;
};

/* Releases both snapshots and sets them to NULL; a zeroed change is fine. */
void catalog_change_release(struct catalog_change *change);

/* A change whose registry write failed only after registry.json took it
 * (the directory's sync) is published all the same: every reader sees it,
 * though a power loss may undo it. Such a failure (-1, ERR_INTERNAL) carries
 * details {"published": true}, which callers that report changes (the
 * audit) test with catalog_error_published(). */
#define CATALOG_PUBLISHED "published"
bool catalog_error_published(const struct err *err);

struct catalog_upload {
    const char *name; /* strategy; must equal metadata.name (the caller checks) */
    const char *source;
    size_t len;
    json_t *metadata;           /* borrowed; the snapshot keeps its own reference */
    const char *tag;            /* primary tag; NULL means "latest" */
    const char *const *aliases; /* tags moved to the new revision */
    size_t naliases;
    const char *const *reassign; /* version tags allowed to move off another revision */
    size_t nreassign;
    bool promote_latest; /* move `latest` too (always for a new strategy) */
    /* refuse with ERR_NOT_FOUND, writing nothing, when the strategy does
     * not exist when the change is made (an update, which a concurrent
     * delete of the strategy must not undo by creating it again) */
    bool existing_only;
    /* optional, borrowed: `source` written ahead (catalog_prewrite_begin) */
    struct catalog_prewrite *prewritten;
    /* optional out: the snapshots around the upload (struct catalog_change) */
    struct catalog_change *change;
};

struct catalog_upload_result {
    char hex[HASH_HEX_LEN + 1];
    bool created;                /* false: identical bytes were already there */
    char tag[NAMES_TAG_MAX + 1]; /* the primary tag applied */
};

/* Adds a revision (or re-applies tags to identical bytes). The primary tag,
 * when it already points at another revision and is neither `latest` nor in
 * `reassign`, refuses the whole upload with ERR_CONFLICT (details: tag,
 * hash). All tag moves land in the same registry write. *result is filled
 * on success, and on a failure that published the revision all the same
 * (struct catalog_change); result->hex is "" otherwise. */
int catalog_add_revision(struct catalog *cat, const struct catalog_upload *up,
                         struct catalog_upload_result *result, struct err *err);

/* Writes an upload's bytes to a temporary file and fsyncs it on a thread of
 * its own while the caller validates them; catalog_add_revision() with
 * .prewritten set then renames that file into place, when its bytes are
 * the upload's, instead of writing and syncing it under the catalogue's
 * lock. The bytes are copied. catalog_prewrite_end() (call it on every path)
 * removes the temporary when no change took it; when the writer is still
 * busy it returns at once and the writer removes its file itself, so an
 * upload that does not validate never waits for an fsync. NULL when no
 * thread could be had (or cat is NULL): go on without. Nothing depends on the
 * temporary: a missing or failed one makes the change write the file
 * itself. Temporaries a crash left behind are removed when a catalogue is
 * opened. One caller thread per prewrite. */
struct catalog_prewrite;
struct catalog_prewrite *catalog_prewrite_begin(struct catalog *cat, const char *source,
                                                size_t len);
void catalog_prewrite_end(struct catalog_prewrite *pw);

/* Points `tag` at the revision `hex` (full 64 hex) of strategy `name`.
 * previous_hex receives the old target ("" when the tag is new). */
int catalog_set_tag(struct catalog *cat, const char *name, const char *tag, const char *hex,
                    char previous_hex[HASH_HEX_LEN + 1], struct err *err);
/* Removes a tag. `latest` can never be removed; removing the last tag that
 * points at a revision needs allow_orphan. */
int catalog_delete_tag(struct catalog *cat, const char *name, const char *tag, bool allow_orphan,
                       char previous_hex[HASH_HEX_LEN + 1], struct err *err);
/* Deletes one revision: its registry entry, the tags pointing at it, then
 * its file and folders. `latest` moves to the newest remaining revision; the
 * last revision takes the strategy with it. */
int catalog_delete_revision(struct catalog *cat, const char *name, const char *hex,
                            catalog_guard_fn guard, void *guard_ctx, struct err *err);
int catalog_delete_strategy(struct catalog *cat, const char *name, catalog_guard_fn guard,
                            void *guard_ctx, struct err *err);
/* The same two deletes, reporting the snapshots around them in *change
 * (optional, see struct catalog_change): which tags went, and where
 * `latest` moved. */
int catalog_delete_revision_noting(struct catalog *cat, const char *name, const char *hex,
                                   catalog_guard_fn guard, void *guard_ctx,
                                   struct catalog_change *change, struct err *err);
int catalog_delete_strategy_noting(struct catalog *cat, const char *name, catalog_guard_fn guard,
                                   void *guard_ctx, struct catalog_change *change, struct err *err);

/* A batch: every change made by the calling thread between begin and end
 * lands in one registry.json write, at end. Revision files are still
 * written durably before the change that names them returns, and files the
 * batch no longer names are removed only after that write, so a crash
 * inside a batch leaves the registry as it was before it, plus
 * unregistered files. The caller holds the catalogue's locks (and the
 * flock other processes honour) from begin to end: other threads' changes
 * wait, and the caller must not call catalog_reload or open a second batch.
 * Snapshots published during a batch run ahead of registry.json. If the
 * final write fails, the snapshot of begin is published again and nothing
 * is removed; the error is returned. */
int catalog_batch_begin(struct catalog *cat, struct err *err);
int catalog_batch_end(struct catalog *cat, struct err *err);

/* Reads a revision's bytes from disk and checks them against its hash
 * (ERR_CONFLICT if they no longer match). *source is malloc'ed. */
int catalog_read_source(struct catalog *cat, const char *name, const char *hex, char **source,
                        size_t *len, struct err *err);

#endif
