
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "api/ngx_defarm_api.h"
#include "pg/ngx_defarm_pg.h"
#include "auth/ngx_defarm_auth.h"
#include "cache/ngx_defarm_cache.h"
#include "items/ngx_defarm_items.h"


/*
 * /api/items: supply-chain items, their identifiers and enriched data.
 *
 * Every route needs a principal (a JWT, or a key with read or write
 * permission by method); an item is its owner's, readable too by the
 * members of a circuit it was pushed into (until it is pulled), and
 * another user's item is the same 404 as an unknown one.  PostgreSQL
 * renders an item's JSON when the item changes and stores it (items.doc,
 * sql/013): a read
 * returns it as it is.  The writes that must not interleave are single
 * functions (sql/004_items.sql).  One item's JSON is cached under
 * "item:<dfid>:json" with its owner, and every write to the item
 * invalidates it (here, and on the other nodes through Redis).
 */


#define NGX_DEFARM_ITEMS_LIMIT      50
#define NGX_DEFARM_ITEMS_MAX_LIMIT  100
#define NGX_DEFARM_ITEMS_MAX_BATCH  100
#define NGX_DEFARM_ITEMS_MAX_BATCH_IDS  1000


typedef struct {
    ngx_defarm_ctx_t          *ctx;
    ngx_str_t                  params[8];
    ngx_str_t                  dfid;
    ngx_str_t                  cache_key;     /* GET */
    ngx_str_t                  second;        /* a merge's secondary */
    ngx_str_t                  json;
    ngx_uint_t                 deleted;       /* DELETE: a message */
    ngx_uint_t                 visible;       /* GET: owner or admin */
} ngx_defarm_items_req_t;


