
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "redis/ngx_defarm_redis.h"
#include "cache/ngx_defarm_cache.h"
#include "ngx_defarm_metrics.h"

#include <hiredis/async.h>


/*
 * Redis through hiredis's asynchronous API, on nginx's event loop.  Each
 * worker has one command link; worker 0 of each nginx also has a
 * subscriber link that relays other nodes' cache invalidations into this
 * node's zone.
 *
 * The adapter watches the socket level-triggered, so hiredis's 16 KiB
 * reads and an already-writable socket need no special care.  hiredis owns
 * the fd (it closes it): nginx only forgets its connection structure.
 * hiredis 0.14 has neither timeouts nor cancellation, so every command has
 * a heap "waiter" with an nginx timer: on timeout the request goes on
 * without Redis, and the waiter stays until hiredis calls back (with the
 * reply, or NULL when the context goes), which frees it.  A lost link is
 * reconnected with capped, jittered backoff; AUTH and SELECT go first on
 * every connection.  connect_timeout bounds the whole setup, TCP connect to
 * the answer to PING or SUBSCRIBE, and an error reply to any of it (Redis
 * says -LOADING while it reads its dataset after a restart) drops the
 * connection: a link is either up or on its way to a new attempt.
 *
 * Publish/subscribe delivers nothing to a node that is not listening, so
 * a gap is made up for: invalidations this worker could not publish are
 * kept (up to a bound, beyond which "*", everything, is sent) and sent on
 * reconnect, and a subscriber that (re)connects first forgets every family
 * of its zone, since it may have missed some.
 */


typedef struct ngx_defarm_redis_link_s  ngx_defarm_redis_link_t;


struct ngx_defarm_redis_link_s {
    ngx_defarm_redis_conf_t   *conf;
    redisAsyncContext         *ac;
    ngx_connection_t          *c;
    ngx_event_t                retry;
    ngx_event_t                connect_timer;
    ngx_msec_t                 backoff;
    ngx_log_t                 *log;
    ngx_uint_t                 subscriber;    /* unsigned  subscriber:1; */
    ngx_uint_t                 connected;     /* unsigned  connected:1; */
    ngx_uint_t                 failing;       /* unsigned  failing:1; */
    ngx_uint_t                 timeouts;      /* in a row */
    ngx_uint_t                 waiting;       /* commands in flight */
};


#define NGX_DEFARM_REDIS_PENDING  64

/* past these, the link is dropped, or commands are not even sent */
#define NGX_DEFARM_REDIS_MAX_TIMEOUTS  3
#define NGX_DEFARM_REDIS_MAX_WAITING   1024


typedef struct {
    ngx_http_request_t        *request;       /* NULL: nobody waits */
    ngx_pool_cleanup_t        *cln;
    ngx_defarm_redis_done_pt   done;
    void                      *data;
    ngx_event_t                timer;
} ngx_defarm_redis_waiter_t;


static void ngx_defarm_redis_connect(ngx_defarm_redis_link_t *link);
static void ngx_defarm_redis_schedule(ngx_defarm_redis_link_t *link);
static void ngx_defarm_redis_retry_handler(ngx_event_t *ev);
static void ngx_defarm_redis_connect_timeout(ngx_event_t *ev);
static void ngx_defarm_redis_on_connect(const redisAsyncContext *ac,
    int status);
static void ngx_defarm_redis_on_disconnect(const redisAsyncContext *ac,
    int status);
static void ngx_defarm_redis_setup_reply(redisAsyncContext *ac, void *reply,
    void *privdata);
static void ngx_defarm_redis_setup_failed(redisAsyncContext *ac,
    const char *what, redisReply *rr);
static void ngx_defarm_redis_message(redisAsyncContext *ac, void *reply,
    void *privdata);
static void ngx_defarm_redis_send_pending(ngx_defarm_redis_link_t *link);
static void ngx_defarm_redis_ready(redisAsyncContext *ac, void *reply,
    void *privdata);
static void ngx_defarm_redis_up(ngx_defarm_redis_link_t *link);
static void ngx_defarm_redis_published(redisAsyncContext *ac, void *reply,
    void *privdata);
