
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "api/ngx_defarm_api.h"


/* the route tables of every API area; the router compiles them in order */

ngx_defarm_route_t  *ngx_defarm_route_tables[] = {
    ngx_defarm_service_routes,
    ngx_defarm_db_routes,
    ngx_defarm_cache_routes,
    ngx_defarm_auth_routes,
    ngx_defarm_keys_routes,
    ngx_defarm_principal_routes,
    ngx_defarm_redis_routes,
    ngx_defarm_items_routes,
    ngx_defarm_events_routes,
    ngx_defarm_receipts_routes,
    ngx_defarm_local_routes,
    ngx_defarm_pending_routes,
    NULL
};
