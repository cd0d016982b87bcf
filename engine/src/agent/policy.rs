//! Row-level security verdicts (`policy_evaluate`): which policies apply to a role and
//! command on a table, the effective predicate they combine into, and whether one given row
//! passes it — computed by Postgres itself, under that role and context, in a transaction that
//! is always rolled back.
//!
//! # The rule implemented
//!
//! From the Postgres documentation of `CREATE POLICY` ("Policies Applied by Command Type" and
//! the paragraphs on combining policies), and `src/backend/rewrite/rowsecurity.c`:
//!
//! - A policy applies to a command when its command is `ALL` or that command, and to a role
//!   when it is `TO PUBLIC` or the role has the privileges of one of its roles
//!   (`pg_has_role(…, 'USAGE')`, what Postgres' `has_privs_of_role` checks).
//! - Within one command type, permissive policies are OR-ed, restrictive ones AND-ed, and both
//!   parts AND-ed. With no permissive policy (or none with the needed expression) access is
//!   denied (`false`). Where different command types apply to one statement (an UPDATE needs
//!   SELECT and UPDATE policies), their combinations are AND-ed.
//! - Existing rows are checked with `USING`; new rows with `WITH CHECK`, falling back to
//!   `USING` for policies that have none (`ALL` and `UPDATE` policies). SELECT policies
//!   checking a new row use `USING`.
//! - Per command, for the one row given:
//!   - `SELECT`: the row is visible iff it passes SELECT/ALL `USING`.
//!   - `INSERT`: a plain `INSERT` (no `RETURNING`, no `ON CONFLICT`) of the row passes iff it
//!     passes INSERT/ALL `WITH CHECK`. Columns the row omits get their default, evaluated as
//!     the role (defaults drawing from sequences are left NULL: evaluating them would consume
//!     a value).
//!   - `UPDATE`: the row updated in place (the new row equals the existing one) by an
//!     `UPDATE … WHERE` naming its columns, which needs SELECT rights as almost every UPDATE
//!     does: the existing row must pass UPDATE/ALL `USING` and SELECT/ALL `USING` (or it is
//!     silently skipped), and the new row UPDATE/ALL `WITH CHECK` (else `USING`) and SELECT/ALL
//!     `USING` (or the statement fails).
//!   - `DELETE`: `DELETE … WHERE` on the row: DELETE/ALL `USING` and SELECT/ALL `USING`.
//! - RLS does not apply (the verdict is the table privileges alone) when it is not enabled on
//!   the table, to superusers and `BYPASSRLS` roles, and to the table's owner (or a role with
//!   the owner's privileges) unless RLS is `FORCE`d.
//! - Table privileges are checked at table level (`has_table_privilege`): SELECT for SELECT,
//!   INSERT for INSERT, UPDATE and SELECT for UPDATE, DELETE and SELECT for DELETE.
//!   Column-level grants are not considered.
//!
//! # How the verdict is computed
//!
//! The policy expressions come from `pg_policy` through `pg_get_expr`, which prints their
//! columns unqualified. The row is built by Postgres from the JSON object with
//! `jsonb_populate_record(NULL::schema.table, $1)` (aliased as the table, so qualified
//! references resolve too), and each combined expression is selected from it, after
//! `SET LOCAL ROLE` and the context's settings: functions, sub-queries and settings in the
//! policies behave exactly as they do for that role's real statements. Missing columns are
//! NULL (except INSERT defaults, above); generated columns are not computed.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio_postgres::Client;

use crate::ident::{qualified, quote_ident, quote_literal};
use crate::session::{begin, enter, pg_failure, rollback, SessionContext, SessionError};

/// How long the evaluation may run (policy expressions can hold sub-queries).
pub const EVALUATE_TIMEOUT: Duration = Duration::from_secs(10);

/// The command a verdict is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Command {
    /// Reading the row.
    Select,
    /// Inserting the row.
    Insert,
    /// Updating the row in place.
    Update,
    /// Deleting the row.
    Delete,
}

impl Command {
    /// Every command.
    pub const ALL: [Command; 4] = [
        Command::Select,
        Command::Insert,
        Command::Update,
        Command::Delete,
    ];

