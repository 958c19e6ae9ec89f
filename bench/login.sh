#!/usr/bin/env bash
# Logins at bcrypt's bound.
#
# One nginx (WORKERS workers) with bcrypt at cost COST (12, as production)
# in thread pools of one thread per core in all (each worker has its own
# pool, of cores / WORKERS threads): scripts/load_test_login.sh at
# 10 and at 100 connections.  The bound is the cores divided by the time
# of one hash (measured by the server in the same run): what the machine
# can do if nothing but bcrypt costs.  Printed: logins/s against the bound,
# the 503 crypt_busy answers (the queue full: the designed refusal) apart
# from any other error, and /health's p99 while it runs.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

COST=${COST:-12}
LOGIN_SECONDS=${LOGIN_SECONDS:-30}
cores=$(nproc)
workers=${WORKERS:-$cores}
# a pool per worker: one hashing thread per core in all
threads=$(( cores / workers > 0 ? cores / workers : 1 ))

trap 'bench_nginx_stop login; bench_pg_stop' EXIT

bench_pg_start
mkdir -p "$bench_var"
head -c 36 /dev/urandom | base64 | tr -d '\n' > "$bench_var/login-jwt.secret"

port=$(free_port)
# the thread pool is a main-context directive: it goes before http{}
root=$bench_var/login
mkdir -p "$root"
bench_nginx_start "$port" \
    "defarm_db \"host=$PGHOST port=$PGPORT dbname=$PGDATABASE
                 user=$PGUSER sslmode=disable\" size=8;
     defarm_cache zone=bench_login:16m ttl=1h;
     defarm_crypt_pool defarm_crypt;
     defarm_bcrypt_cost $COST;
     defarm_jwt_secret file=$bench_var/login-jwt.secret;" \
    "location / { defarm_api on; }" login \
    "thread_pool defarm_crypt threads=$threads max_queue=64;"

declare -A res

for c in 10 100; do
    echo "== login, $c connections" >&2
    out=$(CONCURRENT_REQUESTS=$c DURATION_SECONDS=$LOGIN_SECONDS \
          USERS=20 CRYPT_THREADS=$cores BASE_URL="http://127.0.0.1:$port" \
          bash "$top/scripts/load_test_login.sh")
    echo "$out" | grep -v '^RESULT' >&2
    for k in rps bound ratio busy other socket health_p99; do
        res[$c,$k]=$(echo "$out" | awk -v k="$k" '$1 == "RESULT" && $2 == k { print $3 }')
    done
done

echo
printf '%-12s %10s %10s %7s %10s %8s %12s\n' connections logins/s bound ratio \
    crypt_busy "other" "health p99"
for c in 10 100; do
    printf '%-12s %10s %10s %7s %10s %8s %10s ms\n' "$c" "${res[$c,rps]}" \
        "${res[$c,bound]}" "${res[$c,ratio]}" "${res[$c,busy]}" \
        "$(( ${res[$c,other]} + ${res[$c,socket]} ))" "${res[$c,health_p99]}"
done
echo "ratio login / bcrypt bound (10 connections):  ${res[10,ratio]}  (target >= 0.95)"
echo "ratio login / bcrypt bound (100 connections): ${res[100,ratio]}  (target >= 0.95)"

for c in 10 100; do
    if [ "$(( ${res[$c,other]} + ${res[$c,socket]} ))" -ne 0 ]; then
        echo "errors other than crypt_busy at $c connections" >&2
        exit 1
    fi
done
if [ "${res[10,busy]}" -ne 0 ]; then
    echo "crypt_busy at 10 connections" >&2
    exit 1
fi
