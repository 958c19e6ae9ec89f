
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "fuzz.h"
#include "ngx_defarm_json.h"
#include "items/ngx_defarm_items.h"


/*
 * DFID and identifier validation.  Byte 0 even: the rest is a DFID path
 * parameter; odd: the rest is a JSON body whose "identifiers" and
 * "enriched_data" (or the body itself) go through the validators an item
 * write runs.  What they accept is JSON text that must parse back; what
 * they refuse has a message that is valid UTF-8 (a batch embeds it).
 */


static void
ngx_defarm_fuzz_json_ok(ngx_defarm_fuzz_t *fz, ngx_str_t *text)
{
    ngx_str_t                  err;
    ngx_uint_t                 status;
    ngx_defarm_json_t         *root;
    ngx_defarm_json_parser_t  *ps;

    ps = ngx_defarm_json_parser(fz->pool, 64, 1 << 20, (size_t) 1 << 30);
    ngx_defarm_fuzz_assert(ps != NULL);
    ngx_defarm_fuzz_assert(ngx_defarm_json_feed(ps, text->data, text->len)
                           == NGX_OK);
    root = NULL;
    ngx_defarm_fuzz_assert(ngx_defarm_json_end(ps, &root, &err, &status)
                           == NGX_OK);
}


static void
ngx_defarm_fuzz_result(ngx_defarm_fuzz_t *fz, ngx_int_t rc, ngx_str_t *json,
    ngx_str_t *err)
{
    ngx_defarm_fuzz_assert(rc == NGX_OK || rc == NGX_DECLINED);

    if (rc == NGX_OK) {
        ngx_defarm_fuzz_json_ok(fz, json);
        return;
    }

    ngx_defarm_fuzz_assert(err->len > 0
                           && err->len <= NGX_DEFARM_MAX_INVALID);
    ngx_defarm_fuzz_assert(ngx_utf8_length(err->data, err->len)
                           != (size_t) NGX_ERROR);
}


static void
ngx_defarm_fuzz_dfid(ngx_defarm_fuzz_t *fz, const uint8_t *data, size_t size)
{
    u_char      *p;
    ngx_str_t    dfid;
    ngx_uint_t   ok;

    p = ngx_defarm_fuzz_copy(fz, data, size);
    ngx_defarm_fuzz_assert(p != NULL);

    dfid.data = p;
    dfid.len = size;

    ok = ngx_defarm_dfid_valid(&dfid);

    if (ok) {
        ngx_defarm_fuzz_assert(size <= 64 && ngx_strncmp(p, "DFID-", 5) == 0);
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                    *buf;
    ngx_int_t                  rc;
    ngx_str_t                  json, err;
    ngx_uint_t                 status;
    ngx_defarm_fuzz_t          fz;
    ngx_defarm_json_t         *root, *v;
    ngx_defarm_json_parser_t  *ps;

    if (size < 1) {
        return 0;
    }

    if (ngx_defarm_fuzz_begin(&fz) != NGX_OK) {
        return 0;
    }

    if ((data[0] & 1) == 0) {
        ngx_defarm_fuzz_dfid(&fz, data + 1, size - 1);
        goto done;
    }

    /* the limits a defarm_api location has by default */

    ps = ngx_defarm_json_parser(fz.pool, 32, 10000, 1024 * 1024);
    ngx_defarm_fuzz_assert(ps != NULL);

    buf = ngx_defarm_fuzz_copy(&fz, data + 1, size - 1);
    ngx_defarm_fuzz_assert(buf != NULL);

    (void) ngx_defarm_json_feed(ps, buf, size - 1);

    root = NULL;

    if (ngx_defarm_json_end(ps, &root, &err, &status) != NGX_OK) {
        goto done;
    }

    v = ngx_defarm_json_get(root, "identifiers");

    ngx_str_null(&err);
    rc = ngx_defarm_identifiers(fz.r, v ? v : root, &json, &err);
    ngx_defarm_fuzz_result(&fz, rc, &json, &err);

    v = ngx_defarm_json_get(root, "enriched_data");

    ngx_str_null(&err);
    rc = ngx_defarm_enriched_data(fz.r, v ? v : root, &json, &err);
    ngx_defarm_fuzz_result(&fz, rc, &json, &err);

done:

    ngx_defarm_fuzz_end(&fz);

    return 0;
}
