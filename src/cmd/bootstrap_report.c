/*
 * The plan for people (a table that fits 100 columns for ordinary names)
 * and for scripts (--json). Both are built from the same rows, one per file
 * or registry entry that something happens to, in the order of the steps.
 */
#include "cmd/bootstrap.h"

#include "core/jsonutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum column { COL_ACTION, COL_STRATEGY, COL_TAG, COL_HASH, COL_FROM, COL_TO, NCOLUMNS };

static const char *const headers[NCOLUMNS] = {"ACTION", "STRATEGY", "TAG", "HASH", "FROM", "TO"};

struct row {
    const char *action;
    const char *strategy; /* NULL: "-" */
    const char *tag;
    const char *hex;
    const char *from;
    bool to_canonical; /* TO is the revision's canonical path */
};

struct rows {
    struct row *items;
    size_t n, cap;
    bool failed;
};

static void push(struct rows *rows, struct row row)
{
    if (rows->failed)
        return;
    if (rows->n == rows->cap) {
        size_t cap = rows->cap ? rows->cap * 2 : 32;
        struct row *items = realloc(rows->items, cap * sizeof *items);
        if (!items) {
            rows->failed = true;
            return;
        }
        rows->items = items;
        rows->cap = cap;
    }
    rows->items[rows->n++] = row;
}

/* --------------------------------------------------------------- rows */

static void rows_for_add(struct rows *rows, const struct bootstrap_report_ctx *ctx,
                         const struct bootstrap_revision *rev)
{
    const struct bootstrap_file *src = &ctx->scan->files[rev->source];
    bool moves = bootstrap_file_is_legacy(src);
    push(rows, (struct row){moves ? "migrate" : "register", rev->name, rev->tag, rev->hex,
                            moves ? src->rel : "(in place)", true});
    for (size_t i = 0; i < rev->ncopies; i++) {
        const struct bootstrap_file *f = &ctx->scan->files[rev->copies[i]];
        if (f != src && bootstrap_file_is_legacy(f))
            push(rows, (struct row){"dedupe", rev->name, rev->tag, rev->hex, f->rel, false});
    }
}

static void rows_for_dedupe(struct rows *rows, const struct bootstrap_report_ctx *ctx,
                            const struct bootstrap_revision *rev)
{
    const char *tag = rev->registered ? rev->registered->tag : NULL;
    for (size_t i = 0; i < rev->ncopies; i++) {
        const struct bootstrap_file *f = &ctx->scan->files[rev->copies[i]];
        if (bootstrap_file_is_legacy(f))
            push(rows, (struct row){"dedupe", rev->name, tag, rev->hex, f->rel, false});
    }
}

static void collect_rows(struct rows *rows, const struct bootstrap_report_ctx *ctx)
{
    const struct bootstrap_plan *plan = ctx->plan;
    for (size_t i = 0; i < plan->nsteps; i++) {
        const struct bootstrap_step *step = &plan->steps[i];
        if (step->path) {
            const char *action = step->kind == BOOTSTRAP_STEP_RMDIR ? "rmdir" : "stale";
            push(rows, (struct row){action, NULL, NULL, NULL, step->path, false});
            continue;
        }
        const struct bootstrap_revision *rev = &plan->revisions[step->revision];
        if (step->kind == BOOTSTRAP_STEP_ADD)
            rows_for_add(rows, ctx, rev);
        else if (step->kind == BOOTSTRAP_STEP_DEDUPE)
            rows_for_dedupe(rows, ctx, rev);
        else if (step->kind == BOOTSTRAP_STEP_DROP)
            push(rows, (struct row){"drop", rev->name, rev->registered->tag, rev->hex,
                                    rev->registered->path, false});
    }
}

/* ------------------------------------------------------------ summary */

struct summary {
    size_t migrate, reg, dedupe, drop, rmdir, stale, latest, in_place, invalid, conflicts;
};

