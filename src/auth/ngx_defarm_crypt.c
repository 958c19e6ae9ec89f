
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "auth/ngx_defarm_crypt.h"
#include "ngx_defarm_response.h"

#include <crypt.h>
#include <sys/resource.h>


/*
 * The crypt threads run at a lower priority than the workers: with as
 * many threads as cores, a worker that has a request to serve preempts
 * bcrypt instead of waiting for a time slice, and the CPU stays busy
 * hashing whenever the workers are idle.  (Linux: setpriority() on a
 * thread id applies to that thread alone.)
 */

#define NGX_DEFARM_CRYPT_NICE  10

/* the period of the timer that keeps an exiting worker for the thread */
#define NGX_DEFARM_CRYPT_HOLD  60000


/*
 * bcrypt (libxcrypt's crypt_rn) takes 50-250 ms of CPU: it runs in an
 * nginx thread pool, never in the worker.  A task is posted with the
 * request suspended (count) and pinned (blocked, so its memory outlives a
 * client that goes away while the thread works), and the completion event
 * resumes it in the worker.  A full queue is backpressure: 503 crypt_busy
 * with Retry-After, at once.
 */


typedef struct {
    ngx_http_request_t        *request;
    ngx_uint_t                 verify;        /* unsigned  verify:1; */
    ngx_uint_t                 cost;
    char                      *password;
    char                      *hash;          /* verify: the stored one */
    ngx_int_t                  rc;
    uint64_t                   us;
    ngx_defarm_crypt_done_pt   done;
    void                      *data;
    ngx_event_t                hold;
    ngx_atomic_t               abandoned;     /* the client left */
    char                       output[CRYPT_OUTPUT_SIZE];
} ngx_defarm_crypt_task_t;


static ngx_int_t ngx_defarm_crypt_start(ngx_http_request_t *r,
    ngx_str_t *password, ngx_str_t *hash, ngx_uint_t verify,
    ngx_defarm_crypt_done_pt done, void *data);
static ngx_int_t ngx_defarm_crypt_post(ngx_http_request_t *r,
    ngx_defarm_crypt_task_t *ct);
static void ngx_defarm_crypt_thread(void *data, ngx_log_t *log);
static void ngx_defarm_crypt_event(ngx_event_t *ev);
static void ngx_defarm_crypt_hold(ngx_event_t *ev);
static void ngx_defarm_crypt_abandon(void *data);
static ngx_int_t ngx_defarm_crypt_equal(const char *a, const char *b);


char *
ngx_defarm_crypt_set_pool(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_defarm_main_conf_t  *mcf = conf;

    ngx_str_t  *value;

    if (mcf->crypt->pool_name.data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    mcf->crypt->pool_name = value[1];

    return NGX_CONF_OK;
}


char *
ngx_defarm_crypt_set_cost(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_defarm_main_conf_t  *mcf = conf;

    ngx_int_t   n;
    ngx_str_t  *value;

    if (mcf->crypt->cost != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;
    n = ngx_atoi(value[1].data, value[1].len);

    if (n < 4 || n > 31) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "defarm_bcrypt_cost must be between 4 and 31");
        return NGX_CONF_ERROR;
    }

    mcf->crypt->cost = n;

    return NGX_CONF_OK;
}


