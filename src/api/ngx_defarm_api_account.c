
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "api/ngx_defarm_api_fn.h"


/*
 * A user's own account, at the root as the original mounted it: the
 * profile with the tier's limits, the credit balance, the ledger of its
 * changes and the costs of the caller's tier (sql/026).  A user's token
 * only.  Route functions; route i runs statement i.
 */


static ngx_int_t ngx_defarm_account_run(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);


ngx_defarm_route_t  ngx_defarm_account_routes[] = {

    { NGX_HTTP_GET, ngx_string("/users/me/profile"),
      ngx_defarm_account_run, NGX_DEFARM_ROUTE_JWT },

    { NGX_HTTP_GET, ngx_string("/credit/users/current"),
      ngx_defarm_account_run, NGX_DEFARM_ROUTE_JWT },

    { NGX_HTTP_GET, ngx_string("/users/me/credits/balance"),
      ngx_defarm_account_run, NGX_DEFARM_ROUTE_JWT },

    { NGX_HTTP_GET, ngx_string("/users/me/credits/history"),
      ngx_defarm_account_run, NGX_DEFARM_ROUTE_JWT },

    { NGX_HTTP_GET, ngx_string("/users/me/credits/costs"),
      ngx_defarm_account_run, NGX_DEFARM_ROUTE_JWT },

    ngx_defarm_route_null
};


static ngx_defarm_pg_stmt_t  ngx_defarm_me_profile =
    ngx_defarm_fn_stmt("defarm_me_profile");
static ngx_defarm_pg_stmt_t  ngx_defarm_me_balance =
    ngx_defarm_fn_stmt("defarm_me_balance");
static ngx_defarm_pg_stmt_t  ngx_defarm_me_history =
    ngx_defarm_fn_stmt("defarm_me_history");
static ngx_defarm_pg_stmt_t  ngx_defarm_me_costs =
    ngx_defarm_fn_stmt("defarm_me_costs");

static ngx_defarm_pg_stmt_t  *ngx_defarm_account_stmts[] = {
    &ngx_defarm_me_profile,
    &ngx_defarm_me_profile,
    &ngx_defarm_me_balance,
    &ngx_defarm_me_history,
    &ngx_defarm_me_costs
};


static ngx_int_t
ngx_defarm_account_run(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    return ngx_defarm_fn_run(r, ctx, ngx_defarm_account_routes,
                             ngx_defarm_account_stmts,
                             sizeof(ngx_defarm_account_stmts)
                             / sizeof(ngx_defarm_pg_stmt_t *));
}
