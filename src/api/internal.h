/*
 * Internals shared by the api's files: the request and response a handler
 * sees, the route table, and helpers for query parameters and bodies.
 * Handlers run on libmicrohttpd's threads; a request and its response
 * belong to the one thread handling it.
 */
#ifndef STRATD_API_INTERNAL_H
#define STRATD_API_INTERNAL_H

#include "api/api.h"
#include "api/pages.h"
#include "core/metrics.h"
#include "core/strbuf.h"

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define API_MAX_SEGMENTS 12
#define API_MAX_PARAMS 4

struct api_query_arg {
    char *key;
    char *value;
};

struct api_request {
    struct MHD_Connection *conn;
    const char *method;
    char *raw_uri;                    /* as received, before decoding */
    char *segments[API_MAX_SEGMENTS]; /* decoded path segments */
    size_t nsegments;
    bool path_too_deep;
    struct api_query_arg *query;
    size_t nquery;
    struct strbuf body;
    int64_t over_limit_ns; /* when the body passed max_body_bytes */
    bool body_too_large;
    bool url_too_long;
    /* where the request target ended for C (at its first NUL); a NUL
     * inside it leaves more of the request line before the version */
    uintptr_t target_end;
    bool nul_in_target;
    bool too_many_params; /* more query parameters than API_MAX_QUERY_PARAMS */
    /* framing two parsers could read two ways (a request smuggled past a
     * proxy): why, or NULL */
    const char *bad_framing;
    bool headers_too_large;  /* request line + headers over the limit */
    bool over_capacity;      /* the connection is over max_connections */
    bool over_address_limit; /* its address is over max_connections_per_address */
    bool answered;           /* a response is queued */
    /* Offloaded (its handler runs on an offload thread): from the suspend
     * until the resume only that thread touches the request; `response`
     * is owned by the request and freed with it. */
    bool offloaded;
    bool holds_stop;                    /* counted in api.answers_unsent until completed */
    struct api_response *response;      /* what the offloaded handler answered */
    struct api *api;                    /* for the offload thread */
    const char *params[API_MAX_PARAMS]; /* {name} captures, in pattern order */
    const char *route;                  /* the matched pattern, for metrics */
    const struct api_route *matched;    /* its table entry; NULL: no route matched */
    int64_t started_ns;
    enum api_role role;
    long token;            /* index in opts.tokens; -1: none */
    bool bearer_presented; /* an Authorization: Bearer with a secret came */
    char actor[64];        /* token name, or "anonymous" */
};

struct api_response {
    unsigned status;
    json_t *json; /* body as JSON, or */
    char *body;   /* raw body (malloc'ed) with content_type */
    size_t body_len;
    /* or a page shared with other responses (one reference, given back
     * when the bytes are sent): body_len bytes at shared_body */
    struct page *shared;
    const char *shared_body;
    const char *content_type;
    const char *content_encoding; /* static; NULL: identity */
    bool vary_encoding;           /* the body depends on Accept-Encoding */
    char etag[HASH_SPELLED_LEN + 3];
    char allow[64];
    char retry_after[16];
    bool close_connection; /* Connection: close (refusals before the body) */
};

typedef int (*api_handler_fn)(struct api *api, struct api_request *req, struct api_response *res,
                              struct err *err);

struct api_route {
    const char *method;
    const char *pattern; /* "/strategies/modules/{selector}/usage" */
    api_handler_fn handler;
    /* A change whose time neither a module nor the fleet decides (one
     * instance's create, start or stop: durable commits and at most one
     * callback's CPU budget) runs on its polling thread; every other change
     * runs on a handler thread (offload.h), which costs two thread switches. */
    bool runs_inline;
};

/* A token bucket of the optional rate limit (one per token, plus one for
 * "anonymous"); guarded by api.rate_lock. */
struct api_rate_bucket {
    double tokens;
    int64_t refilled_ns;
};

/* Why a request was refused a 401: the `reason` of
 * stratd_http_token_refusals_total. */
enum api_refusal { API_REFUSAL_MISSING, API_REFUSAL_UNKNOWN, API_REFUSAL_KINDS };

