//! Type names as written (`int`, `varchar(20)`, `timestamptz`, `todo_state[]`) to type names as
//! `format_type` prints them with an empty `search_path` (`integer`, `character varying(20)`,
//! `timestamp with time zone`, `public.todo_state[]`), which is what the catalog holds.
//!
//! The text is parsed by Postgres' own grammar (pg_query): first in type-name mode, which
//! accepts exactly one type name and nothing else, then inside a column definition, which
//! yields the modifiers and array bounds the type-name mode leaves out.

use pg_query::protobuf::{a_const, node::Node as N, Node, TypeName};

use super::names::{pg_qualified, pg_quote};

/// What a type name resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// A type as `format_type` prints it.
    Type(String),
    /// `smallserial`/`serial`/`bigserial`: the integer type behind it (`smallint`, `integer`,
    /// `bigint`).
    Serial(&'static str),
}

/// What the caller knows about user types, to resolve and check them.
pub trait TypeScope {
    /// The schema holding an enum `name` visible from the current schema (the current schema
    /// first, then `public`), for unqualified names.
    fn find_enum(&self, name: &str) -> Option<String>;
    /// Whether `schema.name` is a known user type, or may be one (a schema the document does
    /// not manage, a schema an extension lives in). `Err` carries suggestions.
    fn check_qualified(&self, schema: &str, name: &str) -> Result<(), String>;
}

/// Normalises `text`; `Err` says why it is not a type name Lockplane can use.
pub fn resolve(text: &str, scope: &dyn TypeScope) -> Result<Resolved, String> {
    let type_name = parse(text)?;
    if type_name.setof {
        return Err("`SETOF` is not a column type".into());
    }
    if type_name.pct_type {
        return Err("`%TYPE` is not supported".into());
    }
    let names: Vec<&str> = type_name
        .names
        .iter()
        .filter_map(|n| match &n.node {
            Some(N::String(s)) => Some(s.sval.as_str()),
            _ => None,
        })
        .collect();
    if names.len() != type_name.names.len() || names.is_empty() {
        return Err("not a type name".into());
    }
    let is_array = !type_name.array_bounds.is_empty();
    let typmods = typmods(&type_name.typmods)?;

    let (schema, name) = match names.as_slice() {
        [name] => (None, *name),
        ["pg_catalog", name] => (Some("pg_catalog"), *name),
        [schema, name] => (Some(*schema), *name),
        _ => return Err("cross-database type references are not supported".into()),
    };

    if schema.is_none() || schema == Some("pg_catalog") {
        if let Some(int_type) = serial(name) {
            if is_array || !typmods.is_empty() {
                return Err(format!("`{name}` cannot have modifiers or be an array"));
            }
            return Ok(Resolved::Serial(int_type));
        }
        if let Some(printed) = builtin(name, &typmods)? {
            return Ok(Resolved::Type(array(printed, is_array)));
        }
        if let Some(element) = name.strip_prefix('_') {
            if let Some(printed) = builtin(element, &typmods)? {
                return Ok(Resolved::Type(format!("{printed}[]")));
            }
        }
        if schema == Some("pg_catalog") {
            return Err(format!("unknown type `pg_catalog.{name}`"));
        }
    }
    if !typmods.is_empty() {
        return Err(format!("type `{name}` does not take modifiers"));
    }
    let schema = match schema {
        Some(s) => {
            scope.check_qualified(s, name)?;
            s.to_owned()
        }
        None => match scope.find_enum(name) {
            Some(s) => s,
            None => {
                return Err(format!("unknown type `{name}`"));
            }
        },
    };
    Ok(Resolved::Type(array(pg_qualified(&schema, name), is_array)))
}

/// Every built-in name the reader understands, for suggestions.
pub const BUILTIN_NAMES: &[&str] = &[
    "int",
    "bigint",
    "bigserial",
    "bit",
    "boolean",
    "bytea",
    "char",
    "cidr",
    "date",
    "double precision",
    "inet",
    "integer",
    "interval",
    "json",
    "jsonb",
    "numeric",
    "real",
    "serial",
    "smallint",
    "smallserial",
    "text",
    "time",
    "timestamp",
    "timestamptz",
    "timetz",
    "tsvector",
    "uuid",
    "varchar",
];

