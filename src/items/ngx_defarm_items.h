
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#ifndef _NGX_DEFARM_ITEMS_H_INCLUDED_
#define _NGX_DEFARM_ITEMS_H_INCLUDED_


#include "ngx_defarm_module.h"
#include "ngx_defarm_json.h"


#define NGX_DEFARM_MAX_IDENTIFIERS  64


ngx_uint_t ngx_defarm_dfid_valid(ngx_str_t *dfid);
ngx_int_t ngx_defarm_identifiers(ngx_http_request_t *r,
    ngx_defarm_json_t *list, ngx_str_t *json);
ngx_int_t ngx_defarm_enriched_data(ngx_http_request_t *r,
    ngx_defarm_json_t *data, ngx_str_t *json);


#endif /* _NGX_DEFARM_ITEMS_H_INCLUDED_ */
