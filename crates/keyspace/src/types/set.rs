//! Set. Compact: `intset` (sorted integers). Large: `hashtable`.
//!
//! SCAFFOLD: the type is being implemented; this file only fixes the surface the keyspace uses.

use super::EncodingLimits;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Set {
    // Filled in by the implementation.
}

impl Set {
    pub fn new(_limits: &EncodingLimits) -> Self {
        Set::default()
    }

    pub fn len(&self) -> usize {
        0
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes held (running total, O(1)).
    pub fn mem_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
    }

    /// `OBJECT ENCODING` name.
    pub fn encoding(&self) -> &'static str {
        "listpack"
    }

    /// Appends the value's serialized form (codec body after the type byte).
    pub fn encode(&self, _out: &mut Vec<u8>) {}

    /// Parses a serialized form; `None` if malformed.
    pub fn decode(_b: &[u8], _limits: &EncodingLimits) -> Option<Self> {
        None
    }
}
