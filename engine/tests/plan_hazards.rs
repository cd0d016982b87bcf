//! Hazards and plan identity, on hand-built catalogs (no server needed): what is data loss and
//! what is not, how hazards are graded with table statistics, what needs confirmation.

use lockplane_engine::catalog::*;
use lockplane_engine::diff::{diff, Change, Renames};
use lockplane_engine::plan::{
    plan, reverse, HazardKind, LockLevel, Plan, PlanError, TableSize, TableStats,
};

fn column(data_type: &str) -> Column {
    Column {
        data_type: data_type.into(),
        not_null: false,
        default: None,
        identity: None,
        generated: None,
        collation: None,
        grants: vec![],
        comment: None,
        position: Default::default(),
    }
}

/// A catalog with one table `public.t` holding the given columns.
fn catalog(columns: &[(&str, Column)]) -> Catalog {
    let mut table = Table::default();
    for (name, c) in columns {
        table.columns.insert((*name).into(), c.clone());
    }
    let mut schema = Schema::default();
    schema.tables.insert("t".into(), table);
    let mut c = Catalog::default();
    c.schemas.insert("public".into(), schema);
    c
}

fn stats(rows: i64, bytes: i64) -> TableStats {
    let mut s = TableStats::default();
    s.insert("public", "t", TableSize { rows, bytes });
    s
}

fn empty() -> TableStats {
    stats(0, 0)
}

fn kinds(p: &Plan) -> Vec<HazardKind> {
    p.hazards.iter().map(|h| h.kind).collect()
}

#[test]
fn narrowing_is_data_loss_and_needs_confirmation() {
    let a = catalog(&[("code", column("character varying(100)"))]);
    let b = catalog(&[("code", column("character varying(10)"))]);
    let p = plan(&a, &b, &Renames::none(), &empty(), "test").unwrap();
    assert!(
        kinds(&p).contains(&HazardKind::DataLoss),
        "{:#?}",
        p.hazards
    );
    assert!(p.requires_confirmation);

    for (from, to) in [("bigint", "integer"), ("text", "character varying(10)")] {
        let a = catalog(&[("c", column(from))]);
        let b = catalog(&[("c", column(to))]);
        let p = plan(&a, &b, &Renames::none(), &empty(), "test").unwrap();
        assert!(p.requires_confirmation, "{from} → {to}");
    }
}

#[test]
fn widening_is_not_data_loss() {
    for (from, to, rewrite) in [
        ("integer", "bigint", true),
        ("character varying(10)", "character varying(100)", false),
        ("character varying(10)", "text", false),
        ("numeric(10,2)", "numeric(14,2)", false),
    ] {
        let a = catalog(&[("c", column(from))]);
        let b = catalog(&[("c", column(to))]);
        let p = plan(&a, &b, &Renames::none(), &empty(), "test").unwrap();
        assert!(!p.requires_confirmation, "{from} → {to}: {:#?}", p.hazards);
        assert!(!kinds(&p).contains(&HazardKind::DataLoss), "{from} → {to}");
        assert_eq!(
            kinds(&p).contains(&HazardKind::TableRewrite),
            rewrite,
            "{from} → {to}: {:#?}",
            p.hazards
        );
    }
}

#[test]
fn dropping_a_default_is_not_data_loss() {
    let with = catalog(&[(
        "c",
        Column {
            default: Some("0".into()),
            ..column("integer")
        },
    )]);
    let without = catalog(&[("c", column("integer"))]);
    let p = plan(
        &with,
        &without,
        &Renames::none(),
        &stats(1000, 65536),
        "test",
    )
    .unwrap();
    assert_eq!(p.steps.len(), 1);
    assert!(p.steps[0].sql.ends_with("DROP DEFAULT"));
    assert!(!p.requires_confirmation);
    assert!(!kinds(&p).contains(&HazardKind::DataLoss));
}

