/*
 * records: the contract's OrderRecord, ExecutionRecord and BalanceRecord as
 * JSON text, written straight from the exchange's C records (sim.h). The
 * market's record writer stores this text as it is: building jansson
 * objects only to dump them was most of its CPU. The API's balances are
 * this text, parsed, so both say the same.
 */
#include "market/sim.h"

#include "core/intern.h"
#include "core/jsonutil.h"

#include <stdio.h>

/* Keys are appended piecewise: a formatter call per key was most of the
 * record writer's CPU. */
static void put_key(struct strbuf *sb, const char *key)
{
    bool first = sb->len > 0 && sb->data[sb->len - 1] == '{';
    strbuf_puts(sb, first ? "\"" : ",\"");
    strbuf_puts(sb, key);
    strbuf_puts(sb, "\":");
}

static void put_str(struct strbuf *sb, const char *key, const char *value)
{
    put_key(sb, key);
    jsonutil_put_string(sb, value);
}

/* Decimals are strings in the contract's records. */
static void put_decimal(struct strbuf *sb, const char *key, double v)
{
    char text[SIM_DECIMAL_MAX];
    sim_decimal_text(v, text, sizeof text);
    put_key(sb, key);
    strbuf_putc(sb, '"');
    strbuf_puts(sb, text);
    strbuf_putc(sb, '"');
}

static void put_int(struct strbuf *sb, const char *key, int64_t v)
{
    put_key(sb, key);
    strbuf_put_int64(sb, v);
}

static void put_ms_or_null(struct strbuf *sb, const char *key, int64_t ms)
{
    if (ms) {
        put_int(sb, key, ms);
    } else {
        put_key(sb, key);
        strbuf_puts(sb, "null");
    }
}

void sim_order_text(struct strbuf *sb, const char *provider, const struct sim_order *o,
                    const char *reason)
{
    strbuf_putc(sb, '{');
    put_str(sb, "id", o->order_id);
    put_str(sb, "provider", provider);
    put_str(sb, "strategyInstance", o->instance_id);
    put_str(sb, "clientOrderId", o->client_order_id);
    put_str(sb, "symbol", intern_name(o->symbol));
    put_str(sb, "side", order_side_name(o->side));
    put_str(sb, "type", order_type_name(o->type));
    put_decimal(sb, "quantity", o->quantity);
    if (o->type == ORDER_LIMIT)
        put_decimal(sb, "price", o->price);
    else
        strbuf_puts(sb, ",\"price\":null");
    put_str(sb, "state", event_exec_status_name(o->state));
    strbuf_puts(sb, ",\"externalReference\":null");
    put_int(sb, "placedAt", o->placed_ms);
    strbuf_puts(sb, ",\"metadata\":{");
    strbuf_puts(sb, o->dry_run ? "\"dryRun\":true" : "\"dryRun\":false");
    put_decimal(sb, "filledQuantity", o->filled);
    put_decimal(sb, "averagePrice", o->filled > 0 ? o->notional / o->filled : 0);
    put_int(sb, "instanceKey", o->instance_key);
    if (reason && *reason)
        put_str(sb, "reason", reason);
    strbuf_putc(sb, '}');
    put_ms_or_null(sb, "acknowledgedAt", o->acknowledged_ms);
    put_ms_or_null(sb, "completedAt", o->completed_ms);
    put_int(sb, "createdAt", o->placed_ms);
    put_int(sb, "updatedAt", o->updated_ms);
    strbuf_putc(sb, '}');
}

void sim_execution_text(struct strbuf *sb, const char *provider, const struct sim_rec *r,
                        const char *exec_id)
{
    const struct sim_order *o = &r->u.o.order;
    const struct sim_symbol_cfg *cfg = r->u.o.cfg;
    strbuf_putc(sb, '{');
    put_str(sb, "orderId", o->order_id);
    put_str(sb, "provider", provider);
    put_str(sb, "strategyInstance", o->instance_id);
    put_str(sb, "executionId", exec_id);
    put_decimal(sb, "quantity", r->u.o.qty);
    put_decimal(sb, "price", r->u.o.price);
    put_decimal(sb, "fee", r->u.o.fee);
    put_str(sb, "feeAsset", cfg->quote);
    put_str(sb, "liquidity", r->u.o.maker ? "maker" : "taker");
    put_int(sb, "tradedAt", r->u.o.at_ms);
    strbuf_puts(sb, ",\"metadata\":{");
    put_str(sb, "symbol", cfg->symbol);
    put_str(sb, "side", order_side_name(o->side));
    strbuf_puts(sb, o->dry_run ? ",\"dryRun\":true}" : ",\"dryRun\":false}");
    put_int(sb, "createdAt", r->u.o.at_ms);
    strbuf_putc(sb, '}');
}

void sim_balance_text(struct strbuf *sb, const char *provider, const struct sim_asset *as,
                      int64_t created_ms)
{
    strbuf_putc(sb, '{');
    put_str(sb, "provider", provider);
    put_str(sb, "asset", as->asset);
    put_decimal(sb, "total", as->total);
    put_decimal(sb, "available", as->available);
    put_int(sb, "snapshotAt", as->updated_ms);
    strbuf_puts(sb, ",\"metadata\":{}");
    put_int(sb, "createdAt", created_ms);
    put_int(sb, "updatedAt", as->updated_ms);
    strbuf_putc(sb, '}');
}
