
/*
 * Copyright (C) The ngx_defarm_module authors
 */


#ifndef _NGX_DEFARM_JSON_H_INCLUDED_
#define _NGX_DEFARM_JSON_H_INCLUDED_


#include "ngx_defarm_module.h"

#include <yajl/yajl_gen.h>


typedef enum {
    NGX_DEFARM_JSON_NULL = 0,
    NGX_DEFARM_JSON_BOOL,
    NGX_DEFARM_JSON_NUMBER,
    NGX_DEFARM_JSON_STRING,
    NGX_DEFARM_JSON_ARRAY,
    NGX_DEFARM_JSON_OBJECT
} ngx_defarm_json_type_e;


/*
 * A parsed JSON value.  Objects and arrays keep their members as a list
 * (child, next); a member of an object carries its name in "key".  Numbers
 * keep their text in "str" so that no precision is lost before a handler
 * decides what type it wants.  Everything lives in the request pool.
 */

struct ngx_defarm_json_s {
    ngx_defarm_json_type_e     type;
    ngx_str_t                  key;
    ngx_str_t                  str;
    ngx_flag_t                 boolean;
    ngx_uint_t                 count;
    ngx_defarm_json_t         *child;
    ngx_defarm_json_t         *last;
    ngx_defarm_json_t         *next;
    ngx_defarm_json_t         *parent;
};


struct ngx_defarm_json_writer_s {
    ngx_http_request_t        *request;
    yajl_gen                   gen;
    ngx_chain_t               *out;
    ngx_chain_t              **last;
    ngx_buf_t                 *buf;
    size_t                     size;
    ngx_uint_t                 failed;        /* unsigned  failed:1; */
};


/*
 * parsing, as the body arrives: feed() each piece (NGX_ERROR only when
 * memory ran out), then end() gives the tree, or a message and the
 * status that goes with it (400, or 413 when the tree would need more
 * than its memory bound)
 */

ngx_defarm_json_parser_t *ngx_defarm_json_parser(ngx_pool_t *pool,
    ngx_uint_t max_depth, ngx_uint_t max_nodes, size_t max_memory);
ngx_int_t ngx_defarm_json_feed(ngx_defarm_json_parser_t *ps, u_char *data,
    size_t len);
ngx_int_t ngx_defarm_json_end(ngx_defarm_json_parser_t *ps,
    ngx_defarm_json_t **root, ngx_str_t *err, ngx_uint_t *status);
off_t ngx_defarm_json_received(ngx_defarm_json_parser_t *ps);
ngx_defarm_json_t *ngx_defarm_json_get(ngx_defarm_json_t *obj,
    const char *key);
ngx_str_t *ngx_defarm_json_cstr(ngx_pool_t *pool, ngx_defarm_json_t *obj,
    const char *key);
ngx_int_t ngx_defarm_json_int(ngx_defarm_json_t *v, int64_t *n);
const char *ngx_defarm_json_type_name(ngx_defarm_json_t *v);


/* rendering */

ngx_defarm_json_writer_t *ngx_defarm_json_writer(ngx_http_request_t *r);
ngx_int_t ngx_defarm_json_finish(ngx_defarm_json_writer_t *w,
    ngx_chain_t **out, off_t *len);
ngx_int_t ngx_defarm_json_text(ngx_defarm_json_writer_t *w, ngx_str_t *text);
ngx_int_t ngx_defarm_json_render(ngx_http_request_t *r, ngx_defarm_json_t *v,
    ngx_str_t *text);
void ngx_defarm_jw_check(ngx_defarm_json_writer_t *w, yajl_gen_status st);
void ngx_defarm_jw_str(ngx_defarm_json_writer_t *w, ngx_str_t *s);
void ngx_defarm_jw_str_or_null(ngx_defarm_json_writer_t *w, ngx_str_t *s);
void ngx_defarm_jw_cstr(ngx_defarm_json_writer_t *w, const char *s);
void ngx_defarm_jw_int(ngx_defarm_json_writer_t *w, int64_t n);
void ngx_defarm_jw_time(ngx_defarm_json_writer_t *w, time_t t);
void ngx_defarm_jw_ms(ngx_defarm_json_writer_t *w, uint64_t us);
void ngx_defarm_jw_bool(ngx_defarm_json_writer_t *w, ngx_flag_t b);
void ngx_defarm_jw_null(ngx_defarm_json_writer_t *w);
void ngx_defarm_jw_value(ngx_defarm_json_writer_t *w, ngx_defarm_json_t *v);

/* an object member's name is rendered like any other string */
#define ngx_defarm_jw_key  ngx_defarm_jw_cstr

#define ngx_defarm_jw_map_open(w)                                            \
    ngx_defarm_jw_check(w, yajl_gen_map_open((w)->gen))
#define ngx_defarm_jw_map_close(w)                                           \
    ngx_defarm_jw_check(w, yajl_gen_map_close((w)->gen))
#define ngx_defarm_jw_array_open(w)                                          \
    ngx_defarm_jw_check(w, yajl_gen_array_open((w)->gen))
#define ngx_defarm_jw_array_close(w)                                         \
    ngx_defarm_jw_check(w, yajl_gen_array_close((w)->gen))


#endif /* _NGX_DEFARM_JSON_H_INCLUDED_ */
