/*
 * The plan, part one: which revisions exist, what becomes of each, and which
 * tags they get.
 *
 * A revision is a (strategy, hash) pair seen in the registry snapshot or in
 * at least one file that validates and sits where its name says. Its fate:
 *
 *   KEEP      registered, verified and at its canonical path; or registered
 *             with a file that exists but is damaged (left for the operator)
 *   ADD       has a good copy somewhere: written (if need be) and registered
 *             through catalog_add_revision, which also repairs a registry
 *             entry whose file was missing or misplaced
 *   DROP      registered, but its bytes are nowhere in the tree
 *   CONFLICT  wants a tag another revision holds, or its canonical path holds
 *             something else (a conflict itself); its files are left alone
 *
 * Tags. The registry is the source of truth for revisions it already knows:
 * their tags (aliases such as `prod` included) are never touched. A new
 * revision's primary tag is metadata.tag, else its tag folder, else v1.0.0;
 * identical bytes in several tag folders give the extra folders as aliases.
 * When two revisions want one tag, the one holding it in the registry keeps
 * it; among new ones an explicit tag beats the default, then the newest file
 * wins. A loser that cannot get its primary tag is a conflict (a version tag
 * must never name two different files); a lost alias is only a note.
 */
#include "cmd/bootstrap.h"

#include "core/fsutil.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int oom(struct err *err)
{
    err_set(err, ERR_INTERNAL, "out of memory planning the migration");
    return -1;
}

void bootstrap_canonical_rel(const char *name, const char *hex, char out[BOOTSTRAP_REL_MAX])
{
    snprintf(out, BOOTSTRAP_REL_MAX, "%s/%s/%s.js", name, hex, name);
}

int bootstrap_plan_note(struct bootstrap_plan *plan, const char *path, const char *fmt, ...)
{
    if (plan->nnotes == plan->note_cap) {
        size_t cap = plan->note_cap ? plan->note_cap * 2 : 8;
        struct bootstrap_note *notes = realloc(plan->notes, cap * sizeof *notes);
        if (!notes)
            return -1;
        plan->notes = notes;
        plan->note_cap = cap;
    }
    va_list ap;
    va_start(ap, fmt);
    char *message = NULL;
    if (vasprintf(&message, fmt, ap) < 0)
        message = NULL; /* its content is undefined after a failure */
    va_end(ap);
    char *copy = strdup(path);
    if (!message || !copy) {
        free(message);
        free(copy);
        return -1;
    }
    struct bootstrap_note *note = &plan->notes[plan->nnotes++];
    note->path = copy;
    note->message = message;
    return 0;
}

/* --------------------------------------------------- where files sit */

static bool base_is(const char *rel, const char *name)
{
    const char *base = strrchr(rel, '/');
    base = base ? base + 1 : rel;
    size_t n = strlen(name);
    return strncmp(base, name, n) == 0 && strcmp(base + n, ".js") == 0;
}

static const char *meta_tag(const struct bootstrap_file *file)
{
    const char *tag = json_string_value(json_object_get(file->check->metadata, "tag"));
    return tag && names_valid_tag(tag) && strcmp(tag, REGISTRY_LATEST) != 0 ? tag : NULL;
}

/* A folder name the tag comes from: `latest` is the registry's to place. */
static bool usable_folder_tag(const char *sub)
{
    return sub && names_valid_tag(sub) && strcmp(sub, REGISTRY_LATEST) != 0;
}

static int check_tag_folder(struct bootstrap_file *f, const char *name)
{
    if (strcmp(f->folder, name) != 0)
        return bootstrap_file_conflict(f, "its folder '%s' does not match metadata.name '%s'",
                                       f->folder, name);
    if (!meta_tag(f) && !names_valid_tag(f->sub))
        return bootstrap_file_conflict(f,
                                       "the folder '%s' is not a valid tag and metadata.tag is "
                                       "not set",
                                       f->sub);
    return 0;
}

