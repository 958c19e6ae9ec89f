
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "api/ngx_defarm_api_fn.h"


/*
 * /api/user-activity: a user's action log (sql/038).  Route functions;
 * route i runs statement i.  Recording one also gives the function the
 * client's address and User-Agent, which the server fills in itself.
 */


#define NGX_DEFARM_ACTIVITY_UA_MAX  512


static ngx_int_t ngx_defarm_activity_run(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_activity_record(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static void ngx_defarm_activity_utf8(ngx_str_t *s, size_t max);


ngx_defarm_route_t  ngx_defarm_activity_routes[] = {

    { NGX_HTTP_GET, ngx_string("/api/user-activity"),
      ngx_defarm_activity_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/user-activity/stats"),
      ngx_defarm_activity_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_DELETE, ngx_string("/api/user-activity/cleanup"),
      ngx_defarm_activity_run,
      NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/user-activity/:id"),
      ngx_defarm_activity_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/user-activity"),
      ngx_defarm_activity_record,
      NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    ngx_defarm_route_null
};


static ngx_defarm_pg_stmt_t  ngx_defarm_activity_list =
    ngx_defarm_fn_stmt("defarm_user_activity_list");
static ngx_defarm_pg_stmt_t  ngx_defarm_activity_stats =
    ngx_defarm_fn_stmt("defarm_user_activity_stats");
static ngx_defarm_pg_stmt_t  ngx_defarm_activity_cleanup =
    ngx_defarm_fn_stmt("defarm_user_activity_cleanup");
static ngx_defarm_pg_stmt_t  ngx_defarm_activity_get =
    ngx_defarm_fn_stmt("defarm_user_activity_get");

static ngx_defarm_pg_stmt_t  *ngx_defarm_activity_stmts[] = {
    &ngx_defarm_activity_list,
    &ngx_defarm_activity_stats,
    &ngx_defarm_activity_cleanup,
    &ngx_defarm_activity_get
};

/* the route function's four parameters, then the address and User-Agent */

static ngx_defarm_pg_stmt_t  ngx_defarm_activity_record_stmt = {
    "defarm_user_activity_record",
    "SELECT status, body FROM defarm_user_activity_record($1, $2, "
    "$3::jsonb, $4, $5, $6)",
    6, 0
};


static ngx_int_t
ngx_defarm_activity_run(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    return ngx_defarm_fn_run(r, ctx, ngx_defarm_activity_routes,
                             ngx_defarm_activity_stmts,
                             sizeof(ngx_defarm_activity_stmts)
                             / sizeof(ngx_defarm_pg_stmt_t *));
}


/*
 * The address is the connection's (the realip module's when nginx sits
 * behind a proxy that sets it).  The User-Agent is the client's own
 * header, so it is cut to a bound and to its valid UTF-8: a header of
 * other bytes must not make PostgreSQL refuse the whole record.
 */

static ngx_int_t
ngx_defarm_activity_record(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_str_t            *params;
    ngx_defarm_fn_req_t  *fr;

    fr = ngx_defarm_fn_req(r, ctx);
    if (fr == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    params = ngx_pcalloc(r->pool, 6 * sizeof(ngx_str_t));
    if (params == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(params, fr->params, 4 * sizeof(ngx_str_t));

    if (r->connection->addr_text.len) {
        params[4] = r->connection->addr_text;
    }

    if (r->headers_in.user_agent && r->headers_in.user_agent->value.len) {
        params[5] = r->headers_in.user_agent->value;
        ngx_defarm_activity_utf8(&params[5], NGX_DEFARM_ACTIVITY_UA_MAX);

        if (params[5].len == 0) {
            params[5].data = NULL;                    /* SQL NULL */
        }
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_activity_record_stmt, params,
                               ngx_defarm_fn_done, fr);
}


/* s cut to at most max bytes of whole, valid UTF-8 characters, no NUL */

static void
ngx_defarm_activity_utf8(ngx_str_t *s, size_t max)
{
    u_char    *p, *q, *last;
    uint32_t   c;

    p = s->data;
    last = s->data + ngx_min(s->len, max);

    while (p < last) {

        if (*p == '\0') {
            break;
        }

        if (*p < 0x80) {
            p++;
            continue;
        }

        q = p;

        c = ngx_utf8_decode(&q, last - p);

        /* not a character PostgreSQL takes: a surrogate, or no character */

        if (c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) {
            break;
        }

        p = q;
    }

    s->len = p - s->data;
}
