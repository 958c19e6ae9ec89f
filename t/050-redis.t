# Redis shared by two nginx nodes (two servroots, two ports, one
# PostgreSQL, one Redis of this test's own): an API key's hourly limit is
# counted across both; a change on one node drops the other node's cached
# record; Redis stopped, paused or slow never stops or hangs a request
# (this node counts alone meanwhile, and says so), and the link comes back
# by itself.

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use Time::HiRes ();
use DefarmTest;

my $T = valgrind() ? 60 : 15;
my $json = JSON::PP->new->utf8;
my $dir = "$ENV{TEST_NGINX_SERVROOT}-redis";

my (undef, $secret_file) = jwt_secret();
my $port = redis_start($dir);
ok($port, "a Redis of our own on port $port");

sub node {
    my ($name) = @_;
    return start_nginx(
        name   => $name,
        http   => db_config(size => 2) . "
    defarm_cache zone=$name:1m ttl=1h;
    defarm_redis 127.0.0.1:$port timeout=50ms connect_timeout=1s
                 retry_max=500ms;
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;",
        server => '
        location / {
            defarm_api on;
            defarm_echo on;
        }');
}

my $a = node('redis-a');
my $b = node('redis-b');

for my $ng ($a, $b) {
    ok(wait_until(sub { http($ng, GET => '/health/redis')->{status} == 200 },
                  $T, "$ng->{name} connects"),
       "$ng->{name}: /health/redis says connected");
}

my $res = http($a, GET => '/health/redis');
is(eval { $json->decode($res->{body})->{status} }, 'connected',
   'status connected');

sub body { my ($res) = @_; eval { $json->decode($res->{body}) } // {} }

my %j = (headers => { 'Content-Type' => 'application/json' });
my $user = "t050_$$";

$res = http($a, POST => '/api/auth/register', %j,
            body => $json->encode({ username => $user,
                                    password => 'Str0ng!pass',
                                    email => "$user\@example.com" }));
my $token = body($res)->{token} // '';
my %auth = (headers => { 'Content-Type' => 'application/json',
                         Authorization => "Bearer $token" });

sub new_key {
    my (%key) = @_;
    my $ng = delete $key{node} // $a;
    my $res = http($ng, POST => '/api/api-keys', %auth,
                   body => $json->encode({ name => 'k',
                                           organization_type => 'External',
                                           %key }));
    return (body($res)->{api_key} // '', body($res)->{metadata}{id} // '');
}

sub by_key {
    my ($ng, $key) = @_;
    return http($ng, GET => '/api/echo/auth',
                headers => { 'X-API-Key' => $key });
}

# a window that ends mid-test would reset the count: start in a fresh hour
my $left = 3600 - time() % 3600;
sleep $left + 1 if $left < 20;

# 1. one limit across both nodes

my ($key) = new_key(rate_limit_per_hour => 6);
my (@ok, @limited, @remaining);

for my $i (1 .. 10) {
    my $ng = $i % 2 ? $a : $b;
    my $r = by_key($ng, $key);
    push @ok, $ng->{name} if $r->{status} == 200;
    push @limited, $ng->{name} if $r->{status} == 429;
    push @remaining, $r->{headers}{'x-ratelimit-remaining'} // '-';
}

is(scalar @ok, 6, 'a key limited to 6 per hour: exactly 6 successes '
                  . 'across the two nodes');
is(scalar @limited, 4, 'and 4 refusals');
is("@remaining", '5 4 3 2 1 0 0 0 0 0',
   'X-RateLimit-Remaining counts down across the nodes');
ok((grep { $_ eq 'redis-a' } @ok) && (grep { $_ eq 'redis-b' } @ok),
   'both nodes served some');

# 2. a change on node A reaches node B's cache

my ($key2, $id2) = new_key();
is(by_key($b, $key2)->{status}, 200, 'node B caches the key');
is(by_key($b, $key2)->{status}, 200, 'and serves it from its cache');

my $t0 = Time::HiRes::time();
$res = http($a, POST => "/api/api-keys/$id2/revoke", %auth);
is($res->{status}, 200, 'node A revokes the key');

my $t1;
ok(wait_until(sub { if (by_key($b, $key2)->{status} == 401) {
                        $t1 //= Time::HiRes::time(); return 1 }
                    return 0 }, $T, 'B sees the revocation'),
   'node B refuses the revoked key (its cached record was dropped)');
diag(sprintf("invalidation delay A -> B: %.1f ms (revoke sent to first "
             . "401 on B)", 1000 * (($t1 // $t0) - $t0)));

ok(metric($a, 'defarm_redis_invalidations_published_total') >= 1,
   'A published the invalidation');
ok(metric($b, 'defarm_redis_invalidations_applied_total') >= 1,
   'B applied it');

# 3. Redis paused: the command's budget runs out, the request goes on

my ($key3) = new_key(rate_limit_per_hour => 100);
is(by_key($a, $key3)->{status}, 200, 'a fresh key works');

my $mark = $a->log_mark;
my $timeouts = metric($a, 'defarm_redis_timeouts_total') // 0;
kill 'STOP', redis_pid($dir);

my $start = Time::HiRes::time();
$res = by_key($a, $key3);
my $took = Time::HiRes::time() - $start;
is($res->{status}, 200, 'Redis paused: the request is still served');
is($res->{headers}{'x-ratelimit-limit'}, 100, 'with its limit counted');
is(metric($a, 'defarm_redis_timeouts_total'), $timeouts + 1,
   'after the command timed out');
diag(sprintf("request while Redis was paused: %.1f ms (budget 50 ms)",
             1000 * $took));
like($a->log($mark), qr/Redis unavailable for rate limits/,
     'and the fallback is in the log');

# a client that leaves while its command is in flight

abort_request($a, GET => '/api/echo/auth',
              headers => { 'X-API-Key' => $key3 }, after => 0.02);
ok(wait_until(sub { $a->log($mark) =~ /client prematurely closed/ },
              $T, 'abort'),
   'the aborted request is let go while its command is in flight');

# a Redis that stops answering without closing is let go, not waited on

is(by_key($a, $key3)->{status}, 200, "paused, request $_") for 2, 3;
ok(wait_until(sub { http($a, GET => '/health/redis')->{status} == 503 },
              $T, 'link dropped'),
   'after 3 timeouts in a row the link is dropped (/health/redis 503)');
like($a->log($mark), qr/3 commands in a row timed out, reconnecting/,
     'and the log says why');
is(by_key($a, $key3)->{status}, 200,
   'while it reconnects, requests are served without waiting for Redis');

kill 'CONT', redis_pid($dir);
is(http($a, GET => '/health')->{status}, 200,
   'the worker serves on after the abort');
ok(wait_until(sub { http($a, GET => '/health/redis')->{status} == 200 },
              $T, 'back'), 'Redis answers again: the link is back');

# 4. Redis stopped and started again

my ($key4, $id4) = new_key();
is(by_key($b, $key4)->{status}, 200, 'node B caches another key');

redis_stop($dir);

ok(wait_until(sub { http($a, GET => '/health/redis')->{status} == 503 },
              $T, 'A notices'), 'Redis stopped: /health/redis is 503');

$res = by_key($a, $key3);
is($res->{status}, 200, 'requests by key are still served');
ok($res->{headers}{'x-ratelimit-remaining'},
   'counted in this node meanwhile');

# a change made while the nodes cannot talk is not lost either

is(http($a, POST => "/api/api-keys/$id4/revoke", %auth)->{status}, 200,
   'node A revokes a key while Redis is down');
is(by_key($a, $key4)->{status}, 401, 'node A refuses it at once');

redis_start($dir);

for my $ng ($a, $b) {
    ok(wait_until(sub { http($ng, GET => '/health/redis')->{status} == 200 },
                  $T, "$ng->{name} reconnects"),
       "$ng->{name} reconnects by itself");
}

ok(metric($a, 'defarm_redis_reconnects_total') >= 1, 'reconnects counted');
ok(wait_until(sub { by_key($b, $key4)->{status} == 401 }, $T, 'B catches up'),
   'node B refuses the key revoked during the outage');
is(by_key($a, $key3)->{status}, 200, 'and the shared count resumes');

for my $ng ($a, $b) {
    unlike($ng->log, qr/\[(alert|crit|emerg)\]/, "$ng->{name}: no alert");
    stop_nginx($ng);
}

# 5. AUTH and SELECT on connect

sub redis_cli { my $out = `redis-cli -p $port @_ 2>&1`; chomp $out; $out }

is(redis_cli('CONFIG SET requirepass s3cret'), 'OK', 'Redis wants a password');

sub node_with {
    my ($name, $params) = @_;
    return start_nginx(
        name   => $name,
        http   => db_config(size => 2) . "
    defarm_cache zone=$name:1m ttl=1h;
    defarm_redis 127.0.0.1:$port $params;
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;",
        server => '
        location / {
            defarm_api on;
            defarm_echo on;
        }');
}

my $c = node_with('redis-auth', 'password=s3cret db=3');
ok(wait_until(sub { http($c, GET => '/health/redis')->{status} == 200 },
              $T, 'AUTH'), 'with the password: connected');

my ($key5, $id5) = new_key(node => $c);
is(by_key($c, $key5)->{status}, 200, 'a request by key');
like(redis_cli("-a s3cret --no-auth-warning -n 3 --scan "
               . "--pattern 'defarm:ratelimit:$id5:*'"),
     qr/^defarm:ratelimit:\Q$id5\E:\d+$/, 'counted in database 3 (SELECT)');
stop_nginx($c);

my $d = node_with('redis-badauth', 'password=wrong');
ok(wait_until(sub { $d->log =~ /AUTH failed/ }, $T, 'AUTH refused'),
   'a wrong password: the error log says AUTH failed');
is(http($d, GET => '/health/redis')->{status}, 503,
   'and /health/redis is 503');
is(by_key($d, $key5)->{status}, 200, 'requests are still served');
stop_nginx($d);

redis_cli('-a s3cret --no-auth-warning CONFIG SET requirepass ""');
redis_stop($dir);

done_testing();
