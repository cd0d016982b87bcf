//! The value tree to a [`Document`]: shape and types only, every problem collected.
//!
//! Names, types, expressions and references are checked later, by the conversion, which sees
//! the whole document. Here each key is checked against the keys its object allows (with a
//! suggestion for typos), each value against the type its key takes.

use std::collections::BTreeSet;

use super::document::*;
use super::error::DslError;
use super::names::suggest;
use super::tree::{Node, Value};
use crate::catalog::{ForeignKeyAction, ForeignKeyMatch, IdentityGeneration, PolicyCommand};
use crate::hash::{CatalogHash, HASH_PREFIX};

pub(crate) const DOCUMENT_KEYS: &[&str] = &["version", "base", "extensions", "schemas"];
pub(crate) const EXTENSION_KEYS: &[&str] = &["name", "schema", "required"];
pub(crate) const SCHEMA_KEYS: &[&str] = &["comment", "enums", "sequences", "tables", "views"];
pub(crate) const ENUM_KEYS: &[&str] = &["labels", "comment"];
pub(crate) const SEQUENCE_KEYS: &[&str] = &[
    "type",
    "start",
    "increment",
    "min",
    "max",
    "cache",
    "cycle",
    "owned_by",
    "grants",
    "comment",
];
pub(crate) const OWNER_KEYS: &[&str] = &["table", "column"];
pub(crate) const VIEW_KEYS: &[&str] = &["query", "options", "grants", "comment"];
pub(crate) const VIEW_OPTION_KEYS: &[&str] =
    &["check_option", "security_barrier", "security_invoker"];
pub(crate) const TABLE_KEYS: &[&str] = &[
    "renamed_from",
    "comment",
    "unlogged",
    "columns",
    "primary_key",
    "unique",
    "foreign_keys",
    "checks",
    "exclusions",
    "indexes",
    "rls",
    "grants",
];
pub(crate) const COLUMN_KEYS: &[&str] = &[
    "name",
    "type",
    "renamed_from",
    "up",
    "down",
    "pk",
    "not_null",
    "unique",
    "default",
    "references",
    "check",
    "identity",
    "generated",
    "collation",
    "comment",
    "grants",
];
pub(crate) const REFERENCES_KEYS: &[&str] = &[
    "schema",
    "table",
    "columns",
    "on_delete",
    "on_update",
    "match",
    "deferrable",
    "initially_deferred",
];
pub(crate) const IDENTITY_KEYS: &[&str] = &[
    "generation",
    "start",
    "increment",
    "min",
    "max",
    "cache",
    "cycle",
];
pub(crate) const PRIMARY_KEY_KEYS: &[&str] = &[
    "name",
    "columns",
    "deferrable",
    "initially_deferred",
    "comment",
];
pub(crate) const UNIQUE_KEYS: &[&str] = &[
    "name",
    "columns",
    "nulls_not_distinct",
    "deferrable",
    "initially_deferred",
    "comment",
];
pub(crate) const FOREIGN_KEY_KEYS: &[&str] =
    &["name", "columns", "references", "not_valid", "comment"];
pub(crate) const CHECK_KEYS: &[&str] =
    &["name", "expression", "no_inherit", "not_valid", "comment"];
pub(crate) const EXCLUSION_KEYS: &[&str] = &["name", "definition", "comment"];
pub(crate) const INDEX_KEYS: &[&str] = &[
    "name",
    "columns",
    "keys",
    "unique",
    "using",
    "include",
    "where",
    "nulls_not_distinct",
    "comment",
];
pub(crate) const INDEX_KEY_KEYS: &[&str] = &[
    "column",
    "expression",
    "opclass",
    "collation",
    "order",
    "nulls",
];
pub(crate) const RLS_KEYS: &[&str] = &["enabled", "forced", "policies"];
pub(crate) const POLICY_KEYS: &[&str] = &[
    "name",
    "for",
    "as",
    "roles",
    "using",
    "with_check",
    "comment",
];
pub(crate) const GRANT_KEYS: &[&str] = &["role", "privilege", "grantable"];

