
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "storage/ngx_defarm_ipfs.h"
#include "auth/ngx_defarm_sealed.h"


/*
 * The "ipfs-ipfs" storage adapter: an IPFS node's HTTP RPC API, spoken
 * through the event loop's libcurl (ngx_defarm_curl.c).  A document is
 * added and pinned in one call (POST /api/v0/add?pin=true, multipart), and
 * its CID is the answer's "Hash"; a probe asks for /api/v0/version.
 *
 * The connection comes as a JSON object, from an upload job's payload or
 * a probe's target (sql/034): {endpoint, auth_type, timeout_ms, headers,
 * sealed_api_key, sealed_secret_key}.  The keys are opened here, in the
 * caller's pool, and go with it.  The node is the operator's own, so a
 * loopback or private address is allowed, as the SMTP server's is.
 */


#define NGX_DEFARM_IPFS_TIMEOUT  60000


static ngx_int_t ngx_defarm_ipfs_auth(ngx_pool_t *pool,
    ngx_defarm_json_t *conf, ngx_defarm_curl_req_t *req, const char **err);
static ngx_int_t ngx_defarm_ipfs_multipart(ngx_pool_t *pool,
    ngx_defarm_curl_req_t *req, ngx_str_t *name, ngx_str_t *doc);


/*
 * A request ready to start (the caller sets done and data): NGX_OK;
 * NGX_DECLINED when this node cannot make it now but another could (the
 * keys are sealed under a defarm_secret_key it lacks); NGX_ERROR when it
 * cannot be made at all, with *err saying why
 */

ngx_int_t
ngx_defarm_ipfs_request(ngx_pool_t *pool, ngx_log_t *log,
    ngx_defarm_json_t *conf, ngx_defarm_ipfs_op_e op, ngx_str_t *name,
    ngx_str_t *doc, ngx_defarm_curl_req_t **reqp, const char **err)
{
    u_char                 *url, *p;
    int64_t                 ms;
    ngx_int_t               rc;
    ngx_str_t              *endpoint;
    ngx_defarm_json_t      *v, *h;
    ngx_defarm_curl_req_t  *req;

    static const char      *paths[] = {
        "/api/v0/add?pin=true", "/api/v0/version"
    };

    endpoint = ngx_defarm_json_cstr(pool, conf, "endpoint");

    if (endpoint == NULL || endpoint->len == 0) {
        *err = "the adapter has no endpoint";
        return NGX_ERROR;
    }

    /* "http://node:5001/" and "http://node:5001" are one endpoint */

    while (endpoint->len && endpoint->data[endpoint->len - 1] == '/') {
        endpoint->len--;
    }

    req = ngx_pcalloc(pool, sizeof(ngx_defarm_curl_req_t));
    url = ngx_pnalloc(pool, endpoint->len + ngx_strlen(paths[op]) + 1);
    if (req == NULL || url == NULL) {
        *err = "out of memory";
        return NGX_ERROR;
    }

    p = ngx_cpymem(url, endpoint->data, endpoint->len);
    p = ngx_cpymem(p, paths[op], ngx_strlen(paths[op]));
    *p = '\0';

    req->pool = pool;
    req->log = log;
    req->url = (const char *) url;
    req->method = "POST";                   /* the RPC API takes only POST */
    req->allow_private = 1;
    req->timeout = NGX_DEFARM_IPFS_TIMEOUT;

    v = ngx_defarm_json_get(conf, "timeout_ms");
    if (v && ngx_defarm_json_int(v, &ms) == NGX_OK && ms > 0) {
        req->timeout = (ngx_msec_t) ms;
    }

    if (ngx_defarm_curl_header(req, "Expect:") != NGX_OK) {
        goto nomem;
    }

    h = ngx_defarm_json_get(conf, "headers");

    if (h && h->type == NGX_DEFARM_JSON_OBJECT) {
        for (h = h->child; h; h = h->next) {
            if (h->type == NGX_DEFARM_JSON_STRING
                && ngx_defarm_curl_header(req, "%V: %V", &h->key, &h->str)
                   != NGX_OK)
            {
                goto nomem;
            }
        }
    }

    rc = ngx_defarm_ipfs_auth(pool, conf, req, err);
    if (rc != NGX_OK) {
        goto failed;
    }

    if (op == NGX_DEFARM_IPFS_ADD
        && ngx_defarm_ipfs_multipart(pool, req, name, doc) != NGX_OK)
    {
        goto nomem;
    }

    *reqp = req;

    return NGX_OK;

nomem:

    *err = "out of memory";
    rc = NGX_ERROR;

failed:

    if (req->headers) {
        curl_slist_free_all(req->headers);
        req->headers = NULL;
    }

    return rc;
}


