
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "pg/ngx_defarm_pg.h"


/*
 * A worker's ear on a PostgreSQL channel: one connection outside the
 * pool that LISTENs, so that what is committed on any node (a NOTIFY goes
 * out at the commit) is heard at once rather than at the next poll.  The
 * job runner (defarm_jobs) and the notification sockets each have one.
 * While it is down (connecting, reconnecting after a failure, every
 * second) nothing is heard: its user is told each time it listens again
 * (a NULL notification), to catch up on what it may have missed.
 * Non-blocking libpq on a level-triggered nginx connection; a
 * notification left in OpenSSL's buffer by a TLS connection waits for
 * the next one.
 */


typedef enum {
    NGX_DEFARM_LISTEN_IDLE = 0,
    NGX_DEFARM_LISTEN_CONNECTING,
    NGX_DEFARM_LISTEN_SENT,                   /* LISTEN on its way */
    NGX_DEFARM_LISTEN_ON                      /* the server listens */
} ngx_defarm_listen_state_e;


struct ngx_defarm_pg_listen_s {
    ngx_defarm_pg_conf_t      *pcf;
    PGconn                    *pg;
    ngx_connection_t          *c;
    ngx_event_t                retry;
    ngx_log_t                 *log;
    const char                *listen;        /* "LISTEN <channel>" */
    const char                *what;          /* for the log */
    ngx_defarm_pg_heard_pt     heard;
    void                      *data;
    ngx_defarm_listen_state_e  state;
};


typedef ngx_defarm_pg_listen_t  ngx_defarm_listen_t;


/* how often a listening connection that heard nothing is checked */
#define NGX_DEFARM_LISTEN_PROBE  30000


static void ngx_defarm_listen_connect(ngx_defarm_listen_t *ln);
static ngx_int_t ngx_defarm_listen_wrap(ngx_defarm_listen_t *ln);
static void ngx_defarm_listen_handler(ngx_event_t *ev);
static void ngx_defarm_listen_poll(ngx_defarm_listen_t *ln);
static void ngx_defarm_listen_read(ngx_defarm_listen_t *ln);
static void ngx_defarm_listen_close(ngx_defarm_listen_t *ln,
    const char *why);
static void ngx_defarm_listen_retry(ngx_event_t *ev);
static void ngx_defarm_listen_unwrap(ngx_defarm_listen_t *ln);


ngx_defarm_pg_listen_t *
ngx_defarm_pg_listen_start(ngx_cycle_t *cycle, ngx_defarm_pg_conf_t *pcf,
    const char *listen, const char *what, ngx_defarm_pg_heard_pt heard,
    void *data)
{
    ngx_defarm_listen_t  *ln;

    ln = ngx_pcalloc(cycle->pool, sizeof(ngx_defarm_listen_t));
    if (ln == NULL) {
        return NULL;
    }

    ln->pcf = pcf;
    ln->listen = listen;
    ln->what = what;
    ln->heard = heard;
    ln->data = data;
    ln->log = cycle->log;
    ln->retry.handler = ngx_defarm_listen_retry;
    ln->retry.data = ln;
    ln->retry.log = cycle->log;
    ln->retry.cancelable = 1;

    ngx_defarm_listen_connect(ln);

    return ln;
}


void
ngx_defarm_pg_listen_stop(ngx_defarm_pg_listen_t *ln)
{
    if (ln == NULL) {
        return;
    }

    if (ln->retry.timer_set) {
        ngx_del_timer(&ln->retry);
    }

    ngx_defarm_listen_unwrap(ln);

    if (ln->pg) {
        PQfinish(ln->pg);
        ln->pg = NULL;
    }
}


