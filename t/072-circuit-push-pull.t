# Circuits: push and pull.  A pushed item (completed) is readable by the
# circuit's members through GET /api/items/:dfid (the item cache too) and
# the circuit's items, and stops being readable the moment it is pulled;
# writes stay the owner's.  Pushes and pulls write their event and
# activity; with approval required they wait, and an approver without
# ManageMembers is refused whatever the body says; two approvals of one
# operation: one wins; a concurrent push and pull end consistent.

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use DefarmTest;

my (undef, $secret_file) = jwt_secret();

my $ng = start_nginx(
    name   => 'circuit-push',
    http   => db_config(size => 4) . "
    defarm_cache zone=circuit_push:4m ttl=1h;
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;",
    server => '
        location / {
            defarm_api on;
            add_header X-Cache $defarm_cache always;
        }');

sub body { json_body(@_) }
sub as { api_as($ng, @_) }
sub user { api_user($ng, "t072_$_[0]_$$") }

my ($owner, $admin, $member, $viewer, $other) = map { user($_) } qw(owner admin member viewer other);
my $uuid = '0b6f8f9e-1d2c-4c3b-9a8e-7f6d5c4b3a21';

sub circuit {
    my (%flags) = @_;
    my $c = body(as($owner, POST => '/api/circuits', { name => 'Push', %flags }))->{circuit_id};
    as($owner, POST => "/api/circuits/$c/members", { member_id => $admin->{id}, role => 'admin' });
    as($owner, POST => "/api/circuits/$c/members", { member_id => $member->{id}, role => 'member' });
    as($owner, POST => "/api/circuits/$c/members", { member_id => $viewer->{id}, role => 'viewer' });
    return $c;
}
sub item {
    my ($who, $v) = @_;
    return body(as($who, POST => '/api/items',
                   { identifiers => [ { key => 'lot', value => "$v-$$" } ],
                     source_entry => $uuid }))->{dfid};
}

my $c = circuit();
my $d = item($owner, 'a');
ok($c && $d, 'a circuit and an item');

# before: a member cannot read the owner's item
is(as($member, GET => "/api/items/$d")->{status}, 404, 'before the push: 404 for a member');
# warm the owner's cache entry
as($owner, GET => "/api/items/$d");
is(as($owner, GET => "/api/items/$d")->{headers}{'x-cache'}, 'HIT', "the owner's read is cached");

# push
my $res = as($owner, POST => "/api/circuits/$c/push/$d", {});
is($res->{status}, 200, 'push: 200');
my $op = body($res);
is($op->{status}, 'Completed', '... completed (no approval)');
is($op->{operation_type}, 'Push', '... a Push');
is($op->{requester_id}, $owner->{id}, '... by the caller');

is(as($member, GET => "/api/items/$d")->{status}, 200, 'a member reads the pushed item');
is(as($viewer, GET => "/api/items/$d")->{status}, 200, '... a viewer too');
is(as($other, GET => "/api/items/$d")->{status}, 404, 'a non-member still does not');
is(as($member, PUT => "/api/items/$d", { enriched_data => { x => 1 } })->{status}, 404,
   'writes stay the owner\'s');

$res = as($member, GET => "/api/circuits/$c/items?include_events=true");
is($res->{status}, 200, 'the circuit\'s items');
is(body($res)->[0]{dfid}, $d, '... the item');
is(body($res)->[0]{pushed_by}, $owner->{id}, '... pushed by the owner');
my @ev = grep { $_->{event_type} eq 'PushedToCircuit' } @{ body($res)->[0]{events} };
is(scalar @ev, 1, '... its PushedToCircuit event');
is($ev[0]{visibility}, 'CircuitOnly', '... CircuitOnly (a private circuit)');
is($ev[0]{metadata}{operation_id}, $op->{operation_id}, '... naming the operation');
is_err(as($member, GET => "/api/circuits/$c/items?include_events=maybe"), 400, qr/include_events/,
       'a bad include_events');
is_err(as($other, GET => "/api/circuits/$c/items"), 404, qr/Circuit not found/, 'items: a stranger 404');

$res = as($member, GET => "/api/circuits/$c/activities");
is($res->{status}, 200, 'activities');
is(body($res)->[0]{activity_type}, 'Push', '... the push');
like(body($res)->[0]{activity_id}, qr/^ACTIVITY-\d+-[0-9a-f]{8}$/, '... its id');

# events follow: CircuitOnly readable by members, Private not
as($owner, POST => '/api/events', { dfid => $d, event_type => 'updated', visibility => 'circuitonly',
                                    metadata => { n => 'shared' } });
as($owner, POST => '/api/events', { dfid => $d, event_type => 'updated', visibility => 'private',
                                    metadata => { n => 'secret' } });
my $evs = body(as($member, GET => "/api/events/item/$d"));
ok((grep { ($_->{metadata}{n} // '') eq 'shared' } @$evs), 'a member reads the CircuitOnly event');
ok(!(grep { ($_->{metadata}{n} // '') eq 'secret' } @$evs), '... not the Private one');
my ($shared) = grep { ($_->{metadata}{n} // '') eq 'shared' } @$evs;
is(as($member, GET => "/api/events/$shared->{event_id}")->{status}, 200, '... also by its id');
is(as($other, GET => "/api/events/$shared->{event_id}")->{status}, 404, 'a non-member: 404');

# refusals
is_err(as($owner, POST => "/api/circuits/$c/push/$d", {}), 409, qr/already in the circuit/, 'pushed twice');
is_err(as($viewer, POST => "/api/circuits/$c/push/" . item($viewer, 'v'), {}), 403, qr/needs Push/,
       'a viewer cannot push');
is_err(as($member, POST => "/api/circuits/$c/push/" . item($owner, 'n'), {}), 404, qr/Item not found/,
       "a member cannot push another's item");
is_err(as($other, POST => "/api/circuits/$c/push/" . item($other, 'o'), {}), 404, qr/Circuit not found/,
       'a stranger: 404');
is_err(as($owner, POST => "/api/circuits/$c/push/DFID-20250101-000001-AAAA", {}), 404, qr/Item not found/,
       'an unknown item');
is_err(as($owner, POST => "/api/circuits/not-a-uuid/push/$d", {}), 400, qr/Invalid circuit ID/, 'a bad id');

# pull: the item disappears from the members at once
$res = as($member, POST => "/api/circuits/$c/pull/$d", {});
is($res->{status}, 200, 'a member pulls');
is(body($res)->{status}, 'Completed', '... completed');
is(as($member, GET => "/api/items/$d")->{status}, 404, 'the member no longer reads it');
is(as($viewer, GET => "/api/items/$d")->{status}, 404, '... nor the viewer');
is(as($owner, GET => "/api/items/$d")->{status}, 200, 'the owner still does');
is(as($member, GET => "/api/events/$shared->{event_id}")->{status}, 404,
   'the CircuitOnly event is gone for the member too');
is_deeply(body(as($member, GET => "/api/circuits/$c/items")), [], 'the circuit has no item');
is_err(as($member, POST => "/api/circuits/$c/pull/$d", {}), 404, qr/not in this circuit/, 'pulled twice');
is(sql("SELECT count(*) FROM events WHERE dfid = '$d' AND event_type = 'PulledFromCircuit'"), 1,
   'a PulledFromCircuit event');

# approval required
my $ca = circuit(require_approval_for_push => JSON::PP::true);
my $d2 = item($member, 'b');
$res = as($member, POST => "/api/circuits/$ca/push/$d2", {});
is(body($res)->{status}, 'Pending', 'a push waits for approval');
my $opid = body($res)->{operation_id};
is(as($owner, GET => "/api/items/$d2")->{status}, 404, 'pending: not readable by others yet');
is_err(as($member, POST => "/api/circuits/$ca/push/$d2", {}), 409, qr/already pending/, 'a second push: 409');

$res = as($admin, GET => "/api/circuits/$ca/pending-items");
is(body($res)->{data}[0]{pending_id}, $opid, 'pending-items lists it');
is(body($res)->{data}[0]{item_preview}{identifiers}[0]{value}, "b-$$", '... with a preview');
is(scalar @{ body(as($admin, GET => "/api/circuits/$ca/operations/pending")) }, 1, 'operations/pending');

is_err(as($member, POST => "/api/circuits/operations/$opid/approve", { approver_id => $owner->{id} }),
       403, qr/ManageMembers/, 'a member naming the owner as approver: 403');
is_err(as($other, POST => "/api/circuits/operations/$opid/approve", {}), 404, qr/Operation not found/,
       'a stranger: 404');

my @bg = map {
    http_bg($ng, POST => "/api/circuits/operations/$opid/approve",
            headers => { 'Content-Type' => 'application/json',
                         Authorization => "Bearer $_->{token}" }, body => '{}')
} ($admin, $owner);
my @st = sort map { http_wait($_)->{status} // 'none' } @bg;
is("@st", '200 409', 'two approvals at once: one 200, one 409');
is(as($owner, GET => "/api/items/$d2")->{status}, 200, 'approved: the owner (a member) reads it');
is(sql("SELECT count(*) FROM circuit_items WHERE circuit_id = '$ca' AND dfid = '$d2'"), 1,
   'in the circuit once');

# reject through the pending-items form
my $d3 = item($member, 'c');
$opid = body(as($member, POST => "/api/circuits/$ca/push/$d3", {}))->{operation_id};
$res = as($admin, POST => "/api/circuits/$ca/pending-items/$opid/reject", { reason => 'no papers' });
is($res->{status}, 200, 'rejected');
is(body($res)->{message}, 'Item rejected', '... the answer');
my $ops = body(as($admin, GET => "/api/circuits/$ca/operations"));
my ($rej) = grep { $_->{operation_id} eq $opid } @$ops;
is($rej->{status}, 'Rejected', 'the operation is Rejected');
is($rej->{metadata}{rejection_reason}, 'no papers', '... the reason kept');
is($rej->{metadata}{rejected_by}, $admin->{id}, '... by the caller');
is_err(as($admin, POST => "/api/circuits/$ca/pending-items/$opid/approve", {}), 409, qr/already rejected/,
       'approving a rejected one: 409');

# approve through the pending-items form
my $d4 = item($member, 'd');
$opid = body(as($member, POST => "/api/circuits/$ca/push/$d4", {}))->{operation_id};
$res = as($admin, POST => "/api/circuits/$ca/pending-items/$opid/approve", { admin_id => 'forged' });
is($res->{status}, 200, 'approved via pending-items');
is(body($res)->{data}{approved_by}, $admin->{id}, '... by the caller, not the body');

# concurrent push and pull of one item: consistent
my $d5 = item($owner, 'e');
as($owner, POST => "/api/circuits/$c/push/$d5", {});
@bg = (http_bg($ng, POST => "/api/circuits/$c/pull/$d5",
               headers => { 'Content-Type' => 'application/json', Authorization => "Bearer $member->{token}" },
               body => '{}'),
       http_bg($ng, POST => "/api/circuits/$c/push/$d5",
               headers => { 'Content-Type' => 'application/json', Authorization => "Bearer $owner->{token}" },
               body => '{}'));
@st = map { http_wait($_)->{status} // 'none' } @bg;
my $in = sql("SELECT count(*) FROM circuit_items WHERE circuit_id = '$c' AND dfid = '$d5'");
my $readable = as($member, GET => "/api/items/$d5")->{status};
ok(($in == 1 && $readable == 200) || ($in == 0 && $readable == 404),
   "push and pull at once (@st): in the circuit $in, a member reads $readable");

# batch push: each item its own answer
my @bd = map { item($owner, "batch$_") } 1 .. 2;
$res = as($owner, POST => "/api/circuits/$c/push/batch",
          { items => [ { dfid => $bd[0] }, { dfid => $bd[1] }, { dfid => $bd[0] },
                       { dfid => item($other, 'notmine') } ] });
is($res->{status}, 200, 'batch push: 200');
is(body($res)->{success_count}, 2, '... two pushed');
is(body($res)->{failed_count}, 2, '... two refused');
like(body($res)->{results}[2]{error_message}, qr/already in the circuit/, '... the repeat, said why');
like(body($res)->{results}[3]{error_message}, qr/Item not found/, "... another's item");
is(body($res)->{results}[0]{operation}{status}, 'Completed', '... with its operation');
is_err(as($owner, POST => "/api/circuits/$c/push/batch", { items => [] }), 400, qr/1 to 100/, 'no items');
is_err(as($owner, POST => "/api/circuits/$c/push/batch", { items => [ 'x' ] }), 400, qr/dfid/,
       'an item not an object');
is_err(as($owner, POST => "/api/circuits/$c/push/batch", { dfids => [] }), 400, qr/items/, 'no items key');
is_err(as($viewer, POST => "/api/circuits/$c/push/batch", { items => [ { dfid => $bd[0] } ] }), 403,
       qr/needs Push/, 'a viewer: 403');

# the activity log across circuits, scoped to the caller's circuits
my $acts = body(as($member, GET => '/api/activities'));
ok(@$acts >= 3, 'activities: the member sees its circuits\' activity (' . scalar(@$acts) . ')');
ok(!(grep { $_->{circuit_id} ne $c && $_->{circuit_id} ne $ca } @$acts), '... only theirs');
is(scalar @{ body(as($other, GET => '/api/activities')) }, 0, 'a non-member sees none');
my $mine = body(as($member, GET => "/api/activities/user/$member->{id}"));
ok(@$mine && !(grep { $_->{user_id} ne $member->{id} } @$mine), 'activities/user/:id: that user only');

# an API key with read only cannot push
my $key = body(as($owner, POST => '/api/api-keys',
                  { name => 'ro', organization_type => 'Producer',
                    permissions => { read => JSON::PP::true, write => JSON::PP::false } }))->{api_key};
$res = http($ng, POST => "/api/circuits/$c/push/" . item($owner, 'k'),
            headers => { 'X-API-Key' => $key });
is($res->{status}, 403, 'a read-only key cannot push: 403');

unlike($ng->log, qr/\[(alert|crit|emerg)\]/, 'no alert in error.log');
stop_nginx($ng);

done_testing();
