#!/usr/bin/env bash
# Lists every critical section (trylock..unlock span, or *_locked
# function) with its length in lines, for review.
#
#   scripts/audit_lock_patterns.sh [FILE|DIR ...]   default: src/
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
[ $# -gt 0 ] || set -- "$top/src"

mapfile -t files < <(find "$@" -name '*.c' | sort)
exec perl "$top/scripts/lib/lock_sections.pl" audit "${files[@]}"
