//! Connecting the way libpq does, against a real server that takes TLS connections only
//! (`support/tls_server.rs`): every `sslmode`, the root and client certificates, passwords
//! from `PGPASSWORD` and the password file, `connect_timeout` against a server that never
//! answers, and errors that carry the server's words.
//!
//! The environment is passed to [`resolve_with`] as a function: tests run in parallel threads
//! and process environment variables are shared by all of them.

#[path = "support/tls_server.rs"]
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lockplane_engine::connect::{self, resolve_with, ConnTarget, ConnectError};
use support::{tls_server, CERT_ROLE, PASSWORD, ROLE};

/// An environment holding `pairs` and a `HOME` with no `.postgresql/` or `.pgpass` in it.
fn env(home: &std::path::Path, pairs: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
    let mut map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    map.insert("HOME".into(), home.display().to_string());
    move |name| map.get(name).cloned()
}

fn target(url: &str, pairs: &[(&str, String)]) -> (ConnTarget, tempfile::TempDir) {
    let home = tempfile::tempdir().expect("home");
    let target = resolve_with(Some(url), &env(home.path(), pairs)).expect("resolves");
    (target, home)
}

/// Connects, and says whether the session is encrypted.
async fn connect(url: &str, pairs: &[(&str, String)]) -> Result<bool, ConnectError> {
    let (target, _home) = target(url, pairs);
    let client = connect::connect(&target).await?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_catalog.pg_stat_ssl WHERE pid = pg_catalog.pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl");
    Ok(row.get(0))
}

