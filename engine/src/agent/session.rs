//! An agent's session context and the two tools that run agent SQL: `explain_sql`
//! ([`explain`]) and `apply_sql` ([`run_sql`]).
//!
//! # The context never outlives a call
//!
//! `set_context` gives an MCP session a [`SessionContext`]: a role and the `app.user_id` /
//! `app.tenant_id` settings that row-level security policies read with
//! `current_setting(…, true)`. The context is not stored on a connection. Every call opens a
//! transaction, applies the context inside it with [`enter`] (`SET LOCAL ROLE` and
//! `set_config(…, true)`, i.e. transaction-local), runs, and ends the transaction. So two MCP
//! sessions sharing a pooled connection never see each other's context, and a plain query on
//! the connection afterwards sees none.
//!
//! Settings a context leaves unset are set to the empty string for the call rather than left
//! alone, so a value someone set at session level on a pooled connection cannot leak in. The
//! Lockplane helpers (`lockplane.tenant_id()`, `lockplane.user_id()`) read `''` as NULL.
//!
//! # What runs, and how
//!
//! Every statement first goes through the SQL guard ([`crate::guard`]). Then:
//!
//! - [`explain`] wraps it in `EXPLAIN (FORMAT JSON)` inside a transaction that is always rolled
//!   back, `READ ONLY` as a second fence. `ANALYZE` executes the statement, so it is accepted
//!   only for statements the guard calls read-only; a plain `EXPLAIN` of a write plans it and
//!   never executes it.
//! - Before either runs, the server parses the text once with the extended protocol, which
//!   refuses more than one command: the text is the one statement the guard saw, whatever the
//!   server's lexing settings (which [`crate::connect`] also pins).
//! - [`run_sql`] requires two-phase confirmation for statements the guard calls destructive
//!   (the id to pass is [`confirmation_id`] of the exact text), then runs the statement in a
//!   transaction with `SET LOCAL statement_timeout` (and a client-side backstop that cancels on
//!   the server, as [`crate::exec`] does), read-only when the guard says it is.
//!
//! The role itself cannot be a bound parameter (`SET ROLE` takes an identifier), so it is
//! quoted by [`quote_ident`] and must have been checked against the deployment's allow-list
//! with [`validate_context`] when the context was set; `user_id` and `tenant_id` are always
//! bound parameters of `set_config`.
//!
//! This module records no events: the runtime introspects after [`run_sql`] and records
//! `SqlApplied` with the [`SqlOutcome`]'s step.

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::events::{StepOutcome, StepReceipt};
use crate::exec::{run_with_timeout, PgFailure};
use crate::guard::{self, AccessMode, Checked, StatementKind};
use crate::hash::sha3_256_hex;
use crate::ident::quote_ident;

/// The longest `user_id` / `tenant_id` accepted, in bytes. Real ids are UUIDs or short
/// strings; a bound limit keeps an agent from parking megabytes in a setting.
pub const MAX_SETTING_LEN: usize = 1024;

/// At most this many result rows of a statement are returned to the caller (the row count is
/// always exact).
pub const MAX_RESULT_ROWS: usize = 1000;

/// The longest value returned, in bytes; a longer one is cut at a character boundary and
/// marked (the server still computed it whole; only the answer is bounded).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// At most this many bytes of values are returned in one answer (1 MiB: an MCP answer
/// carries them twice, as structured content and as text, under common clients' 10 MiB read
/// buffer and the server's answer cap); rows after the one that
/// crosses it are counted but not returned. Together with [`MAX_RESULT_ROWS`] and
/// [`MAX_VALUE_BYTES`] this bounds what one call holds in memory and puts into an agent's
/// context, whatever the statement returns: rows are read from the server as they stream in
/// and dropped once a bound is reached.
pub const MAX_RESULT_BYTES: usize = 1024 * 1024;

/// Who an agent acts as when its SQL runs: the role and the two settings policies read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionContext {
    /// The role to act as (`SET LOCAL ROLE`); `None` runs as the connection's own user.
    pub role: Option<String>,
    /// `app.user_id`; `None` sets it to `''` for the call.
    pub user_id: Option<String>,
    /// `app.tenant_id`; `None` sets it to `''` for the call.
    pub tenant_id: Option<String>,
}

