//! The libpq parameters tokio-postgres does not parse, taken out of a connection string before
//! the rest goes to `tokio_postgres::Config`.
//!
//! tokio-postgres rejects `sslmode=verify-ca`/`verify-full` and does not know `sslrootcert`,
//! `sslcert`, `sslkey` or `passfile` ("unknown option"); it also drops `connect_timeout=0`,
//! which libpq reads as "wait forever". These are read here, from both forms libpq accepts:
//! `postgres://…?key=value&…` URLs and `key=value key='quoted value'` strings. Everything else
//! is handed on untouched (a URL's other parameters keep their exact text), so tokio-postgres
//! still reports its own errors about them.

/// The parameters read here; everything else is tokio-postgres'.
pub(crate) const OURS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "connect_timeout",
    "passfile",
];

/// `text` without [`OURS`], and the values of those found (the last one wins, as in libpq).
pub(crate) fn split(text: &str) -> (String, Vec<(String, String)>) {
    for prefix in ["postgres://", "postgresql://"] {
        if let Some(body) = text.strip_prefix(prefix) {
            let (rest, found) = split_url(body);
            return (format!("{prefix}{rest}"), found);
        }
    }
    match split_key_value(text) {
        Some(split) => split,
        // Not well formed: tokio-postgres says why.
        None => (text.to_owned(), Vec::new()),
    }
}

fn split_url(body: &str) -> (String, Vec<(String, String)>) {
    // The same cut as tokio-postgres' URL parser: credentials end at the first `@`, the
    // parameters start at the first `?` after them.
    let creds_end = body.find('@').map(|i| i + 1).unwrap_or(0);
    let Some(q) = body[creds_end..].find('?').map(|i| creds_end + i) else {
        return (body.to_owned(), Vec::new());
    };
    let (head, query) = (&body[..q], &body[q + 1..]);
    let mut kept = Vec::new();
    let mut found = Vec::new();
    for pair in query.split('&') {
        if let Some((key, value)) = pair.split_once('=') {
            let key = percent_decode(key);
            if OURS.contains(&key.as_str()) {
                found.push((key, percent_decode(value)));
                continue;
            }
        }
        kept.push(pair);
    }
    if kept.is_empty() {
        (head.to_owned(), found)
    } else {
        (format!("{head}?{}", kept.join("&")), found)
    }
}

/// `%XX` sequences decoded (as bytes, then UTF-8 with replacement); anything else as is.
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(byte) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads `key = value` pairs the way tokio-postgres (and libpq) do: whitespace-separated,
/// values either bare or in single quotes, `\` escaping the next character. `None` when the
/// text is not well formed.
fn parse_key_value(text: &str) -> Option<Vec<(String, String)>> {
    let mut it = text.chars().peekable();
    let mut pairs = Vec::new();
    loop {
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        let mut key = String::new();
        while let Some(&c) = it.peek() {
            if c.is_whitespace() || c == '=' {
                break;
            }
            key.push(c);
            it.next();
        }
        if key.is_empty() {
            return if it.peek().is_none() {
                Some(pairs)
            } else {
                None
            };
        }
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        if it.next() != Some('=') {
            return None;
        }
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        let mut value = String::new();
        if it.peek() == Some(&'\'') {
            it.next();
            loop {
                match it.next()? {
                    '\'' => break,
                    '\\' => value.push(it.next()?),
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = it.peek() {
                if c.is_whitespace() {
                    break;
                }
                it.next();
                if c == '\\' {
                    if let Some(next) = it.next() {
                        value.push(next);
                    }
                } else {
                    value.push(c);
                }
            }
            if value.is_empty() {
                return None;
            }
        }
        pairs.push((key, value));
    }
}

fn split_key_value(text: &str) -> Option<(String, Vec<(String, String)>)> {
    let pairs = parse_key_value(text)?;
    let mut kept = Vec::new();
    let mut found = Vec::new();
    for (key, value) in pairs {
        if OURS.contains(&key.as_str()) {
            found.push((key, value));
        } else {
            kept.push(format!("{key}={}", quote(&value)));
        }
    }
    Some((kept.join(" "), found))
}

/// `value` as a quoted key/value connection string value.
pub(crate) fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `text` with any password replaced by `***` (URL user info or a `password=` pair).
pub(crate) fn redact(text: &str) -> String {
    for prefix in ["postgres://", "postgresql://"] {
        if let Some(body) = text.strip_prefix(prefix) {
            if let Some((auth, tail)) = body.split_once('@') {
                if let Some((user, _)) = auth.split_once(':') {
                    return format!("{prefix}{user}:***@{tail}");
                }
            }
            return text.to_owned();
        }
    }
    match parse_key_value(text) {
        Some(pairs) if pairs.iter().any(|(k, _)| k == "password") => pairs
            .iter()
            .map(|(k, v)| {
                if k == "password" {
                    format!("{k}=***")
                } else {
                    format!("{k}={}", quote(v))
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
        Some(_) => text.to_owned(),
        None if text.contains("password") => {
            "(a connection string, not shown: it may hold a password)".to_owned()
        }
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn takes_tls_parameters_out_of_urls() {
        let (rest, got) = split(
            "postgres://me:p%3Fw@db:5432/x?sslmode=verify-full&application_name=a&\
             sslrootcert=%2Ftmp%2Fca.pem&connect_timeout=0",
        );
        assert_eq!(rest, "postgres://me:p%3Fw@db:5432/x?application_name=a");
        assert_eq!(
            got,
            found(&[
                ("sslmode", "verify-full"),
                ("sslrootcert", "/tmp/ca.pem"),
                ("connect_timeout", "0")
            ])
        );
        let (rest, got) = split("postgresql://db/x?sslmode=require");
        assert_eq!(rest, "postgresql://db/x");
        assert_eq!(got, found(&[("sslmode", "require")]));
        let (rest, got) = split("postgres://db/x");
        assert_eq!((rest.as_str(), got.len()), ("postgres://db/x", 0));
        // A password holding `?` before the `@`: the query starts after the credentials.
        let (rest, got) = split("postgres://me:a?b@db/x?sslkey=k");
        assert_eq!(rest, "postgres://me:a?b@db/x");
        assert_eq!(got, found(&[("sslkey", "k")]));
    }

    #[test]
    fn takes_tls_parameters_out_of_key_value_strings() {
        let (rest, got) =
            split("host=db  user = me sslmode=verify-ca sslrootcert='/a dir/ca.pem' dbname=x");
        assert_eq!(
            got,
            found(&[("sslmode", "verify-ca"), ("sslrootcert", "/a dir/ca.pem")])
        );
        assert_eq!(rest, "host='db' user='me' dbname='x'");
        let (rest, got) = split(r"host=db password='it\'s' sslmode=verify-ca dbname=x");
        assert_eq!(got, found(&[("sslmode", "verify-ca")]));
        assert_eq!(rest, r"host='db' password='it\'s' dbname='x'");
        // `'it''s'` is not libpq syntax: the string goes on untouched, for tokio-postgres to
        // say what is wrong.
        let text = "host=db password='it''s' sslmode=verify-ca";
        let (rest, got) = split(text);
        assert_eq!((rest.as_str(), got.len()), (text, 0));
    }

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(percent_decode("%2Ftmp%2fx"), "/tmp/x");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://me:hunter2@db:5432/x"),
            "postgres://me:***@db:5432/x"
        );
        assert_eq!(redact("postgres://me@db/x"), "postgres://me@db/x");
        assert_eq!(redact("host=db password=hunter2"), "host='db' password=***");
        assert!(!redact("host=db password='hunter2").contains("hunter2"));
    }
}