#[test]
fn dropping_a_column_is_data_loss_graded_by_size() {
    let a = catalog(&[("id", column("integer")), ("legacy", column("text"))]);
    let b = catalog(&[("id", column("integer"))]);

    let p = plan(&a, &b, &Renames::none(), &empty(), "test").unwrap();
    assert!(p.requires_confirmation);
    let loss = p
        .hazards
        .iter()
        .find(|h| h.kind == HazardKind::DataLoss)
        .unwrap();
    assert_eq!(loss.object, "public.t.legacy");
    assert!(loss.detail.contains("empty table"), "{}", loss.detail);
    // No lock hazard on an empty table.
    assert!(!kinds(&p).contains(&HazardKind::AccessExclusiveLock));

    let big = stats(12_345_678, 3 << 30);
    let p = plan(&a, &b, &Renames::none(), &big, "test").unwrap();
    let loss = p
        .hazards
        .iter()
        .find(|h| h.kind == HazardKind::DataLoss)
        .unwrap();
    assert!(loss.detail.contains("~12,345,678 rows"), "{}", loss.detail);
    assert!(loss.detail.contains("3.0 GB"), "{}", loss.detail);
    assert!(loss.detail.contains("large"), "{}", loss.detail);
    assert!(kinds(&p).contains(&HazardKind::AccessExclusiveLock));
}

#[test]
fn rewrite_hazard_is_graded() {
    let a = catalog(&[("c", column("integer"))]);
    let b = catalog(&[("c", column("bigint"))]);
    let p = plan(&a, &b, &Renames::none(), &empty(), "test").unwrap();
    let rewrite = p
        .hazards
        .iter()
        .find(|h| h.kind == HazardKind::TableRewrite)
        .unwrap();
    assert!(rewrite.detail.contains("low risk"), "{}", rewrite.detail);

    let p = plan(&a, &b, &Renames::none(), &stats(5000, 1 << 20), "test").unwrap();
    let rewrite = p
        .hazards
        .iter()
        .find(|h| h.kind == HazardKind::TableRewrite)
        .unwrap();
    assert!(rewrite.detail.contains("~5,000 rows"), "{}", rewrite.detail);
    assert!(
        rewrite.detail.contains("estimated about a second"),
        "{}",
        rewrite.detail
    );
    assert!(p.steps[0].lock == LockLevel::AccessExclusive);
    // The estimate grows with the table's size: 3 GB at 50 MB/s.
    let p = plan(
        &a,
        &b,
        &Renames::none(),
        &stats(40_000_000, 3 << 30),
        "test",
    )
    .unwrap();
    let rewrite = p
        .hazards
        .iter()
        .find(|h| h.kind == HazardKind::TableRewrite)
        .unwrap();
    assert!(
        rewrite.detail.contains("estimated about 62 s"),
        "{}",
        rewrite.detail
    );
    assert!(
        rewrite.detail.contains("statement_timeout"),
        "{}",
        rewrite.detail
    );
    // Unknown size (no statistics for the table) is treated as large, not as empty.
    let p = plan(&a, &b, &Renames::none(), &TableStats::default(), "test").unwrap();
    assert!(kinds(&p).contains(&HazardKind::AccessExclusiveLock));
}

#[test]
fn index_builds_are_concurrent_only_on_populated_tables() {
    let a = catalog(&[("c", column("integer"))]);
    let mut b = a.clone();
    b.schemas
        .get_mut("public")
        .unwrap()
        .tables
        .get_mut("t")
        .unwrap()
        .indexes
        .insert(
            "t_c".into(),
            Index {
                unique: false,
                method: "btree".into(),
                keys: vec![IndexKey {
                    column: Some("c".into()),
                    expression: None,
                    opclass: None,
                    collation: None,
                    descending: false,
                    nulls_first: false,
                }],
                include: vec![],
                predicate: None,
                nulls_not_distinct: false,
                comment: None,
            },
        );
    let p = plan(&a, &b, &Renames::none(), &empty(), "test").unwrap();
    assert_eq!(
        p.steps[0].sql,
        r#"CREATE INDEX "t_c" ON "public"."t" USING btree ("c")"#
    );
    assert!(p.steps[0].transactional);
    assert_eq!(p.steps[0].lock, LockLevel::Share);

    let p = plan(&a, &b, &Renames::none(), &stats(100, 8192), "test").unwrap();
    assert_eq!(
        p.steps[0].sql,
        r#"CREATE INDEX CONCURRENTLY "t_c" ON "public"."t" USING btree ("c")"#
    );
    assert!(!p.steps[0].transactional);
    assert_eq!(p.steps[0].lock, LockLevel::ShareUpdateExclusive);
    assert!(!p.requires_confirmation);
}

