#!/usr/bin/env bash
# "make asan": a whole nginx and the module built from the same source tree
# with AddressSanitizer and UndefinedBehaviorSanitizer, then the suite (or
# TEST_FILES) run against it.  Any sanitizer report fails the run, even one
# from a worker whose tests passed: the reports go to files (ASAN_OPTIONS
# and UBSAN_OPTIONS log_path), which are checked at the end.
#
#   bash scripts/asan.sh build      only build build/asan/
#   bash scripts/asan.sh [test]     build, then make test's run against it
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
out=$top/build/asan
ngx=$out/nginx
cd "$top"

# nginx-dev has the headers, not the .c files: the source of the same
# version comes from Debian's archive (its orig tarball, by apt-get source)
source_tree() {
    local version tarball sources=/etc/apt/sources.list.d/defarm-src.sources

    version=$(nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
    tarball=$(ls "$out"/src/nginx_"$version".orig.tar.gz 2>/dev/null || true)

    if [ -z "$tarball" ]; then
        if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ \
           && ! grep -qs '^deb-src' /etc/apt/sources.list
        then
            sed 's/^Types: deb$/Types: deb-src/' \
                /etc/apt/sources.list.d/debian.sources > "$sources"
            apt-get update -qq
        fi

        mkdir -p "$out/src"

        # a security suite may list a newer Debian revision whose files are
        # gone; the orig tarball, the same for all, is what is needed
        (cd "$out/src" && apt-get source -qq --download-only nginx \
             > "$out/source.log" 2>&1 || true)

        tarball=$(ls "$out"/src/nginx_"$version".orig.tar.gz 2>/dev/null \
                  || true)

        if [ -z "$tarball" ]; then
            echo "asan: no nginx $version source from apt-get source" >&2
            tail -n 5 "$out/source.log" >&2
            exit 1
        fi
    fi

    rm -rf "$out/src/nginx-$version"
    tar xzf "$tarball" -C "$out/src"
    src=$out/src/nginx-$version
    cp /usr/share/nginx/src/conf_flags "$src/"
}

build() {
    if [ ! -f "$ngx/objs/Makefile" ] || [ config -nt "$ngx/objs/Makefile" ]; then
        mkdir -p "$out"
        source_tree
        rm -rf "$ngx"
        mv "$src" "$ngx"
        bash scripts/gen_version.sh "$top/build/gen/ngx_defarm_version.h"

        # Debian's configure flags, with the sanitizers and frame
        # pointers for readable stacks; -O1 keeps it fast enough
        (
            cd "$ngx"
            . ./conf_flags
            # and the static modules Debian's binary has beyond them
            NGX_DEFARM_GEN_DIR=$top/build/gen ./configure \
                "${NGX_CONF_FLAGS[@]}" \
                --with-http_addition_module --with-http_flv_module \
                --with-http_gunzip_module --with-http_gzip_static_module \
                --with-http_mp4_module --with-http_random_index_module \
                --with-http_secure_link_module --with-http_sub_module \
                --with-cc-opt='-g -O1 -fno-omit-frame-pointer -fPIC -fsanitize=address,undefined -fno-sanitize=alignment' \
                --with-ld-opt='-fsanitize=address,undefined -fPIC' \
                --add-dynamic-module="$top" > "$out/configure.log" 2>&1
        ) || { tail -n 30 "$out/configure.log"; exit 1; }
    fi

    make -s -C "$ngx" -f objs/Makefile > "$out/make.log" 2>&1 \
        || { grep -E 'error|Error' "$out/make.log" | head -30; exit 1; }

    echo "asan: built $ngx/objs/nginx and its ngx_defarm_module.so"
}

run() {
    local reports=$out/reports

    rm -rf "$reports"
    mkdir -p "$reports"

    # leaks are not looked for: a worker exits without freeing what
    # lives as long as it (nginx's own way); everything else is
    export ASAN_OPTIONS="log_path=$reports/asan:detect_leaks=0:abort_on_error=0:detect_odr_violation=0"
    export UBSAN_OPTIONS="log_path=$reports/ubsan:print_stacktrace=1"
    export TEST_NGINX_BINARY=$ngx/objs/nginx
    export TEST_NGINX_MODULE_SO=$ngx/objs/ngx_defarm_module.so
    export TEST_NGINX_SANITIZED=1

    local rc=0
    bash scripts/test.sh || rc=$?

    if compgen -G "$reports/*" > /dev/null; then
        echo "asan: sanitizer reports:"
        for f in "$reports"/*; do
            echo "== $f"
            head -n 60 "$f"
        done
        exit 1
    fi

    echo "asan: no sanitizer report"
    exit $rc
}

case "${1:-test}" in
    build) build ;;
    test)  build; run ;;
    *)     echo "usage: $0 [build|test]" >&2; exit 2 ;;
esac
