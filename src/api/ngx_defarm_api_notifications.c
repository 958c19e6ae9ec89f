
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "api/ngx_defarm_api_fn.h"
#include "ws/ngx_defarm_ws.h"


/*
 * /api/notifications: a caller's own notifications (sql/021), made by the
 * circuit changes that concern them.  Route functions; route i runs
 * statement i.
 */


static ngx_int_t ngx_defarm_notifications_run(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);


ngx_defarm_route_t  ngx_defarm_notifications_routes[] = {

    { NGX_HTTP_GET, ngx_string("/api/notifications"),
      ngx_defarm_notifications_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/notifications/unread-count"),
      ngx_defarm_notifications_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_PATCH, ngx_string("/api/notifications/mark-all-read"),
      ngx_defarm_notifications_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_PATCH, ngx_string("/api/notifications/:id/read"),
      ngx_defarm_notifications_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_DELETE, ngx_string("/api/notifications/:id"),
      ngx_defarm_notifications_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    /* not a statement: the WebSocket channel (src/ws/) */

    { NGX_HTTP_GET, ngx_string("/api/notifications/ws"),
      ngx_defarm_ws_handler,
      NGX_DEFARM_ROUTE_JWT|NGX_DEFARM_ROUTE_QTOKEN },

    ngx_defarm_route_null
};


static ngx_defarm_pg_stmt_t  ngx_defarm_notifications_list =
    ngx_defarm_fn_stmt("defarm_notifications_list");
static ngx_defarm_pg_stmt_t  ngx_defarm_notifications_unread =
    ngx_defarm_fn_stmt("defarm_notifications_unread");
static ngx_defarm_pg_stmt_t  ngx_defarm_notifications_read_all =
    ngx_defarm_fn_stmt("defarm_notifications_read_all");
static ngx_defarm_pg_stmt_t  ngx_defarm_notification_read =
    ngx_defarm_fn_stmt("defarm_notification_read");
static ngx_defarm_pg_stmt_t  ngx_defarm_notification_delete =
    ngx_defarm_fn_stmt("defarm_notification_delete");

static ngx_defarm_pg_stmt_t  *ngx_defarm_notifications_stmts[] = {
    &ngx_defarm_notifications_list,
    &ngx_defarm_notifications_unread,
    &ngx_defarm_notifications_read_all,
    &ngx_defarm_notification_read,
    &ngx_defarm_notification_delete
};


static ngx_int_t
ngx_defarm_notifications_run(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    return ngx_defarm_fn_run(r, ctx, ngx_defarm_notifications_routes,
                             ngx_defarm_notifications_stmts,
                             sizeof(ngx_defarm_notifications_stmts)
                             / sizeof(ngx_defarm_pg_stmt_t *));
}
