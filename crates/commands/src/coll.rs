//! Helpers shared by the collection families: typed access to a key's object with Redis's
//! WRONGTYPE error, and deleting a collection that became empty (Redis never keeps empty ones).

use crate::error::ReplyError;
use shoal_keyspace::{Entry, Kind, Object, Shard};

/// Err(WRONGTYPE) unless the entry holds `kind`.
pub fn expect_kind(e: &Entry, kind: Kind) -> Result<(), ReplyError> {
    if e.kind() == kind {
        Ok(())
    } else {
        Err(ReplyError::WrongType)
    }
}

/// The entry's object, if it holds `kind`.
pub fn object_mut(e: &mut Entry, kind: Kind) -> Result<&mut Object, ReplyError> {
    expect_kind(e, kind)?;
    e.object_mut().ok_or(ReplyError::WrongType)
}

/// Removes `key` if its collection is empty. Returns true if removed.
pub fn remove_if_empty(shard: &mut Shard, db: usize, slot: u16, key: &[u8], now_ms: u64) -> bool {
    let empty = shard
        .peek(db, slot, key, now_ms)
        .and_then(|e| match e.value() {
            shoal_keyspace::ValueRef::Obj(o) if !matches!(o, Object::RawString(_)) => {
                Some(o.is_empty())
            }
            _ => None,
        })
        .unwrap_or(false);
    if empty {
        shard.remove(db, slot, key);
    }
    empty
}
