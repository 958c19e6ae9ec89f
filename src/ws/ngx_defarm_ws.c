
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "ws/ngx_defarm_ws.h"
#include "pg/ngx_defarm_pg.h"
#include "ngx_defarm_json.h"
#include "ngx_defarm_response.h"


/*
 * GET /api/notifications/ws: a user's notifications pushed over RFC 6455.
 *
 * The handshake is an ordinary request (the router has authenticated the
 * token), which joins the hub, reads the unread count, and is then freed:
 * the connection is taken over, so that an idle socket costs what an idle
 * keepalive connection does (its connection, a small pool, a timer), not
 * a request's pool and buffers.  Input and output buffers are malloc()ed
 * while there is something in them and freed when they empty; output is
 * bounded by defarm_ws_send_buffer, and a notification that does not fit
 * is dropped and counted, for a "lag" message once the client catches up.
 */


typedef struct {
    ngx_defarm_ws_t           *ws;            /* NULL: the socket closed */
} ngx_defarm_ws_op_t;


static ngx_int_t ngx_defarm_ws_opened(ngx_http_request_t *r, void *data,
    PGresult *res);
static void ngx_defarm_ws_takeover(ngx_event_t *ev);
static void ngx_defarm_ws_request_cleanup(void *data);
static void ngx_defarm_ws_read_handler(ngx_event_t *rev);
static void ngx_defarm_ws_write_handler(ngx_event_t *wev);
static void ngx_defarm_ws_ping_handler(ngx_event_t *ev);
static ngx_int_t ngx_defarm_ws_frames(ngx_defarm_ws_t *ws);
static ngx_int_t ngx_defarm_ws_control(ngx_defarm_ws_t *ws,
    ngx_defarm_ws_frame_t *f, u_char *payload);
static ngx_int_t ngx_defarm_ws_message(ngx_defarm_ws_t *ws, u_char *data,
    size_t len);
static void ngx_defarm_ws_action_done(void *data, ngx_int_t rc,
    PGresult *res);
static void ngx_defarm_ws_error_frame(ngx_defarm_ws_t *ws, const char *msg);
static void ngx_defarm_ws_flush(ngx_defarm_ws_t *ws);
static void ngx_defarm_ws_linger(ngx_defarm_ws_t *ws);
static void ngx_defarm_ws_free(ngx_defarm_ws_t *ws);
static void ngx_defarm_ws_finalize(ngx_defarm_ws_t *ws);
static ngx_uint_t ngx_defarm_ws_has_token(ngx_table_elt_t *h,
    const char *token);


/* room a socket always has past its limit: a close, a pong, a lag */
#define NGX_DEFARM_WS_CONTROL_ROOM  256

/* how long a close handshake may take before the connection is dropped */
#define NGX_DEFARM_WS_CLOSE_TIMEOUT  5000


static ngx_defarm_pg_stmt_t  ngx_defarm_ws_open_stmt = {
    "defarm_ws_open", "SELECT defarm_ws_open($1)", 1, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_ws_mark_read_stmt = {
    "defarm_ws_mark_read", "SELECT defarm_ws_mark_read($1, $2)", 2, 0
};


static ngx_str_t  ngx_defarm_ws_version = ngx_string("13");


ngx_int_t
ngx_defarm_ws_handler(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_table_elt_t         *h;
    ngx_connection_t        *c;
    ngx_defarm_ws_t         *ws;
    ngx_pool_cleanup_t      *cln;
    ngx_defarm_main_conf_t  *mcf;
    u_char                   accept[NGX_DEFARM_WS_ACCEPT_LEN];

    mcf = ngx_http_get_module_main_conf(r, ngx_defarm_module);
    c = r->connection;

    /* RFC 6455 §4.2.1: what makes a request an opening handshake */

    if (r->http_version != NGX_HTTP_VERSION_11) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "A WebSocket handshake needs HTTP/1.1");
    }

    if (!ngx_defarm_ws_has_token(ngx_defarm_header(r, "Upgrade"),
                                 "websocket"))
    {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "Expected \"Upgrade: websocket\"");
    }

    if (!ngx_defarm_ws_has_token(ngx_defarm_header(r, "Connection"),
                                 "upgrade"))
    {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "Expected \"Connection: Upgrade\"");
    }

    h = ngx_defarm_header(r, "Sec-WebSocket-Version");

    if (h == NULL || h->value.len != 2
        || ngx_strncmp(h->value.data, "13", 2) != 0)
    {
        /* §4.4: say which version is spoken */

        if (ngx_defarm_add_header(r, "Sec-WebSocket-Version",
                                  &ngx_defarm_ws_version)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_defarm_error(r, 426, NGX_DEFARM_ERR_VALIDATION,
                                "Sec-WebSocket-Version must be 13");
    }

    h = ngx_defarm_header(r, "Sec-WebSocket-Key");

    if (h == NULL || ngx_defarm_ws_accept(&h->value, accept) != NGX_OK) {
        return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                NGX_DEFARM_ERR_VALIDATION,
                                "Sec-WebSocket-Key must be the base64 of "
                                "16 bytes");
    }

    /*
     * malloc()ed, not from the connection's pool: a keepalive connection
     * whose handshakes are refused would keep each one's until it closed.
     * Freed by the request's cleanup until the takeover, then with the
     * connection.
     */

    ws = ngx_calloc(sizeof(ngx_defarm_ws_t) + ctx->user_id.len, c->log);
    if (ws == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        ngx_free(ws);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_defarm_ws_request_cleanup;
    cln->data = ws;

    ngx_memcpy(ws->accept, accept, NGX_DEFARM_WS_ACCEPT_LEN);

    ws->user_id.data = (u_char *) (ws + 1);
    ws->user_id.len = ctx->user_id.len;
    ngx_memcpy(ws->user_id.data, ctx->user_id.data, ctx->user_id.len);
    ws->connection = c;
    ws->request = r;
    ws->conf = &mcf->ws;
    ws->expires = ctx->token_expires;

    ws->takeover.handler = ngx_defarm_ws_takeover;
    ws->takeover.data = ws;
    ws->takeover.log = c->log;

    ws->ping.handler = ngx_defarm_ws_ping_handler;
    ws->ping.data = ws;
    ws->ping.log = c->log;
    ws->ping.cancelable = 1;

    return ngx_defarm_ws_hub_join(r, ws, mcf->db);
}


