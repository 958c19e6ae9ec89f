
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#ifndef _NGX_DEFARM_RESPONSE_H_INCLUDED_
#define _NGX_DEFARM_RESPONSE_H_INCLUDED_


#include "ngx_defarm_module.h"
#include "ngx_defarm_json.h"


/*
 * The fixed set of error kinds a client or a log reader can see; the names
 * follow the original service's error_tracking taxonomy, with kinds added
 * for failures it did not have.
 */

typedef enum {
    NGX_DEFARM_ERR_VALIDATION = 0,
    NGX_DEFARM_ERR_AUTH,
    NGX_DEFARM_ERR_NOT_FOUND,
    NGX_DEFARM_ERR_METHOD_NOT_ALLOWED,
    NGX_DEFARM_ERR_CONFLICT,
    NGX_DEFARM_ERR_PAYLOAD_TOO_LARGE,
    NGX_DEFARM_ERR_UNSUPPORTED_MEDIA_TYPE,
    NGX_DEFARM_ERR_REQUEST_TIMEOUT,
    NGX_DEFARM_ERR_RATE_LIMIT,
    NGX_DEFARM_ERR_STORAGE_LOCK_TIMEOUT,
    NGX_DEFARM_ERR_DB_TIMEOUT,
    NGX_DEFARM_ERR_DB_ERROR,
    NGX_DEFARM_ERR_DB_UNAVAILABLE,
    NGX_DEFARM_ERR_DB_POOL_EXHAUSTED,
    NGX_DEFARM_ERR_CRYPT_BUSY,
    NGX_DEFARM_ERR_INSUFFICIENT_CREDITS,
    NGX_DEFARM_ERR_ITEM_LIMIT,
    NGX_DEFARM_ERR_CIRCUIT_LIMIT,
    NGX_DEFARM_ERR_REQUEST_LIMIT,
    NGX_DEFARM_ERR_IDEMPOTENCY,
    NGX_DEFARM_ERR_SERVICE_UNAVAILABLE,
    NGX_DEFARM_ERR_EXTERNAL_TIMEOUT,
    NGX_DEFARM_ERR_EXTERNAL_ERROR,
    NGX_DEFARM_ERR_ADAPTER_UNAVAILABLE,
    NGX_DEFARM_ERR_INTERNAL
} ngx_defarm_err_e;


ngx_int_t ngx_defarm_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_defarm_json_writer_t *w);
ngx_int_t ngx_defarm_send_text(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *json);
ngx_int_t ngx_defarm_send_chain(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, ngx_chain_t *out, off_t len);
ngx_int_t ngx_defarm_error(ngx_http_request_t *r, ngx_uint_t status,
    ngx_defarm_err_e kind, const char *fmt, ...);
ngx_int_t ngx_defarm_error_status(ngx_http_request_t *r, ngx_uint_t status);
ngx_int_t ngx_defarm_error_kind(ngx_str_t *name);
ngx_int_t ngx_defarm_utf8_valid(u_char *p, size_t n);
void ngx_defarm_utf8_repair(ngx_str_t *s);
void ngx_defarm_response_init(void);
ngx_int_t ngx_defarm_server_timing(ngx_http_request_t *r);
ngx_int_t ngx_defarm_add_header(ngx_http_request_t *r, const char *name,
    ngx_str_t *value);


#endif /* _NGX_DEFARM_RESPONSE_H_INCLUDED_ */
