//! Properties of the domain events and their projections:
//!
//! - encoding is deterministic and round-trips, for arbitrary events of every kind;
//! - projections rebuilt from a real sled ledger (written in arbitrary batches, closed,
//!   reopened, read back and decoded) equal the projections kept up to date event by event
//!   as they were appended, and a fold resumed from any mid-point equals the whole fold.

use lockplane_engine::events::{
    self, ApplyFailed, ApplyStarted, Approval, BlobRef, CatalogIntrospected, ContextSet,
    DriftDetected, Event, OnlineMigrated, PlanApplied, PlanConfirmed, PlanProposed, PlanSummary,
    PlansMerged, Receipt, SqlApplied, StepApplied, StepOutcome, StepReceipt, Timing,
};
use lockplane_engine::projection::Projections;
use lockplane_engine::CatalogHash;
use lockplane_store::{Head, NewRecord, SledStore, Store};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Few values per field, so generated events refer to each other (same plans, same hashes,
/// same databases) and the fold's transitions actually happen.
fn database() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["db-a", "db-b", "db-c"]).prop_map(str::to_owned)
}

fn actor() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["agent:a", "agent:b", "user:ann", "scheduler"])
        .prop_map(str::to_owned)
}

fn hash() -> impl Strategy<Value = CatalogHash> {
    (0u8..5).prop_map(|n| CatalogHash(format!("sha3-256:{}", n.to_string().repeat(64))))
}

fn plan_id() -> impl Strategy<Value = String> {
    (0u8..6).prop_map(|n| format!("plan-{n}"))
}

/// Any text, including empty, non-ASCII and control characters.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z_ ]{0,12}",
        1 => any::<String>(),
    ]
}

fn opt<T: std::fmt::Debug + Clone>(
    s: impl Strategy<Value = T>,
) -> impl Strategy<Value = Option<T>> {
    prop::option::of(s)
}

fn outcome() -> impl Strategy<Value = StepOutcome> {
    prop_oneof![
        4 => Just(StepOutcome::Ok),
        1 => (opt("[0-9A-Z]{5}"), text())
            .prop_map(|(sqlstate, message)| StepOutcome::Error { sqlstate, message }),
        1 => any::<u64>().prop_map(|after_ms| StepOutcome::TimedOut { after_ms }),
        1 => Just(StepOutcome::Skipped),
    ]
}

fn step_receipt() -> impl Strategy<Value = StepReceipt> {
    (
        text(),
        any::<i64>(),
        any::<u64>(),
        opt(any::<u64>()),
        outcome(),
    )
        .prop_map(
            |(sql, started_at, duration_ms, rows, outcome)| StepReceipt {
                sql,
                started_at,
                duration_ms,
                rows,
                outcome,
            },
        )
}

fn receipt() -> impl Strategy<Value = Receipt> {
    (
        text(),
        prop::collection::vec(step_receipt(), 0..4),
        any::<(i64, i64, u64)>(),
    )
        .prop_map(|(input, steps, (started_at, finished_at, duration_ms))| {
            let timing = Timing {
                started_at,
                finished_at,
                duration_ms,
            };
            Receipt::seal(input, steps, timing).unwrap_or_else(|e| panic!("{e}"))
        })
}

fn plan() -> impl Strategy<Value = PlanSummary> {
    (
        plan_id(),
        hash(),
        hash(),
        any::<u32>(),
        prop::collection::vec("[a-z_]{1,12}", 0..3),
        any::<bool>(),
    )
        .prop_map(
            |(plan_id, base_hash, target_hash, step_count, hazards, requires_confirmation)| {
                PlanSummary {
                    body: BlobRef::of(plan_id.as_bytes()),
                    plan_id,
                    base_hash,
                    target_hash,
                    step_count,
                    hazards,
                    requires_confirmation,
                    base_manifest: None,
                    target_manifest: None,
                    renames: Default::default(),
                }
            },
        )
}

fn approval() -> impl Strategy<Value = Option<Approval>> {
    opt((1u64..50, actor()).prop_map(|(seq, by)| Approval { seq, by }))
}

/// Who did it, and to which database.
fn who() -> impl Strategy<Value = (String, String)> {
    (actor(), database())
}

