
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "auth/ngx_defarm_ratelimit.h"
#include "cache/ngx_defarm_cache.h"
#include "ngx_defarm_response.h"


/*
 * Per-hour request limits: a counter per id and clock hour, incremented
 * in the shared-memory zone of defarm_cache (so every worker of this
 * nginx counts together), under the zone's trylock discipline.  Every
 * answer carries X-RateLimit-Limit, -Remaining and -Reset (the Unix time
 * the window ends); past the limit, 429 with the original service's
 * fields and Retry-After.  Fixed windows: a client can spend a limit at
 * the end of one hour and another at the start of the next.
 */


typedef struct {
    ngx_defarm_ratelimit_pt    pass;
    void                      *data;
    ngx_uint_t                 limit;
    time_t                     reset;
} ngx_defarm_ratelimit_t;


static ngx_int_t ngx_defarm_ratelimit_counted(ngx_http_request_t *r,
    void *data, ngx_int_t rc, ngx_str_t *value);
static void ngx_defarm_ratelimit_fields(ngx_http_request_t *r,
    ngx_defarm_json_writer_t *w, void *data);


ngx_int_t
ngx_defarm_ratelimit_hourly(ngx_http_request_t *r, ngx_str_t *id,
    ngx_uint_t limit, ngx_defarm_ratelimit_pt pass, void *data)
{
    time_t                   now, hour;
    ngx_str_t                key;
    ngx_defarm_ratelimit_t  *rl;
    ngx_defarm_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_defarm_module);

    if (mcf->cache == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "defarm: API-key rate limits need \"defarm_cache\"");
        return ngx_defarm_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                NGX_DEFARM_ERR_INTERNAL,
                                "Rate limiting is not configured");
    }

    rl = ngx_palloc(r->pool, sizeof(ngx_defarm_ratelimit_t));
    if (rl == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    now = ngx_time();
    hour = now / 3600;

    rl->pass = pass;
    rl->data = data;
    rl->limit = limit;
    rl->reset = (hour + 1) * 3600;

    key.len = sizeof("ratelimit::") - 1 + id->len + NGX_TIME_T_LEN;
    key.data = ngx_pnalloc(r->pool, key.len);
    if (key.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    key.len = ngx_sprintf(key.data, "ratelimit:%V:%T", id, hour) - key.data;

    /* the counter outlives its window by a second, then goes */

    return ngx_defarm_cache_run(r, NGX_DEFARM_CACHE_INCR, &key, NULL,
                                (ngx_msec_t) (rl->reset - now + 1) * 1000,
                                ngx_defarm_ratelimit_counted, rl);
}


static ngx_int_t
ngx_defarm_ratelimit_header(ngx_http_request_t *r, const char *name,
    uint64_t n)
{
    ngx_str_t  v;

    v.data = ngx_pnalloc(r->pool, NGX_INT64_LEN);
    if (v.data == NULL) {
        return NGX_ERROR;
    }

    v.len = ngx_sprintf(v.data, "%uL", n) - v.data;

    return ngx_defarm_add_header(r, name, &v);
}


static ngx_int_t
ngx_defarm_ratelimit_counted(ngx_http_request_t *r, void *data,
    ngx_int_t rc, ngx_str_t *value)
{
    ngx_defarm_ratelimit_t  *rl = data;

    time_t             wait;
    uint64_t           n;
    ngx_defarm_ctx_t  *ctx;

    if (rc != NGX_OK || value == NULL || value->len != sizeof(uint64_t)) {
        /* no room for the counter: refuse rather than go unlimited */
        return ngx_defarm_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                NGX_DEFARM_ERR_SERVICE_UNAVAILABLE,
                                "Rate limit state unavailable, please "
                                "retry");
    }

    ngx_memcpy(&n, value->data, sizeof(uint64_t));

    if (ngx_defarm_ratelimit_header(r, "X-RateLimit-Limit", rl->limit)
           != NGX_OK
        || ngx_defarm_ratelimit_header(r, "X-RateLimit-Remaining",
                                       n < rl->limit ? rl->limit - n : 0)
           != NGX_OK
        || ngx_defarm_ratelimit_header(r, "X-RateLimit-Reset", rl->reset)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (n <= rl->limit) {
        return rl->pass(r, rl->data);
    }

    wait = rl->reset - ngx_time();
    wait = ngx_max(wait, 1);

    if (ngx_defarm_ratelimit_header(r, "Retry-After", wait) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx = ngx_defarm_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->error_fields = ngx_defarm_ratelimit_fields;
    ctx->error_data = rl;

    return ngx_defarm_error(r, NGX_HTTP_TOO_MANY_REQUESTS,
                            NGX_DEFARM_ERR_RATE_LIMIT,
                            "Rate limit of %ui requests per hour exceeded",
                            rl->limit);
}


/* the original's 429 body: limit, remaining, reset_at, retry_after */

static void
ngx_defarm_ratelimit_fields(ngx_http_request_t *r,
    ngx_defarm_json_writer_t *w, void *data)
{
    ngx_defarm_ratelimit_t  *rl = data;

    time_t  wait;

    wait = rl->reset - ngx_time();

    ngx_defarm_jw_key(w, "code");
    ngx_defarm_jw_cstr(w, "rate_limit_exceeded");
    ngx_defarm_jw_key(w, "limit");
    ngx_defarm_jw_int(w, rl->limit);
    ngx_defarm_jw_key(w, "remaining");
    ngx_defarm_jw_int(w, 0);
    ngx_defarm_jw_key(w, "reset_at");
    ngx_defarm_jw_time(w, rl->reset);
    ngx_defarm_jw_key(w, "retry_after");
    ngx_defarm_jw_int(w, ngx_max(wait, 1));
}
