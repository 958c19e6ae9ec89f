# The admin's user management: search (filters, LIKE metacharacters taken
# literally, paging), create (registration's checks, 409 on a taken name
# also under concurrency, the hash only in PostgreSQL, initial credits in
# the ledger), get, update (every field checked, the changes described,
# logged and notified, credits set through the ledger, a suspension and a
# change of tier or admin flag seen on the next request although the
# records are cached), bulk grants and the dashboard's statistics, which
# are compared with what SQL counts.  Every admin route refuses a
# non-admin's token, an admin's key without the admin permission and a
# non-admin's key.

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use MIME::Base64 ();
use DefarmTest;

my (undef, $secret_file) = jwt_secret();

my $ng = start_nginx(
    name   => 'admin-users',
    http   => db_config(size => 4) . "
    defarm_cache zone=admin_users:1m ttl=1h;
    defarm_bcrypt_cost 4;
    defarm_user_status_ttl 1h;
    defarm_jwt_secret file=$secret_file;",
    server => '
        location / {
            defarm_api on;
        }');

sub body { json_body(@_) }
sub as { api_as($ng, @_) }
sub by_key { my ($key, $method, $path, $body) = @_;
    http($ng, $method, $path, headers => { 'X-API-Key' => $key, 'Content-Type' => 'application/json' },
         defined $body ? (body => ref $body ? JSON::PP->new->canonical->encode($body) : $body) : ()) }
sub q { my ($s) = @_; $s =~ s/'/''/g; "'$s'" }
sub login {
    my ($name, $pw) = @_;
    return body(http($ng, POST => '/api/auth/login', headers => { 'Content-Type' => 'application/json' },
                     body => JSON::PP->new->encode({ username => $name, password => $pw // 'Str0ng!pass' })));
}
sub claims {
    my ($token) = @_;
    my $p = (split /\./, $token // '')[1] // '';
    return eval { JSON::PP->new->decode(MIME::Base64::decode_base64url($p)) } // {};
}
sub new_key {
    my ($who, %perm) = @_;
    return body(as($who, POST => '/api/api-keys',
                   { name => 'k', organization_type => 'Producer',
                     %perm ? (permissions => { map { $_ => $perm{$_} ? JSON::PP::true : JSON::PP::false } keys %perm })
                           : () }))->{api_key};
}

my $P = "t079$$";
my $admin = api_user($ng, "${P}_admin");
my $admin2 = api_user($ng, "${P}_admin2");
sql("UPDATE users SET is_admin = true WHERE id IN ('$admin->{id}', '$admin2->{id}')");
my $u = api_user($ng, "${P}_alpha");
my $v = api_user($ng, "${P}_beta");
my $odd = api_user($ng, "${P}%odd");            # LIKE metacharacters, literally
my $near = api_user($ng, "${P}xalpha");         # "_" must not match the "x"
ok($_->{id}, "user made") for $admin, $admin2, $u, $v, $odd, $near;

my $admin_key = new_key($admin, read => 1, write => 1, admin => 0);
my $plain_key = new_key($u, read => 1, write => 1);
my $admin2_key = new_key($admin2, read => 1, write => 1, admin => 1);
ok($admin_key && $plain_key && $admin2_key, 'the keys');

# ------------------------------------------------------------ refusals

my @routes = (
    [ PUT  => "/api/admin/users/$v->{id}/freeze" ],
    [ PUT  => "/api/admin/users/$v->{id}/unfreeze" ],
    [ GET  => '/api/admin/actions' ],
    [ POST => "/api/admin/users/$v->{id}/credits", { amount => 5, reason => 'x' } ],
    [ GET  => "/api/admin/users/$v->{id}/credits/history" ],
    [ GET  => '/api/admin/users' ],
    [ POST => '/api/admin/users', { username => "${P}_nope", email => "${P}_nope\@example.com",
                                    password => 'Str0ng!pass', tier => 'Basic' } ],
    [ GET  => "/api/admin/users/$v->{id}" ],
    [ PUT  => "/api/admin/users/$v->{id}", { tier => 'Enterprise' } ],
    [ POST => '/api/admin/users/credits/bulk-grant', { user_ids => [ $v->{id} ], amount => 5, reason => 'x' } ],
    [ GET  => '/api/admin/dashboard/stats' ],
);
for my $rt (@routes) {
    my ($m, $path, $b) = @$rt;
    is(as($u, $m, $path, $b)->{status}, 403, "$m $path: a non-admin's token: 403");
    my $res = by_key($admin_key, $m, $path, $b);
    is($res->{status}, 403, "$m $path: an admin's key without the admin permission: 403");
    like(body($res)->{error} // '', qr/admin permission/, '... for that reason');
    is(by_key($plain_key, $m, $path, $b)->{status}, 403, "$m $path: a non-admin's key: 403");
    is(http($ng, $m, $path, headers => { 'Content-Type' => 'application/json' },
            defined $b ? (body => JSON::PP->new->encode($b)) : ())->{status}, 401,
       "$m $path: no credentials: 401");
}
is(sql("SELECT status || ' ' || tier || ' ' || defarm_credit_balance(id) FROM users WHERE id = '$v->{id}'"),
   'Active Basic 100', 'the refused requests changed nothing');
is(sql("SELECT count(*) FROM users WHERE username = '${P}_nope'"), 0, '... and made no user');
is(by_key($admin2_key, GET => "/api/admin/users/$v->{id}")->{status}, 200,
   "an admin's key with the admin permission: 200");

# ------------------------------------------------------------ GET /api/admin/users

my $res = as($admin, GET => "/api/admin/users?username=${P}_alpha");
is($res->{status}, 200, 'search: 200');
my $b = body($res);
ok($b->{success}, '... success');
is($b->{count}, 1, '... one user');
is($b->{total}, 1, '... of one');
my $ur = $b->{users}[0];
is($ur->{user_id}, $u->{id}, '... the user');
is_deeply([ sort keys %$ur ],
          [ sort qw(user_id username email tier status credits created_at updated_at last_login
                    is_admin workspace_id limits available_adapters) ], '... UserResponse fields');
is($ur->{email}, "${P}_alpha\@example.com", '... email');
is($ur->{tier}, 'Basic', '... tier');
is($ur->{status}, 'Active', '... status');
is($ur->{credits}, 100, '... credits from the balance');
ok(!$ur->{is_admin}, '... not an admin');
is($ur->{workspace_id}, "${P}_alpha-workspace", '... workspace_id');
like($ur->{created_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/, '... created_at rfc3339');
like($ur->{updated_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/, '... updated_at rfc3339');
is($ur->{last_login}, undef, '... never logged in: last_login null');
is($ur->{available_adapters}, undef, '... available_adapters null (the tier\'s)');
is_deeply($ur->{limits}{available_adapters}, [ 'ipfs-ipfs' ], '... the tier\'s limits with adapters');
is($ur->{limits}{max_items_per_month}, 1000, '...');

ok(login("${P}_alpha")->{token}, 'the user logs in');
ok(wait_until(sub { defined body(as($admin, GET => "/api/admin/users/$u->{id}"))->{user}{last_login} }, 5,
              'last_login recorded'), '... and last_login is shown');

sub names {
    my ($query) = @_;
    my $r = as($admin, GET => "/api/admin/users?$query");
    return [ sort map { $_->{username} } @{ body($r)->{users} // [] } ];
}
is_deeply(names("username=" . uc("${P}_ALPHA")), [ "${P}_alpha" ], 'username: any case');
is_deeply(names("username=${P}_&limit=500"),
          [ sort map { "${P}_$_" } qw(admin admin2 alpha beta) ], '"_" is an underscore, not a wildcard');
is_deeply(names("username=${P}%25"), [ "${P}%odd" ], '"%" is a percent sign');
is_deeply(names("email=${P}_BETA%40EXAMPLE"), [ "${P}_beta" ], 'email: a substring, any case');
is_deeply(names("username=$P&is_admin=true"), [ "${P}_admin", "${P}_admin2" ], 'is_admin=true');
is(scalar @{ names("username=$P&is_admin=false") }, 4, 'is_admin=false');
is_deeply(names("username=${P}_alpha&tier=Professional"), [], 'tier: exact');
is_deeply(names("username=${P}_alpha&status=Active&tier=Basic"), [ "${P}_alpha" ], 'status and tier');

my $all = body(as($admin, GET => "/api/admin/users?username=$P"));
is($all->{total}, 6, 'six of ours in all');
is($all->{total}, sql("SELECT count(*) FROM users WHERE username LIKE 't079$$%'"), '... as SQL counts');
my @pages = map { body(as($admin, GET => "/api/admin/users?username=$P&limit=4&offset=$_")) } 0, 4;
is($pages[0]{count}, 4, 'page 1: four');
is($pages[1]{count}, 2, 'page 2: two');
is($pages[1]{total}, 6, '... total on every page');
is_deeply([ sort map { $_->{user_id} } map { @{ $_->{users} } } @pages ],
          [ sort map { $_->{user_id} } @{ $all->{users} } ], 'the pages do not overlap');
is(body(as($admin, GET => '/api/admin/users?limit=1'))->{count}, 1, 'limit=1');
is(body(as($admin, GET => '/api/admin/users'))->{total},
   sql('SELECT count(*) FROM users'), 'no filter: every user');

for my $bad ([ 'tier=Gold', qr/tier must be one of/ ], [ 'status=Frozen', qr/status must be one of/ ],
             [ 'is_admin=yes', qr/is_admin/ ], [ 'limit=0', qr/limit/ ], [ 'limit=501', qr/limit/ ],
             [ 'limit=abc', qr/limit/ ], [ 'offset=-1', qr/offset/ ], [ 'offset=x', qr/offset/ ]) {
    is_err(as($admin, GET => "/api/admin/users?$bad->[0]"), 400, $bad->[1], "search ?$bad->[0]");
}

# ------------------------------------------------------------ GET /api/admin/users/:user_id

$res = as($admin, GET => "/api/admin/users/$v->{id}");
is($res->{status}, 200, 'get: 200');
is(body($res)->{user}{username}, "${P}_beta", '... the user');
ok(body($res)->{success}, '... success');
is_deeply(body($res)->{user}, body(as($admin, GET => "/api/admin/users?username=${P}_beta"))->{users}[0],
          '... the same UserResponse as the search');
is_err(as($admin, GET => '/api/admin/users/user-nobody'), 404, qr/User not found/, 'get an unknown user');

# ------------------------------------------------------------ POST /api/admin/users

my %new = (username => "${P}_made", email => "${P}_made\@example.com", password => 'An0ther!pass',
           tier => 'Professional', initial_credits => 40);
$res = as($admin, POST => '/api/admin/users', \%new);
is($res->{status}, 201, 'create: 201');
$b = body($res);
ok($b->{success}, '... success');
is($b->{message}, 'User created successfully', '... the message');
is($b->{username}, "${P}_made", '... username');
like($b->{user_id} // '', qr/^user-[0-9a-f-]{36}$/, '... a user id like a registered one\'s');
my $made = $b->{user_id};
my $mu = body(as($admin, GET => "/api/admin/users/$made"))->{user};
is($mu->{tier}, 'Professional', '... the tier');
is($mu->{status}, 'Active', '... Active');
ok(!$mu->{is_admin}, '... not an admin');
is($mu->{workspace_id}, "${P}_made-workspace", '... the registration\'s workspace');
is($mu->{credits}, 40 + sql("SELECT registration_credits FROM tier_limits WHERE tier = 'Professional'"),
   '... initial credits on top of the tier\'s registration grant');
is(sql("SELECT amount || ' ' || transaction_type || ' ' || created_by FROM credit_transactions "
       . "WHERE user_id = '$made' AND operation = 'admin_initial_credits'"),
   "40 Grant $admin->{id}", '... a Grant in the ledger, by the admin');
like(sql("SELECT password_hash FROM users WHERE id = '$made'"), qr/^\$2[aby]?\$/, '... a bcrypt hash stored');
my $ml = login("${P}_made", 'An0ther!pass');
ok($ml->{token}, '... who logs in with the password');
is(claims($ml->{token})->{tier}, 'Professional', '... with the tier');
is(sql("SELECT details ->> 'username' FROM admin_actions WHERE action_type = 'UserCreated' "
       . "AND target_user_id = '$made'"), "${P}_made", '... action UserCreated logged');

$res = as($admin, POST => '/api/admin/users', { username => "${P}_ent", email => "${P}_ent\@example.com",
                                                password => 'Str0ng!pass', tier => 'Enterprise',
                                                workspace_id => 'farm-7' });
is($res->{status}, 201, 'create without initial_credits: 201');
my $ent = body(as($admin, GET => '/api/admin/users/' . body($res)->{user_id}))->{user};
is($ent->{workspace_id}, 'farm-7', '... the workspace_id given');
is($ent->{credits}, sql("SELECT registration_credits FROM tier_limits WHERE tier = 'Enterprise'"),
   '... the tier\'s registration credits only');

my %ok = (username => "${P}_c", email => "${P}_c\@example.com", password => 'Str0ng!pass', tier => 'Basic');
for my $bad (
    [ '{"username":', qr/./, 'malformed JSON' ],
    [ '[]', qr/JSON object/, 'an array' ],
    [ { %ok, username => undef }, qr/username/, 'no username' ],
    [ { map { $_ => $ok{$_} } qw(username email tier) }, qr/password/, 'no password' ],
    [ { map { $_ => $ok{$_} } qw(username password tier) }, qr/email/, 'no email' ],
    [ { map { $_ => $ok{$_} } qw(username email password) }, qr/tier/, 'no tier' ],
    [ { %ok, username => 5 }, qr/username.*string/, 'a number as username' ],
    [ { %ok, username => 'has space' }, qr/Username must be/, 'a space in the username' ],
    [ { %ok, email => 'nope' }, qr/Email/, 'a bad email' ],
    [ { %ok, password => 'weak' }, qr/Password/, 'a weak password' ],
    [ { %ok, tier => 'Gold' }, qr/tier must be one of/, 'an unknown tier' ],
    [ { %ok, tier => 3 }, qr/tier must be a string/, 'a number as tier' ],
    [ { %ok, initial_credits => -5 }, qr/initial_credits/, 'negative initial_credits' ],
    [ { %ok, initial_credits => 1.5 }, qr/initial_credits/, 'fractional initial_credits' ],
    [ { %ok, initial_credits => '5' }, qr/initial_credits must be a number/, 'initial_credits a string' ],
    [ { %ok, workspace_id => '' }, qr/Workspace ID/, 'an empty workspace_id' ],
    [ { %ok, workspace_id => 7 }, qr/workspace_id/, 'a number as workspace_id' ],
    [ { %ok, is_admin => JSON::PP::true }, qr/Unknown field: is_admin/, 'an unknown field' ],
) {
    my $r = as($admin, POST => '/api/admin/users',
               ref $bad->[0] ? JSON::PP->new->canonical->encode({ map { defined $bad->[0]{$_} ? ($_ => $bad->[0]{$_}) : () }
                                                                   keys %{ $bad->[0] } })
                             : $bad->[0]);
    is_err($r, 400, $bad->[1], "create: $bad->[2]");
}
is_err(as($admin, POST => '/api/admin/users', { %ok, username => "${P}_alpha" }), 409,
       qr/^Username already exists$/, 'create: a taken username');
is_err(as($admin, POST => '/api/admin/users', { %ok, email => "${P}_beta\@example.com" }), 409,
       qr/^Email already exists$/, 'create: a taken email');
is(sql("SELECT count(*) FROM users WHERE username = '${P}_c'"), 0, '... no user made by the refusals');

# the same name five times at once: one wins, the others see the constraint
my @bg = map {
    http_bg($ng, POST => '/api/admin/users',
            headers => { 'Content-Type' => 'application/json', Authorization => "Bearer $admin->{token}" },
            body => JSON::PP->new->encode({ %ok, username => "${P}_race", email => "${P}_race$_\@example.com" }))
} 1 .. 5;
my %st;
$st{ http_wait($_)->{status} // 'none' }++ for @bg;
is($st{201}, 1, 'five concurrent creations of one name: one 201');
is($st{409}, 4, '... four 409');
is(sql("SELECT count(*) FROM users WHERE username = '${P}_race'"), 1, '... one user');

# ------------------------------------------------------------ PUT /api/admin/users/:user_id

my $put = "/api/admin/users/$u->{id}";
sql("UPDATE users SET updated_at = '2000-01-01' WHERE id = '$u->{id}'");
my $ut = login("${P}_alpha");                    # caches the user's auth record (tier Basic)
is(claims($ut->{token})->{tier}, 'Basic', 'a token of tier Basic');
$res = as($admin, PUT => $put, { tier => 'Professional', credits => 150 });
is($res->{status}, 200, 'update tier and credits: 200');
$b = body($res);
is($b->{message}, 'User updated successfully', '... the message');
is($b->{changes}, 'tier: Basic -> Professional, credits: 100 -> 150', '... the changes');
$ur = body(as($admin, GET => "/api/admin/users/$u->{id}"))->{user};
is($ur->{tier}, 'Professional', '... the tier');
is($ur->{credits}, 150, '... the credits');
is($ur->{limits}{max_items_per_month}, 10000, '... the new tier\'s limits');
isnt(substr($ur->{updated_at}, 0, 4), '2000', '... updated_at moved');
is(sql("SELECT amount || ' ' || transaction_type || ' ' || balance_after FROM credit_transactions "
       . "WHERE user_id = '$u->{id}' AND operation = 'admin_set_credits' ORDER BY seq DESC LIMIT 1"),
   '50 Grant 150', '... a Grant of the difference in the ledger');
is(claims(login("${P}_alpha")->{token})->{tier}, 'Professional',
   '... a login at once has the new tier (the cached auth record was dropped)');
is(sql("SELECT details ->> 'changes' FROM admin_actions WHERE action_type = 'UpdateUser' "
       . "AND target_user_id = '$u->{id}' ORDER BY created_at DESC LIMIT 1"), $b->{changes}, '... logged');
is(sql("SELECT count(*) FROM notifications WHERE user_id = '$u->{id}' AND notification_type = 'AccountUpdated'"),
   1, '... the user notified');

$res = as($admin, PUT => $put, { credits => 20 });
is(body($res)->{changes}, 'credits: 150 -> 20', 'credits down');
is(sql("SELECT amount || ' ' || transaction_type FROM credit_transactions WHERE user_id = '$u->{id}' "
       . "ORDER BY seq DESC LIMIT 1"), '-130 Penalty', '... a Penalty of the difference');
is(sql("SELECT sum(amount) = defarm_credit_balance('$u->{id}') FROM credit_transactions "
       . "WHERE user_id = '$u->{id}'"), 't', '... the ledger sums to the balance');
sql("UPDATE users SET updated_at = '2000-01-01' WHERE id = '$u->{id}'");
as($admin, PUT => $put, { credits => 0 });
is(body(as($admin, GET => "/api/admin/users/$u->{id}"))->{user}{credits}, 0, 'credits 0');
isnt(substr(body(as($admin, GET => "/api/admin/users/$u->{id}"))->{user}{updated_at}, 0, 4), '2000',
     '... a change of credits alone moves updated_at too');

$res = as($admin, PUT => $put, { tier => 'Professional', credits => 0 });
is($res->{status}, 200, 'the same values again: 200');
is(body($res)->{changes}, '', '... no changes');
is(sql("SELECT count(*) FROM admin_actions WHERE action_type = 'UpdateUser' AND target_user_id = '$u->{id}'"),
   3, '... not logged');

$res = as($admin, PUT => $put, { available_adapters => [ 'polygon-arweave', 'ipfs-ipfs' ] });
is(body($res)->{changes}, 'available_adapters: tier default -> [polygon-arweave, ipfs-ipfs]', 'adapters set');
is_deeply(body(as($admin, GET => "/api/admin/users/$u->{id}"))->{user}{available_adapters},
          [ 'polygon-arweave', 'ipfs-ipfs' ], '... shown in order');
is(sql("SELECT data -> 'available_adapters' FROM notifications WHERE user_id = '$u->{id}' "
       . "AND notification_type = 'AdaptersUpdated'"), '["polygon-arweave", "ipfs-ipfs"]',
   '... AdaptersUpdated notified');
$res = as($admin, PUT => $put, { available_adapters => undef });
is(body($res)->{changes}, 'available_adapters: [polygon-arweave, ipfs-ipfs] -> tier default',
   'adapters null: back to the tier\'s');
is(body(as($admin, GET => "/api/admin/users/$u->{id}"))->{user}{available_adapters}, undef, '... null');
is(sql("SELECT count(*) FROM notifications WHERE user_id = '$u->{id}' AND notification_type = 'AdaptersUpdated'"),
   2, '... notified again');

for my $bad (
    [ '{"tier":', qr/./, 'malformed JSON' ],
    [ '[1]', qr/JSON object/, 'an array' ],
    [ {}, qr/Nothing to update/, 'an empty object' ],
    [ { credit => 5 }, qr/Unknown field: credit/, 'an unknown field' ],
    [ { tier => 'Gold' }, qr/tier must be one of/, 'an unknown tier' ],
    [ { tier => undef }, qr/tier must be a string/, 'a null tier' ],
    [ { tier => 5 }, qr/tier must be a string/, 'a number as tier' ],
    [ { status => 'Frozen' }, qr/status must be one of/, 'an unknown status' ],
    [ { credits => -1 }, qr/credits must be a whole number/, 'negative credits' ],
    [ { credits => 1.5 }, qr/credits must be a whole number/, 'fractional credits' ],
    [ { credits => '5' }, qr/credits must be a number/, 'credits a string' ],
    [ { credits => 1e13 }, qr/credits must be a whole number/, 'credits too large' ],
    [ { is_admin => 'true' }, qr/is_admin must be a boolean/, 'is_admin a string' ],
    [ { available_adapters => 'ipfs-ipfs' }, qr/available_adapters must be an array/, 'adapters a string' ],
    [ { available_adapters => [ 1 ] }, qr/array of strings/, 'an adapter a number' ],
    [ { available_adapters => [ 'warp-drive' ] }, qr/Unknown adapter: warp-drive/, 'an unknown adapter' ],
    [ { available_adapters => [ 'ipfs-ipfs', 'ipfs-ipfs' ] }, qr/twice/, 'an adapter twice' ],
    [ { tier => 'Enterprise', status => 'Nope' }, qr/status/, 'one bad field of two' ],
) {
    is_err(as($admin, PUT => $put, $bad->[0]), 400, $bad->[1], "update: $bad->[2]");
}
$ur = body(as($admin, GET => "/api/admin/users/$u->{id}"))->{user};
is("$ur->{tier} $ur->{status} $ur->{credits}", 'Professional Active 0', '... nothing changed by the refusals');
is_err(as($admin, PUT => '/api/admin/users/user-nobody', { tier => 'Basic' }), 404, qr/User not found/,
       'update an unknown user');
is_err(as($admin, PUT => "/api/admin/users/$admin->{id}", { is_admin => JSON::PP::false }), 400,
       qr/own admin flag/, 'an admin removing their own admin flag');
is_err(as($admin, PUT => "/api/admin/users/$admin->{id}", { status => 'Suspended' }), 400,
       qr/suspend themselves/, 'an admin suspending themselves');
is(as($admin, PUT => "/api/admin/users/$admin->{id}", { tier => 'Admin' })->{status}, 200,
   '... but may change their own tier');

# a suspension through PUT is a freeze: cached token status and key record
my $vkey = new_key($v, read => 1, write => 1);
sub vkey { by_key($vkey, GET => '/api/items')->{status} }
is(vkey(), 200, 'the user\'s key works');
is(vkey(), 200, '... cached');
is(as($v, GET => '/api/items')->{status}, 200, 'the user\'s token works (status cached)');
$res = as($admin, PUT => "/api/admin/users/$v->{id}", { status => 'Suspended' });
is(body($res)->{changes}, 'status: Active -> Suspended', 'status to Suspended');
is(as($v, GET => '/api/items')->{status}, 403, '... the token refused at once');
is(vkey(), 403, '... the key refused at once');
like(by_key($vkey, GET => '/api/items')->{body}, qr/suspended/, '... as suspended');
as($admin, PUT => "/api/admin/users/$v->{id}", { status => 'Active' });
is(vkey(), 200, 'status Active again: the key works');
is(as($v, GET => '/api/items')->{status}, 401, '... the token issued before stays revoked');
$v = { %$v, token => login("${P}_beta")->{token} };
is(as($v, GET => '/api/items')->{status}, 200, '... a new login works');

# an admin flag removed: the admin's cached key record goes with it
is(by_key($admin2_key, GET => '/api/admin/users?limit=1')->{status}, 200, 'admin2\'s admin key works');
is(by_key($admin2_key, GET => '/api/admin/users?limit=1')->{status}, 200, '... cached');
$res = as($admin, PUT => "/api/admin/users/$admin2->{id}", { is_admin => JSON::PP::false });
is(body($res)->{changes}, 'is_admin: true -> false', 'is_admin removed');
is(by_key($admin2_key, GET => '/api/admin/users?limit=1')->{status}, 403, '... the key refused at once');
is(as($admin2, GET => '/api/admin/users?limit=1')->{status}, 403, '... and the token');
as($admin, PUT => "/api/admin/users/$admin2->{id}", { is_admin => JSON::PP::true });
is(by_key($admin2_key, GET => '/api/admin/users?limit=1')->{status}, 200, 'is_admin again: the key works');

# ------------------------------------------------------------ bulk grant

my $bulk = '/api/admin/users/credits/bulk-grant';
my %bal = map { $_ => sql("SELECT defarm_credit_balance('$_')") } $v->{id}, $odd->{id};
my $issued = body(as($admin, GET => '/api/admin/dashboard/stats'))->{stats}{total_credits_issued};
$res = as($admin, POST => $bulk, { user_ids => [ $odd->{id}, 'user-nobody', $v->{id}, $odd->{id} ],
                                   amount => 25, reason => 'spring promo' });
is($res->{status}, 200, 'bulk grant: 200');
$b = body($res);
is($b->{message}, 'Bulk credit grant completed', '... the message');
is_deeply($b->{successful}, [ $odd->{id}, $v->{id} ], '... successful, in the request\'s order');
is_deeply($b->{failed}, [ { user_id => 'user-nobody', error => 'User not found' },
                         { user_id => $odd->{id}, error => 'Duplicate user_id (granted once)' } ],
          '... failed: the unknown id and the repeated one');
is($b->{total_users}, 4, '... total_users');
is($b->{successful_count}, 2, '... successful_count');
is($b->{failed_count}, 2, '... failed_count');
is(sql("SELECT defarm_credit_balance('$_')"), $bal{$_} + 25, "... $_ granted 25 once") for sort keys %bal;
is(sql("SELECT count(*) FROM credit_transactions WHERE operation = 'admin_bulk_grant'"), 2, '... two ledger rows');
is(sql("SELECT count(*) FROM notifications WHERE notification_type = 'CreditsAdjusted' "
       . "AND user_id IN ('$v->{id}', '$odd->{id}')"), 2, '... each notified');
is(sql("SELECT details ->> 'amount' FROM admin_actions WHERE action_type = 'BulkGrantCredits'"), 25,
   '... one admin action');
is(body(as($admin, GET => '/api/admin/dashboard/stats'))->{stats}{total_credits_issued}, $issued + 50,
   '... the dashboard counts the 50 issued');

is_err(as($admin, POST => '/api/admin/users/credits/credits', { amount => 5, reason => 'x' }), 404,
       qr/User not found/, 'a user named "credits" still reaches .../:user_id/credits');

my %bok = (user_ids => [ $v->{id} ], amount => 5, reason => 'r');
for my $bad (
    [ '{"user_ids":', qr/./, 'malformed JSON' ],
    [ '"x"', qr/JSON object/, 'a string' ],
    [ { %bok, user_ids => [] }, qr/1 to 1000/, 'no ids' ],
    [ { %bok, user_ids => [ ('user-x') x 1001 ] }, qr/1 to 1000/, '1001 ids' ],
    [ { %bok, user_ids => [ 5 ] }, qr/strings/, 'a number as id' ],
    [ { %bok, user_ids => $v->{id} }, qr/user_ids must be an array/, 'ids a string' ],
    [ { %bok, amount => 0 }, qr/positive whole/, 'amount 0' ],
    [ { %bok, amount => -5 }, qr/positive whole/, 'a negative amount' ],
    [ { %bok, amount => 2.5 }, qr/positive whole/, 'a fractional amount' ],
    [ { %bok, amount => '5' }, qr/amount must be a number/, 'amount a string' ],
    [ { %bok, reason => '  ' }, qr/required/, 'a blank reason' ],
    [ { user_ids => [ $v->{id} ], amount => 5 }, qr/required/, 'no reason' ],
    [ { amount => 5, reason => 'r' }, qr/required/, 'no ids' ],
    [ { %bok, user_ids => undef }, qr/required/, 'null ids' ],
    [ { %bok, note => 'x' }, qr/Unknown field: note/, 'an unknown field' ],
) {
    is_err(as($admin, POST => $bulk, $bad->[0]), 400, $bad->[1], "bulk grant: $bad->[2]");
}
is(sql("SELECT count(*) FROM admin_actions WHERE action_type = 'BulkGrantCredits'"), 1,
   '... the refusals granted nothing');

# ------------------------------------------------------------ dashboard

sql("UPDATE users SET last_login = now(), created_at = now() WHERE id = '$near->{id}'");
my $s1 = body(as($admin, GET => '/api/admin/dashboard/stats'))->{stats};
sql("UPDATE users SET last_login = now() - interval '40 days', created_at = now() - interval '60 days' "
    . "WHERE id = '$near->{id}'");
sql("SELECT defarm_credit_change('$odd->{id}', -7, 'Consumption', 'item_creation', NULL, 'test', NULL)");
$res = as($admin, GET => '/api/admin/dashboard/stats');
is($res->{status}, 200, 'dashboard: 200');
$b = body($res);
ok($b->{success}, '... success');
my $s = $b->{stats};
is($s->{total_users}, sql('SELECT count(*) FROM users'), '... total_users as SQL counts');
is_deeply($s->{users_by_tier},
          { map { split /\|/ } split /\n/, sql("SELECT t.tier, count(u.id) FROM tier_limits t "
                                               . "LEFT JOIN users u ON u.tier = t.tier GROUP BY t.tier") },
          '... users_by_tier');
ok($s->{users_by_tier}{Professional} >= 2 && exists $s->{users_by_tier}{Admin}, '... every tier, by name');
is_deeply($s->{users_by_status},
          { map { $_ => sql("SELECT count(*) FROM users WHERE status = '$_'") }
                qw(Active Suspended Banned PendingVerification TrialExpired) },
          '... users_by_status: every status, 0 included');
ok($s->{users_by_status}{Active} >= 8, '... ours Active');
is($s->{total_credits_issued}, sql('SELECT sum(amount) FROM credit_transactions WHERE amount > 0'),
   '... total_credits_issued');
is($s->{total_credits_consumed},
   sql("SELECT sum(-amount) FROM credit_transactions WHERE transaction_type = 'Consumption'"),
   '... total_credits_consumed');
cmp_ok($s->{total_credits_consumed}, '>=', 7, '... counting the consumption');
is($s->{active_users_last_30_days},
   sql("SELECT count(*) FROM users WHERE last_login >= now() - interval '30 days'"), '... active users');
is($s->{active_users_last_30_days}, $s1->{active_users_last_30_days} - 1,
   '... one fewer when one last logged in 40 days ago');
is($s->{new_users_last_30_days}, sql("SELECT count(*) FROM users WHERE created_at >= now() - interval '30 days'"),
   '... new users');
is($s->{new_users_last_30_days}, $s1->{new_users_last_30_days} - 1, '... one fewer when one was made 60 days ago');
like($s->{generated_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/, '... generated_at rfc3339');

unlike($ng->log, qr/\[(alert|crit|emerg)\]/, 'no alert in error.log');
stop_nginx($ng);

done_testing();
