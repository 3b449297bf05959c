#!/usr/bin/env bash
# Make sure PostgreSQL server binaries (initdb, pg_ctl) exist for the test suite's throwaway
# cluster (tests/pg.py). Does nothing when they are on PATH or under
# /usr/lib/postgresql/*/bin; otherwise installs the Debian 'postgresql' package with apt-get,
# through sudo when not root. Prints what it did.
set -euo pipefail

found_initdb() {
    if command -v initdb >/dev/null 2>&1; then
        command -v initdb
        return 0
    fi
    local candidate
    for candidate in /usr/lib/postgresql/*/bin/initdb; do
        if [ -x "$candidate" ]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if initdb_path=$(found_initdb); then
    echo "ensure-postgres: found $initdb_path; nothing to install"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-postgres: no initdb and no apt-get; install PostgreSQL server binaries" \
         "with this system's package manager" >&2
    exit 1
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "ensure-postgres: not root and no sudo; install the 'postgresql' package as root" >&2
        exit 1
    fi
    sudo_cmd=(sudo)
fi

echo "ensure-postgres: initdb not found; installing the Debian 'postgresql' package"
${sudo_cmd[@]+"${sudo_cmd[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update -q
${sudo_cmd[@]+"${sudo_cmd[@]}"} env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends postgresql

if initdb_path=$(found_initdb); then
    echo "ensure-postgres: installed; initdb is $initdb_path"
else
    echo "ensure-postgres: installed 'postgresql' but initdb is still missing" >&2
    exit 1
fi
