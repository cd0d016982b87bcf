//! Normalisation of SQL text through one parser.
//!
//! Postgres versions print the same expression slightly differently (parentheses, casts,
//! spacing). Every expression and query stored in a catalog goes through pg_query's parse and
//! deparse, which are the same code whatever server produced the text, so the manifest hash does
//! not depend on the server version.

/// The text could not be parsed or deparsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot normalise `{text}`: {message}")]
pub struct NormalizeError {
    /// The text that failed.
    pub text: String,
    /// The parser's message.
    pub message: String,
}

fn fail(text: &str, message: impl Into<String>) -> NormalizeError {
    NormalizeError {
        text: text.to_owned(),
        message: message.into(),
    }
}

const SELECT_PREFIX: &str = "SELECT ";

/// Normalises a scalar expression (a default, a CHECK, an index predicate, a policy qual).
pub fn expression(text: &str) -> Result<String, NormalizeError> {
    let wrapped = format!("{SELECT_PREFIX}{text}");
    let parsed = parse_one(&wrapped, text)?;
    if !is_single_expression(&parsed) {
        return Err(fail(text, "expected a single expression"));
    }
    let deparsed = deparse(&parsed, text)?;
    match deparsed.strip_prefix(SELECT_PREFIX) {
        Some(rest) => Ok(rest.to_owned()),
        None => Err(fail(
            text,
            "expression did not deparse as a single select target",
        )),
    }
}

/// Normalises a query (a view definition).
pub fn query(text: &str) -> Result<String, NormalizeError> {
    let trimmed = text.trim().trim_end_matches(';');
    reparse(trimmed, text)
}

/// Normalises a table constraint clause (as `pg_get_constraintdef` prints it), by parsing it
/// inside an `ALTER TABLE … ADD` statement.
pub fn constraint_clause(text: &str) -> Result<String, NormalizeError> {
    const PREFIX: &str = "ALTER TABLE t ADD ";
    let deparsed = reparse(&format!("{PREFIX}{text}"), text)?;
    match deparsed.strip_prefix(PREFIX) {
        Some(rest) => Ok(rest.to_owned()),
        None => Err(fail(
            text,
            "constraint did not deparse as an ALTER TABLE clause",
        )),
    }
}

fn reparse(sql: &str, original: &str) -> Result<String, NormalizeError> {
    let parsed = parse_one(sql, original)?;
    deparse(&parsed, original)
}

fn parse_one(sql: &str, original: &str) -> Result<pg_query::ParseResult, NormalizeError> {
    let parsed = pg_query::parse(sql, 0).map_err(|e| fail(original, e.to_string()))?;
    if parsed.protobuf.stmts.len() != 1 {
        return Err(fail(original, "expected exactly one statement"));
    }
    Ok(parsed)
}

fn deparse(parsed: &pg_query::ParseResult, original: &str) -> Result<String, NormalizeError> {
    parsed
        .deparse(Default::default())
        .map_err(|e| fail(original, e.to_string()))
}

/// True when `SELECT …` holds one unnamed target and nothing else, so that text such as
/// `1 FROM t` or `x AS y` is not mistaken for an expression.
fn is_single_expression(parsed: &pg_query::ParseResult) -> bool {
    use pg_query::protobuf::SelectStmt;
    use pg_query::NodeEnum;
    let Some(NodeEnum::SelectStmt(select)) = parsed
        .protobuf
        .stmts
        .first()
        .and_then(|s| s.stmt.as_ref())
        .and_then(|n| n.node.as_ref())
    else {
        return false;
    };
    let bare = SelectStmt {
        target_list: select.target_list.clone(),
        op: select.op,
        limit_option: select.limit_option,
        ..Default::default()
    };
    let unnamed = match select.target_list.as_slice() {
        [target] => matches!(&target.node, Some(NodeEnum::ResTarget(r)) if r.name.is_empty()),
        _ => false,
    };
    unnamed && **select == bare
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_redundant_parentheses() {
        assert_eq!(
            expression("((price > (0)::numeric))").unwrap(),
            "price > 0::numeric"
        );
    }

    #[test]
    fn idempotent() {
        for e in [
            "nextval('public.s'::regclass)",
            "(a + 1) * 2",
            "CASE WHEN x THEN 1 ELSE 2 END",
            "current_setting('app.tenant_id'::text, true)::uuid = tenant_id",
        ] {
            let once = expression(e).unwrap();
            assert_eq!(expression(&once).unwrap(), once);
        }
    }

    #[test]
    fn rejects_garbage_and_injection() {
        assert!(expression("1; DROP TABLE x").is_err());
        assert!(expression("(").is_err());
        assert!(query("SELECT 1; SELECT 2").is_err());
        assert!(expression("1 FROM pg_class").is_err());
        assert!(expression("1, 2").is_err());
        assert!(expression("x AS y").is_err());
    }

    #[test]
    fn constraint_round_trip() {
        let c = constraint_clause("EXCLUDE USING gist (c WITH &&)").unwrap();
        assert_eq!(constraint_clause(&c).unwrap(), c);
        assert!(c.contains("EXCLUDE USING gist"), "{c}");
    }
}
