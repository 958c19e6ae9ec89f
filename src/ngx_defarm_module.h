
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#ifndef _NGX_DEFARM_MODULE_H_INCLUDED_
#define _NGX_DEFARM_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


#define NGX_DEFARM_MAX_PARAMS  8


typedef struct ngx_defarm_json_s   ngx_defarm_json_t;
typedef struct ngx_defarm_route_s  ngx_defarm_route_t;
typedef struct ngx_defarm_pg_conf_s  ngx_defarm_pg_conf_t;
typedef struct ngx_defarm_cache_s    ngx_defarm_cache_t;
typedef struct ngx_defarm_crypt_conf_s  ngx_defarm_crypt_conf_t;
typedef struct ngx_defarm_jwt_conf_s    ngx_defarm_jwt_conf_t;
typedef struct ngx_defarm_json_writer_s ngx_defarm_json_writer_t;
typedef struct ngx_defarm_json_parser_s ngx_defarm_json_parser_t;
typedef struct ngx_defarm_redis_conf_s  ngx_defarm_redis_conf_t;


/* fields an error adds to its JSON body (a rate limit's figures) */

typedef void (*ngx_defarm_error_fields_pt)(ngx_http_request_t *r,
    ngx_defarm_json_writer_t *w, void *data);


typedef enum {
    NGX_DEFARM_CACHE_NONE = 0,
    NGX_DEFARM_CACHE_HIT,
    NGX_DEFARM_CACHE_MISS,
    NGX_DEFARM_CACHE_BYPASS
} ngx_defarm_cache_status_e;


/* "defarm_ws_*" directives: the notification sockets (src/ws/) */

typedef struct {
    ngx_msec_t                 ping;          /* defarm_ws_ping_interval */
    size_t                     send_buffer;   /* defarm_ws_send_buffer */
    size_t                     max_message;   /* defarm_ws_max_message */
} ngx_defarm_ws_conf_t;


typedef struct {
    ngx_int_t                  request_id_index;
    ngx_array_t               *routes;        /* ngx_defarm_croute_t */
    ngx_defarm_pg_conf_t      *db;            /* defarm_db */
    ngx_defarm_cache_t        *cache;         /* defarm_cache */
    ngx_defarm_redis_conf_t   *redis;         /* defarm_redis */
    ngx_defarm_crypt_conf_t   *crypt;
    ngx_defarm_jwt_conf_t     *jwt;
    ngx_uint_t                 api_used;      /* a defarm_api location */
    ngx_flag_t                 reset_log;     /* defarm_password_reset_log */
    ngx_uint_t                 reset_limit;   /* ..._reset_limit */
    ngx_msec_t                 usage_flush;   /* ..._api_key_usage_flush */
    ngx_msec_t                 status_ttl;    /* defarm_user_status_ttl */
    ngx_flag_t                 credits;       /* defarm_credits */
    ngx_flag_t                 tier_limits;   /* defarm_tier_limits */
    void                      *jobs;          /* defarm_jobs */
    void                      *smtp;          /* defarm_smtp */
    ngx_str_t                 *secret_key;    /* defarm_secret_key */
    ngx_flag_t                 webhooks_private;
    void                      *attest;        /* defarm_attestation_key */
    ngx_defarm_ws_conf_t       ws;
} ngx_defarm_main_conf_t;


typedef struct {
    ngx_flag_t                 api;           /* defarm_api */
    ngx_flag_t                 health;        /* defarm_health */
    ngx_flag_t                 errors;        /* defarm_errors */
    ngx_flag_t                 echo;          /* defarm_echo */
    ngx_uint_t                 json_max_depth;
    ngx_uint_t                 json_max_nodes;
    size_t                     json_max_memory;
    ngx_msec_t                 db_query_timeout;
    ngx_flag_t                 item_cache;    /* defarm_item_cache */
} ngx_defarm_loc_conf_t;


typedef struct {
    ngx_str_t                  name;
    ngx_str_t                  value;
} ngx_defarm_param_t;


/* per-request state, kept in the module's request context */

typedef struct {
    ngx_defarm_route_t        *route;
    ngx_defarm_param_t         params[NGX_DEFARM_MAX_PARAMS];
    ngx_uint_t                 nparams;

    ngx_defarm_json_t         *body;
    ngx_defarm_json_parser_t  *parser;        /* while the body arrives */

    ngx_str_t                  error_kind;
    ngx_str_t                  user_id;
    ngx_str_t                  workspace_id;  /* data NULL: none */
    ngx_str_t                  tier;
    ngx_int_t                  request_limit; /* the tier's an hour; -1 */
    time_t                     token_expires; /* by JWT: its exp */
    ngx_str_t                  key_id;        /* by API key: its id */
    ngx_uint_t                 key_perms;     /* NGX_DEFARM_PERM_* */
    ngx_defarm_cache_status_e  cache_status;
    ngx_atomic_uint_t          cache_generation;  /* at the last miss */

    ngx_defarm_error_fields_pt error_fields;
    void                      *error_data;

    /* microseconds spent waiting for the cache lock, PostgreSQL, crypt */
    uint64_t                   lock_us;
    uint64_t                   db_us;
    uint64_t                   crypt_us;

    unsigned                   api_charged:1; /* ngx_defarm_charge.c */
    unsigned                   lock_timed:1;
    unsigned                   db_timed:1;
    unsigned                   crypt_timed:1;

    unsigned                   drop_body:1;   /* read, not parsed */

    unsigned                   via_key:1;     /* the principal: a key's */
    unsigned                   admin_known:1; /* is_admin was looked up */
    unsigned                   is_admin:1;
} ngx_defarm_ctx_t;


/* "name=time" parameters of a directive, matched against a table */

typedef struct {
    const char                *name;          /* "queue_timeout=" */
    ngx_msec_t                *value;
} ngx_defarm_conf_msec_t;


ngx_int_t ngx_defarm_conf_msec(ngx_str_t *arg, ngx_defarm_conf_msec_t *params);
ngx_int_t ngx_defarm_content_handler(ngx_http_request_t *r);
ngx_int_t ngx_defarm_errors_handler(ngx_http_request_t *r);
void ngx_defarm_request_body_init(void);
void ngx_defarm_request_wait(ngx_http_request_t *r);
ngx_int_t ngx_defarm_idempotency_key(ngx_http_request_t *r, ngx_str_t *key,
    ngx_str_t *err);
ngx_defarm_ctx_t *ngx_defarm_get_ctx(ngx_http_request_t *r);
ngx_table_elt_t *ngx_defarm_header(ngx_http_request_t *r, const char *name);
ngx_str_t *ngx_defarm_param(ngx_defarm_ctx_t *ctx, const char *name);
ngx_int_t ngx_defarm_add_variables(ngx_conf_t *cf);
void ngx_defarm_free_connection(ngx_connection_t *c);
ngx_uint_t ngx_defarm_is_uuid(ngx_str_t *s);
ngx_int_t ngx_defarm_sha256_hex(ngx_pool_t *pool, u_char *data, size_t len,
    ngx_str_t *hex);
uint64_t ngx_defarm_now_us(void);


extern ngx_module_t  ngx_defarm_module;
extern ngx_str_t     ngx_defarm_true;
extern ngx_str_t     ngx_defarm_false;


#endif /* _NGX_DEFARM_MODULE_H_INCLUDED_ */