pub(crate) const ACTIONS: &[(&str, ForeignKeyAction)] = &[
    ("no_action", ForeignKeyAction::NoAction),
    ("restrict", ForeignKeyAction::Restrict),
    ("cascade", ForeignKeyAction::Cascade),
    ("set_null", ForeignKeyAction::SetNull),
    ("set_default", ForeignKeyAction::SetDefault),
];
pub(crate) const MATCHES: &[(&str, ForeignKeyMatch)] = &[
    ("simple", ForeignKeyMatch::Simple),
    ("full", ForeignKeyMatch::Full),
    ("partial", ForeignKeyMatch::Partial),
];
pub(crate) const COMMANDS: &[(&str, PolicyCommand)] = &[
    ("all", PolicyCommand::All),
    ("select", PolicyCommand::Select),
    ("insert", PolicyCommand::Insert),
    ("update", PolicyCommand::Update),
    ("delete", PolicyCommand::Delete),
];
pub(crate) const GENERATIONS: &[(&str, IdentityGeneration)] = &[
    ("always", IdentityGeneration::Always),
    ("by_default", IdentityGeneration::ByDefault),
];
pub(crate) const POLICY_KINDS: &[(&str, bool)] = &[("permissive", true), ("restrictive", false)];
pub(crate) const ORDERS: &[(&str, bool)] = &[("asc", false), ("desc", true)];
pub(crate) const NULLS: &[(&str, bool)] = &[("first", true), ("last", false)];

/// A path segment for a name: `.name` when it reads unambiguously, `["odd.name"]` otherwise.
pub(crate) fn segment(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        format!(".{name}")
    } else {
        format!("[{}]", serde_json::Value::String(name.to_owned()))
    }
}

/// A mapping being read: its entries (duplicates and unknown keys already reported).
struct Obj<'n> {
    path: String,
    span: Span,
    entries: Vec<(&'static str, Span, &'n Node)>,
}

impl<'n> Obj<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, _, v)| *v)
            // An explicit `null` means the same as leaving the key out.
            .filter(|v| v.value != Value::Null)
    }

    fn origin(&self) -> Origin {
        Origin {
            path: self.path.clone(),
            span: self.span,
            fields: self.entries.iter().map(|(k, _, v)| (*k, v.span)).collect(),
        }
    }

    fn field_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

pub(crate) struct Reader<'f> {
    file: &'f str,
    pub errors: Vec<DslError>,
    /// Positions of values the reader could not read (wrong type, missing key): the
    /// conversion sees them as missing or empty, and its errors there are only echoes.
    pub unread: BTreeSet<(u32, u32)>,
}

impl<'f> Reader<'f> {
    pub fn new(file: &'f str) -> Self {
        Reader {
            file,
            errors: Vec::new(),
            unread: BTreeSet::new(),
        }
    }

    /// An error about a value, which is left unread.
    fn error(&mut self, path: &str, span: Span, message: impl Into<String>, hint: Option<String>) {
        self.unread.insert((span.line, span.column));
        self.key_error(path, span, message, hint);
    }

    /// An error about a key that is skipped (unknown, duplicate). It does not silence the
    /// conversion's errors at the same position: a block mapping starts at its first key, and
    /// an unknown first key says nothing about the rest of the mapping.
    fn key_error(
        &mut self,
        path: &str,
        span: Span,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.errors
            .push(DslError::new(self.file, path, span, message, hint));
    }

    fn wrong_type(&mut self, path: &str, node: &Node, expected: &str) {
        self.error(
            path,
            node.span,
            format!("expected {expected}, found {}", node.value.kind()),
            None,
        );
    }

