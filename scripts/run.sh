#!/usr/bin/env bash
# "make run": a throwaway PostgreSQL, Redis and IPFS node under var/, the
# migrations, then nginx in the foreground on conf/defarm.conf.  Ctrl-C
# stops it all.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
var=$top/var
cd "$top"

mkdir -p var/log var/tmp

# the token secret of this machine's runs: random, made once, never shared
if [ ! -s var/jwt.secret ]; then
    (umask 077; head -c 48 /dev/urandom | base64 -w0 > var/jwt.secret)
fi

# the key attestations are signed with (GET /api/proofs/key publishes
# its public half): Ed25519, made once, kept with the database
if [ ! -s var/attestation.pem ]; then
    (umask 077; openssl genpkey -algorithm ed25519 -out var/attestation.pem)
fi

stop_all() {
    trap - INT TERM EXIT
    if [ -n "${nginx_pid:-}" ]; then
        kill -QUIT "$nginx_pid" 2>/dev/null || true
        wait "$nginx_pid" 2>/dev/null || true
    fi
    scripts/ipfs.sh stop "$var/ipfs" || true
    scripts/redis.sh stop "$var/redis" || true
    scripts/pg.sh stop "$var/pg" || true
    echo "stopped"
}
trap stop_all INT TERM EXIT

pgenv=$(scripts/pg.sh start "$var/pg")
eval "$pgenv"
export PGHOST PGPORT PGUSER PGDATABASE
scripts/migrate.sh
echo "PostgreSQL on 127.0.0.1:$PGPORT (database $PGDATABASE)"

redisenv=$(scripts/redis.sh start "$var/redis")
eval "$redisenv"
echo "Redis on 127.0.0.1:$REDIS_PORT"

# its repository stays in var/ipfs from one run to the next, like the
# database, and so does its port
ipfsenv=$(scripts/ipfs.sh start "$var/ipfs")
eval "$ipfsenv"
echo "IPFS API on $IPFS_API"

port=${PORT:-8080}
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    for _ in $(seq 1 50); do
        port=$((20000 + RANDOM % 20000))
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
    done
fi

# conf/defarm.conf as it is, with the ports of this run
sed -e "s/127\.0\.0\.1:8080/127.0.0.1:$port/" \
    -e "s/port=5432/port=$PGPORT/" \
    -e "s/127\.0\.0\.1:6379/127.0.0.1:$REDIS_PORT/" \
    conf/defarm.conf > var/nginx.conf

nginx -p "$top/" -c var/nginx.conf -t -q
echo "serving http://127.0.0.1:$port  (logs in var/log, Ctrl-C stops)"

nginx -p "$top/" -c var/nginx.conf -g 'daemon off;' &
nginx_pid=$!
wait "$nginx_pid"
