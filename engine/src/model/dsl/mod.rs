//! The schema DSL: YAML or JSON documents (`version: 1`) that describe the desired catalog.
//!
//! ```yaml
//! version: 1
//! extensions:
//!   - name: pgcrypto
//! schemas:
//!   public:
//!     tables:
//!       users:
//!         columns:
//!           - { name: id, type: uuid, pk: true, default: gen_random_uuid() }
//!           - { name: email, type: text, not_null: true, unique: true }
//!         grants:
//!           - { role: app_writer, privilege: insert_update }
//! ```
//!
//! The pieces:
//! - [`parse`] (and [`parse_yaml`], [`parse_json`]): text → [`Document`], checking the shape:
//!   unknown keys (with a "did you mean"), wrong value types, duplicates.
//! - [`to_catalog`]: [`Document`] → [`Catalog`], pure (no server): names, types, expressions,
//!   references, shorthands, default names.
//! - [`load`]: both, reporting the errors of both steps together.
//! - [`to_yaml`] / [`to_json`] (through [`from_catalog`]): [`Catalog`] → text, stable and
//!   using the shorthands. `to_catalog(parse(to_yaml(c))) == c` for every catalog that
//!   `to_catalog` produced.
//! - [`to_yaml_with_base`] / [`to_json_with_base`]: the same with `base:`, the catalog hash
//!   the catalog was read at ([`Document::base`]).
//! - [`json_schema`]: the JSON Schema of documents, for editors.
//! - [`helpers::install_sql`]: Lockplane's `tenant_id()` / `user_id()` helpers.
//!
//! Every error is a [`DslError`] naming file, line, column and path
//! (`schema.yaml:12:7: schemas.public.tables.todos.columns[2]: unknown key `nul`, did you mean
//! `not_null`?`), and every error of a document is reported at once ([`DslErrors`]).
//!
//! # Decisions
//!
//! **A document is literal.** `to_catalog` contains exactly what the document declares and
//! nothing a fresh database happens to have: no `plpgsql` extension, no `public` schema unless
//! declared, no comment on `public` unless written (`comment: standard public schema` — what
//! `introspect` reports for a fresh database). Whether objects that a document does not
//! mention are left alone or dropped is the planner's decision, not the reader's
//! ([`scope_to_live`], which also keeps that comment on `public` when a document names the
//! schema without a comment); `to_yaml` of an introspected catalog writes all of them, so
//! that document reproduces the catalog.
//!
//! **`base:` says where the document comes from, not what it describes.** A top-level
//! `base: "sha3-256:…"` is the catalog hash of the live database the document was read at
//! (`lockplane introspect --format yaml` writes it; [`Document::base`]). It is not part of the
//! catalog, so it never changes the document's hash. The planner uses it: when live has moved
//! on since the base, the plan aims at the three-way merge of base, document and live
//! ([`crate::merge::rebase_document`]), so objects the document left as they were keep what
//! others changed since, instead of being reverted. Without `base:` the document is planned
//! declaratively: live is made to match it.
//!
//! **Shorthands and long forms are the same catalog.** `pk: true` is
//! `primary_key: { columns: [c] }`, `unique: true` is `unique: [{ columns: [c] }]`,
//! `references` on a column is a one-column entry of `foreign_keys`, `check` on a column is an
//! entry of `checks`, `identity: always` is `identity: { generation: always }`, an enum given as
//! a list is `{ labels: [...] }`, `columns: [a]` on an index is `keys: [{ column: a }]`.
//! `pk: true` may appear on one column only (a composite key is `primary_key`); a key column,
//! an identity column and a serial column are NOT NULL without saying so, and
//! `not_null: false` on one is an error.
//!
//! **Default names are Postgres' names** (`makeObjectName`, with its truncation to 63 bytes):
//! `<table>_pkey`, `<table>_<columns>_key`, `<table>_<columns>_fkey`, `<table>_<column>_check`
//! (when the expression uses exactly one column, else `<table>_check`), `<table>_<columns>_excl`,
//! `<table>_<columns>_idx` (key then INCLUDE columns), `<table>_<column>_seq`. Postgres avoids a
//! clash by appending a number, which depends on the order objects are created in; a document
//! has no order, so a default name that is already taken in the schema is an error asking for
//! an explicit `name`. Indexes and exclusion constraints on expressions must be named (their
//! default names depend on Postgres' column-name inference).
//!
//! **Types** are written as in SQL and stored as `format_type` prints them with an empty
//! `search_path` (see [`types`]): `int` → `integer`, `varchar(20)` → `character varying(20)`,
//! `timestamptz` → `timestamp with time zone`, arrays with one `[]`. An unqualified name that
//! is not built in resolves to an enum of the same schema, then of `public`, and is stored
//! qualified (`public.todo_state`). Types of extensions must be written qualified
//! (`public.citext`): nothing pure can know which types an extension brings. `serial`,
//! `smallserial` and `bigserial` expand as Postgres expands them: an integer column, NOT NULL,
//! an owned sequence `<table>_<column>_seq` with the type's defaults, and the default
//! `nextval('<schema>.<sequence>'::regclass)`.
//!
//! **Privileges** are lower-case words; `all` means every privilege of the object's kind
//! except `maintain` (so a document means the same on Postgres 14 and 17), `insert_update`
//! means insert and update (see [`privileges`]). Column grants go on the column.
//!
//! **Context helpers.** Policies (and defaults) may call `tenant_id()` and `user_id()`; the
//! calls are found in pg_query's parse tree and qualified to `lockplane.tenant_id()` /
//! `lockplane.user_id()` at the positions the parser reports, then the expression is
//! normalised. The helpers live in Lockplane's own schema `lockplane`
//! ([`helpers::install_sql`]), which documents never declare and introspection should skip.
//!
//! **Row-level security.** Policies on a table whose `rls` does not say `enabled:` are an
//! error (a policy on a table without RLS does nothing, which is rarely meant);
//! `enabled: false` keeps such policies on purpose. An insert policy cannot have `using`, a
//! select or delete policy cannot have `with_check`. `roles` defaults to `[public]`.
//!
//! **Extensions** go to schema `public` unless `schema:` says otherwise; `required: false` is
//! kept in the [`Document`] ([`Document::optional_extensions`]) for the planner and is not part
//! of the catalog. `renamed_from:` (tables and columns) is likewise only in the document
//! ([`Document::renames`]).
//!
//! **Collations** are written as their name (`C`, `en_US.utf8`: a dot does not qualify), or in
//! quoted form for another schema's collation (`"myschema"."mycoll"`). Operator classes are
//! written as their name, qualified with a dot when they come from an extension
//! (`public.gin_trgm_ops`). An index key's collation equal to its column's is dropped, as
//! `pg_get_indexdef` drops it.
//!
//! **Exclusion constraints** are written as their clause (`definition: "EXCLUDE USING gist
//! (during WITH &&)"`), which is how the catalog holds them; `DEFERRABLE` in the clause sets
//! the constraint's flags.
//!
//! **YAML is read as YAML 1.2**: only `true`/`false` are booleans (`n`, `no`, `off` are
//! strings, so a column may be named `n`), `007` and `1_000` stay text. Duplicate keys are
//! errors. Merge keys (`<<: *anchor`, from YAML 1.1) are merged, a key written next to them
//! overriding the merged one. The writer still quotes YAML 1.1's boolean words, for other
//! tools' sake.
//!
//! **Reserved names.** A document cannot declare schema `lockplane` (Lockplane's helpers) or a
//! schema whose name starts with `pg_`.
//!
//! # What the pure conversion cannot predict
//!
//! The catalog stores expressions as Postgres prints them after analysis, and some of that
//! needs the server: it adds casts to literals according to the column's type (`'open'` on an
//! enum column is stored as `'open'::public.todo_state`, `'x'` on a varchar column as
//! `'x'::varchar`, `-1` as `'-1'::integer`), qualifies names in view queries and expressions
//! (`FROM invoices` → `FROM public.invoices`, `'paid'` → `'paid'::billing.status`), resolves
//! operator classes and collations of extensions to their schema, and may print a view's query
//! differently from how it was written. `to_catalog` normalises each expression through
//! pg_query only, so for such expressions its text differs from what `introspect` reads back.
//! The planner therefore canonicalises a desired catalog on a shadow database (apply it to an
//! empty database, introspect) before comparing it with the live one; `to_catalog`'s own
//! output is exact for names, types, nullability, keys, constraints' columns and actions,
//! indexes' columns and options, RLS flags, policy commands and roles, grants and comments.
//! Expressions that need no analysis (`now()`, `gen_random_uuid()`, `false`, `0`,
//! `tenant_id = lockplane.tenant_id()`) come out exactly as Postgres stores them.

