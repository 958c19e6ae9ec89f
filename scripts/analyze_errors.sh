#!/usr/bin/env bash
# Breaks down the API's errors from an nginx error log: by error_kind, by
# endpoint, by status, and the first samples of each kind.  It reads the
# one-line key=value records the module writes ("defarm_error ...").
#
#   scripts/analyze_errors.sh [LOG]     default: var/log/error.log
#   SAMPLES=3 scripts/analyze_errors.sh  samples per kind
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
log=${1:-$top/var/log/error.log}
samples=${SAMPLES:-3}

if [ ! -r "$log" ]; then
    echo "cannot read $log" >&2
    exit 1
fi

awk -v samples="$samples" '
/ defarm_error / {
    kind = ""; endpoint = ""; status = ""; method = ""; trace = ""
    for (i = 1; i <= NF; i++) {
        if ($i ~ /^error_kind=/) kind = substr($i, 12)
        else if ($i ~ /^endpoint=/) endpoint = substr($i, 10)
        else if ($i ~ /^status=/) status = substr($i, 8)
        else if ($i ~ /^method=/) method = substr($i, 8)
        else if ($i ~ /^trace_id=/) trace = substr($i, 10)
    }
    if (kind == "") next

    msg = $0
    sub(/.* message="/, "", msg)
    sub(/", client: .*/, "", msg)

    total++
    by_kind[kind]++
    by_endpoint[method " " endpoint]++
    by_status[status]++
    if (status >= 500) server++

    if (n_samples[kind] < samples) {
        n_samples[kind]++
        sample[kind, n_samples[kind]] = substr($1 " " $2, 1, 19) \
            " " status " " method " " endpoint " trace_id=" trace \
            " \"" msg "\""
    }
}

function table(title, arr,    k, n, i, j, keys, tmp) {
    printf "\n%s\n", title
    n = 0
    for (k in arr) keys[++n] = k
    # sort by count, descending (insertion sort: the tables are small)
    for (i = 2; i <= n; i++) {
        tmp = keys[i]
        for (j = i - 1; j > 0 && arr[keys[j]] < arr[tmp]; j--) {
            keys[j + 1] = keys[j]
        }
        keys[j + 1] = tmp
    }
    for (i = 1; i <= n; i++) {
        printf "  %7d  %5.1f%%  %s\n", arr[keys[i]],
               100 * arr[keys[i]] / total, keys[i]
    }
}

END {
    if (total == 0) {
        print "no defarm_error records found"
        exit 0
    }

    printf "errors: %d (%d server-side 5xx, %d client-side 4xx)\n",
           total, server, total - server

    table("by error_kind", by_kind)
    table("by endpoint", by_endpoint)
    table("by status", by_status)

    printf "\nfirst samples\n"
    for (k in by_kind) {
        printf "  %s\n", k
        for (i = 1; i <= n_samples[k]; i++) {
            printf "    %s\n", sample[k, i]
        }
    }
}
' "$log"
