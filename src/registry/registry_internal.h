/*
 * registry internals: what the registry's own files share and nobody else
 * may rely on. Symbols carry a double underscore after the module prefix.
 *
 * Snapshots under construction are private to the thread building them, so
 * the mutating helpers below take no locks; once a snapshot is published,
 * nothing in it (or in the strategies it shares) is touched again.
 */
#ifndef STRATD_REGISTRY_INTERNAL_H
#define STRATD_REGISTRY_INTERNAL_H

#include "core/fsutil.h"
#include "registry/registry.h"

#include <pthread.h>

/* Upper bounds for what we read back from disk. */
#define REGISTRY__SOURCE_MAX ((size_t)64 << 20)
#define REGISTRY__FILE_MAX ((size_t)256 << 20)
#define REGISTRY__COMPONENT "registry"
/* "<name>/<hex>/<name>.js" plus the NUL. */
#define REGISTRY__REL_PATH_MAX (NAMES_STRATEGY_MAX * 2 + HASH_HEX_LEN + 6)

/* ------------------------------------------------------------ strategy */

struct registry_strategy *registry__strategy_new(const char *name);
/* A private, deep copy of st (refs = 1), ready to be changed. */
struct registry_strategy *registry__strategy_copy(const struct registry_strategy *st);
void registry__strategy_retain(struct registry_strategy *st);
void registry__strategy_release(struct registry_strategy *st);

/* Points tag at hex, inserting it in order. -1 only when out of memory. */
int registry__strategy_set_tag(struct registry_strategy *st, const char *tag, const char *hex);
void registry__strategy_remove_tag(struct registry_strategy *st, const char *tag);
/* Appends rev, taking its strings and metadata; rev is left empty. -1 when
 * out of memory, in which case rev still owns them. */
int registry__strategy_push_revision(struct registry_strategy *st, struct registry_revision *rev);
/* Removes the revision at index and every tag that points at it. */
void registry__strategy_remove_revision(struct registry_strategy *st, size_t index);
/* Sorts the tags by name (after building them in another order). */
void registry__strategy_sort_tags(struct registry_strategy *st);
/* The same tags, revisions, validity and metadata; `order` is ignored
 * because only the sequence of revisions carries meaning. */
bool registry__strategy_same(const struct registry_strategy *a, const struct registry_strategy *b);
/* Index of hex among st's revisions, or -1. */
long registry__revision_index(const struct registry_strategy *st, const char *hex);
void registry__revision_clear(struct registry_revision *rev);
/* "<name>/<hex>/<name>.js" */
void registry__rel_path(const char *name, const char *hex, char out[REGISTRY__REL_PATH_MAX]);

/* ------------------------------------------------------------ snapshot */

/* An empty snapshot with room for `capacity` strategies (refs = 1). */
struct registry *registry__new(size_t capacity);
/* Appends st (taking the reference); strategies must arrive sorted. */
void registry__append(struct registry *reg, struct registry_strategy *st);
/* A new snapshot equal to base except that strategy `name` is replaced by
 * st, inserted if absent, or removed when st is NULL. Takes st's reference
 * (also on failure); the others are shared with base. NULL if out of memory. */
struct registry *registry__with(const struct registry *base, const char *name,
                                struct registry_strategy *st);

/* registry_to_text() that also keeps each strategy's line in the strategy
 * (st->text) for the next write, so a change that replaces one strategy
 * serialises one strategy. Only under the catalogue's change_mu. */
/* One writer at a time (the catalogue's change_mu); snapshot readers never
 * see it. */
struct registry_text_buffer {
    char *data; /* malloc'ed, reused from one write to the next */
    size_t cap, len;
    struct registry *of; /* the snapshot whose text data holds (a reference) */
    /* What changed in data since registry__text_forget_changes(): byte
     * ranges, or everything (`whole`: the layout moved). */
    struct fsutil_range *changed;
    size_t nchanged, changed_cap;
    bool whole;
};
/* The text goes into buf (grown as needed; it is buf->data, not a new
 * allocation): a fresh 6 MB buffer a write would cost its page faults.
 * When buf holds the text of a snapshot with the same strategies in the
 * same places and every changed line still fits its room, only the lines
 * of the strategies that differ are written, in place, and their ranges
 * added to buf->changed; otherwise the whole text is rebuilt (buf->whole).
 * NULL if out of memory (buf then holds no snapshot's text). */
char *registry__text_cached(struct registry *reg, struct registry_text_buffer *buf, size_t *len);
/* Starts a new account of buf's changes. */
void registry__text_forget_changes(struct registry_text_buffer *buf);
void registry__text_buffer_free(struct registry_text_buffer *buf);
/* Takes each strategy's room from its line in text (registry.json as it is
 * on disk), so that the next write keeps the file's layout and rewrites
 * only what changed, even the first write after a start. For a snapshot
 * not yet published; lines of another shape are skipped. */
void registry__learn_rooms(struct registry *reg, const char *text, size_t len);

/* Builds an unverified snapshot from a parsed registry.json: names, tags and
 * hashes are checked (ERR_INVALID naming the bad entry), revisions whose
 * path is not canonical are marked invalid, dangling tags are dropped and a
 * missing `latest` is added, each with a warning in the log. */
