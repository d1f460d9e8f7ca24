//! The keyspace: every key of every database, stored per slot, with expiry, versions, memory
//! accounting and eviction. Synchronous and clock-free: callers pass `now_ms`, so expiry and eviction
//! are tested on a paused clock. No I/O.

pub mod claim;
pub mod codec;
pub mod delta;
pub mod entry;
pub mod evict;
pub mod hlc;
pub mod lazyfree;
pub mod merge;
pub mod notify;
pub mod pool;
pub mod prefetch;
pub mod prior;
pub mod rdb;
pub mod shard;
pub mod slot;
pub mod sticky;
pub mod types;
pub mod write_log;

pub use entry::{ColdHandle, Entry, Kind, Object, Payload, ValueRef, parse_canonical_i64};
pub use evict::{LfuParams, Policy, Rng};
pub use hlc::Hlc;
pub use lazyfree::{LazyFree, LazyFreeWorker};
pub use shard::tier::{COLD_UNITS_MAX, ColdStore, LoadFuture, Promoted, TierInfo, cold_id_units};
pub use shard::{
    Candidate, DbShard, EFFECT_ENCODED_MAX_BYTES, EntryMut, EvictConfig, Evicted, Keyspace,
    PutEncoder, SHARDS_DEFAULT, Shard, ShardGuard, ShardStats, StringWrite, Tracked,
};
pub use slot::{SLOTS, key_slot};
pub use types::EncodingLimits;
