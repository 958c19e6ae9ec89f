# Notifications, stored: circuit changes notify who they concern (a join
# request its deciders, a decision its requester, a member added or a
# role changed that member, a pending push its approvers, a decided push
# its requester), in the change's transaction; the REST routes (list with
# since/limit/unread_only, unread count, mark read, mark all read, delete)
# show and change the caller's own only.

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use DefarmTest;

my (undef, $secret_file) = jwt_secret();

my $ng = start_nginx(
    name   => 'notifications',
    http   => db_config(size => 4) . "
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;",
    server => '
        location / {
            defarm_api on;
        }');

sub body { json_body(@_) }
sub as { api_as($ng, @_) }
sub user { api_user($ng, "t074_$_[0]_$$") }

sub types {
    my ($who, $q) = @_;
    return [ map { $_->{notification_type} } @{ body(as($who, GET => '/api/notifications' . ($q // ''))) } ];
}

my ($owner, $admin, $asker, $member) = map { user($_) } qw(owner admin asker member);
my $c = body(as($owner, POST => '/api/circuits', { name => 'Notified', require_approval_for_push => JSON::PP::true }))->{circuit_id};
my $base = "/api/circuits/$c";

is_deeply(types($owner), [], 'the owner: nothing at creation');

as($owner, POST => "$base/members", { member_id => $admin->{id}, role => 'admin' });
is_deeply(types($admin), [ 'MemberAdded' ], 'a member added is told');
my $n = body(as($admin, GET => '/api/notifications'))->[0];
is($n->{data}{circuit_id}, $c, '... about the circuit');
is($n->{read}, JSON::PP::false, '... unread');
ok($n->{id} && $n->{timestamp}, '... with an id and a time');

as($asker, POST => "$base/requests", { message => 'me too' });
is_deeply(types($owner), [ 'JoinRequestReceived' ], 'a join request: the owner is told');
is_deeply(types($admin), [ 'JoinRequestReceived', 'MemberAdded' ], '... and the admin (ManageMembers), newest first');

as($admin, POST => "$base/requests/$asker->{id}/approve", { role => 'member' });
is_deeply(types($asker), [ 'MemberAdded', 'JoinRequestApproved' ], 'approved: the requester is told twice')
    or diag explain types($asker);

as($admin, PATCH => "$base/members/$asker->{id}", { role => 'Owner' });
is(types($asker)->[0], 'RoleChanged', 'a role changed: the member is told');

my $d = body(as($asker, POST => '/api/items', { identifiers => [ { key => 'lot', value => "n-$$" } ],
                                               source_entry => '0b6f8f9e-1d2c-4c3b-9a8e-7f6d5c4b3a21' }))->{dfid};
my $op = body(as($asker, POST => "$base/push/$d", {}))->{operation_id};
is(types($owner)->[0], 'CircuitItemPendingApproval', 'a pending push: the owner is told');
is(types($admin)->[0], 'CircuitItemPendingApproval', '... and the admin');
as($admin, POST => "$base/pending-items/$op/reject", { reason => 'later' });
is(types($asker)->[0], 'CircuitItemRejected', 'rejected: the requester is told');
is(body(as($asker, GET => '/api/notifications'))->[0]{data}{reason}, 'later', '... with the reason');

# the routes
my $count = body(as($admin, GET => '/api/notifications/unread-count'))->{unread_count};
is($count, scalar @{ types($admin) }, 'unread count: all of them');
my $first = body(as($admin, GET => '/api/notifications'))->[0];
my $res = as($admin, PATCH => "/api/notifications/$first->{id}/read");
is($res->{status}, 200, 'mark one read');
is(body($res)->{read}, JSON::PP::true, '... read');
is(body(as($admin, GET => '/api/notifications/unread-count'))->{unread_count}, $count - 1, '... one fewer unread');
is(scalar @{ types($admin, '?unread_only=true') }, $count - 1, 'unread_only');
is(scalar @{ types($admin, '?limit=1') }, 1, 'limit=1');
is(scalar @{ types($admin, '?since=' . (time + 3600)) }, 0, 'since the future: none');

is_err(as($owner, PATCH => "/api/notifications/$first->{id}/read"), 404, qr/Notification not found/,
       "another user's: 404");
is_err(as($owner, DELETE => "/api/notifications/$first->{id}"), 404, qr/Notification not found/,
       "... cannot delete it either");
is_err(as($admin, PATCH => '/api/notifications/nope/read'), 400, qr/Invalid notification ID/, 'a bad id');
is_err(as($admin, GET => '/api/notifications?limit=0'), 400, qr/limit/, 'limit 0');
is_err(as($admin, GET => '/api/notifications?limit=abc'), 400, qr/limit/, 'limit not a number');
is_err(as($admin, GET => '/api/notifications?since=yesterday'), 400, qr/since/, 'since not a time');
is_err(as($admin, GET => '/api/notifications?unread_only=maybe'), 400, qr/unread_only/, 'unread_only');

$res = as($admin, PATCH => '/api/notifications/mark-all-read');
is(body($res)->{marked}, $count - 1, 'mark all read: the rest');
is(body(as($admin, GET => '/api/notifications/unread-count'))->{unread_count}, 0, '... none unread');
is(as($admin, DELETE => "/api/notifications/$first->{id}")->{status}, 200, 'delete');
is(scalar @{ types($admin) }, $count - 1, '... gone');
is(http($ng, GET => '/api/notifications')->{status}, 401, 'no token: 401');

unlike($ng->log, qr/\[(alert|crit|emerg)\]/, 'no alert in error.log');
stop_nginx($ng);

done_testing();
