
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#ifndef _NGX_DEFARM_API_H_INCLUDED_
#define _NGX_DEFARM_API_H_INCLUDED_


#include "ngx_defarm_module.h"
#include "ngx_defarm_router.h"
#include "ngx_defarm_response.h"
#include "ngx_defarm_json.h"
#include "pg/ngx_defarm_pg.h"


/* one route table per API area, each ending with ngx_defarm_route_null */

extern ngx_defarm_route_t   ngx_defarm_service_routes[];
extern ngx_defarm_route_t   ngx_defarm_db_routes[];
extern ngx_defarm_route_t   ngx_defarm_cache_routes[];
extern ngx_defarm_route_t   ngx_defarm_auth_routes[];
extern ngx_defarm_route_t   ngx_defarm_keys_routes[];
extern ngx_defarm_route_t   ngx_defarm_principal_routes[];
extern ngx_defarm_route_t   ngx_defarm_redis_routes[];
extern ngx_defarm_route_t   ngx_defarm_items_routes[];
extern ngx_defarm_route_t   ngx_defarm_events_routes[];
extern ngx_defarm_route_t   ngx_defarm_receipts_routes[];
extern ngx_defarm_route_t   ngx_defarm_circuits_routes[];
extern ngx_defarm_route_t   ngx_defarm_notifications_routes[];
extern ngx_defarm_route_t   ngx_defarm_activity_routes[];
extern ngx_defarm_route_t   ngx_defarm_admin_routes[];
extern ngx_defarm_route_t   ngx_defarm_account_routes[];
extern ngx_defarm_route_t   ngx_defarm_webhooks_routes[];
extern ngx_defarm_route_t   ngx_defarm_storage_routes[];
extern ngx_defarm_route_t   ngx_defarm_adapters_routes[];
extern ngx_defarm_route_t   ngx_defarm_workspaces_routes[];
extern ngx_defarm_route_t   ngx_defarm_local_routes[];
extern ngx_defarm_route_t   ngx_defarm_pending_routes[];
extern ngx_defarm_route_t   ngx_defarm_audit_routes[];
extern ngx_defarm_route_t   ngx_defarm_proofs_routes[];

/*
 * A done callback for statements whose answer is column 0 of at most one
 * row, JSON text made by PostgreSQL: sent as it is; no row or NULL is a
 * 404 "<data> not found" (data: a const char *).
 */

ngx_int_t ngx_defarm_api_json(ngx_http_request_t *r, void *data,
    PGresult *res);

/*
 * A new account's fields, checked as registration checks them
 * (ngx_defarm_api_auth.c); also for an administrator's POST
 * /api/admin/users.  NGX_DECLINED means "go on", anything else was
 * answered.
 */

typedef struct {
    ngx_str_t                  username;
    ngx_str_t                  email;
    ngx_str_t                  password;
    ngx_str_t                  workspace;     /* data NULL: not given */
} ngx_defarm_account_t;

ngx_int_t ngx_defarm_auth_account(ngx_http_request_t *r,
    ngx_defarm_json_t *body, const char *workspace, const char *label,
    ngx_defarm_account_t *ac);

/* every table the router compiles, NULL-terminated (ngx_defarm_api.c) */

extern ngx_defarm_route_t  *ngx_defarm_route_tables[];


#endif /* _NGX_DEFARM_API_H_INCLUDED_ */
