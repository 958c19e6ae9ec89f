# API keys when what they depend on fails: PostgreSQL down (a cached key
# goes on working, an uncached one is a fast 503, counted usage waits and
# is written after the outage), the cache lock held (503, not a wait), no
# defarm_cache at all (refused, not unlimited), and a reload (the old
# worker writes the usage it counted before it leaves).

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use DefarmTest;

my $T = valgrind() ? 60 : 15;
my $json = JSON::PP->new->utf8;

my (undef, $secret_file) = jwt_secret();

my %j = (headers => { 'Content-Type' => 'application/json' });

sub body { json_body(@_) }

# node($name, $http, db => [...], master => 1): an nginx of this test, with
# the database, bcrypt cost 4, the JWT secret, $http, and the API with its
# diagnostics
sub node {
    my ($name, $http, %opt) = @_;
    return start_nginx(
        name   => $name,
        master => $opt{master},
        http   => db_config(size => 2, @{ $opt{db} // [] }) . "
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;$http",
        server => '
        location / {
            defarm_api on;
            defarm_echo on;
        }');
}

# a user and a key on $ng: (the user, key, key id)
sub user_with_key {
    my ($ng, $name, %key) = @_;
    my $user = api_user($ng, "t045_${name}_$$");

    my $res = api_as($ng, $user, POST => '/api/api-keys',
                     { name => $name, organization_type => 'External',
                       %key });
    is($res->{status}, 201, "$name: key created");

    return ($user, body($res)->{api_key} // '',
            body($res)->{metadata}{id} // '');
}

sub by_key {
    my ($ng, $key, $method) = @_;
    return http($ng, $method // 'GET', '/api/echo/auth',
                headers => { 'X-API-Key' => $key });
}

sub usage_count {
    my ($id) = @_;
    return -1 unless $id =~ /^[0-9a-f-]{36}$/;
    return sql("SELECT usage_count FROM api_keys WHERE id = '$id'");
}

# 1. PostgreSQL down

my $ng = node('key-outage', "
    defarm_cache zone=key_outage:1m ttl=1h;
    defarm_api_key_usage_flush 1s;",
    db => [ connect_timeout => valgrind() ? '10s' : '1s',
            retry_max => '1s' ]);

my (undef, $cached, $cached_id) = user_with_key($ng, 'cached');
my (undef, $cold) = user_with_key($ng, 'cold');

is(by_key($ng, $cached)->{status}, 200, 'a key is used once (now cached)');
ok(wait_until(sub { usage_count($cached_id) == 1 }, $T, 'first flush'),
   'its first request is written');

pg_stop();

my $res = by_key($ng, $cached);
is($res->{status}, 200, 'database down: a cached key still authenticates');
is(body($res)->{via}, 'api_key', '(as the key)');
is(by_key($ng, $cached)->{status}, 200, 'and again');

$res = by_key($ng, $cold);
like($res->{status}, qr/^50[34]$/, 'an uncached key: 503/504, no hang');
like(body($res)->{error_kind} // '',
     qr/^(database_unavailable|db_pool_exhausted|database_timeout)$/,
     'named as a database failure');

sleep 2;                                    # flushes fail while it is down

pg_start();

ok(wait_until(sub { usage_count($cached_id) == 3 }, $T, 'after outage'),
   'the usage counted during the outage is written after it');

ok(wait_until(sub { by_key($ng, $cold)->{status} == 200 }, $T, 'cold key'),
   'the uncached key works again once the database is back');

unlike($ng->log, qr/\[(alert|crit|emerg)\]/, 'no alert in the outage');
stop_nginx($ng);

# 2. the cache lock held by another worker's critical section

$ng = node('key-lock', "
    defarm_cache zone=key_lock:1m ttl=1h lock_timeout=50ms lock_step=5ms;");

my (undef, $key) = user_with_key($ng, 'locked');
is(by_key($ng, $key)->{status}, 200, 'the key works with the lock free');

# a made-up key costs one database query, then the cache answers

my $made_up = 'dfm_' . ('Zq' x 16);
my $queries = metric($ng, 'defarm_db_queries_total');
$res = by_key($ng, $made_up);
is($res->{status}, 401, 'an unknown key: 401');
is(body($res)->{code}, 'invalid_api_key', 'invalid_api_key');
is(metric($ng, 'defarm_db_queries_total'), $queries + 1,
   'it was looked up in the database once');
is(by_key($ng, $made_up)->{status}, 401, 'again: 401');
is(metric($ng, 'defarm_db_queries_total'), $queries + 1,
   'and the second time answered from the cache');

$res = http($ng, POST => '/api/echo/cache-lock/hold', %j,
            body => '{"ms": 2000}');
is($res->{status}, 200, 'the lock is held for 2 s');

$res = by_key($ng, $key);
is($res->{status}, 503, 'lock held: 503, not a wait');
is(body($res)->{error_kind}, 'storage_lock_timeout', 'storage_lock_timeout');
is($res->{headers}{'retry-after'}, '1', 'with Retry-After');

http($ng, POST => '/api/echo/cache-lock/release');
is(by_key($ng, $key)->{status}, 200, 'released: the key works again');
stop_nginx($ng);

# 3. no defarm_cache: the hourly counters have nowhere to live

$ng = node('key-nocache', '');

(undef, $key) = user_with_key($ng, 'nocache');
my $mark = $ng->log_mark;
$res = by_key($ng, $key);
is($res->{status}, 500, 'no defarm_cache: a key request is refused');
is(body($res)->{error}, 'Rate limiting is not configured', 'saying why');
like($ng->log($mark), qr/API-key rate limits need "defarm_cache"/,
     'and the error log names the directive');
stop_nginx($ng);

# 4. a reload: the old worker writes what it counted before it leaves

$ng = node('key-reload', "
    defarm_cache zone=key_reload:1m ttl=1h;
    defarm_api_key_usage_flush 1h;", master => 1);

my $id;
(undef, $key, $id) = user_with_key($ng, 'reload');

is(by_key($ng, $key)->{status}, 200, "request $_ by key") for 1 .. 3;
is(by_key($ng, $key, 'POST')->{status}, 403, 'and one refused (no write)');

sleep 1;
is(usage_count($id), 0, 'nothing written yet (flush every hour)');

$mark = $ng->log_mark;
kill 'HUP', $ng->{pid};

ok(wait_until(sub { usage_count($id) == 4 }, $T, 'written at reload'),
   'the reload made the old worker write its 4 requests');
is(sql("SELECT requests || '/' || errors FROM api_key_usage_daily "
       . "WHERE key_id = '$id'"), '4/1', 'with the error counted');

is(by_key($ng, $key)->{status}, 200, 'the new worker serves the key');
unlike($ng->log($mark), qr/\[(alert|crit|emerg)\]/, 'no alert on reload');
stop_nginx($ng);

# 5. a full usage table (256 keys) is sealed and written at once, from a
#    posted event, not an hour later

$ng = node('key-usage-full', "
    defarm_cache zone=key_usage_full:4m ttl=1h;
    defarm_api_key_usage_flush 1h;");

my ($owner_user) = user_with_key($ng, 'full');
my @keys;

for my $i (1 .. 260) {
    my $res = api_as($ng, $owner_user, POST => '/api/api-keys',
                     { name => "k$i", organization_type => 'External' });
    push @keys, body($res)->{api_key} // '';
}

is(scalar(grep { by_key($ng, $_)->{status} == 200 } @keys), 260,
   '260 keys used once each');

my $owner = "t045_full_$$";
ok(wait_until(sub { sql("SELECT coalesce(sum(k.usage_count), 0) "
                        . "FROM api_keys k JOIN users u ON u.id = k.user_id "
                        . "WHERE u.username = '$owner'") >= 256 },
              $T, 'sealed table written'),
   'the first 256 were written when the table filled, not after 1h');
unlike($ng->log, qr/\[(alert|crit|emerg)\]|not counted/,
       'nothing lost, no alert');
stop_nginx($ng);

done_testing();
