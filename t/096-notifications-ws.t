# The WebSocket notification channel, GET /api/notifications/ws?token=,
# through t/lib/DefarmWs.pm (a real RFC 6455 client):
#
#   a. the handshake: 101 with the right Sec-WebSocket-Accept (token in the
#      query or in Authorization), RFC spellings (Connection: keep-alive,
#      Upgrade; Upgrade: WebSocket); refusals as JSON errors before any
#      upgrade: 401 for no, bad, expired or forged tokens, 403 for a frozen
#      user, 403 or 401 for an API key, 400 for what is not a WebSocket
#      handshake, 426 (with Sec-WebSocket-Version: 13) for another version
#   b. connected + unread_count at once (a notification made before the
#      connection counts); a notification made through a REST route
#      arrives as the object GET /api/notifications lists; one made on a
#      second nginx node (same PostgreSQL) arrives too
#   c. mark_read, and the errors of the client's messages (the socket
#      stays open)
#   d. every protocol error: its close code, then the TCP close; pings,
#      closes, fragments and the message size limit done right
#   e. server pings (defarm_ws_ping_interval 1s): answering keeps the
#      socket, silence closes it with 1001
#   f. a slow reader (small SO_RCVBUF) flooded with notifications: the
#      worker's memory stays bounded and, once it reads again, the client
#      gets a lag message; what arrived plus what was missed is all
#   g. the server closes: 1008 on a freeze, a password reset, a token's
#      expiry; 1001 on a reload (HUP) and a shutdown
#   h. 5,000 idle sockets on one worker: all connected, one notification
#      arrives on all the sockets of its user; the worker's RSS reported
#
# No timing thresholds: every wait is bounded by a generous timeout only.

use strict;
use warnings;

# DefarmTest places its nginx from TEST_NGINX_SERVER_PORT; "make test"
# is given TEST_NGINX_PORT
BEGIN {
    $ENV{TEST_NGINX_SERVER_PORT} ||= $ENV{TEST_NGINX_PORT}
        if $ENV{TEST_NGINX_PORT};
}

use Test::More;
use JSON::PP ();
use MIME::Base64 ();
use Digest::SHA ();
use Time::HiRes ();
use DefarmTest;
use DefarmWs qw(ws_connect connect_many pump_many);

my $T = valgrind() ? 60 : 15;
my $WS = '/api/notifications/ws';
my $json = JSON::PP->new->utf8->canonical;
my ($secret, $secret_file) = jwt_secret();

my $SOCKETS = $ENV{DEFARM_WS_SOCKETS} // 5000;
my $nobody = '0b6f8f9e-1d2c-4c3b-9a8e-7f6d5c4b3a21';     # no notification's id

sub body { json_body(@_) }

# the http{} text of a node: the database, the secret, no leeway on exp
# (so an expiring token closes its socket at once), and $extra
sub node_http {
    my ($extra) = @_;
    return db_config(size => 4) . "
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;
    defarm_jwt_leeway 0s;
    defarm_password_reset_log on;
    " . ($extra // '');
}

