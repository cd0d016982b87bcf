//! The MCP tools: one handler per MCP session, each tool one call into the embedding API.
//!
//! Every session shares the one [`Lockplane`] runtime (and so the ledger, the per-database
//! actors and the shadow cluster); what is per session is the [`SessionContext`] that
//! `set_context` sets and `apply_sql`, `explain_sql` and `policy_evaluate` run under. A
//! failure is a tool result with `isError: true`, the runtime's message (which says what to do
//! next, with the next tool to call where one applies) as text, and `{"error": {"code",
//! "message", "next", "confirmation"}}` as structured content, which every output schema
//! admits (see [`super::schema`]): the session carries on. Every answer goes through
//! [`super::answer::finish`] (argument errors get their code; the size is bounded).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use lockplane_actors::{DatabaseId, Lockplane};
use lockplane_engine::policy::Command as PolicyCommand;
use lockplane_engine::session::SessionContext;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::{IntoCallToolResult, ToolCallContext};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ProtocolVersion, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_handler, tool_router, Json, RoleServer, ServerHandler};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{answer, schema};

/// How many audit entries `audit_log` returns when the caller does not say.
const DEFAULT_AUDIT_LIMIT: usize = 50;
/// The most `audit_log` returns in one call (the answer goes into an agent's context).
const MAX_AUDIT_LIMIT: usize = 1000;

/// A tool call that failed: a stable code and a message that says what to do next.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ToolError {
    /// Machine-readable kind (`needs_confirmation`, `stale_plan`, `sql_refused`, …).
    pub code: String,
    /// For the agent: what went wrong and what to do next.
    pub message: String,
    /// The next step in this server's tool names, where the runtime's message speaks of
    /// operations generically ("propose again").
    pub next: Option<Cow<'static, str>>,
    /// What to pass as `confirm` once the agent decides to go ahead (a plan id, or the
    /// confirmation id bound to an exact SQL text), so it need not be parsed out of `message`.
    pub confirmation: Option<String>,
    /// For `result_too_large`: the answer's small top-level fields (ids, hashes, seq, counts),
    /// so an agent learns what the operation did even though the whole answer was cut.
    pub partial: Option<Box<Value>>,
}

impl ToolError {
    pub(crate) fn new(code: &str, message: impl Into<String>) -> ToolError {
        ToolError {
            code: code.to_owned(),
            message: message.into(),
            next: next_step(code).map(Cow::Borrowed),
            confirmation: None,
            partial: None,
        }
    }
}

/// The next step after `apply_sql` refused a destructive statement.
const SQL_CONFIRM_NEXT: &str = "if the statement is intended, call apply_sql again with exactly \
                                the same sql and confirm set to the `confirmation` given";

/// What an agent should call next after an error of kind `code`.
fn next_step(code: &str) -> Option<&'static str> {
    Some(match code {
        "needs_confirmation" => {
            "review the plan's hazards, then call confirm_plan with its plan_id and apply_plan \
             again (or call apply_plan with confirm set to the plan_id)"
        }
        "wrong_confirmation" => "call apply_plan with confirm set to exactly the plan_id",
        "stale_plan" => {
            "call introspect_catalog, then diff_catalog again with your desired document, and \
             apply the new plan"
        }
        "unknown_plan" => "call list_plans for the plan ids, or diff_catalog to propose one",
        "invalid_document" => "fix the document at the positions given and call diff_catalog again",
        "shadow_failed" | "plan_refused" => "change the document and call diff_catalog again",
        "conflict" => {
            "call introspect_catalog, write the change you want on that catalog (base: its \
             catalog_hash), and call diff_catalog once with that single document"
        }
        "cannot_merge" => {
            "call diff_catalog once with a single document holding the change you want"
        }
        "unknown_base" => {
            "call introspect_catalog and redo your change on that catalog with base: its \
             catalog_hash (or remove base: to make live match the document), then call \
             diff_catalog again"
        }
        "not_pending" => "call list_plans to see where the plan stands",
        "tampered" => "call verify_ledger and stop applying until it is resolved",
        "busy" => "another apply holds the database's lock: wait, then call apply_plan again",
        "access_denied" => {
            "review the plan (list_plans); a server in schema access mode, or an operator with \
             the lockplane CLI, applies it"
        }
        "role_required" => "call set_context with role set to one of the allowed roles",
        "needs_session" => {
            "pass `context` to policy_evaluate instead, or connect with a protocol version \
             that has sessions (2025-11-25 or earlier) to use set_context"
        }
        _ => return None,
    })
}

impl From<lockplane_actors::Error> for ToolError {
    fn from(e: lockplane_actors::Error) -> ToolError {
        use lockplane_actors::Error as E;
        use lockplane_engine::session::SessionError as S;
        let mut error = ToolError::new(e.code(), e.to_string());
        match e {
            // "Confirm and call again" is a different next step from "send another statement".
            E::Session(S::NeedsConfirmation {
                confirmation_id, ..
            }) => {
                error.next = Some(Cow::Borrowed(SQL_CONFIRM_NEXT));
                error.confirmation = Some(confirmation_id);
            }
            E::Session(S::WrongConfirmation {
                confirmation_id, ..
            }) => {
                error.next = Some(Cow::Borrowed(SQL_CONFIRM_NEXT));
                error.confirmation = Some(confirmation_id);
            }
            E::NeedsConfirmation { plan_id, .. } | E::WrongConfirmation { plan_id, .. } => {
                error.confirmation = Some(plan_id);
            }
            _ => {}
        }
        error
    }
}

