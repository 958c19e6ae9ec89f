
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "api/ngx_defarm_api.h"
#include "pg/ngx_defarm_pg.h"
#include "auth/ngx_defarm_auth.h"
#include "auth/ngx_defarm_crypt.h"
#include "auth/ngx_defarm_jwt.h"
#include "cache/ngx_defarm_cache.h"

#include <sys/random.h>


/*
 * /api/auth: register, login, refresh, profile.
 *
 * Login follows the original's ADR 002: look the user up, verify bcrypt in
 * the thread pool (the worker goes on serving), sign the token outside any
 * lock, and record last_login in the background.  Registration hashes in
 * the thread pool too, and lets the database's unique constraints decide
 * duplicates, so two concurrent registrations cannot both win.
 */


typedef struct {
    ngx_defarm_ctx_t          *ctx;
    ngx_str_t                  username;
    ngx_str_t                  email;
    ngx_str_t                  password;
    ngx_str_t                  workspace;
    ngx_str_t                  token;         /* a password reset's, hex */
    ngx_str_t                  hash;          /* the stored bcrypt hash */
    ngx_str_t                  key;           /* "user:<username>:auth" */
    ngx_str_t                  user_id;
    ngx_str_t                  status;
    ngx_str_t                  tier;
    ngx_str_t                  workspace_id;  /* data NULL: null */
    ngx_uint_t                 version;       /* users.token_version */
    ngx_uint_t                 found;
} ngx_defarm_auth_req_t;


