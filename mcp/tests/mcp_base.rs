//! MCP `diff_catalog` with documents that carry `base:` (three-way planning through the
//! runtime's propose), driven over stdio with raw JSON-RPC lines (no SDK needed): two
//! documents read at one base each add a table and the second plan drops nothing; the same
//! column changed two ways is a `conflict` naming it; an unknown base is `unknown_base`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{database, serve_args, BIN};
use serde_json::{json, Value};

struct Stdio1 {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    id: u64,
}

impl Stdio1 {
    fn start(ledger: &std::path::Path, url: &str, shadow: &str) -> Stdio1 {
        let mut child = Command::new(BIN)
            .args(serve_args(ledger, url, shadow))
            .arg("--stdio")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn lockplane serve --stdio");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take().expect("stdin");
        let mut server = Stdio1 {
            child,
            stdin,
            lines,
            id: 1,
        };
        server.send(json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "base-agent", "version": "0"}}
        }));
        let reply = server.next();
        assert!(reply["result"]["protocolVersion"].is_string(), "{reply}");
        server.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        server
    }

    fn send(&mut self, message: Value) {
        writeln!(self.stdin, "{message}").expect("write");
        self.stdin.flush().expect("flush");
    }

    fn next(&self) -> Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(60))
            .expect("a reply from the server");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:.200}"))
    }

    /// A tool call's `result` (`isError`, `structuredContent`, …).
    fn call(&mut self, tool: &str, arguments: Value) -> Value {
        self.id += 1;
        self.send(
            json!({"jsonrpc": "2.0", "id": self.id, "method": "tools/call",
                         "params": {"name": tool, "arguments": arguments}}),
        );
        let reply = self.next();
        assert_eq!(reply["id"], self.id, "{reply}");
        reply["result"].clone()
    }

    fn ok(&mut self, tool: &str, arguments: Value) -> Value {
        let result = self.call(tool, arguments);
        assert_eq!(result["isError"], false, "{tool}: {result}");
        result["structuredContent"].clone()
    }

    fn error(&mut self, tool: &str, arguments: Value) -> Value {
        let result = self.call(tool, arguments);
        assert_eq!(result["isError"], true, "{tool}: {result}");
        result["structuredContent"]["error"].clone()
    }
}

impl Drop for Stdio1 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `app.items` as the setup creates it (with `price` of `price_type`), plus `extra` tables.
fn doc(base: &str, price_type: &str, extra: &[&str]) -> String {
    let mut text = format!(
        "version: 1\nbase: \"{base}\"\nschemas:\n  app:\n    tables:\n      items:\n        \
         columns:\n          - {{ name: id, type: bigint, pk: true }}\n          - {{ name: name, \
         type: text }}\n          - {{ name: price, type: {price_type} }}\n"
    );
    for table in extra {
        text.push_str(&format!(
            "      {table}:\n        columns:\n          - {{ name: id, type: bigint, pk: true }}\n"
        ));
    }
    text
}

#[tokio::test]
async fn diff_catalog_merges_a_document_with_its_base_three_ways() {
    let (url, shadow) = database("mcp_base").await;
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
        .batch_execute(
            "CREATE SCHEMA app; \
             CREATE TABLE app.items (id bigint PRIMARY KEY, name text, price int);",
        )
        .await
        .expect("setup");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut mcp = Stdio1::start(&dir.path().join("ledger"), &url, &shadow);

    let seen = mcp.ok("introspect_catalog", json!({}));
    let base = seen["catalog_hash"].as_str().expect("hash").to_owned();

    let a = mcp.ok(
        "diff_catalog",
        json!({"desired": doc(&base, "int", &["from_a"]), "name": "a.yaml"}),
    );
    mcp.ok("apply_plan", json!({"plan_id": a["plan_id"]}));

    // Read at the same base: b's plan keeps a's table.
    let b = mcp.ok(
        "diff_catalog",
        json!({"desired": doc(&base, "int", &["from_b"]), "name": "b.yaml"}),
    );
    assert_eq!(b["requires_confirmation"], false, "{b}");
    let steps = b["plan"]["steps"].as_array().expect("steps");
    assert!(
        steps
            .iter()
            .all(|s| !s["sql"].as_str().unwrap_or("").contains("DROP")),
        "{steps:?}"
    );
    mcp.ok("apply_plan", json!({"plan_id": b["plan_id"]}));

    // Both change price from the base: c makes it bigint and applies, d's numeric conflicts.
    let now = mcp.ok("introspect_catalog", json!({}));
    let now = now["catalog_hash"].as_str().expect("hash").to_owned();
    let c = mcp.ok(
        "diff_catalog",
        json!({"desired": doc(&now, "bigint", &["from_a", "from_b"])}),
    );
    mcp.ok("apply_plan", json!({"plan_id": c["plan_id"]}));
    let d = mcp.error(
        "diff_catalog",
        json!({"desired": doc(&now, "numeric", &["from_a", "from_b"])}),
    );
    assert_eq!(d["code"], "conflict", "{d}");
    let message = d["message"].as_str().unwrap_or("");
    for part in [
        "column app.items.price",
        "\"numeric\"",
        "\"bigint\"",
        "remove `base:`",
    ] {
        assert!(message.contains(part), "`{part}` missing from: {message}");
    }

    let unknown = format!("sha3-256:{}", "cd".repeat(32));
    let e = mcp.error(
        "diff_catalog",
        json!({"desired": doc(&unknown, "int", &[])}),
    );
    assert_eq!(e["code"], "unknown_base", "{e}");
}
