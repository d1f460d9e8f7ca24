//! The command table: one [`Spec`] per command (name, arity, flags, key specs, group, docs), the
//! data behind `COMMAND`, arity errors, admission checks, key extraction and (later) cluster routing
//! and ACL categories. Entries are struct literals with named fields over [`Spec::DEFAULT`], so a
//! table line says what each value is. Admission reads flags and key specs; nothing outside a
//! command's own module matches on its name.

use std::collections::HashMap;
use std::sync::OnceLock;

pub use crate::keyspec::{BeginSearch, FindKeys, KeySpec, key};
use crate::{Args, Handler};

/// Command flags. The first group are Redis's (in the order `COMMAND INFO` lists them); the
/// shoal-internal ones after them stand in for rules Redis writes as comparisons with command
/// procs, and are never shown (replies stay Redis's).
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
    /// Served by the target of a moving slot without a preceding `ASKING` (RESTORE-ASKING).
    pub const ASKING: u32 = 1 << 14;
    /// Redis's `CMD_MAY_REPLICATE` (PUBLISH): not a write, but held by `CLIENT PAUSE WRITE`.
    /// Redis 7.0's `COMMAND INFO` does not show it, so it is not in [`NAMES`].
    pub const MAY_REPLICATE: u32 = 1 << 15;

    /// shoal-internal: the first argument is a channel (PUBLISH, SPUBLISH), checked against the
    /// user's ACL channel patterns.
    pub const CHANNELS_FIRST: u32 = 1 << 16;
    /// shoal-internal: every argument is a channel (SUBSCRIBE, SSUBSCRIBE, PSUBSCRIBE).
    pub const CHANNELS_ALL: u32 = 1 << 17;
    /// shoal-internal: the channels are patterns, allowed only when the user's ACL names the
    /// same pattern (PSUBSCRIBE).
    pub const CHANNEL_PATTERNS: u32 = 1 << 18;

    /// shoal-internal: runs at once inside MULTI instead of being queued (MULTI, EXEC, DISCARD,
    /// WATCH, QUIT, RESET).
    pub const TX_CONTROL: u32 = 1 << 24;
    /// shoal-internal: not refused for memory inside MULTI, since it does not grow the queue (EXEC,
    /// DISCARD, QUIT, RESET).
    pub const TX_OOM_EXEMPT: u32 = 1 << 25;
    /// shoal-internal: runs the queued transaction, so it needs memory when a queued command does,
    /// and refusing it discards the transaction (EXEC).
    pub const TX_EXEC: u32 = 1 << 26;
    /// shoal-internal: allowed on a RESP2 connection in subscribed mode ((P)SUBSCRIBE,
    /// (P)UNSUBSCRIBE, PING, QUIT, RESET).
    pub const SUBSCRIBED_OK: u32 = 1 << 27;
    /// shoal-internal: never recorded in the slow log (SLOWLOG itself, so reading the log does not
    /// fill it).
    pub const NO_SLOWLOG: u32 = 1 << 28;
    /// shoal-internal: an empty key argument names no key and the keys found are complete
    /// (MIGRATE's `""` before KEYS, as Redis's own key finder for it says).
    pub const EMPTY_KEY_NONE: u32 = 1 << 29;
    /// shoal-internal: every reply is a push (confirmations of (P)SUBSCRIBE and (P)UNSUBSCRIBE),
    /// which Redis writes even under `CLIENT REPLY OFF|SKIP`.
    pub const PUSH_REPLIES: u32 = 1 << 30;

    /// shoal-internal: checks cache-fill leases itself, so the leases on its keys are not dropped
    /// before it runs as they are for other writes (GETLEASE, SETLEASE).
    pub const LEASE_AWARE: u32 = 1 << 23;

    /// Not shown to MONITOR as it arrives (scripts: Redis feeds them to monitors itself).
    pub const SKIP_MONITOR: u32 = 1 << 19;
    /// Never recorded in the slow log (EXEC: the commands it runs are).
    pub const SKIP_SLOWLOG: u32 = 1 << 20;
    /// May name no key at all (scripts): COMMAND GETKEYS answers an empty list, not an error.
    pub const NO_MANDATORY_KEYS: u32 = 1 << 21;
    /// Refused while a replica loads a snapshot asynchronously (Redis's repl-diskless-load
    /// swapdb); shoal loads in place, so it is shown only.
    pub const NO_ASYNC_LOADING: u32 = 1 << 22;

    /// Redis's flags, as `COMMAND INFO` names them; the shoal-internal ones are not here.
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
        (SKIP_MONITOR, "skip_monitor"),
        (SKIP_SLOWLOG, "skip_slowlog"),
        (ASKING, "asking"),
        (FAST, "fast"),
        (NO_AUTH, "no_auth"),
        (NO_MANDATORY_KEYS, "no_mandatory_keys"),
        (NO_ASYNC_LOADING, "no_async_loading"),
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
    Bitmap,
    HyperLogLog,
    Geo,
    Stream,
    Transactions,
    PubSub,
    Cluster,
    Scripting,
    /// shoal's own commands (versions, verification).
    Shoal,
    /// Bloom filters with RedisBloom's commands (`BF.*`), which Redis has only as a module.
    Bloom,
}

