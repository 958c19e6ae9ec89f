# A reload (HUP) with a master process: the new worker opens its own pool
# and claims its own metrics slot while the old one drains, and the
# database is served throughout.

use strict;
use warnings;
use Test::More;
use DefarmTest;

my $T = valgrind() ? 60 : 10;

my $ng = start_nginx(name => 'db-reload', master => 1,
                     http => db_config(size => 2),
                     server => '
        location / {
            defarm_api on;
            defarm_echo on;
        }');

my $res = http($ng, GET => '/api/echo/db/before');
is($res->{status}, 200, 'served before the reload');
is($res->{body}, '{"value":"before","length":6}', 'through the pool');

my ($old) = $res->{body} ? (http($ng, GET => '/health/db')->{body}
                            =~ /"worker_pid":(\d+)/) : ();
ok($old, "the first worker is $old");

my $mark = $ng->log_mark;
kill 'HUP', $ng->{pid};

# the old worker leaves once the new one serves
ok(wait_until(sub {
       my $h = http($ng, GET => '/health/db');
       ($h->{status} // 0) == 200
           && ($h->{body} =~ /"worker_pid":(\d+)/)[0] != $old
           && !kill(0, $old) }, $T, 'new worker'),
   'a new worker serves the database and the old one is gone');

$res = http($ng, GET => '/api/echo/db/after');
is($res->{status}, 200, 'served after the reload');
is($res->{body}, '{"value":"after","length":5}', 'through the new pool');

is(metric($ng, 'defarm_workers'), 1,
   'metrics sum one live worker, not the one that left');
ok((metric($ng, 'defarm_db_connections') // 0) >= 1,
   'the new worker reports its own connections');

unlike($ng->log($mark), qr/\[(alert|crit|emerg)\]/,
       'no alert during the reload');

stop_nginx($ng);

done_testing();
