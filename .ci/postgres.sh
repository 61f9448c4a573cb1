#!/usr/bin/env bash
# Make PostgreSQL's server binaries (initdb, pg_ctl) available for the sweep ledger's PostgreSQL test
# (tests/test_sweep_ledger.py starts its own throwaway server in a temporary directory on 127.0.0.1).
# Installs Debian's `postgresql` package when the binaries are missing; a no-op when they are present.
# Needs root (CI runs as root) or sudo. The test also needs the `psycopg` driver (SQLAlchemy's default for
# postgresql:// URLs), which comes from PyPI with the project's extras, not from here.
set -euo pipefail

have_server() {
  command -v initdb >/dev/null 2>&1 && return 0
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

if have_server; then
  echo "postgres.sh: PostgreSQL server binaries already installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "postgres.sh: no apt-get here; the PostgreSQL ledger test will be skipped" >&2
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq postgresql >/dev/null
have_server && echo "postgres.sh: installed $(compgen -G '/usr/lib/postgresql/*/bin/initdb' | head -1)"
