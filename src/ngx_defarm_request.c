
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "ngx_defarm_module.h"
#include "ngx_defarm_router.h"
#include "ngx_defarm_response.h"
#include "auth/ngx_defarm_auth.h"
#include "auth/ngx_defarm_ratelimit.h"
#include "api/ngx_defarm_api_fn.h"


/*
 * The content handler: route the request, read and parse its JSON body
 * when the route takes one, authenticate the caller when the route says
 * who may call it, and hand it to the route's handler.  Bodies are read
 * with nginx's own reader, so client_max_body_size and
 * client_body_timeout govern them, but a request body filter feeds each
 * piece to the JSON parser as it arrives and keeps nothing: a body costs
 * one client_body_buffer_size buffer while it is read (never a buffer of
 * the size a client declared, never a temporary file), plus the tree,
 * bounded by defarm_json_max_memory.
 */


static ngx_int_t ngx_defarm_json_content_type(ngx_http_request_t *r);
static ngx_int_t ngx_defarm_dispatch(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_run(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_run_known(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_run_handler(ngx_http_request_t *r, void *data);
static void ngx_defarm_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_defarm_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);


static ngx_http_request_body_filter_pt  ngx_defarm_next_body_filter;


static ngx_int_t
ngx_defarm_json_content_type(ngx_http_request_t *r)
{
    u_char     *p, *last;
    ngx_str_t  *ct;

    if (r->headers_in.content_type == NULL) {
        return NGX_OK;
    }

    /* application/json, application/<x>+json, with or without parameters */

    ct = &r->headers_in.content_type->value;
    p = ct->data;
    last = ngx_strlchr(p, p + ct->len, ';');

    if (last == NULL) {
        last = p + ct->len;
    }

    while (last > p && last[-1] == ' ') {
        last--;
    }

    if ((size_t) (last - p) < sizeof("application/json") - 1
        || ngx_strncasecmp(p, (u_char *) "application/", 12) != 0)
    {
        return NGX_DECLINED;
    }

    if ((size_t) (last - p) == sizeof("application/json") - 1
        && ngx_strncasecmp(p + 12, (u_char *) "json", 4) == 0)
    {
        return NGX_OK;
    }

    if (ngx_strncasecmp(last - 5, (u_char *) "+json", 5) == 0) {
        return NGX_OK;
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_defarm_dispatch(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_int_t   rc;
    ngx_str_t   err;
    ngx_uint_t  status;

    if (!(ctx->route->flags & NGX_DEFARM_ROUTE_BODY)) {
        return ngx_defarm_run(r, ctx);
    }

    if (ngx_defarm_json_received(ctx->parser) == 0) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "Request body is required");
    }

    rc = ngx_defarm_json_end(ctx->parser, &ctx->body, &err, &status);
    ctx->parser = NULL;

    if (rc == NGX_DECLINED) {
        return ngx_defarm_error(r, status,
                                status == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE
                                ? NGX_DEFARM_ERR_PAYLOAD_TOO_LARGE
                                : NGX_DEFARM_ERR_VALIDATION,
                                "%V", &err);
    }

    if (rc != NGX_OK) {
        return ngx_defarm_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                NGX_DEFARM_ERR_INTERNAL,
                                "Internal server error");
    }

    return ngx_defarm_run(r, ctx);
}


/* the route's access rule first: its handler runs once the caller is known */

static ngx_int_t
ngx_defarm_run(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_uint_t  flags;

    flags = ctx->route->flags;

    if (flags & NGX_DEFARM_ROUTE_AUTH) {
        return ngx_defarm_auth_require(r, ctx,
                                       flags & (NGX_DEFARM_ROUTE_JWT
                                                |NGX_DEFARM_ROUTE_ADMIN
                                                |NGX_DEFARM_ROUTE_QTOKEN),
                                       ngx_defarm_run_known);
    }

    return ctx->route->handler(r, ctx);
}


/* the caller known: with defarm_tier_limits, their tier's hourly limit */

static ngx_int_t
ngx_defarm_run_known(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_defarm_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_defarm_module);

    if (mcf->tier_limits && ctx->request_limit >= 0) {
        return ngx_defarm_ratelimit_tier(r, ctx, ngx_defarm_run_handler,
                                         ctx);
    }

    return ctx->route->handler(r, ctx);
}


static ngx_int_t
ngx_defarm_run_handler(ngx_http_request_t *r, void *data)
{
    ngx_defarm_ctx_t  *ctx = data;

    return ctx->route->handler(r, ctx);
}


static ngx_int_t
ngx_defarm_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_buf_t         *b;
    ngx_uint_t         last;
    ngx_chain_t       *cl, out;
    ngx_defarm_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_defarm_module);

    if (ctx == NULL || (ctx->parser == NULL && !ctx->drop_body)) {
        return ngx_defarm_next_body_filter(r, in);
    }

    /*
     * Each buffer is parsed (or, for a route without a body, dropped) and
     * marked consumed, so nginx reuses its one body buffer for what comes
     * next.  After a parse error the rest is still read (and skipped):
     * the error is answered with its message once the body has ended, and
     * the connection stays usable.  Only the end of the body goes on to
     * nginx's save filter, which it needs to know that reading is over.
     */

    last = 0;

    for (cl = in; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file) {
            /* never here: bodies are not written to files before this */
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (b->last > b->pos && ctx->parser
            && ngx_defarm_json_feed(ctx->parser, b->pos, b->last - b->pos)
               == NGX_ERROR)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        b->pos = b->last;

        if (b->last_buf) {
            last = 1;
        }
    }

    if (!last) {
        return NGX_OK;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last_buf = 1;
    out.buf = b;
    out.next = NULL;

    return ngx_defarm_next_body_filter(r, &out);
}