static void ngx_defarm_redis_queue(u_char *p);
static void ngx_defarm_redis_reply(redisAsyncContext *ac, void *reply,
    void *privdata);
static void ngx_defarm_redis_timeout(ngx_event_t *ev);
static void ngx_defarm_redis_detach(void *data);
static void ngx_defarm_redis_read_handler(ngx_event_t *ev);
static void ngx_defarm_redis_write_handler(ngx_event_t *ev);
static void ngx_defarm_redis_add_read(void *privdata);
static void ngx_defarm_redis_del_read(void *privdata);
static void ngx_defarm_redis_add_write(void *privdata);
static void ngx_defarm_redis_del_write(void *privdata);
static void ngx_defarm_redis_cleanup(void *privdata);


static ngx_defarm_redis_link_t   *ngx_defarm_redis_cmd;
static ngx_defarm_redis_link_t   *ngx_defarm_redis_sub;
static ngx_defarm_cache_t        *ngx_defarm_redis_cache;
static ngx_uint_t                 ngx_defarm_redis_exiting;

/*
 * Invalidations waiting for the link (each a size_t length, then the
 * bytes); past the bound, "overflow": "*" is sent instead.
 */
static u_char                    *ngx_defarm_redis_pending
                                      [NGX_DEFARM_REDIS_PENDING];
static ngx_uint_t                 ngx_defarm_redis_npending;
static ngx_uint_t                 ngx_defarm_redis_overflow;
static ngx_defarm_redis_stats_t   ngx_defarm_redis_none;


/* defarm_redis host:port [db=N] [password=...] [timeout=] ... */

char *
ngx_defarm_redis_set(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_defarm_redis_conf_t  **rcfp = (ngx_defarm_redis_conf_t **)
                                      ((u_char *) conf + cmd->offset);

    size_t                    len;
    ngx_int_t                 n;
    ngx_url_t                 u;
    ngx_str_t                *value;
    ngx_uint_t                i;
    ngx_defarm_redis_conf_t  *rcf;
    ngx_defarm_conf_msec_t    times[4];

    if (*rcfp) {
        return "is duplicate";
    }

    value = cf->args->elts;

    rcf = ngx_pcalloc(cf->pool, sizeof(ngx_defarm_redis_conf_t));
    if (rcf == NULL) {
        return NGX_CONF_ERROR;
    }

    rcf->name = value[1];
    rcf->db = -1;
    rcf->timeout = 50;
    rcf->connect_timeout = 1000;
    rcf->retry_max = 5000;
    ngx_str_set(&rcf->channel, "defarm:invalidate");

    times[0].name = "timeout=";
    times[0].value = &rcf->timeout;
    times[1].name = "connect_timeout=";
    times[1].value = &rcf->connect_timeout;
    times[2].name = "retry_max=";
    times[2].value = &rcf->retry_max;
    times[3].name = NULL;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "db=", 3) == 0) {
            n = ngx_atoi(value[i].data + 3, value[i].len - 3);
            if (n == NGX_ERROR || n > 15) {
                goto invalid;
            }

            rcf->db = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "password=", 9) == 0) {
            rcf->password.data = value[i].data + 9;
            rcf->password.len = value[i].len - 9;
            continue;
        }

        if (ngx_strncmp(value[i].data, "channel=", 8) == 0
            && value[i].len > 8)
        {
            rcf->channel.data = value[i].data + 8;
            rcf->channel.len = value[i].len - 8;
            continue;
        }

        if (ngx_defarm_conf_msec(&value[i], times) != NGX_OK) {
            goto invalid;
        }
    }

    if (rcf->timeout == 0 || rcf->connect_timeout == 0) {
        return "timeouts must be more than 0";
    }

    if (rcf->retry_max < 100) {
        return "retry_max must be at least 100ms";
    }

    /* resolved here, once: hiredis would call getaddrinfo() in a worker */

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = value[1];
    u.default_port = 6379;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "defarm_redis: \"%V\" could not be resolved%s%s",
                           &value[1], u.err ? ": " : "",
                           u.err ? u.err : "");
        return NGX_CONF_ERROR;
    }

    rcf->addr = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN + 1);
    if (rcf->addr == NULL) {
        return NGX_CONF_ERROR;
    }

    len = ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen, rcf->addr,
                        NGX_SOCKADDR_STRLEN, 0);
    rcf->addr[len] = '\0';
    rcf->port = u.port ? u.port : 6379;

    *rcfp = rcf;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "defarm_redis: invalid parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


