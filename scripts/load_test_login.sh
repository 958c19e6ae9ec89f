#!/usr/bin/env bash
# The original's login load test, rebuilt on wrk.
#
#   CONCURRENT_REQUESTS=10 DURATION_SECONDS=60 BASE_URL=http://127.0.0.1:8080 \
#       scripts/load_test_login.sh
#
# Registers USERS users, then logs in as random ones from
# CONCURRENT_REQUESTS connections for DURATION_SECONDS, and prints total
# requests, success and error rates by status, throughput, latency
# percentiles, and the bcrypt bound: the crypt threads divided by the time
# of one hash, as the server itself measured it (Server-Timing) in this run.
# Of the errors, the 503 crypt_busy answers (the crypt queue full: the
# designed refusal) are counted apart.  While it runs, /health is probed
# ten times a second: its p99 and worst latency show whether a worker was
# ever blocked.  The last lines are "RESULT name value", for scripts.
set -euo pipefail

base=${BASE_URL:-http://127.0.0.1:8080}
conns=${CONCURRENT_REQUESTS:-10}
secs=${DURATION_SECONDS:-60}
users=${USERS:-50}
threads=${CRYPT_THREADS:-$(nproc)}
pass='Load!Test1'
tag="load_$(date +%s)_$$"
work=$(mktemp -d)
trap 'rm -rf "$work"; kill $prober 2>/dev/null || true' EXIT
prober=

json='Content-Type: application/json'

echo "registering $users users..."
for i in $(seq 1 "$users"); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "$json" \
           -d "{\"username\":\"${tag}_$i\",\"password\":\"$pass\",\"email\":\"${tag}_$i@example.com\"}" \
           "$base/api/auth/register")
    [ "$code" = 200 ] || { echo "register failed: $code" >&2; exit 1; }
done

# one hash, timed by the server: the crypt span of a single login, the
# median of five taken one after the other on an idle server
for _ in 1 2 3 4 5; do
    curl -s -D - -o /dev/null -H "$json" \
         -d "{\"username\":\"${tag}_1\",\"password\":\"$pass\"}" \
         "$base/api/auth/login" \
        | tr -d '\r' | sed -n 's/.*crypt;dur=\([0-9.]*\).*/\1/p'
done > "$work/crypt"
crypt_ms=$(sort -n "$work/crypt" | sed -n 3p)
[ -n "$crypt_ms" ] || { echo "no crypt timing from the server" >&2; exit 1; }

cat > "$work/login.lua" <<_EOL_
math.randomseed(os.time())
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
    local u = math.random(1, $users)
    return wrk.format(nil, "/api/auth/login",
        nil, '{"username":"${tag}_' .. u .. '","password":"$pass"}')
end
-- per thread: busy (503 crypt_busy) and other non-2xx, summed in done()
local threads = {}
setup = function(thread)
    table.insert(threads, thread)
end
busy = 0
other = 0
response = function(status, headers, body)
    if status == 503 and string.find(body, "crypt_busy", 1, true) then
        busy = busy + 1
    elseif status < 200 or status > 299 then
        other = other + 1
    end
end
done = function(summary, latency, requests)
    local b, o = 0, 0
    for _, t in ipairs(threads) do
        b = b + t:get("busy")
        o = o + t:get("other")
    end
    io.write(string.format("RESULT busy %d\\nRESULT other %d\\n", b, o))
    io.write(string.format("RESULT total %d\\n", summary.requests))
    io.write(string.format("RESULT errors_socket %d\\n",
        summary.errors.connect + summary.errors.read + summary.errors.write
        + summary.errors.timeout))
    for _, p in ipairs({50, 95, 99}) do
        io.write(string.format("RESULT p%d %.1f\\n", p,
                               latency:percentile(p) / 1000))
    end
    io.write(string.format("RESULT min %.1f\\nRESULT avg %.1f\\nRESULT max %.1f\\n",
        latency.min / 1000, latency.mean / 1000, latency.max / 1000))
    io.write(string.format("RESULT secs %.3f\\n", summary.duration / 1e6))
end
_EOL_

# /health ten times a second during the run: the worker must stay
# responsive.  One curl on one kept-alive connection (--rate), so that the
# probe itself costs next to nothing.
for _ in $(seq 1 $((secs * 10))); do
    printf 'url = "%s"\noutput = "/dev/null"\n' "$base/health"
done > "$work/probes"
curl -s -m 5 --rate 10/s -w '%{time_total}\n' -K "$work/probes" \
    > "$work/health" &
prober=$!

echo "logging in from $conns connections for ${secs}s..."
wrk -t"$(( conns < 4 ? conns : 4 ))" -c"$conns" -d"${secs}s" --timeout 30s \
    -s "$work/login.lua" "$base" > "$work/wrk.out" 2>&1 || true
wait $prober 2>/dev/null || true

# wrk's Lua state is per thread: statuses are counted from its summary
r() { awk -v k="$1" '$1 == "RESULT" && $2 == k { print $3 }' "$work/wrk.out"; }
total=$(r total)
non2xx=$(awk '/Non-2xx/ { print $5 }' "$work/wrk.out")
non2xx=${non2xx:-0}
sock=$(r errors_socket)
ok=$((total - non2xx))
# throughput: successful logins (a 503 is not a login)
rps=$(awk -v t="$ok" -v s="$(r secs)" 'BEGIN { printf "%.2f", t / s }')
bound=$(awk -v n="$threads" -v ms="$crypt_ms" 'BEGIN { printf "%.1f", n * 1000 / ms }')
health_max=$(sort -n "$work/health" | tail -n 1 | awk '{ printf "%.2f", $1 * 1000 }')
health_p99=$(sort -n "$work/health" \
             | awk '{ v[NR] = $1 } END { i = int(NR * 0.99); if (i < 1) i = 1;
                                          printf "%.2f", v[i] * 1000 }')
ratio=$(awk -v a="$rps" -v b="$bound" 'BEGIN { printf "%.2f", a / b }')

echo
echo "login load test: $conns connections, ${secs}s, $users users"
printf '  %-28s %s\n' "total requests" "$total"
printf '  %-28s %s (%.2f%%)\n' "successful (2xx)" "$ok" \
    "$(awk -v a="$ok" -v t="$total" 'BEGIN { print 100 * a / t }')"
printf '  %-28s %s non-2xx (%s of them 503 crypt_busy), %s socket errors\n' \
    "errors" "$non2xx" "$(r busy)" "$sock"
printf '  %-28s %s logins/s\n' "throughput (2xx)" "$rps"
printf '  %-28s min %s / avg %s / p50 %s / p95 %s / p99 %s / max %s ms\n' \
    "latency" "$(r min)" "$(r avg)" "$(r p50)" "$(r p95)" "$(r p99)" "$(r max)"
printf '  %-28s %s ms (server-measured, this run)\n' "one bcrypt hash" "$crypt_ms"
printf '  %-28s %s logins/s (%s threads / one hash)\n' "bcrypt bound" "$bound" \
    "$threads"
printf '  %-28s %s\n' "throughput / bound" "$ratio"
printf '  %-28s p99 %s ms, worst %s ms (%s probes)\n' \
    "/health during the run" "$health_p99" "$health_max" \
    "$(wc -l < "$work/health")"
for k in rps:$rps bound:$bound ratio:$ratio busy:$(r busy) \
         other:$(r other) socket:$sock health_p99:$health_p99; do
    echo "RESULT ${k%%:*} ${k#*:}"
done
