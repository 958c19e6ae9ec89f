
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#ifndef _NGX_DEFARM_REDIS_H_INCLUDED_
#define _NGX_DEFARM_REDIS_H_INCLUDED_


#include "ngx_defarm_module.h"

#include <hiredis/hiredis.h>


/* "defarm_redis" configuration, in the main configuration */

struct ngx_defarm_redis_conf_s {
    ngx_str_t                  name;          /* host:port, as configured */
    u_char                    *addr;          /* resolved, NUL-terminated */
    ngx_uint_t                 port;
    ngx_int_t                  db;            /* -1: no SELECT */
    ngx_str_t                  password;      /* empty: no AUTH */
    ngx_str_t                  channel;       /* invalidations */
    ngx_msec_t                 timeout;       /* a command's budget */
    ngx_msec_t                 connect_timeout;
    ngx_msec_t                 retry_max;
};


/* per-worker figures, kept in the stats zone (ngx_defarm_metrics.c) */

typedef struct {
    ngx_atomic_uint_t          connected;     /* gauge: 0 or 1 */
    ngx_atomic_uint_t          commands;      /* counters */
    ngx_atomic_uint_t          errors;
    ngx_atomic_uint_t          timeouts;
    ngx_atomic_uint_t          reconnects;
    ngx_atomic_uint_t          fallbacks;
    ngx_atomic_uint_t          published;
    ngx_atomic_uint_t          applied;
} ngx_defarm_redis_stats_t;


/*
 * Called with the reply, or with NULL when Redis is not configured, not
 * connected, or did not answer within its budget (the caller falls back).
 * The reply is hiredis's and only valid during the call.  The return value
 * finalizes the request.
 */

typedef ngx_int_t (*ngx_defarm_redis_done_pt)(ngx_http_request_t *r,
    void *data, redisReply *reply);


char *ngx_defarm_redis_set(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
ngx_int_t ngx_defarm_redis_init_process(ngx_cycle_t *cycle,
    ngx_defarm_redis_conf_t *rcf);
void ngx_defarm_redis_exit_process(ngx_cycle_t *cycle);

ngx_int_t ngx_defarm_redis_command(ngx_http_request_t *r,
    ngx_defarm_redis_done_pt done, void *data, int argc, const char **argv,
    const size_t *argvlen);
void ngx_defarm_redis_publish(ngx_str_t *message);
ngx_uint_t ngx_defarm_redis_connected(void);
ngx_defarm_redis_stats_t *ngx_defarm_redis_stats(void);


#endif /* _NGX_DEFARM_REDIS_H_INCLUDED_ */
