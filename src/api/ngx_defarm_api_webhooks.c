
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "api/ngx_defarm_api_fn.h"


/*
 * A circuit's post-actions: its webhook settings, its webhooks and their
 * deliveries (sql/033).  A user's token with ManagePermissions in the
 * circuit.  The deliveries themselves are jobs (ngx_defarm_webhook.c).
 * Route functions; route i runs statement i.
 */


static ngx_int_t ngx_defarm_webhooks_run(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);


ngx_defarm_route_t  ngx_defarm_webhooks_routes[] = {

    { NGX_HTTP_GET, ngx_string("/api/circuits/:id/post-actions"),
      ngx_defarm_webhooks_run, NGX_DEFARM_ROUTE_JWT },

    { NGX_HTTP_PUT, ngx_string("/api/circuits/:id/post-actions"),
      ngx_defarm_webhooks_run, NGX_DEFARM_ROUTE_JWT|NGX_DEFARM_ROUTE_BODY },

    { NGX_HTTP_POST, ngx_string("/api/circuits/:id/post-actions/webhooks"),
      ngx_defarm_webhooks_run, NGX_DEFARM_ROUTE_JWT|NGX_DEFARM_ROUTE_BODY },

    { NGX_HTTP_GET,
      ngx_string("/api/circuits/:id/post-actions/webhooks/:webhook_id"),
      ngx_defarm_webhooks_run, NGX_DEFARM_ROUTE_JWT },

    { NGX_HTTP_PUT,
      ngx_string("/api/circuits/:id/post-actions/webhooks/:webhook_id"),
      ngx_defarm_webhooks_run, NGX_DEFARM_ROUTE_JWT|NGX_DEFARM_ROUTE_BODY },

    { NGX_HTTP_DELETE,
      ngx_string("/api/circuits/:id/post-actions/webhooks/:webhook_id"),
      ngx_defarm_webhooks_run, NGX_DEFARM_ROUTE_JWT },

    { NGX_HTTP_POST,
      ngx_string("/api/circuits/:id/post-actions/webhooks/:webhook_id/test"),
      ngx_defarm_webhooks_run, NGX_DEFARM_ROUTE_JWT },

    { NGX_HTTP_GET, ngx_string("/api/circuits/:id/post-actions/deliveries"),
      ngx_defarm_webhooks_run, NGX_DEFARM_ROUTE_JWT },

    ngx_defarm_route_null
};


static ngx_defarm_pg_stmt_t  ngx_defarm_post_actions_get =
    ngx_defarm_fn_stmt("defarm_post_actions_get");
static ngx_defarm_pg_stmt_t  ngx_defarm_post_actions_put =
    ngx_defarm_fn_stmt("defarm_post_actions_put");
static ngx_defarm_pg_stmt_t  ngx_defarm_webhook_create =
    ngx_defarm_fn_stmt("defarm_webhook_create");
static ngx_defarm_pg_stmt_t  ngx_defarm_webhook_get =
    ngx_defarm_fn_stmt("defarm_webhook_get");
static ngx_defarm_pg_stmt_t  ngx_defarm_webhook_update =
    ngx_defarm_fn_stmt("defarm_webhook_update");
static ngx_defarm_pg_stmt_t  ngx_defarm_webhook_delete =
    ngx_defarm_fn_stmt("defarm_webhook_delete");
static ngx_defarm_pg_stmt_t  ngx_defarm_webhook_test =
    ngx_defarm_fn_stmt("defarm_webhook_test");
static ngx_defarm_pg_stmt_t  ngx_defarm_webhook_deliveries =
    ngx_defarm_fn_stmt("defarm_webhook_deliveries");

static ngx_defarm_pg_stmt_t  *ngx_defarm_webhooks_stmts[] = {
    &ngx_defarm_post_actions_get,
    &ngx_defarm_post_actions_put,
    &ngx_defarm_webhook_create,
    &ngx_defarm_webhook_get,
    &ngx_defarm_webhook_update,
    &ngx_defarm_webhook_delete,
    &ngx_defarm_webhook_test,
    &ngx_defarm_webhook_deliveries
};


static ngx_int_t
ngx_defarm_webhooks_run(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    return ngx_defarm_fn_run(r, ctx, ngx_defarm_webhooks_routes,
                             ngx_defarm_webhooks_stmts,
                             sizeof(ngx_defarm_webhooks_stmts)
                             / sizeof(ngx_defarm_pg_stmt_t *));
}
