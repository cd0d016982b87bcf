//! The libpq password file (`~/.pgpass`, or `PGPASSFILE`/`passfile`): lines of
//! `hostname:port:database:username:password`, `*` matching anything in the first four
//! fields, `\` escaping `:` and `\`. Read the way libpq reads it, including its refusal of a
//! file others can read.

use std::path::Path;

/// What a connection is being looked up as.
pub(crate) struct Lookup<'a> {
    /// The host name, or the socket directory (`localhost` matches the default ones).
    pub host: &'a str,
    pub port: u16,
    pub database: &'a str,
    pub user: &'a str,
}

/// The password the file at `path` holds for `lookup`, if any. A file that does not exist is
/// no error (most users have none); a file that is not a plain file, or that the group or
/// others may read, is ignored with a warning pushed onto `warnings`, as libpq does.
pub(crate) fn password(
    path: &Path,
    lookup: &Lookup<'_>,
    warnings: &mut Vec<String>,
) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        warnings.push(format!(
            "password file {} is not a plain file; it was not read",
            path.display()
        ));
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            warnings.push(format!(
                "password file {} has group or world access (mode {:04o}); it was not read: \
                 permissions should be u=rw (0600) or less (chmod 0600 {})",
                path.display(),
                mode & 0o7777,
                path.display()
            ));
            return None;
        }
    }
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            warnings.push(format!("cannot read password file {}: {e}", path.display()));
            return None;
        }
    };
    find(&text, lookup)
}

/// The password of the first line of `text` matching `lookup`.
pub(crate) fn find(text: &str, lookup: &Lookup<'_>) -> Option<String> {
    let port = lookup.port.to_string();
    let wanted = [
        host_for_match(lookup.host),
        &port,
        lookup.database,
        lookup.user,
    ];
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let Some(fields) = fields(line) else {
            continue;
        };
        let matches = fields[..4]
            .iter()
            .zip(wanted)
            .all(|((text, literal_star), want)| (text == "*" && !literal_star) || text == want);
        if matches {
            return Some(fields[4].0.clone());
        }
    }
    None
}

/// The fields of a line, unescaped, each with whether it held an escaped `*` (which matches
/// only a literal `*`). `None` for a line with fewer than five fields; as in libpq, the
/// password ends at the next unescaped `:`.
fn fields(line: &str) -> Option<Vec<(String, bool)>> {
    let mut out = Vec::with_capacity(5);
    let mut current = String::new();
    let mut escaped_star = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    escaped_star |= next == '*';
                    current.push(next);
                }
            }
            ':' => {
                out.push((std::mem::take(&mut current), escaped_star));
                escaped_star = false;
            }
            c => current.push(c),
        }
    }
    out.push((current, escaped_star));
    (out.len() >= 5).then_some(out)
}

/// libpq matches a connection through a default socket directory as `localhost`.
fn host_for_match(host: &str) -> &str {
    match host {
        "" | "/tmp" | "/var/run/postgresql" | "/run/postgresql" => "localhost",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(host: &'a str, database: &'a str, user: &'a str) -> Lookup<'a> {
        Lookup {
            host,
            port: 5432,
            database,
            user,
        }
    }

    #[test]
    fn matches_fields_wildcards_and_escapes() {
        let text = "# comment\n\
                    \n\
                    db.example:5432:app:alice:first\n\
                    *:5432:*:bob:b\\:ob\\\\pw:tail\n\
                    db.example:*:*:*:fallback\n\
                    localhost:5432:x:carol:local\n\
                    short:line\n";
        assert_eq!(
            find(text, &lookup("db.example", "app", "alice")).as_deref(),
            Some("first")
        );
        assert_eq!(
            find(text, &lookup("elsewhere", "any", "bob")).as_deref(),
            Some("b:ob\\pw")
        );
        assert_eq!(
            find(text, &lookup("db.example", "other", "zed")).as_deref(),
            Some("fallback")
        );
        assert_eq!(
            find(text, &lookup("/var/run/postgresql", "x", "carol")).as_deref(),
            Some("local")
        );
        assert_eq!(find(text, &lookup("nowhere", "x", "alice")), None);
        let port = Lookup {
            port: 6543,
            ..lookup("db.example", "app", "alice")
        };
        assert_eq!(find(text, &port).as_deref(), Some("fallback"));
    }

    #[test]
    fn an_escaped_star_is_a_literal_star() {
        let text = "\\*:5432:*:alice:star\n*:5432:*:alice:any\n";
        assert_eq!(
            find(text, &lookup("db", "x", "alice")).as_deref(),
            Some("any")
        );
        assert_eq!(
            find(text, &lookup("*", "x", "alice")).as_deref(),
            Some("star")
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_file_others_can_read_is_ignored_with_a_warning() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pgpass");
        std::fs::write(&path, "*:*:*:*:secret\n").expect("write");
        let mut warnings = Vec::new();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let l = lookup("db", "x", "me");
        assert_eq!(
            password(&path, &l, &mut warnings).as_deref(),
            Some("secret")
        );
        assert!(warnings.is_empty());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(password(&path, &l, &mut warnings), None);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("group or world access"),
            "{warnings:?}"
        );
        assert_eq!(password(&dir.path().join("none"), &l, &mut warnings), None);
        assert_eq!(warnings.len(), 1, "a missing file is no warning");
    }
}
