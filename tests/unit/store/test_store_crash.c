/*
 * Durability: nothing a call acknowledged (returned 0 for) is lost when the
 * process is killed with SIGKILL.
 *
 * A child process loops over counters 1, 2, 3, ...: for each it saves a new
 * instance "k<round>-<counter>", overwrites the round's "latest" instance,
 * appends an audit entry, and only then reports the counter to the parent
 * through a pipe. The parent kills the child at a random moment, reopens
 * the state directory and checks that every reported counter is there,
 * that "latest" is at least the last reported counter, that the audit log
 * holds whole lines only, and that the database passes integrity_check.
 */
#include "store_fixture.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 20
#define MAX_DELAY_US 150000

/* ---------------------------------------------------------- the child */

static int child_step(struct store *s, int round, uint32_t counter)
{
    struct err err = ERR_INIT;
    char id[32], latest[32];
    snprintf(id, sizeof id, "k%02d-%07u", round, counter);
    snprintf(latest, sizeof latest, "latest-%02d", round);
    json_t *spec = json_pack("{s:s, s:{}, s:{}, s:I}", "id", id, "strategy", "scope", "counter",
                             (json_int_t)counter);
    json_t *entry = json_pack("{s:s, s:i, s:I}", "action", "crash-test", "round", round, "counter",
                              (json_int_t)counter);
    int rc = spec && entry && store_instance_put(s, id, spec, true, NULL, &err) == 0 &&
                     store_instance_put(s, latest, spec, true, NULL, &err) == 0 &&
                     store_audit_append(s, entry, &err) == 0
                 ? 0
                 : -1;
    if (rc != 0)
        fprintf(stderr, "child: %s\n", err.message);
    err_clear(&err);
    json_decref(entry);
    json_decref(spec);
    return rc;
}

/* Never returns: the child ends by SIGKILL (or _exit on a failure, which
 * the parent reports). _exit skips cmocka's and the sanitizers' exit work. */
static void run_child(const char *state, int round, int ack_fd)
{
    struct err err = ERR_INIT;
    struct store *s = NULL;
    if (store_open(state, &s, &err) != 0) {
        fprintf(stderr, "child: %s\n", err.message);
        _exit(2);
    }
    for (uint32_t counter = 1; counter < 10000000; counter++) {
        if (child_step(s, round, counter) != 0)
            _exit(3);
        if (write(ack_fd, &counter, sizeof counter) != (ssize_t)sizeof counter)
            _exit(4);
    }
    _exit(5);
}

/* --------------------------------------------------------- the parent */

/* Reads acknowledgements until EOF; returns the highest counter. Counters
 * arrive in order, each a 4-byte write (atomic on a pipe). */
static uint32_t drain_acks(int fd, uint32_t last)
{
    uint32_t buf[256];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            fail_msg("read acks: %s", strerror(errno));
        assert_int_equal(n % (ssize_t)sizeof buf[0], 0);
        for (ssize_t i = 0; i < n / (ssize_t)sizeof buf[0]; i++) {
            assert_int_equal(buf[i], last + 1);
            last = buf[i];
        }
    }
    return last;
}

static uint32_t wait_first_ack(int fd)
{
    struct pollfd pfd = {fd, POLLIN, 0};
    if (poll(&pfd, 1, 60000) != 1)
        fail_msg("the child acknowledged nothing within 60 s");
    uint32_t first = 0;
    if (read(fd, &first, sizeof first) != (ssize_t)sizeof first)
        fail_msg("the child died before its first acknowledgement");
    assert_int_equal(first, 1);
    return first;
}

/* Kills the child at a random moment; returns the last acknowledged
 * counter. */
static uint32_t run_and_kill(const char *state, int round, unsigned *seed)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        run_child(state, round, fds[1]);
    }
    close(fds[1]);
    uint32_t last = wait_first_ack(fds[0]);
    usleep((useconds_t)(rand_r(seed) % MAX_DELAY_US));
    kill(pid, SIGKILL);
    last = drain_acks(fds[0], last);
    close(fds[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
        fail_msg("the child ended on its own (status %d) in round %d", status, round);
    return last;
}

static void check_instances(const json_t *list, int round, uint32_t last)
{
    char prefix[16], latest[32];
    snprintf(prefix, sizeof prefix, "k%02d-", round);
    snprintf(latest, sizeof latest, "latest-%02d", round);
    bool *seen = calloc(last + 2, sizeof *seen);
    assert_non_null(seen);
    json_int_t latest_counter = -1;
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item)
    {
        const char *id = json_string_value(json_object_get(item, "id"));
        json_int_t counter = json_integer_value(json_object_get(tu_jget(item, "spec"), "counter"));
        if (strcmp(id, latest) == 0)
            latest_counter = counter;
        else if (strncmp(id, prefix, strlen(prefix)) == 0 && counter <= (json_int_t)last)
            seen[counter] = true;
    }
    for (uint32_t c = 1; c <= last; c++) {
        if (!seen[c])
            fail_msg("round %d: acknowledged instance %u is missing (last ack %u)", round, c, last);
    }
    if (latest_counter < (json_int_t)last)
        fail_msg("round %d: latest is %lld, acknowledged %u", round, (long long)latest_counter,
                 last);
    free(seen);
}

/* Every line parses (the reopen has cut off any torn tail), and every
 * acknowledged counter of the round has its entry. */
static void check_audit(const char *state, int round, uint32_t last)
{
    char *path = tu_path("%s/%s", state, STORE_AUDIT_FILE);
    char *text = tu_read_file(path, NULL);
    assert_non_null(text);
    uint32_t found = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_t *entry = json_loads(line, 0, NULL);
        if (!json_is_object(entry))
            fail_msg("round %d: audit line does not parse: %s", round, line);
        if (json_integer_value(json_object_get(entry, "round")) == round &&
            json_integer_value(json_object_get(entry, "counter")) == (json_int_t)found + 1)
            found++;
        json_decref(entry);
    }
    if (found < last)
        fail_msg("round %d: audit entries stop at %u, acknowledged %u", round, found, last);
    free(text);
    free(path);
}

static void verify(const char *state, int round, uint32_t last)
{
    struct store *s = fixture_open(state);
    struct err err = ERR_INIT;
    assert_ok(store_check_integrity(s, &err), &err);
    json_t *list = NULL;
    assert_ok(store_instance_list(s, &list, &err), &err);
    check_instances(list, round, last);
    json_decref(list);
    store_close(s);
    check_audit(state, round, last);
}

static void test_nothing_acknowledged_is_lost_on_sigkill(void **state)
{
    (void)state;
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    print_message("seed %u\n", seed);
    char *root = tu_tempdir("store-crash");
    char *dir = tu_path("%s/state", root);
    uint32_t total = 0;
    for (int round = 0; round < ROUNDS; round++) {
        uint32_t last = run_and_kill(dir, round, &seed);
        verify(dir, round, last);
        total += last;
    }
    print_message("%u acknowledged writes over %d kills\n", total, ROUNDS);
    tu_remove_tree(root);
    free(dir);
    free(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nothing_acknowledged_is_lost_on_sigkill),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
