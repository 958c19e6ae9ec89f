
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "items/ngx_defarm_items.h"


/*
 * DFID-YYYYMMDD-NNNNNN-CHK (the original's format): an 8-digit date, a
 * sequence of at least 6 digits, and CHK, the upper-case hex (no padding)
 * of h mod 65535, where h = h * 31 + byte over date and sequence, as a
 * uint32.  PostgreSQL makes them (sql/004_items.sql); every path parameter
 * is checked here first, so a malformed one is a 400, not a query.
 */


ngx_uint_t
ngx_defarm_dfid_valid(ngx_str_t *dfid)
{
    u_char     *p, *last, *seq, *dash, chk[8];
    size_t      n;
    uint32_t    h;

    p = dfid->data;
    last = p + dfid->len;

    if (dfid->len < sizeof("DFID-00000000-000000-0") - 1 || dfid->len > 64
        || ngx_strncmp(p, "DFID-", 5) != 0)
    {
        return 0;
    }

    p += 5;

    for (n = 0; n < 8; n++) {
        if (p[n] < '0' || p[n] > '9') {
            return 0;
        }
    }

    if (p[8] != '-') {
        return 0;
    }

    seq = p + 9;
    dash = ngx_strlchr(seq, last, '-');

    if (dash == NULL || dash - seq < 6) {
        return 0;
    }

    for (p = seq; p < dash; p++) {
        if (*p < '0' || *p > '9') {
            return 0;
        }
    }

    h = 0;

    for (p = dfid->data + 5; p < dash; p++) {
        if (*p != '-') {
            h = h * 31 + *p;
        }
    }

    n = ngx_sprintf(chk, "%uXD", (uint32_t) (h % 65535)) - chk;

    return (size_t) (last - dash - 1) == n
           && ngx_strncmp(dash + 1, chk, n) == 0;
}