static int check_hash_folder(struct bootstrap_file *f, const char *name)
{
    if (strcmp(f->folder, name) != 0)
        return bootstrap_file_conflict(f,
                                       "it sits in the folder of strategy '%s' but "
                                       "metadata.name is '%s'",
                                       f->folder, name);
    if (!base_is(f->rel, name))
        return bootstrap_file_conflict(f, "a file in a hash folder must be named %s.js", name);
    if (strcmp(f->sub, f->hex) != 0)
        return bootstrap_file_conflict(f,
                                       "its bytes hash to " HASH_PREFIX "%s, not to the name "
                                       "of its folder",
                                       f->hex);
    return 0;
}

/* metadata.name is authoritative; a folder that disagrees with it means
 * somebody filed the module by hand, and guessing which one is right could
 * move a file into another strategy. */
static int check_placement(struct bootstrap_file *f)
{
    if (f->state != BOOTSTRAP_FILE_OK)
        return 0;
    const char *name = bootstrap_file_name(f);
    if (!name || !names_valid_strategy(name))
        return bootstrap_file_conflict(f, "metadata.name is not a valid strategy name");
    if (names_reserved_strategy(name))
        return bootstrap_file_conflict(f,
                                       "metadata.name '%s' is reserved (it collides with an "
                                       "API path)",
                                       name);
    if (f->layout == BOOTSTRAP_LAYOUT_TAG)
        return check_tag_folder(f, name);
    if (f->layout == BOOTSTRAP_LAYOUT_CURRENT)
        return check_hash_folder(f, name);
    return 0;
}

/* ------------------------------------------------------- revisions */

struct key {
    const char *name;
    const char *hex;
};

static int compare_keys(const void *a, const void *b)
{
    const struct key *x = a, *y = b;
    int cmp = strcmp(x->name, y->name);
    return cmp ? cmp : strcmp(x->hex, y->hex);
}

static size_t count_keys(const struct bootstrap_scan *scan, const struct registry *snapshot)
{
    size_t n = scan->nfiles;
    for (size_t s = 0; s < snapshot->nstrategies; s++)
        n += snapshot->strategies[s]->nrevisions;
    return n;
}

/* Every (name, hash) of the snapshot and of the good files, sorted and
 * without duplicates: the plan's revisions. */
static int collect(struct bootstrap_plan *plan, const struct bootstrap_scan *scan,
                   const struct registry *snapshot, struct err *err)
{
    size_t n = 0;
    struct key *keys = malloc((count_keys(scan, snapshot) + 1) * sizeof *keys);
    if (!keys)
        return oom(err);
    for (size_t s = 0; s < snapshot->nstrategies; s++) {
        const struct registry_strategy *st = snapshot->strategies[s];
        for (size_t r = 0; r < st->nrevisions; r++)
            keys[n++] = (struct key){st->name, st->revisions[r].hex};
    }
    for (size_t i = 0; i < scan->nfiles; i++) {
        if (scan->files[i].state == BOOTSTRAP_FILE_OK)
            keys[n++] = (struct key){bootstrap_file_name(&scan->files[i]), scan->files[i].hex};
    }
    qsort(keys, n, sizeof *keys, compare_keys);
    plan->revisions = calloc(n + 1, sizeof *plan->revisions);
    if (!plan->revisions) {
        free(keys);
        return oom(err);
    }
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && compare_keys(&keys[i - 1], &keys[i]) == 0)
            continue;
        struct bootstrap_revision *rev = &plan->revisions[plan->nrevisions++];
        snprintf(rev->name, sizeof rev->name, "%s", keys[i].name);
        snprintf(rev->hex, sizeof rev->hex, "%s", keys[i].hex);
        rev->source = -1;
    }
    free(keys);
    return 0;
}

