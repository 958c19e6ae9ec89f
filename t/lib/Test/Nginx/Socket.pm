package Test::Nginx::Socket;

# ---------------------------------------------------------------------------
# Test::Nginx::Socket -- a small test scaffold for nginx C modules, written
# from scratch for this project.  It reads the same data-driven block format
# as the CPAN/OpenResty Test::Nginx::Socket, so our .t files run unchanged
# under either.  Only documented sections and helpers are supported.
#
# Built on Test::Base: __DATA__ parsing, blocks(), --- ONLY/SKIP/LAST and
# filters such as `eval` and `chomp` come from there.
#
# NOTE: `use Test::Base -Base` turns on Spiffy's source filter, which makes
# every `sub foo {` a method (it inserts `my $self = shift;`).  All subs in
# this file are declared as `sub foo () {`: the filter strips the `()` and
# leaves a plain function that gets its arguments in @_ as usual.
#
# Per block, in file order, repeated repeat_each() times:
#   1. skip_nginx / skip_eval / init
#   2. write servroot/conf/nginx.conf and --- user_files
#   3. (re)start nginx if the config changed or it is not running (always in
#      valgrind mode), then wait until it listens
#   4. send the request(s), each on its own connection, and parse responses
#   5. check status, headers, body, and the part of error.log this block wrote
#   6. valgrind mode: stop nginx and fail if valgrind.log has anything in it
# ---------------------------------------------------------------------------

use Test::Base -Base;

use Cwd ();
use File::Basename ();
use File::Path ();
use File::Spec ();
use IO::Socket::INET ();
use List::Util ();
use POSIX ();
use Time::HiRes ();

our @EXPORT = qw(
    run_tests repeat_each no_shuffle shuffle log_level workers master_on
    master_off no_root_location env_to_nginx add_block_preprocessor
    worker_connections server_port server_addr html_dir server_root
    no_long_string
    $ServerPort $ServerAddr $ServRoot $NginxBinary $RepeatEach
);

# ----------------------------------------------------------------- settings

our $ServerAddr = '127.0.0.1';
our $ServerPort = $ENV{TEST_NGINX_SERVER_PORT} || $ENV{TEST_NGINX_PORT} || 1984;
our $ServRoot   = File::Spec->rel2abs($ENV{TEST_NGINX_SERVROOT} || 't/servroot');
$ServRoot =~ s{/+\z}{};
our $NginxBinary = $ENV{TEST_NGINX_BINARY} || find_in_path('nginx')
                   || '/usr/sbin/nginx';

our $UseValgrind  = $ENV{TEST_NGINX_USE_VALGRIND} ? 1 : 0;
our $LogLevel     = $ENV{TEST_NGINX_LOG_LEVEL} || 'debug';
our $Timeout      = $ENV{TEST_NGINX_TIMEOUT} || 3;          # seconds
our $LogSleep     = $ENV{TEST_NGINX_SLEEP} // 0.1;          # before reading logs
our $NoClean      = $ENV{TEST_NGINX_NO_CLEAN} ? 1 : 0;
our $ForceRestart = $ENV{TEST_NGINX_FORCE_RESTART_ON_TEST} ? 1 : 0;

our $RepeatEach        = 1;
our $Workers           = 1;
our $MasterOn          = 0;
our $NoRootLocation    = 0;
our $WorkerConnections = 64;
our $NoLongString      = 0;
our $Shuffle           = 0;    # accepted for compatibility; we never shuffle
our @EnvToNginx;
our @BlockPreprocessors;

# Always defined, so config sections can use them.
$ENV{TEST_NGINX_SERVER_PORT} = $ServerPort;
$ENV{TEST_NGINX_SERVROOT}    = $ServRoot;
$ENV{TEST_NGINX_HTML_DIR}    = "$ServRoot/html";

# ------------------------------------------------------------- process state

my $MainPid = $$;      # END/signal cleanup only in the test process itself
my $RunningConf;       # nginx.conf text the running nginx was started with
my $ChildPid;          # valgrind mode: the foreground nginx we forked
my $ChildStatus;       # ... and its wait status once reaped
my $Prepared = 0;      # servroot set up for this file?

# Stop nginx whenever this process ends: normal exit, die, or a signal.
END {
    if ($$ == $MainPid) {
        local $?;      # keep the test script's exit status
        stop_nginx();
    }
}
for my $sig (qw(INT TERM HUP)) {
    $SIG{$sig} = sub { warn "caught SIG$sig, stopping nginx\n"; exit 1 }
        unless $SIG{$sig};
}

# ------------------------------------------------------ exported functions

