//! The compact key entry: one heap block per key holding its metadata, its key bytes and (for small
//! strings) its value bytes; the hash table stores only an 8-byte pointer to it.
//!
//! Why: memory per key is a headline figure (at most 0.7× Redis). Redis spends a dictEntry, an robj, a
//! key sds and a value sds per string key (about 168 bytes for a 16-byte key and 64-byte value). Here a
//! 16-byte key with a 64-byte value is one 94-byte block (96 in the allocator's size class) plus the
//! table slot.
//!
//! Block layout (the block is 8-aligned; multi-byte fields are little-endian, read unaligned):
//! ```text
//! 0   version      u64   HLC version of the last write (DESIGN.md §2)
//! 8   meta         u32   low 24 bits: access info for eviction (LRU clock or LFU counter),
//!                        high 8 bits: flags (F_EXPIRE, F_EXTVER, F_OBJECT, F_STALE)
//! 12  key_len      varint
//!     payload_len  varint  (inline value length, or 8 for an object pointer)
//!     expire_ms    u64   only if F_EXPIRE: absolute unix time in ms
//!     ext_version  u64   only if F_EXTVER: caller-supplied external version (SETIFNEWER)
//!     stale_ms     u64   only if F_STALE: absolute unix time in ms after which the value is
//!                        served marked stale until `expire_ms` (stale-while-revalidate)
//!     merge_node   u64   only if F_NODE: on an active-active member, the peer whose write made
//!                        `version` (absent: this member's own); see `merge::Compact`
//!     key bytes
//!     payload      inline string bytes, or a `*mut Object` (F_OBJECT), or a packed
//!                  `ColdHandle` (F_COLD: the value is on the disk tier)
//! ```
//! Optional fields cost nothing when absent; adding one rebuilds the block (rare: EXPIRE on a key
//! without TTL). Strings that get modified in place (APPEND, SETRANGE) move to a growable heap buffer,
//! which is also what Redis's `raw` encoding means.

use std::alloc::{Layout, alloc, dealloc};
use std::ptr::NonNull;

use crate::types::{bloom::Bloom, hash::Hash, list::List, set::Set, stream::Stream, zset::ZSet};

const F_EXPIRE: u8 = 1;
const F_EXTVER: u8 = 2;
const F_OBJECT: u8 = 4;
/// The value is on the disk tier: the payload is a packed [`ColdHandle`] (8 bytes).
const F_COLD: u8 = 8;
const F_STALE: u8 = 16;
/// The entry carries the node number of the peer that wrote it (active-active groups).
const F_NODE: u8 = 32;
const HEADER_BYTES: usize = 12;
const ACCESS_MASK: u32 = (1 << 24) - 1;

/// Largest string stored inline in the block; longer ones are too (a block has no size cap), but
/// Redis reports `embstr` only up to 44 bytes and we mirror its encoding names.
pub const EMBSTR_BYTES_MAX: usize = 44;

/// Values that live outside the entry block: modified strings and the collection types.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// A string that has been modified in place (APPEND, SETRANGE): growable, encoding `raw`.
    RawString(Vec<u8>),
    List(List),
    Hash(Hash),
    Set(Set),
    ZSet(ZSet),
    /// Boxed: a stream's header is larger than the other collections'.
    Stream(Box<Stream>),
    /// A scalable Bloom filter (RedisBloom's `MBbloom--` type); boxed, as it is rare.
    Bloom(Box<Bloom>),
}

