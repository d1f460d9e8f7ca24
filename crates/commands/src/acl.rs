//! ACL users as Redis 7.0 has them: the user registry (passwords stored as SHA-256 hex, `on|off`,
//! command bits by command, subcommand, first argument and category, key patterns with read/write
//! permissions, channel patterns), the permission check admission runs before every command (from
//! the command table's categories, key specs and channel flags, never a command's name), the ACL
//! log, rule descriptions as `ACL LIST` prints them, and the `ACL` command family. File I/O for
//! `ACL SAVE`/`LOAD` goes through [`crate::Hooks`].
//! Selectors (`(...)` rules) are further selectors a command may pass instead of the root one.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use crate::table::{Group, flag, key};
use crate::{Args, CmdResult, Ctx, ReplyError, Spec, err, keyspec};

/// Redis's ACL categories, in its order (`ACL CAT`, rule descriptions).
pub const CATEGORIES: &[&str] = &[
    "keyspace",
    "read",
    "write",
    "set",
    "sortedset",
    "list",
    "hash",
    "string",
    "bitmap",
    "hyperloglog",
    "geo",
    "stream",
    "pubsub",
    "admin",
    "fast",
    "slow",
    "blocking",
    "dangerous",
    "connection",
    "transaction",
    "scripting",
];

/// Entries of the ACL log grouped into one when they repeat within this time (Redis's).
const LOG_GROUPING_MS: u64 = 60_000;
/// Largest `ACL GENPASS` size, in bits.
const GENPASS_BITS_MAX: i64 = 4096;
/// Selectors one user may have.
pub const SELECTORS_MAX: usize = 1024;
/// First arguments one command may allow (`+select|0`), so a rule set stays bounded.
pub const FIRSTARGS_PER_COMMAND_MAX: usize = 1024;

/// Every command and subcommand with a dense id: parents sorted by name, each followed by its
/// subcommands (the order rule descriptions list single commands in).
struct Table {
    specs: Vec<&'static Spec>,
    ids: HashMap<usize, usize, foldhash::fast::FixedState>,
    /// Category bits of each id (bit i = `CATEGORIES[i]`).
    cats: Vec<u32>,
    /// For a parent: the ids of its subcommands.
    subs: Vec<std::ops::Range<usize>>,
}

fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| {
        let mut t = Table {
            specs: Vec::new(),
            ids: HashMap::default(),
            cats: Vec::new(),
            subs: Vec::new(),
        };
        for s in crate::table::all() {
            let id = t.specs.len();
            t.specs.push(s);
            t.subs.push(0..0);
            for sub in s.subcommands {
                t.specs.push(sub);
                t.subs.push(0..0);
            }
            t.subs[id] = id + 1..t.specs.len();
        }
        for (i, s) in t.specs.iter().enumerate() {
            t.ids.insert(*s as *const Spec as usize, i);
            let mut bits = 0;
            for c in s.acl_categories() {
                if let Some(p) = CATEGORIES.iter().position(|n| c[1..] == **n) {
                    bits |= 1 << p;
                }
            }
            t.cats.push(bits);
        }
        t
    })
}

fn spec_id(spec: &'static Spec) -> usize {
    table().ids[&(spec as *const Spec as usize)]
}

fn category_index(name: &str) -> Option<usize> {
    CATEGORIES.iter().position(|c| c.eq_ignore_ascii_case(name))
}

/// A key pattern with the permissions it grants.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyPattern {
    read: bool,
    write: bool,
    pattern: Vec<u8>,
}

impl KeyPattern {
    fn describe(&self, out: &mut Vec<u8>) {
        match (self.read, self.write) {
            (true, false) => out.extend_from_slice(b"%R~"),
            (false, true) => out.extend_from_slice(b"%W~"),
            _ => out.push(b'~'),
        }
        out.extend_from_slice(&self.pattern);
    }
}

/// What a user may run and touch (Redis's root selector).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// One bit per command id, then one for commands that do not exist yet (set only by
    /// `+@all`, so the description starts with `+@all`).
    allowed: Vec<u64>,
    firstargs: BTreeMap<usize, Vec<Vec<u8>>>,
    allkeys: bool,
    keys: Vec<KeyPattern>,
    allchannels: bool,
    channels: Vec<Vec<u8>>,
}

impl Default for Selector {
    fn default() -> Self {
        let n = table().specs.len() + 1;
        Selector {
            allowed: vec![0; n.div_ceil(64)],
            firstargs: BTreeMap::new(),
            allkeys: false,
            keys: Vec::new(),
            allchannels: false,
            channels: Vec::new(),
        }
    }
}

impl Selector {
    fn future_bit() -> usize {
        table().specs.len()
    }

    fn bit(&self, id: usize) -> bool {
        self.allowed[id / 64] & (1 << (id % 64)) != 0
    }

    fn set_bit(&mut self, id: usize, on: bool) {
        if on {
            self.allowed[id / 64] |= 1 << (id % 64);
        } else {
            self.allowed[id / 64] &= !(1 << (id % 64));
        }
    }

    /// Redis's `ACLChangeSelectorPerm`: the command, and all its subcommands.
    fn change_perm(&mut self, id: usize, on: bool) {
        self.set_bit(id, on);
        self.firstargs.remove(&id);
        for sub in table().subs[id].clone() {
            self.set_bit(sub, on);
        }
    }

    fn set_all(&mut self, on: bool) {
        for w in &mut self.allowed {
            *w = if on { u64::MAX } else { 0 };
        }
        self.firstargs.clear();
    }

    fn set_category(&mut self, cat: usize, on: bool) {
        let t = table();
        for id in 0..t.specs.len() {
            if t.cats[id] & (1 << cat) != 0 {
                self.change_perm(id, on);
            }
        }
    }

    fn count_category(&self, cat: usize) -> (usize, usize) {
        let t = table();
        let (mut on, mut off) = (0, 0);
        for id in 0..t.specs.len() {
            if t.cats[id] & (1 << cat) != 0 {
                if self.bit(id) {
                    on += 1;
                } else {
                    off += 1;
                }
            }
        }
        (on, off)
    }

    /// Every command, every key, every channel: no check needed.
    fn unrestricted(&self) -> bool {
        self.allkeys && self.allchannels && (0..=Self::future_bit()).all(|id| self.bit(id))
    }

    /// The command rules as Redis 7.0 describes them: `+@all` or `-@all`, then the categories
    /// that best fit the bits (applied one at a time), then single commands, then first args.
    fn describe_commands(&self) -> String {
        let t = table();
        let additive = !self.bit(Self::future_bit());
        let mut rules = String::from(if additive { "-@all " } else { "+@all " });
        let mut fake = Selector::default();
        fake.set_all(!additive);
        let mut temp = self.clone();
        let mut applied = [false; 32];
        loop {
            let mut best = None;
            let (mut mindiff, mut maxsame) = (usize::MAX, 0);
            for (j, done) in applied.iter().enumerate().take(CATEGORIES.len()) {
                if *done {
                    continue;
                }
                let (on, off) = temp.count_category(j);
                let (diff, same) = if additive { (off, on) } else { (on, off) };
                if same > diff && (diff < mindiff || (diff == mindiff && same > maxsame)) {
                    best = Some(j);
                    mindiff = diff;
                    maxsame = same;
                }
            }
            let Some(j) = best else { break };
            fake.set_category(j, additive);
            temp.set_category(j, !additive);
            rules.push_str(if additive { "+@" } else { "-@" });
            rules.push_str(CATEGORIES[j]);
            rules.push(' ');
            applied[j] = true;
        }
        for id in 0..t.specs.len() {
            let user = self.bit(id);
            if user != fake.bit(id) {
                rules.push(if user { '+' } else { '-' });
                rules.push_str(t.specs[id].name);
                rules.push(' ');
                fake.change_perm(id, user);
            }
        }
        for (id, args) in &self.firstargs {
            for a in args {
                rules.push('+');
                rules.push_str(t.specs[*id].name);
                rules.push('|');
                rules.push_str(&String::from_utf8_lossy(a));
                rules.push(' ');
            }
        }
        rules.pop();
        rules
    }

