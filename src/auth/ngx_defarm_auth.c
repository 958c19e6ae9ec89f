
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "auth/ngx_defarm_auth.h"
#include "auth/ngx_defarm_apikey.h"
#include "auth/ngx_defarm_jwt.h"
#include "pg/ngx_defarm_pg.h"
#include "cache/ngx_defarm_cache.h"
#include "ngx_defarm_response.h"


/*
 * The one place that turns credentials into a principal.  A route calls
 * ngx_defarm_auth_require() with what it requires and the handler to go on
 * with; that handler runs once the caller is known (at once for a JWT,
 * after a look-up for an API key or an admin route), and every refusal is
 * answered here: 401 auth_error (with WWW-Authenticate) for missing or bad
 * credentials, 403 for a principal that may not do this.
 *
 * A token proves who signed in, not that they may still come in: on every
 * request the user's status is checked too, from a record that a change
 * to the user drops (ngx_defarm_auth_user_changed, on every node through
 * Redis), read again from PostgreSQL on a miss, and trusted at most
 * defarm_user_status_ttl when a change was made outside the API.  An admin
 * route asks PostgreSQL every time.
 */


typedef struct {
    ngx_defarm_ctx_t          *ctx;
    ngx_defarm_handler_pt      next;
    ngx_str_t                  key;           /* "uid:<id>:status" */
    ngx_str_t                  record;        /* read from PostgreSQL */
    ngx_uint_t                 version;       /* the token's "tv" */
} ngx_defarm_auth_next_t;


static ngx_int_t ngx_defarm_auth_status_key(ngx_pool_t *pool,
    ngx_str_t *user_id, ngx_str_t *key);
static ngx_int_t ngx_defarm_auth_forget(ngx_http_request_t *r,
    const char *prefix, ngx_str_t *name);
static ngx_int_t ngx_defarm_auth_status_cached(ngx_http_request_t *r,
    void *data, ngx_int_t rc, ngx_str_t *value);
static ngx_int_t ngx_defarm_auth_status_read(ngx_http_request_t *r,
    void *data, PGresult *res);
static ngx_int_t ngx_defarm_auth_version(ngx_http_request_t *r,
    ngx_defarm_auth_next_t *an, ngx_int_t version);
static ngx_int_t ngx_defarm_auth_tier(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx, u_char *tier, size_t len);
static ngx_int_t ngx_defarm_auth_status_check(ngx_http_request_t *r,
    void *data, ngx_int_t rc, ngx_str_t *value);
static ngx_int_t ngx_defarm_auth_admin_done(ngx_http_request_t *r,
    void *data, PGresult *res);
static void ngx_defarm_auth_code(ngx_http_request_t *r,
    ngx_defarm_json_writer_t *w, void *data);


static ngx_str_t  ngx_defarm_www_authenticate = ngx_string("Bearer");


static ngx_defarm_pg_stmt_t  ngx_defarm_auth_admin_stmt = {
    "defarm_auth_admin",
    "SELECT u.status, u.is_admin, u.token_version, "
           "coalesce(l.max_api_requests_per_hour::text, '-'), u.tier "
    "FROM users u LEFT JOIN tier_limits l ON l.tier = u.tier "
    "WHERE u.id = $1",
    1, 0
};


static void
ngx_defarm_auth_code(ngx_http_request_t *r, ngx_defarm_json_writer_t *w,
    void *data)
{
    ngx_defarm_jw_key(w, "code");
    ngx_defarm_jw_cstr(w, data);
}


/* a refusal; "code" is the original service's name for it, if any */

