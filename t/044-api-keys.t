# API keys (docs/api.md "API keys"): the management routes under
# /api/api-keys with a user's JWT, and requests made with a key, against
# the real PostgreSQL.  One nginx with the shared-memory cache (key records
# and the hourly rate-limit windows live there), the diagnostic route
# /api/echo/auth (defarm_echo on) that answers who the caller is, and a
# usage flush every second.
#
#   a. creation: the key and its metadata, the defaults, only the SHA-256
#      stored; every validation error; permissions.admin needs an admin
#   b. no JWT, a bad JWT, a key on the key routes and on refresh
#   c. listing: newest first, active only unless include_inactive=true,
#      only the caller's keys
#   d. one key's routes: another user's key, an unknown or a malformed id
#      are 404; PATCH and its validation; revoke; DELETE
#   e. using a key: X-API-Key and Authorization: Bearer, which header wins,
#      the principal, the profile; malformed, unknown, deleted, revoked,
#      expired keys; a suspended owner
#   f. allowed_ips (and X-Forwarded-For ignored), allowed_endpoints,
#      permissions read/write/admin, a PATCH seen on the next request
#   g. the hourly rate limit and its headers, per key
#   h. usage: counted, flushed, reported per UTC day
#
# Keys are cached at their first use, so whatever is changed directly in
# SQL (an expiry, an owner's status or admin flag) is changed before that
# first use, on a key made for the purpose.  Usernames carry this
# process's pid: the database lives as long as the whole "make test" run.

use strict;
use warnings;
use Test::More;
use Digest::SHA qw(sha256_hex);
use JSON::PP ();
use POSIX ();
use Time::HiRes ();
use Time::Local ();
use DefarmTest;

my $T = valgrind() ? 60 : 10;       # seconds for each request and wait
my $json = JSON::PP->new->utf8->canonical->allow_nonref;
my ($TRUE, $FALSE) = (JSON::PP::true(), JSON::PP::false());
my $T0 = time;                      # nothing in this file is older

my (undef, $secret_file) = jwt_secret();

