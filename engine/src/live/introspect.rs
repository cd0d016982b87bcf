//! Reading a live database into a [`Catalog`].
//!
//! One bulk query per object kind, all in one read-only repeatable-read transaction (a single
//! snapshot), with `search_path` emptied so that every name Postgres prints (in defaults, types,
//! view bodies) comes out schema-qualified the same way whatever the caller's settings. OIDs are
//! used only to join rows here and never reach the catalog.
//!
//! The `lockplane` schema holds Lockplane's own helpers (`tenant_id()`, `user_id()`, see
//! [`crate::dsl::helpers`]) and, like the system schemas, is not part of any catalog.
//!
//! Expressions come from `pg_get_expr`/`pg_get_viewdef` and go through [`crate::normalize`].
//! Index definitions come from `pg_get_indexdef` parsed with pg_query, so opclass, ordering and
//! collation decisions are Postgres' own.

use std::collections::{BTreeMap, HashMap};

use tokio_postgres::{Client, GenericClient, Row};

use crate::catalog::*;
use crate::normalize::{self, NormalizeError};

/// Errors reading a catalog.
#[derive(Debug, thiserror::Error)]
pub enum IntrospectError {
    /// A catalog query failed.
    #[error("reading {what} failed: {}", server_says(.source))]
    Query {
        /// Which part of the catalog was being read.
        what: &'static str,
        /// The server's error.
        source: tokio_postgres::Error,
    },
    /// A schema named in the filter does not exist.
    #[error("schema `{0}` does not exist")]
    NoSuchSchema(String),
    /// Postgres printed something Lockplane cannot parse: fail closed rather than guess.
    #[error("cannot normalise {object}: {source}")]
    Normalize {
        /// Object path (`public.users.default(id)`).
        object: String,
        /// The parser's complaint.
        source: NormalizeError,
    },
    /// The server is older than the oldest supported version.
    #[error("Postgres {0} is not supported (14 or newer is)")]
    UnsupportedVersion(String),
}

/// The server's own words for a failed catalog query (tokio-postgres' Display says only
/// "db error"), and what to do when another session's lock was in the way.
fn server_says(e: &tokio_postgres::Error) -> String {
    let Some(db) = e.as_db_error() else {
        return match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        };
    };
    let mut out = format!("{} ({})", db.message(), db.code().code());
    if let Some(detail) = db.detail() {
        out.push_str(&format!("; {detail}"));
    }
    if db.code() == &tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE {
        out.push_str(&format!(
            "; another session holds a lock on a table whose definition is being read, and \
             Lockplane waits at most {} s for one: try again when that transaction ends \
             (pg_locks shows who holds it)",
            crate::connect::SESSION_LOCK_TIMEOUT_MS / 1000
        ));
    }
    out
}

/// What to read.
#[derive(Debug, Clone, Default)]
pub struct IntrospectOptions {
    /// Only these schemas (all user schemas when empty).
    pub schemas: Vec<String>,
}

/// Reads the catalog of the database `client` is connected to.
#[tracing::instrument(level = "debug", name = "introspect", skip_all)]
pub async fn introspect(
    client: &mut Client,
    options: &IntrospectOptions,
) -> Result<Catalog, IntrospectError> {
    read_catalog(client, None, options).await
}

/// Like [`introspect`], but the server reads with two backends at once: `helper`, a second
/// connection to the same database, imports the snapshot exported by `client`, so both see the
/// same committed state. About twice as fast on large catalogs (the server work dominates).
#[tracing::instrument(level = "debug", name = "introspect", skip_all)]
pub async fn introspect_parallel(
    client: &mut Client,
    helper: &mut Client,
    options: &IntrospectOptions,
) -> Result<Catalog, IntrospectError> {
    read_catalog(client, Some(helper), options).await
}

fn q(what: &'static str) -> impl Fn(tokio_postgres::Error) -> IntrospectError {
    move |source| IntrospectError::Query { what, source }
}

async fn snapshot_transaction(
    client: &mut Client,
) -> Result<tokio_postgres::Transaction<'_>, IntrospectError> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(q("transaction start"))?;
    Ok(tx)
}

/// Like [`introspect`], but inside the transaction `client` already has open (the executor's
/// check before `COMMIT`): the catalog as this transaction sees it, its own changes included.
/// Sets `search_path` empty for the rest of the transaction (`set_config(…, true)`).
#[tracing::instrument(level = "debug", name = "introspect", skip_all)]
pub async fn introspect_in_transaction(
    client: &Client,
    options: &IntrospectOptions,
) -> Result<Catalog, IntrospectError> {
    client
        .batch_execute(SETTINGS)
        .await
        .map_err(q("settings"))?;
    read_in(client, client, options).await
}

/// Every catalog query introspection runs, by name, as sent to a server whose
/// `server_version_num` is `version`: all but `schemas` and `extensions` take the schema names
/// as `$1 text[]`. For tests that check how Postgres plans them (`EXPLAIN`); not a stable API.
#[doc(hidden)]
pub fn catalog_queries(version: i32) -> Vec<(&'static str, String)> {
    let nnd = if version >= 150000 {
        "i.indnullsnotdistinct"
    } else {
        "false"
    };
    vec![
        ("schemas", SQL_SCHEMAS.to_owned()),
        ("extensions", SQL_EXTENSIONS.to_owned()),
        ("relations", SQL_RELATIONS.to_owned()),
        ("grants", SQL_GRANTS.to_owned()),
        ("columns", SQL_COLUMNS.to_owned()),
        ("column grants", SQL_COLUMN_GRANTS.to_owned()),
        (
            "constraints",
            SQL_CONSTRAINTS.replace("{nulls_not_distinct}", nnd),
        ),
        ("indexes (even oids)", SQL_INDEXES.replace("{half}", "0")),
        ("indexes (odd oids)", SQL_INDEXES.replace("{half}", "1")),
        ("policies", SQL_POLICIES.to_owned()),
        ("sequences", SQL_SEQUENCES.to_owned()),
        ("enums", SQL_ENUMS.to_owned()),
        ("other objects", SQL_UNSUPPORTED.to_owned()),
    ]
}

