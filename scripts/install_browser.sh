#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests (tests/test_report.py drives it with Playwright).
# Idempotent: does nothing when /usr/bin/chromium is already there.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    echo "install_browser: $CHROMIUM already present ($("$CHROMIUM" --version 2>/dev/null || echo 'version unknown')); nothing to do"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "install_browser: $CHROMIUM is missing and this is not root and sudo is not available;" >&2
    echo "install_browser: install it as root with: apt-get update && apt-get install -y --no-install-recommends chromium" >&2
    exit 1
fi

echo "install_browser: $CHROMIUM is missing; running ${SUDO:+$SUDO }apt-get update"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
echo "install_browser: running ${SUDO:+$SUDO }apt-get install -y --no-install-recommends chromium"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

if [ ! -x "$CHROMIUM" ]; then
    echo "install_browser: apt-get finished but $CHROMIUM is still missing" >&2
    exit 1
fi
echo "install_browser: installed $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
