# Batches of reads (ngx_defarm_pg_query_read): reads that wait together
# for a connection, or arrive in one turn of the event loop, go on one
# connection in pipeline mode with one Sync.  Each gets its own answer;
# an error aborts only itself (those behind it run again); a batch that
# times out sends its reads back to run one by one, so only the slow one
# gets the 504; a client that goes away leaves the others alone; the item
# read, a batched read, answers each caller its own item under load.
#
# The batches are made deterministic the way t/011 makes its queue: the
# only connection is held by a slow statement that is not a read, the
# reads queue behind it (counted on /metrics), and the connection, once
# free, takes them all at once.  The diagnostic echo sends its statement
# as a read with "read": true, and makes it fail with "fail": true.

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use DefarmTest;

my $T = valgrind() ? 30 : 10;
my $X = valgrind() ? 3 : 1;

my $json = JSON::PP->new->utf8->canonical;

sub mv { metric($_[0], $_[1]) // -1 }

sub decoded {
    my $data = eval { $json->decode($_[0]->{body}) };
    return ref $data eq 'HASH' ? $data : {};
}

sub echo {
    my ($ng, %o) = @_;
    return (POST => '/api/echo/db', body => $json->encode(\%o));
}

# the only connection held by a statement that is not a read, then the
# reads queued behind it one by one (so their order is known); $meanwhile,
# if given, runs once they are queued
sub hold_and_queue {
    my ($ng, $tag, $reads, $meanwhile) = @_;
    my @reads = @$reads;
    my $hold = http_bg($ng, echo($ng, value => 'hold', sleep_ms => 400 * $X));
    ok(wait_until(sub { mv($ng, 'defarm_db_busy') == 1 }, $T, 'busy == 1'),
       "$tag: a statement holds the only connection");
    my @bg;
    for my $i (0 .. $#reads) {
        push @bg, http_bg($ng, echo($ng, read => JSON::PP::true, %{ $reads[$i] }));
        wait_until(sub { mv($ng, 'defarm_db_waiting') == $i + 1 }, $T,
                   'waiting == ' . ($i + 1));
    }
    is(mv($ng, 'defarm_db_waiting'), scalar @reads, "$tag: the reads wait behind it");
    $meanwhile->() if $meanwhile;
    my $h = http_wait($hold);
    is($h->{status}, 200, "$tag: the holding statement answered");
    return map { http_wait($_) } @bg;
}

my $ng = start_nginx(
    name   => 'db-batch',
    http   => db_config(size => 1, queue => 64, queue_timeout => '10s')
              . "\n    defarm_db_query_timeout ${\ (1000 * $X)}ms;",
    server => '
        location / { defarm_api on; defarm_echo on; }');

ok(wait_until(sub { mv($ng, 'defarm_db_idle') >= 1 }, $T, 'the first connection'),
   'the pool is up');

# the statement is prepared on the connection by its first run
my $w = http($ng, echo($ng, value => 'warm', read => JSON::PP::true));
is(decoded($w)->{value}, 'warm', 'a read alone: its answer');
is(mv($ng, 'defarm_db_batches_total'), 0, '... not batched: its statement was not prepared yet');

# ------------------------------------------------ ten reads, one batch

{
    my $tag = 'ten reads';
    my @res = hold_and_queue($ng, $tag, [ map { { value => "v$_" } } 1 .. 10 ]);
    my $ok = grep { $res[$_]{status} == 200 && decoded($res[$_])->{value} eq 'v' . ($_ + 1)
                    && decoded($res[$_])->{length} == length('v' . ($_ + 1)) } 0 .. 9;
    is($ok, 10, "$tag: each its own answer");
    is(mv($ng, 'defarm_db_batches_total'), 1, "$tag: one batch");
    is(mv($ng, 'defarm_db_batched_total'), 10, "$tag: of ten reads");
    is(mv($ng, 'defarm_db_connects_total'), 1, "$tag: on the one connection");
}

# ------------------------------------------------ an error in a batch

{
    my $tag = 'an error';
    my $runs = mv($ng, 'defarm_db_rerun_total');
    my @reads = map { { value => "e$_", $_ == 4 ? (fail => JSON::PP::true) : () } } 1 .. 7;
    my @res = hold_and_queue($ng, $tag, \@reads);
    for my $i (1 .. 7) {
        my $r = $res[$i - 1];
        if ($i == 4) {
            isnt($r->{status}, 200, "$tag: the failing read fails ($r->{status})");
            like(decoded($r)->{error_kind} // '', qr/\w/, "$tag: ... with an API error");
        } else {
            is($r->{status} . ' ' . (decoded($r)->{value} // ''), "200 e$i",
               "$tag: read $i: its answer" . ($i > 4 ? ' (run again)' : ''));
        }
    }
    is(mv($ng, 'defarm_db_rerun_total') - $runs, 3, "$tag: the three behind it ran again");
    like(http($ng, echo($ng, value => 'after', read => JSON::PP::true))->{body},
         qr/"after"/, "$tag: the connection serves on");
}

# ------------------------------------------------ a timeout in a batch

# each answer comes when it is ready (a Flush after each read), so the
# pool knows which read was running when the time is up: that one gets the
# 504, those answered keep their answers, those behind it run again
{
    my $tag = 'a timeout';
    my $t0 = mv($ng, 'defarm_db_timeouts_total');
    my $runs = mv($ng, 'defarm_db_rerun_total');
    my @reads = map { { value => "t$_", $_ == 3 ? (sleep_ms => 3000 * $X) : () } } 1 .. 5;
    my @res = hold_and_queue($ng, $tag, \@reads);
    for my $i (1 .. 5) {
        my $r = $res[$i - 1];
        if ($i == 3) {
            is($r->{status}, 504, "$tag: the slow read: 504");
            is(decoded($r)->{error_kind}, 'database_timeout', "$tag: ... database_timeout");
        } else {
            is($r->{status} . ' ' . (decoded($r)->{value} // ''), "200 t$i",
               "$tag: read $i: its answer" . ($i > 3 ? ' (run again)' : ''));
        }
    }
    is(mv($ng, 'defarm_db_timeouts_total') - $t0, 1, "$tag: one timeout");
    is(mv($ng, 'defarm_db_rerun_total') - $runs, 2, "$tag: the two behind it ran again");
}

# ------------------------------------------------ a lost connection

# the backend of a batch is terminated while its third read runs: the
# reads answered keep their answers, those behind it run again
{
    my $tag = 'a lost connection';
    my $runs = mv($ng, 'defarm_db_rerun_total');
    my $batches = mv($ng, 'defarm_db_batches_total');
    my @reads = map { { value => "l$_", $_ == 3 ? (sleep_ms => 5000 * $X) : () } } 1 .. 5;
    my $slow = "SELECT %s FROM pg_stat_activity WHERE state = 'active' "
               . "AND query LIKE '%%pg_sleep%%' AND query LIKE '%%1 / (1 - %%'";
    my @res = hold_and_queue($ng, $tag, \@reads, sub {
        ok(wait_until(sub { sql(sprintf $slow, 'count(*)') == 1 }, $T, 'the slow read running'),
           "$tag: the batch runs its slow read");
        sql(sprintf $slow, 'pg_terminate_backend(pid)');
    });
    for my $i (1 .. 5) {
        my $r = $res[$i - 1];
        if ($i == 3) {
            # the server's own answer: "terminating connection due to
            # administrator command", as a single query gets it
            like($r->{status}, qr/^50[34]$/, "$tag: the read that was running: $r->{status}");
            like(decoded($r)->{error_kind} // '', qr/^database_/, "$tag: ... a database error");
        } else {
            is($r->{status} . ' ' . (decoded($r)->{value} // ''), "200 l$i",
               "$tag: read $i: its answer" . ($i > 3 ? ' (run again)' : ''));
        }
    }
    is(mv($ng, 'defarm_db_rerun_total') - $runs, 2, "$tag: the two behind it ran again");
    cmp_ok(mv($ng, 'defarm_db_batches_total') - $batches, '>=', 1, "$tag: they went as a batch");
}

# ------------------------------------------------ a client goes away

# the last read of a batch is slow, and its client leaves while it runs:
# the others get their answers, the connection serves on
{
    my $tag = 'a client gone';
    my $hold = http_bg($ng, echo($ng, value => 'hold', sleep_ms => 400 * $X));
    ok(wait_until(sub { mv($ng, 'defarm_db_busy') == 1 }, $T, 'busy == 1'),
       "$tag: the connection held");
    my @bg;
    for my $v (qw(a b)) {
        push @bg, http_bg($ng, echo($ng, value => $v, read => JSON::PP::true));
        wait_until(sub { mv($ng, 'defarm_db_waiting') == @bg }, $T, 'waiting');
    }
    my $gone = mv($ng, 'defarm_db_aborted_total');
    my $batches = mv($ng, 'defarm_db_batches_total');
    ok(abort_request($ng, echo($ng, value => 'gone', read => JSON::PP::true,
                               sleep_ms => 500 * $X),
                     wait_for => sub { mv($ng, 'defarm_db_batches_total') > $batches },
                     after => 0.1),
       "$tag: its client leaves once the batch is sent");
    is(decoded(http_wait($hold))->{value}, 'hold', "$tag: the holding statement");
    is(decoded(http_wait($bg[0]))->{value}, 'a', "$tag: the first read of the batch");
    is(decoded(http_wait($bg[1]))->{value}, 'b', "$tag: the second");
    ok(wait_until(sub { mv($ng, 'defarm_db_aborted_total') > $gone }, $T, 'aborted'),
       "$tag: the read left behind counted as aborted");
    ok(wait_until(sub { mv($ng, 'defarm_db_idle') == 1 }, $T, 'idle == 1'),
       "$tag: the connection back in the pool once the batch is over");
    is(decoded(http($ng, echo($ng, value => 'next', read => JSON::PP::true)))->{value},
       'next', "$tag: and serving");
}

# ------------------------------------------------ items under load

# GET /api/items/:dfid is a read: forty concurrent readers of twenty items,
# each answered its own item, whatever batch it went in
{
    my $tag = 'items';
    my (undef, $secret) = jwt_secret();
    my $ni = start_nginx(
        name   => 'db-batch-items',
        http   => db_config(size => 2) . "
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret;
    defarm_item_cache off;",
        server => '
        location / { defarm_api on; }');
    my $u = api_user($ni, "t100_$$");
    my @dfid = map {
        json_body(api_as($ni, $u, POST => '/api/items',
                         { identifiers => [ { key => 'lot', value => "t100-$$-$_" } ],
                           source_entry => '0b6f8f9e-1d2c-4c3b-9a8e-7f6d5c4b3a21' }))->{dfid}
    } 1 .. 20;
    my @bg;
    for my $round (1 .. 2) {
        push @bg, map {
            [ $_, http_bg($ni, GET => "/api/items/$dfid[$_]",
                          headers => { Authorization => "Bearer $u->{token}" }) ]
        } 0 .. 19;
    }
    my $ok = grep { my $r = http_wait($_->[1]);
                    $r->{status} == 200 && json_body($r)->{dfid} eq $dfid[$_->[0]] } @bg;
    is($ok, 40, "$tag: 40 concurrent reads of 20 items, each its own item");
    unlike($ni->log, qr/\[(alert|crit|emerg)\]/, "$tag: no alert in error.log");
    stop_nginx($ni);
}

unlike($ng->log, qr/\[(alert|crit|emerg)\]/, 'no alert in error.log');
stop_nginx($ng);

done_testing();
