#include "testutil.h"

#include "core/clock.h"
#include "core/err.h"
#include "core/fsutil.h"
#include "core/hash.h"
#include "core/jsonutil.h"
#include "core/metrics.h"
#include "core/names.h"
#include "core/strbuf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static void test_sha256_known_vectors(void **state)
{
    (void)state;
    char hex[HASH_HEX_LEN + 1];
    hash_sha256_hex("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    hash_sha256_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_hash_file_matches_memory(void **state)
{
    (void)state;
    char *dir = tu_tempdir("core");
    char *path = tu_path("%s/f.js", dir);
    tu_write_text(path, "module.exports = {};\n");
    char a[HASH_HEX_LEN + 1], b[HASH_HEX_LEN + 1];
    uint64_t size = 0;
    struct err err = ERR_INIT;
    assert_int_equal(hash_file_sha256(path, a, &size, &err), 0);
    hash_sha256_hex("module.exports = {};\n", 21, b);
    assert_string_equal(a, b);
    assert_int_equal(size, 21);
    char *missing = tu_path("%s/none.js", dir);
    assert_int_equal(hash_file_sha256(missing, a, &size, &err), -1);
    assert_int_equal(err.kind, ERR_NOT_FOUND);
    err_clear(&err);
    free(missing);
    free(path);
    tu_remove_tree(dir);
    free(dir);
}

static void test_hash_parse(void **state)
{
    (void)state;
    char hex[HASH_HEX_LEN + 1];
    const char *full = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
    assert_true(hash_parse_full(full, hex));
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    char *spelled = tu_path("sha256:%s", hex);
    assert_true(hash_parse_full(spelled, hex));
    free(spelled);
    assert_false(hash_parse_full("sha256:abc", hex));
    assert_false(hash_parse_full("zz", hex));
    char out[HASH_SPELLED_LEN + 1];
    hash_spell(hex, out);
    assert_int_equal(strlen(out), HASH_SPELLED_LEN);
    assert_memory_equal(out, "sha256:", 7);
}

static void test_names(void **state)
{
    (void)state;
    assert_true(names_valid_strategy("momentum"));
    assert_true(names_valid_strategy("a"));
    assert_true(names_valid_strategy("mean_reversion-2"));
    assert_false(names_valid_strategy(""));
    assert_false(names_valid_strategy("Momentum"));
    assert_false(names_valid_strategy("-x"));
    assert_false(names_valid_strategy("a/b"));
    assert_false(names_valid_strategy(".."));
    assert_false(names_valid_strategy("a.b"));
    char long_name[70];
    memset(long_name, 'a', 65);
    long_name[65] = '\0';
    assert_false(names_valid_strategy(long_name));
    long_name[64] = '\0';
    assert_true(names_valid_strategy(long_name));
    assert_true(names_reserved_strategy("modules"));
    assert_true(names_reserved_strategy("registry"));
    assert_true(names_reserved_strategy("refresh"));
    assert_false(names_reserved_strategy("momentum"));
    assert_true(names_valid_tag("v1.2.0"));
    assert_true(names_valid_tag("prod"));
    assert_true(names_valid_tag("Release_2-rc.1"));
    assert_false(names_valid_tag(".hidden"));
    assert_false(names_valid_tag("a/b"));
    assert_false(names_valid_tag("a b"));
    assert_false(names_valid_tag(""));
}

static void test_strbuf(void **state)
{
    (void)state;
    struct strbuf sb = STRBUF_INIT;
    assert_string_equal(strbuf_cstr(&sb), "");
    strbuf_puts(&sb, "hello");
    strbuf_putc(&sb, ' ');
    strbuf_printf(&sb, "%d %s", 42, "world");
    for (int i = 0; i < 100; i++)
        strbuf_printf(&sb, "%0300d", i);
    assert_false(strbuf_failed(&sb));
    assert_int_equal(sb.len, 14 + 100 * 300);
    assert_memory_equal(sb.data, "hello 42 world", 14);
    size_t len = 0;
    char *s = strbuf_detach(&sb, &len);
    assert_int_equal(len, 14 + 100 * 300);
    free(s);
    assert_null(sb.data);
}

/* Integers as "%lld" writes them, the extremes included. */
static void test_strbuf_put_int64(void **state)
{
    (void)state;
    const int64_t values[] = {0, 7, -7, 10, 1764921600123, -1000000, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        struct strbuf sb = STRBUF_INIT;
        strbuf_putc(&sb, '[');
        strbuf_put_int64(&sb, values[i]);
        strbuf_putc(&sb, ']');
        char expected[32];
        (void)snprintf(expected, sizeof expected, "[%lld]", (long long)values[i]);
        assert_string_equal(strbuf_cstr(&sb), expected);
        strbuf_release(&sb);
    }
}

static void test_atomic_write_and_read(void **state)
{
    (void)state;
    char *dir = tu_tempdir("core");
    char *path = tu_path("%s/sub/dir/file.json", dir);
    char *sub = tu_path("%s/sub/dir", dir);
    struct err err = ERR_INIT;
    assert_int_equal(fsutil_mkdirs(sub, 0755, &err), 0);
    assert_int_equal(fsutil_write_atomic(path, "{\"a\":1}", 7, 0644, &err), 0);
    assert_int_equal(fsutil_write_atomic(path, "{\"a\":2}", 7, 0644, &err), 0);
    char *data = NULL;
    size_t len = 0;
    assert_int_equal(fsutil_read_file(path, 1024, &data, &len, &err), 0);
    assert_string_equal(data, "{\"a\":2}");
    free(data);
    assert_int_equal(fsutil_read_file(path, 3, &data, &len, &err), -1);
    assert_int_equal(err.kind, ERR_TOO_LARGE);
    err_clear(&err);
    /* no temporary file is left behind */
    char *out = NULL;
    assert_int_equal(tu_run(&out, "ls -A '%s'", sub), 0);
    assert_string_equal(out, "file.json\n");
    free(out);
    /* a read-only directory makes the write fail and keeps the old file */
    if (geteuid() != 0) {
        chmod(sub, 0555);
        assert_int_equal(fsutil_write_atomic(path, "x", 1, 0644, &err), -1);
        chmod(sub, 0755);
        err_clear(&err);
    }
    free(path);
    free(sub);
    tu_remove_tree(dir);
    free(dir);
}

/* Only the exact shape "<base>.<kind>.<pid>.<n>" is a writer's name: a
 * sweep that matched a prefix took operators' backups for leftovers. */
static void test_writer_names(void **state)
{
    (void)state;
    assert_true(fsutil_is_writer_name("registry.json.tmp.123.4", "registry.json", "tmp"));
    assert_true(fsutil_is_writer_name("registry.json.old.0.0", "registry.json", "old"));
    assert_true(fsutil_is_writer_name("a.js.tmp.99999999999999999999.1", "a.js", "tmp"));
    assert_true(fsutil_is_writer_name(".upload.77.8", "", "upload"));
    assert_false(fsutil_is_writer_name("registry.json.tmp.123.4", "registry.json", "old"));
    assert_false(fsutil_is_writer_name("registry.json.old.2022", "registry.json", "old"));
    assert_false(fsutil_is_writer_name("registry.json.tmp.orig", "registry.json", "tmp"));
    assert_false(fsutil_is_writer_name("registry.json.tmp.1.", "registry.json", "tmp"));
    assert_false(fsutil_is_writer_name("registry.json.tmp..1", "registry.json", "tmp"));
    assert_false(fsutil_is_writer_name("registry.json.tmp.1.2.3", "registry.json", "tmp"));
    assert_false(fsutil_is_writer_name("registry.json.tmp.1.2x", "registry.json", "tmp"));
    assert_false(fsutil_is_writer_name("registry.json.tmp.-1.2", "registry.json", "tmp"));
    assert_false(
        fsutil_is_writer_name("registry.json.tmp.1.123456789012345678901", "registry.json", "tmp"));
    assert_false(fsutil_is_writer_name("registry.jsonx.tmp.1.2", "registry.json", "tmp"));
    assert_false(fsutil_is_writer_name("m.js.old.2023-01-01", "m.js", "old"));
    assert_false(fsutil_is_writer_name(".upload.notes", "", "upload"));
    assert_false(fsutil_is_writer_name("registry.json", "registry.json", "tmp"));
}

/* The replaced file stays readable under the kept name until the reaper
 * removes it; nothing kept when there was nothing to replace. */
static void test_replace_keeps_the_old_file_for_the_reaper(void **state)
{
    (void)state;
    char *dir = tu_tempdir("core");
    char *path = tu_path("%s/registry.json", dir);
    struct err err = ERR_INIT;
    char *kept = (char *)"unset";
    assert_int_equal(fsutil_write_atomic_keep(path, "one", 3, 0644, &kept, &err), 0);
    assert_null(kept);
    assert_int_equal(fsutil_write_atomic_keep(path, "two", 3, 0644, &kept, &err), 0);
    assert_non_null(kept);
    assert_non_null(strstr(kept, "/registry.json.old."));
    assert_true(fsutil_is_writer_name(strrchr(kept, '/') + 1, "registry.json", "old"));
    char *data = NULL;
    size_t len = 0;
    assert_int_equal(fsutil_read_file(kept, 16, &data, &len, &err), 0);
    assert_string_equal(data, "one");
    free(data);
    assert_int_equal(fsutil_read_file(path, 16, &data, &len, &err), 0);
    assert_string_equal(data, "two");
    free(data);

    struct fsutil_reaper *reaper = fsutil_reaper_create();
    assert_non_null(reaper);
    char *kept_path = strdup(kept);
    fsutil_reaper_remove(reaper, kept);
    fsutil_reaper_flush(reaper);
    assert_false(fsutil_exists(kept_path));
    free(kept_path);
    /* what is still queued at destroy is removed, too */
    for (int i = 0; i < 20; i++) {
        assert_int_equal(fsutil_write_atomic_keep(path, "more", 4, 0644, &kept, &err), 0);
        assert_non_null(kept);
        fsutil_reaper_remove(reaper, kept);
    }
    fsutil_reaper_remove(reaper, tu_path("%s/never-there", dir)); /* ENOENT: quiet */
    fsutil_reaper_destroy(reaper);
    /* no reaper: removed in the caller */
    assert_int_equal(fsutil_write_atomic_keep(path, "last", 4, 0644, &kept, &err), 0);
    fsutil_reaper_remove(NULL, kept);
    char *out = NULL;
    assert_int_equal(tu_run(&out, "ls -A '%s'", dir), 0);
    assert_string_equal(out, "registry.json\n");
    free(out);
    free(path);
    tu_remove_tree(dir);
    free(dir);
}

/* ------------------------------------------------ fsutil_write_swap */

/* File systems without leases (some network ones) or without
 * RENAME_EXCHANGE: these stand-ins make the calls fail as such a file
 * system does, for the whole test executable, while the flags are set. */
static bool no_leases;
static bool no_exchange;

int fcntl(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    long arg = va_arg(ap, long);
    va_end(ap);
    if (no_leases && cmd == F_SETLEASE) {
        errno = EINVAL;
        return -1;
    }
    return (int)syscall(SYS_fcntl, fd, cmd, arg);
}

int renameat2(int from_dir, const char *from, int to_dir, const char *to, unsigned flags)
{
    if (no_exchange && (flags & RENAME_EXCHANGE)) {
        errno = EINVAL;
        return -1;
    }
    return (int)syscall(SYS_renameat2, from_dir, from, to_dir, to, flags);
}

static char *read_all(const char *path, size_t *len)
{
    char *data = NULL;
    struct err err = ERR_INIT;
    if (fsutil_read_file(path, 1u << 24, &data, len, &err) != 0)
        fail_msg("cannot read %s: %s", path, err.message);
    return data;
}

static void expect_bytes(const char *path, const char *want, size_t want_len)
{
    size_t len = 0;
    char *data = read_all(path, &len);
    assert_int_equal(len, want_len);
    assert_memory_equal(data, want, want_len);
    free(data);
}

/* Versions of different lengths, each differing from the one before in
 * scattered bytes: whatever pages the writer skips as unchanged, the file
 * must end up holding exactly the new bytes. */
static void test_swap_writes_exact_bytes(void **state)
{
    (void)state;
    char *dir = tu_tempdir("core");
    char *path = tu_path("%s/registry.json", dir);
    char *spare = tu_path("%s/.registry.json.spare", dir);
    struct err err = ERR_INIT;
    size_t sizes[] = {10, 70000, 70000, 69999, 200000, 4096, 4097, 8192, 0, 150000, 150000};
    char *previous = NULL;
    size_t previous_len = 0;
    unsigned seed = 7;
    for (size_t v = 0; v < sizeof sizes / sizeof *sizes; v++) {
        size_t len = sizes[v];
        char *data = malloc(len + 1);
        for (size_t i = 0; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            bool keep = previous && i < previous_len && (seed >> 16) % 97 != 0;
            data[i] = keep ? previous[i] : (char)('a' + (seed >> 20) % 26);
        }
        assert_int_equal(fsutil_write_swap(path, spare, data, len, 0644, NULL, NULL, &err), 0);
        expect_bytes(path, data, len);
        if (previous) /* the version before is the next write's spare */
            expect_bytes(spare, previous, previous_len);
        free(previous);
        previous = data;
        previous_len = len;
    }
    free(previous);
    /* nothing but the file and its spare */
    char *out = NULL;
    assert_int_equal(tu_run(&out, "ls -A '%s'", dir), 0);
    assert_string_equal(out, ".registry.json.spare\nregistry.json\n");
    free(out);
    free(path);
    free(spare);
    tu_remove_tree(dir);
    free(dir);
}

/* Three same-size versions; v2 and v3 each change one range of the one
 * before. */
static void three_versions(char *v[3], size_t len, struct fsutil_range changed[2])
{
    for (int k = 0; k < 3; k++) {
        v[k] = malloc(len);
        assert_non_null(v[k]);
    }
    memset(v[0], 'a', len);
    memcpy(v[1], v[0], len);
    memset(v[1] + 5000, 'b', 300);
    memcpy(v[2], v[1], len);
    memset(v[2] + 9000, 'c', 10);
    changed[0] = (struct fsutil_range){5000, 300};
    changed[1] = (struct fsutil_range){9000, 10};
}

/* A caller that knows what the spare holds (the version before last, with
 * the identity the previous call reported) has only its ranges written;
 * a spare that changed behind its back, even at the same size, is compared
 * in full, so the result is right whatever the stale hint says. */
static void test_swap_hint_writes_only_its_ranges(void **state)
{
    (void)state;
    char *dir = tu_tempdir("core");
    char *path = tu_path("%s/registry.json", dir);
    char *spare = tu_path("%s/.registry.json.spare", dir);
    struct err err = ERR_INIT;
    size_t len = 20000;
    char *v[3];
    struct fsutil_range changed[2];
    three_versions(v, len, changed);
    struct fsutil_identity left;
    assert_int_equal(
        fsutil_write_swap_hinted(path, spare, v[0], len, 0644, NULL, NULL, &left, NULL, &err), 0);
    assert_int_equal(left.ino, 0); /* no file at path before: no spare */
    assert_int_equal(
        fsutil_write_swap_hinted(path, spare, v[1], len, 0644, NULL, NULL, &left, NULL, &err), 0);
    assert_true(left.ino != 0);
    struct fsutil_identity now;
    assert_int_equal(fsutil_identity_of(spare, &now), 0);
    assert_true(fsutil_identity_equal(&left, &now));

    /* Told that only the second change matters (a lie: the spare is v0),
     * it writes only that: proof that the comparison was skipped. */
    struct fsutil_swap_hint hint = {&changed[1], 1, left};
    struct fsutil_identity after;
    assert_int_equal(
        fsutil_write_swap_hinted(path, spare, v[2], len, 0644, NULL, &hint, &after, NULL, &err), 0);
    char *lied = malloc(len);
    memcpy(lied, v[0], len);
    memset(lied + 9000, 'c', 10);
    expect_bytes(path, lied, len);

    /* The honest hint: both changes since the spare's version. */
    assert_int_equal(
        fsutil_write_swap_hinted(path, spare, v[1], len, 0644, NULL, NULL, &left, NULL, &err),
        0); /* path v1, spare the lie */
    assert_int_equal(
        fsutil_write_swap_hinted(path, spare, v[2], len, 0644, NULL, NULL, &left, NULL, &err),
        0); /* path v2, spare v1 */
    assert_int_equal(
        fsutil_write_swap_hinted(path, spare, v[1], len, 0644, NULL, NULL, &left, NULL, &err),
        0); /* path v1, spare v2 (identity left) */
    hint = (struct fsutil_swap_hint){changed, 2, left};
    assert_int_equal(
        fsutil_write_swap_hinted(path, spare, v[0], len, 0644, NULL, &hint, &after, NULL, &err), 0);
    expect_bytes(path, v[0], len);
    expect_bytes(spare, v[1], len);

    /* Someone writes the spare (same size) after the identity was taken:
     * the stale, incomplete hint is not trusted. */
    hint = (struct fsutil_swap_hint){&changed[1], 1, after};
    usleep(20000); /* past a coarse timestamp's tick, so mtime moves */
    int fd = open(spare, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "zz", 2, 100), 2);
    close(fd);
    assert_int_equal(
        fsutil_write_swap_hinted(path, spare, v[2], len, 0644, NULL, &hint, NULL, NULL, &err), 0);
    expect_bytes(path, v[2], len);
    for (int k = 0; k < 3; k++)
        free(v[k]);
    free(lied);
    free(path);
    free(spare);
    tu_remove_tree(dir);
    free(dir);
}

struct switch_probe {
    const char *path;
    const char *expect_still;
    int calls;
    bool fail;
};

/* Called between the durable spare and the switch: path must still hold
 * the old bytes. */
static int probe_before_switch(void *ctx, struct err *err)
{
    struct switch_probe *p = ctx;
    p->calls++;
    expect_bytes(p->path, p->expect_still, strlen(p->expect_still));
    if (p->fail) {
        err_set(err, ERR_NO_SPACE, "the other file did not fit");
        return -1;
    }
    return 0;
}

/* A reader of an older version (it opened registry.json before a change
 * made that file the spare) keeps reading it whole; so does anyone whose
 * hard link shares the spare's bytes. The caller's wait comes before the
 * switch, and its failure leaves path as it was. */
static void test_swap_never_writes_under_a_reader(void **state)
{
    (void)state;
    char *dir = tu_tempdir("core");
    char *path = tu_path("%s/registry.json", dir);
    char *spare = tu_path("%s/.registry.json.spare", dir);
    struct err err = ERR_INIT;
    assert_int_equal(fsutil_write_swap(path, spare, "first", 5, 0644, NULL, NULL, &err), 0);
    int reader = open(path, O_RDONLY);
    assert_true(reader >= 0);
    assert_int_equal(fsutil_write_swap(path, spare, "second", 6, 0644, NULL, NULL, &err), 0);
    /* the reader's file is now the spare; the next write must go elsewhere */
    assert_int_equal(fsutil_write_swap(path, spare, "third!!", 7, 0644, NULL, NULL, &err), 0);
    expect_bytes(path, "third!!", 7);
    char buf[16] = {0};
    assert_int_equal(pread(reader, buf, sizeof buf, 0), 5);
    assert_string_equal(buf, "first");
    close(reader);

    /* an operator's hard link to the spare keeps its bytes */
    char *backup = tu_path("%s/backup.json", dir);
    assert_int_equal(link(spare, backup), 0);
    assert_int_equal(fsutil_write_swap(path, spare, "fourth", 6, 0644, NULL, NULL, &err), 0);
    expect_bytes(backup, "second", 6);
    expect_bytes(path, "fourth", 6);
    /* a spare that is path itself is not written over */
    assert_int_equal(unlink(spare), 0);
    assert_int_equal(link(path, spare), 0);
    assert_int_equal(fsutil_write_swap(path, spare, "fifth", 5, 0644, NULL, NULL, &err), 0);
    expect_bytes(path, "fifth", 5);
    expect_bytes(spare, "fourth", 6);

    struct switch_probe probe = {path, "fifth", 0, false};
    struct fsutil_before_switch before = {probe_before_switch, &probe};
    assert_int_equal(fsutil_write_swap(path, spare, "sixth", 5, 0644, &before, NULL, &err), 0);
    assert_int_equal(probe.calls, 1);
    expect_bytes(path, "sixth", 5);
    probe = (struct switch_probe){path, "sixth", 0, true};
    assert_int_equal(fsutil_write_swap(path, spare, "seventh", 7, 0644, &before, NULL, &err), -1);
    assert_int_equal(err.kind, ERR_NO_SPACE);
    assert_string_equal(err.message, "the other file did not fit");
    err_clear(&err);
    assert_int_equal(probe.calls, 1);
    expect_bytes(path, "sixth", 5);
    free(backup);
    free(path);
    free(spare);
    tu_remove_tree(dir);
    free(dir);
}

/* Without leases nobody can be proven not to read the spare: the classic
 * path runs, and the replaced file is kept for the reaper. Without
 * RENAME_EXCHANGE the spare is renamed over the file, the replaced one kept
 * the same way. Either way path holds the new bytes. */
static void test_swap_without_leases_or_exchange(void **state)
{
    (void)state;
    char *dir = tu_tempdir("core");
    char *path = tu_path("%s/registry.json", dir);
    char *spare = tu_path("%s/.registry.json.spare", dir);
    struct err err = ERR_INIT;
    char *kept = NULL;
    assert_int_equal(fsutil_write_swap(path, spare, "one", 3, 0644, NULL, &kept, &err), 0);
    assert_int_equal(fsutil_write_swap(path, spare, "two", 3, 0644, NULL, &kept, &err), 0);
    assert_null(kept);

    no_leases = true;
    struct switch_probe probe = {path, "two", 0, false};
    struct fsutil_before_switch before = {probe_before_switch, &probe};
    assert_int_equal(fsutil_write_swap(path, spare, "three", 5, 0644, &before, &kept, &err), 0);
    no_leases = false;
    assert_int_equal(probe.calls, 1);
    expect_bytes(path, "three", 5);
    assert_non_null(kept);
    expect_bytes(kept, "two", 3);
    fsutil_reaper_remove(NULL, kept);

    no_exchange = true;
    probe = (struct switch_probe){path, "three", 0, false};
    assert_int_equal(fsutil_write_swap(path, spare, "four", 4, 0644, &before, &kept, &err), 0);
    assert_int_equal(probe.calls, 1);
    expect_bytes(path, "four", 4);
    assert_non_null(kept);
    expect_bytes(kept, "three", 5);
    fsutil_reaper_remove(NULL, kept);
    /* no caller to keep it for: removed in the call */
    assert_int_equal(fsutil_write_swap(path, spare, "five", 4, 0644, NULL, NULL, &err), 0);
    no_exchange = false;
    expect_bytes(path, "five", 4);
    char *out = NULL;
    assert_int_equal(tu_run(&out, "ls -A '%s'", dir), 0);
    assert_string_equal(out, "registry.json\n");
    free(out);
    /* and with both back, the spare comes back */
    assert_int_equal(fsutil_write_swap(path, spare, "six", 3, 0644, NULL, NULL, &err), 0);
    assert_int_equal(fsutil_write_swap(path, spare, "seven", 5, 0644, NULL, NULL, &err), 0);
    expect_bytes(path, "seven", 5);
    expect_bytes(spare, "six", 3);
    free(path);
    free(spare);
    tu_remove_tree(dir);
    free(dir);
}

static void test_json_parse_errors_say_where(void **state)
{
    (void)state;
    struct err err = ERR_INIT;
    json_t *v = jsonutil_parse("{\n  \"a\": 1,\n  \"b\": }", 20, &err);
    assert_null(v);
    assert_int_equal(err.kind, ERR_INVALID);
    assert_non_null(strstr(err.message, "line 3"));
    assert_int_equal(json_integer_value(json_object_get(err.details, "line")), 3);
    err_clear(&err);
    v = jsonutil_parse_object("[1]", 3, &err);
    assert_null(v);
    assert_int_equal(err.kind, ERR_INVALID);
    err_clear(&err);
    json_t *s = jsonutil_string_lossy("ok\xff\xfe!", 5);
    assert_non_null(s);
    assert_string_equal(json_string_value(s), "ok\xEF\xBF\xBD\xEF\xBF\xBD!");
    json_decref(s);
}

/* The lifted parse and the plain one must agree on every text: the same
 * object (json_equal), or both an error with the same message. */
static void assert_same_parse(const char *text, size_t len)
{
    struct err plain_err = ERR_INIT, lifted_err = ERR_INIT;
    json_t *plain = jsonutil_parse_object(text, len, &plain_err);
    json_t *lifted = jsonutil_parse_object_lifting(text, len, "source", &lifted_err);
    if (plain) {
        if (!lifted || !json_equal(plain, lifted))
            fail_msg("lifted parse differs for %.120s", text);
    } else {
        if (lifted)
            fail_msg("lifted parse accepted what jansson refuses: %.120s (%s)", text,
                     plain_err.message);
        assert_string_equal(plain_err.message, lifted_err.message);
    }
    json_decref(plain);
    json_decref(lifted);
    err_clear(&plain_err);
    err_clear(&lifted_err);
}

/* A body {"name": ..., "source": "<prefix><filler><suffix>", ...} with the
 * source long enough to be lifted; prefix and suffix are JSON string text. */
static char *upload_body(const char *before, const char *prefix, const char *suffix,
                         const char *after)
{
    size_t cap = strlen(before) + strlen(prefix) + strlen(suffix) + strlen(after) + 4096;
    char *text = malloc(cap);
    assert_non_null(text);
    int n = snprintf(text, cap, "%s\"source\": \"%s", before, prefix);
    for (int i = 0; i < 2000; i++)
        text[n++] = (char)('a' + i % 26);
    snprintf(text + n, cap - (size_t)n, "%s\"%s", suffix, after);
    return text;
}

static void test_lifted_parse_agrees_with_jansson(void **state)
{
    (void)state;
    static const char *const pieces[] = {
        "plain", "\\\"quoted\\\"", "tab\\tnew\\nline\\r\\b\\f\\/\\\\", "\\u00e9\\u20AC",
        "\\ud83d\\ude00", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "nul\\u0000inside",
        /* refused by jansson, so refused here with its message */
        "\\ud83d alone", "\\ude00 low", "\\x41", "\\u12G4", "raw\x01control", "bad\xff byte",
        "over\xc0\xaflong", "surrogate\xed\xa0\x80raw", "\\", "\\u12"};
    static const char *const shapes[][2] = {
        {"{", "}"},
        {"{\"name\": \"x\", ", ", \"tag\": \"v1\"}"},
        {" \n{ \"aliases\": [\"a\", {\"source\": \"decoy\"}], \"n\": 1.5 ,", " , \"b\": null } \n"},
        {"{\"x\": {\"y\": [1, 2, {\"z\": \"}\"}]}, ", "}"},
        {"{\"source\": \"dup\", ", "}"},
        {"{", ", \"source\": \"dup\"}"},
        {"{", "} trailing"},
        {"[", "]"},
        {"{\"a\" 1, ", "}"},
        {"{", ""},
    };
    for (size_t p = 0; p < sizeof pieces / sizeof *pieces; p++) {
        for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
            char *before = upload_body(shapes[k][0], pieces[p], "", shapes[k][1]);
            assert_same_parse(before, strlen(before));
            char *after = upload_body(shapes[k][0], "", pieces[p], shapes[k][1]);
            assert_same_parse(after, strlen(after));
            free(before);
            free(after);
        }
    }
    /* short sources, escaped keys and other values are jansson's alone */
    const char *small = "{\"source\": \"x\", \"sourc\\u0065x\": 1}";
    assert_same_parse(small, strlen(small));
    const char *number = "{\"source\": 12}";
    assert_same_parse(number, strlen(number));
}

