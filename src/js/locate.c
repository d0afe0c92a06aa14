/*
 * locate: where the source spells out what a diagnostic is about, so that
 * it can carry a line and column. Validation reads the metadata as data
 * from the running module, and values keep no positions; the text does.
 * This finds the metadata the module exports (`module.exports = {
 * metadata: {...} }` or `module.exports.metadata = {...}`, directly or
 * through a variable declared with an object literal; in a module with no
 * such assignment, the one `metadata` key or variable whose value is an
 * object literal), then the path's keys and array elements inside it, with
 * a lexer that knows just enough JavaScript to step over comments,
 * strings, template literals and regular expressions. What it cannot
 * follow (metadata computed, spread, or a variable declared more than
 * once) leaves the position of the nearest enclosing value it found, or
 * none: a wrong position misleads more than a missing one. The same lexer
 * finds the `throw` of a thrown literal, which QuickJS gives no position.
 *
 * Tokens are kept as byte offsets; lines and columns are counted from the
 * start of the source only for the position reported (js__offset_position,
 * the line breaks JavaScript has).
 */
#include "js/internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* Nesting of template literals within template literals the lexer follows;
 * deeper ones end the scan. */
#define LOCATE_MAX_NESTING 32

enum tok_kind { TOK_END, TOK_NAME, TOK_STRING, TOK_TEMPLATE, TOK_PUNCT, TOK_OTHER };

struct tok {
    enum tok_kind kind;
    const char *start;
    size_t len; /* a string's or template's length includes its quotes */
};

/* A thrown literal the lexer looks for after each `throw`. */
struct throw_scan {
    const char *value; /* as the exception's message gives it */
    bool is_string;
    int matches;
    const char *at; /* the `throw` of the last match */
};

struct lexer {
    const char *p, *end;
    bool regex_allowed; /* a '/' here starts a regular expression */
    int nesting;
    bool failed;
    struct throw_scan *throws; /* shown every `throw`, when set */
};

/* A lexer at p, where an expression may start (the source's start, or
 * just past a '{'). */
static struct lexer lexer_at(const char *p, const char *end)
{
    return (struct lexer){.p = p, .end = end, .regex_allowed = true};
}

static bool name_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '$' || (unsigned char)c >= 0x80;
}

/* Whether the name being read goes on at the lexer's byte: U+2028 and
 * U+2029 are line breaks, not letters. */
static bool name_goes_on(const struct lexer *lx)
{
    return lx->p < lx->end && name_char(*lx->p) && js__line_break(lx->p, lx->end) == 0;
}

static void skip_space_and_comments(struct lexer *lx)
{
    while (lx->p < lx->end) {
        char c = *lx->p;
        size_t brk = js__line_break(lx->p, lx->end);
        if (brk > 0) {
            lx->p += brk;
        } else if (isspace((unsigned char)c)) {
            lx->p++;
        } else if (c == '/' && lx->p + 1 < lx->end && lx->p[1] == '/') {
            while (lx->p < lx->end && js__line_break(lx->p, lx->end) == 0)
                lx->p++;
        } else if (c == '/' && lx->p + 1 < lx->end && lx->p[1] == '*') {
            lx->p += 2;
            while (lx->p < lx->end && !(*lx->p == '*' && lx->p + 1 < lx->end && lx->p[1] == '/'))
                lx->p++;
            lx->p = lx->p < lx->end ? lx->p + 2 : lx->end;
        } else {
            return;
        }
    }
}

/* Past the closing `quote`, escapes stepped over. */
static void skip_quoted(struct lexer *lx, char quote)
{
    lx->p++;
    while (lx->p < lx->end && *lx->p != quote) {
        if (*lx->p == '\\' && lx->p + 1 < lx->end)
            lx->p++;
        lx->p++;
    }
    if (lx->p < lx->end)
        lx->p++;
}

static struct tok next_token(struct lexer *lx);

/* A template literal, each `${...}` lexed as code up to its closing brace. */
static void skip_template(struct lexer *lx)
{
    if (++lx->nesting > LOCATE_MAX_NESTING) {
        lx->failed = true;
        lx->p = lx->end;
        return;
    }
    lx->p++;
    while (lx->p < lx->end && *lx->p != '`') {
        if (*lx->p == '\\' && lx->p + 1 < lx->end) {
            lx->p += 2;
            continue;
        }
        if (*lx->p == '$' && lx->p + 1 < lx->end && lx->p[1] == '{') {
            lx->p += 2;
            lx->regex_allowed = true;
            for (int depth = 0; lx->p < lx->end;) {
                struct tok t = next_token(lx);
                if (t.kind == TOK_END)
                    break;
                if (t.kind == TOK_PUNCT && *t.start == '{')
                    depth++;
                if (t.kind == TOK_PUNCT && *t.start == '}' && depth-- == 0)
                    break;
            }
            continue;
        }
        lx->p++;
    }
    if (lx->p < lx->end)
        lx->p++;
    lx->nesting--;
}

static void skip_regex(struct lexer *lx)
{
    bool in_class = false;
    lx->p++;
    while (lx->p < lx->end && js__line_break(lx->p, lx->end) == 0 && (*lx->p != '/' || in_class)) {
        if (*lx->p == '\\' && lx->p + 1 < lx->end)
            lx->p++;
        else if (*lx->p == '[')
            in_class = true;
        else if (*lx->p == ']')
            in_class = false;
        lx->p++;
    }
    if (lx->p < lx->end && *lx->p == '/')
        lx->p++;
    while (name_goes_on(lx))
        lx->p++;
}

static bool is_word(const struct tok *t, const char *word)
{
    size_t n = strlen(word);
    return t->kind == TOK_NAME && t->len == n && memcmp(t->start, word, n) == 0;
}

/* After these words an expression starts, so a '/' begins a regex. */
static bool expression_keyword(const struct tok *t)
{
    static const char *const words[] = {"return", "typeof", "case", "in",    "of",
                                        "new",    "delete", "void", "throw", "yield"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        if (is_word(t, words[i]))
            return true;
    }
    return false;
}

static void note_throw(struct lexer *lx, const struct tok *t);

static struct tok next_token(struct lexer *lx)
{
    skip_space_and_comments(lx);
    struct tok t = {TOK_END, lx->p, 0};
    if (lx->p >= lx->end)
        return t;
    char c = *lx->p;
    if (name_char(c)) {
        while (name_goes_on(lx))
            lx->p++;
        t.kind = isdigit((unsigned char)c) ? TOK_OTHER : TOK_NAME;
        t.len = (size_t)(lx->p - t.start);
        lx->regex_allowed = t.kind == TOK_NAME && expression_keyword(&t);
        if (lx->throws && is_word(&t, "throw"))
            note_throw(lx, &t);
        return t;
    }
    if (c == '\'' || c == '"') {
        skip_quoted(lx, c);
        t.kind = TOK_STRING;
    } else if (c == '`') {
        skip_template(lx);
        t.kind = TOK_TEMPLATE; /* an element, never a key */
    } else if (c == '/' && lx->regex_allowed) {
        skip_regex(lx);
        t.kind = TOK_OTHER;
    } else {
        lx->p++;
        t.kind = TOK_PUNCT;
        lx->regex_allowed = c != ')' && c != ']' && c != '}';
        t.len = 1;
        return t;
    }
    t.len = (size_t)(lx->p - t.start);
    lx->regex_allowed = false;
    return t;
}

static bool is_punct(const struct tok *t, char c)
{
    return t->kind == TOK_PUNCT && *t->start == c;
}

static bool is_open(const struct tok *t)
{
    return is_punct(t, '{') || is_punct(t, '[') || is_punct(t, '(');
}