/* the hub listens and has the socket: its unread count, then the 101 */

ngx_int_t
ngx_defarm_ws_open(ngx_http_request_t *r, ngx_defarm_ws_t *ws)
{
    return ngx_defarm_pg_query(r, &ngx_defarm_ws_open_stmt, &ws->user_id,
                               ngx_defarm_ws_opened, ws);
}


/* the hub gave up waiting to listen, or the user went meanwhile */

void
ngx_defarm_ws_refused(ngx_defarm_ws_t *ws)
{
    ngx_int_t            rc;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = ws->request;
    c = r->connection;

    if (ws->refuse == NGX_HTTP_SERVICE_UNAVAILABLE) {
        rc = ngx_defarm_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                              NGX_DEFARM_ERR_DB_UNAVAILABLE,
                              "Notifications are unavailable: %s",
                              ws->refuse_why);

    } else {
        rc = ngx_defarm_error(r, NGX_HTTP_FORBIDDEN, NGX_DEFARM_ERR_AUTH,
                              "The socket may not open: %s",
                              ws->refuse_why);
    }

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_defarm_ws_opened(ngx_http_request_t *r, void *data, PGresult *res)
{
    ngx_defarm_ws_t  *ws = data;

    u_char     *p, *last, *buf;
    size_t      len, n, queued;
    int64_t     seq;
    ngx_str_t   v;
    ngx_int_t   unread;
    u_char      frame[NGX_DEFARM_WS_HEADER_MAX + 256];

    if (PQresultStatus(res) != PGRES_TUPLES_OK
        || ngx_defarm_pg_text(res, 0, 0, &v) != NGX_OK)
    {
        return ngx_defarm_pg_sql_error(r, res);
    }

    /* "count seq" */

    p = ngx_strlchr(v.data, v.data + v.len, ' ');
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    unread = ngx_atoi(v.data, p - v.data);
    seq = ngx_atoof(p + 1, v.data + v.len - p - 1);

    if (unread == NGX_ERROR || seq == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ws->refuse) {
        ngx_defarm_ws_hub_leave(ws);
        return ngx_defarm_error(r, NGX_HTTP_FORBIDDEN, NGX_DEFARM_ERR_AUTH,
                                "The socket may not open: %s",
                                ws->refuse_why);
    }

    ngx_defarm_ws_hub_opened(ws, seq);

    /*
     * The 101 and the two first frames go before whatever the hub queued
     * while the count was read.
     */

    len = sizeof("HTTP/1.1 101 Switching Protocols" CRLF
                 "Upgrade: websocket" CRLF "Connection: Upgrade" CRLF
                 "Sec-WebSocket-Accept: " CRLF CRLF) - 1
          + NGX_DEFARM_WS_ACCEPT_LEN
          + 2 * sizeof(frame);

    queued = ws->out ? (size_t) (ws->out_last - ws->out_pos) : 0;

    buf = ngx_alloc(len + queued, r->connection->log);
    if (buf == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(buf, "HTTP/1.1 101 Switching Protocols" CRLF
                        "Upgrade: websocket" CRLF "Connection: Upgrade" CRLF
                        "Sec-WebSocket-Accept: ",
                   sizeof("HTTP/1.1 101 Switching Protocols" CRLF
                          "Upgrade: websocket" CRLF
                          "Connection: Upgrade" CRLF
                          "Sec-WebSocket-Accept: ") - 1);
    p = ngx_cpymem(p, ws->accept, NGX_DEFARM_WS_ACCEPT_LEN);
    *p++ = CR; *p++ = LF; *p++ = CR; *p++ = LF;

    last = ngx_snprintf(frame + NGX_DEFARM_WS_HEADER_MAX, 256,
                        "{\"type\":\"connected\",\"message\":\"Connected to "
                        "the notification stream\",\"user_id\":\"%V\"}",
                        &ws->user_id);
    n = last - frame - NGX_DEFARM_WS_HEADER_MAX;
    p += ngx_defarm_ws_frame_header(p, NGX_DEFARM_WS_TEXT, n);
    p = ngx_cpymem(p, frame + NGX_DEFARM_WS_HEADER_MAX, n);

    last = ngx_snprintf(frame, 256, "{\"type\":\"unread_count\","
                                    "\"count\":%i}", unread);
    n = last - frame;
    p += ngx_defarm_ws_frame_header(p, NGX_DEFARM_WS_TEXT, n);
    p = ngx_cpymem(p, frame, n);

    if (ws->out) {
        p = ngx_cpymem(p, ws->out_pos, ws->out_last - ws->out_pos);
        ngx_free(ws->out);
    }

    ws->out = buf;
    ws->out_pos = buf;
    ws->out_last = p;
    ws->out_end = buf + len + queued;

    /*
     * The request ends in a posted event, once nothing of nginx's HTTP
     * code is under it any more: it keeps a reference meanwhile.
     */

    r->main->count++;
    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_request_empty_handler;
    r->headers_out.status = NGX_HTTP_SWITCHING_PROTOCOLS;

    ngx_post_event(&ws->takeover, &ngx_posted_events);

    return NGX_DONE;
}


static void
ngx_defarm_ws_takeover(ngx_event_t *ev)
{
    ngx_defarm_ws_t  *ws = ev->data;

    size_t                     n;
    ngx_buf_t                 *b;
    ngx_chain_t               *cl, *ln;
    ngx_connection_t          *c;
    ngx_http_request_t        *r;
    ngx_http_connection_t     *hc;

    r = ws->request;
    c = ws->connection;
    hc = r->http_connection;

    /* what the client sent past its handshake is the first frames' */

    n = r->header_in->last - r->header_in->pos;

    if (n) {
        ws->in = ngx_alloc(ngx_max(n, 4096), c->log);
        if (ws->in == NULL) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        ws->in_last = ngx_cpymem(ws->in, r->header_in->pos, n);
        ws->in_end = ws->in + ngx_max(n, 4096);
    }

    ws->request = NULL;
    ws->taken = 1;

    r->keepalive = 0;
    r->lingering_close = 0;

    /* logs the request as a 101 and frees its pool */

    ngx_http_free_request(r, 0);

    c->destroyed = 0;
    c->data = ws;

    /* as an idle keepalive connection does: no buffer it does not use */

    b = c->buffer;

    if (b && ngx_pfree(c->pool, b->start) == NGX_OK) {
        c->buffer = NULL;
    }

    for (cl = hc->free; cl; /* void */) {
        ln = cl;
        cl = cl->next;
        ngx_pfree(c->pool, ln->buf->start);
        ngx_free_chain(c->pool, ln);
    }

    for (cl = hc->busy; cl; /* void */) {
        ln = cl;
        cl = cl->next;
        ngx_pfree(c->pool, ln->buf->start);
        ngx_free_chain(c->pool, ln);
    }

    hc->free = NULL;
    hc->busy = NULL;
    hc->nbusy = 0;

#if (NGX_HTTP_SSL)
    if (c->ssl) {
        ngx_ssl_free_buffer(c);
    }
#endif

    c->read->handler = ngx_defarm_ws_read_handler;
    c->write->handler = ngx_defarm_ws_write_handler;
    c->log->action = "serving a notification socket";

    /* a graceful shutdown closes it (1001), as an idle connection */

    c->idle = 1;

    ws->heard = ngx_current_msec;
    ngx_add_timer(&ws->ping, ws->conf->ping);

    /*
     * Withdrawn while the takeover was posted, or opened after a graceful
     * shutdown closed the idle connections: closed after its 101.
     */

    if (ws->refuse) {
        ngx_defarm_ws_shut(ws, NGX_DEFARM_WS_POLICY, ws->refuse_why);

    } else if (ngx_exiting || ngx_terminate) {
        ngx_defarm_ws_shut(ws, NGX_DEFARM_WS_GOING_AWAY,
                           "server shutting down");
    }

    ngx_defarm_ws_flush(ws);

    if (c->destroyed) {
        return;
    }

    if (ws->in || c->read->ready) {
        ngx_post_event(c->read, &ngx_posted_events);
        return;
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_defarm_ws_finalize(ws);
    }
}


/* the request went before its takeover (an error, the client left) */

static void
ngx_defarm_ws_request_cleanup(void *data)
{
    ngx_defarm_ws_t  *ws = data;

    if (ws->taken) {
        return;
    }

    if (ws->takeover.posted) {
        ngx_delete_posted_event(&ws->takeover);
    }

    ngx_defarm_ws_hub_leave(ws);
    ngx_defarm_ws_free(ws);
    ngx_free(ws);
}


static void
ngx_defarm_ws_read_handler(ngx_event_t *rev)
{
    ssize_t            n;
    size_t             size;
    u_char            *p;
    ngx_connection_t  *c;
    ngx_defarm_ws_t   *ws;

    c = rev->data;
    ws = c->data;

    if (rev->timedout) {

        /* the close handshake took too long */

        ngx_defarm_ws_finalize(ws);
        return;
    }

    if (c->close) {

        /*
         * A graceful shutdown closes idle connections outside the event
         * loop's posted events: the close frame goes out now.
         */

        c->close = 0;
        ngx_defarm_ws_shut(ws, NGX_DEFARM_WS_GOING_AWAY,
                           "server shutting down");
        ngx_defarm_ws_flush(ws);
        return;
    }

    if (ws->lingering) {
        ngx_defarm_ws_linger(ws);
        return;
    }

    for ( ;; ) {

        /* whole frames first; one action at a time */

        if (ws->in && ws->in_last > ws->in) {
            if (ngx_defarm_ws_frames(ws) != NGX_OK) {
                return;
            }
        }

        if (ws->op || ws->closing) {
            return;
        }

        if (ws->in == NULL) {
            ws->in = ngx_alloc(4096, c->log);
            if (ws->in == NULL) {
                ngx_defarm_ws_finalize(ws);
                return;
            }

            ws->in_last = ws->in;
            ws->in_end = ws->in + 4096;
        }

        if (ws->in_last == ws->in_end) {

            /* a frame bigger than the buffer, its size already allowed */

            size = 2 * (ws->in_end - ws->in);

            p = ngx_alloc(size, c->log);
            if (p == NULL) {
                ngx_defarm_ws_finalize(ws);
                return;
            }

            ws->in_last = ngx_cpymem(p, ws->in, ws->in_last - ws->in);
            ngx_free(ws->in);
            ws->in = p;
            ws->in_end = p + size;
        }

        n = c->recv(c, ws->in_last, ws->in_end - ws->in_last);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0 || n == NGX_ERROR) {
            ngx_defarm_ws_finalize(ws);
            return;
        }

        ws->in_last += n;
        ws->heard = ngx_current_msec;
    }

    if (ws->in_last == ws->in) {
        ngx_free(ws->in);
        ws->in = NULL;
    }

    /* a frame or a message begun: it has until the next pings to end */

    if (ws->in || ws->fragmented) {
        if (ws->partial == 0) {
            ws->partial = ngx_current_msec | 1;
        }

    } else {
        ws->partial = 0;
    }

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_defarm_ws_finalize(ws);
    }
}


