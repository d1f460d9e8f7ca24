//! Background repair on an active-active member (issue 13): anti-entropy and read repair, the I/O
//! side of `shoal_commands::repair`. One task per node, ticking every [`TICK_MS`], with one
//! connection per peer (made when needed, dropped on any error):
//!
//! - **Anti-entropy**, every `active-anti-entropy-interval-ms`: with each peer whose link is up,
//!   compare `active-anti-entropy-slots-per-pass` slot digests of one database (`SLOTDIGEST` there,
//!   `digest::slot_digest` here, computed off the tokio workers), continuing where the last pass
//!   stopped; for each slot that differs (up to `active-anti-entropy-keys-per-pass` keys), fetch
//!   the peer's merge states of our keys in it (`ACTIVESTATE`) and of its keys (`ACTIVESLOT`),
//!   merge them here, and merge ours there where the peer's lacks something (`ACTIVEMERGE`).
//!   Slots differ for a moment while effects are in flight; repairing those merges what the
//!   stream brings anyway, which is harmless (merging is idempotent) and bounded by the budget.
//! - **Read repair** (`read-repair yes`): every tick, up to `read-repair-keys-per-second` / 10
//!   keys of the read queue are compared with every peer whose link is up, the same way.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::Duration;

use shoal_commands::ServerState;
use shoal_commands::repair::{self, STATE_KEYS_PER_CALL};
use shoal_resp::Reply;

use crate::links::{Transport, request};
use crate::now_ms;

/// How often the task wakes (read repair's rate is spread over ticks of this length).
pub const TICK_MS: u64 = 100;
/// A request to a peer answered later than this fails (and drops the connection).
pub const REQUEST_TIMEOUT_MS: u64 = 5_000;

/// Where the next anti-entropy pass with a peer starts: a database and a slot.
#[derive(Debug, Default, Clone, Copy)]
struct Cursor {
    db: usize,
    slot: u16,
}

/// What a repair of some keys with one peer did.
#[derive(Debug, Default)]
struct Tally {
    checked: u64,
    here: u64,
    there: u64,
}

struct Peers<S> {
    conns: HashMap<String, S>,
    cursors: HashMap<String, Cursor>,
}

/// Runs until the server is gone.
pub async fn run<T: Transport + Clone>(srv: Weak<ServerState>, t: T) {
    let mut peers: Peers<T::Stream> = Peers {
        conns: HashMap::new(),
        cursors: HashMap::new(),
    };
    let mut next_pass_ms = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(TICK_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(srv) = srv.upgrade() else { return };
        if srv.shutting_down.load(Relaxed) {
            return;
        }
        if !srv.active.is_on() {
            peers.conns.clear();
            continue;
        }
        let cfg = srv.config();
        let up = connected_peers(&srv);
        peers.conns.retain(|a, _| up.contains(a));
        if cfg.read_repair {
            let n = (cfg.read_repair_keys_per_second * TICK_MS / 1000).max(1) as usize;
            let keys = srv.repair.take(n);
            if !keys.is_empty() {
                for addr in &up {
                    read_repair(&srv, &t, &mut peers, addr, &keys).await;
                }
            }
        }
        let interval = cfg.active_anti_entropy_interval_ms;
        let now = now_ms();
        if interval > 0 && now >= next_pass_ms {
            next_pass_ms = now + interval;
            for addr in &up {
                anti_entropy(&srv, &t, &mut peers, addr).await;
            }
        }
    }
}

/// The configured peers whose links are streaming.
fn connected_peers(srv: &ServerState) -> Vec<String> {
    let configured = crate::active::parse_peers(&srv.config().active_peers);
    let status = srv.active.peers.lock().expect("peers lock");
    configured
        .into_iter()
        .filter(|a| status.get(a).is_some_and(|s| s.state == "connected"))
        .collect()
}

async fn connect<T: Transport>(srv: &ServerState, t: &T, addr: &str) -> Result<T::Stream, String> {
    let (host, port) = addr
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .ok_or("bad peer address")?;
    let mut s = tokio::time::timeout(
        Duration::from_millis(REQUEST_TIMEOUT_MS),
        t.connect(host, port),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| format!("connect: {e}"))?;
    crate::active::authenticate(srv, &mut s).await?;
    Ok(s)
}

/// One request to `addr` on its connection (made if needed); an error drops the connection.
async fn call<T: Transport>(
    srv: &ServerState,
    t: &T,
    peers: &mut Peers<T::Stream>,
    addr: &str,
    args: &[&[u8]],
) -> Result<Reply, String> {
    if !peers.conns.contains_key(addr) {
        let s = connect(srv, t, addr).await?;
        peers.conns.insert(addr.to_string(), s);
    }
    let s = peers.conns.get_mut(addr).expect("connection just made");
    match request(s, args, Duration::from_millis(REQUEST_TIMEOUT_MS)).await {
        Ok(Reply::Error(e)) => Err(format!("{}: {e}", String::from_utf8_lossy(args[0]))),
        Ok(r) => Ok(r),
        Err(e) => {
            peers.conns.remove(addr);
            Err(e)
        }
    }
}

