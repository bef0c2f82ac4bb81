#!/usr/bin/env bash
# Install Debian's chromium when it is missing: tests/test_measurement.py opens a bench report in
# headless Chromium and checks that every chart loaded (the test skips, saying why, without it).
# Without recommended packages: 25 packages, about 80 MB to download, half a minute here.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
echo "ensure-chromium: installing chromium (headless, for the report-rendering test)"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
chromium --version
