
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "auth/ngx_defarm_usage.h"
#include "pg/ngx_defarm_pg.h"


/*
 * API-key usage, counted without delaying a request: each worker adds a
 * response's figures (by key and UTC day) to a table in its own memory,
 * and writes the table to PostgreSQL in one statement every
 * defarm_api_key_usage_flush.  While figures wait, a timer that is not
 * cancelable ticks every second (at most): it keeps a worker that is told
 * to stop (reload, quit) alive, and writes the figures on its next tick.
 * A batch the database cannot take is kept and tried again; a full table
 * is sealed and sent at once, from a posted event.
 */


#define NGX_DEFARM_USAGE_SLOTS    256
#define NGX_DEFARM_USAGE_KEY_LEN  36                    /* a UUID */
#define NGX_DEFARM_USAGE_TICK     1000
#define NGX_DEFARM_USAGE_SEALED   8


typedef struct {
    u_char                     key_id[NGX_DEFARM_USAGE_KEY_LEN];
    time_t                     day;                     /* days since 1970 */
    uint64_t                   requests;
    uint64_t                   errors;
    uint64_t                   total_ms;
    time_t                     last_used;
} ngx_defarm_usage_slot_t;


typedef struct {
    ngx_uint_t                 nslots;
    ngx_defarm_usage_slot_t    slots[1];
} ngx_defarm_usage_batch_t;


typedef struct {
    ngx_defarm_usage_slot_t    slots[NGX_DEFARM_USAGE_SLOTS];
    ngx_uint_t                 nslots;
    ngx_defarm_usage_batch_t  *sealed[NGX_DEFARM_USAGE_SEALED];
    ngx_uint_t                 nsealed;
    ngx_event_t                send;          /* posted: sealed batches */
    ngx_event_t                flush;
    ngx_msec_t                 interval;
    ngx_msec_t                 tick;
    ngx_msec_t                 flushed;       /* when, last */
    ngx_log_t                 *log;
} ngx_defarm_usage_t;


static void ngx_defarm_usage_flush_handler(ngx_event_t *ev);
static void ngx_defarm_usage_send_handler(ngx_event_t *ev);
static ngx_defarm_usage_batch_t *ngx_defarm_usage_seal(
    ngx_defarm_usage_t *u);
static ngx_int_t ngx_defarm_usage_send(ngx_defarm_usage_t *u,
    ngx_defarm_usage_batch_t *batch);
static void ngx_defarm_usage_finished(void *data, ngx_int_t rc,
    PGresult *res);
static ngx_int_t ngx_defarm_usage_cmp(const void *one,
    const void *two);


static ngx_defarm_usage_t  *ngx_defarm_usage;


/*
 * One batch: parallel arrays, one element per (key, day).  A key deleted
 * since its requests is skipped by the join.
 */

static ngx_defarm_pg_stmt_t  ngx_defarm_usage_stmt = {
    "defarm_usage_flush",
    "WITH b AS ("
        "SELECT * FROM unnest($1::uuid[], $2::date[], $3::bigint[], "
                             "$4::bigint[], $5::bigint[], $6::bigint[]) "
        "AS b(key_id, day, requests, errors, total_ms, last_used) "
        "WHERE EXISTS (SELECT 1 FROM api_keys k WHERE k.id = b.key_id)), "
    "d AS ("
        "INSERT INTO api_key_usage_daily AS d "
            "(key_id, day, requests, errors, total_ms) "
        "SELECT key_id, day, requests, errors, total_ms FROM b "
        "ON CONFLICT (key_id, day) DO UPDATE "
        "SET requests = d.requests + EXCLUDED.requests, "
            "errors = d.errors + EXCLUDED.errors, "
            "total_ms = d.total_ms + EXCLUDED.total_ms) "
    "UPDATE api_keys k "
    "SET usage_count = k.usage_count + s.requests, "
        "last_used_at = greatest(k.last_used_at, to_timestamp(s.last_used)) "
    "FROM (SELECT key_id, sum(requests) AS requests, "
                 "max(last_used) AS last_used "
          "FROM b GROUP BY key_id) s "
    "WHERE k.id = s.key_id",
    6, 0
};


ngx_int_t
ngx_defarm_usage_init_process(ngx_cycle_t *cycle, ngx_defarm_main_conf_t *mcf)
{
    ngx_defarm_usage_t  *u;

    if (mcf->db == NULL) {
        return NGX_OK;
    }

    u = ngx_pcalloc(cycle->pool, sizeof(ngx_defarm_usage_t));
    if (u == NULL) {
        return NGX_ERROR;
    }

    u->interval = mcf->usage_flush;
    u->tick = ngx_min(mcf->usage_flush, NGX_DEFARM_USAGE_TICK);
    u->flushed = ngx_current_msec;
    u->log = cycle->log;
    u->flush.handler = ngx_defarm_usage_flush_handler;
    u->flush.data = u;
    u->flush.log = cycle->log;
    u->send.handler = ngx_defarm_usage_send_handler;
    u->send.data = u;
    u->send.log = cycle->log;

    ngx_defarm_usage = u;

    return NGX_OK;
}


