# A worker's figures live in a slot of a shared zone; a new worker reuses
# the slot of one that died.  None of the dead worker's figures may be
# reported as the new one's: PostgreSQL's and Redis's alike.

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use DefarmTest;

my $T = valgrind() ? 60 : 15;
my $dir = "$ENV{TEST_NGINX_SERVROOT}-slots-redis";
my $port = redis_start($dir);

my $ng = start_nginx(
    name   => 'slots',
    master => 1,
    http   => db_config(size => 1) . "
    defarm_cache zone=slots:1m;
    defarm_redis 127.0.0.1:$port timeout=200ms retry_max=200ms;",
    server => '
        location / {
            defarm_api on;
            defarm_echo on;
        }');

sub worker_pid {
    my $res = http($ng, GET => '/health');
    return eval { JSON::PP->new->decode($res->{body})->{pid} } // 0;
}

ok(wait_until(sub { (metric($ng, 'defarm_redis_connected') // 0) == 1 },
              $T, 'worker connects to Redis'), 'connected to Redis');

# each invalidation is one PUBLISH; each /health/db one query
for (1 .. 20) {
    http($ng, POST => '/api/echo/cache-invalidate',
         body => '{"prefix":"slot:"}');
    http($ng, GET => '/health/db');
}

my $published = metric($ng, 'defarm_redis_invalidations_published_total')
                // 0;
my $queries = metric($ng, 'defarm_db_queries_total') // 0;
cmp_ok($published, '>=', 20, "20 invalidations published ($published)");
cmp_ok($queries, '>=', 20, "20 queries counted ($queries)");

my $old = worker_pid();
ok($old, "worker $old");
kill 'KILL', $old;

ok(wait_until(sub { my $p = worker_pid(); $p && $p != $old }, $T,
              'a new worker'), 'the master started a new worker');
ok(wait_until(sub { (metric($ng, 'defarm_redis_connected') // 0) == 1 },
              $T, 'new worker connects'), 'the new worker is connected');

cmp_ok(metric($ng, 'defarm_redis_invalidations_published_total') // -1,
       '==', 0, 'the dead worker\'s published invalidations are gone');
cmp_ok(metric($ng, 'defarm_db_queries_total') // 1e9, '<', $queries,
       'nor its queries');

stop_nginx($ng);
redis_stop($dir);
done_testing();