/// The peer's states of `keys` in `db` (`ACTIVESTATE`), merged here; pushes ours where the peer
/// lacks part of them.
async fn repair_keys<T: Transport>(
    srv: &ServerState,
    t: &T,
    peers: &mut Peers<T::Stream>,
    addr: &str,
    db: usize,
    keys: &[&[u8]],
    tally: &mut Tally,
) -> Result<(), String> {
    let db_text = db.to_string();
    for chunk in keys.chunks(STATE_KEYS_PER_CALL) {
        let mut args: Vec<&[u8]> = vec![b"ACTIVESTATE", db_text.as_bytes()];
        args.extend_from_slice(chunk);
        let Reply::Array(Some(states)) = call(srv, t, peers, addr, &args).await? else {
            return Err("malformed ACTIVESTATE reply".into());
        };
        if states.len() != chunk.len() {
            return Err("ACTIVESTATE answered another number of states".into());
        }
        let mut pushes = Vec::new();
        for (key, st) in chunk.iter().zip(&states) {
            let remote = match st {
                Reply::Bulk(b) => b.as_deref(),
                _ => return Err("malformed ACTIVESTATE item".into()),
            };
            merge_one(srv, db, key, remote, tally, &mut pushes)?;
        }
        push(srv, t, peers, addr, db, pushes, tally).await?;
    }
    Ok(())
}

