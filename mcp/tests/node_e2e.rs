//! `lockplane serve` driven by the official TypeScript MCP SDK and checked by the MCP Inspector,
//! both from npm (pinned in tests/node/package-lock.json, installed by `make test` with
//! scripts/node-mcp.sh and passed as `LOCKPLANE_MCP_NODE_DIR`). The driver
//! (tests/node/lockplane_e2e.mjs) lists the tools as real clients do, after which the SDK
//! validates every result against its tool's output schema, errors included; it plays a
//! scenario and asserts as it goes. Over stdio (the SDK spawns the server) and streamable HTTP.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{audit_log, database, serve_args, Server, BIN, ROLE};
use serde_json::{json, Value};

const DRIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node/lockplane_e2e.mjs");
const TOKEN: &str = "node-e2e-token-0123456789abcdef0123456789";

/// The directory scripts/node-mcp.sh installed. Unset is a failure, not a skip: these tests are
/// the proof that the TypeScript SDK and the Inspector can use the server.
fn node_dir() -> PathBuf {
    match std::env::var("LOCKPLANE_MCP_NODE_DIR") {
        Ok(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => panic!(
            "LOCKPLANE_MCP_NODE_DIR is not set: these tests drive `lockplane serve` with the \
             TypeScript MCP SDK and the MCP Inspector. Run `make test` (it installs them), or \
             run `export LOCKPLANE_MCP_NODE_DIR=$(bash scripts/node-mcp.sh)` first"
        ),
    }
}

/// Runs one scenario of the driver; returns its final JSON line.
fn drive(config: Value) -> Value {
    let scenario = config["scenario"].as_str().unwrap_or("?").to_owned();
    let out = Command::new("node")
        .arg(DRIVER)
        .arg(config.to_string())
        .env("LOCKPLANE_MCP_NODE_DIR", node_dir())
        .output()
        .expect("run the Node MCP driver");
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

/// `inspector --cli ARGS…`; its exit status, stdout and stderr.
fn inspector(args: &[String]) -> (i32, String, String) {
    let launcher = node_dir()
        .join("node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js");
    let out = Command::new("node")
        .arg(launcher)
        .arg("--cli")
        .args(args)
        .output()
        .expect("run the MCP Inspector");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `tools/list --strict`: the Inspector's schema portability checks, every finding printed;
/// none may remain.
fn assert_strict_clean(target: &[String]) {
    let mut args: Vec<String> = ["--method", "tools/list", "--strict"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(target.iter().cloned());
    let (code, stdout, stderr) = inspector(&args);
    assert_eq!(code, 0, "inspector --strict failed:\n{stderr}\n{stdout}");
    for finding in ["Warning:", "Error:", "Schema portability"] {
        assert!(!stderr.contains(finding), "inspector --strict:\n{stderr}");
    }
    let listed: Value = serde_json::from_str(&stdout).expect("tools/list JSON");
    assert_eq!(
        listed["tools"].as_array().map(Vec::len),
        Some(17),
        "{stdout}"
    );
}

/// The Inspector calling a tool that fails: it shows the error object, code and all.
fn assert_inspector_reads_errors(target: &[String]) {
    let mut args: Vec<String> = [
        "--method",
        "tools/call",
        "--tool-name",
        "apply_plan",
        "--tool-arg",
        "plan_id=sha3-256:0000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(target.iter().cloned());
    let (code, stdout, stderr) = inspector(&args);
    assert_ne!(code, 0, "a tool error exits non-zero: {stdout}");
    let start = stdout.find('{').expect("a JSON result");
    let result: Value = serde_json::from_str(&stdout[start..])
        .unwrap_or_else(|e| panic!("inspector printed no JSON result ({e}):\n{stdout}\n{stderr}"));
    assert_eq!(result["isError"], true, "{result}");
    let error = &result["structuredContent"]["error"];
    assert_eq!(error["code"], "unknown_plan", "{result}");
    assert!(
        error["next"].as_str().unwrap_or("").contains("list_plans"),
        "{result}"
    );
}

fn stdio_command(ledger: &Path, url: &str, shadow: &str) -> Vec<String> {
    let mut command = vec![BIN.to_owned()];
    command.extend(serve_args(ledger, url, shadow));
    command.push("--stdio".to_owned());
    command
}

#[tokio::test]
async fn typescript_sdk_and_inspector_over_stdio() {
    node_dir();
    let (url, shadow) = database("node_stdio").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger");
    let command = stdio_command(&ledger, &url, &shadow);

    let schemas = drive(json!({"transport": "stdio", "scenario": "schemas", "command": command}));
    assert_eq!(schemas["tools"].as_array().map(Vec::len), Some(17));
    assert_eq!(schemas["protocol"], "2025-11-25", "{schemas}");
    let report = drive(json!({
        "transport": "stdio", "scenario": "workflow", "command": command, "role": ROLE,
    }));
    let codes: Vec<&str> = report["codes"]
        .as_array()
        .expect("codes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for code in [
        "apply_plan:needs_confirmation",
        "apply_sql:needs_confirmation",
        "apply_plan:invalid_arguments",
        "apply_sql:result_too_large",
    ] {
        assert!(codes.contains(&code), "{code} not seen: {codes:?}");
    }

    let mut target = vec!["--".to_owned()];
    target.extend(command);
    assert_strict_clean(&target);
    assert_inspector_reads_errors(&target);

    let records = audit_log(&ledger);
    let confirmed = records
        .iter()
        .filter(|r| r["kind"] == "PlanConfirmed" || r["kind"] == "SqlApplied")
        .count();
    assert!(confirmed >= 2, "{records:?}");
}

#[tokio::test]
async fn typescript_sdk_and_inspector_over_http() {
    node_dir();
    let (url, shadow) = database("node_http").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    let mut args = serve_args(&ledger, &url, &shadow);
    args.extend(["--token-file".to_owned(), token_file.display().to_string()]);
    let server = Server::start(&args);

    let http = |scenario: &str| {
        json!({"transport": "http", "scenario": scenario, "url": server.url, "token": TOKEN,
               "role": ROLE})
    };
    let schemas = drive(http("schemas"));
    assert_eq!(schemas["protocol"], "2025-11-25", "{schemas}");
    drive(http("workflow"));

    let target: Vec<String> = [
        "--transport",
        "http",
        "--server-url",
        &server.url,
        "--header",
        &format!("Authorization: Bearer {TOKEN}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_strict_clean(&target);
    assert_inspector_reads_errors(&target);

    let log = server.stderr_so_far();
    let status = server.stop();
    assert!(status.success(), "{status:?}: {log:?}");
    assert!(!log.iter().any(|l| l.contains("panicked")), "{log:?}");
}
