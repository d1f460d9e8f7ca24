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
//! (`mem_not_counted_for_evict`), as are values waiting to be written (`tiered_pending_bytes`).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bytes::Bytes;
use foyer::{
    BlockEngineConfig, DeviceBuilder, FifoPicker, FsDeviceBuilder, HybridCache, HybridCacheBuilder,
    HybridCachePolicy, InvalidRatioPicker, PsyncIoEngineConfig, RecoverMode, StorageFilter,
};
use shoal_commands::ServerState;
use shoal_commands::tier::FetchRequest;
use shoal_keyspace::{
    COLD_UNITS_MAX, ColdStore, LoadFuture, Promoted, TierInfo, cold_id_units, key_slot,
};

/// Threads of the tier's own runtime (foyer's flushers, reclaimers and reads, and our writer).
pub const TIER_THREADS: usize = 2;
/// Bytes of recently written or read values foyer keeps in memory.
pub const TIER_MEMORY_BYTES: usize = 256 << 10;
/// Bytes of foyer's write buffer (it holds two: one filling, one being written).
pub const TIER_BUFFER_BYTES: usize = 4 << 20;
/// Bytes of values put but not yet confirmed on disk (held in memory, readable, and not counted
/// against `maxmemory`: evicting them is what put them there); a victim that would pass this is
/// evicted instead (`tiered_dropped_busy`): the disk cannot keep up.
pub const TIER_PENDING_BYTES_MAX: usize = 64 << 20;
/// Bytes of disk footprint the writer hands foyer per flush. Foyer drops what does not fit in its
/// write buffer, live values a reclaim writes again included: what we hand it per flush plus
/// what reclaims write again must stay below [`TIER_BUFFER_BYTES`].
pub const TIER_WRITE_BATCH_BYTES: usize = TIER_BUFFER_BYTES / 8;
/// Largest disk block (foyer's unit of reclaim); smaller tiers get smaller blocks, so that
/// every tier has at least [`TIER_BLOCKS_MIN`].
pub const TIER_BLOCK_BYTES_MAX: usize = 1 << 20;
/// Smallest disk block.
pub const TIER_BLOCK_BYTES_MIN: usize = 64 << 10;
/// Blocks a tier is cut into at least (when its size allows blocks of
/// [`TIER_BLOCK_BYTES_MIN`]).
pub const TIER_BLOCKS_MIN: usize = 64;
/// Share (percent) of the tier live values may fill. The disk is a log: space freed by values
/// read back or deleted is reclaimed by moving a block's live values elsewhere, which needs
/// free room; full to the brim, reclaiming would only move live values around.
pub const TIER_FILL_PERCENT: u64 = 75;
/// Foyer's unit of disk space: every value takes whole pages.
pub const TIER_PAGE_BYTES: usize = 4096;
/// Bytes foyer adds to a value on disk (entry header, the key, the value's length).
pub const TIER_ENTRY_OVERHEAD_BYTES: usize = 64;
/// Reads of a value that found nothing are tried again once, after foyer's flushers finished
/// what they had: a reclaim may have moved it meanwhile.
pub const TIER_READ_RETRIES: usize = 1;

/// The disk block size for a tier of `capacity` bytes.
pub fn block_bytes(capacity: usize) -> usize {
    let b = (capacity / TIER_BLOCKS_MIN).clamp(TIER_BLOCK_BYTES_MIN, TIER_BLOCK_BYTES_MAX);
    b / TIER_PAGE_BYTES * TIER_PAGE_BYTES
}

/// Pages a value of `encoded` bytes takes on disk.
fn pages(encoded: usize) -> u64 {
    encoded
        .saturating_add(TIER_ENTRY_OVERHEAD_BYTES)
        .div_ceil(TIER_PAGE_BYTES) as u64
}

