//! Apply overhead (issue 4's benchmark): a 500-step plan applied by the executor against
//! `psql -1 -f` of the same SQL, on fresh databases of the shared throwaway cluster. One run,
//! printed as a ratio; ignored by default (`cargo test --test exec_bench -- --ignored
//! --nocapture`).

mod common;

use std::time::Instant;

use common::{database_with, read};
use lockplane_engine::diff::Renames;
use lockplane_engine::exec::{apply, ApplyOptions};
use lockplane_engine::plan::{plan, TableStats};
use lockplane_engine::testkit;

#[tokio::test]
#[ignore = "benchmark: run explicitly"]
async fn apply_overhead_against_psql() {
    let mut schema = String::new();
    for i in 0..125 {
        schema.push_str(&format!(
            "CREATE TABLE t{i} (id int PRIMARY KEY, a text, b int);
             CREATE INDEX t{i}_a ON t{i} (a);
             COMMENT ON TABLE t{i} IS 'table {i}';
             GRANT SELECT ON t{i} TO app_reader;\n"
        ));
    }
    let (_, mut model) = database_with(&schema).await;
    let desired = read(&mut model).await;
    let (db_exec, mut client) = database_with("").await;
    let (db_psql, _) = database_with("").await;
    let empty = read(&mut client).await;
    let p = plan(
        &empty,
        &desired,
        &Renames::none(),
        &TableStats::default(),
        "bench",
    )
    .expect("plan");
    println!("steps: {}", p.steps.len());

    let cluster = testkit::shared_cluster().expect("cluster");
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let sql: String = p.steps.iter().map(|s| format!("{};\n", s.sql)).collect();
    std::fs::write(file.path(), sql).expect("write");
    let config = cluster.config(&db_psql);
    let started = Instant::now();
    // psql is a client program: beside the server binaries, or on PATH.
    let beside = cluster.binaries().bin_dir.join("psql");
    let psql_bin = if beside.is_file() {
        beside
    } else {
        "psql".into()
    };
    let out = std::process::Command::new(psql_bin)
        .args(["-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
        .args(["-p", &cluster.port().to_string()])
        .args([
            "-U",
            config.get_user().unwrap_or("postgres"),
            "-d",
            &db_psql,
        ])
        .arg("-f")
        .arg(file.path())
        .output()
        .expect("psql");
    let psql = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let started = Instant::now();
    let report = apply(&mut client, &p, &ApplyOptions::default(), None)
        .await
        .expect("apply");
    let exec = started.elapsed();
    assert_eq!(report.resulting_hash, p.target_hash);
    let statements: u64 = report.step_receipts().map(|s| s.duration_ms).sum();
    println!(
        "psql -1 -f: {} ms; exec::apply: {} ms (statements {} ms, the rest is the lock, two \
         introspections and the hash checks); ratio {:.2}",
        psql.as_millis(),
        exec.as_millis(),
        statements,
        exec.as_secs_f64() / psql.as_secs_f64()
    );
    drop(db_exec);
}
