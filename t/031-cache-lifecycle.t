# The cache across a reload (HUP) and a client that leaves while it waits
# for the lock.  Standalone: the block format cannot send a signal between
# requests or close a connection mid-wait.

use strict;
use warnings;
use Test::More;
use DefarmTest;

my $server = <<'_EOC_';
        location / {
            defarm_api on;
            defarm_echo on;
        }
_EOC_

my $json = { headers => { 'Content-Type' => 'application/json' } };
my $wait = DefarmTest::valgrind() ? 60 : 10;


# values survive "nginx -s reload" (HUP): the zone is reused

{
    my $ng = start_nginx(name => 'cache-hup', server => $server, master => 1,
                         http => 'defarm_cache zone=hup:1m ttl=1h;');

    my $res = http($ng, PUT => '/api/echo/cache/user:kept',
                   body => '{"value":"still here"}', %$json);
    is($res->{status}, 200, 'stored before the reload');

    my $mark = $ng->log_mark;
    kill 'HUP', $ng->{pid};

    # the old worker says goodbye once the new one took over
    ok(wait_until(sub { $ng->log($mark) =~ /gracefully shutting down/
                        && $ng->log($mark) =~ /start worker process/ },
                  $wait, 'reload'),
       'nginx reloaded: a new worker started, the old one left');

    $res = http($ng, GET => '/api/echo/cache/user:kept');
    is($res->{status}, 200, 'found after the reload');
    is($res->{body}, '{"key":"user:kept","value":"still here"}',
       'with its value');

    unlike($ng->log($mark), qr/\[(alert|crit|emerg)\]/,
           'the reload logged no alert');

    stop_nginx($ng);
}


# a client that goes away while its request waits for the lock

{
    my $ng = start_nginx(name => 'cache-abort', server => $server,
                         http => 'defarm_cache zone=ab:1m '
                                 . 'lock_timeout=30s lock_step=5ms;');

    my $res = http($ng, POST => '/api/echo/cache-lock/hold',
                   body => '{"ms":30000}', %$json);
    is($res->{status}, 200, 'the lock is held');

    my $retries = metric($ng, 'defarm_cache_lock_total{outcome="retry"}');

    ok(abort_request($ng, GET => '/api/echo/cache/user:x',
                     wait_for => sub {
                         (metric($ng,
                              'defarm_cache_lock_total{outcome="retry"}') // 0)
                         > $retries + 2
                     }),
       'the client left while its request was retrying');

    $res = http($ng, POST => '/api/echo/cache-lock/release');
    is($res->{body}, '{"released":true}', 'the lock is released');

    $res = http($ng, PUT => '/api/echo/cache/user:x',
                body => '{"value":"fine"}', %$json);
    is($res->{status}, 200, 'the cache works afterwards');

    is(metric($ng, 'defarm_cache_lock_total{outcome="timeout"}'), 0,
       'the request that left never timed out (its timer went with it)');

    my $log = $ng->log;
    like($log, qr/client prematurely closed connection/,
         'nginx saw the client go');
    unlike($log, qr/\[(alert|crit)\]|storage_lock_timeout/,
           'no alert, no late 503 for a request that was gone');

    stop_nginx($ng);
}

done_testing();