/// Why a context could not be applied or a statement could not run. Each message says what
/// to do next.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SessionError {
    /// The guard (or a rule of the tool) refused the statement; nothing ran.
    #[error("statement refused: {reason}{}", at_byte(.position))]
    Refused {
        /// What was refused, why, and what to send instead.
        reason: String,
        /// Byte offset into the statement text of the offending part, where known.
        position: Option<usize>,
    },
    /// The statement is destructive: nothing ran; call again with the confirmation id.
    #[error(
        "statement needs confirmation: {reason}. Nothing ran. If this is intended, call again \
         with exactly the same SQL and confirmation `{confirmation_id}`"
    )]
    NeedsConfirmation {
        /// Why the statement needs confirmation.
        reason: String,
        /// What to pass as the confirmation on the next call.
        confirmation_id: String,
    },
    /// A confirmation was given but is not the one for this exact text.
    #[error(
        "confirmation `{given}` does not match this statement (confirmations are bound to the \
         exact SQL text; a changed statement needs a new one). Nothing ran. The statement needs \
         confirmation because: {reason}. If intended, pass `{confirmation_id}`"
    )]
    WrongConfirmation {
        /// What the caller passed.
        given: String,
        /// Why the statement needs confirmation.
        reason: String,
        /// The confirmation id of this exact text.
        confirmation_id: String,
    },
    /// The context names a role the deployment does not allow.
    #[error(
        "role `{role}` is not allowed by this deployment; use one of: {}",
        list_or_none(.allowed)
    )]
    RoleNotAllowed {
        /// The role asked for.
        role: String,
        /// The roles the deployment allows.
        allowed: Vec<String>,
    },
    /// The deployment confines agent SQL to allow-listed roles and the context names none.
    #[error(
        "this deployment runs agent SQL only under one of the roles {}; the session has no \
         role set: call set_context with role set to one of them",
        .allowed.join(", ")
    )]
    RoleRequired {
        /// The roles the deployment allows.
        allowed: Vec<String>,
    },
    /// A context value is unusable.
    #[error("invalid context: {field} {problem}; send a different value")]
    InvalidContext {
        /// `role`, `user_id` or `tenant_id`.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// Postgres refused or failed the statement (the transaction was rolled back).
    #[error("Postgres rejected the statement (nothing was committed): {}", .failure.describe(.sql))]
    Postgres {
        /// The server's error, with the position in `sql`.
        failure: Box<PgFailure>,
        /// The statement the position refers to (the caller's text).
        sql: String,
    },
    /// Postgres answered with something Lockplane does not understand (a bug or an
    /// unexpected server).
    #[error("unexpected answer from Postgres: {0}")]
    Unexpected(String),
}

impl SessionError {
    /// Whether the statement was not run because of the guard, the confirmation or the
    /// context (as opposed to Postgres failing it).
    pub fn is_refusal(&self) -> bool {
        !matches!(
            self,
            SessionError::Postgres { .. } | SessionError::Unexpected(_)
        )
    }
}

fn at_byte(position: &Option<usize>) -> String {
    match position {
        Some(p) => format!(" (at byte {p})"),
        None => String::new(),
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "(none: this deployment allows no role switching; leave role unset)".to_owned()
    } else {
        items.join(", ")
    }
}

impl From<guard::Refusal> for SessionError {
    fn from(r: guard::Refusal) -> Self {
        SessionError::Refused {
            reason: r.reason,
            position: r.position,
        }
    }
}