    /// The SQL name.
    pub fn name(self) -> &'static str {
        match self {
            Command::Select => "SELECT",
            Command::Insert => "INSERT",
            Command::Update => "UPDATE",
            Command::Delete => "DELETE",
        }
    }

    /// `pg_policy.polcmd` of policies for this command (`ALL` is `*`).
    fn polcmd(self) -> &'static str {
        match self {
            Command::Select => "r",
            Command::Insert => "a",
            Command::Update => "w",
            Command::Delete => "d",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A string naming no [`Command`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown command `{0}`: expected SELECT, INSERT, UPDATE or DELETE")]
pub struct UnknownCommand(pub String);

impl FromStr for Command {
    type Err = UnknownCommand;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().as_str() {
            "SELECT" => Ok(Command::Select),
            "INSERT" => Ok(Command::Insert),
            "UPDATE" => Ok(Command::Update),
            "DELETE" => Ok(Command::Delete),
            _ => Err(UnknownCommand(s.to_owned())),
        }
    }
}

/// A policy that applies to the role and command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyRef {
    /// The policy's name.
    pub name: String,
    /// Permissive (OR-ed) or restrictive (AND-ed).
    pub permissive: bool,
    /// The policy's command: `ALL`, `SELECT`, `INSERT`, `UPDATE` or `DELETE`.
    pub command: String,
    /// The roles it is for (`public` for PUBLIC).
    pub roles: Vec<String>,
    /// The `USING` expression, as Postgres prints it.
    pub using: Option<String>,
    /// The `WITH CHECK` expression, as Postgres prints it.
    pub with_check: Option<String>,
}

/// One combined check that makes up the verdict, and its value for the row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyCheck {
    /// What the check decides, e.g. "existing row visible to UPDATE (UPDATE/ALL USING)".
    pub what: String,
    /// The combined expression.
    pub predicate: String,
    /// Its value for the row (`None`: NULL, which denies), when RLS applies.
    pub value: Option<bool>,
}

/// The verdict of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyVerdict {
    /// The role the verdict is for (the context's role, or the connection's user).
    pub role: String,
    /// Whether row-level security is enabled on the table.
    pub rls_enabled: bool,
    /// Whether it is forced on the table's owner too.
    pub forced: bool,
    /// Whether the policies apply to this role at all (see the module docs for who bypasses).
    pub rls_applies: bool,
    /// The policies that apply to the role and command, sorted by name; for UPDATE and DELETE
    /// also the SELECT/ALL policies they consult (the statement reads the row).
    pub applicable: Vec<PolicyRef>,
    /// The effective predicate as SQL: the checks AND-ed, `true` when RLS does not apply,
    /// `false` when no permissive policy grants access.
    pub predicate: String,
    /// The checks the predicate is made of, with their values.
    pub checks: Vec<PolicyCheck>,
    /// Columns the row omitted whose default was applied (INSERT only).
    pub defaults: Vec<String>,
    /// Whether the role may run the command on the row (privileges and policies).
    pub allowed: bool,
    /// Why, in words.
    pub reason: String,
}

/// Why a verdict could not be computed. Each message says what to do next.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    /// No such table.
    #[error("table {schema}.{name} does not exist; check the name with introspect_catalog")]
    TableNotFound {
        /// The schema asked for.
        schema: String,
        /// The table asked for.
        name: String,
    },
    /// The row names a column the table does not have.
    #[error(
        "table {table} has no column `{column}`; its columns are: {}",
        .columns.join(", ")
    )]
    UnknownColumn {
        /// The table.
        table: String,
        /// The unknown column.
        column: String,
        /// The table's columns.
        columns: Vec<String>,
    },
    /// The context could not be applied, or Postgres failed the evaluation (a value that
    /// does not fit its column's type, a policy sub-query the role may not read, …).
    #[error(transparent)]
    Session(#[from] SessionError),
}

struct Table {
    oid: u32,
    rls_enabled: bool,
    forced: bool,
    owner: bool,
    superuser: bool,
    bypass: bool,
    role: String,
    privileges: [bool; 4],
}

struct Policy {
    reference: PolicyRef,
    cmd: String,
}

