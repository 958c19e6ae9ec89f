# A body sent to a route that takes none must not stall the connection.
# Left to nginx's discarding, it broke when the request waited twice (for
# the cache lock, then from the lock's timer for the database): the second
# wait took over the read handler that drains the body, and nginx had
# armed its lingering timer at the first, so the connection was closed
# lingering_timeout after the answer instead of being kept alive.  Such
# bodies are now read and dropped before the handler runs.

use strict;
use warnings;
use Test::More;
use IO::Socket::INET ();
use Time::HiRes ();
use DefarmTest;

my (undef, $secret) = jwt_secret();
my $ng = start_nginx(
    name   => 'discard-body',
    http   => db_config(size => 1, queue => 8, queue_timeout => '5s') . "
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret;
    defarm_cache zone=discard:1m lock_timeout=5s lock_step=5ms;
    lingering_timeout 1s;
    keepalive_timeout 60s;",
    server => '
        location / {
            defarm_api on;
            defarm_echo on;
        }');

my $user = api_user($ng, "t005_$$");
my $res = api_as($ng, $user, POST => '/api/items',
                 { identifiers => [ { key => 'lot', value => "d-$$" } ],
                   source_entry => '0b6f8f9e-1d2c-4c3b-9a8e-7f6d5c4b3a21' });
my $dfid = json_body($res)->{dfid} // '';
ok($dfid, "an item ($dfid)");

# one response off a keep-alive connection (Content-Length framed)
sub read_response {
    my ($sock, $timeout) = @_;
    my $raw = '';
    my $deadline = Time::HiRes::time() + $timeout;
    while (Time::HiRes::time() < $deadline) {
        if ($raw =~ /\r\n\r\n/) {
            my ($head, $rest) = split /\r\n\r\n/, $raw, 2;
            my ($len) = $head =~ /^Content-Length:\s*(\d+)/mi;
            return DefarmTest::parse_response($raw)
                if defined $len && length $rest >= $len;
        }
        my $rin = '';
        vec($rin, fileno $sock, 1) = 1;
        next unless select($rin, undef, undef, 0.2) > 0;
        my $n = sysread $sock, $raw, 65536, length $raw;
        last unless $n;
    }
    return { status => undef, error => 'no complete response', body => $raw };
}

# The request waits twice: for the cache lock (held on purpose), then,
# from the lock's timer, for the only database connection (taken by a slow
# query).  The rest of its body arrives during the second wait.
for my $case ([ 'two waits', 1 ], [ 'no wait', 0 ]) {
    my ($name, $wait) = @$case;
    my $slow;

    if ($wait) {
        is(http($ng, POST => '/api/echo/cache-lock/hold',
                body => '{"ms":400}')->{status}, 200, 'the lock is held');
        $slow = http_bg($ng, POST => '/api/echo/db',
                        body => '{"value":"slow","sleep_ms":1500}');
        Time::HiRes::sleep(0.1);
    }

    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                     PeerPort => $ng->{port},
                                     Proto => 'tcp', Timeout => 5)
        or die "connect: $!\n";
    binmode $sock;

    # half of a body the route does not read now, the rest while it waits
    syswrite $sock, "GET /api/items/$dfid HTTP/1.1\r\nHost: localhost\r\n"
                  . "Authorization: Bearer $user->{token}\r\n"
                  . "Content-Length: 10\r\n\r\n12345";
    Time::HiRes::sleep($wait ? 0.7 : 0.1);
    syswrite $sock, "67890";

    $res = read_response($sock, 10);
    is($res->{status}, 200, "$name: the item is answered");
    like($res->{headers}{connection} // '', qr/keep-alive/i,
         "$name: keep-alive");
    is(http_wait($slow)->{status}, 200, 'the slow query ended') if $slow;

    # longer than lingering_timeout: a connection still waiting for the
    # body it was sent would have been closed by now
    Time::HiRes::sleep(1.6);

    syswrite $sock, "GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n";
    $res = read_response($sock, 10);
    is($res->{status}, 200, "$name: the next request on the connection "
                            . 'is served');
    close $sock;
}

stop_nginx($ng);
done_testing();
