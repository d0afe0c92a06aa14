/*
 * matching: the simulated exchange's orders, run by the holder of the
 * session's engine (the provider thread, or a submitting thread: sim.h).
 *
 * Order life cycle, each step one ExecReport to the owning instance and one
 * OrderRecord upsert:
 *   rejected                      checks failed (one report, with a reason)
 *   acknowledged                  accepted
 *   partiallyFilled* filled       fills, each with last quantity and price
 *   ... expired                   a market order the book could not fill
 *   ... cancelled | expired       a resting limit order cancelled or stopped
 *
 * Matching
 * - Market orders take the current book level by level (asks for a buy,
 *   bids for a sell); what the book cannot fill expires with a reason.
 * - Limit orders take the levels within their price at once, then rest.
 *   A resting order fills when a later trade crosses it (buy: trade price
 *   <= limit, sell: >=), at its limit price, for at most the trade's size
 *   (shared per side by the crossing orders, best limit first, then oldest).
 * - Quantities the orders take are removed from the current tick's book, so
 *   two orders in one tick cannot both take the same level; the next tick
 *   builds a fresh book.
 *
 * Money
 * - Every fill costs feeRate * notional in the quote asset (the report's
 *   `fee` is that fill's fee; so is the ExecutionRecord's).
 * - A buy needs quote for notional + fee, a sell needs the base quantity.
 *   Market orders are checked against the book walk they are about to
 *   make; limit orders hold (reserve) their worst case in `available` until
 *   they fill, are cancelled or expire.
 * - Dry-run orders match the same way but never check or change balances.
 *
 * Limits
 * - An instance has at most MARKET_SIM_MAX_RESTING limit orders
 *   resting on a provider; a limit order beyond that is rejected. Every
 *   order and every trade walks the resting orders, and a dry-run order
 *   reserves nothing: without the limit one strategy placing orders far
 *   from the market grew the list by thousands a second until the provider
 *   thread spent its time walking it (a neighbour's trades fell from 10 a
 *   second to 1 within a minute).
 */
#include "market/market.h"
#include "market/risk.h"
#include "market/sim.h"

#include "core/clock.h"
#include "core/intern.h"
#include "core/jsonutil.h"
#include "core/log.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* -------------------------------------------------------------- account */

static struct sim_asset *account_add(struct sim_account *a, const char *asset)
{
    for (size_t i = 0; i < a->nassets; i++) {
        if (strcmp(a->assets[i].asset, asset) == 0)
            return &a->assets[i];
    }
    struct sim_asset *as = &a->assets[a->nassets++];
    snprintf(as->asset, sizeof as->asset, "%s", asset);
    as->updated_ms = a->created_ms;
    return as;
}

struct sim_account *sim_account_new(const struct sim_settings *s)
{
    struct sim_account *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->assets = calloc(s->nbalances + 2 * s->nsymbols, sizeof *a->assets);
    if (!a->assets || pthread_mutex_init(&a->lock, NULL) != 0) {
        free(a->assets);
        free(a);
        return NULL;
    }
    a->created_ms = clock_wall_ms();
    for (size_t i = 0; i < s->nbalances; i++) {
        struct sim_asset *as = account_add(a, s->balances[i].asset);
        as->total = as->available = s->balances[i].amount;
    }
    for (size_t i = 0; i < s->nsymbols; i++) {
        account_add(a, s->symbols[i].base);
        account_add(a, s->symbols[i].quote);
    }
    return a;
}

void sim_account_free(struct sim_account *a)
{
    if (!a)
        return;
    pthread_mutex_destroy(&a->lock);
    free(a->assets);
    free(a);
}

static struct sim_asset *account_find(struct sim_account *a, const char *asset)
{
    for (size_t i = 0; i < a->nassets; i++) {
        if (strcmp(a->assets[i].asset, asset) == 0)
            return &a->assets[i];
    }
    return NULL; /* not reached: every symbol's assets are in the account */
}

