#!/usr/bin/env bash
# The items routes' throughput against nginx's own return and PostgreSQL's
# own client.
#
# Measures, in one run on this machine (two nginx of WORKERS=2 workers on
# one PostgreSQL, POOL_SIZE=25 connections a worker: as many in all as
# pgbench has clients; a JWT of a user registered through the API):
#   1. GET /api/items/:dfid served from the shared-memory cache
#      ($defarm_cache HIT) under wrk, against nginx's return 200 of the
#      same body bytes in the same nginx: the cost of the router, the JWT
#      check, the trylock and the copy out of shared memory;
#   2. the same GET on a second nginx with defarm_item_cache off (auth
#      records cached, every item read one prepared statement through the
#      pool), against pgbench -S -M prepared with as many clients as wrk
#      has connections; and, for information, against pgbench running the
#      very statement of a miss;
#   (1, 2 and 3 in ROUNDS=3 rounds, the median of each kept);
#   3. POST /api/items, every request a new item (a unique identifier),
#      against pgbench calling defarm_item_create() the same way, each
#      run from the same tables (vacuumed and analysed);
#   4. the resident memory of both nginx after each run, and over 10^6
#      more GETs (cached and uncached at once);
# and prints the ratios.  wrk's non-2xx responses and socket errors, and
# pgbench's failed transactions, are printed and must be 0.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

WORKERS=${WORKERS:-2}
POOL_SIZE=${POOL_SIZE:-25}

user_id=
trap 'bench_nginx_stop items-cache; bench_nginx_stop items-nocache;
      if [ -n "$user_id" ]; then
          psql -X -q -c "DELETE FROM users WHERE id = '"'"'$user_id'"'"'" \
              >/dev/null 2>&1 || true
      fi
      bench_pg_stop' EXIT

bench_pg_start
pgbench -i -s 10 -q >/dev/null 2>&1

mkdir -p "$bench_var"
head -c 36 /dev/urandom | base64 | tr -d '\n' > "$bench_var/items-jwt.secret"

run=$$
source_entry=7d8f2a4e-3b1c-4c5d-9e6f-0a1b2c3d4e5f
pa=$(free_port)
pb=$(free_port)
while [ "$pb" = "$pa" ]; do pb=$(free_port); done

http_common="defarm_db \"host=$PGHOST port=$PGPORT dbname=$PGDATABASE
                         user=$PGUSER sslmode=disable\" size=$POOL_SIZE;
             defarm_bcrypt_cost 4;
             defarm_jwt_secret file=$bench_var/items-jwt.secret;"

# the nginx without the item cache first: the user, the item, the body
bench_nginx_start "$pb" "$http_common
    defarm_cache zone=bench_items_auth:16m ttl=1h;" \
    "add_header X-Cache \$defarm_cache always;
     defarm_item_cache off;
     location / { defarm_api on; }" items-nocache

res=$(curl -fsS -H 'Content-Type: application/json' \
      -d "{\"username\":\"benchitems$run\",\"password\":\"Str0ng!pass\",
           \"email\":\"benchitems$run@example.com\"}" \
      "http://127.0.0.1:$pb/api/auth/register")
token=$(json_field token <<<"$res")
user_id=$(json_field user_id <<<"$res")
if [ -z "$token" ] || [ -z "$user_id" ]; then
    echo "register did not answer a token: $res" >&2
    exit 1
fi
auth="Authorization: Bearer $token"

res=$(curl -fsS -H 'Content-Type: application/json' -H "$auth" \
      -d "{\"identifiers\":[{\"key\":\"lot\",\"value\":\"get-$run\"}],
           \"enriched_data\":{\"origin\":\"bench\"},
           \"source_entry\":\"$source_entry\"}" \
      "http://127.0.0.1:$pb/api/items")
dfid=$(json_field dfid <<<"$res")
if [ -z "$dfid" ]; then
    echo "POST /api/items did not answer a dfid: $res" >&2
    exit 1
fi

body=$(curl -fsS -H "$auth" "http://127.0.0.1:$pb/api/items/$dfid")
case $body in
    *\'* | *\\* | *\$*)
        echo "the item's JSON cannot go in a return directive: $body" >&2
        exit 1 ;;
esac

bench_nginx_start "$pa" "$http_common
    defarm_cache zone=bench_items:16m ttl=1h;" \
    "add_header X-Cache \$defarm_cache always;
     location / { defarm_api on; }
     location = /static { default_type application/json;
                          return 200 '$body'; }" items-cache

# x_cache PORT: the X-Cache header of one authenticated GET of the item,
# after checking that the body is the same bytes
x_cache() {
    local hdr=$bench_var/items-headers out
    out=$(curl -fsS -D "$hdr" -H "$auth" \
          "http://127.0.0.1:$1/api/items/$dfid")
    if [ "$out" != "$body" ]; then
        echo "GET on port $1 answered another body: $out" >&2
        exit 1
    fi
    tr -d '\r' < "$hdr" | awk -F': ' 'tolower($1) == "x-cache" { print $2 }'
}

x_cache "$pa" >/dev/null                       # warms the cache
[ "$(x_cache "$pa")" = HIT ] \
    || { echo "the cached nginx does not answer X-Cache: HIT" >&2; exit 1; }
[ "$(x_cache "$pb")" != HIT ] \
    || { echo "the uncached nginx answers X-Cache: HIT" >&2; exit 1; }
