#!/usr/bin/env bash
# make bench: every benchmark under bench/, one after the other.
set -euo pipefail
cd "$(dirname "$0")"
for b in db_pool.sh cache.sh invalidation.sh items.sh circuits.sh credits.sh \
         webhooks.sh storage.sh login.sh ws.sh merkle.sh; do
    echo "### $b"
    bash "$b"
    echo
done