mod convert;
mod document;
mod error;
mod from_catalog;
pub mod helpers;
pub mod names;
pub mod privileges;
mod read;
mod schema;
mod scope;
mod sql;
mod tree;
pub mod types;
mod write;

use std::sync::Arc;

pub use document::*;
pub use error::{DslError, DslErrors};
pub use from_catalog::from_catalog;
pub(crate) use from_catalog::serial_of;
pub use schema::json_schema;
pub use scope::{renames, scope_to_live, PUBLIC_SCHEMA_COMMENT};
pub use tree::Format;
pub use write::{document_to_json, document_to_yaml};

use crate::catalog::Catalog;
use crate::hash::CatalogHash;

/// A document and its catalog, as [`load`] returns them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The document, for what is not part of the catalog (renames, optional extensions).
    pub document: Document,
    /// The desired catalog.
    pub catalog: Catalog,
}

/// Parses `text` as a document in `format`; `file` names it in error messages.
///
/// Checks the shape only (keys, value types, duplicates); [`to_catalog`] checks the rest.
pub fn parse(file: &str, text: &str, format: Format) -> Result<Document, DslErrors> {
    let (doc, errors, _) = parse_collecting(file, text, format);
    match doc {
        Some(doc) if errors.is_empty() => Ok(doc),
        _ => Err(DslErrors::new(errors, Some(Arc::from(text)))),
    }
}

