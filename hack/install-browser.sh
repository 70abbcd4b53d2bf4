#!/usr/bin/env bash
# The web view's e2e tests (tests/e2e/test_web_view.py) drive a real headless Chromium:
# install Debian's chromium and chromium-driver when either is missing, quietly.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "make test needs chromium and chromedriver (the web view's browser tests);" \
    "install them with your package manager (Debian: apt-get install chromium chromium-driver)" >&2
  exit 1
fi
mkdir -p .ebb
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
echo "installing chromium and chromium-driver from Debian's packages for the web view's browser tests (log: .ebb/apt.log)"
if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver; } >.ebb/apt.log 2>&1; then
  echo "installing chromium and chromium-driver failed; see .ebb/apt.log" >&2
  exit 1
fi
