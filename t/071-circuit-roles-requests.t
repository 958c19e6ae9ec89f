# Circuits: custom roles (create, update, delete; defaults immutable; a
# role in use cannot go), join requests (persisted; request, pending,
# approve with a role, reject; the actor is the caller whatever the body
# says), the visibility toggle; each permission refused to who lacks it;
# two approvals of one request at once: one wins.

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use DefarmTest;

my (undef, $secret_file) = jwt_secret();

my $ng = start_nginx(
    name   => 'circuit-roles',
    http   => db_config(size => 4) . "
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;",
    server => '
        location / {
            defarm_api on;
        }');

sub body { json_body(@_) }
sub as { api_as($ng, @_) }
sub user { api_user($ng, "t071_$_[0]_$$") }

my ($owner, $admin, $member, $asker, $other) = map { user($_) } qw(owner admin member asker other);
my $id = body(as($owner, POST => '/api/circuits', { name => 'Roles' }))->{circuit_id};
ok($id, 'a circuit');
as($owner, POST => "/api/circuits/$id/members", { member_id => $admin->{id}, role => 'admin' });
as($owner, POST => "/api/circuits/$id/members", { member_id => $member->{id}, role => 'member' });
my $base = "/api/circuits/$id";

# custom roles

my $res = as($admin, POST => "$base/roles",
             { role_name => 'Auditor', permissions => [ 'pull', 'AUDIT', 'audit' ],
               description => 'reads and audits', color => '#123456' });
is($res->{status}, 201, 'create a role (ManageRoles): 201');
my $role = body($res);
is($role->{role_name}, 'Auditor', '... its name');
is_deeply($role->{permissions}, [ 'Pull', 'Audit' ], '... permissions named, once each');
is($role->{description}, 'reads and audits', '... the description kept');
is($role->{color}, '#123456', '... the colour kept');
is($role->{member_count}, 0, '... no member');
ok(!$role->{is_default}, '... not a default');

is_err(as($member, POST => "$base/roles", { role_name => 'X', permissions => [] }), 403,
       qr/needs ManageRoles/, 'a member cannot create roles');
is_err(as($other, POST => "$base/roles", { role_name => 'X', permissions => [] }), 404,
       qr/Circuit not found/, 'a stranger: 404');
is_err(as($admin, POST => "$base/roles", { role_name => 'Auditor', permissions => [] }), 409,
       qr/already exists/, 'a duplicate: 409');
is_err(as($admin, POST => "$base/roles", { role_name => 'Y', permissions => [ 'fly' ] }), 400,
       qr/Unknown permission/, 'an unknown permission');
is_err(as($admin, POST => "$base/roles", { role_name => 'Y', permissions => 'push' }), 400,
       qr/permissions must be a array/, 'permissions a string');
is_err(as($admin, POST => "$base/roles", { permissions => [] }), 400, qr/required/, 'no name');
is_err(as($admin, POST => "$base/roles", { role_name => 'x' x 65, permissions => [] }), 400,
       qr/64 characters/, 'a long name');

# assign it, then change it: the member follows
is(as($admin, PATCH => "$base/members/$member->{id}", { role => 'Auditor' })->{status}, 200,
   'the member gets Auditor');
$res = as($admin, PUT => "$base/roles/Auditor", { permissions => [ 'pull', 'certify' ], color => '#654321' });
is($res->{status}, 200, 'update a role: 200');
is_deeply(body($res)->{permissions}, [ 'Pull', 'Certify' ], '... new permissions');
is(body($res)->{member_count}, 1, '... one member holds it');
my ($m) = grep { $_->{member_id} eq $member->{id} } @{ body(as($owner, GET => $base))->{members} };
is_deeply($m->{permissions}, [ 'Pull', 'Certify' ], '... and the member has them');
is_err(as($admin, PUT => "$base/roles/Owner", { permissions => [ 'pull' ] }), 400,
       qr/Default roles cannot be changed/, 'a default role stays');
is_err(as($admin, PUT => "$base/roles/Nope", { color => 'x' }), 404, qr/Role not found/, 'an unknown role');
is_err(as($admin, PUT => "$base/roles/Auditor", { role_name => 'B' }), 400, qr/renamed/, 'no renaming');
is_err(as($member, PUT => "$base/roles/Auditor", { color => 'x' }), 403, qr/ManageRoles/,
       'a member cannot change roles');

# delete: in use, default, done
is_err(as($admin, DELETE => "$base/roles/Auditor"), 409, qr/assigned to 1 member/, 'a role in use: 409');
is_err(as($admin, DELETE => "$base/roles/Member"), 400, qr/Default roles cannot be deleted/,
       'a default role: 400');
is(as($admin, PATCH => "$base/members/$member->{id}", { role => 'Member' })->{status}, 200,
   'the member back to Member');
$res = as($admin, DELETE => "$base/roles/Auditor");
is($res->{status}, 200, 'delete the unused role: 200');
is_deeply(body($res), { success => JSON::PP::true,
                        message => "Custom role 'Auditor' deleted successfully" }, '... the answer');
is_err(as($admin, DELETE => "$base/roles/Auditor"), 404, qr/Role not found/, '... gone');

# join requests

$res = as($asker, POST => "$base/requests", { message => 'let me in' });
is($res->{status}, 201, 'a join request: 201');
is(body($res)->{status}, 'Pending', '... pending');
ok(!exists body($res)->{members}, '... the answer is the request, not the circuit');
is_err(as($asker, POST => "$base/requests", {}), 409, qr/already pending/, 'twice: 409');
is_err(as($member, POST => "$base/requests", {}), 409, qr/Already a member/, 'a member: 409');
is_err(as($asker, POST => '/api/circuits/00000000-0000-4000-8000-000000000000/requests', {}), 404,
       qr/Circuit not found/, 'an unknown circuit');
is_err(as($asker, POST => "$base/requests", { message => 5 }), 400, qr/message must be a string/,
       'message a number');

$res = as($member, GET => "$base/requests/pending");
is($res->{status}, 200, 'pending requests: a member reads them');
is(scalar @{ body($res) }, 1, '... one');
is(body($res)->[0]{message}, 'let me in', '... with its message');
is_err(as($asker, GET => "$base/requests/pending"), 404, qr/not found/, 'the asker is no member: 404');
is(scalar @{ body(as($owner, GET => $base))->{pending_requests} }, 1, 'the circuit lists it');

# a member without ManageMembers cannot approve, whatever the body says
is_err(as($member, POST => "$base/requests/$asker->{id}/approve",
          { admin_id => $owner->{id}, approver_id => $owner->{id} }), 403, qr/ManageMembers/,
       'a member naming the owner in the body: 403');
is_err(as($admin, POST => "$base/requests/$other->{id}/approve", {}), 404, qr/Join request not found/,
       'no such request: 404');
is_err(as($admin, POST => "$base/requests/$asker->{id}/approve", { role => 'owner' }), 400,
       qr/Invalid role/, 'approve as owner: 400');

# two approvals at once: one wins
my @bg = map {
    http_bg($ng, POST => "$base/requests/$asker->{id}/approve",
            headers => { 'Content-Type' => 'application/json',
                         Authorization => "Bearer $_->{token}" },
            body => '{"role":"viewer"}')
} ($admin, $owner);
my @st = sort map { http_wait($_)->{status} // 'none' } @bg;
is("@st", '200 409', 'two approvals at once: one 200, one 409');
($m) = grep { $_->{member_id} eq $asker->{id} } @{ body(as($owner, GET => $base))->{members} };
is($m->{role}, 'Viewer', 'the asker is a Viewer');
is(sql("SELECT count(*) FROM circuit_members WHERE circuit_id = '$id' AND member_id = '$asker->{id}'"),
   1, '... once');
is(sql("SELECT decided_by IN ('$admin->{id}', '$owner->{id}') FROM circuit_join_requests "
       . "WHERE circuit_id = '$id' AND requester_id = '$asker->{id}'"), 't',
   'decided by the caller');

# reject, and ask again after a rejection
is(as($other, POST => "$base/requests", {})->{status}, 201, 'another request');
$res = as($admin, POST => "$base/requests/$other->{id}/reject", { admin_id => 'someone-else' });
is($res->{status}, 200, 'rejected');
is(body($res)->{message}, 'Join request rejected', '... the answer');
is_err(as($admin, POST => "$base/requests/$other->{id}/reject", {}), 409, qr/already rejected/,
       'rejected twice: 409');
is(sql("SELECT decided_by FROM circuit_join_requests WHERE circuit_id = '$id' "
       . "AND requester_id = '$other->{id}'"), $admin->{id}, 'the actor is the caller, not the body');
is(as($other, POST => "$base/requests", { message => 'again' })->{status}, 201,
   'a rejected user may ask again');

# the visibility toggle: the owner or an Admin member
$res = as($admin, PUT => "$base/visibility/toggle");
is($res->{status}, 200, 'the admin toggles');
is(body($res)->{visibility}, 'public', '... public');
is(body(as($owner, PUT => "$base/visibility/toggle"))->{visibility}, 'private', 'the owner toggles back');
is_err(as($member, PUT => "$base/visibility/toggle"), 403, qr/owner or an Admin/, 'a member: 403');
is_err(as($other, PUT => "$base/visibility/toggle"), 404, qr/not found/, 'a stranger: 404');

unlike($ng->log, qr/\[(alert|crit|emerg)\]/, 'no alert in error.log');
stop_nginx($ng);

done_testing();
