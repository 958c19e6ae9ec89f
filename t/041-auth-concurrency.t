# Auth with the tokens the module issues itself, and auth under
# concurrency.  Standalone: these cases carry a token from one response
# into the next request, change the database between requests, or keep
# several requests in flight at once.
#
#   a. register -> profile -> login -> refresh, with the tokens answered;
#      last_login; quotes in a username; privileged fields ignored
#   b. the answered token, changed and re-signed: refused
#   c. a user suspended, banned, re-activated, then deleted after the
#      token was issued
#   d. two concurrent registrations of one username (or one email):
#      exactly one 200 and one 409
#   e. bcrypt runs off the event loop: the worker answers while it hashes
#   f. a full crypt queue: 503 crypt_busy with Retry-After, next to 200s
#
# DefarmTest writes the main context itself, so a-e have no thread_pool
# directive: bcrypt runs in nginx's implicit "default" pool (the module's
# default defarm_crypt_pool).  f needs a small pool, a main-level
# directive: it edits the generated nginx.conf and reloads (HUP).
#
# Usernames carry this process's pid: the database lives as long as the
# whole "make test" run.

use strict;
use warnings;
use Test::More;
use Digest::SHA qw(hmac_sha256 hmac_sha512);
use MIME::Base64 qw(encode_base64url decode_base64url);
use JSON::PP ();
use POSIX ();
use Time::HiRes ();
use DefarmTest;

my $T = valgrind() ? 60 : 10;       # seconds for each wait_until
my $json = JSON::PP->new->utf8->canonical;

# ------------------------------------------------------------ the secret

my ($Secret) = jwt_secret();

my $SERVER = <<'_EOC_';
        location / { defarm_api on; }
_EOC_


# ------------------------------------------------------------- helpers

my $P = "t041_$$";
my $Pw = 'Corr3ct-Horse!';
my $seq = 0;

sub slurp {
    my ($file) = @_;
    open my $fh, '<', $file or die "$file: $!\n";
    local $/;
    return scalar <$fh>;
}

sub uname { my ($tag) = @_; return "${P}_${tag}_" . ++$seq }

sub decoded {
    my ($res) = @_;
    my $data = eval { $json->decode($res->{body}) };
    return ref $data eq 'HASH' ? $data : {};
}

sub register {
    my ($ng, $user, %f) = @_;
    return http($ng, POST => '/api/auth/register', timeout => $T,
                body => $json->encode({ username => $user,
                                        email => "$user\@example.com",
                                        password => $Pw, %f }));
}

sub register_bg {
    my ($ng, $user, $email) = @_;
    return http_bg($ng, POST => '/api/auth/register', timeout => $T,
                   body => $json->encode({ username => $user,
                                           email => $email // "$user\@example.com",
                                           password => $Pw }));
}

