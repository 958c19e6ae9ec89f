#!/usr/bin/env bash
# What charging costs: POST /api/items (every request a new item) on an
# nginx with defarm_credits on, against the same on one with it off, each
# run from the same tables, in ROUNDS=3 rounds (the median kept): by USERS
# users (one per client by default), the common case, then all by one
# user, the worst case: every debit takes that user's balance row.  The
# balances are large enough for every request (no 402).
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

# USERS users (one per client by default), each with a balance large
# enough for every request, granted through the ledger like any grant
USERS=${USERS:-$CONNECTIONS}
tokens=()
ids=()
for i in $(seq 1 "$USERS"); do
    res=$(curl -fsS -H 'Content-Type: application/json' \
          -d "{\"username\":\"benchcr${run}u$i\",\"password\":\"Str0ng!pass\",
               \"email\":\"benchcr${run}u$i@example.com\"}" \
          "http://127.0.0.1:$pon/api/auth/register")
    tokens+=("$(perl -MJSON::PP -e 'print JSON::PP->new->decode(<STDIN>)->{token}' <<<"$res")")
    ids+=("$(perl -MJSON::PP -e 'print JSON::PP->new->decode(<STDIN>)->{user_id}' <<<"$res")")
done
in_list=$(printf "'%s'," "${ids[@]}")
in_list=${in_list%,}
psql -X -q -v ON_ERROR_STOP=1 -c "SELECT defarm_credit_change(id,
    1000000000, 'Grant', 'bench', NULL, 'bench/credits.sh', NULL)
    FROM users WHERE id IN ($in_list)" >/dev/null

# post.lua N: every request a new item, by the first N users in turn
post_lua() {
    local n=$1 lua=$bench_var/credits-post-$1.lua
    {
        echo "local tokens = {"
        printf '"%s",\n' "${tokens[@]:0:$n}"
        echo "}"
        cat <<_EOL_
local threads = 0
function setup(thread)
    threads = threads + 1
    thread:set("tid", threads)
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
function request()
    n = n + 1
    local h = { ["Content-Type"] = "application/json",
                ["Authorization"] = "Bearer " .. tokens[(n % #tokens) + 1] }
    return wrk.format(nil, nil, h, string.format(
        '{"identifiers":[{"key":"lot","value":"cr-$run-%d-%d-%d"}],'
        .. '"source_entry":"7d8f2a4e-3b1c-4c5d-9e6f-0a1b2c3d4e5f"}',
        math.random(1, 1000000000), tid, n))
end
_EOL_
    } > "$lua"
    echo "$lua"
}

fresh_tables() {
    psql -X -q -v ON_ERROR_STOP=1 <<_EOS_
DELETE FROM items WHERE owner_id IN ($in_list);
VACUUM ANALYZE items;
VACUUM ANALYZE item_identifiers;
VACUUM ANALYZE credit_transactions;
VACUUM ANALYZE credit_balances;
CHECKPOINT;
_EOS_
}

declare -A last pairs

# the two modes alternate within a round, each round starting with the
# other, so that neither always meets the tables the other has grown
for users in "$USERS" 1; do
    lua=$(post_lua "$users")
    for round in $(seq 1 "${ROUNDS:-3}"); do
        order="on off"
        [ $((round % 2)) = 0 ] && order="off on"
        for mode in $order; do
            port=$pon
            [ $mode = off ] && port=$poff
            fresh_tables
            wrk_run "$users-$mode" "http://127.0.0.1:$port/api/items" \
                -s "$lua"
            last[$mode]=$(echo "${runs[$users-$mode]}" | awk '{ print $NF }')
        done
        pairs[$users]="${pairs[$users]:-} $(awk -v a="${last[on]}" \
                       -v b="${last[off]}" 'BEGIN { print a / b }')"
    done
done


debits=$(psql -X -At -c "SELECT count(*) FROM credit_transactions
                         WHERE user_id IN ($in_list)
                           AND transaction_type = 'Consumption'")

echo
printf '%-46s %12s\n' "POST /api/items ($CONNECTIONS clients, ${DURATION}s, median)" \
    "per second"
for users in "$USERS" 1; do
    row "$users users, defarm_credits off" "$users-off"
    row "$users users, defarm_credits on" "$users-on"
    echo "  charged / uncharged, each round:${pairs[$users]}"
    echo "  median of the rounds, $users users:     $(pair_median "${pairs[$users]}")  (target >= 0.9)"
done
echo "  debits written: $debits"
echo "  (one user: every debit of the run takes the same balance row, so"
echo "   the user's creations commit one after another)"
bench_check_errors
