
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "http/ngx_defarm_curl.h"

#include <arpa/inet.h>
#include <netinet/in.h>


/*
 * Outbound HTTP on the event loop: one libcurl multi handle per worker,
 * driven by nginx.  libcurl tells which sockets to watch for what
 * (CURLMOPT_SOCKETFUNCTION): each gets an nginx connection whose events
 * are level-triggered, as libcurl expects, and are deleted when libcurl
 * stops watching (it may keep the socket for a later transfer).  Its
 * timeout (CURLMOPT_TIMERFUNCTION) is an nginx timer.  Names are resolved
 * by libcurl's threaded resolver, never in the worker; TLS peers are
 * verified; every transfer has a timeout, no redirect is followed, and
 * only http and https are spoken (smtp and smtps for e-mail).
 *
 * The destination is checked where it cannot be dodged, on the address
 * libcurl is about to connect to (CURLOPT_OPENSOCKETFUNCTION): loopback,
 * private, link-local, unspecified and multicast addresses are refused
 * unless the request allows them, so a name that resolves to one (or is
 * made to, between a check and the connect) cannot reach inside.
 */


typedef struct {
    CURLM                     *multi;
    ngx_event_t                timer;
    ngx_log_t                 *log;
    ngx_uint_t                 transfers;
    ngx_queue_t                sockets;       /* ngx_defarm_curl_socket_t */
    ngx_queue_t                free;
} ngx_defarm_curl_t;


/* a socket libcurl watches, with its nginx connection */

typedef struct {
    ngx_queue_t                queue;
    ngx_connection_t          *c;
    ngx_defarm_curl_t         *dc;
} ngx_defarm_curl_socket_t;


static int ngx_defarm_curl_socket(CURL *easy, curl_socket_t s, int what,
    void *userp, void *socketp);
static int ngx_defarm_curl_timer(CURLM *multi, long timeout_ms,
    void *userp);
static void ngx_defarm_curl_timer_handler(ngx_event_t *ev);
static void ngx_defarm_curl_event_handler(ngx_event_t *ev);
static void ngx_defarm_curl_check(void);
static size_t ngx_defarm_curl_write(char *ptr, size_t size, size_t nmemb,
    void *userdata);
static size_t ngx_defarm_curl_read(char *buffer, size_t size, size_t nitems,
    void *userdata);
static curl_socket_t ngx_defarm_curl_open(void *clientp,
    curlsocktype purpose, struct curl_sockaddr *address);
static ngx_uint_t ngx_defarm_curl_private(struct sockaddr *sa);
static ngx_uint_t ngx_defarm_curl_private4(uint32_t a);
static void ngx_defarm_curl_unwatch(ngx_defarm_curl_t *dc,
    ngx_defarm_curl_socket_t *cs);
static int ngx_defarm_curl_unwatched(ngx_defarm_curl_t *dc);


static ngx_defarm_curl_t  *ngx_defarm_curl;


ngx_int_t
ngx_defarm_curl_init_process(ngx_cycle_t *cycle)
{
    ngx_defarm_curl_t  *dc;

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "defarm: curl_global_init() failed");
        return NGX_ERROR;
    }

    dc = ngx_pcalloc(cycle->pool, sizeof(ngx_defarm_curl_t));
    if (dc == NULL) {
        return NGX_ERROR;
    }

    dc->multi = curl_multi_init();
    if (dc->multi == NULL) {
        return NGX_ERROR;
    }

    dc->log = cycle->log;
    ngx_queue_init(&dc->sockets);
    ngx_queue_init(&dc->free);
    dc->timer.handler = ngx_defarm_curl_timer_handler;
    dc->timer.log = cycle->log;
    dc->timer.data = dc;
    dc->timer.cancelable = 1;

    curl_multi_setopt(dc->multi, CURLMOPT_SOCKETFUNCTION,
                      ngx_defarm_curl_socket);
    curl_multi_setopt(dc->multi, CURLMOPT_SOCKETDATA, dc);
    curl_multi_setopt(dc->multi, CURLMOPT_TIMERFUNCTION,
                      ngx_defarm_curl_timer);
    curl_multi_setopt(dc->multi, CURLMOPT_TIMERDATA, dc);

    ngx_defarm_curl = dc;

    return NGX_OK;
}


