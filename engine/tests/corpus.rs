//! Real public schemas (Chinook, Pagila) load, introspect, and hash the same on every load.

mod common;

use common::{database_with, read};
use lockplane_engine::{catalog_hash, testkit, Catalog, CatalogHash};

async fn load(file: &str) -> Option<(Catalog, CatalogHash)> {
    let sql = testkit::corpus_sql(file)?;
    let (_, mut client) = database_with(&sql).await;
    let catalog = read(&mut client).await;
    let hash = catalog_hash(&catalog).expect("hash");
    Some((catalog, hash))
}

#[tokio::test]
async fn chinook_introspects_the_same_on_two_loads() {
    let (Some((first, h1)), Some((_, h2))) =
        tokio::join!(load("chinook-schema.sql"), load("chinook-schema.sql"))
    else {
        return;
    };
    assert_eq!(h1, h2);
    let public = &first.schemas["public"];
    let tables: Vec<&str> = public.tables.keys().map(String::as_str).collect();
    assert_eq!(
        tables,
        [
            "album",
            "artist",
            "customer",
            "employee",
            "genre",
            "invoice",
            "invoice_line",
            "media_type",
            "playlist",
            "playlist_track",
            "track"
        ]
    );
    assert!(first.unsupported.is_empty(), "{:?}", first.unsupported);
    let fks = public
        .tables
        .values()
        .flat_map(|t| t.constraints.values())
        .filter(|c| {
            matches!(
                c.definition,
                lockplane_engine::catalog::ConstraintDef::ForeignKey { .. }
            )
        })
        .count();
    assert_eq!(fks, 11);
}

#[tokio::test]
async fn pagila_introspects_the_same_on_two_loads_and_lists_what_it_cannot_manage() {
    let (Some((first, h1)), Some((_, h2))) =
        tokio::join!(load("pagila-schema.sql"), load("pagila-schema.sql"))
    else {
        return;
    };
    assert_eq!(h1, h2);
    let kinds = |kind: &str| -> Vec<String> {
        first
            .unsupported
            .iter()
            .filter(|u| u.kind == kind)
            .map(|u| u.name.clone())
            .collect()
    };
    assert!(kinds("function").contains(&"film_in_stock(integer, integer)".to_string()));
    assert!(kinds("trigger").contains(&"film.film_fulltext_trigger".to_string()));
    assert_eq!(kinds("domain"), ["bıgınt", "year"]);
    assert_eq!(kinds("partitioned table"), ["payment"]);
    assert_eq!(kinds("partition").len(), 7);
    assert_eq!(kinds("materialized view"), ["rental_by_category"]);
    assert_eq!(kinds("aggregate"), ["group_concat(text)"]);
    let public = &first.schemas["public"];
    assert_eq!(public.tables.len(), 14);
    assert_eq!(public.views.len(), 7);
    assert_eq!(
        public.enums["mpaa_rating"].labels,
        ["G", "PG", "PG-13", "R", "NC-17"]
    );
    // Partitions are not managed, so they are not tables here.
    assert!(!public.tables.contains_key("payment_p2022_01"));
}