/// Computes the policy verdict for `row` (a JSON object of column → value) when the context's
/// role runs `command` on `table` (`(schema, name)`), with Postgres evaluating every
/// expression (see the module docs for the exact rule). Nothing persists: everything happens
/// in a transaction that is rolled back.
///
/// The context's role must already be allow-listed ([`crate::session::validate_context`]).
pub async fn evaluate(
    client: &mut Client,
    table: (&str, &str),
    command: Command,
    row: &Map<String, Value>,
    ctx: &SessionContext,
) -> Result<PolicyVerdict, PolicyError> {
    let (schema, name) = table;
    let display = format!("{schema}.{name}");
    begin(client, true, EVALUATE_TIMEOUT, "").await?;
    let result = async {
        enter(client, ctx).await?;
        evaluate_in(client, schema, name, &display, command, row).await
    }
    .await;
    rollback(client).await;
    result
}

async fn evaluate_in(
    client: &Client,
    schema: &str,
    name: &str,
    display: &str,
    command: Command,
    row: &Map<String, Value>,
) -> Result<PolicyVerdict, PolicyError> {
    let table = read_table(client, schema, name).await?;
    let columns = read_columns(client, table.oid).await?;
    if let Some(unknown) = row.keys().find(|k| !columns.iter().any(|c| &c.name == *k)) {
        return Err(PolicyError::UnknownColumn {
            table: display.to_owned(),
            column: unknown.clone(),
            columns: columns.iter().map(|c| c.name.clone()).collect(),
        });
    }
    let policies = read_policies(client, table.oid).await?;

    // Which policy groups the command consults (module docs).
    let relevant = |p: &Policy, cmd: Command| p.cmd == "*" || p.cmd == cmd.polcmd();
    let mut groups: Vec<(String, String)> = Vec::new();
    let mut push = |what: String, predicate: String| {
        if !groups.iter().any(|(_, p)| *p == predicate) {
            groups.push((what, predicate));
        }
    };
    let using = |cmd: Command| combine(&policies, |p| relevant(p, cmd), |p| p.using.clone());
    let check = |cmd: Command| {
        combine(
            &policies,
            |p| relevant(p, cmd),
            |p| p.with_check.clone().or_else(|| p.using.clone()),
        )
    };
    match command {
        Command::Select => push(
            "row visible to SELECT (SELECT/ALL policies, USING)".into(),
            using(Command::Select),
        ),
        Command::Insert => push(
            "new row accepted by INSERT/ALL policies (WITH CHECK, else USING)".into(),
            check(Command::Insert),
        ),
        Command::Update => {
            push(
                "existing row visible to UPDATE (UPDATE/ALL policies, USING)".into(),
                using(Command::Update),
            );
            push(
                "row readable, as UPDATE … WHERE needs SELECT rights (SELECT/ALL policies, USING)"
                    .into(),
                using(Command::Select),
            );
            push(
                "new row accepted by UPDATE/ALL policies (WITH CHECK, else USING)".into(),
                check(Command::Update),
            );
        }
        Command::Delete => {
            push(
                "existing row visible to DELETE (DELETE/ALL policies, USING)".into(),
                using(Command::Delete),
            );
            push(
                "row readable, as DELETE … WHERE needs SELECT rights (SELECT/ALL policies, USING)"
                    .into(),
                using(Command::Select),
            );
        }
    }
    let applicable: Vec<PolicyRef> = policies
        .iter()
        .filter(|p| {
            relevant(p, command) || (command != Command::Select && relevant(p, Command::Select))
        })
        .map(|p| p.reference.clone())
        .collect();

    let rls_applies =
        table.rls_enabled && !table.superuser && !table.bypass && (!table.owner || table.forced);

    // The row as Postgres builds it, with INSERT defaults for omitted columns.
    let mut source = "$1::text::jsonb".to_owned();
    let mut defaults = Vec::new();
    if command == Command::Insert {
        for c in &columns {
            let Some(default) = &c.default else { continue };
            if row.contains_key(&c.name) || default.contains("nextval(") {
                continue;
            }
            source.push_str(&format!(
                " || pg_catalog.jsonb_build_object({}, ({default}))",
                quote_literal(&c.name)
            ));
            defaults.push(c.name.clone());
        }
    }
    let selects: Vec<String> = groups
        .iter()
        .map(|(_, p)| format!("({p})::boolean"))
        .collect();
    let sql = format!(
        "SELECT {} FROM pg_catalog.jsonb_populate_record(NULL::{}, {source}) AS {}",
        selects.join(", "),
        qualified(schema, name),
        quote_ident(name)
    );
    let json = Value::Object(row.clone()).to_string();
    let values: Vec<Option<bool>> = client
        .query_one(&sql, &[&json])
        .await
        .map_err(|e| SessionError::Postgres {
            failure: Box::new(pg_failure(&e)),
            sql: sql.clone(),
        })
        .and_then(|r| {
            (0..groups.len())
                .map(|i| r.try_get::<_, Option<bool>>(i))
                .collect::<Result<_, _>>()
                .map_err(|e| SessionError::Unexpected(e.to_string()))
        })?;

    let checks: Vec<PolicyCheck> = groups
        .iter()
        .zip(&values)
        .map(|((what, predicate), value)| PolicyCheck {
            what: what.clone(),
            predicate: predicate.clone(),
            value: *value,
        })
        .collect();
    let predicate = if rls_applies {
        effective(&checks)
    } else {
        "true".to_owned()
    };
    let policies_pass = !rls_applies || checks.iter().all(|c| c.value == Some(true));

    let missing: Vec<&str> = required_privileges(command)
        .iter()
        .filter(|(i, _)| !table.privileges[*i])
        .map(|(_, p)| *p)
        .collect();
    let privileges_ok = table.superuser || missing.is_empty();

    let mut reasons = Vec::new();
    if table.superuser {
        reasons.push(format!(
            "role {} is a superuser: it bypasses privileges and row-level security",
            table.role
        ));
    } else if !privileges_ok {
        reasons.push(format!(
            "role {} lacks the {} privilege on {display}, so Postgres refuses the statement \
             before any policy is consulted",
            table.role,
            missing.join(" and ")
        ));
    }
    if !table.superuser {
        if !table.rls_enabled {
            reasons.push(format!(
                "row-level security is not enabled on {display}: every row is {}",
                verb(command)
            ));
        } else if table.bypass {
            reasons.push(format!(
                "role {} has BYPASSRLS: policies do not apply",
                table.role
            ));
        } else if table.owner && !table.forced {
            reasons.push(format!(
                "role {} owns {display} (or has its owner's privileges) and RLS is not FORCEd: \
                 policies do not apply",
                table.role
            ));
        } else if policies_pass {
            reasons.push(format!("the row passes every check: {}", summary(&checks)));
        } else {
            let failed: Vec<String> = checks
                .iter()
                .filter(|c| c.value != Some(true))
                .map(|c| {
                    format!(
                        "{} is {}",
                        c.what,
                        c.value.map_or("NULL", |v| if v { "true" } else { "false" })
                    )
                })
                .collect();
            let none = if applicable.iter().all(|p| !p.permissive) {
                " (no permissive policy applies to this role and command: default deny)"
            } else {
                ""
            };
            reasons.push(format!(
                "denied by row-level security{none}: {}",
                failed.join("; ")
            ));
        }
    }

    Ok(PolicyVerdict {
        role: table.role,
        rls_enabled: table.rls_enabled,
        forced: table.forced,
        rls_applies,
        applicable,
        predicate,
        checks,
        defaults,
        allowed: privileges_ok && policies_pass,
        reason: reasons.join("; "),
    })
}