const struct bootstrap_revision *bootstrap_plan_find(const struct bootstrap_plan *plan,
                                                     const char *name, const char *hex)
{
    struct key key = {name, hex};
    size_t lo = 0, hi = plan->nrevisions;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        struct key here = {plan->revisions[mid].name, plan->revisions[mid].hex};
        int cmp = compare_keys(&here, &key);
        if (cmp == 0)
            return &plan->revisions[mid];
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static int add_copy(struct bootstrap_revision *rev, size_t file_index)
{
    size_t *copies = realloc(rev->copies, (rev->ncopies + 1) * sizeof *copies);
    if (!copies)
        return -1;
    rev->copies = copies;
    rev->copies[rev->ncopies++] = file_index;
    return 0;
}

/* A revision's age is that of its newest legacy copy when it has one: the
 * canonical copy's time is when the catalogue wrote it, and a rerun after a
 * crash (which finds both) must rank revisions exactly as the first run. */
static void rev_mtime(struct bootstrap_revision *rev, const struct bootstrap_scan *scan)
{
    int64_t legacy = INT64_MIN, canonical = INT64_MIN;
    for (size_t i = 0; i < rev->ncopies; i++) {
        const struct bootstrap_file *f = &scan->files[rev->copies[i]];
        int64_t *slot = bootstrap_file_is_legacy(f) ? &legacy : &canonical;
        if (f->mtime_ns > *slot)
            *slot = f->mtime_ns;
    }
    rev->mtime_ns = legacy != INT64_MIN ? legacy : canonical != INT64_MIN ? canonical : 0;
}

static int attach_files(struct bootstrap_plan *plan, const struct bootstrap_scan *scan,
                        struct err *err)
{
    for (size_t i = 0; i < scan->nfiles; i++) {
        const struct bootstrap_file *f = &scan->files[i];
        if (f->state != BOOTSTRAP_FILE_OK)
            continue;
        struct bootstrap_revision *rev =
            (struct bootstrap_revision *)bootstrap_plan_find(plan, bootstrap_file_name(f), f->hex);
        if (!rev || add_copy(rev, i) != 0)
            return oom(err);
        rev->check = f->check;
        rev->size = f->size;
        if (!bootstrap_file_is_legacy(f)) {
            rev->in_place = true;
            rev->source = (long)i;
        } else if (rev->source < 0) {
            rev->source = (long)i; /* the first legacy copy, unless one is in place */
        }
    }
    for (size_t r = 0; r < plan->nrevisions; r++)
        rev_mtime(&plan->revisions[r], scan);
    return 0;
}

/* ------------------------------------------------------------ fates */

static bool canonical_exists(const char *root, const struct bootstrap_revision *rev)
{
    char rel[BOOTSTRAP_REL_MAX];
    bootstrap_canonical_rel(rev->name, rev->hex, rel);
    char *path = fsutil_join(root, rel);
    struct stat st;
    bool exists = !path || lstat(path, &st) == 0; /* out of memory: assume it is there */
    free(path);
    return exists;
}

static void decide_fate(const char *root, struct bootstrap_revision *rev,
                        const struct registry *snapshot)
{
    rev->registered = registry_find_revision(registry_find_strategy(snapshot, rev->name), rev->hex);
    rev->new_strategy = registry_find_strategy(snapshot, rev->name) == NULL;
    bool sound_in_place = rev->registered && !rev->registered->invalid && rev->in_place;
    /* a damaged canonical file with no copy to add is reported by the scan
     * and left as it is */
    if (!sound_in_place && rev->ncopies > 0)
        rev->fate = BOOTSTRAP_ADD;
    else if (sound_in_place || canonical_exists(root, rev))
        rev->fate = BOOTSTRAP_KEEP;
    else
        rev->fate = BOOTSTRAP_DROP;
    if (rev->registered && rev->size == 0)
        rev->size = rev->registered->size;
}

/* A revision to add whose canonical path already holds something that is
 * not a good copy of it (other bytes, an invalid module, a link, a folder):
 * that file is a conflict the plan promises to leave in place, and adding
 * the revision would write over it. The revision is not added and its
 * copies stay where they are, each saying why, until the operator moves
 * the file at the canonical path aside. */
static int block_occupied(const char *root, struct bootstrap_revision *rev,
                          struct bootstrap_scan *scan)
{
    if (rev->fate != BOOTSTRAP_ADD || rev->in_place || !canonical_exists(root, rev))
        return 0;
    char rel[BOOTSTRAP_REL_MAX];
    bootstrap_canonical_rel(rev->name, rev->hex, rel);
    rev->fate = BOOTSTRAP_CONFLICT;
    for (size_t i = 0; i < rev->ncopies; i++) {
        if (bootstrap_file_conflict(&scan->files[rev->copies[i]],
                                    "not migrated: %s already exists and does not hold these "
                                    "bytes, and is left in place; move it aside and run again",
                                    rel) != 0)
            return -1;
    }
    return 0;
}

/* ------------------------------------------------------------- tags */

struct taken {
    const char **tags;
    const char **hexes;
    size_t n, cap;
};

static const char *taken_by(const struct taken *t, const char *tag)
{
    for (size_t i = 0; i < t->n; i++) {
        if (strcmp(t->tags[i], tag) == 0)
            return t->hexes[i];
    }
    return NULL;
}

static int take(struct taken *t, const char *tag, const char *hex)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        const char **tags = realloc(t->tags, cap * sizeof *tags);
        if (!tags)
            return -1;
        t->tags = tags;
        const char **hexes = realloc(t->hexes, cap * sizeof *hexes);
        if (!hexes)
            return -1;
        t->hexes = hexes;
        t->cap = cap;
    }
    t->tags[t->n] = tag;
    t->hexes[t->n++] = hex;
    return 0;
}

