//! The rules pgroll (v0.16) enforces in its code rather than in `schema.json`.
//!
//! pgroll's JSON Schema describes the shape of a migration; `Validate` in
//! `pkg/migrations/op_*.go` and its file reader refuse more. Three layers, each a function:
//!
//! - [`check_migration`]: what `Validate` refuses without looking at a database (`up`
//!   required for a NOT NULL column without default, both `up` and `down` for a type change,
//!   identifier length, CHECK constraints that cannot be deferrable or carry index parameters,
//!   a primary key given twice, `sql` isolation, …). pgroll's own schema test cases
//!   (`testdata/*.txtar`) hold only migrations these and the schema decide.
//! - [`check_file`]: plus the reader's rule: since 0.16 a migration's name is its file name
//!   and a `name` key makes the file unreadable (`DisallowUnknownFields`).
//! - [`check_sequence`]: plus what `Validate` checks against the schema it reads from the
//!   database (a table or column exists or not, a constraint is single- or multi-column, a
//!   column already is or is not nullable, an index name is free), against a virtual schema
//!   started from a Lockplane catalog and carried from one migration to the next the way
//!   pgroll would leave the database: within a migration only what pgroll's `Validate`
//!   itself records (a dropped index or constraint is still there until the migration
//!   completes), between migrations the full effect. Raw `sql` is opaque to it, as to pgroll.
//!
//! Every rule names its source in pgroll, so a rule can be checked against the Go code.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::catalog::{Catalog, ConstraintDef};

/// Postgres' identifier limit, which pgroll checks in bytes (`ValidateIdentifierLength`).
const MAX_IDENTIFIER: usize = 63;

/// One rule a migration breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Where: `migrations[1].operations[2].alter_column`, `operations[0]`, …
    pub at: String,
    /// What pgroll would say, in words.
    pub rule: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.rule)
    }
}

/// The code-level rules of pgroll's `Validate` that need no database, for one migration (the
/// JSON of a migration file). Empty when none is broken. Shape errors are the schema's
/// business: a field of the wrong type is skipped here.
pub fn check_migration(migration: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    let Some(ops) = migration.get("operations").and_then(Value::as_array) else {
        return out;
    };
    // migrations.go, Migration.Validate: an isolated operation (raw SQL run at start) must be
    // alone in its migration.
    if ops.len() > 1 {
        for (i, op) in ops.iter().enumerate() {
            if let Some(("sql", body)) = split(op) {
                if !flag(body, "onComplete") {
                    out.push(Violation {
                        at: format!("operations[{i}].sql"),
                        rule: "operation \"sql\" cannot be executed with other operations (raw \
                               SQL run at start must be alone in its migration; use onComplete \
                               or a migration of its own)"
                            .into(),
                    });
                }
            }
        }
    }
    for (i, op) in ops.iter().enumerate() {
        if let Some((kind, body)) = split(op) {
            let at = format!("operations[{i}].{kind}");
            for rule in op_rules(kind, body) {
                out.push(Violation {
                    at: at.clone(),
                    rule,
                });
            }
        }
    }
    out
}

/// [`check_migration`] plus the rule of pgroll's file reader: no `name` key (pgroll 0.16 takes
/// the name from the file name and reads files with `DisallowUnknownFields`, so a file with
/// `name` cannot be run).
pub fn check_file(migration: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    if migration.get("name").is_some() {
        out.push(Violation {
            at: "name".into(),
            rule: "pgroll 0.16 refuses a `name` key: a migration's name is its file name".into(),
        });
    }
    out.extend(check_migration(migration));
    out
}

/// Every rule of [`check_file`] for each migration, plus the rules pgroll checks against the
/// database's schema, for `migrations` run in order by pgroll on a database whose schema
/// `schema` is `base`'s. Violations are located as `migrations[i].…`.
pub fn check_sequence(migrations: &[Value], base: &Catalog, schema: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut state = VSchema::from_catalog(base, schema);
    for (m, migration) in migrations.iter().enumerate() {
        for v in check_file(migration) {
            out.push(Violation {
                at: format!("migrations[{m}].{}", v.at),
                rule: v.rule,
            });
        }
        let ops = migration
            .get("operations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut during = state.clone();
        for (i, op) in ops.iter().enumerate() {
            if let Err(rule) = during.validate(op) {
                out.push(Violation {
                    at: format!("migrations[{m}].operations[{i}]"),
                    rule,
                });
            }
        }
        for op in &ops {
            state.complete(op);
        }
    }
    out
}

/// `{"kind": body}` → `(kind, body)`.
pub(crate) fn split(op: &Value) -> Option<(&str, &Map<String, Value>)> {
    let obj = op.as_object()?;
    if obj.len() != 1 {
        return None;
    }
    let (kind, body) = obj.iter().next()?;
    Some((kind.as_str(), body.as_object()?))
}

fn text<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    body.get(key).and_then(Value::as_str)
}

