"""End-to-end driver for `lockplane serve`, through the Python `mcp` SDK from PyPI.

Run by mcp/tests/mcp_e2e.rs (never by hand unless you want to): the first argument is a JSON
object saying how to reach the server and which scenario to play:

    {"transport": "stdio", "command": ["/path/lockplane", "serve", "--stdio", ...],
     "scenario": "schemas" | "workflow"}
    {"transport": "http", "url": "http://127.0.0.1:PORT/mcp", "token": "...",
     "scenario": "schemas" | "workflow" | "contexts" | "unauthorized" | "stateless", "role": "..."}
    {"transport": "http", "url": ..., "token": ..., "scenario": "agent", "name": "...",
     "document": "..."}  (one agent of mcp/tests/shared_ledger.rs: plans and applies, reports)

Every check is an assertion with a message; on success the last line of stdout is one JSON
object (`{"ok": true, ...}`) the Rust test reads. Any failure exits non-zero with a traceback.
"""

import asyncio
import json
import sys
from contextlib import asynccontextmanager

import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

TOOLS = {
    "introspect_catalog": ([], ["catalog", "catalog_hash"]),
    "diff_catalog": (["desired"], ["plan", "predicted_hash", "plan_id", "requires_confirmation"]),
    "apply_plan": (["plan_id"], ["resulting_hash", "receipts"]),
    "apply_sql": (["sql"], ["resulting_hash", "receipt", "result"]),
    "explain_sql": (["sql"], ["plan_json"]),
    "policy_evaluate": (["table", "command"], ["predicate", "allowed", "verdict"]),
    "set_context": ([], ["ok"]),
    "confirm_plan": (["plan_id"], ["ok", "plan_id"]),
    "list_plans": ([], ["plans"]),
    "merge_plans": (["plan_a", "plan_b"], ["plan", "predicted_hash"]),
    "verify_ledger": ([], ["ok", "records_checked"]),
    "audit_log": ([], ["entries"]),
    "check_drift": ([], ["drifted", "live_hash"]),
    "plan_online": (["desired", "version"], ["plan", "version_schema"]),
    "start_online": (["version"], ["phase", "outcome"]),
    "complete_online": (["version"], ["phase", "outcome"]),
    "rollback_online": (["version"], ["phase", "outcome"]),
}

# Optional inputs each tool must declare (beyond the required ones).
OPTIONAL_INPUTS = {
    "apply_plan": ["confirm"],
    "apply_sql": ["confirm"],
    "explain_sql": ["analyze"],
    "policy_evaluate": ["row", "context"],
    "set_context": ["role", "user_id", "tenant_id"],
    "audit_log": ["limit"],
    "plan_online": ["name"],
    "start_online": ["batch_size"],
}


def doc(role, items_columns):
    """A desired schema: `items` with the given columns, `todos` with tenant RLS granted to
    `role`."""
    cols = "\n".join(f"          - {c}" for c in items_columns)
    return f"""version: 1
schemas:
  public:
    comment: standard public schema
    tables:
      items:
        columns:
{cols}
      todos:
        columns:
          - {{ name: id, type: bigint, pk: true }}
          - {{ name: tenant_id, type: text, not_null: true }}
          - {{ name: title, type: text }}
        grants:
          - {{ role: {role}, privilege: select }}
          - {{ role: {role}, privilege: insert }}
          - {{ role: {role}, privilege: delete }}
        rls:
          enabled: true
          policies:
            - {{ name: tenant_isolation, for: all, using: "tenant_id = current_setting('app.tenant_id', true)" }}
"""


ID = "{ name: id, type: bigint, pk: true }"
NAME = "{ name: name, type: text }"
LEGACY = "{ name: legacy, type: text }"
NOTE_TEXT = "{ name: note, type: text }"
NOTE_INT = "{ name: note, type: integer }"


@asynccontextmanager
async def connect(cfg, token=None):
    if cfg["transport"] == "stdio":
        command = cfg["command"]
        params = StdioServerParameters(command=command[0], args=command[1:], env=cfg.get("env") or {})
        async with Client(params) as client:
            yield client
    else:
        token = cfg["token"] if token is None else token
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
        async with Client(streamable_http_client(cfg["url"], http_client=http)) as client:
            yield client