sub login {
    my ($ng, $user, $password) = @_;
    return http($ng, POST => '/api/auth/login', timeout => $T,
                body => $json->encode({ username => $user,
                                        password => $password // $Pw }));
}

sub with_token {
    my ($ng, $method, $path, $token) = @_;
    return http($ng, $method => $path, timeout => $T,
                headers => { Authorization => "Bearer $token" });
}

sub jwt_parts {
    my ($token) = @_;
    my ($h, $p, $s) = split /\./, $token // '', 3;
    my $header = eval { $json->decode(decode_base64url($h // '')) } || {};
    my $claims = eval { $json->decode(decode_base64url($p // '')) } || {};
    return ($header, $claims);
}

sub sign {
    my ($header, $claims, $secret, $alg) = @_;
    my $input = encode_base64url($json->encode($header)) . '.'
              . encode_base64url($json->encode($claims));
    my $sig = ($alg // 'HS256') eq 'HS512' ? hmac_sha512($input, $secret // $Secret)
            : ($alg // 'HS256') eq 'none'  ? ''
            :                                hmac_sha256($input, $secret // $Secret);
    return "$input." . encode_base64url($sig);
}

sub is_auth_ok {
    my ($res, $tag, %want) = @_;
    my $b = decoded($res);
    is($res->{status}, 200, "$tag: 200") or diag($res->{error} // $res->{body});
    like($b->{token} // '', qr/^[\w-]+\.[\w-]+\.[\w-]+$/, "$tag: a token");
    like($b->{user_id} // '', qr/^user-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/,
         "$tag: user_id is user-<uuid>");
    is($b->{user_id}, $want{user_id}, "$tag: the same user_id") if $want{user_id};
    is($b->{workspace_id}, $want{workspace_id}, "$tag: workspace_id")
        if exists $want{workspace_id};
    my $now = time;
    ok(($b->{expires_at} // 0) >= $now + 86400 - 5 && ($b->{expires_at} // 0) <= $now + 86400 + 5,
       "$tag: expires_at is now + 24h") or diag("expires_at $b->{expires_at}, now $now");
    my ($header, $claims) = jwt_parts($b->{token});
    is($header->{alg}, 'HS256', "$tag: the token is HS256");
    is($claims->{exp}, $b->{expires_at}, "$tag: the token's exp is expires_at");
    return $b;
}

sub is_error {
    my ($res, $status, $kind, $tag, $msg) = @_;
    my $b = decoded($res);
    is($res->{status}, $status, "$tag: $status") or diag($res->{error} // $res->{body});
    is($b->{error_kind}, $kind, "$tag: error_kind $kind");
    is($b->{error}, $msg, "$tag: error \"$msg\"") if defined $msg;
    like($b->{trace_id} // '', qr/^[0-9a-f]{32}$/, "$tag: trace_id");
    is($b->{status}, $status, "$tag: status in the body");
    return $b;
}

sub is_401 {
    my ($res, $tag) = @_;
    is_error($res, 401, 'auth_error', $tag);
    like($res->{headers}{'www-authenticate'} // '', qr/^Bearer\b/,
         "$tag: WWW-Authenticate: Bearer");
}

# a. the flow with the tokens the module answers
{
    my $tag = 'flow';
    my $ng = start_nginx(name => 'auth-flow', server => $SERVER,
                         http => auth_config());

    my $user = uname('flow');
    my $t0 = time;
    my $reg = is_auth_ok(register($ng, $user), "$tag: register",
                         workspace_id => "$user-workspace");
    my $uid = $reg->{user_id};
    my (undef, $claims) = jwt_parts($reg->{token});
    is($claims->{user_id}, $uid, "$tag: the token names the user");

    my $res = with_token($ng, GET => '/api/auth/profile', $reg->{token});
    is($res->{status}, 200, "$tag: profile with the register token")
        or diag($res->{body});
    my $prof = decoded($res);
    is($prof->{user_id}, $uid, "$tag: profile user_id");
    is($prof->{username}, $user, "$tag: profile username");
    is($prof->{email}, "$user\@example.com", "$tag: profile email");
    is($prof->{workspace_id}, "$user-workspace", "$tag: profile workspace_id");
    ok(($prof->{created_at} // 0) >= $t0 - 2 && ($prof->{created_at} // 0) <= time + 2,
       "$tag: profile created_at is the registration time")
        or diag("created_at " . ($prof->{created_at} // 'none') . ", t0 $t0");

    # whether register sets it is not said: start from none
    sql("UPDATE users SET last_login = NULL WHERE id = '$uid'");

    my $log = is_auth_ok(login($ng, $user), "$tag: login",
                         user_id => $uid, workspace_id => "$user-workspace");
    ok(wait_until(sub { sql("SELECT last_login IS NOT NULL FROM users WHERE id = '$uid'") eq 't' },
                  $T, 'last_login'),
       "$tag: login set last_login");
    my $ll = sql("SELECT extract(epoch FROM last_login)::bigint FROM users WHERE id = '$uid'");
    ok($ll >= $t0 - 2 && $ll <= time + 2, "$tag: last_login is the login time")
        or diag("last_login $ll, t0 $t0");

    $res = with_token($ng, GET => '/api/auth/profile', $log->{token});
    is($res->{status}, 200, "$tag: profile with the login token");
    is(decoded($res)->{user_id}, $uid, "$tag: ... for the same user");

    # refresh: no body, no Content-Type
    my $ref = is_auth_ok(with_token($ng, POST => '/api/auth/refresh', $log->{token}),
                         "$tag: refresh", user_id => $uid,
                         workspace_id => "$user-workspace");
    ok($ref->{expires_at} >= $log->{expires_at}, "$tag: refresh expires no earlier");

    $res = with_token($ng, GET => '/api/auth/profile', $ref->{token});
    is($res->{status}, 200, "$tag: profile with the refreshed token");
    is(decoded($res)->{username}, $user, "$tag: ... for the same user");

    $res = with_token($ng, POST => '/api/auth/refresh', $ref->{token});
    is($res->{status}, 200, "$tag: a refreshed token refreshes again");

    like($res->{headers}{'x-request-id'} // '', qr/^[0-9a-f]{32}$/,
         "$tag: X-Request-Id");


# b. the answered token, changed and re-signed: refused

    $tag = 'changed';

    my ($h, $c) = jwt_parts($reg->{token});
    my %c = %$c;

    my @bad = (
        [ 'expired an hour ago', sign($h, { %c, exp => time - 3600 }) ],
        [ 'expired beyond the leeway', sign($h, { %c, exp => time - 120 }) ],
        [ 'no exp', sign($h, { map { $_ => $c{$_} } grep { $_ ne 'exp' } keys %c }) ],
        [ 'another secret', sign($h, \%c, 'x' x 48) ],
        [ 'alg none', sign({ %$h, alg => 'none' }, \%c, undef, 'none') ],
        [ 'HS512 with the right secret', sign({ %$h, alg => 'HS512' }, \%c, undef, 'HS512') ],
        [ 'another user_id, the old signature',
          join '.', (split /\./, $reg->{token})[0],
                    encode_base64url($json->encode({ %c, user_id => 'user-00000000-0000-4000-8000-000000000000' })),
                    (split /\./, $reg->{token})[2] ],
        [ 'a signature cut short', substr($reg->{token}, 0, -4) ],
    );

    for my $case (@bad) {
        my ($what, $token) = @$case;
        is_401(with_token($ng, GET => '/api/auth/profile', $token), "$tag: profile, $what");
        is_401(with_token($ng, POST => '/api/auth/refresh', $token), "$tag: refresh, $what");
    }

    # control: re-signing the same claims here gives a token that works
    my $res2 = with_token($ng, GET => '/api/auth/profile', sign($h, \%c));
    is($res2->{status}, 200, "$tag: the same claims re-signed with the secret are accepted");


# a2. quotes and backslashes in a username are data; privileged fields in
# a registration body are not honoured

    $tag = 'odd names';
    my $odd = uname('odd') . q{'"\\};
    my $r = register($ng, $odd, email => uname('odd-mail') . '@example.com',
                     workspace_name => q{w'"\\});
    is($r->{status}, 200, "$tag: a username with quotes and a backslash registers")
        or diag($r->{body});
    is(decoded($r)->{workspace_id}, q{w'"\\-workspace}, "$tag: workspace_id");
    $r = login($ng, $odd);
    is($r->{status}, 200, "$tag: ... and logs in");
    $r = with_token($ng, GET => '/api/auth/profile', decoded($r)->{token} // 'none');
    is(decoded($r)->{username}, $odd, "$tag: profile answers it unchanged");
    (my $sql_odd = $odd) =~ s/'/''/g;
    is(sql("SELECT count(*) FROM users WHERE username = '$sql_odd'"), 1,
       "$tag: stored unchanged");

    $tag = 'privileges';
    my $sneaky = uname('sneaky');
    $r = register($ng, $sneaky, is_admin => JSON::PP::true, tier => 'Admin',
                  credits => 1000000, status => 'Active',
                  user_id => 'user-00000000-0000-4000-8000-00000000beef');
    like($r->{status} // '', qr/^(200|400)$/, "$tag: extra fields: 200 or 400");
    if (($r->{status} // 0) == 200) {
        is(sql("SELECT tier || ' ' || (SELECT credits FROM credit_balances b WHERE b.user_id = users.id) || ' ' || is_admin || ' ' || (id = 'user-00000000-0000-4000-8000-00000000beef')"
                . " FROM users WHERE username = '$sneaky'"),
           'Basic 100 false false', "$tag: Basic, 100 credits, not admin, id chosen by the server");
    }

    unlike($ng->log, qr/\[(alert|crit|emerg)\]/, "flow: no alert in error.log");
    stop_nginx($ng);
}


# c. account status changes after the token was issued

{
    my $tag = 'status';
    my $ng = start_nginx(name => 'auth-status', server => $SERVER,
                         http => auth_config());

    my $user = uname('status');
    my $reg = decoded(register($ng, $user));
    my $uid = $reg->{user_id} // 'none';
    my $token = $reg->{token} // 'none';
    is(with_token($ng, GET => '/api/auth/profile', $token)->{status}, 200,
       "$tag: the token works while the user is Active");

    sql("UPDATE users SET status = 'Suspended' WHERE id = '$uid'");
    is_error(with_token($ng, GET => '/api/auth/profile', $token), 403, 'auth_error',
             "$tag: profile of a suspended user");
    is_error(with_token($ng, POST => '/api/auth/refresh', $token), 403, 'auth_error',
             "$tag: refresh of a suspended user");
    is_error(login($ng, $user), 403, 'auth_error', "$tag: login of a suspended user",
             'Your account has been suspended. Please contact an administrator.');

    sql("UPDATE users SET status = 'Banned' WHERE id = '$uid'");
    is_error(with_token($ng, GET => '/api/auth/profile', $token), 403, 'auth_error',
             "$tag: profile of a banned user");
    is_error(login($ng, $user), 403, 'auth_error', "$tag: login of a banned user",
             'Your account has been banned.');

    sql("UPDATE users SET status = 'Active' WHERE id = '$uid'");
    is(with_token($ng, GET => '/api/auth/profile', $token)->{status}, 200,
       "$tag: the same token works again once the user is Active");
    is(login($ng, $user)->{status}, 200, "$tag: so does login");

    sql("DELETE FROM users WHERE id = '$uid'");
    is_error(with_token($ng, GET => '/api/auth/profile', $token), 404, 'not_found',
             "$tag: profile of a deleted user", 'User not found');
    is_error(with_token($ng, POST => '/api/auth/refresh', $token), 404, 'not_found',
             "$tag: refresh of a deleted user", 'User not found');
    is_error(login($ng, $user), 401, 'auth_error', "$tag: login of a deleted user",
             'Invalid credentials');

    stop_nginx($ng);
}


# d. concurrent registrations of one username, then of one email
#
# cost 10 (~50 ms a hash) in the default pool (32 threads): both requests
# hash at the same time, pass any look-up made before hashing, and race
# for the INSERT; the database's unique constraints decide.

{
    my $tag = 'race';
    my $ng = start_nginx(name => 'auth-race', server => $SERVER,
                         http => auth_config(cost => 10));

    for my $round (1 .. 3) {
        my $user = uname('race');
        my @bg = (register_bg($ng, $user, "$user-a\@example.com"),
                  register_bg($ng, $user, "$user-b\@example.com"));
        my @res = map { http_wait($_) } @bg;
        my @status = sort map { $_->{status} // 'none' } @res;
        is("@status", '200 409', "$tag $round: one username twice at once: one 200, one 409")
            or diag(join "\n", map { $_->{error} // $_->{body} } @res);
        my ($lost) = grep { ($_->{status} // 0) == 409 } @res;
        if ($lost) {
            my $b = decoded($lost);
            is($b->{error}, 'Username already exists', "$tag $round: the 409 says why");
            is($b->{error_kind}, 'conflict', "$tag $round: error_kind conflict");
        }
        is(sql("SELECT count(*) FROM users WHERE username = '$user'"), 1,
           "$tag $round: one row");
    }

    for my $round (1 .. 3) {
        my $email = uname('race-mail') . '@example.com';
        my @bg = (register_bg($ng, uname('race-mail-a'), $email),
                  register_bg($ng, uname('race-mail-b'), $email));
        my @res = map { http_wait($_) } @bg;
        my @status = sort map { $_->{status} // 'none' } @res;
        is("@status", '200 409', "$tag $round: one email twice at once: one 200, one 409")
            or diag(join "\n", map { $_->{error} // $_->{body} } @res);
        my ($lost) = grep { ($_->{status} // 0) == 409 } @res;
        is(decoded($lost)->{error}, 'Email already exists', "$tag $round: the 409 says why")
            if $lost;
        is(sql("SELECT count(*) FROM users WHERE email = '$email'"), 1,
           "$tag $round: one row");
    }

    # many logins at once all succeed
    my $user = uname('many');
    is(register($ng, $user)->{status}, 200, "$tag: a user for the logins");
    my @bg = map {
        http_bg($ng, POST => '/api/auth/login', timeout => $T,
                body => $json->encode({ username => $user, password => $Pw }))
    } 1 .. 8;
    my @status = map { http_wait($_)->{status} // 'none' } @bg;
    is("@status", join(' ', (200) x 8), "$tag: eight logins at once all answer 200");

    unlike($ng->log, qr/\[(alert|crit|emerg)\]/, "$tag: no alert in error.log");
    stop_nginx($ng);
}


# e. bcrypt runs in the thread pool, not in the worker: while a slow hash
# (cost 15, over a second) is computed, the worker answers /health.

{
    my $tag = 'off the event loop';
    my $cost = valgrind() ? 12 : 15;
    my $ng = start_nginx(name => 'auth-slow', server => $SERVER,
                         http => auth_config(cost => $cost));

    my $user = uname('slow');
    my $bg = http_bg($ng, POST => '/api/auth/register', timeout => 120,
                     body => $json->encode({ username => $user,
                                             email => "$user\@example.com",
                                             password => $Pw }));
    Time::HiRes::sleep(0.3);        # let the registration reach the pool

    my $health = http($ng, GET => '/health');
    my $done = waitpid($bg->{pid}, POSIX::WNOHANG());
    is($health->{status}, 200, "$tag: /health answers");
    is($done, 0, "$tag: ... while the registration is still hashing");

    my $res = http_wait($bg);
    is($res->{status}, 200, "$tag: the registration then completes")
        or diag($res->{error} // $res->{body});
    like(sql("SELECT password_hash FROM users WHERE username = '$user'"),
         qr/^\$2b\$$cost\$/, "$tag: with cost $cost");

    stop_nginx($ng);
}


# f. a full crypt queue.  nginx counts idle threads against max_queue:
# with "threads=1 max_queue=0" a task is accepted only while the one
# thread is idle, so of requests that all need a hash at the same moment
# one is served and the others are refused at once with 503 crypt_busy.

{
    my $tag = 'queue full';
    my $cost = valgrind() ? 10 : 14;        # a hash of ~1 s holds the thread
    my $ng = start_nginx(name => 'auth-queue', master => 1, server => $SERVER,
                         http => auth_config(cost => $cost));

    # a registered user to log in with, before the pool shrinks
    my $user = uname('busy');
    is(register($ng, $user)->{status}, 200, "$tag: a user to log in with");

    # the pool: thread_pool at the top level, defarm_crypt_pool in http{}
    my $conf = "$ng->{root}/conf/nginx.conf";
    my $text = slurp($conf);
    my $ok = $text =~ s/^(events \{)/thread_pool defarm_busy threads=1 max_queue=0;\n\n$1/m
          && $text =~ s/^(\s*)(defarm_bcrypt_cost )/$1defarm_crypt_pool defarm_busy;\n$1$2/m;
    ok($ok, "$tag: nginx.conf edited") or diag($text);
    open my $fh, '>', $conf or die "$conf: $!\n";
    print $fh $text;
    close $fh or die "$conf: $!\n";

    my $mark = $ng->log_mark;
    kill 'HUP', $ng->{pid};
    ok(wait_until(sub { $ng->log($mark) =~ /gracefully shutting down/
                        && $ng->log($mark) =~ /start worker process/ },
                  $T, 'reload'),
       "$tag: nginx reloaded with the small pool");
    unlike($ng->log($mark), qr/\[emerg\]/, "$tag: the new configuration is valid")
        or diag($ng->log($mark));

    # three registrations at once
    my @users = map { uname('busy-reg') } 1 .. 3;
    my @res = map { http_wait($_) } map { register_bg($ng, $_) } @users;
    my @status = map { $_->{status} // 'none' } @res;
    my @busy = grep { ($_->{status} // 0) == 503 } @res;
    ok((grep { $_ eq '200' } @status) && @busy
       && !(grep { $_ ne "200" && $_ ne "503" } @status),
       "$tag: three registrations at once: 200 and 503 (got @status)")
        or diag(join "\n", map { $_->{error} // $_->{body} } @res);
    for my $i (grep { ($res[$_]{status} // 0) == 503 } 0 .. $#res) {
        is_error($res[$i], 503, 'crypt_busy', "$tag: registration $i refused");
        is($res[$i]{headers}{'retry-after'}, 1, "$tag: registration $i: Retry-After: 1");
        is(sql("SELECT count(*) FROM users WHERE username = '$users[$i]'"), 0,
           "$tag: registration $i: no row");
    }

    # three logins at once
    @res = map { http_wait($_) } map {
        http_bg($ng, POST => '/api/auth/login', timeout => $T,
                body => $json->encode({ username => $user, password => $Pw }))
    } 1 .. 3;
    @status = map { $_->{status} // 'none' } @res;
    @busy = grep { ($_->{status} // 0) == 503 } @res;
    ok((grep { $_ eq '200' } @status) && @busy
       && !(grep { $_ ne "200" && $_ ne "503" } @status),
       "$tag: three logins at once: 200 and 503 (got @status)")
        or diag(join "\n", map { $_->{error} // $_->{body} } @res);
    for my $b (@busy) {
        is_error($b, 503, 'crypt_busy', "$tag: a login refused");
        is($b->{headers}{'retry-after'}, 1, "$tag: a login refused: Retry-After: 1");
    }

    # once the thread is free again, requests are served
    is(login($ng, $user)->{status}, 200, "$tag: a login alone is served");

    unlike($ng->log, qr/\[(alert|crit)\]/, "$tag: no alert in error.log");
    stop_nginx($ng);
}


done_testing();
