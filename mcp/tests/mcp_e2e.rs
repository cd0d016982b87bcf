//! `lockplane serve` driven by a real MCP client that is not ours: the Python `mcp` SDK from
//! PyPI (installed by `make test` into a virtualenv, see scripts/python-mcp.sh, and passed as
//! `LOCKPLANE_MCP_PYTHON`). The driver (tests/python/lockplane_e2e.py) plays a scenario and
//! asserts as it goes; these tests start databases and servers, run it over stdio (the SDK
//! spawns the server) and streamable HTTP (we spawn it), and check what it left behind.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{database, lockplane, python, serve_args, Server, BIN, ROLE};
use lockplane_engine::testkit;
use serde_json::{json, Value};

const DRIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/lockplane_e2e.py");

/// Runs one scenario of the driver; returns its final JSON line.
fn drive(config: Value) -> Value {
    let scenario = config["scenario"].as_str().unwrap_or("?").to_owned();
    let out = Command::new(python())
        .arg(DRIVER)
        .arg(config.to_string())
        .output()
        .expect("run the Python MCP driver");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scenario {scenario} failed:\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    let last = stdout.lines().last().unwrap_or("");
    let report: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("scenario {scenario}: bad report {last:?}: {e}\n{stderr}"));
    assert_eq!(report["ok"], true, "{report}");
    report
}

async fn columns(url: &str, table: &str) -> Vec<(String, String)> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = $1 ORDER BY column_name",
            &[&table],
        )
        .await
        .expect("columns")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// What the workflow leaves in the database and on disk, checked without the server.
async fn check_workflow_left(url: &str, ledger: &Path, report: &Value) {
    assert_eq!(
        columns(url, "items").await,
        vec![
            ("id".to_owned(), "bigint".to_owned()),
            ("name".to_owned(), "text".to_owned()),
            ("note".to_owned(), "integer".to_owned()),
        ],
        "{report}"
    );
    let log = lockplane(ledger, &["audit", "log", "--json"]);
    assert!(
        log.status.success(),
        "{}",
        String::from_utf8_lossy(&log.stderr)
    );
    let records: Value = serde_json::from_slice(&log.stdout).expect("audit log JSON");
    let kinds: Vec<&str> = records
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["kind"].as_str())
        .collect();
    for kind in [
        "PlanProposed",
        "PlanConfirmed",
        "PlanApplied",
        "SqlApplied",
        "ContextSet",
    ] {
        assert!(kinds.contains(&kind), "{kind} not on disk: {kinds:?}");
    }
    let verify = lockplane(ledger, &["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[tokio::test]
async fn stdio_tools_schemas_and_the_plan_workflow() {
    python();
    let (url, shadow) = database("mcp_stdio").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger");
    let mut command = vec![BIN.to_owned()];
    command.extend(serve_args(&ledger, &url, &shadow));
    command.push("--stdio".to_owned());

    let schemas = drive(json!({"transport": "stdio", "scenario": "schemas", "command": command}));
    assert_eq!(schemas["tools"].as_array().map(Vec::len), Some(17));
    let report = drive(json!({
        "transport": "stdio", "scenario": "workflow", "command": command, "role": ROLE,
    }));
    // Over stdio the client and server agree on the newest protocol.
    assert_eq!(report["protocol"], "2026-07-28", "{report}");
    check_workflow_left(&url, &ledger, &report).await;
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
        .batch_execute(
            "CREATE SCHEMA ol; CREATE TABLE ol.orders (id bigint PRIMARY KEY, qty integer); \
             INSERT INTO ol.orders SELECT g, g % 100 FROM generate_series(1, 20000) g",
        )
        .await
        .expect("ol.orders");
    let online = drive(json!({"transport": "stdio", "scenario": "online", "command": command}));
    assert_eq!(online["phase"], "completed", "{online}");
    let wrong: i64 = client
        .query_one(
            "SELECT count(*) FROM ol.orders WHERE quantity IS DISTINCT FROM id % 100",
            &[],
        )
        .await
        .expect("quantity")
        .get(0);
    assert_eq!(wrong, 0, "every row carried over by the online migration");
}

/// One raw HTTP/1.1 initialize POST; the status code.
fn post_initialize(addr: &str, authorization: Option<&str>) -> u16 {
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "raw", "version": "0"}}
    })
    .to_string();
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\n{auth}Content-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("write");
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).expect("status line");
    String::from_utf8_lossy(&head[9..12])
        .parse()
        .expect("status code")
}

