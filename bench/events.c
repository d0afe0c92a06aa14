/*
 * Writes the Trade events of the real simulated exchange (src/market) to a
 * file, so the Node.js peers replay exactly the sequence the gateway's
 * provider produces with the same settings (symbol BTC-USDT, seed 1, the
 * adapter's defaults otherwise).
 *
 * Format: per trade six little-endian float64 values: price, quantity,
 * side (0 buy, 1 sell), tradeId, seq, ts (ms).
 *
 * usage: bench_events OUT.bin [trades]
 */
#include "market/market.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct collector {
    double *rows;
    size_t n, want;
    atomic_bool done;
};

static void collect(void *ctx, struct event *ev)
{
    struct collector *c = ctx;
    if (ev->kind == EVENT_TRADE && c->n < c->want) {
        double *r = &c->rows[c->n * 6];
        r[0] = ev->u.trade.price;
        r[1] = ev->u.trade.quantity;
        r[2] = ev->u.trade.side == SIDE_BUY ? 0 : 1;
        r[3] = (double)ev->u.trade.trade_id;
        r[4] = (double)ev->seq;
        r[5] = (double)ev->ts_ms;
        if (++c->n == c->want)
            atomic_store(&c->done, true);
    }
    event_release(ev);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_events OUT.bin [trades]\n");
        return 2;
    }
    struct collector c = {NULL, 0, argc > 2 ? (size_t)atol(argv[2]) : 65536, false};
    c.rows = calloc(c.want * 6, sizeof *c.rows);
    if (!c.rows || c.want == 0)
        return 1;
    struct event_sink sink = {&c, collect, NULL, NULL};
    struct market *m = market_new(sink, NULL);
    json_t *req = json_pack("{s:s, s:{s:s, s:{s:[s], s:I, s:f}}, s:b}", "name", "bench", "adapter",
                            "identifier", "simulated", "config", "symbols", "BTC-USDT", "seed",
                            (json_int_t)1, "tickRate", 0.0, "enabled", 1);
    struct err err = ERR_INIT;
    int rc = m ? market_provider_create(m, req, NULL, &err) : -1;
    json_decref(req);
    if (rc != 0) {
        fprintf(stderr, "bench_events: %s\n", err.message);
        err_clear(&err);
        market_free(m);
        return 1;
    }
    while (!atomic_load(&c.done)) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    market_provider_stop(m, "bench", NULL, &err);
    err_clear(&err);
    market_free(m);
    FILE *f = fopen(argv[1], "wb");
    if (!f || fwrite(c.rows, sizeof *c.rows, c.want * 6, f) != c.want * 6) {
        fprintf(stderr, "bench_events: cannot write %s: %s\n", argv[1], strerror(errno));
        if (f)
            fclose(f);
        return 1;
    }
    fclose(f);
    free(c.rows);
    return 0;
}
