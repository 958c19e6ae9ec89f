
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "cache/ngx_defarm_cache.h"
#include "redis/ngx_defarm_redis.h"
#include "ngx_defarm_response.h"


/*
 * The shared-memory cache: a slab pool, an rbtree keyed by the CRC32 of
 * the key (ties broken by comparing the bytes), an LRU queue and an
 * absolute expiry per entry, in the limit_req style.
 *
 * The lock is the zone's slab mutex, so that the master releases it when a
 * worker dies holding it, and it is only ever *tried*.  When it is busy the
 * request arms its own timer and tries again every lock_step; when
 * lock_timeout has passed it is answered 503 storage_lock_timeout with
 * Retry-After.  No worker ever waits on the lock.
 *
 * Functions named *_locked run with the lock held.  They look up, copy
 * bytes in or out, link and unlink, and nothing else: no allocation but the
 * slab's, no logging, no library calls.  scripts/check_lock_safety.sh holds
 * them (and every trylock..unlock section) to that.
 *
 * Deleting by prefix is O(1): a key's family is its text up to the last
 * ':' ("user:alice" is in "user:"), each family has a generation in the
 * zone, an entry remembers the generation it was stored under, and
 * deleting a family bumps its generation, so its entries read as misses
 * and age out through the LRU.  No walk of the cache ever happens under
 * the lock.
 */


#define NGX_DEFARM_CACHE_MAX_KEY    250
#define NGX_DEFARM_CACHE_BUF        1024
#define NGX_DEFARM_CACHE_EVICT_MAX  32


typedef struct {
    u_char                     color;
    u_char                     dummy;
    u_short                    key_len;
    ngx_atomic_uint_t          generation;
    ngx_queue_t                queue;
    ngx_msec_t                 expires;
    size_t                     value_len;
    u_char                     data[1];
} ngx_defarm_cache_node_t;


typedef struct {
    ngx_http_request_t        *request;
    ngx_defarm_cache_t        *cache;
    ngx_defarm_cache_op_e      op;
    ngx_str_t                  key;
    ngx_str_t                  value;
    size_t                     size;
    ngx_msec_t                 ttl;
    uint32_t                   hash;
    ngx_atomic_uint_t          generation;    /* GET: at a miss */
    ngx_uint_t                 family;
    ngx_int_t                  result;
    ngx_defarm_cache_done_pt   done;
    void                      *data;
    ngx_event_t                retry;
    ngx_msec_t                 started;
    uint64_t                   start_us;
} ngx_defarm_cache_req_t;


static ngx_int_t ngx_defarm_cache_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_defarm_cache_rbtree_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_int_t ngx_defarm_cache_attempt(ngx_defarm_cache_req_t *cr);
static ngx_defarm_cache_node_t *ngx_defarm_cache_lookup_locked(
    ngx_defarm_cache_t *cache, ngx_str_t *key, uint32_t hash);
static void ngx_defarm_cache_delete_locked(ngx_defarm_cache_t *cache,
    ngx_defarm_cache_node_t *cn);
static ngx_int_t ngx_defarm_cache_get_locked(ngx_defarm_cache_t *cache,
    ngx_defarm_cache_req_t *cr, size_t *len);
static ngx_int_t ngx_defarm_cache_incr_locked(ngx_defarm_cache_t *cache,
    ngx_defarm_cache_req_t *cr);
static ngx_int_t ngx_defarm_cache_set_locked(ngx_defarm_cache_t *cache,
    ngx_defarm_cache_req_t *cr);
static void ngx_defarm_cache_retry_handler(ngx_event_t *ev);
static void ngx_defarm_cache_cleanup(void *data);
static void ngx_defarm_cache_waited(ngx_defarm_cache_req_t *cr);
static void ngx_defarm_cache_hold_handler(ngx_event_t *ev);


static ngx_event_t          ngx_defarm_cache_hold_ev;
static ngx_defarm_cache_t  *ngx_defarm_cache_held;


#define ngx_defarm_cache_node(n)                                             \
    ((ngx_defarm_cache_node_t *) &(n)->color)

