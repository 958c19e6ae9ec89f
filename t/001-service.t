# Service routes, routing errors and the JSON error shape.

use Test::Nginx::Socket 'no_plan';

repeat_each(1);
no_shuffle();

add_block_preprocessor(sub {
    my $block = shift;

    if (!defined $block->config) {
        $block->set_value("config", <<'_EOC_');
    error_page 400 404 405 408 413 414 494 500 502 503 504 @defarm_error;

    location / {
        client_max_body_size 1k;
        defarm_api on;
        defarm_echo on;
    }

    location @defarm_error {
        defarm_errors on;
    }
_EOC_
    }
});

run_tests();

__DATA__

=== TEST 1: health answers 200 JSON with a request id
--- request
GET /health
--- error_code: 200
--- response_headers
Content-Type: application/json
--- response_headers_like
X-Request-Id: ^[0-9a-f]{32}$
--- response_body_like: ^\{"status":"healthy","timestamp":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ","uptime":"System operational","pid":\d+\}$
--- no_error_log
[error]



=== TEST 2: banner
--- request
GET /
--- response_body_like: ^\{"name":"DeFarm Traceability API","version":"\d+\.\d+\.\d+","description":"[^"]+","features":\["[^"]+(","[^"]+){9}"\]\}$
--- no_error_log
[error]



=== TEST 3: version reports the commit that was built
--- request
GET /version
--- response_headers_like
X-Commit: ^(unknown|[0-9a-f]{40}(-dirty)?)$
--- response_body_like eval
my $h = $ENV{TEST_NGINX_GIT_HASH} // 'unknown';
qr/^\{"service":"DeFarm Engines API","version":"\d+\.\d+\.\d+","git_hash":"\Q$h\E","build_time":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ","nginx_version":"1\.22\.1"\}$/



=== TEST 4: HEAD is answered like GET, without a body
--- request
HEAD /health
--- error_code: 200
--- response_headers
Content-Type: application/json
--- response_body



=== TEST 5: unknown route is a 404 JSON error, logged at warn
--- request
GET /api/nope
--- error_code: 404
--- response_headers
Content-Type: application/json
--- response_body_like: ^\{"error":"Route not found: GET /api/nope","error_kind":"not_found","trace_id":"[0-9a-f]{32}","status":404\}$
--- error_log eval
qr/\[warn\] .*defarm_error error_kind=not_found status=404 method=GET endpoint=\/api\/nope trace_id=[0-9a-f]{32} duration_ms=\d+ user_id=- message="Route not found: GET \/api\/nope"/
--- no_error_log
[error]



=== TEST 6: known path, wrong method is 405 with Allow
--- request
DELETE /health
--- error_code: 405
--- response_headers
Allow: GET, HEAD
--- response_body_like: "error_kind":"method_not_allowed".*"status":405\}$



=== TEST 7: a route matches exactly: a trailing slash or an empty segment is not it
--- config
    merge_slashes off;
    location / {
        defarm_api on;
        defarm_echo on;
    }
--- request eval
["GET /health/", "GET //health", "GET /api//version", "GET /health", "GET /"]
--- error_code eval
[404, 404, 404, 200, 200]



=== TEST 7b: defarm_api does not serve /metrics, in any spelling
--- config
    merge_slashes off;
    location / {
        defarm_api on;
    }
    location = /metrics {
        defarm_health on;
        deny all;
    }
--- request eval
["GET /metrics/", "GET //metrics", "GET /metrics//", "GET /metrics"]
--- error_code eval
[404, 404, 404, 403]



=== TEST 7c: defarm_health serves /metrics
--- config
    location = /metrics {
        defarm_health on;
    }
--- request
GET /metrics
--- error_code: 200
--- response_body_like: ^# HELP defarm_



=== TEST 8: echo renders the parsed body back
--- request
POST /api/echo
{"a":[1,-2.5e3,"x\"y\u00e9",null,true,false],"b":{"c":{}},"d":[]}
--- more_headers
Content-Type: application/json
--- error_code: 200
--- response_body: {"a":[1,-2.5e3,"x\"yé",null,true,false],"b":{"c":{}},"d":[]}



