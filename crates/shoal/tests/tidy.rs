//! Tidy checks, run with every other test: each Rust file opens with a `//!` header; the crate
//! dependencies point the way ARCHITECTURE.md draws them (read from `cargo metadata`); and the
//! synchronous core crates (keyspace, replication, commands) read no clock, start no thread and
//! keep no process-wide mutable state outside test code, except for the few uses listed in
//! `ALLOWED`, each with its reason. Std only; it builds nothing and runs in under a second.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `.rs` file under `dir`, skipping build output (`target/`) and hidden directories.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn relative(path: &Path) -> String {
    let root = repo_root();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// `//!` headers.

/// Whether the first non-empty line is a `//!` doc comment.
fn has_header(src: &str) -> bool {
    src.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .is_some_and(|l| l.starts_with("//!"))
}

#[test]
fn every_rust_file_starts_with_a_doc_header() {
    let root = repo_root();
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    rust_files(&root.join("fuzz"), &mut files);
    // A walker that found nothing would pass vacuously.
    assert!(
        files.len() > 50,
        "only {} .rs files found under crates/ and fuzz/",
        files.len()
    );
    let missing: Vec<String> = files
        .iter()
        .filter(|f| !has_header(&std::fs::read_to_string(f).expect("read source")))
        .map(|f| relative(f))
        .collect();
    assert!(
        missing.is_empty(),
        "these files do not start with a `//!` header saying what the file is for:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn the_header_check_wants_a_doc_comment_first() {
    assert!(has_header("\n//! What this is.\nfn f() {}\n"));
    assert!(!has_header("// a plain comment\n//! late header\n"));
    assert!(!has_header("use std::io;\n"));
    assert!(!has_header(""));
}

// ---------------------------------------------------------------------------------------------
// Dependency direction.

/// Crates whose dependencies on our crates are limited to a list (any kind, dev included).
const OURS_ONLY: &[(&str, &[&str])] = &[
    ("shoal-resp", &[]),
    ("shoal-keyspace", &[]),
    ("shoal-replication", &["shoal-resp", "shoal-keyspace"]),
    ("shoal-cluster", &["shoal-keyspace"]),
    // The client speaks RESP only: never the server's crates.
    ("shoal-client", &["shoal-resp"]),
    (
        "shoal-commands",
        &[
            "shoal-resp",
            "shoal-keyspace",
            "shoal-replication",
            "shoal-cluster",
        ],
    ),
];

/// Crates that must never depend on some of ours (any kind): the simulator runs the sans-I/O
/// crates itself; pulling in the server would bring tokio, sockets and the system clock.
const OURS_NEVER: &[(&str, &[&str])] = &[("shoal-sim", &["shoal-server", "shoal"])];

/// The only crates that may use tokio as a normal (or build) dependency; dev-dependencies are
/// allowed anywhere.
const TOKIO_USERS: &[&str] = &["shoal-server", "shoal", "shoal-loadgen", "shoal-client"];

/// The arrows that point the wrong way, read from `cargo metadata --no-deps` output (which lists
/// the workspace's packages with their direct dependencies and each one's kind).
fn dependency_violations(metadata: &Json) -> Vec<String> {
    let packages = metadata
        .get("packages")
        .and_then(Json::array)
        .expect("packages");
    let mut deps: Vec<(&str, Vec<(&str, &str)>)> = Vec::new();
    for p in packages {
        let name = p.get("name").and_then(Json::str).expect("package name");
        let list = p
            .get("dependencies")
            .and_then(Json::array)
            .expect("dependencies");
        let list = list
            .iter()
            .map(|d| {
                let dep = d.get("name").and_then(Json::str).expect("dependency name");
                (dep, d.get("kind").and_then(Json::str).unwrap_or("normal"))
            })
            .collect();
        deps.push((name, list));
    }
    let ours = |n: &str| deps.iter().any(|(p, _)| *p == n);
    let mut bad = Vec::new();
    // A renamed crate must not switch its rule off silently.
    for (krate, _) in OURS_ONLY.iter().chain(OURS_NEVER) {
        if !ours(krate) {
            bad.push(format!(
                "a rule names {krate}, which cargo metadata does not list: update the rule"
            ));
        }
    }
    for (krate, list) in &deps {
        for &(dep, kind) in list {
            if ours(dep) {
                if let Some((_, allowed)) = OURS_ONLY.iter().find(|(k, _)| k == krate)
                    && !allowed.contains(&dep)
                {
                    let may = if allowed.is_empty() {
                        "on none of our crates".to_string()
                    } else {
                        format!("only on {}", allowed.join(", "))
                    };
                    bad.push(format!(
                        "{krate} -> {dep} ({kind}): {krate} may depend {may}"
                    ));
                }
                if let Some((_, never)) = OURS_NEVER.iter().find(|(k, _)| k == krate)
                    && never.contains(&dep)
                {
                    bad.push(format!(
                        "{krate} -> {dep} ({kind}): {krate} must never depend on {}",
                        never.join(" or ")
                    ));
                }
            }
            if dep == "tokio" && kind != "dev" && !TOKIO_USERS.contains(krate) {
                bad.push(format!(
                    "{krate} -> tokio ({kind}): only {} may use tokio",
                    TOKIO_USERS.join(", ")
                ));
            }
        }
    }
    bad
}

#[test]
fn crate_dependencies_point_one_way() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = repo_root();
    let out = Command::new(&cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(root.join("Cargo.toml"))
        .output()
        .unwrap_or_else(|e| panic!("run {cargo:?} metadata: {e}"));
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata = Json::parse(&String::from_utf8(out.stdout).expect("utf-8 metadata"));
    let bad = dependency_violations(&metadata);
    assert!(
        bad.is_empty(),
        "dependencies that point the wrong way (see ARCHITECTURE.md, \"Crates\"; tokio may be a \
         dev-dependency anywhere):\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn the_dependency_check_names_the_wrong_arrow() {
    let metadata = Json::parse(
        r#"{"packages": [
            {"name": "shoal-resp", "dependencies": []},
            {"name": "shoal-keyspace", "dependencies": [
                {"name": "tokio", "kind": null}, {"name": "proptest", "kind": "dev"}]},
            {"name": "shoal-replication", "dependencies": [
                {"name": "shoal-commands", "kind": null}]},
            {"name": "shoal-cluster", "dependencies": [{"name": "shoal-keyspace", "kind": null}]},
            {"name": "shoal-commands", "dependencies": [{"name": "tokio", "kind": "dev"}]},
            {"name": "shoal-sim", "dependencies": [{"name": "shoal-server", "kind": "dev"}]},
            {"name": "shoal-server", "dependencies": [{"name": "tokio", "kind": null}]},
            {"name": "shoal-client", "dependencies": [
                {"name": "shoal-resp", "kind": null}, {"name": "tokio", "kind": null}]}
        ]}"#,
    );
    assert_eq!(
        dependency_violations(&metadata),
        [
            "shoal-keyspace -> tokio (normal): \
             only shoal-server, shoal, shoal-loadgen, shoal-client may use tokio",
            "shoal-replication -> shoal-commands (normal): \
             shoal-replication may depend only on shoal-resp, shoal-keyspace",
            "shoal-sim -> shoal-server (dev): shoal-sim must never depend on shoal-server or shoal",
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// No clock, no threads, no process-wide state in the synchronous core.

/// The crates whose `src/` is scanned.
const CORE_CRATES: &[&str] = &[
    "crates/keyspace",
    "crates/replication",
    "crates/cluster",
    "crates/commands",
];

/// Whether one line of code does a forbidden thing.
type LineTest = fn(&str) -> bool;

/// What the core must not do outside `#[cfg(test)]` code, as (name, test on one line of code).
const FORBIDDEN: &[(&str, LineTest)] = &[
    ("reads the wall clock (SystemTime)", |l| {
        l.contains("SystemTime")
    }),
    ("reads the monotonic clock (Instant::now)", |l| {
        l.contains("Instant::now")
    }),
    ("starts a thread (thread::spawn)", |l| {
        l.contains("thread::spawn")
    }),
    ("keeps per-thread state (thread_local!)", |l| {
        l.contains("thread_local!")
    }),
    ("keeps a process-wide atomic (static ... Atomic)", |l| {
        static_item(l).is_some_and(|rest| rest.contains("Atomic"))
    }),
    ("keeps a mutable static (static mut)", |l| {
        static_item(l).is_some_and(|rest| rest.starts_with("mut "))
    }),
];

/// An exception to `FORBIDDEN`, with its reason.
struct Allowed {
    file: &'static str,
    /// A piece of the offending line of code.
    line_contains: &'static str,
    /// The use is on its way out: the entry may match nothing without failing the test. Any other
    /// entry that matches nothing fails it, so the list cannot outlive what it excuses.
    transitional: bool,
    why: &'static str,
}

const ALLOWED: &[Allowed] = &[
    Allowed {
        file: "crates/keyspace/src/write_log.rs",
        line_contains: "thread_local!",
        transitional: false,
        why: "the write log: the keys the running command changed on this thread, drained after \
              each command into the replication stream (see the file's header)",
    },
    Allowed {
        file: "crates/keyspace/src/notify.rs",
        line_contains: "thread_local!",
        transitional: false,
        why: "keyspace notifications: the events the running command raised on this thread, \
              published after it (see the file's header)",
    },
    Allowed {
        file: "crates/commands/src/effects.rs",
        line_contains: "thread_local!",
        transitional: false,
        why: "the buffer a thread encodes a shard's queued effects into: reused, and hot in the \
              thread's cache (see the file)",
    },
    Allowed {
        file: "crates/keyspace/src/sticky.rs",
        line_contains: "thread_local!",
        transitional: false,
        why: "the shard a worker thread keeps locked between the commands of one pipeline: the \
              hold belongs to the thread, which gives it up before it waits (see the file's header)",
    },
    Allowed {
        file: "crates/keyspace/src/claim.rs",
        line_contains: "thread_local!",
        transitional: false,
        why: "the hot shard a worker thread claims and the locks it found taken: a claim steers \
              requests to the thread that holds it, and only that thread ends it (see the file's \
              header)",
    },
    Allowed {
        file: "crates/commands/src/multi.rs",
        line_contains: "thread_local!",
        transitional: false,
        why: "the exec gate's per-thread slot cache: a command's shared hold of the gate is one \
              flag on its own cache line (ARCHITECTURE.md, \"Transactions\")",
    },
    Allowed {
        file: "crates/commands/src/multi.rs",
        line_contains: "static NEXT_ID: AtomicU64",
        transitional: false,
        why: "ids that tell exec gates apart in those thread caches when one process runs several \
              servers (tests); no behaviour depends on the value",
    },
];

/// For a line declaring a `static` item, what follows `static `.
fn static_item(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    if let Some(r) = rest.strip_prefix("pub") {
        rest = r.trim_start();
        if rest.starts_with('(') {
            rest = rest[rest.find(')')? + 1..].trim_start();
        }
    }
    rest.strip_prefix("static ").map(str::trim_start)
}

/// `src` with comments and string and char literals blanked and every `#[cfg(test)]` item
/// removed, newlines kept (so line numbers hold): what is left is code that ships.
fn shipped_code(src: &str) -> Vec<String> {
    let c: Vec<char> = src.chars().collect();
    let mut out: Vec<char> = Vec::with_capacity(c.len());
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let blank = |out: &mut Vec<char>, from: &[char]| {
        out.extend(from.iter().map(|&ch| if ch == '\n' { '\n' } else { ' ' }));
    };
    let mut i = 0;
    while i < c.len() {
        let at = |k: usize| c.get(k).copied().unwrap_or('\0');
        let end = if at(i) == '/' && at(i + 1) == '/' {
            (i..c.len()).find(|&k| c[k] == '\n').unwrap_or(c.len())
        } else if at(i) == '/' && at(i + 1) == '*' {
            // Block comments nest.
            let (mut k, mut depth) = (i, 0usize);
            while k < c.len() {
                if at(k) == '/' && at(k + 1) == '*' {
                    depth += 1;
                    k += 2;
                } else if at(k) == '*' && at(k + 1) == '/' {
                    depth -= 1;
                    k += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    k += 1;
                }
            }
            k
        } else if at(i) == '"' {
            let mut k = i + 1;
            while k < c.len() && c[k] != '"' {
                k += if c[k] == '\\' { 2 } else { 1 };
            }
            k + 1
        } else if at(i) == 'r'
            && (i == 0 || !ident(c[i - 1]) || (c[i - 1] == 'b' && (i < 2 || !ident(c[i - 2]))))
            && matches!(c[i + 1..].iter().find(|&&ch| ch != '#'), Some('"'))
        {
            // A raw string: r"..." or r#"..."#, closed by a quote and as many #.
            let hashes = c[i + 1..].iter().take_while(|&&ch| ch == '#').count();
            let mut k = i + 2 + hashes;
            while k < c.len() && !(c[k] == '"' && (1..=hashes).all(|h| at(k + h) == '#')) {
                k += 1;
            }
            k + 1 + hashes
        } else if at(i) == '\'' && at(i + 1) == '\\' {
            // An escaped char literal: '\n', '\'', '\u{1F600}'.
            (i + 3..c.len())
                .find(|&k| c[k] == '\'')
                .map_or(c.len(), |k| k + 1)
        } else if at(i) == '\'' && at(i + 2) == '\'' {
            i + 3
        } else {
            // Code (a lifetime's quote included).
            out.push(c[i]);
            i += 1;
            continue;
        };
        let end = end.min(c.len());
        blank(&mut out, &c[i..end]);
        i = end;
    }
    // Remove each `#[cfg(test)]` item: up to its `;`, or through its `{ ... }` block.
    let attr: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut i = 0;
    while i + attr.len() <= out.len() {
        if out[i..i + attr.len()] != attr[..] {
            i += 1;
            continue;
        }
        let (mut k, mut nesting, mut braces) = (i + attr.len(), 0i32, 0i32);
        while k < out.len() {
            match out[k] {
                '(' | '[' => nesting += 1,
                ')' | ']' => nesting -= 1,
                ';' if nesting == 0 && braces == 0 => break,
                '{' if nesting == 0 => braces += 1,
                '}' if nesting == 0 => {
                    braces -= 1;
                    if braces == 0 {
                        break;
                    }
                }
                _ => {}
            }
            k += 1;
        }
        let end = (k + 1).min(out.len());
        for ch in &mut out[i..end] {
            if *ch != '\n' {
                *ch = ' ';
            }
        }
        i = end;
    }
    out.into_iter()
        .collect::<String>()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Each forbidden use in `src` (of file `path`) as (line number, what, line), with whether an
/// allow-list entry excused it.
fn forbidden_uses(path: &str, src: &str) -> Vec<(usize, &'static str, String, Option<usize>)> {
    let original: Vec<&str> = src.lines().collect();
    let mut found = Vec::new();
    for (n, line) in shipped_code(src).iter().enumerate() {
        for (what, test) in FORBIDDEN {
            if test(line) {
                let allowed = ALLOWED
                    .iter()
                    .position(|a| a.file == path && line.contains(a.line_contains));
                let text = original.get(n).unwrap_or(&"").trim().to_string();
                found.push((n + 1, *what, text, allowed));
            }
        }
    }
    found
}

#[test]
fn the_core_crates_read_no_clock_start_no_thread_and_keep_no_global_state() {
    let root = repo_root();
    let mut bad = String::new();
    let mut used = vec![false; ALLOWED.len()];
    let mut scanned = 0;
    for krate in CORE_CRATES {
        let mut files = Vec::new();
        rust_files(&root.join(krate).join("src"), &mut files);
        for f in files {
            let path = relative(&f);
            let src = std::fs::read_to_string(&f).expect("read source");
            scanned += 1;
            for (line, what, text, allowed) in forbidden_uses(&path, &src) {
                match allowed {
                    Some(a) => used[a] = true,
                    None => writeln!(bad, "  {path}:{line} {what}: {text}").unwrap(),
                }
            }
        }
    }
    assert!(
        scanned > 20,
        "only {scanned} files scanned in {CORE_CRATES:?}"
    );
    for (entry, a) in ALLOWED.iter().enumerate() {
        if !used[entry] && !a.transitional {
            let (file, piece, why) = (a.file, a.line_contains, a.why);
            writeln!(
                bad,
                "  allow-list entry {file} {piece:?} ({why}) matches nothing: remove it"
            )
            .unwrap();
        }
    }
    assert!(
        bad.is_empty(),
        "the core crates take time, threads and randomness from their caller (ARCHITECTURE.md); \
         move this to the server crate, pass it in, or put it under #[cfg(test)]; if it must stay, \
         add it with its reason to ALLOWED in this file:\n{bad}"
    );
}

#[test]
fn the_scan_sees_code_but_not_comments_strings_or_test_items() {
    let src = r##"//! Header mentioning Instant::now.
use std::time::SystemTime;
fn f(s: &'static str) -> char { let _ = "thread::spawn"; let _ = r#"thread_local!"#; '{' }
pub(crate) static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/* static mut X: u8 = 0; /* nested */ thread_local! */
#[cfg(test)]
mod tests {
    fn g() { let _ = '{'; std::thread::spawn(|| {}); }
}
#[cfg(test)]
static mut Y: u8 = 0;
fn h() { std::thread::spawn(|| {}); }
"##;
    let found: Vec<(usize, &str)> = forbidden_uses("x.rs", src)
        .iter()
        .map(|(line, what, ..)| (*line, *what))
        .collect();
    assert_eq!(
        found,
        [
            (2, "reads the wall clock (SystemTime)"),
            (4, "keeps a process-wide atomic (static ... Atomic)"),
            (12, "starts a thread (thread::spawn)"),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Just enough JSON for `cargo metadata` (std only: no dependency to add for one test).

enum Json {
    /// null, true, false or a number: nothing read here needs their value.
    Scalar,
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn parse(text: &str) -> Json {
        let chars: Vec<char> = text.chars().collect();
        let mut pos = 0;
        let value = Json::value(&chars, &mut pos);
        Json::space(&chars, &mut pos);
        assert_eq!(pos, chars.len(), "trailing data after JSON value");
        value
    }

    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn array(&self) -> Option<&[Json]> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }

    fn str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    fn space(c: &[char], pos: &mut usize) {
        while c.get(*pos).is_some_and(|ch| ch.is_whitespace()) {
            *pos += 1;
        }
    }

    fn expect(c: &[char], pos: &mut usize, want: char) {
        Json::space(c, pos);
        assert_eq!(c.get(*pos), Some(&want), "JSON: expected {want:?} at {pos}");
        *pos += 1;
    }

    fn value(c: &[char], pos: &mut usize) -> Json {
        Json::space(c, pos);
        let word = |w: &str, pos: &mut usize| {
            let w: Vec<char> = w.chars().collect();
            assert!(c[*pos..].starts_with(&w), "JSON: bad literal at {pos}");
            *pos += w.len();
            Json::Scalar
        };
        match c.get(*pos).copied() {
            Some('n') => word("null", pos),
            Some('t') => word("true", pos),
            Some('f') => word("false", pos),
            Some('"') => Json::Str(Json::string(c, pos)),
            Some('[') => {
                *pos += 1;
                let mut items = Vec::new();
                Json::space(c, pos);
                if c.get(*pos) == Some(&']') {
                    *pos += 1;
                    return Json::Array(items);
                }
                loop {
                    items.push(Json::value(c, pos));
                    Json::space(c, pos);
                    *pos += 1;
                    match c.get(*pos - 1) {
                        Some(',') => {}
                        Some(']') => return Json::Array(items),
                        other => panic!("JSON: expected , or ] at {pos}, found {other:?}"),
                    }
                }
            }
            Some('{') => {
                *pos += 1;
                let mut fields = Vec::new();
                Json::space(c, pos);
                if c.get(*pos) == Some(&'}') {
                    *pos += 1;
                    return Json::Object(fields);
                }
                loop {
                    Json::space(c, pos);
                    let key = Json::string(c, pos);
                    Json::expect(c, pos, ':');
                    fields.push((key, Json::value(c, pos)));
                    Json::space(c, pos);
                    *pos += 1;
                    match c.get(*pos - 1) {
                        Some(',') => {}
                        Some('}') => return Json::Object(fields),
                        other => panic!("JSON: expected , or }} at {pos}, found {other:?}"),
                    }
                }
            }
            Some(ch) if ch == '-' || ch.is_ascii_digit() => {
                let start = *pos;
                while c
                    .get(*pos)
                    .is_some_and(|ch| ch.is_ascii_digit() || "+-.eE".contains(*ch))
                {
                    *pos += 1;
                }
                assert!(
                    *pos > start + usize::from(c[start] == '-'),
                    "JSON: bad number at {start}"
                );
                Json::Scalar
            }
            other => panic!("JSON: unexpected {other:?} at {pos}"),
        }
    }

    fn string(c: &[char], pos: &mut usize) -> String {
        Json::expect(c, pos, '"');
        let mut s = String::new();
        loop {
            let ch = *c.get(*pos).expect("JSON: unterminated string");
            *pos += 1;
            match ch {
                '"' => return s,
                '\\' => {
                    let esc = *c.get(*pos).expect("JSON: unterminated escape");
                    *pos += 1;
                    s.push(match esc {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        'b' => '\u{8}',
                        'f' => '\u{c}',
                        'u' => {
                            let hex: String = c[*pos..*pos + 4].iter().collect();
                            *pos += 4;
                            // Surrogate pairs never occur in the names and kinds read here.
                            u32::from_str_radix(&hex, 16)
                                .ok()
                                .and_then(char::from_u32)
                                .unwrap_or('\u{fffd}')
                        }
                        other => other,
                    });
                }
                _ => s.push(ch),
            }
        }
    }
}
