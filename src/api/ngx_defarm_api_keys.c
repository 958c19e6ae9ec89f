
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "api/ngx_defarm_api.h"
#include "pg/ngx_defarm_pg.h"
#include "auth/ngx_defarm_auth.h"
#include "auth/ngx_defarm_apikey.h"
#include "cache/ngx_defarm_cache.h"


/*
 * /api/api-keys: a user manages their keys with their JWT (a key cannot
 * manage keys).  Every statement is scoped to the caller, so another
 * user's key id is the same 404 as an unknown one.  A change drops the
 * key's cached record, so it applies from the key's next request.
 */


#define NGX_DEFARM_KEYS_MAX_LIST    64
#define NGX_DEFARM_KEYS_MAX_CUSTOM  32


/* the columns ngx_defarm_keys_metadata() renders, in its order */

#define NGX_DEFARM_KEYS_COLUMNS                                              \
    "k.id, k.name, k.key_prefix, k.organization_type, k.organization_id, "   \
    "k.perm_read, k.perm_write, k.perm_admin, "                              \
    "array_to_string(ARRAY(SELECT c.key || '=' || c.value "                  \
                          "FROM jsonb_each_text(k.perm_custom) c "           \
                          "ORDER BY c.key), ' '), "                          \
    "k.is_active, floor(extract(epoch FROM k.last_used_at))::bigint, "       \
    "k.usage_count, k.rate_limit_per_hour, "                                 \
    "array_to_string(k.allowed_endpoints, ' '), "                            \
    "array_to_string(k.allowed_ips, ' '), k.notes, "                         \
    "floor(extract(epoch FROM k.created_at))::bigint, "                      \
    "floor(extract(epoch FROM k.expires_at))::bigint"


#define NGX_DEFARM_KEYS_NCOLUMNS    18


/* a request's fields, as statement parameters (data NULL: SQL NULL) */

typedef enum {
    NGX_DEFARM_KEYS_NAME = 0,
    NGX_DEFARM_KEYS_ORG_TYPE,
    NGX_DEFARM_KEYS_ORG_ID,
    NGX_DEFARM_KEYS_READ,
    NGX_DEFARM_KEYS_WRITE,
    NGX_DEFARM_KEYS_ADMIN,
    NGX_DEFARM_KEYS_CUSTOM,
    NGX_DEFARM_KEYS_ENDPOINTS,
    NGX_DEFARM_KEYS_IPS,
    NGX_DEFARM_KEYS_RATE,
    NGX_DEFARM_KEYS_EXPIRES,
    NGX_DEFARM_KEYS_NOTES,
    NGX_DEFARM_KEYS_ACTIVE,
    NGX_DEFARM_KEYS_NFIELDS
} ngx_defarm_keys_field_e;


typedef struct {
    ngx_defarm_ctx_t          *ctx;
    ngx_str_t                  params[NGX_DEFARM_KEYS_NFIELDS + 4];
    ngx_str_t                  key;           /* a new key, shown once */
    ngx_str_t                  cache_key;     /* "apikey:<hash>" */
    ngx_uint_t                 status;
} ngx_defarm_keys_req_t;


static ngx_int_t ngx_defarm_keys_created(ngx_http_request_t *r,
    void *data, PGresult *res);
static ngx_int_t ngx_defarm_keys_listed(ngx_http_request_t *r,
    void *data, PGresult *res);
static ngx_int_t ngx_defarm_keys_one(ngx_http_request_t *r, void *data,
    PGresult *res);
static ngx_int_t ngx_defarm_keys_updated(ngx_http_request_t *r,
    void *data, PGresult *res);
static ngx_int_t ngx_defarm_keys_changed(ngx_http_request_t *r,
    void *data, PGresult *res);
static ngx_int_t ngx_defarm_keys_counted(ngx_http_request_t *r,
    void *data, PGresult *res);