static ngx_int_t ngx_defarm_auth_register(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_auth_register_hashed(ngx_http_request_t *r,
    void *data, ngx_int_t rc, ngx_str_t *hash);
static ngx_int_t ngx_defarm_auth_register_done(ngx_http_request_t *r,
    void *data, PGresult *res);
static ngx_int_t ngx_defarm_auth_login(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_auth_login_found(ngx_http_request_t *r,
    void *data, PGresult *res);
static ngx_int_t ngx_defarm_auth_login_cached(ngx_http_request_t *r,
    void *data, ngx_int_t rc, ngx_str_t *value);
static ngx_int_t ngx_defarm_auth_login_verify(ngx_http_request_t *r,
    void *data, ngx_int_t rc, ngx_str_t *value);
static ngx_int_t ngx_defarm_auth_login_verified(ngx_http_request_t *r,
    void *data, ngx_int_t rc, ngx_str_t *hash);
static ngx_int_t ngx_defarm_auth_profile(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_auth_refresh(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_auth_profile_done(ngx_http_request_t *r,
    void *data, PGresult *res);
static ngx_int_t ngx_defarm_auth_refresh_done(ngx_http_request_t *r,
    void *data, PGresult *res);
static ngx_int_t ngx_defarm_auth_token(ngx_http_request_t *r,
    ngx_defarm_auth_req_t *ar);
static ngx_int_t ngx_defarm_auth_forgot(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_auth_forgot_done(ngx_http_request_t *r,
    void *data, PGresult *res);
static ngx_int_t ngx_defarm_auth_reset(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_auth_reset_checked(ngx_http_request_t *r,
    void *data, PGresult *res);
static ngx_int_t ngx_defarm_auth_reset_hashed(ngx_http_request_t *r,
    void *data, ngx_int_t rc, ngx_str_t *hash);
static ngx_int_t ngx_defarm_auth_reset_done(ngx_http_request_t *r,
    void *data, PGresult *res);
static ngx_int_t ngx_defarm_auth_message(ngx_http_request_t *r,
    const char *msg);


ngx_defarm_route_t  ngx_defarm_auth_routes[] = {

    { NGX_HTTP_POST, ngx_string("/api/auth/register"),
      ngx_defarm_auth_register, NGX_DEFARM_ROUTE_BODY },

    { NGX_HTTP_POST, ngx_string("/api/auth/login"),
      ngx_defarm_auth_login, NGX_DEFARM_ROUTE_BODY },

    { NGX_HTTP_GET, ngx_string("/api/auth/profile"),
      ngx_defarm_auth_profile, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/auth/refresh"),
      ngx_defarm_auth_refresh, NGX_DEFARM_ROUTE_JWT },     /* not a key */

    { NGX_HTTP_POST, ngx_string("/api/auth/forgot-password"),
      ngx_defarm_auth_forgot, NGX_DEFARM_ROUTE_BODY },

    { NGX_HTTP_POST, ngx_string("/api/auth/reset-password"),
      ngx_defarm_auth_reset, NGX_DEFARM_ROUTE_BODY },

    ngx_defarm_route_null
};


static ngx_defarm_pg_stmt_t  ngx_defarm_auth_insert_user = {
    "defarm_auth_insert_user",
    "INSERT INTO users (id, username, email, password_hash, tier, status, "
                       "is_admin, workspace_id) "
    "VALUES ('user-' || gen_random_uuid(), $1, $2, $3, 'Basic', 'Active', "
            "false, $4) "
    "RETURNING id, status, tier, workspace_id, token_version",
    4, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_auth_user_by_name = {
    "defarm_auth_user_by_name",
    "SELECT id, status, tier, workspace_id, password_hash, token_version "
    "FROM users WHERE username = $1",
    1, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_auth_user_by_id = {
    "defarm_auth_user_by_id",
    "SELECT id, status, tier, workspace_id, username, email, "
           "extract(epoch FROM created_at)::bigint, token_version "
    "FROM users WHERE id = $1",
    1, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_auth_last_login = {
    "defarm_auth_last_login",
    "UPDATE users SET last_login = now() WHERE id = $1",
    1, 0
};


/*
 * A reset token is 32 random bytes, shown once as 64 hex digits; only the
 * SHA-256 of the raw bytes is stored (PostgreSQL computes it).  The
 * function finds the user and, under a per-user lock, counts the last
 * hour's tokens and inserts (sql/012).
 */

static ngx_defarm_pg_stmt_t  ngx_defarm_auth_reset_issue = {
    "defarm_auth_reset_issue",
    "SELECT * FROM defarm_reset_issue($1, $2, $3, $4, $5, $6::int)",
    6, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_auth_reset_check = {
    "defarm_auth_reset_check",
    "SELECT user_id FROM password_reset_tokens "
    "WHERE token_hash = encode(sha256(decode($1, 'hex')), 'hex') "
      "AND used_at IS NULL AND expires_at > now()",
    1, 0
};

/* checked again under the row lock: of two concurrent resets, one wins */

static ngx_defarm_pg_stmt_t  ngx_defarm_auth_reset_apply = {
    "defarm_auth_reset_apply",
    "WITH t AS ("
        "UPDATE password_reset_tokens SET used_at = now() "
        "WHERE token_hash = encode(sha256(decode($1, 'hex')), 'hex') "
          "AND used_at IS NULL AND expires_at > now() "
        "RETURNING user_id), "
    "u AS ("
        "UPDATE users SET password_hash = $2, "
                         "token_version = token_version + 1 FROM t "
        "WHERE users.id = t.user_id RETURNING users.username, users.id) "
    "SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM u), "
           "(SELECT username FROM u), (SELECT id FROM u)",
    2, 0
};


/* validation */


static void
ngx_defarm_auth_trim(ngx_str_t *s)
{
    while (s->len && (s->data[0] == ' ' || s->data[0] == '\t'
                      || s->data[0] == '\n' || s->data[0] == '\r'))
    {
        s->data++;
        s->len--;
    }

    while (s->len && (s->data[s->len - 1] == ' '
                      || s->data[s->len - 1] == '\t'
                      || s->data[s->len - 1] == '\n'
                      || s->data[s->len - 1] == '\r'))
    {
        s->len--;
    }
}


static ngx_int_t
ngx_defarm_auth_string(ngx_http_request_t *r, ngx_defarm_json_t *body,
    const char *name, ngx_uint_t required, ngx_str_t *out)
{
    ngx_defarm_json_t  *v;

    v = ngx_defarm_json_get(body, name);

    if (v == NULL || (v->type == NGX_DEFARM_JSON_NULL && !required)) {
        if (required) {
            return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                    NGX_DEFARM_ERR_VALIDATION,
                                    "\"%s\" is required", name);
        }

        ngx_str_null(out);
        return NGX_DECLINED;
    }

    if (v->type != NGX_DEFARM_JSON_STRING) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "\"%s\" must be a string, not %s", name,
                                ngx_defarm_json_type_name(v));
    }

    *out = v->str;

    return NGX_DECLINED;
}


static ngx_uint_t
ngx_defarm_auth_printable(ngx_str_t *s)
{
    size_t  i;

    /* no spaces, no control characters */

    for (i = 0; i < s->len; i++) {
        if (s->data[i] <= 0x20 || s->data[i] == 0x7f) {
            return 0;
        }
    }

    return 1;
}


static ngx_uint_t
ngx_defarm_auth_email_ok(ngx_str_t *e)
{
    u_char  *at, *dot, *last;

    last = e->data + e->len;

    if (e->len > 254 || !ngx_defarm_auth_printable(e)) {
        return 0;
    }

    at = ngx_strlchr(e->data, last, '@');

    if (at == NULL || at == e->data || at + 1 == last
        || ngx_strlchr(at + 1, last, '@'))
    {
        return 0;
    }

    dot = ngx_strlchr(at + 1, last, '.');

    return dot && dot != at + 1 && last[-1] != '.';
}


static const char *
ngx_defarm_auth_password_policy(ngx_str_t *pw)
{
    size_t      i;
    ngx_uint_t  upper, lower, digit, symbol;

    if (pw->len < 8) {
        return "Password must be at least 8 characters long";
    }

    /* bcrypt reads 72 bytes; a longer password would be cut silently */

    if (pw->len > 72) {
        return "Password must be at most 72 bytes long";
    }

    upper = lower = digit = symbol = 0;

    for (i = 0; i < pw->len; i++) {
        if (pw->data[i] >= 'A' && pw->data[i] <= 'Z') {
            upper = 1;

        } else if (pw->data[i] >= 'a' && pw->data[i] <= 'z') {
            lower = 1;

        } else if (pw->data[i] >= '0' && pw->data[i] <= '9') {
            digit = 1;

        } else {
            symbol = 1;
        }
    }

    if (!upper) {
        return "Password must contain an upper-case letter";
    }

    if (!lower) {
        return "Password must contain a lower-case letter";
    }

    if (!digit) {
        return "Password must contain a digit";
    }

    if (!symbol) {
        return "Password must contain a character that is not a letter or "
               "a digit";
    }

    return NULL;
}


static ngx_defarm_auth_req_t *
ngx_defarm_auth_req(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_defarm_auth_req_t  *ar;

    ar = ngx_pcalloc(r->pool, sizeof(ngx_defarm_auth_req_t));
    if (ar) {
        ar->ctx = ctx;
    }

    return ar;
}


/* the string fields a route reads from its JSON object body */

typedef struct {
    const char                *name;
    ngx_uint_t                 required;
    size_t                     offset;        /* in ngx_defarm_auth_req_t */
} ngx_defarm_auth_field_t;


/* registration's fields are read by ngx_defarm_auth_account() */

static ngx_defarm_auth_field_t  ngx_defarm_auth_register_fields[] = {
    { NULL, 0, 0 }
};

static ngx_defarm_auth_field_t  ngx_defarm_auth_login_fields[] = {
    { "username", 1, offsetof(ngx_defarm_auth_req_t, username) },
    { "password", 1, offsetof(ngx_defarm_auth_req_t, password) },
    { NULL, 0, 0 }
};

static ngx_defarm_auth_field_t  ngx_defarm_auth_forgot_fields[] = {
    { "email", 0, offsetof(ngx_defarm_auth_req_t, email) },
    { "username", 0, offsetof(ngx_defarm_auth_req_t, username) },
    { NULL, 0, 0 }
};

/* new_password is read after the token is checked: its message comes first */

static ngx_defarm_auth_field_t  ngx_defarm_auth_reset_fields[] = {
    { "token", 0, offsetof(ngx_defarm_auth_req_t, token) },
    { NULL, 0, 0 }
};


/*
 * The request state of an auth route, with its fields read from the body;
 * NGX_DECLINED means "go on" (*arp set), anything else was answered.
 * Routes that end in a token refuse early when none could be signed, so
 * no account is made and no password checked in vain.
 */

static ngx_int_t
ngx_defarm_auth_parse(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx,
    ngx_defarm_auth_field_t *fields, ngx_uint_t issues_token,
    ngx_defarm_auth_req_t **arp)
{
    ngx_int_t                rc;
    ngx_defarm_auth_req_t   *ar;
    ngx_defarm_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_defarm_module);

    if (issues_token && mcf->jwt->secret.len == 0) {
        return ngx_defarm_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                NGX_DEFARM_ERR_INTERNAL,
                                "Tokens cannot be issued: "
                                "defarm_jwt_secret is not configured");
    }

    if (ctx->body->type != NGX_DEFARM_JSON_OBJECT) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "Body must be a JSON object");
    }

    ar = ngx_pcalloc(r->pool, sizeof(ngx_defarm_auth_req_t));
    if (ar == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ar->ctx = ctx;

    for ( /* void */ ; fields->name; fields++) {
        rc = ngx_defarm_auth_string(r, ctx->body, fields->name,
                                    fields->required,
                                    (ngx_str_t *) ((u_char *) ar
                                                   + fields->offset));
        if (rc != NGX_DECLINED) {
            return rc;
        }
    }

    *arp = ar;

    return NGX_DECLINED;
}


/* a user row: id, status, tier, workspace_id in columns 0-3 */


static void
ngx_defarm_auth_row(PGresult *res, int version_col,
    ngx_defarm_auth_req_t *ar)
{
    ngx_int_t  v;

    (void) ngx_defarm_pg_text(res, 0, 0, &ar->user_id);
    (void) ngx_defarm_pg_text(res, 0, 1, &ar->status);
    (void) ngx_defarm_pg_text(res, 0, 2, &ar->tier);
    (void) ngx_defarm_pg_text(res, 0, 3, &ar->workspace_id);

    v = ngx_atoi((u_char *) PQgetvalue(res, 0, version_col),
                 PQgetlength(res, 0, version_col));
    ar->version = (v == NGX_ERROR) ? 0 : (ngx_uint_t) v;

    ar->found = 1;
}


/* POST /api/auth/register */


static ngx_int_t
ngx_defarm_auth_register(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_int_t               rc;
    ngx_defarm_account_t    ac;
    ngx_defarm_auth_req_t  *ar;

    rc = ngx_defarm_auth_parse(r, ctx, ngx_defarm_auth_register_fields, 1,
                               &ar);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    rc = ngx_defarm_auth_account(r, ctx->body, "workspace_name",
                                 "Workspace name", &ac);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    ar->username = ac.username;
    ar->email = ac.email;
    ar->password = ac.password;
    ar->workspace = ac.workspace;

    return ngx_defarm_crypt_hash(r, &ar->password,
                                 ngx_defarm_auth_register_hashed, ar);
}


/*
 * A new account's fields, read from a JSON object body and checked: by
 * registration, and by an administrator's POST /api/admin/users (which
 * names the workspace field and its label differently).  The workspace
 * is optional (data NULL: not given).  NGX_DECLINED means "go on",
 * anything else was answered.
 */

ngx_int_t
ngx_defarm_auth_account(ngx_http_request_t *r, ngx_defarm_json_t *body,
    const char *workspace, const char *label, ngx_defarm_account_t *ac)
{
    ngx_int_t    rc;
    ngx_uint_t   i;
    const char  *why;

    static const char  *names[] = { "username", "password", "email" };

    ngx_str_t  *fields[] = { &ac->username, &ac->password, &ac->email };

    if (body->type != NGX_DEFARM_JSON_OBJECT) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "Body must be a JSON object");
    }

    for (i = 0; i < 3; i++) {
        rc = ngx_defarm_auth_string(r, body, names[i], 1, fields[i]);
        if (rc != NGX_DECLINED) {
            return rc;
        }
    }

    rc = ngx_defarm_auth_string(r, body, workspace, 0, &ac->workspace);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    if (ac->username.len == 0 || ac->username.len > 64
        || !ngx_defarm_auth_printable(&ac->username))
    {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "Username must be 1 to 64 characters, "
                                "without spaces or control characters");
    }

    if (!ngx_defarm_auth_email_ok(&ac->email)) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "Email address is not valid");
    }

    if (ac->workspace.data
        && (ac->workspace.len == 0 || ac->workspace.len > 64
            || !ngx_defarm_auth_printable(&ac->workspace)))
    {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "%s must be 1 to 64 characters, "
                                "without spaces or control characters",
                                label);
    }

    why = ngx_defarm_auth_password_policy(&ac->password);

    if (why) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION, "%s", why);
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_defarm_auth_register_hashed(ngx_http_request_t *r, void *data,
    ngx_int_t rc, ngx_str_t *hash)
{
    ngx_defarm_auth_req_t  *ar = data;

    ngx_str_t  *params, *ws;

    params = ngx_pcalloc(r->pool, 4 * sizeof(ngx_str_t));
    if (params == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ws = ar->workspace.data ? &ar->workspace : &ar->username;

    params[0] = ar->username;
    params[1] = ar->email;
    params[2] = *hash;

    params[3].len = ws->len + sizeof("-workspace") - 1;
    params[3].data = ngx_pnalloc(r->pool, params[3].len);
    if (params[3].data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_sprintf(params[3].data, "%V-workspace", ws);

    return ngx_defarm_pg_query(r, &ngx_defarm_auth_insert_user, params,
                               ngx_defarm_auth_register_done, ar);
}


static ngx_int_t
ngx_defarm_auth_register_done(ngx_http_request_t *r, void *data,
    PGresult *res)
{
    ngx_defarm_auth_req_t  *ar = data;

    char  *state, *constraint;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        constraint = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);

        /* unique_violation: the database decided who was first */

        if (state && ngx_strcmp(state, "23505") == 0 && constraint) {

            if (ngx_strcmp(constraint, "users_username_key") == 0) {
                return ngx_defarm_error(r, NGX_HTTP_CONFLICT,
                                        NGX_DEFARM_ERR_CONFLICT,
                                        "Username already exists");
            }

            if (ngx_strcmp(constraint, "users_email_key") == 0) {
                return ngx_defarm_error(r, NGX_HTTP_CONFLICT,
                                        NGX_DEFARM_ERR_CONFLICT,
                                        "Email already exists");
            }
        }

        return ngx_defarm_pg_sql_error(r, res);
    }

    if (PQntuples(res) != 1) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_defarm_auth_row(res, 4, ar);

    return ngx_defarm_auth_token(r, ar);
}


