
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "ws/ngx_defarm_ws.h"
#include "pg/ngx_defarm_pg.h"
#include "ngx_defarm_response.h"


/*
 * A worker's notification sockets, by user, and its ear on
 * defarm_notification (sql/040): a notification committed on any node is
 * heard by every worker, and one whose user has sockets here is framed
 * once and queued on each, with no query when it came whole in its
 * NOTIFY.
 *
 * Nothing is lost to the order of things: the ear listens before a
 * socket reads its unread count (a handshake waits for it), the socket
 * is in the hub before that read, so a notification committed after it
 * is heard and queued behind the 101.  While the ear is down, what is
 * committed is not heard: when it listens again the hub asks, in one
 * statement, what each user's sockets missed since the newest they had.
 * The ear starts with the worker's first socket: a worker that never
 * serves one keeps no connection for it.
 */


struct ngx_defarm_ws_user_s {
    ngx_str_node_t             sn;            /* by user id */
    ngx_queue_t                sockets;
    int64_t                    seq;           /* the newest they had */
    u_char                     id[1];
};


typedef struct {
    ngx_str_t                  user_id;
    int64_t                    seq;
} ngx_defarm_ws_fetch_t;


static void ngx_defarm_ws_heard(void *data, PGnotify *n);
static void ngx_defarm_ws_deliver(ngx_str_t *user_id, int64_t seq,
    u_char *json, size_t len);
static void ngx_defarm_ws_close_user(ngx_str_t *user_id, u_char *reason);
static void ngx_defarm_ws_fetch(ngx_str_t *user_id, int64_t seq);
static void ngx_defarm_ws_fetched(void *data, ngx_int_t rc, PGresult *res);
static void ngx_defarm_ws_catch_up(void);
static void ngx_defarm_ws_caught_up(void *data, ngx_int_t rc,
    PGresult *res);
static void ngx_defarm_ws_wait_handler(ngx_event_t *ev);
static void ngx_defarm_ws_resume(ngx_defarm_ws_t *ws);
static ngx_defarm_ws_user_t *ngx_defarm_ws_find(ngx_str_t *user_id);
static ngx_defarm_ws_user_t *ngx_defarm_ws_user(ngx_str_t *user_id);


