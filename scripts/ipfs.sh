#!/usr/bin/env bash
# A throwaway IPFS node (js-ipfs, from the npm registry) whose HTTP RPC API
# the module's jobs call, on a free loopback port, for tests and "make run".
#
#   scripts/ipfs.sh install      npm packages into var/npm/ipfs, once per
#                                scripts/ipfs/package-lock.json
#   scripts/ipfs.sh start DIR    prints IPFS_API=http://127.0.0.1:... (the
#                                same port again after a stop: DIR/port
#                                remembers it)
#   scripts/ipfs.sh stop DIR
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
src=$top/scripts/ipfs
# under var/ but not var/test, which every test run wipes: the install
# (some 1100 packages, 300 MB) takes half a minute or more and is the same
# for every run
npm_dir=$top/var/npm/ipfs
jsipfs=$npm_dir/node_modules/.bin/jsipfs
# or every jsipfs run asks the npm registry, once a week, for a newer ipfs
export NO_UPDATE_NOTIFIER=1

# shellcheck source=lib/free_port.sh
. "$(dirname "$0")/lib/free_port.sh"

install() {
    local tool sum
    for tool in node npm; do
        if ! command -v "$tool" >/dev/null; then
            echo "ipfs.sh: '$tool' not found; run scripts/deps.sh (or" \
                 "'make deps'), which installs Debian's nodejs and npm" >&2
            exit 1
        fi
    done

    # what is installed is what these two files say, so their checksum
    # decides whether there is anything to do
    sum=$(cat "$src/package.json" "$src/package-lock.json" | sha256sum)
    sum=${sum%% *}
    if [ -x "$jsipfs" ] \
            && [ "$(cat "$npm_dir/.installed" 2>/dev/null)" = "$sum" ]; then
        return 0
    fi

    # one install at a time ("make test" and "make run" side by side); the
    # second finds the first's work done
    mkdir -p "$npm_dir"
    exec 9>"$npm_dir.lock"
    flock 9
    if [ -x "$jsipfs" ] \
            && [ "$(cat "$npm_dir/.installed" 2>/dev/null)" = "$sum" ]; then
        exec 9>&-
        return 0
    fi

    echo "installing js-ipfs into var/npm/ipfs (npm ci, a minute or so)"
    rm -f "$npm_dir/.installed"
    cp "$src/package.json" "$src/package-lock.json" "$npm_dir/"
    # --ignore-scripts: the packages' install scripts either download from
    # GitHub (wrtc's and electron's prebuilt binaries, for WebRTC, which the
    # node does not use) or are not needed (classic-level ships prebuilt
    # binaries that node-gyp-build finds at run time); npm 9 (Debian's)
    # would run them, npm 11 asks for each to be approved
    (cd "$npm_dir" && npm ci --ignore-scripts --no-audit --no-fund \
                             --loglevel=error)
    echo "$sum" > "$npm_dir/.installed"
    exec 9>&-
}

# running PID: PID is alive and is DIR's daemon, not another process that
# got the number of one that died.  Told by its environment: the daemon
# renames itself "ipfs" (process.title), its IPFS_PATH stays.
running() {
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null \
        && grep -qzx "IPFS_PATH=$dir/repo" "/proc/$1/environ" 2>/dev/null
}

stop() {
    local pid
    [ -f "$dir/ipfs.pid" ] || return 0
    pid=$(cat "$dir/ipfs.pid")
    if running "$pid"; then
        kill "$pid" 2>/dev/null || true
        # it closes its repository before it exits: a few seconds at most
        for _ in $(seq 1 100); do
            running "$pid" || break
            sleep 0.1
        done
        if running "$pid"; then
            echo "ipfs.sh: daemon $pid did not stop on TERM; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
            for _ in $(seq 1 20); do
                running "$pid" || break
                sleep 0.1
            done
        fi
    fi
    rm -f "$dir/ipfs.pid"
}

cmd=${1:-}
case "$cmd" in
install)
    install
    ;;

