# Jobs (sql/031) and the first kind that rides on them, password-reset
# e-mails over SMTP (sql/032): a local SMTP server gets the message with
# the token, which then resets the password; a server that refuses twice
# gets the message on the third attempt, after growing delays; one that
# never answers leaves the job to its lease, and a worker killed meanwhile
# loses nothing (another worker sends it once); a job with no attempt
# left is Dead with its error; the finished job keeps no token; a reset
# refused by the hourly limit makes no e-mail.

use strict;
use warnings;
use Test::More;
use JSON::PP ();
use DefarmTest;
use DefarmSmtp;

my $json = JSON::PP->new->utf8->canonical;
my (undef, $secret_file) = jwt_secret();
my $dir = "$ENV{TEST_NGINX_SERVROOT}-smtp";

sub node {
    my ($name, $port, $extra, %opt) = @_;
    return start_nginx(
        %opt,
        name   => $name,
        http   => db_config(size => 4) . "
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;
    defarm_jobs interval=200ms lease=2s concurrency=4;
    defarm_smtp url=smtp://127.0.0.1:$port from=noreply\@defarm.test
                timeout=1500ms;
    " . ($extra // '') . "",
        server => '
        location / {
            defarm_api on;
        }');
}

sub forgot {
    my ($ng, $email) = @_;
    return http($ng, POST => '/api/auth/forgot-password',
                headers => { 'Content-Type' => 'application/json' },
                body => $json->encode({ email => $email }));
}

sub email_jobs {
    my ($email) = @_;
    return sql("SELECT count(*) FROM jobs WHERE kind = 'email' AND payload ->> 'to' = '$email'");
}

# ------------------------------------------------------- sent at once

my $sink = smtp_sink($dir);
my $ng = node('jobs-email', $sink->{port});
my $u = api_user($ng, "t090_a_$$");
my $email = "t090_a_$$\@example.com";

is(forgot($ng, $email)->{status}, 200, 'forgot-password: 200');
ok(wait_until(sub { smtp_mails($dir) >= 1 }, 10), 'an e-mail reached the SMTP server');
my ($mail) = smtp_mails($dir);
like($mail, qr/^MAIL FROM:<noreply\@defarm\.test>$/m, '... from the configured sender');
like($mail, qr/^RCPT TO:<\Q$email\E>$/m, '... to the account\'s address');
like($mail, qr/^Subject: DeFarm password reset\r?$/m, '... with its subject');
my ($token) = $mail =~ /^    ([0-9a-f]{32,})\r?$/m;
ok($token, '... and the token');
is(http($ng, POST => '/api/auth/reset-password',
        headers => { 'Content-Type' => 'application/json' },
        body => $json->encode({ token => $token // '', new_password => 'N3w!passw0rd' }))->{status},
   200, 'the token from the e-mail resets the password');
ok(wait_until(sub { sql("SELECT state FROM jobs WHERE kind = 'email' AND payload ->> 'to' = '$email'") eq 'Done' }, 10),
   'the job is Done');
is(sql("SELECT attempts FROM jobs WHERE payload ->> 'to' = '$email'"), 1, '... in one attempt');
is(sql("SELECT count(*) FROM jobs WHERE payload ->> 'to' = '$email' AND payload::text LIKE '%$token%'"), 0,
   '... and keeps no token');
is(sql("SELECT payload -> 'scrubbed' FROM jobs WHERE payload ->> 'to' = '$email'"), '["text"]',
   '... it says what it dropped');

# the hourly limit (3): the fourth request makes no e-mail
forgot($ng, $email) for 1 .. 3;
is(email_jobs($email), 3, 'three resets an hour: three e-mails');
ok(wait_until(sub { sql("SELECT count(*) FROM jobs WHERE payload ->> 'to' = '$email' AND state = 'Done'") == 3 }, 10),
   '... all three sent');
is(scalar(smtp_mails($dir)), 3, '... and received');
smtp_stop($sink);
stop_nginx($ng);

# ---------------------------------------- refused twice, then accepted

$sink = smtp_sink($dir, refuse_first => 2);
$ng = node('jobs-email-retry', $sink->{port});
my $v = api_user($ng, "t090_b_$$");
my $vmail = "t090_b_$$\@example.com";
is(forgot($ng, $vmail)->{status}, 200, 'forgot-password with a server refusing twice');
ok(wait_until(sub { smtp_mails($dir) >= 1 }, 30), 'the e-mail arrives after all');
my $row = sql("SELECT state || ' ' || attempts FROM jobs WHERE payload ->> 'to' = '$vmail'");
ok(wait_until(sub { sql("SELECT state || ' ' || attempts FROM jobs WHERE payload ->> 'to' = '$vmail'") eq 'Done 3' },
              10), 'Done on the third attempt');
like(sql("SELECT last_error FROM jobs WHERE payload ->> 'to' = '$vmail'"), qr/./, '... the last error kept');
my @warn = $ng->log =~ /job \d+ \(email\) attempt (\d) failed/g;
is("@warn", '1 2', '... two failed attempts logged');
is(scalar(smtp_mails($dir)), 1, '... one message');
smtp_stop($sink);
stop_nginx($ng);

# ------------------------------------ a worker killed while it holds a job

$sink = smtp_sink($dir, stall_first => 1);
$ng = node('jobs-email-kill', $sink->{port}, '', master => 1);
my $w = api_user($ng, "t090_c_$$");
my $wmail = "t090_c_$$\@example.com";
is(forgot($ng, $wmail)->{status}, 200, 'forgot-password with a server that stalls');
ok(wait_until(sub { sql("SELECT state FROM jobs WHERE payload ->> 'to' = '$wmail'") eq 'Running' }, 10),
   'the job is leased');
SKIP: {
skip 'no master process under valgrind', 6 if valgrind();
my $master = $ng->{pid};
my @workers = split ' ', `pgrep -P $master`;
ok(@workers >= 1, 'the worker');
kill 'KILL', @workers;
ok(wait_until(sub { smtp_mails($dir) >= 1 }, 30), 'after the lease: sent by another worker');
ok(wait_until(sub { sql("SELECT state FROM jobs WHERE payload ->> 'to' = '$wmail'") eq 'Done' }, 10), '... Done');
is(sql("SELECT attempts FROM jobs WHERE payload ->> 'to' = '$wmail'"), 2, '... on its second attempt');
sleep 1;
is(scalar(smtp_mails($dir)), 1, '... once');
}
smtp_stop($sink);

# under valgrind nothing was killed: the stalled job is still leased, and
# is not the next sections' to claim and count
sql("UPDATE jobs SET state = 'Dead', lease_token = NULL "
    . "WHERE payload ->> 'to' = '$wmail' AND state = 'Running'") if valgrind();

# --------------------------------------------- no attempt left, or none

# the server gone: each attempt fails at once, two allowed
my $dead = sql("SELECT defarm_job_enqueue('email', jsonb_build_object('to', 'x\@example.com', "
               . "'subject', 's', 'text', 't'), 2, 50, 100)");
ok(wait_until(sub { sql("SELECT state FROM jobs WHERE job_id = $dead") eq 'Dead' }, 15),
   'a job whose server is gone: Dead');
is(sql("SELECT attempts FROM jobs WHERE job_id = $dead"), 2, '... after its two attempts');
my $bad = sql("SELECT defarm_job_enqueue('email', '{\"subject\": \"s\", \"text\": \"t\"}', 5)");
ok(wait_until(sub { sql("SELECT state FROM jobs WHERE job_id = $bad") eq 'Dead' }, 10),
   'a message without a recipient: Dead');
is(sql("SELECT attempts FROM jobs WHERE job_id = $bad"), 1, '... at once, not retried');
my $crlf = sql("SELECT defarm_job_enqueue('email', jsonb_build_object('to', 'x\@example.com', "
               . "'subject', E'a\\r\\nBcc: y\@example.com', 'text', 't'), 5)");
ok(wait_until(sub { sql("SELECT state FROM jobs WHERE job_id = $crlf") eq 'Dead' }, 10),
   'a subject with a line break (a header injected): Dead');
# (valgrind's own file limit makes nginx's setrlimit fail: not ours)
unlike(join('', grep { !/exited on signal 9/ && !(valgrind() && /setrlimit/) } split /^/, $ng->log),
       qr/\[(alert|crit|emerg)\]/, 'no alert in error.log but the kill');
stop_nginx($ng);

# a node with a server that refuses every time: Dead after max_attempts
$sink = smtp_sink($dir, refuse_first => 1000);
$ng = node('jobs-email-dead', $sink->{port});
my $gone = sql("SELECT defarm_job_enqueue('email', jsonb_build_object('to', 'x\@example.com', "
               . "'subject', 's', 'text', 't'), 3, 50, 100)");
ok(wait_until(sub { sql("SELECT state FROM jobs WHERE job_id = $gone") eq 'Dead' }, 15),
   'a server refusing every attempt: Dead');
is(sql("SELECT attempts FROM jobs WHERE job_id = $gone"), 3, '... after max_attempts (3)');
like(sql("SELECT last_error FROM jobs WHERE job_id = $gone"), qr/./, '... with its last error');
is(scalar(smtp_mails($dir)), 0, '... nothing delivered');
is(metric($ng, 'defarm_jobs_dead_total'), 1, '/metrics: one job dead');
is(metric($ng, 'defarm_jobs_retried_total'), 2, '... after two retried attempts');
is(metric($ng, 'defarm_jobs_claimed_total'), 3, '... of three claimed');
smtp_stop($sink);
unlike($ng->log, qr/\[(alert|crit|emerg)\]/, 'no alert in error.log');
stop_nginx($ng);

done_testing();