/* a worker stopped at once (TERM, or quit without a master) */

void
ngx_defarm_usage_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t           i, j, n;
    ngx_defarm_usage_t  *u;

    u = ngx_defarm_usage;

    if (u == NULL) {
        return;
    }

    for (n = 0, i = 0; i < u->nslots; i++) {
        n += u->slots[i].requests;
    }

    for (i = 0; i < u->nsealed; i++) {
        for (j = 0; j < u->sealed[i]->nslots; j++) {
            n += u->sealed[i]->slots[j].requests;
        }

        ngx_free(u->sealed[i]);
    }

    u->nsealed = 0;

    if (u->send.posted) {
        ngx_delete_posted_event(&u->send);
    }

    if (n) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "defarm: API-key usage of %ui requests not written: "
                      "the worker stopped without a graceful shutdown", n);
    }

    ngx_defarm_usage = NULL;
}


/* the slot of (key, day), a new one if need be; NULL when full */

static ngx_defarm_usage_slot_t *
ngx_defarm_usage_slot(ngx_defarm_usage_t *u, u_char *key_id, time_t day)
{
    ngx_uint_t                i;
    ngx_defarm_usage_slot_t  *s;

    for (i = 0; i < u->nslots; i++) {
        s = &u->slots[i];

        if (s->day == day
            && ngx_memcmp(s->key_id, key_id, NGX_DEFARM_USAGE_KEY_LEN) == 0)
        {
            return s;
        }
    }

    if (u->nslots == NGX_DEFARM_USAGE_SLOTS) {
        return NULL;
    }

    s = &u->slots[u->nslots++];
    ngx_memzero(s, sizeof(ngx_defarm_usage_slot_t));
    ngx_memcpy(s->key_id, key_id, NGX_DEFARM_USAGE_KEY_LEN);
    s->day = day;

    return s;
}


void
ngx_defarm_usage_record(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    time_t                    now, day;
    ngx_time_t               *tp;
    ngx_msec_int_t            ms;
    ngx_defarm_usage_t       *u;
    ngx_defarm_usage_slot_t  *s;

    u = ngx_defarm_usage;

    if (u == NULL || ctx->key_id.len != NGX_DEFARM_USAGE_KEY_LEN) {
        return;
    }

    tp = ngx_timeofday();
    now = tp->sec;
    day = now / 86400;

    ms = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000
                           + (tp->msec - r->start_msec));

    s = ngx_defarm_usage_slot(u, ctx->key_id.data, day);

    if (s == NULL) {

        /*
         * Full: the table is sealed and sent from a posted event, never
         * from here (a header filter must not drive the database pool,
         * which may finalize other requests), and a new one starts.
         */

        if (u->nsealed < NGX_DEFARM_USAGE_SEALED) {
            u->sealed[u->nsealed] = ngx_defarm_usage_seal(u);

            if (u->sealed[u->nsealed]) {
                u->nsealed++;
                ngx_post_event(&u->send, &ngx_posted_events);
                s = ngx_defarm_usage_slot(u, ctx->key_id.data, day);
            }
        }

        if (s == NULL) {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "defarm: API-key usage tables full: one request "
                          "not counted");
            return;
        }
    }

    s->requests++;
    s->errors += (r->headers_out.status >= NGX_HTTP_BAD_REQUEST);
    s->total_ms += ngx_max(ms, 0);
    s->last_used = now;

    if (!u->flush.timer_set) {
        ngx_add_timer(&u->flush, u->tick);
    }
}


static void
ngx_defarm_usage_flush_handler(ngx_event_t *ev)
{
    ngx_defarm_usage_t  *u = ev->data;

    ngx_defarm_usage_batch_t  *batch;

    if (u->nslots == 0) {
        return;
    }

    if (!ngx_exiting && ngx_current_msec - u->flushed < u->interval) {
        ngx_add_timer(&u->flush, u->tick);
        return;
    }

    u->flushed = ngx_current_msec;

    batch = ngx_defarm_usage_seal(u);

    if (batch && ngx_defarm_usage_send(u, batch) != NGX_OK) {
        /* counted again for the next try (a stopping worker says so) */
        ngx_defarm_usage_finished(batch, NGX_ERROR, NULL);
    }
}


static void
ngx_defarm_usage_send_handler(ngx_event_t *ev)
{
    ngx_defarm_usage_t  *u = ev->data;

    ngx_uint_t                 i, n;
    ngx_defarm_usage_batch_t  *sealed[NGX_DEFARM_USAGE_SEALED];

    n = u->nsealed;
    ngx_memcpy(sealed, u->sealed, n * sizeof(ngx_defarm_usage_batch_t *));
    u->nsealed = 0;

    for (i = 0; i < n; i++) {
        if (ngx_defarm_usage_send(u, sealed[i]) != NGX_OK) {
            ngx_defarm_usage_finished(sealed[i], NGX_ERROR, NULL);
        }
    }
}


/* the table as a batch (sorted), and a new table */

