# The pool over TLS (defarm_db "... sslmode=require"), against a PostgreSQL
# of this file's own with ssl on (scripts/pg.sh start DIR --ssl).
#
# OpenSSL decrypts a whole record at a time.  When libpq reads less than a
# record, the rest stays decrypted inside OpenSSL, where the socket shows
# nothing; if that rest ends a result, a pool that only waits for the
# socket keeps the query until its timeout.  With a 3 s query timeout that
# is a 504 here, never a hang of the test.
#
# PostgreSQL 15 sends a record per 8 KB it writes, and libpq always reads
# with 8 KB of room at least, so straight from the server a record is not
# split (a. checks TLS itself that way, and pg_stat_ssl).  TLS peers are
# free to send full 16 KB records, and poolers and proxies in front of
# PostgreSQL do: b. puts a small relay of that kind between nginx and the
# same server.  It ends TLS on both sides, passes every byte on unchanged
# and only chooses where records end: a result's last bytes always come in
# a full 16 KB record, so a many-row result (a user's API keys, 600 of
# them, about 300 KB) ends in a record that libpq splits.

use strict;
use warnings;
use Test::More;
use Cwd ();
use File::Basename ();
use IO::Select ();
use IO::Socket::INET ();
use IO::Socket::SSL ();
use POSIX ();
use DefarmTest;

my $Top = Cwd::abs_path(File::Basename::dirname(__FILE__) . '/..');
my $T = valgrind() ? 30 : 10;
my $QT = valgrind() ? '30s' : '3s';   # defarm_db_query_timeout
my $Main = $$;