[ "$(curl -fsS "http://127.0.0.1:$pa/static")" = "$body" ]

# the memory of both nginx, after each run; the peak is reported
declare -A rss
peak_rss=0
note_rss() {
    local a b
    a=$(bench_rss items-cache)
    b=$(bench_rss items-nocache)
    rss[$1]="$a KiB + $b KiB"
    [ $((a + b)) -le "$peak_rss" ] || peak_rss=$((a + b))
}
note_rss start

# 1. cached GET against return 200 of the same bytes, and 2. uncached GET
# against pgbench -S and the statement of a miss: ROUNDS rounds of all of
# them, one after the other, and the median of each (the machine's speed
# drifts from one run to the next more than the ratios differ)

script=$bench_var/items-get.sql
printf '%s\n' \
    "SELECT owner_id, doc, owner_id = '$user_id' OR defarm_item_readable(dfid, '$user_id') FROM items WHERE dfid = :dfid;" \
    > "$script"

for round in $(seq 1 "${ROUNDS:-3}"); do
    echo "== round $round" >&2
    wrk_run static "http://127.0.0.1:$pa/static"
    wrk_run cached "http://127.0.0.1:$pa/api/items/$dfid" -H "$auth"
    note_rss cached
    [ "$(x_cache "$pa")" = HIT ] \
        || { echo "the item is no longer cached after the run" >&2; exit 1; }

    wrk_run uncached "http://127.0.0.1:$pb/api/items/$dfid" -H "$auth"
    note_rss uncached
    pgbench_run pgbench_S -S
    pgbench_run pgbench_get -n -f "$script" -D dfid="$dfid"
done

# 3. POST /api/items, a new item each, against defarm_item_create()

# both write runs start from the same tables: a create's look-up of its
# identifiers costs more as item_identifiers grows
fresh_tables() {
    psql -X -q -v ON_ERROR_STOP=1 <<_EOS_
DELETE FROM items WHERE owner_id = '$user_id' AND dfid <> '$dfid';
VACUUM ANALYZE items;
VACUUM ANALYZE item_identifiers;
CHECKPOINT;
_EOS_
}

# created PREFIX: how many creates left an identifier, in how many items
created() {
    psql -X -At -c "SELECT count(*) || ' identifiers, ' ||
                           count(DISTINCT ii.dfid) || ' new items'
                    FROM item_identifiers ii JOIN items i USING (dfid)
                    WHERE i.owner_id = '$user_id' AND ii.key = 'lot'
                      AND ii.value LIKE '$1%'"
}

lua=$bench_var/items-post.lua
cat > "$lua" <<_EOL_
-- written by bench/items.sh: every request creates a new item
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
        '{"identifiers":[{"key":"lot","value":"w-$run-%d-%d"}],'
        .. '"source_entry":"$source_entry"}', tid, n))
end
_EOL_

# the identifiers exactly as the module renders them for PostgreSQL
script=$bench_var/items-create.sql
cat > "$script" <<_EOS_
\set r random(1, 1000000000000)
SELECT * FROM defarm_item_create(:owner, ('[{"namespace":"generic","key":"lot","value":"p-' || :client_id::int || '-' || :r::bigint || '","id_type":"Contextual","scope":"user"}]')::jsonb, '{}'::jsonb, '$source_entry'::uuid);
_EOS_

# in rounds too, each run from the same tables
for round in $(seq 1 "${ROUNDS:-3}"); do
    echo "== write round $round" >&2
    fresh_tables
    wrk_run post "http://127.0.0.1:$pa/api/items" -s "$lua"
    post_items=$(created "w-$run-")
    note_rss post
    fresh_tables
    pgbench_run pgbench_create -n -f "$script" -D owner="$user_id"
    pgbench_items=$(created "p-")
done

# 4. memory over 10^6 more requests: cached GETs on one nginx, uncached on
# the other, at once; the growth should be nothing
mem_requests() {
    local out
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$1s" -H "$auth" "$2")
    echo "$out" | awk '/requests in/ { print $1 }'
}
before=$(( $(bench_rss items-cache) + $(bench_rss items-nocache) ))
mem_total=0
while [ "$mem_total" -lt 1000000 ]; do
    echo "== memory: cached and uncached GETs at once, 10s" >&2
    mem_requests 10 "http://127.0.0.1:$pb/api/items/$dfid" \
        > "$bench_var/mem-uncached" &
    mem_cached=$(mem_requests 10 "http://127.0.0.1:$pa/api/items/$dfid")
    wait
    mem_total=$((mem_total + mem_cached + $(cat "$bench_var/mem-uncached")))
done
after=$(( $(bench_rss items-cache) + $(bench_rss items-nocache) ))
[ "$after" -le "$peak_rss" ] || peak_rss=$after

echo
printf '%-46s %12s  %s\n' \
    "measurement ($CONNECTIONS clients, ${DURATION}s, median)" \
    "per second" "errors"
row "nginx return 200 (same ${#body} bytes)" static
row "GET /api/items/:dfid, cache HIT" cached
row "pgbench -S -M prepared" pgbench_S
row "pgbench, the statement of a miss" pgbench_get
row "GET /api/items/:dfid, defarm_item_cache off" uncached
row "pgbench, defarm_item_create()" pgbench_create
row "POST /api/items" post
echo "  POST /api/items in the database (last round):  $post_items"
echo "  pgbench creates in the database (last round):  $pgbench_items"
echo
echo "RSS of both nginx (master and workers):"
for k in start cached uncached post; do
    printf '  after %-10s %s\n' "$k" "${rss[$k]}"
done
echo "  peak                  $peak_rss KiB"
echo "  over $mem_total more requests: $before -> $after KiB" \
     "($((after - before)) KiB)"
echo
ratio "ratio cached GET / return 200:" cached static "  (target >= 0.6)"
ratio "ratio uncached GET / pgbench -S:" uncached pgbench_S "  (target >= 0.6)"
ratio "ratio uncached GET / pgbench same SQL:" uncached pgbench_get ""
ratio "ratio POST / pgbench create:" post pgbench_create "  (target >= 0.5)"

bench_check_errors
