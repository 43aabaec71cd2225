#!/usr/bin/env bash
# Install the Debian packages the test suite needs: a PostgreSQL server and
# client, the unixODBC driver manager (with headers, for pyodbc) and the
# PostgreSQL ODBC driver. Idempotent: when everything is present it only
# checks and exits, without touching apt.
set -euo pipefail

packages=(postgresql unixodbc unixodbc-dev odbc-postgresql)

is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

missing=()
for package in "${packages[@]}"; do
    is_installed "$package" || missing+=("$package")
done

# dpkg may say yes while the driver is not registered (a hand-edited
# odbcinst.ini), so the driver entry is checked as well.
if is_installed odbc-postgresql \
    && ! odbcinst -q -d 2>/dev/null | grep -qi '^\[PostgreSQL Unicode\]'; then
    echo "odbc-postgresql is installed but 'PostgreSQL Unicode' is not in" \
        "odbcinst.ini; reinstalling it" >&2
    missing+=(odbc-postgresql)
    reinstall=1
fi

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "system deps: all present (${packages[*]})"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "system deps missing: ${missing[*]}" >&2
    echo "install them as root: apt-get install -y ${missing[*]}" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "system deps: installing ${missing[*]}"
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    ${reinstall:+--reinstall} "${missing[@]}"

# The postgresql package starts a cluster of its own on port 5432; tests
# start throwaway servers instead, so nothing here relies on it.
echo "system deps: done"