impl IntoCallToolResult for ToolError {
    /// A tool-level error (`isError: true`), never a protocol error: agents read tool errors
    /// and act on them, while protocol errors tend to end the call chain.
    fn into_call_tool_result(self) -> Result<CallToolResponse, rmcp::ErrorData> {
        Ok(self.into_result().into())
    }
}

impl ToolError {
    /// The tool result: `isError: true`, the message with its next step, confirmation and code
    /// as text (what most clients show the model), and `{"error": {...}}` as structured content
    /// (which every output schema admits, see `schema::with_error`).
    pub(crate) fn into_result(self) -> CallToolResult {
        let mut text = self.message.clone();
        if let Some(next) = &self.next {
            text.push_str(&format!("\nNext: {next}."));
        }
        if let Some(confirmation) = &self.confirmation {
            text.push_str(&format!("\nConfirmation: {confirmation}"));
        }
        text.push_str(&format!(" [{}]", self.code));
        let mut result = CallToolResult::error(vec![ContentBlock::text(text)]);
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(next) = self.next {
            error["next"] = json!(next);
        }
        if let Some(confirmation) = self.confirmation {
            error["confirmation"] = json!(confirmation);
        }
        if let Some(partial) = self.partial {
            error["partial"] = *partial;
        }
        result.structured_content = Some(json!({ "error": error }));
        result
    }
}

/// `serde_json::to_value` for results the engine defines (their fields go out as they are).
fn to_json(value: &impl Serialize) -> Result<Value, ToolError> {
    serde_json::to_value(value)
        .map_err(|e| ToolError::new("internal", format!("cannot encode the result: {e}")))
}

// ---- parameters -----------------------------------------------------------------------------

/// `diff_catalog` input.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct DiffParams {
    /// The complete desired schema as a Lockplane DSL document, YAML or JSON text
    /// (`version: 1`, `schemas: {name: {tables: …}}`). Schemas it names are owned by it
    /// completely; schemas it does not mention are left as they are. With `base:
    /// "sha3-256:…"` (the catalog_hash the document was read at), what the document did not
    /// change keeps live's state.
    pub desired: String,
    /// A name for the document, used in error positions (default `desired.yaml`).
    #[serde(default)]
    pub name: Option<String>,
}

/// `apply_plan` input.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ApplyPlanParams {
    /// The plan's id (`sha3-256:…`) from diff_catalog, merge_plans or list_plans.
    pub plan_id: String,
    /// For a plan with `requires_confirmation`: the plan's exact id again, after reviewing its
    /// hazards (or call confirm_plan first). Leave unset otherwise.
    #[serde(default)]
    pub confirm: Option<String>,
    /// Continue an apply of this plan that stopped after its transaction committed (a step
    /// run alone failed, e.g. an index build): runs what remains after the last phase the
    /// ledger records as applied.
    #[serde(default)]
    pub resume: bool,
}

/// `apply_sql` input.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ApplySqlParams {
    /// Exactly one SQL statement. It must pass the SQL guard of this server's access mode.
    pub sql: String,
    /// For a destructive statement: the confirmation id the previous refusal named (bound to
    /// the exact SQL text). Leave unset otherwise.
    #[serde(default)]
    pub confirm: Option<String>,
}

/// `explain_sql` input.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ExplainSqlParams {
    /// Exactly one SQL statement to explain (never executed unless `analyze` is set, and then
    /// only when read-only, in a rolled-back transaction).
    pub sql: String,
    /// Run `EXPLAIN ANALYZE` (read-only statements only).
    #[serde(default)]
    pub analyze: bool,
}

/// The command a policy verdict is for.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum CommandParam {
    /// Reading the row.
    #[serde(alias = "select")]
    Select,
    /// Inserting the row.
    #[serde(alias = "insert")]
    Insert,
    /// Updating the row.
    #[serde(alias = "update")]
    Update,
    /// Deleting the row.
    #[serde(alias = "delete")]
    Delete,
}

impl From<CommandParam> for PolicyCommand {
    fn from(c: CommandParam) -> PolicyCommand {
        match c {
            CommandParam::Select => PolicyCommand::Select,
            CommandParam::Insert => PolicyCommand::Insert,
            CommandParam::Update => PolicyCommand::Update,
            CommandParam::Delete => PolicyCommand::Delete,
        }
    }
}

/// A session context: who SQL runs as, and the settings row-level security policies read.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
pub struct ContextParams {
    /// Role to act as (`SET LOCAL ROLE`); must be one this deployment allows. Unset: the
    /// server's own connection user.
    #[serde(default)]
    pub role: Option<String>,
    /// `app.user_id` (what `user_id()` in policies returns). Unset: empty.
    #[serde(default)]
    pub user_id: Option<String>,
    /// `app.tenant_id` (what `tenant_id()` in policies returns). Unset: empty.
    #[serde(default)]
    pub tenant_id: Option<String>,
}

impl From<ContextParams> for SessionContext {
    fn from(c: ContextParams) -> SessionContext {
        SessionContext {
            role: c.role,
            user_id: c.user_id,
            tenant_id: c.tenant_id,
        }
    }
}

