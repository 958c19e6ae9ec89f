
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "items/ngx_defarm_items.h"
#include "ngx_defarm_response.h"


/*
 * Identifiers, checked on every write (the original checked them only on
 * push-local) and rendered complete for PostgreSQL: namespace (default
 * generic) from the original's list, a non-blank key and value, id_type
 * Canonical or Contextual (case-insensitive; default Contextual), scope
 * user, organization or circuit (Contextual; default user), verified and
 * verification_date (Canonical).  A Canonical identifier's key is its
 * registry, and the registries the original knew have their rules.  Each
 * refusal is a 400 naming the identifier and the rule.
 */


typedef struct {
    const char                *registry;
    const char                *rule;
    ngx_uint_t               (*valid)(ngx_str_t *v);
} ngx_defarm_registry_t;


static ngx_uint_t ngx_defarm_registry_sisbov(ngx_str_t *v);
static ngx_uint_t ngx_defarm_registry_cpf(ngx_str_t *v);
static ngx_uint_t ngx_defarm_registry_cnpj(ngx_str_t *v);
static ngx_uint_t ngx_defarm_registry_car(ngx_str_t *v);
static ngx_uint_t ngx_defarm_registry_nirf(ngx_str_t *v);
static ngx_uint_t ngx_defarm_registry_min8(ngx_str_t *v);
static ngx_uint_t ngx_defarm_registry_min10(ngx_str_t *v);


static ngx_defarm_registry_t  ngx_defarm_registries[] = {
    { "sisbov", "\"BR\" followed by 12 digits", ngx_defarm_registry_sisbov },
    { "cpf", "11 digits, not all the same", ngx_defarm_registry_cpf },
    { "cnpj", "14 digits, not all the same", ngx_defarm_registry_cnpj },
    { "car", "\"BR-\" and 9 to 44 characters in all",
      ngx_defarm_registry_car },
    { "nirf", "at least 8 digits", ngx_defarm_registry_nirf },
    { "ie", "at least 8 characters", ngx_defarm_registry_min8 },
    { "rfid", "at least 10 characters", ngx_defarm_registry_min10 },
    { NULL, NULL, NULL }
};


static const char  *ngx_defarm_namespaces[] = {
    "bovino", "aves", "suino", "soja", "milho", "algodao", "cafe", "leite",
    "generic", NULL
};


static const char  *ngx_defarm_scopes[] = {
    "user", "organization", "circuit", NULL
};


/* registry rules */


static ngx_uint_t
ngx_defarm_digits(ngx_str_t *v, ngx_uint_t strip, ngx_uint_t *same)
{
    u_char      first;
    size_t      i;
    ngx_uint_t  n;

    n = 0;
    first = 0;
    *same = 1;

    for (i = 0; i < v->len; i++) {
        if (v->data[i] >= '0' && v->data[i] <= '9') {
            if (n++ == 0) {
                first = v->data[i];

            } else if (v->data[i] != first) {
                *same = 0;
            }

        } else if (!strip) {
            return 0;
        }
    }

    return n;
}


static ngx_uint_t
ngx_defarm_registry_sisbov(ngx_str_t *v)
{
    ngx_str_t   rest;
    ngx_uint_t  same;

    if (v->len != 14 || v->data[0] != 'B' || v->data[1] != 'R') {
        return 0;
    }

    rest.data = v->data + 2;
    rest.len = 12;

    return ngx_defarm_digits(&rest, 0, &same) == 12;
}


static ngx_uint_t
ngx_defarm_registry_cpf(ngx_str_t *v)
{
    ngx_uint_t  same;

    return ngx_defarm_digits(v, 1, &same) == 11 && !same;
}


static ngx_uint_t
ngx_defarm_registry_cnpj(ngx_str_t *v)
{
    ngx_uint_t  same;

    return ngx_defarm_digits(v, 1, &same) == 14 && !same;
}


static ngx_uint_t
ngx_defarm_registry_car(ngx_str_t *v)
{
    return v->len >= 9 && v->len <= 44
           && ngx_strncmp(v->data, "BR-", 3) == 0;
}


static ngx_uint_t
ngx_defarm_registry_nirf(ngx_str_t *v)
{
    ngx_uint_t  same;

    return ngx_defarm_digits(v, 1, &same) >= 8;
}


