#!/usr/bin/env bash
# Install Debian's chromium and chromium-driver for the report's real-browser test
# (tests/test_report_browser.py opens the HTML headless, offline).  Idempotent and
# quiet; run as root.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# Recommends (fonts, pulseaudio, upower ...) are not needed headless; a font is,
# so that charts render text.
apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
command -v chromium >/dev/null