struct api {
    struct api_options opts;
    struct MHD_Daemon *daemon;
    struct acceptor *acceptor; /* the listening socket (acceptor.h) */
    int port;
    atomic_uint connections;    /* open connections (accepted, not yet closed) */
    atomic_uint answers_unsent; /* requests handed off or answered, not yet completed */
    unsigned connection_cap;    /* libmicrohttpd's own limit: max + reserve */
    pthread_mutex_t rate_lock;
    struct api_rate_bucket *buckets; /* ntokens + 1 when rate limiting, else NULL */
    struct metrics_family *http_requests;
    struct metrics_family *tag_reassigned;
    struct metrics_family *tag_deleted;
    struct metrics_family *validation_failures;
    struct api_latency *latency; /* request durations (latency.c) */
    pthread_mutex_t audit_lock;
    atomic_ullong audit_failures;    /* entries that could not be written */
    _Atomic int64_t audit_failed_ms; /* when the last of them failed (wall clock) */
    /* 401s by enum api_refusal; any polling thread adds, /metrics reads */
    atomic_ullong tokens_refused[API_REFUSAL_KINDS];
    atomic_ullong refusals_unlogged;   /* of them, not yet told in a log line */
    _Atomic int64_t refusal_logged_ms; /* when the last line was (monotonic; 0: never) */
    struct views_cache *views;         /* module summaries as text, per catalogue generation */
    struct pages *pages;               /* whole listing pages (pages.h) */
    struct js_validator *validator;    /* uploads' sandboxes, built ahead (validate.h) */
    struct offload *offload;           /* runs the handlers that may block (offload.h) */
    struct deadline *deadline;         /* closes requests that arrive too slowly (deadline.h) */
    struct address_counts *addresses;  /* per client address; NULL: no limit (addresses.h) */
};

/* routes.c */
extern const struct api_route api_routes[];
extern const size_t api_route_count;
/* Finds the handler; on a miss fills err (404, or 405 with res->allow). */
const struct api_route *api_route_match(struct api_request *req, struct api_response *res,
                                        struct err *err);

/* latency.c: request durations by route and method, without a lock (any
 * thread may observe; the table lives from api_start to api_stop). */
struct api_latency;
struct api_latency *api_latency_new(void); /* NULL when out of memory */
void api_latency_free(struct api_latency *latency);
/* route NULL: a request no route matched; method_label as
 * api_method_label() returned it. */
void api_latency_observe(struct api_latency *latency, const struct api_route *route,
                         const char *method_label, int64_t ns);
void api_latency_write(struct api_latency *latency, struct strbuf *out);
/* The method as a metric label: one of a fixed set, "other" for the rest
 * (a client picks the method's bytes; labels must stay few). Static. */
const char *api_method_label(const char *method);

/* respond.c */
void api_respond_json(struct api_response *res, unsigned status, json_t *json);
/* A 200 whose body is the text built in *sb (taken over; sb is left empty).
 * `ok` false (the caller's own failure) or a failed sb: sb is released, err
 * says "out of memory <what>" and -1 is returned. content_type is static. */
int api_respond_text(struct api_response *res, struct strbuf *sb, bool ok, const char *content_type,
                     const char *what, struct err *err);
void api_respond_error(struct api_response *res, const struct err *err);
/* A 200 with a shared page (the reference is taken over), in gzip when the
 * request accepts it and compression succeeds. */
void api_respond_page(struct api *api, const struct api_request *req, struct api_response *res,
                      struct page *page);
/* Whether an Accept-Encoding value admits gzip (RFC 9110 12.5.3: listed
 * as gzip or x-gzip with q > 0, or covered by a "*" with q > 0). */
bool api_accepts_gzip(const char *accept_encoding);
void api_response_clear(struct api_response *res);
/* The value of a query parameter (last occurrence), or NULL. */
const char *api_query(const struct api_request *req, const char *key);
/* Booleans: true/false/1/0; absent leaves *value. ERR_INVALID otherwise. */
int api_query_bool(const struct api_request *req, const char *key, bool *value, struct err *err);
/* Integers >= min; absent leaves *value. ERR_INVALID otherwise. */
int api_query_int(const struct api_request *req, const char *key, long long min, long long *value,
                  struct err *err);
/* Every value of a repeated parameter: state=a&state=b, state=a,b or both
 * (empty items skipped). Each is copied, NUL-terminated, into buf and
 * pointed at from values[]. More than max values, or more text than buf
 * holds, is ERR_INVALID naming the parameter: a filter is never silently
 * cut short. Returns how many values, or -1. */
int api_query_all(const struct api_request *req, const char *key, const char **values, size_t max,
                  char *buf, size_t buf_size, struct err *err);
/* The body as a JSON object (ERR_INVALID saying where when it is not). An
 * empty body is an error unless allow_empty (then *out is NULL). */
int api_body_object(const struct api_request *req, bool allow_empty, json_t **out, struct err *err);
/* api_body_object (no empty body) for a body whose top-level `member` may
 * be a long string, such as an upload's source: see
 * jsonutil_parse_object_lifting. */
/* Refuses (ERR_INVALID, details.field) a body with a key outside
 * known[0..n): a control request whose misspelled key would silently mean
 * something else (a refresh of every instance, a tag moved without its
 * refresh) says so instead. `what` names the request in the message. */
int api_body_known_keys(const json_t *body, const char *const *known, size_t n, const char *what,
                        struct err *err);
int api_body_object_lifting(const struct api_request *req, const char *member, json_t **out,
                            struct err *err);