char *
ngx_defarm_crypt_init_conf(ngx_conf_t *cf, ngx_defarm_crypt_conf_t *ccf)
{
    if (ccf->cost == NGX_CONF_UNSET_UINT) {
        ccf->cost = 12;
    }

    if (ccf->pool_name.data == NULL) {
        ngx_str_set(&ccf->pool_name, "default");
    }

    /* nginx checks at configuration time that the pool exists */

    ccf->pool = ngx_thread_pool_add(cf, &ccf->pool_name);
    if (ccf->pool == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_defarm_crypt_cstr(ngx_http_request_t *r, ngx_str_t *s)
{
    u_char  *p;

    p = ngx_pnalloc(r->pool, s->len + 1);
    if (p == NULL) {
        return NULL;
    }

    ngx_memcpy(p, s->data, s->len);
    p[s->len] = '\0';

    return (char *) p;
}


ngx_int_t
ngx_defarm_crypt_hash(ngx_http_request_t *r, ngx_str_t *password,
    ngx_defarm_crypt_done_pt done, void *data)
{
    return ngx_defarm_crypt_start(r, password, NULL, 0, done, data);
}


ngx_int_t
ngx_defarm_crypt_verify(ngx_http_request_t *r, ngx_str_t *password,
    ngx_str_t *hash, ngx_defarm_crypt_done_pt done, void *data)
{
    return ngx_defarm_crypt_start(r, password, hash, 1, done, data);
}


static ngx_int_t
ngx_defarm_crypt_start(ngx_http_request_t *r, ngx_str_t *password,
    ngx_str_t *hash, ngx_uint_t verify, ngx_defarm_crypt_done_pt done,
    void *data)
{
    ngx_defarm_crypt_task_t  *ct;
    ngx_defarm_main_conf_t   *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_defarm_module);

    ct = ngx_pcalloc(r->pool, sizeof(ngx_defarm_crypt_task_t));
    if (ct == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /*
     * Verifying with no stored hash (an unknown user): the thread hashes
     * the password with a fresh salt at the configured cost instead, which
     * costs what a verification costs, and the answer is "no match".
     */

    ct->verify = (hash != NULL);
    ct->rc = (verify && hash == NULL) ? NGX_DECLINED : NGX_OK;
    ct->cost = mcf->crypt->cost;
    ct->password = ngx_defarm_crypt_cstr(r, password);
    ct->hash = hash ? ngx_defarm_crypt_cstr(r, hash) : NULL;
    ct->done = done;
    ct->data = data;

    if (ct->password == NULL || (hash && ct->hash == NULL)) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_defarm_crypt_post(r, ct);
}


static ngx_int_t
ngx_defarm_crypt_post(ngx_http_request_t *r, ngx_defarm_crypt_task_t *ct)
{
    ngx_thread_task_t       *task;
    ngx_http_cleanup_t      *cln;
    ngx_defarm_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_defarm_module);

    task = ngx_thread_task_alloc(r->pool, 0);
    if (task == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /*
     * A client that leaves while its task waits in the queue: the thread
     * skips the hash, so abandoned logins do not take the place of live
     * ones (the request itself stays, blocked, until the thread is done)
     */

    cln = ngx_http_cleanup_add(r, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_defarm_crypt_abandon;
    cln->data = ct;

    ct->request = r;

    task->ctx = ct;
    task->handler = ngx_defarm_crypt_thread;
    task->event.handler = ngx_defarm_crypt_event;
    task->event.data = ct;

    if (ngx_thread_task_post(mcf->crypt->pool, task) != NGX_OK) {
        /* the queue is full (nginx logged it): backpressure, not collapse */
        return ngx_defarm_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                NGX_DEFARM_ERR_CRYPT_BUSY,
                                "Service temporarily busy, please retry");
    }

    ngx_defarm_request_wait(r);
    r->main->blocked++;

    /*
     * A timer that is not cancelable while the thread works: a worker told
     * to exit (a reload) waits for it and answers the request, instead of
     * leaving with the client's socket open ("open socket left")
     */

    ct->hold.handler = ngx_defarm_crypt_hold;
    ct->hold.data = ct;
    ct->hold.log = r->connection->log;
    ngx_add_timer(&ct->hold, NGX_DEFARM_CRYPT_HOLD);

    return NGX_DONE;
}


static void
ngx_defarm_crypt_abandon(void *data)
{
    ngx_defarm_crypt_task_t  *ct = data;

    ct->abandoned = 1;
    ngx_memory_barrier();
}


static void
ngx_defarm_crypt_hold(ngx_event_t *ev)
{
    /* the thread is still at work: wait on */

    ngx_add_timer(ev, NGX_DEFARM_CRYPT_HOLD);
}


/* in a thread of the pool: no nginx calls but the log */


static void
ngx_defarm_crypt_thread(void *data, ngx_log_t *log)
{
    ngx_defarm_crypt_task_t  *ct = data;

    char            setting[CRYPT_GENSALT_OUTPUT_SIZE];
    char           *p;
    struct timeval  t0, t1;

    static __thread ngx_uint_t         niced;

    /*
     * crypt_rn()'s 32k of state, one per thread rather than per queued
     * task: a thousand logins waiting (or abandoned) cost a worker their
     * small tasks, not 32 MB it keeps afterwards
     */

    static __thread struct crypt_data  cd;

    if (!niced) {
        (void) setpriority(PRIO_PROCESS, (id_t) gettid(),
                           NGX_DEFARM_CRYPT_NICE);
        niced = 1;
    }

    ngx_gettimeofday(&t0);

    if (ct->abandoned) {
        ct->rc = NGX_ERROR;

    } else if (ct->verify) {
        p = crypt_rn(ct->password, ct->hash, &cd, sizeof(cd));

        if (p == NULL || p[0] == '*') {
            ct->rc = NGX_ERROR;

        } else if (ct->rc != NGX_DECLINED) {
            ct->rc = ngx_defarm_crypt_equal(p, ct->hash) ? NGX_OK
                                                         : NGX_DECLINED;
        }

    } else {
        /* libxcrypt draws the salt from the kernel's CSPRNG */

        p = crypt_gensalt_rn("$2b$", ct->cost, NULL, 0, setting,
                             sizeof(setting));

        if (p != NULL) {
            p = crypt_rn(ct->password, setting, &cd, sizeof(cd));
        }

        if (p == NULL || p[0] == '*') {
            ct->rc = NGX_ERROR;

        } else if (ct->rc != NGX_DECLINED) {
            ngx_cpystrn((u_char *) ct->output, (u_char *) p,
                        sizeof(ct->output));
            ct->rc = NGX_OK;
        }
    }

    /* the password is not needed any more: do not leave it in memory */

    explicit_bzero(ct->password, ngx_strlen(ct->password));
    explicit_bzero(&cd, sizeof(cd));

    ngx_gettimeofday(&t1);

    ct->us = (uint64_t) (t1.tv_sec - t0.tv_sec) * 1000000
             + (t1.tv_usec - t0.tv_usec);
}


static ngx_int_t
ngx_defarm_crypt_equal(const char *a, const char *b)
{
    size_t   la, lb, i;
    u_char   diff;

    /* constant time in the length of the hash */

    la = ngx_strlen(a);
    lb = ngx_strlen(b);
    diff = (u_char) (la != lb);

    for (i = 0; i < la && i < lb; i++) {
        diff |= (u_char) (a[i] ^ b[i]);
    }

    return diff == 0;
}


/* back in the worker */


static void
ngx_defarm_crypt_event(ngx_event_t *ev)
{
    ngx_defarm_crypt_task_t  *ct = ev->data;

    ngx_int_t            rc;
    ngx_str_t            hash;
    ngx_connection_t    *c;
    ngx_defarm_ctx_t    *ctx;
    ngx_http_request_t  *r;

    r = ct->request;
    c = r->connection;

    r->main->blocked--;

    if (ct->hold.timer_set) {
        ngx_del_timer(&ct->hold);
    }

    if (c->error) {
        /* the client left while the thread worked */
        ngx_http_finalize_request(r, NGX_HTTP_CLIENT_CLOSED_REQUEST);
        ngx_http_run_posted_requests(c);
        return;
    }

    ctx = ngx_defarm_get_ctx(r);

    if (ctx) {
        ctx->crypt_us += ct->us;
        ctx->crypt_timed = 1;
    }

    if (ct->rc == NGX_ERROR) {
        ngx_log_error(NGX_LOG_ERR, c->log, ngx_errno,
                      "defarm: bcrypt failed");
        rc = ngx_defarm_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                              NGX_DEFARM_ERR_INTERNAL,
                              "Internal server error");

    } else {
        hash.data = (u_char *) ct->output;
        hash.len = ngx_strlen(ct->output);

        rc = ct->done(r, ct->data, ct->rc, &hash);
    }

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}