# the throwaway PostgreSQL's folder, next to the suite's own
my $dir = ($ENV{TEST_NGINX_PG_DATA} // "$Top/var/test/pg") . '-tls';

my $out = `cd $Top && scripts/pg.sh start $dir --ssl 2>&1`;
die "scripts/pg.sh start $dir --ssl failed:\n$out" if $?;
my ($port) = $out =~ /PGPORT=(\d+)/ or die "no port from pg.sh:\n$out";

my $relay;

END {
    if ($$ == $Main) {
        kill 'TERM', -$relay if $relay;
        system("cd $Top && scripts/pg.sh stop $dir") if $port;
    }
}

my %PgEnv = (PGHOST => '127.0.0.1', PGPORT => $port, PGUSER => 'postgres',
             PGDATABASE => 'defarm');

$out = do {
    local @ENV{keys %PgEnv} = values %PgEnv;
    `cd $Top && scripts/migrate.sh 2>&1`;
};
die "scripts/migrate.sh on the TLS server failed:\n$out" if $?;

# sql() against the TLS server instead of the suite's
sub tls_sql {
    my ($statement) = @_;
    local @ENV{map { "TEST_NGINX_$_" } qw(PG_HOST PG_PORT PG_USER PG_DATABASE)}
        = @PgEnv{qw(PGHOST PGPORT PGUSER PGDATABASE)};
    return sql($statement);
}

my (undef, $secret_file) = jwt_secret();

# nginx whose pool reaches PostgreSQL on $pgport with sslmode=require
sub tls_nginx {
    my ($name, $pgport, $app) = @_;
    my $ng = start_nginx(name => $name, server => '
        location / { defarm_api on; }', http => <<"_EOC_");
    defarm_db "host=127.0.0.1 port=$pgport dbname=defarm user=postgres sslmode=require application_name=$app" size=2;
    defarm_db_query_timeout $QT;
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$secret_file;
_EOC_
    ok(wait_until(sub { (metric($ng, 'defarm_db_idle') // 0) >= 1 }, $T,
                  "$name: the first connection"),
       "$name: the pool connects with sslmode=require");
    return $ng;
}

# $app's connections as the server sees them
sub is_tls {
    my ($tag, $app) = @_;
    my ($with, $without) = split /\|/, tls_sql(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)"
        . " FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
        . " WHERE a.application_name = '$app'");
    ok(($with // 0) >= 1, "$tag: pg_stat_ssl shows the pool's connections"
                          . " with ssl (" . ($with // 0) . ")");
    is($without, 0, "$tag: and none without");
}

my $nkeys = 600;

# GET /api/api-keys $n times, one more key before each: every answer must
# be the right 200.  It stops at the first that is not, and says which.
sub listings {
    my ($ng, $tag, $user, $n) = @_;
    my ($answered, $bad) = (0, '');

    for my $i (1 .. $n) {
        tls_sql("INSERT INTO api_keys (user_id, key_hash, key_prefix, name,"
                . " organization_type, notes) VALUES ('$user->{id}',"
                . " md5(random()::text), 'dfk_$i', 'key $i', 'Producer',"
                . " repeat('n', $i * 37 % 400))");
        $nkeys++;

        my $res = api_as($ng, $user, GET => '/api/api-keys');
        my $count = () = $res->{body} =~ /"metadata":/g;

        if (($res->{status} // 0) == 200 && $count == $nkeys) {
            $answered++;
            next;
        }

        $bad = "listing $i: status " . ($res->{status} // 'none')
             . ", $count keys of $nkeys: "
             . substr($res->{error} // $res->{body}, 0, 200);
        last;
    }

    is($answered, $n, "$tag: $n listings of $nkeys keys, each 200")
        or diag($bad);
    is(metric($ng, 'defarm_db_timeouts_total'), 0, "$tag: no query timed out");
    unlike($ng->log, qr/\[(alert|crit|emerg)\]|timed out/,
           "$tag: no alert and no timeout in error.log");
}

is(tls_sql('SHOW ssl'), 'on', 'the test PostgreSQL has ssl on');


# a. Straight to PostgreSQL.

my $user;

{
    my $app = 'defarm_tls_direct';
    my $ng = tls_nginx('db-tls', $port, $app);

    $user = api_user($ng, "t013_$$");
    ok($user->{token}, 'direct: a user registered over TLS');

    tls_sql("INSERT INTO api_keys (user_id, key_hash, key_prefix, name,"
            . " organization_type, notes) SELECT '$user->{id}',"
            . " md5(g::text || random()), 'dfk_' || g, 'key ' || g,"
            . " 'Producer', repeat('n', 400) FROM generate_series(1, $nkeys) g");

    listings($ng, 'direct', $user, 10);
    is_tls('direct', $app);

    stop_nginx($ng);
}


# b. Through a relay that ends every result with a full 16 KB record.

# PostgreSQL's SSLRequest is answered "S" and passed on; TLS ends on both
# sides.  What the server sends is held until it pauses for 2 ms, then goes
# out as the odd part first and full 16 KB records after it (one write is
# one record).  One child per connection, the whole group killed at the end.
sub relay_connection {
    my ($c, $pgport) = @_;
    my ($req, $yes) = ('', '');

    while (length $req < 8) {
        sysread($c, $req, 8 - length $req, length $req) or return;
    }

    return unless $req eq pack('NN', 8, 80877103);     # SSLRequest

    my $b = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $pgport)
        or return;
    syswrite($b, $req) == 8 or return;
    sysread($b, $yes, 1) && $yes eq 'S' or return;
    IO::Socket::SSL->start_SSL($b, SSL_verify_mode => 0) or return;

    syswrite($c, 'S') == 1 or return;
    IO::Socket::SSL->start_SSL($c, SSL_server => 1,
                               SSL_cert_file => "$dir/data/server.crt",
                               SSL_key_file => "$dir/data/server.key")
        or return;

    my $sel = IO::Select->new($c, $b);
    my $held = '';

    while (1) {
        # what OpenSSL already decrypted counts as readable
        my @ready = grep { $_->pending } $c, $b;
        @ready = $sel->can_read(length $held ? 0.002 : undef) unless @ready;

        if (!@ready) {
            while (length $held) {
                my $odd = length($held) % 16384;
                write_all($c, substr($held, 0, $odd || 16384, '')) or return;
            }
            next;
        }

        for my $s (@ready) {
            my $n = sysread($s, my $buf, 65536);
            return unless $n;

            if ($s == $c) {
                write_all($b, $buf) or return;
            } else {
                $held .= $buf;
            }
        }
    }
}

sub write_all {
    my ($s, $data) = @_;
    while (length $data) {
        my $n = syswrite($s, $data);
        return 0 unless $n;
        substr($data, 0, $n, '');
    }
    return 1;
}

sub start_relay {
    my ($pgport) = @_;
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Listen => 16, ReuseAddr => 1)
        or die "relay: cannot listen: $!\n";
    my $pid = fork // die "fork: $!\n";

    if ($pid) {
        my $lport = $l->sockport;
        close $l;
        POSIX::setpgid($pid, $pid);
        return ($pid, $lport);
    }

    POSIX::setpgid(0, 0);
    $SIG{CHLD} = 'IGNORE';
    $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP);

    while (1) {
        my $c = $l->accept or next;
        my $k = fork;
        if (defined $k && $k == 0) {
            close $l;
            relay_connection($c, $pgport);
            POSIX::_exit(0);
        }
        close $c;
    }
}

{
    my $app = 'defarm_tls_relay';
    my $rport;
    ($relay, $rport) = start_relay($port);

    my $ng = tls_nginx('db-tls-relay', $rport, $app);

    listings($ng, 'relay', $user, 40);
    is_tls('relay', $app);

    stop_nginx($ng);
}

done_testing();
