/*
 * names: the character rules for everything a user names. Names and tags
 * become path components, so every one passes through here before it reaches
 * the filesystem. Pure functions; thread-safe.
 */
#ifndef STRATD_CORE_NAMES_H
#define STRATD_CORE_NAMES_H

#include <stdbool.h>
#include <stddef.h>

#define NAMES_STRATEGY_MAX 64
#define NAMES_TAG_MAX 128
#define NAMES_ID_MAX 128

/* Strategy: [a-z0-9][a-z0-9_-]{0,63} */
bool names_valid_strategy(const char *name);
/* The names that would collide with /strategies/{modules,registry,refresh}. */
bool names_reserved_strategy(const char *name);
/* Tag: [A-Za-z0-9][A-Za-z0-9._-]{0,127} */
bool names_valid_tag(const char *tag);
/* Instance and provider ids: [A-Za-z0-9][A-Za-z0-9._-]{0,127} */
bool names_valid_id(const char *id);
/* Symbols such as BTC-USDT: [A-Za-z0-9][A-Za-z0-9._/-]{0,63} */
bool names_valid_symbol(const char *symbol);

#endif
