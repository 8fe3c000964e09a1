#!/usr/bin/env bash
# Installs what Tollway needs on a fresh machine: uv, PostgreSQL server binaries, and the locked
# Python environment. Safe to run again: every step checks first.
set -euo pipefail
cd "$(dirname "$0")/../.."

say() { printf '  · %-11s %s\n' "$1" "$2" >&2; }

find_uv() {
  if command -v uv >/dev/null 2>&1; then command -v uv
  elif [ -x "$HOME/.local/bin/uv" ]; then echo "$HOME/.local/bin/uv"
  elif python3 -m uv --version >/dev/null 2>&1; then echo "python3 -m uv"
  fi
}
if [ -z "$(find_uv)" ]; then
  say uv "installing from PyPI"
  python3 -m pip install --quiet uv 2>/dev/null \
    || python3 -m pip install --quiet --user uv 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages uv
fi
UV="$(find_uv)"
if [ -z "$UV" ]; then
  echo "could not install uv: install it (https://docs.astral.sh/uv/) and run make again" >&2
  exit 1
fi

have_postgres() {
  compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || command -v pg_ctl >/dev/null 2>&1
}
if [ -z "${DATABASE_URL:-}" ] && ! have_postgres; then
  if [ "$(id -u)" -eq 0 ]; then
    say postgres "installing Debian's postgresql package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
  else
    echo "PostgreSQL server binaries are missing: run 'sudo apt-get install postgresql'" \
         "or set DATABASE_URL to a server you run." >&2
    exit 1
  fi
fi

say python "syncing the locked environment (uv sync --frozen)"
$UV sync --frozen --quiet
