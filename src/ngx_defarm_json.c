
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "ngx_defarm_json.h"
#include "ngx_defarm_response.h"

#include <yajl/yajl_parse.h>


/*
 * Request bodies are parsed with yajl's streaming parser as they arrive,
 * buffer by buffer, into a tree in the request pool: a body is never held
 * whole, so what a connection costs is the body buffer plus what was
 * really parsed.  Depth, value count and the tree's memory are limited so
 * that a small body cannot make a large tree.  Responses are rendered with
 * yajl_gen through a print callback that appends to nginx buffers, so a
 * response is never copied once it is rendered.
 */


#define NGX_DEFARM_JSON_BUF_SIZE  4096


struct ngx_defarm_json_parser_s {
    ngx_pool_t                *pool;
    yajl_handle                handle;
    ngx_defarm_json_t         *root;
    ngx_defarm_json_t         *cur;
    ngx_str_t                  key;
    ngx_uint_t                 depth;
    ngx_uint_t                 max_depth;
    ngx_uint_t                 nodes;
    ngx_uint_t                 max_nodes;
    size_t                     memory;
    size_t                     max_memory;
    off_t                      received;      /* bytes fed so far */
    const char                *error;         /* from a callback */
    ngx_str_t                  message;       /* the failure, once failed */
    ngx_uint_t                 status;        /* 400 or 413, once failed */
    unsigned                   failed:1;
    unsigned                   nomem:1;
};


static ngx_defarm_json_t *ngx_defarm_json_add(ngx_defarm_json_parser_t *ps,
    ngx_defarm_json_type_e type);
static ngx_int_t ngx_defarm_json_copy(ngx_defarm_json_parser_t *ps,
    ngx_str_t *dst, const unsigned char *s, size_t len);
static ngx_int_t ngx_defarm_json_charge(ngx_defarm_json_parser_t *ps,
    size_t size);
static int ngx_defarm_json_on_null(void *ctx);
static int ngx_defarm_json_on_bool(void *ctx, int b);
static int ngx_defarm_json_on_number(void *ctx, const char *s, size_t len);
static int ngx_defarm_json_on_string(void *ctx, const unsigned char *s,
    size_t len);
static int ngx_defarm_json_on_open(void *ctx, ngx_defarm_json_type_e type);
static int ngx_defarm_json_on_map_open(void *ctx);
static int ngx_defarm_json_on_array_open(void *ctx);
static int ngx_defarm_json_on_key(void *ctx, const unsigned char *s,
    size_t len);
static int ngx_defarm_json_on_close(void *ctx);
static void ngx_defarm_json_parser_cleanup(void *data);
static void ngx_defarm_json_fail(ngx_defarm_json_parser_t *ps, size_t at);
static void ngx_defarm_json_gen_cleanup(void *data);
static void ngx_defarm_json_print(void *ctx, const char *s, size_t len);


static yajl_callbacks  ngx_defarm_json_callbacks = {
    ngx_defarm_json_on_null,
    ngx_defarm_json_on_bool,
    NULL,                                   /* integers come as numbers */
    NULL,                                   /* doubles come as numbers */
    ngx_defarm_json_on_number,
    ngx_defarm_json_on_string,
    ngx_defarm_json_on_map_open,
    ngx_defarm_json_on_key,
    ngx_defarm_json_on_close,
    ngx_defarm_json_on_array_open,
    ngx_defarm_json_on_close
};


static ngx_int_t
ngx_defarm_json_charge(ngx_defarm_json_parser_t *ps, size_t size)
{
    /* what the tree costs the request pool: values and their strings */

    if (size > ps->max_memory - ps->memory) {
        ps->error = "JSON body needs more memory than "
                    "defarm_json_max_memory allows";
        ps->status = NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
        return NGX_ERROR;
    }

    ps->memory += size;

    return NGX_OK;
}


