/*
 * store: the gateway's durable state in SQLite (WAL) under the state
 * directory, plus the audit log.
 *
 *   <state>/stratd.db     instances, usage, orders, executions, balances,
 *                         providers, module metadata cache, settings
 *   <state>/audit.log     one JSON object per line, append-only, fsynced
 *                         by group commit (see store_audit_append)
 *   <state>/stratd.lock   held (flock) by the process that has the store
 *                         open, and naming its pid
 *
 * The schema is versioned (PRAGMA user_version); store_open() applies every
 * migration above the file's version in one transaction each, so an old
 * state directory upgrades in place and a newer one is refused (ERR_INVALID,
 * "state was written by a newer stratd").
 *
 * Durability: synchronous=FULL, so a call that returned 0 survives SIGKILL
 * and power loss (the audit log: SIGKILL at once, power loss within 10 ms,
 * see store_audit_append). Records cross this interface as JSON shaped like
 * the API's records (OrderRecord, ExecutionRecord, BalanceRecord of the
 * contract), so handlers can pass them through; the market's writer, the
 * hot path, hands over rows it serialised itself (store_rows_put).
 *
 * Contract: every function is thread-safe (one connection behind a mutex;
 * callers keep transactions short). Returned json_t are new references.
 * A store does not survive fork(): a child process opens its own.
 * Errors: ERR_INVALID (bad arguments), ERR_NO_SPACE (SQLITE_FULL / ENOSPC),
 * ERR_INTERNAL (other SQLite or I/O failures, message includes SQLite's).
 * A read-only or unwritable state directory fails store_open() with a
 * message naming the directory. One process at a time: store_open() takes
 * an exclusive flock on <state>/stratd.lock without waiting and keeps it
 * until store_close(), so a second server (or any second process) on the
 * same state directory fails with ERR_CONFLICT ("state directory ... is in
 * use by another process (pid N)"). The lock goes with the process, so a
 * server killed with SIGKILL never leaves a stale lock behind.
 *
 * Lookups (store_metadata_get, store_setting_get) return 1 and set *out to
 * NULL when the key is absent, 0 when found, -1 on error (the jsonutil_get_*
 * convention). Deleting or forgetting something absent is not an error.
 * Revision hashes may be given as "sha256:<hex>" or bare hex in either case;
 * they are stored and listed as 64 lowercase hex digits.
 */
#ifndef STRATD_STORE_STORE_H
#define STRATD_STORE_STORE_H

#include "core/err.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STORE_DB_FILE "stratd.db"
#define STORE_AUDIT_FILE "audit.log"
#define STORE_LOCK_FILE "stratd.lock"

struct store;

/* Creates the directory if missing, opens or creates the database, migrates
 * it and opens the audit log. *out is the caller's, freed by store_close(). */
int store_open(const char *state_dir, struct store **out, struct err *err);
/* NULL is fine. Must not run concurrently with any other call on `store`. */
void store_close(struct store *store);

/* How long the disk takes to sync: every sync of the database (its log at
 * each durable commit, its file at each checkpoint) and of the audit log
 * (each group commit) is timed. store_metrics_write appends the histogram
 * stratd_store_sync_seconds{file="database"|"audit"} in the Prometheus text
 * format (NULL store: nothing); store_sync_count is how many were timed.
 * Any thread. */
enum store_sync_file { STORE_SYNC_DATABASE, STORE_SYNC_AUDIT };
struct strbuf;
void store_metrics_write(struct store *store, struct strbuf *out);
uint64_t store_sync_count(struct store *store, enum store_sync_file file);
/* ---- history retention ----
 * store_history_prune deletes, in one transaction, at most `max_rows` of
 * each: orders in a final state (filled, cancelled, rejected, expired)
 * last updated before `before_ms`, and executions traded before it (wall
 * clock, ms). *deleted_orders and *deleted_executions (may be NULL) say
 * how many went. An open order stays whatever its age; a position (the
 * risk limits' net of an instance's fills) does not move. Any thread.
 *
 * store_history_start prunes from a thread of the store's own: every tenth
 * of `retention_ms` (between 100 ms and a minute), slice after slice of
 * STORE_HISTORY_SLICE rows and more (up to 16 times that while a slice
 * takes under 5 ms), each its own short transaction so that the market's
 * writes and the control plane's commits go on between them, until nothing
 * is older than `retention_ms`. 0: it never runs. At most once
 * per store, by the thread that owns its opening and closing (not
 * concurrently with store_close(), which stops the pruner and joins it).
 * stratd_history_deleted_total{table} counts what it deleted and stratd_state_database_bytes is the
 * database's size on disk with its log (store_metrics_write). */
#define STORE_HISTORY_SLICE 500
int store_history_prune(struct store *store, int64_t before_ms, int max_rows, int *deleted_orders,
                        int *deleted_executions, struct err *err);
int store_history_start(struct store *store, int64_t retention_ms, struct err *err);

/* Runs PRAGMA integrity_check; 0 when "ok". */
int store_check_integrity(struct store *store, struct err *err);

