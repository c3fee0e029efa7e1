#!/usr/bin/env bash
# Makes sure valgrind (with callgrind and callgrind_annotate) exists, so the
# instruction-count gate (`loadgen gate --instructions`) runs. Installs
# Debian's `valgrind` package when it is missing, refreshing the package
# index only if the package is not found in it (as scripts/ensure-redis.sh).
set -euo pipefail

have_all() {
    command -v valgrind >/dev/null 2>&1 && command -v callgrind_annotate >/dev/null 2>&1
}

if have_all; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "ensure-valgrind: valgrind is missing and we are not root (no sudo): install Debian's valgrind package" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
if ! apt-cache show valgrind >/dev/null 2>&1; then
    echo "ensure-valgrind: refreshing the package index (apt-get update)" >&2
    $SUDO apt-get update -qq
fi
echo "ensure-valgrind: installing valgrind" >&2
if ! $SUDO apt-get install -y -qq --no-install-recommends valgrind >&2; then
    # A stale index lists the package but its files are gone: refresh, retry.
    echo "ensure-valgrind: install failed; refreshing the package index and retrying" >&2
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends valgrind >&2
fi

if ! have_all; then
    echo "ensure-valgrind: valgrind or callgrind_annotate still missing after install" >&2
    exit 1
fi
valgrind --version >&2
