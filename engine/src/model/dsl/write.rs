//! [`Document`] → YAML or JSON text, in a fixed order and style so that the same document
//! always gives the same bytes and a change to one object changes few lines.
//!
//! Layout: mappings of named objects (schemas, tables, …) in block style; each column, index,
//! constraint, policy and grant on one line in flow style, as in the seed example.

use crate::catalog::{ForeignKeyAction, ForeignKeyMatch, PolicyCommand};

use super::document::*;
use super::read::{ACTIONS, COMMANDS, GENERATIONS, MATCHES};

/// The value tree the writers print.
#[derive(Debug, Clone, PartialEq)]
enum Out {
    Str(String),
    /// SQL text: written bare in YAML when it reads back as the same literal (`false`, `0`).
    Sql(String),
    Bool(bool),
    Int(i64),
    Seq(Vec<Out>, bool),
    Map(Vec<(String, Out)>, bool),
}

/// Collects the fields of one mapping, leaving out those at their defaults.
struct Fields(Vec<(String, Out)>);

impl Fields {
    fn new() -> Self {
        Fields(Vec::new())
    }
    fn put(&mut self, key: &str, value: Out) -> &mut Self {
        self.0.push((key.to_owned(), value));
        self
    }
    fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.put(key, Out::Str(value.to_owned()))
    }
    fn opt_str(&mut self, key: &str, value: &Option<String>) -> &mut Self {
        if let Some(v) = value {
            self.str(key, v);
        }
        self
    }
    fn opt_sql(&mut self, key: &str, value: &Option<String>) -> &mut Self {
        if let Some(v) = value {
            self.put(key, Out::Sql(v.clone()));
        }
        self
    }
    fn flag(&mut self, key: &str, value: bool) -> &mut Self {
        if value {
            self.put(key, Out::Bool(true));
        }
        self
    }
    fn opt_int(&mut self, key: &str, value: Option<i64>) -> &mut Self {
        if let Some(v) = value {
            self.put(key, Out::Int(v));
        }
        self
    }
    fn names(&mut self, key: &str, values: &[String]) -> &mut Self {
        if !values.is_empty() {
            self.put(key, strings(values));
        }
        self
    }
    fn list(&mut self, key: &str, values: Vec<Out>) -> &mut Self {
        if !values.is_empty() {
            self.put(key, Out::Seq(values, false));
        }
        self
    }
    fn named(&mut self, key: &str, values: Vec<(String, Out)>) -> &mut Self {
        if !values.is_empty() {
            self.put(key, Out::Map(values, false));
        }
        self
    }
    fn flow(self) -> Out {
        Out::Map(self.0, true)
    }
    fn block(self) -> Out {
        Out::Map(self.0, false)
    }
}

fn strings(values: &[String]) -> Out {
    Out::Seq(values.iter().map(|v| Out::Str(v.clone())).collect(), true)
}

