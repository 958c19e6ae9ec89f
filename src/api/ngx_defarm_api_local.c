
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "api/ngx_defarm_api.h"
#include "pg/ngx_defarm_pg.h"
#include "auth/ngx_defarm_auth.h"
#include "items/ngx_defarm_items.h"


/*
 * The local-item workflow: items not yet tokenized (LID-<uuid>), merged
 * by one of three strategies, unmerged, grouped as duplicates by their
 * first canonical identifier, organized in bulk (with a dry run), and
 * mapped to their DFID once tokenized.  The caller's items only; each
 * change is one function (sql/010_local_items.sql).
 */


#define NGX_DEFARM_LOCAL_MAX_MERGE  100


typedef struct {
    ngx_str_t                  params[5];
} ngx_defarm_local_req_t;


static ngx_int_t ngx_defarm_local_create(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_local_merge(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_local_unmerge(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_local_duplicates(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_local_organize(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_local_mapping(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);

static ngx_int_t ngx_defarm_local_answer(ngx_http_request_t *r,
    void *data, PGresult *res);


ngx_defarm_route_t  ngx_defarm_local_routes[] = {

    { NGX_HTTP_POST, ngx_string("/api/items/local"),
      ngx_defarm_local_create,
      NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/items/local/merge"),
      ngx_defarm_local_merge,
      NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/items/local/unmerge"),
      ngx_defarm_local_unmerge,
      NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/items/local/duplicates"),
      ngx_defarm_local_duplicates, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/items/local/organize"),
      ngx_defarm_local_organize,
      NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/items/mapping/:local_id"),
      ngx_defarm_local_mapping, NGX_DEFARM_ROUTE_PRINCIPAL },

    ngx_defarm_route_null
};


/* every statement answers (outcome, JSON text) */

static ngx_defarm_pg_stmt_t  ngx_defarm_local_create_stmt = {
    "defarm_local_create",
    "SELECT 'ok', json_build_object('success', true, 'data', "
           "json_build_object('local_id', "
                             "defarm_local_create($1, $2::jsonb, $3::jsonb), "
                             "'status', 'LocalOnly'))::text",
    3, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_local_merge_stmt = {
    "defarm_local_merge",
    "SELECT outcome, answer::text "
    "FROM defarm_local_merge($1, $2::uuid, $3::uuid[], $4)",
    4, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_local_unmerge_stmt = {
    "defarm_local_unmerge",
    "SELECT outcome, answer::text FROM defarm_local_unmerge($1, $2::uuid)",
    2, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_local_duplicates_stmt = {
    "defarm_local_duplicates",
    "SELECT 'ok', defarm_local_duplicates($1)::text",
    1, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_local_organize_stmt = {
    "defarm_local_organize",
    "SELECT 'ok', defarm_local_organize($1, $2, $3, $4::bool)::text",
    4, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_local_mapping_stmt = {
    "defarm_local_mapping",
    "SELECT 'ok', defarm_local_mapping($1, $2::uuid)::text",
    2, 0
};


static const char  *ngx_defarm_local_strategies[] = {
    "append", "keep_first", "overwrite", NULL
};


static ngx_defarm_local_req_t *
ngx_defarm_local_req(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_defarm_local_req_t  *lr;

    lr = ngx_pcalloc(r->pool, sizeof(ngx_defarm_local_req_t));
    if (lr == NULL) {
        return NULL;
    }

    lr->params[0] = ctx->user_id;

    return lr;
}


static ngx_int_t
ngx_defarm_local_invalid(ngx_http_request_t *r, const char *msg)
{
    return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                            NGX_DEFARM_ERR_VALIDATION, "%s", msg);
}


/* a route with a JSON object body: NGX_DECLINED and its request state */

static ngx_int_t
ngx_defarm_local_object(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx,
    ngx_defarm_local_req_t **lrp)
{
    *lrp = NULL;

    if (ctx->body == NULL || ctx->body->type != NGX_DEFARM_JSON_OBJECT) {
        return ngx_defarm_local_invalid(r, "The body must be a JSON object");
    }

    *lrp = ngx_defarm_local_req(r, ctx);
    if (*lrp == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_DECLINED;
}


/* a body field that must be a UUID */

static ngx_int_t
ngx_defarm_local_uuid(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx,
    const char *name, ngx_str_t *out)
{
    ngx_defarm_json_t  *v;

    v = ngx_defarm_json_get(ctx->body, name);

    if (v == NULL || v->type != NGX_DEFARM_JSON_STRING
        || !ngx_defarm_is_uuid(&v->str))
    {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "\"%s\" must be a UUID", name);
    }

    *out = v->str;

    return NGX_DECLINED;
}


/* "provided" and "allowed" on a bad strategy, as the original said */

static void
ngx_defarm_local_strategy_fields(ngx_http_request_t *r,
    ngx_defarm_json_writer_t *w, void *data)
{
    ngx_uint_t  i;

    ngx_defarm_jw_key(w, "provided");
    ngx_defarm_jw_str(w, data);
    ngx_defarm_jw_key(w, "allowed");
    ngx_defarm_jw_array_open(w);

    for (i = 0; ngx_defarm_local_strategies[i]; i++) {
        ngx_defarm_jw_cstr(w, ngx_defarm_local_strategies[i]);
    }

    ngx_defarm_jw_array_close(w);
}


static ngx_int_t
ngx_defarm_local_strategy(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx,
    ngx_str_t *out)
{
    ngx_uint_t          i;
    ngx_defarm_json_t  *v;

    v = ngx_defarm_json_get(ctx->body, "merge_strategy");

    if (v == NULL || v->type == NGX_DEFARM_JSON_NULL) {
        ngx_str_set(out, "append");
        return NGX_DECLINED;
    }

    if (v->type == NGX_DEFARM_JSON_STRING) {
        for (i = 0; ngx_defarm_local_strategies[i]; i++) {
            if (v->str.len == ngx_strlen(ngx_defarm_local_strategies[i])
                && ngx_strncmp(v->str.data, ngx_defarm_local_strategies[i],
                               v->str.len) == 0)
            {
                *out = v->str;
                return NGX_DECLINED;
            }
        }

        ctx->error_fields = ngx_defarm_local_strategy_fields;
        ctx->error_data = &v->str;
    }

    return ngx_defarm_local_invalid(r, "Invalid merge_strategy: use append, "
                                       "keep_first or overwrite");
}


/* POST /api/items/local {identifiers?, enriched_data?} */


static ngx_int_t
ngx_defarm_local_create(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_int_t                rc;
    ngx_str_t                err;
    ngx_defarm_json_t       *v;
    ngx_defarm_local_req_t  *lr;

    rc = ngx_defarm_local_object(r, ctx, &lr);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    ngx_str_set(&lr->params[1], "[]");
    ngx_str_set(&lr->params[2], "{}");
    rc = NGX_OK;

    v = ngx_defarm_json_get(ctx->body, "identifiers");

    if (v && v->type != NGX_DEFARM_JSON_NULL) {
        rc = ngx_defarm_identifiers(r, v, &lr->params[1], &err);
    }

    v = ngx_defarm_json_get(ctx->body, "enriched_data");

    if (rc == NGX_OK && v && v->type != NGX_DEFARM_JSON_NULL) {
        rc = ngx_defarm_enriched_data(r, v, &lr->params[2], &err);
    }

    if (rc == NGX_DECLINED) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION, "%V", &err);
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_local_create_stmt, lr->params,
                               ngx_defarm_local_answer, lr);
}


/* POST /api/items/local/merge {master_lid, merge_lids, merge_strategy?} */


static ngx_int_t
ngx_defarm_local_merge(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    u_char                  *p;
    ngx_int_t                rc;
    ngx_defarm_json_t       *list, *e, *o;
    ngx_defarm_local_req_t  *lr;

    rc = ngx_defarm_local_object(r, ctx, &lr);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    rc = ngx_defarm_local_uuid(r, ctx, "master_lid", &lr->params[1]);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    list = ngx_defarm_json_get(ctx->body, "merge_lids");

    if (list == NULL || list->type != NGX_DEFARM_JSON_ARRAY
        || list->count == 0 || list->count > NGX_DEFARM_LOCAL_MAX_MERGE)
    {
        return ngx_defarm_local_invalid(r, "\"merge_lids\" must be an "
                                           "array of 1 to 100 UUIDs");
    }

    p = ngx_pnalloc(r->pool, 2 + list->count * 37);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    lr->params[2].data = p;
    *p++ = '{';

    for (e = list->child; e; e = e->next) {

        if (e->type != NGX_DEFARM_JSON_STRING || !ngx_defarm_is_uuid(&e->str))
        {
            return ngx_defarm_local_invalid(r, "\"merge_lids\" must be an "
                                               "array of 1 to 100 UUIDs");
        }

        if (ngx_strncasecmp(e->str.data, lr->params[1].data, 36) == 0) {
            return ngx_defarm_local_invalid(r, "The master cannot be merged "
                                               "into itself");
        }

        for (o = list->child; o != e; o = o->next) {
            if (ngx_strncasecmp(o->str.data, e->str.data, 36) == 0) {
                return ngx_defarm_local_invalid(r, "\"merge_lids\" lists an "
                                                   "item twice");
            }
        }

        p = ngx_sprintf(p, "%s%V", e == list->child ? "" : ",", &e->str);
    }

    *p++ = '}';
    lr->params[2].len = p - lr->params[2].data;

    rc = ngx_defarm_local_strategy(r, ctx, &lr->params[3]);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_local_merge_stmt, lr->params,
                               ngx_defarm_local_answer, lr);
}


/* POST /api/items/local/unmerge {merged_lid} */


static ngx_int_t
ngx_defarm_local_unmerge(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_int_t                rc;
    ngx_defarm_local_req_t  *lr;

    rc = ngx_defarm_local_object(r, ctx, &lr);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    rc = ngx_defarm_local_uuid(r, ctx, "merged_lid", &lr->params[1]);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_local_unmerge_stmt,
                               lr->params, ngx_defarm_local_answer, lr);
}


/* GET /api/items/local/duplicates */


static ngx_int_t
ngx_defarm_local_duplicates(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx)
{
    ngx_defarm_local_req_t  *lr;

    lr = ngx_defarm_local_req(r, ctx);
    if (lr == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_local_duplicates_stmt,
                               lr->params, ngx_defarm_local_answer, lr);
}


/* POST /api/items/local/organize {action, dry_run?, merge_strategy?, ...} */


static ngx_int_t
ngx_defarm_local_organize(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_int_t                rc;
    ngx_defarm_json_t       *v;
    ngx_defarm_local_req_t  *lr;

    rc = ngx_defarm_local_object(r, ctx, &lr);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    v = ngx_defarm_json_get(ctx->body, "action");

    if (v == NULL || v->type != NGX_DEFARM_JSON_STRING
        || !((v->str.len == 11
              && ngx_strncmp(v->str.data, "deduplicate", 11) == 0)
             || (v->str.len == 9
                 && ngx_strncmp(v->str.data, "merge_all", 9) == 0)))
    {
        return ngx_defarm_local_invalid(r, "\"action\" must be deduplicate "
                                           "or merge_all");
    }

    v = ngx_defarm_json_get(ctx->body, "namespace");

    if (v && v->type != NGX_DEFARM_JSON_NULL) {
        if (v->type != NGX_DEFARM_JSON_STRING || v->str.len == 0
            || v->str.len > 32)
        {
            return ngx_defarm_local_invalid(r, "\"namespace\" must be a "
                                               "namespace name");
        }

        lr->params[1] = v->str;
    }

    rc = ngx_defarm_local_strategy(r, ctx, &lr->params[2]);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    v = ngx_defarm_json_get(ctx->body, "dry_run");
    lr->params[3] = ngx_defarm_false;

    if (v && v->type != NGX_DEFARM_JSON_NULL) {
        if (v->type != NGX_DEFARM_JSON_BOOL) {
            return ngx_defarm_local_invalid(r, "\"dry_run\" must be true or "
                                               "false");
        }

        lr->params[3] = v->boolean ? ngx_defarm_true : ngx_defarm_false;
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_local_organize_stmt,
                               lr->params, ngx_defarm_local_answer, lr);
}


/* GET /api/items/mapping/:local_id */


static ngx_int_t
ngx_defarm_local_mapping(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_str_t               *lid;
    ngx_defarm_local_req_t  *lr;

    lid = ngx_defarm_param(ctx, "local_id");

    if (lid == NULL || !ngx_defarm_is_uuid(lid)) {
        return ngx_defarm_local_invalid(r, "Invalid local_id format");
    }

    lr = ngx_defarm_local_req(r, ctx);
    if (lr == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    lr->params[1] = *lid;

    return ngx_defarm_pg_query(r, &ngx_defarm_local_mapping_stmt,
                               lr->params, ngx_defarm_local_answer, lr);
}


/* (outcome, JSON): ok, or not_found (404), not_active / not_merged (409) */

static ngx_int_t
ngx_defarm_local_answer(ngx_http_request_t *r, void *data, PGresult *res)
{
    ngx_str_t  outcome, json;

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) > 1) {
        return ngx_defarm_pg_sql_error(r, res);
    }

    if (PQntuples(res) == 0) {
        return ngx_defarm_error(r, NGX_HTTP_NOT_FOUND,
                                NGX_DEFARM_ERR_NOT_FOUND,
                                "Local item not found");
    }

    (void) ngx_defarm_pg_text(res, 0, 0, &outcome);

    if (outcome.len == 9 && ngx_strncmp(outcome.data, "not_found", 9) == 0)
    {
        return ngx_defarm_error(r, NGX_HTTP_NOT_FOUND,
                                NGX_DEFARM_ERR_NOT_FOUND,
                                "Local item not found");
    }

    if (outcome.len == 10
        && ngx_strncmp(outcome.data, "not_active", 10) == 0)
    {
        return ngx_defarm_error(r, NGX_HTTP_CONFLICT, NGX_DEFARM_ERR_CONFLICT,
                                "Every item of a merge must be an Active "
                                "local item (not merged already)");
    }

    if (outcome.len == 10
        && ngx_strncmp(outcome.data, "not_merged", 10) == 0)
    {
        return ngx_defarm_error(r, NGX_HTTP_CONFLICT, NGX_DEFARM_ERR_CONFLICT,
                                "The item is not merged into another");
    }

    (void) ngx_defarm_pg_text(res, 0, 1, &json);

    if (json.data == NULL) {
        return ngx_defarm_error(r, NGX_HTTP_NOT_FOUND,
                                NGX_DEFARM_ERR_NOT_FOUND,
                                "Local item not found");
    }

    return ngx_defarm_send_text(r, r->method == NGX_HTTP_POST
                                   && ngx_strcmp(ngx_defarm_get_ctx(r)
                                                 ->route->pattern.data,
                                                 "/api/items/local") == 0
                                   ? NGX_HTTP_CREATED : NGX_HTTP_OK,
                                &json);
}