#[tokio::test]
async fn http_bearer_token_sessions_contexts_and_workflow() {
    python();
    let (url, shadow) = database("mcp_http").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger");
    let token_file: PathBuf = dir.path().join("token");
    let token = "e2e-token-0123456789abcdef0123456789abcdef";
    std::fs::write(&token_file, format!("{token}\n")).expect("token file");
    let mut args = serve_args(&ledger, &url, &shadow);
    args.extend(["--token-file".to_owned(), token_file.display().to_string()]);
    let server = Server::start(&args);

    // Without the token, with a wrong one, or another scheme: 401; with it: the session starts.
    assert_eq!(post_initialize(&server.addr, None), 401);
    assert_eq!(
        post_initialize(&server.addr, Some("Bearer not-the-token")),
        401
    );
    assert_eq!(
        post_initialize(&server.addr, Some(&format!("Basic {token}"))),
        401
    );
    assert_eq!(
        post_initialize(&server.addr, Some(&format!("Bearer {token}"))),
        200
    );

    let http = |scenario: &str| {
        json!({"transport": "http", "scenario": scenario, "url": server.url, "token": token,
               "role": ROLE})
    };
    let unauthorized = drive(http("unauthorized"));
    assert_eq!(unauthorized["statuses"]["none"], 401);
    let schemas = drive(http("schemas"));
    // HTTP offers the handshake-era protocol: sessions are what keep a context between calls.
    assert_eq!(schemas["protocol"], "2025-11-25", "{schemas}");
    let contexts = drive(http("contexts"));
    assert_eq!(
        (&contexts["a"], &contexts["b"]),
        (&json!("tenant-a"), &json!("tenant-b"))
    );
    let report = drive(http("workflow"));

    let log = server.stderr_so_far();
    let status = server.stop();
    assert!(status.success(), "{status:?}: {log:?}");
    assert!(!log.iter().any(|l| l.contains("panicked")), "{log:?}");
    check_workflow_left(&url, &ledger, &report).await;
}

/// `--stateless`: the SDK negotiates 2026-07-28 over HTTP (no session) and the ledger still
/// names it, from each request's `_meta`.
#[tokio::test]
async fn http_stateless_with_the_python_sdk() {
    python();
    let (url, shadow) = database("mcp_stateless").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "e2e-token-0123456789abcdef0123456789abcdef";
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).expect("token file");
    let mut args = serve_args(&dir.path().join("ledger"), &url, &shadow);
    args.extend([
        "--token-file".to_owned(),
        token_file.display().to_string(),
        "--stateless".to_owned(),
    ]);
    let server = Server::start(&args);
    let report = drive(
        json!({"transport": "http", "scenario": "stateless", "url": server.url,
                              "token": token}),
    );
    assert_eq!(report["protocol"], "2026-07-28", "{report}");
    assert!(server.stop().success());
}