/* Random sources of every byte value, written by jansson itself (so with
 * every escape it uses), read back through the lifted parse unchanged. */
static void test_lifted_parse_round_trips(void **state)
{
    (void)state;
    unsigned seed = 12345;
    for (int round = 0; round < 200; round++) {
        size_t len = 1024 + (size_t)(round * 37);
        char *raw = malloc(len);
        assert_non_null(raw);
        for (size_t i = 0; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            /* every ASCII byte but NUL (refused, as jansson is told to), controls too */
            raw[i] = (char)((seed >> 16) % 0x7F + 1);
        }
        json_t *doc = json_pack("{s:s, s:s%, s:[i]}", "name", "r", "source", raw, len, "n", round);
        assert_non_null(doc);
        char *text = json_dumps(doc, JSON_COMPACT | (round % 2 ? JSON_ENSURE_ASCII : 0));
        struct err err = ERR_INIT;
        json_t *back = jsonutil_parse_object_lifting(text, strlen(text), "source", &err);
        assert_non_null(back);
        assert_true(json_equal(doc, back));
        assert_int_equal(json_string_length(json_object_get(back, "source")), len);
        json_decref(back);
        json_decref(doc);
        free(text);
        free(raw);
    }
}

static void test_rfc3339(void **state)
{
    (void)state;
    char buf[40];
    clock_format_rfc3339(1764687000123LL, buf, sizeof buf);
    assert_string_equal(buf, "2025-12-02T14:50:00.123Z");
    int64_t ms = 0;
    assert_int_equal(clock_parse_rfc3339(buf, &ms), 0);
    assert_int_equal(ms, 1764687000123LL);
    assert_int_equal(clock_parse_rfc3339("2025-12-02T15:50:00+01:00", &ms), 0);
    assert_int_equal(ms, 1764687000000LL);
    assert_int_equal(clock_parse_rfc3339("yesterday", &ms), -1);
    assert_int_equal(clock_parse_rfc3339("2025-12-02T14:50:00", &ms), -1);
    /* every field is digits: no signs or spaces slip through */
    static const char *const bad[] = {
        "2024-01-01T-1:00:00Z",      "2024-01-01T00:-5:00Z",      "2024-01-01T00:00:-1Z",
        "2024-01- 1T00:00:00Z",      "+024-01-01T00:00:00Z",      "2024-01-01T00:00:00+-1:00",
        "2024-01-01T00:00:00+01:60", "2024-01-01T00:00:00+24:00", "2024-01-01T00:00",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (clock_parse_rfc3339(bad[i], &ms) != -1)
            fail_msg("%s was accepted", bad[i]);
    }
    assert_int_equal(clock_parse_rfc3339("2025-12-02t14:50:00.5z", &ms), 0);
    assert_int_equal(ms, 1764687000500LL);
}

