//! [`Document`] → [`Catalog`]: names checked, types and expressions normalised, shorthands
//! expanded, references resolved, default names chosen. Every problem is collected.

use std::collections::{BTreeMap, BTreeSet};

use crate::catalog::*;
use crate::normalize;

use super::document::*;
use super::error::DslError;
use super::helpers::HELPER_SCHEMA;
use super::names::{self, identifier_problem, pg_qualified, pg_quote, suggest};
use super::privileges::{self, ObjectKind};
use super::read::segment;
use super::sql;
use super::types::{self, Resolved, TypeScope};

/// What the conversion needs to know about a table before converting any: the targets of
/// foreign keys and owned sequences.
struct TableSummary<'d> {
    columns: Vec<&'d str>,
    primary_key: Option<Vec<String>>,
    unique_sets: Vec<BTreeSet<String>>,
}

fn summarize(table: &TableDecl) -> TableSummary<'_> {
    let mut primary_key = table.primary_key.as_ref().map(|pk| pk.columns.clone());
    if primary_key.is_none() {
        let pk_columns: Vec<String> = table
            .columns
            .iter()
            .filter(|c| c.pk)
            .map(|c| c.name.clone())
            .collect();
        if !pk_columns.is_empty() {
            primary_key = Some(pk_columns);
        }
    }
    let mut unique_sets: Vec<BTreeSet<String>> = table
        .columns
        .iter()
        .filter(|c| c.unique)
        .map(|c| [c.name.clone()].into_iter().collect())
        .collect();
    unique_sets.extend(
        table
            .unique
            .iter()
            .map(|u| u.columns.iter().cloned().collect()),
    );
    unique_sets.extend(
        table
            .indexes
            .iter()
            .filter(|i| i.unique && i.predicate.is_none())
            .filter(|i| i.keys.iter().all(|k| k.column.is_some()))
            .map(|i| i.keys.iter().filter_map(|k| k.column.clone()).collect()),
    );
    if let Some(pk) = &primary_key {
        unique_sets.push(pk.iter().cloned().collect());
    }
    TableSummary {
        columns: table.columns.iter().map(|c| c.name.as_str()).collect(),
        primary_key,
        unique_sets,
    }
}

/// A constraint before its name is settled.
struct Pending {
    explicit: Option<String>,
    default_name: String,
    constraint: Constraint,
    path: String,
    span: Span,
}

/// Resolves type names for one schema of the document.
pub(crate) struct Scope<'d> {
    pub schemas: &'d [SchemaDecl],
    pub current: &'d str,
    pub extension_schemas: BTreeSet<String>,
}

impl Scope<'_> {
    fn enums_of(&self, schema: &str) -> Option<&[EnumDecl]> {
        self.schemas
            .iter()
            .find(|s| s.name == schema)
            .map(|s| s.enums.as_slice())
    }
}

impl TypeScope for Scope<'_> {
    fn find_enum(&self, name: &str) -> Option<String> {
        [self.current, "public"]
            .into_iter()
            .find(|s| {
                self.enums_of(s)
                    .is_some_and(|enums| enums.iter().any(|e| e.name == name))
            })
            .map(str::to_owned)
    }

    fn check_qualified(&self, schema: &str, name: &str) -> Result<(), String> {
        let Some(enums) = self.enums_of(schema) else {
            // A schema the document does not manage: its types cannot be checked here.
            return Ok(());
        };
        if enums.iter().any(|e| e.name == name) || self.extension_schemas.contains(schema) {
            return Ok(());
        }
        // A qualified name that is no enum of the document is a type the DSL does not
        // describe (a domain, composite, range or base type live has): written and read back
        // by name, and Postgres decides at materialisation whether it exists. Only a near miss
        // of one of the document's own enums is taken for a typo.
        let names: Vec<&str> = enums.iter().map(|e| e.name.as_str()).collect();
        match suggest(name, &names) {
            Some(s) => Err(format!(
                "unknown type `{schema}.{name}` (did you mean `{schema}.{s}`?)"
            )),
            None => Ok(()),
        }
    }
}

/// Names of relations in one schema (they share one namespace in Postgres) and of constraints
/// whose name was chosen by default.
#[derive(Default)]
struct Namespaces {
    relations: BTreeMap<String, String>,
    constraint_names: BTreeSet<String>,
}

pub(crate) struct Converter<'d> {
    doc: &'d Document,
    pub errors: Vec<DslError>,
}

fn path_or(origin: &Origin, fallback: impl FnOnce() -> String) -> String {
    if origin.path.is_empty() {
        fallback()
    } else {
        origin.path.clone()
    }
}

impl<'d> Converter<'d> {
    pub fn new(doc: &'d Document) -> Self {
        Converter {
            doc,
            errors: Vec::new(),
        }
    }

    fn error(&mut self, path: &str, span: Span, message: impl Into<String>, hint: Option<String>) {
        self.errors
            .push(DslError::new(&self.doc.file, path, span, message, hint));
    }

    fn check_name(&mut self, path: &str, span: Span, what: &str, name: &str) {
        if let Some(problem) = identifier_problem(name) {
            self.error(path, span, format!("invalid {what} name: {problem}"), None);
        }
    }

    pub fn convert(&mut self) -> Catalog {
        let doc = self.doc;
        let mut catalog = Catalog::default();
        let schema_names: BTreeSet<&str> = doc.schemas.iter().map(|s| s.name.as_str()).collect();
        for (i, ext) in doc.extensions.iter().enumerate() {
            let path = path_or(&ext.origin, || format!("extensions[{i}]"));
            self.check_name(&path, ext.origin.field("name"), "extension", &ext.name);
            let schema = ext.schema.clone().unwrap_or_else(|| "public".to_owned());
            self.check_name(&path, ext.origin.field("schema"), "schema", &schema);
            if !matches!(schema.as_str(), "public" | "pg_catalog")
                && !schema_names.contains(schema.as_str())
            {
                self.error(
                    &format!("{path}.schema"),
                    ext.origin.field("schema"),
                    format!("schema `{schema}` is not declared in `schemas`"),
                    None,
                );
            }
            if catalog
                .extensions
                .insert(ext.name.clone(), Extension { schema })
                .is_some()
            {
                self.error(
                    &path,
                    ext.origin.field("name"),
                    format!("duplicate extension `{}`", ext.name),
                    None,
                );
            }
        }
        let extension_schemas: BTreeSet<String> = catalog
            .extensions
            .values()
            .map(|e| e.schema.clone())
            .collect();

        let mut summaries: BTreeMap<(&str, &str), TableSummary> = BTreeMap::new();
        for schema in &doc.schemas {
            for table in &schema.tables {
                summaries
                    .entry((schema.name.as_str(), table.name.as_str()))
                    .or_insert_with(|| summarize(table));
            }
        }

        for schema in &doc.schemas {
            let path = path_or(&schema.origin, || {
                format!("schemas{}", segment(&schema.name))
            });
            self.check_name(&path, schema.origin.field("name"), "schema", &schema.name);
            if schema.name == HELPER_SCHEMA || schema.name.starts_with("pg_") {
                self.error(
                    &path,
                    schema.origin.field("name"),
                    format!("schema `{}` is reserved", schema.name),
                    Some(if schema.name == HELPER_SCHEMA {
                        "Lockplane keeps its helper functions there".to_owned()
                    } else {
                        "Postgres reserves names starting with `pg_`".to_owned()
                    }),
                );
            }
            if catalog.schemas.contains_key(&schema.name) {
                self.error(
                    &path,
                    schema.origin.field("name"),
                    format!("duplicate schema `{}`", schema.name),
                    None,
                );
                continue;
            }
            let scope = Scope {
                schemas: &doc.schemas,
                current: &schema.name,
                extension_schemas: extension_schemas.clone(),
            };
            let converted = self.schema(schema, &path, &scope, &summaries);
            catalog.schemas.insert(schema.name.clone(), converted);
        }
        catalog.canonicalize();
        catalog
    }

