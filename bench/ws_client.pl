#!/usr/bin/env perl
# The client side of bench/ws.sh: USERS users registered through the API,
# one WebSocket each on GET /api/notifications/ws (t/lib/DefarmWs.pm),
# then
#   a. fan-out: ROUNDS transactions each notifying every user
#      (defarm_notify in one DO block, a COMMIT a round): notifications
#      delivered a second, from the first round's start to the last
#      received, and the delay of each from its round's start;
#   b. steady: RATE notifications a second for DURATION seconds, each to
#      one user in its own transaction: the delay from the notification's
#      making (clock_timestamp() in its data, just before its commit) to
#      its reception, p50 and p99;
# and the RSS of the node's workers before, with the sockets open, and at
# the end.  PostgreSQL is reached with psql (PGHOST... in the
# environment); the same machine's clock serves both ends.
#
#   ws_client.pl PORT MASTER_PID
use strict;
use warnings;

use FindBin ();
use lib "$FindBin::Bin/../t/lib";

use IO::Socket::INET ();
use JSON::PP ();
use POSIX ();
use Time::HiRes ();
use DefarmWs qw(ws_connect connect_many pump_many);

my ($port, $master) = @ARGV;
die "usage: $0 PORT MASTER_PID\n" unless $port && $master;

my $USERS = $ENV{USERS} // 1000;
my $ROUNDS = $ENV{ROUNDS} // 20;
my $RATE = $ENV{RATE} // 200;
my $DURATION = $ENV{DURATION} // 10;
my $WAIT = $ENV{WAIT} // 120;       # the bound of each wait, in seconds
my $run = $$;
my $json = JSON::PP->new->utf8->canonical;

$| = 1;
sub say_err { print STDERR @_, "\n" }

