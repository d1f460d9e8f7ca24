//! The disk tier (`tiered-storage yes`), on foyer's hybrid cache: the I/O half of
//! `shoal_keyspace::ColdStore` (the keyspace decides what goes cold; see
//! `crates/keyspace/src/shard/tier.rs`) and the off-lock fetch a request asks for with
//! `Outcome::Fetch` (`crates/commands/src/tier.rs`).
//!
//! Foyer runs on a runtime of its own ([`TIER_THREADS`] threads), so a walk that must read a cold
//! value while holding a shard lock (a snapshot, a digest) can wait for it from any thread
//! without starving the runtime that would do the read. Values are written at once
//! (`WriteOnInsertion`); foyer's small memory part ([`TIER_MEMORY_BYTES`]) serves values read
//! again soon. Its folder is emptied at start: cold values live as long as the process (a
//! snapshot or the append-only log holds them as any other value).
//!
//! Foyer's buffers are allocated by the process allocator but are not the data set: like Redis
//! with its replication buffers, they are left out of the `maxmemory` comparison
//! (`mem_not_counted_for_evict`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use foyer::{
    BlockEngineConfig, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder,
    HybridCachePolicy, PsyncIoEngineConfig, RecoverMode, StorageFilter,
};
use shoal_commands::ServerState;
use shoal_commands::tier::FetchRequest;
use shoal_keyspace::{ColdStore, LoadFuture, Promoted, TierInfo, key_slot};

/// Threads of the tier's own runtime (foyer's flushers, reclaimers and reads).
pub const TIER_THREADS: usize = 2;
/// Bytes of recently written or read values foyer keeps in memory.
pub const TIER_MEMORY_BYTES: usize = 256 << 10;
/// Bytes of foyer's write buffer (it holds two: one filling, one being written).
pub const TIER_BUFFER_BYTES: usize = 4 << 20;
/// Bytes of values waiting for the writer; past this foyer drops new ones (the keys are then
/// evicted when read, as if the tier were full).
pub const TIER_SUBMIT_QUEUE_BYTES: usize = 64 << 20;
/// Largest encoded value the tier takes (foyer writes an entry within one buffer).
pub const TIER_VALUE_BYTES_MAX: usize = TIER_BLOCK_BYTES / 2;
/// How often values written but not yet confirmed on disk are checked.
pub const TIER_CONFIRM_INTERVAL_MS: u64 = 5;
/// Disk block size (foyer's unit of reclaim). A block taken back writes its live values again
/// through the write buffer, which drops what does not fit: blocks are a quarter of it.
pub const TIER_BLOCK_BYTES: usize = TIER_BUFFER_BYTES / 4;

/// The disk tier.
///
/// Foyer gives no word when a value reaches the disk, and between leaving its memory part and
/// being indexed on disk a value cannot be read; it also drops writes when its queue is full.
/// So every value put stays in `pending` (shared bytes, no copy) until a flush completed after
/// it and foyer's index has it; one that is not there by then is written again.
pub struct Tier {
    cache: HybridCache<u64, Bytes>,
    pending: std::sync::Mutex<HashMap<u64, Bytes>>,
    rt: tokio::runtime::Handle,
    min_value_bytes: usize,
    capacity_bytes: u64,
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    writes: AtomicU64,
    bytes_written: AtomicU64,
    reads: AtomicU64,
    read_misses: AtomicU64,
    promotions: AtomicU64,
}

impl std::fmt::Debug for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tier")
            .field("capacity_bytes", &self.capacity_bytes)
            .finish()
    }
}

impl ColdStore for Tier {
    fn put(&self, id: u64, encoded: Vec<u8>) {
        self.counters.writes.fetch_add(1, Relaxed);
        self.counters
            .bytes_written
            .fetch_add(encoded.len() as u64, Relaxed);
        let v = Bytes::from(encoded);
        self.pending
            .lock()
            .expect("tier pending lock")
            .insert(id, v.clone());
        self.cache.insert(id, v);
    }