static bool is_close(const struct tok *t)
{
    return is_punct(t, '}') || is_punct(t, ']') || is_punct(t, ')');
}

static void position_of(const char *source, size_t len, const char *at, int *line, int *column)
{
    js__offset_position(source, len, (size_t)(at - source), line, column);
}

/* ------------------------------------------------------- literal throws */

/* Whether `value` is written at p as a literal: a string between quotes
 * (without escapes), a number as it prints. */
static bool literal_at(const char *p, const char *end, const char *value, bool is_string)
{
    size_t n = strlen(value);
    if (is_string) {
        char quote = p < end ? *p : '\0';
        if (quote != '\'' && quote != '"' && quote != '`')
            return false;
        p++;
        return (size_t)(end - p) > n && memcmp(p, value, n) == 0 && p[n] == quote;
    }
    return (size_t)(end - p) >= n && memcmp(p, value, n) == 0 &&
           ((size_t)(end - p) == n || !(name_char(p[n]) || p[n] == '.'));
}

/* lx stands just past a `throw` keyword, which is code: the lexer has
 * stepped over comments, strings and templates to reach it. */
static void note_throw(struct lexer *lx, const struct tok *t)
{
    const char *q = lx->p;
    while (q < lx->end && (*q == ' ' || *q == '\t'))
        q++;
    if (!literal_at(q, lx->end, lx->throws->value, lx->throws->is_string))
        return;
    lx->throws->matches++;
    lx->throws->at = t->start;
}

bool js__locate_literal_throw(const char *source, size_t len, const char *value, bool is_string,
                              int *line, int *column)
{
    struct throw_scan scan = {value, is_string, 0, NULL};
    struct lexer lx = lexer_at(source, source + len);
    lx.throws = &scan;
    while (scan.matches < 2 && next_token(&lx).kind != TOK_END)
        continue;
    if (lx.failed || scan.matches != 1)
        return false;
    position_of(source, len, scan.at, line, column);
    return true;
}

/* -------------------------------------------------------- private names */

bool js__locate_private_use(const char *source, size_t len, const char *name, int *line,
                            int *column)
{
    size_t n = strlen(name);
    struct lexer lx = lexer_at(source, source + len);
    struct tok prev = {TOK_END, source, 0}, t;
    int uses = 0, declarations = 0;
    const char *first_use = NULL;
    while ((t = next_token(&lx)).kind != TOK_END) {
        if (is_punct(&t, '#')) {
            const char *hash = t.start;
            t = next_token(&lx);
            if (t.kind == TOK_NAME && t.start == hash + 1 && t.len == n &&
                memcmp(t.start, name, n) == 0) {
                struct lexer ahead = lx;
                struct tok after = next_token(&ahead);
                bool use = is_punct(&prev, '.') || is_word(&after, "in");
                uses += use;
                declarations += !use;
                if (use && !first_use)
                    first_use = hash;
            }
        }
        prev = t;
    }
    if (lx.failed || !first_use || (declarations > 0 && uses > 1))
        return false;
    position_of(source, len, first_use, line, column);
    return true;
}

/* ------------------------------------------------------------ metadata */

/* A key token spelling `name`: bare, or quoted without escapes. */
static bool key_is(const struct tok *t, const char *name, size_t len)
{
    if (t->kind == TOK_NAME)
        return t->len == len && memcmp(t->start, name, len) == 0;
    return t->kind == TOK_STRING && t->len == len + 2 && memcmp(t->start + 1, name, len) == 0;
}

/* Inside an object literal (just past its '{'): the key `name` whose value
 * follows a ':'; *value is the value's first token. A shorthand member
 * (`{ name }`) is found too, with *value the key itself. */
