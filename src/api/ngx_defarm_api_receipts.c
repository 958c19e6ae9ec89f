
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "api/ngx_defarm_api.h"
#include "pg/ngx_defarm_pg.h"
#include "auth/ngx_defarm_auth.h"
#include "items/ngx_defarm_items.h"


/*
 * /api/receipts: proof that a document with a given SHA-256 was presented
 * (the original hashed with BLAKE3 and kept nothing; here the receipt and
 * its identifiers are stored, the document is not).  Every route needs a
 * principal; a receipt is its issuer's (another user's is a 404).
 */


typedef struct {
    ngx_str_t                  params[4];
    ngx_str_t                  hash;          /* verify: the given data's */
} ngx_defarm_receipts_req_t;


static ngx_int_t ngx_defarm_receipts_issue(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_receipts_get(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_receipts_verify(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_receipts_search(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);

static ngx_int_t ngx_defarm_receipts_verified(ngx_http_request_t *r,
    void *data, PGresult *res);


ngx_defarm_route_t  ngx_defarm_receipts_routes[] = {

    { NGX_HTTP_POST, ngx_string("/api/receipts"),
      ngx_defarm_receipts_issue,
      NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/receipts/list"),
      ngx_defarm_receipts_search, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/receipts/search/identifier"),
      ngx_defarm_receipts_search,
      NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/receipts/search/key/:key"),
      ngx_defarm_receipts_search, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/receipts/search/value/:value"),
      ngx_defarm_receipts_search, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/receipts/:id"),
      ngx_defarm_receipts_get, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/receipts/:id/verify"),
      ngx_defarm_receipts_verify,
      NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    ngx_defarm_route_null
};


static ngx_defarm_pg_stmt_t  ngx_defarm_receipts_issue_stmt = {
    "defarm_receipts_issue",
    "SELECT defarm_receipt_issue($1, $2, $3::bigint, $4::jsonb)::text",
    4, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_receipts_get_stmt = {
    "defarm_receipts_get",
    "SELECT defarm_receipt_json(id)::text, hash, "
           "floor(extract(epoch FROM created_at))::bigint "
    "FROM receipts WHERE id = $2::uuid "
      "AND (owner_id = $1 OR defarm_is_admin($1))",
    2, 0
};

/* the caller's receipts, newest first, by identifier key and/or value */

static ngx_defarm_pg_stmt_t  ngx_defarm_receipts_search_stmt = {
    "defarm_receipts_search",
    "SELECT coalesce(jsonb_agg(defarm_receipt_json(p.id) "
                              "ORDER BY p.created_at DESC, p.id), "
                    "'[]')::text "
    "FROM (SELECT r.id, r.created_at FROM receipts r "
          "WHERE r.owner_id = $1 "
            "AND ($2::text IS NULL AND $3::text IS NULL OR EXISTS ("
                "SELECT 1 FROM receipt_identifiers ri "
                "WHERE ri.receipt_id = r.id "
                  "AND ($2::text IS NULL OR ri.key = $2) "
                  "AND ($3::text IS NULL OR ri.value = $3))) "
          "ORDER BY r.created_at DESC, r.id LIMIT 100) p",
    3, 0
};


static ngx_defarm_receipts_req_t *
ngx_defarm_receipts_req(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_defarm_receipts_req_t  *rr;

    rr = ngx_pcalloc(r->pool, sizeof(ngx_defarm_receipts_req_t));
    if (rr == NULL) {
        return NULL;
    }

    rr->params[0] = ctx->user_id;

    return rr;
}


/* the body's "data", standard base64, decoded and hashed */

static ngx_int_t
ngx_defarm_receipts_data(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx,
    ngx_str_t *hash, size_t *size)
{
    ngx_str_t           decoded;
    ngx_defarm_json_t  *v;

    v = ngx_defarm_json_get(ctx->body, "data");

    if (v == NULL || v->type != NGX_DEFARM_JSON_STRING) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "\"data\" (base64) is required");
    }

    decoded.data = ngx_pnalloc(r->pool,
                               ngx_base64_decoded_length(v->str.len) + 1);
    if (decoded.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_decode_base64(&decoded, &v->str) != NGX_OK) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "Invalid base64 data");
    }

    if (ngx_defarm_sha256_hex(r->pool, decoded.data, decoded.len, hash)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    *size = decoded.len;

    return NGX_DECLINED;
}


/* POST /api/receipts {data, identifiers} */


static ngx_int_t
ngx_defarm_receipts_issue(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    size_t                      size;
    ngx_int_t                   rc;
    ngx_str_t                   err;
    ngx_defarm_json_t          *ids;
    ngx_defarm_receipts_req_t  *rr;

    if (ctx->body == NULL || ctx->body->type != NGX_DEFARM_JSON_OBJECT) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "The body must be a JSON object");
    }

    rr = ngx_defarm_receipts_req(r, ctx);
    if (rr == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_defarm_receipts_data(r, ctx, &rr->params[1], &size);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    ids = ngx_defarm_json_get(ctx->body, "identifiers");

    if (ids == NULL || ids->type != NGX_DEFARM_JSON_ARRAY
        || ids->count == 0)
    {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "At least one identifier is required");
    }

    rc = ngx_defarm_identifiers(r, ids, &rr->params[3], &err);

    if (rc == NGX_DECLINED) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION, "%V", &err);
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rr->params[2].data = ngx_pnalloc(r->pool, NGX_SIZE_T_LEN);
    if (rr->params[2].data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rr->params[2].len = ngx_sprintf(rr->params[2].data, "%uz", size)
                        - rr->params[2].data;

    return ngx_defarm_pg_query(r, &ngx_defarm_receipts_issue_stmt,
                               rr->params, ngx_defarm_api_json, "Receipt");
}