static ngx_defarm_json_t *
ngx_defarm_json_add(ngx_defarm_json_parser_t *ps, ngx_defarm_json_type_e type)
{
    ngx_defarm_json_t  *v, *parent;

    if (++ps->nodes > ps->max_nodes) {
        ps->error = "JSON body has too many values";
        return NULL;
    }

    if (ngx_defarm_json_charge(ps, sizeof(ngx_defarm_json_t)) != NGX_OK) {
        return NULL;
    }

    v = ngx_pcalloc(ps->pool, sizeof(ngx_defarm_json_t));
    if (v == NULL) {
        ps->error = "";
        return NULL;
    }

    v->type = type;
    parent = ps->cur;

    if (parent == NULL) {
        ps->root = v;
        return v;
    }

    v->parent = parent;

    if (parent->type == NGX_DEFARM_JSON_OBJECT) {
        v->key = ps->key;
        ngx_str_null(&ps->key);
    }

    if (parent->last) {
        parent->last->next = v;

    } else {
        parent->child = v;
    }

    parent->last = v;
    parent->count++;

    return v;
}


static ngx_int_t
ngx_defarm_json_copy(ngx_defarm_json_parser_t *ps, ngx_str_t *dst,
    const unsigned char *s, size_t len)
{
    /*
     * "\u0000" is valid JSON but no PostgreSQL text can hold it, and C
     * code downstream would cut the string there: refuse it here.
     */

    if (len && ngx_strlchr((u_char *) s, (u_char *) s + len, '\0')) {
        ps->error = "JSON strings must not contain \\u0000";
        return NGX_ERROR;
    }

    /*
     * yajl checks only the shape of UTF-8: an overlong form, a surrogate
     * (raw, or a lone "\udc00" it encodes) would reach PostgreSQL, which
     * refuses the whole statement (a 500 instead of a 400)
     */

    if (ngx_defarm_utf8_valid((u_char *) s, len) != NGX_OK) {
        ps->error = "JSON strings must be valid UTF-8 (no surrogates, "
                    "no overlong forms)";
        return NGX_ERROR;
    }

    if (ngx_defarm_json_charge(ps, len + 1) != NGX_OK) {
        return NGX_ERROR;
    }

    dst->len = len;
    dst->data = ngx_pnalloc(ps->pool, len + 1);
    if (dst->data == NULL) {
        ps->error = "";
        return NGX_ERROR;
    }

    ngx_memcpy(dst->data, s, len);
    dst->data[len] = '\0';

    return NGX_OK;
}


static int
ngx_defarm_json_on_null(void *ctx)
{
    return ngx_defarm_json_add(ctx, NGX_DEFARM_JSON_NULL) != NULL;
}


static int
ngx_defarm_json_on_bool(void *ctx, int b)
{
    ngx_defarm_json_t  *v;

    v = ngx_defarm_json_add(ctx, NGX_DEFARM_JSON_BOOL);
    if (v == NULL) {
        return 0;
    }

    v->boolean = b ? 1 : 0;

    return 1;
}


static int
ngx_defarm_json_on_number(void *ctx, const char *s, size_t len)
{
    ngx_defarm_json_t  *v;

    v = ngx_defarm_json_add(ctx, NGX_DEFARM_JSON_NUMBER);
    if (v == NULL) {
        return 0;
    }

    return ngx_defarm_json_copy(ctx, &v->str, (const unsigned char *) s, len)
           == NGX_OK;
}


static int
ngx_defarm_json_on_string(void *ctx, const unsigned char *s, size_t len)
{
    ngx_defarm_json_t  *v;

    v = ngx_defarm_json_add(ctx, NGX_DEFARM_JSON_STRING);
    if (v == NULL) {
        return 0;
    }

    return ngx_defarm_json_copy(ctx, &v->str, s, len) == NGX_OK;
}


static int
ngx_defarm_json_on_open(void *ctx, ngx_defarm_json_type_e type)
{
    ngx_defarm_json_parser_t  *ps = ctx;

    ngx_defarm_json_t  *v;

    if (++ps->depth > ps->max_depth) {
        ps->error = "JSON body is nested too deeply";
        return 0;
    }

    v = ngx_defarm_json_add(ps, type);
    if (v == NULL) {
        return 0;
    }

    ps->cur = v;

    return 1;
}


