
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "auth/ngx_defarm_apikey.h"
#include "auth/ngx_defarm_auth.h"
#include "auth/ngx_defarm_charge.h"
#include "auth/ngx_defarm_ratelimit.h"
#include "cache/ngx_defarm_cache.h"
#include "pg/ngx_defarm_pg.h"
#include "ngx_defarm_response.h"

#include <sys/random.h>


/*
 * Requests by API key.  A key is "dfm_" and 32 characters of [A-Za-z0-9];
 * only the SHA-256 of the whole key is stored.  Its record (the key's
 * rules and its owner) is looked up by that hash in the shared-memory
 * cache, PostgreSQL on a miss, and then every rule the original service
 * only recorded is enforced, in its order: active, expiry, the owner's
 * status, IP, endpoint, permission, rate limit.  The principal is the
 * owning user.
 */


#define NGX_DEFARM_APIKEY_FIELDS       14
#define NGX_DEFARM_APIKEY_UNKNOWN_TTL  30000


typedef struct {
    ngx_defarm_ctx_t          *ctx;
    ngx_uint_t                 flags;
    ngx_defarm_handler_pt      next;
    ngx_str_t                  hash;
    ngx_str_t                  cache_key;

    /* the record */
    ngx_str_t                  key_id;
    ngx_str_t                  user_id;
    ngx_str_t                  status;
    ngx_str_t                  tier;
    ngx_str_t                  workspace_id;
    ngx_uint_t                 is_admin;
    ngx_uint_t                 active;
    time_t                     expires;       /* 0: never */
    ngx_uint_t                 perms;
    ngx_uint_t                 limit;
    ngx_int_t                  tier_limit;    /* -1: none */
    ngx_int_t                  api_cost;      /* an API request's */
    ngx_str_t                  ips;           /* space-separated */
    ngx_str_t                  endpoints;
} ngx_defarm_apikey_req_t;


static ngx_int_t ngx_defarm_apikey_hash(ngx_http_request_t *r,
    ngx_str_t *key, ngx_str_t *hash);
static ngx_int_t ngx_defarm_apikey_cached(ngx_http_request_t *r,
    void *data, ngx_int_t rc, ngx_str_t *value);
static ngx_int_t ngx_defarm_apikey_found(ngx_http_request_t *r,
    void *data, PGresult *res);
static ngx_int_t ngx_defarm_apikey_stored(ngx_http_request_t *r,
    void *data, ngx_int_t rc, ngx_str_t *value);
static ngx_int_t ngx_defarm_apikey_unknown(ngx_http_request_t *r,
    void *data, ngx_int_t rc, ngx_str_t *value);
static ngx_int_t ngx_defarm_apikey_parse(ngx_http_request_t *r,
    ngx_defarm_apikey_req_t *ak, ngx_str_t *v);
static ngx_int_t ngx_defarm_apikey_check(ngx_http_request_t *r,
    ngx_defarm_apikey_req_t *ak);
static ngx_int_t ngx_defarm_apikey_pass(ngx_http_request_t *r, void *data);


static u_char  ngx_defarm_apikey_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";


/* the record, one text line per field (see the record's parser) */

static ngx_defarm_pg_stmt_t  ngx_defarm_apikey_lookup = {
    "defarm_apikey_lookup",
    "SELECT concat_ws(E'\\n', k.id, u.id, u.status, u.tier, "
           "coalesce('=' || u.workspace_id, ''), u.is_admin::int, "
           "k.is_active::int, "
           "coalesce(floor(extract(epoch FROM k.expires_at))::bigint, 0), "
           "k.perm_read::int | (k.perm_write::int << 1) "
               "| (k.perm_admin::int << 2), "
           "k.rate_limit_per_hour, array_to_string(k.allowed_ips, ' '), "
           "array_to_string(k.allowed_endpoints, ' '), "
           "coalesce(l.max_api_requests_per_hour::text, '-'), "
           "coalesce(c.api_request, 0)) "
    "FROM api_keys k JOIN users u ON u.id = k.user_id "
    "LEFT JOIN tier_limits l ON l.tier = u.tier "
    "LEFT JOIN credit_costs c ON c.tier = u.tier "
    "WHERE k.key_hash = $1",
    1, 0
};


ngx_uint_t
ngx_defarm_apikey_looks_like(ngx_str_t *token)
{
    return token->len >= 4 && ngx_strncmp(token->data, "dfm_", 4) == 0;
}


