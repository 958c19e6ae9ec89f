# Password reset: POST /api/auth/forgot-password issues a token (its
# SHA-256 stored in password_reset_tokens, the token itself written to
# error.log with defarm_password_reset_log on), POST
# /api/auth/reset-password spends it.  Standalone: the token travels from
# error.log into the next request, tokens are expired and aged with SQL
# between requests, and two resets with one token run at once.
#
#   a. forgot-password: validation; unknown accounts answer the same 200
#      and leave no row; by email, by username, both, the email of one
#      user with the username of another; trimmed values; the logged token
#      and its stored hash; the hourly limit (no row, still 200)
#   b. reset-password: validation and the order of the checks; a password
#      refused by the policy does not spend the token; success; the token
#      spent; the new password logs in, the old one does not; an expired
#      token
#   c. defarm_password_reset_limit 1, and the token not logged by default
#   d. two concurrent resets with one token: exactly one 200
#
# Usernames carry this process's pid: the database lives as long as the
# whole "make test" run.

use strict;
use warnings;
use Test::More;
use Digest::SHA qw(sha256_hex);
use JSON::PP ();
use DefarmTest;

my $T = valgrind() ? 60 : 10;       # seconds for each wait_until
my $json = JSON::PP->new->utf8->canonical;

# ------------------------------------------------------------ the secret


my $SERVER = <<'_EOC_';
        location / { defarm_api on; }
_EOC_


# ------------------------------------------------------------- helpers

my $P = "t042_$$";
my $Pw = 'Corr3ct-Horse!';
my $NewPw = 'N3w-Battery-Staple!';
my $seq = 0;

my $SENT = 'If the account exists, password reset instructions have been sent.';
my $DONE = 'Password reset successful. You can now log in with your new password.';
my $NEITHER = 'Provide email or username to reset your password';
my $REQUIRED = 'Password reset token is required';
my $MALFORMED = 'Invalid password reset token';
my $INVALID = 'Invalid or expired password reset token';

sub uname { my ($tag) = @_; return "${P}_${tag}_" . ++$seq }
sub email { my ($user) = @_; return "$user\@example.com" }

sub decoded {
    my ($res) = @_;
    my $data = eval { $json->decode($res->{body}) };
    return ref $data eq 'HASH' ? $data : {};
}

