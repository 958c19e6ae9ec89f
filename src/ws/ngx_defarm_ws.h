
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#ifndef _NGX_DEFARM_WS_H_INCLUDED_
#define _NGX_DEFARM_WS_H_INCLUDED_


#include "ngx_defarm_module.h"


/* RFC 6455 opcodes */
#define NGX_DEFARM_WS_CONT        0x0
#define NGX_DEFARM_WS_TEXT        0x1
#define NGX_DEFARM_WS_BINARY      0x2
#define NGX_DEFARM_WS_CLOSE       0x8
#define NGX_DEFARM_WS_PING        0x9
#define NGX_DEFARM_WS_PONG        0xa

/* close codes */
#define NGX_DEFARM_WS_NORMAL      1000
#define NGX_DEFARM_WS_GOING_AWAY  1001
#define NGX_DEFARM_WS_PROTOCOL    1002
#define NGX_DEFARM_WS_UNSUPPORTED 1003
#define NGX_DEFARM_WS_BAD_DATA    1007
#define NGX_DEFARM_WS_POLICY      1008
#define NGX_DEFARM_WS_TOO_BIG     1009
#define NGX_DEFARM_WS_INTERNAL    1011

/* a server frame's header: 2, 4 or 10 bytes, never masked */
#define NGX_DEFARM_WS_HEADER_MAX  10

/* the accept key: base64 of a SHA-1 */
#define NGX_DEFARM_WS_ACCEPT_LEN  28


typedef struct ngx_defarm_ws_s       ngx_defarm_ws_t;
typedef struct ngx_defarm_ws_user_s  ngx_defarm_ws_user_t;


/* a client frame's header, as ngx_defarm_ws_frame_parse() read it */

typedef struct {
    ngx_uint_t                 fin;
    ngx_uint_t                 opcode;
    uint64_t                   len;           /* of the payload */
    size_t                     header;        /* bytes, with the mask */
    u_char                     mask[4];
    ngx_uint_t                 error;         /* a close code */
} ngx_defarm_ws_frame_t;


/* one socket, from its handshake to its close (ngx_defarm_ws.c) */

struct ngx_defarm_ws_s {
    ngx_connection_t          *connection;
    ngx_http_request_t        *request;       /* NULL once taken over */
    ngx_defarm_ws_conf_t      *conf;

    ngx_str_t                  user_id;
    ngx_defarm_ws_user_t      *user;          /* while in the hub */
    ngx_queue_t                queue;         /* the user's sockets */
    time_t                     expires;       /* the token's exp */
    u_char                     accept[NGX_DEFARM_WS_ACCEPT_LEN];

    /* what is queued for the client, malloc()ed, freed once sent */
    u_char                    *out;
    u_char                    *out_pos;
    u_char                    *out_last;
    u_char                    *out_end;
    ngx_uint_t                 missed;        /* dropped notifications */

    /* what the client sent and is not yet a whole frame */
    u_char                    *in;
    u_char                    *in_last;
    u_char                    *in_end;

    /* a fragmented message being assembled */
    u_char                    *msg;
    size_t                     msg_len;
    size_t                     msg_size;
    ngx_msec_t                 partial;       /* since when; 0: none */

    ngx_msec_t                 heard;         /* the last byte from it */
    ngx_event_t                ping;
    ngx_event_t                takeover;
    ngx_event_t                wait;          /* for the hub to listen */
    void                      *op;            /* an action in flight */
    ngx_queue_t                waiting;       /* in the hub's queue */

    ngx_uint_t                 refuse;        /* closed before its 101 */
    const char                *refuse_why;

    unsigned                   taken:1;       /* the connection is ours */
    unsigned                   fragmented:1;
    unsigned                   closing:1;     /* our close frame queued */
    unsigned                   answered:1;    /* the client's close came */
    unsigned                   lingering:1;   /* sent; waiting for EOF */
    unsigned                   is_waiting:1;
};


/* ngx_defarm_ws_frame.c: RFC 6455 framing, no I/O */
ngx_int_t ngx_defarm_ws_frame_parse(u_char *p, size_t n,
    ngx_defarm_ws_frame_t *f);
void ngx_defarm_ws_unmask(u_char *p, size_t n, u_char *mask);
size_t ngx_defarm_ws_frame_header(u_char *buf, ngx_uint_t opcode,
    size_t len);
ngx_int_t ngx_defarm_ws_accept(ngx_str_t *key, u_char *accept);
ngx_uint_t ngx_defarm_ws_close_code_valid(ngx_uint_t code);

/* ngx_defarm_ws.c: the route, a socket's life */
ngx_int_t ngx_defarm_ws_handler(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
ngx_int_t ngx_defarm_ws_open(ngx_http_request_t *r, ngx_defarm_ws_t *ws);
void ngx_defarm_ws_refused(ngx_defarm_ws_t *ws);
void ngx_defarm_ws_send(ngx_defarm_ws_t *ws, ngx_uint_t opcode,
    u_char *data, size_t len, ngx_uint_t droppable);
void ngx_defarm_ws_shut(ngx_defarm_ws_t *ws, ngx_uint_t code,
    const char *reason);
char *ngx_defarm_ws_init_conf(ngx_conf_t *cf, ngx_defarm_ws_conf_t *wcf);

/* ngx_defarm_ws_hub.c: a worker's sockets by user, and what it hears */
ngx_int_t ngx_defarm_ws_hub_join(ngx_http_request_t *r,
    ngx_defarm_ws_t *ws, ngx_defarm_pg_conf_t *pcf);
void ngx_defarm_ws_hub_opened(ngx_defarm_ws_t *ws, int64_t seq);
void ngx_defarm_ws_hub_leave(ngx_defarm_ws_t *ws);
void ngx_defarm_ws_hub_exit_process(ngx_cycle_t *cycle);


#endif /* _NGX_DEFARM_WS_H_INCLUDED_ */
