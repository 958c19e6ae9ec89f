
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "ngx_defarm_metrics.h"
#include "ngx_defarm_response.h"
#include "cache/ngx_defarm_cache.h"


/* the slots, and room for the slab pool nginx puts at the zone's start */

#define NGX_DEFARM_METRICS_SIZE                                              \
    (ngx_align(NGX_DEFARM_STATS_SLOTS * sizeof(ngx_defarm_stats_slot_t),      \
               ngx_pagesize) + 8 * ngx_pagesize)


typedef struct {
    const char                *name;
    const char                *type;
    const char                *help;
    size_t                     offset;
} ngx_defarm_metric_t;


static ngx_int_t ngx_defarm_metrics_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static u_char *ngx_defarm_metrics_cache(u_char *p,
    ngx_defarm_cache_stats_t *st);


#define NGX_DEFARM_METRICS_CACHE_LEN  4096


static ngx_str_t  ngx_defarm_metrics_zone_name = ngx_string("defarm_stats");
static ngx_str_t  ngx_defarm_metrics_type =
    ngx_string("text/plain; version=0.0.4");

static ngx_shm_zone_t           *ngx_defarm_metrics_zone;
static ngx_defarm_stats_slot_t   ngx_defarm_metrics_local;
static ngx_defarm_stats_slot_t  *ngx_defarm_metrics_mine;


#define ngx_defarm_pg_metric(field)                                          \
    offsetof(ngx_defarm_stats_slot_t, pg) + offsetof(ngx_defarm_pg_stats_t,   \
                                                     field)

#define ngx_defarm_redis_metric(field)                                       \
    offsetof(ngx_defarm_stats_slot_t, redis)                                 \
    + offsetof(ngx_defarm_redis_stats_t, field)

#define ngx_defarm_jwtc_metric(field)                                        \
    offsetof(ngx_defarm_stats_slot_t, jwt_cache)                             \
    + offsetof(ngx_defarm_jwt_cache_stats_t, field)

#define ngx_defarm_jobs_metric(field)                                        \
    offsetof(ngx_defarm_stats_slot_t, jobs)                                  \
    + offsetof(ngx_defarm_jobs_stats_t, field)

