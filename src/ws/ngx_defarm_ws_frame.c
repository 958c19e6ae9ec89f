
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "ws/ngx_defarm_ws.h"

#include <openssl/evp.h>


/*
 * RFC 6455 framing, apart from any connection so that it can be fuzzed:
 * a client frame's header read and judged (what §5 says a server must
 * refuse, as the close code to refuse it with), a server frame's header
 * written, the handshake's accept key (§4.2.2).
 */


#define NGX_DEFARM_WS_GUID  "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


/*
 * NGX_AGAIN: fewer bytes than the header; NGX_OK: f is the header (the
 * payload may not all be there yet); NGX_DECLINED: f->error says why the
 * frame is refused.
 */

ngx_int_t
ngx_defarm_ws_frame_parse(u_char *p, size_t n, ngx_defarm_ws_frame_t *f)
{
    size_t    need;
    uint64_t  len;

    if (n < 2) {
        return NGX_AGAIN;
    }

    f->fin = p[0] >> 7;
    f->opcode = p[0] & 0x0f;
    f->error = 0;

    /* no extension was negotiated: the reserved bits must be 0 */

    if (p[0] & 0x70) {
        f->error = NGX_DEFARM_WS_PROTOCOL;
        return NGX_DECLINED;
    }

    switch (f->opcode) {

    case NGX_DEFARM_WS_CONT:
    case NGX_DEFARM_WS_TEXT:
    case NGX_DEFARM_WS_BINARY:
        break;

    case NGX_DEFARM_WS_CLOSE:
    case NGX_DEFARM_WS_PING:
    case NGX_DEFARM_WS_PONG:

        /* §5.5: control frames are short and never fragmented */

        if (!f->fin || (p[1] & 0x7f) > 125) {
            f->error = NGX_DEFARM_WS_PROTOCOL;
            return NGX_DECLINED;
        }

        break;

    default:
        f->error = NGX_DEFARM_WS_PROTOCOL;
        return NGX_DECLINED;
    }

    /* §5.1: a client masks every frame */

    if (!(p[1] & 0x80)) {
        f->error = NGX_DEFARM_WS_PROTOCOL;
        return NGX_DECLINED;
    }

    len = p[1] & 0x7f;

    need = (len == 126) ? 8 : (len == 127) ? 14 : 6;

    if (n < need) {
        return NGX_AGAIN;
    }

    if (len == 126) {
        len = ((uint64_t) p[2] << 8) | p[3];

        /* §5.2: the minimal number of bytes must encode the length */

        if (len < 126) {
            f->error = NGX_DEFARM_WS_PROTOCOL;
            return NGX_DECLINED;
        }

    } else if (len == 127) {
        len = ((uint64_t) p[2] << 56) | ((uint64_t) p[3] << 48)
              | ((uint64_t) p[4] << 40) | ((uint64_t) p[5] << 32)
              | ((uint64_t) p[6] << 24) | ((uint64_t) p[7] << 16)
              | ((uint64_t) p[8] << 8) | p[9];

        if (len <= 0xffff || (len >> 63)) {
            f->error = NGX_DEFARM_WS_PROTOCOL;
            return NGX_DECLINED;
        }
    }

    f->len = len;
    f->header = need;
    ngx_memcpy(f->mask, p + need - 4, 4);

    return NGX_OK;
}


void
ngx_defarm_ws_unmask(u_char *p, size_t n, u_char *mask)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        p[i] ^= mask[i & 3];
    }
}


/* a server frame's header, final and unmasked: its length */

size_t
ngx_defarm_ws_frame_header(u_char *buf, ngx_uint_t opcode, size_t len)
{
    buf[0] = (u_char) (0x80 | opcode);

    if (len < 126) {
        buf[1] = (u_char) len;
        return 2;
    }

    if (len <= 0xffff) {
        buf[1] = 126;
        buf[2] = (u_char) (len >> 8);
        buf[3] = (u_char) len;
        return 4;
    }

    buf[1] = 127;
    buf[2] = 0;
    buf[3] = 0;
    buf[4] = 0;
    buf[5] = 0;
    buf[6] = (u_char) (len >> 24);
    buf[7] = (u_char) (len >> 16);
    buf[8] = (u_char) (len >> 8);
    buf[9] = (u_char) len;

    return 10;
}


/* §7.4: the codes a peer may send in its close frame */

ngx_uint_t
ngx_defarm_ws_close_code_valid(ngx_uint_t code)
{
    if (code >= 3000 && code <= 4999) {
        return 1;
    }

    return (code >= 1000 && code <= 1011 && code != 1004 && code != 1005
            && code != 1006);
}


/*
 * Sec-WebSocket-Key must be the base64 of 16 bytes; the answer is the
 * base64 of SHA-1(key + GUID).  NGX_OK, or NGX_DECLINED for a bad key.
 */

ngx_int_t
ngx_defarm_ws_accept(ngx_str_t *key, u_char *accept)
{
    u_char        buf[24 + sizeof(NGX_DEFARM_WS_GUID) - 1];
    u_char        raw[18], sha[EVP_MAX_MD_SIZE];
    ngx_str_t     src, dst;
    unsigned int  shalen;

    if (key->len != 24) {
        return NGX_DECLINED;
    }

    src = *key;
    dst.data = raw;

    if (ngx_decode_base64(&dst, &src) != NGX_OK || dst.len != 16) {
        return NGX_DECLINED;
    }

    ngx_memcpy(buf, key->data, 24);
    ngx_memcpy(buf + 24, NGX_DEFARM_WS_GUID, sizeof(NGX_DEFARM_WS_GUID) - 1);

    if (!EVP_Digest(buf, sizeof(buf), sha, &shalen, EVP_sha1(), NULL)) {
        return NGX_ERROR;
    }

    src.data = sha;
    src.len = shalen;
    dst.data = accept;

    ngx_encode_base64(&dst, &src);

    return NGX_OK;
}