/// The disk tier.
///
/// Foyer gives no word when a value reaches the disk, and between leaving its memory part and
/// being indexed on disk a value cannot be read; it also drops writes (ours and the live values a
/// reclaim moves) that do not fit in its write buffer. So values are handed to foyer by one
/// writer, [`TIER_WRITE_BATCH_BYTES`] per flush, and each stays in `queue.pending` (shared bytes,
/// no copy) until the flush that wrote it completed and foyer's index has it; one that is not
/// there by then is written again. The tier admits values only while the live ones take at most
/// [`TIER_FILL_PERCENT`] of it, and reclaims the block with the most dead bytes first, so a
/// reclaim moves little and never more than the buffer holds.
pub struct Tier {
    cache: HybridCache<u64, Bytes>,
    queue: std::sync::Mutex<Queue>,
    wake: tokio::sync::Notify,
    rt: tokio::runtime::Handle,
    min_value_bytes: usize,
    max_value_bytes: usize,
    capacity_bytes: u64,
    /// Pages live values may take ([`TIER_FILL_PERCENT`] of the tier).
    live_pages_max: u64,
    /// Pages the values put and not yet forgotten take.
    live_pages: AtomicU64,
    counters: Arc<Counters>,
}

/// Values put and not yet confirmed on disk.
#[derive(Default)]
struct Queue {
    pending: HashMap<u64, Bytes>,
    /// Ids of `pending` the writer has still to hand foyer, oldest first (forgotten ones are
    /// skipped when met).
    order: VecDeque<u64>,
    bytes: usize,
}

#[derive(Debug, Default)]
struct Counters {
    writes: AtomicU64,
    bytes_written: AtomicU64,
    reads: AtomicU64,
    read_misses: AtomicU64,
    promotions: AtomicU64,
    dropped_full: AtomicU64,
    dropped_busy: AtomicU64,
}

impl std::fmt::Debug for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tier")
            .field("capacity_bytes", &self.capacity_bytes)
            .finish()
    }
}

impl Tier {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().expect("tier queue lock")
    }
}

impl ColdStore for Tier {
    fn put(&self, id: u64, encoded: Vec<u8>) {
        self.counters.writes.fetch_add(1, Relaxed);
        self.counters
            .bytes_written
            .fetch_add(encoded.len() as u64, Relaxed);
        self.live_pages.fetch_add(cold_id_units(id), Relaxed);
        let v = Bytes::from(encoded);
        {
            let mut q = self.queue();
            q.bytes += v.len();
            q.pending.insert(id, v);
            q.order.push_back(id);
        }
        self.wake.notify_one();
    }

    fn forget(&self, id: u64) {
        self.live_pages.fetch_sub(cold_id_units(id), Relaxed);
        {
            let mut q = self.queue();
            if let Some(v) = q.pending.remove(&id) {
                q.bytes -= v.len();
            }
        }
        self.cache.remove(&id);
    }

