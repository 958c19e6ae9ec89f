
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
    ngx_defarm_circuits_routes,
    ngx_defarm_notifications_routes,
    ngx_defarm_activity_routes,
    ngx_defarm_admin_routes,
    ngx_defarm_account_routes,
    ngx_defarm_webhooks_routes,
    ngx_defarm_storage_routes,
    ngx_defarm_adapters_routes,
    ngx_defarm_workspaces_routes,
    ngx_defarm_audit_routes,
    ngx_defarm_proofs_routes,
    NULL
};


ngx_int_t
ngx_defarm_api_json(ngx_http_request_t *r, void *data, PGresult *res)
{
    ngx_str_t  json;

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) > 1) {
        return ngx_defarm_pg_sql_error(r, res);
    }

    if (PQntuples(res) == 0
        || ngx_defarm_pg_text(res, 0, 0, &json) != NGX_OK)
    {
        return ngx_defarm_error(r, NGX_HTTP_NOT_FOUND,
                                NGX_DEFARM_ERR_NOT_FOUND, "%s not found",
                                (const char *) data);
    }

    return ngx_defarm_send_text(r, NGX_HTTP_OK, &json);
}