sub node {
    my ($name, $extra, %o) = @_;
    return start_nginx(name => $name, http => node_http($extra), %o,
                       server => '
        location / {
            defarm_api on;
        }');
}

# a node for one section: undef (and a failed test) if it cannot start,
# so that the other sections still run
sub section_node {
    my ($name, $extra, %o) = @_;
    my $ng = eval { node($name, $extra, %o) };
    ok($ng, "$name starts") or diag($@);
    return $ng;
}

# ---------------------------------------------------------------- tokens

sub b64url {
    my ($bytes) = @_;
    my $s = MIME::Base64::encode_base64($bytes, '');
    $s =~ tr{+/}{-_};
    $s =~ s/=+$//;
    return $s;
}

sub unb64url {
    my ($s) = @_;
    $s =~ tr{-_}{+/};
    $s .= '=' x ((4 - length($s) % 4) % 4);
    return MIME::Base64::decode_base64($s);
}

# resign($token, exp => ..., key => ...): the token's claims with some
# replaced, signed HS256 with the test's secret (or key)
sub resign {
    my ($token, %o) = @_;
    my (undef, $payload) = split /\./, $token;
    my $claims = $json->decode(unb64url($payload));
    my $key = delete $o{key} // $secret;
    @$claims{ keys %o } = values %o;
    my $head = b64url($json->encode({ alg => 'HS256', typ => 'JWT' }));
    my $body = b64url($json->encode($claims));
    my $sig = b64url(Digest::SHA::hmac_sha256("$head.$body", $key));
    return "$head.$body.$sig";
}

# ----------------------------------------------------------- WS helpers

sub is_ws { ref $_[0] eq 'DefarmWs' }

# connect($ng, $token, %opt) -> the socket, after connected and
# unread_count were read (->{hello} holds both)
sub connect_as {
    my ($ng, $token, %o) = @_;
    my $ws = ws_connect($ng->{port}, "$WS?token=$token", timeout => $T, %o);
    return $ws unless is_ws($ws);
    my $c = $ws->recv_json($T);
    my $u = $ws->recv_json($T);
    $ws->{hello} = [ $c, $u ];
    return $ws;
}

# the refusal of a handshake: its status, a JSON error body of that
# status
sub refused_ok {
    my ($r, $status, $tag) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    ok(!is_ws($r), "$tag: no upgrade") or return;
    if (ref $status) {
        ok((grep { ($r->{status} // 0) == $_ } @$status),
           "$tag: " . join(' or ', @$status))
            or diag("got $r->{status}: $r->{body}");
    } else {
        is($r->{status}, $status, "$tag: $status") or diag($r->{body});
    }
    ok(ref $r->{json} eq 'HASH' && defined $r->{json}{error}
       && ($r->{json}{status} // 0) == ($r->{status} // -1),
       "$tag: a JSON error body") or diag($r->{body});
}

# the server's close frame with $code, then the TCP close
sub closed_with {
    my ($ws, $code, $tag, $timeout) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $c = $ws->recv_close($timeout // $T);
    is($c && $c->{code}, $code, "$tag: close $code")
        or diag(explain($c), explain($ws->{skipped}));
    ok($ws->wait_eof($T), "$tag: then the TCP close");
    is($ws->{server_error}, undef, "$tag: the server's frames were valid");
}

# after a client error: the socket is still open (a ping is answered)
sub still_open {
    my ($ws, $tag) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $p = "alive-" . int rand 1e6;
    $ws->send_ping($p);
    my $deadline = Time::HiRes::time() + $T;
    while (Time::HiRes::time() < $deadline) {
        last if grep { $_ eq $p } @{ $ws->{pongs} || [] };
        last if $ws->{close} || $ws->{eof};
        my $f = $ws->recv_frame(1) or next;
        my $m = $ws->absorb($f);
        push @{ $ws->{skipped} }, $m if $m;
    }
    ok((grep { $_ eq $p } @{ $ws->{pongs} || [] }), "$tag: the socket stays open")
        or diag(explain($ws->{close}));
}

sub worker_rss {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/status" or return undef;
    while (<$fh>) { return $1 + 0 if /^VmRSS:\s+(\d+)/ }
    return undef;
}

# ================================================= the client, by itself

is(DefarmWs::ws_accept_for('dGhlIHNhbXBsZSBub25jZQ=='), 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=',
   "the client: RFC 6455's example accept key");
{
    my $buf = join '', DefarmWs::build_frame(0x1, 'Hello', mask => 0),
                       DefarmWs::build_frame(0x1, 'x' x 300),
                       DefarmWs::build_frame(0x2, 'y' x 70000, mask => 0);
    is(substr($buf, 0, 7), "\x81\x05Hello", "the client: RFC 6455's unmasked Hello");
    my @f = map { DefarmWs::parse_frame(\$buf) } 1 .. 3;
    is_deeply([ map { [ $_->{opcode}, $_->{masked}, length $_->{payload} ] } @f ],
              [ [ 1, 0, 5 ], [ 1, 1, 300 ], [ 2, 0, 70000 ] ],
              'the client: frames of 7-, 16- and 64-bit lengths read back');
    is($f[1]{payload}, 'x' x 300, 'the client: a masked payload unmasked');
}

# =================================================================== a.

my $a = node('ws-a');
my $b = node('ws-b');

my $owner = api_user($a, "t096_owner_$$");
my $u = api_user($a, "t096_u_$$");
my $asker = api_user($a, "t096_asker_$$");
my $other = api_user($a, "t096_other_$$");

# a notification made before $u connects: the owner adds $u to a circuit
my $c1 = body(api_as($a, $owner, POST => '/api/circuits', { name => "ws-$$" }))->{circuit_id};
ok($c1, 'a circuit');
is(api_as($a, $owner, POST => "/api/circuits/$c1/members",
          { member_id => $u->{id}, role => 'member' })->{status}, 200,
   'the owner adds u: u is notified');
my $before = body(api_as($a, $u, GET => '/api/notifications'));
is(scalar @$before, 1, 'u has one notification, unread');

{
    my $r = ws_connect($a->{port}, "$WS?token=$u->{token}", timeout => $T);
    ok(is_ws($r), 'the token in the query: 101') or diag(explain($r));
    if (is_ws($r)) {
        is($r->{status}, 101, '... 101');
        ok($r->{headers}{'sec-websocket-accept'}, '... Sec-WebSocket-Accept checked');
        $r->close_socket;
    }

    $r = ws_connect($a->{port}, $WS, timeout => $T,
                    headers => { Authorization => "Bearer $u->{token}" });
    ok(is_ws($r), 'the token in Authorization: Bearer: 101');
    $r->close_socket if is_ws($r);

    $r = ws_connect($a->{port}, "$WS?token=$u->{token}", timeout => $T,
                    headers => { Connection => 'keep-alive, Upgrade',
                                 Upgrade => 'WebSocket' });
    ok(is_ws($r), 'Connection: keep-alive, Upgrade and Upgrade: WebSocket: 101')
        or diag(explain($r));
    $r->close_socket if is_ws($r);
}

refused_ok(ws_connect($a->{port}, $WS, timeout => $T), 401, 'no token');
refused_ok(ws_connect($a->{port}, "$WS?token=", timeout => $T), 401, 'an empty token');
refused_ok(ws_connect($a->{port}, "$WS?token=not.a.jwt", timeout => $T), 401, 'a bad token');
refused_ok(ws_connect($a->{port}, "$WS?token=" . resign($u->{token}, exp => time - 30), timeout => $T),
           401, 'an expired token');
refused_ok(ws_connect($a->{port}, "$WS?token=" . resign($u->{token}, key => 'x' x 48), timeout => $T),
           401, 'a token signed with another key');
refused_ok(ws_connect($a->{port}, "$WS?token=" . resign($u->{token}, user_id => $owner->{id},
                                                         key => 'y' x 48), timeout => $T),
           401, "a forged token claiming another user");
{
    my $key = body(api_as($a, $other, POST => '/api/api-keys',
                          { name => 'ws', organization_type => 'Producer' }))->{api_key};
    ok($key, 'an API key');
    refused_ok(ws_connect($a->{port}, $WS, timeout => $T, headers => { 'X-API-Key' => $key }),
               403, 'an API key instead of a token');
}

my $q = "$WS?token=$u->{token}";
refused_ok(ws_connect($a->{port}, $q, timeout => $T, headers => { Upgrade => undef }),
           400, 'no Upgrade header');
refused_ok(ws_connect($a->{port}, $q, timeout => $T, headers => { Upgrade => 'h2c' }),
           400, 'Upgrade: h2c');
refused_ok(ws_connect($a->{port}, $q, timeout => $T, headers => { Connection => undef }),
           400, 'no Connection header');
refused_ok(ws_connect($a->{port}, $q, timeout => $T, headers => { Connection => 'keep-alive' }),
           400, 'Connection: keep-alive only');
refused_ok(ws_connect($a->{port}, $q, timeout => $T, headers => { 'Sec-WebSocket-Key' => undef }),
           400, 'no Sec-WebSocket-Key');
refused_ok(ws_connect($a->{port}, $q, timeout => $T, key => 'c2hvcnQ='),
           400, 'a key that is not 16 bytes');
refused_ok(ws_connect($a->{port}, $q, timeout => $T, key => '!!!not*base64!!!!!!!!==='),
           400, 'a key that is not base64');
refused_ok(ws_connect($a->{port}, $q, timeout => $T, method => 'POST'),
           [ 400, 405 ], 'POST');
refused_ok(ws_connect($a->{port}, $q, timeout => $T, http => '1.0'),
           400, 'HTTP/1.0');
{
    my $r = ws_connect($a->{port}, $q, timeout => $T, version => 8);
    refused_ok($r, 426, 'Sec-WebSocket-Version: 8');
    is($r->{headers}{'sec-websocket-version'}, '13', '... with Sec-WebSocket-Version: 13');
}

# =================================================================== b.

my $ws = connect_as($a, $u->{token});
unless (ok(is_ws($ws), 'u connects')) {
    # nothing after this can run without the channel
    diag(explain({ %$ws }));
    stop_nginx($_) for $a, $b;
    done_testing();
    exit;
}
my ($hello, $count) = @{ $ws->{hello} };
is($hello->{type}, 'connected', 'first: connected');
is($hello->{user_id}, $u->{id}, '... with the user id');
ok(defined $hello->{message}, '... and a message');
is_deeply($count, { type => 'unread_count', count => 1 },
          'then: unread_count 1 (the notification made before)');

my $ows = connect_as($a, $owner->{token});
ok(is_ws($ows), 'the owner connects');
is($ows->{hello}[1]{count}, 0, '... unread_count 0');

# a join request: the owner is told, on the socket, what the REST list says
like(api_as($a, $asker, POST => "/api/circuits/$c1/requests", { message => 'ws' })->{status},
     qr/^20[01]$/, 'a join request');
my $n = $ows->recv_type('notification', $T);
ok($n, 'the owner receives a notification');
my $listed = body(api_as($a, $owner, GET => '/api/notifications'))->[0];
is_deeply($n && $n->{data}, $listed, '... exactly the object GET /api/notifications lists');
is($n && $n->{data}{notification_type}, 'JoinRequestReceived', '... JoinRequestReceived');
is_deeply([ sort keys %{ $n && $n->{data} || {} } ],
          [ sort qw(id user_id notification_type title message read timestamp data) ],
          '... with its fields');

# through the second node: a circuit made there, u added there
my $c2 = body(api_as($b, $owner, POST => '/api/circuits', { name => "ws-b-$$" }))->{circuit_id};
is(api_as($b, $owner, POST => "/api/circuits/$c2/members",
          { member_id => $u->{id}, role => 'member' })->{status}, 200,
   'node b: the owner adds u to another circuit');
$n = $ws->recv_type('notification', $T);
ok($n, 'u (on node a) receives it');
is($n && $n->{data}{data}{circuit_id}, $c2, '... about the circuit made on node b');
is_deeply($n && $n->{data}, body(api_as($b, $u, GET => '/api/notifications'))->[0],
          '... the object node b lists');

# made in SQL, in one transaction of two: both arrive, in order
sql("SELECT defarm_notify(ARRAY['$u->{id}'], 'Test', 'sql ' || g, 'm',
                          jsonb_build_object('g', g))
     FROM generate_series(1, 2) g");
my @got = map { $ws->recv_type('notification', $T) } 1 .. 2;
is_deeply([ map { $_ && $_->{data}{data}{g} } @got ], [ 1, 2 ], 'two made in SQL: both, in order');

# the worker's LISTEN connection dies: what is committed before it is back
# reaches the socket when it listens again (the catch-up)
{
    my $killed = sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                     . "WHERE query LIKE 'LISTEN defarm_notification%' "
                     . "OR (query = ';' AND backend_type = 'client backend')");
    cmp_ok($killed, '>=', 1, 'the listening connections are killed');
    sql("SELECT defarm_notify(ARRAY['$u->{id}'], 'Test', 'while deaf', 'm', '{}')");
    my $n = $ws->recv_type('notification', $T * 2);
    is($n && $n->{data}{title}, 'while deaf',
       'a notification made while the listener was down arrives once it is back');
    ok(wait_until(sub { $a->log =~ /not listening for notifications/ }, $T),
       '... the loss was logged');
}

# =================================================================== c.

my $first = $before->[0]{id};
my $unread = body(api_as($a, $u, GET => '/api/notifications/unread-count'))->{unread_count};
$ws->send_json({ action => 'mark_read', notification_id => $first });
my $m = $ws->recv_json($T);
is_deeply($m, { type => 'unread_count', count => $unread - 1 }, 'mark_read: unread_count, one fewer')
    or diag(explain($m));
is(body(api_as($a, $u, GET => '/api/notifications/unread-count'))->{unread_count}, $unread - 1,
   '... as the REST route says');
is((grep { $_->{id} eq $first } @{ body(api_as($a, $u, GET => '/api/notifications')) })[0]{read},
   JSON::PP::true, '... the notification is read');

my $others = $listed->{id};         # the owner's
for my $case ([ 'an unknown id', { action => 'mark_read', notification_id => '0b6f8f9e-1d2c-4c3b-9a8e-7f6d5c4b3a21' } ],
              [ "another user's id", { action => 'mark_read', notification_id => $others } ],
              [ 'a malformed id', { action => 'mark_read', notification_id => 'nope' } ],
              [ 'no id', { action => 'mark_read' } ],
              [ 'an unknown action', { action => 'dance' } ],
              [ 'no action', { notification_id => $first } ])
{
    my ($tag, $msg) = @$case;
    $ws->send_json($msg);
    $m = $ws->recv_json($T);
    is($m && $m->{type}, 'error', "$tag: an error") or diag(explain($m));
    ok($m && length($m->{message} // ''), "$tag: with a message");
}
is(body(api_as($a, $owner, GET => '/api/notifications'))->[0]{read}, JSON::PP::false,
   "another user's notification stays unread");
for my $case ([ 'invalid JSON', '{"action": "mark_read", ' ],
              [ 'JSON not an object', '[1, 2]' ],
              [ 'an empty text', '' ])
{
    my ($tag, $text) = @$case;
    $ws->send_text($text);
    $m = $ws->recv_json($T);
    is($m && $m->{type}, 'error', "$tag: an error") or diag(explain($m));
}
still_open($ws, 'after the errors');

# =================================================================== d.

sub fresh { my $w = connect_as($a, $u->{token}); ok(is_ws($w), "$_[0]: connected"); $w }

# the errors that close: [tag, code, sub { send on $w }]
my @errors = (
    [ 'an unmasked frame', 1002, sub { $_[0]->send_text('{"action":"x"}', mask => 0) } ],
    [ 'RSV1 set', 1002, sub { $_[0]->send_text('{}', rsv => 4) } ],
    [ 'RSV2 set', 1002, sub { $_[0]->send_text('{}', rsv => 2) } ],
    [ 'RSV3 set', 1002, sub { $_[0]->send_ping('x', rsv => 1) } ],
    [ 'opcode 0x3 (reserved data)', 1002, sub { $_[0]->send_frame(0x3, 'x') } ],
    [ 'opcode 0xB (reserved control)', 1002, sub { $_[0]->send_frame(0xB, 'x') } ],
    [ 'a ping of 126 bytes', 1002, sub { $_[0]->send_ping('p' x 126) } ],
    [ 'a close of one byte', 1002, sub { $_[0]->send_frame(0x8, 'x') } ],
    [ 'a close with code 1005 (never sent)', 1002,
      sub { $_[0]->send_frame(0x8, pack('n', 1005)) } ],
    [ 'a fragmented ping', 1002, sub { $_[0]->send_ping('p', fin => 0) } ],
    [ 'a continuation with no message', 1002, sub { $_[0]->send_cont('{}') } ],
    [ 'a text frame inside a fragmented message', 1002,
      sub { $_[0]->send_text('{"act', fin => 0); $_[0]->send_text('{}') } ],
    [ 'a binary frame inside a fragmented text', 1002,
      sub { $_[0]->send_text('{"act', fin => 0); $_[0]->send_binary('x') } ],
    [ 'a message of 64k + 1 bytes', 1009, sub { $_[0]->send_text('x' x 65537) } ],
    [ 'fragments adding up to over 64k', 1009,
      sub { $_[0]->send_fragmented(0x1, 'x' x 90000, 3) } ],
    [ 'a 64-bit length of 2^40, and no payload', 1009,
      sub { $_[0]->send_raw(DefarmWs::build_frame(0x1, '', len => 2**40)) } ],
    [ 'invalid UTF-8 (0xFF)', 1007, sub { $_[0]->send_text("{\"a\":\"\xff\xfe\"}") } ],
    [ 'invalid UTF-8 (overlong)', 1007, sub { $_[0]->send_text("{\"a\":\"\xc0\xaf\"}") } ],
    [ 'invalid UTF-8 (a surrogate)', 1007, sub { $_[0]->send_text("{\"a\":\"\xed\xa0\x80\"}") } ],
    [ 'invalid UTF-8 across fragments', 1007,
      sub { $_[0]->send_text("{\"a\":\"\xe2\x82", fin => 0); $_[0]->send_cont("(\"}") } ],
    [ 'a binary message', 1003, sub { $_[0]->send_binary("\x00\x01") } ],
    [ 'a 16-bit length for 20 bytes (not minimal)', 1002,
      sub { $_[0]->send_text('{"action":"sixteen"}', len16 => 1) } ],
    [ 'a 64-bit length for 300 bytes (not minimal)', 1002,
      sub { $_[0]->send_text('{"action":"x"}' . (' ' x 286), len64 => 1) } ],
);

for my $e (@errors) {
    my ($tag, $code, $send) = @$e;
    my $w = fresh($tag);
    next unless is_ws($w);
    $send->($w);
    closed_with($w, $code, $tag);
}

{
    my $w = fresh('pings');
    for my $p ('hello', '', 'q' x 125) {
        $w->send_ping($p);
        my $deadline = Time::HiRes::time() + $T;
        until (grep { $_ eq $p } @{ $w->{pongs} || [] }) {
            last if Time::HiRes::time() > $deadline || $w->{eof};
            my $f = $w->recv_frame(1) or next;
            $w->absorb($f);
        }
        ok((grep { $_ eq $p } @{ $w->{pongs} || [] }),
           'a ping of ' . length($p) . ' bytes: a pong with its payload');
        $w->{pongs} = [];
    }

    # a ping between the fragments of a message: answered, and the
    # message still whole (an unknown action: an error answer)
    my $pinged = 0;
    $w->send_fragmented(0x1, $json->encode({ action => 'mark_read', notification_id => $nobody }), 3,
                        between => sub { $_[0]->send_ping("mid$_[1]"); $pinged++ });
    $m = $w->recv_json($T);
    is($m && $m->{type}, 'error', 'a message with pings between its fragments: handled whole (an unknown id)')
        or diag(explain($m));
    ok((grep { $_ eq 'mid0' } @{ $w->{pongs} || [] }) || do {
           still_open($w, 'pongs'); grep { $_ eq 'mid0' } @{ $w->{pongs} || [] } },
       '... and the pings between answered');

    # a character split between two fragments is valid UTF-8
    $w->send_text("{\"action\":\"mark_read\",\"notification_id\":\"caf\xc3", fin => 0);
    $w->send_cont("\xa9\"}");
    $m = $w->recv_json($T);
    is($m && $m->{type}, 'error', 'a UTF-8 character split between fragments: accepted (a malformed id)')
        or diag(explain($m, $w->{close}));

    # exactly 64k: not over the limit (a 64-bit length header)
    my $pad = qq({"action":"mark_read","notification_id":"$nobody","pad":");
    my $text = $pad . ('x' x (65536 - length($pad) - 2)) . '"}';
    is(length $text, 65536, 'a message of exactly 65536 bytes');
    $w->send_text($text);
    $m = $w->recv_json($T);
    is($m && $m->{type}, 'error', '... is read (an unknown id), not closed')
        or diag(explain($m, $w->{close}));

    # a small message with a 16-bit length: an unknown action
    $w->send_text(qq({"action":"mark_read","notification_id":"$nobody"}) . (' ' x 200));
    $m = $w->recv_json($T);
    is($m && $m->{type}, 'error', 'a 16-bit length: read') or diag(explain($m));

    # mark_read still works on this socket, in fragments
    $w->send_fragmented(0x1, $json->encode({ action => 'mark_read',
                                            notification_id => $first }), 4);
    $m = $w->recv_json($T);
    is($m && $m->{type}, 'unread_count', 'mark_read in 4 fragments: unread_count')
        or diag(explain($m));

    # the client closes: the server answers close and closes TCP
    $w->send_close(1000, 'bye');
    my $c = $w->recv_close($T);
    ok($c && ($c->{code} == 1000), 'a client close 1000: answered with 1000')
        or diag(explain($c));
    ok($w->wait_eof($T), '... then the TCP close');
    is($w->{server_error}, undef, "... the server's frames were valid");
}
{
    my $w = fresh('close 4000');
    $w->send_close(4000, 'mine');
    my $c = $w->recv_close($T);
    ok($c && ($c->{code} == 4000 || $c->{code} == 1000),
       'a client close 4000: answered with 4000 or 1000') or diag(explain($c));
    ok($w->wait_eof($T), '... then the TCP close');
}
{
    my $w = fresh('close, no code');
    $w->send_close();
    my $c = $w->recv_close($T);
    ok($c, 'a client close with no code: answered') or diag(explain($c));
    ok($w->wait_eof($T), '... then the TCP close');
}

# u's first socket lived through all of it
still_open($ws, "u's first socket, after the others closed");
is($ws->{server_error}, undef, "u's first socket: the server's frames were valid");

# =================================================================== g.
# (on nodes a and b: a freeze, a password reset, an expiring token)

{
    my $admin = api_user($a, "t096_admin_$$");
    sql("UPDATE users SET is_admin = true WHERE id = '$admin->{id}'");
    my $victim = api_user($a, "t096_frozen_$$");
    my $w1 = connect_as($a, $victim->{token});
    my $w2 = connect_as($b, $victim->{token});
    ok(is_ws($w1) && is_ws($w2), 'a user to freeze: connected on both nodes');
    is(api_as($a, $admin, PUT => "/api/admin/users/$victim->{id}/freeze")->{status}, 200,
       'the admin freezes them');
    closed_with($w1, 1008, 'frozen: node a');
    closed_with($w2, 1008, 'frozen: node b');
    refused_ok(ws_connect($a->{port}, "$WS?token=$victim->{token}", timeout => $T), 403,
               'a frozen user connects');
}

{
    my $who = "t096_reset_$$";
    my $r = api_user($a, $who);
    my $w = connect_as($b, $r->{token});
    ok(is_ws($w), 'a user whose password is reset: connected on node b');
    my $mark = $a->log_mark;
    http($a, POST => '/api/auth/forgot-password', headers => { 'Content-Type' => 'application/json' },
         body => $json->encode({ email => "$who\@example.com" }));
    my $re = qr/password reset token for user \Q$r->{id}\E: ([0-9a-f]{64})/;
    ok(wait_until(sub { $a->log($mark) =~ $re }, $T, 'the reset token'), 'the reset token is logged');
    my ($token) = $a->log($mark) =~ $re;
    my $res = http($a, POST => '/api/auth/reset-password', headers => { 'Content-Type' => 'application/json' },
                   body => $json->encode({ token => $token // '', new_password => 'N3w-Battery-Staple!' }));
    is($res->{status}, 200, 'the password is reset (on node a)') or diag($res->{body});
    closed_with($w, 1008, 'password reset');
    refused_ok(ws_connect($b->{port}, "$WS?token=$r->{token}", timeout => $T), 401,
               'the revoked token connects');
}


# =================================================================== e.

{
    my $p = section_node('ws-ping', 'defarm_ws_ping_interval 1s;') or last;
    my $talker = connect_as($p, $u->{token});
    my $mute = connect_as($p, $u->{token});
    ok(is_ws($talker) && is_ws($mute), 'ping interval 1s: two sockets');

    # the talker answers every ping for 5 intervals; the mute reads nothing
    my $until = Time::HiRes::time() + 5;
    while (Time::HiRes::time() < $until) {
        $talker->drain;
        Time::HiRes::sleep(0.05);
    }
    cmp_ok($talker->{pings} // 0, '>=', 2, 'the talker was pinged');
    still_open($talker, 'the talker, after 5 intervals');

    my $c = $mute->recv_close($T, pong => 0);
    is($c && $c->{code}, 1001, 'the mute one: closed with 1001') or diag(explain($c));
    ok($mute->wait_eof($T), '... then the TCP close');
    ok((grep { ($_->{opcode} // -1) == 0x9 } @{ $mute->{skipped} || [] }),
       '... after pings it did not answer');

    # a message begun and never ended, pings answered: closed (1008), so
    # that a client cannot hold a buffer open
    my $slowmsg = connect_as($p, $u->{token});
    ok(is_ws($slowmsg), 'a socket that begins a message');
    $slowmsg->send_text('{"action":"mark_', fin => 0);
    my $sc = $slowmsg->recv_close($T);
    is($sc && $sc->{code}, 1008, 'a message never ended: closed with 1008')
        or diag(explain($sc));
    like($sc && $sc->{reason} // '', qr/too slow/, '... "message too slow"');

    # a token's expiry is checked at each ping
    my $short = resign($u->{token}, exp => time + 3);
    my $w = connect_as($p, $short);
    ok(is_ws($w), 'a token expiring in 3 s: connected');
    is($w->{hello}[0]{type}, 'connected', '... connected');
    closed_with($w, 1008, 'the token expires');

    unlike($p->log, qr/\[(alert|crit|emerg)\]/, 'ws-ping: no alert in error.log');
    stop_nginx($p);
}

# =================================================================== f.

{
    my $s = section_node('ws-slow', 'defarm_ws_send_buffer 64k;') or last;
    my $slow = api_user($s, "t096_slow_$$");
    my $probe = api_user($s, "t096_probe_$$");
    my $w = connect_as($s, $slow->{token}, rcvbuf => 4096);
    my $pw = connect_as($s, $probe->{token});
    ok(is_ws($w) && is_ws($pw), 'a slow reader (SO_RCVBUF 4096) and a probe');

    my $rss0 = worker_rss($s->{pid});
    my $N = 6000;
    my $size = 4000;
    sql("SELECT defarm_notify(ARRAY['$slow->{id}'], 'Flood', 'flood ' || g,
                              repeat('x', $size), jsonb_build_object('n', g))
         FROM generate_series(1, $N) g");
    # the probe's notification is committed after the flood: once it
    # arrives, the node has had the flood's announcements
    sql("SELECT defarm_notify(ARRAY['$probe->{id}'], 'Probe', 'p', 'p', '{}')");
    my $pn = $pw->recv_type('notification', $T * 4);
    ok($pn, 'the probe, committed after the flood, arrives');
    my $peak = $rss0;
    for (1 .. 10) {             # the node may still be writing
        my $r = worker_rss($s->{pid}) // 0;
        $peak = $r if $r > $peak;
        Time::HiRes::sleep(0.2);
    }
    my $made = $N * $size / 1024;
    diag(sprintf 'slow reader: worker RSS %d KiB before, %d KiB at most'
         . ' after %d KiB of notifications', $rss0, $peak, $made);
    SKIP: {
        skip 'valgrind or the sanitizers: their memory is in the RSS', 1
            unless rss_is_nginx();
        cmp_ok($peak - $rss0, '<', $made / 2,
               'the worker did not keep what the reader did not take (RSS'
               . ' grew by less than half of it)');
    }

    # now read: notifications, and a lag with what was missed
    my ($seen, $missed, $lags, $last, $ordered) = (0, 0, 0, 0, 1);
    pump_many([ $w ], sub {
        my (undef, $msg) = @_;
        if (($msg->{type} // '') eq 'notification') {
            $seen++;
            my $k = $msg->{data}{data}{n} // 0;
            $ordered = 0 if $k <= $last;
            $last = $k;
        } elsif (($msg->{type} // '') eq 'lag') {
            $lags++;
            $missed += $msg->{missed_count} // 0;
        }
    }, $T * 8, until => sub { $seen + $missed >= $N });
    diag("slow reader: $seen notifications, $lags lag messages, $missed missed");
    ok($lags >= 1, 'the slow reader gets a lag message');
    cmp_ok($missed, '>', 0, '... missed_count > 0');
    is($seen + $missed, $N, '... received + missed = all that was made');
    ok($ordered, '... the received ones in order');
    still_open($w, 'the slow reader, after its lag');

    unlike($s->log, qr/\[(alert|crit|emerg)\]/, 'ws-slow: no alert in error.log');
    stop_nginx($s);
}

# =================================================================== g.
# reload and shutdown: 1001

{
    my $r = section_node('ws-reload', '', master => 1) or last;
    my $w = connect_as($r, $u->{token});
    ok(is_ws($w), 'a node with a master: connected');
    kill 'HUP', $r->{pid};
    closed_with($w, 1001, 'a reload (HUP)');
    my $w2;
    ok(wait_until(sub { $w2 = connect_as($r, $u->{token}); is_ws($w2) }, $T, 'the new worker'),
       'the new worker accepts');
    stop_nginx($r);
    closed_with($w2, 1001, 'a shutdown') if is_ws($w2);
}

# =================================================================== g2.
# behind nginx as a reverse proxy: the lines docs/api.md gives

{
    my $front = eval {
        start_nginx(name => 'ws-front', http => "
    upstream defarm_api_node {
        server 127.0.0.1:$a->{port};
    }", server => '
        location /api/notifications/ws {
            proxy_pass http://defarm_api_node;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 75s;
        }')
    };
    ok($front, 'a reverse proxy in front starts') or diag($@);
    last unless $front;

    my $w = connect_as($front, $u->{token});
    ok(is_ws($w), 'through the proxy: connected, then the unread count');

    if (is_ws($w)) {
        sql("SELECT defarm_notify(ARRAY['$u->{id}'], 'Test', 'via proxy', "
            . "'m', '{}')");
        my $n = $w->recv_type('notification', $T);
        is($n && $n->{data}{title}, 'via proxy',
           'through the proxy: a notification arrives');
        $w->send_ping('through');
        my $f = $w->recv_frame($T);
        is($f && $f->{payload}, 'through', 'through the proxy: a ping is answered');
        $w->send_close(1000);
        closed_with($w, 1000, 'through the proxy: a close is answered');
    }

    refused_ok(ws_connect($front->{port}, "$WS?token=not.a.jwt", timeout => $T),
               401, 'through the proxy: a bad token');
    stop_nginx($front);
}

# =================================================================== h.

{
    my $want = $SOCKETS + 200;
    my $soft = `sh -c 'ulimit -n'` + 0;
    if ($soft < $want + 100) {
        system('prlimit', "--pid=$$", '--nofile=' . ($want + 1000) . ':' . ($want + 1000));
        $soft = `sh -c 'ulimit -n'` + 0;
    }
    diag("$SOCKETS sockets: this process may open $soft files");

    # nginx starts closing connections waiting for their request once
    # fewer than 1/16 of worker_connections are free
    my $mn = section_node('ws-many', '', connections => int($want * 1.25)) or last;
    my $users = 50;
    my @us = map { api_user($mn, "t096_many_${_}_$$") } 1 .. $users;
    my $rss0 = worker_rss($mn->{pid});
    my @paths = map { "$WS?token=" . $us[$_ % $users]{token} } 0 .. $SOCKETS - 1;

    my %hello;
    my ($open, $refused) = connect_many($mn->{port}, \@paths, timeout => 300, batch => 50);
    is(scalar @$refused, 0, "$SOCKETS sockets: none refused")
        or diag(explain([ map { { %$_ } } @$refused[0 .. 2] ]));
    is(scalar @$open, $SOCKETS, "... all upgraded");
    pump_many($open, sub { $hello{ $_[0]{index} }{ $_[1]{type} }++ }, 300,
              until => sub { keys %hello == @$open
                             && !grep { !$_->{unread_count} } values %hello });
    is(scalar(grep { $_->{connected} && $_->{unread_count} } values %hello), $SOCKETS,
       "... all got connected and unread_count");
    my $rss1 = worker_rss($mn->{pid});
    diag(sprintf "$SOCKETS idle sockets: worker RSS %d KiB before, %d KiB after,"
         . " %.1f KiB a socket", $rss0, $rss1, ($rss1 - $rss0) / $SOCKETS);

    # one notification to the first user: on all its sockets
    my @mine = grep { $_->{index} % $users == 0 } @$open;
    my %got;
    sql("SELECT defarm_notify(ARRAY['$us[0]{id}'], 'Many', 'one', 'of many', '{}')");
    pump_many(\@mine, sub { $got{ $_[0]{index} }++ if $_[1]{type} eq 'notification' }, 120,
              until => sub { keys %got == @mine });
    is(scalar keys %got, scalar @mine, 'a notification to one user: on all its ' . scalar(@mine)
       . ' sockets');
    my $stray = 0;
    pump_many([ grep { $_->{index} % $users != 0 } @$open[0 .. 499] ],
              sub { $stray++ if $_[1]{type} eq 'notification' }, 1);
    is($stray, 0, '... and not on the sockets of other users');
    diag(sprintf 'after the notification: worker RSS %d KiB', worker_rss($mn->{pid}));

    $_->close_socket for @$open;
    unlike($mn->log, qr/\[(alert|crit|emerg)\]/, 'ws-many: no alert in error.log');
    stop_nginx($mn);
}

for my $ng ($a, $b) {
    unlike($ng->log, qr/\[(alert|crit|emerg)\]/, "$ng->{name}: no alert in error.log");
}
$ws->close_socket;
$ows->close_socket;
stop_nginx($b);
stop_nginx($a);

done_testing();