    fn admit(&self, encoded_bytes: usize) -> Option<u64> {
        if !(self.min_value_bytes..=self.max_value_bytes).contains(&encoded_bytes) {
            return None;
        }
        let pages = pages(encoded_bytes);
        if self.live_pages.load(Relaxed) + pages > self.live_pages_max {
            self.counters.dropped_full.fetch_add(1, Relaxed);
            return None;
        }
        if self.queue().bytes + encoded_bytes > TIER_PENDING_BYTES_MAX {
            self.counters.dropped_busy.fetch_add(1, Relaxed);
            return None;
        }
        Some(pages)
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
        if let Some(v) = self.queue().pending.get(&id) {
            let v = v.to_vec();
            return Box::pin(async move { Some(v) });
        }
        let cache = self.cache.clone();
        let counters = self.counters.clone();
        Box::pin(async move {
            let mut tries = 0;
            loop {
                match cache.get(&id).await {
                    Ok(Some(e)) => return Some(e.value().to_vec()),
                    Ok(None) => {}
                    Err(e) => tracing::warn!("disk tier read of value {id} failed: {e}"),
                }
                if tries == TIER_READ_RETRIES {
                    counters.read_misses.fetch_add(1, Relaxed);
                    return None;
                }
                tries += 1;
                cache.storage().wait().await;
            }
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
            live_bytes: self.live_pages.load(Relaxed) * TIER_PAGE_BYTES as u64,
            dropped_full: self.counters.dropped_full.load(Relaxed),
            dropped_busy: self.counters.dropped_busy.load(Relaxed),
            pending_bytes: self.queue().bytes as u64,
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
    let block = block_bytes(capacity);
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
                        .with_block_size(block)
                        .with_buffer_pool_size(TIER_BUFFER_BYTES)
                        // Only our writer submits, a batch at a time: never reached.
                        .with_submit_queue_size_threshold(TIER_PENDING_BYTES_MAX)
                        // Reclaim the block with the most dead bytes (values read back,
                        // written over, deleted) first: it moves the fewest live ones.
                        .with_eviction_pickers(vec![
                            Box::new(InvalidRatioPicker::new(0.0)),
                            Box::<FifoPicker>::default(),
                        ])
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
    let pages_total = (capacity / block * block / TIER_PAGE_BYTES) as u64;
    let tier = Arc::new(Tier {
        cache,
        queue: std::sync::Mutex::new(Queue::default()),
        wake: tokio::sync::Notify::new(),
        rt: handle.clone(),
        min_value_bytes: cfg.tiered_storage_min_value_bytes as usize,
        // Foyer writes a value within one block; a value of half a block leaves room for others.
        max_value_bytes: (block / 2)
            .min(COLD_UNITS_MAX as usize * TIER_PAGE_BYTES - TIER_ENTRY_OVERHEAD_BYTES),
        capacity_bytes: capacity as u64,
        live_pages_max: pages_total * TIER_FILL_PERCENT / 100,
        live_pages: AtomicU64::new(0),
        counters: Arc::default(),
    });
    state
        .mem_not_counted_for_evict
        .store(TIER_MEMORY_BYTES + 2 * TIER_BUFFER_BYTES, Relaxed);
    state.ks.set_tier(tier.clone());
    handle.spawn(writer(tier));
    tracing::info!("disk tier on in {} ({} bytes)", dir.display(), capacity);
    Ok(())
}

/// Hands foyer the values put, [`TIER_WRITE_BATCH_BYTES`] of disk footprint at a time, waits for
/// the flush that wrote them, and drops from `pending` those foyer's index has; writes again those
/// it dropped. Runs for the life of the process.
async fn writer(tier: Arc<Tier>) {
    loop {
        let batch: Vec<(u64, Bytes)> = {
            let mut q = tier.queue();
            let mut batch = Vec::new();
            let mut footprint = 0;
            while footprint < TIER_WRITE_BATCH_BYTES
                && let Some(id) = q.order.pop_front()
            {
                if let Some(v) = q.pending.get(&id) {
                    footprint += pages(v.len()) as usize * TIER_PAGE_BYTES;
                    batch.push((id, v.clone()));
                }
            }
            batch
        };
        if batch.is_empty() {
            tier.wake.notified().await;
            continue;
        }
        for (id, v) in &batch {
            tier.cache.insert(*id, v.clone());
        }
        tier.cache.storage().wait().await;
        let mut forgotten = Vec::new();
        {
            let mut q = tier.queue();
            for (id, _) in batch.into_iter().rev() {
                if !q.pending.contains_key(&id) {
                    // Forgotten while it was being written: it must not stay on disk.
                    forgotten.push(id);
                } else if tier.cache.storage().may_contains(&id) {
                    let v = q.pending.remove(&id).expect("pending value");
                    q.bytes -= v.len();
                } else {
                    q.order.push_front(id);
                }
            }
        }
        for id in forgotten {
            tier.cache.remove(&id);
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