    fn schema(
        &mut self,
        decl: &SchemaDecl,
        path: &str,
        scope: &Scope,
        summaries: &BTreeMap<(&str, &str), TableSummary>,
    ) -> Schema {
        let mut out = Schema {
            comment: decl.comment.clone(),
            ..Schema::default()
        };
        let mut ns = Namespaces::default();

        for e in &decl.enums {
            let epath = path_or(&e.origin, || format!("{path}.enums{}", segment(&e.name)));
            self.check_name(&epath, e.origin.field("name"), "enum", &e.name);
            if e.labels.is_empty() {
                self.error(
                    &epath,
                    e.origin.field("labels"),
                    "an enum needs at least one label",
                    None,
                );
            }
            let mut seen = BTreeSet::new();
            for label in &e.labels {
                if label.len() > names::MAX_IDENTIFIER_BYTES {
                    self.error(
                        &epath,
                        e.origin.field("labels"),
                        format!("enum label `{label}` is longer than 63 bytes"),
                        None,
                    );
                }
                if !seen.insert(label) {
                    self.error(
                        &epath,
                        e.origin.field("labels"),
                        format!("duplicate enum label `{label}`"),
                        None,
                    );
                }
            }
            if out.enums.contains_key(&e.name) {
                self.error(
                    &epath,
                    e.origin.field("name"),
                    format!("duplicate enum `{}`", e.name),
                    None,
                );
            }
            out.enums.insert(
                e.name.clone(),
                EnumType {
                    labels: e.labels.clone(),
                    comment: e.comment.clone(),
                },
            );
        }

        // Explicit constraint names first: a default name must not take one of them.
        for t in &decl.tables {
            let explicit = t
                .primary_key
                .iter()
                .filter_map(|p| p.name.clone())
                .chain(t.unique.iter().filter_map(|u| u.name.clone()))
                .chain(t.foreign_keys.iter().filter_map(|f| f.name.clone()))
                .chain(t.checks.iter().filter_map(|c| c.name.clone()))
                .chain(t.exclusions.iter().filter_map(|x| x.name.clone()));
            ns.constraint_names.extend(explicit);
        }

        for s in &decl.sequences {
            let spath = path_or(&s.origin, || {
                format!("{path}.sequences{}", segment(&s.name))
            });
            self.check_name(&spath, s.origin.field("name"), "sequence", &s.name);
            self.claim_relation(&mut ns, &spath, s.origin.field("name"), &s.name, "sequence");
            let sequence = self.sequence(s, &spath, scope, decl, summaries);
            out.sequences.insert(s.name.clone(), sequence);
        }

        let mut tables: Vec<&TableDecl> = decl.tables.iter().collect();
        tables.sort_by(|a, b| a.name.cmp(&b.name));
        let table_names: BTreeSet<&str> = decl.tables.iter().map(|t| t.name.as_str()).collect();
        let mut renamed_from: BTreeMap<&str, &str> = BTreeMap::new();
        for t in tables {
            let tpath = path_or(&t.origin, || format!("{path}.tables{}", segment(&t.name)));
            self.check_name(&tpath, t.origin.field("name"), "table", &t.name);
            if out.tables.contains_key(&t.name) {
                self.error(
                    &tpath,
                    t.origin.field("name"),
                    format!("duplicate table `{}`", t.name),
                    None,
                );
                continue;
            }
            if out.enums.contains_key(&t.name) {
                self.error(
                    &tpath,
                    t.origin.field("name"),
                    format!(
                        "table `{}` has the name of an enum in the same schema",
                        t.name
                    ),
                    Some("a table's row type shares the type namespace".into()),
                );
            }
            self.claim_relation(&mut ns, &tpath, t.origin.field("name"), &t.name, "table");
            if let Some(from) = &t.renamed_from {
                let span = t.origin.field("renamed_from");
                self.check_name(&tpath, span, "table", from);
                if from == &t.name {
                    self.error(
                        &format!("{tpath}.renamed_from"),
                        span,
                        "a table cannot be renamed from its own name",
                        None,
                    );
                } else if table_names.contains(from.as_str()) {
                    self.error(
                        &format!("{tpath}.renamed_from"),
                        span,
                        format!("table `{from}` is still declared; a renamed table must not be"),
                        None,
                    );
                } else if let Some(other) = renamed_from.insert(from, &t.name) {
                    self.error(
                        &format!("{tpath}.renamed_from"),
                        span,
                        format!("table `{other}` is also renamed from `{from}`"),
                        None,
                    );
                }
            }
            let (table, serials) = self.table(t, &tpath, decl, scope, summaries, &mut ns);
            for (name, sequence, span) in serials {
                self.claim_relation(&mut ns, &tpath, span, &name, "serial sequence");
                if decl.sequences.iter().any(|s| s.name == name) {
                    continue;
                }
                out.sequences.insert(name, sequence);
            }
            out.tables.insert(t.name.clone(), table);
        }

        for v in &decl.views {
            let vpath = path_or(&v.origin, || format!("{path}.views{}", segment(&v.name)));
            self.check_name(&vpath, v.origin.field("name"), "view", &v.name);
            self.claim_relation(&mut ns, &vpath, v.origin.field("name"), &v.name, "view");
            if out.enums.contains_key(&v.name) {
                self.error(
                    &vpath,
                    v.origin.field("name"),
                    format!(
                        "view `{}` has the name of an enum in the same schema",
                        v.name
                    ),
                    None,
                );
            }
            let view = self.view(v, &vpath);
            out.views.insert(v.name.clone(), view);
        }
        out
    }

    /// Tables, views, sequences, indexes and the indexes behind constraints share one
    /// namespace per schema.
    fn claim_relation(
        &mut self,
        ns: &mut Namespaces,
        path: &str,
        span: Span,
        name: &str,
        what: &str,
    ) {
        if let Some(other) = ns.relations.get(name) {
            self.error(
                path,
                span,
                format!("{what} `{name}` has the same name as {other} in this schema"),
                Some("tables, views, sequences and indexes share one namespace".into()),
            );
        } else {
            ns.relations
                .insert(name.to_owned(), format!("{what} `{name}`"));
        }
    }

    /// A default constraint name, or `None` (and an error) when it is already taken in the
    /// schema (Postgres would pick another one depending on creation order; the document must
    /// say which).
    fn default_constraint_name(
        &mut self,
        ns: &mut Namespaces,
        path: &str,
        span: Span,
        name: String,
    ) -> Option<String> {
        if ns.constraint_names.insert(name.clone()) {
            return Some(name);
        }
        self.error(
            path,
            span,
            format!("the default name `{name}` is already taken in this schema"),
            Some("give this constraint a `name`".into()),
        );
        None
    }