fn array(printed: String, is_array: bool) -> String {
    if is_array {
        // `format_type` prints one `[]` whatever the number of dimensions written: Postgres
        // does not enforce them.
        format!("{printed}[]")
    } else {
        printed
    }
}

fn serial(name: &str) -> Option<&'static str> {
    match name {
        "smallserial" | "serial2" => Some("smallint"),
        "serial" | "serial4" => Some("integer"),
        "bigserial" | "serial8" => Some("bigint"),
        _ => None,
    }
}

/// Types printed by their own name, without modifiers.
const PLAIN: &[&str] = &[
    "text",
    "uuid",
    "json",
    "jsonb",
    "jsonpath",
    "bytea",
    "date",
    "inet",
    "cidr",
    "macaddr",
    "macaddr8",
    "money",
    "tsvector",
    "tsquery",
    "xml",
    "point",
    "line",
    "lseg",
    "box",
    "path",
    "polygon",
    "circle",
    "oid",
    "xid",
    "xid8",
    "cid",
    "tid",
    "name",
    "regclass",
    "regtype",
    "regproc",
    "regprocedure",
    "regoper",
    "regoperator",
    "regconfig",
    "regdictionary",
    "regnamespace",
    "regrole",
    "regcollation",
    "pg_lsn",
    "pg_snapshot",
    "txid_snapshot",
    "int4range",
    "int8range",
    "numrange",
    "tsrange",
    "tstzrange",
    "daterange",
    "int4multirange",
    "int8multirange",
    "nummultirange",
    "tsmultirange",
    "tstzmultirange",
    "datemultirange",
    "refcursor",
];

fn no_typmods(name: &str, typmods: &[i64]) -> Result<(), String> {
    if typmods.is_empty() {
        Ok(())
    } else {
        Err(format!("type `{name}` does not take modifiers"))
    }
}

fn one_typmod(name: &str, typmods: &[i64], max: i64) -> Result<Option<i64>, String> {
    match typmods {
        [] => Ok(None),
        [n] if (1..=max).contains(n) => Ok(Some(*n)),
        [n] => Err(format!(
            "length for type `{name}` must be between 1 and {max}, not {n}"
        )),
        _ => Err(format!("type `{name}` takes one modifier")),
    }
}

/// Fractional-second precision: Postgres reduces anything above 6 to 6 (with a warning).
fn precision(name: &str, typmods: &[i64]) -> Result<String, String> {
    match typmods {
        [] => Ok(String::new()),
        [p] if *p >= 0 => Ok(format!("({})", (*p).min(6))),
        [p] => Err(format!(
            "precision of `{name}` must not be negative, not {p}"
        )),
        _ => Err(format!("type `{name}` takes one modifier")),
    }
}