static ngx_defarm_metric_t  ngx_defarm_metrics[] = {

    { "defarm_db_connections", "gauge",
      "PostgreSQL connections open", ngx_defarm_pg_metric(connections) },

    { "defarm_db_idle", "gauge",
      "PostgreSQL connections idle in the pool", ngx_defarm_pg_metric(idle) },

    { "defarm_db_busy", "gauge",
      "PostgreSQL connections running a query", ngx_defarm_pg_metric(busy) },

    { "defarm_db_waiting", "gauge",
      "requests waiting for a PostgreSQL connection",
      ngx_defarm_pg_metric(waiting) },

    { "defarm_db_queries_total", "counter",
      "queries answered by PostgreSQL", ngx_defarm_pg_metric(served) },

    { "defarm_db_errors_total", "counter",
      "queries that failed: SQL errors and lost connections",
      ngx_defarm_pg_metric(errors) },

    { "defarm_db_timeouts_total", "counter",
      "queries past their timeout", ngx_defarm_pg_metric(timeouts) },

    { "defarm_db_exhausted_total", "counter",
      "requests refused because the pool and its queue were full or the "
      "wait timed out", ngx_defarm_pg_metric(exhausted) },

    { "defarm_db_unavailable_total", "counter",
      "requests refused because PostgreSQL was unreachable",
      ngx_defarm_pg_metric(unavailable) },

    { "defarm_db_connects_total", "counter",
      "connections established", ngx_defarm_pg_metric(connects) },

    { "defarm_db_connect_failures_total", "counter",
      "connection attempts that failed",
      ngx_defarm_pg_metric(connect_failures) },

    { "defarm_db_aborted_total", "counter",
      "queries whose client went away before the answer",
      ngx_defarm_pg_metric(aborted) },

    { "defarm_db_batches_total", "counter",
      "batches of reads sent on one connection with one Sync",
      ngx_defarm_pg_metric(batches) },

    { "defarm_db_batched_total", "counter",
      "reads sent in a batch", ngx_defarm_pg_metric(batched) },

    { "defarm_db_rerun_total", "counter",
      "reads of a batch run again after an error or a timeout before them",
      ngx_defarm_pg_metric(rerun) },

    { "defarm_redis_connected", "gauge",
      "workers connected to Redis", ngx_defarm_redis_metric(connected) },

    { "defarm_redis_commands_total", "counter",
      "commands sent to Redis", ngx_defarm_redis_metric(commands) },

    { "defarm_redis_errors_total", "counter",
      "Redis commands that failed", ngx_defarm_redis_metric(errors) },

    { "defarm_redis_timeouts_total", "counter",
      "Redis commands past their budget (the request went on without)",
      ngx_defarm_redis_metric(timeouts) },

    { "defarm_redis_reconnects_total", "counter",
      "reconnection attempts to Redis", ngx_defarm_redis_metric(reconnects) },

    { "defarm_redis_fallbacks_total", "counter",
      "rate-limit counts kept in shared memory because Redis was away",
      ngx_defarm_redis_metric(fallbacks) },

    { "defarm_redis_invalidations_published_total", "counter",
      "cache invalidations sent to the other nodes",
      ngx_defarm_redis_metric(published) },

    { "defarm_redis_invalidations_applied_total", "counter",
      "cache invalidations received and applied",
      ngx_defarm_redis_metric(applied) },

    { "defarm_jwt_cache_entries", "gauge",
      "verified tokens remembered by the workers",
      ngx_defarm_jwtc_metric(entries) },

    { "defarm_jwt_cache_hits_total", "counter",
      "tokens found verified already", ngx_defarm_jwtc_metric(hits) },

    { "defarm_jwt_cache_misses_total", "counter",
      "tokens whose signature was checked", ngx_defarm_jwtc_metric(misses) },

    { "defarm_jwt_cache_evictions_total", "counter",
      "verified tokens forgotten for newer ones",
      ngx_defarm_jwtc_metric(evictions) },

    { "defarm_jobs_running", "gauge",
      "jobs the workers are running", ngx_defarm_jobs_metric(running) },

    { "defarm_jobs_claimed_total", "counter",
      "jobs claimed (attempts started)", ngx_defarm_jobs_metric(claimed) },

    { "defarm_jobs_done_total", "counter",
      "jobs done", ngx_defarm_jobs_metric(done) },

    { "defarm_jobs_retried_total", "counter",
      "attempts failed, to be tried again", ngx_defarm_jobs_metric(retried) },

    { "defarm_jobs_dead_total", "counter",
      "jobs given up (no attempt left, or a final failure)",
      ngx_defarm_jobs_metric(dead) },

    { NULL, NULL, NULL, 0 }
};


ngx_int_t
ngx_defarm_metrics_add_zone(ngx_conf_t *cf)
{
    ngx_shm_zone_t  *zone;

    zone = ngx_shared_memory_add(cf, &ngx_defarm_metrics_zone_name,
                                 NGX_DEFARM_METRICS_SIZE, &ngx_defarm_module);
    if (zone == NULL) {
        return NGX_ERROR;
    }

    zone->init = ngx_defarm_metrics_init_zone;
    ngx_defarm_metrics_zone = zone;

    return NGX_OK;
}


static ngx_int_t
ngx_defarm_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t  *shpool;

    if (data) {
        shm_zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    shm_zone->data = ngx_slab_calloc(shpool, NGX_DEFARM_STATS_SLOTS
                                             * sizeof(ngx_defarm_stats_slot_t));
    if (shm_zone->data == NULL) {
        return NGX_ERROR;
    }

    shpool->data = shm_zone->data;

    return NGX_OK;
}


