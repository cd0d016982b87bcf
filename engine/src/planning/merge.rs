//! Three-way merge of catalogs at object granularity (DESIGN §6).
//!
//! Two proposals made from the same base combine when they change different objects or make the
//! same change; different changes to one object are a [`Conflict`] reported with the base and
//! both sides. Nothing here touches a database.
//!
//! **Rebasing** needs no function of its own: a proposal whose base `B0` is no longer live, with
//! target `T`, is rebased onto the live catalog `L` by `merge(B0, T, L)`. Objects only live
//! changed flow into the result; objects only the proposal changed keep the proposal's version.
//!
//! **A document read at a base** is the same rule with the document as ours and live as theirs
//! ([`rebase_document`]): the planner aims a document whose `base:` is no longer live at
//! `rebase_document(base, materialised document, live)`, so what others changed since the
//! document was read is kept, not reverted. [`ConflictSides`] words the message for either
//! use, each object with both versions ([`Conflict::describe`]).
//!
//! # What an object is
//!
//! Each entry of a keyed collection of the model is one object, and the rule for it is: if ours
//! equals base take theirs; if theirs equals base, or both sides agree, take ours; otherwise it
//! is a conflict. Absence is a value like any other, so deleting on one side while changing on
//! the other, and adding the same name on both sides with different content, are conflicts.
//!
//! - Extensions, views, sequences, enum types, columns, constraints, indexes and policies are
//!   whole objects, their grants and comments included.
//! - A schema whose three versions all exist is merged inside: its comment is one object, and its
//!   tables, views, sequences and enums are merged by name.
//! - A table whose three versions all exist is merged inside: its own attributes (`unlogged`, RLS
//!   enabled/forced, comment) are one object, and its columns, constraints, indexes and policies
//!   are merged by name. Its grants are a set: each grant is merged on membership, since each is
//!   granted and revoked on its own.
//! - A schema or table that is missing on some side is one object: adding the same schema or
//!   table on both sides with different content is a conflict rather than a union neither side
//!   wrote.
//! - `unsupported` is a set merged on membership, like table grants.
//!
//! Conflict paths name objects the way the rest of the engine does (`diff`, `exec::drift`):
//! `extension pgcrypto`, `schema app`, `table public.users`, `column public.users.email`,
//! `constraint public.users.users_pkey`, `index public.users.users_email_idx`,
//! `policy public.users.own_rows`, `view public.v`, `sequence public.s`, `enum public.mood`,
//! and `format` for the manifest version.
//!
//! The merge is structural: it does not check that the result is consistent (an index one side
//! added on a column the other side dropped merges cleanly). Planning the merged catalog
//! materialises it on a shadow database, which refuses such a catalog with Postgres' own error.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::catalog::{Catalog, Rls, Schema, Table};
use crate::hash::CatalogHash;

/// One object changed differently on the two sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// The object, e.g. `column public.users.email` (see the module documentation).
    pub path: String,
    /// The object in the base catalog, `None` when it did not exist there.
    pub base: Option<Value>,
    /// The object on our side, `None` when ours deleted (or never added) it.
    pub ours: Option<Value>,
    /// The object on their side, `None` when theirs deleted (or never added) it.
    pub theirs: Option<Value>,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match (&self.base, &self.ours, &self.theirs) {
            (None, _, _) => "added on both sides with different content",
            (Some(_), None, _) => "deleted by ours, changed by theirs",
            (Some(_), _, None) => "changed by ours, deleted by theirs",
            (Some(_), Some(_), Some(_)) => "changed differently on both sides",
        };
        write!(f, "{}: {what}", self.path)
    }
}

impl Conflict {
    /// The conflict with each side's version, `ours` and `theirs` naming the sides: `column
    /// public.items.price: changed by the document and on live (the document: {"data_type":
    /// "bigint", …}; live: {"data_type":"numeric", …}; base: {"data_type":"integer", …})`.
    /// Each version is its compact JSON without `null` fields and empty lists, cut at 300
    /// characters; `absent` where the object does not exist.
    pub fn describe(&self, ours: &str, theirs: &str) -> String {
        let what = match (&self.base, &self.ours, &self.theirs) {
            (None, _, _) => format!("added by {ours} and by {theirs} with different content"),
            (Some(_), None, _) => format!("deleted by {ours}, changed by {theirs}"),
            (Some(_), _, None) => format!("changed by {ours}, deleted by {theirs}"),
            (Some(_), Some(_), Some(_)) => format!("changed differently by {ours} and {theirs}"),
        };
        format!(
            "{}: {what} ({ours}: {}; {theirs}: {}; base: {})",
            self.path,
            brief(self.ours.as_ref()),
            brief(self.theirs.as_ref()),
            brief(self.base.as_ref()),
        )
    }
}

/// One side of a conflict for a message: compact JSON without `null` fields and empty lists
/// (at the top level), cut at 300 characters.
fn brief(value: Option<&Value>) -> String {
    const LIMIT: usize = 300;
    let Some(value) = value else {
        return "absent".into();
    };
    let shown = match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    };
    let text = shown.to_string();
    match text.char_indices().nth(LIMIT) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

