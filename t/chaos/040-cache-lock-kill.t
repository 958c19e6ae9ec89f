# Chaos: a worker SIGKILLed while it holds the cache zone's lock (the
# defarm_echo diagnostic POST /api/echo/cache-lock/hold takes it and keeps
# it from a timer).  The master sees the worker die, frees the lock the
# dead pid held (nginx's ngx_unlock_mutexes: the zone's mutex records its
# holder's pid) and starts another worker; the cache works again without a
# reload.  Meanwhile a mixed load runs: while the lock is held the cache's
# requests get 503 storage_lock_timeout, the requests in flight on the
# killed worker lose their connection (at most one per client process),
# nothing hangs, and every acknowledged create is in PostgreSQL.
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
my $procs = 6;

my $ng = start_nginx(
    name   => 'chaos-lock',
    master => 1,
    http   => db_config(size => 4, queue => 64,
                        conninfo => "options='-c synchronous_commit=on'")
              . "
    defarm_cache zone=chaoslock:4m ttl=1h lock_timeout=50ms;
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;",
    server => '
        location / { defarm_api on; defarm_echo on; }');

my %j = (headers => { 'Content-Type' => 'application/json' });
my @users = map {
    my $u = api_user($ng, "chaos_lock_${_}_$$");
    $u->{name} = "chaos_lock_${_}_$$";
    $u
} 1 .. 4;
ok($_->{token}, "user $_->{name} registered") for @users;

my ($worker) = children_of($ng->{pid});
ok($worker, "the worker: $worker");
my $baseline = rss_kb($worker);

my $tag = 'worker SIGKILL with the lock';
my $mark = $ng->log_mark;
my $load = load_start($ng, users => \@users, procs => $procs);
Time::HiRes::sleep(1);

my $res = http($ng, POST => '/api/echo/cache-lock/hold', body => '{"ms":60000}',
               %j);
is($res->{body}, '{"held":true}', "$tag: the worker holds the lock");
$res = http($ng, GET => '/api/echo/cache/user:x');
is(json_body($res)->{error_kind}, 'storage_lock_timeout',
   "$tag: another request finds it held: 503 storage_lock_timeout");
Time::HiRes::sleep(0.5);

kill 'KILL', $worker;
my $new;
ok(wait_until(sub { ($new) = grep { $_ != $worker } children_of($ng->{pid});
                    $new }, $T, 'a new worker'),
   "$tag: the master started another worker");
ok(wait_until(sub {
        (http($ng, PUT => '/api/echo/cache/user:x', body => '{"value":"y"}',
              %j)->{status} // 0) == 200
    }, $T, 'the cache works again'),
   "$tag: the cache works again (the lock was freed)");
$res = http($ng, GET => '/api/echo/cache/user:x');
is($res->{status}, 200, "$tag: and reads back");
Time::HiRes::sleep(1);

my $s = load_stop($load);
my $log = $ng->log($mark);
my @crash = crash_lines($ng, $mark);
my @expected = grep { /worker process $worker exited on signal 9/
                      || /shared memory zone "chaoslock" was locked by $worker/ }
               @crash;
like($log, qr/worker process $worker exited on signal 9/,
     "$tag: the master saw the deliberate kill");
like($log, qr/shared memory zone "chaoslock" was locked by $worker/,
     "$tag: and freed the lock the dead worker held");
my @other = grep { !/ $worker / && !/by $worker\b/ } @crash;
is(scalar @other, 0, "$tag: no other crash or alert")
    or diag(join "\n", @other);

is($s->{hung}, 0, "$tag: no request hung past its bound");
my @bad = grep {
    my $st = $_->{status};
    defined $st && $st !~ /^20[01]$/
    && !($st == 503 && ($_->{ekind} // '') eq 'storage_lock_timeout')
} @{ $s->{records} };
is(scalar @bad, 0, "$tag: every error a 503 storage_lock_timeout")
    or diag(join "\n", map { JSON::PP->new->canonical->encode($_) }
                       @bad[0 .. ($#bad < 9 ? $#bad : 9)]);
my $reset = grep { !defined $_->{status} } @{ $s->{records} };
cmp_ok($reset, '<=', $procs,
       "$tag: connections lost only by requests on the killed worker"
       . " ($reset)");
my $lost = lost_writes($s);
is($lost, 0, "$tag: every acknowledged create is in PostgreSQL");
note("$tag: slowest answer $s->{max_ms} ms");

fault_table({ fault => $tag, requests => $s->{requests},
              status => $s->{status}, hung => $s->{hung},
              crashes => scalar(@crash) . ' (1 meant)', lost => $lost,
              rss => "$baseline -> " . (rss_kb($new) // '?')
                     . ' (a new worker)' });

stop_nginx($ng);
done_testing();