/// [`parse`] for YAML.
pub fn parse_yaml(file: &str, text: &str) -> Result<Document, DslErrors> {
    parse(file, text, Format::Yaml)
}

/// [`parse`] for JSON.
pub fn parse_json(file: &str, text: &str) -> Result<Document, DslErrors> {
    parse(file, text, Format::Json)
}

/// The document (unless the text is not YAML/JSON), the reader's errors, and the positions of
/// the values the reader could not read.
type Parsed = (
    Option<Document>,
    Vec<error::DslError>,
    std::collections::BTreeSet<(u32, u32)>,
);

fn parse_collecting(file: &str, text: &str, format: Format) -> Parsed {
    let root = match tree::read(file, text, format) {
        Ok(root) => root,
        Err(e) => return (None, vec![e], Default::default()),
    };
    let mut reader = read::Reader::new(file);
    let mut doc = reader.document(&root);
    doc.file = file.to_owned();
    (Some(doc), reader.errors, reader.unread)
}

/// Converts a document to the catalog it describes. Pure: no server is involved (see the
/// module documentation for what that cannot predict).
pub fn to_catalog(doc: &Document) -> Result<Catalog, DslErrors> {
    let mut converter = convert::Converter::new(doc);
    let catalog = converter.convert();
    // A parsed document had its version checked by the reader; one built in code has not.
    if doc.version != DSL_VERSION {
        converter.errors.push(DslError::new(
            &doc.file,
            "version",
            doc.origin.field("version"),
            format!("unsupported version {}", doc.version),
            Some(format!("this Lockplane reads version {DSL_VERSION}")),
        ));
    }
    if converter.errors.is_empty() {
        Ok(catalog)
    } else {
        Err(DslErrors::new(converter.errors, None))
    }
}

/// Parses and converts, reporting every problem of both steps at once.
#[tracing::instrument(level = "debug", name = "dsl.load", skip_all)]
pub fn load(file: &str, text: &str, format: Format) -> Result<Loaded, DslErrors> {
    let (doc, mut errors, unread) = parse_collecting(file, text, format);
    let source = Some(Arc::from(text));
    let Some(doc) = doc else {
        return Err(DslErrors::new(errors, source));
    };
    let mut converter = convert::Converter::new(&doc);
    let catalog = converter.convert();
    // What the reader could not read the conversion sees as missing or empty; the reader has
    // already said so at that position. (Only there: an unknown key at the start of a block
    // mapping shares the mapping's position, and does not explain the mapping's other faults.)
    errors.extend(
        converter
            .errors
            .into_iter()
            .filter(|e| !unread.contains(&(e.line, e.column))),
    );
    if errors.is_empty() {
        Ok(Loaded {
            document: doc,
            catalog,
        })
    } else {
        Err(DslErrors::new(errors, source))
    }
}

/// [`load`] with the format chosen by the file name (`.json` is JSON, anything else YAML).
pub fn load_file_text(file: &str, text: &str) -> Result<Loaded, DslErrors> {
    load(file, text, Format::from_file_name(file))
}

/// The catalog as a YAML document: extensions, then schemas by name, tables by name, columns
/// in the table's order (`attnum` for an introspected catalog; without positions, primary
/// key columns first then the other columns by name), shorthands where they apply, defaults
/// left out. Objects the DSL cannot describe (the catalog's `unsupported` list) are listed in
/// comments at the top.
pub fn to_yaml(catalog: &Catalog) -> String {
    to_yaml_with_base(catalog, None)
}

/// [`to_yaml`] with `base: <hash>` after `version`: the catalog hash the catalog was read at
/// (see [`Document::base`]). `lockplane introspect --format yaml` writes the hash it read, so
/// the document, edited and planned later, merges three ways instead of reverting what
/// others changed in between. Loading the text gives back `catalog` and `base`.
pub fn to_yaml_with_base(catalog: &Catalog, base: Option<&CatalogHash>) -> String {
    let mut text = String::new();
    if !catalog.unsupported.is_empty() {
        text.push_str("# Present in the database but not managed by Lockplane:\n");
        for u in &catalog.unsupported {
            let name = if u.schema.is_empty() {
                u.name.clone()
            } else {
                format!("{}.{}", u.schema, u.name)
            };
            // A comment must stay on its line.
            let line = format!("#   {} {name}", u.kind).replace(['\n', '\r'], " ");
            text.push_str(&line);
            text.push('\n');
        }
    }
    text.push_str(&document_to_yaml(&with_base(catalog, base)));
    text
}

/// The catalog as a JSON document, in the same order as [`to_yaml`] (without the comments).
pub fn to_json(catalog: &Catalog) -> String {
    to_json_with_base(catalog, None)
}

/// [`to_json`] with `"base": <hash>` (see [`to_yaml_with_base`]).
pub fn to_json_with_base(catalog: &Catalog, base: Option<&CatalogHash>) -> String {
    document_to_json(&with_base(catalog, base))
}

fn with_base(catalog: &Catalog, base: Option<&CatalogHash>) -> Document {
    let mut doc = from_catalog(catalog);
    doc.base = base.cloned();
    doc
}