fn verb(command: Command) -> &'static str {
    match command {
        Command::Select => "visible to roles with SELECT",
        Command::Insert => "accepted from roles with INSERT",
        Command::Update => "updatable by roles with UPDATE",
        Command::Delete => "deletable by roles with DELETE",
    }
}

fn summary(checks: &[PolicyCheck]) -> String {
    checks
        .iter()
        .map(|c| c.what.clone())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Indexes into `Table::privileges` (SELECT, INSERT, UPDATE, DELETE) the command needs.
fn required_privileges(command: Command) -> &'static [(usize, &'static str)] {
    match command {
        Command::Select => &[(0, "SELECT")],
        Command::Insert => &[(1, "INSERT")],
        Command::Update => &[(2, "UPDATE"), (0, "SELECT")],
        Command::Delete => &[(3, "DELETE"), (0, "SELECT")],
    }
}

/// The checks AND-ed into one predicate (each already parenthesised).
fn effective(checks: &[PolicyCheck]) -> String {
    let parts: BTreeSet<&str> = checks.iter().map(|c| c.predicate.as_str()).collect();
    if parts.contains("false") {
        return "false".to_owned();
    }
    let parts: Vec<&str> = checks
        .iter()
        .map(|c| c.predicate.as_str())
        .filter(|p| *p != "true")
        .collect();
    if parts.is_empty() {
        "true".to_owned()
    } else {
        parts.join(" AND ")
    }
}

