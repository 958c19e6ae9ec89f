
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "api/ngx_defarm_api.h"
#include "redis/ngx_defarm_redis.h"


/*
 * GET /health/redis: this worker's link to Redis.  Redis is optional: not
 * configured is healthy; configured and unreachable is 503 (the API still
 * serves, with rate limits counted per node meanwhile).
 */


static ngx_int_t ngx_defarm_redis_health(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);


ngx_defarm_route_t  ngx_defarm_redis_routes[] = {

    { NGX_HTTP_GET, ngx_string("/health/redis"),
      ngx_defarm_redis_health, NGX_DEFARM_ROUTE_HEALTH },

    ngx_defarm_route_null
};


static ngx_int_t
ngx_defarm_redis_health(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_uint_t                 up;
    const char                *status;
    ngx_defarm_main_conf_t    *mcf;
    ngx_defarm_redis_stats_t  *st;
    ngx_defarm_json_writer_t  *w;

    mcf = ngx_http_get_module_main_conf(r, ngx_defarm_module);

    up = ngx_defarm_redis_connected();

    if (mcf->redis == NULL) {
        status = "not_configured";

    } else {
        status = up ? "connected" : "disconnected";
    }

    w = ngx_defarm_json_writer(r);
    if (w == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    st = ngx_defarm_redis_stats();

    ngx_defarm_jw_map_open(w);
    ngx_defarm_jw_key(w, "status");
    ngx_defarm_jw_cstr(w, status);

    if (mcf->redis) {
        ngx_defarm_jw_key(w, "address");
        ngx_defarm_jw_str(w, &mcf->redis->name);
        ngx_defarm_jw_key(w, "worker_pid");
        ngx_defarm_jw_int(w, ngx_pid);
        ngx_defarm_jw_key(w, "commands");
        ngx_defarm_jw_int(w, st->commands);
        ngx_defarm_jw_key(w, "errors");
        ngx_defarm_jw_int(w, st->errors);
        ngx_defarm_jw_key(w, "timeouts");
        ngx_defarm_jw_int(w, st->timeouts);
        ngx_defarm_jw_key(w, "reconnects");
        ngx_defarm_jw_int(w, st->reconnects);
        ngx_defarm_jw_key(w, "fallbacks");
        ngx_defarm_jw_int(w, st->fallbacks);
    }

    ngx_defarm_jw_map_close(w);

    return ngx_defarm_send(r, (mcf->redis && !up)
                              ? NGX_HTTP_SERVICE_UNAVAILABLE : NGX_HTTP_OK,
                           w);
}