/*
 * The whole frames in the input buffer: NGX_OK when it needs more bytes
 * (what is left is moved to its start), NGX_DONE when the socket closes
 * or waits for an action.
 */

static ngx_int_t
ngx_defarm_ws_frames(ngx_defarm_ws_t *ws)
{
    u_char                 *p, *payload, *payload_copy;
    size_t                  need;
    ngx_int_t               rc;
    ngx_defarm_ws_frame_t   f;

    p = ws->in;

    while (p < ws->in_last && !ws->op && !ws->closing) {

        rc = ngx_defarm_ws_frame_parse(p, ws->in_last - p, &f);

        if (rc == NGX_AGAIN) {
            break;
        }

        if (rc == NGX_DECLINED) {
            ngx_defarm_ws_shut(ws, f.error, "protocol error");
            return NGX_DONE;
        }

        /* the message's size is known from its frames' headers */

        if ((f.opcode & 0x08) == 0
            && f.len + (f.opcode == NGX_DEFARM_WS_CONT ? ws->msg_len : 0)
               > ws->conf->max_message)
        {
            ngx_defarm_ws_shut(ws, NGX_DEFARM_WS_TOO_BIG,
                               "message too big");
            return NGX_DONE;
        }

        need = f.header + f.len;

        if ((size_t) (ws->in_last - p) < need) {

            /* room for the whole frame once the buffer is compacted */

            if ((size_t) (ws->in_end - ws->in) < need) {
                payload = ngx_alloc(need, ws->connection->log);
                if (payload == NULL) {
                    ngx_defarm_ws_finalize(ws);
                    return NGX_DONE;
                }

                ws->in_last = ngx_cpymem(payload, p, ws->in_last - p);
                ngx_free(ws->in);
                ws->in = payload;
                ws->in_end = payload + need;
                return NGX_OK;
            }

            break;
        }

        payload = p + f.header;
        ngx_defarm_ws_unmask(payload, f.len, f.mask);
        p += need;

        if (f.opcode & 0x08) {
            if (ngx_defarm_ws_control(ws, &f, payload) != NGX_OK) {
                return NGX_DONE;
            }

            continue;
        }

        if (f.opcode == NGX_DEFARM_WS_CONT) {
            if (!ws->fragmented) {
                ngx_defarm_ws_shut(ws, NGX_DEFARM_WS_PROTOCOL,
                                   "continuation of no message");
                return NGX_DONE;
            }

        } else if (ws->fragmented) {
            ngx_defarm_ws_shut(ws, NGX_DEFARM_WS_PROTOCOL,
                               "a message inside a fragmented message");
            return NGX_DONE;

        } else if (f.opcode == NGX_DEFARM_WS_BINARY) {
            ngx_defarm_ws_shut(ws, NGX_DEFARM_WS_UNSUPPORTED,
                               "only text messages are understood");
            return NGX_DONE;
        }

        if (f.fin && !ws->fragmented) {
            if (ngx_defarm_ws_message(ws, payload, f.len) != NGX_OK
                && !ws->op)
            {
                return NGX_DONE;
            }

            continue;
        }

        /* a fragment: assembled in a buffer of the message's limit */

        if (ws->msg_len + f.len > ws->msg_size) {

            /* grown as it comes, up to the limit checked above */

            need = ngx_max(ws->msg_size * 2, 4096);

            while (need < ws->msg_len + f.len) {
                need *= 2;
            }

            need = ngx_min(need, ws->conf->max_message);

            payload_copy = ngx_alloc(need, ws->connection->log);
            if (payload_copy == NULL) {
                ngx_defarm_ws_finalize(ws);
                return NGX_DONE;
            }

            if (ws->msg) {
                ngx_memcpy(payload_copy, ws->msg, ws->msg_len);
                ngx_free(ws->msg);
            }

            ws->msg = payload_copy;
            ws->msg_size = need;
        }

        ws->fragmented = 1;

        ngx_memcpy(ws->msg + ws->msg_len, payload, f.len);
        ws->msg_len += f.len;

        if (f.fin) {
            ws->fragmented = 0;

            rc = ngx_defarm_ws_message(ws, ws->msg, ws->msg_len);

            if (ws->msg) {
                ngx_free(ws->msg);
                ws->msg = NULL;
                ws->msg_len = 0;
                ws->msg_size = 0;
            }

            if (rc != NGX_OK && !ws->op) {
                return NGX_DONE;
            }
        }
    }

    /* what is left, an action's frames included, waits at the start */

    ws->in_last = ngx_movemem(ws->in, p, ws->in_last - p);

    return (ws->op || ws->closing) ? NGX_DONE : NGX_OK;
}


