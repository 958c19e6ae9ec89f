# Login through the shared-memory cache (the original's ADR 002): the
# user's auth record is looked up in the cache first, PostgreSQL on a
# miss, and a password reset drops the cached record with the old hash.

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use DefarmTest;

my $T = valgrind() ? 60 : 10;
my $json = JSON::PP->new->utf8;

my (undef, $secret_file) = jwt_secret();

my $ng = start_nginx(
    name   => 'auth-cache',
    http   => db_config(size => 2) . "
    defarm_cache zone=auth_cache:1m ttl=1h;
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;
    defarm_password_reset_log on;",
    server => '
        location / {
            defarm_api on;
            add_header X-Cache $defarm_cache always;
        }');

my %j = (headers => { 'Content-Type' => 'application/json' });
my $user = "t043_$$";
my $pw = 'Cach3d!pass';
my $new = 'N3w!cached';

sub login {
    my ($password) = @_;
    return http($ng, POST => '/api/auth/login', %j,
                body => $json->encode({ username => $user,
                                        password => $password }));
}

my $res = http($ng, POST => '/api/auth/register', %j,
               body => $json->encode({ username => $user, password => $pw,
                                       email => "$user\@example.com" }));
is($res->{status}, 200, 'registered');
my $user_id = eval { $json->decode($res->{body})->{user_id} } // '';

$res = login($pw);
is($res->{status}, 200, 'first login');
is($res->{headers}{'x-cache'}, 'MISS', 'first login read PostgreSQL');

$res = login($pw);
is($res->{status}, 200, 'second login');
is($res->{headers}{'x-cache'}, 'HIT', 'second login read the cache');
is(eval { $json->decode($res->{body})->{user_id} }, $user_id,
   'the cached record names the same user');
like($res->{headers}{'server-timing'} // '', qr/crypt;dur=/,
     'bcrypt still ran (the cache holds the hash, not the answer)');
unlike($res->{headers}{'server-timing'} // '', qr/\bdb;dur=/,
       'no database time on a cache hit');

$res = login('Wr0ng!pass');
is($res->{status}, 401, 'a wrong password is refused from the cache too');
is($res->{headers}{'x-cache'}, 'HIT', '(from the cached record)');

for my $try (1, 2) {
    $res = http($ng, POST => '/api/auth/login', %j,
                body => $json->encode({ username => "${user}_nobody",
                                        password => $pw }));
    is($res->{status}, 401, "unknown user, try $try: 401");
    is($res->{headers}{'x-cache'}, 'MISS',
       "unknown user, try $try: not cached as anything");
}

# a password reset drops the cached record with the old hash

my $mark = $ng->log_mark;
$res = http($ng, POST => '/api/auth/forgot-password', %j,
            body => $json->encode({ username => $user }));
is($res->{status}, 200, 'reset token issued');

my $token;
ok(wait_until(sub {
       ($token) = $ng->log($mark)
           =~ /password reset token for user \Q$user_id\E: ([0-9a-f]{64})/;
       defined $token }, $T, 'token in the log'),
   'the token was logged');

$res = http($ng, POST => '/api/auth/reset-password', %j,
            body => $json->encode({ token => $token, new_password => $new }));
is($res->{status}, 200, 'password reset');

$res = login($pw);
is($res->{status}, 401, 'the old password no longer works');
is($res->{headers}{'x-cache'}, 'MISS', 'the cached record was dropped');

$res = login($new);
is($res->{status}, 200, 'the new password works');
is($res->{headers}{'x-cache'}, 'HIT', 'and is cached again');

unlike($ng->log, qr/\[(alert|crit|emerg)\]/, 'no alert in the log');

stop_nginx($ng);

done_testing();