static ngx_int_t ngx_defarm_items_share(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_items_shared(ngx_http_request_t *r,
    void *data, PGresult *res);
static ngx_int_t ngx_defarm_items_shared_with(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_items_shared_to(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_items_batch(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_items_batch_done(ngx_http_request_t *r,
    void *data, PGresult *res);

static ngx_int_t ngx_defarm_items_create(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_items_list(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_items_stats(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_items_get(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_items_enrich(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_items_delete(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_items_by_identifier(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_items_merge(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_items_split(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_items_outcome(ngx_http_request_t *r,
    ngx_str_t *outcome);

static ngx_int_t ngx_defarm_items_created(ngx_http_request_t *r,
    void *data, PGresult *res);
static ngx_int_t ngx_defarm_items_cached(ngx_http_request_t *r,
    void *data, ngx_int_t rc, ngx_str_t *value);
static ngx_int_t ngx_defarm_items_found(ngx_http_request_t *r, void *data,
    PGresult *res);
static ngx_int_t ngx_defarm_items_stored(ngx_http_request_t *r,
    void *data, ngx_int_t rc, ngx_str_t *value);
static ngx_int_t ngx_defarm_items_changed(ngx_http_request_t *r,
    void *data, PGresult *res);


ngx_defarm_route_t  ngx_defarm_items_routes[] = {

    { NGX_HTTP_POST, ngx_string("/api/items"),
      ngx_defarm_items_create,
      NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/items"),
      ngx_defarm_items_list, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/items/batch"),
      ngx_defarm_items_batch,
      NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/items/search"),
      ngx_defarm_items_list, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/items/stats"),
      ngx_defarm_items_stats, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/items/:dfid"),
      ngx_defarm_items_get, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_PUT, ngx_string("/api/items/:dfid"),
      ngx_defarm_items_enrich,
      NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_DELETE, ngx_string("/api/items/:dfid"),
      ngx_defarm_items_delete, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_PUT, ngx_string("/api/items/:dfid/deprecate"),
      ngx_defarm_items_delete, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/items/identifier/:key/:value"),
      ngx_defarm_items_by_identifier, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/items/:dfid/merge"),
      ngx_defarm_items_merge,
      NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/items/:dfid/split"),
      ngx_defarm_items_split,
      NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/items/:dfid/share"),
      ngx_defarm_items_share,
      NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/items/:dfid/shared-with/:user_id"),
      ngx_defarm_items_shared_with, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/items/shared-to/:user_id"),
      ngx_defarm_items_shared_to, NGX_DEFARM_ROUTE_PRINCIPAL },

    ngx_defarm_route_null
};


static ngx_str_t  ngx_defarm_items_replayed = ngx_string("true");

static ngx_defarm_pg_stmt_t  ngx_defarm_items_create_stmt = {
    "defarm_items_create",
    "SELECT dfid, created, item::text, array_to_string(conflicts, ', '), "
           "pending_id, replayed "
    "FROM defarm_item_create_once($1, $2::jsonb, $3::jsonb, $4::uuid, $5)",
    5, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_items_get_stmt = {
    "defarm_items_get",
    "SELECT owner_id, doc, "
           "owner_id = $2 OR defarm_item_readable(dfid, $2) "
    "FROM items WHERE dfid = $1",
    2, 0
};

/*
 * One page, newest first: the stored documents joined as jsonb prints an
 * array (", " between elements), so a list is byte for byte what
 * jsonb_agg() of the same items printed.
 */

static ngx_defarm_pg_stmt_t  ngx_defarm_items_list_stmt = {
    "defarm_items_list",
    "SELECT '[' || coalesce(string_agg(p.doc, ', ' "
                                      "ORDER BY p.created_at DESC, p.dfid), "
                           "'') || ']' "
    "FROM (SELECT i.dfid, i.created_at, i.doc FROM items i "
          "WHERE i.owner_id = $1 "
            "AND ($2::text IS NULL OR lower(i.status) = $2) "
            "AND ($3::text IS NULL OR EXISTS ("
                "SELECT 1 FROM item_identifiers ii "
                "WHERE ii.dfid = i.dfid AND ii.key = $3 "
                  "AND ($4::text IS NULL OR ii.value = $4))) "
          "ORDER BY i.created_at DESC, i.dfid "
          "LIMIT $5::int OFFSET $6::int) p",
    6, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_items_stats_stmt = {
    "defarm_items_stats",
    "SELECT json_build_object("
        "'total_items', count(*), "
        "'active_items', count(*) FILTER (WHERE status = 'Active'), "
        "'merged_items', count(*) FILTER (WHERE status = 'Merged' "
                                         "OR status LIKE 'MergedInto%'), "
        "'split_items', count(*) FILTER (WHERE status = 'Split'), "
        "'archived_items', count(*) FILTER (WHERE status = 'Deprecated'), "
        "'average_confidence', coalesce(avg(confidence_score), 0))::text "
    "FROM items WHERE owner_id = $1",
    1, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_items_enrich_stmt = {
    "defarm_items_enrich",
    "SELECT outcome, item::text "
    "FROM defarm_item_enrich($1, $2, $3::jsonb, $4::jsonb)",
    4, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_items_deprecate_stmt = {
    "defarm_items_deprecate",
    "SELECT outcome, item::text FROM defarm_item_deprecate($1, $2)",
    2, 0
};


static ngx_defarm_pg_stmt_t  ngx_defarm_items_merge_stmt = {
    "defarm_items_merge",
    "SELECT outcome, item::text FROM defarm_item_merge($1, $2, $3)",
    3, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_items_split_stmt = {
    "defarm_items_split",
    "SELECT outcome, json_build_object('original_item', original, "
                                      "'new_item', created)::text "
    "FROM defarm_item_split($1, $2, $3::jsonb)",
    3, 0
};


static ngx_defarm_pg_stmt_t  ngx_defarm_items_batch_stmt = {
    "defarm_items_batch",
    "SELECT answer::text, array_to_string(enriched, ' ') "
    "FROM defarm_item_create_batch($1, $2::jsonb)",
    2, 0
};


static ngx_defarm_pg_stmt_t  ngx_defarm_items_share_stmt = {
    "defarm_items_share",
    "SELECT outcome, share::text "
    "FROM defarm_item_share($1, $2, $3, $4::text[])",
    4, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_items_shared_with_stmt = {
    "defarm_items_shared_with",
    "SELECT json_build_object('is_shared', s.share_id IS NOT NULL, "
           "'share_id', s.share_id, "
           "'shared_at', floor(extract(epoch FROM s.shared_at))::bigint)"
           "::text "
    "FROM items i LEFT JOIN item_shares s "
         "ON s.dfid = i.dfid AND s.recipient_id = $3 "
    "WHERE i.dfid = $2 AND i.owner_id = $1",
    3, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_items_shared_to_stmt = {
    "defarm_items_shared_to",
    "SELECT '[' || coalesce(string_agg(i.doc, ', ' "
                                      "ORDER BY s.shared_at DESC, s.dfid), "
                           "'') || ']' "
    "FROM item_shares s JOIN items i ON i.dfid = s.dfid "
    "WHERE s.recipient_id = $1",
    1, 0
};


static ngx_str_t  ngx_defarm_items_deleted =
    ngx_string("{\"message\":\"Item deprecated successfully\"}");


/* "item:<dfid>:json": the cached JSON of an item, its own family */

static ngx_int_t
ngx_defarm_item_cache_key(ngx_http_request_t *r, ngx_str_t *dfid,
    ngx_str_t *key)
{
    key->len = sizeof("item::json") - 1 + dfid->len;
    key->data = ngx_pnalloc(r->pool, key->len);
    if (key->data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(key->data, "item:%V:json", dfid);

    return NGX_OK;
}


/* an item changed: its cached JSON goes, here and on the other nodes */

ngx_int_t
ngx_defarm_item_forget(ngx_http_request_t *r, ngx_str_t *dfid)
{
    ngx_str_t  key;

    if (ngx_defarm_item_cache_key(r, dfid, &key) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_defarm_cache_forget(r, &key);

    return NGX_OK;
}


static ngx_defarm_items_req_t *
ngx_defarm_items_req(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_defarm_items_req_t  *ir;

    ir = ngx_pcalloc(r->pool, sizeof(ngx_defarm_items_req_t));
    if (ir == NULL) {
        return NULL;
    }

    ir->ctx = ctx;
    ir->params[0] = ctx->user_id;

    return ir;
}


/* the :dfid of the path, checked (400) before anything else */

static ngx_int_t
ngx_defarm_items_target(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx,
    ngx_defarm_items_req_t **irp)
{
    ngx_str_t               *dfid;
    ngx_defarm_items_req_t  *ir;

    dfid = ngx_defarm_param(ctx, "dfid");

    if (dfid == NULL || !ngx_defarm_dfid_valid(dfid)) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "Invalid DFID: expected "
                                "DFID-YYYYMMDD-NNNNNN-CHK with a matching "
                                "checksum");
    }

    ir = ngx_defarm_items_req(r, ctx);
    if (ir == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ir->dfid = *dfid;
    ir->params[1] = *dfid;

    *irp = ir;

    return NGX_DECLINED;
}


static ngx_int_t
ngx_defarm_items_not_found(ngx_http_request_t *r)
{
    return ngx_defarm_error(r, NGX_HTTP_NOT_FOUND, NGX_DEFARM_ERR_NOT_FOUND,
                            "Item not found");
}


/*
 * A create's or an enrich's fields, checked and rendered as JSON text
 * parameters: NGX_OK, NGX_DECLINED with the reason in *err, NGX_ERROR.
 */

static ngx_int_t
ngx_defarm_items_check(ngx_http_request_t *r, ngx_defarm_json_t *body,
    ngx_uint_t create, ngx_str_t *p, ngx_str_t *err)
{
    ngx_int_t           rc;
    ngx_defarm_json_t  *v;

    /* p[0]: identifiers, p[1]: enriched data, p[2]: source entry */

    ngx_str_null(&p[0]);
    ngx_str_null(&p[1]);
    ngx_str_null(&p[2]);

    if (body == NULL || body->type != NGX_DEFARM_JSON_OBJECT) {
        return ngx_defarm_invalid(r, err, "The body must be a JSON object");
    }

    v = ngx_defarm_json_get(body, "identifiers");

    if (create && (v == NULL || v->type != NGX_DEFARM_JSON_ARRAY
                   || v->count == 0))
    {
        return ngx_defarm_invalid(r, err, "\"identifiers\" must be a "
                                  "non-empty array");
    }

    if (v && v->type != NGX_DEFARM_JSON_NULL) {
        rc = ngx_defarm_identifiers(r, v, &p[0], err);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    v = ngx_defarm_json_get(body, "enriched_data");

    if (v && v->type != NGX_DEFARM_JSON_NULL) {
        rc = ngx_defarm_enriched_data(r, v, &p[1], err);
        if (rc != NGX_OK) {
            return rc;
        }

    } else if (create) {
        ngx_str_set(&p[1], "{}");
    }

    if (!create) {
        if (p[0].data == NULL && p[1].data == NULL) {
            return ngx_defarm_invalid(r, err, "Nothing to change: give "
                                      "\"enriched_data\" or "
                                      "\"identifiers\"");
        }

        return NGX_OK;
    }

    v = ngx_defarm_json_get(body, "source_entry");

    if (v == NULL || v->type != NGX_DEFARM_JSON_STRING
        || !ngx_defarm_is_uuid(&v->str))
    {
        return ngx_defarm_invalid(r, err, "Invalid source entry UUID");
    }

    p[2] = v->str;

    return NGX_OK;
}


/* a check's outcome: NGX_DECLINED to go on, or the answer sent */

static ngx_int_t
ngx_defarm_items_checked(ngx_http_request_t *r, ngx_int_t rc, ngx_str_t *err)
{
    if (rc == NGX_OK) {
        return NGX_DECLINED;
    }

    if (rc == NGX_DECLINED) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION, "%V", err);
    }

    return NGX_HTTP_INTERNAL_SERVER_ERROR;
}


/* POST /api/items */


static ngx_int_t
ngx_defarm_items_create(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_int_t                rc;
    ngx_str_t                err;
    ngx_defarm_items_req_t  *ir;

    ir = ngx_defarm_items_req(r, ctx);
    if (ir == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_defarm_items_check(r, ctx->body, 1, &ir->params[1], &err);

    rc = ngx_defarm_items_checked(r, rc, &err);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    /* a retry with the same key is answered as the first (sql/029) */

    rc = ngx_defarm_idempotency_key(r, &ir->params[4], &err);

    rc = ngx_defarm_items_checked(r, rc, &err);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_items_create_stmt, ir->params,
                               ngx_defarm_items_created, ir);
}


static void
ngx_defarm_items_pending_field(ngx_http_request_t *r,
    ngx_defarm_json_writer_t *w, void *data)
{
    ngx_defarm_jw_key(w, "pending_id");
    ngx_defarm_jw_str(w, data);
}


static ngx_int_t
ngx_defarm_items_created(ngx_http_request_t *r, void *data, PGresult *res)
{
    ngx_defarm_items_req_t  *ir = data;

    ngx_str_t  conflicts;

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        return ngx_defarm_pg_sql_error(r, res);
    }

    if (PQgetvalue(res, 0, 5)[0] == 't'
        && ngx_defarm_add_header(r, "Idempotent-Replayed",
                                 &ngx_defarm_items_replayed)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_defarm_pg_text(res, 0, 3, &conflicts) == NGX_OK) {

        /* held as a pending item, for a person to resolve */

        (void) ngx_defarm_pg_text(res, 0, 4, &ir->json);

        ir->ctx->error_fields = ngx_defarm_items_pending_field;
        ir->ctx->error_data = &ir->json;

        return ngx_defarm_error(r, NGX_HTTP_CONFLICT, NGX_DEFARM_ERR_CONFLICT,
                                "The identifiers match several items: %V; "
                                "held as pending item %V", &conflicts,
                                &ir->json);
    }

    (void) ngx_defarm_pg_text(res, 0, 0, &ir->dfid);
    (void) ngx_defarm_pg_text(res, 0, 2, &ir->json);

    /* a new item is 201; one found by its identifiers and enriched, 200 */

    if (PQgetvalue(res, 0, 1)[0] == 't') {
        return ngx_defarm_send_text(r, NGX_HTTP_CREATED, &ir->json);
    }

    if (ngx_defarm_item_forget(r, &ir->dfid) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_defarm_send_text(r, NGX_HTTP_OK, &ir->json);
}


/* GET /api/items, /api/items/search */


static ngx_int_t
ngx_defarm_items_number(ngx_http_request_t *r, const char *name,
    ngx_int_t dflt, ngx_int_t min, ngx_int_t max, ngx_str_t *out)
{
    ngx_int_t  n;
    ngx_str_t  arg;

    n = dflt;

    if (ngx_http_arg(r, (u_char *) name, ngx_strlen(name), &arg) == NGX_OK) {
        n = ngx_atoi(arg.data, arg.len);

        if (n == NGX_ERROR || n < min || n > max) {
            return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                    NGX_DEFARM_ERR_VALIDATION,
                                    "\"%s\" must be an integer from %i "
                                    "to %i", name, min, max);
        }
    }

    out->data = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (out->data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    out->len = ngx_sprintf(out->data, "%i", n) - out->data;

    return NGX_DECLINED;
}


/* a query argument, %-decoded, or data NULL */

static ngx_int_t
ngx_defarm_items_arg(ngx_http_request_t *r, const char *name, ngx_str_t *out)
{
    u_char     *dst, *src;
    ngx_str_t   arg;

    ngx_str_null(out);

    if (ngx_http_arg(r, (u_char *) name, ngx_strlen(name), &arg) != NGX_OK
        || arg.len == 0)
    {
        return NGX_OK;
    }

    out->data = ngx_pnalloc(r->pool, arg.len);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    src = arg.data;
    dst = out->data;
    ngx_unescape_uri(&dst, &src, arg.len, NGX_UNESCAPE_URI);
    out->len = dst - out->data;

    return NGX_OK;
}


static ngx_int_t
ngx_defarm_items_list(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    size_t                   i;
    ngx_int_t                rc;
    ngx_str_t               *p;
    ngx_defarm_items_req_t  *ir;

    static const char  *statuses[] = {
        "active", "deprecated", "merged", "split", NULL
    };

    ir = ngx_defarm_items_req(r, ctx);
    if (ir == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ir->params;

    if (ngx_defarm_items_arg(r, "status", &p[1]) != NGX_OK
        || ngx_defarm_items_arg(r, "identifier_key", &p[2]) != NGX_OK
        || ngx_defarm_items_arg(r, "identifier_value", &p[3]) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (p[1].data) {
        ngx_strlow(p[1].data, p[1].data, p[1].len);

        for (i = 0; statuses[i]; i++) {
            if (p[1].len == ngx_strlen(statuses[i])
                && ngx_strncmp(p[1].data, statuses[i], p[1].len) == 0)
            {
                break;
            }
        }

        if (statuses[i] == NULL) {
            return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                    NGX_DEFARM_ERR_VALIDATION,
                                    "\"status\" must be active, deprecated, "
                                    "merged or split");
        }
    }

    if (p[3].data && p[2].data == NULL) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "\"identifier_value\" needs "
                                "\"identifier_key\"");
    }

    rc = ngx_defarm_items_number(r, "limit", NGX_DEFARM_ITEMS_LIMIT, 1,
                                 NGX_DEFARM_ITEMS_MAX_LIMIT, &p[4]);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    rc = ngx_defarm_items_number(r, "offset", 0, 0, 1000000, &p[5]);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_items_list_stmt, p,
                               ngx_defarm_api_json, "Item");
}


/* GET /api/items/identifier/:key/:value: the list, filtered */

static ngx_int_t
ngx_defarm_items_by_identifier(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx)
{
    ngx_str_t               *p;
    ngx_defarm_items_req_t  *ir;

    ir = ngx_defarm_items_req(r, ctx);
    if (ir == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ir->params;

    ngx_str_null(&p[1]);
    p[2] = *ngx_defarm_param(ctx, "key");
    p[3] = *ngx_defarm_param(ctx, "value");
    ngx_str_set(&p[4], "100");
    ngx_str_set(&p[5], "0");

    return ngx_defarm_pg_query(r, &ngx_defarm_items_list_stmt, p,
                               ngx_defarm_api_json, "Item");
}


/* GET /api/items/stats */

static ngx_int_t
ngx_defarm_items_stats(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_defarm_items_req_t  *ir;

    ir = ngx_defarm_items_req(r, ctx);
    if (ir == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_items_stats_stmt, ir->params,
                               ngx_defarm_api_json, "Item");
}


/*
 * GET /api/items/:dfid: "owner\njson" in the cache, PostgreSQL on a miss;
 * another user's item goes to PostgreSQL too, which says whether the
 * caller is an admin (then it is shown) or not (404).
 */

static ngx_int_t
ngx_defarm_items_get(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_int_t                rc;
    ngx_defarm_loc_conf_t   *lcf;
    ngx_defarm_items_req_t  *ir;

    rc = ngx_defarm_items_target(r, ctx, &ir);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_defarm_module);

    /* defarm_item_cache off: an empty key, which the cache goes without */

    if (lcf->item_cache
        && ngx_defarm_item_cache_key(r, &ir->dfid, &ir->cache_key) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_defarm_cache_run(r, NGX_DEFARM_CACHE_GET, &ir->cache_key,
                                NULL, 0, ngx_defarm_items_cached, ir);
}


static ngx_int_t
ngx_defarm_items_cached(ngx_http_request_t *r, void *data, ngx_int_t rc,
    ngx_str_t *value)
{
    ngx_defarm_items_req_t  *ir = data;

    u_char     *nl;
    ngx_str_t   owner, json;

    if (rc == NGX_OK) {
        nl = ngx_strlchr(value->data, value->data + value->len, '\n');

        if (nl) {
            owner.data = value->data;
            owner.len = nl - value->data;
            json.data = nl + 1;
            json.len = value->data + value->len - json.data;

            /* another user's item: an admin may read it (PostgreSQL) */

            if (owner.len == ir->ctx->user_id.len
                && ngx_strncmp(owner.data, ir->ctx->user_id.data, owner.len)
                   == 0)
            {
                return ngx_defarm_send_text(r, NGX_HTTP_OK, &json);
            }
        }
    }

    ir->params[0] = ir->dfid;
    ir->params[1] = ir->ctx->user_id;

    return ngx_defarm_pg_query_read(r, &ngx_defarm_items_get_stmt,
                                    ir->params, ngx_defarm_items_found, ir);
}


static ngx_int_t
ngx_defarm_items_found(ngx_http_request_t *r, void *data, PGresult *res)
{
    ngx_defarm_items_req_t  *ir = data;

    ngx_str_t  owner, record;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        return ngx_defarm_pg_sql_error(r, res);
    }

    if (PQntuples(res) == 0) {
        return ngx_defarm_items_not_found(r);
    }

    (void) ngx_defarm_pg_text(res, 0, 0, &owner);
    (void) ngx_defarm_pg_text(res, 0, 1, &ir->json);

    ir->visible = (PQgetvalue(res, 0, 2)[0] == 't');

    record.len = owner.len + 1 + ir->json.len;
    record.data = ngx_pnalloc(r->pool, record.len);
    if (record.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_sprintf(record.data, "%V\n%V", &owner, &ir->json);

    return ngx_defarm_cache_run(r, NGX_DEFARM_CACHE_SET_IF, &ir->cache_key,
                                &record, 0, ngx_defarm_items_stored, ir);
}


static ngx_int_t
ngx_defarm_items_stored(ngx_http_request_t *r, void *data, ngx_int_t rc,
    ngx_str_t *value)
{
    ngx_defarm_items_req_t  *ir = data;

    if (!ir->visible) {
        return ngx_defarm_items_not_found(r);
    }

    return ngx_defarm_send_text(r, NGX_HTTP_OK, &ir->json);
}


/* PUT /api/items/:dfid */


static ngx_int_t
ngx_defarm_items_enrich(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_int_t                rc;
    ngx_str_t                err;
    ngx_defarm_items_req_t  *ir;

    rc = ngx_defarm_items_target(r, ctx, &ir);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    rc = ngx_defarm_items_check(r, ctx->body, 0, &ir->params[2], &err);

    rc = ngx_defarm_items_checked(r, rc, &err);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_items_enrich_stmt, ir->params,
                               ngx_defarm_items_changed, ir);
}


/* DELETE /api/items/:dfid, PUT /api/items/:dfid/deprecate */


static ngx_int_t
ngx_defarm_items_delete(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_int_t                rc;
    ngx_defarm_items_req_t  *ir;

    rc = ngx_defarm_items_target(r, ctx, &ir);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    /* DELETE answers a message; PUT .../deprecate, the item */

    ir->deleted = (r->method == NGX_HTTP_DELETE);

    return ngx_defarm_pg_query(r, &ngx_defarm_items_deprecate_stmt,
                               ir->params, ngx_defarm_items_changed, ir);
}


/* a write (enrich, deprecate, merge, split) answered (outcome, JSON) */

static ngx_int_t
ngx_defarm_items_changed(ngx_http_request_t *r, void *data, PGresult *res)
{
    ngx_defarm_items_req_t  *ir = data;

    ngx_int_t  rc;
    ngx_str_t  outcome;

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        return ngx_defarm_pg_sql_error(r, res);
    }

    (void) ngx_defarm_pg_text(res, 0, 0, &outcome);

    rc = ngx_defarm_items_outcome(r, &outcome);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    (void) ngx_defarm_pg_text(res, 0, 1, &ir->json);

    /* the changed items' cached JSON goes (a merge changes two) */

    if (ngx_defarm_item_forget(r, &ir->dfid) != NGX_OK
        || (ir->second.len && ngx_defarm_item_forget(r, &ir->second)
                              != NGX_OK))
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_defarm_send_text(r, NGX_HTTP_OK,
                                ir->deleted ? &ngx_defarm_items_deleted
                                            : &ir->json);
}


/* POST /api/items/:dfid/merge, the body a JSON string: the secondary */


static ngx_int_t
ngx_defarm_items_merge(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_int_t                rc;
    ngx_str_t               *second;
    ngx_defarm_items_req_t  *ir;

    rc = ngx_defarm_items_target(r, ctx, &ir);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    if (ctx->body == NULL || ctx->body->type != NGX_DEFARM_JSON_STRING
        || !ngx_defarm_dfid_valid(&ctx->body->str))
    {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "The body must be the secondary item's "
                                "DFID, as a JSON string");
    }

    second = &ctx->body->str;

    if (second->len == ir->dfid.len
        && ngx_strncmp(second->data, ir->dfid.data, second->len) == 0)
    {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "An item cannot be merged into itself");
    }

    ir->params[2] = *second;
    ir->second = *second;

    return ngx_defarm_pg_query(r, &ngx_defarm_items_merge_stmt, ir->params,
                               ngx_defarm_items_changed, ir);
}


/* "ok", or why not: not_found (404), not_active (409), missing:<n> */

static ngx_int_t
ngx_defarm_items_outcome(ngx_http_request_t *r, ngx_str_t *outcome)
{
    if (outcome->len == 2 && ngx_strncmp(outcome->data, "ok", 2) == 0) {
        return NGX_DECLINED;
    }

    if (outcome->len == 10
        && ngx_strncmp(outcome->data, "not_active", 10) == 0)
    {
        return ngx_defarm_error(r, NGX_HTTP_CONFLICT, NGX_DEFARM_ERR_CONFLICT,
                                "The item is not Active (merged, split or "
                                "deprecated)");
    }

    if (outcome->len == 12
        && ngx_strncmp(outcome->data, "no_recipient", 12) == 0)
    {
        return ngx_defarm_error(r, NGX_HTTP_NOT_FOUND,
                                NGX_DEFARM_ERR_NOT_FOUND,
                                "Recipient not found");
    }

    if (outcome->len > 8 && ngx_strncmp(outcome->data, "missing:", 8) == 0) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "Identifier %*s is not on the item",
                                outcome->len - 8, outcome->data + 8);
    }

    return ngx_defarm_items_not_found(r);
}


/* POST /api/items/:dfid/split {"identifiers_for_new_item": [...]} */


static ngx_int_t
ngx_defarm_items_split(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_int_t                rc;
    ngx_str_t                err;
    ngx_defarm_json_t       *v;
    ngx_defarm_items_req_t  *ir;

    rc = ngx_defarm_items_target(r, ctx, &ir);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    v = ngx_defarm_json_get(ctx->body, "identifiers_for_new_item");

    if (v == NULL || v->type != NGX_DEFARM_JSON_ARRAY || v->count == 0) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "\"identifiers_for_new_item\" must be a "
                                "non-empty array");
    }

    rc = ngx_defarm_identifiers(r, v, &ir->params[2], &err);

    rc = ngx_defarm_items_checked(r, rc, &err);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_items_split_stmt, ir->params,
                               ngx_defarm_items_changed, ir);
}


/*
 * POST /api/items/batch {"items": [CreateItem]}: each item checked here;
 * the whole batch, valid items and the reasons of invalid ones, goes to
 * one function (sql/006_items_batch.sql) as one JSON array, assembled
 * from the checked parts.  Always 200, with a result per item.
 */


static ngx_int_t
ngx_defarm_items_batch(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    u_char                  *p;
    size_t                   len;
    ngx_int_t                rc;
    ngx_str_t                err, *parts;
    ngx_uint_t               i, n;
    ngx_defarm_json_t       *list, *item, *v;
    ngx_defarm_items_req_t  *ir;

    list = ngx_defarm_json_get(ctx->body, "items");

    if (list == NULL || list->type != NGX_DEFARM_JSON_ARRAY
        || list->count == 0 || list->count > NGX_DEFARM_ITEMS_MAX_BATCH)
    {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "\"items\" must be an array of 1 to %d "
                                "items", NGX_DEFARM_ITEMS_MAX_BATCH);
    }

    ir = ngx_defarm_items_req(r, ctx);
    parts = ngx_pcalloc(r->pool, 4 * list->count * sizeof(ngx_str_t));

    if (ir == NULL || parts == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* each identifier is a lock in PostgreSQL: a batch holds a bounded */

    for (n = 0, item = list->child; item; item = item->next) {
        v = ngx_defarm_json_get(item, "identifiers");
        n += (v && v->type == NGX_DEFARM_JSON_ARRAY) ? v->count : 0;
    }

    if (n > NGX_DEFARM_ITEMS_MAX_BATCH_IDS) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "A batch may hold at most %d identifiers",
                                NGX_DEFARM_ITEMS_MAX_BATCH_IDS);
    }

    /* parts[4n .. 4n+2]: the fields; parts[4n+3]: the reason, escaped */

    len = 2;

    for (n = 0, item = list->child; item; item = item->next, n++) {

        rc = ngx_defarm_items_check(r, item, 1, &parts[4 * n], &err);

        if (rc == NGX_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (rc == NGX_DECLINED) {
            parts[4 * n + 3].len = err.len
                                   + ngx_escape_json(NULL, err.data, err.len);
            parts[4 * n + 3].data = ngx_pnalloc(r->pool,
                                                parts[4 * n + 3].len);
            if (parts[4 * n + 3].data == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            (void) ngx_escape_json(parts[4 * n + 3].data, err.data, err.len);
            len += sizeof("{\"error\":\"\"},") + parts[4 * n + 3].len;

        } else {
            len += sizeof("{\"identifiers\":,\"enriched_data\":,"
                          "\"source_entry\":\"\"},")
                   + parts[4 * n].len + parts[4 * n + 1].len
                   + parts[4 * n + 2].len;
        }
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ir->params[1].data = p;
    *p++ = '[';

    for (i = 0; i < n; i++) {
        if (i) {
            *p++ = ',';
        }

        if (parts[4 * i + 3].data) {
            p = ngx_sprintf(p, "{\"error\":\"%V\"}", &parts[4 * i + 3]);

        } else {
            p = ngx_sprintf(p, "{\"identifiers\":%V,\"enriched_data\":%V,"
                               "\"source_entry\":\"%V\"}",
                            &parts[4 * i], &parts[4 * i + 1],
                            &parts[4 * i + 2]);
        }
    }

    *p++ = ']';
    ir->params[1].len = p - ir->params[1].data;

    return ngx_defarm_pg_query(r, &ngx_defarm_items_batch_stmt, ir->params,
                               ngx_defarm_items_batch_done, ir);
}


static ngx_int_t
ngx_defarm_items_batch_done(ngx_http_request_t *r, void *data,
    PGresult *res)
{
    u_char     *p, *last, *sp;
    ngx_str_t   answer, enriched, dfid;

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        return ngx_defarm_pg_sql_error(r, res);
    }

    (void) ngx_defarm_pg_text(res, 0, 0, &answer);
    (void) ngx_defarm_pg_text(res, 0, 1, &enriched);

    /* existing items the batch enriched: their cached JSON goes */

    p = enriched.data;
    last = enriched.data + enriched.len;

    while (p < last) {
        sp = ngx_strlchr(p, last, ' ');
        if (sp == NULL) {
            sp = last;
        }

        dfid.data = p;
        dfid.len = sp - p;

        if (ngx_defarm_item_forget(r, &dfid) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        p = sp + 1;
    }

    return ngx_defarm_send_text(r, NGX_HTTP_OK, &answer);
}


/*
 * POST /api/items/:dfid/share {"recipient_user_id", "permissions"?}:
 * persisted (the original's shares were not).  Permissions are names of
 * [A-Za-z0-9_.:-].
 */


static ngx_int_t
ngx_defarm_items_share(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    size_t                   i;
    ngx_int_t                rc;
    ngx_defarm_json_t       *v, *e;
    ngx_defarm_items_req_t  *ir;

    rc = ngx_defarm_items_target(r, ctx, &ir);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    v = ngx_defarm_json_get(ctx->body, "recipient_user_id");

    if (v == NULL || v->type != NGX_DEFARM_JSON_STRING || v->str.len == 0
        || v->str.len > 128)
    {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "\"recipient_user_id\" is required");
    }

    ir->params[2] = v->str;

    v = ngx_defarm_json_get(ctx->body, "permissions");

    if (v == NULL || v->type == NGX_DEFARM_JSON_NULL) {
        ngx_str_set(&ir->params[3], "{read}");

    } else {
        if (v->type != NGX_DEFARM_JSON_ARRAY || v->count > 16) {
            goto invalid;
        }

        for (e = v->child; e; e = e->next) {
            if (e->type != NGX_DEFARM_JSON_STRING || e->str.len == 0
                || e->str.len > 32)
            {
                goto invalid;
            }

            for (i = 0; i < e->str.len; i++) {
                if (!((e->str.data[i] >= '0' && e->str.data[i] <= '9')
                      || ((e->str.data[i] | 0x20) >= 'a'
                          && (e->str.data[i] | 0x20) <= 'z')
                      || ngx_strchr("_.:-", e->str.data[i])))
                {
                    goto invalid;
                }
            }
        }

        if (ngx_defarm_pg_text_array(r->pool, v, &ir->params[3]) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_items_share_stmt, ir->params,
                               ngx_defarm_items_shared, ir);

invalid:

    return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                            NGX_DEFARM_ERR_VALIDATION,
                            "\"permissions\" must be up to 16 names of "
                            "A-Z a-z 0-9 _ . : -");
}


static ngx_int_t
ngx_defarm_items_shared(ngx_http_request_t *r, void *data, PGresult *res)
{
    ngx_int_t  rc;
    ngx_str_t  outcome, json;

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        return ngx_defarm_pg_sql_error(r, res);
    }

    (void) ngx_defarm_pg_text(res, 0, 0, &outcome);

    rc = ngx_defarm_items_outcome(r, &outcome);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    (void) ngx_defarm_pg_text(res, 0, 1, &json);

    return ngx_defarm_send_text(r, NGX_HTTP_CREATED, &json);
}


/* GET /api/items/:dfid/shared-with/:user_id: for the item's owner */

static ngx_int_t
ngx_defarm_items_shared_with(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx)
{
    ngx_int_t                rc;
    ngx_defarm_items_req_t  *ir;

    rc = ngx_defarm_items_target(r, ctx, &ir);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    ir->params[2] = *ngx_defarm_param(ctx, "user_id");

    return ngx_defarm_pg_query(r, &ngx_defarm_items_shared_with_stmt,
                               ir->params, ngx_defarm_api_json, "Item");
}


/* GET /api/items/shared-to/:user_id: only one's own */

static ngx_int_t
ngx_defarm_items_shared_to(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx)
{
    ngx_str_t               *user;
    ngx_defarm_items_req_t  *ir;

    user = ngx_defarm_param(ctx, "user_id");

    if (user->len != ctx->user_id.len
        || ngx_strncmp(user->data, ctx->user_id.data, user->len) != 0)
    {
        return ngx_defarm_error(r, NGX_HTTP_FORBIDDEN, NGX_DEFARM_ERR_AUTH,
                                "Only the recipient can list the items "
                                "shared with them");
    }

    ir = ngx_defarm_items_req(r, ctx);
    if (ir == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_items_shared_to_stmt,
                               ir->params, ngx_defarm_api_json, "Item");
}
