//! Documents that remember their base (issue 14 item 4), through the runtime against a real
//! server: agents introspect to YAML (which records `base:`), each edit their copy, and
//! propose and apply one after the other. A later plan keeps what the earlier ones did
//! (three-way: base, document, live) instead of dropping it; the same column changed two ways
//! is a conflict naming it with both versions; a document without `base:` is still planned
//! declaratively; a base the ledger does not hold is refused saying what to do.

use lockplane_actors::{CatalogHash, Config, DatabaseId, Error, Lockplane, ShadowConfig};
use lockplane_engine::dsl::{self, ColumnDecl, Document, TableDecl};
use lockplane_engine::merge::ConflictSides;
use lockplane_engine::testkit;

const BASE: &str = "CREATE SCHEMA app; \
                    CREATE TABLE app.items (id bigint PRIMARY KEY, name text, price int);";

struct Fixture {
    lockplane: Lockplane,
    db: DatabaseId,
    url: String,
    _ledger: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let cluster = testkit::shared_cluster().expect("cluster");
    let name = testkit::fresh_database("base").await.expect("database");
    let client = cluster.connect(&name).await.expect("connect");
    client.batch_execute(BASE).await.expect("setup sql");
    let ledger = tempfile::tempdir().expect("tempdir");
    let mut config = Config::new(ledger.path().join("ledger"));
    // The shared test cluster is the shadow server: no cluster start per test.
    config.shadow = ShadowConfig::Url(cluster.url("postgres"));
    config.lock_wait = std::time::Duration::from_secs(5);
    let lockplane = Lockplane::open(config).await.expect("open");
    let url = cluster.url(&name);
    let db = lockplane.attach(&url, None).await.expect("attach");
    Fixture {
        lockplane,
        db,
        url,
        _ledger: ledger,
    }
}

impl Fixture {
    /// What an agent starts from: the live catalog as a document, with the hash it was read
    /// at as `base:` (what `lockplane introspect --format yaml` writes).
    async fn introspected(&self, who: &str) -> Document {
        let seen = self
            .lockplane
            .introspect(&self.db, who)
            .await
            .expect("introspect");
        let text = dsl::to_yaml_with_base(&seen.catalog, Some(&seen.catalog_hash));
        let doc = dsl::parse_yaml(&format!("{who}.yaml"), &text).expect("parses");
        assert_eq!(doc.base.as_ref(), Some(&seen.catalog_hash));
        doc
    }

    async fn propose(
        &self,
        who: &str,
        doc: &Document,
    ) -> Result<lockplane_actors::Proposal, Error> {
        let text = dsl::document_to_yaml(doc);
        self.lockplane
            .propose(&self.db, &format!("{who}.yaml"), &text, who)
            .await
    }

    async fn propose_and_apply(&self, who: &str, doc: &Document) -> lockplane_actors::Proposal {
        let proposal = self
            .propose(who, doc)
            .await
            .unwrap_or_else(|e| panic!("{who} proposes: {e}"));
        assert!(
            !proposal.plan.requires_confirmation,
            "{who}: {:#?}",
            proposal.plan.steps
        );
        self.lockplane
            .apply(&self.db, &proposal.plan.plan_id, None, who)
            .await
            .unwrap_or_else(|e| panic!("{who} applies: {e}"));
        proposal
    }

    async fn query(&self, sql: &str) -> Vec<String> {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
            .query(sql, &[])
            .await
            .expect("query")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    async fn tables(&self) -> Vec<String> {
        self.query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = 'app' ORDER BY 1",
        )
        .await
    }

    async fn columns(&self, table: &str) -> Vec<String> {
        self.query(&format!(
            "SELECT column_name::text || ' ' || data_type::text FROM information_schema.columns \
             WHERE table_schema = 'app' AND table_name = '{table}' ORDER BY 1"
        ))
        .await
    }
}

fn column(name: &str, data_type: &str) -> ColumnDecl {
    ColumnDecl {
        name: name.into(),
        data_type: data_type.into(),
        ..ColumnDecl::default()
    }
}

/// Adds table `app.<name>` (id, note) to the document.
fn add_table(doc: &mut Document, name: &str) {
    let schema = doc
        .schemas
        .iter_mut()
        .find(|s| s.name == "app")
        .expect("schema app");
    schema.tables.push(TableDecl {
        name: name.into(),
        columns: vec![
            ColumnDecl {
                pk: true,
                ..column("id", "bigint")
            },
            column("note", "text"),
        ],
        ..TableDecl::default()
    });
}

fn items_column<'d>(doc: &'d mut Document, name: &str) -> &'d mut ColumnDecl {
    doc.schemas
        .iter_mut()
        .find(|s| s.name == "app")
        .and_then(|s| s.tables.iter_mut().find(|t| t.name == "items"))
        .and_then(|t| t.columns.iter_mut().find(|c| c.name == name))
        .expect("column of app.items")
}

