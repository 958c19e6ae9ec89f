
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "ngx_defarm_module.h"
#include "ngx_defarm_router.h"
#include "ngx_defarm_response.h"
#include "ngx_defarm_metrics.h"
#include "pg/ngx_defarm_pg.h"
#include "cache/ngx_defarm_cache.h"
#include "auth/ngx_defarm_charge.h"
#include "auth/ngx_defarm_crypt.h"
#include "auth/ngx_defarm_jwt.h"
#include "auth/ngx_defarm_jwt_cache.h"
#include "auth/ngx_defarm_usage.h"
#include "redis/ngx_defarm_redis.h"
#include "api/ngx_defarm_api.h"
#include "jobs/ngx_defarm_jobs.h"
#include "ws/ngx_defarm_ws.h"
#include "http/ngx_defarm_curl.h"
#include "auth/ngx_defarm_sealed.h"
#include "provenance/ngx_defarm_attest.h"

#include <openssl/evp.h>


static ngx_int_t ngx_defarm_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_defarm_postconfiguration(ngx_conf_t *cf);
static void *ngx_defarm_create_main_conf(ngx_conf_t *cf);
static char *ngx_defarm_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_defarm_create_loc_conf(ngx_conf_t *cf);
static char *ngx_defarm_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_defarm_set_handler(ngx_conf_t *cf, void *post, void *data);
static ngx_int_t ngx_defarm_init_process(ngx_cycle_t *cycle);
static void ngx_defarm_exit_process(ngx_cycle_t *cycle);


/* a conf post that also names the content handler its directive installs */

typedef struct {
    ngx_conf_post_handler_pt   post_handler;
    ngx_http_handler_pt        handler;
    ngx_uint_t                 api;           /* needs auth's resources */
} ngx_defarm_handler_post_t;


static ngx_defarm_handler_post_t  ngx_defarm_api_post = {
    ngx_defarm_set_handler, ngx_defarm_content_handler, 1
};

static ngx_defarm_handler_post_t  ngx_defarm_health_post = {
    ngx_defarm_set_handler, ngx_defarm_content_handler, 0
};

static ngx_defarm_handler_post_t  ngx_defarm_errors_post = {
    ngx_defarm_set_handler, ngx_defarm_errors_handler, 0
};

static ngx_conf_num_bounds_t  ngx_defarm_json_depth_bounds = {
    ngx_conf_check_num_bounds, 1, 128
};

static ngx_conf_num_bounds_t  ngx_defarm_json_nodes_bounds = {
    ngx_conf_check_num_bounds, 1, 10000000
};


