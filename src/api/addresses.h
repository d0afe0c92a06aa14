/*
 * addresses: how many control-plane connections each client address holds
 * open, for http.max_connections_per_address.
 *
 * Why: without it one client (a runaway connection pool, or anyone who can
 * reach the port) could hold every one of max_connections and keep the
 * other clients in the listen backlog. Clients behind one proxy share its
 * address, hence off by default.
 *
 * A fixed table of addresses, each as IPv6 (an IPv4 client as its mapped
 * ::ffff:a.b.c.d, so that it counts the same through either kind of
 * listener), sized at creation for every connection libmicrohttpd may hold
 * at once, so that an entry can always be found; one mutex, taken once per
 * connection opened or closed (never per request).
 *
 * Ownership and threads: address_counts_new() and address_counts_free() by
 * the api's owner, after every connection closed; enter and leave from any
 * thread.
 *
 * Errors: address_counts_new() returns NULL when out of memory;
 * address_counts_enter() returns 0 when the table is full, which its sizing
 * rules out.
 */
#ifndef STRATD_API_ADDRESSES_H
#define STRATD_API_ADDRESSES_H

#include <netinet/in.h>
#include <stddef.h>

struct address_counts;

/* `max_open`: the most connections that can be open at once. */
struct address_counts *address_counts_new(size_t max_open);
void address_counts_free(struct address_counts *counts);

/* Counts one more connection from `addr`; returns how many are open from
 * it now, this one included. */
unsigned address_counts_enter(struct address_counts *counts, const struct in6_addr *addr);
/* Counts one fewer; an address entered must leave exactly once. */
void address_counts_leave(struct address_counts *counts, const struct in6_addr *addr);

#endif