/* POST /api/auth/login */


static ngx_int_t
ngx_defarm_auth_login(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_int_t               rc;
    ngx_defarm_auth_req_t  *ar;

    rc = ngx_defarm_auth_parse(r, ctx, ngx_defarm_auth_login_fields, 1, &ar);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    if (ar->username.len == 0 || ar->password.len == 0) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "Username and password are required");
    }

    /* the user's auth record: shared-memory cache first (ADR 002) */

    ar->key.len = sizeof("user::auth") - 1 + ar->username.len;
    ar->key.data = ngx_pnalloc(r->pool, ar->key.len);
    if (ar->key.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_sprintf(ar->key.data, "user:%V:auth", &ar->username);

    return ngx_defarm_cache_run(r, NGX_DEFARM_CACHE_GET, &ar->key, NULL, 0,
                                ngx_defarm_auth_login_cached, ar);
}


/*
 * A cached auth record is "id\nstatus\ntier\nworkspace\nversion\nhash",
 * the workspace prefixed "=" (a null one is empty): lines, since none of
 * the fields can hold a newline (usernames, ids and hashes are checked).
 * A record of another shape (an older module's, in a zone that outlived a
 * reload) is a miss.
 */

static ngx_int_t
ngx_defarm_auth_record_parse(ngx_http_request_t *r, ngx_defarm_auth_req_t *ar,
    ngx_str_t *v)
{
    u_char      *p, *last, *nl;
    ngx_int_t    n;
    ngx_str_t    version, *f[6];
    ngx_uint_t   i;

    f[0] = &ar->user_id;
    f[1] = &ar->status;
    f[2] = &ar->tier;
    f[3] = &ar->workspace_id;
    f[4] = &version;
    f[5] = &ar->hash;

    p = v->data;
    last = v->data + v->len;

    for (i = 0; i < 6; i++) {
        nl = (i < 5) ? ngx_strlchr(p, last, '\n') : last;
        if (nl == NULL) {
            return NGX_ERROR;
        }

        f[i]->data = p;
        f[i]->len = nl - p;
        p = nl + 1;
    }

    n = ngx_atoi(version.data, version.len);
    if (n == NGX_ERROR || ngx_strlchr(ar->hash.data, last, '\n')) {
        return NGX_ERROR;
    }

    ar->version = n;

    if (ar->workspace_id.len == 0) {
        ngx_str_null(&ar->workspace_id);

    } else {
        ar->workspace_id.data++;                        /* the "=" */
        ar->workspace_id.len--;
    }

    /* the status is compared as a C string */

    p = ngx_pnalloc(r->pool, ar->status.len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(p, ar->status.data, ar->status.len);
    p[ar->status.len] = '\0';
    ar->status.data = p;

    ar->found = 1;

    return NGX_OK;
}


static ngx_int_t
ngx_defarm_auth_login_cached(ngx_http_request_t *r, void *data, ngx_int_t rc,
    ngx_str_t *value)
{
    ngx_defarm_auth_req_t  *ar = data;

    if (rc == NGX_OK && ngx_defarm_auth_record_parse(r, ar, value) == NGX_OK)
    {
        return ngx_defarm_auth_login_verify(r, ar, NGX_OK, NULL);
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_auth_user_by_name,
                               &ar->username, ngx_defarm_auth_login_found,
                               ar);
}


static ngx_int_t
ngx_defarm_auth_login_found(ngx_http_request_t *r, void *data, PGresult *res)
{
    ngx_defarm_auth_req_t  *ar = data;

    ngx_str_t                record;
    ngx_defarm_main_conf_t  *mcf;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        return ngx_defarm_pg_sql_error(r, res);
    }

    /* an unknown user costs a hash too: the timing tells nothing */

    if (PQntuples(res) == 0) {
        return ngx_defarm_crypt_verify(r, &ar->password, NULL,
                                       ngx_defarm_auth_login_verified, ar);
    }

    ngx_defarm_auth_row(res, 5, ar);
    (void) ngx_defarm_pg_text(res, 0, 4, &ar->hash);

    /* cached for the next login; bytes are copied, the lock is brief */

    record.len = ar->user_id.len + ar->status.len + ar->tier.len
                 + ar->workspace_id.len + NGX_INT_T_LEN + ar->hash.len + 6;
    record.data = ngx_pnalloc(r->pool, record.len);
    if (record.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    record.len = ngx_sprintf(record.data, "%V\n%V\n%V\n%s%V\n%ui\n%V",
                             &ar->user_id, &ar->status, &ar->tier,
                             ar->workspace_id.data ? "=" : "",
                             &ar->workspace_id, ar->version, &ar->hash)
                 - record.data;

    /* its status is trusted no longer than a token's (defarm_auth.c) */

    mcf = ngx_http_get_module_main_conf(r, ngx_defarm_module);

    return ngx_defarm_cache_run(r, NGX_DEFARM_CACHE_SET_IF, &ar->key, &record,
                                mcf->status_ttl, ngx_defarm_auth_login_verify,
                                ar);
}


static ngx_int_t
ngx_defarm_auth_login_verify(ngx_http_request_t *r, void *data, ngx_int_t rc,
    ngx_str_t *value)
{
    ngx_defarm_auth_req_t  *ar = data;

    return ngx_defarm_crypt_verify(r, &ar->password, &ar->hash,
                                   ngx_defarm_auth_login_verified, ar);
}


static ngx_int_t
ngx_defarm_auth_login_verified(ngx_http_request_t *r, void *data,
    ngx_int_t rc, ngx_str_t *hash)
{
    ngx_defarm_auth_req_t  *ar = data;

    if (rc != NGX_OK || !ar->found) {
        return ngx_defarm_error(r, NGX_HTTP_UNAUTHORIZED,
                                NGX_DEFARM_ERR_AUTH, "Invalid credentials");
    }

    rc = ngx_defarm_auth_status(r, (char *) ar->status.data);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    /* recorded in the background: the response does not wait for it */

    (void) ngx_defarm_pg_background(&ngx_defarm_auth_last_login,
                                    &ar->user_id, NULL, NULL);

    return ngx_defarm_auth_token(r, ar);
}


/* GET /api/auth/profile */


static ngx_int_t
ngx_defarm_auth_profile(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    return ngx_defarm_pg_query(r, &ngx_defarm_auth_user_by_id, &ctx->user_id,
                               ngx_defarm_auth_profile_done, ctx);
}


static ngx_int_t
ngx_defarm_auth_user_current(ngx_http_request_t *r, PGresult *res)
{
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        return ngx_defarm_pg_sql_error(r, res);
    }

    if (PQntuples(res) == 0) {
        return ngx_defarm_error(r, NGX_HTTP_NOT_FOUND,
                                NGX_DEFARM_ERR_NOT_FOUND, "User not found");
    }

    /* a token outlives a suspension: the database has the last word */

    return ngx_defarm_auth_status(r, PQgetvalue(res, 0, 1));
}