impl From<&SessionContext> for ContextParams {
    fn from(c: &SessionContext) -> ContextParams {
        ContextParams {
            role: c.role.clone(),
            user_id: c.user_id.clone(),
            tenant_id: c.tenant_id.clone(),
        }
    }
}

/// `policy_evaluate` input.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct PolicyEvaluateParams {
    /// The table, `schema.name` or `name` (then schema `public`).
    pub table: String,
    /// The command to decide.
    pub command: CommandParam,
    /// The row: column name → value (JSON values; strings are cast to the column type).
    #[serde(default)]
    pub row: serde_json::Map<String, Value>,
    /// A context for this evaluation only; default: this session's context (set_context).
    #[serde(default)]
    pub context: Option<ContextParams>,
}

/// `plan_online` input.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct PlanOnlineParams {
    /// The desired schema (YAML or JSON DSL): the live schema with column renames
    /// (`renamed_from`), type changes and new `not_null`s of one table, each with `up:` (the
    /// new value from the old row) and, for type changes, `down:` (the old value from the new
    /// row).
    pub desired: String,
    /// The migration's version (lower-case letters, digits, `_`): the new application puts
    /// the version schema `<schema>_<version>` first in its search_path.
    pub version: String,
    /// A file name for error positions (default `desired.yaml`).
    #[serde(default)]
    pub name: Option<String>,
}

/// `start_online` input.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct StartOnlineParams {
    /// The version given to plan_online.
    pub version: String,
    /// Rows per backfill batch (default 5000).
    #[serde(default)]
    pub batch_size: Option<u32>,
}

/// `complete_online` / `rollback_online` input.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct OnlineVersionParams {
    /// The online migration's version.
    pub version: String,
}

/// `plan_online` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PlanOnlineOutput {
    /// The migration and the SQL of each phase: `{migration, expand, complete{validate,
    /// contract}, rollback, estimated_rows, base_hash}`.
    #[schemars(with = "JsonObject")]
    pub plan: Value,
    /// The schema the new application puts first in its search_path.
    pub version_schema: String,
    /// Seq of the `OnlineMigrated` (planned) record.
    pub seq: u64,
}

/// `start_online` / `complete_online` / `rollback_online` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct OnlineStepOutput {
    /// The phase reached: `expanded` (backfill unfinished), `backfilled`, `completed`,
    /// `rolled_back`.
    pub phase: String,
    /// `{version, table, expanded, rows_filled, rows_filled_total, before_hash, after_hash}`.
    #[schemars(with = "JsonObject")]
    pub outcome: Value,
    /// Seq of the `OnlineMigrated` record.
    pub seq: u64,
}

/// `confirm_plan` input.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ConfirmPlanParams {
    /// The plan's id (`sha3-256:…`).
    pub plan_id: String,
}

/// `merge_plans` input.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct MergePlansParams {
    /// One plan id.
    pub plan_a: String,
    /// The other plan id (made on the same base).
    pub plan_b: String,
}

/// `audit_log` input.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct AuditLogParams {
    /// How many of the latest events to return (default 50, at most 1000).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Include events of every database in the ledger, not just this server's.
    #[serde(default)]
    pub all_databases: bool,
}

// ---- results --------------------------------------------------------------------------------

/// How free-form JSON objects appear in the output schemas (`{"type": "object",
/// "additionalProperties": true}`): engine values that do not derive `JsonSchema`.
type JsonObject = serde_json::Map<String, Value>;

/// `introspect_catalog` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct IntrospectOutput {
    /// The database id (ledger stream).
    pub database: String,
    /// `sha3-256:` + hex of the canonical JSON of `catalog`.
    pub catalog_hash: String,
    /// The catalog manifest (schemas → tables, views, enums, sequences, policies, grants, …).
    #[schemars(with = "JsonObject")]
    pub catalog: Value,
    /// Seq of the `CatalogIntrospected` ledger record.
    pub seq: u64,
}

/// `diff_catalog` / `merge_plans` result: a recorded proposal.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ProposalOutput {
    /// The plan's id: pass it to apply_plan (and confirm_plan).
    pub plan_id: String,
    /// Whether applying needs an explicit confirmation (data loss or unseen dependents).
    pub requires_confirmation: bool,
    /// The catalog hash the database will have after the plan.
    pub predicted_hash: String,
    /// The plan: `steps` (SQL, lock, hazards), `hazards`, `base_hash`, `target_hash`.
    #[schemars(with = "JsonObject")]
    pub plan: Value,
    /// What the shadow dry run proved.
    pub shadow: String,
    /// Seq of the ledger record.
    pub seq: u64,
}

/// `apply_plan` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ApplyPlanOutput {
    /// The plan applied (a rebased plan when `rebased_from` is set).
    pub plan_id: String,
    /// The stale plan this one was rebased from.
    pub rebased_from: Option<String>,
    /// The live hash before.
    pub before_hash: String,
    /// The live hash after (verified to be the plan's target).
    pub resulting_hash: String,
    /// What ran, one receipt per phase: `{input, steps[{sql, started_at, duration_ms, rows,
    /// outcome}], timing, hash}`.
    #[schemars(with = "Vec<JsonObject>")]
    pub receipts: Vec<Value>,
    /// Seq of the `PlanApplied` ledger record.
    pub seq: u64,
}

