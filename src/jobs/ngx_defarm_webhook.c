
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "jobs/ngx_defarm_jobs.h"
#include "http/ngx_defarm_curl.h"
#include "auth/ngx_defarm_sealed.h"

#include <openssl/hmac.h>
#include <openssl/evp.h>


/*
 * Webhook deliveries ("webhook" jobs, sql/033): the event's body, exactly
 * as queued, with the method, the custom headers and the authentication
 * of the webhook, Content-Type: application/json, X-Defarm-Event,
 * X-Defarm-Delivery and X-Defarm-Signature: sha256=<hex HMAC-SHA256 of
 * the body with the webhook's signing secret>.  A 2xx answer delivers it;
 * any other answer, or none, is tried again (the webhook's retry policy
 * is the job's); a destination whose address is loopback, private or
 * link-local is refused for good, unless defarm_webhooks_allow_private.
 * The credentials and the signing secret come sealed and are opened here
 * (ngx_defarm_sealed.c), in the job's pool, for as long as it takes.
 */


#define NGX_DEFARM_WEBHOOK_TIMEOUT  30000


static void ngx_defarm_webhook_answered(ngx_defarm_curl_req_t *req,
    CURLcode rc, long status, const char *error, ngx_str_t *body);
static ngx_int_t ngx_defarm_webhook_auth(ngx_defarm_curl_req_t *req,
    ngx_str_t *type, ngx_str_t *cred);


static ngx_flag_t  ngx_defarm_webhook_private;


void
ngx_defarm_webhook_init_process(ngx_flag_t allow_private)
{
    ngx_defarm_webhook_private = allow_private;
}


ngx_int_t
ngx_defarm_webhook_run(ngx_defarm_job_t *job)
{
    u_char                 *p, *url;
    ngx_str_t              *u, *method, *body, *secret, *event, *id;
    ngx_str_t              *type, *cred, *sealed_secret, *sealed_cred;
    ngx_str_t               opened_secret, opened_cred;
    unsigned int            mdlen;
    ngx_defarm_json_t      *headers, *h;
    ngx_defarm_curl_req_t  *req;
    u_char                  md[EVP_MAX_MD_SIZE];
    u_char                  hex[2 * EVP_MAX_MD_SIZE + 1];

    u = ngx_defarm_job_str(job, "url");
    method = ngx_defarm_job_str(job, "method");
    body = ngx_defarm_job_str(job, "body");
    sealed_secret = ngx_defarm_job_str(job, "sealed_secret");
    event = ngx_defarm_job_str(job, "event");
    id = ngx_defarm_job_str(job, "delivery_id");
    type = ngx_defarm_job_str(job, "auth_type");
    sealed_cred = ngx_defarm_job_str(job, "sealed_credentials");
    headers = ngx_defarm_json_get(job->payload, "headers");

    if (u == NULL || method == NULL || body == NULL || sealed_secret == NULL
        || event == NULL || id == NULL)
    {
        ngx_defarm_job_finish(job, NGX_DEFARM_JOB_FAILED,
                              "the delivery lacks its url, method, body, "
                              "secret, event or id", NULL);
        return NGX_OK;
    }

    /* a node with another key, or none, leaves it to one with the key */

    secret = &opened_secret;
    cred = NULL;

    if (ngx_defarm_sealed_open(job->pool, sealed_secret, secret) != NGX_OK
        || (sealed_cred
            && ngx_defarm_sealed_open(job->pool, sealed_cred, &opened_cred)
               != NGX_OK))
    {
        ngx_defarm_job_finish(job, NGX_DEFARM_JOB_RETRY,
                              "the webhook's secrets cannot be opened on "
                              "this node (defarm_secret_key)", NULL);
        return NGX_OK;
    }

    if (sealed_cred) {
        cred = &opened_cred;
    }

    req = ngx_pcalloc(job->pool, sizeof(ngx_defarm_curl_req_t));
    url = ngx_pnalloc(job->pool, u->len + 1);
    if (req == NULL || url == NULL) {
        return NGX_ERROR;
    }

    *ngx_cpymem(url, u->data, u->len) = '\0';

    req->pool = job->pool;
    req->log = job->log;
    req->url = (const char *) url;
    req->method = (const char *) method->data;    /* NUL-ended by the parse */
    req->body = *body;
    req->timeout = NGX_DEFARM_WEBHOOK_TIMEOUT;
    req->allow_private = ngx_defarm_webhook_private;
    req->done = ngx_defarm_webhook_answered;
    req->data = job;

    if (HMAC(EVP_sha256(), secret->data, (int) secret->len, body->data,
             body->len, md, &mdlen)
        == NULL)
    {
        return NGX_ERROR;
    }

    p = ngx_hex_dump(hex, md, mdlen);
    *p = '\0';

    if (ngx_defarm_curl_header(req, "Content-Type: application/json")
           != NGX_OK
        || ngx_defarm_curl_header(req, "X-Defarm-Event: %V", event) != NGX_OK
        || ngx_defarm_curl_header(req, "X-Defarm-Delivery: %V", id)
           != NGX_OK
        || ngx_defarm_curl_header(req, "X-Defarm-Signature: sha256=%s", hex)
           != NGX_OK
        || ngx_defarm_curl_header(req, "Expect:") != NGX_OK)
    {
        goto failed;
    }

    if (headers && headers->type == NGX_DEFARM_JSON_OBJECT) {
        for (h = headers->child; h; h = h->next) {
            if (h->type == NGX_DEFARM_JSON_STRING
                && ngx_defarm_curl_header(req, "%V: %V", &h->key, &h->str)
                   != NGX_OK)
            {
                goto failed;
            }
        }
    }

    if (type && cred && ngx_defarm_webhook_auth(req, type, cred) != NGX_OK) {
        goto failed;
    }

    if (ngx_defarm_curl_start(req) != NGX_OK) {
        goto failed;
    }

    return NGX_OK;

failed:

    if (req->headers) {
        curl_slist_free_all(req->headers);
    }

    /* a header that cannot be sent will not be sent later either */

    ngx_defarm_job_finish(job, NGX_DEFARM_JOB_FAILED,
                          "the request could not be made (a header with a "
                          "line break?)", NULL);
    return NGX_OK;
}


