# The shared-memory cache: set, get, expire, evict, delete, invalidate a
# family, and what a request gets while another holds the zone's lock.

use Test::Nginx::Socket 'no_plan';

repeat_each(1);
no_shuffle();

add_block_preprocessor(sub {
    my $block = shift;

    if (!defined $block->http_config) {
        $block->set_value("http_config", <<'_EOC_');
    defarm_cache zone=defarm_test:1m ttl=60s;
_EOC_
    }

    if (!defined $block->config) {
        $block->set_value("config", <<'_EOC_');
    location / {
        defarm_api on;
        defarm_echo on;
        add_header X-Cache $defarm_cache always;
        add_header X-Lock-Ms $defarm_lock_ms always;
    }
    location = /metrics {
        defarm_health on;
    }
_EOC_
    }

    if (!defined $block->more_headers) {
        $block->set_value("more_headers", "Content-Type: application/json");
    }
});

run_tests();

__DATA__

=== TEST 1: set then get
--- request eval
["PUT /api/echo/cache/user:alice\n{\"value\":\"{\\\"id\\\":1}\"}",
 "GET /api/echo/cache/user:alice"]
--- error_code eval
[200, 200]
--- response_body eval
["{\"stored\":true}",
 "{\"key\":\"user:alice\",\"value\":\"{\\\"id\\\":1}\"}"]
--- response_headers eval
["X-Cache: ", "X-Cache: HIT"]
--- response_headers_like eval
["X-Lock-Ms: ^\\d+\\.\\d{3}\$", "X-Lock-Ms: ^\\d+\\.\\d{3}\$"]
--- no_error_log
[error]



=== TEST 2: a key never stored is a miss
--- request
GET /api/echo/cache/user:nobody
--- error_code: 404
--- response_headers
X-Cache: MISS
--- response_body_like: "error":"Key not in the cache","error_kind":"not_found"



=== TEST 3: values survive across requests (shared memory)
--- request eval
["PUT /api/echo/cache/k:1\n{\"value\":\"one\"}",
 "GET /api/echo/cache/k:1",
 "PUT /api/echo/cache/k:1\n{\"value\":\"uno\"}",
 "GET /api/echo/cache/k:1"]
--- error_code eval
[200, 200, 200, 200]
--- response_body eval
["{\"stored\":true}", "{\"key\":\"k:1\",\"value\":\"one\"}",
 "{\"stored\":true}", "{\"key\":\"k:1\",\"value\":\"uno\"}"]



=== TEST 4: an entry stored with a 1 ms ttl
--- request
PUT /api/echo/cache/short:1
{"value":"soon gone","ttl_ms":1}
--- error_code: 200



=== TEST 4b: is gone once its ttl has passed
--- init
select(undef, undef, undef, 0.05);
--- request
GET /api/echo/cache/short:1
--- error_code: 404
--- response_body_like: "error_kind":"not_found"



=== TEST 5: delete one key
--- request eval
["PUT /api/echo/cache/d:1\n{\"value\":\"x\"}",
 "DELETE /api/echo/cache/d:1",
 "GET /api/echo/cache/d:1",
 "DELETE /api/echo/cache/d:1"]
--- error_code eval
[200, 200, 404, 200]
--- response_body_like eval
["stored", "\\{\"deleted\":true\\}", "not_found", "\\{\"deleted\":false\\}"]



=== TEST 6: invalidating a family drops its keys and keeps the others
--- request eval
["PUT /api/echo/cache/item:a\n{\"value\":\"a\"}",
 "PUT /api/echo/cache/item:b\n{\"value\":\"b\"}",
 "PUT /api/echo/cache/circuit:c\n{\"value\":\"c\"}",
 "POST /api/echo/cache-invalidate\n{\"prefix\":\"item:\"}",
 "GET /api/echo/cache/item:a",
 "GET /api/echo/cache/item:b",
 "GET /api/echo/cache/circuit:c",
 "PUT /api/echo/cache/item:a\n{\"value\":\"again\"}",
 "GET /api/echo/cache/item:a"]
--- error_code eval
[200, 200, 200, 200, 404, 404, 200, 200, 200]
--- response_body_like eval
["stored", "stored", "stored", "invalidated", "not_found", "not_found",
 "\"value\":\"c\"", "stored", "\"value\":\"again\""]



=== TEST 7: a value larger than the first read buffer comes back whole
--- request eval
["PUT /api/echo/cache/big:1\n{\"value\":\"" . ("x" x 5000) . "\"}",
 "GET /api/echo/cache/big:1"]
--- error_code eval
[200, 200]
--- response_body eval
["{\"stored\":true}", "{\"key\":\"big:1\",\"value\":\"" . ("x" x 5000) . "\"}"]



=== TEST 8: a full zone evicts the least recently used entries
--- http_config
    defarm_cache zone=defarm_small:32k;
--- request eval
[(map { "PUT /api/echo/cache/fill:$_\n{\"value\":\"" . ("v" x 1000) . "\"}" } 1 .. 60),
 "GET /api/echo/cache/fill:60",
 "GET /api/echo/cache/fill:1",
 "GET /metrics"]
--- error_code eval
[(200) x 60, 200, 404, 200]
--- response_body_like eval
[("stored") x 60, "\"key\":\"fill:60\"", "not_found",
 qr/defarm_cache_evictions_total [1-9]/]