/// `apply_sql` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ApplySqlOutput {
    /// The statement kind (`select`, `insert`, `create_index`, …).
    pub kind: String,
    /// Rows affected or returned.
    pub rows: u64,
    /// Column names, when the statement returned rows.
    pub columns: Vec<String>,
    /// Result rows (at most 1000 and 1 MiB; values over 64 KiB cut), values as Postgres
    /// prints them.
    pub result: Vec<Vec<Option<String>>>,
    /// What was left out of `result` and why, when anything was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncation: Option<String>,
    /// The catalog hash before; absent for a read-only statement (it ran in a READ ONLY
    /// transaction, which cannot change the schema).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before_hash: Option<String>,
    /// The catalog hash after; absent for a read-only statement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resulting_hash: Option<String>,
    /// What ran.
    #[schemars(with = "JsonObject")]
    pub receipt: Value,
    /// Seq of the `SqlApplied` ledger record.
    pub seq: u64,
}

/// `explain_sql` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ExplainOutput {
    /// `EXPLAIN (FORMAT JSON)` output as Postgres returns it (an array of plan objects).
    #[schemars(with = "Vec<JsonObject>")]
    pub plan_json: Value,
}

/// `policy_evaluate` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PolicyOutput {
    /// The effective predicate as SQL (permissive policies OR-ed, restrictive AND-ed).
    pub predicate: String,
    /// Whether the role may run the command on this row (privileges and policies), as
    /// Postgres decided it.
    pub allowed: bool,
    /// Why, in words.
    pub reason: String,
    /// The whole verdict: role, rls_enabled, forced, rls_applies, applicable policies,
    /// checks with their values, defaults applied.
    #[schemars(with = "JsonObject")]
    pub verdict: Value,
}

/// `set_context` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SetContextOutput {
    /// Always true on success.
    pub ok: bool,
    /// The context now in force for this session.
    pub context: ContextParams,
    /// Seq of the `ContextSet` ledger record.
    pub seq: u64,
}

/// `confirm_plan` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ConfirmOutput {
    /// Always true on success.
    pub ok: bool,
    /// The plan confirmed.
    pub plan_id: String,
    /// Seq of the `PlanConfirmed` ledger record.
    pub seq: u64,
}

/// `list_plans` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PlansOutput {
    /// Each plan, oldest first: `plan` (summary with `plan_id`), `proposed_by`, `approval`,
    /// `status` (`{status: proposed|confirmed|stale|applying|applied|failed|superseded…}`).
    #[schemars(with = "Vec<JsonObject>")]
    pub plans: Vec<Value>,
}

/// `verify_ledger` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct VerifyOutput {
    /// True when every record and blob checked out.
    pub ok: bool,
    /// Records walked.
    pub records_checked: u64,
    /// The head's seq.
    pub head_seq: u64,
    /// The head's hash.
    pub head_hash: String,
    /// The first bad record and what is wrong with it.
    pub problems: Vec<String>,
}

/// One audit log entry.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AuditEntryOutput {
    /// The record's seq.
    pub seq: u64,
    /// When (unix microseconds).
    pub at: i64,
    /// The database (stream).
    pub database: String,
    /// The event kind (`PlanProposed`, `PlanApplied`, `SqlApplied`, …).
    pub kind: String,
    /// Who did it.
    pub actor: String,
    /// One line for humans.
    pub summary: String,
    /// The whole event (null when the record could not be decoded).
    #[schemars(with = "Option<JsonObject>")]
    pub event: Value,
}

/// `audit_log` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AuditOutput {
    /// The latest events, oldest first.
    pub entries: Vec<AuditEntryOutput>,
}

/// `check_drift` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DriftOutput {
    /// The hash found live.
    pub live_hash: String,
    /// The hash the ledger last recorded (none before the first introspection).
    pub recorded_hash: Option<String>,
    /// Whether they differ.
    pub drifted: bool,
    /// What differs, object by object.
    pub differences: Vec<String>,
    /// Seq of the `DriftDetected` record, when drift was found.
    pub seq: Option<u64>,
}

// ---- the handler ----------------------------------------------------------------------------

/// What every session of one server shares.
#[derive(Clone)]
pub struct Shared {
    /// The runtime.
    pub runtime: Lockplane,
    /// The database this server manages.
    pub db: DatabaseId,
    /// Who acts, as recorded in the ledger.
    pub actor: String,
    /// The most bytes one tool answer may take (see `answer`).
    pub max_result_bytes: usize,
    /// Served over streamable HTTP, where a context between calls needs an MCP session (with
    /// the handshake-era protocol versions; the 2026-07-28 protocol has none).
    pub http: bool,
    /// Over HTTP, serve the 2026-07-28 protocol too, statelessly (each request a new handler);
    /// else only the handshake-era versions are offered there.
    pub stateless: bool,
}

/// The MCP server handler of one session.
#[derive(Clone)]
pub struct LockplaneMcp {
    shared: Shared,
    /// This session's context; shared by the clones rmcp makes of the handler for one session.
    context: Arc<Mutex<SessionContext>>,
    tool_router: ToolRouter<LockplaneMcp>,
}

impl LockplaneMcp {
    /// A handler for a new session (empty context).
    pub fn new(shared: Shared) -> LockplaneMcp {
        LockplaneMcp {
            shared,
            context: Arc::new(Mutex::new(SessionContext::default())),
            tool_router: router(),
        }
    }

