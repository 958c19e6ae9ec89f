
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "jobs/ngx_defarm_jobs.h"
#include "storage/ngx_defarm_ipfs.h"


/*
 * Uploads of an item's document ("ipfs_upload" jobs, sql/034): the
 * document as it is when the job is first claimed (milliseconds after
 * the push or the migration that queued it), added and pinned on the
 * adapter's IPFS node.  The CID goes back as the
 * job's result, {cid, pinned, size}, and the transaction that records it
 * writes the storage record and the CID timeline entry.  A node that does
 * not answer, or answers without a CID, is tried again by the job's
 * retries; a job that cannot be made (no endpoint, no document) is dead.
 */


static void ngx_defarm_upload_answered(ngx_defarm_curl_req_t *req,
    CURLcode rc, long status, const char *error, ngx_str_t *body);


ngx_int_t
ngx_defarm_upload_run(ngx_defarm_job_t *job)
{
    ngx_int_t               rc;
    ngx_str_t              *dfid, *doc;
    const char             *err;
    ngx_defarm_curl_req_t  *req;

    dfid = ngx_defarm_job_str(job, "dfid");
    doc = ngx_defarm_job_str(job, "doc");

    if (dfid == NULL || doc == NULL) {
        ngx_defarm_job_finish(job, NGX_DEFARM_JOB_FAILED,
                              "the upload lacks its dfid or document", NULL);
        return NGX_OK;
    }

    err = NULL;

    rc = ngx_defarm_ipfs_request(job->pool, job->log, job->payload,
                                 NGX_DEFARM_IPFS_ADD, dfid, doc, &req, &err);

    if (rc == NGX_OK) {
        req->done = ngx_defarm_upload_answered;
        req->data = job;

        if (ngx_defarm_curl_start(req) == NGX_OK) {
            return NGX_OK;
        }

        curl_slist_free_all(req->headers);
        err = "the transfer could not be started";
        rc = NGX_DECLINED;
    }

    ngx_defarm_job_finish(job, (rc == NGX_DECLINED) ? NGX_DEFARM_JOB_RETRY
                                                    : NGX_DEFARM_JOB_FAILED,
                          err, NULL);
    return NGX_OK;
}


static void
ngx_defarm_upload_answered(ngx_defarm_curl_req_t *req, CURLcode rc,
    long status, const char *error, ngx_str_t *body)
{
    ngx_defarm_job_t  *job = req->data;

    u_char     *p;
    int64_t     size;
    ngx_str_t   cid, result;
    u_char      why[80];

    if (rc == CURLE_OK && status >= 200 && status < 300
        && ngx_defarm_ipfs_answer(job->pool, NGX_DEFARM_IPFS_ADD, body, &cid,
                                  &size)
           == NGX_OK)
    {
        /* a CID is letters and digits: it needs no escaping */

        result.data = ngx_pnalloc(job->pool, sizeof("{\"cid\": \"\", "
                                                    "\"pinned\": true, "
                                                    "\"size\": }")
                                             + cid.len + NGX_INT64_LEN);
        if (result.data) {
            p = ngx_sprintf(result.data,
                            "{\"cid\": \"%V\", \"pinned\": true, "
                            "\"size\": %L}", &cid, size);
            result.len = p - result.data;

            ngx_log_error(NGX_LOG_INFO, job->log, 0,
                          "defarm: job %V stored as %V", &job->id, &cid);

            ngx_defarm_job_finish(job, NGX_DEFARM_JOB_DONE, NULL, &result);
            return;
        }

        error = "out of memory";

    } else if (rc == CURLE_OK) {
        ngx_sprintf(why, "the IPFS node answered %l without a CID%Z",
                    status);
        error = (const char *) why;
    }

    ngx_defarm_job_finish(job, NGX_DEFARM_JOB_RETRY, error, NULL);
}
