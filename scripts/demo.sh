#!/usr/bin/env bash
# The main job as a user sees it: a throwaway Postgres with an application schema; Lockplane
# reads it (hashed manifest, DSL document), plans the change to demo/desired.yaml, proves it on
# a shadow database, applies it with two-phase confirmation, and the ledger verifies.
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

say "lockplane introspect --format yaml  (the live catalog as a DSL document)"
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
NO_COLOR=1 "$bin" validate "$work/broken.yaml" 2>&1 | head -6 || true

say "lockplane plan -f demo/desired.yaml  (steps, locks, hazards; dry run of the plan and its reverse on a shadow)"
"$bin" plan -f demo/desired.yaml --out "$work/plan.json"
plan_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["plan_id"])' "$work/plan.json")

say "lockplane apply plan.json  (refused: the plan can lose data and is not confirmed)"
NO_COLOR=1 "$bin" apply "$work/plan.json" 2>&1 | head -9 || true

say "lockplane apply plan.json --confirm $plan_id"
"$bin" apply "$work/plan.json" --confirm "$plan_id"

say "Re-introspect: the live hash is the plan's target; planning again finds nothing to do"
"$bin" introspect | grep '"catalog_hash"'
"$bin" plan -f demo/desired.yaml --no-shadow | grep -E "Nothing to do|^[0-9]+\." || true

say "lockplane audit log  (introspections, the proposal, the confirmation, the apply)"
"$bin" audit log

say "lockplane audit verify"
"$bin" audit verify