    /// Who the ledger records for a call: the server's `--actor`, and the MCP client's name as
    /// it introduced itself (`initialize`), so confirmations and applies by different agents
    /// stay distinguishable in the audit log.
    ///
    /// The name comes from the request's `_meta` (`io.modelcontextprotocol/clientInfo`, which
    /// 2026-07-28 clients send with every request, there being no handshake), else from the
    /// session's `initialize`.
    fn actor(&self, ctx: &RequestContext<RoleServer>) -> String {
        match ctx.client_info() {
            Some(info) if !info.name.is_empty() => {
                format!("{}/{}", self.shared.actor, info.name)
            }
            _ => self.shared.actor.clone(),
        }
    }

    /// Whether this request is served on its own (HTTP, protocol 2026-07-28 or later), with a
    /// handler made for it alone: nothing set now outlives it.
    fn stateless(&self, ctx: &RequestContext<RoleServer>) -> bool {
        self.shared.http
            && ctx
                .protocol_version()
                .is_some_and(|v| v >= ProtocolVersion::V_2026_07_28)
    }

    fn context(&self) -> SessionContext {
        // A poisoned lock only means a panic elsewhere while holding it; the value is whole.
        self.context
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_session_context(&self, context: SessionContext) {
        *self.context.lock().unwrap_or_else(|p| p.into_inner()) = context;
    }

    fn instructions(&self) -> String {
        let mode = self.shared.runtime.access_mode();
        format!(
            "Lockplane manages the Postgres schema of database `{db}` and records every action \
             in a hash-chained ledger. Workflow for a schema change: (1) introspect_catalog to \
             read the live catalog and its hash; (2) diff_catalog with the complete desired \
             schema (Lockplane DSL, YAML or JSON) to get a plan: SQL steps with locks and \
             hazards, proven on a shadow database and recorded as a proposal; (3) if the plan \
             has requires_confirmation (it can lose data), review its hazards, then \
             confirm_plan (or pass the plan id as `confirm` to apply_plan); (4) apply_plan \
             with the plan id; (5) audit_log / verify_ledger to check what was recorded. A \
             plan made against an older live hash is stale: call diff_catalog again. \
             merge_plans combines two proposals made on the same base; list_plans shows where \
             each plan stands; check_drift compares live with the ledger. For data and ad-hoc \
             SQL: set_context (role, user_id, tenant_id) for this session, then explain_sql, \
             apply_sql (one guarded statement; destructive ones need the confirmation id the \
             refusal names) and policy_evaluate (row-level security verdicts computed by \
             Postgres). Access mode: {mode} ({what}). Tool errors carry a code and say what \
             to do next.",
            db = self.shared.db,
            mode = mode.name(),
            what = match mode {
                lockplane_engine::guard::AccessMode::ReadOnly =>
                    "apply_sql and explain_sql accept queries only",
                lockplane_engine::guard::AccessMode::Data =>
                    "apply_sql also accepts INSERT/UPDATE/DELETE/MERGE, no DDL",
                lockplane_engine::guard::AccessMode::Schema =>
                    "apply_sql also accepts data changes and the DDL Lockplane manages",
            }
        )
    }
}

#[tool_router(router = tool_router)]
impl LockplaneMcp {
    /// Reads the live catalog.
    #[tool(
        description = "Read the live database's catalog: the canonical manifest (schemas, \
                       tables, columns, constraints, indexes, views, enums, sequences, RLS \
                       policies, grants; unsupported objects listed) and its catalog_hash. \
                       Recorded in the ledger. Start here before diff_catalog.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn introspect_catalog(
        &self,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<IntrospectOutput>, ToolError> {
        let i = self
            .shared
            .runtime
            .introspect(&self.shared.db, &self.actor(&ctx))
            .await?;
        Ok(Json(IntrospectOutput {
            database: i.database,
            catalog_hash: i.catalog_hash.to_string(),
            catalog: to_json(&i.catalog)?,
            seq: i.seq,
        }))
    }

