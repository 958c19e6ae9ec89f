# Self-test of t/lib/Test/Nginx/Socket.pm using stock nginx features only
# (no custom module needed).  Run: prove -I t/lib t/00-runner-selftest.t
use Test::Nginx::Socket;

repeat_each(2);
plan tests => repeat_each() * 48;

no_shuffle();
run_tests();

__DATA__

=== TEST 1: plain return, exact body, fractional timeout
--- config
    location /hello { return 200 "hello\n"; }
--- request
GET /hello
--- timeout: 1.5
--- response_body
hello
--- no_error_log
[error]



=== TEST 2: 404 status
--- config
    location /nope { return 404; }
--- request
GET /nope
--- error_code: 404
--- response_body_like: 404 Not Found



=== TEST 3: response headers, absent header, header regex
--- config
    location /h {
        add_header X-Foo bar;
        return 200 "ok\n";
    }
--- request
GET /h
--- response_headers
X-Foo: bar
!X-Absent
Content-Type: text/plain
--- response_headers_like
Server: ^nginx



=== TEST 4: two requests in one block
--- config
    location /a { return 200 "a\n"; }
    location /b { return 404; }
--- request eval
["GET /a", "GET /b"]
--- error_code eval
[200, 404]
--- response_body_like eval
["^a\n\\z", "404 Not Found"]



=== TEST 5: POST body (trailing newline not sent) echoed through a proxy; port expansion
--- config
    location /echo {
        client_body_in_single_buffer on;
        add_header X-Body $request_body always;
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/back;
    }
    location /back { return 200 "len=$http_content_length\n"; }
--- request
POST /echo
hello world
--- response_headers
X-Body: hello world
--- response_body
len=11



=== TEST 6: chunked response is decoded
--- config
    location /chunked {
        sub_filter a b;
        sub_filter_once off;
        sub_filter_types text/plain;
        return 200 "aaa\n";
    }
--- request
GET /chunked
--- response_headers
Transfer-Encoding: chunked
--- response_body
bbb



=== TEST 7: error_log, no_error_log and grep_error_log for a missing file
--- request
GET /nofile.html
--- error_code: 404
--- error_log
open()
No such file or directory
--- no_error_log
[alert]
[crit]
--- grep_error_log eval: qr/\[error\]/
--- grep_error_log_out
[error]



=== TEST 8: user_files with variable expansion
--- user_files
>>> index.html
<p>index</p>
>>> sub/a.txt
port $TEST_NGINX_SERVER_PORT
--- request
GET /sub/a.txt
--- response_body eval
"port $ENV{TEST_NGINX_SERVER_PORT}\n"



=== TEST 9: invalid directive makes nginx die
--- config
    bogus_directive_xyz on;
--- must_die
--- error_log
unknown directive "bogus_directive_xyz"



=== TEST 10: client gives up waiting (timeout + abort) while nginx reads the body
--- config
    location /echo { proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/back; }
    location /back { return 200; }
--- raw_request eval
"POST /echo HTTP/1.1\r
Host: localhost\r
Content-Length: 10\r
Connection: close\r
\r
abc"
--- timeout: 0.5
--- abort
--- error_log
client prematurely closed connection
--- no_error_log
[alert]



=== TEST 11: more_headers
--- config
    location /mh { return 200 "$http_x_foo\n"; }
--- request
GET /mh
--- more_headers
X-Foo: abc
--- response_body
abc



=== TEST 12: raw_request
--- config
    location /r { return 200 "raw\n"; }
--- raw_request eval
"GET /r HTTP/1.0\r\nHost: localhost\r\n\r\n"
--- response_body
raw



=== TEST 13: explicit HTTP/1.0 request line
--- config
    location /v { return 200 "$server_protocol\n"; }
--- request
GET /v HTTP/1.0
--- response_body
HTTP/1.0



=== TEST 14: error_code_like and response_body_unlike
--- config
    location /busy { return 503; }
--- request
GET /busy
--- error_code_like: ^5
--- response_body_unlike: hello



=== TEST 15: per-block log_level
--- config
    location /h { return 200 "ok\n"; }
--- log_level: warn
--- request
GET /h
--- no_error_log
[debug]



=== TEST 16: init runs before the request
--- init
open my $fh, '>', "$ENV{TEST_NGINX_HTML_DIR}/init.txt" or die $!;
print $fh "from init\n";
close $fh;
--- request
GET /init.txt
--- response_body
from init



=== TEST 17: HEAD has no body
--- config
    location /h { return 200 "ok\n"; }
--- request
HEAD /h
--- response_body



=== TEST 18: skip_nginx with a version condition that holds (2 tests skipped)
--- skip_nginx: 2: > 0.1.0
--- request
GET /whatever
--- response_body
never checked