ngx_int_t
ngx_defarm_redis_init_process(ngx_cycle_t *cycle,
    ngx_defarm_redis_conf_t *rcf)
{
    ngx_uint_t                i, n;
    ngx_defarm_main_conf_t   *mcf;
    ngx_defarm_redis_link_t  *link;

    if (rcf == NULL) {
        return NGX_OK;
    }

    mcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_defarm_module);
    ngx_defarm_redis_cache = mcf->cache;
    ngx_defarm_redis_exiting = 0;

    /* one subscriber per node is enough: the zone is shared */

    n = (ngx_worker == 0 && mcf->cache) ? 2 : 1;

    for (i = 0; i < n; i++) {
        link = ngx_pcalloc(cycle->pool, sizeof(ngx_defarm_redis_link_t));
        if (link == NULL) {
            return NGX_ERROR;
        }

        link->conf = rcf;
        link->log = cycle->log;
        link->subscriber = i;
        link->retry.handler = ngx_defarm_redis_retry_handler;
        link->retry.data = link;
        link->retry.log = cycle->log;
        link->retry.cancelable = 1;
        link->connect_timer.handler = ngx_defarm_redis_connect_timeout;
        link->connect_timer.data = link;
        link->connect_timer.log = cycle->log;
        link->connect_timer.cancelable = 1;

        if (i == 0) {
            ngx_defarm_redis_cmd = link;

        } else {
            ngx_defarm_redis_sub = link;
        }

        ngx_defarm_redis_connect(link);
    }

    return NGX_OK;
}


void
ngx_defarm_redis_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                i;
    ngx_defarm_redis_link_t  *link;

    /* pending callbacks run with NULL and only free their waiters */

    ngx_defarm_redis_exiting = 1;

    for (i = 0; i < 2; i++) {
        link = i ? ngx_defarm_redis_sub : ngx_defarm_redis_cmd;

        if (link && link->ac) {
            redisAsyncFree(link->ac);
        }
    }

    for (i = 0; i < ngx_defarm_redis_npending; i++) {
        ngx_free(ngx_defarm_redis_pending[i]);
    }

    ngx_defarm_redis_npending = 0;
    ngx_defarm_redis_cmd = NULL;
    ngx_defarm_redis_sub = NULL;
}


ngx_defarm_redis_stats_t *
ngx_defarm_redis_stats(void)
{
    ngx_defarm_stats_slot_t  *slot;

    slot = ngx_defarm_metrics_slot();

    return slot ? &slot->redis : &ngx_defarm_redis_none;
}


ngx_uint_t
ngx_defarm_redis_connected(void)
{
    return ngx_defarm_redis_cmd && ngx_defarm_redis_cmd->connected;
}


/* connecting */


