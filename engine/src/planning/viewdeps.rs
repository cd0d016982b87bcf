//! What a view's query reads, column by column, from pg_query's parse tree.
//!
//! Postgres records which columns a view depends on (`pg_depend`), and refuses to drop or
//! re-type exactly those; the catalog model does not carry that, so the planner works it out
//! from the query: every column reference is resolved against the relations in scope, the
//! way Postgres resolves it (innermost query level first, aliases hiding table names). Where
//! that cannot be decided (a name a sub-query or a view might also provide, a reference that
//! resolves to nothing), the answer errs on the side of reading more: every table in scope
//! with a column of that name, or a whole table. Reading too much only re-creates a view
//! that could have stayed.
//!
//! The same resolution tells where a column is named in the text, which is what modelling a
//! `RENAME COLUMN` on a view's stored text needs ([`rename_column`]).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::catalog::Catalog;
use crate::ident::quote_ident;

/// A column of a table: `(schema, table, column)`.
pub(crate) type ColumnKey = (String, String, String);

/// What a view query reads from the tables of a catalog.
#[derive(Debug, Default)]
pub(crate) struct Reads {
    /// Columns read (possibly more than the query really reads, never fewer).
    pub columns: BTreeSet<ColumnKey>,
    /// Tables read as a whole (`t.*`, a whole-row reference, `NATURAL JOIN`, or a reference
    /// that could not be resolved): every column counts as read.
    pub whole: BTreeSet<(String, String)>,
    /// Every column reference, in the order met.
    uses: Vec<Use>,
    /// A reference resolved to nothing, so the whole query may read anything in scope.
    unresolved: bool,
}

impl Reads {
    /// Whether the query reads column `column` of `schema.table`.
    pub fn reads(&self, schema: &str, table: &str, column: &str) -> bool {
        self.whole.contains(&(schema.to_owned(), table.to_owned()))
            || self
                .columns
                .contains(&(schema.to_owned(), table.to_owned(), column.to_owned()))
    }
}

/// One column reference in the text.
#[derive(Debug)]
struct Use {
    /// Byte offset of the reference's first name in the query text.
    location: usize,
    /// How many names it has (`t.c` has two).
    parts: usize,
    /// The column it certainly is, when resolution is certain.
    exact: Option<ColumnKey>,
    /// Every table column it may be.
    candidates: Vec<ColumnKey>,
    /// A bare column reference without `AS` in the output list of its query level: its name
    /// is that output column's name.
    output: bool,
    /// The `AS` name of a bare column reference in an output list.
    alias: Option<String>,
}

#[derive(Debug, Clone)]
enum Source {
    /// A table of the catalog.
    Table(String, String),
    /// A join written with an alias: its relations are reached through the alias.
    Join(Vec<Entry>),
    /// Anything whose columns the catalog does not list: a sub-query, a function, a CTE, a
    /// view.
    Opaque,
}

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    source: Source,
}

impl Entry {
    /// The tables of this entry and of the joins inside it.
    fn tables(&self, out: &mut Vec<(String, String)>) {
        match &self.source {
            Source::Table(s, t) => out.push((s.clone(), t.clone())),
            Source::Join(inner) => inner.iter().for_each(|e| e.tables(out)),
            Source::Opaque => {}
        }
    }

    /// The entries whose columns an unqualified name may be (joins flattened).
    fn flat<'e>(&'e self, out: &mut Vec<&'e Entry>) {
        match &self.source {
            Source::Join(inner) => inner.iter().for_each(|e| e.flat(out)),
            _ => out.push(self),
        }
    }
}

/// The relations of one query level.
type Scope = Vec<Entry>;

/// What `definition` reads from the tables of `catalog`; `None` when it does not parse.
pub(crate) fn reads(definition: &str, catalog: &Catalog) -> Option<Reads> {
    let parsed = pg_query::parse(definition, 0).ok()?;
    let tree = serde_json::to_value(&parsed.protobuf).ok()?;
    let stmt = tree.pointer("/stmts/0/stmt/node/SelectStmt")?;
    let mut walker = Walker {
        catalog,
        scopes: Vec::new(),
        reads: Reads::default(),
        outputs: BTreeSet::new(),
        aliases: BTreeMap::new(),
    };
    walker.select(stmt);
    Some(walker.reads)
}

