# User activity (sql/038): POST records an entry for the caller whatever
# the body says, with the address and User-Agent the server saw; the list
# filters and pages; one entry, the stats and the cleanup see the caller's
# own (an admin's: anyone's); the server records API key, circuit, member,
# join request and password reset actions itself; bad input, another
# user's entries and no token are refused.

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use DefarmTest;

my (undef, $secret_file) = jwt_secret();

my $ng = start_nginx(
    name   => 'user-activity',
    http   => db_config(size => 4) . "
    defarm_cache zone=api_keys:4m ttl=1h;
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;",
    server => '
        location / {
            defarm_api on;
        }');

my $T = JSON::PP::true;
my $F = JSON::PP::false;
my $A = '/api/user-activity';
my $uuid = '0b6f8f9e-1d2c-4c3b-9a8e-7f6d5c4b3a21';

sub body { json_body(@_) }
sub as { api_as($ng, @_) }
sub user { api_user($ng, "t094_$_[0]_$$") }

my ($alice, $bob, $admin, $carol) = map { user($_) } qw(alice bob admin carol);
sql("UPDATE users SET is_admin = true WHERE id = '$admin->{id}'");

sub entry {
    my (%f) = @_;
    return { activity_type => 'Create', category => 'Items',
             resource_type => 'Item', resource_id => 'DFID-1',
             action => 'create_item', description => 'Created an item', %f };
}

# as $who, with a User-Agent of our own
sub record {
    my ($who, $b, $ua) = @_;
    return http($ng, POST => $A,
                headers => { Authorization => "Bearer $who->{token}",
                             'Content-Type' => 'application/json',
                             defined $ua ? ('User-Agent' => $ua) : () },
                body => ref $b ? JSON::PP->new->utf8->canonical->encode($b)
                               : $b);
}

sub list {
    my ($who, $q) = @_;
    return body(as($who, GET => $A . ($q // '')))->{data};
}

# only the entries a client recorded (the server's are checked below)
sub mine {
    my ($who, $q) = @_;
    return [ grep { $_->{source} eq 'client' }
             @{ list($who, '?per_page=200' . ($q // ''))->{activities} } ];
}

# recording ----------------------------------------------------------------

my $res = record($alice, entry(user_id => $bob->{id}, ip_address => '6.6.6.6',
                               user_agent => 'forged',
                               metadata => { lot => 7 }),
                 't094-agent/1.0');
is($res->{status}, 201, 'record: 201');
my $d = body($res)->{data};
like($d->{activity_id}, qr/^[0-9a-f-]{36}$/, '... an activity_id');
like($d->{timestamp}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/, '... a timestamp');
my $e = $d->{activity};
is($e->{user_id}, $alice->{id}, "... the caller's, not the body's user_id");
is($e->{ip_address}, '127.0.0.1', "... the server's address, not the body's");
is($e->{user_agent}, 't094-agent/1.0', "... the request's User-Agent");
is($e->{source}, 'client', '... source client');
is_deeply($e->{metadata}, { lot => 7 }, '... the metadata');
is($e->{success}, $T, '... success by default');
like($e->{workspace_id}, qr/workspace$/, "... the user's workspace by default");
my $first = $d->{activity_id};

$e = body(record($alice, entry(activity_type => 'Export', category => 'Circuits',
                               resource_type => 'Circuit', resource_id => 'C-100%',
                               action => 'export_circuit',
                               description => 'Exported THE circuit',
                               success => $F, workspace_id => 'ws-9'),
                 "bad \xff\xfe bytes"))->{data}{activity};
is($e->{success}, $F, 'success false kept');
is($e->{workspace_id}, 'ws-9', 'a workspace_id given');
is($e->{user_agent}, 'bad ', 'a User-Agent cut before bytes that are not UTF-8');

$e = body(record($alice, entry(description => '', metadata => undef), undef))->{data}{activity};
is($e->{user_agent}, undef, 'no User-Agent: null');
is($e->{description}, '', 'an empty description');
is_deeply($e->{metadata}, {}, 'null metadata: {}');

body(record($bob, entry(action => 'bob_did', description => 'bob only')));

# through an API key: the key's owner
my $key = body(as($alice, POST => '/api/api-keys',
                  { name => 't094 key', organization_type => 'Producer',
                    permissions => { read => $T, write => $T } }));
$res = http($ng, POST => $A, headers => { 'X-API-Key' => $key->{api_key} },
            body => JSON::PP->new->utf8->encode(entry(action => 'by_key')));
is($res->{status}, 201, 'record with an API key');
is(body($res)->{data}{activity}{user_id}, $alice->{id}, "... the key's owner's");

# validation
is_err(record($alice, '{"activity_type": '), 400, qr/./, 'malformed JSON');
is_err(record($alice, '[1]'), 400, qr/must be a JSON object/, 'an array body');
is_err(record($alice, entry(activity_type => 3)), 400, qr/activity_type must be a string/, 'a number type');
is_err(record($alice, entry(activity_type => undef)), 400, qr/activity_type must be a string/, 'a null type');
my $no_action = entry();
delete $no_action->{action};
is_err(record($alice, $no_action), 400, qr/action is required/, 'action missing');
is_err(record($alice, entry(resource_id => '  ')), 400, qr/resource_id is required/, 'a blank resource_id');
is_err(record($alice, entry(activity_type => 'create')), 400,
       qr/activity_type must be one of: Create, Read/, 'a type not of the list (case counts)');
is_err(record($alice, entry(category => 'Nope')), 400, qr/category must be one of/, 'a category not of the list');
is_err(record($alice, entry(resource_type => 'Cow')), 400, qr/resource_type must be one of/, 'a resource type not of the list');
is_err(record($alice, entry(metadata => [1])), 400, qr/metadata must be an object/, 'metadata an array');
is_err(record($alice, entry(metadata => { x => 'y' x 17000 })), 400, qr/metadata is at most 16384/, 'metadata too big');
is_err(record($alice, entry(success => 'yes')), 400, qr/success must be a boolean/, 'success a string');
is_err(record($alice, entry(description => 'd' x 2001)), 400, qr/description is at most 2000/, 'description too long');
is_err(record($alice, entry(resource_id => 'r' x 257)), 400, qr/resource_id is at most 256/, 'resource_id too long');
is_err(record($alice, entry(action => 'a' x 129)), 400, qr/action is at most 128/, 'action too long');
is_err(record($alice, entry(workspace_id => 5)), 400, qr/workspace_id must be a string/, 'workspace_id a number');
is(http($ng, POST => $A, body => JSON::PP->new->utf8->encode(entry()))->{status}, 401, 'record: no token 401');

# listing ------------------------------------------------------------------

my $l = list($alice, '?per_page=200');
my @client = grep { $_->{source} eq 'client' } @{ $l->{activities} };
is(scalar @client, 4, 'list: the caller\'s four');
ok(!grep({ $_->{user_id} ne $alice->{id} } @{ $l->{activities} }), "... none of another user's");
is($l->{page}, 1, '... page 1');
is($l->{per_page}, 200, '... per_page');
is($l->{total}, scalar @{ $l->{activities} }, '... the total');
is($client[-1]{activity_id}, $first, '... newest first');

my $total = $l->{total};
$l = list($alice, '?per_page=2&page=2');
is(scalar @{ $l->{activities} }, 2, 'per_page=2, page=2: two');
is($l->{total_pages}, int(($total + 1) / 2), '... total_pages');
is(scalar @{ list($alice, "?page=99")->{activities} }, 0, 'a page past the end: none');

is_deeply([ map { $_->{action} } @{ mine($alice, '&category=Circuits') } ], [ 'export_circuit' ], 'category filter');
is_deeply([ map { $_->{action} } @{ mine($alice, '&activity_type=Export') } ], [ 'export_circuit' ], 'activity_type filter');
is_deeply([ map { $_->{action} } @{ mine($alice, '&resource_type=Circuit') } ], [ 'export_circuit' ], 'resource_type filter');
is_deeply([ map { $_->{action} } @{ mine($alice, '&search_query=the+CIRCUIT') } ], [ 'export_circuit' ],
          'search_query: any case, in the description');
is_deeply([ map { $_->{action} } @{ mine($alice, '&search_query=C-100%25') } ], [ 'export_circuit' ],
          '... in the resource_id, "%" taken as itself');
is(scalar @{ mine($alice, '&search_query=C-1%25%25') }, 0, '... "%" not a wildcard');
is(scalar @{ mine($alice, '&search_query=by_key') }, 1, '... in the action');
is(scalar @{ mine($alice, '&start_date=2999-01-01') }, 0, 'start_date in the future: none');
is(scalar @{ mine($alice, '&end_date=2000-01-01T00:00:00Z') }, 0, 'end_date in the past: none');
is(scalar @{ mine($alice, '&start_date=2000-01-01T00:00:00+02:00&end_date=2999-01-01') }, 4,
   'start_date with an offset ("+" as sent unencoded) and end_date: all');
is(scalar @{ mine($alice, '&start_date=2000-01-01T00:00:00%2B02:00') }, 4, '... and with "+" encoded');

is_err(as($alice, GET => "$A?category=Nope"), 400, qr/category must be one of/, 'list: a bad category');
is_err(as($alice, GET => "$A?activity_type=x"), 400, qr/activity_type must be one of/, 'list: a bad type');
is_err(as($alice, GET => "$A?resource_type=x"), 400, qr/resource_type must be one of/, 'list: a bad resource type');
is_err(as($alice, GET => "$A?page=0"), 400, qr/page must be/, 'list: page 0');
is_err(as($alice, GET => "$A?page=x"), 400, qr/page must be/, 'list: page not a number');
is_err(as($alice, GET => "$A?per_page=201"), 400, qr/per_page must be 1 to 200/, 'list: per_page 201');
is_err(as($alice, GET => "$A?start_date=yesterday"), 400, qr/start_date must be/, 'list: start_date not a date');
is_err(as($alice, GET => "$A?end_date=2024-02-30"), 400, qr/end_date must be/, 'list: end_date not a day');
is_err(as($alice, GET => "$A?start_date=2024-02-01&end_date=2024-01-01"), 400, qr/after end_date/,
       'list: start after end');
is_err(as($alice, GET => "$A?search_query=" . ('q' x 201)), 400, qr/search_query is at most 200/, 'list: a long search');

is_err(as($alice, GET => "$A?user_id=$bob->{id}"), 404, qr/User not found/, "list: another user's");
is(scalar @{ mine($alice, "&user_id=$alice->{id}") }, 4, "list: user_id the caller's own");
my $ba = mine($admin, "&user_id=$bob->{id}");
is_deeply([ map { $_->{action} } @$ba ], [ 'bob_did' ], "an admin: a user's");
$l = list($admin, '?per_page=200&resource_type=Item');
my %who = map { $_->{user_id} => 1 } @{ $l->{activities} };
ok($who{$alice->{id}} && $who{$bob->{id}}, "an admin without user_id: everyone's");
is_err(as($admin, GET => "$A?user_id=nobody-$$"), 404, qr/User not found/, 'an admin, an unknown user');
is(http($ng, GET => $A)->{status}, 401, 'list: no token 401');

# one entry -----------------------------------------------------------------

$res = as($alice, GET => "$A/$first");
is($res->{status}, 200, 'one: 200');
is(body($res)->{data}{activity_id}, $first, '... that one');
is(body($res)->{data}{user_agent}, 't094-agent/1.0', '... as recorded');
is_err(as($bob, GET => "$A/$first"), 404, qr/Activity not found/, "one: another user's 404");
is(as($admin, GET => "$A/$first")->{status}, 200, 'one: an admin reads it');
is_err(as($alice, GET => "$A/nope"), 400, qr/Invalid activity ID/, 'one: a malformed id');
is_err(as($alice, GET => "$A/$uuid"), 404, qr/Activity not found/, 'one: unknown');
is(http($ng, GET => "$A/$first")->{status}, 401, 'one: no token 401');

# stats -----------------------------------------------------------------------

$res = as($alice, GET => "$A/stats");
is($res->{status}, 200, 'stats: 200');
my $s = body($res)->{data};
is($s->{period_days}, 30, '... 30 days by default');
is($s->{total_actions}, $total, '... all of the caller\'s');
is($s->{failed_actions}, 1, '... one failed');
is($s->{successful_actions}, $total - 1, '... the rest successful');
is($s->{success_rate} + 0, sprintf('%.2f', 100 * ($total - 1) / $total) + 0, '... the success rate');
is($s->{by_category}{Circuits}, 1, '... by category');
is($s->{by_type}{Export}, 1, '... by type');
is($s->{by_resource_type}{Circuit}, 1, '... by resource type');
is(scalar @{ $s->{by_day} }, 31, '... every day of the period');
my $days = 0;
$days += $_->{count} for @{ $s->{by_day} };
is($days, $total, '... counts that add up to the total');
is($s->{by_day}[0]{count}, 0, '... zeros included');
my $h = 0;
$h += $_->[1] for @{ $s->{most_active_hours} };
ok(@{ $s->{most_active_hours} } <= 5 && $h == $total, '... the most active hours, [hour, count]');
is($s->{user_id}, $alice->{id}, '... whose');
like($s->{period_start}, qr/^\d{4}-/, '... period_start');

is(scalar @{ body(as($alice, GET => "$A/stats?period_days=1"))->{data}{by_day} }, 2, 'period_days=1: two days');
is_err(as($alice, GET => "$A/stats?period_days=0"), 400, qr/period_days must be 1 to 365/, 'stats: 0 days');
is_err(as($alice, GET => "$A/stats?period_days=366"), 400, qr/period_days/, 'stats: 366 days');
is_err(as($alice, GET => "$A/stats?period_days=x"), 400, qr/period_days/, 'stats: not a number');
is_err(as($alice, GET => "$A/stats?user_id=$bob->{id}"), 404, qr/User not found/, "stats: another user's 404");
is(body(as($admin, GET => "$A/stats?user_id=$bob->{id}"))->{data}{total_actions}, 1, "stats: an admin, a user's");
ok(body(as($admin, GET => "$A/stats"))->{data}{total_actions} > $total, "stats: an admin, everyone's");
is(body(as($admin, GET => "$A/stats"))->{data}{user_id}, undef, '... user_id null');
is(http($ng, GET => "$A/stats")->{status}, 401, 'stats: no token 401');

# what the server records ----------------------------------------------------

sub server {
    my ($who, $action) = @_;
    return [ grep { $_->{source} eq 'server' && $_->{action} eq $action }
             @{ list($who, '?per_page=200')->{activities} } ];
}

my $k = server($alice, 'api_key_created');
is(scalar @$k, 1, 'an API key created: recorded');
is($k->[0]{resource_id}, $key->{metadata}{id}, '... its id');
is($k->[0]{category}, 'ApiKeys', '... category ApiKeys');
is($k->[0]{metadata}{key_prefix}, $key->{metadata}{key_prefix}, '... its prefix, not the key');
unlike(as($alice, GET => $A . '?per_page=200')->{body}, qr/\Q$key->{api_key}\E/, '... the key nowhere');
as($alice, POST => "/api/api-keys/$key->{metadata}{id}/revoke");
is(scalar @{ server($alice, 'api_key_revoked') }, 1, 'revoked: recorded');
as($alice, PATCH => "/api/api-keys/$key->{metadata}{id}", { name => 'renamed' });
is(scalar @{ server($alice, 'api_key_reactivated') }, 0, '... a rename is not a reactivation');
as($alice, PATCH => "/api/api-keys/$key->{metadata}{id}", { is_active => $T });
is(scalar @{ server($alice, 'api_key_reactivated') }, 1, 'reactivated: recorded');
is(as($alice, DELETE => "/api/api-keys/$key->{metadata}{id}")->{status}, 204, 'a key deleted');
is(scalar @{ server($alice, 'api_key_deleted') }, 1, '... recorded');

my $c = body(as($alice, POST => '/api/circuits', { name => "t094 circuit $$" }))->{circuit_id};
my $cc = server($alice, 'circuit_created');
is(scalar @$cc, 1, 'a circuit created: recorded');
is($cc->[0]{resource_id}, $c, '... its id');
$res = as($alice, POST => '/api/circuits', { name => "t094 refused $$",
                                             adapter_config => { adapter_type => 'nope' } });
isnt($res->{status}, 200, 'a circuit whose adapter is refused');
is(scalar @{ server($alice, 'circuit_created') }, 1, '... is not recorded (it was deleted again)');

is(as($alice, POST => "/api/circuits/$c/members", { member_id => $carol->{id}, role => 'viewer' })->{status},
   200, 'a member added');
my $m = server($alice, 'circuit_member_added');
is(scalar @$m, 1, "... recorded as the adder's");
is($m->[0]{metadata}{member_id}, $carol->{id}, '... naming the member');
is($m->[0]{metadata}{role}, 'Viewer', '... and the role');
as($alice, POST => "/api/circuits/$c/members", { member_id => $carol->{id}, role => 'viewer' });
is(scalar @{ server($alice, 'circuit_member_added') }, 1, '... not again when refused (already a member)');

as($bob, POST => "/api/circuits/$c/requests", { message => 'let me in' });
as($alice, POST => "/api/circuits/$c/requests/$bob->{id}/approve", { role => 'member' });
my $j = server($alice, 'join_request_approved');
is(scalar @$j, 1, "a join request approved: the decider's");
is($j->[0]{activity_type}, 'Approve', '... type Approve');
is($j->[0]{metadata}{requester_id}, $bob->{id}, '... naming the requester');

# a reset token we know (only its SHA-256 is stored)
my $token = 'ab' x 32;
sql("INSERT INTO password_reset_tokens (user_id, token_hash, expires_at) "
    . "VALUES ('$carol->{id}', encode(sha256(decode('$token', 'hex')), 'hex'), "
    . "now() + interval '10 minutes')");
is(http($ng, POST => '/api/auth/reset-password',
        body => JSON::PP->new->encode({ token => $token, new_password => 'N3w!passw0rd' }))->{status},
   200, 'a password reset');
my $carol2 = { token => body(http($ng, POST => '/api/auth/login',
                                  body => JSON::PP->new->encode({ username => "t094_carol_$$",
                                                                  password => 'N3w!passw0rd' })))->{token} };
my $p = server($carol2, 'password_reset');
is(scalar @$p, 1, '... recorded');
is($p->[0]{category}, 'Authentication', '... category Authentication');

# a user deleted with keys: their keys' deletion records nothing, and their
# log goes with them
as($carol2, POST => '/api/api-keys', { name => 'gone', organization_type => 'Producer' });
is(sql("SELECT count(*) FROM user_activities WHERE user_id = '$carol->{id}'"), 2,
   "carol's log: reset, key created (the member added was alice's)");
sql("DELETE FROM users WHERE id = '$carol->{id}'");
is(sql("SELECT count(*) FROM users WHERE id = '$carol->{id}'"), 0, 'a user with keys deleted');
is(sql("SELECT count(*) FROM user_activities WHERE user_id = '$carol->{id}'"), 0, '... their log with them');

# cleanup -------------------------------------------------------------------

# two of alice's and one of bob's made old
sql("UPDATE user_activities SET created_at = now() - interval '40 days' "
    . "WHERE activity_id IN (SELECT activity_id FROM user_activities "
    . "WHERE user_id = '$alice->{id}' AND source = 'client' ORDER BY created_at LIMIT 2)");
sql("UPDATE user_activities SET created_at = now() - interval '40 days' "
    . "WHERE user_id = '$bob->{id}' AND action = 'bob_did'");

is(body(as($alice, GET => "$A/stats"))->{data}{total_actions}, $total - 2 + 6,
   'stats: old entries outside the 30 days (and 6 the server recorded since)')
    or diag explain body(as($alice, GET => "$A/stats"));
is(scalar @{ mine($alice, '&end_date=' . '2000-01-01') }, 0, 'list: end_date before them all');

my $before = sql("SELECT to_char((now() - interval '30 days') AT TIME ZONE 'UTC', "
                 . "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')");
is_err(as($alice, DELETE => "$A/cleanup", { before_date => $before, user_id => $bob->{id} }), 404,
       qr/User not found/, "cleanup: another user's 404");
is_err(as($alice, DELETE => "$A/cleanup"), 400, qr/Request body is required/, 'cleanup: no body');
is_err(as($alice, DELETE => "$A/cleanup", '{"before_date": '), 400, qr/./, 'cleanup: malformed JSON');
is_err(as($alice, DELETE => "$A/cleanup", '"x"'), 400, qr/must be a JSON object/, 'cleanup: a string body');
is_err(as($alice, DELETE => "$A/cleanup", {}), 400, qr/before_date is required/, 'cleanup: before_date missing');
is_err(as($alice, DELETE => "$A/cleanup", { before_date => 5 }), 400, qr/before_date must be a string/,
       'cleanup: before_date a number');
is_err(as($alice, DELETE => "$A/cleanup", { before_date => 'soon' }), 400, qr/before_date must be an RFC 3339/,
       'cleanup: before_date not a date');
is(http($ng, DELETE => "$A/cleanup", body => '{}')->{status}, 401, 'cleanup: no token 401');

$res = as($alice, DELETE => "$A/cleanup", { before_date => $before });
is($res->{status}, 200, 'cleanup: 200');
is(body($res)->{data}{deleted_count}, 2, "... the caller's two old ones");
is(scalar @{ mine($admin, "&user_id=$bob->{id}") }, 1, "... not bob's");
is(body(as($alice, DELETE => "$A/cleanup", { before_date => $before }))->{data}{deleted_count}, 0,
   '... again: none');
$res = as($admin, DELETE => "$A/cleanup", { before_date => $before });
is(body($res)->{data}{deleted_count}, 1, "an admin: anyone's (bob's old one)");
is(body($res)->{data}{user_id}, undef, '... user_id null');
is(scalar @{ mine($admin, "&user_id=$bob->{id}") }, 0, "... bob's gone");
ok(scalar @{ mine($alice) } > 0, "... alice's recent ones kept");

# a workspace created (sql/037 ran first, so sql/038 put its trigger on it)
my $wres = as($alice, POST => '/api/workspaces', { name => "North farm $$" });
is($wres->{status}, 201, 'a workspace created');
my $wid = body($wres)->{id};
my $w = server($alice, 'workspace_created');
is(scalar @$w, 1, "... recorded as the owner's");
is($w->[0]{resource_id}, $wid, '... its id');
is($w->[0]{workspace_id}, $wid, '... in that workspace');
is($w->[0]{description}, "Workspace \"North farm $$\" created", '... named');
is(as($alice, POST => '/api/workspaces', { name => ' ' })->{status}, 400, 'a workspace refused');
is(scalar @{ server($alice, 'workspace_created') }, 1, '... not recorded');

unlike($ng->log, qr/\[(alert|crit|emerg)\]/, 'no alert in error.log');
stop_nginx($ng);

done_testing();
