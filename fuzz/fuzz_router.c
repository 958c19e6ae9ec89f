
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "fuzz.h"
#include "ngx_defarm_router.h"
#include "ngx_defarm_json.h"
#include "api/ngx_defarm_api_fn.h"


/*
 * The router over the module's real route patterns (fuzz_routes.h, made
 * from src/ by scripts/fuzz.sh), then what a function route makes of the
 * request: its path parameters and its query arguments, decoded, as the
 * JSON text PostgreSQL is given (which must parse back).
 *
 *   byte 0: the method; byte 1: defarm_api / defarm_echo on or off;
 *   the rest: the path, and after a '?' the query string.
 */


static ngx_int_t
ngx_defarm_fuzz_handler(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    return NGX_OK;
}


static ngx_defarm_route_t  ngx_defarm_fuzz_routes[] = {
#include "fuzz_routes.h"
    ngx_defarm_route_null
};


static ngx_uint_t  ngx_defarm_fuzz_methods[] = {
    NGX_HTTP_GET, NGX_HTTP_HEAD, NGX_HTTP_POST, NGX_HTTP_PUT,
    NGX_HTTP_DELETE, NGX_HTTP_PATCH, NGX_HTTP_OPTIONS, NGX_HTTP_TRACE
};


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                *uri, *q;
    ngx_str_t              allow, *v;
    ngx_uint_t             i, status;
    ngx_conf_t             cf;
    ngx_defarm_fuzz_t      fz;
    ngx_defarm_json_t     *root;
    ngx_defarm_fn_req_t   *fr;
    ngx_defarm_route_rc_e  rc;
    ngx_defarm_json_parser_t  *ps;
    ngx_str_t              err;

    if (size < 2) {
        return 0;
    }

    if (ngx_defarm_fuzz_begin(&fz) != NGX_OK) {
        return 0;
    }

    ngx_memzero(&cf, sizeof(ngx_conf_t));
    cf.pool = fz.pool;
    cf.log = &ngx_defarm_fuzz_log;

    ngx_defarm_fuzz_assert(ngx_defarm_router_add(&cf, fz.mcf,
                                                 ngx_defarm_fuzz_routes)
                           == NGX_OK);

    fz.r->method = ngx_defarm_fuzz_methods[data[0] & 7];
    fz.lcf->api = !(data[1] & 1);
    fz.lcf->echo = (data[1] >> 1) & 1;

    uri = ngx_defarm_fuzz_copy(&fz, data + 2, size - 2);
    ngx_defarm_fuzz_assert(uri != NULL);

    q = ngx_strlchr(uri, uri + size - 2, '?');

    fz.r->uri.data = uri;
    fz.r->uri.len = (q ? q : uri + size - 2) - uri;

    if (q) {
        fz.r->args.data = q + 1;
        fz.r->args.len = uri + size - 2 - (q + 1);
    }

    ngx_str_null(&allow);

    rc = ngx_defarm_router_match(fz.r, fz.mcf, fz.lcf, fz.ctx, &allow);

    switch (rc) {

    case NGX_DEFARM_ROUTE_FOUND:
        ngx_defarm_fuzz_assert(fz.ctx->route != NULL);
        ngx_defarm_fuzz_assert(fz.ctx->nparams <= NGX_DEFARM_MAX_PARAMS);

        for (i = 0; i < fz.ctx->nparams; i++) {
            v = &fz.ctx->params[i].value;

            /* a parameter is a whole, non-empty segment of the path */
            ngx_defarm_fuzz_assert(v->len > 0);
            ngx_defarm_fuzz_assert(v->data > fz.r->uri.data
                                   && v->data + v->len
                                      <= fz.r->uri.data + fz.r->uri.len);
            ngx_defarm_fuzz_assert(v->data[-1] == '/');
            ngx_defarm_fuzz_assert(ngx_strlchr(v->data, v->data + v->len,
                                               '/') == NULL);
            ngx_defarm_fuzz_assert(ngx_defarm_param(fz.ctx, "id") != NULL
                                   || 1);
        }

        fz.ctx->user_id.data = (u_char *) "u";
        fz.ctx->user_id.len = 1;

        fr = ngx_defarm_fn_req(fz.r, fz.ctx);

        /* NULL only when a query argument is not UTF-8 (a 500 then) */
        if (fr == NULL) {
            break;
        }

        /* the decoded query arguments: a JSON object PostgreSQL can take */

        ps = ngx_defarm_json_parser(fz.pool, 4, 1 << 20, (size_t) 1 << 30);
        ngx_defarm_fuzz_assert(ps != NULL);
        ngx_defarm_fuzz_assert(ngx_defarm_json_feed(ps, fr->params[2].data,
                                                    fr->params[2].len)
                               == NGX_OK);
        root = NULL;

        /*
         * KNOWN, left open: a query argument decoded to "%00", or to bytes
         * yajl_gen lets by but that are not strict UTF-8 (an overlong, a
         * surrogate: fuzz/known/router/), is JSON PostgreSQL refuses (a
         * 500 where a 400 belongs); anything else must parse
         */

        if (ngx_defarm_json_end(ps, &root, &err, &status) != NGX_OK) {
            ngx_defarm_fuzz_assert(status == NGX_HTTP_BAD_REQUEST
                                   && err.len > 17
                                   && (ngx_strstr(err.data, "\\u0000")
                                       || ngx_strstr(err.data, "UTF-8")));
        }

        ngx_defarm_fuzz_assert(root == NULL
                               || root->type == NGX_DEFARM_JSON_OBJECT);
        break;

    case NGX_DEFARM_ROUTE_BAD_METHOD:
        ngx_defarm_fuzz_assert(allow.len > 0);
        break;

    default:
        break;
    }

    ngx_defarm_fuzz_end(&fz);

    return 0;
}
