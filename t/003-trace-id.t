# The trace_id of every error body equals the X-Request-Id header of the
# same response, and the defarm_error line in error.log carries it too.
# The block format cannot compare a header with the body, so this file
# drives its own nginx through t/lib/DefarmTest.pm.

use strict;
use warnings;
use Test::More;
use DefarmTest;

my $ng = start_nginx(
    name   => 'trace',
    http   => 'client_max_body_size 100;',
    server => <<'_EOC_');
        error_page 400 404 405 413 500 @defarm_error;
        location / { defarm_api on; defarm_echo on; }
        location @defarm_error { defarm_errors on; }
_EOC_

# [expected status, method, path, http() options]
my @cases = (
    [404, GET  => '/nope'],
    [405, PUT  => '/health', headers => { 'Content-Length' => 0 }],
    [400, POST => '/api/echo', body => '{x}'],
    [413, POST => '/api/echo', body => '1' x 200],
);

my %seen;

for my $c (@cases) {
    my ($want, $method, $path, %opt) = @$c;
    my $res = http($ng, $method, $path, %opt);
    my $id = $res->{headers}{'x-request-id'};

    is($res->{status}, $want, "status $want")
        or diag($res->{error} // $res->{body});
    like($id // '', qr/^[0-9a-f]{32}$/, "$want: X-Request-Id present");

    my ($trace) = $res->{body} =~ /"trace_id":"([^"]*)"/;
    is($trace, $id, "$want: body trace_id equals X-Request-Id");

    ok(!$seen{$id // ''}++, "$want: request id is fresh");

    my $quoted = quotemeta($id // '-');
    like($ng->log, qr/defarm_error .*status=$want .*trace_id=$quoted /,
         "$want: the log line carries the same trace_id");
}

stop_nginx($ng);

done_testing();
