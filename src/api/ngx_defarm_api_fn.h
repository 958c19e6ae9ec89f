
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#ifndef _NGX_DEFARM_API_FN_H_INCLUDED_
#define _NGX_DEFARM_API_FN_H_INCLUDED_


#include "api/ngx_defarm_api.h"
#include "pg/ngx_defarm_pg.h"


/* a route function's parameters: caller, :id, body or arguments, other */

typedef struct {
    ngx_str_t                  params[4];
    ngx_str_t                  details;       /* a 422's */
    ngx_str_t                  password;      /* the area's: a password */
    ngx_str_t                  key;           /* the area's: a cache key */
    ngx_str_t                  answer;        /* the area's: kept JSON */
} ngx_defarm_fn_req_t;


#define ngx_defarm_fn_stmt(fn)                                               \
    { fn, "SELECT status, body FROM " fn "($1, $2, $3::jsonb, $4)", 4, 0 }


ngx_int_t ngx_defarm_fn_run(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx,
    ngx_defarm_route_t *routes, ngx_defarm_pg_stmt_t **stmts,
    ngx_uint_t nstmts);
ngx_int_t ngx_defarm_args_valid(ngx_http_request_t *r);
ngx_defarm_fn_req_t *ngx_defarm_fn_req(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
ngx_int_t ngx_defarm_fn_done(ngx_http_request_t *r, void *data,
    PGresult *res);


#endif /* _NGX_DEFARM_API_FN_H_INCLUDED_ */
