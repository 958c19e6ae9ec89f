#!/usr/bin/env bash
# Make a registered user an administrator: the first admin of a fresh
# install, which no route can make.
#
#   scripts/make_admin.sh USERNAME          # make run's database (var/pg)
#   PGHOST=... PGPORT=... PGUSER=... PGDATABASE=... scripts/make_admin.sh U
#
# Register the user first (POST /api/auth/register).  The change reaches
# a running server within defarm_user_status_ttl (admin routes read it
# from PostgreSQL on every request at once).
set -euo pipefail

user=${1:?usage: $0 USERNAME}
top=$(cd "$(dirname "$0")/.." && pwd)

if [ -z "${PGHOST:-}" ] && [ -z "${DATABASE_URL:-}" ] \
   && [ -f "$top/var/pg/port" ]; then
    export PGHOST=127.0.0.1 PGPORT=$(cat "$top/var/pg/port") PGUSER=postgres \
           PGDATABASE=defarm
fi

n=$(psql -X -qAt -v ON_ERROR_STOP=1 ${DATABASE_URL:+"$DATABASE_URL"} \
        -v name="$user" <<'_EOS_'
WITH u AS (UPDATE users SET is_admin = true, status = 'Active'
           WHERE username = :'name' RETURNING id)
SELECT count(*) FROM u;
_EOS_
)

if [ "$n" != 1 ]; then
    echo "no user named '$user': register it first" >&2
    exit 1
fi

echo "$user is an administrator"
