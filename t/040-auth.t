# Auth: register, login, profile and refresh; the password policy and the
# other validation; duplicates; account status; JWTs that must be refused;
# bcrypt in the thread pool (the cost, the default pool); and the
# directives that nginx -t must refuse.
#
# Tokens for profile and refresh are signed here, in Perl, with the test
# secret (HS256 over the claims the original API uses: user_id,
# workspace_id, exp), for users registered in an earlier block: the
# request sections of a block are evaluated only when that block runs
# (filters_delay below), so they can read what earlier blocks wrote to
# PostgreSQL.  They are evaluated before the block's --- init runs, so a
# token signed in a section exists before an --- init that suspends or
# deletes its user.  Flows with the tokens the module itself issued,
# concurrent registrations and the full crypt queue (503 crypt_busy) are
# in t/041-auth-concurrency.t: nginx counts idle threads against
# max_queue, so even "threads=1 max_queue=0" accepts a task while its
# thread is idle, and a refusal needs another hash in flight, which
# requests sent one after the other cannot arrange.
#
# Usernames carry this process's pid: the database lives as long as the
# whole "make test" run.

use Test::Nginx::Socket 'no_plan';

use Digest::SHA qw(hmac_sha256 hmac_sha512);
use MIME::Base64 qw(encode_base64url);
use JSON::PP ();
use Time::HiRes ();
use DefarmTest qw(sql);     # psql against the test database

repeat_each(1);
no_shuffle();

# Evaluate each block's sections just before it runs, not all up front.
Test::Base::filters_delay();

our $Json = JSON::PP->new->utf8->canonical;

# ------------------------------------------------------------ the secrets

sub random_text {
    my ($n) = @_;
    my @c = ('A' .. 'Z', 'a' .. 'z', '0' .. '9');
    return join '', map { $c[rand @c] } 1 .. $n;
}

sub write_file {
    my ($file, $data) = @_;
    open my $fh, '>:raw', $file or die "cannot write $file: $!\n";
    print $fh $data;
    close $fh or die "cannot write $file: $!\n";
}

our $Secret      = random_text(48);
our $OtherSecret = random_text(48);
our $EnvSecret   = random_text(40);
our $SecretFile  = "/tmp/defarm-test-jwt-040-$$.secret";
our $ShortFile   = "/tmp/defarm-test-jwt-040-$$.short";
our $MissingFile = "/tmp/defarm-test-jwt-040-$$.missing";

write_file($SecretFile, $Secret);       # no trailing newline
write_file($ShortFile, '0123456789');   # 10 bytes
unlink $MissingFile;

# read by the module at configuration time (nginx inherits our environment)
$ENV{DEFARM_JWT_SECRET}       = $EnvSecret;
$ENV{DEFARM_JWT_SECRET_SHORT} = 'short';

my $MainPid = $$;
END { unlink $SecretFile, $ShortFile if $$ == $MainPid }

# -------------------------------------------------------------- the config

