
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "ngx_defarm_router.h"


/*
 * Routes are compiled once, at configuration time, into arrays of path
 * segments.  A request path is split once; a route matches when it has the
 * same number of segments and every literal segment is equal (":name"
 * segments match any non-empty segment).  When several routes match, the one
 * with the most literal segments wins, so "/api/items/stats" beats
 * "/api/items/:dfid" whatever the order of the tables.
 *
 * A request path matches exactly: "/metrics/", "//metrics" (with
 * merge_slashes off) and "/api//items" are not routes, because nginx's own
 * location matching does not see them as the same path, and an access rule
 * on "location = /metrics" must not be walked around.
 */


#define NGX_DEFARM_MAX_SEGMENTS  12


typedef struct {
    ngx_defarm_route_t        *route;
    ngx_str_t                 *segs;
    ngx_uint_t                 nsegs;
    ngx_uint_t                 literals;
} ngx_defarm_croute_t;


static ngx_uint_t ngx_defarm_split(u_char *p, u_char *last, ngx_str_t *segs,
    ngx_uint_t max);


static ngx_str_t  ngx_defarm_method_names[] = {
    ngx_string("GET"), ngx_string("HEAD"), ngx_string("POST"),
    ngx_string("PUT"), ngx_string("DELETE"), ngx_string("PATCH"),
    ngx_string("OPTIONS")
};

static ngx_uint_t  ngx_defarm_method_bits[] = {
    NGX_HTTP_GET, NGX_HTTP_HEAD, NGX_HTTP_POST, NGX_HTTP_PUT,
    NGX_HTTP_DELETE, NGX_HTTP_PATCH, NGX_HTTP_OPTIONS
};


/* a path, a route's or a request's: "/" then non-empty segments; or max + 1 */

static ngx_uint_t
ngx_defarm_split(u_char *p, u_char *last, ngx_str_t *segs, ngx_uint_t max)
{
    u_char      *start;
    ngx_uint_t   n;

    if (p == last || *p != '/') {
        return max + 1;
    }

    if (last - p == 1) {
        return 0;                       /* "/" */
    }

    n = 0;

    while (p < last) {
        start = ++p;                    /* past the '/' */

        while (p < last && *p != '/') {
            p++;
        }

        if (p == start || n == max) {
            return max + 1;             /* an empty segment, or too many */
        }

        segs[n].data = start;
        segs[n].len = p - start;
        n++;
    }

    return n;
}


ngx_int_t
ngx_defarm_router_add(ngx_conf_t *cf, ngx_defarm_main_conf_t *mcf,
    ngx_defarm_route_t *routes)
{
    ngx_uint_t            i, n;
    ngx_str_t             segs[NGX_DEFARM_MAX_SEGMENTS];
    ngx_defarm_croute_t  *cr;

    if (mcf->routes == NULL) {
        mcf->routes = ngx_array_create(cf->pool, 64,
                                       sizeof(ngx_defarm_croute_t));
        if (mcf->routes == NULL) {
            return NGX_ERROR;
        }
    }

    for ( /* void */ ; routes->handler; routes++) {

        n = ngx_defarm_split(routes->pattern.data,
                             routes->pattern.data + routes->pattern.len,
                             segs, NGX_DEFARM_MAX_SEGMENTS);

        if (n > NGX_DEFARM_MAX_SEGMENTS) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "defarm route \"%V\" has an empty segment "
                               "or too many",
                               &routes->pattern);
            return NGX_ERROR;
        }

        cr = ngx_array_push(mcf->routes);
        if (cr == NULL) {
            return NGX_ERROR;
        }

        cr->route = routes;
        cr->nsegs = n;
        cr->literals = 0;
        cr->segs = ngx_pnalloc(cf->pool, (n ? n : 1) * sizeof(ngx_str_t));
        if (cr->segs == NULL) {
            return NGX_ERROR;
        }

        for (i = 0; i < n; i++) {
            cr->segs[i] = segs[i];

            if (segs[i].data[0] != ':') {
                cr->literals++;
            }
        }
    }

    return NGX_OK;
}


