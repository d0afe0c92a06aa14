/*
 * notify: tells a service manager how the gateway's life goes, in systemd's
 * notification protocol (sd_notify(3)): one datagram of "KEY=value" lines
 * to the unix socket named by the NOTIFY_SOCKET environment variable (a
 * path, or an abstract name after '@'). `stratd serve` sends READY=1 once it
 * listens, RELOADING=1 and then READY=1 around the work of a SIGHUP, and
 * STOPPING=1 when it shuts down, each with a STATUS= line for
 * `systemctl status`.
 *
 * Without NOTIFY_SOCKET (started by hand, by a supervisor of another kind)
 * every call does nothing and succeeds. The library keeps no state: each
 * call opens a socket, sends and closes it, so any thread may call it;
 * serve calls it from the main thread only.
 *
 * Errors: -1 with err set (ERR_INVALID for an address that cannot be a
 * unix socket's, ERR_INTERNAL when the datagram cannot be sent). A manager
 * that cannot be told must not stop the gateway: callers log the error and
 * go on.
 */
#ifndef STRATD_CMD_NOTIFY_H
#define STRATD_CMD_NOTIFY_H

#include "core/err.h"

/* Sends `message` (lines "KEY=value", '\n'-separated, no trailing newline
 * needed) to NOTIFY_SOCKET; 0 when sent or when there is no manager. */
int notify_send(const char *message, struct err *err);

#endif
