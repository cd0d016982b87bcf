#!/usr/bin/env bash
# Installs what building and testing Lockplane needs on a Debian machine, only when missing:
# libclang-dev (pg_query's bindgen) and Postgres server binaries (throwaway clusters).
set -euo pipefail

need=()
if ! dpkg -s libclang-dev >/dev/null 2>&1 && ! ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1; then
  need+=(libclang-dev)
fi
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  need+=(postgresql postgresql-contrib)
fi
if ! command -v psql >/dev/null 2>&1; then
  need+=(postgresql-client)
fi

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "setup: run as root or install: ${need[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian's package starts a cluster of its own; Lockplane never uses it.
  if command -v pg_lsclusters >/dev/null 2>&1; then
    $sudo pg_ctlcluster --force "$(ls /usr/lib/postgresql | sort -n | tail -1)" main stop 2>/dev/null || true
  fi
fi
echo "setup: ok ($(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | tr '\n' ' '))"
