
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "pg/ngx_defarm_pg.h"
#include "ngx_defarm_response.h"
#include "ngx_defarm_json.h"


/*
 * A refusal raised by SQL: a function that must refuse in the middle of
 * a transaction (a charge the balance cannot pay, a tier limit reached, a
 * storage adapter that cannot store) raises SQLSTATE DF<status> (4xx or
 * 503), which rolls the whole transaction back, with
 * the error_kind as HINT, the message as MESSAGE and the answer's extra
 * fields as a JSON object in DETAIL:
 *
 *     RAISE EXCEPTION USING ERRCODE = 'DF402', HINT = 'insufficient_credits',
 *         MESSAGE = '...', DETAIL = '{"required": 2, "balance": 1}';
 *
 * The kind must be one of ngx_defarm_err_kinds: a typo is a 500 in the
 * log, not an answer made up.
 */


static void ngx_defarm_pg_raised_fields(ngx_http_request_t *r,
    ngx_defarm_json_writer_t *w, void *data);


ngx_int_t
ngx_defarm_pg_raised(ngx_http_request_t *r, PGresult *res)
{
    char                      *state, *hint, *msg, *detail;
    ngx_int_t                  status, kind;
    ngx_str_t                  name, err;
    ngx_uint_t                 code;
    ngx_defarm_ctx_t          *ctx;
    ngx_defarm_json_t         *fields;
    ngx_defarm_json_parser_t  *ps;

    state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
    msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);

    status = ngx_atoi((u_char *) state + 2, 3);

    kind = NGX_ERROR;

    if (hint) {
        name.data = (u_char *) hint;
        name.len = ngx_strlen(hint);
        kind = ngx_defarm_error_kind(&name);
    }

    if (((status < 400 || status > 499) && status != 503)
        || kind == NGX_ERROR || msg == NULL)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "defarm: SQL raised %s with an unknown kind \"%s\"",
                      state, hint ? hint : "");

        return ngx_defarm_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                NGX_DEFARM_ERR_DB_ERROR, "Database error");
    }

    ctx = ngx_defarm_get_ctx(r);

    if (detail && detail[0] == '{' && ctx) {
        ps = ngx_defarm_json_parser(r->pool, 4, 64, 16384);
        if (ps == NULL
            || ngx_defarm_json_feed(ps, (u_char *) detail,
                                    ngx_strlen(detail)) != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (ngx_defarm_json_end(ps, &fields, &err, &code) == NGX_OK
            && fields->type == NGX_DEFARM_JSON_OBJECT)
        {
            ctx->error_fields = ngx_defarm_pg_raised_fields;
            ctx->error_data = fields;
        }
    }

    return ngx_defarm_error(r, status, kind, "%s", msg);
}


static void
ngx_defarm_pg_raised_fields(ngx_http_request_t *r,
    ngx_defarm_json_writer_t *w, void *data)
{
    ngx_defarm_json_t  *fields = data;

    ngx_defarm_json_t  *f;

    for (f = fields->child; f; f = f->next) {
        ngx_defarm_jw_str(w, &f->key);
        ngx_defarm_jw_value(w, f);
    }
}