impl Object {
    /// Heap bytes held by the object, for memory accounting. O(1): collections keep running totals.
    pub fn mem_bytes(&self) -> usize {
        std::mem::size_of::<Object>()
            + match self {
                Object::RawString(v) => v.capacity(),
                Object::List(l) => l.mem_bytes(),
                Object::Hash(h) => h.mem_bytes(),
                Object::Set(s) => s.mem_bytes(),
                Object::ZSet(z) => z.mem_bytes(),
                Object::Stream(s) => s.mem_bytes(),
                Object::Bloom(b) => b.mem_bytes(),
            }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Object::RawString(_) => Kind::String,
            Object::List(_) => Kind::List,
            Object::Hash(_) => Kind::Hash,
            Object::Set(_) => Kind::Set,
            Object::ZSet(_) => Kind::ZSet,
            Object::Stream(_) => Kind::Stream,
            Object::Bloom(_) => Kind::Bloom,
        }
    }

    /// Elements in a collection (1 for a string and a Bloom filter, which is never "empty": a
    /// reserved filter with no items stays).
    pub fn len(&self) -> usize {
        match self {
            Object::RawString(_) => 1,
            Object::List(l) => l.len(),
            Object::Hash(h) => h.len(),
            Object::Set(s) => s.len(),
            Object::ZSet(z) => z.len(),
            Object::Stream(s) => s.len(),
            Object::Bloom(_) => 1,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What freeing the object costs, in Redis's units (`lazyfreeGetFreeEffort`): 1 for a string
    /// or a compact encoding, else the allocations to free (a list's nodes, a hash table's or
    /// skip list's elements, a stream's nodes and its groups' pending entries). UNLINK frees a
    /// value in the background above an effort of 64, as Redis does.
    pub fn free_effort(&self) -> usize {
        match self {
            Object::RawString(_) | Object::Bloom(_) => 1,
            Object::List(l) => l.nodes_len(),
            Object::Hash(h) => compact_or(h.encoding(), h.len()),
            Object::Set(s) => compact_or(s.encoding(), s.len()),
            Object::ZSet(z) => compact_or(z.encoding(), z.len()),
            Object::Stream(s) => {
                s.node_count() + s.groups.values().map(|g| 1 + g.pel.len()).sum::<usize>()
            }
        }
    }
}

/// 1 for a compact encoding (one allocation), else `len`.
fn compact_or(encoding: &str, len: usize) -> usize {
    match encoding {
        "listpack" | "intset" | "ziplist" => 1,
        _ => len,
    }
}

/// Type of a value, as `TYPE` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    List,
    Hash,
    Set,
    ZSet,
    Stream,
    Bloom,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::List => "list",
            Kind::Hash => "hash",
            Kind::Set => "set",
            Kind::ZSet => "zset",
            Kind::Stream => "stream",
            // RedisBloom's module type name, which TYPE shows.
            Kind::Bloom => "MBbloom--",
        }
    }
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::String => 0,
            Kind::List => 1,
            Kind::Hash => 2,
            Kind::Set => 3,
            Kind::ZSet => 4,
            Kind::Stream => 5,
            Kind::Bloom => 6,
        }
    }

    fn from_code(c: u8) -> Kind {
        match c {
            1 => Kind::List,
            2 => Kind::Hash,
            3 => Kind::Set,
            4 => Kind::ZSet,
            5 => Kind::Stream,
            6 => Kind::Bloom,
            _ => Kind::String,
        }
    }
}

/// `OBJECT ENCODING` names a cold value keeps (by index, in 4 bits of its handle).
const COLD_ENCODINGS: [&str; 9] = [
    "raw",
    "int",
    "embstr",
    "listpack",
    "quicklist",
    "hashtable",
    "intset",
    "skiplist",
    "stream",
];

/// Where a value moved to the disk tier is: an id the tier stores it under, and what TYPE and
/// OBJECT ENCODING report without reading it. Packed in 8 bytes in the entry block: 56 bits of
/// id, 4 bits of kind, 4 bits of encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColdHandle {
    pub id: u64,
    pub kind: Kind,
    encoding: u8,
}

impl ColdHandle {
    /// Largest id a handle holds.
    pub const ID_MAX: u64 = (1 << 56) - 1;

    /// A handle for a value of `kind` whose `OBJECT ENCODING` is `encoding`.
    pub fn new(id: u64, kind: Kind, encoding: &str) -> ColdHandle {
        debug_assert!(id <= Self::ID_MAX);
        let encoding = COLD_ENCODINGS
            .iter()
            .position(|e| *e == encoding)
            .unwrap_or(0) as u8;
        ColdHandle {
            id: id & Self::ID_MAX,
            kind,
            encoding,
        }
    }

    pub fn encoding(&self) -> &'static str {
        COLD_ENCODINGS[self.encoding as usize]
    }

    fn pack(&self) -> u64 {
        self.id | (u64::from(self.kind.code()) << 56) | (u64::from(self.encoding) << 60)
    }

    fn unpack(v: u64) -> ColdHandle {
        ColdHandle {
            id: v & Self::ID_MAX,
            kind: Kind::from_code(((v >> 56) & 0xf) as u8),
            encoding: ((v >> 60) as u8).min(COLD_ENCODINGS.len() as u8 - 1),
        }
    }
}

/// A value as a command reads it.
#[derive(Debug, Clone, Copy)]
pub enum ValueRef<'a> {
    /// A string stored inline in the entry block.
    Str(&'a [u8]),
    Obj(&'a Object),
    /// On the disk tier: the value must be loaded (see `ARCHITECTURE.md`, disk tier) before a
    /// command reads it; commands never see this, the request fetches first.
    Cold(ColdHandle),
}

/// The payload when building an entry.
pub enum Payload<'a> {
    Inline(&'a [u8]),
    Object(Box<Object>),
    Cold(ColdHandle),
}

/// One key with its value and metadata; owns its heap block.
pub struct Entry {
    ptr: NonNull<u8>,
}

// SAFETY: an Entry uniquely owns its block and the Object it may point to; both are plain data.
unsafe impl Send for Entry {}
unsafe impl Sync for Entry {}

fn varint_len(mut v: usize) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Writes a LEB128 varint at `p`; returns bytes written.
///
/// # Safety
/// `p` must be valid for `varint_len(v)` bytes.
unsafe fn write_varint(p: *mut u8, mut v: usize) -> usize {
    let mut i = 0;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            unsafe { *p.add(i) = byte };
            return i + 1;
        }
        unsafe { *p.add(i) = byte | 0x80 };
        i += 1;
    }
}