/// An empty search_path makes Postgres qualify every user object it prints. JIT off: the
/// catalog queries are many short joins whose cost estimates on a large catalog cross the JIT
/// threshold, and compiling them costs more (≈ 120 ms at 2,000 tables) than running them.
const SETTINGS: &str = "SELECT pg_catalog.set_config('search_path', '', true), \
                        pg_catalog.set_config('jit', 'off', true)";

async fn read_catalog(
    client: &mut Client,
    helper: Option<&mut Client>,
    options: &IntrospectOptions,
) -> Result<Catalog, IntrospectError> {
    let tx = snapshot_transaction(client).await?;
    tx.batch_execute(SETTINGS).await.map_err(q("settings"))?;
    let helper_tx = match helper {
        Some(helper) => {
            let snapshot: String = tx
                .query_one("SELECT pg_catalog.pg_export_snapshot()", &[])
                .await
                .map_err(q("snapshot export"))?
                .get(0);
            let htx = snapshot_transaction(helper).await?;
            htx.batch_execute(&format!(
                "SET TRANSACTION SNAPSHOT {}; {SETTINGS}",
                crate::ident::quote_literal(&snapshot)
            ))
            .await
            .map_err(q("snapshot import"))?;
            Some(htx)
        }
        None => None,
    };
    let catalog = read_in(&tx, helper_tx.as_ref().unwrap_or(&tx), options).await?;
    if let Some(htx) = helper_tx {
        htx.commit().await.map_err(q("transaction end"))?;
    }
    tx.commit().await.map_err(q("transaction end"))?;
    Ok(catalog)
}

/// Reads the catalog with `tx` and `other` (the same session, or two sessions on one
/// snapshot), both with `search_path` emptied.
async fn read_in<C: GenericClient + Sync>(
    tx: &C,
    other: &C,
    options: &IntrospectOptions,
) -> Result<Catalog, IntrospectError> {
    let version: i32 = tx
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(q("server version"))?
        .get(0);
    if version < 140000 {
        return Err(IntrospectError::UnsupportedVersion(version.to_string()));
    }

    let all_schemas = tx.query(SQL_SCHEMAS, &[]).await.map_err(q("schemas"))?;
    let mut catalog = Catalog::default();
    for row in &all_schemas {
        let name: String = row.get(0);
        if options.schemas.is_empty() || options.schemas.contains(&name) {
            catalog.schemas.insert(
                name,
                Schema {
                    comment: row.get(1),
                    ..Schema::default()
                },
            );
        }
    }
    for wanted in &options.schemas {
        if !catalog.schemas.contains_key(wanted) {
            return Err(IntrospectError::NoSuchSchema(wanted.clone()));
        }
    }
    let names: Vec<String> = catalog.schemas.keys().cloned().collect();
    let p: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&names];

    let nnd = if version >= 150000 {
        "i.indnullsnotdistinct"
    } else {
        "false"
    };
    let sql_constraints = SQL_CONSTRAINTS.replace("{nulls_not_distinct}", nnd);
    // Queries issued together on one connection are pipelined (one round trip); the two groups
    // are about equally heavy for the server and run on the two connections when there are two.
    // Index definitions (`pg_get_indexdef`, ≈ 80 µs each) are the heaviest part, so they are
    // read in two halves, one per connection. Measured at 2,000 tables of every kind
    // (`testkit::app_table_sql`): indexes ≈ 520 ms, columns 280, constraints 210, the rest
    // together ≈ 240.
    let (index_half_a, index_half_b) = (
        SQL_INDEXES.replace("{half}", "0"),
        SQL_INDEXES.replace("{half}", "1"),
    );
    let (
        (extensions, relations, grants, columns, mut indexes, enums),
        (column_grants, constraints, indexes_b, policies, sequences, unsupported),
    ) = tokio::try_join!(
        async {
            tokio::try_join!(
                async { tx.query(SQL_EXTENSIONS, &[]).await.map_err(q("extensions")) },
                async { tx.query(SQL_RELATIONS, &p).await.map_err(q("relations")) },
                async { tx.query(SQL_GRANTS, &p).await.map_err(q("grants")) },
                async { tx.query(SQL_COLUMNS, &p).await.map_err(q("columns")) },
                async { tx.query(&index_half_a, &p).await.map_err(q("indexes")) },
                async { tx.query(SQL_ENUMS, &p).await.map_err(q("enums")) },
            )
        },
        async {
            tokio::try_join!(
                async {
                    other
                        .query(SQL_COLUMN_GRANTS, &p)
                        .await
                        .map_err(q("column grants"))
                },
                async {
                    other
                        .query(&sql_constraints, &p)
                        .await
                        .map_err(q("constraints"))
                },
                async { other.query(&index_half_b, &p).await.map_err(q("indexes")) },
                async { other.query(SQL_POLICIES, &p).await.map_err(q("policies")) },
                async { other.query(SQL_SEQUENCES, &p).await.map_err(q("sequences")) },
                async {
                    other
                        .query(SQL_UNSUPPORTED, &p)
                        .await
                        .map_err(q("other objects"))
                },
            )
        },
    )?;
    indexes.extend(indexes_b);
    for row in &extensions {
        catalog
            .extensions
            .insert(row.get(0), Extension { schema: row.get(1) });
    }
    let mut norm = Normalizer::default();
    let rels = read_relations(&mut catalog, &relations, &mut norm)?;
    read_grants(&mut catalog, &rels, &grants);
    read_columns(&mut catalog, &rels, &columns, &mut norm)?;
    read_column_grants(&mut catalog, &rels, &column_grants);
    read_constraints(&mut catalog, &rels, &constraints, &mut norm)?;
    read_indexes(&mut catalog, &rels, &indexes, &mut norm)?;
    read_policies(&mut catalog, &rels, &policies, &mut norm)?;
    read_sequences(&mut catalog, &sequences);
    read_enums(&mut catalog, &enums);
    for row in &unsupported {
        catalog.unsupported.push(UnsupportedObject {
            kind: row.get(0),
            schema: row.get(1),
            name: row.get(2),
        });
    }
    catalog.canonicalize();
    Ok(catalog)
}

