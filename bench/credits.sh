#!/usr/bin/env bash
# What charging costs: POST /api/items (every request a new item) on an
# nginx with defarm_credits on, against the same on one with it off, each
# run from the same tables, in ROUNDS=3 rounds (the median kept).  The
# user's balance is large enough for every request (no 402).  All the
# requests are one user's: every debit takes that user's balance row, the
# worst case for a single balance.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

WORKERS=${WORKERS:-2}
POOL_SIZE=${POOL_SIZE:-25}

trap 'bench_nginx_stop credits-on; bench_nginx_stop credits-off;
      bench_pg_stop' EXIT

bench_pg_start
mkdir -p "$bench_var"
head -c 36 /dev/urandom | base64 | tr -d '\n' > "$bench_var/credits-jwt.secret"
pon=$(free_port)
poff=$(free_port)
while [ "$poff" = "$pon" ]; do poff=$(free_port); done
run=$$

for mode in on off; do
    port=$pon
    [ $mode = off ] && port=$poff
    bench_nginx_start "$port" \
        "defarm_db \"host=$PGHOST port=$PGPORT dbname=$PGDATABASE
                     user=$PGUSER sslmode=disable\" size=$POOL_SIZE;
         defarm_bcrypt_cost 4;
         defarm_credits $mode;
         defarm_cache zone=bench_credits_$mode:16m ttl=1h;
         defarm_jwt_secret file=$bench_var/credits-jwt.secret;" \
        "location / { defarm_api on; }" "credits-$mode"
done

res=$(curl -fsS -H 'Content-Type: application/json' \
      -d "{\"username\":\"benchcr$run\",\"password\":\"Str0ng!pass\",
           \"email\":\"benchcr$run@example.com\"}" \
      "http://127.0.0.1:$pon/api/auth/register")
token=$(perl -MJSON::PP -e 'print JSON::PP->new->decode(<STDIN>)->{token}' <<<"$res")
user_id=$(perl -MJSON::PP -e 'print JSON::PP->new->decode(<STDIN>)->{user_id}' <<<"$res")

# enough for every request, through the ledger like any grant
psql -X -q -v ON_ERROR_STOP=1 -c "SELECT defarm_credit_change('$user_id',
    1000000000, 'Grant', 'bench', NULL, 'bench/credits.sh', NULL)" >/dev/null

lua=$bench_var/credits-post.lua
cat > "$lua" <<_EOL_
local threads = 0
function setup(thread)
    threads = threads + 1
    thread:set("tid", threads)
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $token"
local n = 0
function request()
    n = n + 1
    return wrk.format(nil, nil, nil, string.format(
        '{"identifiers":[{"key":"lot","value":"cr-$run-%d-%d-%d"}],'
        .. '"source_entry":"7d8f2a4e-3b1c-4c5d-9e6f-0a1b2c3d4e5f"}',
        math.random(1, 1000000000), tid, n))
end
_EOL_

fresh_tables() {
    psql -X -q -v ON_ERROR_STOP=1 <<_EOS_
DELETE FROM items WHERE owner_id = '$user_id';
VACUUM ANALYZE items;
VACUUM ANALYZE item_identifiers;
VACUUM ANALYZE credit_transactions;
CHECKPOINT;
_EOS_
}

declare -A runs
median() {
    echo $1 | tr ' ' '\n' | sort -g \
        | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

for round in $(seq 1 "${ROUNDS:-3}"); do
    for mode in on off; do
        port=$pon
        [ $mode = off ] && port=$poff
        fresh_tables
        echo "== round $round, credits $mode" >&2
        out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" \
              -s "$lua" "http://127.0.0.1:$port/api/items")
        echo "$out" >&2
        if echo "$out" | grep -q "Non-2xx"; then
            echo "errors with credits $mode" >&2
            exit 1
        fi
        runs[$mode]="${runs[$mode]:-} $(echo "$out" \
                     | awk '/^Requests\/sec:/ { print $2 }')"
    done
done

on=$(median "${runs[on]}")
off=$(median "${runs[off]}")
debits=$(psql -X -At -c "SELECT count(*) FROM credit_transactions
                         WHERE user_id = '$user_id'
                           AND transaction_type = 'Consumption'")

echo
printf '%-46s %12s\n' "POST /api/items ($CONNECTIONS clients, ${DURATION}s, median)" \
    "per second"
printf '%-46s %12.0f\n' "defarm_credits off" "$off"
printf '%-46s %12.0f\n' "defarm_credits on" "$on"
echo "  debits written: $debits"
awk -v a="$on" -v b="$off" \
    'BEGIN { printf "ratio charged / uncharged:             %.2f  (target >= 0.9)\n", a / b }'
