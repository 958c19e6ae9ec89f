# Storage adapters (sql/034) against a real IPFS node: the administrator's
# adapter configurations (secrets write-only, sealed); a circuit's adapter
# (tier-gated, its members told); a push through an ipfs-ipfs circuit
# queues an upload whose CID lands in the storage history and the CID
# timeline, and which the IPFS node returns the item's JSON for; Stellar
# adapters refused as unavailable, not pretended; a node that does not
# answer is retried and the upload ends Dead, visible; migrations and the
# primary location; the user-facing adapter routes, the probes that ask the
# node, the admin's test push; bad input and the wrong callers refused.

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use IO::Socket::INET;
use DefarmTest;

# scripts/test.sh starts the node: without it this is a failure, not a skip
my $ipfs = $ENV{TEST_NGINX_IPFS_API}
    or BAIL_OUT('no IPFS node: TEST_NGINX_IPFS_API is not set (scripts/test.sh starts one)');

my (undef, $secret_file) = jwt_secret();
my $dir = "$ENV{TEST_NGINX_SERVROOT}-storagekey";
mkdir $dir;
my $keyfile = "$dir/secret.key";
open my $kf, '>', $keyfile or die $!;
print $kf join('', map { ('a' .. 'z', 0 .. 9)[rand 36] } 1 .. 48), "\n";
close $kf;