async def ok(client, name, args=None):
    """Calls a tool that must succeed; returns its structured content."""
    r = await client.call_tool(name, args or {})
    text = " ".join(getattr(c, "text", "") for c in r.content)
    assert not r.is_error, f"{name}({args}) failed: {text}"
    assert isinstance(r.structured_content, dict), f"{name}: no structured content: {text}"
    return r.structured_content


async def fails(client, name, args, code):
    """Calls a tool that must fail with `code`; returns its message and next step."""
    err = await fails_with(client, name, args, code)
    return err["message"] + " " + err.get("next", "")


async def fails_with(client, name, args, code):
    """Calls a tool that must fail with `code`; returns the structured error."""
    r = await client.call_tool(name, args)
    text = " ".join(getattr(c, "text", "") for c in r.content)
    assert r.is_error, f"{name}({args}) should have failed with {code}, got {r.structured_content}"
    err = (r.structured_content or {}).get("error", {})
    assert err.get("code") == code, f"{name}: expected code {code}, got {err} / {text}"
    assert err.get("message") and err["message"] in text, f"{name}: message not in text: {text}"
    return err


async def schemas(cfg):
    async with connect(cfg) as client:
        instructions = client.instructions or ""
        for word in ("introspect_catalog", "diff_catalog", "confirm_plan", "apply_plan", "audit_log",
                     "Access mode: schema"):
            assert word in instructions, f"instructions do not mention {word!r}: {instructions}"
        listed = (await client.list_tools()).tools
        names = sorted(t.name for t in listed)
        assert names == sorted(TOOLS), f"tools: {names}"
        for tool in listed:
            required, outputs = TOOLS[tool.name]
            assert tool.description and len(tool.description) > 60, f"{tool.name}: short description"
            schema = tool.input_schema
            assert schema.get("type") == "object", f"{tool.name}: input schema {schema}"
            props = schema.get("properties", {})
            for field in required:
                assert field in props, f"{tool.name}: input lacks {field}: {props}"
                assert field in schema.get("required", []), f"{tool.name}: {field} not required"
                assert props[field].get("description"), f"{tool.name}.{field}: no description"
            for field in OPTIONAL_INPUTS.get(tool.name, []):
                assert field in props, f"{tool.name}: input lacks optional {field}"
                assert field not in schema.get("required", []), f"{tool.name}: {field} required"
            out = tool.output_schema
            assert out and out.get("type") == "object", f"{tool.name}: output schema {out}"
            # A result or the error object: the output schema admits both (a tool error carries
            # {"error": {...}} as structured content).
            result, error = out["oneOf"]
            for field in outputs:
                assert field in result.get("properties", {}), f"{tool.name}: output lacks {field}"
            assert error["required"] == ["error"], f"{tool.name}: error branch {error}"
            assert '"format":' not in json.dumps(schema) + json.dumps(out), f"{tool.name}: a format"
        by_name = {t.name: t for t in listed}
        command = json.dumps(by_name["policy_evaluate"].input_schema)
        for c in ("SELECT", "INSERT", "UPDATE", "DELETE"):
            assert c in command, f"policy_evaluate.command does not list {c}"
        assert by_name["explain_sql"].input_schema["properties"]["analyze"].get("default") is False
        assert by_name["introspect_catalog"].annotations.read_only_hint is True
        assert by_name["apply_plan"].annotations.destructive_hint is True
        return {"tools": names, "protocol": client.protocol_version}