#[test]
fn a_trigger_on_the_table_needs_confirmation() {
    let trigger = UnsupportedObject {
        kind: "trigger".into(),
        schema: "public".into(),
        name: "t.audit".into(),
    };
    let function = UnsupportedObject {
        kind: "function".into(),
        schema: "public".into(),
        name: "audit()".into(),
    };
    let mut a = catalog(&[("id", column("integer")), ("note", column("text"))]);
    a.unsupported = vec![function.clone(), trigger.clone()];
    let mut b = catalog(&[("id", column("integer"))]);
    b.unsupported = a.unsupported.clone();
    let p = plan(&a, &b, &Renames::none(), &empty(), "test").unwrap();
    let deps: Vec<&str> = p
        .hazards
        .iter()
        .filter(|h| h.kind == HazardKind::DependsOnUnsupported)
        .map(|h| h.detail.as_str())
        .collect();
    assert_eq!(deps.len(), 2, "{deps:#?}");
    assert!(deps[0].contains("trigger public.t.audit"), "{}", deps[0]);
    assert!(deps[1].contains("function public.audit()"), "{}", deps[1]);
    assert!(p.requires_confirmation);

    // Adding a nullable column to a table with a trigger: the trigger is named, the
    // function body is not a concern (nothing is removed).
    let p = plan(&b, &a, &Renames::none(), &empty(), "test").unwrap();
    let deps = p
        .hazards
        .iter()
        .filter(|h| h.kind == HazardKind::DependsOnUnsupported)
        .count();
    assert_eq!(deps, 1, "{:#?}", p.hazards);
}

#[test]
fn unsupported_objects_are_never_created_or_dropped() {
    let a = catalog(&[("id", column("integer"))]);
    let mut b = a.clone();
    b.unsupported.push(UnsupportedObject {
        kind: "function".into(),
        schema: "public".into(),
        name: "f()".into(),
    });
    let err = plan(&a, &b, &Renames::none(), &empty(), "test").unwrap_err();
    assert!(matches!(err, PlanError::Refused { .. }), "{err}");
    let err = plan(&b, &a, &Renames::none(), &empty(), "test").unwrap_err();
    assert!(err.to_string().contains("never drops"), "{err}");
}

#[test]
fn renames_are_validated() {
    // Neither the old name nor the new one is live: a misspelt `renamed_from`.
    let a = catalog(&[("other", column("integer"))]);
    let b = catalog(&[("id", column("integer"))]);
    let bad = Renames::none().column("public", "t", "missing", "id");
    let changes = diff(&a, &b, &bad);
    assert!(
        changes.iter().all(|c| matches!(c, Change::Refuse { .. })),
        "{changes:#?}"
    );
    assert!(plan(&a, &b, &bad, &empty(), "test").is_err());
    // The old name gone and the new one live: the rename is done already, nothing to plan.
    assert!(plan(&b, &b, &bad, &empty(), "test")
        .expect("satisfied")
        .is_empty());
}

