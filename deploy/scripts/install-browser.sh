#!/usr/bin/env bash
# Installs Debian's Chromium for the dashboard's browser tests (Playwright drives it headless and
# never downloads a browser of its own). As root, or with sudo when it needs no password; otherwise
# it says what to install. Safe to run again: it checks first.
set -euo pipefail

say() { printf '  · %-11s %s\n' "$1" "$2" >&2; }

if command -v chromium >/dev/null 2>&1 || [ -n "${TOLLWAY_CHROMIUM:-}" ]; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" -eq 0 ]; then
  say chromium "installing Debian's chromium package (for the dashboard's browser tests)"
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  say chromium "installing Debian's chromium package with sudo (for the browser tests)"
  sudo -n env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  say chromium "missing: the dashboard's browser tests need 'sudo apt-get install chromium'"
fi