/* GET /api/receipts/:id, POST /api/receipts/:id/verify {data} */


static ngx_int_t
ngx_defarm_receipts_target(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx,
    ngx_defarm_receipts_req_t **rrp)
{
    ngx_str_t                  *id;
    ngx_defarm_receipts_req_t  *rr;

    id = ngx_defarm_param(ctx, "id");

    if (id == NULL || !ngx_defarm_is_uuid(id)) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "Invalid receipt id: a UUID is expected");
    }

    rr = ngx_defarm_receipts_req(r, ctx);
    if (rr == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rr->params[1] = *id;
    *rrp = rr;

    return NGX_DECLINED;
}


static ngx_int_t
ngx_defarm_receipts_get(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_int_t                   rc;
    ngx_defarm_receipts_req_t  *rr;

    rc = ngx_defarm_receipts_target(r, ctx, &rr);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_receipts_get_stmt, rr->params,
                               ngx_defarm_api_json, "Receipt");
}


static ngx_int_t
ngx_defarm_receipts_verify(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx)
{
    size_t                      size;
    ngx_int_t                   rc;
    ngx_defarm_receipts_req_t  *rr;

    rc = ngx_defarm_receipts_target(r, ctx, &rr);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    if (ctx->body == NULL || ctx->body->type != NGX_DEFARM_JSON_OBJECT) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "The body must be a JSON object");
    }

    rc = ngx_defarm_receipts_data(r, ctx, &rr->hash, &size);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_receipts_get_stmt, rr->params,
                               ngx_defarm_receipts_verified, rr);
}


static ngx_int_t
ngx_defarm_receipts_verified(ngx_http_request_t *r, void *data,
    PGresult *res)
{
    ngx_defarm_receipts_req_t  *rr = data;

    ngx_str_t                  hash, ts;
    ngx_defarm_json_writer_t  *w;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        return ngx_defarm_pg_sql_error(r, res);
    }

    if (PQntuples(res) == 0) {
        return ngx_defarm_error(r, NGX_HTTP_NOT_FOUND,
                                NGX_DEFARM_ERR_NOT_FOUND,
                                "Receipt not found");
    }

    (void) ngx_defarm_pg_text(res, 0, 1, &hash);
    (void) ngx_defarm_pg_text(res, 0, 2, &ts);

    w = ngx_defarm_json_writer(r);
    if (w == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_defarm_jw_map_open(w);
    ngx_defarm_jw_key(w, "is_valid");
    ngx_defarm_jw_bool(w, hash.len == rr->hash.len
                          && ngx_strncmp(hash.data, rr->hash.data, hash.len)
                             == 0);
    ngx_defarm_jw_key(w, "receipt_id");
    ngx_defarm_jw_str(w, &rr->params[1]);
    ngx_defarm_jw_key(w, "original_hash");
    ngx_defarm_jw_str(w, &hash);
    ngx_defarm_jw_key(w, "provided_hash");
    ngx_defarm_jw_str(w, &rr->hash);
    ngx_defarm_jw_key(w, "timestamp");
    ngx_defarm_jw_int(w, ngx_atotm(ts.data, ts.len));
    ngx_defarm_jw_map_close(w);

    return ngx_defarm_send(r, NGX_HTTP_OK, w);
}


/* list, and searches by identifier (a body), key or value (the path) */


static ngx_int_t
ngx_defarm_receipts_search(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx)
{
    ngx_str_t                  *v;
    ngx_defarm_json_t          *key, *value;
    ngx_defarm_receipts_req_t  *rr;

    rr = ngx_defarm_receipts_req(r, ctx);
    if (rr == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if ((v = ngx_defarm_param(ctx, "key")) != NULL) {
        rr->params[1] = *v;

    } else if ((v = ngx_defarm_param(ctx, "value")) != NULL) {
        rr->params[2] = *v;

    } else if (r->method == NGX_HTTP_POST) {
        key = ngx_defarm_json_get(ctx->body, "key");
        value = ngx_defarm_json_get(ctx->body, "value");

        if (key == NULL || key->type != NGX_DEFARM_JSON_STRING
            || value == NULL || value->type != NGX_DEFARM_JSON_STRING)
        {
            return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                    NGX_DEFARM_ERR_VALIDATION,
                                    "The body must be an identifier with "
                                    "\"key\" and \"value\"");
        }

        rr->params[1] = key->str;
        rr->params[2] = value->str;
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_receipts_search_stmt,
                               rr->params, ngx_defarm_api_json, "Receipt");
}
