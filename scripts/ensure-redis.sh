#!/usr/bin/env bash
# Makes sure redis-server, redis-cli and redis-benchmark exist, so the Redis
# backend's tests (crate session-redis) run against real servers and never
# skip. Installs Debian's `redis-server` package when they are missing (it
# ships all three binaries); refreshes the package index only if the package
# is not found in it. The package's own service is kept from starting: the
# tests start their own servers on free loopback ports. The tests need Redis
# 7.0 or later (PEXPIRETIME, cluster-announce-hostname): an older one on the
# PATH is refused with a message, not met by failing tests.
set -euo pipefail

have_all() {
    command -v redis-server >/dev/null 2>&1 &&
        command -v redis-cli >/dev/null 2>&1 &&
        command -v redis-benchmark >/dev/null 2>&1
}

# 0 if the redis-server on the PATH is 7.0 or later.
recent_enough() {
    local version
    version=$(redis-server --version | sed -n 's/.*v=\([0-9][0-9]*\)\..*/\1/p')
    [ -n "$version" ] && [ "$version" -ge 7 ]
}

if have_all; then
    if recent_enough; then
        exit 0
    fi
    echo "ensure-redis: $(redis-server --version): the tests need Redis 7.0 or later" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "ensure-redis: redis-server is missing and we are not root (no sudo): install Debian's redis-server package" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
# The service must not start on install (policy-rc.d exit 101 = "do not start").
POLICY=/usr/sbin/policy-rc.d
# Removed on exit, however this script ends (set before the file exists: a
# policy left behind would keep every later install's service from starting).
created_policy=0
cleanup() { if [ "$created_policy" = 1 ]; then $SUDO rm -f "$POLICY"; fi; }
trap cleanup EXIT
if [ ! -e "$POLICY" ]; then
    created_policy=1
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod +x "$POLICY"
fi

if ! apt-cache show redis-server >/dev/null 2>&1; then
    echo "ensure-redis: refreshing the package index (apt-get update)" >&2
    $SUDO apt-get update -qq
fi
echo "ensure-redis: installing redis-server (redis-server, redis-cli, redis-benchmark)" >&2
if ! $SUDO apt-get install -y -qq --no-install-recommends redis-server redis-tools >&2; then
    # A stale index lists the package but its files are gone: refresh, retry.
    echo "ensure-redis: install failed; refreshing the package index and retrying" >&2
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends redis-server redis-tools >&2
fi

if ! have_all; then
    echo "ensure-redis: redis-server, redis-cli or redis-benchmark still missing after install" >&2
    exit 1
fi
redis-server --version >&2
if ! recent_enough; then
    echo "ensure-redis: the installed Redis is older than 7.0, which the tests need" >&2
    exit 1
fi
