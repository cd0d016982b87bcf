//! Runs every case of `cases/*.yaml` against the shared test cluster (one fresh database and
//! one ledger each, all cases at once), and checks that a broken case or a failed expectation
//! is reported with its file, step and who.

use std::path::PathBuf;

use lockplane_scenarios::{load_dir, run, Case};

fn cases_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("cases")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_case_holds() {
    let cases = load_dir(&cases_dir()).expect("cases parse");
    assert!(
        cases.len() >= 4,
        "expected the cases of issue 6, found {}",
        cases.len()
    );
    // Cases are independent (own database, own ledger): run them side by side.
    let mut tasks = tokio::task::JoinSet::new();
    for case in cases {
        tasks.spawn(async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let result = run(&case, dir.path()).await;
            (case, result)
        });
    }
    let mut failures = Vec::new();
    let mut reports = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (case, result) = joined.expect("case task");
        match result {
            Ok(report) => reports.push(report),
            Err(e) => failures.push(format!("{e}\n    (case: {})", case.name)),
        }
    }
    reports.sort_by(|a, b| a.file.cmp(&b.file));
    for report in &reports {
        println!(
            "{} — {} ({:.1}s)",
            report.file,
            report.name,
            report.elapsed.as_secs_f64()
        );
        for line in &report.transcript {
            println!("    {line}");
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn a_broken_step_is_named_by_file_step_and_line() {
    let text =
        "name: broken\nsteps:\n  - who: a\n    sql: SELECT 1\n  - who: b\n    aply: { plan: x }\n";
    let e = Case::parse("broken.yaml", text).expect_err("a typo");
    assert_eq!(e.file, "broken.yaml");
    assert_eq!(e.step, Some(2));
    assert_eq!(e.line, Some(5));
    let shown = e.to_string();
    assert!(
        shown.starts_with("broken.yaml, step 2 (line 5): "),
        "{shown}"
    );
    assert!(shown.contains("aply"), "{shown}");

    let text = "name: two at once\nsteps:\n  - who: a\n    sql: SELECT 1\n    check_drift: { drifted: false }\n";
    let e = Case::parse("two.yaml", text).expect_err("two actions");
    assert_eq!(e.step, Some(1));
    assert!(e.message.contains("exactly one thing"), "{e}");

    let text = "name: nobody\nsteps:\n  - apply: { plan: x }\n";
    let e = Case::parse("nobody.yaml", text).expect_err("no who");
    assert!(e.message.contains("needs `who:`"), "{e}");

    let text =
        "name: half a refusal\nsteps:\n  - who: a\n    apply: { plan: x, outcome: refused }\n";
    let e = Case::parse("half.yaml", text).expect_err("no code");
    assert!(e.message.contains("needs `code:`"), "{e}");

    let e = Case::parse("bad.yaml", "name: [").expect_err("not YAML");
    assert!(e.to_string().starts_with("bad.yaml: "), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_expectation_names_file_step_and_who() {
    let text = "\
name: wrong on purpose
setup: CREATE TABLE t (id int);
steps:
  - who: erin
    check_drift: { drifted: false }
  - who: dave
    sql: ALTER TABLE t ADD COLUMN x int;
  - who: erin
    check_drift: { drifted: false }
";
    let case = Case::parse("wrong.yaml", text).expect("parses");
    let dir = tempfile::tempdir().expect("tempdir");
    let e = run(&case, dir.path())
        .await
        .expect_err("the second drift check fails");
    assert_eq!(
        (e.step, e.who.as_deref(), e.kind),
        (Some(3), Some("erin"), Some("check_drift"))
    );
    assert!(
        e.to_string().starts_with(
            "wrong.yaml, step 3 (line 8, erin, check_drift): drifted is true, expected false"
        ),
        "{e}"
    );

    // Unknown aliases are named with the ones that exist.
    let text = "name: unknown alias\nsteps:\n  - who: a\n    apply: { plan: nope }\n";
    let case = Case::parse("alias.yaml", text).expect("parses");
    let dir = tempfile::tempdir().expect("tempdir");
    let e = run(&case, dir.path()).await.expect_err("no such plan");
    assert!(
        e.to_string()
            .contains("no plan is called `nope` (known: none yet)"),
        "{e}"
    );
}