/* The registry's tags stay where they are, except on revisions that go. */
static int take_registered(struct taken *t, const struct bootstrap_plan *plan,
                           const struct registry_strategy *st)
{
    for (size_t i = 0; st && i < st->ntags; i++) {
        const struct registry_tag *tag = &st->tags[i];
        const struct bootstrap_revision *rev = bootstrap_plan_find(plan, st->name, tag->hex);
        if (strcmp(tag->tag, REGISTRY_LATEST) == 0 || !rev || rev->fate == BOOTSTRAP_DROP)
            continue;
        if (take(t, tag->tag, tag->hex) != 0)
            return -1;
    }
    return 0;
}

static int push_alias(struct bootstrap_revision *rev, const char *tag)
{
    if (rev->tag && strcmp(rev->tag, tag) == 0)
        return 0;
    for (size_t i = 0; i < rev->naliases; i++) {
        if (strcmp(rev->aliases[i], tag) == 0)
            return 0;
    }
    char **aliases = realloc(rev->aliases, (rev->naliases + 1) * sizeof *aliases);
    if (!aliases)
        return -1;
    rev->aliases = aliases;
    rev->aliases[rev->naliases] = strdup(tag);
    return rev->aliases[rev->naliases++] ? 0 : -1;
}

/* Of several tag folders holding the same bytes, the highest version (then
 * the first by name) gives the primary tag. */
static const char *best_folder(const struct bootstrap_revision *rev,
                               const struct bootstrap_scan *scan)
{
    const char *best = NULL;
    for (size_t i = 0; i < rev->ncopies; i++) {
        const struct bootstrap_file *f = &scan->files[rev->copies[i]];
        if (f->layout != BOOTSTRAP_LAYOUT_TAG || !usable_folder_tag(f->sub))
            continue;
        int cmp = best ? bootstrap_semver_compare(f->sub, best) : 1;
        if (cmp > 0 || (cmp == 0 && strcmp(f->sub, best) < 0))
            best = f->sub;
    }
    return best;
}

/* A new revision's wanted tags, from its bytes and where its copies sit. */
static int wanted_tags(struct bootstrap_revision *rev, const struct bootstrap_scan *scan)
{
    const char *from_meta = meta_tag(&scan->files[rev->copies[0]]);
    const char *folder = best_folder(rev, scan);
    const char *primary = from_meta ? from_meta : folder ? folder : BOOTSTRAP_DEFAULT_TAG;
    rev->explicit_tag = from_meta || folder;
    rev->tag = strdup(primary);
    if (!rev->tag)
        return -1;
    /* The copy in the folder named like the tag is the one the table shows
     * moving; the others are duplicates. */
    for (size_t i = 0; folder && !rev->in_place && i < rev->ncopies; i++) {
        const struct bootstrap_file *f = &scan->files[rev->copies[i]];
        if (f->layout == BOOTSTRAP_LAYOUT_TAG && strcmp(f->sub, primary) == 0)
            rev->source = (long)rev->copies[i];
    }
    for (size_t i = 0; !from_meta && i < rev->ncopies; i++) {
        const struct bootstrap_file *f = &scan->files[rev->copies[i]];
        if (f->layout == BOOTSTRAP_LAYOUT_TAG && usable_folder_tag(f->sub) &&
            push_alias(rev, f->sub) != 0)
            return -1;
    }
    return 0;
}

