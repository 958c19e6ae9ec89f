# The trace_id of every error body equals the X-Request-Id header of the
# same response.  The block format cannot compare a header with the body,
# so this file drives its own nginx with the same environment variables.

use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use File::Path qw(make_path remove_tree);
use Cwd qw(abs_path);
use POSIX qw(WNOHANG);

my $module = $ENV{TEST_NGINX_LOAD_MODULES}
    or plan skip_all => 'TEST_NGINX_LOAD_MODULES is not set';
my $nginx = $ENV{TEST_NGINX_BINARY} || 'nginx';
my $port = ($ENV{TEST_NGINX_SERVER_PORT} || 1984) + 1;
my $root = abs_path('t') . '/servroot-trace';

remove_tree($root);
make_path("$root/conf", "$root/logs", "$root/html");

open my $fh, '>', "$root/conf/nginx.conf" or die $!;
print $fh <<"_EOC_";
load_module $module;
daemon on;
master_process off;
worker_processes 1;
error_log $root/logs/error.log warn;
pid $root/logs/nginx.pid;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $root/body;
    client_max_body_size 100;
    server {
        listen 127.0.0.1:$port;
        error_page 400 404 405 413 500 \@defarm_error;
        location / { defarm_api on; defarm_echo on; }
        location \@defarm_error { defarm_errors on; }
    }
}
_EOC_
close $fh;

system($nginx, '-p', "$root/", '-c', "$root/conf/nginx.conf") == 0
    or BAIL_OUT("nginx did not start");

END {
    if (open my $p, '<', "$root/logs/nginx.pid") {
        my $pid = <$p>;
        chomp $pid;
        kill 'QUIT', $pid if $pid;
    }
}

sub request {
    my ($raw) = @_;
    my $sock;
    for (1 .. 50) {
        $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $port);
        last if $sock;
        select(undef, undef, undef, 0.1);
    }
    die "cannot connect: $!" unless $sock;
    print $sock $raw;
    local $/;
    my $resp = <$sock>;
    close $sock;
    my ($head, $body) = split /\r\n\r\n/, $resp, 2;
    my ($status) = $head =~ m{^HTTP/1\.\d (\d+)};
    my ($id) = $head =~ m{^X-Request-Id: (\S+)\r?$}mi;
    return ($status, $id, $body);
}

my @cases = (
    [404, "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"],
    [405, "PUT /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
          . "Content-Length: 0\r\n\r\n"],
    [400, "POST /api/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
          . "Content-Type: application/json\r\nContent-Length: 3\r\n\r\n{x}"],
    [413, "POST /api/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
          . "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
          . ("1" x 200)],
);

my %seen;

for my $c (@cases) {
    my ($want, $raw) = @$c;
    my ($status, $id, $body) = request($raw);

    is($status, $want, "status $want");
    like($id // '', qr/^[0-9a-f]{32}$/, "$want: X-Request-Id present");

    my ($trace) = ($body // '') =~ /"trace_id":"([^"]*)"/;
    is($trace, $id, "$want: body trace_id equals X-Request-Id");

    ok(!$seen{$id // ''}++, "$want: request id is fresh");

    my $log = do {
        local $/;
        open my $l, '<', "$root/logs/error.log" or die $!;
        <$l>;
    };
    like($log, qr/defarm_error .*status=$want .*trace_id=\Q$id\E /,
         "$want: the log line carries the same trace_id");
}

done_testing();
