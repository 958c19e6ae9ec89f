package DefarmTest;

# ---------------------------------------------------------------------------
# DefarmTest -- helpers for the standalone test files: the ones that need
# what the Test::Nginx block format cannot express (several requests in
# flight at once, PostgreSQL stopped mid-test, a header compared with the
# body, a client that goes away).
#
#   use Test::More;
#   use DefarmTest;
#
#   my $ng = start_nginx(name => 'pool', http => db_config(size => 1),
#                        server => 'location / { defarm_api on; }');
#   my $res = http($ng, GET => '/health/db');      # {status, headers, body}
#   is(sql("SELECT count(*) FROM users"), 0, 'no users');
#   ok(wait_until(sub { metric($ng, 'defarm_db_busy') == 0 }, 10, 'idle'));
#   stop_nginx($ng);
#   done_testing();
#
# Every nginx is a single process (master_process off) on its own port and
# in its own t/servroot-<name>.  Under TEST_NGINX_USE_VALGRIND=1 it runs in
# the foreground under valgrind memcheck, and stop_nginx() adds one test:
# valgrind.log must be empty.
#
# The whole file is skipped unless "make test" (scripts/test.sh) set the
# environment: TEST_NGINX_LOAD_MODULES and TEST_NGINX_PG_PORT at least.
# ---------------------------------------------------------------------------

use strict;
use warnings;

use Exporter 'import';
use Cwd ();
use File::Basename ();
use File::Path ();
use File::Spec ();
use File::Temp ();
use IO::Socket::INET ();
use POSIX ();
use Storable ();
use Test::More ();
use Time::HiRes ();
use JSON::PP ();

our @EXPORT = qw(
    start_nginx stop_nginx http http_bg http_wait abort_request metric
    wait_until pg_stop pg_start db_config valgrind rss_is_nginx jwt_secret
    auth_config
    sql redis_start redis_stop redis_pid json_body api_user api_as
    stale_documents is_err
);

BEGIN {
    for my $var (qw(TEST_NGINX_LOAD_MODULES TEST_NGINX_PG_PORT)) {
        next if $ENV{$var};
        Test::More::plan(skip_all => "$var is not set (run it with make test)");
    }
}

# the repository's top directory: this file is t/lib/DefarmTest.pm
my $Top = Cwd::abs_path(File::Basename::dirname(__FILE__) . '/../..');

my $Valgrind = $ENV{TEST_NGINX_USE_VALGRIND} ? 1 : 0;
my $Nginx    = $ENV{TEST_NGINX_BINARY} || 'nginx';
my $MainPid  = $$;      # forked children never clean up
my %Running;            # servroot => handle, for the END block
my %Redis;              # redis_start() dirs, stopped at the end
my $PgStopped = 0;      # pg_stop() was called without a pg_start() yet

# jwt_secret() -> ($secret, $path): a random 48-character HS256 secret in
# a file for defarm_jwt_secret, made once per test file and removed when
# that file ends (not by the children it forks).
my ($JwtSecret, $JwtSecretFile, $JwtSecretOwner);

sub jwt_secret {
    unless ($JwtSecretFile) {
        $JwtSecret = join '', map { ('A' .. 'Z', 'a' .. 'z', 0 .. 9)[rand 62] }
                     1 .. 48;
        $JwtSecretFile = "/tmp/defarm-test-jwt-$$.secret";
        $JwtSecretOwner = $$;
        open my $fh, '>:raw', $JwtSecretFile or die "$JwtSecretFile: $!\n";
        print $fh $JwtSecret;
        close $fh or die "$JwtSecretFile: $!\n";
    }
    return ($JwtSecret, $JwtSecretFile);
}

END { unlink $JwtSecretFile if $JwtSecretFile && $$ == $JwtSecretOwner }

