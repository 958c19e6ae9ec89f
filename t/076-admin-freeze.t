# The admin side, first routes: freeze and unfreeze take effect on the
# next request on every node (two nginx, one PostgreSQL, one Redis): the
# user's tokens and API keys are refused at once; an unfreeze restores the
# keys but not the tokens issued before the freeze.  Admin routes refuse a
# non-admin's token and a key without the admin permission; actions are
# logged; the bootstrap script makes the first admin.

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use DefarmTest;
use Cwd ();
use File::Basename ();

my $Top = Cwd::abs_path(File::Basename::dirname(__FILE__) . '/..');

my $T = valgrind() ? 60 : 15;
my $dir = "$ENV{TEST_NGINX_SERVROOT}-admin-redis";
my (undef, $secret_file) = jwt_secret();
my $port = redis_start($dir);

sub node {
    my ($name) = @_;
    return start_nginx(
        name   => $name,
        http   => db_config(size => 2) . "
    defarm_cache zone=$name:1m ttl=1h;
    defarm_redis 127.0.0.1:$port timeout=50ms connect_timeout=1s
                 retry_max=500ms;
    defarm_bcrypt_cost 4;
    defarm_user_status_ttl 1h;
    defarm_jwt_secret file=$secret_file;",
        server => '
        location / {
            defarm_api on;
        }');
}

my $a = node('admin-a');
my $b = node('admin-b');
for my $ng ($a, $b) {
    ok(wait_until(sub { http($ng, GET => '/health/redis')->{status} == 200 }, $T,
                  "$ng->{name} connects"), "$ng->{name} reaches Redis");
}

sub body { json_body(@_) }
my $name = "t076_admin_$$";
my $admin = api_user($a, $name);
my $user = api_user($a, "t076_user_$$");
my $plain = api_user($a, "t076_plain_$$");

# the bootstrap script
local $ENV{PGHOST} = $ENV{TEST_NGINX_PG_HOST};
local $ENV{PGPORT} = $ENV{TEST_NGINX_PG_PORT};
local $ENV{PGUSER} = $ENV{TEST_NGINX_PG_USER};
local $ENV{PGDATABASE} = $ENV{TEST_NGINX_PG_DATABASE};
my $out = `$Top/scripts/make_admin.sh $name 2>&1`;
is($?, 0, 'make_admin.sh: exit 0') or diag($out);
like($out, qr/is an administrator/, '... says so');
isnt(system("$Top/scripts/make_admin.sh nobody_$$ >/dev/null 2>&1"), 0,
     '... and fails for an unknown user');

# the user's key, used on node b (its record cached there)
my $key = body(api_as($a, $user, POST => '/api/api-keys',
                      { name => 'k', organization_type => 'Producer' }))->{api_key};
ok($key, 'the user has a key');
sub by_key { http($_[0], GET => '/api/items', headers => { 'X-API-Key' => $key }) }
sub by_jwt { api_as($_[0], $_[1], GET => '/api/items') }
is(by_key($b)->{status}, 200, 'the key works on node b');
is(by_key($b)->{status}, 200, '... twice (cached)');
is(by_jwt($b, $user)->{status}, 200, 'the token works on node b');

# admin routes refuse who is not an admin
is(api_as($a, $plain, PUT => "/api/admin/users/$user->{id}/freeze")->{status}, 403,
   "a non-admin's token: 403");
is(http($a, PUT => "/api/admin/users/$user->{id}/freeze", headers => { 'X-API-Key' => $key })->{status},
   403, 'a key without the admin permission: 403');
is(http($a, GET => '/api/admin/actions')->{status}, 401, 'no token: 401');

# freeze on node a: refused on node b at once
my $res = api_as($a, $admin, PUT => "/api/admin/users/$user->{id}/freeze");
is($res->{status}, 200, 'freeze: 200');
is(body($res)->{message}, 'User frozen successfully', '... the message');
ok(wait_until(sub { by_jwt($b, $user)->{status} == 403 }, $T, 'token refused on b'),
   'the token is refused on node b');
like(by_jwt($b, $user)->{body}, qr/suspended/, '... as suspended');
is(by_key($b)->{status}, 403, 'the key is refused on node b');
is(by_jwt($a, $user)->{status}, 403, '... and on node a');
is(body(api_as($a, $admin, GET => '/api/notifications'))->[0]{notification_type} // '', '',
   'the admin is not notified');
is(sql("SELECT notification_type FROM notifications WHERE user_id = '$user->{id}' ORDER BY seq DESC LIMIT 1"),
   'AccountFrozen', 'the user is notified: AccountFrozen');

# unfreeze: the key works again, the old token does not
$res = api_as($b, $admin, PUT => "/api/admin/users/$user->{id}/unfreeze");
is($res->{status}, 200, 'unfreeze (on node b): 200');
ok(wait_until(sub { by_key($a)->{status} == 200 }, $T, 'key back on a'), 'the key works again on node a');
is(by_jwt($a, $user)->{status}, 401, 'the token issued before the freeze stays refused');
like(by_jwt($a, $user)->{body}, qr/revoked/, '... revoked');
my $fresh = json_body(http($a, POST => '/api/auth/login', headers => { 'Content-Type' => 'application/json' },
    body => JSON::PP->new->encode({ username => "t076_user_$$", password => 'Str0ng!pass' })));
ok($fresh->{token}, 'a new login');
is(by_jwt($b, $fresh)->{status}, 200, '... whose token works on node b');

# refusals and the log
is(api_as($a, $admin, PUT => "/api/admin/users/user-nobody/freeze")->{status}, 404, 'an unknown user: 404');
is(api_as($a, $admin, PUT => "/api/admin/users/$admin->{id}/freeze")->{status}, 400, 'freezing oneself: 400');
$res = api_as($a, $admin, GET => "/api/admin/actions?admin_id=$admin->{id}&limit=10");
is($res->{status}, 200, 'the action log');
is_deeply([ map { $_->{action_type} } @{ body($res)->{actions} } ], [ 'UnfreezeUser', 'FreezeUser' ],
          '... both actions, newest first');
is(body($res)->{actions}[0]{target_user_id}, $user->{id}, '... on the user');
is(api_as($a, $admin, GET => '/api/admin/actions?limit=0')->{status}, 400, 'a bad limit: 400');

for my $ng ($a, $b) {
    unlike($ng->log, qr/\[(alert|crit|emerg)\]/, "$ng->{name}: no alert in error.log");
    stop_nginx($ng);
}
redis_stop($dir);

done_testing();
