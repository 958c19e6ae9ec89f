
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "api/ngx_defarm_api_fn.h"
#include "auth/ngx_defarm_crypt.h"
#include "cache/ngx_defarm_cache.h"


/*
 * /api/circuits.  Each route is one PL/pgSQL function (sql/016 to 020)
 * run as a route function (ngx_defarm_api_fn.c): it checks the caller's
 * permission with the caller's member row locked and makes the change in
 * the same transaction.  Route i runs statement i.
 *
 * The router authenticates first (an API key acts as its owner); the
 * key's read or write permission goes by the method.  Two routes do more
 * here: public settings hash a protected circuit's password (bcrypt, in
 * the thread pool) before their statement, and a public join verifies the
 * password against the stored hash before its own.
 *
 * A circuit's JSON is cached for its members under "circuit:<id>:json"
 * as "<member ids, space separated>\n<json>": a member's GET is then a
 * look-up in shared memory; anyone else's goes to PostgreSQL, which says
 * whether they may read it.  Every change made through a route with the
 * circuit's id drops the family "circuit:<id>:" here and, through Redis,
 * on the other nodes, before the answer goes out.
 */


static ngx_int_t ngx_defarm_circuits_run(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_circuits_changed(ngx_http_request_t *r,
    void *data, PGresult *res);
static ngx_int_t ngx_defarm_circuits_cached(ngx_http_request_t *r,
    void *data, ngx_int_t rc, ngx_str_t *value);
static ngx_int_t ngx_defarm_circuits_read(ngx_http_request_t *r,
    void *data, PGresult *res);
static ngx_int_t ngx_defarm_circuits_stored(ngx_http_request_t *r,
    void *data, ngx_int_t rc, ngx_str_t *value);
static ngx_int_t ngx_defarm_circuits_hashed(ngx_http_request_t *r,
    void *data, ngx_int_t rc, ngx_str_t *hash);
static ngx_int_t ngx_defarm_circuits_join_hash(ngx_http_request_t *r,
    void *data, PGresult *res);
static ngx_int_t ngx_defarm_circuits_join_verified(ngx_http_request_t *r,
    void *data, ngx_int_t rc, ngx_str_t *hash);


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

    { NGX_HTTP_POST, ngx_string("/api/circuits/:id/push/batch"),
      ngx_defarm_circuits_run, NGX_DEFARM_CIRCUITS_WRITE },

    { NGX_HTTP_POST, ngx_string("/api/circuits/:id/push-local"),
      ngx_defarm_circuits_run, NGX_DEFARM_CIRCUITS_WRITE },

    { NGX_HTTP_POST, ngx_string("/api/circuits/:id/push-events"),
      ngx_defarm_circuits_run, NGX_DEFARM_CIRCUITS_WRITE },

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

    /* the activity log across the caller's circuits */

    { NGX_HTTP_GET, ngx_string("/api/activities"),
      ngx_defarm_circuits_run, NGX_DEFARM_CIRCUITS_READ },

    { NGX_HTTP_GET, ngx_string("/api/activities/user/:user_id"),
      ngx_defarm_circuits_run, NGX_DEFARM_CIRCUITS_READ },

    ngx_defarm_route_null
};


static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_create =
    ngx_defarm_fn_stmt("defarm_circuit_create");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_list =
    ngx_defarm_fn_stmt("defarm_circuit_list");
/* with the member ids, for the cached record */

static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_get = {
    "defarm_circuit_get",
    "SELECT a.status, a.body, "
           "CASE WHEN defarm_is_uuid($2) THEN "
               "(SELECT string_agg(m.member_id, ' ') FROM circuit_members m "
                "WHERE m.circuit_id = $2::uuid) END "
    "FROM defarm_circuit_get($1, $2, $3::jsonb, $4) a",
    4, 0
};
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_update =
    ngx_defarm_fn_stmt("defarm_circuit_update");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_deactivate =
    ngx_defarm_fn_stmt("defarm_circuit_deactivate");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_add_member =
    ngx_defarm_fn_stmt("defarm_circuit_add_member");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_assign_role =
    ngx_defarm_fn_stmt("defarm_circuit_assign_role");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_roles =
    ngx_defarm_fn_stmt("defarm_circuit_roles");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_role_create =
    ngx_defarm_fn_stmt("defarm_circuit_role_create");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_role_update =
    ngx_defarm_fn_stmt("defarm_circuit_role_update");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_role_delete =
    ngx_defarm_fn_stmt("defarm_circuit_role_delete");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_request =
    ngx_defarm_fn_stmt("defarm_circuit_request");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_requests =
    ngx_defarm_fn_stmt("defarm_circuit_requests");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_approve =
    ngx_defarm_fn_stmt("defarm_circuit_approve");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_reject =
    ngx_defarm_fn_stmt("defarm_circuit_reject");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_toggle =
    ngx_defarm_fn_stmt("defarm_circuit_toggle");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_push =
    ngx_defarm_fn_stmt("defarm_circuit_push");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_push_batch =
    ngx_defarm_fn_stmt("defarm_circuit_push_batch");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_push_local =
    ngx_defarm_fn_stmt("defarm_circuit_push_local");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_push_events =
    ngx_defarm_fn_stmt("defarm_circuit_push_events");
