//! The SQL guard: decides whether a statement an agent sends to `apply_sql` or `explain_sql` may
//! run, and whether it needs two-phase confirmation; and whether the expressions of a plan an
//! agent proposes or applies may be created.
//!
//! [`check`] parses the text with pg_query (Postgres' own parser), requires exactly one
//! statement, and walks the *whole* parse tree in its JSON form. Every node, wherever it sits
//! (defaults, CHECK constraints, index expressions and predicates, policy expressions, CTEs,
//! sub-selects, functions in FROM, VALUES lists, RETURNING, ON CONFLICT …), must be of a type on
//! an allow-list, and every function call must name a function on an allow-list. Anything not
//! listed, such as a node type a future grammar adds or a function the list does not know, is
//! refused by default. Struct-typed fields of the tree (a `RangeVar` in `relation`, a `WithClause`
//! in `with_clause` …) get the same treatment, and a field of unknown shape is refused too.
//!
//! The guard is a pure function of the text and the [`AccessMode`]; it does not look at the
//! database. Decisions that are a matter of policy:
//!
//! - **COPY** is refused entirely: `PROGRAM` runs shell commands, file names read or write the
//!   server's filesystem, and `STDIN`/`STDOUT` need the copy sub-protocol, which `apply_sql` does
//!   not speak (SELECT and INSERT do the same job).
//! - **SET/RESET** are refused entirely: the role and context are set by Lockplane
//!   (`set_context`), every statement already runs with Lockplane's `statement_timeout`, and a
//!   session setting would leak into later calls on a shared connection.
//! - **VACUUM, ANALYZE, CLUSTER, REINDEX, CHECKPOINT** are refused in v1 (operations tooling).
//! - **CREATE FUNCTION/PROCEDURE** (any language), triggers, rules, casts, operators, domains and
//!   materialized views are refused in v1: they are not objects Lockplane manages.
//! - **EXPLAIN** is refused: `explain_sql` adds it itself, and `EXPLAIN ANALYZE` would execute.
//! - **TRUNCATE** is a data-mode statement (it is DELETE without WHERE, faster), and destructive.
//! - **Widening access needs confirmation**: a permissive CREATE POLICY (permissive policies
//!   are OR-ed, so a new one only admits more), every GRANT, DISABLE / NO FORCE ROW LEVEL
//!   SECURITY. So does any `MERGE … THEN DELETE`: which rows a MERGE join matches is not
//!   bounded the way a WHERE is.
//! - Statements over [`MAX_STATEMENT_BYTES`] are refused before parsing.
//! - [`check_expressions`] / [`check_plan`] apply the function and catalog rules to the
//!   expressions a plan carries (see the runtime: every plan an agent proposes or applies).
//! - **ALTER POLICY** always needs confirmation: it can widen or narrow who sees which rows, and
//!   the guard cannot tell which.
//! - **SELECT … FOR UPDATE/SHARE** takes row locks, a write: refused in read-only mode,
//!   accepted (and not read-only) in data mode.
//! - `nextval`/`setval`/`currval`/`lastval` are data-mode functions.
//! - Temporary tables, views and sequences are refused (session state on a shared connection).
//!
//! What the guard cannot see (the database's own privileges are the backstop; Lockplane's roles
//! are never superusers): an unqualified allowed name, or an operator, resolves through the
//! search path, so a same-named function created *outside* Lockplane in a schema on the path can
//! be called under an allowed name; `row.func` attribute notation calls a function taking the
//! row type and looks exactly like a column reference; views and functions already in the
//! database run whatever their definitions say. "UPDATE/DELETE without WHERE" recognises a
//! missing WHERE and trivially true ones (`WHERE true`, `WHERE 1 = 1`), not every tautology.

mod functions;
mod nodes;

pub use functions::{
    required_mode as function_required_mode, DATA_FUNCTIONS, FUNCTIONS, LOCKPLANE_FUNCTIONS,
    TABLESAMPLE_METHODS, TRUSTED_EXTENSIONS,
};

use pg_query::protobuf::{
    AlterTableType, CmdType, DropBehavior, GrantTargetType, MergeMatchKind, ObjectType as Obj,
};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// The longest statement text the guard checks, in bytes (256 KiB).
pub const MAX_STATEMENT_BYTES: usize = 256 * 1024;

/// What a deployment lets agents do through the guard. Each mode includes the previous one.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum AccessMode {
    /// Queries only: SELECT (without row locks) and SHOW.
    ReadOnly,
    /// Also INSERT, UPDATE, DELETE, MERGE, TRUNCATE, row locks and sequence functions.
    Data,
    /// Also the DDL Lockplane manages: tables, indexes, views, sequences, enums, policies,
    /// grants, comments, renames, schemas, trusted extensions, and DROP of those.
    Schema,
}

impl AccessMode {
    /// Every mode, weakest first.
    pub const ALL: [AccessMode; 3] = [AccessMode::ReadOnly, AccessMode::Data, AccessMode::Schema];

    /// The mode's name as configured and reported to agents: `read-only`, `data`, `schema`.
    pub fn name(self) -> &'static str {
        match self {
            AccessMode::ReadOnly => "read-only",
            AccessMode::Data => "data",
            AccessMode::Schema => "schema",
        }
    }

    /// Whether a server in this mode may run something that needs `needed`.
    pub fn allows(self, needed: AccessMode) -> bool {
        self >= needed
    }
}

