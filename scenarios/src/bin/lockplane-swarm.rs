//! A process of agents driving one Lockplane runtime, for the concurrency and crash tests
//! (`scenarios/tests/concurrency.rs`, `scenarios/tests/crash.rs`).
//!
//! ```text
//! lockplane-swarm swarm --ledger DIR --url URL --prefix P --agents N --rounds R [--shadow-url URL]
//! lockplane-swarm apply-one --ledger DIR --url URL --schema S --tables N [--shadow-url URL]
//! ```
//!
//! `swarm`: N agents at once, each owning schema `P_aI`, R rounds each: propose the next table
//! (even agents on odd rounds propose two tables separately and merge the two proposals) and
//! apply, re-proposing when the apply is refused as stale. Prints one JSON report line.
//!
//! `apply-one`: proposes schema S with N tables and applies it, printing `ack <seq> <kind>` as
//! soon as each of its ledger records is acknowledged and `applying` just before the apply, so
//! a test can kill it mid-apply and then check that every acknowledged record survived.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use lockplane_actors::{Config, DatabaseId, Error, Lockplane, ShadowConfig};
use lockplane_engine::exec::ApplyError;

struct Args(BTreeMap<String, String>);

impl Args {
    fn parse(raw: &[String]) -> Result<Args, String> {
        let mut map = BTreeMap::new();
        let mut it = raw.iter();
        while let Some(flag) = it.next() {
            let name = flag
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument `{flag}`"))?;
            let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
            map.insert(name.to_owned(), value.clone());
        }
        Ok(Args(map))
    }

    fn get(&self, name: &str) -> Result<&str, String> {
        self.0
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| format!("--{name} is required"))
    }

    fn number(&self, name: &str) -> Result<usize, String> {
        self.get(name)?
            .parse()
            .map_err(|e| format!("--{name}: {e}"))
    }
}

fn config(args: &Args) -> Result<Config, String> {
    let mut config = Config::new(args.get("ledger")?);
    // A process killed a moment ago may still be releasing the ledger's lock.
    config.ledger_wait = std::time::Duration::from_secs(30);
    if let Ok(url) = args.get("shadow-url") {
        config.shadow = ShadowConfig::Url(url.to_owned());
    }
    config.dry_run = args.get("dry-run").map(|v| v != "false").unwrap_or(true);
    config.lock_wait = Duration::from_secs(60);
    Ok(config)
}

/// The document giving schema `schema` exactly `tables`.
fn document(schema: &str, tables: &[String]) -> String {
    let mut doc = format!("version: 1\nschemas:\n  {schema}:\n    tables:\n");
    for t in tables {
        doc.push_str(&format!(
            "      {t}:\n        columns:\n          - {{ name: id, type: bigint, pk: true }}\n          - {{ name: note, type: text }}\n"
        ));
    }
    doc
}

#[derive(Default)]
struct Tally {
    applied: u64,
    rebased: u64,
    merged: u64,
    refused_stale: u64,
    refused_merge: u64,
    other_errors: Vec<String>,
}