/// Checks a context before it is accepted by `set_context` and again before every call that
/// runs under it: the role must be one of `allowed_roles` (exact, case-sensitive names as the
/// catalog stores them), and the settings must be sendable (no NUL byte, at most
/// [`MAX_SETTING_LEN`] bytes).
///
/// A deployment with an allow-list confines agent SQL to it: a context without a role is
/// refused ([`SessionError::RoleRequired`]) rather than run as the connection's own user,
/// which is typically the migrator and owns the tables (owners bypass row-level security).
/// Without an allow-list, SQL runs as the connection user, as configured.
pub fn validate_context(
    ctx: &SessionContext,
    allowed_roles: &[String],
) -> Result<(), SessionError> {
    match &ctx.role {
        Some(role) if !allowed_roles.iter().any(|r| r == role) => {
            return Err(SessionError::RoleNotAllowed {
                role: role.clone(),
                allowed: allowed_roles.to_vec(),
            });
        }
        None if !allowed_roles.is_empty() => {
            return Err(SessionError::RoleRequired {
                allowed: allowed_roles.to_vec(),
            });
        }
        _ => {}
    }
    for (field, value) in [("user_id", &ctx.user_id), ("tenant_id", &ctx.tenant_id)] {
        check_setting(field, value.as_deref())?;
    }
    Ok(())
}

fn check_setting(field: &'static str, value: Option<&str>) -> Result<(), SessionError> {
    let Some(value) = value else { return Ok(()) };
    if value.contains('\0') {
        return Err(SessionError::InvalidContext {
            field,
            problem: "contains a NUL byte, which Postgres settings cannot hold".into(),
        });
    }
    if value.len() > MAX_SETTING_LEN {
        return Err(SessionError::InvalidContext {
            field,
            problem: format!(
                "is {} bytes long; at most {MAX_SETTING_LEN} are accepted",
                value.len()
            ),
        });
    }
    Ok(())
}

/// Applies `ctx` to the transaction `client` is in: `SET LOCAL ROLE` (the role quoted; it must
/// already be allow-listed, see [`validate_context`]) and
/// `set_config('app.user_id', $1, true), set_config('app.tenant_id', $2, true)` with bound
/// parameters. Everything is transaction-local, so it ends with the transaction.
///
/// Must be called inside a transaction: outside one, `SET LOCAL` has no effect.
pub async fn enter(client: &Client, ctx: &SessionContext) -> Result<(), SessionError> {
    // Re-checked here so that a context that skipped `validate_context` still cannot send a
    // NUL byte or a huge value; the allow-list is the caller's (it belongs to the deployment).
    check_setting("user_id", ctx.user_id.as_deref())?;
    check_setting("tenant_id", ctx.tenant_id.as_deref())?;
    if let Some(role) = &ctx.role {
        if role.is_empty() || role.contains('\0') {
            return Err(SessionError::InvalidContext {
                field: "role",
                problem: "is empty or contains a NUL byte".into(),
            });
        }
        let sql = format!("SET LOCAL ROLE {}", quote_ident(role));
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| postgres(&e, &sql))?;
    }
    // Unset values become '' (not "leave as is") so a session-level value on a pooled
    // connection cannot leak into this call.
    let sql = "SELECT pg_catalog.set_config('app.user_id', COALESCE($1::text, ''), true), \
               pg_catalog.set_config('app.tenant_id', COALESCE($2::text, ''), true)";
    client
        .query(sql, &[&ctx.user_id, &ctx.tenant_id])
        .await
        .map_err(|e| postgres(&e, sql))?;
    Ok(())
}

/// The confirmation id of a destructive statement: `"sql:"` and the first 16 hex digits of
/// the SHA3-256 of the exact text. Bound to the text, so confirming one statement never
/// confirms a different one, and stable across calls and restarts.
pub fn confirmation_id(sql: &str) -> String {
    let hex = sha3_256_hex(sql.as_bytes());
    format!("sql:{}", &hex[..16.min(hex.len())])
}

