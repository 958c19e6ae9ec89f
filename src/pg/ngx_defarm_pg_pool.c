
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "pg/ngx_defarm_pg.h"
#include "ngx_defarm_response.h"
#include "ngx_defarm_metrics.h"

#include <openssl/ssl.h>


/*
 * A per-worker pool of non-blocking libpq connections driven by nginx
 * events.
 *
 * Each connection's socket is wrapped in an nginx connection and watched
 * level-triggered: libpq reads in chunks of its own choosing and a lost
 * edge would leave a result unread until a timeout (the classic
 * ngx_postgres hang), so the read event stays armed while the connection
 * lives, and the write event is armed only while libpq has bytes to flush
 * or a connect step waits for writability.
 *
 * Over TLS (sslmode other than disable) the socket is not the whole
 * story: OpenSSL decrypts a record at a time and libpq reads no more than
 * the room in its buffer, so the end of a record can wait, decrypted,
 * inside OpenSSL while the kernel holds nothing.  No read event comes for
 * those bytes, level-triggered or not; if they end a result, the query
 * would wait for its timeout.  So wherever libpq would wait for input,
 * it is first asked again for as long as OpenSSL still holds bytes
 * (ngx_defarm_pg_ssl_pending), as libpq's own blocking waits do.
 *
 * A query belongs to its request and lives in the request pool.  A pool
 * cleanup detaches it from the queue or from its connection when the
 * request goes away, so no connection ever holds a pointer into freed
 * memory; a detached query's connection finishes (or times out) and goes
 * back to the pool.
 *
 * Reads (ngx_defarm_pg_query_read: statements that change nothing, so that
 * running them again is harmless) that arrive in the same turn of the
 * event loop, or wait for a connection together, share one: a connection
 * in libpq's pipeline mode takes up to "batch" of them, each followed by
 * a Flush request, and one Sync, sent once the turn's handlers have run
 * (a posted event), sends them in one write and wakes one backend.  Over
 * loopback TCP those writes and wake-ups are most of a read's cost.  The
 * server runs them one after the other, in one implicit transaction,
 * which changes nothing for reads (each has its own snapshot, as always),
 * and sends each answer when it is ready (the Flush), so the pool always
 * knows which read is running.  An error in one aborts those after it:
 * they go back to the head of the queue and run again.  A batch past its
 * timeout, or whose connection is lost, keeps the answers it has; the
 * read that was running gets the 504 (or the 503), those behind it run
 * again.  A read runs again at most NGX_DEFARM_PG_RERUNS times.
 *
 * Failures are answered here, with the API's JSON errors: a full queue or
 * a wait past queue_timeout is 503 db_pool_exhausted, a query past its
 * timeout is 504 database_timeout (its connection is closed, so a stale
 * result can never reach a later request), a database that cannot be
 * reached is 503 database_unavailable within the connect timeout and
 * then at once until a reconnect probe, retried with capped backoff,
 * succeeds.
 */


typedef enum {
    NGX_DEFARM_PG_FREE = 0,
    NGX_DEFARM_PG_CONNECTING,
    NGX_DEFARM_PG_IDLE,
    NGX_DEFARM_PG_PREPARING,
    NGX_DEFARM_PG_QUERYING,
    NGX_DEFARM_PG_BATCHING,                   /* taking reads, unsent */
    NGX_DEFARM_PG_BATCHED                     /* sent, answering */
} ngx_defarm_pg_state_e;


typedef struct ngx_defarm_pg_pool_s  ngx_defarm_pg_pool_t;


typedef struct {
    ngx_queue_t                queue;         /* in idle or free */
    ngx_defarm_pg_pool_t      *pool;
    PGconn                    *pg;
    ngx_connection_t          *c;
    ngx_defarm_pg_state_e      state;
    ngx_defarm_pg_query_t     *query;
    PGresult                  *result;
    ngx_uint_t                 preparing;     /* statement index */
    ngx_defarm_pg_query_t    **slots;         /* a batch's, NULL if gone */
    PGresult                 **results;
    ngx_uint_t                 nslots;
    ngx_uint_t                 next;          /* the slot answered next */
    dev_t                      dev;           /* the socket's identity */
    ino_t                      ino;
    u_char                     prepared[NGX_DEFARM_PG_MAX_STMTS / 8];
} ngx_defarm_pg_conn_t;


struct ngx_defarm_pg_pool_s {
    ngx_defarm_pg_conf_t      *conf;
    ngx_log_t                 *log;
    ngx_defarm_pg_conn_t      *conns;
    ngx_queue_t                idle;
    ngx_queue_t                free;
    ngx_queue_t                waiting;
    ngx_uint_t                 nidle;
    ngx_uint_t                 nbusy;
    ngx_uint_t                 nconnecting;
    ngx_uint_t                 nwaiting;
    ngx_msec_t                 backoff;
    ngx_event_t                retry;
    ngx_event_t                report;
    ngx_event_t                sync;          /* posted: sends the batch */
    ngx_defarm_pg_conn_t      *filling;       /* the batch taking reads */
    ngx_defarm_pg_stats_t     *stats;
    unsigned                   down:1;
};


struct ngx_defarm_pg_query_s {
    ngx_http_request_t        *request;       /* NULL: in the background */
    ngx_pool_t                *pool;          /* a background query's */
    ngx_defarm_pg_stmt_t      *stmt;
    const char                *values[NGX_DEFARM_PG_MAX_PARAMS];
    ngx_defarm_pg_done_pt      done;
    ngx_defarm_pg_finished_pt  finished;      /* a background query's */
    void                      *data;
    ngx_event_t                wait;
    ngx_queue_t                queue;
    ngx_defarm_pg_conn_t      *conn;
    PGresult                  *res;
    uint64_t                   start_us;
    ngx_msec_t                 timeout;
    ngx_uint_t                 slot;          /* in its batch */
    ngx_uint_t                 reruns;
    unsigned                   read:1;        /* may share a batch */
    unsigned                   queued:1;
    unsigned                   sync:1;        /* inside ngx_defarm_pg_query */
};


static ngx_int_t ngx_defarm_pg_connect(ngx_defarm_pg_pool_t *pool);
static ngx_uint_t ngx_defarm_pg_moved(ngx_defarm_pg_conn_t *pc);
static void ngx_defarm_pg_connect_poll(ngx_defarm_pg_conn_t *pc);
static void ngx_defarm_pg_connected(ngx_defarm_pg_conn_t *pc);
static void ngx_defarm_pg_connect_failed(ngx_defarm_pg_conn_t *pc,
    const char *why);
static void ngx_defarm_pg_close(ngx_defarm_pg_conn_t *pc);
static void ngx_defarm_pg_finish(ngx_defarm_pg_query_t *q, ngx_int_t rc,
    PGresult *res);
static ngx_int_t ngx_defarm_pg_wrap(ngx_defarm_pg_conn_t *pc);
static ngx_int_t ngx_defarm_pg_want_write(ngx_defarm_pg_conn_t *pc,
    ngx_uint_t on);
static void ngx_defarm_pg_event_handler(ngx_event_t *ev);
static ngx_uint_t ngx_defarm_pg_ssl_pending(PGconn *pg);
static ngx_int_t ngx_defarm_pg_ready(ngx_defarm_pg_conn_t *pc);
static void ngx_defarm_pg_idle_read(ngx_defarm_pg_conn_t *pc);
static void ngx_defarm_pg_send(ngx_defarm_pg_conn_t *pc);
static ngx_int_t ngx_defarm_pg_flush(ngx_defarm_pg_conn_t *pc);
static void ngx_defarm_pg_read(ngx_defarm_pg_conn_t *pc);
static void ngx_defarm_pg_release(ngx_defarm_pg_conn_t *pc);
static void ngx_defarm_pg_complete(ngx_defarm_pg_conn_t *pc);
static void ngx_defarm_pg_lost(ngx_defarm_pg_conn_t *pc, const char *why);
static void ngx_defarm_pg_timed_out(ngx_defarm_pg_conn_t *pc);
static void ngx_defarm_pg_unqueue(ngx_defarm_pg_pool_t *pool,
    ngx_defarm_pg_query_t *q);
static void ngx_defarm_pg_take(ngx_defarm_pg_conn_t *pc);
static void ngx_defarm_pg_start(ngx_defarm_pg_conn_t *pc,
    ngx_defarm_pg_query_t *q);
