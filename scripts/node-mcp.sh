#!/usr/bin/env bash
# The official TypeScript MCP SDK (@modelcontextprotocol/sdk), the MCP Inspector and Ajv from
# npm, pinned by mcp/tests/node/package-lock.json: the clients the Node end-to-end tests of
# `lockplane serve` drive (mcp/tests/node_e2e.rs). Installs into $LOCKPLANE_TOOLS/node-mcp
# (default /opt/lockplane-tools/node-mcp) only when the lockfile changed, so a second run is
# fast; prints that directory on stdout (the Makefile exports it as LOCKPLANE_MCP_NODE_DIR).
# Node and npm come from Debian's packages, only when missing.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
spec="$here/mcp/tests/node"
tools="${LOCKPLANE_TOOLS:-/opt/lockplane-tools}"
dir="$tools/node-mcp"

log() { echo "node-mcp: $*" >&2; }

stamp="$(cat "$spec/package.json" "$spec/package-lock.json" | sha256sum | cut -c1-64)"
if [ -f "$dir/.installed" ] && [ "$(cat "$dir/.installed")" = "$stamp" ] \
  && command -v node >/dev/null 2>&1; then
  echo "$dir"
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

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt_install nodejs npm
fi

mkdir -p "$dir"
cp "$spec/package.json" "$spec/package-lock.json" "$dir/"
log "installing the pinned packages into $dir (node $(node --version))"
# --ignore-scripts: nothing pinned needs an install script (the Inspector's only sets up a
# source checkout); engine warnings are expected, the Inspector declares a newer Node than
# Debian's and runs on it.
(cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
echo "$stamp" > "$dir/.installed"
echo "$dir"
