
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "auth/ngx_defarm_jwt.h"
#include "auth/ngx_defarm_jwt_cache.h"

#include <jwt.h>


/*
 * HS256 JWTs with libjwt 1.10.  The algorithm is pinned: a token that
 * says anything but HS256 is refused, "none" included (libjwt refuses
 * "none" when a key is given; we check again).  libjwt 1.10 does not look
 * at exp: we do, with a leeway.  Debian's libjwt 1.10.2-1+deb12u1 carries
 * the fix for CVE-2024-25189, so its signature comparison is constant
 * time.  Signing and verifying run in the worker (microseconds), never
 * under a lock.
 */


char *
ngx_defarm_jwt_set_time(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_defarm_main_conf_t  *mcf = conf;

    time_t     *tp, t;
    ngx_str_t  *value;

    /* cmd->offset is the field's offset in ngx_defarm_jwt_conf_t */

    tp = (time_t *) ((u_char *) mcf->jwt + cmd->offset);

    if (*tp != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;
    t = ngx_parse_time(&value[1], 1);

    if (t == (time_t) NGX_ERROR) {
        return "invalid value";
    }

    *tp = t;

    return NGX_CONF_OK;
}


char *
ngx_defarm_jwt_set_secret(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_defarm_main_conf_t  *mcf = conf;
    ngx_defarm_jwt_conf_t   *jcf = mcf->jwt;

    char             *env;
    u_char           *p, *last;
    ssize_t           n;
    ngx_str_t        *value, name;
    ngx_file_t        file;
    ngx_file_info_t   fi;

    if (jcf->secret.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strncmp(value[1].data, "env=", 4) == 0) {

        /* read in the master, at configuration time: workers lose env */

        env = getenv((char *) value[1].data + 4);

        if (env == NULL || env[0] == '\0') {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "defarm_jwt_secret: environment variable "
                               "\"%s\" is not set", value[1].data + 4);
            return NGX_CONF_ERROR;
        }

        jcf->secret.len = ngx_strlen(env);
        jcf->secret.data = ngx_pnalloc(cf->pool, jcf->secret.len);
        if (jcf->secret.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memcpy(jcf->secret.data, env, jcf->secret.len);

    } else if (ngx_strncmp(value[1].data, "file=", 5) == 0) {

        name.data = value[1].data + 5;
        name.len = value[1].len - 5;

        /* relative to nginx's prefix (-p), like load_module */

        if (ngx_conf_full_name(cf->cycle, &name, 0) != NGX_OK) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(&file, sizeof(ngx_file_t));
        file.name = name;
        file.log = cf->log;

        file.fd = ngx_open_file(name.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
        if (file.fd == NGX_INVALID_FILE) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                               "defarm_jwt_secret: cannot open \"%V\"", &name);
            return NGX_CONF_ERROR;
        }

        if (ngx_fd_info(file.fd, &fi) == NGX_FILE_ERROR
            || ngx_file_size(&fi) > 4096)
        {
            ngx_close_file(file.fd);
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "defarm_jwt_secret: \"%V\" is not a secret "
                               "file of at most 4096 bytes", &name);
            return NGX_CONF_ERROR;
        }

        p = ngx_pnalloc(cf->pool, (size_t) ngx_file_size(&fi) + 1);
        if (p == NULL) {
            ngx_close_file(file.fd);
            return NGX_CONF_ERROR;
        }

        n = ngx_read_file(&file, p, (size_t) ngx_file_size(&fi), 0);
        ngx_close_file(file.fd);

        if (n == NGX_ERROR) {
            return NGX_CONF_ERROR;
        }

        /* a trailing newline is an editor's, not the secret's */

        last = p + n;
        while (last > p && (last[-1] == '\n' || last[-1] == '\r')) {
            last--;
        }

        jcf->secret.data = p;
        jcf->secret.len = last - p;

    } else {
        return "takes env=NAME or file=PATH";
    }

    if (jcf->secret.len < NGX_DEFARM_JWT_MIN_SECRET) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "defarm_jwt_secret: the secret is %uz bytes, "
                           "at least %d are needed", jcf->secret.len,
                           NGX_DEFARM_JWT_MIN_SECRET);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_defarm_jwt_grant(jwt_t *jwt, const char *name, ngx_str_t *value,
    ngx_pool_t *pool)
{
    u_char  *p;

    p = ngx_pnalloc(pool, value->len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(p, value->data, value->len);
    p[value->len] = '\0';

    return jwt_add_grant(jwt, name, (char *) p) == 0 ? NGX_OK : NGX_ERROR;
}


ngx_int_t
ngx_defarm_jwt_sign(ngx_http_request_t *r, ngx_defarm_claims_t *claims,
    ngx_str_t *token)
{
    char                    *s;
    jwt_t                   *jwt;
    ngx_int_t                rc;
    ngx_defarm_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_defarm_module);

    if (mcf->jwt->secret.len == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "defarm: cannot sign a token: no defarm_jwt_secret");
        return NGX_ERROR;
    }

    if (jwt_new(&jwt) != 0) {
        return NGX_ERROR;
    }

    claims->iat = ngx_time();
    claims->exp = claims->iat + mcf->jwt->ttl;

    rc = NGX_ERROR;
    s = NULL;

    if (ngx_defarm_jwt_grant(jwt, "user_id", &claims->user_id, r->pool)
        != NGX_OK
        || ngx_defarm_jwt_grant(jwt, "tier", &claims->tier, r->pool)
           != NGX_OK
        || jwt_add_grant_int(jwt, "iat", (long) claims->iat) != 0
        || jwt_add_grant_int(jwt, "exp", (long) claims->exp) != 0
        || jwt_add_grant_int(jwt, "tv", (long) claims->version) != 0)
    {
        goto done;
    }

    if (claims->workspace_id.data) {
        if (ngx_defarm_jwt_grant(jwt, "workspace_id", &claims->workspace_id,
                                 r->pool)
            != NGX_OK)
        {
            goto done;
        }

    } else if (jwt_add_grants_json(jwt, "{\"workspace_id\":null}") != 0) {
        goto done;
    }

    if (jwt_set_alg(jwt, JWT_ALG_HS256, mcf->jwt->secret.data,
                    (int) mcf->jwt->secret.len)
        != 0)
    {
        goto done;
    }

    s = jwt_encode_str(jwt);
    if (s == NULL) {
        goto done;
    }

    token->len = ngx_strlen(s);
    token->data = ngx_pnalloc(r->pool, token->len);
    if (token->data == NULL) {
        goto done;
    }

    ngx_memcpy(token->data, s, token->len);
    rc = NGX_OK;

