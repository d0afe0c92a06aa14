/*
 * The per-address connection counts: each address counts its own
 * connections; an address whose last connection left frees its slot, and
 * the addresses that had probed past it stay found (the emptied slot is
 * filled by shifting them back); a table filled to its sizing with
 * addresses that come and go keeps every count right.
 */
#include "api/addresses.h"
#include "testutil.h"

#include <stdlib.h>

static void test_counts_per_address(void **state)
{
    (void)state;
    struct address_counts *counts = address_counts_new(8);
    assert_non_null(counts);
    assert_int_equal(address_counts_enter(counts, 0x0100007f), 1);
    assert_int_equal(address_counts_enter(counts, 0x0100007f), 2);
    assert_int_equal(address_counts_enter(counts, 0x0200007f), 1);
    address_counts_leave(counts, 0x0100007f);
    assert_int_equal(address_counts_enter(counts, 0x0100007f), 2);
    address_counts_leave(counts, 0x0200007f);
    assert_int_equal(address_counts_enter(counts, 0x0200007f), 1);
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
        uint32_t addr = 0x0a000000u + a * 0x01000000u + (a & 7); /* 10.x.0.a, spread oddly */
        bool enter = open < max_open && (expected[a] == 0 || rand() % 2 == 0);
        if (enter) {
            unsigned got = address_counts_enter(counts, addr);
            expected[a]++;
            open++;
            if (got != expected[a])
                fail_msg("step %d: address %u entered: %u open, expected %u", step, a, got,
                         expected[a]);
        } else if (expected[a] > 0) {
            address_counts_leave(counts, addr);
            expected[a]--;
            open--;
        }
    }
    /* every count read back: entering once more shows it, leaving undoes */
    for (unsigned a = 0; a < addresses; a++) {
        uint32_t addr = 0x0a000000u + a * 0x01000000u + (a & 7);
        assert_int_equal(address_counts_enter(counts, addr), expected[a] + 1);
        address_counts_leave(counts, addr);
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