#define ngx_defarm_cache_rbnode(cn)                                          \
    ((ngx_rbtree_node_t *) ((u_char *) (cn)                                  \
                            - offsetof(ngx_rbtree_node_t, color)))


/* configuration */


char *
ngx_defarm_cache_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_defarm_cache_t  **cachep = (ngx_defarm_cache_t **)
                                   ((u_char *) conf + cmd->offset);

    u_char                  *p;
    ssize_t                  size, max_value;
    ngx_str_t               *value, name, s;
    ngx_uint_t               i;
    ngx_defarm_cache_t      *cache;
    ngx_defarm_conf_msec_t   times[4];

    if (*cachep) {
        return "is duplicate";
    }

    value = cf->args->elts;

    cache = ngx_pcalloc(cf->pool, sizeof(ngx_defarm_cache_t));
    if (cache == NULL) {
        return NGX_CONF_ERROR;
    }

    cache->ttl = 60000;
    cache->lock_timeout = 50;
    cache->lock_step = 5;

    times[0].name = "ttl=";
    times[0].value = &cache->ttl;
    times[1].name = "lock_timeout=";
    times[1].value = &cache->lock_timeout;
    times[2].name = "lock_step=";
    times[2].value = &cache->lock_step;
    times[3].name = NULL;

    ngx_str_null(&name);
    size = 0;
    max_value = 0;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "max_value=", 10) == 0) {
            s.data = value[i].data + 10;
            s.len = value[i].len - 10;

            max_value = ngx_parse_size(&s);

            if (max_value == NGX_ERROR || max_value == 0) {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {
            name.data = value[i].data + 5;
            p = (u_char *) ngx_strchr(name.data, ':');

            if (p == NULL) {
                goto invalid;
            }

            name.len = p - name.data;

            s.data = p + 1;
            s.len = value[i].data + value[i].len - s.data;

            size = ngx_parse_size(&s);

            if (name.len == 0 || size == NGX_ERROR) {
                goto invalid;
            }

            if (size < (ssize_t) (8 * ngx_pagesize)) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "defarm_cache zone \"%V\" is too small",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_defarm_conf_msec(&value[i], times) != NGX_OK) {
            goto invalid;
        }
    }

    if (name.len == 0) {
        return "needs zone=name:size";
    }

    if (cache->lock_step > cache->lock_timeout) {
        return "has a lock_step longer than its lock_timeout";
    }

    /*
     * A value too large for the zone would make a set evict entry after
     * entry under the lock before giving up, wiping hot entries on every
     * miss of a large item: such values are refused before the lock.
     */

    if (max_value == 0) {
        max_value = ngx_min(64 * 1024, size / 8);

    } else if (max_value > size / 8) {
        return "has a max_value over an eighth of its zone";
    }

    cache->max_value = (size_t) max_value;

    cache->zone = ngx_shared_memory_add(cf, &name, size, &ngx_defarm_module);
    if (cache->zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (cache->zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is already used", &name);
        return NGX_CONF_ERROR;
    }

    cache->zone->init = ngx_defarm_cache_init_zone;
    cache->zone->data = cache;

    *cachep = cache;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "defarm_cache: invalid parameter \"%V\"", &value[i]);

    return NGX_CONF_ERROR;
}


static ngx_int_t
ngx_defarm_cache_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_defarm_cache_t  *ocache = data;

    size_t               len;
    ngx_defarm_cache_t  *cache;

    cache = shm_zone->data;
    cache->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    /* a reload (HUP) keeps the entries, like limit_req keeps its states */

    if (ocache) {
        cache->sh = ocache->sh;
        return NGX_OK;
    }

    if (shm_zone->shm.exists) {
        cache->sh = cache->shpool->data;
        return NGX_OK;
    }

    cache->sh = ngx_slab_calloc(cache->shpool, sizeof(ngx_defarm_cache_sh_t));
    if (cache->sh == NULL) {
        return NGX_ERROR;
    }

    cache->shpool->data = cache->sh;

    ngx_rbtree_init(&cache->sh->rbtree, &cache->sh->sentinel,
                    ngx_defarm_cache_rbtree_insert);
    ngx_queue_init(&cache->sh->lru);

    len = sizeof(" in defarm_cache zone \"\"") + shm_zone->shm.name.len;

    cache->shpool->log_ctx = ngx_slab_alloc(cache->shpool, len);
    if (cache->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(cache->shpool->log_ctx, " in defarm_cache zone \"%V\"%Z",
                &shm_zone->shm.name);

    /* a full zone evicts; it is not an error worth a log line */

    cache->shpool->log_nomem = 0;

    return NGX_OK;
}


