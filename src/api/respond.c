/* Building responses and reading query parameters and bodies. */
#include "api/internal.h"

#include "core/jsonutil.h"
#include "core/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void api_respond_json(struct api_response *res, unsigned status, json_t *json)
{
    json_decref(res->json);
    res->status = status;
    res->json = json;
}

int api_respond_text(struct api_response *res, struct strbuf *sb, bool ok, const char *content_type,
                     const char *what, struct err *err)
{
    if (!ok || strbuf_failed(sb)) {
        strbuf_release(sb);
        err_set(err, ERR_INTERNAL, "out of memory %s", what);
        return -1;
    }
    res->status = 200;
    res->body = strbuf_detach(sb, &res->body_len);
    res->content_type = content_type;
    return 0;
}

void api_respond_error(struct api_response *res, const struct err *err)
{
    json_t *body = json_object();
    json_t *details = err->details ? json_deep_copy(err->details) : json_object();
    if (!json_is_object(details)) {
        json_t *wrapped = json_object();
        json_object_set_new(wrapped, "value", details);
        details = wrapped;
    }
    const char *message = err->message[0] ? err->message : err_kind_name(err->kind);
    /* Messages quote request bytes (names, tags, selectors from the path),
     * which need not be UTF-8, and err_set() may cut a character in two:
     * "error" must still be a string. */
    json_object_set_new(body, "error", jsonutil_string_lossy(message, strlen(message)));
    /* Validation failures also carry their diagnostics at the top level,
     * where upload clients look for them. */
    json_t *diagnostics = json_object_get(details, "diagnostics");
    if (diagnostics)
        json_object_set(body, "diagnostics", diagnostics);
    json_object_set_new(body, "details", details);
    free(res->body);
    res->body = NULL;
    api_respond_json(res, (unsigned)err_http_status(err->kind), body);
    if (err->kind == ERR_INTERNAL || err->kind == ERR_NO_SPACE)
        log_error("http", "%s", message);
}

void api_response_clear(struct api_response *res)
{
    json_decref(res->json);
    free(res->body);
    page_release(res->shared);
    memset(res, 0, sizeof *res);
}

/* Whether a q parameter list (after the coding's name) leaves q > 0. */
static bool quality_positive(const char *params, const char *end)
{
    for (const char *p = params; p < end; p++) {
        if (*p != ';')
            continue;
        p++;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (end - p >= 2 && (p[0] == 'q' || p[0] == 'Q') && p[1] == '=') {
            /* qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ) */
            for (p += 2; p < end && *p != ';'; p++)
                if (*p >= '1' && *p <= '9')
                    return true;
            return false;
        }
    }
    return true;
}

bool api_accepts_gzip(const char *accept_encoding)
{
    if (!accept_encoding)
        return false;
    int gzip = -1, star = -1; /* -1: not listed; else whether q > 0 */
    const char *p = accept_encoding;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *name = p;
        while (*p && *p != ',' && *p != ';' && *p != ' ' && *p != '\t')
            p++;
        size_t name_len = (size_t)(p - name);
        const char *end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        bool positive = quality_positive(p, end);
        if ((name_len == 4 && strncasecmp(name, "gzip", 4) == 0) ||
            (name_len == 6 && strncasecmp(name, "x-gzip", 6) == 0))
            gzip = positive;
        else if (name_len == 1 && *name == '*')
            star = positive;
        p = end;
    }
    return gzip >= 0 ? gzip == 1 : star == 1;
}

void api_respond_page(struct api *api, const struct api_request *req, struct api_response *res,
                      struct page *page)
{
    res->status = 200;
    res->content_type = "application/json";
    res->vary_encoding = true;
    res->shared = page;
    res->shared_body = page_body(page, &res->body_len);
    const char *accept =
        MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT_ENCODING);
    const char *packed = NULL;
    size_t packed_len = 0;
    if (api_accepts_gzip(accept) && page_gzip(api->pages, page, &packed, &packed_len) == 0) {
        res->shared_body = packed;
        res->body_len = packed_len;
        res->content_encoding = "gzip";
    }
}

const char *api_query(const struct api_request *req, const char *key)
{
    const char *found = NULL;
    for (size_t i = 0; i < req->nquery; i++) {
        if (strcmp(req->query[i].key, key) == 0)
            found = req->query[i].value;
    }
    return found;
}

