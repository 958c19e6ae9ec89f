# Webhooks (post-actions, sql/033): a push into a circuit with webhooks is
# delivered to a local receiver, signed (X-Defarm-Signature: HMAC-SHA256
# of the body with the webhook's secret), with its custom headers and its
# authentication; a receiver failing twice gets three attempts with
# growing delays and the delivery ends Delivered; one always failing ends
# Failed after max_retries; a loopback destination is refused by default;
# credentials and secrets are never answered nor logged, and stored
# encrypted; the routes refuse bad input and the wrong callers.

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use Digest::SHA qw(hmac_sha256_hex);
use MIME::Base64 ();
use DefarmTest;
use DefarmHttpSink;

my (undef, $secret_file) = jwt_secret();
my $dir = "$ENV{TEST_NGINX_SERVROOT}-hooksink";
mkdir $dir;
my $keyfile = "$dir/secret.key";
open my $kf, '>', $keyfile or die $!;
print $kf join('', map { ('a' .. 'z', 0 .. 9)[rand 36] } 1 .. 48), "\n";
close $kf;

sub node {
    my ($name, $extra, $jobs) = @_;
    $jobs //= 'defarm_jobs interval=200ms lease=5s;';
    return start_nginx(
        name   => $name,
        http   => db_config(size => 4) . "
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;
    $jobs
    $extra",
        server => '
        location / {
            defarm_api on;
        }');
}

my $ng = node('hooks', "defarm_secret_key file=$keyfile;\n    defarm_webhooks_allow_private on;");
sub body { json_body(@_) }
sub as { api_as($ng, @_) }
my $uuid = '0b6f8f9e-1d2c-4c3b-9a8e-7f6d5c4b3a21';
my ($owner, $member, $other) = map { api_user($ng, "t091_${_}_$$") } qw(owner member other);

sub circuit {
    my $c = body(as($owner, POST => '/api/circuits', { name => "hooks $_[0]" }))->{circuit_id};
    as($owner, POST => "/api/circuits/$c/members", { member_id => $member->{id}, role => 'member' });
    return $c;
}
sub item {
    return body(as($owner, POST => '/api/items', { identifiers => [ { key => 'lot', value => "$_[0]-$$" } ],
                                                  source_entry => $uuid }))->{dfid};
}
sub deliveries { body(as($owner, GET => "/api/circuits/$_[0]/post-actions/deliveries"))->{data} // [] }
sub hooks { "/api/circuits/$_[0]/post-actions/webhooks" . ($_[1] // '') }

# ------------------------------------------------------------ delivered

my $sink = http_sink($dir);
my $c = circuit('a');
my $res = as($owner, POST => hooks($c), { name => 'ERP', url => "http://127.0.0.1:$sink->{port}/hook",
                                          headers => { 'X-Custom' => 'yes' }, auth_type => 'BearerToken',
                                          auth_credentials => "tok-$$" });
is($res->{status}, 201, 'a webhook: 201');
my $hook = body($res)->{data} // {};
my $secret = $hook->{signing_secret} // '';
like($secret, qr/^whsec_[0-9a-f]{64}$/, '... its signing secret, shown once');
ok(!exists $hook->{auth_credentials}, '... the credentials are not answered');
is($hook->{has_auth_credentials}, JSON::PP::true, '... only that there are some');
my $got = body(as($owner, GET => hooks($c, "/$hook->{id}")))->{data} // {};
ok(!exists $got->{signing_secret} && !exists $got->{auth_credentials}, 'GET: neither secret nor credentials');
unlike(as($owner, GET => "/api/circuits/$c/post-actions")->{body}, qr/tok-$$|\Q$secret\E/,
       'the settings: neither');
is(sql("SELECT count(*) FROM circuit_webhooks WHERE position('tok-$$' in encode(auth_credentials, 'escape')) > 0 "
       . "OR position('$secret' in encode(secret, 'escape')) > 0"), 0, 'stored encrypted');

is(as($owner, PUT => "/api/circuits/$c/post-actions", { enabled => JSON::PP::true,
                                                        trigger_events => ['item_pushed'] })->{status},
   200, 'post-actions enabled for item_pushed');
my $d = item('a');
is(as($owner, POST => "/api/circuits/$c/push/$d", {})->{status}, 200, 'a push');
ok(wait_until(sub { sink_requests($dir) >= 1 }, 10), 'the receiver got a delivery');
my ($rq) = sink_requests($dir);
is($rq->{method}, 'POST', '... POST');
is($rq->{path}, '/hook', '... to its path');
is($rq->{headers}{authorization}, "Bearer tok-$$", '... with its authentication');
is($rq->{headers}{'x-custom'}, 'yes', '... its custom header');
is($rq->{headers}{'content-type'}, 'application/json', '... JSON');
is($rq->{headers}{'x-defarm-signature'}, 'sha256=' . hmac_sha256_hex($rq->{body}, $secret),
   '... signed: HMAC-SHA256 of the body with the secret');
my $event = eval { JSON::PP->new->decode($rq->{body}) } // {};
is($event->{event_type}, 'item_pushed', '... item_pushed');
is($event->{item}{dfid}, $d, '... the item');
is($event->{circuit_id}, $c, '... the circuit');
is($rq->{headers}{'x-defarm-event'}, 'item_pushed', '... X-Defarm-Event');
ok(wait_until(sub { (deliveries($c)->[0]{status} // '') eq 'Delivered' }, 10), 'the delivery: Delivered');
is(deliveries($c)->[0]{attempts}, 1, '... in one attempt');
is(deliveries($c)->[0]{response_status}, 200, '... the answer kept');
is($rq->{headers}{'x-defarm-delivery'}, deliveries($c)->[0]{delivery_id}, '... X-Defarm-Delivery names it');
is(sql("SELECT count(*) FROM jobs WHERE kind = 'webhook' AND payload::text LIKE '%tok-$$%'"), 0,
   'the job never holds the credentials in clear');

# the test route: a real delivery
is(as($owner, POST => hooks($c, "/$hook->{id}/test"), {})->{status}, 202, 'test delivery: 202');
ok(wait_until(sub { sink_requests($dir) >= 2 }, 10), '... delivered');
is((eval { JSON::PP->new->decode((sink_requests($dir))[1]{body}) } // {})->{event_type}, 'test', '... a test event');
is(as($owner, PUT => hooks($c, "/$hook->{id}"), { auth_type => 'BasicAuth', auth_credentials => "u:pw-$$" })->{status},
   200, 'the webhook now authenticates with BasicAuth');
as($owner, POST => hooks($c, "/$hook->{id}/test"), {});
ok(wait_until(sub { sink_requests($dir) >= 3 }, 10), '... delivered');
is((sink_requests($dir))[2]{headers}{authorization}, 'Basic ' . MIME::Base64::encode_base64("u:pw-$$", ''),
   '... with Authorization: Basic of user:password');
http_sink_stop($sink);

# ------------------------------------------ failing twice, then accepted

$sink = http_sink($dir, fail_first => 2);
my $c2 = circuit('b');
$res = as($owner, POST => hooks($c2), { name => 'flaky', url => "http://127.0.0.1:$sink->{port}/x" });
is($res->{status}, 201, 'a webhook on a flaky receiver');
as($owner, PUT => "/api/circuits/$c2/post-actions", { enabled => JSON::PP::true });
as($owner, POST => "/api/circuits/$c2/push/" . item('b'), {});
ok(wait_until(sub { (deliveries($c2)->[0]{status} // '') eq 'Delivered' }, 20), 'Delivered in the end');
my @r = sink_requests($dir);
is(scalar(@r), 3, '... after three attempts');
ok(@r == 3 && $r[2]{time} - $r[1]{time} > $r[1]{time} - $r[0]{time}, '... with growing delays')
    or diag(join ' ', map { $_->{time} } @r);
is(deliveries($c2)->[0]{attempts}, 3, '... three attempts counted');
http_sink_stop($sink);

# ------------------------------------------------------ always failing

$sink = http_sink($dir, status => 503);
my $c3 = circuit('c');
my $h3 = body(as($owner, POST => hooks($c3), { name => 'down', url => "http://127.0.0.1:$sink->{port}/" }))->{data};
sql("UPDATE circuit_webhooks SET max_retries = 2, initial_delay_ms = 100 WHERE webhook_id = '$h3->{id}'");
as($owner, PUT => "/api/circuits/$c3/post-actions", { enabled => JSON::PP::true });
as($owner, POST => "/api/circuits/$c3/push/" . item('c'), {});
ok(wait_until(sub { (deliveries($c3)->[0]{status} // '') eq 'Failed' }, 20), 'always 503: Failed');
is(deliveries($c3)->[0]{attempts}, 3, '... after max_retries (2) + 1 attempts');
like(deliveries($c3)->[0]{last_error} // '', qr/503/, '... the last error says why');
is(scalar(sink_requests($dir)), 3, '... three requests');
http_sink_stop($sink);

# ------------------------------- item_tokenized and item_published

$sink = http_sink($dir);
my $ce = circuit('e');
as($owner, POST => hooks($ce), { name => 'all', url => "http://127.0.0.1:$sink->{port}/all" });
is(as($owner, PUT => "/api/circuits/$ce/post-actions",
      { enabled => JSON::PP::true,
        trigger_events => [qw(item_pushed item_tokenized item_published)] })->{status}, 200,
   'post-actions for pushes, tokenizations and publications');
my $lid = body(as($owner, POST => '/api/items/local',
                  { identifiers => [ { key => 'lot', value => "L-$$" } ] }))->{data}{local_id};
my $tok = body(as($owner, POST => "/api/circuits/$ce/push-local", { local_id => $lid }))->{data} // {};
is($tok->{status}, 'NewItemCreated', 'a local item tokenized into the circuit');
ok(wait_until(sub { sink_requests($dir) >= 1 }, 10), '... delivered');
my $ev = eval { JSON::PP->new->decode((sink_requests($dir))[0]{body}) } // {};
is($ev->{event_type}, 'item_tokenized', '... as item_tokenized');
is($ev->{item}{dfid}, $tok->{dfid}, '... the new DFID');
is($ev->{item}{pushed_by}, $owner->{id}, '... pushed by the owner');
is(as($owner, PUT => "/api/circuits/$ce/public-settings",
      { public_settings => { access_mode => 'public', published_items => [ $tok->{dfid} ] } })->{status}, 200,
   'the item published on the public page');
ok(wait_until(sub { sink_requests($dir) >= 2 }, 10), '... delivered');
$ev = eval { JSON::PP->new->decode((sink_requests($dir))[1]{body}) } // {};
is($ev->{event_type}, 'item_published', '... as item_published');
is($ev->{item}{dfid}, $tok->{dfid}, '... that item');
as($owner, PUT => "/api/circuits/$ce/public-settings",
   { public_settings => { access_mode => 'public', published_items => [ $tok->{dfid} ],
                          auto_publish_pushed_items => JSON::PP::true } });
my $d5 = item('e');
is(as($owner, POST => "/api/circuits/$ce/push/$d5", {})->{status}, 200, 'a push auto-published');
ok(wait_until(sub { sink_requests($dir) >= 4 }, 10), '... two deliveries');
my %kinds = map { ((eval { JSON::PP->new->decode($_->{body}) } // {})->{event_type} // '?') => 1 }
            (sink_requests($dir))[2, 3];
is_deeply([ sort keys %kinds ], [qw(item_published item_pushed)], '... item_pushed and item_published');
sleep 1;
is(scalar(sink_requests($dir)), 4, 'settings saved again: no publication twice');
http_sink_stop($sink);

# ------------------------------------------------------------- refusals

is_err(as($owner, POST => hooks($c), { name => 'x', url => 'ftp://example.com/' }), 400, qr/http or https/,
       'an ftp URL');
is_err(as($owner, POST => hooks($c), { name => 'x', url => 'http://user:pw@example.com/' }), 400,
       qr/without credentials/, 'credentials in the URL');
is_err(as($owner, POST => hooks($c), { name => 'x', url => 'http://example.com/', method => 'GET' }), 400,
       qr/POST, PUT or PATCH/, 'GET');
is_err(as($owner, POST => hooks($c), { name => 'x', url => 'http://example.com/',
                                       headers => { 'X-A' => "a\r\nX-B: b" } }), 400, qr/line breaks/,
       'a header with a line break');
is_err(as($owner, POST => hooks($c), { name => 'x', url => 'http://example.com/',
                                       headers => { 'X-Defarm-Signature' => 'forged' } }), 400, qr/X-Defarm/,
       'a header forging the signature');
is_err(as($owner, POST => hooks($c), { url => 'http://example.com/' }), 400, qr/name and url/, 'no name');
is_err(as($owner, POST => hooks($c), { name => 'x', url => 'http://example.com/', bogus => 1 }), 400, qr/bogus/,
       'an unknown field');
is_err(as($owner, POST => hooks($c), '{"name":'), 400, qr/./, 'malformed JSON');
is_err(as($member, POST => hooks($c), { name => 'x', url => 'http://example.com/' }), 403, qr/ManagePermissions/,
       'a member without ManagePermissions');
is_err(as($other, GET => hooks($c, "/$hook->{id}")), 404, qr/Circuit not found/, 'a stranger');
is_err(as($owner, GET => hooks($c, '/not-a-uuid')), 400, qr/Invalid webhook ID/, 'a bad webhook id');
is_err(as($owner, GET => hooks($c, "/$uuid")), 404, qr/Webhook not found/, 'an unknown webhook');
is_err(as($owner, GET => hooks($c2, "/$hook->{id}")), 404, qr/Webhook not found/, "another circuit's webhook");
is_err(as($owner, PUT => "/api/circuits/$c/post-actions", { trigger_events => ['bogus'] }), 400,
       qr/trigger_events/, 'an unknown trigger');
is(as($owner, PUT => hooks($c, "/$hook->{id}"), { enabled => JSON::PP::false })->{status}, 200, 'disabled');
is(as($owner, DELETE => hooks($c, "/$hook->{id}"))->{status}, 200, 'deleted');
is_err(as($owner, GET => hooks($c, "/$hook->{id}")), 404, qr/Webhook not found/, '... gone');
unlike($ng->log, qr/tok-$$|\Q$secret\E/, 'neither credentials nor secret in the log');
unlike($ng->log, qr/\[(alert|crit|emerg)\]/, 'no alert in error.log');
stop_nginx($ng);

# ---------------------------------- loopback refused; no key, no webhooks

my $strict = node('hooks-strict', "defarm_secret_key file=$keyfile;");
$sink = http_sink($dir);
my $c4 = body(api_as($strict, $owner, POST => '/api/circuits', { name => 'strict' }))->{circuit_id};
api_as($strict, $owner, POST => hooks($c4), { name => 'local', url => "http://127.0.0.1:$sink->{port}/" });
api_as($strict, $owner, PUT => "/api/circuits/$c4/post-actions", { enabled => JSON::PP::true });
my $d4 = json_body(api_as($strict, $owner, POST => '/api/items',
                          { identifiers => [ { key => 'lot', value => "strict-$$" } ], source_entry => $uuid }))->{dfid};
api_as($strict, $owner, POST => "/api/circuits/$c4/push/$d4", {});
ok(wait_until(sub { (json_body(api_as($strict, $owner, GET => "/api/circuits/$c4/post-actions/deliveries"))
                         ->{data}[0]{status} // '') eq 'Failed' }, 15), 'a loopback destination: Failed');
my $dl = json_body(api_as($strict, $owner, GET => "/api/circuits/$c4/post-actions/deliveries"))->{data}[0];
is($dl->{attempts}, 1, '... at once, not retried');
like($dl->{last_error} // '', qr/not allowed/, '... the address is not allowed');
is(scalar(sink_requests($dir)), 0, '... nothing reached it');
http_sink_stop($sink);
stop_nginx($strict);

# ------------------- woken by NOTIFY; queued while no runner, sent later

# a poll of a minute: only the NOTIFY of the commit can wake the runner
my $quiet = node('hooks-listen', "defarm_secret_key file=$keyfile;\n    defarm_webhooks_allow_private on;",
                 'defarm_jobs interval=60s;');
ok(wait_until(sub { $quiet->log =~ /listening for new jobs/ }, 10), 'the runner listens');
$sink = http_sink($dir);
my $c6 = body(api_as($quiet, $owner, POST => '/api/circuits', { name => 'listen' }))->{circuit_id};
my $h6 = body(api_as($quiet, $owner, POST => hooks($c6), { name => 'l', url => "http://127.0.0.1:$sink->{port}/" }))
    ->{data};
is(api_as($quiet, $owner, POST => hooks($c6, "/$h6->{id}/test"), {})->{status}, 202, 'a delivery queued');
ok(wait_until(sub { sink_requests($dir) >= 1 }, 5), '... sent at once, not at the next poll (60 s)');
stop_nginx($quiet);

# queued by a node that runs no jobs, PostgreSQL restarted, then a node
# that runs them: nothing lost
my $plain = node('hooks-plain', "defarm_secret_key file=$keyfile;", '');
is(api_as($plain, $owner, POST => hooks($c6, "/$h6->{id}/test"), {})->{status}, 202,
   'a delivery queued where no jobs run');
stop_nginx($plain);
pg_stop();
pg_start();
my $later = node('hooks-later', "defarm_secret_key file=$keyfile;\n    defarm_webhooks_allow_private on;");
ok(wait_until(sub { sink_requests($dir) >= 2 }, 15), 'PostgreSQL restarted, another node: delivered');
is(scalar(sink_requests($dir)), 2, '... once');
http_sink_stop($sink);
stop_nginx($later);

my $nokey = node('hooks-nokey', '');
my $c5 = body(api_as($nokey, $owner, POST => '/api/circuits', { name => 'nokey' }))->{circuit_id};
is(api_as($nokey, $owner, POST => hooks($c5), { name => 'x', url => 'http://example.com/' })->{status}, 503,
   'no defarm_secret_key: 503');
stop_nginx($nokey);

done_testing();
