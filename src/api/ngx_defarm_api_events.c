
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "api/ngx_defarm_api.h"
#include "pg/ngx_defarm_pg.h"
#include "auth/ngx_defarm_auth.h"
#include "items/ngx_defarm_items.h"


/*
 * /api/events: what happens to items.  Every route needs a principal.
 * An event is its creator's; the others see it when it is Public, or
 * CircuitOnly and its item is in a circuit they are members of (an
 * unknown event and one they may not see are the same 404).  Events
 * are deduplicated by a content hash made in PostgreSQL (sql/007_events.
 * sql): creating one that exists returns it, was_deduplicated true.
 */


#define NGX_DEFARM_EVENTS_LIMIT      100
#define NGX_DEFARM_EVENTS_MAX_LIMIT  500


typedef struct {
    ngx_str_t                  params[8];
    const char                *what;         /* what a not_found is */
} ngx_defarm_events_req_t;


typedef struct {
    ngx_str_t                  name;          /* canonical */
} ngx_defarm_events_name_t;


static ngx_int_t ngx_defarm_events_create(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_events_get(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_events_list(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_events_metadata(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);

static ngx_int_t ngx_defarm_events_outcome(ngx_http_request_t *r,
    void *data, PGresult *res);


ngx_defarm_route_t  ngx_defarm_events_routes[] = {

    { NGX_HTTP_POST, ngx_string("/api/events"),
      ngx_defarm_events_create,
      NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/events/local"),
      ngx_defarm_events_create,
      NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/events/local/:local_event_id"),
      ngx_defarm_events_get, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/events/item/:dfid"),
      ngx_defarm_events_list, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/events/type/:event_type"),
      ngx_defarm_events_list, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/events/visibility/:visibility"),
      ngx_defarm_events_list, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/events/timeline"),
      ngx_defarm_events_list, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/events/public"),
      ngx_defarm_events_list, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/events/private"),
      ngx_defarm_events_list, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/events/:event_id"),
      ngx_defarm_events_get, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/events/:event_id/metadata"),
      ngx_defarm_events_metadata,
      NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    ngx_defarm_route_null
};


static ngx_defarm_pg_stmt_t  ngx_defarm_events_create_stmt = {
    "defarm_events_create",
    "SELECT outcome, event::text "
    "FROM defarm_event_create($1, $2, $3, $4, $5::jsonb)",
    5, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_events_get_stmt = {
    "defarm_events_get",
    "SELECT 'ok', defarm_event_json(e)::text FROM events e "
    "WHERE (e.event_id = $2::uuid OR e.local_event_id = $2::uuid) "
      "AND ($3::bool = (e.local_event_id IS NOT NULL)) "
      "AND (e.owner_id = $1 OR e.visibility = 'Public' "
           "OR defarm_is_admin($1) "
           "OR (e.visibility = 'CircuitOnly' "
               "AND defarm_circuit_shares(e.dfid, $1)))",
    3, 0
};

/* a page, oldest first, of what the caller may see */

static ngx_defarm_pg_stmt_t  ngx_defarm_events_list_stmt = {
    "defarm_events_list",
    "SELECT coalesce(jsonb_agg(defarm_event_json(e) "
                              "ORDER BY e.created_at, e.event_id), "
                    "'[]')::text "
    "FROM events e WHERE e.event_id IN ("
        "SELECT f.event_id "
        "FROM events f, (SELECT defarm_is_admin($1) AS admin) a "
        "WHERE (f.owner_id = $1 OR f.visibility = 'Public' OR a.admin "
               "OR (f.visibility = 'CircuitOnly' "
                   "AND defarm_circuit_shares(f.dfid, $1))) "
          "AND ($2::text IS NULL OR f.dfid = $2) "
          "AND ($3::text IS NULL OR f.event_type = $3) "
          "AND ($4::text IS NULL OR f.visibility = $4) "
          "AND ($5::bigint IS NULL OR f.created_at >= to_timestamp($5)) "
          "AND ($6::bigint IS NULL OR f.created_at <= to_timestamp($6)) "
        "ORDER BY f.created_at, f.event_id "
        "LIMIT $7::int OFFSET $8::int)",
    8, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_events_metadata_stmt = {
    "defarm_events_metadata",
    "SELECT outcome, event::text "
    "FROM defarm_event_metadata($1, $2::uuid, $3::jsonb)",
    3, 0
};


static ngx_defarm_events_name_t  ngx_defarm_event_types[] = {
    { ngx_string("Created") },
    { ngx_string("Enriched") },
    { ngx_string("Merged") },
    { ngx_string("Split") },
    { ngx_string("PushedToCircuit") },
    { ngx_string("PulledFromCircuit") },
    { ngx_string("Updated") },
    { ngx_string("StatusChanged") },
    { ngx_null_string }
};

static ngx_defarm_events_name_t  ngx_defarm_event_visibilities[] = {
    { ngx_string("Public") },
    { ngx_string("Private") },
    { ngx_string("CircuitOnly") },
    { ngx_null_string }
};


/* a name in any case, as its canonical form; data NULL: unknown */

static ngx_str_t *
ngx_defarm_events_name(ngx_defarm_events_name_t *names, ngx_str_t *s)
{
    ngx_uint_t  i;

    for (i = 0; names[i].name.len; i++) {
        if (s->len == names[i].name.len
            && ngx_strncasecmp(s->data, names[i].name.data, s->len) == 0)
        {
            return &names[i].name;
        }
    }

    return NULL;
}


static ngx_int_t
ngx_defarm_events_invalid(ngx_http_request_t *r, const char *what,
    ngx_str_t *value)
{
    return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                            NGX_DEFARM_ERR_VALIDATION, "Invalid %s: %V",
                            what, value);
}


static ngx_defarm_events_req_t *
ngx_defarm_events_req(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_defarm_events_req_t  *er;

    er = ngx_pcalloc(r->pool, sizeof(ngx_defarm_events_req_t));
    if (er == NULL) {
        return NULL;
    }

    er->params[0] = ctx->user_id;
    er->what = "Event";

    return er;
}


static ngx_int_t
ngx_defarm_events_not_found(ngx_http_request_t *r, const char *what)
{
    return ngx_defarm_error(r, NGX_HTTP_NOT_FOUND, NGX_DEFARM_ERR_NOT_FOUND,
                            "%s not found", what);
}


/* POST /api/events {dfid, event_type, visibility, metadata?}, and /local */


static ngx_int_t
ngx_defarm_events_create(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_str_t                *name, none;
    ngx_uint_t                local;
    ngx_defarm_json_t        *body, *v;
    ngx_defarm_events_req_t  *er;

    body = ctx->body;
    local = (ctx->route->pattern.len == sizeof("/api/events/local") - 1);

    if (body == NULL || body->type != NGX_DEFARM_JSON_OBJECT) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "The body must be a JSON object");
    }

    er = ngx_defarm_events_req(r, ctx);
    if (er == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_str_set(&none, "(none)");
    er->what = "Item";

    if (!local) {
        v = ngx_defarm_json_get(body, "dfid");

        if (v == NULL || v->type != NGX_DEFARM_JSON_STRING
            || !ngx_defarm_dfid_valid(&v->str))
        {
            return ngx_defarm_events_invalid(r, "DFID",
                                             v && v->type
                                                  == NGX_DEFARM_JSON_STRING
                                             ? &v->str : &none);
        }

        er->params[1] = v->str;
    }

    v = ngx_defarm_json_get(body, "event_type");
    name = NULL;

    if (v && v->type == NGX_DEFARM_JSON_STRING) {
        name = ngx_defarm_events_name(ngx_defarm_event_types, &v->str);
    }

    if (name == NULL) {
        return ngx_defarm_events_invalid(r, "event type",
                                         v && v->type
                                              == NGX_DEFARM_JSON_STRING
                                         ? &v->str : &none);
    }

    er->params[2] = *name;

    v = ngx_defarm_json_get(body, "visibility");
    name = NULL;

    if (v && v->type == NGX_DEFARM_JSON_STRING) {
        name = ngx_defarm_events_name(ngx_defarm_event_visibilities,
                                      &v->str);
    }

    if (name == NULL) {
        return ngx_defarm_events_invalid(r, "visibility",
                                         v && v->type
                                              == NGX_DEFARM_JSON_STRING
                                         ? &v->str : &none);
    }

    er->params[3] = *name;

    v = ngx_defarm_json_get(body, "metadata");

    if (v == NULL || v->type == NGX_DEFARM_JSON_NULL) {
        ngx_str_set(&er->params[4], "{}");

    } else if (v->type != NGX_DEFARM_JSON_OBJECT) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "\"metadata\" must be an object");

    } else {
        if (ngx_defarm_json_render(r, v, &er->params[4]) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_events_create_stmt,
                               er->params, ngx_defarm_events_outcome, er);
}


/* "ok" and the event, or why not */

static ngx_int_t
ngx_defarm_events_outcome(ngx_http_request_t *r, void *data, PGresult *res)
{
    ngx_defarm_events_req_t  *er = data;

    ngx_str_t  outcome, json;

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) > 1) {
        return ngx_defarm_pg_sql_error(r, res);
    }

    if (PQntuples(res) == 0) {
        return ngx_defarm_events_not_found(r, "Event");
    }

    (void) ngx_defarm_pg_text(res, 0, 0, &outcome);

    if (outcome.len == 9 && ngx_strncmp(outcome.data, "not_found", 9) == 0)
    {
        return ngx_defarm_events_not_found(r, er->what);
    }

    if (outcome.len == 9 && ngx_strncmp(outcome.data, "duplicate", 9) == 0) {
        return ngx_defarm_error(r, NGX_HTTP_CONFLICT, NGX_DEFARM_ERR_CONFLICT,
                                "With this metadata the event would equal "
                                "another one");
    }

    (void) ngx_defarm_pg_text(res, 0, 1, &json);

    return ngx_defarm_send_text(r, NGX_HTTP_OK, &json);
}


/* GET /api/events/:event_id, /api/events/local/:local_event_id */


static ngx_int_t
ngx_defarm_events_get(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_str_t                *id;
    ngx_uint_t                local;
    ngx_defarm_events_req_t  *er;

    local = 0;
    id = ngx_defarm_param(ctx, "event_id");

    if (id == NULL) {
        local = 1;
        id = ngx_defarm_param(ctx, "local_event_id");
    }

    if (id == NULL || !ngx_defarm_is_uuid(id)) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "Invalid event id: a UUID is expected");
    }

    er = ngx_defarm_events_req(r, ctx);
    if (er == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    er->params[1] = *id;
    er->params[2] = local ? ngx_defarm_true : ngx_defarm_false;


    return ngx_defarm_pg_query(r, &ngx_defarm_events_get_stmt, er->params,
                               ngx_defarm_events_outcome, er);
}