/* ---- instances ----
 * spec is the instance's InstanceSpec JSON ({id, strategy: {identifier,
 * selector, tag, hash, config}, scope}); desired_running says whether it
 * should run after a restart; stop_reason is the last stop's reason code
 * (NULL when none). */
int store_instance_put(struct store *store, const char *id, const json_t *spec,
                       bool desired_running, const char *stop_reason, struct err *err);
int store_instance_delete(struct store *store, const char *id, struct err *err);
/* Array of {"id", "spec", "desiredRunning", "stopReason" (string|null),
 * "createdAt", "updatedAt"} (ms), ordered by id. createdAt is the first
 * put of the id, updatedAt the latest. */
int store_instance_list(struct store *store, json_t **out, struct err *err);

/* ---- usage per {strategy, hash} ----
 * firstSeen is set on the first touch, lastSeen on every touch (it never
 * moves backwards if now_ms does). */
/* When the disk last refused one of the store's writes (full, an I/O
 * error, read-only): wall-clock ms, 0 if it never did; *no_space (may be
 * NULL) says whether it was full. For readiness checks. Any thread. */
int64_t store_last_write_failure_ms(struct store *store, bool *no_space);

int store_usage_touch(struct store *store, const char *strategy, const char *hex, int64_t now_ms,
                      struct err *err);
int store_usage_forget(struct store *store, const char *strategy, const char *hex, struct err *err);
/* Array of {"strategy", "hash" (hex), "firstSeen", "lastSeen"} (ms). */
int store_usage_list(struct store *store, json_t **out, struct err *err);

/* ---- several instance records and usage touches in one transaction ----
 * All or nothing, one sync: what a refresh that moves many instances, or a
 * start and its usage touch, writes. Each element is checked as the single
 * calls check it; nothing is written if one is invalid. Strings and JSON
 * are borrowed for the call. */
struct store_instance_record {
    const char *id;
    const json_t *spec;
    bool desired_running;
    const char *stop_reason; /* NULL when none */
};
struct store_usage_record {
    const char *strategy;
    const char *hex;
    int64_t first_ms; /* firstSeen of a revision not seen before (0: now_ms) */
    int64_t now_ms;
};
int store_instances_save(struct store *store, const struct store_instance_record *instances,
                         size_t ninstances, const struct store_usage_record *touches,
                         size_t ntouches, struct err *err);

/* ---- module metadata cache by revision hash (immutable per hash) ----
 * A put replaces any earlier value, so a newer validator may refresh it.
 * Puts are committed without waiting for fdatasync: a power cut may lose
 * the last ones (the next durable commit syncs them), which costs only a
 * validation at the next start. */
int store_metadata_get(struct store *store, const char *hex, json_t **metadata, struct err *err);
int store_metadata_put(struct store *store, const char *hex, const json_t *metadata,
                       struct err *err);
/* Saves n entries (hexes[i] -> metadata[i]) in one transaction, so a cold
 * start that validates thousands of revisions pays one sync, not one each.
 * All or nothing: on error none is saved. */
int store_metadata_put_many(struct store *store, const char *const *hexes, json_t *const *metadata,
                            size_t n, struct err *err);

/* ---- orders and executions ----
 * An order is an OrderRecord; upsert by "id". Executions are
 * ExecutionRecords keyed by "executionId" within their "provider" (venues
 * number executions independently). Writes may be batched: pass several
 * records in one call as a JSON array; a batch is one transaction, all or
 * nothing, and an invalid element is named in the message ("orders[2]:
 * field 'state' ..."). Records are stored as given and read back unchanged.
 * Required: orders id, strategyInstance, provider, state (non-empty
 * strings), createdAt, updatedAt (integers), clientOrderId string or null
 * if present; executions executionId, orderId, strategyInstance, provider,
 * tradedAt, createdAt. */
int store_orders_put(struct store *store, const json_t *orders, struct err *err);
int store_executions_put(struct store *store, const json_t *executions, struct err *err);
struct store_order_query {
    const char *instance_id; /* required */
    const char *provider;    /* NULL: any */
    const char *const *states;
    size_t nstates;       /* 0: any state; orders only */
    const char *order_id; /* executions only; NULL: any */
    int limit;            /* <= 0: 100 */
    /* NULL: from the newest; else the `next` cursor a page before this one
     * gave, and the page holds the records after that page's last. */
    const char *before;
};
/* Arrays of records, newest first: orders by updatedAt, executions by
 * tradedAt, ties by insertion order (latest first). A malformed `before`
 * is ERR_INVALID. */
int store_orders_query(struct store *store, const struct store_order_query *q, json_t **out,
                       struct err *err);
/* The same, one page at a time: `next` receives the cursor that reads on
 * from the page's last record when the page is full (there may be more),
 * and "" when it is not (there is no more). An order that changes while it
 * is walked moves to the front, beyond the walk; finished orders and
 * executions do not move. */
#define STORE_CURSOR_MAX 48
int store_orders_page(struct store *store, const struct store_order_query *q, json_t **out,
                      char next[STORE_CURSOR_MAX], struct err *err);
int store_executions_page(struct store *store, const struct store_order_query *q, json_t **out,
                          char next[STORE_CURSOR_MAX], struct err *err);