async def workflow(cfg):
    role = cfg["role"]
    async with connect(cfg) as client:
        before = await ok(client, "introspect_catalog")
        assert before["catalog_hash"].startswith("sha3-256:")
        assert "items" not in before["catalog"]["schemas"].get("public", {}).get("tables", {})

        # introspect -> diff -> apply -> audit -> verify
        proposal = await ok(client, "diff_catalog", {"desired": doc(role, [ID, NAME, LEGACY])})
        assert proposal["requires_confirmation"] is False, proposal["plan"]["hazards"]
        assert proposal["plan"]["plan_id"] == proposal["plan_id"]
        assert proposal["plan"]["base_hash"] == before["catalog_hash"]
        assert any("CREATE TABLE" in s["sql"] for s in proposal["plan"]["steps"])
        applied = await ok(client, "apply_plan", {"plan_id": proposal["plan_id"]})
        assert applied["resulting_hash"] == proposal["predicted_hash"], (applied, proposal)
        assert applied["receipts"] and applied["receipts"][0]["steps"], applied
        after = await ok(client, "introspect_catalog")
        assert after["catalog_hash"] == applied["resulting_hash"]
        tables = after["catalog"]["schemas"]["public"]["tables"]
        assert {"items", "todos"} <= set(tables), tables.keys()
        log = await ok(client, "audit_log", {"limit": 100})
        kinds = [e["kind"] for e in log["entries"]]
        for kind in ("CatalogIntrospected", "PlanProposed", "ApplyStarted", "PlanApplied"):
            assert kind in kinds, f"{kind} not in audit log {kinds}"
        assert [e["seq"] for e in log["entries"]] == sorted(e["seq"] for e in log["entries"])
        # Each call is recorded under the server's --actor and the client's own name: from the
        # initialize handshake over HTTP, from each request's _meta (clientInfo) over stdio,
        # where the SDK negotiates 2026-07-28, which has no handshake.
        applied = [e for e in log["entries"] if e["kind"] == "PlanApplied"]
        expected = "agent:e2e/mcp"
        assert applied and all(e["actor"] == expected for e in applied), (expected, applied)
        verified = await ok(client, "verify_ledger")
        assert verified["ok"] and verified["records_checked"] >= 4 and not verified["problems"], verified

        # Data loss: dropping a column needs an explicit confirmation.
        drop = await ok(client, "diff_catalog", {"desired": doc(role, [ID, NAME])})
        assert drop["requires_confirmation"] is True, drop
        assert any("DROP COLUMN" in s["sql"] for s in drop["plan"]["steps"]), drop["plan"]["steps"]
        err = await fails_with(client, "apply_plan", {"plan_id": drop["plan_id"]}, "needs_confirmation")
        assert "confirm_plan" in err["next"] and drop["plan_id"] in err["message"], err
        assert err["confirmation"] == drop["plan_id"], err
        await fails(client, "apply_plan", {"plan_id": drop["plan_id"], "confirm": "sha3-256:00"},
                    "wrong_confirmation")
        plans = (await ok(client, "list_plans"))["plans"]
        mine = [p for p in plans if p["plan"]["plan_id"] == drop["plan_id"]]
        assert mine and mine[0]["status"]["status"] == "proposed", mine
        confirmed = await ok(client, "confirm_plan", {"plan_id": drop["plan_id"]})
        assert confirmed["ok"] is True
        dropped = await ok(client, "apply_plan", {"plan_id": drop["plan_id"]})
        assert dropped["resulting_hash"] == drop["predicted_hash"]
        cols = (await ok(client, "introspect_catalog"))["catalog"]["schemas"]["public"]["tables"]["items"]["columns"]
        assert "legacy" not in cols and "name" in cols, cols.keys()

        # A stale plan: two proposals on the same base change items.note differently; once
        # one is applied the other cannot be rebased and must be proposed again.
        as_text = await ok(client, "diff_catalog", {"desired": doc(role, [ID, NAME, NOTE_TEXT])})
        as_int = await ok(client, "diff_catalog", {"desired": doc(role, [ID, NAME, NOTE_INT])})
        merge_msg = await fails(client, "merge_plans",
                                {"plan_a": as_text["plan_id"], "plan_b": as_int["plan_id"]}, "conflict")
        assert "note" in merge_msg, merge_msg
        won = await ok(client, "apply_plan", {"plan_id": as_int["plan_id"]})
        stale = await fails(client, "apply_plan", {"plan_id": as_text["plan_id"]}, "stale_plan")
        assert "stale" in stale and won["resulting_hash"] in stale and "diff_catalog again" in stale, stale
        drift = await ok(client, "check_drift")
        assert drift["drifted"] is False and drift["live_hash"] == won["resulting_hash"], drift

        # Arguments that do not fit the input schema are a tool error naming the field, with
        # the code invalid_arguments; the session goes on.
        bad = await fails_with(client, "apply_sql", {}, "invalid_arguments")
        assert "sql" in bad["message"] and "apply_sql" in bad["next"], bad
        bad = await fails_with(client, "policy_evaluate", {"table": "todos", "command": "FROB"},
                               "invalid_arguments")
        assert "SELECT" in bad["message"], bad
        await fails_with(client, "audit_log", {"limit": "ten"}, "invalid_arguments")
        assert (await ok(client, "list_plans"))["plans"]

        # Context, SQL and policies.
        ctx = await ok(client, "set_context", {"role": role, "tenant_id": "t-a", "user_id": "u-1"})
        assert ctx["ok"] is True and ctx["context"]["tenant_id"] == "t-a"
        await fails(client, "set_context", {"role": "postgres"}, "role_not_allowed")
        seen = await ok(client, "apply_sql", {"sql": "SELECT current_setting('app.tenant_id', true) AS t"})
        assert seen["result"] == [["t-a"]] and seen["columns"] == ["t"], seen
        who = await ok(client, "apply_sql", {"sql": "SELECT current_user::text"})
        assert who["result"] == [[role]], who
        explained = await ok(client, "explain_sql", {"sql": "SELECT * FROM todos WHERE title = 'x'"})
        assert "Plan" in json.dumps(explained["plan_json"]), explained
        analyzed = await ok(client, "explain_sql", {"sql": "SELECT 1", "analyze": True})
        assert "Actual" in json.dumps(analyzed["plan_json"]), analyzed
        refused = await fails(client, "apply_sql", {"sql": "SELECT pg_read_file('/etc/passwd')"}, "sql_refused")
        assert "pg_read_file" in refused, refused
        await fails(client, "apply_sql", {"sql": "SELECT 1; SELECT 2"}, "sql_refused")
        # Row-level security as Postgres enforces it, through apply_sql under the context.
        inserted = await ok(client, "apply_sql", {"sql": "INSERT INTO todos (id, tenant_id, title) VALUES (1, 't-a', 'mine')"})
        assert inserted["rows"] == 1, inserted
        rls = await fails(client, "apply_sql", {"sql": "INSERT INTO todos (id, tenant_id, title) VALUES (2, 't-b', 'theirs')"}, "postgres_error")
        assert "row-level security" in rls, rls
        visible = await ok(client, "apply_sql", {"sql": "SELECT count(*) FROM todos"})
        assert visible["result"] == [["1"]], visible
        await ok(client, "set_context", {"role": role, "tenant_id": "t-b"})
        visible = await ok(client, "apply_sql", {"sql": "SELECT count(*) FROM todos"})
        assert visible["result"] == [["0"]], visible
        await ok(client, "set_context", {"role": role, "tenant_id": "t-a", "user_id": "u-1"})
        mine = await ok(client, "policy_evaluate", {
            "table": "public.todos", "command": "SELECT", "row": {"id": 1, "tenant_id": "t-a", "title": "x"}})
        assert mine["allowed"] is True and "current_setting" in mine["predicate"], mine
        other = await ok(client, "policy_evaluate", {
            "table": "todos", "command": "select", "row": {"id": 2, "tenant_id": "t-b", "title": "y"}})
        assert other["allowed"] is False, other
        override = await ok(client, "policy_evaluate", {
            "table": "todos", "command": "INSERT", "row": {"id": 2, "tenant_id": "t-b", "title": "y"},
            "context": {"role": role, "tenant_id": "t-b"}})
        assert override["allowed"] is True, override
        await fails(client, "policy_evaluate", {"table": "nope", "command": "SELECT", "row": {}}, "policy")

        # With an allow-list, a context without a role is refused: agent SQL never runs as
        # the server's own (owner) connection.
        await fails_with(client, "set_context", {}, "role_required")
        # A destructive statement: refused with a confirmation id bound to its text, then run
        # (under the role and tenant t-a, which sees one row).
        await ok(client, "set_context", {"role": role, "tenant_id": "t-a"})
        err = await fails_with(client, "apply_sql", {"sql": "DELETE FROM todos"}, "needs_confirmation")
        assert err.get("confirmation") and "apply_sql" in err["next"], err
        # The confirmation is bound to the exact text: another statement needs its own.
        other = await fails_with(client, "apply_sql",
                                 {"sql": "DELETE FROM todos WHERE true", "confirm": err["confirmation"]},
                                 "wrong_confirmation")
        assert other["confirmation"] != err["confirmation"], other
        deleted = await ok(client, "apply_sql", {"sql": "DELETE FROM todos", "confirm": err["confirmation"]})
        assert deleted["rows"] == 1, deleted

        # Everything is in the ledger, which still verifies.
        kinds = [e["kind"] for e in (await ok(client, "audit_log", {"limit": 1000}))["entries"]]
        for kind in ("PlanConfirmed", "ContextSet", "SqlApplied"):
            assert kind in kinds, f"{kind} not in audit log {kinds}"
        verified = await ok(client, "verify_ledger")
        assert verified["ok"], verified
        return {
            "protocol": client.protocol_version,
            "resulting_hash": won["resulting_hash"],
            "records": verified["records_checked"],
            "kinds": sorted(set(kinds)),
        }


