
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "api/ngx_defarm_api_fn.h"
#include "ngx_defarm_response.h"


/*
 * Routes served by one PL/pgSQL function each: the function takes the
 * caller, the ":id" of the path, the body (or, without one, the query
 * arguments) as jsonb, and the path's other argument; it checks what the
 * caller may do and does it in one transaction, and answers a status with
 * the response's JSON, or an error status with its message (a 422's
 * message is followed by a newline and its details object).  An area's
 * file is then a table: route i runs statement i (ngx_defarm_fn_run).
 */


static ngx_int_t ngx_defarm_fn_args(ngx_http_request_t *r, ngx_str_t *json);
static void ngx_defarm_fn_details(ngx_http_request_t *r,
    ngx_defarm_json_writer_t *w, void *data);


ngx_int_t
ngx_defarm_fn_run(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx,
    ngx_defarm_route_t *routes, ngx_defarm_pg_stmt_t **stmts,
    ngx_uint_t nstmts)
{
    ngx_uint_t           i;
    ngx_defarm_fn_req_t  *fr;

    i = ctx->route - routes;

    if (i >= nstmts) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    fr = ngx_defarm_fn_req(r, ctx);
    if (fr == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_defarm_pg_query(r, stmts[i], fr->params, ngx_defarm_fn_done,
                               fr);
}


/* a NULL parameter is a string with no data */

ngx_defarm_fn_req_t *
ngx_defarm_fn_req(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_str_t            *v;
    ngx_uint_t            i;
    ngx_defarm_fn_req_t  *fr;

    fr = ngx_pcalloc(r->pool, sizeof(ngx_defarm_fn_req_t));
    if (fr == NULL) {
        return NULL;
    }

    fr->params[0] = ctx->user_id;

    v = ngx_defarm_param(ctx, "id");
    if (v) {
        fr->params[1] = *v;
    }

    if (ctx->body) {
        if (ngx_defarm_json_render(r, ctx->body, &fr->params[2]) != NGX_OK) {
            return NULL;
        }

    } else if (ngx_defarm_fn_args(r, &fr->params[2]) != NGX_OK) {
        return NULL;
    }

    /* the path's other argument, whatever the route names it */

    for (i = 0; i < ctx->nparams; i++) {
        if (ctx->params[i].name.len != 2
            || ngx_strncmp(ctx->params[i].name.data, "id", 2) != 0)
        {
            fr->params[3] = ctx->params[i].value;
            break;
        }
    }

    return fr;
}


/*
 * The query string, decoded as the routes will decode it ("+" a space),
 * is strict UTF-8 without NUL: what PostgreSQL takes as text.  Checked
 * once for every route, so that a bad argument is a 400, not a statement
 * PostgreSQL refuses.
 */

ngx_int_t
ngx_defarm_args_valid(ngx_http_request_t *r)
{
    u_char  *buf, *dst, *src, *p;
    size_t   n;

    /* names are taken as they came, values decoded: both must be text */

    if (ngx_strlchr(r->args.data, r->args.data + r->args.len, '\0')
        || ngx_defarm_utf8_valid(r->args.data, r->args.len) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    buf = ngx_pnalloc(r->pool, r->args.len);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    src = r->args.data;
    dst = buf;
    ngx_unescape_uri(&dst, &src, r->args.len, 0);
    n = dst - buf;

    for (p = buf; p < buf + n; p++) {
        if (*p == '\0') {
            return NGX_DECLINED;
        }
    }

    return ngx_defarm_utf8_valid(buf, n) == NGX_OK ? NGX_OK : NGX_DECLINED;
}


/*
 * The query arguments as a JSON object of strings, decoded ("%2B" and
 * "+" as the client meant them); a repeated name keeps its last value.
 */

static ngx_int_t
ngx_defarm_fn_args(ngx_http_request_t *r, ngx_str_t *json)
{
    u_char                    *p, *last, *amp, *eq, *dst, *src, *last_value;
    ngx_str_t                  name, value;
    ngx_defarm_json_writer_t  *w;

    w = ngx_defarm_json_writer(r);
    if (w == NULL) {
        return NGX_ERROR;
    }

    ngx_defarm_jw_map_open(w);

    /* no query string: nginx leaves args.data NULL (NULL + 0 is UB) */

    p = r->args.data;
    last = p ? p + r->args.len : p;

    while (p < last) {
        amp = ngx_strlchr(p, last, '&');
        if (amp == NULL) {
            amp = last;
        }

        eq = ngx_strlchr(p, amp, '=');

        name.data = p;
        name.len = (eq ? eq : amp) - p;

        value.len = 0;
        value.data = (u_char *) "";

        if (eq && amp - eq > 1) {

            /* a copy: the request's own arguments stay as they came */

            value.data = ngx_pnalloc(r->pool, amp - eq - 1);
            if (value.data == NULL) {
                return NGX_ERROR;
            }

            last_value = ngx_cpymem(value.data, eq + 1, amp - eq - 1);

            for (src = value.data; src < last_value; src++) {
                if (*src == '+') {
                    *src = ' ';
                }
            }

            src = value.data;
            dst = value.data;
            ngx_unescape_uri(&dst, &src, amp - eq - 1, NGX_UNESCAPE_URI);
            value.len = dst - value.data;
        }

        if (name.len) {
            ngx_defarm_jw_str(w, &name);
            ngx_defarm_jw_str(w, &value);
        }

        p = amp + 1;
    }

    ngx_defarm_jw_map_close(w);

    return ngx_defarm_json_text(w, json);
}


ngx_int_t
ngx_defarm_fn_done(ngx_http_request_t *r, void *data, PGresult *res)
{
    ngx_defarm_fn_req_t  *fr = data;

    u_char            *nl;
    ngx_int_t          status;
    ngx_str_t          body;
    ngx_defarm_ctx_t  *ctx;
    ngx_defarm_err_e   kind;

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        return ngx_defarm_pg_sql_error(r, res);
    }

    status = ngx_atoi((u_char *) PQgetvalue(res, 0, 0),
                      PQgetlength(res, 0, 0));
    (void) ngx_defarm_pg_text(res, 0, 1, &body);

    if (status >= NGX_HTTP_OK && status < NGX_HTTP_BAD_REQUEST) {
        return ngx_defarm_send_text(r, status, &body);
    }

    switch (status) {

    case NGX_HTTP_BAD_REQUEST:
        kind = NGX_DEFARM_ERR_VALIDATION;
        break;

    case NGX_HTTP_FORBIDDEN:
        kind = NGX_DEFARM_ERR_AUTH;
        break;

    case NGX_HTTP_NOT_FOUND:
        kind = NGX_DEFARM_ERR_NOT_FOUND;
        break;

    case NGX_HTTP_CONFLICT:
        kind = NGX_DEFARM_ERR_CONFLICT;
        break;

    case NGX_HTTP_SERVICE_UNAVAILABLE:       /* a feature not set up here */
        kind = NGX_DEFARM_ERR_SERVICE_UNAVAILABLE;
        break;

    case 422:

        /* "message\n{details}": the details go in the error as they are */

        kind = NGX_DEFARM_ERR_VALIDATION;
        nl = ngx_strlchr(body.data, body.data + body.len, '\n');
        ctx = ngx_defarm_get_ctx(r);

        if (nl && ctx) {
            fr->details.data = nl + 1;
            fr->details.len = body.data + body.len - (nl + 1);
            body.len = nl - body.data;
            ctx->error_fields = ngx_defarm_fn_details;
            ctx->error_data = fr;
        }

        break;

    default:
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "defarm: a route function answered %i", status);
        return ngx_defarm_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                NGX_DEFARM_ERR_INTERNAL,
                                "Internal server error");
    }

    return ngx_defarm_error(r, status, kind, "%V", &body);
}


/*
 * A 422's "details", written as PostgreSQL rendered them: a JSON object
 * (jsonb output), given to yajl as one number token, which it copies.
 */

static void
ngx_defarm_fn_details(ngx_http_request_t *r,
    ngx_defarm_json_writer_t *w, void *data)
{
    ngx_defarm_fn_req_t  *fr = data;

    ngx_defarm_jw_key(w, "details");
    ngx_defarm_jw_check(w, yajl_gen_number(w->gen,
                                           (const char *) fr->details.data,
                                           fr->details.len));
}
