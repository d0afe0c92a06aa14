/*
 * cmd: the subcommands. Each takes the argument vector starting at its own
 * name (argv[0] == "serve") and returns the process exit status. Only these
 * functions (and main) decide to end the process; everything below them
 * returns errors.
 */
#ifndef STRATD_CMD_COMMANDS_H
#define STRATD_CMD_COMMANDS_H

#include "js/validate.h"
#include "store/store.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

int cmd_serve(int argc, char **argv);
int cmd_bootstrap(int argc, char **argv);

/* A certificate this close to its end is warned about at start and reload
 * and is a problem to `serve --check` (the shipped alert's 14 days too). */
#define CMD_CERTIFICATE_WARN_S (14LL * 86400)

struct config;
struct api_tls;
/* `stratd serve --check` (check.c), once the configuration has loaded and
 * its certificate (tls, NULL for plain HTTP) has passed the start's checks:
 * prints what a start would serve at url and every problem it would meet,
 * changing nothing on disk. Returns the exit status: 0 served as it is, 1
 * served with the problems listed, 2 refused (the reason on stderr). */
int cmd_serve_check(const struct config *cfg, const struct api_tls *tls, const char *url);

/* The metadata of revision `hex` of strategy `name` as the catalogue loads
 * it (registry_metadata_fn): the store's cache by hash (store may be NULL),
 * else the validator under `limits`, whose metadata.name must be `name`.
 * *validated tells the caller that the answer is new, for the cache. NULL
 * with *reason (malloc'd, the caller frees) when the revision is invalid. */
json_t *cmd_revision_metadata(struct store *store, const struct js_limits *limits, const char *name,
                              const char *hex, const char *source, size_t len, bool *validated,
                              char **reason);

#endif
