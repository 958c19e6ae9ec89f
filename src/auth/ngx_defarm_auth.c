
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "auth/ngx_defarm_auth.h"
#include "auth/ngx_defarm_jwt.h"
#include "ngx_defarm_response.h"


/*
 * The one place that turns credentials into a principal: every route that
 * needs a caller calls ngx_defarm_auth_require() and gets either
 * NGX_DECLINED, as an nginx access handler would ("go on": ctx->user_id,
 * workspace_id and tier are set), or the 401 already answered, to return.
 */


static ngx_str_t  ngx_defarm_www_authenticate = ngx_string("Bearer");


static ngx_int_t
ngx_defarm_auth_fail(ngx_http_request_t *r, const char *why)
{
    if (ngx_defarm_add_header(r, "WWW-Authenticate",
                              &ngx_defarm_www_authenticate)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_defarm_error(r, NGX_HTTP_UNAUTHORIZED, NGX_DEFARM_ERR_AUTH,
                            "%s", why);
}


ngx_int_t
ngx_defarm_auth_require(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    u_char               *p, *last;
    ngx_int_t             rc;
    ngx_str_t             token;
    const char           *why;
    ngx_defarm_claims_t   claims;

    if (r->headers_in.authorization == NULL) {
        return ngx_defarm_auth_fail(r, "Authentication required");
    }

    p = r->headers_in.authorization->value.data;
    last = p + r->headers_in.authorization->value.len;

    if (last - p < 7 || ngx_strncasecmp(p, (u_char *) "Bearer ", 7) != 0) {
        return ngx_defarm_auth_fail(r, "Authorization must be "
                                       "\"Bearer <token>\"");
    }

    for (p += 7; p < last && *p == ' '; p++) { /* void */ }

    while (last > p && last[-1] == ' ') {
        last--;
    }

    token.data = p;
    token.len = last - p;

    if (token.len == 0) {
        return ngx_defarm_auth_fail(r, "Authentication required");
    }

    ngx_memzero(&claims, sizeof(ngx_defarm_claims_t));

    rc = ngx_defarm_jwt_verify(r, &token, &claims, &why);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc != NGX_OK) {
        return ngx_defarm_auth_fail(r, why);
    }

    ctx->user_id = claims.user_id;
    ctx->workspace_id = claims.workspace_id;
    ctx->tier = claims.tier;

    return NGX_DECLINED;
}


/*
 * A user who is not Active: 403, with the original API's messages.  Like
 * ngx_defarm_auth_require(), NGX_DECLINED means "go on".
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