    /// Reads a mapping whose keys must be among `allowed`.
    fn obj<'n>(&mut self, node: &'n Node, path: &str, allowed: &[&'static str]) -> Option<Obj<'n>> {
        let Value::Map(entries) = &node.value else {
            self.wrong_type(path, node, "a mapping");
            return None;
        };
        let mut obj = Obj {
            path: path.to_owned(),
            span: node.span,
            entries: Vec::new(),
        };
        for (key, value) in entries {
            let Value::Str(name) = &key.value else {
                self.error(
                    path,
                    key.span,
                    format!("keys must be strings, found {}", key.value.kind()),
                    None,
                );
                continue;
            };
            let Some(known) = allowed.iter().find(|k| **k == name.as_str()) else {
                let hint = suggest(name, allowed).map(|s| format!("did you mean `{s}`?"));
                let hint = hint.or_else(|| {
                    Some(format!(
                        "expected one of {}",
                        allowed
                            .iter()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                });
                self.key_error(path, key.span, format!("unknown key `{name}`"), hint);
                continue;
            };
            if obj.entries.iter().any(|(k, _, _)| k == known) {
                self.key_error(path, key.span, format!("duplicate key `{name}`"), None);
                continue;
            }
            obj.entries.push((known, key.span, value));
        }
        Some(obj)
    }

    fn string(&mut self, obj: &Obj, key: &str) -> Option<String> {
        let node = obj.get(key)?;
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            _ => {
                self.wrong_type(&obj.field_path(key), node, "a string");
                None
            }
        }
    }

    fn required_string(&mut self, obj: &Obj, key: &str) -> String {
        if obj.get(key).is_none() {
            self.error(&obj.path, obj.span, format!("missing key `{key}`"), None);
            return String::new();
        }
        self.string(obj, key).unwrap_or_default()
    }

    fn bool(&mut self, obj: &Obj, key: &str) -> Option<bool> {
        let node = obj.get(key)?;
        match &node.value {
            Value::Bool(b) => Some(*b),
            _ => {
                self.wrong_type(&obj.field_path(key), node, "a boolean (`true` or `false`)");
                None
            }
        }
    }

    fn flag(&mut self, obj: &Obj, key: &str) -> bool {
        self.bool(obj, key).unwrap_or(false)
    }

    fn int(&mut self, obj: &Obj, key: &str) -> Option<i64> {
        let node = obj.get(key)?;
        match &node.value {
            Value::Int(i) => match i64::try_from(*i) {
                Ok(v) => Some(v),
                Err(_) => {
                    self.error(
                        &obj.field_path(key),
                        node.span,
                        format!("{i} does not fit in a bigint"),
                        None,
                    );
                    None
                }
            },
            _ => {
                self.wrong_type(&obj.field_path(key), node, "an integer");
                None
            }
        }
    }

    /// A list of strings (column names, roles, labels).
    fn strings(&mut self, obj: &Obj, key: &str) -> Vec<String> {
        let Some(node) = obj.get(key) else {
            return Vec::new();
        };
        let Value::Seq(items) = &node.value else {
            self.wrong_type(&obj.field_path(key), node, "a list of strings");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match &item.value {
                Value::Str(s) => out.push(s.clone()),
                _ => self.wrong_type(&format!("{}[{i}]", obj.field_path(key)), item, "a string"),
            }
        }
        out
    }

    /// SQL text: strings as written, and YAML/JSON scalars as their SQL literal, so that
    /// `default: false` and `default: 0` mean what they look like.
    fn sql(&mut self, obj: &Obj, key: &str) -> Option<String> {
        let node = obj.get(key)?;
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) if f.is_finite() => Some(f.to_string()),
            _ => {
                self.wrong_type(&obj.field_path(key), node, "an SQL expression (a string)");
                None
            }
        }
    }

    /// One of a fixed set of words.
    fn choice<T: Copy>(&mut self, obj: &Obj, key: &str, choices: &[(&str, T)]) -> Option<T> {
        let node = obj.get(key)?;
        let words: Vec<&str> = choices.iter().map(|(w, _)| *w).collect();
        let Value::Str(s) = &node.value else {
            self.wrong_type(
                &obj.field_path(key),
                node,
                &format!("one of {}", words.join(", ")),
            );
            return None;
        };
        if let Some((_, v)) = choices.iter().find(|(w, _)| *w == s.as_str()) {
            return Some(*v);
        }
        let hint = match suggest(s, &words) {
            Some(w) => format!("did you mean `{w}`?"),
            None => format!("expected one of {}", words.join(", ")),
        };
        self.error(
            &obj.field_path(key),
            node.span,
            format!("invalid value `{s}` for `{key}`"),
            Some(hint),
        );
        None
    }

    /// A list of mappings, read by `each`.
    fn list<T>(
        &mut self,
        obj: &Obj,
        key: &str,
        mut each: impl FnMut(&mut Self, &Node, String) -> Option<T>,
    ) -> Vec<T> {
        let Some(node) = obj.get(key) else {
            return Vec::new();
        };
        let Value::Seq(items) = &node.value else {
            self.wrong_type(&obj.field_path(key), node, "a list");
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| each(self, item, format!("{}[{i}]", obj.field_path(key))))
            .collect()
    }