/* Marks every order of `provider` still open in the records (acknowledged
 * or partially filled) as expired at now_ms, with `reason` in its
 * metadata: a new session of the provider starts with an empty book, so an
 * order a previous session left resting (a gateway killed before it could
 * expire them) will never fill. *count receives how many changed. */
int store_orders_expire_open(struct store *store, const char *provider, const char *reason,
                             int64_t now_ms, int *count, struct err *err);
int store_executions_query(struct store *store, const struct store_order_query *q, json_t **out,
                           struct err *err);

/* ---- balances (latest snapshot per provider and asset) ----
 * Required: provider, asset, total, available (strings), snapshotAt. A
 * record replaces the stored one only if its snapshotAt is not older, so
 * late reports never roll a balance back. createdAt/updatedAt default to
 * now; createdAt then stays that of the first snapshot of the pair. The
 * query returns records newest snapshot first (then by asset); asset NULL
 * means any; limit <= 0 means 100. */
int store_balances_put(struct store *store, const json_t *balances, struct err *err);

/* A market's history in one transaction, as rows its writer serialised
 * itself: each row's indexed columns and its record's JSON text (an
 * OrderRecord, ExecutionRecord or BalanceRecord of the contract, shaped as
 * the calls above store them; a balance's text carries its createdAt and
 * updatedAt). Orders, then executions (they refer to their orders), then
 * balances. One commit, so one sync, for what the three calls would commit
 * and sync apart; all or nothing, and an invalid row is named
 * ("executions[3]: field 'executionId' must be a non-empty string"). The
 * text is stored as given (the caller vouches that it is JSON; a query
 * that meets text that is not fails with ERR_INTERNAL). Strings and text
 * are copied: the caller keeps its rows. */
struct store_order_row {
    const char *id, *instance, *provider, *state,
        *client_order_id; /* client_order_id may be NULL */
    int64_t created_at, updated_at;
    const char *record;
    size_t record_len;
};
struct store_execution_row {
    const char *provider, *execution_id, *order_id, *instance;
    int64_t traded_at, created_at;
    const char *record;
    size_t record_len;
};
struct store_balance_row {
    const char *provider, *asset;
    int64_t snapshot_at, created_at, updated_at;
    const char *record;
    size_t record_len;
};
struct store_rows {
    const struct store_order_row *orders;
    size_t norders;
    const struct store_execution_row *executions;
    size_t nexecutions;
    const struct store_balance_row *balances;
    size_t nbalances;
    /* Called on the caller's thread after every STORE_ROWS_SLICE rows, inside
     * the transaction with the store's lock held: it may give up the CPU
     * and must not call the store. Skipped while another thread waits for
     * the store, so a pause never holds up its request. NULL: never called. */
    void (*between)(void *arg);
    void *between_arg;
};
#define STORE_ROWS_SLICE 32
int store_rows_put(struct store *store, const struct store_rows *rows, struct err *err);
int store_balances_query(struct store *store, const char *provider, const char *asset, int limit,
                         json_t **out, struct err *err);

/* ---- net positions (the risk limits' maxPositionSize) ----
 * Every execution written with a metadata.symbol moves its instance's net
 * position in that symbol on its provider by its quantity (negative when
 * metadata.side is "sell"); the database keeps the sums as executions are
 * written, rewritten or removed. *out receives [[instance, symbol, net],
 * ...] of `provider`, ordered by instance then symbol (a new reference). */
int store_positions_query(struct store *store, const char *provider, json_t **out, struct err *err);

/* ---- providers created at run time (ProviderRequest JSON by name) ---- */
int store_provider_put(struct store *store, const char *name, const json_t *spec, struct err *err);
int store_provider_delete(struct store *store, const char *name, struct err *err);
/* Array of {"name", "spec"} ordered by name. */
int store_provider_list(struct store *store, json_t **out, struct err *err);

/* ---- settings: small JSON values by key (risk limits, ...) ---- */
int store_setting_get(struct store *store, const char *key, json_t **value, struct err *err);
int store_setting_put(struct store *store, const char *key, const json_t *value, struct err *err);

/* ---- audit log ----
 * Appends `entry` with "ts" (RFC 3339) added, as one line. The line is in
 * the file when the call returns (it survives SIGKILL); a syncer thread
 * fsyncs everything appended within STORE__AUDIT_SYNC_MS (10 ms) in one
 * fsync, so a power loss can lose the entries of the last few
 * milliseconds. store_close() syncs what is pending.
 * "ts" comes first and replaces any "ts" in the entry. store_open() removes
 * a partial last line that a crash in the middle of an append left. */
int store_audit_append(struct store *store, const json_t *entry, struct err *err);
/* Opens the audit log's path again (creating it) and appends there from
 * now on, after syncing what went to the file open until now: for log
 * rotation, which moves the file away and asks for a reopen. When the path
 * cannot be opened the log stays on the file it had (nothing is lost) and
 * -1 says why; a failed sync of the file left is logged. Any thread. */
int store_audit_reopen(struct store *store, struct err *err);

#endif