static ngx_int_t
ngx_defarm_ws_control(ngx_defarm_ws_t *ws, ngx_defarm_ws_frame_t *f,
    u_char *payload)
{
    ngx_uint_t  code;

    switch (f->opcode) {

    case NGX_DEFARM_WS_PING:
        ngx_defarm_ws_send(ws, NGX_DEFARM_WS_PONG, payload, f->len, 0);
        return NGX_OK;

    case NGX_DEFARM_WS_PONG:
        return NGX_OK;

    default: /* NGX_DEFARM_WS_CLOSE */
        break;
    }

    ws->answered = 1;

    if (f->len == 0) {
        ngx_defarm_ws_shut(ws, NGX_DEFARM_WS_NORMAL, "");
        return NGX_DONE;
    }

    code = (f->len == 1) ? 0 : (ngx_uint_t) ((payload[0] << 8) | payload[1]);

    if (!ngx_defarm_ws_close_code_valid(code)) {
        ws->answered = 0;
        ngx_defarm_ws_shut(ws, NGX_DEFARM_WS_PROTOCOL, "bad close code");
        return NGX_DONE;
    }

    if (ngx_defarm_utf8_valid(payload + 2, f->len - 2) != NGX_OK) {
        ws->answered = 0;
        ngx_defarm_ws_shut(ws, NGX_DEFARM_WS_BAD_DATA,
                           "close reason not UTF-8");
        return NGX_DONE;
    }

    /* §5.5.1: the close echoes the code it answers */

    ngx_defarm_ws_shut(ws, code, "");

    return NGX_DONE;
}


