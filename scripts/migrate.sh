#!/usr/bin/env bash
# Applies sql/NNN_*.sql in order, each once, each in its own transaction,
# and records it in schema_migrations.  Connection from the usual libpq
# environment (PGHOST, PGPORT, PGUSER, PGDATABASE) or DATABASE_URL.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
export PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning"
psql=(psql -X -q -v ON_ERROR_STOP=1 ${DATABASE_URL:+"$DATABASE_URL"})

"${psql[@]}" -c "CREATE TABLE IF NOT EXISTS schema_migrations (
    version     text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now())"

applied=$("${psql[@]}" -At -c "SELECT version FROM schema_migrations")

for f in "$top"/sql/[0-9]*.sql; do
    [ -e "$f" ] || continue
    version=$(basename "$f" .sql)

    if grep -qxF "$version" <<<"$applied"; then
        continue
    fi

    echo "applying $version"
    "${psql[@]}" -1 -f "$f" \
        -c "INSERT INTO schema_migrations (version) VALUES ('$version')"
done
