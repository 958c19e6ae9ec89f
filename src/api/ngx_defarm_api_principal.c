
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "api/ngx_defarm_api.h"
#include "auth/ngx_defarm_auth.h"


/*
 * Diagnostics (defarm_echo on): who the credentials of a request make the
 * caller, by any method, and the same behind an admin route.  They show
 * what authentication resolved, so a client (or a test) can
 * check a key's rules without a side effect.
 */


static ngx_int_t ngx_defarm_principal_send(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);


ngx_defarm_route_t  ngx_defarm_principal_routes[] = {

    { NGX_HTTP_GET|NGX_HTTP_POST|NGX_HTTP_PUT|NGX_HTTP_PATCH
      |NGX_HTTP_DELETE|NGX_HTTP_OPTIONS,
      ngx_string("/api/echo/auth"),
      ngx_defarm_principal_send,
      NGX_DEFARM_ROUTE_ECHO|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/echo/auth/admin"),
      ngx_defarm_principal_send,
      NGX_DEFARM_ROUTE_ECHO|NGX_DEFARM_ROUTE_ADMIN },

    ngx_defarm_route_null
};


static ngx_int_t
ngx_defarm_principal_send(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_defarm_json_writer_t  *w;

    w = ngx_defarm_json_writer(r);
    if (w == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_defarm_jw_map_open(w);
    ngx_defarm_jw_key(w, "user_id");
    ngx_defarm_jw_str(w, &ctx->user_id);
    ngx_defarm_jw_key(w, "tier");
    ngx_defarm_jw_str(w, &ctx->tier);
    ngx_defarm_jw_key(w, "workspace_id");
    ngx_defarm_jw_str_or_null(w, &ctx->workspace_id);
    ngx_defarm_jw_key(w, "via");
    ngx_defarm_jw_cstr(w, ctx->via_key ? "api_key" : "jwt");

    ngx_defarm_jw_key(w, "key_id");
    ngx_defarm_jw_str_or_null(w, &ctx->key_id);

    ngx_defarm_jw_key(w, "permissions");

    if (ctx->via_key) {
        ngx_defarm_jw_map_open(w);
        ngx_defarm_jw_key(w, "read");
        ngx_defarm_jw_bool(w, ctx->key_perms & NGX_DEFARM_PERM_READ);
        ngx_defarm_jw_key(w, "write");
        ngx_defarm_jw_bool(w, ctx->key_perms & NGX_DEFARM_PERM_WRITE);
        ngx_defarm_jw_key(w, "admin");
        ngx_defarm_jw_bool(w, ctx->key_perms & NGX_DEFARM_PERM_ADMIN);
        ngx_defarm_jw_map_close(w);

    } else {
        ngx_defarm_jw_null(w);
    }

    ngx_defarm_jw_key(w, "is_admin");

    if (ctx->admin_known) {
        ngx_defarm_jw_bool(w, ctx->is_admin);

    } else {
        ngx_defarm_jw_null(w);
    }

    ngx_defarm_jw_map_close(w);

    return ngx_defarm_send(r, NGX_HTTP_OK, w);
}