impl Group {
    pub fn name(self) -> &'static str {
        match self {
            Group::Connection => "connection",
            Group::Cluster => "cluster",
            Group::Generic => "generic",
            Group::Server => "server",
            Group::String => "string",
            Group::List => "list",
            Group::Hash => "hash",
            Group::Set => "set",
            Group::SortedSet => "sorted-set",
            Group::Bitmap => "bitmap",
            Group::HyperLogLog => "hyperloglog",
            Group::Geo => "geo",
            Group::Stream => "stream",
            Group::Transactions => "transactions",
            Group::PubSub => "pubsub",
            Group::Scripting => "scripting",
            Group::Shoal => "shoal",
            // RedisBloom's group name in its command docs.
            Group::Bloom => "bf",
        }
    }
}

/// A command's own key finder (see [`Spec::key_finder`]).
pub type KeyFinder = fn(&Args<'_>) -> Result<crate::keyspec::KeyRefs, crate::keyspec::BadKeyArgs>;

/// One command.
pub struct Spec {
    /// Lowercase name; subcommands are named `parent|sub` in errors and COMMAND output.
    pub name: &'static str,
    /// Redis arity: N means exactly N arguments (name included), -N means at least N.
    pub arity: i32,
    pub flags: u32,
    /// Where the keys are and what the command does to them (Redis 7 key specs); the legacy
    /// `(first, last, step)` triple is derived from them ([`Spec::legacy_range`]).
    pub keys: &'static [KeySpec],
    /// For key specs marked `VARIABLE_FLAGS`: the flags the keys have in this request (SET's key
    /// is read only with GET).
    pub key_flags: Option<fn(&Args<'_>) -> u32>,
    /// The command's own key finder, for commands whose key specs cannot say where the keys are
    /// (SORT's STORE, Redis's `getkeys_proc`); used instead of the specs.
    pub key_finder: Option<KeyFinder>,
    pub group: Group,
    /// ACL categories that stand for the group's own (SORT: `@set @sortedset @list @dangerous`),
    /// where Redis's table names them explicitly.
    pub type_categories: Option<&'static [&'static str]>,
    pub summary: &'static str,
    pub since: &'static str,
    pub complexity: &'static str,
    /// Redis's command tips (`nondeterministic_output`, `request_policy:...`), for COMMAND INFO.
    pub tips: &'static [&'static str],
    /// `None` for a container whose work is done by its subcommands.
    pub handler: Option<Handler>,
    /// Their arity counts the parent name too.
    pub subcommands: &'static [Spec],
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl Spec {
    /// The values a table entry does not name: no flags, no keys, no docs beyond what it gives.
    pub const DEFAULT: Spec = Spec {
        name: "",
        arity: 0,
        flags: 0,
        keys: &[],
        key_flags: None,
        key_finder: None,
        group: Group::Generic,
        type_categories: None,
        summary: "",
        since: "",
        complexity: "",
        tips: &[],
        handler: None,
        subcommands: &[],
    };

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

    /// The legacy `(first, last, step)` triple of `COMMAND INFO`, derived from the key specs as
    /// Redis 7.0 derives it.
    pub fn legacy_range(&self) -> (i32, i32, i32) {
        crate::keyspec::legacy_range(self.keys).0
    }

    /// ACL categories derived from flags and group, as Redis derives most of them, in Redis's
    /// category order (the order `COMMAND INFO` lists them).
    pub fn acl_categories(&self) -> Vec<&'static str> {
        // Redis's ACL category table order.
        const ORDER: &[&str] = &[
            "@keyspace",
            "@read",
            "@write",
            "@set",
            "@sortedset",
            "@list",
            "@hash",
            "@string",
            "@bitmap",
            "@hyperloglog",
            "@geo",
            "@stream",
            "@pubsub",
            "@admin",
            "@fast",
            "@slow",
            "@blocking",
            "@dangerous",
            "@connection",
            "@transaction",
            "@scripting",
        ];
        let mut c = Vec::new();
        if self.has(flag::WRITE) {
            c.push("@write");
        }
        // Redis: read-only scripts are not `@read` (they may read any key).
        if self.has(flag::READONLY) && self.group != Group::Scripting {
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
        if let Some(cats) = self.type_categories {
            c.extend_from_slice(cats);
        } else if self.subcommands.is_empty() {
            // A container (SCRIPT, XINFO...) has no category of its group: its subcommands do.
            self.push_group_category(&mut c);
        }
        c.sort_by_key(|cat| ORDER.iter().position(|o| o == cat));
        c
    }

    fn push_group_category(&self, c: &mut Vec<&'static str>) {
        match self.group {
            Group::String => c.push("@string"),
            Group::Generic => c.push("@keyspace"),
            Group::Connection => c.push("@connection"),
            Group::List => c.push("@list"),
            Group::Hash => c.push("@hash"),
            Group::Set => c.push("@set"),
            Group::SortedSet => c.push("@sortedset"),
            Group::Bitmap => c.push("@bitmap"),
            Group::HyperLogLog => c.push("@hyperloglog"),
            Group::Geo => c.push("@geo"),
            Group::Stream => c.push("@stream"),
            Group::Transactions => c.push("@transaction"),
            Group::PubSub => {}
            Group::Scripting => c.push("@scripting"),
            Group::Server | Group::Cluster | Group::Shoal | Group::Bloom => {}
        }
    }

    pub fn find_sub(&self, name: &[u8]) -> Option<&'static Spec> {
        self.subcommands.iter().find(|s| {
            let sub = s.name.rsplit('|').next().unwrap_or(s.name);
            sub.as_bytes().eq_ignore_ascii_case(name)
        })
    }
}

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
