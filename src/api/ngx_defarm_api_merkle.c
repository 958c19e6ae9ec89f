
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "api/ngx_defarm_api_fn.h"
#include "ngx_defarm_response.h"


/*
 * Merkle trees (sql/041): an item's root over its events, a circuit's
 * root over its items' roots, inclusion proofs, their verification and a
 * circuit's sync check; the public variants answer only for items
 * published in a circuit the public may see.  The trees are kept up to
 * date as events are written, so a route reads a stored root or the
 * O(log n) nodes of a proof.  Route functions; route i runs statement i.
 * An item's proof, the one read often, comes from PostgreSQL as columns
 * and is written here (ngx_defarm_merkle_proof_done).
 */


static ngx_int_t ngx_defarm_merkle_run(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_merkle_proof_run(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_merkle_proof_done(ngx_http_request_t *r,
    void *data, PGresult *res);


ngx_defarm_route_t  ngx_defarm_merkle_routes[] = {

    { NGX_HTTP_GET, ngx_string("/api/merkle/items/:id/merkle-root"),
      ngx_defarm_merkle_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET,
      ngx_string("/api/merkle/items/:id/merkle-proof/:event_id"),
      ngx_defarm_merkle_proof_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/merkle/circuits/:id/merkle-root"),
      ngx_defarm_merkle_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/merkle/circuits/:id/merkle-proof/:dfid"),
      ngx_defarm_merkle_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/merkle/verify-proof"),
      ngx_defarm_merkle_run,
      NGX_DEFARM_ROUTE_PRINCIPAL|NGX_DEFARM_ROUTE_BODY },

    { NGX_HTTP_POST, ngx_string("/api/merkle/circuits/:id/sync-check"),
      ngx_defarm_merkle_run,
      NGX_DEFARM_ROUTE_PRINCIPAL|NGX_DEFARM_ROUTE_BODY },

    { NGX_HTTP_GET, ngx_string("/api/public/merkle/items/:id/merkle-root"),
      ngx_defarm_merkle_run, 0 },

    { NGX_HTTP_GET,
      ngx_string("/api/public/merkle/items/:id/merkle-proof/:event_id"),
      ngx_defarm_merkle_run, 0 },

    { NGX_HTTP_GET,
      ngx_string("/api/public/merkle/circuits/:id/merkle-root"),
      ngx_defarm_merkle_run, 0 },

    { NGX_HTTP_GET,
      ngx_string("/api/public/merkle/circuits/:id/merkle-proof/:dfid"),
      ngx_defarm_merkle_run, 0 },

    { NGX_HTTP_POST, ngx_string("/api/public/merkle/verify-proof"),
      ngx_defarm_merkle_run, NGX_DEFARM_ROUTE_BODY },

    ngx_defarm_route_null
};


static ngx_defarm_pg_stmt_t  ngx_defarm_merkle_stmt[] = {
    ngx_defarm_fn_stmt("defarm_merkle_item_root_get"),
    ngx_defarm_fn_stmt("defarm_merkle_item_proof_get"),   /* after 044 */
    ngx_defarm_fn_stmt("defarm_merkle_circuit_root_get"),
    ngx_defarm_fn_stmt("defarm_merkle_circuit_proof_get"),
    ngx_defarm_fn_stmt("defarm_merkle_verify"),
    ngx_defarm_fn_stmt("defarm_merkle_sync_check"),
    ngx_defarm_fn_stmt("defarm_public_merkle_item_root"),
    ngx_defarm_fn_stmt("defarm_public_merkle_item_proof"),
    ngx_defarm_fn_stmt("defarm_public_merkle_circuit_root"),
    ngx_defarm_fn_stmt("defarm_public_merkle_circuit_proof"),
    ngx_defarm_fn_stmt("defarm_merkle_verify")
};

static ngx_defarm_pg_stmt_t  *ngx_defarm_merkle_stmts[] = {
    &ngx_defarm_merkle_stmt[0], &ngx_defarm_merkle_stmt[1],
    &ngx_defarm_merkle_stmt[2], &ngx_defarm_merkle_stmt[3],
    &ngx_defarm_merkle_stmt[4], &ngx_defarm_merkle_stmt[5],
    &ngx_defarm_merkle_stmt[6], &ngx_defarm_merkle_stmt[7],
    &ngx_defarm_merkle_stmt[8], &ngx_defarm_merkle_stmt[9],
    &ngx_defarm_merkle_stmt[10]
};


static ngx_int_t
ngx_defarm_merkle_run(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    return ngx_defarm_fn_run(r, ctx, ngx_defarm_merkle_routes,
                             ngx_defarm_merkle_stmts,
                             sizeof(ngx_defarm_merkle_stmts)
                             / sizeof(ngx_defarm_pg_stmt_t *));
}


/*
 * sql/044's defarm_merkle_item_proof_fast answers a row for a proof the
 * caller may have: the proof's parts, its JSON strings escaped by
 * PostgreSQL.  No row otherwise: then the route's function answers the
 * case, as every route function does (statement 1 of the table above,
 * marked "after 044").
 */

static ngx_defarm_pg_stmt_t  ngx_defarm_merkle_proof_stmt = {
    "defarm_merkle_item_proof_fast",
    "SELECT * FROM defarm_merkle_item_proof_fast($1, $2, $3::jsonb, $4)",
    4, 0
};


enum {
    NGX_DEFARM_MP_DFID = 0,
    NGX_DEFARM_MP_EVENT,
    NGX_DEFARM_MP_LEAF,
    NGX_DEFARM_MP_LEAF_DATA,
    NGX_DEFARM_MP_INDEX,
    NGX_DEFARM_MP_COUNT,
    NGX_DEFARM_MP_PATH,
    NGX_DEFARM_MP_ROOT,
    NGX_DEFARM_MP_UPDATED,
    NGX_DEFARM_MP_COLUMNS
};


static ngx_int_t
ngx_defarm_merkle_proof_run(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_defarm_fn_req_t  *fr;

    fr = ngx_defarm_fn_req(r, ctx);
    if (fr == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_defarm_pg_query_read(r, &ngx_defarm_merkle_proof_stmt,
                                    fr->params, ngx_defarm_merkle_proof_done,
                                    fr);
}


/*
 * The same bytes as defarm_merkle_item_proof_answer() makes in SQL; the
 * path a step per 64 hex digits, from the leaf up, the sibling on the
 * right when the node's index at that level is even.
 */

static ngx_int_t
ngx_defarm_merkle_proof_done(ngx_http_request_t *r, void *data,
    PGresult *res)
{
    u_char               *p;
    size_t                len;
    ngx_str_t             v[NGX_DEFARM_MP_COLUMNS], body;
    ngx_int_t             pos;
    ngx_uint_t            i, k, steps;
    ngx_defarm_fn_req_t  *fr;

    fr = data;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        return ngx_defarm_pg_sql_error(r, res);
    }

    if (PQntuples(res) == 0) {
        return ngx_defarm_pg_query_read(r, &ngx_defarm_merkle_stmt[1],
                                        fr->params, ngx_defarm_fn_done, fr);
    }

    if (PQntuples(res) != 1 || PQnfields(res) != NGX_DEFARM_MP_COLUMNS) {
        goto broken;
    }

    len = sizeof("{\"proof_type\":\"event_in_item\","
                 "\"hash_algorithm\":\"SHA-256\",\"dfid\":"
                 ",\"event_id\":\"\",\"leaf_hash\":\"\""
                 ",\"leaf_data\":,\"leaf_index\":,\"leaf_count\":"
                 ",\"path\":[],\"merkle_root\":\"\""
                 ",\"root_updated_at\":}") - 1;

    for (i = NGX_DEFARM_MP_DFID; i < NGX_DEFARM_MP_COLUMNS; i++) {
        if (ngx_defarm_pg_text(res, 0, i, &v[i]) != NGX_OK
            && i != NGX_DEFARM_MP_LEAF_DATA)
        {
            goto broken;
        }

        len += v[i].len;
    }

    pos = ngx_atoi(v[NGX_DEFARM_MP_INDEX].data, v[NGX_DEFARM_MP_INDEX].len);

    if (pos == NGX_ERROR || v[NGX_DEFARM_MP_PATH].len % 64) {
        goto broken;
    }

    steps = v[NGX_DEFARM_MP_PATH].len / 64;
    len += steps * sizeof(",{\"hash\":\"\",\"position\":\"right\"}");

    body.data = ngx_pnalloc(r->pool, len);
    if (body.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(body.data, "{\"proof_type\":\"event_in_item\","
                   "\"hash_algorithm\":\"SHA-256\",\"dfid\":",
                   sizeof("{\"proof_type\":\"event_in_item\","
                          "\"hash_algorithm\":\"SHA-256\",\"dfid\":")
                   - 1);
    p = ngx_sprintf(p, "%V,\"event_id\":\"%V\",\"leaf_hash\":\"%V\"",
                    &v[NGX_DEFARM_MP_DFID], &v[NGX_DEFARM_MP_EVENT],
                    &v[NGX_DEFARM_MP_LEAF]);

    /* the leaf's data only to whoever may read the event */

    if (v[NGX_DEFARM_MP_LEAF_DATA].data) {
        p = ngx_sprintf(p, ",\"leaf_data\":%V", &v[NGX_DEFARM_MP_LEAF_DATA]);
    }

    p = ngx_sprintf(p, ",\"leaf_index\":%V,\"leaf_count\":%V,\"path\":[",
                    &v[NGX_DEFARM_MP_INDEX], &v[NGX_DEFARM_MP_COUNT]);

    for (k = 0; k < steps; k++) {
        if (k) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, "{\"hash\":\"", sizeof("{\"hash\":\"") - 1);
        p = ngx_cpymem(p, v[NGX_DEFARM_MP_PATH].data + k * 64, 64);

        if (((pos >> k) & 1) == 0) {
            p = ngx_cpymem(p, "\",\"position\":\"right\"}",
                           sizeof("\",\"position\":\"right\"}") - 1);

        } else {
            p = ngx_cpymem(p, "\",\"position\":\"left\"}",
                           sizeof("\",\"position\":\"left\"}") - 1);
        }
    }

    p = ngx_sprintf(p, "],\"merkle_root\":\"%V\",\"root_updated_at\":%V}",
                    &v[NGX_DEFARM_MP_ROOT], &v[NGX_DEFARM_MP_UPDATED]);

    body.len = p - body.data;

    return ngx_defarm_send_text(r, NGX_HTTP_OK, &body);

broken:

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "defarm: defarm_merkle_item_proof_fast answered "
                  "a proof without its parts");

    return ngx_defarm_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                            NGX_DEFARM_ERR_INTERNAL, "Internal server error");
}