    fn grants(
        &mut self,
        grants: &[GrantDecl],
        kind: ObjectKind,
        path: &str,
        field: &str,
    ) -> Vec<Grant> {
        let mut out = Vec::new();
        for (i, g) in grants.iter().enumerate() {
            let gpath = path_or(&g.origin, || format!("{path}.{field}[{i}]"));
            self.check_name(&gpath, g.origin.field("role"), "role", &g.role);
            if g.privileges.is_empty() {
                self.error(
                    &gpath,
                    g.origin.field("privilege"),
                    "no privilege given",
                    None,
                );
            }
            for written in &g.privileges {
                match privileges::expand(written, kind) {
                    Ok(list) => out.extend(list.iter().map(|p| Grant {
                        grantee: g.role.clone(),
                        privilege: (*p).to_owned(),
                        grantable: g.grantable,
                    })),
                    Err(hint) => self.error(
                        &format!("{gpath}.privilege"),
                        g.origin.field("privilege"),
                        format!("unknown privilege `{written}` for a {}", kind.noun()),
                        Some(hint),
                    ),
                }
            }
        }
        out
    }

    /// Sequence options with Postgres' defaults; `at` gives the position of an option's value
    /// (or of the whole item where options have no positions of their own).
    fn sequence_options(
        &mut self,
        path: &str,
        at: &dyn Fn(&str) -> Span,
        data_type: &str,
        given: [Option<i64>; 5],
    ) -> SequenceOptions {
        let [start, increment, min, max, cache] = given;
        let max_given = max.is_some();
        let (type_min, type_max) = types::integer_range(data_type).unwrap_or((i64::MIN, i64::MAX));
        let increment = increment.unwrap_or(1);
        if increment == 0 {
            self.error(path, at("increment"), "`increment` must not be zero", None);
        }
        let min = min.unwrap_or(if increment > 0 { 1 } else { type_min });
        let max = max.unwrap_or(if increment > 0 { type_max } else { -1 });
        let start = start.unwrap_or(if increment > 0 { min } else { max });
        let cache = cache.unwrap_or(1);
        if min < type_min || max > type_max {
            self.error(
                path,
                at(if min < type_min { "min" } else { "max" }),
                format!("`min`/`max` are out of range for type {data_type}"),
                None,
            );
        }
        if min >= max {
            self.error(
                path,
                at(if max_given { "max" } else { "min" }),
                format!("`min` ({min}) must be less than `max` ({max})"),
                None,
            );
        } else if start < min || start > max {
            // Only a `start` that was written can be out of an ordered range.
            self.error(
                path,
                at("start"),
                format!("`start` ({start}) must be between `min` ({min}) and `max` ({max})"),
                None,
            );
        }
        if cache < 1 {
            self.error(
                path,
                at("cache"),
                format!("`cache` ({cache}) must be at least 1"),
                None,
            );
        }
        SequenceOptions {
            data_type: data_type.to_owned(),
            start,
            increment,
            min,
            max,
            cache,
            cycle: false,
        }
    }

    fn sequence(
        &mut self,
        s: &SequenceDecl,
        path: &str,
        scope: &Scope,
        schema: &SchemaDecl,
        summaries: &BTreeMap<(&str, &str), TableSummary>,
    ) -> Sequence {
        let data_type = match &s.data_type {
            None => "bigint".to_owned(),
            Some(written) => match types::resolve(written, scope) {
                Ok(Resolved::Type(t)) if types::is_sequence_type(&t) => t,
                Ok(_) => {
                    self.error(
                        &format!("{path}.type"),
                        s.origin.field("type"),
                        format!("a sequence's type must be smallint, integer or bigint, not `{written}`"),
                        None,
                    );
                    "bigint".to_owned()
                }
                Err(e) => {
                    self.error(&format!("{path}.type"), s.origin.field("type"), e, None);
                    "bigint".to_owned()
                }
            },
        };
        let mut options = self.sequence_options(
            path,
            &|key| s.origin.field(key),
            &data_type,
            [s.start, s.increment, s.min, s.max, s.cache],
        );
        options.cycle = s.cycle;
        let owned_by = s.owned_by.as_ref().map(|o| {
            let span = s.origin.field("owned_by");
            match summaries.get(&(schema.name.as_str(), o.table.as_str())) {
                None => self.error(
                    &format!("{path}.owned_by"),
                    span,
                    format!(
                        "table `{}` is not declared in schema `{}`",
                        o.table, schema.name
                    ),
                    None,
                ),
                Some(t) if !t.columns.contains(&o.column.as_str()) => self.error(
                    &format!("{path}.owned_by"),
                    span,
                    format!("table `{}` has no column `{}`", o.table, o.column),
                    None,
                ),
                Some(_) => {}
            }
            SequenceOwner {
                table: o.table.clone(),
                column: o.column.clone(),
            }
        });
        Sequence {
            options,
            owned_by,
            grants: self.grants(&s.grants, ObjectKind::Sequence, path, "grants"),
            comment: s.comment.clone(),
        }
    }

    fn view(&mut self, v: &ViewDecl, path: &str) -> View {
        let (definition, parsed) = match normalize::view_query(&v.query) {
            Ok(d) => (d, true),
            Err(e) => {
                self.error(
                    &format!("{path}.query"),
                    v.origin.field("query"),
                    format!("cannot parse the query: {}", sql::clean(&e.message)),
                    None,
                );
                (v.query.clone(), false)
            }
        };
        // A query that does not parse has been reported; it is no SELECT either, but saying so
        // twice helps no one.
        if parsed && !definition.is_empty() && !is_select(&definition) {
            self.error(
                &format!("{path}.query"),
                v.origin.field("query"),
                "a view's query must be a single SELECT (or VALUES) statement",
                None,
            );
        }
        let mut options = Vec::new();
        for (key, value) in &v.options {
            let valid = match key.as_str() {
                "check_option" => matches!(value.as_str(), "local" | "cascaded"),
                "security_barrier" | "security_invoker" => {
                    matches!(value.as_str(), "true" | "false" | "on" | "off")
                }
                _ => false,
            };
            if !valid {
                self.error(
                    &format!("{path}.options.{key}"),
                    v.origin.field("options"),
                    format!("invalid view option `{key}: {value}`"),
                    Some(
                        "check_option takes `local` or `cascaded`; security_barrier and \
                         security_invoker take `true` or `false`"
                            .into(),
                    ),
                );
            }
            options.push(format!("{key}={value}"));
        }
        options.sort();
        View {
            definition,
            options,
            grants: self.grants(&v.grants, ObjectKind::View, path, "grants"),
            comment: v.comment.clone(),
        }
    }

    /// Normalises an expression of the table, reporting problems at `field` of `origin`.
    #[allow(clippy::too_many_arguments)]
    fn table_expression(
        &mut self,
        text: &str,
        path: &str,
        span: Span,
        what: &str,
        columns: &[&str],
        allow_helpers: bool,
        check_columns: bool,
    ) -> String {
        let result = if allow_helpers {
            sql::expression_with_helpers(text)
        } else {
            sql::expression(text)
        };
        let normalized = match result {
            Ok(n) => n,
            Err(e) => {
                self.error(
                    path,
                    span,
                    format!("cannot parse the {what} `{text}`: {e}"),
                    None,
                );
                return text.to_owned();
            }
        };
        if check_columns {
            if let Ok(true) = sql::has_subquery(text) {
                self.error(
                    path,
                    span,
                    format!("a {what} cannot contain a sub-query"),
                    None,
                );
            }
            if let Ok(refs) = sql::column_refs(text) {
                for r in refs {
                    if !columns.contains(&r.as_str()) {
                        let hint = suggest(&r, columns).map(|s| format!("did you mean `{s}`?"));
                        self.error(
                            path,
                            span,
                            format!("the {what} refers to unknown column `{r}`"),
                            hint,
                        );
                    }
                }
            }
        }
        normalized
    }