/// Where a relation OID lives in the catalog being built.
#[derive(Debug, Clone)]
struct RelRef {
    schema: String,
    name: String,
    kind: RelKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RelKind {
    Table,
    View,
    Sequence,
}

type Rels = HashMap<u32, RelRef>;

/// Normalisation with memory: real schemas repeat the same defaults, checks and policies
/// (`now()`, `0`, a tenant predicate) across many tables, and pg_query's parse and deparse
/// cost far more than a hash lookup.
#[derive(Default)]
struct Normalizer {
    cache: HashMap<(u8, String), Result<String, NormalizeError>>,
    indexes: HashMap<String, Result<IndexShape, String>>,
}

/// What a `CREATE INDEX` statement says, apart from its name, table, predicate text and
/// expression texts (which are read and normalised separately).
/// Which normaliser a text goes through.
#[derive(Clone, Copy)]
enum Form {
    Expression,
    ViewQuery,
    ConstraintClause,
}

#[derive(Clone)]
struct IndexShape {
    method: String,
    keys: Vec<IndexKey>,
    include: Vec<String>,
    nulls_not_distinct: bool,
}

impl Normalizer {
    fn run(
        &mut self,
        object: impl FnOnce() -> String,
        text: &str,
        form: Form,
    ) -> Result<String, IntrospectError> {
        self.cache
            .entry((form as u8, text.to_owned()))
            .or_insert_with(|| match form {
                Form::Expression => normalize::expression(text),
                Form::ViewQuery => normalize::view_query(text),
                Form::ConstraintClause => normalize::constraint_clause(text),
            })
            .clone()
            .map_err(|source| IntrospectError::Normalize {
                object: object(),
                source,
            })
    }

    fn opt_expr(
        &mut self,
        object: impl FnOnce() -> String,
        text: Option<String>,
    ) -> Result<Option<String>, IntrospectError> {
        text.map(|t| self.run(object, &t, Form::Expression))
            .transpose()
    }

    fn index_shape(
        &mut self,
        statement: &str,
        cache_key: Option<&str>,
    ) -> Result<IndexShape, String> {
        match cache_key {
            Some(key) => self
                .indexes
                .entry(key.to_owned())
                .or_insert_with(|| parse_index(statement))
                .clone(),
            None => parse_index(statement),
        }
    }
}

fn table_mut<'a>(catalog: &'a mut Catalog, rels: &Rels, oid: u32) -> Option<&'a mut Table> {
    let r = rels.get(&oid).filter(|r| r.kind == RelKind::Table)?;
    catalog.schemas.get_mut(&r.schema)?.tables.get_mut(&r.name)
}

fn read_relations(
    catalog: &mut Catalog,
    rows: &[Row],
    norm: &mut Normalizer,
) -> Result<Rels, IntrospectError> {
    let mut rels = Rels::new();
    for row in rows {
        let oid: u32 = row.get("oid");
        let schema_name: String = row.get("nspname");
        let name: String = row.get("relname");
        let relkind: String = row.get("relkind");
        let is_partition: bool = row.get("relispartition");
        let inherits: bool = row.get("inherits");
        let comment: Option<String> = row.get("comment");
        let unsupported_kind = match relkind.as_str() {
            _ if is_partition => Some("partition"),
            "p" => Some("partitioned table"),
            "m" => Some("materialized view"),
            "f" => Some("foreign table"),
            "r" if inherits => Some("inheritance child table"),
            _ => None,
        };
        if let Some(kind) = unsupported_kind {
            catalog.unsupported.push(UnsupportedObject {
                kind: kind.into(),
                schema: schema_name,
                name,
            });
            continue;
        }
        let Some(schema) = catalog.schemas.get_mut(&schema_name) else {
            continue;
        };
        let kind = match relkind.as_str() {
            "r" => {
                schema.tables.insert(
                    name.clone(),
                    Table {
                        rls: Rls {
                            enabled: row.get("relrowsecurity"),
                            forced: row.get("relforcerowsecurity"),
                            policies: BTreeMap::new(),
                        },
                        unlogged: row.get::<_, String>("relpersistence") == "u",
                        comment,
                        ..Table::default()
                    },
                );
                RelKind::Table
            }
            "v" => {
                let text: String = row.get("viewdef");
                let definition = norm.run(
                    || format!("view {schema_name}.{name}"),
                    &text,
                    Form::ViewQuery,
                )?;
                schema.views.insert(
                    name.clone(),
                    View {
                        definition,
                        options: row.get("reloptions"),
                        grants: Vec::new(),
                        comment,
                    },
                );
                RelKind::View
            }
            // Sequences are read with their options by `read_sequences`; only the OID is needed
            // here, for grants.
            "S" => RelKind::Sequence,
            _ => continue,
        };
        rels.insert(
            oid,
            RelRef {
                schema: schema_name,
                name,
                kind,
            },
        );
    }
    Ok(rels)
}

