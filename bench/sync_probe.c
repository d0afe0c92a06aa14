/*
 * Times a durable overwrite the way a commit of SQLite's write-ahead log
 * makes one (8 KiB written over blocks already on the disk, then
 * fdatasync), with the writer sleeping a given time between two of them.
 *
 * A create + start pair of the density figure makes two such commits with
 * a request's work between them; `dd oflag=dsync` makes them back to back.
 * On the virtual disks measured, a flush issued soon after the last one
 * completed was several times faster than one issued after a pause, so
 * the figure that bounds the start is the paced one.
 *
 * usage: bench_sync_probe DIR ROUNDS GAP_US...
 * prints one JSON object: per gap, the mean, p50 and p99 in microseconds.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WRITE_BYTES 8192
#define FILE_BYTES (4 << 20)

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The file written out and synced once, so the timed writes overwrite. */
static int prepare(int fd, char *block)
{
    memset(block, 0, WRITE_BYTES);
    for (off_t at = 0; at < FILE_BYTES; at += WRITE_BYTES) {
        if (pwrite(fd, block, WRITE_BYTES, at) != WRITE_BYTES)
            return -1;
    }
    return fsync(fd);
}

static void pause_us(long gap)
{
    if (gap <= 0)
        return;
    struct timespec t = {gap / 1000000, (gap % 1000000) * 1000};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

/* ROUNDS timed overwrites GAP microseconds apart into times[]. */
static int run_gap(int fd, char *block, long gap, int rounds, double *times)
{
    off_t at = 0;
    for (int i = 0; i < rounds; i++) {
        memset(block, (i & 0x7f) + 1, WRITE_BYTES);
        if (at + WRITE_BYTES > FILE_BYTES)
            at = 0;
        double t0 = now_us();
        if (pwrite(fd, block, WRITE_BYTES, at) != WRITE_BYTES || fdatasync(fd) != 0)
            return -1;
        times[i] = now_us() - t0;
        at += WRITE_BYTES;
        pause_us(gap);
    }
    return 0;
}

static void print_gap(long gap, double *times, int rounds, int last)
{
    double sum = 0;
    for (int i = 0; i < rounds; i++)
        sum += times[i];
    qsort(times, (size_t)rounds, sizeof *times, compare_doubles);
    printf("{\"gap_us\": %ld, \"mean_us\": %.1f, \"p50_us\": %.1f, \"p99_us\": %.1f}%s", gap,
           sum / rounds, times[rounds / 2], times[rounds * 99 / 100], last ? "" : ", ");
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: bench_sync_probe DIR ROUNDS GAP_US...\n");
        return 2;
    }
    int rounds = atoi(argv[2]);
    char path[4096];
    (void)snprintf(path, sizeof path, "%s/sync-probe", argv[1]);
    char *block = malloc(WRITE_BYTES);
    double *times = rounds > 0 ? calloc((size_t)rounds, sizeof *times) : NULL;
    int fd = open(path, O_CREAT | O_TRUNC | O_RDWR, 0600);
    int rc = block && times && fd >= 0 && prepare(fd, block) == 0 ? 0 : 1;
    if (rc == 0)
        printf("{\"write_bytes\": %d, \"rounds\": %d, \"gaps\": [", WRITE_BYTES, rounds);
    for (int g = 3; rc == 0 && g < argc; g++) {
        long gap = atol(argv[g]);
        if (run_gap(fd, block, gap, rounds, times) != 0)
            rc = 1;
        else
            print_gap(gap, times, rounds, g == argc - 1);
    }
    if (rc == 0)
        printf("]}\n");
    else
        fprintf(stderr, "bench_sync_probe: %s: %s\n", path, strerror(errno));
    if (fd >= 0) {
        close(fd);
        unlink(path);
    }
    free(times);
    free(block);
    return rc;
}
