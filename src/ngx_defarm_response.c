
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "ngx_defarm_router.h"
#include "ngx_defarm_response.h"
#include "auth/ngx_defarm_usage.h"


#define NGX_DEFARM_ERR_MAX_MESSAGE  512


static ngx_int_t ngx_defarm_header_filter(ngx_http_request_t *r);


typedef struct {
    ngx_str_t                  name;
    ngx_uint_t                 retry;         /* send Retry-After: 1 */
} ngx_defarm_err_kind_t;


/* indexed by ngx_defarm_err_e */

static ngx_defarm_err_kind_t  ngx_defarm_err_kinds[] = {
    { ngx_string("validation_error"), 0 },
    { ngx_string("auth_error"), 0 },
    { ngx_string("not_found"), 0 },
    { ngx_string("method_not_allowed"), 0 },
    { ngx_string("conflict"), 0 },
    { ngx_string("payload_too_large"), 0 },
    { ngx_string("unsupported_media_type"), 0 },
    { ngx_string("request_timeout"), 0 },
    { ngx_string("rate_limit_exceeded"), 0 },
    { ngx_string("storage_lock_timeout"), 1 },
    { ngx_string("database_timeout"), 0 },
    { ngx_string("database_error"), 0 },
    { ngx_string("database_unavailable"), 1 },
    { ngx_string("db_pool_exhausted"), 1 },
    { ngx_string("crypt_busy"), 1 },
    { ngx_string("insufficient_credits"), 0 },
    { ngx_string("monthly_item_limit_exceeded"), 0 },
    { ngx_string("circuit_limit_exceeded"), 0 },
    { ngx_string("hourly_request_limit_exceeded"), 0 },
    { ngx_string("idempotency_key_reused"), 0 },
    { ngx_string("service_unavailable"), 1 },
    { ngx_string("external_timeout"), 0 },
    { ngx_string("external_error"), 0 },
    { ngx_string("adapter_unavailable"), 0 },
    { ngx_string("internal_error"), 0 }
};


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;

static ngx_str_t  ngx_defarm_json_type = ngx_string("application/json");
static ngx_str_t  ngx_defarm_retry_after = ngx_string("1");


ngx_int_t
ngx_defarm_add_header(ngx_http_request_t *r, const char *name,
    ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);
    h->value = *value;

    return NGX_OK;
}


