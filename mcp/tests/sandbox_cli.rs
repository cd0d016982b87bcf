//! `lockplane sandbox` killed outright: the throwaway cluster's reaper stops the server and
//! removes its directory even though no destructor ran.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The `lockplane-pg-*` directories under `tmp`.
fn clusters_in(tmp: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(tmp)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("lockplane-pg-"))
                .collect()
        })
        .unwrap_or_default()
}

/// Starts `lockplane sandbox` with `tmp` as its temporary directory and returns it with the
/// port its server listens on, once the server accepts connections.
fn sandbox(tmp: &std::path::Path) -> (std::process::Child, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lockplane"))
        .arg("sandbox")
        .env("TMPDIR", tmp)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sandbox");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("read");
    let url = line.trim().strip_prefix("DATABASE_URL=").expect("url line");
    let port = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("port in url");
    (child, port)
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn wait_until(what: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if what() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

fn private_tmp() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).expect("tmp");
    // The server runs as an unprivileged user when the tests run as root.
    let _ = Command::new("chmod")
        .args(["1777", tmp.to_str().expect("path")])
        .status();
    (dir, tmp)
}

#[test]
fn a_killed_sandbox_leaves_no_server_and_no_directory() {
    let (_dir, tmp) = private_tmp();
    let (mut child, port) = sandbox(&tmp);
    assert!(listening(port), "the sandbox's server accepts connections");
    assert_eq!(
        clusters_in(&tmp).len(),
        1,
        "one cluster directory while it runs"
    );
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    assert!(
        wait_until(|| !listening(port) && clusters_in(&tmp).is_empty()),
        "after SIGKILL: server listening = {}, directories left = {:?}",
        listening(port),
        clusters_in(&tmp)
    );
}

#[test]
fn a_killed_sandbox_nobody_reaps_is_still_cleaned_up() {
    // A parent that never waits for its dead child (a crashed supervisor, an init that does not
    // reap orphans) leaves a zombie whose pid still answers `kill -0`. The reaper must see the
    // process as dead all the same.
    let (_dir, tmp) = private_tmp();
    let (mut child, port) = sandbox(&tmp);
    child.kill().expect("SIGKILL");
    let cleaned = wait_until(|| !listening(port) && clusters_in(&tmp).is_empty());
    child.wait().expect("reap");
    assert!(
        cleaned,
        "with the sandbox a zombie: server listening = {}, directories left = {:?}",
        listening(port),
        clusters_in(&tmp)
    );
}
