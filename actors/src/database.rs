//! The actor per managed database, and the registry that starts one per database id.
//!
//! Every mutating command on a database (propose, merge, confirm, apply, apply_sql, recovery)
//! is a message to its actor, handled atomically (`AtomicResponse`): the actor does not start
//! the next message until the current one is finished, even across `.await`s, so two applies
//! through one process never interleave. Each actor runs on its own arbiter (thread), so a
//! long apply on one database does not slow another, and reads never go through it.

use std::collections::BTreeMap;

use actix::prelude::*;
use lockplane_engine::session::SessionContext;

use crate::ops::{self, Applied, ApplyControl, Db, Proposal, Recovery, Shared, SqlResult};
use crate::Error;

/// Serialises the mutating commands on one database.
pub(crate) struct DatabaseActor {
    shared: Shared,
    db: Db,
}

impl Actor for DatabaseActor {
    type Context = Context<Self>;
}

/// A mutating command.
pub(crate) enum Command {
    Propose {
        name: String,
        text: String,
    },
    Merge {
        a: String,
        b: String,
    },
    Confirm {
        plan_id: String,
    },
    Apply {
        plan_id: String,
        confirmation: Option<String>,
        control: ApplyControl,
    },
    Resume {
        plan_id: String,
        confirmation: Option<String>,
        control: ApplyControl,
    },
    ApplySql {
        sql: String,
        context: SessionContext,
        confirmation: Option<String>,
    },
    Recover,
    PlanOnline {
        name: String,
        text: String,
        version: String,
    },
    Online(crate::online::Step),
}

/// What a command answers.
pub(crate) enum Answer {
    Proposal(Box<Proposal>),
    Confirmed(u64),
    Applied(Box<Applied>),
    Sql(Box<SqlResult>),
    Recovered(Option<Recovery>),
    OnlinePlan(Box<crate::online::OnlinePlan>),
    Online(Box<crate::online::OnlineOutcome>),
}

/// A command with the actor (agent or user) issuing it.
pub(crate) struct Mutate {
    pub(crate) command: Command,
    pub(crate) actor: String,
}

impl Message for Mutate {
    type Result = Result<Answer, Error>;
}

impl Handler<Mutate> for DatabaseActor {
    type Result = AtomicResponse<Self, Result<Answer, Error>>;

    fn handle(&mut self, msg: Mutate, _: &mut Context<Self>) -> Self::Result {
        let (shared, db) = (self.shared.clone(), self.db.clone());
        let work = async move {
            let actor = msg.actor.as_str();
            match msg.command {
                Command::Propose { name, text } => ops::propose(&shared, &db, &name, &text, actor)
                    .await
                    .map(|p| Answer::Proposal(Box::new(p))),
                Command::Merge { a, b } => ops::merge(&shared, &db, &a, &b, actor)
                    .await
                    .map(|p| Answer::Proposal(Box::new(p))),
                Command::Confirm { plan_id } => ops::confirm(&shared, &db, &plan_id, actor)
                    .await
                    .map(Answer::Confirmed),
                Command::Apply {
                    plan_id,
                    confirmation,
                    control,
                } => ops::apply(
                    &shared,
                    &db,
                    &plan_id,
                    confirmation.as_deref(),
                    actor,
                    control,
                )
                .await
                .map(|a| Answer::Applied(Box::new(a))),
                Command::Resume {
                    plan_id,
                    confirmation,
                    control,
                } => ops::resume(
                    &shared,
                    &db,
                    &plan_id,
                    confirmation.as_deref(),
                    actor,
                    control,
                )
                .await
                .map(|a| Answer::Applied(Box::new(a))),
                Command::ApplySql {
                    sql,
                    context,
                    confirmation,
                } => ops::apply_sql(&shared, &db, &sql, &context, confirmation.as_deref(), actor)
                    .await
                    .map(|r| Answer::Sql(Box::new(r))),
                Command::Recover => ops::recover(&shared, &db).await.map(Answer::Recovered),
                Command::PlanOnline {
                    name,
                    text,
                    version,
                } => crate::online::plan(&shared, &db, &name, &text, &version, actor)
                    .await
                    .map(|p| Answer::OnlinePlan(Box::new(p))),
                Command::Online(step) => crate::online::run(&shared, &db, step, actor)
                    .await
                    .map(|o| Answer::Online(Box::new(o))),
            }
        };
        AtomicResponse::new(Box::pin(work.into_actor(self)))
    }
}

/// Starts and keeps one [`DatabaseActor`] per database id, each on its own arbiter.
pub(crate) struct Registry {
    pub(crate) shared: Shared,
    pub(crate) actors: BTreeMap<String, (Addr<DatabaseActor>, Arbiter)>,
}

impl Actor for Registry {
    type Context = Context<Self>;
}

/// The actor of `db`, started on first use.
pub(crate) struct Attach(pub(crate) Db);

impl Message for Attach {
    type Result = Addr<DatabaseActor>;
}

impl Handler<Attach> for Registry {
    type Result = MessageResult<Attach>;

    fn handle(&mut self, msg: Attach, _: &mut Context<Self>) -> Self::Result {
        if let Some((addr, _)) = self.actors.get(&msg.0.id) {
            return MessageResult(addr.clone());
        }
        let arbiter = Arbiter::new();
        let actor = DatabaseActor {
            shared: self.shared.clone(),
            db: msg.0.clone(),
        };
        let addr = DatabaseActor::start_in_arbiter(&arbiter.handle(), move |_| actor);
        self.actors.insert(msg.0.id, (addr.clone(), arbiter));
        MessageResult(addr)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        for (_, (_, arbiter)) in std::mem::take(&mut self.actors) {
            arbiter.stop();
        }
    }
}
