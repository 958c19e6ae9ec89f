
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#ifndef _NGX_DEFARM_IPFS_H_INCLUDED_
#define _NGX_DEFARM_IPFS_H_INCLUDED_


#include "ngx_defarm_module.h"
#include "ngx_defarm_json.h"
#include "http/ngx_defarm_curl.h"


typedef enum {
    NGX_DEFARM_IPFS_ADD = 0,                  /* add and pin a document */
    NGX_DEFARM_IPFS_VERSION                   /* the node's version */
} ngx_defarm_ipfs_op_e;


ngx_int_t ngx_defarm_ipfs_request(ngx_pool_t *pool, ngx_log_t *log,
    ngx_defarm_json_t *conf, ngx_defarm_ipfs_op_e op, ngx_str_t *name,
    ngx_str_t *doc, ngx_defarm_curl_req_t **req, const char **err);
ngx_int_t ngx_defarm_ipfs_answer(ngx_pool_t *pool, ngx_defarm_ipfs_op_e op,
    ngx_str_t *body, ngx_str_t *value, int64_t *size);


#endif /* _NGX_DEFARM_IPFS_H_INCLUDED_ */
