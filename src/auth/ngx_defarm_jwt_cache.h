
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#ifndef _NGX_DEFARM_JWT_CACHE_H_INCLUDED_
#define _NGX_DEFARM_JWT_CACHE_H_INCLUDED_


#include "ngx_defarm_module.h"
#include "auth/ngx_defarm_jwt.h"


/* per-worker figures, kept in the stats zone (ngx_defarm_metrics.c) */

typedef struct {
    ngx_atomic_uint_t          entries;       /* gauge */
    ngx_atomic_uint_t          hits;          /* counters */
    ngx_atomic_uint_t          misses;
    ngx_atomic_uint_t          evictions;
} ngx_defarm_jwt_cache_stats_t;


char *ngx_defarm_jwt_cache_set(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_defarm_jwt_cache_init_process(ngx_cycle_t *cycle,
    ngx_defarm_jwt_conf_t *jcf);
ngx_int_t ngx_defarm_jwt_cache_get(ngx_http_request_t *r, ngx_str_t *token,
    ngx_defarm_claims_t *claims);
void ngx_defarm_jwt_cache_put(ngx_str_t *token, ngx_defarm_claims_t *claims);


#endif /* _NGX_DEFARM_JWT_CACHE_H_INCLUDED_ */
