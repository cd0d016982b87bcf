//! Three-way catalog merge: which changes combine and which conflict. Pure: no server needed.

use lockplane_engine::catalog::{
    Catalog, Column, Constraint, ConstraintDef, Grant, Index, IndexKey, Schema, Table,
    UnsupportedObject, View,
};
use lockplane_engine::merge::{merge, rebase_document, Conflict, ConflictSides, MergeConflicts};
use lockplane_engine::CatalogHash;
use serde_json::json;

fn column(data_type: &str) -> Column {
    Column {
        data_type: data_type.into(),
        not_null: false,
        default: None,
        identity: None,
        generated: None,
        collation: None,
        grants: Vec::new(),
        comment: None,
        position: Default::default(),
    }
}

fn index(column: &str) -> Index {
    Index {
        unique: false,
        method: "btree".into(),
        keys: vec![IndexKey {
            column: Some(column.into()),
            expression: None,
            opclass: None,
            collation: None,
            descending: false,
            nulls_first: false,
        }],
        include: Vec::new(),
        predicate: None,
        nulls_not_distinct: false,
        comment: None,
    }
}

fn grant(grantee: &str, privilege: &str) -> Grant {
    Grant {
        grantee: grantee.into(),
        privilege: privilege.into(),
        grantable: false,
    }
}

/// `public.users (id integer, email text)` with a primary key, and `public.orders (id integer)`.
fn base() -> Catalog {
    let mut users = Table::default();
    users.columns.insert("id".into(), column("integer"));
    users.columns.insert("email".into(), column("text"));
    users.constraints.insert(
        "users_pkey".into(),
        Constraint {
            definition: ConstraintDef::PrimaryKey {
                columns: vec!["id".into()],
            },
            deferrable: false,
            initially_deferred: false,
            validated: true,
            comment: None,
        },
    );
    let mut orders = Table::default();
    orders.columns.insert("id".into(), column("integer"));
    let mut public = Schema::default();
    public.tables.insert("users".into(), users);
    public.tables.insert("orders".into(), orders);
    let mut catalog = Catalog::default();
    catalog.schemas.insert("public".into(), public);
    catalog
}

fn table<'a>(c: &'a mut Catalog, name: &str) -> &'a mut Table {
    c.schemas
        .get_mut("public")
        .and_then(|s| s.tables.get_mut(name))
        .expect("the base has this table")
}

fn edit(f: impl FnOnce(&mut Catalog)) -> Catalog {
    let mut c = base();
    f(&mut c);
    c
}

fn conflicts(result: Result<Catalog, MergeConflicts>) -> Vec<Conflict> {
    match result {
        Ok(_) => panic!("expected conflicts, the merge succeeded"),
        Err(e) => e.conflicts,
    }
}

#[test]
fn two_new_columns_on_one_table_combine() {
    let ours = edit(|c| {
        table(c, "users")
            .columns
            .insert("name".into(), column("text"));
    });
    let theirs = edit(|c| {
        table(c, "users")
            .columns
            .insert("age".into(), column("integer"));
    });
    let merged = merge(&base(), &ours, &theirs).expect("disjoint changes merge");
    let expected = edit(|c| {
        let users = table(c, "users");
        users.columns.insert("name".into(), column("text"));
        users.columns.insert("age".into(), column("integer"));
    });
    assert_eq!(merged, expected);
}

#[test]
fn a_new_table_and_a_new_index_elsewhere_combine() {
    let ours = edit(|c| {
        let mut t = Table::default();
        t.columns.insert("id".into(), column("bigint"));
        c.schemas
            .get_mut("public")
            .expect("public")
            .tables
            .insert("items".into(), t);
    });
    let theirs = edit(|c| {
        table(c, "users")
            .indexes
            .insert("users_email_idx".into(), index("email"));
    });
    let merged = merge(&base(), &ours, &theirs).expect("disjoint changes merge");
    let public = &merged.schemas["public"];
    assert!(public.tables.contains_key("items"));
    assert!(public.tables["users"]
        .indexes
        .contains_key("users_email_idx"));
    assert_eq!(public.tables.len(), 3);
}

#[test]
fn identical_changes_combine() {
    let change = |c: &mut Catalog| {
        let users = table(c, "users");
        users.columns.insert("name".into(), column("text"));
        users.comment = Some("people".into());
        users.columns.remove("email");
    };
    let merged = merge(&base(), &edit(change), &edit(change)).expect("same change merges");
    assert_eq!(merged, edit(change));
}