static ngx_defarm_pg_stmt_t  ngx_defarm_ws_notification_stmt = {
    "defarm_ws_notification", "SELECT defarm_ws_notification($1, $2)", 2, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_ws_since_stmt = {
    "defarm_ws_since", "SELECT * FROM defarm_ws_since($1)", 1, 0
};


static ngx_rbtree_t             ngx_defarm_ws_users;
static ngx_rbtree_node_t        ngx_defarm_ws_sentinel;
static ngx_queue_t              ngx_defarm_ws_waiting;
static ngx_defarm_pg_listen_t  *ngx_defarm_ws_ear;
static u_char                  *ngx_defarm_ws_frame;
static size_t                   ngx_defarm_ws_frame_size;
static ngx_cycle_t             *ngx_defarm_ws_cycle;


/*
 * A handshake, authenticated: into the hub, then its unread count once
 * the ear listens.  The request waits meanwhile (a few milliseconds, at
 * a worker's first socket or while PostgreSQL is away), at most the
 * database's connect timeout, then 503.
 */

ngx_int_t
ngx_defarm_ws_hub_join(ngx_http_request_t *r, ngx_defarm_ws_t *ws,
    ngx_defarm_pg_conf_t *pcf)
{
    ngx_defarm_ws_user_t  *u;

    if (pcf == NULL) {
        return ngx_defarm_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                NGX_DEFARM_ERR_DB_UNAVAILABLE,
                                "Notifications need defarm_db");
    }

    if (ngx_defarm_ws_cycle == NULL) {
        ngx_rbtree_init(&ngx_defarm_ws_users, &ngx_defarm_ws_sentinel,
                        ngx_str_rbtree_insert_value);
        ngx_queue_init(&ngx_defarm_ws_waiting);
        ngx_defarm_ws_cycle = (ngx_cycle_t *) ngx_cycle;
    }

    u = ngx_defarm_ws_user(&ws->user_id);
    if (u == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ws->user = u;
    ngx_queue_insert_tail(&u->sockets, &ws->queue);

    if (ngx_defarm_pg_listening(ngx_defarm_ws_ear)) {
        return ngx_defarm_ws_open(r, ws);
    }

    if (ngx_defarm_ws_ear == NULL) {
        ngx_defarm_ws_ear = ngx_defarm_pg_listen_start(
                                ngx_defarm_ws_cycle, pcf,
                                "LISTEN defarm_notification",
                                "notifications", ngx_defarm_ws_heard, NULL);

        if (ngx_defarm_ws_ear == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    ws->wait.handler = ngx_defarm_ws_wait_handler;
    ws->wait.data = ws;
    ws->wait.log = r->connection->log;
    ngx_add_timer(&ws->wait, pcf->connect_timeout);

    ngx_queue_insert_tail(&ngx_defarm_ws_waiting, &ws->waiting);
    ws->is_waiting = 1;

    ngx_defarm_request_wait(r);

    return NGX_DONE;
}


/* the socket's unread count was read, as of seq */

void
ngx_defarm_ws_hub_opened(ngx_defarm_ws_t *ws, int64_t seq)
{
    if (ws->user && ws->user->seq < seq) {
        ws->user->seq = seq;
    }
}


void
ngx_defarm_ws_hub_leave(ngx_defarm_ws_t *ws)
{
    ngx_defarm_ws_user_t  *u;

    if (ws->is_waiting) {
        ngx_queue_remove(&ws->waiting);
        ws->is_waiting = 0;
    }

    if (ws->wait.timer_set) {
        ngx_del_timer(&ws->wait);
    }

    u = ws->user;

    if (u == NULL) {
        return;
    }

    ngx_queue_remove(&ws->queue);
    ws->user = NULL;

    if (ngx_queue_empty(&u->sockets)) {
        ngx_rbtree_delete(&ngx_defarm_ws_users, &u->sn.node);
        ngx_free(u);
    }
}


void
ngx_defarm_ws_hub_exit_process(ngx_cycle_t *cycle)
{
    ngx_defarm_pg_listen_stop(ngx_defarm_ws_ear);
    ngx_defarm_ws_ear = NULL;

    if (ngx_defarm_ws_frame) {
        ngx_free(ngx_defarm_ws_frame);
        ngx_defarm_ws_frame = NULL;
        ngx_defarm_ws_frame_size = 0;
    }
}


static ngx_defarm_ws_user_t *
ngx_defarm_ws_find(ngx_str_t *user_id)
{
    return (ngx_defarm_ws_user_t *) ngx_str_rbtree_lookup(
               &ngx_defarm_ws_users, user_id,
               ngx_crc32_short(user_id->data, user_id->len));
}


/* the user's entry, made with their first socket here */

static ngx_defarm_ws_user_t *
ngx_defarm_ws_user(ngx_str_t *user_id)
{
    ngx_defarm_ws_user_t  *u;

    u = ngx_defarm_ws_find(user_id);
    if (u) {
        return u;
    }

    u = ngx_alloc(sizeof(ngx_defarm_ws_user_t) + user_id->len,
                  ngx_cycle->log);
    if (u == NULL) {
        return NULL;
    }

    ngx_memcpy(u->id, user_id->data, user_id->len);
    u->sn.str.data = u->id;
    u->sn.str.len = user_id->len;
    u->sn.node.key = ngx_crc32_short(user_id->data, user_id->len);
    u->seq = -1;                              /* not known yet */
    ngx_queue_init(&u->sockets);

    ngx_rbtree_insert(&ngx_defarm_ws_users, &u->sn.node);

    return u;
}


static void
ngx_defarm_ws_wait_handler(ngx_event_t *ev)
{
    ngx_defarm_ws_t  *ws = ev->data;

    ngx_queue_remove(&ws->waiting);
    ws->is_waiting = 0;

    ws->refuse = NGX_HTTP_SERVICE_UNAVAILABLE;
    ws->refuse_why = "the database cannot be reached";

    ngx_defarm_ws_refused(ws);
}


static void
ngx_defarm_ws_resume(ngx_defarm_ws_t *ws)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = ws->request;
    c = r->connection;

    if (ws->wait.timer_set) {
        ngx_del_timer(&ws->wait);
    }

    if (ws->refuse) {
        ngx_defarm_ws_refused(ws);
        return;
    }

    ngx_http_finalize_request(r, ngx_defarm_ws_open(r, ws));
    ngx_http_run_posted_requests(c);
}


/* what the ear heard: "<user> <seq>[ <json>]" or "<user> - <reason>" */

static void
ngx_defarm_ws_heard(void *data, PGnotify *n)
{
    u_char           *p, *last, *sp;
    int64_t           seq;
    ngx_str_t         user_id;
    ngx_queue_t      *q;
    ngx_defarm_ws_t  *ws;

    if (n == NULL) {
        ngx_defarm_ws_catch_up();

        /* the handshakes that waited */

        while (!ngx_queue_empty(&ngx_defarm_ws_waiting)) {
            q = ngx_queue_head(&ngx_defarm_ws_waiting);
            ngx_queue_remove(q);

            ws = ngx_queue_data(q, ngx_defarm_ws_t, waiting);
            ws->is_waiting = 0;

            ngx_defarm_ws_resume(ws);
        }

        return;
    }

    p = (u_char *) n->extra;
    last = p + ngx_strlen(p);

    sp = ngx_strlchr(p, last, ' ');
    if (sp == NULL) {
        return;
    }

    user_id.data = p;
    user_id.len = sp - p;

    if (ngx_defarm_ws_find(&user_id) == NULL) {
        return;
    }

    p = sp + 1;

    if (p < last && *p == '-') {
        ngx_defarm_ws_close_user(&user_id, p + 2 <= last ? p + 2 : last);
        return;
    }

    sp = ngx_strlchr(p, last, ' ');

    seq = ngx_atoof(p, (sp ? sp : last) - p);
    if (seq == NGX_ERROR) {
        return;
    }

    if (sp == NULL) {

        /* too big for its NOTIFY */

        ngx_defarm_ws_fetch(&user_id, seq);
        return;
    }

    ngx_defarm_ws_deliver(&user_id, seq, sp + 1, last - sp - 1);
}


/* one notification to each of its user's sockets here */

static void
ngx_defarm_ws_deliver(ngx_str_t *user_id, int64_t seq, u_char *json,
    size_t len)
{
    u_char                *p, *buf;
    ngx_queue_t           *q, *next;
    ngx_defarm_ws_t       *ws;
    ngx_defarm_ws_user_t  *u;

    u = ngx_defarm_ws_find(user_id);
    if (u == NULL) {
        return;
    }

    if (u->seq < seq) {
        u->seq = seq;
    }

    /* framed once for all of them */

    if (ngx_defarm_ws_frame_size < len + 64) {
        if (ngx_defarm_ws_frame) {
            ngx_free(ngx_defarm_ws_frame);
        }

        ngx_defarm_ws_frame_size = ngx_max(len + 64, 16384);
        ngx_defarm_ws_frame = ngx_alloc(ngx_defarm_ws_frame_size,
                                        ngx_cycle->log);

        if (ngx_defarm_ws_frame == NULL) {
            ngx_defarm_ws_frame_size = 0;
            return;
        }
    }

    buf = ngx_defarm_ws_frame;

    p = ngx_cpymem(buf, "{\"type\":\"notification\",\"data\":",
                   sizeof("{\"type\":\"notification\",\"data\":") - 1);
    p = ngx_cpymem(p, json, len);
    *p++ = '}';

    for (q = ngx_queue_head(&u->sockets);
         q != ngx_queue_sentinel(&u->sockets);
         q = next)
    {
        next = ngx_queue_next(q);
        ws = ngx_queue_data(q, ngx_defarm_ws_t, queue);

        ngx_defarm_ws_send(ws, NGX_DEFARM_WS_TEXT, buf, p - buf, 1);
    }
}


static void
ngx_defarm_ws_close_user(ngx_str_t *user_id, u_char *reason)
{
    ngx_uint_t             waiting;
    ngx_queue_t           *q;
    ngx_defarm_ws_t       *ws;
    ngx_defarm_ws_user_t  *u;

    u = ngx_defarm_ws_find(user_id);

    /* each leaves the hub as it closes, the last one frees u */

    while (u) {
        q = ngx_queue_head(&u->sockets);
        ws = ngx_queue_data(q, ngx_defarm_ws_t, queue);

        if (ngx_queue_next(q) == ngx_queue_sentinel(&u->sockets)) {
            u = NULL;
        }

        if (!ws->taken) {

            /* not open yet: refused instead of its 101 */

            waiting = ws->is_waiting;

            ngx_defarm_ws_hub_leave(ws);
            ws->refuse = NGX_HTTP_FORBIDDEN;
            ws->refuse_why = "the user's access was withdrawn";

            if (waiting) {
                ngx_defarm_ws_refused(ws);
            }

            continue;
        }

        ngx_defarm_ws_shut(ws, NGX_DEFARM_WS_POLICY, (const char *) reason);
    }
}


/* a notification too big for its NOTIFY is read */

static void
ngx_defarm_ws_fetch(ngx_str_t *user_id, int64_t seq)
{
    u_char                 *p;
    ngx_str_t               params[2];
    ngx_defarm_ws_fetch_t  *f;
    u_char                  num[NGX_INT64_LEN];

    f = ngx_alloc(sizeof(ngx_defarm_ws_fetch_t) + user_id->len,
                  ngx_cycle->log);
    if (f == NULL) {
        return;
    }

    f->user_id.data = (u_char *) (f + 1);
    f->user_id.len = user_id->len;
    ngx_memcpy(f->user_id.data, user_id->data, user_id->len);
    f->seq = seq;

    p = ngx_sprintf(num, "%L", seq);

    params[0] = *user_id;
    params[1].data = num;
    params[1].len = p - num;

    if (ngx_defarm_pg_background(&ngx_defarm_ws_notification_stmt, params,
                                 ngx_defarm_ws_fetched, f)
        != NGX_OK)
    {
        ngx_free(f);
    }
}


static void
ngx_defarm_ws_fetched(void *data, ngx_int_t rc, PGresult *res)
{
    ngx_defarm_ws_fetch_t  *f = data;

    ngx_str_t  v;

    if (rc == NGX_OK && res && PQntuples(res) == 1
        && ngx_defarm_pg_text(res, 0, 0, &v) == NGX_OK && v.len)
    {
        ngx_defarm_ws_deliver(&f->user_id, f->seq, v.data, v.len);
    }

    ngx_free(f);
}


/* listening again: what the users here missed meanwhile, in one query */

static void
ngx_defarm_ws_catch_up(void)
{
    u_char                *p;
    size_t                 len;
    ngx_str_t              param;
    ngx_rbtree_node_t     *node, *root, *sentinel;
    ngx_defarm_ws_user_t  *u;

    root = ngx_defarm_ws_users.root;
    sentinel = ngx_defarm_ws_users.sentinel;

    if (root == sentinel) {
        return;
    }

    len = 0;

    for (node = ngx_rbtree_min(root, sentinel);
         node;
         node = ngx_rbtree_next(&ngx_defarm_ws_users, node))
    {
        u = (ngx_defarm_ws_user_t *) node;
        len += u->sn.str.len + 1 + NGX_INT64_LEN + 1;
    }

    param.data = ngx_alloc(len, ngx_cycle->log);
    if (param.data == NULL) {
        return;
    }

    p = param.data;

    for (node = ngx_rbtree_min(root, sentinel);
         node;
         node = ngx_rbtree_next(&ngx_defarm_ws_users, node))
    {
        u = (ngx_defarm_ws_user_t *) node;

        /* a socket still reading its count has nothing to catch up on */

        if (u->seq < 0) {
            continue;
        }

        p = ngx_sprintf(p, "%V %L\n", &u->sn.str, u->seq);
    }

    param.len = p - param.data;

    /* the statement copies it */

    if (param.len) {
        (void) ngx_defarm_pg_background(&ngx_defarm_ws_since_stmt, &param,
                                        ngx_defarm_ws_caught_up, NULL);
    }

    ngx_free(param.data);
}


static void
ngx_defarm_ws_caught_up(void *data, ngx_int_t rc, PGresult *res)
{
    int        i, n;
    int64_t    seq;
    ngx_str_t  user_id, s, json;

    if (rc != NGX_OK || res == NULL) {
        return;
    }

    n = PQntuples(res);

    for (i = 0; i < n; i++) {
        if (ngx_defarm_pg_text(res, i, 0, &user_id) != NGX_OK
            || ngx_defarm_pg_text(res, i, 1, &s) != NGX_OK
            || ngx_defarm_pg_text(res, i, 2, &json) != NGX_OK)
        {
            continue;
        }

        seq = ngx_atoof(s.data, s.len);

        if (seq != NGX_ERROR) {
            ngx_defarm_ws_deliver(&user_id, seq, json.data, json.len);
        }
    }
}