sub repeat_each () { $RepeatEach = shift if @_; $RepeatEach }
sub no_shuffle ()  { $Shuffle = 0 }
sub shuffle ()     { $Shuffle = 1 }       # blocks still run in file order
sub log_level ()   { $LogLevel = shift if @_; $LogLevel }
sub master_on ()   { $MasterOn = 1 }
sub master_off ()  { $MasterOn = 0 }
sub no_root_location () { $NoRootLocation = 1 }
sub no_long_string ()   { $NoLongString = 1 }
sub env_to_nginx ()     { push @EnvToNginx, @_ }
sub add_block_preprocessor () { push @BlockPreprocessors, @_ }
sub server_port () { $ServerPort }
sub server_addr () { $ServerAddr }
sub server_root () { $ServRoot }
sub html_dir ()    { "$ServRoot/html" }

sub workers () { if (@_) { $Workers = shift; $MasterOn = 1 if $Workers > 1 } $Workers }
sub worker_connections () { $WorkerConnections = shift if @_; $WorkerConnections }

sub run_tests () {
    # Without a plan, Test::Base's END would try run_compare(); be kind.
    Test::More::plan('no_plan') unless Test::Builder->new->has_plan;
    prepare_servroot() unless $Prepared++;
    for my $block (blocks()) {
        $_->($block) for @BlockPreprocessors;
        for my $rep (1 .. $RepeatEach) {
            eval { run_block($block, $rep); 1 }
                or die sec($block, 'name') . ": $@";
        }
    }
    stop_nginx();
}

# --------------------------------------------------------- small utilities

sub find_in_path () {
    my $prog = shift;
    return List::Util::first { -f $_ && -x _ }
           map { "$_/$prog" } grep { length } split /:/, $ENV{PATH} // '';
}

sub slurp () {
    my ($file, $offset) = @_;
    open my $fh, '<:raw', $file or return '';
    my $size = -s $fh;
    $offset = 0 if !$offset || $offset > $size;    # truncated meanwhile
    seek $fh, $offset, 0;
    local $/;
    my $data = <$fh>;
    return $data // '';
}

sub spew () {
    my ($file, $data) = @_;
    File::Path::make_path(File::Basename::dirname($file));
    open my $fh, '>:raw', $file or die "cannot write $file: $!\n";
    print $fh $data;
    close $fh or die "cannot write $file: $!\n";
}