/// Applies `plan_id`, re-proposing `doc` up to 5 times when refused as stale.
async fn apply_until_done(
    lp: &Lockplane,
    db: &DatabaseId,
    agent: &str,
    mut plan_id: String,
    doc: &str,
    tally: &mut Tally,
) -> Result<(), Error> {
    for _ in 0..5 {
        match lp.apply(db, &plan_id, None, agent).await {
            Ok(applied) => {
                tally.applied += 1;
                if applied.rebased_from.is_some() {
                    tally.rebased += 1;
                }
                return Ok(());
            }
            // Stale before the advisory lock (the runtime's check) or under it (the
            // executor's): either way nothing ran, and the agent proposes again.
            Err(e)
                if matches!(e, Error::Stale { .. })
                    || matches!(&e, Error::Apply(a) if matches!(**a, ApplyError::Stale { .. })) =>
            {
                tally.refused_stale += 1;
                let p = lp.propose(db, "swarm.yaml", doc, agent).await?;
                if p.plan.steps.is_empty() {
                    return Ok(());
                }
                plan_id = p.plan.plan_id;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn agent(lp: Lockplane, db: DatabaseId, prefix: String, i: usize, rounds: usize) -> Tally {
    let name = format!("{prefix}-agent-{i}");
    let schema = format!("{prefix}_a{i}");
    let mut tables: Vec<String> = Vec::new();
    let mut tally = Tally::default();
    for r in 0..rounds {
        let result: Result<(), Error> = async {
            if i.is_multiple_of(2) && !r.is_multiple_of(2) {
                let (x, y) = (format!("t{r}x"), format!("t{r}y"));
                let with = |extra: &str| {
                    let mut t = tables.clone();
                    t.push(extra.to_owned());
                    document(&schema, &t)
                };
                // Another process's changes are drift to this ledger: merging proposals made
                // before them is refused, and the agent proposes again.
                let mut merged = None;
                for _ in 0..5 {
                    let a = lp.propose(&db, "x.yaml", &with(&x), &name).await?;
                    let b = lp.propose(&db, "y.yaml", &with(&y), &name).await?;
                    match lp.merge(&db, &a.plan.plan_id, &b.plan.plan_id, &name).await {
                        Ok(m) => {
                            merged = Some(m);
                            break;
                        }
                        Err(Error::CannotMerge(_)) => tally.refused_merge += 1,
                        Err(e) => return Err(e),
                    }
                }
                let Some(m) = merged else {
                    return Err(Error::CannotMerge("refused five times".into()));
                };
                tally.merged += 2;
                tables.push(x);
                tables.push(y);
                let doc = document(&schema, &tables);
                apply_until_done(&lp, &db, &name, m.plan.plan_id, &doc, &mut tally).await
            } else {
                tables.push(format!("t{r}"));
                let doc = document(&schema, &tables);
                let p = lp.propose(&db, "swarm.yaml", &doc, &name).await?;
                apply_until_done(&lp, &db, &name, p.plan.plan_id, &doc, &mut tally).await
            }
        }
        .await;
        if let Err(e) = result {
            tally
                .other_errors
                .push(format!("{name} round {r}: [{}] {e}", e.code()));
        }
    }
    tally
}

async fn swarm(args: &Args) -> Result<(), String> {
    let lp = Lockplane::open(config(args)?)
        .await
        .map_err(|e| e.to_string())?;
    let db = lp
        .attach(args.get("url")?, Some("swarm-db"))
        .await
        .map_err(|e| e.to_string())?;
    let (prefix, agents, rounds) = (
        args.get("prefix")?.to_owned(),
        args.number("agents")?,
        args.number("rounds")?,
    );
    let tasks: Vec<_> = (0..agents)
        .map(|i| tokio::spawn(agent(lp.clone(), db.clone(), prefix.clone(), i, rounds)))
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        let t = task.await.map_err(|e| e.to_string())?;
        total.applied += t.applied;
        total.rebased += t.rebased;
        total.merged += t.merged;
        total.refused_stale += t.refused_stale;
        total.refused_merge += t.refused_merge;
        total.other_errors.extend(t.other_errors);
    }
    let report = serde_json::json!({
        "applied": total.applied,
        "rebased": total.rebased,
        "merged": total.merged,
        "refused_stale": total.refused_stale,
        "refused_merge": total.refused_merge,
        "errors": total.other_errors,
    });
    println!("{report}");
    Ok(())
}

fn ack(seq: u64, kind: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ack {seq} {kind}");
    let _ = out.flush();
}

async fn apply_one(args: &Args) -> Result<(), String> {
    let lp = Lockplane::open(config(args)?)
        .await
        .map_err(|e| e.to_string())?;
    let db = lp
        .attach(args.get("url")?, Some("crash-db"))
        .await
        .map_err(|e| e.to_string())?;
    let schema = args.get("schema")?;
    let tables: Vec<String> = (0..args.number("tables")?)
        .map(|t| format!("t{t}"))
        .collect();
    let p = lp
        .propose(&db, "crash.yaml", &document(schema, &tables), "crash-agent")
        .await
        .map_err(|e| e.to_string())?;
    ack(p.seq, "PlanProposed");
    println!("plan {}", p.plan.plan_id);
    println!("applying");
    let _ = std::io::stdout().flush();
    let applied = lp
        .apply(&db, &p.plan.plan_id, None, "crash-agent")
        .await
        .map_err(|e| e.to_string())?;
    ack(applied.seq, "PlanApplied");
    Ok(())
}

#[tokio::main]
async fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match raw.split_first() {
        Some((mode, rest)) => match Args::parse(rest) {
            Ok(args) => match mode.as_str() {
                "swarm" => swarm(&args).await,
                "apply-one" => apply_one(&args).await,
                other => Err(format!("unknown mode `{other}` (swarm | apply-one)")),
            },
            Err(e) => Err(e),
        },
        None => Err("usage: lockplane-swarm swarm|apply-one --flag value …".into()),
    };
    if let Err(e) = outcome {
        eprintln!("lockplane-swarm: {e}");
        std::process::exit(1);
    }
}
