//! kill -9 at random points of an apply, many times: after each restart the database is at
//! the plan's base or its target (never in between: the plan is one transaction), the ledger
//! says which, every record the dead process had acknowledged is still there, and the ledger
//! verifies.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lockplane_actors::{Config, Lockplane, ShadowConfig};
use lockplane_engine::testkit;

const KILLS: usize = 32;
const TABLES: usize = 25;

/// A small deterministic generator, so a failing run can be repeated exactly.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

fn config(ledger: &std::path::Path) -> Config {
    let mut config = Config::new(ledger);
    // The killed process may still be releasing the ledger's lock.
    config.ledger_wait = std::time::Duration::from_secs(30);
    config.shadow = ShadowConfig::Url(testkit::shared_cluster().expect("cluster").url("postgres"));
    config
}

/// What the killed process printed before it died.
#[derive(Default, Debug)]
struct Seen {
    acks: Vec<(u64, String)>,
    plan: Option<String>,
    applying: bool,
}

/// Runs one `apply-one` and kills it `delay` after it says it is applying (or after `early`
/// from its start, when given). Returns what it printed and whether it was killed.
fn run_and_kill(
    ledger: &std::path::Path,
    url: &str,
    schema: &str,
    delay: Duration,
    early: Option<Duration>,
) -> (Seen, bool) {
    let shadow = testkit::shared_cluster().expect("cluster").url("postgres");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lockplane-swarm"))
        .args(["apply-one", "--ledger"])
        .arg(ledger)
        .args(["--url", url, "--schema", schema, "--shadow-url", &shadow])
        .args(["--tables", &TABLES.to_string(), "--dry-run", "false"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut seen = Seen::default();
    let mut deadline: Option<Instant> = early.map(|e| started + e);
    let killed = loop {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            let _ = child.kill();
            break true;
        }
        let wait = deadline.map_or(Duration::from_millis(20), |d| d - now);
        match rx.recv_timeout(wait.min(Duration::from_millis(20))) {
            Ok(line) => {
                let mut parts = line.splitn(3, ' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some("ack"), Some(seq), Some(kind)) => {
                        seen.acks.push((seq.parse().expect("seq"), kind.to_owned()))
                    }
                    (Some("plan"), Some(id), None) => seen.plan = Some(id.to_owned()),
                    (Some("applying"), None, None) => {
                        seen.applying = true;
                        if deadline.is_none() {
                            deadline = Some(Instant::now() + delay);
                        }
                    }
                    _ => {}
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break false,
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "apply-one hung"
        );
    };
    let status = child.wait().expect("wait");
    // Lines printed just before the kill.
    while let Ok(line) = rx.try_recv() {
        if let Some(rest) = line.strip_prefix("ack ") {
            let (seq, kind) = rest.split_once(' ').expect("ack line");
            seen.acks.push((seq.parse().expect("seq"), kind.to_owned()));
        }
    }
    if !killed {
        assert!(status.success(), "apply-one failed on its own: {status}");
    }
    (seen, killed)
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_dash_nine_mid_apply_leaves_base_or_target_and_a_ledger_that_says_which() {
    let cluster = testkit::shared_cluster().expect("cluster");
    let name = testkit::fresh_database("crash").await.expect("database");
    let url = cluster.url(&name);
    let client = cluster.connect(&name).await.expect("connect");
    let ledger_dir = tempfile::tempdir().expect("tempdir");
    let ledger = ledger_dir.path().join("ledger");
    let mut rng = Lcg(0x5eed);
    let mut outcomes: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut acknowledged: Vec<(u64, String)> = Vec::new();

    // A first run is not killed: it measures how long an apply takes on this machine, so the
    // kills below land inside applies whatever the machine's speed or load.
    let measured = Instant::now();
    let (seen, killed) = run_and_kill(&ledger, &url, "warmup", Duration::from_secs(600), None);
    assert!(!killed && seen.applying, "the measuring run did not finish");
    let whole_run = measured.elapsed();
    acknowledged.extend(seen.acks.iter().cloned());
    // The apply is the end of a run; planning (with the shadow) comes before it.
    let window_ms = (whole_run.as_millis() as u64 / 2).max(50);

    for i in 0..KILLS {
        let schema = format!("s{i}");
        // Most kills land 0–window after the apply starts; every fourth one lands anywhere
        // from start-up through planning.
        let early = (i % 4 == 3).then(|| Duration::from_millis(rng.below(3 * window_ms)));
        let delay = Duration::from_millis(rng.below(window_ms));
        let (seen, killed) = run_and_kill(&ledger, &url, &schema, delay, early);
        acknowledged.extend(seen.acks.iter().cloned());

        // Restart: opening the ledger and attaching runs recovery.
        let lp = Lockplane::open(config(&ledger)).await.expect("reopen");
        let db = lp.attach(&url, Some("crash-db")).await.expect("attach");
        let log = lp.audit_log(None, usize::MAX).await.expect("audit");
        let kinds: BTreeMap<u64, &str> = log.iter().map(|e| (e.seq, e.kind.as_str())).collect();
        for (seq, kind) in &acknowledged {
            assert_eq!(
                kinds.get(seq).copied(),
                Some(kind.as_str()),
                "kill {i}: acknowledged seq {seq} ({kind}) is missing"
            );
        }
        let tables: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_tables WHERE schemaname = $1",
                &[&schema],
            )
            .await
            .expect("count")
            .get(0);
        assert!(
            tables == 0 || tables == TABLES as i64,
            "kill {i}: {tables} of {TABLES} tables: a half-applied plan"
        );
        let live = lp.introspect(&db, "crash-test").await.expect("introspect");
        let outcome = match &seen.plan {
            None => {
                assert_eq!(tables, 0, "kill {i}: tables without a recorded plan");
                "killed before proposing"
            }
            Some(plan_id) => {
                let plans = lp.list_plans(&db).await.expect("plans");
                let view = plans
                    .iter()
                    .find(|p| &p.plan.plan_id == plan_id)
                    .unwrap_or_else(|| panic!("kill {i}: acknowledged plan {plan_id} missing"));
                let status = view.status.name();
                match status {
                    "applied" => {
                        assert_eq!(tables, TABLES as i64, "kill {i}: applied but not there");
                        assert_eq!(live.catalog_hash, view.plan.target_hash, "kill {i}");
                    }
                    "failed" => {
                        assert_eq!(tables, 0, "kill {i}: failed but tables exist");
                        assert_eq!(live.catalog_hash, view.plan.base_hash, "kill {i}");
                    }
                    "proposed" | "stale" => {
                        assert_eq!(tables, 0, "kill {i}: never started but tables exist");
                    }
                    other => panic!("kill {i}: plan left {other}"),
                }
                let recovered = log
                    .iter()
                    .rev()
                    .find(|e| e.kind == "PlanApplied" || e.kind == "ApplyFailed");
                match (status, killed) {
                    ("applied", true) => {
                        // Either the process recorded it before dying, or recovery did.
                        if recovered.is_some_and(|e| e.event["recovered"] == true) {
                            "applied, recorded by recovery"
                        } else {
                            "applied before the kill"
                        }
                    }
                    ("applied", false) => "finished before the kill",
                    ("failed", _) => "interrupted at base, recorded by recovery",
                    _ => "killed before the apply started",
                }
            }
        };
        *outcomes.entry(outcome).or_insert(0) += 1;
        let verified = lp.verify_ledger().await.expect("verify");
        assert!(verified.ok, "kill {i}: {:?}", verified.problems);
        assert_eq!(lp.recover(&db).await.expect("recover"), None, "kill {i}");
    }
    eprintln!("{KILLS} runs (kill window {window_ms} ms): {outcomes:?}");
    // The kills must really have landed inside applies, on both sides of the commit.
    assert!(
        outcomes
            .get("interrupted at base, recorded by recovery")
            .copied()
            .unwrap_or(0)
            >= 3,
        "{outcomes:?}"
    );
    // …and others after it (the runs that finished, or were killed after committing).
    assert!(
        outcomes
            .iter()
            .filter(|(k, _)| k.starts_with("applied") || k.starts_with("finished"))
            .map(|(_, n)| n)
            .sum::<usize>()
            >= 1,
        "{outcomes:?}"
    );
}
