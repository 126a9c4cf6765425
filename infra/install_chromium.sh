#!/bin/sh
# Debian's Chromium, for the browser test of the HTML report (tests/integration/
# test_report_html_browser.py). Installed only where /usr/bin/chromium is missing and apt-get is;
# where there is no apt-get (a Mac, say) it says so and the test skips. An install that fails on
# a Debian machine fails loudly. Without recommends: 25 packages (~25 s) instead of 130 (systemd,
# perl, printing), and headless Chromium needs none of them; chromium-driver is not needed either.
set -eu
[ -x /usr/bin/chromium ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "no apt-get here: Chromium not installed; the HTML report's browser test will skip"
    exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
    if ! sudo -n true 2>/dev/null; then  # no root here: the browser test says what to run
        echo "Chromium not installed (needs root): sudo apt-get install --no-install-recommends chromium"
        exit 0
    fi
    sudo="sudo -n"
fi
export DEBIAN_FRONTEND=noninteractive

get_chromium() {
    $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
}

echo "installing Debian's chromium (the HTML report's browser test)"
# the package lists are read as they are; updated first only where they lack chromium, and once
# more if the install fails (stale lists naming a version the mirror no longer has)
apt-cache show chromium >/dev/null 2>&1 || $sudo apt-get update -qq
if ! get_chromium; then
    echo "retrying after apt-get update"
    $sudo apt-get update -qq
    get_chromium || { echo "could not install Debian's chromium" >&2; exit 1; }
fi
[ -x /usr/bin/chromium ] || { echo "apt-get installed chromium, but /usr/bin/chromium is missing" >&2; exit 1; }
