# Verified tokens are remembered per worker (defarm_jwt_cache): a hot
# token costs a look-up, not an HMAC.  Remembering it never lets anyone in
# who may no longer come in: a frozen user's token, and a token issued
# before a password reset, are refused on the next request although the
# token is in the cache; an expired one is refused at its expiry; a token
# that differs from a cached one in any byte is verified (and a forged one
# refused).  The cache is bounded: a flood of distinct valid tokens leaves
# at most defarm_jwt_cache entries and the worker's memory flat.

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use MIME::Base64 qw(encode_base64url);
use Digest::SHA qw(hmac_sha256);
use DefarmTest;

my $T = valgrind() ? 60 : 15;
my ($secret, $secret_file) = jwt_secret();
my $BOUND = 64;

my $ng = start_nginx(
    name   => 'token-cache',
    http   => db_config(size => 2) . "
    defarm_cache zone=token_cache:1m ttl=1h;
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;
    defarm_jwt_leeway 0s;
    defarm_jwt_cache $BOUND;
    defarm_password_reset_log on;",
    server => '
        location / {
            defarm_api on;
            defarm_echo on;
        }');

my $json = JSON::PP->new->utf8->canonical;

sub m_ { metric($ng, "defarm_jwt_cache_$_[0]") // 0 }

# a token signed here with the server's secret, claims as the module's
sub sign {
    my (%claims) = @_;
    my $h = encode_base64url($json->encode({ alg => 'HS256', typ => 'JWT' }));
    my $p = encode_base64url($json->encode(\%claims));
    return "$h.$p." . encode_base64url(hmac_sha256("$h.$p", $secret));
}

sub get_as {
    my ($token, $path) = @_;
    return http($ng, GET => $path // '/api/items',
                headers => { Authorization => "Bearer $token" });
}

my $name = "t047_$$";
my $u = api_user($ng, $name);
ok($u->{token}, 'a user and a token');

# 1. the second use of a token is a hit

my ($h0, $m0) = (m_('hits_total'), m_('misses_total'));
is(get_as($u->{token})->{status}, 200, 'first use: 200');
is(m_('misses_total'), $m0 + 1, '... its signature checked');
is(get_as($u->{token})->{status}, 200, 'second use: 200');
is(get_as($u->{token})->{status}, 200, 'third use: 200');
is(m_('hits_total'), $h0 + 2, '... found verified, twice');
is(m_('misses_total'), $m0 + 1, '... and not checked again');

# 2. a token one byte away from a cached one is verified, and refused

my $forged = $u->{token};
substr($forged, -2, 1) = substr($forged, -2, 1) eq 'A' ? 'B' : 'A';
my $res = get_as($forged);
is($res->{status}, 401, 'the cached token with another signature: 401');
like($res->{body}, qr/InvalidSignature/, '... InvalidSignature');

my ($hdr, $payload) = split /\./, $u->{token};
my $claims = $json->decode(MIME::Base64::decode_base64url($payload));
$res = get_as(sign(%$claims, tier => 'Enterprise') =~ s/\.[^.]+\z/.x/r);
is($res->{status}, 401, 'its claims changed, unsigned: 401');

# 3. frozen: refused on the next request, the token a hit all the same

sub invalidate {
    for my $prefix ("uid:$u->{id}:", "user:$name:") {
        http($ng, POST => '/api/echo/cache-invalidate',
             body => qq{{"prefix":"$prefix"}});
    }
}

sql("UPDATE users SET status = 'Suspended' WHERE id = '$u->{id}'");
invalidate();
$h0 = m_('hits_total');
$res = get_as($u->{token});
is($res->{status}, 403, 'suspended: the cached token is refused at once');
like($res->{body}, qr/suspended/, '... with the message');
is(m_('hits_total'), $h0 + 1, '... although the token was a hit');

sql("UPDATE users SET status = 'Active' WHERE id = '$u->{id}'");
invalidate();
is(get_as($u->{token})->{status}, 200, 'active again: served');

# 4. a password reset: the tokens issued before it stop working

my $mark = $ng->log_mark;
$res = http($ng, POST => '/api/auth/forgot-password',
            headers => { 'Content-Type' => 'application/json' },
            body => $json->encode({ email => "$name\@example.com" }));
is($res->{status}, 200, 'forgot-password');
my $re = qr/password reset token for user \Q$u->{id}\E: ([0-9a-f]{64})/;
ok(wait_until(sub { $ng->log($mark) =~ $re }, $T, 'the reset token'),
   'the reset token is logged');
my ($reset) = $ng->log($mark) =~ $re;

my $second = json_body(http($ng, POST => '/api/auth/login',
    headers => { 'Content-Type' => 'application/json' },
    body => $json->encode({ username => $name,
                            password => 'Str0ng!pass' })))->{token};
is(get_as($second)->{status}, 200, 'a second token, from a login');

$res = http($ng, POST => '/api/auth/reset-password',
            headers => { 'Content-Type' => 'application/json' },
            body => $json->encode({ token => $reset,
                                    new_password => 'N3w-Passw0rd!' }));
is($res->{status}, 200, 'reset-password');

$h0 = m_('hits_total');
for my $t ([ $u->{token}, 'the registration token' ],
           [ $second, 'the login token' ]) {
    $res = get_as($t->[0]);
    is($res->{status}, 401, "$t->[1], issued before the reset: 401");
    like($res->{body}, qr/revoked/, '... revoked');
}
is(m_('hits_total'), $h0 + 2, '... both were hits');
is(http($ng, POST => '/api/auth/refresh',
        headers => { Authorization => "Bearer $second" })->{status}, 401,
   'an old token cannot be refreshed');

my $after = json_body(http($ng, POST => '/api/auth/login',
    headers => { 'Content-Type' => 'application/json' },
    body => $json->encode({ username => $name,
                            password => 'N3w-Passw0rd!' })))->{token};
ok($after, 'a login with the new password');
is(get_as($after)->{status}, 200, '... its token is served');
my $refreshed = json_body(http($ng, POST => '/api/auth/refresh',
    headers => { Authorization => "Bearer $after" }))->{token};
ok($refreshed, 'refreshed');
is(get_as($refreshed)->{status}, 200, '... the refreshed token is served');

# 5. expiry: a cached token stops at its exp (defarm_jwt_leeway 0s)

my $now = time;
my %base = (user_id => $u->{id}, tier => 'Basic', workspace_id => undef,
            tv => 1);
my $short = sign(%base, iat => $now, exp => $now + 2);
is(get_as($short)->{status}, 200, 'a token that expires in 2s: 200');
is(get_as($short)->{status}, 200, '... cached');
sleep 1 while time <= $now + 2;
$res = get_as($short);
is($res->{status}, 401, 'past its exp: 401, cached or not');
like($res->{body}, qr/ExpiredSignature/, '... ExpiredSignature');

# 6. bounded: a flood of distinct valid tokens

sub rss {
    my ($kb) = DefarmTest::slurp("/proc/$ng->{pid}/status") =~ /^VmRSS:\s+(\d+) kB/m;
    return $kb;
}

my $i = 0;
my $flood = sub {
    my ($n) = @_;
    my $bad = 0;
    for (1 .. $n) {
        $i++;
        my $t = sign(%base, iat => $now + $i, exp => $now + 3600 + $i);
        $bad++ if get_as($t, '/api/auth/profile')->{status} != 200;
    }
    return $bad;
};

is($flood->(4 * $BOUND), 0, 'distinct valid tokens: all served');
is(m_('entries'), $BOUND, "the cache holds its bound, $BOUND");
my $rss0 = rss();
my $ev0 = m_('evictions_total');
my $n = valgrind() ? 500 : 5000;
is($flood->($n), 0, "$n more distinct tokens: all served");
is(m_('entries'), $BOUND, '... still at most the bound');
is(m_('evictions_total') - $ev0, $n, '... each one evicted an older one');
my $grew = rss() - $rss0;
diag("worker RSS grew $grew kB over $n distinct tokens");
SKIP: {
    # under valgrind or the sanitizers, their freed-block quarantine
    skip 'RSS under valgrind or the sanitizers is not the worker\'s', 1
        unless rss_is_nginx();
    ok($grew < 2048, "the worker's memory stays flat (grew $grew kB)");
}

is(get_as($after)->{status}, 200, 'an evicted token is verified again');

unlike($ng->log, qr/\[(alert|crit|emerg)\]/, 'no alert in error.log');
stop_nginx($ng);

# off: every use verified, nothing remembered
my $off = start_nginx(
    name   => 'token-cache-off',
    http   => db_config(size => 1) . "
    defarm_cache zone=token_cache_off:1m ttl=1h;
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;
    defarm_jwt_cache off;",
    server => '
        location / {
            defarm_api on;
        }');
for my $k (1 .. 3) {
    is(http($off, GET => '/api/auth/profile',
            headers => { Authorization => "Bearer $after" })->{status}, 200,
       "defarm_jwt_cache off, use $k: 200");
}
is(metric($off, 'defarm_jwt_cache_entries') // 0, 0, 'off: no entries');
is(metric($off, 'defarm_jwt_cache_hits_total') // 0, 0, 'off: no hits');
stop_nginx($off);

done_testing();
