
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#ifndef _NGX_DEFARM_FUZZ_H_INCLUDED_
#define _NGX_DEFARM_FUZZ_H_INCLUDED_


#include "ngx_defarm_module.h"

#include <stdint.h>
#include <stdlib.h>


/*
 * What a harness needs of a running nginx, made once (fuzz/shim.c): a
 * log that discards, the time, and per input a fresh pool and a request
 * with a connection, the module's main and location configurations.
 */

typedef struct {
    ngx_pool_t                *pool;
    ngx_http_request_t        *r;
    ngx_defarm_main_conf_t    *mcf;
    ngx_defarm_loc_conf_t     *lcf;
    ngx_defarm_ctx_t          *ctx;
} ngx_defarm_fuzz_t;


void ngx_defarm_fuzz_init(void);
ngx_int_t ngx_defarm_fuzz_begin(ngx_defarm_fuzz_t *fz);
void ngx_defarm_fuzz_end(ngx_defarm_fuzz_t *fz);

/* a copy of a part of the input in the pool, so that ASan sees its end */
u_char *ngx_defarm_fuzz_copy(ngx_defarm_fuzz_t *fz, const uint8_t *p,
    size_t n);

extern ngx_log_t  ngx_defarm_fuzz_log;


#define ngx_defarm_fuzz_assert(cond)                                         \
    if (!(cond)) {                                                           \
        fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, \
                #cond);                                                      \
        abort();                                                             \
    }


#endif /* _NGX_DEFARM_FUZZ_H_INCLUDED_ */