async def tenant_of(client):
    r = await ok(client, "apply_sql", {"sql": "SELECT current_setting('app.tenant_id', true) AS t"})
    return r["result"][0][0]


async def contexts(cfg):
    """Two (then three) sessions on one server: each sees its own context, never another's."""
    async with connect(cfg) as a, connect(cfg) as b:
        role = cfg["role"]
        await ok(a, "set_context", {"role": role, "tenant_id": "tenant-a", "user_id": "alice"})
        await ok(b, "set_context", {"role": role, "tenant_id": "tenant-b", "user_id": "bob"})
        seen_a, seen_b = await asyncio.gather(tenant_of(a), tenant_of(b))
        assert (seen_a, seen_b) == ("tenant-a", "tenant-b"), (seen_a, seen_b)
        await ok(a, "set_context", {"role": role, "tenant_id": "tenant-a2"})
        assert await tenant_of(b) == "tenant-b"
        assert await tenant_of(a) == "tenant-a2"
        async with connect(cfg) as c:
            await fails_with(c, "apply_sql", {"sql": "SELECT 1"}, "role_required")
            await ok(c, "set_context", {"role": role})
            fresh = await tenant_of(c)
            assert fresh in ("", None), f"a new session sees {fresh!r}"
        user = await ok(b, "apply_sql", {"sql": "SELECT current_setting('app.user_id', true)"})
        assert user["result"] == [["bob"]], user
        return {"a": seen_a, "b": seen_b, "fresh": fresh}


