//! The error corpus: broken documents under `tests/fixtures/dsl/broken/`, each with a sidecar
//! `<name>.expected` that holds, on its first line, the JSON Schema's verdict on the document
//! and, on the following lines, exactly the errors `dsl::load` reports, as `DslError`'s
//! `Display` prints them, in order:
//!
//! ```text
//! schema: rejects
//! 01-unknown-document-key.yaml:2:1: unknown key `schemass`, did you mean `schemas`?
//! ```
//!
//! The verdict is `schema: rejects <where>` when the fault is one of shape that the JSON Schema
//! can see (an unknown key, a wrong type, an empty name), followed by the JSON pointers of the
//! values the validator flags (`#` is the whole document); `schema: accepts` when it is
//! semantic (a foreign key to a missing table, a duplicate key, which a JSON value cannot even
//! hold) and a schema cannot see it; and `schema: skipped (…)` when the text is not YAML or
//! JSON at all, so there is no value to validate.
//!
//! The same JSON Schema must accept every valid document: the fixtures next to `broken/` and
//! what `to_yaml` / `to_json` write for a few catalogs.
//!
//! Set `DSL_CORPUS_BLESS=1` to rewrite the sidecars from what the code does now (then review
//! the diff: the sidecars are the specification).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lockplane_engine::catalog::*;
use lockplane_engine::dsl::{self, Format};
use serde_json::Value;

/// The corpus must stay at least this large (issue 3).
const MIN_BROKEN_DOCUMENTS: usize = 30;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dsl")
}

fn is_document(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Documents of a directory, by file name.
fn documents(dir: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file() && is_document(p))
        .map(|p| {
            let name = p.file_name().unwrap().to_str().unwrap().to_owned();
            let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, text)
        })
        .collect();
    out.sort();
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Accepts,
    /// Holds the JSON pointers of the flagged values, sorted, `#` for the root.
    Rejects(Vec<String>),
    /// Not YAML or JSON: nothing to validate. Holds the reason.
    Skipped(String),
}

impl Verdict {
    fn parse(line: &str) -> Option<Verdict> {
        let verdict = line.strip_prefix("schema: ")?;
        if verdict == "accepts" {
            return Some(Verdict::Accepts);
        }
        if let Some(at) = verdict.strip_prefix("rejects ") {
            return Some(Verdict::Rejects(at.split(' ').map(str::to_owned).collect()));
        }
        verdict
            .strip_prefix("skipped (")
            .and_then(|r| r.strip_suffix(')'))
            .map(|reason| Verdict::Skipped(reason.to_owned()))
    }

    fn line(&self) -> String {
        match self {
            Verdict::Accepts => "schema: accepts".into(),
            Verdict::Rejects(at) => format!("schema: rejects {}", at.join(" ")),
            Verdict::Skipped(reason) => format!("schema: skipped ({reason})"),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Verdict::Accepts => "accepts",
            Verdict::Rejects(_) => "rejects",
            Verdict::Skipped(_) => "skipped",
        }
    }
}

struct Expected {
    verdict: Verdict,
    errors: Vec<String>,
}

fn sidecar_path(name: &str) -> PathBuf {
    let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    fixtures_dir()
        .join("broken")
        .join(format!("{stem}.expected"))
}

