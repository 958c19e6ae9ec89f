
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "ngx_defarm_pg.h"
#include "ngx_defarm_json.h"


/*
 * A JSON array of strings as a PostgreSQL array literal for a text[]
 * parameter.  Every element is double-quoted, with quotes and backslashes
 * escaped: unquoted, an element spelt NULL would be stored as SQL NULL,
 * and one with a comma or a brace would split or break the literal.
 * The caller has checked that every element is a string.
 */

ngx_int_t
ngx_defarm_pg_text_array(ngx_pool_t *pool, ngx_defarm_json_t *array,
    ngx_str_t *out)
{
    u_char             *p;
    size_t              len, i;
    ngx_defarm_json_t  *e;

    len = 2;

    for (e = array->child; e; e = e->next) {
        len += 2 * e->str.len + 3;
    }

    p = ngx_pnalloc(pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    out->data = p;
    *p++ = '{';

    for (e = array->child; e; e = e->next) {

        if (e != array->child) {
            *p++ = ',';
        }

        *p++ = '"';

        for (i = 0; i < e->str.len; i++) {
            if (e->str.data[i] == '"' || e->str.data[i] == '\\') {
                *p++ = '\\';
            }

            *p++ = e->str.data[i];
        }

        *p++ = '"';
    }

    *p++ = '}';
    out->len = p - out->data;

    return NGX_OK;
}
