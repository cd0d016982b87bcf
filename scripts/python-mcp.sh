#!/usr/bin/env bash
# A virtualenv with the Python `mcp` SDK from PyPI, the real MCP client the end-to-end tests of
# `lockplane serve` drive (mcp/tests/mcp_e2e.rs). Installs only what is missing, so a second
# run is fast; prints the venv's python on stdout (the Makefile exports it as
# LOCKPLANE_MCP_PYTHON). python3-venv comes from apt only when `python3 -m venv` cannot work.
set -euo pipefail

tools="${LOCKPLANE_TOOLS:-/opt/lockplane-tools}"
venv="$tools/venv"
# Pinned: the drivers in mcp/tests/python are written against this client's API.
version="${LOCKPLANE_MCP_VERSION:-2.3.0}"
py="$venv/bin/python"

log() { echo "python-mcp: $*" >&2; }

if [ -x "$py" ] && "$py" -c "import importlib.metadata as m, sys; sys.exit(m.version('mcp') != '$version')" 2>/dev/null; then
  echo "$py"
  exit 0
fi

apt_install() {
  log "installing $*"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { log "run as root or install: $*"; exit 1; }
    sudo="sudo"
  fi
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >&2
}

command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
mkdir -p "$tools"
if [ ! -x "$venv/bin/pip" ]; then
  log "creating $venv"
  rm -rf "$venv"
  # Debian's python3 lacks ensurepip until python3-venv is installed: try, then install it.
  if ! python3 -m venv "$venv" >&2 2>/dev/null; then
    rm -rf "$venv"
    apt_install python3-venv
    python3 -m venv "$venv" >&2
  fi
fi
log "installing mcp==$version into $venv"
"$py" -m pip install -q --disable-pip-version-check "mcp==$version" >&2
echo "$py"