async def unauthorized(cfg):
    """Without the token, or with a wrong one, the server answers 401 and no session starts."""
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "e2e", "version": "0"}}}
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    statuses = {}
    async with httpx2.AsyncClient() as http:
        for label, extra in (("none", {}), ("wrong", {"Authorization": "Bearer " + "0" * 64}),
                             ("basic", {"Authorization": "Basic " + cfg["token"]})):
            r = await http.post(cfg["url"], json=init, headers={**headers, **extra})
            statuses[label] = r.status_code
            assert r.status_code == 401, f"{label}: {r.status_code} {r.text}"
            assert "mcp-session-id" not in r.headers
        r = await http.post(cfg["url"], json=init, headers={**headers, "Authorization": "Bearer " + cfg["token"]})
        statuses["right"] = r.status_code
        assert r.status_code == 200, f"with the token: {r.status_code} {r.text}"
    try:
        async with connect(cfg, token="wrong-token"):
            raise AssertionError("a client with a wrong token connected")
    except AssertionError:
        raise
    except Exception:  # the SDK raises its own error for the 401; any is fine
        pass
    return {"statuses": statuses}


async def readme(cfg):
    """The README's DSL example (a policy calling tenant_id(), a grant to app_reader) through
    diff_catalog -> apply_plan on a fresh database: the helpers are steps of the plan, the
    apply reaches the proven target, and planning again finds nothing. A document naming roles
    the server lacks is refused at diff_catalog, naming each."""
    async with connect(cfg) as client:
        proposal = await ok(client, "diff_catalog", {"desired": cfg["document"]})
        sqls = [s["sql"] for s in proposal["plan"]["steps"]]
        assert any('"lockplane"."tenant_id"' in s and s.startswith("CREATE OR REPLACE FUNCTION") for s in sqls), sqls
        applied = await ok(client, "apply_plan", {"plan_id": proposal["plan_id"]})
        assert applied["resulting_hash"] == proposal["predicted_hash"], (applied, proposal)
        again = await ok(client, "diff_catalog", {"desired": cfg["document"]})
        assert again["plan"]["steps"] == [], again["plan"]["steps"]
        missing = cfg["document"].replace("role: app_reader", "role: " + cfg["missing_role"])
        message = await fails(client, "diff_catalog", {"desired": missing}, "plan_refused")
        assert cfg["missing_role"] in message and "CREATE ROLE" in message, message
        return {"steps": len(sqls)}