    /// A mapping of named items (`tables: { users: {...} }`), read by `each` with the name, the
    /// name's position, the value and the item's path.
    fn named<T>(
        &mut self,
        obj: &Obj,
        key: &str,
        what: &str,
        mut each: impl FnMut(&mut Self, String, Span, &Node, String) -> Option<T>,
    ) -> Vec<T> {
        let Some(node) = obj.get(key) else {
            return Vec::new();
        };
        let Value::Map(entries) = &node.value else {
            self.wrong_type(
                &obj.field_path(key),
                node,
                &format!("a mapping of {what} names to {what}s"),
            );
            return Vec::new();
        };
        let mut seen: Vec<&str> = Vec::new();
        let mut out = Vec::new();
        for (name_node, value) in entries {
            let Value::Str(name) = &name_node.value else {
                self.error(
                    &obj.field_path(key),
                    name_node.span,
                    format!(
                        "{what} names must be strings, found {}",
                        name_node.value.kind()
                    ),
                    None,
                );
                continue;
            };
            let path = format!("{}{}", obj.field_path(key), segment(name));
            if seen.contains(&name.as_str()) {
                self.error(
                    &path,
                    name_node.span,
                    format!("duplicate {what} `{name}`"),
                    None,
                );
                continue;
            }
            seen.push(name);
            if let Some(item) = each(self, name.clone(), name_node.span, value, path) {
                out.push(item);
            }
        }
        out
    }

    pub fn document(&mut self, root: &Node) -> Document {
        let mut doc = Document::default();
        if root.value == Value::Null {
            self.error(
                "",
                root.span,
                "the document is empty",
                Some("start it with `version: 1`".into()),
            );
            return doc;
        }
        let Some(obj) = self.obj(root, "", DOCUMENT_KEYS) else {
            return doc;
        };
        doc.origin = obj.origin();
        match obj.get("version") {
            None => self.error(
                "",
                obj.span,
                "missing key `version`",
                Some("add `version: 1`".into()),
            ),
            Some(node) => match &node.value {
                Value::Int(v) if *v == i128::from(DSL_VERSION) => doc.version = DSL_VERSION,
                Value::Int(v) => self.error(
                    "version",
                    node.span,
                    format!("unsupported version {v}"),
                    Some(format!("this Lockplane reads version {DSL_VERSION}")),
                ),
                _ => self.wrong_type("version", node, "an integer"),
            },
        }
        doc.base = self.base(&obj);
        doc.extensions = self.list(&obj, "extensions", |r, node, path| r.extension(node, path));
        doc.schemas = self.named(&obj, "schemas", "schema", |r, name, span, node, path| {
            r.schema(name, span, node, path)
        });
        doc
    }

    /// `base: "sha3-256:<64 hex digits>"`, the catalog hash the document was read at.
    fn base(&mut self, obj: &Obj) -> Option<CatalogHash> {
        let text = self.string(obj, "base")?;
        if let Some(hash) = CatalogHash::parse(&text) {
            return Some(hash);
        }
        let span = obj.get("base").map_or(obj.span, |node| node.span);
        self.error(
            "base",
            span,
            format!("`{text}` is not a catalog hash"),
            Some(format!(
                "expected `{HASH_PREFIX}` and 64 lower-case hex digits, the catalog_hash \
                 `lockplane introspect` prints; remove `base:` to plan the document \
                 declaratively"
            )),
        );
        None
    }

    fn extension(&mut self, node: &Node, path: String) -> Option<ExtensionDecl> {
        if let Value::Str(name) = &node.value {
            return Some(ExtensionDecl {
                name: name.clone(),
                origin: Origin {
                    path,
                    span: node.span,
                    fields: [("name", node.span)].into_iter().collect(),
                },
                ..ExtensionDecl::default()
            });
        }
        if !matches!(node.value, Value::Map(_)) {
            self.wrong_type(&path, node, "an extension name or a mapping");
            return None;
        }
        let obj = self.obj(node, &path, EXTENSION_KEYS)?;
        Some(ExtensionDecl {
            name: self.required_string(&obj, "name"),
            schema: self.string(&obj, "schema"),
            required: self.bool(&obj, "required").unwrap_or(true),
            origin: obj.origin(),
        })
    }

