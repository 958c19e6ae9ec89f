#!/usr/bin/env bash
# The mechanical part of nginx's code style for src/: 80 columns, no tabs,
# no trailing blanks, ngx_defarm_ prefixes on exported names, include
# guards on headers.  Prints each violation as file:line and fails on any.
set -uo pipefail

cd "$(dirname "$0")/.."
rc=0

report() {
    echo "$1"
    rc=1
}

while IFS= read -r f; do
    while IFS= read -r hit; do report "$f:$hit"; done < <(
        awk 'length($0) > 80 { print FNR ": longer than 80 columns" }
             /\t/             { print FNR ": tab" }
             /[ \t]+$/        { print FNR ": trailing blank" }' "$f")

    case "$f" in
    *.h)
        guard=$(basename "$f" .h | tr a-z A-Z)
        grep -q "_${guard}_H_INCLUDED_" "$f" \
            || report "$f: no _${guard}_H_INCLUDED_ guard"
        ;;
    esac
done < <(find src -name '*.[ch]' | sort)

# exported functions and objects carry the module's prefix
while IFS= read -r hit; do report "$hit: exported name without ngx_defarm_"
done < <(nm -g --defined-only build/nginx/objs/addon/*/*.o 2>/dev/null \
         | awk '$2 ~ /[TDBR]/ && $3 !~ /^ngx_defarm_/ { print $3 }')

if [ $rc -eq 0 ]; then
    echo "style: $(find src -name '*.[ch]' | wc -l) files checked, no violations"
fi

exit $rc