/* A registry entry being repaired keeps a tag it already has, so the upload
 * moves nothing; only a revision with no tag at all claims its primary. */
static int repair_tag(struct bootstrap_revision *rev, const struct registry_strategy *st)
{
    const char *tag = rev->registered->tag;
    const char *target = registry_tag_target(st, tag);
    if (target && strcmp(target, rev->hex) != 0) {
        for (size_t i = 0; i < st->ntags; i++) {
            if (strcmp(st->tags[i].hex, rev->hex) == 0 &&
                strcmp(st->tags[i].tag, REGISTRY_LATEST) != 0) {
                tag = st->tags[i].tag;
                break;
            }
        }
    }
    rev->explicit_tag = true;
    rev->tag = strdup(tag);
    return rev->tag ? 0 : -1;
}

static void short_hex(const char *hex, char out[BOOTSTRAP_SHORT_HEX + 1])
{
    memcpy(out, hex, BOOTSTRAP_SHORT_HEX);
    out[BOOTSTRAP_SHORT_HEX] = '\0';
}

/* A version tag never names two different files: the revision stays out of
 * the registry and its files stay where they are. */
static int lose_primary(struct bootstrap_revision *rev, struct bootstrap_scan *scan,
                        const char *holder)
{
    char held[BOOTSTRAP_SHORT_HEX + 1];
    short_hex(holder, held);
    rev->fate = BOOTSTRAP_CONFLICT;
    for (size_t i = 0; i < rev->ncopies; i++) {
        struct bootstrap_file *f = &scan->files[rev->copies[i]];
        int rc =
            rev->explicit_tag
                ? bootstrap_file_conflict(f,
                                          "tag '%s' of strategy '%s' already names " HASH_PREFIX
                                          "%s...; give this revision its own metadata.tag",
                                          rev->tag, rev->name, held)
                : bootstrap_file_conflict(
                      f,
                      "it has no tag (no metadata.tag, no tag folder) and "
                      "the default '%s' of strategy '%s' already names " HASH_PREFIX
                      "%s...; give it a metadata.tag",
                      rev->tag, rev->name, held);
        if (rc != 0)
            return -1;
    }
    return 0;
}

static int lose_alias(struct bootstrap_plan *plan, const struct bootstrap_scan *scan,
                      const struct bootstrap_revision *rev, const char *alias, const char *holder)
{
    char held[BOOTSTRAP_SHORT_HEX + 1], mine[BOOTSTRAP_SHORT_HEX + 1];
    short_hex(holder, held);
    short_hex(rev->hex, mine);
    return bootstrap_plan_note(plan, scan->files[rev->source].rel,
                               "tag '%s' already names " HASH_PREFIX "%s...; it is not added "
                               "to " HASH_PREFIX "%s...",
                               alias, held, mine);
}

/* Keeps the aliases that are free and takes them. */
static int settle_aliases(struct bootstrap_plan *plan, const struct bootstrap_scan *scan,
                          struct bootstrap_revision *rev, struct taken *t)
{
    size_t kept = 0;
    for (size_t i = 0; i < rev->naliases; i++) {
        char *alias = rev->aliases[i];
        const char *holder = taken_by(t, alias);
        if (holder && strcmp(holder, rev->hex) != 0) {
            int rc = lose_alias(plan, scan, rev, alias, holder);
            free(alias);
            if (rc != 0)
                return -1;
            continue;
        }
        rev->aliases[kept++] = alias;
        if (take(t, alias, rev->hex) != 0)
            return -1;
    }
    rev->naliases = kept;
    return 0;
}

static int settle(struct bootstrap_plan *plan, struct bootstrap_scan *scan,
                  struct bootstrap_revision *rev, struct taken *t)
{
    const char *holder = taken_by(t, rev->tag);
    if (holder && strcmp(holder, rev->hex) != 0)
        return lose_primary(rev, scan, holder);
    if (!holder && take(t, rev->tag, rev->hex) != 0)
        return -1;
    return settle_aliases(plan, scan, rev, t);
}

/* Repairs first (their tags are the registry's), then explicit tags before
 * the default, then the newest file. */
