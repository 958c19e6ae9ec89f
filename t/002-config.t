# nginx -t accepts good configurations and rejects bad ones clearly.

use Test::Nginx::Socket 'no_plan';

repeat_each(1);
no_shuffle();

run_tests();

__DATA__

=== TEST 1: defarm_api takes on|off
--- config
    location / {
        defarm_api yes;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid value "yes" in "defarm_api" directive, it must be "on" or "off"/



=== TEST 2: defarm_json_max_depth must be a number in range
--- config
    location / {
        defarm_api on;
        defarm_json_max_depth 1000;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*value must be between 1 and 128 in .*nginx\.conf:\d+/



=== TEST 3: defarm_json_max_values must be a number
--- config
    location / {
        defarm_api on;
        defarm_json_max_values lots;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*"defarm_json_max_values" directive invalid number in .*nginx\.conf:\d+/



=== TEST 4: defarm_api cannot share a location with another content handler
--- config
    location / {
        proxy_pass http://127.0.0.1:1;
        defarm_api on;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*"defarm_api" directive conflicts with another content handler in this location/



=== TEST 5: defarm_api and defarm_errors cannot share a location
--- config
    location / {
        defarm_api on;
        defarm_errors on;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*"defarm_api" already serves the health routes/



=== TEST 6: defarm_api is not allowed at server level
--- config
    defarm_api on;
--- must_die
--- error_log eval
qr/\[emerg\] .*"defarm_api" directive is not allowed here/



=== TEST 7: defarm_redis: retry_max below 100ms is refused
--- http_config
    defarm_redis 127.0.0.1:6379 retry_max=10ms;
--- config
    location / {
        defarm_api on;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*"defarm_redis" directive retry_max must be at least 100ms/



=== TEST 8: defarm_redis: an unknown parameter is refused
--- http_config
    defarm_redis 127.0.0.1:6379 db=16;
--- config
    location / {
        defarm_api on;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*defarm_redis: invalid parameter "db=16"/



=== TEST 9: defarm_redis: a host that does not resolve is refused at nginx -t
--- http_config
    defarm_redis no-such-host.invalid:6379;
--- config
    location / {
        defarm_api on;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*defarm_redis: "no-such-host\.invalid:6379" could not be resolved/



=== TEST 10: defarm_redis without Redis running: nginx starts, /health/redis is 503
--- http_config
    defarm_redis 127.0.0.1:1 connect_timeout=100ms retry_max=100ms;
--- config
    location / {
        defarm_api on;
    }
--- request
GET /health/redis
--- error_code: 503
--- response_body_like: "status":"disconnected"



=== TEST 11: defarm_cache: a max_value over an eighth of the zone is refused
--- http_config
    defarm_cache zone=cfg_mv:64k max_value=16k;
--- config
    location / {
        defarm_api on;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*"defarm_cache" directive has a max_value over an eighth of its zone/



=== TEST 12: defarm_cache: a max_value that is not a size is refused
--- http_config
    defarm_cache zone=cfg_mv2:1m max_value=lots;
--- config
    location / {
        defarm_api on;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*defarm_cache: invalid parameter "max_value=lots"/



=== TEST 13: defarm_json_max_memory below 1k is refused
--- config
    location / {
        defarm_api on;
        defarm_json_max_memory 100;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*"defarm_json_max_memory" must be at least 1k/