static void summarise(const struct bootstrap_report_ctx *ctx, const struct rows *rows,
                      struct summary *s)
{
    memset(s, 0, sizeof *s);
    for (size_t i = 0; i < rows->n; i++) {
        const char *action = rows->items[i].action;
        s->migrate += strcmp(action, "migrate") == 0;
        s->reg += strcmp(action, "register") == 0;
        s->dedupe += strcmp(action, "dedupe") == 0;
        s->drop += strcmp(action, "drop") == 0;
        s->rmdir += strcmp(action, "rmdir") == 0;
        s->stale += strcmp(action, "stale") == 0;
    }
    for (size_t i = 0; i < ctx->plan->nsteps; i++)
        s->latest += ctx->plan->steps[i].kind == BOOTSTRAP_STEP_LATEST;
    for (size_t i = 0; i < ctx->plan->nrevisions; i++) {
        const struct bootstrap_revision *rev = &ctx->plan->revisions[i];
        s->in_place += rev->fate == BOOTSTRAP_KEEP && rev->in_place;
    }
    for (size_t i = 0; i < ctx->scan->nfiles; i++) {
        s->invalid += ctx->scan->files[i].state == BOOTSTRAP_FILE_INVALID;
        s->conflicts += ctx->scan->files[i].state == BOOTSTRAP_FILE_CONFLICT;
    }
    s->conflicts += ctx->plan->nnotes;
}

bool bootstrap_report_has_problems(const struct bootstrap_scan *scan)
{
    for (size_t i = 0; i < scan->nfiles; i++) {
        if (scan->files[i].state != BOOTSTRAP_FILE_OK)
            return true;
    }
    return false;
}

size_t bootstrap_plan_pending(const struct bootstrap_plan *plan)
{
    return plan->nsteps;
}

/* -------------------------------------------------------------- text */

static const char *dash(const char *s)
{
    return s && *s ? s : "-";
}

#define REPORT_WIDTH 100
#define SHOWN_MAX 16384 /* a name escaped for the terminal, with its NUL */

/* `text` as it may reach a terminal: each control character (a newline in
 * a file name would break the table, an escape sequence would drive the
 * terminal) written as \xNN. `text` itself when it has none; otherwise
 * `buf`, cut at SHOWN_MAX. --json gives the bytes. */
static const char *shown(const char *text, char buf[SHOWN_MAX])
{
    const unsigned char *p = (const unsigned char *)text;
    while (*p && *p >= 0x20 && *p != 0x7f)
        p++;
    if (!*p)
        return text;
    size_t used = 0;
    for (p = (const unsigned char *)text; *p && used + 5 < SHOWN_MAX; p++) {
        if (*p < 0x20 || *p == 0x7f)
            used += (size_t)snprintf(buf + used, SHOWN_MAX - used, "\\x%02x", *p);
        else
            buf[used++] = (char)*p;
    }
    buf[used] = '\0';
    return buf;
}

/* Prints `text` from column `indent`, breaking at spaces so that lines stay
 * within REPORT_WIDTH; a word longer than a line is printed whole. */
static void print_wrapped(FILE *out, int indent, const char *text)
{
    size_t room = REPORT_WIDTH - (size_t)indent;
    while (*text) {
        size_t len = strlen(text);
        size_t cut = len;
        if (len > room) {
            cut = room;
            while (cut > 0 && text[cut] != ' ')
                cut--;
            if (cut == 0)
                cut = strcspn(text, " ");
        }
        fprintf(out, "%*s%.*s\n", indent, "", (int)cut, text);
        text += cut;
        while (*text == ' ')
            text++;
    }
}