async fn refused(url: &str, pairs: &[(&str, String)]) -> String {
    match connect(url, pairs).await {
        Ok(_) => panic!("{url} connected"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn require_encrypts_without_checking_the_certificate() {
    let server = tls_server().await;
    // No CA at all, and the certificate does not name 127.0.0.1: require does not look.
    let url = server.url(ROLE, Some(PASSWORD), "127.0.0.1", "sslmode=require");
    assert!(connect(&url, &[]).await.expect("require connects"));
    // prefer (the default) takes TLS when the server offers it.
    let url = server.password_url("");
    assert!(connect(&url, &[]).await.expect("prefer connects"));
}

#[tokio::test]
async fn verify_full_checks_the_chain_and_the_host_name() {
    let server = tls_server().await;
    let url = server.password_url(&server.verify_full());
    assert!(connect(&url, &[]).await.expect("verify-full with the CA"));

    // No root certificate: refused before connecting, saying what to set.
    let text = refused(&server.password_url("sslmode=verify-full"), &[]).await;
    assert!(text.contains("sslrootcert"), "{text}");

    // Another CA: the server's certificate does not chain to it.
    let other = format!(
        "sslmode=verify-full&sslrootcert={}",
        server.other_ca().display()
    );
    let text = refused(&server.password_url(&other), &[]).await;
    assert!(text.contains("TLS handshake"), "{text}");
    assert!(
        text.contains("not signed by a certificate authority in sslrootcert"),
        "{text}"
    );

    // The system's CAs did not sign the test CA either.
    let system = "sslmode=verify-full&sslrootcert=system";
    let text = refused(&server.password_url(system), &[]).await;
    assert!(text.contains("TLS handshake"), "{text}");

    // The certificate names `localhost`; reached as 127.0.0.1, the name is wrong.
    let wrong_name = server.url(ROLE, Some(PASSWORD), "127.0.0.1", &server.verify_full());
    let text = refused(&wrong_name, &[]).await;
    assert!(
        text.contains("does not name the host `127.0.0.1`"),
        "{text}"
    );
    // verify-ca checks the chain only.
    let verify_ca = format!("sslmode=verify-ca&sslrootcert={}", server.ca().display());
    let url = server.url(ROLE, Some(PASSWORD), "127.0.0.1", &verify_ca);
    assert!(connect(&url, &[])
        .await
        .expect("verify-ca ignores the name"));
    // libpq: with a root certificate, require checks the chain too.
    let require = format!(
        "sslmode=require&sslrootcert={}",
        server.other_ca().display()
    );
    let text = refused(&server.password_url(&require), &[]).await;
    assert!(text.contains("TLS handshake"), "{text}");
}

#[tokio::test]
async fn the_environment_gives_sslmode_and_certificates() {
    let server = tls_server().await;
    let url = server.url(ROLE, Some(PASSWORD), "localhost", "");
    let vars = [
        ("PGSSLMODE", "verify-full".to_owned()),
        ("PGSSLROOTCERT", server.ca().display().to_string()),
    ];
    assert!(connect(&url, &vars)
        .await
        .expect("PGSSLMODE, PGSSLROOTCERT"));
    let vars = [
        ("PGSSLMODE", "verify-full".to_owned()),
        ("PGSSLROOTCERT", server.other_ca().display().to_string()),
    ];
    refused(&url, &vars).await;
    // The connection string wins over the environment.
    let url = server.password_url(&server.verify_full());
    let vars = [("PGSSLMODE", "disable".to_owned())];
    assert!(connect(&url, &vars).await.expect("the URL's sslmode"));
}

#[tokio::test]
async fn plaintext_is_refused_by_the_server_with_a_clear_message() {
    let server = tls_server().await;
    let text = refused(&server.password_url("sslmode=disable"), &[]).await;
    assert!(text.contains("no pg_hba.conf entry"), "{text}");
    assert!(text.contains("no encryption"), "{text}");
    assert!(text.contains("SQLSTATE 28000"), "{text}");
    assert!(text.contains("connect with sslmode=require"), "{text}");
    assert!(!text.contains("db error"), "{text}");
}

#[tokio::test]
async fn client_certificates_log_in() {
    let server = tls_server().await;
    let (cert, key) = server.client_cert();
    let params = format!(
        "{}&sslcert={}&sslkey={}",
        server.verify_full(),
        cert.display(),
        key.display()
    );
    let url = server.url(CERT_ROLE, None, "localhost", &params);
    assert!(connect(&url, &[]).await.expect("client certificate"));
    // The same through PGSSLCERT / PGSSLKEY.
    let url = server.url(CERT_ROLE, None, "localhost", &server.verify_full());
    let vars = [
        ("PGSSLCERT", cert.display().to_string()),
        ("PGSSLKEY", key.display().to_string()),
    ];
    assert!(connect(&url, &vars).await.expect("PGSSLCERT, PGSSLKEY"));
    // Without one the server refuses.
    let text = refused(&url, &[]).await;
    assert!(text.contains("certificate"), "{text}");
}

#[tokio::test]
async fn passwords_come_from_pgpassword_and_the_password_file() {
    let server = tls_server().await;
    let url = server.url(ROLE, None, "localhost", &server.verify_full());
    // No password anywhere: the hint names every place one can be.
    let text = refused(&url, &[]).await;
    assert!(text.contains("PGPASSWORD"), "{text}");
    assert!(text.contains("~/.pgpass"), "{text}");

    assert!(connect(&url, &[("PGPASSWORD", PASSWORD.to_owned())])
        .await
        .expect("PGPASSWORD"));

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pgpass");
    std::fs::write(
        &file,
        format!(
            "# host:port:database:user:password\n\
             elsewhere:*:*:*:wrong\n\
             localhost:{}:*:{ROLE}:{PASSWORD}\n",
            server.port()
        ),
    )
    .expect("write");
    support::chmod(&file, 0o600);
    let vars = [("PGPASSFILE", file.display().to_string())];
    assert!(connect(&url, &vars).await.expect("PGPASSFILE"));
    // `~/.pgpass` when PGPASSFILE is not set.
    let home = tempfile::tempdir().expect("home");
    std::fs::copy(&file, home.path().join(".pgpass")).expect("copy");
    support::chmod(&home.path().join(".pgpass"), 0o600);
    let t = resolve_with(Some(&url), &env(home.path(), &[])).expect("resolves");
    connect::connect(&t).await.expect("~/.pgpass");

    // Readable by others: ignored, with a warning, which the error repeats.
    support::chmod(&file, 0o644);
    let (t, _home) = target(&url, &vars);
    assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
    assert!(
        t.warnings[0].contains("group or world access"),
        "{:?}",
        t.warnings
    );
    let text = connect::connect(&t).await.expect_err("refused").to_string();
    assert!(text.contains("group or world access"), "{text}");
}

#[tokio::test]
async fn a_wrong_password_says_what_the_server_said() {
    let server = tls_server().await;
    let url = server.url(ROLE, Some("not-it"), "localhost", &server.verify_full());
    let (t, _home) = target(&url, &[]);
    let err = connect::connect(&t).await.expect_err("refused");
    let text = err.to_string();
    assert_eq!(
        text.matches("password authentication failed").count(),
        1,
        "{text}"
    );
    assert!(text.contains("SQLSTATE 28P01"), "{text}");
    assert!(!text.contains("db error"), "{text}");
    assert!(!text.contains("not-it"), "{text}");
    assert!(matches!(err, ConnectError::Connect { code: Some(ref c), .. } if c == "28P01"));
    assert!(
        std::error::Error::source(&err).is_none(),
        "the cause is in the message"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let port = support::silent_listener();
    let url = format!("postgres://me@127.0.0.1:{port}/x?connect_timeout=2");
    for (url, pairs) in [
        (url.clone(), vec![]),
        (
            format!("postgres://me@127.0.0.1:{port}/x"),
            vec![("PGCONNECT_TIMEOUT", "2".to_owned())],
        ),
        // TLS asked for: the SSLRequest is never answered either.
        (format!("{url}&sslmode=require"), vec![]),
    ] {
        let (t, _home) = target(&url, &pairs);
        let started = Instant::now();
        let err = connect::connect(&t).await.expect_err("times out");
        let took = started.elapsed();
        assert!(took >= Duration::from_secs(2), "{took:?}");
        assert!(took < Duration::from_secs(4), "{took:?}");
        let text = err.to_string();
        assert!(matches!(err, ConnectError::Timeout { .. }), "{text}");
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
        assert!(text.contains("within 2 s (connect_timeout)"), "{text}");
    }
    // Without a word about it, the default bounds the wait.
    let (t, _home) = target(&format!("postgres://me@127.0.0.1:{port}/x"), &[]);
    assert_eq!(t.connect_timeout, Some(connect::DEFAULT_CONNECT_TIMEOUT));
}

#[tokio::test]
async fn a_statement_is_cancelled_over_tls() {
    let server = tls_server().await;
    let url = server.password_url(&server.verify_full());
    let (t, _home) = target(&url, &[]);
    let client = connect::connect(&t).await.expect("connect");
    let failure = lockplane_engine::exec::run_with_timeout(
        &client,
        "SELECT pg_catalog.pg_sleep(30)",
        Duration::from_millis(500),
    )
    .await
    .expect_err("times out");
    assert!(failure.timed_out, "{failure:?}");
    // Cancelled on the server: the session answers again at once (else it would wait for the
    // sleep to end).
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), client.simple_query("SELECT 1"))
        .await
        .expect("the session is free again")
        .expect("SELECT 1");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn pg_dump_reaches_the_server_the_same_way() {
    use lockplane_engine::shadow::{LiveSource, Shadow, ShadowTarget};
    use lockplane_engine::testkit;
    let server = tls_server().await;
    let url = server.password_url(&server.verify_full());
    let (t, _home) = target(&url, &[]);
    let client = connect::connect(&t).await.expect("connect");
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS dumped (id int PRIMARY KEY, note text)")
        .await
        .expect("table");
    let mut reader = connect::connect(&t).await.expect("connect");
    let catalog = lockplane_engine::introspect(&mut reader, &Default::default())
        .await
        .expect("introspect");
    let source = LiveSource {
        client: &client,
        config: &t,
    };
    // pg_dump gets PGSSLMODE=verify-full, PGSSLROOTCERT, PGHOST=localhost, PGHOSTADDR and the
    // password: the reproduction hashes like live only if it could read it.
    let shadow = Shadow::reproduce(
        &source,
        ShadowTarget::Cluster(testkit::shared_cluster().expect("cluster")),
        Duration::from_secs(5),
    )
    .await
    .unwrap_or_else(|e| panic!("reproduce over TLS: {e}"));
    assert_eq!(shadow.base(), &catalog);
    shadow.destroy().await;
}