    /// Keys, channels and commands, as `ACL LIST` shows a selector.
    fn describe(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let keys = self.describe_keys();
        if !keys.is_empty() {
            out.extend_from_slice(&keys);
            out.push(b' ');
        }
        if self.allchannels {
            out.extend_from_slice(b"&* ");
        } else {
            out.extend_from_slice(b"resetchannels ");
            for c in &self.channels {
                out.push(b'&');
                out.extend_from_slice(c);
                out.push(b' ');
            }
        }
        out.extend_from_slice(self.describe_commands().as_bytes());
        out
    }

    fn describe_keys(&self) -> Vec<u8> {
        if self.allkeys {
            return b"~*".to_vec();
        }
        let mut out = Vec::new();
        for (i, k) in self.keys.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            k.describe(&mut out);
        }
        out
    }

    fn describe_channels(&self) -> Vec<u8> {
        if self.allchannels {
            return b"&*".to_vec();
        }
        let mut out = Vec::new();
        for (i, c) in self.channels.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            out.push(b'&');
            out.extend_from_slice(c);
        }
        out
    }

    /// Applies one command, key or channel rule.
    fn apply(&mut self, op: &[u8]) -> Result<(), SetError> {
        if op.eq_ignore_ascii_case(b"allkeys") || op == b"~*" {
            self.allkeys = true;
            self.keys.clear();
        } else if op.eq_ignore_ascii_case(b"resetkeys") {
            self.allkeys = false;
            self.keys.clear();
        } else if op.eq_ignore_ascii_case(b"allchannels") || op == b"&*" {
            self.allchannels = true;
            self.channels.clear();
        } else if op.eq_ignore_ascii_case(b"resetchannels") {
            self.allchannels = false;
            self.channels.clear();
        } else if op.eq_ignore_ascii_case(b"allcommands") || op.eq_ignore_ascii_case(b"+@all") {
            self.set_all(true);
        } else if op.eq_ignore_ascii_case(b"nocommands") || op.eq_ignore_ascii_case(b"-@all") {
            self.set_all(false);
        } else if op[0] == b'~' || op[0] == b'%' {
            if self.allkeys {
                return Err(SetError::KeysAfterAll);
            }
            let (read, write, pattern) = if op[0] == b'~' {
                (true, true, &op[1..])
            } else {
                let tilde = op.iter().position(|&b| b == b'~').ok_or(SetError::Syntax)?;
                let (mut read, mut write) = (false, false);
                for &b in &op[1..tilde] {
                    match b.to_ascii_uppercase() {
                        b'R' if !read => read = true,
                        b'W' if !write => write = true,
                        _ => return Err(SetError::Syntax),
                    }
                }
                if !read && !write {
                    return Err(SetError::Syntax);
                }
                (read, write, &op[tilde + 1..])
            };
            match self.keys.iter_mut().find(|k| k.pattern == pattern) {
                Some(k) => {
                    k.read |= read;
                    k.write |= write;
                }
                None => self.keys.push(KeyPattern {
                    read,
                    write,
                    pattern: pattern.to_vec(),
                }),
            }
        } else if op[0] == b'&' {
            if !self.allchannels && !self.channels.iter().any(|c| c[..] == op[1..]) {
                self.channels.push(op[1..].to_vec());
            }
        } else if op[0] == b'+' && op.get(1) == Some(&b'@')
            || op[0] == b'-' && op.get(1) == Some(&b'@')
        {
            let name = std::str::from_utf8(&op[2..]).map_err(|_| SetError::Unknown)?;
            let cat = category_index(name).ok_or(SetError::Unknown)?;
            self.set_category(cat, op[0] == b'+');
        } else if op[0] == b'+' || op[0] == b'-' {
            let allow = op[0] == b'+';
            let name = &op[1..];
            if let Some(id) = lookup_full(name) {
                self.change_perm(id, allow);
                return Ok(());
            }
            // `+cmd|arg` for a command without subcommands allows that first argument.
            let bar = name
                .iter()
                .position(|&b| b == b'|')
                .ok_or(SetError::Unknown)?;
            let base = crate::table::lookup(&name[..bar]).ok_or(SetError::Unknown)?;
            if !allow || !base.subcommands.is_empty() {
                return Err(SetError::Unknown);
            }
            let arg = &name[bar + 1..];
            if arg.is_empty() || arg.contains(&b'|') {
                return Err(SetError::Syntax);
            }
            let id = spec_id(base);
            if !self.bit(id) {
                let list = self.firstargs.entry(id).or_default();
                let arg = arg.to_ascii_lowercase();
                if !list.contains(&arg) {
                    if list.len() >= FIRSTARGS_PER_COMMAND_MAX {
                        return Err(SetError::Syntax);
                    }
                    list.push(arg);
                }
            }
        } else {
            return Err(SetError::Syntax);
        }
        Ok(())
    }

    /// Redis's `ACLSelectorCheckCmd`.
    fn check(&self, spec: &'static Spec, args: &Args<'_>) -> Result<(), Denied> {
        if !spec.has(flag::NO_AUTH) {
            let id = spec_id(spec);
            if !self.bit(id) {
                let ok = args.len() >= 2
                    && self
                        .firstargs
                        .get(&id)
                        .is_some_and(|l| l.iter().any(|a| a.eq_ignore_ascii_case(args.get(1))));
                if !ok {
                    return Err(Denied::Command);
                }
            }
        }
        if !self.allkeys
            && keyspec::has_keys(spec)
            && let Ok(keys) = keyspec::keys(spec, args)
        {
            for k in keys.iter() {
                let need_read = k.flags & key::ACCESS != 0;
                let need_write = k.flags & (key::INSERT | key::DELETE | key::UPDATE) != 0;
                let name = args.get(k.pos);
                let ok = self.keys.iter().any(|p| {
                    (p.read || !need_read)
                        && (p.write || !need_write)
                        && crate::glob::glob_match(&p.pattern, name, false)
                });
                if !ok {
                    return Err(Denied::Key(k.pos));
                }
            }
        }
        if !self.allchannels && spec.has(flag::CHANNELS_FIRST | flag::CHANNELS_ALL) {
            let last = if spec.has(flag::CHANNELS_FIRST) {
                2.min(args.len())
            } else {
                args.len()
            };
            let pattern = spec.has(flag::CHANNEL_PATTERNS);
            for pos in 1..last {
                let ch = args.get(pos);
                let ok = self.channels.iter().any(|p| {
                    if pattern {
                        p[..] == *ch
                    } else {
                        crate::glob::glob_match(p, ch, false)
                    }
                });
                if !ok {
                    return Err(Denied::Channel(pos));
                }
            }
        }
        Ok(())
    }
}

/// A command or subcommand by its full name (`get`, `config|get`).
fn lookup_full(name: &[u8]) -> Option<usize> {
    let mut parts = name.splitn(2, |&b| b == b'|');
    let base = crate::table::lookup(parts.next()?)?;
    match parts.next() {
        None => Some(spec_id(base)),
        Some(sub) => base.find_sub(sub).map(spec_id),
    }
}

/// Why a command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    Command,
    /// The argument at this position is a key the user may not touch.
    Key(usize),
    Channel(usize),
}

