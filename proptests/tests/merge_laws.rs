//! Laws of the three-way catalog merge, over random bounded catalogs, and of
//! `rebase_document` (a document read at a base, planned against live). Pure: no server.
//!
//! Catalogs are built by applying random edits to the empty catalog, and the two sides of a
//! merge by applying more edits to the base. Names come from small pools so that the two sides
//! often touch the same objects, which is where merges get interesting.

use std::collections::BTreeSet;

use lockplane_engine::catalog::{
    Catalog, Column, Constraint, ConstraintDef, EnumType, Extension, Grant, Index, IndexKey,
    Policy, PolicyCommand, Sequence, SequenceOptions, UnsupportedObject, View,
};
use lockplane_engine::merge::{merge, rebase_document, Conflict, MergeConflicts};
use proptest::prelude::*;

const SCHEMAS: &[&str] = &["public", "app"];
const TABLES: &[&str] = &["t0", "t1", "t2", "t3"];
const ITEMS: &[&str] = &["a", "b", "c"];
const TYPES: &[&str] = &["integer", "text", "bigint", "boolean"];
const ROLES: &[&str] = &["alice", "bob"];
const PRIVILEGES: &[&str] = &["select", "insert", "update"];
/// Table-level edits come first, so `op % TABLE_OPS` keeps an edit inside one table.
const TABLE_OPS: u8 = 12;
const OPS: u8 = 21;

/// One edit, chosen by small indices; what each field means depends on `op`.
#[derive(Debug, Clone, Copy)]
struct Edit {
    op: u8,
    schema: u8,
    table: u8,
    item: u8,
    seed: u8,
}

fn edit() -> impl Strategy<Value = Edit> {
    (0..OPS, any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>()).prop_map(
        |(op, schema, table, item, seed)| Edit {
            op,
            schema,
            table,
            item,
            seed,
        },
    )
}

fn pick(pool: &[&str], i: u8) -> String {
    pool[usize::from(i) % pool.len()].to_owned()
}

fn flag(seed: u8, bit: u8) -> bool {
    seed & (1 << bit) != 0
}

fn grant(seed: u8) -> Grant {
    Grant {
        grantee: pick(ROLES, seed),
        privilege: pick(PRIVILEGES, seed / 2),
        grantable: flag(seed, 6),
    }
}

fn column(seed: u8) -> Column {
    Column {
        data_type: pick(TYPES, seed),
        not_null: flag(seed, 2),
        default: flag(seed, 3).then(|| "0".to_owned()),
        identity: None,
        generated: None,
        collation: None,
        grants: if flag(seed, 4) {
            vec![grant(seed)]
        } else {
            Vec::new()
        },
        comment: flag(seed, 5).then(|| "note".to_owned()),
        position: Default::default(),
    }
}

fn constraint(seed: u8) -> Constraint {
    let definition = if flag(seed, 0) {
        ConstraintDef::PrimaryKey {
            columns: vec![pick(ITEMS, seed / 2)],
        }
    } else {
        ConstraintDef::Check {
            expression: format!("(a > {})", seed % 3),
            no_inherit: false,
        }
    };
    Constraint {
        definition,
        deferrable: false,
        initially_deferred: false,
        validated: !flag(seed, 4),
        comment: None,
    }
}

fn index(seed: u8) -> Index {
    Index {
        unique: flag(seed, 2),
        method: "btree".into(),
        keys: vec![IndexKey {
            column: Some(pick(ITEMS, seed)),
            expression: None,
            opclass: None,
            collation: None,
            descending: flag(seed, 3),
            nulls_first: flag(seed, 3),
        }],
        include: Vec::new(),
        predicate: None,
        nulls_not_distinct: false,
        comment: None,
    }
}

fn policy(seed: u8) -> Policy {
    let commands = [
        PolicyCommand::All,
        PolicyCommand::Select,
        PolicyCommand::Update,
    ];
    Policy {
        command: commands[usize::from(seed) % commands.len()],
        permissive: !flag(seed, 3),
        roles: vec![if flag(seed, 4) { "public" } else { "alice" }.to_owned()],
        using: Some(format!("(a = {})", seed % 2)),
        with_check: None,
        comment: None,
    }
}

fn options(seed: u8) -> SequenceOptions {
    SequenceOptions {
        data_type: "bigint".into(),
        start: i64::from(seed % 3) + 1,
        increment: 1,
        min: 1,
        max: i64::MAX,
        cache: 1,
        cycle: flag(seed, 3),
    }
}

