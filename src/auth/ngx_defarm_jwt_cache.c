
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "auth/ngx_defarm_jwt_cache.h"
#include "ngx_defarm_metrics.h"


/*
 * Verified tokens, per worker: a token whose signature was checked once is
 * found again by a hash-table look-up and a comparison of all its bytes,
 * so a hot token costs no HMAC and no JSON parse.  What a token says never
 * changes, so an entry is good until the token expires; whether its user
 * may still use it (status, a password reset) is not cached here but
 * checked on every request against the user's record (defarm_auth.c),
 * which a change drops on every worker and node.
 *
 * The memory is bounded and allocated once: defarm_jwt_cache entries of a
 * fixed size, taken from a free list and, when none is free, from the
 * least recently used end.  A token too large for an entry is verified
 * every time.  Only the worker's own event loop touches the table.
 */


#define NGX_DEFARM_JWTC_DATA   640


typedef struct ngx_defarm_jwtc_entry_s  ngx_defarm_jwtc_entry_t;

struct ngx_defarm_jwtc_entry_s {
    ngx_queue_t                queue;         /* LRU, or the free list */
    ngx_defarm_jwtc_entry_t   *next;          /* the bucket's chain */
    uint32_t                   hash;
    time_t                     exp;
    time_t                     iat;
    ngx_uint_t                 version;
    u_short                    token_len;
    u_short                    user_len;
    u_short                    tier_len;
    u_short                    workspace_len;
    unsigned                   workspace_null:1;
    u_char                     data[NGX_DEFARM_JWTC_DATA];
};


typedef struct {
    ngx_defarm_jwtc_entry_t  **buckets;
    ngx_uint_t                 mask;
    ngx_queue_t                lru;           /* most recent first */
    ngx_queue_t                free;
    ngx_uint_t                 leeway;
} ngx_defarm_jwtc_t;


static void ngx_defarm_jwtc_unlink(ngx_defarm_jwtc_entry_t *e);
static ngx_defarm_jwt_cache_stats_t *ngx_defarm_jwtc_stats(void);


static ngx_defarm_jwtc_t             *ngx_defarm_jwtc;
static ngx_defarm_jwt_cache_stats_t   ngx_defarm_jwtc_none;


/* defarm_jwt_cache N | off; */

char *
ngx_defarm_jwt_cache_set(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_defarm_main_conf_t  *mcf = conf;

    ngx_int_t   n;
    ngx_str_t  *value;

    if (mcf->jwt->cache_max != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 3 && ngx_strncmp(value[1].data, "off", 3) == 0) {
        mcf->jwt->cache_max = 0;
        return NGX_CONF_OK;
    }

    n = ngx_atoi(value[1].data, value[1].len);

    if (n == NGX_ERROR || n < 1 || n > 1048576) {
        return "must be \"off\" or a number of tokens from 1 to 1048576";
    }

    mcf->jwt->cache_max = n;

    return NGX_CONF_OK;
}


ngx_int_t
ngx_defarm_jwt_cache_init_process(ngx_cycle_t *cycle,
    ngx_defarm_jwt_conf_t *jcf)
{
    ngx_uint_t                i, n;
    ngx_defarm_jwtc_t        *c;
    ngx_defarm_jwtc_entry_t  *e;

    if (jcf->cache_max == 0 || jcf->secret.len == 0) {
        return NGX_OK;
    }

    c = ngx_pcalloc(cycle->pool, sizeof(ngx_defarm_jwtc_t));
    if (c == NULL) {
        return NGX_ERROR;
    }

    /* a power of two, at least the number of entries: short chains */

    for (n = 1; n < jcf->cache_max; n <<= 1) { /* void */ }

    c->buckets = ngx_pcalloc(cycle->pool,
                             n * sizeof(ngx_defarm_jwtc_entry_t *));
    e = ngx_palloc(cycle->pool,
                   jcf->cache_max * sizeof(ngx_defarm_jwtc_entry_t));

    if (c->buckets == NULL || e == NULL) {
        return NGX_ERROR;
    }

    c->mask = n - 1;
    c->leeway = jcf->leeway;
    ngx_queue_init(&c->lru);
    ngx_queue_init(&c->free);

    for (i = 0; i < jcf->cache_max; i++) {
        ngx_queue_insert_tail(&c->free, &e[i].queue);
    }

    ngx_defarm_jwtc = c;

    return NGX_OK;
}


/*
 * NGX_OK: the token was verified before and has not expired; its claims
 * are copied into the request's pool (an entry may be reused by a later
 * request while this one still runs).  NGX_DECLINED: verify it.
 */