static void test_err_status_mapping(void **state)
{
    (void)state;
    assert_int_equal(err_http_status(ERR_INVALID), 400);
    assert_int_equal(err_http_status(ERR_NOT_FOUND), 404);
    assert_int_equal(err_http_status(ERR_CONFLICT), 409);
    assert_int_equal(err_http_status(ERR_TOO_LARGE), 413);
    assert_int_equal(err_http_status(ERR_UNPROCESSABLE), 422);
    assert_int_equal(err_http_status(ERR_NO_SPACE), 507);
    struct err err = ERR_INIT;
    err_set_errno(&err, ERR_INTERNAL, 28 /* ENOSPC */, "cannot write %s", "x");
    assert_int_equal(err.kind, ERR_NO_SPACE);
    err_add_detail(&err, "k", json_integer(1));
    err_clear(&err);
    assert_null(err.details);
    /* a message cut at its limit keeps whole characters only */
    char euros[3 * ERR_MESSAGE_MAX + 1] = "";
    for (int i = 0; i < ERR_MESSAGE_MAX; i++)
        strcat(euros, "\xE2\x82\xAC");
    err_set(&err, ERR_INVALID, "x%s", euros);
    assert_int_equal(strlen(err.message), 1 + 3 * ((ERR_MESSAGE_MAX - 2) / 3));
    json_t *valid = json_string(err.message);
    assert_non_null(valid);
    json_decref(valid);
    err_clear(&err);
}