static void
ngx_defarm_redis_connect(ngx_defarm_redis_link_t *link)
{
    redisAsyncContext  *ac;
    ngx_connection_t   *c;

    ac = redisAsyncConnect((char *) link->conf->addr, (int) link->conf->port);

    if (ac == NULL) {
        ngx_log_error(NGX_LOG_ERR, link->log, 0,
                      "defarm: redis: cannot allocate a context");
        ngx_defarm_redis_schedule(link);
        return;
    }

    if (ac->err) {
        ngx_log_error(NGX_LOG_ERR, link->log, 0,
                      "defarm: redis %V: %s", &link->conf->name,
                      ac->errstr);
        redisAsyncFree(ac);
        ngx_defarm_redis_schedule(link);
        return;
    }

    c = ngx_get_connection(ac->c.fd, link->log);
    if (c == NULL) {
        redisAsyncFree(ac);
        ngx_defarm_redis_schedule(link);
        return;
    }

    c->data = link;
    c->read->handler = ngx_defarm_redis_read_handler;
    c->write->handler = ngx_defarm_redis_write_handler;
    c->read->log = link->log;
    c->write->log = link->log;

    link->ac = ac;
    link->c = c;
    link->failing = 0;

    ac->data = link;
    ac->ev.data = link;
    ac->ev.addRead = ngx_defarm_redis_add_read;
    ac->ev.delRead = ngx_defarm_redis_del_read;
    ac->ev.addWrite = ngx_defarm_redis_add_write;
    ac->ev.delWrite = ngx_defarm_redis_del_write;
    ac->ev.cleanup = ngx_defarm_redis_cleanup;

    /* the first write event tells the connection is up */

    redisAsyncSetConnectCallback(ac, ngx_defarm_redis_on_connect);
    redisAsyncSetDisconnectCallback(ac, ngx_defarm_redis_on_disconnect);

    /* deleted once the link is up (ngx_defarm_redis_up), not on connect */

    ngx_add_timer(&link->connect_timer, link->conf->connect_timeout);
}


static void
ngx_defarm_redis_schedule(ngx_defarm_redis_link_t *link)
{
    ngx_msec_t  delay;

    if (ngx_defarm_redis_exiting || ngx_exiting || ngx_quit
        || ngx_terminate)
    {
        return;
    }

    /* capped exponential backoff, with jitter so workers do not herd */

    link->backoff = link->backoff ? ngx_min(link->backoff * 2,
                                            link->conf->retry_max)
                                  : 100;

    delay = link->backoff / 2 + ngx_random() % (link->backoff / 2 + 1);

    if (!link->retry.timer_set) {
        ngx_add_timer(&link->retry, delay);
    }
}


static void
ngx_defarm_redis_retry_handler(ngx_event_t *ev)
{
    ngx_defarm_redis_link_t  *link = ev->data;

    if (link->ac == NULL) {
        ngx_defarm_redis_stats()->reconnects++;
        ngx_defarm_redis_connect(link);
    }
}


static void
ngx_defarm_redis_connect_timeout(ngx_event_t *ev)
{
    ngx_defarm_redis_link_t  *link = ev->data;

    ngx_uint_t  tcp;

    if (link->ac == NULL || link->connected) {
        return;
    }

    /*
     * Connected but not up: Redis took the connection and did not answer
     * AUTH, SELECT, PING or SUBSCRIBE in time (a stalled or overloaded
     * peer).  redisAsyncDisconnect() would wait for those answers, so the
     * context is freed: its callbacks run with NULL, then, since the TCP
     * connection was made, hiredis calls the disconnect callback, which
     * schedules the retry without logging again ("failing").  Not even
     * connected: no disconnect callback, only the cleanup hook, and the
     * retry is scheduled here.
     */

    tcp = (link->ac->c.flags & REDIS_CONNECTED) ? 1 : 0;

    ngx_log_error(NGX_LOG_WARN, link->log, 0,
                  "defarm: redis %V: %s timed out", &link->conf->name,
                  tcp ? "handshake" : "connect");

    link->failing = 1;

    redisAsyncFree(link->ac);
    link->ac = NULL;

    if (!tcp) {
        ngx_defarm_redis_schedule(link);
    }
}