fn word<T: PartialEq + Copy>(table: &[(&'static str, T)], value: T) -> Out {
    let w = table
        .iter()
        .find(|(_, v)| *v == value)
        .map_or("", |(w, _)| *w);
    Out::Str(w.to_owned())
}

fn grants(list: &[GrantDecl]) -> Vec<Out> {
    list.iter()
        .map(|g| {
            let mut f = Fields::new();
            f.str("role", &g.role);
            match g.privileges.as_slice() {
                [one] => {
                    f.str("privilege", one);
                }
                many => {
                    f.put("privilege", strings(many));
                }
            }
            f.flag("grantable", g.grantable);
            f.flow()
        })
        .collect()
}

fn references(r: &ReferencesDecl) -> Out {
    let mut f = Fields::new();
    f.opt_str("schema", &r.schema)
        .str("table", &r.table)
        .names("columns", &r.columns);
    if let Some(a) = r.on_delete.filter(|a| *a != ForeignKeyAction::NoAction) {
        f.put("on_delete", word(ACTIONS, a));
    }
    if let Some(a) = r.on_update.filter(|a| *a != ForeignKeyAction::NoAction) {
        f.put("on_update", word(ACTIONS, a));
    }
    if let Some(m) = r.match_type.filter(|m| *m != ForeignKeyMatch::Simple) {
        f.put("match", word(MATCHES, m));
    }
    f.flag("deferrable", r.deferrable)
        .flag("initially_deferred", r.initially_deferred);
    f.flow()
}

fn sequence_fields(f: &mut Fields, options: [Option<i64>; 5], cycle: bool) {
    let [start, increment, min, max, cache] = options;
    f.opt_int("start", start)
        .opt_int("increment", increment)
        .opt_int("min", min)
        .opt_int("max", max)
        .opt_int("cache", cache)
        .flag("cycle", cycle);
}

fn identity(id: &IdentityDecl) -> Out {
    let options = [id.start, id.increment, id.min, id.max, id.cache];
    if options.iter().all(Option::is_none) && !id.cycle {
        return word(GENERATIONS, id.generation);
    }
    let mut f = Fields::new();
    f.put("generation", word(GENERATIONS, id.generation));
    sequence_fields(&mut f, options, id.cycle);
    f.flow()
}

fn column(c: &ColumnDecl) -> Out {
    let mut f = Fields::new();
    f.str("name", &c.name)
        .opt_str("renamed_from", &c.renamed_from)
        .str("type", &c.data_type)
        .opt_sql("up", &c.up)
        .opt_sql("down", &c.down)
        .flag("pk", c.pk);
    if let Some(nn) = c.not_null {
        f.put("not_null", Out::Bool(nn));
    }
    f.flag("unique", c.unique).opt_sql("default", &c.default);
    if let Some(r) = &c.references {
        f.put("references", references(r));
    }
    f.opt_sql("check", &c.check);
    if let Some(id) = &c.identity {
        f.put("identity", identity(id));
    }
    f.opt_sql("generated", &c.generated)
        .opt_str("collation", &c.collation)
        .opt_str("comment", &c.comment)
        .list("grants", grants(&c.grants));
    f.flow()
}

fn index(i: &IndexDecl) -> Out {
    let mut f = Fields::new();
    f.opt_str("name", &i.name).flag("unique", i.unique);
    if let Some(m) = i.method.as_ref().filter(|m| m.as_str() != "btree") {
        f.str("using", m);
    }
    let plain = i.keys.iter().all(|k| {
        k.column.is_some()
            && k.expression.is_none()
            && k.opclass.is_none()
            && k.collation.is_none()
            && !k.descending
            && k.nulls_first.is_none_or(|n| n == k.descending)
    });
    if plain {
        let columns: Vec<String> = i.keys.iter().filter_map(|k| k.column.clone()).collect();
        f.put("columns", strings(&columns));
    } else {
        let keys = i
            .keys
            .iter()
            .map(|k| {
                let mut kf = Fields::new();
                kf.opt_str("column", &k.column)
                    .opt_sql("expression", &k.expression)
                    .opt_str("opclass", &k.opclass)
                    .opt_str("collation", &k.collation);
                if k.descending {
                    kf.str("order", "desc");
                }
                if let Some(n) = k.nulls_first.filter(|n| *n != k.descending) {
                    kf.str("nulls", if n { "first" } else { "last" });
                }
                kf.flow()
            })
            .collect();
        f.put("keys", Out::Seq(keys, true));
    }
    f.names("include", &i.include)
        .opt_sql("where", &i.predicate)
        .flag("nulls_not_distinct", i.nulls_not_distinct)
        .opt_str("comment", &i.comment);
    f.flow()
}

fn policy(p: &PolicyDecl) -> Out {
    let mut f = Fields::new();
    f.str("name", &p.name);
    if p.command != PolicyCommand::All {
        f.put("for", word(COMMANDS, p.command));
    }
    if !p.permissive {
        f.str("as", "restrictive");
    }
    f.names("roles", &p.roles)
        .opt_sql("using", &p.using)
        .opt_sql("with_check", &p.with_check)
        .opt_str("comment", &p.comment);
    f.flow()
}

fn table(t: &TableDecl) -> Out {
    let mut f = Fields::new();
    f.opt_str("renamed_from", &t.renamed_from)
        .opt_str("comment", &t.comment)
        .flag("unlogged", t.unlogged)
        .list("columns", t.columns.iter().map(column).collect());
    if let Some(pk) = &t.primary_key {
        let mut pf = Fields::new();
        pf.opt_str("name", &pk.name)
            .names("columns", &pk.columns)
            .flag("deferrable", pk.deferrable)
            .flag("initially_deferred", pk.initially_deferred)
            .opt_str("comment", &pk.comment);
        f.put("primary_key", pf.flow());
    }
    f.list(
        "unique",
        t.unique
            .iter()
            .map(|u| {
                let mut uf = Fields::new();
                uf.opt_str("name", &u.name)
                    .names("columns", &u.columns)
                    .flag("nulls_not_distinct", u.nulls_not_distinct)
                    .flag("deferrable", u.deferrable)
                    .flag("initially_deferred", u.initially_deferred)
                    .opt_str("comment", &u.comment);
                uf.flow()
            })
            .collect(),
    );
    f.list(
        "foreign_keys",
        t.foreign_keys
            .iter()
            .map(|fk| {
                let mut ff = Fields::new();
                ff.opt_str("name", &fk.name)
                    .names("columns", &fk.columns)
                    .put("references", references(&fk.references))
                    .flag("not_valid", fk.not_valid)
                    .opt_str("comment", &fk.comment);
                ff.flow()
            })
            .collect(),
    );
    f.list(
        "checks",
        t.checks
            .iter()
            .map(|c| {
                let mut cf = Fields::new();
                cf.opt_str("name", &c.name)
                    .put("expression", Out::Sql(c.expression.clone()))
                    .flag("no_inherit", c.no_inherit)
                    .flag("not_valid", c.not_valid)
                    .opt_str("comment", &c.comment);
                cf.flow()
            })
            .collect(),
    );
    f.list(
        "exclusions",
        t.exclusions
            .iter()
            .map(|x| {
                let mut xf = Fields::new();
                xf.opt_str("name", &x.name)
                    .str("definition", &x.definition)
                    .opt_str("comment", &x.comment);
                xf.flow()
            })
            .collect(),
    );
    f.list("indexes", t.indexes.iter().map(index).collect());
    if let Some(rls) = &t.rls {
        let mut rf = Fields::new();
        if let Some(enabled) = rls.enabled {
            rf.put("enabled", Out::Bool(enabled));
        }
        rf.flag("forced", rls.forced)
            .list("policies", rls.policies.iter().map(policy).collect());
        f.put("rls", rf.block());
    }
    f.list("grants", grants(&t.grants));
    f.block()
}

fn document(doc: &Document) -> Out {
    let mut f = Fields::new();
    f.put("version", Out::Int(i64::from(doc.version)));
    if let Some(base) = &doc.base {
        f.str("base", &base.0);
    }
    f.list(
        "extensions",
        doc.extensions
            .iter()
            .map(|e| {
                let mut ef = Fields::new();
                ef.str("name", &e.name).opt_str("schema", &e.schema);
                if !e.required {
                    ef.put("required", Out::Bool(false));
                }
                ef.block()
            })
            .collect(),
    );
    let schemas = doc
        .schemas
        .iter()
        .map(|s| {
            let mut sf = Fields::new();
            sf.opt_str("comment", &s.comment);
            sf.named(
                "enums",
                s.enums
                    .iter()
                    .map(|e| {
                        let value = if e.comment.is_none() {
                            strings(&e.labels)
                        } else {
                            let mut ef = Fields::new();
                            ef.put("labels", strings(&e.labels))
                                .opt_str("comment", &e.comment);
                            ef.flow()
                        };
                        (e.name.clone(), value)
                    })
                    .collect(),
            );
            sf.named(
                "sequences",
                s.sequences
                    .iter()
                    .map(|q| {
                        let mut qf = Fields::new();
                        qf.opt_str("type", &q.data_type);
                        sequence_fields(
                            &mut qf,
                            [q.start, q.increment, q.min, q.max, q.cache],
                            q.cycle,
                        );
                        if let Some(o) = &q.owned_by {
                            let mut of = Fields::new();
                            of.str("table", &o.table).str("column", &o.column);
                            qf.put("owned_by", of.flow());
                        }
                        qf.list("grants", grants(&q.grants))
                            .opt_str("comment", &q.comment);
                        (q.name.clone(), qf.flow())
                    })
                    .collect(),
            );
            sf.named(
                "tables",
                s.tables
                    .iter()
                    .map(|t| (t.name.clone(), table(t)))
                    .collect(),
            );
            sf.named(
                "views",
                s.views
                    .iter()
                    .map(|v| {
                        let mut vf = Fields::new();
                        vf.put("query", Out::Sql(v.query.clone()));
                        if !v.options.is_empty() {
                            let mut of = Fields::new();
                            for (k, value) in &v.options {
                                let out = match value.as_str() {
                                    "true" => Out::Bool(true),
                                    "false" => Out::Bool(false),
                                    other => Out::Str(other.to_owned()),
                                };
                                of.put(k, out);
                            }
                            vf.put("options", of.flow());
                        }
                        vf.list("grants", grants(&v.grants))
                            .opt_str("comment", &v.comment);
                        (v.name.clone(), vf.block())
                    })
                    .collect(),
            );
            (s.name.clone(), sf.block())
        })
        .collect();
    f.named("schemas", schemas);
    f.block()
}

// ---------------------------------------------------------------------------------------------
// YAML

/// Whether `s` can be written as a plain YAML scalar and read back as the same string, in
/// block and in flow context alike. Deliberately narrow: anything unusual is quoted.
fn yaml_plain(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if !(first.is_ascii_alphabetic() || first == '_') || s.ends_with(' ') {
        return false;
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ' ' | '.' | '(' | ')' | '-' | '/'))
    {
        return false;
    }
    // Words YAML 1.1 or 1.2 resolves to booleans or null.
    let lower = s.to_ascii_lowercase();
    !matches!(
        lower.as_str(),
        "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null"
    )
}

fn yaml_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            // Control characters, and those YAML reads as line breaks or byte-order marks.
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn yaml_str(s: &str) -> String {
    if yaml_plain(s) {
        s.to_owned()
    } else {
        yaml_quoted(s)
    }
}

fn is_int_literal(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && s.parse::<i64>().is_ok()
}

fn yaml_inline(out: &Out) -> String {
    match out {
        Out::Str(s) => yaml_str(s),
        Out::Sql(s) if s == "true" || s == "false" || is_int_literal(s) => s.clone(),
        Out::Sql(s) => yaml_str(s),
        Out::Bool(b) => b.to_string(),
        Out::Int(i) => i.to_string(),
        Out::Seq(items, _) => {
            let inner: Vec<String> = items.iter().map(yaml_inline).collect();
            format!("[{}]", inner.join(", "))
        }
        Out::Map(entries, _) if entries.is_empty() => "{}".to_owned(),
        Out::Map(entries, _) => {
            let inner: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{}: {}", yaml_str(k), yaml_inline(v)))
                .collect();
            format!("{{ {} }}", inner.join(", "))
        }
    }
}

fn is_block(out: &Out) -> bool {
    match out {
        Out::Map(entries, flow) => !flow && !entries.is_empty(),
        Out::Seq(items, flow) => !flow && !items.is_empty(),
        _ => false,
    }
}

fn yaml_map(entries: &[(String, Out)], indent: usize, text: &mut String) {
    let pad = " ".repeat(indent);
    for (key, value) in entries {
        text.push_str(&pad);
        text.push_str(&yaml_str(key));
        text.push(':');
        yaml_value(value, indent, text);
    }
}

/// Writes the value of a key (after `key:`), at the key's indentation.
fn yaml_value(value: &Out, indent: usize, text: &mut String) {
    match value {
        Out::Map(entries, false) if !entries.is_empty() => {
            text.push('\n');
            yaml_map(entries, indent + 2, text);
        }
        Out::Seq(items, false) if !items.is_empty() => {
            text.push('\n');
            let pad = " ".repeat(indent + 2);
            for item in items {
                text.push_str(&pad);
                text.push('-');
                match item {
                    Out::Map(entries, false) if !entries.is_empty() => {
                        // The first entry goes on the dash's line.
                        let mut nested = String::new();
                        yaml_map(entries, indent + 4, &mut nested);
                        text.push(' ');
                        text.push_str(nested.trim_start());
                    }
                    other if is_block(other) => {
                        yaml_value(other, indent + 2, text);
                    }
                    other => {
                        text.push(' ');
                        text.push_str(&yaml_inline(other));
                        text.push('\n');
                    }
                }
            }
        }
        other => {
            text.push(' ');
            text.push_str(&yaml_inline(other));
            text.push('\n');
        }
    }
}

/// The document as YAML.
pub fn document_to_yaml(doc: &Document) -> String {
    let mut text = String::new();
    if let Out::Map(entries, _) = document(doc) {
        yaml_map(&entries, 0, &mut text);
    }
    text
}

// ---------------------------------------------------------------------------------------------
// JSON

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn json_value(out: &Out, indent: usize, text: &mut String) {
    match out {
        Out::Str(s) | Out::Sql(s) => text.push_str(&json_str(s)),
        Out::Bool(b) => text.push_str(if *b { "true" } else { "false" }),
        Out::Int(i) => text.push_str(&i.to_string()),
        Out::Seq(items, _) if items.is_empty() => text.push_str("[]"),
        // Lists of names stay on one line, as in the YAML.
        Out::Seq(items, _) if items.iter().all(|i| matches!(i, Out::Str(_) | Out::Sql(_))) => {
            let inner: Vec<String> = items
                .iter()
                .map(|i| match i {
                    Out::Str(s) | Out::Sql(s) => json_str(s),
                    _ => String::new(),
                })
                .collect();
            text.push('[');
            text.push_str(&inner.join(", "));
            text.push(']');
        }
        Out::Map(entries, _) if entries.is_empty() => text.push_str("{}"),
        Out::Seq(items, _) => {
            text.push('[');
            for (i, item) in items.iter().enumerate() {
                text.push_str(if i == 0 { "\n" } else { ",\n" });
                text.push_str(&" ".repeat(indent + 2));
                json_value(item, indent + 2, text);
            }
            text.push('\n');
            text.push_str(&" ".repeat(indent));
            text.push(']');
        }
        Out::Map(entries, _) => {
            text.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                text.push_str(if i == 0 { "\n" } else { ",\n" });
                text.push_str(&" ".repeat(indent + 2));
                text.push_str(&json_str(k));
                text.push_str(": ");
                json_value(v, indent + 2, text);
            }
            text.push('\n');
            text.push_str(&" ".repeat(indent));
            text.push('}');
        }
    }
}

