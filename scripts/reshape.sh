#!/usr/bin/env bash
# Reshape (crates.io, `cargo install reshape`), the expand/contract tool Lockplane's online
# migrations are compared with (mcp/tests/online_reshape.rs). Installs only what is missing;
# prints the reshape executable on stdout (the Makefile exports it as LOCKPLANE_RESHAPE).
set -euo pipefail

tools="${LOCKPLANE_TOOLS:-/opt/lockplane-tools}"
version="${LOCKPLANE_RESHAPE_VERSION:-0.11.2}"
root="$tools/reshape"
reshape="$root/bin/reshape"

log() { echo "reshape: $*" >&2; }

if [ -x "$reshape" ] && "$reshape" --version 2>/dev/null | grep -qix "reshape $version"; then
  echo "$reshape"
  exit 0
fi
command -v cargo >/dev/null 2>&1 || { log "cargo is missing"; exit 1; }
mkdir -p "$tools"
log "installing reshape $version into $root (cargo install, a few minutes once)"
# Its own target directory, removed after: nothing of it lands in the workspace's.
target="$(mktemp -d)"
trap 'rm -rf "$target"' EXIT
cargo install --quiet --locked reshape --version "$version" --root "$root" --target-dir "$target" >&2
echo "$reshape"