static int
ngx_defarm_json_on_map_open(void *ctx)
{
    return ngx_defarm_json_on_open(ctx, NGX_DEFARM_JSON_OBJECT);
}


static int
ngx_defarm_json_on_array_open(void *ctx)
{
    return ngx_defarm_json_on_open(ctx, NGX_DEFARM_JSON_ARRAY);
}


static int
ngx_defarm_json_on_key(void *ctx, const unsigned char *s, size_t len)
{
    ngx_defarm_json_parser_t  *ps = ctx;

    return ngx_defarm_json_copy(ps, &ps->key, s, len) == NGX_OK;
}


static int
ngx_defarm_json_on_close(void *ctx)
{
    ngx_defarm_json_parser_t  *ps = ctx;

    ps->depth--;
    ps->cur = ps->cur->parent;

    return 1;
}


ngx_defarm_json_parser_t *
ngx_defarm_json_parser(ngx_pool_t *pool, ngx_uint_t max_depth,
    ngx_uint_t max_nodes, size_t max_memory)
{
    ngx_pool_cleanup_t        *cln;
    ngx_defarm_json_parser_t  *ps;

    ps = ngx_pcalloc(pool, sizeof(ngx_defarm_json_parser_t));
    if (ps == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    ps->pool = pool;
    ps->max_depth = max_depth;
    ps->max_nodes = max_nodes;
    ps->max_memory = max_memory;

    /*
     * The handle lives across event-loop turns while the body arrives,
     * so a pool cleanup frees it if the request ends first; it is freed
     * as soon as the parse ends or fails.  yajl's own defaults (no
     * comments, no trailing garbage, UTF-8 validated) are what an API
     * wants.  Its lexer buffers at most the token that spans two body
     * buffers, and that token's text is charged to the tree right after.
     */

    ps->handle = yajl_alloc(&ngx_defarm_json_callbacks, NULL, ps);
    if (ps->handle == NULL) {
        return NULL;
    }

    cln->handler = ngx_defarm_json_parser_cleanup;
    cln->data = ps;

    return ps;
}


static void
ngx_defarm_json_parser_cleanup(void *data)
{
    ngx_defarm_json_parser_t  *ps = data;

    if (ps->handle) {
        yajl_free(ps->handle);
        ps->handle = NULL;
    }
}


ngx_int_t
ngx_defarm_json_feed(ngx_defarm_json_parser_t *ps, u_char *data, size_t len)
{
    /* after a failure the rest of the body is only counted */

    if (!ps->failed && yajl_parse(ps->handle, data, len) != yajl_status_ok) {
        ngx_defarm_json_fail(ps, yajl_get_bytes_consumed(ps->handle));
    }

    ps->received += len;

    return ps->nomem ? NGX_ERROR : NGX_OK;
}


ngx_int_t
ngx_defarm_json_end(ngx_defarm_json_parser_t *ps, ngx_defarm_json_t **root,
    ngx_str_t *err, ngx_uint_t *status)
{
    if (!ps->failed) {
        if (yajl_complete_parse(ps->handle) != yajl_status_ok) {
            ngx_defarm_json_fail(ps, 0);

        } else {
            ngx_defarm_json_parser_cleanup(ps);
            *root = ps->root;
            return NGX_OK;
        }
    }

    if (ps->nomem) {
        return NGX_ERROR;
    }

    *err = ps->message;
    *status = ps->status;

    return NGX_DECLINED;
}


off_t
ngx_defarm_json_received(ngx_defarm_json_parser_t *ps)
{
    return ps->received;
}


static void
ngx_defarm_json_fail(ngx_defarm_json_parser_t *ps, size_t at)
{
    u_char  *msg, *p, *last;
    size_t   len;

    /* the message is made now: the handle is freed to release its memory */

    ps->failed = 1;

    if (ps->status == 0) {
        ps->status = NGX_HTTP_BAD_REQUEST;
    }

    if (ps->error && ps->error[0] == '\0') {
        ps->nomem = 1;                  /* allocation failed in a callback */
        ngx_defarm_json_parser_cleanup(ps);
        return;
    }

    if (ps->error) {
        ps->message.data = (u_char *) ps->error;
        ps->message.len = ngx_strlen(ps->error);
        ngx_defarm_json_parser_cleanup(ps);
        return;
    }

    /* yajl says "lexical error: invalid char in json text.\n" and the like */

    msg = yajl_get_error(ps->handle, 0, NULL, 0);

    p = msg ? msg : (u_char *) "parse error";
    last = p + ngx_strlen(p);

    while (last > p && (last[-1] == '\n' || last[-1] == '.'
                        || last[-1] == ' '))
    {
        last--;
    }

    len = sizeof("Malformed JSON body: ") - 1 + (last - p)
          + sizeof(" at byte ") - 1 + NGX_OFF_T_LEN;

    ps->message.data = ngx_pnalloc(ps->pool, len);

    if (ps->message.data == NULL) {
        ps->nomem = 1;

    } else {
        ps->message.len = ngx_sprintf(ps->message.data,
                                      "Malformed JSON body: %*s at byte %O",
                                      (size_t) (last - p), p,
                                      ps->received + (off_t) at)
                          - ps->message.data;
    }

    if (msg) {
        yajl_free_error(ps->handle, msg);
    }

    ngx_defarm_json_parser_cleanup(ps);
}


ngx_defarm_json_t *
ngx_defarm_json_get(ngx_defarm_json_t *obj, const char *key)
{
    size_t              len;
    ngx_defarm_json_t  *v;

    if (obj == NULL || obj->type != NGX_DEFARM_JSON_OBJECT) {
        return NULL;
    }

    len = ngx_strlen(key);

    for (v = obj->child; v; v = v->next) {
        if (v->key.len == len && ngx_strncmp(v->key.data, key, len) == 0) {
            return v;
        }
    }

    return NULL;
}


/* a string member as a NUL-terminated copy in the pool, or NULL */

ngx_str_t *
ngx_defarm_json_cstr(ngx_pool_t *pool, ngx_defarm_json_t *obj,
    const char *key)
{
    u_char             *p;
    ngx_str_t          *s;
    ngx_defarm_json_t  *v;

    v = ngx_defarm_json_get(obj, key);

    if (v == NULL || v->type != NGX_DEFARM_JSON_STRING) {
        return NULL;
    }

    s = ngx_palloc(pool, sizeof(ngx_str_t));
    p = ngx_pnalloc(pool, v->str.len + 1);
    if (s == NULL || p == NULL) {
        return NULL;
    }

    *ngx_cpymem(p, v->str.data, v->str.len) = '\0';

    s->data = p;
    s->len = v->str.len;

    return s;
}


ngx_int_t
ngx_defarm_json_int(ngx_defarm_json_t *v, int64_t *n)
{
    u_char    *p, *last;
    uint64_t   value, limit;
    ngx_int_t  negative;

    if (v == NULL || v->type != NGX_DEFARM_JSON_NUMBER || v->str.len == 0) {
        return NGX_ERROR;
    }

    p = v->str.data;
    last = p + v->str.len;
    negative = (*p == '-');

    if (negative) {
        p++;
    }

    if (p == last) {
        return NGX_ERROR;
    }

    limit = negative ? (uint64_t) INT64_MAX + 1 : (uint64_t) INT64_MAX;
    value = 0;

    for ( /* void */ ; p < last; p++) {
        if (*p < '0' || *p > '9') {
            return NGX_ERROR;            /* a fraction or an exponent */
        }

        if (value > (limit - (*p - '0')) / 10) {
            return NGX_ERROR;
        }

        value = value * 10 + (*p - '0');
    }

    *n = negative ? (int64_t) (0 - value) : (int64_t) value;

    return NGX_OK;
}


const char *
ngx_defarm_json_type_name(ngx_defarm_json_t *v)
{
    static const char  *names[] = {
        "null", "boolean", "number", "string", "array", "object"
    };

    if (v == NULL) {
        return "missing";
    }

    return names[v->type];
}


static void
ngx_defarm_json_gen_cleanup(void *data)
{
    ngx_defarm_json_writer_t  *w = data;

    if (w->gen) {
        yajl_gen_free(w->gen);
        w->gen = NULL;
    }
}


static void
ngx_defarm_json_print(void *ctx, const char *s, size_t len)
{
    ngx_defarm_json_writer_t  *w = ctx;

    size_t        n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    while (len) {
        b = w->buf;

        if (b == NULL || b->last == b->end) {
            b = ngx_create_temp_buf(w->request->pool,
                                    ngx_max(len, NGX_DEFARM_JSON_BUF_SIZE));
            if (b == NULL) {
                w->failed = 1;
                return;
            }

            cl = ngx_alloc_chain_link(w->request->pool);
            if (cl == NULL) {
                w->failed = 1;
                return;
            }

            cl->buf = b;
            cl->next = NULL;
            *w->last = cl;
            w->last = &cl->next;
            w->buf = b;
        }

        n = ngx_min(len, (size_t) (b->end - b->last));
        b->last = ngx_cpymem(b->last, s, n);
        w->size += n;
        s += n;
        len -= n;
    }
}


ngx_defarm_json_writer_t *
ngx_defarm_json_writer(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t        *cln;
    ngx_defarm_json_writer_t  *w;

    w = ngx_pcalloc(r->pool, sizeof(ngx_defarm_json_writer_t));
    if (w == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    w->request = r;
    w->last = &w->out;

    w->gen = yajl_gen_alloc(NULL);
    if (w->gen == NULL) {
        return NULL;
    }

    cln->handler = ngx_defarm_json_gen_cleanup;
    cln->data = w;

    yajl_gen_config(w->gen, yajl_gen_print_callback, ngx_defarm_json_print,
                    w);
    yajl_gen_config(w->gen, yajl_gen_validate_utf8, 1);

    return w;
}


ngx_int_t
ngx_defarm_json_finish(ngx_defarm_json_writer_t *w, ngx_chain_t **out,
    off_t *len)
{
    if (w->failed || w->out == NULL) {
        return NGX_ERROR;
    }

    /* the gen is not needed any more: give its memory back now */

    yajl_gen_free(w->gen);
    w->gen = NULL;

    *out = w->out;
    *len = w->size;

    return NGX_OK;
}


/* a parsed value rendered back as JSON text (an SQL parameter) */

ngx_int_t
ngx_defarm_json_render(ngx_http_request_t *r, ngx_defarm_json_t *v,
    ngx_str_t *text)
{
    ngx_defarm_json_writer_t  *w;

    w = ngx_defarm_json_writer(r);
    if (w == NULL) {
        return NGX_ERROR;
    }

    ngx_defarm_jw_value(w, v);

    return ngx_defarm_json_text(w, text);
}


/* the rendered JSON as one string in the request pool (an SQL parameter) */

ngx_int_t
ngx_defarm_json_text(ngx_defarm_json_writer_t *w, ngx_str_t *text)
{
    off_t         len;
    u_char       *p;
    ngx_chain_t  *out, *cl;

    if (ngx_defarm_json_finish(w, &out, &len) != NGX_OK) {
        return NGX_ERROR;
    }

    p = ngx_pnalloc(w->request->pool, (size_t) len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    text->data = p;

    for (cl = out; cl; cl = cl->next) {
        p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);
    }

    text->len = p - text->data;

    return NGX_OK;
}


void
ngx_defarm_jw_check(ngx_defarm_json_writer_t *w, yajl_gen_status st)
{
    if (st != yajl_gen_status_ok) {
        ngx_log_error(NGX_LOG_ALERT, w->request->connection->log, 0,
                      "defarm json generator failed: %d", (int) st);
        w->failed = 1;
    }
}


void
ngx_defarm_jw_str_or_null(ngx_defarm_json_writer_t *w, ngx_str_t *s)
{
    /* data NULL is the convention for an absent value throughout */

    if (s->data == NULL) {
        ngx_defarm_jw_null(w);

    } else {
        ngx_defarm_jw_str(w, s);
    }
}


void
ngx_defarm_jw_cstr(ngx_defarm_json_writer_t *w, const char *s)
{
    ngx_defarm_jw_check(w, yajl_gen_string(w->gen,
                                           (const unsigned char *) s,
                                           ngx_strlen(s)));
}


void
ngx_defarm_jw_str(ngx_defarm_json_writer_t *w, ngx_str_t *s)
{
    ngx_defarm_jw_check(w, yajl_gen_string(w->gen, s->data, s->len));
}


void
ngx_defarm_jw_int(ngx_defarm_json_writer_t *w, int64_t n)
{
    ngx_defarm_jw_check(w, yajl_gen_integer(w->gen, (long long) n));
}


void
ngx_defarm_jw_time(ngx_defarm_json_writer_t *w, time_t t)
{
    u_char    buf[sizeof("1970-01-01T00:00:00Z")];
    size_t    len;
    ngx_tm_t  tm;

    /* RFC 3339, UTC, like the original API's timestamps */

    ngx_gmtime(t, &tm);

    len = ngx_sprintf(buf, "%4d-%02d-%02dT%02d:%02d:%02dZ",
                      tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                      tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec)
          - buf;

    ngx_defarm_jw_check(w, yajl_gen_string(w->gen, buf, len));
}


void
ngx_defarm_jw_ms(ngx_defarm_json_writer_t *w, uint64_t us)
{
    u_char  buf[NGX_INT64_LEN + 5];
    size_t  len;

    /* milliseconds with three decimals, as a JSON number */

    len = ngx_sprintf(buf, "%uL.%03uL", us / 1000, us % 1000) - buf;

    ngx_defarm_jw_check(w, yajl_gen_number(w->gen, (char *) buf, len));
}


void
ngx_defarm_jw_bool(ngx_defarm_json_writer_t *w, ngx_flag_t b)
{
    ngx_defarm_jw_check(w, yajl_gen_bool(w->gen, b ? 1 : 0));
}


void
ngx_defarm_jw_null(ngx_defarm_json_writer_t *w)
{
    ngx_defarm_jw_check(w, yajl_gen_null(w->gen));
}


void
ngx_defarm_jw_value(ngx_defarm_json_writer_t *w, ngx_defarm_json_t *v)
{
    ngx_defarm_json_t  *c;

    switch (v->type) {

    case NGX_DEFARM_JSON_NULL:
        ngx_defarm_jw_null(w);
        break;

    case NGX_DEFARM_JSON_BOOL:
        ngx_defarm_jw_bool(w, v->boolean);
        break;

    case NGX_DEFARM_JSON_NUMBER:
        ngx_defarm_jw_check(w, yajl_gen_number(w->gen, (char *) v->str.data,
                                               v->str.len));
        break;

    case NGX_DEFARM_JSON_STRING:
        ngx_defarm_jw_str(w, &v->str);
        break;

    case NGX_DEFARM_JSON_ARRAY:
        ngx_defarm_jw_array_open(w);

        for (c = v->child; c; c = c->next) {
            ngx_defarm_jw_value(w, c);
        }

        ngx_defarm_jw_array_close(w);
        break;

    case NGX_DEFARM_JSON_OBJECT:
        ngx_defarm_jw_map_open(w);

        for (c = v->child; c; c = c->next) {
            ngx_defarm_jw_str(w, &c->key);
            ngx_defarm_jw_value(w, c);
        }

        ngx_defarm_jw_map_close(w);
        break;
    }
}