void
ngx_defarm_curl_exit_process(ngx_cycle_t *cycle)
{
    ngx_queue_t        *q;
    ngx_defarm_curl_t  *dc = ngx_defarm_curl;

    if (dc == NULL) {
        return;
    }

    /*
     * Transfers still going are dropped (their jobs' leases run out); the
     * sockets' connections go back to nginx before libcurl closes them.
     */

    if (dc->timer.timer_set) {
        ngx_del_timer(&dc->timer);
    }

    while (!ngx_queue_empty(&dc->sockets)) {
        q = ngx_queue_head(&dc->sockets);
        ngx_defarm_curl_unwatch(dc, ngx_queue_data(q,
                                                   ngx_defarm_curl_socket_t,
                                                   queue));
    }

    /* libcurl tells nothing more: its callbacks would find the above gone */

    curl_multi_setopt(dc->multi, CURLMOPT_SOCKETFUNCTION, NULL);
    curl_multi_setopt(dc->multi, CURLMOPT_TIMERFUNCTION, NULL);
    curl_multi_cleanup(dc->multi);
    curl_global_cleanup();

    while (!ngx_queue_empty(&dc->free)) {
        q = ngx_queue_head(&dc->free);
        ngx_queue_remove(q);
        ngx_free(ngx_queue_data(q, ngx_defarm_curl_socket_t, queue));
    }

    ngx_defarm_curl = NULL;
}


/* "Authorization: Basic" of "user:password" */

ngx_int_t
ngx_defarm_curl_basic(ngx_defarm_curl_req_t *req, ngx_str_t *user_password)
{
    ngx_str_t  b64;

    b64.len = ngx_base64_encoded_length(user_password->len);
    b64.data = ngx_pnalloc(req->pool, b64.len);
    if (b64.data == NULL) {
        return NGX_ERROR;
    }

    ngx_encode_base64(&b64, user_password);

    return ngx_defarm_curl_header(req, "Authorization: Basic %V", &b64);
}


/* a header line for the request, "Name: value" */

ngx_int_t
ngx_defarm_curl_header(ngx_defarm_curl_req_t *req, const char *fmt, ...)
{
    u_char              *p, *last;
    va_list              args;
    struct curl_slist   *l;
    u_char               buf[2048];

    va_start(args, fmt);
    last = ngx_vslprintf(buf, buf + sizeof(buf) - 1, fmt, args);
    va_end(args);

    /* a header cut short would be sent wrong: refused instead */

    if (last == buf + sizeof(buf) - 1) {
        return NGX_DECLINED;
    }

    *last = '\0';

    /* a header cannot carry a line break into the request */

    for (p = buf; p < last; p++) {
        if (*p == CR || *p == LF) {
            return NGX_DECLINED;
        }
    }

    l = curl_slist_append(req->headers, (char *) buf);
    if (l == NULL) {
        return NGX_ERROR;
    }

    req->headers = l;

    return NGX_OK;
}


