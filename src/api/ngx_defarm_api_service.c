
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "api/ngx_defarm_api.h"
#include "ngx_defarm_metrics.h"
#include "ngx_defarm_version.h"


/*
 * The service's own routes: the banner, liveness, the build identity, and
 * the JSON echo used to check a client's (or the parser's) handling of a
 * body.  They touch no database, so they stay up when PostgreSQL is down.
 */


static ngx_int_t ngx_defarm_service_banner(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_service_health(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_service_version(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_service_echo(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);


ngx_defarm_route_t  ngx_defarm_service_routes[] = {

    { NGX_HTTP_GET, ngx_string("/"),
      ngx_defarm_service_banner, NGX_DEFARM_ROUTE_HEALTH },

    { NGX_HTTP_GET, ngx_string("/health"),
      ngx_defarm_service_health, NGX_DEFARM_ROUTE_HEALTH },

    { NGX_HTTP_GET, ngx_string("/version"),
      ngx_defarm_service_version, NGX_DEFARM_ROUTE_HEALTH },

    { NGX_HTTP_GET, ngx_string("/api/version"),
      ngx_defarm_service_version, NGX_DEFARM_ROUTE_HEALTH },

    { NGX_HTTP_GET, ngx_string("/metrics"),
      ngx_defarm_metrics_handler,
      NGX_DEFARM_ROUTE_HEALTH|NGX_DEFARM_ROUTE_METRICS },

    { NGX_HTTP_POST, ngx_string("/api/echo"),
      ngx_defarm_service_echo,
      NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_ECHO },

    ngx_defarm_route_null
};


static const char  *ngx_defarm_features[] = {
    "Supply-chain items with collision-free DFIDs and identifiers",
    "Entity resolution on canonical identifiers",
    "Events with content-hash deduplication",
    "Circuits: push and pull between organisations",
    "Receipts that prove a document's hash",
    "JWT and API-key authentication with per-key permissions",
    "Tiers, credits and an admin surface",
    "PostgreSQL through a non-blocking connection pool",
    "Shared-memory cache that answers 503 instead of waiting",
    "Served from inside nginx workers",
    NULL
};


static ngx_int_t
ngx_defarm_service_banner(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    const char                **f;
    ngx_defarm_json_writer_t   *w;

    w = ngx_defarm_json_writer(r);
    if (w == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_defarm_jw_map_open(w);
    ngx_defarm_jw_key(w, "name");
    ngx_defarm_jw_cstr(w, "DeFarm Traceability API");
    ngx_defarm_jw_key(w, "version");
    ngx_defarm_jw_cstr(w, NGX_DEFARM_VERSION);
    ngx_defarm_jw_key(w, "description");
    ngx_defarm_jw_cstr(w, "Privacy-first agricultural traceability system");
    ngx_defarm_jw_key(w, "features");
    ngx_defarm_jw_array_open(w);

    for (f = ngx_defarm_features; *f; f++) {
        ngx_defarm_jw_cstr(w, *f);
    }

    ngx_defarm_jw_array_close(w);
    ngx_defarm_jw_map_close(w);

    return ngx_defarm_send(r, NGX_HTTP_OK, w);
}


static ngx_int_t
ngx_defarm_service_health(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_defarm_json_writer_t  *w;

    w = ngx_defarm_json_writer(r);
    if (w == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_defarm_jw_map_open(w);
    ngx_defarm_jw_key(w, "status");
    ngx_defarm_jw_cstr(w, "healthy");
    ngx_defarm_jw_key(w, "timestamp");
    ngx_defarm_jw_time(w, ngx_time());
    ngx_defarm_jw_key(w, "uptime");
    ngx_defarm_jw_cstr(w, "System operational");
    ngx_defarm_jw_key(w, "pid");
    ngx_defarm_jw_int(w, ngx_pid);
    ngx_defarm_jw_map_close(w);

    return ngx_defarm_send(r, NGX_HTTP_OK, w);
}


static ngx_int_t
ngx_defarm_service_version(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_str_t                  hash;
    ngx_defarm_json_writer_t  *w;

    ngx_str_set(&hash, NGX_DEFARM_GIT_HASH);

    if (ngx_defarm_add_header(r, "X-Commit", &hash) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    w = ngx_defarm_json_writer(r);
    if (w == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_defarm_jw_map_open(w);
    ngx_defarm_jw_key(w, "service");
    ngx_defarm_jw_cstr(w, "DeFarm Engines API");
    ngx_defarm_jw_key(w, "version");
    ngx_defarm_jw_cstr(w, NGX_DEFARM_VERSION);
    ngx_defarm_jw_key(w, "git_hash");
    ngx_defarm_jw_str(w, &hash);
    ngx_defarm_jw_key(w, "build_time");
    ngx_defarm_jw_cstr(w, NGX_DEFARM_BUILD_TIME);
    ngx_defarm_jw_key(w, "nginx_version");
    ngx_defarm_jw_cstr(w, NGINX_VERSION);
    ngx_defarm_jw_map_close(w);

    return ngx_defarm_send(r, NGX_HTTP_OK, w);
}


static ngx_int_t
ngx_defarm_service_echo(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_defarm_json_writer_t  *w;

    w = ngx_defarm_json_writer(r);
    if (w == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_defarm_jw_value(w, ctx->body);

    return ngx_defarm_send(r, NGX_HTTP_OK, w);
}