struct registry *registry__from_json(json_t *doc, struct err *err);

/* ------------------------------------------------------------- catalog */

struct catalog {
    char *root;
    char *registry_path;
    char *spare_path;                 /* fsutil_write_swap's spare: the version before last */
    struct registry_text_buffer text; /* registry.json's text, under change_mu */
    /* What lets a write skip comparing the whole spare (under change_mu):
     * disk_matches says registry.json holds the buffer's text as it was
     * before the changes the buffer lists; spare_known that the spare, with
     * identity spare_id, holds the text before the last write's changes
     * (spare_changed), in the same layout. */
    bool disk_matches, spare_known;
    struct fsutil_identity spare_id;
    struct fsutil_range *spare_changed;
    size_t nspare_changed, spare_changed_cap;
    char *lock_path;
    catalog_metadata_fn metadata;
    void *metadata_ctx;
    pthread_mutex_t change_mu; /* serialises reloads and changes */
    pthread_mutex_t snap_mu;   /* guards `current` only: readers hold it for a retain */
    struct registry *current;
    uint64_t generation;
    /* The registry.json that `current` was built from or written as; a
     * change compares it with the disk to notice other writers. */
    bool disk_present;
    char disk_hex[HASH_HEX_LEN + 1];
    /* The file identity (inode, size, times) that goes with disk_hex, so a
     * change can tell "nobody wrote it since" from a stat() instead of
     * reading and hashing the whole file. */
    bool disk_id_known;
    struct fsutil_identity disk_id;
    /* An open batch (catalog_batch_begin): its thread holds change_mu and
     * batch_lock until catalog_batch_end. */
    atomic_bool batch;
    pthread_t batch_owner;
    struct fsutil_lock batch_lock;
    struct registry *batch_base; /* what registry.json holds */
    bool batch_dirty;
    struct catalog__removal *removals; /* done after the batch's write */
    size_t nremovals, removals_cap;
    /* The path of the registry.json the last change replaced, owned here
     * until an atomic exchange takes it (catalog_housekeep, the next change
     * under change_mu, catalog_close) and hands it to the reaper, the thread
     * that removes it (NULL: the caller removes it). */
    _Atomic(char *) replaced;
    struct fsutil_reaper *reaper;
    /* Writers of catalog_prewrite_begin still running, joined or not:
     * catalog_close waits for them (they write into the root). */
    pthread_mutex_t prewrite_mu;
    pthread_cond_t prewrites_done;
    size_t prewrites;
};

/* A file (hex set) or a whole strategy folder (hex "") to remove once the
 * registry that no longer names it is on disk. */
struct catalog__removal {
    char name[NAMES_STRATEGY_MAX + 1];
    char hex[HASH_HEX_LEN + 1];
};

/* Hashes every revision file of `fresh` (whose path is canonical), using
 * metadata from `prev` for revisions already verified there, and marks the
 * rest invalid with a reason. Logs revisions that turned invalid. */
int catalog__verify(const struct catalog *cat, struct registry *fresh, const struct registry *prev,
                    struct err *err);

/* Hashes every revision file of `current` again (registry.json itself is
 * unchanged). *out is a new snapshot sharing every strategy whose files
 * still say the same, or NULL when nothing changed. */
int catalog__reverify(const struct catalog *cat, const struct registry *current,
                      struct registry **out, struct err *err);

/* Under change_mu: reads registry.json and, when it differs from what
 * `current` reflects, rebuilds and publishes a snapshot from it. */
int catalog__sync(struct catalog *cat, struct err *err);
/* Under change_mu: registry.json is not (or may not be) what the catalogue
 * last wrote, so the next write compares the whole spare. */
void catalog__forget_spare(struct catalog *cat);
/* Under change_mu: publishes reg (taking the reference) as the current
 * snapshot and records the digest of the registry.json it matches. */
void catalog__publish(struct catalog *cat, struct registry *reg, bool present,
                      const char *disk_hex);
/* Under change_mu: records the identity of the registry.json that disk_hex
 * describes (NULL: unknown, the next change reads the file). */
void catalog__note_disk(struct catalog *cat, const struct fsutil_identity *id);
/* "<root>/<name>/<hex>/<name>.js", malloc'ed; NULL if out of memory. */
char *catalog__file_path(const struct catalog *cat, const char *name, const char *hex);

/* Temporaries of catalog_prewrite_begin, in the root: "<prefix><pid>.<n>",
 * that is ".<kind>.<pid>.<n>" (fsutil_is_writer_name with an empty base). */
#define CATALOG__PREWRITE_KIND "upload"
#define CATALOG__PREWRITE_PREFIX "." CATALOG__PREWRITE_KIND "."
/* Moves the bytes written ahead into place at path when they are the
 * bytes of `source` and were written; false when the caller must write the
 * file itself. The caller fsyncs path's directory. */
bool catalog__prewrite_take(struct catalog_prewrite *pw, const char *source, size_t len,
                            const char *path);
/* Blocks until every prewrite's writer has finished (catalog_close). */
void catalog__prewrites_wait(struct catalog *cat);

#endif