async def stateless(cfg):
    """Against `serve --http --stateless` the SDK speaks 2026-07-28: no session, the client named
    in every request's _meta, and set_context refused since nothing outlives a request."""
    async with connect(cfg) as client:
        introspected = await ok(client, "introspect_catalog")
        err = await fails_with(client, "set_context", {"tenant_id": "t"}, "needs_session")
        assert "policy_evaluate" in err["next"], err
        log = await ok(client, "audit_log", {"limit": 10})
        mine = [e for e in log["entries"] if e["seq"] == introspected["seq"]]
        assert mine and mine[0]["actor"] == "agent:e2e/mcp", mine
        return {"protocol": client.protocol_version, "actor": mine[0]["actor"]}


async def agent(cfg):
    """One agent of the shared-ledger scenario (scenarios/tests/shared_ledger.rs): introduces
    itself as cfg["name"], plans cfg["document"] (a document with its `base:`) and applies it.
    Reports the outcome instead of asserting it: the Rust test knows which agents conflict."""
    from mcp.types import Implementation

    token = cfg["token"]
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    info = Implementation(name=cfg["name"], version="0")
    async with Client(streamable_http_client(cfg["url"], http_client=http), client_info=info,
                      read_timeout_seconds=300) as client:
        for stage, name, args in (("plan", "diff_catalog", {"desired": cfg["document"]}),):
            r = await client.call_tool(name, args)
            if r.is_error:
                err = (r.structured_content or {}).get("error", {})
                return {"outcome": "refused", "stage": stage, "code": err.get("code"),
                        "message": err.get("message", "")}
            plan = r.structured_content
        r = await client.call_tool("apply_plan", {"plan_id": plan["plan_id"]})
        if r.is_error:
            err = (r.structured_content or {}).get("error", {})
            return {"outcome": "refused", "stage": "apply", "code": err.get("code"),
                    "message": err.get("message", "")}
        verified = await ok(client, "verify_ledger")
        assert verified["ok"], verified
        return {"outcome": "applied", "resulting_hash": r.structured_content["resulting_hash"]}


ONLINE_V2 = """version: 1
schemas:
  ol:
    tables:
      orders:
        columns:
          - { name: id, type: bigint, pk: true }
          - { name: quantity, renamed_from: qty, type: bigint, up: "qty::bigint", down: "quantity::integer" }
"""


async def online(cfg):
    """An online migration through the tools: plan_online, start_online, complete_online, on
    `ol.orders(id, qty)` of 20000 rows (made by the Rust side)."""
    async with connect(cfg) as client:
        # A document an online migration cannot carry is refused by name.
        await fails(client, "plan_online", {"desired": ONLINE_V2.replace(', down: "quantity::integer"', ""),
                                             "version": "v2"}, "online_migration")
        planned = await ok(client, "plan_online", {"desired": ONLINE_V2, "version": "v2"})
        assert planned["version_schema"] == "ol_v2", planned
        assert any("_lp_new_qty" in s for s in planned["plan"]["expand"]), planned
        started = await ok(client, "start_online", {"version": "v2", "batch_size": 3000})
        assert started["phase"] == "backfilled", started
        assert started["outcome"]["rows_filled"] == 20000, started
        completed = await ok(client, "complete_online", {"version": "v2"})
        assert completed["phase"] == "completed", completed
        after = await ok(client, "introspect_catalog")
        columns = after["catalog"]["schemas"]["ol"]["tables"]["orders"]["columns"]
        assert columns["quantity"]["type"] == "bigint", columns
        assert "qty" not in columns, columns
        await fails(client, "rollback_online", {"version": "v2"}, "online_migration")
        log = await ok(client, "audit_log", {"limit": 100})
        kinds = [e["kind"] for e in log["entries"]]
        assert kinds.count("OnlineMigrated") >= 4, kinds
        return {"phase": completed["phase"]}


SCENARIOS = {"agent": agent, "online": online, "schemas": schemas, "workflow": workflow, "contexts": contexts, "unauthorized": unauthorized,
             "readme": readme, "stateless": stateless}


def main():
    cfg = json.loads(sys.argv[1])
    result = asyncio.run(SCENARIOS[cfg["scenario"]](cfg))
    print(json.dumps({"ok": True, "scenario": cfg["scenario"], **result}))


if __name__ == "__main__":
    main()