ngx_defarm_route_rc_e
ngx_defarm_router_match(ngx_http_request_t *r, ngx_defarm_main_conf_t *mcf,
    ngx_defarm_loc_conf_t *lcf, ngx_defarm_ctx_t *ctx, ngx_str_t *allow)
{
    u_char               *p;
    ngx_uint_t            i, k, n, allowed, method;
    ngx_str_t             segs[NGX_DEFARM_MAX_SEGMENTS];
    ngx_defarm_route_t   *rt;
    ngx_defarm_croute_t  *cr, *best;

    if (mcf->routes == NULL) {
        return NGX_DEFARM_ROUTE_NOT_FOUND;
    }

    n = ngx_defarm_split(r->uri.data, r->uri.data + r->uri.len, segs,
                         NGX_DEFARM_MAX_SEGMENTS);

    if (n > NGX_DEFARM_MAX_SEGMENTS) {
        return NGX_DEFARM_ROUTE_NOT_FOUND;
    }

    /* HEAD is answered by the GET handler; nginx drops the body */
    method = (r->method == NGX_HTTP_HEAD) ? NGX_HTTP_GET : r->method;

    best = NULL;
    allowed = 0;
    cr = mcf->routes->elts;

    for (i = 0; i < mcf->routes->nelts; i++) {
        rt = cr[i].route;

        if (cr[i].nsegs != n) {
            continue;
        }

        if ((rt->flags & NGX_DEFARM_ROUTE_ECHO) && !lcf->echo) {
            continue;
        }

        if (!lcf->api && !(rt->flags & NGX_DEFARM_ROUTE_HEALTH)) {
            continue;
        }

        if (lcf->api && (rt->flags & NGX_DEFARM_ROUTE_METRICS)) {
            continue;                   /* only where defarm_health is */
        }

        for (k = 0; k < n; k++) {
            if (cr[i].segs[k].data[0] == ':') {
                continue;
            }

            if (cr[i].segs[k].len != segs[k].len
                || ngx_strncmp(cr[i].segs[k].data, segs[k].data, segs[k].len)
                   != 0)
            {
                break;
            }
        }

        if (k != n) {
            continue;
        }

        if (!(rt->methods & method)) {
            allowed |= rt->methods;
            continue;
        }

        if (best == NULL || cr[i].literals > best->literals) {
            best = &cr[i];
        }
    }

    if (best == NULL) {

        if (allowed == 0) {
            return NGX_DEFARM_ROUTE_NOT_FOUND;
        }

        if (allowed & NGX_HTTP_GET) {
            allowed |= NGX_HTTP_HEAD;
        }

        p = ngx_pnalloc(r->pool, sizeof("GET, HEAD, POST, PUT, DELETE, "
                                        "PATCH, OPTIONS") - 1);
        if (p == NULL) {
            allow->len = 0;
            return NGX_DEFARM_ROUTE_BAD_METHOD;
        }

        allow->data = p;

        for (i = 0; i < sizeof(ngx_defarm_method_bits) / sizeof(ngx_uint_t);
             i++)
        {
            if (!(allowed & ngx_defarm_method_bits[i])) {
                continue;
            }

            if (p != allow->data) {
                *p++ = ','; *p++ = ' ';
            }

            p = ngx_cpymem(p, ngx_defarm_method_names[i].data,
                           ngx_defarm_method_names[i].len);
        }

        allow->len = p - allow->data;

        return NGX_DEFARM_ROUTE_BAD_METHOD;
    }

    ctx->route = best->route;
    ctx->nparams = 0;

    for (k = 0; k < n && ctx->nparams < NGX_DEFARM_MAX_PARAMS; k++) {
        if (best->segs[k].data[0] != ':') {
            continue;
        }

        ctx->params[ctx->nparams].name.data = best->segs[k].data + 1;
        ctx->params[ctx->nparams].name.len = best->segs[k].len - 1;
        ctx->params[ctx->nparams].value = segs[k];
        ctx->nparams++;
    }

    return NGX_DEFARM_ROUTE_FOUND;
}


ngx_str_t *
ngx_defarm_param(ngx_defarm_ctx_t *ctx, const char *name)
{
    size_t      len;
    ngx_uint_t  i;

    len = ngx_strlen(name);

    for (i = 0; i < ctx->nparams; i++) {
        if (ctx->params[i].name.len == len
            && ngx_strncmp(ctx->params[i].name.data, name, len) == 0)
        {
            return &ctx->params[i].value;
        }
    }

    return NULL;
}