fn grant_of(row: &Row, offset: usize) -> Grant {
    Grant {
        grantee: row.get(offset),
        privilege: row.get(offset + 1),
        grantable: row.get(offset + 2),
    }
}

fn read_grants(catalog: &mut Catalog, rels: &Rels, rows: &[Row]) {
    // Sequence grants come with the sequences themselves (see SQL_SEQUENCES).
    for row in rows {
        let oid: u32 = row.get(0);
        let Some(r) = rels.get(&oid) else { continue };
        let Some(schema) = catalog.schemas.get_mut(&r.schema) else {
            continue;
        };
        let grant = grant_of(row, 1);
        match r.kind {
            RelKind::Table => {
                if let Some(t) = schema.tables.get_mut(&r.name) {
                    t.grants.push(grant);
                }
            }
            RelKind::View => {
                if let Some(v) = schema.views.get_mut(&r.name) {
                    v.grants.push(grant);
                }
            }
            RelKind::Sequence => {}
        }
    }
}

fn read_columns(
    catalog: &mut Catalog,
    rels: &Rels,
    rows: &[Row],
    norm: &mut Normalizer,
) -> Result<(), IntrospectError> {
    for row in rows {
        let oid: u32 = row.get("attrelid");
        let name: String = row.get("attname");
        let Some(r) = rels.get(&oid).filter(|r| r.kind == RelKind::Table) else {
            continue;
        };
        let path = || format!("{}.{}.{}", r.schema, r.name, name);
        let identity_kind: String = row.get("attidentity");
        let generated_kind: String = row.get("attgenerated");
        let expr = norm.opt_expr(path, row.get("default_expr"))?;
        let (default, generated) = if generated_kind.is_empty() {
            (expr, None)
        } else {
            (None, expr)
        };
        let identity = match identity_kind.as_str() {
            "a" | "d" => Some(Identity {
                generation: if identity_kind == "a" {
                    IdentityGeneration::Always
                } else {
                    IdentityGeneration::ByDefault
                },
                sequence: SequenceOptions {
                    data_type: row.get("seq_type"),
                    start: row.get("seqstart"),
                    increment: row.get("seqincrement"),
                    min: row.get("seqmin"),
                    max: row.get("seqmax"),
                    cache: row.get("seqcache"),
                    cycle: row.get("seqcycle"),
                },
            }),
            _ => None,
        };
        let column = Column {
            data_type: row.get("data_type"),
            not_null: row.get("attnotnull"),
            default,
            identity,
            generated,
            collation: row.get("collation"),
            grants: Vec::new(),
            comment: row.get("comment"),
            position: ColumnPosition(u32::try_from(row.get::<_, i16>("attnum")).ok()),
        };
        if let Some(t) = table_mut(catalog, rels, oid) {
            t.columns.insert(name, column);
        }
    }
    Ok(())
}

fn read_column_grants(catalog: &mut Catalog, rels: &Rels, rows: &[Row]) {
    for row in rows {
        let oid: u32 = row.get(0);
        let column: String = row.get(1);
        if let Some(c) = table_mut(catalog, rels, oid).and_then(|t| t.columns.get_mut(&column)) {
            c.grants.push(grant_of(row, 2));
        }
    }
}

fn fk_action(code: &str) -> ForeignKeyAction {
    match code {
        "r" => ForeignKeyAction::Restrict,
        "c" => ForeignKeyAction::Cascade,
        "n" => ForeignKeyAction::SetNull,
        "d" => ForeignKeyAction::SetDefault,
        _ => ForeignKeyAction::NoAction,
    }
}

fn read_constraints(
    catalog: &mut Catalog,
    rels: &Rels,
    rows: &[Row],
    norm: &mut Normalizer,
) -> Result<(), IntrospectError> {
    for row in rows {
        let oid: u32 = row.get("conrelid");
        let name: String = row.get("conname");
        let Some(r) = rels.get(&oid).filter(|r| r.kind == RelKind::Table) else {
            continue;
        };
        let path = || format!("{}.{}.constraints.{}", r.schema, r.name, name);
        let contype: String = row.get("contype");
        let columns: Vec<String> = row.get("columns");
        let definition = match contype.as_str() {
            "p" => ConstraintDef::PrimaryKey { columns },
            "u" => ConstraintDef::Unique {
                columns,
                nulls_not_distinct: row.get("nulls_not_distinct"),
            },
            "f" => ConstraintDef::ForeignKey {
                columns,
                references: ForeignKeyTarget {
                    schema: row.get("ref_schema"),
                    table: row.get("ref_table"),
                    columns: row.get("ref_columns"),
                },
                on_update: fk_action(&row.get::<_, String>("confupdtype")),
                on_delete: fk_action(&row.get::<_, String>("confdeltype")),
                match_type: match row.get::<_, String>("confmatchtype").as_str() {
                    "f" => ForeignKeyMatch::Full,
                    "p" => ForeignKeyMatch::Partial,
                    _ => ForeignKeyMatch::Simple,
                },
            },
            "c" => {
                let text: String = row.get("check_expr");
                ConstraintDef::Check {
                    expression: norm.run(path, &text, Form::Expression)?,
                    no_inherit: row.get("connoinherit"),
                }
            }
            "x" => {
                let text: String = row.get("condef");
                ConstraintDef::Exclusion {
                    definition: norm.run(path, &text, Form::ConstraintClause)?,
                }
            }
            _ => continue,
        };
        let constraint = Constraint {
            definition,
            deferrable: row.get("condeferrable"),
            initially_deferred: row.get("condeferred"),
            validated: row.get("convalidated"),
            comment: row.get("comment"),
        };
        if let Some(t) = table_mut(catalog, rels, oid) {
            t.constraints.insert(name, constraint);
        }
    }
    Ok(())
}