#[test]
fn one_column_changed_differently_is_one_conflict_naming_it() {
    let ours = edit(|c| {
        table(c, "users")
            .columns
            .insert("email".into(), column("character varying(100)"));
    });
    let theirs = edit(|c| {
        if let Some(email) = table(c, "users").columns.get_mut("email") {
            email.not_null = true;
        }
    });
    let found = conflicts(merge(&base(), &ours, &theirs));
    assert_eq!(found.len(), 1, "{found:?}");
    let conflict = &found[0];
    assert_eq!(conflict.path, "column public.users.email");
    let field = |v: &Option<serde_json::Value>, name: &str| v.as_ref().map(|v| v[name].clone());
    assert_eq!(field(&conflict.base, "type"), Some(json!("text")));
    assert_eq!(
        field(&conflict.ours, "type"),
        Some(json!("character varying(100)"))
    );
    assert_eq!(field(&conflict.theirs, "not_null"), Some(json!(true)));
    assert_eq!(field(&conflict.theirs, "type"), Some(json!("text")));
    assert_eq!(
        conflict.to_string(),
        "column public.users.email: changed differently on both sides"
    );
}

#[test]
fn deleting_what_the_other_side_changed_conflicts() {
    let ours = edit(|c| {
        table(c, "users").columns.remove("email");
    });
    let theirs = edit(|c| {
        if let Some(email) = table(c, "users").columns.get_mut("email") {
            email.comment = Some("where we write".into());
        }
    });
    let found = conflicts(merge(&base(), &ours, &theirs));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "column public.users.email");
    assert!(found[0].base.is_some());
    assert_eq!(found[0].ours, None);
    assert!(found[0].theirs.is_some());

    // The same one level up: a whole table dropped while the other side adds to it.
    let ours = edit(|c| {
        c.schemas
            .get_mut("public")
            .expect("public")
            .tables
            .remove("orders");
    });
    let theirs = edit(|c| {
        table(c, "orders")
            .columns
            .insert("total".into(), column("numeric"));
    });
    let found = conflicts(merge(&base(), &ours, &theirs));
    assert_eq!(
        found.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(),
        ["table public.orders"]
    );
    assert_eq!(
        found[0].to_string(),
        "table public.orders: deleted by ours, changed by theirs"
    );
}

#[test]
fn adding_one_name_with_different_content_conflicts() {
    let view = |definition: &str| View {
        definition: definition.into(),
        options: Vec::new(),
        grants: Vec::new(),
        comment: None,
    };
    let ours = edit(|c| {
        table(c, "users")
            .indexes
            .insert("users_x".into(), index("email"));
        let public = c.schemas.get_mut("public").expect("public");
        public.views.insert("v".into(), view("SELECT 1 AS one"));
    });
    let theirs = edit(|c| {
        table(c, "users")
            .indexes
            .insert("users_x".into(), index("id"));
        let public = c.schemas.get_mut("public").expect("public");
        public.views.insert("v".into(), view("SELECT 2 AS two"));
    });
    let err = merge(&base(), &ours, &theirs).expect_err("add/add conflicts");
    let paths: Vec<&str> = err.conflicts.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["index public.users.users_x", "view public.v"]);
    assert!(err.conflicts.iter().all(|c| c.base.is_none()));
    assert_eq!(
        err.to_string(),
        "2 conflicts\n  \
         - index public.users.users_x: added on both sides with different content\n  \
         - view public.v: added on both sides with different content"
    );

    // A new table added on both sides with different columns is not silently unioned.
    let new_table = |col: &str| {
        edit(|c| {
            let mut t = Table::default();
            t.columns.insert(col.into(), column("integer"));
            c.schemas
                .get_mut("public")
                .expect("public")
                .tables
                .insert("t".into(), t);
        })
    };
    let found = conflicts(merge(&base(), &new_table("a"), &new_table("b")));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].path, "table public.t");
}