sub post_json {
    my ($path, $data) = @_;
    my $body = $json->encode($data);
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => 10)
        or die "connect: $!\n";
    print $s "POST $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        . "Content-Type: application/json\r\nContent-Length: "
        . length($body) . "\r\n\r\n$body";
    local $/;
    my $res = <$s> // '';
    my ($status) = $res =~ m{^HTTP/1\.\d (\d+)};
    my ($rest) = $res =~ /\r\n\r\n(.*)\z/s;
    die "POST $path: " . ($status // 'no answer') . " $res\n"
        unless ($status // 0) == 200;
    return $json->decode($rest);
}

sub psql {
    my ($sql) = @_;
    open my $fh, '-|', 'psql', '-X', '-qAt', '-v', 'ON_ERROR_STOP=1', '-c', $sql
        or die "psql: $!\n";
    local $/;
    my $out = <$fh> // '';
    close $fh or die "psql failed: $sql\n";
    chomp $out;
    return $out;
}

# psql in the background: -> its pid
sub psql_bg {
    my ($sql) = @_;
    my $pid = fork // die "fork: $!\n";
    if (!$pid) {
        open STDOUT, '>', '/dev/null';
        { no warnings 'exec'; exec 'psql', '-X', '-qAt', '-v', 'ON_ERROR_STOP=1', '-c', $sql; }
        POSIX::_exit(127);
    }
    return $pid;
}

# the resident memory of the node's workers, KiB
sub workers_rss {
    my $total = 0;
    for my $pid (split ' ', `pgrep -P $master`) {
        open my $fh, '<', "/proc/$pid/status" or next;
        while (<$fh>) { $total += $1 if /^VmRSS:\s+(\d+)/ }
    }
    return $total;
}

sub pct {
    my ($sorted, $p) = @_;
    return 0 unless @$sorted;
    my $i = int($p * @$sorted + 0.5) - 1;
    $i = 0 if $i < 0;
    $i = $#$sorted if $i > $#$sorted;
    return $sorted->[$i];
}

# ------------------------------------------------------------- the users

my $t = Time::HiRes::time();
my @users = map {
    my $name = "bws${run}_$_";
    my $r = post_json('/api/auth/register', { username => $name,
        password => 'Str0ng!pass', email => "$name\@example.com" });
    { id => $r->{user_id}, token => $r->{token} };
} 1 .. $USERS;
say_err(sprintf '%d users registered in %.1f s', $USERS, Time::HiRes::time() - $t);

my $rss0 = workers_rss();

# ----------------------------------------------------------- the sockets

$t = Time::HiRes::time();
my ($open, $refused) = connect_many($port,
    [ map { "/api/notifications/ws?token=$_->{token}" } @users ],
    timeout => $WAIT, batch => 200);
die scalar(@$refused) . " sockets refused: "
    . ($refused->[0]{status} // '') . ' ' . ($refused->[0]{error} // '')
    . ' ' . ($refused->[0]{body} // '') . "\n" if @$refused;

my %ready;
pump_many($open, sub { $ready{ $_[0]{index} }++ if $_[1]{type} eq 'unread_count' },
          $WAIT, until => sub { keys %ready == @$open });
die "only " . scalar(keys %ready) . " of $USERS sockets got unread_count\n"
    if keys %ready != @$open;
my $t_connect = Time::HiRes::time() - $t;
my $rss1 = workers_rss();

# what every measurement counts: notifications by round, lags, errors
my ($got, $lags, $missed) = (0, 0, 0);
my @delays;
my $last = 0;

sub on_msg {
    my ($ws, $m) = @_;
    my $type = $m->{type} // '';
    if ($type eq 'notification') {
        my $now = Time::HiRes::time();
        $got++;
        $last = $now;
        my $sent = $m->{data}{data}{sent};
        push @delays, 1000 * ($now - $sent) if defined $sent;
    } elsif ($type eq 'lag') {
        $lags++;
        $missed += $m->{missed_count} // 0;
    }
}

# ------------------------------------------------------------- a. fan-out

my $ids = "ARRAY(SELECT id FROM users WHERE username LIKE 'bws${run}\\_%')";
my $fan_total = $USERS * $ROUNDS;
my $start = psql("SELECT extract(epoch FROM clock_timestamp())") + 0;
my $pid = psql_bg("DO \$\$
DECLARE v_ids text[] := $ids;
BEGIN
    FOR i IN 1 .. $ROUNDS LOOP
        PERFORM defarm_notify(v_ids, 'Bench', 'fan-out', 'round ' || i,
            jsonb_build_object('round', i, 'sent',
                               extract(epoch FROM clock_timestamp())));
        COMMIT;
    END LOOP;
END \$\$");
pump_many($open, \&main::on_msg, $WAIT, until => sub { $got + $missed >= $fan_total });
waitpid $pid, 0;
my $committed = psql("SELECT extract(epoch FROM max(created_at)) FROM notifications
                      WHERE notification_type = 'Bench' AND title = 'fan-out'
                        AND user_id = ANY ($ids)") + 0;
my $fan_rate = $got / (($last - $start) || 1e-3);
my @fd = sort { $a <=> $b } @delays;
my %fan = (got => $got, lags => $lags, missed => $missed,
           commit_s => $committed - $start, total_s => $last - $start,
           p50 => pct(\@fd, 0.5), p99 => pct(\@fd, 0.99));
my $rss2 = workers_rss();

# ------------------------------------------------------------ b. steady

($got, $lags, $missed) = (0, 0, 0);
@delays = ();
my $count = $RATE * $DURATION;
$pid = psql_bg("DO \$\$
DECLARE v_ids text[] := $ids; v_t0 float8 := extract(epoch FROM clock_timestamp());
BEGIN
    FOR i IN 0 .. $count - 1 LOOP
        PERFORM pg_sleep(greatest(0, v_t0 + i / $RATE.0
                                  - extract(epoch FROM clock_timestamp())));
        PERFORM defarm_notify(ARRAY[v_ids[1 + i % array_length(v_ids, 1)]],
            'Bench', 'steady', 'n ' || i,
            jsonb_build_object('n', i, 'sent',
                               extract(epoch FROM clock_timestamp())));
        COMMIT;
    END LOOP;
END \$\$");
pump_many($open, \&main::on_msg, $DURATION + $WAIT,
          until => sub { $got + $missed >= $count });
waitpid $pid, 0;
my @sd = sort { $a <=> $b } @delays;
my $rss3 = workers_rss();

my $errors = grep { $_->{server_error} || $_->{eof} } @$open;
$_->close_socket for @$open;

# ---------------------------------------------------------------- report

printf "%-52s %s\n", 'measurement', 'value';
printf "%-52s %d in %.1f s\n", 'sockets connected (connected + unread_count)',
       scalar @$open, $t_connect;
printf "%-52s %.0f /s\n", "fan-out: $ROUNDS x $USERS notifications delivered",
       $fan_rate;
printf "%-52s %d of %d, %d lag messages (%d missed)\n", '  received',
       $fan{got}, $fan_total, $fan{lags}, $fan{missed};
printf "%-52s %.2f s to commit, %.2f s to the last received\n",
       '  from the first round\'s start', $fan{commit_s}, $fan{total_s};
printf "%-52s p50 %.1f ms, p99 %.1f ms\n", '  making to receiving',
       $fan{p50}, $fan{p99};
printf "%-52s p50 %.1f ms, p99 %.1f ms\n",
       "steady $RATE/s for ${DURATION}s: making to receiving",
       pct(\@sd, 0.5), pct(\@sd, 0.99);
printf "%-52s %d of %d, %d lag messages (%d missed)\n", '  received',
       $got, $count, $lags, $missed;
printf "%-52s %d KiB before, %d with the sockets, %d after fan-out,"
       . " %d at the end\n", 'worker RSS', $rss0, $rss1, $rss2, $rss3;
printf "%-52s %.1f KiB\n", '  per socket (with the sockets - before)',
       ($rss1 - $rss0) / (@$open || 1);
printf "%-52s %d\n", 'sockets closed or with a protocol error', $errors;

exit(($fan{got} + $fan{missed} == $fan_total && $got + $missed == $count
      && !$errors) ? 0 : 1);