#[test]
fn plan_id_is_the_hash_of_the_content() {
    let a = catalog(&[("c", column("integer"))]);
    let b = catalog(&[("c", column("bigint"))]);
    let p1 = plan(&a, &b, &Renames::none(), &empty(), "alice").unwrap();
    let p2 = plan(&a, &b, &Renames::none(), &empty(), "alice").unwrap();
    assert_eq!(p1, p2);
    assert!(p1.plan_id.starts_with("sha3-256:"));
    assert_eq!(p1.computed_id().unwrap(), p1.plan_id);
    let p3 = plan(&a, &b, &Renames::none(), &empty(), "bob").unwrap();
    assert_ne!(p1.plan_id, p3.plan_id);
    // The id covers the steps: tampering shows.
    let mut tampered = p1.clone();
    tampered.steps[0].sql.push_str(" USING 1");
    assert_ne!(tampered.computed_id().unwrap(), tampered.plan_id);
    // Serialisation is deterministic and round-trips.
    let json = serde_json::to_string(&p1).unwrap();
    let back: Plan = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p1);
    assert!(json.contains("\"lock\":\"ACCESS EXCLUSIVE\""), "{json}");
}

#[test]
fn identical_catalogs_plan_nothing() {
    let a = catalog(&[("c", column("integer"))]);
    let p = plan(&a, &a, &Renames::none(), &empty(), "test").unwrap();
    assert!(p.is_empty());
    assert!(p.hazards.is_empty());
    assert!(!p.requires_confirmation);
}

#[test]
fn the_reverse_of_a_drop_says_the_data_does_not_come_back() {
    let a = catalog(&[("id", column("integer")), ("legacy", column("text"))]);
    let b = catalog(&[("id", column("integer"))]);
    let back = reverse(&a, &b, &Renames::none(), &empty(), "test").unwrap();
    assert_eq!(back.steps.len(), 1);
    assert!(back.steps[0].sql.contains("ADD COLUMN \"legacy\" text"));
    let h = &back.steps[0].hazards;
    assert!(
        h.iter().any(|h| h.kind == HazardKind::DataNotRestored
            && h.object == "public.t.legacy"
            && h.detail.contains("not brought back")),
        "{h:#?}"
    );
    assert!(!back.requires_confirmation);
}

fn with_constraint(mut c: Catalog, name: &str, definition: ConstraintDef) -> Catalog {
    c.schemas
        .get_mut("public")
        .unwrap()
        .tables
        .get_mut("t")
        .unwrap()
        .constraints
        .insert(
            name.into(),
            Constraint {
                definition,
                deferrable: false,
                initially_deferred: false,
                validated: true,
                comment: None,
            },
        );
    c
}

fn not_null(data_type: &str) -> Column {
    Column {
        not_null: true,
        ..column(data_type)
    }
}

