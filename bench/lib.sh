# Shared by the benchmarks: a throwaway PostgreSQL, and an nginx with the
# module on a generated configuration.  Everything runs on loopback, is
# bounded in time (DURATION seconds per measurement) and stops by itself.

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bench_var=$top/var/bench
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-2}

# ports for the benchmarks' nginx: below the ephemeral range, where the
# clients' own connections (wrk leaves thousands) cannot hold them
. "$top/scripts/lib/free_port.sh"

# every run from a new database: one left by an earlier run keeps the
# migrations it was made with and the bloat of its runs
bench_pg_start() {
    mkdir -p "$bench_var"
    "$top/scripts/pg.sh" stop "$bench_var/pg" >/dev/null 2>&1 || true
    rm -rf "$bench_var/pg"
    local pgenv
    pgenv=$("$top/scripts/pg.sh" start "$bench_var/pg")
    eval "$pgenv"
    export PGHOST PGPORT PGUSER PGDATABASE
    "$top/scripts/migrate.sh" >/dev/null
}

bench_pg_stop() {
    "$top/scripts/pg.sh" stop "$bench_var/pg" || true
}

# bench_nginx_start PORT HTTP_CONFIG SERVER_CONFIG [NAME [MAIN_CONFIG]]
bench_nginx_start() {
    local port=$1 http=$2 server=$3 root=$bench_var/${4:-nginx} main=${5:-}
    mkdir -p "$root/logs" "$root/conf"
    cat > "$root/conf/nginx.conf" <<_EOC_
load_module $top/build/ngx_defarm_module.so;
worker_processes ${WORKERS:-auto};
$main
error_log $root/logs/error.log warn;
pid $root/logs/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $root/body;
    $http
    server {
        listen 127.0.0.1:$port backlog=4096;
        $server
    }
}
_EOC_
    nginx -p "$root/" -c "$root/conf/nginx.conf"
    for _ in $(seq 1 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nginx did not start" >&2
    tail -n 20 "$root/logs/error.log" >&2
    return 1
}

# bench_rss [NAME]: the resident memory of the whole nginx (the master and
# its workers), in KiB
bench_rss() {
    local root=$bench_var/${1:-nginx} master pid total=0 kb
    master=$(cat "$root/logs/nginx.pid")
    for pid in "$master" $(pgrep -P "$master"); do
        kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}

# bench_nginx_stop [NAME]
bench_nginx_stop() {
    local root=$bench_var/${1:-nginx}
    if [ -f "$root/logs/nginx.pid" ]; then
        kill -QUIT "$(cat "$root/logs/nginx.pid")" 2>/dev/null || true
        sleep 1
    fi
}

# wrk_rps URL [extra wrk args] -> prints requests/s; checks no errors
wrk_rps() {
    local url=$1 out
    shift
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" \
          "$url")
    echo "$out" >&2
    if echo "$out" | grep -q "Non-2xx or 3xx responses"; then
        echo "wrk saw error responses" >&2
    fi
    echo "$out" | awk '/^Requests\/sec:/ { print $2 }'
}

# measurements: rate[NAME] the median of the runs of NAME so far, bad[NAME]
# its errors (non-2xx and socket errors, or failed transactions)
declare -A rate bad runs

# the median of the runs so far of NAME, given the rate of one more
median_of() {
    local name=$1
    runs[$name]="${runs[$name]:-} $2"
    rate[$name]=$(echo ${runs[$name]} | tr ' ' '\n' | sort -g \
                  | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
}

# a run's errors, kept if an earlier run of the same name had some
note_bad() {
    case ${bad[$1]:-} in
        "" | "non-2xx 0, socket errors 0" | "failed 0") bad[$1]=$2 ;;
    esac
}

# wrk_run NAME URL [wrk args]: requests/s, non-2xx + socket errors
wrk_run() {
    local name=$1 url=$2 out non2xx sock r
    shift 2
    echo "== $name" >&2
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency \
          "$@" "$url")
    echo "$out" >&2
    non2xx=$(echo "$out" | awk '/^ *Non-2xx or 3xx responses:/ { print $5 }')
    sock=$(echo "$out" | awk '/^ *Socket errors:/ {
               gsub(",", ""); print $4 + $6 + $8 + $10 }')
    r=$(echo "$out" | awk '/^Requests\/sec:/ { print $2 }')
    [ -n "$r" ] || { echo "wrk did not run" >&2; exit 1; }
    median_of "$name" "$r"
    note_bad "$name" "non-2xx ${non2xx:-0}, socket errors ${sock:-0}"
}

# pgbench_run NAME [pgbench args]: transactions/s, failed transactions
pgbench_run() {
    local name=$1 out failed r
    shift
    echo "== $name" >&2
    out=$(pgbench -M prepared -c "$CONNECTIONS" -j "$THREADS" \
          -T "$DURATION" "$@" 2>&1) || true
    echo "$out" >&2
    failed=$(echo "$out" \
             | awk '/^number of failed transactions:/ { print $5 }')
    r=$(echo "$out" | awk '/^tps = / { print $3; exit }')
    [ -n "$r" ] || { echo "pgbench did not run" >&2; exit 1; }
    median_of "$name" "$r"
    note_bad "$name" "failed ${failed:-?}"
}

