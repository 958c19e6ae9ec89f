
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#ifndef _NGX_DEFARM_JOBS_H_INCLUDED_
#define _NGX_DEFARM_JOBS_H_INCLUDED_


#include "ngx_defarm_module.h"
#include "ngx_defarm_json.h"


typedef struct ngx_defarm_job_s  ngx_defarm_job_t;

/* starts the job: NGX_OK, and ngx_defarm_job_finish() is called later */
typedef ngx_int_t (*ngx_defarm_job_run_pt)(ngx_defarm_job_t *job);


/* "defarm_jobs" configuration */

typedef struct {
    ngx_msec_t                 interval;      /* the poll between wakes */
    ngx_msec_t                 lease;
    ngx_uint_t                 concurrency;   /* jobs a worker runs */
} ngx_defarm_jobs_conf_t;


struct ngx_defarm_job_s {
    ngx_pool_t                *pool;          /* the job's, goes with it */
    ngx_log_t                 *log;
    ngx_str_t                  id;
    ngx_str_t                  kind;
    ngx_str_t                  token;         /* the lease's */
    ngx_defarm_json_t         *payload;
    ngx_uint_t                 attempts;      /* this one included */
    ngx_uint_t                 max_attempts;
    ngx_msec_t                 lease_end;     /* by this worker's clock */
};


/* a string of the job's payload, NUL-terminated, or NULL */
#define ngx_defarm_job_str(job, name)                                        \
    ngx_defarm_json_cstr((job)->pool, (job)->payload, name)


/* per-worker figures, kept in the stats zone (ngx_defarm_metrics.c) */

typedef struct {
    ngx_atomic_uint_t          running;       /* gauge */
    ngx_atomic_uint_t          claimed;       /* counters */
    ngx_atomic_uint_t          done;
    ngx_atomic_uint_t          retried;
    ngx_atomic_uint_t          dead;
} ngx_defarm_jobs_stats_t;


/* the outcome of a job */

typedef enum {
    NGX_DEFARM_JOB_DONE = 0,
    NGX_DEFARM_JOB_RETRY,                     /* again, later */
    NGX_DEFARM_JOB_FAILED                     /* never again: Dead */
} ngx_defarm_job_outcome_e;


char *ngx_defarm_jobs_set(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
ngx_int_t ngx_defarm_jobs_init_process(ngx_cycle_t *cycle,
    ngx_defarm_jobs_conf_t *jcf, ngx_defarm_pg_conf_t *pcf);
void ngx_defarm_jobs_exit_process(ngx_cycle_t *cycle);
void ngx_defarm_job_finish(ngx_defarm_job_t *job,
    ngx_defarm_job_outcome_e outcome, const char *error, ngx_str_t *result);

/* the kinds of job: e-mail (ngx_defarm_email.c) */
char *ngx_defarm_smtp_set(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
void ngx_defarm_smtp_init_process(void *conf);
ngx_int_t ngx_defarm_email_run(ngx_defarm_job_t *job);

/* webhook deliveries (ngx_defarm_webhook.c) */
void ngx_defarm_webhook_init_process(ngx_flag_t allow_private);
ngx_int_t ngx_defarm_webhook_run(ngx_defarm_job_t *job);

/* storage uploads (ngx_defarm_upload.c) */
ngx_int_t ngx_defarm_upload_run(ngx_defarm_job_t *job);

char *ngx_defarm_secret_key_set(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


#endif /* _NGX_DEFARM_JOBS_H_INCLUDED_ */