    fn with_name(mut origin: Origin, span: Span) -> Origin {
        origin.span = span;
        origin.fields.insert("name", span);
        origin
    }

    fn schema(
        &mut self,
        name: String,
        span: Span,
        node: &Node,
        path: String,
    ) -> Option<SchemaDecl> {
        // `public: {}` and a bare `public:` both declare an empty schema.
        if node.value == Value::Null {
            return Some(SchemaDecl {
                name,
                origin: Origin {
                    path,
                    span,
                    fields: [("name", span)].into_iter().collect(),
                },
                ..SchemaDecl::default()
            });
        }
        let obj = self.obj(node, &path, SCHEMA_KEYS)?;
        Some(SchemaDecl {
            name,
            comment: self.string(&obj, "comment"),
            enums: self.named(&obj, "enums", "enum", |r, name, span, node, path| {
                r.enumeration(name, span, node, path)
            }),
            sequences: self.named(
                &obj,
                "sequences",
                "sequence",
                |r, name, span, node, path| r.sequence(name, span, node, path),
            ),
            tables: self.named(&obj, "tables", "table", |r, name, span, node, path| {
                r.table(name, span, node, path)
            }),
            views: self.named(&obj, "views", "view", |r, name, span, node, path| {
                r.view(name, span, node, path)
            }),
            origin: Self::with_name(obj.origin(), span),
        })
    }

    fn enumeration(
        &mut self,
        name: String,
        span: Span,
        node: &Node,
        path: String,
    ) -> Option<EnumDecl> {
        if let Value::Seq(_) = &node.value {
            // `todo_state: [open, done]` is short for `{ labels: [open, done] }`.
            let wrapper = Obj {
                path: path.clone(),
                span,
                entries: vec![("labels", node.span, node)],
            };
            let labels = self.strings(&wrapper, "labels");
            let mut origin = Self::with_name(wrapper.origin(), span);
            origin.path = path;
            return Some(EnumDecl {
                name,
                labels,
                comment: None,
                origin,
            });
        }
        if !matches!(node.value, Value::Map(_)) {
            self.wrong_type(&path, node, "a list of labels or a mapping");
            return None;
        }
        let obj = self.obj(node, &path, ENUM_KEYS)?;
        if obj.get("labels").is_none() {
            self.error(&path, span, "missing key `labels`", None);
        }
        Some(EnumDecl {
            name,
            labels: self.strings(&obj, "labels"),
            comment: self.string(&obj, "comment"),
            origin: Self::with_name(obj.origin(), span),
        })
    }

    fn sequence(
        &mut self,
        name: String,
        span: Span,
        node: &Node,
        path: String,
    ) -> Option<SequenceDecl> {
        let empty = Node {
            value: Value::Map(Vec::new()),
            span,
        };
        let node = if node.value == Value::Null {
            &empty
        } else {
            node
        };
        let obj = self.obj(node, &path, SEQUENCE_KEYS)?;
        let owned_by = match obj.get("owned_by") {
            None => None,
            Some(owner) => self
                .obj(owner, &obj.field_path("owned_by"), OWNER_KEYS)
                .map(|o| OwnerDecl {
                    table: self.required_string(&o, "table"),
                    column: self.required_string(&o, "column"),
                }),
        };
        Some(SequenceDecl {
            name,
            data_type: self.string(&obj, "type"),
            start: self.int(&obj, "start"),
            increment: self.int(&obj, "increment"),
            min: self.int(&obj, "min"),
            max: self.int(&obj, "max"),
            cache: self.int(&obj, "cache"),
            cycle: self.flag(&obj, "cycle"),
            owned_by,
            grants: self.grants(&obj),
            comment: self.string(&obj, "comment"),
            origin: Self::with_name(obj.origin(), span),
        })
    }

