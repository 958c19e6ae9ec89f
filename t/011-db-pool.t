# The PostgreSQL pool: queueing, exhaustion, query and queue timeouts, an
# outage and the recovery from it, clients that go away, and parameters
# that travel as data.  Each case runs its own nginx (so that a valgrind
# report names its case) and synchronises on /metrics with wait_until():
# no case sleeps and hopes, and none asserts on elapsed time.

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use DefarmTest;

# Everything is about ten times slower under valgrind: wait longer, and
# hold connections longer so that the requests meant to overlap still do.
my $T = valgrind() ? 30 : 10;       # seconds for each wait_until
my $X = valgrind() ? 3 : 1;         # factor for sleep_ms that hold the pool

my $json = JSON::PP->new->utf8->canonical->allow_nonref;

my $LOCATIONS = <<'_EOC_';
        location / { defarm_api on; defarm_echo on; }
_EOC_

# POST /api/echo/db body
sub echo_body {
    my ($value, $sleep_ms) = @_;
    return $json->encode({ value => $value,
                           defined $sleep_ms ? (sleep_ms => $sleep_ms) : () });
}

sub decoded {
    my ($res) = @_;
    my $data = eval { $json->decode($res->{body}) };
    return ref $data eq 'HASH' ? $data : {};
}

sub mv {                    # a metric, -1 when /metrics fails
    my ($ng, $name) = @_;
    return metric($ng, $name) // -1;
}

# The module opens one connection at worker start: wait for it, so that
# the first request of a case does not itself wait for a connect.
sub pool_ready {
    my ($ng, $tag) = @_;
    ok(wait_until(sub { mv($ng, 'defarm_db_idle') >= 1 }, $T,
                  "$tag: the first pooled connection"),
       "$tag: the first pooled connection is up");
}

