
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "api/ngx_defarm_api_fn.h"
#include "auth/ngx_defarm_auth.h"
#include "auth/ngx_defarm_crypt.h"
#include "cache/ngx_defarm_cache.h"


/*
 * /api/admin: an administrator's token, or a key with the admin
 * permission of an admin (the router checks, PostgreSQL says who is an
 * admin).  Route functions (sql/025).  Freezing or unfreezing a user
 * drops the user's cached records here and, through Redis, on every node
 * before the answer: the user's auth records (ngx_defarm_auth_user_changed)
 * and the records of each of the user's API keys, whose owner status they
 * carry; so the next request with any of them sees the change.  An update
 * of a user (PUT /api/admin/users/:user_id) drops the same records: they
 * also carry the tier and the admin flag.
 *
 * Creating a user is the one route with more than its function: the
 * body's fields are checked as registration checks them, the rest by
 * PostgreSQL (a taken name or a bad tier costs no hash), then the
 * password is hashed in the thread pool and only its hash goes to
 * PostgreSQL with the body, never the password.
 */


static ngx_int_t ngx_defarm_admin_run(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_admin_status_done(ngx_http_request_t *r,
    void *data, PGresult *res);
static ngx_int_t ngx_defarm_admin_create(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_admin_create_checked(ngx_http_request_t *r,
    void *data, PGresult *res);
static ngx_int_t ngx_defarm_admin_create_hashed(ngx_http_request_t *r,
    void *data, ngx_int_t rc, ngx_str_t *hash);


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

    { NGX_HTTP_GET, ngx_string("/api/admin/users"),
      ngx_defarm_admin_run, NGX_DEFARM_ROUTE_ADMIN },

    { NGX_HTTP_POST, ngx_string("/api/admin/users"),
      ngx_defarm_admin_create, NGX_DEFARM_ROUTE_ADMIN|NGX_DEFARM_ROUTE_BODY },

    { NGX_HTTP_GET, ngx_string("/api/admin/users/:user_id"),
      ngx_defarm_admin_run, NGX_DEFARM_ROUTE_ADMIN },

    { NGX_HTTP_PUT, ngx_string("/api/admin/users/:user_id"),
      ngx_defarm_admin_run, NGX_DEFARM_ROUTE_ADMIN|NGX_DEFARM_ROUTE_BODY },

    /* not ".../:user_id/credits": the router takes the most literals */

    { NGX_HTTP_POST, ngx_string("/api/admin/users/credits/bulk-grant"),
      ngx_defarm_admin_run, NGX_DEFARM_ROUTE_ADMIN|NGX_DEFARM_ROUTE_BODY },

    { NGX_HTTP_GET, ngx_string("/api/admin/dashboard/stats"),
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

static ngx_defarm_pg_stmt_t  ngx_defarm_admin_users =
    ngx_defarm_fn_stmt("defarm_admin_users");
static ngx_defarm_pg_stmt_t  ngx_defarm_admin_user_check =
    ngx_defarm_fn_stmt("defarm_admin_user_check");
static ngx_defarm_pg_stmt_t  ngx_defarm_admin_user_create =
    ngx_defarm_fn_stmt("defarm_admin_user_create");
static ngx_defarm_pg_stmt_t  ngx_defarm_admin_user_get =
    ngx_defarm_fn_stmt("defarm_admin_user_get");
static ngx_defarm_pg_stmt_t  ngx_defarm_admin_user_update =
    ngx_defarm_admin_status_stmt("defarm_admin_user_update");
static ngx_defarm_pg_stmt_t  ngx_defarm_admin_bulk_grant =
    ngx_defarm_fn_stmt("defarm_admin_bulk_grant");
static ngx_defarm_pg_stmt_t  ngx_defarm_admin_dashboard_stats =
    ngx_defarm_fn_stmt("defarm_admin_dashboard_stats");

static ngx_defarm_pg_stmt_t  *ngx_defarm_admin_stmts[] = {
    &ngx_defarm_admin_freeze,
    &ngx_defarm_admin_unfreeze,
    &ngx_defarm_admin_actions,
    &ngx_defarm_admin_credits,
    &ngx_defarm_admin_credit_history,
    &ngx_defarm_admin_users,
    &ngx_defarm_admin_user_check,          /* then user_create */
    &ngx_defarm_admin_user_get,
    &ngx_defarm_admin_user_update,
    &ngx_defarm_admin_bulk_grant,
    &ngx_defarm_admin_dashboard_stats
};


/* POST /api/admin/users: the body's fields, the password last (not sent) */

static const char  *ngx_defarm_admin_create_fields[] = {
    "username", "email", "tier", "initial_credits", "workspace_id",
    "password", NULL
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

    /* the routes that change a user's status, tier or admin flag */

    if (ngx_defarm_admin_stmts[i] != &ngx_defarm_admin_freeze
        && ngx_defarm_admin_stmts[i] != &ngx_defarm_admin_unfreeze
        && ngx_defarm_admin_stmts[i] != &ngx_defarm_admin_user_update)
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


/* POST /api/admin/users */

static ngx_int_t
ngx_defarm_admin_create(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    size_t                     len;
    ngx_int_t                  rc;
    ngx_uint_t                 i;
    ngx_defarm_json_t         *v;
    ngx_defarm_fn_req_t       *fr;
    ngx_defarm_account_t       ac;
    ngx_defarm_json_writer_t  *w;

    rc = ngx_defarm_auth_account(r, ctx->body, "workspace_id",
                                 "Workspace ID", &ac);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    for (v = ctx->body->child; v; v = v->next) {

        for (i = 0; ngx_defarm_admin_create_fields[i]; i++) {
            len = ngx_strlen(ngx_defarm_admin_create_fields[i]);

            if (v->key.len == len
                && ngx_strncmp(v->key.data, ngx_defarm_admin_create_fields[i],
                               len)
                   == 0)
            {
                break;
            }
        }

        if (ngx_defarm_admin_create_fields[i] == NULL) {
            return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                    NGX_DEFARM_ERR_VALIDATION,
                                    "Unknown field: %V", &v->key);
        }
    }

    fr = ngx_pcalloc(r->pool, sizeof(ngx_defarm_fn_req_t));
    if (fr == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    fr->params[0] = ctx->user_id;
    fr->password = ac.password;

    /*
     * Each field once, with the value checked here (the first of a
     * repeated name, where jsonb would keep the last); all but the last,
     * the password.
     */

    w = ngx_defarm_json_writer(r);
    if (w == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_defarm_jw_map_open(w);

    for (i = 0; ngx_defarm_admin_create_fields[i + 1]; i++) {
        v = ngx_defarm_json_get(ctx->body, ngx_defarm_admin_create_fields[i]);

        if (v) {
            ngx_defarm_jw_key(w, ngx_defarm_admin_create_fields[i]);
            ngx_defarm_jw_value(w, v);
        }
    }

    ngx_defarm_jw_map_close(w);

    if (ngx_defarm_json_text(w, &fr->params[2]) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_admin_user_check, fr->params,
                               ngx_defarm_admin_create_checked, fr);
}


static ngx_int_t
ngx_defarm_admin_create_checked(ngx_http_request_t *r, void *data,
    PGresult *res)
{
    ngx_defarm_fn_req_t  *fr = data;

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1
        || ngx_strcmp(PQgetvalue(res, 0, 0), "200") != 0)
    {
        return ngx_defarm_fn_done(r, data, res);
    }

    return ngx_defarm_crypt_hash(r, &fr->password,
                                 ngx_defarm_admin_create_hashed, fr);
}


static ngx_int_t
ngx_defarm_admin_create_hashed(ngx_http_request_t *r, void *data,
    ngx_int_t rc, ngx_str_t *hash)
{
    ngx_defarm_fn_req_t  *fr = data;

    fr->params[3] = *hash;

    return ngx_defarm_pg_query(r, &ngx_defarm_admin_user_create, fr->params,
                               ngx_defarm_fn_done, fr);
}
