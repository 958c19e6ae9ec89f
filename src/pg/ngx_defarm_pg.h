
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#ifndef _NGX_DEFARM_PG_H_INCLUDED_
#define _NGX_DEFARM_PG_H_INCLUDED_


#include "ngx_defarm_module.h"

#include <libpq-fe.h>


#define NGX_DEFARM_PG_MAX_STMTS   256
#define NGX_DEFARM_PG_MAX_PARAMS  32
#define NGX_DEFARM_PG_MAX_BATCH   64


/*
 * A statement a handler runs: prepared once per pooled connection under
 * its name, then executed with text parameters.  Declare them static in
 * the API file that uses them.
 */

typedef struct {
    const char                *name;
    const char                *sql;
    int                        nparams;
    ngx_uint_t                 index;         /* set on first use */
} ngx_defarm_pg_stmt_t;


typedef struct ngx_defarm_pg_query_s  ngx_defarm_pg_query_t;

/*
 * Called with the statement's result once PostgreSQL answered (also with
 * a PGRES_FATAL_ERROR result: the handler decides what an SQL error means,
 * or passes it to ngx_defarm_pg_sql_error()).  Failures of the pool itself
 * (timeouts, exhaustion, database down) are answered by the pool and never
 * reach the handler.  The result is freed with the request.  The return
 * value finalizes the request.
 */

typedef ngx_int_t (*ngx_defarm_pg_done_pt)(ngx_http_request_t *r,
    void *data, PGresult *res);


/*
 * Called when a background statement is over: NGX_OK when it ran,
 * NGX_ERROR when it failed or was dropped, NGX_ABORT when the worker exits
 * with it unfinished.
 */

/* a background statement's end: its result (NULL when aborted), for now */
typedef void (*ngx_defarm_pg_finished_pt)(void *data, ngx_int_t rc,
    PGresult *res);


/*
 * What a LISTEN connection heard (ngx_defarm_pg_listen.c): a notification,
 * freed after the call, or NULL once it listens (again), when what was
 * committed while nobody listened may have been missed.
 */
typedef void (*ngx_defarm_pg_heard_pt)(void *data, PGnotify *n);

typedef struct ngx_defarm_pg_listen_s  ngx_defarm_pg_listen_t;


/* "defarm_db" configuration, in the main configuration */

struct ngx_defarm_pg_conf_s {
    const char               **keywords;
    const char               **values;
    ngx_str_t                  conninfo;      /* as configured, for logs */
    ngx_uint_t                 size;          /* connections per worker */
    ngx_uint_t                 queue;         /* waiting requests */
    ngx_uint_t                 batch;         /* reads sent together */
    ngx_msec_t                 queue_timeout;
    ngx_msec_t                 connect_timeout;
    ngx_msec_t                 retry_max;     /* reconnect backoff cap */
    ngx_msec_t                 metrics_interval;
};


/* per-worker figures, kept in the stats zone (ngx_defarm_metrics.c) */

typedef struct {
    ngx_atomic_uint_t          connections;   /* gauges */
    ngx_atomic_uint_t          idle;
    ngx_atomic_uint_t          busy;
    ngx_atomic_uint_t          waiting;
    ngx_atomic_uint_t          served;        /* counters */
    ngx_atomic_uint_t          errors;
    ngx_atomic_uint_t          timeouts;
    ngx_atomic_uint_t          exhausted;
    ngx_atomic_uint_t          unavailable;
    ngx_atomic_uint_t          connects;
    ngx_atomic_uint_t          connect_failures;
    ngx_atomic_uint_t          aborted;
    ngx_atomic_uint_t          batches;
    ngx_atomic_uint_t          batched;       /* reads sent in a batch */
    ngx_atomic_uint_t          rerun;         /* reads a batch ran again */
} ngx_defarm_pg_stats_t;


char *ngx_defarm_pg_set_db(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
ngx_int_t ngx_defarm_pg_conf_settings(ngx_conf_t *cf,
    ngx_defarm_pg_conf_t *pcf, const char **settings);
ngx_int_t ngx_defarm_pg_init_process(ngx_cycle_t *cycle,
    ngx_defarm_pg_conf_t *pcf);
void ngx_defarm_pg_exit_process(ngx_cycle_t *cycle);

ngx_int_t ngx_defarm_pg_query(ngx_http_request_t *r,
    ngx_defarm_pg_stmt_t *stmt, ngx_str_t *params,
    ngx_defarm_pg_done_pt done, void *data);
ngx_int_t ngx_defarm_pg_query_read(ngx_http_request_t *r,
    ngx_defarm_pg_stmt_t *stmt, ngx_str_t *params,
    ngx_defarm_pg_done_pt done, void *data);
ngx_int_t ngx_defarm_pg_background(ngx_defarm_pg_stmt_t *stmt,
    ngx_str_t *params, ngx_defarm_pg_finished_pt finished, void *data);
ngx_int_t ngx_defarm_pg_text(PGresult *res, int row, int col,
    ngx_str_t *out);
ngx_int_t ngx_defarm_pg_sql_error(ngx_http_request_t *r, PGresult *res);
ngx_int_t ngx_defarm_pg_raised(ngx_http_request_t *r, PGresult *res);
ngx_int_t ngx_defarm_pg_text_array(ngx_pool_t *pool, ngx_defarm_json_t *array,
    ngx_str_t *out);
ngx_defarm_pg_stats_t *ngx_defarm_pg_stats(void);

ngx_defarm_pg_listen_t *ngx_defarm_pg_listen_start(ngx_cycle_t *cycle,
    ngx_defarm_pg_conf_t *pcf, const char *listen, const char *what,
    ngx_defarm_pg_heard_pt heard, void *data);
void ngx_defarm_pg_listen_stop(ngx_defarm_pg_listen_t *ln);
ngx_uint_t ngx_defarm_pg_listening(ngx_defarm_pg_listen_t *ln);
ngx_uint_t ngx_defarm_pg_pool_size(void);


#endif /* _NGX_DEFARM_PG_H_INCLUDED_ */