/* Series about something gone are dropped; the others keep their values
 * and their order. */
static void test_metrics_remove(void **state)
{
    (void)state;
    static const char *const names[] = {"strategy", "hash", NULL};
    struct metrics_family *f = metrics_family_new("t_total", "Test.", METRICS_COUNTER, names);
    assert_non_null(f);
    const char *a[] = {"s", "aaa"}, *b[] = {"s", "bbb"}, *c[] = {"t", "aaa"};
    metrics_add(f, a, 1);
    metrics_add(f, b, 2);
    metrics_add(f, c, 3);
    assert_int_equal(metrics_remove(f, "hash", "aaa"), 2);
    assert_int_equal(metrics_remove(f, "hash", "zzz"), 0);
    assert_int_equal(metrics_remove(f, "nolabel", "bbb"), 0);
    struct strbuf out = STRBUF_INIT;
    metrics_family_write(f, &out);
    const char *text = strbuf_cstr(&out);
    assert_null(strstr(text, "aaa"));
    assert_non_null(strstr(text, "t_total{strategy=\"s\",hash=\"bbb\"} 2"));
    /* A removed series starts again from zero. */
    metrics_add(f, a, 5);
    strbuf_release(&out);
    metrics_family_write(f, &out);
    assert_non_null(strstr(strbuf_cstr(&out), "hash=\"aaa\"} 5"));
    strbuf_release(&out);
    metrics_family_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_known_vectors),
        cmocka_unit_test(test_hash_file_matches_memory),
        cmocka_unit_test(test_hash_parse),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_writer_names),
        cmocka_unit_test(test_strbuf),
        cmocka_unit_test(test_strbuf_put_int64),
        cmocka_unit_test(test_atomic_write_and_read),
        cmocka_unit_test(test_replace_keeps_the_old_file_for_the_reaper),
        cmocka_unit_test(test_swap_writes_exact_bytes),
        cmocka_unit_test(test_swap_never_writes_under_a_reader),
        cmocka_unit_test(test_swap_hint_writes_only_its_ranges),
        cmocka_unit_test(test_swap_without_leases_or_exchange),
        cmocka_unit_test(test_json_parse_errors_say_where),
        cmocka_unit_test(test_lifted_parse_agrees_with_jansson),
        cmocka_unit_test(test_lifted_parse_round_trips),
        cmocka_unit_test(test_rfc3339),
        cmocka_unit_test(test_err_status_mapping),
        cmocka_unit_test(test_metrics_remove),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