/// `EXPLAIN (FORMAT JSON[, ANALYZE]) sql` under `ctx`, in a read-only transaction that is
/// always rolled back; returns Postgres' JSON plan (the array `EXPLAIN` prints).
///
/// The statement must pass the guard in `mode` and be one `EXPLAIN` accepts (SELECT, INSERT,
/// UPDATE, DELETE, MERGE). `analyze` executes the statement, so it is refused unless the
/// guard calls the statement read-only; without it, a write is planned and never executed.
pub async fn explain(
    client: &mut Client,
    sql: &str,
    ctx: &SessionContext,
    analyze: bool,
    mode: AccessMode,
    timeout: Duration,
) -> Result<Value, SessionError> {
    let checked = guard::check(sql, mode)?;
    if !matches!(
        checked.kind,
        StatementKind::Select
            | StatementKind::Insert
            | StatementKind::Update
            | StatementKind::Delete
            | StatementKind::Merge
    ) {
        return Err(SessionError::Refused {
            reason: format!(
                "EXPLAIN shows plans of SELECT, INSERT, UPDATE, DELETE and MERGE only, and this \
                 is {}; use apply_sql (or diff_catalog for schema changes)",
                checked.kind
            ),
            position: None,
        });
    }
    if analyze && !checked.read_only {
        return Err(SessionError::Refused {
            reason: format!(
                "EXPLAIN ANALYZE executes the statement, and this {} writes (or takes row \
                 locks); ask without analyze for its plan, which never executes it",
                checked.kind
            ),
            position: None,
        });
    }
    let prefix = if analyze {
        "EXPLAIN (FORMAT JSON, ANALYZE) "
    } else {
        "EXPLAIN (FORMAT JSON) "
    };
    let text = format!("{prefix}{sql}");
    // The guard saw `sql` alone; make sure the prefix did not change how the text splits.
    one_statement(&text)?;

    begin(client, true, timeout, sql).await?;
    let result = async {
        enter(client, ctx).await?;
        server_sees_one(client, &text, backstop(timeout))
            .await
            .map_err(|e| match e {
                SessionError::Postgres { failure, sql } => SessionError::Postgres {
                    failure: Box::new(shift_position(*failure, prefix)),
                    sql,
                },
                other => other,
            })?;
        let collected = collect_with_timeout(client, &text, backstop(timeout), usize::MAX)
            .await
            .map_err(|failure| SessionError::Postgres {
                failure: Box::new(shift_position(failure, prefix)),
                sql: sql.to_owned(),
            })?;
        let plan = collected
            .result
            .first()
            .and_then(|row| row.first().cloned().flatten())
            .ok_or_else(|| SessionError::Unexpected("EXPLAIN returned no plan".into()))?;
        serde_json::from_str::<Value>(&plan)
            .map_err(|e| SessionError::Unexpected(format!("EXPLAIN's JSON does not parse: {e}")))
    }
    .await;
    // Always rolled back: nothing EXPLAIN does may persist, whatever happened.
    rollback(client).await;
    result
}

/// What [`run_sql`] ran, for the caller's receipt and `SqlApplied` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SqlOutcome {
    /// The kind of statement.
    pub kind: StatementKind,
    /// Rows affected or returned, as the server reported (0 for DDL).
    pub rows: u64,
    /// Why the statement needed confirmation, when it did (it was confirmed).
    pub destructive: Option<String>,
    /// The statement's receipt step (the exact SQL, start, duration, rows, outcome).
    pub step: StepReceipt,
    /// How long the statement took (not the transaction around it).
    pub duration: Duration,
    /// Column names of the result, when the statement returned rows.
    pub columns: Vec<String>,
    /// Up to [`MAX_RESULT_ROWS`] result rows, as Postgres prints the values (NULL is `None`).
    pub result: Vec<Vec<Option<String>>>,
    /// What was left out and why, when anything was: rows beyond [`MAX_RESULT_ROWS`] or
    /// [`MAX_RESULT_BYTES`], values longer than [`MAX_VALUE_BYTES`].
    pub truncation: Option<String>,
}

/// Runs one guarded statement under `ctx` and commits it (`apply_sql`).
///
/// Order: the guard in `mode`; two-phase confirmation when the guard calls the statement
/// destructive (`confirmation` must be [`confirmation_id`] of exactly `sql`); then a
/// transaction (`READ ONLY` for read-only statements) with `SET LOCAL statement_timeout`,
/// [`enter`]`(ctx)`, the statement, and COMMIT. Any failure rolls the transaction back.
pub async fn run_sql(
    client: &mut Client,
    sql: &str,
    ctx: &SessionContext,
    mode: AccessMode,
    confirmation: Option<&str>,
    timeout: Duration,
) -> Result<SqlOutcome, SessionError> {
    let checked = guard::check(sql, mode)?;
    run_checked(client, sql, &checked, ctx, confirmation, timeout).await
}

