
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "api/ngx_defarm_api.h"
#include "pg/ngx_defarm_pg.h"
#include "auth/ngx_defarm_crypt.h"


/*
 * /api/circuits.  A circuit route is one PL/pgSQL function (sql/016) of
 * the caller, the circuit id, the body (or, for a GET, the query
 * arguments) as jsonb, and a second path argument; it checks the caller's
 * permission and makes the change in one transaction, with the caller's
 * member row locked, and answers a status with the response's JSON, or
 * an error status with its message.  So this file is a table: route i
 * runs statement i, and every answer goes through one function.
 *
 * The router authenticates first (an API key acts as its owner); the
 * key's read or write permission goes by the method.  Two routes do more
 * here: public settings hash a protected circuit's password (bcrypt, in
 * the thread pool) before their statement, and a public join verifies the
 * password against the stored hash before its own.
 */


typedef struct {
    ngx_str_t                  params[4];
    ngx_str_t                  details;       /* a 422's */
    ngx_str_t                  password;      /* a public join's */
} ngx_defarm_circuits_req_t;


static ngx_int_t ngx_defarm_circuits_run(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_circuits_args(ngx_http_request_t *r,
    ngx_str_t *json);
static ngx_int_t ngx_defarm_circuits_done(ngx_http_request_t *r,
    void *data, PGresult *res);
static ngx_int_t ngx_defarm_circuits_hashed(ngx_http_request_t *r,
    void *data, ngx_int_t rc, ngx_str_t *hash);
static ngx_int_t ngx_defarm_circuits_join_hash(ngx_http_request_t *r,
    void *data, PGresult *res);
static ngx_int_t ngx_defarm_circuits_join_verified(ngx_http_request_t *r,
    void *data, ngx_int_t rc, ngx_str_t *hash);
static void ngx_defarm_circuits_details(ngx_http_request_t *r,
    ngx_defarm_json_writer_t *w, void *data);


#define NGX_DEFARM_CIRCUITS_READ   NGX_DEFARM_ROUTE_PRINCIPAL
#define NGX_DEFARM_CIRCUITS_WRITE                                            \
    (NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL)


ngx_defarm_route_t  ngx_defarm_circuits_routes[] = {

    { NGX_HTTP_POST, ngx_string("/api/circuits"),
      ngx_defarm_circuits_run, NGX_DEFARM_CIRCUITS_WRITE },

    { NGX_HTTP_GET, ngx_string("/api/circuits"),
      ngx_defarm_circuits_run, NGX_DEFARM_CIRCUITS_READ },

    { NGX_HTTP_GET, ngx_string("/api/circuits/list"),
      ngx_defarm_circuits_run, NGX_DEFARM_CIRCUITS_READ },

    { NGX_HTTP_GET, ngx_string("/api/circuits/member/:member_id"),
      ngx_defarm_circuits_run, NGX_DEFARM_CIRCUITS_READ },

    { NGX_HTTP_GET, ngx_string("/api/circuits/:id"),
      ngx_defarm_circuits_run, NGX_DEFARM_CIRCUITS_READ },

    { NGX_HTTP_PUT|NGX_HTTP_PATCH, ngx_string("/api/circuits/:id"),
      ngx_defarm_circuits_run, NGX_DEFARM_CIRCUITS_WRITE },

    { NGX_HTTP_PUT, ngx_string("/api/circuits/:id/deactivate"),
      ngx_defarm_circuits_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/circuits/:id/members"),
      ngx_defarm_circuits_run, NGX_DEFARM_CIRCUITS_WRITE },

    { NGX_HTTP_PATCH, ngx_string("/api/circuits/:id/members/:user_id"),
      ngx_defarm_circuits_run, NGX_DEFARM_CIRCUITS_WRITE },

    { NGX_HTTP_GET, ngx_string("/api/circuits/:id/roles"),
      ngx_defarm_circuits_run, NGX_DEFARM_CIRCUITS_READ },

    { NGX_HTTP_POST, ngx_string("/api/circuits/:id/roles"),
      ngx_defarm_circuits_run, NGX_DEFARM_CIRCUITS_WRITE },

    { NGX_HTTP_PUT, ngx_string("/api/circuits/:id/roles/:role_name"),
      ngx_defarm_circuits_run, NGX_DEFARM_CIRCUITS_WRITE },

    { NGX_HTTP_DELETE, ngx_string("/api/circuits/:id/roles/:role_name"),
      ngx_defarm_circuits_run, NGX_DEFARM_ROUTE_JWT },

    { NGX_HTTP_POST, ngx_string("/api/circuits/:id/requests"),
      ngx_defarm_circuits_run, NGX_DEFARM_CIRCUITS_WRITE },

    { NGX_HTTP_GET, ngx_string("/api/circuits/:id/requests/pending"),
      ngx_defarm_circuits_run, NGX_DEFARM_CIRCUITS_READ },

    { NGX_HTTP_POST,
      ngx_string("/api/circuits/:id/requests/:requester_id/approve"),
      ngx_defarm_circuits_run, NGX_DEFARM_CIRCUITS_WRITE },

    { NGX_HTTP_POST,
      ngx_string("/api/circuits/:id/requests/:requester_id/reject"),
      ngx_defarm_circuits_run, NGX_DEFARM_CIRCUITS_WRITE },

    { NGX_HTTP_PUT, ngx_string("/api/circuits/:id/visibility/toggle"),
      ngx_defarm_circuits_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/circuits/:id/push/:dfid"),
      ngx_defarm_circuits_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/circuits/:id/pull/:dfid"),
      ngx_defarm_circuits_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/circuits/:id/operations"),
      ngx_defarm_circuits_run, NGX_DEFARM_CIRCUITS_READ },

    { NGX_HTTP_GET, ngx_string("/api/circuits/:id/operations/pending"),
      ngx_defarm_circuits_run, NGX_DEFARM_CIRCUITS_READ },

    { NGX_HTTP_POST,
      ngx_string("/api/circuits/operations/:operation_id/approve"),
      ngx_defarm_circuits_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/circuits/:id/pending-items"),
      ngx_defarm_circuits_run, NGX_DEFARM_CIRCUITS_READ },

    { NGX_HTTP_POST,
      ngx_string("/api/circuits/:id/pending-items/:pending_id/approve"),
      ngx_defarm_circuits_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST,
      ngx_string("/api/circuits/:id/pending-items/:pending_id/reject"),
      ngx_defarm_circuits_run, NGX_DEFARM_CIRCUITS_WRITE },

    { NGX_HTTP_GET, ngx_string("/api/circuits/:id/items"),
      ngx_defarm_circuits_run, NGX_DEFARM_CIRCUITS_READ },

    { NGX_HTTP_GET, ngx_string("/api/circuits/:id/activities"),
      ngx_defarm_circuits_run, NGX_DEFARM_CIRCUITS_READ },

    { NGX_HTTP_PUT, ngx_string("/api/circuits/:id/public-settings"),
      ngx_defarm_circuits_run, NGX_DEFARM_CIRCUITS_WRITE },

    /* the public page needs no caller */

    { NGX_HTTP_GET, ngx_string("/api/circuits/:id/public"),
      ngx_defarm_circuits_run, 0 },

    { NGX_HTTP_POST, ngx_string("/api/circuits/:id/public/join"),
      ngx_defarm_circuits_run, NGX_DEFARM_CIRCUITS_WRITE },

    ngx_defarm_route_null
};


#define ngx_defarm_circuits_stmt(fn)                                         \
    { fn, "SELECT status, body FROM " fn "($1, $2, $3::jsonb, $4)", 4, 0 }

static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_create =
    ngx_defarm_circuits_stmt("defarm_circuit_create");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_list =
    ngx_defarm_circuits_stmt("defarm_circuit_list");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_get =
    ngx_defarm_circuits_stmt("defarm_circuit_get");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_update =
    ngx_defarm_circuits_stmt("defarm_circuit_update");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_deactivate =
    ngx_defarm_circuits_stmt("defarm_circuit_deactivate");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_add_member =
    ngx_defarm_circuits_stmt("defarm_circuit_add_member");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_assign_role =
    ngx_defarm_circuits_stmt("defarm_circuit_assign_role");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_roles =
    ngx_defarm_circuits_stmt("defarm_circuit_roles");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_role_create =
    ngx_defarm_circuits_stmt("defarm_circuit_role_create");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_role_update =
    ngx_defarm_circuits_stmt("defarm_circuit_role_update");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_role_delete =
    ngx_defarm_circuits_stmt("defarm_circuit_role_delete");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_request =
    ngx_defarm_circuits_stmt("defarm_circuit_request");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_requests =
    ngx_defarm_circuits_stmt("defarm_circuit_requests");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_approve =
    ngx_defarm_circuits_stmt("defarm_circuit_approve");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_reject =
    ngx_defarm_circuits_stmt("defarm_circuit_reject");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_toggle =
    ngx_defarm_circuits_stmt("defarm_circuit_toggle");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_push =
    ngx_defarm_circuits_stmt("defarm_circuit_push");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_pull =
    ngx_defarm_circuits_stmt("defarm_circuit_pull");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_operations =
    ngx_defarm_circuits_stmt("defarm_circuit_operations");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_pending_ops =
    ngx_defarm_circuits_stmt("defarm_circuit_pending_ops");
static ngx_defarm_pg_stmt_t  ngx_defarm_operation_approve =
    ngx_defarm_circuits_stmt("defarm_operation_approve");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_pending_items =
    ngx_defarm_circuits_stmt("defarm_circuit_pending_items");
static ngx_defarm_pg_stmt_t  ngx_defarm_pending_item_approve =
    ngx_defarm_circuits_stmt("defarm_pending_item_approve");
static ngx_defarm_pg_stmt_t  ngx_defarm_pending_item_reject =
    ngx_defarm_circuits_stmt("defarm_pending_item_reject");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_items =
    ngx_defarm_circuits_stmt("defarm_circuit_items");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_activities =
    ngx_defarm_circuits_stmt("defarm_circuit_activities");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_public_settings =
    ngx_defarm_circuits_stmt("defarm_circuit_public_settings");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_public =
    ngx_defarm_circuits_stmt("defarm_circuit_public");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_join_hash =
    ngx_defarm_circuits_stmt("defarm_circuit_join_hash");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_public_join =
    ngx_defarm_circuits_stmt("defarm_circuit_public_join");

/* in the order of the routes above */

static ngx_defarm_pg_stmt_t  *ngx_defarm_circuits_stmts[] = {
    &ngx_defarm_circuit_create,
    &ngx_defarm_circuit_list,
    &ngx_defarm_circuit_list,
    &ngx_defarm_circuit_list,
    &ngx_defarm_circuit_get,
    &ngx_defarm_circuit_update,
    &ngx_defarm_circuit_deactivate,
    &ngx_defarm_circuit_add_member,
    &ngx_defarm_circuit_assign_role,
    &ngx_defarm_circuit_roles,
    &ngx_defarm_circuit_role_create,
    &ngx_defarm_circuit_role_update,
    &ngx_defarm_circuit_role_delete,
    &ngx_defarm_circuit_request,
    &ngx_defarm_circuit_requests,
    &ngx_defarm_circuit_approve,
    &ngx_defarm_circuit_reject,
    &ngx_defarm_circuit_toggle,
    &ngx_defarm_circuit_push,
    &ngx_defarm_circuit_pull,
    &ngx_defarm_circuit_operations,
    &ngx_defarm_circuit_pending_ops,
    &ngx_defarm_operation_approve,
    &ngx_defarm_circuit_pending_items,
    &ngx_defarm_pending_item_approve,
    &ngx_defarm_pending_item_reject,
    &ngx_defarm_circuit_items,
    &ngx_defarm_circuit_activities,
    &ngx_defarm_circuit_public_settings,
    &ngx_defarm_circuit_public,
    &ngx_defarm_circuit_join_hash          /* then public_join */
};


static ngx_int_t
ngx_defarm_circuits_run(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_str_t                  *v;
    ngx_uint_t                  i;
    ngx_defarm_json_t          *pw;
    ngx_defarm_pg_stmt_t       *stmt;
    ngx_defarm_circuits_req_t  *cr;

    i = ctx->route - ngx_defarm_circuits_routes;

    if (i >= sizeof(ngx_defarm_circuits_stmts)
             / sizeof(ngx_defarm_pg_stmt_t *))
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    stmt = ngx_defarm_circuits_stmts[i];

    cr = ngx_pcalloc(r->pool, sizeof(ngx_defarm_circuits_req_t));
    if (cr == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* a NULL parameter is a string with no data */

    cr->params[0] = ctx->user_id;

    v = ngx_defarm_param(ctx, "id");
    if (v) {
        cr->params[1] = *v;
    }

    if (ctx->body) {
        if (ngx_defarm_json_render(r, ctx->body, &cr->params[2]) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

    } else if (ngx_defarm_circuits_args(r, &cr->params[2]) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the second path argument, by whichever name the route gives it */

    v = ngx_defarm_param(ctx, "user_id");

    if (v == NULL) {
        v = ngx_defarm_param(ctx, "member_id");
    }

    if (v == NULL) {
        v = ngx_defarm_param(ctx, "role_name");
    }

    if (v == NULL) {
        v = ngx_defarm_param(ctx, "requester_id");
    }

    if (v == NULL) {
        v = ngx_defarm_param(ctx, "dfid");
    }

    if (v == NULL) {
        v = ngx_defarm_param(ctx, "operation_id");
    }

    if (v == NULL) {
        v = ngx_defarm_param(ctx, "pending_id");
    }

    if (v) {
        cr->params[3] = *v;
    }

    if (stmt == &ngx_defarm_circuit_public_settings) {
        pw = ngx_defarm_json_get(ngx_defarm_json_get(ctx->body,
                                                     "public_settings"),
                                 "access_password");

        if (pw && pw->type == NGX_DEFARM_JSON_STRING && pw->str.len) {
            if (pw->str.len > 72) {
                return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                        NGX_DEFARM_ERR_VALIDATION,
                                        "access_password is at most 72 "
                                        "bytes");
            }

            return ngx_defarm_crypt_hash(r, &pw->str,
                                         ngx_defarm_circuits_hashed, cr);
        }
    }

    if (stmt == &ngx_defarm_circuit_join_hash) {
        pw = ngx_defarm_json_get(ctx->body, "access_password");

        if (pw && pw->type == NGX_DEFARM_JSON_STRING) {
            cr->password = pw->str;

        } else if (pw && pw->type != NGX_DEFARM_JSON_NULL) {
            return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                    NGX_DEFARM_ERR_VALIDATION,
                                    "access_password must be a string");
        }

        return ngx_defarm_pg_query(r, stmt, cr->params,
                                   ngx_defarm_circuits_join_hash, cr);
    }

    return ngx_defarm_pg_query(r, stmt, cr->params, ngx_defarm_circuits_done,
                               cr);
}


/* public settings: the new password's hash is the statement's argument */

static ngx_int_t
ngx_defarm_circuits_hashed(ngx_http_request_t *r, void *data, ngx_int_t rc,
    ngx_str_t *hash)
{
    ngx_defarm_circuits_req_t  *cr = data;

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cr->params[3] = *hash;

    return ngx_defarm_pg_query(r, &ngx_defarm_circuit_public_settings,
                               cr->params, ngx_defarm_circuits_done, cr);
}


/*
 * A public join: the circuit's password hash ("-": none), then the
 * password verified against it in the thread pool, then the join, told
 * which hash was verified.  A wrong password is refused before the join.
 */

static ngx_int_t
ngx_defarm_circuits_join_hash(ngx_http_request_t *r, void *data,
    PGresult *res)
{
    ngx_defarm_circuits_req_t  *cr = data;

    ngx_str_t  hash;

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1
        || ngx_atoi((u_char *) PQgetvalue(res, 0, 0),
                    PQgetlength(res, 0, 0)) != NGX_HTTP_OK)
    {
        return ngx_defarm_circuits_done(r, data, res);
    }

    (void) ngx_defarm_pg_text(res, 0, 1, &hash);

    if (hash.len == 1 && hash.data[0] == '-') {
        ngx_str_set(&cr->params[3], "-");

        return ngx_defarm_pg_query(r, &ngx_defarm_circuit_public_join,
                                   cr->params, ngx_defarm_circuits_done, cr);
    }

    if (cr->password.len == 0) {
        return ngx_defarm_error(r, NGX_HTTP_FORBIDDEN, NGX_DEFARM_ERR_AUTH,
                                "This circuit needs its access password");
    }

    cr->params[3].data = ngx_pstrdup(r->pool, &hash);
    if (cr->params[3].data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cr->params[3].len = hash.len;

    return ngx_defarm_crypt_verify(r, &cr->password, &cr->params[3],
                                   ngx_defarm_circuits_join_verified, cr);
}


static ngx_int_t
ngx_defarm_circuits_join_verified(ngx_http_request_t *r, void *data,
    ngx_int_t rc, ngx_str_t *hash)
{
    ngx_defarm_circuits_req_t  *cr = data;

    if (rc == NGX_DECLINED) {
        return ngx_defarm_error(r, NGX_HTTP_FORBIDDEN, NGX_DEFARM_ERR_AUTH,
                                "Invalid access password");
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_circuit_public_join,
                               cr->params, ngx_defarm_circuits_done, cr);
}


/*
 * The query arguments as a JSON object of strings, decoded ("%2B" and
 * "+" as the client meant them); a repeated name keeps its last value.
 */

static ngx_int_t
ngx_defarm_circuits_args(ngx_http_request_t *r, ngx_str_t *json)
{
    u_char                    *p, *last, *amp, *eq, *dst, *src, *last_value;
    ngx_str_t                  name, value;
    ngx_defarm_json_writer_t  *w;

    w = ngx_defarm_json_writer(r);
    if (w == NULL) {
        return NGX_ERROR;
    }

    ngx_defarm_jw_map_open(w);

    p = r->args.data;
    last = p + r->args.len;

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


static ngx_int_t
ngx_defarm_circuits_done(ngx_http_request_t *r, void *data, PGresult *res)
{
    ngx_defarm_circuits_req_t  *cr = data;

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

    case 422:

        /* "message\n{details}": the details go in the error as they are */

        kind = NGX_DEFARM_ERR_VALIDATION;
        nl = ngx_strlchr(body.data, body.data + body.len, '\n');
        ctx = ngx_defarm_get_ctx(r);

        if (nl && ctx) {
            cr->details.data = nl + 1;
            cr->details.len = body.data + body.len - (nl + 1);
            body.len = nl - body.data;
            ctx->error_fields = ngx_defarm_circuits_details;
            ctx->error_data = cr;
        }

        break;

    default:
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "defarm: a circuit function answered %i", status);
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
ngx_defarm_circuits_details(ngx_http_request_t *r,
    ngx_defarm_json_writer_t *w, void *data)
{
    ngx_defarm_circuits_req_t  *cr = data;

    ngx_defarm_jw_key(w, "details");
    ngx_defarm_jw_check(w, yajl_gen_number(w->gen,
                                           (const char *) cr->details.data,
                                           cr->details.len));
}
