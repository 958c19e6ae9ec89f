# Snapshots (sql/042): every change to an item's stored document and to a
# circuit's membership of items leaves a version, hash-chained to the one
# before, written in the transaction of the change (one per transaction).
# The chains are recomputed here from the JSON alone, as a third party
# would (docs/api.md "## Snapshots" gives the hash input); a row changed
# in the database breaks the chain, and the verify routes say where.  Who
# may read: the item's readers, the circuit's members; the public routes
# serve only items published in a circuit the public may see.  Bad ids
# 400, unknown and other users' 404, no token 401.

use strict;
use warnings;
use utf8;
use Test::More;
use JSON::PP ();
use Digest::SHA qw(sha256_hex);
use Encode qw(encode_utf8);
use DefarmTest;

my (undef, $secret_file) = jwt_secret();

my $ng = start_nginx(
    name   => 'snapshots',
    http   => db_config(size => 4) . "
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;",
    server => '
        location / {
            defarm_api on;
        }');

sub body { json_body(@_) }
sub as { api_as($ng, @_) }
sub user { api_user($ng, "t098_$_[0]_$$") }

my $JSON = JSON::PP->new->utf8->canonical;
binmode Test::More->builder->$_, ':encoding(UTF-8)' for qw(output failure_output);
my $uuid = '0b6f8f9e-1d2c-4c3b-9a8e-7f6d5c4b3a21';
my ($owner, $member, $other, $admin) = map { user($_) } qw(owner member other admin);
sql("UPDATE users SET is_admin = true WHERE id = '$admin->{id}'");

sub item {
    my ($who, $v, $data) = @_;
    return body(as($who, POST => '/api/items',
                   { identifiers => [ { key => 'lot', value => "$v-$$" } ],
                     enriched_data => $data // { tag => $v },
                     source_entry => $uuid }))->{dfid};
}

# the hash of a snapshot from its JSON, as docs/api.md says
sub snapshot_hash {
    my ($s) = @_;
    my $subject = $s->{kind} eq 'item' ? $s->{dfid} : $s->{circuit_id};
    return sha256_hex(encode_utf8(join "\n", 'defarm-snapshot/1', $s->{kind},
                                  $subject, $s->{snapshot_id}, $s->{version},
                                  $s->{parent_hash} // '', $s->{created_at},
                                  $s->{state_text}));
}

# a whole chain, oldest first: '' when it holds, else where it breaks
sub chain_break {
    my (@chain) = @_;
    my $prev;
    for my $i (0 .. $#chain) {
        my $s = $chain[$i];
        return "version $s->{version}: not " . ($i + 1) if $s->{version} != $i + 1;
        return "version $s->{version}: parent"
            if ($s->{parent_hash} // '') ne ($prev // '');
        return "version $s->{version}: hash" if snapshot_hash($s) ne $s->{hash};
        my $parsed = eval { JSON::PP->new->decode($s->{state_text}) };
        return "version $s->{version}: state_text is not state"
            unless $parsed && $JSON->encode($parsed) eq $JSON->encode($s->{state});
        $prev = $s->{hash};
    }
    return '';
}

sub all_snapshots {
    my ($who, $path) = @_;
    my $b = body(as($who, GET => "$path?limit=500"));
    return reverse @{ $b->{snapshots} // [] };
}

# ------------------------------------------------------------ an item

my $dfid = item($owner, 'one', { origin => 'café ✓', weight => 10 });
like($dfid // '', qr/^DFID-/, 'an item');

my $res = as($owner, GET => "/items/$dfid/snapshots");
is($res->{status}, 200, 'list: 200');
my $b = body($res);
is($b->{total}, 1, '... a create leaves one version (its two renderings in one transaction)');
is($b->{snapshots}[0]{version}, 1, '... version 1');
is($b->{snapshots}[0]{parent_hash}, undef, '... no parent');
is($b->{snapshots}[0]{state}{identifiers}[0]{value}, "one-$$", '... with its identifiers');
is($b->{snapshots}[0]{state}{enriched_data}{origin}, 'café ✓', '... and its data, UTF-8');

as($owner, PUT => "/api/items/$dfid", { enriched_data => { weight => 11 } });
as($owner, PUT => "/api/items/$dfid",
   { identifiers => [ { key => 'batch', value => "b-$$" } ], enriched_data => { weight => 12 } });

my @chain = all_snapshots($owner, "/items/$dfid/snapshots");
is(scalar @chain, 3, 'two enrichments: three versions');
is(chain_break(@chain), '', 'the chain recomputes from the JSON alone');
is($chain[2]{state}{enriched_data}{weight}, 12, '... the last state has the last data');
is_deeply($chain[2]{state}, JSON::PP->new->utf8->decode(sql("SELECT doc FROM items WHERE dfid = '$dfid'")),
          '... and is the stored document');
is($chain[0]{state}{enriched_data}{weight}, 10, '... the first the first');

$res = as($owner, GET => "/items/$dfid/snapshots/latest");
is($res->{status}, 200, 'latest: 200');
is(body($res)->{data}{hash}, $chain[2]{hash}, '... the head');

$res = as($owner, GET => "/items/$dfid/snapshots/$chain[0]{snapshot_id}");
is($res->{status}, 200, 'by id: 200');
is_deeply(body($res)->{data}, $chain[0], '... version 1 as listed');

$b = body(as($owner, GET => "/items/$dfid/snapshots?limit=1&offset=1"));
is($b->{snapshots}[0]{version}, 2, 'a page: newest first, offset 1 is version 2');
is($b->{count}, 1, '... count 1');
is($b->{total}, 3, '... total 3');
for my $q ('limit=0', 'limit=501', 'limit=x', 'offset=-1', 'offset=1.5') {
    is_err(as($owner, GET => "/items/$dfid/snapshots?$q"), 400, qr/limit|offset/, "list ?$q");
}

$res = as($owner, GET => "/items/$dfid/snapshots/verify");
is($res->{status}, 200, 'verify: 200');
$b = body($res)->{data};
ok($b->{valid}, '... valid');
is($b->{versions}, 3, '... three versions');
is($b->{head_hash}, $chain[2]{hash}, '... the head');
ok($b->{matches_current}, '... which is the item now');

# a write that renders the same document stores nothing
sql("UPDATE items SET confidence_score = 0.5 WHERE dfid = '$dfid'");
is(body(as($owner, GET => "/items/$dfid/snapshots"))->{total}, 3,
   'a change outside the document: no version');

# -------------------------------------------------- a changed row breaks it

my $v2 = $chain[1];
sql("UPDATE item_snapshots SET state = replace(state, '\"weight\": 11', '\"weight\": 99') "
    . "WHERE dfid = '$dfid' AND version = 2");
my @bad = all_snapshots($owner, "/items/$dfid/snapshots");
is($bad[1]{state}{enriched_data}{weight}, 99, 'a state changed in the database');
is(chain_break(@bad), 'version 2: hash', '... breaks the recomputed chain at version 2');
$b = body(as($owner, GET => "/items/$dfid/snapshots/verify"))->{data};
ok(!$b->{valid}, '... verify: not valid');
is($b->{broken_at_version}, 2, '... broken at version 2');
is($b->{snapshot_id}, $v2->{snapshot_id}, '... that snapshot');
like($b->{reason}, qr/hash/, '... its hash');
is($b->{versions}, 1, '... one good version before it');

# its hash recomputed too: the next version's parent no longer matches
sql("UPDATE item_snapshots SET hash = defarm_snapshot_hash('item', dfid, snapshot_id, "
    . "version, parent_hash, created_at, state) WHERE dfid = '$dfid' AND version = 2");
@bad = all_snapshots($owner, "/items/$dfid/snapshots");
is(chain_break(@bad), 'version 3: parent', 'rehashed: the chain breaks at version 3');
$b = body(as($owner, GET => "/items/$dfid/snapshots/verify"))->{data};
is($b->{broken_at_version}, 3, '... verify: at version 3');
like($b->{reason}, qr/parent/, '... its parent');

# a version deleted
sql("UPDATE item_snapshots SET state = '$v2->{state_text}', hash = '$v2->{hash}' "
    . "WHERE dfid = '$dfid' AND version = 2");
ok(body(as($owner, GET => "/items/$dfid/snapshots/verify"))->{data}{valid}, 'put back: valid');
sql("DELETE FROM item_snapshots WHERE dfid = '$dfid' AND version = 2");
$b = body(as($owner, GET => "/items/$dfid/snapshots/verify"))->{data};
is($b->{broken_at_version}, 3, 'a version deleted: broken at the next');
like($b->{reason}, qr/missing/, '... a missing version');

# ------------------------------------------------------- who may read

my $mine = item($owner, 'two');
my $circuit = body(as($owner, POST => '/api/circuits', { name => 'Snap' }))->{circuit_id};
as($owner, POST => "/api/circuits/$circuit/members", { member_id => $member->{id}, role => 'member' });

for my $p ("/items/$mine/snapshots", "/items/$mine/snapshots/latest",
           "/items/$mine/snapshots/verify") {
    is_err(as($other, GET => $p), 404, qr/not found/i, "another user's item, $p");
    is_err(as($member, GET => $p), 404, qr/not found/i, "a member, the item not in the circuit, $p");
    is(http($ng, GET => $p)->{status}, 401, "no token, $p: 401");
    is(as($admin, GET => $p)->{status}, 200, "an administrator, $p: 200");
}
my $first = body(as($owner, GET => "/items/$mine/snapshots/latest"))->{data}{snapshot_id};
is_err(as($other, GET => "/items/$mine/snapshots/$first"), 404, qr/not found/i,
       "another user's snapshot");
is_err(as($owner, GET => "/items/$dfid/snapshots/$first"), 404, qr/Snapshot not found/,
       "a snapshot of another item");
is_err(as($owner, GET => "/items/$mine/snapshots/$uuid"), 404, qr/Snapshot not found/,
       'an unknown snapshot');
is_err(as($owner, GET => "/items/$mine/snapshots/not-a-uuid"), 400, qr/snapshot ID/,
       'a malformed snapshot id');
is_err(as($owner, GET => '/items/DFID-20240101-000001-0/snapshots'), 400, qr/DFID/,
       'a DFID with a wrong check');
is_err(as($owner, GET => '/items/nope/snapshots/latest'), 400, qr/DFID/, 'not a DFID');
my $unknown = sql("SELECT 'DFID-20200101-999999-' || defarm_dfid_check('20200101999999')");
is_err(as($owner, GET => "/items/$unknown/snapshots"), 404, qr/not found/i, 'an unknown DFID');

# -------------------------------------------------------------- a circuit

my ($a, $c, $d) = map { item($owner, "c$_") } 1 .. 3;
my $base = "/api/circuits/$circuit";
is(as($owner, POST => "$base/push/$a")->{status}, 200, 'push a');
is(as($owner, POST => "$base/push/$mine")->{status}, 200, 'push the second item');
$res = as($owner, POST => "$base/push/batch", { items => [ { dfid => $c }, { dfid => $d } ] });
is($res->{status}, 200, 'a batch of two');
is(as($owner, POST => "$base/pull/$a")->{status}, 200, 'pull a');

my @cc = all_snapshots($owner, "/circuits/$circuit/snapshots");
is(scalar @cc, 4, 'four membership changes, four versions (the batch is one)');
is(chain_break(@cc), '', 'the circuit chain recomputes');
is_deeply($cc[0]{state}, { added => [$a], removed => [], item_count => 1 }, '... version 1: a added');
is_deeply($cc[2]{state}, { added => [ sort $c, $d ], removed => [], item_count => 4 },
          '... version 3: the batch');
is_deeply($cc[3]{state}, { added => [], removed => [$a], item_count => 3 }, '... version 4: a removed');

$res = as($member, GET => "/circuits/$circuit/snapshots/latest");
is($res->{status}, 200, 'latest, a member: 200');
$b = body($res)->{data};
is($b->{version}, 4, '... version 4');
is_deeply($b->{items}, [ sort $mine, $c, $d ], '... the items now, the chain replayed');
is_deeply($b->{items}, [ split /\n/, sql("SELECT dfid FROM circuit_items WHERE circuit_id = "
                                         . "'$circuit' ORDER BY dfid") ], '... as circuit_items');
$b = body(as($member, GET => "/circuits/$circuit/snapshots/$cc[1]{snapshot_id}"))->{data};
is_deeply($b->{items}, [ sort $a, $mine ], 'by id: version 2 had a and the second item');

# the member may read the item now that it is in the circuit
is(as($member, GET => "/items/$mine/snapshots")->{status}, 200, "a member reads a circuit item's snapshots");

$b = body(as($owner, GET => "/circuits/$circuit/snapshots/verify"))->{data};
ok($b->{valid}, 'verify: valid');
is($b->{versions}, 4, '... four versions');
ok($b->{matches_current}, '... replayed, the circuit now');

sql("UPDATE circuit_snapshots SET state = replace(state, '\"item_count\": 4', '\"item_count\": 5') "
    . "WHERE circuit_id = '$circuit' AND version = 3");
is(chain_break(all_snapshots($owner, "/circuits/$circuit/snapshots")), 'version 3: hash',
   'a circuit row changed: the recomputed chain breaks at 3');
$b = body(as($owner, GET => "/circuits/$circuit/snapshots/verify"))->{data};
is($b->{broken_at_version}, 3, '... verify says 3');

for my $p ("/circuits/$circuit/snapshots", "/circuits/$circuit/snapshots/latest",
           "/circuits/$circuit/snapshots/verify", "/circuits/$circuit/snapshots/$cc[0]{snapshot_id}") {
    is_err(as($other, GET => $p), 404, qr/not found/i, "a non-member, $p");
    is(http($ng, GET => $p)->{status}, 401, "no token, $p: 401");
}
is_err(as($owner, GET => "/circuits/$uuid/snapshots"), 404, qr/not found/i, 'an unknown circuit');
is_err(as($owner, GET => '/circuits/nope/snapshots/latest'), 400, qr/circuit ID/, 'a malformed circuit id');
is_err(as($owner, GET => "/circuits/$circuit/snapshots/zzz"), 400, qr/snapshot ID/, 'a malformed snapshot id');
is_err(as($owner, GET => "/circuits/$circuit/snapshots/$uuid"), 404, qr/Snapshot not found/,
       'an unknown snapshot');
is_err(as($owner, GET => "/circuits/$circuit/snapshots?limit=0"), 400, qr/limit/, 'limit=0');
my $empty = body(as($owner, POST => '/api/circuits', { name => 'Empty' }))->{circuit_id};
is_err(as($owner, GET => "/circuits/$empty/snapshots/latest"), 404, qr/No snapshots/,
       'a circuit never changed: no latest');
is(body(as($owner, GET => "/circuits/$empty/snapshots"))->{total}, 0, '... an empty list');

# ------------------------------------------- concurrent changes, pending

# A change only tries the circuit's lock: while another session holds it,
# pushes do not wait, their rows are pending (no version, no hash), and
# the next holder chains them in their order: a read route (which waits
# for the lock) or the next change.
my $cw = body(as($owner, POST => '/api/circuits', { name => 'Concurrent' }))->{circuit_id};
my ($x, $y, $z, $w) = map { item($owner, "cw$_") } 1 .. 4;
is(as($owner, POST => "/api/circuits/$cw/push/$x")->{status}, 200, 'concurrent: x pushed, the lock free');

my $key = "defarm_circuit_snapshot_key('$cw')";
my $pending = "SELECT count(*) FROM circuit_snapshots WHERE circuit_id = '$cw' AND version IS NULL";
sub hold {
    open my $h, '|-', 'psql', '-X', '-q', '-h', $ENV{TEST_NGINX_PG_HOST}, '-p', $ENV{TEST_NGINX_PG_PORT},
        '-U', $ENV{TEST_NGINX_PG_USER}, '-d', $ENV{TEST_NGINX_PG_DATABASE}
        or die "psql: $!";
    $h->autoflush(1);
    print $h "SELECT pg_advisory_lock($key);\n";
    wait_until(sub { sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                         . "AND ((classid::bigint << 32) | objid::bigint) = $key") > 0 }, 10);
    return $h;
}
sub release { my ($h) = @_; print $h "SELECT pg_advisory_unlock($key);\n"; close $h }

my $holder = hold();
is(as($owner, POST => "/api/circuits/$cw/push/$y")->{status}, 200,
   'the lock held by another session: a push goes through');
is(as($owner, POST => "/api/circuits/$cw/push/$z")->{status}, 200, '... and another');
is(sql($pending), 2, '... both pending');
is(sql("SELECT count(*) FROM circuit_snapshots WHERE circuit_id = '$cw' AND version IS NULL "
       . "AND hash IS NULL AND parent_hash IS NULL"), 2, '... without version or hash');
is(sql("SELECT count(*) FROM circuit_items WHERE circuit_id = '$cw'"), 3, '... and in the circuit');
is(sql("BEGIN READ ONLY; SELECT (defarm_circuit_snapshots('$owner->{id}', '$cw', '{}', NULL)).body::jsonb "
       . "->> 'total'; COMMIT;"), 1, 'a read-only transaction reads the chain as it is');
is(sql($pending), 2, '... and chains nothing');

my $bg = http_bg($ng, GET => "/circuits/$cw/snapshots/latest",
                 headers => { Authorization => "Bearer $owner->{token}" });
ok(wait_until(sub { sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'") > 0 }, 10),
   'a read route waits for the lock');
release($holder);
$res = http_wait($bg);
is($res->{status}, 200, '... released: 200');
$b = body($res)->{data};
is($b->{version}, 3, '... the two pending rows chained: version 3');
is_deeply($b->{items}, [ sort $x, $y, $z ], '... with the three items');
is(sql($pending), 0, '... none pending');

$holder = hold();
is(as($owner, POST => "/api/circuits/$cw/pull/$y")->{status}, 200, 'held again: a pull goes through');
is(sql($pending), 1, '... pending');
release($holder);
is(as($owner, POST => "/api/circuits/$cw/push/$w")->{status}, 200, 'released: the next push');
is(sql($pending), 0, '... chains the pending pull first');

my @cwc = all_snapshots($owner, "/circuits/$cw/snapshots");
is(scalar @cwc, 5, 'five versions');
is(chain_break(@cwc), '', '... the chain recomputes from the JSON');
is_deeply([ map { $_->{state} } @cwc[1 .. 4] ],
          [ { added => [$y], removed => [], item_count => 2 },
            { added => [$z], removed => [], item_count => 3 },
            { added => [], removed => [$y], item_count => 2 },
            { added => [$w], removed => [], item_count => 3 } ],
          '... in the order of their changes, each with its item_count');
$b = body(as($owner, GET => "/circuits/$cw/snapshots/verify"))->{data};
ok($b->{valid}, '... verify: valid');
is($b->{versions}, 5, '... five versions');
ok($b->{matches_current}, '... replayed, the circuit now');

# ----------------------------------------------------------------- public

my $pub = body(as($owner, POST => '/api/circuits',
                  { name => 'Public', allow_public_visibility => JSON::PP::true }))->{circuit_id};
is(as($owner, POST => "/api/circuits/$pub/push/$c")->{status}, 200, 'pushed to a public circuit');
my $pp = '/api/public/snapshots/items';

is_err(http($ng, GET => "$pp/$c/snapshots"), 404, qr/not public/, 'public: not published yet');
is_err(http($ng, GET => "$pp/$mine/snapshots/latest"), 404, qr/not public/,
       'public: an item of a private circuit');
$res = as($owner, PUT => "/api/circuits/$pub/public-settings",
          { public_settings => { access_mode => 'public', published_items => [$c] } });
is($res->{status}, 200, 'published');

$res = http($ng, GET => "$pp/$c/snapshots");
is($res->{status}, 200, 'public list: 200, no token');
my @pc = reverse @{ body($res)->{snapshots} };
is(chain_break(@pc), '', '... the chain recomputes');
$res = http($ng, GET => "$pp/$c/snapshots/latest");
is($res->{status}, 200, 'public latest: 200');
is(body($res)->{data}{hash}, $pc[-1]{hash}, '... the head');
is_err(http($ng, GET => "$pp/$d/snapshots"), 404, qr/not public/,
       'public: an item of the private circuit only');
is_err(http($ng, GET => "$pp/nope/snapshots"), 400, qr/DFID/, 'public: not a DFID');
is_err(http($ng, GET => "$pp/$c/snapshots?limit=x"), 400, qr/limit/, 'public: a bad limit');

$res = as($owner, PUT => "/api/circuits/$pub/public-settings",
          { public_settings => { access_mode => 'scheduled',
                                 scheduled_date => '2999-01-01T00:00:00Z', published_items => [$c] } });
is_err(http($ng, GET => "$pp/$c/snapshots/latest"), 404, qr/not public/,
       'public: a circuit not yet accessible');

# -------------------------------------------------- every writer, in SQL

is(sql("SELECT count(*) FROM items i WHERE NOT EXISTS (SELECT 1 FROM item_snapshots s "
       . "WHERE s.dfid = i.dfid AND s.state = i.doc AND s.version = (SELECT max(version) "
       . "FROM item_snapshots t WHERE t.dfid = i.dfid))"), 0,
   "every item's head is its document now");

stop_nginx($ng);
done_testing();