/// A string field that Go would read as its zero value when absent or `null`.
fn nonempty(body: &Map<String, Value>, key: &str) -> bool {
    text(body, key).is_some_and(|s| !s.is_empty())
}

fn flag(body: &Map<String, Value>, key: &str) -> bool {
    body.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn identifier(name: &str, what: &str, out: &mut Vec<String>) {
    if name.len() > MAX_IDENTIFIER {
        out.push(format!(
            "{what} {name:?} is longer than {MAX_IDENTIFIER} bytes (ValidateIdentifierLength)"
        ));
    }
}

/// column.go `Column.Validate`, check.go `CheckConstraint.Validate`, fk_reference.go (the
/// parts that need no schema), op_add_column.go / op_create_table.go per column.
fn column_rules(column: &Map<String, Value>, out: &mut Vec<String>) {
    let name = text(column, "name").unwrap_or("");
    identifier(name, "column name", out);
    if name.is_empty() || !nonempty(column, "type") {
        out.push(format!(
            "column {name:?} is invalid: it needs a name and a type (ColumnIsInvalidError)"
        ));
    }
    if let Some(check) = column.get("check").and_then(Value::as_object) {
        check_constraint_rules(check, out);
    }
    if let Some(fk) = column.get("references").and_then(Value::as_object) {
        fk_name_rules(fk, out);
    }
}

/// check.go `CheckConstraint.Validate`.
fn check_constraint_rules(check: &Map<String, Value>, out: &mut Vec<String>) {
    let name = text(check, "name").unwrap_or("");
    if name.is_empty() {
        out.push("check constraint: field \"name\" is required".into());
    }
    identifier(name, "check constraint name", out);
    if !nonempty(check, "constraint") {
        out.push("check constraint: field \"constraint\" is required".into());
    }
}

/// fk_reference.go `ForeignKeyReference.Validate`, the parts that need no schema.
fn fk_name_rules(fk: &Map<String, Value>, out: &mut Vec<String>) {
    let name = text(fk, "name").unwrap_or("");
    if name.is_empty() {
        out.push("foreign key: field \"name\" is required".into());
    }
    identifier(name, "foreign key name", out);
}

/// The rules of one operation's `Validate` that need no schema.
fn op_rules(kind: &str, body: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    match kind {
        // op_create_table.go
        "create_table" => {
            identifier(text(body, "name").unwrap_or(""), "table name", &mut out);
            let columns: Vec<&Map<String, Value>> = body
                .get("columns")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_object).collect())
                .unwrap_or_default();
            let mut pk_columns = false;
            for c in &columns {
                column_rules(c, &mut out);
                pk_columns |= flag(c, "pk");
            }
            let constraints = body.get("constraints").and_then(Value::as_array);
            for c in constraints
                .into_iter()
                .flatten()
                .filter_map(Value::as_object)
            {
                let name = text(c, "name").unwrap_or("");
                if name.is_empty() {
                    out.push("constraint: field \"name\" is required".into());
                }
                identifier(name, "constraint name", &mut out);
                let columns = strings(c.get("columns"));
                match text(c, "type").unwrap_or("") {
                    "unique" if columns.is_empty() => out.push(format!(
                        "unique constraint {name:?}: field \"columns\" is required"
                    )),
                    "check" => {
                        if !nonempty(c, "check") {
                            out.push(format!(
                                "check constraint {name:?}: field \"check\" is required"
                            ));
                        }
                        if flag(c, "deferrable") || flag(c, "initially_deferred") {
                            out.push(format!(
                                "check constraint {name:?}: CHECK constraints cannot be marked \
                                 DEFERRABLE"
                            ));
                        }
                        // Presence is enough: Go sees a non-nil pointer even for `{}`, which
                        // the schema lets through.
                        if c.get("index_parameters").is_some_and(|v| !v.is_null()) {
                            out.push(format!(
                                "check constraint {name:?}: CHECK constraints cannot have index \
                                 parameters"
                            ));
                        }
                        if flag(c, "nulls_not_distinct") {
                            out.push(format!(
                                "check constraint {name:?}: CHECK constraints cannot have NULLS \
                                 NOT DISTINCT"
                            ));
                        }
                    }
                    "primary_key" => {
                        if pk_columns {
                            out.push(format!(
                                "primary key {name:?}: the primary key is already set by columns \
                                 marked pk (PrimaryKeysAreAlreadySetError)"
                            ));
                        }
                        if columns.is_empty() {
                            out.push(format!(
                                "primary key {name:?}: field \"columns\" is required"
                            ));
                        }
                    }
                    "foreign_key" => {
                        if columns.is_empty() {
                            out.push(format!(
                                "foreign key {name:?}: field \"columns\" is required"
                            ));
                        }
                        match c.get("references").and_then(Value::as_object) {
                            None => out.push(format!(
                                "foreign key {name:?}: field \"references\" is required"
                            )),
                            Some(r) => {
                                let set = strings(r.get("on_delete_set_columns"));
                                let on_delete = text(r, "on_delete").unwrap_or("");
                                if !set.is_empty()
                                    && on_delete != "SET NULL"
                                    && on_delete != "SET DEFAULT"
                                {
                                    out.push(format!(
                                        "foreign key {name:?}: on_delete_set_columns needs \
                                         on_delete SET NULL or SET DEFAULT"
                                    ));
                                }
                                for s in set.iter().filter(|s| !columns.contains(s)) {
                                    out.push(format!(
                                        "foreign key {name:?}: on_delete_set_columns names {s:?}, \
                                         not one of its columns"
                                    ));
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        // op_add_column.go
        "add_column" => {
            if let Some(c) = body.get("column").and_then(Value::as_object) {
                column_rules(c, &mut out);
                let generated = c.get("generated").and_then(Value::as_object);
                if let Some(g) = generated {
                    if nonempty(g, "expression") && g.get("identity").is_some_and(|v| !v.is_null())
                    {
                        out.push(
                            "a generated column cannot be both an expression and an identity \
                             (InvalidGeneratedColumnError)"
                                .into(),
                        );
                    }
                }
                let implicit_default = matches!(
                    text(c, "type"),
                    Some("smallserial" | "serial" | "bigserial")
                );
                let has_default = c.get("default").is_some_and(|v| !v.is_null());
                if !flag(c, "nullable")
                    && !has_default
                    && !nonempty(body, "up")
                    && !implicit_default
                    && generated.is_none()
                {
                    out.push(
                        "field \"up\" is required: the column is NOT NULL (nullable is false or \
                         absent) and has no default"
                            .into(),
                    );
                }
                if flag(c, "pk") {
                    out.push("adding primary key columns is not supported".into());
                }
            }
        }
        // op_alter_column.go subOperations and each sub-operation's Validate.
        "alter_column" => {
            let up = nonempty(body, "up");
            let down = nonempty(body, "down");
            let mut any = false;
            if body.get("type").is_some_and(|v| !v.is_null()) {
                any = true;
                // op_change_type.go
                if !up || !down {
                    out.push("changing a column's type needs both \"up\" and \"down\"".into());
                }
            }
            if let Some(check) = body.get("check").and_then(Value::as_object) {
                any = true;
                // op_set_check.go
                check_constraint_rules(check, &mut out);
                if !up || !down {
                    out.push("adding a check constraint needs both \"up\" and \"down\"".into());
                }
            }
            if let Some(fk) = body.get("references").and_then(Value::as_object) {
                any = true;
                // op_set_fk.go
                fk_name_rules(fk, &mut out);
                if !up || !down {
                    out.push("adding a foreign key needs both \"up\" and \"down\"".into());
                }
            }
            match body.get("nullable").and_then(Value::as_bool) {
                // op_set_notnull.go
                Some(false) => {
                    any = true;
                    if !up {
                        out.push("setting NOT NULL needs \"up\"".into());
                    }
                }
                // op_drop_not_null.go
                Some(true) => {
                    any = true;
                    if !down {
                        out.push("dropping NOT NULL needs \"down\"".into());
                    }
                }
                None => {}
            }
            if let Some(unique) = body.get("unique").and_then(Value::as_object) {
                any = true;
                // op_set_unique.go
                if !nonempty(unique, "name") {
                    out.push("unique constraint: field \"name\" is required".into());
                }
            }
            // A `null` default or comment is a change too (it drops them).
            any |= body.contains_key("default") || body.contains_key("comment");
            if !any {
                out.push("alter_column changes nothing (AlterColumnNoChangesError)".into());
            }
        }
        // op_create_index.go
        "create_index" => {
            let name = text(body, "name").unwrap_or("");
            if name.is_empty() {
                out.push("field \"name\" is required".into());
            }
            identifier(name, "index name", &mut out);
            let fields = body.get("columns").and_then(Value::as_array);
            for f in fields.into_iter().flatten().filter_map(Value::as_object) {
                if !nonempty(f, "column") {
                    out.push("index field: field \"column\" is required".into());
                }
            }
        }
        // op_create_constraint.go
        "create_constraint" => {
            let name = text(body, "name").unwrap_or("");
            identifier(name, "constraint name", &mut out);
            let columns = strings(body.get("columns"));
            for col in &columns {
                for side in ["up", "down"] {
                    let has = body
                        .get(side)
                        .and_then(Value::as_object)
                        .is_some_and(|m| m.contains_key(col));
                    if !has {
                        out.push(format!(
                            "column {col:?} has no \"{side}\" expression (ColumnMigrationMissingError)"
                        ));
                    }
                }
            }
            match text(body, "type").unwrap_or("") {
                "unique" if columns.is_empty() => out.push("field \"columns\" is required".into()),
                "check" if !nonempty(body, "check") => {
                    out.push("field \"check\" is required".into())
                }
                "foreign_key" if !body.get("references").is_some_and(Value::is_object) => {
                    out.push("field \"references\" is required".into())
                }
                _ => {}
            }
        }
        // op_drop_constraint.go
        "drop_constraint" => {
            if !nonempty(body, "name") {
                out.push("field \"name\" is required".into());
            }
            if !nonempty(body, "down") {
                out.push("field \"down\" is required".into());
            }
        }
        // op_drop_multicolumn_constraint.go
        "drop_multicolumn_constraint" => {
            if !nonempty(body, "name") {
                out.push("field \"name\" is required".into());
            }
            if !body.get("down").is_some_and(Value::is_object) {
                out.push("field \"down\" is required".into());
            }
        }
        // op_rename_column.go
        "rename_column" => {
            if !nonempty(body, "from") {
                out.push("field \"from\" is required".into());
            }
            if !nonempty(body, "to") {
                out.push("field \"to\" is required".into());
            }
        }
        // op_rename_table.go, op_rename_constraint.go
        "rename_table" | "rename_constraint" => {
            identifier(text(body, "to").unwrap_or(""), "new name", &mut out);
        }
        // op_raw_sql.go
        "sql" => {
            if !nonempty(body, "up") {
                out.push(
                    "field \"up\" is required and cannot be empty (EmptyMigrationError)".into(),
                );
            }
            if flag(body, "onComplete") && nonempty(body, "down") {
                out.push("down is not allowed with onComplete".into());
            }
        }
        // op_set_replica_identity.go
        "set_replica_identity" => {
            let kind = body
                .get("identity")
                .and_then(Value::as_object)
                .and_then(|i| text(i, "type"))
                .unwrap_or("")
                .to_uppercase();
            if !["NOTHING", "DEFAULT", "INDEX", "FULL"].contains(&kind.as_str()) {
                out.push(format!(
                    "replica identity {kind:?} is not one of NOTHING, DEFAULT, INDEX, FULL"
                ));
            }
        }
        _ => {}
    }
    out
}

/// pgroll's view of one schema (`pkg/schema/schema.go`): what its `Validate` looks at.
#[derive(Debug, Clone, Default)]
pub(crate) struct VSchema {
    tables: BTreeMap<String, VTable>,
}

#[derive(Debug, Clone, Default)]
struct VTable {
    /// `Deleted`: a table `drop_table` validated (still listed, no longer found).
    deleted: bool,
    /// Column → nullable.
    columns: BTreeMap<String, bool>,
    /// The constraints pgroll's `ConstraintExists` knows (check, unique, foreign key), with
    /// their columns.
    constraints: BTreeMap<String, Vec<String>>,
    /// Primary key and exclusion constraints: they exist in Postgres, but pgroll's
    /// `ConstraintExists` does not see them.
    other_constraints: BTreeMap<String, Vec<String>>,
    /// Indexes (constraint-backed ones included, as pgroll reads them) with the columns they
    /// are known to use.
    indexes: BTreeMap<String, Vec<String>>,
}

impl VTable {
    fn constraint_exists(&self, name: &str) -> bool {
        self.constraints.contains_key(name)
    }

    fn rename_column(&mut self, from: &str, to: &str) {
        if let Some(nullable) = self.columns.remove(from) {
            self.columns.insert(to.to_owned(), nullable);
        }
        for cols in self
            .constraints
            .values_mut()
            .chain(self.other_constraints.values_mut())
            .chain(self.indexes.values_mut())
        {
            for c in cols.iter_mut().filter(|c| *c == from) {
                *c = to.to_owned();
            }
        }
    }
}

impl VSchema {
    /// Schema `schema` of `catalog`, as pgroll would read it.
    pub(crate) fn from_catalog(catalog: &Catalog, schema: &str) -> VSchema {
        let mut out = VSchema::default();
        let Some(s) = catalog.schemas.get(schema) else {
            return out;
        };
        for (name, table) in &s.tables {
            let mut t = VTable {
                columns: table
                    .columns
                    .iter()
                    .map(|(n, c)| (n.clone(), !c.not_null))
                    .collect(),
                ..VTable::default()
            };
            for (cname, c) in &table.constraints {
                let columns = super::constraint_columns(catalog, schema, name, c);
                match &c.definition {
                    ConstraintDef::Unique { .. } => {
                        t.indexes.insert(cname.clone(), columns.clone());
                        t.constraints.insert(cname.clone(), columns);
                    }
                    ConstraintDef::Check { .. } | ConstraintDef::ForeignKey { .. } => {
                        t.constraints.insert(cname.clone(), columns);
                    }
                    ConstraintDef::PrimaryKey { .. } | ConstraintDef::Exclusion { .. } => {
                        t.indexes.insert(cname.clone(), columns.clone());
                        t.other_constraints.insert(cname.clone(), columns);
                    }
                }
            }
            for (iname, index) in &table.indexes {
                let columns = index
                    .keys
                    .iter()
                    .filter_map(|k| k.column.clone())
                    .chain(index.include.iter().cloned())
                    .collect();
                t.indexes.insert(iname.clone(), columns);
            }
            out.tables.insert(name.clone(), t);
        }
        out
    }

    fn table(&self, name: &str) -> Option<&VTable> {
        self.tables.get(name).filter(|t| !t.deleted)
    }

    fn table_mut(&mut self, name: &str) -> Option<&mut VTable> {
        self.tables.get_mut(name).filter(|t| !t.deleted)
    }

    fn index_exists(&self, name: &str) -> bool {
        // op_create_index.go / op_drop_index.go look through every table, deleted ones too.
        self.tables.values().any(|t| t.indexes.contains_key(name))
    }

    fn existing_table(&self, name: &str) -> Result<&VTable, String> {
        self.table(name)
            .ok_or_else(|| format!("table {name:?} does not exist (TableDoesNotExistError)"))
    }

    fn existing_column(&self, table: &str, column: &str) -> Result<&VTable, String> {
        let t = self.existing_table(table)?;
        if t.columns.contains_key(column) {
            Ok(t)
        } else {
            Err(format!(
                "column {column:?} does not exist in table {table:?} (ColumnDoesNotExistError)"
            ))
        }
    }

    fn free_constraint(&self, table: &str, name: &str) -> Result<(), String> {
        if self.existing_table(table)?.constraint_exists(name) {
            return Err(format!(
                "constraint {name:?} already exists on table {table:?} \
                 (ConstraintAlreadyExistsError)"
            ));
        }
        Ok(())
    }

    /// fk_reference.go: the referenced table and column exist.
    fn reference_target(&self, fk: &Map<String, Value>) -> Result<(), String> {
        let table = text(fk, "table").unwrap_or("");
        let column = text(fk, "column").unwrap_or("");
        self.existing_column(table, column).map(|_| ())
    }

    /// What pgroll's `Validate` checks of `op` against this schema, changing it the way
    /// `Validate` does (only `create_table`, `add_column`, `rename_*` and `drop_table` record
    /// anything before the migration completes). The schema-free rules of the operation are
    /// checked too. A refused operation changes nothing: every check comes before any change.
    pub(crate) fn validate(&mut self, op: &Value) -> Result<(), String> {
        let Some((kind, body)) = split(op) else {
            return Err("an operation is an object with exactly one key".into());
        };
        if let Some(rule) = op_rules(kind, body).into_iter().next() {
            return Err(format!("{kind}: {rule}"));
        }
        self.validate_against_schema(kind, body)
            .map_err(|e| format!("{kind}: {e}"))
    }

    fn validate_against_schema(
        &mut self,
        kind: &str,
        body: &Map<String, Value>,
    ) -> Result<(), String> {
        let s = |key: &str| text(body, key).unwrap_or("").to_owned();
        match kind {
            "create_table" => {
                let name = s("name");
                if self.table(&name).is_some() {
                    return Err(format!(
                        "table {name:?} already exists (TableAlreadyExistsError)"
                    ));
                }
                for col in body
                    .get("columns")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_object)
                {
                    if let Some(fk) = col.get("references").and_then(Value::as_object) {
                        self.reference_target(fk)?;
                    }
                }
                // op_create_table.go updateSchema: columns and table constraints.
                let table = created_table(body, false);
                self.tables.insert(name, table);
            }
            "add_column" => {
                let table = s("table");
                let column = body.get("column").and_then(Value::as_object);
                let name = column
                    .and_then(|c| text(c, "name"))
                    .unwrap_or("")
                    .to_owned();
                if self.existing_table(&table)?.columns.contains_key(&name) {
                    return Err(format!(
                        "column {name:?} already exists in table {table:?} (ColumnAlreadyExistsError)"
                    ));
                }
                if let Some(fk) = column
                    .and_then(|c| c.get("references"))
                    .and_then(Value::as_object)
                {
                    self.reference_target(fk)?;
                }
                // Recorded as a column pgroll knows nothing more of (not nullable).
                if let Some(t) = self.table_mut(&table) {
                    t.columns.insert(name, false);
                }
            }
            "alter_column" => {
                let (table, column) = (s("table"), s("column"));
                let t = self.existing_column(&table, &column)?;
                let nullable = t.columns.get(&column).copied().unwrap_or(false);
                match body.get("nullable").and_then(Value::as_bool) {
                    Some(false) if !nullable => {
                        return Err(format!(
                            "column {column:?} of {table:?} is already NOT NULL \
                             (ColumnIsNotNullableError)"
                        ))
                    }
                    Some(true) if nullable => {
                        return Err(format!(
                            "column {column:?} of {table:?} is already nullable \
                             (ColumnIsNullableError)"
                        ))
                    }
                    _ => {}
                }
                for key in ["check", "unique", "references"] {
                    if let Some(c) = body.get(key).and_then(Value::as_object) {
                        self.free_constraint(&table, text(c, "name").unwrap_or(""))?;
                    }
                }
                if let Some(fk) = body.get("references").and_then(Value::as_object) {
                    self.reference_target(fk)?;
                }
            }
            "rename_table" => {
                let (from, to) = (s("from"), s("to"));
                self.existing_table(&from)?;
                if self.table(&to).is_some() {
                    return Err(format!(
                        "table {to:?} already exists (TableAlreadyExistsError)"
                    ));
                }
                if let Some(t) = self.tables.remove(&from) {
                    self.tables.insert(to, t);
                }
            }
            "rename_column" => {
                let (table, from, to) = (s("table"), s("from"), s("to"));
                let t = self.existing_column(&table, &from)?;
                if t.columns.contains_key(&to) {
                    return Err(format!(
                        "column {to:?} already exists in table {table:?} (ColumnAlreadyExistsError)"
                    ));
                }
                if let Some(t) = self.table_mut(&table) {
                    t.rename_column(&from, &to);
                }
            }
            "rename_constraint" => {
                let (table, from, to) = (s("table"), s("from"), s("to"));
                let t = self.existing_table(&table)?;
                if !t.constraint_exists(&from) {
                    return Err(format!(
                        "constraint {from:?} does not exist on table {table:?} (pgroll sees only \
                         check, unique and foreign key constraints; ConstraintDoesNotExistError)"
                    ));
                }
                self.free_constraint(&table, &to)?;
            }
            "drop_table" => {
                let name = s("name");
                self.existing_table(&name)?;
                if let Some(t) = self.tables.get_mut(&name) {
                    t.deleted = true;
                }
            }
            "drop_column" => {
                self.existing_column(&s("table"), &s("column"))?;
            }
            "drop_index" => {
                let name = s("name");
                if !self.index_exists(&name) {
                    return Err(format!(
                        "index {name:?} does not exist (IndexDoesNotExistError)"
                    ));
                }
            }
            "drop_constraint" | "drop_multicolumn_constraint" => {
                let (table, name) = (s("table"), s("name"));
                let t = self.existing_table(&table)?;
                let Some(columns) = t.constraints.get(&name) else {
                    return Err(format!(
                        "constraint {name:?} does not exist on table {table:?} (pgroll sees only \
                         check, unique and foreign key constraints; ConstraintDoesNotExistError)"
                    ));
                };
                let columns: BTreeSet<&String> = columns.iter().collect();
                if kind == "drop_constraint" && columns.len() > 1 {
                    return Err(format!(
                        "constraint {name:?} spans several columns: use \
                         drop_multicolumn_constraint (MultiColumnConstraintsNotSupportedError)"
                    ));
                }
                if kind == "drop_multicolumn_constraint" {
                    let keys = |side: &str| -> BTreeSet<String> {
                        body.get(side)
                            .and_then(Value::as_object)
                            .map(|m| m.keys().cloned().collect())
                            .unwrap_or_default()
                    };
                    let down = keys("down");
                    if let Some(c) = columns.iter().find(|c| !down.contains(c.as_str())) {
                        return Err(format!(
                            "column {c:?} of constraint {name:?} has no \"down\" expression \
                             (ColumnMigrationMissingError)"
                        ));
                    }
                    for side in [down, keys("up")] {
                        if let Some(c) = side.iter().find(|c| !columns.contains(c)) {
                            return Err(format!(
                                "column {c:?} is not a column of constraint {name:?} \
                                 (ColumnMigrationRedundantError)"
                            ));
                        }
                    }
                }
            }
            "create_index" => {
                let (name, table) = (s("name"), s("table"));
                let t = self.existing_table(&table)?;
                for f in body
                    .get("columns")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_object)
                {
                    let column = text(f, "column").unwrap_or("");
                    if !t.columns.contains_key(column) {
                        return Err(format!(
                            "column {column:?} does not exist in table {table:?} \
                             (ColumnDoesNotExistError)"
                        ));
                    }
                }
                if self.index_exists(&name) {
                    return Err(format!(
                        "index {name:?} already exists (IndexAlreadyExistsError)"
                    ));
                }
            }
            "create_constraint" => {
                let (table, name) = (s("table"), s("name"));
                self.free_constraint(&table, &name)?;
                for c in strings(body.get("columns")) {
                    self.existing_column(&table, &c)?;
                }
                if text(body, "type") == Some("foreign_key") {
                    if let Some(r) = body.get("references").and_then(Value::as_object) {
                        let target = text(r, "table").unwrap_or("");
                        for c in strings(r.get("columns")) {
                            self.existing_column(target, &c)?;
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The schema once the migration holding `op` has completed: the full effect of `op`
    /// (raw SQL is opaque and changes nothing here).
    pub(crate) fn complete(&mut self, op: &Value) {
        let Some((kind, body)) = split(op) else {
            return;
        };
        let s = |key: &str| text(body, key).unwrap_or("").to_owned();
        match kind {
            "create_table" => {
                self.tables.insert(s("name"), created_table(body, true));
            }
            "add_column" => {
                let Some(c) = body.get("column").and_then(Value::as_object) else {
                    return;
                };
                if let Some(t) = self.table_mut(&s("table")) {
                    add_column_constraints(t, c);
                }
            }
            "alter_column" => {
                let column = s("column");
                let Some(t) = self.table_mut(&s("table")) else {
                    return;
                };
                if let Some(n) = body.get("nullable").and_then(Value::as_bool) {
                    t.columns.insert(column.clone(), n);
                }
                for key in ["check", "references"] {
                    if let Some(name) = body
                        .get(key)
                        .and_then(|c| c.get("name"))
                        .and_then(Value::as_str)
                    {
                        t.constraints.insert(name.to_owned(), vec![column.clone()]);
                    }
                }
                if let Some(name) = body
                    .get("unique")
                    .and_then(|c| c.get("name"))
                    .and_then(Value::as_str)
                {
                    t.constraints.insert(name.to_owned(), vec![column.clone()]);
                    t.indexes.insert(name.to_owned(), vec![column]);
                }
            }
            "rename_table" => {
                if let Some(t) = self.tables.remove(&s("from")) {
                    self.tables.insert(s("to"), t);
                }
            }
            "rename_column" => {
                if let Some(t) = self.table_mut(&s("table")) {
                    t.rename_column(&s("from"), &s("to"));
                }
            }
            "rename_constraint" => {
                if let Some(t) = self.table_mut(&s("table")) {
                    let (from, to) = (s("from"), s("to"));
                    if let Some(cols) = t.constraints.remove(&from) {
                        t.constraints.insert(to.clone(), cols);
                    }
                    // A unique constraint's index is renamed with it.
                    if let Some(cols) = t.indexes.remove(&from) {
                        t.indexes.insert(to, cols);
                    }
                }
            }
            "drop_table" => {
                self.tables.remove(&s("name"));
            }
            "drop_column" => {
                let column = s("column");
                if let Some(t) = self.table_mut(&s("table")) {
                    t.columns.remove(&column);
                    // Postgres drops every constraint and index that uses the column.
                    let uses = |cols: &Vec<String>| cols.contains(&column);
                    t.constraints.retain(|_, cols| !uses(cols));
                    t.other_constraints.retain(|_, cols| !uses(cols));
                    t.indexes.retain(|_, cols| !uses(cols));
                }
            }
            "drop_index" => {
                let name = s("name");
                for t in self.tables.values_mut() {
                    t.indexes.remove(&name);
                }
            }
            "drop_constraint" | "drop_multicolumn_constraint" => {
                let name = s("name");
                if let Some(t) = self.table_mut(&s("table")) {
                    t.constraints.remove(&name);
                    t.indexes.remove(&name);
                }
            }
            "create_index" => {
                let columns = body
                    .get("columns")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|f| f.get("column").and_then(Value::as_str))
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                if let Some(t) = self.table_mut(&s("table")) {
                    t.indexes.insert(s("name"), columns);
                }
            }
            "create_constraint" => {
                let (name, columns) = (s("name"), strings(body.get("columns")));
                if let Some(t) = self.table_mut(&s("table")) {
                    match text(body, "type") {
                        Some("primary_key") => {
                            t.indexes.insert(name.clone(), columns.clone());
                            t.other_constraints.insert(name, columns);
                        }
                        Some("unique") => {
                            t.indexes.insert(name.clone(), columns.clone());
                            t.constraints.insert(name, columns);
                        }
                        _ => {
                            t.constraints.insert(name, columns);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// The table a `create_table` makes. `complete`: everything it creates (column-level
/// constraints and constraint indexes included); otherwise only what pgroll's `updateSchema`
/// records while validating.
fn created_table(body: &Map<String, Value>, complete: bool) -> VTable {
    let mut t = VTable::default();
    let columns = body.get("columns").and_then(Value::as_array);
    for c in columns.into_iter().flatten().filter_map(Value::as_object) {
        let name = text(c, "name").unwrap_or("").to_owned();
        t.columns.insert(name, flag(c, "nullable"));
        if complete {
            add_column_constraints(&mut t, c);
        }
    }
    let constraints = body.get("constraints").and_then(Value::as_array);
    for c in constraints
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
    {
        let name = text(c, "name").unwrap_or("").to_owned();
        let columns = strings(c.get("columns"));
        match text(c, "type").unwrap_or("") {
            "unique" => {
                if complete {
                    t.indexes.insert(name.clone(), columns.clone());
                }
                t.constraints.insert(name, columns);
            }
            "check" | "foreign_key" => {
                t.constraints.insert(name, columns);
            }
            _ if complete => {
                t.indexes.insert(name.clone(), columns.clone());
                t.other_constraints.insert(name, columns);
            }
            _ => {}
        }
    }
    t
}

/// A column and the named constraints it declares.
fn add_column_constraints(t: &mut VTable, c: &Map<String, Value>) {
    let name = text(c, "name").unwrap_or("").to_owned();
    t.columns.insert(name.clone(), flag(c, "nullable"));
    for key in ["check", "references"] {
        if let Some(cname) = c
            .get(key)
            .and_then(|v| v.get("name"))
            .and_then(Value::as_str)
        {
            t.constraints.insert(cname.to_owned(), vec![name.clone()]);
        }
    }
}
