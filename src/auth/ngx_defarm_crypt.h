
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#ifndef _NGX_DEFARM_CRYPT_H_INCLUDED_
#define _NGX_DEFARM_CRYPT_H_INCLUDED_


#include "ngx_defarm_module.h"


struct ngx_defarm_crypt_conf_s {
    ngx_str_t                  pool_name;     /* defarm_crypt_pool */
    ngx_thread_pool_t         *pool;
    ngx_uint_t                 cost;          /* defarm_bcrypt_cost */
};


/*
 * Called in the worker once the thread finished: rc NGX_OK (hashed, or
 * the password matched), NGX_DECLINED (it did not match), NGX_ERROR.  A
 * full queue is answered 503 crypt_busy before any callback.
 */

typedef ngx_int_t (*ngx_defarm_crypt_done_pt)(ngx_http_request_t *r,
    void *data, ngx_int_t rc, ngx_str_t *hash);


char *ngx_defarm_crypt_set_pool(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_defarm_crypt_set_cost(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_defarm_crypt_init_conf(ngx_conf_t *cf,
    ngx_defarm_crypt_conf_t *ccf);
ngx_int_t ngx_defarm_crypt_hash(ngx_http_request_t *r, ngx_str_t *password,
    ngx_defarm_crypt_done_pt done, void *data);
ngx_int_t ngx_defarm_crypt_verify(ngx_http_request_t *r,
    ngx_str_t *password, ngx_str_t *hash, ngx_defarm_crypt_done_pt done,
    void *data);


#endif /* _NGX_DEFARM_CRYPT_H_INCLUDED_ */