static ngx_defarm_pg_stmt_t  ngx_defarm_activities =
    ngx_defarm_fn_stmt("defarm_activities");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_pull =
    ngx_defarm_fn_stmt("defarm_circuit_pull");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_operations =
    ngx_defarm_fn_stmt("defarm_circuit_operations");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_pending_ops =
    ngx_defarm_fn_stmt("defarm_circuit_pending_ops");
static ngx_defarm_pg_stmt_t  ngx_defarm_operation_approve =
    ngx_defarm_fn_stmt("defarm_operation_approve");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_pending_items =
    ngx_defarm_fn_stmt("defarm_circuit_pending_items");
static ngx_defarm_pg_stmt_t  ngx_defarm_pending_item_approve =
    ngx_defarm_fn_stmt("defarm_pending_item_approve");
static ngx_defarm_pg_stmt_t  ngx_defarm_pending_item_reject =
    ngx_defarm_fn_stmt("defarm_pending_item_reject");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_items =
    ngx_defarm_fn_stmt("defarm_circuit_items");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_activities =
    ngx_defarm_fn_stmt("defarm_circuit_activities");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_public_settings =
    ngx_defarm_fn_stmt("defarm_circuit_public_settings");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_public =
    ngx_defarm_fn_stmt("defarm_circuit_public");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_join_hash =
    ngx_defarm_fn_stmt("defarm_circuit_join_hash");
static ngx_defarm_pg_stmt_t  ngx_defarm_circuit_public_join =
    ngx_defarm_fn_stmt("defarm_circuit_public_join");

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
    &ngx_defarm_circuit_push_batch,
    &ngx_defarm_circuit_push_local,
    &ngx_defarm_circuit_push_events,
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
    &ngx_defarm_circuit_join_hash,         /* then public_join */
    &ngx_defarm_activities,
    &ngx_defarm_activities
};