/* a whole text message: an action */

static ngx_int_t
ngx_defarm_ws_message(ngx_defarm_ws_t *ws, u_char *data, size_t len)
{
    ngx_int_t                  rc;
    ngx_str_t                  err, params[2];
    ngx_uint_t                 status;
    ngx_pool_t                *pool;
    ngx_defarm_json_t         *json, *action, *id;
    ngx_defarm_ws_op_t        *op;
    ngx_defarm_json_parser_t  *ps;

    if (ngx_defarm_utf8_valid(data, len) != NGX_OK) {
        ngx_defarm_ws_shut(ws, NGX_DEFARM_WS_BAD_DATA, "text not UTF-8");
        return NGX_DONE;
    }

    /* out of memory: closed (1011), not freed under the frame loop */

    pool = ngx_create_pool(1024, ws->connection->log);
    if (pool == NULL) {
        ngx_defarm_ws_shut(ws, NGX_DEFARM_WS_INTERNAL, "out of memory");
        return NGX_DONE;
    }

    ps = ngx_defarm_json_parser(pool, 8, 64, ws->conf->max_message * 4);

    if (ps == NULL
        || ngx_defarm_json_feed(ps, data, len) == NGX_ERROR
        || (rc = ngx_defarm_json_end(ps, &json, &err, &status)) != NGX_OK)
    {
        ngx_destroy_pool(pool);
        ngx_defarm_ws_error_frame(ws, "Invalid JSON");
        return NGX_OK;
    }

    if (json->type != NGX_DEFARM_JSON_OBJECT) {
        ngx_destroy_pool(pool);
        ngx_defarm_ws_error_frame(ws, "A message must be a JSON object");
        return NGX_OK;
    }

    action = ngx_defarm_json_get(json, "action");

    if (action == NULL || action->type != NGX_DEFARM_JSON_STRING
        || action->str.len != sizeof("mark_read") - 1
        || ngx_strncmp(action->str.data, "mark_read", action->str.len) != 0)
    {
        ngx_destroy_pool(pool);
        ngx_defarm_ws_error_frame(ws, "Unknown action: the only one is "
                                      "mark_read");
        return NGX_OK;
    }

    id = ngx_defarm_json_get(json, "notification_id");

    if (id == NULL || id->type != NGX_DEFARM_JSON_STRING) {
        ngx_destroy_pool(pool);
        ngx_defarm_ws_error_frame(ws, "notification_id must be a string");
        return NGX_OK;
    }

    op = ngx_alloc(sizeof(ngx_defarm_ws_op_t), ws->connection->log);
    if (op == NULL) {
        ngx_destroy_pool(pool);
        ngx_defarm_ws_shut(ws, NGX_DEFARM_WS_INTERNAL, "out of memory");
        return NGX_DONE;
    }

    op->ws = ws;

    params[0] = ws->user_id;
    params[1] = id->str;

    /*
     * Set before: a statement whose connection turns out dead ends (and
     * calls back) before ngx_defarm_pg_background() returns.  It copies
     * its parameters.
     */

    ws->op = op;

    rc = ngx_defarm_pg_background(&ngx_defarm_ws_mark_read_stmt, params,
                                  ngx_defarm_ws_action_done, op);

    ngx_destroy_pool(pool);

    if (rc != NGX_OK) {
        ws->op = NULL;
        ngx_free(op);
        ngx_defarm_ws_error_frame(ws, "The database is busy or unavailable; "
                                      "try again");
        return NGX_OK;
    }

    return ws->op ? NGX_DONE : NGX_OK;
}


