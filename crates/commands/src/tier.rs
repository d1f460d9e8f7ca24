//! Requests that touch values on the disk tier (`tiered-storage`). Before a command runs, its keys
//! (for EXEC, every queued command's) are looked up; if one holds a cold value the command needs,
//! nothing runs and the request ends with [`crate::Outcome::Fetch`]: the connection loads those
//! values without holding any shard lock, puts them back (`Shard::promote`) and runs the request
//! again. So command code never meets a cold value.
//!
//! What needs no fetch: commands that only look at a key's metadata (TYPE, TTL, EXISTS, OBJECT
//! ENCODING, ...), and keys a command overwrites or removes without reading them (SET without
//! GET, DEL, UNLINK, a STORE destination: key-spec flags `OW`/`RM` without `RW`/`ACCESS`).

use shoal_keyspace::{TierInfo, key_slot};

use crate::args::Args;
use crate::keyspec::key;
use crate::state::{Client, ServerState};
use crate::table::{Spec, flag};

/// Cold keys one fetch round loads at most.
pub const FETCH_KEYS_PER_ROUND_MAX: usize = 256;
/// Fetch rounds one request may take before it is answered with an error (a request naming more
/// than `FETCH_KEYS_PER_ROUND_MAX × FETCH_ROUNDS_MAX` cold keys, or whose values keep being moved
/// out again by other clients' writes).
pub const FETCH_ROUNDS_MAX: usize = 64;

/// The error a request gets when its fetch rounds run out.
pub const FETCH_ROUNDS_ERROR: &str =
    "request reads more values from the disk tier than one request may (tiered fetch limit)";

/// Keys whose values must be loaded from the disk tier before a request runs.
#[derive(Debug, Default)]
pub struct FetchRequest {
    /// `(database, key)`, at most [`FETCH_KEYS_PER_ROUND_MAX`].
    pub keys: Vec<(usize, Vec<u8>)>,
}

/// Commands that read only a key's metadata, never its value.
const METADATA_ONLY: &[&str] = &[
    "type",
    "ttl",
    "pttl",
    "expiretime",
    "pexpiretime",
    "exists",
    "touch",
    "object|encoding",
    "object|freq",
    "object|idletime",
    "object|refcount",
];

/// Whether a key with these key-spec flags, of this command, needs its value.
fn needs_value(spec: &Spec, flags: u32) -> bool {
    if flags & (key::RW | key::ACCESS) == 0 && flags & (key::OW | key::RM) != 0 {
        return false;
    }
    // Redis marks some of these `ACCESS` (TTL), but none reads the value.
    !METADATA_ONLY.contains(&spec.name)
}

/// The cold keys the request needs, if any (`None` when the tier was never on: one atomic load).
pub fn cold_keys(
    srv: &ServerState,
    client: &Client,
    spec: &'static Spec,
    args: &Args<'_>,
) -> Option<FetchRequest> {
    if !srv.ks.tiered() {
        return None;
    }
    let mut req = FetchRequest::default();
    let look = |req: &mut FetchRequest, db: usize, spec: &'static Spec, args: &Args<'_>| {
        let Ok(refs) = crate::keyspec::keys(spec, args) else {
            return;
        };
        let before = req.keys.len();
        for k in refs.iter() {
            if req.keys.len() >= FETCH_KEYS_PER_ROUND_MAX || !needs_value(spec, k.flags) {
                continue;
            }
            let name = args.get(k.pos);
            let slot = key_slot(name);
            let cold = srv
                .ks
                .lock(srv.ks.shard_of(slot))
                .cold_handle(db, slot, name)
                .is_some();
            if cold && !req.keys.iter().any(|(d, k)| *d == db && k == name) {
                req.keys.push((db, name.to_vec()));
            }
        }
        // The sorted key first; what its elements name once it is in memory.
        if matches!(spec.name, "sort" | "sort_ro") && req.keys.len() == before {
            sort_pattern_keys(srv, db, args, req);
        }
    };
    if spec.has(flag::TX_EXEC) {
        // SELECT inside the transaction moves the following commands to another database.
        let mut db = client.db;
        for (s, a) in client.tx.queued_commands() {
            if s.name == "select"
                && let Some(n) = std::str::from_utf8(a.get(1))
                    .ok()
                    .and_then(|n| n.parse::<usize>().ok())
            {
                db = n;
            }
            look(&mut req, db, s, &a);
        }
    } else {
        look(&mut req, client.db, spec, args);
    }
    (!req.keys.is_empty()).then_some(req)
}

