/*
 * offload: the threads that run the request handlers that may block, so
 * that libmicrohttpd's polling threads go on serving other connections
 * meanwhile. An upload validates its module (up to its CPU budget), a
 * create or start waits for durable writes, a refresh restarts instances:
 * on a polling thread each would stall every connection that thread holds.
 *
 * A job is a function and its argument, run once on the first free thread,
 * in the order submitted. The pool owns neither: the submitter keeps the
 * argument alive until the job has run.
 *
 * Threads: offload_submit from any thread; offload_drain once, from the
 * owner: every job already queued runs, the threads end, and later submits
 * are refused; offload_free after that, once nothing can submit.
 * Errors: offload_start -1 with err (ERR_INTERNAL) when memory or a thread
 * cannot be had; offload_submit -1 when out of memory or drained (nothing
 * queued: the caller runs the job itself).
 */
#ifndef STRATD_API_OFFLOAD_H
#define STRATD_API_OFFLOAD_H

#include "core/err.h"

struct offload;

typedef void offload_fn(void *arg);

int offload_start(unsigned threads, struct offload **out, struct err *err);
int offload_submit(struct offload *o, offload_fn *fn, void *arg);
void offload_drain(struct offload *o);
void offload_free(struct offload *o);

#endif