    fn forget(&self, id: u64) {
        self.pending.lock().expect("tier pending lock").remove(&id);
        self.cache.remove(&id);
    }

    fn accepts(&self, encoded_bytes: usize) -> bool {
        (self.min_value_bytes..=TIER_VALUE_BYTES_MAX).contains(&encoded_bytes)
    }

    fn load_blocking(&self, id: u64) -> Option<Vec<u8>> {
        // On the tier's runtime, whatever thread asks (a runtime worker holding a shard lock
        // included): waiting on a channel never needs the caller's runtime.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let fut = self.load(id);
        self.rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().ok().flatten()
    }

    fn load(&self, id: u64) -> LoadFuture {
        self.counters.reads.fetch_add(1, Relaxed);
        if let Some(v) = self.pending.lock().expect("tier pending lock").get(&id) {
            let v = v.to_vec();
            return Box::pin(async move { Some(v) });
        }
        let get = self.cache.get(&id);
        let counters = self.counters.clone();
        Box::pin(async move {
            let v = match get.await {
                Ok(Some(e)) => Some(e.value().to_vec()),
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!("disk tier read of value {id} failed: {e}");
                    None
                }
            };
            if v.is_none() {
                counters.read_misses.fetch_add(1, Relaxed);
            }
            v
        })
    }

    fn promoted(&self, id: u64) {
        self.counters.promotions.fetch_add(1, Relaxed);
        self.forget(id);
    }

    fn info(&self) -> TierInfo {
        TierInfo {
            writes: self.counters.writes.load(Relaxed),
            bytes_written: self.counters.bytes_written.load(Relaxed),
            reads: self.counters.reads.load(Relaxed),
            read_misses: self.counters.read_misses.load(Relaxed),
            promotions: self.counters.promotions.load(Relaxed),
            capacity_bytes: self.capacity_bytes,
        }
    }
}

/// The tier's folder: `tiered-storage-dir`, or `<dir>/tiered`.
fn folder(state: &ServerState) -> PathBuf {
    let cfg = state.config();
    if cfg.tiered_storage_dir.is_empty() {
        Path::new(&cfg.dir).join("tiered")
    } else {
        PathBuf::from(&cfg.tiered_storage_dir)
    }
}