ngx_int_t
ngx_defarm_jwt_cache_get(ngx_http_request_t *r, ngx_str_t *token,
    ngx_defarm_claims_t *claims)
{
    u_char                        *p;
    uint32_t                       hash;
    ngx_defarm_jwtc_t             *c;
    ngx_defarm_jwtc_entry_t       *e;
    ngx_defarm_jwt_cache_stats_t  *st;

    c = ngx_defarm_jwtc;

    if (c == NULL || token->len > NGX_DEFARM_JWTC_DATA) {
        return NGX_DECLINED;
    }

    st = ngx_defarm_jwtc_stats();
    hash = ngx_murmur_hash2(token->data, token->len);

    for (e = c->buckets[hash & c->mask]; e; e = e->next) {
        if (e->hash == hash && e->token_len == token->len
            && ngx_memcmp(e->data, token->data, token->len) == 0)
        {
            break;
        }
    }

    if (e == NULL) {
        st->misses++;
        return NGX_DECLINED;
    }

    if (ngx_time() > e->exp + (time_t) c->leeway) {

        /* expired: verified again, which says so */

        ngx_defarm_jwtc_unlink(e);
        ngx_queue_insert_tail(&c->free, &e->queue);
        st->entries--;
        st->misses++;

        return NGX_DECLINED;
    }

    p = ngx_pnalloc(r->pool, e->user_len + e->tier_len + e->workspace_len
                             + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    claims->exp = e->exp;
    claims->iat = e->iat;
    claims->version = e->version;

    claims->user_id.data = p;
    claims->user_id.len = e->user_len;
    p = ngx_cpymem(p, e->data + e->token_len, e->user_len);

    claims->tier.data = p;
    claims->tier.len = e->tier_len;
    p = ngx_cpymem(p, e->data + e->token_len + e->user_len, e->tier_len);

    if (e->workspace_null) {
        ngx_str_null(&claims->workspace_id);

    } else {
        claims->workspace_id.data = p;
        claims->workspace_id.len = e->workspace_len;
        ngx_memcpy(p, e->data + e->token_len + e->user_len + e->tier_len,
                   e->workspace_len);
    }

    ngx_queue_remove(&e->queue);
    ngx_queue_insert_head(&c->lru, &e->queue);
    st->hits++;

    return NGX_OK;
}


/* a token just verified: remembered, in place of the least recent one */

void
ngx_defarm_jwt_cache_put(ngx_str_t *token, ngx_defarm_claims_t *claims)
{
    u_char                        *p;
    ngx_queue_t                   *q;
    ngx_defarm_jwtc_t             *c;
    ngx_defarm_jwtc_entry_t       *e, **b;
    ngx_defarm_jwt_cache_stats_t  *st;

    c = ngx_defarm_jwtc;

    if (c == NULL
        || token->len + claims->user_id.len + claims->tier.len
           + claims->workspace_id.len > NGX_DEFARM_JWTC_DATA)
    {
        return;
    }

    st = ngx_defarm_jwtc_stats();

    if (!ngx_queue_empty(&c->free)) {
        q = ngx_queue_head(&c->free);
        ngx_queue_remove(q);
        e = ngx_queue_data(q, ngx_defarm_jwtc_entry_t, queue);
        st->entries++;

    } else {
        q = ngx_queue_last(&c->lru);
        e = ngx_queue_data(q, ngx_defarm_jwtc_entry_t, queue);
        ngx_defarm_jwtc_unlink(e);
        st->evictions++;
    }

    e->hash = ngx_murmur_hash2(token->data, token->len);
    e->exp = claims->exp;
    e->iat = claims->iat;
    e->version = claims->version;
    e->token_len = (u_short) token->len;
    e->user_len = (u_short) claims->user_id.len;
    e->tier_len = (u_short) claims->tier.len;
    e->workspace_len = (u_short) claims->workspace_id.len;
    e->workspace_null = (claims->workspace_id.data == NULL);

    p = ngx_cpymem(e->data, token->data, token->len);
    p = ngx_cpymem(p, claims->user_id.data, claims->user_id.len);
    p = ngx_cpymem(p, claims->tier.data, claims->tier.len);

    if (claims->workspace_id.len) {
        ngx_memcpy(p, claims->workspace_id.data, claims->workspace_id.len);
    }

    b = &c->buckets[e->hash & c->mask];
    e->next = *b;
    *b = e;

    ngx_queue_insert_head(&c->lru, &e->queue);
}


/* out of its bucket's chain and out of the LRU */

static void
ngx_defarm_jwtc_unlink(ngx_defarm_jwtc_entry_t *e)
{
    ngx_defarm_jwtc_entry_t  **b;

    for (b = &ngx_defarm_jwtc->buckets[e->hash & ngx_defarm_jwtc->mask];
         *b != e;
         b = &(*b)->next)
    { /* void */ }

    *b = e->next;
    ngx_queue_remove(&e->queue);
}


static ngx_defarm_jwt_cache_stats_t *
ngx_defarm_jwtc_stats(void)
{
    ngx_defarm_stats_slot_t  *slot;

    slot = ngx_defarm_metrics_slot();

    return slot ? &slot->jwt_cache : &ngx_defarm_jwtc_none;
}
