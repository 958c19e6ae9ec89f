
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "fuzz.h"
#include "auth/ngx_defarm_jwt.h"


/*
 * The little of nginx a harness runs with: its own pool, string and
 * array code is linked from the nginx source (build/asan/nginx), but no
 * cycle, no event loop and no log file.  A request is a zeroed
 * ngx_http_request_t with a pool, a connection with a log and the
 * module's configurations, which is all the units under test read.
 */


ngx_log_t         ngx_defarm_fuzz_log;
ngx_module_t      ngx_defarm_module;
volatile ngx_cycle_t  *ngx_cycle;

static void                   *ngx_defarm_fuzz_main[1];
static void                   *ngx_defarm_fuzz_loc[1];


/* nginx's log: messages are not what a harness looks at */

void
ngx_log_error_core(ngx_uint_t level, ngx_log_t *log, ngx_err_t err,
    const char *fmt, ...)
{
}


void
ngx_conf_log_error(ngx_uint_t level, ngx_conf_t *cf, ngx_err_t err,
    const char *fmt, ...)
{
}


void
ngx_defarm_fuzz_init(void)
{
    static ngx_uint_t  done;

    if (done) {
        return;
    }

    done = 1;

    ngx_pagesize = getpagesize();
    ngx_pagesize_shift = 0;
    ngx_cacheline_size = NGX_CPU_CACHE_LINE;

    ngx_defarm_fuzz_log.log_level = NGX_LOG_EMERG;

    ngx_time_init();
}


ngx_int_t
ngx_defarm_fuzz_begin(ngx_defarm_fuzz_t *fz)
{
    ngx_connection_t  *c;

    ngx_defarm_fuzz_init();

    ngx_memzero(fz, sizeof(ngx_defarm_fuzz_t));

    /* small, so that the pool grows and large allocations are exercised */

    fz->pool = ngx_create_pool(1024, &ngx_defarm_fuzz_log);
    if (fz->pool == NULL) {
        return NGX_ERROR;
    }

    fz->r = ngx_pcalloc(fz->pool, sizeof(ngx_http_request_t));
    c = ngx_pcalloc(fz->pool, sizeof(ngx_connection_t));
    fz->mcf = ngx_pcalloc(fz->pool, sizeof(ngx_defarm_main_conf_t));
    fz->lcf = ngx_pcalloc(fz->pool, sizeof(ngx_defarm_loc_conf_t));
    fz->ctx = ngx_pcalloc(fz->pool, sizeof(ngx_defarm_ctx_t));
    fz->mcf->jwt = ngx_pcalloc(fz->pool, sizeof(ngx_defarm_jwt_conf_t));

    if (fz->r == NULL || c == NULL || fz->mcf == NULL || fz->lcf == NULL
        || fz->ctx == NULL || fz->mcf->jwt == NULL)
    {
        ngx_destroy_pool(fz->pool);
        return NGX_ERROR;
    }

    c->log = &ngx_defarm_fuzz_log;
    c->pool = fz->pool;

    fz->r->pool = fz->pool;
    fz->r->connection = c;

    ngx_defarm_module.ctx_index = 0;
    ngx_defarm_fuzz_main[0] = fz->mcf;
    ngx_defarm_fuzz_loc[0] = fz->lcf;
    fz->r->main_conf = ngx_defarm_fuzz_main;
    fz->r->loc_conf = ngx_defarm_fuzz_loc;

    return NGX_OK;
}


void
ngx_defarm_fuzz_end(ngx_defarm_fuzz_t *fz)
{
    ngx_destroy_pool(fz->pool);
}


u_char *
ngx_defarm_fuzz_copy(ngx_defarm_fuzz_t *fz, const uint8_t *p, size_t n)
{
    u_char  *c;

    /* malloc()ed, not pooled: ASan's redzone is right after the copy */

    c = ngx_alloc(n ? n : 1, &ngx_defarm_fuzz_log);
    if (c == NULL) {
        return NULL;
    }

    ngx_memcpy(c, p, n);

    if (ngx_pool_cleanup_add(fz->pool, 0) == NULL) {
        ngx_free(c);
        return NULL;
    }

    fz->pool->cleanup->handler = ngx_free;
    fz->pool->cleanup->data = c;

    return c;
}
