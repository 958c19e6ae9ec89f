
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "api/ngx_defarm_api_fn.h"
#include "storage/ngx_defarm_ipfs.h"


/*
 * The storage adapters as a user sees them (sql/034): those they may use,
 * the choice of one, the templates; and the probes that really ask the
 * adapter's service: GET /api/adapters/:adapter_type/status and /health
 * (the node's version), and an administrator's POST /api/test/test-push
 * (a real upload of a throw-away document).  A probe is two steps: the
 * database names the target (defarm_adapter_target: the adapter's active
 * configuration, or the refusal), then the module calls it on the event
 * loop (ngx_defarm_ipfs.c) and answers when it has answered, within the
 * adapter's timeout (a probe of health, within 10 s).
 */


#define NGX_DEFARM_PROBE_TIMEOUT  10000


typedef struct {
    ngx_http_request_t        *request;
    ngx_http_cleanup_t        *cleanup;
    ngx_defarm_curl_req_t     *req;
    ngx_defarm_fn_req_t       *fr;
    ngx_defarm_ipfs_op_e       op;
    const char                *check;        /* "status", "health" */
    ngx_defarm_json_t         *target;
    ngx_str_t                  test_dfid;
    ngx_msec_t                 start;
    ngx_event_t                deadline;
} ngx_defarm_probe_t;


