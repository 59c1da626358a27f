//! The documentation checked against the code and against itself:
//!
//! - every `WALG_*` setting the library and binary sources name has its own
//!   row in a table of `docs/configuration.md` (the configuration
//!   reference);
//! - every relative link in `README.md`, `CONTRIBUTING.md`, `CHANGELOG.md`
//!   and `docs/*.md` reaches an existing file, and a `#anchor` into a
//!   markdown file reaches one of its headings (GitHub's slugs);
//! - no setting is in the tables of two pages: the reference has its one
//!   row, and the other pages link to it instead of repeating it.
//!
//! Deliberately std only, and deliberately not a markdown parser: it knows
//! fenced code blocks, inline code spans, `[text](target)` links, ATX
//! headings and table rows (lines starting with `|`), which is all these
//! pages use. The sources are found by walking directories, so moving files
//! between modules needs no change here.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Where the library and binary sources live (walked recursively). xtask is
/// left out: its `WALG_BENCH_*` variables are the bench's own knobs.
const SOURCE_DIRS: &[&str] = &[
    "walg-core/src",
    "walg-storage/src",
    "walg-failover/src",
    "walg-cli/src",
];

/// The configuration reference: the one page whose tables hold settings.
const REFERENCE: &str = "docs/configuration.md";

/// `WALG_*` string literals in the sources that are not settings, with why.
/// A literal in this list must still occur in the sources, so the list
/// cannot silently go stale.
const NOT_SETTINGS: &[(&str, &str)] = &[
    // Prefixes, not settings: walg-cli's config decides which keys of a
    // failover section are storage settings (`WALG_S3_SSE`, ...) by them.
    ("WALG_S3_", "prefix of the S3 settings"),
    ("WALG_GS_", "prefix of the GCS settings"),
    ("WALG_AZ_", "prefix of the Azure settings"),
    // Prefixes that mark a key as an encryption setting, which is global
    // and never handed to a storage backend.
    ("WALG_LIBSODIUM_", "prefix of the libsodium settings"),
    ("WALG_PGP_", "prefix of the OpenPGP settings"),
    (
        "WALG_ENVELOPE_",
        "prefix of WAL-G's envelope encryption settings",
    ),
    // A WAL-G setting walg does not have: a unit test of the "unknown
    // setting" warning uses it.
    (
        "WALG_DELTA_MAX_STEPS",
        "test-only: an unknown WAL-G setting",
    ),
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("walg-cli lives in the workspace root")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every `.rs` file under `dir`, recursively, in a stable order.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read directory {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_'
}

/// The `WALG_*` names that open a string literal in `text` (`"WALG_X"`,
/// and also `"WALG_X: ..."` or `"WALG_X.{name}"` in messages): the longest
/// run of `[A-Z0-9_]` after the quote.
fn walg_literals(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut found = BTreeSet::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("\"WALG_") {
        let start = from + at + 1;
        let mut end = start;
        while end < bytes.len() && is_name_char(bytes[end]) {
            end += 1;
        }
        if end > start + "WALG_".len() {
            found.insert(text[start..end].to_string());
        }
        from = end;
    }
    found
}

/// Each `WALG_*` literal of the sources, with the first file naming it.
fn source_literals(root: &Path) -> BTreeMap<String, String> {
    let mut files = Vec::new();
    for dir in SOURCE_DIRS {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(
        files.len() > 10,
        "found only {} source files under {SOURCE_DIRS:?}",
        files.len()
    );
    let mut found = BTreeMap::new();
    for file in files {
        let rel = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string();
        for name in walg_literals(&read(&file)) {
            found.entry(name).or_insert_with(|| rel.clone());
        }
    }
    found
}

/// The lines of a markdown text outside fenced code blocks, with their
/// line numbers (from 1).
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<&str> = None;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        match fence {
            Some(f) => {
                if t.starts_with(f) {
                    fence = None;
                }
            }
            None if t.starts_with("```") => fence = Some("```"),
            None if t.starts_with("~~~") => fence = Some("~~~"),
            None => out.push((i + 1, line)),
        }
    }
    out
}

/// The table rows of a markdown text (lines starting with `|`).
fn table_rows(text: &str) -> Vec<(usize, &str)> {
    prose_lines(text)
        .into_iter()
        .filter(|(_, l)| l.trim_start().starts_with('|'))
        .collect()
}