static ngx_uint_t
ngx_defarm_registry_min8(ngx_str_t *v)
{
    return v->len >= 8;
}


static ngx_uint_t
ngx_defarm_registry_min10(ngx_str_t *v)
{
    return v->len >= 10;
}


/* the fields */


static ngx_uint_t
ngx_defarm_one_of(ngx_str_t *s, const char **list)
{
    ngx_uint_t  i;

    for (i = 0; list[i]; i++) {
        if (s->len == ngx_strlen(list[i])
            && ngx_strncmp(s->data, list[i], s->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


static ngx_uint_t
ngx_defarm_blank(ngx_str_t *s)
{
    size_t  i;

    for (i = 0; i < s->len; i++) {
        if (s->data[i] != ' ' && s->data[i] != '\t' && s->data[i] != '\n'
            && s->data[i] != '\r')
        {
            return 0;
        }
    }

    return 1;
}


/* "YYYY-MM-DDTHH:MM:SS", digits already checked: a real date and time */

static ngx_uint_t
ngx_defarm_date_valid(u_char *p)
{
    ngx_uint_t  year, month, day, hour, min, sec, days;

    year = ngx_atoi(p, 4);
    month = ngx_atoi(p + 5, 2);
    day = ngx_atoi(p + 8, 2);
    hour = ngx_atoi(p + 11, 2);
    min = ngx_atoi(p + 14, 2);
    sec = ngx_atoi(p + 17, 2);

    if (year < 1 || month < 1 || month > 12 || day < 1 || hour > 23
        || min > 59 || sec > 59)
    {
        return 0;
    }

    if (month == 2) {
        days = ((year % 4 == 0 && year % 100 != 0) || year % 400 == 0)
               ? 29 : 28;

    } else {
        days = 30 + ((month + (month > 7)) & 1);
    }

    return day <= days;
}


/* YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM) */

static ngx_uint_t
ngx_defarm_rfc3339(ngx_str_t *s)
{
    u_char      *p, *last;
    ngx_uint_t   i;

    static const char  shape[] = "dddd-dd-ddTdd:dd:dd";

    if (s->len < sizeof(shape)) {
        return 0;
    }

    p = s->data;
    last = p + s->len;

    for (i = 0; i < sizeof(shape) - 1; i++, p++) {
        if (shape[i] == 'd' ? (*p < '0' || *p > '9') : *p != shape[i]) {
            return 0;
        }
    }

    /* the fields in range, as PostgreSQL will read them */

    if (!ngx_defarm_date_valid(s->data)) {
        return 0;
    }

    if (*p == '.') {
        for (p++; p < last && *p >= '0' && *p <= '9'; p++) { /* void */ }
    }

    if (p < last && *p == 'Z') {
        return p + 1 == last;
    }

    return last - p == 6 && (*p == '+' || *p == '-')
           && p[1] >= '0' && p[1] <= '9' && p[2] >= '0' && p[2] <= '9'
           && p[3] == ':'
           && p[4] >= '0' && p[4] <= '9' && p[5] >= '0' && p[5] <= '9'
           && (p[1] - '0') * 10 + (p[2] - '0') <= 15
           && (p[4] - '0') * 10 + (p[5] - '0') <= 59;
}


/* "Identifier <n>: <what is wrong>" into *err; NGX_DECLINED: invalid */

static ngx_int_t
ngx_defarm_identifier_error(ngx_http_request_t *r, ngx_str_t *err,
    ngx_uint_t n, const char *fmt, ...)
{
    u_char   buf[320], *p;
    va_list  args;

    p = ngx_snprintf(buf, sizeof(buf), "Identifier %ui: ", n + 1);

    va_start(args, fmt);
    p = ngx_vslprintf(p, buf + sizeof(buf), fmt, args);
    va_end(args);

    return ngx_defarm_invalid(r, err, "%*s", (size_t) (p - buf), buf);
}


static ngx_int_t
ngx_defarm_identifier_string(ngx_http_request_t *r, ngx_str_t *err,
    ngx_uint_t n, ngx_defarm_json_t *id, const char *name, size_t max,
    ngx_str_t *out)
{
    ngx_str_t           field;
    ngx_defarm_json_t  *v;

    field.data = (u_char *) name;
    field.len = ngx_strlen(name);

    v = ngx_defarm_json_get(id, name);

    if (v == NULL || v->type == NGX_DEFARM_JSON_NULL) {
        ngx_str_null(out);
        return NGX_OK;
    }

    if (v->type != NGX_DEFARM_JSON_STRING) {
        return ngx_defarm_identifier_error(r, err, n, "\"%V\" must be a string",
                                           &field);
    }

    if (v->str.len > max) {
        return ngx_defarm_identifier_error(r, err, n, "\"%V\" is too long",
                                           &field);
    }

    *out = v->str;

    return NGX_OK;
}


ngx_int_t
ngx_defarm_identifiers(ngx_http_request_t *r, ngx_defarm_json_t *list,
    ngx_str_t *json, ngx_str_t *err)
{
    ngx_int_t                  rc;
    ngx_str_t                  ns, key, value, type, scope, date;
    ngx_uint_t                 n, canonical;
    ngx_defarm_json_t         *id, *v;
    ngx_defarm_registry_t     *reg;
    ngx_defarm_json_writer_t  *w;

    if (list == NULL || list->type != NGX_DEFARM_JSON_ARRAY) {
        return ngx_defarm_invalid(r, err, "\"identifiers\" must be an "
                                  "array");
    }

    if (list->count > NGX_DEFARM_MAX_IDENTIFIERS) {
        return ngx_defarm_invalid(r, err, "At most %d identifiers",
                                  NGX_DEFARM_MAX_IDENTIFIERS);
    }

    w = ngx_defarm_json_writer(r);
    if (w == NULL) {
        return NGX_ERROR;
    }

    ngx_defarm_jw_array_open(w);

    for (n = 0, id = list->child; id; id = id->next, n++) {

        if (id->type != NGX_DEFARM_JSON_OBJECT) {
            return ngx_defarm_identifier_error(r, err, n, "must be an object");
        }

        if ((rc = ngx_defarm_identifier_string(r, err, n, id, "namespace", 32,
                                               &ns)) != NGX_OK
            || (rc = ngx_defarm_identifier_string(r, err, n, id, "key", 128,
                                                  &key)) != NGX_OK
            || (rc = ngx_defarm_identifier_string(r, err, n, id, "value", 512,
                                                  &value)) != NGX_OK
            || (rc = ngx_defarm_identifier_string(r, err, n, id, "id_type", 16,
                                                  &type)) != NGX_OK
            || (rc = ngx_defarm_identifier_string(r, err, n, id, "scope", 16,
                                                  &scope)) != NGX_OK
            || (rc = ngx_defarm_identifier_string(r, err, n, id,
                                                  "verification_date", 40,
                                                  &date)) != NGX_OK)
        {
            return rc;
        }

        if (ns.data == NULL) {
            ngx_str_set(&ns, "generic");

        } else if (!ngx_defarm_one_of(&ns, ngx_defarm_namespaces)) {
            return ngx_defarm_identifier_error(r, err, n,
                       "unknown namespace \"%V\" (bovino, aves, suino, "
                       "soja, milho, algodao, cafe, leite, generic)", &ns);
        }

        if (key.data == NULL || ngx_defarm_blank(&key)) {
            return ngx_defarm_identifier_error(r, err, n,
                                               "\"key\" is required");
        }

        if (value.data == NULL || ngx_defarm_blank(&value)) {
            return ngx_defarm_identifier_error(r, err, n,
                                               "\"value\" is required");
        }

        canonical = 0;

        if (type.data) {
            if (type.len == 9
                && ngx_strncasecmp(type.data, (u_char *) "canonical", 9)
                   == 0)
            {
                canonical = 1;

            } else if (!(type.len == 10
                         && ngx_strncasecmp(type.data,
                                            (u_char *) "contextual", 10)
                            == 0))
            {
                return ngx_defarm_identifier_error(r, err, n,
                           "invalid id_type \"%V\" (Canonical or "
                           "Contextual)", &type);
            }
        }

        if (canonical) {
            for (reg = ngx_defarm_registries; reg->registry; reg++) {
                if (key.len == ngx_strlen(reg->registry)
                    && ngx_strncasecmp(key.data, (u_char *) reg->registry,
                                       key.len) == 0
                    && !reg->valid(&value))
                {
                    return ngx_defarm_identifier_error(r, err, n,
                               "a %s must be %s, not \"%V\"",
                               reg->registry, reg->rule, &value);
                }
            }

            if (date.data && !ngx_defarm_rfc3339(&date)) {
                return ngx_defarm_identifier_error(r, err, n,
                           "\"verification_date\" \"%V\" is not an RFC 3339 "
                           "time", &date);
            }

        } else if (scope.data == NULL) {
            ngx_str_set(&scope, "user");

        } else if (!ngx_defarm_one_of(&scope, ngx_defarm_scopes)) {
            return ngx_defarm_identifier_error(r, err, n,
                       "invalid scope \"%V\" (user, organization, circuit)",
                       &scope);
        }

        v = ngx_defarm_json_get(id, "verified");

        if (v && v->type != NGX_DEFARM_JSON_BOOL
            && v->type != NGX_DEFARM_JSON_NULL)
        {
            return ngx_defarm_identifier_error(r, err, n,
                                               "\"verified\" must be true or "
                                               "false");
        }

        ngx_defarm_jw_map_open(w);
        ngx_defarm_jw_key(w, "namespace");
        ngx_defarm_jw_str(w, &ns);
        ngx_defarm_jw_key(w, "key");
        ngx_defarm_jw_str(w, &key);
        ngx_defarm_jw_key(w, "value");
        ngx_defarm_jw_str(w, &value);
        ngx_defarm_jw_key(w, "id_type");
        ngx_defarm_jw_cstr(w, canonical ? "Canonical" : "Contextual");

        if (canonical) {
            ngx_defarm_jw_key(w, "verified");
            ngx_defarm_jw_bool(w, v && v->type == NGX_DEFARM_JSON_BOOL
                                  && v->boolean);
            ngx_defarm_jw_key(w, "verification_date");
            ngx_defarm_jw_str_or_null(w, &date);

        } else {
            ngx_defarm_jw_key(w, "scope");
            ngx_defarm_jw_str(w, &scope);
        }

        ngx_defarm_jw_map_close(w);
    }

    ngx_defarm_jw_array_close(w);

    return ngx_defarm_json_text(w, json);
}


/* enriched data: an object, no blank key, no null value */

ngx_int_t
ngx_defarm_enriched_data(ngx_http_request_t *r, ngx_defarm_json_t *data,
    ngx_str_t *json, ngx_str_t *err)
{
    ngx_defarm_json_t  *m;

    if (data->type != NGX_DEFARM_JSON_OBJECT) {
        return ngx_defarm_invalid(r, err, "\"enriched_data\" must be an "
                                  "object");
    }

    for (m = data->child; m; m = m->next) {

        if (ngx_defarm_blank(&m->key)) {
            return ngx_defarm_invalid(r, err, "\"enriched_data\" has a "
                                      "blank key");
        }

        if (m->type == NGX_DEFARM_JSON_NULL) {
            return ngx_defarm_invalid(r, err, "\"enriched_data.%V\" must "
                                      "not be null", &m->key);
        }
    }

    return ngx_defarm_json_render(r, data, json);
}


/*
 * A validation message, in the request pool: NGX_DECLINED.  Messages
 * quote input and are cut at NGX_DEFARM_MAX_INVALID bytes, perhaps inside
 * a character: repaired here, since a batch embeds them in the JSON it
 * sends to PostgreSQL, which refuses a broken byte for the whole batch.
 */

ngx_int_t
ngx_defarm_invalid(ngx_http_request_t *r, ngx_str_t *err, const char *fmt,
    ...)
{
    u_char   buf[NGX_DEFARM_MAX_INVALID], *p;
    va_list  args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, buf + sizeof(buf), fmt, args);
    va_end(args);

    err->len = p - buf;
    err->data = ngx_pnalloc(r->pool, err->len);
    if (err->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(err->data, buf, err->len);
    ngx_defarm_utf8_repair(err);

    return NGX_DECLINED;
}
