
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "api/ngx_defarm_api_fn.h"


/*
 * /api/workspaces: workspaces and their members, stored (sql/037); the
 * original kept them in process memory and took the actor from the body.
 * Every route needs a principal, who is the actor.  Route functions;
 * route i runs statement i.
 */


static ngx_int_t ngx_defarm_workspaces_run(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);


ngx_defarm_route_t  ngx_defarm_workspaces_routes[] = {

    { NGX_HTTP_POST, ngx_string("/api/workspaces"),
      ngx_defarm_workspaces_run,
      NGX_DEFARM_ROUTE_PRINCIPAL|NGX_DEFARM_ROUTE_BODY },

    { NGX_HTTP_GET, ngx_string("/api/workspaces"),
      ngx_defarm_workspaces_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/workspaces/user/:user_id"),
      ngx_defarm_workspaces_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/workspaces/:id"),
      ngx_defarm_workspaces_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_PUT, ngx_string("/api/workspaces/:id"),
      ngx_defarm_workspaces_run,
      NGX_DEFARM_ROUTE_PRINCIPAL|NGX_DEFARM_ROUTE_BODY },

    { NGX_HTTP_DELETE, ngx_string("/api/workspaces/:id"),
      ngx_defarm_workspaces_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/workspaces/:id/members"),
      ngx_defarm_workspaces_run,
      NGX_DEFARM_ROUTE_PRINCIPAL|NGX_DEFARM_ROUTE_BODY },

    { NGX_HTTP_GET, ngx_string("/api/workspaces/:id/members"),
      ngx_defarm_workspaces_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_PUT, ngx_string("/api/workspaces/:id/members/:user_id"),
      ngx_defarm_workspaces_run,
      NGX_DEFARM_ROUTE_PRINCIPAL|NGX_DEFARM_ROUTE_BODY },

    { NGX_HTTP_DELETE, ngx_string("/api/workspaces/:id/members/:user_id"),
      ngx_defarm_workspaces_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/workspaces/:id/stats"),
      ngx_defarm_workspaces_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    ngx_defarm_route_null
};


static ngx_defarm_pg_stmt_t  ngx_defarm_workspace_create =
    ngx_defarm_fn_stmt("defarm_workspace_create");
static ngx_defarm_pg_stmt_t  ngx_defarm_workspaces_list =
    ngx_defarm_fn_stmt("defarm_workspaces_list");
static ngx_defarm_pg_stmt_t  ngx_defarm_workspaces_of_user =
    ngx_defarm_fn_stmt("defarm_workspaces_of_user");
static ngx_defarm_pg_stmt_t  ngx_defarm_workspace_get =
    ngx_defarm_fn_stmt("defarm_workspace_get");
static ngx_defarm_pg_stmt_t  ngx_defarm_workspace_update =
    ngx_defarm_fn_stmt("defarm_workspace_update");
static ngx_defarm_pg_stmt_t  ngx_defarm_workspace_delete =
    ngx_defarm_fn_stmt("defarm_workspace_delete");
static ngx_defarm_pg_stmt_t  ngx_defarm_workspace_add_member =
    ngx_defarm_fn_stmt("defarm_workspace_add_member");
static ngx_defarm_pg_stmt_t  ngx_defarm_workspace_members =
    ngx_defarm_fn_stmt("defarm_workspace_members");
static ngx_defarm_pg_stmt_t  ngx_defarm_workspace_member_role =
    ngx_defarm_fn_stmt("defarm_workspace_member_role");
static ngx_defarm_pg_stmt_t  ngx_defarm_workspace_remove_member =
    ngx_defarm_fn_stmt("defarm_workspace_remove_member");
static ngx_defarm_pg_stmt_t  ngx_defarm_workspace_stats =
    ngx_defarm_fn_stmt("defarm_workspace_stats");

static ngx_defarm_pg_stmt_t  *ngx_defarm_workspaces_stmts[] = {
    &ngx_defarm_workspace_create,
    &ngx_defarm_workspaces_list,
    &ngx_defarm_workspaces_of_user,
    &ngx_defarm_workspace_get,
    &ngx_defarm_workspace_update,
    &ngx_defarm_workspace_delete,
    &ngx_defarm_workspace_add_member,
    &ngx_defarm_workspace_members,
    &ngx_defarm_workspace_member_role,
    &ngx_defarm_workspace_remove_member,
    &ngx_defarm_workspace_stats
};


static ngx_int_t
ngx_defarm_workspaces_run(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    return ngx_defarm_fn_run(r, ctx, ngx_defarm_workspaces_routes,
                             ngx_defarm_workspaces_stmts,
                             sizeof(ngx_defarm_workspaces_stmts)
                             / sizeof(ngx_defarm_pg_stmt_t *));
}
