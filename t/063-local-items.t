# The local-item workflow: create (LID), mapping, merge with the three
# strategies, unmerge, duplicates, organize (dry run and for real);
# validation (bad UUIDs, empty lists, a bad strategy with provided and
# allowed); another user's items are 404.

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use DefarmTest;

my $json = JSON::PP->new->utf8->canonical;
my (undef, $secret_file) = jwt_secret();

my $ng = start_nginx(
    name   => 'local-items',
    http   => db_config(size => 2) . "
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;",
    server => '
        location / {
            defarm_api on;
        }');

sub body { json_body(@_) }

sub user { api_user($ng, "t063_$_[0]_$$") }

my ($alice, $bob) = (user('alice'), user('bob'));

sub as { api_as($ng, @_) }

my $sisbov = { namespace => 'bovino', key => 'sisbov',
               value => 'BR' . sprintf('%012d', $$), id_type => 'Canonical' };

sub local_item {
    my ($who, $data, @ids) = @_;
    my $res = as($who, POST => '/api/items/local',
                 { identifiers => [ @ids ], enriched_data => $data });
    is($res->{status}, 201, 'a local item');
    return body($res)->{data}{local_id};
}

my $l1 = local_item($alice, { tags => [ 'a' ], w => 1, o => { x => 1 } },
                    $sisbov);
my $l2 = local_item($alice, { tags => [ 'a', 'b' ], w => 2, o => { y => 2 } },
                    $sisbov);
my $l3 = local_item($alice, { tags => [ 'c' ], w => 3 }, $sisbov);
like($l1 // '', qr/^[0-9a-f-]{36}$/, 'a local id');

my $res = as($alice, GET => "/api/items/mapping/$l1");
is(body($res)->{data}{status}, 'LocalOnly', 'mapping: LocalOnly');
is(body($res)->{data}{dfid}, undef, 'no DFID yet');
is(as($bob, GET => "/api/items/mapping/$l1")->{status}, 404,
   'another user\'s local item: 404');
is(as($alice, GET => '/api/items/mapping/nope')->{status}, 400,
   'a bad local id: 400');

# duplicates: the three share their first canonical identifier

$res = as($alice, GET => '/api/items/local/duplicates');
is($res->{status}, 200, 'duplicates');
my $g = body($res)->{duplicate_groups}[0];
is(scalar @{ $g->{items} // [] }, 3, 'one group of three');
is($g->{identifier_key}, 'bovino:sisbov', 'by namespace:key');
is_deeply($g->{conflicts}, [ 'o', 'tags', 'w' ], 'the fields that differ');
is(body($res)->{summary}{items_in_duplicates}, 3, 'summary');
is(scalar @{ body(as($bob, GET => '/api/items/local/duplicates'))
                 ->{duplicate_groups} }, 0, 'none for bob');

# merge, append

$res = as($alice, POST => '/api/items/local/merge',
          { master_lid => $l1, merge_lids => [ $l2 ] });
is($res->{status}, 200, 'merge (append by default)');
my $m = body($res)->{data};
is($m->{merged_count}, 1, 'one merged');
is_deeply($m->{master_item}{enriched_data},
          { tags => [ 'a', 'b' ], w => 2, o => { x => 1, y => 2 } },
          'append: arrays unioned, objects merged, other values replaced');

is(as($alice, POST => '/api/items/local/merge',
      { master_lid => $l1, merge_lids => [ $l2 ] })->{status}, 409,
   'merging an item already merged: 409');

# unmerge

$res = as($alice, POST => '/api/items/local/unmerge', { merged_lid => $l2 });
is($res->{status}, 200, 'unmerge');
is(body($res)->{previous_master_lid}, $l1, 'from its master');
is(body($res)->{restored_item}{status}, 'Active', 'Active again');
is(as($alice, POST => '/api/items/local/unmerge', { merged_lid => $l2 })
       ->{status}, 409, 'unmerging an item not merged: 409');

# keep_first and overwrite

$res = as($alice, POST => '/api/items/local/merge',
          { master_lid => $l3, merge_lids => [ $l2 ],
            merge_strategy => 'keep_first' });
is_deeply(body($res)->{data}{master_item}{enriched_data},
          { tags => [ 'c' ], w => 3 }, 'keep_first: the master unchanged');
as($alice, POST => '/api/items/local/unmerge', { merged_lid => $l2 });
$res = as($alice, POST => '/api/items/local/merge',
          { master_lid => $l3, merge_lids => [ $l2 ],
            merge_strategy => 'overwrite' });
is(body($res)->{data}{master_item}{enriched_data}{w}, 2,
   'overwrite: the merged item wins');
is_deeply(body($res)->{data}{master_item}{enriched_data}{tags}, [ 'a', 'b' ],
          'arrays replaced, not unioned');
as($alice, POST => '/api/items/local/unmerge', { merged_lid => $l2 });

# validation

$res = as($alice, POST => '/api/items/local/merge',
          { master_lid => $l1, merge_lids => [ $l2 ],
            merge_strategy => 'smash' });
is($res->{status}, 400, 'a bad strategy: 400');
is(body($res)->{provided}, 'smash', 'with what was provided');
is_deeply(body($res)->{allowed}, [ 'append', 'keep_first', 'overwrite' ],
          'and what is allowed');
is(as($alice, POST => '/api/items/local/merge',
      { master_lid => 'x', merge_lids => [ $l2 ] })->{status}, 400,
   'a bad master: 400');
is(as($alice, POST => '/api/items/local/merge',
      { master_lid => $l1, merge_lids => [] })->{status}, 400,
   'an empty list: 400');
is(as($alice, POST => '/api/items/local/merge',
      { master_lid => $l1, merge_lids => [ $l1 ] })->{status}, 400,
   'the master in its own list: 400');
is(as($alice, POST => '/api/items/local/merge',
      { master_lid => $l1, merge_lids => [ $l2, $l2 ] })->{status}, 400,
   'an item twice: 400');
is(as($alice, POST => '/api/items/local/merge',
      { master_lid => $l1,
        merge_lids => [ '00000000-0000-4000-8000-000000000000' ] })
       ->{status}, 404, 'an unknown item: 404');
my $bl = local_item($bob, { b => 1 });
is(as($alice, POST => '/api/items/local/merge',
      { master_lid => $l1, merge_lids => [ $bl ] })->{status}, 404,
   'another user\'s item: 404');
is(as($alice, POST => '/api/items/local',
      { identifiers => [ { key => 'cpf', value => '1',
                           id_type => 'Canonical' } ] })->{status}, 400,
   'a local item with a bad identifier: 400');

# organize: dry run, then for real

$res = as($alice, POST => '/api/items/local/organize',
          { action => 'deduplicate', dry_run => JSON::PP::true });
is($res->{status}, 200, 'organize, dry run');
is(body($res)->{summary}{merged_count}, 2, 'would merge two');
is(body($res)->{operations}[0]{status}, 'skipped', 'skipped (dry run)');
is(scalar @{ body(as($alice, GET => '/api/items/local/duplicates'))
                 ->{duplicate_groups} }, 1, 'nothing changed');

$res = as($alice, POST => '/api/items/local/organize',
          { action => 'merge_all' });
is(body($res)->{summary}{items_after}, 1, 'organize: one item left');
is(body($res)->{operations}[0]{status}, 'success', 'merged');
is(scalar @{ body(as($alice, GET => '/api/items/local/duplicates'))
                 ->{duplicate_groups} }, 0, 'no duplicates left');
is(as($alice, POST => '/api/items/local/organize', { action => 'explode' })
       ->{status}, 400, 'a bad action: 400');
is(as($alice, POST => '/api/items/local/organize',
      { action => 'deduplicate', dry_run => 'yes' })->{status}, 400,
   'dry_run not a boolean: 400');

unlike($ng->log, qr/\[(alert|crit|emerg)\]/, 'no alert');
stop_nginx($ng);

is(stale_documents(), 0,
   'every write left its items\' stored JSON as they are now');

done_testing();
