//! Keeps `docs/commands.md`, the command reference the README points to, equal to the command table:
//! the reference is generated from the table (name, arguments count, summary, flags, since) and this
//! test fails when the file differs, so a command cannot be added, renamed or removed without the
//! reference following. `SHOAL_BLESS=1 cargo test -p shoal-commands --test reference` rewrites it.

use std::fmt::Write as _;
use std::path::PathBuf;

use shoal_commands::table::{self, Group, Spec, flag};

const GROUPS: &[(Group, &str)] = &[
    (Group::String, "Strings"),
    (Group::Generic, "Keys"),
    (Group::Hash, "Hashes"),
    (Group::List, "Lists"),
    (Group::Set, "Sets"),
    (Group::SortedSet, "Sorted sets"),
    (Group::Bitmap, "Bitmaps"),
    (Group::HyperLogLog, "HyperLogLog"),
    (Group::Geo, "Geo"),
    (Group::Stream, "Streams"),
    (Group::Transactions, "Transactions"),
    (Group::PubSub, "Pub/sub"),
    (Group::Scripting, "Scripting"),
    (Group::Connection, "Connection"),
    (Group::Server, "Server"),
    (Group::Cluster, "Cluster"),
    (Group::Shoal, "shoal's own commands"),
    (Group::Bloom, "Bloom filters (RedisBloom's BF.* commands)"),
];

fn arity(spec: &Spec) -> String {
    if spec.arity >= 0 {
        format!("{}", spec.arity)
    } else {
        format!("≥{}", -spec.arity)
    }
}

fn flags(spec: &Spec) -> String {
    flag::NAMES
        .iter()
        .filter(|(f, _)| spec.has(*f))
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(" ")
}

fn row(out: &mut String, name: &str, spec: &Spec) {
    let _ = writeln!(
        out,
        "| `{}` | {} | {} | {} | {} |",
        name.to_uppercase(),
        arity(spec),
        spec.summary.replace('|', "\\|"),
        flags(spec),
        spec.since,
    );
}

fn reference() -> String {
    let mut out = String::from(
        "# shoal command reference\n\n\
         Generated from the command table (`crates/commands/src/table.rs` and the family modules) by\n\
         `SHOAL_BLESS=1 cargo test -p shoal-commands --test reference`; the test fails when this file\n\
         and the table differ. Semantics, replies and errors are Redis 7.0's unless the summary says\n\
         otherwise. Arguments count the command's name (and a subcommand's, its parent's); `≥N` means\n\
         at least N. A command not listed here answers `-ERR unknown command`.\n",
    );
    let all = table::all();
    for (group, title) in GROUPS {
        let specs: Vec<&Spec> = all.iter().copied().filter(|s| s.group == *group).collect();
        if specs.is_empty() {
            continue;
        }
        let count: usize = specs.iter().map(|s| s.subcommands.len().max(1)).sum();
        let _ = write!(
            out,
            "\n## {title} ({count})\n\n| command | args | summary | flags | since |\n|---|---|---|---|---|\n"
        );
        for spec in specs {
            if spec.subcommands.is_empty() {
                row(&mut out, spec.name, spec);
            }
            for sub in spec.subcommands {
                row(&mut out, &sub.name.replace('|', " "), sub);
            }
        }
    }
    out
}

#[test]
fn the_command_reference_matches_the_table() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/commands.md");
    let want = reference();
    if std::env::var_os("SHOAL_BLESS").is_some() {
        std::fs::write(&path, &want).expect("write docs/commands.md");
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/commands.md differs from the command table; run \
         `SHOAL_BLESS=1 cargo test -p shoal-commands --test reference` and commit the file"
    );
}

#[test]
fn every_command_belongs_to_a_listed_group() {
    for spec in table::all() {
        assert!(
            GROUPS.iter().any(|(g, _)| *g == spec.group),
            "{} is in a group the reference does not list",
            spec.name
        );
    }
}
