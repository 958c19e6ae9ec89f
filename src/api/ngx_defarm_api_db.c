
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "api/ngx_defarm_api.h"
#include "pg/ngx_defarm_pg.h"


/*
 * Database routes that belong to no API area: the readiness check of the
 * database, and the diagnostic echo that sends a value through a pooled
 * connection and back (enabled with defarm_echo), which proves that
 * parameters travel as data and never as SQL; with "read": true it goes
 * as a read that may share a batch (ngx_defarm_pg_query_read), and
 * "fail": true makes that statement fail (a division by zero), so the
 * tests can prove what a batch does around a failure.
 */


static ngx_int_t ngx_defarm_db_health(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_db_health_done(ngx_http_request_t *r,
    void *data, PGresult *res);
static ngx_int_t ngx_defarm_db_echo_post(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_db_echo_get(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_db_echo_done(ngx_http_request_t *r,
    void *data, PGresult *res);


ngx_defarm_route_t  ngx_defarm_db_routes[] = {

    { NGX_HTTP_GET, ngx_string("/health/db"),
      ngx_defarm_db_health, NGX_DEFARM_ROUTE_HEALTH },

    { NGX_HTTP_POST, ngx_string("/api/echo/db"),
      ngx_defarm_db_echo_post,
      NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_ECHO },

    { NGX_HTTP_GET, ngx_string("/api/echo/db/:value"),
      ngx_defarm_db_echo_get, NGX_DEFARM_ROUTE_ECHO },

    ngx_defarm_route_null
};


/* this worker's pool figures, in /health/db's "pool" */

typedef struct {
    const char                *name;
    size_t                     offset;        /* in ngx_defarm_pg_stats_t */
} ngx_defarm_db_field_t;


static ngx_defarm_db_field_t  ngx_defarm_db_pool_fields[] = {
    { "connections", offsetof(ngx_defarm_pg_stats_t, connections) },
    { "idle", offsetof(ngx_defarm_pg_stats_t, idle) },
    { "busy", offsetof(ngx_defarm_pg_stats_t, busy) },
    { "waiting", offsetof(ngx_defarm_pg_stats_t, waiting) },
    { "served", offsetof(ngx_defarm_pg_stats_t, served) },
    { "errors", offsetof(ngx_defarm_pg_stats_t, errors) },
    { "timeouts", offsetof(ngx_defarm_pg_stats_t, timeouts) },
    { "exhausted", offsetof(ngx_defarm_pg_stats_t, exhausted) },
    { "unavailable", offsetof(ngx_defarm_pg_stats_t, unavailable) },
    { NULL, 0 }
};


static ngx_defarm_pg_stmt_t  ngx_defarm_db_ping = {
    "defarm_ping", "SELECT 1", 0, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_db_echo = {
    "defarm_echo",
    "SELECT v, octet_length(v) "
    "FROM (SELECT $1::text AS v, pg_sleep($2::float8 / 1000)) AS s",
    2, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_db_echo_read = {
    "defarm_echo_read",
    "SELECT v, octet_length(v) "
    "FROM (SELECT $1::text AS v, pg_sleep($2::float8 / 1000)) AS s "
    "WHERE 1 / (1 - $3::int) = 1",
    3, 0
};

/* the same without the sleep: a single-row select, nothing else */

static ngx_defarm_pg_stmt_t  ngx_defarm_db_echo_fast = {
    "defarm_echo_fast", "SELECT $1::text, octet_length($1::text)", 1, 0
};


static ngx_int_t
ngx_defarm_db_health(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    return ngx_defarm_pg_query(r, &ngx_defarm_db_ping, NULL,
                               ngx_defarm_db_health_done, ctx);
}


static ngx_int_t
ngx_defarm_db_health_done(ngx_http_request_t *r, void *data, PGresult *res)
{
    ngx_defarm_ctx_t  *ctx = data;

    ngx_defarm_db_field_t     *f;
    ngx_defarm_pg_stats_t     *st;
    ngx_defarm_json_writer_t  *w;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        return ngx_defarm_pg_sql_error(r, res);
    }

    st = ngx_defarm_pg_stats();

    w = ngx_defarm_json_writer(r);
    if (w == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_defarm_jw_map_open(w);
    ngx_defarm_jw_key(w, "status");
    ngx_defarm_jw_cstr(w, "healthy");
    ngx_defarm_jw_key(w, "latency_ms");
    ngx_defarm_jw_ms(w, ctx->db_us);

    /* the original API's shape, for its clients */
    ngx_defarm_jw_key(w, "database");
    ngx_defarm_jw_map_open(w);
    ngx_defarm_jw_key(w, "status");
    ngx_defarm_jw_cstr(w, "connected");
    ngx_defarm_jw_key(w, "message");
    ngx_defarm_jw_cstr(w, "PostgreSQL operational");
    ngx_defarm_jw_key(w, "timestamp");
    ngx_defarm_jw_time(w, ngx_time());
    ngx_defarm_jw_map_close(w);

    /* this worker's pool */
    ngx_defarm_jw_key(w, "pool");
    ngx_defarm_jw_map_open(w);
    ngx_defarm_jw_key(w, "worker_pid");
    ngx_defarm_jw_int(w, ngx_pid);
    ngx_defarm_jw_key(w, "size");
    ngx_defarm_jw_int(w, ngx_defarm_pg_pool_size());

    for (f = ngx_defarm_db_pool_fields; f->name; f++) {
        ngx_defarm_jw_key(w, f->name);
        ngx_defarm_jw_int(w, *(ngx_atomic_uint_t *) ((u_char *) st
                                                    + f->offset));
    }

    ngx_defarm_jw_map_close(w);

    ngx_defarm_jw_map_close(w);

    return ngx_defarm_send(r, NGX_HTTP_OK, w);
}


static ngx_int_t
ngx_defarm_db_echo_post(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    int64_t             ms;
    ngx_str_t          *params;
    ngx_defarm_json_t  *value, *sleep, *read, *fail;

    if (ctx->body->type != NGX_DEFARM_JSON_OBJECT) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "Body must be a JSON object");
    }

    value = ngx_defarm_json_get(ctx->body, "value");

    if (value == NULL
        || (value->type != NGX_DEFARM_JSON_STRING
            && value->type != NGX_DEFARM_JSON_NULL))
    {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "\"value\" must be a string or null, "
                                "not %s", ngx_defarm_json_type_name(value));
    }

    ms = 0;
    sleep = ngx_defarm_json_get(ctx->body, "sleep_ms");

    if (sleep
        && (ngx_defarm_json_int(sleep, &ms) != NGX_OK
            || ms < 0 || ms > 60000))
    {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "\"sleep_ms\" must be an integer from 0 "
                                "to 60000");
    }

    read = ngx_defarm_json_get(ctx->body, "read");
    fail = ngx_defarm_json_get(ctx->body, "fail");

    if ((read && read->type != NGX_DEFARM_JSON_BOOL)
        || (fail && fail->type != NGX_DEFARM_JSON_BOOL))
    {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "\"read\" and \"fail\" must be booleans");
    }

    params = ngx_pcalloc(r->pool, 3 * sizeof(ngx_str_t));
    if (params == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (value->type == NGX_DEFARM_JSON_STRING) {
        params[0] = value->str;
    }

    params[1].data = ngx_pnalloc(r->pool, NGX_INT64_LEN);
    if (params[1].data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    params[1].len = ngx_sprintf(params[1].data, "%L", ms) - params[1].data;

    if (read && read->boolean) {
        ngx_str_set(&params[2], "0");

        if (fail && fail->boolean) {
            ngx_str_set(&params[2], "1");
        }

        return ngx_defarm_pg_query_read(r, &ngx_defarm_db_echo_read, params,
                                        ngx_defarm_db_echo_done, NULL);
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_db_echo, params,
                               ngx_defarm_db_echo_done, NULL);
}


/* a read, as an item's: it may share a batch */

static ngx_int_t
ngx_defarm_db_echo_get(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    return ngx_defarm_pg_query_read(r, &ngx_defarm_db_echo_fast,
                                    ngx_defarm_param(ctx, "value"),
                                    ngx_defarm_db_echo_done, NULL);
}


static ngx_int_t
ngx_defarm_db_echo_done(ngx_http_request_t *r, void *data, PGresult *res)
{
    ngx_str_t                  s;
    ngx_defarm_json_writer_t  *w;

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        return ngx_defarm_pg_sql_error(r, res);
    }

    w = ngx_defarm_json_writer(r);
    if (w == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_defarm_jw_map_open(w);
    ngx_defarm_jw_key(w, "value");

    if (ngx_defarm_pg_text(res, 0, 0, &s) == NGX_OK) {
        ngx_defarm_jw_str(w, &s);
        ngx_defarm_jw_key(w, "length");
        (void) ngx_defarm_pg_text(res, 0, 1, &s);
        ngx_defarm_jw_int(w, ngx_atoi(s.data, s.len));

    } else {
        ngx_defarm_jw_null(w);
        ngx_defarm_jw_key(w, "length");
        ngx_defarm_jw_null(w);
    }

    ngx_defarm_jw_map_close(w);

    return ngx_defarm_send(r, NGX_HTTP_OK, w);
}
