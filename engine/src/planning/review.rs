//! Reading a plan's SQL back with Postgres' own parser, before it runs.
//!
//! A plan file is text a user (or an agent) can edit. Its id proves only that the content is
//! self-consistent, since anyone can recompute it. [`review`] therefore checks what the
//! statements themselves say, independently of the flags around them:
//!
//! - each step holds exactly one statement (an appended `; DROP TABLE …` is two);
//! - the statement is of a kind the planner writes (DDL on the objects Lockplane manages, and
//!   Lockplane's own helper installation, statement for statement); anything else (DML, `DO`,
//!   functions other than the helpers, role changes, …) is refused;
//! - whether it can lose data (dropping a table, schema, sequence or type, dropping a column,
//!   any `CASCADE`): such a plan needs confirmation whatever its `requires_confirmation` says.
//!
//! What this module does not do: decide whether a type change narrows (the planner's hazards
//! say so, graded with the catalogs); check expressions against the function allow-list (the
//! SQL guard's job).

use pg_query::protobuf::{AlterTableType, DropBehavior, ObjectType};
use pg_query::NodeEnum;

use crate::plan::Plan;

/// A step whose SQL is not what a plan step may be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "step {step_id} of the plan ({summary}) {problem}; this is not SQL Lockplane's planner \
     writes: plan it here again instead of editing the plan"
)]
pub struct ForeignStep {
    /// The step.
    pub step_id: String,
    /// Its summary.
    pub summary: String,
    /// What is wrong with its SQL.
    pub problem: String,
}

/// What the statements of a plan say about data loss.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Review {
    /// `(step id, what the statement destroys)` for every statement that can lose data.
    pub data_loss: Vec<(String, String)>,
}

impl Review {
    /// Whether the SQL alone requires two-phase confirmation.
    pub fn requires_confirmation(&self) -> bool {
        !self.data_loss.is_empty()
    }
}

/// Reviews every step of `plan` (see the module docs).
pub fn review(plan: &Plan) -> Result<Review, ForeignStep> {
    let helpers = crate::dsl::helpers::install_statements();
    let mut out = Review::default();
    for step in &plan.steps {
        let foreign = |problem: String| ForeignStep {
            step_id: step.id.clone(),
            summary: step.summary.clone(),
            problem,
        };
        let parsed =
            pg_query::parse(&step.sql, 0).map_err(|e| foreign(format!("does not parse: {e}")))?;
        let stmts = &parsed.protobuf.stmts;
        if stmts.len() != 1 {
            return Err(foreign(format!(
                "holds {} statements where a step holds exactly one",
                stmts.len()
            )));
        }
        let Some(node) = stmts[0].stmt.as_ref().and_then(|n| n.node.as_ref()) else {
            return Err(foreign("holds no statement".into()));
        };
        let is_helper = helpers.iter().any(|h| h.trim() == step.sql.trim());
        if let Some(kind) = foreign_kind(node, is_helper) {
            return Err(foreign(format!("is a {kind} statement")));
        }
        if let Some(what) = data_loss(node) {
            out.data_loss.push((step.id.clone(), what));
        }
    }
    Ok(out)
}

/// The statement kind, when the planner never writes it.
fn foreign_kind(node: &NodeEnum, is_helper: bool) -> Option<String> {
    let allowed = match node {
        NodeEnum::CreateStmt(_)
        | NodeEnum::AlterTableStmt(_)
        | NodeEnum::IndexStmt(_)
        | NodeEnum::DropStmt(_)
        | NodeEnum::ViewStmt(_)
        | NodeEnum::CreateSeqStmt(_)
        | NodeEnum::AlterSeqStmt(_)
        | NodeEnum::CreateSchemaStmt(_)
        | NodeEnum::CreateExtensionStmt(_)
        | NodeEnum::AlterExtensionStmt(_)
        | NodeEnum::CreateEnumStmt(_)
        | NodeEnum::AlterEnumStmt(_)
        | NodeEnum::RenameStmt(_)
        | NodeEnum::CommentStmt(_)
        | NodeEnum::GrantStmt(_)
        | NodeEnum::CreatePolicyStmt(_)
        | NodeEnum::AlterPolicyStmt(_)
        | NodeEnum::AlterObjectSchemaStmt(_) => true,
        NodeEnum::CreateFunctionStmt(_) => is_helper,
        _ => false,
    };
    if allowed {
        return None;
    }
    let name = format!("{node:?}");
    Some(name.split('(').next().unwrap_or("unknown").to_owned())
}

/// What the statement destroys, when it can lose data.
fn data_loss(node: &NodeEnum) -> Option<String> {
    match node {
        NodeEnum::DropStmt(drop) => {
            let kind = ObjectType::try_from(drop.remove_type).ok();
            let cascade = DropBehavior::try_from(drop.behavior) == Ok(DropBehavior::DropCascade);
            let what = match kind {
                Some(ObjectType::ObjectTable) => "drops a table and its rows",
                Some(ObjectType::ObjectSchema) => "drops a schema and what it holds",
                Some(ObjectType::ObjectSequence) => "drops a sequence and its position",
                Some(ObjectType::ObjectType) => "drops a type (and any data of that type)",
                Some(ObjectType::ObjectMatview) => "drops a materialized view",
                Some(ObjectType::ObjectExtension) => "drops an extension and its objects",
                _ if cascade => "drops with CASCADE (whatever depends on it goes too)",
                _ => return None,
            };
            Some(what.to_owned())
        }
        NodeEnum::AlterTableStmt(alter) => alter.cmds.iter().find_map(|cmd| {
            let Some(NodeEnum::AlterTableCmd(cmd)) = cmd.node.as_ref() else {
                return None;
            };
            let subtype = AlterTableType::try_from(cmd.subtype).ok()?;
            (subtype == AlterTableType::AtDropColumn)
                .then(|| format!("drops column {} and its values", cmd.name))
        }),
        NodeEnum::TruncateStmt(_) => Some("truncates a table".into()),
        NodeEnum::DeleteStmt(_) => Some("deletes rows".into()),
        NodeEnum::UpdateStmt(_) => Some("updates rows".into()),
        _ => None,
    }
}
