package DefarmChaos;

# ---------------------------------------------------------------------------
# DefarmChaos -- helpers for the fault-injection files under t/chaos/ ("make
# chaos"): a mixed load of client processes (item creates, item reads,
# logins) that records every request, a summary of what they saw, the
# acknowledged writes checked in PostgreSQL, the crash patterns of
# error.log, processes found by parent (PostgreSQL's backends, nginx's
# workers) and a process's RSS.
#
#   my $load = load_start($ng, users => [$u1, $u2], procs => 4);
#   ... inject a fault, end it ...
#   my $s = load_stop($load);   # {requests, status => {...}, hung, ...}
#   is(lost_writes($s), 0, 'every acknowledged create is in PostgreSQL');
#
# Every client request has a bound (timeout => seconds, 15 by default): a
# request without a complete answer by then is "hung".  No assertion here
# is on elapsed time; only the bound is.
# ---------------------------------------------------------------------------

use strict;
use warnings;

use Exporter 'import';
use File::Temp ();
use JSON::PP ();
use POSIX ();
use Time::HiRes ();
use Test::More ();
use DefarmTest ();

our @EXPORT = qw(
    load_start load_stop lost_writes crash_lines children_of rss_kb
    pg_postmaster_pid fault_table api_login outage_errors_ok api_key
);

my $Json = JSON::PP->new->utf8->canonical;

# children_of($pid) -> the pids whose parent is $pid
sub children_of {
    my ($ppid) = @_;
    my @pids;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $stat or next;
        my $line = <$fh> // next;
        close $fh;
        push @pids, $1 if $line =~ /^(\d+) \(.*\) \S (\d+) /s && $2 == $ppid;
    }
    return @pids;
}

# rss_kb($pid) -> VmRSS in kB (undef when the process is gone)
sub rss_kb {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/status" or return undef;
    while (<$fh>) {
        return $1 + 0 if /^VmRSS:\s+(\d+)/;
    }
    return undef;
}

sub pg_postmaster_pid {
    my $file = "$ENV{TEST_NGINX_PG_DATA}/data/postmaster.pid";
    open my $fh, '<', $file or return undef;
    my $pid = <$fh>;
    return $pid && $pid =~ /^(\d+)/ ? $1 : undef;
}

# crash_lines($ng, $mark) -> the lines of error.log (since $mark) that
# say a process died or nginx raised an alert
sub crash_lines {
    my ($ng, $mark) = @_;
    return grep { /exited on signal|\[alert\]|\[emerg\]|segfault/ }
           split /\n/, $ng->log($mark);
}

# api_login($ng, $user) -> http() of POST /api/auth/login
sub api_login {
    my ($ng, $u, %o) = @_;
    return DefarmTest::http($ng, POST => '/api/auth/login',
        headers => { 'Content-Type' => 'application/json' },
        body => $Json->encode({ username => $u->{name},
                                password => 'Str0ng!pass' }),
        %o);
}

# api_key($ng, $user) -> a read/write API key of that user, limit 1000000
# an hour
sub api_key {
    my ($ng, $u) = @_;
    my $res = DefarmTest::api_as($ng, $u, POST => '/api/api-keys',
        { name => 'chaos', organization_type => 'Producer',
          permissions => { read => JSON::PP::true, write => JSON::PP::true },
          rate_limit_per_hour => 1000000 });
    return DefarmTest::json_body($res)->{api_key};
}

my $Seq = 0;