ngx_int_t
ngx_defarm_curl_start(ngx_defarm_curl_req_t *req)
{
    CURL               *e;
    ngx_defarm_curl_t  *dc = ngx_defarm_curl;

    if (dc == NULL) {
        return NGX_ERROR;
    }

    e = curl_easy_init();
    if (e == NULL) {
        return NGX_ERROR;
    }

    req->easy = e;
    req->error[0] = '\0';

    curl_easy_setopt(e, CURLOPT_URL, req->url);

    if (req->mail_rcpt) {
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
        curl_easy_setopt(e, CURLOPT_MAIL_FROM, req->mail_from);
        curl_easy_setopt(e, CURLOPT_MAIL_RCPT, req->mail_rcpt);
        curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(e, CURLOPT_READFUNCTION, ngx_defarm_curl_read);
        curl_easy_setopt(e, CURLOPT_READDATA, req);
        curl_easy_setopt(e, CURLOPT_USE_SSL, req->require_tls
                                             ? (long) CURLUSESSL_ALL
                                             : (long) CURLUSESSL_TRY);

        if (req->username) {
            curl_easy_setopt(e, CURLOPT_USERNAME, req->username);
            curl_easy_setopt(e, CURLOPT_PASSWORD, req->password);
        }

    } else {
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, (char *) req->body.data);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t) req->body.len);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, req->headers);
    }
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long) req->timeout);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     (long) ngx_min(req->timeout, 10000));
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);

    /* a transfer ended during a name's resolution does not wait for it */
    curl_easy_setopt(e, CURLOPT_QUICK_EXIT, 1L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "ngx_defarm");
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, req->error);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, ngx_defarm_curl_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, req);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, ngx_defarm_curl_open);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, req);
    curl_easy_setopt(e, CURLOPT_PRIVATE, req);

    if (curl_multi_add_handle(dc->multi, e) != CURLM_OK) {
        curl_easy_cleanup(e);
        req->easy = NULL;
        return NGX_ERROR;
    }

    dc->transfers++;

    return NGX_OK;
}


/*
 * A transfer whose owner goes first (a request its client closed): it
 * stops now, and done is not called.  libcurl lets go of its sockets
 * through the socket callback, as it does at a transfer's end.
 */

void
ngx_defarm_curl_cancel(ngx_defarm_curl_req_t *req)
{
    ngx_defarm_curl_t  *dc = ngx_defarm_curl;

    if (req->easy == NULL || dc == NULL) {
        return;
    }

    if (curl_multi_remove_handle(dc->multi, req->easy) != CURLM_OK) {
        ngx_log_error(NGX_LOG_ALERT, dc->log, 0,
                      "defarm: a transfer could not be cancelled");
        return;
    }

    curl_easy_cleanup(req->easy);
    req->easy = NULL;
    dc->transfers--;

    if (req->headers) {
        curl_slist_free_all(req->headers);
        req->headers = NULL;
    }

    if (req->mail_rcpt) {
        curl_slist_free_all(req->mail_rcpt);
        req->mail_rcpt = NULL;
    }
}


/*
 * A socket that cannot be watched (no connection left, no memory): its
 * transfer waits, and ends by its own timeout.  Answering -1 instead
 * would mark libcurl's whole multi handle dead, for every transfer to
 * come in this worker.
 */

static int
ngx_defarm_curl_unwatched(ngx_defarm_curl_t *dc)
{
    ngx_log_error(NGX_LOG_ERR, dc->log, 0,
                  "defarm: a transfer's socket cannot be watched; it will "
                  "time out");
    return 0;
}