/// [`run_sql`] for a statement the caller already ran through [`guard::check`] (the runtime
/// checks once to decide how to route the call): the guard's verdict is not computed twice.
pub async fn run_checked(
    client: &mut Client,
    sql: &str,
    checked: &Checked,
    ctx: &SessionContext,
    confirmation: Option<&str>,
    timeout: Duration,
) -> Result<SqlOutcome, SessionError> {
    confirm(sql, checked, confirmation)?;

    begin(client, checked.read_only, timeout, sql).await?;
    let result = async {
        enter(client, ctx).await?;
        server_sees_one(client, sql, backstop(timeout)).await?;
        no_shadowing(client, &checked.creates).await?;
        let started_at = crate::events::now_micros();
        let clock = Instant::now();
        let collected = collect_with_timeout(client, sql, backstop(timeout), MAX_VALUE_BYTES)
            .await
            .map_err(|failure| SessionError::Postgres {
                failure: Box::new(failure),
                sql: sql.to_owned(),
            })?;
        let duration = clock.elapsed();
        Ok((collected, started_at, duration))
    }
    .await;
    let (collected, started_at, duration) = match result {
        Ok(ok) => ok,
        Err(e) => {
            rollback(client).await;
            return Err(e);
        }
    };
    // COMMIT can fail too (deferred constraints, serialization); the server has then rolled
    // back, and the caller gets the error.
    if let Err(failure) = run_with_timeout(client, "COMMIT", backstop(timeout)).await {
        rollback(client).await;
        return Err(SessionError::Postgres {
            failure: Box::new(failure),
            sql: sql.to_owned(),
        });
    }
    let rows = collected.rows;
    let step = StepReceipt {
        sql: sql.to_owned(),
        started_at,
        duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        rows: Some(rows),
        outcome: StepOutcome::Ok,
    };
    let truncation = collected.truncation();
    Ok(SqlOutcome {
        kind: checked.kind,
        rows,
        destructive: checked.destructive.clone(),
        step,
        duration,
        columns: collected.columns,
        result: collected.result,
        truncation,
    })
}

/// Has the server itself parse `text` with the extended protocol before it runs: a Parse
/// message holding more than one command is an error there, so the server, whatever it
/// thinks of the lexing, confirms the text is the single statement the guard checked. (The
/// statement then runs with the simple protocol, whose answers come as text, the form
/// results are returned in; nothing about the session changes between the two.)
async fn server_sees_one(
    client: &Client,
    text: &str,
    timeout: Duration,
) -> Result<(), SessionError> {
    match tokio::time::timeout(timeout, client.prepare(text)).await {
        Ok(Ok(_statement)) => Ok(()),
        Ok(Err(e)) => {
            let failure = pg_failure(&e);
            if failure.message.contains("multiple commands") {
                return Err(SessionError::Refused {
                    reason: format!(
                        "the server reads this text as more than one statement ({}); send \
                         exactly one statement",
                        failure.message
                    ),
                    position: None,
                });
            }
            Err(SessionError::Postgres {
                failure: Box::new(failure),
                sql: text.to_owned(),
            })
        }
        Err(_) => {
            crate::connect::cancel_query(&client.cancel_token()).await;
            Err(SessionError::Postgres {
                failure: Box::new(timed_out(timeout)),
                sql: text.to_owned(),
            })
        }
    }
}