/* "path: message" on one line when it fits, else the message below. */
static void print_problem(FILE *out, const char *raw_path, const char *raw_message)
{
    char path_buf[SHOWN_MAX], message_buf[SHOWN_MAX];
    const char *path = shown(raw_path, path_buf);
    const char *message = shown(raw_message, message_buf);
    if (2 + strlen(path) + 2 + strlen(message) <= REPORT_WIDTH) {
        fprintf(out, "  %s: %s\n", path, message);
        return;
    }
    fprintf(out, "  %s:\n", path);
    print_wrapped(out, 4, message);
}

/* The canonical path, with `<hash>` standing for the HASH column so a row
 * stays within 100 columns for ordinary names; --json gives the full path. */
static void short_target(const struct row *row, char *out, size_t size)
{
    if (!row->to_canonical)
        snprintf(out, size, "-");
    else
        snprintf(out, size, "%s/<hash>/%s.js", row->strategy, row->strategy);
}

/* The texts of a row's cells; `to`, `hex` and `from` hold those that are
 * built. */
static void cells(const struct row *row, char to[BOOTSTRAP_REL_MAX],
                  char hex[BOOTSTRAP_SHORT_HEX + 1], char from[SHOWN_MAX],
                  const char *out[NCOLUMNS])
{
    snprintf(hex, BOOTSTRAP_SHORT_HEX + 1, "%s", row->hex ? row->hex : "");
    short_target(row, to, BOOTSTRAP_REL_MAX);
    out[COL_ACTION] = row->action;
    out[COL_STRATEGY] = dash(row->strategy);
    out[COL_TAG] = dash(row->tag);
    out[COL_HASH] = dash(hex);
    out[COL_FROM] = shown(dash(row->from), from);
    out[COL_TO] = to;
}

static void print_row(FILE *out, const char *const text[NCOLUMNS], const size_t widths[NCOLUMNS])
{
    for (int c = 0; c < NCOLUMNS; c++) {
        if (c == NCOLUMNS - 1)
            fprintf(out, "%s\n", text[c]);
        else
            fprintf(out, "%-*s  ", (int)widths[c], text[c]);
    }
}

static void print_table(FILE *out, const struct rows *rows)
{
    size_t widths[NCOLUMNS];
    for (int c = 0; c < NCOLUMNS; c++)
        widths[c] = strlen(headers[c]);
    char from[SHOWN_MAX];
    char to[BOOTSTRAP_REL_MAX], hex[BOOTSTRAP_SHORT_HEX + 1];
    const char *text[NCOLUMNS];
    for (size_t i = 0; i < rows->n; i++) {
        cells(&rows->items[i], to, hex, from, text);
        for (int c = 0; c < NCOLUMNS; c++) {
            size_t len = strlen(text[c]);
            widths[c] = len > widths[c] ? len : widths[c];
        }
    }
    print_row(out, headers, widths);
    for (size_t i = 0; i < rows->n; i++) {
        cells(&rows->items[i], to, hex, from, text);
        print_row(out, text, widths);
    }
}

static void print_changes(FILE *out, const struct bootstrap_plan *plan)
{
    if (plan->nchanges == 0) {
        fprintf(out, "\nregistry changes: none\n");
        return;
    }
    size_t ws = strlen("STRATEGY"), wt = strlen("TAG");
    for (size_t i = 0; i < plan->nchanges; i++) {
        size_t ls = strlen(plan->changes[i].strategy), lt = strlen(plan->changes[i].tag);
        ws = ls > ws ? ls : ws;
        wt = lt > wt ? lt : wt;
    }
    fprintf(out, "\nregistry changes:\n  %-*s  %-*s  %-12s  %s\n", (int)ws, "STRATEGY", (int)wt,
            "TAG", "BEFORE", "AFTER");
    for (size_t i = 0; i < plan->nchanges; i++) {
        const struct bootstrap_tag_change *c = &plan->changes[i];
        fprintf(out, "  %-*s  %-*s  %-12.12s  %.12s\n", (int)ws, c->strategy, (int)wt, c->tag,
                dash(c->before), dash(c->after));
    }
}