static bool find_key(struct lexer *lx, const char *name, size_t len, struct tok *key,
                     struct tok *value)
{
    int depth = 0;
    bool at_key = true;
    for (struct tok t = next_token(lx); t.kind != TOK_END; t = next_token(lx)) {
        if (depth == 0 && is_punct(&t, '}'))
            return false;
        if (depth == 0 && at_key && key_is(&t, name, len)) {
            struct tok next = next_token(lx);
            if (is_punct(&next, ':')) {
                *key = t;
                *value = next_token(lx);
                return true;
            }
            if (t.kind == TOK_NAME && (is_punct(&next, ',') || is_punct(&next, '}'))) {
                *key = *value = t;
                return true;
            }
            t = next;
        }
        at_key = depth == 0 && is_punct(&t, ',');
        if (is_open(&t))
            depth++;
        else if (is_close(&t) && --depth < 0)
            return false;
    }
    return false;
}

/* Inside an array literal (just past its '['): the first token of element
 * `index`. */
static bool find_element(struct lexer *lx, size_t index, struct tok *element)
{
    int depth = 0;
    size_t at = 0;
    bool at_start = true;
    for (struct tok t = next_token(lx); t.kind != TOK_END; t = next_token(lx)) {
        if (depth == 0 && is_punct(&t, ']'))
            return false;
        if (depth == 0 && is_punct(&t, ',')) {
            at++;
            at_start = true;
            continue;
        }
        if (depth == 0 && at_start && at == index) {
            *element = t;
            return true;
        }
        at_start = false;
        if (is_open(&t))
            depth++;
        else if (is_close(&t) && --depth < 0)
            return false;
    }
    return false;
}

/* The one `metadata` (key or variable) given an object literal: *name is
 * the word, *open its '{'. For modules that export in a way not followed
 * (Object.assign(module.exports, ...)); with two or more, which one is
 * exported is anyone's guess. */
static bool only_metadata(struct lexer *lx, struct tok *name, struct tok *open)
{
    int found = 0;
    for (struct tok t = next_token(lx); t.kind != TOK_END && found < 2; t = next_token(lx)) {
        if (!key_is(&t, "metadata", 8))
            continue;
        struct tok sep = next_token(lx);
        if (!is_punct(&sep, ':') && !is_punct(&sep, '='))
            continue;
        struct tok value = next_token(lx);
        if (is_punct(&value, '{')) {
            *name = t;
            *open = value;
            found++;
        }
    }
    return found == 1;
}

/* Whether a line break lies in [from, to). */
static bool break_between(const char *from, const char *to)
{
    for (const char *p = from; p < to; p++) {
        if (js__line_break(p, to) > 0)
            return true;
    }
    return false;
}

/* lx stands just past the name `value`: whether that name is the whole
 * value (`metadata: md,`), not the start of an expression (`md.x`,
 * `make()`). A name on the next line starts a statement of its own. */
static bool name_is_value(const struct lexer *lx, const struct tok *value)
{
    struct lexer peek = *lx;
    struct tok next = next_token(&peek);
    return next.kind == TOK_END || is_punct(&next, ',') || is_punct(&next, ';') ||
           is_punct(&next, '}') ||
           (next.kind == TOK_NAME && break_between(value->start + value->len, next.start));
}

/* The object literal `var|let|const <word> = {` declares, when that is the
 * one declaration of the name in the source: *name the declared name,
 * *open the '{'. */
static bool declared_object(const char *source, size_t len, const struct tok *word,
                            struct tok *name, struct tok *open)
{
    struct lexer lx = lexer_at(source, source + len);
    struct tok prev = {TOK_END, source, 0};
    int declarations = 0;
    bool literal = false;
    for (struct tok t = next_token(&lx); t.kind != TOK_END; prev = t, t = next_token(&lx)) {
        if (t.kind != TOK_NAME || t.len != word->len || memcmp(t.start, word->start, t.len) != 0 ||
            !(is_word(&prev, "var") || is_word(&prev, "let") || is_word(&prev, "const")))
            continue;
        struct lexer peek = lx;
        struct tok eq = next_token(&peek), value = next_token(&peek);
        declarations++;
        literal = is_punct(&eq, '=') && is_punct(&value, '{');
        *name = t;
        *open = value;
    }
    return !lx.failed && declarations == 1 && literal;
}