void
ngx_defarm_request_body_init(void)
{
    ngx_defarm_next_body_filter = ngx_http_top_request_body_filter;
    ngx_http_top_request_body_filter = ngx_defarm_body_filter;
}


static void
ngx_defarm_body_handler(ngx_http_request_t *r)
{
    ngx_defarm_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_defarm_module);

    ngx_http_finalize_request(r, ngx_defarm_dispatch(r, ctx));
}


ngx_int_t
ngx_defarm_content_handler(ngx_http_request_t *r)
{
    ngx_int_t                rc;
    ngx_str_t                allow;
    ngx_defarm_ctx_t        *ctx;
    ngx_defarm_loc_conf_t   *lcf;
    ngx_defarm_main_conf_t  *mcf;

    ctx = ngx_defarm_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_defarm_module);
    lcf = ngx_http_get_module_loc_conf(r, ngx_defarm_module);

    switch (ngx_defarm_router_match(r, mcf, lcf, ctx, &allow)) {

    case NGX_DEFARM_ROUTE_FOUND:
        break;

    case NGX_DEFARM_ROUTE_BAD_METHOD:
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        if (allow.len
            && ngx_defarm_add_header(r, "Allow", &allow) != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_defarm_error(r, NGX_HTTP_NOT_ALLOWED,
                                NGX_DEFARM_ERR_METHOD_NOT_ALLOWED,
                                "Method %V is not allowed here; allowed: %V",
                                &r->method_name, &allow);

    default: /* NGX_DEFARM_ROUTE_NOT_FOUND */
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_defarm_error(r, NGX_HTTP_NOT_FOUND,
                                NGX_DEFARM_ERR_NOT_FOUND,
                                "Route not found: %V %V",
                                &r->method_name, &r->uri);
    }

    if (r->args.len && ngx_defarm_args_valid(r) != NGX_OK) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "Query arguments must be valid UTF-8, "
                                "without NUL");
    }

    if (!(ctx->route->flags & NGX_DEFARM_ROUTE_BODY)) {

        if (r->headers_in.content_length_n <= 0 && !r->headers_in.chunked) {
            return ngx_defarm_dispatch(r, ctx);
        }

        /*
         * A body the route does not take is read and dropped before the
         * handler runs, not left to nginx's discarding: a handler that
         * waits (for the database, the lock) would otherwise take over
         * the read handler that drains it, and nginx would arm its
         * lingering timer at the first wait, so the connection would not
         * be kept alive once answered.
         */

        ctx->drop_body = 1;

    } else if (ngx_defarm_json_content_type(r) != NGX_OK) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_defarm_error(r, NGX_HTTP_UNSUPPORTED_MEDIA_TYPE,
                                NGX_DEFARM_ERR_UNSUPPORTED_MEDIA_TYPE,
                                "Content-Type must be application/json");

    } else {
        ctx->parser = ngx_defarm_json_parser(r->pool, lcf->json_max_depth,
                                             lcf->json_max_nodes,
                                             lcf->json_max_memory);
        if (ctx->parser == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    rc = ngx_http_read_client_request_body(r, ngx_defarm_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/*
 * A handler suspends its request to wait for PostgreSQL, Redis, the cache
 * lock or a thread, and a client that goes away meanwhile is noticed.  The
 * body was read before the handler ran, so there is nothing else to read.
 */

void
ngx_defarm_request_wait(ngx_http_request_t *r)
{
    r->main->count++;
    r->read_event_handler = ngx_http_test_reading;
}


ngx_int_t
ngx_defarm_errors_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    /* r->err_status is the status that error_page redirected here with */

    return ngx_defarm_error_status(r, r->err_status ? r->err_status
                                                    : NGX_HTTP_NOT_FOUND);
}


/* a request header by its name, whatever its case: the first, or NULL */

ngx_table_elt_t *
ngx_defarm_header(ngx_http_request_t *r, const char *name)
{
    size_t            len;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    len = ngx_strlen(name);
    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }
}


/*
 * The Idempotency-Key header of a chargeable POST, for the SQL that keeps
 * its answer: NGX_OK with *key set (data NULL, an SQL NULL, when there is
 * none), or NGX_DECLINED with *err saying why the key is refused (empty,
 * longer than 255, not printable ASCII, or given twice).
 */

ngx_int_t
ngx_defarm_idempotency_key(ngx_http_request_t *r, ngx_str_t *key,
    ngx_str_t *err)
{
    u_char           *p;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    key->data = NULL;
    key->len = 0;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len != sizeof("Idempotency-Key") - 1
            || ngx_strncasecmp(h[i].key.data, (u_char *) "Idempotency-Key",
                               h[i].key.len) != 0)
        {
            continue;
        }

        if (key->data) {
            ngx_str_set(err, "Only one Idempotency-Key header");
            return NGX_DECLINED;
        }

        if (h[i].value.len == 0 || h[i].value.len > 255) {
            ngx_str_set(err, "Idempotency-Key must be 1 to 255 characters");
            return NGX_DECLINED;
        }

        for (p = h[i].value.data; p < h[i].value.data + h[i].value.len; p++)
        {
            if (*p < 0x21 || *p > 0x7e) {
                ngx_str_set(err, "Idempotency-Key must be printable ASCII "
                                 "without spaces");
                return NGX_DECLINED;
            }
        }

        *key = h[i].value;
    }

    return NGX_OK;
}
