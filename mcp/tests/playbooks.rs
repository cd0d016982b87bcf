//! `docs/playbooks.md` runs as written: each recipe (a `## ` section) gets a fresh database;
//! its ```sql blocks run on it, its ```yaml blocks are written under the name after the
//! language (```yaml orders.yaml), each `lockplane …` line of its ```sh blocks runs in order
//! (`--confirm PLAN_ID` takes the id the last plan printed), and a ```text block is the
//! standard output of the command before it. Hashes and the shadow's server versions are
//! compared loosely; the rest exactly. `LOCKPLANE_BLESS=1` writes the outputs into the page.

use std::path::{Path, PathBuf};
use std::process::Command;

use lockplane_engine::testkit;

fn page() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/playbooks.md"))
}

/// What may differ between runs and machines: hashes (full and short) and the versions the
/// shadow line names.
fn loose(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let line = if line.starts_with("shadow dry run: ok") {
            "shadow dry run: ok".to_owned()
        } else {
            line.to_owned()
        };
        let mut words: Vec<String> = Vec::new();
        for word in line.split(' ') {
            let bare = word.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != ':');
            let hex = |s: &str| s.len() >= 12 && s.chars().all(|c| c.is_ascii_hexdigit());
            if let Some(h) = bare.strip_prefix("sha3-256:") {
                if hex(h) {
                    words.push(word.replace(bare, "sha3-256:…"));
                    continue;
                }
            }
            if hex(bare) {
                words.push(word.replace(bare, "…"));
                continue;
            }
            words.push(word.to_owned());
        }
        out.push_str(words.join(" ").trim_end());
        out.push('\n');
    }
    out.trim_end().to_owned()
}

enum Block {
    Sql(String),
    File(String, String),
    Commands(Vec<String>),
    Output {
        start: usize,
        end: usize,
        text: String,
    },
}

struct Recipe {
    title: String,
    blocks: Vec<Block>,
}

/// The page's recipes, with the byte range of each ```text block's body.
fn recipes(page: &str) -> Vec<Recipe> {
    let mut recipes: Vec<Recipe> = Vec::new();
    let mut offset = 0;
    let mut lines = page.split_inclusive('\n').peekable();
    while let Some(line) = lines.next() {
        offset += line.len();
        if let Some(title) = line.strip_prefix("## ") {
            recipes.push(Recipe {
                title: title.trim().to_owned(),
                blocks: Vec::new(),
            });
            continue;
        }
        let Some(info) = line.trim_end().strip_prefix("```") else {
            continue;
        };
        if info.is_empty() {
            continue;
        }
        let start = offset;
        let mut body = String::new();
        for inner in lines.by_ref() {
            offset += inner.len();
            if inner.trim_end() == "```" {
                break;
            }
            body.push_str(inner);
        }
        let end = start + body.len();
        let Some(recipe) = recipes.last_mut() else {
            continue;
        };
        let mut words = info.split_whitespace();
        let block = match (words.next(), words.next()) {
            (Some("sql"), _) => Block::Sql(body),
            (Some("yaml"), Some(name)) => Block::File(name.to_owned(), body),
            (Some("sh"), _) => Block::Commands(
                body.lines()
                    .map(str::trim)
                    .filter(|l| l.starts_with("lockplane "))
                    .map(|l| l.split(" #").next().unwrap_or(l).trim().to_owned())
                    .collect(),
            ),
            (Some("text"), _) => Block::Output {
                start,
                end,
                text: body,
            },
            _ => continue,
        };
        recipe.blocks.push(block);
    }
    recipes
}

fn run(dir: &Path, url: &str, line: &str, last_plan: &Option<String>) -> (String, String, bool) {
    let mut args: Vec<String> = line
        .split_whitespace()
        .skip(1)
        .map(|a| a.to_owned())
        .collect();
    for a in &mut args {
        if a == "PLAN_ID" {
            *a = last_plan
                .clone()
                .expect("a plan printed before --confirm PLAN_ID");
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_lockplane"))
        .args(&args)
        .current_dir(dir)
        // Relative: the page shows `ledger`, not a temporary path.
        .env("LOCKPLANE_LEDGER", "ledger")
        .env("DATABASE_URL", url)
        .env("LOCKPLANE_ACTOR", "user:playbook")
        .env("NO_COLOR", "1")
        .output()
        .expect("run lockplane");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

#[tokio::test]
async fn every_playbook_runs_as_written() {
    let path = page();
    let text = std::fs::read_to_string(&path).expect("docs/playbooks.md");
    let recipes = recipes(&text);
    assert!(recipes.len() >= 5, "the five recipes of the page");
    let bless = std::env::var_os("LOCKPLANE_BLESS").is_some();
    let mut replacements: Vec<(usize, usize, String)> = Vec::new();
    let mut mismatches = Vec::new();
    for recipe in &recipes {
        let db = testkit::fresh_database("playbook").await.expect("database");
        let cluster = testkit::shared_cluster().expect("cluster");
        let client = cluster.connect(&db).await.expect("connect");
        let url = cluster.url(&db);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut last = String::new();
        let mut last_plan: Option<String> = None;
        for block in &recipe.blocks {
            match block {
                Block::Sql(sql) => client
                    .batch_execute(sql)
                    .await
                    .unwrap_or_else(|e| panic!("{}: sql: {e:?}", recipe.title)),
                Block::File(name, body) => {
                    std::fs::write(dir.path().join(name), body).expect("write")
                }
                Block::Commands(lines) => {
                    for line in lines {
                        let (stdout, stderr, ok) = run(dir.path(), &url, line, &last_plan);
                        assert!(ok, "{}: `{line}` failed:\n{stdout}\n{stderr}", recipe.title);
                        if let Some(id) =
                            stdout.lines().next().and_then(|l| l.strip_prefix("plan "))
                        {
                            last_plan = Some(id.trim().to_owned());
                        }
                        last = stdout;
                    }
                }
                Block::Output { start, end, text } => {
                    if bless {
                        replacements.push((*start, *end, last.clone()));
                    } else if loose(text) != loose(&last) {
                        mismatches.push(format!(
                            "{}:\n--- the page\n{text}\n--- lockplane printed\n{last}",
                            recipe.title
                        ));
                    }
                }
            }
        }
    }
    if bless {
        let mut page = text.clone();
        for (start, end, body) in replacements.into_iter().rev() {
            let body = if body.ends_with('\n') {
                body
            } else {
                format!("{body}\n")
            };
            page.replace_range(start..end, &body);
        }
        std::fs::write(&path, page).expect("bless");
        return;
    }
    assert!(
        mismatches.is_empty(),
        "docs/playbooks.md is not what Lockplane prints (LOCKPLANE_BLESS=1 rewrites it):\n{}",
        mismatches.join("\n\n")
    );
}