start)
    dir=$(realpath -m "$2")
    repo=$dir/repo
    mkdir -p "$dir"

    # a no-op once installed; its messages are not this command's output
    install >&2

    if [ -f "$dir/port" ]; then
        port=$(cat "$dir/port")
    else
        port=$(free_port)
        echo "$port" > "$dir/port"
    fi

    if [ -f "$dir/ipfs.pid" ] && running "$(cat "$dir/ipfs.pid")"; then
        echo "ipfs.sh: a daemon already runs in $dir" >&2
        exit 1
    fi
    # the daemon does not exit when it cannot listen (it prints the error
    # and stays up, API-less), so a taken port is better found here than
    # by the wait below running out
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "ipfs.sh: port $port ($dir/port) is taken by another process" >&2
        exit 1
    fi
    # a daemon that was killed leaves its repository lock (taken as stale
    # only after 20 s) and its API address file (which would send jsipfs
    # commands to a dead API)
    rm -rf "$repo/repo.lock" "$repo/api" "$dir/ipfs.pid"

    # this start's log only, so that a failure's tail is about it
    : > "$dir/ipfs.log"

    export IPFS_PATH=$repo
    if [ ! -f "$repo/config" ]; then
        "$jsipfs" init --empty-repo >> "$dir/ipfs.log" 2>&1 || {
            echo "ipfs init failed:" >&2
            tail -n 20 "$dir/ipfs.log" >&2
            exit 1
        }
    fi

    # The configuration, written on every start (one node run, where
    # "jsipfs config" would be one per key): the HTTP API on the loopback
    # port, and nothing else that listens or reaches out.  The daemon
    # starts libp2p even when --offline (that flag only keeps IPNS local),
    # so each of its ways out is closed here: no swarm listeners, no
    # bootstrap peers, no delegate routers (HTTPS to *.delegate.ipfs.io),
    # no mDNS, WebRTC-star, UPnP/NAT-PMP port mapping, DHT, pubsub or
    # relay; no gateway and no gRPC server.  Preloading (HTTPS to
    # *.preload.ipfs.io for every add) is an option of the daemon, below.
    # shellcheck disable=SC2016
    node -e '
        const fs = require("fs");
        const [file, port] = process.argv.slice(1);
        const c = JSON.parse(fs.readFileSync(file, "utf8"));
        c.Addresses = Object.assign(c.Addresses || {}, {
            API: `/ip4/127.0.0.1/tcp/${port}`,
            Gateway: [], Swarm: [], Announce: [], NoAnnounce: [],
            Delegates: []
        });
        delete c.Addresses.RPC;
        c.Bootstrap = [];
        c.Discovery = { MDNS: { Enabled: false, Interval: 10 },
                        webRTCStar: { Enabled: false } };
        c.Swarm = Object.assign(c.Swarm || {}, { DisableNatPortMap: true });
        c.Routing = { Type: "none" };
        c.Pubsub = Object.assign(c.Pubsub || {}, { Enabled: false });
        c.relay = { enabled: false, hop: { enabled: false, active: false } };
        fs.writeFileSync(file + ".tmp", JSON.stringify(c, null, 2) + "\n");
        fs.renameSync(file + ".tmp", file);
    ' "$repo/config" "$port"

    # its own session, like the Redis and PostgreSQL daemons: a Ctrl-C at
    # the terminal is for "make run", which then stops it; the pid written
    # by the shell that becomes the daemon, whether or not setsid forks
    # shellcheck disable=SC2016
    setsid bash -c 'echo $$ > "$0"; exec "$@"' "$dir/ipfs.pid" \
        "$jsipfs" daemon --offline --enable-preload=false \
        < /dev/null >> "$dir/ipfs.log" 2>&1 &

    # the first start of a new repository is the slowest: a few seconds
    deadline=$((SECONDS + 60))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if curl -sf -m 2 -X POST -o /dev/null \
                "http://127.0.0.1:$port/api/v0/version"; then
            echo "IPFS_API=http://127.0.0.1:$port"
            exit 0
        fi
        # a daemon that died will not answer however long this waits;
        # "running", not kill -0, which a zombie passes until something
        # reaps it
        if [ -s "$dir/ipfs.pid" ] && ! running "$(cat "$dir/ipfs.pid")"; then
            break
        fi
        sleep 0.1
    done

    echo "ipfs did not start:" >&2
    tail -n 20 "$dir/ipfs.log" >&2
    stop
    exit 1
    ;;

stop)
    dir=$(realpath -m "$2")
    stop
    ;;

*)
    echo "usage: $0 install | start DIR | stop DIR" >&2
    exit 2
    ;;
esac
