
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#ifndef _NGX_DEFARM_ROUTER_H_INCLUDED_
#define _NGX_DEFARM_ROUTER_H_INCLUDED_


#include "ngx_defarm_module.h"


/* route flags */
#define NGX_DEFARM_ROUTE_HEALTH  0x01  /* also served by defarm_health */
#define NGX_DEFARM_ROUTE_BODY    0x02  /* a JSON body is read and parsed */
#define NGX_DEFARM_ROUTE_ECHO    0x04  /* only with defarm_echo on */
#define NGX_DEFARM_ROUTE_METRICS 0x08  /* by defarm_health, not defarm_api */

/*
 * Who may call a route: none of these is anyone; the router authenticates
 * before the handler runs (ngx_defarm_auth_require), and an API key's
 * permission goes by the method.
 */
#define NGX_DEFARM_ROUTE_PRINCIPAL 0x10  /* a user's token or an API key */
#define NGX_DEFARM_ROUTE_JWT       0x20  /* a user's token: keys refused */
#define NGX_DEFARM_ROUTE_ADMIN     0x40  /* an administrator's token */
#define NGX_DEFARM_ROUTE_QTOKEN    0x80  /* the token may be ?token= */

#define NGX_DEFARM_ROUTE_AUTH                                                 \
    (NGX_DEFARM_ROUTE_PRINCIPAL|NGX_DEFARM_ROUTE_JWT|NGX_DEFARM_ROUTE_ADMIN)


typedef ngx_int_t (*ngx_defarm_handler_pt)(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);


struct ngx_defarm_route_s {
    ngx_uint_t                 methods;       /* NGX_HTTP_GET | ... */
    ngx_str_t                  pattern;       /* "/api/items/:dfid" */
    ngx_defarm_handler_pt      handler;
    ngx_uint_t                 flags;
};


#define ngx_defarm_route_null  { 0, ngx_null_string, NULL, 0 }


typedef enum {
    NGX_DEFARM_ROUTE_FOUND = 0,
    NGX_DEFARM_ROUTE_NOT_FOUND,
    NGX_DEFARM_ROUTE_BAD_METHOD
} ngx_defarm_route_rc_e;


ngx_int_t ngx_defarm_router_add(ngx_conf_t *cf, ngx_defarm_main_conf_t *mcf,
    ngx_defarm_route_t *routes);
ngx_defarm_route_rc_e ngx_defarm_router_match(ngx_http_request_t *r,
    ngx_defarm_main_conf_t *mcf, ngx_defarm_loc_conf_t *lcf,
    ngx_defarm_ctx_t *ctx, ngx_str_t *allow);


#endif /* _NGX_DEFARM_ROUTER_H_INCLUDED_ */