#[test]
fn keys_on_populated_tables_are_built_online() {
    let a = catalog(&[("id", not_null("integer")), ("email", column("text"))]);
    let unique = with_constraint(
        a.clone(),
        "t_email_key",
        ConstraintDef::Unique {
            columns: vec!["email".into()],
            nulls_not_distinct: false,
        },
    );
    let p = plan(&a, &unique, &Renames::none(), &stats(100, 8192), "test").unwrap();
    let sql: Vec<&str> = p.steps.iter().map(|s| s.sql.as_str()).collect();
    assert_eq!(
        sql,
        [
            r#"CREATE UNIQUE INDEX CONCURRENTLY "t_email_key" ON "public"."t" USING btree ("email")"#,
            r#"ALTER TABLE "public"."t" ADD CONSTRAINT "t_email_key" UNIQUE USING INDEX "t_email_key""#,
        ]
    );
    assert!(p.steps.iter().all(|s| !s.transactional));
    assert_eq!(p.steps[0].lock, LockLevel::ShareUpdateExclusive);
    assert!(
        p.steps[0]
            .hazards
            .iter()
            .any(|h| h.kind == HazardKind::MayFail && h.detail.contains("duplicate")),
        "{:#?}",
        p.steps[0].hazards
    );
    assert_eq!(p.steps[1].lock, LockLevel::AccessExclusive);
    assert!(
        p.steps[1]
            .hazards
            .iter()
            .any(|h| h.kind == HazardKind::AccessExclusiveLock && h.detail.contains("briefly")),
        "{:#?}",
        p.steps[1].hazards
    );
    assert!(!p.requires_confirmation);

    // Empty table, unknown size: the plain form, in the transaction.
    for s in [empty(), TableStats::default()] {
        let p = plan(&a, &unique, &Renames::none(), &s, "test").unwrap();
        assert_eq!(p.steps.len(), 1);
        assert_eq!(
            p.steps[0].sql,
            r#"ALTER TABLE "public"."t" ADD CONSTRAINT "t_email_key" UNIQUE ("email")"#
        );
        assert!(p.steps[0].transactional);
    }

    // A primary key over a NOT NULL column: online.
    let pk = with_constraint(
        a.clone(),
        "t_pkey",
        ConstraintDef::PrimaryKey {
            columns: vec!["id".into()],
        },
    );
    let p = plan(&a, &pk, &Renames::none(), &stats(100, 8192), "test").unwrap();
    assert_eq!(
        p.steps.iter().map(|s| s.sql.as_str()).collect::<Vec<_>>(),
        [
            r#"CREATE UNIQUE INDEX CONCURRENTLY "t_pkey" ON "public"."t" USING btree ("id")"#,
            r#"ALTER TABLE "public"."t" ADD CONSTRAINT "t_pkey" PRIMARY KEY USING INDEX "t_pkey""#,
        ]
    );

    // A primary key over a nullable column would make USING INDEX scan for NULLs under ACCESS
    // EXCLUSIVE anyway: the plain form.
    let a = catalog(&[("id", column("integer")), ("email", column("text"))]);
    let mut pk = with_constraint(
        a.clone(),
        "t_pkey",
        ConstraintDef::PrimaryKey {
            columns: vec!["id".into()],
        },
    );
    pk.schemas
        .get_mut("public")
        .unwrap()
        .tables
        .get_mut("t")
        .unwrap()
        .columns
        .get_mut("id")
        .unwrap()
        .not_null = true;
    let p = plan(&a, &pk, &Renames::none(), &stats(100, 8192), "test").unwrap();
    assert_eq!(
        p.steps.iter().map(|s| s.sql.as_str()).collect::<Vec<_>>(),
        [r#"ALTER TABLE "public"."t" ADD CONSTRAINT "t_pkey" PRIMARY KEY ("id")"#]
    );
    assert!(p.steps[0].transactional);

    // Exclusion constraints keep the plain form.
    let x = with_constraint(
        a.clone(),
        "t_x",
        ConstraintDef::Exclusion {
            definition: "EXCLUDE USING btree (id WITH =)".into(),
        },
    );
    let p = plan(&a, &x, &Renames::none(), &stats(100, 8192), "test").unwrap();
    assert_eq!(p.steps.len(), 1);
    assert!(p.steps[0].transactional);
}

#[test]
fn online_keys_keep_deferral_and_wait_for_their_comment() {
    let a = catalog(&[("a", column("integer")), ("b", column("integer"))]);
    let mut b = with_constraint(
        a.clone(),
        "t_ab_key",
        ConstraintDef::Unique {
            columns: vec!["a".into(), "b".into()],
            nulls_not_distinct: true,
        },
    );
    {
        let c = b
            .schemas
            .get_mut("public")
            .unwrap()
            .tables
            .get_mut("t")
            .unwrap()
            .constraints
            .get_mut("t_ab_key")
            .unwrap();
        c.deferrable = true;
        c.initially_deferred = true;
        c.comment = Some("pairs".into());
    }
    let p = plan(&a, &b, &Renames::none(), &stats(100, 8192), "test").unwrap();
    assert_eq!(
        p.steps.iter().map(|s| s.sql.as_str()).collect::<Vec<_>>(),
        [
            r#"CREATE UNIQUE INDEX CONCURRENTLY "t_ab_key" ON "public"."t" USING btree ("a", "b") NULLS NOT DISTINCT"#,
            r#"ALTER TABLE "public"."t" ADD CONSTRAINT "t_ab_key" UNIQUE USING INDEX "t_ab_key" DEFERRABLE INITIALLY DEFERRED"#,
            r#"COMMENT ON CONSTRAINT "t_ab_key" ON "public"."t" IS 'pairs'"#,
        ]
    );
    assert!(p.steps.iter().all(|s| !s.transactional));
}