static void print_conflicts(FILE *out, const struct bootstrap_report_ctx *ctx)
{
    bool header = false;
    for (size_t i = 0; i < ctx->scan->nfiles; i++) {
        const struct bootstrap_file *f = &ctx->scan->files[i];
        if (f->state != BOOTSTRAP_FILE_CONFLICT)
            continue;
        if (!header)
            fprintf(out, "\nconflicts (left in place):\n");
        header = true;
        print_problem(out, f->rel, f->problem);
    }
    for (size_t i = 0; i < ctx->plan->nnotes; i++) {
        if (!header)
            fprintf(out, "\nconflicts (left in place):\n");
        header = true;
        print_problem(out, ctx->plan->notes[i].path, ctx->plan->notes[i].message);
    }
}

static void print_diagnostic(FILE *out, const json_t *d)
{
    const char *stage = json_string_value(json_object_get(d, "stage"));
    const char *message = json_string_value(json_object_get(d, "message"));
    const char *hint = json_string_value(json_object_get(d, "hint"));
    long long line = json_integer_value(json_object_get(d, "line"));
    long long column = json_integer_value(json_object_get(d, "column"));
    char *text = NULL;
    if (asprintf(&text, "%s %lld:%lld: %s", stage ? stage : "?", line, column,
                 message ? message : "") < 0)
        return;
    print_wrapped(out, 4, text);
    free(text);
    if (hint && *hint && asprintf(&text, "hint: %s", hint) >= 0) {
        print_wrapped(out, 6, text);
        free(text);
    }
}

static void print_invalid(FILE *out, const struct bootstrap_scan *scan)
{
    bool header = false;
    for (size_t i = 0; i < scan->nfiles; i++) {
        const struct bootstrap_file *f = &scan->files[i];
        if (f->state != BOOTSTRAP_FILE_INVALID)
            continue;
        if (!header)
            fprintf(out, "\ninvalid modules (left in place):\n");
        header = true;
        /* The diagnostics say it all when there are some. */
        const json_t *diags = f->check ? f->check->diagnostics : NULL;
        if (json_array_size(diags) == 0) {
            print_problem(out, f->rel, f->problem);
        } else {
            char rel[SHOWN_MAX];
            fprintf(out, "  %s\n", shown(f->rel, rel));
        }
        for (size_t d = 0; d < json_array_size(diags); d++)
            print_diagnostic(out, json_array_get(diags, d));
    }
}

static void print_summary(FILE *out, const struct summary *s)
{
    fprintf(out,
            "\nplan: %zu to migrate, %zu to register, %zu duplicate%s to remove, %zu registry "
            "entr%s to drop\n",
            s->migrate, s->reg, s->dedupe, s->dedupe == 1 ? "" : "s", s->drop,
            s->drop == 1 ? "y" : "ies");
    fprintf(out,
            "      %zu empty folder%s, %zu stale temporary file%s; %zu revision%s already in "
            "place\n",
            s->rmdir, s->rmdir == 1 ? "" : "s", s->stale, s->stale == 1 ? "" : "s", s->in_place,
            s->in_place == 1 ? "" : "s");
    fprintf(out, "      %zu invalid, %zu conflict%s\n", s->invalid, s->conflicts,
            s->conflicts == 1 ? "" : "s");
}

void bootstrap_report_text(FILE *out, const struct bootstrap_report_ctx *ctx)
{
    struct rows rows = {0};
    collect_rows(&rows, ctx);
    struct summary s;
    summarise(ctx, &rows, &s);
    char root[SHOWN_MAX];
    fprintf(out, "stratd bootstrap: %s\n\n", shown(ctx->root, root));
    if (rows.n > 0)
        print_table(out, &rows);
    else
        fprintf(out, "no files to move\n");
    print_changes(out, ctx->plan);
    print_conflicts(out, ctx);
    print_invalid(out, ctx->scan);
    print_summary(out, &s);
    if (!ctx->write)
        fprintf(out, "filesystem left untouched (pass -write to apply)\n");
    free(rows.items);
}