static void
ngx_defarm_redis_on_connect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext        *ac = (redisAsyncContext *) cac;
    ngx_defarm_redis_link_t  *link = ac->data;

    if (status != REDIS_OK) {
        if (link->connect_timer.timer_set) {
            ngx_del_timer(&link->connect_timer);
        }

        ngx_log_error(NGX_LOG_WARN, link->log, 0,
                      "defarm: redis %V: cannot connect: %s",
                      &link->conf->name, ac->errstr);

        /* hiredis frees the context after this callback */
        link->ac = NULL;
        ngx_defarm_redis_schedule(link);
        return;
    }

    if (link->conf->password.len) {
        (void) redisAsyncCommand(ac, ngx_defarm_redis_setup_reply, "AUTH",
                                 "AUTH %b", link->conf->password.data,
                                 link->conf->password.len);
    }

    if (link->conf->db >= 0) {
        (void) redisAsyncCommand(ac, ngx_defarm_redis_setup_reply, "SELECT",
                                 "SELECT %d", (int) link->conf->db);
    }

    /* dead peers are noticed even on a link with nothing to send */

    (void) redisEnableKeepAlive(&ac->c);

    /*
     * The link is up once Redis answered what goes first: for the
     * subscriber, its SUBSCRIBE (ngx_defarm_redis_message); for commands,
     * a PING sent after AUTH and SELECT.  Until then the connect timer
     * runs on.
     */

    if (link->subscriber) {
        (void) redisAsyncCommand(ac, ngx_defarm_redis_message, link,
                                 "SUBSCRIBE %b", link->conf->channel.data,
                                 link->conf->channel.len);

    } else {
        (void) redisAsyncCommand(ac, ngx_defarm_redis_ready, NULL, "PING");
    }
}


static void
ngx_defarm_redis_up(ngx_defarm_redis_link_t *link)
{
    if (link->connect_timer.timer_set) {
        ngx_del_timer(&link->connect_timer);
    }

    link->connected = 1;
    link->backoff = 0;
    link->timeouts = 0;

    ngx_log_error(NGX_LOG_INFO, link->log, 0,
                  "defarm: redis %V: connected%s", &link->conf->name,
                  link->subscriber ? " (subscriber)" : "");
}


static void
ngx_defarm_redis_ready(redisAsyncContext *ac, void *reply, void *privdata)
{
    redisReply               *rr = reply;
    ngx_defarm_redis_link_t  *link = ac->data;

    /* NULL: the context is being freed, and the disconnect callback runs */

    if (rr == NULL || ngx_defarm_redis_exiting) {
        return;
    }

    if (rr->type == REDIS_REPLY_ERROR) {
        ngx_defarm_redis_setup_failed(ac, "PING", rr);
        return;
    }

    if (link->failing) {
        return;                         /* AUTH or SELECT failed */
    }

    ngx_defarm_redis_up(link);
    ngx_defarm_redis_stats()->connected = 1;
    ngx_defarm_redis_send_pending(link);
}


static void
ngx_defarm_redis_on_disconnect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext        *ac = (redisAsyncContext *) cac;
    ngx_defarm_redis_link_t  *link = ac->data;

    /* hiredis frees the context after this callback */

    link->ac = NULL;
    link->connected = 0;

    if (!link->subscriber) {
        ngx_defarm_redis_stats()->connected = 0;
    }

    if (ngx_defarm_redis_exiting) {
        return;
    }

    /* a failed setup or a timeout already said why the link goes */

    if (!link->failing) {
        ngx_log_error(NGX_LOG_WARN, link->log, 0,
                      "defarm: redis %V: connection lost%s%s",
                      &link->conf->name, status == REDIS_OK ? "" : ": ",
                      status == REDIS_OK ? "" : ac->errstr);
    }

    ngx_defarm_redis_schedule(link);
}


static void
ngx_defarm_redis_setup_reply(redisAsyncContext *ac, void *reply,
    void *privdata)
{
    redisReply  *rr = reply;

    /* NULL: the context is being freed, and the disconnect callback runs */

    if (rr && rr->type == REDIS_REPLY_ERROR && !ngx_defarm_redis_exiting) {
        ngx_defarm_redis_setup_failed(ac, privdata, rr);
    }
}


/*
 * Redis refused a step of the setup: -LOADING while it reads its dataset
 * after a restart, -BUSY, -NOAUTH, -NOPERM, a wrong password or database.
 * The connection is dropped once the answers still due have come (the
 * connect timer bounds that too); the disconnect callback then schedules
 * the retry, so the backoff paces this warning, once per connection
 * however many steps fail, and "connection lost" is not logged after it.
 */

static void
ngx_defarm_redis_setup_failed(redisAsyncContext *ac, const char *what,
    redisReply *rr)
{
    ngx_defarm_redis_link_t  *link = ac->data;

    if (link->failing) {
        return;
    }

    link->failing = 1;

    ngx_log_error(NGX_LOG_WARN, link->log, 0,
                  "defarm: redis %V: %s failed: %s", &link->conf->name,
                  what, rr->str);

    redisAsyncDisconnect(ac);
}


