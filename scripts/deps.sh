#!/usr/bin/env bash
# Installs the Debian packages the project needs; does nothing when they are
# all present.  Runs as root (CI, containers) or through sudo.
set -euo pipefail

packages=(
    build-essential nginx-core nginx-dev
    libpq-dev libhiredis-dev libjwt-dev libyajl-dev libcrypt-dev libssl-dev
    libcurl4-openssl-dev
    postgresql postgresql-contrib redis-server
    libtest-base-perl libipc-run-perl libtest-longstring-perl
    libtext-diff-perl liblist-moreutils-perl libwww-perl libhttp-tiny-perl
    libio-socket-ssl-perl
    wrk curl valgrind procps openssl
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null \
            | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

echo "installing: ${missing[*]}"

sudo=
if [ "$(id -u)" -ne 0 ]; then
    sudo=sudo
fi

export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

# Debian's packages start services on install where an init system runs;
# the project starts its own throwaway instances instead.
for svc in nginx postgresql redis-server; do
    $sudo service "$svc" stop >/dev/null 2>&1 || true
done