/* the lists: by item, type, visibility, time range, public, private */


static ngx_int_t
ngx_defarm_events_time(ngx_http_request_t *r, const char *name,
    ngx_str_t *out, time_t *t)
{
    ngx_str_t  arg;

    ngx_str_null(out);

    if (ngx_http_arg(r, (u_char *) name, ngx_strlen(name), &arg) != NGX_OK) {
        return NGX_DECLINED;
    }

    *t = ngx_atotm(arg.data, arg.len);

    if (*t == NGX_ERROR) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "\"%s\" must be a Unix time in seconds",
                                name);
    }

    *out = arg;

    return NGX_DECLINED;
}


static ngx_int_t
ngx_defarm_events_list(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    time_t                    from, to;
    ngx_int_t                 rc, n;
    ngx_str_t                *v, *name, *p, arg;
    ngx_defarm_events_req_t  *er;

    er = ngx_defarm_events_req(r, ctx);
    if (er == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = er->params;

    if ((v = ngx_defarm_param(ctx, "dfid")) != NULL) {
        if (!ngx_defarm_dfid_valid(v)) {
            return ngx_defarm_events_invalid(r, "DFID", v);
        }

        p[1] = *v;
    }

    if ((v = ngx_defarm_param(ctx, "event_type")) != NULL) {
        name = ngx_defarm_events_name(ngx_defarm_event_types, v);
        if (name == NULL) {
            return ngx_defarm_events_invalid(r, "event type", v);
        }

        p[2] = *name;
    }

    if ((v = ngx_defarm_param(ctx, "visibility")) != NULL) {
        name = ngx_defarm_events_name(ngx_defarm_event_visibilities, v);
        if (name == NULL) {
            return ngx_defarm_events_invalid(r, "visibility", v);
        }

        p[3] = *name;
    }

    if (ngx_strcmp(ctx->route->pattern.data, "/api/events/public") == 0) {
        p[3] = ngx_defarm_event_visibilities[0].name;

    } else if (ngx_strcmp(ctx->route->pattern.data, "/api/events/private")
               == 0)
    {
        p[3] = ngx_defarm_event_visibilities[1].name;
    }

    from = 0;
    to = 0;

    rc = ngx_defarm_events_time(r, "start_date", &p[4], &from);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    rc = ngx_defarm_events_time(r, "end_date", &p[5], &to);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    if (p[4].data && p[5].data && from > to) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "\"start_date\" is after \"end_date\"");
    }

    ngx_str_set(&p[6], "100");
    ngx_str_set(&p[7], "0");

    if (ngx_http_arg(r, (u_char *) "limit", 5, &arg) == NGX_OK) {
        n = ngx_atoi(arg.data, arg.len);

        if (n < 1 || n > NGX_DEFARM_EVENTS_MAX_LIMIT) {
            return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                    NGX_DEFARM_ERR_VALIDATION,
                                    "\"limit\" must be an integer from 1 to "
                                    "%d", NGX_DEFARM_EVENTS_MAX_LIMIT);
        }

        p[6] = arg;
    }

    if (ngx_http_arg(r, (u_char *) "offset", 6, &arg) == NGX_OK) {
        n = ngx_atoi(arg.data, arg.len);

        if (n == NGX_ERROR || n > 1000000) {
            return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                    NGX_DEFARM_ERR_VALIDATION,
                                    "\"offset\" must be an integer from 0 "
                                    "to 1000000");
        }

        p[7] = arg;
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_events_list_stmt, p,
                               ngx_defarm_api_json, "Event");
}


/* POST /api/events/:event_id/metadata, the body an object to merge */


static ngx_int_t
ngx_defarm_events_metadata(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx)
{
    ngx_str_t                *id;
    ngx_defarm_events_req_t  *er;

    id = ngx_defarm_param(ctx, "event_id");

    if (id == NULL || !ngx_defarm_is_uuid(id)) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "Invalid event id: a UUID is expected");
    }

    if (ctx->body == NULL || ctx->body->type != NGX_DEFARM_JSON_OBJECT) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "The body must be a JSON object");
    }

    er = ngx_defarm_events_req(r, ctx);
    if (er == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    er->params[1] = *id;

    if (ngx_defarm_json_render(r, ctx->body, &er->params[2]) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_events_metadata_stmt,
                               er->params, ngx_defarm_events_outcome, er);
}