static int
ngx_defarm_curl_socket(CURL *easy, curl_socket_t s, int what, void *userp,
    void *socketp)
{
    ngx_defarm_curl_t  *dc = userp;

    ngx_queue_t               *q;
    ngx_connection_t          *c;
    ngx_defarm_curl_socket_t  *cs = socketp;

    if (what == CURL_POLL_REMOVE) {
        if (cs) {
            ngx_defarm_curl_unwatch(dc, cs);
            curl_multi_assign(dc->multi, s, NULL);
        }

        return 0;
    }

    if (cs == NULL) {
        if (!ngx_queue_empty(&dc->free)) {
            q = ngx_queue_head(&dc->free);
            ngx_queue_remove(q);
            cs = ngx_queue_data(q, ngx_defarm_curl_socket_t, queue);

        } else {
            cs = ngx_alloc(sizeof(ngx_defarm_curl_socket_t), dc->log);
            if (cs == NULL) {
                return ngx_defarm_curl_unwatched(dc);
            }
        }

        c = ngx_get_connection(s, dc->log);
        if (c == NULL) {
            ngx_queue_insert_head(&dc->free, &cs->queue);
            return ngx_defarm_curl_unwatched(dc);
        }

        c->data = cs;
        c->read->handler = ngx_defarm_curl_event_handler;
        c->write->handler = ngx_defarm_curl_event_handler;
        c->read->log = dc->log;
        c->write->log = dc->log;

        cs->c = c;
        cs->dc = dc;
        ngx_queue_insert_tail(&dc->sockets, &cs->queue);

        curl_multi_assign(dc->multi, s, cs);
    }

    c = cs->c;

    if ((what & CURL_POLL_IN) && !c->read->active) {
        if (ngx_add_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT)
            != NGX_OK)
        {
            return ngx_defarm_curl_unwatched(dc);
        }

    } else if (!(what & CURL_POLL_IN) && c->read->active) {
        (void) ngx_del_event(c->read, NGX_READ_EVENT, 0);
    }

    if ((what & CURL_POLL_OUT) && !c->write->active) {
        if (ngx_add_event(c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT)
            != NGX_OK)
        {
            return ngx_defarm_curl_unwatched(dc);
        }

    } else if (!(what & CURL_POLL_OUT) && c->write->active) {
        (void) ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }

    return 0;
}


/* libcurl no longer watches the socket: it closes it, or keeps it */

static void
ngx_defarm_curl_unwatch(ngx_defarm_curl_t *dc, ngx_defarm_curl_socket_t *cs)
{
    ngx_connection_t  *c = cs->c;

    if (c->read->active) {
        (void) ngx_del_event(c->read, NGX_READ_EVENT, 0);
    }

    if (c->write->active) {
        (void) ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    ngx_free_connection(c);
    c->fd = (ngx_socket_t) -1;

    ngx_queue_remove(&cs->queue);
    ngx_queue_insert_head(&dc->free, &cs->queue);
}


static int
ngx_defarm_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    ngx_defarm_curl_t  *dc = userp;

    if (timeout_ms < 0) {
        if (dc->timer.timer_set) {
            ngx_del_timer(&dc->timer);
        }

        return 0;
    }

    /* not from inside libcurl's own call: on the next turn of the loop */

    ngx_add_timer(&dc->timer, (ngx_msec_t) ngx_max(timeout_ms, 1));

    return 0;
}


static void
ngx_defarm_curl_timer_handler(ngx_event_t *ev)
{
    int                 running;
    ngx_defarm_curl_t  *dc = ev->data;

    (void) curl_multi_socket_action(dc->multi, CURL_SOCKET_TIMEOUT, 0,
                                    &running);
    ngx_defarm_curl_check();
}


static void
ngx_defarm_curl_event_handler(ngx_event_t *ev)
{
    int                        running, mask;
    ngx_socket_t               fd;
    ngx_connection_t          *c;
    ngx_defarm_curl_t         *dc;
    ngx_defarm_curl_socket_t  *cs;

    c = ev->data;
    cs = c->data;
    dc = cs->dc;
    fd = c->fd;

    mask = ev->write ? CURL_CSELECT_OUT : CURL_CSELECT_IN;

    /* "c" may be freed inside: nothing of it is used after */

    (void) curl_multi_socket_action(dc->multi, fd, mask, &running);
    ngx_defarm_curl_check();
}


/* the transfers that ended: their owners hear */

static void
ngx_defarm_curl_check(void)
{
    int                     left;
    long                    status;
    CURL                   *e;
    CURLMsg                *msg;
    CURLcode                rc;
    const char             *error;
    ngx_defarm_curl_t      *dc = ngx_defarm_curl;
    ngx_defarm_curl_req_t  *req;

    if (dc == NULL) {
        return;
    }

    while ((msg = curl_multi_info_read(dc->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE) {
            continue;
        }

        e = msg->easy_handle;
        rc = msg->data.result;

        req = NULL;
        status = 0;
        (void) curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **) &req);
        (void) curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);

        curl_multi_remove_handle(dc->multi, e);
        curl_easy_cleanup(e);
        dc->transfers--;

        if (req == NULL) {
            continue;
        }

        req->easy = NULL;

        if (req->headers) {
            curl_slist_free_all(req->headers);
            req->headers = NULL;
        }

        if (req->mail_rcpt) {
            curl_slist_free_all(req->mail_rcpt);
            req->mail_rcpt = NULL;
        }

        error = NULL;

        if (rc != CURLE_OK) {
            error = req->refused ? "the destination address is not allowed"
                    : req->error[0] ? req->error : curl_easy_strerror(rc);
        }

        req->done(req, rc, status, error, &req->response);
    }
}


