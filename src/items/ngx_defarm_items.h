
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#ifndef _NGX_DEFARM_ITEMS_H_INCLUDED_
#define _NGX_DEFARM_ITEMS_H_INCLUDED_


#include "ngx_defarm_module.h"
#include "ngx_defarm_json.h"


#define NGX_DEFARM_MAX_IDENTIFIERS  64
#define NGX_DEFARM_MAX_INVALID      400


/*
 * The validators render what they accept as JSON text (an SQL parameter)
 * and return NGX_OK, or NGX_DECLINED with the reason in *err (the caller
 * answers 400, or records it for one item of a batch), or NGX_ERROR.
 */

ngx_uint_t ngx_defarm_dfid_valid(ngx_str_t *dfid);
ngx_int_t ngx_defarm_identifiers(ngx_http_request_t *r,
    ngx_defarm_json_t *list, ngx_str_t *json, ngx_str_t *err);
ngx_int_t ngx_defarm_enriched_data(ngx_http_request_t *r,
    ngx_defarm_json_t *data, ngx_str_t *json, ngx_str_t *err);
ngx_int_t ngx_defarm_invalid(ngx_http_request_t *r, ngx_str_t *err,
    const char *fmt, ...);

/* an item changed: its cached JSON goes (ngx_defarm_api_items.c) */

ngx_int_t ngx_defarm_item_forget(ngx_http_request_t *r, ngx_str_t *dfid);


#endif /* _NGX_DEFARM_ITEMS_H_INCLUDED_ */