fn apply(catalog: &mut Catalog, e: Edit) {
    let s = pick(SCHEMAS, e.schema);
    let t = pick(TABLES, e.table);
    let i = pick(ITEMS, e.item);
    let seed = e.seed;
    let schema = catalog.schemas.entry(s.clone()).or_default();
    if e.op < TABLE_OPS {
        if e.op == 10 {
            schema.tables.remove(&t);
            return;
        }
        let table = schema.tables.entry(t).or_default();
        match e.op {
            0 => drop(table.columns.insert(i, column(seed))),
            1 => drop(table.columns.remove(&i)),
            2 => drop(table.constraints.insert(i, constraint(seed))),
            3 => drop(table.constraints.remove(&i)),
            4 => drop(table.indexes.insert(i, index(seed))),
            5 => drop(table.indexes.remove(&i)),
            6 => drop(table.rls.policies.insert(i, policy(seed))),
            7 => drop(table.rls.policies.remove(&i)),
            8 => {
                table.unlogged = flag(seed, 0);
                table.rls.enabled = flag(seed, 1);
                table.rls.forced = flag(seed, 2);
                table.comment = flag(seed, 3).then(|| format!("c{}", seed % 3));
            }
            9 => {
                let g = grant(seed);
                if table.grants.contains(&g) {
                    table.grants.retain(|x| *x != g);
                } else {
                    table.grants.push(g);
                }
            }
            // 11: only makes sure the table exists (done above).
            _ => {}
        }
        return;
    }
    match e.op {
        12 => drop(schema.views.insert(
            i,
            View {
                definition: format!("SELECT {} AS x", seed % 4),
                options: Vec::new(),
                grants: if flag(seed, 2) {
                    vec![grant(seed)]
                } else {
                    Vec::new()
                },
                comment: None,
            },
        )),
        13 => drop(schema.views.remove(&i)),
        14 => drop(schema.sequences.insert(
            i,
            Sequence {
                options: options(seed),
                owned_by: None,
                grants: Vec::new(),
                comment: flag(seed, 4).then(|| "seq".to_owned()),
            },
        )),
        15 => drop(
            schema.enums.insert(
                i,
                EnumType {
                    labels: ITEMS[..1 + usize::from(seed) % ITEMS.len()]
                        .iter()
                        .map(|l| (*l).to_owned())
                        .collect(),
                    comment: None,
                },
            ),
        ),
        16 => {
            schema.sequences.remove(&i);
            schema.enums.remove(&i);
        }
        17 => schema.comment = flag(seed, 0).then(|| format!("s{}", seed % 3)),
        18 => drop(catalog.schemas.remove(&s)),
        19 => {
            let name = format!("ext{}", seed % 3);
            if flag(seed, 2) {
                catalog.extensions.remove(&name);
            } else {
                catalog
                    .extensions
                    .insert(name, Extension { schema: s.clone() });
            }
        }
        _ => {
            let u = UnsupportedObject {
                kind: "function".into(),
                schema: s,
                name: format!("f{}()", seed % 4),
            };
            if catalog.unsupported.contains(&u) {
                catalog.unsupported.retain(|x| *x != u);
            } else {
                catalog.unsupported.push(u);
            }
        }
    }
}

fn edited(base: &Catalog, edits: &[Edit]) -> Catalog {
    let mut c = base.clone();
    for e in edits {
        apply(&mut c, *e);
    }
    c.canonicalize();
    c
}

fn catalog() -> impl Strategy<Value = Catalog> {
    prop::collection::vec(edit(), 0..16).prop_map(|edits| edited(&Catalog::default(), &edits))
}

/// A base and two sides derived from it.
fn triple() -> impl Strategy<Value = (Catalog, Catalog, Catalog)> {
    (
        catalog(),
        prop::collection::vec(edit(), 0..6),
        prop::collection::vec(edit(), 0..6),
    )
        .prop_map(|(b, x, y)| {
            let (x, y) = (edited(&b, &x), edited(&b, &y));
            (b, x, y)
        })
}

fn paths(e: &MergeConflicts) -> Vec<&str> {
    e.conflicts.iter().map(|c| c.path.as_str()).collect()
}

