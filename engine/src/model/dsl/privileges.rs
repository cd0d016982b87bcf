//! Privilege names and the DSL's shorthands for them.
//!
//! | written | means |
//! |---|---|
//! | `all` on a table or view | select, insert, update, delete, truncate, references, trigger |
//! | `all` on a column | select, insert, update, references |
//! | `all` on a sequence | usage, select, update |
//! | `insert_update` | insert, update |
//!
//! `all` is spelled out rather than sent to Postgres as `GRANT ALL`: from Postgres 17 on,
//! `ALL` on a table also grants `MAINTAIN`, so the same words would mean different catalogs on
//! different servers. `maintain` can be granted by name.

use super::names::suggest;

/// What a grant is on: each kind has its own privileges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// An ordinary table.
    Table,
    /// A view (the table privileges apply).
    View,
    /// A table column.
    Column,
    /// A sequence.
    Sequence,
}

impl ObjectKind {
    /// The word used in messages.
    pub fn noun(self) -> &'static str {
        match self {
            ObjectKind::Table => "table",
            ObjectKind::View => "view",
            ObjectKind::Column => "column",
            ObjectKind::Sequence => "sequence",
        }
    }

    /// Every privilege of the kind, in canonical order.
    pub fn privileges(self) -> &'static [&'static str] {
        match self {
            ObjectKind::Table | ObjectKind::View => &[
                "select",
                "insert",
                "update",
                "delete",
                "truncate",
                "references",
                "trigger",
                "maintain",
            ],
            ObjectKind::Column => &["select", "insert", "update", "references"],
            ObjectKind::Sequence => &["usage", "select", "update"],
        }
    }

    /// What `all` means for the kind.
    pub fn all(self) -> &'static [&'static str] {
        match self {
            ObjectKind::Table | ObjectKind::View => &[
                "select",
                "insert",
                "update",
                "delete",
                "truncate",
                "references",
                "trigger",
            ],
            ObjectKind::Column => &["select", "insert", "update", "references"],
            ObjectKind::Sequence => &["usage", "select", "update"],
        }
    }
}

/// The shorthand for insert and update.
pub const INSERT_UPDATE: &str = "insert_update";

/// The privileges `written` stands for on an object of `kind`; `Err` carries a hint.
pub fn expand(written: &str, kind: ObjectKind) -> Result<Vec<&'static str>, String> {
    let word = written.to_ascii_lowercase();
    if word == "all" {
        return Ok(kind.all().to_vec());
    }
    if word == INSERT_UPDATE && kind != ObjectKind::Sequence {
        return Ok(vec!["insert", "update"]);
    }
    if let Some(p) = kind.privileges().iter().find(|p| **p == word) {
        return Ok(vec![*p]);
    }
    let mut candidates: Vec<&str> = kind.privileges().to_vec();
    candidates.push("all");
    if kind != ObjectKind::Sequence {
        candidates.push(INSERT_UPDATE);
    }
    // A privilege of another kind of object (`delete` on a column) is no typo: a near word
    // (`select`) would be a wrong suggestion.
    let elsewhere = [ObjectKind::Table, ObjectKind::Column, ObjectKind::Sequence]
        .iter()
        .any(|k| k.privileges().contains(&word.as_str()));
    Err(match suggest(&word, &candidates).filter(|_| !elsewhere) {
        Some(s) => format!("did you mean `{s}`?"),
        None => format!("expected one of {}", candidates.join(", ")),
    })
}

/// The shortest way to write a set of privileges: `all` and `insert_update` where they fit,
/// the rest in canonical order.
pub fn compress(privileges: &[&str], kind: ObjectKind) -> Vec<String> {
    let has = |p: &str| privileges.contains(&p);
    let mut out = Vec::new();
    let mut rest: Vec<&str> = kind
        .privileges()
        .iter()
        .copied()
        .filter(|p| has(p))
        .collect();
    // Privileges of another kind (never produced by the reader) are kept, sorted, so that
    // nothing is lost.
    let mut foreign: Vec<&str> = privileges
        .iter()
        .copied()
        .filter(|p| !kind.privileges().contains(p))
        .collect();
    foreign.sort_unstable();
    foreign.dedup();
    if kind.all().iter().all(|p| has(p)) {
        out.push("all".to_owned());
        rest.retain(|p| !kind.all().contains(p));
    } else if kind != ObjectKind::Sequence && has("insert") && has("update") && rest.len() == 2 {
        out.push(INSERT_UPDATE.to_owned());
        rest.clear();
    }
    out.extend(rest.iter().map(|p| (*p).to_owned()));
    out.extend(foreign.iter().map(|p| (*p).to_owned()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorthands() {
        assert_eq!(
            expand("insert_update", ObjectKind::Table).unwrap(),
            ["insert", "update"]
        );
        assert_eq!(expand("all", ObjectKind::Table).unwrap().len(), 7);
        assert_eq!(expand("SELECT", ObjectKind::Table).unwrap(), ["select"]);
        assert_eq!(
            expand("all", ObjectKind::Sequence).unwrap(),
            ["usage", "select", "update"]
        );
        assert_eq!(
            expand("selct", ObjectKind::Table).unwrap_err(),
            "did you mean `select`?"
        );
        // A privilege of another kind gets the list, not a near word.
        assert_eq!(
            expand("delete", ObjectKind::Column).unwrap_err(),
            "expected one of select, insert, update, references, all, insert_update"
        );
        assert!(expand("usage", ObjectKind::Table).is_err());
    }

    #[test]
    fn compression_round_trips() {
        for kind in [ObjectKind::Table, ObjectKind::Column, ObjectKind::Sequence] {
            let all = kind.privileges();
            // Every subset of the kind's privileges.
            for mask in 1u32..(1 << all.len()) {
                let set: Vec<&str> = all
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, p)| *p)
                    .collect();
                let written = compress(&set, kind);
                let mut back: Vec<&str> = written
                    .iter()
                    .flat_map(|w| expand(w, kind).unwrap())
                    .collect();
                back.sort_unstable();
                back.dedup();
                let mut want = set.clone();
                want.sort_unstable();
                assert_eq!(back, want, "{kind:?} {written:?}");
            }
        }
        assert_eq!(
            compress(&["insert", "update"], ObjectKind::Table),
            ["insert_update"]
        );
        assert_eq!(compress(&["select"], ObjectKind::Table), ["select"]);
    }
}
