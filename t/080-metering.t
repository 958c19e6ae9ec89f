# Metering (sql/029): with defarm_credits and defarm_tier_limits on, an
# Idempotency-Key makes a retried POST /api/items one item and one charge;
# the tier's items a month, circuits owned and requests an hour are
# refused each with its own error_kind, the limit and the tier, under
# concurrency too; a push costs circuit_operation and a rejected one is
# refunded; and when PostgreSQL loses the transaction mid-request neither
# the item nor its debit is left.

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use DefarmTest;

my (undef, $secret_file) = jwt_secret();

# tier figures small enough to reach, put back whatever happens
my %saved = map { $_ => sql("SELECT concat_ws(',', coalesce(max_items_per_month::text, 'NULL'), "
                            . "coalesce(max_circuits::text, 'NULL'), "
                            . "coalesce(max_api_requests_per_hour::text, 'NULL')) "
                            . "FROM tier_limits WHERE tier = '$_'") } qw(Professional Enterprise);
END {
    for my $t (keys %saved) {
        my ($i, $c, $h) = split /,/, $saved{$t};
        sql("UPDATE tier_limits SET max_items_per_month = $i, max_circuits = $c, "
            . "max_api_requests_per_hour = $h WHERE tier = '$t'") if defined $h;
    }
}
sql("UPDATE tier_limits SET max_items_per_month = 3, max_circuits = 2 WHERE tier = 'Professional'");
sql("UPDATE tier_limits SET max_api_requests_per_hour = 6 WHERE tier = 'Enterprise'");

my $ng = start_nginx(
    name   => 'metering',
    http   => db_config(size => 8) . "
    defarm_cache zone=metering:4m ttl=1h;
    defarm_redis 127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT};
    defarm_bcrypt_cost 4;
    defarm_credits on;
    defarm_tier_limits on;
    defarm_jwt_secret file=$secret_file;",
    server => '
        location / {
            defarm_api on;
        }');

sub body { json_body(@_) }
sub user { api_user($ng, "t080_$_[0]_$$") }
sub balance { sql("SELECT credits FROM credit_balances WHERE user_id = '$_[0]{id}'") }
my $uuid = '0b6f8f9e-1d2c-4c3b-9a8e-7f6d5c4b3a21';
my $json = JSON::PP->new->canonical;

sub post_item {
    my ($who, $lot, $key) = @_;
    return http($ng, POST => '/api/items',
                headers => { 'Content-Type' => 'application/json',
                             Authorization => "Bearer $who->{token}",
                             defined $key ? ('Idempotency-Key' => $key) : () },
                body => $json->encode({ identifiers => [ { key => 'lot', value => "$lot-$$" } ],
                                        source_entry => $uuid }));
}

# ---------------------------------------------------------- Idempotency-Key

my $u = user('idem');
my $first = post_item($u, 'idem-a', "key-a-$$");
is($first->{status}, 201, 'a keyed creation: 201');
ok(!exists $first->{headers}{'idempotent-replayed'}, '... not a replay');
my $again = post_item($u, 'idem-a', "key-a-$$");
is($again->{status}, 201, 'the same key again: 201 again');
is($again->{headers}{'idempotent-replayed'}, 'true', '... Idempotent-Replayed: true');
is(body($again)->{dfid}, body($first)->{dfid}, '... the same item');
is($again->{body}, $first->{body}, '... the same answer');
is(balance($u), 98, 'charged once (Basic: 2)');
is(sql("SELECT count(*) FROM credit_transactions WHERE user_id = '$u->{id}' AND operation = 'item_creation'"),
   1, '... one debit');

my $other_body = post_item($u, 'idem-b', "key-a-$$");
is($other_body->{status}, 422, 'the key with another request: 422');
is(body($other_body)->{error_kind}, 'idempotency_key_reused', '... idempotency_key_reused');
is(sql("SELECT count(*) FROM item_identifiers WHERE value = 'idem-b-$$'"), 0, '... nothing created');

is(post_item($u, 'idem-c', '')->{status}, 400, 'an empty key: 400');
is(post_item($u, 'idem-c', 'x' x 256)->{status}, 400, 'a key of 256 characters: 400');
is(post_item($u, 'idem-c', "a key")->{status}, 400, 'a key with a space: 400');
is(post_item($u, 'idem-c', 'k' x 255)->{status}, 201, 'a key of 255 characters: 201');

my $v = user('idem2');
is(post_item($v, 'idem-a', "key-a-$$")->{status}, 201, "another user's same key is their own");