#[test]
fn table_attributes_are_one_object_and_grants_a_set() {
    let ours = edit(|c| {
        let users = table(c, "users");
        users.rls.enabled = true;
        users.grants.push(grant("alice", "select"));
    });
    let theirs = edit(|c| {
        let users = table(c, "users");
        users.comment = Some("people".into());
        users.grants.push(grant("bob", "insert"));
    });
    let found = conflicts(merge(&base(), &ours, &theirs));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "table public.users");
    assert_eq!(
        found[0].ours.as_ref().map(|v| v["rls_enabled"].clone()),
        Some(json!(true))
    );

    let theirs = edit(|c| {
        let users = table(c, "users");
        users.rls.enabled = true;
        users.grants.push(grant("bob", "insert"));
    });
    let merged = merge(&base(), &ours, &theirs).expect("same attributes, different grants");
    let users = &merged.schemas["public"].tables["users"];
    assert!(users.rls.enabled);
    assert_eq!(
        users.grants,
        [grant("alice", "select"), grant("bob", "insert")]
    );
}

#[test]
fn unsupported_objects_merge_as_a_set() {
    let object = |name: &str| UnsupportedObject {
        kind: "function".into(),
        schema: "public".into(),
        name: name.into(),
    };
    let mut base = base();
    base.unsupported = vec![object("f()"), object("g()")];
    let mut ours = base.clone();
    ours.unsupported = vec![object("g()"), object("h()")];
    let mut theirs = base.clone();
    theirs.unsupported = vec![object("f()"), object("g()"), object("i()")];
    let merged = merge(&base, &ours, &theirs).expect("sets never conflict");
    assert_eq!(
        merged.unsupported,
        [object("g()"), object("h()"), object("i()")]
    );
}

#[test]
fn rebasing_keeps_the_proposal_and_takes_live_drift() {
    // Proposal from B0 adds a column; live meanwhile gained an index elsewhere.
    let b0 = base();
    let target = edit(|c| {
        table(c, "orders")
            .columns
            .insert("total".into(), column("numeric"));
    });
    let live = edit(|c| {
        table(c, "users")
            .indexes
            .insert("users_email_idx".into(), index("email"));
    });
    let rebased = merge(&b0, &target, &live).expect("rebase");
    assert!(rebased.schemas["public"].tables["orders"]
        .columns
        .contains_key("total"));
    assert!(rebased.schemas["public"].tables["users"]
        .indexes
        .contains_key("users_email_idx"));
}

#[test]
fn conflicts_serialise_with_both_sides() {
    let ours = edit(|c| {
        table(c, "orders").comment = Some("a".into());
    });
    let theirs = edit(|c| {
        table(c, "orders").comment = Some("b".into());
    });
    let err = merge(&base(), &ours, &theirs).expect_err("conflict");
    let value = serde_json::to_value(&err).expect("serialises");
    assert_eq!(value["conflicts"][0]["path"], json!("table public.orders"));
    assert_eq!(value["conflicts"][0]["ours"]["comment"], json!("a"));
    assert_eq!(value["conflicts"][0]["theirs"]["comment"], json!("b"));
    assert_eq!(value["conflicts"][0]["base"]["comment"], json!(null));
}

#[test]
fn a_conflict_describes_both_sides_under_their_names() {
    let ours = edit(|c| {
        table(c, "users").columns.remove("email");
    });
    let theirs = edit(|c| {
        if let Some(email) = table(c, "users").columns.get_mut("email") {
            email.data_type = "character varying(320)".into();
        }
    });
    let found = conflicts(rebase_document(&base(), &ours, &theirs));
    assert_eq!(
        found[0].describe("the document", "live"),
        "column public.users.email: deleted by the document, changed by live (the document: \
         absent; live: {\"not_null\":false,\"type\":\"character varying(320)\"}; base: \
         {\"not_null\":false,\"type\":\"text\"})"
    );
    let sides = ConflictSides::Document {
        base: CatalogHash("sha3-256:b".into()),
        live: CatalogHash("sha3-256:l".into()),
    };
    let message = sides.message(&found);
    assert!(message.starts_with("the document conflicts with changes made on the live database since its base sha3-256:b (live is now sha3-256:l) on 1 object: column public.users.email: deleted by the document"), "{message}");
    assert!(ConflictSides::Plans
        .message(&found)
        .contains("deleted by the first plan, changed by the second plan"));

    // A long side is cut.
    let long = edit(|c| {
        if let Some(email) = table(c, "users").columns.get_mut("email") {
            email.comment = Some("x".repeat(1000));
        }
    });
    let found = conflicts(merge(&base(), &ours, &long));
    let text = found[0].describe("a", "b");
    assert!(text.contains('…') && text.len() < 800, "{text}");
}
