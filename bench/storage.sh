#!/usr/bin/env bash
# What storage uploads cost, and how fast they go.  One nginx (WORKERS=2)
# serves the API; another, with the same configuration and defarm_jobs
# (concurrency=16), runs the jobs and serves nothing; a local IPFS node
# (scripts/ipfs.sh) stores.  Measures, in ROUNDS=3 rounds:
#   1. POST /api/circuits/:id/push/:dfid, every request a new item, into a
#      circuit without an adapter and into one with ipfs-ipfs (each push
#      then queues an upload of the item's document in its own
#      transaction), back to back in alternating order: the ratio of
#      each round's pair.  The runner is stopped meanwhile: the ratio
#      is the route's, not the uploads' (which on one machine share
#      its two cores);
#   2. uploads a second: the runner started on that round's queue, from
#      its start to the last CID recorded;
#   3. the delay from a push's commit to its CID being recorded, p50 and
#      p99, under a steady RATE=20 pushes a second for DURATION, the runner
#      running.
# wrk's non-2xx responses and socket errors must be 0, and every upload
# must end Done.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

WORKERS=${WORKERS:-2}
POOL_SIZE=${POOL_SIZE:-25}
RATE=${RATE:-20}
ROUNDS=${ROUNDS:-3}
PUSH_ITEMS=${PUSH_ITEMS:-30000}

top=$(cd "$(dirname "$0")/.." && pwd)

trap 'bench_nginx_stop storage; bench_nginx_stop runner;
      "$top/scripts/ipfs.sh" stop "$bench_var/ipfs"; bench_pg_stop' EXIT

bench_pg_start
mkdir -p "$bench_var"
"$top/scripts/ipfs.sh" install
eval "$("$top/scripts/ipfs.sh" start "$bench_var/ipfs")"
head -c 36 /dev/urandom | base64 | tr -d '\n' > "$bench_var/storage-jwt.secret"
head -c 64 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$bench_var/storage.key"
port=$(free_port)
jport=$(free_port)
while [ "$jport" = "$port" ]; do jport=$(free_port); done
run=$$
JOBS_CONCURRENCY=${JOBS_CONCURRENCY:-16}

conf="defarm_db \"host=$PGHOST port=$PGPORT dbname=$PGDATABASE
                 user=$PGUSER sslmode=disable\" size=$POOL_SIZE;
     defarm_bcrypt_cost 4;
     defarm_jwt_secret file=$bench_var/storage-jwt.secret;
     defarm_secret_key file=$bench_var/storage.key;"

bench_nginx_start "$port" "$conf" "location / { defarm_api on; }" storage

bench_user "$port" "benchs$run"
psql -X -q -c "UPDATE users SET is_admin = true WHERE id = '$user_id'"
bench_api -d "{\"name\":\"bench node\",\"adapter_type\":\"ipfs-ipfs\",
               \"connection_details\":{\"endpoint\":\"$IPFS_API\",\"timeout_ms\":5000}}" \
    "http://127.0.0.1:$port/api/admin/adapters" >/dev/null
plain=$(bench_api -d '{"name":"plain"}' "http://127.0.0.1:$port/api/circuits" \
        | json_field circuit_id)
stored=$(bench_api -d '{"name":"stored",
                        "adapter_config":{"adapter_type":"ipfs-ipfs"}}' \
         "http://127.0.0.1:$port/api/circuits" | json_field circuit_id)

# of the pushes of items PREFIX-*: the uploads, a second from SINCE (or
# the first queued), and the delays from commit to CID recorded
uploads() {
    psql -X -At -F ' ' -c "SELECT count(*),
        round(count(*) / greatest(extract(epoch FROM
              max(s.stored_at) - coalesce(${2:+'$2'::timestamptz,}
                                          min(j.created_at))), 0.001)),
        round(1000 * percentile_cont(0.5) WITHIN GROUP (ORDER BY
              extract(epoch FROM s.stored_at - j.created_at)))::int,
        round(1000 * percentile_cont(0.99) WITHIN GROUP (ORDER BY
              extract(epoch FROM s.stored_at - j.created_at)))::int
        FROM storage_history s
        JOIN jobs j ON j.job_id = (s.metadata ->> 'job_id')::bigint
        WHERE s.dfid LIKE '$1-%'"
}

declare -A pairs

for round in $(seq 1 "$ROUNDS"); do
    bench_items "A$round"
    bench_items "B$round"
    psql -X -q -c "VACUUM ANALYZE items" >/dev/null

    bench_pair "$round" "http://127.0.0.1:$port" \
        plain "$(bench_push_lua "A$round" "$plain")" \
        stored "$(bench_push_lua "B$round" "$stored")"

    t0=$(bench_runner_start "$jport" "$conf" runner)
    bench_jobs_drain
    bench_nginx_stop runner
    read -r _ u _ _ <<<"$(uploads "B$round" "$t0")"
    median_of uploads "$u"
    note_bad uploads "failed 0"
done

# 3. a steady rate: each of 10 connections waits 10 / RATE s a push
bench_items "R"
conns=10
wait_ms=$((1000 * conns / RATE))
lua=$(bench_push_lua R "$stored" "function delay() return $wait_ms end")
bench_runner_start "$jport" "$conf" runner >/dev/null
echo "== steady $RATE pushes/s" >&2
wrk -t2 -c$conns -d"${DURATION}s" -s "$lua" "http://127.0.0.1:$port" >&2
bench_jobs_drain
read -r steady _ p50 p99 <<<"$(uploads R)"

failed=$(psql -X -At -c "SELECT count(*) FROM jobs
                         WHERE kind = 'ipfs_upload' AND state <> 'Done'")

echo
printf '%-46s %12s  %s\n' "measurement ($CONNECTIONS clients, ${DURATION}s, median)" \
    "per second" "errors"
row "push, circuit without an adapter" plain
row "push, circuit with ipfs-ipfs" stored
row "uploads (runner start to last CID)" uploads
echo "  uploads not Done: $failed"
echo "  steady $RATE pushes/s: $steady uploads, commit to CID recorded" \
     "p50 ${p50} ms, p99 ${p99} ms"
echo "  RSS of the whole nginx: API $(bench_rss storage) KiB," \
     "runner $(bench_rss runner) KiB"
echo
echo "  push with / without an adapter, each round:${pairs[push]}"
echo "  median of the rounds:                 $(pair_median "${pairs[push]}")  (target >= 0.9)"
bench_check_errors
[ "$failed" = 0 ] || { echo "uploads failed" >&2; exit 1; }
