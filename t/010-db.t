# PostgreSQL through the pool: configuration, round trips, validation.
# Concurrency, outages and client aborts are in t/011-db-pool.t.

use Test::Nginx::Socket 'no_plan';

repeat_each(1);
no_shuffle();

our $DbConfig = <<"_EOC_";
    defarm_db "host=$ENV{TEST_NGINX_PG_HOST} port=$ENV{TEST_NGINX_PG_PORT} dbname=$ENV{TEST_NGINX_PG_DATABASE} user=$ENV{TEST_NGINX_PG_USER}" size=2;
_EOC_

add_block_preprocessor(sub {
    my $block = shift;

    if (!defined $block->http_config) {
        $block->set_value("http_config", $DbConfig);
    }

    if (!defined $block->config) {
        $block->set_value("config", <<'_EOC_');
    location / {
        defarm_api on;
        defarm_echo on;
    }
    location = /metrics {
        defarm_health on;
    }
_EOC_
    }
});

run_tests();

__DATA__

=== TEST 1: /health/db does a round trip and reports the pool
--- request
GET /health/db
--- error_code: 200
--- response_headers
Content-Type: application/json
--- response_body_like: ^\{"status":"healthy","latency_ms":\d+\.\d{3},"database":\{"status":"connected","message":"PostgreSQL operational","timestamp":"[^"]+"\},"pool":\{"worker_pid":\d+,"size":2,"connections":[12],"idle":[0-2],"busy":[01],"waiting":0,"served":\d+,"errors":0,"timeouts":0,"exhausted":0,"unavailable":0\}\}$
--- no_error_log
[error]



=== TEST 2: a value goes through PostgreSQL and back
--- request
GET /api/echo/db/hello%20world
--- error_code: 200
--- response_body: {"value":"hello world","length":11}



=== TEST 3: quotes and SQL in a parameter stay data
--- request
POST /api/echo/db
{"value":"it's'; DROP TABLE users; -- $1 %s \\ \"q\""}
--- more_headers
Content-Type: application/json
--- error_code: 200
--- response_body: {"value":"it's'; DROP TABLE users; -- $1 %s \\ \"q\"","length":39}



=== TEST 4: the users table is still there afterwards
--- request
GET /api/echo/db/x
--- error_code: 200
--- response_body: {"value":"x","length":1}
--- no_error_log
[error]



=== TEST 5: null is SQL NULL
--- request
POST /api/echo/db
{"value":null}
--- more_headers
Content-Type: application/json
--- error_code: 200
--- response_body: {"value":null,"length":null}



=== TEST 6: multi-byte text keeps its bytes
--- request
POST /api/echo/db
{"value":"caf\u00e9 \u65e5\u672c"}
--- more_headers
Content-Type: application/json
--- error_code: 200
--- response_body: {"value":"café 日本","length":12}



=== TEST 7: a missing value is a validation error
--- request
POST /api/echo/db
{"sleep_ms":1}
--- more_headers
Content-Type: application/json
--- error_code: 400
--- response_body_like: ^\{"error":"\\"value\\" must be a string or null, not missing","error_kind":"validation_error"



=== TEST 8: a value of the wrong type is a validation error
--- request
POST /api/echo/db
{"value":42}
--- more_headers
Content-Type: application/json
--- error_code: 400
--- response_body_like: "error":"\\"value\\" must be a string or null, not number","error_kind":"validation_error"



=== TEST 9: sleep_ms out of range
--- request
POST /api/echo/db
{"value":"x","sleep_ms":-1}
--- more_headers
Content-Type: application/json
--- error_code: 400
--- response_body_like: "error_kind":"validation_error"



=== TEST 10: a body that is not an object
--- request
POST /api/echo/db
["value"]
--- more_headers
Content-Type: application/json
--- error_code: 400
--- response_body_like: "error":"Body must be a JSON object"



=== TEST 11: without defarm_db, database routes answer 503
--- http_config
--- request
GET /health/db
--- error_code: 503
--- response_headers
Retry-After: 1
--- response_body_like: "error":"No database is configured \(defarm_db\)","error_kind":"database_unavailable"



=== TEST 12: metrics in Prometheus text
--- request eval
["GET /api/echo/db/a", "GET /metrics"]
--- error_code eval
[200, 200]
--- response_headers eval
["Content-Type: application/json", "Content-Type: text/plain; version=0.0.4"]
--- response_body_like eval
[qr/"value":"a"/, qr/^# HELP defarm_workers .*\ndefarm_workers 1\n.*defarm_db_pool_size 2\n.*# TYPE defarm_db_queries_total counter\ndefarm_db_queries_total [1-9]\d*\n/s]



=== TEST 13: an invalid connection string fails nginx -t
--- http_config
    defarm_db "host=127.0.0.1 nosuchoption=1";
--- must_die
--- error_log eval
qr/\[emerg\] .*defarm_db: invalid connection string: invalid connection option "nosuchoption"/



=== TEST 14: an unknown pool parameter fails nginx -t
--- http_config
    defarm_db "host=127.0.0.1" sizes=4;
--- must_die
--- error_log eval
qr/\[emerg\] .*defarm_db: invalid parameter "sizes=4"/



=== TEST 15: a pool size of 0 fails nginx -t
--- http_config
    defarm_db "host=127.0.0.1" size=0;
--- must_die
--- error_log eval
qr/\[emerg\] .*defarm_db: invalid parameter "size=0"/



=== TEST 16: a host name that does not resolve fails nginx -t
--- http_config
    defarm_db "host=no-such-host.invalid dbname=x";
--- must_die
--- error_log eval
qr/\[emerg\] .*defarm_db: host "no-such-host.invalid" could not be resolved/



=== TEST 17: defarm_db twice fails nginx -t
--- http_config
    defarm_db "host=127.0.0.1";
    defarm_db "host=127.0.0.1";
--- must_die
--- error_log eval
qr/\[emerg\] .*"defarm_db" directive is duplicate/



=== TEST 18: defarm_db_query_timeout takes a time
--- config
    location / {
        defarm_api on;
        defarm_db_query_timeout soon;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*"defarm_db_query_timeout" directive invalid value/
