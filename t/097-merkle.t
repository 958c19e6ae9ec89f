# Merkle trees: an item's root over its events and a circuit's over its
# items' roots, kept as events are written (a root changes when an event
# is added or changed, and not otherwise; what was maintained equals a
# rebuild from the rows, and a root computed here in Perl from the
# documented rules); inclusion proofs that scripts/verify_proof.py accepts
# and rejects once tampered with; verify-proof, sync-check; the public
# variants only for items published in a circuit the public may see; an
# item of 10,000 events.

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use Digest::SHA qw(sha256_hex);
use File::Temp ();
use Cwd ();
use File::Basename ();
use DefarmTest;

my (undef, $secret_file) = jwt_secret();
my $top = Cwd::abs_path(File::Basename::dirname(__FILE__) . '/..');
my $verifier = "$top/scripts/verify_proof.py";

my $ng = start_nginx(
    name   => 'merkle',
    http   => db_config(size => 4) . "
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;",
    server => '
        location / {
            defarm_api on;
        }');

sub body { json_body(@_) }
sub as { api_as($ng, @_) }
sub user { api_user($ng, "t097_$_[0]_$$") }

my $EMPTY = sha256_hex('EMPTY_NODE');
my $uuid = '0b6f8f9e-1d2c-4c3b-9a8e-7f6d5c4b3a21';
my $JSON = JSON::PP->new->utf8->canonical;

# the documented rules, on their own: sorted leaves, "left|right" in hex,
# an odd node paired with the empty node, one leaf its own root
sub perl_root {
    my @level = sort @_;
    return $EMPTY unless @level;
    while (@level > 1) {
        my @up;
        for (my $i = 0; $i < @level; $i += 2) {
            push @up, sha256_hex($level[$i] . '|' . ($level[$i + 1] // $EMPTY));
        }
        @level = @up;
    }
    return $level[0];
}

# the offline verifier's verdict: 0 holds, 1 does not, 2 bad input
sub offline {
    my ($proof, @root) = @_;
    my $f = File::Temp->new(SUFFIX => '.json');
    print $f (ref $proof ? $JSON->encode($proof) : $proof);
    close $f;
    my $out = `python3 $verifier merkle $f @root 2>&1`;
    return ($? >> 8, $out);
}

sub item {
    my ($who, $tag) = @_;
    return body(as($who, POST => '/api/items', { identifiers => [ { key => 'lot', value => "$tag-$$" } ],
                                                 source_entry => $uuid }))->{dfid};
}

sub event {
    my ($who, $dfid, $meta, $vis) = @_;
    return body(as($who, POST => '/api/events', { dfid => $dfid, event_type => 'updated',
                                                  visibility => $vis // 'public', metadata => $meta }));
}

sub iroot { body(as($_[0], GET => "/api/merkle/items/$_[1]/merkle-root")) }
sub croot { body(as($_[0], GET => "/api/merkle/circuits/$_[1]/merkle-root")) }
sub proof { body(as($_[0], GET => "/api/merkle/items/$_[1]/merkle-proof/$_[2]")) }

my ($owner, $member, $other) = map { user($_) } qw(owner member other);

# ---------------------------------------------------------------- items

my $a = item($owner, 'a');
my $r = iroot($owner, $a);
is($r->{merkle_root}, $EMPTY, 'an item without events: the empty node');
is($r->{event_count}, 0, '... no leaf');
is($r->{hash_algorithm}, 'SHA-256', '... SHA-256');

my @ev = map { event($owner, $a, { n => $_ })->{event_id} } 1 .. 5;
my $r5 = iroot($owner, $a)->{merkle_root};
isnt($r5, $EMPTY, 'events added: the root changes');
is(iroot($owner, $a)->{event_count}, 5, '... five leaves');
is(iroot($owner, $a)->{merkle_root}, $r5, 'read again: the same root');

my $dup = event($owner, $a, { n => 1 });
ok($dup->{was_deduplicated}, 'an identical event is deduplicated');
is(iroot($owner, $a)->{merkle_root}, $r5, '... and the root does not change');
as($owner, PUT => "/api/items/$a", { enriched_data => { colour => 'red' } });
is(iroot($owner, $a)->{merkle_root}, $r5, 'the item itself changed: the root does not');
my $b = item($owner, 'b');
event($owner, $b, { other => 1 });
is(iroot($owner, $a)->{merkle_root}, $r5, "another item's event: the root does not change");

my @leaves;
for my $e (@ev) {
    my $p = proof($owner, $a, $e);
    is($p->{merkle_root}, $r5, "proof of event $e: the item's root");
    is(sha256_hex($p->{leaf_data}), $p->{leaf_hash}, '... leaf_hash is SHA-256 of leaf_data');
    like($p->{leaf_data}, qr/^\Q$e\E\|Updated\|\d{19}\|\Q$owner->{id}\E\|\{"n":\d\}$/,
         '... leaf_data is event_id|event_type|timestamp_nanos|source|metadata');
    my ($rc, $out) = offline($p);
    is($rc, 0, '... the offline verifier accepts it') or diag $out;
    push @leaves, $p->{leaf_hash};
}
is(perl_root(@leaves), $r5, 'the root computed here from the documented rules is the same');
is(sql("SELECT defarm_merkle_item_root('$a') = defarm_merkle_item_rebuild('$a')"), 't',
   'what was maintained equals a rebuild from the rows');

my $p = proof($owner, $a, $ev[2]);
is(scalar @{ $p->{path} }, 3, 'five leaves: a path of three steps');
my ($rc) = offline($p, $r5);
is($rc, 0, 'offline with the expected root given: holds');

# tampering
my %t;
$t{leaf_hash} = { %$p, leaf_hash => sha256_hex('forged') };
$t{leaf_data} = { %$p, leaf_data => $p->{leaf_data} =~ s/"n":3/"n":4/r };
$t{path_hash} = { %$p, path => [ { %{ $p->{path}[0] }, hash => sha256_hex('x') }, @{ $p->{path} }[1 .. 2] ] };
$t{position} = { %$p, path => [ { %{ $p->{path}[0] },
                                  position => $p->{path}[0]{position} eq 'left' ? 'right' : 'left' },
                                @{ $p->{path} }[1 .. 2] ] };
$t{dropped_step} = { %$p, path => [ @{ $p->{path} }[0 .. 1] ] };
$t{root} = { %$p, merkle_root => sha256_hex('other root') };
for my $k (sort keys %t) {
    my ($rc, $out) = offline($t{$k});
    is($rc, 1, "tampered ($k): the offline verifier refuses it") or diag $out;
    my $v = body(as($owner, POST => '/api/merkle/verify-proof', { proof => $t{$k} }));
    is($v->{valid}, JSON::PP::false, "tampered ($k): verify-proof says invalid");
}
($rc) = offline($p, sha256_hex('another'));
is($rc, 1, 'offline against another expected root: refused');
($rc) = offline('{"leaf_hash": "zz"}');
is($rc, 2, 'offline, malformed: exit 2');

my $v = body(as($owner, POST => '/api/merkle/verify-proof', { proof => $p }));
is($v->{valid}, JSON::PP::true, 'verify-proof: valid');
is($v->{computed_root}, $r5, '... the computed root');
is($v->{leaf_data_matches}, JSON::PP::true, '... leaf_data matches');
$v = body(as($owner, POST => '/api/merkle/verify-proof', { proof => $p, expected_root => $EMPTY }));
is($v->{valid}, JSON::PP::false, 'verify-proof against another expected root: invalid');

# a change of metadata is a new leaf
as($owner, POST => "/api/events/$ev[0]/metadata", { metadata => { extra => 'yes' } });
my $r6 = iroot($owner, $a)->{merkle_root};
isnt($r6, $r5, 'an event changed: the root changes');
is(iroot($owner, $a)->{event_count}, 5, '... still five leaves');
$p = proof($owner, $a, $ev[0]);
like($p->{leaf_data}, qr/"extra":"yes"/, '... its leaf has the new metadata');
is((offline($p))[0], 0, '... its proof holds');
is((offline({ %$p, merkle_root => $r5 }))[0], 1, '... not against the old root');
is(sql("SELECT defarm_merkle_item_root('$a') = defarm_merkle_item_rebuild('$a')"), 't',
   '... and equals a rebuild');

# a private event: a member of a circuit sees the proof, not the metadata
my $private = event($owner, $a, { secret => 'recipe' }, 'private')->{event_id};
my $r7 = iroot($owner, $a)->{merkle_root};

# ------------------------------------------------------------- circuits

my $c = body(as($owner, POST => '/api/circuits', { name => "Merkle $$" }))->{circuit_id};
as($owner, POST => "/api/circuits/$c/members", { member_id => $member->{id}, role => 'member' });
my $cr = croot($owner, $c);
is($cr->{merkle_root}, $EMPTY, 'a circuit without items: the empty node');
is($cr->{item_count}, 0, '... no leaf');

is(as($owner, POST => "/api/circuits/$c/push/$a", {})->{status}, 200, 'push a');
ok(sql("SELECT count(*) FROM merkle_circuit_dirty WHERE circuit_id = '$c'") > 0,
   "the push changed the circuit's leaves and marked its levels to hash again");
my $ra = iroot($owner, $a)->{merkle_root};
isnt($ra, $r7, "the push's event changed the item's root");
my $c1 = croot($owner, $c)->{merkle_root};
is($c1, sha256_hex("$a|$ra"), "one item: the circuit's root is its leaf, SHA-256(dfid|item_root)");
is(sql("SELECT count(*) FROM merkle_circuit_dirty WHERE circuit_id = '$c'"), 0, '... hashed at that read');
as($owner, POST => "/api/circuits/$c/push/$b", {});
my $rb = iroot($owner, $b)->{merkle_root};
my $c2 = croot($member, $c)->{merkle_root};
is($c2, perl_root(sha256_hex("$a|$ra"), sha256_hex("$b|$rb")), 'two items: the root from the rules');
is(croot($owner, $c)->{item_count}, 2, '... two leaves');

my $cp = body(as($member, GET => "/api/merkle/circuits/$c/merkle-proof/$a"));
is($cp->{item_root}, $ra, "an item's proof in the circuit: its root");
is($cp->{merkle_root}, $c2, "... the circuit's root");
is((offline($cp))[0], 0, '... holds offline');
is((offline({ %$cp, leaf_data => "$a|" . ('0' x 64) }))[0], 1, '... another item root: refused');

# the member reads the item's proofs; the private event's metadata stays the owner's
$p = proof($member, $a, $private);
is($p->{merkle_root}, $ra, 'a member: the proof of a private event');
ok(!exists $p->{leaf_data}, '... without its leaf data');
is((offline($p))[0], 0, '... that holds');
ok(exists proof($owner, $a, $private)->{leaf_data}, 'the owner: with it');
is(as($member, GET => "/api/merkle/items/$a/merkle-proof/$private")->{body},
   sql("SELECT body FROM defarm_merkle_item_proof_get('$member->{id}', '$a', '{}', '$private')"),
   '... the route writes it as the SQL function does, without the leaf data');

event($owner, $a, { after => 'push' });
my $ra2 = iroot($owner, $a)->{merkle_root};
my $c3 = croot($owner, $c)->{merkle_root};
isnt($c3, $c2, "an item's event: the circuit's root follows");
is($c3, perl_root(sha256_hex("$a|$ra2"), sha256_hex("$b|$rb")), '... as the rules give it');
is(sql("SELECT defarm_merkle_circuit_rebuild('$c')"), $c3, '... and as a rebuild gives it');

# sync-check
my $sc = body(as($member, POST => "/api/merkle/circuits/$c/sync-check", { remote_root => $c3 }));
is($sc->{in_sync}, JSON::PP::true, 'sync-check, the same root: in sync');
$sc = body(as($member, POST => "/api/merkle/circuits/$c/sync-check", { remote_root => $c2 }));
is($sc->{in_sync}, JSON::PP::false, 'an old root: not in sync');
is($sc->{local_root}, $c3, '... the local root shown');
$sc = body(as($member, POST => "/api/merkle/circuits/$c/sync-check",
              { remote_items => [ { dfid => $a, merkle_root => $ra }, { dfid => 'DFID-NOT-HERE', merkle_root => $EMPTY } ] }));
is($sc->{in_sync}, JSON::PP::false, 'items compared: not in sync');
is_deeply($sc->{missing_locally}, [ 'DFID-NOT-HERE' ], '... one missing here');
is_deeply($sc->{missing_remotely}, [ $b ], '... one missing there');
is_deeply($sc->{mismatched}, [ { dfid => $a, local_root => $ra2, remote_root => $ra } ], '... one root differs');
$sc = body(as($member, POST => "/api/merkle/circuits/$c/sync-check",
              { remote_root => $c3, remote_items => [ { dfid => $a, merkle_root => $ra2 }, { dfid => $b, merkle_root => $rb } ] }));
is($sc->{in_sync}, JSON::PP::true, 'root and items equal: in sync');

# pull: the item leaves the tree
as($owner, POST => "/api/circuits/$c/pull/$b", {});
my $rb2 = iroot($owner, $b)->{merkle_root};
isnt($rb2, $rb, "the pull's event changed b's root");
is(croot($owner, $c)->{merkle_root}, sha256_hex("$a|$ra2"), "pulled: only a's leaf remains");
is_err(as($owner, GET => "/api/merkle/circuits/$c/merkle-proof/$b"), 404, qr/not found in this circuit/,
       'a pulled item: no proof');

# an item deleted: it leaves the circuit's tree
my $d = item($owner, 'd');
as($owner, POST => "/api/circuits/$c/push/$d", {});
my $rd = iroot($owner, $d)->{merkle_root};
is(croot($owner, $c)->{item_count}, 2, 'another item pushed: two leaves');
sql("DELETE FROM items WHERE dfid = '$d'");
is(croot($owner, $c)->{merkle_root}, sha256_hex("$a|$ra2"), 'that item deleted: its leaf is gone');
is(croot($owner, $c)->{item_count}, 1, '... one leaf');
is(sql("SELECT defarm_merkle_circuit_rebuild('$c')"), sha256_hex("$a|$ra2"), '... as a rebuild gives it');

# ---------------------------------------------------------------- public

is_err(http($ng, GET => "/api/public/merkle/items/$a/merkle-root"), 404, qr/not public/,
       'public: an item not published');
is_err(http($ng, GET => "/api/public/merkle/circuits/$c/merkle-root"), 404, qr/not public/,
       'public: a circuit not public');
as($owner, PUT => "/api/circuits/$c", { allow_public_visibility => JSON::PP::true });
my $ps = as($owner, PUT => "/api/circuits/$c/public-settings",
            { public_settings => { access_mode => 'public', published_items => [ $a ] } });
is($ps->{status}, 200, 'the circuit made public, a published');
SKIP: {
    my $ok = http($ng, GET => "/api/public/merkle/circuits/$c/merkle-root");
    skip 'the circuit is not publicly accessible here', 12 unless $ok->{status} == 200;
    is(body($ok)->{merkle_root}, croot($owner, $c)->{merkle_root}, "public: the circuit's root");
    my $pr = body(http($ng, GET => "/api/public/merkle/items/$a/merkle-root"));
    is($pr->{merkle_root}, $ra2, "public: a published item's root");
    my $pp = body(http($ng, GET => "/api/public/merkle/items/$a/merkle-proof/$ev[1]"));
    is($pp->{merkle_root}, $ra2, 'public: a proof of a Public event');
    ok(exists $pp->{leaf_data}, '... with its leaf data');
    is((offline($pp))[0], 0, '... that holds offline');
    $pp = body(http($ng, GET => "/api/public/merkle/items/$a/merkle-proof/$private"));
    ok(!exists $pp->{leaf_data} && $pp->{leaf_hash}, 'public: a Private event, its leaf hash only');
    my $pc = body(http($ng, GET => "/api/public/merkle/circuits/$c/merkle-proof/$a"));
    is((offline($pc))[0], 0, "public: the item's proof in the circuit holds");
    is_err(http($ng, GET => "/api/public/merkle/items/$b/merkle-root"), 404, qr/not public/,
           'public: an item not published (b)');
    is_err(http($ng, GET => "/api/public/merkle/circuits/$c/merkle-proof/$b"), 404, qr/not public/,
           "public: b's proof in the circuit");
    my $pv = body(http($ng, POST => '/api/public/merkle/verify-proof',
                       headers => { 'Content-Type' => 'application/json' },
                       body => $JSON->encode({ proof => $pc })));
    is($pv->{valid}, JSON::PP::true, 'public verify-proof: valid');
}
is_err(http($ng, GET => "/api/public/merkle/circuits/nope/merkle-root"), 400, qr/Invalid circuit ID/,
       'public: a malformed circuit id');
is_err(http($ng, GET => "/api/public/merkle/items/$a/merkle-proof/nope"), 400, qr/Invalid event ID/,
       'public: a malformed event id');

# ------------------------------------------------- refusals, validation

is_err(as($other, GET => "/api/merkle/items/$b/merkle-root"), 404, qr/Item not found/, "another user's item: 404");
is_err(as($other, GET => "/api/merkle/items/$b/merkle-proof/$ev[0]"), 404, qr/Item not found/,
       "another user's item's proof: 404");
is_err(as($other, GET => "/api/merkle/circuits/$c/merkle-root"), 404, qr/Circuit not found/,
       "a circuit one is not in: 404");
is_err(as($other, GET => "/api/merkle/circuits/$c/merkle-proof/$a"), 404, qr/Circuit not found/,
       "... its proofs: 404");
is_err(as($other, POST => "/api/merkle/circuits/$c/sync-check", { remote_root => $c3 }), 404,
       qr/Circuit not found/, '... its sync-check: 404');
is_err(as($owner, GET => '/api/merkle/items/DFID-NONE/merkle-root'), 404, qr/Item not found/, 'an unknown item: 404');
is_err(as($owner, GET => "/api/merkle/items/$a/merkle-proof/$uuid"), 404, qr/Event not found/,
       'an unknown event: 404');
is_err(as($owner, GET => "/api/merkle/items/$b/merkle-proof/$ev[0]"), 404, qr/Event not found/,
       "another item's event: 404");
is_err(as($owner, GET => "/api/merkle/items/$a/merkle-proof/nope"), 400, qr/Invalid event ID/, 'a malformed event id');
is_err(as($owner, GET => "/api/merkle/circuits/$uuid/merkle-root"), 404, qr/Circuit not found/, 'an unknown circuit');
is_err(as($owner, GET => '/api/merkle/circuits/nope/merkle-root'), 400, qr/Invalid circuit ID/,
       'a malformed circuit id');
is_err(as($owner, GET => "/api/merkle/circuits/$c/merkle-proof/DFID-NONE"), 404, qr/not found in this circuit/,
       'an item not in the circuit');

my $vp = '/api/merkle/verify-proof';
is(as($owner, POST => $vp, '{"proof":')->{status}, 400, 'verify-proof: malformed JSON');
is_err(as($owner, POST => $vp, [1]), 400, qr/object/, 'verify-proof: not an object');
is_err(as($owner, POST => $vp, {}), 400, qr/proof is required/, 'verify-proof: no proof');
is_err(as($owner, POST => $vp, { proof => 'x' }), 400, qr/proof must be an object/, 'verify-proof: proof a string');
is_err(as($owner, POST => $vp, { proof => { %$p, leaf_hash => 'abc' } }), 400, qr/leaf_hash/,
       'verify-proof: a short leaf_hash');
is_err(as($owner, POST => $vp, { proof => { %$p, path => {} } }), 400, qr/path must be an array/,
       'verify-proof: path not an array');
is_err(as($owner, POST => $vp, { proof => { %$p, path => [ { hash => $EMPTY, position => 'up' } ] } }), 400,
       qr/left.*right/, 'verify-proof: a position neither left nor right');
is_err(as($owner, POST => $vp, { proof => { %$p, path => [ { hash => 7, position => 'left' } ] } }), 400,
       qr/path must hold/, 'verify-proof: a hash not a string');
is_err(as($owner, POST => $vp, { proof => { %$p, leaf_data => 5 } }), 400, qr/leaf_data/,
       'verify-proof: leaf_data not a string');
is_err(as($owner, POST => $vp, { proof => $p, expected_root => 12 }), 400, qr/expected_root/,
       'verify-proof: expected_root a number');
my %noroot = %$p; delete $noroot{merkle_root};
is_err(as($owner, POST => $vp, { proof => \%noroot }), 400, qr/expected_root is required/,
       'verify-proof: no root at all');
is_err(as($owner, POST => $vp, { proof => $p, extra => 1 }), 400, qr/Unknown field/, 'verify-proof: unknown field');

my $sp = "/api/merkle/circuits/$c/sync-check";
is(as($owner, POST => $sp, '{')->{status}, 400, 'sync-check: malformed JSON');
is_err(as($owner, POST => $sp, {}), 400, qr/remote_root or remote_items is required/, 'sync-check: nothing to compare');
is_err(as($owner, POST => $sp, { remote_root => 'abc' }), 400, qr/remote_root/, 'sync-check: a bad remote_root');
is_err(as($owner, POST => $sp, { remote_items => {} }), 400, qr/remote_items must be an array/,
       'sync-check: remote_items not an array');
is_err(as($owner, POST => $sp, { remote_items => [ { dfid => $a } ] }), 400, qr/remote_items must hold/,
       'sync-check: an item without a root');
is_err(as($owner, POST => '/api/merkle/circuits/nope/sync-check', { remote_root => $c3 }), 400,
       qr/Invalid circuit ID/, 'sync-check: a malformed circuit id');

for my $path ("/api/merkle/items/$a/merkle-root", "/api/merkle/items/$a/merkle-proof/$ev[0]",
              "/api/merkle/circuits/$c/merkle-root", "/api/merkle/circuits/$c/merkle-proof/$a") {
    is(http($ng, GET => $path)->{status}, 401, "no token: 401 ($path)");
}
is(http($ng, POST => $vp, headers => { 'Content-Type' => 'application/json' },
        body => '{}')->{status}, 401, 'no token: 401 (verify-proof)');
is(http($ng, POST => $sp, headers => { 'Content-Type' => 'application/json' },
        body => '{}')->{status}, 401, 'no token: 401 (sync-check)');

# ------------------------------------------ every place in the pages

# A tree is kept in pages of 32 leaves, each with the part of its leaves'
# paths inside the page and the path above it (sql/044); the route writes
# the proof from the statement's columns.  Every leaf of trees around the
# pages' sizes, grown through the API: each proof folds to the root, that
# root is the one computed here, and the route's bytes are the SQL
# function's.

sub fold {
    my ($p) = @_;
    my $h = $p->{leaf_hash};
    for my $s (@{ $p->{path} }) {
        $h = $s->{position} eq 'right' ? sha256_hex("$h|$s->{hash}")
                                       : sha256_hex("$s->{hash}|$h");
    }
    return $h;
}

my $sizes = item($owner, 'sizes');
my @sev;
for my $n (1 .. 70) {
    push @sev, event($owner, $sizes, { s => $n })->{event_id};
    next unless grep { $_ == $n } 1, 2, 3, 31, 32, 33, 63, 64, 65, 70;
    my ($folds, $same, $root, @l) = (0, 0);
    for my $e (@sev) {
        my $res = as($owner, GET => "/api/merkle/items/$sizes/merkle-proof/$e");
        my $p = body($res);
        push @l, $p->{leaf_hash};
        $root //= $p->{merkle_root};
        $folds++ if fold($p) eq $root && $p->{leaf_count} == $n
                    && @{ $p->{path} } == ($n == 1 ? 0 : length(sprintf '%b', $n - 1));
        $same++ if $res->{body} eq sql("SELECT body FROM defarm_merkle_item_proof_get("
                                       . "'$owner->{id}', '$sizes', '{}', '$e')");
    }
    is($folds, $n, "$n leaves: every proof folds to the root, ceil(log2 n) steps");
    is($root, perl_root(@l), '... the root computed here');
    is($same, $n, '... the route writes every proof as the SQL function does');
}

# ------------------------------------------------ 10,000 events, one item

my $big = item($owner, 'big');
sql("INSERT INTO events (dfid, owner_id, event_type, visibility, metadata, content_hash) "
    . "SELECT '$big', '$owner->{id}', 'bulk', 'Private', jsonb_build_object('n', g), "
    . "md5('t097-$$-' || g) FROM generate_series(1, 9998) g");
sql("SELECT defarm_merkle_item_rebuild('$big')");
is(iroot($owner, $big)->{event_count}, 9998, '9,998 events loaded in bulk, the tree built once');
my @added = map { event($owner, $big, { added => $_ })->{event_id} } 1 .. 2;
my $rbig = iroot($owner, $big);
is($rbig->{event_count}, 10000, 'two more through the API: 10,000 leaves');
is(sql("SELECT defarm_merkle_item_root('$big') = defarm_merkle_item_rebuild('$big')"), 't',
   'the tree kept through the API equals a rebuild');
for my $e ($added[1], sql("SELECT event_id FROM events WHERE dfid = '$big' ORDER BY event_id LIMIT 1"),
           sql("SELECT event_id FROM events WHERE dfid = '$big' ORDER BY event_id DESC LIMIT 1")) {
    my $bp = proof($owner, $big, $e);
    is(scalar @{ $bp->{path} }, 14, "a proof in 10,000 leaves: 14 steps ($e)");
    is((offline($bp))[0], 0, '... holds offline');
    my @path = @{ $bp->{path} };
    $path[7] = { %{ $path[7] }, hash => sha256_hex('tampered') };
    is((offline({ %$bp, path => \@path }))[0], 1, '... tampered: refused');
}
is(scalar(() = sql("SELECT page FROM merkle_pages g JOIN merkle_trees t USING (tree_id) "
                   . "WHERE t.dfid = '$big'") =~ /^\d+$/mg), 313,
   '... kept in 313 pages of 32 leaves');
is(sql("SELECT count(*) FROM merkle_trees t JOIN merkle_pages g USING (tree_id) "
       . "WHERE t.dfid = '$big' AND length(g.paths) = 32 * 160 AND length(g.upper) = 9 * 32 "
       . "AND g.first_leaf = substring(g.leaves FROM 1 FOR 32)"), 312,
   '... each full one with its leaves\' paths and the 9 steps above it');

# the 10,000 events go with their item (files run after this one list events)
sql("DELETE FROM items WHERE dfid = '$big'");
is(sql("SELECT count(*) FROM merkle_trees WHERE dfid = '$big'"), 0, 'an item deleted: its tree goes with it');

unlike($ng->log, qr/\[(alert|crit|emerg)\]/, 'no alert in error.log');
stop_nginx($ng);

done_testing();