/// Refuses a relation whose name another schema on the session's search path already holds:
/// created earlier on the path it would capture every unqualified reference to the existing
/// one (an agent could slip a table of its own under an application's queries); created
/// later, it is shadowed itself. Checked inside the transaction, under the agent's role, so
/// the search path is the one that role resolves (`"$user"` included).
async fn no_shadowing(client: &Client, creates: &[(String, String)]) -> Result<(), SessionError> {
    let sql = "SELECT n.nspname::text || '.' || c.relname::text,                       pg_catalog.array_to_string(pg_catalog.current_schemas(false), ', ')                FROM pg_catalog.pg_class c                JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace                WHERE c.relname = $2                  AND n.nspname = ANY (pg_catalog.current_schemas(false))                  AND n.nspname <> COALESCE(NULLIF($1, ''), pg_catalog.current_schema())                  AND COALESCE(NULLIF($1, ''), pg_catalog.current_schema())                      = ANY (pg_catalog.current_schemas(false))                  AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')";
    for (schema, name) in creates {
        let rows = client
            .query(sql, &[schema, name])
            .await
            .map_err(|e| postgres(&e, sql))?;
        if let Some(row) = rows.first() {
            let existing: String = row.get(0);
            let path: String = row.get(1);
            let target = if schema.is_empty() {
                "the first schema of the search path".to_owned()
            } else {
                format!("schema {schema}")
            };
            return Err(SessionError::Refused {
                reason: format!(
                    "a relation `{name}` in {target} would stand beside {existing} on the \
                     search path ({path}), and unqualified references to `{name}` would \
                     resolve to whichever comes first; choose another name, or qualify it \
                     into a schema that is not on the search path"
                ),
                position: None,
            });
        }
    }
    Ok(())
}

/// What a statement returned, within the bounds.
#[derive(Debug, Default)]
struct Collected {
    columns: Vec<String>,
    result: Vec<Vec<Option<String>>>,
    /// Rows affected or returned (the larger of the server's count and the rows seen: `SHOW`
    /// returns a row but reports 0).
    rows: u64,
    /// Rows seen in all.
    seen: u64,
    /// Bytes of values kept.
    bytes: usize,
    /// Values cut to the value bound.
    cut_values: u64,
    /// Rows not kept because of the byte bound (beyond the row bound they are not kept
    /// either).
    over_bytes: bool,
}

impl Collected {
    fn take(&mut self, message: SimpleQueryMessage, value_limit: usize) {
        match message {
            SimpleQueryMessage::RowDescription(desc) => {
                self.columns = desc.iter().map(|c| c.name().to_owned()).collect();
            }
            SimpleQueryMessage::Row(row) => {
                self.seen += 1;
                if self.columns.is_empty() {
                    self.columns = row.columns().iter().map(|c| c.name().to_owned()).collect();
                }
                if self.result.len() >= MAX_RESULT_ROWS || self.over_bytes {
                    return;
                }
                let mut kept = Vec::with_capacity(row.len());
                let mut size = 0;
                for i in 0..row.len() {
                    let value = row.get(i).map(|v| {
                        if v.len() > value_limit {
                            self.cut_values += 1;
                            cut(v, value_limit)
                        } else {
                            v.to_owned()
                        }
                    });
                    size += value.as_ref().map_or(0, String::len);
                    kept.push(value);
                }
                if self.bytes + size > MAX_RESULT_BYTES && !self.result.is_empty() {
                    self.over_bytes = true;
                    return;
                }
                self.bytes += size;
                self.result.push(kept);
            }
            SimpleQueryMessage::CommandComplete(n) => self.rows = n,
            _ => {}
        }
    }

    fn finish(mut self) -> Collected {
        self.rows = self.rows.max(self.seen);
        self
    }

    /// What was left out, in words, when anything was.
    fn truncation(&self) -> Option<String> {
        let mut notes = Vec::new();
        let kept = self.result.len() as u64;
        if kept < self.seen {
            let why = if self.over_bytes {
                format!("{} MiB of values", MAX_RESULT_BYTES / (1024 * 1024))
            } else {
                format!("{MAX_RESULT_ROWS} rows")
            };
            notes.push(format!(
                "{kept} of {} rows returned (an answer holds at most {why}); narrow the query \
                 (WHERE, LIMIT/OFFSET, fewer columns) to see the rest",
                self.seen
            ));
        }
        if self.cut_values > 0 {
            notes.push(format!(
                "{} value(s) longer than {} KiB cut; select a substring to read more of one",
                self.cut_values,
                MAX_VALUE_BYTES / 1024
            ));
        }
        (!notes.is_empty()).then(|| notes.join("; "))
    }
}