/// `format_type`'s text for a `pg_catalog` type, `None` when `name` is not one.
fn builtin(name: &str, typmods: &[i64]) -> Result<Option<String>, String> {
    const MAX_CHAR_LENGTH: i64 = 10_485_760;
    const MAX_BIT_LENGTH: i64 = 83_886_080;
    let printed = match name {
        "int2" | "smallint" => {
            no_typmods(name, typmods)?;
            "smallint".to_owned()
        }
        "int4" | "integer" | "int" => {
            no_typmods(name, typmods)?;
            "integer".to_owned()
        }
        "int8" | "bigint" => {
            no_typmods(name, typmods)?;
            "bigint".to_owned()
        }
        "float4" | "real" => {
            no_typmods(name, typmods)?;
            "real".to_owned()
        }
        "float8" => {
            no_typmods(name, typmods)?;
            "double precision".to_owned()
        }
        "bool" | "boolean" => {
            no_typmods(name, typmods)?;
            "boolean".to_owned()
        }
        "numeric" | "decimal" => match typmods {
            [] => "numeric".to_owned(),
            [p] | [p, _] if !(1..=1000).contains(p) => {
                return Err(format!(
                    "precision of `numeric` must be between 1 and 1000, not {p}"
                ))
            }
            [p] => format!("numeric({p},0)"),
            [_, s] if !(-1000..=1000).contains(s) => {
                return Err(format!(
                    "scale of `numeric` must be between -1000 and 1000, not {s}"
                ))
            }
            [p, s] => format!("numeric({p},{s})"),
            _ => return Err("type `numeric` takes at most two modifiers".into()),
        },
        "varchar" => match one_typmod(name, typmods, MAX_CHAR_LENGTH)? {
            Some(n) => format!("character varying({n})"),
            None => "character varying".to_owned(),
        },
        "bpchar" => match one_typmod(name, typmods, MAX_CHAR_LENGTH)? {
            Some(n) => format!("character({n})"),
            // `bpchar` without a length is not `character`, which means `character(1)`.
            None => "bpchar".to_owned(),
        },
        "char" => {
            // Only reachable quoted (`"char"`): the one-byte internal type.
            no_typmods(name, typmods)?;
            "\"char\"".to_owned()
        }
        "bit" => match one_typmod(name, typmods, MAX_BIT_LENGTH)? {
            Some(n) => format!("bit({n})"),
            None => "bit".to_owned(),
        },
        "varbit" => match one_typmod(name, typmods, MAX_BIT_LENGTH)? {
            Some(n) => format!("bit varying({n})"),
            None => "bit varying".to_owned(),
        },
        "timestamp" => format!("timestamp{} without time zone", precision(name, typmods)?),
        "timestamptz" => format!("timestamp{} with time zone", precision(name, typmods)?),
        "time" => format!("time{} without time zone", precision(name, typmods)?),
        "timetz" => format!("time{} with time zone", precision(name, typmods)?),
        "interval" => interval(typmods)?,
        _ if PLAIN.contains(&name) => {
            no_typmods(name, typmods)?;
            name.to_owned()
        }
        _ => return Ok(None),
    };
    Ok(Some(printed))
}

/// `interval` with its field restriction and precision, as `intervaltypmodout` prints them.
fn interval(typmods: &[i64]) -> Result<String, String> {
    const MONTH: i64 = 1 << 1;
    const YEAR: i64 = 1 << 2;
    const DAY: i64 = 1 << 3;
    const HOUR: i64 = 1 << 10;
    const MINUTE: i64 = 1 << 11;
    const SECOND: i64 = 1 << 12;
    const FULL_RANGE: i64 = 0x7FFF;
    let (fields, precision) = match typmods {
        [] => (FULL_RANGE, None),
        [f] => (*f, None),
        [f, p] => (*f, Some(*p)),
        _ => return Err("type `interval` takes at most two modifiers".into()),
    };
    let fields_text = match fields {
        FULL_RANGE => "",
        YEAR => " year",
        MONTH => " month",
        DAY => " day",
        HOUR => " hour",
        MINUTE => " minute",
        SECOND => " second",
        f if f == YEAR | MONTH => " year to month",
        f if f == DAY | HOUR => " day to hour",
        f if f == DAY | HOUR | MINUTE => " day to minute",
        f if f == DAY | HOUR | MINUTE | SECOND => " day to second",
        f if f == HOUR | MINUTE => " hour to minute",
        f if f == HOUR | MINUTE | SECOND => " hour to second",
        f if f == MINUTE | SECOND => " minute to second",
        _ => return Err("invalid `interval` field restriction".into()),
    };
    match precision {
        None => Ok(format!("interval{fields_text}")),
        Some(p) if p >= 0 => Ok(format!("interval{fields_text}({})", p.min(6))),
        Some(p) => Err(format!(
            "precision of `interval` must not be negative, not {p}"
        )),
    }
}

fn typmods(nodes: &[Node]) -> Result<Vec<i64>, String> {
    nodes
        .iter()
        .map(|n| match &n.node {
            Some(N::AConst(c)) => match &c.val {
                Some(a_const::Val::Ival(i)) => Ok(i64::from(i.ival)),
                _ => Err("type modifiers must be integers".to_owned()),
            },
            _ => Err("type modifiers must be integers".to_owned()),
        })
        .collect()
}

