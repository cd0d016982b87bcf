#!/usr/bin/env bash
# The main job as a user sees it, as far as it is built: a throwaway Postgres, a schema,
# Lockplane reading it into a hashed manifest and a DSL document, the ledger recording it.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${LOCKPLANE_BIN:-target/debug/lockplane}"
work="$(mktemp -d)"
export LOCKPLANE_LEDGER="$work/ledger"
export LOCKPLANE_ACTOR="user:demo"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Starting a throwaway Postgres (lockplane sandbox)"
coproc SANDBOX { exec "$bin" sandbox; }
cleanup() {
  kill "$SANDBOX_PID" 2>/dev/null || true
  wait "$SANDBOX_PID" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
read -t 120 -r line <&"${SANDBOX[0]}" || { echo "demo: the sandbox did not start" >&2; exit 1; }
export DATABASE_URL="${line#DATABASE_URL=}"
echo "DATABASE_URL=$DATABASE_URL"

say "Loading demo/schema.sql"
psql -q -v ON_ERROR_STOP=1 "$DATABASE_URL" -f demo/schema.sql

say "lockplane introspect --format yaml  (the catalog as a DSL document)"
"$bin" introspect --format yaml | tee "$work/schema.yaml"

say "lockplane validate schema.yaml  (the document describes the same catalog)"
"$bin" validate "$work/schema.yaml"

say "lockplane introspect  (JSON manifest; hash only shown)"
"$bin" introspect > "$work/manifest.json"
grep '"catalog_hash"' "$work/manifest.json"

say "The hash is recomputable with standard tools: canonical JSON (RFC 8785) + SHA3-256"
python3 - "$work/manifest.json" <<'PY'
import hashlib, json, sys
m = json.load(open(sys.argv[1]))
canon = json.dumps(m["catalog"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
print("python3 recomputed: sha3-256:" + hashlib.sha3_256(canon.encode()).hexdigest())
PY

say "A broken document is refused with file:line:column and path"
printf 'version: 1\nschemas:\n  public:\n    tables:\n      t:\n        columns:\n          - { name: id, type: int, pk: true }\n          - { name: owner, type: uuid, nul: false, references: { table: users, columns: [uid] } }\n' > "$work/broken.yaml"
"$bin" validate "$work/broken.yaml" || true

say "lockplane audit log  (every introspection is an event in the hash-chained ledger)"
"$bin" audit log

say "lockplane audit verify"
"$bin" audit verify