impl fmt::Display for AccessMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A string that names no [`AccessMode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown access mode `{0}`: expected read-only, data or schema")]
pub struct UnknownAccessMode(pub String);

impl FromStr for AccessMode {
    type Err = UnknownAccessMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "read-only" | "readonly" | "read_only" => Ok(AccessMode::ReadOnly),
            "data" => Ok(AccessMode::Data),
            "schema" => Ok(AccessMode::Schema),
            _ => Err(UnknownAccessMode(s.to_owned())),
        }
    }
}

/// The kind of an accepted statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StatementKind {
    /// `SELECT`, `VALUES`, `TABLE`, `WITH … SELECT`.
    Select,
    /// `SHOW`.
    Show,
    /// `INSERT`.
    Insert,
    /// `UPDATE`.
    Update,
    /// `DELETE`.
    Delete,
    /// `MERGE`.
    Merge,
    /// `TRUNCATE`.
    Truncate,
    /// `CREATE TABLE`.
    CreateTable,
    /// `ALTER TABLE` (and `ALTER VIEW/INDEX/SEQUENCE` subcommands of the same shape).
    AlterTable,
    /// `CREATE INDEX`.
    CreateIndex,
    /// `CREATE POLICY`.
    CreatePolicy,
    /// `ALTER POLICY`.
    AlterPolicy,
    /// `DROP` of a table, view, index, sequence, type, schema, policy or extension.
    Drop,
    /// `CREATE [OR REPLACE] VIEW`.
    CreateView,
    /// `CREATE SEQUENCE`.
    CreateSequence,
    /// `ALTER SEQUENCE`.
    AlterSequence,
    /// `CREATE TYPE … AS ENUM`.
    CreateEnum,
    /// `ALTER TYPE … ADD/RENAME VALUE`.
    AlterEnum,
    /// `COMMENT ON`.
    Comment,
    /// `GRANT` of privileges on objects.
    Grant,
    /// `REVOKE` of privileges on objects.
    Revoke,
    /// `ALTER … RENAME`.
    Rename,
    /// `CREATE SCHEMA`.
    CreateSchema,
    /// `CREATE EXTENSION` (trusted extensions only).
    CreateExtension,
}

impl StatementKind {
    /// The SQL name of the kind, e.g. `CREATE TABLE`.
    pub fn name(self) -> &'static str {
        use StatementKind::*;
        match self {
            Select => "SELECT",
            Show => "SHOW",
            Insert => "INSERT",
            Update => "UPDATE",
            Delete => "DELETE",
            Merge => "MERGE",
            Truncate => "TRUNCATE",
            CreateTable => "CREATE TABLE",
            AlterTable => "ALTER TABLE",
            CreateIndex => "CREATE INDEX",
            CreatePolicy => "CREATE POLICY",
            AlterPolicy => "ALTER POLICY",
            Drop => "DROP",
            CreateView => "CREATE VIEW",
            CreateSequence => "CREATE SEQUENCE",
            AlterSequence => "ALTER SEQUENCE",
            CreateEnum => "CREATE TYPE AS ENUM",
            AlterEnum => "ALTER TYPE (enum)",
            Comment => "COMMENT",
            Grant => "GRANT",
            Revoke => "REVOKE",
            Rename => "RENAME",
            CreateSchema => "CREATE SCHEMA",
            CreateExtension => "CREATE EXTENSION",
        }
    }

    /// The lowest access mode in which statements of this kind are accepted.
    pub fn required_mode(self) -> AccessMode {
        use StatementKind::*;
        match self {
            Select | Show => AccessMode::ReadOnly,
            Insert | Update | Delete | Merge | Truncate => AccessMode::Data,
            _ => AccessMode::Schema,
        }
    }

    /// The kind of a top-level statement node, if it is one the guard accepts.
    fn of(ty: &str, body: &Value) -> Option<StatementKind> {
        use StatementKind::*;
        Some(match ty {
            "SelectStmt" => Select,
            "VariableShowStmt" => Show,
            "InsertStmt" => Insert,
            "UpdateStmt" => Update,
            "DeleteStmt" => Delete,
            "MergeStmt" => Merge,
            "TruncateStmt" => Truncate,
            "CreateStmt" => CreateTable,
            "AlterTableStmt" => AlterTable,
            "IndexStmt" => CreateIndex,
            "CreatePolicyStmt" => CreatePolicy,
            "AlterPolicyStmt" => AlterPolicy,
            "DropStmt" => Drop,
            "ViewStmt" => CreateView,
            "CreateSeqStmt" => CreateSequence,
            "AlterSeqStmt" => AlterSequence,
            "CreateEnumStmt" => CreateEnum,
            "AlterEnumStmt" => AlterEnum,
            "CommentStmt" => Comment,
            "GrantStmt" if flag(body, "is_grant") => Grant,
            "GrantStmt" => Revoke,
            "RenameStmt" => Rename,
            "CreateSchemaStmt" => CreateSchema,
            "CreateExtensionStmt" => CreateExtension,
            _ => return None,
        })
    }
}

impl fmt::Display for StatementKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An accepted statement, and what the caller must know before running it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Checked {
    /// What the statement is.
    pub kind: StatementKind,
    /// True when the statement writes nothing and takes no row locks, so it may run in a
    /// read-only transaction (and `EXPLAIN ANALYZE` inside a rolled-back one).
    pub read_only: bool,
    /// Why the statement needs two-phase confirmation (it drops, truncates, rewrites or loosens
    /// something that cannot simply be undone), or `None` when it may run directly.
    pub destructive: Option<String>,
    /// The functions the statement calls, resolved (`pg_catalog.` removed), sorted, unique.
    pub functions: Vec<String>,
    /// The relations the statement creates or renames to, as `(schema, name)` with the schema
    /// empty when the statement leaves it to the search path. The caller checks them against
    /// the database: a new relation whose name another schema on the search path already
    /// holds would shadow it (or be shadowed) for unqualified references.
    pub creates: Vec<(String, String)>,
}

/// Why a statement was refused. The reason says what was refused, why, and what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("statement refused: {reason}{}", at(.position))]
pub struct Refusal {
    /// What was refused and why, in words an agent can act on.
    pub reason: String,
    /// Byte offset into the statement text of the offending part, where known.
    pub position: Option<usize>,
}

fn at(position: &Option<usize>) -> String {
    match position {
        Some(p) => format!(" (at byte {p})"),
        None => String::new(),
    }
}

fn refuse(reason: impl Into<String>, position: Option<usize>) -> Refusal {
    Refusal {
        reason: reason.into(),
        position,
    }
}

/// Checks one SQL statement against the guard for a server running in `mode`.
///
/// Accepts exactly one statement whose every node type and every function is on the
/// allow-lists for `mode`; refuses everything else with a [`Refusal`] that says why.
pub fn check(sql: &str, mode: AccessMode) -> Result<Checked, Refusal> {
    let tree = parse_tree(sql)?;
    let checked = check_tree(&tree, mode);
    drop(tree);
    release_if_large(sql.len());
    checked
}

/// The parse tree of a large statement takes hundreds of times its size; glibc keeps freed
/// memory in its arenas, so a long-running server would keep the peak of its largest
/// statement resident forever. Hand it back to the system after large checks.
fn release_if_large(len: usize) {
    if len > 64 * 1024 {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only returns free memory to the system; it touches no live
        // allocation and is safe to call at any time from any thread.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// Checks a parse tree in the JSON form [`parse_tree`] returns. [`check`] is `parse_tree`
/// followed by this; it is public so that the fail-closed paths (a node type or a field the
/// guard does not know, as a future grammar would produce) can be exercised directly.
pub fn check_tree(tree: &Value, mode: AccessMode) -> Result<Checked, Refusal> {
    let stmts = tree
        .get("stmts")
        .and_then(Value::as_array)
        .ok_or_else(|| unknown_shape("ParseResult", "stmts", Some(0)))?;
    let raw =
        match stmts.as_slice() {
            [] => return Err(refuse(
                "the text contains no SQL statement (only whitespace, comments or semicolons); \
                 send exactly one statement",
                None,
            )),
            [raw] => raw,
            [_, second, ..] => {
                return Err(refuse(
                    format!(
                        "the text contains {} statements; send exactly one statement per call \
                     (multi-statement strings are refused so that every statement is checked \
                     and recorded on its own)",
                        stmts.len()
                    ),
                    second.get("stmt_location").and_then(offset),
                ))
            }
        };
    let start = raw.get("stmt_location").and_then(offset).or(Some(0));
    let (ty, body) = match raw.get("stmt").and_then(Value::as_object).map(as_node) {
        Some(Some(Some(node))) => node,
        _ => return Err(unknown_shape("RawStmt", "stmt", start)),
    };
    let mut walker = Walker {
        mode,
        functions: BTreeSet::new(),
        destructive: Vec::new(),
        writes: false,
    };
    walker.node(ty, body, start, 0)?;
    let Some(kind) = StatementKind::of(ty, body) else {
        return Err(refuse(
            format!("`{ty}` is not a statement the guard accepts at top level"),
            start,
        ));
    };
    Ok(Checked {
        kind,
        read_only: !walker.writes,
        destructive: if walker.destructive.is_empty() {
            None
        } else {
            Some(walker.destructive.join("; "))
        },
        functions: walker.functions.into_iter().collect(),
        creates: created_relations(ty, body, ""),
    })
}

/// Checks the expressions inside one statement of a plan (a view's query, a policy's
/// USING/WITH CHECK, a default, a CHECK constraint, a generated column, an index expression or
/// predicate, a `USING` of a type change) against the same rules [`check`] applies to them in
/// agent SQL: every function on the allow-list for `mode` (Lockplane's helpers included),
/// no protected catalog read or named, built-in `TABLESAMPLE` methods only. Returns the
/// functions called.
///
/// The statement kinds themselves are not checked here: a plan's statements are the
/// planner's DDL, which [`crate::review`] checks. This is the half that matters for what the
/// objects *do* once created: a view calling `pg_read_file`, or a default calling
/// `pg_terminate_backend`, runs with its owner's rights whenever someone reads the view or
/// inserts a row.
pub fn check_expressions(sql: &str, mode: AccessMode) -> Result<Vec<String>, Refusal> {
    let tree = parse_tree(sql)?;
    let mut walker = Walker {
        mode,
        functions: BTreeSet::new(),
        destructive: Vec::new(),
        writes: false,
    };
    let walked = walker.expressions(&tree, None);
    drop(tree);
    release_if_large(sql.len());
    walked?;
    Ok(walker.functions.into_iter().collect())
}

/// A plan step whose expressions the guard refuses (see [`check_plan`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "step {step_id} of the plan ({summary}) is refused by the SQL guard: {reason}. The objects \
     a plan creates run their expressions whenever they are used, so they pass the same \
     allow-list as agent SQL; change the document and plan again"
)]
pub struct GuardedStep {
    /// The step.
    pub step_id: String,
    /// Its summary.
    pub summary: String,
    /// The guard's reason.
    pub reason: String,
}

/// [`check_expressions`] on every step of `plan` in `schema` mode, except Lockplane's own
/// helper installation (the planner's statements, matched text for text).
pub fn check_plan(plan: &crate::plan::Plan) -> Result<(), GuardedStep> {
    let helpers = crate::dsl::helpers::install_statements();
    for step in &plan.steps {
        if helpers.iter().any(|h| h.trim() == step.sql.trim()) {
            continue;
        }
        check_expressions(&step.sql, AccessMode::Schema).map_err(|refusal| GuardedStep {
            step_id: step.id.clone(),
            summary: step.summary.clone(),
            reason: refusal.reason,
        })?;
    }
    Ok(())
}

/// Parses `sql` with pg_query and returns the parse result in the JSON form the guard walks:
/// `{"version": …, "stmts": [{"stmt": {"node": {"<NodeType>": {…}}}, "stmt_location": …}]}`,
/// where every generic node is `{"node": {"<NodeType>": {…}}}`. Exposed so that tests and
/// tools can inspect what the guard saw; unparsable text gives the same [`Refusal`] as
/// [`check`].
pub fn parse_tree(sql: &str) -> Result<Value, Refusal> {
    // The parse tree in JSON form takes hundreds of times the text's size; a bound on the
    // text bounds the memory one call can take.
    if sql.len() > MAX_STATEMENT_BYTES {
        return Err(refuse(
            format!(
                "the statement is {} bytes; at most {} KiB are accepted per statement (a bound \
                 on the memory one check takes): split the work into several statements, e.g. \
                 rows in batches",
                sql.len(),
                MAX_STATEMENT_BYTES / 1024
            ),
            None,
        ));
    }
    // pg_query hands the text to C as a NUL-terminated string; Postgres' protocol cannot carry
    // a NUL either.
    if let Some(nul) = sql.find('\0') {
        return Err(refuse(
            "the text contains a NUL byte, which no SQL statement can contain",
            Some(nul),
        ));
    }
    let parsed = pg_query::parse(sql, 0).map_err(|error| parse_refusal(sql, error))?;
    serde_json::to_value(&parsed.protobuf).map_err(|error| {
        refuse(
            format!("internal error: the parse tree could not be converted for checking ({error})"),
            None,
        )
    })
}

fn parse_refusal(sql: &str, error: pg_query::Error) -> Refusal {
    match error {
        pg_query::Error::Parse(message) => {
            let position = parse_error_position(sql, &message);
            refuse(
                format!("the text does not parse as PostgreSQL: {message}"),
                position,
            )
        }
        // prost refuses messages nested more than 100 deep; the tree could not be checked.
        pg_query::Error::Decode(_) => refuse(
            "the statement is nested too deeply to be checked; simplify it",
            None,
        ),
        other => refuse(
            format!("the text does not parse as PostgreSQL: {other}"),
            None,
        ),
    }
}

/// Most pieces of input tried when locating a parse error; bounds the work on hostile input.
const MAX_ERROR_CANDIDATES: usize = 32;

/// Where Postgres' parser stopped, recovered from its message: pg_query's Rust API gives the
/// message but not the cursor position.
///
/// The message ends in `at end of input` or `at or near "TOKEN"`, TOKEN being the source text
/// from the failing token on. The TOKEN may occur several times; the failing occurrence is the
/// first one whose prefix of the text (up to and including it) fails with the same message:
/// earlier occurrences lie in a prefix the grammar accepted (Postgres' LALR parser reports an
/// error at the first token that cannot continue a valid statement).
fn parse_error_position(sql: &str, message: &str) -> Option<usize> {
    if message.ends_with("at end of input") {
        return Some(sql.len());
    }
    let marker = "at or near \"";
    let start = message.find(marker)? + marker.len();
    let token = message.get(start..)?.strip_suffix('"')?;
    if token.is_empty() {
        return None;
    }
    let candidates: Vec<usize> = sql
        .match_indices(token)
        .map(|(i, _)| i)
        .take(MAX_ERROR_CANDIDATES)
        .collect();
    if candidates.len() == 1 {
        return candidates.first().copied();
    }
    candidates
        .iter()
        .copied()
        .find(|&i| {
            let prefix = sql.get(..i + token.len()).unwrap_or(sql);
            matches!(pg_query::parse(prefix, 0), Err(pg_query::Error::Parse(m)) if m == message)
        })
        .or_else(|| candidates.first().copied())
}

/// Nodes nested deeper than this are refused. prost already refuses parse trees more than 100
/// messages deep, so this only guards the walker's own recursion against a future change.
const MAX_DEPTH: usize = 512;

/// Index access methods built into Postgres.
const INDEX_METHODS: &[&str] = &["btree", "hash", "gist", "gin", "brin", "spgist"];

/// Catalogs whose rows are secrets or bypass privileges: password hashes (pg_authid,
/// pg_shadow), user-mapping options with remote credentials, sample values of every column
/// (pg_statistic), large object contents, subscription connection strings.
const PROTECTED_CATALOGS: &[(&str, &str)] = &[
    (
        "pg_authid",
        "it holds password hashes; read pg_roles instead",
    ),
    (
        "pg_shadow",
        "it holds password hashes; read pg_roles or pg_user instead",
    ),
    (
        "pg_user_mapping",
        "it holds user-mapping options, which include remote credentials",
    ),
    (
        "pg_user_mappings",
        "it holds user-mapping options, which include remote credentials",
    ),
    (
        "pg_statistic",
        "it holds sample values of every column, past column privileges and row-level security; \
         read pg_stats instead",
    ),
    (
        "pg_statistic_ext_data",
        "it holds sample values of columns, past column privileges; read pg_stats_ext instead",
    ),
    (
        "pg_largeobject",
        "it holds the contents of every large object",
    ),
    (
        "pg_subscription",
        "it holds subscription connection strings, which may include passwords",
    ),
];

struct Walker {
    mode: AccessMode,
    functions: BTreeSet<String>,
    destructive: Vec<String>,
    writes: bool,
}

/// `Some(Some((type, body)))` for a wrapped node, `Some(None)` for an empty one
/// (`{"node": null}`), `None` when `map` is not a node wrapper.
fn as_node(map: &Map<String, Value>) -> Option<Option<(&str, &Value)>> {
    if map.len() != 1 {
        return None;
    }
    match map.get("node")? {
        Value::Null => Some(None),
        Value::Object(inner) if inner.len() == 1 => inner
            .iter()
            .next()
            .map(|(ty, body)| Some((ty.as_str(), body))),
        _ => None,
    }
}

fn offset(value: &Value) -> Option<usize> {
    value.as_i64().and_then(|n| usize::try_from(n).ok())
}

fn location(body: &Value) -> Option<usize> {
    body.get("location").and_then(offset)
}

fn text<'a>(body: &'a Value, field: &str) -> &'a str {
    body.get(field).and_then(Value::as_str).unwrap_or("")
}

fn flag(body: &Value, field: &str) -> bool {
    body.get(field).and_then(Value::as_bool).unwrap_or(false)
}

fn int(body: &Value, field: &str) -> i32 {
    body.get(field)
        .and_then(Value::as_i64)
        .and_then(|n| i32::try_from(n).ok())
        .unwrap_or(0)
}

fn present(body: &Value, field: &str) -> bool {
    !matches!(body.get(field), None | Some(Value::Null))
}

fn list<'a>(body: &'a Value, field: &str) -> &'a [Value] {
    body.get(field)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The body of a wrapped node if it is of type `ty`.
fn node_body<'a>(value: &'a Value, ty: &str) -> Option<&'a Value> {
    value.get("node")?.get(ty)
}

/// The strings of a name list (`[{"node": {"String": {"sval": "x"}}}, …]`), or `None` when an
/// element is not a plain string.
fn names(items: &[Value]) -> Option<Vec<&str>> {
    items
        .iter()
        .map(|item| node_body(item, "String").and_then(|s| s.get("sval")?.as_str()))
        .collect()
}

/// Every string under `value`, in order: a readable rendering of qualified names for messages.
fn strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(s) = map.get("sval").and_then(Value::as_str) {
                out.push(s.to_owned());
            }
            for (key, v) in map {
                if key != "sval" {
                    strings(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        _ => {}
    }
}

fn object_names(objects: &[Value]) -> String {
    objects
        .iter()
        .map(|object| match node_body(object, "RangeVar") {
            Some(rv) => relation_name(rv),
            None => {
                let mut parts = Vec::new();
                strings(object, &mut parts);
                parts.join(".")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The relations a statement of type `ty` creates (see [`Checked::creates`]); `schema` is the
/// schema of an enclosing `CREATE SCHEMA`.
fn created_relations(ty: &str, body: &Value, schema: &str) -> Vec<(String, String)> {
    let named = |rv: Option<&Value>| -> Vec<(String, String)> {
        rv.map(|rv| {
            let own = text(rv, "schemaname");
            vec![(
                if own.is_empty() { schema } else { own }.to_owned(),
                text(rv, "relname").to_owned(),
            )]
        })
        .unwrap_or_default()
    };
    match ty {
        "CreateStmt" => named(body.get("relation")),
        "ViewStmt" => named(body.get("view")),
        "CreateSeqStmt" => named(body.get("sequence")),
        "CreateTableAsStmt" => named(body.get("into").and_then(|i| i.get("rel"))),
        "RenameStmt"
            if matches!(
                Obj::try_from(int(body, "rename_type")),
                Ok(Obj::ObjectTable | Obj::ObjectView | Obj::ObjectSequence)
            ) =>
        {
            let own = body
                .get("relation")
                .map(|rv| text(rv, "schemaname"))
                .unwrap_or("");
            vec![(own.to_owned(), text(body, "newname").to_owned())]
        }
        "CreateSchemaStmt" => {
            let inner = text(body, "schemaname");
            list(body, "schema_elts")
                .iter()
                .filter_map(|elt| as_node(elt.as_object()?).flatten())
                .flat_map(|(ty, body)| created_relations(ty, body, inner))
                .collect()
        }
        _ => Vec::new(),
    }
}

fn relation_name(rv: &Value) -> String {
    let schema = text(rv, "schemaname");
    let name = text(rv, "relname");
    if schema.is_empty() {
        name.to_owned()
    } else {
        format!("{schema}.{name}")
    }
}

fn is_system_schema(schema: &str) -> bool {
    schema == "information_schema" || schema.starts_with("pg_")
}

/// Whether a relation named by a `RangeVar` is (or would resolve to) a system catalog.
/// Unqualified `pg_*` names are treated as system catalogs because pg_catalog is searched first.
fn is_system_relation(rv: &Value) -> bool {
    let schema = text(rv, "schemaname");
    if schema.is_empty() {
        text(rv, "relname").starts_with("pg_")
    } else {
        is_system_schema(schema)
    }
}

fn unknown_shape(parent: &str, field: &str, position: Option<usize>) -> Refusal {
    refuse(
        format!(
            "the parse tree has a field the guard does not know (`{parent}.{field}`), so the \
             statement cannot be checked; this happens with syntax newer than the guard"
        ),
        position,
    )
}

/// Whether a WHERE clause is trivially true: `true`, `'t'::boolean`, `1 = 1`.
fn is_trivially_true(where_clause: &Value) -> bool {
    if let Some(c) = node_body(where_clause, "AConst") {
        return c
            .pointer("/val/Boolval/boolval")
            .and_then(Value::as_bool)
            .unwrap_or(false);
    }
    if let Some(cast) = node_body(where_clause, "TypeCast") {
        let arg = cast.get("arg").and_then(|a| node_body(a, "AConst"));
        let sval = arg
            .and_then(|c| c.pointer("/val/Sval/sval"))
            .and_then(Value::as_str);
        let boolval = arg
            .and_then(|c| c.pointer("/val/Boolval/boolval"))
            .and_then(Value::as_bool);
        return boolval == Some(true)
            || matches!(sval, Some("t" | "true" | "y" | "yes" | "on" | "1"));
    }
    if let Some(expr) = node_body(where_clause, "AExpr") {
        let op = names(list(expr, "name")).unwrap_or_default();
        let l = expr.get("lexpr").and_then(|v| node_body(v, "AConst"));
        let r = expr.get("rexpr").and_then(|v| node_body(v, "AConst"));
        if let (["="], Some(l), Some(r)) = (op.as_slice(), l, r) {
            return l.get("val").is_some() && l.get("val") == r.get("val");
        }
    }
    false
}

impl Walker {
    fn node(
        &mut self,
        ty: &str,
        body: &Value,
        inherited: Option<usize>,
        depth: usize,
    ) -> Result<(), Refusal> {
        let loc = location(body).or(inherited);
        if depth > MAX_DEPTH {
            return Err(refuse(
                "the statement is nested too deeply to be checked; simplify it",
                loc,
            ));
        }
        if let Some(reason) = specific_refusal(ty, body) {
            return Err(refuse(reason, loc));
        }
        let Some(needed) = nodes::required_mode(ty) else {
            return Err(refuse(
                format!(
                    "{} is not on the guard's allow-list of statements and expressions \
                     (accepted in {} mode: {}); do it outside Lockplane, with a reviewed change",
                    describe(ty),
                    self.mode,
                    accepted_in(self.mode),
                ),
                loc,
            ));
        };
        if !self.mode.allows(needed) {
            return Err(refuse(
                format!(
                    "{} needs access mode `{needed}`, but this server runs in `{}` mode{}",
                    describe(ty),
                    self.mode,
                    mode_hint(needed),
                ),
                loc,
            ));
        }
        if needed > AccessMode::ReadOnly {
            self.writes = true;
        }
        self.inspect(ty, body, loc)?;
        self.fields(ty, body, loc, depth)
    }

    /// Walks every field of a node: wrapped nodes, struct-typed fields and lists of nodes.
    /// Anything else that is not a plain value is a shape the guard does not know: refused.
    fn fields(
        &mut self,
        ty: &str,
        body: &Value,
        loc: Option<usize>,
        depth: usize,
    ) -> Result<(), Refusal> {
        let Some(map) = body.as_object() else {
            return Err(unknown_shape(ty, "(body)", loc));
        };
        // Field order decides which of several problems is reported. serde_json's map keeps
        // insertion order when some crate in the build enables `preserve_order` and sorts keys
        // otherwise; sorting here gives the same refusal in every build.
        let mut entries: Vec<(&String, &Value)> = map.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (field, value) in entries {
            match value {
                Value::Object(child) => match as_node(child) {
                    Some(Some((cty, cbody))) => self.node(cty, cbody, loc, depth + 1)?,
                    Some(None) => {}
                    None => {
                        if let Some(fty) = nodes::field_type(ty, field) {
                            self.node(fty, value, loc, depth + 1)?;
                        } else if ty == "AConst" && field == "val" && is_constant(child) {
                            // A literal: nothing to walk.
                        } else {
                            return Err(unknown_shape(ty, field, loc));
                        }
                    }
                },
                Value::Array(items) => {
                    for item in items {
                        match item.as_object().map(as_node) {
                            Some(Some(Some((cty, cbody)))) => {
                                self.node(cty, cbody, loc, depth + 1)?
                            }
                            Some(Some(None)) => {}
                            _ => return Err(unknown_shape(ty, field, loc)),
                        }
                    }
                }
                Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
            }
        }
        Ok(())
    }

    /// [`check_expressions`]: every function call, relation and type name anywhere under
    /// `value`, whatever node holds it.
    fn expressions(&mut self, value: &Value, loc: Option<usize>) -> Result<(), Refusal> {
        match value {
            Value::Object(map) => {
                let here = location(value).or(loc);
                for (key, v) in map {
                    match key.as_str() {
                        "FuncCall" => self.function_call(v, location(v).or(here))?,
                        "AExpr" => operator(v, location(v).or(here))?,
                        "RangeVar" => protected_catalog(v, here)?,
                        // Generic nodes come wrapped (`{"node": {"TypeName": …}}`), struct
                        // fields bare (`"type_name": {…}` of a cast or a column).
                        "TypeName" | "type_name" => protected_row_type(v, here)?,
                        "RangeTableSample" => tablesample(v, here)?,
                        _ => {}
                    }
                    self.expressions(v, here)?;
                }
                Ok(())
            }
            Value::Array(items) => items.iter().try_for_each(|v| self.expressions(v, loc)),
            _ => Ok(()),
        }
    }

    /// Checks particular to a node type, beyond its being on the allow-list.
    fn inspect(&mut self, ty: &str, body: &Value, loc: Option<usize>) -> Result<(), Refusal> {
        match ty {
            "FuncCall" => self.function_call(body, loc),
            "AExpr" => operator(body, loc),
            "RangeTableSample" => tablesample(body, loc),
            "RangeVar" => protected_catalog(body, loc),
            "TypeName" => protected_row_type(body, loc),
            "SelectStmt" => self.select(body, loc),
            "InsertStmt" | "MergeStmt" => write_target(body.get("relation"), loc),
            "MergeWhenClause" => {
                // The one MERGE action that can empty a table: every target row the source
                // lacks is deleted, like DELETE without WHERE.
                if int(body, "match_kind") == MergeMatchKind::MergeWhenNotMatchedBySource as i32
                    && int(body, "command_type") == CmdType::CmdDelete as i32
                    && !present(body, "condition")
                {
                    self.destructive.push(
                        "MERGE … WHEN NOT MATCHED BY SOURCE THEN DELETE removes every row of the \
                         target that the source lacks"
                            .to_owned(),
                    );
                } else if int(body, "command_type") == CmdType::CmdDelete as i32 {
                    // Which rows a MERGE join matches depends on its ON clause and its source
                    // (`ON true` matches every row), which the guard cannot bound the way it
                    // recognises a missing WHERE.
                    self.destructive.push(
                        "MERGE … THEN DELETE deletes every target row its join matches, which \
                         can be all of them"
                            .to_owned(),
                    );
                }
                Ok(())
            }
            "UpdateStmt" | "DeleteStmt" => {
                write_target(body.get("relation"), loc)?;
                let verb = if ty == "UpdateStmt" {
                    "UPDATE without WHERE changes"
                } else {
                    "DELETE without WHERE removes"
                };
                let table = body.get("relation").map(relation_name).unwrap_or_default();
                match body.get("where_clause") {
                    None | Some(Value::Null) => self
                        .destructive
                        .push(format!("{verb} every row of {table}")),
                    Some(w) if is_trivially_true(w) => self.destructive.push(format!(
                        "{verb} every row of {table} (its WHERE is always true)"
                    )),
                    Some(_) => {}
                }
                Ok(())
            }
            "TruncateStmt" => {
                for relation in list(body, "relations") {
                    write_target(node_body(relation, "RangeVar"), loc)?;
                }
                let mut why = format!(
                    "TRUNCATE removes every row of {}",
                    object_names(list(body, "relations"))
                );
                if int(body, "behavior") == DropBehavior::DropCascade as i32 {
                    why.push_str(" and, with CASCADE, of every table referencing them");
                }
                self.destructive.push(why);
                Ok(())
            }
            "CreateStmt" => {
                not_temporary(body.get("relation"), "tables", loc)?;
                write_target(body.get("relation"), loc)?;
                no_tablespace(text(body, "tablespacename"), loc)?;
                let method = text(body, "access_method");
                if !method.is_empty() && method != "heap" {
                    return Err(refuse(
                        format!(
                            "table access method `{method}` is refused: only the built-in heap \
                             is accepted (others are server code Lockplane does not manage)"
                        ),
                        loc,
                    ));
                }
                Ok(())
            }
            "IndexStmt" => {
                write_target(body.get("relation"), loc)?;
                no_tablespace(text(body, "table_space"), loc)?;
                index_method(text(body, "access_method"), loc)
            }
            "Constraint" => {
                no_tablespace(text(body, "indexspace"), loc)?;
                index_method(text(body, "access_method"), loc)
            }
            "ViewStmt" => {
                not_temporary(body.get("view"), "views", loc)?;
                write_target(body.get("view"), loc)
            }
            "CreateSeqStmt" => {
                not_temporary(body.get("sequence"), "sequences", loc)?;
                write_target(body.get("sequence"), loc)
            }
            "AlterSeqStmt" => write_target(body.get("sequence"), loc),
            "CreatePolicyStmt" => {
                write_target(body.get("table"), loc)?;
                // Permissive policies are OR-ed: a new one can only admit more rows. A
                // restrictive one (AND-ed) can only admit fewer.
                if flag(body, "permissive") {
                    self.destructive.push(format!(
                        "CREATE POLICY {} ON {} is permissive, so it widens access: every row \
                         its USING/WITH CHECK admits becomes visible or writable to its roles, \
                         whatever the other policies say",
                        text(body, "policy_name"),
                        body.get("table").map(relation_name).unwrap_or_default()
                    ));
                }
                Ok(())
            }
            "AlterPolicyStmt" => {
                write_target(body.get("table"), loc)?;
                self.destructive.push(format!(
                    "ALTER POLICY {} ON {} changes which roles or rows a row-level security \
                     policy admits, which can widen access; the previous definition is lost",
                    text(body, "policy_name"),
                    body.get("table").map(relation_name).unwrap_or_default()
                ));
                Ok(())
            }
            "AlterTableStmt" => {
                let objtype = Obj::try_from(int(body, "objtype"));
                if !matches!(
                    objtype,
                    Ok(Obj::ObjectTable | Obj::ObjectView | Obj::ObjectIndex | Obj::ObjectSequence)
                ) {
                    return Err(refuse(
                        format!(
                            "ALTER {} is refused: only tables, views, indexes and sequences are \
                             altered through Lockplane",
                            object_label(objtype)
                        ),
                        loc,
                    ));
                }
                write_target(body.get("relation"), loc)
            }
            "AlterTableCmd" => self.alter_table_cmd(body, loc),
            "DropStmt" => self.drop(body, loc),
            "GrantStmt" => self.grant(body, loc),
            "RenameStmt" => {
                let kind = Obj::try_from(int(body, "rename_type"));
                if !matches!(
                    kind,
                    Ok(Obj::ObjectTable
                        | Obj::ObjectColumn
                        | Obj::ObjectView
                        | Obj::ObjectIndex
                        | Obj::ObjectSequence
                        | Obj::ObjectTabconstraint
                        | Obj::ObjectPolicy
                        | Obj::ObjectType
                        | Obj::ObjectSchema)
                ) {
                    return Err(refuse(
                        format!(
                            "renaming a {} is refused: only tables, columns, views, indexes, \
                             sequences, constraints, policies, types and schemas are renamed \
                             through Lockplane",
                            object_label(kind)
                        ),
                        loc,
                    ));
                }
                if present(body, "relation") {
                    write_target(body.get("relation"), loc)?;
                }
                Ok(())
            }
            "CommentStmt" => {
                let kind = Obj::try_from(int(body, "objtype"));
                if !matches!(
                    kind,
                    Ok(Obj::ObjectTable
                        | Obj::ObjectColumn
                        | Obj::ObjectView
                        | Obj::ObjectIndex
                        | Obj::ObjectSequence
                        | Obj::ObjectTabconstraint
                        | Obj::ObjectPolicy
                        | Obj::ObjectType
                        | Obj::ObjectSchema
                        | Obj::ObjectExtension)
                ) {
                    return Err(refuse(
                        format!(
                            "COMMENT ON {} is refused: only objects Lockplane manages take \
                             comments through it",
                            object_label(kind)
                        ),
                        loc,
                    ));
                }
                Ok(())
            }
            "CreateSchemaStmt" => {
                if present(body, "authrole") {
                    return Err(refuse(
                        "CREATE SCHEMA … AUTHORIZATION makes another role the schema's owner; \
                         ownership changes are refused (Lockplane's migrator role owns what it \
                         manages): drop the AUTHORIZATION clause",
                        loc,
                    ));
                }
                let name = text(body, "schemaname");
                if is_system_schema(name) {
                    return Err(refuse(
                        format!("schema names starting with pg_ are reserved (`{name}`)"),
                        loc,
                    ));
                }
                Ok(())
            }
            "CreateExtensionStmt" => {
                let name = text(body, "extname");
                if !TRUSTED_EXTENSIONS.contains(&name) {
                    return Err(refuse(
                        format!(
                            "extension `{name}` is not on the list of trusted extensions ({}): \
                             extensions load code into the server; ask an administrator to \
                             install it",
                            TRUSTED_EXTENSIONS.join(", ")
                        ),
                        loc,
                    ));
                }
                for option in list(body, "options") {
                    let Some(def) = node_body(option, "DefElem") else {
                        continue;
                    };
                    let at = location(def).or(loc);
                    match text(def, "defname") {
                        "cascade" => {
                            return Err(refuse(
                                "CREATE EXTENSION … CASCADE would also install extensions that \
                                 are not on the trusted list; create each needed extension \
                                 explicitly",
                                at,
                            ))
                        }
                        "schema" => {
                            let mut schema = Vec::new();
                            strings(def.get("arg").unwrap_or(&Value::Null), &mut schema);
                            if schema.iter().any(|s| is_system_schema(s)) {
                                return Err(system_write_refusal(&schema.join("."), at));
                            }
                        }
                        _ => {}
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn function_call(&mut self, body: &Value, loc: Option<usize>) -> Result<(), Refusal> {
        let Some(parts) = names(list(body, "funcname")) else {
            return Err(refuse(
                "a function call's name is not a plain identifier",
                loc,
            ));
        };
        let name = match parts.as_slice() {
            [name] => (*name).to_owned(),
            ["pg_catalog", name] => (*name).to_owned(),
            [schema, name]
                if LOCKPLANE_FUNCTIONS.contains(&format!("{schema}.{name}").as_str()) =>
            {
                format!("{schema}.{name}")
            }
            _ => {
                return Err(refuse(
                    format!(
                        "function `{}` is schema-qualified: only pg_catalog.* and Lockplane's \
                         helpers ({}) may be called with a schema; call built-in functions \
                         unqualified",
                        parts.join("."),
                        LOCKPLANE_FUNCTIONS.join(", ")
                    ),
                    loc,
                ))
            }
        };
        if let Some(why) = functions::denied(&name) {
            return Err(refuse(
                format!("function `{name}` is refused: it {why}"),
                loc,
            ));
        }
        let Some(needed) = functions::required_mode(&name) else {
            return Err(refuse(
                format!(
                    "function `{name}` is not on the guard's allow-list of functions (built-in \
                     string, number, date/time, JSON, array, range, full-text, UUID and \
                     aggregate functions, trusted extensions' functions and Lockplane's \
                     helpers); rewrite the statement without it, or ask for it to be added"
                ),
                loc,
            ));
        };
        if !self.mode.allows(needed) {
            return Err(refuse(
                format!(
                    "function `{name}` reads or changes a sequence and needs access mode \
                     `{needed}`, but this server runs in `{}` mode{}",
                    self.mode,
                    mode_hint(needed)
                ),
                loc,
            ));
        }
        if name == "nextval" || name == "setval" {
            self.writes = true;
        }
        self.functions.insert(name);
        Ok(())
    }

    fn select(&mut self, body: &Value, loc: Option<usize>) -> Result<(), Refusal> {
        if present(body, "into_clause") {
            return Err(refuse(
                nodes::refusal("IntoClause").unwrap_or("SELECT … INTO is refused"),
                loc,
            ));
        }
        if let Some(lock) = list(body, "locking_clause").first() {
            let lock_loc = node_body(lock, "LockingClause").and_then(location).or(loc);
            if self.mode < AccessMode::Data {
                return Err(refuse(
                    format!(
                        "SELECT … FOR UPDATE/SHARE takes row locks, which is a write: it needs \
                         access mode `data`, but this server runs in `{}` mode; drop the locking \
                         clause",
                        self.mode
                    ),
                    lock_loc,
                ));
            }
            self.writes = true;
        }
        Ok(())
    }

    fn alter_table_cmd(&mut self, body: &Value, loc: Option<usize>) -> Result<(), Refusal> {
        use AlterTableType::*;
        let subtype = AlterTableType::try_from(int(body, "subtype"));
        let name = text(body, "name");
        let destructive = match subtype {
            Ok(
                AtAddColumn | AtColumnDefault | AtDropNotNull | AtSetNotNull | AtDropExpression
                | AtAddConstraint | AtAlterConstraint | AtValidateConstraint | AtAddIndexConstraint
                | AtEnableRowSecurity | AtForceRowSecurity | AtAddIdentity | AtSetIdentity,
            ) => None,
            Ok(AtDropColumn) => Some(format!(
                "DROP COLUMN {name} removes the column and its data"
            )),
            Ok(AtDropConstraint) => Some(format!(
                "DROP CONSTRAINT {name} removes a rule the data was guaranteed to follow"
            )),
            Ok(AtAlterColumnType) => Some(format!(
                "ALTER COLUMN {name} TYPE rewrites the column and may narrow it (truncating or \
                 failing on existing values)"
            )),
            Ok(AtDisableRowSecurity) => Some(
                "DISABLE ROW LEVEL SECURITY makes every row visible to every role with table \
                 privileges"
                    .to_owned(),
            ),
            Ok(AtNoForceRowSecurity) => Some(
                "NO FORCE ROW LEVEL SECURITY exempts the table's owner from its policies"
                    .to_owned(),
            ),
            Ok(AtDropIdentity) => Some(format!(
                "ALTER COLUMN {name} DROP IDENTITY drops the column's sequence"
            )),
            Ok(AtChangeOwner) => {
                return Err(refuse(nodes::refusal("AlterOwnerStmt").unwrap_or(""), loc))
            }
            Ok(AtSetTableSpace) => {
                return Err(refuse(
                    "SET TABLESPACE is refused: tablespaces map to directories on the database \
                     server, and moving a table rewrites it under an exclusive lock",
                    loc,
                ))
            }
            Ok(AtSetAccessMethod) => {
                return Err(refuse(
                    "SET ACCESS METHOD is refused: it rewrites the table into another storage \
                     engine, which is server code Lockplane does not manage",
                    loc,
                ))
            }
            Ok(
                AtEnableTrig | AtEnableAlwaysTrig | AtEnableReplicaTrig | AtDisableTrig
                | AtEnableTrigAll | AtDisableTrigAll | AtEnableTrigUser | AtDisableTrigUser,
            ) => {
                return Err(refuse(
                    "enabling or disabling triggers is refused: disabling them bypasses the \
                     integrity they enforce (foreign keys included), and triggers are not \
                     managed in v1",
                    loc,
                ))
            }
            other => {
                return Err(refuse(
                    format!(
                        "ALTER TABLE subcommand {} is not on the guard's allow-list (accepted: \
                         ADD/DROP COLUMN, SET/DROP DEFAULT, SET/DROP NOT NULL, ALTER COLUMN \
                         TYPE, ADD/ALTER/VALIDATE/DROP CONSTRAINT, ENABLE/DISABLE/FORCE/NO \
                         FORCE ROW LEVEL SECURITY, identity columns)",
                        other
                            .map(|t| t.as_str_name().to_owned())
                            .unwrap_or_else(|_| format!("#{}", int(body, "subtype")))
                    ),
                    loc,
                ))
            }
        };
        if let Some(why) = destructive {
            self.destructive.push(why);
        }
        Ok(())
    }

    fn drop(&mut self, body: &Value, loc: Option<usize>) -> Result<(), Refusal> {
        let kind = Obj::try_from(int(body, "remove_type"));
        if !matches!(
            kind,
            Ok(Obj::ObjectTable
                | Obj::ObjectView
                | Obj::ObjectIndex
                | Obj::ObjectSequence
                | Obj::ObjectType
                | Obj::ObjectSchema
                | Obj::ObjectPolicy
                | Obj::ObjectExtension)
        ) {
            return Err(refuse(
                format!(
                    "DROP {} is refused: only tables, views, indexes, sequences, types, schemas, \
                     policies and extensions are dropped through Lockplane",
                    object_label(kind)
                ),
                loc,
            ));
        }
        let objects = list(body, "objects");
        if matches!(
            kind,
            Ok(Obj::ObjectTable
                | Obj::ObjectView
                | Obj::ObjectIndex
                | Obj::ObjectSequence
                | Obj::ObjectType)
        ) {
            for object in objects {
                let mut parts = Vec::new();
                strings(object, &mut parts);
                let system = match parts.as_slice() {
                    [name] => name.starts_with("pg_"),
                    [schema, ..] => is_system_schema(schema),
                    [] => false,
                };
                if system {
                    return Err(system_write_refusal(&parts.join("."), loc));
                }
            }
        }
        let mut why = format!(
            "DROP {} {} removes {}",
            object_label(kind),
            object_names(objects),
            if matches!(kind, Ok(Obj::ObjectTable | Obj::ObjectSchema)) {
                "the objects and their data"
            } else {
                "the objects"
            }
        );
        if int(body, "behavior") == DropBehavior::DropCascade as i32 {
            why.push_str(" and, with CASCADE, every object that depends on them");
        }
        self.destructive.push(why);
        Ok(())
    }

    fn grant(&mut self, body: &Value, loc: Option<usize>) -> Result<(), Refusal> {
        let verb = if flag(body, "is_grant") {
            "GRANT"
        } else {
            "REVOKE"
        };
        let kind = Obj::try_from(int(body, "objtype"));
        if !matches!(
            kind,
            Ok(Obj::ObjectTable | Obj::ObjectSequence | Obj::ObjectSchema | Obj::ObjectType)
        ) {
            let why = match kind {
                Ok(Obj::ObjectLanguage) => {
                    " (USAGE on a language lets a role write functions in it)"
                }
                Ok(Obj::ObjectFunction | Obj::ObjectProcedure | Obj::ObjectRoutine) => {
                    " (functions are not managed in v1)"
                }
                Ok(Obj::ObjectParameterAcl) => " (it would let a role change server settings)",
                _ => "",
            };
            return Err(refuse(
                format!(
                    "{verb} on {} is refused{why}: privileges are granted through Lockplane on \
                     tables, sequences, schemas and types only",
                    object_label(kind)
                ),
                loc,
            ));
        }
        let target = GrantTargetType::try_from(int(body, "targtype"));
        if !matches!(
            target,
            Ok(GrantTargetType::AclTargetObject | GrantTargetType::AclTargetAllInSchema)
        ) {
            return Err(refuse(
                format!("{verb} with this target form is refused; name the objects"),
                loc,
            ));
        }
        for object in list(body, "objects") {
            if let Some(rv) = node_body(object, "RangeVar") {
                if is_system_relation(rv) {
                    return Err(system_write_refusal(&relation_name(rv), loc));
                }
            } else if let Some(s) = node_body(object, "String") {
                let schema = text(s, "sval");
                if is_system_schema(schema) {
                    return Err(system_write_refusal(schema, loc));
                }
            }
        }
        if verb == "REVOKE" {
            self.destructive.push(format!(
                "REVOKE removes privileges on {} that applications may depend on",
                object_names(list(body, "objects"))
            ));
        } else {
            self.destructive.push(format!(
                "GRANT widens access: {} gain privileges on {}",
                grantee_names(list(body, "grantees")),
                object_names(list(body, "objects"))
            ));
        }
        Ok(())
    }
}

/// The grantees of a GRANT, `PUBLIC` for everyone.
fn grantee_names(grantees: &[Value]) -> String {
    let names: Vec<String> = grantees
        .iter()
        .filter_map(|g| node_body(g, "RoleSpec"))
        .map(|r| match text(r, "rolename") {
            "" => "PUBLIC (every role)".to_owned(),
            name => name.to_owned(),
        })
        .collect();
    if names.is_empty() {
        "the grantees".to_owned()
    } else {
        names.join(", ")
    }
}

/// Refusals whose reason depends on the node's content (COPY, SET) or is specific to a
/// well-known dangerous node type.
fn specific_refusal(ty: &str, body: &Value) -> Option<String> {
    match ty {
        "CopyStmt" => Some(
            if flag(body, "is_program") {
                "COPY … PROGRAM runs a shell command on the database server"
            } else if !text(body, "filename").is_empty() {
                "COPY to or from a file reads or writes the database server's filesystem"
            } else {
                "COPY … FROM STDIN / TO STDOUT needs the copy sub-protocol, which Lockplane does \
                 not speak; use INSERT … VALUES to load rows and SELECT to read them"
            }
            .to_owned(),
        ),
        "VariableSetStmt" => {
            let name = text(body, "name").to_ascii_lowercase();
            Some(match name.as_str() {
                "role" => "SET ROLE / RESET ROLE change the role the session acts as; Lockplane \
                           sets the role itself (set_context, limited to the roles the deployment \
                           allows)"
                    .to_owned(),
                "session_authorization" => "SET SESSION AUTHORIZATION changes the user the \
                                            session acts as; Lockplane sets the role itself \
                                            (set_context)"
                    .to_owned(),
                "transaction"
                | "session characteristics"
                | "transaction_isolation"
                | "transaction_read_only"
                | "transaction snapshot" => {
                    nodes::refusal("TransactionStmt").unwrap_or("").to_owned()
                }
                _ if int(body, "kind")
                    == pg_query::protobuf::VariableSetKind::VarResetAll as i32 =>
                {
                    "RESET ALL resets the session state Lockplane set up (role, context)".to_owned()
                }
                _ => format!(
                    "SET/RESET {name} is refused: session settings belong to Lockplane (every \
                     statement already runs with its statement_timeout) and would leak into later \
                     calls on a shared connection; ask for the setting in the deployment's \
                     configuration"
                ),
            })
        }
        _ => nodes::refusal(ty).map(|why| format!("{} is refused: {why}", describe(ty))),
    }
}

fn is_constant(val: &Map<String, Value>) -> bool {
    val.len() == 1
        && val.iter().all(|(k, v)| {
            matches!(k.as_str(), "Ival" | "Fval" | "Boolval" | "Sval" | "Bsval")
                && v.as_object().is_some_and(|fields| {
                    fields
                        .values()
                        .all(|f| !matches!(f, Value::Object(_) | Value::Array(_)))
                })
        })
}

/// A readable name for a node type in messages.
fn describe(ty: &str) -> String {
    let statement = match ty {
        "SelectStmt" => "SELECT",
        "InsertStmt" => "INSERT",
        "UpdateStmt" => "UPDATE",
        "DeleteStmt" => "DELETE",
        "MergeStmt" => "MERGE",
        "TruncateStmt" => "TRUNCATE",
        "CreateStmt" => "CREATE TABLE",
        "AlterTableStmt" => "ALTER TABLE",
        "IndexStmt" => "CREATE INDEX",
        "CreatePolicyStmt" => "CREATE POLICY",
        "AlterPolicyStmt" => "ALTER POLICY",
        "DropStmt" => "DROP",
        "ViewStmt" => "CREATE VIEW",
        "CreateSeqStmt" => "CREATE SEQUENCE",
        "AlterSeqStmt" => "ALTER SEQUENCE",
        "CreateEnumStmt" => "CREATE TYPE … AS ENUM",
        "AlterEnumStmt" => "ALTER TYPE … VALUE",
        "CommentStmt" => "COMMENT",
        "GrantStmt" => "GRANT/REVOKE",
        "RenameStmt" => "RENAME",
        "CreateSchemaStmt" => "CREATE SCHEMA",
        "CreateExtensionStmt" => "CREATE EXTENSION",
        "OnConflictClause" => "INSERT … ON CONFLICT",
        "ReturningClause" => "RETURNING",
        other => {
            let label = nodes::label(other);
            return if label == other {
                format!("`{other}`")
            } else {
                format!("{label} (`{other}`)")
            };
        }
    };
    statement.to_owned()
}

fn accepted_in(mode: AccessMode) -> &'static str {
    match mode {
        AccessMode::ReadOnly => "SELECT and SHOW",
        AccessMode::Data => "SELECT, SHOW, INSERT, UPDATE, DELETE, MERGE and TRUNCATE",
        AccessMode::Schema => {
            "queries, data changes, and CREATE/ALTER/DROP of tables, indexes, views, sequences, \
             enum types, policies and schemas, COMMENT, GRANT/REVOKE on objects, RENAME, CREATE \
             EXTENSION of trusted extensions"
        }
    }
}

fn mode_hint(needed: AccessMode) -> &'static str {
    match needed {
        AccessMode::ReadOnly => "",
        AccessMode::Data => {
            " (writes are refused in read-only mode); read the data instead, or ask for a server \
             in data mode"
        }
        AccessMode::Schema => {
            "; declare the change in the schema document and use diff_catalog/apply_plan, or ask \
             for a server in schema mode"
        }
    }
}

fn object_label(kind: Result<Obj, impl Sized>) -> String {
    match kind {
        Ok(kind) => kind
            .as_str_name()
            .trim_start_matches("OBJECT_")
            .replace('_', " "),
        Err(_) => "object".to_owned(),
    }
}

fn operator(body: &Value, loc: Option<usize>) -> Result<(), Refusal> {
    let Some(parts) = names(list(body, "name")) else {
        return Err(refuse("an operator's name is not a plain identifier", loc));
    };
    match parts.as_slice() {
        [_] | ["pg_catalog", _] => Ok(()),
        _ => Err(refuse(
            format!(
                "operator OPERATOR({}) is schema-qualified outside pg_catalog: operators call \
                 functions, and only built-in ones are accepted; use the operator unqualified",
                parts.join(".")
            ),
            loc,
        )),
    }
}

fn tablesample(body: &Value, loc: Option<usize>) -> Result<(), Refusal> {
    let parts = names(list(body, "method")).unwrap_or_default();
    let method = match parts.as_slice() {
        [m] | ["pg_catalog", m] => *m,
        _ => "",
    };
    if TABLESAMPLE_METHODS.contains(&method) {
        Ok(())
    } else {
        Err(refuse(
            format!(
                "TABLESAMPLE method `{}` is refused: only {} are accepted (other methods are \
                 extension handler functions)",
                parts.join("."),
                TABLESAMPLE_METHODS.join(" and ")
            ),
            loc,
        ))
    }
}

fn protected_catalog(rv: &Value, loc: Option<usize>) -> Result<(), Refusal> {
    let schema = text(rv, "schemaname");
    if !(schema.is_empty() || schema == "pg_catalog") {
        return Ok(());
    }
    let name = text(rv, "relname");
    match PROTECTED_CATALOGS.iter().find(|(n, _)| *n == name) {
        Some((_, why)) => Err(refuse(
            format!("reading {name} is refused: {why}"),
            location(rv).or(loc),
        )),
        None => Ok(()),
    }
}

/// A protected catalog's row type (`'…'::pg_authid`, `NULL::pg_catalog.pg_shadow`). A cast of
/// a literal reads no rows, but naming these catalogs at all is refused: it is never needed, and
/// the fewer ways to reach them the easier the rule is to trust.
fn protected_row_type(type_name: &Value, loc: Option<usize>) -> Result<(), Refusal> {
    let names: Vec<&str> = type_name
        .get("names")
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p.pointer("/node/String/sval").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    let (schema, name) = match names.as_slice() {
        [name] => ("", *name),
        [schema, name] => (*schema, *name),
        _ => return Ok(()),
    };
    if !(schema.is_empty() || schema == "pg_catalog") {
        return Ok(());
    }
    match PROTECTED_CATALOGS.iter().find(|(n, _)| *n == name) {
        Some((_, why)) => Err(refuse(
            format!("the row type of {name} is refused: {why}"),
            location(type_name).or(loc),
        )),
        None => Ok(()),
    }
}

fn system_write_refusal(name: &str, loc: Option<usize>) -> Refusal {
    refuse(
        format!(
            "`{name}` is (or resolves to) a system catalog: writes and DDL on pg_catalog, \
             information_schema, pg_toast and other pg_* schemas are refused, since the catalogs \
             are Postgres' own bookkeeping"
        ),
        loc,
    )
}

fn write_target(rv: Option<&Value>, loc: Option<usize>) -> Result<(), Refusal> {
    match rv {
        Some(rv) if is_system_relation(rv) => Err(system_write_refusal(
            &relation_name(rv),
            location(rv).or(loc),
        )),
        _ => Ok(()),
    }
}

fn not_temporary(rv: Option<&Value>, what: &str, loc: Option<usize>) -> Result<(), Refusal> {
    match rv {
        Some(rv) if text(rv, "relpersistence") == "t" => Err(refuse(
            format!(
                "temporary {what} are refused: they live in the session, which Lockplane shares \
                 between calls; create a regular one"
            ),
            location(rv).or(loc),
        )),
        _ => Ok(()),
    }
}

fn no_tablespace(tablespace: &str, loc: Option<usize>) -> Result<(), Refusal> {
    if tablespace.is_empty() {
        Ok(())
    } else {
        Err(refuse(
            format!(
                "TABLESPACE {tablespace} is refused: tablespaces map to directories on the \
                 database server; leave the clause out to use the default"
            ),
            loc,
        ))
    }
}

fn index_method(method: &str, loc: Option<usize>) -> Result<(), Refusal> {
    if method.is_empty() || INDEX_METHODS.contains(&method) {
        Ok(())
    } else {
        Err(refuse(
            format!(
                "index access method `{method}` is refused: only the built-in {} are accepted",
                INDEX_METHODS.join(", ")
            ),
            loc,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_ordered_and_named() {
        assert!(AccessMode::Schema.allows(AccessMode::Data));
        assert!(!AccessMode::ReadOnly.allows(AccessMode::Data));
        for mode in AccessMode::ALL {
            assert_eq!(mode.name().parse::<AccessMode>(), Ok(mode));
        }
        assert!("superuser".parse::<AccessMode>().is_err());
    }

    #[test]
    fn parse_error_position_finds_the_failing_occurrence() {
        let sql = "SELECT 'FROM' FROM t FROM u";
        let refusal = check(sql, AccessMode::ReadOnly).unwrap_err();
        assert_eq!(refusal.position, Some(21), "{refusal}");
        let refusal = check("SELECT (1", AccessMode::ReadOnly).unwrap_err();
        assert_eq!(refusal.position, Some(9));
    }
}