ngx_int_t
ngx_defarm_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_defarm_json_writer_t *w)
{
    off_t         len;
    ngx_chain_t  *out, *cl;

    if (ngx_defarm_json_finish(w, &out, &len) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (cl = out; cl->next; cl = cl->next) { /* void */ }

    cl->buf->last_buf = (r == r->main) ? 1 : 0;
    cl->buf->last_in_chain = 1;

    return ngx_defarm_send_chain(r, status, &ngx_defarm_json_type, out, len);
}


/* JSON text made elsewhere (PostgreSQL, the cache), alive with r */

ngx_int_t
ngx_defarm_send_text(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *json)
{
    ngx_buf_t    *b;
    ngx_chain_t  *out;

    b = ngx_calloc_buf(r->pool);
    out = ngx_alloc_chain_link(r->pool);

    if (b == NULL || out == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = json->data;
    b->last = json->data + json->len;
    b->memory = json->len ? 1 : 0;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out->buf = b;
    out->next = NULL;

    return ngx_defarm_send_chain(r, status, &ngx_defarm_json_type, out,
                                 json->len);
}


ngx_int_t
ngx_defarm_send_chain(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, ngx_chain_t *out, off_t len)
{
    ngx_int_t  rc;

    r->headers_out.status = status;
    r->headers_out.content_type = *type;
    r->headers_out.content_type_len = type->len;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.content_length_n = len;

    if (r->headers_out.content_length) {
        r->headers_out.content_length->hash = 0;
        r->headers_out.content_length = NULL;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, out);
}


/*
 * Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing past
 * U+10FFFF, as PostgreSQL takes text and RFC 6455 §8.1 wants it (JSON
 * strings, query arguments, WebSocket text).  NGX_OK or NGX_ERROR.
 */

ngx_int_t
ngx_defarm_utf8_valid(u_char *p, size_t n)
{
    u_char  *last, c;
    size_t   more;

    last = p + n;

    while (p < last) {
        c = *p++;

        if (c < 0x80) {
            continue;
        }

        if (c >= 0xc2 && c <= 0xdf) {
            more = 1;

        } else if (c >= 0xe0 && c <= 0xef) {
            more = 2;

            if (last - p < 2) {
                return NGX_ERROR;
            }

            if ((c == 0xe0 && p[0] < 0xa0)           /* overlong */
                || (c == 0xed && p[0] > 0x9f))       /* surrogates */
            {
                return NGX_ERROR;
            }

        } else if (c >= 0xf0 && c <= 0xf4) {
            more = 3;

            if (last - p < 3) {
                return NGX_ERROR;
            }

            if ((c == 0xf0 && p[0] < 0x90)           /* overlong */
                || (c == 0xf4 && p[0] > 0x8f))       /* > U+10FFFF */
            {
                return NGX_ERROR;
            }

        } else {
            return NGX_ERROR;
        }

        if ((size_t) (last - p) < more) {
            return NGX_ERROR;
        }

        while (more--) {
            if ((*p++ & 0xc0) != 0x80) {
                return NGX_ERROR;
            }
        }
    }

    return NGX_OK;
}


/* what is not UTF-8 (or was cut mid-character) becomes '?', in place */

void
ngx_defarm_utf8_repair(ngx_str_t *s)
{
    u_char  *p, *last, *next;

    p = s->data;
    last = s->data + s->len;

    while (p < last) {
        if (*p < 0x80) {
            p++;
            continue;
        }

        next = p;

        if (ngx_utf8_decode(&next, last - p) > 0x10ffff) {
            *p++ = '?';
            continue;
        }

        p = next;
    }
}


ngx_int_t
ngx_defarm_error(ngx_http_request_t *r, ngx_uint_t status,
    ngx_defarm_err_e kind, const char *fmt, ...)
{
    u_char                     *p, *esc;
    va_list                     args;
    ngx_str_t                   msg, *trace, *endpoint, user, none;
    ngx_uint_t                  level;
    ngx_msec_int_t              ms;
    ngx_time_t                 *tp;
    ngx_defarm_ctx_t           *ctx;
    ngx_defarm_err_kind_t      *ek;
    ngx_http_variable_value_t  *vv;
    ngx_defarm_main_conf_t     *mcf;
    ngx_defarm_json_writer_t   *w;
    u_char                      buf[NGX_DEFARM_ERR_MAX_MESSAGE];

    ek = &ngx_defarm_err_kinds[kind];

    va_start(args, fmt);
    p = ngx_vslprintf(buf, buf + sizeof(buf), fmt, args);
    va_end(args);

    msg.data = buf;
    msg.len = p - buf;

    /* messages quote input: what is not UTF-8 (or was cut) becomes '?' */

    ngx_defarm_utf8_repair(&msg);

    ngx_str_set(&none, "-");

    ctx = ngx_defarm_get_ctx(r);
    if (ctx) {
        ctx->error_kind = ek->name;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_defarm_module);
    vv = ngx_http_get_indexed_variable(r, mcf->request_id_index);

    trace = &none;

    if (vv && !vv->not_found) {
        trace = ngx_palloc(r->pool, sizeof(ngx_str_t));
        if (trace == NULL) {
            return NGX_ERROR;
        }

        trace->data = vv->data;
        trace->len = vv->len;
    }

    endpoint = (ctx && ctx->route) ? &ctx->route->pattern : &r->uri;
    user = (ctx && ctx->user_id.len) ? ctx->user_id : none;

    tp = ngx_timeofday();
    ms = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000
                           + (tp->msec - r->start_msec));
    ms = ngx_max(ms, 0);

    /* one key=value line per error, for scripts/analyze_errors.sh */

    esc = ngx_pnalloc(r->pool, msg.len + ngx_escape_json(NULL, msg.data,
                                                         msg.len));
    if (esc == NULL) {
        return NGX_ERROR;
    }

    p = (u_char *) ngx_escape_json(esc, msg.data, msg.len);

    level = (status >= NGX_HTTP_INTERNAL_SERVER_ERROR) ? NGX_LOG_ERR
                                                       : NGX_LOG_WARN;

    ngx_log_error(level, r->connection->log, 0,
                  "defarm_error error_kind=%V status=%ui method=%V "
                  "endpoint=%V trace_id=%V duration_ms=%M user_id=%V "
                  "message=\"%*s\"",
                  &ek->name, status, &r->method_name, endpoint, trace, ms,
                  &user, (size_t) (p - esc), esc);

    if (r->header_sent) {
        /* too late for a JSON body: the client sees the connection end */
        return NGX_ERROR;
    }

    /*
     * Headers a caller added for this error (Allow, rate-limit headers)
     * stay; Retry-After goes on the kinds a client should retry.
     */

    if (ek->retry
        && ngx_defarm_add_header(r, "Retry-After", &ngx_defarm_retry_after)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    w = ngx_defarm_json_writer(r);
    if (w == NULL) {
        return NGX_ERROR;
    }

    ngx_defarm_jw_map_open(w);
    ngx_defarm_jw_key(w, "error");
    ngx_defarm_jw_str(w, &msg);
    ngx_defarm_jw_key(w, "error_kind");
    ngx_defarm_jw_str(w, &ek->name);
    ngx_defarm_jw_key(w, "trace_id");
    ngx_defarm_jw_str(w, trace);
    ngx_defarm_jw_key(w, "status");
    ngx_defarm_jw_int(w, status);

    if (ctx && ctx->error_fields) {
        ctx->error_fields(r, w, ctx->error_data);
    }

    ngx_defarm_jw_map_close(w);

    return ngx_defarm_send(r, status, w);
}


/*
 * Server-Timing: where this request's time went (lock, db, crypt) and in
 * total, the C form of the original's planned tracing spans.
 */

ngx_int_t
ngx_defarm_server_timing(ngx_http_request_t *r)
{
    u_char            *p;
    uint64_t           us;
    ngx_str_t          v;
    ngx_time_t        *tp;
    ngx_defarm_ctx_t  *ctx;

    ctx = ngx_defarm_get_ctx(r);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    p = ngx_pnalloc(r->pool, 4 * (sizeof("crypt;dur=.000, ") + NGX_INT64_LEN));
    if (p == NULL) {
        return NGX_ERROR;
    }

    v.data = p;

    if (ctx->lock_timed) {
        p = ngx_sprintf(p, "lock;dur=%uL.%03uL, ",
                        ctx->lock_us / 1000, ctx->lock_us % 1000);
    }

    if (ctx->db_timed) {
        p = ngx_sprintf(p, "db;dur=%uL.%03uL, ",
                        ctx->db_us / 1000, ctx->db_us % 1000);
    }

    if (ctx->crypt_timed) {
        p = ngx_sprintf(p, "crypt;dur=%uL.%03uL, ",
                        ctx->crypt_us / 1000, ctx->crypt_us % 1000);
    }

    tp = ngx_timeofday();
    us = ((uint64_t) (tp->sec - r->start_sec) * 1000
          + (tp->msec - r->start_msec)) * 1000;

    p = ngx_sprintf(p, "total;dur=%uL", us / 1000);

    v.len = p - v.data;

    return ngx_defarm_add_header(r, "Server-Timing", &v);
}


/*
 * Errors that nginx itself raises before a handler runs (a body over
 * client_max_body_size, a bad request line, a header too large, limit_req)
 * reach a "defarm_errors" location through error_page; they are answered
 * in the same JSON shape as the module's own errors.
 */

/* the kind named so (an error raised by SQL names its kind), or NGX_ERROR */

ngx_int_t
ngx_defarm_error_kind(ngx_str_t *name)
{
    ngx_uint_t  i;

    for (i = 0; i < sizeof(ngx_defarm_err_kinds)
                    / sizeof(ngx_defarm_err_kind_t); i++)
    {
        if (ngx_defarm_err_kinds[i].name.len == name->len
            && ngx_strncmp(ngx_defarm_err_kinds[i].name.data, name->data,
                           name->len) == 0)
        {
            return i;
        }
    }

    return NGX_ERROR;
}


ngx_int_t
ngx_defarm_error_status(ngx_http_request_t *r, ngx_uint_t status)
{
    ngx_defarm_err_e   kind;
    const char        *msg;

    switch (status) {

    case NGX_HTTP_BAD_REQUEST:
    case NGX_HTTP_REQUEST_URI_TOO_LARGE:
    case NGX_HTTP_REQUEST_HEADER_TOO_LARGE:
        kind = NGX_DEFARM_ERR_VALIDATION;
        msg = "Bad request";
        break;

    case NGX_HTTP_UNAUTHORIZED:
    case NGX_HTTP_FORBIDDEN:
        kind = NGX_DEFARM_ERR_AUTH;
        msg = "Access denied";
        break;

    case NGX_HTTP_NOT_FOUND:
        kind = NGX_DEFARM_ERR_NOT_FOUND;
        msg = "Not found";
        break;

    case NGX_HTTP_NOT_ALLOWED:
        kind = NGX_DEFARM_ERR_METHOD_NOT_ALLOWED;
        msg = "Method not allowed";
        break;

    case NGX_HTTP_REQUEST_TIME_OUT:
        kind = NGX_DEFARM_ERR_REQUEST_TIMEOUT;
        msg = "Request timed out";
        break;

    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        kind = NGX_DEFARM_ERR_PAYLOAD_TOO_LARGE;
        msg = "Request body too large";
        break;

    case NGX_HTTP_TOO_MANY_REQUESTS:
        kind = NGX_DEFARM_ERR_RATE_LIMIT;
        msg = "Too many requests";
        break;

    case NGX_HTTP_SERVICE_UNAVAILABLE:
        kind = NGX_DEFARM_ERR_SERVICE_UNAVAILABLE;
        msg = "Service temporarily unavailable, please retry";
        break;

    case NGX_HTTP_BAD_GATEWAY:
        kind = NGX_DEFARM_ERR_EXTERNAL_ERROR;
        msg = "Bad gateway";
        break;

    case NGX_HTTP_GATEWAY_TIME_OUT:
        kind = NGX_DEFARM_ERR_EXTERNAL_TIMEOUT;
        msg = "Gateway timeout";
        break;

    default:
        if (status < NGX_HTTP_BAD_REQUEST) {
            status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (status >= NGX_HTTP_INTERNAL_SERVER_ERROR) {
            kind = NGX_DEFARM_ERR_INTERNAL;
            msg = "Internal server error";

        } else {
            kind = NGX_DEFARM_ERR_VALIDATION;
            msg = "Bad request";
        }
    }

    return ngx_defarm_error(r, status, kind, "%s", msg);
}


static ngx_int_t
ngx_defarm_header_filter(ngx_http_request_t *r)
{
    ngx_str_t                   id;
    ngx_defarm_ctx_t           *ctx;
    ngx_defarm_loc_conf_t      *lcf;
    ngx_defarm_main_conf_t     *mcf;
    ngx_http_variable_value_t  *vv;

    if (r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_defarm_module);

    if (!(lcf->api || lcf->health || lcf->errors)) {
        return ngx_http_next_header_filter(r);
    }

    /* the trace id every error body carries, on every response */

    mcf = ngx_http_get_module_main_conf(r, ngx_defarm_module);
    vv = ngx_http_get_indexed_variable(r, mcf->request_id_index);

    if (vv && !vv->not_found) {
        id.data = vv->data;
        id.len = vv->len;

        if (ngx_defarm_add_header(r, "X-Request-Id", &id) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    /* a response to an API key counts in its usage, errors included */

    ctx = ngx_http_get_module_ctx(r, ngx_defarm_module);

    if (ctx && ctx->key_id.len) {
        ngx_defarm_usage_record(r, ctx);
    }

    return ngx_http_next_header_filter(r);
}


void
ngx_defarm_response_init(void)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_defarm_header_filter;
}
