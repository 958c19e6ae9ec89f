#!/usr/bin/env bash
# The shared-memory cache's throughput, and what contention costs.
#
#   1. GET of a cached key under wrk, against nginx's return 200 of the
#      same body size, in the same nginx: the ratio is the cost of the
#      router, the trylock, the copy out of shared memory and JSON.
#   2. The same GET while a client holds the zone's lock in a loop (held
#      20 ms of every 40 ms): the 503 storage_lock_timeout rate and the
#      latency percentiles show that contention costs a bounded wait or a
#      fast 503, never a stall.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

trap 'kill $holder 2>/dev/null || true; bench_nginx_stop' EXIT
holder=

port=$(free_port)
value=$(head -c 200 /dev/zero | tr '\0' 'v')
body="{\"key\":\"item:bench\",\"value\":\"$value\"}"

bench_nginx_start "$port" \
    "defarm_cache zone=defarm_bench:16m ttl=1h;" \
    "location / { defarm_api on; defarm_echo on; }
     location = /static { default_type application/json;
                          return 200 '$body'; }"

curl -fsS -XPUT -H 'Content-Type: application/json' \
    -d "{\"value\":\"$value\"}" "http://127.0.0.1:$port/api/echo/cache/item:bench" \
    >/dev/null
[ "$(curl -fsS "http://127.0.0.1:$port/api/echo/cache/item:bench")" = "$body" ]

echo "== nginx return 200 (${#body}-byte body)" >&2
static_rps=$(wrk_rps "http://127.0.0.1:$port/static")

echo "== GET /api/echo/cache/item:bench" >&2
cache_rps=$(wrk_rps "http://127.0.0.1:$port/api/echo/cache/item:bench")

contention() {
    local hold=$1 period=$2 out total non2xx p50 p99 max

    (
        end=$((SECONDS + DURATION + 2))
        while [ $SECONDS -lt $end ]; do
            curl -s -o /dev/null -XPOST -H 'Content-Type: application/json' \
                -d "{\"ms\":$hold}" \
                "http://127.0.0.1:$port/api/echo/cache-lock/hold"
            sleep "$(awk -v p="$period" 'BEGIN { print p / 1000 }')"
        done
    ) &
    holder=$!

    echo "== GET while the lock is held $hold ms of every $period ms" >&2
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency \
          "http://127.0.0.1:$port/api/echo/cache/item:bench")
    echo "$out" >&2
    kill $holder 2>/dev/null || true
    wait $holder 2>/dev/null || true
    sleep 0.2

    total=$(echo "$out" | awk '/requests in/ { print $1 }')
    non2xx=$(echo "$out" | awk '/Non-2xx/ { print $5 }')
    non2xx=${non2xx:-0}
    p50=$(echo "$out" | awk '$1 == "50%" { print $2 }')
    p99=$(echo "$out" | awk '$1 == "99%" { print $2 }')
    max=$(echo "$out" | awk '/Latency/ && !/Distribution/ { print $4 }')

    printf '  held %3d ms of every %3d ms: 503 %d of %d (%.2f%%), ' \
        "$hold" "$period" "$non2xx" "$total" \
        "$(awk -v n="$non2xx" -v t="$total" 'BEGIN { print 100 * n / t }')"
    echo "p50 $p50, p99 $p99, max $max"
}

echo
printf '%-44s %12s\n' "measurement" "per second"
printf '%-44s %12.0f\n' "nginx return 200" "$static_rps"
printf '%-44s %12.0f\n' "GET cached key" "$cache_rps"
echo
awk -v a="$cache_rps" -v b="$static_rps" \
    'BEGIN { printf "ratio cache / return 200: %.2f  (target >= 0.6)\n", a / b }'
echo
echo "under contention (lock_timeout 50 ms, lock_step 5 ms):"
contention 20 40
contention 100 150
