
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "api/ngx_defarm_api_fn.h"


/*
 * Snapshots (sql/042): an item's and a circuit's versions, hash-chained,
 * stored in the transaction of each change.  Mounted at the root, as the
 * original mounted them; the public routes need no caller and serve only
 * items published in a circuit the public may see.  ":id" is the dfid or
 * the circuit's id, so that the function receives it as its p_id.  Route
 * functions; route i runs statement i.
 */


static ngx_int_t ngx_defarm_snapshots_run(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);


ngx_defarm_route_t  ngx_defarm_snapshots_routes[] = {

    { NGX_HTTP_GET, ngx_string("/items/:id/snapshots"),
      ngx_defarm_snapshots_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/items/:id/snapshots/latest"),
      ngx_defarm_snapshots_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/items/:id/snapshots/verify"),
      ngx_defarm_snapshots_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/items/:id/snapshots/:snapshot_id"),
      ngx_defarm_snapshots_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/circuits/:id/snapshots"),
      ngx_defarm_snapshots_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/circuits/:id/snapshots/latest"),
      ngx_defarm_snapshots_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/circuits/:id/snapshots/verify"),
      ngx_defarm_snapshots_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/circuits/:id/snapshots/:snapshot_id"),
      ngx_defarm_snapshots_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    /* no caller */

    { NGX_HTTP_GET,
      ngx_string("/api/public/snapshots/items/:id/snapshots"),
      ngx_defarm_snapshots_run, 0 },

    { NGX_HTTP_GET,
      ngx_string("/api/public/snapshots/items/:id/snapshots/latest"),
      ngx_defarm_snapshots_run, 0 },

    ngx_defarm_route_null
};


static ngx_defarm_pg_stmt_t  ngx_defarm_item_snapshots =
    ngx_defarm_fn_stmt("defarm_item_snapshots");
static ngx_defarm_pg_stmt_t  ngx_defarm_item_snapshot_latest =
    ngx_defarm_fn_stmt("defarm_item_snapshot_latest");
static ngx_defarm_pg_stmt_t  ngx_defarm_item_snapshots_verify =
    ngx_defarm_fn_stmt("defarm_item_snapshots_verify");
static ngx_defarm_pg_stmt_t  ngx_defarm_item_snapshot_get =
    ngx_defarm_fn_stmt("defarm_item_snapshot_get");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_snapshots =
    ngx_defarm_fn_stmt("defarm_circuit_snapshots");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_snapshot_latest =
    ngx_defarm_fn_stmt("defarm_circuit_snapshot_latest");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_snapshots_verify =
    ngx_defarm_fn_stmt("defarm_circuit_snapshots_verify");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_snapshot_get =
    ngx_defarm_fn_stmt("defarm_circuit_snapshot_get");
static ngx_defarm_pg_stmt_t  ngx_defarm_public_item_snapshots =
    ngx_defarm_fn_stmt("defarm_public_item_snapshots");
static ngx_defarm_pg_stmt_t  ngx_defarm_public_item_snapshot_latest =
    ngx_defarm_fn_stmt("defarm_public_item_snapshot_latest");

static ngx_defarm_pg_stmt_t  *ngx_defarm_snapshots_stmts[] = {
    &ngx_defarm_item_snapshots,
    &ngx_defarm_item_snapshot_latest,
    &ngx_defarm_item_snapshots_verify,
    &ngx_defarm_item_snapshot_get,
    &ngx_defarm_circuit_snapshots,
    &ngx_defarm_circuit_snapshot_latest,
    &ngx_defarm_circuit_snapshots_verify,
    &ngx_defarm_circuit_snapshot_get,
    &ngx_defarm_public_item_snapshots,
    &ngx_defarm_public_item_snapshot_latest
};


static ngx_int_t
ngx_defarm_snapshots_run(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    return ngx_defarm_fn_run(r, ctx, ngx_defarm_snapshots_routes,
                             ngx_defarm_snapshots_stmts,
                             sizeof(ngx_defarm_snapshots_stmts)
                             / sizeof(ngx_defarm_pg_stmt_t *));
}
