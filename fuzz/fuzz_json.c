
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "fuzz.h"
#include "ngx_defarm_json.h"
#include "ngx_defarm_response.h"


/*
 * The streaming JSON parser as a request body reaches it: the input is
 * cut into pieces (as buffers arrive) and fed one by one, under limits
 * the input chooses.  A tree that parses is checked against its limits,
 * rendered, parsed again and rendered again (the same text both times),
 * and every accessor is run over it.  Every string and name in it is
 * strict UTF-8 (RFC 3629), as PostgreSQL, which is given it, requires.
 *
 *   byte 0: max_depth (1..16); byte 1: max_nodes (1..4096, a scale);
 *   byte 2: max_memory (64 bytes .. 1 MB); byte 3: the piece size
 *   (1..256; 0: the whole body at once); the rest: the body.
 */


static ngx_uint_t  ngx_defarm_fuzz_nodes;
static ngx_uint_t  ngx_defarm_fuzz_depth;


static void
ngx_defarm_fuzz_walk(ngx_defarm_fuzz_t *fz, ngx_defarm_json_t *v,
    ngx_uint_t depth)
{
    int64_t             n;
    ngx_uint_t          count;
    ngx_defarm_json_t  *c;
    u_char              key[16];

    ngx_defarm_fuzz_nodes++;

    if (v->type == NGX_DEFARM_JSON_ARRAY || v->type == NGX_DEFARM_JSON_OBJECT)
    {
        if (depth + 1 > ngx_defarm_fuzz_depth) {
            ngx_defarm_fuzz_depth = depth + 1;
        }
    }

    (void) ngx_defarm_json_type_name(v);

    if (v->type == NGX_DEFARM_JSON_NUMBER) {
        ngx_defarm_fuzz_assert(v->str.len && v->str.data[v->str.len] == '\0');
        (void) ngx_defarm_json_int(v, &n);
    }

    if (v->type == NGX_DEFARM_JSON_STRING) {
        ngx_defarm_fuzz_assert(v->str.data[v->str.len] == '\0');
        ngx_defarm_fuzz_assert(ngx_strlen(v->str.data) == v->str.len);
        ngx_defarm_fuzz_assert(ngx_defarm_utf8_valid(v->str.data, v->str.len)
                               == NGX_OK);
    }

    if (v->key.data) {
        ngx_defarm_fuzz_assert(ngx_defarm_utf8_valid(v->key.data, v->key.len)
                               == NGX_OK);
    }

    count = 0;

    for (c = v->child; c; c = c->next) {
        ngx_defarm_fuzz_assert(c->parent == v);

        if (v->type == NGX_DEFARM_JSON_OBJECT && c->key.len < sizeof(key)) {
            ngx_memcpy(key, c->key.data, c->key.len);
            key[c->key.len] = '\0';

            /* the first member of that name */
            ngx_defarm_fuzz_assert(ngx_defarm_json_get(v, (char *) key)
                                   != NULL);
            (void) ngx_defarm_json_cstr(fz->pool, v, (char *) key);
        }

        ngx_defarm_fuzz_walk(fz, c, depth + 1);
        count++;
    }

    ngx_defarm_fuzz_assert(count == v->count);
}


static ngx_defarm_json_t *
ngx_defarm_fuzz_parse(ngx_defarm_fuzz_t *fz, const uint8_t *data,
    size_t size, size_t piece, ngx_uint_t depth, ngx_uint_t nodes,
    size_t memory, ngx_uint_t *status)
{
    size_t                     n;
    u_char                    *buf;
    ngx_int_t                  rc;
    ngx_str_t                  err;
    ngx_defarm_json_t         *root;
    ngx_defarm_json_parser_t  *ps;

    ps = ngx_defarm_json_parser(fz->pool, depth, nodes, memory);
    ngx_defarm_fuzz_assert(ps != NULL);

    if (piece == 0) {
        piece = size;
    }

    while (size) {
        n = ngx_min(size, piece);

        buf = ngx_defarm_fuzz_copy(fz, data, n);
        ngx_defarm_fuzz_assert(buf != NULL);

        ngx_defarm_fuzz_assert(ngx_defarm_json_feed(ps, buf, n) == NGX_OK);

        data += n;
        size -= n;
    }

    root = NULL;
    *status = 0;

    rc = ngx_defarm_json_end(ps, &root, &err, status);
    ngx_defarm_fuzz_assert(rc == NGX_OK || rc == NGX_DECLINED);

    if (rc == NGX_DECLINED) {
        ngx_defarm_fuzz_assert(*status == NGX_HTTP_BAD_REQUEST
                               || *status == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE);
        ngx_defarm_fuzz_assert(err.len > 0);
        return NULL;
    }

    ngx_defarm_fuzz_assert(root != NULL);

    return root;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t              piece, memory;
    ngx_str_t           text, again;
    ngx_uint_t          depth, nodes, status;
    ngx_defarm_fuzz_t   fz;
    ngx_defarm_json_t  *root, *copy;

    if (size < 4) {
        return 0;
    }

    depth = 1 + (data[0] & 0x0f);
    nodes = 1 + (ngx_uint_t) data[1] * 16;
    memory = (size_t) 64 << (data[2] % 15);
    piece = data[3];

    data += 4;
    size -= 4;

    if (ngx_defarm_fuzz_begin(&fz) != NGX_OK) {
        return 0;
    }

    root = ngx_defarm_fuzz_parse(&fz, data, size, piece, depth, nodes, memory,
                                 &status);

    if (root) {
        ngx_defarm_fuzz_nodes = 0;
        ngx_defarm_fuzz_depth = 0;
        ngx_defarm_fuzz_walk(&fz, root, 0);

        ngx_defarm_fuzz_assert(ngx_defarm_fuzz_nodes <= nodes);
        ngx_defarm_fuzz_assert(ngx_defarm_fuzz_depth <= depth);

        /* what the parser took, rendered, is JSON that parses the same */

        ngx_defarm_fuzz_assert(ngx_defarm_json_render(fz.r, root, &text)
                               == NGX_OK);

        copy = ngx_defarm_fuzz_parse(&fz, text.data, text.len, 0, 64,
                                     1 << 20, (size_t) 1 << 30, &status);
        ngx_defarm_fuzz_assert(copy != NULL);

        ngx_defarm_fuzz_assert(ngx_defarm_json_render(fz.r, copy, &again)
                               == NGX_OK);
        ngx_defarm_fuzz_assert(text.len == again.len
                               && ngx_memcmp(text.data, again.data, text.len)
                                  == 0);
    }

    ngx_defarm_fuzz_end(&fz);

    return 0;
}