/// An arbitrary event of any kind.
fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (
            who(),
            hash(),
            prop::collection::vec("[a-z]{1,8}", 0..2),
            opt(text())
        )
            .prop_map(
                |((actor, database), catalog_hash, schemas, server_version)| {
                    Event::CatalogIntrospected(CatalogIntrospected {
                        manifest: BlobRef::of(catalog_hash.0.as_bytes()),
                        actor,
                        database,
                        catalog_hash,
                        schemas,
                        server_version,
                    })
                }
            ),
        (who(), plan()).prop_map(|((actor, database), plan)| {
            Event::PlanProposed(PlanProposed {
                actor,
                database,
                plan,
            })
        }),
        (who(), prop::collection::vec(plan_id(), 0..3), plan()).prop_map(
            |((actor, database), sources, merged)| {
                Event::PlansMerged(PlansMerged {
                    actor,
                    database,
                    sources,
                    merged,
                })
            }
        ),
        (
            who(),
            plan_id(),
            prop::collection::vec("[a-z_]{1,10}", 0..2)
        )
            .prop_map(|((actor, database), plan_id, hazards_acknowledged)| {
                Event::PlanConfirmed(PlanConfirmed {
                    actor,
                    database,
                    plan_id,
                    hazards_acknowledged,
                })
            }),
        (who(), plan_id(), hash(), approval()).prop_map(
            |((actor, database), plan_id, base_hash, approval)| {
                Event::ApplyStarted(ApplyStarted {
                    actor,
                    database,
                    plan_id,
                    base_hash,
                    approval,
                })
            }
        ),
        (
            who(),
            plan_id(),
            any::<u32>(),
            text(),
            step_receipt(),
            opt(hash())
        )
            .prop_map(
                |((actor, database), plan_id, step_index, step_id, receipt, catalog_hash)| {
                    Event::StepApplied(StepApplied {
                        actor,
                        database,
                        plan_id,
                        step_index,
                        step_id,
                        receipt,
                        catalog_hash,
                    })
                }
            ),
        (
            who(),
            plan_id(),
            1u64..50,
            hash(),
            hash(),
            approval(),
            receipt()
        )
            .prop_map(
                |(
                    (actor, database),
                    plan_id,
                    started_seq,
                    before_hash,
                    after_hash,
                    approval,
                    receipt,
                )| {
                    Event::PlanApplied(PlanApplied {
                        actor,
                        database,
                        plan_id,
                        started_seq,
                        before_hash,
                        after_hash,
                        approval,
                        receipt,
                        recovered: false,
                    })
                }
            ),
        (
            who(),
            plan_id(),
            1u64..50,
            hash(),
            opt(hash()),
            text(),
            receipt()
        )
            .prop_map(
                |(
                    (actor, database),
                    plan_id,
                    started_seq,
                    before_hash,
                    after_hash,
                    error,
                    receipt,
                )| {
                    Event::ApplyFailed(ApplyFailed {
                        actor,
                        database,
                        plan_id,
                        started_seq,
                        before_hash,
                        after_hash,
                        error,
                        receipt,
                        interrupted: false,
                    })
                }
            ),
        (who(), opt(hash()), opt(hash()), receipt()).prop_map(
            |((actor, database), before_hash, after_hash, receipt)| {
                Event::SqlApplied(SqlApplied {
                    actor,
                    database,
                    before_hash,
                    after_hash,
                    receipt,
                })
            }
        ),
        (who(), opt(text()), opt(text()), opt(text())).prop_map(
            |((actor, database), role, user_id, tenant_id)| {
                Event::ContextSet(ContextSet {
                    actor,
                    database,
                    role,
                    user_id,
                    tenant_id,
                })
            }
        ),
        (who(), hash(), hash(), any::<bool>()).prop_map(
            |((actor, database), expected_hash, live_hash, kept)| {
                Event::DriftDetected(DriftDetected {
                    manifest: kept.then(|| BlobRef::of(live_hash.0.as_bytes())),
                    actor,
                    database,
                    expected_hash,
                    live_hash,
                })
            }
        ),
        (
            who(),
            (text(), text(), text(), text()),
            (opt(hash()), opt(hash())),
            (opt(0u64..1_000_000), opt(text()))
        )
            .prop_map(
                |(
                    (actor, database),
                    (version, table, phase, migration),
                    (before_hash, after_hash),
                    (rows_filled, error),
                )| {
                    Event::OnlineMigrated(OnlineMigrated {
                        actor,
                        database,
                        version,
                        table,
                        phase,
                        migration,
                        before_hash,
                        after_hash,
                        rows_filled,
                        error,
                    })
                }
            ),
    ]
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encoding_is_deterministic_and_round_trips(event in event()) {
        let bytes = events::encode(&event);
        prop_assert!(!bytes.is_empty());
        prop_assert_eq!(events::encode(&event.clone()), bytes.clone());
        let decoded = events::decode(&bytes).map_err(fail)?;
        prop_assert_eq!(&decoded, &event);
        prop_assert_eq!(events::encode(&decoded), bytes.clone());
        let checked = events::decode_record_payload(event.kind(), event.database(), &bytes)
            .map_err(fail)?;
        prop_assert_eq!(checked, event);
    }
}