/// # Safety
/// `p` must point at a varint written by `write_varint` inside a live block.
unsafe fn read_varint(p: *const u8) -> (usize, usize) {
    let mut v = 0usize;
    let mut shift = 0;
    let mut i = 0;
    loop {
        let b = unsafe { *p.add(i) };
        v |= ((b & 0x7f) as usize) << shift;
        i += 1;
        if b & 0x80 == 0 {
            return (v, i);
        }
        shift += 7;
    }
}

/// Offsets of the variable part of a block.
struct Offsets {
    key: usize,
    key_len: usize,
    payload: usize,
    payload_len: usize,
    expire: Option<usize>,
    extver: Option<usize>,
    stale: Option<usize>,
    node: Option<usize>,
}

/// The optional fields of a block.
#[derive(Clone, Copy, Default)]
struct Optional {
    expire_ms: Option<u64>,
    ext_version: Option<u64>,
    stale_ms: Option<u64>,
    merge_node: Option<u64>,
}

impl Offsets {
    fn total(&self) -> usize {
        self.payload + self.payload_len
    }
}

fn block_layout(size: usize) -> Layout {
    // Size is at least HEADER_BYTES + 2, never zero; align 8 for the leading u64. The size is
    // rounded up to a multiple of the alignment: allocators serve such requests from their plain
    // size classes, while an odd size with an alignment can take an over-allocating aligned path
    // (mimalloc turns a 94-byte request into a 112-byte block that way, a 96-byte one into 96).
    Layout::from_size_align(size.next_multiple_of(8), 8).expect("entry block layout")
}

/// Bytes of a block with these contents (before rounding to the allocation's layout).
fn block_size(key_len: usize, payload_len: usize, opt: &Optional) -> usize {
    let optional = [opt.expire_ms, opt.ext_version, opt.stale_ms, opt.merge_node]
        .iter()
        .filter(|f| f.is_some())
        .count();
    HEADER_BYTES
        + varint_len(key_len)
        + varint_len(payload_len)
        + 8 * optional
        + key_len
        + payload_len
}

/// Writes a block's header, optional fields and key at `p` and returns where its payload of
/// `payload_len` bytes goes. `flags` are the payload's (F_OBJECT, F_COLD); the optional fields'
/// flags are added here.
///
/// # Safety
/// `p` must be valid for `block_size(key.len(), payload_len, opt)` bytes and 8-aligned, and must
/// not overlap `key`.
unsafe fn write_block(
    p: *mut u8,
    key: &[u8],
    payload_len: usize,
    opt: &Optional,
    mut flags: u8,
    version: u64,
    access: u32,
) -> usize {
    for (field, flag) in [
        (opt.expire_ms, F_EXPIRE),
        (opt.ext_version, F_EXTVER),
        (opt.stale_ms, F_STALE),
        (opt.merge_node, F_NODE),
    ] {
        if field.is_some() {
            flags |= flag;
        }
    }
    unsafe {
        (p as *mut u64).write(version.to_le());
        let meta = (access & ACCESS_MASK) | ((flags as u32) << 24);
        (p.add(8) as *mut u32).write_unaligned(meta.to_le());
        let mut pos = HEADER_BYTES;
        pos += write_varint(p.add(pos), key.len());
        pos += write_varint(p.add(pos), payload_len);
        // The order of the optional fields is the block layout's (see the module header).
        for x in [opt.expire_ms, opt.ext_version, opt.stale_ms, opt.merge_node]
            .into_iter()
            .flatten()
        {
            (p.add(pos) as *mut u64).write_unaligned(x.to_le());
            pos += 8;
        }
        std::ptr::copy_nonoverlapping(key.as_ptr(), p.add(pos), key.len());
        pos + key.len()
    }
}

impl Entry {
    /// Builds an entry. `access` is the initial eviction access info (low 24 bits kept).
    pub fn new(
        key: &[u8],
        payload: Payload<'_>,
        expire_ms: Option<u64>,
        ext_version: Option<u64>,
        version: u64,
        access: u32,
    ) -> Entry {
        Entry::with_stale(key, payload, expire_ms, ext_version, None, version, access)
    }

    /// Builds an entry that may carry a stale-after deadline (`stale_ms`, stale-while-revalidate).
    pub fn with_stale(
        key: &[u8],
        payload: Payload<'_>,
        expire_ms: Option<u64>,
        ext_version: Option<u64>,
        stale_ms: Option<u64>,
        version: u64,
        access: u32,
    ) -> Entry {
        let opt = Optional {
            expire_ms,
            ext_version,
            stale_ms,
            merge_node: None,
        };
        Entry::build(key, payload, opt, version, access)
    }

