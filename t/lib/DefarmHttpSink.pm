package DefarmHttpSink;

# A local HTTP receiver for the tests: http_sink($dir, %opt) forks one on
# a free loopback port and returns {port, pid}; each request it gets is
# written to $dir/req-N.json as {time, method, path, headers (lowercased
# names), body}.  fail_first => N answers the first N requests 500,
# status => S answers every request S (200 by default).  sink_requests($dir)
# returns them, in order.  Written for this project; it speaks just enough
# HTTP/1.1 (Content-Length bodies, one request per connection).

use strict;
use warnings;
use IO::Socket::INET;
use JSON::PP ();
use POSIX ();
use Time::HiRes ();
use Exporter 'import';

our @EXPORT = qw(http_sink http_sink_stop sink_requests);

sub http_sink {
    my ($dir, %opt) = @_;
    mkdir $dir;
    unlink glob "$dir/req-*.json";
    my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                       Listen => 64, ReuseAddr => 1, Proto => 'tcp')
        or die "http_sink: $!";
    my $port = $listen->sockport;
    my $pid = fork // die "fork: $!";
    if ($pid) {
        close $listen;
        return { port => $port, pid => $pid };
    }

    my $n = 0;
    while (my $c = $listen->accept) {
        my $head = '';
        while (defined(my $line = <$c>)) {
            $head .= $line;
            last if $line eq "\r\n";
        }
        my ($method, $path) = $head =~ m{^(\S+) (\S+) HTTP/1\.[01]\r\n};
        my %h;
        $h{lc $1} = $2 while $head =~ /^([^:\r\n]+):\s*(.*?)\r\n/mg;
        my $body = '';
        read $c, $body, $h{'content-length'} // 0;
        $n++;
        my $rec = { time => Time::HiRes::time(), method => $method, path => $path,
                    headers => \%h, body => $body };
        open my $fh, '>', "$dir/req-$n.tmp" or die $!;
        print $fh JSON::PP->new->utf8->canonical->encode($rec);
        close $fh;
        rename "$dir/req-$n.tmp", "$dir/req-$n.json";
        my $status = $n <= ($opt{fail_first} // 0) ? 500 : ($opt{status} // 200);
        print $c "HTTP/1.1 $status X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
        close $c;
    }
    POSIX::_exit(0);
}

sub http_sink_stop {
    my ($sink) = @_;
    kill 'KILL', $sink->{pid};
    waitpid $sink->{pid}, 0;
}

sub sink_requests {
    my ($dir) = @_;
    my @r;
    for my $f (sort { ($a =~ /(\d+)\.json$/)[0] <=> ($b =~ /(\d+)\.json$/)[0] } glob "$dir/req-*.json") {
        open my $fh, '<', $f or next;
        local $/;
        push @r, JSON::PP->new->utf8->decode(scalar <$fh>);
    }
    return @r;
}

1;