static void ngx_defarm_pg_dispatch(ngx_defarm_pg_pool_t *pool);
static void ngx_defarm_pg_deliver(ngx_defarm_pg_query_t *q, PGresult *res);
static void ngx_defarm_pg_fail(ngx_defarm_pg_query_t *q, ngx_uint_t status,
    ngx_defarm_err_e kind, const char *msg);
static void ngx_defarm_pg_fail_waiting(ngx_defarm_pg_pool_t *pool);
static void ngx_defarm_pg_wait_handler(ngx_event_t *ev);
static void ngx_defarm_pg_retry_handler(ngx_event_t *ev);
static void ngx_defarm_pg_report_handler(ngx_event_t *ev);
static void ngx_defarm_pg_query_cleanup(void *data);
static ngx_int_t ngx_defarm_pg_submit(ngx_http_request_t *r,
    ngx_defarm_pg_stmt_t *stmt, ngx_str_t *params,
    ngx_defarm_pg_done_pt done, void *data, ngx_uint_t read);
static void ngx_defarm_pg_batch_add(ngx_defarm_pg_conn_t *pc,
    ngx_defarm_pg_query_t *q);
static ngx_int_t ngx_defarm_pg_batch_open(ngx_defarm_pg_conn_t *pc,
    ngx_defarm_pg_query_t *q);
static void ngx_defarm_pg_batch_send(ngx_defarm_pg_conn_t *pc);
static void ngx_defarm_pg_batch_sync(ngx_event_t *ev);
static ngx_int_t ngx_defarm_pg_batch_result(ngx_defarm_pg_conn_t *pc,
    PGresult *res);
static void ngx_defarm_pg_batch_done(ngx_defarm_pg_conn_t *pc);
static void ngx_defarm_pg_batch_abort(ngx_defarm_pg_conn_t *pc,
    ngx_uint_t timed_out);
static ngx_uint_t ngx_defarm_pg_batch_take(ngx_defarm_pg_conn_t *pc,
    ngx_defarm_pg_query_t **qs, PGresult **res);
static void ngx_defarm_pg_requeue(ngx_defarm_pg_pool_t *pool,
    ngx_defarm_pg_query_t *q);

static void ngx_defarm_pg_gauges(ngx_defarm_pg_pool_t *pool);
static const char *ngx_defarm_pg_flatten(const char *msg);
static const char *ngx_defarm_pg_message(PGconn *pg);
static void ngx_defarm_pg_notice(void *arg, const char *message);


static ngx_defarm_pg_pool_t   *ngx_defarm_pg_pool;
static ngx_uint_t              ngx_defarm_pg_nstmts;
static ngx_defarm_pg_stats_t   ngx_defarm_pg_exiting_stats;


#define ngx_defarm_pg_is_prepared(pc, i)                                     \
    ((pc)->prepared[(i) / 8] & (1 << ((i) % 8)))
/* a read whose statement the connection has prepared can join its batch */

#define ngx_defarm_pg_batchable(pc, q)                                       \
    ((q)->read && (q)->stmt->index < NGX_DEFARM_PG_MAX_STMTS                 \
     && ngx_defarm_pg_is_prepared(pc, (q)->stmt->index))

/* how often a read of a batch may run again */

#define NGX_DEFARM_PG_RERUNS  3

#define ngx_defarm_pg_set_prepared(pc, i)                                    \
    (pc)->prepared[(i) / 8] |= (u_char) (1 << ((i) % 8))


ngx_int_t
ngx_defarm_pg_init_process(ngx_cycle_t *cycle, ngx_defarm_pg_conf_t *pcf)
{
    ngx_uint_t             i;
    ngx_defarm_pg_pool_t  *pool;

    if (pcf == NULL) {
        return NGX_OK;
    }

    pool = ngx_pcalloc(cycle->pool, sizeof(ngx_defarm_pg_pool_t));
    if (pool == NULL) {
        return NGX_ERROR;
    }

    pool->conns = ngx_pcalloc(cycle->pool,
                              pcf->size * sizeof(ngx_defarm_pg_conn_t));
    if (pool->conns == NULL) {
        return NGX_ERROR;
    }

    pool->conf = pcf;
    pool->log = cycle->log;
    pool->stats = &ngx_defarm_metrics_slot()->pg;

    ngx_queue_init(&pool->idle);
    ngx_queue_init(&pool->free);
    ngx_queue_init(&pool->waiting);

    for (i = 0; i < pcf->size; i++) {
        pool->conns[i].pool = pool;
        pool->conns[i].slots = ngx_pcalloc(cycle->pool, pcf->batch
                                           * sizeof(ngx_defarm_pg_query_t *));
        pool->conns[i].results = ngx_pcalloc(cycle->pool,
                                             pcf->batch * sizeof(PGresult *));

        if (pool->conns[i].slots == NULL || pool->conns[i].results == NULL) {
            return NGX_ERROR;
        }

        ngx_queue_insert_tail(&pool->free, &pool->conns[i].queue);
    }

    pool->sync.handler = ngx_defarm_pg_batch_sync;
    pool->sync.data = pool;
    pool->sync.log = cycle->log;

    /* timers that must not hold a worker back from a graceful exit */

    pool->retry.handler = ngx_defarm_pg_retry_handler;
    pool->retry.data = pool;
    pool->retry.log = cycle->log;
    pool->retry.cancelable = 1;

    pool->report.handler = ngx_defarm_pg_report_handler;
    pool->report.data = pool;
    pool->report.log = cycle->log;
    pool->report.cancelable = 1;

    ngx_add_timer(&pool->report, pcf->metrics_interval);

    ngx_defarm_pg_pool = pool;

    /* one connection up front, so the first request does not wait */

    (void) ngx_defarm_pg_connect(pool);

    return NGX_OK;
}


void
ngx_defarm_pg_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t              i;
    ngx_queue_t            *qu;
    ngx_defarm_pg_pool_t   *pool;
    ngx_defarm_pg_query_t  *q;

    pool = ngx_defarm_pg_pool;
    if (pool == NULL) {
        return;
    }

    /* what a process does on its way out is nobody's figure any more */

    pool->stats = &ngx_defarm_pg_exiting_stats;

    if (pool->sync.posted) {
        ngx_delete_posted_event(&pool->sync);
    }

    /* background statements still waiting or running end here */

    while (!ngx_queue_empty(&pool->waiting)) {
        qu = ngx_queue_head(&pool->waiting);
        q = ngx_queue_data(qu, ngx_defarm_pg_query_t, queue);

        ngx_queue_remove(qu);
        q->queued = 0;

        if (q->request == NULL) {
            ngx_defarm_pg_finish(q, NGX_ABORT, NULL);
        }
    }

    for (i = 0; i < pool->conf->size; i++) {
        q = pool->conns[i].query;

        if (q && q->request == NULL) {
            pool->conns[i].query = NULL;
            ngx_defarm_pg_finish(q, NGX_ABORT, NULL);
        }

        if (pool->conns[i].pg) {
            ngx_defarm_pg_close(&pool->conns[i]);
        }
    }

    ngx_defarm_pg_pool = NULL;
}


/* a background statement is over: its owner hears, its pool goes */

static void
ngx_defarm_pg_finish(ngx_defarm_pg_query_t *q, ngx_int_t rc, PGresult *res)
{
    if (q->wait.timer_set) {
        ngx_del_timer(&q->wait);
    }

    if (q->finished) {
        q->finished(q->data, rc, res);
    }

    ngx_destroy_pool(q->pool);
}


ngx_defarm_pg_stats_t *
ngx_defarm_pg_stats(void)
{
    return &ngx_defarm_metrics_slot()->pg;
}


ngx_uint_t
ngx_defarm_pg_pool_size(void)
{
    return ngx_defarm_pg_pool ? ngx_defarm_pg_pool->conf->size : 0;
}


static void
ngx_defarm_pg_gauges(ngx_defarm_pg_pool_t *pool)
{
    pool->stats->connections = pool->nidle + pool->nbusy;
    pool->stats->idle = pool->nidle;
    pool->stats->busy = pool->nbusy;
    pool->stats->waiting = pool->nwaiting;
}


static const char *
ngx_defarm_pg_flatten(const char *msg)
{
    static u_char  buf[512];

    u_char  *p, *last;

    /*
     * libpq's messages span lines ("...failed: Connection refused\n\tIs
     * the server running..."); a log record is one line.
     */

    p = buf;
    last = buf + sizeof(buf) - 1;

    for ( /* void */ ; msg && *msg && p < last; msg++) {
        if (*msg == '\n' || *msg == '\t' || *msg == '\r') {
            if (p > buf && p[-1] != ' ') {
                *p++ = ' ';
            }

            continue;
        }

        *p++ = *msg;
    }

    while (p > buf && p[-1] == ' ') {
        p--;
    }

    *p = '\0';

    return buf[0] ? (const char *) buf : "unknown error";
}


