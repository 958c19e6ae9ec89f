
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#include "jobs/ngx_defarm_jobs.h"
#include "http/ngx_defarm_curl.h"


/*
 * E-mail jobs ("email": {"to", "subject", "text"}), sent over SMTP to the
 * server of defarm_smtp by libcurl on the event loop (STARTTLS when the
 * server offers it, or required).  A server that refuses or cannot be
 * reached is tried again later (the job's backoff); a message that cannot
 * be made (an address or subject with a line break) is not.
 */


typedef struct {
    ngx_str_t                  url;           /* smtp://host:port */
    ngx_str_t                  from;
    ngx_str_t                  username;
    ngx_str_t                  password;
    ngx_flag_t                 require_tls;
    ngx_msec_t                 timeout;
} ngx_defarm_smtp_conf_t;


static void ngx_defarm_email_sent(ngx_defarm_curl_req_t *req, CURLcode rc,
    long status, const char *error, ngx_str_t *body);
static ngx_int_t ngx_defarm_email_field(ngx_defarm_job_t *job,
    const char *name, ngx_str_t *out);


static ngx_defarm_smtp_conf_t  *ngx_defarm_smtp;


/*
 * defarm_smtp url=smtp://host[:port] from=address [user=name]
 *     [password=secret] [starttls=required|optional] [timeout=time];
 */

char *
ngx_defarm_smtp_set(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_defarm_main_conf_t  *mcf = conf;

    ngx_str_t               *value, *v, *target;
    ngx_uint_t               i;
    ngx_defarm_conf_msec_t   times[2];
    ngx_defarm_smtp_conf_t  *sc;

    if (mcf->smtp) {
        return "is duplicate";
    }

    sc = ngx_pcalloc(cf->pool, sizeof(ngx_defarm_smtp_conf_t));
    if (sc == NULL) {
        return NGX_CONF_ERROR;
    }

    sc->timeout = 30000;
    times[0].name = "timeout=";
    times[0].value = &sc->timeout;
    times[1].name = NULL;

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        v = &value[i];
        target = NULL;

        if (ngx_strncmp(v->data, "url=", 4) == 0) {
            target = &sc->url;

        } else if (ngx_strncmp(v->data, "from=", 5) == 0) {
            target = &sc->from;

        } else if (ngx_strncmp(v->data, "user=", 5) == 0) {
            target = &sc->username;

        } else if (ngx_strncmp(v->data, "password=", 9) == 0) {
            target = &sc->password;

        } else if (ngx_strcmp(v->data, "starttls=required") == 0) {
            sc->require_tls = 1;
            continue;

        } else if (ngx_strcmp(v->data, "starttls=optional") == 0) {
            sc->require_tls = 0;
            continue;

        } else if (ngx_defarm_conf_msec(v, times) == NGX_OK) {
            continue;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", v);
            return NGX_CONF_ERROR;
        }

        /* value[] strings end with a NUL: libcurl takes them as they are */

        target->data = (u_char *) ngx_strchr(v->data, '=') + 1;
        target->len = v->len - (target->data - v->data);
    }

    if (sc->url.len == 0 || sc->from.len == 0) {
        return "needs url= and from=";
    }

    if (ngx_strncmp(sc->url.data, "smtp://", 7) != 0
        && ngx_strncmp(sc->url.data, "smtps://", 8) != 0)
    {
        return "needs an smtp:// or smtps:// url";
    }

    if (ngx_strlchr(sc->from.data, sc->from.data + sc->from.len, '@')
        == NULL)
    {
        return "needs a from= address";
    }

    mcf->smtp = sc;

    return NGX_CONF_OK;
}


void
ngx_defarm_smtp_init_process(void *conf)
{
    ngx_defarm_smtp = conf;
}


