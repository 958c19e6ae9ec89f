
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "api/ngx_defarm_api_fn.h"


/*
 * Audit (sql/039): audit events, security incidents, compliance reports,
 * the dashboard's counts and the JSON export.  Each route is served twice,
 * at the original's doubled prefix /audit/audit and at /api/audit: the
 * table lists the one, then the other, in the same order, and both halves
 * run the same statements (route i runs statement i modulo the half).
 */


static ngx_int_t ngx_defarm_audit_run(ngx_http_request_t *r,
    ngx_defarm_ctx_t *ctx);


ngx_defarm_route_t  ngx_defarm_audit_routes[] = {

    { NGX_HTTP_POST, ngx_string("/audit/audit/events"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/audit/audit/events/security"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/audit/audit/events/data-access"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/audit/audit/events/query"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/audit/audit/events/:event_id"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/audit/audit/events/user/:user_id"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/audit/audit/events/sync"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/audit/audit/incidents"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/audit/audit/incidents"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/audit/audit/incidents/:incident_id"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_PUT, ngx_string("/audit/audit/incidents/:incident_id/assign"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_PUT, ngx_string("/audit/audit/incidents/:incident_id/resolve"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/audit/audit/compliance/reports"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/audit/audit/compliance/reports"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/audit/audit/compliance/reports/gdpr"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/audit/audit/compliance/reports/food-safety"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/audit/audit/compliance/events"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/audit/audit/compliance/incidents"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/audit/audit/dashboard/metrics"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/audit/audit/export/json"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    /* the same routes under /api */

    { NGX_HTTP_POST, ngx_string("/api/audit/events"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/audit/events/security"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/audit/events/data-access"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/audit/events/query"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/audit/events/:event_id"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/audit/events/user/:user_id"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/audit/events/sync"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/audit/incidents"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/audit/incidents"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/audit/incidents/:incident_id"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_PUT, ngx_string("/api/audit/incidents/:incident_id/assign"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_PUT, ngx_string("/api/audit/incidents/:incident_id/resolve"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/audit/compliance/reports"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/audit/compliance/reports"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/audit/compliance/reports/gdpr"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/audit/compliance/reports/food-safety"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/audit/compliance/events"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/audit/compliance/incidents"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_GET, ngx_string("/api/audit/dashboard/metrics"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_PRINCIPAL },

    { NGX_HTTP_POST, ngx_string("/api/audit/export/json"),
      ngx_defarm_audit_run, NGX_DEFARM_ROUTE_BODY|NGX_DEFARM_ROUTE_PRINCIPAL },

    ngx_defarm_route_null
};


static ngx_defarm_pg_stmt_t  ngx_defarm_audit_log =
    ngx_defarm_fn_stmt("defarm_audit_log");
static ngx_defarm_pg_stmt_t  ngx_defarm_audit_log_security =
    ngx_defarm_fn_stmt("defarm_audit_log_security");
static ngx_defarm_pg_stmt_t  ngx_defarm_audit_log_data_access =
    ngx_defarm_fn_stmt("defarm_audit_log_data_access");
static ngx_defarm_pg_stmt_t  ngx_defarm_audit_query =
    ngx_defarm_fn_stmt("defarm_audit_query");
static ngx_defarm_pg_stmt_t  ngx_defarm_audit_event_get =
    ngx_defarm_fn_stmt("defarm_audit_event_get");
static ngx_defarm_pg_stmt_t  ngx_defarm_audit_user_events =
    ngx_defarm_fn_stmt("defarm_audit_user_events");
static ngx_defarm_pg_stmt_t  ngx_defarm_audit_sync =
    ngx_defarm_fn_stmt("defarm_audit_sync");
static ngx_defarm_pg_stmt_t  ngx_defarm_audit_incident_create =
    ngx_defarm_fn_stmt("defarm_audit_incident_create");
static ngx_defarm_pg_stmt_t  ngx_defarm_audit_incidents =
    ngx_defarm_fn_stmt("defarm_audit_incidents");
static ngx_defarm_pg_stmt_t  ngx_defarm_audit_incident_get =
    ngx_defarm_fn_stmt("defarm_audit_incident_get");
static ngx_defarm_pg_stmt_t  ngx_defarm_audit_incident_assign =
    ngx_defarm_fn_stmt("defarm_audit_incident_assign");
static ngx_defarm_pg_stmt_t  ngx_defarm_audit_incident_resolve =
    ngx_defarm_fn_stmt("defarm_audit_incident_resolve");
static ngx_defarm_pg_stmt_t  ngx_defarm_audit_report_create =
    ngx_defarm_fn_stmt("defarm_audit_report_create");
static ngx_defarm_pg_stmt_t  ngx_defarm_audit_reports =
    ngx_defarm_fn_stmt("defarm_audit_reports");
static ngx_defarm_pg_stmt_t  ngx_defarm_audit_report_gdpr =
    ngx_defarm_fn_stmt("defarm_audit_report_gdpr");
static ngx_defarm_pg_stmt_t  ngx_defarm_audit_report_food_safety =
    ngx_defarm_fn_stmt("defarm_audit_report_food_safety");
static ngx_defarm_pg_stmt_t  ngx_defarm_audit_compliance_events =
    ngx_defarm_fn_stmt("defarm_audit_compliance_events");
static ngx_defarm_pg_stmt_t  ngx_defarm_audit_compliance_incidents =
    ngx_defarm_fn_stmt("defarm_audit_compliance_incidents");
static ngx_defarm_pg_stmt_t  ngx_defarm_audit_dashboard =
    ngx_defarm_fn_stmt("defarm_audit_dashboard");
static ngx_defarm_pg_stmt_t  ngx_defarm_audit_export =
    ngx_defarm_fn_stmt("defarm_audit_export");

static ngx_defarm_pg_stmt_t  *ngx_defarm_audit_stmts[] = {
    &ngx_defarm_audit_log,
    &ngx_defarm_audit_log_security,
    &ngx_defarm_audit_log_data_access,
    &ngx_defarm_audit_query,
    &ngx_defarm_audit_event_get,
    &ngx_defarm_audit_user_events,
    &ngx_defarm_audit_sync,
    &ngx_defarm_audit_incident_create,
    &ngx_defarm_audit_incidents,
    &ngx_defarm_audit_incident_get,
    &ngx_defarm_audit_incident_assign,
    &ngx_defarm_audit_incident_resolve,
    &ngx_defarm_audit_report_create,
    &ngx_defarm_audit_reports,
    &ngx_defarm_audit_report_gdpr,
    &ngx_defarm_audit_report_food_safety,
    &ngx_defarm_audit_compliance_events,
    &ngx_defarm_audit_compliance_incidents,
    &ngx_defarm_audit_dashboard,
    &ngx_defarm_audit_export
};


static ngx_int_t
ngx_defarm_audit_run(ngx_http_request_t *r, ngx_defarm_ctx_t *ctx)
{
    ngx_uint_t           i, n;
    ngx_defarm_fn_req_t  *fr;

    n = sizeof(ngx_defarm_audit_stmts) / sizeof(ngx_defarm_pg_stmt_t *);
    i = ctx->route - ngx_defarm_audit_routes;

    if (i >= 2 * n) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    fr = ngx_defarm_fn_req(r, ctx);
    if (fr == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_defarm_pg_query(r, ngx_defarm_audit_stmts[i % n], fr->params,
                               ngx_defarm_fn_done, fr);
}