    #[allow(clippy::too_many_arguments)]
    fn column_list(
        &mut self,
        columns: &[String],
        known: &[&str],
        path: &str,
        span: Span,
        what: &str,
        table: &str,
    ) {
        if columns.is_empty() {
            self.error(
                path,
                span,
                format!("{what} needs at least one column"),
                None,
            );
        }
        let mut seen = BTreeSet::new();
        for c in columns {
            if !known.contains(&c.as_str()) {
                let hint = suggest(c, known).map(|s| format!("did you mean `{s}`?"));
                self.error(
                    path,
                    span,
                    format!("table `{table}` has no column `{c}`"),
                    hint,
                );
            } else if !seen.insert(c) {
                self.error(
                    path,
                    span,
                    format!("column `{c}` appears twice in {what}"),
                    None,
                );
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn table(
        &mut self,
        t: &TableDecl,
        path: &str,
        schema: &SchemaDecl,
        scope: &Scope,
        summaries: &BTreeMap<(&str, &str), TableSummary>,
        ns: &mut Namespaces,
    ) -> (Table, Vec<(String, Sequence, Span)>) {
        let mut table = Table {
            unlogged: t.unlogged,
            comment: t.comment.clone(),
            ..Table::default()
        };
        let mut serials = Vec::new();
        let column_names: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
        let mut constraints: Vec<Pending> = Vec::new();
        let mut pk_columns: BTreeSet<String> = BTreeSet::new();

        // Primary key, from `pk: true` or `primary_key`.
        let pk_flagged: Vec<&ColumnDecl> = t.columns.iter().filter(|c| c.pk).collect();
        if pk_flagged.len() > 1 {
            for c in &pk_flagged[1..] {
                let cpath = path_or(&c.origin, || format!("{path}.columns"));
                self.error(
                    &cpath,
                    c.origin.field("pk"),
                    "more than one column has `pk: true`",
                    Some("declare a composite key with `primary_key: { columns: [...] }`".into()),
                );
            }
        }
        if let (Some(_), Some(c)) = (&t.primary_key, pk_flagged.first()) {
            let cpath = path_or(&c.origin, || format!("{path}.columns"));
            self.error(
                &cpath,
                c.origin.field("pk"),
                "`pk: true` on a table that also has `primary_key`",
                Some("keep one of the two".into()),
            );
        }
        // The long form, or the column flagged `pk: true` as a one-column long form.
        let flagged_pk = pk_flagged.first().map(|c| {
            (
                PrimaryKeyDecl {
                    columns: vec![c.name.clone()],
                    ..PrimaryKeyDecl::default()
                },
                path_or(&c.origin, || format!("{path}.columns")),
                c.origin.field("pk"),
            )
        });
        let primary_key = match (&t.primary_key, flagged_pk) {
            (Some(pk), _) => {
                let ppath = path_or(&pk.origin, || format!("{path}.primary_key"));
                self.column_list(
                    &pk.columns,
                    &column_names,
                    &ppath,
                    pk.origin.field("columns"),
                    "a primary key",
                    &t.name,
                );
                Some((pk.clone(), ppath, pk.origin.span))
            }
            (None, flagged) => flagged,
        };
        if let Some((pk, ppath, span)) = primary_key {
            pk_columns.extend(pk.columns.iter().cloned());
            constraints.push(Pending {
                explicit: pk.name,
                default_name: names::primary_key_name(&t.name),
                constraint: Constraint {
                    definition: ConstraintDef::PrimaryKey {
                        columns: pk.columns,
                    },
                    deferrable: pk.deferrable,
                    initially_deferred: pk.initially_deferred,
                    validated: true,
                    comment: pk.comment,
                },
                path: ppath,
                span,
            });
        }

        let mut seen_columns = BTreeSet::new();
        let mut column_renames: BTreeMap<&str, &str> = BTreeMap::new();
        for (i, c) in t.columns.iter().enumerate() {
            let cpath = path_or(&c.origin, || format!("{path}.columns[{i}]"));
            self.check_name(&cpath, c.origin.field("name"), "column", &c.name);
            if !seen_columns.insert(c.name.as_str()) {
                self.error(
                    &cpath,
                    c.origin.field("name"),
                    format!("duplicate column `{}`", c.name),
                    None,
                );
                continue;
            }
            if let Some(from) = &c.renamed_from {
                let span = c.origin.field("renamed_from");
                let rpath = format!("{cpath}.renamed_from");
                self.check_name(&cpath, span, "column", from);
                if from == &c.name {
                    self.error(
                        &rpath,
                        span,
                        "a column cannot be renamed from its own name",
                        None,
                    );
                } else if column_names.contains(&from.as_str()) {
                    self.error(
                        &rpath,
                        span,
                        format!("column `{from}` is still declared; a renamed column must not be"),
                        None,
                    );
                } else if let Some(other) = column_renames.insert(from, &c.name) {
                    self.error(
                        &rpath,
                        span,
                        format!("column `{other}` is also renamed from `{from}`"),
                        None,
                    );
                }
            }
            let (column, serial) = self.column(
                c,
                &cpath,
                t,
                schema,
                scope,
                &column_names,
                pk_columns.contains(&c.name),
            );
            if let Some(sequence) = serial {
                serials.push(sequence);
            }
            let position = u32::try_from(i + 1).ok();
            table.columns.insert(
                c.name.clone(),
                Column {
                    position: ColumnPosition(position),
                    ..column
                },
            );

            if c.unique {
                constraints.push(Pending {
                    explicit: None,
                    default_name: names::unique_name(&t.name, std::slice::from_ref(&c.name)),
                    constraint: Constraint {
                        definition: ConstraintDef::Unique {
                            columns: vec![c.name.clone()],
                            nulls_not_distinct: false,
                        },
                        deferrable: false,
                        initially_deferred: false,
                        validated: true,
                        comment: None,
                    },
                    path: cpath.clone(),
                    span: c.origin.field("unique"),
                });
            }
            if let Some(r) = &c.references {
                let rpath = format!("{cpath}.references");
                let columns = std::slice::from_ref(&c.name);
                let constraint = self.foreign_key(columns, r, &rpath, schema, summaries);
                constraints.push(Pending {
                    explicit: None,
                    default_name: names::foreign_key_name(&t.name, columns),
                    constraint,
                    path: rpath,
                    span: c.origin.field("references"),
                });
            }
            if let Some(expr) = &c.check {
                let span = c.origin.field("check");
                let cpath = format!("{cpath}.check");
                let (constraint, default_name) =
                    self.check(expr, false, false, None, &cpath, span, t, &column_names);
                constraints.push(Pending {
                    explicit: None,
                    default_name,
                    constraint,
                    path: cpath,
                    span,
                });
            }
        }

        for (i, u) in t.unique.iter().enumerate() {
            let upath = path_or(&u.origin, || format!("{path}.unique[{i}]"));
            self.column_list(
                &u.columns,
                &column_names,
                &upath,
                u.origin.field("columns"),
                "a unique constraint",
                &t.name,
            );
            constraints.push(Pending {
                explicit: u.name.clone(),
                default_name: names::unique_name(&t.name, &u.columns),
                constraint: Constraint {
                    definition: ConstraintDef::Unique {
                        columns: u.columns.clone(),
                        nulls_not_distinct: u.nulls_not_distinct,
                    },
                    deferrable: u.deferrable,
                    initially_deferred: u.initially_deferred,
                    validated: true,
                    comment: u.comment.clone(),
                },
                path: upath,
                span: u.origin.span,
            });
        }
        for (i, f) in t.foreign_keys.iter().enumerate() {
            let fpath = path_or(&f.origin, || format!("{path}.foreign_keys[{i}]"));
            self.column_list(
                &f.columns,
                &column_names,
                &fpath,
                f.origin.field("columns"),
                "a foreign key",
                &t.name,
            );
            let mut fk = self.foreign_key(
                &f.columns,
                &f.references,
                &format!("{fpath}.references"),
                schema,
                summaries,
            );
            fk.validated = !f.not_valid;
            fk.comment = f.comment.clone();
            constraints.push(Pending {
                explicit: f.name.clone(),
                default_name: names::foreign_key_name(&t.name, &f.columns),
                constraint: fk,
                path: fpath,
                span: f.origin.span,
            });
        }
        for (i, c) in t.checks.iter().enumerate() {
            let cpath = path_or(&c.origin, || format!("{path}.checks[{i}]"));
            let span = c.origin.field("expression");
            let (constraint, default_name) = self.check(
                &c.expression,
                c.no_inherit,
                c.not_valid,
                c.comment.clone(),
                &cpath,
                span,
                t,
                &column_names,
            );
            constraints.push(Pending {
                explicit: c.name.clone(),
                default_name,
                constraint,
                path: cpath,
                span: c.origin.span,
            });
        }
        for (i, x) in t.exclusions.iter().enumerate() {
            let xpath = path_or(&x.origin, || format!("{path}.exclusions[{i}]"));
            let (constraint, element_columns) = self.exclusion(x, &xpath, &column_names, &t.name);
            let needs_name = x.name.is_none() && element_columns.is_none();
            if needs_name {
                self.error(
                    &xpath,
                    x.origin.span,
                    "an exclusion constraint on expressions needs a `name`",
                    None,
                );
            }
            constraints.push(Pending {
                explicit: x.name.clone(),
                default_name: names::exclusion_name(&t.name, &element_columns.unwrap_or_default()),
                constraint,
                path: xpath,
                span: x.origin.span,
            });
        }

        for Pending {
            explicit,
            default_name,
            constraint,
            path: cpath,
            span,
        } in constraints
        {
            let index_backed = matches!(
                constraint.definition,
                ConstraintDef::PrimaryKey { .. }
                    | ConstraintDef::Unique { .. }
                    | ConstraintDef::Exclusion { .. }
            );
            if constraint.initially_deferred && !constraint.deferrable {
                self.error(
                    &cpath,
                    span,
                    "`initially_deferred` needs `deferrable: true`",
                    None,
                );
            }
            // One error per clash: a taken default name or a duplicate name is not also
            // reported as a clash in the schema's namespace.
            let name = match explicit {
                Some(name) => {
                    self.check_name(&cpath, span, "constraint", &name);
                    name
                }
                None => match self.default_constraint_name(ns, &cpath, span, default_name) {
                    Some(name) => name,
                    None => continue,
                },
            };
            if table.constraints.contains_key(&name) {
                self.error(
                    &cpath,
                    span,
                    format!("duplicate constraint name `{name}` in table `{}`", t.name),
                    None,
                );
                continue;
            }
            if index_backed {
                self.claim_relation(ns, &cpath, span, &name, "constraint");
            }
            table.constraints.insert(name, constraint);
        }

        for (i, index) in t.indexes.iter().enumerate() {
            let ipath = path_or(&index.origin, || format!("{path}.indexes[{i}]"));
            if let Some((name, converted)) = self.index(index, &ipath, &t.name, &table.columns) {
                if table.indexes.contains_key(&name) {
                    let (message, hint) = if index.name.is_some() {
                        (format!("duplicate index `{name}`"), None)
                    } else {
                        (
                            format!("the default name `{name}` is already taken in this schema"),
                            Some("give this index a `name`".to_owned()),
                        )
                    };
                    self.error(&ipath, index.origin.field("name"), message, hint);
                    continue;
                }
                self.claim_relation(ns, &ipath, index.origin.field("name"), &name, "index");
                table.indexes.insert(name, converted);
            }
        }

        if let Some(rls) = &t.rls {
            table.rls = self.rls(rls, path, &t.name, &column_names);
        }
        table.grants = self.grants(&t.grants, ObjectKind::Table, path, "grants");
        (table, serials)
    }

    #[allow(clippy::too_many_arguments)]
    fn column(
        &mut self,
        c: &ColumnDecl,
        path: &str,
        t: &TableDecl,
        schema: &SchemaDecl,
        scope: &Scope,
        column_names: &[&str],
        in_primary_key: bool,
    ) -> (Column, Option<(String, Sequence, Span)>) {
        let type_span = c.origin.field("type");
        let mut serial = None;
        let mut default = None;
        let mut implied_not_null = in_primary_key;
        let data_type = match types::resolve(&c.data_type, scope) {
            Ok(Resolved::Type(t)) => t,
            Ok(Resolved::Serial(int_type)) => {
                implied_not_null = true;
                let seq_name = names::serial_sequence_name(&t.name, &c.name);
                default = Some(serial_default(&schema.name, &seq_name));
                for (key, given) in [
                    ("default", c.default.is_some()),
                    ("identity", c.identity.is_some()),
                    ("generated", c.generated.is_some()),
                ] {
                    if given {
                        self.error(
                            &format!("{path}.{key}"),
                            c.origin.field(key),
                            format!("a serial column cannot have `{key}`"),
                            None,
                        );
                    }
                }
                let options = self.sequence_options(path, &|_| type_span, int_type, [None; 5]);
                serial = Some((
                    seq_name,
                    Sequence {
                        options,
                        owned_by: Some(SequenceOwner {
                            table: t.name.clone(),
                            column: c.name.clone(),
                        }),
                        grants: Vec::new(),
                        comment: None,
                    },
                    type_span,
                ));
                int_type.to_owned()
            }
            Err(e) => {
                // An unknown unqualified name (a qualified one's message has its own hint).
                let unknown = e
                    .strip_prefix("unknown type `")
                    .and_then(|rest| rest.strip_suffix('`'))
                    .filter(|name| !name.contains('.'));
                let hint = unknown.map(|name| {
                    let candidates: Vec<&str> = types::BUILTIN_NAMES
                        .iter()
                        .copied()
                        .chain(schema.enums.iter().map(|e| e.name.as_str()))
                        .collect();
                    let extension = self.doc.extensions.iter().find(|x| x.name == name);
                    match (extension, suggest(name, &candidates)) {
                        (Some(x), _) => format!(
                            "an extension's types are written qualified: `{}.{name}`",
                            x.schema.as_deref().unwrap_or("public")
                        ),
                        (None, Some(s)) => format!("did you mean `{s}`?"),
                        (None, None) => "declare it under `enums`, or write an extension's type qualified (`public.citext`)".into(),
                    }
                });
                self.error(
                    &format!("{path}.type"),
                    type_span,
                    format!("invalid type `{}`: {e}", c.data_type),
                    hint,
                );
                c.data_type.clone()
            }
        };

        if let Some(text) = &c.default {
            let span = c.origin.field("default");
            let dpath = format!("{path}.default");
            if let Ok(refs) = sql::column_refs(text) {
                if let Some(r) = refs.iter().next() {
                    let hint = if refs.len() == 1 && text.trim() == r {
                        Some(format!(
                            "for the text '{r}', quote it inside the YAML string: \"'{r}'\""
                        ))
                    } else {
                        None
                    };
                    self.error(
                        &dpath,
                        span,
                        format!("a default cannot refer to column `{r}`"),
                        hint,
                    );
                }
            }
            default = Some(self.table_expression(
                text,
                &dpath,
                span,
                "default",
                column_names,
                true,
                false,
            ));
            if let Ok(true) = sql::has_subquery(text) {
                self.error(&dpath, span, "a default cannot contain a sub-query", None);
            }
        }

        let identity = c.identity.as_ref().map(|id| {
            let span = c.origin.field("identity");
            let ipath = format!("{path}.identity");
            implied_not_null = true;
            if !types::is_sequence_type(&data_type) {
                self.error(
                    &ipath,
                    span,
                    format!(
                        "an identity column must be smallint, integer or bigint, not `{data_type}`"
                    ),
                    None,
                );
            }
            if c.default.is_some() {
                self.error(
                    &ipath,
                    span,
                    "an identity column cannot have a `default`",
                    None,
                );
            }
            let int_type = if types::is_sequence_type(&data_type) {
                data_type.as_str()
            } else {
                "bigint"
            };
            let mut sequence = self.sequence_options(
                &ipath,
                &|_| span,
                int_type,
                [id.start, id.increment, id.min, id.max, id.cache],
            );
            sequence.cycle = id.cycle;
            Identity {
                generation: id.generation,
                sequence,
            }
        });

        let generated = c.generated.as_ref().map(|text| {
            let span = c.origin.field("generated");
            let gpath = format!("{path}.generated");
            for (key, given) in [
                ("default", c.default.is_some()),
                ("identity", c.identity.is_some()),
            ] {
                if given {
                    self.error(
                        &gpath,
                        span,
                        format!("a generated column cannot have `{key}`"),
                        None,
                    );
                }
            }
            self.table_expression(
                text,
                &gpath,
                span,
                "generated expression",
                column_names,
                false,
                true,
            )
        });

        let not_null = match c.not_null {
            Some(false) if implied_not_null => {
                let why = if in_primary_key {
                    "a primary key column"
                } else if c.identity.is_some() {
                    "an identity column"
                } else {
                    "a serial column"
                };
                self.error(
                    &format!("{path}.not_null"),
                    c.origin.field("not_null"),
                    format!("{why} is always NOT NULL"),
                    Some("remove `not_null: false`".into()),
                );
                true
            }
            Some(v) => v || implied_not_null,
            None => implied_not_null,
        };

        let collation = c
            .collation
            .as_ref()
            .and_then(|text| match collation_name(text) {
                Ok(name) => Some(name),
                Err(e) => {
                    self.error(
                        &format!("{path}.collation"),
                        c.origin.field("collation"),
                        e,
                        None,
                    );
                    None
                }
            });

        let column = Column {
            data_type,
            not_null,
            default: if c.generated.is_some() || c.identity.is_some() {
                None
            } else {
                default
            },
            identity,
            generated,
            collation,
            grants: self.grants(&c.grants, ObjectKind::Column, path, "grants"),
            comment: c.comment.clone(),
            position: ColumnPosition::default(),
        };
        (column, serial)
    }

    fn foreign_key(
        &mut self,
        columns: &[String],
        r: &ReferencesDecl,
        path: &str,
        schema: &SchemaDecl,
        summaries: &BTreeMap<(&str, &str), TableSummary>,
    ) -> Constraint {
        let target_schema = r.schema.clone().unwrap_or_else(|| schema.name.clone());
        let span = r.origin.field("table");
        let mut target_columns = r.columns.clone();
        match summaries.get(&(target_schema.as_str(), r.table.as_str())) {
            None => {
                let candidates: Vec<&str> = summaries
                    .keys()
                    .filter(|(s, _)| *s == target_schema)
                    .map(|(_, t)| *t)
                    .collect();
                // The same table in another schema is the likelier intent than a near name.
                let elsewhere = summaries
                    .keys()
                    .find(|(s, t)| *t == r.table && *s != target_schema)
                    .map(|(s, _)| *s);
                let hint = match elsewhere {
                    Some(s) => Some(format!(
                        "`{}` is declared in schema `{s}`: set `schema: {s}`",
                        r.table
                    )),
                    None => suggest(&r.table, &candidates).map(|s| format!("did you mean `{s}`?")),
                };
                self.error(
                    path,
                    span,
                    format!(
                        "foreign key to table `{target_schema}.{}`, which is not declared",
                        r.table
                    ),
                    hint,
                );
            }
            Some(target) => {
                if target_columns.is_empty() {
                    match &target.primary_key {
                        Some(pk) => target_columns = pk.clone(),
                        None => self.error(
                            path,
                            span,
                            format!("table `{target_schema}.{}` has no primary key", r.table),
                            Some("name the referenced `columns`".into()),
                        ),
                    }
                }
                let cspan = r.origin.field("columns");
                let mut all_known = true;
                for c in &target_columns {
                    if !target.columns.contains(&c.as_str()) {
                        all_known = false;
                        let hint =
                            suggest(c, &target.columns).map(|s| format!("did you mean `{s}`?"));
                        self.error(
                            path,
                            cspan,
                            format!("table `{target_schema}.{}` has no column `{c}`", r.table),
                            hint,
                        );
                    }
                }
                let wanted: BTreeSet<String> = target_columns.iter().cloned().collect();
                if all_known && !target_columns.is_empty() && !target.unique_sets.contains(&wanted)
                {
                    self.error(
                        path,
                        cspan,
                        format!(
                            "no primary key or unique constraint of `{target_schema}.{}` covers exactly ({})",
                            r.table,
                            target_columns.join(", ")
                        ),
                        Some("Postgres requires the referenced columns to be unique".into()),
                    );
                }
                if !target_columns.is_empty() && target_columns.len() != columns.len() {
                    self.error(
                        path,
                        cspan,
                        format!(
                            "{} referencing column(s) but {} referenced column(s)",
                            columns.len(),
                            target_columns.len()
                        ),
                        None,
                    );
                }
            }
        }
        Constraint {
            definition: ConstraintDef::ForeignKey {
                columns: columns.to_vec(),
                references: ForeignKeyTarget {
                    schema: target_schema,
                    table: r.table.clone(),
                    columns: target_columns,
                },
                on_update: r.on_update.unwrap_or(ForeignKeyAction::NoAction),
                on_delete: r.on_delete.unwrap_or(ForeignKeyAction::NoAction),
                match_type: r.match_type.unwrap_or(ForeignKeyMatch::Simple),
            },
            deferrable: r.deferrable,
            initially_deferred: r.initially_deferred,
            validated: true,
            comment: None,
        }
    }

    /// A check constraint and the name Postgres would give it: `<table>_<column>_check` when
    /// the expression uses exactly one column, `<table>_check` otherwise.
    #[allow(clippy::too_many_arguments)]
    fn check(
        &mut self,
        expression: &str,
        no_inherit: bool,
        not_valid: bool,
        comment: Option<String>,
        path: &str,
        span: Span,
        t: &TableDecl,
        column_names: &[&str],
    ) -> (Constraint, String) {
        let normalized =
            self.table_expression(expression, path, span, "check", column_names, false, true);
        let refs = sql::column_refs(expression).unwrap_or_default();
        let single = if refs.len() == 1 {
            refs.iter().next().map(String::as_str)
        } else {
            None
        };
        let name = names::check_name(&t.name, single);
        (
            Constraint {
                definition: ConstraintDef::Check {
                    expression: normalized,
                    no_inherit,
                },
                deferrable: false,
                initially_deferred: false,
                validated: !not_valid,
                comment,
            },
            name,
        )
    }

    /// An exclusion constraint, and its element columns when every element is a plain column
    /// (which is when Postgres' default name can be predicted).
    fn exclusion(
        &mut self,
        x: &ExclusionDecl,
        path: &str,
        column_names: &[&str],
        table: &str,
    ) -> (Constraint, Option<Vec<String>>) {
        let span = x.origin.field("definition");
        let mut constraint = Constraint {
            definition: ConstraintDef::Exclusion {
                definition: x.definition.clone(),
            },
            deferrable: false,
            initially_deferred: false,
            validated: true,
            comment: x.comment.clone(),
        };
        let sql = format!("ALTER TABLE t ADD {}", x.definition);
        let parsed = match pg_query::parse(&sql, 0) {
            Ok(p) if p.protobuf.stmts.len() == 1 => p,
            Ok(_) => {
                self.error(
                    path,
                    span,
                    "an exclusion definition must be one `EXCLUDE …` clause",
                    None,
                );
                return (constraint, None);
            }
            Err(e) => {
                self.error(
                    path,
                    span,
                    format!("cannot parse the exclusion definition: {e}"),
                    None,
                );
                return (constraint, None);
            }
        };
        let json = serde_json::to_value(&parsed.protobuf).unwrap_or_default();
        let def = json.pointer(
            "/stmts/0/stmt/node/AlterTableStmt/cmds/0/node/AlterTableCmd/def/node/Constraint",
        );
        let exclusion_type = pg_query::protobuf::ConstrType::ConstrExclusion as i64;
        let Some(def) =
            def.filter(|d| d.get("contype").and_then(|v| v.as_i64()) == Some(exclusion_type))
        else {
            self.error(path, span, "the definition must start with `EXCLUDE`", None);
            return (constraint, None);
        };
        if def
            .get("conname")
            .and_then(|v| v.as_str())
            .is_some_and(|n| !n.is_empty())
        {
            self.error(
                path,
                span,
                "give the constraint's name in `name`, not in the definition",
                None,
            );
        }
        constraint.deferrable = def
            .get("deferrable")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        constraint.initially_deferred = def
            .get("initdeferred")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        match normalize::constraint_clause(&x.definition) {
            // pg_query prints `WHERE` before `INCLUDE`, which its own parser then refuses: a
            // definition that does not read back could never round-trip, so it is refused
            // here rather than stored.
            Ok(text) if normalize::constraint_clause(&text).as_ref() != Ok(&text) => self.error(
                path,
                span,
                "this exclusion definition does not survive normalisation (INCLUDE together \
                 with WHERE is not supported)",
                None,
            ),
            Ok(text) => constraint.definition = ConstraintDef::Exclusion { definition: text },
            Err(e) => self.error(
                path,
                span,
                format!(
                    "cannot normalise the exclusion definition: {}",
                    sql::clean(&e.message)
                ),
                None,
            ),
        }
        let mut element_columns = Some(Vec::new());
        for element in def
            .get("exclusions")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            let name = element
                .pointer("/node/List/items/0/node/IndexElem/name")
                .and_then(|v| v.as_str())
                .filter(|n| !n.is_empty());
            match (name, element_columns.as_mut()) {
                (Some(n), Some(list)) => {
                    if !column_names.contains(&n) {
                        self.error(
                            path,
                            span,
                            format!("table `{table}` has no column `{n}`"),
                            None,
                        );
                    }
                    list.push(n.to_owned());
                }
                _ => element_columns = None,
            }
        }
        for include in def
            .get("including")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            if let (Some(n), Some(list)) = (
                include
                    .pointer("/node/String/sval")
                    .and_then(|v| v.as_str()),
                element_columns.as_mut(),
            ) {
                list.push(n.to_owned());
            }
        }
        (constraint, element_columns)
    }

    fn index(
        &mut self,
        index: &IndexDecl,
        path: &str,
        table: &str,
        columns: &BTreeMap<String, Column>,
    ) -> Option<(String, Index)> {
        let column_names: Vec<&str> = columns.keys().map(String::as_str).collect();
        let column_names = column_names.as_slice();
        if index.keys.is_empty() {
            // The reader has said why; a document built in code gets told here.
            if index.origin.path.is_empty() {
                self.error(
                    path,
                    index.origin.span,
                    "an index needs at least one key",
                    None,
                );
            }
            return None;
        }
        let method = index
            .method
            .clone()
            .unwrap_or_else(|| "btree".to_owned())
            .to_ascii_lowercase();
        if method.is_empty()
            || !method
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            self.error(
                &format!("{path}.using"),
                index.origin.field("using"),
                format!("invalid index method `{method}`"),
                None,
            );
        }
        let mut keys = Vec::new();
        // Keys written as `columns: [a]` are reported as what was written.
        let written_as = if index.origin.fields.contains_key("columns") {
            "columns"
        } else {
            "keys"
        };
        for (i, k) in index.keys.iter().enumerate() {
            let kpath = format!("{path}.{written_as}[{i}]");
            let span = index.origin.field(written_as);
            let (column, expression) = match (&k.column, &k.expression) {
                (Some(c), None) => {
                    if !column_names.contains(&c.as_str()) {
                        let hint = suggest(c, column_names).map(|s| format!("did you mean `{s}`?"));
                        self.error(
                            &kpath,
                            span,
                            format!("table `{table}` has no column `{c}`"),
                            hint,
                        );
                    }
                    (Some(c.clone()), None)
                }
                (None, Some(e)) => (
                    None,
                    Some(self.table_expression(
                        e,
                        &kpath,
                        span,
                        "index expression",
                        column_names,
                        false,
                        true,
                    )),
                ),
                _ => {
                    if index.origin.path.is_empty() {
                        self.error(
                            &kpath,
                            span,
                            "an index key needs exactly one of `column` and `expression`",
                            None,
                        );
                    }
                    continue;
                }
            };
            let opclass = k
                .opclass
                .as_ref()
                .and_then(|o| match qualified_name(o, true) {
                    Ok(n) => Some(n),
                    Err(e) => {
                        self.error(&kpath, span, format!("invalid operator class: {e}"), None);
                        None
                    }
                });
            let collation = k
                .collation
                .as_ref()
                .and_then(|o| match qualified_name(o, false) {
                    Ok(n) => Some(n),
                    Err(e) => {
                        self.error(&kpath, span, format!("invalid collation: {e}"), None);
                        None
                    }
                });
            // `pg_get_indexdef` prints a key's collation only where it differs from the
            // column's, so the catalog never holds one equal to it.
            let column_collation = column
                .as_ref()
                .and_then(|c| columns.get(c))
                .and_then(|c| c.collation.as_deref())
                .and_then(names::split_printed_name);
            let collation = collation.filter(|k| {
                column_collation.is_none() || names::split_printed_name(k) != column_collation
            });
            keys.push(IndexKey {
                column,
                expression,
                opclass,
                collation,
                descending: k.descending,
                nulls_first: k.nulls_first.unwrap_or(k.descending),
            });
        }
        for c in &index.include {
            if !column_names.contains(&c.as_str()) {
                self.error(
                    &format!("{path}.include"),
                    index.origin.field("include"),
                    format!("table `{table}` has no column `{c}`"),
                    None,
                );
            }
        }
        let predicate = index.predicate.as_ref().map(|p| {
            self.table_expression(
                p,
                &format!("{path}.where"),
                index.origin.field("where"),
                "index predicate",
                column_names,
                false,
                true,
            )
        });
        let name = match &index.name {
            Some(n) => {
                self.check_name(path, index.origin.field("name"), "index", n);
                n.clone()
            }
            None => {
                if index.keys.iter().any(|k| k.column.is_none()) {
                    self.error(
                        path,
                        index.origin.span,
                        "an index on expressions needs a `name`",
                        None,
                    );
                    return None;
                }
                let mut columns: Vec<String> =
                    index.keys.iter().filter_map(|k| k.column.clone()).collect();
                columns.extend(index.include.iter().cloned());
                names::index_name(table, &columns)
            }
        };
        Some((
            name,
            Index {
                unique: index.unique,
                method,
                keys,
                include: index.include.clone(),
                predicate,
                nulls_not_distinct: index.nulls_not_distinct,
                comment: index.comment.clone(),
            },
        ))
    }