fn names_of(nodes: &[pg_query::protobuf::Node]) -> Option<String> {
    let parts: Vec<String> = nodes
        .iter()
        .filter_map(|n| match &n.node {
            Some(pg_query::NodeEnum::String(s)) => Some(crate::ident::quote_ident(&s.sval)),
            _ => None,
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("."))
}

fn read_indexes(
    catalog: &mut Catalog,
    rels: &Rels,
    rows: &[Row],
    norm: &mut Normalizer,
) -> Result<(), IntrospectError> {
    for row in rows {
        let oid: u32 = row.get("indrelid");
        let name: String = row.get("relname");
        let Some(r) = rels.get(&oid).filter(|r| r.kind == RelKind::Table) else {
            continue;
        };
        if !row.get::<_, bool>("valid") {
            catalog.invalid_indexes.push((r.schema.clone(), name));
            continue;
        }
        let path = || format!("{}.{}.indexes.{}", r.schema, r.name, name);
        let indexdef: String = row.get("indexdef");
        let tail: Option<String> = row.get("index_tail");
        let unique: bool = row.get("indisunique");
        let statement = match &tail {
            Some(tail) => format!(
                "CREATE {}INDEX i ON t USING {tail}",
                if unique { "UNIQUE " } else { "" }
            ),
            None => indexdef.clone(),
        };
        let key = tail.as_ref().map(|t| format!("{unique}{t}"));
        let shape = norm
            .index_shape(&statement, key.as_deref())
            .map_err(|message| IntrospectError::Normalize {
                object: path(),
                source: NormalizeError {
                    text: indexdef.clone(),
                    message,
                },
            })?;
        let key_texts: Vec<Option<String>> = row.get("key_texts");
        let mut keys = shape.keys;
        for (key, text) in keys.iter_mut().zip(key_texts) {
            if key.column.is_none() {
                let text = text.ok_or_else(|| IntrospectError::Normalize {
                    object: path(),
                    source: NormalizeError {
                        text: indexdef.clone(),
                        message: "missing key expression".into(),
                    },
                })?;
                key.expression = Some(norm.run(path, &text, Form::Expression)?);
            }
        }
        let index = Index {
            unique,
            method: shape.method,
            keys,
            include: shape.include,
            predicate: norm.opt_expr(path, row.get("predicate"))?,
            nulls_not_distinct: shape.nulls_not_distinct,
            comment: row.get("comment"),
        };
        if let Some(t) = table_mut(catalog, rels, oid) {
            t.indexes.insert(name, index);
        }
    }
    Ok(())
}

/// Reads a `CREATE INDEX` statement's structure. Expression keys come back with neither
/// column nor expression set; the caller fills the expression from Postgres' own text.
fn parse_index(statement: &str) -> Result<IndexShape, String> {
    use pg_query::protobuf::{SortByDir, SortByNulls};
    use pg_query::NodeEnum;
    let parsed = pg_query::parse(statement, 0).map_err(|e| e.to_string())?;
    let stmt = parsed
        .protobuf
        .stmts
        .first()
        .and_then(|s| s.stmt.as_ref())
        .and_then(|n| n.node.as_ref());
    let Some(NodeEnum::IndexStmt(stmt)) = stmt else {
        return Err("not a CREATE INDEX statement".into());
    };
    let mut keys = Vec::new();
    for param in &stmt.index_params {
        let Some(NodeEnum::IndexElem(elem)) = &param.node else {
            return Err("unexpected index element".into());
        };
        let descending = elem.ordering == SortByDir::SortbyDesc as i32;
        let nulls_first = match elem.nulls_ordering {
            n if n == SortByNulls::SortbyNullsFirst as i32 => true,
            n if n == SortByNulls::SortbyNullsLast as i32 => false,
            _ => descending,
        };
        keys.push(IndexKey {
            column: (!elem.name.is_empty()).then(|| elem.name.clone()),
            expression: None,
            opclass: names_of(&elem.opclass),
            collation: names_of(&elem.collation),
            descending,
            nulls_first,
        });
    }
    let include = stmt
        .index_including_params
        .iter()
        .filter_map(|p| match &p.node {
            Some(NodeEnum::IndexElem(e)) => Some(e.name.clone()),
            _ => None,
        })
        .collect();
    Ok(IndexShape {
        method: stmt.access_method.clone(),
        keys,
        include,
        nulls_not_distinct: stmt.nulls_not_distinct,
    })
}

fn read_policies(
    catalog: &mut Catalog,
    rels: &Rels,
    rows: &[Row],
    norm: &mut Normalizer,
) -> Result<(), IntrospectError> {
    for row in rows {
        let oid: u32 = row.get("polrelid");
        let name: String = row.get("polname");
        let Some(r) = rels.get(&oid).filter(|r| r.kind == RelKind::Table) else {
            continue;
        };
        let path = || format!("{}.{}.policies.{}", r.schema, r.name, name);
        let command = match row.get::<_, String>("polcmd").as_str() {
            "r" => PolicyCommand::Select,
            "a" => PolicyCommand::Insert,
            "w" => PolicyCommand::Update,
            "d" => PolicyCommand::Delete,
            _ => PolicyCommand::All,
        };
        let policy = Policy {
            command,
            permissive: row.get("polpermissive"),
            roles: row.get("roles"),
            using: norm.opt_expr(path, row.get("qual"))?,
            with_check: norm.opt_expr(path, row.get("with_check"))?,
            comment: row.get("comment"),
        };
        if let Some(t) = table_mut(catalog, rels, oid) {
            t.rls.policies.insert(name, policy);
        }
    }
    Ok(())
}

fn read_sequences(catalog: &mut Catalog, rows: &[Row]) {
    for row in rows {
        let Some(schema) = catalog.schemas.get_mut(&row.get::<_, String>("nspname")) else {
            continue;
        };
        let owned_by = match (row.get("owner_table"), row.get("owner_column")) {
            (Some(table), Some(column)) => Some(SequenceOwner { table, column }),
            _ => None,
        };
        schema.sequences.insert(
            row.get("relname"),
            Sequence {
                options: SequenceOptions {
                    data_type: row.get("seq_type"),
                    start: row.get("seqstart"),
                    increment: row.get("seqincrement"),
                    min: row.get("seqmin"),
                    max: row.get("seqmax"),
                    cache: row.get("seqcache"),
                    cycle: row.get("seqcycle"),
                },
                owned_by,
                grants: row
                    .get::<_, Vec<String>>("grants")
                    .iter()
                    .filter_map(|g| parse_packed_grant(g))
                    .collect(),
                comment: row.get("comment"),
            },
        );
    }
}

/// Sequence grants come packed as `grantee\x1fprivilege\x1fgrantable` so the sequence query
/// stays one row per sequence.
fn parse_packed_grant(packed: &str) -> Option<Grant> {
    let mut parts = packed.split('\u{1f}');
    Some(Grant {
        grantee: parts.next()?.to_owned(),
        privilege: parts.next()?.to_owned(),
        grantable: parts.next()? == "t",
    })
}

fn read_enums(catalog: &mut Catalog, rows: &[Row]) {
    for row in rows {
        if let Some(schema) = catalog.schemas.get_mut(&row.get::<_, String>(0)) {
            schema.enums.insert(
                row.get(1),
                EnumType {
                    labels: row.get(2),
                    comment: row.get(3),
                },
            );
        }
    }
}

/// `NOT EXISTS` clause excluding objects that belong to an extension.
macro_rules! not_extension_member {
    ($catalog:literal, $oid:literal) => {
        concat!(
            "NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = '",
            $catalog,
            "'::pg_catalog.regclass AND d.objid = ",
            $oid,
            " AND d.deptype = 'e')"
        )
    };
}

/// Role name for an ACL grantee, `public` for OID 0.
macro_rules! grantee {
    ($oid:literal) => {
        concat!(
            "CASE WHEN ",
            $oid,
            " = 0 THEN 'public' ELSE pg_catalog.pg_get_userbyid(",
            $oid,
            ")::text END"
        )
    };
}

const SQL_SCHEMAS: &str = concat!(
    "SELECT n.nspname::text, pg_catalog.obj_description(n.oid, 'pg_namespace') \
     FROM pg_catalog.pg_namespace n \
     WHERE n.nspname NOT IN ('information_schema', 'lockplane') AND n.nspname !~ '^pg_' AND ",
    not_extension_member!("pg_catalog.pg_namespace", "n.oid"),
    " ORDER BY 1"
);

const SQL_EXTENSIONS: &str = "SELECT e.extname::text, n.nspname::text \
     FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace";

const SQL_RELATIONS: &str = concat!(
    "SELECT c.oid, n.nspname::text AS nspname, c.relname::text AS relname, c.relkind::text AS relkind, \
       c.relpersistence::text AS relpersistence, c.relrowsecurity, c.relforcerowsecurity, \
       c.relispartition, \
       EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhrelid = c.oid) AS inherits, \
       ARRAY(SELECT o FROM unnest(coalesce(c.reloptions, '{}')) o ORDER BY o) AS reloptions, \
       des.description AS comment, \
       CASE WHEN c.relkind = 'v' THEN pg_catalog.pg_get_viewdef(c.oid) END AS viewdef \
     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     LEFT JOIN pg_catalog.pg_description des ON des.objoid = c.oid \
       AND des.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND des.objsubid = 0 \
     WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND ",
    not_extension_member!("pg_catalog.pg_class", "c.oid")
);

const SQL_GRANTS: &str = concat!(
    "SELECT c.oid, ",
    grantee!("a.grantee"),
    ", lower(a.privilege_type), a.is_grantable \
     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) a \
     WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'v') AND a.grantee <> c.relowner"
);

const SQL_COLUMNS: &str = "SELECT a.attrelid, a.attname::text AS attname, a.attnum, \
       pg_catalog.format_type(a.atttypid, a.atttypmod) AS data_type, a.attnotnull, \
       pg_catalog.pg_get_expr(ad.adbin, ad.adrelid) AS default_expr, \
       a.attidentity::text AS attidentity, a.attgenerated::text AS attgenerated, \
       CASE WHEN a.attcollation <> t.typcollation THEN \
         (SELECT CASE WHEN cn.nspname = 'pg_catalog' THEN quote_ident(co.collname) \
                 ELSE quote_ident(cn.nspname) || '.' || quote_ident(co.collname) END \
          FROM pg_catalog.pg_collation co JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace \
          WHERE co.oid = a.attcollation) END AS collation, \
       des.description AS comment, \
       seq.seq_type, seq.seqstart, seq.seqincrement, seq.seqmin, seq.seqmax, seq.seqcache, seq.seqcycle \
     FROM pg_catalog.pg_attribute a \
     JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
     LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum \
     LEFT JOIN pg_catalog.pg_description des ON des.objoid = a.attrelid \
       AND des.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND des.objsubid = a.attnum \
     LEFT JOIN LATERAL ( \
       SELECT pg_catalog.format_type(s.seqtypid, NULL) AS seq_type, s.seqstart, s.seqincrement, \
              s.seqmin, s.seqmax, s.seqcache, s.seqcycle \
       FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_sequence s ON s.seqrelid = d.objid \
       WHERE a.attidentity <> '' \
         AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
         AND d.refobjid = a.attrelid AND d.refobjsubid = a.attnum \
         AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.deptype = 'i' \
       LIMIT 1) seq ON true \
     WHERE n.nspname = ANY($1) AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped";

const SQL_COLUMN_GRANTS: &str = concat!(
    "SELECT a.attrelid, a.attname::text, ",
    grantee!("x.grantee"),
    ", lower(x.privilege_type), x.is_grantable \
     FROM pg_catalog.pg_attribute a \
     JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     CROSS JOIN LATERAL pg_catalog.aclexplode(a.attacl) x \
     WHERE n.nspname = ANY($1) AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped \
       AND a.attacl IS NOT NULL AND x.grantee <> c.relowner"
);

/// `{nulls_not_distinct}` is replaced by a version-dependent expression.
const SQL_CONSTRAINTS: &str = "SELECT co.conrelid, co.conname::text AS conname, \
       co.contype::text AS contype, co.condeferrable, co.condeferred, co.convalidated, co.connoinherit, \
       ARRAY(SELECT a.attname::text FROM unnest(co.conkey) WITH ORDINALITY k(num, ord) \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = co.conrelid AND a.attnum = k.num \
             ORDER BY k.ord) AS columns, \
       fn.nspname::text AS ref_schema, fc.relname::text AS ref_table, \
       ARRAY(SELECT a.attname::text FROM unnest(co.confkey) WITH ORDINALITY k(num, ord) \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = co.confrelid AND a.attnum = k.num \
             ORDER BY k.ord) AS ref_columns, \
       co.confupdtype::text AS confupdtype, co.confdeltype::text AS confdeltype, \
       co.confmatchtype::text AS confmatchtype, \
       pg_catalog.pg_get_expr(co.conbin, co.conrelid) AS check_expr, \
       CASE WHEN co.contype = 'x' THEN pg_catalog.pg_get_constraintdef(co.oid) END AS condef, \
       des.description AS comment, \
       CASE WHEN co.contype = 'u' THEN coalesce((SELECT {nulls_not_distinct} FROM pg_catalog.pg_index i \
                 WHERE i.indexrelid = co.conindid), false) ELSE false END AS nulls_not_distinct \
     FROM pg_catalog.pg_constraint co \
     JOIN pg_catalog.pg_class c ON c.oid = co.conrelid \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     LEFT JOIN pg_catalog.pg_class fc ON fc.oid = co.confrelid \
     LEFT JOIN pg_catalog.pg_namespace fn ON fn.oid = fc.relnamespace \
     LEFT JOIN pg_catalog.pg_description des ON des.objoid = co.oid \
       AND des.classoid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND des.objsubid = 0 \
     WHERE n.nspname = ANY($1) AND c.relkind = 'r' AND co.contype IN ('p', 'u', 'f', 'c', 'x') \
       AND co.conparentid = 0";

/// `indexdef` is `pg_get_indexdef` with its `CREATE … INDEX name ON table USING ` prefix cut
/// off when it is exactly the one Postgres prints (so that indexes differing only by name share
/// one parse); otherwise the whole definition. Expression keys get their own text.
/// `{half}` is 0 or 1: the indexes with even or odd oids (the two halves are read on the two
/// connections).
const SQL_INDEXES: &str = "SELECT i.indrelid, ic.relname::text AS relname, i.indisunique, \
       CASE WHEN starts_with(x.def, x.prefix) THEN substr(x.def, length(x.prefix) + 1) END AS index_tail, \
       x.def AS indexdef, \
       ARRAY(SELECT CASE WHEN i.indkey[k - 1] = 0 THEN pg_catalog.pg_get_indexdef(i.indexrelid, k, true) END \
             FROM generate_series(1, i.indnkeyatts) k ORDER BY k) AS key_texts, \
       pg_catalog.pg_get_expr(i.indpred, i.indrelid) AS predicate, \
       des.description AS comment, i.indisvalid AS valid \
     FROM pg_catalog.pg_index i \
     JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid \
     JOIN pg_catalog.pg_class c ON c.oid = i.indrelid \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     CROSS JOIN LATERAL (SELECT pg_catalog.pg_get_indexdef(i.indexrelid) AS def, \
       'CREATE ' || CASE WHEN i.indisunique THEN 'UNIQUE ' ELSE '' END || 'INDEX ' || \
       quote_ident(ic.relname) || ' ON ' || quote_ident(n.nspname) || '.' || quote_ident(c.relname) || \
       ' USING ' AS prefix) x \
     LEFT JOIN pg_catalog.pg_description des ON des.objoid = i.indexrelid \
       AND des.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND des.objsubid = 0 \
     WHERE n.nspname = ANY($1) AND c.relkind = 'r' \
       AND i.indexrelid::pg_catalog.int8 % 2 = {half} \
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint co \
                       WHERE co.conindid = i.indexrelid AND co.conrelid = i.indrelid \
                         AND co.contype IN ('p', 'u', 'x'))";

const SQL_POLICIES: &str = concat!(
    "SELECT p.polrelid, p.polname::text AS polname, p.polcmd::text AS polcmd, p.polpermissive, \
       ARRAY(SELECT ",
    grantee!("r"),
    " FROM unnest(p.polroles) r ORDER BY 1) AS roles, \
       pg_catalog.pg_get_expr(p.polqual, p.polrelid) AS qual, \
       pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) AS with_check, \
       des.description AS comment \
     FROM pg_catalog.pg_policy p \
     JOIN pg_catalog.pg_class c ON c.oid = p.polrelid \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     LEFT JOIN pg_catalog.pg_description des ON des.objoid = p.oid \
       AND des.classoid = 'pg_catalog.pg_policy'::pg_catalog.regclass AND des.objsubid = 0 \
     WHERE n.nspname = ANY($1) AND c.relkind = 'r'"
);

const SQL_SEQUENCES: &str = concat!(
    "SELECT n.nspname::text AS nspname, c.relname::text AS relname, \
       pg_catalog.format_type(s.seqtypid, NULL) AS seq_type, s.seqstart, s.seqincrement, \
       s.seqmin, s.seqmax, s.seqcache, s.seqcycle, \
       own.owner_table, own.owner_column, \
       ARRAY(SELECT ",
    grantee!("a.grantee"),
    " || chr(31) || lower(a.privilege_type) || chr(31) || \
               CASE WHEN a.is_grantable THEN 't' ELSE 'f' END \
             FROM pg_catalog.aclexplode(c.relacl) a WHERE a.grantee <> c.relowner) AS grants, \
       pg_catalog.obj_description(c.oid, 'pg_class') AS comment \
     FROM pg_catalog.pg_sequence s \
     JOIN pg_catalog.pg_class c ON c.oid = s.seqrelid \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     LEFT JOIN LATERAL ( \
       SELECT tc.relname::text AS owner_table, ta.attname::text AS owner_column, d.deptype \
       FROM pg_catalog.pg_depend d \
       JOIN pg_catalog.pg_class tc ON tc.oid = d.refobjid \
       JOIN pg_catalog.pg_attribute ta ON ta.attrelid = d.refobjid AND ta.attnum = d.refobjsubid \
       WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid \
         AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.deptype IN ('a', 'i') \
       LIMIT 1) own ON true \
     WHERE n.nspname = ANY($1) AND coalesce(own.deptype, 'a') <> 'i' AND ",
    not_extension_member!("pg_catalog.pg_class", "c.oid")
);

const SQL_ENUMS: &str = concat!(
    "SELECT n.nspname::text, t.typname::text, \
       ARRAY(SELECT e.enumlabel::text FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid \
             ORDER BY e.enumsortorder), \
       pg_catalog.obj_description(t.oid, 'pg_type') \
     FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
     WHERE n.nspname = ANY($1) AND t.typtype = 'e' AND ",
    not_extension_member!("pg_catalog.pg_type", "t.oid")
);

/// Everything in the selected schemas that Lockplane does not model, by kind. Tables that are
/// partitions, partitioned or inheritance children come from the relations query instead.
const SQL_UNSUPPORTED: &str = concat!(
    "SELECT CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' \
              WHEN 'w' THEN 'window function' ELSE 'function' END, \
       n.nspname::text, p.proname || '(' || pg_catalog.oidvectortypes(p.proargtypes) || ')' \
     FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
     WHERE n.nspname = ANY($1) AND ",
    not_extension_member!("pg_catalog.pg_proc", "p.oid"),
    " UNION ALL \
     SELECT 'trigger', n.nspname::text, c.relname || '.' || t.tgname \
     FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = ANY($1) AND NOT t.tgisinternal AND ",
    not_extension_member!("pg_catalog.pg_class", "c.oid"),
    " UNION ALL \
     SELECT CASE t.typtype WHEN 'd' THEN 'domain' WHEN 'r' THEN 'range type' \
              WHEN 'c' THEN 'composite type' ELSE 'base type' END, \
       n.nspname::text, t.typname::text \
     FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
     WHERE n.nspname = ANY($1) AND ",
    not_extension_member!("pg_catalog.pg_type", "t.oid"),
    " AND (t.typtype IN ('d', 'r') \
       OR (t.typtype = 'c' AND (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid) = 'c') \
       OR (t.typtype = 'b' AND t.typelem = 0 AND t.typcategory <> 'A' AND NOT EXISTS \
           (SELECT 1 FROM pg_catalog.pg_type r WHERE r.typtype = 'm' AND r.typarray = t.oid))) \
     UNION ALL \
     SELECT 'rule', n.nspname::text, c.relname || '.' || r.rulename \
     FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_class c ON c.oid = r.ev_class \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = ANY($1) AND r.rulename <> '_RETURN' \
     UNION ALL \
     SELECT 'statistics', n.nspname::text, s.stxname::text \
     FROM pg_catalog.pg_statistic_ext s JOIN pg_catalog.pg_namespace n ON n.oid = s.stxnamespace \
     WHERE n.nspname = ANY($1) \
     UNION ALL \
     SELECT 'collation', n.nspname::text, co.collname::text \
     FROM pg_catalog.pg_collation co JOIN pg_catalog.pg_namespace n ON n.oid = co.collnamespace \
     WHERE n.nspname = ANY($1) AND ",
    not_extension_member!("pg_catalog.pg_collation", "co.oid"),
    " UNION ALL \
     SELECT 'operator', n.nspname::text, \
       o.oprname || '(' || pg_catalog.format_type(o.oprleft, NULL) || ', ' || \
       pg_catalog.format_type(o.oprright, NULL) || ')' \
     FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace \
     WHERE n.nspname = ANY($1) AND ",
    not_extension_member!("pg_catalog.pg_operator", "o.oid"),
    " UNION ALL \
     SELECT 'text search configuration', n.nspname::text, c.cfgname::text \
     FROM pg_catalog.pg_ts_config c JOIN pg_catalog.pg_namespace n ON n.oid = c.cfgnamespace \
     WHERE n.nspname = ANY($1) AND ",
    not_extension_member!("pg_catalog.pg_ts_config", "c.oid"),
    " UNION ALL \
     SELECT 'event trigger', '', e.evtname::text FROM pg_catalog.pg_event_trigger e WHERE ",
    not_extension_member!("pg_catalog.pg_event_trigger", "e.oid"),
    " UNION ALL \
     SELECT 'publication', '', p.pubname::text FROM pg_catalog.pg_publication p"
);
