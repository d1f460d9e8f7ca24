//! Freeing large values off the request path (UNLINK, FLUSHALL ASYNC, a replica's full copy): values
//! are handed to a background thread through a bounded channel. The thread belongs to whoever owns
//! the node (the server spawns it; tests and the simulator free inline), so nodes sharing a process
//! keep their own. When the channel is full the caller frees inline, so memory held by pending frees
//! stays bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

/// Batches of values waiting for the background thread.
pub const LAZYFREE_QUEUE_MAX: usize = 1024;

/// Something to drop later.
pub type Garbage = Box<dyn Send>;

/// The sending side, held by the node.
#[derive(Debug, Default)]
pub struct LazyFree {
    tx: Option<SyncSender<Garbage>>,
    /// Values handed to the background thread so far.
    queued: AtomicU64,
    freed: Arc<AtomicU64>,
    /// `freed` at the last CONFIG RESETSTAT.
    freed_at_reset: AtomicU64,
}

/// The receiving side: run [`LazyFreeWorker::run`] on a thread of the owner's choosing.
pub struct LazyFreeWorker {
    rx: Receiver<Garbage>,
    freed: Arc<AtomicU64>,
}

impl LazyFree {
    /// Frees inline (no background thread).
    pub fn inline() -> Self {
        LazyFree::default()
    }

    /// A queue and the worker that drains it.
    pub fn with_worker() -> (Self, LazyFreeWorker) {
        let (tx, rx) = sync_channel(LAZYFREE_QUEUE_MAX);
        let freed = Arc::new(AtomicU64::new(0));
        (
            LazyFree {
                tx: Some(tx),
                queued: AtomicU64::new(0),
                freed: freed.clone(),
                freed_at_reset: AtomicU64::new(0),
            },
            LazyFreeWorker { rx, freed },
        )
    }

    /// Drops `value` on the background thread, or here if there is none or its queue is full.
    pub fn drop_in_background(&self, value: Garbage) {
        match &self.tx {
            Some(tx) => match tx.try_send(value) {
                Ok(()) => {
                    self.queued.fetch_add(1, Relaxed);
                }
                Err(TrySendError::Full(v)) | Err(TrySendError::Disconnected(v)) => drop(v),
            },
            None => drop(value),
        }
    }

    /// Values dropped in the background since the last [`LazyFree::reset_stats`] (INFO
    /// `lazyfreed_objects`).
    pub fn freed(&self) -> u64 {
        self.freed
            .load(Relaxed)
            .saturating_sub(self.freed_at_reset.load(Relaxed))
    }

    /// Values handed over and not dropped yet (INFO `lazyfree_pending_objects`).
    pub fn pending(&self) -> u64 {
        self.queued
            .load(Relaxed)
            .saturating_sub(self.freed.load(Relaxed))
    }

    /// CONFIG RESETSTAT: `lazyfreed_objects` counts from zero again (pending values still count).
    pub fn reset_stats(&self) {
        self.freed_at_reset.store(self.freed.load(Relaxed), Relaxed);
    }
}

impl LazyFreeWorker {
    /// Drops what arrives until every sender is gone.
    pub fn run(self) {
        for g in self.rx {
            drop(g);
            self.freed.fetch_add(1, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_frees_what_is_sent_and_counts_it() {
        let (lf, worker) = LazyFree::with_worker();
        let t = std::thread::spawn(move || worker.run());
        lf.drop_in_background(Box::new(vec![0u8; 1024]));
        let freed = lf.freed.clone();
        drop(lf);
        t.join().unwrap();
        assert_eq!(freed.load(Relaxed), 1);
        // Inline: nothing counted, nothing queued.
        let inline = LazyFree::inline();
        inline.drop_in_background(Box::new(1u8));
        assert_eq!(inline.freed(), 0);
    }

    #[test]
    fn resetstat_zeroes_the_freed_count_but_not_the_pending_one() {
        let (lf, worker) = LazyFree::with_worker();
        lf.drop_in_background(Box::new(1u8));
        lf.drop_in_background(Box::new(2u8));
        // Nothing dropped yet: both pending.
        assert_eq!((lf.freed(), lf.pending()), (0, 2));
        let freed = lf.freed.clone();
        let t = std::thread::spawn(move || worker.run());
        // Every value dropped once the worker drains the queue (bounded wait).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while freed.load(Relaxed) < 2 {
            assert!(std::time::Instant::now() < deadline, "worker did not drain");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!((lf.freed(), lf.pending()), (2, 0));
        lf.reset_stats();
        assert_eq!((lf.freed(), lf.pending()), (0, 0));
        drop(lf);
        t.join().unwrap();
    }
}