=== TEST 9: malformed JSON is 400 validation_error
--- request
POST /api/echo
{"a": [1, 2}
--- more_headers
Content-Type: application/json
--- error_code: 400
--- response_body_like: ^\{"error":"Malformed JSON body: [^"]+ at byte \d+","error_kind":"validation_error","trace_id":"[0-9a-f]{32}","status":400\}$



=== TEST 10: trailing garbage after a JSON value is refused
--- request
POST /api/echo
{"a":1} {"b":2}
--- more_headers
Content-Type: application/json
--- error_code: 400
--- response_body_like: "error_kind":"validation_error"



=== TEST 11: empty body is 400
--- request
POST /api/echo
--- more_headers
Content-Type: application/json
--- error_code: 400
--- response_body_like: "error":"Request body is required","error_kind":"validation_error"



=== TEST 12: a non-JSON content type is 415
--- request
POST /api/echo
a=1&b=2
--- more_headers
Content-Type: application/x-www-form-urlencoded
--- error_code: 415
--- response_body_like: "error":"Content-Type must be application/json","error_kind":"unsupported_media_type"



=== TEST 13: JSON content type with parameters is accepted
--- request
POST /api/echo
[1]
--- more_headers
Content-Type: application/json; charset=utf-8
--- error_code: 200
--- response_body: [1]



=== TEST 14: body over client_max_body_size is a JSON 413
--- request eval
"POST /api/echo\n[" . ("1," x 1000) . "1]"
--- more_headers
Content-Type: application/json
--- error_code: 413
--- response_headers_like
X-Request-Id: ^[0-9a-f]{32}$
--- response_body_like: ^\{"error":"Request body too large","error_kind":"payload_too_large","trace_id":"[0-9a-f]{32}","status":413\}$



=== TEST 15: nesting deeper than defarm_json_max_depth is refused
--- config
    location / {
        defarm_api on;
        defarm_echo on;
        defarm_json_max_depth 3;
    }
--- request
POST /api/echo
[[[[1]]]]
--- more_headers
Content-Type: application/json
--- error_code: 400
--- response_body_like: "error":"JSON body is nested too deeply"



=== TEST 16: nesting at the limit is accepted
--- config
    location / {
        defarm_api on;
        defarm_echo on;
        defarm_json_max_depth 3;
    }
--- request
POST /api/echo
[[[1]]]
--- more_headers
Content-Type: application/json
--- error_code: 200
--- response_body: [[[1]]]



=== TEST 17: more values than defarm_json_max_values is refused
--- config
    location / {
        defarm_api on;
        defarm_echo on;
        defarm_json_max_values 5;
    }
--- request
POST /api/echo
[1,2,3,4,5]
--- more_headers
Content-Type: application/json
--- error_code: 400
--- response_body_like: "error":"JSON body has too many values"



=== TEST 18: \u0000 inside a string is refused
--- request
POST /api/echo
{"a":"x\u0000y"}
--- more_headers
Content-Type: application/json
--- error_code: 400
--- response_body_like: "error":"JSON strings must not contain \\\\u0000"



=== TEST 19: invalid UTF-8 in a string is refused
--- request eval
"POST /api/echo\n{\"a\":\"\xff\xfe\"}"
--- more_headers
Content-Type: application/json
--- error_code: 400
--- response_body_like: "error_kind":"validation_error"



=== TEST 20: a lone surrogate escape is refused (fuzz/regressions/json)
--- request eval
"POST /api/echo\n{\"a\":\"x\\ude00\"}"
--- more_headers
Content-Type: application/json
--- error_code: 400
--- response_body_like: "error":"JSON strings must be valid UTF-8



=== TEST 21: an overlong form is refused
--- request eval
"POST /api/echo\n{\"\xc0\xaf\":1}"
--- more_headers
Content-Type: application/json
--- error_code: 400
--- response_body_like: "error":"JSON strings must be valid UTF-8



=== TEST 22: echo is off unless defarm_echo is on
--- config
    location / {
        defarm_api on;
    }
--- request
POST /api/echo
{}
--- more_headers
Content-Type: application/json
--- error_code: 404
--- response_body_like: "error_kind":"not_found"



=== TEST 23: defarm_health serves only the service routes
--- config
    location / {
        defarm_health on;
    }
--- request eval
["GET /health", "GET /version", "GET /api/nope"]
--- error_code eval
[200, 200, 404]



=== TEST 24: error_page to defarm_errors turns nginx's own errors into JSON
--- config
    error_page 404 @defarm_error;
    location /static/ {
        root html;
    }
    location @defarm_error {
        defarm_errors on;
    }
--- request
GET /static/missing.txt
--- error_code: 404
--- response_headers_like
X-Request-Id: ^[0-9a-f]{32}$
--- response_body_like: ^\{"error":"Not found","error_kind":"not_found","trace_id":"[0-9a-f]{32}","status":404\}$



=== TEST 25: a 5xx error is logged at error level
--- config
    location = /boom {
        return 502;
        error_page 502 @defarm_error;
    }
    location @defarm_error {
        defarm_errors on;
    }
--- request
GET /boom
--- error_code: 502
--- response_body_like: "error_kind":"external_error"
--- error_log eval
qr/\[error\] .*defarm_error error_kind=external_error status=502/



=== TEST 26: responses outside defarm locations are left alone
--- config
    location = /plain {
        return 200 "plain\n";
    }
--- request
GET /plain
--- response_headers
!X-Request-Id
--- response_body
plain
