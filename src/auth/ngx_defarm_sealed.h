
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#ifndef _NGX_DEFARM_SEALED_H_INCLUDED_
#define _NGX_DEFARM_SEALED_H_INCLUDED_


#include "ngx_defarm_module.h"


void ngx_defarm_sealed_init(ngx_str_t *key);
ngx_int_t ngx_defarm_sealed_open(ngx_pool_t *pool, ngx_str_t *sealed,
    ngx_str_t *out);


#endif /* _NGX_DEFARM_SEALED_H_INCLUDED_ */