/* the subscriber: another node changed something this node may cache */

static void
ngx_defarm_redis_message(redisAsyncContext *ac, void *reply, void *privdata)
{
    redisReply               *rr = reply;
    ngx_str_t                 key;
    ngx_defarm_redis_link_t  *link = privdata;

    /* NULL: the context is being freed, and the disconnect callback runs */

    if (rr == NULL || ngx_defarm_redis_exiting) {
        return;
    }

    /*
     * hiredis 0.14 drops a subscribed context on an error reply itself
     * (the disconnect callback logs it); a later one may pass it here
     */

    if (rr->type == REDIS_REPLY_ERROR) {
        if (!link->connected) {
            ngx_defarm_redis_setup_failed(ac, "SUBSCRIBE", rr);
        }

        return;
    }

    if (rr->type != REDIS_REPLY_ARRAY || rr->elements != 3
        || rr->element[0]->type != REDIS_REPLY_STRING)
    {
        return;
    }

    if (ngx_strcmp(rr->element[0]->str, "subscribe") == 0) {
        if (link->failing) {
            return;                     /* AUTH or SELECT failed */
        }

        ngx_defarm_redis_up(link);

        /* whatever changed while nobody listened is forgotten */

        if (ngx_defarm_redis_cache) {
            ngx_defarm_cache_invalidate_all(ngx_defarm_redis_cache);
        }

        return;
    }

    if (ngx_strcmp(rr->element[0]->str, "message") != 0
        || rr->element[2]->type != REDIS_REPLY_STRING)
    {
        return;
    }

    key.data = (u_char *) rr->element[2]->str;
    key.len = rr->element[2]->len;

    if (ngx_defarm_redis_cache == NULL || key.len == 0) {
        return;
    }

    if (key.len == 1 && key.data[0] == '*') {
        ngx_defarm_cache_invalidate_all(ngx_defarm_redis_cache);

    } else {
        ngx_defarm_cache_invalidate(ngx_defarm_redis_cache, &key);
    }

    ngx_defarm_redis_stats()->applied++;
}


/* commands */