    /// Plans a desired document against live and records the proposal.
    #[tool(
        description = "Plan the change from the live schema to a desired schema document \
                       (Lockplane DSL, YAML or JSON text: version: 1, schemas: {name: {tables: \
                       {t: {columns: [{name, type, pk, not_null, default, references}], \
                       indexes, rls}}}}). Returns {plan, predicted_hash, plan_id, \
                       requires_confirmation}: explicit SQL steps with locks and hazards, \
                       proven with their reverse on a shadow database, recorded as a proposal. \
                       A document with `base: <catalog_hash>` (the hash introspect_catalog \
                       returned when you read the schema) keeps what others changed since: \
                       the plan merges base, document and live three ways, and an object both \
                       changed differently is a `conflict`. Nothing is applied: call \
                       apply_plan with the plan_id next.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            open_world_hint = false
        )
    )]
    async fn diff_catalog(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(p): Parameters<DiffParams>,
    ) -> Result<Json<ProposalOutput>, ToolError> {
        let name = p.name.unwrap_or_else(|| "desired.yaml".to_owned());
        let proposal = self
            .shared
            .runtime
            .propose(&self.shared.db, &name, &p.desired, &self.actor(&ctx))
            .await?;
        proposal_output(proposal)
    }

    /// Applies a recorded plan.
    #[tool(
        description = "Apply a recorded plan by plan_id: checks the live hash equals the plan's \
                       base (rebasing when it safely can), takes the database's advisory lock, \
                       runs the steps with timeouts, verifies the target hash, records the \
                       outcome. Returns {resulting_hash, receipts}. A plan with \
                       requires_confirmation must be confirmed first (confirm_plan) or given \
                       its id as `confirm`.",
        annotations(destructive_hint = true, open_world_hint = false)
    )]
    async fn apply_plan(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(p): Parameters<ApplyPlanParams>,
    ) -> Result<Json<ApplyPlanOutput>, ToolError> {
        let runtime = &self.shared.runtime;
        let actor = self.actor(&ctx);
        let a = if p.resume {
            runtime
                .resume(&self.shared.db, &p.plan_id, p.confirm.as_deref(), &actor)
                .await?
        } else {
            runtime
                .apply(&self.shared.db, &p.plan_id, p.confirm.as_deref(), &actor)
                .await?
        };
        Ok(Json(ApplyPlanOutput {
            plan_id: a.plan_id,
            rebased_from: a.rebased_from,
            before_hash: a.before_hash.to_string(),
            resulting_hash: a.resulting_hash.to_string(),
            receipts: a.receipts.iter().map(to_json).collect::<Result<_, _>>()?,
            seq: a.seq,
        }))
    }

    /// Runs one guarded statement under the session context.
    #[tool(
        description = "Run exactly one SQL statement under this session's context (see \
                       set_context), after the SQL guard checks it against the server's access \
                       mode (refusals say why). Destructive statements (DROP, TRUNCATE, DELETE/\
                       UPDATE without WHERE, …) are refused first with a confirmation id: call \
                       again with the same SQL and that id as `confirm`. Returns rows (bounded) \
                       and {resulting_hash, receipt}; recorded in the ledger.",
        annotations(destructive_hint = true, open_world_hint = false)
    )]
    async fn apply_sql(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(p): Parameters<ApplySqlParams>,
    ) -> Result<Json<ApplySqlOutput>, ToolError> {
        let r = self
            .shared
            .runtime
            .apply_sql(
                &self.shared.db,
                &p.sql,
                &self.context(),
                p.confirm.as_deref(),
                &self.actor(&ctx),
            )
            .await?;
        Ok(Json(ApplySqlOutput {
            kind: r.kind,
            rows: r.rows,
            columns: r.columns,
            result: r.result,
            truncation: r.truncation,
            before_hash: r.before_hash.map(|h| h.to_string()),
            resulting_hash: r.resulting_hash.map(|h| h.to_string()),
            receipt: to_json(&r.receipt)?,
            seq: r.seq,
        }))
    }

    /// EXPLAIN of one guarded statement.
    #[tool(
        description = "EXPLAIN (FORMAT JSON) of exactly one guarded SQL statement under this \
                       session's context, in a transaction that is rolled back: never executes \
                       a write. analyze=true runs EXPLAIN ANALYZE, for read-only statements \
                       only. Returns {plan_json}.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn explain_sql(
        &self,
        Parameters(p): Parameters<ExplainSqlParams>,
    ) -> Result<Json<ExplainOutput>, ToolError> {
        let plan_json = self
            .shared
            .runtime
            .explain_sql(&self.shared.db, &p.sql, &self.context(), p.analyze)
            .await?;
        Ok(Json(ExplainOutput { plan_json }))
    }

    /// The RLS verdict for one row.
    #[tool(
        description = "Row-level security verdict for one row: the effective predicate of the \
                       table's policies for the role and command (permissive OR-ed, restrictive \
                       AND-ed) and whether that role may run the command on that row, computed \
                       by Postgres under the context (this session's, or `context`) in a \
                       rolled-back transaction. Returns {predicate, allowed, reason, verdict}.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn policy_evaluate(
        &self,
        Parameters(p): Parameters<PolicyEvaluateParams>,
    ) -> Result<Json<PolicyOutput>, ToolError> {
        let (schema, table) = match p.table.split_once('.') {
            Some((s, t)) => (s.to_owned(), t.to_owned()),
            None => ("public".to_owned(), p.table.clone()),
        };
        let context = match p.context {
            Some(c) => c.into(),
            None => self.context(),
        };
        let v = self
            .shared
            .runtime
            .policy_evaluate(
                &self.shared.db,
                (&schema, &table),
                p.command.into(),
                &p.row,
                &context,
            )
            .await?;
        Ok(Json(PolicyOutput {
            predicate: v.predicate.clone(),
            allowed: v.allowed,
            reason: v.reason.clone(),
            verdict: to_json(&v)?,
        }))
    }

    /// Sets this session's context.
    #[tool(
        description = "Set this session's context: the role SQL runs as (one the deployment \
                       allows) and app.user_id / app.tenant_id (what user_id() and tenant_id() \
                       in policies return). Applies to apply_sql, explain_sql and \
                       policy_evaluate of this MCP session only; other sessions are not \
                       affected. Unset fields are cleared. Returns {ok}.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn set_context(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(p): Parameters<ContextParams>,
    ) -> Result<Json<SetContextOutput>, ToolError> {
        if self.stateless(&ctx) {
            return Err(ToolError::new(
                "needs_session",
                "set_context keeps a context for the calls that follow, and this request came \
                 over HTTP with the 2026-07-28 protocol, which has no sessions: every request \
                 is served on its own, so the context would be forgotten at once",
            ));
        }
        let context: SessionContext = p.into();
        let seq = self
            .shared
            .runtime
            .set_context(&self.shared.db, &context, &self.actor(&ctx))
            .await?;
        let shown = ContextParams::from(&context);
        self.set_session_context(context);
        Ok(Json(SetContextOutput {
            ok: true,
            context: shown,
            seq,
        }))
    }

    /// Records a confirmation.
    #[tool(
        description = "Explicitly confirm one exact plan (by plan_id) that requires \
                       confirmation, after reviewing its hazards; recorded in the ledger. Then \
                       call apply_plan.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn confirm_plan(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(p): Parameters<ConfirmPlanParams>,
    ) -> Result<Json<ConfirmOutput>, ToolError> {
        let seq = self
            .shared
            .runtime
            .confirm(&self.shared.db, &p.plan_id, &self.actor(&ctx))
            .await?;
        Ok(Json(ConfirmOutput {
            ok: true,
            plan_id: p.plan_id,
            seq,
        }))
    }

    /// Lists plans.
    #[tool(
        description = "List the database's plans, oldest first, with where each stands \
                       (proposed, confirmed, stale, applying, applied, failed, superseded) and \
                       who proposed it.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_plans(&self) -> Result<Json<PlansOutput>, ToolError> {
        let plans = self.shared.runtime.list_plans(&self.shared.db).await?;
        Ok(Json(PlansOutput {
            plans: plans.iter().map(to_json).collect::<Result<_, _>>()?,
        }))
    }

    /// Merges two proposals.
    #[tool(
        description = "Three-way merge two proposals made on the same base (plan_a, plan_b) \
                       into one new proposal that supersedes both: changes to different objects \
                       combine; different changes to the same object are a conflict error \
                       naming both sides. Returns the merged proposal like diff_catalog.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            open_world_hint = false
        )
    )]
    async fn merge_plans(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(p): Parameters<MergePlansParams>,
    ) -> Result<Json<ProposalOutput>, ToolError> {
        let proposal = self
            .shared
            .runtime
            .merge(&self.shared.db, &p.plan_a, &p.plan_b, &self.actor(&ctx))
            .await?;
        proposal_output(proposal)
    }

    /// Verifies the ledger.
    #[tool(
        description = "Verify the whole ledger: walk the hash chain and every blob the events \
                       refer to. Returns {ok, records_checked, head_seq, head_hash, problems}.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn verify_ledger(&self) -> Result<Json<VerifyOutput>, ToolError> {
        let v = self.shared.runtime.verify_ledger().await?;
        Ok(Json(VerifyOutput {
            ok: v.ok,
            records_checked: v.records_checked,
            head_seq: v.head_seq,
            head_hash: v.head_hash,
            problems: v.problems,
        }))
    }

    /// Reads the audit log.
    #[tool(
        description = "The latest ledger events of this database (or all databases), oldest \
                       first: what was introspected, proposed, confirmed, applied, run as SQL, \
                       which context was set, by whom. limit defaults to 50.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn audit_log(
        &self,
        Parameters(p): Parameters<AuditLogParams>,
    ) -> Result<Json<AuditOutput>, ToolError> {
        let limit = p.limit.unwrap_or(DEFAULT_AUDIT_LIMIT).min(MAX_AUDIT_LIMIT);
        let db = (!p.all_databases).then_some(&self.shared.db);
        let entries = self.shared.runtime.audit_log(db, limit).await?;
        Ok(Json(AuditOutput {
            entries: entries
                .into_iter()
                .map(|e| AuditEntryOutput {
                    seq: e.seq,
                    at: e.at,
                    database: e.database,
                    kind: e.kind,
                    actor: e.actor,
                    summary: e.summary,
                    event: e.event,
                })
                .collect(),
        }))
    }

    /// Plans an online migration.
    #[tool(
        description = "Plan an online (expand/contract) migration of version `version` from \
                       the live schema to `desired`: column renames, type changes and new NOT \
                       NULLs of one table, rolled out while the old application (base schema) \
                       and the new one (version schema first in its search_path) run side by \
                       side. Refuses other changes and changes without their up/down, naming \
                       them. Returns the SQL of expand, complete and rollback; recorded. Then \
                       start_online.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            open_world_hint = false
        )
    )]
    async fn plan_online(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(p): Parameters<PlanOnlineParams>,
    ) -> Result<Json<PlanOnlineOutput>, ToolError> {
        let name = p.name.unwrap_or_else(|| "desired.yaml".to_owned());
        let plan = self
            .shared
            .runtime
            .plan_online(
                &self.shared.db,
                &name,
                &p.desired,
                &p.version,
                &self.actor(&ctx),
            )
            .await?;
        Ok(Json(PlanOnlineOutput {
            version_schema: plan.version_schema.clone(),
            seq: plan.seq,
            plan: to_json(&plan)?,
        }))
    }

    /// Starts or resumes an online migration.
    #[tool(
        description = "Start (or resume) the online migration `version` planned with \
                       plan_online: expand (new columns, sync trigger, version schema) in one \
                       short transaction, then backfill existing rows in keyset batches. \
                       Resumable: call again after a failure. Returns the phase reached \
                       (`backfilled` when done); recorded. Then deploy the new application and \
                       call complete_online (or rollback_online).",
        annotations(
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn start_online(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(p): Parameters<StartOnlineParams>,
    ) -> Result<Json<OnlineStepOutput>, ToolError> {
        let o = self
            .shared
            .runtime
            .start_online_version(
                &self.shared.db,
                &p.version,
                p.batch_size.unwrap_or(5_000).max(1),
                None,
                &self.actor(&ctx),
            )
            .await?;
        online_output(&o)
    }

    /// Completes an online migration.
    #[tool(
        description = "Complete the online migration `version` once every application reads \
                       the new shape: validate its NOT NULLs, drop the old columns and the sync \
                       trigger, give the new columns their final names. Refused while rows are \
                       unfilled. Drops the old representation: the old application stops \
                       working. Recorded.",
        annotations(destructive_hint = true, open_world_hint = false)
    )]
    async fn complete_online(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(p): Parameters<OnlineVersionParams>,
    ) -> Result<Json<OnlineStepOutput>, ToolError> {
        let o = self
            .shared
            .runtime
            .complete_online(&self.shared.db, &p.version, &self.actor(&ctx))
            .await?;
        online_output(&o)
    }

    /// Rolls an online migration back.
    #[tool(
        description = "Roll the online migration `version` back before it is completed: drop \
                       the version schema, the sync trigger and the new columns. The old \
                       columns were never touched, so the old application loses nothing; the \
                       new application's writes survive in them. Recorded.",
        annotations(destructive_hint = true, open_world_hint = false)
    )]
    async fn rollback_online(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(p): Parameters<OnlineVersionParams>,
    ) -> Result<Json<OnlineStepOutput>, ToolError> {
        let o = self
            .shared
            .runtime
            .rollback_online(&self.shared.db, &p.version, &self.actor(&ctx))
            .await?;
        online_output(&o)
    }

    /// Checks drift.
    #[tool(
        description = "Compare the live catalog with what the ledger last recorded; records \
                       drift when they differ. Returns {drifted, live_hash, recorded_hash, \
                       differences}.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            open_world_hint = false
        )
    )]
    async fn check_drift(
        &self,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<DriftOutput>, ToolError> {
        let d = self
            .shared
            .runtime
            .check_drift(&self.shared.db, &self.actor(&ctx))
            .await?;
        Ok(Json(DriftOutput {
            live_hash: d.live_hash.to_string(),
            recorded_hash: d.recorded_hash.map(|h| h.to_string()),
            drifted: d.drifted,
            differences: d.differences,
            seq: d.seq,
        }))
    }
}

