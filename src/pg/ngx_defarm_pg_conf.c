
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "pg/ngx_defarm_pg.h"


/*
 * defarm_db "conninfo" [size=N] [queue=N] [batch=N] [queue_timeout=T]
 *           [connect_timeout=T] [retry_max=T] [metrics_interval=T];
 *
 * The connection string is parsed here, at configuration time, with
 * libpq's own parser, so "nginx -t" reports a bad one.  A host given by
 * name is resolved here too and passed as hostaddr: PQconnectStartParams
 * then never does a DNS look-up, which would block the worker.
 */


static ngx_int_t ngx_defarm_pg_add_param(ngx_array_t *kw, ngx_array_t *vals,
    const char *key, const char *value);
static char *ngx_defarm_pg_resolve(ngx_conf_t *cf, const char *host,
    const char *port, const char **addr);


static ngx_int_t
ngx_defarm_pg_add_param(ngx_array_t *kw, ngx_array_t *vals, const char *key,
    const char *value)
{
    const char  **k, **v;

    k = ngx_array_push(kw);
    v = ngx_array_push(vals);

    if (k == NULL || v == NULL) {
        return NGX_ERROR;
    }

    *k = key;
    *v = value;

    return NGX_OK;
}


static char *
ngx_defarm_pg_resolve(ngx_conf_t *cf, const char *host, const char *port,
    const char **addr)
{
    u_char     *p;
    size_t      len;
    ngx_url_t   u;

    len = ngx_strlen(host);

    /* a socket directory, or an address already */

    if (host[0] == '/' || host[0] == '@'
        || ngx_inet_addr((u_char *) host, len) != INADDR_NONE
        || ngx_strlchr((u_char *) host, (u_char *) host + len, ':'))
    {
        *addr = NULL;
        return NGX_CONF_OK;
    }

    if (ngx_strlchr((u_char *) host, (u_char *) host + len, ',')) {
        return "lists several hosts by name: give their addresses in "
               "\"hostaddr\" too, so that connecting never needs DNS";
    }

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url.data = (u_char *) host;
    u.url.len = len;
    u.default_port = (in_port_t) (port ? ngx_atoi((u_char *) port,
                                                  ngx_strlen(port))
                                       : 5432);
    u.no_port = 1;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "defarm_db: host \"%s\" could not be resolved%s%s",
                           host, u.err ? ": " : "", u.err ? u.err : "");
        return NGX_CONF_ERROR;
    }

    p = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN + 1);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    len = ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen, p,
                        NGX_SOCKADDR_STRLEN, 0);
    p[len] = '\0';

    *addr = (const char *) p;

    return NGX_CONF_OK;
}