my $ng = start_nginx(
    name   => 'api-keys',
    http   => db_config(size => 4) . "
    defarm_cache zone=api_keys:4m ttl=1h;
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;
    defarm_api_key_usage_flush 1s;",
    server => '
        location / {
            defarm_api on;
            defarm_echo on;
        }');

# ---------------------------------------------------------------- helpers

my $P = "t044_$$";
my $Pw = 'Str0ng!pass';
my $UUID = qr/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/;
my $KEY = qr/^dfm_[A-Za-z0-9]{32}$/;
my $WARNING = "Save this API key securely. You won't be able to see it again.";
my $INVALID = 'The provided API key is invalid or has been revoked';
my $SUSPENDED = 'Your account has been suspended. Please contact an administrator.';
my @META = sort qw(id name key_prefix organization_type organization_id
                   permissions is_active last_used_at usage_count
                   rate_limit_per_hour allowed_endpoints allowed_ips notes
                   created_at expires_at);

# the JSON body: decoded() an object ({} when it is not one), decoded_any()
# whatever it is (undef when it is not JSON)
sub decoded_any {
    my ($res) = @_;
    return eval { $json->decode($res->{body}) };
}

sub decoded {
    my ($res) = @_;
    my $data = decoded_any($res);
    return ref $data eq 'HASH' ? $data : {};
}

sub show { my ($res) = @_; $res->{error} // "$res->{status} $res->{body}" }

# the credentials of a request
sub as_user   { my ($u) = @_; { Authorization => "Bearer $u->{token}" } }
sub as_key    { my ($k) = @_; { 'X-API-Key' => ref $k ? $k->{key} : $k } }
sub as_bearer { my ($k) = @_; { Authorization => 'Bearer ' . (ref $k ? $k->{key} : $k) } }

# call($method, $path, $credentials, $body): $body a Perl structure
# (sent as JSON) or a string (sent as it is)
sub call {
    my ($method, $path, $cred, $body) = @_;
    return http($ng, $method, $path, timeout => $T, headers => { %{ $cred || {} } },
                defined $body ? (body => ref $body ? $json->encode($body) : $body) : ());
}

# register a new user: {name, id, token}; admin => 1 sets is_admin in SQL
my $seq = 0;
sub new_user {
    my ($tag, %o) = @_;
    my $name = "${P}_${tag}_" . ++$seq;
    my $res = call(POST => '/api/auth/register', undef,
                   { username => $name, password => $Pw,
                     email => "$name\@example.com" });
    is($res->{status}, 200, "register $name") or diag(show($res));
    my $b = decoded($res);
    my $u = { name => $name, id => $b->{user_id} // 'user-none',
              token => $b->{token} // 'none' };
    sql("UPDATE users SET is_admin = true WHERE id = '$u->{id}'") if $o{admin};
    return $u;
}

sub create_key {
    my ($u, $fields) = @_;
    return call(POST => '/api/api-keys', as_user($u), $fields);
}

# new_key($user, $tag, %fields): a key made with a 201; {key, id, meta}
sub new_key {
    my ($u, $tag, %f) = @_;
    my $res = create_key($u, { name => "$tag key", organization_type => 'Producer', %f });
    is($res->{status}, 201, "$tag: key created") or diag(show($res));
    my $b = decoded($res);
    my $m = ref $b->{metadata} eq 'HASH' ? $b->{metadata} : {};
    return { key => $b->{api_key} // 'dfm_none', id => $m->{id} // 'none', meta => $m };
}

sub key_path { my ($k, $rest) = @_; "/api/api-keys/" . (ref $k ? $k->{id} : $k) . ($rest // '') }

sub is_status {
    my ($res, $status, $tag) = @_;
    my $ok = is($res->{status}, $status, "$tag: $status");
    diag(show($res)) unless $ok;
    return $ok;
}

# the JSON error; code => the "code" field, msg => a string or a qr//
sub is_error {
    my ($res, $status, $kind, $tag, %o) = @_;
    my $b = decoded($res);
    is_status($res, $status, $tag);
    is($b->{error_kind}, $kind, "$tag: error_kind $kind");
    is($b->{status}, $status, "$tag: status in the body");
    like($b->{trace_id} // '', qr/^[0-9a-f]{32}$/, "$tag: trace_id");
    is($b->{code}, $o{code}, "$tag: code $o{code}") if exists $o{code};
    if (ref $o{msg}) {
        like($b->{error} // '', $o{msg}, "$tag: the message names $o{msg}");
    } elsif (defined $o{msg}) {
        is($b->{error}, $o{msg}, "$tag: message \"$o{msg}\"");
    }
    return $b;
}

# a key refused: 401 invalid_api_key / api_key_inactive / ..., 403 ...
sub key_refused {
    my ($res, $status, $code, $tag, %o) = @_;
    return is_error($res, $status, 'auth_error', $tag, code => $code, %o);
}

sub is_400 {
    my ($res, $tag, $field) = @_;
    return is_error($res, 400, 'validation_error', $tag,
                    defined $field ? (msg => qr/\Q$field\E/) : ());
}

# a JSON boolean of that truth
sub is_flag {
    my ($v, $want, $name) = @_;
    ok(JSON::PP::is_bool($v) && !!$v == !!$want, $name)
        or diag('got ' . $json->encode($v));
}

# "YYYY-MM-DDTHH:MM:SS[.frac](Z|+00:00)" -> Unix time, or undef
sub rfc3339 {
    my ($s) = @_;
    return undef unless defined $s && !ref $s && $s =~
        /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.\d+)?(?:Z|[+-]00:?00)$/;
    return Time::Local::timegm($6, $5, $4, $3, $2 - 1, $1);
}

sub is_recent {
    my ($s, $name) = @_;
    my $t = rfc3339($s);
    ok(defined $t && $t >= $T0 - 2 && $t <= time + 2,
       "$name: an RFC 3339 UTC time of this test run") or diag('got ' . $json->encode($s));
    return $t;
}

sub utc_day { POSIX::strftime('%Y-%m-%d', gmtime($_[0])) }

# check_meta($m, $tag, field => expected, ...): the ApiKeyMetadata shape,
# with defaults for what is not given; perms => [read, write, admin],
# active => bool, custom => {name => bool}; last_used_at => 'set' (a time
# of this run) or 'any' (that or null); usage_count => 'any'
sub check_meta {
    my ($m, $tag, %w) = @_;
    %w = (organization_type => 'Producer', organization_id => undef,
          rate_limit_per_hour => 100, allowed_endpoints => [],
          allowed_ips => [], notes => undef, expires_at => undef,
          last_used_at => undef, usage_count => 0, perms => [1, 0, 0],
          custom => {}, active => 1, %w);
    is(ref $m, 'HASH', "$tag: metadata is an object") or return;
    is_deeply([sort keys %$m], \@META, "$tag: the metadata fields");
    like($m->{id} // '', qr/^$UUID$/, "$tag: id is a UUID");
    is($m->{name}, $w{name}, "$tag: name") if exists $w{name};
    is($m->{key_prefix}, substr($w{key}, 0, 8), "$tag: key_prefix is the key's first 8 characters")
        if exists $w{key};
    for my $f (qw(organization_type organization_id rate_limit_per_hour
                  allowed_endpoints allowed_ips notes)) {
        is_deeply($m->{$f}, $w{$f}, "$tag: $f");
    }
    if ($w{usage_count} eq 'any') {
        like($m->{usage_count} // '', qr/^\d+$/, "$tag: usage_count a count");
    } else {
        is($m->{usage_count}, $w{usage_count}, "$tag: usage_count $w{usage_count}");
    }
    is($m->{expires_at}, undef, "$tag: expires_at null") unless defined $w{expires_at};
    if (!defined $w{last_used_at}) {
        is($m->{last_used_at}, undef, "$tag: last_used_at null");
    } elsif ($w{last_used_at} eq 'set' || defined $m->{last_used_at}) {
        is_recent($m->{last_used_at}, "$tag: last_used_at");
    }
    is_recent($m->{created_at}, "$tag: created_at");
    is_flag($m->{is_active}, $w{active}, "$tag: is_active " . ($w{active} ? 'true' : 'false'));
    my $p = ref $m->{permissions} eq 'HASH' ? $m->{permissions} : {};
    is_deeply([sort keys %$p], [qw(admin custom read write)], "$tag: permissions fields");
    my @names = qw(read write admin);
    is_flag($p->{$names[$_]}, $w{perms}[$_], "$tag: permissions.$names[$_] "
            . ($w{perms}[$_] ? 'true' : 'false')) for 0 .. 2;
    my $c = $p->{custom};
    is_deeply(ref $c eq 'HASH'
              ? { map { $_ => JSON::PP::is_bool($c->{$_}) ? ($c->{$_} ? 1 : 0) : 'not a bool' } keys %$c }
              : 'not an object',
              $w{custom}, "$tag: permissions.custom");
}

# GET /api/echo/auth (or another method or path) with a key: 200 as the
# key's owner; perms => [read, write, admin] of the key, admin => the owner's
sub is_key_principal {
    my ($res, $u, $k, $tag, %o) = @_;
    is_status($res, 200, $tag);
    my $b = decoded($res);
    is($b->{via}, 'api_key', "$tag: via api_key");
    is($b->{user_id}, $u->{id}, "$tag: user_id is the owner's real id");
    is($b->{key_id}, $k->{id}, "$tag: key_id is the key's id");
    is($b->{tier}, 'Basic', "$tag: the owner's tier");
    is($b->{workspace_id}, "$u->{name}-workspace", "$tag: the owner's workspace");
    my $perms = $o{perms} // [1, 0, 0];
    my $p = ref $b->{permissions} eq 'HASH' ? $b->{permissions} : {};
    my @names = qw(read write admin);
    is_flag($p->{$names[$_]}, $perms->[$_], "$tag: permissions.$names[$_]") for 0 .. 2;
    is_flag($b->{is_admin}, $o{admin} // 0, "$tag: is_admin of the owner");
    return $b;
}

sub echo_auth {
    my ($k, $method, $path, %o) = @_;
    my $cred = $o{bearer} ? as_bearer($k) : as_key($k);
    return call($method // 'GET', $path // '/api/echo/auth',
                { %$cred, %{ $o{headers} || {} } });
}

sub keys_of { my ($u) = @_; sql("SELECT count(*) FROM api_keys WHERE user_id = '$u->{id}'") }

# If less than $margin seconds are left of the current $period (3600: the
# clock hour; 86400: the UTC day), wait for the next one: what follows
# must not straddle a boundary.
sub avoid_boundary {
    my ($period, $margin) = @_;
    my $left = $period - (time % $period);
    if ($left < $margin) {
        diag("waiting ${left}s for the next ${period}s period to begin");
        Time::HiRes::sleep($left + 1);
    }
}

# --------------------------------------------------------------- the users

my $alice = new_user('alice');
my $bob   = new_user('bob');
my $admin = new_user('admin', admin => 1);
my $val   = new_user('val');

# ============================================================ a. creation

{
    my $tag = 'create';
    my $res = create_key($alice, { name => 'first', organization_type => 'Producer' });
    is_status($res, 201, "$tag: a key with the required fields only");
    like($res->{headers}{'content-type'} // '', qr{^application/json\b}, "$tag: JSON");
    my $b = decoded($res);
    is_deeply([sort keys %$b], [qw(api_key metadata warning)], "$tag: api_key, metadata, warning");
    my $key = $b->{api_key} // '';
    like($key, $KEY, "$tag: the key is dfm_ and 32 letters or digits");
    is($b->{warning}, $WARNING, "$tag: the warning");
    check_meta($b->{metadata}, $tag, name => 'first', key => $key);
    my $id = ref $b->{metadata} eq 'HASH' ? $b->{metadata}{id} // 'none' : 'none';

    is(sql("SELECT key_hash FROM api_keys WHERE id = '$id'"), sha256_hex($key),
       "$tag: the database holds the key's SHA-256 in hex");
    is(sql("SELECT key_prefix || ' ' || user_id FROM api_keys WHERE id = '$id'"),
       substr($key, 0, 8) . " $alice->{id}", "$tag: the prefix and the owner's real id stored");
    my $secret = substr $key, 4;
    is(sql("SELECT count(*) FROM api_keys k WHERE k::text LIKE '%$secret%'"), 0,
       "$tag: no column of any key row holds the key");

    my $second = new_key($alice, 'create-2');
    like($second->{key}, $KEY, "$tag: a second key");
    isnt($second->{key}, $key, "$tag: keys differ");

    $res = call(GET => key_path($id), as_user($alice));
    is_status($res, 200, "$tag: GET the new key");
    is_deeply(decoded($res), $b->{metadata}, "$tag: GET answers the creation's metadata");

    $res = call(GET => key_path($id, '/usage'), as_user($alice));
    is_status($res, 200, "$tag: usage of an unused key");
    my $u = decoded($res);
    is_deeply([@$u{qw(total_requests successful_requests failed_requests)}], [0, 0, 0],
              "$tag: no requests counted");
    is($u->{last_used_at}, undef, "$tag: usage last_used_at null");
    is(ref $u->{daily_usage} eq 'ARRAY' ? scalar @{ $u->{daily_usage} } : -1, 7,
       "$tag: 7 days by default, unused days included");
    is_deeply([map { [$_->{requests}, $_->{errors}] } @{ $u->{daily_usage} || [] }],
              [([0, 0]) x 7], "$tag: every day zero");
}

# every field given
{
    my $tag = 'create, every field';
    my $org = '3f0c2a0e-3c1b-4d5e-8f60-7a8b9c0d1e2f';
    my $k = new_key($alice, $tag, name => 'full', organization_type => 'Government',
                    organization_id => $org,
                    permissions => { read => $TRUE, write => $TRUE, admin => $FALSE,
                                     custom => { export => $TRUE, audit => $FALSE } },
                    allowed_endpoints => ['/api/echo/auth', '/api/items/*'],
                    allowed_ips => ['10.0.0.1', '10.0.0.0/8', '::1', '2001:db8::/32'],
                    rate_limit_per_hour => 250, expires_in_days => 30,
                    notes => "for the \x{e9}cole's robot");
    check_meta($k->{meta}, $tag, name => 'full', key => $k->{key},
               organization_type => 'Government', organization_id => $org,
               perms => [1, 1, 0], custom => { export => 1, audit => 0 },
               allowed_endpoints => ['/api/echo/auth', '/api/items/*'],
               allowed_ips => ['10.0.0.1', '10.0.0.0/8', '::1', '2001:db8::/32'],
               rate_limit_per_hour => 250, notes => "for the \x{e9}cole's robot",
               expires_at => 'set');
    my $created = rfc3339($k->{meta}{created_at}) // 0;
    my $expires = rfc3339($k->{meta}{expires_at});
    ok(defined $expires && abs($expires - $created - 30 * 86400) <= 3602,
       "$tag: expires_at is 30 days after created_at")
        or diag("created_at $k->{meta}{created_at}, expires_at "
                . ($k->{meta}{expires_at} // 'null'));

    $k = new_key($alice, 'create, null optionals', organization_id => undef,
                 expires_in_days => undef, notes => undef);
    check_meta($k->{meta}, 'create, null optionals');

    $k = new_key($alice, 'create, read false', permissions => { read => $FALSE });
    check_meta($k->{meta}, 'create, read false', perms => [0, 0, 0]);
}

# validation: each body is refused and creates nothing
{
    my $before = keys_of($val);
    my %ok = (name => 'valid', organization_type => 'Producer');
    my @eps = map { "/api/e$_" } 1 .. 65;
    my @bad = (
        ['body an array', '[]'],
        ['body a string', '"key"'],
        ['body a number', '42'],
        ['name missing', { organization_type => 'Producer' }, 'name'],
        ['name null', { %ok, name => undef }, 'name'],
        ['name empty', { %ok, name => '' }, 'name'],
        ['name a number', { %ok, name => 123 }, 'name'],
        ['name of 101 bytes', { %ok, name => 'n' x 101 }, 'name'],
        ['name of 51 two-byte characters', { %ok, name => "\x{e9}" x 51 }, 'name'],
        ['name with a control character', { %ok, name => "a\tb" }, 'name'],
        ['organization_type missing', { name => 'x' }, 'organization_type'],
        ['organization_type unknown', { %ok, organization_type => 'Farmer' }, 'organization_type'],
        ['organization_type lower case', { %ok, organization_type => 'producer' }, 'organization_type'],
        ['organization_type a number', { %ok, organization_type => 1 }, 'organization_type'],
        ['organization_id not a UUID', { %ok, organization_id => 'not-a-uuid' }, 'organization_id'],
        ['organization_id one digit short', { %ok, organization_id => '3f0c2a0e-3c1b-4d5e-8f60-7a8b9c0d1e2' }, 'organization_id'],
        ['organization_id a number', { %ok, organization_id => 7 }, 'organization_id'],
        ['permissions an array', { %ok, permissions => [$TRUE] }, 'permissions'],
        ['permissions a bool', { %ok, permissions => $TRUE }, 'permissions'],
        ['permissions.read a string', { %ok, permissions => { read => 'yes' } }, 'read'],
        ['permissions.write a number', { %ok, permissions => { write => 1 } }, 'write'],
        ['permissions.admin a string', { %ok, permissions => { admin => 'false' } }, 'admin'],
        ['permissions.custom an array', { %ok, permissions => { custom => [] } }, 'custom'],
        ['permissions.custom value a string', { %ok, permissions => { custom => { x => 'y' } } }, 'custom'],
        ['allowed_endpoints a string', { %ok, allowed_endpoints => '/api' }, 'allowed_endpoints'],
        ['allowed_endpoints entry without /', { %ok, allowed_endpoints => ['api/echo'] }, 'allowed_endpoints'],
        ['allowed_endpoints entry with a space', { %ok, allowed_endpoints => ['/api/echo auth'] }, 'allowed_endpoints'],
        ['allowed_endpoints entry a number', { %ok, allowed_endpoints => [1] }, 'allowed_endpoints'],
        ['allowed_endpoints entry of 257 bytes', { %ok, allowed_endpoints => ['/' . 'a' x 256] }, 'allowed_endpoints'],
        ['allowed_endpoints of 65 entries', { %ok, allowed_endpoints => \@eps }, 'allowed_endpoints'],
        ['allowed_ips a string', { %ok, allowed_ips => '10.0.0.1' }, 'allowed_ips'],
        ['allowed_ips entry not an address', { %ok, allowed_ips => ['not-an-ip'] }, 'allowed_ips'],
        ['allowed_ips entry 300.1.1.1', { %ok, allowed_ips => ['300.1.1.1'] }, 'allowed_ips'],
        ['allowed_ips entry 10.0.0.0/33', { %ok, allowed_ips => ['10.0.0.0/33'] }, 'allowed_ips'],
        ['allowed_ips entry ::1/129', { %ok, allowed_ips => ['::1/129'] }, 'allowed_ips'],
        ['rate_limit_per_hour 0', { %ok, rate_limit_per_hour => 0 }, 'rate_limit_per_hour'],
        ['rate_limit_per_hour -1', { %ok, rate_limit_per_hour => -1 }, 'rate_limit_per_hour'],
        ['rate_limit_per_hour 1000001', { %ok, rate_limit_per_hour => 1000001 }, 'rate_limit_per_hour'],
        ['rate_limit_per_hour "100"', { %ok, rate_limit_per_hour => '100' }, 'rate_limit_per_hour'],
        ['rate_limit_per_hour 1.5', { %ok, rate_limit_per_hour => 1.5 }, 'rate_limit_per_hour'],
        ['expires_in_days 0', { %ok, expires_in_days => 0 }, 'expires_in_days'],
        ['expires_in_days 3651', { %ok, expires_in_days => 3651 }, 'expires_in_days'],
        ['expires_in_days "30"', { %ok, expires_in_days => '30' }, 'expires_in_days'],
        ['notes of 1001 bytes', { %ok, notes => 'x' x 1001 }, 'notes'],
        ['notes a number', { %ok, notes => 5 }, 'notes'],
    );
    for my $case (@bad) {
        my ($what, $body, $field) = @$case;
        is_400(create_key($val, $body), "create: $what", $field);
    }
    is_400(create_key($val, '{"name": "x", "organization_type": '), 'create: malformed JSON');
    is_400(create_key($val, '{"name": "x", "organization_type": "Producer"} x'),
           'create: trailing garbage after the JSON');
    is_400(call(POST => '/api/api-keys', as_user($val), ''), 'create: an empty body');
    is(keys_of($val), $before, 'create: no refused body made a key');

    # the limits themselves are accepted
    my @good = (
        ['name of 100 bytes', { %ok, name => 'n' x 100 }],
        ['name of 50 two-byte characters', { %ok, name => "\x{e9}" x 50 }],
        ['allowed_endpoints of 64 entries', { %ok, allowed_endpoints => [@eps[0 .. 63]] }],
        ['allowed_endpoints entry of 256 bytes', { %ok, allowed_endpoints => ['/' . 'a' x 255] }],
        ['rate_limit_per_hour 1', { %ok, rate_limit_per_hour => 1 }],
        ['rate_limit_per_hour 1000000', { %ok, rate_limit_per_hour => 1000000 }],
        ['expires_in_days 1', { %ok, expires_in_days => 1 }],
        ['expires_in_days 3650', { %ok, expires_in_days => 3650 }],
        ['notes of 1000 bytes', { %ok, notes => 'x' x 1000 }],
        ['every organization_type', map { +{ %ok, organization_type => $_ } }
             qw(Admin Producer Association Enterprise Government External)],
    );
    my $made = 0;
    for my $case (@good) {
        my ($what, @bodies) = @$case;
        for my $body (@bodies) {
            my $res = create_key($val, $body);
            is_status($res, 201, "create: $what" . (@bodies > 1 ? " ($body->{organization_type})" : ''));
            $made++;
            my $m = decoded($res)->{metadata} || {};
            for my $f (qw(name rate_limit_per_hour notes organization_type allowed_endpoints)) {
                next unless exists $body->{$f};
                is_deeply($m->{$f}, $body->{$f}, "create: $what: $f kept");
            }
        }
    }
    is(keys_of($val), $before + $made, 'create: each accepted body made one key');
}

# admin permission
{
    my $before = keys_of($alice);
    my $b = is_error(create_key($alice, { name => 'admin', organization_type => 'Admin',
                                          permissions => { admin => $TRUE } }),
                     403, 'auth_error', 'create: permissions.admin by a non-admin');
    is(keys_of($alice), $before, 'create: ... made no key');

    my $k = new_key($admin, 'create: permissions.admin by an admin',
                    organization_type => 'Admin', permissions => { admin => $TRUE });
    check_meta($k->{meta}, 'create: permissions.admin by an admin',
               organization_type => 'Admin', perms => [1, 0, 1]);
}

# ============================================= b. who may manage the keys

my $writer = new_key($alice, 'writer', permissions => { write => $TRUE });
{
    for my $c (['GET', '/api/api-keys'], ['POST', '/api/api-keys', { name => 'x', organization_type => 'Producer' }],
               ['GET', key_path($writer)], ['PATCH', key_path($writer), { name => 'y' }],
               ['DELETE', key_path($writer)], ['POST', key_path($writer, '/revoke')],
               ['GET', key_path($writer, '/usage')]) {
        my ($m, $path, $body) = @$c;
        my $res = call($m, $path, undef, $body);
        is_error($res, 401, 'auth_error', "no credentials: $m $path");
        like($res->{headers}{'www-authenticate'} // '', qr/^Bearer/, "no credentials: $m $path: WWW-Authenticate");
    }
    is_error(call(GET => '/api/api-keys', { Authorization => 'Bearer abc.def.ghi' }),
             401, 'auth_error', 'a malformed JWT: GET /api/api-keys');
    is_error(call(GET => '/api/echo/auth'), 401, 'auth_error', 'no credentials: GET /api/echo/auth');

    my $before = keys_of($alice);
    for my $cred ([as_key($writer), 'X-API-Key'], [as_bearer($writer), 'Bearer key']) {
        my ($h, $how) = @$cred;
        is_error(call(GET => '/api/api-keys', $h), 403, 'auth_error', "$how: GET /api/api-keys");
        is_error(call(POST => '/api/api-keys', $h, { name => 'minted', organization_type => 'Producer' }),
                 403, 'auth_error', "$how: POST /api/api-keys");
        is_error(call(GET => key_path($writer), $h), 403, 'auth_error', "$how: GET its own metadata");
        is_error(call(PATCH => key_path($writer), $h, { rate_limit_per_hour => 1000000 }),
                 403, 'auth_error', "$how: PATCH itself");
        is_error(call(POST => key_path($writer, '/revoke'), $h), 403, 'auth_error', "$how: revoke itself");
        is_error(call(DELETE => key_path($writer), $h), 403, 'auth_error', "$how: DELETE itself");
        is_error(call(GET => key_path($writer, '/usage'), $h), 403, 'auth_error', "$how: its usage");
        is_error(call(POST => '/api/auth/refresh', $h), 403, 'auth_error', "$how: POST /api/auth/refresh");
    }
    is(keys_of($alice), $before, 'a key made and deleted no key');
    my $m = decoded(call(GET => key_path($writer), as_user($alice)));
    check_meta($m, 'the key that tried to change itself', perms => [1, 1, 0],
               name => 'writer key', last_used_at => 'any', usage_count => 'any');
}

# ============================================================= c. listing

{
    my $lister = new_user('lister');
    my $res = call(GET => '/api/api-keys', as_user($lister));
    is_status($res, 200, 'list: a user without keys');
    is_deeply(decoded_any($res), [], 'list: []');

    my @k = map { new_key($lister, "list $_") } 1 .. 3;
    my $other = new_key($bob, 'list, another user');

    my $ids = sub {
        my ($query, $u) = @_;
        my $res = call(GET => "/api/api-keys$query", as_user($u // $lister));
        is_status($res, 200, "list$query");
        my $list = decoded_any($res);
        return ['not an array'] unless ref $list eq 'ARRAY';
        return [map { ref $_ eq 'HASH' && ref $_->{metadata} eq 'HASH'
                      ? $_->{metadata}{id} // 'no id' : 'not {metadata}' } @$list];
    };

    is_deeply($ids->(''), [map { $_->{id} } reverse @k], 'list: [{metadata}], newest first');
    my $list = decoded_any(call(GET => '/api/api-keys', as_user($lister)));
    is_deeply(ref $list eq 'ARRAY' ? $list->[0]{metadata} : undef, $k[2]{meta},
              'list: the metadata as created');

    is_status(call(POST => key_path($k[1], '/revoke'), as_user($lister)), 200, 'list: revoke the middle key');
    is_deeply($ids->(''), [$k[2]{id}, $k[0]{id}], 'list: only active keys');
    is_deeply($ids->('?include_inactive=false'), [$k[2]{id}, $k[0]{id}], 'list: include_inactive=false');
    is_deeply($ids->('?include_inactive=true'), [map { $_->{id} } reverse @k],
              'list: include_inactive=true adds the revoked key in its place');
    is_400(call(GET => '/api/api-keys?include_inactive=maybe', as_user($lister)),
           'list: include_inactive=maybe', 'include_inactive');

    my $bobs = $ids->('?include_inactive=true', $bob);
    ok((grep { $_ eq $other->{id} } @$bobs), "list: bob's list has bob's key");
    ok(!(grep { my $id = $_; grep { $id eq $_->{id} } @k } @$bobs), "list: and none of another user's");
}

# =========================================================== d. one key

{
    my $k = new_key($alice, 'owned');
    my $tag = "alice's key after bob's tries";
    for my $target ([$k->{id}, "another user's key"],
                    ['6b1f3e2a-9c4d-4e8f-a1b2-c3d4e5f60718', 'an unknown UUID'],
                    ['not-a-uuid', 'a key id that is not a UUID'],
                    ['6B1F3E2A-9C4D-4E8F-A1B2', 'a truncated UUID']) {
        my ($id, $what) = @$target;
        for my $c (['GET', ''], ['PATCH', '', { name => 'stolen' }], ['DELETE', ''],
                   ['POST', '/revoke'], ['GET', '/usage']) {
            my ($m, $rest, $body) = @$c;
            is_error(call($m, "/api/api-keys/$id$rest", as_user($bob), $body),
                     404, 'not_found', "$what: $m /api/api-keys/:id$rest");
        }
    }
    my $res = call(GET => key_path($k), as_user($alice));
    is_status($res, 200, "$tag: still there for its owner");
    is_deeply(decoded($res), $k->{meta}, "$tag: and unchanged");
    is_key_principal(echo_auth($k), $alice, $k, "$tag: still works");
}

# PATCH
{
    my $tag = 'PATCH';
    my $k = new_key($alice, 'patched');
    my $res = call(PATCH => key_path($k), as_user($alice),
                   { name => 'x2', rate_limit_per_hour => 5, permissions => { write => $TRUE } });
    is_status($res, 200, "$tag: name, rate limit, write");
    my $m = decoded($res);
    check_meta($m, $tag, name => 'x2', rate_limit_per_hour => 5, perms => [1, 1, 0]);
    is($m->{id}, $k->{id}, "$tag: the same key");
    is($m->{key_prefix}, $k->{meta}{key_prefix}, "$tag: the same prefix");
    is($m->{created_at}, $k->{meta}{created_at}, "$tag: the same created_at");
    is_deeply(decoded(call(GET => key_path($k), as_user($alice))), $m, "$tag: GET agrees");

    $res = call(PATCH => key_path($k), as_user($alice), { permissions => { read => $FALSE } });
    check_meta(decoded($res), "$tag: read false", name => 'x2', rate_limit_per_hour => 5,
               perms => [0, 1, 0]);

    $res = call(PATCH => key_path($k), as_user($alice),
                { notes => 'n', allowed_endpoints => ['/api/echo/*'], allowed_ips => ['127.0.0.1'],
                  permissions => { read => $TRUE, custom => { x => $TRUE } } });
    is_status($res, 200, "$tag: notes, allowed lists, custom");
    check_meta(decoded($res), "$tag: notes, allowed lists, custom", name => 'x2',
               rate_limit_per_hour => 5, perms => [1, 1, 0], custom => { x => 1 }, notes => 'n',
               allowed_endpoints => ['/api/echo/*'], allowed_ips => ['127.0.0.1']);

    $res = call(PATCH => key_path($k), as_user($alice),
                { notes => undef, allowed_endpoints => [], allowed_ips => [] });
    check_meta(decoded($res), "$tag: cleared", name => 'x2', rate_limit_per_hour => 5,
               perms => [1, 1, 0], custom => { x => 1 });

    my $before = decoded(call(GET => key_path($k), as_user($alice)));
    for my $case (['body an array', '[]'],
                  ['malformed JSON', '{"name": '],
                  ['name empty', { name => '' }, 'name'],
                  ['name of 101 bytes', { name => 'n' x 101 }, 'name'],
                  ['name a number', { name => 5 }, 'name'],
                  ['is_active a string', { is_active => 'yes' }, 'is_active'],
                  ['permissions.write a string', { permissions => { write => 'true' } }, 'write'],
                  ['permissions an array', { permissions => [] }, 'permissions'],
                  ['rate_limit_per_hour 0', { rate_limit_per_hour => 0 }, 'rate_limit_per_hour'],
                  ['rate_limit_per_hour 1000001', { rate_limit_per_hour => 1000001 }, 'rate_limit_per_hour'],
                  ['rate_limit_per_hour "5"', { rate_limit_per_hour => '5' }, 'rate_limit_per_hour'],
                  ['notes of 1001 bytes', { notes => 'x' x 1001 }, 'notes'],
                  ['allowed_ips entry not an address', { allowed_ips => ['nope'] }, 'allowed_ips'],
                  ['allowed_endpoints entry without /', { allowed_endpoints => ['x'] }, 'allowed_endpoints'],
                  ['a valid name with an invalid rate limit', { name => 'half', rate_limit_per_hour => -1 },
                   'rate_limit_per_hour']) {
        my ($what, $body, $field) = @$case;
        is_400(call(PATCH => key_path($k), as_user($alice), $body), "$tag: $what", $field);
    }
    is_error(call(PATCH => key_path($k), as_user($alice), { permissions => { admin => $TRUE } }),
             403, 'auth_error', "$tag: raising admin by a non-admin");
    is_deeply(decoded(call(GET => key_path($k), as_user($alice))), $before,
              "$tag: no refused PATCH changed anything");

    my $ak = new_key($admin, 'admin patched');
    $res = call(PATCH => key_path($ak), as_user($admin), { permissions => { admin => $TRUE } });
    is_status($res, 200, "$tag: raising admin by an admin");
    check_meta(decoded($res), "$tag: raised admin", name => 'admin patched key', perms => [1, 0, 1]);
}

# revoke and DELETE
my $revoked;
my $deleted;
{
    my $tag = 'revoke';
    $revoked = new_key($alice, 'revoked');
    is_key_principal(echo_auth($revoked), $alice, $revoked, "$tag: works before");
    my $res = call(POST => key_path($revoked, '/revoke'), as_user($alice));
    is_status($res, 200, "$tag: 200");
    check_meta(decoded($res), $tag, name => 'revoked key', active => 0,
               last_used_at => 'any', usage_count => 'any');
    key_refused(echo_auth($revoked), 401, 'api_key_inactive', "$tag: the key is refused at once");
    is(sql("SELECT is_active FROM api_keys WHERE id = '$revoked->{id}'"), 'f', "$tag: stored");

    $res = call(PATCH => key_path($revoked), as_user($alice), { is_active => $TRUE });
    is_status($res, 200, "$tag: PATCH is_active true");
    is_flag(decoded($res)->{is_active}, 1, "$tag: active again");
    is_key_principal(echo_auth($revoked), $alice, $revoked, "$tag: works again");

    $res = call(PATCH => key_path($revoked), as_user($alice), { is_active => $FALSE });
    is_flag(decoded($res)->{is_active}, 0, "$tag: PATCH is_active false");
    key_refused(echo_auth($revoked), 401, 'api_key_inactive', "$tag: PATCH is_active false: refused");

    $tag = 'DELETE';
    $deleted = new_key($alice, 'deleted');
    is_key_principal(echo_auth($deleted), $alice, $deleted, "$tag: works before");
    $res = call(DELETE => key_path($deleted), as_user($alice));
    is_status($res, 204, "$tag: 204");
    is($res->{body}, '', "$tag: no body");
    key_refused(echo_auth($deleted), 401, 'invalid_api_key', "$tag: the key stops working at once",
                msg => $INVALID);
    is_error(call(GET => key_path($deleted), as_user($alice)), 404, 'not_found', "$tag: GET then 404");
    is_error(call(DELETE => key_path($deleted), as_user($alice)), 404, 'not_found', "$tag: DELETE again 404");
    is_error(call(POST => key_path($deleted, '/revoke'), as_user($alice)), 404, 'not_found', "$tag: revoke 404");
    is_error(call(GET => key_path($deleted, '/usage'), as_user($alice)), 404, 'not_found', "$tag: usage 404");
    is(sql("SELECT count(*) FROM api_keys WHERE id = '$deleted->{id}'"), 0, "$tag: the row is gone");
}

# ========================================================== e. using a key

{
    my $k = new_key($alice, 'user');
    is_key_principal(echo_auth($k), $alice, $k, 'X-API-Key');
    is_key_principal(echo_auth($k, GET => '/api/echo/auth', bearer => 1), $alice, $k,
                     'Authorization: Bearer <key>');

    my $other = new_key($alice, 'other');
    is_key_principal(call(GET => '/api/echo/auth', { %{ as_bearer($k) }, %{ as_key($other) } }),
                     $alice, $k, 'both headers: Authorization wins');
    key_refused(call(GET => '/api/echo/auth', { %{ as_bearer('dfm_' . 'Z' x 32) }, %{ as_key($k) } }),
                401, 'invalid_api_key', 'both headers: an unknown key in Authorization wins');
    my $res = call(GET => '/api/echo/auth', { %{ as_user($alice) }, %{ as_key($other) } });
    is_status($res, 200, 'a JWT in Authorization and a key in X-API-Key');
    is(decoded($res)->{via}, 'jwt', '... the JWT is used');

    $res = call(GET => '/api/echo/auth', as_user($alice));
    is_status($res, 200, 'echo with a JWT');
    my $b = decoded($res);
    is($b->{via}, 'jwt', 'JWT: via jwt');
    is($b->{user_id}, $alice->{id}, 'JWT: user_id');
    is($b->{tier}, 'Basic', 'JWT: tier');
    is($b->{workspace_id}, "$alice->{name}-workspace", 'JWT: workspace_id');
    is($b->{key_id}, undef, 'JWT: key_id null');
    is($b->{permissions}, undef, 'JWT: permissions null');
    ok(!defined $b->{is_admin} || JSON::PP::is_bool($b->{is_admin}), 'JWT: is_admin null or a bool');

    $res = call(GET => '/api/auth/profile', as_key($k));
    is_status($res, 200, 'profile with a key');
    $b = decoded($res);
    is($b->{user_id}, $alice->{id}, "profile with a key: the owner's user_id");
    is($b->{username}, $alice->{name}, "profile with a key: the owner's username");
    like($res->{headers}{'server-timing'} // '', qr/total;dur=/, 'profile with a key: Server-Timing');

    for my $bad (['dfx_' . 'a' x 32, 'wrong prefix'], ['DFM_' . 'a' x 32, 'upper-case prefix'],
                 ['dfm_' . 'a' x 31, '31 characters'], ['dfm_' . 'a' x 33, '33 characters'],
                 ['dfm_' . 'a' x 31 . '!', 'a non-alphanumeric character'],
                 ['dfm_' . 'a' x 31 . '-', 'a dash'], ['dfm_', 'the prefix alone'],
                 ['dfm_' . 'Q' x 32, 'well-formed but unknown'],
                 [$k->{key} . 'x', 'a real key with a character more'],
                 [substr($k->{key}, 0, 35), 'a real key with a character less']) {
        my ($key, $what) = @$bad;
        key_refused(echo_auth($key), 401, 'invalid_api_key', "a key: $what", msg => $INVALID);
    }
    key_refused(echo_auth('dfm_' . 'Q' x 32, GET => '/api/echo/auth', bearer => 1),
                401, 'invalid_api_key', 'Bearer: an unknown key');
    key_refused(echo_auth($deleted), 401, 'invalid_api_key', 'a deleted key');
    key_refused(echo_auth($revoked, GET => '/api/echo/auth', bearer => 1), 401, 'api_key_inactive',
                'Bearer: a revoked key');

    my $exp = new_key($alice, 'expired');
    sql("UPDATE api_keys SET expires_at = now() - interval '1 minute' WHERE id = '$exp->{id}'");
    key_refused(echo_auth($exp), 401, 'api_key_expired', 'a key past expires_at (set before its first use)');
    key_refused(call(GET => '/api/auth/profile', as_key($exp)), 401, 'api_key_expired',
                'a key past expires_at: on profile too');

    my $soon = new_key($alice, 'expires in a day', expires_in_days => 1);
    is_key_principal(echo_auth($soon), $alice, $soon, 'a key before expires_at');

    my $susp = new_user('suspended');
    my $sk = new_key($susp, 'suspended owner');
    sql("UPDATE users SET status = 'Suspended' WHERE id = '$susp->{id}'");
    is_error(echo_auth($sk), 403, 'auth_error', "a suspended owner's key", msg => $SUSPENDED);
}

# ================================= f. addresses, endpoints, permissions

{
    my $spoof = { 'X-Forwarded-For' => '10.9.9.9', 'X-Real-IP' => '10.9.9.9' };
    my $k = new_key($alice, 'ip 10.9.9.9', allowed_ips => ['10.9.9.9']);
    key_refused(echo_auth($k), 403, 'ip_not_allowed', 'allowed_ips [10.9.9.9] from 127.0.0.1');
    key_refused(echo_auth($k, GET => '/api/echo/auth', headers => $spoof), 403, 'ip_not_allowed',
                'allowed_ips [10.9.9.9] with X-Forwarded-For and X-Real-IP 10.9.9.9');

    $k = new_key($alice, 'ip ::1', allowed_ips => ['::1']);
    key_refused(echo_auth($k), 403, 'ip_not_allowed', 'allowed_ips [::1] from 127.0.0.1');
    $k = new_key($alice, 'ip 128/8', allowed_ips => ['128.0.0.0/8', '10.0.0.0/8']);
    key_refused(echo_auth($k), 403, 'ip_not_allowed', 'allowed_ips [128.0.0.0/8, 10.0.0.0/8] from 127.0.0.1');

    for my $ips (['127.0.0.0/8'], ['127.0.0.1'], ['127.0.0.1/32'], ['10.0.0.0/8', '127.0.0.0/24'], ['0.0.0.0/0']) {
        $k = new_key($alice, "ip @$ips", allowed_ips => $ips);
        is_key_principal(echo_auth($k), $alice, $k, "allowed_ips [@$ips] from 127.0.0.1");
    }
    $k = new_key($alice, 'ip 127/8 spoofed', allowed_ips => ['127.0.0.0/8']);
    is_key_principal(echo_auth($k, GET => '/api/echo/auth', headers => $spoof), $alice, $k,
                     'allowed_ips [127.0.0.0/8] with X-Forwarded-For 10.9.9.9');

    $k = new_key($alice, 'endpoint exact', allowed_endpoints => ['/api/echo/auth']);
    is_key_principal(echo_auth($k), $alice, $k, 'allowed_endpoints [/api/echo/auth]: that path');
    is_key_principal(echo_auth($k, GET => '/api/echo/auth?x=1'), $alice, $k,
                     'allowed_endpoints [/api/echo/auth]: that path with a query');
    key_refused(call(GET => '/api/auth/profile', as_key($k)), 403, 'endpoint_not_allowed',
                'allowed_endpoints [/api/echo/auth]: /api/auth/profile');
    key_refused(echo_auth($k, GET => '/api/echo/auth/admin'), 403, 'endpoint_not_allowed',
                'allowed_endpoints [/api/echo/auth]: /api/echo/auth/admin (no prefix match)');

    $k = new_key($alice, 'endpoint prefix', allowed_endpoints => ['/api/echo/*']);
    is_key_principal(echo_auth($k), $alice, $k, 'allowed_endpoints [/api/echo/*]: /api/echo/auth');
    key_refused(echo_auth($k, GET => '/api/echo/auth/admin'), 403, 'insufficient_permissions',
                'allowed_endpoints [/api/echo/*]: /api/echo/auth/admin passes it, not the admin check');
    key_refused(call(GET => '/api/auth/profile', as_key($k)), 403, 'endpoint_not_allowed',
                'allowed_endpoints [/api/echo/*]: /api/auth/profile');

    my $ro = new_key($alice, 'read only');
    is_key_principal(echo_auth($ro, 'GET'), $alice, $ro, 'read only: GET');
    my $res = echo_auth($ro, 'HEAD');
    is_status($res, 200, 'read only: HEAD');
    for my $m (qw(POST PUT PATCH DELETE)) {
        key_refused(echo_auth($ro, $m), 403, 'insufficient_permissions', "read only: $m");
    }

    my $rw = new_key($alice, 'read write', permissions => { write => $TRUE });
    for my $m (qw(GET POST PUT PATCH DELETE)) {
        is_key_principal(echo_auth($rw, $m), $alice, $rw, "read and write: $m", perms => [1, 1, 0]);
    }
    my $wo = new_key($alice, 'write only', permissions => { read => $FALSE, write => $TRUE });
    key_refused(echo_auth($wo, 'GET'), 403, 'insufficient_permissions', 'write only: GET');
    is_key_principal(echo_auth($wo, 'POST'), $alice, $wo, 'write only: POST', perms => [0, 1, 0]);

    # a change by PATCH is seen on the key's next request (after it was cached)
    key_refused(echo_auth($ro, 'POST'), 403, 'insufficient_permissions', 'PATCH seen: before');
    is_status(call(PATCH => key_path($ro), as_user($alice), { permissions => { write => $TRUE } }),
              200, 'PATCH seen: write true');
    is_key_principal(echo_auth($ro, 'POST'), $alice, $ro, 'PATCH seen: POST now 200', perms => [1, 1, 0]);
    is_status(call(PATCH => key_path($ro), as_user($alice), { allowed_ips => ['10.9.9.9'] }),
              200, 'PATCH seen: allowed_ips [10.9.9.9]');
    key_refused(echo_auth($ro), 403, 'ip_not_allowed', 'PATCH seen: now refused by address');
    is_status(call(PATCH => key_path($ro), as_user($alice), { allowed_ips => [] }),
              200, 'PATCH seen: allowed_ips []');
    is_key_principal(echo_auth($ro), $alice, $ro, 'PATCH seen: accepted again', perms => [1, 1, 0]);

    # the admin route
    key_refused(echo_auth($rw, GET => '/api/echo/auth/admin'), 403, 'insufficient_permissions',
                'admin route: a non-admin owner');
    is_error(call(GET => '/api/echo/auth/admin', as_user($alice)), 403, 'auth_error',
             'admin route: the JWT of a non-admin');
    $res = call(GET => '/api/echo/auth/admin', as_user($admin));
    is_status($res, 200, 'admin route: the JWT of an admin');
    is(decoded($res)->{via}, 'jwt', 'admin route: via jwt');

    my $ak = new_key($admin, 'admin key', organization_type => 'Admin', permissions => { admin => $TRUE });
    is_key_principal(echo_auth($ak, GET => '/api/echo/auth/admin'), $admin, $ak,
                     'admin route: an admin key of an admin owner', perms => [1, 0, 1], admin => 1);
    my $plain = new_key($admin, 'admin owner plain key');
    key_refused(echo_auth($plain, GET => '/api/echo/auth/admin'), 403, 'insufficient_permissions',
                'admin route: an admin owner, a key without admin');
    is_key_principal(echo_auth($plain), $admin, $plain, 'an admin owner, a key without admin: elsewhere',
                     admin => 1);

    my $former = new_user('former', admin => 1);
    my $fk = new_key($former, 'former admin', permissions => { admin => $TRUE });
    sql("UPDATE users SET is_admin = false WHERE id = '$former->{id}'");
    key_refused(echo_auth($fk, GET => '/api/echo/auth/admin'), 403, 'insufficient_permissions',
                'admin route: an admin key whose owner is no longer admin (before its first use)');
}

# ========================================================= g. rate limit

{
    my $tag = 'rate limit';
    avoid_boundary(3600, valgrind() ? 120 : 30);
    my $hour_end = (int(time / 3600) + 1) * 3600;
    my $k = new_key($alice, 'limited', rate_limit_per_hour => 3);

    # refused earlier than the limit: not counted
    key_refused(echo_auth($k, 'POST'), 403, 'insufficient_permissions', "$tag: a POST refused first");

    for my $left (2, 1, 0) {
        my $res = echo_auth($k);
        is_status($res, 200, "$tag: request with $left left");
        is($res->{headers}{'x-ratelimit-limit'}, 3, "$tag: X-RateLimit-Limit 3 ($left left)");
        is($res->{headers}{'x-ratelimit-remaining'}, $left, "$tag: X-RateLimit-Remaining $left");
        is($res->{headers}{'x-ratelimit-reset'}, $hour_end,
           "$tag: X-RateLimit-Reset is the end of the clock hour ($left left)");
    }
    for my $n (4, 5) {
        my $before = time;
        my $res = echo_auth($k);
        my $b = is_error($res, 429, 'rate_limit_exceeded', "$tag: request $n",
                         code => 'rate_limit_exceeded',
                         msg => 'Rate limit of 3 requests per hour exceeded');
        is($b->{limit}, 3, "$tag: request $n: limit 3");
        is($b->{remaining}, 0, "$tag: request $n: remaining 0");
        is(rfc3339($b->{reset_at}), $hour_end, "$tag: request $n: reset_at is the end of the hour")
            or diag('reset_at ' . ($b->{reset_at} // 'missing'));
        my $ra = $b->{retry_after};
        ok(defined $ra && !ref $ra && $ra =~ /^\d+$/ && $ra > 0 && $ra <= 3600,
           "$tag: request $n: retry_after an integer in 1..3600");
        ok(defined $ra && $ra >= $hour_end - time - 2 && $ra <= $hour_end - $before + 2,
           "$tag: request $n: retry_after counts down to the end of the hour");
        is($res->{headers}{'retry-after'}, $ra, "$tag: request $n: Retry-After header");
        is($res->{headers}{'x-ratelimit-remaining'}, 0, "$tag: request $n: X-RateLimit-Remaining 0");
        is($res->{headers}{'x-ratelimit-limit'}, 3, "$tag: request $n: X-RateLimit-Limit 3");
    }

    my $free = new_key($alice, 'unlimited sibling');
    my $res = echo_auth($free);
    is_key_principal($res, $alice, $free, "$tag: another key of the same user");
    is($res->{headers}{'x-ratelimit-limit'}, 100, "$tag: another key: its own limit");
    is($res->{headers}{'x-ratelimit-remaining'}, 99, "$tag: another key: its own count");
    is_status(call(GET => '/api/echo/auth', as_user($alice)), 200, "$tag: the owner's JWT is not limited");

    is_status(call(PATCH => key_path($k), as_user($alice), { rate_limit_per_hour => 10 }),
              200, "$tag: PATCH the limit to 10");
    $res = echo_auth($k);
    is_status($res, 200, "$tag: the raised limit is seen on the next request");
    is($res->{headers}{'x-ratelimit-limit'}, 10, "$tag: X-RateLimit-Limit 10");
}

# ============================================================== h. usage

{
    my $tag = 'usage';
    avoid_boundary(86400, valgrind() ? 120 : 30);
    my $k = new_key($alice, 'counted');
    is_key_principal(echo_auth($k), $alice, $k, "$tag: GET $_") for 1 .. 3;
    key_refused(echo_auth($k, $_), 403, 'insufficient_permissions', "$tag: $_ refused")
        for qw(POST DELETE);
    my $today = utc_day(time);

    my $u = {};
    my $meta = {};
    ok(wait_until(sub {
           $u = decoded(call(GET => key_path($k, '/usage'), as_user($alice)));
           $meta = decoded(call(GET => key_path($k), as_user($alice)));
           ($u->{total_requests} // 0) >= 5 && ($meta->{usage_count} // 0) >= 5 },
       $T, 'the usage flush'), "$tag: the counts reached PostgreSQL");
    is($u->{total_requests}, 5, "$tag: total_requests 5");
    is($u->{successful_requests}, 3, "$tag: successful_requests 3");
    is($u->{failed_requests}, 2, "$tag: failed_requests 2");
    like($u->{avg_response_time_ms} // '', qr/^\d+(?:\.\d+)?(?:[eE][-+]?\d+)?$/,
         "$tag: avg_response_time_ms a number");
    is_recent($u->{last_used_at}, "$tag: last_used_at");
    my $days = ref $u->{daily_usage} eq 'ARRAY' ? $u->{daily_usage} : [];
    is(scalar @$days, 7, "$tag: 7 days by default");
    is_deeply([map { $_->{date} } @$days], [map { utc_day(time - 86400 * (6 - $_)) } 0 .. 6],
              "$tag: the last 7 UTC days, oldest first");
    is_deeply($days->[-1], { date => $today, requests => 5, errors => 2 },
              "$tag: today holds the requests and the errors");
    is_deeply([map { [$_->{requests}, $_->{errors}] } @$days[0 .. 5]], [([0, 0]) x 6],
              "$tag: the other days are zero");
    is($meta->{usage_count}, 5, "$tag: metadata usage_count 5");
    is_recent($meta->{last_used_at}, "$tag: metadata last_used_at");
    is(sql("SELECT requests || ' ' || errors FROM api_key_usage_daily WHERE key_id = '$k->{id}'"),
       '5 2', "$tag: one row in api_key_usage_daily");

    # one more: added once, not counted twice
    is_key_principal(echo_auth($k), $alice, $k, "$tag: one request more");
    ok(wait_until(sub {
           $u = decoded(call(GET => key_path($k, '/usage'), as_user($alice)));
           ($u->{total_requests} // 0) >= 6 }, $T, 'the second flush'),
       "$tag: the next batch reached PostgreSQL");
    is_deeply([@$u{qw(total_requests successful_requests failed_requests)}], [6, 4, 2],
              "$tag: 6 requests, 4 successful, 2 failed");
    is(decoded(call(GET => key_path($k), as_user($alice)))->{usage_count}, 6,
       "$tag: usage_count 6");

    for my $n (1, 30, 365) {
        my $res = call(GET => key_path($k, "/usage?days=$n"), as_user($alice));
        is_status($res, 200, "$tag: days=$n");
        my $d = decoded($res)->{daily_usage};
        is(ref $d eq 'ARRAY' ? scalar @$d : -1, $n, "$tag: days=$n: $n entries");
        is(ref $d eq 'ARRAY' ? $d->[-1]{date} : undef, $today, "$tag: days=$n: ends today");
        is(ref $d eq 'ARRAY' ? $d->[0]{date} : undef, utc_day(time - 86400 * ($n - 1)),
           "$tag: days=$n: starts $n days back");
        is(ref $d eq 'ARRAY' ? $d->[-1]{requests} : undef, 6, "$tag: days=$n: today's count");
    }
    for my $q ('days=0', 'days=366', 'days=abc', 'days=-1', 'days=1.5') {
        is_400(call(GET => key_path($k, "/usage?$q"), as_user($alice)), "$tag: $q", 'days');
    }
}

# ========================================================== the aftermath

{
    is_status(call(GET => '/health'), 200, 'nginx still answers');
    ok(kill(0, $ng->{pid}), 'the nginx process is alive');
    my $log = $ng->log;
    unlike($log, qr/\[(?:alert|emerg)\]/, 'no [alert] or [emerg] in error.log');
    my @keys = ($writer->{key}, $revoked->{key}, $deleted->{key});
    ok(!(grep { index($log, substr($_, 4)) >= 0 } @keys), 'no key was written to error.log');
}

stop_nginx($ng);

done_testing();
