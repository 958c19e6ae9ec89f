
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#ifndef _NGX_DEFARM_CACHE_H_INCLUDED_
#define _NGX_DEFARM_CACHE_H_INCLUDED_


#include "ngx_defarm_module.h"


#define NGX_DEFARM_CACHE_GENERATIONS  1024
#define NGX_DEFARM_CACHE_WAIT_BUCKETS 6


typedef enum {
    NGX_DEFARM_CACHE_GET = 0,
    NGX_DEFARM_CACHE_SET,
    NGX_DEFARM_CACHE_DELETE,
    NGX_DEFARM_CACHE_DELETE_PREFIX,
    NGX_DEFARM_CACHE_INCR,
    NGX_DEFARM_CACHE_SET_IF
} ngx_defarm_cache_op_e;


/* zone-wide figures; counters touched outside the lock are atomic */

typedef struct {
    ngx_atomic_t               hits;
    ngx_atomic_t               misses;
    ngx_atomic_t               sets;
    ngx_atomic_t               evictions;
    ngx_atomic_t               oversize;      /* refused, over max_value */
    ngx_atomic_t               expired;
    ngx_atomic_t               lock_first_try;
    ngx_atomic_t               lock_retries;
    ngx_atomic_t               lock_timeouts;
    ngx_atomic_t               wait[NGX_DEFARM_CACHE_WAIT_BUCKETS];
    ngx_atomic_t               wait_sum_us;
    ngx_atomic_t               entries;
} ngx_defarm_cache_stats_t;


typedef struct {
    ngx_rbtree_t               rbtree;
    ngx_rbtree_node_t          sentinel;
    ngx_queue_t                lru;
    ngx_atomic_t               generation[NGX_DEFARM_CACHE_GENERATIONS];
    ngx_defarm_cache_stats_t   stats;
} ngx_defarm_cache_sh_t;


struct ngx_defarm_cache_s {
    ngx_shm_zone_t            *zone;
    ngx_defarm_cache_sh_t     *sh;
    ngx_slab_pool_t           *shpool;
    ngx_msec_t                 ttl;
    ngx_msec_t                 lock_timeout;
    ngx_msec_t                 lock_step;
    size_t                     max_value;     /* key and value, bytes */
};


/*
 * Called once the operation ran (rc NGX_OK; for a get, NGX_DECLINED on a
 * miss, with the value in request memory on a hit; for an increment, the
 * counter after it as a uint64_t in the value, or NGX_DECLINED when the
 * zone has no room for a new counter, or with no zone configured).
 *
 * A get that misses notes its family's generation in the request; a later
 * SET_IF of that request stores its value only if the family was not
 * invalidated since (NGX_DECLINED otherwise).  So a value read from the
 * database before a change and stored after its invalidation is dropped,
 * not served stale.  Counters (INCR) ignore invalidation.
 * When the lock stayed busy for the whole budget the request has already
 * been answered with 503 storage_lock_timeout and the callback is not
 * called.  Its return value finalizes the request when the operation had
 * to wait.
 */

typedef ngx_int_t (*ngx_defarm_cache_done_pt)(ngx_http_request_t *r,
    void *data, ngx_int_t rc, ngx_str_t *value);


char *ngx_defarm_cache_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
void ngx_defarm_cache_invalidate(ngx_defarm_cache_t *cache, ngx_str_t *key);
void ngx_defarm_cache_invalidate_all(ngx_defarm_cache_t *cache);
void ngx_defarm_cache_forget(ngx_http_request_t *r, ngx_str_t *key);
ngx_int_t ngx_defarm_cache_run(ngx_http_request_t *r,
    ngx_defarm_cache_op_e op, ngx_str_t *key, ngx_str_t *value,
    ngx_msec_t ttl, ngx_defarm_cache_done_pt done, void *data);
ngx_defarm_cache_stats_t *ngx_defarm_cache_stats(ngx_http_request_t *r);
ngx_int_t ngx_defarm_cache_hold(ngx_http_request_t *r, ngx_msec_t ms);
ngx_int_t ngx_defarm_cache_release(ngx_http_request_t *r);
void ngx_defarm_cache_exit_process(ngx_cycle_t *cycle);


#endif /* _NGX_DEFARM_CACHE_H_INCLUDED_ */