/// `value` cut to at most `limit` bytes at a character boundary, with a marker saying how
/// long it was.
fn cut(value: &str, limit: usize) -> String {
    let mut end = limit.min(value.len());
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [cut: {} bytes in all]", &value[..end], value.len())
}

/// Runs `sql` with the simple protocol, reading the answer as it streams in and keeping only
/// what the bounds allow; cancels on the server when `timeout` passes without the end.
async fn collect_with_timeout(
    client: &Client,
    sql: &str,
    timeout: Duration,
    value_limit: usize,
) -> Result<Collected, PgFailure> {
    use futures_util::StreamExt;
    let token = client.cancel_token();
    let work = async {
        let stream = client
            .simple_query_raw(sql)
            .await
            .map_err(|e| pg_failure(&e))?;
        futures_util::pin_mut!(stream);
        let mut collected = Collected::default();
        while let Some(message) = stream.next().await {
            collected.take(message.map_err(|e| pg_failure(&e))?, value_limit);
        }
        Ok(collected.finish())
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => {
            // A dropped future leaves the statement running on the server; cancel it there.
            crate::connect::cancel_query(&token).await;
            Err(timed_out(timeout))
        }
    }
}

fn timed_out(timeout: Duration) -> PgFailure {
    PgFailure {
        sqlstate: Some(SqlState::QUERY_CANCELED.code().to_owned()),
        message: format!(
            "no answer within {} ms; the statement was cancelled on the server",
            timeout.as_millis()
        ),
        detail: None,
        hint: None,
        position: None,
        timed_out: true,
    }
}

/// The two-phase confirmation rule for a checked statement.
fn confirm(sql: &str, checked: &Checked, confirmation: Option<&str>) -> Result<(), SessionError> {
    let Some(reason) = &checked.destructive else {
        return Ok(());
    };
    let id = confirmation_id(sql);
    match confirmation {
        Some(given) if given == id => Ok(()),
        Some(given) => Err(SessionError::WrongConfirmation {
            given: given.to_owned(),
            reason: reason.clone(),
            confirmation_id: id,
        }),
        None => Err(SessionError::NeedsConfirmation {
            reason: reason.clone(),
            confirmation_id: id,
        }),
    }
}

/// Refuses text that does not parse as exactly one statement.
fn one_statement(text: &str) -> Result<(), SessionError> {
    match pg_query::parse(text, 0) {
        Ok(parsed) if parsed.protobuf.stmts.len() == 1 => Ok(()),
        _ => Err(SessionError::Refused {
            reason: "the statement does not stand alone after `EXPLAIN (…)` is put in front of \
                     it; send a single plain statement"
                .into(),
            position: None,
        }),
    }
}