/* BearerToken, ApiKey, BasicAuth ("user:password"), CustomHeader */

static ngx_int_t
ngx_defarm_webhook_auth(ngx_defarm_curl_req_t *req, ngx_str_t *type,
    ngx_str_t *cred)
{
    if (type->len == 11 && ngx_strncmp(type->data, "BearerToken", 11) == 0) {
        return ngx_defarm_curl_header(req, "Authorization: Bearer %V", cred);
    }

    if (type->len == 6 && ngx_strncmp(type->data, "ApiKey", 6) == 0) {
        return ngx_defarm_curl_header(req, "X-API-Key: %V", cred);
    }

    if (type->len == 9 && ngx_strncmp(type->data, "BasicAuth", 9) == 0) {
        return ngx_defarm_curl_basic(req, cred);
    }

    if (type->len == 12 && ngx_strncmp(type->data, "CustomHeader", 12) == 0
        && ngx_strlchr(cred->data, cred->data + cred->len, ':'))
    {
        return ngx_defarm_curl_header(req, "%V", cred);
    }

    return NGX_OK;                              /* None */
}


static void
ngx_defarm_webhook_answered(ngx_defarm_curl_req_t *req, CURLcode rc,
    long status, const char *error, ngx_str_t *body)
{
    ngx_defarm_job_t  *job = req->data;

    ngx_str_t                  result;
    ngx_defarm_job_outcome_e   outcome;
    u_char                     why[64];

    result.len = 0;
    result.data = ngx_pnalloc(job->pool, sizeof("{\"status\": }")
                                         + NGX_INT_T_LEN);
    if (result.data) {
        result.len = ngx_sprintf(result.data, "{\"status\": %l}", status)
                     - result.data;
    }

    if (rc == CURLE_OK && status >= 200 && status < 300) {
        ngx_defarm_job_finish(job, NGX_DEFARM_JOB_DONE, NULL,
                              result.len ? &result : NULL);
        return;
    }

    outcome = req->refused ? NGX_DEFARM_JOB_FAILED : NGX_DEFARM_JOB_RETRY;

    if (rc == CURLE_OK) {
        ngx_sprintf(why, "the receiver answered %l%Z", status);
        error = (const char *) why;
    }

    ngx_defarm_job_finish(job, outcome, error, result.len ? &result : NULL);
}