/*
 * auth_type: "None"; "ApiKey" (X-API-Key: api_key); "Bearer" and "OAuth2"
 * (a bearer token: api_key); "BasicAuth" (api_key:secret_key);
 * {"Custom": "<header>"} (<header>: api_key)
 */

static ngx_int_t
ngx_defarm_ipfs_auth(ngx_pool_t *pool, ngx_defarm_json_t *conf,
    ngx_defarm_curl_req_t *req, const char **err)
{
    ngx_int_t           rc;
    ngx_str_t          *sealed, key, secret, pair, *type;
    ngx_defarm_json_t  *at, *custom;

    at = ngx_defarm_json_get(conf, "auth_type");

    if (at == NULL || at->type == NGX_DEFARM_JSON_NULL
        || (at->type == NGX_DEFARM_JSON_STRING && at->str.len == 4
            && ngx_strncmp(at->str.data, "None", 4) == 0))
    {
        return NGX_OK;
    }

    sealed = ngx_defarm_json_cstr(pool, conf, "sealed_api_key");
    if (sealed == NULL || sealed->len == 0) {
        *err = "the adapter's authentication needs its api_key, "
               "which is not set";
        return NGX_ERROR;
    }

    rc = ngx_defarm_sealed_open(pool, sealed, &key);
    if (rc != NGX_OK) {
        *err = "the adapter's keys cannot be opened on this node "
               "(defarm_secret_key)";
        return rc;
    }

    if (at->type == NGX_DEFARM_JSON_OBJECT) {
        custom = ngx_defarm_json_get(at, "Custom");
        if (custom == NULL || custom->type != NGX_DEFARM_JSON_STRING) {
            *err = "the adapter's auth_type is not understood";
            return NGX_ERROR;
        }

        rc = ngx_defarm_curl_header(req, "%V: %V", &custom->str, &key);
        goto done;
    }

    type = &at->str;

    if (type->len == 6 && ngx_strncmp(type->data, "ApiKey", 6) == 0) {
        rc = ngx_defarm_curl_header(req, "X-API-Key: %V", &key);
        goto done;
    }

    if ((type->len == 6 && ngx_strncmp(type->data, "Bearer", 6) == 0)
        || (type->len == 6 && ngx_strncmp(type->data, "OAuth2", 6) == 0))
    {
        rc = ngx_defarm_curl_header(req, "Authorization: Bearer %V", &key);
        goto done;
    }

    if (type->len == 9 && ngx_strncmp(type->data, "BasicAuth", 9) == 0) {
        ngx_str_null(&secret);

        sealed = ngx_defarm_json_cstr(pool, conf, "sealed_secret_key");
        if (sealed && sealed->len) {
            rc = ngx_defarm_sealed_open(pool, sealed, &secret);
            if (rc != NGX_OK) {
                *err = "the adapter's keys cannot be opened on this node "
                       "(defarm_secret_key)";
                return rc;
            }
        }

        pair.len = key.len + 1 + secret.len;
        pair.data = ngx_pnalloc(pool, pair.len);
        if (pair.data == NULL) {
            *err = "out of memory";
            return NGX_ERROR;
        }

        ngx_sprintf(pair.data, "%V:%V", &key, &secret);

        rc = ngx_defarm_curl_basic(req, &pair);
        goto done;
    }

    *err = "the adapter's auth_type is not understood";
    return NGX_ERROR;

done:

    if (rc != NGX_OK) {
        *err = "the adapter's credentials cannot be sent (a line break?)";
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* the document as the one file of a multipart/form-data body */

static ngx_int_t
ngx_defarm_ipfs_multipart(ngx_pool_t *pool, ngx_defarm_curl_req_t *req,
    ngx_str_t *name, ngx_str_t *doc)
{
    u_char      *p;
    uint32_t     rnd[2];
    ngx_str_t    body;
    ngx_uint_t   tries;
    u_char       boundary[sizeof("defarm-") - 1 + 16 + 1];

    /* a boundary the document does not hold */

    for (tries = 0; /* void */; tries++) {
        rnd[0] = (uint32_t) ngx_random();
        rnd[1] = (uint32_t) ngx_random();
        *ngx_sprintf(boundary, "defarm-%08xD%08xD", rnd[0], rnd[1]) = '\0';

        if (ngx_strlcasestrn(doc->data, doc->data + doc->len, boundary,
                             sizeof(boundary) - 2)
            == NULL)
        {
            break;
        }

        if (tries == 8) {
            return NGX_ERROR;
        }
    }

    body.len = sizeof("--") - 1 + sizeof(boundary) - 1 + 2
               + sizeof("Content-Disposition: form-data; name=\"file\"; "
                        "filename=\"\"\r\n") - 1 + name->len + 5
               + sizeof("Content-Type: application/json\r\n\r\n") - 1
               + doc->len + 2
               + sizeof("--") - 1 + sizeof(boundary) - 1 + 4;

    body.data = ngx_pnalloc(pool, body.len);
    if (body.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(body.data,
                    "--%s\r\n"
                    "Content-Disposition: form-data; name=\"file\"; "
                    "filename=\"%V.json\"\r\n"
                    "Content-Type: application/json\r\n\r\n",
                    boundary, name);
    p = ngx_cpymem(p, doc->data, doc->len);
    p = ngx_sprintf(p, "\r\n--%s--\r\n", boundary);

    body.len = p - body.data;
    req->body = body;

    return ngx_defarm_curl_header(req,
                                  "Content-Type: multipart/form-data; "
                                  "boundary=%s", boundary);
}


/*
 * The node's answer: an add's CID ("Hash") and size, a version's
 * "Version"; NGX_ERROR for an answer without them
 */

ngx_int_t
ngx_defarm_ipfs_answer(ngx_pool_t *pool, ngx_defarm_ipfs_op_e op,
    ngx_str_t *body, ngx_str_t *value, int64_t *size)
{
    ngx_str_t                  err, *s;
    ngx_uint_t                 i, code;
    ngx_defarm_json_t         *root, *v;
    ngx_defarm_json_parser_t  *ps;

    ps = ngx_defarm_json_parser(pool, 8, 256, 64 * 1024);
    if (ps == NULL
        || ngx_defarm_json_feed(ps, body->data, body->len) != NGX_OK
        || ngx_defarm_json_end(ps, &root, &err, &code) != NGX_OK
        || root->type != NGX_DEFARM_JSON_OBJECT)
    {
        return NGX_ERROR;
    }

    s = ngx_defarm_json_cstr(pool, root,
                             op == NGX_DEFARM_IPFS_ADD ? "Hash" : "Version");
    if (s == NULL || s->len == 0 || s->len > 128) {
        return NGX_ERROR;
    }

    /* a CID is letters and digits, a version hardly more: kept as given */

    for (i = 0; i < s->len; i++) {
        if (!isalnum(s->data[i])
            && !(op == NGX_DEFARM_IPFS_VERSION
                 && (s->data[i] == '.' || s->data[i] == '-'
                     || s->data[i] == '+')))
        {
            return NGX_ERROR;
        }
    }

    *value = *s;

    if (size) {
        *size = -1;

        /* "Size" is a string in the node's answer, a number in others' */

        v = ngx_defarm_json_get(root, "Size");
        if (v && v->type == NGX_DEFARM_JSON_STRING) {
            *size = ngx_atoof(v->str.data, v->str.len);

        } else if (v) {
            (void) ngx_defarm_json_int(v, size);
        }
    }

    return NGX_OK;
}