static ngx_int_t ngx_defarm_keys_create(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_keys_list(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_keys_get(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_keys_update(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_keys_usage(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);


ngx_defarm_route_t  ngx_defarm_keys_routes[] = {

    { NGX_HTTP_GET, ngx_string("/api/api-keys"),
      ngx_defarm_keys_list, NGX_DEFARM_ROUTE_JWT },

    { NGX_HTTP_POST, ngx_string("/api/api-keys"),
      ngx_defarm_keys_create, NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_JWT },

    { NGX_HTTP_GET, ngx_string("/api/api-keys/:key_id"),
      ngx_defarm_keys_get, NGX_DEFARM_ROUTE_JWT },

    { NGX_HTTP_PATCH, ngx_string("/api/api-keys/:key_id"),
      ngx_defarm_keys_update, NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_JWT },

    { NGX_HTTP_DELETE, ngx_string("/api/api-keys/:key_id"),
      ngx_defarm_keys_get, NGX_DEFARM_ROUTE_JWT },

    { NGX_HTTP_POST, ngx_string("/api/api-keys/:key_id/revoke"),
      ngx_defarm_keys_get, NGX_DEFARM_ROUTE_JWT },

    { NGX_HTTP_GET, ngx_string("/api/api-keys/:key_id/usage"),
      ngx_defarm_keys_usage, NGX_DEFARM_ROUTE_JWT },

    ngx_defarm_route_null
};


/*
 * Creation checks the owner in the same statement: a user who is gone or
 * not Active gets no key, nor does a non-admin get an admin key.
 */

static ngx_defarm_pg_stmt_t  ngx_defarm_keys_insert = {
    "defarm_keys_insert",
    "WITH u AS (SELECT id, status, is_admin FROM users WHERE id = $1), "
    "k AS ("
        "INSERT INTO api_keys (user_id, key_hash, key_prefix, name, "
            "organization_type, organization_id, perm_read, perm_write, "
            "perm_admin, perm_custom, allowed_endpoints, allowed_ips, "
            "rate_limit_per_hour, expires_at, notes) "
        "SELECT u.id, $2, $3, $4, $5, $6::uuid, coalesce($7::bool, true), "
               "coalesce($8::bool, false), coalesce($9::bool, false), "
               "coalesce($10::jsonb, '{}'), coalesce($11::text[], '{}'), "
               "coalesce($12::text[], '{}'), coalesce($13::int, 100), "
               "now() + $14::int * interval '1 day', $15 "
        "FROM u WHERE u.status = 'Active' "
          "AND (u.is_admin OR $9::bool IS NOT TRUE) "
        "RETURNING *) "
    "SELECT u.status, u.is_admin, " NGX_DEFARM_KEYS_COLUMNS " "
    "FROM u LEFT JOIN k ON true",
    15, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_keys_select = {
    "defarm_keys_select",
    "SELECT " NGX_DEFARM_KEYS_COLUMNS " FROM api_keys k "
    "WHERE k.user_id = $1 AND ($2::bool OR k.is_active) "
    "ORDER BY k.created_at DESC, k.id",
    2, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_keys_select_one = {
    "defarm_keys_select_one",
    "SELECT " NGX_DEFARM_KEYS_COLUMNS " FROM api_keys k "
    "WHERE k.id = $2::uuid AND k.user_id = $1",
    2, 0
};

/*
 * An absent field keeps its value ($13: whether "notes" was given, since a
 * null clears them).  The first columns tell a missing key
 * (exists false) from a refused admin permission (no row updated).
 */

static ngx_defarm_pg_stmt_t  ngx_defarm_keys_patch = {
    "defarm_keys_patch",
    "WITH u AS (SELECT is_admin FROM users WHERE id = $1), "
    "k AS ("
        "UPDATE api_keys k SET "
            "name = coalesce($3, k.name), "
            "perm_read = coalesce($4::bool, k.perm_read), "
            "perm_write = coalesce($5::bool, k.perm_write), "
            "perm_admin = coalesce($6::bool, k.perm_admin), "
            "perm_custom = coalesce($7::jsonb, k.perm_custom), "
            "allowed_endpoints = coalesce($8::text[], k.allowed_endpoints), "
            "allowed_ips = coalesce($9::text[], k.allowed_ips), "
            "rate_limit_per_hour = coalesce($10::int, "
                                           "k.rate_limit_per_hour), "
            "notes = CASE WHEN $13::bool THEN $11 ELSE k.notes END, "
            "is_active = coalesce($12::bool, k.is_active) "
        "FROM u WHERE k.id = $2::uuid AND k.user_id = $1 "
          "AND (u.is_admin OR $6::bool IS NOT TRUE) "
        "RETURNING k.*) "
    "SELECT EXISTS (SELECT 1 FROM api_keys "
                   "WHERE id = $2::uuid AND user_id = $1), "
           "k.key_hash, " NGX_DEFARM_KEYS_COLUMNS " "
    "FROM (SELECT 1) one LEFT JOIN k ON true",
    13, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_keys_revoke_stmt = {
    "defarm_keys_revoke",
    "UPDATE api_keys k SET is_active = false "
    "WHERE k.id = $2::uuid AND k.user_id = $1 "
    "RETURNING true, k.key_hash, " NGX_DEFARM_KEYS_COLUMNS,
    2, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_keys_delete_stmt = {
    "defarm_keys_delete",
    "DELETE FROM api_keys WHERE id = $2::uuid AND user_id = $1 "
    "RETURNING true, key_hash",
    2, 0
};

/* one row per UTC day of the window, oldest first, zeros included */

static ngx_defarm_pg_stmt_t  ngx_defarm_keys_usage_stmt = {
    "defarm_keys_usage",
    "WITH k AS (SELECT id, last_used_at FROM api_keys "
               "WHERE id = $2::uuid AND user_id = $1), "
    "today AS (SELECT (now() AT TIME ZONE 'UTC')::date AS d) "
    "SELECT to_char(s.day, 'YYYY-MM-DD'), coalesce(u.requests, 0), "
           "coalesce(u.errors, 0), coalesce(u.total_ms, 0), "
           "floor(extract(epoch FROM k.last_used_at))::bigint "
    "FROM k CROSS JOIN today "
    "CROSS JOIN LATERAL (SELECT (today.d - g)::date AS day "
                        "FROM generate_series(0, $3::int - 1) g) s "
    "LEFT JOIN api_key_usage_daily u "
           "ON u.key_id = k.id AND u.day = s.day "
    "ORDER BY s.day",
    3, 0
};


static const char  *ngx_defarm_keys_org_types[] = {
    "Admin", "Producer", "Association", "Enterprise", "Government",
    "External", NULL
};


/* validation: each returns NGX_DECLINED to go on, or the 400 it sent */


static ngx_int_t
ngx_defarm_keys_invalid(ngx_http_request_t *r, const char *name,
    const char *what)
{
    return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                            NGX_DEFARM_ERR_VALIDATION, "\"%s\" %s", name,
                            what);
}


static ngx_uint_t
ngx_defarm_keys_bytes(ngx_str_t *s, u_char lo)
{
    size_t  i;

    for (i = 0; i < s->len; i++) {
        if (s->data[i] < lo || s->data[i] == 0x7f) {
            return 0;
        }
    }

    return 1;
}


static ngx_int_t
ngx_defarm_keys_bool(ngx_http_request_t *r, ngx_defarm_json_t *v,
    const char *name, ngx_str_t *out)
{
    if (v == NULL) {
        return NGX_DECLINED;
    }

    if (v->type != NGX_DEFARM_JSON_BOOL) {
        return ngx_defarm_keys_invalid(r, name, "must be true or false");
    }

    *out = v->boolean ? ngx_defarm_true : ngx_defarm_false;

    return NGX_DECLINED;
}


static ngx_int_t
ngx_defarm_keys_number(ngx_http_request_t *r, ngx_defarm_json_t *v,
    const char *name, int64_t min, int64_t max, ngx_str_t *out)
{
    int64_t  n;

    if (v == NULL || v->type == NGX_DEFARM_JSON_NULL) {
        return NGX_DECLINED;
    }

    if (ngx_defarm_json_int(v, &n) != NGX_OK || n < min || n > max) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "\"%s\" must be an integer from %L to %L",
                                name, min, max);
    }

    out->data = ngx_pnalloc(r->pool, NGX_INT64_LEN);
    if (out->data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    out->len = ngx_sprintf(out->data, "%L", n) - out->data;

    return NGX_DECLINED;
}


static ngx_int_t
ngx_defarm_keys_string(ngx_http_request_t *r, ngx_defarm_json_t *v,
    const char *name, size_t max, ngx_str_t *out)
{
    if (v == NULL || v->type == NGX_DEFARM_JSON_NULL) {
        return NGX_DECLINED;
    }

    if (v->type != NGX_DEFARM_JSON_STRING) {
        return ngx_defarm_keys_invalid(r, name, "must be a string");
    }

    if (v->str.len > max) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "\"%s\" must be at most %uz bytes", name,
                                max);
    }

    *out = v->str;

    return NGX_DECLINED;
}


/*
 * A list of paths or addresses, as a PostgreSQL array literal.  Entries
 * have no spaces or control characters (they are stored space-joined in
 * the auth record).
 */

static ngx_int_t
ngx_defarm_keys_list_param(ngx_http_request_t *r, ngx_defarm_json_t *v,
    const char *name, ngx_uint_t ips, ngx_str_t *out)
{
    ngx_cidr_t          cidr;
    ngx_defarm_json_t  *e;

    if (v == NULL) {
        return NGX_DECLINED;
    }

    if (v->type != NGX_DEFARM_JSON_ARRAY) {
        return ngx_defarm_keys_invalid(r, name, "must be an array");
    }

    if (v->count > NGX_DEFARM_KEYS_MAX_LIST) {
        return ngx_defarm_keys_invalid(r, name,
                                       "may hold at most 64 entries");
    }

    for (e = v->child; e; e = e->next) {

        if (e->type != NGX_DEFARM_JSON_STRING || e->str.len == 0
            || e->str.len > 256 || !ngx_defarm_keys_bytes(&e->str, 0x21))
        {
            return ngx_defarm_keys_invalid(r, name,
                                           "entries must be strings of 1 to "
                                           "256 bytes without spaces");
        }

        if (ips) {
            if (ngx_ptocidr(&e->str, &cidr) != NGX_OK) {
                return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                        NGX_DEFARM_ERR_VALIDATION,
                                        "\"%s\": \"%V\" is not an IP "
                                        "address or a CIDR block (without "
                                        "host bits)", name, &e->str);
            }

        } else if (e->str.data[0] != '/') {
            return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                    NGX_DEFARM_ERR_VALIDATION,
                                    "\"%s\": \"%V\" must start with \"/\"",
                                    name, &e->str);
        }

    }

    if (ngx_defarm_pg_text_array(r->pool, v, out) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_DECLINED;
}


/* {"read"?, "write"?, "admin"?, "custom"?: {name: bool}} */

static ngx_int_t
ngx_defarm_keys_permissions(ngx_http_request_t *r, ngx_defarm_json_t *v,
    ngx_str_t *params)
{
    u_char             *p, ch;
    size_t              i;
    ngx_int_t           rc;
    ngx_defarm_json_t  *c, *e;

    if (v == NULL || v->type == NGX_DEFARM_JSON_NULL) {
        return NGX_DECLINED;
    }

    if (v->type != NGX_DEFARM_JSON_OBJECT) {
        return ngx_defarm_keys_invalid(r, "permissions",
                                       "must be an object");
    }

    rc = ngx_defarm_keys_bool(r, ngx_defarm_json_get(v, "read"),
                              "permissions.read",
                              &params[NGX_DEFARM_KEYS_READ]);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    rc = ngx_defarm_keys_bool(r, ngx_defarm_json_get(v, "write"),
                              "permissions.write",
                              &params[NGX_DEFARM_KEYS_WRITE]);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    rc = ngx_defarm_keys_bool(r, ngx_defarm_json_get(v, "admin"),
                              "permissions.admin",
                              &params[NGX_DEFARM_KEYS_ADMIN]);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    c = ngx_defarm_json_get(v, "custom");

    if (c == NULL || c->type == NGX_DEFARM_JSON_NULL) {
        return NGX_DECLINED;
    }

    if (c->type != NGX_DEFARM_JSON_OBJECT
        || c->count > NGX_DEFARM_KEYS_MAX_CUSTOM)
    {
        return ngx_defarm_keys_invalid(r, "permissions.custom",
                                       "must be an object of at most 32 "
                                       "names");
    }

    /* names of [A-Za-z0-9_.:-]: the JSON needs no escaping */

    p = ngx_pnalloc(r->pool, 2 + c->count * (64 + 10));
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    params[NGX_DEFARM_KEYS_CUSTOM].data = p;
    *p++ = '{';

    for (e = c->child; e; e = e->next) {

        if (e->key.len == 0 || e->key.len > 64) {
            goto invalid;
        }

        for (i = 0; i < e->key.len; i++) {
            ch = e->key.data[i];

            if (!((ch >= '0' && ch <= '9')
                  || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z')
                  || ch == '_' || ch == '.' || ch == ':' || ch == '-'))
            {
                goto invalid;
            }
        }

        if (e->type != NGX_DEFARM_JSON_BOOL) {
            goto invalid;
        }

        p = ngx_sprintf(p, "%s\"%V\":%s", e == c->child ? "" : ",",
                        &e->key, e->boolean ? "true" : "false");
    }

    *p++ = '}';
    params[NGX_DEFARM_KEYS_CUSTOM].len = p
                                         - params[NGX_DEFARM_KEYS_CUSTOM].data;

    return NGX_DECLINED;

invalid:

    return ngx_defarm_keys_invalid(r, "permissions.custom",
                                   "names must be 1 to 64 characters of "
                                   "A-Z a-z 0-9 _ . : -, each true or "
                                   "false");
}


/* the fields of a creation (create 1) or an update (create 0) */

static ngx_int_t
ngx_defarm_keys_fields(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx,
    ngx_uint_t create, ngx_str_t *params)
{
    ngx_int_t           rc;
    ngx_uint_t          i;
    ngx_str_t          *s;
    ngx_defarm_json_t  *body, *v;

    body = ctx->body;

    if (body == NULL || body->type != NGX_DEFARM_JSON_OBJECT) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "The body must be a JSON object");
    }

    s = &params[NGX_DEFARM_KEYS_NAME];
    v = ngx_defarm_json_get(body, "name");

    if (create && (v == NULL || v->type == NGX_DEFARM_JSON_NULL)) {
        return ngx_defarm_keys_invalid(r, "name", "is required");
    }

    rc = ngx_defarm_keys_string(r, v, "name", 100, s);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    if (s->data && (s->len == 0 || !ngx_defarm_keys_bytes(s, 0x20))) {
        return ngx_defarm_keys_invalid(r, "name",
                                       "must be 1 to 100 bytes without "
                                       "control characters");
    }

    if (create) {
        s = &params[NGX_DEFARM_KEYS_ORG_TYPE];
        v = ngx_defarm_json_get(body, "organization_type");

        if (v == NULL || v->type != NGX_DEFARM_JSON_STRING) {
            goto org_type;
        }

        for (i = 0; ngx_defarm_keys_org_types[i]; i++) {
            if (v->str.len == ngx_strlen(ngx_defarm_keys_org_types[i])
                && ngx_strncmp(v->str.data, ngx_defarm_keys_org_types[i],
                               v->str.len) == 0)
            {
                *s = v->str;
                break;
            }
        }

        if (s->data == NULL) {
            goto org_type;
        }

        s = &params[NGX_DEFARM_KEYS_ORG_ID];
        rc = ngx_defarm_keys_string(r,
                                    ngx_defarm_json_get(body,
                                                        "organization_id"),
                                    "organization_id", 36, s);
        if (rc != NGX_DECLINED) {
            return rc;
        }

        if (s->data && !ngx_defarm_is_uuid(s)) {
            return ngx_defarm_keys_invalid(r, "organization_id",
                                           "must be a UUID");
        }

        rc = ngx_defarm_keys_number(r,
                                    ngx_defarm_json_get(body,
                                                        "expires_in_days"),
                                    "expires_in_days", 1, 3650,
                                    &params[NGX_DEFARM_KEYS_EXPIRES]);
        if (rc != NGX_DECLINED) {
            return rc;
        }

    } else {
        v = ngx_defarm_json_get(body, "is_active");

        rc = ngx_defarm_keys_bool(r, v, "is_active",
                                  &params[NGX_DEFARM_KEYS_ACTIVE]);
        if (rc != NGX_DECLINED) {
            return rc;
        }
    }

    rc = ngx_defarm_keys_permissions(r, ngx_defarm_json_get(body,
                                                            "permissions"),
                                     params);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    rc = ngx_defarm_keys_list_param(r, ngx_defarm_json_get(body,
                                                   "allowed_endpoints"),
                                    "allowed_endpoints", 0,
                                    &params[NGX_DEFARM_KEYS_ENDPOINTS]);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    rc = ngx_defarm_keys_list_param(r, ngx_defarm_json_get(body,
                                                           "allowed_ips"),
                                    "allowed_ips", 1,
                                    &params[NGX_DEFARM_KEYS_IPS]);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    rc = ngx_defarm_keys_number(r, ngx_defarm_json_get(body,
                                                   "rate_limit_per_hour"),
                                "rate_limit_per_hour", 1, 1000000,
                                &params[NGX_DEFARM_KEYS_RATE]);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    return ngx_defarm_keys_string(r, ngx_defarm_json_get(body, "notes"),
                                  "notes", 1000,
                                  &params[NGX_DEFARM_KEYS_NOTES]);

org_type:

    return ngx_defarm_keys_invalid(r, "organization_type",
                                   "must be one of Admin, Producer, "
                                   "Association, Enterprise, Government, "
                                   "External");
}


static ngx_defarm_keys_req_t *
ngx_defarm_keys_req(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_defarm_keys_req_t  *kr;

    kr = ngx_pcalloc(r->pool, sizeof(ngx_defarm_keys_req_t));
    if (kr == NULL) {
        return NULL;
    }

    kr->ctx = ctx;

    return kr;
}


/* rendering */


static void
ngx_defarm_keys_time(ngx_defarm_json_writer_t *w, PGresult *res, int row,
    int col)
{
    ngx_str_t  s;

    if (ngx_defarm_pg_text(res, row, col, &s) != NGX_OK) {
        ngx_defarm_jw_null(w);
        return;
    }

    ngx_defarm_jw_time(w, (time_t) ngx_atotm(s.data, s.len));
}


static void
ngx_defarm_keys_strings(ngx_defarm_json_writer_t *w, ngx_str_t *list)
{
    u_char     *p, *last, *sp;
    ngx_str_t   e;

    ngx_defarm_jw_array_open(w);

    p = list->data;
    last = list->data + list->len;

    while (p < last) {
        sp = ngx_strlchr(p, last, ' ');
        if (sp == NULL) {
            sp = last;
        }

        e.data = p;
        e.len = sp - p;
        ngx_defarm_jw_str(w, &e);

        p = sp + 1;
    }

    ngx_defarm_jw_array_close(w);
}


/* "name=true other=false" into {"name": true, "other": false} */

static void
ngx_defarm_keys_custom(ngx_defarm_json_writer_t *w, ngx_str_t *list)
{
    u_char     *p, *last, *sp, *eq;
    ngx_str_t   name;

    ngx_defarm_jw_map_open(w);

    p = list->data;
    last = list->data + list->len;

    while (p < last) {
        sp = ngx_strlchr(p, last, ' ');
        if (sp == NULL) {
            sp = last;
        }

        eq = ngx_strlchr(p, sp, '=');

        if (eq) {
            name.data = p;
            name.len = eq - p;
            ngx_defarm_jw_str(w, &name);
            ngx_defarm_jw_bool(w, sp - eq == 5);        /* "=true" */
        }

        p = sp + 1;
    }

    ngx_defarm_jw_map_close(w);
}


/* ApiKeyMetadata, from NGX_DEFARM_KEYS_COLUMNS starting at column "c" */

static void
ngx_defarm_keys_metadata(ngx_defarm_json_writer_t *w, PGresult *res,
    int row, int c)
{
    ngx_str_t   s;
    ngx_uint_t  i;

    static const char  *perms[] = { "read", "write", "admin" };

    ngx_defarm_jw_map_open(w);

    ngx_defarm_jw_key(w, "id");
    (void) ngx_defarm_pg_text(res, row, c, &s);
    ngx_defarm_jw_str(w, &s);

    ngx_defarm_jw_key(w, "name");
    (void) ngx_defarm_pg_text(res, row, c + 1, &s);
    ngx_defarm_jw_str(w, &s);

    ngx_defarm_jw_key(w, "key_prefix");
    (void) ngx_defarm_pg_text(res, row, c + 2, &s);
    ngx_defarm_jw_str(w, &s);

    ngx_defarm_jw_key(w, "organization_type");
    (void) ngx_defarm_pg_text(res, row, c + 3, &s);
    ngx_defarm_jw_str(w, &s);

    ngx_defarm_jw_key(w, "organization_id");
    (void) ngx_defarm_pg_text(res, row, c + 4, &s);
    ngx_defarm_jw_str_or_null(w, &s);

    ngx_defarm_jw_key(w, "permissions");
    ngx_defarm_jw_map_open(w);

    for (i = 0; i < 3; i++) {
        ngx_defarm_jw_key(w, perms[i]);
        ngx_defarm_jw_bool(w, PQgetvalue(res, row, c + 5 + i)[0] == 't');
    }

    ngx_defarm_jw_key(w, "custom");
    (void) ngx_defarm_pg_text(res, row, c + 8, &s);
    ngx_defarm_keys_custom(w, &s);
    ngx_defarm_jw_map_close(w);

    ngx_defarm_jw_key(w, "is_active");
    ngx_defarm_jw_bool(w, PQgetvalue(res, row, c + 9)[0] == 't');

    ngx_defarm_jw_key(w, "last_used_at");
    ngx_defarm_keys_time(w, res, row, c + 10);

    ngx_defarm_jw_key(w, "usage_count");
    (void) ngx_defarm_pg_text(res, row, c + 11, &s);
    ngx_defarm_jw_int(w, ngx_atoof(s.data, s.len));

    ngx_defarm_jw_key(w, "rate_limit_per_hour");
    (void) ngx_defarm_pg_text(res, row, c + 12, &s);
    ngx_defarm_jw_int(w, ngx_atoi(s.data, s.len));

    ngx_defarm_jw_key(w, "allowed_endpoints");
    (void) ngx_defarm_pg_text(res, row, c + 13, &s);
    ngx_defarm_keys_strings(w, &s);

    ngx_defarm_jw_key(w, "allowed_ips");
    (void) ngx_defarm_pg_text(res, row, c + 14, &s);
    ngx_defarm_keys_strings(w, &s);

    ngx_defarm_jw_key(w, "notes");
    (void) ngx_defarm_pg_text(res, row, c + 15, &s);
    ngx_defarm_jw_str_or_null(w, &s);

    ngx_defarm_jw_key(w, "created_at");
    ngx_defarm_keys_time(w, res, row, c + 16);

    ngx_defarm_jw_key(w, "expires_at");
    ngx_defarm_keys_time(w, res, row, c + 17);

    ngx_defarm_jw_map_close(w);
}


static ngx_int_t
ngx_defarm_keys_send_metadata(ngx_http_request_t *r, PGresult *res, int c)
{
    ngx_defarm_json_writer_t  *w;

    w = ngx_defarm_json_writer(r);
    if (w == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_defarm_keys_metadata(w, res, 0, c);

    return ngx_defarm_send(r, NGX_HTTP_OK, w);
}


static ngx_int_t
ngx_defarm_keys_not_found(ngx_http_request_t *r)
{
    return ngx_defarm_error(r, NGX_HTTP_NOT_FOUND, NGX_DEFARM_ERR_NOT_FOUND,
                            "API key not found");
}


/* params[0] = the caller, params[1] = the key id of the path */

static ngx_int_t
ngx_defarm_keys_target(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx,
    ngx_defarm_keys_req_t **krp)
{
    ngx_str_t              *id;
    ngx_defarm_keys_req_t  *kr;

    id = ngx_defarm_param(ctx, "key_id");

    if (id == NULL || !ngx_defarm_is_uuid(id)) {
        return ngx_defarm_keys_not_found(r);
    }

    kr = ngx_defarm_keys_req(r, ctx);
    if (kr == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    kr->params[0] = ctx->user_id;
    kr->params[1] = *id;
    *krp = kr;

    return NGX_DECLINED;
}


/* POST /api/api-keys */


static ngx_int_t
ngx_defarm_keys_create(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_int_t               rc;
    ngx_str_t               fields[NGX_DEFARM_KEYS_NFIELDS], hash, *p;
    ngx_defarm_keys_req_t  *kr;

    ngx_memzero(fields, sizeof(fields));

    rc = ngx_defarm_keys_fields(r, ctx, 1, fields);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    kr = ngx_defarm_keys_req(r, ctx);
    if (kr == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_defarm_apikey_generate(r, &kr->key, &hash) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = kr->params;

    p[0] = ctx->user_id;
    p[1] = hash;
    p[2].data = kr->key.data;
    p[2].len = NGX_DEFARM_APIKEY_PREFIX;
    p[3] = fields[NGX_DEFARM_KEYS_NAME];
    p[4] = fields[NGX_DEFARM_KEYS_ORG_TYPE];
    p[5] = fields[NGX_DEFARM_KEYS_ORG_ID];
    p[6] = fields[NGX_DEFARM_KEYS_READ];
    p[7] = fields[NGX_DEFARM_KEYS_WRITE];
    p[8] = fields[NGX_DEFARM_KEYS_ADMIN];
    p[9] = fields[NGX_DEFARM_KEYS_CUSTOM];
    p[10] = fields[NGX_DEFARM_KEYS_ENDPOINTS];
    p[11] = fields[NGX_DEFARM_KEYS_IPS];
    p[12] = fields[NGX_DEFARM_KEYS_RATE];
    p[13] = fields[NGX_DEFARM_KEYS_EXPIRES];
    p[14] = fields[NGX_DEFARM_KEYS_NOTES];

    return ngx_defarm_pg_query(r, &ngx_defarm_keys_insert, p,
                               ngx_defarm_keys_created, kr);
}


static ngx_int_t
ngx_defarm_keys_created(ngx_http_request_t *r, void *data, PGresult *res)
{
    ngx_defarm_keys_req_t  *kr = data;

    ngx_int_t                  rc;
    ngx_defarm_json_writer_t  *w;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        return ngx_defarm_pg_sql_error(r, res);
    }

    if (PQntuples(res) == 0) {
        return ngx_defarm_auth_fail(r, NGX_HTTP_UNAUTHORIZED, NULL,
                                    "The token's user no longer exists");
    }

    rc = ngx_defarm_auth_status(r, PQgetvalue(res, 0, 0));
    if (rc != NGX_DECLINED) {
        return rc;
    }

    if (PQgetisnull(res, 0, 2)) {
        /* the owner is Active: only the admin permission was refused */
        return ngx_defarm_auth_fail(r, NGX_HTTP_FORBIDDEN, "admin_required",
                                    "Only administrators can create keys "
                                    "with the admin permission");
    }

    w = ngx_defarm_json_writer(r);
    if (w == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_defarm_jw_map_open(w);
    ngx_defarm_jw_key(w, "api_key");
    ngx_defarm_jw_str(w, &kr->key);
    ngx_defarm_jw_key(w, "metadata");
    ngx_defarm_keys_metadata(w, res, 0, 2);
    ngx_defarm_jw_key(w, "warning");
    ngx_defarm_jw_cstr(w, "Save this API key securely. You won't be able "
                          "to see it again.");
    ngx_defarm_jw_map_close(w);

    return ngx_defarm_send(r, NGX_HTTP_CREATED, w);
}


/* GET /api/api-keys?include_inactive=true */


static ngx_int_t
ngx_defarm_keys_list(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_str_t               arg;
    ngx_defarm_keys_req_t  *kr;

    kr = ngx_defarm_keys_req(r, ctx);
    if (kr == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    kr->params[0] = ctx->user_id;
    kr->params[1] = ngx_defarm_false;

    if (ngx_http_arg(r, (u_char *) "include_inactive", 16, &arg) == NGX_OK) {

        if (arg.len == 4 && ngx_strncmp(arg.data, "true", 4) == 0) {
            kr->params[1] = ngx_defarm_true;

        } else if (!(arg.len == 5 && ngx_strncmp(arg.data, "false", 5) == 0))
        {
            return ngx_defarm_keys_invalid(r, "include_inactive",
                                           "must be true or false");
        }
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_keys_select, kr->params,
                               ngx_defarm_keys_listed, kr);
}


static ngx_int_t
ngx_defarm_keys_listed(ngx_http_request_t *r, void *data, PGresult *res)
{
    int                        i, n;
    ngx_defarm_json_writer_t  *w;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        return ngx_defarm_pg_sql_error(r, res);
    }

    w = ngx_defarm_json_writer(r);
    if (w == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    n = PQntuples(res);

    ngx_defarm_jw_array_open(w);

    for (i = 0; i < n; i++) {
        ngx_defarm_jw_map_open(w);
        ngx_defarm_jw_key(w, "metadata");
        ngx_defarm_keys_metadata(w, res, i, 0);
        ngx_defarm_jw_map_close(w);
    }

    ngx_defarm_jw_array_close(w);

    return ngx_defarm_send(r, NGX_HTTP_OK, w);
}


/* GET and DELETE /api/api-keys/:key_id, POST /api/api-keys/:key_id/revoke */


static ngx_int_t
ngx_defarm_keys_get(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_int_t               rc;
    ngx_defarm_keys_req_t  *kr;

    rc = ngx_defarm_keys_target(r, ctx, &kr);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    /* DELETE and POST .../revoke change the key: its record goes after */

    if (r->method == NGX_HTTP_DELETE) {
        return ngx_defarm_pg_query(r, &ngx_defarm_keys_delete_stmt,
                                   kr->params, ngx_defarm_keys_changed, kr);
    }

    if (r->method == NGX_HTTP_POST) {
        return ngx_defarm_pg_query(r, &ngx_defarm_keys_revoke_stmt,
                                   kr->params, ngx_defarm_keys_changed, kr);
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_keys_select_one, kr->params,
                               ngx_defarm_keys_one, kr);
}


static ngx_int_t
ngx_defarm_keys_one(ngx_http_request_t *r, void *data, PGresult *res)
{
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        return ngx_defarm_pg_sql_error(r, res);
    }

    if (PQntuples(res) == 0) {
        return ngx_defarm_keys_not_found(r);
    }

    return ngx_defarm_keys_send_metadata(r, res, 0);
}


/* PATCH /api/api-keys/:key_id */


static ngx_int_t
ngx_defarm_keys_update(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_int_t               rc;
    ngx_str_t               fields[NGX_DEFARM_KEYS_NFIELDS], *p;
    ngx_defarm_keys_req_t  *kr;

    rc = ngx_defarm_keys_target(r, ctx, &kr);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    ngx_memzero(fields, sizeof(fields));

    rc = ngx_defarm_keys_fields(r, ctx, 0, fields);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    p = kr->params;

    p[2] = fields[NGX_DEFARM_KEYS_NAME];
    p[3] = fields[NGX_DEFARM_KEYS_READ];
    p[4] = fields[NGX_DEFARM_KEYS_WRITE];
    p[5] = fields[NGX_DEFARM_KEYS_ADMIN];
    p[6] = fields[NGX_DEFARM_KEYS_CUSTOM];
    p[7] = fields[NGX_DEFARM_KEYS_ENDPOINTS];
    p[8] = fields[NGX_DEFARM_KEYS_IPS];
    p[9] = fields[NGX_DEFARM_KEYS_RATE];
    p[10] = fields[NGX_DEFARM_KEYS_NOTES];
    p[11] = fields[NGX_DEFARM_KEYS_ACTIVE];

    /* "notes": null clears them; absent, they stay */

    p[12] = ngx_defarm_json_get(ctx->body, "notes") ? ngx_defarm_true
                                                     : ngx_defarm_false;

    return ngx_defarm_pg_query(r, &ngx_defarm_keys_patch, p,
                               ngx_defarm_keys_updated, kr);
}


static ngx_int_t
ngx_defarm_keys_updated(ngx_http_request_t *r, void *data, PGresult *res)
{
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        return ngx_defarm_pg_sql_error(r, res);
    }

    if (PQntuples(res) != 1 || PQgetvalue(res, 0, 0)[0] != 't') {
        return ngx_defarm_keys_not_found(r);
    }

    if (PQgetisnull(res, 0, 1)) {
        return ngx_defarm_auth_fail(r, NGX_HTTP_FORBIDDEN, "admin_required",
                                    "Only administrators can give a key "
                                    "the admin permission");
    }

    return ngx_defarm_keys_changed(r, data, res);
}


/*
 * A statement changed or deleted the key (column 0 true, column 1 its
 * hash): its cached auth record goes before the answer, so the key's next
 * request reads the change.
 */

static ngx_int_t
ngx_defarm_keys_changed(ngx_http_request_t *r, void *data, PGresult *res)
{
    ngx_defarm_keys_req_t  *kr = data;

    ngx_str_t  hash;

    static ngx_str_t  none = ngx_null_string;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        return ngx_defarm_pg_sql_error(r, res);
    }

    if (PQntuples(res) == 0) {
        return ngx_defarm_keys_not_found(r);
    }

    (void) ngx_defarm_pg_text(res, 0, 1, &hash);

    if (ngx_defarm_apikey_cache_key(r, &hash, &kr->cache_key) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_defarm_cache_forget(r, &kr->cache_key);

    if (r->method == NGX_HTTP_DELETE) {
        r->header_only = 1;
        return ngx_defarm_send_chain(r, NGX_HTTP_NO_CONTENT, &none, NULL, 0);
    }

    return ngx_defarm_keys_send_metadata(r, res, 2);
}


/* GET /api/api-keys/:key_id/usage?days=N */


static ngx_int_t
ngx_defarm_keys_usage(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_int_t               rc, days;
    ngx_str_t               arg;
    ngx_defarm_keys_req_t  *kr;

    rc = ngx_defarm_keys_target(r, ctx, &kr);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    ngx_str_set(&kr->params[2], "7");

    if (ngx_http_arg(r, (u_char *) "days", 4, &arg) == NGX_OK) {
        days = ngx_atoi(arg.data, arg.len);

        if (days < 1 || days > 365) {
            return ngx_defarm_keys_invalid(r, "days",
                                           "must be an integer from 1 to "
                                           "365");
        }

        kr->params[2] = arg;
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_keys_usage_stmt, kr->params,
                               ngx_defarm_keys_counted, kr);
}


static ngx_int_t
ngx_defarm_keys_counted(ngx_http_request_t *r, void *data, PGresult *res)
{
    int                        i, n;
    off_t                      requests, errors, ms, total, failed, sum;
    ngx_str_t                  s;
    ngx_defarm_json_writer_t  *w;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        return ngx_defarm_pg_sql_error(r, res);
    }

    n = PQntuples(res);

    if (n == 0) {
        return ngx_defarm_keys_not_found(r);
    }

    w = ngx_defarm_json_writer(r);
    if (w == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    total = 0;
    failed = 0;
    sum = 0;

    ngx_defarm_jw_map_open(w);
    ngx_defarm_jw_key(w, "daily_usage");
    ngx_defarm_jw_array_open(w);

    for (i = 0; i < n; i++) {
        requests = ngx_atoof((u_char *) PQgetvalue(res, i, 1),
                             PQgetlength(res, i, 1));
        errors = ngx_atoof((u_char *) PQgetvalue(res, i, 2),
                           PQgetlength(res, i, 2));
        ms = ngx_atoof((u_char *) PQgetvalue(res, i, 3),
                       PQgetlength(res, i, 3));

        total += requests;
        failed += errors;
        sum += ms;

        (void) ngx_defarm_pg_text(res, i, 0, &s);

        ngx_defarm_jw_map_open(w);
        ngx_defarm_jw_key(w, "date");
        ngx_defarm_jw_str(w, &s);
        ngx_defarm_jw_key(w, "requests");
        ngx_defarm_jw_int(w, requests);
        ngx_defarm_jw_key(w, "errors");
        ngx_defarm_jw_int(w, errors);
        ngx_defarm_jw_map_close(w);
    }

    ngx_defarm_jw_array_close(w);

    ngx_defarm_jw_key(w, "total_requests");
    ngx_defarm_jw_int(w, total);
    ngx_defarm_jw_key(w, "successful_requests");
    ngx_defarm_jw_int(w, total - failed);
    ngx_defarm_jw_key(w, "failed_requests");
    ngx_defarm_jw_int(w, failed);
    ngx_defarm_jw_key(w, "avg_response_time_ms");
    ngx_defarm_jw_ms(w, total ? (uint64_t) sum * 1000 / total : 0);
    ngx_defarm_jw_key(w, "last_used_at");
    ngx_defarm_keys_time(w, res, 0, 4);

    ngx_defarm_jw_map_close(w);

    return ngx_defarm_send(r, NGX_HTTP_OK, w);
}
