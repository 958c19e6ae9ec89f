# Receipts: issue (base64 data -> SHA-256, size, identifiers; the data is
# not stored), get, verify, list and search by identifier, key and value;
# validation; another user's receipt is a 404.

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use MIME::Base64 ();
use Digest::SHA ();
use DefarmTest;

my $json = JSON::PP->new->utf8->canonical;
my (undef, $secret_file) = jwt_secret();

my $ng = start_nginx(
    name   => 'receipts',
    http   => db_config(size => 2) . "
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;",
    server => '
        location / {
            defarm_api on;
        }');

sub body { json_body(@_) }

sub user { api_user($ng, "t062_$_[0]_$$") }

my ($alice, $bob) = (user('alice'), user('bob'));

sub as { api_as($ng, @_) }

my $doc = "invoice 42\n" x 100;
my $b64 = MIME::Base64::encode_base64($doc, '');
my $lot = { key => 'lot', value => "r-$$" };

my $res = as($alice, POST => '/api/receipts',
             { data => $b64, identifiers => [ $lot ] });
is($res->{status}, 200, 'issue');
my $rc = body($res);
is($rc->{hash}, Digest::SHA::sha256_hex($doc), 'the SHA-256 of the data');
is($rc->{data_size}, length $doc, 'its size');
is($rc->{identifiers}[0]{value}, "r-$$", 'the identifier');
is(sql("SELECT count(*) FROM receipts WHERE id = '$rc->{id}'"), 1, 'stored');

is_deeply(body(as($alice, GET => "/api/receipts/$rc->{id}")), $rc, 'get');
is(as($bob, GET => "/api/receipts/$rc->{id}")->{status}, 404,
   'another user\'s receipt: 404');
my $admin = user('admin');
sql("UPDATE users SET is_admin = true WHERE id = '$admin->{id}'");
is(as($admin, GET => "/api/receipts/$rc->{id}")->{status}, 200,
   'an admin reads it');
is(as($alice, GET => '/api/receipts/nope')->{status}, 400, 'a bad id: 400');

$res = as($alice, POST => "/api/receipts/$rc->{id}/verify", { data => $b64 });
is(body($res)->{is_valid}, JSON::PP::true, 'verify the same data: valid');
$res = as($alice, POST => "/api/receipts/$rc->{id}/verify",
          { data => MIME::Base64::encode_base64('forged', '') });
is(body($res)->{is_valid}, JSON::PP::false, 'other data: not valid');
is(body($res)->{original_hash}, $rc->{hash}, 'with both hashes');

is(as($alice, POST => '/api/receipts',
      { data => '***', identifiers => [ $lot ] })->{status}, 400,
   'bad base64: 400');
like(body(as($alice, POST => '/api/receipts',
             { data => $b64, identifiers => [] }))->{error} // '',
     qr/At least one identifier/, 'no identifiers: 400');
like(body(as($alice, POST => '/api/receipts',
             { data => $b64, identifiers => [ { key => 'cpf', value => '1',
                                                id_type => 'Canonical' } ] })
         )->{error} // '', qr/a cpf must be/, 'a bad cpf: 400');
is(as($alice, POST => '/api/receipts', { identifiers => [ $lot ] })->{status},
   400, 'no data: 400');

as($alice, POST => '/api/receipts',
   { data => $b64, identifiers => [ { key => 'lot', value => "other-$$" } ] });

is(scalar @{ body(as($alice, GET => '/api/receipts/list')) }, 2, 'list');
is(scalar @{ body(as($bob, GET => '/api/receipts/list')) }, 0,
   'nothing of alice\'s for bob');
is(scalar @{ body(as($alice, GET => "/api/receipts/search/value/r-$$")) }, 1,
   'by value');
is(scalar @{ body(as($alice, GET => '/api/receipts/search/key/lot')) }, 2,
   'by key');
is(scalar @{ body(as($alice, POST => '/api/receipts/search/identifier',
                     $lot)) }, 1, 'by identifier');
is(as($alice, POST => '/api/receipts/search/identifier', { key => 1 })
       ->{status}, 400, 'a bad identifier: 400');
is(http($ng, GET => '/api/receipts/list')->{status}, 401, 'no credentials');

unlike($ng->log, qr/\[(alert|crit|emerg)\]/, 'no alert');
stop_nginx($ng);

done_testing();