static void
ngx_defarm_ws_action_done(void *data, ngx_int_t rc, PGresult *res)
{
    ngx_defarm_ws_op_t  *op = data;

    ngx_str_t         v;
    ngx_defarm_ws_t  *ws;

    ws = op->ws;
    ngx_free(op);

    if (ws == NULL) {
        return;
    }

    ws->op = NULL;

    if (rc == NGX_OK && res
        && ngx_defarm_pg_text(res, 0, 0, &v) == NGX_OK)
    {
        ngx_defarm_ws_send(ws, NGX_DEFARM_WS_TEXT, v.data, v.len, 0);

    } else {
        ngx_defarm_ws_error_frame(ws, "The action failed; try again");
    }

    /* the frames that waited behind it */

    if (!ws->closing) {
        ngx_post_event(ws->connection->read, &ngx_posted_events);
    }
}


/* msg is a constant without quotes or backslashes: no escaping */

static void
ngx_defarm_ws_error_frame(ngx_defarm_ws_t *ws, const char *msg)
{
    u_char  *last;
    u_char   buf[256];

    last = ngx_snprintf(buf, sizeof(buf),
                        "{\"type\":\"error\",\"message\":\"%s\"}", msg);

    ngx_defarm_ws_send(ws, NGX_DEFARM_WS_TEXT, buf, last - buf, 0);
}


/*
 * A frame for the client.  A droppable one (a notification) is dropped
 * and counted when the queue is at its limit; the others (answers,
 * control frames) may go a little past it.
 */

