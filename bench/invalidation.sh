#!/usr/bin/env bash
# Two nodes, one PostgreSQL, one Redis: how long after a write on node A
# does node B stop serving what it cached?  For SAMPLES keys: node B
# caches the key (two requests by it), node A revokes it, and node B is
# polled until it refuses the key.  Printed: the delay from the revoke's
# answer on A to B's first refusal, percentiles, and, as the baseline of
# the same run, one request's round trip to B.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

SAMPLES=${SAMPLES:-200}

trap 'bench_nginx_stop node-a; bench_nginx_stop node-b;
      "$top/scripts/redis.sh" stop "$bench_var/redis" || true;
      bench_pg_stop' EXIT

bench_pg_start
redisenv=$("$top/scripts/redis.sh" start "$bench_var/redis")
eval "$redisenv"

mkdir -p "$bench_var"
head -c 48 /dev/urandom | base64 > "$bench_var/jwt.secret"

pa=$(free_port)
pb=$(free_port)
while [ "$pb" = "$pa" ]; do pb=$(free_port); done

for node in a b; do
    port=$pa
    [ $node = b ] && port=$pb
    WORKERS=2 bench_nginx_start "$port" \
        "defarm_db \"host=$PGHOST port=$PGPORT dbname=$PGDATABASE
                    user=$PGUSER sslmode=disable\" size=4;
         defarm_cache zone=bench_$node:16m ttl=1h;
         defarm_redis 127.0.0.1:$REDIS_PORT;
         defarm_bcrypt_cost 4;
         defarm_jwt_secret file=$bench_var/jwt.secret;" \
        "location / { defarm_api on; defarm_echo on; }" "node-$node"
done

sleep 1

perl -MHTTP::Tiny -MJSON::PP -MTime::HiRes=time -e '
    my ($pa, $pb, $n) = @ARGV;
    my $http = HTTP::Tiny->new(keep_alive => 1);
    my $json = JSON::PP->new;
    my ($A, $B) = ("http://127.0.0.1:$pa", "http://127.0.0.1:$pb");
    my $u = "bench$$";
    my %j = ("Content-Type" => "application/json");

    my $res = $http->post("$A/api/auth/register", { headers => \%j,
        content => $json->encode({ username => $u, password => "Str0ng!pass",
                                   email => "$u\@example.com" }) });
    my $token = $json->decode($res->{content})->{token};
    my %auth = (%j, Authorization => "Bearer $token");

    my (@delay, @polls, @rtt);
    for my $i (1 .. $n) {
        $res = $http->post("$A/api/api-keys", { headers => \%auth,
            content => $json->encode({ name => "b$i",
                                       organization_type => "External" }) });
        my $m = $json->decode($res->{content});
        my ($key, $id) = ($m->{api_key}, $m->{metadata}{id});
        my %k = ("X-API-Key" => $key);

        for (1, 2) {
            my $t = time;
            $http->get("$B/api/echo/auth", { headers => \%k })->{status} == 200
                or die "B does not serve the key\n";
            push @rtt, time - $t;
        }

        $http->post("$A/api/api-keys/$id/revoke", { headers => \%auth })
            ->{status} == 200 or die "revoke failed\n";
        my $t0 = time;
        my $polls = 0;
        while ($http->get("$B/api/echo/auth", { headers => \%k })->{status}
               == 200)
        {
            $polls++;
            die "B still serves a revoked key after 5 s\n" if time - $t0 > 5;
        }
        push @delay, time - $t0;
        push @polls, $polls;
    }

    sub pct { my ($p, @v) = @_; @v = sort { $a <=> $b } @v;
              $v[int($p / 100 * $#v + 0.5)] }
    my $stale = grep { $_ } @polls;
    printf "invalidation A -> B, %d samples (2 nodes x 2 workers, "
           . "loopback)\n", $n;
    printf "  delay after the revoke answered  p50 %.2f / p95 %.2f / "
           . "p99 %.2f / max %.2f ms\n", map { 1000 * pct($_, @delay) }
           50, 95, 99, 100;
    printf "  B served the stale record        %d of %d times (at most "
           . "%d requests)\n", $stale, $n, pct(100, @polls);
    printf "  baseline: one request to B       p50 %.2f ms\n",
           1000 * pct(50, @rtt);
    printf "  ratio p50 delay / p50 round trip %.2f\n",
           pct(50, @delay) / pct(50, @rtt);
' "$pa" "$pb" "$SAMPLES"