json_t *sim_balance_record(const struct sim_account *a, const struct sim_asset *as,
                           const char *provider)
{
    struct strbuf sb = STRBUF_INIT;
    sim_balance_text(&sb, provider, as, a->created_ms);
    json_t *rec = strbuf_failed(&sb) ? NULL : jsonutil_parse(sb.data, sb.len, NULL);
    strbuf_release(&sb);
    return rec;
}

/* Newest first; equal times by asset name, so the order is stable. */
static int newer_first(const void *x, const void *y)
{
    const struct sim_asset *a = *(const struct sim_asset *const *)x;
    const struct sim_asset *b = *(const struct sim_asset *const *)y;
    if (a->updated_ms != b->updated_ms)
        return a->updated_ms > b->updated_ms ? -1 : 1;
    return strcmp(a->asset, b->asset);
}

json_t *sim_account_json(struct sim_account *a, const char *provider, const char *asset, int limit)
{
    json_t *out = json_array();
    pthread_mutex_lock(&a->lock);
    const struct sim_asset **sorted = calloc(a->nassets ? a->nassets : 1, sizeof *sorted);
    size_t n = 0;
    for (size_t i = 0; sorted && i < a->nassets; i++) {
        if (!asset || strcmp(asset, a->assets[i].asset) == 0)
            sorted[n++] = &a->assets[i];
    }
    if (sorted)
        qsort(sorted, n, sizeof *sorted, newer_first);
    for (size_t i = 0; sorted && i < n && (limit <= 0 || i < (size_t)limit); i++)
        json_array_append_new(out, sim_balance_record(a, sorted[i], provider));
    pthread_mutex_unlock(&a->lock);
    bool failed = !sorted || !out;
    free(sorted);
    if (failed) {
        json_decref(out);
        return NULL;
    }
    return out;
}

/* Changes one asset; the caller holds the account lock. */
static void asset_change(struct sim_asset *as, double total, double available)
{
    as->total += total;
    as->available += available;
    /* rounding must never show more available than held */
    if (as->available > as->total)
        as->available = as->total;
    as->updated_ms = clock_wall_ms();
    as->dirty = true;
}

void sim_balances_publish(struct sim *s, bool all)
{
    struct sim_account *a = s->account;
    struct sim_asset changed[SIM_MAX_BALANCES + 2 * SIM_MAX_SYMBOLS];
    size_t n = 0;
    /* Copy under the lock, publish after it: publish may block on a
     * saturated sink and balance readers must not wait for that. */
    pthread_mutex_lock(&a->lock);
    for (size_t i = 0; i < a->nassets; i++) {
        if (!all && !a->assets[i].dirty)
            continue;
        a->assets[i].dirty = false;
        changed[n++] = a->assets[i];
        sim_batch_balance(&s->batch, &a->assets[i], a->created_ms);
    }
    pthread_mutex_unlock(&a->lock);
    for (size_t i = 0; i < n; i++) {
        struct event *ev = event_new(EVENT_BALANCE_UPDATE, 0);
        if (!ev)
            continue;
        memcpy(ev->u.balance.asset, changed[i].asset, sizeof ev->u.balance.asset);
        ev->u.balance.total = changed[i].total;
        ev->u.balance.available = changed[i].available;
        sim_publish(s, ev, 0);
    }
}

/* ------------------------------------------------------------- reports */

static bool final_state(enum exec_status st)
{
    return st == EXEC_FILLED || st == EXEC_CANCELLED || st == EXEC_REJECTED || st == EXEC_EXPIRED;
}

static void fill_exec(struct event_exec *x, const struct sim *s, const struct sim_order *o)
{
    x->status = o->state;
    snprintf(x->client_order_id, sizeof x->client_order_id, "%s", o->client_order_id);
    snprintf(x->order_id, sizeof x->order_id, "%s", o->order_id);
    x->side = o->side;
    x->type = o->type;
    x->quantity = o->quantity;
    x->price = o->type == ORDER_LIMIT ? o->price : 0;
    x->filled_quantity = o->filled;
    x->remaining_quantity = o->remaining;
    x->average_price = o->filled > 0 ? o->notional / o->filled : 0;
    if (o->market != SIZE_MAX)
        snprintf(x->fee_asset, sizeof x->fee_asset, "%s", s->markets[o->market].cfg->quote);
    x->dry_run = o->dry_run;
}

