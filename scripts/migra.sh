#!/usr/bin/env bash
# migra (PyPI), the reference `lockplane plan` is measured against (issue 15, the
# `plan_vs_migra` bench), in its own virtualenv beside the MCP one. Installs only what is
# missing; prints the migra executable on stdout (the bench reads it as LOCKPLANE_MIGRA).
set -euo pipefail

tools="${LOCKPLANE_TOOLS:-/opt/lockplane-tools}"
venv="$tools/migra-venv"
version="${LOCKPLANE_MIGRA_VERSION:-3.0.1663481299}"
migra="$venv/bin/migra"

log() { echo "migra: $*" >&2; }

if [ -x "$migra" ] && "$venv/bin/python" -c "import importlib.metadata as m, sys, psycopg; sys.exit(m.version('migra') != '$version')" 2>/dev/null; then
  echo "$migra"
  exit 0
fi
command -v python3 >/dev/null 2>&1 || { log "python3 is missing: run scripts/python-mcp.sh first"; exit 1; }
mkdir -p "$tools"
if [ ! -x "$venv/bin/pip" ]; then
  log "creating $venv"
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
fi
log "installing migra==$version into $venv"
# migra's sqlbag connects through SQLAlchemy with psycopg 3; setuptools for pkg_resources.
"$venv/bin/python" -m pip install -q --disable-pip-version-check "migra==$version" \
  "psycopg[binary]" "setuptools<81" >&2
echo "$migra"