void bootstrap_report_outcome(FILE *out, const struct bootstrap_outcome *o)
{
    if (o->added + o->removed + o->dropped + o->moved + o->rmdirs + o->stale + o->failed == 0) {
        fprintf(out, "nothing to do\n");
        return;
    }
    fprintf(out,
            "applied: %zu revision%s registered, %zu old cop%s removed, %zu empty folder%s "
            "removed\n",
            o->added, o->added == 1 ? "" : "s", o->removed, o->removed == 1 ? "y" : "ies",
            o->rmdirs, o->rmdirs == 1 ? "" : "s");
    if (o->dropped + o->moved)
        fprintf(out, "         %zu registry entr%s dropped, `latest` moved %zu time%s\n",
                o->dropped, o->dropped == 1 ? "y" : "ies", o->moved, o->moved == 1 ? "" : "s");
    if (o->failed)
        fprintf(out, "%zu step%s failed (see the messages above); run again to retry\n", o->failed,
                o->failed == 1 ? "" : "s");
}

/* -------------------------------------------------------------- JSON */

int bootstrap_json_set_path(json_t *obj, const char *key, const char *path)
{
    json_t *exact = json_string(path);
    if (exact)
        return json_object_set_new(obj, key, exact);
    size_t len = strlen(path);
    char *hex = malloc(len * 2 + 1);
    char *hex_key = malloc(strlen(key) + sizeof "Hex");
    int rc = hex && hex_key ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < len; i++)
        snprintf(hex + i * 2, 3, "%02x", (unsigned char)path[i]);
    if (rc == 0) {
        hex[len * 2] = '\0';
        snprintf(hex_key, strlen(key) + sizeof "Hex", "%sHex", key);
        rc = json_object_set_new(obj, key, jsonutil_string_lossy(path, len));
    }
    if (rc == 0)
        rc = json_object_set_new(obj, hex_key, json_string(hex));
    free(hex);
    free(hex_key);
    return rc;
}

static json_t *hash_or_null(const char *hex)
{
    return hex && *hex ? json_sprintf(HASH_PREFIX "%s", hex) : json_null();
}

static json_t *row_json(const struct row *row)
{
    char to[BOOTSTRAP_REL_MAX] = "";
    if (row->to_canonical)
        bootstrap_canonical_rel(row->strategy, row->hex, to);
    json_t *item = json_pack("{s:s, s:s?, s:s?, s:o}", "action", row->action, "strategy",
                             row->strategy, "tag", row->tag, "hash", hash_or_null(row->hex));
    int rc = item ? 0 : -1;
    if (rc == 0)
        rc = row->from ? bootstrap_json_set_path(item, "from", row->from)
                       : json_object_set_new(item, "from", json_null());
    if (rc == 0)
        rc = json_object_set_new(item, "to", row->to_canonical ? json_string(to) : json_null());
    if (rc != 0) {
        json_decref(item);
        return NULL;
    }
    return item;
}

/* Appends item to list; false (list untouched) when either is NULL, so an
 * entry that could not be built is never silently left out. */
static bool append(json_t *list, json_t *item)
{
    return list && item && json_array_append_new(list, item) == 0;
}

/* {path, message} of a conflict, invalid file or note. */
static json_t *problem_json(const char *path, const char *message)
{
    json_t *item = json_object();
    if (!item || bootstrap_json_set_path(item, "path", path) != 0 ||
        json_object_set_new(item, "message", jsonutil_string_lossy(message, strlen(message))) !=
            0) {
        json_decref(item);
        return NULL;
    }
    return item;
}

