#!/usr/bin/env bash
# Makes sure a Chromium binary is available for the browser computer and its tests:
# Debian's `chromium` package, installed with apt-get (through sudo when not root).
set -euo pipefail

find_chromium() {
    if [[ -n "${CHROMIUM_PATH:-}" && -x "${CHROMIUM_PATH}" ]]; then
        echo "${CHROMIUM_PATH}"
        return 0
    fi
    # The same names, in the same order, as app/settings.py looks for.
    local name
    for name in chromium chromium-browser google-chrome google-chrome-stable; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return 0
        fi
    done
    return 1
}

if find_chromium >/dev/null; then
    exit 0
fi

fail() {
    echo "error: Chromium is not installed and could not be installed: $1" >&2
    echo "       Install Debian's package by hand ('apt-get install chromium'), or point" >&2
    echo "       CHROMIUM_PATH at a Chromium binary." >&2
    exit 1
}

command -v apt-get >/dev/null 2>&1 || fail "apt-get is not available on this system"

sudo_cmd=()
if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || fail "not root and sudo is not available"
    sudo_cmd=(sudo)
fi

echo "Chromium not found; installing Debian's chromium package with apt-get"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update || fail "apt-get update failed"
"${sudo_cmd[@]}" apt-get install -y --no-install-recommends chromium fonts-liberation \
    || fail "apt-get install chromium failed"

path="$(find_chromium)" || fail "the chromium package installed no chromium binary on PATH"
echo "Chromium installed at $path"
