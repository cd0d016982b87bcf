//! Crash safety: a child process appends as fast as it can and reports every acknowledged append
//! on a pipe; we SIGKILL it at random moments, 50+ times, and after each kill the ledger opens,
//! verifies, and still holds every acknowledged record with the acknowledged hash.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;

use common::{parse_ack, Ack};
use lockplane_store::{verify, SledStore, Store};

const KILLS: usize = 50;

/// A small xorshift so the kill moments vary without a dependency; the seed is printed so a
/// failure can be replayed with `CRASH_SEED`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn acknowledged_appends_survive_sigkill() -> Result<(), Box<dyn std::error::Error>> {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let mut total_acked = 0usize;
    let mut max_acked_seq = 0u64;

    for kill in 0..KILLS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ledger-crash-child"))
            .arg(dir.path())
            .arg("append")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // A line cut by the kill has no newline and doesn't parse: not acknowledged
                // as far as we know, so it must not be counted.
                if let Some(ack) = parse_ack(&line) {
                    let _ = tx.send(ack);
                }
            }
        });

        // Kill at a random moment: one time in five anywhere from start-up (open, recovery)
        // on, otherwise once appends are flowing.
        let first_ack = if rng.next().is_multiple_of(5) {
            Err(mpsc::RecvTimeoutError::Timeout)
        } else {
            rx.recv_timeout(Duration::from_secs(10))
        };
        let delay = Duration::from_micros(rng.next() % 40_000);
        std::thread::sleep(delay);
        child.kill()?; // SIGKILL on unix
        child.wait()?;
        let _ = reader.join();
        let acks: Vec<Ack> = first_ack.into_iter().chain(rx.try_iter()).collect();

        let store = SledStore::open(dir.path())?;
        let head = store.head()?;
        let report = verify(&store, None);
        assert!(report.is_ok(), "kill {kill}: {report}");
        for ack in &acks {
            assert!(
                head.seq >= ack.last,
                "kill {kill}: acknowledged seq {} lost (head {head})",
                ack.last
            );
            let records = store.read_range(ack.first..ack.last + 1)?;
            assert_eq!(records.len() as u64, ack.last + 1 - ack.first);
            assert_eq!(
                records.last().map(|r| r.hash()),
                Some(ack.hash),
                "kill {kill}: record {} differs from what was acknowledged",
                ack.last
            );
        }
        total_acked += acks.len();
        max_acked_seq = max_acked_seq.max(acks.iter().map(|a| a.last).max().unwrap_or(0));
        assert!(head.seq >= max_acked_seq);
    }
    eprintln!(
        "{KILLS} kills, {total_acked} acknowledged appends checked, final seq {max_acked_seq}, {:?}",
        started.elapsed()
    );
    assert!(
        total_acked > KILLS,
        "the child should get appends acknowledged"
    );
    Ok(())
}