thread_local! {
    static TYPES: crate::normalize::Memo<Result<TypeName, String>> = Default::default();
}

fn parse(text: &str) -> Result<TypeName, String> {
    crate::normalize::memoized(&TYPES, text, parse_uncached)
}

fn parse_uncached(text: &str) -> Result<TypeName, String> {
    let bad = |message: String| format!("cannot parse type `{text}`: {message}");
    // Type-name mode accepts exactly one type name: nothing can be smuggled around it.
    pg_query::parse(text, pg_query::ParserOptions::TYPE_NAME)
        .map_err(|e| bad(super::sql::clean(&e.to_string())))?;
    // The newline ends a trailing `--` comment before the closing parenthesis.
    let sql = format!("CREATE TABLE t (c {text}\n)");
    let parsed = pg_query::parse(&sql, 0).map_err(|e| bad(super::sql::clean(&e.to_string())))?;
    let stmt = match parsed.protobuf.stmts.as_slice() {
        [stmt] => stmt.stmt.as_ref().and_then(|n| n.node.as_ref()),
        _ => None,
    };
    let Some(N::CreateStmt(create)) = stmt else {
        return Err(bad("not a type name".into()));
    };
    let column = match create.table_elts.as_slice() {
        [elt] => match &elt.node {
            Some(N::ColumnDef(c)) if c.colname == "c" && c.constraints.is_empty() => Some(c),
            _ => None,
        },
        _ => None,
    };
    column
        .and_then(|c| c.type_name.clone())
        .filter(|_| column.is_some_and(|c| c.coll_clause.is_none()))
        .ok_or_else(|| bad("not a type name".into()))
}

/// Whether `printed` (a catalog type) is one of the integer types sequences can have.
pub fn is_sequence_type(printed: &str) -> bool {
    matches!(printed, "smallint" | "integer" | "bigint")
}

/// Range of the integer type `printed` (a catalog type name).
pub fn integer_range(printed: &str) -> Option<(i64, i64)> {
    match printed {
        "smallint" => Some((i64::from(i16::MIN), i64::from(i16::MAX))),
        "integer" => Some((i64::from(i32::MIN), i64::from(i32::MAX))),
        "bigint" => Some((i64::MIN, i64::MAX)),
        _ => None,
    }
}

/// The catalog's type text back to how the DSL writes it: built-in types as printed, user
/// types unqualified when they live in `schema` (`public.todo_state` in `public` →
/// `todo_state`), quoted parts unquoted where the reader will accept them.
pub fn to_dsl(printed: &str, schema: &str, scope: &dyn TypeScope) -> String {
    let (base, suffix) = match printed.strip_suffix("[]") {
        Some(b) => (b, "[]"),
        None => (printed, ""),
    };
    if let Some(parts) = super::names::split_printed_name(base) {
        if let [s, name] = parts.as_slice() {
            // Only drop the qualifier when reading it back finds the same type.
            let local = s == schema && scope.find_enum(name).as_deref() == Some(schema);
            if local && pg_quote(name) == *name && !is_builtin_word(name) {
                return format!("{name}{suffix}");
            }
        }
    }
    printed.to_owned()
}

