#!/usr/bin/env bash
# What webhooks cost, and how fast they go.  One nginx (WORKERS=2) serves
# the API; another, with the same configuration and defarm_jobs
# (concurrency=64), runs the jobs and serves nothing; a third is the
# receiver (return 204).  Measures, in ROUNDS=3 rounds (medians):
#   1. POST /api/circuits/:id/push/:dfid, every request a new item (made
#      beforehand in SQL), in a circuit without webhooks and in one with a
#      webhook enabled (each push then queues a delivery in its own
#      transaction), back to back in alternating order: the ratio of
#      each round's pair.  The runner is stopped meanwhile: the ratio
#      is the route's, not the deliveries' (which on one machine share
#      its two cores);
#   2. deliveries a second: the runner started on that round's queue,
#      from its start to the last delivered;
#   3. the delay from a push's commit to its delivery being recorded, p50
#      and p99, under a steady RATE=200 pushes a second for DURATION, the
#      runner running.
# wrk's non-2xx responses and socket errors must be 0.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

WORKERS=${WORKERS:-2}
POOL_SIZE=${POOL_SIZE:-25}
RATE=${RATE:-200}
ROUNDS=${ROUNDS:-3}

trap 'bench_nginx_stop webhooks; bench_nginx_stop runner;
      bench_nginx_stop receiver; bench_pg_stop' EXIT

bench_pg_start
mkdir -p "$bench_var"
head -c 36 /dev/urandom | base64 | tr -d '\n' > "$bench_var/hooks-jwt.secret"
head -c 64 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$bench_var/hooks.key"
port=$(free_port)
rport=$(free_port)
while [ "$rport" = "$port" ]; do rport=$(free_port); done
jport=$(free_port)
run=$$

bench_nginx_start "$rport" "" "location / { return 204; }" receiver

conf="defarm_db \"host=$PGHOST port=$PGPORT dbname=$PGDATABASE
                 user=$PGUSER sslmode=disable\" size=$POOL_SIZE;
     defarm_bcrypt_cost 4;
     defarm_jwt_secret file=$bench_var/hooks-jwt.secret;
     defarm_secret_key file=$bench_var/hooks.key;
     defarm_webhooks_allow_private on;"

bench_nginx_start "$port" "$conf" "location / { defarm_api on; }" webhooks

bench_user "$port" "benchw$run"

plain=$(bench_api -d '{"name":"plain"}' "http://127.0.0.1:$port/api/circuits" \
        | json_field circuit_id)
hooked=$(bench_api -d '{"name":"hooked"}' "http://127.0.0.1:$port/api/circuits" \
         | json_field circuit_id)
bench_api -X PUT -d '{"enabled":true,"trigger_events":["item_pushed"]}' \
    "http://127.0.0.1:$port/api/circuits/$hooked/post-actions" >/dev/null
bench_api -d "{\"name\":\"bench\",\"url\":\"http://127.0.0.1:$rport/hook\"}" \
    "http://127.0.0.1:$port/api/circuits/$hooked/post-actions/webhooks" \
    >/dev/null

declare -A pairs

for round in $(seq 1 "$ROUNDS"); do
    bench_items "A$round"
    bench_items "B$round"
    psql -X -q -c "VACUUM ANALYZE items" >/dev/null

    bench_pair "$round" "http://127.0.0.1:$port" \
        plain "$(bench_push_lua "A$round" "$plain")" \
        hooked "$(bench_push_lua "B$round" "$hooked")"

    t0=$(bench_runner_start "$jport" "$conf" runner)
    bench_jobs_drain
    bench_nginx_stop runner

    d=$(psql -X -At -c "SELECT round(count(*) / greatest(extract(epoch FROM
                            max(delivered_at) - '$t0'), 0.001))
                        FROM webhook_deliveries
                        WHERE payload -> 'item' ->> 'dfid' LIKE 'B$round-%'
                          AND status = 'Delivered'")
    median_of deliveries "$d"
    note_bad deliveries "failed 0"
done

failed=$(psql -X -At -c "SELECT count(*) FROM webhook_deliveries
                         WHERE status <> 'Delivered'")

# 3. a steady rate: each of 10 connections waits 10 / RATE s a push
bench_items "R"
conns=10
wait_ms=$((1000 * conns / RATE))
lua=$(bench_push_lua R "$hooked" "function delay() return $wait_ms end")
bench_runner_start "$jport" "$conf" runner >/dev/null
echo "== steady $RATE pushes/s" >&2
wrk -t2 -c$conns -d"${DURATION}s" -s "$lua" "http://127.0.0.1:$port" >&2
bench_jobs_drain
delays=$(psql -X -At -F ' ' -c "SELECT count(*),
    round(1000 * percentile_cont(0.5) WITHIN GROUP (ORDER BY
          extract(epoch FROM delivered_at - created_at)))::int,
    round(1000 * percentile_cont(0.99) WITHIN GROUP (ORDER BY
          extract(epoch FROM delivered_at - created_at)))::int
    FROM webhook_deliveries WHERE payload -> 'item' ->> 'dfid' LIKE 'R-%'")
read -r steady p50 p99 <<<"$delays"


echo
printf '%-46s %12s  %s\n' "measurement ($CONNECTIONS clients, ${DURATION}s, median)" \
    "per second" "errors"
row "push, circuit without webhooks" plain
row "push, circuit with a webhook" hooked
row "webhook deliveries (runner start to last)" deliveries
echo "  deliveries not Delivered: $failed"
echo "  steady $RATE pushes/s: $steady deliveries, commit to delivered" \
     "p50 ${p50} ms, p99 ${p99} ms"
echo "  RSS of the whole nginx: API $(bench_rss webhooks) KiB," \
     "runner $(bench_rss runner) KiB"
echo
echo "  push with / without a webhook, each round:${pairs[push]}"
echo "  median of the rounds:                 $(pair_median "${pairs[push]}")  (target >= 0.9)"
bench_check_errors
[ "$failed" = 0 ] || { echo "deliveries failed" >&2; exit 1; }