fn merge_one(
    srv: &ServerState,
    db: usize,
    key: &[u8],
    remote: Option<&[u8]>,
    tally: &mut Tally,
    pushes: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<(), String> {
    let m = repair::merge_fetched(srv, db, key, remote, now_ms())?;
    tally.checked += 1;
    tally.here += m.changed_here as u64;
    if let Some(st) = m.push {
        pushes.push((key.to_vec(), st));
    }
    Ok(())
}

/// Merges our states of keys at the peer (`ACTIVEMERGE`).
async fn push<T: Transport>(
    srv: &ServerState,
    t: &T,
    peers: &mut Peers<T::Stream>,
    addr: &str,
    db: usize,
    pushes: Vec<(Vec<u8>, Vec<u8>)>,
    tally: &mut Tally,
) -> Result<(), String> {
    let db_text = db.to_string();
    for (key, st) in pushes {
        let r = call(
            srv,
            t,
            peers,
            addr,
            &[b"ACTIVEMERGE", db_text.as_bytes(), &key, &st],
        )
        .await?;
        if r.as_int() == Some(1) {
            tally.there += 1;
        }
    }
    Ok(())
}

async fn read_repair<T: Transport>(
    srv: &Arc<ServerState>,
    t: &T,
    peers: &mut Peers<T::Stream>,
    addr: &str,
    keys: &[repair::DbKey],
) {
    let mut by_db: HashMap<usize, Vec<&[u8]>> = HashMap::new();
    for (db, k) in keys {
        by_db.entry(*db).or_default().push(k);
    }
    let mut tally = Tally::default();
    let mut result = Ok(());
    for (db, keys) in by_db {
        result = repair_keys(srv, t, peers, addr, db, &keys, &mut tally).await;
        if result.is_err() {
            break;
        }
    }
    let s = &srv.repair.stats;
    s.rr_checks.fetch_add(tally.checked, Relaxed);
    s.rr_repaired.fetch_add(tally.here, Relaxed);
    s.rr_pushed.fetch_add(tally.there, Relaxed);
    srv.repair.note_peer(addr, tally.here, tally.there);
    if let Err(e) = result {
        s.rr_errors.fetch_add(1, Relaxed);
        tracing::debug!(peer = %addr, error = %e, "read repair failed");
    }
}

/// One anti-entropy pass with `addr`.
async fn anti_entropy<T: Transport>(
    srv: &Arc<ServerState>,
    t: &T,
    peers: &mut Peers<T::Stream>,
    addr: &str,
) {
    let s = &srv.repair.stats;
    s.ae_passes.fetch_add(1, Relaxed);
    if let Err(e) = pass(srv, t, peers, addr).await {
        s.ae_errors.fetch_add(1, Relaxed);
        tracing::debug!(peer = %addr, error = %e, "anti-entropy pass failed");
    }
}

/// The keys in `db` here, summed over the shards.
fn local_dbsize(srv: &ServerState, db: usize) -> usize {
    (0..srv.ks.shard_count())
        .map(|i| srv.ks.lock(i).db_len(db))
        .sum()
}

async fn pass<T: Transport>(
    srv: &Arc<ServerState>,
    t: &T,
    peers: &mut Peers<T::Stream>,
    addr: &str,
) -> Result<(), String> {
    let cfg = srv.config();
    let slots = SLOTS.min(cfg.active_anti_entropy_slots_per_pass.max(1) as usize) as u16;
    let mut budget = cfg.active_anti_entropy_keys_per_pass.max(1);
    let mut cur = peers.cursors.get(addr).copied().unwrap_or_default();
    // A database empty on both sides is skipped (at most one round over the databases).
    for _ in 0..srv.ks.databases() {
        if cur.db >= srv.ks.databases() {
            cur = Cursor::default();
        }
        let db_text = cur.db.to_string();
        call(srv, t, peers, addr, &[b"SELECT", db_text.as_bytes()]).await?;
        let theirs = call(srv, t, peers, addr, &[b"DBSIZE"])
            .await?
            .as_int()
            .unwrap_or(0);
        if theirs > 0 || local_dbsize(srv, cur.db) > 0 {
            break;
        }
        cur = Cursor {
            db: cur.db + 1,
            slot: 0,
        };
    }
    let db = cur.db;
    let start = cur.slot;
    let end = (start as usize + slots as usize - 1).min(SLOTS - 1) as u16;
    let (a, b) = (start.to_string(), end.to_string());
    let Reply::Array(Some(items)) = call(
        srv,
        t,
        peers,
        addr,
        &[b"SLOTDIGEST", a.as_bytes(), b.as_bytes()],
    )
    .await?
    else {
        return Err("malformed SLOTDIGEST reply".into());
    };
    let theirs: Vec<u64> = items
        .iter()
        .map(|r| {
            r.as_bytes()
                .and_then(|b| std::str::from_utf8(b).ok()?.parse().ok())
        })
        .collect::<Option<_>>()
        .ok_or("malformed SLOTDIGEST item")?;
    if theirs.len() != (end - start) as usize + 1 {
        return Err("SLOTDIGEST answered another number of slots".into());
    }
    let ours = {
        let srv = srv.clone();
        let now = now_ms();
        tokio::task::spawn_blocking(move || {
            (start..=end)
                .map(|slot| shoal_replication::digest::slot_digest(&srv.ks, db, slot, now))
                .collect::<Vec<u64>>()
        })
        .await
        .map_err(|e| e.to_string())?
    };
    let stats = &srv.repair.stats;
    stats
        .ae_slots_compared
        .fetch_add(theirs.len() as u64, Relaxed);
    let mut next = Cursor {
        db,
        slot: end.wrapping_add(1),
    };
    if end as usize == SLOTS - 1 {
        next = Cursor {
            db: db + 1,
            slot: 0,
        };
    }
    let mut tally = Tally::default();
    for (i, slot) in (start..=end).enumerate() {
        if theirs[i] == ours[i] {
            continue;
        }
        if budget == 0 {
            // The rest of the range waits for the next pass.
            next = Cursor { db, slot };
            break;
        }
        stats.ae_slots_differing.fetch_add(1, Relaxed);
        let before = (tally.here, tally.there);
        repair_slot(srv, t, peers, addr, db, slot, &mut tally).await?;
        budget = budget.saturating_sub(tally.checked);
        tally.checked = 0;
        if (tally.here, tally.there) != before {
            stats.ae_slots_repaired.fetch_add(1, Relaxed);
        }
    }
    stats.ae_keys_repaired.fetch_add(tally.here, Relaxed);
    stats.ae_keys_pushed.fetch_add(tally.there, Relaxed);
    srv.repair.note_peer(addr, tally.here, tally.there);
    peers.cursors.insert(addr.to_string(), next);
    Ok(())
}

const SLOTS: usize = shoal_keyspace::SLOTS;

/// Repairs one slot of `db` with the peer: our keys' states from it, then its keys' states.
async fn repair_slot<T: Transport>(
    srv: &ServerState,
    t: &T,
    peers: &mut Peers<T::Stream>,
    addr: &str,
    db: usize,
    slot: u16,
    tally: &mut Tally,
) -> Result<(), String> {
    let ours = repair::keys_in_slot(srv, db, slot, now_ms());
    let refs: Vec<&[u8]> = ours.iter().map(Vec::as_slice).collect();
    repair_keys(srv, t, peers, addr, db, &refs, tally).await?;
    let ours: HashSet<Vec<u8>> = ours.into_iter().collect();
    let (db_text, slot_text) = (db.to_string(), slot.to_string());
    let mut cursor: Vec<u8> = Vec::new();
    // Bounded: each page moves the cursor forward over the peer's keys of one slot.
    loop {
        let mut args: Vec<&[u8]> = vec![b"ACTIVESLOT", db_text.as_bytes(), slot_text.as_bytes()];
        if !cursor.is_empty() {
            args.push(&cursor);
        }
        let r = call(srv, t, peers, addr, &args).await?;
        let Reply::Array(Some(parts)) = r else {
            return Err("malformed ACTIVESLOT reply".into());
        };
        let [Reply::Bulk(Some(next)), Reply::Array(Some(items))] = parts.as_slice() else {
            return Err("malformed ACTIVESLOT reply".into());
        };
        let mut pushes = Vec::new();
        for pair in items.chunks(2) {
            let [Reply::Bulk(Some(key)), Reply::Bulk(Some(state))] = pair else {
                return Err("malformed ACTIVESLOT item".into());
            };
            if ours.contains(key) {
                continue;
            }
            merge_one(srv, db, key, Some(state), tally, &mut pushes)?;
        }
        push(srv, t, peers, addr, db, pushes, tally).await?;
        if next.is_empty() || next <= &cursor {
            return Ok(());
        }
        cursor = next.clone();
    }
}
