# Attestations (/api/proofs, sql/043, src/provenance/): statements about
# data the server holds (an item with these identifiers, a receipt's hash
# presented at a time), checked in SQL and signed with the server's
# Ed25519 key.  They verify with the published key only (offline, with
# scripts/verify_proof.py, and by POST /api/proofs/verify): another key,
# a changed payload or a changed signature fails.  Each statement type is
# refused for data that is not there; another user's proofs are a 404;
# list, statistics, templates, get and delete; no key configured: 503;
# a key that is not Ed25519 stops nginx from starting.

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use MIME::Base64 ();
use Digest::SHA ();
use File::Temp ();
use DefarmTest;

my $json = JSON::PP->new->utf8->canonical;
my (undef, $secret_file) = jwt_secret();
my $keyfile = $ENV{TEST_NGINX_ATTESTATION_KEY}
    or plan skip_all => 'TEST_NGINX_ATTESTATION_KEY is not set (make test)';
my $top = Cwd::abs_path(File::Basename::dirname(__FILE__) . '/..');
my $tmp = File::Temp::tempdir('defarm-t099-XXXXXX', TMPDIR => 1, CLEANUP => 1);

sub openssl { system('openssl', @_) == 0 or die "openssl @_ failed\n" }

sub node {
    my ($name, $key) = @_;
    return start_nginx(
        name   => $name,
        http   => db_config(size => 2) . "
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;
    " . ($key ? "defarm_attestation_key file=$key;" : ''),
        server => '
        location / {
            defarm_api on;
        }');
}

my $ng = node('proofs', $keyfile);

sub body { json_body(@_) }
sub as { api_as($ng, @_) }
sub user { api_user($ng, "t099_$_[0]_$$") }
sub file { my ($n, $data) = @_; open my $f, '>', "$tmp/$n" or die $!;
           print $f (ref $data ? $json->encode($data) : $data); close $f;
           return "$tmp/$n" }

# scripts/verify_proof.py attestation: (exit code, what it printed)
sub offline {
    my ($att, $key) = @_;
    my $a = file('att.json', $att);
    my $k = file('key.json', $key);
    my $out = `python3 $top/scripts/verify_proof.py attestation $a $k 2>&1`;
    return ($? >> 8, $out);
}

my ($alice, $bob, $admin) = map { user($_) } qw(alice bob admin);
sql("UPDATE users SET is_admin = true WHERE id = '$admin->{id}'");
my $uuid = '0b6f8f9e-1d2c-4c3b-9a8e-7f6d5c4b3a21';
my $unknown = '7d0c3a5e-0000-4000-8000-000000000001';

# ------------------------------------------------------------- the key

my $res = http($ng, GET => '/api/proofs/key');
is($res->{status}, 200, 'key: anyone may fetch it');
my $key = body($res);
is($key->{algorithm}, 'Ed25519', 'key: Ed25519');
my $raw = MIME::Base64::decode_base64($key->{public_key} // '');
is(length $raw, 32, 'key: the raw 32-byte public key');
is($key->{key_id}, Digest::SHA::sha256_hex($raw),
   'key: key_id is the SHA-256 of the raw key');
my $pem = `openssl pkey -in $keyfile -pubout`;
is($key->{public_key_pem}, $pem, 'key: the PEM of the configured key');

# another key, for what must not verify with it
openssl('genpkey', '-algorithm', 'ed25519', '-out', "$tmp/other.pem");
my $other_pem = `openssl pkey -in $tmp/other.pem -pubout`;
my $other_key = { algorithm => 'Ed25519', public_key_pem => $other_pem };

# ----------------------------------------------------------- templates

$res = as($alice, GET => '/api/proofs/templates');
is($res->{status}, 200, 'templates');
my %types = map { $_->{circuit_type} => $_ } @{ body($res)->{templates} };
ok($types{item_exists} && $types{receipt_presented},
   'templates: item_exists and receipt_presented');
ok($types{item_exists}{inputs}{dfid}, 'templates: with their inputs');
like(body($res)->{note}, qr/not zero-knowledge proofs/,
     'templates: says these are signatures, not zero-knowledge proofs');

# ---------------------------------------------------------- item_exists

$res = as($alice, POST => '/api/items',
          { identifiers => [ { key => 'lot', value => "a-$$" },
                             { key => 'tag', value => "t-$$" } ],
            source_entry => $uuid });
my $dfid = body($res)->{dfid};
ok($dfid, "an item $dfid");
my $bob_dfid = body(api_as($ng, $bob, POST => '/api/items',
                           { identifiers => [ { key => 'lot',
                                                value => "b-$$" } ],
                             source_entry => $uuid }))->{dfid};

$res = as($alice, POST => '/api/proofs/submit',
          { circuit_type => 'item_exists',
            circuit_input => { dfid => $dfid,
                               identifiers => [ { key => 'lot',
                                                  value => "a-$$" } ] },
            metadata => { note => 'for the buyer' } });
is($res->{status}, 201, 'submit item_exists: 201');
my $att = body($res);
like($att->{proof_id} // '', qr/^[0-9a-f-]{36}$/, 'a proof id');
is($att->{algorithm}, 'Ed25519', 'Ed25519');
is($att->{key_id}, $key->{key_id}, 'signed with the published key');
is($att->{prover_id}, $alice->{id}, 'the prover is the caller');
is($att->{status}, 'Issued', 'Issued');
is_deeply($att->{statement}, $json->decode($att->{payload}),
          'statement is the parsed payload');
is($att->{payload}, $json->encode($att->{statement}),
   'the payload is canonical JSON (sorted keys, no spaces)');
my $st = $att->{statement};
is($st->{proof_id}, $att->{proof_id}, 'the statement names the proof');
is($st->{key_id}, $key->{key_id}, '... and the key');
is($st->{prover_id}, $alice->{id}, '... and the prover');
is($st->{facts}{dfid}, $dfid, 'facts: the item');
is_deeply($st->{facts}{identifiers},
          [ { namespace => 'generic', key => 'lot', value => "a-$$",
              id_type => 'Contextual' } ],
          'facts: the identifier asked about');
is($st->{metadata}{note}, 'for the buyer', 'the metadata is signed too');
like($st->{issued_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/,
     'issued_at, RFC 3339 UTC');
is(sql("SELECT payload FROM attestations WHERE proof_id = "
       . "'$att->{proof_id}'"), $att->{payload}, 'stored as signed');

# offline: the published key only; a changed payload or signature fails

my ($rc, $rep) = offline($att, $key);
is($rc, 0, 'offline: verifies with the published key');
like($rep, qr/^OK valid: proof $att->{proof_id} signed by key $key->{key_id}/,
     'offline: valid, and says so');

($rc, $rep) = offline($att, { algorithm => 'Ed25519',
                              public_key_pem => $key->{public_key_pem} });
is($rc, 0, 'offline: verifies with the PEM too');

($rc, $rep) = offline($att, $other_key);
is($rc, 1, 'offline: another key fails');
like($rep, qr/^FAIL the signature is not this key/, '... on the signature');

my %t = %$att;
($t{payload} = $att->{payload}) =~ s/"a-$$"/"x-$$"/;
$t{statement} = $json->decode($t{payload});
($rc, $rep) = offline(\%t, $key);
is($rc, 1, 'offline: a changed payload fails');
like($rep, qr/^FAIL the signature is not this key/, '... on the signature');

%t = %$att;
$t{statement} = { %{ $att->{statement} }, prover_id => $bob->{id} };
($rc, $rep) = offline(\%t, $key);
is($rc, 1, 'offline: a statement that is not the payload fails');
like($rep, qr/^FAIL statement is not the signed payload/, '... so it says');

%t = %$att;
my $sig = MIME::Base64::decode_base64($att->{signature});
substr($sig, 10, 1) = chr(ord(substr($sig, 10, 1)) ^ 1);
$t{signature} = MIME::Base64::encode_base64($sig, '');
($rc, $rep) = offline(\%t, $key);
is($rc, 1, 'offline: a changed signature fails');

# the server's verify: by id, and by payload and signature

$res = as($alice, POST => '/api/proofs/verify',
          { proof_id => $att->{proof_id} });
is($res->{status}, 200, 'verify by id');
my $v = body($res);
is($v->{valid}, JSON::PP::true, 'verify: valid');
is($v->{signature_valid}, JSON::PP::true, 'verify: the signature');
is($v->{on_record}, JSON::PP::true, 'verify: on record');
is($v->{statement_holds}, JSON::PP::true, 'verify: it still holds');
is(body(as($alice, GET => "/api/proofs/$att->{proof_id}"))->{status},
   'Verified', 'Verified once verified');

$res = as($bob, POST => '/api/proofs/verify',
          { payload => $att->{payload}, signature => $att->{signature} });
is($res->{status}, 200, 'verify a payload and signature: anyone given it');
is(body($res)->{valid}, JSON::PP::true, '... valid');

$res = as($bob, POST => '/api/proofs/verify',
          { payload => (my $p = $att->{payload}) =~ s/"a-$$"/"x-$$"/r,
            signature => $att->{signature} });
is(body($res)->{signature_valid}, JSON::PP::false,
   'verify: a changed payload, a bad signature');
is(body($res)->{valid}, JSON::PP::false, '... not valid');

$res = as($bob, POST => '/api/proofs/verify',
          { payload => $att->{payload},
            signature => MIME::Base64::encode_base64($sig, '') });
is(body($res)->{signature_valid}, JSON::PP::false,
   'verify: a changed signature is refused');
is(body($res)->{on_record}, JSON::PP::false, '... and is not the record');

# signed with another key: the server with that key does not verify it
my $ng2 = node('proofs-other', "$tmp/other.pem");
$res = api_as($ng2, $bob, POST => '/api/proofs/verify',
              { payload => $att->{payload}, signature => $att->{signature} });
is(body($res)->{signature_valid}, JSON::PP::false,
   'a server with another key: the signature is not its');
isnt(body(http($ng2, GET => '/api/proofs/key'))->{key_id}, $key->{key_id},
     '... whose key is another');
my $att2 = body(api_as($ng2, $alice, POST => '/api/proofs/submit',
                       { circuit_type => 'item_exists',
                         circuit_input => { dfid => $dfid } }));
($rc) = offline($att2, $key);
is($rc, 1, 'offline: its attestation fails with the first key');
($rc) = offline($att2, $other_key);
is($rc, 0, '... and verifies with its own');
stop_nginx($ng2);

# all the item's identifiers when none are given

$res = as($alice, POST => '/api/proofs/submit',
          { circuit_type => 'item_exists', circuit_input => { dfid => $dfid } });
is($res->{status}, 201, 'item_exists without identifiers');
is(scalar @{ body($res)->{statement}{facts}{identifiers} }, 2,
   '... states all of them');

# refused: data that is not there, and bad input

sub submit { as($_[0], POST => '/api/proofs/submit',
                { circuit_type => $_[1], circuit_input => $_[2] }) }

is_err(submit($alice, 'item_exists', { dfid => 'DFID-20240101-000001-XXXX' }),
       404, qr/Item not found/, 'an unknown item');
is_err(submit($alice, 'item_exists', { dfid => $bob_dfid }),
       404, qr/Item not found/, "another user's item");
is_err(submit($alice, 'item_exists',
              { dfid => $dfid, identifiers => [ { key => 'lot',
                                                  value => 'nope' } ] }),
       404, qr/not found on item/, 'an identifier the item does not carry');
is_err(submit($alice, 'item_exists',
              { dfid => $dfid, identifiers => [ { key => 'lot',
                                                  value => "a-$$",
                                                  namespace => 'other' } ] }),
       404, qr/not found on item/, '... in another namespace');
is_err(submit($alice, 'item_exists', {}), 400, qr/dfid is required/,
       'no dfid');
is_err(submit($alice, 'item_exists', { dfid => 7 }), 400,
       qr/dfid must be a string/, 'dfid a number');
is_err(submit($alice, 'item_exists', { dfid => $dfid, identifiers => {} }),
       400, qr/identifiers must be an array/, 'identifiers an object');
is_err(submit($alice, 'item_exists', { dfid => $dfid, identifiers => [] }),
       400, qr/must not be empty/, 'identifiers empty');
is_err(submit($alice, 'item_exists', { dfid => $dfid, identifiers => [ 1 ] }),
       400, qr/each identifier/, 'an identifier not an object');
is_err(submit($alice, 'item_exists',
              { dfid => $dfid, identifiers => [ { key => 'lot' } ] }),
       400, qr/each identifier/, 'an identifier without a value');
is_err(submit($alice, 'item_exists', { dfid => $dfid, color => 'red' }),
       400, qr/Unknown field: color/, 'an unknown input');

# ---------------------------------------------------- receipt_presented

my $doc = "delivery note $$\n" x 20;
my $rcpt = body(as($alice, POST => '/api/receipts',
                   { data => MIME::Base64::encode_base64($doc, ''),
                     identifiers => [ { key => 'lot', value => "a-$$" } ] }));
ok($rcpt->{id}, 'a receipt');

$res = submit($alice, 'receipt_presented',
              { receipt_id => $rcpt->{id},
                hash => Digest::SHA::sha256_hex($doc) });
is($res->{status}, 201, 'submit receipt_presented: 201');
my $ratt = body($res);
my $rf = $ratt->{statement}{facts};
is($rf->{hash}, Digest::SHA::sha256_hex($doc), 'facts: the SHA-256');
is($rf->{hash_algorithm}, 'SHA-256', 'facts: named');
is($rf->{data_size}, length $doc, 'facts: the size');
like($rf->{presented_at}, qr/^\d{4}-\d\d-\d\dT/, 'facts: when');
($rc) = offline($ratt, $key);
is($rc, 0, 'offline: it verifies');

is(submit($alice, 'receipt_presented', { receipt_id => $rcpt->{id} })
       ->{status}, 201, 'receipt_presented without a hash');
is_err(submit($alice, 'receipt_presented',
              { receipt_id => $rcpt->{id}, hash => 'ab' x 32 }),
       400, qr/not the hash of receipt/, 'another hash');
is_err(submit($alice, 'receipt_presented',
              { receipt_id => $rcpt->{id}, hash => 'xyz' }),
       400, qr/64 hex digits/, 'a hash that is not one');
is_err(submit($alice, 'receipt_presented', { receipt_id => $unknown }),
       404, qr/Receipt not found/, 'an unknown receipt');
is_err(submit($bob, 'receipt_presented', { receipt_id => $rcpt->{id} }),
       404, qr/Receipt not found/, "another user's receipt");
is_err(submit($alice, 'receipt_presented', { receipt_id => 'nope' }),
       400, qr/Invalid receipt ID/, 'a malformed receipt id');
is_err(submit($alice, 'receipt_presented', {}),
       400, qr/receipt_id is required/, 'no receipt id');

# a statement that no longer holds still verifies: it was true when signed
sql("DELETE FROM receipts WHERE id = '$rcpt->{id}'");
$v = body(as($alice, POST => '/api/proofs/verify',
             { proof_id => $ratt->{proof_id} }));
is($v->{valid}, JSON::PP::true, 'a receipt since deleted: still valid');
is($v->{statement_holds}, JSON::PP::false, '... but no longer holds');

# ------------------------------------------------------ submit's checks

is(as($alice, POST => '/api/proofs/submit', '{')->{status}, 400,
   'malformed JSON: 400');
is_err(as($alice, POST => '/api/proofs/submit', '[]'), 400,
       qr/JSON object/, 'an array');
is_err(as($alice, POST => '/api/proofs/submit',
          { circuit_input => { dfid => $dfid } }),
       400, qr/circuit_type is required/, 'no circuit_type');
is_err(as($alice, POST => '/api/proofs/submit',
          { circuit_type => 1, circuit_input => {} }),
       400, qr/circuit_type must be a string/, 'circuit_type a number');
is_err(submit($alice, 'zk_magic', {}), 400, qr/Unknown circuit_type/,
       'an unknown circuit_type');
is_err(as($alice, POST => '/api/proofs/submit',
          { circuit_type => 'item_exists' }),
       400, qr/circuit_input is required/, 'no circuit_input');
is_err(as($alice, POST => '/api/proofs/submit',
          { circuit_type => 'item_exists', circuit_input => 'x' }),
       400, qr/circuit_input must be an object/, 'circuit_input a string');
is_err(as($alice, POST => '/api/proofs/submit',
          { circuit_type => 'item_exists', circuit_input => { dfid => $dfid },
            metadata => [] }),
       400, qr/metadata must be an object/, 'metadata an array');
is_err(as($alice, POST => '/api/proofs/submit',
          { circuit_type => 'item_exists', circuit_input => { dfid => $dfid },
            private_inputs => {} }),
       400, qr/not zero-knowledge proofs/, 'private_inputs');
is_err(as($alice, POST => '/api/proofs/submit',
          { circuit_type => 'item_exists', circuit_input => { dfid => $dfid },
            extra => 1 }),
       400, qr/Unknown field: extra/, 'an unknown field');

# ------------------------------------------------------ verify's checks

is_err(as($alice, POST => '/api/proofs/verify', {}), 400,
       qr/Give proof_id, or payload and signature/, 'verify: nothing');
is_err(as($alice, POST => '/api/proofs/verify',
          { proof_id => $att->{proof_id}, payload => 'x', signature => 'y' }),
       400, qr/Give proof_id, or payload/, 'verify: both');
is_err(as($alice, POST => '/api/proofs/verify', { payload => 'x' }), 400,
       qr/go together/, 'verify: a payload alone');
is_err(as($alice, POST => '/api/proofs/verify', { proof_id => 5 }), 400,
       qr/proof_id must be a string/, 'verify: proof_id a number');
is_err(as($alice, POST => '/api/proofs/verify', { proof_id => 'nope' }),
       400, qr/Invalid proof ID/, 'verify: a malformed id');
is_err(as($alice, POST => '/api/proofs/verify', { proof_id => $unknown }),
       404, qr/Proof not found/, 'verify: an unknown id');
is_err(as($bob, POST => '/api/proofs/verify',
          { proof_id => $att->{proof_id} }),
       404, qr/Proof not found/, "verify: another user's proof by id");
is(as($alice, POST => '/api/proofs/verify', '{')->{status}, 400,
   'verify: malformed JSON');
$v = body(as($alice, POST => '/api/proofs/verify',
             { payload => 'not json', signature => '***' }));
is($v->{valid}, JSON::PP::false, 'verify: garbage is not valid');

# ------------------------------------------------------------------ get

$res = as($alice, GET => "/api/proofs/$att->{proof_id}");
is($res->{status}, 200, 'get');
is(body($res)->{payload}, $att->{payload}, 'get: the payload');
is(body($res)->{signature}, $att->{signature}, 'get: the signature');
($rc) = offline(body($res), $key);
is($rc, 0, 'get: what it answers verifies offline');
is_err(as($bob, GET => "/api/proofs/$att->{proof_id}"), 404,
       qr/Proof not found/, "get: another user's proof");
is_err(as($alice, GET => "/api/proofs/$unknown"), 404, qr/Proof not found/,
       'get: an unknown id');
is_err(as($alice, GET => '/api/proofs/nope'), 400, qr/Invalid proof ID/,
       'get: a malformed id');

# ---------------------------------------------------- list, statistics

my $bob_att = body(submit($bob, 'item_exists', { dfid => $bob_dfid }));
ok($bob_att->{proof_id}, "bob's own proof");

$res = as($alice, GET => '/api/proofs');
is($res->{status}, 200, 'list');
my $l = body($res);
is($l->{total}, 5, "list: alice's five");
ok(!grep({ $_->{prover_id} ne $alice->{id} } @{ $l->{proofs} }),
   "list: only alice's");
is(body(as($alice, GET => '/api/proofs?circuit_type=receipt_presented'))
       ->{total}, 2, 'list: by circuit_type');
is(body(as($alice, GET => '/api/proofs?status=Verified'))->{total}, 2,
   'list: by status');
is(scalar @{ body(as($alice, GET => '/api/proofs?limit=2&offset=1'))
                 ->{proofs} }, 2, 'list: limit and offset');
is(body(as($alice, GET => '/api/proofs?start_date=2000-01-01'
                          . '&end_date=' . (time + 3600)))->{total}, 5,
   'list: a date range (ISO 8601 and Unix)');
is(body(as($alice, GET => '/api/proofs?end_date=2000-01-01'))->{total}, 0,
   'list: before any');
is_err(as($alice, GET => '/api/proofs?limit=0'), 400, qr/limit/,
       'list: limit 0');
is_err(as($alice, GET => '/api/proofs?status=Pending'), 400, qr/status/,
       'list: an unknown status');
is_err(as($alice, GET => '/api/proofs?start_date=yesterday'), 400,
       qr/start_date/, 'list: a bad date');
is_err(as($alice, GET => '/api/proofs?circuit_type=zk'), 400,
       qr/Unknown circuit_type/, 'list: an unknown circuit_type');
is_err(as($alice, GET => "/api/proofs?user_id=$bob->{id}"), 403,
       qr/administrator/, "list: another user's, not an admin");
$l = body(as($admin, GET => "/api/proofs?user_id=$bob->{id}"));
is($l->{total}, 1, "list: an admin lists bob's");

$res = as($alice, GET => '/api/proofs/statistics');
is($res->{status}, 200, 'statistics');
my $s = body($res);
is($s->{total_proofs}, 5, 'statistics: total');
is($s->{verified_proofs}, 2, 'statistics: verified');
is($s->{by_circuit_type}{item_exists}, 3, 'statistics: by type');
is($s->{by_status}{Issued}, 3, 'statistics: by status');
is(body(as($bob, GET => '/api/proofs/statistics'))->{total_proofs}, 1,
   "statistics: bob's own");

# --------------------------------------------------------------- delete

is_err(as($bob, DELETE => "/api/proofs/$att->{proof_id}"), 404,
       qr/Proof not found/, "delete: another user's proof");
is(sql("SELECT count(*) FROM attestations WHERE proof_id = "
       . "'$att->{proof_id}'"), 1, '... which stays');
is_err(as($alice, DELETE => '/api/proofs/nope'), 400, qr/Invalid proof ID/,
       'delete: a malformed id');
$res = as($alice, DELETE => "/api/proofs/$att->{proof_id}");
is($res->{status}, 200, 'delete: the prover\'s own');
is(as($alice, GET => "/api/proofs/$att->{proof_id}")->{status}, 404,
   'delete: gone');
is(as($alice, DELETE => "/api/proofs/$att->{proof_id}")->{status}, 404,
   'delete: again, 404');
$v = body(as($bob, POST => '/api/proofs/verify',
             { payload => $att->{payload}, signature => $att->{signature} }));
is($v->{signature_valid}, JSON::PP::true,
   'a deleted attestation: still the server\'s signature');
is($v->{on_record}, JSON::PP::false, '... but no longer on record');
is($v->{valid}, JSON::PP::false, '... so not valid (withdrawn)');

# ---------------------------------------------------------------- callers

for my $r ([ GET => '/api/proofs' ], [ GET => '/api/proofs/statistics' ],
           [ GET => '/api/proofs/templates' ],
           [ GET => "/api/proofs/$bob_att->{proof_id}" ],
           [ DELETE => "/api/proofs/$bob_att->{proof_id}" ],
           [ POST => '/api/proofs/submit' ], [ POST => '/api/proofs/verify' ])
{
    is(http($ng, $r->[0], $r->[1],
            headers => { 'Content-Type' => 'application/json' },
            body => '{}')->{status}, 401, "$r->[0] $r->[1]: no token, 401");
}

stop_nginx($ng);

# ------------------------------------------------------- no key: 503

my $nokey = node('proofs-nokey');
is_err(http($nokey, GET => '/api/proofs/key'), 503,
       qr/defarm_attestation_key/, 'no key: GET /api/proofs/key 503');
is_err(api_as($nokey, $alice, POST => '/api/proofs/submit',
              { circuit_type => 'item_exists',
                circuit_input => { dfid => $dfid } }),
       503, qr/not set up/, 'no key: submit 503');
is(api_as($nokey, $alice, POST => '/api/proofs/verify',
          { proof_id => $ratt->{proof_id} })->{status}, 503,
   'no key: verify 503');
is(api_as($nokey, $alice, GET => '/api/proofs')->{status}, 503,
   'no key: list 503');
stop_nginx($nokey);

# a key that is not Ed25519 stops nginx from starting

openssl('genpkey', '-algorithm', 'EC', '-pkeyopt',
        'ec_paramgen_curve:P-256', '-out', "$tmp/ec.pem");
eval { node('proofs-ec', "$tmp/ec.pem") };
like($@, qr/is not an Ed25519 key/, 'an EC key: nginx does not start');
file('junk.pem', "not a key\n");
eval { node('proofs-junk', "$tmp/junk.pem") };
like($@, qr/is not a PEM private key/, 'not a key: nginx does not start');

done_testing();
