
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "fuzz.h"
#include "auth/ngx_defarm_jwt.h"
#include "auth/ngx_defarm_jwt_cache.h"


/*
 * Token parsing and checking, no network: byte 0 even, the rest is the
 * token of an "Authorization: Bearer" header, verified with the secret
 * below (seeds are tokens signed with it: fuzz/corpus/jwt/); odd, the
 * rest is claims (user_id, tier and workspace_id separated by NUL bytes,
 * byte 1 the token version) signed and verified back, which must give
 * the same claims.
 */


#define NGX_DEFARM_FUZZ_SECRET  "fuzz-secret-0123456789abcdef0123456789"


/* the shared-memory cache of verified tokens is not the parser: a miss */

ngx_int_t
ngx_defarm_jwt_cache_get(ngx_http_request_t *r, ngx_str_t *token,
    ngx_defarm_claims_t *claims)
{
    return NGX_DECLINED;
}


void
ngx_defarm_jwt_cache_put(ngx_str_t *token, ngx_defarm_claims_t *claims)
{
}


static ngx_uint_t
ngx_defarm_fuzz_same(ngx_str_t *a, ngx_str_t *b)
{
    if (a->data == NULL || b->data == NULL) {
        return a->data == b->data;
    }

    return a->len == b->len && ngx_memcmp(a->data, b->data, a->len) == 0;
}


static void
ngx_defarm_fuzz_roundtrip(ngx_defarm_fuzz_t *fz, const uint8_t *data,
    size_t size)
{
    u_char               *p, *last, *z;
    ngx_str_t             token, *f[3];
    ngx_int_t             rc;
    ngx_uint_t            i;
    const char           *why;
    ngx_defarm_claims_t   in, out;

    if (size < 1) {
        return;
    }

    ngx_memzero(&in, sizeof(ngx_defarm_claims_t));
    in.version = data[0];

    p = ngx_defarm_fuzz_copy(fz, data + 1, size - 1);
    ngx_defarm_fuzz_assert(p != NULL);
    last = p + size - 1;

    f[0] = &in.user_id;
    f[1] = &in.tier;
    f[2] = &in.workspace_id;

    for (i = 0; i < 3 && p <= last; i++) {
        z = ngx_strlchr(p, last, '\0');
        if (z == NULL) {
            z = last;
        }

        f[i]->data = p;
        f[i]->len = z - p;
        p = z + 1;
    }

    if (in.user_id.data == NULL || in.tier.data == NULL) {
        return;
    }

    if (ngx_defarm_jwt_sign(fz->r, &in, &token) != NGX_OK) {
        return;                 /* a claim that is not UTF-8: not signed */
    }

    ngx_memzero(&out, sizeof(ngx_defarm_claims_t));

    rc = ngx_defarm_jwt_verify(fz->r, &token, &out, &why);

    if (in.user_id.len == 0 || token.len > 4096) {
        ngx_defarm_fuzz_assert(rc == NGX_DECLINED);
        return;
    }

    ngx_defarm_fuzz_assert(rc == NGX_OK);
    ngx_defarm_fuzz_assert(ngx_defarm_fuzz_same(&in.user_id, &out.user_id));
    ngx_defarm_fuzz_assert(ngx_defarm_fuzz_same(&in.tier, &out.tier));
    ngx_defarm_fuzz_assert(ngx_defarm_fuzz_same(&in.workspace_id,
                                                &out.workspace_id));
    ngx_defarm_fuzz_assert(in.version == out.version);
    ngx_defarm_fuzz_assert(in.exp == out.exp && in.iat == out.iat);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ngx_int_t             rc;
    ngx_str_t             token;
    const char           *why;
    ngx_defarm_fuzz_t     fz;
    ngx_defarm_claims_t   claims;

    if (size < 1) {
        return 0;
    }

    if (ngx_defarm_fuzz_begin(&fz) != NGX_OK) {
        return 0;
    }

    ngx_str_set(&fz.mcf->jwt->secret, NGX_DEFARM_FUZZ_SECRET);
    fz.mcf->jwt->ttl = 3600;
    fz.mcf->jwt->leeway = 30;

    if (data[0] & 1) {
        ngx_defarm_fuzz_roundtrip(&fz, data + 1, size - 1);
        goto done;
    }

    token.data = ngx_defarm_fuzz_copy(&fz, data + 1, size - 1);
    ngx_defarm_fuzz_assert(token.data != NULL);
    token.len = size - 1;

    ngx_memzero(&claims, sizeof(ngx_defarm_claims_t));
    why = NULL;

    rc = ngx_defarm_jwt_verify(fz.r, &token, &claims, &why);

    ngx_defarm_fuzz_assert(rc == NGX_OK || rc == NGX_DECLINED);
    ngx_defarm_fuzz_assert(why != NULL);

    if (rc == NGX_OK) {
        ngx_defarm_fuzz_assert(claims.user_id.len > 0);
        ngx_defarm_fuzz_assert(claims.exp != 0);
    }

done:

    ngx_defarm_fuzz_end(&fz);

    return 0;
}
