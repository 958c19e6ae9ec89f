
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "auth/ngx_defarm_ratelimit.h"
#include "cache/ngx_defarm_cache.h"
#include "redis/ngx_defarm_redis.h"
#include "ngx_defarm_response.h"


/*
 * Per-hour request limits: a counter per id and clock hour.  With
 * defarm_redis it is counted in Redis (one script: INCR, and EXPIRE on
 * the first), so every node counts together; without it, or while Redis
 * is unreachable or slower than its budget, in the shared-memory zone of
 * defarm_cache (this nginx's workers count together), under the zone's
 * trylock discipline, with a warning in the log.  Every
 * answer carries X-RateLimit-Limit, -Remaining and -Reset (the Unix time
 * the window ends); past the limit, 429 with the original service's
 * fields and Retry-After.  Fixed windows: a client can spend a limit at
 * the end of one hour and another at the start of the next.
 *
 * Two limits are counted so: an API key's own (rate_limit_per_hour), and,
 * with defarm_tier_limits on, a user's tier's requests an hour, over all
 * of the user's tokens and keys ("user:<id>").  A request by key reports
 * the key's limit in the headers; the tier's refusal is its own kind.
 */


typedef struct {
    ngx_defarm_ratelimit_pt    pass;
    void                      *data;
    ngx_str_t                 *tier;          /* NULL: a key's limit */
    ngx_uint_t                 headers;       /* X-RateLimit-* */
    ngx_uint_t                 limit;
    time_t                     reset;
    time_t                     now;
    ngx_str_t                  key;
} ngx_defarm_ratelimit_t;


static ngx_int_t ngx_defarm_ratelimit_count(ngx_http_request_t *r,
    ngx_defarm_ratelimit_t *rl, const char *prefix, ngx_str_t *id);
static ngx_int_t ngx_defarm_ratelimit_shared(ngx_http_request_t *r,
    void *data, redisReply *reply);
static ngx_int_t ngx_defarm_ratelimit_local(ngx_http_request_t *r,
    ngx_defarm_ratelimit_t *rl);
static ngx_int_t ngx_defarm_ratelimit_counted(ngx_http_request_t *r,
    void *data, ngx_int_t rc, ngx_str_t *value);
static ngx_int_t ngx_defarm_ratelimit_apply(ngx_http_request_t *r,
    ngx_defarm_ratelimit_t *rl, uint64_t n);
static void ngx_defarm_ratelimit_fields(ngx_http_request_t *r,
    ngx_defarm_json_writer_t *w, void *data);


/* atomic in Redis: the first request of a window sets its expiry */

static const char  ngx_defarm_ratelimit_script[] =
    "local n = redis.call('INCR', KEYS[1]) "
    "if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end "
    "return n";


