#include "core/clock.h"

#include <stdbool.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

int64_t clock_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t clock_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t clock_thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void clock_format_rfc3339(int64_t wall_ms, char *out, size_t size)
{
    time_t secs = (time_t)(wall_ms / 1000);
    int millis = (int)(wall_ms % 1000);
    if (millis < 0) {
        millis += 1000;
        secs -= 1;
    }
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(out, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, millis);
}

/* Whether text follows layout, where 'd' stands for one ASCII digit and
 * any other character for itself ('T' either case); sscanf's %d would also
 * take signs and spaces. */
static bool follows(const char *text, const char *layout)
{
    for (; *layout; layout++, text++) {
        bool ok = *layout == 'd'   ? (*text >= '0' && *text <= '9')
                  : *layout == 'T' ? (*text == 'T' || *text == 't')
                                   : *text == *layout;
        if (!ok)
            return false;
    }
    return true;
}

static int number_at(const char *text, size_t at, size_t len)
{
    int n = 0;
    for (size_t i = at; i < at + len; i++)
        n = n * 10 + (text[i] - '0');
    return n;
}

int clock_parse_rfc3339(const char *text, int64_t *wall_ms)
{
    if (!follows(text, "dddd-dd-ddTdd:dd:dd"))
        return -1;
    int year = number_at(text, 0, 4), mon = number_at(text, 5, 2), day = number_at(text, 8, 2);
    int hour = number_at(text, 11, 2), min = number_at(text, 14, 2), sec = number_at(text, 17, 2);
    const int consumed = 19;
    if (mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60)
        return -1;
    const char *p = text + consumed;
    int millis = 0;
    if (*p == '.') {
        p++;
        int digits = 0;
        while (*p >= '0' && *p <= '9') {
            if (digits < 3)
                millis = millis * 10 + (*p - '0');
            digits++;
            p++;
        }
        if (digits == 0)
            return -1;
        for (; digits < 3; digits++)
            millis *= 10;
    }
    long offset_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        if (!follows(p + 1, "dd:dd"))
            return -1;
        int oh = number_at(p + 1, 0, 2), om = number_at(p + 1, 3, 2);
        if (oh > 23 || om > 59)
            return -1;
        offset_min = (*p == '+' ? 1 : -1) * ((long)oh * 60 + om);
        p += 6;
    } else {
        return -1;
    }
    if (*p != '\0')
        return -1;
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    tm.tm_year = year - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = min;
    tm.tm_sec = sec;
    time_t secs = timegm(&tm);
    *wall_ms = ((int64_t)secs - offset_min * 60) * 1000 + millis;
    return 0;
}