impl Denied {
    /// Which refusal is reported when no selector allows a command (Redis's error codes, then
    /// the argument's position).
    fn rank(self) -> (u8, usize) {
        match self {
            Denied::Command => (1, 0),
            Denied::Key(p) => (2, p),
            Denied::Channel(p) => (4, p),
        }
    }
}

/// A refused `ACL SETUSER` rule, as Redis's errno values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetError {
    Unknown,
    Syntax,
    KeysAfterAll,
    NoSuchPassword,
    BadHash,
}

impl SetError {
    pub fn message(self) -> &'static str {
        match self {
            SetError::Unknown => "Unknown command or category name in ACL",
            SetError::Syntax => "Syntax error",
            SetError::KeysAfterAll => {
                "Adding a pattern after the * pattern (or the 'allkeys' flag) is not valid and does not have any effect. Try 'resetkeys' to start with an empty list of patterns"
            }
            SetError::NoSuchPassword => {
                "The password you are trying to remove from the user does not exist"
            }
            SetError::BadHash => {
                "The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters"
            }
        }
    }
}

/// One user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub enabled: bool,
    nopass: bool,
    /// `sanitize-payload` (true), `skip-sanitize-payload` (false), or neither.
    sanitize: Option<bool>,
    /// SHA-256 hex digests, in the order they were added.
    passwords: Vec<String>,
    root: Selector,
    /// `(...)` selectors: a command runs if the root selector or one of these allows it.
    selectors: Vec<Selector>,
    /// `acl-pubsub-default` is `allchannels`: `reset` and new selectors allow every channel.
    /// Set from the parameter's current value before each change (as Redis reads it).
    all_channels_default: bool,
}

impl User {
    /// A user as `ACL SETUSER` creates it: off, no password, no commands, keys or channels.
    pub fn new(name: &str) -> Self {
        User {
            name: name.to_string(),
            enabled: false,
            nopass: false,
            sanitize: None,
            passwords: Vec::new(),
            root: Selector::default(),
            selectors: Vec::new(),
            all_channels_default: false,
        }
    }

    /// A user as `ACL SETUSER` or an ACL file line creates it under `acl-pubsub-default`.
    pub fn created(name: &str, all_channels_default: bool) -> Self {
        let mut u = User::new(name);
        u.all_channels_default = all_channels_default;
        u.root.allchannels = all_channels_default;
        u
    }

    /// The `default` user as a node starts with it: `on nopass ~* &* +@all`.
    pub fn default_user() -> Self {
        let mut u = User::new("default");
        for op in ["on", "nopass", "~*", "&*", "+@all"] {
            u.apply(op.as_bytes()).expect("valid default rule");
        }
        u
    }

    /// Applies one `ACL SETUSER` rule.
    pub fn apply(&mut self, op: &[u8]) -> Result<(), SetError> {
        if op.is_empty() {
            return Ok(());
        }
        let word = |w: &str| op.eq_ignore_ascii_case(w.as_bytes());
        if word("on") {
            self.enabled = true;
        } else if word("off") {
            self.enabled = false;
        } else if word("skip-sanitize-payload") {
            self.sanitize = Some(false);
        } else if word("sanitize-payload") {
            self.sanitize = Some(true);
        } else if word("nopass") {
            self.nopass = true;
            self.passwords.clear();
        } else if word("resetpass") {
            self.nopass = false;
            self.passwords.clear();
        } else if word("clearselectors") {
            self.selectors.clear();
        } else if word("reset") {
            self.passwords.clear();
            self.nopass = false;
            self.root = Selector::default();
            self.root.allchannels = self.all_channels_default;
            self.selectors.clear();
            self.enabled = false;
            self.sanitize = Some(true);
        } else if op[0] == b'>' || op[0] == b'#' {
            let hash = if op[0] == b'>' {
                sha256_hex(&op[1..])
            } else {
                valid_hash(&op[1..])?
            };
            if !self.passwords.contains(&hash) {
                self.passwords.push(hash);
            }
            self.nopass = false;
        } else if op[0] == b'<' || op[0] == b'!' {
            let hash = if op[0] == b'<' {
                sha256_hex(&op[1..])
            } else {
                valid_hash(&op[1..])?
            };
            let at = self
                .passwords
                .iter()
                .position(|p| *p == hash)
                .ok_or(SetError::NoSuchPassword)?;
            self.passwords.remove(at);
            self.nopass = false;
        } else if op[0] == b'(' && op.last() == Some(&b')') {
            if self.selectors.len() >= SELECTORS_MAX {
                return Err(SetError::Syntax);
            }
            let mut sel = Selector {
                allchannels: self.all_channels_default,
                ..Selector::default()
            };
            for rule in op[1..op.len() - 1]
                .split(|&b| b == b' ')
                .filter(|r| !r.is_empty())
            {
                sel.apply(rule)?;
            }
            self.selectors.push(sel);
        } else {
            return self.root.apply(op);
        }
        Ok(())
    }

    /// The user in `ACL LIST` / ACL file form.
    pub fn describe(&self) -> Vec<u8> {
        let mut out = b"user ".to_vec();
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(if self.enabled { b" on" } else { b" off" });
        if self.nopass {
            out.extend_from_slice(b" nopass");
        }
        match self.sanitize {
            Some(true) => out.extend_from_slice(b" sanitize-payload"),
            Some(false) => out.extend_from_slice(b" skip-sanitize-payload"),
            None => {}
        }
        for p in &self.passwords {
            out.extend_from_slice(b" #");
            out.extend_from_slice(p.as_bytes());
        }
        out.push(b' ');
        out.extend_from_slice(&self.root.describe());
        for sel in &self.selectors {
            out.extend_from_slice(b" (");
            out.extend_from_slice(&sel.describe());
            out.push(b')');
        }
        out
    }

    /// Whether `pass` opens this user (enabled, and nopass or a matching password).
    pub fn accepts(&self, pass: &[u8]) -> bool {
        self.enabled && (self.nopass || self.passwords.contains(&sha256_hex(pass)))
    }

    /// `nopass`: any password opens the user.
    pub fn nopass(&self) -> bool {
        self.nopass
    }

    /// Whether a client of this user must authenticate first (the default user: a password is
    /// set, or it is off).
    pub fn needs_auth(&self) -> bool {
        !self.nopass || !self.enabled
    }

    /// Redis's `ACLCheckAllUserCommandPerm`: allowed if any selector allows it; otherwise the
    /// most relevant refusal (a channel over a key over the command, then the last argument).
    pub fn check(&self, spec: &'static Spec, args: &Args<'_>) -> Result<(), Denied> {
        let mut worst = Denied::Command;
        for sel in std::iter::once(&self.root).chain(&self.selectors) {
            match sel.check(spec, args) {
                Ok(()) => return Ok(()),
                Err(d) => {
                    if d.rank() > worst.rank() {
                        worst = d;
                    }
                }
            }
        }
        Err(worst)
    }

    /// Sets the password as `CONFIG SET requirepass` does (Redis's
    /// `ACLUpdateDefaultUserPassword`): `resetpass`, then `>pass` or `nopass` when empty.
    pub fn set_requirepass(&mut self, pass: &str) {
        self.passwords.clear();
        self.nopass = false;
        if pass.is_empty() {
            self.nopass = true;
        } else {
            self.passwords.push(sha256_hex(pass.as_bytes()));
        }
    }
}

fn valid_hash(h: &[u8]) -> Result<String, SetError> {
    if h.len() != 64 || !h.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(SetError::BadHash);
    }
    Ok(String::from_utf8_lossy(h).into_owned())
}

