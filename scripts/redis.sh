#!/usr/bin/env bash
# A throwaway Redis on a free loopback port, for tests and "make run".
#
#   scripts/redis.sh start DIR   prints REDIS_PORT=... (the same port again
#                                after a stop: DIR/port remembers it)
#   scripts/redis.sh stop DIR
set -euo pipefail

cmd=$1
dir=$(realpath -m "$2")

# shellcheck source=lib/free_port.sh
. "$(dirname "$0")/lib/free_port.sh"

case "$cmd" in
start)
    mkdir -p "$dir"
    # a restart keeps its port, so clients can reconnect to it
    if [ -f "$dir/port" ]; then
        port=$(cat "$dir/port")
    else
        port=$(free_port)
        echo "$port" > "$dir/port"
    fi

    redis-server --bind 127.0.0.1 --port "$port" --daemonize yes \
        --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
        --save "" --appendonly no

    for _ in $(seq 1 50); do
        if redis-cli -p "$port" ping >/dev/null 2>&1; then
            echo "REDIS_PORT=$port"
            exit 0
        fi
        sleep 0.1
    done

    echo "redis did not start:" >&2
    tail -n 20 "$dir/redis.log" >&2
    exit 1
    ;;

stop)
    if [ -f "$dir/redis.pid" ]; then
        pid=$(cat "$dir/redis.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        rm -f "$dir/redis.pid"
    fi
    ;;

*)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
