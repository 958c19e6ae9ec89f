#!/usr/bin/env bash
# A Merkle inclusion proof for an item of 10,000 events against the plain
# uncached read of an item.
#
# One nginx (WORKERS=2 workers, POOL_SIZE=25 connections a worker, the
# item cache off: every GET /api/items/:dfid one prepared statement
# through the pool), a user registered through the API, an item whose
# 10,000 events were loaded in SQL and its tree built once
# (defarm_merkle_item_rebuild), then two more events added through the
# API (the tree kept as they are written).  In ROUNDS=3 rounds, back to
# back (in turn first), the median of each:
#   1. GET /api/items/:dfid (uncached);
#   2. GET /api/merkle/items/:dfid/merkle-proof/:event_id, the event one
#      of the 10,000 (14 steps);
# and prints merkle-proof / uncached GET, the median of the rounds' ratios
# (target >= 0.5).  wrk's non-2xx
# responses and socket errors must be 0.  For information, also the rate
# of GET .../merkle-root.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

WORKERS=${WORKERS:-2}
POOL_SIZE=${POOL_SIZE:-25}
EVENTS=${EVENTS:-10000}

trap 'bench_nginx_stop merkle; bench_pg_stop' EXIT

bench_pg_start
mkdir -p "$bench_var"
head -c 36 /dev/urandom | base64 | tr -d '\n' > "$bench_var/merkle-jwt.secret"

run=$$
source_entry=7d8f2a4e-3b1c-4c5d-9e6f-0a1b2c3d4e5f
port=$(free_port)

bench_nginx_start "$port" "defarm_db \"host=$PGHOST port=$PGPORT
                         dbname=$PGDATABASE user=$PGUSER sslmode=disable\"
                         size=$POOL_SIZE;
    defarm_bcrypt_cost 4;
    defarm_jwt_secret file=$bench_var/merkle-jwt.secret;
    defarm_cache zone=bench_merkle_auth:16m ttl=1h;" \
    "defarm_item_cache off;
     location / { defarm_api on; }" merkle

base=http://127.0.0.1:$port
bench_user "$port" "benchmerkle$run"
if [ -z "$token" ] || [ -z "$user_id" ]; then
    echo "register did not answer a token" >&2
    exit 1
fi
auth="Authorization: Bearer $token"

dfid=$(bench_api -d "{\"identifiers\":[{\"key\":\"lot\",\"value\":\"m-$run\"}],
                      \"source_entry\":\"$source_entry\"}" \
       "$base/api/items" | json_field dfid)
[ -n "$dfid" ] || { echo "POST /api/items did not answer a dfid" >&2; exit 1; }

echo "== loading $((EVENTS - 2)) events, building the tree" >&2
psql -X -q -v ON_ERROR_STOP=1 <<_EOS_
INSERT INTO events (dfid, owner_id, event_type, visibility, metadata,
                    content_hash)
SELECT '$dfid', '$user_id', 'Updated', 'Public',
       jsonb_build_object('n', g, 'batch', 'bench'),
       md5('bench-merkle-$run-' || g)
FROM generate_series(1, $EVENTS - 2) g;
SELECT defarm_merkle_item_rebuild('$dfid');
VACUUM ANALYZE;
_EOS_

for n in 1 2; do
    bench_api -d "{\"dfid\":\"$dfid\",\"event_type\":\"updated\",
                   \"visibility\":\"public\",\"metadata\":{\"api\":$n}}" \
        "$base/api/events" >/dev/null
done

count=$(curl -fsS -H "$auth" "$base/api/merkle/items/$dfid/merkle-root" \
        | json_field event_count)
[ "$count" = "$EVENTS" ] \
    || { echo "the tree has $count leaves, not $EVENTS" >&2; exit 1; }

event=$(psql -X -At -c "SELECT event_id FROM events WHERE dfid = '$dfid'
                        ORDER BY event_id LIMIT 1 OFFSET $EVENTS / 2")
proof_url=$base/api/merkle/items/$dfid/merkle-proof/$event
curl -fsS -H "$auth" "$proof_url" > "$bench_var/merkle-proof.json"
python3 "$top/scripts/verify_proof.py" merkle "$bench_var/merkle-proof.json" \
    >&2 || { echo "the proof does not verify" >&2; exit 1; }

# last NAME: the rate of NAME's latest run
last() { echo "${runs[$1]}" | awk '{ print $NF }'; }

ratios=
for round in $(seq 1 "${ROUNDS:-3}"); do
    echo "== round $round" >&2
    if [ $((round % 2)) = 1 ]; then
        wrk_run uncached "$base/api/items/$dfid" -H "$auth"
        wrk_run proof "$proof_url" -H "$auth"
    else
        wrk_run proof "$proof_url" -H "$auth"
        wrk_run uncached "$base/api/items/$dfid" -H "$auth"
    fi
    ratios="$ratios $(awk -v a="$(last proof)" -v b="$(last uncached)" \
                      'BEGIN { print a / b }')"
    wrk_run root "$base/api/merkle/items/$dfid/merkle-root" -H "$auth"
done

echo
printf '%-50s %12s  %s\n' \
    "measurement ($CONNECTIONS clients, ${DURATION}s, median)" \
    "per second" "errors"
printf '%-50s %12.0f  %s\n' "GET /api/items/:dfid, defarm_item_cache off" \
    "${rate[uncached]}" "${bad[uncached]}"
printf '%-50s %12.0f  %s\n' "GET merkle-proof ($EVENTS events)" \
    "${rate[proof]}" "${bad[proof]}"
printf '%-50s %12.0f  %s\n' "GET merkle-root ($EVENTS events)" \
    "${rate[root]}" "${bad[root]}"
echo
echo "ratio merkle-proof / uncached GET:     $(pair_median "$ratios")" \
     " (target >= 0.5; the median of each round's pair, run back to back)"

bench_check_errors