/// A user shared by the registry and the clients authenticated as it: rule changes apply to
/// those clients at once, as in Redis.
pub type UserRef = Arc<UserCell>;

/// A user and, beside it, whether it may do everything (the check is skipped then) and a
/// generation that moves on at each change (connections keep the rules they last read until it
/// moves: [`check_client`]).
#[derive(Debug)]
pub struct UserCell {
    rules: RwLock<Arc<User>>,
    unrestricted: std::sync::atomic::AtomicBool,
    generation: std::sync::atomic::AtomicU64,
}

impl UserCell {
    fn new(u: User) -> UserRef {
        let unrestricted = u.root.unrestricted();
        Arc::new(UserCell {
            rules: RwLock::new(Arc::new(u)),
            unrestricted: unrestricted.into(),
            generation: 0.into(),
        })
    }

    /// The user's rules now.
    pub fn get(&self) -> Arc<User> {
        self.rules.read().expect("acl user lock").clone()
    }

    fn replace(&self, u: User) {
        self.unrestricted.store(u.root.unrestricted(), Relaxed);
        *self.rules.write().expect("acl user lock") = Arc::new(u);
        // After the rules: a connection that sees the new generation reads the new rules.
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// The permission check admission runs.
    pub fn check(&self, spec: &'static Spec, args: &Args<'_>) -> Result<(), Denied> {
        if self.unrestricted.load(Relaxed) {
            return Ok(());
        }
        self.get().check(spec, args)
    }
}

/// A connection's copy of its user's rules, valid while the user's generation has not moved:
/// admission then checks without touching the user's lock (shared by every connection of the
/// user, its cache line would move between worker threads on every command).
#[derive(Debug)]
pub struct AclCache {
    /// Held so the cell outlives the copy (its address cannot be reused meanwhile).
    cell: UserRef,
    generation: u64,
    user: Arc<User>,
}

/// The permission check admission runs for `client`: as [`UserCell::check`], reading the user's
/// rules from the connection's copy while they have not changed.
pub fn check_client(
    srv: &crate::ServerState,
    client: &mut crate::Client,
    spec: &'static Spec,
    args: &Args<'_>,
) -> Result<(), Denied> {
    let cell = client.user.as_ref().unwrap_or(&srv.acl.default);
    if cell.unrestricted.load(Relaxed) {
        return Ok(());
    }
    let generation = cell.generation.load(std::sync::atomic::Ordering::Acquire);
    if let Some(c) = &client.acl_cache
        && Arc::ptr_eq(&c.cell, cell)
        && c.generation == generation
    {
        return c.user.check(spec, args);
    }
    let cache = AclCache {
        cell: cell.clone(),
        generation,
        user: cell.get(),
    };
    let r = cache.user.check(spec, args);
    client.acl_cache = Some(cache);
    r
}

/// One ACL log entry.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub count: u64,
    pub reason: &'static str,
    pub context: &'static str,
    pub object: Vec<u8>,
    pub username: Vec<u8>,
    pub ctime_ms: u64,
    pub client_info: String,
}

/// The registry and the log.
#[derive(Debug)]
pub struct Acl {
    users: RwLock<BTreeMap<String, UserRef>>,
    /// The `default` user (never removed, so connections may hold it without a lookup).
    pub default: UserRef,
    log: Mutex<VecDeque<LogEntry>>,
}

impl Default for Acl {
    fn default() -> Self {
        let default = UserCell::new(User::default_user());
        let mut users = BTreeMap::new();
        users.insert("default".to_string(), default.clone());
        Acl {
            users: RwLock::new(users),
            default,
            log: Mutex::default(),
        }
    }
}

impl Acl {
    /// Replaces the default user's rules (`CONFIG SET requirepass`).
    pub fn replace_default(&self, u: User) {
        self.default.replace(u);
    }

    pub fn user(&self, name: &[u8]) -> Option<UserRef> {
        let name = std::str::from_utf8(name).ok()?;
        self.users.read().expect("acl lock").get(name).cloned()
    }

    /// The user if `pass` opens it.
    pub fn authenticate(&self, name: &[u8], pass: &[u8]) -> Option<UserRef> {
        self.user(name).filter(|u| u.get().accepts(pass))
    }

    /// `ACL SETUSER`: all rules or none.
    /// `all_channels_default`: `acl-pubsub-default` is `allchannels`.
    pub fn set_user(
        &self,
        name: &str,
        ops: &[&[u8]],
        all_channels_default: bool,
    ) -> Result<(), (usize, SetError)> {
        let mut users = self.users.write().expect("acl lock");
        let mut u = match users.get(name) {
            Some(cell) => User::clone(&cell.get()),
            None => User::created(name, all_channels_default),
        };
        u.all_channels_default = all_channels_default;
        for (i, op) in ops.iter().enumerate() {
            u.apply(op).map_err(|e| (i, e))?;
        }
        match users.get(name) {
            Some(cell) => cell.replace(u),
            None => {
                users.insert(name.to_string(), UserCell::new(u));
            }
        }
        Ok(())
    }

    /// Removes users; returns how many existed.
    pub fn delete(&self, names: &[String]) -> usize {
        let mut users = self.users.write().expect("acl lock");
        names.iter().filter(|n| users.remove(*n).is_some()).count()
    }

    pub fn names(&self) -> Vec<String> {
        self.users
            .read()
            .expect("acl lock")
            .keys()
            .cloned()
            .collect()
    }

    /// `ACL LIST` lines (also the ACL file's).
    pub fn list(&self) -> Vec<Vec<u8>> {
        let users = self.users.read().expect("acl lock");
        users.values().map(|u| u.get().describe()).collect()
    }

    /// `ACL LOAD`: parses the whole file first; nothing changes if a line is bad. Returns the
    /// names of users that are gone (their clients are disconnected).
    /// `all_channels_default`: `acl-pubsub-default` is `allchannels`.
    pub fn load(
        &self,
        file: &str,
        text: &str,
        all_channels_default: bool,
    ) -> Result<Vec<String>, String> {
        let mut parsed: BTreeMap<String, User> = BTreeMap::new();
        let mut errors = String::new();
        for (n, line) in text.split('\n').enumerate() {
            let line_no = n + 1;
            let line = line.trim_matches(|c| c == ' ' || c == '\t' || c == '\r');
            if line.is_empty() {
                continue;
            }
            let words: Vec<&str> = line.split_ascii_whitespace().collect();
            if words.len() < 2 || words[0] != "user" {
                errors.push_str(&format!(
                    "{file}:{line_no} should start with user keyword followed by the username. "
                ));
                continue;
            }
            let name = words[1];
            if parsed.contains_key(name) {
                errors.push_str(&format!(
                    "WARNING: Duplicate user '{name}' found on line {line_no}. "
                ));
                continue;
            }
            let mut u = User::created(name, all_channels_default);
            let mut ok = true;
            let raw: Vec<&[u8]> = words[2..].iter().map(|w| w.as_bytes()).collect();
            let Ok(merged) = merge_selectors(&raw) else {
                errors.push_str(&format!(
                    "{file}:{line_no}: Unmatched parenthesis in acl selector. "
                ));
                continue;
            };
            for w in &merged {
                if let Err(e) = u.apply(w) {
                    errors.push_str(&format!("{file}:{line_no}: {}. ", e.message()));
                    ok = false;
                    break;
                }
            }
            if ok {
                parsed.insert(name.to_string(), u);
            }
        }
        if !errors.is_empty() {
            errors.push_str(
                "WARNING: ACL errors detected, no change to the previously active ACL rules was performed",
            );
            return Err(errors);
        }
        parsed
            .entry("default".to_string())
            .or_insert_with(User::default_user);
        let mut users = self.users.write().expect("acl lock");
        let gone: Vec<String> = users
            .keys()
            .filter(|n| !parsed.contains_key(*n))
            .cloned()
            .collect();
        for n in &gone {
            users.remove(n);
        }
        for (name, u) in parsed {
            match users.get(&name) {
                Some(cell) => cell.replace(u),
                None => {
                    users.insert(name, UserCell::new(u));
                }
            }
        }
        Ok(gone)
    }

    /// Adds an entry, or counts it in a matching recent one, and keeps at most `max_len`.
    pub fn log(&self, e: LogEntry, max_len: usize) {
        let mut log = self.log.lock().expect("acl log lock");
        let same = log.iter().position(|o| {
            o.reason == e.reason
                && o.context == e.context
                && o.object == e.object
                && o.username == e.username
                && e.ctime_ms.saturating_sub(o.ctime_ms) < LOG_GROUPING_MS
        });
        match same {
            Some(i) => {
                let mut o = log.remove(i).expect("index in range");
                o.count += 1;
                o.ctime_ms = e.ctime_ms;
                o.client_info = e.client_info;
                log.push_front(o);
            }
            None => log.push_front(e),
        }
        log.truncate(max_len);
    }

    pub fn log_entries(&self, n: usize) -> Vec<LogEntry> {
        let log = self.log.lock().expect("acl log lock");
        log.iter().take(n).cloned().collect()
    }

    pub fn log_reset(&self) {
        self.log.lock().expect("acl log lock").clear();
    }
}

/// Records a refusal or a failed AUTH in the ACL log.
pub fn log_denial(
    ctx_srv: &crate::ServerState,
    client: &crate::Client,
    reason: &'static str,
    object: Vec<u8>,
    username: Vec<u8>,
    in_multi: bool,
    now_ms: u64,
) {
    let context = if in_multi { "multi" } else { "toplevel" };
    log_denial_in(ctx_srv, client, reason, object, username, context, now_ms);
}

/// [`log_denial`] with the context named (`toplevel`, `multi`, `lua`).
fn log_denial_in(
    ctx_srv: &crate::ServerState,
    client: &crate::Client,
    reason: &'static str,
    object: Vec<u8>,
    username: Vec<u8>,
    context: &'static str,
    now_ms: u64,
) {
    let max = ctx_srv.config().acllog_max_len as usize;
    let client_info = crate::connection::client_line(&client.handle, now_ms, 0);
    ctx_srv.acl.log(
        LogEntry {
            count: 1,
            reason,
            context,
            object,
            username,
            ctime_ms: now_ms,
            client_info,
        },
        max,
    );
}

/// The reply and log entry for a refused command (admission and EXEC).
pub fn denied(
    srv: &crate::ServerState,
    client: &crate::Client,
    spec: &'static Spec,
    args: &Args<'_>,
    d: Denied,
    in_multi: bool,
    now_ms: u64,
) -> ReplyError {
    let user = client.user_ref(srv).get().name.clone().into_bytes();
    let (reason, object, msg) = match d {
        Denied::Command => (
            "command",
            spec.name.as_bytes().to_vec(),
            format!(
                "this user has no permissions to run the '{}' command",
                spec.name
            ),
        ),
        Denied::Key(p) => (
            "key",
            args.get(p).to_vec(),
            "this user has no permissions to access one of the keys used as arguments".into(),
        ),
        Denied::Channel(p) => (
            "channel",
            args.get(p).to_vec(),
            "this user has no permissions to access one of the channels used as arguments".into(),
        ),
    };
    log_denial(srv, client, reason, object, user, in_multi, now_ms);
    ReplyError::NoPerm(msg.into())
}

/// A script's command its user may not run (`redis.call`): the ACL log entry (context `lua`)
/// and the line the script's error carries, in Redis's words.
pub fn denied_in_script(
    srv: &crate::ServerState,
    client: &crate::Client,
    spec: &'static Spec,
    args: &Args<'_>,
    d: Denied,
    now_ms: u64,
) -> String {
    let user = client.user_ref(srv).get().name.clone().into_bytes();
    let (reason, object, what) = match d {
        Denied::Command => (
            "command",
            spec.name.as_bytes().to_vec(),
            "can't run this command or subcommand",
        ),
        Denied::Key(p) => (
            "key",
            args.get(p).to_vec(),
            "can't access at least one of the keys mentioned in the command arguments",
        ),
        Denied::Channel(p) => (
            "channel",
            args.get(p).to_vec(),
            "can't publish to the channel mentioned in the command",
        ),
    };
    log_denial_in(srv, client, reason, object, user, "lua", now_ms);
    format!("ERR The user executing the script {what}")
}

/// SHA-256 of `data` as 64 lowercase hex characters (FIPS 180-4).
pub fn sha256_hex(data: &[u8]) -> String {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for i in 0..16 {
            w[i] = u32::from_be_bytes([
                block[4 * i],
                block[4 * i + 1],
                block[4 * i + 2],
                block[4 * i + 3],
            ]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, v) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(v);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// The ACL command family.

use flag::{ADMIN, LOADING, NOSCRIPT, STALE};

const SRV: Group = Group::Server;

pub static COMMANDS: &[Spec] = &[Spec {
    name: "acl",
    arity: -2,
    group: SRV,
    since: "6.0.0",
    summary: "A container for Access List Control commands.",
    subcommands: ACL,
    ..Spec::DEFAULT
}];

const ADM: u32 = ADMIN | NOSCRIPT | LOADING | STALE;

static ACL: &[Spec] = &[
    Spec {
        name: "acl|cat",
        arity: -2,
        flags: NOSCRIPT | LOADING | STALE,
        group: SRV,
        since: "6.0.0",
        summary: "List the ACL categories or the commands inside a category",
        handler: Some(acl_cat),
        ..Spec::DEFAULT
    },
    Spec {
        name: "acl|deluser",
        arity: -3,
        flags: ADM,
        group: SRV,
        since: "6.0.0",
        summary: "Remove the specified ACL users and the associated rules",
        handler: Some(acl_deluser),
        ..Spec::DEFAULT
    },
    Spec {
        name: "acl|dryrun",
        arity: -4,
        flags: ADM,
        group: SRV,
        since: "7.0.0",
        summary: "Returns whether the user can execute the given command without executing the command.",
        handler: Some(acl_dryrun),
        ..Spec::DEFAULT
    },
    Spec {
        name: "acl|genpass",
        arity: -2,
        flags: NOSCRIPT | LOADING | STALE,
        group: SRV,
        since: "6.0.0",
        summary: "Generate a pseudorandom secure password to use for ACL users",
        handler: Some(acl_genpass),
        ..Spec::DEFAULT
    },
    Spec {
        name: "acl|getuser",
        arity: 3,
        flags: ADM,
        group: SRV,
        since: "6.0.0",
        summary: "Get the rules for a specific ACL user",
        handler: Some(acl_getuser),
        ..Spec::DEFAULT
    },
    Spec {
        name: "acl|help",
        arity: 2,
        flags: LOADING | STALE,
        group: SRV,
        since: "6.0.0",
        summary: "Show helpful text about the different subcommands",
        handler: Some(acl_help),
        ..Spec::DEFAULT
    },
    Spec {
        name: "acl|list",
        arity: 2,
        flags: ADM,
        group: SRV,
        since: "6.0.0",
        summary: "List the current ACL rules in ACL config file format",
        handler: Some(acl_list),
        ..Spec::DEFAULT
    },
    Spec {
        name: "acl|load",
        arity: 2,
        flags: ADM,
        group: SRV,
        since: "6.0.0",
        summary: "Reload the ACLs from the configured ACL file",
        handler: Some(acl_load),
        ..Spec::DEFAULT
    },
    Spec {
        name: "acl|log",
        arity: -2,
        flags: ADM,
        group: SRV,
        since: "6.0.0",
        summary: "List latest events denied because of ACLs in place",
        handler: Some(acl_log),
        ..Spec::DEFAULT
    },
    Spec {
        name: "acl|save",
        arity: 2,
        flags: ADM,
        group: SRV,
        since: "6.0.0",
        summary: "Save the current ACL rules in the configured ACL file",
        handler: Some(acl_save),
        ..Spec::DEFAULT
    },
    Spec {
        name: "acl|setuser",
        arity: -3,
        flags: ADM,
        group: SRV,
        since: "6.0.0",
        summary: "Modify or create the rules for a specific ACL user",
        handler: Some(acl_setuser),
        ..Spec::DEFAULT
    },
    Spec {
        name: "acl|users",
        arity: 2,
        flags: ADM,
        group: SRV,
        since: "6.0.0",
        summary: "List the username of all the configured ACL rules",
        handler: Some(acl_users),
        ..Spec::DEFAULT
    },
    Spec {
        name: "acl|whoami",
        arity: 2,
        flags: NOSCRIPT | LOADING | STALE,
        group: SRV,
        since: "6.0.0",
        summary: "Return the name of the user associated to the current connection",
        handler: Some(acl_whoami),
        ..Spec::DEFAULT
    },
];

fn acl_cat(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    if args.len() == 2 {
        ctx.out.array(CATEGORIES.len());
        for c in CATEGORIES {
            ctx.out.bulk(c.as_bytes());
        }
        return Ok(());
    }
    if args.len() > 3 {
        return Err(crate::args::ERR_SYNTAX);
    }
    let cat = std::str::from_utf8(args.get(2))
        .ok()
        .and_then(category_index)
        .ok_or_else(|| err!("Unknown category '{}'", args.str_lossy(2)))?;
    let t = table();
    let names: Vec<&str> = (0..t.specs.len())
        .filter(|&id| t.cats[id] & (1 << cat) != 0)
        .map(|id| t.specs[id].name)
        .collect();
    ctx.out.array(names.len());
    for n in names {
        ctx.out.bulk(n.as_bytes());
    }
    Ok(())
}

fn acl_setuser(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let name = args.str_lossy(2);
    let raw: Vec<&[u8]> = (3..args.len()).map(|i| args.get(i)).collect();
    let merged = merge_selectors(&raw).map_err(|start| {
        err!(
            "Unmatched parenthesis in acl selector starting at '{}'.",
            String::from_utf8_lossy(start)
        )
    })?;
    let ops: Vec<&[u8]> = merged.iter().map(|o| o.as_slice()).collect();
    let all = all_channels_default(ctx.srv);
    ctx.srv.acl.set_user(&name, &ops, all).map_err(|(i, e)| {
        err!(
            "Error in ACL SETUSER modifier '{}': {}",
            String::from_utf8_lossy(ops[i]),
            e.message()
        )
    })?;
    default_changed(ctx.srv);
    ctx.out.ok();
    Ok(())
}

/// Redis's `ACLMergeSelectorArguments`: the words from one starting with `(` to one ending with
/// `)` become one rule, joined by spaces. An unclosed `(` is refused with the word it starts at.
fn merge_selectors<'a>(ops: &[&'a [u8]]) -> Result<Vec<Vec<u8>>, &'a [u8]> {
    let mut out = Vec::new();
    let mut open: Option<(Vec<u8>, &[u8])> = None;
    for op in ops {
        match &mut open {
            Some((acc, _)) => {
                acc.push(b' ');
                acc.extend_from_slice(op);
                if op.last() == Some(&b')') {
                    out.push(std::mem::take(acc));
                    open = None;
                }
            }
            None if op.first() == Some(&b'(') && op.last() != Some(&b')') => {
                open = Some((op.to_vec(), op));
            }
            None => out.push(op.to_vec()),
        }
    }
    match open {
        Some((_, start)) => Err(start),
        None => Ok(out),
    }
}

/// Mirrors the default user's state into the hot flag admission reads.
pub fn default_changed(srv: &crate::ServerState) {
    srv.hot
        .requirepass_set
        .store(srv.acl.default.get().needs_auth(), Relaxed);
}

fn acl_deluser(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let names: Vec<String> = (2..args.len()).map(|i| args.str_lossy(i)).collect();
    if names.iter().any(|n| n == "default") {
        return Err(ReplyError::err_static(
            "The 'default' user cannot be removed",
        ));
    }
    let n = ctx.srv.acl.delete(&names);
    kill_clients_of(ctx.srv, &names);
    ctx.out.int(n as i64);
    Ok(())
}

/// Disconnects the clients authenticated as one of `names` (deleted users).
fn kill_clients_of(srv: &crate::ServerState, names: &[String]) {
    for h in srv.client_handles() {
        let user = h.user.lock().expect("user lock").clone();
        if names.contains(&user) {
            h.kill();
        }
    }
}

fn acl_getuser(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let Some(cell) = ctx.srv.acl.user(args.get(2)) else {
        ctx.out.null();
        return Ok(());
    };
    let u = cell.get();
    let o = &mut ctx.out;
    o.map(6);
    o.bulk(b"flags");
    let mut flags: Vec<&str> = vec![if u.enabled { "on" } else { "off" }];
    if u.nopass {
        flags.push("nopass");
    }
    match u.sanitize {
        Some(true) => flags.push("sanitize-payload"),
        Some(false) => flags.push("skip-sanitize-payload"),
        None => {}
    }
    o.set(flags.len());
    for f in flags {
        o.bulk(f.as_bytes());
    }
    o.bulk(b"passwords");
    o.array(u.passwords.len());
    for p in &u.passwords {
        o.bulk(p.as_bytes());
    }
    o.bulk(b"commands");
    o.bulk(u.root.describe_commands().as_bytes());
    o.bulk(b"keys");
    o.bulk(&u.root.describe_keys());
    o.bulk(b"channels");
    o.bulk(&u.root.describe_channels());
    o.bulk(b"selectors");
    o.array(u.selectors.len());
    for sel in &u.selectors {
        o.map(3);
        o.bulk(b"commands");
        o.bulk(sel.describe_commands().as_bytes());
        o.bulk(b"keys");
        o.bulk(&sel.describe_keys());
        o.bulk(b"channels");
        o.bulk(&sel.describe_channels());
    }
    Ok(())
}

fn acl_users(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let names = ctx.srv.acl.names();
    ctx.out.array(names.len());
    for n in names {
        ctx.out.bulk(n.as_bytes());
    }
    Ok(())
}

fn acl_list(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let lines = ctx.srv.acl.list();
    ctx.out.array(lines.len());
    for l in lines {
        ctx.out.bulk(&l);
    }
    Ok(())
}

fn acl_whoami(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let name = ctx.client.user_ref(ctx.srv).get().name.clone();
    ctx.out.bulk(name.as_bytes());
    Ok(())
}

fn acl_genpass(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let bits = if args.len() == 3 {
        let b = args.i64(2)?;
        if b <= 0 || b > GENPASS_BITS_MAX {
            return Err(ReplyError::err_static(
                "ACL GENPASS argument must be the number of bits for the output password, a positive number up to 4096",
            ));
        }
        b as usize
    } else if args.len() == 2 {
        256
    } else {
        return Err(crate::args::ERR_SYNTAX);
    };
    let chars = bits.div_ceil(4);
    let mut bytes = vec![0u8; chars.div_ceil(2)];
    (ctx.srv.hooks.random_bytes)(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    ctx.out.bulk(&hex.as_bytes()[..chars]);
    Ok(())
}

fn acl_dryrun(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let Some(user) = ctx.srv.acl.user(args.get(2)) else {
        return Err(err!("User '{}' not found", args.str_lossy(2)));
    };
    let cmd = args.tail(3);
    let not_found = || err!("Command '{}' not found", args.str_lossy(3));
    let mut spec = crate::table::lookup(cmd.get(0)).ok_or_else(not_found)?;
    if !spec.subcommands.is_empty() && cmd.len() >= 2 {
        spec = spec.find_sub(cmd.get(1)).ok_or_else(not_found)?;
    }
    if !spec.arity_ok(cmd.len()) {
        return Err(err!(
            "wrong number of arguments for '{}' command",
            spec.name
        ));
    }
    match user.get().check(spec, &cmd) {
        Ok(()) => ctx.out.ok(),
        Err(Denied::Command) => ctx.out.bulk(
            format!(
                "This user has no permissions to run the '{}' command",
                spec.name
            )
            .as_bytes(),
        ),
        Err(Denied::Key(p)) => ctx.out.bulk(
            format!(
                "This user has no permissions to access the '{}' key",
                cmd.str_lossy(p)
            )
            .as_bytes(),
        ),
        Err(Denied::Channel(p)) => ctx.out.bulk(
            format!(
                "This user has no permissions to access the '{}' channel",
                cmd.str_lossy(p)
            )
            .as_bytes(),
        ),
    }
    Ok(())
}

fn acl_log(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let mut count = 10usize;
    if args.len() == 3 {
        if args.is(2, "RESET") {
            ctx.srv.acl.log_reset();
            ctx.out.ok();
            return Ok(());
        }
        count = args.i64(2)?.max(0) as usize;
    } else if args.len() > 3 {
        return Err(crate::args::ERR_SYNTAX);
    }
    let entries = ctx.srv.acl.log_entries(count);
    let o = &mut ctx.out;
    o.array(entries.len());
    for e in entries {
        o.map(7);
        o.bulk(b"count");
        o.int(e.count as i64);
        o.bulk(b"reason");
        o.bulk(e.reason.as_bytes());
        o.bulk(b"context");
        o.bulk(e.context.as_bytes());
        o.bulk(b"object");
        o.bulk(&e.object);
        o.bulk(b"username");
        o.bulk(&e.username);
        o.bulk(b"age-seconds");
        o.double(ctx.now_ms.saturating_sub(e.ctime_ms) as f64 / 1000.0);
        o.bulk(b"client-info");
        o.bulk(e.client_info.as_bytes());
    }
    Ok(())
}

const NO_ACLFILE: &str = "This Redis instance is not configured to use an ACL file. You may want to specify users via the ACL SETUSER command and then issue a CONFIG REWRITE (assuming you have a Redis configuration file set) in order to store users in the Redis configuration.";

fn acl_save(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let path = ctx.srv.config().aclfile.clone();
    if path.is_empty() {
        return Err(ReplyError::err_static(NO_ACLFILE));
    }
    let mut text = Vec::new();
    for l in ctx.srv.acl.list() {
        text.extend_from_slice(&l);
        text.push(b'\n');
    }
    (ctx.srv.hooks.write_file)(&path, &text).map_err(|_| {
        ReplyError::err_static("There was an error trying to save the ACLs. Please check the server logs for more information")
    })?;
    ctx.out.ok();
    Ok(())
}

fn acl_load(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let path = ctx.srv.config().aclfile.clone();
    if path.is_empty() {
        return Err(ReplyError::err_static(NO_ACLFILE));
    }
    load_file(ctx.srv, &path).map_err(|e| ReplyError::ErrBytes(e.into_bytes().into()))?;
    ctx.out.ok();
    Ok(())
}

/// `acl-pubsub-default` is `allchannels`.
fn all_channels_default(srv: &crate::ServerState) -> bool {
    srv.config().acl_pubsub_default == crate::config::PubsubDefault::AllChannels
}

/// Loads the ACL file at `path` (`ACL LOAD`, and at start-up): all of it or nothing.
pub fn load_file(srv: &crate::ServerState, path: &str) -> Result<(), String> {
    let text = (srv.hooks.read_file)(path)
        .map_err(|e| format!("Error loading ACLs, opening file '{path}': {e}"))?;
    let text = String::from_utf8_lossy(&text);
    let gone = srv.acl.load(path, &text, all_channels_default(srv))?;
    kill_clients_of(srv, &gone);
    default_changed(srv);
    Ok(())
}

fn acl_help(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    const HELP: &[&str] = &[
        "ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "CAT [<category>]",
        "    List all commands that belong to <category>, or all command categories",
        "    when no category is specified.",
        "DELUSER <username> [<username> ...]",
        "    Delete a list of users.",
        "DRYRUN <username> <command> [<arg> ...]",
        "    Returns whether the user can execute the given command without executing the command.",
        "GETUSER <username>",
        "    Get the user's details.",
        "GENPASS [<bits>]",
        "    Generate a secure 256-bit user password. The optional `bits` argument can",
        "    be used to specify a different size.",
        "LIST",
        "    Show users details in config file format.",
        "LOAD",
        "    Reload users from the ACL file.",
        "LOG [<count> | RESET]",
        "    Show the ACL log entries.",
        "SAVE",
        "    Save the current config to the ACL file.",
        "SETUSER <username> <attribute> [<attribute> ...]",
        "    Create or modify a user with the specified attributes.",
        "USERS",
        "    List all the registered usernames.",
        "WHOAMI",
        "    Return the current connection username.",
        "HELP",
        "    Prints this help.",
    ];
    ctx.out.array(HELP.len());
    for l in HELP {
        ctx.out.simple(l);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_known_digests() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"pw"),
            "30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4"
        );
        let long = vec![b'a'; 1000];
        assert_eq!(
            sha256_hex(&long),
            "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3"
        );
    }

    fn user(ops: &[&str]) -> Result<User, SetError> {
        let mut u = User::new("u");
        for op in ops {
            u.apply(op.as_bytes())?;
        }
        Ok(u)
    }

    #[test]
    fn rules_parse_and_describe_as_redis() {
        let u = user(&[
            "on", ">pw", "~foo*", "%R~bar*", "%W~w*", "&ch*", "+get", "+set",
        ])
        .unwrap();
        assert_eq!(
            String::from_utf8(u.describe()).unwrap(),
            "user u on #30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4 ~foo* %R~bar* %W~w* resetchannels &ch* -@all +get +set"
        );
        assert_eq!(
            String::from_utf8(User::default_user().describe()).unwrap(),
            "user default on nopass ~* &* +@all"
        );
        let u = user(&["+@all", "-flushall"]).unwrap();
        assert!(u.root.describe_commands().starts_with("+@all -flushall"));
        let u = user(&["~a", "%R~a", "%W~b", "~b", "%rw~c"]).unwrap();
        assert_eq!(u.root.describe_keys(), b"~a ~b ~c");
        let u = user(&["+select|0"]).unwrap();
        assert_eq!(u.root.describe_commands(), "-@all +select|0");
    }

    #[test]
    fn bad_rules_are_refused_with_redis_reasons() {
        assert_eq!(user(&["foo"]), Err(SetError::Syntax));
        assert_eq!(user(&["+nosuch"]), Err(SetError::Unknown));
        assert_eq!(user(&["+@nosuch"]), Err(SetError::Unknown));
        assert_eq!(user(&["%X~a"]), Err(SetError::Syntax));
        assert_eq!(user(&["%~a"]), Err(SetError::Syntax));
        assert_eq!(user(&["%RR~a"]), Err(SetError::Syntax));
        assert_eq!(user(&["#abc"]), Err(SetError::BadHash));
        assert_eq!(user(&["<nopw"]), Err(SetError::NoSuchPassword));
        assert_eq!(user(&["-get|x"]), Err(SetError::Unknown));
        assert_eq!(user(&["~*", "~a"]), Err(SetError::KeysAfterAll));
        assert_eq!(user(&["allkeys", "%R~a"]), Err(SetError::KeysAfterAll));
    }

    #[test]
    fn passwords_are_hashed_and_checked() {
        let u = user(&["on", ">a", ">b", "<a"]).unwrap();
        assert!(u.accepts(b"b"));
        assert!(!u.accepts(b"a"));
        let off = user(&[">b"]).unwrap();
        assert!(!off.accepts(b"b"));
        assert!(user(&["on", "nopass"]).unwrap().accepts(b"anything"));
    }

    #[test]
    fn keys_are_checked_by_what_the_command_does_to_them() {
        let u = user(&["on", "+@all", "%R~r*", "%W~w*", "~rw*"]).unwrap();
        let check = |req: &[&str]| {
            let o = crate::OwnedArgs::new(req.iter());
            let a = o.args();
            let spec = crate::table::lookup(req[0].as_bytes()).unwrap();
            u.check(spec, &a)
        };
        assert_eq!(check(&["get", "r1"]), Ok(()));
        assert_eq!(check(&["get", "w1"]), Err(Denied::Key(1)));
        assert_eq!(check(&["set", "w1", "v"]), Ok(()));
        assert_eq!(check(&["set", "r1", "v"]), Err(Denied::Key(1)));
        assert_eq!(check(&["set", "rw1", "v", "GET"]), Ok(()));
        assert_eq!(check(&["mget", "r1", "x"]), Err(Denied::Key(2)));
        assert_eq!(check(&["publish", "c", "m"]), Err(Denied::Channel(1)));
    }

    #[test]
    fn shoal_internal_commands_are_admin_and_dangerous() {
        let admin = 1 << category_index("admin").unwrap();
        let dangerous = 1 << category_index("dangerous").unwrap();
        for name in [
            "repairput",
            "repairdel",
            "slotkeys",
            "slotdigest",
            "psync",
            "sync",
            "replconf",
            "cluster|mfpause",
            "cluster|syncslots",
            "cluster|migrateslots",
            "activestate",
            "activeslot",
            "activemerge",
        ] {
            let id = lookup_full(name.as_bytes()).expect(name);
            assert_eq!(
                table().cats[id] & (admin | dangerous),
                admin | dangerous,
                "{name}"
            );
        }
        let u = user(&["on", "+@all", "-@dangerous", "~*", "&*"]).unwrap();
        let o = crate::OwnedArgs::new(["repairdel", "k"].iter());
        let spec = crate::table::lookup(b"repairdel").unwrap();
        assert_eq!(u.check(spec, &o.args()), Err(Denied::Command));
    }

    #[test]
    fn the_log_groups_repeats_and_stays_bounded() {
        let acl = Acl::default();
        let entry = |object: &str, t: u64| LogEntry {
            count: 1,
            reason: "command",
            context: "toplevel",
            object: object.as_bytes().to_vec(),
            username: b"u".to_vec(),
            ctime_ms: t,
            client_info: String::new(),
        };
        acl.log(entry("get", 0), 2);
        acl.log(entry("get", 1_000), 2);
        assert_eq!(acl.log_entries(10)[0].count, 2);
        // Over a minute later: a new entry.
        acl.log(entry("get", 70_000), 2);
        acl.log(entry("set", 70_001), 2);
        let e = acl.log_entries(10);
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].object.as_slice(), e[1].count), (&b"set"[..], 1));
    }

    #[test]
    fn load_is_all_or_nothing() {
        let acl = Acl::default();
        acl.set_user("keep", &[b"on"], false).unwrap();
        let err = acl
            .load("f", "user a on\nuser b +nosuch\n", false)
            .unwrap_err();
        assert_eq!(
            err,
            "f:2: Unknown command or category name in ACL. WARNING: ACL errors detected, no change to the previously active ACL rules was performed"
        );
        assert_eq!(acl.names(), ["default", "keep"]);
        let gone = acl.load("f", "user a on nopass\n", false).unwrap();
        assert_eq!(gone, ["keep"]);
        assert_eq!(acl.names(), ["a", "default"]);
    }

    #[test]
    fn selectors_allow_what_the_root_does_not_and_report_the_most_relevant_refusal() {
        let u = user(&["on", "(~sel* +get)", "(%R~r* +@hash)"]).unwrap();
        let check = |req: &[&str]| {
            let o = crate::OwnedArgs::new(req.iter());
            let spec = crate::table::lookup(req[0].as_bytes()).unwrap();
            u.check(spec, &o.args())
        };
        assert_eq!(check(&["get", "sel1"]), Ok(()));
        assert_eq!(check(&["hget", "r1", "f"]), Ok(()));
        assert_eq!(check(&["get", "x"]), Err(Denied::Key(1)));
        assert_eq!(check(&["set", "sel1", "v"]), Err(Denied::Command));
        assert_eq!(
            merge_selectors(&[b"(", b"~a", b"+get", b")", b"on"]).unwrap(),
            [b"( ~a +get )".to_vec(), b"on".to_vec()]
        );
        assert_eq!(merge_selectors(&[b"(~a", b"+get"]), Err(&b"(~a"[..]));
        assert!(String::from_utf8(u.describe()).unwrap().ends_with(
            "-@all (~sel* resetchannels -@all +get) (%R~r* resetchannels -@all +@hash)"
        ));
    }

    /// A queued command is checked again at EXEC (the rules may have changed meanwhile), and the
    /// refusal is logged with the context `multi`.
    #[test]
    fn exec_checks_permissions_again() {
        use crate::{Client, ClientHandle, Hooks, OwnedArgs, ServerState, config, execute};
        let srv = ServerState::new(config::Config::default(), 1_000, 7, Hooks::default());
        let client = |id| {
            let h = Arc::new(ClientHandle::new(
                id,
                "127.0.0.1:1".into(),
                "127.0.0.1:2".into(),
                0,
            ));
            Client::new(h, true)
        };
        let (mut admin, mut app) = (client(1), client(2));
        let run = |c: &mut Client, cmd: &[&str]| {
            let o = OwnedArgs::new(cmd.iter());
            let mut out = Vec::new();
            execute(&srv, c, &o.args(), &mut out, 1_000);
            String::from_utf8(out).unwrap()
        };
        let setuser = [
            "acl", "setuser", "app", "on", "nopass", "~*", "+get", "+multi", "+exec",
        ];
        assert_eq!(run(&mut admin, &setuser), "+OK\r\n");
        assert_eq!(run(&mut app, &["auth", "app", "x"]), "+OK\r\n");
        assert_eq!(run(&mut app, &["multi"]), "+OK\r\n");
        assert_eq!(run(&mut app, &["get", "k"]), "+QUEUED\r\n");
        assert_eq!(
            run(&mut admin, &["acl", "setuser", "app", "-get"]),
            "+OK\r\n"
        );
        assert_eq!(
            run(&mut app, &["exec"]),
            "*1\r\n-NOPERM this user has no permissions to run the 'get' command\r\n"
        );
        let log = srv.acl.log_entries(1);
        assert_eq!((log[0].context, log[0].reason), ("multi", "command"));
        assert_eq!(log[0].username, b"app");
    }
}
