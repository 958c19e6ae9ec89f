
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#ifndef _NGX_DEFARM_JWT_H_INCLUDED_
#define _NGX_DEFARM_JWT_H_INCLUDED_


#include "ngx_defarm_module.h"


#define NGX_DEFARM_JWT_MIN_SECRET  32


struct ngx_defarm_jwt_conf_s {
    ngx_str_t                  secret;        /* defarm_jwt_secret */
    time_t                     ttl;           /* defarm_jwt_ttl */
    time_t                     leeway;        /* defarm_jwt_leeway */
    ngx_uint_t                 cache_max;     /* defarm_jwt_cache */
};


/*
 * What a token says: the claims of the original API, plus tier, iat and
 * the user's token version when it was issued (a password reset moves the
 * version on, and older tokens stop working).
 */

typedef struct {
    ngx_str_t                  user_id;
    ngx_str_t                  workspace_id;  /* data NULL: null */
    ngx_str_t                  tier;
    time_t                     iat;
    time_t                     exp;
    ngx_uint_t                 version;       /* "tv": users.token_version */
} ngx_defarm_claims_t;


char *ngx_defarm_jwt_set_secret(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_defarm_jwt_set_time(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_defarm_jwt_sign(ngx_http_request_t *r,
    ngx_defarm_claims_t *claims, ngx_str_t *token);
ngx_int_t ngx_defarm_jwt_verify(ngx_http_request_t *r, ngx_str_t *token,
    ngx_defarm_claims_t *claims, const char **why);


#endif /* _NGX_DEFARM_JWT_H_INCLUDED_ */
