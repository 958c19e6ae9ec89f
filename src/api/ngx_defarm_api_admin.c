
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "api/ngx_defarm_api_fn.h"
#include "auth/ngx_defarm_auth.h"
#include "cache/ngx_defarm_cache.h"


/*
 * /api/admin: an administrator's token, or a key with the admin
 * permission of an admin (the router checks, PostgreSQL says who is an
 * admin).  Route functions (sql/025).  Freezing or unfreezing a user
 * drops the user's cached records here and, through Redis, on every node
 * before the answer: the user's auth records (ngx_defarm_auth_user_changed)
 * and the records of each of the user's API keys, whose owner status they
 * carry; so the next request with any of them sees the change.
 */


static ngx_int_t ngx_defarm_admin_run(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_admin_status_done(ngx_http_request_t *r,
    void *data, PGresult *res);


ngx_defarm_route_t  ngx_defarm_admin_routes[] = {

    { NGX_HTTP_PUT, ngx_string("/api/admin/users/:user_id/freeze"),
      ngx_defarm_admin_run, NGX_DEFARM_ROUTE_ADMIN },

    { NGX_HTTP_PUT, ngx_string("/api/admin/users/:user_id/unfreeze"),
      ngx_defarm_admin_run, NGX_DEFARM_ROUTE_ADMIN },

    { NGX_HTTP_GET, ngx_string("/api/admin/actions"),
      ngx_defarm_admin_run, NGX_DEFARM_ROUTE_ADMIN },

    { NGX_HTTP_POST, ngx_string("/api/admin/users/:user_id/credits"),
      ngx_defarm_admin_run, NGX_DEFARM_ROUTE_ADMIN|NGX_DEFARM_ROUTE_BODY },

    { NGX_HTTP_GET, ngx_string("/api/admin/users/:user_id/credits/history"),
      ngx_defarm_admin_run, NGX_DEFARM_ROUTE_ADMIN },

    ngx_defarm_route_null
};


/* a status change, with what the module must drop: keys and username */

#define ngx_defarm_admin_status_stmt(fn)                                     \
    { fn, "SELECT a.status, a.body, "                                        \
              "(SELECT string_agg(k.key_hash, ' ') FROM api_keys k "         \
               "WHERE k.user_id = $4), "                                     \
              "(SELECT u.username FROM users u WHERE u.id = $4) "            \
          "FROM " fn "($1, $2, $3::jsonb, $4) a", 4, 0 }

static ngx_defarm_pg_stmt_t  ngx_defarm_admin_freeze =
    ngx_defarm_admin_status_stmt("defarm_admin_freeze");
static ngx_defarm_pg_stmt_t  ngx_defarm_admin_unfreeze =
    ngx_defarm_admin_status_stmt("defarm_admin_unfreeze");
static ngx_defarm_pg_stmt_t  ngx_defarm_admin_actions =
    ngx_defarm_fn_stmt("defarm_admin_actions");

static ngx_defarm_pg_stmt_t  ngx_defarm_admin_credits =
    ngx_defarm_fn_stmt("defarm_admin_credits");
static ngx_defarm_pg_stmt_t  ngx_defarm_admin_credit_history =
    ngx_defarm_fn_stmt("defarm_admin_credit_history");

static ngx_defarm_pg_stmt_t  *ngx_defarm_admin_stmts[] = {
    &ngx_defarm_admin_freeze,
    &ngx_defarm_admin_unfreeze,
    &ngx_defarm_admin_actions,
    &ngx_defarm_admin_credits,
    &ngx_defarm_admin_credit_history
};


static ngx_int_t
ngx_defarm_admin_run(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_uint_t            i;
    ngx_defarm_fn_req_t  *fr;

    i = ctx->route - ngx_defarm_admin_routes;

    if (i >= sizeof(ngx_defarm_admin_stmts) / sizeof(ngx_defarm_pg_stmt_t *))
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_defarm_admin_stmts[i] != &ngx_defarm_admin_freeze
        && ngx_defarm_admin_stmts[i] != &ngx_defarm_admin_unfreeze)
    {
        return ngx_defarm_fn_run(r, ctx, ngx_defarm_admin_routes,
                                 ngx_defarm_admin_stmts,
                                 sizeof(ngx_defarm_admin_stmts)
                                 / sizeof(ngx_defarm_pg_stmt_t *));
    }

    fr = ngx_defarm_fn_req(r, ctx);
    if (fr == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_defarm_pg_query(r, ngx_defarm_admin_stmts[i], fr->params,
                               ngx_defarm_admin_status_done, fr);
}


static ngx_int_t
ngx_defarm_admin_status_done(ngx_http_request_t *r, void *data,
    PGresult *res)
{
    ngx_defarm_fn_req_t  *fr = data;

    u_char     *p, *last, *sp;
    ngx_str_t   keys, username, family;

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1
        || ngx_strcmp(PQgetvalue(res, 0, 0), "200") != 0)
    {
        return ngx_defarm_fn_done(r, data, res);
    }

    (void) ngx_defarm_pg_text(res, 0, 2, &keys);
    (void) ngx_defarm_pg_text(res, 0, 3, &username);

    if (ngx_defarm_auth_user_changed(r, &fr->params[3],
                                     username.len ? &username : NULL)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* each key's family "apikey:<sha256>:" */

    p = keys.data;
    last = keys.data + keys.len;

    while (p < last) {
        sp = ngx_strlchr(p, last, ' ');
        if (sp == NULL) {
            sp = last;
        }

        family.len = sizeof("apikey::") - 1 + (sp - p);
        family.data = ngx_pnalloc(r->pool, family.len);
        if (family.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_sprintf(family.data, "apikey:%*s:", (size_t) (sp - p), p);
        ngx_defarm_cache_forget(r, &family);

        p = sp + 1;
    }

    return ngx_defarm_fn_done(r, data, res);
}