sub trim () { my $s = shift; $s =~ s/\A\s+|\s+\z//g if defined $s; $s }

# The value of a block's section, always in scalar context (a missing
# section would otherwise be an empty list and shift the other arguments).
sub sec () {
    my ($block, $section) = @_;
    return scalar $block->$section;
}

# "1.5", "2s" or "500ms" -> seconds
sub seconds () {
    my $v = trim(shift) // return undef;
    return $v =~ /^(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?$/ ? ($2 && $2 eq 'ms' ? $1 / 1000 : $1)
         : die "bad duration '$v'\n";
}

# A section value may be an array ref (from `eval`) with one entry per
# request; a plain value applies to every request.
sub pick () {
    my ($value, $idx) = @_;
    return ref $value eq 'ARRAY' ? $value->[$idx] : $value;
}

sub has_filter () {    # e.g. has_filter($block, 'request', 'eval')
    my ($block, $section, $filter) = @_;
    my $map = ($block->{_section_map} || [])->[0] || {};   # set_value stores lists
    return grep { $_ eq $filter } split ' ', $map->{$section}{filters} // '';
}

# Replace $TEST_NGINX_FOO and ${TEST_NGINX_FOO} with the environment value.
sub expand_env () {
    my ($value, $what) = @_;
    return [ map { expand_env($_, $what) } @$value ] if ref $value eq 'ARRAY';
    return $value if !defined $value || ref $value;
    $value =~ s{\$(?:\{(TEST_NGINX_\w+)\}|(TEST_NGINX_\w+))}{
        my $var = $1 // $2;
        defined $ENV{$var} ? $ENV{$var}
            : die "environment variable $var is used in --- $what but is not set\n";
    }ge;
    return $value;
}

my $NginxVersion;
sub nginx_version () {
    ($NginxVersion) = (`'$NginxBinary' -v 2>&1` // '') =~ m{nginx/([\d.]+\d)}
        unless defined $NginxVersion;
    return $NginxVersion //= '0';
}

sub version_cmp () {
    my ($x, $y) = map { [ split /\./ ] } @_;
    while (@$x || @$y) {
        my $c = (shift(@$x) // 0) <=> (shift(@$y) // 0);
        return $c if $c;
    }
    return 0;
}

# ------------------------------------------------------ servroot & config

sub prepare_servroot () {
    stop_nginx();    # a leftover from a crashed earlier run, if any
    if (!$NoClean && -d $ServRoot) {
        die "refusing to wipe servroot '$ServRoot'\n"
            if $ServRoot eq '/' || $ServRoot eq Cwd::getcwd();
        File::Path::remove_tree($ServRoot);
    }
    File::Path::make_path(map { "$ServRoot/$_" }
        qw(conf logs html client_body_temp proxy_temp fastcgi_temp
           uwsgi_temp scgi_temp));
}

sub build_config () {
    my ($block) = @_;
    my $level  = trim(sec($block, 'log_level')) || $LogLevel;
    my $master = ($MasterOn || $Workers > 1) ? 'on' : 'off';
    my $main   = expand_env(sec($block, 'main_config') // '', 'main_config');
    my $http   = expand_env(sec($block, 'http_config') // '', 'http_config');
    my $server = expand_env(sec($block, 'config') // '', 'config');
    my $modules = join '', map { 'load_module ' . File::Spec->rel2abs($_) . ";\n" }
                  split ' ', $ENV{TEST_NGINX_LOAD_MODULES} // '';
    my $env = join '', map { "env $_;\n" } @EnvToNginx;

    # In valgrind mode nginx runs in the foreground: daemon and
    # master_process are then given with -g on the command line.
    my $proc = $UseValgrind ? '' : "daemon on;\nmaster_process $master;\n";

    my $root = '';
    unless ($NoRootLocation || $server =~ m{\blocation\s+(?:\^~\s+)?/\s*\{}) {
        $root = "        location / {\n            root $ServRoot/html;\n"
              . "            index index.html index.htm;\n        }\n";
    }

    return <<"END_CONF";
# generated by t/lib/Test/Nginx/Socket.pm
${proc}worker_processes $Workers;
error_log $ServRoot/logs/error.log $level;
pid $ServRoot/logs/nginx.pid;
$modules$env
$main

events {
    accept_mutex off;
    worker_connections $WorkerConnections;
}

http {
    access_log $ServRoot/logs/access.log;
    client_body_temp_path $ServRoot/client_body_temp;
    proxy_temp_path $ServRoot/proxy_temp;
    fastcgi_temp_path $ServRoot/fastcgi_temp;
    uwsgi_temp_path $ServRoot/uwsgi_temp;
    scgi_temp_path $ServRoot/scgi_temp;
    default_type text/plain;
    keepalive_timeout 68;

$http

    server {
        listen $ServerPort;
        server_name localhost;
        client_max_body_size 30M;

$server
$root    }
}
END_CONF
}

# --- user_files: ">>> name" lines, each followed by that file's content;
# or `eval` returning [[name, content], ...].  Written under servroot/html.
sub write_user_files () {
    my ($block) = @_;
    my $spec = sec($block, 'user_files');
    return unless defined $spec;
    my @files;
    if (ref $spec eq 'ARRAY') {
        @files = map { [ $_->[0], $_->[1] // '' ] } @$spec;
    } else {
        for my $line (split /^/m, $spec) {
            if ($line =~ /^>>> (\S+)/) {
                push @files, [ $1, '' ];
            } elsif (@files) {
                $files[-1][1] .= $line;
            } elsif ($line =~ /\S/) {
                die "--- user_files: content before the first '>>> name' line\n";
            }
        }
    }
    for my $f (@files) {
        my ($name, $body) = @$f;
        die "--- user_files: bad file name '$name'\n" if $name =~ m{(^|/)\.\.(/|$)};
        spew("$ServRoot/html/$name", expand_env($body, 'user_files'));
    }
}

# -------------------------------------------------------- process control

sub pid_file ()   { "$ServRoot/logs/nginx.pid" }
sub error_log_file () { "$ServRoot/logs/error.log" }
sub log_size ()   { -s error_log_file() || 0 }

sub read_pid () {
    open my $fh, '<', pid_file() or return undef;
    my $line = <$fh> // '';
    return $line =~ /^(\d+)/ ? $1 : undef;
}

# Reap our forked valgrind/nginx child if it has exited.  True if gone.
sub reap_child () {
    return 1 unless $ChildPid;
    my $r = waitpid($ChildPid, POSIX::WNOHANG());
    return 0 if $r == 0;
    $ChildStatus = $?;
    undef $ChildPid;
    return 1;
}

# Is $pid a live process?  A zombie counts as dead (the daemonised nginx is
# reparented, and its new parent may be slow to reap it).
sub alive () {
    my $pid = shift;
    return 0 unless $pid && kill 0, $pid;
    if (open my $fh, '<', "/proc/$pid/stat") {
        my $stat = <$fh> // '';
        return 0 if $stat =~ /^\d+ \(.*\) [ZX]/s;
    }
    return 1;
}

sub nginx_alive () {
    return !reap_child() if $ChildPid;
    return alive(read_pid());
}

sub wait_gone () {
    my ($pid, $secs) = @_;
    my $deadline = Time::HiRes::time() + $secs;
    while (Time::HiRes::time() < $deadline) {
        if ($ChildPid && $pid == $ChildPid) {
            return 1 if reap_child();
        } elsif (!alive($pid)) {
            return 1;
        }
        Time::HiRes::sleep(0.02);
    }
    return 0;
}

# Children of $pid (nginx workers in master mode), from /proc.
sub child_pids () {
    my $ppid = shift;
    my @kids;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $stat or next;
        my $line = <$fh> // '';
        push @kids, $1 if $line =~ /^(\d+) \(.*\) \S+ (\d+)/s && $2 == $ppid;
    }
    return @kids;
}

sub stop_nginx () {
    undef $RunningConf;
    reap_child();
    my $pid = $ChildPid || read_pid();
    return unless $pid && alive($pid);
    # Do not signal a recycled pid that is not an nginx of ours.
    my $cmd = slurp("/proc/$pid/cmdline");
    return unless $ChildPid || $cmd =~ /nginx/;
    my @kids  = child_pids($pid);
    my $grace = $UseValgrind ? 60 : 5;     # valgrind must write leak reports
    kill 'QUIT', $pid;
    unless (wait_gone($pid, $grace)) {
        Test::More::diag("nginx (pid $pid) still running ${grace}s after"
                         . " SIGQUIT; sending SIGKILL");
        kill 'KILL', $pid;
        wait_gone($pid, 5);
    }
    kill 'KILL', grep { alive($_) } @kids;
    unlink pid_file();
}

sub valgrind_cmd () {
    my @cmd = qw(valgrind -q --tool=memcheck --leak-check=full
                 --show-possibly-lost=no --num-callers=50
                 --gen-suppressions=all);
    my $script_dir = File::Basename::dirname(File::Spec->rel2abs($0));
    my $supp = List::Util::first { -f $_ }
        'valgrind.suppress', "$script_dir/../valgrind.suppress";
    push @cmd, '--suppressions=' . File::Spec->rel2abs($supp) if $supp;
    push @cmd, "--log-file=$ServRoot/logs/valgrind.log";
    return @cmd;
}

# Is something listening on our port?  Read /proc/net/tcp{,6} (state 0A is
# LISTEN) rather than connecting, so no probe connection shows in error.log.
sub port_listening () {
    my $hexport = sprintf ':%04X', $ServerPort;
    for my $f ('/proc/net/tcp', '/proc/net/tcp6') {
        open my $fh, '<', $f or next;
        while (<$fh>) {
            my @col = split;
            return 1 if @col > 3 && $col[1] =~ /\Q$hexport\E$/ && $col[3] eq '0A';
        }
    }
    return 0;
}

# nginx writes its pid file after opening the listening sockets, so "pid
# file names a live process, and the port is in LISTEN state" means ready.
sub wait_ready () {
    my ($secs) = @_;
    my $deadline = Time::HiRes::time() + $secs;
    while (Time::HiRes::time() < $deadline) {
        return (0, "nginx exited during startup (wait status $ChildStatus)")
            if $UseValgrind && reap_child();
        my $pid = read_pid();
        return 1 if $pid && alive($pid) && (!$ChildPid || $pid == $ChildPid)
                    && port_listening();
        Time::HiRes::sleep(0.02);
    }
    return (0, "nginx did not come up on port $ServerPort within ${secs}s");
}

# Start nginx with the config already written.  Returns (1) on success or
# (0, reason, exit status if known); error.log from $log_start on is quoted.
sub start_nginx () {
    my ($log_start) = @_;
    my $stderr_file = "$ServRoot/logs/stderr.log";
    unlink pid_file(), "$ServRoot/logs/valgrind.log";
    my @cmd = ($NginxBinary, '-p', "$ServRoot/", '-c', 'conf/nginx.conf');
    @cmd = (valgrind_cmd(), @cmd, '-g', 'daemon off; master_process off;')
        if $UseValgrind;

    my $pid = fork // die "fork failed: $!\n";
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $stderr_file;
        open STDERR, '>&', \*STDOUT;
        { no warnings 'exec'; exec { $cmd[0] } @cmd; }
        print STDERR "cannot exec $cmd[0]: $!\n";
        POSIX::_exit(127);
    }

    my ($ok, $why, $status);
    if ($UseValgrind) {
        ($ChildPid, $ChildStatus) = ($pid, undef);
        ($ok, $why) = wait_ready(30);
        $status = $ChildStatus;
    } else {
        # "daemon on": the foreground process exits once the config is
        # loaded and the sockets are bound (non-zero exit on any error).
        my $deadline = Time::HiRes::time() + 15;
        while (waitpid($pid, POSIX::WNOHANG()) == 0) {
            if (Time::HiRes::time() > $deadline) {
                kill 'KILL', $pid;
                waitpid $pid, 0;
                last;
            }
            Time::HiRes::sleep(0.01);
        }
        $status = $?;
        if ($status == 0) {
            ($ok, $why) = wait_ready(5);
        } else {
            ($ok, $why) = (0, "nginx exited with status " . ($status >> 8)
                              . ($status & 127 ? " (signal " . ($status & 127) . ")" : ''));
        }
    }
    return (1) if $ok;
    stop_nginx();
    my $out = slurp($stderr_file);
    $why .= "\n--- nginx stderr:\n$out" if $out =~ /\S/;
    my @tail = grep { m{^\d{4}/\d\d/\d\d [\d:]+ \[(?!debug)} }
               split /\n/, slurp(error_log_file(), $log_start);
    splice @tail, 0, -20;
    $why .= "\n--- error.log (last non-debug lines):\n" . join("\n", @tail) if @tail;
    return (0, $why, $status);
}

# Valgrind mode: any text in valgrind.log means errors or leaks.
sub check_valgrind () {
    my ($name) = @_;
    my $report = slurp("$ServRoot/logs/valgrind.log");
    return unless $report =~ /\S/;
    ok(0, "$name - valgrind reported no errors or leaks");
    diag("valgrind report ($ServRoot/logs/valgrind.log):\n$report");
}

# ------------------------------------------------------------ HTTP client

# Turn a `--- request` text ("METHOD /uri [HTTP/1.x]\nbody...") into bytes.
sub build_request () {
    my ($text, $more) = @_;
    $text =~ s/\A\s+//;
    my ($line, $body) = split /\n/, $text, 2;
    $line =~ s/\r\z//;
    my ($method, $uri, $proto) = $line =~ m{^(\S+)\s+(\S+)(?:\s+(HTTP/\d\.\d))?\s*$}
        or die "bad request line in --- request: '$line'\n";
    $proto //= 'HTTP/1.1';
    my @headers = grep { /\S/ } split /\r?\n/, $more // '';
    my %has = map { /^\s*([^:\s]+)/ ? (lc $1 => 1) : () } @headers;
    unshift @headers, 'Host: localhost' unless $has{host};
    push @headers, 'Connection: close' unless $has{connection};
    if (!$has{'content-length'} && !$has{'transfer-encoding'}
        && ((defined $body && length $body) || $method =~ /^(?:POST|PUT|PATCH)$/))
    {
        push @headers, 'Content-Length: ' . length($body // '');
    }
    return { method => $method,
             pieces => [ "$method $uri $proto\r\n"
                         . join('', map { "$_\r\n" } @headers) . "\r\n"
                         . ($body // '') ] };
}

sub build_requests () {
    my ($block) = @_;
    die "--- pipelined_requests is not supported by this runner\n"
        if defined sec($block, 'pipelined_requests');
    if (defined(my $raw = sec($block, 'raw_request'))) {
        my $pieces = expand_env(ref $raw eq 'ARRAY' ? $raw : [$raw], 'raw_request');
        my ($method) = $pieces->[0] =~ /^\s*(\S+)/;
        return ({ method => $method // 'GET', pieces => $pieces });
    }
    my $req = sec($block, 'request');
    die "no --- request or --- raw_request section\n" unless defined $req;
    my $list = expand_env(ref $req eq 'ARRAY' ? $req : [$req], 'request');
    my $more = expand_env(sec($block, 'more_headers'), 'more_headers');
    my $plain = !has_filter($block, 'request', 'eval');
    my @reqs;
    for my $i (0 .. $#$list) {
        my $text = $list->[$i];
        $text =~ s/\n\z// if $plain;    # a plain section's last newline is not body
        push @reqs, build_request($text, pick($more, $i));
    }
    return @reqs;
}

sub decode_chunked () {
    my ($data) = @_;
    my ($body, $pos) = ('', 0);
    while ($data =~ /\G([0-9a-fA-F]+)[^\r\n]*\r\n/gc) {
        my $size = hex $1;
        $pos = pos $data;
        if ($size == 0) {
            my $complete = substr($data, $pos) =~ /^(?:[^\r\n]+\r\n)*\r\n/;
            return ($body, $complete);
        }
        return ($body . substr($data, $pos), 0) if length($data) < $pos + $size + 2;
        $body .= substr($data, $pos, $size);
        pos($data) = $pos + $size + 2;
    }
    return ($body, 0);
}

# Parse raw response bytes into {status, headers => {lc name => [values]},
# body, complete}.  Interim 1xx responses are skipped.
sub parse_response () {
    my ($raw, $method) = @_;
    my %res = (raw => $raw, headers => {}, body => '', complete => 0);
    1 while $raw =~ s{\AHTTP/\d\.\d\s+1\d\d\b.*?\r?\n\r?\n}{}s;
    my $end = index $raw, "\r\n\r\n";
    my $sep = 4;
    ($end, $sep) = (index($raw, "\n\n"), 2) if $end < 0;
    return \%res if $end < 0;
    my ($head, $rest) = (substr($raw, 0, $end), substr($raw, $end + $sep));
    my ($status_line, @lines) = split /\r?\n/, $head;
    my ($status) = $status_line =~ m{^HTTP/\d\.\d\s+(\d{3})} or return \%res;
    $res{status} = $status;
    for (@lines) {
        push @{ $res{headers}{lc $1} }, $2 if /^([^:\s]+)\s*:\s*(.*?)\s*$/;
    }
    my $te = join ',', @{ $res{headers}{'transfer-encoding'} || [] };
    my ($cl) = @{ $res{headers}{'content-length'} || [] };
    if ($method eq 'HEAD' || $status =~ /^(?:204|304)$/) {
        $res{complete} = 1;
    } elsif ($te =~ /chunked/i) {
        @res{qw(body complete)} = decode_chunked($rest);
    } elsif (defined $cl && $cl =~ /^\d+$/) {
        $res{body} = substr $rest, 0, $cl;
        $res{complete} = length($rest) >= $cl;
    } else {
        $res{body} = $rest;    # read until the server closes
    }
    return \%res;
}

sub header () {
    my ($res, $name) = @_;
    my $values = $res->{headers}{lc $name} or return undef;
    return join ', ', @$values;
}

# Send one request on a new connection and read the response until the
# server closes, the response is complete, or $timeout seconds passed.
sub send_request () {
    my ($req, $timeout, %opt) = @_;
    my $deadline = Time::HiRes::time() + $timeout;
    my $sock = IO::Socket::INET->new(PeerAddr => $ServerAddr, PeerPort => $ServerPort,
                                     Proto => 'tcp', Timeout => $timeout)
        or return { error => "cannot connect to $ServerAddr:$ServerPort: $@" };
    $sock->blocking(0);
    local $SIG{PIPE} = 'IGNORE';
    my ($timed_out, $io_error) = (0, undef);
    my @pieces = @{ $req->{pieces} };

  WRITE:
    while (@pieces) {
        my $data = shift @pieces;
        my $off = 0;
        while ($off < length $data) {
            my $left = $deadline - Time::HiRes::time();
            if ($left <= 0) { $timed_out = 1; last WRITE }
            my $w = '';
            vec($w, fileno $sock, 1) = 1;
            next unless select(undef, $w, undef, $left) > 0;
            my $n = syswrite $sock, $data, length($data) - $off, $off;
            if (!defined $n) {
                next if $!{EAGAIN} || $!{EINTR};
                $io_error = "write: $!";    # server may have answered early
                last WRITE;
            }
            $off += $n;
        }
        Time::HiRes::sleep($opt{middle_delay}) if @pieces && $opt{middle_delay};
    }
    shutdown $sock, 1 if $opt{shutdown};

    my $buf = '';
    until ($timed_out) {
        my $left = $deadline - Time::HiRes::time();
        if ($left <= 0) { $timed_out = 1; last }
        my $r = '';
        vec($r, fileno $sock, 1) = 1;
        next unless select($r, undef, undef, $left) > 0;
        my $n = sysread $sock, $buf, 65536, length $buf;
        if (!defined $n) {
            next if $!{EAGAIN} || $!{EINTR};
            $io_error = "read: $!";
            last;
        }
        last if $n == 0;
        last if parse_response($buf, $req->{method})->{complete};
    }
    close $sock;    # with --- abort this is the client abort nginx sees
    my $res = parse_response($buf, $req->{method});
    $res->{timed_out} = $timed_out;
    $res->{io_error}  = $io_error;
    return $res;
}

# ------------------------------------------------------------------ checks

sub compare_body () {
    my ($got, $expected, $desc) = @_;
    if (!$NoLongString && eval { require Test::LongString; 1 }) {
        local $Test::Builder::Level = $Test::Builder::Level + 1;
        Test::LongString::is_string($got, $expected, $desc);
    } else {
        is($got, $expected, $desc);
    }
}

sub to_regex () {
    my $pat = shift;
    return $pat if ref $pat eq 'Regexp';
    return qr/$pat/s;
}

sub check_response () {
    my ($block, $name, $idx, $count, $res, $timeout) = @_;
    my $tag   = $count > 1 ? " (req $idx)" : '';
    my $abort = exists $block->{abort};
    if ($res->{error}) {
        fail("$name - send request$tag");
        diag($res->{error});
        return;
    }
    if ($res->{timed_out} && !$abort) {
        fail("$name - response received within the ${timeout}s timeout$tag");
        diag(length $res->{raw} ? "partial response:\n" . substr($res->{raw}, 0, 2000)
                                : "nothing received");
    }
    return if exists $block->{ignore_response};
    if (!defined $res->{status} && !$abort && !$res->{timed_out}) {
        fail("$name - valid HTTP response received$tag");
        diag(($res->{io_error} // '') . "\nraw response:\n" . substr($res->{raw}, 0, 2000));
    }

    my $status = $res->{status} // '';
    if (defined(my $like = pick(sec($block, 'error_code_like'), $idx))) {
        like($status, to_regex(trim($like)), "$name - status code ok$tag");
    } else {
        my $code = pick(sec($block, 'error_code'), $idx);
        $code = 200 if !defined $code && !$abort;
        is($status, trim($code), "$name - status code ok$tag") if defined $code;
    }

    for my $kind ('response_headers', 'response_headers_like') {
        my $spec = pick(sec($block, $kind), $idx);
        next unless defined $spec;
        for my $line (split /\n/, $spec) {
            next unless $line =~ /\S/;
            if ($line =~ /^\s*!\s*([^:\s]+)\s*$/) {
                my $hname = $1;
                my $got = header($res, $hname);
                ok(!defined $got, "$name - header $hname absent$tag")
                    or diag("got: $hname: $got");
            } elsif ($line =~ /^\s*([^:\s]+)\s*:\s*(.*?)\s*$/) {
                my ($hname, $want) = ($1, $2);
                my $got = header($res, $hname) // '';
                if ($kind eq 'response_headers') {
                    is($got, $want, "$name - header $hname ok$tag");
                } else {
                    like($got, qr/$want/, "$name - header $hname like ok$tag");
                }
            } else {
                die "bad line in --- $kind: '$line'\n";
            }
        }
    }

    my $body = $res->{body} // '';
    if (defined(my $want = pick(sec($block, 'response_body'), $idx))) {
        compare_body($body, $want, "$name - response_body - response is expected$tag");
    }
    if (defined(my $pat = pick(sec($block, 'response_body_like'), $idx))) {
        like($body, to_regex($pat), "$name - response_body_like - response is expected$tag");
    }
    if (defined(my $pat = pick(sec($block, 'response_body_unlike'), $idx))) {
        unlike($body, to_regex($pat), "$name - response_body_unlike - response is expected$tag");
    }
}

# Patterns of --- error_log / --- no_error_log: one plain substring per line,
# or (eval) a string, a qr//, or an array ref of those.
sub log_patterns () {
    my $value = shift;
    return () unless defined $value;
    return map { ref $_ eq 'Regexp' ? $_ : grep { /\S/ } split /\n/, $_ }
           ref $value eq 'ARRAY' ? @$value : ($value);
}

sub show_pattern () {
    my $pat = shift;
    return ref $pat ? "$pat" : qq{"$pat"};
}

sub check_error_log () {
    my ($block, $name, $log, $rep) = @_;
    my @lines = split /\n/, $log;
    my $match = sub {
        my $pat = shift;
        return List::Util::first { ref $pat ? $_ =~ $pat : index($_, $pat) >= 0 } @lines;
    };
    for my $pat (log_patterns(sec($block, 'error_log'))) {
        ok(defined $match->($pat),
           "$name - pattern " . show_pattern($pat) . " matches a line in error.log");
    }
    for my $pat (log_patterns(sec($block, 'no_error_log'))) {
        my $hit = $match->($pat);
        ok(!defined $hit, "$name - pattern " . show_pattern($pat)
                          . " does not match any line in error.log")
            or diag("matching line: $hit");
    }
    if (defined(my $grep = sec($block, 'grep_error_log'))) {
        my $re = ref $grep eq 'Regexp' ? $grep : do { chomp(my $s = $grep); qr/\Q$s\E/ };
        my $out = '';
        while ($log =~ /$re/g) {
            $out .= substr($log, $-[0], $+[0] - $-[0]) . "\n";
        }
        my $want = sec($block, 'grep_error_log_out');
        $want = $want->[$rep - 1] if ref $want eq 'ARRAY';
        is($out, $want // '', "$name - grep_error_log_out");
    }
}

sub has_log_checks () {
    my $block = shift;
    return grep { defined sec($block, $_) } qw(error_log no_error_log grep_error_log);
}

# skip_nginx: "N: <op> version" skips N tests when the nginx version
# satisfies the condition ("N: reason" with no condition always skips).
# skip_eval: "N: perl expression" skips N tests when the expression is true.
sub skip_count () {
    my ($block) = @_;
    if (defined(my $spec = sec($block, 'skip_nginx'))) {
        my ($n, $cond) = $spec =~ /^\s*(\d+)\s*:\s*(.*?)\s*$/s
            or die "bad --- skip_nginx: '$spec'\n";
        if ($cond =~ /^(<=?|>=?|==|!=)\s*(\d+(?:\.\d+)*)$/) {
            my $c = version_cmp(nginx_version(), $2);
            my %ops = ('<' => $c < 0, '<=' => $c <= 0, '>' => $c > 0,
                       '>=' => $c >= 0, '==' => $c == 0, '!=' => $c != 0);
            return ($n, "nginx " . nginx_version() . " $cond") if $ops{$1};
        } else {
            return ($n, $cond);
        }
    }
    if (defined(my $spec = sec($block, 'skip_eval'))) {
        my ($n, $code) = $spec =~ /^\s*(\d+)\s*:\s*(.*)$/s
            or die "bad --- skip_eval: '$spec'\n";
        my $skip = eval "package main; $code";
        die "--- skip_eval failed: $@" if $@;
        return ($n, "skip_eval: $code") if $skip;
    }
    return (0);
}

# -------------------------------------------------------------- one block

sub run_block () {
    my ($block, $rep) = @_;
    my $name = sec($block, 'name');

    my ($nskip, $why) = skip_count($block);
    if ($nskip) {
        Test::Builder->new->skip("$name - $why") for 1 .. $nskip;
        return;
    }
    if (defined(my $code = sec($block, 'init'))) {
        eval "package main; $code; 1" or die "--- init failed: $@";
    }

    my $conf = build_config($block);
    spew("$ServRoot/conf/nginx.conf", $conf);
    write_user_files($block);

    my $must_die = exists $block->{must_die};
    my $log_start;
    if ($must_die || $UseValgrind || $ForceRestart || !defined $RunningConf
        || $RunningConf ne $conf || !nginx_alive())
    {
        stop_nginx();
        $log_start = log_size();    # this block's own startup output counts
        my ($ok, $reason, $status) = start_nginx($log_start);
        if ($must_die) {
            my $want = trim(sec($block, 'must_die')) // '';    # optional exit code
            my $died = !$ok && ($want !~ /^\d+$/ || !defined $status
                                || ($status >> 8) == $want);
            ok($died, "$name - nginx failed to start (--- must_die)")
                or diag($ok ? "nginx started" : $reason);
            stop_nginx() if $ok;
            my $out = slurp(error_log_file(), $log_start)
                    . slurp("$ServRoot/logs/stderr.log");
            check_error_log($block, $name, $out, $rep);
            check_valgrind($name) if $UseValgrind;
            return;
        }
        if (!$ok) {
            fail("$name - nginx started");
            diag($reason);
            check_valgrind($name) if $UseValgrind;
            return;
        }
        $RunningConf = $conf;
    }
    $log_start //= log_size();

    my $timeout = seconds(sec($block, 'timeout')) || $Timeout;
    my $abort   = exists $block->{abort};
    # Everything is slower under valgrind; an --- abort timeout is on purpose.
    $timeout *= 3 if $UseValgrind && !$abort;
    my %opt = (shutdown => exists $block->{shutdown},
               middle_delay => seconds(sec($block, 'raw_request_middle_delay')));

    my @reqs = build_requests($block);
    my @resps = map { send_request($_, $timeout, %opt) } @reqs;

    my $wait = seconds(sec($block, 'wait')) || 0;
    $wait += $LogSleep * ($UseValgrind ? 5 : 1) if has_log_checks($block);
    Time::HiRes::sleep($wait) if $wait > 0;

    check_response($block, $name, $_, scalar @resps, $resps[$_], $timeout)
        for 0 .. $#resps;
    check_error_log($block, $name, slurp(error_log_file(), $log_start), $rep);

    if ($UseValgrind) {
        stop_nginx();
        check_valgrind($name);
    }
}

1;
__END__

=head1 NAME

Test::Nginx::Socket - this project's Test::Nginx-compatible test scaffold

=head1 SYNOPSIS

    use Test::Nginx::Socket 'no_plan';  # or: plan tests => repeat_each() * N;
    repeat_each(1); no_shuffle(); run_tests();
    __DATA__
    === TEST 1: ...

Run with C<prove -I t/lib -r t/>; t/00-runner-selftest.t shows most sections.

=head1 SECTIONS

Config: main_config, http_config, config, user_files (C<< >>> name >> lines),
init, log_level, must_die [exit code].  Requests: request (C<METHOD /uri
[HTTP/1.x]> then body; C<eval> may give an array ref: one request per
element), raw_request (string or array of pieces), raw_request_middle_delay,
more_headers, timeout, abort, shutdown, wait, ignore_response.  Checks (one
test each): error_code, error_code_like, response_body, response_body_like,
response_body_unlike, response_headers and response_headers_like (one test
per line; C<!Name> = absent), error_log and no_error_log (one test per
pattern), grep_error_log + grep_error_log_out.  Skipping: skip_nginx
(C<N: E<lt> 1.2.3>), skip_eval (C<N: perl expr>), and Test::Base's
ONLY/SKIP/LAST.  Per-request checks accept an array ref (via C<eval>).

error.log checks see what this block wrote: from just before its nginx
start if the block (re)started nginx, else from just before its requests.

=head1 ENVIRONMENT

TEST_NGINX_BINARY, TEST_NGINX_LOAD_MODULES (space-separated .so paths),
TEST_NGINX_SERVROOT (default t/servroot), TEST_NGINX_SERVER_PORT or
TEST_NGINX_PORT (1984), TEST_NGINX_LOG_LEVEL (debug), TEST_NGINX_TIMEOUT (3),
TEST_NGINX_SLEEP (0.1), TEST_NGINX_NO_CLEAN, TEST_NGINX_USE_VALGRIND,
TEST_NGINX_FORCE_RESTART_ON_TEST (restart nginx for every block).
TEST_NGINX_NO_SHUFFLE is accepted implicitly: blocks always run in file
order.  C<$TEST_NGINX_FOO> / C<${TEST_NGINX_FOO}> in config, user_files and
request sections is replaced by the variable's value (an unset one dies).

=cut
