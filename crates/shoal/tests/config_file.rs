//! The TOML config file over the wire: `CONFIG REWRITE` keeps the user's comments and writes
//! typed values that a restart reads back to the same `CONFIG GET *`; the repository's
//! `shoal.example.toml` is what `shoal config example` prints, lists exactly the parameter
//! table, and starts a server identical to one with no file.

mod common;

use std::collections::BTreeMap;

use common::{Shoal, q, scratch_dir};

/// Every parameter but `port`: each test server listens on a free port of its own (started with
/// `--port 0`, it shows the port it bound), so two servers never agree on it.
fn config_all(s: &Shoal) -> BTreeMap<String, String> {
    let mut c = s.client();
    let pairs: Vec<(String, String)> = q(&mut c, &["CONFIG", "GET", "*"]);
    let mut all: BTreeMap<String, String> = pairs.into_iter().collect();
    assert_eq!(all.remove("port"), Some(s.port.to_string()));
    all
}

const USER_FILE: &str = "\
# My cache: comments like this one must survive CONFIG REWRITE.
maxmemory = \"10mb\"   # the cap, as I like to write it

# Eviction
maxmemory-policy = \"allkeys-lru\"
hz = 15
slave-read-only = true
";

#[test]
fn config_rewrite_keeps_comments_and_a_restart_reads_it_back() {
    let dir = scratch_dir("rewrite");
    let path = dir.join("shoal.toml");
    std::fs::write(&path, USER_FILE).unwrap();
    let path_s = path.to_str().unwrap();
    let s = Shoal::start(&["--config", path_s]);
    let mut c = s.client();
    for (k, v) in [
        ("hz", "25"),
        ("maxmemory", "20mb"),
        ("timeout", "7"),
        ("save", "900 1 300 10"),
        ("replica-read-only", "no"),
        ("requirepass", ""),
    ] {
        let ok: String = q(&mut c, &["CONFIG", "SET", k, v]);
        assert_eq!(ok, "OK", "{k}");
    }
    let ok: String = q(&mut c, &["CONFIG", "REWRITE"]);
    assert_eq!(ok, "OK");
    let before = config_all(&s);
    drop(c);
    drop(s);

    let text = std::fs::read_to_string(&path).unwrap();
    for kept in [
        "# My cache: comments like this one must survive CONFIG REWRITE.\n",
        "   # the cap, as I like to write it\n",
        "\n# Eviction\nmaxmemory-policy = \"allkeys-lru\"\n",
    ] {
        assert!(text.contains(kept), "lost {kept:?} in:\n{text}");
    }
    for changed in [
        "maxmemory = 20971520   # the cap",
        "\nhz = 25\n",
        "\nslave-read-only = false\n",
        "\ntimeout = 7\n",
        "\nsave = \"900 1 300 10\"\n",
    ] {
        assert!(text.contains(changed), "no {changed:?} in:\n{text}");
    }
    // The harness's flags differ from the defaults too, so they are appended (as in Redis).
    assert!(text.contains("\nloglevel = \"warning\"\n"), "{text}");
    // Nothing else in the file: every line is a comment, blank, or one of the parameters.
    let table: toml::Table = text.parse().expect("the rewritten file is TOML");
    for key in table.keys() {
        assert!(
            shoal_commands::config::find(key).is_some(),
            "{key} is no parameter"
        );
    }
    // No temporary file left behind.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["shoal.toml"]);

    let s = Shoal::start(&["--config", path_s]);
    assert_eq!(config_all(&s), before, "a restart from the rewritten file");
    // A second rewrite with nothing changed leaves the file as it is (but the port: the
    // restarted server bound another free port, and the file records the one in force).
    let ok: String = q(&mut s.client(), &["CONFIG", "REWRITE"]);
    assert_eq!(ok, "OK");
    let without_port = |t: &str| -> String {
        t.lines()
            .filter(|l| !l.starts_with("port = "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let again = std::fs::read_to_string(&path).unwrap();
    assert!(again.contains(&format!("\nport = {}\n", s.port)), "{again}");
    assert_eq!(without_port(&again), without_port(&text));
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_rewrite_without_a_file_is_refused_as_redis_does() {
    let s = Shoal::start(&[]);
    let mut raw = s.raw();
    assert_eq!(
        raw.call(&["CONFIG", "REWRITE"]),
        "-ERR The server is running without a config file\r\n"
    );
}

#[test]
fn config_rewrite_reports_a_file_it_cannot_write() {
    let dir = scratch_dir("rewrite-ro");
    let path = dir.join("shoal.toml");
    std::fs::write(&path, "hz = 12\n").unwrap();
    let s = Shoal::start(&["--config", path.to_str().unwrap()]);
    // The file is replaced by a folder of the same name: the rename over it fails.
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let mut raw = s.raw();
    let reply = raw.call(&["CONFIG", "REWRITE"]);
    assert!(
        reply.starts_with("-ERR Rewriting config file: "),
        "{reply:?}"
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

fn repo_file(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(name)
}

#[test]
fn the_example_file_is_what_shoal_config_example_prints() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["config", "example"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let file = std::fs::read_to_string(repo_file("shoal.example.toml")).unwrap();
    assert!(
        file == printed,
        "shoal.example.toml is out of date: run `shoal config example > shoal.example.toml`"
    );
}

#[test]
fn the_example_file_lists_every_parameter_and_starts_a_default_server() {
    let path = repo_file("shoal.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let table: toml::Table = text.parse().expect("shoal.example.toml is TOML");
    let listed: Vec<&str> = table.keys().map(String::as_str).collect();
    let params: Vec<&str> = shoal_commands::config::PARAMS
        .iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(
        listed, params,
        "the example lists exactly the parameter table"
    );
    // Every parameter comes with its meaning: a comment right above it.
    for p in shoal_commands::config::PARAMS {
        let at = text.find(&format!("\n{} = ", p.name)).unwrap();
        let above = text[..at].lines().last().unwrap_or_default();
        assert!(above.starts_with("# "), "{} has no comment", p.name);
    }
    let canonical = std::fs::canonicalize(&path).unwrap();
    let with_example = Shoal::start(&["--config", canonical.to_str().unwrap()]);
    let plain = Shoal::start(&[]);
    assert_eq!(config_all(&with_example), config_all(&plain));
}