static ngx_uint_t
ngx_defarm_metrics_alive(ngx_pid_t pid)
{
    return pid == ngx_pid || kill(pid, 0) == 0 || ngx_errno != NGX_ESRCH;
}


ngx_int_t
ngx_defarm_metrics_init_process(ngx_cycle_t *cycle)
{
    ngx_pid_t                 pid;
    ngx_uint_t                i;
    ngx_defarm_stats_slot_t  *slots;

    if (ngx_defarm_metrics_zone == NULL
        || ngx_defarm_metrics_zone->data == NULL)
    {
        return NGX_OK;
    }

    slots = ngx_defarm_metrics_zone->data;

    for (i = 0; i < NGX_DEFARM_STATS_SLOTS; i++) {
        pid = (ngx_pid_t) slots[i].pid;

        if (pid != 0 && ngx_defarm_metrics_alive(pid)) {
            continue;
        }

        if (!ngx_atomic_cmp_set(&slots[i].pid, (ngx_atomic_uint_t) pid,
                                (ngx_atomic_uint_t) ngx_pid))
        {
            continue;                   /* another worker was quicker */
        }

        /* every figure after the pid: none of a dead worker's is kept */

        ngx_memzero((u_char *) &slots[i]
                    + offsetof(ngx_defarm_stats_slot_t, pg),
                    sizeof(ngx_defarm_stats_slot_t)
                    - offsetof(ngx_defarm_stats_slot_t, pg));
        ngx_defarm_metrics_mine = &slots[i];

        return NGX_OK;
    }

    ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                  "defarm: no free metrics slot, this worker's figures are "
                  "not reported");

    return NGX_OK;
}


ngx_defarm_stats_slot_t *
ngx_defarm_metrics_slot(void)
{
    return ngx_defarm_metrics_mine ? ngx_defarm_metrics_mine
                                   : &ngx_defarm_metrics_local;
}


ngx_int_t
ngx_defarm_metrics_handler(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    size_t                    len;
    uint64_t                  sum;
    ngx_buf_t                *b;
    ngx_uint_t                i, live, n;
    ngx_chain_t               out;
    ngx_defarm_metric_t      *m;
    ngx_defarm_stats_slot_t  *slots, *live_slots[NGX_DEFARM_STATS_SLOTS];

    live = 0;

    if (ngx_defarm_metrics_zone && ngx_defarm_metrics_zone->data) {
        slots = ngx_defarm_metrics_zone->data;

        for (i = 0; i < NGX_DEFARM_STATS_SLOTS; i++) {
            /* a slot of a worker that exited is skipped */

            if (slots[i].pid == 0
                || !ngx_defarm_metrics_alive((ngx_pid_t) slots[i].pid))
            {
                continue;
            }

            live_slots[live++] = &slots[i];
        }

    } else {
        live_slots[live++] = &ngx_defarm_metrics_local;
    }

    len = 0;
    for (m = ngx_defarm_metrics; m->name; m++) {
        len += sizeof("# HELP  \n# TYPE  \n \n") - 1 + 2 * ngx_strlen(m->name)
               + ngx_strlen(m->name) + ngx_strlen(m->help)
               + ngx_strlen(m->type) + NGX_INT64_LEN;
    }

    len += sizeof("# HELP defarm_workers nginx workers reporting\n"
                  "# TYPE defarm_workers gauge\n"
                  "defarm_workers \n"
                  "# HELP defarm_db_pool_size PostgreSQL connections "
                  "allowed\n"
                  "# TYPE defarm_db_pool_size gauge\n"
                  "defarm_db_pool_size \n") - 1 + 2 * NGX_INT64_LEN;

    len += NGX_DEFARM_METRICS_CACHE_LEN;

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_sprintf(b->last,
                          "# HELP defarm_workers nginx workers reporting\n"
                          "# TYPE defarm_workers gauge\n"
                          "defarm_workers %ui\n"
                          "# HELP defarm_db_pool_size PostgreSQL "
                          "connections allowed\n"
                          "# TYPE defarm_db_pool_size gauge\n"
                          "defarm_db_pool_size %ui\n",
                          live, live * ngx_defarm_pg_pool_size());

    for (m = ngx_defarm_metrics; m->name; m++) {
        sum = 0;

        for (n = 0; n < live; n++) {
            sum += *(ngx_atomic_uint_t *) ((u_char *) live_slots[n]
                                           + m->offset);
        }

        b->last = ngx_sprintf(b->last, "# HELP %s %s\n# TYPE %s %s\n%s %uL\n",
                              m->name, m->help, m->name, m->type, m->name,
                              sum);
    }

    if (ngx_defarm_cache_stats(r)) {
        b->last = ngx_defarm_metrics_cache(b->last, ngx_defarm_cache_stats(r));
    }

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_defarm_send_chain(r, NGX_HTTP_OK, &ngx_defarm_metrics_type,
                                 &out, b->last - b->pos);
}


