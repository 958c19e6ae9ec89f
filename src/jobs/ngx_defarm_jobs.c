
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "jobs/ngx_defarm_jobs.h"
#include "pg/ngx_defarm_pg.h"
#include "ngx_defarm_metrics.h"


/*
 * The job runner (sql/031): with defarm_jobs, each worker claims due jobs
 * of the kinds it knows, up to "concurrency" at a time, each under a lease;
 * runs them on the event loop (a kind's run function starts the work and
 * calls ngx_defarm_job_finish() when it ends); and records each outcome
 * with the lease's token.  It claims when a job is queued anywhere (the
 * NOTIFY of its commit, heard by pg/ngx_defarm_pg_listen.c), on a timer
 * ("interval") in case that was missed, and at once again when a claim
 * came back full or a job ended, so a busy queue is drained without
 * waiting.  Nothing here waits: the claims
 * and outcomes are background statements of the pool.  A worker that
 * stops leaves its jobs to their leases: another worker claims them when
 * they run out (a job may so run twice; its kind must bear that).
 */


typedef struct {
    const char                *kind;
    ngx_defarm_job_run_pt      run;
} ngx_defarm_job_kind_t;


typedef struct {
    ngx_defarm_jobs_conf_t    *conf;
    ngx_event_t                timer;
    ngx_log_t                 *log;
    ngx_uint_t                 running;
    ngx_uint_t                 claiming;      /* a claim in flight */
    ngx_uint_t                 asked;         /* what it asked for */
    ngx_uint_t                 notified;      /* claim again, shortly */
    ngx_str_t                  kinds;         /* "{email,...}" */
} ngx_defarm_jobs_t;


/*
 * After a NOTIFY's claim, one more a little later: of the transactions
 * queueing jobs together, only one notifies (sql/036), and those that
 * commit just after it are claimed so, not at the next poll.
 */

#define NGX_DEFARM_JOBS_SETTLE  20


static void ngx_defarm_jobs_wake(ngx_defarm_jobs_t *jr, ngx_msec_t after);
static void ngx_defarm_jobs_timer(ngx_event_t *ev);
static void ngx_defarm_jobs_heard(void *data, PGnotify *n);
static void ngx_defarm_jobs_claimed(void *data, ngx_int_t rc,
    PGresult *res);
static void ngx_defarm_jobs_start(ngx_defarm_jobs_t *jr, PGresult *res,
    int row);


static ngx_defarm_job_kind_t  ngx_defarm_job_kinds[] = {
    { "email", ngx_defarm_email_run },
    { "webhook", ngx_defarm_webhook_run },
    { "ipfs_upload", ngx_defarm_upload_run },
    { NULL, NULL }
};


static ngx_defarm_pg_stmt_t  ngx_defarm_jobs_claim_stmt = {
    "defarm_jobs_claim",
    "SELECT job_id, kind, payload::text, attempts, lease_token, "
           "max_attempts "
    "FROM defarm_job_claim($1::text[], $2::int, $3::int)",
    3, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_jobs_done_stmt = {
    "defarm_jobs_done",
    "SELECT defarm_job_done($1::bigint, $2::uuid, $3::jsonb)",
    3, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_jobs_failed_stmt = {
    "defarm_jobs_failed",
    "SELECT defarm_job_failed($1::bigint, $2::uuid, $3, $4::boolean, "
                             "$5::jsonb)",
    5, 0
};


static ngx_defarm_jobs_t  *ngx_defarm_jobs;
static ngx_defarm_pg_listen_t  *ngx_defarm_jobs_listen;
static ngx_defarm_jobs_stats_t  ngx_defarm_jobs_none;


static ngx_defarm_jobs_stats_t *
ngx_defarm_jobs_stats(void)
{
    ngx_defarm_stats_slot_t  *slot;

    slot = ngx_defarm_metrics_slot();

    return slot ? &slot->jobs : &ngx_defarm_jobs_none;
}


/* defarm_jobs [interval=time] [lease=time] [concurrency=number] */

char *
ngx_defarm_jobs_set(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_defarm_main_conf_t  *mcf = conf;

    ngx_int_t                n;
    ngx_str_t               *value;
    ngx_uint_t               i;
    ngx_defarm_jobs_conf_t  *jcf;
    ngx_defarm_conf_msec_t   times[3];

    if (mcf->jobs) {
        return "is duplicate";
    }

    jcf = ngx_pcalloc(cf->pool, sizeof(ngx_defarm_jobs_conf_t));
    if (jcf == NULL) {
        return NGX_CONF_ERROR;
    }

    jcf->interval = 1000;
    jcf->lease = 60000;
    jcf->concurrency = 16;

    times[0].name = "interval=";
    times[0].value = &jcf->interval;
    times[1].name = "lease=";
    times[1].value = &jcf->lease;
    times[2].name = NULL;

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "concurrency=", 12) == 0) {
            n = ngx_atoi(value[i].data + 12, value[i].len - 12);
            if (n <= 0 || n > 1024) {
                return "has an invalid \"concurrency\" (1 to 1024)";
            }

            jcf->concurrency = n;
            continue;
        }

        if (ngx_defarm_conf_msec(&value[i], times) != NGX_OK) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }
    }

    mcf->jobs = jcf;

    return NGX_CONF_OK;
}


