//! What a document speaks about: the desired catalog a plan aims at, given the live one.

use crate::catalog::Catalog;
use crate::diff::Renames;

use super::{Document, RenameKind};

/// The comment `initdb` puts on the `public` schema.
pub const PUBLIC_SCHEMA_COMMENT: &str = "standard public schema";

/// The document's catalog, with what it does not speak about kept as it is live: schemas it
/// does not mention, the `plpgsql` extension every database has, objects Lockplane does not
/// manage, and the comment Postgres itself puts on `public` when the document gives that
/// schema no comment. A document that names a schema owns that schema completely otherwise,
/// so leaving a table out of a mentioned schema means dropping it.
pub fn scope_to_live(document: &Catalog, live: &Catalog) -> Catalog {
    let mut desired = document.clone();
    // Every database starts with this comment on `public`; a document that merely puts
    // tables there did not ask to remove it. (`comment: ""` removes it: Postgres drops an
    // empty comment.)
    let installed = live
        .schemas
        .get("public")
        .and_then(|s| s.comment.as_deref())
        .filter(|c| *c == PUBLIC_SCHEMA_COMMENT);
    if let (Some(public), Some(installed)) = (desired.schemas.get_mut("public"), installed) {
        if public.comment.is_none() {
            public.comment = Some(installed.to_owned());
        }
    }
    for (name, schema) in &live.schemas {
        desired
            .schemas
            .entry(name.clone())
            .or_insert_with(|| schema.clone());
    }
    if let Some(plpgsql) = live.extensions.get("plpgsql") {
        desired
            .extensions
            .entry("plpgsql".into())
            .or_insert_with(|| plpgsql.clone());
    }
    desired.unsupported = live.unsupported.clone();
    desired.canonicalize();
    desired
}

/// The document's `renamed_from` entries, as the planner takes them.
pub fn renames(document: &Document) -> Renames {
    document
        .renames()
        .into_iter()
        .fold(Renames::none(), |renames, r| match r.kind {
            RenameKind::Table => renames.table(&r.schema, &r.from, &r.to),
            RenameKind::Column => renames.column(&r.schema, &r.table, &r.from, &r.to),
        })
}
