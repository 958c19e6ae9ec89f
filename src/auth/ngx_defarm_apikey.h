
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#ifndef _NGX_DEFARM_APIKEY_H_INCLUDED_
#define _NGX_DEFARM_APIKEY_H_INCLUDED_


#include "ngx_defarm_module.h"
#include "ngx_defarm_router.h"


#define NGX_DEFARM_APIKEY_LEN     36              /* "dfm_" + 32 */
#define NGX_DEFARM_APIKEY_PREFIX  8
#define NGX_DEFARM_APIKEY_HASH    64              /* SHA-256, hex */


ngx_uint_t ngx_defarm_apikey_looks_like(ngx_str_t *token);
ngx_int_t ngx_defarm_apikey_auth(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx, ngx_str_t *key, ngx_uint_t flags,
    ngx_defarm_handler_pt next);
ngx_int_t ngx_defarm_apikey_generate(ngx_http_request_t *r, ngx_str_t *key,
    ngx_str_t *hash);
ngx_int_t ngx_defarm_apikey_cache_key(ngx_http_request_t *r,
    ngx_str_t *hash, ngx_str_t *out);


#endif /* _NGX_DEFARM_APIKEY_H_INCLUDED_ */