proptest! {
    // Each case writes a real sled ledger to disk.
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn projections_rebuilt_from_the_log_equal_incremental_ones(
        events in prop::collection::vec(event(), 0..80),
        batch in 1usize..9,
        cut in any::<prop::sample::Index>(),
    ) {
        let dir = tempfile::tempdir().map_err(fail)?;
        let path = dir.path().join("ledger");
        let mut incremental = Projections::new();
        {
            let store = SledStore::open(&path).map_err(fail)?;
            let mut head = Head::GENESIS;
            for (chunk_no, chunk) in events.chunks(batch).enumerate() {
                let records: Vec<NewRecord> = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, e)| NewRecord {
                        at: 1_700_000_000_000_000 + (chunk_no * 16 + i) as i64,
                        stream: e.database().to_owned(),
                        kind: e.kind().to_owned(),
                        payload: events::encode(e),
                    })
                    .collect();
                let ats: Vec<i64> = records.iter().map(|r| r.at).collect();
                let first = head.seq + 1;
                head = store.append(Some(head), records).map_err(fail)?;
                // As an embedding program would: fold each event once its append is durable,
                // with the seq the store gave it.
                for (i, (e, at)) in chunk.iter().zip(ats).enumerate() {
                    incremental.apply(first + i as u64, at, e.database(), e);
                }
            }
            prop_assert_eq!(head.seq, events.len() as u64);
        }

        let store = SledStore::open(&path).map_err(fail)?;
        let records = store.read_range(1..events.len() as u64 + 1).map_err(fail)?;
        prop_assert_eq!(records.len(), events.len());
        let mut decoded = Vec::new();
        for record in &records {
            let event = events::decode_record_payload(&record.kind, &record.stream, &record.payload)
                .map_err(fail)?;
            decoded.push((record.seq, record.at, record.stream.clone(), event));
        }
        let rebuilt = Projections::rebuild(decoded.iter().map(|(s, a, st, e)| (*s, *a, st, e)));
        prop_assert_eq!(&rebuilt, &incremental);
        // The pending index lists exactly the plans still waiting to be applied.
        for db in rebuilt.databases.values() {
            for (id, plan) in &db.plans {
                let waiting = matches!(plan.status.name(), "proposed" | "confirmed" | "stale");
                prop_assert_eq!(db.pending.contains(id), waiting, "{} {}", id, plan.status.name());
            }
            prop_assert!(db.pending.iter().all(|id| db.plans.contains_key(id)));
        }

        // Resuming from a snapshot taken anywhere gives the same result.
        let at = cut.index(decoded.len() + 1);
        let mut resumed =
            Projections::rebuild(decoded[..at].iter().map(|(s, a, st, e)| (*s, *a, st, e)));
        for (s, a, st, e) in &decoded[at..] {
            resumed.apply(*s, *a, st, e);
        }
        prop_assert_eq!(&resumed, &incremental);
        // And re-delivering an event already folded changes nothing but the anomaly list.
        if let Some((s, a, st, e)) = decoded.last() {
            let mut again = resumed.clone();
            again.apply(*s, *a, st, e);
            prop_assert_eq!(again.databases, resumed.databases);
            prop_assert_eq!(again.last_seq, resumed.last_seq);
        }
    }
}
