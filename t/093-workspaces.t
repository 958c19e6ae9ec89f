# Workspaces (sql/037), stored in PostgreSQL: created with the original's
# default settings and the caller as Owner (a body's requester_id or
# owner_id changes nothing); members read, the Owner and Admins change
# the settings and the members, only the Owner deletes, and the Owner can
# be neither removed nor demoted; max_members and, with
# defarm_tier_limits, the owner's tier's max_workspace_members refuse a
# member too many with 409; the stats are the counts SQL sees; another
# user's workspace (or list) is 404; every route checks its input and
# needs a principal.  A workspace made before nginx stopped is read after
# it started again.  Concurrent additions cannot pass max_members.

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use DefarmTest;

my (undef, $secret_file) = jwt_secret();

my %conf = (
    http   => db_config(size => 4) . "
    defarm_cache zone=workspaces:1m ttl=1h;
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;",
    server => '
        location / {
            defarm_api on;
        }');

my $ng = start_nginx(name => 'workspaces', %conf);

sub body { json_body(@_) }
sub as { api_as($ng, @_) }
sub user { api_user($ng, "t093_$_[0]_$$") }
sub raw_as {
    my ($who, $method, $path, $raw) = @_;
    return http($ng, $method, $path,
                headers => { 'Content-Type' => 'application/json',
                             Authorization => "Bearer $who->{token}" },
                body => $raw);
}
sub roles_of {
    my ($ws) = @_;
    return { map { $_->{user_id} => $_->{role} } @{ $ws->{members} } };
}

my ($owner, $wadmin, $member, $viewer, $outsider, $sysadmin, $extra)
    = map { user($_) } qw(owner wadmin member viewer outsider sysadmin extra);
sql("UPDATE users SET is_admin = true WHERE id = '$sysadmin->{id}'");

my $unknown = '00000000-0000-4000-8000-000000000000';

# ---------------------------------------------------------------- create

my $res = as($owner, POST => '/api/workspaces',
             { name => '  Farm Co-op  ', description => 'Our farms',
               requester_id => $outsider->{id}, owner_id => $outsider->{id} });
is($res->{status}, 201, 'create: 201');
my $ws = body($res);
my $id = $ws->{id};
like($id, qr/^[0-9a-f-]{36}$/, '... an id');
is($ws->{name}, 'Farm Co-op', '... the name trimmed');
is($ws->{description}, 'Our farms', '... the description');
is($ws->{owner_id}, $owner->{id}, '... the caller owns it, whatever the body said');
is_deeply(roles_of($ws), { $owner->{id} => 'Owner' }, '... the caller its Owner member');
is($ws->{members}[0]{added_by}, $owner->{id}, '... added by the caller');
is_deeply($ws->{settings}, {
    default_circuit_permissions => {
        Owner => [qw(Push Pull Invite ManageMembers ManagePermissions Delete Certify Audit ManageRoles)],
        Admin => [qw(Push Pull Invite ManageMembers ManageRoles Certify)],
        Member => [qw(Push Pull)], Viewer => ['Pull'] },
    default_event_visibility => 'Private', encryption_enabled => JSON::PP::true,
    retention_policy_days => 365, max_members => 100,
    allow_public_circuits => JSON::PP::false }, "... the original's default settings");
like($ws->{created_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/, '... created_at RFC 3339');
is(sql("SELECT owner_id FROM workspaces WHERE workspace_id = '$id'"), $owner->{id},
   '... stored in workspaces');
is(sql("SELECT user_id || ':' || role FROM workspace_members WHERE workspace_id = '$id'"),
   "$owner->{id}:Owner", '... and in workspace_members');

$res = as($owner, POST => '/api/workspaces',
          { name => 'Set', settings => { default_event_visibility => 'circuitonly',
                                         encryption_enabled => JSON::PP::false,
                                         retention_policy_days => 30, max_members => 5,
                                         allow_public_circuits => JSON::PP::true,
                                         default_circuit_permissions => { viewer => [ 'pull', 'AUDIT' ] } } });
is($res->{status}, 201, 'create with settings: 201');
my $set = body($res);
is($set->{settings}{default_event_visibility}, 'CircuitOnly', '... the visibility named');
is($set->{settings}{encryption_enabled}, JSON::PP::false, '... encryption off');
is($set->{settings}{retention_policy_days}, 30, '... the retention');
is($set->{settings}{max_members}, 5, '... max_members');
is($set->{settings}{allow_public_circuits}, JSON::PP::true, '... public circuits');
is_deeply($set->{settings}{default_circuit_permissions}{Viewer}, [ 'Pull', 'Audit' ],
          '... a role given its permissions');
is_deeply($set->{settings}{default_circuit_permissions}{Member}, [ 'Push', 'Pull' ],
          '... the others keep the defaults');

for my $case (
    [ '{"name": "x",',                                  qr/./,                      'malformed JSON' ],
    [ '["x"]',                                          qr/JSON object/,            'an array' ],
    [ '{}',                                             qr/name is required/,       'no name' ],
    [ '{"name": 5}',                                    qr/name must be a string/,  'a number as name' ],
    [ '{"name": "   "}',                                qr/name must be 1 to 200/,  'a blank name' ],
    [ '{"name": "' . ('x' x 201) . '"}',                qr/name must be 1 to 200/,  'a name too long' ],
    [ '{"name": "x", "description": 1}',                qr/description must be a string/, 'a number as description' ],
    [ '{"name": "x", "description": "' . ('d' x 2001) . '"}', qr/description must be at most 2000/, 'a description too long' ],
    [ '{"name": "x", "color": "red"}',                  qr/Unknown field: color/,   'an unknown field' ],
    [ '{"name": "x", "settings": []}',                  qr/settings must be an object/, 'settings an array' ],
    [ '{"name": "x", "settings": {"theme": 1}}',        qr/settings: Unknown field: theme/, 'an unknown setting' ],
    [ '{"name": "x", "settings": {"max_members": 0}}',  qr/max_members must be a whole number from 1 to 1000/, 'max_members 0' ],
    [ '{"name": "x", "settings": {"max_members": 1001}}', qr/max_members/,          'max_members 1001' ],
    [ '{"name": "x", "settings": {"max_members": 2.5}}', qr/max_members/,           'max_members 2.5' ],
    [ '{"name": "x", "settings": {"max_members": "10"}}', qr/max_members must be a number/, 'max_members a string' ],
    [ '{"name": "x", "settings": {"max_members": null}}', qr/max_members must be a number/, 'max_members null' ],
    [ '{"name": "x", "settings": {"retention_policy_days": 0}}', qr/retention_policy_days must be a whole number from 1 to 36500/, 'retention 0' ],
    [ '{"name": "x", "settings": {"retention_policy_days": 99999999999}}', qr/retention_policy_days/, 'retention huge' ],
    [ '{"name": "x", "settings": {"encryption_enabled": "yes"}}', qr/encryption_enabled must be a boolean/, 'encryption a string' ],
    [ '{"name": "x", "settings": {"allow_public_circuits": 1}}', qr/allow_public_circuits must be a boolean/, 'public circuits a number' ],
    [ '{"name": "x", "settings": {"default_event_visibility": "Secret"}}', qr/Public, Private or CircuitOnly/, 'an unknown visibility' ],
    [ '{"name": "x", "settings": {"default_circuit_permissions": {"boss": ["Push"]}}}', qr/default_circuit_permissions must map/, 'a map with an unknown role' ],
    [ '{"name": "x", "settings": {"default_circuit_permissions": {"Member": ["Fly"]}}}', qr/default_circuit_permissions must map/, 'a map with an unknown permission' ],
    [ '{"name": "x", "settings": {"default_circuit_permissions": {"Member": "Push"}}}', qr/default_circuit_permissions must map/, 'a map to a string' ],
    [ '{"name": "x", "settings": {"default_circuit_permissions": {"member": [], "Member": []}}}', qr/each once/, 'a role twice' ],
) {
    my ($raw, $re, $tag) = @$case;
    is_err(raw_as($owner, POST => '/api/workspaces', $raw), 400, $re, "create, $tag");
}
is(sql("SELECT count(*) FROM workspaces WHERE owner_id = '$owner->{id}'"), 2,
   '... none of them made a workspace');

# ------------------------------------------------------------- members

my $base = "/api/workspaces/$id";

$res = as($owner, POST => "$base/members", { user_id => $wadmin->{id}, role => 'admin' });
is($res->{status}, 201, 'add a member: 201');
is(body($res)->{role}, 'Admin', '... the role named');
is(body($res)->{user_id}, $wadmin->{id}, '... the user');
is(body($res)->{username}, "t093_wadmin_$$", '... with the username');

$res = as($wadmin, POST => "$base/members",
          { user_id => $member->{id}, role => 'Member', requester_id => $outsider->{id} });
is($res->{status}, 201, 'an Admin adds a member');
is(body($res)->{added_by}, $wadmin->{id}, '... added by the caller, not the body\'s requester_id');
is(as($owner, POST => "$base/members", { user_id => $viewer->{id}, role => 'VIEWER' })->{status}, 201,
   'the Owner adds a viewer');

is_err(as($member, POST => "$base/members", { user_id => $extra->{id}, role => 'Viewer' }), 403,
       qr/Owner or Admin/, 'a Member cannot add');
is_err(as($viewer, POST => "$base/members", { user_id => $extra->{id}, role => 'Viewer' }), 403,
       qr/Owner or Admin/, 'a Viewer cannot add');
is_err(as($outsider, POST => "$base/members", { user_id => $outsider->{id}, role => 'Admin' }), 404,
       qr/Workspace not found/, 'an outsider cannot add (even himself): 404');
is_err(as($owner, POST => "$base/members", { user_id => "user-$$-nobody", role => 'Member' }), 404,
       qr/User not found/, 'an unknown user: 404');
is_err(as($owner, POST => "$base/members", { user_id => $member->{id}, role => 'Viewer' }), 409,
       qr/already a member/, 'a member again: 409');
is_err(as($owner, POST => "$base/members", { user_id => $extra->{id}, role => 'Owner' }), 400,
       qr/role must be Admin, Member or Viewer/, 'a second Owner: 400');
is_err(as($owner, POST => "$base/members", { user_id => $extra->{id}, role => 'boss' }), 400,
       qr/role must be/, 'an unknown role: 400');
is_err(as($owner, POST => "$base/members", { user_id => $extra->{id} }), 400,
       qr/user_id and role are required/, 'no role: 400');
is_err(as($owner, POST => "$base/members", { role => 'Member' }), 400,
       qr/user_id and role are required/, 'no user_id: 400');
is_err(as($owner, POST => "$base/members", { user_id => 7, role => 'Member' }), 400,
       qr/user_id must be a string/, 'a number as user_id: 400');
is_err(as($owner, POST => "$base/members", { user_id => $extra->{id}, role => [] }), 400,
       qr/role must be a string/, 'an array as role: 400');
is_err(as($owner, POST => "$base/members", { user_id => $extra->{id}, role => 'Member', x => 1 }), 400,
       qr/Unknown field: x/, 'an unknown field: 400');
is_err(raw_as($owner, POST => "$base/members", '{"user_id":'), 400, qr/./, 'malformed JSON: 400');
is_err(as($owner, POST => "/api/workspaces/$unknown/members", { user_id => $extra->{id}, role => 'Member' }),
       404, qr/Workspace not found/, 'an unknown workspace: 404');
is_err(as($owner, POST => "/api/workspaces/nope/members", { user_id => $extra->{id}, role => 'Member' }),
       400, qr/Invalid workspace ID format/, 'a malformed id: 400');

$res = as($viewer, GET => "$base/members");
is($res->{status}, 200, 'a Viewer reads the members');
is_deeply({ map { $_->{user_id} => $_->{role} } @{ body($res) } },
          { $owner->{id} => 'Owner', $wadmin->{id} => 'Admin',
            $member->{id} => 'Member', $viewer->{id} => 'Viewer' }, '... all four, with their roles');
is_err(as($outsider, GET => "$base/members"), 404, qr/Workspace not found/, "an outsider: 404");
is(as($sysadmin, GET => "$base/members")->{status}, 200, 'an administrator reads them');
is_err(as($owner, GET => "/api/workspaces/$unknown/members"), 404, qr/Workspace not found/, 'unknown: 404');
is_err(as($owner, GET => '/api/workspaces/12/members'), 400, qr/Invalid workspace ID/, 'malformed: 400');

# roles

$res = as($wadmin, PUT => "$base/members/$member->{id}", { role => 'viewer', requester_id => $owner->{id} });
is($res->{status}, 200, 'an Admin changes a role');
is(body($res)->{role}, 'Viewer', '... to Viewer');
is(sql("SELECT role FROM workspace_members WHERE workspace_id = '$id' AND user_id = '$member->{id}'"),
   'Viewer', '... stored');
is(as($owner, PUT => "$base/members/$member->{id}", { role => 'Member' })->{status}, 200, '... and the Owner back');
is_err(as($wadmin, PUT => "$base/members/$owner->{id}", { role => 'Viewer' }), 403,
       qr/owner cannot be demoted/, 'the Owner cannot be demoted');
is_err(as($owner, PUT => "$base/members/$owner->{id}", { role => 'Admin' }), 403,
       qr/owner cannot be demoted/, '... not even by himself');
is_err(as($owner, PUT => "$base/members/$member->{id}", { role => 'Owner' }), 400,
       qr/role must be Admin, Member or Viewer/, 'nobody is made Owner');
is_err(as($member, PUT => "$base/members/$viewer->{id}", { role => 'Admin' }), 403,
       qr/Owner or Admin/, 'a Member cannot change roles');
is_err(as($viewer, PUT => "$base/members/$viewer->{id}", { role => 'Admin' }), 403,
       qr/Owner or Admin/, '... a Viewer cannot promote himself');
is_err(as($outsider, PUT => "$base/members/$viewer->{id}", { role => 'Admin' }), 404,
       qr/Workspace not found/, 'an outsider: 404');
is_err(as($owner, PUT => "$base/members/$extra->{id}", { role => 'Admin' }), 404,
       qr/Member not found/, 'not a member: 404');
is_err(as($owner, PUT => "$base/members/$member->{id}", {}), 400, qr/role is required/, 'no role: 400');
is_err(as($owner, PUT => "$base/members/$member->{id}", { role => 1 }), 400, qr/role must be a string/,
       'a number as role: 400');
is_err(as($owner, PUT => "$base/members/$member->{id}", { role => 'Member', color => 1 }), 400,
       qr/Unknown field: color/, 'an unknown field: 400');
is_err(raw_as($owner, PUT => "$base/members/$member->{id}", 'nope'), 400, qr/./, 'malformed JSON: 400');
is_err(as($owner, PUT => "/api/workspaces/$unknown/members/$member->{id}", { role => 'Member' }), 404,
       qr/Workspace not found/, 'an unknown workspace: 404');
is_err(as($owner, PUT => "/api/workspaces/x-y/members/$member->{id}", { role => 'Member' }), 400,
       qr/Invalid workspace ID/, 'a malformed id: 400');

# ---------------------------------------------------------------- reads

$res = as($viewer, GET => $base);
is($res->{status}, 200, 'a Viewer reads the workspace');
is(body($res)->{name}, 'Farm Co-op', '... the workspace');
is(scalar @{ body($res)->{members} }, 4, '... with its four members');
is_err(as($outsider, GET => $base), 404, qr/Workspace not found/, "an outsider: 404 (another user's)");
is(as($sysadmin, GET => $base)->{status}, 200, 'an administrator reads it');
is_err(as($owner, GET => "/api/workspaces/$unknown"), 404, qr/Workspace not found/, 'unknown: 404');
is_err(as($owner, GET => '/api/workspaces/not-a-uuid'), 400, qr/Invalid workspace ID format/, 'malformed: 400');

$res = as($member, GET => '/api/workspaces');
is($res->{status}, 200, 'list: 200');
is_deeply([ map { $_->{id} } @{ body($res) } ], [ $id ], "... a member's: the one he is in");
is_deeply([ map { $_->{id} } @{ body(as($owner, GET => '/api/workspaces')) } ], [ $set->{id}, $id ],
          "... the owner's: both, newest first");
is_deeply(body(as($outsider, GET => '/api/workspaces')), [], "... an outsider's: none");
is(scalar @{ body(as($owner, GET => '/api/workspaces?limit=1')) }, 1, '... limit=1');
is_deeply([ map { $_->{id} } @{ body(as($owner, GET => '/api/workspaces?offset=1')) } ], [ $id ], '... offset=1');
is_err(as($owner, GET => '/api/workspaces?all=true'), 403, qr/administrators/, '... all=true: for administrators');
my $all = body(as($sysadmin, GET => '/api/workspaces?all=true&limit=500'));
ok((grep { $_->{id} eq $id } @$all) && (grep { $_->{id} eq $set->{id} } @$all),
   '... an administrator with all=true: every workspace');
is_deeply(body(as($sysadmin, GET => '/api/workspaces')), [], '... without it, his own');
is_err(as($owner, GET => '/api/workspaces?limit=0'), 400, qr/limit must be 1 to 500/, '... limit=0: 400');
is_err(as($owner, GET => '/api/workspaces?limit=x'), 400, qr/limit/, '... limit=x: 400');
is_err(as($owner, GET => '/api/workspaces?offset=-1'), 400, qr/offset/, '... offset=-1: 400');
is_err(as($owner, GET => '/api/workspaces?all=maybe'), 400, qr/all must be true or false/, '... all=maybe: 400');

$res = as($member, GET => "/api/workspaces/user/$member->{id}");
is($res->{status}, 200, "a user's own workspaces: 200");
is_deeply([ map { $_->{id} } @{ body($res) } ], [ $id ], '... the one');
is_err(as($member, GET => "/api/workspaces/user/$owner->{id}"), 404, qr/User not found/,
       "another user's: 404");
is_err(as($outsider, GET => "/api/workspaces/user/$owner->{id}"), 404, qr/User not found/,
       "... whoever asks");
is_deeply([ map { $_->{id} } @{ body(as($sysadmin, GET => "/api/workspaces/user/$owner->{id}")) } ],
          [ $set->{id}, $id ], "an administrator reads anyone's");
is_err(as($sysadmin, GET => "/api/workspaces/user/user-$$-nobody"), 404, qr/User not found/,
       '... an unknown user: 404');

# --------------------------------------------------------------- update

$res = as($wadmin, PUT => $base, { name => 'Co-op', requester_id => $outsider->{id},
                                   settings => { max_members => 50, default_event_visibility => 'PUBLIC',
                                                 default_circuit_permissions => { Member => [ 'Pull' ] } } });
is($res->{status}, 200, 'an Admin changes the settings');
my $up = body($res);
is($up->{name}, 'Co-op', '... the name');
is($up->{description}, 'Our farms', '... the description kept');
is($up->{settings}{max_members}, 50, '... max_members');
is($up->{settings}{default_event_visibility}, 'Public', '... the visibility');
is_deeply($up->{settings}{default_circuit_permissions}{Member}, [ 'Pull' ], '... the Member permissions');
is_deeply($up->{settings}{default_circuit_permissions}{Admin},
          [qw(Push Pull Invite ManageMembers ManageRoles Certify)], '... the Admin ones kept');
is($up->{settings}{retention_policy_days}, 365, '... the retention kept');
is($up->{owner_id}, $owner->{id}, '... the owner kept');

$res = as($owner, PUT => $base, { description => undef, settings => { encryption_enabled => JSON::PP::false,
                                                                       retention_policy_days => 90,
                                                                       allow_public_circuits => JSON::PP::true } });
is($res->{status}, 200, 'the Owner changes them');
is(body($res)->{description}, '', '... description null: emptied');
is(body($res)->{settings}{encryption_enabled}, JSON::PP::false, '... encryption off');
is(body($res)->{settings}{retention_policy_days}, 90, '... the retention');
is(body($res)->{settings}{allow_public_circuits}, JSON::PP::true, '... public circuits');
is(sql("SELECT retention_policy_days FROM workspaces WHERE workspace_id = '$id'"), 90, '... stored');

is_err(as($member, PUT => $base, { name => 'Mine' }), 403, qr/Owner or Admin/, 'a Member cannot change it');
is_err(as($viewer, PUT => $base, { name => 'Mine' }), 403, qr/Owner or Admin/, 'a Viewer cannot');
is_err(as($outsider, PUT => $base, { name => 'Mine' }), 404, qr/Workspace not found/, 'an outsider: 404');
is_err(as($sysadmin, PUT => $base, { name => 'Mine' }), 403, qr/Owner or Admin/,
       'an administrator who is not a member reads but does not change it');
is_err(as($owner, PUT => $base, { name => '' }), 400, qr/name must be 1 to 200/, 'a blank name: 400');
is_err(as($owner, PUT => $base, { settings => { max_members => -3 } }), 400, qr/max_members/, 'max_members -3: 400');
is_err(as($owner, PUT => $base, { settings => { default_event_visibility => 2 } }), 400,
       qr/default_event_visibility must be a string/, 'a number as visibility: 400');
is_err(as($owner, PUT => $base, { owner => 'x' }), 400, qr/Unknown field: owner/, 'an unknown field: 400');
is_err(raw_as($owner, PUT => $base, '{'), 400, qr/./, 'malformed JSON: 400');
is_err(as($owner, PUT => $base, { settings => { max_members => 3 } }), 409,
       qr/max_members \(3\) is below the workspace's 4 members/, 'max_members below the members: 409');
is_err(as($owner, PUT => "/api/workspaces/$unknown", { name => 'x' }), 404, qr/Workspace not found/, 'unknown: 404');
is_err(as($owner, PUT => '/api/workspaces/zzz', { name => 'x' }), 400, qr/Invalid workspace ID/, 'malformed: 400');
is(sql("SELECT name FROM workspaces WHERE workspace_id = '$id'"), 'Co-op', '... none of them changed it');

# max_members reached

is(as($owner, PUT => $base, { settings => { max_members => 4 } })->{status}, 200, 'max_members = the members');
$res = as($owner, POST => "$base/members", { user_id => $extra->{id}, role => 'Member' });
is_err($res, 409, qr/The workspace is full: its max_members is 4/, 'one more member: 409');
is(body($res)->{error_kind}, 'conflict', '... a conflict');
is(body($res)->{limit}, 4, '... with the limit');
is(body($res)->{limit_source}, 'max_members', '... and where it comes from');
is(sql("SELECT count(*) FROM workspace_members WHERE workspace_id = '$id'"), 4, '... nobody added');
is(as($owner, PUT => $base, { settings => { max_members => 100 } })->{status}, 200, 'max_members back to 100');

# Basic allows 3 workspace members, but defarm_tier_limits is off here
is(as($owner, POST => "$base/members", { user_id => $extra->{id}, role => 'Viewer' })->{status}, 201,
   "past the Basic tier's 3 members: defarm_tier_limits is off");
is(body(as($owner, GET => "$base/stats"))->{tier_limit_enforced}, JSON::PP::false, '... the stats say so');

# ---------------------------------------------------------------- stats

$res = as($viewer, GET => "$base/stats");
is($res->{status}, 200, 'stats: a Viewer reads them');
my $st = body($res);
is($st->{workspace_id}, $id, '... the workspace');
is($st->{total_members}, sql("SELECT count(*) FROM workspace_members WHERE workspace_id = '$id'"),
   '... total_members is what SQL counts');
my %by = map { split /\|/ } split /\n/,
         sql("SELECT role, count(*) FROM workspace_members WHERE workspace_id = '$id' GROUP BY role");
is_deeply($st->{members_by_role}, { Owner => 0, Admin => 0, Member => 0, Viewer => 0, %by },
          '... members_by_role too');
is_deeply($st->{members_by_role}, { Owner => 1, Admin => 1, Member => 1, Viewer => 2 }, '... 1, 1, 1, 2');
is($st->{max_members}, 100, '... max_members');
is($st->{owner_tier}, 'Basic', "... the owner's tier");
is($st->{tier_max_workspace_members}, 3, "... its max_workspace_members");
is($st->{member_limit}, 100, '... the limit that applies');
is($st->{available_slots}, 95, '... the slots left');
is($st->{age_days}, 0, '... made today');
is_err(as($outsider, GET => "$base/stats"), 404, qr/Workspace not found/, "an outsider: 404");
is(as($sysadmin, GET => "$base/stats")->{status}, 200, 'an administrator reads them');
is_err(as($owner, GET => "/api/workspaces/$unknown/stats"), 404, qr/Workspace not found/, 'unknown: 404');
is_err(as($owner, GET => '/api/workspaces/abc/stats'), 400, qr/Invalid workspace ID/, 'malformed: 400');

# --------------------------------------------------------------- removal

is_err(as($member, DELETE => "$base/members/$viewer->{id}"), 403, qr/Owner or Admin/,
       'a Member cannot remove another');
is_err(as($outsider, DELETE => "$base/members/$viewer->{id}"), 404, qr/Workspace not found/,
       'an outsider: 404');
is_err(as($wadmin, DELETE => "$base/members/$owner->{id}"), 403, qr/owner cannot be removed/,
       'the Owner cannot be removed');
is_err(as($owner, DELETE => "$base/members/$owner->{id}"), 403, qr/owner cannot be removed/,
       '... nor leave');
is_err(as($owner, DELETE => "$base/members/$outsider->{id}"), 404, qr/Member not found/,
       'not a member: 404');
is_err(as($owner, DELETE => "/api/workspaces/$unknown/members/$viewer->{id}"), 404,
       qr/Workspace not found/, 'an unknown workspace: 404');
is_err(as($owner, DELETE => "/api/workspaces/1/members/$viewer->{id}"), 400,
       qr/Invalid workspace ID/, 'a malformed id: 400');
$res = as($wadmin, DELETE => "$base/members/$extra->{id}");
is($res->{status}, 200, 'an Admin removes a member');
is(body($res)->{success}, JSON::PP::true, '... success');
$res = as($viewer, DELETE => "$base/members/$viewer->{id}");
is($res->{status}, 200, 'a member leaves');
is_err(as($viewer, GET => $base), 404, qr/Workspace not found/, '... and no longer reads it');
is_deeply(roles_of(body(as($owner, GET => $base))),
          { $owner->{id} => 'Owner', $wadmin->{id} => 'Admin', $member->{id} => 'Member' },
          '... the three left');

# ------------------------------------------------------------- API keys

my $key = body(as($member, POST => '/api/api-keys', { name => 'k', organization_type => 'Producer',
                                                    permissions => { read => JSON::PP::true, write => JSON::PP::true } }))->{api_key};
$res = http($ng, GET => $base, headers => { 'X-API-Key' => $key });
is($res->{status}, 200, "a key reads as its owner");
$res = http($ng, POST => '/api/workspaces', headers => { 'X-API-Key' => $key, 'Content-Type' => 'application/json' },
            body => '{"name": "By key"}');
is($res->{status}, 201, '... and creates');
is(body($res)->{owner_id}, $member->{id}, '... owned by the key\'s owner');
my $bykey = body($res)->{id};

# ---------------------------------------------------------------- no token

for my $r ([ POST => '/api/workspaces' ], [ GET => '/api/workspaces' ],
           [ GET => "/api/workspaces/user/$owner->{id}" ], [ GET => $base ], [ PUT => $base ],
           [ DELETE => $base ], [ POST => "$base/members" ], [ GET => "$base/members" ],
           [ PUT => "$base/members/$member->{id}" ], [ DELETE => "$base/members/$member->{id}" ],
           [ GET => "$base/stats" ]) {
    my ($method, $path) = @$r;
    is(http($ng, $method, $path, headers => { 'Content-Type' => 'application/json' },
            $method =~ /^P/ ? (body => '{}') : ())->{status}, 401, "no token: $method $path: 401");
}

# --------------------------------------------------------------- delete

is_err(as($wadmin, DELETE => $base), 403, qr/Owner only/, 'an Admin cannot delete');
is_err(as($member, DELETE => $base), 403, qr/Owner only/, 'a Member cannot');
is_err(as($outsider, DELETE => $base), 404, qr/Workspace not found/, 'an outsider: 404');
is_err(as($sysadmin, DELETE => $base), 403, qr/Owner only/, 'an administrator not its owner cannot');
is_err(as($owner, DELETE => "/api/workspaces/$unknown"), 404, qr/Workspace not found/, 'unknown: 404');
is_err(as($owner, DELETE => '/api/workspaces/0'), 400, qr/Invalid workspace ID/, 'malformed: 400');
$res = as($member, DELETE => "/api/workspaces/$bykey");
is($res->{status}, 200, 'the Owner deletes');
is(body($res)->{success}, JSON::PP::true, '... success');
is_err(as($member, GET => "/api/workspaces/$bykey"), 404, qr/Workspace not found/, '... gone');
is(sql("SELECT count(*) FROM workspace_members WHERE workspace_id = '$bykey'"), 0, '... with its members');

# ---------------------------------------------------- concurrent additions

my @crowd = map { user("crowd$_") } 1 .. 5;
my $cw = body(as($owner, POST => '/api/workspaces', { name => 'Three seats',
                                                      settings => { max_members => 3 } }))->{id};
my @bg = map {
    http_bg($ng, POST => "/api/workspaces/$cw/members",
            headers => { 'Content-Type' => 'application/json', Authorization => "Bearer $owner->{token}" },
            body => JSON::PP->new->encode({ user_id => $_->{id}, role => 'Member' }))
} @crowd;
my @st = sort map { http_wait($_)->{status} // 'none' } @bg;
is_deeply(\@st, [ 201, 201, 409, 409, 409 ], 'five additions at once for two seats: two made, three 409');
is(sql("SELECT count(*) FROM workspace_members WHERE workspace_id = '$cw'"), 3, '... three members');

# --------------------------------------------------------------- restart

my $before = body(as($owner, GET => $base));
unlike($ng->log, qr/\[(alert|crit|emerg)\]/, 'no alert in error.log');
stop_nginx($ng);
$ng = start_nginx(name => 'workspaces', %conf);
$res = as($member, GET => $base);
is($res->{status}, 200, 'after a restart: the workspace is read');
is_deeply(body($res), $before, '... as it was');
is_deeply([ map { $_->{id} } @{ body(as($owner, GET => '/api/workspaces')) } ], [ $cw, $set->{id}, $id ],
          "... the owner's list as it was");
unlike($ng->log, qr/\[(alert|crit|emerg)\]/, 'no alert in error.log');
stop_nginx($ng);

# ------------------------------------------------- the tier's member limit

$ng = start_nginx(name => 'workspaces-tier', http => $conf{http} . "
    defarm_tier_limits on;", server => $conf{server});

my ($basic, @guests) = map { user("tier$_") } 1 .. 4;
my $tw = body(as($basic, POST => '/api/workspaces', { name => 'Small' }))->{id};
is(as($basic, POST => "/api/workspaces/$tw/members", { user_id => $guests[0]{id}, role => 'Member' })->{status},
   201, 'tier limits on: a Basic owner adds a member');
is(as($basic, POST => "/api/workspaces/$tw/members", { user_id => $guests[1]{id}, role => 'Member' })->{status},
   201, '... and a second (three with the owner)');
$st = body(as($basic, GET => "/api/workspaces/$tw/stats"));
is($st->{tier_limit_enforced}, JSON::PP::true, '... the stats: the tier limit enforced');
is($st->{member_limit}, 3, '... the limit that applies: the tier\'s 3');
is($st->{available_slots}, 0, '... no slot left');
$res = as($basic, POST => "/api/workspaces/$tw/members", { user_id => $guests[2]{id}, role => 'Member' });
is_err($res, 409, qr/The owner's Basic tier allows 3 workspace members/, '... a fourth: 409');
is(body($res)->{limit}, 3, '... with the limit');
is(body($res)->{tier}, 'Basic', '... the tier');
is(body($res)->{limit_source}, 'tier', '... and where it comes from');
is(sql("SELECT count(*) FROM workspace_members WHERE workspace_id = '$tw'"), 3, '... nobody added');

sql("UPDATE users SET tier = 'Enterprise' WHERE id = '$basic->{id}'");
is(as($basic, POST => "/api/workspaces/$tw/members", { user_id => $guests[2]{id}, role => 'Member' })->{status},
   201, 'the owner made Enterprise (no limit): added');
is(body(as($basic, GET => "/api/workspaces/$tw/stats"))->{tier_max_workspace_members}, undef,
   '... the stats: no tier limit');

unlike($ng->log, qr/\[(alert|crit|emerg)\]/, 'no alert in error.log');
stop_nginx($ng);

done_testing();
