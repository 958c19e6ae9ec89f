
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "fuzz.h"

/* its parsers are static: the unit is compiled into the harness */
#include "auth/ngx_defarm_apikey.c"


/*
 * API keys, apart from the database and the cache.  Byte 0 even: the
 * rest is a header's key, judged as the auth code judges it (a key or a
 * token? a well-formed key?) and made into its cache key.  Odd: the rest
 * is a key's record as the cache holds it (newline-separated fields),
 * parsed, then its IP list matched against the client's address (byte 1
 * chooses IPv4 or IPv6) and its endpoint list against a path.
 */


static void
ngx_defarm_fuzz_key(ngx_defarm_fuzz_t *fz, u_char *p, size_t n)
{
    size_t      i;
    ngx_str_t   key, hash, ck;
    ngx_uint_t  looks, well;

    key.data = p;
    key.len = n;

    looks = ngx_defarm_apikey_looks_like(&key);
    well = ngx_defarm_apikey_well_formed(&key);

    /* a well-formed key is always taken for a key, never for a JWT */
    ngx_defarm_fuzz_assert(!well || looks);

    if (well) {
        ngx_defarm_fuzz_assert(n == NGX_DEFARM_APIKEY_LEN);

        for (i = 4; i < n; i++) {
            ngx_defarm_fuzz_assert((p[i] >= '0' && p[i] <= '9')
                                   || (p[i] >= 'a' && p[i] <= 'z')
                                   || (p[i] >= 'A' && p[i] <= 'Z'));
        }
    }

    /* a hash as SHA-256 gives it: 64 hex digits, here from the input */

    if (n >= NGX_DEFARM_APIKEY_HASH) {
        hash.data = p;
        hash.len = NGX_DEFARM_APIKEY_HASH;

        ngx_defarm_fuzz_assert(ngx_defarm_apikey_cache_key(fz->r, &hash, &ck)
                               == NGX_OK);
        ngx_defarm_fuzz_assert(ck.len > NGX_DEFARM_APIKEY_HASH);
    }
}


static void
ngx_defarm_fuzz_record(ngx_defarm_fuzz_t *fz, uint8_t how, u_char *p,
    size_t n)
{
    ngx_str_t                 v;
    ngx_defarm_apikey_req_t   ak;
    struct sockaddr_in        sin;
#if (NGX_HAVE_INET6)
    struct sockaddr_in6       sin6;
#endif

    ngx_memzero(&ak, sizeof(ngx_defarm_apikey_req_t));

    v.data = p;
    v.len = n;

    if (ngx_defarm_apikey_parse(fz->r, &ak, &v) != NGX_OK) {
        return;
    }

    ngx_defarm_fuzz_assert(ak.status.data[ak.status.len] == '\0');

    ngx_memzero(&sin, sizeof(struct sockaddr_in));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(0xc0000201);        /* 192.0.2.1 */
    fz->r->connection->sockaddr = (struct sockaddr *) &sin;
    fz->r->connection->socklen = sizeof(struct sockaddr_in);

#if (NGX_HAVE_INET6)
    if (how & 1) {
        ngx_memzero(&sin6, sizeof(struct sockaddr_in6));
        sin6.sin6_family = AF_INET6;
        sin6.sin6_addr.s6_addr[0] = 0x20;           /* 2001:db8::1 */
        sin6.sin6_addr.s6_addr[1] = 0x01;
        sin6.sin6_addr.s6_addr[2] = 0x0d;
        sin6.sin6_addr.s6_addr[3] = 0xb8;
        sin6.sin6_addr.s6_addr[15] = 1;
        fz->r->connection->sockaddr = (struct sockaddr *) &sin6;
        fz->r->connection->socklen = sizeof(struct sockaddr_in6);
    }
#endif

    (void) ngx_defarm_apikey_ip_allowed(fz->r, &ak.ips);

    ngx_str_set(&fz->r->uri, "/api/items/DFID-20240101-000001-1A2B");

    if (how & 2) {
        ngx_str_set(&fz->r->uri, "/api");
    }

    (void) ngx_defarm_apikey_endpoint_allowed(fz->r, &ak.endpoints);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char             *p;
    ngx_defarm_fuzz_t   fz;

    if (size < 2) {
        return 0;
    }

    if (ngx_defarm_fuzz_begin(&fz) != NGX_OK) {
        return 0;
    }

    p = ngx_defarm_fuzz_copy(&fz, data + 2, size - 2);
    ngx_defarm_fuzz_assert(p != NULL);

    if (data[0] & 1) {
        ngx_defarm_fuzz_record(&fz, data[1], p, size - 2);

    } else {
        ngx_defarm_fuzz_key(&fz, p, size - 2);
    }

    ngx_defarm_fuzz_end(&fz);

    return 0;
}
