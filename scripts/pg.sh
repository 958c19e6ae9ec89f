#!/usr/bin/env bash
# A throwaway PostgreSQL for tests and "make run".
#
#   scripts/pg.sh start DIR   initdb (once) and start on a free loopback port;
#                             prints shell assignments: PGHOST PGPORT ...
#   scripts/pg.sh start DIR --ssl
#                             the same, with TLS on (a self-signed certificate
#                             made at initdb; it stays on across restarts)
#   scripts/pg.sh stop DIR    stop it
#
# PostgreSQL refuses to run as root, so as root it runs as "postgres".
set -euo pipefail

cmd=$1
dir=$(realpath -m "$2")
ssl=${3:-}
bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)

as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# shellcheck source=lib/free_port.sh
. "$(dirname "$0")/lib/free_port.sh"

case "$cmd" in
start)
    mkdir -p "$dir"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres:postgres "$dir"
        # the postgres user must be able to reach the folder
        d=$dir
        while [ "$d" != / ]; do chmod o+x "$d" 2>/dev/null || true; d=$(dirname "$d"); done
    fi

    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_pg "$bindir/initdb" -D "$dir/data" -U postgres -A trust \
            -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
            || { cat "$dir/initdb.log" >&2; exit 1; }
    fi

    # The key must belong to the server's user and be 0600, so the pair is
    # made in the data folder rather than taken from /etc/ssl.
    if [ "$ssl" = --ssl ] && [ ! -f "$dir/data/server.key" ]; then
        openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj /CN=localhost \
            -keyout "$dir/data/server.key" -out "$dir/data/server.crt" \
            >"$dir/openssl.log" 2>&1 \
            || { cat "$dir/openssl.log" >&2; exit 1; }
        chmod 0600 "$dir/data/server.key"
        if [ "$(id -u)" -eq 0 ]; then
            chown postgres:postgres "$dir/data/server.key" \
                "$dir/data/server.crt"
        fi
        echo "ssl = on" >> "$dir/data/postgresql.conf"
    fi

    # a restart (tests stop and start the database) keeps its port
    if [ -f "$dir/port" ]; then
        port=$(cat "$dir/port")
    else
        port=$(free_port)
        echo "$port" > "$dir/port"
    fi
    as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 30 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off \
            -c synchronous_commit=off -c full_page_writes=off \
            -c max_connections=200" \
        start >/dev/null \
        || { tail -n 20 "$dir/postgres.log" >&2; exit 1; }

    as_pg "$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -qAt \
        -c "SELECT 1 FROM pg_database WHERE datname = 'defarm'" \
        | grep -q 1 \
        || as_pg "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres defarm

    echo "PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=defarm"
    ;;

stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_pg "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null \
            || true
    fi
    ;;

*)
    echo "usage: $0 start DIR [--ssl] | stop DIR" >&2
    exit 2
    ;;
esac
