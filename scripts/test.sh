#!/usr/bin/env bash
# "make test": the lock-safety guardrail, then the whole t/ suite against a
# throwaway PostgreSQL, Redis and IPFS node, stopped again whatever the
# outcome.
#
#   TEST_FILES="t/001-service.t"   run only some files
#   TEST_NGINX_USE_VALGRIND=1      run nginx under valgrind memcheck
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
var=$top/var/test
cd "$top"

scripts/pg.sh stop "$var/pg" 2>/dev/null || true
scripts/pg.sh stop "$var/pg-tls" 2>/dev/null || true     # t/013-db-tls.t's
scripts/redis.sh stop "$var/redis" 2>/dev/null || true
scripts/ipfs.sh stop "$var/ipfs" 2>/dev/null || true
rm -rf "$var"
mkdir -p "$var"

stop_all() {
    scripts/ipfs.sh stop "$var/ipfs" || true
    scripts/redis.sh stop "$var/redis" || true
    scripts/pg.sh stop "$var/pg" || true
    scripts/pg.sh stop "$var/pg-tls" || true
}
trap stop_all EXIT

scripts/check_style.sh

if [ -x scripts/check_lock_safety.sh ]; then
    scripts/check_lock_safety.sh
fi

pgenv=$(scripts/pg.sh start "$var/pg")
eval "$pgenv"
export PGHOST PGPORT PGUSER PGDATABASE
scripts/migrate.sh >/dev/null

redisenv=$(scripts/redis.sh start "$var/redis")
eval "$redisenv"

# a new repository every run (var/ is wiped above); the npm packages it
# runs from stay in var/npm (installed by "make deps", or by this start)
ipfsenv=$(scripts/ipfs.sh start "$var/ipfs")
eval "$ipfsenv"

# the attestation key of this run (defarm_attestation_key): Ed25519, made
# with the openssl CLI as an operator would, thrown away with var/test
openssl genpkey -algorithm ed25519 -out "$var/attestation.pem" 2>/dev/null
export TEST_NGINX_ATTESTATION_KEY=$var/attestation.pem

export TEST_NGINX_PG_HOST=$PGHOST TEST_NGINX_PG_PORT=$PGPORT
export TEST_NGINX_PG_USER=$PGUSER TEST_NGINX_PG_DATABASE=$PGDATABASE
export TEST_NGINX_PG_DATA=$var/pg
export TEST_NGINX_REDIS_PORT=$REDIS_PORT
export TEST_NGINX_IPFS_API=$IPFS_API
export TEST_NGINX_LOAD_MODULES=${TEST_NGINX_MODULE_SO:-$top/build/ngx_defarm_module.so}
export TEST_NGINX_SERVROOT=${TEST_NGINX_SERVROOT:-$top/t/servroot}
export TEST_NGINX_GIT_HASH=$(sed -n 's/.*NGX_DEFARM_GIT_HASH *"\(.*\)"/\1/p' \
    build/gen/ngx_defarm_version.h)

# shellcheck disable=SC2086
prove ${PROVE_ARGS:-} -I "$top/t/lib" -r ${TEST_FILES:-t/}
