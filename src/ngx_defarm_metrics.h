
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#ifndef _NGX_DEFARM_METRICS_H_INCLUDED_
#define _NGX_DEFARM_METRICS_H_INCLUDED_


#include "ngx_defarm_module.h"
#include "pg/ngx_defarm_pg.h"
#include "redis/ngx_defarm_redis.h"
#include "auth/ngx_defarm_jwt_cache.h"
#include "jobs/ngx_defarm_jobs.h"


/*
 * One slot per worker process in a small shared zone: a worker claims a
 * free slot (or one of a process that is gone) with a compare-and-swap on
 * its pid and writes only there, so no lock is needed; a reader sums the
 * slots of live processes.  During a reload the old workers keep their
 * slots while they drain, the new ones take others.
 */

#define NGX_DEFARM_STATS_SLOTS  256


typedef struct {
    ngx_atomic_t               pid;
    ngx_defarm_pg_stats_t      pg;
    ngx_defarm_redis_stats_t   redis;
    ngx_defarm_jwt_cache_stats_t  jwt_cache;
    ngx_defarm_jobs_stats_t    jobs;
} ngx_defarm_stats_slot_t;


ngx_int_t ngx_defarm_metrics_add_zone(ngx_conf_t *cf);
ngx_int_t ngx_defarm_metrics_init_process(ngx_cycle_t *cycle);
ngx_defarm_stats_slot_t *ngx_defarm_metrics_slot(void);
ngx_int_t ngx_defarm_metrics_handler(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);


#endif /* _NGX_DEFARM_METRICS_H_INCLUDED_ */