static ngx_int_t
ngx_defarm_auth_profile_done(ngx_http_request_t *r, void *data,
    PGresult *res)
{
    ngx_int_t                  rc;
    ngx_str_t                  s;
    ngx_uint_t                 i;
    ngx_defarm_json_writer_t  *w;

    static const char  *names[] = { "user_id", "username", "email" };
    static int          cols[] = { 0, 4, 5 };

    rc = ngx_defarm_auth_user_current(r, res);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    w = ngx_defarm_json_writer(r);
    if (w == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_defarm_jw_map_open(w);

    for (i = 0; i < 3; i++) {
        (void) ngx_defarm_pg_text(res, 0, cols[i], &s);
        ngx_defarm_jw_key(w, names[i]);
        ngx_defarm_jw_str(w, &s);
    }

    (void) ngx_defarm_pg_text(res, 0, 6, &s);
    ngx_defarm_jw_key(w, "created_at");
    ngx_defarm_jw_int(w, ngx_atoi(s.data, s.len));

    (void) ngx_defarm_pg_text(res, 0, 3, &s);
    ngx_defarm_jw_key(w, "workspace_id");
    ngx_defarm_jw_str_or_null(w, &s);

    ngx_defarm_jw_map_close(w);

    if (ngx_defarm_server_timing(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_defarm_send(r, NGX_HTTP_OK, w);
}


/* POST /api/auth/refresh */


static ngx_int_t
ngx_defarm_auth_refresh(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_defarm_auth_req_t  *ar;

    ar = ngx_defarm_auth_req(r, ctx);
    if (ar == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_auth_user_by_id, &ctx->user_id,
                               ngx_defarm_auth_refresh_done, ar);
}


static ngx_int_t
ngx_defarm_auth_refresh_done(ngx_http_request_t *r, void *data,
    PGresult *res)
{
    ngx_defarm_auth_req_t  *ar = data;

    ngx_int_t  rc;

    rc = ngx_defarm_auth_user_current(r, res);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    ngx_defarm_auth_row(res, 7, ar);

    return ngx_defarm_auth_token(r, ar);
}


/* {token, user_id, workspace_id, expires_at}: login, register, refresh */


static ngx_int_t
ngx_defarm_auth_token(ngx_http_request_t *r, ngx_defarm_auth_req_t *ar)
{
    ngx_str_t                  token;
    ngx_defarm_claims_t        claims;
    ngx_defarm_json_writer_t  *w;

    ngx_memzero(&claims, sizeof(ngx_defarm_claims_t));

    claims.user_id = ar->user_id;
    claims.workspace_id = ar->workspace_id;
    claims.tier = ar->tier;
    claims.version = ar->version;

    if (ngx_defarm_jwt_sign(r, &claims, &token) != NGX_OK) {
        return ngx_defarm_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                NGX_DEFARM_ERR_INTERNAL,
                                "Cannot issue a token");
    }

    ar->ctx->user_id = ar->user_id;

    w = ngx_defarm_json_writer(r);
    if (w == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_defarm_jw_map_open(w);
    ngx_defarm_jw_key(w, "token");
    ngx_defarm_jw_str(w, &token);
    ngx_defarm_jw_key(w, "user_id");
    ngx_defarm_jw_str(w, &ar->user_id);
    ngx_defarm_jw_key(w, "workspace_id");
    ngx_defarm_jw_str_or_null(w, &ar->workspace_id);

    ngx_defarm_jw_key(w, "expires_at");
    ngx_defarm_jw_int(w, claims.exp);
    ngx_defarm_jw_map_close(w);

    if (ngx_defarm_server_timing(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_defarm_send(r, NGX_HTTP_OK, w);
}


static ngx_int_t
ngx_defarm_auth_message(ngx_http_request_t *r, const char *msg)
{
    ngx_defarm_json_writer_t  *w;

    w = ngx_defarm_json_writer(r);
    if (w == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_defarm_jw_map_open(w);
    ngx_defarm_jw_key(w, "message");
    ngx_defarm_jw_cstr(w, msg);
    ngx_defarm_jw_map_close(w);

    return ngx_defarm_send(r, NGX_HTTP_OK, w);
}


/* POST /api/auth/forgot-password */


static ngx_int_t
ngx_defarm_auth_forgot(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    u_char                  *p, raw[32];
    ngx_int_t                rc;
    ngx_str_t               *params;
    ngx_defarm_auth_req_t   *ar;
    ngx_defarm_main_conf_t  *mcf;

    rc = ngx_defarm_auth_parse(r, ctx, ngx_defarm_auth_forgot_fields, 0,
                               &ar);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    params = ngx_pcalloc(r->pool, 6 * sizeof(ngx_str_t));
    if (params == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_defarm_auth_trim(&ar->email);
    ngx_defarm_auth_trim(&ar->username);

    if (ar->email.len == 0 && ar->username.len == 0) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "Provide email or username to reset your "
                                "password");
    }

    /* 32 bytes from the kernel's CSPRNG; never blocks (seeded at boot) */

    if (getrandom(raw, sizeof(raw), GRND_NONBLOCK) != (ssize_t) sizeof(raw))
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, ngx_errno,
                      "defarm: getrandom() failed");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_pnalloc(r->pool, 2 * sizeof(raw));
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ar->token.data = p;
    ar->token.len = ngx_hex_dump(p, raw, sizeof(raw)) - p;
    explicit_bzero(raw, sizeof(raw));

    mcf = ngx_http_get_module_main_conf(r, ngx_defarm_module);

    if (ar->email.len) {
        params[0] = ar->email;

    } else {
        params[1] = ar->username;
    }

    params[2] = ar->token;
    params[3] = r->connection->addr_text;

    if (r->headers_in.user_agent) {
        params[4] = r->headers_in.user_agent->value;
    }

    params[5].data = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (params[5].data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    params[5].len = ngx_sprintf(params[5].data, "%ui", mcf->reset_limit)
                    - params[5].data;

    return ngx_defarm_pg_query(r, &ngx_defarm_auth_reset_issue, params,
                               ngx_defarm_auth_forgot_done, ar);
}


static ngx_int_t
ngx_defarm_auth_forgot_done(ngx_http_request_t *r, void *data, PGresult *res)
{
    ngx_defarm_auth_req_t  *ar = data;

    ngx_defarm_main_conf_t  *mcf;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        return ngx_defarm_pg_sql_error(r, res);
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_defarm_module);

    /*
     * With defarm_smtp the token went out by e-mail, a job of the same
     * transaction (sql/032); in development it can also be logged.  The
     * answer is the same whether the account exists, and whether its
     * hourly limit was reached (a 429 would tell who has an account).
     */

    if (PQntuples(res) == 1 && mcf->reset_log) {
        ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                      "defarm: password reset token for user %s: %V",
                      PQgetvalue(res, 0, 0), &ar->token);
    }

    return ngx_defarm_auth_message(r, "If the account exists, password "
                                      "reset instructions have been sent.");
}


/* POST /api/auth/reset-password */


static ngx_int_t
ngx_defarm_auth_reset(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    size_t                  i;
    ngx_int_t               rc;
    const char             *why;
    ngx_defarm_auth_req_t  *ar;

    rc = ngx_defarm_auth_parse(r, ctx, ngx_defarm_auth_reset_fields, 0, &ar);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    if (ar->token.len == 0) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "Password reset token is required");
    }

    rc = ngx_defarm_auth_string(r, ctx->body, "new_password", 1,
                                &ar->password);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    ngx_defarm_auth_trim(&ar->password);

    why = ngx_defarm_auth_password_policy(&ar->password);

    if (why) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION, "%s", why);
    }

    for (i = 0; i < ar->token.len; i++) {
        if (ngx_hextoi(&ar->token.data[i], 1) == NGX_ERROR) {
            break;
        }
    }

    if (ar->token.len != 64 || i != 64) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "Invalid password reset token");
    }

    /* a bad token costs a look-up, never a bcrypt hash */

    return ngx_defarm_pg_query(r, &ngx_defarm_auth_reset_check,
                               &ar->token,
                               ngx_defarm_auth_reset_checked, ar);
}