ngx_int_t
ngx_defarm_email_run(ngx_defarm_job_t *job)
{
    u_char                  *p;
    size_t                   len;
    ngx_str_t                to, subject, text;
    ngx_defarm_curl_req_t   *req;
    ngx_defarm_smtp_conf_t  *sc = ngx_defarm_smtp;
    u_char                   rcpt[512];

    if (sc == NULL) {
        ngx_defarm_job_finish(job, NGX_DEFARM_JOB_RETRY,
                              "no defarm_smtp on this node", NULL);
        return NGX_OK;
    }

    if (ngx_defarm_email_field(job, "to", &to) != NGX_OK
        || ngx_defarm_email_field(job, "subject", &subject) != NGX_OK
        || ngx_defarm_email_field(job, "text", &text) != NGX_OK
        || to.len > 320 || ngx_strlchr(to.data, to.data + to.len, '@') == NULL)
    {
        ngx_defarm_job_finish(job, NGX_DEFARM_JOB_FAILED,
                              "the message lacks a recipient, a subject or "
                              "a text, or has a line break in a header",
                              NULL);
        return NGX_OK;
    }

    req = ngx_pcalloc(job->pool, sizeof(ngx_defarm_curl_req_t));
    if (req == NULL) {
        return NGX_ERROR;
    }

    req->pool = job->pool;
    req->log = job->log;
    req->url = (const char *) sc->url.data;
    req->timeout = sc->timeout;
    req->allow_private = 1;           /* the operator's own server */
    req->require_tls = sc->require_tls;
    req->done = ngx_defarm_email_sent;
    req->data = job;

    if (sc->username.len) {
        req->username = (const char *) sc->username.data;
        req->password = (const char *) sc->password.data;
    }

    req->mail_from = ngx_pnalloc(job->pool, sc->from.len + 3);
    if (req->mail_from == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf((u_char *) req->mail_from, "<%V>%Z", &sc->from);

    ngx_sprintf(rcpt, "<%V>%Z", &to);

    req->mail_rcpt = curl_slist_append(NULL, (char *) rcpt);
    if (req->mail_rcpt == NULL) {
        return NGX_ERROR;
    }

    /* the message: headers, a blank line, the text with CRLF line ends */

    len = sizeof("From: \r\nTo: \r\nSubject: \r\nDate: \r\n"
                 "Message-ID: <@defarm>\r\nMIME-Version: 1.0\r\n"
                 "Content-Type: text/plain; charset=utf-8\r\n"
                 "Content-Transfer-Encoding: 8bit\r\n\r\n\r\n")
          + sc->from.len + to.len + subject.len + sizeof("Mon, 28 Sep 1970 "
                 "06:00:00 GMT") + job->id.len + NGX_INT_T_LEN + 2 * text.len;

    req->body.data = ngx_pnalloc(job->pool, len);
    if (req->body.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(req->body.data,
                    "From: %V\r\nTo: %V\r\nSubject: %V\r\nDate: %V\r\n"
                    "Message-ID: <%V.%ui@defarm>\r\nMIME-Version: 1.0\r\n"
                    "Content-Type: text/plain; charset=utf-8\r\n"
                    "Content-Transfer-Encoding: 8bit\r\n\r\n",
                    &sc->from, &to, &subject, &ngx_cached_http_time,
                    &job->id, job->attempts);

    for (len = 0; len < text.len; len++) {
        if (text.data[len] == LF
            && (len == 0 || text.data[len - 1] != CR))
        {
            *p++ = CR;
        }

        *p++ = text.data[len];
    }

    p = ngx_cpymem(p, CRLF, 2);
    req->body.len = p - req->body.data;

    if (ngx_defarm_curl_start(req) != NGX_OK) {
        curl_slist_free_all(req->mail_rcpt);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_defarm_email_sent(ngx_defarm_curl_req_t *req, CURLcode rc, long status,
    const char *error, ngx_str_t *body)
{
    ngx_defarm_job_t  *job = req->data;

    ngx_str_t  result;

    if (rc != CURLE_OK) {
        ngx_defarm_job_finish(job, NGX_DEFARM_JOB_RETRY, error, NULL);
        return;
    }

    result.data = ngx_pnalloc(job->pool, sizeof("{\"smtp_status\": }")
                                         + NGX_INT_T_LEN);
    if (result.data == NULL) {
        ngx_defarm_job_finish(job, NGX_DEFARM_JOB_DONE, NULL, NULL);
        return;
    }

    result.len = ngx_sprintf(result.data, "{\"smtp_status\": %l}", status)
                 - result.data;

    ngx_defarm_job_finish(job, NGX_DEFARM_JOB_DONE, NULL, &result);
}


/* a string field of the payload, without a line break (a header's) */

static ngx_int_t
ngx_defarm_email_field(ngx_defarm_job_t *job, const char *name,
    ngx_str_t *out)
{
    ngx_defarm_json_t  *v;

    v = ngx_defarm_json_get(job->payload, name);

    if (v == NULL || v->type != NGX_DEFARM_JSON_STRING || v->str.len == 0) {
        return NGX_ERROR;
    }

    *out = v->str;

    if (ngx_strcmp(name, "text") != 0
        && (ngx_strlchr(out->data, out->data + out->len, CR)
            || ngx_strlchr(out->data, out->data + out->len, LF)))
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}
