# Accounts: the self-service routes (profile with the tier's limits from
# one table, balance, the ledger, the tier's costs) and the admin's credit
# adjustment: every balance change is a ledger row with its balance after,
# a penalty never takes the balance below zero (also 20 at once), the user
# is notified and the action logged.

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use DefarmTest;

my (undef, $secret_file) = jwt_secret();

my $ng = start_nginx(
    name   => 'credits',
    http   => db_config(size => 4) . "
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;",
    server => '
        location / {
            defarm_api on;
        }');

sub body { json_body(@_) }
sub as { api_as($ng, @_) }

my $aname = "t077_admin_$$";
my $admin = api_user($ng, $aname);
sql("UPDATE users SET is_admin = true WHERE id = '$admin->{id}'");
my $u = api_user($ng, "t077_user_$$");

# self-service
my $res = as($u, GET => '/users/me/profile');
is($res->{status}, 200, 'profile: 200');
my $p = body($res);
is($p->{tier}, 'Basic', '... Basic');
is($p->{credits}, 100, '... 100 credits at registration');
is($p->{limits}{max_items_per_month}, 1000, '... the tier limits');
is($p->{limits}{max_api_requests_per_hour}, 100, '...');
is_deeply($p->{limits}{available_adapters}, [ 'ipfs-ipfs' ], '... adapters');
is(as($u, GET => '/credit/users/current')->{body}, $res->{body}, 'the alias answers the same');

is(body(as($u, GET => '/users/me/credits/balance'))->{credits}, 100, 'balance: 100');
my $costs = body(as($u, GET => '/users/me/credits/costs'));
is($costs->{item_creation}, 2, 'costs: item_creation 2 for Basic');
is($costs->{api_request}, 1, '... api_request 1');

my $h = body(as($u, GET => '/users/me/credits/history'));
is($h->{count}, 1, 'history: the registration grant');
is($h->{transactions}[0]{transaction_type}, 'Grant', '... a Grant');
is($h->{transactions}[0]{balance_after}, 100, '... balance_after 100');
is(as($u, GET => '/users/me/credits/history?limit=0')->{status}, 400, 'a bad limit: 400');

my $key = body(as($u, POST => '/api/api-keys', { name => 'k', organization_type => 'Producer' }))->{api_key};
is(http($ng, GET => '/users/me/profile', headers => { 'X-API-Key' => $key })->{status}, 403,
   'a key cannot read the account routes (a user\'s token only)');
is(http($ng, GET => '/users/me/profile')->{status}, 401, 'no token: 401');

# the admin adjusts
my $base = "/api/admin/users/$u->{id}/credits";
$res = as($admin, POST => $base, { amount => 50, reason => 'welcome' });
is($res->{status}, 200, 'grant 50: 200');
is(body($res)->{balance_after}, 150, '... 150');
$res = as($admin, POST => $base, { amount => -30, reason => 'abuse' });
is(body($res)->{balance_after}, 120, 'penalty 30: 120');
$res = as($admin, POST => $base, { amount => -1000, reason => 'too much' });
is($res->{status}, 409, 'a penalty past zero: 409');
like(body($res)->{error}, qr/below zero/, '... says why');
is(body(as($u, GET => '/users/me/credits/balance'))->{credits}, 120, '... nothing changed');

for my $bad ([ {}, qr/required/ ], [ { amount => 0, reason => 'x' }, qr/non-zero/ ],
             [ { amount => 1.5, reason => 'x' }, qr/whole number/ ], [ { amount => '5', reason => 'x' }, qr/number/ ],
             [ { amount => 5, reason => '  ' }, qr/required/ ]) {
    $res = as($admin, POST => $base, $bad->[0]);
    is($res->{status}, 400, 'a bad adjustment: 400');
    like(body($res)->{error}, $bad->[1], '... ' . $bad->[1]);
}
is(as($admin, POST => '/api/admin/users/user-nobody/credits', { amount => 5, reason => 'x' })->{status}, 404,
   'an unknown user: 404');
is(as($u, POST => $base, { amount => 5, reason => 'me' })->{status}, 403, 'a non-admin: 403');

# twenty penalties of 10 at once on 120: exactly twelve
my @bg = map {
    http_bg($ng, POST => $base, headers => { 'Content-Type' => 'application/json',
                                             Authorization => "Bearer $admin->{token}" },
            body => '{"amount":-10,"reason":"race"}')
} 1 .. 20;
my %st;
$st{ http_wait($_)->{status} // 'none' }++ for @bg;
is($st{200}, 12, 'twenty penalties of 10 on 120: twelve pass');
is($st{409}, 8, '... eight refused');
is(body(as($u, GET => '/users/me/credits/balance'))->{credits}, 0, 'the balance ends at 0');
is(sql("SELECT sum(amount) FROM credit_transactions WHERE user_id = '$u->{id}'"), 0,
   'the ledger sums to the balance');
is(sql("SELECT bool_and(balance_after >= 0) FROM credit_transactions WHERE user_id = '$u->{id}'"), 't',
   'no balance_after below zero');

$h = body(as($admin, GET => "$base/history?limit=5"));
ok($h->{success}, 'the admin reads the history');
is($h->{count}, 5, '... five of them');
is($h->{transactions}[0]{balance_after}, 0, '... newest first');
like($h->{transactions}[-1]{description} // '', qr/\(Admin: -10\)/, '... described');

is(sql("SELECT count(*) FROM notifications WHERE user_id = '$u->{id}' AND notification_type = 'CreditsAdjusted'"),
   14, 'each adjustment notified the user');
is(sql("SELECT count(*) FROM admin_actions WHERE target_user_id = '$u->{id}' AND action_type = 'AdjustCredits'"),
   14, '... and was logged');

unlike($ng->log, qr/\[(alert|crit|emerg)\]/, 'no alert in error.log');
stop_nginx($ng);

done_testing();
