#!/usr/bin/env bash
# The database pool's throughput against PostgreSQL's own client.
#
# Measures, in one run on this machine:
#   pgbench  -S -M prepared, CONNECTIONS clients: single-row selects by
#            primary key straight to PostgreSQL (the baseline);
#   pgbench  the route's own statement, prepared, same clients;
#   nginx    GET /api/echo/db/:value under wrk with CONNECTIONS
#            connections: one prepared single-row select per request,
#            through HTTP, the router, the pool and JSON rendering (a
#            read: those of one turn of the event loop share a batch);
#   nginx    return 200 of the same body size (the HTTP ceiling);
# and prints the ratios.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

trap 'bench_nginx_stop; bench_pg_stop' EXIT

bench_pg_start
pgbench -i -s 10 -q >/dev/null 2>&1

echo "== pgbench -S -M prepared -c $CONNECTIONS -j $THREADS -T $DURATION" >&2
pg_tps=$(pgbench -S -M prepared -c "$CONNECTIONS" -j "$THREADS" \
         -T "$DURATION" 2>/dev/null \
         | awk '/^tps = / { print $3; exit }')

# the very statement the route runs, prepared, from pgbench's clients
script=$bench_var/echo.sql
printf '%s\n' "SELECT '12345'::text, octet_length('12345'::text);" > "$script"

echo "== pgbench -f echo.sql -M prepared -c $CONNECTIONS -j $THREADS" >&2
same_tps=$(pgbench -n -f "$script" -M prepared -c "$CONNECTIONS" \
           -j "$THREADS" -T "$DURATION" 2>/dev/null \
           | awk '/^tps = / { print $3; exit }')

port=$(free_port)
pool=${POOL_SIZE:-16}
bench_nginx_start "$port" \
    "defarm_db \"host=$PGHOST port=$PGPORT dbname=$PGDATABASE user=$PGUSER\" size=$pool queue=4096;" \
    "location / { defarm_api on; defarm_echo on; }
     location = /static { return 200 '{\"value\":\"12345\",\"length\":5}'; }"

curl -fsS "http://127.0.0.1:$port/api/echo/db/12345" >/dev/null

echo "== nginx return 200 (same body size)" >&2
static_rps=$(wrk_rps "http://127.0.0.1:$port/static")

echo "== GET /api/echo/db/:value through the pool (size=$pool per worker)" >&2
db_rps=$(wrk_rps "http://127.0.0.1:$port/api/echo/db/12345")

echo
printf '%-52s %12s\n' "measurement" "per second"
printf '%-52s %12.0f\n' "pgbench -S -M prepared ($CONNECTIONS clients)" "$pg_tps"
printf '%-52s %12.0f\n' "pgbench, the route's own statement" "$same_tps"
printf '%-52s %12.0f\n' "nginx return 200" "$static_rps"
printf '%-52s %12.0f\n' "GET /api/echo/db/:value (pool)" "$db_rps"
echo
awk -v a="$db_rps" -v b="$pg_tps" \
    'BEGIN { printf "ratio pool / pgbench -S:      %.2f  (target >= 0.7)\n", a / b }'
awk -v a="$db_rps" -v b="$same_tps" \
    'BEGIN { printf "ratio pool / pgbench same SQL: %.2f\n", a / b }'
awk -v a="$db_rps" -v b="$static_rps" \
    'BEGIN { printf "ratio pool / return 200:      %.2f\n", a / b }'
