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

/// Memoises `compute(key)` in `cache` (one per thread). A document or a catalog repeats the
/// same expressions and types across thousands of tables, and each costs pg_query parses
/// (and a deparse): at 2,000 tables most of reading a document. Only for pure functions of
/// the string. Emptied when full, so memory stays bounded.
pub(crate) fn memoized<V: Clone + 'static>(
    cache: &'static std::thread::LocalKey<std::cell::RefCell<std::collections::HashMap<String, V>>>,
    key: &str,
    compute: impl FnOnce(&str) -> V,
) -> V {
    const LIMIT: usize = 16_384;
    if let Some(hit) = cache.with(|c| c.borrow().get(key).cloned()) {
        return hit;
    }
    let value = compute(key);
    cache.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= LIMIT {
            c.clear();
        }
        c.insert(key.to_owned(), value.clone());
    });
    value
}

/// A per-thread cache of one pure function of a string (see [`memoized`]).
pub(crate) type Memo<V> = std::cell::RefCell<std::collections::HashMap<String, V>>;

thread_local! {
    static EXPRESSIONS: Memo<Result<String, NormalizeError>> = Default::default();
    static CONSTRAINTS: Memo<Result<String, NormalizeError>> = Default::default();
}

/// Normalises a scalar expression (a default, a CHECK, an index predicate, a policy qual).
pub fn expression(text: &str) -> Result<String, NormalizeError> {
    memoized(&EXPRESSIONS, text, expression_uncached)
}

