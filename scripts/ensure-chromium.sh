#!/usr/bin/env bash
# Make sure a headless-capable Chromium exists for the report page's browser test
# (tests/manager/api/test_report_browser.py). Does nothing when `chromium` (or
# `chromium-browser`) is on PATH; otherwise installs the Debian 'chromium' package with
# apt-get, through sudo when not root. Prints what it did.
set -euo pipefail

found_chromium() {
    local name
    for name in chromium chromium-browser; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return 0
        fi
    done
    return 1
}

if chromium_path=$(found_chromium); then
    echo "ensure-chromium: found $chromium_path; nothing to install"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: no chromium and no apt-get; install Chromium with this system's" \
         "package manager" >&2
    exit 1
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "ensure-chromium: not root and no sudo; install the 'chromium' package as root" >&2
        exit 1
    fi
    sudo_cmd=(sudo)
fi

echo "ensure-chromium: chromium not found; installing the Debian 'chromium' package"
${sudo_cmd[@]+"${sudo_cmd[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update -q
# fonts-liberation: without any font the page's text renders as boxes in the screenshot.
${sudo_cmd[@]+"${sudo_cmd[@]}"} env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends chromium fonts-liberation

if chromium_path=$(found_chromium); then
    echo "ensure-chromium: installed; chromium is $chromium_path"
else
    echo "ensure-chromium: installed 'chromium' but it is still not on PATH" >&2
    exit 1
fi