# register a new user; returns (username, user_id)
sub new_user {
    my ($ng, $tag) = @_;
    my $user = uname($tag);
    my $res = http($ng, POST => '/api/auth/register', timeout => $T,
                   body => $json->encode({ username => $user,
                                           email => email($user),
                                           password => $Pw }));
    is($res->{status}, 200, "register $user") or diag($res->{error} // $res->{body});
    return ($user, decoded($res)->{user_id} // 'user-none');
}

sub login {
    my ($ng, $user, $password) = @_;
    return http($ng, POST => '/api/auth/login', timeout => $T,
                body => $json->encode({ username => $user, password => $password }));
}

# forgot($ng, {email => ...}) or forgot($ng, 'raw body')
sub forgot {
    my ($ng, $body) = @_;
    return http($ng, POST => '/api/auth/forgot-password', timeout => $T,
                body => ref $body ? $json->encode($body) : $body);
}

sub forgot_bg {
    my ($ng, $body) = @_;
    return http_bg($ng, POST => '/api/auth/forgot-password', timeout => $T,
                   body => $json->encode($body));
}

# reset($ng, {token => ..., new_password => ...}) or reset($ng, 'raw body')
sub reset_pw {
    my ($ng, $body) = @_;
    return http($ng, POST => '/api/auth/reset-password', timeout => $T,
                body => ref $body ? $json->encode($body) : $body);
}

sub reset_bg {
    my ($ng, $token, $password) = @_;
    return http_bg($ng, POST => '/api/auth/reset-password', timeout => $T,
                   body => $json->encode({ token => $token,
                                           new_password => $password }));
}

# the JSON error: message a string, a qr// or undef for any
sub is_error {
    my ($res, $status, $kind, $tag, $msg) = @_;
    my $b = decoded($res);
    is($res->{status}, $status, "$tag: $status") or diag($res->{error} // $res->{body});
    is($b->{error_kind}, $kind, "$tag: error_kind $kind");
    if (ref $msg) {
        like($b->{error} // '', $msg, "$tag: error like $msg");
    } elsif (defined $msg) {
        is($b->{error}, $msg, "$tag: error \"$msg\"");
    }
    like($b->{trace_id} // '', qr/^[0-9a-f]{32}$/, "$tag: trace_id");
    is($b->{status}, $status, "$tag: status in the body");
    return $b;
}

sub is_400 {
    my ($res, $tag, $msg) = @_;
    return is_error($res, 400, 'validation_error', $tag, $msg);
}

# a 200 {"message": $msg}
sub is_message {
    my ($res, $msg, $tag) = @_;
    is($res->{status}, 200, "$tag: 200") or diag($res->{error} // $res->{body});
    like($res->{headers}{'content-type'} // '', qr{^application/json\b},
         "$tag: application/json");
    is_deeply(decoded($res), { message => $msg }, "$tag: {\"message\": \"$msg\"}")
        or diag($res->{body});
}

sub is_sent { my ($res, $tag) = @_; is_message($res, $SENT, $tag) }

sub rows      { my ($uid) = @_; sql("SELECT count(*) FROM password_reset_tokens WHERE user_id = '$uid'") }
sub all_rows  { sql("SELECT count(*) FROM password_reset_tokens") }

# the tokens logged since $mark: ([user_id, token], ...)
sub logged {
    my ($ng, $mark) = @_;
    my $log = $ng->log($mark);
    my @found;
    while ($log =~ /defarm: password reset token for user (\S+): ([0-9a-fA-F]+)/g) {
        push @found, [$1, $2];
    }
    return @found;
}

# the token logged for $uid since $mark (waits a little for it)
sub logged_token {
    my ($ng, $mark, $uid, $tag) = @_;
    my $re = qr/\[notice\] [^\n]*defarm: password reset token for user \Q$uid\E: ([0-9a-fA-F]{64})(?![0-9A-Za-z])/;
    my $found = wait_until(sub { $ng->log($mark) =~ $re }, $T, "$tag: the token in error.log");
    ok($found, "$tag: the token is logged at notice level, 64 hex characters")
        or diag($ng->log($mark));
    return $found && $ng->log($mark) =~ $re ? $1 : undef;
}

sub hash_of { my ($token) = @_; return sha256_hex(pack 'H*', $token) }

# forgot-password for $user by email; returns the token logged
sub token_for {
    my ($ng, $user, $uid, $tag) = @_;
    my $mark = $ng->log_mark;
    is_sent(forgot($ng, { email => email($user) }), "$tag: forgot-password");
    return logged_token($ng, $mark, $uid, $tag) // ('0' x 64);
}

sub random_hex { join '', map { sprintf '%02x', int rand 256 } 1 .. $_[0] }


# a. forgot-password

my $ng = start_nginx(name => 'pwreset', server => $SERVER,
                     http => auth_config(log => 'on'));

{
    my $tag = 'forgot: neither';
    for my $case (['{}', 'an empty object'],
                  ['{"email":""}', 'an empty email'],
                  ['{"username":""}', 'an empty username'],
                  ['{"email":"","username":""}', 'both empty'],
                  ['{"email":"   ","username":"  "}', 'both only spaces'],
                  ['{"workspace_name":"x"}', 'other fields only'])
    {
        my ($body, $what) = @$case;
        is_400(forgot($ng, $body), "$tag: $what", $NEITHER);
    }

    $tag = 'forgot: wrong types';
    my ($user, $uid) = new_user($ng, 'types');
    for my $case (['{"email":42}', 'a number email'],
                  ['{"username":["x"]}', 'an array username'],
                  ['{"email":{"a":"b"}}', 'an object email'],
                  ['{"username":true}', 'a boolean username'],
                  ['{"email":42,"username":"' . $user . '"}',
                   'a number email beside an existing username'],
                  ['{"email":"' . email($user) . '","username":17}',
                   'an existing email beside a number username'],
                  ['[]', 'an array body'],
                  ['"text"', 'a string body'],
                  ['{"email":', 'broken JSON'],
                  ['', 'no body'])
    {
        my ($body, $what) = @$case;
        is_400(forgot($ng, $body), "$tag: $what");
    }
    is(rows($uid), 0, "$tag: no token for the user named beside a wrong type");
}

{
    my $tag = 'forgot: unknown';
    my $before = all_rows();
    my $mark = $ng->log_mark;
    my $nobody = uname('nobody');
    is_sent(forgot($ng, { email => email($nobody) }), "$tag: an unknown email");
    is_sent(forgot($ng, { username => $nobody }), "$tag: an unknown username");
    is_sent(forgot($ng, { email => email($nobody), username => $nobody }),
            "$tag: both unknown");
    is_sent(forgot($ng, { email => 'not-an-email' }), "$tag: not an email address");
    is(all_rows(), $before, "$tag: no row");
    is_deeply([logged($ng, $mark)], [], "$tag: no token logged");
}

{
    my $tag = 'forgot: by email';
    my ($user, $uid) = new_user($ng, 'mail');
    my $mark = $ng->log_mark;
    my $t0 = time;
    is_sent(forgot($ng, { email => email($user) }), $tag);
    is(rows($uid), 1, "$tag: one row for the user");
    my $token = logged_token($ng, $mark, $uid, $tag);
    my @all = logged($ng, $mark);
    is(scalar @all, 1, "$tag: one token logged");

    my ($hash, $life, $age, $used) = split /\|/, sql(
        "SELECT token_hash, extract(epoch FROM expires_at - created_at)::int,"
      . " extract(epoch FROM now() - created_at)::int, used_at IS NULL"
      . " FROM password_reset_tokens WHERE user_id = '$uid'"), -1;
    SKIP: {
        skip "$tag: no token logged", 3 unless defined $token;
        is(lc($hash // ''), hash_of($token),
           "$tag: token_hash is the SHA-256 of the logged token's bytes");
        isnt(lc($hash // ''), lc $token, "$tag: the stored hash is not the token");
        is(sql("SELECT count(*) FROM password_reset_tokens WHERE token_hash = '"
                . lc($token) . "' OR token_hash = '" . uc($token) . "'"), 0,
           "$tag: the token itself is stored nowhere in the table");
    }
    ok(defined $life && $life >= 1795 && $life <= 1805,
       "$tag: expires 30 minutes after it was created") or diag("life: " . ($life // 'none'));
    ok(defined $age && $age >= -2 && $age <= time - $t0 + 5,
       "$tag: created now") or diag("age: " . ($age // 'none'));
    is($used, 't', "$tag: not used yet");
}

{
    my $tag = 'forgot: by username';
    my ($user, $uid) = new_user($ng, 'name');
    my $mark = $ng->log_mark;
    is_sent(forgot($ng, { username => $user }), $tag);
    is(rows($uid), 1, "$tag: one row for the user");
    my $token = logged_token($ng, $mark, $uid, $tag);
    is(sql("SELECT lower(token_hash) FROM password_reset_tokens WHERE user_id = '$uid'"),
       hash_of($token // ''), "$tag: token_hash matches the logged token");
}

{
    my $tag = 'forgot: email and username of one user';
    my ($user, $uid) = new_user($ng, 'both');
    my $mark = $ng->log_mark;
    is_sent(forgot($ng, { email => email($user), username => $user }), $tag);
    is(rows($uid), 1, "$tag: one row");
    is(scalar(grep { $_->[0] eq $uid } logged($ng, $mark)), 1, "$tag: one token logged");
}

{
    my $tag = 'forgot: the email of one user, the username of another';
    my ($user_a, $uid_a) = new_user($ng, 'mixed-a');
    my ($user_b, $uid_b) = new_user($ng, 'mixed-b');
    my $mark = $ng->log_mark;
    is_sent(forgot($ng, { email => email($user_a), username => $user_b }), $tag);
    is(rows($uid_a), 1, "$tag: a row for the email's user");
    ok(defined logged_token($ng, $mark, $uid_a, $tag), "$tag: the email's user's token logged");
}

{
    my $tag = 'forgot: trimmed';
    my ($user, $uid) = new_user($ng, 'trim');
    my $mark = $ng->log_mark;
    is_sent(forgot($ng, { email => '  ' . email($user) . '  ' }), "$tag: email");
    is(rows($uid), 1, "$tag: email: a row");
    is_sent(forgot($ng, { username => "  $user  " }), "$tag: username");
    is(rows($uid), 2, "$tag: username: a second row");
    is_sent(forgot($ng, { email => '   ', username => " $user " }),
            "$tag: a blank email beside a username");
    is(rows($uid), 3, "$tag: a blank email counts as absent: a third row");
    is(scalar(grep { $_->[0] eq $uid } logged($ng, $mark)), 3, "$tag: three tokens logged");
}

{
    my $tag = 'forgot: the hourly limit';
    my ($user, $uid) = new_user($ng, 'limit');
    my $mark = $ng->log_mark;
    for my $n (1 .. 3) {
        is_sent(forgot($ng, $n == 2 ? { username => $user } : { email => email($user) }),
                "$tag: request $n");
        is(rows($uid), $n, "$tag: request $n: row $n");
    }
    is(scalar(grep { $_->[0] eq $uid } logged($ng, $mark)), 3, "$tag: three tokens logged");

    my $res = forgot($ng, { email => email($user) });
    is_sent($res, "$tag: request 4, over the limit, answers the same 200");
    $res = forgot($ng, { username => $user });
    is_sent($res, "$tag: request 5, by username, too");
    is(rows($uid), 3, "$tag: requests 4 and 5 created no row");
    is(scalar(grep { $_->[0] eq $uid } logged($ng, $mark)), 3, "$tag: ... and logged no token");

    # the limit is per user
    my ($other, $other_uid) = new_user($ng, 'limit-other');
    is_sent(forgot($ng, { email => email($other) }), "$tag: another user");
    is(rows($other_uid), 1, "$tag: another user still gets a row");

    # tokens older than an hour no longer count
    sql("UPDATE password_reset_tokens SET created_at = created_at - interval '61 minutes',"
         . " expires_at = expires_at - interval '61 minutes' WHERE user_id = '$uid'");
    $mark = $ng->log_mark;
    is_sent(forgot($ng, { email => email($user) }), "$tag: an hour later");
    is(rows($uid), 4, "$tag: an hour later: a new row");
    ok(defined logged_token($ng, $mark, $uid, "$tag: an hour later"),
       "$tag: an hour later: a token logged");
}


# b. reset-password

{
    my $tag = 'reset: validation';
    my $fake = random_hex(32);
    for my $case (['{}', 'an empty object', $REQUIRED],
                  [{ new_password => $NewPw }, 'no token', $REQUIRED],
                  [{ token => '', new_password => $NewPw }, 'an empty token', $REQUIRED],
                  [{ new_password => 'weak' }, 'no token and a weak password', $REQUIRED],
                  [{ token => 'abc', new_password => 'weak' },
                   'a malformed token and a weak password', qr/^Password must/],
                  [{ token => 'a' x 63, new_password => $NewPw }, '63 hex characters', $MALFORMED],
                  [{ token => 'a' x 65, new_password => $NewPw }, '65 hex characters', $MALFORMED],
                  [{ token => ('a' x 63) . 'g', new_password => $NewPw }, 'a "g" in 64', $MALFORMED],
                  [{ token => ('a' x 62) . ' a', new_password => $NewPw }, 'a space in 64', $MALFORMED],
                  [{ token => 'x', new_password => $NewPw }, 'one character', $MALFORMED],
                  [{ token => $fake, new_password => $NewPw }, 'an unknown token', $INVALID],
                  ['{"token":42,"new_password":"' . $NewPw . '"}', 'a number token', undef],
                  ['{"token":["' . $fake . '"],"new_password":"' . $NewPw . '"}', 'an array token', undef],
                  ['{"token":"' . $fake . '","new_password":12345678}', 'a number password', undef],
                  ['{"token":"' . $fake . '"}', 'no new_password', undef],
                  ['[]', 'an array body', undef],
                  ['', 'no body', undef])
    {
        my ($body, $what, $msg) = @$case;
        is_400(reset_pw($ng, $body), "$tag: $what", $msg);
    }

    $tag = 'reset: the password policy';
    for my $bad ('Sh0rt!a', 'nouppercase1!', 'NOLOWERCASE1!', 'NoDigitsHere!',
                 'NoSpecials123', '', '   ', '  Ab1!xyz  ', 'A1!' . ('a' x 70))
    {
        is_400(reset_pw($ng, { token => $fake, new_password => $bad }),
               "$tag: \"$bad\"", qr/^Password must/);
    }
}

{
    my $tag = 'reset';
    my ($user, $uid) = new_user($ng, 'reset');
    my $token = token_for($ng, $user, $uid, $tag);
    my $hash = hash_of($token);
    my $old_hash = sql("SELECT password_hash FROM users WHERE id = '$uid'");

    # trimmed, "  Ab1!xyz  " is 7 bytes: the policy refuses it, and the
    # token is not spent
    is_400(reset_pw($ng, { token => $token, new_password => '  Ab1!xyz  ' }),
           "$tag: a password too short once trimmed", qr/^Password must/);
    is(sql("SELECT used_at IS NULL FROM password_reset_tokens WHERE lower(token_hash) = '$hash'"),
       't', "$tag: the refused password did not spend the token");
    is(sql("SELECT password_hash FROM users WHERE id = '$uid'"), $old_hash,
       "$tag: ... nor change the password");
    is(login($ng, $user, $Pw)->{status}, 200, "$tag: the old password still logs in");

    # the hash is not a token
    is_400(reset_pw($ng, { token => $hash, new_password => $NewPw }),
           "$tag: the stored hash given as the token", $INVALID);

    # the reset itself, with spaces around the new password
    my $res = reset_pw($ng, { token => $token, new_password => "  $NewPw  " });
    is_message($res, $DONE, "$tag: success");
    is(sql("SELECT used_at IS NOT NULL FROM password_reset_tokens WHERE lower(token_hash) = '$hash'"),
       't', "$tag: used_at is set");
    like(sql("SELECT password_hash FROM users WHERE id = '$uid'"), qr/^\$2b\$04\$/,
         "$tag: a new bcrypt hash at the configured cost");
    is(login($ng, $user, $NewPw)->{status}, 200, "$tag: the new (trimmed) password logs in");
    is_error(login($ng, $user, $Pw), 401, 'auth_error', "$tag: the old password",
             'Invalid credentials');

    is_400(reset_pw($ng, { token => $token, new_password => 'An0ther-Passw0rd!' }),
           "$tag: the same token again", $INVALID);
    is(login($ng, $user, $NewPw)->{status}, 200, "$tag: the reused token changed nothing");
    is(login($ng, $user, 'An0ther-Passw0rd!')->{status}, 401,
       "$tag: ... the password it offered does not log in");

    $tag = 'reset: expired';
    my $expiring = token_for($ng, $user, $uid, $tag);
    my $exp_hash = hash_of($expiring);
    isnt($exp_hash, $hash, "$tag: a new token");
    sql("UPDATE password_reset_tokens SET expires_at = now() - interval '1 minute'"
         . " WHERE lower(token_hash) = '$exp_hash'");
    is_400(reset_pw($ng, { token => $expiring, new_password => 'Expir3d-Passw0rd!' }),
           "$tag: an expired token", $INVALID);
    is(login($ng, $user, $NewPw)->{status}, 200, "$tag: the password is unchanged");
    is(login($ng, $user, 'Expir3d-Passw0rd!')->{status}, 401,
       "$tag: ... the one offered does not log in");

    $tag = 'reset: an unexpired token of the same user still works';
    my $fresh = token_for($ng, $user, $uid, $tag);
    is_message(reset_pw($ng, { token => $fresh, new_password => $Pw }), $DONE, $tag);
    is(login($ng, $user, $Pw)->{status}, 200, "$tag: the password set by it logs in");
}

unlike($ng->log, qr/\[(alert|crit|emerg)\]/, "pwreset: no alert in error.log");
stop_nginx($ng);


# c. defarm_password_reset_limit 1; defarm_password_reset_log off by default

{
    my $tag = 'limit 1';
    my $ng = start_nginx(name => 'pwreset-limit1', server => $SERVER,
                         http => auth_config(limit => 1));
    my ($user, $uid) = new_user($ng, 'limit1');
    my $mark = $ng->log_mark;

    is_sent(forgot($ng, { email => email($user) }), "$tag: the first request");
    is(rows($uid), 1, "$tag: the first request: a row");
    is_sent(forgot($ng, { email => email($user) }), "$tag: the second request");
    is_sent(forgot($ng, { username => $user }), "$tag: the third request, by username");
    is(rows($uid), 1, "$tag: the second and third created no row");

    my ($other, $other_uid) = new_user($ng, 'limit1-other');
    is_sent(forgot($ng, { username => $other }), "$tag: another user");
    is(rows($other_uid), 1, "$tag: another user gets a row");

    unlike($ng->log($mark), qr/password reset token for user/,
           "$tag: defarm_password_reset_log is off by default: no token logged");
    unlike($ng->log, qr/\[(alert|crit|emerg)\]/, "$tag: no alert in error.log");
    stop_nginx($ng);
}


# d. two resets with one token at once: exactly one wins.  bcrypt cost 10
# (~50 ms a hash) in the default pool: both requests hash at the same
# time, so any check made before hashing passes for both.

{
    my $tag = 'race';
    my $ng = start_nginx(name => 'pwreset-race', server => $SERVER,
                         http => auth_config(cost => 10, log => 'on'));

    for my $round (1 .. 3) {
        my ($user, $uid) = new_user($ng, 'race');
        my $token = token_for($ng, $user, $uid, "$tag $round");
        my @pw = ("Rac3-One-$round!", "Rac3-Two-$round!");
        my @res = map { http_wait($_) } map { reset_bg($ng, $token, $_) } @pw;
        my @status = map { $_->{status} // 'none' } @res;
        is(join(' ', sort @status), '200 400',
           "$tag $round: one token twice at once: one 200, one 400")
            or diag(join "\n", map { $_->{error} // $_->{body} } @res);

        my ($won) = grep { ($res[$_]{status} // 0) == 200 } 0 .. 1;
        my ($lost) = grep { ($res[$_]{status} // 0) == 400 } 0 .. 1;
        if (defined $won && defined $lost) {
            is_message($res[$won], $DONE, "$tag $round: the winner");
            is_400($res[$lost], "$tag $round: the loser", $INVALID);
            is(login($ng, $user, $pw[$won])->{status}, 200,
               "$tag $round: the winner's password logs in");
            is(login($ng, $user, $pw[$lost])->{status}, 401,
               "$tag $round: the loser's does not");
        }
        is(login($ng, $user, $Pw)->{status}, 401, "$tag $round: the old one does not");
        is(sql("SELECT count(*) FROM password_reset_tokens WHERE user_id = '$uid'"
                . " AND used_at IS NOT NULL"), 1, "$tag $round: the token is spent");
    }

    # forgot-password at once for one user: the limit still holds (3)
    my ($user, $uid) = new_user($ng, 'race-forgot');
    my @res = map { http_wait($_) } map { forgot_bg($ng, { email => email($user) }) } 1 .. 6;
    is(join(' ', map { $_->{status} // 'none' } @res), join(' ', (200) x 6),
       "$tag: six forgot-password requests at once all answer 200");
    ok(rows($uid) <= 3, "$tag: ... and create at most three rows")
        or diag("rows: " . rows($uid));

    unlike($ng->log, qr/\[(alert|crit|emerg)\]/, "$tag: no alert in error.log");
    stop_nginx($ng);
}


done_testing();
