//! How the `lockplane` binary connects, as a user runs it, against a server that takes TLS
//! connections only (the engine's `tests/support/tls_server.rs`): `sslmode` and the
//! certificates from the URL or the `PGSSL*` variables, `PGPASSWORD` and `PGPASSFILE`,
//! `PGCONNECT_TIMEOUT` against a server that never answers, for `introspect` and for
//! `serve --stdio` (which attaches the database at start); and every cause said exactly once.
//!
//! The environment goes to each child with `Command::env`, never into this process.

#[path = "../../engine/tests/support/tls_server.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{server, TlsServer, DB, PASSWORD, ROLE};

/// Runs the binary with exactly `env` for libpq's variables, `HOME` set to `home` (no
/// `~/.pgpass`, no `~/.postgresql/`), a new ledger, standard input closed.
fn lockplane(home: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
    // A database the ledger already knows is attached without connecting (its baseline is
    // there): each run gets its own ledger, so that serve connects at start.
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lockplane"));
    cmd.args(args)
        .env("NO_COLOR", "1")
        .env("HOME", home)
        .env("LOCKPLANE_LEDGER", home.join(format!("ledger-{run}")))
        .stdin(Stdio::null());
    cmd.env_remove("DATABASE_URL");
    for var in lockplane_engine::connect::LIBPQ_VARIABLES {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run lockplane")
}

/// Standard error with miette's frame characters and line breaks taken out, so that a phrase
/// wrapped over two lines is still found.
fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .replace(['│', '├', '╰', '─', '▶', '×'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn introspect(home: &Path, url: &str, env: &[(&str, String)]) -> Output {
    lockplane(
        home,
        &["introspect", "--no-ledger", "--database-url", url],
        env,
    )
}

/// `lockplane serve --stdio` with standard input closed: it attaches the database, says so on
/// standard error, and ends when it reads the end of its input.
fn serve(home: &Path, url: Option<&str>, env: &[(&str, String)]) -> Output {
    let mut args = vec!["serve", "--stdio"];
    if let Some(url) = url {
        args.extend(["--database-url", url]);
    }
    lockplane(home, &args, env)
}

fn tls() -> (&'static TlsServer, tempfile::TempDir) {
    (server(), tempfile::tempdir().expect("home"))
}

#[test]
fn a_wrong_password_is_said_once_by_introspect_and_serve() {
    let (server, home) = tls();
    let url = server.url(ROLE, Some("not-it"), "localhost", &server.verify_full());
    let out = introspect(home.path(), &url, &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(
        err.matches("password authentication failed").count(),
        1,
        "{err}"
    );
    assert!(!err.contains("db error"), "{err}");
    assert!(!err.contains("not-it"), "{err}");

    let out = serve(home.path(), Some(&url), &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(
        err.matches("password authentication failed").count(),
        1,
        "{err}"
    );
    assert!(!err.contains("db error"), "{err}");

    // A missing database, the same way.
    let url = server
        .password_url(&server.verify_full())
        .replace(&format!("/{DB}?"), "/no_such_db?");
    let out = serve(home.path(), Some(&url), &[]);
    let err = stderr(&out);
    assert_eq!(err.matches("does not exist").count(), 1, "{err}");
}

#[test]
fn tls_from_the_url_and_from_the_environment() {
    let (server, home) = tls();
    let out = introspect(
        home.path(),
        &server.password_url(&server.verify_full()),
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"catalog\""));

    let plain_url = server.password_url("");
    let verify = |ca: &Path| {
        vec![
            ("PGSSLMODE", "verify-full".to_owned()),
            ("PGSSLROOTCERT", ca.display().to_string()),
        ]
    };
    let out = introspect(home.path(), &plain_url, &verify(&server.ca()));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = introspect(home.path(), &plain_url, &verify(&server.other_ca()));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.matches("UnknownIssuer").count(), 1, "{err}");

    // Plaintext: the server refuses, and says why.
    let out = introspect(home.path(), &server.password_url("sslmode=disable"), &[]);
    let err = stderr(&out);
    assert!(err.contains("no encryption"), "{err}");
    assert!(err.contains("sslmode=require"), "{err}");

    // serve attaches at start: over verify-full from the URL…
    let out = serve(
        home.path(),
        Some(&server.password_url(&server.verify_full())),
        &[],
    );
    let err = stderr(&out);
    assert!(err.contains("MCP server on stdio for"), "{err}");
    // …and from the PG* variables alone.
    let env = [
        ("PGHOST", "localhost".to_owned()),
        ("PGHOSTADDR", "127.0.0.1".to_owned()),
        ("PGPORT", server.port().to_string()),
        ("PGUSER", ROLE.to_owned()),
        ("PGDATABASE", DB.to_owned()),
        ("PGPASSWORD", PASSWORD.to_owned()),
        ("PGSSLMODE", "verify-full".to_owned()),
        ("PGSSLROOTCERT", server.ca().display().to_string()),
    ];
    let out = serve(home.path(), None, &env);
    let err = stderr(&out);
    assert!(err.contains("MCP server on stdio for"), "{err}");
}

#[test]
fn passwords_from_pgpassword_and_pgpassfile() {
    let (server, home) = tls();
    let url = server.url(ROLE, None, "localhost", &server.verify_full());
    let out = introspect(home.path(), &url, &[("PGPASSWORD", PASSWORD.to_owned())]);
    assert!(out.status.success(), "{}", stderr(&out));

    let file = home.path().join("passfile");
    std::fs::write(&file, format!("*:*:{DB}:{ROLE}:{PASSWORD}\n")).expect("write");
    support::chmod(&file, 0o600);
    let env = [("PGPASSFILE", file.display().to_string())];
    let out = introspect(home.path(), &url, &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = serve(home.path(), Some(&url), &env);
    assert!(
        stderr(&out).contains("MCP server on stdio for"),
        "{}",
        stderr(&out)
    );

    // Group- and world-readable: not read, with a warning, said once.
    support::chmod(&file, 0o644);
    for out in [
        introspect(home.path(), &url, &env),
        serve(home.path(), Some(&url), &env),
    ] {
        assert!(!out.status.success());
        let err = stderr(&out);
        assert_eq!(err.matches("group or world access").count(), 1, "{err}");
        assert!(err.contains("password"), "{err}");
    }
}

#[test]
fn a_server_that_never_answers_times_out_naming_the_limit() {
    let port = support::silent_listener();
    let home = tempfile::tempdir().expect("home");
    let url = format!("postgres://me@127.0.0.1:{port}/x");
    let env = [("PGCONNECT_TIMEOUT", "2".to_owned())];
    for run in [
        introspect as fn(&Path, &str, &[(&str, String)]) -> Output,
        |home: &Path, url: &str, env: &[(&str, String)]| serve(home, Some(url), env),
    ] {
        let started = Instant::now();
        let out = run(home.path(), &url, &env);
        let took = started.elapsed();
        assert!(!out.status.success());
        assert!(took < Duration::from_secs(4), "{took:?}");
        let err = stderr(&out);
        assert!(err.contains("within 2 s (connect_timeout)"), "{err}");
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    }
}
