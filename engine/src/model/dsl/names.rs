//! Names: identifier checks, Postgres' own quoting (as its catalog functions print names), and
//! the names Postgres chooses for constraints, indexes and serial sequences.

/// Postgres truncates identifiers to `NAMEDATALEN - 1` bytes.
pub const MAX_IDENTIFIER_BYTES: usize = 63;
const NAMEDATALEN: usize = 64;

/// Why a name cannot be a Postgres identifier as written, or `None` when it can.
///
/// Postgres would silently truncate a longer name, and two names that differ only after the
/// 63rd byte would then collide: refusing them is the only way the document means what it
/// says.
pub fn identifier_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("a name must not be empty".into());
    }
    if name.len() > MAX_IDENTIFIER_BYTES {
        return Some(format!(
            "`{name}` is {} bytes long; Postgres identifiers are at most {MAX_IDENTIFIER_BYTES}",
            name.len()
        ));
    }
    if name.contains('\0') {
        return Some("a name must not contain a NUL character".into());
    }
    None
}

/// Quotes `name` the way Postgres' `quote_identifier` does: only when it is not a lower-case
/// plain identifier or is a keyword other than an unreserved one. This is how `format_type`,
/// `regclass` output and `pg_get_expr` print names, so it is what the catalog holds; the SQL
/// Lockplane writes itself always quotes ([`crate::ident::quote_ident`]).
pub fn pg_quote(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain && !is_quoted_keyword(name) {
        name.to_owned()
    } else {
        crate::ident::quote_ident(name)
    }
}

/// `schema.name` with each part quoted as Postgres prints it.
pub fn pg_qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", pg_quote(schema), pg_quote(name))
}

/// True for keywords Postgres quotes (all but the unreserved ones).
fn is_quoted_keyword(word: &str) -> bool {
    use pg_query::protobuf::KeywordKind;
    match pg_query::scan(word) {
        Ok(scan) => match scan.tokens.as_slice() {
            [token] => {
                token.end as usize == word.len()
                    && token.keyword_kind != KeywordKind::NoKeyword as i32
                    && token.keyword_kind != KeywordKind::UnreservedKeyword as i32
            }
            _ => false,
        },
        Err(_) => false,
    }
}