/* An assignment that makes the exports: `module.exports = V` (EXPORT_ALL)
 * or `module.exports.metadata = V` / `exports.metadata = V`
 * (EXPORT_METADATA). */
enum export_kind { EXPORT_NONE, EXPORT_ALL, EXPORT_METADATA };
struct exported {
    enum export_kind kind;
    struct tok name;  /* EXPORT_METADATA: its `metadata` */
    struct tok value; /* the value's first token */
    bool whole;       /* that token is the value: an object literal or a name */
};

/* From `first` (`module` or `exports`, not itself a property), the
 * assignment, if that is one; lx stays where it is. */
static bool match_export(const struct lexer *lx, const struct tok *first, struct exported *out)
{
    struct lexer peek = *lx;
    struct tok t = next_token(&peek), name = *first;
    enum export_kind kind = EXPORT_ALL;
    if (is_word(first, "module")) {
        struct tok exports = next_token(&peek);
        if (!is_punct(&t, '.') || !is_word(&exports, "exports"))
            return false;
        t = next_token(&peek);
    }
    if (is_punct(&t, '.')) {
        name = next_token(&peek);
        if (!is_word(&name, "metadata"))
            return false;
        kind = EXPORT_METADATA;
        t = next_token(&peek);
    } else if (is_word(first, "exports")) {
        return false; /* `exports = ...` exports nothing */
    }
    struct tok value = next_token(&peek);
    /* '=' then '=' or '>' is a comparison or an arrow */
    if (!is_punct(&t, '=') || is_punct(&value, '=') || is_punct(&value, '>'))
        return false;
    out->kind = kind;
    out->name = name;
    out->value = value;
    out->whole = is_punct(&value, '{') || (value.kind == TOK_NAME && name_is_value(&peek, &value));
    return true;
}

/* Just past the bracket that closes the one opened at `open`. */
static const char *closing_end(const char *open, const char *end)
{
    struct lexer lx = lexer_at(open + 1, end);
    int depth = 0;
    for (struct tok t = next_token(&lx); t.kind != TOK_END; t = next_token(&lx)) {
        if (is_open(&t))
            depth++;
        else if (is_close(&t) && depth-- == 0)
            return lx.p;
    }
    return end;
}

/* The last assignment that makes the exports, which wins when the top
 * level runs straight through. One written inside the object literal of
 * another (in a method, say) runs before that one is assigned, or later
 * if ever: the outer one is taken. False when the lexer gave up. */
static bool last_export(const char *source, size_t len, struct exported *last)
{
    struct lexer lx = lexer_at(source, source + len);
    struct tok prev = {TOK_END, source, 0};
    const char *inside_until = source;
    last->kind = EXPORT_NONE;
    for (struct tok t = next_token(&lx); t.kind != TOK_END; prev = t, t = next_token(&lx)) {
        if (t.start < inside_until || is_punct(&prev, '.') ||
            !(is_word(&t, "module") || is_word(&t, "exports")))
            continue;
        if (match_export(&lx, &t, last) && is_punct(&last->value, '{'))
            inside_until = closing_end(last->value.start, source + len);
    }
    return !lx.failed;
}

/* The object literal a value stands for: itself, or the one its name was
 * declared with. */
static bool object_of(const char *source, size_t len, const struct tok *value, struct tok *name,
                      struct tok *open)
{
    if (is_punct(value, '{')) {
        *open = *value;
        return true;
    }
    return value->kind == TOK_NAME && declared_object(source, len, value, name, open);
}

/* The `metadata` member of the exports' object literal (opened at
 * `exports`). */