/// The document as JSON (two-space indentation, keys in the same order as the YAML).
pub fn document_to_json(doc: &Document) -> String {
    let mut text = String::new();
    json_value(&document(doc), 0, &mut text);
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_or_quoted() {
        for plain in [
            "users",
            "gen_random_uuid()",
            "text",
            "character varying(4)",
            "public.todo_state",
            "a-b",
        ] {
            assert_eq!(yaml_str(plain), plain);
        }
        for quoted in [
            "",
            "true",
            "No",
            "null",
            "1abc",
            "a: b",
            "x #y",
            "numeric(10,2)",
            "[x]",
            "-x",
            "'open'",
            "é",
            "trailing ",
            "tenant_id() = tenant_id",
        ] {
            assert!(yaml_str(quoted).starts_with('"'), "{quoted}");
        }
        assert_eq!(
            yaml_quoted("a\"b\\c\nd\u{2028}"),
            "\"a\\\"b\\\\c\\nd\\u2028\""
        );
    }

    #[test]
    fn sql_literals_stay_bare() {
        assert_eq!(yaml_inline(&Out::Sql("false".into())), "false");
        assert_eq!(yaml_inline(&Out::Sql("0".into())), "0");
        assert_eq!(yaml_inline(&Out::Sql("-12".into())), "-12");
        assert_eq!(yaml_inline(&Out::Sql("007".into())), "\"007\"");
        assert_eq!(yaml_inline(&Out::Sql("now()".into())), "now()");
    }
}