static void
ngx_defarm_cache_rbtree_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t        **p;
    ngx_defarm_cache_node_t   *cn, *cnt;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else { /* node->key == temp->key */

            cn = ngx_defarm_cache_node(node);
            cnt = ngx_defarm_cache_node(temp);

            p = (ngx_memn2cmp(cn->data, cnt->data, cn->key_len, cnt->key_len)
                 < 0)
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


/* critical sections: bytes in, bytes out, links; nothing else */


static ngx_defarm_cache_node_t *
ngx_defarm_cache_lookup_locked(ngx_defarm_cache_t *cache, ngx_str_t *key,
    uint32_t hash)
{
    ngx_int_t                 rc;
    ngx_rbtree_node_t        *node, *sentinel;
    ngx_defarm_cache_node_t  *cn;

    node = cache->sh->rbtree.root;
    sentinel = cache->sh->rbtree.sentinel;

    while (node != sentinel) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        cn = ngx_defarm_cache_node(node);

        rc = ngx_memn2cmp(key->data, cn->data, key->len, cn->key_len);

        if (rc == 0) {
            return cn;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


static void
ngx_defarm_cache_delete_locked(ngx_defarm_cache_t *cache,
    ngx_defarm_cache_node_t *cn)
{
    ngx_rbtree_node_t  *node;

    node = ngx_defarm_cache_rbnode(cn);

    ngx_queue_remove(&cn->queue);
    ngx_rbtree_delete(&cache->sh->rbtree, node);
    ngx_slab_free_locked(cache->shpool, node);

    cache->sh->stats.entries--;
}


static ngx_int_t
ngx_defarm_cache_get_locked(ngx_defarm_cache_t *cache,
    ngx_defarm_cache_req_t *cr, size_t *len)
{
    ngx_defarm_cache_node_t  *cn;

    cn = ngx_defarm_cache_lookup_locked(cache, &cr->key, cr->hash);

    if (cn == NULL) {
        cache->sh->stats.misses++;
        return NGX_DECLINED;
    }

    if (cn->expires <= ngx_current_msec
        || cn->generation != cache->sh->generation[cr->family])
    {
        ngx_defarm_cache_delete_locked(cache, cn);
        cache->sh->stats.expired++;
        cache->sh->stats.misses++;
        return NGX_DECLINED;
    }

    *len = cn->value_len;

    if (cn->value_len > cr->size) {
        /* the caller allocates outside the lock and comes back */
        return NGX_AGAIN;
    }

    ngx_memcpy(cr->value.data, cn->data + cn->key_len, cn->value_len);
    cr->value.len = cn->value_len;

    ngx_queue_remove(&cn->queue);
    ngx_queue_insert_head(&cache->sh->lru, &cn->queue);

    cache->sh->stats.hits++;

    return NGX_OK;
}


static ngx_int_t
ngx_defarm_cache_set_locked(ngx_defarm_cache_t *cache,
    ngx_defarm_cache_req_t *cr)
{
    size_t                    size;
    ngx_uint_t                n;
    ngx_queue_t              *q;
    ngx_rbtree_node_t        *node;
    ngx_defarm_cache_node_t  *cn;

    cn = ngx_defarm_cache_lookup_locked(cache, &cr->key, cr->hash);

    if (cn) {
        ngx_defarm_cache_delete_locked(cache, cn);
    }

    size = offsetof(ngx_rbtree_node_t, color)
           + offsetof(ngx_defarm_cache_node_t, data)
           + cr->key.len + cr->value.len;

    node = ngx_slab_alloc_locked(cache->shpool, size);

    /* full: the least recently used entries make room */

    for (n = 0; node == NULL && n < NGX_DEFARM_CACHE_EVICT_MAX; n++) {

        if (ngx_queue_empty(&cache->sh->lru)) {
            break;
        }

        q = ngx_queue_last(&cache->sh->lru);
        cn = ngx_queue_data(q, ngx_defarm_cache_node_t, queue);
        ngx_defarm_cache_delete_locked(cache, cn);
        cache->sh->stats.evictions++;

        node = ngx_slab_alloc_locked(cache->shpool, size);
    }

    if (node == NULL) {
        return NGX_DECLINED;
    }

    node->key = cr->hash;

    cn = ngx_defarm_cache_node(node);
    cn->key_len = (u_short) cr->key.len;
    cn->value_len = cr->value.len;
    cn->expires = ngx_current_msec + cr->ttl;
    cn->generation = cache->sh->generation[cr->family];

    ngx_memcpy(cn->data, cr->key.data, cr->key.len);
    ngx_memcpy(cn->data + cr->key.len, cr->value.data, cr->value.len);

    ngx_rbtree_insert(&cache->sh->rbtree, node);
    ngx_queue_insert_head(&cache->sh->lru, &cn->queue);

    cache->sh->stats.sets++;
    cache->sh->stats.entries++;

    return NGX_OK;
}


/*
 * A counter: 8 bytes of value, added to in place; a missing or stale one
 * starts again at 1 with the request's ttl (a rate-limit window).
 */

static ngx_int_t
ngx_defarm_cache_incr_locked(ngx_defarm_cache_t *cache,
    ngx_defarm_cache_req_t *cr)
{
    uint64_t                  n;
    ngx_defarm_cache_node_t  *cn;

    cn = ngx_defarm_cache_lookup_locked(cache, &cr->key, cr->hash);

    if (cn
        && cn->expires > ngx_current_msec
        && cn->value_len == sizeof(uint64_t))
    {
        ngx_memcpy(&n, cn->data + cn->key_len, sizeof(uint64_t));
        n++;
        ngx_memcpy(cn->data + cn->key_len, &n, sizeof(uint64_t));
        ngx_memcpy(cr->value.data, &n, sizeof(uint64_t));

        ngx_queue_remove(&cn->queue);
        ngx_queue_insert_head(&cache->sh->lru, &cn->queue);

        return NGX_OK;
    }

    n = 1;
    ngx_memcpy(cr->value.data, &n, sizeof(uint64_t));

    return ngx_defarm_cache_set_locked(cache, cr);
}


/* one try of the operation: NGX_AGAIN when the lock is busy */


static ngx_int_t
ngx_defarm_cache_attempt(ngx_defarm_cache_req_t *cr)
{
    size_t                    len;
    ngx_int_t                 rc;
    ngx_defarm_cache_t       *cache = cr->cache;
    ngx_defarm_cache_node_t  *cn;

    for ( ;; ) {

        if (!ngx_shmtx_trylock(&cache->shpool->mutex)) {
            return NGX_AGAIN;
        }

        len = 0;

        switch (cr->op) {

        case NGX_DEFARM_CACHE_GET:
            rc = ngx_defarm_cache_get_locked(cache, cr, &len);
            cr->generation = cache->sh->generation[cr->family];
            break;

        case NGX_DEFARM_CACHE_SET:
            rc = ngx_defarm_cache_set_locked(cache, cr);
            break;

        case NGX_DEFARM_CACHE_SET_IF:
            rc = (cr->generation == cache->sh->generation[cr->family])
                 ? ngx_defarm_cache_set_locked(cache, cr) : NGX_DECLINED;
            break;

        case NGX_DEFARM_CACHE_DELETE:
            cn = ngx_defarm_cache_lookup_locked(cache, &cr->key, cr->hash);
            if (cn) {
                ngx_defarm_cache_delete_locked(cache, cn);
            }

            rc = cn ? NGX_OK : NGX_DECLINED;
            break;

        default: /* NGX_DEFARM_CACHE_INCR */
            rc = ngx_defarm_cache_incr_locked(cache, cr);
            break;
        }

        ngx_shmtx_unlock(&cache->shpool->mutex);

        if (rc != NGX_AGAIN) {
            cr->result = rc;
            return NGX_OK;
        }

        /* a value larger than the buffer: allocate, with the lock free */

        cr->value.data = ngx_pnalloc(cr->request->pool, len);
        if (cr->value.data == NULL) {
            return NGX_ERROR;
        }

        cr->size = len;
    }
}


/* a key's family: its text up to the last ':', as a generation slot */

static ngx_uint_t
ngx_defarm_cache_family(ngx_str_t *key)
{
    u_char  *p;

    p = key->data + key->len;

    while (p > key->data && p[-1] != ':') {
        p--;
    }

    return ngx_crc32_short(key->data, p - key->data)
           % NGX_DEFARM_CACHE_GENERATIONS;
}


/*
 * Invalidating a family is one atomic increment, outside the lock: it
 * can neither wait nor fail, whoever asks (a request, or the Redis
 * subscriber relaying another node's change).
 */

void
ngx_defarm_cache_invalidate(ngx_defarm_cache_t *cache, ngx_str_t *key)
{
    (void) ngx_atomic_fetch_add(
                &cache->sh->generation[ngx_defarm_cache_family(key)], 1);
}


/* every node forgets the family: this one now, the others on Redis */

void
ngx_defarm_cache_forget(ngx_http_request_t *r, ngx_str_t *key)
{
    ngx_defarm_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_defarm_module);

    if (mcf->cache) {
        ngx_defarm_cache_invalidate(mcf->cache, key);
    }

    ngx_defarm_redis_publish(key);
}


/* every family at once: after invalidations may have been missed */

void
ngx_defarm_cache_invalidate_all(ngx_defarm_cache_t *cache)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_DEFARM_CACHE_GENERATIONS; i++) {
        (void) ngx_atomic_fetch_add(&cache->sh->generation[i], 1);
    }
}


