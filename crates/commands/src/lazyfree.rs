//! Freeing large values off the request path (UNLINK, FLUSHALL ASYNC): one long-lived background
//! thread fed through a bounded channel. When the channel is full the caller frees inline, so memory
//! held by pending frees stays bounded.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

/// Batches of values waiting for the background thread.
pub const LAZYFREE_QUEUE_MAX: usize = 1024;

/// Values dropped in the background so far (INFO `lazyfreed_objects`).
pub static LAZYFREED: AtomicU64 = AtomicU64::new(0);

type Garbage = Box<dyn Send>;

fn sender() -> &'static SyncSender<Garbage> {
    static TX: OnceLock<SyncSender<Garbage>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = sync_channel::<Garbage>(LAZYFREE_QUEUE_MAX);
        std::thread::Builder::new()
            .name("shoal-lazyfree".into())
            .spawn(move || {
                for g in rx {
                    drop(g);
                    LAZYFREED.fetch_add(1, Relaxed);
                }
            })
            .expect("spawn lazyfree thread");
        tx
    })
}

/// Drops `value` on the background thread, or here if the queue is full.
pub fn drop_in_background(value: Box<dyn Send>) {
    match sender().try_send(value) {
        Ok(()) => {}
        Err(TrySendError::Full(v)) | Err(TrySendError::Disconnected(v)) => drop(v),
    }
}
