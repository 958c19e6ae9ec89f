
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "api/ngx_defarm_api_fn.h"


/*
 * Where items are stored outside the database (sql/034): the
 * administrator's adapter configurations, a circuit's adapter, an item's
 * storage history and CID timeline, migrations, the indexers' progress.
 * Route functions; route i runs statement i.  The uploads themselves are
 * jobs (ngx_defarm_upload.c); the probes of an adapter are
 * ngx_defarm_api_adapters.c's.
 */


static ngx_int_t ngx_defarm_storage_run(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);


ngx_defarm_route_t  ngx_defarm_storage_routes[] = {

    { NGX_HTTP_GET, ngx_string("/api/admin/adapters"),
      ngx_defarm_storage_run, NGX_DEFARM_ROUTE_ADMIN },

    { NGX_HTTP_POST, ngx_string("/api/admin/adapters"),
      ngx_defarm_storage_run, NGX_DEFARM_ROUTE_ADMIN|NGX_DEFARM_ROUTE_BODY },

    { NGX_HTTP_GET, ngx_string("/api/admin/adapters/:config_id"),
      ngx_defarm_storage_run, NGX_DEFARM_ROUTE_ADMIN },

    { NGX_HTTP_PUT, ngx_string("/api/admin/adapters/:config_id"),
      ngx_defarm_storage_run, NGX_DEFARM_ROUTE_ADMIN|NGX_DEFARM_ROUTE_BODY },

    { NGX_HTTP_DELETE, ngx_string("/api/admin/adapters/:config_id"),
      ngx_defarm_storage_run, NGX_DEFARM_ROUTE_ADMIN },

    { NGX_HTTP_POST, ngx_string("/api/admin/adapters/:config_id/set-default"),
      ngx_defarm_storage_run, NGX_DEFARM_ROUTE_ADMIN },

    { NGX_HTTP_GET, ngx_string("/api/circuits/:id/adapter"),
      ngx_defarm_storage_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_PUT, ngx_string("/api/circuits/:id/adapter"),
      ngx_defarm_storage_run,
      NGX_DEFARM_ROUTE_PRINCIPAL|NGX_DEFARM_ROUTE_BODY },

    { NGX_HTTP_GET, ngx_string("/api/items/:dfid/storage-history"),
      ngx_defarm_storage_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/storage-history/statistics"),
      ngx_defarm_storage_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/storage-history/:dfid"),
      ngx_defarm_storage_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/storage-history/:dfid/locations"),
      ngx_defarm_storage_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/storage-history/:dfid/migrate"),
      ngx_defarm_storage_run,
      NGX_DEFARM_ROUTE_PRINCIPAL|NGX_DEFARM_ROUTE_BODY },

    { NGX_HTTP_POST, ngx_string("/api/storage-history/:dfid/primary"),
      ngx_defarm_storage_run,
      NGX_DEFARM_ROUTE_PRINCIPAL|NGX_DEFARM_ROUTE_BODY },

    { NGX_HTTP_GET, ngx_string("/api/public/storage-history/:dfid"),
      ngx_defarm_storage_run, 0 },

    { NGX_HTTP_GET, ngx_string("/api/items/:dfid/timeline"),
      ngx_defarm_storage_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    /* ":id" is the item here: the sequence is the other argument */

    { NGX_HTTP_GET, ngx_string("/api/items/:id/timeline/:sequence"),
      ngx_defarm_storage_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/timeline/indexing-progress/:network"),
      ngx_defarm_storage_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    ngx_defarm_route_null
};


static ngx_defarm_pg_stmt_t  ngx_defarm_storage_stmt[] = {
    ngx_defarm_fn_stmt("defarm_admin_adapters"),
    ngx_defarm_fn_stmt("defarm_admin_adapter_create"),
    ngx_defarm_fn_stmt("defarm_admin_adapter_get"),
    ngx_defarm_fn_stmt("defarm_admin_adapter_update"),
    ngx_defarm_fn_stmt("defarm_admin_adapter_delete"),
    ngx_defarm_fn_stmt("defarm_admin_adapter_default"),
    ngx_defarm_fn_stmt("defarm_circuit_adapter_get"),
    ngx_defarm_fn_stmt("defarm_circuit_adapter_put"),
    ngx_defarm_fn_stmt("defarm_item_storage_history"),
    ngx_defarm_fn_stmt("defarm_storage_statistics"),
    ngx_defarm_fn_stmt("defarm_storage_history"),
    ngx_defarm_fn_stmt("defarm_storage_locations"),
    ngx_defarm_fn_stmt("defarm_storage_migrate"),
    ngx_defarm_fn_stmt("defarm_storage_primary"),
    ngx_defarm_fn_stmt("defarm_public_storage_history"),
    ngx_defarm_fn_stmt("defarm_item_timeline"),
    ngx_defarm_fn_stmt("defarm_item_timeline_entry"),
    ngx_defarm_fn_stmt("defarm_indexing_progress")
};

static ngx_defarm_pg_stmt_t  *ngx_defarm_storage_stmts[] = {
    &ngx_defarm_storage_stmt[0], &ngx_defarm_storage_stmt[1],
    &ngx_defarm_storage_stmt[2], &ngx_defarm_storage_stmt[3],
    &ngx_defarm_storage_stmt[4], &ngx_defarm_storage_stmt[5],
    &ngx_defarm_storage_stmt[6], &ngx_defarm_storage_stmt[7],
    &ngx_defarm_storage_stmt[8], &ngx_defarm_storage_stmt[9],
    &ngx_defarm_storage_stmt[10], &ngx_defarm_storage_stmt[11],
    &ngx_defarm_storage_stmt[12], &ngx_defarm_storage_stmt[13],
    &ngx_defarm_storage_stmt[14], &ngx_defarm_storage_stmt[15],
    &ngx_defarm_storage_stmt[16], &ngx_defarm_storage_stmt[17]
};


static ngx_int_t
ngx_defarm_storage_run(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    return ngx_defarm_fn_run(r, ctx, ngx_defarm_storage_routes,
                             ngx_defarm_storage_stmts,
                             sizeof(ngx_defarm_storage_stmts)
                             / sizeof(ngx_defarm_pg_stmt_t *));
}