int api_query_bool(const struct api_request *req, const char *key, bool *value, struct err *err)
{
    const char *v = api_query(req, key);
    if (!v)
        return 0;
    if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0 || strcmp(v, "") == 0) {
        *value = true;
        return 0;
    }
    if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0) {
        *value = false;
        return 0;
    }
    err_set(err, ERR_INVALID,
            "query parameter '%s' must be true or false (1 or 0; the key alone means true), got "
            "'%s'",
            key, v);
    err_add_detail(err, "parameter", json_string(key));
    return -1;
}

int api_query_int(const struct api_request *req, const char *key, long long min, long long *value,
                  struct err *err)
{
    const char *v = api_query(req, key);
    if (!v)
        return 0;
    char *end = NULL;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (!*v || *end || errno || n < min) {
        err_set(err, ERR_INVALID, "query parameter '%s' must be an integer >= %lld, got '%s'", key,
                min, v);
        err_add_detail(err, "parameter", json_string(key));
        return -1;
    }
    *value = n;
    return 0;
}

/* The values api_query_all has gathered so far, and where their copies go. */
struct query_values {
    const char *key;
    const char **values;
    size_t max, n;
    char *buf;
    size_t size, used;
};

static int query_values_add(struct query_values *v, const char *item, size_t len, struct err *err)
{
    if (v->n == v->max) {
        err_set(err, ERR_INVALID, "query parameter '%s' takes at most %zu values", v->key, v->max);
        err_add_detail(err, "parameter", json_string(v->key));
        err_add_detail(err, "limit", json_integer((json_int_t)v->max));
        return -1;
    }
    if (len >= v->size - v->used) {
        err_set(err, ERR_INVALID, "query parameter '%s': its values are too long", v->key);
        err_add_detail(err, "parameter", json_string(v->key));
        return -1;
    }
    char *copy = v->buf + v->used;
    memcpy(copy, item, len);
    copy[len] = '\0';
    v->used += len + 1;
    v->values[v->n++] = copy;
    return 0;
}

int api_query_all(const struct api_request *req, const char *key, const char **values, size_t max,
                  char *buf, size_t buf_size, struct err *err)
{
    struct query_values v = {key, values, max, 0, buf, buf_size, 0};
    for (size_t i = 0; i < req->nquery; i++) {
        if (strcmp(req->query[i].key, key) != 0)
            continue;
        for (const char *p = req->query[i].value; *p;) {
            size_t len = strcspn(p, ",");
            if (len > 0 && query_values_add(&v, p, len, err) != 0)
                return -1;
            p += len;
            if (*p == ',')
                p++;
        }
    }
    return (int)v.n;
}

static int body_object(const struct api_request *req, bool allow_empty, const char *lift,
                       json_t **out, struct err *err)
{
    *out = NULL;
    size_t len = req->body.len;
    const char *data = strbuf_cstr(&req->body);
    size_t i = 0;
    while (i < len && (data[i] == ' ' || data[i] == '\n' || data[i] == '\r' || data[i] == '\t'))
        i++;
    if (i == len) {
        if (allow_empty)
            return 0;
        err_set(err, ERR_INVALID, "a JSON request body is required");
        return -1;
    }
    *out = lift ? jsonutil_parse_object_lifting(data, len, lift, err)
                : jsonutil_parse_object(data, len, err);
    return *out ? 0 : -1;
}

int api_body_object(const struct api_request *req, bool allow_empty, json_t **out, struct err *err)
{
    return body_object(req, allow_empty, NULL, out, err);
}

int api_body_object_lifting(const struct api_request *req, const char *member, json_t **out,
                            struct err *err)
{
    return body_object(req, false, member, out, err);
}

int api_body_known_keys(const json_t *body, const char *const *known, size_t n, const char *what,
                        struct err *err)
{
    const char *key = jsonutil_unknown_key(body, known, n);
    if (!key)
        return 0;
    struct strbuf names = STRBUF_INIT;
    for (size_t k = 0; k < n; k++)
        strbuf_printf(&names, "%s\"%s\"", k == 0 ? "" : k + 1 == n ? " and " : ", ", known[k]);
    err_set(err, ERR_INVALID, "unknown field '%s': %s takes %s", key, what,
            strbuf_failed(&names) ? "other fields" : strbuf_cstr(&names));
    err_add_detail(err, "field", json_string(key));
    strbuf_release(&names);
    return -1;
}