/// The cells of a table row, split at `|` not escaped with `\`.
fn cells(row: &str) -> Vec<String> {
    let row = row.trim();
    let row = row.strip_prefix('|').unwrap_or(row);
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut escaped = false;
    for c in row.chars() {
        match c {
            '|' if !escaped => cells.push(std::mem::take(&mut cell)),
            _ => cell.push(c),
        }
        escaped = c == '\\';
    }
    if !cell.trim().is_empty() {
        cells.push(cell);
    }
    cells
}

/// The contents of the inline code spans of `text`.
fn code_spans(text: &str) -> Vec<&str> {
    let mut spans = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('`') {
        let after = &rest[open..];
        let ticks = after.len() - after.trim_start_matches('`').len();
        let body = &after[ticks..];
        let Some(close) = body.find(&"`".repeat(ticks)) else {
            break;
        };
        spans.push(body[..close].trim());
        rest = &body[close + ticks..];
    }
    spans
}

/// `text` with its inline code spans removed (a link inside code is text).
fn without_code_spans(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('`') {
        out.push_str(&rest[..open]);
        let after = &rest[open..];
        let ticks = after.len() - after.trim_start_matches('`').len();
        let body = &after[ticks..];
        match body.find(&"`".repeat(ticks)) {
            Some(close) => rest = &body[close + ticks..],
            None => {
                rest = body;
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

fn is_setting_name(s: &str) -> bool {
    s.len() > 2
        && s.as_bytes()[0].is_ascii_uppercase()
        && s.bytes().all(is_name_char)
        && !s.ends_with('_')
}

/// The settings a reference page defines: the names in code spans of the
/// first cell of its table rows, with the line of each row naming it.
fn reference_keys(text: &str) -> BTreeMap<String, Vec<usize>> {
    let mut keys: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (line, row) in table_rows(text) {
        let Some(first) = cells(row).into_iter().next() else {
            continue;
        };
        for span in code_spans(&first) {
            if is_setting_name(span) {
                keys.entry(span.to_string()).or_default().push(line);
            }
        }
    }
    keys
}

/// The words (`[A-Za-z0-9_]` runs) of `text`.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
}

/// The markdown pages whose links are checked: the front page, the project
/// files and every page under docs/.
fn pages(root: &Path) -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = ["README.md", "CONTRIBUTING.md", "CHANGELOG.md"]
        .iter()
        .map(|p| root.join(p))
        .filter(|p| p.is_file())
        .collect();
    let mut docs: Vec<PathBuf> = fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The pages that may hold settings in tables: README.md and docs/*.md.
fn doc_pages(root: &Path) -> Vec<PathBuf> {
    pages(root)
        .into_iter()
        .filter(|p| p.ends_with("README.md") || p.parent() == Some(&*root.join("docs")))
        .collect()
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

/// GitHub's anchor for a heading: lower case, punctuation dropped (letters,
/// digits, `-`, `_` and spaces kept), spaces turned into `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a markdown text's headings; a repeated heading gets
/// `-1`, `-2`, ... as on GitHub.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.len() - line.trim_start_matches('#').len();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let title = line[hashes..].trim().trim_end_matches('#').trim();
        let base = slug(title);
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// The targets of the `[text](target)` and `[label]: target` links of a
/// markdown text, outside code, with their line numbers.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (line, raw) in prose_lines(text) {
        let prose = without_code_spans(raw);
        let t = prose.trim_start();
        if t.starts_with('[') {
            if let Some(close) = t.find("]:") {
                let target = t[close + 2..].split_whitespace().next().unwrap_or("");
                out.push((line, target.to_string()));
                continue;
            }
        }
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find(')').unwrap_or(after.len());
            let target = after[..end].split_whitespace().next().unwrap_or("");
            let target = target.trim_start_matches('<').trim_end_matches('>');
            out.push((line, target.to_string()));
            rest = &after[end..];
        }
    }
    out
}

fn is_external(target: &str) -> bool {
    target.contains("://") || target.starts_with("mailto:")
}

#[test]
fn every_walg_setting_in_the_sources_has_a_row_in_the_configuration_reference() {
    let root = workspace();
    let literals = source_literals(&root);
    let keys = reference_keys(&read(&root.join(REFERENCE)));
    let mut problems = Vec::new();
    for (name, why) in NOT_SETTINGS {
        if !literals.contains_key(*name) {
            problems.push(format!(
                "{name} ({why}) is in NOT_SETTINGS but no longer in the sources: remove it from the list"
            ));
        }
    }
    for (name, file) in &literals {
        if NOT_SETTINGS.iter().any(|(n, _)| n == name) {
            continue;
        }
        if !keys.contains_key(name) {
            problems.push(format!(
                "{name} (named in {file}) has no row in {REFERENCE}: add a row `| \\`{name}\\` | default | meaning |` to the right table there, or, if it is not a setting, add it to NOT_SETTINGS in this test with the reason"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn relative_links_resolve() {
    let root = workspace();
    let mut problems = Vec::new();
    let mut checked = 0;
    for page in pages(&root) {
        let text = read(&page);
        let dir = page.parent().expect("a page is in a directory");
        for (line, target) in links(&text) {
            if target.is_empty() {
                problems.push(format!(
                    "{}:{line}: a link without a target",
                    rel(&root, &page)
                ));
                continue;
            }
            if is_external(&target) {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() {
                page.clone()
            } else {
                dir.join(path)
            };
            if !file.exists() {
                problems.push(format!(
                    "{}:{line}: {target}: {} does not exist",
                    rel(&root, &page),
                    rel(&root, &file)
                ));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if file.extension().is_some_and(|x| x == "md") {
                let known = anchors(&read(&file));
                if !known.contains(anchor) {
                    problems.push(format!(
                        "{}:{line}: {target}: {} has no heading with the anchor #{anchor} (it has: {})",
                        rel(&root, &page),
                        rel(&root, &file),
                        known.into_iter().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
    }
    assert!(checked > 20, "only {checked} relative links found");
    assert!(
        problems.is_empty(),
        "{} broken link(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn each_setting_is_in_the_tables_of_one_page_and_has_one_row_there() {
    let root = workspace();
    let reference = read(&root.join(REFERENCE));
    let keys = reference_keys(&reference);
    let mut problems = Vec::new();
    for (name, lines) in &keys {
        if lines.len() > 1 {
            problems.push(format!(
                "{name} has {} rows in {REFERENCE} (lines {lines:?}); a setting has one",
                lines.len()
            ));
        }
    }
    // The settings: the reference's own, those the sources name, and any
    // other WALG_ name a table might mention.
    let mut settings: BTreeSet<String> = keys.keys().cloned().collect();
    settings.extend(source_literals(&root).into_keys());
    let excluded: BTreeSet<&str> = NOT_SETTINGS.iter().map(|(n, _)| *n).collect();
    let mut tables: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for page in doc_pages(&root) {
        let text = read(&page);
        for (line, row) in table_rows(&text) {
            for word in words(row) {
                let setting =
                    settings.contains(word) || (word.starts_with("WALG_") && is_setting_name(word));
                if setting && !excluded.contains(word) {
                    tables
                        .entry(word.to_string())
                        .or_default()
                        .entry(rel(&root, &page))
                        .or_insert(line);
                }
            }
        }
    }
    for (name, pages) in &tables {
        if pages.len() > 1 {
            let at: Vec<String> = pages.iter().map(|(p, l)| format!("{p}:{l}")).collect();
            problems.push(format!(
                "{name} is in the tables of {} pages ({}); keep its row in {REFERENCE} and link to it from the others",
                pages.len(),
                at.join(", ")
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn the_helpers_read_markdown_as_github_does() {
    assert_eq!(
        slug("Crash leftovers: `walg st clean`"),
        "crash-leftovers-walg-st-clean"
    );
    assert_eq!(slug("Why is pg_wal growing?"), "why-is-pg_wal-growing");
    assert_eq!(
        slug("walg, pgBackRest and `cp` + fsync"),
        "walg-pgbackrest-and-cp--fsync"
    );
    let text = "# A\n```\n# not a heading [x](nowhere.md)\n```\n## A\nsee [b](b.md#c) and `[d](e)`\n[f]: g.md\n";
    assert_eq!(
        anchors(text),
        ["a", "a-1"].iter().map(|s| s.to_string()).collect()
    );
    assert_eq!(
        links(text),
        vec![(6, "b.md#c".to_string()), (7, "g.md".to_string())]
    );
    assert_eq!(
        cells("| `WALG_X` | `a \\| b` | c |"),
        vec![" `WALG_X` ", " `a \\| b` ", " c "]
    );
    assert_eq!(
        walg_literals("x(\"WALG_A\"); bail!(\"WALG_B.{n}\"); \"WALG_\"; WALG_C"),
        ["WALG_A", "WALG_B"].iter().map(|s| s.to_string()).collect()
    );
}