# ten at once with one key: one item, one charge, the same answer
my @bg = map { http_bg($ng, POST => '/api/items',
                       headers => { 'Content-Type' => 'application/json',
                                    Authorization => "Bearer $u->{token}",
                                    'Idempotency-Key' => "key-par-$$" },
                       body => $json->encode({ identifiers => [ { key => 'lot', value => "par-$$" } ],
                                               source_entry => $uuid })) } 1 .. 10;
my @res = map { http_wait($_) } @bg;
is(scalar(grep { ($_->{status} // 0) == 201 } @res), 10, 'ten at once with one key: ten 201');
my %dfids = map { (body($_)->{dfid} // '') => 1 } @res;
is(scalar(keys %dfids), 1, '... one item');
is(scalar(grep { $_->{headers}{'idempotent-replayed'} } @res), 9, '... nine replays');
is(sql("SELECT count(*) FROM credit_transactions t JOIN item_identifiers i ON i.dfid = t.reference_id "
       . "WHERE i.value = 'par-$$'"), 1, '... one debit');

# a refusal is not kept: once the balance can pay, the retry runs
sql("SELECT defarm_credit_change('$v->{id}', -defarm_credit_balance('$v->{id}'), 'Penalty', 'test', NULL, 't080', NULL)");
my $poor = post_item($v, 'idem-poor', "key-poor-$$");
is($poor->{status}, 402, 'no credits: 402');
sql("SELECT defarm_credit_change('$v->{id}', 10, 'Grant', 'test', NULL, 't080', NULL)");
is(post_item($v, 'idem-poor', "key-poor-$$")->{status}, 201, '... the retry after a grant: 201');
is(balance($v), 8, '... and charged');

# --------------------------------------------------------- items a month

my $p = user('pro');
sql("UPDATE users SET tier = 'Professional' WHERE id = '$p->{id}'");
@bg = map { http_bg($ng, POST => '/api/items',
                    headers => { 'Content-Type' => 'application/json',
                                 Authorization => "Bearer $p->{token}" },
                    body => $json->encode({ identifiers => [ { key => 'lot', value => "pro-$_-$$" } ],
                                            source_entry => $uuid })) } 1 .. 12;
@res = map { http_wait($_) } @bg;
my %st;
$st{ $_->{status} // 'none' }++ for @res;
is($st{201}, 3, 'twelve at once, three a month allowed: three created');
is($st{403}, 9, '... nine 403');
my ($over) = grep { ($_->{status} // 0) == 403 } @res;
is(body($over)->{error_kind}, 'monthly_item_limit_exceeded', '... monthly_item_limit_exceeded');
is(body($over)->{limit}, 3, '... the limit');
is(body($over)->{tier}, 'Professional', '... the tier');
is(sql("SELECT count(*) FROM items WHERE owner_id = '$p->{id}'"), 3, 'three items');
is(sql("SELECT items FROM usage_months WHERE user_id = '$p->{id}'"), 3, '... counted three');
is(sql("SELECT count(*) FROM credit_transactions WHERE user_id = '$p->{id}' AND operation = 'item_creation'"),
   3, '... three debits, none for the refused');
my ($made) = grep { ($_->{status} // 0) == 201 } @res;
my $lot = body($made)->{identifiers}[0]{value};
is(api_as($ng, $p, POST => '/api/items', { identifiers => [ { key => 'lot', value => $lot } ],
                                           enriched_data => { more => 1 }, source_entry => $uuid })->{status},
   200, 'enriching an existing item is not a new one: 200');
my $batch = api_as($ng, $p, POST => '/api/items/batch',
                   { items => [ { identifiers => [ { key => 'lot', value => "pro-batch-$$" } ],
                                  source_entry => $uuid } ] });
is($batch->{status}, 403, 'a batch with a new item over the limit: 403');
is(body($batch)->{error_kind}, 'monthly_item_limit_exceeded', '... the same kind');
my $local = api_as($ng, $p, POST => '/api/items/local',
                   { identifiers => [ { key => 'lot', value => "pro-local-$$" } ] });
is($local->{status}, 403, 'a local item over the limit: 403');
is(sql("SELECT count(*) FROM items WHERE owner_id = '$p->{id}'"), 3, '... still three items');

# ------------------------------------------------------ circuits owned

@bg = map { http_bg($ng, POST => '/api/circuits',
                    headers => { 'Content-Type' => 'application/json',
                                 Authorization => "Bearer $p->{token}" },
                    body => $json->encode({ name => "c$_" })) } 1 .. 6;
@res = map { http_wait($_) } @bg;
%st = ();
$st{ $_->{status} // 'none' }++ for @res;
is($st{200}, 2, 'six circuits at once, two allowed: two created');
is($st{403}, 4, '... four 403');
($over) = grep { ($_->{status} // 0) == 403 } @res;
is(body($over)->{error_kind}, 'circuit_limit_exceeded', '... circuit_limit_exceeded');
is(body($over)->{limit}, 2, '... the limit');
is(body($over)->{tier}, 'Professional', '... the tier');
my ($c1) = map { body($_)->{circuit_id} } grep { ($_->{status} // 0) == 200 } @res;
is(api_as($ng, $p, PUT => "/api/circuits/$c1/deactivate", {})->{status}, 200, 'one deactivated');
is(api_as($ng, $p, POST => '/api/circuits', { name => 'again' })->{status}, 200,
   '... and a new one may be made');

# --------------------------------------------- pushes cost, rejections refund

my $before = balance($p);
my $d = sql("SELECT dfid FROM items WHERE owner_id = '$p->{id}' LIMIT 1");
my $cp = body(api_as($ng, $p, POST => '/api/circuits', { name => 'x' }))->{circuit_id};
ok(!defined $cp, 'a third active circuit: refused') or diag("made $cp");
my $ca = body(api_as($ng, $u, POST => '/api/circuits', { name => 'approve', require_approval_for_push => JSON::PP::true }))
    ->{circuit_id};
ok($ca, "another user's circuit, pushes approved");
api_as($ng, $u, POST => "/api/circuits/$ca/members", { member_id => $p->{id}, role => 'member' });
my $push = api_as($ng, $p, POST => "/api/circuits/$ca/push/$d", {});
is($push->{status}, 200, 'a push waiting for approval');
is(balance($p), $before - 2, '... costs circuit_operation (Professional: 2)');
my $op = body($push)->{operation_id};
is(api_as($ng, $u, POST => "/api/circuits/$ca/pending-items/$op/reject", { reason => 'no' })->{status}, 200,
   'rejected');
is(balance($p), $before, '... refunded');
is(sql("SELECT string_agg(transaction_type || ' ' || amount, ', ' ORDER BY seq) FROM credit_transactions "
       . "WHERE reference_id = '$op'"), 'Consumption -2, Refund 2', '... both in the ledger');

# -------------------------------------------------------- requests an hour

my $e = user('ent');
sql("UPDATE users SET tier = 'Enterprise' WHERE id = '$e->{id}'");
my $r1 = api_as($ng, $e, POST => '/api/api-keys', { name => 'k', organization_type => 'Producer' });
is($r1->{status}, 201, 'Enterprise (6 an hour): a request, making a key');
is($r1->{headers}{'x-ratelimit-limit'}, 6, '... X-RateLimit-Limit: 6');
is($r1->{headers}{'x-ratelimit-remaining'}, 5, '... X-RateLimit-Remaining: 5');
my $key = body($r1);
my @codes = map { api_as($ng, $e, GET => '/users/me/profile')->{status} } 1 .. 4;
is("@codes", '200 200 200 200', '... four more');
my $by_key = http($ng, GET => '/api/items', headers => { 'X-API-Key' => $key->{api_key} // '' });
SKIP: {
    skip 'no API key made', 4 unless $key->{api_key};
    is($by_key->{status}, 200, '... the sixth by the same user\'s key');
    $by_key = http($ng, GET => '/api/items', headers => { 'X-API-Key' => $key->{api_key} });
    is($by_key->{status}, 429, 'the seventh by key: 429');
    is(body($by_key)->{error_kind}, 'hourly_request_limit_exceeded', '... hourly_request_limit_exceeded');
    is(body($by_key)->{tier}, 'Enterprise', '... the tier');
}
my $over_jwt = api_as($ng, $e, GET => '/users/me/profile');
is($over_jwt->{status}, 429, 'and by token: 429 (one count for the user)');
is(body($over_jwt)->{limit}, 6, '... the limit');
is(body($over_jwt)->{tier}, 'Enterprise', '... the tier now, not the one in the token');
ok($over_jwt->{headers}{'retry-after'} > 0, '... Retry-After');
is(api_as($ng, $u, GET => '/users/me/profile')->{status}, 200, 'another user is not counted with them');

# ------------------------------------ PostgreSQL loses the transaction midway

# the user's balance row held by another session: the creation waits on
# its debit, with its item already written; its backend is then killed
my $w = user('midway');
open my $holder, '|-', 'psql', '-X', '-q', '-h', $ENV{TEST_NGINX_PG_HOST}, '-p', $ENV{TEST_NGINX_PG_PORT},
    '-U', $ENV{TEST_NGINX_PG_USER}, '-d', $ENV{TEST_NGINX_PG_DATABASE}
    or die "psql: $!";
$holder->autoflush(1);
print $holder "BEGIN; SELECT 1 FROM credit_balances WHERE user_id = '$w->{id}' FOR UPDATE;\n";
wait_until(sub { sql("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                     . "WHERE a.query LIKE '%FOR UPDATE%' AND a.query LIKE '%$w->{id}%' AND l.mode = 'RowShareLock'") > 0 },
           10);
my $bgm = http_bg($ng, POST => '/api/items',
                  headers => { 'Content-Type' => 'application/json', Authorization => "Bearer $w->{token}" },
                  body => $json->encode({ identifiers => [ { key => 'lot', value => "midway-$$" } ],
                                          source_entry => $uuid }));
my $waiting = wait_until(sub { sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                   . "AND query LIKE '%defarm_item_create_once%'") > 0 }, 10);
ok($waiting, 'the creation waits on its debit');
sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
    . "AND query LIKE '%defarm_item_create_once%'");
my $lost = http_wait($bgm);
like($lost->{status} // '', qr/^5\d\d$/, 'its backend killed: a 5xx answer');
print $holder "ROLLBACK;\n";
close $holder;
is(sql("SELECT count(*) FROM item_identifiers WHERE value = 'midway-$$'"), 0, '... no item left');
is(sql("SELECT count(*) FROM credit_transactions WHERE user_id = '$w->{id}' AND operation = 'item_creation'"),
   0, '... no debit left');
is(balance($w), 100, '... the balance untouched');
is(post_item($w, 'midway')->{status}, 201, 'the next request is served: 201');
is(balance($w), 98, '... item and debit together');

unlike($ng->log, qr/\[(alert|crit|emerg)\]/, 'no alert in error.log');
stop_nginx($ng);

# ------------------------------------------------- API requests by key

# Basic pays 1 credit for a request by API key; a request answered 5xx is
# refunded (here: the route's query outlasts defarm_db_query_timeout)
my $ak = start_nginx(
    name   => 'metering-api',
    http   => db_config(size => 4) . "
    defarm_cache zone=metering_api:4m ttl=1h;
    defarm_db_query_timeout 500ms;
    defarm_bcrypt_cost 4;
    defarm_credits on;
    defarm_jwt_secret file=$secret_file;",
    server => '
        location / {
            defarm_api on;
        }');
my $b = api_user($ak, "t080_apikey_$$");
my $made_key = api_as($ak, $b, POST => '/api/api-keys', { name => 'k', organization_type => 'Producer' });
is($made_key->{status}, 201, 'a Basic user makes a key (by token: free)');
my $bkey = json_body($made_key)->{api_key} // 'dfm_none';
is(balance($b), 100, '... nothing charged for requests by token');
my $bk = http($ak, GET => '/api/items', headers => { 'X-API-Key' => $bkey });
is($bk->{status}, 200, 'a request by key: 200');
is(balance($b), 99, '... costs api_request (Basic: 1)');
is(sql("SELECT reference_id FROM credit_transactions WHERE user_id = '$b->{id}' AND operation = 'api_request'"),
   "/api/items $bk->{headers}{'x-request-id'}", '... the ledger names the route and the trace id');

open my $locker, '|-', 'psql', '-X', '-q', '-h', $ENV{TEST_NGINX_PG_HOST}, '-p', $ENV{TEST_NGINX_PG_PORT},
    '-U', $ENV{TEST_NGINX_PG_USER}, '-d', $ENV{TEST_NGINX_PG_DATABASE}
    or die "psql: $!";
$locker->autoflush(1);
print $locker "BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE;\n";
wait_until(sub { sql("SELECT count(*) FROM pg_locks WHERE relation = 'items'::regclass AND mode = 'AccessExclusiveLock' AND granted") > 0 }, 10);
my $slow = http($ak, GET => '/api/items', headers => { 'X-API-Key' => $bkey });
like($slow->{status} // '', qr/^5\d\d$/, 'a request by key that times out: 5xx');
print $locker "ROLLBACK;\n";
close $locker;
ok(wait_until(sub { balance($b) == 99 }, 10), '... its debit given back');
is(sql("SELECT string_agg(transaction_type, ' ' ORDER BY seq) FROM credit_transactions "
       . "WHERE user_id = '$b->{id}' AND operation = 'api_request'"), 'Consumption Consumption Refund',
   '... a Refund in the ledger');

sql("SELECT defarm_credit_change('$b->{id}', -99, 'Penalty', 'test', NULL, 't080', NULL)");
my $broke = http($ak, GET => '/api/items', headers => { 'X-API-Key' => $bkey });
is($broke->{status}, 402, 'no credits: a request by key is 402');
is(json_body($broke)->{error_kind}, 'insufficient_credits', '... insufficient_credits');
is(api_as($ak, $b, GET => '/api/items')->{status}, 200, '... by token it is still served');
is(balance($b), 0, '... the balance stays 0');
unlike($ak->log, qr/\[(alert|crit|emerg)\]/, 'no alert in error.log');
stop_nginx($ak);

done_testing();