static bool member_metadata(const char *source, size_t len, const struct tok *exports,
                            struct js__metadata_site *site)
{
    struct lexer lx = lexer_at(exports->start + 1, source + len);
    struct tok key, value;
    if (!find_key(&lx, "metadata", 8, &key, &value) || lx.failed)
        return false;
    bool shorthand = value.start == key.start;
    if (value.kind == TOK_NAME && !shorthand && !name_is_value(&lx, &value))
        return false;
    struct tok name = key, open;
    if (!object_of(source, len, &value, &name, &open))
        return false;
    site->name = name.start;
    site->open = open.start;
    return true;
}

enum found { FOUND, UNSURE, NO_EXPORT };

/* The metadata the module's exports assignment names. */
static enum found exported_metadata(const char *source, size_t len, struct js__metadata_site *site)
{
    struct exported ex;
    if (!last_export(source, len, &ex))
        return UNSURE;
    if (ex.kind == EXPORT_NONE)
        return NO_EXPORT;
    struct tok name = ex.name, open;
    if (!ex.whole || !object_of(source, len, &ex.value, &name, &open))
        return UNSURE;
    if (ex.kind == EXPORT_ALL)
        return member_metadata(source, len, &open, site) ? FOUND : UNSURE;
    site->name = name.start;
    site->open = open.start;
    return FOUND;
}

bool js__find_metadata(const char *source, size_t len, struct js__metadata_site *site)
{
    *site = (struct js__metadata_site){source, len, NULL, NULL};
    if (!source)
        return false;
    enum found found = exported_metadata(source, len, site);
    if (found != NO_EXPORT)
        return found == FOUND;
    struct lexer lx = lexer_at(source, source + len);
    struct tok name, open;
    if (!only_metadata(&lx, &name, &open) || lx.failed)
        return false;
    site->name = name.start;
    site->open = open.start;
    return true;
}

/* The path's next step: ".name" (*name, *len set) or "[index]"; false at
 * its end. A " (label)" after an index, as in "config[2] (size).type", is
 * skipped when the path goes on after it. */
static bool path_step(const char **path, const char **name, size_t *len, size_t *index)
{
    const char *p = *path;
    if (p[0] == ' ' && p[1] == '(') {
        const char *close = strchr(p, ')');
        if (!close || (close[1] != '.' && close[1] != '['))
            return false;
        p = close + 1;
    }
    if (*p == '.' && name_char(p[1])) {
        *name = ++p;
        while (name_char(*p))
            p++;
        *len = (size_t)(p - *name);
    } else if (*p == '[' && isdigit((unsigned char)p[1])) {
        *name = NULL;
        char *after = NULL;
        unsigned long long n = strtoull(p + 1, &after, 10);
        if (*after != ']' || n > SIZE_MAX)
            return false;
        *index = (size_t)n;
        p = after + 1;
    } else {
        return false;
    }
    *path = p;
    return true;
}

bool js__locate_metadata(const struct js__metadata_site *site, const char *path, int *line,
                         int *column)
{
    if (strncmp(path, "module.exports.", 15) == 0)
        path += 15;
    if (!site->open || strncmp(path, "metadata", 8) != 0)
        return false;
    const char *end = site->source + site->len, *found = site->name;
    struct lexer lx = lexer_at(site->open + 1, end);
    struct tok open = {TOK_PUNCT, site->open, 1};
    const char *rest = path + 8, *name = NULL;
    size_t name_len = 0, index = 0;
    while (path_step(&rest, &name, &name_len, &index)) {
        struct tok at, value = open;
        if (name && is_punct(&open, '{') && find_key(&lx, name, name_len, &at, &value)) {
            found = at.start;
        } else if (!name && is_punct(&open, '[') && find_element(&lx, index, &at)) {
            found = at.start;
            value = at;
        } else {
            break;
        }
        if (!is_punct(&value, '{') && !is_punct(&value, '['))
            break;
        open = value;
    }
    if (lx.failed)
        return false;
    position_of(site->source, site->len, found, line, column);
    return true;
}