    fn view(&mut self, name: String, span: Span, node: &Node, path: String) -> Option<ViewDecl> {
        let obj = self.obj(node, &path, VIEW_KEYS)?;
        let mut options = std::collections::BTreeMap::new();
        if let Some(node) = obj.get("options") {
            if let Some(opts) = self.obj(node, &obj.field_path("options"), VIEW_OPTION_KEYS) {
                for (key, _, value) in &opts.entries {
                    let text = match &value.value {
                        Value::Bool(b) => b.to_string(),
                        Value::Str(s) => s.clone(),
                        _ => {
                            self.wrong_type(&opts.field_path(key), value, "a boolean or a string");
                            continue;
                        }
                    };
                    options.insert((*key).to_owned(), text);
                }
            }
        }
        // Reported at the view's name, where the conversion reports a view's own problems.
        let query = if obj.get("query").is_none() {
            self.error(&path, span, "missing key `query`", None);
            String::new()
        } else {
            self.string(&obj, "query").unwrap_or_default()
        };
        Some(ViewDecl {
            name,
            query,
            options,
            grants: self.grants(&obj),
            comment: self.string(&obj, "comment"),
            origin: Self::with_name(obj.origin(), span),
        })
    }

    fn table(&mut self, name: String, span: Span, node: &Node, path: String) -> Option<TableDecl> {
        // `t:` with nothing under it is a table without columns, as `t: {}` is.
        let empty = Node {
            value: Value::Map(Vec::new()),
            span,
        };
        let node = if node.value == Value::Null {
            &empty
        } else {
            node
        };
        let obj = self.obj(node, &path, TABLE_KEYS)?;
        let primary_key = obj
            .get("primary_key")
            .and_then(|n| self.primary_key(n, obj.field_path("primary_key")));
        let rls = obj
            .get("rls")
            .and_then(|n| self.rls(n, obj.field_path("rls")));
        Some(TableDecl {
            name,
            renamed_from: self.string(&obj, "renamed_from"),
            comment: self.string(&obj, "comment"),
            unlogged: self.flag(&obj, "unlogged"),
            columns: self.list(&obj, "columns", |r, n, p| r.column(n, p)),
            primary_key,
            unique: self.list(&obj, "unique", |r, n, p| r.unique(n, p)),
            foreign_keys: self.list(&obj, "foreign_keys", |r, n, p| r.foreign_key(n, p)),
            checks: self.list(&obj, "checks", |r, n, p| r.check(n, p)),
            exclusions: self.list(&obj, "exclusions", |r, n, p| r.exclusion(n, p)),
            indexes: self.list(&obj, "indexes", |r, n, p| r.index(n, p)),
            rls,
            grants: self.grants(&obj),
            origin: Self::with_name(obj.origin(), span),
        })
    }

    fn column(&mut self, node: &Node, path: String) -> Option<ColumnDecl> {
        let obj = self.obj(node, &path, COLUMN_KEYS)?;
        let references = obj
            .get("references")
            .and_then(|n| self.references(n, obj.field_path("references")));
        let identity = match obj.get("identity") {
            None => None,
            Some(n) => self.identity(n, &obj),
        };
        Some(ColumnDecl {
            name: self.required_string(&obj, "name"),
            data_type: self.required_string(&obj, "type"),
            renamed_from: self.string(&obj, "renamed_from"),
            up: self.sql(&obj, "up"),
            down: self.sql(&obj, "down"),
            pk: self.flag(&obj, "pk"),
            not_null: self.bool(&obj, "not_null"),
            unique: self.flag(&obj, "unique"),
            default: self.sql(&obj, "default"),
            references,
            check: self.sql(&obj, "check"),
            identity,
            generated: self.sql(&obj, "generated"),
            collation: self.string(&obj, "collation"),
            comment: self.string(&obj, "comment"),
            grants: self.grants(&obj),
            origin: obj.origin(),
        })
    }

    fn references(&mut self, node: &Node, path: String) -> Option<ReferencesDecl> {
        let obj = self.obj(node, &path, REFERENCES_KEYS)?;
        Some(ReferencesDecl {
            schema: self.string(&obj, "schema"),
            table: self.required_string(&obj, "table"),
            columns: self.strings(&obj, "columns"),
            on_delete: self.choice(&obj, "on_delete", ACTIONS),
            on_update: self.choice(&obj, "on_update", ACTIONS),
            match_type: self.choice(&obj, "match", MATCHES),
            deferrable: self.flag(&obj, "deferrable"),
            initially_deferred: self.flag(&obj, "initially_deferred"),
            origin: obj.origin(),
        })
    }

