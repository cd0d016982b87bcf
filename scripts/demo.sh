#!/usr/bin/env bash
# The main job, as a user sees it: a throwaway Postgres, a schema, and Lockplane reading it.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${LOCKPLANE_BIN:-target/debug/lockplane}"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Starting a throwaway Postgres (lockplane sandbox)"
coproc SANDBOX { exec "$bin" sandbox; }
read -t 120 -r line <&"${SANDBOX[0]}" || { echo "demo: the sandbox did not start" >&2; exit 1; }
export DATABASE_URL="${line#DATABASE_URL=}"
trap 'kill "$SANDBOX_PID" 2>/dev/null; wait "$SANDBOX_PID" 2>/dev/null || true' EXIT
echo "DATABASE_URL=$DATABASE_URL"

say "Loading demo/schema.sql"
psql -q -v ON_ERROR_STOP=1 "$DATABASE_URL" -f demo/schema.sql

say "lockplane introspect --format yaml"
"$bin" introspect --format yaml

say "lockplane introspect (JSON), hash only"
"$bin" introspect | grep '"catalog_hash"'

say "The hash is recomputable with standard tools: canonical JSON (RFC 8785) + SHA3-256"
"$bin" introspect | python3 -c '
import hashlib, json, sys
m = json.load(sys.stdin)
canon = json.dumps(m["catalog"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
print("python3 recomputed: sha3-256:" + hashlib.sha3_256(canon.encode()).hexdigest())'
