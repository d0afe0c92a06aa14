/* Runtime risk limits: GET and PUT /risk/limits, thin adapters to the
 * market, which validates, persists, applies and enforces them
 * (market_risk_json, market_risk_set). A GET also lists the symbols the
 * circuit breaker halts now (`halts`, beside the contract's `limits`). A
 * PUT is audited with the limits before and after. */
#include "api/internal.h"

static int no_market(struct err *err)
{
    err_set(err, ERR_UNAVAILABLE, "no market is connected");
    return -1;
}

static int out_of_memory(struct err *err)
{
    err_set(err, ERR_INTERNAL, "out of memory");
    return -1;
}

int api_handle_risk_get(struct api *api, struct api_request *req, struct api_response *res,
                        struct err *err)
{
    (void)req;
    if (!api->opts.market)
        return no_market(err);
    json_t *limits = market_risk_json(api->opts.market);
    json_t *halts = market_risk_halts_json(api->opts.market);
    json_t *body = NULL;
    if (limits && halts) { /* json_pack takes both, even when it fails */
        body = json_pack("{s:o, s:o}", "limits", limits, "halts", halts);
    } else {
        json_decref(limits);
        json_decref(halts);
    }
    if (!body)
        return out_of_memory(err);
    api_respond_json(res, 200, body);
    return 0;
}

/* PUT takes a whole RiskConfig and replaces the limits; a bad body changes
 * nothing (400 naming the field). */
int api_handle_risk_put(struct api *api, struct api_request *req, struct api_response *res,
                        struct err *err)
{
    if (!api->opts.market)
        return no_market(err);
    json_t *body = NULL;
    if (api_body_object(req, false, &body, err) != 0) {
        if (err->kind == ERR_INVALID && !json_object_get(err->details, "field"))
            err_add_detail(err, "field", json_string("body"));
        return -1;
    }
    /* "from" is what this PUT replaced and "to" what it installed (the body
     * as given), both fixed under the limits' lock, whatever PUTs run beside */
    json_t *before = NULL;
    int rc = market_risk_set(api->opts.market, body, &before, err);
    if (rc == 0) {
        api_audit(api, req, "risk.update", json_pack("{s:O?, s:O}", "from", before, "to", body));
        json_t *answer = json_pack("{s:s, s:O}", "status", "applied", "limits", body);
        if (answer)
            api_respond_json(res, 200, answer);
        else
            rc = out_of_memory(err);
    }
    json_decref(before);
    json_decref(body);
    return rc;
}
