
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "auth/ngx_defarm_sealed.h"

#include <openssl/evp.h>


/*
 * Secrets the database keeps sealed (sql/033's defarm_seal: iv ||
 * AES-256-CBC under SHA-256 of defarm_secret_key's key): webhooks'
 * credentials and signing secrets, storage adapters' keys.  They reach a
 * worker still sealed, in a job's payload or a probe's target, and are
 * opened here, in the pool of what uses them, for as long as it runs: so
 * they are never in the database in clear.
 */


static ngx_uint_t  ngx_defarm_sealed_keyed;
static u_char      ngx_defarm_sealed_key[32];


/* key: "defarm.secret_key=<key>", as the sessions get it, or NULL */

void
ngx_defarm_sealed_init(ngx_str_t *key)
{
    u_char        *eq;
    unsigned int   len;

    ngx_defarm_sealed_keyed = 0;

    if (key == NULL) {
        return;
    }

    eq = ngx_strlchr(key->data, key->data + key->len, '=');
    if (eq == NULL) {
        return;
    }

    eq++;

    if (EVP_Digest(eq, key->data + key->len - eq, ngx_defarm_sealed_key,
                   &len, EVP_sha256(), NULL)
        == 1)
    {
        ngx_defarm_sealed_keyed = 1;
    }
}


/*
 * base64(iv || AES-256-CBC(text)) -> text, in the pool: NGX_DECLINED on a
 * node without the key, NGX_ERROR for what this key does not open
 */

ngx_int_t
ngx_defarm_sealed_open(ngx_pool_t *pool, ngx_str_t *sealed, ngx_str_t *out)
{
    int              n, fin;
    ngx_int_t        rc;
    ngx_str_t        raw;
    EVP_CIPHER_CTX  *ctx;

    if (!ngx_defarm_sealed_keyed) {
        return NGX_DECLINED;
    }

    raw.data = ngx_pnalloc(pool, ngx_base64_decoded_length(sealed->len));
    if (raw.data == NULL
        || ngx_decode_base64(&raw, sealed) != NGX_OK
        || raw.len <= 16 || (raw.len - 16) % 16 != 0)
    {
        return NGX_ERROR;
    }

    out->data = ngx_pnalloc(pool, raw.len);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    rc = NGX_ERROR;

    if (EVP_DecryptInit_ex(ctx, EVP_aes_256_cbc(), NULL,
                           ngx_defarm_sealed_key, raw.data) == 1
        && EVP_DecryptUpdate(ctx, out->data, &n, raw.data + 16,
                             (int) (raw.len - 16)) == 1
        && EVP_DecryptFinal_ex(ctx, out->data + n, &fin) == 1)
    {
        out->len = n + fin;
        rc = NGX_OK;
    }

    EVP_CIPHER_CTX_free(ctx);

    return rc;
}