#[tokio::test]
async fn http_generates_a_token_and_prints_it_once() {
    let (url, shadow) = database("mcp_token").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let args = serve_args(&dir.path().join("ledger"), &url, &shadow);
    // The token line comes before the listening line; Server::start drops it, so read both
    // ourselves.
    let mut child = Command::new(BIN)
        .args(&args)
        .args(["--http", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut token = None;
    let mut addr = None;
    for line in lines.by_ref().map_while(Result::ok) {
        if let Some(t) = line.split("bearer token").nth(1) {
            token = t.rsplit(' ').next().map(str::to_owned);
        }
        if let Some(rest) = line.split("listening on http://").nth(1) {
            addr = rest.split("/mcp").next().map(str::to_owned);
            break;
        }
    }
    let (token, addr) = (token.expect("token printed"), addr.expect("address"));
    assert_eq!(token.len(), 64, "{token}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
    assert_eq!(post_initialize(&addr, None), 401);
    assert_eq!(
        post_initialize(&addr, Some(&format!("Bearer {token}"))),
        200
    );
    let _ = child.kill();
    let _ = child.wait();
    // Printed once: nothing else on stderr mentions it.
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(!rest.iter().any(|l| l.contains(&token)), "{rest:?}");
}

#[test]
fn serve_refuses_a_non_loopback_address_without_allow_remote() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .arg("--ledger")
        .arg(dir.path().join("ledger"))
        .args([
            "serve",
            "--http",
            "0.0.0.0:0",
            "--database-url",
            "postgres://nobody@127.0.0.1:1/none",
        ])
        .env("NO_COLOR", "1")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("loopback"), "{stderr}");
}

/// `tools/call` latency over stdio through the Python SDK: `introspect_catalog` on a 50-table
/// schema and `list_plans` with a few plans recorded. Prints p50/p99; asserts nothing about
/// speed (machines differ). Run with
/// `cargo test -p lockplane --release --test mcp_e2e -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "benchmark"]
async fn stdio_latency_benchmark() {
    python();
    let (url, shadow) = database("mcp_bench").await;
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let mut sql = String::from("CREATE TABLE t00 (id bigint PRIMARY KEY, name text NOT NULL);");
    for i in 1..50 {
        sql.push_str(&format!(
            "CREATE TABLE t{i:02} (id bigint PRIMARY KEY, parent bigint REFERENCES t{:02}(id), \
             name text NOT NULL, note text, created_at timestamptz NOT NULL DEFAULT now(), \
             amount numeric(12,2) CHECK (amount >= 0)); \
             CREATE INDEX t{i:02}_name_ix ON t{i:02} (name);",
            i - 1
        ));
    }
    client.batch_execute(&sql).await.expect("50 tables");
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger");
    let mut command = vec![BIN.to_owned()];
    command.extend(serve_args(&ledger, &url, &shadow));
    command.push("--stdio".to_owned());

    // A few plans for list_plans to fold, proposed through the CLI's ledger beforehand.
    let runtime = lockplane_actors::Lockplane::open({
        let mut c = lockplane_actors::Config::new(&ledger);
        c.shadow = lockplane_actors::ShadowConfig::Url(shadow.clone());
        c
    })
    .await
    .expect("runtime");
    let db = runtime.attach(&url, None).await.expect("attach");
    for i in 0..3 {
        let doc = format!(
            "version: 1\nschemas:\n  bench{i}:\n    tables:\n      extra:\n        columns:\n          \
             - {{ name: id, type: bigint, pk: true }}\n"
        );
        runtime
            .propose(&db, "bench.yaml", &doc, "bench")
            .await
            .expect("propose");
    }
    drop(runtime);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let out = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/bench.py"
        ))
        .arg(json!({"command": command, "iterations": 200, "warmup": 10}).to_string())
        .output()
        .expect("run the benchmark driver");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{}", String::from_utf8_lossy(&out.stdout));
}

/// The README's DSL example through MCP on a fresh database (`diff_catalog` → `apply_plan` →
/// `diff_catalog` empty); a role the server lacks is refused at `diff_catalog`, named.
#[tokio::test]
async fn the_readme_example_through_mcp() {
    python();
    let (url, shadow) = database("mcp_readme").await;
    let cluster = testkit::shared_cluster().expect("cluster");
    let client = cluster
        .connect(url.rsplit('/').next().expect("db"))
        .await
        .expect("connect");
    client
        .batch_execute(
            "DO $$ BEGIN CREATE ROLE app_reader NOLOGIN; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
        )
        .await
        .expect("role");
    let document = testkit::readme_dsl_example();
    assert!(!document.is_empty(), "the README's DSL example");
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger");
    let mut command = vec![BIN.to_owned()];
    command.extend(serve_args(&ledger, &url, &shadow));
    command.push("--stdio".to_owned());
    let report = drive(json!({
        "transport": "stdio", "scenario": "readme", "command": command,
        "document": document, "missing_role": format!("nobody_{}", std::process::id()),
    }));
    assert!(report["steps"].as_u64().unwrap_or(0) > 9, "{report}");
}
