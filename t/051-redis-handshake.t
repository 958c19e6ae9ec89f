# The Redis link's setup (AUTH, SELECT, then PING or SUBSCRIBE) against a
# peer that misbehaves, played by a small fake Redis of this file: one that
# answers -LOADING (what Redis says while it reads its dataset after a
# restart) and one that accepts and then never answers.  Either way nginx
# drops that connection and tries again with its backoff, instead of
# keeping a link that is never up for as long as the TCP connection lives;
# requests are served meanwhile, and once the peer behaves (the fake
# relays to a real Redis) the link comes up by itself.

use strict;
use warnings;
use Test::More;
use IO::Select ();
use IO::Socket::INET ();
use POSIX ();
use Time::HiRes ();
use DefarmTest;

my $T = valgrind() ? 60 : 10;
my $connect_timeout = valgrind() ? '2s' : '300ms';   # a slow nginx there
my $dir = "$ENV{TEST_NGINX_SERVROOT}-redis-handshake";
my $rport = redis_start($dir);
ok($rport, "a real Redis of our own on port $rport");

my %Fakes;              # pid => 1, killed at the end whatever happens

END {
    for my $pid (keys %Fakes) {
        kill 'KILL', $pid;
        waitpid $pid, 0;
    }
}

# one command of a RESP buffer (hiredis sends arrays of bulk strings):
# its name, taken off the buffer; undef until a whole one is there
sub next_command {
    my ($buf) = @_;
    return undef unless $$buf =~ /\A\*(\d+)\r\n/;
    my ($n, $pos, @args) = ($1, length $&);
    for (1 .. $n) {
        return undef unless substr($$buf, $pos) =~ /\A\$(\d+)\r\n/;
        my $len = $1;
        $pos += length $&;
        return undef if length $$buf < $pos + $len + 2;
        push @args, substr $$buf, $pos, $len;
        $pos += $len + 2;
    }
    substr $$buf, 0, $pos, '';
    return uc($args[0] // '');
}

# fake_redis(mode => 'loading' | 'stall', log => $file) -> ($pid, $port):
# a forked child on a port of its own.  Each connection it accepts
# answers every command with -LOADING, or reads and never answers, and
# stays open until nginx closes it; after SIGUSR1, the connections it
# accepts are relayed to the real Redis instead.  Every command it gets
# (and every relayed connection) is a line of $file: "<n> <mode> <NAME>".
# It exits by itself after a minute.
sub fake_redis {
    my (%o) = @_;
    my $srv = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                    Listen => 16, ReuseAddr => 1,
                                    Proto => 'tcp')
        or die "fake Redis: cannot listen: $@\n";
    my $port = $srv->sockport;
    unlink $o{log};

    my $pid = fork // die "fork: $!\n";
    if ($pid) {
        close $srv;
        $Fakes{$pid} = 1;
        return ($pid, $port);
    }

    # the child: no END blocks, nothing but this loop
    my $relay = 0;
    $SIG{USR1} = sub { $relay = 1 };
    $SIG{PIPE} = 'IGNORE';

    my $note = sub {
        open my $fh, '>>', $o{log} or return;
        print $fh "@_\n";
        close $fh;
    };

    my $sel = IO::Select->new($srv);
    my (%conn, $n);
    my $drop = sub {
        my ($x) = @_;
        for my $s (grep { defined } $x->{c}, $x->{up}) {
            delete $conn{fileno $s};
            $sel->remove($s);
            close $s;
        }
    };

    my $deadline = time + 60;
    while (time < $deadline) {
        for my $fh ($sel->can_read(0.05)) {
            if ($fh == $srv) {
                my $c = $srv->accept or next;
                my $x = { n => ++$n, c => $c, buf => '',
                          mode => $relay ? 'relay' : $o{mode} };
                $conn{fileno $c} = $x;
                $sel->add($c);
                if ($relay) {
                    $x->{up} = IO::Socket::INET->new(
                        PeerAddr => '127.0.0.1', PeerPort => $o{relay},
                        Proto => 'tcp') or do { $drop->($x); next };
                    $conn{fileno $x->{up}} = $x;
                    $sel->add($x->{up});
                    $note->($x->{n}, 'relay', '-');
                }
                next;
            }

            my $x = $conn{fileno $fh} or next;
            my $got = sysread $fh, my $data, 65536;
            next if !defined $got && $!{EINTR};
            if (!$got) {
                $drop->($x);
                next;
            }

            if ($x->{mode} eq 'relay') {
                my $to = $fh == $x->{c} ? $x->{up} : $x->{c};
                syswrite $to, $data;
                next;
            }

            $x->{buf} .= $data;
            while (defined(my $cmd = next_command(\$x->{buf}))) {
                $note->($x->{n}, $x->{mode}, $cmd);
                syswrite $x->{c}, "-LOADING Redis is loading the dataset"
                                  . " in memory\r\n"
                    if $x->{mode} eq 'loading';
            }
        }
    }

    POSIX::_exit(0);
}

sub fake_stop {
    my ($pid) = @_;
    kill 'KILL', $pid;
    waitpid $pid, 0;
    delete $Fakes{$pid};
}