/// One command type's combination: `(p1) OR (p2)` of the permissive policies' expressions,
/// AND-ed with each restrictive one; `false` without a permissive expression (default deny).
/// Policies whose needed expression is absent do not take part, as in Postgres.
fn combine(
    policies: &[Policy],
    applies: impl Fn(&Policy) -> bool,
    expr: impl Fn(&PolicyRef) -> Option<String>,
) -> String {
    let mut permissive = Vec::new();
    let mut restrictive = Vec::new();
    for p in policies.iter().filter(|p| applies(p)) {
        if let Some(e) = expr(&p.reference) {
            let e = parenthesised(&e);
            if p.reference.permissive {
                permissive.push(e);
            } else {
                restrictive.push(e);
            }
        }
    }
    if permissive.is_empty() {
        return "false".to_owned();
    }
    let mut parts = vec![if permissive.len() == 1 {
        permissive.remove(0)
    } else {
        format!("({})", permissive.join(" OR "))
    }];
    parts.extend(restrictive);
    parts.join(" AND ")
}

/// `expr` in parentheses, unless it already is one parenthesised whole (Postgres prints most
/// policy expressions that way), so combined predicates stay readable.
fn parenthesised(expr: &str) -> String {
    let trimmed = expr.trim();
    if enclosed(trimmed) {
        trimmed.to_owned()
    } else {
        format!("({trimmed})")
    }
}

/// Whether the first `(` of `s` closes at its last character, skipping quoted text.
fn enclosed(s: &str) -> bool {
    if !s.starts_with('(') || !s.ends_with(')') {
        return false;
    }
    let (mut depth, mut single, mut double) = (0usize, false, false);
    for (i, c) in s.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '(' if !single && !double => depth += 1,
            ')' if !single && !double => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1 == s.len();
                }
            }
            _ => {}
        }
    }
    false
}

async fn read_table(client: &Client, schema: &str, name: &str) -> Result<Table, PolicyError> {
    // Runs after SET LOCAL ROLE: current_user is the role the verdict is for.
    let sql = "SELECT c.oid, c.relrowsecurity, c.relforcerowsecurity, \
                      pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE'), \
                      r.rolsuper, r.rolbypassrls, current_user::text, \
                      pg_catalog.has_table_privilege(c.oid, 'SELECT'), \
                      pg_catalog.has_table_privilege(c.oid, 'INSERT'), \
                      pg_catalog.has_table_privilege(c.oid, 'UPDATE'), \
                      pg_catalog.has_table_privilege(c.oid, 'DELETE') \
               FROM pg_catalog.pg_class c \
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
               JOIN pg_catalog.pg_roles r ON r.rolname = current_user \
               WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')";
    let rows = client
        .query(sql, &[&schema, &name])
        .await
        .map_err(|e| db(&e, sql))?;
    let Some(r) = rows.first() else {
        return Err(PolicyError::TableNotFound {
            schema: schema.to_owned(),
            name: name.to_owned(),
        });
    };
    let get = |i: usize| -> Result<bool, PolicyError> {
        r.try_get(i)
            .map_err(|e| SessionError::Unexpected(e.to_string()).into())
    };
    Ok(Table {
        oid: r
            .try_get(0)
            .map_err(|e| SessionError::Unexpected(e.to_string()))?,
        rls_enabled: get(1)?,
        forced: get(2)?,
        owner: get(3)?,
        superuser: get(4)?,
        bypass: get(5)?,
        role: r
            .try_get(6)
            .map_err(|e| SessionError::Unexpected(e.to_string()))?,
        privileges: [get(7)?, get(8)?, get(9)?, get(10)?],
    })
}

struct ColumnInfo {
    name: String,
    default: Option<String>,
}