fn list<'v>(v: &'v Value, key: &str) -> &'v [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn text<'v>(v: &'v Value, key: &str) -> &'v str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

enum Field {
    Name(String),
    Star,
}

fn fields(column_ref: &Value) -> Vec<Field> {
    list(column_ref, "fields")
        .iter()
        .filter_map(|f| {
            if let Some(s) = f.pointer("/node/String/sval").and_then(Value::as_str) {
                Some(Field::Name(s.to_owned()))
            } else if f.pointer("/node/AStar").is_some() {
                Some(Field::Star)
            } else {
                None
            }
        })
        .collect()
}

fn last_field(column_ref: &Value) -> Option<Field> {
    fields(column_ref).pop()
}

struct Walker<'c> {
    catalog: &'c Catalog,
    scopes: Vec<Scope>,
    reads: Reads,
    outputs: BTreeSet<usize>,
    /// Locations of bare column references given an `AS` in an output list, with the name.
    aliases: BTreeMap<usize, String>,
}

impl Walker<'_> {
    /// Any node: selects open a query level, column references are resolved, everything else
    /// is searched through.
    fn walk(&mut self, v: &Value) {
        match v {
            Value::Object(map) => {
                if let Some(select) = map.get("SelectStmt") {
                    self.select(select);
                } else if let Some(column) = map.get("ColumnRef") {
                    self.column_ref(column);
                } else {
                    for child in map.values() {
                        self.walk(child);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| self.walk(i)),
            _ => {}
        }
    }

    fn select(&mut self, select: &Value) {
        if let Some(with) = select.get("with_clause").filter(|w| !w.is_null()) {
            for cte in list(with, "ctes") {
                if let Some(query) = cte.pointer("/node/CommonTableExpr/ctequery") {
                    self.walk(query);
                }
            }
        }
        // A set operation: each branch is a query of its own; ORDER BY names output columns.
        if select.get("op").and_then(Value::as_i64).unwrap_or(1) > 1 {
            for side in ["larg", "rarg"] {
                if let Some(branch) = select.get(side).filter(|b| !b.is_null()) {
                    self.select(branch);
                }
            }
            return;
        }
        // Postgres stores the name of every output column of every query level, and prints
        // `AS name` once a bare column reference no longer has that name.
        for target in list(select, "target_list") {
            let Some(t) = target.pointer("/node/ResTarget") else {
                continue;
            };
            let column = t.pointer("/val/node/ColumnRef");
            let location = column
                .and_then(|c| c.get("location"))
                .and_then(Value::as_u64)
                .and_then(|l| usize::try_from(l).ok());
            let star = column.is_some_and(|c| matches!(last_field(c), Some(Field::Star)));
            match (location, text(t, "name"), star) {
                (Some(location), "", false) => {
                    self.outputs.insert(location);
                }
                (Some(location), name, false) => {
                    self.aliases.insert(location, name.to_owned());
                }
                _ => {}
            }
        }
        self.scopes.push(Vec::new());
        for item in list(select, "from_clause") {
            if let Some(entry) = self.range_item(item) {
                if let Some(scope) = self.scopes.last_mut() {
                    scope.push(entry);
                }
            }
        }
        for key in [
            "target_list",
            "where_clause",
            "group_clause",
            "having_clause",
            "window_clause",
            "values_lists",
            "sort_clause",
            "distinct_clause",
            "limit_offset",
            "limit_count",
        ] {
            if let Some(part) = select.get(key) {
                self.walk(part);
            }
        }
        self.scopes.pop();
    }

    /// One item of a FROM list, as the entry it adds to the scope. Join conditions and the
    /// queries of sub-selects and functions are walked on the way.
    fn range_item(&mut self, item: &Value) -> Option<Entry> {
        let node = item.get("node")?;
        let alias = |v: &Value| {
            v.pointer("/alias/aliasname")
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        if let Some(r) = node.get("RangeVar") {
            let (schema, name) = (text(r, "schemaname"), text(r, "relname"));
            let is_table = !schema.is_empty()
                && self
                    .catalog
                    .schemas
                    .get(schema)
                    .is_some_and(|s| s.tables.contains_key(name));
            return Some(Entry {
                name: alias(r).unwrap_or_else(|| name.to_owned()),
                source: if is_table {
                    Source::Table(schema.to_owned(), name.to_owned())
                } else {
                    Source::Opaque
                },
            });
        }
        if let Some(j) = node.get("JoinExpr") {
            let mut inner = Vec::new();
            for side in ["larg", "rarg"] {
                if let Some(entry) = j.get(side).and_then(|s| self.range_item(s)) {
                    inner.push(entry);
                }
            }
            let join = Entry {
                name: String::new(),
                source: Source::Join(inner.clone()),
            };
            let mut tables = Vec::new();
            join.tables(&mut tables);
            if j.get("is_natural").and_then(Value::as_bool) == Some(true) {
                self.reads.whole.extend(tables.iter().cloned());
            }
            for using in list(j, "using_clause") {
                if let Some(col) = using.pointer("/node/String/sval").and_then(Value::as_str) {
                    for (s, t) in &tables {
                        if self.has_column(s, t, col) {
                            self.reads
                                .columns
                                .insert((s.clone(), t.clone(), col.to_owned()));
                        }
                    }
                }
            }
            // The condition sees both sides (and the outer levels).
            if let Some(quals) = j.get("quals").filter(|q| !q.is_null()) {
                self.scopes.push(inner.clone());
                self.walk(quals);
                self.scopes.pop();
            }
            return Some(match alias(j) {
                Some(name) => Entry {
                    name,
                    source: Source::Join(inner),
                },
                None => join,
            });
        }
        if let Some(sub) = node.get("RangeSubselect") {
            if let Some(query) = sub.get("subquery") {
                self.walk(query);
            }
            return Some(Entry {
                name: alias(sub).unwrap_or_default(),
                source: Source::Opaque,
            });
        }
        // Functions, table samples, XML tables: walk their arguments; their columns are
        // their own.
        let name = node
            .as_object()
            .and_then(|m| m.values().next())
            .and_then(alias)
            .unwrap_or_default();
        self.walk(node);
        Some(Entry {
            name,
            source: Source::Opaque,
        })
    }

    fn has_column(&self, schema: &str, table: &str, column: &str) -> bool {
        self.catalog
            .schemas
            .get(schema)
            .and_then(|s| s.tables.get(table))
            .is_some_and(|t| t.columns.contains_key(column))
    }

    /// Every table visible from the current level, for references that resolve to nothing.
    fn all_tables(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for scope in &self.scopes {
            for entry in scope {
                entry.tables(&mut out);
            }
        }
        out
    }

    fn any_opaque(&self) -> bool {
        let mut flat = Vec::new();
        self.scopes.iter().flatten().for_each(|e| e.flat(&mut flat));
        flat.iter().any(|e| matches!(e.source, Source::Opaque))
    }

    fn unresolved(&mut self) {
        self.reads.unresolved = true;
        let all = self.all_tables();
        self.reads.whole.extend(all);
    }

    /// The entry named `name` at the innermost level that has one. Relations inside a join
    /// without alias are visible by their own names; inside an aliased join they are not.
    fn named(&self, name: &str) -> Option<Entry> {
        fn find(entries: &[Entry], name: &str) -> Option<Entry> {
            entries.iter().find_map(|e| match &e.source {
                Source::Join(inner) if e.name.is_empty() => find(inner, name),
                _ if e.name == name => Some(e.clone()),
                _ => None,
            })
        }
        self.scopes.iter().rev().find_map(|s| find(s, name))
    }

    /// An unqualified column name among `levels`, innermost first: the tables that may
    /// provide it, and whether exactly one certainly does.
    fn unqualified<'s>(
        &self,
        levels: impl Iterator<Item = &'s Scope>,
        column: &str,
    ) -> (Vec<ColumnKey>, Option<ColumnKey>) {
        let mut candidates = Vec::new();
        let mut certain = true;
        for scope in levels {
            let mut flat = Vec::new();
            scope.iter().for_each(|e| e.flat(&mut flat));
            let mut opaque = false;
            let mut here = Vec::new();
            for e in flat {
                match &e.source {
                    Source::Table(s, t) if self.has_column(s, t, column) => {
                        here.push((s.clone(), t.clone(), column.to_owned()))
                    }
                    Source::Opaque => opaque = true,
                    _ => {}
                }
            }
            if here.is_empty() && !opaque {
                continue;
            }
            let exact = (certain && !opaque && here.len() == 1).then(|| here[0].clone());
            candidates.extend(here);
            if !opaque {
                return (candidates, exact);
            }
            // An opaque relation may provide the name and hide the outer levels; keep
            // collecting so nothing read is missed.
            certain = false;
        }
        (candidates, None)
    }

    fn column_ref(&mut self, column_ref: &Value) {
        let location = column_ref
            .get("location")
            .and_then(Value::as_u64)
            .and_then(|l| usize::try_from(l).ok());
        let fields = fields(column_ref);
        let star = matches!(fields.last(), Some(Field::Star));
        let names: Vec<&str> = fields
            .iter()
            .filter_map(|f| match f {
                Field::Name(n) => Some(n.as_str()),
                Field::Star => None,
            })
            .collect();
        if star {
            match names.as_slice() {
                [] => {
                    let mut tables = Vec::new();
                    if let Some(scope) = self.scopes.last() {
                        scope.iter().for_each(|e| e.tables(&mut tables));
                    }
                    self.reads.whole.extend(tables);
                }
                [q] => match self.named(q) {
                    Some(e) => {
                        let mut tables = Vec::new();
                        e.tables(&mut tables);
                        self.reads.whole.extend(tables);
                    }
                    None => self.unresolved(),
                },
                _ => self.unresolved(),
            }
            return;
        }
        let (candidates, exact) = match names.as_slice() {
            [column] => {
                let (candidates, exact) = self.unqualified(self.scopes.iter().rev(), column);
                if candidates.is_empty() {
                    // Not a column anywhere: a whole-row reference to a relation of that name.
                    match self.named(column) {
                        Some(e) => {
                            let mut tables = Vec::new();
                            e.tables(&mut tables);
                            self.reads.whole.extend(tables);
                        }
                        // An opaque relation may well have a column of that name.
                        None if self.any_opaque() => {}
                        None => self.unresolved(),
                    }
                }
                (candidates, exact)
            }
            [q, column] => match self.named(q) {
                Some(Entry {
                    source: Source::Table(s, t),
                    ..
                }) => {
                    let key = (s, t, (*column).to_owned());
                    (vec![key.clone()], Some(key))
                }
                Some(Entry {
                    source: Source::Join(inner),
                    ..
                }) => self.unqualified(std::iter::once(&inner), column),
                Some(_) => (Vec::new(), None),
                None => {
                    self.unresolved();
                    (Vec::new(), None)
                }
            },
            [s, t, column] => {
                let visible = self.named(t).is_some_and(
                    |e| matches!(&e.source, Source::Table(es, et) if es == s && et == t),
                );
                if visible {
                    let key = ((*s).to_owned(), (*t).to_owned(), (*column).to_owned());
                    (vec![key.clone()], Some(key))
                } else {
                    self.unresolved();
                    (Vec::new(), None)
                }
            }
            _ => {
                self.unresolved();
                (Vec::new(), None)
            }
        };
        self.reads.columns.extend(candidates.iter().cloned());
        if let Some(location) = location {
            self.reads.uses.push(Use {
                location,
                parts: names.len(),
                exact,
                candidates,
                output: self.outputs.contains(&location),
                alias: self.aliases.get(&location).cloned(),
            });
        }
    }
}

/// `definition` (a normalised view query reading the tables of `catalog`) as Postgres prints
/// it after `ALTER TABLE schema.table RENAME COLUMN from TO to`: references to the column
/// follow the rename, and an output column that was a bare reference to it keeps its name
/// (`t.to AS from`), since renaming a table column never renames a view's columns.
///
/// `None` when that cannot be told for certain (a reference that may or may not be the
/// renamed column); the caller then treats the view as changed, which re-creates it.
pub(crate) fn rename_column(
    definition: &str,
    catalog: &Catalog,
    (schema, table): (&str, &str),
    from: &str,
    to: &str,
) -> Option<String> {
    let reads = reads(definition, catalog)?;
    let target: ColumnKey = (schema.to_owned(), table.to_owned(), from.to_owned());
    if reads.unresolved {
        let touched = reads.whole.contains(&(schema.to_owned(), table.to_owned()));
        return (!touched).then(|| definition.to_owned());
    }
    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    for u in &reads.uses {
        if !u.candidates.contains(&target) {
            continue;
        }
        if u.exact.as_ref() != Some(&target) {
            return None;
        }
        let mut last = last_name(definition, u.location, u.parts)?;
        let mut replacement = quote_ident(to);
        if u.output {
            replacement.push_str(" AS ");
            replacement.push_str(&quote_ident(from));
        }
        // `from AS to` becomes plain `to`: Postgres prints no `AS` that repeats the name.
        if u.alias.as_deref() == Some(to) {
            last.end = as_clause_end(definition, last.end)?;
        }
        edits.push((last, replacement));
    }
    if edits.is_empty() {
        return Some(definition.to_owned());
    }
    edits.sort_by_key(|(range, _)| range.start);
    let mut out = String::with_capacity(definition.len() + 16);
    let mut at = 0;
    for (range, replacement) in edits {
        out.push_str(definition.get(at..range.start)?);
        out.push_str(&replacement);
        at = range.end;
    }
    out.push_str(definition.get(at..)?);
    crate::normalize::view_query(&out).ok()
}

/// Where the ` AS name` that follows a column reference ending at `at` ends.
fn as_clause_end(text: &str, at: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = at;
    while bytes.get(i)?.is_ascii_whitespace() {
        i += 1;
    }
    if !text.get(i..i + 2)?.eq_ignore_ascii_case("as") {
        return None;
    }
    i += 2;
    if !bytes.get(i)?.is_ascii_whitespace() {
        return None;
    }
    while bytes.get(i)?.is_ascii_whitespace() {
        i += 1;
    }
    last_name(text, i, 1).map(|r| r.end)
}

/// The byte range of the last of the `parts` dotted names starting at `start`.
fn last_name(text: &str, start: usize, parts: usize) -> Option<std::ops::Range<usize>> {
    let bytes = text.as_bytes();
    let mut i = start;
    let mut last = None;
    for part in 0..parts {
        if part > 0 {
            while bytes.get(i)?.is_ascii_whitespace() {
                i += 1;
            }
            if *bytes.get(i)? != b'.' {
                return None;
            }
            i += 1;
            while bytes.get(i)?.is_ascii_whitespace() {
                i += 1;
            }
        }
        let begin = i;
        if *bytes.get(i)? == b'"' {
            i += 1;
            loop {
                if *bytes.get(i)? == b'"' {
                    if bytes.get(i + 1) == Some(&b'"') {
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                i += 1;
            }
        } else {
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric()
                    || bytes[i] == b'_'
                    || bytes[i] == b'$'
                    || bytes[i] >= 0x80)
            {
                i += 1;
            }
            if i == begin {
                return None;
            }
        }
        last = Some(begin..i);
    }
    last
}

/// When `old` and `new` are the same query but for the names of output columns: the view
/// columns to rename, in order, as `ALTER VIEW … RENAME COLUMN` would take them (no rename
/// may land on a name still in use). `None` when the queries differ otherwise, or the names
/// cannot be told (a set operation, an output without a name).
pub(crate) fn column_renames(old: &str, new: &str) -> Option<Vec<(String, String)>> {
    use pg_query::NodeEnum;
    let shape = |text: &str| -> Option<(String, Vec<String>)> {
        let mut parsed = pg_query::parse(text, 0).ok()?;
        let select = crate::normalize::plain_select(&mut parsed)?;
        let mut names = Vec::new();
        for target in &mut select.target_list {
            let Some(NodeEnum::ResTarget(t)) = target.node.as_mut() else {
                return None;
            };
            let name = if t.name.is_empty() {
                // Postgres prints `AS` for every output but a plain column reference, whose
                // name is the column's.
                let column = match t.val.as_ref()?.node.as_ref()? {
                    NodeEnum::ColumnRef(c) => c,
                    _ => return None,
                };
                match column.fields.last()?.node.as_ref()? {
                    NodeEnum::String(s) => s.sval.clone(),
                    _ => return None,
                }
            } else {
                std::mem::take(&mut t.name)
            };
            names.push(name);
        }
        let text = pg_query::deparse(&parsed.protobuf, Default::default()).ok()?;
        Some((text, names))
    };
    let (old_text, old_names) = shape(old)?;
    let (new_text, new_names) = shape(new)?;
    if old_text != new_text || old_names.len() != new_names.len() || old_names == new_names {
        return None;
    }
    let mut current = old_names.clone();
    let mut renames = Vec::new();
    for (i, wanted) in new_names.iter().enumerate() {
        if current[i] == *wanted {
            continue;
        }
        if current.contains(wanted) {
            return None;
        }
        renames.push((current[i].clone(), wanted.clone()));
        current[i] = wanted.clone();
    }
    Some(renames)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Column, Table};

    fn catalog(tables: &[(&str, &[&str])]) -> Catalog {
        let mut c = Catalog::default();
        let schema = c.schemas.entry("public".into()).or_default();
        for (name, columns) in tables {
            let table: &mut Table = schema.tables.entry((*name).into()).or_default();
            for col in *columns {
                table.columns.insert(
                    (*col).into(),
                    Column {
                        data_type: "integer".into(),
                        not_null: false,
                        default: None,
                        identity: None,
                        generated: None,
                        collation: None,
                        grants: Vec::new(),
                        comment: None,
                        position: Default::default(),
                    },
                );
            }
        }
        c
    }

    fn read(sql: &str, c: &Catalog) -> Vec<String> {
        let r = reads(sql, c).expect("parses");
        let mut out: Vec<String> = r
            .columns
            .iter()
            .map(|(_, t, c)| format!("{t}.{c}"))
            .collect();
        out.extend(r.whole.iter().map(|(_, t)| format!("{t}.*")));
        out
    }

    #[test]
    fn columns_are_resolved_by_scope() {
        let c = catalog(&[("t", &["a", "b", "c"]), ("u", &["a", "x"])]);
        assert_eq!(read("SELECT a FROM public.t", &c), ["t.a"]);
        assert_eq!(
            read(
                "SELECT t.a, u.x FROM public.t JOIN public.u ON t.b = u.a",
                &c
            ),
            ["t.a", "t.b", "u.a", "u.x"]
        );
        // Ambiguous to the parser: both count as read.
        assert_eq!(read("SELECT a FROM public.t, public.u", &c), ["t.a", "u.a"]);
        // A correlated sub-query reads the outer table's column.
        assert_eq!(
            read(
                "SELECT a FROM public.t WHERE EXISTS (SELECT 1 FROM public.u WHERE u.x = t.c)",
                &c
            ),
            ["t.a", "t.c", "u.x"]
        );
        // An alias hides the table's name; a sub-query's columns are its own.
        assert_eq!(
            read("SELECT s.a FROM (SELECT b AS a FROM public.t) s", &c),
            ["t.b"]
        );
        assert_eq!(read("SELECT x.* FROM public.u x", &c), ["u.*"]);
        assert_eq!(
            read("SELECT a FROM public.t JOIN public.u USING (a)", &c),
            ["t.a", "u.a"]
        );
        assert_eq!(read("SELECT row_to_json(t) FROM public.t", &c), ["t.*"]);
    }

    #[test]
    fn renames_keep_the_view_column_name() {
        let c = catalog(&[("t", &["id", "name"]), ("u", &["name"])]);
        let renamed = |sql: &str| rename_column(sql, &c, ("public", "t"), "name", "full_name");
        assert_eq!(
            renamed("SELECT id, name FROM public.t WHERE name <> ''").as_deref(),
            Some("SELECT id, full_name AS name FROM public.t WHERE full_name <> ''")
        );
        assert_eq!(
            renamed("SELECT t.id, upper(t.name) AS up, u.name FROM public.t, public.u").as_deref(),
            Some("SELECT t.id, upper(t.full_name) AS up, u.name FROM public.t, public.u")
        );
        assert_eq!(
            renamed("SELECT id FROM public.t").as_deref(),
            Some("SELECT id FROM public.t")
        );
        // An alias that the new name repeats is not printed.
        assert_eq!(
            renamed("SELECT id, name AS full_name FROM public.t").as_deref(),
            Some("SELECT id, full_name FROM public.t")
        );
        // Which table `name` is cannot be told: no model.
        assert_eq!(renamed("SELECT name FROM public.t, public.u"), None);
    }

    #[test]
    fn every_query_level_keeps_its_output_names() {
        let c = catalog(&[("t", &["id", "name"]), ("u", &["id", "name"])]);
        let renamed = |sql: &str| rename_column(sql, &c, ("public", "t"), "name", "full_name");
        assert_eq!(
            renamed("SELECT id, name FROM public.u UNION SELECT id, name FROM public.t").as_deref(),
            Some("SELECT id, name FROM public.u UNION SELECT id, full_name AS name FROM public.t")
        );
        assert_eq!(
            renamed("SELECT id FROM public.u WHERE name IN (SELECT t.name FROM public.t)")
                .as_deref(),
            Some(
                "SELECT id FROM public.u WHERE name IN (SELECT t.full_name AS name FROM public.t)"
            )
        );
    }

    #[test]
    fn output_names_only() {
        assert_eq!(
            column_renames(
                "SELECT id, full_name AS name FROM public.t",
                "SELECT id, full_name FROM public.t"
            ),
            Some(vec![("name".into(), "full_name".into())])
        );
        assert_eq!(
            column_renames(
                "SELECT a AS x, b AS y FROM t",
                "SELECT a AS y, b AS x FROM t"
            ),
            None
        );
        assert_eq!(
            column_renames("SELECT a FROM t", "SELECT b AS a FROM t"),
            None
        );
    }
}