/* Appends an audit entry {actor, action, ...fields}; fields is stolen. */
void api_audit(struct api *api, const struct api_request *req, const char *action, json_t *fields);
/* Audits a refresh: the request (borrowed), how many results had each
 * reason, and the changes (every result but "alreadyPinned"), adjacent
 * results of one selector, strategy, revision move and reason merged into
 * one with all their instances. A no-change refresh of a large fleet writes
 * a few hundred bytes, not its whole answer. */
void api_audit_refresh(struct api *api, const struct api_request *req, const json_t *request,
                       const json_t *results);
/* Audits every tag of strategy `name` that moved, appeared or went between
 * the two snapshots a catalogue call reported around its change (struct
 * catalog_change; for changes whose tag moves are side effects: uploads,
 * deletes). */
void api_audit_tag_changes(struct api *api, const struct api_request *req,
                           const struct registry *before, const struct registry *after,
                           const char *name);

/* handlers_*.c */
int api_handle_healthz(struct api *, struct api_request *, struct api_response *, struct err *);
int api_handle_metrics(struct api *, struct api_request *, struct api_response *, struct err *);

int api_handle_strategies_list(struct api *, struct api_request *, struct api_response *,
                               struct err *);
int api_handle_strategy_get(struct api *, struct api_request *, struct api_response *,
                            struct err *);
int api_handle_modules_list(struct api *, struct api_request *, struct api_response *,
                            struct err *);
int api_handle_module_upload(struct api *, struct api_request *, struct api_response *,
                             struct err *);
int api_handle_module_get(struct api *, struct api_request *, struct api_response *, struct err *);
int api_handle_module_put(struct api *, struct api_request *, struct api_response *, struct err *);
int api_handle_module_delete(struct api *, struct api_request *, struct api_response *,
                             struct err *);
int api_handle_module_source(struct api *, struct api_request *, struct api_response *,
                             struct err *);
int api_handle_module_usage(struct api *, struct api_request *, struct api_response *,
                            struct err *);
int api_handle_tag_put(struct api *, struct api_request *, struct api_response *, struct err *);
int api_handle_tag_delete(struct api *, struct api_request *, struct api_response *, struct err *);
int api_handle_refresh(struct api *, struct api_request *, struct api_response *, struct err *);
int api_handle_registry_export(struct api *, struct api_request *, struct api_response *,
                               struct err *);

/* A provider's view (ProviderDetail) as the ProviderRequest that recreates
 * it: its effective settings and whether it runs now. New reference. */
json_t *api_provider_request_of(const json_t *view);
/* Creates (create) or updates a provider and records it in the store; when
 * the store refuses, the market is put back as it was and the store's
 * error returned. *detail (if non-NULL) receives its ProviderDetail. */
int api_provider_put(struct api *api, const char *name, const json_t *request, bool create,
                     json_t **detail, struct err *err);
int api_handle_providers_list(struct api *, struct api_request *, struct api_response *,
                              struct err *);
int api_handle_provider_create(struct api *, struct api_request *, struct api_response *,
                               struct err *);
int api_handle_provider_get(struct api *, struct api_request *, struct api_response *,
                            struct err *);
int api_handle_provider_update(struct api *, struct api_request *, struct api_response *,
                               struct err *);
int api_handle_provider_delete(struct api *, struct api_request *, struct api_response *,
                               struct err *);
int api_handle_provider_start(struct api *, struct api_request *, struct api_response *,
                              struct err *);
int api_handle_provider_stop(struct api *, struct api_request *, struct api_response *,
                             struct err *);
int api_handle_provider_balances(struct api *, struct api_request *, struct api_response *,
                                 struct err *);
int api_handle_adapters_list(struct api *, struct api_request *, struct api_response *,
                             struct err *);
int api_handle_adapter_get(struct api *, struct api_request *, struct api_response *, struct err *);

int api_handle_instances_list(struct api *, struct api_request *, struct api_response *,
                              struct err *);
int api_handle_instance_create(struct api *, struct api_request *, struct api_response *,
                               struct err *);
int api_handle_instance_get(struct api *, struct api_request *, struct api_response *,
                            struct err *);
int api_handle_instance_update(struct api *, struct api_request *, struct api_response *,
                               struct err *);
int api_handle_instance_delete(struct api *, struct api_request *, struct api_response *,
                               struct err *);
int api_handle_instance_start(struct api *, struct api_request *, struct api_response *,
                              struct err *);
int api_handle_instance_stop(struct api *, struct api_request *, struct api_response *,
                             struct err *);
int api_handle_instance_orders(struct api *, struct api_request *, struct api_response *,
                               struct err *);
int api_handle_instance_executions(struct api *, struct api_request *, struct api_response *,
                                   struct err *);

int api_handle_risk_get(struct api *, struct api_request *, struct api_response *, struct err *);
int api_handle_risk_put(struct api *, struct api_request *, struct api_response *, struct err *);

int api_handle_context_export(struct api *, struct api_request *, struct api_response *,
                              struct err *);
int api_handle_context_restore(struct api *, struct api_request *, struct api_response *,
                               struct err *);

#endif