static ngx_command_t  ngx_defarm_commands[] = {

    { ngx_string("defarm_api"),
      NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_defarm_loc_conf_t, api),
      &ngx_defarm_api_post },

    { ngx_string("defarm_health"),
      NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_defarm_loc_conf_t, health),
      &ngx_defarm_health_post },

    { ngx_string("defarm_errors"),
      NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_defarm_loc_conf_t, errors),
      &ngx_defarm_errors_post },

    { ngx_string("defarm_echo"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_defarm_loc_conf_t, echo),
      NULL },

    { ngx_string("defarm_json_max_depth"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_defarm_loc_conf_t, json_max_depth),
      &ngx_defarm_json_depth_bounds },

    { ngx_string("defarm_json_max_values"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_defarm_loc_conf_t, json_max_nodes),
      &ngx_defarm_json_nodes_bounds },

    { ngx_string("defarm_json_max_memory"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_defarm_loc_conf_t, json_max_memory),
      NULL },

    { ngx_string("defarm_db"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_defarm_pg_set_db,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_defarm_main_conf_t, db),
      NULL },

    { ngx_string("defarm_cache"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_defarm_cache_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_defarm_main_conf_t, cache),
      NULL },

    { ngx_string("defarm_item_cache"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_defarm_loc_conf_t, item_cache),
      NULL },

    { ngx_string("defarm_crypt_pool"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_defarm_crypt_set_pool,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("defarm_bcrypt_cost"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_defarm_crypt_set_cost,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("defarm_jwt_secret"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_defarm_jwt_set_secret,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("defarm_credits"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_defarm_main_conf_t, credits),
      NULL },

    { ngx_string("defarm_tier_limits"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_defarm_main_conf_t, tier_limits),
      NULL },

    { ngx_string("defarm_jobs"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_ANY,
      ngx_defarm_jobs_set,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("defarm_smtp"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_defarm_smtp_set,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("defarm_secret_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_defarm_secret_key_set,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("defarm_attestation_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_defarm_attest_key_set,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("defarm_webhooks_allow_private"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_defarm_main_conf_t, webhooks_private),
      NULL },

    { ngx_string("defarm_ws_ping_interval"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_defarm_main_conf_t, ws.ping),
      NULL },

    { ngx_string("defarm_ws_send_buffer"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_defarm_main_conf_t, ws.send_buffer),
      NULL },

    { ngx_string("defarm_ws_max_message"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_defarm_main_conf_t, ws.max_message),
      NULL },

    { ngx_string("defarm_jwt_cache"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_defarm_jwt_cache_set,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("defarm_jwt_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_defarm_jwt_set_time,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_defarm_jwt_conf_t, ttl),
      NULL },

    { ngx_string("defarm_jwt_leeway"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_defarm_jwt_set_time,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_defarm_jwt_conf_t, leeway),
      NULL },

    { ngx_string("defarm_password_reset_log"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_defarm_main_conf_t, reset_log),
      NULL },

    { ngx_string("defarm_password_reset_limit"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_defarm_main_conf_t, reset_limit),
      NULL },

    { ngx_string("defarm_api_key_usage_flush"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_defarm_main_conf_t, usage_flush),
      NULL },

    { ngx_string("defarm_user_status_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_defarm_main_conf_t, status_ttl),
      NULL },

    { ngx_string("defarm_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_defarm_redis_set,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_defarm_main_conf_t, redis),
      NULL },

    { ngx_string("defarm_db_query_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_defarm_loc_conf_t, db_query_timeout),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_defarm_module_ctx = {
    ngx_defarm_preconfiguration,           /* preconfiguration */
    ngx_defarm_postconfiguration,          /* postconfiguration */

    ngx_defarm_create_main_conf,           /* create main configuration */
    ngx_defarm_init_main_conf,             /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_defarm_create_loc_conf,            /* create location configuration */
    ngx_defarm_merge_loc_conf              /* merge location configuration */
};


ngx_module_t  ngx_defarm_module = {
    NGX_MODULE_V1,
    &ngx_defarm_module_ctx,                /* module context */
    ngx_defarm_commands,                   /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_defarm_init_process,               /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_defarm_exit_process,               /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_str_t  ngx_defarm_request_id = ngx_string("request_id");


static ngx_int_t
ngx_defarm_preconfiguration(ngx_conf_t *cf)
{
    return ngx_defarm_add_variables(cf);
}


static ngx_int_t
ngx_defarm_postconfiguration(ngx_conf_t *cf)
{
    ngx_defarm_route_t      **table;
    ngx_defarm_main_conf_t   *mcf;

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_defarm_module);

    mcf->request_id_index = ngx_http_get_variable_index(cf,
                                                  &ngx_defarm_request_id);
    if (mcf->request_id_index == NGX_ERROR) {
        return NGX_ERROR;
    }

    for (table = ngx_defarm_route_tables; *table; table++) {
        if (ngx_defarm_router_add(cf, mcf, *table) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (ngx_defarm_charge_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_defarm_metrics_add_zone(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_defarm_response_init();
    ngx_defarm_request_body_init();

    return NGX_OK;
}


static void *
ngx_defarm_create_main_conf(ngx_conf_t *cf)
{
    ngx_defarm_main_conf_t  *mcf;

    mcf = ngx_pcalloc(cf->pool, sizeof(ngx_defarm_main_conf_t));
    if (mcf == NULL) {
        return NULL;
    }

    mcf->request_id_index = NGX_ERROR;

    mcf->crypt = ngx_pcalloc(cf->pool, sizeof(ngx_defarm_crypt_conf_t));
    mcf->jwt = ngx_pcalloc(cf->pool, sizeof(ngx_defarm_jwt_conf_t));

    if (mcf->crypt == NULL || mcf->jwt == NULL) {
        return NULL;
    }

    mcf->reset_log = NGX_CONF_UNSET;
    mcf->reset_limit = NGX_CONF_UNSET_UINT;
    mcf->usage_flush = NGX_CONF_UNSET_MSEC;
    mcf->status_ttl = NGX_CONF_UNSET_MSEC;
    mcf->credits = NGX_CONF_UNSET;
    mcf->tier_limits = NGX_CONF_UNSET;
    mcf->webhooks_private = NGX_CONF_UNSET;
    mcf->ws.ping = NGX_CONF_UNSET_MSEC;
    mcf->ws.send_buffer = NGX_CONF_UNSET_SIZE;
    mcf->ws.max_message = NGX_CONF_UNSET_SIZE;
    mcf->crypt->cost = NGX_CONF_UNSET_UINT;
    mcf->jwt->ttl = NGX_CONF_UNSET;
    mcf->jwt->leeway = NGX_CONF_UNSET;
    mcf->jwt->cache_max = NGX_CONF_UNSET_UINT;

    return mcf;
}


static char *
ngx_defarm_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_defarm_main_conf_t  *mcf = conf;

    char        *rv;
    const char  *settings[5];

    ngx_conf_init_value(mcf->reset_log, 0);
    ngx_conf_init_uint_value(mcf->reset_limit, 3);
    ngx_conf_init_msec_value(mcf->usage_flush, 10000);
    ngx_conf_init_msec_value(mcf->status_ttl, 10000);

    if (mcf->status_ttl == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"defarm_user_status_ttl\" must be more "
                           "than 0");
        return NGX_CONF_ERROR;
    }

    if (mcf->usage_flush == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"defarm_api_key_usage_flush\" must be more "
                           "than 0");
        return NGX_CONF_ERROR;
    }
    ngx_conf_init_value(mcf->jwt->ttl, 86400);
    ngx_conf_init_value(mcf->jwt->leeway, 60);
    ngx_conf_init_value(mcf->credits, 0);
    ngx_conf_init_value(mcf->tier_limits, 0);
    ngx_conf_init_value(mcf->webhooks_private, 0);

    rv = ngx_defarm_ws_init_conf(cf, &mcf->ws);
    if (rv != NGX_CONF_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s", rv);
        return NGX_CONF_ERROR;
    }

    /*
     * The switches of metering reach the SQL that meters as settings of
     * every session (sql/029), whichever route or batch creates an item.
     */

    settings[0] = mcf->credits ? "defarm.credits=on" : "defarm.credits=off";
    settings[1] = mcf->tier_limits ? "defarm.tier_limits=on"
                                   : "defarm.tier_limits=off";
    settings[2] = mcf->smtp ? "defarm.smtp=on" : "defarm.smtp=off";
    settings[3] = mcf->secret_key ? (const char *) mcf->secret_key->data
                                  : NULL;
    settings[4] = NULL;

    if (mcf->db
        && ngx_defarm_pg_conf_settings(cf, mcf->db, settings) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }
    ngx_conf_init_uint_value(mcf->jwt->cache_max, 4096);

    /* the thread pool is asked for only where the API is served */

    if (!mcf->api_used) {
        return NGX_CONF_OK;
    }

    return ngx_defarm_crypt_init_conf(cf, mcf->crypt);
}


static void *
ngx_defarm_create_loc_conf(ngx_conf_t *cf)
{
    ngx_defarm_loc_conf_t  *lcf;

    lcf = ngx_pcalloc(cf->pool, sizeof(ngx_defarm_loc_conf_t));
    if (lcf == NULL) {
        return NULL;
    }

    lcf->api = NGX_CONF_UNSET;
    lcf->health = NGX_CONF_UNSET;
    lcf->errors = NGX_CONF_UNSET;
    lcf->echo = NGX_CONF_UNSET;
    lcf->json_max_depth = NGX_CONF_UNSET_UINT;
    lcf->json_max_nodes = NGX_CONF_UNSET_UINT;
    lcf->json_max_memory = NGX_CONF_UNSET_SIZE;
    lcf->db_query_timeout = NGX_CONF_UNSET_MSEC;
    lcf->item_cache = NGX_CONF_UNSET;

    return lcf;
}


static char *
ngx_defarm_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_defarm_loc_conf_t *prev = parent;
    ngx_defarm_loc_conf_t *conf = child;

    /*
     * defarm_api, defarm_health and defarm_errors install a content
     * handler in their own location, like "return" or "proxy_pass": they
     * are not inherited.
     */

    if (conf->api == NGX_CONF_UNSET) {
        conf->api = 0;
    }

    if (conf->health == NGX_CONF_UNSET) {
        conf->health = 0;
    }

    if (conf->errors == NGX_CONF_UNSET) {
        conf->errors = 0;
    }

    ngx_conf_merge_value(conf->echo, prev->echo, 0);
    ngx_conf_merge_value(conf->item_cache, prev->item_cache, 1);
    ngx_conf_merge_uint_value(conf->json_max_depth, prev->json_max_depth, 32);
    ngx_conf_merge_uint_value(conf->json_max_nodes, prev->json_max_nodes,
                              65536);
    ngx_conf_merge_size_value(conf->json_max_memory, prev->json_max_memory,
                              2 * 1024 * 1024);

    if (conf->json_max_memory < 1024) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"defarm_json_max_memory\" must be at least 1k");
        return NGX_CONF_ERROR;
    }
    ngx_conf_merge_msec_value(conf->db_query_timeout, prev->db_query_timeout,
                              5000);

    if (conf->db_query_timeout == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"defarm_db_query_timeout\" must be more than 0");
        return NGX_CONF_ERROR;
    }

    if (conf->api && (conf->health || conf->errors)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"defarm_api\" already serves the health routes "
                           "and cannot share a location with "
                           "\"defarm_health\" or \"defarm_errors\"");
        return NGX_CONF_ERROR;
    }

    if (conf->health && conf->errors) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"defarm_health\" and \"defarm_errors\" cannot "
                           "share a location");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_defarm_set_handler(ngx_conf_t *cf, void *post, void *data)
{
    ngx_defarm_handler_post_t  *hp = post;
    ngx_flag_t                 *fp = data;

    ngx_defarm_main_conf_t    *mcf;
    ngx_http_core_loc_conf_t  *clcf;

    if (!*fp) {
        return NGX_CONF_OK;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler != NULL
        && clcf->handler != ngx_defarm_content_handler
        && clcf->handler != ngx_defarm_errors_handler)
    {
        return "conflicts with another content handler in this location";
    }

    clcf->handler = hp->handler;

    if (hp->api) {
        mcf = ngx_http_conf_get_module_main_conf(cf, ngx_defarm_module);
        mcf->api_used = 1;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_defarm_init_process(ngx_cycle_t *cycle)
{
    ngx_defarm_main_conf_t  *mcf;

    /* workers only: not the master, the cache manager or the loader */

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    mcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_defarm_module);
    if (mcf == NULL) {
        return NGX_OK;
    }

    if (ngx_defarm_metrics_init_process(cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_defarm_jwt_cache_init_process(cycle, mcf->jwt) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_defarm_usage_init_process(cycle, mcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_defarm_redis_init_process(cycle, mcf->redis) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_defarm_pg_init_process(cycle, mcf->db) != NGX_OK) {
        return NGX_ERROR;
    }

    /* outbound HTTP: for jobs, and for the probes requests make */

    if (mcf->db && ngx_defarm_curl_init_process(cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_defarm_sealed_init(mcf->secret_key);

    /* the jobs and what they need, where they are run */

    if (mcf->jobs == NULL) {
        return NGX_OK;
    }

    ngx_defarm_smtp_init_process(mcf->smtp);
    ngx_defarm_webhook_init_process(mcf->webhooks_private);

    return ngx_defarm_jobs_init_process(cycle, mcf->jobs, mcf->db);
}


static void
ngx_defarm_exit_process(ngx_cycle_t *cycle)
{
    ngx_defarm_cache_exit_process(cycle);
    ngx_defarm_usage_exit_process(cycle);
    ngx_defarm_redis_exit_process(cycle);
    ngx_defarm_jobs_exit_process(cycle);
    ngx_defarm_ws_hub_exit_process(cycle);
    ngx_defarm_curl_exit_process(cycle);
    ngx_defarm_pg_exit_process(cycle);
}


ngx_int_t
ngx_defarm_conf_msec(ngx_str_t *arg, ngx_defarm_conf_msec_t *params)
{
    size_t      len;
    ngx_str_t   s;
    ngx_msec_t  ms;

    for ( /* void */ ; params->name; params++) {
        len = ngx_strlen(params->name);

        if (arg->len <= len || ngx_strncmp(arg->data, params->name, len) != 0)
        {
            continue;
        }

        s.data = arg->data + len;
        s.len = arg->len - len;

        ms = ngx_parse_time(&s, 0);
        if (ms == (ngx_msec_t) NGX_ERROR || ms == 0) {
            return NGX_ERROR;
        }

        *params->value = ms;

        return NGX_OK;
    }

    return NGX_DECLINED;
}


ngx_defarm_ctx_t *
ngx_defarm_get_ctx(ngx_http_request_t *r)
{
    ngx_defarm_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_defarm_module);
    if (ctx) {
        return ctx;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_defarm_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    ctx->request_limit = -1;

    ngx_http_set_ctx(r, ctx, ngx_defarm_module);

    return ctx;
}


uint64_t
ngx_defarm_now_us(void)
{
    struct timeval  tv;

    ngx_gettimeofday(&tv);

    return (uint64_t) tv.tv_sec * 1000000 + tv.tv_usec;
}


/*
 * Forgets a connection whose socket a library owns (libpq, hiredis): its
 * timers and posted events go, the fd is left for the library to close.
 */

void
ngx_defarm_free_connection(ngx_connection_t *c)
{
    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    /* the kernel drops a closed socket from epoll by itself */

    c->read->active = 0;
    c->write->active = 0;

    ngx_free_connection(c);

    c->fd = (ngx_socket_t) -1;
}


/* SHA-256 as 64 lower-case hex digits (API keys, receipts) */

ngx_int_t
ngx_defarm_sha256_hex(ngx_pool_t *pool, u_char *data, size_t len,
    ngx_str_t *hex)
{
    u_char        md[EVP_MAX_MD_SIZE];
    unsigned int  n;

    if (EVP_Digest(data, len, md, &n, EVP_sha256(), NULL) != 1) {
        return NGX_ERROR;
    }

    hex->data = ngx_pnalloc(pool, 2 * n);
    if (hex->data == NULL) {
        return NGX_ERROR;
    }

    hex->len = ngx_hex_dump(hex->data, md, n) - hex->data;

    return NGX_OK;
}


/* booleans as PostgreSQL parameters */

ngx_str_t  ngx_defarm_true = ngx_string("true");
ngx_str_t  ngx_defarm_false = ngx_string("false");


/* 8-4-4-4-12 hex digits, as PostgreSQL's uuid type reads it */

ngx_uint_t
ngx_defarm_is_uuid(ngx_str_t *s)
{
    size_t  i;

    if (s->len != 36) {
        return 0;
    }

    for (i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s->data[i] != '-') {
                return 0;
            }

        } else if (!((s->data[i] >= '0' && s->data[i] <= '9')
                     || ((s->data[i] | 0x20) >= 'a'
                         && (s->data[i] | 0x20) <= 'f')))
        {
            return 0;
        }
    }

    return 1;
}