# the connections the fake saw whose first command was $cmd, in $mode
sub fake_connections {
    my ($log, $mode, $cmd) = @_;
    my %first;
    open my $fh, '<', $log or return 0;
    while (<$fh>) {
        my ($n, $m, $c) = split;
        $first{$n} //= [$m, $c];
    }
    return scalar grep { $_->[0] eq $mode && (!$cmd || $_->[1] eq $cmd) }
                  values %first;
}

sub node {
    my ($name, $port) = @_;
    return start_nginx(
        name   => $name,
        http   => db_config(size => 1) . "
    defarm_cache zone=$name:1m ttl=1h;
    defarm_redis 127.0.0.1:$port timeout=50ms
                 connect_timeout=$connect_timeout retry_max=200ms;",
        server => '
        location / {
            defarm_api on;
        }');
}

sub redis_health { http($_[0], GET => '/health/redis') }

# 1. -LOADING: the command link's PING and the subscriber's SUBSCRIBE are
# refused; each connection is dropped and made again

my $log = "$dir/fake-loading.log";
my ($fake, $fport) = fake_redis(mode => 'loading', relay => $rport,
                                log => $log);
my $ng = node('redis-loading', $fport);

ok(wait_until(sub { fake_connections($log, 'loading', 'PING') >= 3 },
              $T, 'PING on new connections'),
   '-LOADING to PING: nginx drops the connection and connects again')
    or diag("the fake saw:\n" . (eval { DefarmTest::slurp($log) } // ''));
ok(wait_until(sub { fake_connections($log, 'loading', 'SUBSCRIBE') >= 2 },
              $T, 'SUBSCRIBE on new connections'),
   'and so does the subscriber after -LOADING to SUBSCRIBE');
like($ng->log,
     qr/redis 127\.0\.0\.1:$fport: PING failed: LOADING Redis is loading/,
     'the error log says why');

my $res = redis_health($ng);
is($res->{status}, 503, 'while Redis loads, /health/redis is 503');
like($res->{body}, qr/"disconnected"/, 'disconnected');
is(http($ng, GET => '/health')->{status}, 200, 'requests are served');
ok((metric($ng, 'defarm_redis_reconnects_total') // 0) >= 2,
   'reconnects counted');

kill 'USR1', $fake;         # the dataset is loaded

ok(wait_until(sub { redis_health($ng)->{status} == 200 }, $T, 'up'),
   'once Redis answers, the link comes up by itself');
like(redis_health($ng)->{body}, qr/"connected"/, '/health/redis: connected');
ok(wait_until(sub { $ng->log =~ /connected \(subscriber\)/ }, $T,
              'subscriber up'), 'the subscriber too');
ok(fake_connections($log, 'relay') >= 2,
   'both on connections relayed to the real Redis');

# one line per failed attempt: the disconnect that follows is not logged
# again (the link is serial, so every refused PING was seen by now; one
# may have timed out instead on a slow machine)
my $failed = () = $ng->log =~ /PING failed: LOADING/g;
my $refused = fake_connections($log, 'loading', 'PING');
ok($failed >= 1 && $failed <= $refused,
   'at most one "PING failed" per refused connection')
    or diag("$failed lines for $refused connections");
unlike($ng->log, qr/connection lost$/m,
       'and no "connection lost" after it');

unlike($ng->log, qr/\[(alert|crit|emerg)\]/, 'no alert');
stop_nginx($ng);
fake_stop($fake);

# 2. a peer that accepts and never answers: the handshake has a deadline

$log = "$dir/fake-stall.log";
($fake, $fport) = fake_redis(mode => 'stall', relay => $rport, log => $log);
$ng = node('redis-stall', $fport);

ok(wait_until(sub { $ng->log =~ /127\.0\.0\.1:$fport: handshake timed out/ },
              $T, 'handshake timeout'),
   'no answer to PING: the handshake times out')
    or diag("the fake saw:\n" . (eval { DefarmTest::slurp($log) } // ''));
ok(wait_until(sub { fake_connections($log, 'stall', 'PING') >= 2 },
              $T, 'a new command connection'),
   'and nginx connects again');
ok(wait_until(sub { fake_connections($log, 'stall', 'SUBSCRIBE') >= 2 },
              $T, 'a new subscriber connection'),
   'so does the subscriber');
is(redis_health($ng)->{status}, 503, 'meanwhile /health/redis is 503');
is(http($ng, GET => '/health')->{status}, 200, 'and requests are served');

kill 'USR1', $fake;

ok(wait_until(sub { redis_health($ng)->{status} == 200 }, $T, 'up'),
   'once Redis answers, the link comes up by itself');
ok(wait_until(sub { $ng->log =~ /connected \(subscriber\)/ }, $T,
              'subscriber up'), 'the subscriber too');

# a link that is up is not held to the handshake's deadline
my $seen = fake_connections($log, 'relay');
Time::HiRes::sleep(1);
is(redis_health($ng)->{status}, 200, 'still connected a while later');
is(fake_connections($log, 'relay'), $seen, 'on the same connections');

unlike($ng->log, qr/\[(alert|crit|emerg)\]/, 'no alert');
stop_nginx($ng);
fake_stop($fake);

redis_stop($dir);

done_testing();