/// `BEGIN [READ ONLY]` and `SET LOCAL statement_timeout`; a writing transaction also gets the
/// short `lock_timeout` applies use ([`crate::exec::DEFAULT_LOCK_TIMEOUT`]): an agent's `ALTER`
/// waiting for its lock must not queue the application's queries behind it for long (it fails
/// with `55P03` instead, and can be sent again).
pub(crate) async fn begin(
    client: &Client,
    read_only: bool,
    timeout: Duration,
    sql: &str,
) -> Result<(), SessionError> {
    let millis = u64::try_from(timeout.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    // Numbers only: nothing from the caller is in this text.
    let text = if read_only {
        format!("BEGIN READ ONLY; SET LOCAL statement_timeout = '{millis}ms'")
    } else {
        format!(
            "BEGIN; SET LOCAL statement_timeout = '{millis}ms'; SET LOCAL lock_timeout = '{}ms'",
            crate::exec::DEFAULT_LOCK_TIMEOUT.as_millis()
        )
    };
    if let Err(failure) = run_with_timeout(client, &text, backstop(timeout)).await {
        rollback(client).await;
        return Err(SessionError::Postgres {
            failure: Box::new(failure),
            sql: sql.to_owned(),
        });
    }
    Ok(())
}

/// Ends the current transaction without keeping anything. Errors are ignored: a broken
/// connection has no transaction left, and the caller already has the error that matters.
pub(crate) async fn rollback(client: &Client) {
    let _ = run_with_timeout(client, "ROLLBACK", Duration::from_secs(10)).await;
}

/// The client-side backstop, a little longer than the server's `statement_timeout` so the
/// server normally reports the timeout itself (the same rule as the executor's).
fn backstop(timeout: Duration) -> Duration {
    timeout + Duration::from_secs(2).min(timeout / 2 + Duration::from_millis(200))
}

/// A `tokio_postgres` error as a [`PgFailure`].
pub(crate) fn pg_failure(e: &tokio_postgres::Error) -> PgFailure {
    PgFailure::from_error(e)
}

fn postgres(e: &tokio_postgres::Error, sql: &str) -> SessionError {
    SessionError::Postgres {
        failure: Box::new(pg_failure(e)),
        sql: sql.to_owned(),
    }
}

/// Positions Postgres reports count from the start of the text it got; the caller's text
/// starts after `prefix`.
fn shift_position(mut failure: PgFailure, prefix: &str) -> PgFailure {
    let shift = u32::try_from(prefix.chars().count()).unwrap_or(u32::MAX);
    failure.position = failure
        .position
        .and_then(|p| p.checked_sub(shift))
        .filter(|p| *p > 0);
    failure
}

impl fmt::Display for SessionContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(unset)".into());
        write!(
            f,
            "role {}, app.user_id {}, app.tenant_id {}",
            self.role
                .clone()
                .unwrap_or_else(|| "(connection user)".into()),
            show(&self.user_id),
            show(&self.tenant_id)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmation_ids_are_stable_and_bound_to_the_text() {
        let a = confirmation_id("DROP TABLE t");
        assert_eq!(a, confirmation_id("DROP TABLE t"));
        assert_ne!(a, confirmation_id("DROP TABLE t "));
        assert!(a.starts_with("sql:") && a.len() == 20, "{a}");
    }

    #[test]
    fn contexts_are_validated() {
        let allowed = vec!["app_reader".to_owned()];
        let ok = SessionContext {
            role: Some("app_reader".into()),
            user_id: Some("u1".into()),
            tenant_id: None,
        };
        assert!(validate_context(&ok, &allowed).is_ok());
        let bad = SessionContext {
            role: Some("postgres".into()),
            ..SessionContext::default()
        };
        let e = validate_context(&bad, &allowed).unwrap_err();
        assert!(e.to_string().contains("use one of: app_reader"), "{e}");
        let nul = SessionContext {
            role: Some("app_reader".into()),
            tenant_id: Some("a\0b".into()),
            ..SessionContext::default()
        };
        // With an allow-list, no role is not "the connection user": it is refused.
        let unset = SessionContext {
            tenant_id: Some("t1".into()),
            ..SessionContext::default()
        };
        assert!(matches!(
            validate_context(&unset, &allowed),
            Err(SessionError::RoleRequired { .. })
        ));
        assert!(validate_context(&unset, &[]).is_ok());
        assert!(matches!(
            validate_context(&nul, &allowed),
            Err(SessionError::InvalidContext {
                field: "tenant_id",
                ..
            })
        ));
    }

    #[test]
    fn positions_shift_past_the_prefix() {
        let f = PgFailure {
            sqlstate: None,
            message: String::new(),
            detail: None,
            hint: None,
            position: Some(30),
            timed_out: false,
        };
        let prefix = "EXPLAIN (FORMAT JSON) ";
        assert_eq!(
            shift_position(f.clone(), prefix).position,
            Some(30 - prefix.len() as u32)
        );
        let early = PgFailure {
            position: Some(3),
            ..f
        };
        assert_eq!(shift_position(early, prefix).position, None);
    }
}