ngx_int_t
ngx_defarm_ratelimit_hourly(ngx_http_request_t *r, ngx_str_t *id,
    ngx_uint_t limit, ngx_defarm_ratelimit_pt pass, void *data)
{
    ngx_defarm_ratelimit_t  *rl;

    rl = ngx_pcalloc(r->pool, sizeof(ngx_defarm_ratelimit_t));
    if (rl == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rl->pass = pass;
    rl->data = data;
    rl->limit = limit;
    rl->headers = 1;

    return ngx_defarm_ratelimit_count(r, rl, "", id);
}


/* the tier's limit of the caller (ctx->request_limit, ctx->tier) */

ngx_int_t
ngx_defarm_ratelimit_tier(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx,
    ngx_defarm_ratelimit_pt pass, void *data)
{
    ngx_defarm_ratelimit_t  *rl;

    rl = ngx_pcalloc(r->pool, sizeof(ngx_defarm_ratelimit_t));
    if (rl == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rl->pass = pass;
    rl->data = data;
    rl->limit = ctx->request_limit;
    rl->tier = &ctx->tier;
    rl->headers = (ctx->key_id.len == 0);

    return ngx_defarm_ratelimit_count(r, rl, "user:", &ctx->user_id);
}


static ngx_int_t
ngx_defarm_ratelimit_count(ngx_http_request_t *r, ngx_defarm_ratelimit_t *rl,
    const char *prefix, ngx_str_t *id)
{
    time_t                   now, hour;
    size_t                   argvlen[5];
    ngx_str_t                key, ttl;
    const char              *argv[5];
    ngx_defarm_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_defarm_module);

    if (mcf->cache == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "defarm: %s rate limits need \"defarm_cache\"",
                      rl->tier ? "tier" : "API-key");
        return ngx_defarm_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                NGX_DEFARM_ERR_INTERNAL,
                                "Rate limiting is not configured");
    }

    now = ngx_time();
    hour = now / 3600;

    rl->now = now;
    rl->reset = (hour + 1) * 3600;

    key.len = sizeof("defarm:ratelimit::") - 1 + ngx_strlen(prefix)
              + id->len + NGX_TIME_T_LEN;
    key.data = ngx_pnalloc(r->pool, key.len);
    if (key.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    key.len = ngx_sprintf(key.data, "defarm:ratelimit:%s%V:%T", prefix, id,
                          hour)
              - key.data;
    rl->key = key;

    if (mcf->redis == NULL) {
        return ngx_defarm_ratelimit_local(r, rl);
    }

    ttl.data = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
    if (ttl.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the counter outlives its window by a second, then goes */

    ttl.len = ngx_sprintf(ttl.data, "%T", rl->reset - now + 1) - ttl.data;

    argv[0] = "EVAL";
    argv[1] = ngx_defarm_ratelimit_script;
    argv[2] = "1";
    argv[3] = (const char *) key.data;
    argv[4] = (const char *) ttl.data;

    argvlen[0] = 4;
    argvlen[1] = sizeof(ngx_defarm_ratelimit_script) - 1;
    argvlen[2] = 1;
    argvlen[3] = key.len;
    argvlen[4] = ttl.len;

    return ngx_defarm_redis_command(r, ngx_defarm_ratelimit_shared, rl, 5,
                                    argv, argvlen);
}


static ngx_int_t
ngx_defarm_ratelimit_shared(ngx_http_request_t *r, void *data,
    redisReply *reply)
{
    ngx_defarm_ratelimit_t  *rl = data;

    static time_t  warned;

    if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer > 0) {
        return ngx_defarm_ratelimit_apply(r, rl, (uint64_t) reply->integer);
    }

    /* Redis is away or slow: this node counts alone meanwhile */

    ngx_defarm_redis_stats()->fallbacks++;

    if (ngx_time() - warned >= 10) {
        warned = ngx_time();
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "defarm: Redis unavailable for rate limits: counting "
                      "in this node's shared memory meanwhile");
    }

    return ngx_defarm_ratelimit_local(r, rl);
}


static ngx_int_t
ngx_defarm_ratelimit_local(ngx_http_request_t *r, ngx_defarm_ratelimit_t *rl)
{
    return ngx_defarm_cache_run(r, NGX_DEFARM_CACHE_INCR, &rl->key, NULL,
                                (ngx_msec_t) (rl->reset - rl->now + 1) * 1000,
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

    uint64_t  n;

    if (rc != NGX_OK || value == NULL || value->len != sizeof(uint64_t)) {
        /* no room for the counter: refuse rather than go unlimited */
        return ngx_defarm_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                NGX_DEFARM_ERR_SERVICE_UNAVAILABLE,
                                "Rate limit state unavailable, please "
                                "retry");
    }

    ngx_memcpy(&n, value->data, sizeof(uint64_t));

    return ngx_defarm_ratelimit_apply(r, rl, n);
}


static ngx_int_t
ngx_defarm_ratelimit_apply(ngx_http_request_t *r, ngx_defarm_ratelimit_t *rl,
    uint64_t n)
{
    time_t             wait;
    ngx_defarm_ctx_t  *ctx;

    if (rl->headers
        && (ngx_defarm_ratelimit_header(r, "X-RateLimit-Limit", rl->limit)
               != NGX_OK
            || ngx_defarm_ratelimit_header(r, "X-RateLimit-Remaining",
                                           n < rl->limit ? rl->limit - n : 0)
               != NGX_OK
            || ngx_defarm_ratelimit_header(r, "X-RateLimit-Reset",
                                           rl->reset)
               != NGX_OK))
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

    if (rl->tier) {
        return ngx_defarm_error(r, NGX_HTTP_TOO_MANY_REQUESTS,
                                NGX_DEFARM_ERR_REQUEST_LIMIT,
                                "The %V tier allows %ui requests an hour",
                                rl->tier, rl->limit);
    }

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

    if (rl->tier) {
        ngx_defarm_jw_key(w, "tier");
        ngx_defarm_jw_str(w, rl->tier);

    } else {
        ngx_defarm_jw_key(w, "code");
        ngx_defarm_jw_cstr(w, "rate_limit_exceeded");
    }

    ngx_defarm_jw_key(w, "limit");
    ngx_defarm_jw_int(w, rl->limit);
    ngx_defarm_jw_key(w, "remaining");
    ngx_defarm_jw_int(w, 0);
    ngx_defarm_jw_key(w, "reset_at");
    ngx_defarm_jw_time(w, rl->reset);
    ngx_defarm_jw_key(w, "retry_after");
    ngx_defarm_jw_int(w, ngx_max(wait, 1));
}