our $Db = qq{defarm_db "host=$ENV{TEST_NGINX_PG_HOST} port=$ENV{TEST_NGINX_PG_PORT}}
        . qq{ dbname=$ENV{TEST_NGINX_PG_DATABASE} user=$ENV{TEST_NGINX_PG_USER}" size=4;};

# http_conf(cost => 3, secret => 'file=/x', ttl => '1h', pool => undef, ...):
# the http{} directives, each one replaced (or, with undef, left out).
sub http_conf {
    my (%o) = @_;
    my %d = (db => $Db,
             pool => 'defarm_crypt_pool defarm_crypt;',
             cost => 4,
             secret => "file=$SecretFile");
    %d = (%d, %o);
    my $conf = '';
    $conf .= "    $d{db}\n" if defined $d{db};
    $conf .= "    $d{pool}\n" if defined $d{pool};
    $conf .= "    defarm_bcrypt_cost $d{cost};\n" if defined $d{cost};
    $conf .= "    defarm_jwt_secret $d{secret};\n" if defined $d{secret};
    $conf .= "    defarm_jwt_ttl $d{ttl};\n" if defined $d{ttl};
    $conf .= "    defarm_jwt_leeway $d{leeway};\n" if defined $d{leeway};
    return $conf;
}

add_block_preprocessor(sub {
    my $block = shift;

    $block->run_filters unless $block->is_filtered;

    if (!defined $block->main_config) {
        $block->set_value("main_config",
                          "thread_pool defarm_crypt threads=2 max_queue=64;\n");
    }

    if (!defined $block->http_config) {
        $block->set_value("http_config", http_conf());
    }

    if (!defined $block->config) {
        $block->set_value("config", <<'_EOC_');
    location / {
        defarm_api on;
        add_header X-Crypt-Ms $defarm_crypt_ms always;
    }
_EOC_
    }

    if (!defined $block->more_headers) {
        $block->set_value("more_headers", "Content-Type: application/json");
    }
});

# ------------------------------------------------------------- the users

our $P  = "t040_$$";
our $Pw = 'Corr3ct-Horse!';

sub U { "${P}_$_[0]" }                     # a username of this run
sub E { U($_[0]) . '@example.com' }        # and its email

sub post { "POST $_[0]\n$_[1]" }

# a register request for U($name), with fields added or replaced
sub register {
    my ($name, %f) = @_;
    return post('/api/auth/register',
                $Json->encode({ username => U($name), email => E($name),
                                password => $Pw, %f }));
}

sub login {
    my ($name, $password, %f) = @_;
    return post('/api/auth/login',
                $Json->encode({ username => U($name),
                                password => $password // $Pw, %f }));
}

sub bearer { "Authorization: Bearer $_[0]" }

# the row of U($name): {id, email, workspace_id, created, password_hash,
# tier, status, credits, is_admin, last_login}, or {} when there is none
sub user {
    my ($name) = @_;
    my $row = sql("SELECT id, email, coalesce(workspace_id, ''),"
                . " floor(extract(epoch FROM created_at))::bigint,"
                . " password_hash, tier, status,"
                . " (SELECT credits FROM credit_balances b WHERE b.user_id = users.id),"
                . " is_admin,"
                . " coalesce(last_login::text, '')"
                . " FROM users WHERE username = '" . U($name) . "'");
    return {} unless length $row;
    my %u;
    @u{qw(id email workspace_id created password_hash tier status credits
          is_admin last_login)} = split /\|/, $row, -1;
    return \%u;
}

# ------------------------------------------------------------------ JWTs

sub b64json { encode_base64url($Json->encode($_[0])) }

# jwt(claims => {...}, secret => ..., alg => 'HS256', header => {...},
# sig => 'raw bytes'): a JWT signed here
sub jwt {
    my (%o) = @_;
    my $header = $o{header} // { alg => $o{alg} // 'HS256', typ => 'JWT' };
    my $input = b64json($header) . '.' . b64json($o{claims});
    my $key = $o{secret} // $Secret;
    my $alg = $header->{alg} // '';
    my $sig = exists $o{sig}     ? $o{sig}
            : $alg eq 'HS256'    ? hmac_sha256($input, $key)
            : $alg eq 'HS512'    ? hmac_sha512($input, $key)
            :                      '';
    return "$input." . encode_base64url($sig);
}

# the claims for U($name) as the module issues them, with overrides (a
# value of undef removes that claim)
sub claims {
    my ($name, %o) = @_;
    my $u = user($name);
    Test::More::diag("no user " . U($name) . " in the database") unless $u->{id};
    my %c = (user_id => $u->{id} // 'user-missing',
             workspace_id => $u->{workspace_id} || undef,
             exp => time + 3600);
    for my $k (keys %o) {
        if (defined $o{$k}) { $c{$k} = $o{$k} } else { delete $c{$k} }
    }
    return \%c;
}

sub token_for {
    my ($name, %o) = @_;
    my %sign = map { $_ => delete $o{$_} } grep { exists $o{$_} }
               qw(secret alg header sig);
    return jwt(claims => claims($name, %o), %sign);
}

# --------------------------------------------------------- expectations

our $UUID  = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';
our $TOKEN = '[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+';
our $STR   = '(?:[^"\\\\]|\\\\.)*';         # the inside of a JSON string

# the JSON error: err(401, 'auth_error', 'Invalid credentials'); the message
# is a literal string, a qr// or undef for any
sub err {
    my ($status, $kind, $msg) = @_;
    my $m = !defined $msg ? $STR : ref $msg ? $msg : quotemeta $msg;
    return qr/^\{"error":"$m","error_kind":"\Q$kind\E","trace_id":"[0-9a-f]{32}","status":$status\}$/;
}

# a login/register/refresh answer: {token, user_id, workspace_id,
# expires_at} with expires_at = now + ttl
sub auth_ok {
    my (%o) = @_;
    my $uid = defined $o{user_id} ? quotemeta $o{user_id} : "user-$UUID";
    my $ws = defined $o{workspace_id} ? quotemeta $o{workspace_id} : $STR;
    my $ttl = $o{ttl} // 86400;
    my $now = time;
    my $exp = join '|', ($now + $ttl - 2) .. ($now + $ttl + 60);
    return qr/^\{(?=[^{}]*"token":"$TOKEN")(?=[^{}]*"user_id":"$uid")(?=[^{}]*"workspace_id":"$ws")(?=[^{}]*"expires_at":(?:$exp)[,}])[^{}]*\}$/;
}

# a profile answer for U($name), read from the database
sub profile_ok {
    my ($name) = @_;
    my $u = user($name);
    my ($id, $email, $ws) = map { quotemeta($_ // '') } @$u{qw(id email workspace_id)};
    my $created = join '|', ($u->{created} // 0), ($u->{created} // 0) + 1;
    my $user = quotemeta U($name);
    return qr/^\{(?=[^{}]*"user_id":"$id")(?=[^{}]*"username":"$user")(?=[^{}]*"email":"$email")(?=[^{}]*"created_at":(?:$created)[,}])(?=[^{}]*"workspace_id":"$ws")[^{}]*\}$/;
}

# an email address of exactly $len bytes for U($name), with DNS-sized labels
sub long_email {
    my ($name, $len) = @_;
    my $local = U($name);
    my $rest = $len - length($local) - 1 - length('.com');
    my @labels;
    while ($rest > 63) {
        push @labels, 'd' x 60;
        $rest -= 61;
    }
    push @labels, 'd' x $rest if $rest > 0;
    my $email = $local . '@' . join('.', @labels) . '.com';
    die "long_email: got " . length($email) . " bytes, not $len\n"
        unless length($email) == $len;
    return $email;
}

# a username of exactly $bytes bytes for U($name), padded with "é" (two
# bytes in UTF-8), so that it has fewer characters than bytes
sub mb_name {
    my ($name, $bytes) = @_;
    my $n = U($name);
    $n .= 'x' if ($bytes - length $n) % 2;
    return $n . ("\x{e9}" x (($bytes - length $n) / 2));
}

sub name_of_len {
    my ($name, $len) = @_;
    my $n = U($name);
    return $n . ('x' x ($len - length $n));
}

# (in --- init) poll the database until $code returns true
sub db_wait {
    my ($code, $secs) = @_;
    my $deadline = Time::HiRes::time() + ($secs // 5);
    until ($code->()) {
        return 0 if Time::HiRes::time() > $deadline;
        Time::HiRes::sleep(0.05);
    }
    return 1;
}

run_tests();

__DATA__

=== TEST 1: register answers a token, the user id and the workspace
--- request eval
::register('alice')
--- error_code: 200
--- response_headers
Content-Type: application/json
--- response_headers_like
X-Crypt-Ms: ^\d+\.\d{3}$
Server-Timing: crypt;dur=\d
Server-Timing: total;dur=\d
--- response_body_like eval
::auth_ok(workspace_id => ::U('alice') . '-workspace')
--- no_error_log
[error]



=== TEST 2: the new user's row: bcrypt at the configured cost, Basic, Active, 100 credits
--- init
my $u = user('alice');
Test::More::like($u->{id} // '', qr/^user-$::UUID$/, 'TEST 2 - id is user-<uuid>');
Test::More::like($u->{password_hash} // '', qr/^\$2b\$04\$[.\/A-Za-z0-9]{53}$/,
                 'TEST 2 - password_hash is bcrypt $2b$ with cost 04');
Test::More::is($u->{tier}, 'Basic', 'TEST 2 - tier Basic');
Test::More::is($u->{status}, 'Active', 'TEST 2 - status Active');
Test::More::is($u->{credits}, 100, 'TEST 2 - credits 100');
Test::More::is($u->{is_admin}, 'f', 'TEST 2 - is_admin false');
Test::More::is($u->{email}, E('alice'), 'TEST 2 - email stored');
Test::More::is($u->{workspace_id}, U('alice') . '-workspace', 'TEST 2 - workspace_id stored');
--- request
GET /health
--- error_code: 200



=== TEST 3: workspace_name names the workspace
--- request eval
::register('ws', workspace_name => 'north-farm')
--- error_code: 200
--- response_body_like eval
::auth_ok(workspace_id => 'north-farm-workspace')



=== TEST 4: boundaries that are still valid: a 64-byte username, an 8-byte password, a 254-byte email (lengths in bytes)
--- request eval
[::post('/api/auth/register', $::Json->encode({ username => ::name_of_len('n64', 64), email => ::E('n64'), password => $::Pw })),
 ::register('pw8', password => 'Abcdef1!'),
 ::register('e254', email => ::long_email('e254', 254)),
 ::post('/api/auth/register', $::Json->encode({ username => ::mb_name('mb64', 64), email => ::E('mb64'), password => $::Pw })),
 ::register('pwmb', password => "Ab1!\x{e9}\x{e9}")]
--- error_code eval
[200, 200, 200, 200, 200]
--- response_body_like eval
[::auth_ok(workspace_id => ::name_of_len('n64', 64) . '-workspace'),
 ::auth_ok(workspace_id => ::U('pw8') . '-workspace'),
 ::auth_ok(workspace_id => ::U('e254') . '-workspace'),
 ::auth_ok(),
 ::auth_ok(workspace_id => ::U('pwmb') . '-workspace')]



=== TEST 5: bodies that are not objects, missing fields, fields of the wrong type
--- request eval
[::post('/api/auth/register', '["x"]'),
 ::post('/api/auth/register', '"text"'),
 ::post('/api/auth/register', '42'),
 ::post('/api/auth/register', '{"username":'),
 ::post('/api/auth/register', ''),
 ::post('/api/auth/register', $::Json->encode({ email => ::E('v1'), password => $::Pw })),
 ::post('/api/auth/register', $::Json->encode({ username => ::U('v2'), email => ::E('v2') })),
 ::post('/api/auth/register', $::Json->encode({ username => ::U('v3'), password => $::Pw })),
 ::post('/api/auth/register', '{"username":42,"email":"' . ::E('v4') . '","password":"' . $::Pw . '"}'),
 ::post('/api/auth/register', '{"username":"' . ::U('v5') . '","email":"' . ::E('v5') . '","password":12345678}'),
 ::post('/api/auth/register', '{"username":"' . ::U('v6') . '","email":null,"password":"' . $::Pw . '"}'),
 ::post('/api/auth/register', '{"username":["' . ::U('v7') . '"],"email":"' . ::E('v7') . '","password":"' . $::Pw . '"}'),
 ::register('v8', workspace_name => 42),
 ::register('v9', workspace_name => { name => 'x' })]
--- error_code eval
[(400) x 14]
--- response_body_like eval
[(::err(400, 'validation_error')) x 14]
--- no_error_log
[alert]
[crit]



=== TEST 6: usernames that are refused
--- request eval
[::post('/api/auth/register', $::Json->encode({ username => '', email => ::E('u1'), password => $::Pw })),
 ::post('/api/auth/register', $::Json->encode({ username => ::name_of_len('n65', 65), email => ::E('n65'), password => $::Pw })),
 ::register('u3', username => ::U('u3') . ' space'),
 ::register('u4', username => ::U('u4') . "\ttab"),
 ::register('u5', username => ::U('u5') . "\nnewline"),
 ::register('u6', username => ::U('u6') . "\x01ctl"),
 ::register('u7', username => ' ' . ::U('u7')),
 ::register('u8', username => ::U('u8') . "\x7fdel"),
 ::post('/api/auth/register', $::Json->encode({ username => ::mb_name('mb66', 66), email => ::E('mb66'), password => $::Pw }))]
--- error_code eval
[(400) x 9]
--- response_body_like eval
[(::err(400, 'validation_error')) x 9]



=== TEST 7: emails that are refused
--- request eval
[::register('m1', email => ::U('m1') . '.example.com'),
 ::register('m2', email => ::U('m2') . '@@example.com'),
 ::register('m3', email => ::U('m3') . '@b@example.com'),
 ::register('m4', email => '@example.com'),
 ::register('m5', email => ::U('m5') . '@'),
 ::register('m6', email => ::U('m6') . '@localhost'),
 ::register('m7', email => ::long_email('m7', 255)),
 ::register('m8', email => '')]
--- error_code eval
[(400) x 8]
--- response_body_like eval
[(::err(400, 'validation_error')) x 8]



=== TEST 8: the password policy
--- request eval
[::register('p1', password => 'Sh0rt!a'),
 ::register('p2', password => 'nouppercase1!'),
 ::register('p3', password => 'NOLOWERCASE1!'),
 ::register('p4', password => 'NoDigitsHere!'),
 ::register('p5', password => 'NoSpecials123'),
 ::register('p6', password => '')]
--- error_code eval
[(400) x 6]
--- response_body_like eval
[(::err(400, 'validation_error', qr/Password must$::STR/)) x 6]



=== TEST 9: none of the refused registrations created a user
--- init
my $n = sql("SELECT count(*) FROM users WHERE username LIKE '" . $::P . "\\_%' AND username NOT LIKE '" . $::P . "\\_mb64%' AND username NOT IN ("
            . join(',', map { "'" . U($_) . "'" } qw(alice ws pw8 e254 pwmb))
            . ", '" . name_of_len('n64', 64) . "')");
Test::More::is($n, 0, 'TEST 9 - no user from TEST 5 to TEST 8 in the database');
--- request
GET /health
--- error_code: 200



=== TEST 10: duplicate username and duplicate email are 409; both are compared exactly
--- request eval
[::register('dup'),
 ::register('dup', email => ::E('dup-other'), password => 'Other-Passw0rd'),
 ::register('dup-other', email => ::E('dup')),
 ::register('dup', username => uc ::U('dup'), email => ::E('dup-upper')),
 ::register('dup-case', email => uc ::E('dup'))]
--- error_code eval
[200, 409, 409, 200, 200]
--- response_body_like eval
[::auth_ok(),
 ::err(409, 'conflict', 'Username already exists'),
 ::err(409, 'conflict', 'Email already exists'),
 ::auth_ok(),
 ::auth_ok()]



=== TEST 11: the refused duplicate changed nothing: the first password still logs in
--- request eval
[::login('dup'), ::login('dup', 'Other-Passw0rd')]
--- error_code eval
[200, 401]
--- response_body_like eval
[::auth_ok(user_id => ::user('dup')->{id}, workspace_id => ::U('dup') . '-workspace'),
 ::err(401, 'auth_error', 'Invalid credentials')]
--- init
Test::More::is(sql("SELECT count(*) FROM users WHERE email = '" . E('dup-other') . "'"), 0,
               'TEST 11 - the refused duplicate left no row');



=== TEST 12: login answers the same shape as register, for the same user
--- init
sql("UPDATE users SET last_login = NULL WHERE username = '" . U('alice') . "'");
--- request eval
::login('alice')
--- error_code: 200
--- response_headers
Content-Type: application/json
--- response_headers_like
X-Crypt-Ms: ^\d+\.\d{3}$
Server-Timing: crypt;dur=\d
Server-Timing: total;dur=\d
--- response_body_like eval
::auth_ok(user_id => ::user('alice')->{id}, workspace_id => ::U('alice') . '-workspace')
--- no_error_log
[error]



=== TEST 13: login sets last_login
--- init
Test::More::ok(db_wait(sub { length user('alice')->{last_login} }),
               'TEST 13 - last_login is set after a login');
--- request
GET /health
--- error_code: 200



=== TEST 14: login ignores workspace_id; a password with multi-byte characters verifies
--- request eval
[::login('alice', undef, workspace_id => 'someone-elses-workspace'),
 ::login('pwmb', "Ab1!\x{e9}\x{e9}"),
 ::login('pwmb', "Ab1!\x{e8}\x{e9}")]
--- error_code eval
[200, 200, 401]
--- response_body_like eval
[::auth_ok(user_id => ::user('alice')->{id}, workspace_id => ::U('alice') . '-workspace'),
 ::auth_ok(user_id => ::user('pwmb')->{id}, workspace_id => ::U('pwmb') . '-workspace'),
 ::err(401, 'auth_error', 'Invalid credentials')]



=== TEST 15: a wrong password and an unknown user get the same 401
--- request eval
[::login('alice', 'Wrong-Passw0rd'),
 ::login('alice', lc $::Pw),
 ::login('nobody'),
 ::login('alice', $::Pw . 'x')]
--- error_code eval
[401, 401, 401, 401]
--- response_body_like eval
[(::err(401, 'auth_error', 'Invalid credentials')) x 4]



=== TEST 16: login with missing fields or fields of the wrong type
--- request eval
[::post('/api/auth/login', $::Json->encode({ username => ::U('alice') })),
 ::post('/api/auth/login', $::Json->encode({ password => $::Pw })),
 ::post('/api/auth/login', '{"username":42,"password":"' . $::Pw . '"}'),
 ::post('/api/auth/login', '{"username":"' . ::U('alice') . '","password":null}'),
 ::post('/api/auth/login', '[]'),
 ::post('/api/auth/login', '')]
--- error_code eval
[(400) x 6]
--- response_body_like eval
[(::err(400, 'validation_error')) x 6]



=== TEST 17: users for the status tests
--- request eval
[::register('suspended'), ::register('banned'), ::register('pending'),
 ::register('trial'), ::register('late'), ::register('gone')]
--- error_code eval
[(200) x 6]



=== TEST 18: an account that is not Active gets 403 with the right password, 401 with a wrong one
--- init
sql("UPDATE users SET status = '$_->[1]' WHERE username = '" . U($_->[0]) . "'")
    for ['suspended', 'Suspended'], ['banned', 'Banned'],
        ['pending', 'PendingVerification'], ['trial', 'TrialExpired'];
--- request eval
[::login('suspended'), ::login('banned'), ::login('pending'), ::login('trial'),
 ::login('suspended', 'Wrong-Passw0rd'), ::login('banned', 'Wrong-Passw0rd'),
 ::login('pending', 'Wrong-Passw0rd')]
--- error_code eval
[403, 403, 403, 403, 401, 401, 401]
--- response_body_like eval
[::err(403, 'auth_error', 'Your account has been suspended. Please contact an administrator.'),
 ::err(403, 'auth_error', 'Your account has been banned.'),
 ::err(403, 'auth_error', 'Your account is pending verification. Please check your email.'),
 ::err(403, 'auth_error', 'Your trial has expired. Please upgrade your account.'),
 (::err(401, 'auth_error', 'Invalid credentials')) x 3]



=== TEST 19: profile with a valid token
--- request
GET /api/auth/profile
--- more_headers eval
::bearer(::token_for('alice'))
--- error_code: 200
--- response_headers
Content-Type: application/json
--- response_body_like eval
::profile_ok('alice')
--- no_error_log
[error]



=== TEST 20: refresh with a valid token (no body) issues a new one
--- request
POST /api/auth/refresh
--- more_headers eval
::bearer(::token_for('alice'))
--- error_code: 200
--- response_body_like eval
::auth_ok(user_id => ::user('alice')->{id}, workspace_id => ::U('alice') . '-workspace')



=== TEST 21: an exp within the default leeway (60s) is still accepted
--- request eval
["GET /api/auth/profile", "POST /api/auth/refresh"]
--- more_headers eval
[::bearer(::token_for('alice', exp => time - 20)),
 ::bearer(::token_for('alice', exp => time - 20))]
--- error_code eval
[200, 200]
--- response_body_like eval
[::profile_ok('alice'),
 ::auth_ok(user_id => ::user('alice')->{id})]



=== TEST 22: no credentials, or credentials that are not a Bearer token: 401 with WWW-Authenticate
--- request eval
["GET /api/auth/profile", "POST /api/auth/refresh",
 "GET /api/auth/profile", "POST /api/auth/refresh",
 "GET /api/auth/profile", "POST /api/auth/refresh",
 "GET /api/auth/profile"]
--- more_headers eval
["", "",
 "Authorization: Basic YWxpY2U6cGFzc3dvcmQ=", "Authorization: Basic YWxpY2U6cGFzc3dvcmQ=",
 "Authorization: Bearer", "Authorization: Bearer ",
 "Authorization: " . ::token_for('alice')]
--- error_code eval
[(401) x 7]
--- response_headers_like
WWW-Authenticate: ^Bearer\b
--- response_body_like eval
[::err(401, 'auth_error', 'Authentication required'),
 ::err(401, 'auth_error', 'Authentication required'),
 (::err(401, 'auth_error')) x 5]



=== TEST 23: tokens that must be refused: 401 with WWW-Authenticate
--- request eval
[("GET /api/auth/profile", "POST /api/auth/refresh") x 10]
--- more_headers eval
[map { (::bearer($_), ::bearer($_)) }
 'garbage',
 'a.b.c',
 ::token_for('alice', secret => $::OtherSecret),
 ::token_for('alice', header => { alg => 'none', typ => 'JWT' }),
 ::token_for('alice', header => { alg => 'none', typ => 'JWT' }, sig => 'x'),
 ::token_for('alice', alg => 'HS512'),
 ::token_for('alice', exp => time - 3600),
 ::token_for('alice', exp => time - 120),
 ::token_for('alice', exp => undef),
 do { my ($h, $p, $s) = split /\./, ::token_for('alice');
      substr($s, 0, 1) = substr($s, 0, 1) eq 'A' ? 'B' : 'A';
      "$h.$p.$s" }]
--- error_code eval
[(401) x 20]
--- response_headers_like
WWW-Authenticate: ^Bearer\b
--- response_body_like eval
[(::err(401, 'auth_error')) x 20]



=== TEST 24: a token whose claims were changed after signing is refused
--- request
GET /api/auth/profile
--- more_headers eval
my ($h, $p, $s) = split /\./, ::token_for('alice');
my $other = ::b64json(::claims('ws'));
::bearer("$h.$other.$s")
--- error_code: 401
--- response_headers_like
WWW-Authenticate: ^Bearer\b
--- response_body_like eval
::err(401, 'auth_error')



=== TEST 25: a valid token for a user that does not exist: 404 User not found
--- request eval
["GET /api/auth/profile", "POST /api/auth/refresh"]
--- more_headers eval
[(::bearer(::jwt(claims => { user_id => 'user-00000000-0000-4000-8000-000000000000',
                             workspace_id => 'x-workspace', exp => time + 3600 }))) x 2]
--- error_code eval
[404, 404]
--- response_body_like eval
[(::err(404, 'not_found', 'User not found')) x 2]



=== TEST 26: profile and refresh work for a user who is then deleted ...
--- request eval
["GET /api/auth/profile", "POST /api/auth/refresh"]
--- more_headers eval
[(::bearer(::token_for('gone'))) x 2]
--- error_code eval
[200, 200]



=== TEST 27: ... and answer 404 once the user is gone
--- init
sql("DELETE FROM users WHERE username = '" . U('gone') . "'");
--- request eval
["GET /api/auth/profile", "POST /api/auth/refresh"]
--- more_headers eval
[(::bearer(::token_for('gone'))) x 2]
--- error_code eval
[404, 404]
--- response_body_like eval
[(::err(404, 'not_found', 'User not found')) x 2]



=== TEST 28: a token of a user suspended after it was signed: 403 on profile and refresh
--- init
sql("UPDATE users SET status = 'Suspended' WHERE username = '" . U('late') . "'");
--- request eval
["GET /api/auth/profile", "POST /api/auth/refresh"]
--- more_headers eval
[(::bearer(::token_for('late'))) x 2]
--- error_code eval
[403, 403]
--- response_body_like eval
[(::err(403, 'auth_error')) x 2]



=== TEST 29: defarm_jwt_ttl sets expires_at for register, login and refresh
--- http_config eval
::http_conf(ttl => '1h')
--- request eval
[::register('ttl'), ::login('alice'), "POST /api/auth/refresh"]
--- more_headers eval
["Content-Type: application/json", "Content-Type: application/json",
 ::bearer(::token_for('alice'))]
--- error_code eval
[200, 200, 200]
--- response_body_like eval
[::auth_ok(ttl => 3600), ::auth_ok(ttl => 3600), ::auth_ok(ttl => 3600)]



=== TEST 30: defarm_jwt_leeway 10m accepts a token expired 5 minutes ago
--- http_config eval
::http_conf(leeway => '10m')
--- request eval
["GET /api/auth/profile", "GET /api/auth/profile"]
--- more_headers eval
[::bearer(::token_for('alice', exp => time - 300)),
 ::bearer(::token_for('alice', exp => time - 900))]
--- error_code eval
[200, 401]



=== TEST 31: defarm_jwt_secret env= reads the secret from the environment
--- http_config eval
::http_conf(secret => 'env=DEFARM_JWT_SECRET')
--- request eval
["GET /api/auth/profile", "GET /api/auth/profile"]
--- more_headers eval
[::bearer(::token_for('alice', secret => $::EnvSecret)),
 ::bearer(::token_for('alice'))]
--- error_code eval
[200, 401]
--- response_body_like eval
[::profile_ok('alice'), ::err(401, 'auth_error')]



=== TEST 32: the default cost is 12 and the default thread pool serves bcrypt
--- main_config
--- http_config eval
::http_conf(cost => undef, pool => undef)
--- request eval
[::register('cost12'), ::login('cost12'), ::login('cost12', 'Wrong-Passw0rd')]
--- error_code eval
[200, 200, 401]
--- timeout: 10



=== TEST 33: the hash stored with the default cost is $2b$12$
--- init
Test::More::like(user('cost12')->{password_hash} // '', qr/^\$2b\$12\$[.\/A-Za-z0-9]{53}$/,
                 'TEST 33 - password_hash is bcrypt $2b$ with cost 12');
--- request
GET /health
--- error_code: 200



=== TEST 34: a bcrypt hash made elsewhere verifies (a user from another system)
--- init
my $salt = join '', map { ('.', '/', 'A' .. 'Z', 'a' .. 'z', '0' .. '9')[rand 64] } 1 .. 21;
$salt .= 'e';        # the 22nd character carries 4 bits: pick one that is canonical
my $hash = crypt($::Pw, '$2b$04$' . $salt);
Test::More::like($hash, qr/^\$2b\$04\$/, 'TEST 34 - this libc crypt() makes $2b$ hashes');
sql("INSERT INTO users (id, username, email, password_hash, workspace_id)"
     . " VALUES ('user-11111111-2222-4333-8444-$$', '" . U('seeded') . "', '"
     . E('seeded') . "', '$hash', 'seeded-workspace')");
--- request eval
[::login('seeded'), ::login('seeded', 'Wrong-Passw0rd')]
--- error_code eval
[200, 401]
--- response_body_like eval
[::auth_ok(user_id => "user-11111111-2222-4333-8444-$$", workspace_id => 'seeded-workspace'),
 ::err(401, 'auth_error', 'Invalid credentials')]



=== TEST 35: a secret shorter than 32 bytes fails nginx -t
--- http_config eval
::http_conf(secret => "file=$::ShortFile")
--- must_die
--- error_log eval
qr/\[emerg\] .*defarm_jwt_secret: the secret is 10 bytes, at least 32 are needed/



=== TEST 36: a short secret from the environment fails nginx -t too
--- http_config eval
::http_conf(secret => 'env=DEFARM_JWT_SECRET_SHORT')
--- must_die
--- error_log eval
qr/\[emerg\] .*defarm_jwt_secret: the secret is 5 bytes, at least 32 are needed/



=== TEST 37: a secret file that does not exist fails nginx -t, naming the file
--- http_config eval
::http_conf(secret => "file=$::MissingFile")
--- must_die
--- error_log eval
qr/\[emerg\] .*\Q$::MissingFile\E/



=== TEST 38: defarm_bcrypt_cost below 4 fails nginx -t
--- http_config eval
::http_conf(cost => 3)
--- must_die
--- error_log eval
qr/\[emerg\] .*defarm_bcrypt_cost must be between 4 and 31/



=== TEST 39: defarm_bcrypt_cost above 31 fails nginx -t
--- http_config eval
::http_conf(cost => 32)
--- must_die
--- error_log eval
qr/\[emerg\] .*defarm_bcrypt_cost must be between 4 and 31/