/* the API */


ngx_int_t
ngx_defarm_cache_run(ngx_http_request_t *r, ngx_defarm_cache_op_e op,
    ngx_str_t *key, ngx_str_t *value, ngx_msec_t ttl,
    ngx_defarm_cache_done_pt done, void *data)
{
    ngx_int_t                rc;
    ngx_defarm_ctx_t        *ctx;
    ngx_pool_cleanup_t      *cln;
    ngx_defarm_cache_t      *cache;
    ngx_defarm_cache_req_t  *cr;
    ngx_defarm_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_defarm_module);
    cache = mcf->cache;
    ctx = ngx_defarm_get_ctx(r);

    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (op == NGX_DEFARM_CACHE_DELETE_PREFIX) {
        ngx_defarm_cache_forget(r, key);
        return done(r, data, NGX_OK, NULL);
    }

    if (cache == NULL || key->len == 0 || key->len > NGX_DEFARM_CACHE_MAX_KEY)
    {
        /* no cache configured, or a key it cannot hold: go without */
        ctx->cache_status = NGX_DEFARM_CACHE_BYPASS;
        return done(r, data, (op == NGX_DEFARM_CACHE_GET
                              || op == NGX_DEFARM_CACHE_INCR)
                             ? NGX_DECLINED : NGX_OK, NULL);
    }

    if ((op == NGX_DEFARM_CACHE_SET || op == NGX_DEFARM_CACHE_SET_IF)
        && key->len + value->len > cache->max_value)
    {
        /* not stored, and nothing evicted for it: the lock is not taken */
        (void) ngx_atomic_fetch_add(&cache->sh->stats.oversize, 1);
        return done(r, data, NGX_DECLINED, NULL);
    }

    cr = ngx_pcalloc(r->pool, sizeof(ngx_defarm_cache_req_t));
    if (cr == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cr->request = r;
    cr->cache = cache;
    cr->op = op;
    cr->done = done;
    cr->data = data;
    cr->ttl = ttl ? ttl : cache->ttl;

    /* the operation's bytes live in the request, whatever the caller's */

    cr->key.len = key->len;
    cr->key.data = ngx_pstrdup(r->pool, key);
    if (cr->key.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cr->hash = ngx_crc32_short(cr->key.data, cr->key.len);

    cr->family = ngx_defarm_cache_family(key);

    cr->generation = ctx->cache_generation;

    if (op == NGX_DEFARM_CACHE_SET || op == NGX_DEFARM_CACHE_SET_IF) {
        cr->value.len = value->len;
        cr->value.data = ngx_pnalloc(r->pool, value->len ? value->len : 1);
        if (cr->value.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_memcpy(cr->value.data, value->data, value->len);

    } else if (op == NGX_DEFARM_CACHE_INCR) {
        cr->value.len = sizeof(uint64_t);
        cr->value.data = ngx_pnalloc(r->pool, sizeof(uint64_t));
        if (cr->value.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

    } else if (op == NGX_DEFARM_CACHE_GET) {
        cr->size = NGX_DEFARM_CACHE_BUF;
        cr->value.data = ngx_pnalloc(r->pool, cr->size);
        if (cr->value.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    cr->retry.handler = ngx_defarm_cache_retry_handler;
    cr->retry.data = cr;
    cr->retry.log = r->connection->log;

    rc = ngx_defarm_cache_attempt(cr);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_OK) {
        ngx_atomic_fetch_add(&cache->sh->stats.lock_first_try, 1);
        ngx_atomic_fetch_add(&cache->sh->stats.wait[0], 1);

        ctx->lock_timed = 1;

        if (op == NGX_DEFARM_CACHE_GET) {
            ctx->cache_status = (cr->result == NGX_OK) ? NGX_DEFARM_CACHE_HIT
                                                       : NGX_DEFARM_CACHE_MISS;
            ctx->cache_generation = cr->generation;
        }

        return done(r, data, cr->result,
                    cr->result == NGX_OK ? &cr->value : NULL);
    }

    /* busy: the request waits on its own timer, never on the lock */

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_defarm_cache_cleanup;
    cln->data = cr;

    cr->started = ngx_current_msec;
    cr->start_us = ngx_defarm_now_us();

    ngx_atomic_fetch_add(&cache->sh->stats.lock_retries, 1);

    ngx_defarm_request_wait(r);

    ngx_add_timer(&cr->retry, cache->lock_step);

    return NGX_DONE;
}


static void
ngx_defarm_cache_waited(ngx_defarm_cache_req_t *cr)
{
    uint64_t                   us;
    ngx_uint_t                 b;
    ngx_defarm_ctx_t          *ctx;
    ngx_defarm_cache_stats_t  *st;

    static ngx_msec_t  bounds[] = { 0, 5, 10, 25, 50 };

    us = ngx_defarm_now_us() - cr->start_us;
    st = &cr->cache->sh->stats;

    for (b = 0; b < sizeof(bounds) / sizeof(ngx_msec_t); b++) {
        if (us <= bounds[b] * 1000) {
            break;
        }
    }

    ngx_atomic_fetch_add(&st->wait[b], 1);
    ngx_atomic_fetch_add(&st->wait_sum_us, us);

    ctx = ngx_defarm_get_ctx(cr->request);

    if (ctx) {
        ctx->lock_us += us;
        ctx->lock_timed = 1;
    }
}


static void
ngx_defarm_cache_retry_handler(ngx_event_t *ev)
{
    ngx_defarm_cache_req_t  *cr = ev->data;

    ngx_int_t            rc;
    ngx_connection_t    *c;
    ngx_defarm_ctx_t    *ctx;
    ngx_http_request_t  *r;

    r = cr->request;
    c = r->connection;

    rc = ngx_defarm_cache_attempt(cr);

    if (rc == NGX_AGAIN
        && ngx_current_msec - cr->started < cr->cache->lock_timeout)
    {
        ngx_atomic_fetch_add(&cr->cache->sh->stats.lock_retries, 1);
        ngx_add_timer(&cr->retry, cr->cache->lock_step);
        return;
    }

    ngx_defarm_cache_waited(cr);

    if (rc == NGX_AGAIN) {
        ngx_atomic_fetch_add(&cr->cache->sh->stats.lock_timeouts, 1);

        rc = ngx_defarm_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                              NGX_DEFARM_ERR_STORAGE_LOCK_TIMEOUT,
                              "Service temporarily busy, please retry");

    } else if (rc == NGX_ERROR) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;

    } else {
        ctx = ngx_defarm_get_ctx(r);

        if (ctx && cr->op == NGX_DEFARM_CACHE_GET) {
            ctx->cache_generation = cr->generation;
            ctx->cache_status = (cr->result == NGX_OK) ? NGX_DEFARM_CACHE_HIT
                                                       : NGX_DEFARM_CACHE_MISS;
        }

        rc = cr->done(r, cr->data, cr->result,
                      cr->result == NGX_OK ? &cr->value : NULL);
    }

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static void
ngx_defarm_cache_cleanup(void *data)
{
    ngx_defarm_cache_req_t  *cr = data;

    /* the client went away during the wait: its timer goes with it */

    if (cr->retry.timer_set) {
        ngx_del_timer(&cr->retry);
    }

    if (cr->retry.posted) {
        ngx_delete_posted_event(&cr->retry);
    }
}


ngx_defarm_cache_stats_t *
ngx_defarm_cache_stats(ngx_http_request_t *r)
{
    ngx_defarm_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_defarm_module);

    return (mcf->cache && mcf->cache->sh) ? &mcf->cache->sh->stats : NULL;
}


/*
 * Diagnostics for the tests: hold the zone's lock for a while, from a
 * worker timer (the worker goes on serving; other requests find the lock
 * busy), or release it at once.
 */

ngx_int_t
ngx_defarm_cache_hold(ngx_http_request_t *r, ngx_msec_t ms)
{
    ngx_defarm_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_defarm_module);

    if (mcf->cache == NULL || ngx_defarm_cache_held) {
        return NGX_DECLINED;
    }

    if (!ngx_shmtx_trylock(&mcf->cache->shpool->mutex)) {
        return NGX_DECLINED;
    }

    ngx_defarm_cache_held = mcf->cache;

    /* ngx_add_timer's debug log reads ev->data: it must point somewhere */

    ngx_defarm_cache_hold_ev.handler = ngx_defarm_cache_hold_handler;
    ngx_defarm_cache_hold_ev.data = mcf->cache;
    ngx_defarm_cache_hold_ev.log = ngx_cycle->log;
    ngx_defarm_cache_hold_ev.cancelable = 1;

    ngx_add_timer(&ngx_defarm_cache_hold_ev, ms);

    return NGX_OK;
}


static void
ngx_defarm_cache_hold_handler(ngx_event_t *ev)
{
    if (ngx_defarm_cache_held) {
        ngx_shmtx_unlock(&ngx_defarm_cache_held->shpool->mutex);
        ngx_defarm_cache_held = NULL;
    }
}


ngx_int_t
ngx_defarm_cache_release(ngx_http_request_t *r)
{
    if (ngx_defarm_cache_held == NULL) {
        return NGX_DECLINED;
    }

    if (ngx_defarm_cache_hold_ev.timer_set) {
        ngx_del_timer(&ngx_defarm_cache_hold_ev);
    }

    ngx_defarm_cache_hold_handler(&ngx_defarm_cache_hold_ev);

    return NGX_OK;
}


void
ngx_defarm_cache_exit_process(ngx_cycle_t *cycle)
{
    if (ngx_defarm_cache_hold_ev.timer_set) {
        ngx_del_timer(&ngx_defarm_cache_hold_ev);
    }

    ngx_defarm_cache_hold_handler(&ngx_defarm_cache_hold_ev);
}