    fn build(key: &[u8], payload: Payload<'_>, opt: Optional, version: u64, access: u32) -> Entry {
        let cold_bytes;
        let mut flags = 0u8;
        let (inline, object): (&[u8], Option<Box<Object>>) = match payload {
            Payload::Inline(b) => (b, None),
            Payload::Object(o) => (&[], Some(o)),
            Payload::Cold(h) => {
                flags |= F_COLD;
                cold_bytes = h.pack().to_le_bytes();
                (&cold_bytes[..], None)
            }
        };
        if object.is_some() {
            flags |= F_OBJECT;
        }
        let payload_len = if object.is_some() {
            std::mem::size_of::<*mut Object>()
        } else {
            inline.len()
        };
        let size = block_size(key.len(), payload_len, &opt);
        let layout = block_layout(size);
        // SAFETY: layout has non-zero size; `write_block` writes every byte up to `size`.
        unsafe {
            let raw = alloc(layout);
            let Some(ptr) = NonNull::new(raw) else {
                std::alloc::handle_alloc_error(layout);
            };
            let payload_at =
                write_block(ptr.as_ptr(), key, payload_len, &opt, flags, version, access);
            let p = ptr.as_ptr().add(payload_at);
            match object {
                Some(o) => (p as *mut *mut Object).write_unaligned(Box::into_raw(o)),
                None => std::ptr::copy_nonoverlapping(inline.as_ptr(), p, inline.len()),
            }
            debug_assert_eq!(payload_at + payload_len, size);
            Entry { ptr }
        }
    }

    /// Makes this entry a plain inline string of `key` (its own key: the caller found the entry
    /// by it) with `value`, a TTL of `expire_ms` and no other optional field, in the block it
    /// already has, if that block is one: no object or cold value to release, and the new
    /// contents' size rounds to the same allocation. Returns false, changing nothing, otherwise.
    /// A SET overwriting a key with a value of the same length (the usual cache refresh) then
    /// costs no allocation and no free, and the free would often be another worker's block.
    pub fn overwrite_string(
        &mut self,
        key: &[u8],
        value: &[u8],
        expire_ms: Option<u64>,
        version: u64,
        access: u32,
    ) -> bool {
        debug_assert_eq!(self.key(), key, "an entry is overwritten under its own key");
        if self.flags() & (F_OBJECT | F_COLD) != 0 {
            return false;
        }
        let opt = Optional {
            expire_ms,
            ..Optional::default()
        };
        let size = block_size(key.len(), value.len(), &opt);
        if block_layout(size) != block_layout(self.block_bytes()) {
            return false;
        }
        // SAFETY: the block is live, owned through `&mut self`, and its layout holds `size`
        // bytes; `key` and `value` are the caller's slices, never inside this block (the key is
        // compared above, not borrowed from it).
        unsafe {
            let p = self.ptr.as_ptr();
            let payload_at = write_block(p, key, value.len(), &opt, 0, version, access);
            std::ptr::copy_nonoverlapping(value.as_ptr(), p.add(payload_at), value.len());
        }
        true
    }

    /// A string entry with an inline value.
    pub fn new_string(key: &[u8], value: &[u8], expire_ms: Option<u64>, version: u64) -> Entry {
        Entry::new(key, Payload::Inline(value), expire_ms, None, version, 0)
    }

    fn flags(&self) -> u8 {
        (self.meta() >> 24) as u8
    }

    fn meta(&self) -> u32 {
        // SAFETY: bytes 8..12 of a live block are the meta word.
        u32::from_le(unsafe { (self.ptr.as_ptr().add(8) as *const u32).read_unaligned() })
    }

    fn set_meta(&mut self, meta: u32) {
        // SAFETY: as in `meta`; we own the block mutably.
        unsafe { (self.ptr.as_ptr().add(8) as *mut u32).write_unaligned(meta.to_le()) }
    }

    fn offsets(&self) -> Offsets {
        let flags = self.flags();
        let p = self.ptr.as_ptr();
        // SAFETY: the varints were written by `new` right after the header.
        let (key_len, a) = unsafe { read_varint(p.add(HEADER_BYTES)) };
        let (payload_len, b) = unsafe { read_varint(p.add(HEADER_BYTES + a)) };
        let mut pos = HEADER_BYTES + a + b;
        let expire = if flags & F_EXPIRE != 0 {
            pos += 8;
            Some(pos - 8)
        } else {
            None
        };
        let extver = if flags & F_EXTVER != 0 {
            pos += 8;
            Some(pos - 8)
        } else {
            None
        };
        let stale = if flags & F_STALE != 0 {
            pos += 8;
            Some(pos - 8)
        } else {
            None
        };
        let node = if flags & F_NODE != 0 {
            pos += 8;
            Some(pos - 8)
        } else {
            None
        };
        Offsets {
            key: pos,
            key_len,
            payload: pos + key_len,
            payload_len,
            expire,
            extver,
            stale,
            node,
        }
    }

    fn optional(&self) -> Optional {
        Optional {
            expire_ms: self.expire_ms(),
            ext_version: self.ext_version(),
            stale_ms: self.stale_ms(),
            merge_node: self.merge_node(),
        }
    }

    fn read_u64_at(&self, off: usize) -> u64 {
        // SAFETY: callers pass offsets computed by `offsets()` for this block.
        u64::from_le(unsafe { (self.ptr.as_ptr().add(off) as *const u64).read_unaligned() })
    }

    fn write_u64_at(&mut self, off: usize, v: u64) {
        // SAFETY: as in `read_u64_at`.
        unsafe { (self.ptr.as_ptr().add(off) as *mut u64).write_unaligned(v.to_le()) }
    }

