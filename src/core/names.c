#include "core/names.h"

#include <string.h>

static bool is_lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_alnum(char c)
{
    return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

bool names_valid_strategy(const char *name)
{
    size_t len = name ? strlen(name) : 0;
    if (len == 0 || len > NAMES_STRATEGY_MAX || !is_lower_alnum(name[0]))
        return false;
    for (size_t i = 1; i < len; i++) {
        if (!is_lower_alnum(name[i]) && name[i] != '_' && name[i] != '-')
            return false;
    }
    return true;
}

bool names_reserved_strategy(const char *name)
{
    return strcmp(name, "modules") == 0 || strcmp(name, "registry") == 0 ||
           strcmp(name, "refresh") == 0;
}

static bool valid_dotted(const char *s, size_t max, const char *extra)
{
    size_t len = s ? strlen(s) : 0;
    if (len == 0 || len > max || !is_alnum(s[0]))
        return false;
    for (size_t i = 1; i < len; i++) {
        if (!is_alnum(s[i]) && !strchr(extra, s[i]))
            return false;
    }
    return true;
}

bool names_valid_tag(const char *tag)
{
    return valid_dotted(tag, NAMES_TAG_MAX, "._-");
}

bool names_valid_id(const char *id)
{
    return valid_dotted(id, NAMES_ID_MAX, "._-");
}

bool names_valid_symbol(const char *symbol)
{
    return valid_dotted(symbol, 64, "._/-");
}