ngx_int_t
ngx_defarm_jobs_init_process(ngx_cycle_t *cycle, ngx_defarm_jobs_conf_t *jcf,
    ngx_defarm_pg_conf_t *pcf)
{
    u_char             *p;
    size_t              len;
    ngx_uint_t          i;
    ngx_defarm_jobs_t  *jr;

    if (jcf == NULL || pcf == NULL) {
        return NGX_OK;
    }

    jr = ngx_pcalloc(cycle->pool, sizeof(ngx_defarm_jobs_t));
    if (jr == NULL) {
        return NGX_ERROR;
    }

    len = sizeof("{}");
    for (i = 0; ngx_defarm_job_kinds[i].kind; i++) {
        len += ngx_strlen(ngx_defarm_job_kinds[i].kind) + 1;
    }

    jr->kinds.data = ngx_pnalloc(cycle->pool, len);
    if (jr->kinds.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(jr->kinds.data, "{", 1);

    for (i = 0; ngx_defarm_job_kinds[i].kind; i++) {
        p = ngx_sprintf(p, "%s%s", i ? "," : "",
                        ngx_defarm_job_kinds[i].kind);
    }

    *p++ = '}';
    jr->kinds.len = p - jr->kinds.data;

    jr->conf = jcf;
    jr->log = cycle->log;
    jr->timer.handler = ngx_defarm_jobs_timer;
    jr->timer.data = jr;
    jr->timer.log = cycle->log;
    jr->timer.cancelable = 1;

    ngx_defarm_jobs = jr;

    /* the pool connects first: the first claim a little later */

    ngx_defarm_jobs_wake(jr, 100);

    /*
     * A wake-up only: while the ear is down the poll still finds every
     * job, and each time it listens again it claims at once.
     */

    ngx_defarm_jobs_listen = ngx_defarm_pg_listen_start(cycle, pcf,
                                                        "LISTEN defarm_jobs",
                                                        "new jobs",
                                                        ngx_defarm_jobs_heard,
                                                        NULL);

    return ngx_defarm_jobs_listen ? NGX_OK : NGX_ERROR;
}


/* a NOTIFY (a job was queued somewhere), or listening again */

static void
ngx_defarm_jobs_heard(void *data, PGnotify *n)
{
    if (ngx_defarm_jobs) {
        ngx_defarm_jobs->notified = 1;
        ngx_defarm_jobs_wake(ngx_defarm_jobs, 1);
    }
}


void
ngx_defarm_jobs_exit_process(ngx_cycle_t *cycle)
{
    ngx_defarm_pg_listen_stop(ngx_defarm_jobs_listen);
    ngx_defarm_jobs_listen = NULL;

    if (ngx_defarm_jobs && ngx_defarm_jobs->timer.timer_set) {
        ngx_del_timer(&ngx_defarm_jobs->timer);
    }

    ngx_defarm_jobs = NULL;
}


static void
ngx_defarm_jobs_wake(ngx_defarm_jobs_t *jr, ngx_msec_t after)
{
    if (jr->timer.timer_set) {
        if (after >= jr->conf->interval) {
            return;
        }

        ngx_del_timer(&jr->timer);
    }

    ngx_add_timer(&jr->timer, after);
}


static void
ngx_defarm_jobs_timer(ngx_event_t *ev)
{
    ngx_defarm_jobs_t  *jr = ev->data;

    u_char     *p;
    ngx_str_t   params[3];
    u_char      buf[2 * NGX_INT_T_LEN];

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    if (jr->claiming || jr->running >= jr->conf->concurrency) {
        ngx_defarm_jobs_wake(jr, jr->conf->interval);
        return;
    }

    jr->asked = jr->conf->concurrency - jr->running;

    params[0] = jr->kinds;

    params[1].data = buf;
    p = ngx_sprintf(buf, "%ui", jr->asked);
    params[1].len = p - buf;

    params[2].data = p;
    params[2].len = ngx_sprintf(p, "%M", jr->conf->lease) - p;

    if (ngx_defarm_pg_background(&ngx_defarm_jobs_claim_stmt, params,
                                 ngx_defarm_jobs_claimed, jr)
        != NGX_OK)
    {
        ngx_defarm_jobs_wake(jr, jr->conf->interval);
        return;
    }

    jr->claiming = 1;
}


static void
ngx_defarm_jobs_claimed(void *data, ngx_int_t rc, PGresult *res)
{
    ngx_defarm_jobs_t  *jr = data;

    int  i, n;

    if (ngx_defarm_jobs != jr) {
        return;                                 /* the worker is going */
    }

    jr->claiming = 0;
    n = 0;

    if (rc == NGX_OK && res && PQresultStatus(res) == PGRES_TUPLES_OK) {
        n = PQntuples(res);

        for (i = 0; i < n; i++) {
            ngx_defarm_jobs_start(jr, res, i);
        }
    }

    /* a full claim: more may be due */

    if (n > 0 && (ngx_uint_t) n == jr->asked) {
        ngx_defarm_jobs_wake(jr, 1);

    } else if (jr->notified) {
        jr->notified = 0;
        ngx_defarm_jobs_wake(jr, NGX_DEFARM_JOBS_SETTLE);

    } else {
        ngx_defarm_jobs_wake(jr, jr->conf->interval);
    }
}


static ngx_int_t
ngx_defarm_job_copy(ngx_pool_t *pool, ngx_str_t *in, ngx_str_t *out)
{
    out->data = ngx_pnalloc(pool, in->len + 1);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(out->data, in->data, in->len);
    out->data[in->len] = '\0';
    out->len = in->len;

    return NGX_OK;
}


static ngx_int_t
ngx_defarm_jobs_copy(ngx_pool_t *pool, PGresult *res, int row, int col,
    ngx_str_t *out)
{
    out->len = PQgetlength(res, row, col);
    out->data = ngx_pnalloc(pool, out->len + 1);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(out->data, PQgetvalue(res, row, col), out->len + 1);

    return NGX_OK;
}


static void
ngx_defarm_jobs_start(ngx_defarm_jobs_t *jr, PGresult *res, int row)
{
    ngx_int_t                  n;
    ngx_str_t                  payload, err;
    ngx_uint_t                 i, code;
    ngx_pool_t                *pool;
    ngx_defarm_job_t          *job;
    ngx_defarm_json_parser_t  *ps;

    pool = ngx_create_pool(4096, jr->log);
    if (pool == NULL) {
        return;                                 /* its lease runs out */
    }

    job = ngx_pcalloc(pool, sizeof(ngx_defarm_job_t));
    if (job == NULL
        || ngx_defarm_jobs_copy(pool, res, row, 0, &job->id) != NGX_OK
        || ngx_defarm_jobs_copy(pool, res, row, 1, &job->kind) != NGX_OK
        || ngx_defarm_jobs_copy(pool, res, row, 2, &payload) != NGX_OK
        || ngx_defarm_jobs_copy(pool, res, row, 4, &job->token) != NGX_OK)
    {
        ngx_destroy_pool(pool);
        return;
    }

    job->pool = pool;
    job->log = jr->log;
    job->lease_end = ngx_current_msec + jr->conf->lease;

    n = ngx_atoi((u_char *) PQgetvalue(res, row, 3),
                 PQgetlength(res, row, 3));
    job->attempts = (n > 0) ? n : 1;

    n = ngx_atoi((u_char *) PQgetvalue(res, row, 5),
                 PQgetlength(res, row, 5));
    job->max_attempts = (n > 0) ? n : 1;

    jr->running++;
    ngx_defarm_jobs_stats()->claimed++;
    ngx_defarm_jobs_stats()->running = jr->running;

    ps = ngx_defarm_json_parser(pool, 16, 4096, 1024 * 1024);
    if (ps == NULL
        || ngx_defarm_json_feed(ps, payload.data, payload.len) != NGX_OK
        || ngx_defarm_json_end(ps, &job->payload, &err, &code) != NGX_OK
        || job->payload->type != NGX_DEFARM_JSON_OBJECT)
    {
        ngx_defarm_job_finish(job, NGX_DEFARM_JOB_FAILED,
                              "the payload is not a JSON object", NULL);
        return;
    }

    for (i = 0; ngx_defarm_job_kinds[i].kind; i++) {
        if (ngx_strcmp(job->kind.data, ngx_defarm_job_kinds[i].kind) == 0) {
            break;
        }
    }

    if (ngx_defarm_job_kinds[i].kind == NULL) {
        ngx_defarm_job_finish(job, NGX_DEFARM_JOB_FAILED,
                              "no runner for this kind of job", NULL);
        return;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, jr->log, 0,
                   "defarm: job %V (%V) starts", &job->id, &job->kind);

    if (ngx_defarm_job_kinds[i].run(job) != NGX_OK) {
        ngx_defarm_job_finish(job, NGX_DEFARM_JOB_RETRY,
                              "the job could not be started", NULL);
    }
}


/*
 * A job's end: its outcome goes to PostgreSQL with its lease's token, and
 * the job's pool goes once it is recorded.  A statement the pool cannot
 * take now (busy, restarting) is tried again, 100 ms doubling to 2 s,
 * until the lease runs out: an outcome dropped under load would leave a
 * finished job to wait out its lease and run again.
 */

typedef struct {
    ngx_defarm_job_t          *job;
    ngx_defarm_pg_stmt_t      *stmt;
    ngx_str_t                  params[5];
    ngx_event_t                retry;
    ngx_msec_t                 delay;
} ngx_defarm_job_outcome_t;


static void ngx_defarm_job_record(ngx_defarm_job_outcome_t *oc);
static void ngx_defarm_job_recorded(void *data, ngx_int_t rc,
    PGresult *res);
static void ngx_defarm_job_record_handler(ngx_event_t *ev);


void
ngx_defarm_job_finish(ngx_defarm_job_t *job, ngx_defarm_job_outcome_e outcome,
    const char *error, ngx_str_t *result)
{
    ngx_str_t                  err;
    ngx_defarm_jobs_t         *jr = ngx_defarm_jobs;
    ngx_defarm_job_outcome_t  *oc;

    if (jr) {
        jr->running--;
        ngx_defarm_jobs_stats()->running = jr->running;
        ngx_defarm_jobs_wake(jr, 1);
    }

    oc = ngx_pcalloc(job->pool, sizeof(ngx_defarm_job_outcome_t));
    if (oc == NULL) {
        ngx_destroy_pool(job->pool);            /* its lease runs out */
        return;
    }

    oc->job = job;
    oc->params[0] = job->id;
    oc->params[1] = job->token;

    /* the caller's strings may go with it: the outcome keeps copies */

    if (result && result->len
        && ngx_defarm_job_copy(job->pool, result,
                               &oc->params[outcome == NGX_DEFARM_JOB_DONE
                                           ? 2 : 4])
           != NGX_OK)
    {
        ngx_destroy_pool(job->pool);
        return;
    }

    if (outcome == NGX_DEFARM_JOB_DONE) {
        oc->stmt = &ngx_defarm_jobs_done_stmt;
        ngx_defarm_jobs_stats()->done++;

    } else {
        oc->stmt = &ngx_defarm_jobs_failed_stmt;

        err.data = (u_char *) (error ? error : "failed");
        err.len = ngx_strlen(err.data);

        if (ngx_defarm_job_copy(job->pool, &err, &oc->params[2]) != NGX_OK) {
            ngx_destroy_pool(job->pool);
            return;
        }

        /* the database decides whether a retry is left: counted there */

        if (outcome == NGX_DEFARM_JOB_FAILED
            || job->attempts >= job->max_attempts)
        {
            ngx_str_set(&oc->params[3], "true");
            ngx_defarm_jobs_stats()->dead++;

        } else {
            ngx_str_set(&oc->params[3], "false");
            ngx_defarm_jobs_stats()->retried++;
        }

        ngx_log_error(NGX_LOG_WARN, job->log, 0,
                      "defarm: job %V (%V) attempt %ui failed: %V",
                      &job->id, &job->kind, job->attempts, &oc->params[2]);
    }

    oc->retry.handler = ngx_defarm_job_record_handler;
    oc->retry.data = oc;
    oc->retry.log = job->log;
    oc->retry.cancelable = 1;
    oc->delay = 100;

    ngx_defarm_job_record(oc);
}


static void
ngx_defarm_job_record(ngx_defarm_job_outcome_t *oc)
{
    if (ngx_defarm_jobs != NULL
        && ngx_defarm_pg_background(oc->stmt, oc->params,
                                    ngx_defarm_job_recorded, oc)
           == NGX_OK)
    {
        return;
    }

    ngx_defarm_job_recorded(oc, NGX_ERROR, NULL);
}


static void
ngx_defarm_job_recorded(void *data, ngx_int_t rc, PGresult *res)
{
    ngx_defarm_job_outcome_t  *oc = data;

    ngx_defarm_job_t  *job = oc->job;

    if ((rc == NGX_OK && res && PQresultStatus(res) == PGRES_TUPLES_OK)
        || ngx_defarm_jobs == NULL
        || (ngx_msec_int_t) (job->lease_end - ngx_current_msec)
           < (ngx_msec_int_t) oc->delay)
    {
        /* recorded; or the worker goes, or the lease will have run out */

        ngx_destroy_pool(job->pool);
        return;
    }

    ngx_add_timer(&oc->retry, oc->delay);
    oc->delay = ngx_min(oc->delay * 2, 2000);
}


static void
ngx_defarm_job_record_handler(ngx_event_t *ev)
{
    ngx_defarm_job_record(ev->data);
}


/*
 * defarm_secret_key file=path: the key the database encrypts webhooks'
 * credentials and secrets with (sql/033), given to every session as the
 * setting defarm.secret_key and never stored in the database; 32 to 256
 * letters and digits.
 */

char *
ngx_defarm_secret_key_set(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_defarm_main_conf_t  *mcf = conf;

    u_char     *p, *last;
    ssize_t     n;
    ngx_str_t  *value, name, *key;
    ngx_file_t  file;
    u_char      buf[512];

    value = cf->args->elts;

    if (mcf->secret_key) {
        return "is duplicate";
    }

    if (ngx_strncmp(value[1].data, "file=", 5) != 0) {
        return "takes file=path";
    }

    name.data = value[1].data + 5;
    name.len = value[1].len - 5;

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&file, sizeof(ngx_file_t));
    file.name = name;
    file.log = cf->log;
    file.fd = ngx_open_file(name.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (file.fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%s\" failed", name.data);
        return NGX_CONF_ERROR;
    }

    n = ngx_read_file(&file, buf, sizeof(buf), 0);
    ngx_close_file(file.fd);

    if (n == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    last = buf + n;
    while (last > buf && (last[-1] == LF || last[-1] == CR)) {
        last--;
    }

    for (p = buf; p < last; p++) {
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z')
              || (*p >= 'A' && *p <= 'Z')))
        {
            break;
        }
    }

    if (p != last || last - buf < 32 || last - buf > 256) {
        return "needs a file of 32 to 256 letters and digits";
    }

    key = ngx_palloc(cf->pool, sizeof(ngx_str_t));
    if (key == NULL) {
        return NGX_CONF_ERROR;
    }

    key->len = sizeof("defarm.secret_key=") - 1 + (last - buf);
    key->data = ngx_pnalloc(cf->pool, key->len + 1);
    if (key->data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_sprintf(key->data, "defarm.secret_key=%*s%Z", (size_t) (last - buf),
                buf);

    mcf->secret_key = key;

    return NGX_CONF_OK;
}
