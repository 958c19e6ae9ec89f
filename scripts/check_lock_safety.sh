#!/usr/bin/env bash
# The C form of the original service's check_mutex_safety.sh.  Fails when
#  - any source calls a blocking lock (ngx_shmtx_lock, ngx_rwlock_wlock,
#    ngx_rwlock_rlock): the cache lock is only ever tried;
#  - anything but copying bytes, linking nodes and slab memory happens
#    between an ngx_shmtx_trylock() and its unlock, or in a *_locked
#    function (libpq, hiredis, libjwt, crypt, yajl, nginx output, logging
#    and allocation are named explicitly);
#  - a *_locked function is called without the lock.
# Prints what it checked and each violation as file:line.
#
#   scripts/check_lock_safety.sh [FILE|DIR ...]     default: src/
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
[ $# -gt 0 ] || set -- "$top/src"

mapfile -t files < <(find "$@" -name '*.c' -o -name '*.h' | sort)
exec perl "$top/scripts/lib/lock_sections.pl" check "${files[@]}"