    /// Asks the CPU to bring the entry's block (key, access field) into cache, so a caller
    /// looking at several entries waits for their misses together. Only a hint.
    #[inline]
    pub fn prefetch(&self) {
        crate::prefetch::fetch(self.ptr.as_ptr() as usize);
    }

    /// [`Entry::prefetch`] of the block's first two cache lines (a small value's bytes are
    /// usually on the second), for a walk that reads the value too.
    #[inline]
    pub fn prefetch_with_value(&self) {
        crate::prefetch::fetch(self.ptr.as_ptr() as usize);
        crate::prefetch::fetch(self.ptr.as_ptr() as usize + 64);
    }

    pub fn key(&self) -> &[u8] {
        let o = self.offsets();
        // SAFETY: key bytes lie inside the block, which lives as long as &self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(o.key), o.key_len) }
    }

    pub fn version(&self) -> u64 {
        u64::from_le(unsafe { (self.ptr.as_ptr() as *const u64).read() })
    }

    pub fn set_version(&mut self, v: u64) {
        debug_assert!(v >= self.version(), "versions of a key only grow");
        unsafe { (self.ptr.as_ptr() as *mut u64).write(v.to_le()) }
    }

    /// Eviction access info (24 bits).
    pub fn access(&self) -> u32 {
        self.meta() & ACCESS_MASK
    }

    pub fn set_access(&mut self, a: u32) {
        let meta = (self.meta() & !ACCESS_MASK) | (a & ACCESS_MASK);
        self.set_meta(meta);
    }

    pub fn expire_ms(&self) -> Option<u64> {
        self.offsets().expire.map(|o| self.read_u64_at(o))
    }

    pub fn ext_version(&self) -> Option<u64> {
        self.offsets().extver.map(|o| self.read_u64_at(o))
    }

    /// The stale-after deadline (stale-while-revalidate): from then until its expiry the value is
    /// still served, marked stale to the readers that ask (GETLEASE).
    pub fn stale_ms(&self) -> Option<u64> {
        self.offsets().stale.map(|o| self.read_u64_at(o))
    }

    /// On an active-active member: the peer whose write made this version (`None`: this member).
    pub fn merge_node(&self) -> Option<u64> {
        self.offsets().node.map(|o| self.read_u64_at(o))
    }

    /// Sets or clears the peer that wrote this version. Adding or removing it rebuilds the block.
    pub fn set_merge_node(&mut self, node: Option<u64>) {
        let o = self.offsets();
        match (o.node, node) {
            (Some(off), Some(n)) => self.write_u64_at(off, n),
            (None, None) => {}
            _ => self.rebuild(Optional {
                merge_node: node,
                ..self.optional()
            }),
        }
    }

    /// Whether the value is past its stale-after deadline (and not yet expired).
    pub fn is_stale(&self, now_ms: u64) -> bool {
        matches!(self.stale_ms(), Some(t) if t <= now_ms) && !self.is_expired(now_ms)
    }

    pub fn is_expired(&self, now_ms: u64) -> bool {
        matches!(self.expire_ms(), Some(t) if t <= now_ms)
    }

    fn object_ptr(&self) -> Option<*mut Object> {
        if self.flags() & F_OBJECT == 0 {
            return None;
        }
        let o = self.offsets();
        // SAFETY: F_OBJECT blocks store a Box<Object> pointer as their payload.
        Some(unsafe { (self.ptr.as_ptr().add(o.payload) as *const *mut Object).read_unaligned() })
    }

