//! The corpus schemas hash the same on every supported Postgres version.
//!
//! `LOCKPLANE_PG_MATRIX` lists other server builds as `major=bin_dir` pairs (`make test` fills
//! it from `scripts/pg-versions.sh`); the locally installed server is always included.

use lockplane_engine::cluster::{Cluster, PgBinaries};
use lockplane_engine::{catalog_hash, introspect, testkit, CatalogHash, IntrospectOptions};

const CORPUS: [&str; 2] = ["chinook-schema.sql", "pagila-schema.sql"];

fn matrix() -> Vec<PgBinaries> {
    if std::env::var("LOCKPLANE_PG_MATRIX")
        .unwrap_or_default()
        .trim()
        .is_empty()
    {
        eprintln!("LOCKPLANE_PG_MATRIX is empty: comparing the local server with itself only");
    }
    testkit::pg_matrix().expect("the matrix's Postgres binaries")
}

async fn corpus_hashes(bins: PgBinaries, corpus: &[(String, String)]) -> Vec<CatalogHash> {
    let cluster = tokio::task::spawn_blocking(move || Cluster::start(&bins))
        .await
        .expect("join")
        .expect("start cluster");
    let mut hashes = Vec::new();
    for (i, (_, sql)) in corpus.iter().enumerate() {
        let db = format!("corpus_{i}");
        cluster.create_database(&db).await.expect("create database");
        let mut client = cluster.connect(&db).await.expect("connect");
        client.batch_execute(sql).await.expect("load corpus");
        let catalog = introspect(&mut client, &IntrospectOptions::default())
            .await
            .expect("introspect");
        hashes.push(catalog_hash(&catalog).expect("hash"));
    }
    hashes
}

#[tokio::test]
async fn corpus_hashes_are_equal_across_postgres_versions() {
    let corpus: Vec<(String, String)> = CORPUS
        .iter()
        .filter_map(|f| testkit::corpus_sql(f).map(|sql| (f.to_string(), sql)))
        .collect();
    if corpus.is_empty() {
        return;
    }
    let mut rows = Vec::new();
    for bins in matrix() {
        let major = bins.major;
        rows.push((major, corpus_hashes(bins, &corpus).await));
    }
    for (major, hashes) in &rows {
        for ((file, _), hash) in corpus.iter().zip(hashes) {
            eprintln!("Postgres {major:>2}  {file:<22} {hash}");
        }
    }
    let (first_major, first) = &rows[0];
    for (major, hashes) in &rows[1..] {
        assert_eq!(
            hashes, first,
            "Postgres {major} and {first_major} disagree on the corpus hashes"
        );
    }
}