void
ngx_defarm_ws_send(ngx_defarm_ws_t *ws, ngx_uint_t opcode, u_char *data,
    size_t len, ngx_uint_t droppable)
{
    u_char  *p;
    size_t   n, used, size, limit;
    u_char   header[NGX_DEFARM_WS_HEADER_MAX];

    if (ws->closing) {
        return;
    }

    n = ngx_defarm_ws_frame_header(header, opcode, len);

    limit = ws->conf->send_buffer;

    if (opcode == NGX_DEFARM_WS_CLOSE) {
        limit = (size_t) -1;

    } else if (!droppable) {
        limit += NGX_DEFARM_WS_CONTROL_ROOM + n + len;
    }

    used = ws->out ? (size_t) (ws->out_last - ws->out_pos) : 0;

    if (used > limit || n + len > limit - used) {
        ws->missed++;
        return;
    }

    if (ws->out == NULL || (size_t) (ws->out_end - ws->out_last) < n + len) {

        size = ws->out ? (size_t) (ws->out_end - ws->out) : 1024;

        while (size < used + n + len) {
            size *= 2;
        }

        p = ngx_alloc(size, ws->connection->log);
        if (p == NULL) {
            ws->missed++;
            return;
        }

        if (ws->out) {
            ngx_memcpy(p, ws->out_pos, used);
            ngx_free(ws->out);
        }

        ws->out = p;
        ws->out_pos = p;
        ws->out_last = p + used;
        ws->out_end = p + size;
    }

    ws->out_last = ngx_cpymem(ws->out_last, header, n);
    ws->out_last = ngx_cpymem(ws->out_last, data, len);

    if (ws->taken && !ws->connection->write->posted) {
        ngx_post_event(ws->connection->write, &ngx_posted_events);
    }
}


static void
ngx_defarm_ws_write_handler(ngx_event_t *wev)
{
    ngx_connection_t  *c;

    c = wev->data;

    ngx_defarm_ws_flush(c->data);
}


static void
ngx_defarm_ws_flush(ngx_defarm_ws_t *ws)
{
    u_char            *last;
    ssize_t            n;
    ngx_uint_t         missed;
    ngx_connection_t  *c;
    u_char             buf[256];

    c = ws->connection;

    for ( ;; ) {

        while (ws->out && ws->out_pos < ws->out_last) {
            n = c->send(c, ws->out_pos, ws->out_last - ws->out_pos);

            if (n == NGX_AGAIN) {
                if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
                    ngx_defarm_ws_finalize(ws);
                }

                return;
            }

            if (n == NGX_ERROR) {
                ngx_defarm_ws_finalize(ws);
                return;
            }

            ws->out_pos += n;
        }

        /* all sent: what was dropped meanwhile is told */

        if (ws->missed == 0 || ws->closing) {
            break;
        }

        missed = ws->missed;
        ws->missed = 0;

        last = ngx_snprintf(buf, sizeof(buf),
                            "{\"type\":\"lag\",\"message\":\"%ui "
                            "notifications were dropped: the connection "
                            "reads too slowly\",\"missed_count\":%ui}",
                            missed, missed);

        ngx_defarm_ws_send(ws, NGX_DEFARM_WS_TEXT, buf, last - buf, 0);

        if (ws->missed) {

            /* not even that could be queued (no memory): later */

            ws->missed += missed;
            return;
        }
    }

    if (ws->out) {
        ngx_free(ws->out);
        ws->out = NULL;
    }

    if (ws->closing) {
        if (ws->answered || c->ssl) {

            /*
             * §7.1.1: the server closes the TCP connection first; over
             * TLS at once too, its close_notify said by the closing
             */

            ngx_defarm_ws_finalize(ws);
            return;
        }

        /* ours: wait for the client's close, or its EOF, a little */

        ws->lingering = 1;
        (void) shutdown(c->fd, SHUT_WR);
        ngx_defarm_ws_linger(ws);
    }
}


static void
ngx_defarm_ws_linger(ngx_defarm_ws_t *ws)
{
    ssize_t            n;
    ngx_connection_t  *c;
    u_char             buf[1024];

    c = ws->connection;

    do {
        n = c->recv(c, buf, sizeof(buf));

        if (n == 0 || n == NGX_ERROR) {
            ngx_defarm_ws_finalize(ws);
            return;
        }

    } while (n != NGX_AGAIN);

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_defarm_ws_finalize(ws);
    }
}


/*
 * The close handshake from this side: a close frame with its code after
 * what is queued (a socket over its limit gets it all the same), then
 * the connection is closed once it is sent, or after a while.
 */

