# Circuits, first routes: create, get, list (+ /list, /member/:id),
# update (PUT and PATCH), deactivate, add member, assign a role, roles.
# Every route needs a principal; a circuit the caller is not in is 404;
# each change needs its permission (checked in the statement that makes
# it); API keys act as their owner and a read-only key cannot write.

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use DefarmTest;

my (undef, $secret_file) = jwt_secret();

my $ng = start_nginx(
    name   => 'circuits',
    http   => db_config(size => 4) . "
    defarm_cache zone=circuits:4m ttl=1h;
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;",
    server => '
        location / {
            defarm_api on;
            add_header X-Cache $defarm_cache always;
        }');

sub body { json_body(@_) }
sub as { api_as($ng, @_) }
sub user { api_user($ng, "t070_$_[0]_$$") }

my ($owner, $admin, $member, $viewer, $stranger) =
    map { user($_) } qw(owner admin member viewer stranger);

# create

my $res = as($owner, POST => '/api/circuits',
             { name => '  Farm to fork ', description => 'beef',
               require_approval_for_push => JSON::PP::true });
is($res->{status}, 200, 'create: 200');
my $c = body($res);
my $id = $c->{circuit_id};
like($id // '', qr/^[0-9a-f-]{36}$/, 'a circuit id');
is($c->{name}, 'Farm to fork', 'the name, trimmed');
is($c->{owner_id}, $owner->{id}, 'the caller owns it');
is($c->{status}, 'Active', 'Active');
is_deeply($c->{permissions}, { require_approval_for_push => JSON::PP::true,
                               require_approval_for_pull => JSON::PP::false,
                               allow_public_visibility => JSON::PP::false },
          'its flags');
is(scalar @{ $c->{members} }, 1, 'one member');
is($c->{members}[0]{role}, 'Owner', '... the owner');
is(scalar @{ $c->{members}[0]{permissions} }, 9, '... with the nine permissions');
is_deeply([ map { $_->{role_name} } @{ $c->{custom_roles} } ], [ 'Owner', 'Member' ],
          'two default roles');
is($c->{custom_roles}[1]{color}, '#gray', '... with their colour');
ok($c->{custom_roles}[0]{is_default}, '... default');
is($c->{public_settings}, undef, 'no public settings');
is_deeply($c->{pending_requests}, [], 'no pending requests');

is_err(as($owner, POST => '/api/circuits', {}), 400, qr/name is required/, 'no name');
is_err(as($owner, POST => '/api/circuits', { name => '   ' }), 400, qr/name is required/, 'blank name');
is_err(as($owner, POST => '/api/circuits', { name => 5 }), 400, qr/name must be a string/, 'name a number');
is_err(as($owner, POST => '/api/circuits', { name => 'x', allow_public_visibility => 'yes' }),
       400, qr/allow_public_visibility must be a boolean/, 'a flag not boolean');
is_err(as($owner, POST => '/api/circuits', { name => 'x' x 201 }), 400, qr/200 characters/, 'name too long');
is_err(as($owner, POST => '/api/circuits', '[1]'), 400, qr/JSON object/, 'an array');
is_err(as($owner, POST => '/api/circuits', '{"name":'), 400, qr/./, 'malformed JSON');
is_err(as($owner, POST => '/api/circuits', { name => 'x', public_settings => {} }),
       400, qr/not supported yet/, 'public_settings: said so');
is(http($ng, POST => '/api/circuits', headers => { 'Content-Type' => 'application/json' },
        body => '{"name":"x"}')->{status}, 401, 'no token: 401');
is(http($ng, POST => '/api/circuits', headers => { 'Content-Type' => 'application/json',
        Authorization => 'Bearer abc.def.ghi' }, body => '{"name":"x"}')->{status}, 401,
   'a forged token: 401');

# get

$res = as($owner, GET => "/api/circuits/$id");
is($res->{status}, 200, 'get: 200');
is(body($res)->{circuit_id}, $id, '... the circuit');
is_err(as($stranger, GET => "/api/circuits/$id"), 404, qr/Circuit not found/, 'a non-member: 404');
is_err(as($owner, GET => '/api/circuits/not-a-uuid'), 400, qr/Invalid circuit ID format/, 'a bad id');
is_err(as($owner, GET => '/api/circuits/00000000-0000-4000-8000-000000000000'), 404,
       qr/Circuit not found/, 'an unknown id');
is(http($ng, GET => "/api/circuits/$id")->{status}, 401, 'get without a token: 401');

# members

$res = as($owner, POST => "/api/circuits/$id/members", { member_id => $admin->{id}, role => 'ADMIN' });
is($res->{status}, 200, 'add an admin: 200');
my ($a) = grep { $_->{member_id} eq $admin->{id} } @{ body($res)->{members} };
is($a->{role}, 'Admin', '... role Admin');
is_deeply([ sort @{ $a->{permissions} } ],
          [ sort qw(Push Pull Invite ManageMembers ManageRoles Certify) ], '... its defaults');

$res = as($admin, POST => "/api/circuits/$id/members", { member_id => $member->{id}, role => 'member' });
is($res->{status}, 200, 'the admin (Invite) adds a member');
$res = as($admin, POST => "/api/circuits/$id/members", { member_id => $viewer->{id}, role => 'viewer' });
is($res->{status}, 200, '... and a viewer');

is_err(as($member, POST => "/api/circuits/$id/members", { member_id => $stranger->{id}, role => 'member' }),
       403, qr/needs Invite/, 'a member cannot invite');
is_err(as($stranger, POST => "/api/circuits/$id/members", { member_id => $stranger->{id}, role => 'member' }),
       404, qr/Circuit not found/, 'a stranger cannot add himself: 404');
is_err(as($owner, POST => "/api/circuits/$id/members", { member_id => $member->{id}, role => 'member' }),
       409, qr/already a member/, 'twice: 409');
is_err(as($owner, POST => "/api/circuits/$id/members", { member_id => 'user-nobody', role => 'member' }),
       404, qr/User not found/, 'an unknown user: 404');
is_err(as($owner, POST => "/api/circuits/$id/members", { member_id => $stranger->{id}, role => 'boss' }),
       400, qr/Invalid role: boss/, 'an unknown role');
is_err(as($owner, POST => "/api/circuits/$id/members", { member_id => $stranger->{id}, role => 'owner' }),
       400, qr/one owner/, 'a second owner');
is_err(as($owner, POST => "/api/circuits/$id/members", { member_id => $stranger->{id} }),
       400, qr/required/, 'no role');
is_err(as($owner, POST => "/api/circuits/$id/members", { member_id => 7, role => 'member' }),
       400, qr/member_id must be a string/, 'member_id a number');

# a member now reads it; the stranger still does not
is(as($viewer, GET => "/api/circuits/$id")->{status}, 200, 'a viewer reads it');

# assign a role

$res = as($admin, PATCH => "/api/circuits/$id/members/$viewer->{id}", { role => 'Member' });
is($res->{status}, 200, 'the admin (ManageMembers) gives the viewer the Member role');
my ($v) = grep { $_->{member_id} eq $viewer->{id} } @{ body($res)->{members} };
is($v->{custom_role_name}, 'Member', '... custom_role_name Member');
is_deeply([ sort @{ $v->{permissions} } ], [ qw(Pull Push) ], '... its permissions');
is($v->{role}, 'Viewer', '... the base role unchanged');
my ($mr) = grep { $_->{role_name} eq 'Member' } @{ body($res)->{custom_roles} };
is($mr->{member_count}, 1, 'the role counts its member');

is_err(as($member, PATCH => "/api/circuits/$id/members/$viewer->{id}", { role => 'Owner' }),
       403, qr/ManageMembers/, 'a member cannot assign roles');
is_err(as($admin, PATCH => "/api/circuits/$id/members/$viewer->{id}", { role => 'Nope' }),
       404, qr/Role not found: Nope/, 'an unknown role: 404');
is_err(as($admin, PATCH => "/api/circuits/$id/members/$stranger->{id}", { role => 'Member' }),
       404, qr/Member not found/, 'not a member: 404');
is_err(as($admin, PATCH => "/api/circuits/$id/members/$owner->{id}", { role => 'Member' }),
       400, qr/owner keeps/, "the owner's permissions stay");
is_err(as($admin, PATCH => "/api/circuits/$id/members/$viewer->{id}", {}),
       400, qr/role is required/, 'no role');

# roles

$res = as($member, GET => "/api/circuits/$id/roles");
is($res->{status}, 200, 'roles: 200 for a member');
is(scalar @{ body($res) }, 2, '... two roles');
is_err(as($stranger, GET => "/api/circuits/$id/roles"), 404, qr/not found/, 'roles: a stranger 404');

# update

$res = as($owner, PUT => "/api/circuits/$id",
          { description => 'beef and leather', permissions => { allow_public_visibility => JSON::PP::true } });
is($res->{status}, 200, 'update by the owner: 200');
is(body($res)->{description}, 'beef and leather', '... the description');
is(body($res)->{name}, 'Farm to fork', '... the name kept');
ok(body($res)->{permissions}{allow_public_visibility}, '... public now');
ok(body($res)->{permissions}{require_approval_for_push}, '... the other flags kept');

$res = as($owner, PATCH => "/api/circuits/$id", { name => 'Fork' });
is(body($res)->{name}, 'Fork', 'PATCH renames');
is_err(as($admin, PUT => "/api/circuits/$id", { name => 'Mine' }), 403, qr/ManagePermissions/,
       'the admin lacks ManagePermissions: 403');
is_err(as($stranger, PUT => "/api/circuits/$id", { name => 'Mine' }), 404, qr/not found/,
       'a stranger: 404');
is_err(as($owner, PUT => "/api/circuits/$id", { name => '' }), 400, qr/1 to 200/, 'an empty name');
is_err(as($owner, PUT => "/api/circuits/$id", { permissions => { allow_public_visibility => 1 } }),
       400, qr/permissions\.allow_public_visibility must be a boolean/, 'a flag not boolean');
is_err(as($owner, PUT => "/api/circuits/$id", { permissions => [] }), 400,
       qr/permissions must be a object/, 'permissions an array');

# list

my $other = body(as($stranger, POST => '/api/circuits', { name => 'Private' }))->{circuit_id};
my $pub = body(as($stranger, POST => '/api/circuits', { name => 'Open', allow_public_visibility => JSON::PP::true }))->{circuit_id};

sub ids { [ map { $_->{circuit_id} } @{ body($_[0]) } ] }

$res = as($member, GET => '/api/circuits');
is($res->{status}, 200, 'list: 200');
my %seen = map { $_ => 1 } @{ ids($res) };
ok($seen{$id}, '... its circuit');
ok($seen{$pub}, '... the public one');
ok(!$seen{$other}, "... not another's private one");
ok(!grep({ !$seen{$_} } $id, $pub), '...');
%seen = map { $_ => 1 } @{ ids(as($member, GET => '/api/circuits/list?include_public=false')) };
ok($seen{$id} && !$seen{$pub}, 'include_public=false: its own only');
is_deeply(ids(as($member, GET => '/api/circuits?status=inactive')), [], 'status=inactive: none yet');
is_err(as($member, GET => '/api/circuits?status=gone'), 400, qr/status must be/, 'a bad status');
is_err(as($member, GET => '/api/circuits?include_public=maybe'), 400, qr/include_public/, 'a bad include_public');

is_deeply(ids(as($member, GET => "/api/circuits/member/$viewer->{id}")), [ $id ],
          'member/:id: the circuits shared with that member');
is_deeply(ids(as($member, GET => "/api/circuits/member/$stranger->{id}")), [],
          "... not the stranger's, which the caller is not in");

# deactivate

is_err(as($admin, PUT => "/api/circuits/$id/deactivate"), 403, qr/needs Delete/, 'the admin cannot deactivate');
$res = as($owner, PUT => "/api/circuits/$id/deactivate", {});
is($res->{status}, 200, 'the owner deactivates');
is(body($res)->{status}, 'Inactive', '... Inactive');
is_deeply(ids(as($member, GET => '/api/circuits?status=INACTIVE')), [ $id ], 'status filter, any case');

# the cache: a member's GET from shared memory, dropped by every change

my $cid = body(as($owner, POST => '/api/circuits', { name => 'Cached' }))->{circuit_id};
as($owner, POST => "/api/circuits/$cid/members", { member_id => $member->{id}, role => 'member' });
$res = as($member, GET => "/api/circuits/$cid");
is($res->{headers}{'x-cache'}, 'MISS', 'cache: the first read from PostgreSQL');
my $first = $res->{body};
$res = as($member, GET => "/api/circuits/$cid");
is($res->{headers}{'x-cache'}, 'HIT', '... then from the cache');
is($res->{body}, $first, '... the same bytes');
is(as($owner, GET => "/api/circuits/$cid")->{headers}{'x-cache'}, 'HIT', '... for every member');
is(as($stranger, GET => "/api/circuits/$cid")->{status}, 404, 'a non-member: still 404 with the record cached');

as($owner, PUT => "/api/circuits/$cid", { description => 'changed' });
$res = as($member, GET => "/api/circuits/$cid");
is($res->{headers}{'x-cache'}, 'MISS', 'a change drops the record');
is(body($res)->{description}, 'changed', '... and the change shows');

as($owner, POST => "/api/circuits/$cid/members", { member_id => $stranger->{id}, role => 'viewer' });
$res = as($stranger, GET => "/api/circuits/$cid");
is($res->{status}, 200, 'a member added reads it at once');
ok((grep { $_->{member_id} eq $stranger->{id} } @{ body($res)->{members} }), '... listed');
is(as($member, GET => "/api/circuits/$cid")->{headers}{'x-cache'}, 'HIT', 'cached again');
sql("DELETE FROM circuit_members WHERE circuit_id = '$cid' AND member_id = '$stranger->{id}'");
as($owner, PATCH => "/api/circuits/$cid", {});
is(as($stranger, GET => "/api/circuits/$cid")->{status}, 404,
   'removed (in SQL), then any change through the API: the former member is refused');

# an API key acts as its owner; a read key cannot write

sub key {
    my $r = as($owner, POST => '/api/api-keys',
               { name => 'read key', organization_type => 'Producer',
                 permissions => { read => JSON::PP::true, write => JSON::PP::false } });
    return body($r)->{api_key};
}
my $rkey = key();
ok($rkey, 'a read key');
$res = http($ng, GET => "/api/circuits/$id", headers => { 'X-API-Key' => $rkey });
is($res->{status}, 200, 'a read key reads its owner\'s circuit');
$res = http($ng, POST => '/api/circuits', headers => { 'X-API-Key' => $rkey, 'Content-Type' => 'application/json' },
            body => '{"name":"by key"}');
is($res->{status}, 403, 'a read key cannot create: 403');

unlike($ng->log, qr/\[(alert|crit|emerg)\]/, 'no alert in error.log');
stop_nginx($ng);

done_testing();