/* Moves the order to `st`, tells its instance and records the change. */
static void order_report(struct sim *s, struct sim_order *o, enum exec_status st, double last_qty,
                         double last_price, double fee, const char *reason)
{
    int64_t now = clock_wall_ms();
    o->state = st;
    o->updated_ms = now;
    if (st == EXEC_ACKNOWLEDGED)
        o->acknowledged_ms = now;
    if (final_state(st))
        o->completed_ms = now;
    struct event *ev = event_new(EVENT_EXEC_REPORT, 0);
    if (ev) {
        fill_exec(&ev->u.exec, s, o);
        ev->u.exec.last_quantity = last_qty;
        ev->u.exec.last_price = last_price;
        ev->u.exec.fee = fee;
        snprintf(ev->u.exec.reason, sizeof ev->u.exec.reason, "%s", reason ? reason : "");
        ev->target = o->instance_key;
        sim_publish(s, ev, o->symbol);
    }
    sim_batch_order(&s->batch, o, o->market != SIZE_MAX ? s->markets[o->market].cfg : NULL, reason);
    if (final_state(st))
        risk_order_done(s->risk, o->instance_key); /* no longer open for maxConcurrentOrders */
}

static void remember_done(struct sim *s, const struct sim_order *o)
{
    struct sim_done *d = &s->done[s->ndone++ % SIM_DONE_RING];
    d->instance_key = o->instance_key;
    d->symbol = o->symbol;
    d->state = o->state;
    snprintf(d->client_order_id, sizeof d->client_order_id, "%s", o->client_order_id);
    snprintf(d->order_id, sizeof d->order_id, "%s", o->order_id);
}