static const char *
ngx_defarm_pg_message(PGconn *pg)
{
    return ngx_defarm_pg_flatten(PQerrorMessage(pg));
}


static void
ngx_defarm_pg_notice(void *arg, const char *message)
{
    ngx_defarm_pg_pool_t  *pool = arg;

    /* server notices go to nginx's log, never to the worker's stderr */

    ngx_log_error(NGX_LOG_NOTICE, pool->log, 0, "defarm: PostgreSQL: %s",
                  ngx_defarm_pg_flatten(message));
}


/* connecting */


static ngx_int_t
ngx_defarm_pg_connect(ngx_defarm_pg_pool_t *pool)
{
    ngx_queue_t           *q;
    ngx_defarm_pg_conn_t  *pc;

    if (ngx_queue_empty(&pool->free)) {
        return NGX_DECLINED;
    }

    q = ngx_queue_head(&pool->free);
    ngx_queue_remove(q);
    pc = ngx_queue_data(q, ngx_defarm_pg_conn_t, queue);

    pc->state = NGX_DEFARM_PG_CONNECTING;
    pool->nconnecting++;

    /* with hostaddr resolved at configuration time this never does DNS */

    pc->pg = PQconnectStartParams(pool->conf->keywords, pool->conf->values,
                                  0);

    if (pc->pg == NULL) {
        ngx_defarm_pg_connect_failed(pc, "out of memory");
        return NGX_ERROR;
    }

    if (PQstatus(pc->pg) == CONNECTION_BAD) {
        ngx_defarm_pg_connect_failed(pc, ngx_defarm_pg_message(pc->pg));
        return NGX_ERROR;
    }

    (void) PQsetNoticeProcessor(pc->pg, ngx_defarm_pg_notice, pool);

    if (ngx_defarm_pg_wrap(pc) != NGX_OK) {
        ngx_defarm_pg_connect_failed(pc, "cannot watch its socket");
        return NGX_ERROR;
    }

    ngx_add_timer(pc->c->read, pool->conf->connect_timeout);

    /* libpq: before the first PQconnectPoll, wait as if it said WRITING */

    if (ngx_defarm_pg_want_write(pc, 1) != NGX_OK) {
        ngx_defarm_pg_connect_failed(pc, "cannot watch its socket");
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_defarm_pg_wrap(ngx_defarm_pg_conn_t *pc)
{
    struct stat        st;
    ngx_socket_t       fd;
    ngx_connection_t  *c;

    fd = PQsocket(pc->pg);
    if (fd == (ngx_socket_t) -1) {
        return NGX_ERROR;
    }

    c = ngx_get_connection(fd, pc->pool->log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->data = pc;
    c->log = pc->pool->log;
    c->read->log = c->log;
    c->write->log = c->log;
    c->read->handler = ngx_defarm_pg_event_handler;
    c->write->handler = ngx_defarm_pg_event_handler;
    c->number = ngx_atomic_fetch_add(ngx_connection_counter, 1);

    pc->c = c;

    if (fstat(fd, &st) == 0) {
        pc->dev = st.st_dev;
        pc->ino = st.st_ino;
    }

    /* level-triggered: see the comment at the top of this file */

    if (ngx_add_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT) != NGX_OK) {
        ngx_defarm_free_connection(c);
        pc->c = NULL;
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_defarm_pg_want_write(ngx_defarm_pg_conn_t *pc, ngx_uint_t on)
{
    ngx_event_t  *wev;

    wev = pc->c->write;

    if (on && !wev->active) {
        return ngx_add_event(wev, NGX_WRITE_EVENT, NGX_LEVEL_EVENT);
    }

    if (!on && wev->active) {
        return ngx_del_event(wev, NGX_WRITE_EVENT, 0);
    }

    return NGX_OK;
}


static ngx_uint_t
ngx_defarm_pg_moved(ngx_defarm_pg_conn_t *pc)
{
    struct stat   st;
    ngx_socket_t  fd;

    fd = PQsocket(pc->pg);

    if (fd != pc->c->fd) {
        return 1;
    }

    return fstat(fd, &st) == 0
           && (st.st_dev != pc->dev || st.st_ino != pc->ino);
}


static void
ngx_defarm_pg_connect_poll(ngx_defarm_pg_conn_t *pc)
{
    ngx_msec_t                 timer;
    PostgresPollingStatusType  st;

    for ( ;; ) {
        st = PQconnectPoll(pc->pg);

        /*
         * libpq may move to another socket (the next host or address, a
         * retry without SSL); it closed the old one itself, so only our
         * wrapper goes.  The new socket often gets the old number, hence
         * the inode comparison.
         */

        if (st != PGRES_POLLING_FAILED && ngx_defarm_pg_moved(pc)) {
            timer = pc->c->read->timer.key - ngx_current_msec;
            ngx_defarm_free_connection(pc->c);
            pc->c = NULL;

            if (ngx_defarm_pg_wrap(pc) != NGX_OK) {
                ngx_defarm_pg_connect_failed(pc, "cannot watch its socket");
                return;
            }

            ngx_add_timer(pc->c->read, (ngx_msec_int_t) timer > 0 ? timer
                                                                  : 1);
        }

        switch (st) {

        case PGRES_POLLING_READING:

            /* the server's answer may be in OpenSSL already: see the top */

            if (ngx_defarm_pg_ssl_pending(pc->pg)) {
                continue;
            }

            if (ngx_defarm_pg_want_write(pc, 0) != NGX_OK) {
                ngx_defarm_pg_connect_failed(pc, "cannot watch its socket");
            }

            return;

        case PGRES_POLLING_WRITING:
            if (ngx_defarm_pg_want_write(pc, 1) != NGX_OK) {
                ngx_defarm_pg_connect_failed(pc, "cannot watch its socket");
            }

            return;

        case PGRES_POLLING_OK:
            ngx_defarm_pg_connected(pc);
            return;

        case PGRES_POLLING_FAILED:
            ngx_defarm_pg_connect_failed(pc, ngx_defarm_pg_message(pc->pg));
            return;

        default:
            /* PGRES_POLLING_ACTIVE is unused by libpq: poll again */
            continue;
        }
    }
}


static void
ngx_defarm_pg_connected(ngx_defarm_pg_conn_t *pc)
{
    ngx_defarm_pg_pool_t  *pool = pc->pool;

    if (pc->c->read->timer_set) {
        ngx_del_timer(pc->c->read);
    }

    if (PQsetnonblocking(pc->pg, 1) != 0
        || ngx_defarm_pg_want_write(pc, 0) != NGX_OK)
    {
        ngx_defarm_pg_connect_failed(pc, ngx_defarm_pg_message(pc->pg));
        return;
    }

    if (pool->down) {
        ngx_log_error(NGX_LOG_NOTICE, pool->log, 0,
                      "defarm: PostgreSQL is reachable again");
    }

    pool->down = 0;
    pool->backoff = 0;
    pool->nconnecting--;
    pool->stats->connects++;

    if (pool->retry.timer_set) {
        ngx_del_timer(&pool->retry);
    }

    ngx_memzero(pc->prepared, sizeof(pc->prepared));

    pc->state = NGX_DEFARM_PG_IDLE;
    ngx_queue_insert_head(&pool->idle, &pc->queue);
    pool->nidle++;

    ngx_defarm_pg_dispatch(pool);
}


static void
ngx_defarm_pg_connect_failed(ngx_defarm_pg_conn_t *pc, const char *why)
{
    ngx_uint_t             level;
    ngx_defarm_pg_pool_t  *pool = pc->pool;

    /* one line per outage, not one per attempt */

    level = pool->down ? NGX_LOG_INFO : NGX_LOG_ERR;

    ngx_log_error(level, pool->log, 0,
                  "defarm: cannot connect to PostgreSQL: %s", why);

    ngx_defarm_pg_close(pc);

    pool->nconnecting--;
    pool->stats->connect_failures++;

    if (pool->nidle + pool->nbusy + pool->nconnecting > 0) {
        /* the connections that work go on serving the queue */
        ngx_defarm_pg_gauges(pool);
        return;
    }

    pool->down = 1;
    pool->backoff = pool->backoff ? ngx_min(pool->backoff * 2,
                                            pool->conf->retry_max)
                                  : ngx_min(100, pool->conf->retry_max);

    if (!pool->retry.timer_set) {
        ngx_add_timer(&pool->retry, pool->backoff);
    }

    ngx_defarm_pg_fail_waiting(pool);
}


static void
ngx_defarm_pg_retry_handler(ngx_event_t *ev)
{
    ngx_defarm_pg_pool_t  *pool = ev->data;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    if (pool->nconnecting == 0) {
        (void) ngx_defarm_pg_connect(pool);
    }
}


/* closing: libpq owns the socket, so nginx forgets it without closing */


static void
ngx_defarm_pg_close(ngx_defarm_pg_conn_t *pc)
{
    ngx_defarm_pg_pool_t  *pool = pc->pool;

    switch (pc->state) {

    case NGX_DEFARM_PG_IDLE:
        ngx_queue_remove(&pc->queue);
        pool->nidle--;
        break;

    case NGX_DEFARM_PG_PREPARING:
    case NGX_DEFARM_PG_QUERYING:
    case NGX_DEFARM_PG_BATCHING:
    case NGX_DEFARM_PG_BATCHED:
        pool->nbusy--;
        break;

    default:
        break;
    }

    if (pool->filling == pc) {
        pool->filling = NULL;
    }

    while (pc->nslots) {
        pc->nslots--;

        if (pc->slots[pc->nslots]) {
            pc->slots[pc->nslots]->conn = NULL;
            pc->slots[pc->nslots] = NULL;
        }

        if (pc->results[pc->nslots]) {
            PQclear(pc->results[pc->nslots]);
            pc->results[pc->nslots] = NULL;
        }
    }

    pc->next = 0;

    if (pc->c) {
        ngx_defarm_free_connection(pc->c);
        pc->c = NULL;
    }

    if (pc->result) {
        PQclear(pc->result);
        pc->result = NULL;
    }

    if (pc->pg) {
        PQfinish(pc->pg);
        pc->pg = NULL;
    }

    pc->query = NULL;
    pc->state = NGX_DEFARM_PG_FREE;
    ngx_queue_insert_tail(&pool->free, &pc->queue);

    ngx_defarm_pg_gauges(pool);
}


/* events */


static void
ngx_defarm_pg_event_handler(ngx_event_t *ev)
{
    ngx_connection_t      *c;
    ngx_defarm_pg_conn_t  *pc;

    c = ev->data;
    pc = c->data;

    if (ev->timedout) {
        ev->timedout = 0;

        if (pc->state == NGX_DEFARM_PG_CONNECTING) {
            ngx_defarm_pg_connect_failed(pc, "connection timed out");

        } else {
            ngx_defarm_pg_timed_out(pc);
        }

        return;
    }

    switch (pc->state) {

    case NGX_DEFARM_PG_CONNECTING:
        ngx_defarm_pg_connect_poll(pc);
        return;

    case NGX_DEFARM_PG_IDLE:
        if (!ev->write) {
            ngx_defarm_pg_idle_read(pc);
        }

        return;

    case NGX_DEFARM_PG_PREPARING:
    case NGX_DEFARM_PG_QUERYING:
    case NGX_DEFARM_PG_BATCHING:
    case NGX_DEFARM_PG_BATCHED:
        if (ev->write) {
            (void) ngx_defarm_pg_flush(pc);

        } else {
            ngx_defarm_pg_read(pc);
        }

        return;

    default:
        return;
    }
}


/* bytes OpenSSL has decrypted and libpq not yet read: see the top */

static ngx_uint_t
ngx_defarm_pg_ssl_pending(PGconn *pg)
{
    SSL  *ssl;

    /* NULL without TLS (and from a libpq built without OpenSSL) */

    ssl = PQsslStruct(pg, "OpenSSL");

    return ssl != NULL && SSL_pending(ssl) > 0;
}


/*
 * PQisBusy() for an event loop: libpq is first given what OpenSSL holds.
 * NGX_OK: PQgetResult() will not block; NGX_AGAIN: libpq waits for the
 * server, and the socket's read event will say when more comes;
 * NGX_ERROR: reading failed.  Each round takes at least a byte of the one
 * record OpenSSL holds, so the loop ends.
 */

static ngx_int_t
ngx_defarm_pg_ready(ngx_defarm_pg_conn_t *pc)
{
    while (PQisBusy(pc->pg)) {

        if (!ngx_defarm_pg_ssl_pending(pc->pg)) {
            return NGX_AGAIN;
        }

        if (!PQconsumeInput(pc->pg)) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void
ngx_defarm_pg_idle_read(ngx_defarm_pg_conn_t *pc)
{
    PGresult  *res;
    PGnotify  *n;

    /*
     * An idle connection hears from the server only when something is
     * wrong (shutdown, a terminated backend) or for a notice: consume it,
     * and close the connection unless it is still healthy.
     */

    if (PQconsumeInput(pc->pg) && PQstatus(pc->pg) == CONNECTION_OK) {

        while ((n = PQnotifies(pc->pg)) != NULL) {
            PQfreemem(n);
        }

        if (ngx_defarm_pg_ready(pc) == NGX_OK) {
            res = PQgetResult(pc->pg);

            if (res == NULL) {
                return;
            }

            PQclear(res);
        }
    }

    ngx_log_error(NGX_LOG_INFO, pc->pool->log, 0,
                  "defarm: closing idle PostgreSQL connection: %s",
                  ngx_defarm_pg_message(pc->pg));

    ngx_defarm_pg_close(pc);
}


/* running a query */


static void
ngx_defarm_pg_send(ngx_defarm_pg_conn_t *pc)
{
    int                     ok;
    ngx_uint_t              i;
    ngx_defarm_pg_stmt_t   *stmt;
    ngx_defarm_pg_query_t  *q;

    q = pc->query;
    stmt = q->stmt;
    i = stmt->index;

    if (i < NGX_DEFARM_PG_MAX_STMTS && !ngx_defarm_pg_is_prepared(pc, i)) {
        pc->state = NGX_DEFARM_PG_PREPARING;
        pc->preparing = i;
        ok = PQsendPrepare(pc->pg, stmt->name, stmt->sql, stmt->nparams,
                           NULL);

    } else if (i < NGX_DEFARM_PG_MAX_STMTS) {
        pc->state = NGX_DEFARM_PG_QUERYING;
        ok = PQsendQueryPrepared(pc->pg, stmt->name, stmt->nparams,
                                 q->values, NULL, NULL, 0);

    } else {
        /* more statements than the per-connection table tracks */
        pc->state = NGX_DEFARM_PG_QUERYING;
        ok = PQsendQueryParams(pc->pg, stmt->sql, stmt->nparams, NULL,
                               q->values, NULL, NULL, 0);
    }

    if (!ok) {
        ngx_defarm_pg_lost(pc, ngx_defarm_pg_message(pc->pg));
        return;
    }

    (void) ngx_defarm_pg_flush(pc);
}


static ngx_int_t
ngx_defarm_pg_flush(ngx_defarm_pg_conn_t *pc)
{
    int  rc;

    /*
     * NGX_ERROR means the connection was closed, and its slot may already
     * serve a new connection: the caller must not look at pc again.
     */

    rc = PQflush(pc->pg);

    if (rc == -1) {
        ngx_defarm_pg_lost(pc, ngx_defarm_pg_message(pc->pg));
        return NGX_ERROR;
    }

    /*
     * 1: libpq still holds bytes; write when the socket can take them.
     * Meanwhile the read event stays armed and ngx_defarm_pg_read()
     * calls PQconsumeInput() and flushes again, as libpq asks of a
     * non-blocking caller.  The same holds over TLS: an SSL_write() that
     * wants to read first is "nothing sent" to libpq (1 here), and the
     * read it needs is done by libpq itself, in the PQconsumeInput() or
     * in this PQflush() (which reads when it cannot send everything).
     * PostgreSQL does not renegotiate (there is none in TLS 1.3), so
     * that is not expected to happen at all.
     */

    if (ngx_defarm_pg_want_write(pc, rc == 1) != NGX_OK) {
        ngx_defarm_pg_lost(pc, "cannot watch its socket");
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_defarm_pg_read(ngx_defarm_pg_conn_t *pc)
{
    ngx_int_t  rc;
    PGresult  *res;

    if (!PQconsumeInput(pc->pg)) {
        ngx_defarm_pg_lost(pc, ngx_defarm_pg_message(pc->pg));
        return;
    }

    /* libpq docs: reading may unblock a pending flush */

    if (pc->c->write->active && ngx_defarm_pg_flush(pc) != NGX_OK) {
        return;
    }

    /* after each result too: the next one may be in OpenSSL already */

    for ( ;; ) {
        rc = ngx_defarm_pg_ready(pc);

        if (rc == NGX_ERROR) {
            ngx_defarm_pg_lost(pc, ngx_defarm_pg_message(pc->pg));
            return;
        }

        if (rc == NGX_AGAIN) {
            return;
        }

        res = PQgetResult(pc->pg);

        if (pc->state == NGX_DEFARM_PG_BATCHING
            || pc->state == NGX_DEFARM_PG_BATCHED)
        {
            if (ngx_defarm_pg_batch_result(pc, res) != NGX_OK) {
                return;
            }

            continue;
        }

        if (res == NULL) {
            ngx_defarm_pg_complete(pc);
            return;
        }

        /* one statement, one result: keep the first */

        if (pc->result == NULL) {
            pc->result = res;

        } else {
            PQclear(res);
        }
    }
}


/*
 * A connection done with its statement goes back to the pool, unless its
 * session is not clean any more.
 */

static void
ngx_defarm_pg_release(ngx_defarm_pg_conn_t *pc)
{
    ngx_defarm_pg_pool_t  *pool = pc->pool;

    if (PQstatus(pc->pg) == CONNECTION_OK
        && PQtransactionStatus(pc->pg) == PQTRANS_IDLE)
    {
        pool->nbusy--;
        pc->state = NGX_DEFARM_PG_IDLE;
        ngx_queue_insert_head(&pool->idle, &pc->queue);
        pool->nidle++;

    } else {
        ngx_defarm_pg_close(pc);
    }

    ngx_defarm_pg_gauges(pool);
}


static void
ngx_defarm_pg_complete(ngx_defarm_pg_conn_t *pc)
{
    char                   *state;
    PGresult               *res;
    ngx_defarm_pg_pool_t   *pool = pc->pool;
    ngx_defarm_pg_query_t  *q;

    res = pc->result;
    pc->result = NULL;

    if (pc->state == NGX_DEFARM_PG_PREPARING && res) {
        state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

        /*
         * The statement exists on the server once PREPARE succeeded, even
         * when its request went away meanwhile; "already exists" (42P05)
         * means the same.
         */

        if (PQresultStatus(res) == PGRES_COMMAND_OK
            || (state && ngx_strcmp(state, "42P05") == 0))
        {
            ngx_defarm_pg_set_prepared(pc, pc->preparing);
            PQclear(res);
            res = NULL;

            if (pc->query) {
                ngx_defarm_pg_send(pc);
                return;
            }
        }
    }

    if (pc->c->read->timer_set) {
        ngx_del_timer(pc->c->read);
    }

    q = pc->query;
    pc->query = NULL;

    if (q) {
        q->conn = NULL;
    }

    ngx_defarm_pg_release(pc);

    if (q) {
        ngx_defarm_pg_deliver(q, res);

    } else if (res) {
        PQclear(res);
    }

    ngx_defarm_pg_dispatch(pool);
}


static void
ngx_defarm_pg_lost(ngx_defarm_pg_conn_t *pc, const char *why)
{
    ngx_defarm_pg_pool_t   *pool = pc->pool;
    ngx_defarm_pg_query_t  *q;

    ngx_log_error(NGX_LOG_ERR, pool->log, 0,
                  "defarm: PostgreSQL connection lost: %s", why);

    if (pc->state == NGX_DEFARM_PG_BATCHING
        || pc->state == NGX_DEFARM_PG_BATCHED)
    {
        pool->stats->errors++;
        ngx_defarm_pg_batch_abort(pc, 0);
        return;
    }

    q = pc->query;
    ngx_defarm_pg_close(pc);
    pool->stats->errors++;

    if (q) {
        q->conn = NULL;
        ngx_defarm_pg_fail(q, NGX_HTTP_SERVICE_UNAVAILABLE,
                           NGX_DEFARM_ERR_DB_UNAVAILABLE,
                           "Database connection lost, please retry");
    }

    ngx_defarm_pg_dispatch(pool);
}


static void
ngx_defarm_pg_timed_out(ngx_defarm_pg_conn_t *pc)
{
    ngx_defarm_pg_pool_t   *pool = pc->pool;
    ngx_defarm_pg_query_t  *q;

    /*
     * PQcancel() would block (it opens a connection of its own), so the
     * connection is closed instead: the server ends the statement when it
     * notices, and nothing late can reach a later request.
     */

    ngx_log_error(NGX_LOG_WARN, pool->log, 0,
                  "defarm: PostgreSQL query timed out, closing its "
                  "connection");

    if (pc->state == NGX_DEFARM_PG_BATCHING
        || pc->state == NGX_DEFARM_PG_BATCHED)
    {
        pool->stats->timeouts++;
        ngx_defarm_pg_batch_abort(pc, 1);
        return;
    }

    q = pc->query;
    ngx_defarm_pg_close(pc);
    pool->stats->timeouts++;

    if (q) {
        q->conn = NULL;
        ngx_defarm_pg_fail(q, NGX_HTTP_GATEWAY_TIME_OUT,
                           NGX_DEFARM_ERR_DB_TIMEOUT,
                           "Database query timed out");
    }

    ngx_defarm_pg_dispatch(pool);
}


/* the queue of requests waiting for a connection */


/* q leaves the queue (its wait is over, one way or another) */

static void
ngx_defarm_pg_unqueue(ngx_defarm_pg_pool_t *pool, ngx_defarm_pg_query_t *q)
{
    if (q->wait.timer_set) {
        ngx_del_timer(&q->wait);
    }

    if (q->queued) {
        ngx_queue_remove(&q->queue);
        q->queued = 0;
        pool->nwaiting--;
    }
}


/* an idle connection taken for a statement or a batch */

static void
ngx_defarm_pg_take(ngx_defarm_pg_conn_t *pc)
{
    ngx_defarm_pg_pool_t  *pool = pc->pool;

    ngx_queue_remove(&pc->queue);
    pool->nidle--;
    pool->nbusy++;
    ngx_defarm_pg_gauges(pool);
}


/* an idle connection runs q alone */

static void
ngx_defarm_pg_start(ngx_defarm_pg_conn_t *pc, ngx_defarm_pg_query_t *q)
{
    ngx_defarm_pg_take(pc);

    pc->query = q;
    q->conn = pc;
    ngx_add_timer(pc->c->read, q->timeout);

    ngx_defarm_pg_send(pc);
}


static void
ngx_defarm_pg_dispatch(ngx_defarm_pg_pool_t *pool)
{
    ngx_defarm_pg_conn_t   *pc;
    ngx_defarm_pg_query_t  *q;

    while (!ngx_queue_empty(&pool->waiting) && !ngx_queue_empty(&pool->idle))
    {
        q = ngx_queue_data(ngx_queue_head(&pool->waiting),
                           ngx_defarm_pg_query_t, queue);
        ngx_defarm_pg_unqueue(pool, q);

        pc = ngx_queue_data(ngx_queue_head(&pool->idle),
                            ngx_defarm_pg_conn_t, queue);

        /* reads waiting in a row go together */

        if (pool->conf->batch > 1
            && ngx_defarm_pg_batch_open(pc, q) == NGX_OK)
        {
            ngx_defarm_pg_batch_add(pc, q);

            while (pc->state == NGX_DEFARM_PG_BATCHING
                   && pc->nslots < pool->conf->batch
                   && !ngx_queue_empty(&pool->waiting))
            {
                q = ngx_queue_data(ngx_queue_head(&pool->waiting),
                                   ngx_defarm_pg_query_t, queue);

                if (!ngx_defarm_pg_batchable(pc, q)) {
                    break;
                }

                ngx_defarm_pg_unqueue(pool, q);
                ngx_defarm_pg_batch_add(pc, q);
            }

            if (pc->state == NGX_DEFARM_PG_BATCHING) {
                ngx_defarm_pg_batch_send(pc);
            }

            continue;
        }

        ngx_defarm_pg_start(pc, q);
    }

    /* more waiting than connecting: open connections up to the size */

    while (!pool->down
           && pool->nwaiting > pool->nconnecting
           && !ngx_queue_empty(&pool->free))
    {
        if (ngx_defarm_pg_connect(pool) != NGX_OK) {
            break;
        }
    }

    ngx_defarm_pg_gauges(pool);
}


static void
ngx_defarm_pg_fail_waiting(ngx_defarm_pg_pool_t *pool)
{
    ngx_queue_t            *qq;
    ngx_defarm_pg_query_t  *q;

    while (!ngx_queue_empty(&pool->waiting)) {
        qq = ngx_queue_head(&pool->waiting);
        q = ngx_queue_data(qq, ngx_defarm_pg_query_t, queue);

        pool->stats->unavailable++;
        ngx_defarm_pg_fail(q, NGX_HTTP_SERVICE_UNAVAILABLE,
                           NGX_DEFARM_ERR_DB_UNAVAILABLE,
                           "Database is unavailable, please retry");
    }

    ngx_defarm_pg_gauges(pool);
}


static void
ngx_defarm_pg_wait_handler(ngx_event_t *ev)
{
    ngx_defarm_pg_query_t  *q = ev->data;

    ngx_defarm_pg_pool_t  *pool = ngx_defarm_pg_pool;

    /* with no connection alive, the wait was for a connect that hangs */

    if (pool->nidle + pool->nbusy == 0) {
        pool->stats->unavailable++;
        ngx_defarm_pg_fail(q, NGX_HTTP_SERVICE_UNAVAILABLE,
                           NGX_DEFARM_ERR_DB_UNAVAILABLE,
                           "Database is unavailable, please retry");
        return;
    }

    pool->stats->exhausted++;

    ngx_defarm_pg_fail(q, NGX_HTTP_SERVICE_UNAVAILABLE,
                       NGX_DEFARM_ERR_DB_POOL_EXHAUSTED,
                       "Database pool exhausted, please retry");
}


/* finishing a request */


static void
ngx_defarm_pg_timing(ngx_defarm_pg_query_t *q)
{
    ngx_defarm_ctx_t  *ctx;

    if (q->request == NULL) {
        return;
    }

    ctx = ngx_defarm_get_ctx(q->request);

    if (ctx) {
        ctx->db_us += ngx_defarm_now_us() - q->start_us;
        ctx->db_timed = 1;
    }
}


static void
ngx_defarm_pg_deliver(ngx_defarm_pg_query_t *q, PGresult *res)
{
    ngx_int_t            rc;
    ngx_uint_t           sync;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    if (res && (PQresultStatus(res) == PGRES_TUPLES_OK
                || PQresultStatus(res) == PGRES_COMMAND_OK))
    {
        ngx_defarm_pg_pool->stats->served++;

    } else {
        ngx_defarm_pg_pool->stats->errors++;
    }

    if (q->request == NULL) {
        if (res == NULL || (PQresultStatus(res) != PGRES_TUPLES_OK
                            && PQresultStatus(res) != PGRES_COMMAND_OK))
        {
            ngx_log_error(NGX_LOG_ERR, ngx_defarm_pg_pool->log, 0,
                          "defarm: background statement \"%s\" failed: %s",
                          q->stmt->name,
                          res ? ngx_defarm_pg_flatten(
                                    PQresultErrorMessage(res))
                              : "no result");
        }

        ngx_defarm_pg_finish(q, (res && (PQresultStatus(res)
                                          == PGRES_TUPLES_OK
                                          || PQresultStatus(res)
                                             == PGRES_COMMAND_OK))
                                ? NGX_OK : NGX_ERROR, res);

        if (res) {
            PQclear(res);
        }

        return;
    }

    r = q->request;
    c = r->connection;
    sync = q->sync;

    /* the request pool's cleanup frees the result */

    q->res = res;

    ngx_defarm_pg_timing(q);

    if (res == NULL) {
        rc = ngx_defarm_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                              NGX_DEFARM_ERR_DB_ERROR,
                              "Database returned no result");

    } else {
        rc = q->done(r, q->data, res);
    }

    ngx_http_finalize_request(r, rc);

    /* only from an event handler: never under the submitting handler */

    if (!sync) {
        ngx_http_run_posted_requests(c);
    }
}


static void
ngx_defarm_pg_fail(ngx_defarm_pg_query_t *q, ngx_uint_t status,
    ngx_defarm_err_e kind, const char *msg)
{
    ngx_int_t            rc;
    ngx_uint_t           sync;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    if (q->queued) {
        ngx_defarm_pg_unqueue(ngx_defarm_pg_pool, q);
        ngx_defarm_pg_gauges(ngx_defarm_pg_pool);

    } else if (q->wait.timer_set) {
        ngx_del_timer(&q->wait);
    }

    if (q->request == NULL) {
        ngx_log_error(NGX_LOG_WARN, ngx_defarm_pg_pool->log, 0,
                      "defarm: background statement \"%s\" dropped: %s",
                      q->stmt->name, msg);
        ngx_defarm_pg_finish(q, NGX_ERROR, NULL);
        return;
    }

    r = q->request;
    c = r->connection;
    sync = q->sync;

    ngx_defarm_pg_timing(q);

    rc = ngx_defarm_error(r, status, kind, "%s", msg);

    ngx_http_finalize_request(r, rc);

    if (!sync) {
        ngx_http_run_posted_requests(c);
    }
}


static void
ngx_defarm_pg_query_cleanup(void *data)
{
    ngx_defarm_pg_query_t  *q = data;

    ngx_defarm_pg_pool_t  *pool;

    pool = ngx_defarm_pg_pool;

    if (q->wait.timer_set) {
        ngx_del_timer(&q->wait);
    }

    if (q->wait.posted) {
        ngx_delete_posted_event(&q->wait);
    }

    if (q->queued && pool) {
        ngx_queue_remove(&q->queue);
        q->queued = 0;
        pool->nwaiting--;
        pool->stats->aborted++;
        ngx_defarm_pg_gauges(pool);
    }

    /*
     * The request went away while its statement runs: the connection
     * finishes it (or times out) and returns to the pool with nobody to
     * deliver to.
     */

    if (q->conn) {
        if (q->conn->state == NGX_DEFARM_PG_BATCHING
            || q->conn->state == NGX_DEFARM_PG_BATCHED)
        {
            q->conn->slots[q->slot] = NULL;

        } else {
            q->conn->query = NULL;
        }

        q->conn = NULL;

        if (pool) {
            pool->stats->aborted++;
        }
    }

    if (q->res) {
        PQclear(q->res);
        q->res = NULL;
    }
}


/* batches of reads */


static void
ngx_defarm_pg_batch_add(ngx_defarm_pg_conn_t *pc, ngx_defarm_pg_query_t *q)
{
    pc->slots[pc->nslots] = q;
    pc->results[pc->nslots] = NULL;
    q->slot = pc->nslots++;
    q->conn = pc;

    /* in pipeline mode libpq keeps it until the Sync (or 64 KB) */

    if (!PQsendQueryPrepared(pc->pg, q->stmt->name, q->stmt->nparams,
                             q->values, NULL, NULL, 0)
        || !PQsendFlushRequest(pc->pg))
    {
        ngx_defarm_pg_lost(pc, ngx_defarm_pg_message(pc->pg));
    }
}


/* an idle connection (the head of the idle list) takes a batch, for q */

static ngx_int_t
ngx_defarm_pg_batch_open(ngx_defarm_pg_conn_t *pc, ngx_defarm_pg_query_t *q)
{
    if (!ngx_defarm_pg_batchable(pc, q) || !PQenterPipelineMode(pc->pg)) {
        return NGX_DECLINED;
    }

    ngx_defarm_pg_take(pc);

    pc->state = NGX_DEFARM_PG_BATCHING;
    ngx_add_timer(pc->c->read, q->timeout);

    return NGX_OK;
}


/* the batch goes, with its Sync */

static void
ngx_defarm_pg_batch_send(ngx_defarm_pg_conn_t *pc)
{
    ngx_defarm_pg_pool_t  *pool = pc->pool;

    pc->state = NGX_DEFARM_PG_BATCHED;
    pool->stats->batches++;
    pool->stats->batched += pc->nslots;

    if (!PQpipelineSync(pc->pg)) {
        ngx_defarm_pg_lost(pc, ngx_defarm_pg_message(pc->pg));
        return;
    }

    (void) ngx_defarm_pg_flush(pc);
}


/* the turn's handlers have run: the batch they filled goes */

static void
ngx_defarm_pg_batch_sync(ngx_event_t *ev)
{
    ngx_defarm_pg_pool_t  *pool = ev->data;

    ngx_defarm_pg_conn_t  *pc;

    pc = pool->filling;
    pool->filling = NULL;

    if (pc && pc->state == NGX_DEFARM_PG_BATCHING) {
        ngx_defarm_pg_batch_send(pc);
    }
}


/*
 * A batch's results, in order: each query's result (the first kept), then
 * NULL; the Sync's PGRES_PIPELINE_SYNC ends the batch.  A query after an
 * error is answered PGRES_PIPELINE_ABORTED.  NGX_OK: read on;
 * NGX_AGAIN: nothing more until the Sync; NGX_DONE: the batch is over.
 */

static ngx_int_t
ngx_defarm_pg_batch_result(ngx_defarm_pg_conn_t *pc, PGresult *res)
{
    if (res == NULL) {

        /* a query's end; with all answered, the Sync is still to come */

        if (pc->next < pc->nslots) {
            pc->next++;
            return NGX_OK;
        }

        if (pc->state == NGX_DEFARM_PG_BATCHED) {

            /* libpq has nothing more to come, not even the Sync's answer */

            ngx_defarm_pg_lost(pc, "a batch ended without its Sync");
            return NGX_ERROR;
        }

        return NGX_AGAIN;
    }

    if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
        PQclear(res);
        ngx_defarm_pg_batch_done(pc);
        return NGX_DONE;
    }

    if (pc->next < pc->nslots && pc->results[pc->next] == NULL) {
        pc->results[pc->next] = res;

    } else {
        PQclear(res);
    }

    return NGX_OK;
}


/* a batch's queries and results, taken from its connection */

static ngx_uint_t
ngx_defarm_pg_batch_take(ngx_defarm_pg_conn_t *pc,
    ngx_defarm_pg_query_t **qs, PGresult **res)
{
    ngx_uint_t  i, n;

    n = pc->nslots;

    for (i = 0; i < n; i++) {
        qs[i] = pc->slots[i];
        res[i] = pc->results[i];
        pc->slots[i] = NULL;
        pc->results[i] = NULL;

        if (qs[i]) {
            qs[i]->conn = NULL;
        }
    }

    pc->nslots = 0;
    pc->next = 0;

    return n;
}


/*
 * A read that did not run, first in line again (running it is harmless),
 * unless it ran too often: then the 503 a lost connection gives.
 */

static void
ngx_defarm_pg_requeue(ngx_defarm_pg_pool_t *pool, ngx_defarm_pg_query_t *q)
{
    if (++q->reruns > NGX_DEFARM_PG_RERUNS) {
        ngx_defarm_pg_fail(q, NGX_HTTP_SERVICE_UNAVAILABLE,
                           NGX_DEFARM_ERR_DB_UNAVAILABLE,
                           "Database connection lost, please retry");
        return;
    }

    ngx_queue_insert_head(&pool->waiting, &q->queue);
    q->queued = 1;
    pool->nwaiting++;
    pool->stats->rerun++;
    ngx_add_timer(&q->wait, pool->conf->queue_timeout);
}


static void
ngx_defarm_pg_batch_done(ngx_defarm_pg_conn_t *pc)
{
    ngx_uint_t              i, n;
    PGresult               *res[NGX_DEFARM_PG_MAX_BATCH];
    ngx_defarm_pg_pool_t   *pool = pc->pool;
    ngx_defarm_pg_query_t  *qs[NGX_DEFARM_PG_MAX_BATCH];

    if (pc->c->read->timer_set) {
        ngx_del_timer(pc->c->read);
    }

    n = ngx_defarm_pg_batch_take(pc, qs, res);

    if (PQexitPipelineMode(pc->pg)) {
        ngx_defarm_pg_release(pc);

    } else {
        ngx_defarm_pg_close(pc);
    }

    /*
     * Not run (an error before it in the batch): again, first in line, in
     * their order.  Then the answers, in theirs.
     */

    for (i = n; i > 0; i--) {
        if (qs[i - 1]
            && (res[i - 1] == NULL
                || PQresultStatus(res[i - 1]) == PGRES_PIPELINE_ABORTED))
        {
            ngx_defarm_pg_requeue(pool, qs[i - 1]);
            qs[i - 1] = NULL;
        }
    }

    /* the waiting reads take the connection before a callback could */

    ngx_defarm_pg_dispatch(pool);

    for (i = 0; i < n; i++) {
        if (qs[i]) {
            ngx_defarm_pg_deliver(qs[i], res[i]);

        } else if (res[i]) {
            PQclear(res[i]);
        }
    }

    ngx_defarm_pg_dispatch(pool);
}


/*
 * A batch's connection is lost or its time is up (the connection is
 * closed either way).  The reads answered keep their answers; the first
 * read without one was running and gets the 504 (or the 503); those
 * behind it did not run, and go back to the head of the queue.
 */

static void
ngx_defarm_pg_batch_abort(ngx_defarm_pg_conn_t *pc, ngx_uint_t timed_out)
{
    ngx_uint_t              i, n, running;
    PGresult               *res[NGX_DEFARM_PG_MAX_BATCH];
    ngx_defarm_pg_pool_t   *pool = pc->pool;
    ngx_defarm_pg_query_t  *qs[NGX_DEFARM_PG_MAX_BATCH];

    n = ngx_defarm_pg_batch_take(pc, qs, res);
    ngx_defarm_pg_close(pc);

    /* the first read without an answer of any kind was running */

    running = n;

    for (i = 0; i < n && running == n; i++) {
        if (res[i] == NULL) {
            running = i;
        }
    }

    /* those aborted by an error, or behind the running one, did not run */

    for (i = n; i > 0; i--) {
        if (res[i - 1] == NULL ? i - 1 > running
                               : PQresultStatus(res[i - 1])
                                 == PGRES_PIPELINE_ABORTED)
        {
            if (res[i - 1]) {
                PQclear(res[i - 1]);
                res[i - 1] = NULL;
            }

            if (qs[i - 1]) {
                ngx_defarm_pg_requeue(pool, qs[i - 1]);
                qs[i - 1] = NULL;
            }
        }
    }

    for (i = 0; i < n; i++) {

        if (qs[i] == NULL) {
            if (res[i]) {
                PQclear(res[i]);
            }

        } else if (res[i]) {
            ngx_defarm_pg_deliver(qs[i], res[i]);

        } else if (timed_out) {
            ngx_defarm_pg_fail(qs[i], NGX_HTTP_GATEWAY_TIME_OUT,
                               NGX_DEFARM_ERR_DB_TIMEOUT,
                               "Database query timed out");

        } else {
            ngx_defarm_pg_fail(qs[i], NGX_HTTP_SERVICE_UNAVAILABLE,
                               NGX_DEFARM_ERR_DB_UNAVAILABLE,
                               "Database connection lost, please retry");
        }
    }

    ngx_defarm_pg_dispatch(pool);
}


/* the API for handlers */


ngx_int_t
ngx_defarm_pg_query(ngx_http_request_t *r, ngx_defarm_pg_stmt_t *stmt,
    ngx_str_t *params, ngx_defarm_pg_done_pt done, void *data)
{
    return ngx_defarm_pg_submit(r, stmt, params, done, data, 0);
}


/* a statement that changes nothing: it may share a batch */

ngx_int_t
ngx_defarm_pg_query_read(ngx_http_request_t *r, ngx_defarm_pg_stmt_t *stmt,
    ngx_str_t *params, ngx_defarm_pg_done_pt done, void *data)
{
    return ngx_defarm_pg_submit(r, stmt, params, done, data, 1);
}


static ngx_int_t
ngx_defarm_pg_submit(ngx_http_request_t *r, ngx_defarm_pg_stmt_t *stmt,
    ngx_str_t *params, ngx_defarm_pg_done_pt done, void *data,
    ngx_uint_t read)
{
    u_char                 *p;
    ngx_int_t               i;
    ngx_pool_cleanup_t     *cln;
    ngx_defarm_pg_conn_t   *pc;
    ngx_defarm_pg_pool_t   *pool;
    ngx_defarm_pg_query_t  *q;
    ngx_defarm_loc_conf_t  *lcf;

    pool = ngx_defarm_pg_pool;

    if (pool == NULL) {
        return ngx_defarm_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                NGX_DEFARM_ERR_DB_UNAVAILABLE,
                                "No database is configured (defarm_db)");
    }

    if (stmt->nparams > NGX_DEFARM_PG_MAX_PARAMS) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (stmt->index == 0) {
        stmt->index = ++ngx_defarm_pg_nstmts;
    }

    q = ngx_pcalloc(r->pool, sizeof(ngx_defarm_pg_query_t));
    if (q == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < stmt->nparams; i++) {

        if (params[i].data == NULL) {
            q->values[i] = NULL;                     /* SQL NULL */
            continue;
        }

        if (ngx_strlchr(params[i].data, params[i].data + params[i].len, '\0'))
        {
            return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                    NGX_DEFARM_ERR_VALIDATION,
                                    "Values must not contain NUL bytes");
        }

        p = ngx_pnalloc(r->pool, params[i].len + 1);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_memcpy(p, params[i].data, params[i].len);
        p[params[i].len] = '\0';
        q->values[i] = (const char *) p;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_defarm_pg_query_cleanup;
    cln->data = q;

    lcf = ngx_http_get_module_loc_conf(r, ngx_defarm_module);

    q->request = r;
    q->stmt = stmt;
    q->done = done;
    q->data = data;
    q->timeout = lcf->db_query_timeout;
    q->start_us = ngx_defarm_now_us();
    q->wait.handler = ngx_defarm_pg_wait_handler;
    q->wait.data = q;
    q->wait.log = r->connection->log;
    q->read = read;

    if (pool->down) {
        pool->stats->unavailable++;
        return ngx_defarm_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                NGX_DEFARM_ERR_DB_UNAVAILABLE,
                                "Database is unavailable, please retry");
    }

    if (ngx_queue_empty(&pool->idle) && pool->nwaiting >= pool->conf->queue)
    {
        /* refused, but the pool still grows (queue=0 must not wedge it) */

        if (pool->nconnecting == 0) {
            (void) ngx_defarm_pg_connect(pool);
        }

        pool->stats->exhausted++;
        return ngx_defarm_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                NGX_DEFARM_ERR_DB_POOL_EXHAUSTED,
                                "Database pool exhausted, please retry");
    }

    /* suspended from here until the pool answers */

    ngx_defarm_request_wait(r);

    /*
     * Until this function returns, a failure finalizes the request under
     * its own handler: q->sync keeps fail() from running posted requests
     * (which could free the request before the handler returns NGX_DONE).
     */

    q->sync = 1;

    /* a read joins the batch of this turn of the event loop, or starts it */

    if (read && pool->conf->batch > 1) {
        pc = pool->filling;

        if (pc == NULL && !ngx_queue_empty(&pool->idle)) {
            pc = ngx_queue_data(ngx_queue_head(&pool->idle),
                                ngx_defarm_pg_conn_t, queue);

            if (ngx_defarm_pg_batch_open(pc, q) == NGX_OK) {
                pool->filling = pc;
                ngx_post_event(&pool->sync, &ngx_posted_events);

            } else {
                pc = NULL;
            }
        }

        if (pc && pc->nslots < pool->conf->batch
            && ngx_defarm_pg_batchable(pc, q))
        {
            ngx_defarm_pg_batch_add(pc, q);
            q->sync = 0;
            return NGX_DONE;
        }
    }

    if (!ngx_queue_empty(&pool->idle)) {
        ngx_defarm_pg_start(ngx_queue_data(ngx_queue_head(&pool->idle),
                                           ngx_defarm_pg_conn_t, queue), q);

    } else {
        ngx_queue_insert_tail(&pool->waiting, &q->queue);
        q->queued = 1;
        pool->nwaiting++;
        ngx_add_timer(&q->wait, pool->conf->queue_timeout);

        ngx_defarm_pg_dispatch(pool);
    }

    /* q may be gone (answered and freed) only once the handler returns */

    q->sync = 0;

    return NGX_DONE;
}


/*
 * A statement nobody waits for (last_login, usage counters): it takes the
 * same queue and connections, in a pool of its own that goes when the
 * statement is done; failures are logged.  It never delays a response.
 */

ngx_int_t
ngx_defarm_pg_background(ngx_defarm_pg_stmt_t *stmt, ngx_str_t *params,
    ngx_defarm_pg_finished_pt finished, void *data)
{
    u_char                 *p;
    ngx_int_t               i;
    ngx_pool_t             *mp;
    ngx_defarm_pg_pool_t   *pool;
    ngx_defarm_pg_query_t  *q;

    pool = ngx_defarm_pg_pool;

    if (pool == NULL || pool->down || stmt->nparams > NGX_DEFARM_PG_MAX_PARAMS
        || (ngx_queue_empty(&pool->idle)
            && pool->nwaiting >= pool->conf->queue))
    {
        if (pool) {
            ngx_log_error(NGX_LOG_WARN, pool->log, 0,
                          "defarm: background statement \"%s\" dropped: "
                          "the database is busy or unavailable", stmt->name);
        }

        return NGX_DECLINED;
    }

    mp = ngx_create_pool(1024, pool->log);
    if (mp == NULL) {
        return NGX_ERROR;
    }

    q = ngx_pcalloc(mp, sizeof(ngx_defarm_pg_query_t));
    if (q == NULL) {
        ngx_destroy_pool(mp);
        return NGX_ERROR;
    }

    for (i = 0; i < stmt->nparams; i++) {
        if (params[i].data == NULL) {
            continue;
        }

        p = ngx_pnalloc(mp, params[i].len + 1);
        if (p == NULL) {
            ngx_destroy_pool(mp);
            return NGX_ERROR;
        }

        ngx_memcpy(p, params[i].data, params[i].len);
        p[params[i].len] = '\0';
        q->values[i] = (const char *) p;
    }

    if (stmt->index == 0) {
        stmt->index = ++ngx_defarm_pg_nstmts;
    }

    q->pool = mp;
    q->finished = finished;
    q->data = data;
    q->stmt = stmt;
    q->timeout = 5000;
    q->wait.handler = ngx_defarm_pg_wait_handler;
    q->wait.data = q;
    q->wait.log = pool->log;

    ngx_queue_insert_tail(&pool->waiting, &q->queue);
    q->queued = 1;
    pool->nwaiting++;
    ngx_add_timer(&q->wait, pool->conf->queue_timeout);

    ngx_defarm_pg_dispatch(pool);

    return NGX_OK;
}


/*
 * A column's text, in place: a result lives as long as its request (the
 * request pool frees it), and libpq ends every value with a NUL.  NULL is
 * NGX_DECLINED, with out->data NULL.
 */

ngx_int_t
ngx_defarm_pg_text(PGresult *res, int row, int col, ngx_str_t *out)
{
    if (PQgetisnull(res, row, col)) {
        ngx_str_null(out);
        return NGX_DECLINED;
    }

    out->data = (u_char *) PQgetvalue(res, row, col);
    out->len = PQgetlength(res, row, col);

    return NGX_OK;
}


ngx_int_t
ngx_defarm_pg_sql_error(ngx_http_request_t *r, PGresult *res)
{
    char  *state, *msg;

    state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    msg = PQresultErrorMessage(res);

    /* the details are for the log; the client gets the trace id */

    /*
     * Class 22, data exception: a value the checks let through that
     * PostgreSQL cannot take (a date out of range, a number too large,
     * bytes that are not UTF-8).  The request is wrong: a 400.
     */

    /* DF4xx, DF503: a refusal the SQL raised itself (sql/028, sql/034) */

    if (state && state[0] == 'D' && state[1] == 'F'
        && (state[2] == '4' || ngx_strcmp(state + 2, "503") == 0))
    {
        return ngx_defarm_pg_raised(r, res);
    }

    if (state && state[0] == '2' && state[1] == '2') {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "defarm: PostgreSQL refused a value %s: %s", state,
                      ngx_defarm_pg_flatten(msg));

        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "A value is out of range or malformed");
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "defarm: PostgreSQL error %s: %s",
                  state ? state : "-", ngx_defarm_pg_flatten(msg));

    return ngx_defarm_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                            NGX_DEFARM_ERR_DB_ERROR, "Database error");
}


static void
ngx_defarm_pg_report_handler(ngx_event_t *ev)
{
    ngx_defarm_pg_pool_t   *pool = ev->data;
    ngx_defarm_pg_stats_t  *st;

    st = pool->stats;

    ngx_log_error(NGX_LOG_INFO, pool->log, 0,
                  "database_pool_metrics connections=%ui idle=%ui busy=%ui "
                  "waiting=%ui size=%ui served=%uA errors=%uA timeouts=%uA "
                  "exhausted=%uA unavailable=%uA connect_failures=%uA",
                  pool->nidle + pool->nbusy, pool->nidle, pool->nbusy,
                  pool->nwaiting, pool->conf->size, st->served, st->errors,
                  st->timeouts, st->exhausted, st->unavailable,
                  st->connect_failures);

    if (!ngx_exiting) {
        ngx_add_timer(ev, pool->conf->metrics_interval);
    }
}
