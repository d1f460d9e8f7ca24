//! What an active-active member needs to know about a key *before* a batch of writes to it, when
//! the key keeps no merge state of its own (`merge::Compact`: its state is its entry).
//!
//! A key whose merge state is only a reset (SET and friends) keeps that state in its entry: the
//! value, the version (the reset's stamp, with the entry's `merge_node`) and the TTL. A command
//! overwrites the entry before the shard's queue is drained, so the drain could no longer tell
//! what state the write was made on top of. While `Shard::set_keep_priors` is on, the shard notes
//! it at each write instead: the entry's version, writer and deadline as they were before the
//! batch's first write to the key (no copy of the value: a whole-value write does not need it),
//! how many writes and increments the batch made, and, for increments, the string they were made
//! to (`Shard::keep_prior`, called by the INCR family before it writes). The drain turns that
//! into the key's previous merge state (see `commands/src/active.rs`).

/// A key's entry as it was before a batch's first write to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Was {
    pub version: u64,
    /// The peer whose write made `version` (`None`: this member).
    pub node: Option<u64>,
    pub expire_ms: Option<u64>,
}

impl Was {
    pub fn of(e: &crate::Entry) -> Was {
        Was {
            version: e.version(),
            node: e.merge_node(),
            expire_ms: e.expire_ms(),
        }
    }
}

/// How a write changed a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// The entry was replaced (SET, a STORE, RESTORE, ...).
    Whole,
    /// The entry was changed in place; `ttl_only`: only its expiry changed.
    InPlace { ttl_only: bool },
    /// The entry was removed (deleted, expired or evicted).
    Removed,
}

/// One key's prior in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prior {
    pub db: usize,
    pub key: Box<[u8]>,
    /// The entry before the batch (`None`: absent).
    pub was: Option<Was>,
    /// Writes that left a value (whole or in place), and increments noted.
    pub writes: u32,
    pub counts: u32,
    /// Every write that left a value changed only the expiry.
    pub ttl_only: bool,
    /// The entry was removed at some point of the batch.
    pub removed: bool,
    /// Captured by [`crate::shard::Shard::keep_prior`] before an increment: the string the
    /// batch's first write was made to (`None` with `was` set: not a string).
    pub base: Option<Box<[u8]>>,
    pub base_known: bool,
}

/// Notes a write of `key` in `priors`: the first one records what the key was.
pub fn note(priors: &mut Vec<Prior>, db: usize, key: &[u8], was: Option<Was>, how: How) {
    let p = match priors
        .iter_mut()
        .rev()
        .find(|p| p.db == db && *p.key == *key)
    {
        Some(p) => p,
        None => {
            priors.push(Prior {
                db,
                key: key.into(),
                was,
                writes: 0,
                counts: 0,
                ttl_only: true,
                removed: false,
                base: None,
                base_known: false,
            });
            priors.last_mut().expect("just pushed")
        }
    };
    match how {
        How::Whole => {
            p.writes += 1;
            p.ttl_only = false;
        }
        How::InPlace { ttl_only } => {
            p.writes += 1;
            p.ttl_only &= ttl_only;
        }
        How::Removed => p.removed = true,
    }
}

/// Finds the prior of `(db, key)` in a drained batch.
pub fn find<'a>(priors: &'a [Prior], db: usize, key: &[u8]) -> Option<&'a Prior> {
    priors.iter().find(|p| p.db == db && *p.key == *key)
}
