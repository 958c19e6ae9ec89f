
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#ifndef _NGX_DEFARM_ATTEST_H_INCLUDED_
#define _NGX_DEFARM_ATTEST_H_INCLUDED_


#include "ngx_defarm_module.h"

#include <openssl/evp.h>


#define NGX_DEFARM_ATTEST_SIG_LEN  64      /* an Ed25519 signature */
#define NGX_DEFARM_ATTEST_PUB_LEN  32      /* an Ed25519 public key */


/*
 * The server's attestation key (defarm_attestation_key), loaded once at
 * configuration time, with what is published of it made then too.
 */

typedef struct {
    EVP_PKEY                  *pkey;
    ngx_str_t                  key_id;        /* hex SHA-256 of public */
    ngx_str_t                  public_key;    /* base64 of the raw 32 */
    ngx_str_t                  public_pem;
} ngx_defarm_attest_key_t;


char *ngx_defarm_attest_key_set(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_defarm_attest_key_t *ngx_defarm_attest_key(ngx_http_request_t *r);

ngx_int_t ngx_defarm_attest_sign(ngx_pool_t *pool,
    ngx_defarm_attest_key_t *key, ngx_str_t *payload, ngx_str_t *signature);
ngx_int_t ngx_defarm_attest_verify(ngx_pool_t *pool,
    ngx_defarm_attest_key_t *key, ngx_str_t *payload, ngx_str_t *signature);


#endif /* _NGX_DEFARM_ATTEST_H_INCLUDED_ */