fn is_builtin_word(name: &str) -> bool {
    serial(name).is_some()
        || PLAIN.contains(&name)
        || builtin(name, &[]).ok().flatten().is_some()
        || name.starts_with('_')
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scope;
    impl TypeScope for Scope {
        fn find_enum(&self, name: &str) -> Option<String> {
            (name == "todo_state" || name == "Mood").then(|| "public".to_owned())
        }
        fn check_qualified(&self, schema: &str, name: &str) -> Result<(), String> {
            if schema == "public" && name != "todo_state" && name != "citext" {
                Err(format!("unknown type `{schema}.{name}`"))
            } else {
                Ok(())
            }
        }
    }

    fn ty(text: &str) -> String {
        match resolve(text, &Scope) {
            Ok(Resolved::Type(t)) => t,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn builtin_names_as_format_type_prints_them() {
        for (written, printed) in [
            ("int", "integer"),
            ("int4", "integer"),
            ("integer", "integer"),
            ("INTEGER", "integer"),
            ("int8", "bigint"),
            ("bigint", "bigint"),
            ("int2", "smallint"),
            ("smallint", "smallint"),
            ("varchar(45)", "character varying(45)"),
            ("character varying(45)", "character varying(45)"),
            ("varchar", "character varying"),
            ("bool", "boolean"),
            ("float8", "double precision"),
            ("double precision", "double precision"),
            ("float", "double precision"),
            ("float(10)", "real"),
            ("float4", "real"),
            ("real", "real"),
            ("timestamptz", "timestamp with time zone"),
            ("timestamp with time zone", "timestamp with time zone"),
            ("timestamp", "timestamp without time zone"),
            ("timestamp(3)", "timestamp(3) without time zone"),
            ("timestamptz(9)", "timestamp(6) with time zone"),
            ("timetz", "time with time zone"),
            ("time", "time without time zone"),
            ("time(2) with time zone", "time(2) with time zone"),
            ("numeric(10,2)", "numeric(10,2)"),
            ("numeric(10)", "numeric(10,0)"),
            ("decimal", "numeric"),
            ("decimal(5,1)", "numeric(5,1)"),
            ("char(3)", "character(3)"),
            ("char", "character(1)"),
            ("character", "character(1)"),
            ("bpchar", "bpchar"),
            ("\"char\"", "\"char\""),
            ("bit", "bit(1)"),
            ("bit(8)", "bit(8)"),
            ("bit varying(8)", "bit varying(8)"),
            ("varbit", "bit varying"),
            ("interval", "interval"),
            ("interval(3)", "interval(3)"),
            ("interval year to month", "interval year to month"),
            ("interval day to second(3)", "interval day to second(3)"),
            ("interval minute", "interval minute"),
            ("text", "text"),
            ("uuid", "uuid"),
            ("jsonb", "jsonb"),
            ("json", "json"),
            ("bytea", "bytea"),
            ("date", "date"),
            ("inet", "inet"),
            ("cidr", "cidr"),
            ("tsvector", "tsvector"),
            ("int[]", "integer[]"),
            ("integer[][]", "integer[]"),
            ("int array[3]", "integer[]"),
            ("_int4", "integer[]"),
            ("text[]", "text[]"),
            ("pg_catalog.int4", "integer"),
            ("todo_state", "public.todo_state"),
            ("todo_state[]", "public.todo_state[]"),
            ("public.todo_state", "public.todo_state"),
            ("\"Mood\"", "public.\"Mood\""),
            ("public.citext", "public.citext"),
            ("other.thing", "other.thing"),
        ] {
            assert_eq!(ty(written), printed, "{written}");
        }
    }

    #[test]
    fn serials() {
        assert_eq!(resolve("serial", &Scope), Ok(Resolved::Serial("integer")));
        assert_eq!(resolve("bigserial", &Scope), Ok(Resolved::Serial("bigint")));
        assert_eq!(resolve("serial2", &Scope), Ok(Resolved::Serial("smallint")));
        assert!(resolve("serial[]", &Scope).is_err());
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "int; drop table x",
            "int4 int4",
            "text(5)",
            "varchar(0)",
            "numeric(2000)",
            "nosuchtype",
            "public.nosuch",
            "a.b.c",
            "text COLLATE \"C\"",
            "setof int",
            "int)",
        ] {
            assert!(resolve(bad, &Scope).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn back_to_dsl() {
        assert_eq!(to_dsl("public.todo_state", "public", &Scope), "todo_state");
        assert_eq!(
            to_dsl("public.todo_state[]", "public", &Scope),
            "todo_state[]"
        );
        assert_eq!(
            to_dsl("public.todo_state", "app", &Scope),
            "public.todo_state"
        );
        assert_eq!(
            to_dsl("public.\"Mood\"", "public", &Scope),
            "public.\"Mood\""
        );
        assert_eq!(
            to_dsl("character varying(4)", "public", &Scope),
            "character varying(4)"
        );
    }
}
