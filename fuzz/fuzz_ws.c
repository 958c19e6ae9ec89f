
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "fuzz.h"
#include "ws/ngx_defarm_ws.h"
#include "ngx_defarm_response.h"


/*
 * RFC 6455 framing (src/ws/ngx_defarm_ws_frame.c).  Byte 0 selects:
 *   0: a client frame's header, parsed, and its payload unmasked;
 *   1: UTF-8, checked against a plain decoder written here (§8.1: the
 *      two must agree on every input);
 *   2: a Sec-WebSocket-Key and its accept key;
 *   3: a server frame header written for a length, read back, and a
 *      close code judged.
 */


/* a reference: decode each character whole, then judge its value */

static ngx_int_t
ngx_defarm_fuzz_utf8(u_char *p, size_t n)
{
    size_t    i, k, len;
    uint32_t  cp, min;

    for (i = 0; i < n; i += len) {
        if (p[i] < 0x80) {
            len = 1;
            continue;
        }

        if ((p[i] & 0xe0) == 0xc0) {
            len = 2; cp = p[i] & 0x1f; min = 0x80;

        } else if ((p[i] & 0xf0) == 0xe0) {
            len = 3; cp = p[i] & 0x0f; min = 0x800;

        } else if ((p[i] & 0xf8) == 0xf0) {
            len = 4; cp = p[i] & 0x07; min = 0x10000;

        } else {
            return NGX_ERROR;
        }

        if (n - i < len) {
            return NGX_ERROR;
        }

        for (k = 1; k < len; k++) {
            if ((p[i + k] & 0xc0) != 0x80) {
                return NGX_ERROR;
            }

            cp = (cp << 6) | (p[i + k] & 0x3f);
        }

        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void
ngx_defarm_fuzz_frame(u_char *p, size_t n)
{
    size_t                 avail;
    ngx_int_t              rc;
    ngx_defarm_ws_frame_t  f;

    ngx_memzero(&f, sizeof(ngx_defarm_ws_frame_t));

    rc = ngx_defarm_ws_frame_parse(p, n, &f);

    ngx_defarm_fuzz_assert(rc == NGX_OK || rc == NGX_AGAIN
                           || rc == NGX_DECLINED);

    if (rc == NGX_DECLINED) {
        ngx_defarm_fuzz_assert(f.error != 0);
        return;
    }

    if (rc == NGX_AGAIN) {
        ngx_defarm_fuzz_assert(n < 14);
        return;
    }

    ngx_defarm_fuzz_assert(f.header == 6 || f.header == 8 || f.header == 14);
    ngx_defarm_fuzz_assert(f.header <= n);
    ngx_defarm_fuzz_assert((f.len >> 63) == 0);

    if (f.opcode >= 8) {
        ngx_defarm_fuzz_assert(f.fin && f.len <= 125);
    }

    avail = n - f.header;

    if (f.len < avail) {
        avail = f.len;
    }

    ngx_defarm_ws_unmask(p + f.header, avail, f.mask);
}


static void
ngx_defarm_fuzz_header(const uint8_t *data, size_t size)
{
    size_t                 len, n, i;
    u_char                 buf[14];
    ngx_int_t              rc;
    ngx_defarm_ws_frame_t  f;

    if (size < 6) {
        return;
    }

    len = 0;

    for (i = 0; i < 4; i++) {
        len = (len << 8) | data[i];
    }

    len >>= data[4] & 31;

    n = ngx_defarm_ws_frame_header(buf, NGX_DEFARM_WS_TEXT, len);
    ngx_defarm_fuzz_assert(n == 2 || n == 4 || n == 10);

    /* read back as a client's would be: the mask bit set, a zero mask */

    ngx_memzero(buf + n, 4);
    buf[1] |= 0x80;

    rc = ngx_defarm_ws_frame_parse(buf, n + 4, &f);
    ngx_defarm_fuzz_assert(rc == NGX_OK && f.len == len && f.fin
                           && f.opcode == NGX_DEFARM_WS_TEXT);

    (void) ngx_defarm_ws_close_code_valid((data[5] << 8) | data[4]);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char             *p, accept[NGX_DEFARM_WS_ACCEPT_LEN];
    ngx_int_t           rc;
    ngx_str_t           key;
    ngx_defarm_fuzz_t   fz;

    if (size < 1) {
        return 0;
    }

    if (ngx_defarm_fuzz_begin(&fz) != NGX_OK) {
        return 0;
    }

    p = ngx_defarm_fuzz_copy(&fz, data + 1, size - 1);
    ngx_defarm_fuzz_assert(p != NULL);

    switch (data[0] & 3) {

    case 0:
        ngx_defarm_fuzz_frame(p, size - 1);
        break;

    case 1:
        ngx_defarm_fuzz_assert(ngx_defarm_utf8_valid(p, size - 1)
                               == ngx_defarm_fuzz_utf8(p, size - 1));
        break;

    case 2:
        key.data = p;
        key.len = size - 1;

        rc = ngx_defarm_ws_accept(&key, accept);
        ngx_defarm_fuzz_assert(rc == NGX_OK || rc == NGX_DECLINED);

        if (rc == NGX_OK) {
            ngx_defarm_fuzz_assert(key.len == 24);
            ngx_defarm_fuzz_assert(accept[NGX_DEFARM_WS_ACCEPT_LEN - 1]
                                   == '=');
        }

        break;

    default:
        ngx_defarm_fuzz_header(data + 1, size - 1);
        break;
    }

    ngx_defarm_fuzz_end(&fz);

    return 0;
}