static ngx_defarm_usage_batch_t *
ngx_defarm_usage_seal(ngx_defarm_usage_t *u)
{
    ngx_defarm_usage_batch_t  *batch;

    /* in one order everywhere, so that two workers' batches lock alike */

    ngx_sort(u->slots, u->nslots, sizeof(ngx_defarm_usage_slot_t),
             ngx_defarm_usage_cmp);

    batch = ngx_alloc(offsetof(ngx_defarm_usage_batch_t, slots)
                      + u->nslots * sizeof(ngx_defarm_usage_slot_t), u->log);
    if (batch == NULL) {
        return NULL;
    }

    batch->nslots = u->nslots;
    ngx_memcpy(batch->slots, u->slots,
               u->nslots * sizeof(ngx_defarm_usage_slot_t));

    u->nslots = 0;

    if (u->flush.timer_set) {
        ngx_del_timer(&u->flush);
    }

    return batch;
}


/*
 * A batch to PostgreSQL, one "{a,b,c}" array literal per column (all
 * values are plain tokens); it is kept until PostgreSQL took it
 * (ngx_defarm_usage_finished).  NGX_ERROR: not sent, still the caller's.
 */

static ngx_int_t
ngx_defarm_usage_send(ngx_defarm_usage_t *u, ngx_defarm_usage_batch_t *batch)
{
    u_char                   *p[6];
    ngx_tm_t                  tm;
    ngx_str_t                 params[6];
    ngx_uint_t                i, k;
    ngx_pool_t               *pool;
    ngx_defarm_usage_slot_t  *s;

    pool = ngx_create_pool(1024, u->log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    for (k = 0; k < 6; k++) {
        params[k].data = ngx_pnalloc(pool, batch->nslots
                                           * (NGX_DEFARM_USAGE_KEY_LEN
                                              + NGX_INT64_LEN + 1) + 2);
        if (params[k].data == NULL) {
            ngx_destroy_pool(pool);
            return NGX_ERROR;
        }

        p[k] = params[k].data;
        *p[k]++ = '{';
    }

    for (i = 0; i < batch->nslots; i++) {
        s = &batch->slots[i];

        if (i) {
            for (k = 0; k < 6; k++) {
                *p[k]++ = ',';
            }
        }

        ngx_gmtime(s->day * 86400, &tm);

        p[0] = ngx_cpymem(p[0], s->key_id, NGX_DEFARM_USAGE_KEY_LEN);
        p[1] = ngx_sprintf(p[1], "%4d-%02d-%02d", tm.ngx_tm_year,
                           tm.ngx_tm_mon, tm.ngx_tm_mday);
        p[2] = ngx_sprintf(p[2], "%uL", s->requests);
        p[3] = ngx_sprintf(p[3], "%uL", s->errors);
        p[4] = ngx_sprintf(p[4], "%uL", s->total_ms);
        p[5] = ngx_sprintf(p[5], "%T", s->last_used);
    }

    for (k = 0; k < 6; k++) {
        *p[k]++ = '}';
        params[k].len = p[k] - params[k].data;
    }

    if (ngx_defarm_pg_background(&ngx_defarm_usage_stmt, params,
                                 ngx_defarm_usage_finished, batch)
        != NGX_OK)
    {
        ngx_destroy_pool(pool);
        return NGX_ERROR;
    }

    ngx_destroy_pool(pool);

    return NGX_OK;
}


static ngx_int_t
ngx_defarm_usage_cmp(const void *one, const void *two)
{
    const ngx_defarm_usage_slot_t  *a = one, *b = two;

    int  rc;

    rc = ngx_memcmp(a->key_id, b->key_id, NGX_DEFARM_USAGE_KEY_LEN);

    if (rc != 0) {
        return rc;
    }

    return (a->day > b->day) - (a->day < b->day);
}


/*
 * A batch is over.  One that failed (a deadlock with another worker's
 * batch, a timeout, the database gone) is added back to the table for the
 * next flush, except in a stopping worker, which says what it lost.
 */

static void
ngx_defarm_usage_finished(void *data, ngx_int_t rc, PGresult *res)
{
    ngx_defarm_usage_batch_t  *batch = data;

    ngx_uint_t                i, lost;
    ngx_defarm_usage_t       *u;
    ngx_defarm_usage_slot_t  *s, *b;

    u = ngx_defarm_usage;
    lost = 0;

    if (rc != NGX_OK) {

        for (i = 0; i < batch->nslots; i++) {
            b = &batch->slots[i];

            s = (u && rc == NGX_ERROR && !ngx_exiting)
                ? ngx_defarm_usage_slot(u, b->key_id, b->day) : NULL;

            if (s == NULL) {
                lost += b->requests;
                continue;
            }

            s->requests += b->requests;
            s->errors += b->errors;
            s->total_ms += b->total_ms;
            s->last_used = ngx_max(s->last_used, b->last_used);
        }

        if (u && u->nslots && !u->flush.timer_set) {
            ngx_add_timer(&u->flush, u->tick);
        }

        if (lost) {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "defarm: API-key usage of %ui requests not "
                          "written", lost);
        }
    }

    ngx_free(batch);
}
