
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "api/ngx_defarm_api.h"
#include "pg/ngx_defarm_pg.h"
#include "auth/ngx_defarm_auth.h"
#include "items/ngx_defarm_items.h"


/*
 * /api/items/pending: creates held because their identifiers match
 * several items (the original discarded them), listed, read and resolved
 * (approve, modify, reject) by their owner (sql/011_pending_items.sql).
 */


typedef struct {
    ngx_str_t                  params[5];
} ngx_defarm_pending_req_t;


static ngx_int_t ngx_defarm_pending_list(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_pending_get(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_pending_resolve(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_pending_answer(ngx_http_request_t *r,
    void *data, PGresult *res);


ngx_defarm_route_t  ngx_defarm_pending_routes[] = {

    { NGX_HTTP_GET, ngx_string("/api/items/pending"),
      ngx_defarm_pending_list, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/items/pending/:id"),
      ngx_defarm_pending_get, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/items/pending/:id/resolve"),
      ngx_defarm_pending_resolve,
      NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    ngx_defarm_route_null
};


static ngx_defarm_pg_stmt_t  ngx_defarm_pending_list_stmt = {
    "defarm_pending_list",
    "SELECT 'ok', coalesce(jsonb_agg(defarm_pending_json(p) "
                                    "ORDER BY p.priority DESC, "
                                             "p.created_at), "
                          "'[]')::text "
    "FROM pending_items p WHERE p.id IN ("
        "SELECT q.id FROM pending_items q "
        "WHERE q.owner_id = $1 AND q.status = 'Pending' "
          "AND ($2::text IS NULL OR q.reason = $2) "
          "AND q.priority >= $3::int "
        "ORDER BY q.priority DESC, q.created_at LIMIT $4::int)",
    4, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_pending_get_stmt = {
    "defarm_pending_get",
    "SELECT 'ok', defarm_pending_json(p)::text FROM pending_items p "
    "WHERE p.id = $2::uuid AND p.owner_id = $1",
    2, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_pending_resolve_stmt = {
    "defarm_pending_resolve",
    "SELECT outcome, answer::text, answer->'item'->>'dfid' "
    "FROM defarm_pending_resolve($1, $2::uuid, $3, $4::jsonb, $5::jsonb)",
    5, 0
};


static ngx_defarm_pending_req_t *
ngx_defarm_pending_req(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_defarm_pending_req_t  *pr;

    pr = ngx_pcalloc(r->pool, sizeof(ngx_defarm_pending_req_t));
    if (pr == NULL) {
        return NULL;
    }

    pr->params[0] = ctx->user_id;

    return pr;
}


static ngx_int_t
ngx_defarm_pending_invalid(ngx_http_request_t *r, const char *msg)
{
    return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                            NGX_DEFARM_ERR_VALIDATION, "%s", msg);
}


/* GET /api/items/pending?reason&priority_min=1..4&limit=1..100 */

static ngx_int_t
ngx_defarm_pending_list(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_int_t                  n;
    ngx_str_t                  arg;
    ngx_defarm_pending_req_t  *pr;

    pr = ngx_defarm_pending_req(r, ctx);
    if (pr == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_arg(r, (u_char *) "reason", 6, &arg) == NGX_OK
        && arg.len)
    {
        pr->params[1] = arg;
    }

    ngx_str_set(&pr->params[2], "1");
    ngx_str_set(&pr->params[3], "50");

    if (ngx_http_arg(r, (u_char *) "priority_min", 12, &arg) == NGX_OK) {
        n = ngx_atoi(arg.data, arg.len);

        if (n < 1 || n > 4) {
            return ngx_defarm_pending_invalid(r, "\"priority_min\" must be "
                                                 "1 to 4");
        }

        pr->params[2] = arg;
    }

    if (ngx_http_arg(r, (u_char *) "limit", 5, &arg) == NGX_OK) {
        n = ngx_atoi(arg.data, arg.len);

        if (n < 1 || n > 100) {
            return ngx_defarm_pending_invalid(r, "\"limit\" must be 1 to "
                                                 "100");
        }

        pr->params[3] = arg;
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_pending_list_stmt, pr->params,
                               ngx_defarm_pending_answer, pr);
}


static ngx_int_t
ngx_defarm_pending_target(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx,
    ngx_defarm_pending_req_t **prp)
{
    ngx_str_t                 *id;
    ngx_defarm_pending_req_t  *pr;

    id = ngx_defarm_param(ctx, "id");

    if (id == NULL || !ngx_defarm_is_uuid(id)) {
        return ngx_defarm_pending_invalid(r, "Invalid pending item id: a "
                                             "UUID is expected");
    }

    pr = ngx_defarm_pending_req(r, ctx);
    if (pr == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    pr->params[1] = *id;
    *prp = pr;

    return NGX_DECLINED;
}


/* GET /api/items/pending/:id */

static ngx_int_t
ngx_defarm_pending_get(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_int_t                  rc;
    ngx_defarm_pending_req_t  *pr;

    rc = ngx_defarm_pending_target(r, ctx, &pr);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_pending_get_stmt, pr->params,
                               ngx_defarm_pending_answer, pr);
}


/*
 * POST /api/items/pending/:id/resolve {action: approve|reject|modify,
 * new_identifiers?, new_enriched_data?}
 */

static ngx_int_t
ngx_defarm_pending_resolve(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_int_t                  rc;
    ngx_str_t                  err;
    ngx_uint_t                 modify;
    ngx_defarm_json_t         *v;
    ngx_defarm_pending_req_t  *pr;

    rc = ngx_defarm_pending_target(r, ctx, &pr);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    v = ngx_defarm_json_get(ctx->body, "action");

    if (v == NULL || v->type != NGX_DEFARM_JSON_STRING
        || !((v->str.len == 7 && ngx_strncmp(v->str.data, "approve", 7) == 0)
             || (v->str.len == 6
                 && ngx_strncmp(v->str.data, "reject", 6) == 0)
             || (v->str.len == 6
                 && ngx_strncmp(v->str.data, "modify", 6) == 0)))
    {
        return ngx_defarm_pending_invalid(r, "\"action\" must be approve, "
                                             "reject or modify");
    }

    pr->params[2] = v->str;
    modify = (v->str.data[0] == 'm');
    rc = NGX_OK;

    v = ngx_defarm_json_get(ctx->body, "new_identifiers");

    if (modify && v && v->type != NGX_DEFARM_JSON_NULL) {
        if (v->type != NGX_DEFARM_JSON_ARRAY || v->count == 0) {
            return ngx_defarm_pending_invalid(r, "\"new_identifiers\" must "
                                                 "be a non-empty array");
        }

        rc = ngx_defarm_identifiers(r, v, &pr->params[3], &err);
    }

    v = ngx_defarm_json_get(ctx->body, "new_enriched_data");

    if (rc == NGX_OK && modify && v && v->type != NGX_DEFARM_JSON_NULL) {
        rc = ngx_defarm_enriched_data(r, v, &pr->params[4], &err);
    }

    if (rc == NGX_DECLINED) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION, "%V", &err);
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (modify && pr->params[3].data == NULL && pr->params[4].data == NULL) {
        return ngx_defarm_pending_invalid(r, "modify needs "
                                             "\"new_identifiers\" or "
                                             "\"new_enriched_data\"");
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_pending_resolve_stmt,
                               pr->params, ngx_defarm_pending_answer, pr);
}


static ngx_int_t
ngx_defarm_pending_answer(ngx_http_request_t *r, void *data, PGresult *res)
{
    ngx_str_t  outcome, json, dfid;

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) > 1) {
        return ngx_defarm_pg_sql_error(r, res);
    }

    if (PQntuples(res) == 0) {
        return ngx_defarm_error(r, NGX_HTTP_NOT_FOUND,
                                NGX_DEFARM_ERR_NOT_FOUND,
                                "Pending item not found");
    }

    (void) ngx_defarm_pg_text(res, 0, 0, &outcome);

    if (outcome.len == 9 && ngx_strncmp(outcome.data, "not_found", 9) == 0)
    {
        return ngx_defarm_error(r, NGX_HTTP_NOT_FOUND,
                                NGX_DEFARM_ERR_NOT_FOUND,
                                "Pending item not found");
    }

    if (outcome.len == 8 && ngx_strncmp(outcome.data, "resolved", 8) == 0) {
        return ngx_defarm_error(r, NGX_HTTP_CONFLICT, NGX_DEFARM_ERR_CONFLICT,
                                "The pending item is resolved already");
    }

    if (outcome.len == 8 && ngx_strncmp(outcome.data, "conflict", 8) == 0) {
        return ngx_defarm_error(r, NGX_HTTP_CONFLICT, NGX_DEFARM_ERR_CONFLICT,
                                "The identifiers still match several "
                                "items; the pending item was updated");
    }

    /* an item the resolution enriched: its cached JSON goes */

    if (PQnfields(res) > 2 && ngx_defarm_pg_text(res, 0, 2, &dfid) == NGX_OK
        && ngx_defarm_item_forget(r, &dfid) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_defarm_pg_text(res, 0, 1, &json) != NGX_OK) {
        return ngx_defarm_error(r, NGX_HTTP_NOT_FOUND,
                                NGX_DEFARM_ERR_NOT_FOUND,
                                "Pending item not found");
    }

    return ngx_defarm_send_text(r, NGX_HTTP_OK, &json);
}
