#!/usr/bin/env bash
# Make headless Chromium available for the browser check of the rendered book.
# Installs Debian's chromium and chromium-driver when they are missing and this user may
# (root with apt-get); otherwise says why, and the browser tests skip with that reason.
set -uo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[browser] installing Debian's chromium and chromium-driver"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && apt-get install -y -qq chromium chromium-driver >/dev/null \
        && exit 0
    echo "[browser] apt-get could not install chromium; the browser tests will be skipped"
else
    echo "[browser] chromium is missing and cannot be installed here (needs root and apt-get);" \
         "install chromium and chromedriver to run the browser tests"
fi
exit 0
