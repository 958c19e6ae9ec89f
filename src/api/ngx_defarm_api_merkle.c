
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "api/ngx_defarm_api_fn.h"


/*
 * Merkle trees (sql/041): an item's root over its events, a circuit's
 * root over its items' roots, inclusion proofs, their verification and a
 * circuit's sync check; the public variants answer only for items
 * published in a circuit the public may see.  The trees are kept up to
 * date as events are written, so a route reads a stored root or the
 * O(log n) nodes of a proof.  Route functions; route i runs statement i.
 */


static ngx_int_t ngx_defarm_merkle_run(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);


ngx_defarm_route_t  ngx_defarm_merkle_routes[] = {

    { NGX_HTTP_GET, ngx_string("/api/merkle/items/:id/merkle-root"),
      ngx_defarm_merkle_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET,
      ngx_string("/api/merkle/items/:id/merkle-proof/:event_id"),
      ngx_defarm_merkle_run, NGX_DEFARM_ROUTE_PRINCIPAL },

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
    ngx_defarm_fn_stmt("defarm_merkle_item_proof_fast"),
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
