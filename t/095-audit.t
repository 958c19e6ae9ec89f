# Audit (sql/039), at /audit/audit/* and /api/audit/*: audit events
# recorded (the caller's own, an administrator's for anyone; the security
# route opening an incident for a critical, failed or blocked event; the
# data-access route's severity from the classification), read back (by
# id, by user, by a query's filters and sort; a user their own, within
# their tier's retention), synced by event_id
# once each; security incidents reported by anyone, assigned and resolved
# by an administrator, seen by their reporter and assignee; compliance
# reports made from the trail and stored, the GDPR export of everything
# about a user, the food-safety report of an item; the compliance events
# and incidents of a period; the dashboard's counts; the JSON export,
# charged audit_export with defarm_credits on; an administrator's actions
# as audit events.  Bad input, other users' data and the wrong callers
# refused.

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use DefarmTest;

my (undef, $secret_file) = jwt_secret();

my $ng = start_nginx(
    name   => 'audit',
    http   => db_config(size => 4) . "
    defarm_cache zone=audit:4m ttl=1h;
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;
    defarm_credits on;",
    server => '
        location / {
            defarm_api on;
        }');

sub body { json_body(@_) }
sub as { api_as($ng, @_) }
my $T = JSON::PP::true;
my $F = JSON::PP::false;
my $uuid = '0b6f8f9e-1d2c-4c3b-9a8e-7f6d5c4b3a21';
my $A = '/audit/audit';
my $B = '/api/audit';

my ($admin, $alice, $bob, $pro) = map { api_user($ng, "t095_${_}_$$") } qw(admin alice bob pro);
sql("UPDATE users SET is_admin = true WHERE id = '$admin->{id}'");
sql("UPDATE users SET tier = 'Professional' WHERE id = '$pro->{id}'");

sub event {
    my ($who, %f) = @_;
    return as($who, POST => "$A/events", { event_type => 'access', action => 'login', resource => 'session',
                                           outcome => 'success', severity => 'low', %f });
}
sub credits { sql("SELECT credits FROM credit_balances WHERE user_id = '$_[0]{id}'") }

# ------------------------------------------------------------ no caller

for my $p ("$A/events/query", "$B/events/query") {
    is(http($ng, POST => $p, body => '{}', headers => { 'Content-Type' => 'application/json' })->{status},
       401, "$p: no token, 401");
}
is(http($ng, GET => "$B/dashboard/metrics")->{status}, 401, 'dashboard: no token, 401');
is(http($ng, GET => "$A/incidents")->{status}, 401, 'incidents: no token, 401');

# ---------------------------------------------------------- recording

my $res = event($alice, event_type => 'ACCESS', outcome => 'Success', resource_id => 'r-1',
                details => { via => 'web' }, metadata => { ip_address => '10.0.0.1', session_duration => 30 },
                compliance => { gdpr => $T });
is($res->{status}, 201, 'an event: 201');
my $e1 = body($res)->{data}{event_id};
like($e1, qr/^[0-9a-f-]{36}$/, '... its event_id');
my $ev = body(as($alice, GET => "$B/events/$e1"))->{data};
is_deeply([ @$ev{qw(user_id event_type outcome severity action resource resource_id)} ],
          [ $alice->{id}, 'access', 'success', 'low', 'login', 'session', 'r-1' ],
          '... read back under /api/audit, lower-case values');
is($ev->{metadata}{ip_address}, '10.0.0.1', '... its metadata');
ok(exists $ev->{metadata}{device_id} && !defined $ev->{metadata}{device_id}, '... the fields not given null');
is($ev->{compliance}{gdpr}, $T, '... its compliance flags');
is($ev->{details}{via}, 'web', '... its details');
ok($ev->{timestamp} > 1_600_000_000, '... a Unix timestamp');
is(sql("SELECT count(*) FROM audit_events WHERE event_id = '$e1'"), 1, '... persisted');

is_err(event($alice, event_type => 'party'), 400, qr/event_type must be one of/, 'an unknown event_type');
is_err(event($alice, outcome => 'maybe'), 400, qr/outcome must be one of/, 'an unknown outcome');
is_err(event($alice, severity => 3), 400, qr/severity must be one of/, 'a severity not a string');
is_err(as($alice, POST => "$A/events", { event_type => 'user', resource => 'x', outcome => 'success',
                                         severity => 'low' }), 400, qr/action is required/, 'no action');
is_err(event($alice, resource => ''), 400, qr/resource must not be empty/, 'an empty resource');
is_err(event($alice, action => 'x' x 256), 400, qr/action must be at most 255/, 'an action too long');
is_err(event($alice, details => [1]), 400, qr/details must be an object/, 'details not an object');
is_err(event($alice, metadata => { session_duration => 'long' }), 400, qr/session_duration/,
       'a session_duration not a number');
is_err(event($alice, metadata => { ip_address => 7 }), 400, qr/metadata.ip_address must be a string/,
       'an ip_address not a string');
is_err(event($alice, compliance => { gdpr => 'yes' }), 400, qr/compliance.gdpr must be true or false/,
       'a compliance flag not a boolean');
is_err(as($alice, POST => "$A/events", '{"action": '), 400, qr/./, 'malformed JSON');
is_err(as($alice, POST => "$A/events", [ 1 ]), 400, qr/JSON object/, 'an array body');

is_err(event($alice, user_id => $bob->{id}), 403, qr/Only an administrator/, 'a user records for another: 403');
$res = event($admin, user_id => $bob->{id}, event_type => 'user', action => 'password_change');
is($res->{status}, 201, 'an administrator records for another user');
my $bob_ev = body($res)->{data}{event_id};
is(body(as($bob, GET => "$A/events/$bob_ev"))->{data}{recorded_by}, $admin->{id},
   '... which that user reads, recorded_by the administrator');

is_err(as($bob, GET => "$A/events/$e1"), 404, qr/Audit event not found/, "another user's event: 404");
is(as($admin, GET => "$A/events/$e1")->{status}, 200, '... an administrator reads it');
is_err(as($alice, GET => "$A/events/nope"), 400, qr/Invalid event ID/, 'a malformed event id');
is_err(as($alice, GET => "$A/events/$uuid"), 404, qr/not found/, 'an unknown event id');

# security: a critical (or failed, or blocked) event opens an incident
$res = as($alice, POST => "$A/events/security", { action => 'unauthorized_access_attempt', resource => 'items',
                                                  outcome => 'blocked', severity => 'critical',
                                                  details => { tries => 5 } });
is($res->{status}, 201, 'a security event');
my $auto = body($res)->{data}{incident_id};
ok($auto, '... blocked and critical: an incident opened');
my $inc = body(as($alice, GET => "$B/incidents/$auto"))->{data};
is($inc->{category}, 'unauthorized-access', '... its category from the action');
is($inc->{reported_by}, $alice->{id}, '... reported by the caller');
is_deeply($inc->{related_event_ids}, [ body($res)->{data}{event_id} ], '... related to the event');
is(body(as($alice, GET => "$A/events/" . body($res)->{data}{event_id}))->{data}{event_type}, 'security',
   '... the event is of type security');
$res = as($alice, POST => "$A/events/security", { action => 'login', resource => 'session',
                                                  outcome => 'success', severity => 'low' });
is(body($res)->{data}{incident_id}, undef, 'a low, successful security event: no incident');
is_err(as($alice, POST => "$A/events/security", { action => 'x', resource => 'y', outcome => 'success' }),
       400, qr/severity is required/, 'security: no severity');

# data access: the severity from the classification
$res = as($alice, POST => "$B/events/data-access", { action => 'read', resource => 'item', resource_id => 'DFID-1',
                                                     outcome => 'success', data_classification => 'Confidential',
                                                     compliance_flags => { gdpr => $T } });
is($res->{status}, 201, 'a data access');
is(body($res)->{data}{severity}, 'high', '... confidential: high');
$ev = body(as($alice, GET => "$A/events/" . body($res)->{data}{event_id}))->{data};
is($ev->{event_type}, 'data', '... of type data');
is($ev->{details}{data_classification}, 'confidential', '... the classification in its details');
is(body(as($alice, POST => "$B/events/data-access", { action => 'read', resource => 'item',
                                                      outcome => 'success' }))->{data}{severity},
   'low', '... none: low');
is_err(as($alice, POST => "$B/events/data-access", { action => 'read', resource => 'item', outcome => 'success',
                                                     data_classification => 'secret' }),
       400, qr/data_classification must be one of/, '... an unknown classification');

# ------------------------------------------------------------- reading

my $mine = sql("SELECT count(*) FROM audit_events WHERE user_id = '$alice->{id}'");
$res = as($alice, POST => "$A/events/query", {});
is($res->{status}, 200, 'query: 200');
is(body($res)->{count}, $mine, '... all of her events');
is(scalar(grep { $_->{user_id} ne $alice->{id} } @{ body($res)->{data} }), 0, '... hers only');
is(body(as($alice, POST => "$A/events/query", { sort_by => 'severity' }))->{data}[0]{severity}, 'critical',
   '... sort_by severity: the critical first');
is_deeply([ map { $_->{event_type} } @{ body(as($alice, POST => "$A/events/query",
                                                { event_types => [ 'Data' ] }))->{data} } ],
          [ 'data', 'data' ], '... event_types');
is(body(as($alice, POST => "$A/events/query", { outcomes => [ 'blocked' ], severities => [ 'critical' ] }))->{count},
   1, '... outcomes and severities');
is(body(as($alice, POST => "$A/events/query", { compliance => { gdpr => $T } }))->{count}, 2,
   '... compliance: gdpr');
is(body(as($alice, POST => "$A/events/query", { limit => 2, offset => 1 }))->{count}, 2, '... limit and offset');
is(body(as($alice, POST => "$A/events/query", { start_date => time + 3600 }))->{count}, 0,
   '... start_date in the future: none');
is_err(as($alice, POST => "$A/events/query", { user_id => $bob->{id} }), 404, qr/User not found/,
       "... another user's: 404");
is(body(as($admin, POST => "$A/events/query", { user_id => $alice->{id} }))->{count}, $mine,
   '... an administrator queries hers');
is_err(as($alice, POST => "$A/events/query", { severities => [ 'huge' ] }), 400, qr/severities must be/,
       '... an unknown severity');
is_err(as($alice, POST => "$A/events/query", { event_types => 'data' }), 400, qr/event_types must be an array/,
       '... event_types not an array');
is_err(as($alice, POST => "$A/events/query", { limit => 0 }), 400, qr/limit must be 1 to 1000/, '... limit 0');
is_err(as($alice, POST => "$A/events/query", { offset => -1 }), 400, qr/offset/, '... a negative offset');
is_err(as($alice, POST => "$A/events/query", { start_date => 'yesterday' }), 400, qr/start_date must be a Unix/,
       '... a start_date not a time');
is_err(as($alice, POST => "$A/events/query", { start_date => 20, end_date => 10 }), 400,
       qr/start_date must not be after/, '... start after end');
is_err(as($alice, POST => "$A/events/query", { sort_by => 'colour' }), 400, qr/sort_by/, '... an unknown sort_by');

$res = as($alice, GET => "$B/events/user/$alice->{id}?event_type=data&limit=10");
is($res->{status}, 200, 'events of a user');
is(body($res)->{count}, 2, '... filtered by event_type');
is(body(as($alice, GET => "$A/events/user/$alice->{id}?severity=critical"))->{count}, 1, '... by severity');
is_err(as($alice, GET => "$A/events/user/$bob->{id}"), 404, qr/User not found/, "... another user's: 404");
is(body(as($admin, GET => "$A/events/user/$bob->{id}"))->{count}, 1, '... an administrator reads them');
is_err(as($alice, GET => "$A/events/user/$alice->{id}?limit=abc"), 400, qr/limit/, '... a bad limit');
is_err(as($alice, GET => "$A/events/user/$alice->{id}?event_type=nope"), 400, qr/event_types/,
       '... a bad event_type');

# ---------------------------------------------------------------- sync

my @ids = map { sql('SELECT gen_random_uuid()') } 1 .. 2;
my $now = time;
my @batch = map { { event_id => $_, timestamp => $now - 60, event_type => 'user', action => 'offline_edit',
                    resource => 'item', outcome => 'success', severity => 'low', signature => 'sig',
                    details => { n => 1 } } } @ids;
$res = as($alice, POST => "$A/events/sync", { events => [ @batch, $batch[0] ] });
is($res->{status}, 200, 'sync: 200');
is_deeply(body($res)->{data}, { received => 3, new => 2, duplicates => 1 }, '... two new, a repeat within the batch');
is_deeply(body(as($alice, POST => "$B/events/sync", { events => \@batch }))->{data},
          { received => 2, new => 0, duplicates => 2 }, '... again: nothing new');
$ev = body(as($alice, GET => "$A/events/$ids[0]"))->{data};
is($ev->{timestamp}, $now - 60, '... with the timestamp given');
is($ev->{signature}, 'sig', '... and its signature');
is_err(as($alice, POST => "$A/events/sync", { events => [ { %{ $batch[0] }, event_id => sql('SELECT gen_random_uuid()'),
                                                            user_id => $bob->{id} } ] }),
       403, qr/Only an administrator may sync/, "a user syncs another's: 403");
is(body(as($admin, POST => "$A/events/sync", { events => [ { %{ $batch[0] }, event_id => sql('SELECT gen_random_uuid()'),
                                                             user_id => $bob->{id} } ] }))->{data}{new},
   1, '... an administrator may');
is_err(as($alice, POST => "$A/events/sync", { events => [ { %{ $batch[0] }, event_id => 'x' } ] }), 400,
       qr/events\[0\]: event_id must be a UUID/, 'a bad event_id');
is_err(as($alice, POST => "$A/events/sync", { events => [ $batch[0], { %{ $batch[0] }, severity => 'x' } ] }), 400,
       qr/events\[1\]: severity/, 'a bad event, by its index');
is_err(as($alice, POST => "$A/events/sync", { events => [ { %{ $batch[0] }, timestamp => 32503680000 } ] }), 400,
       qr/timestamp must not be in the future/, 'a timestamp in the future');
is_err(as($alice, POST => "$A/events/sync", { events => [] }), 400, qr/1 to 1000/, 'no events');
is_err(as($alice, POST => "$A/events/sync", { events => {} }), 400, qr/events must be an array/, 'events not an array');

# the tier's retention: Basic 30 days, Professional 90
my $old = { %{ $batch[0] }, timestamp => $now - 60 * 86400 };
my $old_a = sql('SELECT gen_random_uuid()');
my $old_p = sql('SELECT gen_random_uuid()');
as($alice, POST => "$A/events/sync", { events => [ { %$old, event_id => $old_a } ] });
as($pro, POST => "$A/events/sync", { events => [ { %$old, event_id => $old_p } ] });
is_err(as($alice, GET => "$A/events/$old_a"), 404, qr/not found/, 'retention: Basic does not read 60 days back');
is(scalar(grep { $_->{event_id} eq $old_a } @{ body(as($alice, POST => "$A/events/query", {}))->{data} }), 0,
   '... nor finds it');
is(as($pro, GET => "$A/events/$old_p")->{status}, 200, '... Professional does');
is(as($admin, GET => "$A/events/$old_a")->{status}, 200, '... an administrator does');

# ----------------------------------------------------------- incidents

my $inc_body = { title => 'Phishing mail', description => 'A mail asked for passwords', severity => 'High',
                 category => 'policy-violation', affected_users => [ $bob->{id} ],
                 affected_resources => [ 'mail' ] };
$res = as($bob, POST => "$A/incidents", $inc_body);
is($res->{status}, 201, 'an incident reported by a user');
my $bi = body($res)->{data}{incident_id};
$inc = body($res)->{data}{incident};
is_deeply([ @$inc{qw(status severity category reported_by assigned_to confidential)} ],
          [ 'open', 'high', 'policy-violation', $bob->{id}, undef, $F ], '... open, as given');
is(body(as($bob, GET => "$A/incidents"))->{count}, 1, '... in his list');
is_err(as($alice, GET => "$A/incidents/$bi"), 404, qr/Security incident not found/, "... not another user's");
ok(!grep({ $_->{incident_id} eq $bi } @{ body(as($alice, GET => "$B/incidents"))->{data} }), '... nor in her list');
ok(scalar(grep { $_->{incident_id} eq $bi } @{ body(as($admin, GET => "$B/incidents"))->{data} }),
   '... an administrator sees it');
is(scalar @{ body(as($admin, GET => "$B/incidents?severity=high&status=open"))->{data} }
   >= 1 ? 1 : 0, 1, '... filtered by severity and status');

is_err(as($bob, PUT => "$A/incidents/$bi/assign", { assignee => $alice->{id} }), 403, qr/Admin privileges/,
       'assign: a user, 403');
is_err(as($admin, PUT => "$A/incidents/$bi/assign", { assignee => 'nobody' }), 400, qr/assignee is not a user/,
       '... an unknown assignee');
is_err(as($admin, PUT => "$A/incidents/$bi/assign", {}), 400, qr/assignee is required/, '... no assignee');
$res = as($admin, PUT => "$B/incidents/$bi/assign", { assignee => $alice->{id} });
is($res->{status}, 200, '... an administrator assigns');
is(body($res)->{data}{status}, 'inprogress', '... in progress');
is(body(as($alice, GET => "$A/incidents/$bi"))->{data}{assigned_to}, $alice->{id}, '... the assignee sees it');
is(body(as($admin, GET => "$A/incidents?assignee=$alice->{id}"))->{count}, 1, '... listed by assignee');

is_err(as($alice, PUT => "$A/incidents/$bi/resolve"), 403, qr/Admin privileges/, 'resolve: a user, 403');
$res = as($admin, PUT => "$A/incidents/$bi/resolve");
is(body($res)->{data}{status}, 'resolved', '... an administrator resolves');
ok(body($res)->{data}{resolved_at}, '... at a time');
is(as($admin, PUT => "$A/incidents/$bi/resolve")->{status}, 200, '... again: unchanged');
is_err(as($admin, PUT => "$A/incidents/$bi/assign", { assignee => $bob->{id} }), 409, qr/already resolved/,
       '... not reassigned once resolved');
is_err(as($admin, PUT => "$A/incidents/nope/resolve"), 400, qr/Invalid incident ID/, 'a malformed incident id');
is_err(as($admin, GET => "$A/incidents/$uuid"), 404, qr/not found/, 'an unknown incident');
is_err(as($bob, POST => "$A/incidents", { %$inc_body, category => 'gossip' }), 400, qr/category must be one of/,
       'an unknown category');
is_err(as($bob, POST => "$A/incidents", { %$inc_body, title => undef }), 400, qr/title is required/, 'no title');
is_err(as($bob, POST => "$A/incidents", { %$inc_body, affected_users => 'bob' }), 400, qr/affected_users must be/,
       'affected_users not an array');
is_err(as($bob, POST => "$A/incidents", { %$inc_body, related_event_ids => [ $e1 ] }), 400,
       qr/related_event_ids: no audit event/, "another user's event as related");
is_err(as($bob, POST => "$A/incidents", { %$inc_body, confidential => 'yes' }), 400, qr/confidential must be/,
       'confidential not a boolean');
is_err(as($alice, GET => "$A/incidents?status=asleep"), 400, qr/status must be one of/, 'list: an unknown status');
is_err(as($alice, GET => "$A/incidents?limit=0"), 400, qr/limit/, 'list: limit 0');

# ---------------------------------------------------------- compliance

my $period = { start_date => $now - 3600, end_date => $now + 3600 };
$res = as($alice, POST => "$A/compliance/events", $period);
is($res->{status}, 200, 'compliance events');
my @ce = @{ body($res) };
is(scalar @ce, 2, '... hers flagged gdpr (the bare array, as the original)');
is(scalar(grep { $_->{user_id} ne $alice->{id} } @ce), 0, '... hers only');
is_err(as($alice, POST => "$A/compliance/events", { start_date => 1 }), 400, qr/end_date is required/,
       '... no end_date');
$res = as($admin, POST => "$B/compliance/incidents", $period);
ok(scalar(grep { $_->{incident_id} eq $bi } @{ body($res) }), 'compliance incidents: of the period');
is(scalar @{ body(as($alice, POST => "$B/compliance/incidents", $period)) }, 2,
   "... a user's: reported or assigned");

$res = as($alice, POST => "$A/compliance/reports", { report_type => 'audit-trail', period_start => $now - 3600,
                                                     period_end => $now + 3600, include_evidence => $T,
                                                     scope => { resource_types => [ 'all' ] } });
is($res->{status}, 201, 'a compliance report');
my $rep = body($res)->{data};
is($rep->{report_type}, 'audit-trail', '... its type');
is($rep->{subject_user_id}, $alice->{id}, '... about her');
is($rep->{total_events}, $rep->{content}{events}{total}, '... counted');
is($rep->{content}{events}{total}, sql("SELECT count(*) FROM audit_events WHERE user_id = '$alice->{id}' "
                                       . "AND timestamp >= to_timestamp($now - 3600)"),
   '... her events of the period');
my ($failed) = grep { $_->{finding_type} eq 'failed_or_blocked_events' } @{ $rep->{content}{findings} };
ok($failed && @{ $failed->{evidence} } == 1, '... a finding with its evidence');
is($rep->{compliance_status}, 'non_compliant', '... high findings: non_compliant');
is(sql("SELECT count(*) FROM compliance_reports WHERE report_id = '$rep->{report_id}'"), 1, '... stored');
is_err(as($alice, POST => "$A/compliance/reports", { report_type => 'audit-trail', period_start => 1,
                                                     period_end => 2, scope => { user_id => $bob->{id} } }),
       404, qr/User not found/, "... about another user: 404");
is_err(as($alice, POST => "$A/compliance/reports", { report_type => 'audit-trail', period_start => 1,
                                                     period_end => 2, scope => {}, export_format => 'csv' }),
       400, qr/csv is not produced/, '... csv refused');
is_err(as($alice, POST => "$A/compliance/reports", { report_type => 'tax', period_start => 1, period_end => 2,
                                                     scope => {} }), 400, qr/report_type must be one of/,
       '... an unknown report_type');
is_err(as($alice, POST => "$A/compliance/reports", { report_type => 'audit-trail', period_start => 1,
                                                     period_end => 2 }), 400, qr/scope must be an object/,
       '... no scope');
is_err(as($alice, POST => "$A/compliance/reports", { report_type => 'audit-trail', period_start => 1,
                                                     period_end => 2, scope => { event_types => [ 'x' ] } }),
       400, qr/scope.event_types must be/, '... a bad scope.event_types');
$res = as($admin, POST => "$A/compliance/reports", { report_type => 'security-incident', period_start => $now - 3600,
                                                     period_end => $now + 3600, scope => {} });
is(body($res)->{data}{subject_user_id}, undef, '... an administrator: everyone');

# GDPR: everything about a user
my $key = body(as($alice, POST => '/api/api-keys', { name => 'robot', organization_type => 'Producer' }))->{api_key};
$res = http($ng, GET => "$B/events/$e1", headers => { 'X-API-Key' => $key });
is(body($res)->{data}{event_id}, $e1, 'an API key reads its owner\'s events');
is(http($ng, GET => "$B/events/$bob_ev", headers => { 'X-API-Key' => $key })->{status}, 404,
   '... not another user\'s');
my $dfid = body(as($alice, POST => '/api/items', { identifiers => [ { key => 'lot', value => "a-$$" } ],
                                                 source_entry => $uuid }))->{dfid};
ok($dfid, 'an item of hers');
$res = as($alice, POST => "$A/compliance/reports/gdpr", {});
is($res->{status}, 201, 'a GDPR export of her own data');
my $g = body($res);
is($g->{report_type}, 'gdpr', '... its type');
my $c = $g->{content};
is($c->{user}{user_id} // $c->{user}{id}, $alice->{id}, '... her account');
ok(!exists $c->{user}{password_hash}, '... without the password hash');
is(scalar @{ $c->{api_keys} }, 1, '... her API key');
ok(!exists $c->{api_keys}[0]{key_hash}, '... without its hash');
is($c->{items}[0]{dfid}, $dfid, '... her items');
ok(scalar @{ $c->{credit_transactions} } >= 2, '... her credit ledger');
is(scalar @{ $c->{audit_events} }, sql("SELECT count(*) FROM audit_events WHERE user_id = '$alice->{id}' "
                                      . "AND action <> 'gdpr_export'"),
   '... all her audit events, whatever the retention');
ok(scalar @{ $c->{security_incidents} } >= 2, '... her incidents');
for my $t (qw(workspaces workspace_members user_activities)) {
    my $there = sql("SELECT to_regclass('$t') IS NOT NULL") eq 't';
    ok(exists $c->{$t} && ($there ? ref $c->{$t} eq 'ARRAY' : !defined $c->{$t}),
       "... $t: " . ($there ? 'its rows' : 'null, not installed'));
}
is(body(as($alice, POST => "$A/compliance/events", $period))->[-1]{action}, 'gdpr_export',
   '... the export is a compliance event');
is_err(as($alice, POST => "$A/compliance/reports/gdpr", { user_id => $bob->{id} }), 404, qr/User not found/,
       "... of another user: 404");
is(body(as($admin, POST => "$B/compliance/reports/gdpr", { user_id => $bob->{id} }))->{subject_user_id},
   $bob->{id}, '... an administrator exports anyone');
is_err(as($admin, POST => "$B/compliance/reports/gdpr", { user_id => 'user-none' }), 404, qr/User not found/,
       '... an unknown user');
is_err(as($admin, POST => "$B/compliance/reports/gdpr", { user_id => 5 }), 400, qr/user_id must be a string/,
       '... a user_id not a string');

# the tables of other areas, read whatever their shape, secrets left out
sql("CREATE TABLE t095_scratch (id int, owner_id text, member_id text, secret text, note text)");
sql("INSERT INTO t095_scratch VALUES (1, '$alice->{id}', NULL, 's', 'a'), (2, 'x', '$alice->{id}', 's', 'b'), "
    . "(3, 'x', 'y', 's', 'c')");
is(sql("SELECT defarm_audit_rows_of('t095_scratch', '$alice->{id}') #>> '{}'") =~ tr/{//, 2,
   'an optional table: the rows naming her in any user column');
is(sql("SELECT jsonb_path_exists(defarm_audit_rows_of('t095_scratch', '$alice->{id}'), '\$[*].secret')"), 'f',
   '... without their secret column');
is(sql("SELECT defarm_audit_rows_of('t095_absent', '$alice->{id}') IS NULL"), 't', '... an absent table: null');
sql("DROP TABLE t095_scratch");

# food safety: an item's trail
for my $t (qw(Created Updated Updated)) {
    is(as($alice, POST => '/api/events', { dfid => $dfid, event_type => $t, visibility => 'Private',
                                            metadata => { temp => 4, t => $t, n => rand } })->{status},
       200, "an item event $t");
}
$res = as($alice, POST => "$A/compliance/reports/food-safety", { dfid => $dfid });
is($res->{status}, 201, 'a food-safety report');
my $fs = body($res);
is($fs->{dfid}, $dfid, '... of the item');
is($fs->{content}{item}{dfid}, $dfid, '... the item itself');
is($fs->{total_events}, scalar @{ $fs->{content}{timeline} }, '... its events as a timeline');
is_deeply($fs->{content}{events_by_type}, { Created => 1, Updated => 2 }, '... counted by type');
is_deeply($fs->{content}{circuits}, [], '... no circuit yet');
is_err(as($bob, POST => "$A/compliance/reports/food-safety", { dfid => $dfid }), 404, qr/Item not found/,
       "... another user's item: 404");
is(as($admin, POST => "$A/compliance/reports/food-safety", { dfid => $dfid })->{status}, 201,
   '... an administrator reads any');
is_err(as($alice, POST => "$A/compliance/reports/food-safety", {}), 400, qr/dfid is required/, '... no dfid');
is_err(as($alice, POST => "$A/compliance/reports/food-safety", { dfid => 'DFID-none' }), 404, qr/Item not found/,
       '... an unknown item');

$res = as($alice, GET => "$B/compliance/reports");
my @types = sort map { $_->{report_type} } @{ body($res)->{data} };
is_deeply(\@types, [ 'audit-trail', 'food-safety', 'gdpr' ], 'reports: hers listed');
is(body(as($alice, GET => "$B/compliance/reports?report_type=gdpr"))->{count}, 1, '... by type');
ok(body(as($admin, GET => "$B/compliance/reports"))->{count} >= 6, '... an administrator: all');
is_err(as($alice, GET => "$B/compliance/reports?report_type=nope"), 400, qr/report_type/, '... an unknown type');

# ----------------------------------------------------------- dashboard

$res = as($alice, GET => "$A/dashboard/metrics");
is($res->{status}, 200, 'dashboard');
my $m = body($res)->{data};
my $visible = sql("SELECT count(*) FROM audit_events WHERE user_id = '$alice->{id}' "
                  . "AND timestamp >= now() - interval '30 days'");
is($m->{total_events}, $visible, '... her events within her retention');
is($m->{events_by_severity}{critical}, 1, '... by severity');
is($m->{events_by_outcome}{blocked}, 1, '... by outcome');
is($m->{compliance_status}{gdpr_events}, 3, '... gdpr events');
is($m->{security_incidents}{open}, 1, '... the open incident she reported');
is($m->{security_incidents}{resolved}, 1, '... the resolved one assigned to her');
is($m->{compliance_reports}, 3, '... her reports');
is_deeply([ map { $_->{user_id} } @{ $m->{top_users} } ], [ $alice->{id} ], '... herself as the only user');
is(body(as($admin, GET => "$A/dashboard/metrics"))->{data}{total_events},
   sql('SELECT count(*) FROM audit_events'), '... an administrator: everything');
is(body(as($alice, GET => "$A/dashboard/metrics?start_date=" . ($now + 7200)))->{data}{total_events}, 0,
   '... a period');
is_err(as($alice, GET => "$A/dashboard/metrics?start_date=soon"), 400, qr/start_date/, '... a bad start_date');

# anomalies: five failures in a day
event($bob, outcome => 'failure', action => "try$_") for 1 .. 5;
my ($an) = @{ body(as($bob, GET => "$A/dashboard/metrics"))->{data}{anomalies} };
is($an->{anomaly_type} // '', 'repeated_failures', 'five failures: an anomaly');

# -------------------------------------------------------------- export

my $before = credits($alice);
$res = as($alice, POST => "$B/export/json", { event_types => [ 'access' ] });
is($res->{status}, 200, 'export');
is(body($res)->{count}, sql("SELECT count(*) FROM audit_events WHERE user_id = '$alice->{id}' "
                            . "AND event_type = 'access' AND timestamp >= now() - interval '30 days'"),
   '... every match');
is(credits($alice), $before - 20, '... charged audit_export (Basic: 20)');
is(sql("SELECT operation FROM credit_transactions WHERE user_id = '$alice->{id}' ORDER BY seq DESC LIMIT 1"),
   'audit_export', '... in the ledger');
is(body(as($alice, POST => "$A/events/query", { actions => [ 'audit_export' ] }))->{count}, 1,
   '... and an audit event');
is_err(as($alice, POST => "$B/export/json", { user_id => $bob->{id} }), 404, qr/User not found/,
       "... another user's: 404");
ok(body(as($admin, POST => "$B/export/json", { user_id => $bob->{id} }))->{count} >= 7, '... an administrator: any');
sql("UPDATE credit_balances SET credits = 0 WHERE user_id = '$bob->{id}'");
is_err(as($bob, POST => "$B/export/json", {}), 402, qr/Insufficient credits/, '... without the credits: 402');
is(body(as($admin, POST => "$A/events/query", { user_id => $bob->{id}, actions => [ 'audit_export' ] }))->{count},
   0, '... nothing recorded then');

# ------------------------------------------------------- admin actions

is(as($admin, POST => "/api/admin/users/$bob->{id}/credits", { amount => 50, reason => 'audit test' })->{status},
   200, 'an administrator adjusts credits');
$res = as($admin, POST => "$A/events/query", { event_types => [ 'system' ], resources => [ 'user' ] });
my ($act) = grep { ($_->{resource_id} // '') eq $bob->{id} } @{ body($res)->{data} };
is($act->{action}, 'AdjustCredits', '... an audit event');
is_deeply([ @$act{qw(user_id severity outcome)} ], [ $admin->{id}, 'high', 'success' ],
          '... by the administrator, high');
is($act->{details}{amount}, 50, '... with its details');
is($act->{event_id}, sql("SELECT action_id FROM admin_actions WHERE target_user_id = '$bob->{id}'"),
   '... the id of the admin action');
is(as($admin, GET => '/api/admin/actions')->{status}, 200, '... GET /api/admin/actions still answers');

unlike($ng->log, qr/\[(alert|crit|emerg)\]/, 'no alert in error.log');
stop_nginx($ng);

done_testing();
