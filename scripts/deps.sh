#!/usr/bin/env bash
# Installs the Debian packages the project needs, then the npm packages of
# the tests' IPFS node (scripts/ipfs.sh install); does nothing when they are
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
    wrk curl valgrind procps openssl python3 python3-cryptography
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null \
            | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

# node and npm, for the IPFS node: looked for as commands, not as Debian
# packages, since any recent Node.js will do and one from elsewhere (such as
# NodeSource's nodejs, which carries its own npm and conflicts with Debian's)
# must not be installed over
if ! command -v node >/dev/null; then
    missing+=(nodejs)
fi
if ! command -v npm >/dev/null; then
    missing+=(npm)
fi

if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"

    sudo=
    if [ "$(id -u)" -ne 0 ]; then
        sudo=sudo
    fi

    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        >/dev/null

    # Debian's packages start services on install where an init system
    # runs; the project starts its own throwaway instances instead.
    for svc in nginx postgresql redis-server; do
        $sudo service "$svc" stop >/dev/null 2>&1 || true
    done
fi

# without sudo: it writes under var/, which stays the user's; a no-op once
# its lock file's packages are in
"$(dirname "$0")/ipfs.sh" install
