// End-to-end driver for `lockplane serve` through the official TypeScript MCP SDK
// (@modelcontextprotocol/sdk from npm, pinned in package-lock.json beside this file and installed
// by scripts/node-mcp.sh into $LOCKPLANE_MCP_NODE_DIR).
//
// Run by mcp/tests/node_e2e.rs: the first argument is a JSON object saying how to reach the
// server and which scenario to play:
//
//   {"transport": "stdio", "command": ["/path/lockplane", ..., "serve", "--stdio"], "scenario": ...}
//   {"transport": "http", "url": "http://127.0.0.1:PORT/mcp", "token": "...", "scenario": ...}
//
// Like real clients, every scenario lists the tools first: from then on the SDK's callTool
// validates each result's structured content against the tool's output schema, errors
// included, and throws (JSON-RPC -32602) on a mismatch. Every check is an assertion; on success
// the last line of stdout is one JSON object ({"ok": true, ...}) the Rust test reads.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const nodeDir = process.env.LOCKPLANE_MCP_NODE_DIR;
assert.ok(nodeDir, "LOCKPLANE_MCP_NODE_DIR is not set (run scripts/node-mcp.sh)");
const require = createRequire(path.join(nodeDir, "package.json"));
const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
const { StdioClientTransport } = require("@modelcontextprotocol/sdk/client/stdio.js");
const { StreamableHTTPClientTransport } = require("@modelcontextprotocol/sdk/client/streamableHttp.js");
const Ajv2020 = require("ajv/dist/2020.js").default;
// The package's `exports` hide its package.json; read it from disk.
const sdkVersion = JSON.parse(
  readFileSync(path.join(nodeDir, "node_modules/@modelcontextprotocol/sdk/package.json"), "utf8"),
).version;

const TOOLS = [
  "apply_plan", "apply_sql", "audit_log", "check_drift", "complete_online", "confirm_plan",
  "diff_catalog", "explain_sql", "introspect_catalog", "list_plans", "merge_plans",
  "plan_online", "policy_evaluate", "rollback_online", "set_context", "start_online",
  "verify_ledger",
];

const ID = "{ name: id, type: bigint, pk: true }";
const NAME = "{ name: name, type: text }";
const LEGACY = "{ name: legacy, type: text }";
const NOTE = "{ name: note, type: text }";

/** A desired schema: `items` with the given columns, and tables `extra_<name>` for each of
 * `extras` (independent changes that merge). */
// The role set_context may switch to (the server's --allowed-role), set from the config.
let ROLE = "";

function doc(columns, extras = []) {
  const cols = columns.map((c) => `          - ${c}`).join("\n");
  const grants = ["select", "insert", "delete"]
    .map((p) => `          - { role: ${ROLE}, privilege: ${p} }`)
    .join("\n");
  const more = extras
    .map((t) => `      ${t}:\n        columns:\n          - ${ID}\n`)
    .join("");
  return `version: 1
schemas:
  public:
    comment: standard public schema
    tables:
      items:
        columns:
${cols}
        grants:
${grants}
${more}`;
}

async function connect(cfg) {
  const client = new Client({ name: "lockplane-node-e2e", version: sdkVersion });
  let transport;
  if (cfg.transport === "stdio") {
    const [command, ...args] = cfg.command;
    transport = new StdioClientTransport({ command, args, stderr: "inherit" });
  } else {
    transport = new StreamableHTTPClientTransport(new URL(cfg.url), {
      requestInit: { headers: { Authorization: `Bearer ${cfg.token}` } },
    });
  }
  let negotiated;
  const set = transport.setProtocolVersion?.bind(transport);
  transport.setProtocolVersion = (v) => {
    negotiated = v;
    set?.(v);
  };
  await client.connect(transport);
  // As real clients do: listing caches the output schemas callTool validates against.
  const { tools } = await client.listTools();
  return { client, tools, protocol: () => negotiated };
}

function textOf(result) {
  return result.content.filter((c) => c.type === "text").map((c) => c.text).join("\n");
}