fn read_sidecar(name: &str) -> Expected {
    let path = sidecar_path(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (every broken document needs one)", path.display()));
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let verdict = Verdict::parse(first).unwrap_or_else(|| {
        panic!(
            "{}: the first line must be `schema: accepts`, `schema: rejects` or \
             `schema: skipped (<reason>)`, not `{first}`",
            path.display()
        )
    });
    Expected {
        verdict,
        errors: lines.map(str::to_owned).collect(),
    }
}

fn rendered_errors(name: &str, text: &str) -> Vec<String> {
    match dsl::load(name, text, Format::from_file_name(name)) {
        Ok(_) => vec!["<no error: the document loads>".to_owned()],
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// The document as the JSON value an editor's validator sees, or why there is none. YAML is
/// read as the DSL reads it (YAML 1.2 booleans, `007` stays text); a duplicate key keeps its
/// last value, as in JSON.
fn json_value(name: &str, text: &str) -> Result<Value, String> {
    match Format::from_file_name(name) {
        // Editors write a byte-order mark, and read past it; so does the DSL.
        Format::Json => serde_json::from_str(text.strip_prefix('\u{feff}').unwrap_or(text))
            .map_err(|e| e.to_string()),
        Format::Yaml => {
            let options = serde_saphyr::options! {
                duplicate_keys: serde_saphyr::DuplicateKeyPolicy::LastWins,
                strict_booleans: true,
                leading_zero_numbers_as_strings: true,
                underscored_numbers_as_strings: true,
            };
            serde_saphyr::from_str_with_options::<Value>(text, options).map_err(|e| e.to_string())
        }
    }
}

fn validator() -> jsonschema::Validator {
    let schema = dsl::json_schema();
    assert!(
        jsonschema::meta::is_valid(&schema),
        "the DSL's schema is not a valid JSON Schema"
    );
    jsonschema::validator_for(&schema).expect("the DSL's schema compiles")
}

fn schema_problems(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// The verdict the validator gives, with its reasons when it rejects.
fn schema_verdict(validator: &jsonschema::Validator, name: &str, text: &str) -> (Verdict, String) {
    match json_value(name, text) {
        Err(e) => (Verdict::Skipped(String::new()), e),
        Ok(value) => {
            let mut at: Vec<String> = validator
                .iter_errors(&value)
                .map(|e| format!("#{}", e.instance_path()))
                .collect();
            at.sort();
            at.dedup();
            if at.is_empty() {
                (Verdict::Accepts, String::new())
            } else {
                (
                    Verdict::Rejects(at),
                    schema_problems(validator, &value).join("\n"),
                )
            }
        }
    }
}

fn bless() -> bool {
    std::env::var_os("DSL_CORPUS_BLESS").is_some()
}

#[test]
fn broken_documents_report_exactly_the_expected_errors() {
    let broken = documents(&fixtures_dir().join("broken"));
    assert!(
        broken.len() >= MIN_BROKEN_DOCUMENTS,
        "the corpus has {} broken documents, it needs at least {MIN_BROKEN_DOCUMENTS}",
        broken.len()
    );
    let validator = validator();
    let mut failures = Vec::new();
    // No sidecar without its document.
    for entry in std::fs::read_dir(fixtures_dir().join("broken")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("expected")
            && !broken
                .iter()
                .any(|(name, _)| sidecar_path(name).file_name() == path.file_name())
        {
            failures.push(format!("{}: no document for this sidecar", path.display()));
        }
    }
    for (name, text) in &broken {
        let actual = rendered_errors(name, text);
        if bless() {
            let verdict = match schema_verdict(&validator, name, text) {
                (Verdict::Skipped(_), _) => match Verdict::parse(
                    std::fs::read_to_string(sidecar_path(name))
                        .unwrap_or_default()
                        .lines()
                        .next()
                        .unwrap_or_default(),
                ) {
                    Some(v @ Verdict::Skipped(_)) => v,
                    _ => Verdict::Skipped("not YAML or JSON: nothing to validate".into()),
                },
                (v, _) => v,
            };
            let mut out = verdict.line();
            for line in &actual {
                out.push('\n');
                out.push_str(line);
            }
            out.push('\n');
            std::fs::write(sidecar_path(name), out).unwrap();
            continue;
        }
        let expected = read_sidecar(name);
        if expected.errors.is_empty() {
            failures.push(format!("{name}: the sidecar lists no error"));
        }
        if actual != expected.errors {
            failures.push(format!(
                "{name}:\n  expected:\n    {}\n  actual:\n    {}",
                expected.errors.join("\n    "),
                actual.join("\n    ")
            ));
        }
        // Every error names this file and a real position inside it.
        for line in &actual {
            if !line.starts_with(&format!("{name}:")) || line.starts_with(&format!("{name}:0:")) {
                failures.push(format!("{name}: error without a position: {line}"));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn the_json_schema_sees_the_faults_it_can_see() {
    let validator = validator();
    let mut failures = Vec::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (name, text) in documents(&fixtures_dir().join("broken")) {
        let expected = read_sidecar(&name);
        let (actual, why) = schema_verdict(&validator, &name, &text);
        *counts.entry(expected.verdict.kind()).or_default() += 1;
        match (&expected.verdict, &actual) {
            (Verdict::Skipped(_), Verdict::Skipped(_)) => {
                // Skipped only because the text is not YAML/JSON, which the DSL says too.
                let errors = rendered_errors(&name, &text);
                if !(errors.len() == 1
                    && (errors[0].contains(": invalid YAML: ")
                        || errors[0].contains(": invalid JSON: ")))
                {
                    failures.push(format!(
                        "{name}: skipped, but the DSL does not report a syntax error: {errors:?}"
                    ));
                }
            }
            (e, a) if e == a => {}
            (Verdict::Skipped(_), _) => failures.push(format!(
                "{name}: marked skipped, but the text reads as a value (the validator {})",
                actual.line()
            )),
            (_, Verdict::Skipped(_)) => {
                failures.push(format!("{name}: the text does not read as a value: {why}"))
            }
            (e, a) => failures.push(format!(
                "{name}: expected `{}`, the validator says `{}`{}",
                e.line(),
                a.line(),
                if why.is_empty() {
                    String::new()
                } else {
                    format!(":\n    {}", why.replace('\n', "\n    "))
                }
            )),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    // The corpus exercises both sides of the schema.
    assert!(
        counts.get("rejects").copied().unwrap_or(0) >= 10,
        "{counts:?}"
    );
    assert!(
        counts.get("accepts").copied().unwrap_or(0) >= 10,
        "{counts:?}"
    );
}

/// A catalog with what a document writes in unusual ways: quoted names, YAML 1.1 boolean
/// words as names and labels, an extension in `pg_catalog`, objects Lockplane does not manage.
fn odd_catalog() -> Catalog {
    let column = |data_type: &str, not_null: bool, default: Option<&str>| Column {
        data_type: data_type.into(),
        not_null,
        default: default.map(Into::into),
        identity: None,
        generated: None,
        collation: None,
        grants: vec![],
        comment: None,
        position: Default::default(),
    };
    let mut table = Table::default();
    table
        .columns
        .insert("id".into(), column("integer", true, None));
    table
        .columns
        .insert("yes".into(), column("text", false, None));
    table.columns.insert(
        "Mixed Case".into(),
        column("character varying(10)", true, Some("'off'::varchar")),
    );
    table.constraints.insert(
        "no_pkey".into(),
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
    let mut public = Schema {
        comment: Some("standard public schema".into()),
        ..Schema::default()
    };
    public.tables.insert("no".into(), table);
    public.enums.insert(
        "on".into(),
        EnumType {
            labels: vec!["true".into(), "007".into(), "1_000".into()],
            comment: None,
        },
    );
    Catalog {
        extensions: BTreeMap::from([(
            "plpgsql".into(),
            Extension {
                schema: "pg_catalog".into(),
            },
        )]),
        schemas: BTreeMap::from([("public".into(), public)]),
        unsupported: vec![UnsupportedObject {
            kind: "function".into(),
            schema: "public".into(),
            name: "add_one(integer)".into(),
        }],
        ..Catalog::default()
    }
}

#[test]
fn the_json_schema_accepts_every_valid_document() {
    let validator = validator();
    let mut documents_checked: Vec<(String, String)> = Vec::new();
    let mut catalogs = vec![
        ("empty catalog".to_owned(), Catalog::default()),
        ("odd catalog".to_owned(), odd_catalog()),
    ];
    let valid = documents(&fixtures_dir());
    assert!(valid.len() >= 3, "{valid:?}");
    for (name, text) in valid {
        let loaded = dsl::load(&name, &text, Format::from_file_name(&name))
            .unwrap_or_else(|e| panic!("{name} is a valid fixture, yet:\n{e}"));
        catalogs.push((format!("catalog of {name}"), loaded.catalog));
        documents_checked.push((name, text));
    }
    for (what, catalog) in &catalogs {
        let yaml = dsl::to_yaml(catalog);
        let json = dsl::to_json(catalog);
        // What the writer writes must itself be a valid document.
        for (name, text) in [("written.yaml", &yaml), ("written.json", &json)] {
            dsl::load(name, text, Format::from_file_name(name))
                .unwrap_or_else(|e| panic!("{what}, written as {name}:\n{text}\n{e}"));
        }
        documents_checked.push((format!("{what} as YAML.yaml"), yaml));
        documents_checked.push((format!("{what} as JSON.json"), json));
    }
    let mut failures = Vec::new();
    for (name, text) in &documents_checked {
        let value = json_value(name, text).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
        let problems = schema_problems(&validator, &value);
        if !problems.is_empty() {
            failures.push(format!("{name}:\n    {}", problems.join("\n    ")));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
