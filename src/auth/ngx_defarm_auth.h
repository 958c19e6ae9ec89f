
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#ifndef _NGX_DEFARM_AUTH_H_INCLUDED_
#define _NGX_DEFARM_AUTH_H_INCLUDED_


#include "ngx_defarm_module.h"


ngx_int_t ngx_defarm_auth_require(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
ngx_int_t ngx_defarm_auth_status(ngx_http_request_t *r, const char *status);


#endif /* _NGX_DEFARM_AUTH_H_INCLUDED_ */
