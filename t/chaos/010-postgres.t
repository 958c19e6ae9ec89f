# Chaos: PostgreSQL stopped (pg_ctl stop -m fast), killed (SIGKILL of the
# postmaster and of every backend) and frozen (SIGSTOP of the postmaster
# and its backends, then SIGCONT) under a mixed load of item creates, item
# reads and logins.  For each fault: nginx never crashes, every request
# gets an answer within the client's bound, the errors during the outage
# are JSON 503/504 with an error_kind, every acknowledged create is in
# PostgreSQL afterwards, and requests succeed again without a reload.
#
# The test PostgreSQL runs with synchronous_commit=off (scripts/pg.sh), with
# which a commit acknowledged to the client can be lost when a backend or
# the postmaster is killed (crash recovery replays only the WAL that was
# written); the pool's sessions here ask for synchronous_commit=on, as a
# production server runs, so that "every acknowledged write is there" is
# a statement about the module.
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
    name   => 'chaos-pg',
    http   => db_config(size => 4, queue => 64, queue_timeout => '2s',
                        connect_timeout => '2s', retry_max => '500ms',
                        conninfo => "options='-c synchronous_commit=on'")
              . "
    defarm_db_query_timeout 3s;
    defarm_cache zone=chaospg:4m ttl=1h;
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;",
    server => '
        location / { defarm_api on; }');

my @users = map {
    my $u = api_user($ng, "chaos_pg_${_}_$$");
    $u->{name} = "chaos_pg_${_}_$$";
    $u
} 1 .. 4;
ok($users[$_]{token}, "user $_ registered") for 0 .. $#users;

my $baseline = rss_kb($ng->{pid});
my @rows;

# all three kinds succeed: the service is back
sub recovered {
    my ($tag) = @_;
    my $u = $users[0];
    my $ok = wait_until(sub {
        my $c = api_as($ng, $u, POST => '/api/items',
            { identifiers => [ { key => 'chaos', value => "rec-$tag-$$-"
                                 . int rand 1e9 } ],
              source_entry => '0b6f8f9e-1d2c-4c3b-9a8e-7f6d5c4b3a21' });
        return 0 unless ($c->{status} // 0) == 201;
        my $dfid = json_body($c)->{dfid};
        return (api_as($ng, $u, GET => "/api/items/$dfid")->{status} // 0)
               == 200
            && (api_login($ng, $u)->{status} // 0) == 200;
    }, $T, "$tag: a create, a read and a login succeed");
    ok($ok, "$tag: recovered without a reload");
}

# run the load, call $fault->() (which injects and ends the fault), then
# check and record
sub under_load {
    my ($tag, $fault, %o) = @_;
    my $mark = $ng->log_mark;
    my $load = load_start($ng, users => \@users, procs => 6);

    # some successes before the fault
    Time::HiRes::sleep(1);
    $fault->();
    recovered($tag);
    Time::HiRes::sleep(0.5);        # some successes after it too

    my $s = load_stop($load);
    my @crash = crash_lines($ng, $mark);

    ok(DefarmTest::alive($ng->{pid}), "$tag: nginx is alive");
    is(scalar @crash, 0, "$tag: no crash or alert in error.log")
        or diag(join "\n", @crash[0 .. ($#crash < 9 ? $#crash : 9)]);
    is($s->{hung}, 0, "$tag: no request hung past its bound");
    outage_errors_ok($s, $tag, 503, 504);
    cmp_ok(($s->{status}{503} // 0) + ($s->{status}{504} // 0), '>', 0,
           "$tag: the outage was seen (503/504 answered)")
        unless $o{maybe_unseen};
    cmp_ok(scalar @{ $s->{created} }, '>', 0, "$tag: creates acknowledged");
    my $lost = lost_writes($s);
    is($lost, 0, "$tag: every acknowledged create is in PostgreSQL");

    my $kinds = join ',', map { "$_=$s->{kinds}{$_}" } sort keys %{ $s->{kinds} };
    note("$tag: $kinds, slowest answer $s->{max_ms} ms");
    push @rows, { fault => $tag, requests => $s->{requests},
                  status => $s->{status}, hung => $s->{hung},
                  crashes => scalar @crash, lost => $lost,
                  rss => $baseline . ' -> ' . (rss_kb($ng->{pid}) // '?') };
}

sub backends { my $pm = pg_postmaster_pid(); return $pm ? children_of($pm) : () }

# 1. pg_ctl stop -m fast, 3 s down, start again

under_load('pg stopped (-m fast)', sub {
    pg_stop();
    Time::HiRes::sleep(3);
    pg_start();
});

# 2. SIGKILL of the postmaster and of every backend, then a start (crash
#    recovery on the same data directory)

under_load('pg killed (SIGKILL)', sub {
    my $pm = pg_postmaster_pid();
    my @kids = backends();
    ok($pm && @kids, "pg killed: postmaster $pm and " . @kids . ' children');
    kill 'KILL', $pm, @kids;
    ok(wait_until(sub { !DefarmTest::alive($pm) }, $T, 'postmaster gone'),
       'pg killed: the postmaster is gone');
    # backends that were forked as the postmaster died
    wait_until(sub { kill 'KILL', grep { DefarmTest::alive($_) } @kids;
                     !grep { DefarmTest::alive($_) } @kids }, $T, 'children');
    pg_stop();      # nothing to stop; DefarmTest's END restarts it now
    Time::HiRes::sleep(2);
    pg_start();
});

# 3. SIGSTOP of the postmaster and its backends for 5 s, then SIGCONT: the
#    queries in flight meet defarm_db_query_timeout (504), new ones the
#    connect and queue timeouts (503)

under_load('pg frozen (SIGSTOP 5s)', sub {
    my $pm = pg_postmaster_pid();
    my @kids = backends();
    kill 'STOP', $pm, @kids;
    Time::HiRes::sleep(5);
    kill 'CONT', $pm, @kids, backends();
});

# 4. a single backend SIGKILLed: PostgreSQL restarts every backend (crash
#    recovery without the postmaster going away)

under_load('pg backend SIGKILL', sub {
    my @kids = grep { DefarmTest::slurp("/proc/$_/cmdline")
                      =~ /postgres:.*defarm/ } backends();
    ok(@kids, 'backend kill: a backend of the database to kill');
    kill 'KILL', $kids[0] if @kids;
    Time::HiRes::sleep(2);
}, maybe_unseen => 1);

fault_table(@rows);

stop_nginx($ng);
done_testing();