static ngx_int_t
ngx_defarm_circuits_run(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_uint_t            i;
    ngx_defarm_json_t    *pw;
    ngx_defarm_pg_stmt_t *stmt;
    ngx_defarm_fn_req_t  *cr;

    i = ctx->route - ngx_defarm_circuits_routes;

    if (i >= sizeof(ngx_defarm_circuits_stmts)
             / sizeof(ngx_defarm_pg_stmt_t *))
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    stmt = ngx_defarm_circuits_stmts[i];

    cr = ngx_defarm_fn_req(r, ctx);
    if (cr == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (stmt == &ngx_defarm_circuit_get && cr->params[1].len
        && cr->params[1].len <= 64)
    {
        cr->key.len = sizeof("circuit::json") - 1 + cr->params[1].len;
        cr->key.data = ngx_pnalloc(r->pool, cr->key.len);
        if (cr->key.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_sprintf(cr->key.data, "circuit:%V:json", &cr->params[1]);

        return ngx_defarm_cache_run(r, NGX_DEFARM_CACHE_GET, &cr->key,
                                    NULL, 0, ngx_defarm_circuits_cached, cr);
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

    return ngx_defarm_pg_query(r, stmt, cr->params,
                               r->method == NGX_HTTP_GET
                               ? ngx_defarm_fn_done
                               : ngx_defarm_circuits_changed,
                               cr);
}


/* a change through a route with the circuit's id: its records go */

static ngx_int_t
ngx_defarm_circuits_changed(ngx_http_request_t *r, void *data,
    PGresult *res)
{
    ngx_defarm_fn_req_t  *cr = data;

    ngx_str_t  family;

    if (cr->params[1].len && PQresultStatus(res) == PGRES_TUPLES_OK
        && PQntuples(res) == 1 && PQgetvalue(res, 0, 0)[0] == '2')
    {
        family.len = sizeof("circuit::") - 1 + cr->params[1].len;
        family.data = ngx_pnalloc(r->pool, family.len);
        if (family.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_sprintf(family.data, "circuit:%V:", &cr->params[1]);
        ngx_defarm_cache_forget(r, &family);
    }

    return ngx_defarm_fn_done(r, data, res);
}


/* a member's GET from the cache; anyone else's from PostgreSQL */

static ngx_int_t
ngx_defarm_circuits_cached(ngx_http_request_t *r, void *data, ngx_int_t rc,
    ngx_str_t *value)
{
    ngx_defarm_fn_req_t  *cr = data;

    u_char     *nl, *p, *sp;
    ngx_str_t   json, *user;

    user = &cr->params[0];

    if (rc == NGX_OK && user->len) {
        nl = ngx_strlchr(value->data, value->data + value->len, '\n');

        for (p = value->data; nl && p < nl; p = sp + 1) {
            sp = ngx_strlchr(p, nl, ' ');
            if (sp == NULL) {
                sp = nl;
            }

            if ((size_t) (sp - p) == user->len
                && ngx_strncmp(p, user->data, user->len) == 0)
            {
                json.data = nl + 1;
                json.len = value->data + value->len - json.data;

                return ngx_defarm_send_text(r, NGX_HTTP_OK, &json);
            }
        }
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_circuit_get, cr->params,
                               ngx_defarm_circuits_read, cr);
}


static ngx_int_t
ngx_defarm_circuits_read(ngx_http_request_t *r, void *data, PGresult *res)
{
    ngx_defarm_fn_req_t  *cr = data;

    ngx_str_t  members, json, record;

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1
        || ngx_strcmp(PQgetvalue(res, 0, 0), "200") != 0
        || PQgetisnull(res, 0, 2))
    {
        return ngx_defarm_fn_done(r, data, res);
    }

    (void) ngx_defarm_pg_text(res, 0, 1, &json);
    (void) ngx_defarm_pg_text(res, 0, 2, &members);

    record.len = members.len + 1 + json.len;
    record.data = ngx_pnalloc(r->pool, record.len);
    if (record.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_sprintf(record.data, "%V\n%V", &members, &json);

    /* the answer, kept past the result: the store may wait for the lock */

    cr->answer.data = record.data + members.len + 1;
    cr->answer.len = json.len;

    return ngx_defarm_cache_run(r, NGX_DEFARM_CACHE_SET_IF, &cr->key,
                                &record, 0, ngx_defarm_circuits_stored, cr);
}


static ngx_int_t
ngx_defarm_circuits_stored(ngx_http_request_t *r, void *data, ngx_int_t rc,
    ngx_str_t *value)
{
    ngx_defarm_fn_req_t  *cr = data;

    return ngx_defarm_send_text(r, NGX_HTTP_OK, &cr->answer);
}


/* public settings: the new password's hash is the statement's argument */

static ngx_int_t
ngx_defarm_circuits_hashed(ngx_http_request_t *r, void *data, ngx_int_t rc,
    ngx_str_t *hash)
{
    ngx_defarm_fn_req_t  *cr = data;

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cr->params[3] = *hash;

    return ngx_defarm_pg_query(r, &ngx_defarm_circuit_public_settings,
                               cr->params, ngx_defarm_circuits_changed, cr);
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
    ngx_defarm_fn_req_t  *cr = data;

    ngx_str_t  hash;

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1
        || ngx_atoi((u_char *) PQgetvalue(res, 0, 0),
                    PQgetlength(res, 0, 0)) != NGX_HTTP_OK)
    {
        return ngx_defarm_fn_done(r, data, res);
    }

    (void) ngx_defarm_pg_text(res, 0, 1, &hash);

    if (hash.len == 1 && hash.data[0] == '-') {
        ngx_str_set(&cr->params[3], "-");

        return ngx_defarm_pg_query(r, &ngx_defarm_circuit_public_join,
                                   cr->params, ngx_defarm_circuits_changed,
                                   cr);
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
    ngx_defarm_fn_req_t  *cr = data;

    if (rc == NGX_DECLINED) {
        return ngx_defarm_error(r, NGX_HTTP_FORBIDDEN, NGX_DEFARM_ERR_AUTH,
                                "Invalid access password");
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_circuit_public_join,
                               cr->params, ngx_defarm_circuits_changed, cr);
}