ngx_int_t
ngx_defarm_redis_command(ngx_http_request_t *r,
    ngx_defarm_redis_done_pt done, void *data, int argc, const char **argv,
    const size_t *argvlen)
{
    ngx_defarm_redis_link_t    *link;
    ngx_defarm_redis_waiter_t  *w;

    link = ngx_defarm_redis_cmd;

    if (link == NULL || !link->connected || link->ac == NULL
        || link->waiting >= NGX_DEFARM_REDIS_MAX_WAITING)
    {
        return done(r, data, NULL);
    }

    w = ngx_calloc(sizeof(ngx_defarm_redis_waiter_t), r->connection->log);
    if (w == NULL) {
        return done(r, data, NULL);
    }

    w->cln = ngx_pool_cleanup_add(r->pool, 0);
    if (w->cln == NULL) {
        ngx_free(w);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (redisAsyncCommandArgv(link->ac, ngx_defarm_redis_reply, w, argc,
                              argv, argvlen)
        != REDIS_OK)
    {
        ngx_free(w);
        ngx_defarm_redis_stats()->errors++;
        return done(r, data, NULL);
    }

    ngx_defarm_redis_stats()->commands++;
    link->waiting++;

    w->request = r;
    w->done = done;
    w->data = data;
    w->cln->handler = ngx_defarm_redis_detach;
    w->cln->data = w;
    w->timer.handler = ngx_defarm_redis_timeout;
    w->timer.data = w;
    w->timer.log = r->connection->log;

    ngx_add_timer(&w->timer, link->conf->timeout);

    ngx_defarm_request_wait(r);

    return NGX_DONE;
}


/*
 * Nobody waits for PUBLISH, but its message is kept until Redis took it:
 * one that cannot go now, or whose link fails before the answer, goes on
 * reconnect.
 */

void
ngx_defarm_redis_publish(ngx_str_t *message)
{
    u_char                   *p;
    ngx_defarm_redis_link_t  *link;

    link = ngx_defarm_redis_cmd;

    if (link == NULL) {
        return;                                 /* Redis not configured */
    }

    /* a length, then the bytes: the reply callback owns them */

    p = ngx_alloc(sizeof(size_t) + message->len, link->log);
    if (p == NULL) {
        ngx_defarm_redis_overflow = 1;
        return;
    }

    ngx_memcpy(p, &message->len, sizeof(size_t));
    ngx_memcpy(p + sizeof(size_t), message->data, message->len);

    if (link->connected && link->ac
        && redisAsyncCommand(link->ac, ngx_defarm_redis_published, p,
                             "PUBLISH %b %b", link->conf->channel.data,
                             link->conf->channel.len, message->data,
                             message->len)
           == REDIS_OK)
    {
        ngx_defarm_redis_stats()->published++;
        return;
    }

    ngx_defarm_redis_queue(p);
}


static void
ngx_defarm_redis_published(redisAsyncContext *ac, void *reply,
    void *privdata)
{
    redisReply  *rr = reply;

    if (rr && rr->type != REDIS_REPLY_ERROR) {
        ngx_free(privdata);
        return;
    }

    /* lost with its link: sent again after the reconnect */

    if (ngx_defarm_redis_exiting) {
        ngx_free(privdata);
        return;
    }

    ngx_defarm_redis_queue(privdata);
}


static void
ngx_defarm_redis_queue(u_char *p)
{
    if (ngx_defarm_redis_overflow
        || ngx_defarm_redis_npending == NGX_DEFARM_REDIS_PENDING)
    {
        ngx_defarm_redis_overflow = 1;
        ngx_free(p);
        return;
    }

    ngx_defarm_redis_pending[ngx_defarm_redis_npending++] = p;
}


static void
ngx_defarm_redis_send_pending(ngx_defarm_redis_link_t *link)
{
    u_char      *p[NGX_DEFARM_REDIS_PENDING];
    ngx_str_t    m;
    ngx_uint_t   i, n, overflow;

    /* taken out first: a message that fails again is queued anew */

    n = ngx_defarm_redis_npending;
    overflow = ngx_defarm_redis_overflow;

    ngx_memcpy(p, ngx_defarm_redis_pending, n * sizeof(u_char *));

    ngx_defarm_redis_npending = 0;
    ngx_defarm_redis_overflow = 0;

    for (i = 0; i < n; i++) {
        if (!overflow) {
            ngx_memcpy(&m.len, p[i], sizeof(size_t));
            m.data = p[i] + sizeof(size_t);
            ngx_defarm_redis_publish(&m);
        }

        ngx_free(p[i]);
    }

    if (overflow) {
        ngx_str_set(&m, "*");
        ngx_defarm_redis_publish(&m);
    }
}


/* the request lets go of its waiter: the reply, when it comes, is dropped */

static void
ngx_defarm_redis_forget(ngx_defarm_redis_waiter_t *w)
{
    if (w->timer.timer_set) {
        ngx_del_timer(&w->timer);
    }

    if (w->cln) {
        w->cln->handler = NULL;
        w->cln = NULL;
    }

    w->request = NULL;
}


static void
ngx_defarm_redis_finish(ngx_http_request_t *r, ngx_defarm_redis_done_pt done,
    void *data, redisReply *reply)
{
    ngx_int_t          rc;
    ngx_connection_t  *c;

    c = r->connection;

    rc = done(r, data, reply);

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static void
ngx_defarm_redis_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    ngx_defarm_redis_waiter_t  *w = privdata;

    redisReply               *rr = reply;
    ngx_http_request_t       *r;
    ngx_defarm_redis_link_t  *link = ac->data;

    static time_t  logged;

    r = w->request;

    link->waiting--;

    if (rr) {
        link->timeouts = 0;                     /* it answers */
    }

    ngx_defarm_redis_forget(w);

    if (r == NULL || ngx_defarm_redis_exiting) {
        ngx_free(w);
        return;
    }

    if (rr == NULL || rr->type == REDIS_REPLY_ERROR) {
        ngx_defarm_redis_stats()->errors++;

        if (rr && ngx_time() - logged >= 10) {
            logged = ngx_time();
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "defarm: redis: %s", rr->str);
        }

        rr = NULL;
    }

    ngx_defarm_redis_finish(r, w->done, w->data, rr);

    ngx_free(w);
}


