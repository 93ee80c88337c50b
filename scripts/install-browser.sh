#!/usr/bin/env bash
# Installs what the admin pages' browser tests (tests/e2e/) need, once per machine:
#   chromium   - Debian's package, at /usr/bin/chromium (we never download a browser build:
#                the tests drive this one through Playwright's executable_path)
#   playwright - the Python package, from the venv's dev extra (installed here too when missing)
# Safe to run again: it installs only what is missing. Needs root for apt-get.
# Usage: scripts/install-browser.sh [path/to/venv]   (default: .venv)
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${1:-.venv}

if [ ! -x /usr/bin/chromium ]; then
    echo "install-browser: installing chromium (Debian package)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
/usr/bin/chromium --version 2>/dev/null | head -n 1 || true

if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c 'import playwright' >/dev/null 2>&1; then
    echo "install-browser: installing playwright into $VENV"
    "$VENV/bin/pip" install --quiet 'playwright>=1.44,<2'
fi
echo "install-browser: ready"