my $ng = start_nginx(
    name   => 'storage',
    http   => db_config(size => 4) . "
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;
    defarm_jobs interval=200ms lease=5s;
    defarm_secret_key file=$keyfile;",
    server => '
        location / {
            defarm_api on;
        }');

sub body { json_body(@_) }
sub as { api_as($ng, @_) }
my $T = JSON::PP::true;
my $F = JSON::PP::false;
my $uuid = '0b6f8f9e-1d2c-4c3b-9a8e-7f6d5c4b3a21';
my ($admin, $owner, $member, $other, $pro, $limited) =
    map { api_user($ng, "t092_${_}_$$") } qw(admin owner member other pro limited);
sql("UPDATE users SET is_admin = true WHERE id = '$admin->{id}'");
sql("UPDATE users SET tier = 'Professional' WHERE id = '$pro->{id}'");
sql("UPDATE users SET available_adapters = '{}' WHERE id = '$limited->{id}'");

sub item {
    my ($who, $tag) = @_;
    return body(as($who, POST => '/api/items', { identifiers => [ { key => 'lot', value => "$tag-$$" } ],
                                                enriched_data => { tag => $tag },
                                                source_entry => $uuid }))->{dfid};
}
sub circuit {
    my ($who, $name, %extra) = @_;
    return body(as($who, POST => '/api/circuits', { name => $name, %extra }));
}
sub ipfs_cat {
    my ($cid) = @_;
    return scalar `curl -s -m 10 -X POST '$ipfs/api/v0/cat?arg=$cid'`;
}
sub history { body(as($owner, GET => "/api/items/$_[0]/storage-history")) }
sub upload_state {
    return sql("SELECT state || ':' || attempts FROM jobs WHERE kind = 'ipfs_upload' "
               . "AND payload ->> 'dfid' = '$_[0]' ORDER BY job_id DESC LIMIT 1");
}

# ------------------------------------------------- adapter configurations

my $api_key = "ipfs-key-$$";
my $cfg = { name => 'Local IPFS', description => 'the test node', adapter_type => 'ipfs-ipfs',
            connection_details => { endpoint => "$ipfs/", auth_type => 'None', api_key => $api_key,
                                    timeout_ms => 10000, retry_attempts => 2 } };

is(as($owner, GET => '/api/admin/adapters')->{status}, 403, 'configs: a non-admin is refused');
is(as($owner, POST => '/api/admin/adapters', $cfg)->{status}, 403, '... and cannot create one');
is(http($ng, GET => '/api/admin/adapters')->{status}, 401, '... nor can nobody');

for my $bad (
    [ 'malformed JSON', '{"name": ' ],
    [ 'not an object', [1] ],
    [ 'no name', { %$cfg, name => undef } ],
    [ 'no connection', { name => 'x', adapter_type => 'ipfs-ipfs' } ],
    [ 'an unknown type', { %$cfg, adapter_type => 'ftp' } ],
    [ 'type none', { %$cfg, adapter_type => 'none' } ],
    [ 'a number name', { %$cfg, name => 5 } ],
    [ 'an unknown field', { %$cfg, colour => 'red' } ],
    [ 'no endpoint', { %$cfg, connection_details => { auth_type => 'None' } } ],
    [ 'a file: endpoint', { %$cfg, connection_details => { endpoint => 'file:///etc/passwd' } } ],
    [ 'an endpoint with a query', { %$cfg, connection_details => { endpoint => "$ipfs?x=1" } } ],
    [ 'a bad auth_type', { %$cfg, connection_details => { endpoint => $ipfs, auth_type => 'Magic' } } ],
    [ 'a string timeout', { %$cfg, connection_details => { endpoint => $ipfs, timeout_ms => '5' } } ],
    [ 'a huge timeout', { %$cfg, connection_details => { endpoint => $ipfs, timeout_ms => 10**9 } } ],
    [ 'a header with a line break',
      { %$cfg, connection_details => { endpoint => $ipfs, custom_headers => { 'X-A' => "a\r\nB: c" } } } ],
) {
    my ($tag, $b) = @$bad;
    if (ref $b eq 'HASH') { delete $b->{$_} for grep { !defined $b->{$_} } keys %$b }
    my $res = as($admin, POST => '/api/admin/adapters', $b);
    is($res->{status}, 400, "create, $tag: 400");
    like(body($res)->{error} // '', qr/\S/, "... $tag: a message");
}
is(sql('SELECT count(*) FROM adapter_configs'), 0, 'nothing stored by the refusals');

my $res = as($admin, POST => '/api/admin/adapters', $cfg);
is($res->{status}, 201, 'create: 201');
my $conf = body($res)->{config} // {};
like($conf->{config_id} // '', qr/^[0-9a-f-]{36}$/, '... an id');
is($conf->{adapter_type}, 'ipfs-ipfs', '... the type');
is($conf->{connection_details}{has_api_key}, $T, '... has_api_key');
is($conf->{connection_details}{timeout_ms}, 10000, '... the timeout');
ok(!exists $conf->{connection_details}{api_key}, '... the key is not answered');
unlike($res->{body}, qr/\Q$api_key\E/, '... anywhere');
is(sql("SELECT count(*) FROM adapter_configs WHERE position('$api_key' in encode(api_key, 'escape')) > 0 "
       . "OR connection_details::text LIKE '%$api_key%'"), 0, '... and stored sealed');

my $dead = body(as($admin, POST => '/api/admin/adapters',
                   { name => 'Down', adapter_type => 'IpfsIpfs',
                     connection_details => { endpoint => 'http://127.0.0.1:9', retry_attempts => 1,
                                             timeout_ms => 1000 } }))->{config} // {};
is($dead->{adapter_type}, 'ipfs-ipfs', 'a PascalCase type is read as its name');
my $stellar = body(as($admin, POST => '/api/admin/adapters',
                      { name => 'Stellar', adapter_type => 'stellar_testnet-ipfs',
                        connection_details => { endpoint => 'https://soroban-testnet.stellar.org' },
                        contract_configs => { network => 'testnet' } }))->{config} // {};
is($stellar->{adapter_type}, 'stellar_testnet-ipfs', 'a Stellar config is accepted');

my $list = body(as($admin, GET => '/api/admin/adapters'));
is($list->{count}, 3, 'list: all three');
unlike(as($admin, GET => '/api/admin/adapters')->{body}, qr/\Q$api_key\E/, '... without the key');
is(as($admin, GET => '/api/admin/adapters?active_only=maybe')->{status}, 400, 'active_only=maybe: 400');
is(body(as($admin, GET => "/api/admin/adapters/$conf->{config_id}"))->{config}{name}, 'Local IPFS', 'get one');
is(as($admin, GET => "/api/admin/adapters/$uuid")->{status}, 404, 'an unknown id: 404');
is(as($admin, GET => '/api/admin/adapters/nope')->{status}, 404, 'a malformed id: 404');
$res = as($admin, PUT => "/api/admin/adapters/$dead->{config_id}", { is_active => $F });
is(body($res)->{config}{is_active}, $F, 'update: deactivated');
is(as($admin, PUT => "/api/admin/adapters/$dead->{config_id}", { is_active => 'no' })->{status}, 400,
   'update: a string flag is refused');
is(as($admin, PUT => "/api/admin/adapters/$uuid", { name => 'x' })->{status}, 404, 'update: unknown id');
$res = as($admin, POST => "/api/admin/adapters/$conf->{config_id}/set-default");
is($res->{status}, 200, 'set-default');
is(body($res)->{config}{is_default}, $T, '... it is the default');
is(as($admin, POST => "/api/admin/adapters/$uuid/set-default")->{status}, 404, 'set-default: unknown id');

# ---------------------------------------------------- a circuit's adapter

my $c = circuit($owner, "storage $$")->{circuit_id};
as($owner, POST => "/api/circuits/$c/members", { member_id => $member->{id}, role => 'member' });
my $ad = body(as($owner, GET => "/api/circuits/$c/adapter"));
is($ad->{adapter_type}, 'none', 'a new circuit: no adapter');
is($ad->{configured_by}, 'system', '... configured by the system');
is(as($other, GET => "/api/circuits/$c/adapter")->{status}, 404, 'a non-member cannot read it');
is(as($member, PUT => "/api/circuits/$c/adapter", { adapter_type => 'ipfs-ipfs' })->{status}, 403,
   'a member without ManagePermissions cannot set it');
is(as($owner, PUT => "/api/circuits/$c/adapter", { adapter_type => 'floppy' })->{status}, 400, 'an unknown type: 400');
is(as($owner, PUT => "/api/circuits/$c/adapter", { adapter_type => 'ipfs-ipfs', requires_approval => 'yes' })->{status},
   400, 'a string flag: 400');
is(as($owner, PUT => "/api/circuits/$c/adapter", '{"adapter_type":')->{status}, 400, 'malformed JSON: 400');
is_err(as($owner, PUT => "/api/circuits/$c/adapter", { adapter_type => 'stellar_testnet-ipfs' }), 403,
       qr/tier/i, 'Basic and Stellar testnet');
$res = as($owner, PUT => "/api/circuits/$c/adapter", { adapter_type => 'IpfsIpfs' });
is($res->{status}, 200, 'the owner sets ipfs-ipfs');
is(body($res)->{adapter_type}, 'ipfs-ipfs', '... named as the API names it');
is(body($res)->{configured_by}, $owner->{id}, '... configured by the owner');
is(sql("SELECT count(*) FROM notifications WHERE notification_type = 'CircuitAdapterConfigUpdated' "
       . "AND data ->> 'circuit_id' = '$c'"), 2, '... owner and member are told');

my $cs = circuit($owner, "stellar at birth $$", adapter_config => { adapter_type => 'stellar_mainnet-ipfs' });
ok(!$cs->{circuit_id}, 'created with an adapter its tier may not use: refused');
is(sql("SELECT count(*) FROM circuits WHERE name = 'stellar at birth $$'"), 0, '... and no circuit left');
my $cb = circuit($owner, "ipfs at birth $$", adapter_config => { adapter_type => 'ipfs-ipfs' })->{circuit_id};
is(body(as($owner, GET => "/api/circuits/$cb/adapter"))->{adapter_type}, 'ipfs-ipfs',
   'created with an ipfs-ipfs adapter');

# --------------------------------------------------- a push is uploaded

my $d = item($owner, 'a');
my $doc = as($owner, GET => "/api/items/$d")->{body};
is(as($owner, GET => "/api/items/$d/storage-history")->{status}, 404, 'no history before a push: 404');
is(as($owner, POST => "/api/circuits/$c/push/$d", {})->{status}, 200, 'a push into the ipfs circuit');
ok(wait_until(sub { (history($d)->{records} // [])->[0] }, 20), 'the upload is recorded')
    or diag(upload_state($d));
my $rec = (history($d)->{records} // [])->[0] // {};
my $cid = $rec->{ipfs_cid} // '';
like($cid, qr/^(Qm[1-9A-HJ-NP-Za-km-z]{44}|b[a-z2-7]{50,})$/, '... with a CID');
is($rec->{ipfs_pinned}, $T, '... pinned');
is($rec->{adapter_type}, 'ipfs-ipfs', '... through ipfs-ipfs');
is($rec->{triggered_by}, 'circuit_push', '... by the push');
is($rec->{storage_location}{IPFS}{cid}, $cid, '... its location');
is($rec->{is_primary}, $T, '... the primary location');
is(ipfs_cat($cid), $doc, 'the IPFS node returns the item JSON for the CID');
like(scalar `curl -s -m 10 -X POST '$ipfs/api/v0/pin/ls?arg=$cid'`, qr/\Q$cid\E/, '... and holds it pinned');
is(upload_state($d), 'Done:1', 'the job: Done in one attempt');
is(sql("SELECT count(*) FROM jobs WHERE kind = 'ipfs_upload' AND payload ->> 'dfid' = '$d' AND payload ? 'doc'"),
   0, '... its copy of the document scrubbed');

# jobs queued one by one while the runner claims: each run on its first
# attempt (a claim once dropped a job queued during it, which then waited
# out its lease)
sql("DO \$\$ BEGIN FOR i IN 1 .. 300 LOOP "
    . "PERFORM defarm_storage_enqueue('$d', 'ipfs-ipfs', 'race', NULL, '$owner->{id}'); COMMIT; "
    . "PERFORM pg_sleep(0.002); END LOOP; END \$\$");
ok(wait_until(sub { sql("SELECT count(*) FROM jobs WHERE payload ->> 'triggered_by' = 'race' "
                        . "AND state <> 'Done'") eq '0' }, 30),
   '300 uploads queued one by one: all Done');
is(sql("SELECT max(attempts) FROM jobs WHERE payload ->> 'triggered_by' = 'race'"), 1,
   '... each on its first attempt');
sql("DELETE FROM storage_history WHERE triggered_by = 'race'");
sql("UPDATE storage_history SET is_primary = true WHERE dfid = '$d'");
sql("DELETE FROM item_cid_timeline WHERE dfid = '$d' AND event_sequence > 1");

my $tl = body(as($owner, GET => "/api/items/$d/timeline"));
is($tl->{count}, 1, 'the CID timeline: one entry');
is($tl->{timeline}[0]{cid}, $cid, '... the CID');
is($tl->{timeline}[0]{event_sequence}, 1, '... sequence 1');
is($tl->{timeline}[0]{network}, 'ipfs', '... on ipfs');
is(body(as($owner, GET => "/api/items/$d/timeline/1"))->{entry}{cid}, $cid, 'timeline/1');
is(as($owner, GET => "/api/items/$d/timeline/2")->{status}, 404, 'timeline/2: 404');
is(as($owner, GET => "/api/items/$d/timeline/x")->{status}, 400, 'timeline/x: 400');
is(as($member, GET => "/api/items/$d/timeline")->{status}, 200, 'a member of its circuit reads the timeline');
is(as($other, GET => "/api/items/$d/timeline")->{status}, 404, 'another user does not');
is(as($other, GET => "/api/items/$d/storage-history")->{status}, 404, '... nor its storage history');
is(as($other, GET => "/api/storage-history/$d")->{status}, 404, '... under either path');
is(http($ng, GET => "/api/items/$d/storage-history")->{status}, 401, 'nobody: 401');

my $sh = body(as($owner, GET => "/api/storage-history/$d"))->{data} // {};
is($sh->{primary_location}{ipfs_cid}, $cid, 'storage-history: the primary location');
is($sh->{total_records}, 1, '... one record');
is_deeply($sh->{pending_uploads}, [], '... nothing pending');
my $loc = body(as($owner, GET => "/api/storage-history/$d/locations"))->{data} // {};
is($loc->{locations}[0]{location}{IPFS}{cid}, $cid, 'locations: the path\'s DFID');
my $st = body(as($owner, GET => '/api/storage-history/statistics'))->{data} // {};
is($st->{by_adapter}{'ipfs-ipfs'}, 1, 'statistics: one ipfs-ipfs record of the owner');
is(body(as($other, GET => '/api/storage-history/statistics'))->{data}{total_records}, 0,
   '... another user has none');
is(http($ng, GET => "/api/public/storage-history/$d")->{status}, 404, 'public: not published, 404');

# a push waiting for approval is uploaded when approved, not before
my $ca = circuit($owner, "approval $$", require_approval_for_push => $T,
                 adapter_config => { adapter_type => 'ipfs-ipfs' })->{circuit_id};
my $da = item($owner, 'approval');
my $op = body(as($owner, POST => "/api/circuits/$ca/push/$da", {}));
is($op->{status}, 'Pending', 'a push into an ipfs circuit that needs approval: Pending');
is(sql("SELECT count(*) FROM jobs WHERE kind = 'ipfs_upload' AND payload ->> 'dfid' = '$da'"), 0,
   '... nothing uploaded yet');
is(as($owner, POST => "/api/circuits/operations/$op->{operation_id}/approve", {})->{status}, 200, '... approved');
ok(wait_until(sub { (history($da)->{records} // [])->[0] }, 20), '... then uploaded');
is(history($da)->{records}[0]{triggered_by_id}, $op->{operation_id}, '... by that operation');

# ------------------------------------------- migration and the primary

is(as($owner, POST => "/api/storage-history/$d/migrate", { adapter_type => 'tape' })->{status}, 400,
   'migrate to an unknown adapter: 400');
is(as($owner, POST => "/api/storage-history/$d/migrate", {})->{status}, 400, 'migrate without a type: 400');
is(as($other, POST => "/api/storage-history/$d/migrate", { adapter_type => 'ipfs-ipfs' })->{status}, 404,
   'another user\'s item: 404');
is_err(as($owner, POST => "/api/storage-history/$d/migrate", { adapter_type => 'stellar_testnet-ipfs' }), 403,
       qr/permission/i, 'a Basic user to Stellar');
my $dp = item($pro, 'pro');
like($dp // '', qr/^DFID-/, 'a Professional user\'s item');
$res = as($pro, POST => "/api/storage-history/$dp/migrate", { adapter_type => 'stellar_testnet-ipfs' });
is($res->{status}, 503, 'a Professional user to Stellar: 503');
is(body($res)->{error_kind}, 'adapter_unavailable', '... adapter_unavailable');
$res = as($owner, POST => "/api/storage-history/$d/migrate", { adapter_type => 'ipfs-ipfs' });
is($res->{status}, 202, 'migrate to ipfs-ipfs: 202');
ok(wait_until(sub { scalar(@{ history($d)->{records} // [] }) == 2 }, 20), '... a second record');
my @recs = @{ history($d)->{records} // [] };
is($recs[0]{triggered_by}, 'storage_migration', '... by the migration');
is($recs[0]{is_primary}, $T, '... the primary now');
is($recs[1]{is_primary}, $F, '... the first one no longer');
is(body(as($owner, GET => "/api/items/$d/timeline"))->{count}, 2, '... and a second timeline entry');

for my $bad ([ {}, 400, 'no record_id' ], [ { record_id => 'one' }, 400, 'a string' ],
             [ { record_id => 0 }, 400, 'zero' ], [ { record_id => 999999 }, 404, 'unknown' ]) {
    is(as($owner, POST => "/api/storage-history/$d/primary", $bad->[0])->{status}, $bad->[1],
       "primary, $bad->[2]: $bad->[1]");
}
is(as($other, POST => "/api/storage-history/$d/primary", { record_id => $recs[1]{record_id} })->{status}, 404,
   'primary of another user\'s item: 404');
$res = as($owner, POST => "/api/storage-history/$d/primary", { record_id => $recs[1]{record_id} });
is($res->{status}, 200, 'primary: the first record again');
is(body($res)->{data}{primary_location}{record_id}, $recs[1]{record_id}, '... it is the primary');
is(sql("SELECT count(*) FROM storage_history WHERE dfid = '$d' AND is_primary"), 1, '... the only one');

# ------------------------------------------ gating, and Stellar refused

my $dl = item($limited, 'l');
my $cl = circuit($limited, "open $$")->{circuit_id};
as($limited, PUT => "/api/circuits/$cl/adapter", { adapter_type => 'ipfs-ipfs' });
is_err(as($limited, POST => "/api/circuits/$cl/push/$dl", {}), 403, qr/Adapter permission denied/,
       'a user without ipfs-ipfs pushes into an ipfs circuit');
is(sql("SELECT count(*) FROM circuit_items WHERE dfid = '$dl'"), 0, '... the item is not in it');
as($limited, PUT => "/api/circuits/$cl/adapter", { adapter_type => 'ipfs-ipfs', sponsor_adapter_access => $T });
is(as($limited, POST => "/api/circuits/$cl/push/$dl", {})->{status}, 200, '... allowed when the circuit sponsors it');

my $cp = circuit($pro, "stellar $$")->{circuit_id};
is(as($pro, PUT => "/api/circuits/$cp/adapter", { adapter_type => 'stellar_testnet-ipfs' })->{status}, 200,
   'a Professional user sets Stellar testnet');
$res = as($pro, POST => "/api/circuits/$cp/push/$dp", {});
is($res->{status}, 503, 'a push through Stellar: 503');
is(body($res)->{error_kind}, 'adapter_unavailable', '... adapter_unavailable');
like(body($res)->{error} // '', qr/cannot be reached/, '... saying why');
is(sql("SELECT count(*) FROM circuit_operations WHERE dfid = '$dp'"), 0, '... no operation left');
is(sql("SELECT count(*) FROM circuit_items WHERE dfid = '$dp'"), 0, '... nor the item in the circuit');

# ----------------------------------------------- a node that is down

as($admin, PUT => "/api/admin/adapters/$dead->{config_id}", { is_active => $T });
as($admin, POST => "/api/admin/adapters/$dead->{config_id}/set-default");
my $d2 = item($owner, 'down');
is(as($owner, POST => "/api/circuits/$c/push/$d2", {})->{status}, 200, 'a push while the node does not answer');
ok(wait_until(sub { upload_state($d2) =~ /^Dead/ }, 30), 'the upload ends Dead')
    or diag(upload_state($d2));
is(upload_state($d2), 'Dead:2', '... after retry_attempts (1) + 1 attempts');
my $pend = (body(as($owner, GET => "/api/storage-history/$d2"))->{data}{pending_uploads} // [])->[0] // {};
is($pend->{state}, 'Dead', '... visible in the storage history');
like($pend->{last_error} // '', qr/\S/, '... with its last error');
is(as($owner, GET => "/api/items/$d2/storage-history")->{status}, 404, '... and no record made');
$res = as($owner, GET => '/api/adapters/ipfs-ipfs/health');
is($res->{status}, 503, 'health while the default node is down: 503');
is(body($res)->{error_kind}, 'adapter_unavailable', '... adapter_unavailable');

# ------------------------- a node that accepts and never answers

# the kernel accepts for a listening socket nobody accepts on: the probe
# waits for an answer that never comes
my $silent = IO::Socket::INET->new(Listen => 8, LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp')
    or die "listen: $!";
my $mute = body(as($admin, POST => '/api/admin/adapters',
                   { name => 'Mute', adapter_type => 'ipfs-ipfs',
                     connection_details => { endpoint => 'http://127.0.0.1:' . $silent->sockport,
                                             timeout_ms => 1500 } }))->{config} // {};
as($admin, POST => "/api/admin/adapters/$mute->{config_id}/set-default");
$res = as($owner, GET => '/api/adapters/ipfs-ipfs/health');
is($res->{status}, 504, 'health of a node that never answers: 504 after its timeout');
is(body($res)->{error_kind}, 'external_timeout', '... external_timeout');
my $mark = $ng->log_mark;
ok(abort_request($ng, GET => '/api/adapters/ipfs-ipfs/health',
                 headers => { Authorization => "Bearer $owner->{token}" }, after => 0.3),
   'a client that goes away during a probe');
sleep 2;
is(as($owner, GET => '/api/adapters/templates')->{status}, 200, '... the worker serves on');
unlike($ng->log($mark), qr/\[(alert|crit|emerg)\]|signal/, '... nothing went wrong');
as($admin, DELETE => "/api/admin/adapters/$mute->{config_id}");
close $silent;
as($admin, POST => "/api/admin/adapters/$conf->{config_id}/set-default");

# ---------------------------------------------------- the user's routes

my $av = body(as($owner, GET => '/api/adapters'));
is_deeply($av->{available_adapters}, ['ipfs-ipfs'], 'a Basic user: ipfs-ipfs');
is($av->{source}, 'tier', '... from the tier');
is($av->{adapters}[0]{configured}, $T, '... configured');
is($av->{adapters}[0]{usable}, $T, '... usable');
is(body(as($limited, GET => '/api/adapters'))->{source}, 'custom', 'a custom list: custom');
is_deeply(body(as($pro, GET => '/api/adapters'))->{available_adapters}, ['ipfs-ipfs', 'stellar_testnet-ipfs'],
          'a Professional user: and Stellar testnet');
is(as($owner, POST => '/api/adapters/select', { adapter_type => 'ipfs-ipfs' })->{status}, 200, 'select ipfs-ipfs');
is(as($owner, POST => '/api/adapters/select', { adapter_type => 'stellar_mainnet-ipfs' })->{status}, 403,
   'select an adapter not available: 403');
is(as($owner, POST => '/api/adapters/select', { adapter_type => 7 })->{status}, 400, 'select a number: 400');
is(as($owner, POST => '/api/adapters/select', 'nope')->{status}, 400, 'select malformed JSON: 400');
is(http($ng, GET => '/api/adapters')->{status}, 401, 'the adapters of nobody: 401');
my $tp = body(http($ng, GET => '/api/adapters/templates'));
is($tp->{templates}[0]{adapter_type}, 'ipfs-ipfs', 'templates, open');

$res = as($owner, GET => '/api/adapters/ipfs-ipfs/health');
is($res->{status}, 200, 'health of ipfs-ipfs: 200');
is(body($res)->{healthy}, $T, '... healthy');
like(body($res)->{node_version} // '', qr/^\d+\.\d+/, '... the node\'s version, asked');
unlike($res->{body}, qr/\Q$ipfs\E/, '... the endpoint not shown');
is(body(as($owner, GET => '/api/adapters/IpfsIpfs/status'))->{check}, 'status', 'status of IpfsIpfs');
$res = as($owner, GET => '/api/adapters/stellar_testnet-ipfs/health');
is($res->{status}, 503, 'health of Stellar: 503');
is(body($res)->{error_kind}, 'adapter_unavailable', '... adapter_unavailable');
is(as($owner, GET => '/api/adapters/ftp/health')->{status}, 400, 'health of an unknown type: 400');
is(http($ng, GET => '/api/adapters/ipfs-ipfs/health')->{status}, 401, 'health for nobody: 401');

# ------------------------------------------------------------ test-push

is(as($owner, POST => '/api/test/test-push', { adapter_type => 'ipfs-ipfs' })->{status}, 403,
   'test-push: a non-admin is refused');
is(as($admin, POST => '/api/test/test-push', {})->{status}, 400, 'test-push without a type: 400');
is(as($admin, POST => '/api/test/test-push', [])->{status}, 400, 'test-push with an array: 400');
is(as($admin, POST => '/api/test/test-push', { adapter_type => 'ftp' })->{status}, 400, 'test-push to ftp: 400');
is(as($admin, POST => '/api/test/test-push', { adapter_type => 'stellar_mainnet-ipfs' })->{status}, 503,
   'test-push to Stellar: 503');
$res = as($admin, POST => '/api/test/test-push', { adapter_type => 'ipfs-ipfs', test_data => { n => $$ } });
is($res->{status}, 200, 'test-push to ipfs-ipfs: 200');
my $tpb = body($res);
like($tpb->{test_dfid} // '', qr/^TEST-DFID-[0-9a-f-]{36}$/, '... a throw-away DFID');
my $got = eval { JSON::PP->new->decode(ipfs_cat($tpb->{hash} // 'x')) } // {};
is($got->{dfid}, $tpb->{test_dfid}, '... the node returns the test document');
is($got->{test_data}{n}, $$, '... with the test data');

# -------------------------------------------------------------- the rest

is(body(as($owner, GET => '/api/timeline/indexing-progress/stellar-testnet'))->{status}, 'not_running',
   'indexing progress: no listener runs, and it says so');
is(as($owner, GET => '/api/timeline/indexing-progress/bitcoin')->{status}, 400, 'an unknown network: 400');

$res = as($admin, DELETE => "/api/admin/adapters/$stellar->{config_id}");
is($res->{status}, 200, 'delete a config');
is(as($admin, DELETE => "/api/admin/adapters/$stellar->{config_id}")->{status}, 404, '... twice: 404');

unlike($ng->log, qr/\Q$api_key\E/, 'the adapter key never in the log');
is(sql("SELECT count(*) FROM jobs WHERE payload::text LIKE '%$api_key%'"), 0, '... nor in a job');
unlike($ng->log, qr/\[(alert|crit|emerg)\]/, 'no alert in the log');

stop_nginx($ng);

# a node without defarm_secret_key cannot seal keys: refused, not stored
# in clear
my $nokey = start_nginx(
    name   => 'storage-nokey',
    http   => db_config(size => 2) . "
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;",
    server => '
        location / {
            defarm_api on;
        }');
$res = api_as($nokey, $admin, POST => '/api/admin/adapters',
              { name => 'keyed', adapter_type => 'ipfs-ipfs',
                connection_details => { endpoint => $ipfs, api_key => "k2-$$" } });
is($res->{status}, 503, 'no defarm_secret_key: a config with a key is refused, 503');
is(sql("SELECT count(*) FROM adapter_configs WHERE name = 'keyed'"), 0, '... and not stored');
is(api_as($nokey, $admin, POST => '/api/admin/adapters',
          { name => 'keyless', adapter_type => 'ipfs-ipfs',
            connection_details => { endpoint => $ipfs } })->{status}, 201, '... one without keys is stored');
stop_nginx($nokey);

done_testing();