# auth_config(cost => 4, log => 'on', limit => 3) -> the http{} text of an
# auth test: the database, bcrypt's cost (default 4, for speed), the
# secret of jwt_secret(), and the password reset directives when given.
sub auth_config {
    my (%o) = @_;
    my (undef, $file) = jwt_secret();
    my $http = db_config(size => 4) . "\n";
    $http .= "    defarm_bcrypt_cost " . ($o{cost} // 4) . ";\n";
    $http .= "    defarm_jwt_secret file=$file;\n";
    $http .= "    defarm_password_reset_log $o{log};\n" if defined $o{log};
    $http .= "    defarm_password_reset_limit $o{limit};\n"
        if defined $o{limit};
    return $http;
}

# Is nginx running under valgrind?  Tests use it to stretch their waits.
sub valgrind { $Valgrind }

# Is a worker's RSS its own?  Not under valgrind, nor with the sanitizers
# of "make asan" (TEST_NGINX_SANITIZED): their quarantine of freed blocks
# is in it.  Memory figures are asserted only when it is.
sub rss_is_nginx { !$Valgrind && !$ENV{TEST_NGINX_SANITIZED} }

# ------------------------------------------------------------ small helpers

sub slurp {
    my ($file, $offset) = @_;
    open my $fh, '<:raw', $file or return '';
    seek $fh, $offset, 0 if $offset && $offset <= (-s $fh || 0);
    local $/;
    return scalar(<$fh>) // '';
}

# A live process, not a zombie (the daemonised nginx is reaped by init).
sub alive {
    my ($pid) = @_;
    return 0 unless $pid && kill 0, $pid;
    my $stat = slurp("/proc/$pid/stat");
    return $stat !~ /^\d+ \(.*\) [ZX]/s;
}

# Is a socket in LISTEN state on 127.0.0.1:$port?  Read from /proc rather
# than connecting, so that no probe connection shows in error.log.
sub listening {
    my ($port) = @_;
    my $want = sprintf ':%04X', $port;
    for my $line (split /\n/, slurp('/proc/net/tcp')) {
        my @col = split ' ', $line;
        return 1 if @col > 3 && $col[1] =~ /\Q$want\E$/ && $col[3] eq '0A';
    }
    return 0;
}

# Run a command with stdin from /dev/null and stdout+stderr to $out.
sub spawn {
    my ($out, @cmd) = @_;
    my $pid = fork // die "fork: $!\n";
    return $pid if $pid;
    open STDIN, '<', '/dev/null';
    open STDOUT, '>>', $out or POSIX::_exit(126);
    open STDERR, '>&', \*STDOUT;
    { no warnings 'exec'; exec { $cmd[0] } @cmd; }
    print STDERR "cannot run $cmd[0]: $!\n";
    POSIX::_exit(127);
}

# ------------------------------------------------------------------- nginx

# start_nginx(name => 'pool', http => $text, server => $text) -> handle:
# { name, port, root, pid }, with $h->log($mark) and $h->log_mark.
# master => 1 runs a master process and one worker (what a reload needs);
# $h->{pid} is then the master's.  connections => N sets
# worker_connections (256 by default).
sub start_nginx {
    my (%opt) = @_;
    my $name = $opt{name} // die "start_nginx: name => is required\n";
    die "start_nginx: bad name '$name'\n" unless $name =~ /^[\w.-]+$/;

    # Away from the block runner's port: +10 and a small hash of the name.
    my $port = ($ENV{TEST_NGINX_SERVER_PORT} || 1984) + 10
             + unpack('%32C*', $name) % 50;
    my $root = "$Top/t/servroot-$name";

    File::Path::remove_tree($root);
    File::Path::make_path(map { "$root/$_" } qw(conf logs tmp));

    my $modules = join '', map { 'load_module ' . File::Spec->rel2abs($_) . ";\n" }
                  split ' ', $ENV{TEST_NGINX_LOAD_MODULES};

    # under valgrind these two come with -g on the command line instead
    my $master = $opt{master} ? 'on' : 'off';
    my $proc = $Valgrind ? '' : "master_process $master;\ndaemon on;\n";

    my $http = $opt{http} // '';
    my $server = $opt{server} // '';
    # metrics are served by defarm_health only (metric() reads them)
    $server .= "\n        location = /metrics { defarm_health on; }\n"
        unless $server =~ m{location\s*=\s*/metrics\b};
    my $conns = $opt{connections} // 256;
    my $nofile = $conns * 2 + 64;

    open my $fh, '>', "$root/conf/nginx.conf" or die "$root: $!\n";
    print $fh <<"_EOC_";
# generated by t/lib/DefarmTest.pm for $0
$modules
worker_processes 1;
${proc}error_log $root/logs/error.log info;
pid $root/logs/nginx.pid;
worker_rlimit_nofile $nofile;

events { worker_connections $conns; }

http {
    access_log off;
    client_body_temp_path $root/tmp/body;
    proxy_temp_path $root/tmp/proxy;
    fastcgi_temp_path $root/tmp/fastcgi;
    uwsgi_temp_path $root/tmp/uwsgi;
    scgi_temp_path $root/tmp/scgi;

$http

    server {
        listen 127.0.0.1:$port;

$server
    }
}
_EOC_
    close $fh or die "$root: $!\n";

    my $h = bless { name => $name, port => $port, root => $root },
                  'DefarmTest::Nginx';
    my $stderr = "$root/logs/stderr.log";
    my @cmd = ($Nginx, '-p', "$root/", '-c', "$root/conf/nginx.conf");

    if ($Valgrind) {
        # in the foreground: the process we fork is nginx itself
        $h->{child} = spawn($stderr, qw(valgrind -q --tool=memcheck
            --leak-check=full --show-possibly-lost=no --num-callers=50),
            "--suppressions=$Top/valgrind.suppress",
            # one log per process: with a master, the workers too
            "--log-file=$root/logs/valgrind.log.%p",
            @cmd, '-g', "daemon off; master_process $master;");
        $h->{pid} = $h->{child};

    } else {
        # "daemon on": the command exits once the sockets are bound
        my $pid = spawn($stderr, @cmd);
        waitpid $pid, 0;
        die "nginx '$name' did not start (exit " . ($? >> 8) . ")\n"
            . slurp($stderr) . slurp("$root/logs/error.log") if $?;
    }

    $Running{$root} = $h;

    my $deadline = Time::HiRes::time() + ($Valgrind ? 30 : 10);
    while (1) {
        $h->{pid} //= (slurp("$root/logs/nginx.pid") =~ /^(\d+)/)[0];
        last if $h->{pid} && alive($h->{pid}) && listening($port);

        if (Time::HiRes::time() > $deadline
            || ($h->{child} && waitpid($h->{child}, POSIX::WNOHANG()) != 0))
        {
            stop_nginx($h, quiet => 1);
            die "nginx '$name' is not listening on port $port\n"
                . slurp($stderr) . slurp("$root/logs/error.log")
                . join("", map { slurp($_) } glob("$root/logs/valgrind.log*"));
        }

        Time::HiRes::sleep(0.02);
    }

    return $h;
}

# stop_nginx($h): SIGQUIT, wait for the exit (SIGKILL after 10 s, 60 s
# under valgrind), then under valgrind one test: valgrind.log is empty.
sub stop_nginx {
    my ($h, %opt) = @_;
    return if !$h || $h->{stopped}++;
    delete $Running{ $h->{root} };

    my $gone = sub {
        return !alive($h->{pid}) unless $h->{child};
        return waitpid($h->{child}, POSIX::WNOHANG()) != 0;
    };
    # A single-process nginx notices a signal when epoll_wait() fails with
    # EINTR; one that arrives just before it blocks is only seen at the
    # next timer (up to 30 s later).  So QUIT is sent again every second.
    my $wait = sub {
        my ($secs, $signal) = @_;
        my $start = Time::HiRes::time();
        my $next = $start;
        until ($gone->()) {
            my $now = Time::HiRes::time();
            return 0 if $now > $start + $secs;
            if ($signal && $now >= $next) {
                kill $signal, $h->{pid};
                $next = $now + 1;
            }
            Time::HiRes::sleep(0.02);
        }
        return 1;
    };

    if ($h->{pid} && !$gone->()) {
        my $grace = $Valgrind ? 60 : 10;
        unless ($wait->($grace, 'QUIT')) {
            Test::More::diag("nginx '$h->{name}' still running ${grace}s"
                             . " after SIGQUIT: SIGKILL");
            kill 'KILL', $h->{pid};
            $wait->(5);
        }
    }

    return unless $Valgrind;

    my $report = join '', map { slurp($_) }
                 sort glob("$h->{root}/logs/valgrind.log*");
    if ($report =~ /\S/) {
        Test::More::ok(0, "$h->{name}: valgrind: no reports") unless $opt{quiet};
        Test::More::diag("valgrind report for nginx '$h->{name}'"
                         . " ($h->{root}/logs/valgrind.log.*):\n$report");
    } elsif (!$opt{quiet}) {
        Test::More::ok(1, "$h->{name}: valgrind: no reports");
    }
}

# A test that dies (or is interrupted) leaves no nginx and no stopped
# PostgreSQL behind: the later test files need the database.
END {
    if ($$ == $MainPid) {
        local $?;
        stop_nginx($_, quiet => 1) for values %Running;
        for my $dir (keys %Redis) {
            kill 'CONT', redis_pid($dir) if redis_pid($dir);
            system("cd $Top && scripts/redis.sh stop $dir");
        }
        if ($PgStopped) {
            eval { pg_start(); 1 }
                or Test::More::diag("could not restart PostgreSQL: $@");
        }
    }
}

for my $sig (qw(INT TERM HUP)) {
    $SIG{$sig} ||= sub { exit 1 };       # so that the END block runs
}

# ------------------------------------------------------------ HTTP client

sub request_bytes {
    my ($method, $path, %opt) = @_;
    my %hdr = %{ $opt{headers} || {} };
    my %has = map { lc $_ => 1 } keys %hdr;
    my $body = $opt{body};

    my @lines = ("$method $path HTTP/1.1");
    push @lines, 'Host: localhost' unless $has{host};
    push @lines, 'Connection: close' unless $has{connection};

    if (defined $body) {
        utf8::encode($body) if utf8::is_utf8($body);    # bytes on the wire
        push @lines, 'Content-Length: ' . length $body
            unless $has{'content-length'};
        push @lines, 'Content-Type: application/json'
            unless $has{'content-type'};
    }

    push @lines, map { "$_: $hdr{$_}" } sort keys %hdr;

    return join('', map { "$_\r\n" } @lines) . "\r\n" . ($body // '');
}

sub connect_and_send {
    my ($h, $bytes, $timeout) = @_;
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                     PeerPort => $h->{port},
                                     Proto => 'tcp', Timeout => $timeout)
        or return (undef, "cannot connect to port $h->{port}: $@");
    local $SIG{PIPE} = 'IGNORE';
    binmode $sock;
    my $off = 0;
    while ($off < length $bytes) {
        my $n = syswrite $sock, $bytes, length($bytes) - $off, $off;
        last unless $n;     # an early answer (413) may close the socket
        $off += $n;
    }
    return ($sock);
}

sub parse_response {
    my ($raw) = @_;
    my %res = (status => undef, headers => {}, body => '');
    my ($head, $rest) = split /\r\n\r\n/, $raw, 2;
    return { %res, error => 'no complete response header' }
        unless defined $rest;

    my ($status_line, @lines) = split /\r\n/, $head;
    ($res{status}) = $status_line =~ m{^HTTP/1\.\d (\d{3})};
    for (@lines) {
        next unless /^([^:]+):\s*(.*?)\s*$/;
        my $k = lc $1;
        $res{headers}{$k} = exists $res{headers}{$k}
                          ? "$res{headers}{$k}, $2" : $2;
    }

    if (($res{headers}{'transfer-encoding'} // '') =~ /chunked/i) {
        while ($rest =~ s/^([0-9a-fA-F]+)[^\r\n]*\r\n//) {
            my $size = hex $1;
            last if $size == 0;
            $res{body} .= substr $rest, 0, $size, '';
            $rest =~ s/^\r\n//;
        }
    } elsif (defined(my $len = $res{headers}{'content-length'})) {
        $res{body} = substr $rest, 0, $len;
    } else {
        $res{body} = $rest;
    }

    return \%res;
}

# http($h, $method, $path, body => $bytes, headers => {...}, timeout => s)
# -> {status, headers => {lowercased name => value}, body}, and error =>
# why when no complete response came (status is then undef).
sub http {
    my ($h, $method, $path, %opt) = @_;
    my $timeout = $opt{timeout} // ($Valgrind ? 60 : 10);
    my $deadline = Time::HiRes::time() + $timeout;

    my ($sock, $err) = connect_and_send($h, request_bytes($method, $path, %opt),
                                        $timeout);
    return { status => undef, headers => {}, body => '', error => $err }
        unless $sock;

    # Connection: close, so the response ends when nginx closes
    my $raw = '';
    while (1) {
        my $left = $deadline - Time::HiRes::time();
        if ($left <= 0) {
            $err = "no answer within ${timeout}s";
            last;
        }
        my $rin = '';
        vec($rin, fileno $sock, 1) = 1;
        next unless select($rin, undef, undef, $left) > 0;
        my $n = sysread $sock, $raw, 65536, length $raw;
        next if !defined $n && $!{EINTR};
        last unless $n;                   # EOF or an error (a reset)
    }
    close $sock;

    my $res = parse_response($raw);
    $res->{error} //= $err if $err;
    return $res;
}

# http_bg(same arguments as http) -> handle: the request runs in a child
# process; http_wait($handle) waits for it and returns what http() did.
sub http_bg {
    my @args = @_;
    my ($fh, $file) = File::Temp::tempfile('defarm-bg-XXXXXX', TMPDIR => 1);
    close $fh;

    my $pid = fork // die "fork: $!\n";
    if (!$pid) {
        my $res = eval { http(@args) }
                  || { status => undef, headers => {}, body => '', error => $@ };
        Storable::nstore($res, $file);
        POSIX::_exit(0);                  # no END blocks in the child
    }

    return { pid => $pid, file => $file };
}

sub http_wait {
    my ($bg) = @_;
    waitpid $bg->{pid}, 0;
    my $res = eval { Storable::retrieve($bg->{file}) }
              || { status => undef, headers => {}, body => '',
                   error => 'the background request left no result' };
    unlink $bg->{file};
    return $res;
}

# abort_request($h, $method, $path, %opt): send the request, then close the
# socket without reading anything, `after => seconds` later (0.1 by
# default).  With `wait_for => sub {...}` it first waits (up to `timeout`)
# until that returns true, and returns whether it did.
sub abort_request {
    my ($h, $method, $path, %opt) = @_;
    my $timeout = $opt{timeout} // ($Valgrind ? 60 : 10);
    my ($sock, $err) = connect_and_send($h, request_bytes($method, $path, %opt),
                                        $timeout);
    die "abort_request: $err\n" unless $sock;

    my $ok = 1;
    $ok = wait_until($opt{wait_for}, $timeout, 'abort_request: wait_for')
        if $opt{wait_for};
    Time::HiRes::sleep($opt{after} // 0.1);
    close $sock;
    return $ok;
}

# metric($h, 'defarm_db_busy') -> the value on that line of GET /metrics,
# or undef.
sub metric {
    my ($h, $name) = @_;
    my $res = http($h, GET => '/metrics');
    return undef unless ($res->{status} // 0) == 200;
    return $res->{body} =~ /^\Q$name\E (\S+)$/m ? $1 + 0 : undef;
}

# wait_until(sub { ... }, $timeout, 'what') -> true as soon as the code
# returns true (polled every 20 ms), false once $timeout seconds passed.
sub wait_until {
    my ($code, $timeout, $what) = @_;
    $timeout //= $Valgrind ? 30 : 10;
    my $deadline = Time::HiRes::time() + $timeout;
    until ($code->()) {
        if (Time::HiRes::time() > $deadline) {
            Test::More::diag("gave up after ${timeout}s waiting for "
                             . ($what // 'a condition'));
            return 0;
        }
        Time::HiRes::sleep(0.02);
    }
    return 1;
}

# ------------------------------------------------------------- PostgreSQL

sub pg_script {
    my ($cmd) = @_;
    my $dir = $ENV{TEST_NGINX_PG_DATA}
        or die "TEST_NGINX_PG_DATA is not set\n";

    my $pid = open(my $out, '-|') // die "fork: $!\n";
    if (!$pid) {
        chdir $Top or POSIX::_exit(126);
        open STDERR, '>&', \*STDOUT;
        { no warnings 'exec'; exec 'scripts/pg.sh', $cmd, $dir; }
        POSIX::_exit(127);
    }
    my $text = do { local $/; <$out> } // '';
    close $out;
    die "scripts/pg.sh $cmd $dir failed:\n$text" if $?;
}

# Stop and restart the test PostgreSQL (the same port again).
# json_body($res) -> the response body decoded from JSON ({} if it is not)
sub json_body {
    my ($res) = @_;
    return eval { JSON::PP->new->utf8->decode($res->{body}) } // {};
}

# api_user($h, $name) -> {token, id}: a user registered through the API
# (password Str0ng!pass, e-mail <name>@example.com)
sub api_user {
    my ($h, $name) = @_;
    my $res = http($h, POST => '/api/auth/register',
                   headers => { 'Content-Type' => 'application/json' },
                   body => JSON::PP->new->utf8->encode({
                       username => $name, password => 'Str0ng!pass',
                       email => "$name\@example.com" }));
    my $b = json_body($res);
    return { token => $b->{token}, id => $b->{user_id} };
}

# api_as($h, $user, METHOD => $path, $body) -> http() as that user; the
# body a reference (sent as JSON) or a string (sent as it is)
sub api_as {
    my ($h, $who, $method, $path, $body) = @_;
    return http($h, $method, $path,
                headers => { 'Content-Type' => 'application/json',
                             Authorization => "Bearer $who->{token}" },
                defined $body
                    ? (body => ref $body
                               ? JSON::PP->new->utf8->canonical->encode($body)
                               : $body)
                    : ());
}

# redis_start($dir) -> the port of a Redis of the test's own, in $dir (the
# same port when started again after redis_stop($dir)); redis_pid($dir).
sub redis_start {
    my ($dir) = @_;
    my $out = `cd $Top && scripts/redis.sh start $dir 2>&1`;
    die "scripts/redis.sh start $dir failed:\n$out" if $?;
    $Redis{$dir} = 1;
    return ($out =~ /REDIS_PORT=(\d+)/)[0];
}

sub redis_stop {
    my ($dir) = @_;
    delete $Redis{$dir};
    system("cd $Top && scripts/redis.sh stop $dir") == 0
        or die "scripts/redis.sh stop $dir failed\n";
}

sub redis_pid {
    my ($dir) = @_;
    my $pid = slurp("$dir/redis.pid") // '';
    chomp $pid;
    return $pid;
}

sub pg_stop  { $PgStopped = 1; pg_script('stop') }
sub pg_start { pg_script('start'); $PgStopped = 0 }

# sql($statement) -> what psql -X -qAt printed for it against the test
# database (rows on lines, columns split by "|"), trimmed; a failing
# statement (ON_ERROR_STOP) is reported with diag().  Test::Nginx block
# files can take it alone: use DefarmTest qw(sql);
sub sql {
    my ($statement) = @_;
    my @cmd = ('psql', '-X', '-qAt', '-v', 'ON_ERROR_STOP=1',
               '-h', $ENV{TEST_NGINX_PG_HOST}, '-p', $ENV{TEST_NGINX_PG_PORT},
               '-U', $ENV{TEST_NGINX_PG_USER},
               '-d', $ENV{TEST_NGINX_PG_DATABASE}, '-c', $statement);
    open my $fh, '-|', @cmd or die "cannot run psql: $!\n";
    my $out = do { local $/; <$fh> } // '';
    close $fh;
    Test::More::diag("psql failed (exit " . ($? >> 8) . "): $statement")
        if $?;
    $out =~ s/\A\s+|\s+\z//g;
    return $out;
}

# is_err($res, $status, qr/message/, $tag): an API error of that status
# whose "error" matches
sub is_err {
    my ($res, $status, $re, $tag) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    Test::More::is($res->{status}, $status, "$tag: $status");
    Test::More::like(json_body($res)->{error} // '', $re, "$tag: the message");
}

# stale_documents() -> how many items' stored JSON (items.doc) is not what
# PostgreSQL renders for them now: 0 after any writes (sql/013)
sub stale_documents {
    return sql("SELECT count(*) FROM items "
               . "WHERE doc IS DISTINCT FROM defarm_item_json(dfid)::text");
}

# db_config(size => 1, queue => 0, ...) -> the defarm_db directive for the
# test PostgreSQL, with the parameters given (the others left out);
# conninfo => 'key=value ...' adds to the connection string.
sub db_config {
    my (%opt) = @_;
    my $conninfo = "host=$ENV{TEST_NGINX_PG_HOST} port=$ENV{TEST_NGINX_PG_PORT}"
                 . " dbname=$ENV{TEST_NGINX_PG_DATABASE}"
                 . " user=$ENV{TEST_NGINX_PG_USER}"
                 . (defined $opt{conninfo} ? " $opt{conninfo}" : '');
    my @params = map { " $_=$opt{$_}" } grep { defined $opt{$_} }
                 qw(size queue queue_timeout connect_timeout retry_max);
    return qq{defarm_db "$conninfo"} . join('', @params) . ';';
}

# ------------------------------------------------------ the nginx handle

package DefarmTest::Nginx;

# $h->log: error.log so far; $h->log($mark): what was written since
# $mark = $h->log_mark.
sub log      { my ($h, $mark) = @_; DefarmTest::slurp("$h->{root}/logs/error.log", $mark) }
sub log_mark { my ($h) = @_; -s "$h->{root}/logs/error.log" || 0 }

1;
