
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "auth/ngx_defarm_charge.h"
#include "pg/ngx_defarm_pg.h"


/*
 * The api_request cost (defarm_credits on): a request by API key of a
 * tier that pays for its requests is debited before its route runs, in a
 * transaction of its own (the debit names the route and the trace id),
 * and refused 402 when the balance cannot pay.  A request the module then
 * answers with a 5xx did not happen for its client: its debit is given
 * back (a Refund in the ledger) once the answer is sent, in the
 * background.  Requests by a user's token are the web application's own
 * and are not charged.
 */


typedef struct {
    ngx_defarm_ctx_t          *ctx;
    ngx_defarm_handler_pt      next;
} ngx_defarm_charge_t;


static ngx_int_t ngx_defarm_charge_done(ngx_http_request_t *r, void *data,
    PGresult *res);
static ngx_int_t ngx_defarm_charge_log(ngx_http_request_t *r);
static ngx_int_t ngx_defarm_charge_reference(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx, ngx_str_t *ref);


static ngx_defarm_pg_stmt_t  ngx_defarm_charge_stmt = {
    "defarm_charge_request",
    "SELECT defarm_credit_charge($1, 'api_request', $2, 'API request')",
    2, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_charge_refund_stmt = {
    "defarm_charge_refund",
    "SELECT defarm_credit_change($1, t.amount * -1, 'Refund', "
           "'api_request', $2, 'API request failed', NULL) "
    "FROM credit_transactions t "
    "WHERE t.user_id = $1 AND t.reference_id = $2 "
      "AND t.operation = 'api_request' AND t.transaction_type = "
      "'Consumption' "
    "ORDER BY t.seq DESC LIMIT 1",
    2, 0
};


ngx_int_t
ngx_defarm_charge_request(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx,
    ngx_int_t cost, ngx_defarm_handler_pt next)
{
    ngx_str_t               *params;
    ngx_defarm_charge_t     *ch;
    ngx_defarm_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_defarm_module);

    if (!mcf->credits || cost <= 0) {
        return next(r, ctx);
    }

    ch = ngx_palloc(r->pool, sizeof(ngx_defarm_charge_t));
    params = ngx_pcalloc(r->pool, 2 * sizeof(ngx_str_t));
    if (ch == NULL || params == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ch->ctx = ctx;
    ch->next = next;

    params[0] = ctx->user_id;

    if (ngx_defarm_charge_reference(r, ctx, &params[1]) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_charge_stmt, params,
                               ngx_defarm_charge_done, ch);
}


static ngx_int_t
ngx_defarm_charge_done(ngx_http_request_t *r, void *data, PGresult *res)
{
    ngx_defarm_charge_t  *ch = data;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        return ngx_defarm_pg_sql_error(r, res);     /* 402 among them */
    }

    ch->ctx->api_charged = 1;

    return ch->next(r, ch->ctx);
}


/* "<route> <trace id>": what the ledger row names */

static ngx_int_t
ngx_defarm_charge_reference(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx,
    ngx_str_t *ref)
{
    ngx_str_t                   route;
    ngx_http_variable_value_t  *vv;
    ngx_defarm_main_conf_t     *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_defarm_module);
    vv = ngx_http_get_indexed_variable(r, mcf->request_id_index);

    if (vv == NULL || vv->not_found) {
        return NGX_ERROR;
    }

    route = ctx->route ? ctx->route->pattern : r->uri;

    ref->len = route.len + 1 + vv->len;
    ref->data = ngx_pnalloc(r->pool, ref->len);
    if (ref->data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(ref->data, "%V %*s", &route, (size_t) vv->len, vv->data);

    return NGX_OK;
}


/* the log phase: a charged request answered 5xx gets its debit back */

static ngx_int_t
ngx_defarm_charge_log(ngx_http_request_t *r)
{
    ngx_str_t         *params;
    ngx_defarm_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_defarm_module);

    if (ctx == NULL || !ctx->api_charged
        || r->headers_out.status < NGX_HTTP_INTERNAL_SERVER_ERROR)
    {
        return NGX_OK;
    }

    params = ngx_pcalloc(r->pool, 2 * sizeof(ngx_str_t));
    if (params == NULL) {
        return NGX_OK;
    }

    params[0] = ctx->user_id;

    if (ngx_defarm_charge_reference(r, ctx, &params[1]) != NGX_OK) {
        return NGX_OK;
    }

    /* copied by the background query: the request goes after this */

    (void) ngx_defarm_pg_background(&ngx_defarm_charge_refund_stmt, params,
                                    NULL, NULL);

    return NGX_OK;
}


ngx_int_t
ngx_defarm_charge_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_defarm_charge_log;

    return NGX_OK;
}
