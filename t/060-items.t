# Items: create with entity resolution, get (cached, invalidated on every
# write), enrich, deprecate, delete, list with filters and pages, stats,
# identifier look-up; DFID and identifier validation; another user's item
# is a 404; a read-only key cannot write; two concurrent creates with one
# new identifier make one item.

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use DefarmTest;

my $json = JSON::PP->new->utf8->canonical;
my (undef, $secret_file) = jwt_secret();

my $ng = start_nginx(
    name   => 'items',
    http   => db_config(size => 4) . "
    defarm_cache zone=items:4m ttl=1h;
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;",
    server => '
        location / {
            defarm_api on;
            add_header X-Cache $defarm_cache always;
        }');

sub body { json_body(@_) }

sub user { api_user($ng, "t060_$_[0]_$$") }

my $alice = user('alice');
my $bob = user('bob');

sub as { api_as($ng, @_) }

my $uuid = '0b6f8f9e-1d2c-4c3b-9a8e-7f6d5c4b3a21';
my $sisbov = { namespace => 'bovino', key => 'sisbov',
               value => 'BR' . sprintf('%012d', $$), id_type => 'Canonical' };

# create

my $res = as($alice, POST => '/api/items',
             { identifiers => [ $sisbov ],
               enriched_data => { breed => 'nelore' },
               source_entry => $uuid });
is($res->{status}, 201, 'a new item: 201');
my $item = body($res);
like($item->{dfid} // '', qr/^DFID-\d{8}-\d{6,}-[0-9A-F]+$/, 'with a DFID');
is($item->{status}, 'Active', 'Active');
is_deeply($item->{enriched_data}, { breed => 'nelore' }, 'its data');
is_deeply($item->{source_entries}, [ $uuid ], 'its source entry');
is($item->{identifiers}[0]{id_type}, 'Canonical', 'a canonical identifier');
is($item->{identifiers}[0]{verified}, JSON::PP::false, 'not verified');
my $dfid = $item->{dfid};

# entity resolution: the same identifier enriches the same item

$res = as($alice, POST => '/api/items',
          { identifiers => [ $sisbov, { key => 'lot', value => 'L-1' } ],
            enriched_data => { weight => 300 },
            source_entry => '1b6f8f9e-1d2c-4c3b-9a8e-7f6d5c4b3a21' });
is($res->{status}, 200, 'a known identifier: 200, the existing item');
is(body($res)->{dfid}, $dfid, 'the same DFID');
is_deeply(body($res)->{enriched_data}, { breed => 'nelore', weight => 300 },
          'its data merged');
is(scalar @{ body($res)->{identifiers} }, 2, 'the new identifier added');
is(body($res)->{identifiers}[1]{scope}, 'user',
   'a contextual identifier, scope user by default');

# another user's identical identifier is their own item

$res = as($bob, POST => '/api/items',
          { identifiers => [ $sisbov ], source_entry => $uuid });
is($res->{status}, 201, 'bob\'s item with the same identifier is his own');
my $bob_dfid = body($res)->{dfid};
isnt($bob_dfid, $dfid, 'with another DFID');

# get, from PostgreSQL then from the cache

$res = as($alice, GET => "/api/items/$dfid");
is($res->{status}, 200, 'get');
is($res->{headers}{'x-cache'}, 'MISS', 'first from PostgreSQL');
$res = as($alice, GET => "/api/items/$dfid");
is($res->{headers}{'x-cache'}, 'HIT', 'then from the cache');
is(body($res)->{dfid}, $dfid, 'the item');

is(as($bob, GET => "/api/items/$dfid")->{status}, 404,
   'another user\'s item (cached): 404');
is(as($alice, GET => "/api/items/$bob_dfid")->{status}, 404,
   'another user\'s item (not cached): 404');
(my $unknown = $dfid) =~ s/-(\d+)-/'-' . ($1 + 999999) . '-'/e;

# an admin reads any item (from PostgreSQL, not another user's cache entry)

my $admin = user('admin');
sql("UPDATE users SET is_admin = true WHERE id = '$admin->{id}'");
is(as($admin, GET => "/api/items/$dfid")->{status}, 200,
   'an admin reads alice\'s item');
is(as($admin, GET => "/api/items/$dfid")->{status}, 200, 'again (cached)');
is(as($bob, GET => "/api/items/$dfid")->{status}, 404,
   'bob still does not');

# enrich invalidates

$res = as($alice, PUT => "/api/items/$dfid",
          { enriched_data => { weight => 320, vaccinated => JSON::PP::true } });
is($res->{status}, 200, 'enrich');
is(body($res)->{enriched_data}{weight}, 320, 'key overwritten');
is(scalar @{ body($res)->{source_entries} }, 3, 'a source entry appended');

$res = as($alice, GET => "/api/items/$dfid");
is($res->{headers}{'x-cache'}, 'MISS', 'the cached JSON was dropped');
is(body($res)->{enriched_data}{weight}, 320, 'GET after PUT: the new data');

$res = as($alice, PUT => "/api/items/$dfid",
          { identifiers => [ { key => 'rfid', value => '9820000000001',
                               id_type => 'canonical' } ] });
is($res->{status}, 200, 'identifiers added');
is(scalar @{ body($res)->{identifiers} }, 3, 'three now');

is(as($bob, PUT => "/api/items/$dfid", { enriched_data => { x => 1 } })
       ->{status}, 404, 'bob cannot enrich alice\'s item');

# validation

my @bad = (
    [ 'no identifiers', { identifiers => [], source_entry => $uuid },
      qr/non-empty array/ ],
    [ 'identifiers not an array', { identifiers => {}, source_entry => $uuid },
      qr/non-empty array/ ],
    [ 'blank key', { identifiers => [ { key => ' ', value => 'x' } ],
                     source_entry => $uuid }, qr/Identifier 1: "key"/ ],
    [ 'no value', { identifiers => [ { key => 'lot' } ],
                    source_entry => $uuid }, qr/Identifier 1: "value"/ ],
    [ 'bad namespace', { identifiers => [ { namespace => 'peixe',
                                            key => 'lot', value => '1' } ],
                         source_entry => $uuid }, qr/unknown namespace/ ],
    [ 'bad id_type', { identifiers => [ { key => 'lot', value => '1',
                                          id_type => 'Other' } ],
                       source_entry => $uuid }, qr/invalid id_type/ ],
    [ 'bad scope', { identifiers => [ { key => 'lot', value => '1',
                                        scope => 'world' } ],
                     source_entry => $uuid }, qr/invalid scope/ ],
    [ 'bad sisbov', { identifiers => [ { key => 'sisbov', value => 'BR12',
                                         id_type => 'Canonical' } ],
                      source_entry => $uuid },
      qr/a sisbov must be "BR" followed by 12 digits/ ],
    [ 'cpf all one digit', { identifiers => [ { key => 'cpf',
                                                value => '111.111.111-11',
                                                id_type => 'Canonical' } ],
                             source_entry => $uuid }, qr/a cpf must be/ ],
    [ 'short cnpj', { identifiers => [ { key => 'cnpj', value => '123',
                                         id_type => 'Canonical' } ],
                      source_entry => $uuid }, qr/a cnpj must be/ ],
    [ 'bad car', { identifiers => [ { key => 'car', value => 'XX-123456',
                                      id_type => 'Canonical' } ],
                   source_entry => $uuid }, qr/a car must be/ ],
    [ 'bad verification_date',
      { identifiers => [ { key => 'rfid', value => '98200000000011',
                           id_type => 'Canonical',
                           verification_date => 'yesterday' } ],
        source_entry => $uuid }, qr/verification_date/ ],
    [ 'null enriched value', { identifiers => [ { key => 'lot',
                                                  value => 'n' } ],
                               enriched_data => { a => undef },
                               source_entry => $uuid },
      qr/"enriched_data.a" must not be null/ ],
    [ 'enriched_data not an object',
      { identifiers => [ { key => 'lot', value => 'n' } ],
        enriched_data => [ 1 ], source_entry => $uuid },
      qr/"enriched_data" must be an object/ ],
    [ 'no source entry', { identifiers => [ { key => 'lot', value => 'n' } ] },
      qr/Invalid source entry UUID/ ],
    [ 'bad source entry', { identifiers => [ { key => 'lot', value => 'n' } ],
                            source_entry => 'nope' },
      qr/Invalid source entry UUID/ ],
);

for my $case (@bad) {
    my ($name, $body, $re) = @$case;
    $res = as($alice, POST => '/api/items', $body);
    is($res->{status}, 400, "$name: 400");
    like(body($res)->{error} // '', $re, "$name: says why");
}

is(as($alice, POST => '/api/items', '{"identifiers": [')->{status}, 400,
   'malformed JSON: 400');

for my $bad_dfid ('nope', 'DFID-2025-000001-F7BD', 'DFID-20250101-000001-0000',
                  'DFID-20250101-00001-F7BD', 'DFID-20250101-000001-F7BD-X')
{
    $res = as($alice, GET => "/api/items/$bad_dfid");
    is($res->{status}, 400, "GET $bad_dfid: 400");
    like(body($res)->{error} // '', qr/Invalid DFID/, 'says Invalid DFID');
}

is(as($alice, GET => '/api/items/DFID-20250101-000001-F7BD')->{status}, 404,
   'a valid DFID nobody has: 404');

is(as($alice, PUT => "/api/items/$dfid", {})->{status}, 400,
   'PUT with nothing to change: 400');

# list, filters, pages, stats, identifier look-up

for my $i (1 .. 5) {
    as($alice, POST => '/api/items',
       { identifiers => [ { key => 'lot', value => "page-$i-$$" } ],
         source_entry => $uuid });
}

$res = as($alice, GET => '/api/items?limit=2');
is($res->{status}, 200, 'list');
is(scalar @{ body($res) }, 2, 'limit=2: two items');
my $first = body($res)->[0]{dfid};
$res = as($alice, GET => '/api/items?limit=2&offset=2');
isnt(body($res)->[0]{dfid}, $first, 'offset=2: the next page');
is(scalar @{ body(as($alice, GET => '/api/items')) }, 6,
   'all of alice\'s items, none of bob\'s');
is(scalar @{ body(as($alice, GET => "/api/items/search?identifier_key=lot"
                                    . "&identifier_value=page-3-$$")) }, 1,
   'filtered by identifier');
is(as($alice, GET => '/api/items?limit=1000')->{status}, 400,
   'limit over 100: 400');
is(as($alice, GET => '/api/items?status=weird')->{status}, 400,
   'an unknown status: 400');

$res = as($alice, GET => "/api/items/identifier/sisbov/$sisbov->{value}");
is(scalar @{ body($res) }, 1, 'identifier look-up: alice\'s one item');

# deprecate and delete

$res = as($alice, PUT => "/api/items/$dfid/deprecate");
is(body($res)->{status}, 'Deprecated', 'deprecate returns the item');
is(body(as($alice, GET => "/api/items/$dfid"))->{status}, 'Deprecated',
   'GET after deprecate: Deprecated (cache dropped)');
is(scalar @{ body(as($alice, GET => '/api/items?status=deprecated')) }, 1,
   'status filter');

$res = as($alice, DELETE => "/api/items/$first");
is($res->{status}, 200, 'delete');
is(body($res)->{message}, 'Item deprecated successfully', 'soft');
is(as($bob, DELETE => "/api/items/$first")->{status}, 404,
   'bob cannot delete alice\'s item');

$res = as($alice, GET => '/api/items/stats');
is(body($res)->{total_items}, 6, 'stats: 6 items');
is(body($res)->{archived_items}, 2, 'stats: 2 deprecated');

# a read-only key reads but cannot write

$res = as($alice, POST => '/api/api-keys',
          { name => 'ro', organization_type => 'Producer' });
my $key = body($res)->{api_key};
is(http($ng, GET => "/api/items/$bob_dfid",
        headers => { 'X-API-Key' => $key })->{status}, 404,
   'by key: bob\'s item is 404 too');
$res = http($ng, POST => '/api/items',
            headers => { 'X-API-Key' => $key,
                         'Content-Type' => 'application/json' },
            body => $json->encode({ identifiers => [ { key => 'lot',
                                                      value => 'k' } ],
                                    source_entry => $uuid }));
is($res->{status}, 403, 'a read-only key cannot create: 403');
is(http($ng, GET => '/api/items/stats', headers => { 'X-API-Key' => $key })
       ->{status}, 200, 'but can read');
is(http($ng, GET => '/api/items')->{status}, 401, 'no credentials: 401');

# two concurrent creates with one new identifier: one item

my $lot = { key => 'lot', value => "race-$$" };
my @bg = map {
    http_bg($ng, POST => '/api/items',
            headers => { 'Content-Type' => 'application/json',
                         Authorization => "Bearer $alice->{token}" },
            body => $json->encode({ identifiers => [ $lot ],
                                    enriched_data => { n => $_ },
                                    source_entry => $uuid }))
} 1 .. 8;
my @races = map { http_wait($_) } @bg;
my %dfids = map { (body($_)->{dfid} // 'none') => 1 } @races;
is(scalar keys %dfids, 1, '8 concurrent creates with one identifier: '
                          . 'one item');
is(scalar(grep { $_->{status} == 201 } @races), 1, 'one 201');
is(scalar(grep { $_->{status} == 200 } @races), 7, 'seven 200 (resolved)');
is(sql("SELECT count(*) FROM item_identifiers WHERE key = 'lot' "
       . "AND value = 'race-$$'"), 1, 'one identifier row');

# merge

sub create {
    my ($who, $value, $data) = @_;
    my $res = as($who, POST => '/api/items',
                 { identifiers => [ { key => 'lot', value => "$value-$$" } ],
                   enriched_data => $data // {}, source_entry => $uuid });
    return body($res)->{dfid};
}

my $pa = create($alice, 'm1', { a => 1, shared => 'primary' });
my $pb = create($alice, 'm2', { b => 2, shared => 'secondary' });
as($alice, GET => "/api/items/$pb");                    # cached

$res = as($alice, POST => "/api/items/$pa/merge", qq{"$pb"});
is($res->{status}, 200, 'merge');
is_deeply(body($res)->{enriched_data},
          { a => 1, b => 2, shared => 'secondary' },
          'merged data, the secondary\'s keys win');
is(scalar @{ body($res)->{identifiers} }, 2, 'both identifiers');
is(body(as($alice, GET => "/api/items/$pb"))->{status}, 'Merged',
   'the secondary is Merged (its cached copy dropped)');
is(as($alice, POST => "/api/items/$pa/merge", qq{"$pb"})->{status}, 409,
   'merging a Merged item: 409');
is(as($alice, POST => "/api/items/$pa/merge", qq{"$pa"})->{status}, 400,
   'into itself: 400');
is(as($alice, POST => "/api/items/$pa/merge", '{"dfid": 1}')->{status}, 400,
   'a body that is not a string: 400');
is(as($alice, POST => "/api/items/$pa/merge", '"DFID-1"')->{status}, 400,
   'a malformed secondary DFID: 400');
is(as($alice, POST => "/api/items/$pa/merge", qq{"$bob_dfid"})->{status},
   404, 'bob\'s item as the secondary: 404');

# split

my $ps = create($alice, 's1');
as($alice, PUT => "/api/items/$ps",
   { identifiers => [ { key => 'lot', value => "s2-$$" } ] });

$res = as($alice, POST => "/api/items/$ps/split",
          { identifiers_for_new_item => [ { key => 'lot',
                                            value => "s2-$$" } ] });
is($res->{status}, 200, 'split');
is(body($res)->{original_item}{status}, 'Split', 'the original is Split');
is(scalar @{ body($res)->{original_item}{identifiers} }, 1,
   'it kept one identifier');
is(body($res)->{new_item}{status}, 'Active', 'the new item is Active');
is(body($res)->{new_item}{identifiers}[0]{value}, "s2-$$",
   'with the identifier moved');
isnt(body($res)->{new_item}{dfid}, $ps, 'and its own DFID');
is(as($alice, POST => "/api/items/$ps/split",
      { identifiers_for_new_item => [ { key => 'lot', value => "s1-$$" } ] })
       ->{status}, 409, 'splitting a Split item: 409');

my $pt = create($alice, 't1');
$res = as($alice, POST => "/api/items/$pt/split",
          { identifiers_for_new_item => [ { key => 'lot', value => 'nope' } ] });
is($res->{status}, 400, 'an identifier not on the item: 400');
like(body($res)->{error} // '', qr/Identifier 1 is not on the item/,
     'says which');
is(as($alice, POST => "/api/items/$pt/split", { identifiers_for_new_item => [] })
       ->{status}, 400, 'no identifiers: 400');

# concurrent merge and enrich: both land, whole

my $pc = create($alice, 'c1', { base => 1 });
my $pd = create($alice, 'c2', { other => 2 });
my $m = http_bg($ng, POST => "/api/items/$pc/merge",
                headers => { 'Content-Type' => 'application/json',
                             Authorization => "Bearer $alice->{token}" },
                body => qq{"$pd"});
my $e = http_bg($ng, PUT => "/api/items/$pc",
                headers => { 'Content-Type' => 'application/json',
                             Authorization => "Bearer $alice->{token}" },
                body => $json->encode({ enriched_data => { late => 3 } }));
is(http_wait($m)->{status}, 200, 'concurrent merge: 200');
is(http_wait($e)->{status}, 200, 'concurrent enrich: 200');
is_deeply(body(as($alice, GET => "/api/items/$pc"))->{enriched_data},
          { base => 1, other => 2, late => 3 },
          'the item has both changes');

# shares, persisted

my $sh = create($alice, 'sh1');
$res = as($alice, POST => "/api/items/$sh/share",
          { recipient_user_id => $bob->{id}, permissions => [ 'read' ] });
is($res->{status}, 201, 'share');
like(body($res)->{share_id} // '', qr/^SHARE-\d{14}-[0-9A-F]{8}$/,
     'a SHARE- id');
my $share_id = body($res)->{share_id};
$res = as($alice, GET => "/api/items/$sh/shared-with/$bob->{id}");
is(body($res)->{is_shared}, JSON::PP::true, 'shared-with: yes');
is(body($res)->{share_id}, $share_id, 'with its id');
is(body(as($alice, GET => "/api/items/$sh/shared-with/nobody"))->{is_shared},
   JSON::PP::false, 'shared-with someone else: no');
is(as($bob, GET => "/api/items/$sh/shared-with/$bob->{id}")->{status}, 404,
   'only the owner asks');
$res = as($bob, GET => "/api/items/shared-to/$bob->{id}");
is(scalar @{ body($res) }, 1, 'shared-to: bob sees the item');
is(body($res)->[0]{dfid}, $sh, 'that item');
is(as($alice, GET => "/api/items/shared-to/$bob->{id}")->{status}, 403,
   'not someone else\'s list');
is(as($alice, POST => "/api/items/$sh/share",
      { recipient_user_id => 'user-nobody' })->{status}, 404,
   'an unknown recipient: 404');
is(as($bob, POST => "/api/items/$sh/share",
      { recipient_user_id => $bob->{id} })->{status}, 404,
   'sharing another user\'s item: 404');
is(as($alice, POST => "/api/items/$sh/share",
      { recipient_user_id => $bob->{id}, permissions => [ 'a b' ] })
       ->{status}, 400, 'a bad permission name: 400');
is(as($alice, POST => "/api/items/$sh/share", {})->{status}, 400,
   'no recipient: 400');

# a permission spelt NULL is that name, never an SQL NULL in the array
$res = as($alice, POST => "/api/items/$sh/share",
          { recipient_user_id => $bob->{id},
            permissions => [ 'read', 'NULL', 'null' ] });
is($res->{status}, 201, 'share with a permission named NULL');
is_deeply(body($res)->{permissions}, [ 'read', 'NULL', 'null' ],
          'the names come back as strings');
is(sql("SELECT count(*) FROM item_shares WHERE dfid = '$sh' "
       . "AND array_position(permissions, NULL) IS NOT NULL"), 0,
   'no NULL element stored');

# values PostgreSQL would refuse are 400s, not 500s

my $vd = sub { { identifiers => [ { key => 'rfid', value => "98200000$$",
                                    id_type => 'Canonical',
                                    verification_date => $_[0] } ],
                 source_entry => $uuid } };
is(as($alice, POST => '/api/items', $vd->('2024-02-30T00:00:00Z'))->{status},
   400, 'February 30th: 400');
is(as($alice, POST => '/api/items', $vd->('2023-12-01T10:00:00+99:00'))
       ->{status}, 400, 'an offset of 99 hours: 400');
is(as($alice, POST => '/api/items', $vd->('2024-02-29T10:00:00.5+03:00'))
       ->{status}, 201, 'a leap day with a fraction and an offset: 201');
$res = as($alice, POST => '/api/items',
          '{"identifiers": [{"key": "lot", "value": "huge"}], '
          . qq{"source_entry": "$uuid", "enriched_data": {"n": 1e1000000}\}});
is($res->{status}, 400, 'a number PostgreSQL cannot hold: 400');
is(body($res)->{error}, 'A value is out of range or malformed', 'says so');
is(as($alice, GET => '/api/items/identifier/%FF/x')->{status}, 400,
   'bytes that are not UTF-8 in the path: 400');
$res = as($alice, POST => '/api/items',
          { identifiers => [ { key => 'cpf', value => 'x' . ("\x{e9}" x 255),
                               id_type => 'Canonical' } ],
            source_entry => $uuid });
is($res->{status}, 400, 'a long message cut inside a character: still 400');

# a merged item cannot be enriched: what it gained would be lost

is(as($alice, PUT => "/api/items/$pb", { enriched_data => { late => 1 } })
       ->{status}, 409, 'enriching a Merged item: 409');

# DFIDs past the sixth digit stay distinct and valid

sql("SELECT setval('dfid_seq', greatest(999998, "
    . "(SELECT last_value FROM dfid_seq)))");
my @long = map { create($alice, "long$_") } 1 .. 3;
is(scalar(keys %{{ map { ($_ // '') => 1 } @long }}), 3,
   'three DFIDs around 1000000, all distinct');
like($long[2] // '', qr/^DFID-\d{8}-\d{7}-/, 'a seven-digit sequence');
is(as($alice, GET => "/api/items/$long[2]")->{status}, 200,
   'and a valid DFID for GET');

# batch

my $known = create($alice, 'b0', { v => 0 });
as($alice, GET => "/api/items/$known");                 # cached

$res = as($alice, POST => '/api/items/batch', { items => [
    { identifiers => [ { key => 'lot', value => "b1-$$" } ],
      source_entry => $uuid },
    { identifiers => [ { key => 'sisbov', value => 'BR1',
                         id_type => 'Canonical' } ],
      source_entry => $uuid },
    { identifiers => [ { key => 'lot', value => "b0-$$" } ],
      enriched_data => { v => 1 }, source_entry => $uuid },
    'not an object',
    { identifiers => [ { key => 'lot', value => "b4-$$" } ] },
] });
is($res->{status}, 200, 'batch: 200');
is(body($res)->{success_count}, 2, 'two created or resolved');
is(body($res)->{failed_count}, 3, 'three refused');
my @r = @{ body($res)->{results} // [] };
is(scalar @r, 5, 'a result per item, in order');
ok($r[0]{success} && $r[0]{item}{dfid}, 'item 1 created');
like($r[1]{error} // '', qr/a sisbov must be/, 'item 2: the registry rule');
is($r[2]{item}{dfid}, $known, 'item 3 resolved to the known item');
like($r[3]{error} // '', qr/must be a JSON object/, 'item 4: not an object');
like($r[4]{error} // '', qr/Invalid source entry UUID/, 'item 5: no source');
is(body(as($alice, GET => "/api/items/$known"))->{enriched_data}{v}, 1,
   'the resolved item\'s cached JSON was dropped');

# a reason cut at its length limit never ends in half a character: the
# batch still answers per item (a broken byte would make PostgreSQL
# refuse the whole batch's JSON)
my $wide = "\x{e9}" x 300;      # the 400-byte limit falls inside one
$res = as($alice, POST => '/api/items/batch', { items => [
    { identifiers => [ { key => 'lot', value => "bu1-$$" } ],
      source_entry => $uuid },
    { identifiers => [ { key => 'lot', value => "bu2-$$" } ],
      enriched_data => { $wide => undef }, source_entry => $uuid },
] });
is($res->{status}, 200, 'a batch with a long multibyte reason: 200');
is(body($res)->{success_count}, 1, 'the valid item is created');
like(body($res)->{results}[1]{error} // '', qr/^"enriched_data\.\x{e9}+/,
     'the reason quotes the key, as valid UTF-8');
is(as($alice, POST => '/api/items/batch', { items => [] })->{status}, 400,
   'an empty batch: 400');
is(as($alice, POST => '/api/items/batch',
      { items => [ map { { identifiers => [] } } 1 .. 101 ] })->{status},
   400, 'more than 100: 400');
is(as($alice, POST => '/api/items/batch',
      { items => [ map { { identifiers => [ map { { key => 'k',
                                                    value => "$_" } } 1 .. 64 ],
                           source_entry => $uuid } } 1 .. 16 ] })->{status},
   400, 'more than 1000 identifiers in a batch: 400');

unlike($ng->log, qr/\[(alert|crit|emerg)\]/, 'no alert');
stop_nginx($ng);

is(stale_documents(), 0,
   'every write left its items\' stored JSON as they are now');

done_testing();
