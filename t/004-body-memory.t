# Request bodies cost memory only for what actually arrived: a client that
# declares a 1 MB body and sends one byte pins a body buffer of
# client_body_buffer_size, not of client_max_body_size, because bodies are
# parsed as they stream in.  2,000 such connections against one worker:
# its resident and allocated memory grow by a bounded amount per
# connection.  Then large bodies, sent whole or chunked, still parse, and
# the parsed tree's memory is bounded by defarm_json_max_memory.

use strict;
use warnings;
use Test::More;
use IO::Socket::INET ();
use JSON::PP ();
use POSIX ();
use Time::HiRes ();
use DefarmTest;

my $T = valgrind() ? 120 : 30;
my $json = JSON::PP->new->utf8->canonical;
my $Conns = valgrind() ? 200 : 2000;

my $ng = start_nginx(
    name        => 'body-mem',
    connections => $Conns + 256,
    http        => auth_config() . '
    client_max_body_size 1m;
    client_body_timeout 60s;
    defarm_json_max_memory 1m;',
    server      => '
        location / {
            defarm_api on;
            defarm_echo on;
        }
        location = /stub {
            stub_status;
        }');

sub mem {
    my $status = DefarmTest::slurp("/proc/$ng->{pid}/status");
    my ($rss) = $status =~ /^VmRSS:\s+(\d+) kB/m;
    my ($data) = $status =~ /^VmData:\s+(\d+) kB/m;
    return ($rss // 0, $data // 0);
}

sub active {
    my $res = http($ng, GET => '/stub');
    return ($res->{body} =~ /Active connections:\s+(\d+)/)[0] // 0;
}

# warm the worker up: pools, the database connections, yajl
for (1 .. 20) {
    http($ng, POST => '/api/echo', body => $json->encode({ a => [1 .. 100] }));
}
is(http($ng, GET => '/health/db')->{status}, 200, 'database reachable');

my ($rss0, $data0) = mem();

# ---- 2,000 slow clients: 1 MB declared, 1 byte sent

my $head = "POST /api/auth/register HTTP/1.1\r\nHost: localhost\r\n"
         . "Content-Type: application/json\r\nContent-Length: 1000000\r\n"
         . "\r\n{";

# children hold the sockets, so the test runs under a 1024-file limit too
my $per = 400;
my @kids;
pipe my $ready_r, my $ready_w or die "pipe: $!\n";
for (my $left = $Conns; $left > 0; $left -= $per) {
    my $n = $left < $per ? $left : $per;
    my $pid = fork // die "fork: $!\n";
    if (!$pid) {
        close $ready_r;
        my @socks;
        for (1 .. $n) {
            my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                          PeerPort => $ng->{port},
                                          Proto => 'tcp', Timeout => 5)
                or last;
            syswrite $s, $head;
            push @socks, $s;
        }
        syswrite $ready_w, scalar(@socks) . "\n";
        sleep 120;                  # killed by the parent well before
        POSIX::_exit(0);
    }
    push @kids, $pid;
}
close $ready_w;

my $opened = 0;
for (@kids) {
    my $line = <$ready_r> // '0';
    $opened += $line;
}
is($opened, $Conns, "$Conns slow connections opened");

ok(wait_until(sub { active() >= $Conns + 1 }, $T, 'all accepted'),
   'nginx holds every slow connection');
Time::HiRes::sleep(0.5);         # their headers are read, bodies waiting

my ($rss1, $data1) = mem();
my $per_rss = ($rss1 - $rss0) * 1024 / $Conns;
my $per_data = ($data1 - $data0) * 1024 / $Conns;
diag(sprintf "worker RSS %d -> %d kB (%.1f KiB per connection), "
             . "VmData %d -> %d kB (%.1f KiB per connection)",
     $rss0, $rss1, $per_rss / 1024, $data0, $data1, $per_data / 1024);

# a connection's own pools, buffers and the 16k body buffer are ~25 KiB;
# a body buffer of client_max_body_size would be 1 MiB each
cmp_ok($per_data, '<', 96 * 1024,
       'allocated memory per slow connection is bounded (not 1 MiB)');
cmp_ok($per_rss, '<', 96 * 1024,
       'resident memory per slow connection is bounded');

# the worker still serves others meanwhile
is(http($ng, GET => '/health')->{status}, 200, '/health served meanwhile');

kill 'KILL', @kids;
waitpid $_, 0 for @kids;
ok(wait_until(sub { active() <= 2 }, $T, 'slow clients gone'),
   'the slow connections are closed');

# ---- large bodies still parse, whole or chunked, in many buffers

my @big = map { { n => $_, s => 'x' x 100 } } 1 .. 1500;    # ~170 KB
my $big = $json->encode(\@big);
my $res = http($ng, POST => '/api/echo', body => $big);
is($res->{status}, 200, 'a 170 KB body parses');
ok($res->{body} eq $big, 'and is rendered back unchanged');

my $chunked = '';
for (my $off = 0; $off < length $big; $off += 7001) {
    my $piece = substr $big, $off, 7001;
    $chunked .= sprintf("%x\r\n", length $piece) . $piece . "\r\n";
}
$chunked .= "0\r\n\r\n";
{
    # by hand: http() would add a Content-Length
    my ($sock) = DefarmTest::connect_and_send($ng,
        "POST /api/echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        . "Content-Type: application/json\r\n"
        . "Transfer-Encoding: chunked\r\n\r\n" . $chunked, 5);
    my $raw = '';
    while (sysread $sock, $raw, 65536, length $raw) { }
    $res = DefarmTest::parse_response($raw);
}
$res->{status} //= 0;
is($res->{status}, 200, 'the same body chunked parses');
ok($res->{body} eq $big, 'and is rendered back unchanged');

# a body that is slow to arrive: split across many reads
{
    my ($sock) = DefarmTest::connect_and_send($ng,
        "POST /api/echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        . "Content-Type: application/json\r\n"
        . "Content-Length: " . length($big) . "\r\n\r\n", 5);
    for (my $off = 0; $off < length $big; $off += 50000) {
        Time::HiRes::sleep(0.05);
        syswrite $sock, substr($big, $off, 50000);
    }
    my $raw = '';
    while (sysread $sock, $raw, 65536, length $raw) { }
    my $r = DefarmTest::parse_response($raw);
    is($r->{status}, 200, 'a body sent in slow pieces parses');
    ok($r->{body} eq $big, 'and is rendered back unchanged');
}

# ---- the parsed tree is bounded: defarm_json_max_memory 1m.  A value
# costs ~100 bytes of tree, so 30,000 small numbers (60 KB of body, under
# defarm_json_max_values) would need ~3 MB.

my $wide = '[' . join(',', (7) x 30000) . ']';
$res = http($ng, POST => '/api/echo', body => $wide);
is($res->{status}, 413, 'a tree over defarm_json_max_memory is 413');
like($res->{body}, qr/"error_kind":"payload_too_large"/, 'payload_too_large');
like($res->{body}, qr/defarm_json_max_memory|too much memory/i,
     'the message says why');

$res = http($ng, POST => '/api/echo',
            body => '[' . join(',', (7) x 5000) . ']');
is($res->{status}, 200, 'a tree under the bound parses');

# a string is charged too: 900 KB of string in a 1m bound fits, twice
# does not (the body limit is 1m as well, so two 450 KB strings)
$res = http($ng, POST => '/api/echo',
            body => $json->encode([ 'z' x 450000, 'z' x 450000 ]));
is($res->{status}, 200, 'two 450 KB strings fit in 1m');

# ---- a malformed body late in a large one: the message, and the
# connection stays usable (the rest of the body was read)

{
    # a control character is invalid inside a string and outside
    my $bad = substr($big, 0, 100000) . "\x01" . substr($big, 100000);
    my $first = "POST /api/echo HTTP/1.1\r\nHost: localhost\r\n"
              . "Content-Type: application/json\r\n"
              . "Content-Length: " . length($bad) . "\r\n\r\n" . $bad;
    my $second = "GET /health HTTP/1.1\r\nHost: localhost\r\n"
               . "Connection: close\r\n\r\n";
    my ($sock) = DefarmTest::connect_and_send($ng, $first . $second, 5);
    my $raw = '';
    my $deadline = time + 10;
    while (time < $deadline) {
        my $rin = '';
        vec($rin, fileno $sock, 1) = 1;
        last unless select($rin, undef, undef, 1) >= 0;
        my $n = sysread $sock, $raw, 65536, length $raw;
        last unless $n;
    }
    ok($raw =~ m{^HTTP/1\.1 400 }, 'a malformed large body is 400')
        or diag(substr $raw, 0, 300);
    ok($raw =~ /Malformed JSON body: [^"]+ at byte (\d+)/,
       'with the parser\'s message');
    ok($raw =~ m{HTTP/1\.1 200 .*"status":"healthy"}s,
       'and the next request on the connection is served');
}

# an empty body, a body of whitespace, and trailing garbage
$res = http($ng, POST => '/api/echo', body => '');
is($res->{status}, 400, 'an empty body is 400');
like($res->{body}, qr/Request body is required/, 'body required');
$res = http($ng, POST => '/api/echo', body => "  \n ");
is($res->{status}, 400, 'a body of whitespace is 400');
$res = http($ng, POST => '/api/echo', body => '{"a":1} x');
is($res->{status}, 400, 'trailing garbage is 400');

stop_nginx($ng);
done_testing();