/* the cache's figures are zone-wide already: one set for all workers */

static u_char *
ngx_defarm_metrics_cache(u_char *p, ngx_defarm_cache_stats_t *st)
{
    ngx_uint_t  i;
    ngx_uint_t  cumulative;

    static const char  *le[] = { "0", "5", "10", "25", "50", "+Inf" };

    p = ngx_sprintf(p,
            "# HELP defarm_cache_entries entries in the cache zone\n"
            "# TYPE defarm_cache_entries gauge\n"
            "defarm_cache_entries %uA\n"
            "# HELP defarm_cache_requests_total cache look-ups by result\n"
            "# TYPE defarm_cache_requests_total counter\n"
            "defarm_cache_requests_total{result=\"hit\"} %uA\n"
            "defarm_cache_requests_total{result=\"miss\"} %uA\n"
            "# HELP defarm_cache_sets_total entries stored\n"
            "# TYPE defarm_cache_sets_total counter\n"
            "defarm_cache_sets_total %uA\n"
            "# HELP defarm_cache_evictions_total entries evicted to make "
            "room\n"
            "# TYPE defarm_cache_evictions_total counter\n"
            "defarm_cache_evictions_total %uA\n"
            "# HELP defarm_cache_oversize_total values not stored: larger "
            "than max_value\n"
            "# TYPE defarm_cache_oversize_total counter\n"
            "defarm_cache_oversize_total %uA\n"
            "# HELP defarm_cache_expired_total entries found expired or "
            "invalidated\n"
            "# TYPE defarm_cache_expired_total counter\n"
            "defarm_cache_expired_total %uA\n"
            "# HELP defarm_cache_lock_total lock outcomes\n"
            "# TYPE defarm_cache_lock_total counter\n"
            "defarm_cache_lock_total{outcome=\"first_try\"} %uA\n"
            "defarm_cache_lock_total{outcome=\"retry\"} %uA\n"
            "defarm_cache_lock_total{outcome=\"timeout\"} %uA\n"
            "# HELP defarm_cache_lock_wait_ms time requests waited for the "
            "cache lock\n"
            "# TYPE defarm_cache_lock_wait_ms histogram\n",
            st->entries, st->hits, st->misses, st->sets, st->evictions,
            st->oversize, st->expired, st->lock_first_try, st->lock_retries,
            st->lock_timeouts);

    cumulative = 0;

    for (i = 0; i < NGX_DEFARM_CACHE_WAIT_BUCKETS; i++) {
        cumulative += st->wait[i];
        p = ngx_sprintf(p, "defarm_cache_lock_wait_ms_bucket{le=\"%s\"} %ui\n",
                        le[i], cumulative);
    }

    p = ngx_sprintf(p, "defarm_cache_lock_wait_ms_sum %uA.%03uA\n"
                       "defarm_cache_lock_wait_ms_count %ui\n",
                    st->wait_sum_us / 1000, st->wait_sum_us % 1000,
                    cumulative);

    return p;
}
