#!/usr/bin/env bash
# "make fuzz": libFuzzer harnesses (fuzz/fuzz_*.c) built with clang against
# the module's own sources and nginx's (the tree "make asan" unpacks), with
# AddressSanitizer and UBSan.  Each harness first replays its committed
# regressions (fuzz/regressions/<harness>/), then fuzzes for FUZZ_SECONDS
# from its seed corpus (fuzz/corpus/<harness>/).  What it finds new goes to
# build/fuzz/corpus/<harness>/, crashes to build/fuzz/crashes/; any crash or
# sanitizer report fails the run.
#
#   bash scripts/fuzz.sh [harness...]     build and run (default: all)
#   bash scripts/fuzz.sh build            only build
#
#   FUZZ_SECONDS   seconds of fuzzing per harness (30)
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
ngx=$top/build/asan/nginx
out=$top/build/fuzz
seconds=${FUZZ_SECONDS:-30}
cd "$top"

CC=${FUZZ_CC:-clang-14}

harnesses=(json router items jwt apikey ws)

# nginx's headers and ngx_auto_config.h from the tree make asan unpacks
[ -f "$ngx/objs/ngx_auto_config.h" ] || bash scripts/asan.sh build
bash scripts/gen_version.sh "$top/build/gen/ngx_defarm_version.h"

incs=(-I"$top/fuzz" -I"$out" -I"$top/src" -I"$top/build/gen"
      -I/usr/include/postgresql
      -I"$ngx/objs" -I"$ngx/src/core" -I"$ngx/src/event"
      -I"$ngx/src/event/modules" -I"$ngx/src/os/unix" -I"$ngx/src/http"
      -I"$ngx/src/http/modules" -I"$ngx/src/http/v2")

# UBSan's reports are errors (a crash libFuzzer records); alignment is
# nginx's own business (it reads unaligned on x86 on purpose)
cflags=(-g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
        -fno-sanitize=alignment -fno-sanitize-recover=all -Wno-everything)

# what every harness links: nginx's pool, string, array, time and inet
# code, the shim (log, request) and weak stubs for what is never reached
core=(core/ngx_palloc.c core/ngx_string.c core/ngx_array.c core/ngx_list.c
      core/ngx_hash.c core/ngx_inet.c core/ngx_times.c core/ngx_parse.c
      core/ngx_crc32.c core/ngx_buf.c os/unix/ngx_alloc.c os/unix/ngx_time.c)
common=(fuzz/shim.c fuzz/stubs.c src/ngx_defarm_json.c
        src/ngx_defarm_response.c src/ws/ngx_defarm_ws_frame.c)

declare -A units=(
    [json]=""
    [router]="src/ngx_defarm_router.c src/api/ngx_defarm_api_fn.c"
    [items]="src/items/ngx_defarm_dfid.c src/items/ngx_defarm_identifier.c"
    [jwt]="src/auth/ngx_defarm_jwt.c"
    [apikey]=""
    [ws]=""
)

libs=(-lyajl -ljwt -lssl -lcrypto -lcrypt -lpq -lhiredis -lcurl -lz -lpcre2-8)

# the module's route patterns and methods, from its route tables, for the
# router's harness (flags spread over them so that every branch is taken)
routes() {
    find src -name '*.c' | sort | xargs cat | perl -0777 -ne '
        while (/\{\s*(NGX_HTTP_[A-Z_|\s]+?),\s*(ngx_string\("\/[^"]*"\))/g) {
            my ($m, $p) = ($1, $2);
            $m =~ s/\s+//g;
            $n++;
            $f = $n % 7 == 0 ? "NGX_DEFARM_ROUTE_HEALTH"
               : $n % 11 == 0 ? "NGX_DEFARM_ROUTE_ECHO"
               : $n % 13 == 0
                 ? "NGX_DEFARM_ROUTE_METRICS|NGX_DEFARM_ROUTE_HEALTH"
               : "0";
            print "    { $m, $p, ngx_defarm_fuzz_handler, $f },\n";
        }' > "$out/fuzz_routes.h.$$"
    mv "$out/fuzz_routes.h.$$" "$out/fuzz_routes.h"
}

build() {
    local h=$1 objs=() src obj

    mkdir -p "$out/obj"

    # nginx's core once for all harnesses
    for src in "${core[@]}"; do
        obj=$out/obj/ngx_$(basename "$src" .c).o
        if [ ! -f "$obj" ] || [ "$ngx/src/$src" -nt "$obj" ]; then
            $CC "${cflags[@]}" "${incs[@]}" -c "$ngx/src/$src" -o "$obj"
        fi
        objs+=("$obj")
    done

    $CC "${cflags[@]}" "${incs[@]}" -o "$out/fuzz_$h" "fuzz/fuzz_$h.c" \
        "${common[@]}" ${units[$h]} "${objs[@]}" "${libs[@]}"
}

run() {
    local h=$1 corpus=$out/corpus/$1 reg=$top/fuzz/regressions/$1 rc=0
    local log=$out/log/$1.log

    mkdir -p "$corpus" "$out/crashes/$h" "$out/log"

    # every crash ever found, replayed first: a fixed bug stays fixed
    if compgen -G "$reg/*" > /dev/null; then
        echo "fuzz $h: replaying $(ls "$reg" | wc -l) regression(s)"
        "$out/fuzz_$h" -runs=1 "$reg"/* > "$log.replay" 2>&1 || {
            tail -n 40 "$log.replay"
            echo "fuzz $h: a regression input fails"
            return 1
        }
    fi

    "$out/fuzz_$h" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -max_len=8192 -print_final_stats=1 \
        -artifact_prefix="$out/crashes/$h/" \
        "$corpus" "$top/fuzz/corpus/$h" > "$log" 2>&1 || rc=$?

    # the last status line: "#N DONE cov: C ft: F corp: ... exec/s: E"
    local stats execs cov
    stats=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(echo "$stats" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
    echo "fuzz $h: ${seconds}s, ${execs:-?} runs," \
         "$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log") exec/s," \
         "cov ${cov:-?}, corpus $(ls "$corpus" | wc -l) new"

    if [ $rc -ne 0 ]; then
        grep -E 'ERROR|runtime error|assertion|SUMMARY|Test unit written' \
            "$log" | head -n 20
        echo "fuzz $h: FAILED (log: $log)"
        return 1
    fi
}

mkdir -p "$out"
routes

if [ "${1:-}" = build ]; then
    for h in "${harnesses[@]}"; do build "$h"; done
    exit 0
fi

[ $# -gt 0 ] && harnesses=("$@")

for h in "${harnesses[@]}"; do build "$h"; done

failed=0
for h in "${harnesses[@]}"; do
    run "$h" || failed=1
done

if [ $failed -ne 0 ]; then
    echo "fuzz: FAILED"
    exit 1
fi

echo "fuzz: no crash, no sanitizer report"
