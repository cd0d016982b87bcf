//! Embedding Lockplane in a plain tokio program: propose a schema change, apply it, check the
//! ledger. Run it against any database you may change:
//!
//! ```sh
//! DATABASE_URL=postgres://… cargo run -p lockplane-actors --example embed
//! ```
//!
//! The shadow dry run starts a throwaway cluster from the local Postgres binaries; set
//! `LOCKPLANE_SHADOW_URL` to use a server of yours instead.

use lockplane_actors::{Config, Lockplane, ShadowConfig};

const DESIGN: &str = "
version: 1
schemas:
  inventory:
    tables:
      items:
        columns:
          - { name: id, type: bigint, pk: true }
          - { name: name, type: text, not_null: true }
";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL")?;
    let ledger = std::env::temp_dir().join(format!("lockplane-embed-{}", std::process::id()));
    let mut config = Config::new(&ledger);
    if let Ok(shadow) = std::env::var("LOCKPLANE_SHADOW_URL") {
        config.shadow = ShadowConfig::Url(shadow);
    }
    let lockplane = Lockplane::open(config).await?;
    let db = lockplane.attach(&url, None).await?;

    let proposal = lockplane
        .propose(&db, "design.yaml", DESIGN, "embed-example")
        .await?;
    println!("plan {} ({})", proposal.plan.plan_id, proposal.shadow);
    for step in &proposal.plan.steps {
        println!("  {}", step.sql);
    }
    if proposal.plan.requires_confirmation {
        // A person (or an agent with the right to) reviews the hazards and confirms the exact plan.
        lockplane
            .confirm(&db, &proposal.plan.plan_id, "reviewer")
            .await?;
    }
    if !proposal.plan.steps.is_empty() {
        let applied = lockplane
            .apply(&db, &proposal.plan.plan_id, None, "embed-example")
            .await?;
        println!("applied: now at {}", applied.resulting_hash);
    }
    for entry in lockplane.audit_log(Some(&db), 10).await? {
        println!("  #{} {} {}", entry.seq, entry.kind, entry.summary);
    }
    println!("ledger verifies: {}", lockplane.verify_ledger().await?.ok);
    Ok(())
}