/// The two sides of a conflict, for its message: two plans merged, or a document and live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConflictSides {
    /// Two proposals merged (`merge`): ours is the first plan, theirs the second.
    Plans,
    /// A document read at `base` (ours), and the live database (theirs), now at `live`.
    Document {
        /// The document's `base:`.
        base: CatalogHash,
        /// The live hash.
        live: CatalogHash,
    },
}

impl ConflictSides {
    /// What went wrong and what to do, each conflict with both sides' versions
    /// ([`Conflict::describe`]).
    pub fn message(&self, conflicts: &[Conflict]) -> String {
        let n = conflicts.len();
        let objects = if n == 1 { "object" } else { "objects" };
        match self {
            ConflictSides::Plans => format!(
                "the plans conflict on {n} {objects}: {}; resolve by proposing one document with \
                 the change you want",
                conflicts
                    .iter()
                    .map(|c| c.describe("the first plan", "the second plan"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            ConflictSides::Document { base, live } => format!(
                "the document conflicts with changes made on the live database since its base \
                 {base} (live is now {live}) on {n} {objects}: {}; edit the document to keep \
                 the version you want (introspect again to start from live), or remove \
                 `base:` to make live match the document as written",
                conflicts
                    .iter()
                    .map(|c| c.describe("the document", "live"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }
    }
}

/// Why a merge failed: every conflicting object, in catalog order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct MergeConflicts {
    /// The conflicts; never empty when returned by [`merge`].
    pub conflicts: Vec<Conflict>,
}

impl fmt::Display for MergeConflicts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.conflicts.len();
        write!(f, "{n} conflict{}", if n == 1 { "" } else { "s" })?;
        for conflict in &self.conflicts {
            write!(f, "\n  - {conflict}")?;
        }
        Ok(())
    }
}

/// Three-way merges `ours` and `theirs`, both derived from `base`, object by object.
///
/// Inputs are canonicalised first, so list order never reads as a change; the result is
/// canonical. On failure every conflict is reported, not just the first.
pub fn merge(base: &Catalog, ours: &Catalog, theirs: &Catalog) -> Result<Catalog, MergeConflicts> {
    let [base, ours, theirs] = [base, ours, theirs].map(|c| {
        let mut c = c.clone();
        c.canonicalize();
        c
    });
    let mut m = Merger::default();
    let mut merged = Catalog {
        format: m.field(
            || "format".into(),
            &base.format,
            &ours.format,
            &theirs.format,
        ),
        extensions: m.map(
            &base.extensions,
            &ours.extensions,
            &theirs.extensions,
            |k| format!("extension {k}"),
            None,
        ),
        schemas: m.map(
            &base.schemas,
            &ours.schemas,
            &theirs.schemas,
            |k| format!("schema {k}"),
            Some(&|m: &mut Merger, k: &String, b, o, t| m.schema(k, b, o, t)),
        ),
        unsupported: set(&base.unsupported, &ours.unsupported, &theirs.unsupported),
        // Not part of a schema: the plan from live drops live's own.
        invalid_indexes: Vec::new(),
    };
    if m.conflicts.is_empty() {
        merged.canonicalize();
        Ok(merged)
    } else {
        Err(MergeConflicts {
            conflicts: m.conflicts,
        })
    }
}

/// The catalog a document read at `base` asks for, now that live is `live`: the three-way
/// [`merge`] with the document as ours and live as theirs.
///
/// `document` must be in Postgres' canonical form (the planner materialises a document on a
/// shadow database before comparing; `base` and `live` are introspected). Object by object:
/// what the document left as it was in `base` takes live's state (changes made since the
/// base are kept, not reverted), what only the document changed takes the document's, and
/// what both changed differently is a [`Conflict`] (ours = the document, theirs = live).
/// When live is still the base the result is the document; when the document is the base
/// the result is live.
pub fn rebase_document(
    base: &Catalog,
    document: &Catalog,
    live: &Catalog,
) -> Result<Catalog, MergeConflicts> {
    merge(base, document, live)
}

/// Merges the inside of an object both sides changed differently, instead of conflicting.
type Inner<'a, V> = &'a dyn Fn(&mut Merger, &String, &V, &V, &V) -> V;

#[derive(Default)]
struct Merger {
    conflicts: Vec<Conflict>,
}

impl Merger {
    /// The whole-object rule. On a conflict the value returned is irrelevant: the merge fails.
    fn pick<T: PartialEq + Clone + Serialize>(
        &mut self,
        path: impl FnOnce() -> String,
        base: Option<&T>,
        ours: Option<&T>,
        theirs: Option<&T>,
    ) -> Option<T> {
        if ours == base {
            return theirs.cloned();
        }
        if theirs == base || ours == theirs {
            return ours.cloned();
        }
        self.conflicts.push(Conflict {
            path: path(),
            base: base.map(json),
            ours: ours.map(json),
            theirs: theirs.map(json),
        });
        ours.cloned()
    }

    /// The whole-object rule for a value that exists on every side.
    fn field<T: PartialEq + Clone + Serialize>(
        &mut self,
        path: impl FnOnce() -> String,
        base: &T,
        ours: &T,
        theirs: &T,
    ) -> T {
        self.pick(path, Some(base), Some(ours), Some(theirs))
            .unwrap_or_else(|| ours.clone())
    }

    /// Merges a keyed collection entry by entry. With `inner`, an entry present on all three
    /// sides and changed differently by both is merged inside rather than conflicting.
    fn map<V: PartialEq + Clone + Serialize>(
        &mut self,
        base: &BTreeMap<String, V>,
        ours: &BTreeMap<String, V>,
        theirs: &BTreeMap<String, V>,
        path: impl Fn(&String) -> String,
        inner: Option<Inner<'_, V>>,
    ) -> BTreeMap<String, V> {
        let keys: BTreeSet<&String> = base
            .keys()
            .chain(ours.keys())
            .chain(theirs.keys())
            .collect();
        let mut out = BTreeMap::new();
        for key in keys {
            let (b, o, t) = (base.get(key), ours.get(key), theirs.get(key));
            let merged = match (b, o, t, inner) {
                (Some(b), Some(o), Some(t), Some(inner)) if o != b && t != b && o != t => {
                    Some(inner(self, key, b, o, t))
                }
                _ => self.pick(|| path(key), b, o, t),
            };
            if let Some(value) = merged {
                out.insert(key.clone(), value);
            }
        }
        out
    }

    fn schema(&mut self, name: &String, b: &Schema, o: &Schema, t: &Schema) -> Schema {
        Schema {
            comment: self.field(
                || format!("schema {name}"),
                &b.comment,
                &o.comment,
                &t.comment,
            ),
            tables: self.map(
                &b.tables,
                &o.tables,
                &t.tables,
                |k| format!("table {name}.{k}"),
                Some(&|m: &mut Merger, k: &String, b, o, t| m.table(name, k, b, o, t)),
            ),
            views: self.map(
                &b.views,
                &o.views,
                &t.views,
                |k| format!("view {name}.{k}"),
                None,
            ),
            sequences: self.map(
                &b.sequences,
                &o.sequences,
                &t.sequences,
                |k| format!("sequence {name}.{k}"),
                None,
            ),
            enums: self.map(
                &b.enums,
                &o.enums,
                &t.enums,
                |k| format!("enum {name}.{k}"),
                None,
            ),
        }
    }

    fn table(&mut self, schema: &str, name: &str, b: &Table, o: &Table, t: &Table) -> Table {
        let scope = format!("{schema}.{name}");
        let attrs = self.field(
            || format!("table {scope}"),
            &TableAttrs::of(b),
            &TableAttrs::of(o),
            &TableAttrs::of(t),
        );
        Table {
            columns: self.map(
                &b.columns,
                &o.columns,
                &t.columns,
                |k| format!("column {scope}.{k}"),
                None,
            ),
            constraints: self.map(
                &b.constraints,
                &o.constraints,
                &t.constraints,
                |k| format!("constraint {scope}.{k}"),
                None,
            ),
            indexes: self.map(
                &b.indexes,
                &o.indexes,
                &t.indexes,
                |k| format!("index {scope}.{k}"),
                None,
            ),
            rls: Rls {
                enabled: attrs.rls_enabled,
                forced: attrs.rls_forced,
                policies: self.map(
                    &b.rls.policies,
                    &o.rls.policies,
                    &t.rls.policies,
                    |k| format!("policy {scope}.{k}"),
                    None,
                ),
            },
            grants: set(&b.grants, &o.grants, &t.grants),
            unlogged: attrs.unlogged,
            comment: attrs.comment,
        }
    }
}

/// A table's own attributes, merged as one object; it is also what a conflict on them shows.
#[derive(Clone, PartialEq, Serialize)]
struct TableAttrs {
    unlogged: bool,
    rls_enabled: bool,
    rls_forced: bool,
    comment: Option<String>,
}

impl TableAttrs {
    fn of(table: &Table) -> TableAttrs {
        TableAttrs {
            unlogged: table.unlogged,
            rls_enabled: table.rls.enabled,
            rls_forced: table.rls.forced,
            comment: table.comment.clone(),
        }
    }
}

/// Membership merge: an element is in the result if ours changed its membership and has it, or
/// ours did not and theirs has it. Membership is yes or no, so two sides that both changed it
/// agree, and this never conflicts.
fn set<T: Ord + Clone>(base: &[T], ours: &[T], theirs: &[T]) -> Vec<T> {
    let [b, o, t] = [base, ours, theirs].map(|s| s.iter().collect::<BTreeSet<&T>>());
    b.iter()
        .chain(&o)
        .chain(&t)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|x| {
            let in_base = b.contains(*x);
            let in_ours = o.contains(*x);
            if in_ours != in_base {
                in_ours
            } else {
                t.contains(*x)
            }
        })
        .map(|x| (*x).clone())
        .collect()
}

/// The catalog types are plain data with string keys, so this cannot fail; should it ever, the
/// conflict still names the object and says why its value is missing.
fn json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value)
        .unwrap_or_else(|e| Value::String(format!("<not serialisable: {e}>")))
}
