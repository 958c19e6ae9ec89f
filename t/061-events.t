# Events: create on an item (deduplicated by content hash, canonical JSON
# with sorted keys), local events, reads by id, item, type, visibility,
# time range, public and private, metadata merge (hash recomputed);
# validation; another user sees only Public events; a read-only key
# cannot create.

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use DefarmTest;

my $json = JSON::PP->new->utf8->canonical;
my (undef, $secret_file) = jwt_secret();

my $ng = start_nginx(
    name   => 'events',
    http   => db_config(size => 4) . "
    defarm_cache zone=events:1m ttl=1h;
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;",
    server => '
        location / {
            defarm_api on;
        }');

sub body { json_body(@_) }

sub user { api_user($ng, "t061_$_[0]_$$") }

my $alice = user('alice');
my $bob = user('bob');

sub as { api_as($ng, @_) }

my $uuid = '0b6f8f9e-1d2c-4c3b-9a8e-7f6d5c4b3a21';
my $dfid = body(as($alice, POST => '/api/items',
                   { identifiers => [ { key => 'lot', value => "e-$$" } ],
                     source_entry => $uuid }))->{dfid};
ok($dfid, "an item $dfid");

# create, and the same again (keys in another order): deduplicated

my $res = as($alice, POST => '/api/events',
             { dfid => $dfid, event_type => 'created',
               visibility => 'private',
               metadata => { b => 2, a => { y => 1, x => [ 1, 2 ] } } });
is($res->{status}, 200, 'create');
my $ev = body($res);
is($ev->{event_type}, 'Created', 'the type, canonical');
is($ev->{visibility}, 'Private', 'the visibility, canonical');
is($ev->{is_encrypted}, JSON::PP::true, 'a private event is flagged');
is($ev->{source}, $alice->{id}, 'the source is the caller');
is($ev->{was_deduplicated}, JSON::PP::false, 'new');
like($ev->{content_hash} // '', qr/^[0-9a-f]{64}$/, 'a SHA-256 hash');

$res = as($alice, POST => '/api/events',
          '{"metadata": {"a": {"x": [1, 2], "y": 1}, "b": 2}, '
          . '"visibility": "Private", "event_type": "CREATED", '
          . qq{"dfid": "$dfid"\}});
is($res->{status}, 200, 'the same event again');
is(body($res)->{was_deduplicated}, JSON::PP::true, 'deduplicated');
is(body($res)->{original_event_id}, $ev->{event_id}, 'pointing at the first');
is(sql("SELECT count(*) FROM events WHERE dfid = '$dfid'"), 1,
   'stored once');

$res = as($alice, POST => '/api/events',
          { dfid => $dfid, event_type => 'Updated', visibility => 'Public',
            metadata => { step => 1 } });
my $pub = body($res);
is($pub->{was_deduplicated}, JSON::PP::false, 'another event');

# validation

for my $case (
    [ 'bad type', { dfid => $dfid, event_type => 'exploded',
                    visibility => 'public' }, qr/Invalid event type: exploded/ ],
    [ 'bad visibility', { dfid => $dfid, event_type => 'created',
                          visibility => 'direct' },
      qr/Invalid visibility: direct/ ],
    [ 'bad dfid', { dfid => 'DFID-x', event_type => 'created',
                    visibility => 'public' }, qr/Invalid DFID/ ],
    [ 'no dfid', { event_type => 'created', visibility => 'public' },
      qr/Invalid DFID/ ],
    [ 'metadata not an object', { dfid => $dfid, event_type => 'created',
                                  visibility => 'public', metadata => [ 1 ] },
      qr/"metadata" must be an object/ ],
) {
    my ($name, $body, $re) = @$case;
    $res = as($alice, POST => '/api/events', $body);
    is($res->{status}, 400, "$name: 400");
    like(body($res)->{error} // '', $re, "$name: says why");
}

is(as($alice, POST => '/api/events', '[')->{status}, 400, 'malformed JSON');
is(as($bob, POST => '/api/events',
      { dfid => $dfid, event_type => 'created', visibility => 'public' })
       ->{status}, 404, 'an event on another user\'s item: 404');
is(as($alice, POST => '/api/events',
      { dfid => 'DFID-20250101-000001-F7BD', event_type => 'created',
        visibility => 'public' })->{status}, 404,
   'an event on an unknown item: 404, not a database error');

# reads

is(as($alice, GET => "/api/events/$ev->{event_id}")->{status}, 200,
   'get my private event');
my $admin = user('admin');
sql("UPDATE users SET is_admin = true WHERE id = '$admin->{id}'");
is(as($admin, GET => "/api/events/$ev->{event_id}")->{status}, 200,
   'an admin reads it');
is(scalar @{ body(as($admin, GET => "/api/events/item/$dfid")) }, 2,
   'and all the item\'s events');
is(as($bob, GET => "/api/events/$ev->{event_id}")->{status}, 404,
   'another user\'s private event: 404');
is(as($bob, GET => "/api/events/$pub->{event_id}")->{status}, 200,
   'another user\'s public event: readable');
is(as($alice, GET => '/api/events/nope')->{status}, 400, 'a bad id: 400');

is(scalar @{ body(as($alice, GET => "/api/events/item/$dfid")) }, 2,
   'by item: both for the owner');
is(scalar @{ body(as($bob, GET => "/api/events/item/$dfid")) }, 1,
   'by item: only the public one for another user');
# other files' public events may be there too: this file's item only
is(scalar(grep { ($_->{dfid} // '') eq $dfid }
          @{ body(as($alice, GET => '/api/events/type/updated')) }), 1,
   'by type');
is(as($alice, GET => '/api/events/type/nope')->{status}, 400,
   'by an unknown type: 400');
is(as($alice, GET => '/api/events/type/%FF')->{status}, 400,
   'a type that is not UTF-8: 400 (the message repaired)');
is(as($alice, GET => '/api/events/timeline?start_date=9999999999999')
       ->{status}, 400, 'a time PostgreSQL cannot hold: 400');
is(scalar @{ body(as($alice, GET => '/api/events/visibility/PRIVATE')) }, 1,
   'by visibility');
is(scalar @{ body(as($alice, GET => '/api/events/private')) }, 1, 'private');
is(scalar @{ body(as($bob, GET => '/api/events/private')) }, 0,
   'nobody else\'s private events');
ok(scalar @{ body(as($bob, GET => '/api/events/public')) } >= 1, 'public');

my $now = time;
is(scalar(grep { ($_->{dfid} // '') eq $dfid }
          @{ body(as($alice, GET => "/api/events/timeline?start_date="
                                 . ($now - 600) . "&end_date="
                                 . ($now + 600))) }),
   2, 'timeline: in the range');
is(scalar @{ body(as($alice, GET => "/api/events/timeline?end_date="
                               . ($now - 600))) }, 0,
   'timeline: before the range');
is(as($alice, GET => '/api/events/timeline?start_date=yesterday')->{status},
   400, 'a bad time: 400');
is(as($alice, GET => "/api/events/timeline?start_date=$now&end_date=1")
       ->{status}, 400, 'start after end: 400');
is(scalar @{ body(as($alice, GET => "/api/events/item/$dfid?limit=1")) }, 1,
   'limit');

# metadata merge recomputes the hash

$res = as($alice, POST => "/api/events/$pub->{event_id}/metadata",
          { step => 2, note => 'checked' });
is($res->{status}, 200, 'metadata merged');
is_deeply(body($res)->{metadata}, { step => 2, note => 'checked' },
          'keys overwritten and added');
isnt(body($res)->{content_hash}, $pub->{content_hash}, 'a new hash');
is(as($bob, POST => "/api/events/$pub->{event_id}/metadata", { x => 1 })
       ->{status}, 404, 'another user\'s event: 404');
is(as($alice, POST => "/api/events/$pub->{event_id}/metadata", '[1]')
       ->{status}, 400, 'a body that is not an object: 400');

# local events

$res = as($alice, POST => '/api/events/local',
          { event_type => 'created', visibility => 'private',
            metadata => { draft => JSON::PP::true } });
is($res->{status}, 200, 'a local event');
my $local = body($res);
is($local->{is_local}, JSON::PP::true, 'is_local');
like($local->{dfid} // '', qr/^LOCAL-EVENT-/, 'a LOCAL-EVENT- id');
is(as($alice, GET => "/api/events/local/$local->{local_event_id}")->{status},
   200, 'get it by its local id');
is(as($bob, GET => "/api/events/local/$local->{local_event_id}")->{status},
   404, 'not for another user');

# a read-only key reads, does not write

$res = as($alice, POST => '/api/api-keys',
          { name => 'ro', organization_type => 'Producer' });
my $key = body($res)->{api_key};
is(http($ng, POST => '/api/events',
        headers => { 'X-API-Key' => $key,
                     'Content-Type' => 'application/json' },
        body => $json->encode({ dfid => $dfid, event_type => 'created',
                                visibility => 'public' }))->{status}, 403,
   'a read-only key cannot create an event');
is(http($ng, GET => "/api/events/item/$dfid",
        headers => { 'X-API-Key' => $key })->{status}, 200,
   'but reads');
is(http($ng, GET => '/api/events/public')->{status}, 401, 'no credentials');

unlike($ng->log, qr/\[(alert|crit|emerg)\]/, 'no alert');
stop_nginx($ng);

done_testing();
