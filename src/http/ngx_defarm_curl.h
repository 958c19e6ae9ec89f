
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#ifndef _NGX_DEFARM_CURL_H_INCLUDED_
#define _NGX_DEFARM_CURL_H_INCLUDED_


#include "ngx_defarm_module.h"

#include <curl/curl.h>


#define NGX_DEFARM_CURL_MAX_RESPONSE  4096


typedef struct ngx_defarm_curl_req_s  ngx_defarm_curl_req_t;

/*
 * The end of a transfer: rc is libcurl's (CURLE_OK when an answer came,
 * whatever its status), status the HTTP status (0 without an answer),
 * error a message when rc is not CURLE_OK, body the answer's first
 * NGX_DEFARM_CURL_MAX_RESPONSE bytes.  The request's pool goes after it.
 */

typedef void (*ngx_defarm_curl_done_pt)(ngx_defarm_curl_req_t *req,
    CURLcode rc, long status, const char *error, ngx_str_t *body);

struct ngx_defarm_curl_req_s {
    ngx_pool_t                *pool;          /* the caller's, freed by it */
    ngx_log_t                 *log;
    const char                *method;        /* "POST", "PUT", "PATCH" */
    const char                *url;           /* NUL-terminated */
    struct curl_slist         *headers;       /* freed with the transfer */
    ngx_str_t                  body;
    ngx_msec_t                 timeout;
    ngx_uint_t                 allow_private; /* loopback, private nets */

    /* SMTP instead of HTTP: the envelope; body is the whole message */
    const char                *mail_from;
    struct curl_slist         *mail_rcpt;     /* freed with the transfer */
    const char                *username;
    const char                *password;
    ngx_uint_t                 require_tls;   /* STARTTLS or fail */
    ngx_defarm_curl_done_pt    done;
    void                      *data;

    /* the module's */
    CURL                      *easy;
    ngx_str_t                  response;
    size_t                     sent;          /* of body, by SMTP */
    char                       error[CURL_ERROR_SIZE];
    ngx_uint_t                 refused;       /* an address not allowed */
};


ngx_int_t ngx_defarm_curl_init_process(ngx_cycle_t *cycle);
void ngx_defarm_curl_exit_process(ngx_cycle_t *cycle);
ngx_int_t ngx_defarm_curl_start(ngx_defarm_curl_req_t *req);
void ngx_defarm_curl_cancel(ngx_defarm_curl_req_t *req);
ngx_int_t ngx_defarm_curl_header(ngx_defarm_curl_req_t *req,
    const char *fmt, ...);
ngx_int_t ngx_defarm_curl_basic(ngx_defarm_curl_req_t *req,
    ngx_str_t *user_password);


#endif /* _NGX_DEFARM_CURL_H_INCLUDED_ */
