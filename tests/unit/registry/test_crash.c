/*
 * Crash safety: a child process changes the catalogue in a loop and is
 * killed with SIGKILL at random moments. After every kill the tree must hold
 * a registry.json that parses and whose every entry names a complete file,
 * and a catalogue opened on it must serve every tag and leave no revision
 * file that registry.json does not name (a later bootstrap would register
 * it again).
 */
#include "regtest.h"

#include "core/log.h"

#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 50
#define BETA_KEEP 6

static void child_fail(const char *what, const struct err *err)
{
    fprintf(stderr, "crash child: %s: %s\n", what, err->message);
    _exit(3);
}

static void child_upload(struct catalog *cat, const char *name, int n, const char *tag,
                         const char *alias, char hex[HASH_HEX_LEN + 1])
{
    char *source = rt_source(name, n);
    const char *aliases[] = {alias};
    struct catalog_upload up = {.name = name,
                                .source = source,
                                .len = strlen(source),
                                .tag = tag,
                                .aliases = aliases,
                                .naliases = alias ? 1 : 0};
    struct catalog_upload_result result;
    struct err err = ERR_INIT;
    if (catalog_add_revision(cat, &up, &result, &err) != 0)
        child_fail("upload", &err);
    memcpy(hex, result.hex, HASH_HEX_LEN + 1);
    free(source);
}

/* Keeps beta small: deletes its oldest revision once it has too many. */
static void child_prune(struct catalog *cat)
{
    struct registry *reg = catalog_snapshot(cat);
    const struct registry_strategy *beta = registry_find_strategy(reg, "beta");
    char oldest[HASH_HEX_LEN + 1] = "";
    if (beta && beta->nrevisions > BETA_KEEP)
        memcpy(oldest, beta->revisions[0].hex, sizeof oldest);
    registry_release(reg);
    struct err err = ERR_INIT;
    if (oldest[0] && catalog_delete_revision(cat, "beta", oldest, NULL, NULL, &err) != 0)
        child_fail("delete", &err);
}

static _Noreturn void child_loop(const char *root, int round, int ready_fd)
{
    log_set_level(LOG_LEVEL_ERROR);
    struct catalog_options opts = {root, NULL, NULL, false};
    struct catalog *cat = NULL;
    struct err err = ERR_INIT;
    if (catalog_open(&opts, &cat, &err) != 0)
        child_fail("open", &err);
    char r1[HASH_HEX_LEN + 1], r2[HASH_HEX_LEN + 1], hex[HASH_HEX_LEN + 1];
    child_upload(cat, "alpha", 1, "v1", NULL, r1);
    child_upload(cat, "alpha", 2, "v2", NULL, r2);
    if (write(ready_fd, "r", 1) != 1)
        _exit(4);
    for (int i = 0;; i++) {
        switch (i % 6) {
        case 0:
        case 2:
            if (catalog_set_tag(cat, "alpha", "prod", i % 6 ? r2 : r1, NULL, &err) != 0)
                child_fail("set_tag", &err);
            break;
        case 1:
            child_upload(cat, "beta", round * 100000 + i, NULL, "prod", hex);
            break;
        case 3:
            child_prune(cat);
            break;
        case 4:
            child_upload(cat, "gamma", round * 100000 + i, NULL, NULL, hex);
            break;
        default:
            if (catalog_delete_strategy(cat, "gamma", NULL, NULL, &err) != 0)
                child_fail("delete_strategy", &err);
        }
    }
}

static char *registry_digest(const char *root)
{
    char *path = tu_path("%s/registry.json", root);
    size_t len = 0;
    char *text = tu_read_file(path, &len);
    free(path);
    if (!text)
        return strdup("");
    char hex[HASH_HEX_LEN + 1];
    hash_sha256_hex(text, len, hex);
    free(text);
    return strdup(hex);
}

/* What the next process sees: every tag resolves to a verified revision. */
static void check_catalog(const char *root)
{
    struct catalog *cat = rt_open(root);
    struct registry *reg = catalog_snapshot(cat);
    for (size_t s = 0; s < reg->nstrategies; s++) {
        const struct registry_strategy *st = reg->strategies[s];
        for (size_t r = 0; r < st->nrevisions; r++) {
            if (st->revisions[r].invalid)
                fail_msg("%s@%s is invalid: %s", st->name, st->revisions[r].hex,
                         st->revisions[r].invalid_reason);
        }
        for (size_t t = 0; t < st->ntags; t++) {
            char *sel = tu_path("%s:%s", st->name, st->tags[t].tag);
            struct registry_resolution res;
            struct err err = ERR_INIT;
            rt_assert_ok(registry_resolve_text(reg, sel, &res, &err), &err);
            free(sel);
        }
    }
    registry_release(reg);
    catalog_close(cat);
}

/* After an open: every <name>/<hash>/<name>.js is a revision registry.json
 * names, and no change's marker is left. Returns how many were checked. */
static int check_no_unnamed_file(const char *root)
{
    char *listing = NULL;
    if (tu_run(&listing, "cd '%s' && find . -mindepth 3 -maxdepth 3 -type f | sort", root) != 0)
        fail_msg("cannot list %s", root);
    char *path = tu_path("%s/registry.json", root);
    json_t *doc = rt_load_json(path);
    free(path);
    int files = 0;
    char *save = NULL;
    for (char *line = strtok_r(listing, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char name[80], hex[80], file[200];
        if (strstr(line, ".pending."))
            fail_msg("a change's marker is left: %s", line);
        if (sscanf(line, "./%79[^/]/%79[^/]/%199s", name, hex, file) != 3)
            continue;
        char *key = tu_path(HASH_PREFIX "%s", hex);
        if (!json_object_get(json_object_get(json_object_get(doc, name), "hashes"), key))
            fail_msg("%s is on disk but registry.json does not name it", line);
        free(key);
        files++;
    }
    json_decref(doc);
    free(listing);
    return files;
}

static void test_sigkill_at_random_moments(void **state)
{
    (void)state;
    log_set_level(LOG_LEVEL_WARN);
    char *root = tu_tempdir("registry-crash");
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    print_message("seed %u\n", seed);
    srand(seed);
    int changed = 0;
    for (int round = 0; round < ROUNDS; round++) {
        char *before = registry_digest(root);
        int ready[2];
        assert_int_equal(pipe(ready), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
            child_loop(root, round, ready[1]);
        /* Once the child is in its loop, the kill lands anywhere, often in
         * the middle of a write. */
        char byte;
        if (read(ready[0], &byte, 1) == 1)
            usleep((useconds_t)(rand() % 40000));
        close(ready[0]);
        close(ready[1]);
        kill(pid, SIGKILL);
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!WIFSIGNALED(status))
            fail_msg("the child stopped by itself (status %d) in round %d", status, round);
        rt_check_disk(root);
        check_catalog(root);
        check_no_unnamed_file(root);
        char *after = registry_digest(root);
        changed += strcmp(before, after) != 0;
        free(before);
        free(after);
    }
    print_message("%d of %d rounds changed the registry\n", changed, ROUNDS);
    /* the kills must have interrupted real work, not an idle child */
    if (changed < ROUNDS / 5)
        fail_msg("only %d of %d rounds changed the registry", changed, ROUNDS);
    size_t revisions = rt_check_disk(root);
    assert_true(revisions >= 3);
    tu_remove_tree(root);
    free(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigkill_at_random_moments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