    /// `identity:` of the column `column`: a generation word or a mapping.
    fn identity(&mut self, node: &Node, column: &Obj) -> Option<IdentityDecl> {
        let path = column.field_path("identity");
        match &node.value {
            // `identity: always` is the column's own choice of word: the error is about it.
            Value::Str(_) => {
                let generation = self.choice(column, "identity", GENERATIONS)?;
                return Some(IdentityDecl::new(generation));
            }
            Value::Map(_) => {}
            _ => {
                self.wrong_type(&path, node, "`always`, `by_default` or a mapping");
                return None;
            }
        }
        let obj = self.obj(node, &path, IDENTITY_KEYS)?;
        if obj.get("generation").is_none() {
            self.error(&path, obj.span, "missing key `generation`", None);
        }
        let generation = self.choice(&obj, "generation", GENERATIONS)?;
        Some(IdentityDecl {
            generation,
            start: self.int(&obj, "start"),
            increment: self.int(&obj, "increment"),
            min: self.int(&obj, "min"),
            max: self.int(&obj, "max"),
            cache: self.int(&obj, "cache"),
            cycle: self.flag(&obj, "cycle"),
        })
    }

    fn primary_key(&mut self, node: &Node, path: String) -> Option<PrimaryKeyDecl> {
        let obj = self.obj(node, &path, PRIMARY_KEY_KEYS)?;
        self.require(&obj, "columns");
        Some(PrimaryKeyDecl {
            name: self.string(&obj, "name"),
            columns: self.strings(&obj, "columns"),
            deferrable: self.flag(&obj, "deferrable"),
            initially_deferred: self.flag(&obj, "initially_deferred"),
            comment: self.string(&obj, "comment"),
            origin: obj.origin(),
        })
    }

    fn require(&mut self, obj: &Obj, key: &str) {
        if obj.get(key).is_none() {
            self.error(&obj.path, obj.span, format!("missing key `{key}`"), None);
        }
    }

    fn unique(&mut self, node: &Node, path: String) -> Option<UniqueDecl> {
        let obj = self.obj(node, &path, UNIQUE_KEYS)?;
        self.require(&obj, "columns");
        Some(UniqueDecl {
            name: self.string(&obj, "name"),
            columns: self.strings(&obj, "columns"),
            nulls_not_distinct: self.flag(&obj, "nulls_not_distinct"),
            deferrable: self.flag(&obj, "deferrable"),
            initially_deferred: self.flag(&obj, "initially_deferred"),
            comment: self.string(&obj, "comment"),
            origin: obj.origin(),
        })
    }

    fn foreign_key(&mut self, node: &Node, path: String) -> Option<ForeignKeyDecl> {
        let obj = self.obj(node, &path, FOREIGN_KEY_KEYS)?;
        self.require(&obj, "columns");
        self.require(&obj, "references");
        let references = obj
            .get("references")
            .and_then(|n| self.references(n, obj.field_path("references")))?;
        Some(ForeignKeyDecl {
            name: self.string(&obj, "name"),
            columns: self.strings(&obj, "columns"),
            references,
            not_valid: self.flag(&obj, "not_valid"),
            comment: self.string(&obj, "comment"),
            origin: obj.origin(),
        })
    }

    fn check(&mut self, node: &Node, path: String) -> Option<CheckDecl> {
        let obj = self.obj(node, &path, CHECK_KEYS)?;
        self.require(&obj, "expression");
        Some(CheckDecl {
            name: self.string(&obj, "name"),
            expression: self.sql(&obj, "expression").unwrap_or_default(),
            no_inherit: self.flag(&obj, "no_inherit"),
            not_valid: self.flag(&obj, "not_valid"),
            comment: self.string(&obj, "comment"),
            origin: obj.origin(),
        })
    }

    fn exclusion(&mut self, node: &Node, path: String) -> Option<ExclusionDecl> {
        let obj = self.obj(node, &path, EXCLUSION_KEYS)?;
        Some(ExclusionDecl {
            name: self.string(&obj, "name"),
            definition: self.required_string(&obj, "definition"),
            comment: self.string(&obj, "comment"),
            origin: obj.origin(),
        })
    }