    fn rls(&mut self, rls: &RlsDecl, table_path: &str, table: &str, column_names: &[&str]) -> Rls {
        let path = path_or(&rls.origin, || format!("{table_path}.rls"));
        let mut out = Rls {
            enabled: rls.enabled.unwrap_or(false),
            forced: rls.forced,
            policies: BTreeMap::new(),
        };
        if !rls.policies.is_empty() && rls.enabled.is_none() {
            self.error(
                &path,
                rls.origin.span,
                format!("policies on table `{table}`, which does not enable row-level security"),
                Some("add `enabled: true` (or `enabled: false` to keep the policies inactive on purpose)".into()),
            );
        }
        for (i, p) in rls.policies.iter().enumerate() {
            let ppath = path_or(&p.origin, || format!("{path}.policies[{i}]"));
            self.check_name(&ppath, p.origin.field("name"), "policy", &p.name);
            if p.command == PolicyCommand::Insert && p.using.is_some() {
                self.error(
                    &ppath,
                    p.origin.field("using"),
                    "an insert policy cannot have `using`",
                    Some("use `with_check`".into()),
                );
            }
            if matches!(p.command, PolicyCommand::Select | PolicyCommand::Delete)
                && p.with_check.is_some()
            {
                self.error(
                    &ppath,
                    p.origin.field("with_check"),
                    "a select or delete policy cannot have `with_check`",
                    Some("use `using`".into()),
                );
            }
            let mut roles = p.roles.clone();
            for role in &roles {
                self.check_name(&ppath, p.origin.field("roles"), "role", role);
            }
            if roles.is_empty() {
                roles.push("public".to_owned());
            }
            let using = p.using.as_ref().map(|e| {
                self.table_expression(
                    e,
                    &format!("{ppath}.using"),
                    p.origin.field("using"),
                    "policy expression",
                    column_names,
                    true,
                    false,
                )
            });
            let with_check = p.with_check.as_ref().map(|e| {
                self.table_expression(
                    e,
                    &format!("{ppath}.with_check"),
                    p.origin.field("with_check"),
                    "policy expression",
                    column_names,
                    true,
                    false,
                )
            });
            let policy = Policy {
                command: p.command,
                permissive: p.permissive,
                roles,
                using,
                with_check,
                comment: p.comment.clone(),
            };
            if out.policies.insert(p.name.clone(), policy).is_some() {
                self.error(
                    &ppath,
                    p.origin.field("name"),
                    format!("duplicate policy `{}`", p.name),
                    None,
                );
            }
        }
        out
    }
}

