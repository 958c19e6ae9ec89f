# Chaos: nginx reloaded (SIGHUP to the master) five times under a mixed
# load.  Every request is answered (the listening socket is inherited, the
# old worker finishes what it holds), none fails or hangs, no process
# crashes, every acknowledged create is in PostgreSQL, the old workers all
# leave, and the one worker left serves.  bcrypt's cost is 10 so that
# logins are often in a crypt thread when a worker is told to exit (such
# a login was once left unanswered: "open socket left in connection").
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

my $ng = start_nginx(
    name   => 'chaos-hup',
    master => 1,
    http   => db_config(size => 4, queue => 64,
                        conninfo => "options='-c synchronous_commit=on'")
              . "
    defarm_cache zone=chaoshup:4m ttl=1h;
    defarm_bcrypt_cost 10;
    defarm_jwt_secret file=$secret_file;",
    server => '
        location / { defarm_api on; }');

my @users = map {
    my $u = api_user($ng, "chaos_hup_${_}_$$");
    $u->{name} = "chaos_hup_${_}_$$";
    $u
} 1 .. 4;
ok($_->{token}, "user $_->{name} registered") for @users;

my ($worker) = children_of($ng->{pid});
my $baseline = rss_kb($worker);
my $tag = 'HUP x5';
my $mark = $ng->log_mark;
my $load = load_start($ng, users => \@users, procs => 6);
Time::HiRes::sleep(1);

for my $n (1 .. 5) {
    my $m = $ng->log_mark;
    kill 'HUP', $ng->{pid};
    ok(wait_until(sub { $ng->log($m) =~ /start worker process/ }, $T,
                  "reload $n"),
       "$tag: reload $n started a new worker");
    Time::HiRes::sleep(0.5);
}

ok(wait_until(sub { children_of($ng->{pid}) == 1 }, $T, 'one worker left'),
   "$tag: the old workers all left");
Time::HiRes::sleep(0.5);

my $s = load_stop($load);
my @crash = crash_lines($ng, $mark);
is(scalar @crash, 0, "$tag: no crash or alert in error.log")
    or diag(join "\n", @crash);
is($s->{hung}, 0, "$tag: no request hung past its bound");
outage_errors_ok($s, "$tag (no error at all)");
my $lost = lost_writes($s);
is($lost, 0, "$tag: every acknowledged create is in PostgreSQL");
my $res = api_as($ng, $users[0], GET => '/api/items?limit=1');
is($res->{status}, 200, "$tag: the new worker serves");
($worker) = children_of($ng->{pid});
note("$tag: slowest answer $s->{max_ms} ms");

fault_table({ fault => $tag, requests => $s->{requests},
              status => $s->{status}, hung => $s->{hung},
              crashes => scalar @crash, lost => $lost,
              rss => "$baseline -> " . (rss_kb($worker) // '?')
                     . ' (a new worker)' });

stop_nginx($ng);
done_testing();
