//! Collection values (hash, list, set, sorted set), each with a compact encoding for small values and
//! a scalable one for large values, as Redis has (`listpack`/`intset` → `hashtable`/`quicklist`/
//! `skiplist`). Each type keeps a running count of the heap bytes it holds, so `Entry::mem_bytes` is
//! O(1) however large the collection is.
//!
//! Every type offers the same small surface used by the rest of the keyspace: `len`, `mem_bytes`,
//! `encoding` (the `OBJECT ENCODING` name) and `encode`/`decode` (the value codec used by DUMP/RESTORE
//! and snapshots, see `codec.rs`). Bloom filters (`bloom.rs`, RedisBloom's type) live here too.

pub mod bloom;
pub mod hash;
pub mod list;
pub mod set;
pub mod stream;
pub mod zset;

/// Thresholds for the compact encodings (`hash-max-listpack-entries` and friends). Passed in by the
/// command layer from config, so the keyspace stays config-free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodingLimits {
    pub hash_max_listpack_entries: usize,
    pub hash_max_listpack_value: usize,
    /// `list-max-listpack-size`: positive = entries per node, negative = -1..-5 size class (4..64 KB).
    pub list_max_listpack_size: i64,
    pub set_max_intset_entries: usize,
    pub zset_max_listpack_entries: usize,
    pub zset_max_listpack_value: usize,
    /// `stream-node-max-bytes`: a stream node this large (as Redis's listpack would be) is full.
    pub stream_node_max_bytes: usize,
    /// `stream-node-max-entries`: entries (live and deleted) per stream node; 0: no limit.
    pub stream_node_max_entries: usize,
}

impl Default for EncodingLimits {
    fn default() -> Self {
        EncodingLimits {
            hash_max_listpack_entries: 512,
            hash_max_listpack_value: 64,
            list_max_listpack_size: -2,
            set_max_intset_entries: 512,
            zset_max_listpack_entries: 128,
            zset_max_listpack_value: 64,
            stream_node_max_bytes: 4096,
            stream_node_max_entries: 100,
        }
    }
}
