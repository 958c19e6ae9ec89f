
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include <stdio.h>
#include <stdlib.h>


/*
 * What the units under test reference but a harness never reaches: the
 * rest of nginx (output filters, variables) and of the module (the
 * database, the cache, the rate limits).  Weak, so that a harness that
 * links the real unit gets it; each aborts, so that reaching one is a
 * crash to look at, not a silent wrong answer.  No header is included:
 * only the names matter to the linker.
 */


#define NGX_DEFARM_FUZZ_STUB(name)                                           \
    __attribute__((weak)) void name(void);                                   \
    __attribute__((weak)) void                                               \
    name(void)                                                               \
    {                                                                        \
        fprintf(stderr, "fuzz: stub " #name "() reached\n");                 \
        abort();                                                             \
    }

#define NGX_DEFARM_FUZZ_VAR(name)                                            \
    __attribute__((weak)) void *name


NGX_DEFARM_FUZZ_STUB(ngx_defarm_get_ctx)
NGX_DEFARM_FUZZ_STUB(ngx_defarm_usage_record)
NGX_DEFARM_FUZZ_STUB(ngx_http_get_indexed_variable)
NGX_DEFARM_FUZZ_STUB(ngx_http_output_filter)
NGX_DEFARM_FUZZ_STUB(ngx_http_send_header)
NGX_DEFARM_FUZZ_STUB(ngx_defarm_pg_query)
NGX_DEFARM_FUZZ_STUB(ngx_defarm_pg_sql_error)
NGX_DEFARM_FUZZ_STUB(ngx_defarm_pg_text)
NGX_DEFARM_FUZZ_STUB(ngx_conf_full_name)
NGX_DEFARM_FUZZ_STUB(ngx_read_file)
NGX_DEFARM_FUZZ_STUB(ngx_defarm_auth_fail)
NGX_DEFARM_FUZZ_STUB(ngx_defarm_auth_status)
NGX_DEFARM_FUZZ_STUB(ngx_defarm_cache_run)
NGX_DEFARM_FUZZ_STUB(ngx_defarm_charge_request)
NGX_DEFARM_FUZZ_STUB(ngx_defarm_ratelimit_hourly)
NGX_DEFARM_FUZZ_STUB(ngx_defarm_sha256_hex)

NGX_DEFARM_FUZZ_VAR(ngx_http_top_header_filter);
NGX_DEFARM_FUZZ_VAR(ngx_http_top_body_filter);
