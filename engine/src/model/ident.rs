//! SQL identifiers and literals. Every identifier Lockplane writes into SQL goes through
//! [`quote_ident`], every string literal through [`quote_literal`]: there is no other place
//! where names meet SQL text.

/// Quotes an identifier unconditionally, doubling embedded quotes. Always quoting keeps the
/// function trivially correct (no keyword list to keep in sync with the server) and preserves
/// case exactly as the catalog stores it.
pub fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `schema.name`, both quoted.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

/// Quotes a string literal in standard-conforming form (`'it''s'`). Backslashes are literal
/// under `standard_conforming_strings = on`, the only setting Lockplane connects with.
pub fn quote_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push('\'');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes() {
        assert_eq!(quote_ident("users"), "\"users\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(qualified("public", "T"), "\"public\".\"T\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
