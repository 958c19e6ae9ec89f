
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#ifndef _NGX_DEFARM_RATELIMIT_H_INCLUDED_
#define _NGX_DEFARM_RATELIMIT_H_INCLUDED_


#include "ngx_defarm_module.h"


/* called when the request is within its limit; returns its final rc */

typedef ngx_int_t (*ngx_defarm_ratelimit_pt)(ngx_http_request_t *r,
    void *data);


ngx_int_t ngx_defarm_ratelimit_hourly(ngx_http_request_t *r, ngx_str_t *id,
    ngx_uint_t limit, ngx_defarm_ratelimit_pt pass, void *data);
ngx_int_t ngx_defarm_ratelimit_tier(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx, ngx_defarm_ratelimit_pt pass, void *data);


#endif /* _NGX_DEFARM_RATELIMIT_H_INCLUDED_ */