static ngx_uint_t
ngx_defarm_apikey_well_formed(ngx_str_t *key)
{
    size_t  i;

    if (key->len != NGX_DEFARM_APIKEY_LEN
        || ngx_strncmp(key->data, "dfm_", 4) != 0)
    {
        return 0;
    }

    for (i = 4; i < key->len; i++) {
        if (ngx_strlchr(ngx_defarm_apikey_alphabet,
                        ngx_defarm_apikey_alphabet
                        + sizeof(ngx_defarm_apikey_alphabet) - 1,
                        key->data[i])
            == NULL)
        {
            return 0;
        }
    }

    return 1;
}


static ngx_int_t
ngx_defarm_apikey_hash(ngx_http_request_t *r, ngx_str_t *key,
    ngx_str_t *hash)
{
    return ngx_defarm_sha256_hex(r->pool, key->data, key->len, hash);
}


/* a new key from the kernel's CSPRNG, and its hash */

ngx_int_t
ngx_defarm_apikey_generate(ngx_http_request_t *r, ngx_str_t *key,
    ngx_str_t *hash)
{
    u_char      *p, raw[64];
    ngx_uint_t   i, n;

    key->data = ngx_pnalloc(r->pool, NGX_DEFARM_APIKEY_LEN);
    if (key->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(key->data, "dfm_", 4);
    n = 0;

    while (n < NGX_DEFARM_APIKEY_LEN - 4) {

        /* never blocks a worker: before the kernel is seeded, a 500 */

        if (getrandom(raw, sizeof(raw), GRND_NONBLOCK)
            != (ssize_t) sizeof(raw))
        {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, ngx_errno,
                          "defarm: getrandom() failed");
            return NGX_ERROR;
        }

        /* 248 = 4 * 62: bytes above it are dropped, so no bias */

        for (i = 0; i < sizeof(raw) && n < NGX_DEFARM_APIKEY_LEN - 4; i++) {
            if (raw[i] < 248) {
                p[n++] = ngx_defarm_apikey_alphabet[raw[i] % 62];
            }
        }
    }

    explicit_bzero(raw, sizeof(raw));
    key->len = NGX_DEFARM_APIKEY_LEN;

    return ngx_defarm_apikey_hash(r, key, hash);
}


ngx_int_t
ngx_defarm_apikey_cache_key(ngx_http_request_t *r, ngx_str_t *hash,
    ngx_str_t *out)
{
    /* a family per key: a change invalidates it (see SET_IF) */

    out->len = sizeof("apikey::record") - 1 + hash->len;
    out->data = ngx_pnalloc(r->pool, out->len);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(out->data, "apikey:%V:record", hash);

    return NGX_OK;
}


