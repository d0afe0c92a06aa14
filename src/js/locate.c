/*
 * locate: where the source spells out a metadata value, so that a metadata
 * diagnostic can carry a line and column. Validation reads the metadata as
 * data from the running module, and values keep no positions; the text
 * does. This finds the first `metadata` key or variable whose value is an
 * object literal, then the path's keys and array elements inside it, with
 * a lexer that knows just enough JavaScript to step over comments, strings,
 * template literals and regular expressions. What it cannot follow
 * (metadata computed, spread or shorthand members) leaves the position of
 * the nearest enclosing value it found, or none.
 */
#include "js/internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* Nesting of template literals within template literals the lexer follows;
 * deeper ones end the scan. */
#define LOCATE_MAX_NESTING 32

enum tok_kind { TOK_END, TOK_NAME, TOK_STRING, TOK_PUNCT, TOK_OTHER };

struct tok {
    enum tok_kind kind;
    const char *start;
    size_t len; /* a string's length includes its quotes */
    int line;
    const char *line_start;
};

struct lexer {
    const char *p, *end;
    int line;
    const char *line_start;
    bool regex_allowed; /* a '/' here starts a regular expression */
    int nesting;
    bool failed;
};

static bool name_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '$' || (unsigned char)c >= 0x80;
}

static void newline(struct lexer *lx, const char *at)
{
    lx->line++;
    lx->line_start = at + 1;
}

static void skip_space_and_comments(struct lexer *lx)
{
    while (lx->p < lx->end) {
        char c = *lx->p;
        if (c == '\n') {
            newline(lx, lx->p);
            lx->p++;
        } else if (isspace((unsigned char)c)) {
            lx->p++;
        } else if (c == '/' && lx->p + 1 < lx->end && lx->p[1] == '/') {
            while (lx->p < lx->end && *lx->p != '\n')
                lx->p++;
        } else if (c == '/' && lx->p + 1 < lx->end && lx->p[1] == '*') {
            lx->p += 2;
            while (lx->p < lx->end && !(*lx->p == '*' && lx->p + 1 < lx->end && lx->p[1] == '/')) {
                if (*lx->p == '\n')
                    newline(lx, lx->p);
                lx->p++;
            }
            lx->p = lx->p < lx->end ? lx->p + 2 : lx->end;
        } else {
            return;
        }
    }
}

/* Past the closing `quote`; escapes and (for templates) line breaks kept
 * in count. */