    pub fn value(&self) -> ValueRef<'_> {
        if self.flags() & F_COLD != 0 {
            let o = self.offsets();
            return ValueRef::Cold(ColdHandle::unpack(self.read_u64_at(o.payload)));
        }
        match self.object_ptr() {
            // SAFETY: the object is owned by this entry and lives as long as it.
            Some(obj) => ValueRef::Obj(unsafe { &*obj }),
            None => {
                let o = self.offsets();
                ValueRef::Str(unsafe {
                    std::slice::from_raw_parts(self.ptr.as_ptr().add(o.payload), o.payload_len)
                })
            }
        }
    }

    pub fn object_mut(&mut self) -> Option<&mut Object> {
        // SAFETY: unique access to the entry gives unique access to its object.
        self.object_ptr().map(|p| unsafe { &mut *p })
    }

    pub fn kind(&self) -> Kind {
        match self.value() {
            ValueRef::Str(_) => Kind::String,
            ValueRef::Obj(o) => o.kind(),
            ValueRef::Cold(h) => h.kind,
        }
    }

    /// The handle of a value on the disk tier; `None` for a value in memory.
    pub fn cold(&self) -> Option<ColdHandle> {
        match self.value() {
            ValueRef::Cold(h) => Some(h),
            _ => None,
        }
    }

    /// The bytes of a string value, whatever its encoding; `None` for other types.
    pub fn string(&self) -> Option<&[u8]> {
        match self.value() {
            ValueRef::Str(s) => Some(s),
            ValueRef::Obj(Object::RawString(v)) => Some(v),
            ValueRef::Obj(_) | ValueRef::Cold(_) => None,
        }
    }

    /// `OBJECT ENCODING` name.
    pub fn encoding(&self) -> &'static str {
        match self.value() {
            ValueRef::Str(s) => {
                if s.len() <= 20 && parse_canonical_i64(s).is_some() {
                    "int"
                } else if s.len() <= EMBSTR_BYTES_MAX {
                    "embstr"
                } else {
                    "raw"
                }
            }
            ValueRef::Obj(Object::RawString(_)) => "raw",
            ValueRef::Obj(Object::List(l)) => l.encoding(),
            ValueRef::Obj(Object::Hash(h)) => h.encoding(),
            ValueRef::Obj(Object::Set(s)) => s.encoding(),
            ValueRef::Obj(Object::ZSet(z)) => z.encoding(),
            ValueRef::Obj(Object::Stream(s)) => s.encoding(),
            // Redis reports a module value's encoding as raw.
            ValueRef::Obj(Object::Bloom(_)) => "raw",
            ValueRef::Cold(h) => h.encoding(),
        }
    }

    /// Where the block is: tests tell a block rewritten in place from a new one by it.
    #[cfg(test)]
    pub(crate) fn block_addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// Size of the block in bytes.
    pub fn block_bytes(&self) -> usize {
        self.offsets().total()
    }

    /// [`Object::free_effort`] of the value (1 for an inline string or a cold value).
    pub fn free_effort(&self) -> usize {
        // SAFETY: the object is owned by this entry and lives as long as `&self`.
        self.object_ptr()
            .map_or(1, |p| unsafe { (*p).free_effort() })
    }

    /// Memory charged to this entry: its block, its table slot (8 bytes + 1 control byte) and the
    /// object it owns.
    pub fn mem_bytes(&self) -> usize {
        self.block_bytes() + 9 + self.object_ptr().map_or(0, |p| unsafe { (*p).mem_bytes() })
    }

    /// Sets or clears the expiry. Adding or removing the field rebuilds the block.
    pub fn set_expire_ms(&mut self, expire_ms: Option<u64>) {
        let o = self.offsets();
        match (o.expire, expire_ms) {
            (Some(off), Some(t)) => self.write_u64_at(off, t),
            (None, None) => {}
            _ => self.rebuild(Optional {
                expire_ms,
                ..self.optional()
            }),
        }
    }

    pub fn set_ext_version(&mut self, ext: Option<u64>) {
        let o = self.offsets();
        match (o.extver, ext) {
            (Some(off), Some(x)) => self.write_u64_at(off, x),
            (None, None) => {}
            _ => self.rebuild(Optional {
                ext_version: ext,
                ..self.optional()
            }),
        }
    }

    /// Sets or clears the stale-after deadline (stale-while-revalidate).
    pub fn set_stale_ms(&mut self, stale_ms: Option<u64>) {
        let o = self.offsets();
        match (o.stale, stale_ms) {
            (Some(off), Some(t)) => self.write_u64_at(off, t),
            (None, None) => {}
            _ => self.rebuild(Optional {
                stale_ms,
                ..self.optional()
            }),
        }
    }

    /// Replaces the value, keeping key, expiry, external version, version and access info.
    pub fn set_payload(&mut self, payload: Payload<'_>) {
        // An inline string replaced by one of the same length (INCR of most counters) is
        // overwritten where it is: no new block, same memory.
        if let Payload::Inline(bytes) = &payload
            && self.object_ptr().is_none()
            && self.flags() & F_COLD == 0
        {
            let o = self.offsets();
            if o.payload_len == bytes.len() {
                // SAFETY: the block holds `payload_len` inline bytes at `payload`, and `&mut self`
                // gives unique access to them.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        bytes.as_ptr(),
                        self.ptr.as_ptr().add(o.payload),
                        bytes.len(),
                    );
                }
                return;
            }
        }
        let new = Entry::build(
            self.key(),
            payload,
            self.optional(),
            self.version(),
            self.access(),
        );
        *self = new;
    }

    /// Turns an inline string into a growable `raw` string (before APPEND/SETRANGE) and returns it;
    /// `None` if the value is not a string.
    pub fn make_raw_string(&mut self) -> Option<&mut Vec<u8>> {
        if let ValueRef::Str(s) = self.value() {
            let v = s.to_vec();
            self.set_payload(Payload::Object(Box::new(Object::RawString(v))));
        }
        match self.object_mut() {
            Some(Object::RawString(v)) => Some(v),
            _ => None,
        }
    }

    /// Rebuilds the block with a different set of optional fields, moving the payload.
    fn rebuild(&mut self, opt: Optional) {
        let obj = self.object_ptr();
        let new = match obj {
            // SAFETY: ownership of the object moves to the new block; the old block is then freed
            // without dropping it (see below).
            Some(p) => Entry::build(
                self.key(),
                Payload::Object(unsafe { Box::from_raw(p) }),
                opt,
                self.version(),
                self.access(),
            ),
            None => {
                let payload = match self.value() {
                    ValueRef::Str(s) => Payload::Inline(s),
                    ValueRef::Cold(h) => Payload::Cold(h),
                    ValueRef::Obj(_) => unreachable!("inline payload"),
                };
                Entry::build(self.key(), payload, opt, self.version(), self.access())
            }
        };
        let old = std::mem::replace(self, new);
        // SAFETY: the old block's object (if any) now belongs to the new block; free only the block.
        unsafe { old.free_block_only() };
    }

    unsafe fn free_block_only(self) {
        let size = self.block_bytes();
        let p = self.ptr.as_ptr();
        std::mem::forget(self);
        unsafe { dealloc(p, block_layout(size)) };
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(obj) = self.object_ptr() {
            // SAFETY: the entry owns the object; it is dropped exactly once, here.
            drop(unsafe { Box::from_raw(obj) });
        }
        let size = self.block_bytes();
        // SAFETY: the block was allocated with this layout in `new`.
        unsafe { dealloc(self.ptr.as_ptr(), block_layout(size)) };
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("key", &String::from_utf8_lossy(self.key()))
            .field("version", &self.version())
            .field("expire_ms", &self.expire_ms())
            .finish()
    }
}