ngx_int_t
ngx_defarm_apikey_auth(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx,
    ngx_str_t *key, ngx_uint_t flags, ngx_defarm_handler_pt next)
{
    ngx_defarm_apikey_req_t  *ak;

    if (!ngx_defarm_apikey_well_formed(key)) {
        return ngx_defarm_apikey_unknown(r, NULL, NGX_OK, NULL);
    }

    ak = ngx_pcalloc(r->pool, sizeof(ngx_defarm_apikey_req_t));
    if (ak == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ak->ctx = ctx;
    ak->flags = flags;
    ak->next = next;

    if (ngx_defarm_apikey_hash(r, key, &ak->hash) != NGX_OK
        || ngx_defarm_apikey_cache_key(r, &ak->hash, &ak->cache_key)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_defarm_cache_run(r, NGX_DEFARM_CACHE_GET, &ak->cache_key,
                                NULL, 0, ngx_defarm_apikey_cached, ak);
}


static ngx_int_t
ngx_defarm_apikey_cached(ngx_http_request_t *r, void *data, ngx_int_t rc,
    ngx_str_t *value)
{
    ngx_defarm_apikey_req_t  *ak = data;

    if (rc == NGX_OK && value->len == 1 && value->data[0] == '-') {
        return ngx_defarm_apikey_unknown(r, NULL, NGX_OK, NULL);
    }

    if (rc == NGX_OK && ngx_defarm_apikey_parse(r, ak, value) == NGX_OK) {
        return ngx_defarm_apikey_check(r, ak);
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_apikey_lookup, &ak->hash,
                               ngx_defarm_apikey_found, ak);
}


static ngx_int_t
ngx_defarm_apikey_found(ngx_http_request_t *r, void *data, PGresult *res)
{
    ngx_defarm_apikey_req_t  *ak = data;

    ngx_str_t  record;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        return ngx_defarm_pg_sql_error(r, res);
    }

    if (PQntuples(res) == 0) {
        /*
         * Remembered for a while, so that a flood of made-up keys costs
         * cache look-ups, not database queries (a new key cannot have
         * this hash: keys are random).
         */

        ngx_str_set(&record, "-");

        return ngx_defarm_cache_run(r, NGX_DEFARM_CACHE_SET_IF,
                                    &ak->cache_key, &record,
                                    NGX_DEFARM_APIKEY_UNKNOWN_TTL,
                                    ngx_defarm_apikey_unknown, ak);
    }

    (void) ngx_defarm_pg_text(res, 0, 0, &record);

    if (ngx_defarm_apikey_parse(r, ak, &record) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "defarm: malformed API key record \"%V\"", &record);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the next request by this key reads the cache (bytes are copied) */

    return ngx_defarm_cache_run(r, NGX_DEFARM_CACHE_SET_IF, &ak->cache_key,
                                &record, 0, ngx_defarm_apikey_stored, ak);
}


static ngx_int_t
ngx_defarm_apikey_unknown(ngx_http_request_t *r, void *data, ngx_int_t rc,
    ngx_str_t *value)
{
    return ngx_defarm_auth_fail(r, NGX_HTTP_UNAUTHORIZED, "invalid_api_key",
                                "The provided API key is invalid or has "
                                "been revoked");
}


static ngx_int_t
ngx_defarm_apikey_stored(ngx_http_request_t *r, void *data, ngx_int_t rc,
    ngx_str_t *value)
{
    return ngx_defarm_apikey_check(r, data);
}


/*
 * "key_id\nuser_id\nstatus\ntier\n=workspace\nis_admin\nactive\nexpires\n
 * perms\nlimit\nips\nendpoints\ntier_limit\napi_cost", as PostgreSQL wrote
 * it (a null workspace is empty; the tier's requests an hour, "-" for
 * none, and the credits a request costs are missing from the records of
 * an older module: then none and 0).  None of the
 * fields can hold a newline: ids and enums are the database's, and the
 * lists were checked on the way in.
 */

static ngx_int_t
ngx_defarm_apikey_parse(ngx_http_request_t *r, ngx_defarm_apikey_req_t *ak,
    ngx_str_t *v)
{
    u_char      *p, *last, *nl;
    ngx_int_t    n[5];
    ngx_str_t    f[NGX_DEFARM_APIKEY_FIELDS];
    ngx_uint_t   i;

    p = v->data;
    last = v->data + v->len;

    ngx_str_set(&f[12], "-");
    ngx_str_set(&f[13], "0");

    for (i = 0; i < NGX_DEFARM_APIKEY_FIELDS; i++) {
        nl = (i < NGX_DEFARM_APIKEY_FIELDS - 1) ? ngx_strlchr(p, last, '\n')
                                                 : last;
        if (nl == NULL) {
            if (i < 11) {
                return NGX_ERROR;
            }

            nl = last;
        }

        f[i].data = p;
        f[i].len = nl - p;

        if (nl == last) {
            break;
        }

        p = nl + 1;
    }

    for (i = 0; i < 5; i++) {
        n[i] = ngx_atoi(f[5 + i].data, f[5 + i].len);
        if (n[i] == NGX_ERROR) {
            return NGX_ERROR;
        }
    }

    ak->key_id = f[0];
    ak->user_id = f[1];
    ak->tier = f[3];
    ak->is_admin = n[0];
    ak->active = n[1];
    ak->expires = (time_t) n[2];
    ak->perms = n[3];
    ak->limit = n[4];
    ak->ips = f[10];
    ak->endpoints = f[11];
    ak->tier_limit = ngx_atoi(f[12].data, f[12].len);
    ak->api_cost = ngx_atoi(f[13].data, f[13].len);

    if (f[4].len == 0) {
        ngx_str_null(&ak->workspace_id);

    } else {
        ak->workspace_id.data = f[4].data + 1;          /* the "=" */
        ak->workspace_id.len = f[4].len - 1;
    }

    /* the status is compared as a C string */

    ak->status.data = ngx_pnalloc(r->pool, f[2].len + 1);
    if (ak->status.data == NULL) {
        return NGX_ERROR;
    }

    ak->status.len = f[2].len;
    *ngx_cpymem(ak->status.data, f[2].data, f[2].len) = '\0';

    return NGX_OK;
}


/* the next space-separated entry of a list, or NULL at its end */

static u_char *
ngx_defarm_apikey_entry(u_char *p, u_char *last, ngx_str_t *entry)
{
    u_char  *sp;

    if (p >= last) {
        return NULL;
    }

    sp = ngx_strlchr(p, last, ' ');
    if (sp == NULL) {
        sp = last;
    }

    entry->data = p;
    entry->len = sp - p;

    return sp + 1;
}


static ngx_uint_t
ngx_defarm_apikey_ip_allowed(ngx_http_request_t *r, ngx_str_t *ips)
{
    u_char       *p, *last;
    ngx_str_t     entry;
    ngx_array_t   cidrs;
    ngx_cidr_t   *cidr;

    if (ngx_array_init(&cidrs, r->pool, 4, sizeof(ngx_cidr_t)) != NGX_OK) {
        return 0;
    }

    p = ips->data;
    last = ips->data + ips->len;

    while ((p = ngx_defarm_apikey_entry(p, last, &entry)) != NULL) {

        cidr = ngx_array_push(&cidrs);
        if (cidr == NULL) {
            return 0;
        }

        /* checked when stored; one that does not parse matches nothing */

        if (ngx_ptocidr(&entry, cidr) == NGX_ERROR) {
            cidrs.nelts--;
        }
    }

    /* nginx's client address: set_real_ip_from decides whom to trust */

    return ngx_cidr_match(r->connection->sockaddr, &cidrs) == NGX_OK;
}


static ngx_uint_t
ngx_defarm_apikey_endpoint_allowed(ngx_http_request_t *r,
    ngx_str_t *endpoints)
{
    u_char     *p, *last;
    ngx_str_t   entry;

    p = endpoints->data;
    last = endpoints->data + endpoints->len;

    while ((p = ngx_defarm_apikey_entry(p, last, &entry)) != NULL) {

        if (entry.len && entry.data[entry.len - 1] == '*') {
            if (r->uri.len >= entry.len - 1
                && ngx_strncmp(r->uri.data, entry.data, entry.len - 1) == 0)
            {
                return 1;
            }

            continue;
        }

        if (r->uri.len == entry.len
            && ngx_strncmp(r->uri.data, entry.data, entry.len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


static ngx_int_t
ngx_defarm_apikey_check(ngx_http_request_t *r, ngx_defarm_apikey_req_t *ak)
{
    ngx_int_t          rc;
    ngx_uint_t         need;
    const char        *perm;
    ngx_defarm_ctx_t  *ctx = ak->ctx;

    /* from here the request counts in the key's usage */

    ctx->key_id = ak->key_id;
    ctx->via_key = 1;

    if (!ak->active) {
        return ngx_defarm_auth_fail(r, NGX_HTTP_UNAUTHORIZED,
                                    "api_key_inactive",
                                    "This API key is inactive");
    }

    if (ak->expires && ak->expires <= ngx_time()) {
        return ngx_defarm_auth_fail(r, NGX_HTTP_UNAUTHORIZED,
                                    "api_key_expired",
                                    "This API key has expired");
    }

    rc = ngx_defarm_auth_status(r, (char *) ak->status.data);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    if (ak->ips.len && !ngx_defarm_apikey_ip_allowed(r, &ak->ips)) {
        return ngx_defarm_auth_fail(r, NGX_HTTP_FORBIDDEN, "ip_not_allowed",
                                    "Requests from this IP address are not "
                                    "allowed with this API key");
    }

    if (ak->endpoints.len
        && !ngx_defarm_apikey_endpoint_allowed(r, &ak->endpoints))
    {
        return ngx_defarm_auth_fail(r, NGX_HTTP_FORBIDDEN,
                                    "endpoint_not_allowed",
                                    "This endpoint is not allowed with this "
                                    "API key");
    }

    if (r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_OPTIONS)) {
        need = NGX_DEFARM_PERM_READ;
        perm = "This API key lacks the read permission";

    } else {
        need = NGX_DEFARM_PERM_WRITE;
        perm = "This API key lacks the write permission";
    }

    if (ak->flags & NGX_DEFARM_AUTH_ADMIN) {
        if (!ak->is_admin) {
            return ngx_defarm_auth_fail(r, NGX_HTTP_FORBIDDEN,
                                        "insufficient_permissions",
                                        "Administrator access required");
        }

        if (!(ak->perms & NGX_DEFARM_PERM_ADMIN)) {
            need = NGX_DEFARM_PERM_ADMIN;
            perm = "This API key lacks the admin permission";
        }
    }

    if ((ak->perms & need) != need) {
        return ngx_defarm_auth_fail(r, NGX_HTTP_FORBIDDEN,
                                    "insufficient_permissions", perm);
    }

    ctx->user_id = ak->user_id;
    ctx->workspace_id = ak->workspace_id;
    ctx->tier = ak->tier;
    ctx->key_perms = ak->perms;
    ctx->admin_known = 1;
    ctx->is_admin = ak->is_admin ? 1 : 0;
    ctx->request_limit = ak->tier_limit;

    return ngx_defarm_ratelimit_hourly(r, &ak->key_id, ak->limit,
                                       ngx_defarm_apikey_pass, ak);
}


static ngx_int_t
ngx_defarm_apikey_pass(ngx_http_request_t *r, void *data)
{
    ngx_defarm_apikey_req_t  *ak = data;

    return ngx_defarm_charge_request(r, ak->ctx, ak->api_cost, ak->next);
}
