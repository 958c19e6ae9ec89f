#!/usr/bin/env bash
# The WebSocket notification channel (GET /api/notifications/ws): one
# nginx with one worker (WORKERS=1), USERS=1000 users each with one socket
# on it (bench/ws_client.pl, through t/lib/DefarmWs.pm), then
#   a. fan-out: ROUNDS=20 transactions, each notifying all the users:
#      notifications delivered a second, and making to receiving p50/p99;
#   b. a steady RATE=200 notifications a second for DURATION seconds, each
#      to one user in its own transaction: making to receiving p50/p99;
# and the worker's RSS before the sockets, with them, and after.  The
# client is Perl on the same two cores: the fan-out rate is a floor of the
# node's (on an idle machine 20,000 deliveries took about 1.8 s, the
# commits 0.4 s of it).
# Loopback only; every wait is bounded (WAIT=120 s); fails if a
# notification is neither received nor counted as missed, or a socket
# closed or broke the protocol.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

export USERS=${USERS:-1000} ROUNDS=${ROUNDS:-20} RATE=${RATE:-200}
export DURATION WAIT=${WAIT:-120}
WORKERS=${WORKERS:-1}

# a socket a user, the client's and the worker's
ulimit -n $((USERS * 2 + 8192)) 2>/dev/null || true

trap 'bench_nginx_stop ws; bench_pg_stop' EXIT

bench_pg_start
mkdir -p "$bench_var"
head -c 36 /dev/urandom | base64 | tr -d '\n' > "$bench_var/ws-jwt.secret"
port=$(free_port)

WORKERS=$WORKERS bench_nginx_start "$port" \
    "defarm_db \"host=$PGHOST port=$PGPORT dbname=$PGDATABASE
                 user=$PGUSER sslmode=disable\" size=${POOL_SIZE:-8};
     defarm_bcrypt_cost 4;
     defarm_jwt_secret file=$bench_var/ws-jwt.secret;" \
    "location / { defarm_api on; }" ws \
    "worker_rlimit_nofile $((USERS * 2 + 8192));"

echo "== $USERS sockets, fan-out $ROUNDS rounds, steady $RATE/s" \
     "for ${DURATION}s (workers: $WORKERS)"
perl "$top/bench/ws_client.pl" "$port" "$(cat "$bench_var/ws/logs/nginx.pid")"