fn swapped(c: &Conflict) -> Conflict {
    Conflict {
        path: c.path.clone(),
        base: c.base.clone(),
        ours: c.theirs.clone(),
        theirs: c.ours.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(1024)
    ))]

    #[test]
    fn only_ours_changed_gives_ours((b, x, _) in triple()) {
        prop_assert_eq!(merge(&b, &x, &b), Ok(x));
    }

    #[test]
    fn only_theirs_changed_gives_theirs((b, x, _) in triple()) {
        prop_assert_eq!(merge(&b, &b, &x), Ok(x));
    }

    #[test]
    fn the_same_change_on_both_sides_gives_it((b, x, _) in triple()) {
        prop_assert_eq!(merge(&b, &x, &x), Ok(x));
    }

    /// A document read at `b` and left as it was asks for live as it is: planning it reverts
    /// nothing others changed since.
    #[test]
    fn an_untouched_document_asks_for_live((b, live, _) in triple()) {
        prop_assert_eq!(rebase_document(&b, &b, &live), Ok(live));
    }

    /// While live is still the base, a document asks for exactly itself (declarative).
    #[test]
    fn on_an_unmoved_base_a_document_asks_for_itself((b, doc, _) in triple()) {
        prop_assert_eq!(rebase_document(&b, &doc, &b), Ok(doc));
    }

    /// Once the merged catalog is live, the same document (same base) asks for it again:
    /// proposing a document a second time after applying it plans nothing.
    #[test]
    fn a_document_applied_asks_for_nothing_more((b, doc, live) in triple()) {
        if let Ok(merged) = rebase_document(&b, &doc, &live) {
            prop_assert_eq!(rebase_document(&b, &doc, &merged), Ok(merged));
        }
    }

    #[test]
    fn merge_is_commutative((b, x, y) in triple()) {
        match (merge(&b, &x, &y), merge(&b, &y, &x)) {
            (Ok(xy), Ok(yx)) => prop_assert_eq!(xy, yx),
            (Err(xy), Err(yx)) => {
                prop_assert_eq!(paths(&xy), paths(&yx));
                let back: Vec<Conflict> = yx.conflicts.iter().map(swapped).collect();
                prop_assert_eq!(xy.conflicts, back);
            }
            (xy, yx) => prop_assert!(false, "one order merged, the other did not: {xy:?} vs {yx:?}"),
        }
    }

    #[test]
    fn a_successful_merge_is_canonical_and_a_fixed_point((b, x, y) in triple()) {
        if let Ok(m) = merge(&b, &x, &y) {
            let mut c = m.clone();
            c.canonicalize();
            prop_assert_eq!(&c, &m);
            // Merging the result with either side again changes nothing.
            prop_assert_eq!(merge(&b, &m, &x), Ok(m.clone()));
            prop_assert_eq!(merge(&b, &m, &y), Ok(m));
        }
    }

    #[test]
    fn changes_to_disjoint_tables_combine(
        base in catalog(),
        xs in prop::collection::vec(edit(), 1..8),
        ys in prop::collection::vec(edit(), 1..8),
    ) {
        // Both schemas exist in the base, so neither side adds one; x edits only even tables,
        // y only odd ones.
        let mut b = base;
        for s in SCHEMAS {
            b.schemas.entry((*s).to_owned()).or_default();
        }
        let only = |edits: &[Edit], parity: u8| -> Vec<Edit> {
            edits
                .iter()
                .map(|e| Edit { op: e.op % TABLE_OPS, table: e.table % 2 * 2 + parity, ..*e })
                .collect()
        };
        let x = edited(&b, &only(&xs, 0));
        let y = edited(&b, &only(&ys, 1));
        let merged = merge(&b, &x, &y);
        prop_assert!(merged.is_ok(), "{merged:?}");
        let merged = merged.unwrap_or_default();

        let mut expected = b.clone();
        for s in SCHEMAS {
            let get = |c: &Catalog| c.schemas.get(*s).cloned().unwrap_or_default().tables;
            let (bt, xt, yt) = (get(&b), get(&x), get(&y));
            let names: BTreeSet<&String> = bt.keys().chain(xt.keys()).chain(yt.keys()).collect();
            let tables = &mut expected.schemas.entry((*s).to_owned()).or_default().tables;
            for name in names {
                let side = if xt.get(name) != bt.get(name) { &xt } else { &yt };
                match side.get(name) {
                    Some(t) => drop(tables.insert(name.clone(), t.clone())),
                    None => drop(tables.remove(name)),
                }
            }
        }
        prop_assert_eq!(merged, expected);
    }
}

/// Guards the laws above against a generator that only ever merges cleanly (or never does):
/// on a fixed seed, a fair share of triples must conflict and a fair share must not.
#[test]
fn the_generator_reaches_both_outcomes() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let strategy = triple();
    let (mut ok, mut conflicting) = (0, 0);
    for _ in 0..400 {
        let Ok(tree) = strategy.new_tree(&mut runner) else {
            continue;
        };
        let (b, x, y) = tree.current();
        match merge(&b, &x, &y) {
            Ok(_) => ok += 1,
            Err(_) => conflicting += 1,
        }
    }
    assert!(
        ok >= 40 && conflicting >= 40,
        "{ok} clean, {conflicting} conflicting"
    );
}
