/*
 * intern: small integer ids for the names that travel with every market
 * event (provider names, symbols), so events carry two 16-bit ids instead of
 * strings.
 *
 * Contract: ids are dense, start at 1 (0 means "none") and are never
 * reused or freed for the life of the process. intern_id() is thread-safe
 * and takes a lock only to add a new name; intern_name() is lock-free.
 * At most INTERN_MAX names; past that intern_id() returns 0.
 */
#ifndef STRATD_CORE_INTERN_H
#define STRATD_CORE_INTERN_H

#include <stdint.h>

#define INTERN_MAX 65535

uint16_t intern_id(const char *name);
/* The id of a name already interned, or 0, without adding it. */
uint16_t intern_lookup(const char *name);
/* The name of an id, or "" for 0 or an unknown id. */
const char *intern_name(uint16_t id);

#endif