/// Splits a possibly qualified, possibly quoted name as Postgres prints it (`"C"`,
/// `public."My Coll"`) into its parts, unquoted. `None` when it is not such a name.
pub fn split_printed_name(text: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    '"' => break,
                    c => part.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                if c == '"' || c.is_whitespace() {
                    return None;
                }
                part.push(c);
                chars.next();
            }
            if part.is_empty() {
                return None;
            }
        }
        parts.push(part);
        match chars.next() {
            None => return Some(parts),
            Some('.') => continue,
            Some(_) => return None,
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary
/// (Postgres' `pg_mbcliplen`).
fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Postgres' `makeObjectName`: `name1[_name2][_label]`, truncating the longer of the two names
/// first so that the result fits in an identifier.
pub fn make_object_name(name1: &str, name2: Option<&str>, label: &str) -> String {
    let mut overhead = 0;
    let mut name1_len = name1.len();
    let mut name2_len = name2.map_or(0, |n| {
        overhead += 1;
        n.len()
    });
    if !label.is_empty() {
        overhead += label.len() + 1;
    }
    let available = (NAMEDATALEN - 1).saturating_sub(overhead);
    while name1_len + name2_len > available {
        if name1_len > name2_len {
            name1_len -= 1;
        } else {
            name2_len -= 1;
        }
    }
    let mut out = clip(name1, name1_len).to_owned();
    if let Some(n2) = name2 {
        out.push('_');
        out.push_str(clip(n2, name2_len));
    }
    if !label.is_empty() {
        out.push('_');
        out.push_str(label);
    }
    out
}

/// Postgres' `ChooseIndexNameAddition` / `ChooseForeignKeyConstraintNameAddition`: column
/// names joined by `_`, stopping once the result is long enough to be truncated anyway.
pub fn name_addition(columns: &[String]) -> String {
    let mut out = String::new();
    for column in columns {
        if !out.is_empty() {
            out.push('_');
        }
        out.push_str(clip(column, NAMEDATALEN));
        if out.len() >= NAMEDATALEN {
            break;
        }
    }
    out
}

/// `<table>_pkey`.
pub fn primary_key_name(table: &str) -> String {
    make_object_name(table, None, "pkey")
}

/// `<table>_<columns>_key`.
pub fn unique_name(table: &str, columns: &[String]) -> String {
    make_object_name(table, Some(&name_addition(columns)), "key")
}

/// `<table>_<columns>_fkey`.
pub fn foreign_key_name(table: &str, columns: &[String]) -> String {
    make_object_name(table, Some(&name_addition(columns)), "fkey")
}

/// `<table>_<column>_check` when the expression uses exactly one column, else `<table>_check`.
pub fn check_name(table: &str, column: Option<&str>) -> String {
    make_object_name(table, column, "check")
}

/// `<table>_<columns>_excl`.
pub fn exclusion_name(table: &str, columns: &[String]) -> String {
    make_object_name(table, Some(&name_addition(columns)), "excl")
}

/// `<table>_<columns>_idx` (key columns, then INCLUDE columns, as Postgres counts them).
pub fn index_name(table: &str, columns: &[String]) -> String {
    make_object_name(table, Some(&name_addition(columns)), "idx")
}

/// `<table>_<column>_seq`, the sequence behind a serial column.
pub fn serial_sequence_name(table: &str, column: &str) -> String {
    make_object_name(table, Some(column), "seq")
}

/// Levenshtein distance, for "did you mean" suggestions.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// The candidate closest to `word`, when it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 2).max(2);
    let common_prefix = |c: &str| {
        word.chars()
            .zip(c.chars())
            .take_while(|(a, b)| a == b)
            .count()
    };
    // Ties go to the candidate sharing the longest prefix (`intt` → `int`, not `inet`).
    candidates
        .iter()
        .map(|c| {
            (
                edit_distance(word, c),
                std::cmp::Reverse(common_prefix(c)),
                *c,
            )
        })
        // A distance as long as the candidate rewrites all of it: `nul` is not a typo of `up`.
        .filter(|(d, _, c)| *d <= limit && *d < c.chars().count())
        .min()
        .map(|(_, _, c)| c)
        .or_else(|| {
            // `nul` for `not_null`: a prefix or suffix of a longer key is a typo too.
            candidates
                .iter()
                .find(|c| word.len() >= 3 && c.contains(word))
                .copied()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_like_postgres() {
        assert_eq!(pg_quote("users"), "users");
        assert_eq!(pg_quote("Users"), "\"Users\"");
        assert_eq!(pg_quote("user"), "\"user\"");
        assert_eq!(pg_quote("order"), "\"order\"");
        // Unreserved keywords are not quoted.
        assert_eq!(pg_quote("data"), "data");
        assert_eq!(pg_quote("name"), "name");
        assert_eq!(pg_quote("my table"), "\"my table\"");
        assert_eq!(pg_quote("1abc"), "\"1abc\"");
        assert_eq!(pg_quote("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(pg_qualified("public", "t_id_seq"), "public.t_id_seq");
    }

    #[test]
    fn printed_names_split() {
        assert_eq!(split_printed_name("\"C\""), Some(vec!["C".into()]));
        assert_eq!(
            split_printed_name("public.\"My \"\"x\"\"\""),
            Some(vec!["public".into(), "My \"x\"".into()])
        );
        assert_eq!(split_printed_name("a..b"), None);
        assert_eq!(split_printed_name("\"unterminated"), None);
    }

    #[test]
    fn object_names_as_postgres_makes_them() {
        assert_eq!(primary_key_name("users"), "users_pkey");
        assert_eq!(
            unique_name("t", &["a".into(), "b".into()]),
            "t_a_b_key".to_string()
        );
        assert_eq!(
            foreign_key_name("todos", &["owner_id".into()]),
            "todos_owner_id_fkey"
        );
        assert_eq!(check_name("t", Some("qty")), "t_qty_check");
        assert_eq!(check_name("t", None), "t_check");
        assert_eq!(serial_sequence_name("invoices", "id"), "invoices_id_seq");
        // Truncation: the longer name is cut first, the label always survives.
        let long_table = "a".repeat(60);
        let name = unique_name(&long_table, &["email".into()]);
        assert_eq!(name.len(), 63);
        assert_eq!(name, format!("{}_email_key", "a".repeat(53)));
        let both_long = make_object_name(&"t".repeat(40), Some(&"c".repeat(40)), "fkey");
        assert_eq!(
            both_long,
            format!("{}_{}_fkey", "t".repeat(29), "c".repeat(28))
        );
        // Multi-byte characters are never split.
        let accented = make_object_name(&"é".repeat(40), None, "pkey");
        assert!(
            accented.len() <= 63 && accented.ends_with("_pkey"),
            "{accented}"
        );
    }

    #[test]
    fn suggestions() {
        let keys = ["name", "type", "not_null", "default", "unique"];
        assert_eq!(suggest("nul", &keys), Some("not_null"));
        assert_eq!(suggest("typ", &keys), Some("type"));
        assert_eq!(suggest("defualt", &keys), Some("default"));
        assert_eq!(suggest("zzzzzz", &keys), None);
    }
}
