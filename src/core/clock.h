/*
 * clock: monotonic and wall-clock time, and RFC 3339 formatting.
 * All functions are thread-safe and never fail.
 */
#ifndef STRATD_CORE_CLOCK_H
#define STRATD_CORE_CLOCK_H

#include <stddef.h>
#include <stdint.h>

/* Monotonic nanoseconds, for durations and deadlines. */
int64_t clock_mono_ns(void);
/* Wall-clock milliseconds since the Unix epoch, for records shown to people. */
int64_t clock_wall_ms(void);
/* CPU time consumed by the calling thread, nanoseconds. */
int64_t clock_thread_cpu_ns(void);
/* "2026-12-02T15:08:46.123Z"; `size` must be at least 25. */
void clock_format_rfc3339(int64_t wall_ms, char *out, size_t size);
/* Parses the subset clock_format_rfc3339 writes, plus offsets and no
 * fraction. Returns 0 and sets *wall_ms, or -1 if `text` is not a date-time. */
int clock_parse_rfc3339(const char *text, int64_t *wall_ms);

#endif