    fn index(&mut self, node: &Node, path: String) -> Option<IndexDecl> {
        let obj = self.obj(node, &path, INDEX_KEYS)?;
        let keys = match (obj.get("columns"), obj.get("keys")) {
            (Some(_), Some(_)) => {
                self.error(
                    &path,
                    obj.span,
                    "both `columns` and `keys` given",
                    Some(
                        "use `columns` for plain columns, `keys` for expressions or options".into(),
                    ),
                );
                Vec::new()
            }
            (Some(_), None) => self
                .strings(&obj, "columns")
                .into_iter()
                .map(|c| IndexKeyDecl {
                    column: Some(c),
                    ..IndexKeyDecl::default()
                })
                .collect(),
            (None, Some(_)) => self.list(&obj, "keys", |r, n, p| r.index_key(n, p)),
            (None, None) => {
                self.error(&path, obj.span, "missing key `columns` (or `keys`)", None);
                Vec::new()
            }
        };
        Some(IndexDecl {
            name: self.string(&obj, "name"),
            unique: self.flag(&obj, "unique"),
            method: self.string(&obj, "using"),
            keys,
            include: self.strings(&obj, "include"),
            predicate: self.sql(&obj, "where"),
            nulls_not_distinct: self.flag(&obj, "nulls_not_distinct"),
            comment: self.string(&obj, "comment"),
            origin: obj.origin(),
        })
    }

    fn index_key(&mut self, node: &Node, path: String) -> Option<IndexKeyDecl> {
        let obj = self.obj(node, &path, INDEX_KEY_KEYS)?;
        let key = IndexKeyDecl {
            column: self.string(&obj, "column"),
            expression: self.sql(&obj, "expression"),
            opclass: self.string(&obj, "opclass"),
            collation: self.string(&obj, "collation"),
            descending: self.choice(&obj, "order", ORDERS).unwrap_or(false),
            nulls_first: self.choice(&obj, "nulls", NULLS),
        };
        if key.column.is_some() == key.expression.is_some() {
            self.error(
                &path,
                obj.span,
                "an index key needs exactly one of `column` and `expression`",
                None,
            );
        }
        Some(key)
    }

    fn rls(&mut self, node: &Node, path: String) -> Option<RlsDecl> {
        let obj = self.obj(node, &path, RLS_KEYS)?;
        Some(RlsDecl {
            enabled: self.bool(&obj, "enabled"),
            forced: self.flag(&obj, "forced"),
            policies: self.list(&obj, "policies", |r, n, p| r.policy(n, p)),
            origin: obj.origin(),
        })
    }

    fn policy(&mut self, node: &Node, path: String) -> Option<PolicyDecl> {
        let obj = self.obj(node, &path, POLICY_KEYS)?;
        Some(PolicyDecl {
            name: self.required_string(&obj, "name"),
            command: self
                .choice(&obj, "for", COMMANDS)
                .unwrap_or(PolicyCommand::All),
            permissive: self.choice(&obj, "as", POLICY_KINDS).unwrap_or(true),
            roles: self.strings(&obj, "roles"),
            using: self.sql(&obj, "using"),
            with_check: self.sql(&obj, "with_check"),
            comment: self.string(&obj, "comment"),
            origin: obj.origin(),
        })
    }

    fn grants(&mut self, obj: &Obj) -> Vec<GrantDecl> {
        self.list(obj, "grants", |r, node, path| {
            let g = r.obj(node, &path, GRANT_KEYS)?;
            let privileges = match g.get("privilege") {
                None => {
                    r.error(&path, g.span, "missing key `privilege`", None);
                    Vec::new()
                }
                Some(Node {
                    value: Value::Str(s),
                    ..
                }) => vec![s.clone()],
                Some(Node {
                    value: Value::Seq(_),
                    ..
                }) => r.strings(&g, "privilege"),
                Some(other) => {
                    r.wrong_type(
                        &g.field_path("privilege"),
                        other,
                        "a privilege or a list of them",
                    );
                    Vec::new()
                }
            };
            Some(GrantDecl {
                role: r.required_string(&g, "role"),
                privileges,
                grantable: r.flag(&g, "grantable"),
                origin: g.origin(),
            })
        })
    }
}