fn no_drop(proposal: &lockplane_actors::Proposal) {
    for step in &proposal.plan.steps {
        assert!(!step.sql.contains("DROP"), "{}", step.sql);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn documents_read_at_one_base_keep_each_others_tables_and_renames() {
    let f = fixture().await;
    let base = f.introspected("agent-a").await.base.expect("base");
    // Three agents read the same catalog, each makes its own change.
    let (mut a, mut b, mut c) = (
        f.introspected("agent-a").await,
        f.introspected("agent-b").await,
        f.introspected("agent-c").await,
    );
    add_table(&mut a, "from_a");
    add_table(&mut b, "from_b");
    let renamed = items_column(&mut c, "name");
    renamed.renamed_from = Some("name".into());
    renamed.name = "title".into();

    let pa = f.propose_and_apply("agent-a", &a).await;
    assert_eq!(pa.plan.base_hash, base, "live was the base: a plain plan");

    // Live moved on since b's base: b's plan creates its table and drops nothing of a's.
    let pb = f.propose_and_apply("agent-b", &b).await;
    assert_ne!(pb.plan.base_hash, base);
    no_drop(&pb);
    assert_eq!(pb.plan.steps.len(), 1, "{:#?}", pb.plan.steps);
    assert!(
        pb.plan.steps[0].sql.contains("CREATE TABLE"),
        "{}",
        pb.plan.steps[0].sql
    );
    assert_eq!(f.tables().await, ["from_a", "from_b", "items"]);

    // The rename stays a rename, and both tables stay.
    let pc = f.propose_and_apply("agent-c", &c).await;
    no_drop(&pc);
    assert!(
        pc.plan
            .steps
            .iter()
            .any(|s| s.sql.contains("RENAME COLUMN")),
        "{:#?}",
        pc.plan.steps
    );
    assert_eq!(f.tables().await, ["from_a", "from_b", "items"]);
    assert_eq!(
        f.columns("items").await,
        ["id bigint", "price integer", "title text"]
    );

    // Planning a's document again changes nothing: what it did not touch keeps live's state.
    let again = f.propose("agent-a", &a).await.expect("propose again");
    assert!(again.plan.steps.is_empty(), "{:#?}", again.plan.steps);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_column_changed_two_ways_is_a_conflict_naming_it_and_both_sides() {
    let f = fixture().await;
    let (mut a, mut b) = (
        f.introspected("agent-a").await,
        f.introspected("agent-b").await,
    );
    let base = b.base.clone().expect("base");
    items_column(&mut a, "price").data_type = "bigint".into();
    items_column(&mut b, "price").data_type = "numeric".into();
    let pa = f.propose_and_apply("agent-a", &a).await;

    let refused = f.propose("agent-b", &b).await;
    let Err(e) = refused else {
        panic!("expected a conflict, got {refused:?}");
    };
    assert_eq!(e.code(), "conflict");
    let message = e.to_string();
    let Error::Conflict { conflicts, sides } = e else {
        panic!("expected a conflict, got {message}");
    };
    assert_eq!(
        sides,
        ConflictSides::Document {
            base: base.clone(),
            live: pa.predicted_hash.clone(),
        }
    );
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    let conflict = &conflicts[0];
    assert_eq!(conflict.path, "column app.items.price");
    let data_type = |side: &Option<serde_json::Value>| {
        side.as_ref()
            .and_then(|v| v["type"].as_str())
            .map(str::to_owned)
    };
    assert_eq!(data_type(&conflict.base).as_deref(), Some("integer"));
    assert_eq!(data_type(&conflict.ours).as_deref(), Some("numeric"));
    assert_eq!(data_type(&conflict.theirs).as_deref(), Some("bigint"));
    for part in [
        "column app.items.price",
        "the document: {",
        "\"numeric\"",
        "live: {",
        "\"bigint\"",
        base.0.as_str(),
        "remove `base:`",
    ] {
        assert!(message.contains(part), "`{part}` missing from: {message}");
    }
    // Nothing was recorded or changed: price is a's bigint.
    assert!(f
        .columns("items")
        .await
        .contains(&"price bigint".to_owned()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_document_without_base_is_planned_declaratively() {
    let f = fixture().await;
    let (mut a, mut b) = (
        f.introspected("agent-a").await,
        f.introspected("agent-b").await,
    );
    add_table(&mut a, "from_a");
    add_table(&mut b, "from_b");
    f.propose_and_apply("agent-a", &a).await;

    b.base = None;
    let pb = f.propose("agent-b", &b).await.expect("propose");
    assert!(pb.plan.requires_confirmation, "{:#?}", pb.plan.steps);
    assert!(
        pb.plan
            .steps
            .iter()
            .any(|s| s.sql.contains("DROP TABLE") && s.sql.contains("from_a")),
        "{:#?}",
        pb.plan.steps
    );
    let refused = f
        .lockplane
        .apply(&f.db, &pb.plan.plan_id, None, "agent-b")
        .await;
    assert!(
        matches!(refused, Err(Error::NeedsConfirmation { .. })),
        "{refused:?}"
    );
    assert_eq!(f.tables().await, ["from_a", "items"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_base_unknown_to_the_ledger_is_refused_saying_what_to_do() {
    let f = fixture().await;
    let mut doc = f.introspected("agent").await;
    add_table(&mut doc, "extra");
    let unknown = CatalogHash(format!("sha3-256:{}", "ab".repeat(32)));
    doc.base = Some(unknown.clone());
    let refused = f.propose("agent", &doc).await;
    let Err(e) = refused else {
        panic!("expected a refusal, got {refused:?}");
    };
    assert_eq!(e.code(), "unknown_base");
    assert!(
        matches!(&e, Error::UnknownBase { base } if *base == unknown),
        "{e:?}"
    );
    let message = e.to_string();
    for part in [
        unknown.0.as_str(),
        "not in the ledger",
        "introspect",
        "remove `base:`",
    ] {
        assert!(message.contains(part), "`{part}` missing from: {message}");
    }

    // A base that is live plans as a plain declarative document.
    let mut live = f.introspected("agent").await;
    add_table(&mut live, "extra");
    let plain = f.propose_and_apply("agent", &live).await;
    no_drop(&plain);
    assert_eq!(f.tables().await, ["extra", "items"]);
}