/// Parses a string as Redis's `string2ll` does: canonical decimal i64 (no leading zeros or '+', no
/// spaces, "-0" rejected).
pub fn parse_canonical_i64(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (neg, digits) = match s[0] {
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || digits[0] == b'0' {
        return None;
    }
    let mut v: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((b - b'0') as u64)?;
    }
    if neg {
        if v > i64::MAX as u64 + 1 {
            None
        } else {
            Some((v as i64).wrapping_neg())
        }
    } else {
        i64::try_from(v).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_all_fields() {
        let mut e = Entry::new_string(b"key", b"value", None, 42);
        assert_eq!(e.key(), b"key");
        assert_eq!(e.string(), Some(&b"value"[..]));
        assert_eq!(e.expire_ms(), None);
        assert_eq!(e.version(), 42);
        e.set_access(0xABCDEF);
        e.set_expire_ms(Some(1234));
        assert_eq!(e.expire_ms(), Some(1234));
        assert_eq!(e.access(), 0xABCDEF);
        e.set_ext_version(Some(9));
        e.set_expire_ms(Some(99));
        assert_eq!((e.expire_ms(), e.ext_version()), (Some(99), Some(9)));
        e.set_expire_ms(None);
        assert_eq!((e.expire_ms(), e.ext_version()), (None, Some(9)));
        assert_eq!(e.key(), b"key");
        assert_eq!(e.string(), Some(&b"value"[..]));
        e.set_version(43);
        assert_eq!(e.version(), 43);
    }

    #[test]
    fn an_overwrite_reuses_the_block_only_when_it_fits_the_same_allocation() {
        let mut e = Entry::new(b"key", Payload::Inline(b"12345678"), None, Some(7), 1, 3);
        let at = e.ptr;
        // Same size class, the external version dropped and a TTL added: rewritten in place.
        assert!(e.overwrite_string(b"key", b"abcdefgh", Some(500), 2, 9));
        assert_eq!(e.ptr, at);
        assert_eq!(e.string(), Some(&b"abcdefgh"[..]));
        assert_eq!(
            (e.expire_ms(), e.ext_version(), e.stale_ms()),
            (Some(500), None, None)
        );
        assert_eq!((e.version(), e.access(), e.key()), (2, 9, &b"key"[..]));
        // A value one byte longer rounds to the same 8-byte layout (33 and 34 bytes: 40).
        assert!(e.overwrite_string(b"key", b"abcdefghi", Some(600), 3, 9));
        assert_eq!(
            (e.string(), e.expire_ms()),
            (Some(&b"abcdefghi"[..]), Some(600))
        );
        // Another layout (the TTL's 8 bytes gone, a longer value), an object or a cold value:
        // refused, nothing changed.
        assert!(!e.overwrite_string(b"key", b"abcdefghi", None, 4, 9));
        assert!(!e.overwrite_string(b"key", &[b'x'; 40], Some(600), 4, 9));
        assert_eq!((e.string(), e.version()), (Some(&b"abcdefghi"[..]), 3));
        let mut o = Entry::new(
            b"key",
            Payload::Object(Box::new(Object::RawString(b"abcdefg".to_vec()))),
            None,
            None,
            1,
            0,
        );
        assert!(!o.overwrite_string(b"key", b"12345678", None, 2, 0));
        assert_eq!(o.kind(), Kind::String);
        assert_eq!(o.encoding(), "raw");
        let mut c = Entry::new(
            b"key",
            Payload::Cold(ColdHandle::new(5, Kind::String, "embstr")),
            None,
            None,
            1,
            0,
        );
        assert!(!c.overwrite_string(b"key", b"12345678", None, 2, 0));
        assert!(c.cold().is_some());
    }

    #[test]
    fn the_stale_deadline_survives_rebuilds_and_payload_changes() {
        let mut e = Entry::with_stale(
            b"k",
            Payload::Inline(b"v"),
            Some(200),
            None,
            Some(100),
            5,
            0,
        );
        assert_eq!((e.expire_ms(), e.stale_ms()), (Some(200), Some(100)));
        assert!(!e.is_stale(99) && e.is_stale(100) && !e.is_stale(200));
        e.set_ext_version(Some(3));
        e.set_expire_ms(None);
        e.set_payload(Payload::Inline(b"longer value"));
        assert_eq!(
            (e.expire_ms(), e.ext_version(), e.stale_ms()),
            (None, Some(3), Some(100))
        );
        e.set_stale_ms(Some(150));
        assert_eq!(e.stale_ms(), Some(150));
        e.set_stale_ms(None);
        assert_eq!((e.stale_ms(), e.ext_version()), (None, Some(3)));
        assert_eq!(e.string(), Some(&b"longer value"[..]));
        assert_eq!(
            e.block_bytes(),
            Entry::new_string(b"k", b"longer value", None, 5).block_bytes() + 8
        );
    }

    #[test]
    fn a_same_length_inline_payload_is_overwritten_in_its_block() {
        let mut e = Entry::new_string(b"counter", b"19", Some(7), 3);
        let (block, mem) = (e.ptr, e.mem_bytes());
        e.set_payload(Payload::Inline(b"20"));
        assert_eq!(e.ptr, block, "same block");
        assert_eq!(e.mem_bytes(), mem);
        assert_eq!(e.string(), Some(&b"20"[..]));
        assert_eq!(
            (e.key(), e.expire_ms(), e.version()),
            (&b"counter"[..], Some(7), 3)
        );
        // A longer value needs a new block; the metadata moves with it.
        e.set_payload(Payload::Inline(b"100"));
        assert_eq!(e.string(), Some(&b"100"[..]));
        assert_eq!(
            (e.key(), e.expire_ms(), e.version()),
            (&b"counter"[..], Some(7), 3)
        );
    }

    #[test]
    fn sixteen_byte_key_sixty_four_byte_value_fits_96_bytes() {
        let e = Entry::new_string(&[b'k'; 16], &[b'v'; 64], None, 1);
        assert!(e.block_bytes() <= 96, "{}", e.block_bytes());
    }

    #[test]
    fn a_cold_entry_keeps_metadata_in_38_bytes_for_a_16_byte_key() {
        let mut e = Entry::new(
            &[b'k'; 16],
            Payload::Inline(&[b'v'; 200]),
            Some(99),
            Some(7),
            5,
            3,
        );
        let h = ColdHandle::new(ColdHandle::ID_MAX, Kind::String, "raw");
        e.set_payload(Payload::Cold(h));
        assert_eq!(e.cold(), Some(h));
        assert_eq!(e.kind(), Kind::String);
        assert_eq!(e.encoding(), "raw");
        assert_eq!(
            (e.expire_ms(), e.ext_version(), e.version()),
            (Some(99), Some(7), 5)
        );
        assert!(e.string().is_none());
        // Without expiry or external version: 12 header + 2 varints + 16 key + 8 handle.
        let mut bare = Entry::new(&[b'k'; 16], Payload::Inline(b"x"), None, None, 1, 0);
        let h = ColdHandle::new(42, Kind::Hash, "listpack");
        bare.set_payload(Payload::Cold(h));
        assert_eq!(bare.block_bytes(), 38);
        assert_eq!((bare.kind(), bare.encoding()), (Kind::Hash, "listpack"));
        // Adding an expiry rebuilds the block and keeps the handle.
        bare.set_expire_ms(Some(10));
        assert_eq!(bare.cold(), Some(h));
        // A value written over it is hot again.
        bare.set_payload(Payload::Inline(b"hot"));
        assert_eq!((bare.cold(), bare.string()), (None, Some(&b"hot"[..])));
    }

    #[test]
    fn raw_strings_grow_in_place_and_keep_metadata() {
        let mut e = Entry::new_string(b"k", b"ab", Some(5), 1);
        e.make_raw_string().unwrap().extend_from_slice(b"cd");
        assert_eq!(e.string(), Some(&b"abcd"[..]));
        assert_eq!(e.encoding(), "raw");
        e.set_expire_ms(None);
        e.set_ext_version(Some(3));
        assert_eq!(e.string(), Some(&b"abcd"[..]));
        assert_eq!(e.expire_ms(), None);
    }

    #[test]
    fn large_keys_use_multibyte_varints() {
        let key = vec![b'x'; 300];
        let val = vec![b'y'; 70_000];
        let e = Entry::new_string(&key, &val, Some(1), 1);
        assert_eq!(e.key(), &key[..]);
        assert_eq!(e.string().unwrap().len(), 70_000);
    }

    #[test]
    fn encodings_follow_redis() {
        assert_eq!(Entry::new_string(b"k", b"123", None, 1).encoding(), "int");
        assert_eq!(
            Entry::new_string(b"k", b"0123", None, 1).encoding(),
            "embstr"
        );
        assert_eq!(
            Entry::new_string(b"k", &[b'a'; 45], None, 1).encoding(),
            "raw"
        );
        assert_eq!(parse_canonical_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_canonical_i64(b"9223372036854775808"), None);
        assert_eq!(parse_canonical_i64(b"-0"), None);
    }
}
