# Pending items: a create whose identifiers match several items is held
# (409 with its pending_id), listed, read, and resolved by its owner:
# approve (a new item), modify (created with resolution, or held again),
# reject; a resolved one cannot be resolved again; bad input is 400.

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use DefarmTest;

my $json = JSON::PP->new->utf8->canonical;
my (undef, $secret_file) = jwt_secret();

my $ng = start_nginx(
    name   => 'pending',
    http   => db_config(size => 2) . "
    defarm_cache zone=pending:1m ttl=1h;
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;",
    server => '
        location / {
            defarm_api on;
        }');

sub body { json_body(@_) }

sub user { api_user($ng, "t064_$_[0]_$$") }

my ($alice, $bob) = (user('alice'), user('bob'));

sub as { api_as($ng, @_) }

my $uuid = '0b6f8f9e-1d2c-4c3b-9a8e-7f6d5c4b3a21';
my ($x, $y) = ({ key => 'lot', value => "x-$$" }, { key => 'lot',
                                                    value => "y-$$" });

for my $id ($x, $y) {
    is(as($alice, POST => '/api/items',
          { identifiers => [ $id ], source_entry => $uuid })->{status}, 201,
       "an item with $id->{value}");
}

sub conflict {
    my $res = as($alice, POST => '/api/items',
                 { identifiers => [ $x, $y ], enriched_data => { n => 1 },
                   source_entry => $uuid });
    is($res->{status}, 409, 'identifiers of two items: 409');
    like(body($res)->{pending_id} // '', qr/^[0-9a-f-]{36}$/,
         'held as a pending item');
    return body($res)->{pending_id};
}

my $p1 = conflict();

my $res = as($alice, GET => "/api/items/pending");
is(scalar @{ body($res) }, 1, 'listed');
is(body($res)->[0]{reason}, 'ConflictingDFIDs', 'with its reason');
is(scalar @{ body(as($bob, GET => '/api/items/pending')) }, 0,
   'not for bob');
is(body(as($alice, GET => "/api/items/pending/$p1"))->{id}, $p1, 'get');
is(as($bob, GET => "/api/items/pending/$p1")->{status}, 404,
   'bob cannot read it');
is(as($alice, GET => '/api/items/pending/nope')->{status}, 400,
   'a bad id: 400');
is(scalar @{ body(as($alice, GET => '/api/items/pending?priority_min=4')) },
   0, 'priority filter');
is(as($alice, GET => '/api/items/pending?priority_min=9')->{status}, 400,
   'a bad priority: 400');

# approve: a new item

$res = as($alice, POST => "/api/items/pending/$p1/resolve",
          { action => 'approve' });
is($res->{status}, 200, 'approve');
is(body($res)->{pending}{status}, 'Approved', 'Approved');
like(body($res)->{item}{dfid} // '', qr/^DFID-/, 'a new item');
is(scalar @{ body($res)->{item}{identifiers} }, 2, 'with both identifiers');
is(as($alice, POST => "/api/items/pending/$p1/resolve",
      { action => 'reject' })->{status}, 409, 'resolved already: 409');
is(scalar @{ body(as($alice, GET => '/api/items/pending')) }, 0,
   'no longer pending');

# reject

my $p2 = conflict();
$res = as($alice, POST => "/api/items/pending/$p2/resolve",
          { action => 'reject' });
is(body($res)->{pending}{status}, 'Rejected', 'reject');
is(body($res)->{item}, undef, 'no item');

# modify: still conflicting, then resolvable

my $p3 = conflict();
is(as($alice, POST => "/api/items/pending/$p3/resolve",
      { action => 'modify', new_enriched_data => { n => 2 } })->{status},
   409, 'modify that still conflicts: 409');
$res = as($alice, POST => "/api/items/pending/$p3/resolve",
          { action => 'modify',
            new_identifiers => [ { key => 'lot', value => "z-$$" } ] });
is($res->{status}, 200, 'modify with new identifiers');
is(body($res)->{item}{identifiers}[0]{value}, "z-$$", 'created with them');
is(body($res)->{item}{enriched_data}{n}, 2, 'and the modified data');

# validation

my $p4 = conflict();
is(as($alice, POST => "/api/items/pending/$p4/resolve", { action => 'x' })
       ->{status}, 400, 'a bad action: 400');
is(as($alice, POST => "/api/items/pending/$p4/resolve",
      { action => 'modify' })->{status}, 400, 'modify with nothing: 400');
is(as($alice, POST => "/api/items/pending/$p4/resolve",
      { action => 'modify', new_identifiers => [ { key => 'sisbov',
                                                   value => 'x',
                                                   id_type => 'Canonical' } ]
      })->{status}, 400, 'modify with a bad identifier: 400');
is(as($bob, POST => "/api/items/pending/$p4/resolve",
      { action => 'approve' })->{status}, 404, 'bob cannot resolve it');

unlike($ng->log, qr/\[(alert|crit|emerg)\]/, 'no alert');
stop_nginx($ng);

is(stale_documents(), 0,
   'every write left its items\' stored JSON as they are now');

done_testing();
