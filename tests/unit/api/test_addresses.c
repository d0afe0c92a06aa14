/*
 * The per-address connection counts: each address counts its own
 * connections; an address whose last connection left frees its slot, and
 * the addresses that had probed past it stay found (the emptied slot is
 * filled by shifting them back); a table filled to its sizing with
 * addresses that come and go keeps every count right.
 */
#include "api/addresses.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An address from its text, IPv4 ones mapped as the server maps them. */
static struct in6_addr address(const char *text)
{
    struct in6_addr a;
    char *mapped = tu_path("::ffff:%s", text);
    if (inet_pton(AF_INET6, strchr(text, ':') ? text : mapped, &a) != 1)
        fail_msg("'%s' is not an address", text);
    free(mapped);
    return a;
}

/* The a-th of a set of addresses spread oddly: odd ones in one IPv6 /64,
 * even ones IPv4 addresses 10.x.0.y. */
static struct in6_addr nth_address(unsigned a)
{
    char text[64];
    if (a % 2)
        snprintf(text, sizeof text, "2001:db8::%x:%x", a & 7, a);
    else
        snprintf(text, sizeof text, "10.%u.0.%u", a, a & 7);
    return address(text);
}

static void test_counts_per_address(void **state)
{
    (void)state;
    struct address_counts *counts = address_counts_new(8);
    assert_non_null(counts);
    struct in6_addr one = address("127.0.0.1"), two = address("127.0.0.2"), six = address("::1");
    assert_int_equal(address_counts_enter(counts, &one), 1);
    assert_int_equal(address_counts_enter(counts, &one), 2);
    assert_int_equal(address_counts_enter(counts, &two), 1);
    assert_int_equal(address_counts_enter(counts, &six), 1);
    address_counts_leave(counts, &one);
    assert_int_equal(address_counts_enter(counts, &one), 2);
    address_counts_leave(counts, &two);
    assert_int_equal(address_counts_enter(counts, &two), 1);
    assert_int_equal(address_counts_enter(counts, &six), 2);
    address_counts_free(counts);
}

/* A reference count per address beside the table, through a long run of
 * random enters and leaves with the table at its fullest. */
static void run_against_a_reference(size_t max_open, unsigned addresses)
{
    struct address_counts *counts = address_counts_new(max_open);
    assert_non_null(counts);
    unsigned *expected = calloc(addresses, sizeof *expected);
    assert_non_null(expected);
    size_t open = 0;
    srand(7);
    for (int step = 0; step < 200000; step++) {
        unsigned a = (unsigned)rand() % addresses;
        struct in6_addr addr = nth_address(a);
        bool enter = open < max_open && (expected[a] == 0 || rand() % 2 == 0);
        if (enter) {
            unsigned got = address_counts_enter(counts, &addr);
            expected[a]++;
            open++;
            if (got != expected[a])
                fail_msg("step %d: address %u entered: %u open, expected %u", step, a, got,
                         expected[a]);
        } else if (expected[a] > 0) {
            address_counts_leave(counts, &addr);
            expected[a]--;
            open--;
        }
    }
    /* every count read back: entering once more shows it, leaving undoes */
    for (unsigned a = 0; a < addresses; a++) {
        struct in6_addr addr = nth_address(a);
        assert_int_equal(address_counts_enter(counts, &addr), expected[a] + 1);
        address_counts_leave(counts, &addr);
    }
    free(expected);
    address_counts_free(counts);
}

/* few slots and more addresses than fit at once: long probe runs, emptied
 * and refilled all the time */
static void test_crowded_table(void **state)
{
    (void)state;
    run_against_a_reference(8, 12);
}

static void test_larger_table(void **state)
{
    (void)state;
    run_against_a_reference(64, 48);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_per_address),
        cmocka_unit_test(test_crowded_table),
        cmocka_unit_test(test_larger_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