fn expression_uncached(text: &str) -> Result<String, NormalizeError> {
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

/// Normalises a view's query. Beyond [`query`], it removes the table qualifier from column
/// references of a query over a single relation: Postgres 16 stopped printing it there (views no
/// longer carry the OLD/NEW range entries), 14 and 15 print it, and the meaning is the same.
/// Nested sub-queries are left alone, since there a qualifier can decide which scope a name
/// binds to.
pub fn view_query(text: &str) -> Result<String, NormalizeError> {
    let trimmed = text.trim().trim_end_matches(';');
    let mut parsed = parse_one(trimmed, text)?;
    if let Some(pg_query::NodeEnum::SelectStmt(select)) = parsed
        .protobuf
        .stmts
        .first_mut()
        .and_then(|s| s.stmt.as_mut())
        .and_then(|n| n.node.as_mut())
    {
        if let Some(qualifier) = sole_relation_name(select) {
            unqualify_select(select, &qualifier);
        }
    }
    let deparsed = pg_query::deparse(&parsed.protobuf, Default::default())
        .map_err(|e| fail(text, e.to_string()))?;
    Ok(deparsed)
}

/// The name columns are qualified with when `select` reads exactly one relation.
fn sole_relation_name(select: &pg_query::protobuf::SelectStmt) -> Option<String> {
    use pg_query::protobuf::SetOperation;
    use pg_query::NodeEnum;
    if select.op != SetOperation::SetopNone as i32 || select.from_clause.len() != 1 {
        return None;
    }
    let alias_name =
        |a: &Option<pg_query::protobuf::Alias>| a.as_ref().map(|a| a.aliasname.clone());
    match select.from_clause[0].node.as_ref()? {
        NodeEnum::RangeVar(r) => alias_name(&r.alias).or_else(|| Some(r.relname.clone())),
        NodeEnum::RangeSubselect(r) => alias_name(&r.alias),
        NodeEnum::RangeFunction(r) => alias_name(&r.alias),
        _ => None,
    }
}

fn unqualify_select(select: &mut pg_query::protobuf::SelectStmt, qualifier: &str) {
    let lists = [
        &mut select.target_list,
        &mut select.group_clause,
        &mut select.sort_clause,
        &mut select.distinct_clause,
    ];
    for list in lists {
        list.iter_mut().for_each(|n| unqualify(n, qualifier));
    }
    for node in [&mut select.where_clause, &mut select.having_clause]
        .into_iter()
        .flatten()
    {
        unqualify(node, qualifier);
    }
}

/// Strips `qualifier.` from column references in an expression of the current query level.
fn unqualify(node: &mut pg_query::protobuf::Node, q: &str) {
    use pg_query::NodeEnum as N;
    let all = |nodes: &mut Vec<pg_query::protobuf::Node>, q: &str| {
        nodes.iter_mut().for_each(|n| unqualify(n, q))
    };
    let one = |n: &mut Option<Box<pg_query::protobuf::Node>>, q: &str| {
        if let Some(n) = n {
            unqualify(n, q)
        }
    };
    match node.node.as_mut() {
        Some(N::ColumnRef(c)) => {
            let qualified = c.fields.len() == 2
                && matches!(&c.fields[0].node, Some(N::String(s)) if s.sval == q)
                && matches!(&c.fields[1].node, Some(N::String(_)));
            if qualified {
                c.fields.remove(0);
            }
        }
        Some(N::ResTarget(r)) => one(&mut r.val, q),
        Some(N::AExpr(e)) => {
            one(&mut e.lexpr, q);
            one(&mut e.rexpr, q);
        }
        Some(N::BoolExpr(e)) => all(&mut e.args, q),
        Some(N::FuncCall(f)) => {
            all(&mut f.args, q);
            all(&mut f.agg_order, q);
            one(&mut f.agg_filter, q);
            if let Some(w) = f.over.as_mut() {
                all(&mut w.partition_clause, q);
                all(&mut w.order_clause, q);
            }
        }
        Some(N::TypeCast(t)) => one(&mut t.arg, q),
        Some(N::CollateClause(c)) => one(&mut c.arg, q),
        Some(N::CaseExpr(c)) => {
            one(&mut c.arg, q);
            all(&mut c.args, q);
            one(&mut c.defresult, q);
        }
        Some(N::CaseWhen(w)) => {
            one(&mut w.expr, q);
            one(&mut w.result, q);
        }
        Some(N::NullTest(t)) => one(&mut t.arg, q),
        Some(N::BooleanTest(t)) => one(&mut t.arg, q),
        Some(N::CoalesceExpr(c)) => all(&mut c.args, q),
        Some(N::MinMaxExpr(m)) => all(&mut m.args, q),
        Some(N::RowExpr(r)) => all(&mut r.args, q),
        Some(N::AArrayExpr(a)) => all(&mut a.elements, q),
        Some(N::AIndirection(i)) => one(&mut i.arg, q),
        Some(N::SortBy(s)) => one(&mut s.node, q),
        Some(N::List(l)) => all(&mut l.items, q),
        Some(N::GroupingSet(g)) => all(&mut g.content, q),
        // The test expression belongs to this level; the sub-select does not.
        Some(N::SubLink(s)) => one(&mut s.testexpr, q),
        _ => {}
    }
}

/// Normalises a table constraint clause (as `pg_get_constraintdef` prints it), by parsing it
/// inside an `ALTER TABLE … ADD` statement.
pub fn constraint_clause(text: &str) -> Result<String, NormalizeError> {
    memoized(&CONSTRAINTS, text, constraint_clause_uncached)
}

fn constraint_clause_uncached(text: &str) -> Result<String, NormalizeError> {
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

/// The single, non-set-operation `SELECT` of a parsed view query, for editing in place before
/// deparsing `parsed` again; `None` for anything else (a `UNION`, several statements, …).
pub(crate) fn plain_select(
    parsed: &mut pg_query::ParseResult,
) -> Option<&mut pg_query::protobuf::SelectStmt> {
    let node = parsed
        .protobuf
        .stmts
        .first_mut()?
        .stmt
        .as_mut()?
        .node
        .as_mut()?;
    let pg_query::NodeEnum::SelectStmt(select) = node else {
        return None;
    };
    (select.op == pg_query::protobuf::SetOperation::SetopNone as i32).then_some(select.as_mut())
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
    fn view_qualifiers_match_across_versions() {
        // Postgres 15 and 16 print the same single-table view differently.
        let pg15 = "SELECT invoices.id, invoices.total FROM billing.invoices \
                    WHERE (invoices.status <> 'paid'::billing.status) ORDER BY invoices.id;";
        let pg16 = "SELECT id, total FROM billing.invoices \
                    WHERE (status <> 'paid'::billing.status) ORDER BY id;";
        assert_eq!(view_query(pg15).unwrap(), view_query(pg16).unwrap());
        // With two relations, qualifiers stay; inside a sub-select, too.
        let join = "SELECT a.x FROM a JOIN b ON a.id = b.id";
        assert_eq!(view_query(join).unwrap(), join);
        let nested = "SELECT t.x FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.x = t.x)";
        assert_eq!(
            view_query(nested).unwrap(),
            "SELECT x FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.x = t.x)"
        );
    }

    #[test]
    fn constraint_round_trip() {
        let c = constraint_clause("EXCLUDE USING gist (c WITH &&)").unwrap();
        assert_eq!(constraint_clause(&c).unwrap(), c);
        assert!(c.contains("EXCLUDE USING gist"), "{c}");
    }
}