static void skip_quoted(struct lexer *lx, char quote)
{
    lx->p++;
    while (lx->p < lx->end && *lx->p != quote) {
        if (*lx->p == '\\' && lx->p + 1 < lx->end)
            lx->p++;
        if (*lx->p == '\n')
            newline(lx, lx->p);
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
        /* an escaped line break (a continuation) is still a line */
        if (*lx->p == '\\' && lx->p + 1 < lx->end) {
            lx->p++;
            if (*lx->p == '\n')
                newline(lx, lx->p);
            lx->p++;
            continue;
        }
        if (*lx->p == '\n')
            newline(lx, lx->p);
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
    while (lx->p < lx->end && *lx->p != '\n' && (*lx->p != '/' || in_class)) {
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
    while (lx->p < lx->end && name_char(*lx->p))
        lx->p++;
}

/* After these words an expression starts, so a '/' begins a regex. */
static bool expression_keyword(const struct tok *t)
{
    static const char *const words[] = {"return", "typeof", "case", "in",    "of",
                                        "new",    "delete", "void", "throw", "yield"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        if (t->len == strlen(words[i]) && memcmp(t->start, words[i], t->len) == 0)
            return true;
    }
    return false;
}

static struct tok next_token(struct lexer *lx)
{
    for (;;) {
        skip_space_and_comments(lx);
        struct tok t = {TOK_END, lx->p, 0, lx->line, lx->line_start};
        if (lx->p >= lx->end)
            return t;
        char c = *lx->p;
        if (name_char(c)) {
            while (lx->p < lx->end && name_char(*lx->p))
                lx->p++;
            t.kind = isdigit((unsigned char)c) ? TOK_OTHER : TOK_NAME;
            t.len = (size_t)(lx->p - t.start);
            lx->regex_allowed = t.kind == TOK_NAME && expression_keyword(&t);
            return t;
        }
        if (c == '\'' || c == '"') {
            skip_quoted(lx, c);
            t.kind = TOK_STRING;
            t.len = (size_t)(lx->p - t.start);
            lx->regex_allowed = false;
            return t;
        }
        if (c == '`') {
            skip_template(lx);
            lx->regex_allowed = false;
            continue; /* a template is never a key: not a token of interest */
        }
        if (c == '/' && lx->regex_allowed) {
            skip_regex(lx);
            lx->regex_allowed = false;
            continue;
        }
        lx->p++;
        t.kind = TOK_PUNCT;
        t.len = 1;
        lx->regex_allowed = c != ')' && c != ']' && c != '}';
        return t;
    }
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

/* A key token spelling `name`: bare, or quoted without escapes. */
static bool key_is(const struct tok *t, const char *name, size_t len)
{
    if (t->kind == TOK_NAME)
        return t->len == len && memcmp(t->start, name, len) == 0;
    return t->kind == TOK_STRING && t->len == len + 2 && memcmp(t->start + 1, name, len) == 0;
}

/* Inside an object literal (just past its '{'): the key `name` whose value
 * follows a ':'; *value is the value's first token. */
static bool find_key(struct lexer *lx, const char *name, size_t len, struct tok *key,
                     struct tok *value)
{
    int depth = 0;
    bool at_key = true;
    for (struct tok t = next_token(lx); t.kind != TOK_END; t = next_token(lx)) {
        if (depth == 0 && is_punct(&t, '}'))
            return false;
        if (depth == 0 && at_key && key_is(&t, name, len)) {
            struct tok colon = next_token(lx);
            if (is_punct(&colon, ':')) {
                *key = t;
                *value = next_token(lx);
                return true;
            }
            t = colon;
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

/* The first `metadata` (key or variable) given an object literal: *name is
 * the word, *open its '{'. */
static bool find_metadata(struct lexer *lx, struct tok *name, struct tok *open)
{
    for (struct tok t = next_token(lx); t.kind != TOK_END; t = next_token(lx)) {
        if (!key_is(&t, "metadata", 8))
            continue;
        struct tok sep = next_token(lx);
        if (!is_punct(&sep, ':') && !is_punct(&sep, '='))
            continue;
        struct tok value = next_token(lx);
        if (is_punct(&value, '{')) {
            *name = t;
            *open = value;
            return true;
        }
    }
    return false;
}

static void position_of(const struct tok *t, int *line, int *column)
{
    *line = t->line;
    *column = js__offset_column(t->line_start, (size_t)(t->start - t->line_start));
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

bool js__locate_metadata(const char *source, size_t len, const char *path, int *line, int *column)
{
    if (strncmp(path, "module.exports.", 15) == 0)
        path += 15;
    if (!source || strncmp(path, "metadata", 8) != 0)
        return false;
    struct lexer lx = {source, source + len, 1, source, true, 0, false};
    struct tok found, open;
    if (!find_metadata(&lx, &found, &open))
        return false;
    const char *rest = path + 8, *name = NULL;
    size_t name_len = 0, index = 0;
    while (path_step(&rest, &name, &name_len, &index)) {
        struct tok at, value = open;
        if (name && is_punct(&open, '{') && find_key(&lx, name, name_len, &at, &value)) {
            found = at;
        } else if (!name && is_punct(&open, '[') && find_element(&lx, index, &at)) {
            found = value = at;
        } else {
            break;
        }
        if (!is_punct(&value, '{') && !is_punct(&value, '['))
            break;
        open = value;
    }
    if (lx.failed)
        return false;
    position_of(&found, line, column);
    return true;
}