/// The tools with their schemas as clients see them: portable, and every output schema
/// admitting the error object (see `schema`). Computed once.
fn router() -> ToolRouter<LockplaneMcp> {
    type Schemas = HashMap<String, (Arc<JsonObject>, Option<Arc<JsonObject>>)>;
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    let mut router = LockplaneMcp::tool_router();
    let schemas = SCHEMAS.get_or_init(|| {
        router
            .map
            .values()
            .map(|route| {
                let tool = &route.attr;
                let mut input = Value::Object(tool.input_schema.as_ref().clone());
                schema::portable(&mut input);
                let output = tool.output_schema.as_ref().map(|output| {
                    let mut output = Value::Object(output.as_ref().clone());
                    schema::portable(&mut output);
                    schema::with_error(&output)
                });
                let object = |v: Value| match v {
                    Value::Object(map) => Arc::new(map),
                    _ => Arc::new(JsonObject::new()),
                };
                (tool.name.to_string(), (object(input), output.map(object)))
            })
            .collect()
    });
    for route in router.map.values_mut() {
        if let Some((input, output)) = schemas.get(route.attr.name.as_ref()) {
            route.attr.input_schema = input.clone();
            route.attr.output_schema = output.clone();
        }
    }
    router
}

fn online_output(o: &lockplane_actors::OnlineOutcome) -> Result<Json<OnlineStepOutput>, ToolError> {
    Ok(Json(OnlineStepOutput {
        phase: o.phase.name().to_owned(),
        outcome: to_json(o)?,
        seq: o.seq,
    }))
}

fn proposal_output(p: lockplane_actors::Proposal) -> Result<Json<ProposalOutput>, ToolError> {
    Ok(Json(ProposalOutput {
        plan_id: p.plan.plan_id.clone(),
        requires_confirmation: p.plan.requires_confirmation,
        predicted_hash: p.predicted_hash.to_string(),
        plan: to_json(&p.plan)?,
        shadow: p.shadow,
        seq: p.seq,
    }))
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for LockplaneMcp {
    /// The router's call, then `answer::finish`: argument errors with their code, and the
    /// answer bounded in size.
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, rmcp::ErrorData> {
        let name = request.name.to_string();
        let call = ToolCallContext::new(self, request, context);
        let response = self.tool_router.call(call).await;
        answer::finish(&name, response, self.shared.max_result_bytes)
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("lockplane", env!("CARGO_PKG_VERSION")))
            .with_instructions(self.instructions())
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        if self.shared.http && !self.shared.stateless {
            Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2025_11_25))
        } else {
            Cow::Borrowed(ProtocolVersion::KNOWN_VERSIONS)
        }
    }
}