static void
ngx_defarm_listen_connect(ngx_defarm_listen_t *ln)
{
    ln->pg = PQconnectStartParams(ln->pcf->keywords, ln->pcf->values, 0);

    if (ln->pg == NULL || PQstatus(ln->pg) == CONNECTION_BAD
        || PQsetnonblocking(ln->pg, 1) != 0)
    {
        ngx_defarm_listen_close(ln, ln->pg ? PQerrorMessage(ln->pg)
                                           : "out of memory");
        return;
    }

    ln->state = NGX_DEFARM_LISTEN_CONNECTING;

    if (ngx_defarm_listen_wrap(ln) != NGX_OK) {
        ngx_defarm_listen_close(ln, "cannot watch its socket");
        return;
    }

    /* libpq: before the first PQconnectPoll, wait as if it said WRITING */

    ngx_add_timer(ln->c->read, ln->pcf->connect_timeout);
}


/* an nginx connection on libpq's socket, read and write watched */

static ngx_int_t
ngx_defarm_listen_wrap(ngx_defarm_listen_t *ln)
{
    ngx_socket_t       fd;
    ngx_connection_t  *c;

    fd = PQsocket(ln->pg);
    if (fd == (ngx_socket_t) -1) {
        return NGX_ERROR;
    }

    c = ngx_get_connection(fd, ln->log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->data = ln;
    c->read->handler = ngx_defarm_listen_handler;
    c->write->handler = ngx_defarm_listen_handler;
    c->read->log = ln->log;
    c->write->log = ln->log;
    ln->c = c;

    if (ngx_add_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT) != NGX_OK
        || ngx_add_event(c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT)
           != NGX_OK)
    {
        ngx_defarm_listen_unwrap(ln);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_defarm_listen_unwrap(ngx_defarm_listen_t *ln)
{
    if (ln->c == NULL) {
        return;
    }

    /*
     * libpq has closed the socket already (a lost connection, the next
     * address) or is about to (PQfinish): no epoll_ctl() on it, and it
     * owns the descriptor
     */

    ngx_defarm_free_connection(ln->c);
    ln->c = NULL;
}


static void
ngx_defarm_listen_handler(ngx_event_t *ev)
{
    ngx_connection_t     *c = ev->data;
    ngx_defarm_listen_t  *ln = c->data;

    if (ev->timedout) {
        ngx_defarm_listen_close(ln, "connection timed out");
        return;
    }

    if (ln->state == NGX_DEFARM_LISTEN_CONNECTING) {
        ngx_defarm_listen_poll(ln);
        return;
    }

    if (!ev->write) {
        ngx_defarm_listen_read(ln);
    }
}


static void
ngx_defarm_listen_poll(ngx_defarm_listen_t *ln)
{
    PostgresPollingStatusType  st;

    st = PQconnectPoll(ln->pg);

    /* libpq may have moved to another socket (the next address) */

    if (st != PGRES_POLLING_FAILED && PQsocket(ln->pg) != ln->c->fd) {
        ngx_defarm_listen_unwrap(ln);

        if (ngx_defarm_listen_wrap(ln) != NGX_OK) {
            ngx_defarm_listen_close(ln, "cannot watch its socket");
            return;
        }

        ngx_add_timer(ln->c->read, ln->pcf->connect_timeout);
    }

    switch (st) {

    case PGRES_POLLING_READING:
        if (ln->c->write->active) {
            (void) ngx_del_event(ln->c->write, NGX_WRITE_EVENT, 0);
        }

        return;

    case PGRES_POLLING_WRITING:
        if (!ln->c->write->active
            && ngx_add_event(ln->c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT)
               != NGX_OK)
        {
            ngx_defarm_listen_close(ln, "cannot watch its socket");
        }

        return;

    case PGRES_POLLING_OK:
        break;

    default:
        ngx_defarm_listen_close(ln, PQerrorMessage(ln->pg));
        return;
    }

    if (ln->c->read->timer_set) {
        ngx_del_timer(ln->c->read);
    }

    if (ln->c->write->active) {
        (void) ngx_del_event(ln->c->write, NGX_WRITE_EVENT, 0);
    }

    /* a short statement: it goes out at once on a fresh connection */

    if (!PQsendQuery(ln->pg, ln->listen) || PQflush(ln->pg) != 0) {
        ngx_defarm_listen_close(ln, PQerrorMessage(ln->pg));
        return;
    }

    ln->state = NGX_DEFARM_LISTEN_SENT;

    /* an answer is due, as a connection's is */

    ngx_add_timer(ln->c->read, ln->pcf->connect_timeout);
}


static void
ngx_defarm_listen_read(ngx_defarm_listen_t *ln)
{
    PGnotify  *n;
    PGresult  *res;

    if (!PQconsumeInput(ln->pg)) {
        ngx_defarm_listen_close(ln, PQerrorMessage(ln->pg));
        return;
    }

    while (!PQisBusy(ln->pg) && (res = PQgetResult(ln->pg)) != NULL) {
        if (PQresultStatus(res) != PGRES_COMMAND_OK
            && PQresultStatus(res) != PGRES_EMPTY_QUERY)
        {
            PQclear(res);
            ngx_defarm_listen_close(ln, "LISTEN failed");
            return;
        }

        PQclear(res);

        /* the LISTEN's, or a probe's: the connection is alive */

        if (ln->c->read->timer_set) {
            ngx_del_timer(ln->c->read);
        }

        if (!ln->retry.timer_set) {
            ngx_add_timer(&ln->retry, NGX_DEFARM_LISTEN_PROBE);
        }

        if (ln->state == NGX_DEFARM_LISTEN_SENT) {

            /*
             * Done by the server: what commits from now on is heard.  Told
             * only now, so that what its user reads next cannot have been
             * committed before the LISTEN took effect and not be heard.
             */

            ln->state = NGX_DEFARM_LISTEN_ON;

            ngx_log_error(NGX_LOG_INFO, ln->log, 0,
                          "defarm: listening for %s", ln->what);

            ln->heard(ln->data, NULL);

            if (ln->pg == NULL) {
                return;
            }
        }
    }

    while ((n = PQnotifies(ln->pg)) != NULL) {
        ln->heard(ln->data, n);
        PQfreemem(n);
    }

    if (PQstatus(ln->pg) != CONNECTION_OK) {
        ngx_defarm_listen_close(ln, "the connection went");
    }
}


ngx_uint_t
ngx_defarm_pg_listening(ngx_defarm_pg_listen_t *ln)
{
    return ln && ln->state == NGX_DEFARM_LISTEN_ON;
}


static void
ngx_defarm_listen_close(ngx_defarm_listen_t *ln, const char *why)
{
    ngx_log_error(NGX_LOG_WARN, ln->log, 0,
                  "defarm: not listening for %s: %s", ln->what,
                  why ? why : "");

    ngx_defarm_listen_unwrap(ln);

    if (ln->pg) {
        PQfinish(ln->pg);
        ln->pg = NULL;
    }

    ln->state = NGX_DEFARM_LISTEN_IDLE;

    if (!ngx_exiting && !ngx_quit && !ngx_terminate) {
        ngx_add_timer(&ln->retry, 1000);
    }
}


static void
ngx_defarm_listen_retry(ngx_event_t *ev)
{
    ngx_defarm_listen_t  *ln = ev->data;

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    if (ln->state == NGX_DEFARM_LISTEN_ON) {

        /*
         * Listening, and silent for a while: an empty statement, so that
         * a connection lost without a word (no RST) is found out, and
         * replaced, within connect_timeout.
         */

        if (!PQsendQuery(ln->pg, ";") || PQflush(ln->pg) != 0) {
            ngx_defarm_listen_close(ln, PQerrorMessage(ln->pg));
            return;
        }

        ngx_add_timer(ln->c->read, ln->pcf->connect_timeout);
        return;
    }

    ngx_defarm_listen_connect(ln);
}