void
ngx_defarm_ws_shut(ngx_defarm_ws_t *ws, ngx_uint_t code, const char *reason)
{
    u_char            *p;
    size_t             len;
    ngx_connection_t  *c;
    u_char             buf[125];

    if (ws->closing) {
        return;
    }

    if (!ws->taken) {

        /* before the 101: the handshake is refused instead */

        ws->refuse = NGX_HTTP_FORBIDDEN;
        ws->refuse_why = reason;
        return;
    }

    c = ws->connection;

    ngx_defarm_ws_hub_leave(ws);

    buf[0] = (u_char) (code >> 8);
    buf[1] = (u_char) code;

    len = ngx_min(ngx_strlen(reason), sizeof(buf) - 2);
    p = ngx_cpymem(buf + 2, reason, len);

    ngx_defarm_ws_send(ws, NGX_DEFARM_WS_CLOSE, buf, p - buf, 0);

    ws->closing = 1;
    ws->missed = 0;
    c->idle = 0;

    if (ws->ping.timer_set) {
        ngx_del_timer(&ws->ping);
    }

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    ngx_add_timer(c->read, NGX_DEFARM_WS_CLOSE_TIMEOUT);

    if (ws->msg) {
        ngx_free(ws->msg);
        ws->msg = NULL;
        ws->msg_len = 0;
        ws->msg_size = 0;
    }

    if (ws->in) {
        ngx_free(ws->in);
        ws->in = NULL;
    }
}


static void
ngx_defarm_ws_ping_handler(ngx_event_t *ev)
{
    ngx_defarm_ws_t  *ws = ev->data;

    if (ws->closing) {
        return;
    }

    if (ws->expires && ngx_time() >= ws->expires) {
        ngx_defarm_ws_shut(ws, NGX_DEFARM_WS_POLICY, "token expired");
        return;
    }

    if (ngx_current_msec - ws->heard >= 2 * ws->conf->ping) {
        ngx_defarm_ws_shut(ws, NGX_DEFARM_WS_GOING_AWAY, "ping timeout");
        return;
    }

    /* a client may not hold a buffer open with a message it never ends */

    if (ws->partial && ngx_current_msec - ws->partial >= 2 * ws->conf->ping)
    {
        ngx_defarm_ws_shut(ws, NGX_DEFARM_WS_POLICY, "message too slow");
        return;
    }

    ngx_defarm_ws_send(ws, NGX_DEFARM_WS_PING, NULL, 0, 0);

    ngx_add_timer(&ws->ping, ws->conf->ping);
}


static void
ngx_defarm_ws_free(ngx_defarm_ws_t *ws)
{
    if (ws->op) {
        ((ngx_defarm_ws_op_t *) ws->op)->ws = NULL;
        ws->op = NULL;
    }

    if (ws->out) {
        ngx_free(ws->out);
        ws->out = NULL;
    }

    if (ws->in) {
        ngx_free(ws->in);
        ws->in = NULL;
    }

    if (ws->msg) {
        ngx_free(ws->msg);
        ws->msg = NULL;
    }
}


static void
ngx_defarm_ws_finalize(ngx_defarm_ws_t *ws)
{
    ngx_connection_t  *c;

    c = ws->connection;

    ngx_defarm_ws_hub_leave(ws);

    if (ws->ping.timer_set) {
        ngx_del_timer(&ws->ping);
    }

    ngx_defarm_ws_free(ws);

    ngx_http_close_connection(c);

    ngx_free(ws);
}


/* a comma-separated header has the token, whatever its case */

static ngx_uint_t
ngx_defarm_ws_has_token(ngx_table_elt_t *h, const char *token)
{
    u_char  *p, *last, *start, *end;
    size_t   len;

    if (h == NULL) {
        return 0;
    }

    len = ngx_strlen(token);
    p = h->value.data;
    last = p + h->value.len;

    while (p < last) {
        while (p < last && (*p == ' ' || *p == '\t' || *p == ',')) {
            p++;
        }

        start = p;

        while (p < last && *p != ',') {
            p++;
        }

        end = p;

        while (end > start && (end[-1] == ' ' || end[-1] == '\t')) {
            end--;
        }

        if ((size_t) (end - start) == len
            && ngx_strncasecmp(start, (u_char *) token, len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


char *
ngx_defarm_ws_init_conf(ngx_conf_t *cf, ngx_defarm_ws_conf_t *wcf)
{
    ngx_conf_init_msec_value(wcf->ping, 30000);
    ngx_conf_init_size_value(wcf->send_buffer, 256 * 1024);
    ngx_conf_init_size_value(wcf->max_message, 64 * 1024);

    if (wcf->ping == 0) {
        return "\"defarm_ws_ping_interval\" must be more than 0";
    }

    if (wcf->send_buffer < 4096) {
        return "\"defarm_ws_send_buffer\" must be at least 4k";
    }

    if (wcf->max_message < 125 || wcf->max_message > 16 * 1024 * 1024) {
        return "\"defarm_ws_max_message\" must be from 125 to 16m";
    }

    return NGX_CONF_OK;
}
