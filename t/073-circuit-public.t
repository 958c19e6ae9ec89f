# Circuits in public: settings (the 422 shapes of the original, the
# password hashed and never shown), the public page (only published items
# still in the circuit, and only their Public events; nothing for a
# circuit not public), and joining (protected mode: a wrong password 403,
# the right one a member or a request; auto-approve).  The password never
# appears in a response or the log.

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use DefarmTest;

my (undef, $secret_file) = jwt_secret();

my $ng = start_nginx(
    name   => 'circuit-public',
    http   => db_config(size => 4) . "
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;",
    server => '
        location / {
            defarm_api on;
        }');

sub body { json_body(@_) }
sub as { api_as($ng, @_) }
sub user { api_user($ng, "t073_$_[0]_$$") }

my ($owner, $member, $joiner, $other) = map { user($_) } qw(owner member joiner other);
my $PW = "S3cret-Pass-$$";
my $c = body(as($owner, POST => '/api/circuits', { name => 'Public circuit', description => 'open farm' }))->{circuit_id};
as($owner, POST => "/api/circuits/$c/members", { member_id => $member->{id}, role => 'member' });
my $base = "/api/circuits/$c";

# not public yet
is_err(http($ng, GET => "$base/public"), 404, qr/not public/, 'a private circuit has no public page');

# 422s
my $res = as($owner, PUT => "$base/public-settings", { public_settings => { access_mode => 'secret' } });
is($res->{status}, 422, 'a bad access_mode: 422');
is(body($res)->{error_kind}, 'validation_error', '... validation_error');
is(body($res)->{details}{field}, 'access_mode', '... details.field');
is_deeply(body($res)->{details}{allowed_values}, [qw(public open protected scheduled)], '... allowed values');
is(body($res)->{details}{provided_value}, 'secret', '... the value given');
$res = as($owner, PUT => "$base/public-settings", { public_settings => { access_mode => 'scheduled' } });
is($res->{status}, 422, 'scheduled without a date: 422');
is(body($res)->{details}{field}, 'scheduled_date', '... scheduled_date');
$res = as($owner, PUT => "$base/public-settings",
          { public_settings => { access_mode => 'scheduled', scheduled_date => 'tomorrow-ish' } });
is($res->{status}, 422, 'a date that does not parse: 422');
$res = as($owner, PUT => "$base/public-settings", { public_settings => { access_mode => 'protected' } });
is($res->{status}, 422, 'protected without a password: 422');
is(body($res)->{details}{field}, 'access_password', '... access_password');
$res = as($owner, PUT => "$base/public-settings",
          { public_settings => { access_mode => 'public', export_permissions => 'everyone' } });
is($res->{status}, 422, 'a bad export_permissions: 422');
is_err(as($owner, PUT => "$base/public-settings", { access_mode => 'public' }), 400,
       qr/public_settings/, 'settings not wrapped: 400');
is_err(as($owner, PUT => "$base/public-settings", { public_settings => { tagline => 5 } }), 400,
       qr/tagline must be a string/, 'a field of the wrong type: 400');
is_err(as($member, PUT => "$base/public-settings", { public_settings => { access_mode => 'public' } }), 403,
       qr/ManagePermissions/, 'a member cannot: 403');

# public mode, with published items
my $uuid = '0b6f8f9e-1d2c-4c3b-9a8e-7f6d5c4b3a21';
my @d = map {
    body(as($owner, POST => '/api/items', { identifiers => [ { key => 'lot', value => "p$_-$$" } ],
                                            source_entry => $uuid }))->{dfid}
} 1 .. 3;
as($owner, POST => "$base/push/$_", {}) for @d[0, 1];
as($owner, POST => '/api/events', { dfid => $d[0], event_type => 'updated', visibility => 'public',
                                    metadata => { seen => 'by all' } });
as($owner, POST => '/api/events', { dfid => $d[0], event_type => 'updated', visibility => 'private',
                                    metadata => { seen => 'by owner' } });

$res = as($owner, PUT => "$base/public-settings",
          { public_settings => { access_mode => 'public', public_name => 'Open Farm', tagline => 'beef',
                                 published_items => [ @d ] } });
is($res->{status}, 200, 'public settings: 200');
ok(body($res)->{success}, '... success');
ok(body($res)->{data}{permissions}{allow_public_visibility}, '... the circuit is public');
ok(body($res)->{data}{public_settings}{public_since}, '... public_since set');

$res = http($ng, GET => "$base/public");
is($res->{status}, 200, 'the public page, without a token: 200');
my $page = body($res)->{data};
is($page->{public_name}, 'Open Farm', '... its name');
is_deeply($page->{published_items}, [ @d[0, 1] ], '... only the published items in the circuit');
my ($first) = grep { $_->{dfid} eq $d[0] } @{ $page->{published_items_with_events} };
my @kinds = map { $_->{visibility} } @{ $first->{events} };
ok(@kinds && !grep({ $_ ne 'Public' } @kinds), '... only Public events (' . join(',', @kinds) . ')');
ok((grep { ($_->{metadata}{seen} // '') eq 'by all' } @{ $first->{events} }), '... the public one is there');
is($page->{requires_password}, JSON::PP::false, '... no password');
is($page->{member_count}, 2, '... two members');

# protected: hashed, never shown
$res = as($owner, PUT => "$base/public-settings",
          { public_settings => { access_mode => 'protected', access_password => $PW,
                                 auto_approve_members => JSON::PP::true } });
is($res->{status}, 200, 'protected mode: 200');
unlike($res->{body}, qr/\Q$PW\E/, '... the password is not in the answer');
is(body($res)->{data}{public_settings}{has_password}, JSON::PP::true, '... has_password');
ok(!exists body($res)->{data}{public_settings}{access_password}, '... no access_password field');
like(sql("SELECT access_password_hash FROM circuits WHERE circuit_id = '$c'"), qr/^\$2[aby]\$/,
     'a bcrypt hash is stored');
is(sql("SELECT count(*) FROM circuits WHERE public_settings::text LIKE '%$PW%'"), 0,
   '... and not the password');
unlike(body(as($owner, GET => $base))->{public_settings} ? as($owner, GET => $base)->{body} : '', qr/\Q$PW\E/,
       'GET does not show it');
is(body(http($ng, GET => "$base/public"))->{data}{requires_password}, JSON::PP::true,
   'the page says a password is needed');

# join
is_err(as($joiner, POST => "$base/public/join", {}), 403, qr/needs its access password/, 'no password: 403');
is_err(as($joiner, POST => "$base/public/join", { access_password => 'wrong' }), 403,
       qr/Invalid access password/, 'a wrong password: 403');
is_err(as($joiner, POST => "$base/public/join", { access_password => 5 }), 400, qr/must be a string/,
       'a password not a string: 400');
$res = as($joiner, POST => "$base/public/join", { access_password => $PW });
is($res->{status}, 200, 'the right password: 200');
is(body($res)->{message}, 'Automatically approved', '... auto-approved');
is(body($res)->{requires_approval}, JSON::PP::false, '... no approval');
is(as($joiner, GET => $base)->{status}, 200, 'the joiner is a member');
is_err(as($joiner, POST => "$base/public/join", { access_password => $PW }), 409, qr/Already a member/,
       'twice: 409');

# without auto-approve: a request
as($owner, PUT => "$base/public-settings", { public_settings => { access_mode => 'public' } });
$res = as($other, POST => "$base/public/join", { message => 'hello' });
is($res->{status}, 200, 'public mode, no auto-approve: 200');
is(body($res)->{requires_approval}, JSON::PP::true, '... a request made');
is(sql("SELECT status FROM circuit_join_requests WHERE circuit_id = '$c' AND requester_id = '$other->{id}'"),
   'Pending', '... pending');
is(sql("SELECT count(*) FROM circuits WHERE circuit_id = '$c' AND access_password_hash IS NULL"), 1,
   'leaving protected mode drops the hash');

# auto-publish: a pushed item goes on the page
as($owner, PUT => "$base/public-settings",
   { public_settings => { access_mode => 'public', auto_publish_pushed_items => JSON::PP::true } });
my $auto = body(as($owner, POST => '/api/items', { identifiers => [ { key => 'lot', value => "auto-$$" } ],
                                                 source_entry => $uuid }))->{dfid};
as($owner, POST => "$base/push/$auto", {});
ok((grep { $_ eq $auto } @{ body(http($ng, GET => "$base/public"))->{data}{published_items} }),
   'auto_publish_pushed_items: the pushed item is published');

# not public again
as($owner, PUT => "$base/visibility/toggle");
is_err(http($ng, GET => "$base/public"), 404, qr/not public/, 'toggled private: no page');
is_err(as($other, POST => "$base/public/join", {}), 404, qr/not public/, '... no join');

unlike($ng->log, qr/\Q$PW\E/, 'the password is not in the log');
unlike($ng->log, qr/\[(alert|crit|emerg)\]/, 'no alert in error.log');
stop_nginx($ng);

done_testing();
