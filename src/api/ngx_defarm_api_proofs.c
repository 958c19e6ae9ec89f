
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "api/ngx_defarm_api_fn.h"
#include "provenance/ngx_defarm_attest.h"


/*
 * /api/proofs: attestations (sql/043), statements about data the server
 * holds signed with its Ed25519 key (src/provenance/), in place of the
 * original's mock zero-knowledge proofs.  PostgreSQL makes and checks the
 * statement and stores it; the signature is made and checked here, so
 * the private key never leaves the worker.  Without
 * defarm_attestation_key every route answers 503.
 *
 * The reads and the delete are route functions (route i runs statement
 * i); submit and verify are two statements with the key between them.
 */


static ngx_int_t ngx_defarm_proofs_run(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_proofs_submit(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_proofs_sign(ngx_http_request_t *r, void *data,
    PGresult *res);
static ngx_int_t ngx_defarm_proofs_verify(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_proofs_check(ngx_http_request_t *r, void *data,
    PGresult *res);
static ngx_int_t ngx_defarm_proofs_key(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);
static ngx_int_t ngx_defarm_proofs_unkeyed(ngx_http_request_t *r);


ngx_defarm_route_t  ngx_defarm_proofs_routes[] = {

    { NGX_HTTP_GET, ngx_string("/api/proofs"),
      ngx_defarm_proofs_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/proofs/statistics"),
      ngx_defarm_proofs_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/proofs/templates"),
      ngx_defarm_proofs_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/proofs/:id"),
      ngx_defarm_proofs_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_DELETE, ngx_string("/api/proofs/:id"),
      ngx_defarm_proofs_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    /* not route functions: the key is used between two statements */

    { NGX_HTTP_POST, ngx_string("/api/proofs/submit"),
      ngx_defarm_proofs_submit,
      NGX_DEFARM_ROUTE_PRINCIPAL|NGX_DEFARM_ROUTE_BODY },

    { NGX_HTTP_POST, ngx_string("/api/proofs/verify"),
      ngx_defarm_proofs_verify,
      NGX_DEFARM_ROUTE_PRINCIPAL|NGX_DEFARM_ROUTE_BODY },

    /* the public key: anyone may fetch it to verify offline */

    { NGX_HTTP_GET, ngx_string("/api/proofs/key"),
      ngx_defarm_proofs_key, 0 },

    ngx_defarm_route_null
};


static ngx_defarm_pg_stmt_t  ngx_defarm_proofs_list =
    ngx_defarm_fn_stmt("defarm_proofs_list");
static ngx_defarm_pg_stmt_t  ngx_defarm_proofs_statistics =
    ngx_defarm_fn_stmt("defarm_proofs_statistics");
static ngx_defarm_pg_stmt_t  ngx_defarm_proofs_templates =
    ngx_defarm_fn_stmt("defarm_proofs_templates");
static ngx_defarm_pg_stmt_t  ngx_defarm_proof_get =
    ngx_defarm_fn_stmt("defarm_proof_get");
static ngx_defarm_pg_stmt_t  ngx_defarm_proof_delete =
    ngx_defarm_fn_stmt("defarm_proof_delete");

static ngx_defarm_pg_stmt_t  *ngx_defarm_proofs_stmts[] = {
    &ngx_defarm_proofs_list,
    &ngx_defarm_proofs_statistics,
    &ngx_defarm_proofs_templates,
    &ngx_defarm_proof_get,
    &ngx_defarm_proof_delete
};


/* submit: the statement to sign ($4: the key's id), then the signed one */

static ngx_defarm_pg_stmt_t  ngx_defarm_proof_statement =
    ngx_defarm_fn_stmt("defarm_proof_statement");

static ngx_defarm_pg_stmt_t  ngx_defarm_proof_store = {
    "defarm_proof_store",
    "SELECT status, body FROM defarm_proof_store($1, $2, $3, $4)", 4, 0
};

/* verify: the payload and signature to check, then the record's checks */

static ngx_defarm_pg_stmt_t  ngx_defarm_proof_signed = {
    "defarm_proof_signed",
    "SELECT status, body, payload, signature "
    "FROM defarm_proof_signed($1, $2::jsonb)", 2, 0
};

static ngx_defarm_pg_stmt_t  ngx_defarm_proof_verify = {
    "defarm_proof_verify",
    "SELECT status, body "
    "FROM defarm_proof_verify($1, $2, $3, $4::boolean, $5)", 5, 0
};


static ngx_int_t
ngx_defarm_proofs_run(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    if (ngx_defarm_attest_key(r) == NULL) {
        return ngx_defarm_proofs_unkeyed(r);
    }

    return ngx_defarm_fn_run(r, ctx, ngx_defarm_proofs_routes,
                             ngx_defarm_proofs_stmts,
                             sizeof(ngx_defarm_proofs_stmts)
                             / sizeof(ngx_defarm_pg_stmt_t *));
}


/* POST /api/proofs/submit {circuit_type, circuit_input, metadata} */

static ngx_int_t
ngx_defarm_proofs_submit(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_defarm_fn_req_t      *fr;
    ngx_defarm_attest_key_t  *key;

    key = ngx_defarm_attest_key(r);
    if (key == NULL) {
        return ngx_defarm_proofs_unkeyed(r);
    }

    fr = ngx_defarm_fn_req(r, ctx);
    if (fr == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    fr->params[3] = key->key_id;

    return ngx_defarm_pg_query(r, &ngx_defarm_proof_statement, fr->params,
                               ngx_defarm_proofs_sign, fr);
}


static ngx_int_t
ngx_defarm_proofs_sign(ngx_http_request_t *r, void *data, PGresult *res)
{
    ngx_defarm_fn_req_t  *fr = data;

    ngx_str_t                 payload, signature;
    ngx_defarm_attest_key_t  *key;

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1
        || ngx_strcmp(PQgetvalue(res, 0, 0), "200") != 0
        || ngx_defarm_pg_text(res, 0, 1, &payload) != NGX_OK)
    {
        return ngx_defarm_fn_done(r, data, res);
    }

    key = ngx_defarm_attest_key(r);

    if (ngx_defarm_attest_sign(r->pool, key, &payload, &signature)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "defarm: an attestation could not be signed");
        return ngx_defarm_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                NGX_DEFARM_ERR_INTERNAL,
                                "Internal server error");
    }

    fr->params[1] = payload;
    fr->params[2] = signature;
    fr->params[3] = key->key_id;

    return ngx_defarm_pg_query(r, &ngx_defarm_proof_store, fr->params,
                               ngx_defarm_fn_done, fr);
}


/* POST /api/proofs/verify {proof_id} or {payload, signature} */

static ngx_int_t
ngx_defarm_proofs_verify(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_defarm_fn_req_t  *fr;

    if (ngx_defarm_attest_key(r) == NULL) {
        return ngx_defarm_proofs_unkeyed(r);
    }

    fr = ngx_defarm_fn_req(r, ctx);
    if (fr == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    fr->params[1] = fr->params[2];

    return ngx_defarm_pg_query(r, &ngx_defarm_proof_signed, fr->params,
                               ngx_defarm_proofs_check, fr);
}


static ngx_int_t
ngx_defarm_proofs_check(ngx_http_request_t *r, void *data, PGresult *res)
{
    ngx_defarm_fn_req_t  *fr = data;

    ngx_int_t                 rc;
    ngx_str_t                *params;
    ngx_defarm_attest_key_t  *key;

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1
        || PQnfields(res) != 4
        || ngx_strcmp(PQgetvalue(res, 0, 0), "200") != 0)
    {
        return ngx_defarm_fn_done(r, data, res);
    }

    params = ngx_pcalloc(r->pool, 5 * sizeof(ngx_str_t));
    if (params == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    key = ngx_defarm_attest_key(r);

    params[0] = fr->params[0];
    (void) ngx_defarm_pg_text(res, 0, 2, &params[1]);
    (void) ngx_defarm_pg_text(res, 0, 3, &params[2]);

    rc = ngx_defarm_attest_verify(r->pool, key, &params[1], &params[2]);
    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    params[3] = (rc == NGX_OK) ? ngx_defarm_true : ngx_defarm_false;
    params[4] = key->key_id;

    return ngx_defarm_pg_query(r, &ngx_defarm_proof_verify, params,
                               ngx_defarm_fn_done, fr);
}


/* GET /api/proofs/key */

static ngx_int_t
ngx_defarm_proofs_key(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_defarm_attest_key_t   *key;
    ngx_defarm_json_writer_t  *w;

    key = ngx_defarm_attest_key(r);
    if (key == NULL) {
        return ngx_defarm_proofs_unkeyed(r);
    }

    w = ngx_defarm_json_writer(r);
    if (w == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_defarm_jw_map_open(w);
    ngx_defarm_jw_key(w, "algorithm");
    ngx_defarm_jw_cstr(w, "Ed25519");
    ngx_defarm_jw_key(w, "key_id");
    ngx_defarm_jw_str(w, &key->key_id);
    ngx_defarm_jw_key(w, "public_key");
    ngx_defarm_jw_str(w, &key->public_key);
    ngx_defarm_jw_key(w, "public_key_pem");
    ngx_defarm_jw_str(w, &key->public_pem);
    ngx_defarm_jw_map_close(w);

    return ngx_defarm_send(r, NGX_HTTP_OK, w);
}


static ngx_int_t
ngx_defarm_proofs_unkeyed(ngx_http_request_t *r)
{
    return ngx_defarm_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                            NGX_DEFARM_ERR_SERVICE_UNAVAILABLE,
                            "Attestations are not set up on this server "
                            "(defarm_attestation_key)");
}
