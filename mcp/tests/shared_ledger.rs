//! One ledger of record for every kind of actor (issue 14): eight CLI processes (each in its
//! own working directory), eight MCP agents over HTTP through two `lockplane serve` processes,
//! and one embedding program, all at once against one database, with one ledger: a Postgres
//! control database, and again a directory the first server holds and serves as the hub.
//!
//! Each starts from the same document, introspected (with its `base:`) before anyone applied,
//! and adds its own table; two CLI actors also widen the same column, each differently. Planning
//! merges three ways (base, document, live) and applies rebase under the database's apply
//! lock, so at the end every table of a non-conflicting actor exists, exactly one of the two
//! conflicting actors got through and the other was refused naming the column, Postgres' own
//! DDL log shows no two DDL transactions overlapping, and the one chain verifies from every
//! process and names all seventeen actors.

mod common;

use std::path::Path;
use std::process::Command;

use common::{lockplane, python, Server, BIN};
use lockplane_actors::{Config, Lockplane, ShadowConfig};
use lockplane_engine::testkit;
use serde_json::{json, Value};

const DRIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/lockplane_e2e.py");

/// `document` (the DSL as JSON) with table `name` added and, when given, `t.shared` retyped.
fn with_table(document: &Value, name: &str, shared_type: Option<&str>) -> String {
    let mut doc = document.clone();
    let tables = &mut doc["schemas"]["public"]["tables"];
    tables[name] = json!({"columns": [{"name": "id", "type": "integer", "pk": true}]});
    if let Some(ty) = shared_type {
        let columns = tables["t"]["columns"].as_array_mut().expect("t's columns");
        for column in columns {
            if column["name"] == "shared" {
                column["type"] = json!(ty);
            }
        }
    }
    serde_json::to_string_pretty(&doc).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seventeen_actors_share_one_postgres_ledger() {
    let cluster = testkit::shared_cluster().expect("cluster");
    let ledger = cluster.url(&testkit::fresh_database("shared_ledger").await.expect("db"));
    let dir = tempfile::tempdir().expect("tempdir");
    seventeen_actors(&ledger, dir.path()).await;
}

/// The same with a ledger directory: the first `serve` to open it holds it and is the hub
/// every other process (the second server, the CLI processes, this test's embedded runtime)
/// goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seventeen_actors_share_one_ledger_directory_through_its_hub() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger").display().to_string();
    seventeen_actors(&ledger, dir.path()).await;
}

/// Seventeen applies queue for one database's apply lock, each rebased and proven on the
/// shadow once it gets it: on two busy cores that is more than the 30 s default wait.
const LOCK_WAIT_SECS: &str = "300";

