
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "ngx_defarm_module.h"
#include "ngx_defarm_router.h"


/*
 * Per-request facts for log_format: what failed, for whom, on which route,
 * and where the time went.  Timings print as milliseconds with three
 * decimals, like $request_time; a timing that does not apply to the
 * request, like every variable of a request the module did not serve, is
 * "not found" and prints as "-".
 */


static ngx_int_t ngx_defarm_variable_str(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_defarm_variable_route(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_defarm_variable_cache(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_defarm_variable_ms(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


typedef enum {
    NGX_DEFARM_VAR_LOCK = 0,
    NGX_DEFARM_VAR_DB,
    NGX_DEFARM_VAR_CRYPT
} ngx_defarm_var_timing_e;


static ngx_http_variable_t  ngx_defarm_variables[] = {

    { ngx_string("defarm_error_kind"), NULL, ngx_defarm_variable_str,
      offsetof(ngx_defarm_ctx_t, error_kind), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("defarm_user_id"), NULL, ngx_defarm_variable_str,
      offsetof(ngx_defarm_ctx_t, user_id), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("defarm_route"), NULL, ngx_defarm_variable_route,
      0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("defarm_cache"), NULL, ngx_defarm_variable_cache,
      0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("defarm_lock_ms"), NULL, ngx_defarm_variable_ms,
      NGX_DEFARM_VAR_LOCK, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("defarm_db_ms"), NULL, ngx_defarm_variable_ms,
      NGX_DEFARM_VAR_DB, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("defarm_crypt_ms"), NULL, ngx_defarm_variable_ms,
      NGX_DEFARM_VAR_CRYPT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


ngx_int_t
ngx_defarm_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_defarm_variables; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_defarm_variable_str(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    ngx_str_t         *s;
    ngx_defarm_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_defarm_module);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    s = (ngx_str_t *) ((u_char *) ctx + data);

    if (s->len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = s->len;
    v->data = s->data;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_defarm_variable_route(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    ngx_defarm_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_defarm_module);

    if (ctx == NULL || ctx->route == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = ctx->route->pattern.len;
    v->data = ctx->route->pattern.data;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_defarm_variable_cache(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    ngx_defarm_ctx_t  *ctx;

    static ngx_str_t  names[] = {
        ngx_null_string, ngx_string("HIT"), ngx_string("MISS"),
        ngx_string("BYPASS")
    };

    ctx = ngx_http_get_module_ctx(r, ngx_defarm_module);

    if (ctx == NULL || ctx->cache_status == NGX_DEFARM_CACHE_NONE) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = names[ctx->cache_status].len;
    v->data = names[ctx->cache_status].data;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_defarm_variable_ms(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    u_char            *p;
    uint64_t           us;
    ngx_uint_t         timed;
    ngx_defarm_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_defarm_module);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    switch (data) {

    case NGX_DEFARM_VAR_LOCK:
        us = ctx->lock_us;
        timed = ctx->lock_timed;
        break;

    case NGX_DEFARM_VAR_DB:
        us = ctx->db_us;
        timed = ctx->db_timed;
        break;

    default: /* NGX_DEFARM_VAR_CRYPT */
        us = ctx->crypt_us;
        timed = ctx->crypt_timed;
        break;
    }

    if (!timed) {
        v->not_found = 1;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, NGX_INT64_LEN + 4);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->len = ngx_sprintf(p, "%uL.%03uL", us / 1000, us % 1000) - p;
    v->data = p;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}
