//! Which keys were written in the slots an atomic slot migration is exporting.
//!
//! The source of a migration copies a slot's keys while clients keep writing them; every key
//! written meanwhile must be sent again, as it is after the write. Writes already queue their
//! change for the replication stream ([`crate::delta::Pending`], under the shard lock; the
//! migration turns recording on), so the tracker notes the key of every queued change of a tracked
//! slot: when the queue is taken for the stream, and when the migration asks (it then also looks at
//! the queue not yet taken). A FLUSHDB/FLUSHALL of a tracked shard is noted as such: the target
//! must drop what it received for these slots.
//!
//! Cluster mode has one database, so only database 0 is tracked. Memory is bounded by the keys the
//! tracked slots hold plus those written into them before the migration takes the set.

use hashbrown::HashSet;

type KeySet = HashSet<Box<[u8]>, foldhash::fast::RandomState>;

use crate::delta::Pending;
use crate::key_slot;

#[derive(Debug)]
pub(crate) struct Tracker {
    /// One bit per local slot of the shard.
    slots: Box<[u64]>,
    dirty: KeySet,
    flushed: bool,
}

/// What a migration takes from a shard's tracker: the keys written since it last asked, and
/// whether database 0 was flushed meanwhile.
#[derive(Debug, Default)]
pub struct Tracked {
    pub keys: Vec<Box<[u8]>>,
    pub flushed: bool,
}

impl Tracker {
    pub(crate) fn new(local_slots: usize) -> Tracker {
        Tracker {
            slots: vec![0; local_slots.div_ceil(64)].into_boxed_slice(),
            dirty: KeySet::default(),
            flushed: false,
        }
    }

    pub(crate) fn set(&mut self, local: u32, on: bool) {
        let (w, b) = ((local / 64) as usize, local % 64);
        if on {
            self.slots[w] |= 1 << b;
        } else {
            self.slots[w] &= !(1 << b);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.slots.iter().all(|&w| w == 0)
    }

    fn has(&self, local: u32) -> bool {
        self.slots[(local / 64) as usize] & (1 << (local % 64)) != 0
    }

    /// Notes the keys of tracked slots among `items`; `shift` maps a slot to its local index.
    pub(crate) fn note(&mut self, items: &[Pending], shift: u32) {
        for p in items {
            let (db, key) = p.db_key();
            if db == 0 && self.has((key_slot(key) as u32) >> shift) && !self.dirty.contains(key) {
                self.dirty.insert(key.into());
            }
        }
    }

    pub(crate) fn note_flush(&mut self) {
        self.flushed = true;
        // Whatever was written before the flush is gone too.
        self.dirty.clear();
    }

    pub(crate) fn take(&mut self) -> Tracked {
        Tracked {
            keys: self.dirty.drain().collect(),
            flushed: std::mem::take(&mut self.flushed),
        }
    }
}
