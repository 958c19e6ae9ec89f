#!/usr/bin/env bash
# Writes the build identity header for the module, and rewrites it only when
# the version or the commit changed, so that an unchanged tree does not
# recompile.  GIT_HASH and BUILD_TIME may come from the environment (the
# Dockerfile passes them as build arguments: no .git in the image).
set -euo pipefail

out=$1
top=$(cd "$(dirname "$0")/.." && pwd)
version=$(cat "$top/VERSION")

if [ -z "${GIT_HASH:-}" ]; then
    if GIT_HASH=$(git -C "$top" rev-parse HEAD 2>/dev/null); then
        if [ -n "$(git -C "$top" status --porcelain -- src config 2>/dev/null)" ]
        then
            GIT_HASH="$GIT_HASH-dirty"
        fi
    else
        GIT_HASH=unknown
    fi
fi

body="#define NGX_DEFARM_VERSION     \"$version\"
#define NGX_DEFARM_GIT_HASH    \"$GIT_HASH\""

mkdir -p "$(dirname "$out")"
if [ -f "$out" ] && [ "$(grep -v BUILD_TIME "$out")" = "$body" ]; then
    exit 0
fi

build_time=${BUILD_TIME:-$(date -u +%Y-%m-%dT%H:%M:%SZ)}
printf '%s\n#define NGX_DEFARM_BUILD_TIME  "%s"\n' "$body" "$build_time" \
    > "$out.tmp"
mv "$out.tmp" "$out"