sub one_request {
    my ($ng, $kind, $u, $state, $timeout) = @_;
    my %auth = (Authorization => "Bearer $u->{token}",
                'Content-Type' => 'application/json');
    my ($res, $dfid);
    my $t0 = Time::HiRes::time();

    if ($kind eq 'create') {
        $Seq++;
        my $uuid = sprintf '%08x-%04x-4%03x-8%03x-%012x', $$, $Seq & 0xffff,
                   int rand 4096, int rand 4096, int rand 2**40;
        $res = DefarmTest::http($ng, POST => '/api/items',
            headers => \%auth, timeout => $timeout,
            body => $Json->encode({
                identifiers => [ { key => 'chaos',
                                   value => "c-$$-$Seq-" . int rand 1e9 } ],
                enriched_data => { n => $Seq },
                source_entry => $uuid }));
        my $b = eval { $Json->decode($res->{body}) };
        $dfid = $b->{dfid} if ref $b eq 'HASH';
        $state->{dfid} = $dfid
            if $dfid && ($res->{status} // 0) =~ /^20[01]$/;

    } elsif ($kind eq 'read') {
        # an item of the caller's when it has one, else its list (always
        # PostgreSQL)
        my $path = $state->{dfid} ? "/api/items/$state->{dfid}"
                                  : '/api/items?limit=5';
        $res = DefarmTest::http($ng, GET => $path, headers => \%auth,
                                timeout => $timeout);

    } elsif ($kind eq 'list') {
        $res = DefarmTest::http($ng, GET => '/api/items?limit=5',
                                headers => \%auth, timeout => $timeout);

    } elsif ($kind eq 'keyread') {
        # through the user's API key: its hourly count is kept in Redis
        $res = DefarmTest::http($ng, GET => '/api/items?limit=5',
                                headers => { 'X-API-Key' => $u->{key} },
                                timeout => $timeout);

    } elsif ($kind eq 'login') {
        $res = api_login($ng, $u, timeout => $timeout);

    } else {
        die "unknown kind $kind\n";
    }

    my $kindname = eval { $Json->decode($res->{body})->{error_kind} };
    return {
        kind    => $kind,
        status  => $res->{status},
        ms      => int((Time::HiRes::time() - $t0) * 1000),
        ekind   => $kindname,
        json    => (defined eval { $Json->decode($res->{body}) } ? 1 : 0),
        dfid    => $dfid,
        error   => $res->{error},
        at      => $t0,
    };
}

# load_start($ng, users => [{token, name}], procs => 4, timeout => 15,
# kinds => [qw(create read login)]) -> a handle: client processes that
# send requests one after another until load_stop()
sub load_start {
    my ($ng, %o) = @_;
    my $dir = File::Temp::tempdir('defarm-chaos-XXXXXX', TMPDIR => 1,
                                  CLEANUP => 1);
    my $procs = $o{procs} // 4;
    my $kinds = $o{kinds} // [qw(create read login create read list)];
    my $timeout = $o{timeout} // (DefarmTest::valgrind() ? 60 : 15);
    my @pids;

    for my $i (1 .. $procs) {
        my $pid = fork // die "fork: $!\n";
        if (!$pid) {
            srand($$ ^ time);
            my $u = $o{users}[ ($i - 1) % @{ $o{users} } ];
            my %state;
            open my $out, '>>', "$dir/$i.log" or POSIX::_exit(1);
            $out->autoflush(1);
            my $n = $i;
            until (-e "$dir/stop") {
                my $kind = $kinds->[ $n++ % @$kinds ];
                my $r = eval { one_request($ng, $kind, $u, \%state, $timeout) }
                        // { kind => $kind, error => "died: $@" };
                print $out $Json->encode($r), "\n";
                Time::HiRes::sleep($o{pause}) if $o{pause};
            }
            close $out;
            POSIX::_exit(0);
        }
        push @pids, $pid;
    }

    return { dir => $dir, pids => \@pids, timeout => $timeout };
}

# load_stop($load) -> {requests, status => {code|none => n}, hung, errors
# => [records], created => [dfids], max_ms, records => [...]}
sub load_stop {
    my ($load) = @_;
    { open my $fh, ">", "$load->{dir}/stop" or die "stop: $!\n"; close $fh; }
    waitpid $_, 0 for @{ $load->{pids} };

    my %s = (requests => 0, status => {}, hung => 0, created => [],
             records => [], max_ms => 0, kinds => {});
    for my $file (glob "$load->{dir}/*.log") {
        open my $in, '<', $file or next;
        while (my $line = <$in>) {
            my $r = eval { $Json->decode($line) } or next;
            push @{ $s{records} }, $r;
            $s{requests}++;
            $s{kinds}{ $r->{kind} }++;
            my $st = $r->{status} // 'none';
            $s{status}{$st}++;
            $s{hung}++ if ($r->{error} // '') =~ /no answer within/;
            $s{max_ms} = $r->{ms} if ($r->{ms} // 0) > $s{max_ms};
            push @{ $s{created} }, $r->{dfid}
                if $r->{kind} eq 'create' && $r->{dfid}
                   && $st =~ /^20[01]$/;
        }
    }
    return \%s;
}

# lost_writes($summary) -> how many acknowledged creates (2xx with a DFID)
# PostgreSQL does not have
sub lost_writes {
    my ($s) = @_;
    my @ids = @{ $s->{created} };
    return 0 unless @ids;
    my $found = 0;
    while (my @chunk = splice @ids, 0, 500) {
        my $list = join ',', map { "'$_'" } grep { /^DFID-[\d-]+-[0-9A-F]+$/ }
                   @chunk;
        $found += DefarmTest::sql("SELECT count(*) FROM items"
                                  . " WHERE dfid IN ($list)");
    }
    return @{ $s->{created} } - $found;
}

# outage_errors_ok($summary, $tag, qw(503 504)): every answer that is not a
# success is a JSON error with an error_kind and one of those statuses;
# every request got an answer.  Returns the records that are not.
sub outage_errors_ok {
    my ($s, $tag, @allowed) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my %ok = map { $_ => 1 } @allowed;
    my @bad = grep {
        my $st = $_->{status};
        !defined $st
        || ($st !~ /^20[01]$/ && (!$ok{$st} || !$_->{ekind} || !$_->{json}))
    } @{ $s->{records} };
    Test::More::is(scalar @bad, 0,
        "$tag: every request answered, each error a JSON "
        . join('/', @allowed) . " with error_kind")
        or Test::More::diag(join "\n", map { $Json->encode($_) }
                                       @bad[0 .. ($#bad < 9 ? $#bad : 9)]);
    return @bad;
}

# fault_table(@rows): rows of {fault, requests, status => {}, hung,
# crashes, lost, rss => 'a -> b kB'} printed with diag()
sub fault_table {
    my (@rows) = @_;
    my $fmt = "%-28s %8s %-36s %5s %7s %5s  %s";
    Test::More::diag(sprintf $fmt, 'fault', 'requests', 'by status', 'hung',
                     'crashes', 'lost', 'worker RSS (kB)');
    for my $r (@rows) {
        my $st = join ' ', map { "$_:$r->{status}{$_}" }
                 sort keys %{ $r->{status} || {} };
        Test::More::diag(sprintf $fmt, $r->{fault}, $r->{requests} // 0,
                         $st || '-', $r->{hung} // 0, $r->{crashes} // 0,
                         $r->{lost} // 0, $r->{rss} // '-');
    }
}

1;
