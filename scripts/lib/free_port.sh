# free_port: print a loopback TCP port nothing listens on, below the
# kernel's ephemeral range, so that no client connection (a test's
# thousands of them) can hold it when the server binds it.  Sourced by
# scripts/pg.sh and scripts/redis.sh.

free_port() {
    local low port
    low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null \
          || echo 32768)
    [ "$low" -gt 12000 ] || low=32768
    for _ in $(seq 1 50); do
        port=$((10000 + RANDOM % (low - 10000)))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    echo "no free port found" >&2
    return 1
}
