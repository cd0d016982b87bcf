//! `tools/call` latency over stdio (issue 7): `introspect_catalog` on a 50-table schema and
//! `list_plans`, p50 and p99, each against a reference measured in the same run — the same
//! call made in-process on the embedding API (`Lockplane`), so the ratio is what the MCP layer
//! (JSON-RPC framing, serde, the pipe) adds. `ping` shows the bare protocol round trip.
//!
//! `cargo bench -p lockplane --bench mcp_latency`

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use lockplane_actors::{Config, Lockplane, ShadowConfig};
use lockplane_engine::testkit;
use serde_json::{json, Value};

const TABLES: usize = 50;
const INTROSPECT_CALLS: usize = 200;
const LIST_CALLS: usize = 1000;

struct Server {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
}

impl Server {
    fn start(url: &str, ledger: &std::path::Path, shadow: &str) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lockplane"))
            .arg("--ledger")
            .arg(ledger)
            .args([
                "serve",
                "--stdio",
                "--database-url",
                url,
                "--shadow-url",
                shadow,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn lockplane serve --stdio");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut server = Server {
            child,
            stdin,
            stdout,
            next_id: 1,
        };
        let init = server.request(
            "initialize",
            json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "mcp_latency bench", "version": "0"}
            }),
        );
        assert!(init.get("result").is_some(), "initialize: {init}");
        server.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        server
    }

    fn send(&mut self, message: &Value) {
        let mut line = message.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).expect("write");
        self.stdin.flush().expect("flush");
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).expect("read");
            assert!(n > 0, "the server closed stdout");
            let message: Value = serde_json::from_str(&line).expect("a JSON-RPC message");
            if message.get("id") == Some(&json!(id)) {
                return message;
            }
        }
    }

    fn call(&mut self, tool: &str, arguments: Value) -> Value {
        let response = self.request("tools/call", json!({"name": tool, "arguments": arguments}));
        let result = &response["result"];
        assert!(
            result.get("isError") != Some(&json!(true)) && response.get("error").is_none(),
            "{tool}: {response}"
        );
        response
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// p50 and p99 of `samples`.
fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.50), at(0.99))
}

fn time(n: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    for _ in 0..n / 10 {
        f(); // warm-up
    }
    let samples = (0..n)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    percentiles(samples)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report(name: &str, mcp: (Duration, Duration), reference: (Duration, Duration), what: &str) {
    println!(
        "{name:<20} p50 {:>8.3} ms  p99 {:>8.3} ms   {what}: p50 {:>8.3} ms  p99 {:>8.3} ms   \
         ratio p50 {:.2}×  p99 {:.2}×",
        ms(mcp.0),
        ms(mcp.1),
        ms(reference.0),
        ms(reference.1),
        mcp.0.as_secs_f64() / reference.0.as_secs_f64(),
        mcp.1.as_secs_f64() / reference.1.as_secs_f64(),
    );
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    let cluster = testkit::shared_cluster().expect("cluster");
    let name = runtime
        .block_on(testkit::fresh_database("mcpbench"))
        .expect("database");
    let url = cluster.url(&name);
    let shadow = cluster.url("postgres");
    let mut ddl = String::from("CREATE SCHEMA app;\n");
    for t in 0..TABLES {
        ddl.push_str(&format!(
            "CREATE TABLE app.t{t} (id bigint PRIMARY KEY, tenant_id uuid NOT NULL, \
             name text NOT NULL, created_at timestamptz DEFAULT now(), note text);\n\
             CREATE INDEX t{t}_tenant ON app.t{t} (tenant_id);\n"
        ));
    }
    runtime.block_on(async {
        let client = cluster.connect(&name).await.expect("connect");
        client.batch_execute(&ddl).await.expect("schema");
    });
    let dir = tempfile::tempdir().expect("tempdir");

    // Reference: the same calls on the embedding API, in this process.
    let (lp, db) = runtime.block_on(async {
        let mut config = Config::new(dir.path().join("reference-ledger"));
        config.shadow = ShadowConfig::Url(shadow.clone());
        let lp = Lockplane::open(config).await.expect("open");
        let db = lp.attach(&url, None).await.expect("attach");
        (lp, db)
    });
    let direct_introspect = time(INTROSPECT_CALLS, || {
        runtime
            .block_on(lp.introspect(&db, "bench"))
            .expect("introspect");
    });
    let direct_list = time(LIST_CALLS, || {
        runtime.block_on(lp.list_plans(&db)).expect("list");
    });
    drop(lp);

    let mut server = Server::start(&url, &dir.path().join("mcp-ledger"), &shadow);
    let ping = time(LIST_CALLS, || {
        let r = server.request("ping", json!({}));
        assert!(r.get("result").is_some(), "{r}");
    });
    let mcp_introspect = time(INTROSPECT_CALLS, || {
        server.call("introspect_catalog", json!({}));
    });
    let mcp_list = time(LIST_CALLS, || {
        server.call("list_plans", json!({}));
    });

    println!(
        "tools/call over stdio, {TABLES}-table schema, Postgres {} ({} introspections, {} \
         list_plans)",
        cluster.major_version(),
        INTROSPECT_CALLS,
        LIST_CALLS
    );
    report(
        "introspect_catalog",
        mcp_introspect,
        direct_introspect,
        "in-process",
    );
    report("list_plans", mcp_list, direct_list, "in-process");
    println!(
        "ping                 p50 {:>8.3} ms  p99 {:>8.3} ms",
        ms(ping.0),
        ms(ping.1)
    );
}