static void
ngx_defarm_redis_timeout(ngx_event_t *ev)
{
    ngx_defarm_redis_waiter_t  *w = ev->data;

    ngx_http_request_t       *r;
    ngx_defarm_redis_link_t  *link;

    r = w->request;

    /* the waiter stays for hiredis's callback, which frees it */

    ngx_defarm_redis_forget(w);

    ngx_defarm_redis_stats()->timeouts++;

    ngx_defarm_redis_finish(r, w->done, w->data, NULL);

    /*
     * A Redis that stops answering without closing (a frozen host, a lost
     * route) is let go after a few timeouts in a row: the pending
     * callbacks run with NULL, and the link reconnects.  From a timer,
     * never inside a hiredis callback, so freeing the context is safe.
     */

    link = ngx_defarm_redis_cmd;

    if (link && link->ac
        && ++link->timeouts >= NGX_DEFARM_REDIS_MAX_TIMEOUTS)
    {
        ngx_log_error(NGX_LOG_WARN, link->log, 0,
                      "defarm: redis %V: %ui commands in a row timed out, "
                      "reconnecting", &link->conf->name, link->timeouts);
        link->timeouts = 0;
        redisAsyncFree(link->ac);
    }
}


static void
ngx_defarm_redis_detach(void *data)
{
    ngx_defarm_redis_waiter_t  *w = data;

    w->cln = NULL;
    ngx_defarm_redis_forget(w);
}


/* the hiredis event hooks: level-triggered, as for PostgreSQL */


static void
ngx_defarm_redis_read_handler(ngx_event_t *ev)
{
    ngx_connection_t         *c = ev->data;
    ngx_defarm_redis_link_t  *link = c->data;

    /* a callback may free the context: nothing of it is used after */

    if (link->ac) {
        redisAsyncHandleRead(link->ac);
    }
}


static void
ngx_defarm_redis_write_handler(ngx_event_t *ev)
{
    ngx_connection_t         *c = ev->data;
    ngx_defarm_redis_link_t  *link = c->data;

    if (link->ac) {
        redisAsyncHandleWrite(link->ac);
    }
}


static void
ngx_defarm_redis_add_read(void *privdata)
{
    ngx_defarm_redis_link_t  *link = privdata;

    if (link->c && !link->c->read->active) {
        (void) ngx_add_event(link->c->read, NGX_READ_EVENT,
                             NGX_LEVEL_EVENT);
    }
}


static void
ngx_defarm_redis_del_read(void *privdata)
{
    ngx_defarm_redis_link_t  *link = privdata;

    if (link->c && link->c->read->active) {
        (void) ngx_del_event(link->c->read, NGX_READ_EVENT, 0);
    }
}


static void
ngx_defarm_redis_add_write(void *privdata)
{
    ngx_defarm_redis_link_t  *link = privdata;

    if (link->c && !link->c->write->active) {
        (void) ngx_add_event(link->c->write, NGX_WRITE_EVENT,
                             NGX_LEVEL_EVENT);
    }
}


static void
ngx_defarm_redis_del_write(void *privdata)
{
    ngx_defarm_redis_link_t  *link = privdata;

    if (link->c && link->c->write->active) {
        (void) ngx_del_event(link->c->write, NGX_WRITE_EVENT, 0);
    }
}


/* the context goes: nginx forgets the socket, hiredis closes it */

static void
ngx_defarm_redis_cleanup(void *privdata)
{
    ngx_defarm_redis_link_t  *link = privdata;

    if (link->connect_timer.timer_set) {
        ngx_del_timer(&link->connect_timer);
    }

    if (link->c) {
        ngx_defarm_free_connection(link->c);
        link->c = NULL;
    }

    link->ac = NULL;
    link->connected = 0;
}
