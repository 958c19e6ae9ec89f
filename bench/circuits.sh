#!/usr/bin/env bash
# Circuits' throughput against nginx's own return and PostgreSQL's own
# client.  Measures, in one run on this machine (one nginx of WORKERS=2
# workers, POOL_SIZE=25 connections a worker, a JWT of a user registered
# through the API):
#   1. GET /api/circuits/:id for a member, served from the shared-memory
#      cache ($defarm_cache HIT), against nginx's return 200 of the same
#      body bytes in the same nginx;
#   2. POST /api/circuits/:id/push/:dfid, every request a new item (made
#      beforehand in SQL), against pgbench calling defarm_circuit_push()
#      the same way from as many clients;
# and prints the ratios.  wrk's non-2xx responses and socket errors, and
# pgbench's failed transactions, must be 0.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

WORKERS=${WORKERS:-2}
POOL_SIZE=${POOL_SIZE:-25}

trap 'bench_nginx_stop circuits; bench_pg_stop' EXIT

bench_pg_start
mkdir -p "$bench_var"
head -c 36 /dev/urandom | base64 | tr -d '\n' > "$bench_var/circuits-jwt.secret"
port=$(free_port)
run=$$

http_conf="defarm_db \"host=$PGHOST port=$PGPORT dbname=$PGDATABASE
                       user=$PGUSER sslmode=disable\" size=$POOL_SIZE;
           defarm_bcrypt_cost 4;
           defarm_cache zone=bench_circuits:16m ttl=1h;
           defarm_jwt_secret file=$bench_var/circuits-jwt.secret;"

# first without the static location: its body is the circuit's JSON
bench_nginx_start "$port" "$http_conf" \
    "add_header X-Cache \$defarm_cache always;
     location / { defarm_api on; }" circuits

res=$(curl -fsS -H 'Content-Type: application/json' \
      -d "{\"username\":\"benchc$run\",\"password\":\"Str0ng!pass\",
           \"email\":\"benchc$run@example.com\"}" \
      "http://127.0.0.1:$port/api/auth/register")
token=$(json_field token <<<"$res")
user_id=$(json_field user_id <<<"$res")
auth="Authorization: Bearer $token"

cid=$(curl -fsS -H 'Content-Type: application/json' -H "$auth" \
      -d '{"name":"Bench circuit","description":"farm to fork"}' \
      "http://127.0.0.1:$port/api/circuits" | json_field circuit_id)
[ -n "$cid" ] || { echo "no circuit" >&2; exit 1; }

body=$(curl -fsS -H "$auth" "http://127.0.0.1:$port/api/circuits/$cid")
case $body in
    *\'* | *\\* | *\$*)
        echo "the circuit's JSON cannot go in a return directive" >&2
        exit 1 ;;
esac

# then again with the same bytes as a static return
bench_nginx_stop circuits
bench_nginx_start "$port" "$http_conf" \
    "add_header X-Cache \$defarm_cache always;
     location / { defarm_api on; }
     location = /static { default_type application/json;
                          return 200 '$body'; }" circuits
[ "$(curl -fsS "http://127.0.0.1:$port/static")" = "$body" ] \
    || { echo "the static body differs" >&2; exit 1; }

curl -fsS -o /dev/null -H "$auth" "http://127.0.0.1:$port/api/circuits/$cid"
hit=$(curl -fsS -D - -o /dev/null -H "$auth" \
      "http://127.0.0.1:$port/api/circuits/$cid" \
      | tr -d '\r' | awk -F': ' 'tolower($1) == "x-cache" { print $2 }')
[ "$hit" = HIT ] || { echo "the circuit is not cached: $hit" >&2; exit 1; }

# 1. cached GET against return 200 of the same bytes

wrk_run static "http://127.0.0.1:$port/static"
wrk_run cached "http://127.0.0.1:$port/api/circuits/$cid" -H "$auth"

# 2. pushes of new items: made in SQL first (enough for either run)

n=${PUSH_ITEMS:-60000}
psql -X -q -v ON_ERROR_STOP=1 <<_EOS_
INSERT INTO items (dfid, owner_id)
SELECT 'BENCHW-' || t || '-' || g, '$user_id'
FROM generate_series(1, $THREADS) t, generate_series(1, $n) g;
INSERT INTO items (dfid, owner_id)
SELECT 'BENCHP-' || g, '$user_id' FROM generate_series(1, $n * $THREADS) g;
CREATE SEQUENCE bench_push_seq;
VACUUM ANALYZE items;
_EOS_

lua=$(bench_push_lua BENCHW "$cid")

wrk_run push "http://127.0.0.1:$port" -s "$lua"
pushed=$(psql -X -At -c "SELECT count(*) FROM circuit_items
                         WHERE dfid LIKE 'BENCHW-%'")

script=$bench_var/circuits-push.sql
cat > "$script" <<_EOS_
SELECT status FROM defarm_circuit_push('$user_id', '$cid', '{}'::jsonb, 'BENCHP-' || nextval('bench_push_seq'));
_EOS_

pgbench_run pgbench_push -n -f "$script"
pg_pushed=$(psql -X -At -c "SELECT count(*) FROM circuit_items
                            WHERE dfid LIKE 'BENCHP-%'")

echo
printf '%-46s %12s  %s\n' "measurement ($CONNECTIONS clients, ${DURATION}s)" \
    "per second" "errors"
row "nginx return 200 (same ${#body} bytes)" static
row "GET /api/circuits/:id, cache HIT" cached
row "pgbench, defarm_circuit_push()" pgbench_push
row "POST /api/circuits/:id/push/:dfid" push
echo "  pushed by POST: $pushed items; by pgbench: $pg_pushed items"
echo "  RSS of the whole nginx: $(bench_rss circuits) KiB"
echo
ratio "ratio cached GET / return 200:" cached static "  (target >= 0.5)"
ratio "ratio push / pgbench push:" push pgbench_push "  (target >= 0.5)"

bench_check_errors
