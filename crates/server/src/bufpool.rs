//! A per-thread pool of connection buffers, so an idle connection holds none.
//!
//! A connection needs a read buffer while bytes arrive and a reply buffer while replies go out;
//! between requests it needs neither. With 10,000 idle clients, buffers held for each would be
//! 320 MB of `used_memory` (counted against `maxmemory`). So a connection waits for its socket
//! to become readable with no buffer, takes one from this thread's pool when it does, and gives it
//! back once the batch is answered; a busy connection keeps its buffers from one read to the next
//! only while its socket stays busy. Buffers of the standard size only are pooled (a buffer grown
//! for a big request is freed), and at most [`POOLED_BUFFERS_PER_THREAD`] per thread, so the pool
//! is bounded. Tasks move between threads freely: a buffer taken on one thread may be given back
//! on another.

use std::cell::RefCell;

/// The size of a pooled buffer (the connection's read chunk).
pub const BUFFER_BYTES: usize = crate::conn::READ_CHUNK_BYTES;
/// Buffers kept per worker thread: enough for the connections one thread serves at once.
pub const POOLED_BUFFERS_PER_THREAD: usize = 64;

thread_local! {
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for [`BUFFER_BYTES`].
pub fn take() -> Vec<u8> {
    POOL.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(BUFFER_BYTES))
}

/// Gives a buffer back (emptied); one of another size, or one too many, is freed.
pub fn give(mut buf: Vec<u8>) {
    if buf.capacity() != BUFFER_BYTES {
        return;
    }
    buf.clear();
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOLED_BUFFERS_PER_THREAD {
            p.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_and_the_pool_is_bounded() {
        let mut a = take();
        a.extend_from_slice(b"hello");
        give(a);
        let b = take();
        assert!(b.is_empty());
        assert_eq!(b.capacity(), BUFFER_BYTES);
        let many: Vec<Vec<u8>> = (0..2 * POOLED_BUFFERS_PER_THREAD).map(|_| take()).collect();
        for v in many {
            give(v);
        }
        assert_eq!(POOL.with(|p| p.borrow().len()), POOLED_BUFFERS_PER_THREAD);
        // A grown buffer is not pooled.
        let mut big = take();
        big.reserve(10 * BUFFER_BYTES);
        let before = POOL.with(|p| p.borrow().len());
        give(big);
        assert_eq!(POOL.with(|p| p.borrow().len()), before);
    }
}
