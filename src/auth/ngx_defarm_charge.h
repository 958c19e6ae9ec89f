
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#ifndef _NGX_DEFARM_CHARGE_H_INCLUDED_
#define _NGX_DEFARM_CHARGE_H_INCLUDED_


#include "ngx_defarm_router.h"


ngx_int_t ngx_defarm_charge_request(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx, ngx_int_t cost, ngx_defarm_handler_pt next);
ngx_int_t ngx_defarm_charge_init(ngx_conf_t *cf);


#endif /* _NGX_DEFARM_CHARGE_H_INCLUDED_ */