/** A call that must succeed: its structured content. */
async function ok(client, name, args = {}) {
  const r = await client.callTool({ name, arguments: args });
  assert.ok(!r.isError, `${name}(${JSON.stringify(args)}) failed: ${textOf(r)}`);
  assert.equal(typeof r.structuredContent, "object", `${name}: no structured content`);
  return r.structuredContent;
}

/** A call that must fail with `code`: the error object, checked readable from both the
 * structured content and the text a model is shown. */
async function fails(client, name, args, code) {
  const r = await client.callTool({ name, arguments: args });
  const text = textOf(r);
  assert.equal(r.isError, true, `${name}(${JSON.stringify(args)}) should fail with ${code}: ${text}`);
  const error = r.structuredContent?.error;
  assert.ok(error, `${name}: no structured error: ${JSON.stringify(r)}`);
  assert.equal(error.code, code, `${name}: ${JSON.stringify(error)}`);
  assert.ok(error.message && text.includes(error.message), `${name}: message not in text: ${text}`);
  assert.ok(text.includes(`[${code}]`), `${name}: code not in text: ${text}`);
  if (error.next) assert.ok(text.includes(error.next), `${name}: next not in text: ${text}`);
  if (error.confirmation) {
    assert.ok(text.includes(`Confirmation: ${error.confirmation}`), `${name}: ${text}`);
  }
  return error;
}

