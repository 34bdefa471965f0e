#!/usr/bin/env bash
# Debian's Chromium and its driver, for the dashboard's real-browser test. Never a browser
# download: only the distribution's packages. Does nothing when both are present.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || {
    echo "chromium/chromedriver missing and not root: apt-get install chromium chromium-driver" >&2
    exit 1
  }
  SUDO="sudo"
fi
echo "installing Debian's chromium and chromium-driver (for the browser test) ..."
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null \
  || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }
