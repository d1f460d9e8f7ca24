//! The command table: one [`Spec`] per command (name, arity, flags, key positions, group), the data
//! behind `COMMAND`, arity errors, admission checks and (later) cluster routing and ACL categories.
//! Admission reads flags and key positions; nothing outside a command's own module matches on its name.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::Handler;

/// Command flags (Redis's names, in the order `COMMAND INFO` lists them).
pub mod flag {
    pub const WRITE: u32 = 1 << 0;
    pub const READONLY: u32 = 1 << 1;
    pub const DENYOOM: u32 = 1 << 2;
    pub const ADMIN: u32 = 1 << 3;
    pub const PUBSUB: u32 = 1 << 4;
    pub const NOSCRIPT: u32 = 1 << 5;
    pub const BLOCKING: u32 = 1 << 6;
    pub const LOADING: u32 = 1 << 7;
    pub const STALE: u32 = 1 << 8;
    pub const FAST: u32 = 1 << 9;
    pub const NO_AUTH: u32 = 1 << 10;
    pub const NO_MULTI: u32 = 1 << 11;
    pub const MOVABLEKEYS: u32 = 1 << 12;
    pub const ALLOW_BUSY: u32 = 1 << 13;

    pub const NAMES: &[(u32, &str)] = &[
        (WRITE, "write"),
        (READONLY, "readonly"),
        (DENYOOM, "denyoom"),
        (ADMIN, "admin"),
        (PUBSUB, "pubsub"),
        (NOSCRIPT, "noscript"),
        (BLOCKING, "blocking"),
        (LOADING, "loading"),
        (STALE, "stale"),
        (FAST, "fast"),
        (NO_AUTH, "no_auth"),
        (NO_MULTI, "no_multi"),
        (MOVABLEKEYS, "movablekeys"),
        (ALLOW_BUSY, "allow_busy"),
    ];
}

/// Command groups (as `COMMAND DOCS` names them); they also give the type ACL category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Connection,
    Generic,
    Server,
    String,
    List,
    Hash,
    Set,
    SortedSet,
    Transactions,
    PubSub,
    /// shoal's own commands (versions, verification).
    Shoal,
}

impl Group {
    pub fn name(self) -> &'static str {
        match self {
            Group::Connection => "connection",
            Group::Generic => "generic",
            Group::Server => "server",
            Group::String => "string",
            Group::List => "list",
            Group::Hash => "hash",
            Group::Set => "set",
            Group::SortedSet => "sorted-set",
            Group::Transactions => "transactions",
            Group::PubSub => "pubsub",
            Group::Shoal => "shoal",
        }
    }
}

/// One command.
pub struct Spec {
    /// Lowercase name; subcommands are named `parent|sub` in errors and COMMAND output.
    pub name: &'static str,
    /// Redis arity: N means exactly N arguments (name included), -N means at least N.
    pub arity: i32,
    pub flags: u32,
    /// Legacy key positions: first key, last key (negative counts from the end), step.
    pub first_key: i32,
    pub last_key: i32,
    pub step: i32,
    pub group: Group,
    pub summary: &'static str,
    pub since: &'static str,
    pub complexity: &'static str,
    pub handler: Option<Handler>,
    pub subcommands: &'static [Spec],
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl Spec {
    pub fn has(&self, f: u32) -> bool {
        self.flags & f != 0
    }

    pub fn arity_ok(&self, argc: usize) -> bool {
        let a = self.arity;
        if a >= 0 {
            argc == a as usize
        } else {
            argc >= (-a) as usize
        }
    }

    /// Positions of key arguments in a request (legacy triple).
    pub fn key_positions(&self, argc: usize) -> impl Iterator<Item = usize> {
        let first = self.first_key.max(0) as usize;
        let last = if self.last_key < 0 {
            (argc as i64 + self.last_key as i64).max(0) as usize
        } else {
            self.last_key as usize
        };
        let step = self.step.max(1) as usize;
        let valid = first > 0 && last < argc && first <= last;
        (first..=last).step_by(step).filter(move |_| valid)
    }

    /// ACL categories derived from flags and group, as Redis derives most of them.
    pub fn acl_categories(&self) -> Vec<&'static str> {
        let mut c = Vec::new();
        if self.has(flag::WRITE) {
            c.push("@write");
        }
        if self.has(flag::READONLY) {
            c.push("@read");
        }
        if self.has(flag::ADMIN) {
            c.push("@admin");
            c.push("@dangerous");
        }
        if self.has(flag::PUBSUB) {
            c.push("@pubsub");
        }
        if self.has(flag::FAST) {
            c.push("@fast");
        } else {
            c.push("@slow");
        }
        if self.has(flag::BLOCKING) {
            c.push("@blocking");
        }
        match self.group {
            Group::String => c.push("@string"),
            Group::Generic => c.push("@keyspace"),
            Group::Connection => c.push("@connection"),
            Group::List => c.push("@list"),
            Group::Hash => c.push("@hash"),
            Group::Set => c.push("@set"),
            Group::SortedSet => c.push("@sortedset"),
            Group::Transactions => c.push("@transaction"),
            Group::PubSub => {}
            Group::Server | Group::Shoal => {}
        }
        c
    }

    pub fn find_sub(&self, name: &[u8]) -> Option<&'static Spec> {
        self.subcommands.iter().find(|s| {
            let sub = s.name.rsplit('|').next().unwrap_or(s.name);
            sub.as_bytes().eq_ignore_ascii_case(name)
        })
    }
}

/// A table entry; `sub` lists subcommands (their arity counts the parent name too).
#[allow(clippy::too_many_arguments)]
pub const fn cmd(
    name: &'static str,
    arity: i32,
    flags: u32,
    keys: (i32, i32, i32),
    group: Group,
    since: &'static str,
    summary: &'static str,
    handler: Handler,
) -> Spec {
    Spec {
        name,
        arity,
        flags,
        first_key: keys.0,
        last_key: keys.1,
        step: keys.2,
        group,
        summary,
        since,
        complexity: "",
        handler: Some(handler),
        subcommands: &[],
    }
}

/// A container command whose work is done by its subcommands.
pub const fn container(
    name: &'static str,
    arity: i32,
    flags: u32,
    group: Group,
    since: &'static str,
    summary: &'static str,
    subcommands: &'static [Spec],
) -> Spec {
    Spec {
        name,
        arity,
        flags,
        first_key: 0,
        last_key: 0,
        step: 0,
        group,
        summary,
        since,
        complexity: "",
        handler: None,
        subcommands,
    }
}

pub const NO_KEYS: (i32, i32, i32) = (0, 0, 0);
pub const KEY1: (i32, i32, i32) = (1, 1, 1);

/// Every command, gathered from the family modules.
pub fn all() -> &'static [&'static Spec] {
    static ALL: OnceLock<Vec<&'static Spec>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut v: Vec<&'static Spec> = Vec::new();
        for family in crate::FAMILIES {
            v.extend(family.iter());
        }
        v.sort_by_key(|s| s.name);
        v
    })
}

/// The command or subcommand whose address is `addr` (stored in `ClientHandle::last_cmd`).
pub fn by_address(addr: usize) -> Option<&'static Spec> {
    all()
        .iter()
        .flat_map(|s| std::iter::once(*s).chain(s.subcommands.iter()))
        .find(|s| std::ptr::eq(*s as *const Spec, addr as *const Spec))
}

/// Case-insensitive lookup by name (foldhash: SipHash's DoS resistance buys nothing for a fixed
/// table, and this runs on every command).
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    type Map = HashMap<&'static [u8], &'static Spec, foldhash::fast::FixedState>;
    static MAP: OnceLock<Map> = OnceLock::new();
    let map = MAP.get_or_init(|| all().iter().map(|s| (s.name.as_bytes(), *s)).collect());
    let mut buf = [0u8; 32];
    let lower = buf.get_mut(..name.len())?;
    for (d, s) in lower.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    map.get(&*lower).copied()
}