static size_t
ngx_defarm_curl_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    ngx_defarm_curl_req_t  *req = userdata;

    size_t   n, room;
    u_char  *p;

    n = size * nmemb;

    if (req->response.data == NULL) {
        req->response.data = ngx_pnalloc(req->pool,
                                         NGX_DEFARM_CURL_MAX_RESPONSE);
        if (req->response.data == NULL) {
            return 0;
        }
    }

    /* the first bytes are kept; the rest is read and dropped */

    room = NGX_DEFARM_CURL_MAX_RESPONSE - req->response.len;
    p = req->response.data + req->response.len;

    if (room) {
        ngx_memcpy(p, ptr, ngx_min(room, n));
        req->response.len += ngx_min(room, n);
    }

    return n;
}


/* an SMTP message, handed to libcurl as it asks */

static size_t
ngx_defarm_curl_read(char *buffer, size_t size, size_t nitems,
    void *userdata)
{
    ngx_defarm_curl_req_t  *req = userdata;

    size_t  n;

    n = ngx_min(size * nitems, req->body.len - req->sent);

    ngx_memcpy(buffer, req->body.data + req->sent, n);
    req->sent += n;

    return n;
}


static curl_socket_t
ngx_defarm_curl_open(void *clientp, curlsocktype purpose,
    struct curl_sockaddr *address)
{
    ngx_defarm_curl_req_t  *req = clientp;

    if (!req->allow_private && ngx_defarm_curl_private(&address->addr)) {
        req->refused = 1;
        return CURL_SOCKET_BAD;
    }

    return socket(address->family, address->socktype | SOCK_NONBLOCK,
                  address->protocol);
}


static ngx_uint_t
ngx_defarm_curl_private(struct sockaddr *sa)
{
    u_char               *b;
    struct sockaddr_in   *sin;
    struct sockaddr_in6  *sin6;

    switch (sa->sa_family) {

    case AF_INET:
        sin = (struct sockaddr_in *) sa;
        return ngx_defarm_curl_private4(ntohl(sin->sin_addr.s_addr));

    case AF_INET6:
        sin6 = (struct sockaddr_in6 *) sa;
        b = sin6->sin6_addr.s6_addr;

        if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
            return ngx_defarm_curl_private4((uint32_t) b[12] << 24
                                            | b[13] << 16 | b[14] << 8
                                            | b[15]);
        }

        return IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr)
               || IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr)
               || IN6_IS_ADDR_LINKLOCAL(&sin6->sin6_addr)
               || IN6_IS_ADDR_MULTICAST(&sin6->sin6_addr)
               || (b[0] & 0xfe) == 0xfc;        /* fc00::/7 */

    default:
        return 1;
    }
}


static ngx_uint_t
ngx_defarm_curl_private4(uint32_t a)
{
    return (a >> 24) == 0                       /* 0.0.0.0/8 */
           || (a >> 24) == 10                   /* 10/8 */
           || (a >> 24) == 127                  /* loopback */
           || (a >> 16) == 0xa9fe               /* 169.254/16 */
           || (a >> 20) == 0xac1                /* 172.16/12 */
           || (a >> 16) == 0xc0a8               /* 192.168/16 */
           || (a >> 22) == (100 << 2 | 1)       /* 100.64/10 */
           || (a >> 28) >= 0xe;                 /* multicast, reserved */
}
