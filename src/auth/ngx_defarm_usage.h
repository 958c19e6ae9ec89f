
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#ifndef _NGX_DEFARM_USAGE_H_INCLUDED_
#define _NGX_DEFARM_USAGE_H_INCLUDED_


#include "ngx_defarm_module.h"


ngx_int_t ngx_defarm_usage_init_process(ngx_cycle_t *cycle,
    ngx_defarm_main_conf_t *mcf);
void ngx_defarm_usage_exit_process(ngx_cycle_t *cycle);
void ngx_defarm_usage_record(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx);


#endif /* _NGX_DEFARM_USAGE_H_INCLUDED_ */
