# Chaos: hostile input.  10 MB bodies (over client_max_body_size, and
# under a 16 MB one: JSON the parser must refuse or hold), 100,000-deep
# JSON, invalid UTF-8 inside JSON strings, 100,000 keys, huge headers, and
# 1,000 idle connections.  Each is answered with a JSON 4xx (never a 5xx,
# never a crash), requests made meanwhile succeed, and the worker's RSS
# returns near its baseline (figures reported; the bound is generous).
#
# Only with TEST_CHAOS=1 ("make chaos").

use strict;
use warnings;
use Test::More;
BEGIN {
    plan(skip_all => 'a chaos test: run it with make chaos')
        unless $ENV{TEST_CHAOS};
}
use IO::Socket::INET ();
use JSON::PP ();
use DefarmTest;
use DefarmChaos;

my $T = valgrind() ? 120 : 30;
my $json = JSON::PP->new->utf8->canonical;
my (undef, $secret_file) = jwt_secret();

my $ng = start_nginx(
    name        => 'chaos-input',
    connections => 2048,
    http   => db_config(size => 4, queue => 64) . "
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;
    client_header_timeout 3s;",
    server => '
        error_page 400 404 405 408 413 414 494 500 502 503 504 @defarm_error;
        location @defarm_error { defarm_errors on; }
        location / { defarm_api on; }
        location /big/ {
            client_max_body_size 16m;
            rewrite ^/big(/.*)$ $1 break;
            defarm_api on;
        }');

my $u = api_user($ng, "chaos_input_$$");
ok($u->{token}, 'a user');
my %auth = ('Content-Type' => 'application/json',
            Authorization => "Bearer $u->{token}");
my $uuid = '0b6f8f9e-1d2c-4c3b-9a8e-7f6d5c4b3a21';

api_as($ng, $u, GET => '/api/items?limit=5') for 1 .. 50;      # warm up
my $baseline = rss_kb($ng->{pid});
my $mark = $ng->log_mark;
my @rows;

sub item_json {
    my ($data) = @_;
    return '{"identifiers":[{"key":"k","value":"v-' . int(rand 1e9)
         . '"}],"source_entry":"' . $uuid . '","enriched_data":' . $data . '}';
}

# send each body $n times (5 at once), every answer a JSON error of one
# of @ok statuses; then a normal request succeeds
sub hostile {
    my ($tag, $path, $body, $n, @ok) = @_;
    my %ok = map { $_ => 1 } @ok;
    my (%status, $bad, $hung);
    my @bg;
    for my $i (1 .. $n) {
        push @bg, http_bg($ng, POST => $path, headers => \%auth,
                          body => ref $body ? $body->() : $body,
                          timeout => 30);
        next if @bg < 5 && $i < $n;
        for my $res (map { http_wait($_) } @bg) {
            my $st = $res->{status} // 'none';
            $status{$st}++;
            $hung++ if ($res->{error} // '') =~ /no answer/;
            my $b = json_body($res);
            unless ($ok{$st} && $b->{error_kind}) {
                $bad++;
                diag("$tag: $st " . substr($res->{body} // '', 0, 200)
                     . ' ' . ($res->{error} // ''));
            }
        }
        @bg = ();
    }
    ok(!$bad, "$tag: every answer a JSON " . join('/', @ok));
    is(api_as($ng, $u, GET => '/api/items?limit=1')->{status}, 200,
       "$tag: a normal request afterwards succeeds");
    my $rss = rss_kb($ng->{pid});
    push @rows, { fault => $tag, requests => $n, status => \%status,
                  hung => $hung // 0, crashes => 0, lost => '-',
                  rss => "$baseline -> $rss" };
}

my $ten = 10 * 1024 * 1024;

hostile('10 MB body, 1 MB limit', '/api/items',
        item_json('{"x":"' . ('a' x $ten) . '"}'), 10, 413);
hostile('10 MB JSON string, 16m', '/big/api/items',
        item_json('{"x":"' . ('a' x $ten) . '"}'), 10, 400, 413);
hostile('10 MB JSON array, 16m', '/big/api/items',
        item_json('[' . join(',', (1) x ($ten / 2)) . ']'), 10, 400, 413);
hostile('10 MB not JSON, 16m', '/big/api/items', '{' . ('x' x $ten), 10,
        400, 413);
hostile('100k-deep arrays', '/big/api/items',
        item_json(('[' x 100_000) . (']' x 100_000)), 20, 400);
hostile('100k-deep objects', '/big/api/items',
        item_json(('{"a":' x 100_000) . '1' . ('}' x 100_000)), 20, 400);
hostile('100k keys', '/big/api/items',
        item_json('{' . join(',', map { "\"k$_\":1" } 1 .. 100_000) . '}'),
        20, 400, 413);

my @utf8 = ("\xff\xfe", "\xc0\xaf", "\xed\xa0\x80", "\xe2\x82", "\xf8\x88\x80\x80\x80",
            "ok\x80", "\xf4\x90\x80\x80");
my $k = 0;
hostile('invalid UTF-8 in strings', '/api/items', sub {
    my $bytes = $utf8[ $k++ % @utf8 ];
    return '{"identifiers":[{"key":"k","value":"' . $bytes . '"}],'
         . '"source_entry":"' . $uuid . '","enriched_data":{"'
         . $bytes . '":"' . $bytes . '"}}';
}, 35, 400);

# huge headers: one of 100 KB, and 1,000 of 1 KB

for my $case (['one 100 KB header', { 'X-Big' => 'h' x 100_000 }],
              ['1,000 headers of 1 KB',
               { map { ("X-H$_" => 'h' x 1000) } 1 .. 1000 }])
{
    my ($tag, $hdr) = @$case;
    my (%status, $bad);
    for (1 .. 10) {
        my $res = http($ng, GET => '/api/items?limit=1', timeout => 30,
                       headers => { %$hdr, Authorization => "Bearer $u->{token}" });
        my $st = $res->{status} // 'none';
        $status{$st}++;
        $bad++ unless $st =~ /^(400|431|494)$/ && json_body($res)->{error_kind};
    }
    ok(!$bad, "$tag: every answer a JSON 400/494") or diag(explain \%status);
    push @rows, { fault => $tag, requests => 10, status => \%status,
                  hung => 0, crashes => 0, lost => '-',
                  rss => "$baseline -> " . rss_kb($ng->{pid}) };
}

# 1,000 idle connections (half of them with half a request line): the
# service answers meanwhile, and client_header_timeout closes them all

{
    my $tag = '1,000 idle connections';
    my @idle;
    for my $i (1 .. 1000) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $ng->{port}, Proto => 'tcp')
            or last;
        syswrite $s, "GET /api/ite" if $i % 2;
        push @idle, $s;
    }
    is(scalar @idle, 1000, "$tag: opened");
    my $during = rss_kb($ng->{pid});
    is(api_as($ng, $u, GET => '/api/items?limit=1')->{status}, 200,
       "$tag: a request meanwhile succeeds");
    is(http($ng, GET => '/health')->{status}, 200, "$tag: /health too");

    my $closed = 0;
    ok(wait_until(sub {
        for my $s (@idle) {
            next unless $s;
            my $rin = '';
            vec($rin, fileno $s, 1) = 1;
            next unless select($rin, undef, undef, 0) > 0;
            my $n = sysread $s, my $buf, 4096;
            if (!$n) { close $s; $s = undef; $closed++ }
        }
        $closed == 1000 }, $T, 'idle connections closed'),
       "$tag: nginx closed them all at client_header_timeout ($closed)");
    push @rows, { fault => $tag, requests => 1000,
                  status => { closed => $closed }, hung => 0, crashes => 0,
                  lost => '-',
                  rss => "$baseline -> $during (open) -> "
                         . rss_kb($ng->{pid}) };
}

my @crash = crash_lines($ng, $mark);
ok(DefarmTest::alive($ng->{pid}), 'nginx is alive');
is(scalar @crash, 0, 'no crash or alert in error.log')
    or diag(join "\n", @crash[0 .. ($#crash < 9 ? $#crash : 9)]);
my $rss = rss_kb($ng->{pid});
SKIP: {
    skip 'RSS is not nginx\'s alone here', 1 unless rss_is_nginx();
    cmp_ok($rss, '<', $baseline + 64 * 1024,
           "the worker's RSS within 64 MB of its baseline ($baseline -> $rss kB)");
}
$_->{crashes} = scalar @crash for @rows;

fault_table(@rows);

stop_nginx($ng);
done_testing();
