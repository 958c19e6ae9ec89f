# A token proves who signed in, not that they may still come in: a user
# suspended, banned or deleted after their token was signed is refused on
# the next request, on every route, once their records are dropped (what
# the routes that change a user do, through ngx_defarm_auth_user_changed;
# here the test changes the row in SQL and drops the records the way the
# admin side will).  A change made in SQL alone takes effect within
# defarm_user_status_ttl.  An active user's status costs no query while
# its record is cached.

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use DefarmTest;

my $T = valgrind() ? 60 : 15;
my (undef, $secret) = jwt_secret();

my $ng = start_nginx(
    name   => 'principal',
    http   => db_config(size => 2) . "
    defarm_cache zone=principal:1m ttl=1h;
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret;
    defarm_user_status_ttl 1s;",
    server => '
        location / {
            defarm_api on;
            defarm_echo on;
        }');

my $name = "t046_$$";
my $u = api_user($ng, $name);
ok($u->{token}, 'a user and a token');

sub me { api_as($ng, $u, GET => '/api/items') }

sub set_status {
    my ($status, %o) = @_;
    sql("UPDATE users SET status = '$status' WHERE id = '$u->{id}'");
    return if $o{quiet};
    # what a route that changes a user does: its records go
    for my $prefix ("uid:$u->{id}:", "user:$name:") {
        http($ng, POST => '/api/echo/cache-invalidate',
             body => qq{{"prefix":"$prefix"}});
    }
}

is(me()->{status}, 200, 'an active user is served');
my $q0 = metric($ng, 'defarm_db_queries_total');
is(me()->{status}, 200, 'and again');
is(metric($ng, 'defarm_db_queries_total'), $q0 + 1,
   'the second request made one query, its own (the status was cached)');

set_status('Suspended');
my $res = me();
is($res->{status}, 403, 'suspended: refused on the next request');
like($res->{body}, qr/Your account has been suspended/, 'with the message');
is(api_as($ng, $u, GET => '/api/echo/auth')->{status}, 403,
   'on every route');
$res = http($ng, POST => '/api/auth/login',
            headers => { 'Content-Type' => 'application/json' },
            body => JSON::PP->new->encode({ username => $name,
                                            password => 'Str0ng!pass' }));
is($res->{status}, 403, 'and a login is refused at once too');

set_status('Banned');
like(me()->{body}, qr/Your account has been banned/, 'banned: refused');

set_status('Active');
is(me()->{status}, 200, 'active again: served');

# a change in SQL alone: effective within defarm_user_status_ttl (1s)
set_status('Suspended', quiet => 1);
ok(wait_until(sub { me()->{status} == 403 }, $T, 'suspension seen'),
   'a suspension made in SQL alone is seen once the record expires');
set_status('Active');

# a login record cached before a change made in SQL alone: trusted no
# longer than defarm_user_status_ttl either (it was the cache's ttl, 1h)
my $login = sub {
    http($ng, POST => '/api/auth/login',
         headers => { 'Content-Type' => 'application/json' },
         body => JSON::PP->new->encode({ username => $name,
                                         password => 'Str0ng!pass' }))
};
is($login->()->{status}, 200, 'a login (its record now cached)');
set_status('Suspended', quiet => 1);
ok(wait_until(sub { $login->()->{status} == 403 }, $T, 'login refused'),
   'a login after a suspension in SQL alone is refused once it expires');
set_status('Active');

# a user who is gone
sql("DELETE FROM users WHERE id = '$u->{id}'");
http($ng, POST => '/api/echo/cache-invalidate',
     body => qq{{"prefix":"uid:$u->{id}:"}});
$res = me();
is($res->{status}, 404, 'a deleted user\'s token: 404');
like($res->{body}, qr/"error":"User not found"/, 'User not found');

# the database down: a cached status still serves, an uncached one fails
# fast (no request hangs)
my $v = api_user($ng, "t046b_$$");
is(api_as($ng, $v, GET => '/api/echo/auth')->{status}, 200, 'another user');
pg_stop();
my $st = api_as($ng, $v, GET => '/api/echo/auth')->{status};
ok($st == 200 || $st == 503, "database down: cached or 503 ($st)");
my $w = { token => $v->{token}, id => $v->{id} };
sleep 2;                                # the record expired
$st = api_as($ng, $w, GET => '/api/echo/auth')->{status} // 0;
ok($st == 503 || $st == 504, "database down, record expired: $st");
pg_start();
ok(wait_until(sub { api_as($ng, $v, GET => '/api/echo/auth')->{status}
                    == 200 }, $T, 'back'), 'served again once it is back');

stop_nginx($ng);
done_testing();