/// SORT's BY and GET patterns name, for each element of the sorted key, other keys it reads
/// (key specs cannot say which): those that are cold are fetched too. Looked at once the sorted
/// key itself is in memory (a first round fetches it). In EXEC, the sorted key as it is before
/// the transaction (a SORT of a key an earlier queued command fills reads, as in a script, pattern
/// keys on disk as missing).
fn sort_pattern_keys(srv: &ServerState, db: usize, args: &Args<'_>, req: &mut FetchRequest) {
    let mut patterns = Vec::new();
    let mut i = 2;
    while i < args.len() {
        let a = args.get(i);
        let skip = if a.eq_ignore_ascii_case(b"by") || a.eq_ignore_ascii_case(b"get") {
            if i + 1 < args.len() {
                patterns.push(args.get(i + 1));
            }
            2
        } else if a.eq_ignore_ascii_case(b"limit") {
            3
        } else if a.eq_ignore_ascii_case(b"store") {
            2
        } else {
            1
        };
        i += skip;
    }
    if patterns.is_empty() {
        return;
    }
    let source = args.get(1);
    let slot = key_slot(source);
    let elements = {
        let shard = srv.ks.lock(srv.ks.shard_of(slot));
        match shard.peek(db, slot, source, 0) {
            Some(e) if e.cold().is_none() => crate::sort::elements_of(Some(e))
                .map(|(v, _)| v)
                .unwrap_or_default(),
            _ => return,
        }
    };
    for element in &elements {
        for pattern in &patterns {
            let crate::sort::Target::Key { key, .. } = crate::sort::target(pattern, element) else {
                continue;
            };
            if req.keys.len() >= FETCH_KEYS_PER_ROUND_MAX {
                return;
            }
            let slot = key_slot(&key);
            let cold = srv
                .ks
                .lock(srv.ks.shard_of(slot))
                .cold_handle(db, slot, &key)
                .is_some();
            if cold && !req.keys.iter().any(|(d, k)| *d == db && *k == key) {
                req.keys.push((db, key));
            }
        }
    }
}

/// Whether a command a script calls (in database `db`) needs a cold value. A script cannot wait
/// for the disk mid-run: the keys it declares are fetched before it starts, and a command on an
/// undeclared cold key fails with [`SCRIPT_COLD_ERROR`].
pub fn script_needs_fetch(
    srv: &ServerState,
    db: usize,
    spec: &'static Spec,
    args: &Args<'_>,
) -> bool {
    if !srv.ks.tiered() {
        return false;
    }
    let Ok(refs) = crate::keyspec::keys(spec, args) else {
        return false;
    };
    refs.iter().any(|k| {
        let name = args.get(k.pos);
        let slot = key_slot(name);
        needs_value(spec, k.flags)
            && srv
                .ks
                .lock(srv.ks.shard_of(slot))
                .cold_handle(db, slot, name)
                .is_some()
    })
}

/// What a script's command on an undeclared cold key gets.
pub const SCRIPT_COLD_ERROR: &str =
    "ERR this script reads a key whose value is on the disk tier: name the key in KEYS";

/// The tier's figures (`INFO tiered`, the Prometheus metrics): counters, and the keys and bytes
/// (the values' footprint on disk, page-rounded) on the tier now.
#[derive(Debug, Clone, Copy, Default)]
pub struct TierFigures {
    pub enabled: bool,
    pub info: TierInfo,
    pub keys_on_disk: u64,
    pub bytes_on_disk: u64,
}

impl TierFigures {
    /// Share of tier reads that found their value.
    pub fn hit_ratio(&self) -> f64 {
        let i = &self.info;
        if i.reads == 0 {
            0.0
        } else {
            (i.reads - i.read_misses) as f64 / i.reads as f64
        }
    }
}

/// Reads the figures (locks each shard in turn for the count of cold keys).
pub fn figures(srv: &ServerState) -> TierFigures {
    let Some(store) = srv.ks.cold_store() else {
        return TierFigures::default();
    };
    let info = store.info();
    let keys = srv.ks.cold_keys() as u64;
    TierFigures {
        enabled: true,
        info,
        keys_on_disk: keys,
        bytes_on_disk: info.live_bytes,
    }
}

/// `INFO tiered`.
pub fn info_section(srv: &ServerState, t: &mut String) {
    use std::fmt::Write;
    let f = figures(srv);
    let i = &f.info;
    t.push_str("# Tiered\r\n");
    let _ = write!(
        t,
        "tiered_enabled:{}\r\ntiered_capacity_bytes:{}\r\ntiered_bytes_on_disk:{}\r\n\
         tiered_keys_on_disk:{}\r\ntiered_writes:{}\r\ntiered_bytes_written:{}\r\n\
         tiered_reads:{}\r\ntiered_read_misses:{}\r\ntiered_promotions:{}\r\n\
         tiered_hit_ratio:{:.4}\r\ntiered_dropped_full:{}\r\ntiered_dropped_busy:{}\r\n\
         tiered_pending_bytes:{}\r\n",
        f.enabled as u8,
        i.capacity_bytes,
        f.bytes_on_disk,
        f.keys_on_disk,
        i.writes,
        i.bytes_written,
        i.reads,
        i.read_misses,
        i.promotions,
        f.hit_ratio(),
        i.dropped_full,
        i.dropped_busy,
        i.pending_bytes,
    );
}