static ngx_int_t ngx_defarm_adapters_run(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_adapters_targeted(ngx_http_request_t *r,
    void *data, PGresult *res);
static ngx_int_t ngx_defarm_adapters_test_doc(ngx_http_request_t *r,
    ngx_defarm_probe_t *pr, ngx_str_t *doc);
static void ngx_defarm_adapters_answered(ngx_defarm_curl_req_t *req,
    CURLcode rc, long status, const char *error, ngx_str_t *body);
static void ngx_defarm_adapters_cleanup(void *data);
static void ngx_defarm_adapters_deadline(ngx_event_t *ev);
static ngx_int_t ngx_defarm_adapters_answer(ngx_http_request_t *r,
    ngx_defarm_probe_t *pr, CURLcode rc, long status, const char *error,
    ngx_str_t *body);


ngx_defarm_route_t  ngx_defarm_adapters_routes[] = {

    { NGX_HTTP_GET, ngx_string("/api/adapters"),
      ngx_defarm_adapters_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/adapters/select"),
      ngx_defarm_adapters_run,
      NGX_DEFARM_ROUTE_PRINCIPAL|NGX_DEFARM_ROUTE_BODY },

    { NGX_HTTP_GET, ngx_string("/api/adapters/templates"),
      ngx_defarm_adapters_run, 0 },

    /* the probes */

    { NGX_HTTP_GET, ngx_string("/api/adapters/:adapter_type/status"),
      ngx_defarm_adapters_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/adapters/:adapter_type/health"),
      ngx_defarm_adapters_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/test/test-push"),
      ngx_defarm_adapters_run,
      NGX_DEFARM_ROUTE_ADMIN|NGX_DEFARM_ROUTE_BODY },

    ngx_defarm_route_null
};


static ngx_defarm_pg_stmt_t  ngx_defarm_adapters_available =
    ngx_defarm_fn_stmt("defarm_adapters_available");
static ngx_defarm_pg_stmt_t  ngx_defarm_adapters_select =
    ngx_defarm_fn_stmt("defarm_adapters_select");
static ngx_defarm_pg_stmt_t  ngx_defarm_adapters_templates =
    ngx_defarm_fn_stmt("defarm_adapters_templates");
static ngx_defarm_pg_stmt_t  ngx_defarm_adapters_target =
    ngx_defarm_fn_stmt("defarm_adapter_target");

static ngx_defarm_pg_stmt_t  *ngx_defarm_adapters_stmts[] = {
    &ngx_defarm_adapters_available,
    &ngx_defarm_adapters_select,
    &ngx_defarm_adapters_templates
};


static ngx_int_t
ngx_defarm_adapters_run(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_uint_t           i;
    ngx_defarm_json_t   *v;
    ngx_defarm_probe_t  *pr;

    i = ctx->route - ngx_defarm_adapters_routes;

    if (i < 3) {
        return ngx_defarm_fn_run(r, ctx, ngx_defarm_adapters_routes,
                                 ngx_defarm_adapters_stmts,
                                 sizeof(ngx_defarm_adapters_stmts)
                                 / sizeof(ngx_defarm_pg_stmt_t *));
    }

    pr = ngx_pcalloc(r->pool, sizeof(ngx_defarm_probe_t));
    if (pr == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    pr->request = r;
    pr->op = (i == 5) ? NGX_DEFARM_IPFS_ADD : NGX_DEFARM_IPFS_VERSION;
    pr->check = (i == 3) ? "status" : "health";

    if (i == 5) {
        if (ctx->body->type != NGX_DEFARM_JSON_OBJECT) {
            return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                    NGX_DEFARM_ERR_VALIDATION,
                                    "The body must be a JSON object");
        }

        v = ngx_defarm_json_get(ctx->body, "adapter_type");
        if (v == NULL || v->type != NGX_DEFARM_JSON_STRING) {
            return ngx_defarm_error(r, NGX_HTTP_BAD_REQUEST,
                                    NGX_DEFARM_ERR_VALIDATION,
                                    "adapter_type is required: a string");
        }
    }

    pr->fr = ngx_defarm_fn_req(r, ctx);
    if (pr->fr == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_defarm_pg_query(r, &ngx_defarm_adapters_target,
                               pr->fr->params, ngx_defarm_adapters_targeted,
                               pr);
}


/* the database named the target, or refused: the call, or the refusal */

static ngx_int_t
ngx_defarm_adapters_targeted(ngx_http_request_t *r, void *data,
    PGresult *res)
{
    ngx_defarm_probe_t  *pr = data;

    ngx_int_t                  rc;
    ngx_str_t                  body, err, doc, *name;
    ngx_uint_t                 code;
    const char                *why;
    ngx_defarm_curl_req_t     *req;
    ngx_defarm_json_parser_t  *ps;

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1
        || ngx_atoi((u_char *) PQgetvalue(res, 0, 0),
                    PQgetlength(res, 0, 0)) != NGX_HTTP_OK)
    {
        return ngx_defarm_fn_done(r, pr->fr, res);
    }

    if (ngx_defarm_pg_text(res, 0, 1, &body) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ps = ngx_defarm_json_parser(r->pool, 8, 256, 64 * 1024);
    if (ps == NULL
        || ngx_defarm_json_feed(ps, body.data, body.len) != NGX_OK
        || ngx_defarm_json_end(ps, &pr->target, &err, &code) != NGX_OK
        || pr->target->type != NGX_DEFARM_JSON_OBJECT)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_str_null(&doc);
    name = NULL;

    if (pr->op == NGX_DEFARM_IPFS_ADD) {
        if (ngx_defarm_adapters_test_doc(r, pr, &doc) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        name = &pr->test_dfid;
    }

    why = "the request could not be made";

    rc = ngx_defarm_ipfs_request(r->pool, r->connection->log, pr->target,
                                 pr->op, name, &doc, &req, &why);

    if (rc != NGX_OK) {
        return ngx_defarm_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                NGX_DEFARM_ERR_ADAPTER_UNAVAILABLE,
                                "The adapter cannot be called: %s", why);
    }

    if (pr->op == NGX_DEFARM_IPFS_VERSION) {
        req->timeout = ngx_min(req->timeout, NGX_DEFARM_PROBE_TIMEOUT);
    }

    req->done = ngx_defarm_adapters_answered;
    req->data = pr;

    pr->start = ngx_current_msec;
    pr->req = req;

    /*
     * The request waits for the transfer, which always ends (its timeout);
     * a client that goes away first ends the request, and the transfer
     * with it (it lives in the request's pool)
     */

    pr->cleanup = ngx_http_cleanup_add(r, 0);
    if (pr->cleanup == NULL) {
        curl_slist_free_all(req->headers);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_defarm_curl_start(req) != NGX_OK) {
        curl_slist_free_all(req->headers);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    pr->cleanup->handler = ngx_defarm_adapters_cleanup;
    pr->cleanup->data = pr;

    /*
     * The request's own deadline, a second past the transfer's: should
     * libcurl fail to end it, the client is answered all the same; not
     * cancelable, so a worker that is told to exit answers it first
     */

    pr->deadline.handler = ngx_defarm_adapters_deadline;
    pr->deadline.data = pr;
    pr->deadline.log = r->connection->log;
    ngx_add_timer(&pr->deadline, req->timeout + 1000);

    r->main->count++;

    return NGX_DONE;
}


/* {"dfid": "TEST-DFID-<uuid>", "test": true, "test_data": ..., "created_at"} */

static ngx_int_t
ngx_defarm_adapters_test_doc(ngx_http_request_t *r, ngx_defarm_probe_t *pr,
    ngx_str_t *doc)
{
    u_char                    *p;
    uint32_t                   x[4];
    ngx_uint_t                 i;
    ngx_defarm_ctx_t          *ctx;
    ngx_defarm_json_t         *data;
    ngx_defarm_json_writer_t  *w;

    for (i = 0; i < 4; i++) {
        x[i] = (uint32_t) ngx_random() ^ ((uint32_t) ngx_random() << 16);
    }

    /* a version 4 UUID */

    x[1] = (x[1] & 0xffff0fff) | 0x00004000;
    x[2] = (x[2] & 0x3fffffff) | 0x80000000;

    p = ngx_pnalloc(r->pool, sizeof("TEST-DFID-") - 1 + 36);
    if (p == NULL) {
        return NGX_ERROR;
    }

    pr->test_dfid.data = p;
    pr->test_dfid.len = ngx_sprintf(p, "TEST-DFID-%08xD-%04xD-%04xD-%04xD-"
                                       "%04xD%08xD",
                                    x[0], x[1] >> 16, x[1] & 0xffff,
                                    x[2] >> 16, x[2] & 0xffff, x[3])
                        - p;

    ctx = ngx_defarm_get_ctx(r);
    data = ngx_defarm_json_get(ctx->body, "test_data");

    w = ngx_defarm_json_writer(r);
    if (w == NULL) {
        return NGX_ERROR;
    }

    ngx_defarm_jw_map_open(w);
    ngx_defarm_jw_key(w, "dfid");
    ngx_defarm_jw_str(w, &pr->test_dfid);
    ngx_defarm_jw_key(w, "test");
    ngx_defarm_jw_bool(w, 1);
    ngx_defarm_jw_key(w, "test_data");

    if (data) {
        ngx_defarm_jw_value(w, data);

    } else {
        ngx_defarm_jw_null(w);
    }

    ngx_defarm_jw_key(w, "created_at");
    ngx_defarm_jw_time(w, ngx_time());
    ngx_defarm_jw_map_close(w);

    return ngx_defarm_json_text(w, doc);
}


static void
ngx_defarm_adapters_answered(ngx_defarm_curl_req_t *req, CURLcode rc,
    long status, const char *error, ngx_str_t *body)
{
    ngx_defarm_probe_t  *pr = req->data;

    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = pr->request;
    c = r->connection;

    pr->cleanup->handler = NULL;

    if (pr->deadline.timer_set) {
        ngx_del_timer(&pr->deadline);
    }

    ngx_http_finalize_request(r, ngx_defarm_adapters_answer(r, pr, rc,
                                                            status, error,
                                                            body));
    ngx_http_run_posted_requests(c);
}


static void
ngx_defarm_adapters_cleanup(void *data)
{
    ngx_defarm_probe_t  *pr = data;

    if (pr->deadline.timer_set) {
        ngx_del_timer(&pr->deadline);
    }

    ngx_defarm_curl_cancel(pr->req);
}


static void
ngx_defarm_adapters_deadline(ngx_event_t *ev)
{
    ngx_defarm_probe_t  *pr = ev->data;

    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = pr->request;
    c = r->connection;

    pr->cleanup->handler = NULL;
    ngx_defarm_curl_cancel(pr->req);

    ngx_http_finalize_request(r, ngx_defarm_adapters_answer(r, pr,
                                  CURLE_OPERATION_TIMEDOUT, 0, NULL, NULL));
    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_defarm_adapters_answer(ngx_http_request_t *r, ngx_defarm_probe_t *pr,
    CURLcode rc, long status, const char *error, ngx_str_t *body)
{
    int64_t                    size;
    ngx_str_t                  value, *type, *config, none;
    ngx_defarm_json_writer_t  *w;

    type = ngx_defarm_json_cstr(r->pool, pr->target, "adapter_type");
    config = ngx_defarm_json_cstr(r->pool, pr->target, "config_name");

    if (type == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == CURLE_OPERATION_TIMEDOUT) {
        return ngx_defarm_error(r, NGX_HTTP_GATEWAY_TIME_OUT,
                                NGX_DEFARM_ERR_EXTERNAL_TIMEOUT,
                                "The %V adapter did not answer in time",
                                type);
    }

    if (rc != CURLE_OK) {
        return ngx_defarm_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                NGX_DEFARM_ERR_ADAPTER_UNAVAILABLE,
                                "The %V adapter is unavailable: %s", type,
                                error ? error : "no answer");
    }

    if (status < 200 || status > 299
        || ngx_defarm_ipfs_answer(r->pool, pr->op, body, &value, &size)
           != NGX_OK)
    {
        return ngx_defarm_error(r, NGX_HTTP_BAD_GATEWAY,
                                NGX_DEFARM_ERR_EXTERNAL_ERROR,
                                "The %V adapter's node answered %l without "
                                "what was asked", type, status);
    }

    w = ngx_defarm_json_writer(r);
    if (w == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_defarm_jw_map_open(w);
    ngx_defarm_jw_key(w, "success");
    ngx_defarm_jw_bool(w, 1);
    ngx_defarm_jw_key(w, "adapter_type");
    ngx_defarm_jw_str(w, type);

    if (pr->op == NGX_DEFARM_IPFS_ADD) {
        ngx_defarm_jw_key(w, "storage_location");
        ngx_defarm_jw_map_open(w);
        ngx_defarm_jw_key(w, "IPFS");
        ngx_defarm_jw_map_open(w);
        ngx_defarm_jw_key(w, "cid");
        ngx_defarm_jw_str(w, &value);
        ngx_defarm_jw_key(w, "pinned");
        ngx_defarm_jw_bool(w, 1);
        ngx_defarm_jw_map_close(w);
        ngx_defarm_jw_map_close(w);
        ngx_defarm_jw_key(w, "hash");
        ngx_defarm_jw_str(w, &value);
        ngx_defarm_jw_key(w, "test_dfid");
        ngx_defarm_jw_str(w, &pr->test_dfid);
        ngx_defarm_jw_key(w, "size");
        ngx_defarm_jw_int(w, size);
        ngx_defarm_jw_key(w, "message");
        ngx_defarm_jw_cstr(w, "The test document was stored and pinned");

    } else {
        ngx_defarm_jw_key(w, "check");
        ngx_defarm_jw_cstr(w, pr->check);
        ngx_defarm_jw_key(w, "healthy");
        ngx_defarm_jw_bool(w, 1);
        ngx_defarm_jw_key(w, "status");
        ngx_defarm_jw_cstr(w, "ready");
        ngx_defarm_jw_key(w, "node_version");
        ngx_defarm_jw_str(w, &value);
    }

    ngx_str_null(&none);

    ngx_defarm_jw_key(w, "config_name");
    ngx_defarm_jw_str_or_null(w, config ? config : &none);
    ngx_defarm_jw_key(w, "latency_ms");
    ngx_defarm_jw_int(w, (int64_t) (ngx_current_msec - pr->start));
    ngx_defarm_jw_map_close(w);

    return ngx_defarm_send(r, NGX_HTTP_OK, w);
}