char *
ngx_defarm_pg_set_db(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_defarm_pg_conf_t  **pcfp = (ngx_defarm_pg_conf_t **)
                                   ((u_char *) conf + cmd->offset);

    char                    *err, *rv;
    u_char                  *p;
    ngx_int_t                n;
    ngx_str_t               *value, s;
    ngx_uint_t               i, gss;
    ngx_array_t              kw, vals;
    const char              *host, *port, *hostaddr, *addr;
    PQconninfoOption        *opts, *o;
    ngx_defarm_pg_conf_t    *pcf;
    ngx_defarm_conf_msec_t   times[5];

    if (*pcfp) {
        return "is duplicate";
    }

    value = cf->args->elts;

    pcf = ngx_pcalloc(cf->pool, sizeof(ngx_defarm_pg_conf_t));
    if (pcf == NULL) {
        return NGX_CONF_ERROR;
    }

    pcf->conninfo = value[1];
    pcf->size = 8;
    pcf->queue = 256;
    pcf->batch = 16;
    pcf->queue_timeout = 1000;
    pcf->connect_timeout = 3000;
    pcf->retry_max = 2000;
    pcf->metrics_interval = 30000;

    times[0].name = "queue_timeout=";
    times[0].value = &pcf->queue_timeout;
    times[1].name = "connect_timeout=";
    times[1].value = &pcf->connect_timeout;
    times[2].name = "retry_max=";
    times[2].value = &pcf->retry_max;
    times[3].name = "metrics_interval=";
    times[3].value = &pcf->metrics_interval;
    times[4].name = NULL;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "size=", 5) == 0) {
            n = ngx_atoi(value[i].data + 5, value[i].len - 5);
            if (n < 1 || n > 1024) {
                goto invalid;
            }

            pcf->size = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "batch=", 6) == 0) {
            n = ngx_atoi(value[i].data + 6, value[i].len - 6);
            if (n < 1 || n > NGX_DEFARM_PG_MAX_BATCH) {
                goto invalid;
            }

            pcf->batch = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "queue=", 6) == 0) {
            n = ngx_atoi(value[i].data + 6, value[i].len - 6);
            if (n == NGX_ERROR || n > 65536) {
                goto invalid;
            }

            pcf->queue = n;
            continue;
        }

        if (ngx_defarm_conf_msec(&value[i], times) != NGX_OK) {
            goto invalid;
        }
    }

    opts = PQconninfoParse((const char *) value[1].data, &err);

    if (opts == NULL) {
        if (err == NULL) {
            return "cannot parse the connection string (out of memory)";
        }

        p = (u_char *) err + ngx_strlen(err);
        while (p > (u_char *) err && (p[-1] == '\n' || p[-1] == ' ')) {
            *--p = '\0';
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "defarm_db: invalid connection string: %s", err);
        PQfreemem(err);
        return NGX_CONF_ERROR;
    }

    if (ngx_array_init(&kw, cf->pool, 16, sizeof(char *)) != NGX_OK
        || ngx_array_init(&vals, cf->pool, 16, sizeof(char *)) != NGX_OK)
    {
        PQconninfoFree(opts);
        return NGX_CONF_ERROR;
    }

    host = NULL;
    port = NULL;
    hostaddr = NULL;
    gss = 0;
    rv = NGX_CONF_OK;

    for (o = opts; o->keyword; o++) {
        if (o->val == NULL) {
            continue;
        }

        /* copies in the configuration pool outlive libpq's array */

        s.len = ngx_strlen(o->val);
        s.data = ngx_pnalloc(cf->pool, s.len + 1);
        p = ngx_pnalloc(cf->pool, ngx_strlen(o->keyword) + 1);

        if (s.data == NULL || p == NULL) {
            rv = NGX_CONF_ERROR;
            break;
        }

        ngx_cpystrn(s.data, (u_char *) o->val, s.len + 1);
        ngx_cpystrn(p, (u_char *) o->keyword, ngx_strlen(o->keyword) + 1);

        if (ngx_strcmp(p, "service") == 0) {
            /* a service file could name hosts to resolve in the worker */
            rv = "cannot use \"service\": name the parameters themselves";
            break;
        }

        if (ngx_strcmp(p, "gssencmode") == 0) {
            gss = 1;
        }

        if (ngx_strcmp(p, "host") == 0) {
            host = (const char *) s.data;

        } else if (ngx_strcmp(p, "port") == 0) {
            port = (const char *) s.data;

        } else if (ngx_strcmp(p, "hostaddr") == 0) {
            hostaddr = (const char *) s.data;
        }

        if (ngx_defarm_pg_add_param(&kw, &vals, (const char *) p,
                                    (const char *) s.data)
            != NGX_OK)
        {
            rv = NGX_CONF_ERROR;
            break;
        }
    }

    PQconninfoFree(opts);

    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (host && hostaddr == NULL) {
        rv = ngx_defarm_pg_resolve(cf, host, port, &addr);
        if (rv != NGX_CONF_OK) {
            return rv;
        }

        if (addr
            && ngx_defarm_pg_add_param(&kw, &vals, "hostaddr", addr)
               != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    /*
     * GSSAPI encryption (libpq's default is to prefer it) may talk to a
     * KDC and DNS from inside connect: off unless asked for.
     */

    if (!gss
        && ngx_defarm_pg_add_param(&kw, &vals, "gssencmode", "disable")
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (ngx_defarm_pg_add_param(&kw, &vals, "fallback_application_name",
                                "ngx_defarm")
        != NGX_OK
        || ngx_defarm_pg_add_param(&kw, &vals, NULL, NULL) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    pcf->keywords = kw.elts;
    pcf->values = vals.elts;

    *pcfp = pcf;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "defarm_db: invalid parameter \"%V\"", &value[i]);

    return NGX_CONF_ERROR;
}


/*
 * Settings every session of the pool starts with ("-c name=value" in
 * libpq's options, after whatever options the connection string gave).
 */

ngx_int_t
ngx_defarm_pg_conf_settings(ngx_conf_t *cf, ngx_defarm_pg_conf_t *pcf,
    const char **settings)
{
    u_char       *p;
    size_t        len;
    ngx_uint_t    i, n, found;
    const char  **kw, **vals;

    for (n = 0; pcf->keywords[n]; n++) { /* void */ }

    kw = ngx_palloc(cf->pool, (n + 2) * sizeof(char *));
    vals = ngx_palloc(cf->pool, (n + 2) * sizeof(char *));
    if (kw == NULL || vals == NULL) {
        return NGX_ERROR;
    }

    found = n;

    for (i = 0; i < n; i++) {
        kw[i] = pcf->keywords[i];
        vals[i] = pcf->values[i];

        if (ngx_strcmp(kw[i], "options") == 0) {
            found = i;
        }
    }

    len = (found < n ? ngx_strlen(vals[found]) : 0) + 1;

    for (i = 0; settings[i]; i++) {
        len += sizeof(" -c ") - 1 + ngx_strlen(settings[i]);
    }

    p = ngx_pnalloc(cf->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    vals[found] = (const char *) p;

    p = ngx_sprintf(p, "%s", found < n ? pcf->values[found] : "");

    for (i = 0; settings[i]; i++) {
        p = ngx_sprintf(p, " -c %s", settings[i]);
    }

    *p = '\0';

    if (found == n) {
        kw[n++] = "options";
    }

    kw[n] = NULL;
    vals[n] = NULL;

    pcf->keywords = kw;
    pcf->values = vals;

    return NGX_OK;
}