done:

    /* libjwt's allocations end here, on every path */

    if (s) {
        free(s);
    }

    jwt_free(jwt);

    return rc;
}


static ngx_int_t
ngx_defarm_jwt_claim(ngx_http_request_t *r, jwt_t *jwt, const char *name,
    ngx_str_t *out)
{
    const char  *v;

    v = jwt_get_grant(jwt, name);
    if (v == NULL) {
        ngx_str_null(out);
        return NGX_DECLINED;
    }

    out->len = ngx_strlen(v);
    out->data = ngx_pnalloc(r->pool, out->len ? out->len : 1);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(out->data, v, out->len);

    return NGX_OK;
}


ngx_int_t
ngx_defarm_jwt_verify(ngx_http_request_t *r, ngx_str_t *token,
    ngx_defarm_claims_t *claims, const char **why)
{
    u_char                  *t;
    jwt_t                   *jwt;
    long                     v;
    time_t                   now;
    ngx_int_t                rc;
    ngx_defarm_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_defarm_module);

    *why = "Invalid token";

    if (mcf->jwt->secret.len == 0 || token->len == 0 || token->len > 4096) {
        return NGX_DECLINED;
    }

    rc = ngx_defarm_jwt_cache_get(r, token, claims);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    t = ngx_pnalloc(r->pool, token->len + 1);
    if (t == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(t, token->data, token->len);
    t[token->len] = '\0';

    jwt = NULL;

    if (jwt_decode(&jwt, (char *) t, mcf->jwt->secret.data,
                   (int) mcf->jwt->secret.len)
        != 0 || jwt == NULL)
    {
        *why = "Invalid token: InvalidSignature";
        return NGX_DECLINED;
    }

    rc = NGX_DECLINED;

    /* pinned: HS256 only, whatever the token's header claims */

    if (jwt_get_alg(jwt) != JWT_ALG_HS256) {
        *why = "Invalid token: InvalidAlgorithm";
        goto done;
    }

    errno = 0;
    claims->exp = (time_t) jwt_get_grant_int(jwt, "exp");

    if (errno != 0 || claims->exp == 0) {
        *why = "Invalid token: missing exp";
        goto done;
    }

    now = ngx_time();

    if (now > claims->exp + mcf->jwt->leeway) {
        *why = "Invalid token: ExpiredSignature";
        goto done;
    }

    claims->iat = (time_t) jwt_get_grant_int(jwt, "iat");

    rc = ngx_defarm_jwt_claim(r, jwt, "user_id", &claims->user_id);

    if (rc != NGX_OK || claims->user_id.len == 0) {
        *why = "Invalid token: missing user_id";
        rc = (rc == NGX_ERROR) ? NGX_ERROR : NGX_DECLINED;
        goto done;
    }

    if (ngx_defarm_jwt_claim(r, jwt, "workspace_id", &claims->workspace_id)
        == NGX_ERROR
        || ngx_defarm_jwt_claim(r, jwt, "tier", &claims->tier) == NGX_ERROR)
    {
        rc = NGX_ERROR;
        goto done;
    }

    /* a token issued before token versions is of version 0 */

    errno = 0;
    v = jwt_get_grant_int(jwt, "tv");

    if (errno == 0 && v < 0) {
        *why = "Invalid token: bad tv";
        rc = NGX_DECLINED;
        goto done;
    }

    claims->version = (errno == 0) ? (ngx_uint_t) v : 0;

    ngx_defarm_jwt_cache_put(token, claims);

    rc = NGX_OK;

done:

    jwt_free(jwt);

    return rc;
}