=== TEST 8b: a value too large for the zone is refused without evicting anything
--- http_config
    defarm_cache zone=defarm_tiny:32k;
--- request eval
[(map { "PUT /api/echo/cache/hot:$_\n{\"value\":\"v$_\"}" } 1 .. 5),
 "PUT /api/echo/cache/huge:1\n{\"value\":\"" . ("x" x 40000) . "\"}",
 "PUT /api/echo/cache/over:1\n{\"value\":\"" . ("x" x 4096) . "\"}",
 (map { "GET /api/echo/cache/hot:$_" } 1 .. 5),
 "GET /api/echo/cache/huge:1",
 "GET /metrics"]
--- error_code eval
[(200) x 7, (200) x 5, 404, 200]
--- response_body_like eval
[("\\{\"stored\":true\\}") x 5, "\\{\"stored\":false\\}",
 "\\{\"stored\":false\\}",
 (map { "\"value\":\"v$_\"" } 1 .. 5), "not_found",
 qr/defarm_cache_evictions_total 0\n.*defarm_cache_oversize_total 2\n/s]



=== TEST 8c: max_value sets the bound
--- http_config
    defarm_cache zone=defarm_mv:1m max_value=100;
--- request eval
["PUT /api/echo/cache/mv:1\n{\"value\":\"" . ("x" x 90) . "\"}",
 "PUT /api/echo/cache/mv:2\n{\"value\":\"" . ("x" x 97) . "\"}"]
--- error_code eval
[200, 200]
--- response_body eval
["{\"stored\":true}", "{\"stored\":false}"]



=== TEST 9: while another holds the lock, a request gets 503 storage_lock_timeout
--- request eval
["POST /api/echo/cache-lock/hold\n{\"ms\":10000}",
 "GET /api/echo/cache/user:alice",
 "POST /api/echo/cache-lock/release",
 "PUT /api/echo/cache/user:alice\n{\"value\":\"back\"}",
 "GET /api/echo/cache/user:alice"]
--- error_code eval
[200, 503, 200, 200, 200]
--- response_headers eval
["", "Retry-After: 1", "", "", ""]
--- response_body_like eval
["\\{\"held\":true\\}",
 "^\\{\"error\":\"Service temporarily busy, please retry\",\"error_kind\":\"storage_lock_timeout\",\"trace_id\":\"[0-9a-f]{32}\",\"status\":503\\}\$",
 "\\{\"released\":true\\}", "stored", "\"value\":\"back\""]
--- error_log eval
qr/\[error\] .*defarm_error error_kind=storage_lock_timeout status=503/



=== TEST 10: the held lock is released by its timer too
--- request eval
["POST /api/echo/cache-lock/hold\n{\"ms\":1}",
 "PUT /api/echo/cache/t:1\n{\"value\":\"x\"}"]
--- init
select(undef, undef, undef, 0.05);
--- error_code eval
[200, 200]



=== TEST 11: lock metrics count the timeout and the waits
--- request eval
["POST /api/echo/cache-lock/hold\n{\"ms\":10000}",
 "GET /api/echo/cache/x:1",
 "POST /api/echo/cache-lock/release",
 "GET /metrics"]
--- error_code eval
[200, 503, 200, 200]
--- response_body_like eval
["held", "storage_lock_timeout", "released",
 qr/defarm_cache_lock_total\{outcome="timeout"\} [1-9].*defarm_cache_lock_wait_ms_bucket\{le="\+Inf"\} [1-9]/s]



=== TEST 12: without defarm_cache the routes bypass it
--- http_config
--- request eval
["PUT /api/echo/cache/n:1\n{\"value\":\"x\"}", "GET /api/echo/cache/n:1"]
--- error_code eval
[200, 404]
--- response_headers eval
["X-Cache: BYPASS", "X-Cache: BYPASS"]



=== TEST 13: bad input to the cache routes
--- request eval
["PUT /api/echo/cache/k:1\n{\"value\":5}",
 "PUT /api/echo/cache/k:1\n{\"value\":\"x\",\"ttl_ms\":0}",
 "POST /api/echo/cache-invalidate\n{\"prefix\":\"item\"}",
 "POST /api/echo/cache-lock/hold\n{\"ms\":\"long\"}"]
--- error_code eval
[400, 400, 400, 400]
--- response_body_like eval
["\"value\\\\\" must be a string, not number", "ttl_ms", "key family", "\\\\\"ms\\\\\" must be an integer"]



=== TEST 14: defarm_cache needs a zone
--- http_config
    defarm_cache ttl=10s;
--- must_die
--- error_log eval
qr/\[emerg\] .*"defarm_cache" directive needs zone=name:size/



=== TEST 15: a lock_step longer than lock_timeout is refused
--- http_config
    defarm_cache zone=z:1m lock_timeout=10ms lock_step=20ms;
--- must_die
--- error_log eval
qr/\[emerg\] .*"defarm_cache" directive has a lock_step longer than its lock_timeout/



=== TEST 16: a zone too small is refused
--- http_config
    defarm_cache zone=z:1k;
--- must_die
--- error_log eval
qr/\[emerg\] .*defarm_cache zone "zone=z:1k" is too small/