async fn seventeen_actors(ledger_url: &str, dir: &Path) {
    let ledger_url = ledger_url.to_owned();
    let python = python();
    let cluster = testkit::shared_cluster().expect("cluster");
    let app = testkit::fresh_database("shared_app").await.expect("app db");
    let client = cluster.connect(&app).await.expect("connect");
    client
        .batch_execute(testkit::DDL_LOG)
        .await
        .expect("ddl log");
    client
        .batch_execute("CREATE TABLE public.t (id int PRIMARY KEY, shared varchar(5))")
        .await
        .expect("setup");
    let url = cluster.url(&app);
    let ledger = Path::new(&ledger_url);
    let shadow = cluster.url("postgres");

    // One introspection before anyone applies: the document every actor starts from.
    let read = lockplane(
        ledger,
        &["introspect", "--format", "yaml", "--database-url", &url],
    );
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let yaml = String::from_utf8_lossy(&read.stdout).into_owned();
    let document: Value = serde_saphyr::from_str(&yaml).expect("the YAML document");
    assert!(
        document["base"].is_string(),
        "introspect records its base: {yaml}"
    );

    // Two servers on the one ledger, four agents each.
    let token = "shared-ledger-token-0123456789abcdef0123";
    let token_file = dir.join("token");
    std::fs::write(&token_file, token).expect("token");
    let serve = |actor: &str| {
        Server::start(&[
            "--ledger".into(),
            ledger_url.clone(),
            "--actor".into(),
            actor.into(),
            "serve".into(),
            "--database-url".into(),
            url.clone(),
            "--shadow-url".into(),
            shadow.clone(),
            "--token-file".into(),
            token_file.display().to_string(),
            "--lock-wait".into(),
            LOCK_WAIT_SECS.into(),
        ])
    };
    let servers = [serve("mcp:a"), serve("mcp:b")];

    let mut actors = Vec::new();
    // Eight CLI processes, each in its own directory; cli0 and cli1 retype the same column.
    for i in 0..8 {
        let work = dir.join(format!("cli{i}"));
        std::fs::create_dir_all(&work).expect("dir");
        let shared_type = match i {
            0 => Some("character varying(10)"),
            1 => Some("character varying(20)"),
            _ => None,
        };
        let doc = with_table(&document, &format!("cli{i}"), shared_type);
        std::fs::write(work.join("schema.json"), doc).expect("doc");
        let (ledger_url, url, shadow) = (ledger_url.clone(), url.clone(), shadow.clone());
        actors.push(std::thread::spawn(move || {
            let run = |args: &[&str]| {
                Command::new(BIN)
                    .current_dir(&work)
                    .args(["--ledger", &ledger_url, "--actor", &format!("cli:{i}")])
                    .args(args)
                    .env("DATABASE_URL", &url)
                    .env("LOCKPLANE_LOCK_WAIT", LOCK_WAIT_SECS)
                    .env("NO_COLOR", "1")
                    .output()
                    .expect("run lockplane")
            };
            let planned = run(&[
                "plan",
                "-f",
                "schema.json",
                "--out",
                "plan.json",
                "--shadow-url",
                &shadow,
            ]);
            if !planned.status.success() {
                return (format!("cli:{i}"), false, text(&planned.stderr));
            }
            let applied = run(&["apply", "plan.json"]);
            (
                format!("cli:{i}"),
                applied.status.success(),
                text(&applied.stderr) + &text(&applied.stdout),
            )
        }));
    }
    // Eight agents over MCP, through the Python SDK.
    for i in 0..8 {
        let server = &servers[i % 2];
        let config = json!({"scenario": "agent", "transport": "http", "url": server.url,
                            "token": token, "name": format!("agent{i}"),
                            "document": with_table(&document, &format!("agent{i}"), None)});
        let python = python.clone();
        actors.push(std::thread::spawn(move || {
            let out = Command::new(python)
                .arg(DRIVER)
                .arg(config.to_string())
                .output()
                .expect("run the Python MCP driver");
            let last = text(&out.stdout).lines().last().unwrap_or("").to_owned();
            let applied = serde_json::from_str::<Value>(&last)
                .map(|r| r["outcome"] == "applied")
                .unwrap_or(false);
            (format!("agent{i}"), applied, last + &text(&out.stderr))
        }));
    }
    // One embedding program.
    let embedded = {
        let mut config = Config::new(ledger_url.as_str());
        config.shadow = ShadowConfig::Url(shadow.clone());
        config.ledger_wait = std::time::Duration::from_secs(30);
        config.lock_wait = std::time::Duration::from_secs(300);
        let runtime = Lockplane::open(config).await.expect("open the runtime");
        let db = runtime.attach(&url, None).await.expect("attach");
        let doc = with_table(&document, "embedded", None);
        let outcome = async {
            let proposal = runtime
                .propose(&db, "embedded.json", &doc, "embed:app")
                .await?;
            runtime
                .apply(&db, &proposal.plan.plan_id, None, "embed:app")
                .await
        }
        .await;
        let verified = runtime.verify_ledger().await.expect("verify");
        assert!(verified.ok, "{verified:?}");
        outcome
    };
    assert!(embedded.is_ok(), "the embedding program: {embedded:?}");

    let mut outcomes = Vec::new();
    for actor in actors {
        outcomes.push(actor.join().expect("actor thread"));
    }
    for server in servers {
        let status = server.stop();
        assert!(status.success(), "{status:?}");
    }

    // Every non-conflicting actor's table exists; one of the conflicting pair got through,
    // the other was refused naming the column.
    for (name, applied, log) in &outcomes {
        if name != "cli:0" && name != "cli:1" {
            assert!(applied, "{name} was not applied: {log}");
        }
    }
    let conflicting: Vec<&(String, bool, String)> = outcomes
        .iter()
        .filter(|(n, _, _)| n == "cli:0" || n == "cli:1")
        .collect();
    assert_eq!(
        conflicting
            .iter()
            .filter(|(_, applied, _)| *applied)
            .count(),
        1,
        "exactly one of the conflicting pair applies: {conflicting:?}"
    );
    let refused = conflicting
        .iter()
        .find(|(_, applied, _)| !applied)
        .expect("the refused one");
    assert!(
        refused.2.contains("shared"),
        "the refusal names the column: {}",
        refused.2
    );
    let tables: Vec<String> = client
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
            &[],
        )
        .await
        .expect("tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let winner = if conflicting[0].1 { "cli0" } else { "cli1" };
    let mut expected: Vec<String> = (2..8)
        .map(|i| format!("cli{i}"))
        .chain((0..8).map(|i| format!("agent{i}")))
        .chain(["embedded".to_owned(), winner.to_owned(), "t".to_owned()])
        .collect();
    expected.sort();
    assert_eq!(tables, expected);
    assert!(
        testkit::ddl_transactions(&client)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            >= 16
    );

    // One chain: verified from a CLI process, with all seventeen actors in it.
    let verify = lockplane(ledger, &["audit", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify.stderr));
    let log = lockplane(ledger, &["audit", "log", "--json"]);
    assert!(log.status.success(), "{}", text(&log.stderr));
    let records: Vec<Value> = serde_json::from_slice(&log.stdout).expect("log");
    let actors: std::collections::BTreeSet<String> = records
        .iter()
        .filter_map(|r| r["actor"].as_str().map(str::to_owned))
        .collect();
    for i in 0..8 {
        assert!(
            actors.contains(&format!("cli:{i}")),
            "cli:{i} in {actors:?}"
        );
        let server = if i % 2 == 0 { "mcp:a" } else { "mcp:b" };
        assert!(
            actors.contains(&format!("{server}/agent{i}")),
            "agent{i} in {actors:?}"
        );
    }
    assert!(actors.contains("embed:app"), "{actors:?}");
    let replay = lockplane(ledger, &["audit", "replay"]);
    assert!(replay.status.success(), "{}", text(&replay.stderr));

    // The ledger moves to a directory with its chain intact, hash for hash.
    let copy = dir.join("copy");
    let copied = lockplane(
        ledger,
        &[
            "audit",
            "copy",
            "--from",
            &ledger_url,
            "--to",
            copy.to_str().expect("path"),
        ],
    );
    assert!(copied.status.success(), "{}", text(&copied.stderr));
    let head = |l: &Path| {
        let out = lockplane(l, &["audit", "checkpoint"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    assert_eq!(head(&copy), head(ledger));
    // The audit commands answer the same on both backends, byte for byte.
    for args in [
        &["audit", "export", "--format", "jsonl"][..],
        &["audit", "log", "--json"],
        &["audit", "replay", "--json"],
        &["audit", "verify", "--json"],
    ] {
        let (a, b) = (lockplane(ledger, args), lockplane(&copy, args));
        assert!(a.status.success() && b.status.success(), "{args:?}");
        assert_eq!(
            text(&a.stdout),
            text(&b.stdout),
            "{args:?} differs between backends"
        );
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