# An answer of the pool itself: status, error_kind, trace id, Retry-After.
sub is_db_error {
    my ($res, $status, $kind, $tag, $retry) = @_;
    my $body = decoded($res);
    is($res->{status}, $status, "$tag: status $status")
        or diag($res->{error} // $res->{body});
    is($body->{error_kind}, $kind, "$tag: error_kind $kind");
    like($body->{trace_id} // '', qr/^[0-9a-f]{32}$/, "$tag: trace_id");
    is($res->{headers}{'retry-after'}, $retry,
       "$tag: " . (defined $retry ? "Retry-After: $retry" : 'no Retry-After'));
}

sub is_echo {
    my ($res, $value, $tag) = @_;
    is($res->{status}, 200, "$tag: status 200")
        or diag($res->{error} // $res->{body});
    is(decoded($res)->{value}, $value, "$tag: value");
}


# a. A request waits in the queue for the only connection, then runs.
{
    my $tag = 'queue';
    my $ng = start_nginx(name => 'pool-queue', server => $LOCATIONS,
        http => db_config(size => 1, queue => 4, queue_timeout => '5s'));
    pool_ready($ng, $tag);

    my $health = http($ng, GET => '/health/db');
    is($health->{status}, 200, "$tag: /health/db answers 200");
    my $pool = decoded($health)->{pool} // {};
    is($pool->{size}, 1, "$tag: /health/db reports a pool of size 1");
    is(decoded($health)->{status}, 'healthy', "$tag: /health/db healthy");

    my $ra = http_bg($ng, POST => '/api/echo/db', body => echo_body('first', 500 * $X));
    ok(wait_until(sub { mv($ng, 'defarm_db_busy') == 1 }, $T, 'busy == 1'),
       "$tag: A holds the only connection");

    my $rb = http_bg($ng, GET => '/api/echo/db/second');
    ok(wait_until(sub { mv($ng, 'defarm_db_waiting') == 1 }, $T, 'waiting == 1'),
       "$tag: B waits in the queue");

    is_echo(http_wait($rb), 'second', "$tag: B, once A is done");
    is_echo(http_wait($ra), 'first', "$tag: A");
    is(mv($ng, 'defarm_db_exhausted_total'), 0, "$tag: nobody was refused");
    is(mv($ng, 'defarm_db_waiting'), 0, "$tag: the queue is empty again");

    stop_nginx($ng);
}


# b. No queue: with the connection busy, a request is refused at once.
{
    my $tag = 'full';
    my $ng = start_nginx(name => 'pool-full', server => $LOCATIONS,
        http => db_config(size => 1, queue => 0));
    pool_ready($ng, $tag);

    my $ra = http_bg($ng, POST => '/api/echo/db', body => echo_body('a', 1000 * $X));
    ok(wait_until(sub { mv($ng, 'defarm_db_busy') == 1 }, $T, 'busy == 1'),
       "$tag: A holds the only connection");

    is_db_error(http($ng, GET => '/api/echo/db/b'), 503, 'db_pool_exhausted',
                "$tag: B", 1);
    is(mv($ng, 'defarm_db_exhausted_total'), 1, "$tag: counted as exhausted");

    is_echo(http_wait($ra), 'a', "$tag: A");
    is_echo(http($ng, GET => '/api/echo/db/c'), 'c', "$tag: C, after A");

    stop_nginx($ng);
}


# c. A request that waits past queue_timeout gives up with a 503.
{
    my $tag = 'queue timeout';
    my $ng = start_nginx(name => 'pool-qtimeout', server => $LOCATIONS,
        http => db_config(size => 1, queue => 4, queue_timeout => '200ms'));
    pool_ready($ng, $tag);

    my $ra = http_bg($ng, POST => '/api/echo/db', body => echo_body('a', 1500 * $X));
    ok(wait_until(sub { mv($ng, 'defarm_db_busy') == 1 }, $T, 'busy == 1'),
       "$tag: A holds the only connection");

    is_db_error(http($ng, GET => '/api/echo/db/b'), 503, 'db_pool_exhausted',
                "$tag: B", 1);
    is(mv($ng, 'defarm_db_waiting'), 0, "$tag: B left the queue");
    is(mv($ng, 'defarm_db_exhausted_total'), 1, "$tag: counted as exhausted");

    is_echo(http_wait($ra), 'a', "$tag: A");
    is_echo(http($ng, GET => '/api/echo/db/c'), 'c', "$tag: C, after A");

    stop_nginx($ng);
}


# d. A query past defarm_db_query_timeout: 504, and its connection is
#    replaced, so the next request succeeds.
{
    my $tag = 'query timeout';
    my $ng = start_nginx(name => 'pool-timeout', server => $LOCATIONS,
        http => db_config(size => 1) . "\n    defarm_db_query_timeout 300ms;");
    pool_ready($ng, $tag);
    my $mark = $ng->log_mark;

    is_db_error(http($ng, POST => '/api/echo/db', body => echo_body('slow', 2000)),
                504, 'database_timeout', "$tag: the slow query", undef);
    like($ng->log($mark), qr/query timed out, closing its connection/,
         "$tag: the log says the connection was closed");

    is_echo(http($ng, GET => '/api/echo/db/next'), 'next', "$tag: the next query");
    cmp_ok(mv($ng, 'defarm_db_timeouts_total'), '>=', 1, "$tag: counted");
    is(mv($ng, 'defarm_db_connects_total'), 2,
       "$tag: the closed connection was replaced");

    stop_nginx($ng);
}


# e. PostgreSQL goes away: fast 503s, then the pool reconnects by itself
#    once the server is back, without a reload.  DefarmTest's END block
#    restarts PostgreSQL should this case die half-way.
{
    my $tag = 'outage';
    my $ng = start_nginx(name => 'pool-outage', server => $LOCATIONS,
        http => db_config(size => 2, connect_timeout => '2s',
                          retry_max => '500ms'));
    pool_ready($ng, $tag);
    is_echo(http($ng, GET => '/api/echo/db/before'), 'before', "$tag: before");

    my $mark = $ng->log_mark;
    pg_stop();

    ok(wait_until(sub { mv($ng, 'defarm_db_connections') == 0 }, $T,
                  'connections == 0'),
       "$tag: the pool dropped its connection to the stopped server");

    is_db_error(http($ng, GET => '/api/echo/db/x'), 503, 'database_unavailable',
                "$tag: during the outage", 1);
    like($ng->log($mark), qr/cannot connect to PostgreSQL/,
         "$tag: the log says why");
    cmp_ok(mv($ng, 'defarm_db_unavailable_total'), '>=', 1, "$tag: counted");

    pg_start();

    my $last;
    ok(wait_until(sub {
            $last = http($ng, GET => '/api/echo/db/x');
            ($last->{status} // 0) == 200
        }, $T, 'a 200 after the restart'),
       "$tag: requests succeed again without a reload");
    is(decoded($last)->{value}, 'x', "$tag: with the right answer");
    like($ng->log($mark), qr/PostgreSQL is reachable again/,
         "$tag: the log says it is back");

    stop_nginx($ng);
}


# f. A client that goes away while its query runs: the query is detached,
#    the statement ends, and the connection comes back to the pool.
{
    my $tag = 'abort running';
    my $ng = start_nginx(name => 'pool-abort', server => $LOCATIONS,
        http => db_config(size => 1, queue => 4, queue_timeout => '10s'));
    pool_ready($ng, $tag);

    ok(abort_request($ng, POST => '/api/echo/db',
                     body => echo_body('gone', 500 * $X), after => 0.1,
                     wait_for => sub { mv($ng, 'defarm_db_busy') == 1 }),
       "$tag: the query was running when the client left");

    ok(wait_until(sub { mv($ng, 'defarm_db_aborted_total') >= 1 }, $T,
                  'aborted_total >= 1'),
       "$tag: the detached query is counted");
    ok(wait_until(sub { mv($ng, 'defarm_db_idle') >= 1 }, $T, 'idle >= 1'),
       "$tag: the connection came back once the statement ended");
    is(mv($ng, 'defarm_db_busy'), 0, "$tag: nothing busy");
    is(mv($ng, 'defarm_db_aborted_total'), 1, "$tag: counted once");

    is_echo(http($ng, GET => '/api/echo/db/after'), 'after', "$tag: the next query");
    ok(kill(0, $ng->{pid}), "$tag: nginx is still running");

    stop_nginx($ng);
}

# f2. ... and one that goes away while still waiting in the queue.
{
    my $tag = 'abort queued';
    my $ng = start_nginx(name => 'pool-abort-queued', server => $LOCATIONS,
        http => db_config(size => 1, queue => 4, queue_timeout => '10s'));
    pool_ready($ng, $tag);

    my $ra = http_bg($ng, POST => '/api/echo/db', body => echo_body('held', 1000 * $X));
    ok(wait_until(sub { mv($ng, 'defarm_db_busy') == 1 }, $T, 'busy == 1'),
       "$tag: A holds the only connection");

    ok(abort_request($ng, GET => '/api/echo/db/queued', after => 0.1,
                     wait_for => sub { mv($ng, 'defarm_db_waiting') == 1 }),
       "$tag: B was queued when its client left");

    ok(wait_until(sub { mv($ng, 'defarm_db_waiting') == 0
                        && mv($ng, 'defarm_db_aborted_total') == 1 }, $T,
                  'waiting == 0 and aborted_total == 1'),
       "$tag: B left the queue and is counted");

    is_echo(http_wait($ra), 'held', "$tag: A");
    is_echo(http($ng, GET => '/api/echo/db/after'), 'after', "$tag: the next query");
    ok(kill(0, $ng->{pid}), "$tag: nginx is still running");

    stop_nginx($ng);
}


# f3. ... and one that goes away while its connection still prepares the
#     statement (the first use of a statement on a fresh connection).  The
#     pool's backend is held with SIGSTOP, so that the Parse is unanswered
#     when the client leaves; SIGCONT lets it finish.  The connection must
#     come back usable: the statement now exists in that session.
my $held_backend;           # SIGSTOPped backend, resumed by END if we die
END { kill 'CONT', $held_backend if $held_backend }

{
    my $tag = 'abort preparing';
    my $app = "defarm_t011_$$";
    my $ng = start_nginx(name => 'pool-abort-prepare', server => $LOCATIONS,
        http => db_config(size => 1, queue => 4, queue_timeout => '10s',
                          conninfo => "application_name=$app"));
    pool_ready($ng, $tag);

    my $sql = "SELECT pid FROM pg_stat_activity WHERE application_name = '$app'";
    my @backend = grep { /^\d+$/ } split /\n/, sql($sql);
    is(scalar @backend, 1, "$tag: found the pool's one backend");

    SKIP: {
        skip "$tag: cannot hold the backend with SIGSTOP", 9
            unless @backend == 1 && kill 'STOP', $backend[0];
        $held_backend = $backend[0];

        ok(abort_request($ng, GET => '/api/echo/db/gone', after => 0.1,
                         wait_for => sub { mv($ng, 'defarm_db_busy') == 1 }),
           "$tag: the statement was being prepared when the client left");
        ok(wait_until(sub { mv($ng, 'defarm_db_aborted_total') == 1 }, $T,
                      'aborted_total == 1'),
           "$tag: the detached query is counted");

        kill 'CONT', $held_backend;
        undef $held_backend;

        ok(wait_until(sub { mv($ng, 'defarm_db_idle') == 1 }, $T, 'idle == 1'),
           "$tag: the connection came back");

        # These fail at the time of writing: when the Parse result comes
        # back after the query was detached, ngx_defarm_pg_complete()
        # returns the connection to the pool without marking the statement
        # prepared, so its next use sends Parse again and PostgreSQL
        # answers 42P05: every later query of that statement on that
        # connection is a 500 database_error.
        my $mark = $ng->log_mark;
        is_echo(http($ng, GET => '/api/echo/db/after'), 'after',
                "$tag: the next query on that connection");
        is_echo(http($ng, GET => '/api/echo/db/again'), 'again',
                "$tag: and the one after");
        unlike($ng->log($mark), qr/PostgreSQL error 42P05/,
               "$tag: no 'prepared statement already exists'");
        ok(kill(0, $ng->{pid}), "$tag: nginx is still running");
    }

    stop_nginx($ng);
}


# g. Parameters are data: whatever goes in comes back byte for byte.
{
    my $tag = 'params';
    my $ng = start_nginx(name => 'pool-params', server => $LOCATIONS,
        http => db_config(size => 2));
    pool_ready($ng, $tag);

    my @values = (
        "it's",
        "'; DROP TABLE users; --",
        "O''Reilly \\' \\\\ '",
        'C:\\path\\to\\file \\n \\x41',
        '$1 $2::text $$quoted$$',
        '%s %d %n %x %%',
        qq{"double" and\nnew line\ttab},
        "caf\x{e9} \x{65e5}\x{672c} \x{1F600}",
        '',
        '0123456789' x 1000,
        "\x{65e5}\x{672c}" x 5000,
    );

    for my $v (@values) {
        # a readable, ASCII test name
        my $long = length $v > 40;
        my $name = $long ? substr($v, 0, 10) : $v;
        $name =~ s/([^\x20-\x7e])/sprintf '\\x{%x}', ord $1/ge;
        $name = $long ? length($v) . " characters: '$name...'" : "'$name'";
        my $octets = do { my $s = $v; utf8::encode($s); length $s };

        my $res = http($ng, POST => '/api/echo/db', body => echo_body($v));
        my $body = decoded($res);
        is($res->{status}, 200, "$tag: $name: status 200")
            or diag($res->{error} // $res->{body});
        ok(defined $body->{value} && $body->{value} eq $v,
           "$tag: $name: the same value back");
        is($body->{length}, $octets, "$tag: $name: octet_length $octets");
    }

    my $res = http($ng, POST => '/api/echo/db', body => echo_body(undef));
    is($res->{status}, 200, "$tag: null: status 200");
    is($res->{body}, '{"value":null,"length":null}', "$tag: null stays NULL");

    is(http($ng, GET => '/health/db')->{status}, 200,
       "$tag: the database is still fine");

    stop_nginx($ng);
}

done_testing();
