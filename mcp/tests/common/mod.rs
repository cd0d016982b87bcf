//! What the end-to-end tests of `lockplane serve` share: a fresh database with the app role,
//! the server's arguments, and a `lockplane serve --http` child.

#![allow(dead_code)] // each test crate uses its own part

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use lockplane_engine::testkit;

pub const BIN: &str = env!("CARGO_BIN_EXE_lockplane");
/// The role `set_context` may switch to; the drivers' RLS policies grant to it.
pub const ROLE: &str = "lp_mcp_e2e_app";

/// The virtualenv's python with the `mcp` SDK. Unset is a failure, not a skip: the end-to-end
/// tests are the proof that real clients can use the server.
pub fn python() -> String {
    match std::env::var("LOCKPLANE_MCP_PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ => panic!(
            "LOCKPLANE_MCP_PYTHON is not set: these tests drive `lockplane serve` with the Python \
             `mcp` SDK. Run `make test` (it creates the virtualenv), or run \
             `export LOCKPLANE_MCP_PYTHON=$(bash scripts/python-mcp.sh)` first"
        ),
    }
}

/// A fresh database, the app role, and the shared cluster's URL for shadows.
pub async fn database(prefix: &str) -> (String, String) {
    let cluster = testkit::shared_cluster().expect("cluster");
    let name = testkit::fresh_database(prefix).await.expect("database");
    let client = cluster.connect(&name).await.expect("connect");
    // Roles are cluster-wide and tests run in parallel: the loser of a creation race gets a
    // unique violation instead of duplicate_object.
    client
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE {ROLE}; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        ))
        .await
        .expect("role");
    (cluster.url(&name), cluster.url("postgres"))
}

pub fn serve_args(ledger: &Path, url: &str, shadow: &str) -> Vec<String> {
    [
        "--ledger",
        ledger.to_str().expect("utf-8 path"),
        "--ledger-wait",
        "20",
        "--actor",
        "agent:e2e",
        "serve",
        "--database-url",
        url,
        "--shadow-url",
        shadow,
        "--allowed-role",
        ROLE,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `lockplane --ledger LEDGER ARGS…` (a CLI command on the same ledger).
pub fn lockplane(ledger: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("--ledger")
        .arg(ledger)
        .args(["--ledger-wait", "20"])
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run lockplane")
}

/// The ledger's records as `lockplane audit log --json` prints them.
pub fn audit_log(ledger: &Path) -> Vec<serde_json::Value> {
    let log = lockplane(ledger, &["audit", "log", "--json"]);
    assert!(
        log.status.success(),
        "{}",
        String::from_utf8_lossy(&log.stderr)
    );
    let records: serde_json::Value = serde_json::from_slice(&log.stdout).expect("audit log JSON");
    records.as_array().expect("records").clone()
}

/// A `lockplane serve --http` child, killed if the test fails before stopping it.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub addr: String,
    stderr: mpsc::Receiver<String>,
}

impl Server {
    /// Starts on a free port of 127.0.0.1 and waits for the address it prints.
    pub fn start(args: &[String]) -> Server {
        Server::start_at(args, "127.0.0.1:0")
    }

    /// Starts with `--http ADDR` and waits for the address it prints.
    pub fn start_at(args: &[String], addr: &str) -> Server {
        let mut child = Command::new(BIN)
            .args(args)
            .args(["--http", addr])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lockplane serve --http");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        loop {
            let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) else {
                let _ = child.kill();
                let status = child.wait();
                panic!("server did not start ({status:?}): {seen:?}");
            };
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let url = format!("http://{}", rest.split_whitespace().next().unwrap_or(""));
                let addr = url
                    .trim_start_matches("http://")
                    .trim_end_matches("/mcp")
                    .to_owned();
                return Server {
                    child,
                    url,
                    addr,
                    stderr: rx,
                };
            }
            seen.push(line);
        }
    }

    /// The server's standard error since it started listening.
    pub fn stderr_so_far(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }

    /// SIGTERM, then the exit status (graceful shutdown must succeed).
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(killed.map(|s| s.success()).unwrap_or(false));
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("lockplane serve --http did not stop on SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
