
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#ifndef _NGX_DEFARM_AUTH_H_INCLUDED_
#define _NGX_DEFARM_AUTH_H_INCLUDED_


#include "ngx_defarm_module.h"
#include "ngx_defarm_router.h"


/* what a route requires of its caller: its route flags (router.h) */
#define NGX_DEFARM_AUTH_JWT_ONLY  NGX_DEFARM_ROUTE_JWT
#define NGX_DEFARM_AUTH_ADMIN     NGX_DEFARM_ROUTE_ADMIN

/* an API key's permissions */
#define NGX_DEFARM_PERM_READ      0x01
#define NGX_DEFARM_PERM_WRITE     0x02
#define NGX_DEFARM_PERM_ADMIN     0x04


ngx_int_t ngx_defarm_auth_require(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx, ngx_uint_t flags, ngx_defarm_handler_pt next);
ngx_int_t ngx_defarm_auth_fail(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *why);
ngx_int_t ngx_defarm_auth_status(ngx_http_request_t *r, const char *status);
ngx_int_t ngx_defarm_auth_user_changed(ngx_http_request_t *r,
    ngx_str_t *user_id, ngx_str_t *username);


#endif /* _NGX_DEFARM_AUTH_H_INCLUDED_ */