static int compare_claims(const void *a, const void *b)
{
    const struct bootstrap_revision *x = *(struct bootstrap_revision *const *)a;
    const struct bootstrap_revision *y = *(struct bootstrap_revision *const *)b;
    if ((x->registered != NULL) != (y->registered != NULL))
        return x->registered ? -1 : 1;
    if (x->explicit_tag != y->explicit_tag)
        return x->explicit_tag ? -1 : 1;
    if (x->mtime_ns != y->mtime_ns)
        return x->mtime_ns > y->mtime_ns ? -1 : 1;
    return strcmp(x->hex, y->hex);
}

/* Tags for the revisions [lo, hi) of one strategy. */
static int assign_strategy(struct bootstrap_plan *plan, struct bootstrap_scan *scan,
                           const struct registry_strategy *st, size_t lo, size_t hi)
{
    struct taken t = {0};
    struct bootstrap_revision **claims = calloc(hi - lo + 1, sizeof *claims);
    size_t n = 0;
    int rc = claims && take_registered(&t, plan, st) == 0 ? 0 : -1;
    for (size_t i = lo; rc == 0 && i < hi; i++) {
        struct bootstrap_revision *rev = &plan->revisions[i];
        if (rev->fate != BOOTSTRAP_ADD)
            continue;
        rc = rev->registered ? repair_tag(rev, st) : wanted_tags(rev, scan);
        claims[n++] = rev;
    }
    if (rc == 0 && n > 1)
        qsort(claims, n, sizeof *claims, compare_claims);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = settle(plan, scan, claims[i], &t);
    free(claims);
    free(t.tags);
    free(t.hexes);
    return rc;
}

static int assign_tags(struct bootstrap_plan *plan, struct bootstrap_scan *scan,
                       const struct registry *snapshot, struct err *err)
{
    for (size_t lo = 0; lo < plan->nrevisions;) {
        size_t hi = lo + 1;
        while (hi < plan->nrevisions &&
               strcmp(plan->revisions[hi].name, plan->revisions[lo].name) == 0)
            hi++;
        const struct registry_strategy *st =
            registry_find_strategy(snapshot, plan->revisions[lo].name);
        if (assign_strategy(plan, scan, st, lo, hi) != 0)
            return oom(err);
        lo = hi;
    }
    return 0;
}

/* ------------------------------------------------------------ entry */

int bootstrap_plan_build(struct bootstrap_plan *plan, const char *root, struct bootstrap_scan *scan,
                         const struct registry *snapshot, struct err *err)
{
    memset(plan, 0, sizeof *plan);
    plan->root = root;
    for (size_t i = 0; i < scan->nfiles; i++) {
        if (check_placement(&scan->files[i]) != 0)
            return oom(err);
    }
    if (collect(plan, scan, snapshot, err) != 0 || attach_files(plan, scan, err) != 0)
        return -1;
    for (size_t i = 0; i < plan->nrevisions; i++) {
        decide_fate(root, &plan->revisions[i], snapshot);
        if (block_occupied(root, &plan->revisions[i], scan) != 0)
            return oom(err);
    }
    if (assign_tags(plan, scan, snapshot, err) != 0)
        return -1;
    if (bootstrap_plan_order(plan, snapshot, scan, err) != 0)
        return -1;
    plan->before = registry_to_json(snapshot);
    if (!plan->before)
        return oom(err);
    if (bootstrap_plan_registry(plan, err) != 0)
        return -1;
    return bootstrap_plan_diff(plan, err);
}

void bootstrap_plan_free(struct bootstrap_plan *plan)
{
    for (size_t i = 0; i < plan->nrevisions; i++) {
        struct bootstrap_revision *rev = &plan->revisions[i];
        free(rev->tag);
        for (size_t a = 0; a < rev->naliases; a++)
            free(rev->aliases[a]);
        free(rev->aliases);
        free(rev->copies);
    }
    free(plan->revisions);
    free(plan->steps);
    for (size_t i = 0; i < plan->nchanges; i++) {
        free(plan->changes[i].strategy);
        free(plan->changes[i].tag);
    }
    free(plan->changes);
    for (size_t i = 0; i < plan->nnotes; i++) {
        free(plan->notes[i].path);
        free(plan->notes[i].message);
    }
    free(plan->notes);
    json_decref(plan->before);
    json_decref(plan->after);
    memset(plan, 0, sizeof *plan);
}
