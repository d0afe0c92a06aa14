/*
 * One process per state directory: store_open() holds an flock on
 * <state>/stratd.lock until store_close(). A second open (in this process
 * or another) fails at once with ERR_CONFLICT naming the directory, the
 * lock and the holder's pid; closing, or the holder dying, frees it.
 */
#include "store_fixture.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void expect_busy(const char *state, long pid)
{
    struct err err = ERR_INIT;
    struct store *second = (struct store *)0x1;
    assert_int_equal(store_open(state, &second, &err), -1);
    assert_null(second);
    if (err.kind != ERR_CONFLICT)
        fail_msg("expected conflict, got %s: %s", err_kind_name(err.kind), err.message);
    char *lock = tu_path("%s/%s", state, STORE_LOCK_FILE);
    char *holder = tu_path("pid %ld", pid);
    if (!strstr(err.message, state) || !strstr(err.message, lock) || !strstr(err.message, holder))
        fail_msg("the message should name %s, %s and %s: %s", state, lock, holder, err.message);
    free(lock);
    free(holder);
    err_clear(&err);
}

static void test_second_open_in_process_is_refused(void **state)
{
    struct fixture *f = *state;
    expect_busy(f->state, (long)getpid());
    /* The first store is untouched. */
    struct err err = ERR_INIT;
    assert_ok(store_check_integrity(f->store, &err), &err);
    store_close(f->store);
    f->store = fixture_open(f->state);
}

static void test_holder_in_another_process(void **state)
{
    struct fixture *f = *state;
    store_close(f->store);
    f->store = NULL;
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct err err = ERR_INIT;
        struct store *s = NULL;
        if (store_open(f->state, &s, &err) != 0)
            _exit(2);
        if (write(ready[1], "k", 1) != 1)
            _exit(3);
        pause();
        _exit(0);
    }
    close(ready[1]);
    char c;
    assert_int_equal(read(ready[0], &c, 1), 1);
    close(ready[0]);
    expect_busy(f->state, (long)pid);
    /* SIGKILL releases it: nothing stale is left behind. */
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    f->store = fixture_open(f->state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_second_open_in_process_is_refused, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_holder_in_another_process, fixture_setup,
                                        fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
