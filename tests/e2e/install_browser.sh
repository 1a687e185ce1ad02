#!/usr/bin/env sh
# Installs Debian's chromium + chromium-driver for the browser e2e tests (tests/e2e/).
# Idempotent: does nothing when /usr/bin/chromium and /usr/bin/chromedriver exist. Never downloads a
# browser from anywhere but the system's apt sources. When it cannot install (no root, no sudo, apt
# failure) it says so and exits 0: the e2e test then skips with that reason instead of failing setup.
set -u

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    echo "install_browser: chromium and chromedriver already installed"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "install_browser: WARNING: need root or passwordless sudo to apt-get install chromium; e2e browser tests will skip" >&2
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: WARNING: apt-get not found (not Debian/Ubuntu); e2e browser tests will skip" >&2
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
if $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium chromium-driver; then
    echo "install_browser: installed $(/usr/bin/chromium --version 2>/dev/null)"
else
    echo "install_browser: WARNING: apt-get install chromium chromium-driver failed; e2e browser tests will skip" >&2
fi
exit 0
