/*
 * Version ordering for `latest`: tags like v1.2.3 and 1.2.3-rc.1 compare by
 * semantic-version precedence (https://semver.org, section 11). Tags use
 * [A-Za-z0-9._-], so a build suffix ("+...") never occurs.
 */
#include "cmd/bootstrap.h"

#include <ctype.h>
#include <string.h>

#define CORE_DIGITS_MAX 18 /* keeps every number inside uint64_t */

struct semver {
    uint64_t part[3];
    const char *pre; /* after the '-', or NULL */
};

/* Reads one number of the MAJOR.MINOR.PATCH core; *p moves past it. */
static bool parse_number(const char **p, uint64_t *value)
{
    const char *s = *p;
    size_t n = 0;
    *value = 0;
    while (isdigit((unsigned char)s[n])) {
        if (n == CORE_DIGITS_MAX)
            return false;
        *value = *value * 10 + (uint64_t)(s[n] - '0');
        n++;
    }
    *p = s + n;
    return n > 0;
}

/* A pre-release is dot-separated, non-empty identifiers of [0-9A-Za-z-]. */
static bool valid_pre(const char *pre)
{
    size_t run = 0;
    for (const char *p = pre;; p++) {
        if (*p == '.' || *p == '\0') {
            if (run == 0)
                return false;
            if (*p == '\0')
                return true;
            run = 0;
        } else if (isalnum((unsigned char)*p) || *p == '-') {
            run++;
        } else {
            return false;
        }
    }
}

static bool parse(const char *tag, struct semver *v)
{
    const char *p = tag;
    if (*p == 'v' || *p == 'V')
        p++;
    for (int i = 0; i < 3; i++) {
        if (!parse_number(&p, &v->part[i]))
            return false;
        if (i < 2 && *p++ != '.')
            return false;
    }
    v->pre = NULL;
    if (*p == '\0')
        return true;
    if (*p != '-' || !valid_pre(p + 1))
        return false;
    v->pre = p + 1;
    return true;
}

bool bootstrap_semver_valid(const char *tag)
{
    struct semver v;
    return tag && parse(tag, &v);
}

static bool all_digits(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
    }
    return true;
}

/* Numeric identifiers compare as numbers: first by length once leading
 * zeros are gone, then digit by digit. */
static int compare_numeric(const char *a, size_t alen, const char *b, size_t blen)
{
    while (alen > 1 && *a == '0') {
        a++;
        alen--;
    }
    while (blen > 1 && *b == '0') {
        b++;
        blen--;
    }
    if (alen != blen)
        return alen < blen ? -1 : 1;
    return memcmp(a, b, alen);
}

static int compare_identifier(const char *a, size_t alen, const char *b, size_t blen)
{
    bool anum = all_digits(a, alen), bnum = all_digits(b, blen);
    if (anum && bnum)
        return compare_numeric(a, alen, b, blen);
    if (anum != bnum)
        return anum ? -1 : 1; /* numeric identifiers have lower precedence */
    int cmp = memcmp(a, b, alen < blen ? alen : blen);
    if (cmp != 0)
        return cmp;
    return alen == blen ? 0 : (alen < blen ? -1 : 1);
}

static int compare_pre(const char *a, const char *b)
{
    if (!a || !b)
        return a == b ? 0 : (a ? -1 : 1); /* a release outranks its pre-releases */
    for (;;) {
        size_t alen = strcspn(a, "."), blen = strcspn(b, ".");
        int cmp = compare_identifier(a, alen, b, blen);
        if (cmp != 0)
            return cmp < 0 ? -1 : 1;
        a += alen;
        b += blen;
        if (*a == '\0' || *b == '\0')
            return *a == *b ? 0 : (*a == '\0' ? -1 : 1);
        a++;
        b++;
    }
}

int bootstrap_semver_compare(const char *a, const char *b)
{
    struct semver va, vb;
    bool oka = a && parse(a, &va), okb = b && parse(b, &vb);
    if (!oka || !okb)
        return oka == okb ? 0 : (oka ? 1 : -1);
    for (int i = 0; i < 3; i++) {
        if (va.part[i] != vb.part[i])
            return va.part[i] < vb.part[i] ? -1 : 1;
    }
    return compare_pre(va.pre, vb.pre);
}
