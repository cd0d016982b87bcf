//! The embedding API against a server that takes TLS connections only (the engine's
//! `tests/support/tls_server.rs`): `Lockplane::attach` over `sslmode=verify-full`, a plan
//! proven through it (pg_dump reaches live over TLS too), and attach errors that carry the
//! server's words.

#[path = "../../engine/tests/support/tls_server.rs"]
mod support;

use lockplane_actors::{Config, Lockplane, ShadowConfig};
use lockplane_engine::testkit;
use support::{tls_server, PASSWORD, ROLE};

async fn runtime(ledger: &std::path::Path) -> Lockplane {
    let cluster = testkit::shared_cluster().expect("cluster");
    let mut config = Config::new(ledger.join("ledger"));
    config.shadow = ShadowConfig::Url(cluster.url("postgres"));
    Lockplane::open(config).await.expect("open")
}

#[tokio::test]
async fn attach_over_verified_tls_and_plan() {
    let server = tls_server().await;
    let ledger = tempfile::tempdir().expect("tempdir");
    let lockplane = runtime(ledger.path()).await;
    let url = server.password_url(&server.verify_full());
    let db = lockplane
        .attach(&url, Some("tls-app"))
        .await
        .unwrap_or_else(|e| panic!("attach over verify-full: {e}"));
    lockplane.introspect(&db, "test").await.expect("introspect");
    let document = "version: 1\nschemas:\n  embedded_tls:\n    tables:\n      notes:\n        \
                    columns:\n          - { name: id, type: bigint, pk: true }\n";
    let proposal = lockplane
        .propose(&db, "doc.yaml", document, "test")
        .await
        .unwrap_or_else(|e| panic!("propose over TLS (pg_dump included): {e}"));
    assert!(!proposal.plan.steps.is_empty(), "{:?}", proposal.plan);
}

#[tokio::test]
async fn attach_errors_carry_the_server_s_words() {
    let server = tls_server().await;
    let ledger = tempfile::tempdir().expect("tempdir");
    let lockplane = runtime(ledger.path()).await;

    let wrong = server.url(
        ROLE,
        Some("not-the-password"),
        "localhost",
        &server.verify_full(),
    );
    let text = lockplane
        .attach(&wrong, None)
        .await
        .expect_err("wrong password")
        .to_string();
    assert_eq!(
        text.matches("password authentication failed").count(),
        1,
        "{text}"
    );
    assert!(!text.contains("db error"), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");

    let missing = server.url(ROLE, Some(PASSWORD), "localhost", &server.verify_full());
    let missing = missing.replace("/app?", "/no_such_db?");
    let text = lockplane
        .attach(&missing, None)
        .await
        .expect_err("missing database")
        .to_string();
    assert!(
        text.contains("database \"no_such_db\" does not exist"),
        "{text}"
    );

    let plaintext = server.password_url("sslmode=disable");
    let text = lockplane
        .attach(&plaintext, None)
        .await
        .expect_err("plaintext")
        .to_string();
    assert!(text.contains("no encryption"), "{text}");
}
