/*
 * store_wal.c: SQLite's write-ahead log, written out to its working size.
 *
 * The log grows by appending until its first checkpoint (about 4 MB at the
 * default of 1,000 pages), and only then is rewritten from its start. While
 * it grows, each commit's fdatasync must also write the file's new size and
 * the blocks just allocated for it: on the disks measured, a commit that
 * appends took twice as long as one that overwrites (120-145 against 60-65
 * us). So, as database servers do with their pre-zeroed log segments, the
 * log is extended with zeros to a little over its working size whenever
 * the store opens (unless the disk has less than eight times that free), so
 * that every commit from the first overwrites blocks already written.
 *
 * The log is not kept past a clean close (SQLITE_FCNTL_PERSIST_WAL would
 * save this work at the next start): a stopped gateway's state is then
 * stratd.db alone, and a copy of that file restored later never meets a log
 * whose valid frames SQLite would replay onto it.
 *
 * Why zeros are safe: SQLite reads no frame past the last commit the
 * shared index records, and its recovery walks the frames from the start
 * and stops at the first whose salt and checksum do not match the header;
 * a zeroed frame never matches, and a zeroed header reads as an empty log.
 * The zeros only ever go past the end of what is there, and are written
 * inside a write transaction, when no other connection can append.
 */
#include "store/store_internal.h"

#include "core/log.h"

#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

/* The layout of SQLite's log (fixed by its file format). */
#define WAL_HEADER_BYTES 32
#define WAL_FRAME_HEADER_BYTES 24
/* A checkpoint starts after the commit that passes the threshold, so the
 * log ends up to one transaction past it. */
#define WAL_SPARE_FRAMES 64
#define ZERO_CHUNK_BYTES 65536
/* A nearly full disk keeps its last megabytes for the data itself. */
#define FREE_SPACE_FACTOR 8

static int pragma_int(struct store *s, const char *sql, long long *out)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        *out = sqlite3_column_int64(st, 0);
    else
        rc = SQLITE_ERROR;
    sqlite3_finalize(st);
    return rc == SQLITE_OK ? 0 : -1;
}

/* How long the log becomes before a checkpoint rewrites it from the start;
 * 0 when automatic checkpoints are off (it then has no working size). */
static long long working_size(struct store *s)
{
    long long page = 0, pages = 0;
    if (pragma_int(s, "PRAGMA page_size", &page) != 0 ||
        pragma_int(s, "PRAGMA wal_autocheckpoint", &pages) != 0 || page <= 0 || pages <= 0)
        return 0;
    return WAL_HEADER_BYTES + (pages + WAL_SPARE_FRAMES) * (page + WAL_FRAME_HEADER_BYTES);
}

/* Appends zeros to `wal` from `from` up to `to`, then syncs them. */
static int zero_fill(sqlite3_file *wal, sqlite3_int64 from, sqlite3_int64 to)
{
    void *zeros = calloc(1, ZERO_CHUNK_BYTES);
    if (!zeros)
        return SQLITE_NOMEM;
    int rc = SQLITE_OK;
    for (sqlite3_int64 at = from; rc == SQLITE_OK && at < to; at += ZERO_CHUNK_BYTES) {
        sqlite3_int64 left = to - at;
        int n = left < ZERO_CHUNK_BYTES ? (int)left : ZERO_CHUNK_BYTES;
        rc = wal->pMethods->xWrite(wal, zeros, n, at);
    }
    free(zeros);
    if (rc == SQLITE_OK)
        rc = wal->pMethods->xSync(wal, SQLITE_SYNC_NORMAL | SQLITE_SYNC_DATAONLY);
    return rc;
}

/* Under a write transaction: the log is open and no one else appends. */
static int extend_log(struct store *s, long long target)
{
    sqlite3_file *wal = NULL;
    int rc = sqlite3_file_control(s->db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &wal);
    if (rc != SQLITE_OK || !wal || !wal->pMethods)
        return rc == SQLITE_OK ? SQLITE_NOTFOUND : rc;
    sqlite3_int64 size = 0;
    rc = wal->pMethods->xFileSize(wal, &size);
    if (rc == SQLITE_OK && size < target)
        rc = zero_fill(wal, size, target);
    return rc;
}

void store__wal_prepare(struct store *s)
{
    /* Off whatever the build's default: a limit would truncate the log
     * after each checkpoint, back to appending. */
    if (sqlite3_exec(s->db, "PRAGMA journal_size_limit=-1", NULL, NULL, NULL) != SQLITE_OK)
        return;
    long long target = working_size(s);
    struct statvfs fs;
    if (target == 0 || statvfs(s->dir, &fs) != 0 ||
        (long long)fs.f_bavail * (long long)fs.f_frsize < FREE_SPACE_FACTOR * target)
        return;
    int rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = extend_log(s, target);
    if (!sqlite3_get_autocommit(s->db))
        (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    /* Only the first commits' speed depends on it: the store works without. */
    if (rc != SQLITE_OK)
        log_warn("store", "cannot write out the write-ahead log of %s to %lld bytes: %s",
                 s->db_path, target, sqlite3_errstr(rc));
}
