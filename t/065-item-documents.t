# Render on write: an item's JSON is stored with it (items.doc) and reads
# return it.  A read is byte for byte what PostgreSQL renders afresh; a
# write that does not change the item leaves its bytes alone; every write
# that does changes them, whichever route (or plain SQL) made it; two
# concurrent writes to one item leave a document with both.  No
# defarm_cache here: every GET is a read of the stored document.

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use DefarmTest;

my (undef, $secret_file) = jwt_secret();

my $ng = start_nginx(
    name   => 'item-docs',
    http   => db_config(size => 4) . "
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;",
    server => '
        location / {
            defarm_api on;
        }');

sub body { json_body(@_) }
sub as { api_as($ng, @_) }

my $alice = api_user($ng, "t065_alice_$$");
my $bob = api_user($ng, "t065_bob_$$");
my $uuid = '0b6f8f9e-1d2c-4c3b-9a8e-7f6d5c4b3a21';

# doc($dfid): the stored document; fresh($dfid): rendered now
sub doc   { sql("SELECT doc FROM items WHERE dfid = '$_[0]'") }
sub fresh { sql("SELECT defarm_item_json('$_[0]')::text") }

sub get_bytes {
    my ($dfid, $tag) = @_;
    my $res = as($alice, GET => "/api/items/$dfid");
    is($res->{status}, 200, "$tag: GET 200");
    return $res->{body};
}

# check($dfid, $tag, $before): the stored document is the fresh one and is
# what GET answers; with $before, it changed
sub check {
    my ($dfid, $tag, $before) = @_;
    my $doc = doc($dfid);
    is($doc, fresh($dfid), "$tag: the stored document is the item now");
    is(get_bytes($dfid, $tag), $doc, "$tag: GET answers it");
    isnt($doc, $before, "$tag: and it changed") if defined $before;
    return $doc;
}

sub item {
    my ($who, $ids, $data) = @_;
    my $res = as($who, POST => '/api/items',
                 { identifiers => $ids, source_entry => $uuid,
                   defined $data ? (enriched_data => $data) : () });
    return body($res)->{dfid};
}

my $d1 = item($alice, [ { key => 'lot', value => "a-$$" } ], { n => 1 });
ok($d1, 'an item');
my $doc = check($d1, 'create');

# the answer to the create is the document too
my $res = as($alice, POST => '/api/items',
             { identifiers => [ { key => 'lot', value => "a-$$" } ],
               source_entry => $uuid });
$doc = check($d1, 'entity resolution, nothing new', undef);

# writes that leave the item as it is: its bytes stay

my $d2 = item($alice, [ { key => 'lot', value => "b-$$" } ]);
$res = as($alice, POST => "/api/items/$d1/share",
          { recipient_user_id => $bob->{id} });
is($res->{status}, 201, 'shared with bob');
$res = as($alice, POST => '/api/events',
          { dfid => $d1, event_type => 'updated', visibility => 'private',
            metadata => { k => 'v' } });
ok($res->{status} == 200 || $res->{status} == 201, 'an event on it');
sql("UPDATE items SET confidence_score = confidence_score WHERE dfid = '$d1'");
is(get_bytes($d1, 'untouched'), $doc,
   'another item, a share, an event, a no-op UPDATE: the same bytes');
is(doc($d1), $doc, '... and the same stored document');

# every write that changes it

sleep 1;    # last_modified is in seconds: a change shows in the bytes
$res = as($alice, PUT => "/api/items/$d1", { enriched_data => { n => 2 } });
is($res->{status}, 200, 'enrich');
is($res->{body}, doc($d1), 'enrich answers the stored document');
$doc = check($d1, 'enrich', $doc);

$res = as($alice, PUT => "/api/items/$d1",
          { identifiers => [ { key => 'tag', value => "t-$$" } ] });
is($res->{status}, 200, 'an identifier added');
$doc = check($d1, 'identifier added', $doc);
like($doc, qr/"t-$$"/, '... and it is in the document');

$res = as($alice, POST => '/api/items',
          { identifiers => [ { key => 'lot', value => "a-$$" },
                             { key => 'ear', value => "e-$$" } ],
            source_entry => '1b6f8f9e-1d2c-4c3b-9a8e-7f6d5c4b3a21' });
is($res->{status}, 200, 'entity resolution adds an identifier');
$doc = check($d1, 'entity resolution', $doc);
like($doc, qr/"e-$$"/, '... in the document');

sql("UPDATE item_identifiers SET scope = 'org' "
    . "WHERE dfid = '$d1' AND key = 'ear'");
$doc = check($d1, 'an identifier updated in SQL', $doc);

sql("DELETE FROM item_identifiers WHERE dfid = '$d1' AND key = 'ear'");
$doc = check($d1, 'an identifier deleted in SQL', $doc);
unlike($doc, qr/"e-$$"/, '... gone from the document');

sql("UPDATE items SET enriched_data = '{\"sql\": true}' WHERE dfid = '$d1'");
$doc = check($d1, 'an item updated in SQL', $doc);

my $d2doc = doc($d2);
$res = as($alice, POST => "/api/items/$d1/merge", qq{"$d2"});
is($res->{status}, 200, 'merge');
$doc = check($d1, 'merge, the primary', $doc);
like($doc, qr/"b-$$"/, "... with the secondary's identifier");
check($d2, 'merge, the secondary', $d2doc);
like(doc($d2), qr/"status": "Merged"/, '... Merged');

$res = as($alice, POST => "/api/items/$d1/split",
          { identifiers_for_new_item => [ { key => 'tag', value => "t-$$" } ] });
is($res->{status}, 200, 'split');
$doc = check($d1, 'split, the original', $doc);
unlike($doc, qr/"t-$$"/, '... without the moved identifier');
my $d3 = body($res)->{new_item}{dfid};
ok($d3, 'split, a new item');
check($d3, 'split, the new item');
like(doc($d3), qr/"t-$$"/, '... with it');

$res = as($alice, PUT => "/api/items/$d3/deprecate");
is($res->{status}, 200, 'deprecate');
check($d3, 'deprecate', doc($d3) =~ s/Deprecated/x/r);
like(doc($d3), qr/"status": "Deprecated"/, '... Deprecated');

# lists: the stored documents, joined as jsonb_agg() printed them

sub old_list {
    my ($where) = @_;
    return sql("SELECT coalesce(jsonb_agg(defarm_item_json(dfid) "
               . "ORDER BY created_at DESC, dfid), '[]')::text "
               . "FROM items WHERE $where");
}

$res = as($alice, GET => '/api/items?limit=100');
is($res->{status}, 200, 'list');
is($res->{body}, old_list("owner_id = '$alice->{id}'"),
   'the list: byte for byte the aggregate of fresh renderings');

$res = as($bob, GET => '/api/items');
is($res->{body}, '[]', 'an empty list: []');

$res = as($bob, GET => "/api/items/shared-to/$bob->{id}");
is($res->{status}, 200, 'shared-to');
is($res->{body}, '[' . doc($d1) . ']', "shared-to: the shared item's document");

# another user's item: still a 404, the document is not shown
$res = as($bob, GET => "/api/items/$d1");
is($res->{status}, 404, "another user's item: 404");
unlike($res->{body}, qr/identifiers/, '... without the document');

# concurrent writes to one item: the document has them all

my $d4 = item($alice, [ { key => 'herd', value => "h-$$" } ]);
my @bg = map {
    http_bg($ng, PUT => "/api/items/$d4",
            headers => { 'Content-Type' => 'application/json',
                         Authorization => "Bearer $alice->{token}" },
            body => qq({"identifiers":[{"key":"c","value":"c-$$-$_"}],)
                  . qq("enriched_data":{"k$_":$_}}))
} 1 .. 12;
my @st = map { http_wait($_)->{status} // 'none' } @bg;
is(join(' ', @st), join(' ', (200) x 12), 'twelve concurrent enrichments: 200');
$doc = check($d4, 'after concurrent writes');
is(scalar(() = $doc =~ /"c-$$-\d+"/g), 12, '... all twelve identifiers');
is(scalar(() = $doc =~ /"k\d+": \d+/g), 12, '... all twelve data keys');

# no item anywhere has a stale document
is(stale_documents(), 0, 'no stale document in the database');

# defarm_item_cache off: auth records cached, items read from PostgreSQL

my $nc = start_nginx(
    name   => 'item-docs-nocache',
    http   => db_config(size => 2) . "
    defarm_cache zone=item_docs:4m ttl=1h;
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;",
    server => '
        defarm_item_cache off;
        location / {
            defarm_api on;
            add_header X-Cache $defarm_cache always;
        }');

for my $n (1 .. 2) {
    $res = api_as($nc, $alice, GET => "/api/items/$d4");
    is($res->{status}, 200, "item cache off, GET $n: 200");
    is($res->{headers}{'x-cache'}, 'BYPASS', "... X-Cache: BYPASS");
    is($res->{body}, doc($d4), '... the stored document');
}
sql("UPDATE items SET enriched_data = '{\"direct\": 1}' WHERE dfid = '$d4'");
like(api_as($nc, $alice, GET => "/api/items/$d4")->{body}, qr/"direct": 1/,
     'a change made in SQL alone is read at once');
stop_nginx($nc);

unlike($ng->log, qr/\[(alert|crit|emerg)\]/, 'no alert in error.log');
stop_nginx($ng);

done_testing();