/// Starts the tier if `tiered-storage` is on (at start-up, before clients and before the
/// snapshot or log is loaded).
pub fn start(state: &ServerState) -> Result<(), String> {
    let cfg = state.config();
    if !cfg.tiered_storage {
        return Ok(());
    }
    let dir = folder(state);
    // Values there belong to a previous process, whose handles are gone.
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|e| format!("tiered-storage-dir {}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("tiered-storage-dir {}: {e}", dir.display()))?;
    let capacity = cfg.tiered_storage_max_bytes as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(TIER_THREADS)
        .max_blocking_threads(TIER_THREADS * 2)
        .thread_name("shoal-tier")
        .enable_all()
        .build()
        .map_err(|e| format!("disk tier runtime: {e}"))?;
    let handle = rt.handle().clone();
    let build_dir = dir.clone();
    let spawner = handle.clone();
    let cache = rt
        .block_on(async move {
            let device = FsDeviceBuilder::new(&build_dir)
                .with_capacity(capacity)
                .build()?;
            HybridCacheBuilder::new()
                .with_name("shoal-tier")
                .with_policy(HybridCachePolicy::WriteOnInsertion)
                .memory(TIER_MEMORY_BYTES)
                .with_weighter(|_k: &u64, v: &Bytes| v.len() + 16)
                .storage()
                .with_io_engine_config(PsyncIoEngineConfig::new())
                .with_engine_config(
                    BlockEngineConfig::new(device)
                        .with_block_size(TIER_BLOCK_BYTES)
                        .with_buffer_pool_size(TIER_BUFFER_BYTES)
                        .with_submit_queue_size_threshold(TIER_SUBMIT_QUEUE_BYTES)
                        // A block taken back for space keeps its live values (written again
                        // elsewhere): only values no key refers to any more go. Without this
                        // foyer drops whole blocks, live values with them.
                        .with_reinsertion_filter(StorageFilter::new()),
                )
                .with_recover_mode(RecoverMode::None)
                .with_spawner(spawner.into())
                .build()
                .await
        })
        .map_err(|e| format!("disk tier in {}: {e}", dir.display()))?;
    // The runtime lives as long as the process (the keyspace keeps the tier to the end).
    std::mem::forget(rt);
    let tier = Arc::new(Tier {
        cache,
        pending: std::sync::Mutex::new(HashMap::new()),
        rt: handle.clone(),
        min_value_bytes: cfg.tiered_storage_min_value_bytes as usize,
        capacity_bytes: capacity as u64,
        counters: Arc::default(),
    });
    state
        .mem_not_counted_for_evict
        .store(TIER_MEMORY_BYTES + 2 * TIER_BUFFER_BYTES, Relaxed);
    state.ks.set_tier(tier.clone());
    handle.spawn(confirm(tier));
    tracing::info!("disk tier on in {} ({} bytes)", dir.display(), capacity);
    Ok(())
}

/// Drops from `pending` the values foyer's index has after a flush that followed their write;
/// writes again those it dropped. Runs for the life of the process.
async fn confirm(tier: Arc<Tier>) {
    loop {
        tokio::time::sleep(Duration::from_millis(TIER_CONFIRM_INTERVAL_MS)).await;
        let batch: Vec<u64> = tier
            .pending
            .lock()
            .expect("tier pending lock")
            .keys()
            .copied()
            .collect();
        if batch.is_empty() {
            continue;
        }
        tier.cache.storage().wait().await;
        let mut retry = Vec::new();
        {
            let mut pending = tier.pending.lock().expect("tier pending lock");
            for id in batch {
                if tier.cache.storage().may_contains(&id) {
                    pending.remove(&id);
                } else if let Some(v) = pending.get(&id) {
                    retry.push((id, v.clone()));
                }
            }
        }
        for (id, v) in retry {
            tier.cache.insert(id, v);
        }
    }
}

/// Loads the values a request needs from the tier, holding no lock while the disk works, and puts
/// them back in memory (a key written meanwhile keeps what was written). A value the tier no
/// longer has makes its key go, counted as evicted.
pub async fn fetch(srv: &ServerState, req: &FetchRequest, now_ms: u64) {
    let Some(store) = srv.ks.cold_store() else {
        return;
    };
    let limits = srv.encoding_limits();
    for (db, key) in &req.keys {
        let slot = key_slot(key);
        let shard = srv.ks.shard_of(slot);
        let Some(handle) = srv.ks.lock(shard).cold_handle(*db, slot, key) else {
            continue;
        };
        match store.load(handle.id).await {
            Some(v) => {
                let r = srv
                    .ks
                    .lock(shard)
                    .promote(*db, slot, key, handle, &v, &limits, now_ms);
                if r == Promoted::Corrupt {
                    tracing::warn!("disk tier value {} did not decode: key dropped", handle.id);
                }
            }
            None => {
                srv.ks.lock(shard).drop_lost(*db, slot, key, handle);
            }
        }
    }
    // What was put back may take memory past `maxmemory`: make room now (as a write would),
    // so reads alone do not grow the node past its limit. Under the exec gate, as admission
    // evicts: never in the middle of an EXEC.
    {
        let _gate = srv.gate.shared();
        shoal_commands::ensure_memory(srv, now_ms);
    }
    // A lost value's removal, and what was evicted, go to replicas like any eviction.
    shoal_commands::effects::emit_logged(srv, now_ms);
}
