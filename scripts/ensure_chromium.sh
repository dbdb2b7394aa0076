#!/bin/sh
# Makes sure Debian's Chromium is installed for the browser tests of tests/ui/ (driven by Playwright with
# executable_path, so no browser download is needed). Installs it with apt-get when running as root and it
# is missing; otherwise fails with a message naming the package.
set -eu
CHROMIUM="${CHROMIUM_BIN:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "the browser tests (tests/ui/) need Chromium at $CHROMIUM: install Debian's package 'chromium'" \
         "(sudo apt-get install chromium) or set CHROMIUM_BIN" >&2
    exit 1
fi
echo "installing Debian's chromium for the browser tests (tests/ui/)" >&2
export DEBIAN_FRONTEND=noninteractive
# wait for another apt-get (or unattended upgrades) instead of failing on its lock
LOCK="-o DPkg::Lock::Timeout=300"
if ! apt-get $LOCK install --yes --no-install-recommends chromium >/dev/null 2>&1; then
    # the package lists may be missing or stale on a fresh machine
    apt-get $LOCK update >/dev/null
    apt-get $LOCK install --yes --no-install-recommends chromium >/dev/null
fi
if [ ! -x "$CHROMIUM" ]; then
    echo "apt-get installed 'chromium' but $CHROMIUM is missing" >&2
    exit 1
fi