fn is_select(query: &str) -> bool {
    pg_query::parse(query, 0).is_ok_and(|p| {
        matches!(
            p.protobuf.stmts.as_slice(),
            [stmt] if matches!(stmt.stmt.as_ref().and_then(|n| n.node.as_ref()), Some(pg_query::NodeEnum::SelectStmt(_)))
        )
    })
}

/// A column collation as the catalog holds it (Postgres' own quoting, unqualified for
/// `pg_catalog` collations). Written whole (`en_US.utf8` is one name), or in quoted printed
/// form for another schema's collation (`"myschema"."mycoll"`).
pub(crate) fn collation_name(text: &str) -> Result<String, String> {
    let parts = if text.contains('"') {
        names::split_printed_name(text)
            .ok_or_else(|| format!("`{text}` is not a collation name"))?
    } else {
        vec![text.to_owned()]
    };
    for p in &parts {
        if let Some(problem) = identifier_problem(p) {
            return Err(problem);
        }
    }
    match parts.as_slice() {
        [name] => Ok(pg_quote(name)),
        [schema, name] if schema == "pg_catalog" => Ok(pg_quote(name)),
        [schema, name] => Ok(pg_qualified(schema, name)),
        _ => Err(format!("`{text}` is not a collation name")),
    }
}

/// An index key's operator class or collation as the catalog holds it: every part quoted.
/// Operator classes split on dots (`public.gin_trgm_ops`); collations are taken whole unless
/// written in quoted form.
pub(crate) fn qualified_name(text: &str, split_dots: bool) -> Result<String, String> {
    let parts: Vec<String> = if text.contains('"') {
        names::split_printed_name(text).ok_or_else(|| format!("`{text}` is not a name"))?
    } else if split_dots {
        text.split('.').map(str::to_owned).collect()
    } else {
        vec![text.to_owned()]
    };
    if parts.len() > 2 {
        return Err(format!("`{text}` has too many dots"));
    }
    for p in &parts {
        if let Some(problem) = identifier_problem(p) {
            return Err(problem);
        }
    }
    let parts: Vec<&str> = match parts.as_slice() {
        [schema, name] if schema == "pg_catalog" => vec![name.as_str()],
        _ => parts.iter().map(String::as_str).collect(),
    };
    Ok(parts
        .iter()
        .map(|p| crate::ident::quote_ident(p))
        .collect::<Vec<_>>()
        .join("."))
}

/// The default Postgres gives a serial column: `nextval('<schema>.<sequence>'::regclass)`, the
/// name printed as `regclass` output prints it with an empty `search_path`.
pub(crate) fn serial_default(schema: &str, sequence: &str) -> String {
    let literal = crate::ident::quote_literal(&pg_qualified(schema, sequence));
    let text = format!("nextval({literal}::regclass)");
    normalize::expression(&text).unwrap_or(text)
}