async function schemas(cfg) {
  const { client, tools, protocol } = await connect(cfg);
  try {
    assert.deepEqual(tools.map((t) => t.name).sort(), TOOLS);
    // Every schema compiles under Ajv's strict mode (JSON Schema 2020-12: no unknown keywords
    // or formats, no ambiguous types, required properties defined).
    const ajv = new Ajv2020({ strict: true, allErrors: true });
    const checked = [];
    for (const tool of tools) {
      const input = ajv.compile(tool.inputSchema);
      assert.equal(tool.inputSchema.type, "object", tool.name);
      const output = ajv.compile(tool.outputSchema);
      assert.equal(tool.outputSchema.type, "object", tool.name);
      for (const s of [tool.inputSchema, tool.outputSchema]) {
        const text = JSON.stringify(s);
        assert.ok(!text.includes('"format"'), `${tool.name}: a format: ${text}`);
        assert.ok(!/"type":\[/.test(text), `${tool.name}: a type array: ${text}`);
      }
      // The error shape is part of every output schema; an empty object is neither.
      assert.ok(output({ error: { code: "stale_plan", message: "m", next: "n", confirmation: "c" } }),
        `${tool.name}: error rejected: ${JSON.stringify(output.errors)}`);
      assert.ok(!output({}), `${tool.name}: {} accepted`);
      assert.ok(!output({ error: { message: "no code" } }), `${tool.name}: codeless error accepted`);
      if (!(tool.inputSchema.required ?? []).length) assert.ok(input({}), tool.name);
      checked.push(tool.name);
    }
    return { tools: checked, protocol: protocol(), sdk: sdkVersion };
  } finally {
    await client.close();
  }
}

async function workflow(cfg) {
  const { client, protocol } = await connect(cfg);
  const codes = new Set();
  const fail = async (name, args, code) => {
    const e = await fails(client, name, args, code);
    codes.add(`${name}:${code}`);
    return e;
  };
  try {
    // introspect -> diff -> apply
    const before = await ok(client, "introspect_catalog");
    assert.match(before.catalog_hash, /^sha3-256:/);
    const first = await ok(client, "diff_catalog", { desired: doc([ID, NAME, LEGACY]) });
    assert.equal(first.requires_confirmation, false);
    const applied = await ok(client, "apply_plan", { plan_id: first.plan_id });
    assert.equal(applied.resulting_hash, first.predicted_hash);

    // Two-phase confirmation of a data-loss plan: diff_catalog -> apply_plan refused ->
    // apply_plan with `confirm` set to the confirmation the error carries.
    const drop = await ok(client, "diff_catalog", { desired: doc([ID, NAME]) });
    assert.equal(drop.requires_confirmation, true);
    const refused = await fail("apply_plan", { plan_id: drop.plan_id }, "needs_confirmation");
    assert.equal(refused.confirmation, drop.plan_id);
    assert.match(refused.next, /confirm_plan/);
    await fail("apply_plan", { plan_id: drop.plan_id, confirm: "sha3-256:00" }, "wrong_confirmation");
    const dropped = await ok(client, "apply_plan", { plan_id: drop.plan_id, confirm: refused.confirmation });
    assert.equal(dropped.resulting_hash, drop.predicted_hash);

    // With an allow-list, agent SQL runs only under an allowed role: none set is refused.
    await fail("apply_sql", { sql: "SELECT 1" }, "role_required");
    await ok(client, "set_context", { role: ROLE });
    // Two-phase confirmation of a destructive statement: DELETE without WHERE.
    const inserted = await ok(client, "apply_sql", {
      sql: "INSERT INTO items (id, name) VALUES (1, 'a'), (2, 'b')",
    });
    assert.equal(inserted.rows, 2);
    const del = await fail("apply_sql", { sql: "DELETE FROM items" }, "needs_confirmation");
    assert.ok(del.confirmation, JSON.stringify(del));
    assert.match(del.next, /apply_sql/);
    const other = await fail("apply_sql", { sql: "DELETE FROM items WHERE true", confirm: del.confirmation },
      "wrong_confirmation");
    assert.notEqual(other.confirmation, del.confirmation);
    const deleted = await ok(client, "apply_sql", { sql: "DELETE FROM items", confirm: del.confirmation });
    assert.equal(deleted.rows, 2);

    // confirm_plan, and merge_plans of two proposals on the same base.
    const a = await ok(client, "diff_catalog", { desired: doc([ID, NAME], ["extra_a"]) });
    const b = await ok(client, "diff_catalog", { desired: doc([ID, NAME], ["extra_b"]) });
    const merged = await ok(client, "merge_plans", { plan_a: a.plan_id, plan_b: b.plan_id });
    assert.ok(merged.plan.steps.length >= 2, JSON.stringify(merged.plan.steps));
    const confirmed = await ok(client, "confirm_plan", { plan_id: merged.plan_id });
    assert.equal(confirmed.ok, true);
    const mergedApplied = await ok(client, "apply_plan", { plan_id: merged.plan_id });
    assert.equal(mergedApplied.resulting_hash, merged.predicted_hash);
    const plans = (await ok(client, "list_plans")).plans;
    assert.ok(plans.some((p) => p.plan.plan_id === merged.plan_id && p.status.status === "applied"));
    // A plan proposed on the old base is stale once another was applied.
    const extras = ["extra_a", "extra_b"];
    const stale = await ok(client, "diff_catalog", { desired: doc([ID, NAME, NOTE], extras) });
    const conflicting = await ok(client, "diff_catalog", {
      desired: doc([ID, NAME, "{ name: note, type: integer }"], extras),
    });
    await ok(client, "apply_plan", { plan_id: conflicting.plan_id });
    await fail("apply_plan", { plan_id: stale.plan_id }, "stale_plan");

    // The other tools, each with valid input.
    const drift = await ok(client, "check_drift");
    assert.equal(drift.drifted, false);
    const ctx = await ok(client, "set_context", { role: ROLE, tenant_id: "t-1", user_id: "u-1" });
    assert.equal(ctx.context.tenant_id, "t-1");
    const seen = await ok(client, "apply_sql", { sql: "SELECT current_setting('app.tenant_id', true) AS t" });
    assert.deepEqual(seen.result, [["t-1"]]);
    const explained = await ok(client, "explain_sql", { sql: "SELECT * FROM items", analyze: true });
    assert.ok(Array.isArray(explained.plan_json) && explained.plan_json[0].Plan, JSON.stringify(explained));
    const verdict = await ok(client, "policy_evaluate", { table: "items", command: "SELECT", row: { id: 1 } });
    assert.equal(typeof verdict.allowed, "boolean");
    const verified = await ok(client, "verify_ledger");
    assert.equal(verified.ok, true);
    const log = await ok(client, "audit_log", { limit: 200 });
    const kinds = new Set(log.entries.map((e) => e.kind));
    for (const k of ["PlanProposed", "PlanConfirmed", "PlanApplied", "SqlApplied", "ContextSet"]) {
      assert.ok(kinds.has(k), `${k} not in ${[...kinds]}`);
    }
    const actors = new Set(log.entries.filter((e) => e.kind === "PlanApplied").map((e) => e.actor));
    assert.deepEqual([...actors], ["agent:e2e/lockplane-node-e2e"]);

    // Every tool that takes arguments, with arguments of the wrong type or missing: a tool
    // error with code invalid_arguments naming the tool, and the session goes on.
    const invalid = {
      diff_catalog: [{}, { desired: 5 }],
      apply_plan: [{}, { plan_id: 7 }, { plan_id: "x", resume: "yes" }],
      apply_sql: [{}, { sql: ["SELECT 1"] }],
      explain_sql: [{}, { sql: "SELECT 1", analyze: "yes" }],
      policy_evaluate: [{ table: "items" }, { table: "items", command: "FROB" }, { table: "items", command: "SELECT", row: [] }],
      set_context: [{ role: 5 }, { tenant_id: { a: 1 } }],
      confirm_plan: [{}, { plan_id: null }],
      merge_plans: [{ plan_a: "x" }, { plan_a: 1, plan_b: 2 }],
      audit_log: [{ limit: "ten" }, { limit: -1 }, { all_databases: "no" }],
    };
    for (const [name, cases] of Object.entries(invalid)) {
      for (const args of cases) {
        const e = await fail(name, args, "invalid_arguments");
        assert.ok(e.message.includes(name) && e.next.includes(name), JSON.stringify(e));
      }
    }
    // Tools without parameters take any arguments object (there is nothing to get wrong).
    await ok(client, "list_plans", { unexpected: 1 });

    // Every tool's own refusals, read with their code and next step.
    await fail("diff_catalog", { desired: "version: 1\nschemas: 5\n" }, "invalid_document");
    await fail("apply_plan", { plan_id: "sha3-256:" + "0".repeat(64) }, "unknown_plan");
    await fail("confirm_plan", { plan_id: "sha3-256:" + "0".repeat(64) }, "unknown_plan");
    await fail("merge_plans", { plan_a: "sha3-256:" + "0".repeat(64), plan_b: stale.plan_id }, "unknown_plan");
    await fail("apply_sql", { sql: "SELECT pg_read_file('/etc/passwd')" }, "sql_refused");
    await fail("explain_sql", { sql: "DROP TABLE items" }, "sql_refused");
    await fail("set_context", { role: "postgres" }, "role_not_allowed");
    await fail("policy_evaluate", { table: "nope", command: "SELECT" }, "policy");

    // An answer over the server's cap (4 MiB by default): cut, with a clear note, the small
    // fields of what ran, and the beginning of the answer. (apply_sql keeps at most 1 MiB of
    // values, but a control character takes six bytes in JSON.)
    const big = await client.callTool({
      name: "apply_sql",
      arguments: { sql: "SELECT repeat(chr(1), 60000) FROM generate_series(1, 45)" },
    });
    assert.equal(big.isError, true);
    const cut = big.structuredContent.error;
    assert.equal(cut.code, "result_too_large", JSON.stringify(cut));
    assert.match(cut.message, /cap of 4194304 bytes/);
    assert.equal(cut.partial.kind.toLowerCase(), "select");
    assert.equal(cut.partial.rows, 45);
    assert.match(textOf(big), /bytes of the answer \(cut\)/);
    assert.ok(JSON.stringify(big).length < 4 * 1024 * 1024);
    codes.add("apply_sql:result_too_large");

    // Still one healthy session.
    assert.ok((await ok(client, "verify_ledger")).ok);
    return { protocol: protocol(), codes: [...codes].sort(), sdk: sdkVersion };
  } finally {
    await client.close();
  }
}

const SCENARIOS = { schemas, workflow };

const cfg = JSON.parse(process.argv[2]);
ROLE = cfg.role ?? "";
const result = await SCENARIOS[cfg.scenario](cfg);
console.log(JSON.stringify({ ok: true, scenario: cfg.scenario, ...result }));
