# Circuits: push-local tokenizes a local item into a circuit (a new DFID,
# or the caller's item with the same Canonical identifier; several: 409),
# keeps the LID -> DFID mapping, records the alias, retires the local
# item and pushes the result; push-events moves local events onto a
# pushed item, merging one identical to an event it has.

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use DefarmTest;

my (undef, $secret_file) = jwt_secret();

my $ng = start_nginx(
    name   => 'circuit-local',
    http   => db_config(size => 4) . "
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;",
    server => '
        location / {
            defarm_api on;
        }');

sub body { json_body(@_) }
sub as { api_as($ng, @_) }
sub user { api_user($ng, "t075_$_[0]_$$") }

my ($owner, $member, $viewer, $other) = map { user($_) } qw(owner member viewer other);
my $c = body(as($owner, POST => '/api/circuits', { name => 'Local' }))->{circuit_id};
as($owner, POST => "/api/circuits/$c/members", { member_id => $member->{id}, role => 'member' });
as($owner, POST => "/api/circuits/$c/members", { member_id => $viewer->{id}, role => 'viewer' });
my $base = "/api/circuits/$c";

sub local_item {
    my ($who, $ids, $data) = @_;
    my $res = as($who, POST => '/api/items/local', { identifiers => $ids, enriched_data => $data // {} });
    return body($res)->{data}{local_id};
}

my $canon = { namespace => 'bovino', key => 'sisbov', value => 'BR' . sprintf('%012d', $$),
              id_type => 'Canonical' };

# a new DFID
my $lid = local_item($owner, [ { key => 'lot', value => "L-$$" } ], { breed => 'angus' });
ok($lid, 'a local item');
my $res = as($owner, POST => "$base/push-local", { local_id => $lid, enriched_data => { weight => 300 } });
is($res->{status}, 200, 'push-local: 200');
my $data = body($res)->{data};
is($data->{status}, 'NewItemCreated', '... a new item');
like($data->{dfid}, qr/^DFID-/, '... with a DFID');
ok($data->{operation_id}, '... pushed');
my $item = body(as($member, GET => "/api/items/$data->{dfid}"));
is($item->{identifiers}[0]{value}, "L-$$", "the member reads it: the local item's identifiers");
is_deeply($item->{enriched_data}, { breed => 'angus', weight => 300 }, '... its data and the body\'s');
is(body(as($owner, GET => "/api/items/mapping/$lid"))->{data}{dfid}, $data->{dfid}, 'the mapping is kept');
is(sql("SELECT count(*) FROM items WHERE local_id = '$lid'"), 0, 'the local item is retired');
is(sql("SELECT scheme FROM item_aliases WHERE dfid = '$data->{dfid}'"), "user:$owner->{id}", 'the alias recorded');

# an existing item with the Canonical identifier
my $existing = body(as($owner, POST => '/api/items', { identifiers => [ $canon ],
                                                     source_entry => '0b6f8f9e-1d2c-4c3b-9a8e-7f6d5c4b3a21' }))->{dfid};
my $lid2 = local_item($owner, [ $canon, { key => 'ear', value => "E-$$" } ]);
$res = as($owner, POST => "$base/push-local", { local_id => $lid2 });
is(body($res)->{data}{status}, 'ExistingItemEnriched', 'a Canonical match enriches that item');
is(body($res)->{data}{dfid}, $existing, '... the same DFID');
ok((grep { $_->{value} eq "E-$$" } @{ body(as($owner, GET => "/api/items/$existing"))->{identifiers} }),
   '... with the new identifier');

# refusals
is_err(as($owner, POST => "$base/push-local", { local_id => $lid }), 404, qr/Local item not found/,
       'a retired local item: 404');
is_err(as($owner, POST => "$base/push-local", { local_id => 'x' }), 400, qr/UUID/, 'a bad local_id');
is_err(as($owner, POST => "$base/push-local", { local_id => $lid, identifiers => [] }), 400,
       qr/own/, 'identifiers in the body');
my $vl = local_item($viewer, [ { key => 'lot', value => "V-$$" } ]);
is_err(as($viewer, POST => "$base/push-local", { local_id => $vl }), 403, qr/needs Push/, 'a viewer: 403');
my $ol = local_item($other, [ { key => 'lot', value => "O-$$" } ]);
is_err(as($member, POST => "$base/push-local", { local_id => $ol }), 404, qr/Local item not found/,
       "another's local item: 404");
is_err(as($other, POST => "$base/push-local", { local_id => $ol }), 404, qr/Circuit not found/,
       'a stranger: 404');

# push-events
my $dfid = $data->{dfid};
sub local_event {
    my ($meta) = @_;
    my $r = as($owner, POST => '/api/events/local', { event_type => 'updated', visibility => 'circuitonly',
                                                      metadata => $meta });
    return body($r)->{local_event_id};
}
my ($e1, $e2) = (local_event({ step => 'weighed' }), local_event({ step => 'vaccinated' }));
ok($e1 && $e2, 'two local events');
$res = as($owner, POST => "$base/push-events", { local_event_ids => [ $e1, $e2 ], dfid => $dfid });
is($res->{status}, 200, 'push-events: 200');
is(body($res)->{events_pushed}, 2, '... two moved');
is(body($res)->{events_deduplicated}, 0, '... none merged');
my $evs = body(as($member, GET => "/api/events/item/$dfid"));
ok((grep { ($_->{metadata}{step} // '') eq 'weighed' } @$evs), 'the member reads them on the item');

# the same event again: merged into the first
my $e3 = local_event({ step => 'weighed' });
$res = as($owner, POST => "$base/push-events", { local_event_ids => [ $e3 ], dfid => $dfid });
is(body($res)->{events_deduplicated}, 1, 'an identical one is merged');
ok(body($res)->{events}[0]{original_event_id}, '... naming the original');
$res = as($owner, POST => "$base/push-events",
          { local_event_ids => [ '00000000-0000-4000-8000-000000000000' ], dfid => $dfid });
like(body($res)->{events}[0]{error_message}, qr/not found/, 'an unknown event is named, not skipped');
is_err(as($owner, POST => "$base/push-events", { local_event_ids => [ 'bad' ], dfid => $dfid }), 400,
       qr/Invalid local event id/, 'a bad id: 400');
is_err(as($owner, POST => "$base/push-events", { local_event_ids => [ $e3 ], dfid => 'DFID-nope' }), 404,
       qr/not found in this circuit/, 'an item not in the circuit: 404');
is_err(as($owner, POST => "$base/push-events", { dfid => $dfid }), 400, qr/local_event_ids/, 'no ids');

unlike($ng->log, qr/\[(alert|crit|emerg)\]/, 'no alert in error.log');
stop_nginx($ng);

done_testing();
