# Chaos: Redis SIGKILLed under a mixed load (item creates and reads with a
# token, item lists with an API key whose hourly count lives in Redis,
# logins), then started again on the same port; twice.  Redis is an
# optimisation here: no request may fail, hang or wait for it, nginx
# never crashes, every acknowledged create is in PostgreSQL, and the link
# comes back by itself (/health/redis connected) without a reload.
#
# Only with TEST_CHAOS=1 ("make chaos").

use strict;
use warnings;
use Test::More;
BEGIN {
    plan(skip_all => 'a chaos test: run it with make chaos')
        unless $ENV{TEST_CHAOS};
}
use DefarmTest;
use DefarmChaos;

my $T = valgrind() ? 60 : 20;
my (undef, $secret_file) = jwt_secret();
# not t/servroot-chaos-redis: start_nginx() empties that one
my $dir = "$ENV{TEST_NGINX_SERVROOT}-chaos-redis-data";
my $port = redis_start($dir);
ok($port, "a Redis of our own on port $port");

my $ng = start_nginx(
    name   => 'chaos-redis',
    http   => db_config(size => 4, queue => 64,
                        conninfo => "options='-c synchronous_commit=on'")
              . "
    defarm_cache zone=chaosredis:4m ttl=1h;
    defarm_redis 127.0.0.1:$port timeout=50ms connect_timeout=1s
                 retry_max=500ms;
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;",
    server => '
        location / { defarm_api on; }');

sub redis_status { json_body(http($ng, GET => '/health/redis'))->{status} // '' }

ok(wait_until(sub { redis_status() eq 'connected' }, $T, 'redis connected'),
   'nginx is connected to Redis');

my @users = map {
    my $u = api_user($ng, "chaos_redis_${_}_$$");
    $u->{name} = "chaos_redis_${_}_$$";
    $u->{key} = api_key($ng, $u);
    $u
} 1 .. 4;
ok($_->{token} && $_->{key}, "user $_->{name}: a token and a key") for @users;

my $baseline = rss_kb($ng->{pid});
my @rows;

for my $round (1, 2) {
    my $tag = "redis SIGKILL #$round";
    my $mark = $ng->log_mark;
    my $load = load_start($ng, users => \@users, procs => 6,
                          kinds => [qw(create read keyread login keyread)]);
    Time::HiRes::sleep(1);

    my $pid = redis_pid($dir);
    ok($pid && kill('KILL', $pid), "$tag: Redis ($pid) killed");
    ok(wait_until(sub { !DefarmTest::alive($pid) }, $T, 'redis gone'),
       "$tag: Redis is gone");
    ok(wait_until(sub { redis_status() ne 'connected' }, $T,
                  'nginx sees Redis gone'),
       "$tag: /health/redis says it is not connected");
    Time::HiRes::sleep(2);           # requests while Redis is down
    unlink "$dir/redis.pid";
    is(redis_start($dir), $port, "$tag: Redis started again on its port");
    ok(wait_until(sub { redis_status() eq 'connected' }, $T,
                  'redis connected again'),
       "$tag: nginx reconnected by itself");
    Time::HiRes::sleep(1);

    my $s = load_stop($load);
    my @crash = crash_lines($ng, $mark);
    ok(DefarmTest::alive($ng->{pid}), "$tag: nginx is alive");
    is(scalar @crash, 0, "$tag: no crash or alert in error.log")
        or diag(join "\n", @crash);
    is($s->{hung}, 0, "$tag: no request hung past its bound");
    outage_errors_ok($s, "$tag (no error at all)");
    cmp_ok($s->{kinds}{keyread} // 0, '>', 0, "$tag: API key requests ran");
    my $lost = lost_writes($s);
    is($lost, 0, "$tag: every acknowledged create is in PostgreSQL");
    note("$tag: slowest answer $s->{max_ms} ms");
    push @rows, { fault => $tag, requests => $s->{requests},
                  status => $s->{status}, hung => $s->{hung},
                  crashes => scalar @crash, lost => $lost,
                  rss => $baseline . ' -> ' . (rss_kb($ng->{pid}) // '?') };
}

fault_table(@rows);

stop_nginx($ng);
redis_stop($dir);
done_testing();