static ngx_int_t
ngx_defarm_auth_reset_checked(ngx_http_request_t *r, void *data,
    PGresult *res)
{
    ngx_defarm_auth_req_t  *ar = data;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        return ngx_defarm_pg_sql_error(r, res);
    }

    if (PQntuples(res) == 0) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "Invalid or expired password reset token");
    }

    return ngx_defarm_crypt_hash(r, &ar->password,
                                 ngx_defarm_auth_reset_hashed, ar);
}


static ngx_int_t
ngx_defarm_auth_reset_hashed(ngx_http_request_t *r, void *data,
    ngx_int_t rc, ngx_str_t *hash)
{
    ngx_defarm_auth_req_t  *ar = data;

    ngx_str_t  *params;

    params = ngx_pcalloc(r->pool, 2 * sizeof(ngx_str_t));
    if (params == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    params[0] = ar->token;
    params[1] = *hash;

    return ngx_defarm_pg_query(r, &ngx_defarm_auth_reset_apply, params,
                               ngx_defarm_auth_reset_done, ar);
}


static ngx_int_t
ngx_defarm_auth_reset_done(ngx_http_request_t *r, void *data, PGresult *res)
{
    ngx_str_t  username, user_id;

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        return ngx_defarm_pg_sql_error(r, res);
    }

    if (ngx_atoi((u_char *) PQgetvalue(res, 0, 0), PQgetlength(res, 0, 0))
        == 0)
    {
        /* another reset with this token won meanwhile, or it expired */
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "Invalid or expired password reset token");
    }

    if (ngx_atoi((u_char *) PQgetvalue(res, 0, 1), PQgetlength(res, 0, 1))
        == 0)
    {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "Account associated with this token was not "
                                "found");
    }

    /* the cached auth record holds the old hash: the user's records go */

    (void) ngx_defarm_pg_text(res, 0, 2, &username);
    (void) ngx_defarm_pg_text(res, 0, 3, &user_id);

    if (ngx_defarm_auth_user_changed(r, &user_id, &username) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_defarm_auth_message(r, "Password reset successful. You can "
                                      "now log in with your new password.");
}
