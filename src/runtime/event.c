#include "runtime/event.h"

#include <stdlib.h>
#include <string.h>

struct event *event_new(enum event_kind kind, size_t extra)
{
    struct event *ev = malloc(sizeof *ev + extra);
    if (!ev)
        return NULL;
    memset(ev, 0, sizeof *ev);
    atomic_init(&ev->refs, 1);
    ev->kind = (uint8_t)kind;
    return ev;
}

void event_release(struct event *ev)
{
    if (ev && atomic_fetch_sub_explicit(&ev->refs, 1, memory_order_acq_rel) == 1)
        free(ev);
}

const char *event_kind_name(enum event_kind kind)
{
    static const char *const names[EVENT_KIND_COUNT] = {
        "Trade",         "Ticker",       "BookSnapshot",
        "ExecReport",    "KlineSummary", "InstrumentUpdate",
        "BalanceUpdate", "RiskControl",  "Extension",
    };
    return (unsigned)kind < EVENT_KIND_COUNT ? names[kind] : "Unknown";
}

const char *event_exec_handler(enum exec_status status)
{
    switch (status) {
    case EXEC_ACKNOWLEDGED:
        return "onOrderAcknowledged";
    case EXEC_PARTIAL_FILL:
        return "onOrderPartialFill";
    case EXEC_FILLED:
        return "onOrderFilled";
    case EXEC_CANCELLED:
        return "onOrderCancelled";
    case EXEC_REJECTED:
        return "onOrderRejected";
    case EXEC_EXPIRED:
        return "onOrderExpired";
    }
    return "onOrderRejected";
}

const char *event_exec_status_name(enum exec_status status)
{
    switch (status) {
    case EXEC_ACKNOWLEDGED:
        return "acknowledged";
    case EXEC_PARTIAL_FILL:
        return "partiallyFilled";
    case EXEC_FILLED:
        return "filled";
    case EXEC_CANCELLED:
        return "cancelled";
    case EXEC_REJECTED:
        return "rejected";
    case EXEC_EXPIRED:
        return "expired";
    }
    return "rejected";
}

const char *order_side_name(enum order_side side)
{
    return side == SIDE_BUY ? "buy" : "sell";
}

const char *order_type_name(enum order_type type)
{
    return type == ORDER_MARKET ? "market" : "limit";
}