async fn read_columns(client: &Client, oid: u32) -> Result<Vec<ColumnInfo>, PolicyError> {
    // Identity columns draw from a sequence and generated columns have no default to apply.
    let sql = "SELECT a.attname::text, \
                      CASE WHEN a.attidentity = '' AND a.attgenerated = '' \
                           THEN pg_catalog.pg_get_expr(d.adbin, d.adrelid) END \
               FROM pg_catalog.pg_attribute a \
               LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
               WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
               ORDER BY a.attnum";
    let rows = client.query(sql, &[&oid]).await.map_err(|e| db(&e, sql))?;
    rows.iter()
        .map(|r| {
            Ok(ColumnInfo {
                name: r.try_get(0)?,
                default: r.try_get(1)?,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(|e| SessionError::Unexpected(e.to_string()).into())
}

async fn read_policies(client: &Client, oid: u32) -> Result<Vec<Policy>, PolicyError> {
    // polroles holds 0 for PUBLIC. pg_has_role(…, 'USAGE') is Postgres' has_privs_of_role,
    // the test its row security code uses.
    let sql = "SELECT p.polname::text, p.polpermissive, p.polcmd::text, \
                      ARRAY(SELECT CASE WHEN r = 0 THEN 'public' \
                                        ELSE pg_catalog.pg_get_userbyid(r)::text END \
                            FROM pg_catalog.unnest(p.polroles) AS r ORDER BY 1), \
                      pg_catalog.pg_get_expr(p.polqual, p.polrelid), \
                      pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) \
               FROM pg_catalog.pg_policy p \
               WHERE p.polrelid = $1 \
                 AND (0 = ANY (p.polroles) OR EXISTS ( \
                      SELECT 1 FROM pg_catalog.unnest(p.polroles) AS r \
                      WHERE r <> 0 AND pg_catalog.pg_has_role(current_user, r, 'USAGE'))) \
               ORDER BY p.polname";
    let rows = client.query(sql, &[&oid]).await.map_err(|e| db(&e, sql))?;
    rows.iter()
        .map(|r| {
            let cmd: String = r.try_get(2)?;
            Ok(Policy {
                reference: PolicyRef {
                    name: r.try_get(0)?,
                    permissive: r.try_get(1)?,
                    command: match cmd.as_str() {
                        "r" => "SELECT",
                        "a" => "INSERT",
                        "w" => "UPDATE",
                        "d" => "DELETE",
                        _ => "ALL",
                    }
                    .to_owned(),
                    roles: r.try_get(3)?,
                    using: r.try_get(4)?,
                    with_check: r.try_get(5)?,
                },
                cmd,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(|e| SessionError::Unexpected(e.to_string()).into())
}

fn db(e: &tokio_postgres::Error, sql: &str) -> PolicyError {
    SessionError::Postgres {
        failure: Box::new(pg_failure(e)),
        sql: sql.to_owned(),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, permissive: bool, cmd: &str, using: Option<&str>) -> Policy {
        Policy {
            reference: PolicyRef {
                name: name.into(),
                permissive,
                command: cmd.into(),
                roles: vec!["public".into()],
                using: using.map(str::to_owned),
                with_check: None,
            },
            cmd: cmd.into(),
        }
    }

    #[test]
    fn combination_follows_postgres() {
        let ps = vec![
            policy("a", true, "*", Some("x = 1")),
            policy("b", true, "r", Some("y = 2")),
            policy("c", false, "r", Some("z")),
            policy("d", true, "*", None),
        ];
        let all = combine(&ps, |_| true, |p| p.using.clone());
        assert_eq!(all, "((x = 1) OR (y = 2)) AND (z)");
        assert!(enclosed("(a = ')(')"));
        assert!(!enclosed("(a) AND (b)"));
        assert!(!enclosed("(\")\" = 1) OR (b)"));
        assert_eq!(parenthesised("(NOT secret)"), "(NOT secret)");
        assert_eq!(parenthesised("f(x)"), "(f(x))");
        let only_restrictive = combine(&ps, |p| p.reference.name == "c", |p| p.using.clone());
        assert_eq!(only_restrictive, "false");
        let none = combine(&ps, |p| p.reference.name == "d", |p| p.using.clone());
        assert_eq!(none, "false");
    }

    #[test]
    fn commands_parse() {
        assert_eq!("update".parse::<Command>(), Ok(Command::Update));
        assert!("merge".parse::<Command>().is_err());
    }
}