ngx_int_t
ngx_defarm_auth_fail(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *why)
{
    ngx_defarm_ctx_t  *ctx;

    if (status == NGX_HTTP_UNAUTHORIZED
        && ngx_defarm_add_header(r, "WWW-Authenticate",
                                 &ngx_defarm_www_authenticate)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx = ngx_defarm_get_ctx(r);

    if (ctx && code) {
        ctx->error_fields = ngx_defarm_auth_code;
        ctx->error_data = (void *) code;
    }

    return ngx_defarm_error(r, status, NGX_DEFARM_ERR_AUTH, "%s", why);
}


static void
ngx_defarm_auth_trim(ngx_str_t *s)
{
    while (s->len && s->data[0] == ' ') {
        s->data++;
        s->len--;
    }

    while (s->len && s->data[s->len - 1] == ' ') {
        s->len--;
    }
}


ngx_int_t
ngx_defarm_auth_require(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx,
    ngx_uint_t flags, ngx_defarm_handler_pt next)
{
    ngx_int_t                rc;
    ngx_str_t                token;
    const char              *why;
    ngx_table_elt_t         *h;
    ngx_defarm_claims_t      claims;
    ngx_defarm_auth_next_t  *an;

    h = r->headers_in.authorization;

    if (h != NULL) {
        if (h->value.len < 7
            || ngx_strncasecmp(h->value.data, (u_char *) "Bearer ", 7) != 0)
        {
            return ngx_defarm_auth_fail(r, NGX_HTTP_UNAUTHORIZED, NULL,
                                        "Authorization must be "
                                        "\"Bearer <token>\"");
        }

        token.data = h->value.data + 7;
        token.len = h->value.len - 7;

    } else {
        h = ngx_defarm_header(r, "X-API-Key");

        if (h != NULL) {
            token = h->value;

        } else if ((flags & NGX_DEFARM_ROUTE_QTOKEN)
                   && ngx_http_arg(r, (u_char *) "token", 5, &token) == NGX_OK)
        {
            /*
             * A browser's WebSocket cannot set headers: its token comes
             * in the query string, as a header's would.
             */

            h = r->headers_in.authorization;

        } else {
            return ngx_defarm_auth_fail(r, NGX_HTTP_UNAUTHORIZED, NULL,
                                        "Authentication required");
        }
    }

    ngx_defarm_auth_trim(&token);

    if (token.len == 0) {
        return ngx_defarm_auth_fail(r, NGX_HTTP_UNAUTHORIZED, NULL,
                                    "Authentication required");
    }

    if (h != r->headers_in.authorization
        || ngx_defarm_apikey_looks_like(&token))
    {
        if (flags & NGX_DEFARM_AUTH_JWT_ONLY) {
            return ngx_defarm_auth_fail(r, NGX_HTTP_FORBIDDEN,
                                        "jwt_required",
                                        "This endpoint needs a user's "
                                        "token; API keys are not accepted");
        }

        return ngx_defarm_apikey_auth(r, ctx, &token, flags, next);
    }

    ngx_memzero(&claims, sizeof(ngx_defarm_claims_t));

    rc = ngx_defarm_jwt_verify(r, &token, &claims, &why);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc != NGX_OK) {
        return ngx_defarm_auth_fail(r, NGX_HTTP_UNAUTHORIZED, NULL, why);
    }

    ctx->user_id = claims.user_id;
    ctx->workspace_id = claims.workspace_id;
    ctx->tier = claims.tier;
    ctx->token_expires = claims.exp;

    an = ngx_palloc(r->pool, sizeof(ngx_defarm_auth_next_t));
    if (an == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    an->ctx = ctx;
    an->next = next;
    an->version = claims.version;

    if (flags & NGX_DEFARM_AUTH_ADMIN) {

        /* a token says nothing of admin rights: the database does, now */

        return ngx_defarm_pg_query(r, &ngx_defarm_auth_admin_stmt,
                                   &ctx->user_id, ngx_defarm_auth_admin_done,
                                   an);
    }

    if (ngx_defarm_auth_status_key(r->pool, &ctx->user_id, &an->key)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_defarm_cache_run(r, NGX_DEFARM_CACHE_GET, &an->key, NULL, 0,
                                ngx_defarm_auth_status_cached, an);
}


/* a family per user: what a change to the user drops */

static ngx_int_t
ngx_defarm_auth_status_key(ngx_pool_t *pool, ngx_str_t *user_id,
    ngx_str_t *key)
{
    key->len = sizeof("uid::status") - 1 + user_id->len;
    key->data = ngx_pnalloc(pool, key->len);
    if (key->data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(key->data, "uid:%V:status", user_id);

    return NGX_OK;
}


/*
 * A user's status, login or admin rights changed (or the user went):
 * their cached records go, here and on every node, so that the change
 * takes effect on the next request.  The routes that change a user call
 * this before they answer.
 */

ngx_int_t
ngx_defarm_auth_user_changed(ngx_http_request_t *r, ngx_str_t *user_id,
    ngx_str_t *username)
{
    if (ngx_defarm_auth_forget(r, "uid:", user_id) != NGX_OK) {
        return NGX_ERROR;
    }

    return username ? ngx_defarm_auth_forget(r, "user:", username) : NGX_OK;
}


/* the family "<prefix><name>:" goes, here and on the other nodes */

static ngx_int_t
ngx_defarm_auth_forget(ngx_http_request_t *r, const char *prefix,
    ngx_str_t *name)
{
    ngx_str_t  family;

    family.len = ngx_strlen(prefix) + name->len + 1;
    family.data = ngx_pnalloc(r->pool, family.len);
    if (family.data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(family.data, "%s%V:", prefix, name);
    ngx_defarm_cache_forget(r, &family);

    return NGX_OK;
}


static ngx_int_t
ngx_defarm_auth_status_cached(ngx_http_request_t *r, void *data,
    ngx_int_t rc, ngx_str_t *value)
{
    ngx_defarm_auth_next_t  *an = data;

    if (rc == NGX_OK) {
        return ngx_defarm_auth_status_check(r, an, NGX_OK, value);
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_auth_admin_stmt,
                               &an->ctx->user_id, ngx_defarm_auth_status_read,
                               an);
}


static ngx_int_t
ngx_defarm_auth_status_read(ngx_http_request_t *r, void *data, PGresult *res)
{
    ngx_defarm_auth_next_t  *an = data;

    ngx_defarm_main_conf_t  *mcf;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        return ngx_defarm_pg_sql_error(r, res);
    }

    /*
     * "<status> <token version> <tier's requests an hour, - for none>
     * <tier>", or "-" for a user that no longer exists: the tier now, not
     * the one the token was issued with
     */

    if (PQntuples(res) == 0) {
        ngx_str_set(&an->record, "-");

    } else {
        an->record.len = PQgetlength(res, 0, 0) + 1 + PQgetlength(res, 0, 2)
                         + 1 + PQgetlength(res, 0, 3)
                         + 1 + PQgetlength(res, 0, 4);
        an->record.data = ngx_pnalloc(r->pool, an->record.len);
        if (an->record.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_sprintf(an->record.data, "%s %s %s %s", PQgetvalue(res, 0, 0),
                    PQgetvalue(res, 0, 2), PQgetvalue(res, 0, 3),
                    PQgetvalue(res, 0, 4));
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_defarm_module);

    /* stored only if no change came since the miss (SET_IF) */

    return ngx_defarm_cache_run(r, NGX_DEFARM_CACHE_SET_IF, &an->key,
                                &an->record, mcf->status_ttl,
                                ngx_defarm_auth_status_check, an);
}


/* the user's tier as the database has it now, over the token's claim */

static ngx_int_t
ngx_defarm_auth_tier(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx,
    u_char *tier, size_t len)
{
    ctx->tier.data = ngx_pnalloc(r->pool, len);
    if (ctx->tier.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(ctx->tier.data, tier, len);
    ctx->tier.len = len;

    return NGX_OK;
}


/* as a cache callback: a hit's record in "value", or the one just read */

static ngx_int_t
ngx_defarm_auth_status_check(ngx_http_request_t *r, void *data,
    ngx_int_t rc, ngx_str_t *value)
{
    ngx_defarm_auth_next_t  *an = data;

    u_char     status[64], *sp, *lp, *tp;
    ngx_int_t  st, version;

    if (value == NULL) {
        value = &an->record;
    }

    if (value->len == 0 || value->len >= sizeof(status)) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (value->len == 1 && value->data[0] == '-') {
        /* the original's answer for a token of a user who is gone */
        return ngx_defarm_error(r, NGX_HTTP_NOT_FOUND,
                                NGX_DEFARM_ERR_NOT_FOUND, "User not found");
    }

    ngx_cpystrn(status, value->data, value->len + 1);

    /* an older module's record has no version: the token's is taken */

    version = an->version;
    sp = (u_char *) ngx_strchr(status, ' ');

    if (sp) {
        *sp++ = '\0';

        /* an older module's record has no limit either: then none */

        lp = (u_char *) ngx_strchr(sp, ' ');

        if (lp) {
            *lp++ = '\0';
            tp = (u_char *) ngx_strchr(lp, ' ');

            if (tp) {
                *tp++ = '\0';

                if (ngx_defarm_auth_tier(r, an->ctx, tp, ngx_strlen(tp))
                    != NGX_OK)
                {
                    return NGX_HTTP_INTERNAL_SERVER_ERROR;
                }
            }

            an->ctx->request_limit = ngx_atoi(lp, ngx_strlen(lp));
        }

        version = ngx_atoi(sp, ngx_strlen(sp));
    }

    st = ngx_defarm_auth_status(r, (char *) status);

    if (st == NGX_DECLINED) {
        st = ngx_defarm_auth_version(r, an, version);
    }

    return (st == NGX_DECLINED) ? an->next(r, an->ctx) : st;
}


static ngx_int_t
ngx_defarm_auth_admin_done(ngx_http_request_t *r, void *data, PGresult *res)
{
    ngx_defarm_auth_next_t  *an = data;

    ngx_int_t  rc;

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

    rc = ngx_defarm_auth_version(r, an,
                                 ngx_atoi((u_char *) PQgetvalue(res, 0, 2),
                                          PQgetlength(res, 0, 2)));
    if (rc != NGX_DECLINED) {
        return rc;
    }

    an->ctx->admin_known = 1;
    an->ctx->is_admin = (PQgetvalue(res, 0, 1)[0] == 't');
    an->ctx->request_limit = ngx_atoi((u_char *) PQgetvalue(res, 0, 3),
                                      PQgetlength(res, 0, 3));

    if (ngx_defarm_auth_tier(r, an->ctx, (u_char *) PQgetvalue(res, 0, 4),
                             PQgetlength(res, 0, 4))
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (!an->ctx->is_admin) {
        return ngx_defarm_auth_fail(r, NGX_HTTP_FORBIDDEN,
                                    "admin_required",
                                    "Administrator access required");
    }

    return an->next(r, an->ctx);
}


/*
 * A token issued before the user's last password reset (its "tv" behind
 * the user's token version) no longer signs anyone in.  NGX_DECLINED
 * means "go on".
 */

static ngx_int_t
ngx_defarm_auth_version(ngx_http_request_t *r, ngx_defarm_auth_next_t *an,
    ngx_int_t version)
{
    if (version != NGX_ERROR && (ngx_uint_t) version == an->version) {
        return NGX_DECLINED;
    }

    return ngx_defarm_auth_fail(r, NGX_HTTP_UNAUTHORIZED, NULL,
                                "Invalid token: revoked (the password was "
                                "reset since it was issued)");
}


/*
 * A user who is not Active: 403, with the original API's messages.
 * NGX_DECLINED means "go on".
 */

ngx_int_t
ngx_defarm_auth_status(ngx_http_request_t *r, const char *status)
{
    const char  *msg;

    if (ngx_strcmp(status, "Active") == 0) {
        return NGX_DECLINED;                            /* go on */
    }

    if (ngx_strcmp(status, "Suspended") == 0) {
        msg = "Your account has been suspended. Please contact an "
              "administrator.";

    } else if (ngx_strcmp(status, "Banned") == 0) {
        msg = "Your account has been banned.";

    } else if (ngx_strcmp(status, "PendingVerification") == 0) {
        msg = "Your account is pending verification. Please check your "
              "email.";

    } else if (ngx_strcmp(status, "TrialExpired") == 0) {
        msg = "Your trial has expired. Please upgrade your account.";

    } else {
        msg = "Your account is not active.";
    }

    return ngx_defarm_error(r, NGX_HTTP_FORBIDDEN, NGX_DEFARM_ERR_AUTH,
                            "%s", msg);
}