# row LABEL NAME: one measurement's line; ratio LABEL A B [TARGET]
row() { printf '%-46s %12.0f  %s\n' "$1" "${rate[$2]}" "${bad[$2]}"; }

ratio() {
    awk -v a="${rate[$2]}" -v b="${rate[$3]}" -v l="$1" -v t="$4" \
        'BEGIN { printf "%-38s %.2f%s\n", l, a / b, t }'
}

# pair_median "r1 r2 ...": the median of ratios measured back to back,
# two decimals (this machine drifts more between runs than some costs)
pair_median() {
    echo $1 | tr ' ' '\n' | sort -g \
        | awk '{ v[NR] = $1 } END { printf "%.2f", v[int((NR + 1) / 2)] }'
}

# fails the benchmark if any measurement had errors
bench_check_errors() {
    local k
    for k in "${!bad[@]}"; do
        case ${bad[$k]} in
            "non-2xx 0, socket errors 0" | "failed 0") ;;
            *) echo "errors in $k: ${bad[$k]}" >&2; exit 1 ;;
        esac
    done
}

# json_field KEY... < JSON: the value at that path of a JSON object, or ""
json_field() {
    perl -MJSON::PP -e 'local $/; my $j = JSON::PP->new->decode(<STDIN>);
                        my $v = $j; $v = $v->{$_} for @ARGV; print $v // ""' "$@"
}

# Pushes, for the benchmarks of what a push causes (webhooks, uploads).
# bench_user PORT NAME: a registered user, in $token and $user_id
bench_user() {
    local res
    res=$(curl -fsS -H 'Content-Type: application/json' \
          -d "{\"username\":\"$2\",\"password\":\"Str0ng!pass\",
               \"email\":\"$2@example.com\"}" \
          "http://127.0.0.1:$1/api/auth/register")
    token=$(json_field token <<<"$res")
    user_id=$(json_field user_id <<<"$res")
}

# bench_api CURL-ARGS...: a JSON request as that user
bench_api() {
    curl -fsS -H 'Content-Type: application/json' \
         -H "Authorization: Bearer $token" "$@"
}

# bench_items PREFIX: PUSH_ITEMS items of the user per wrk thread, made in
# SQL, named PREFIX-<thread>-<n>
bench_items() {
    psql -X -q -v ON_ERROR_STOP=1 -c "INSERT INTO items (dfid, owner_id)
        SELECT '$1-' || t || '-' || g, '$user_id'
        FROM generate_series(1, $THREADS) t,
             generate_series(1, ${PUSH_ITEMS:-20000}) g"
}

# bench_push_lua PREFIX CIRCUIT [LUA]: a wrk script pushing those items
# into the circuit, each once (LUA: more of the script, e.g. a delay)
bench_push_lua() {
    local lua=$bench_var/push-$1.lua
    cat > "$lua" <<_EOL_
local threads = 0
function setup(thread)
    threads = threads + 1
    thread:set("tid", threads)
end
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer $token"
local n = 0
function request()
    n = n + 1
    return wrk.format(nil, string.format("/api/circuits/$2/push/$1-%d-%d",
                                         tid, n))
end
${3:-}
_EOL_
    echo "$lua"
}

# bench_jobs_drain: waits (up to 5 minutes) until no job is left to run
bench_jobs_drain() {
    local _
    for _ in $(seq 1 600); do
        [ "$(psql -X -At -c "SELECT count(*) FROM jobs
                             WHERE state IN ('Pending', 'Running')")" = 0 ] \
            && return 0
        sleep 0.5
    done
    echo "jobs still queued after 5 minutes" >&2
}

# bench_runner_start PORT HTTP_CONFIG [NAME]: an nginx that runs the jobs
# (defarm_jobs, concurrency JOBS_CONCURRENCY=64) and serves nothing;
# prints PostgreSQL's clock as it starts, for rates measured from then
bench_runner_start() {
    psql -X -At -c "SELECT clock_timestamp()"
    bench_nginx_start "$1" "$2
        defarm_jobs interval=1s lease=60s
                    concurrency=${JOBS_CONCURRENCY:-64};" \
        "location / { return 404; }" "${3:-runner}" >&2
}

# bench_pair ROUND URL A LUA_A B LUA_B: A and B back to back, A first in
# odd rounds and B first in even ones (what runs second meets bigger
# tables and the first's vacuum); B's rate / A's is added to pairs[push]
bench_pair() {
    local round=$1 url=$2 a=$3 la=$4 b=$5 lb=$6 ra rb
    if [ $((round % 2)) = 1 ]; then
        wrk_run "$a" "$url" -s "$la"
        wrk_run "$b" "$url" -s "$lb"
    else
        wrk_run "$b" "$url" -s "$lb"
        wrk_run "$a" "$url" -s "$la"
    fi
    ra=$(echo "${runs[$a]}" | awk '{ print $NF }')
    rb=$(echo "${runs[$b]}" | awk '{ print $NF }')
    pairs[push]="${pairs[push]:-} $(awk -v a="$rb" -v b="$ra" 'BEGIN { print a / b }')"
}