__attribute__((format(printf, 3, 4))) static void order_reject(struct sim *s, struct sim_order *o,
                                                               const char *fmt, ...)
{
    char reason[EVENT_REASON_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    order_report(s, o, EXEC_REJECTED, 0, 0, 0, reason);
    remember_done(s, o);
}

/* ------------------------------------------------------------ balances */

static struct sim_asset *paying_asset(struct sim *s, const struct sim_order *o)
{
    const struct sim_market *mk = &s->markets[o->market];
    return account_find(s->account, o->side == SIDE_BUY ? mk->cfg->quote : mk->cfg->base);
}

/* Applies one fill to the account: the traded amounts, the fee, and the
 * share of a limit order's reservation that the fill uses up (all of what
 * is left on its last fill, so no rounding crumbs stay held). */
static void account_fill(struct sim *s, struct sim_order *o, double qty, double price, double fee,
                         bool last)
{
    const struct sim_market *mk = &s->markets[o->market];
    struct sim_asset *base = account_find(s->account, mk->cfg->base);
    struct sim_asset *quote = account_find(s->account, mk->cfg->quote);
    double notional = qty * price;
    double worst = o->side == SIDE_BUY ? qty * o->price * (1 + s->cfg->fee_rate) : qty;
    double release = 0;
    if (o->type == ORDER_LIMIT) {
        release = last ? o->reserved : fmin(o->reserved, worst);
        o->reserved -= release;
    }
    pthread_mutex_lock(&s->account->lock);
    if (o->side == SIDE_BUY) {
        asset_change(quote, -(notional + fee), release - (notional + fee));
        asset_change(base, qty, qty);
    } else {
        asset_change(base, -qty, release - qty);
        asset_change(quote, notional - fee, notional - fee);
    }
    pthread_mutex_unlock(&s->account->lock);
}

/* Gives back what a resting limit order still holds. */
static void account_release(struct sim *s, struct sim_order *o)
{
    if (o->dry_run || o->reserved <= 0)
        return;
    struct sim_asset *as = paying_asset(s, o);
    pthread_mutex_lock(&s->account->lock);
    asset_change(as, 0, o->reserved);
    pthread_mutex_unlock(&s->account->lock);
    o->reserved = 0;
}

/* What a market buy would pay walking the current asks (before fees). */
static double book_cost(const struct sim *s, const struct sim_market *mk, double qty)
{
    double cost = 0;
    for (uint32_t i = 0; i < s->cfg->book_depth && qty > 0; i++) {
        double q = fmin(mk->asks[i].quantity, qty);
        cost += q * mk->asks[i].price;
        qty -= q;
    }
    return cost;
}

/* The quantity the visible asks hold. */
static double book_depth_of(const struct sim *s, const struct sim_market *mk)
{
    double total = 0;
    for (uint32_t i = 0; i < s->cfg->book_depth; i++)
        total += mk->asks[i].quantity;
    return total;
}

/* Checks the balance an order needs and, for a limit order, holds it. */
static int account_reserve(struct sim *s, struct sim_order *o)
{
    const struct sim_market *mk = &s->markets[o->market];
    double fee = 1 + s->cfg->fee_rate;
    double need;
    if (o->side == SIDE_SELL)
        need = o->quantity;
    else if (o->type == ORDER_LIMIT)
        need = o->quantity * o->price * fee;
    else
        need = book_cost(s, mk, o->quantity) * fee;
    struct sim_asset *as = paying_asset(s, o);
    pthread_mutex_lock(&s->account->lock);
    double available = as->available;
    bool enough = need <= available;
    if (enough && o->type == ORDER_LIMIT)
        asset_change(as, 0, -need);
    pthread_mutex_unlock(&s->account->lock);
    if (!enough) {
        /* a market buy larger than the book is priced on the book alone:
         * the rest would expire unfilled */
        bool whole_book =
            o->side == SIDE_BUY && o->type == ORDER_MARKET && book_depth_of(s, mk) < o->quantity;
        order_reject(s, o, "insufficient balance: needs %.10g %s%s, %.10g available", need,
                     as->asset, whole_book ? " for the whole visible book" : "", available);
        return -1;
    }
    o->reserved = o->type == ORDER_LIMIT ? need : 0;
    return 0;
}

/* --------------------------------------------------------------- fills */

static void order_fill(struct sim *s, struct sim_order *o, double qty, double price, bool maker)
{
    bool last = qty >= o->remaining;
    double fee = s->cfg->fee_rate * qty * price;
    o->fills++;
    o->notional += qty * price;
    o->filled = last ? o->quantity : o->filled + qty;
    o->remaining = last ? 0 : o->remaining - qty;
    if (!o->dry_run)
        account_fill(s, o, qty, price, fee, last);
    /* dry-run fills move the position too: the limits treat them alike */
    risk_fill(s->risk, o->instance_key, o->instance_id, s->provider_id, o->symbol,
              o->side == SIDE_BUY ? qty : -qty);
    sim_batch_execution(&s->batch, o, s->markets[o->market].cfg, qty, price, fee, maker,
                        clock_wall_ms());
    order_report(s, o, last ? EXEC_FILLED : EXEC_PARTIAL_FILL, qty, price, fee, "");
}

/* Takes the book's levels on the far side (within the limit price). */
static void take_book(struct sim *s, struct sim_market *mk, struct sim_order *o)
{
    struct book_level *lv = o->side == SIDE_BUY ? mk->asks : mk->bids;
    for (uint32_t i = 0; i < s->cfg->book_depth && o->remaining > 0; i++) {
        if (lv[i].quantity <= 0)
            continue;
        if (o->type == ORDER_LIMIT &&
            (o->side == SIDE_BUY ? lv[i].price > o->price : lv[i].price < o->price))
            break;
        double qty = fmin(lv[i].quantity, o->remaining);
        /* a dry-run order sees the book but leaves it to the real ones */
        if (!o->dry_run)
            lv[i].quantity = qty >= lv[i].quantity ? 0 : lv[i].quantity - qty;
        order_fill(s, o, qty, lv[i].price, false);
    }
}

/* --------------------------------------------------------------- submit */

static size_t find_market(const struct sim *s, uint16_t symbol)
{
    for (size_t i = 0; i < s->nmarkets; i++) {
        if (s->markets[i].id == symbol)
            return i;
    }
    return SIZE_MAX;
}

/* The instance's resting orders on this provider; *duplicate when one of
 * them has `client_order_id` (never for an empty one). */
static size_t resting_of(const struct sim *s, uint32_t key, const char *client_order_id,
                         bool *duplicate)
{
    size_t n = 0;
    *duplicate = false;
    for (size_t i = 0; i < s->nmarkets; i++) {
        for (const struct sim_order *o = s->markets[i].resting; o; o = o->next) {
            if (o->instance_key != key)
                continue;
            n++;
            if (client_order_id[0] && strcmp(o->client_order_id, client_order_id) == 0)
                *duplicate = true;
        }
    }
    return n;
}

static void order_init(struct sim *s, struct sim_order *o, const struct order_request *req)
{
    memset(o, 0, sizeof *o);
    /* MARKET_PROVIDER_NAME_MAX keeps "<provider>-<n>" within the field */
    snprintf(o->order_id, sizeof o->order_id, "%.*s-%llu", MARKET_PROVIDER_NAME_MAX, s->provider,
             (unsigned long long)s->next_order++);
    snprintf(o->client_order_id, sizeof o->client_order_id, "%s", req->client_order_id);
    /* records need an instance id; a request without one still gets a
     * stable name derived from its key */
    if (req->instance_id[0])
        snprintf(o->instance_id, sizeof o->instance_id, "%s", req->instance_id);
    else
        snprintf(o->instance_id, sizeof o->instance_id, "key-%u", (unsigned)req->instance_key);
    o->instance_key = req->instance_key;
    o->symbol = req->symbol;
    o->market = find_market(s, req->symbol);
    o->side = req->side;
    o->type = req->type;
    o->quantity = req->quantity;
    o->remaining = req->quantity;
    o->price = req->type == ORDER_LIMIT ? req->price : 0;
    o->dry_run = req->dry_run;
    o->placed_ms = o->updated_ms = clock_wall_ms();
}

/* Whether v is a whole number of `step`s, at least one, to the rounding of
 * the division (0.3 / 0.1 is 2.9999999999999996): a few units in the last
 * place of the quotient, which v and step, each rounded once from the
 * decimal the author wrote, and the division can move by 1.5 at most. A
 * fixed tolerance would pass a millionth of a step off, or no step at all. */
static bool whole_steps(double v, double step)
{
    double n = v / step;
    double whole = nearbyint(n);
    return whole >= 1 && fabs(n - whole) <= fabs(n) * 8 * DBL_EPSILON;
}

/* strictIncrements: the quantity in whole lots, a limit price in whole
 * ticks, as each symbol's InstrumentUpdate gives them. */
static int increments_check(struct sim *s, struct sim_order *o)
{
    const struct sim_market *mk = &s->markets[o->market];
    if (!whole_steps(o->quantity, mk->lot_size)) {
        order_reject(s, o,
                     "quantity %.15g is not a whole number of lots of %.10g, at least one "
                     "(strictIncrements)",
                     o->quantity, mk->lot_size);
        return -1;
    }
    if (o->type == ORDER_LIMIT && !whole_steps(o->price, mk->tick_size)) {
        order_reject(s, o,
                     "limit price %.15g is not a whole number of ticks of %.10g (strictIncrements)",
                     o->price, mk->tick_size);
        return -1;
    }
    return 0;
}

/* The checks that need no balance: one rejection with the first reason. */
static int order_validate(struct sim *s, struct sim_order *o)
{
    if (o->market == SIZE_MAX) {
        order_reject(s, o, "unknown symbol '%s' on provider '%s'", intern_name(o->symbol),
                     s->provider);
        return -1;
    }
    if (!isfinite(o->quantity) || o->quantity <= 0) {
        order_reject(s, o, "invalid quantity %g: must be a finite number > 0", o->quantity);
        return -1;
    }
    if (o->type == ORDER_LIMIT && (!isfinite(o->price) || o->price <= 0)) {
        order_reject(s, o, "invalid limit price %g: must be a finite number > 0", o->price);
        return -1;
    }
    if (s->cfg->strict_increments && increments_check(s, o) != 0)
        return -1;
    bool duplicate;
    size_t resting = resting_of(s, o->instance_key, o->client_order_id, &duplicate);
    if (duplicate) {
        order_reject(s, o, "duplicate client order id '%s': an open order uses it",
                     o->client_order_id);
        return -1;
    }
    if (o->type == ORDER_LIMIT && resting >= MARKET_SIM_MAX_RESTING) {
        order_reject(s, o, "too many open orders: %zu rest on '%s' (at most %d an instance)",
                     resting, s->provider, MARKET_SIM_MAX_RESTING);
        return -1;
    }
    return 0;
}

static void order_rest(struct sim *s, struct sim_market *mk, struct sim_order *o)
{
    struct sim_order *copy = malloc(sizeof *copy);
    if (!copy) {
        account_release(s, o);
        order_report(s, o, EXEC_EXPIRED, 0, 0, 0, "out of memory: the order cannot rest");
        remember_done(s, o);
        return;
    }
    *copy = *o;
    copy->next = NULL;
    struct sim_order **tail = &mk->resting;
    while (*tail)
        tail = &(*tail)->next;
    *tail = copy;
}

void sim_order_submit(struct sim *s, const struct order_request *req)
{
    struct sim_order o;
    order_init(s, &o, req);
    if (o.market != SIZE_MAX)
        sim_book_fill(&s->markets[o.market]); /* the order may walk the whole book */
    if (order_validate(s, &o) < 0 || (!o.dry_run && account_reserve(s, &o) < 0)) {
        sim_balances_publish(s, false);
        return;
    }
    struct sim_market *mk = &s->markets[o.market];
    order_report(s, &o, EXEC_ACKNOWLEDGED, 0, 0, 0, "");
    take_book(s, mk, &o);
    if (o.remaining <= 0) {
        remember_done(s, &o);
    } else if (o.type == ORDER_MARKET) {
        char reason[EVENT_REASON_MAX];
        snprintf(reason, sizeof reason, "insufficient book depth: %.10g of %.10g unfilled",
                 o.remaining, o.quantity);
        order_report(s, &o, EXEC_EXPIRED, 0, 0, 0, reason);
        remember_done(s, &o);
    } else {
        order_rest(s, mk, &o);
    }
    sim_balances_publish(s, false);
}

/* -------------------------------------------------------------- resting */

static void unlink_order(struct sim_market *mk, struct sim_order *o)
{
    for (struct sim_order **p = &mk->resting; *p; p = &(*p)->next) {
        if (*p == o) {
            *p = o->next;
            return;
        }
    }
}

static bool crosses(const struct sim_order *o, double price)
{
    return o->side == SIDE_BUY ? price <= o->price : price >= o->price;
}

/* Best limit first (highest buy, lowest sell); the list is oldest first and
 * only a strictly better price displaces, so ties go to the older order.
 * budget[dry_run][side]: dry-run orders share out a trade of their own, so
 * that real orders fill exactly as if there were none. */
static struct sim_order *best_crossing(struct sim_market *mk, double price,
                                       const double budget[2][2])
{
    struct sim_order *best = NULL;
    for (struct sim_order *o = mk->resting; o; o = o->next) {
        if (budget[o->dry_run][o->side] <= 0 || !crosses(o, price))
            continue;
        if (!best || (best->side == o->side &&
                      (o->side == SIDE_BUY ? o->price > best->price : o->price < best->price)))
            best = o;
    }
    return best;
}

void sim_orders_on_trade(struct sim *s, struct sim_market *mk, double price, double qty)
{
    if (!mk->resting)
        return;
    double budget[2][2] = {{qty, qty}, {qty, qty}}; /* [dry_run][side] */
    struct sim_order *o;
    while ((o = best_crossing(mk, price, budget)) != NULL) {
        double *left = &budget[o->dry_run][o->side];
        double take = fmin(o->remaining, *left);
        *left = take >= *left ? 0 : *left - take;
        order_fill(s, o, take, o->price, true);
        if (o->remaining <= 0) {
            unlink_order(mk, o);
            remember_done(s, o);
            free(o);
        }
    }
    sim_balances_publish(s, false);
}

void sim_orders_expire_all(struct sim *s, const char *reason)
{
    for (size_t i = 0; i < s->nmarkets; i++) {
        struct sim_order *o = s->markets[i].resting;
        s->markets[i].resting = NULL;
        while (o) {
            struct sim_order *next = o->next;
            account_release(s, o);
            order_report(s, o, EXEC_EXPIRED, 0, 0, 0, reason);
            free(o);
            o = next;
        }
    }
    sim_balances_publish(s, false);
}

/* --------------------------------------------------------------- cancel */

static const struct sim_done *find_done(const struct sim *s, uint32_t key, const char *client_id)
{
    size_t n = s->ndone < SIM_DONE_RING ? s->ndone : SIM_DONE_RING;
    for (size_t i = 0; i < n; i++) {
        const struct sim_done *d = &s->done[(s->ndone - 1 - i) % SIM_DONE_RING];
        if (d->instance_key == key && strcmp(d->client_order_id, client_id) == 0)
            return d;
    }
    return NULL;
}

/* A cancel that finds no open order: its order has settled (the instance
 * asked before that order's final report reached it), and that final
 * report (filled, cancelled, rejected, expired) is the cancel's outcome. A
 * report of its own would tell the strategy the order was rejected, which
 * it was not; so there is none, only a debug line. */
static void note_settled_cancel(const struct sim *s, uint32_t key, const char *client_id)
{
    const struct sim_done *d = find_done(s, key, client_id);
    log_debug("market", "cancel of %s: the order is already %s", client_id,
              d ? event_exec_status_name(d->state) : "settled");
}

void sim_order_cancel(struct sim *s, uint32_t instance_key, const char *client_order_id)
{
    for (size_t i = 0; i < s->nmarkets; i++) {
        struct sim_market *mk = &s->markets[i];
        for (struct sim_order *o = mk->resting; o; o = o->next) {
            if (o->instance_key != instance_key || strcmp(o->client_order_id, client_order_id) != 0)
                continue;
            unlink_order(mk, o);
            account_release(s, o);
            order_report(s, o, EXEC_CANCELLED, 0, 0, 0, "cancelled on request");
            remember_done(s, o);
            free(o);
            sim_balances_publish(s, false);
            return;
        }
    }
    note_settled_cancel(s, instance_key, client_order_id);
}

/* Cancels the resting orders of one instance, or of every instance when
 * `every`: each is reported cancelled with `reason`, its funds released. */
static void cancel_resting(struct sim *s, bool every, uint32_t instance_key, const char *reason)
{
    bool any = false;
    for (size_t i = 0; i < s->nmarkets; i++) {
        struct sim_order **p = &s->markets[i].resting;
        while (*p) {
            struct sim_order *o = *p;
            if (!every && o->instance_key != instance_key) {
                p = &o->next;
                continue;
            }
            *p = o->next;
            account_release(s, o);
            order_report(s, o, EXEC_CANCELLED, 0, 0, 0, reason);
            remember_done(s, o);
            free(o);
            any = true;
        }
    }
    if (any)
        sim_balances_publish(s, false);
}

void sim_orders_cancel_instance(struct sim *s, uint32_t instance_key, const char *reason)
{
    cancel_resting(s, false, instance_key, reason);
}

void sim_orders_cancel_all(struct sim *s, const char *reason)
{
    cancel_resting(s, true, 0, reason);
}
