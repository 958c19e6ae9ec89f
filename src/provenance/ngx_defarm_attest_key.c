
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "provenance/ngx_defarm_attest.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>


/*
 * defarm_attestation_key file=path: the Ed25519 private key (PEM, PKCS#8
 * as "openssl genpkey -algorithm ed25519" writes it) that attestations
 * are signed with.  It is read here, at configuration time, so a missing
 * or wrong key stops nginx from starting instead of failing requests;
 * the public half and its id are made once for GET /api/proofs/key.
 */


static void ngx_defarm_attest_key_free(void *data);
static ngx_int_t ngx_defarm_attest_key_public(ngx_conf_t *cf,
    ngx_defarm_attest_key_t *key);


char *
ngx_defarm_attest_key_set(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_defarm_main_conf_t  *mcf = conf;

    BIO                      *bio;
    EVP_PKEY                 *pkey;
    ngx_str_t                *value, name;
    ngx_pool_cleanup_t       *cln;
    ngx_defarm_attest_key_t  *key;

    value = cf->args->elts;

    if (mcf->attest) {
        return "is duplicate";
    }

    if (ngx_strncmp(value[1].data, "file=", 5) != 0 || value[1].len == 5) {
        return "takes file=path";
    }

    name.data = value[1].data + 5;
    name.len = value[1].len - 5;

    if (ngx_conf_full_name(cf->cycle, &name, 0) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    bio = BIO_new_file((char *) name.data, "r");
    if (bio == NULL) {
        ERR_clear_error();
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "cannot open the attestation key \"%s\"",
                           name.data);
        return NGX_CONF_ERROR;
    }

    pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    BIO_free(bio);

    if (pkey == NULL) {
        ERR_clear_error();
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%s\" is not a PEM private key", name.data);
        return NGX_CONF_ERROR;
    }

    key = ngx_pcalloc(cf->pool, sizeof(ngx_defarm_attest_key_t));
    cln = ngx_pool_cleanup_add(cf->pool, 0);

    if (key == NULL || cln == NULL) {
        EVP_PKEY_free(pkey);
        return NGX_CONF_ERROR;
    }

    /* freed with the configuration: a reload loads the file again */

    key->pkey = pkey;
    cln->handler = ngx_defarm_attest_key_free;
    cln->data = key;

    if (EVP_PKEY_id(pkey) != EVP_PKEY_ED25519) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%s\" is not an Ed25519 key", name.data);
        return NGX_CONF_ERROR;
    }

    if (ngx_defarm_attest_key_public(cf, key) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the public key of \"%s\" cannot be derived",
                           name.data);
        return NGX_CONF_ERROR;
    }

    mcf->attest = key;

    return NGX_CONF_OK;
}


static void
ngx_defarm_attest_key_free(void *data)
{
    ngx_defarm_attest_key_t  *key = data;

    EVP_PKEY_free(key->pkey);
    key->pkey = NULL;
}


/* key_id, the raw public key in base64, and the public key's PEM */

static ngx_int_t
ngx_defarm_attest_key_public(ngx_conf_t *cf, ngx_defarm_attest_key_t *key)
{
    BIO        *bio;
    long        n;
    char       *pem;
    size_t      len;
    ngx_int_t   rc;
    ngx_str_t   raw;
    u_char      pub[NGX_DEFARM_ATTEST_PUB_LEN];

    len = sizeof(pub);

    if (EVP_PKEY_get_raw_public_key(key->pkey, pub, &len) != 1
        || len != sizeof(pub))
    {
        return NGX_ERROR;
    }

    if (ngx_defarm_sha256_hex(cf->pool, pub, len, &key->key_id) != NGX_OK) {
        return NGX_ERROR;
    }

    raw.data = pub;
    raw.len = len;

    key->public_key.data = ngx_pnalloc(cf->pool,
                                       ngx_base64_encoded_length(len));
    if (key->public_key.data == NULL) {
        return NGX_ERROR;
    }

    ngx_encode_base64(&key->public_key, &raw);

    bio = BIO_new(BIO_s_mem());
    if (bio == NULL) {
        return NGX_ERROR;
    }

    rc = NGX_ERROR;

    if (PEM_write_bio_PUBKEY(bio, key->pkey) == 1) {
        n = BIO_get_mem_data(bio, &pem);

        key->public_pem.data = ngx_pnalloc(cf->pool, n);

        if (n > 0 && key->public_pem.data) {
            ngx_memcpy(key->public_pem.data, pem, n);
            key->public_pem.len = n;
            rc = NGX_OK;
        }
    }

    BIO_free(bio);

    return rc;
}


/* the key of the request's configuration, or NULL when none is set */

ngx_defarm_attest_key_t *
ngx_defarm_attest_key(ngx_http_request_t *r)
{
    ngx_defarm_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_defarm_module);

    return mcf->attest;
}
