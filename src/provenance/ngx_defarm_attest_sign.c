
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "provenance/ngx_defarm_attest.h"

#include <openssl/err.h>


/*
 * Ed25519 over the payload's bytes as they are (no pre-hash: Ed25519
 * hashes itself), through EVP's one-shot DigestSign/DigestVerify.  A
 * signature takes some tens of microseconds: done on the event loop.
 */


/* payload -> base64 of its 64-byte signature, in the pool */

ngx_int_t
ngx_defarm_attest_sign(ngx_pool_t *pool, ngx_defarm_attest_key_t *key,
    ngx_str_t *payload, ngx_str_t *signature)
{
    size_t       len;
    ngx_int_t    rc;
    ngx_str_t    raw;
    EVP_MD_CTX  *md;
    u_char       sig[NGX_DEFARM_ATTEST_SIG_LEN];

    md = EVP_MD_CTX_new();
    if (md == NULL) {
        return NGX_ERROR;
    }

    rc = NGX_ERROR;
    len = sizeof(sig);

    if (EVP_DigestSignInit(md, NULL, NULL, NULL, key->pkey) == 1
        && EVP_DigestSign(md, sig, &len, payload->data, payload->len) == 1
        && len == sizeof(sig))
    {
        rc = NGX_OK;
    }

    EVP_MD_CTX_free(md);

    if (rc != NGX_OK) {
        ERR_clear_error();
        return NGX_ERROR;
    }

    signature->data = ngx_pnalloc(pool, ngx_base64_encoded_length(len));
    if (signature->data == NULL) {
        return NGX_ERROR;
    }

    raw.data = sig;
    raw.len = len;

    ngx_encode_base64(signature, &raw);

    return NGX_OK;
}


/*
 * NGX_OK: the base64 signature is this key's over the payload;
 * NGX_DECLINED: it is not (or is not a signature at all)
 */

ngx_int_t
ngx_defarm_attest_verify(ngx_pool_t *pool, ngx_defarm_attest_key_t *key,
    ngx_str_t *payload, ngx_str_t *signature)
{
    ngx_int_t    rc;
    ngx_str_t    raw;
    EVP_MD_CTX  *md;

    raw.data = ngx_pnalloc(pool, ngx_base64_decoded_length(signature->len)
                                 + 1);
    if (raw.data == NULL) {
        return NGX_ERROR;
    }

    if (ngx_decode_base64(&raw, signature) != NGX_OK
        || raw.len != NGX_DEFARM_ATTEST_SIG_LEN)
    {
        return NGX_DECLINED;
    }

    md = EVP_MD_CTX_new();
    if (md == NULL) {
        return NGX_ERROR;
    }

    rc = NGX_DECLINED;

    if (EVP_DigestVerifyInit(md, NULL, NULL, NULL, key->pkey) == 1
        && EVP_DigestVerify(md, raw.data, raw.len, payload->data,
                            payload->len)
           == 1)
    {
        rc = NGX_OK;
    }

    EVP_MD_CTX_free(md);

    /* a refused signature leaves nothing for libpq's TLS to find */

    ERR_clear_error();

    return rc;
}
