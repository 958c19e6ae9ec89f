
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "api/ngx_defarm_api.h"
#include "cache/ngx_defarm_cache.h"


/*
 * Diagnostic routes of the shared-memory cache (defarm_echo on): get, set,
 * delete, delete a family by prefix, and hold or release the zone's lock
 * so that tests can prove what a contended request gets.
 */


static ngx_int_t ngx_defarm_cache_api_get(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_cache_api_got(ngx_http_request_t *r, void *data,
    ngx_int_t rc, ngx_str_t *value);
static ngx_int_t ngx_defarm_cache_api_put(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_cache_api_delete(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_cache_api_invalidate(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_cache_api_done(ngx_http_request_t *r,
    void *data, ngx_int_t rc, ngx_str_t *value);
static ngx_int_t ngx_defarm_cache_api_hold(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_cache_api_release(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_cache_api_flag(ngx_http_request_t *r,
    const char *name, ngx_flag_t value);


ngx_defarm_route_t  ngx_defarm_cache_routes[] = {

    { NGX_HTTP_GET, ngx_string("/api/echo/cache/:key"),
      ngx_defarm_cache_api_get, NGX_DEFARM_ROUTE_ECHO },

    { NGX_HTTP_PUT, ngx_string("/api/echo/cache/:key"),
      ngx_defarm_cache_api_put,
      NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_ECHO },

    { NGX_HTTP_DELETE, ngx_string("/api/echo/cache/:key"),
      ngx_defarm_cache_api_delete, NGX_DEFARM_ROUTE_ECHO },

    { NGX_HTTP_POST, ngx_string("/api/echo/cache-invalidate"),
      ngx_defarm_cache_api_invalidate,
      NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_ECHO },

    { NGX_HTTP_POST, ngx_string("/api/echo/cache-lock/hold"),
      ngx_defarm_cache_api_hold,
      NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_ECHO },

    { NGX_HTTP_POST, ngx_string("/api/echo/cache-lock/release"),
      ngx_defarm_cache_api_release, NGX_DEFARM_ROUTE_ECHO },

    ngx_defarm_route_null
};


static ngx_int_t
ngx_defarm_cache_api_get(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    return ngx_defarm_cache_run(r, NGX_DEFARM_CACHE_GET,
                                ngx_defarm_param(ctx, "key"), NULL, 0,
                                ngx_defarm_cache_api_got, ctx);
}


static ngx_int_t
ngx_defarm_cache_api_got(ngx_http_request_t *r, void *data, ngx_int_t rc,
    ngx_str_t *value)
{
    ngx_defarm_ctx_t  *ctx = data;

    ngx_defarm_json_writer_t  *w;

    if (rc != NGX_OK) {
        return ngx_defarm_error(r, NGX_HTTP_NOT_FOUND,
                                NGX_DEFARM_ERR_NOT_FOUND,
                                "Key not in the cache");
    }

    w = ngx_defarm_json_writer(r);
    if (w == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_defarm_jw_map_open(w);
    ngx_defarm_jw_key(w, "key");
    ngx_defarm_jw_str(w, ngx_defarm_param(ctx, "key"));
    ngx_defarm_jw_key(w, "value");
    ngx_defarm_jw_str(w, value);
    ngx_defarm_jw_map_close(w);

    return ngx_defarm_send(r, NGX_HTTP_OK, w);
}


static ngx_int_t
ngx_defarm_cache_api_put(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    int64_t             ttl;
    ngx_defarm_json_t  *value, *t;

    value = ngx_defarm_json_get(ctx->body, "value");

    if (value == NULL || value->type != NGX_DEFARM_JSON_STRING) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "\"value\" must be a string, not %s",
                                ngx_defarm_json_type_name(value));
    }

    ttl = 0;
    t = ngx_defarm_json_get(ctx->body, "ttl_ms");

    if (t && (ngx_defarm_json_int(t, &ttl) != NGX_OK
              || ttl < 1 || ttl > 86400000))
    {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "\"ttl_ms\" must be an integer from 1 to "
                                "86400000");
    }

    return ngx_defarm_cache_run(r, NGX_DEFARM_CACHE_SET,
                                ngx_defarm_param(ctx, "key"), &value->str,
                                (ngx_msec_t) ttl, ngx_defarm_cache_api_done,
                                "stored");
}


static ngx_int_t
ngx_defarm_cache_api_delete(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    return ngx_defarm_cache_run(r, NGX_DEFARM_CACHE_DELETE,
                                ngx_defarm_param(ctx, "key"), NULL, 0,
                                ngx_defarm_cache_api_done, "deleted");
}


static ngx_int_t
ngx_defarm_cache_api_invalidate(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_defarm_json_t  *prefix;

    prefix = ngx_defarm_json_get(ctx->body, "prefix");

    if (prefix == NULL || prefix->type != NGX_DEFARM_JSON_STRING
        || prefix->str.len == 0
        || prefix->str.data[prefix->str.len - 1] != ':')
    {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "\"prefix\" must be a key family ending in "
                                "':'");
    }

    return ngx_defarm_cache_run(r, NGX_DEFARM_CACHE_DELETE_PREFIX,
                                &prefix->str, NULL, 0,
                                ngx_defarm_cache_api_done, "invalidated");
}


static ngx_int_t
ngx_defarm_cache_api_done(ngx_http_request_t *r, void *data, ngx_int_t rc,
    ngx_str_t *value)
{
    return ngx_defarm_cache_api_flag(r, data, rc == NGX_OK);
}


static ngx_int_t
ngx_defarm_cache_api_hold(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    int64_t             ms;
    ngx_defarm_json_t  *v;

    v = ngx_defarm_json_get(ctx->body, "ms");

    if (ngx_defarm_json_int(v, &ms) != NGX_OK || ms < 1 || ms > 60000) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "\"ms\" must be an integer from 1 to 60000");
    }

    if (ngx_defarm_cache_hold(r, (ngx_msec_t) ms) != NGX_OK) {
        return ngx_defarm_error(r, NGX_HTTP_CONFLICT,
                                NGX_DEFARM_ERR_CONFLICT,
                                "The cache lock is not free, or there is "
                                "no cache");
    }

    return ngx_defarm_cache_api_flag(r, "held", 1);
}


static ngx_int_t
ngx_defarm_cache_api_release(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    return ngx_defarm_cache_api_flag(r, "released",
                                     ngx_defarm_cache_release(r) == NGX_OK);
}


static ngx_int_t
ngx_defarm_cache_api_flag(ngx_http_request_t *r, const char *name,
    ngx_flag_t value)
{
    ngx_defarm_json_writer_t  *w;

    w = ngx_defarm_json_writer(r);
    if (w == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_defarm_jw_map_open(w);
    ngx_defarm_jw_key(w, name);
    ngx_defarm_jw_bool(w, value);
    ngx_defarm_jw_map_close(w);

    return ngx_defarm_send(r, NGX_HTTP_OK, w);
}
