#!/usr/bin/env bash
# Make sure the browser tests have a chromium: Debian's package at /usr/bin/chromium.
# Playwright drives it through `executable_path` because `playwright install` cannot download
# browsers here; Debian's build is the one apt can always fetch. Installs only when it is missing,
# which needs root (CI runs as root on a fresh machine); anyone else gets the command to run.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null; then
    echo "error: $CHROMIUM is missing and apt-get is not available;" \
        "install Debian's chromium package (the browser tests need it)" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "error: $CHROMIUM is missing and installing it needs root; run" \
        "'sudo apt-get update && sudo apt-get install -y chromium', then make test again" >&2
    exit 1
fi

echo "Installing Debian's chromium for the browser tests (about a minute)..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Recommends stay on (and fonts-liberation is named): screenshots need real fonts.
apt-get install -y -qq chromium fonts-liberation >/dev/null
if [ ! -x "$CHROMIUM" ]; then
    echo "error: apt-get installed chromium but $CHROMIUM is still missing" >&2
    exit 1
fi
"$CHROMIUM" --version