static json_t *changes_json(const struct bootstrap_plan *plan)
{
    json_t *list = json_array();
    for (size_t i = 0; list && i < plan->nchanges; i++) {
        const struct bootstrap_tag_change *c = &plan->changes[i];
        if (!append(list, json_pack("{s:s, s:s, s:o, s:o}", "strategy", c->strategy, "tag", c->tag,
                                    "before", hash_or_null(c->before), "after",
                                    hash_or_null(c->after)))) {
            json_decref(list);
            return NULL;
        }
    }
    return list;
}

static json_t *file_problem_json(const struct bootstrap_file *f)
{
    json_t *item = problem_json(f->rel, f->problem);
    if (item && f->state == BOOTSTRAP_FILE_INVALID &&
        json_object_set_new(item, "diagnostics",
                            f->check && f->check->diagnostics ? json_incref(f->check->diagnostics)
                                                              : json_array()) != 0) {
        json_decref(item);
        return NULL;
    }
    return item;
}

/* NULL if out of memory: a shorter list would disagree with the summary. */
static json_t *problems_json(const struct bootstrap_report_ctx *ctx,
                             enum bootstrap_file_state state)
{
    json_t *list = json_array();
    bool ok = list != NULL;
    for (size_t i = 0; ok && i < ctx->scan->nfiles; i++) {
        const struct bootstrap_file *f = &ctx->scan->files[i];
        if (f->state == state)
            ok = append(list, file_problem_json(f));
    }
    for (size_t i = 0; ok && state == BOOTSTRAP_FILE_CONFLICT && i < ctx->plan->nnotes; i++)
        ok = append(list, problem_json(ctx->plan->notes[i].path, ctx->plan->notes[i].message));
    if (!ok) {
        json_decref(list);
        return NULL;
    }
    return list;
}

static json_t *summary_json(const struct summary *s)
{
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "stale",
                     (json_int_t)s->stale, "migrate", (json_int_t)s->migrate, "register",
                     (json_int_t)s->reg, "dedupe", (json_int_t)s->dedupe, "drop",
                     (json_int_t)s->drop, "rmdir", (json_int_t)s->rmdir, "latest",
                     (json_int_t)s->latest, "inPlace", (json_int_t)s->in_place, "invalid",
                     (json_int_t)s->invalid, "conflicts", (json_int_t)s->conflicts);
}

static json_t *outcome_json(const struct bootstrap_outcome *o)
{
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:O}", "staleRemoved",
                     (json_int_t)o->stale, "added", (json_int_t)o->added, "removed",
                     (json_int_t)o->removed, "dropped", (json_int_t)o->dropped, "latestMoved",
                     (json_int_t)o->moved, "foldersRemoved", (json_int_t)o->rmdirs, "failed",
                     (json_int_t)o->failed, "errors", o->errors);
}

json_t *bootstrap_report_json(const struct bootstrap_report_ctx *ctx,
                              const struct bootstrap_outcome *outcome)
{
    struct rows rows = {0};
    collect_rows(&rows, ctx);
    struct summary s;
    summarise(ctx, &rows, &s);
    json_t *actions = json_array();
    bool failed = rows.failed || !actions;
    for (size_t i = 0; !failed && i < rows.n; i++)
        failed = !append(actions, row_json(&rows.items[i]));
    free(rows.items);
    json_t *doc = json_object();
    failed = failed || !doc || bootstrap_json_set_path(doc, "root", ctx->root) != 0;
    if (!failed)
        failed =
            json_object_update_new(
                doc, json_pack("{s:b, s:o, s:o, s:o, s:o, s:o, s:O}", "write", ctx->write,
                               "actions", actions, "registryChanges", changes_json(ctx->plan),
                               "conflicts", problems_json(ctx, BOOTSTRAP_FILE_CONFLICT), "invalid",
                               problems_json(ctx, BOOTSTRAP_FILE_INVALID), "summary",
                               summary_json(&s), "registry", ctx->plan->after)) != 0;
    else
        json_decref(actions);
    if (!failed && outcome)
        failed = json_object_set_new(doc, "outcome", outcome_json(outcome)) != 0;
    if (failed) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}
