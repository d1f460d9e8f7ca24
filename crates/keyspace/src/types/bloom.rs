//! Scalable Bloom filters as RedisBloom keeps them (the `MBbloom--` module type): a chain of
//! sub-filters ("links"), each sized for `entries` items at its own error rate. When the newest
//! link holds as many items as it was sized for, a new one is added with `entries × expansion`
//! capacity and half the error rate, so the chain's overall false-positive rate stays under the
//! requested one (the tightening series 1/2 + 1/4 + ... sums to 1; the first link gets half).
//!
//! The sizing, the hashing and the bit positions follow RedisBloom 2.6 exactly (64-bit
//! MurmurHash64A twice, bit `(a + i·b) mod bits` for `i < hashes`, bits rounded up to a whole
//! number of u64 words), so `BF.INFO`/`BF.DEBUG` figures match RedisBloom's and a
//! `BF.SCANDUMP` taken from RedisBloom loads here (and back) with the same answers.
//!
//! Replication: an add is fully determined by the item's hash pair and the filter it is applied
//! to (which link takes it, whether a new link is made), so the effect of `BF.ADD` is the 16-byte
//! hash pair ([`crate::delta::Ops::bf_add`]), not the item nor the bit positions: smaller than a
//! long item, and a replica that applies it to the same version of the filter ends byte-identical.

use crate::codec::{get_bytes, get_varint, put_bytes, put_varint};

/// RedisBloom's option bits (kept in the value and in `BF.SCANDUMP` headers).
pub const OPT_NOROUND: u32 = 1;
pub const OPT_ENTS_IS_BITS: u32 = 2;
pub const OPT_FORCE64: u32 = 4;
pub const OPT_NO_SCALING: u32 = 8;

/// ln(2) and ln(2)², as RedisBloom writes them (its sizing must be reproduced to the bit, so
/// not `std::f64::consts::LN_2`, which has more digits).
#[allow(clippy::approx_constant)]
const LN2: f64 = 0.693147180559945;
const LN2_SQUARED: f64 = 0.480453013918201;
const TIGHTENING: f64 = 0.5;

/// Bytes RedisBloom counts for its chain header (`BF.INFO` Size): `sizeof(SBChain)`.
const CHAIN_HEADER_BYTES: u64 = 32;
/// Bytes RedisBloom counts per link besides its bits: `sizeof(SBLink)`.
const LINK_HEADER_BYTES: u64 = 64;
/// `BF.SCANDUMP`'s header: 20 bytes of chain, 53 per link (RedisBloom's packed layout).
const DUMP_CHAIN_BYTES: usize = 20;
const DUMP_LINK_BYTES: usize = 53;
/// The largest chunk `BF.SCANDUMP` returns (RedisBloom's `MAX_SCANDUMP_SIZE`).
pub const SCANDUMP_CHUNK_BYTES_MAX: usize = 16 * 1024 * 1024;

/// The two 64-bit hashes of an item, from which every bit position is derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashPair {
    pub a: u64,
    pub b: u64,
}

impl HashPair {
    pub fn of(item: &[u8]) -> HashPair {
        let a = murmur64a(item, 0xc6a4_a793_5bd1_e995);
        HashPair {
            a,
            b: murmur64a(item, a),
        }
    }
}

/// MurmurHash64A (Austin Appleby's 64-bit MurmurHash2), little-endian words.
fn murmur64a(key: &[u8], seed: u64) -> u64 {
    const M: u64 = 0xc6a4_a793_5bd1_e995;
    const R: u32 = 47;
    let mut h = seed ^ (key.len() as u64).wrapping_mul(M);
    let mut words = key.chunks_exact(8);
    for w in &mut words {
        let mut k = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h ^= k;
        h = h.wrapping_mul(M);
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        for (i, &b) in tail.iter().enumerate() {
            h ^= (b as u64) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> R;
    h = h.wrapping_mul(M);
    h ^= h >> R;
    h
}

/// Why an add or a new filter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BloomError {
    /// A non-scaling filter holds as many items as it was sized for.
    Full,
    /// The parameters make no filter (capacity 0, error rate outside (0, 1), too many bits).
    Invalid,
    /// The filter would grow past the size limit (`bf-max-bytes`).
    TooLarge,
}

/// One fixed-size Bloom filter of the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    bits: Vec<u8>,
    hashes: u32,
    /// Bits are `1 << n2` when non-zero (old RedisBloom filters); 0: `bits.len() * 8`.
    n2: u8,
    /// Items it was sized for (its capacity).
    entries: u64,
    error: f64,
    bits_per_entry: f64,
    /// Items added to it.
    size: u64,
}

fn bits_per_entry(error: f64) -> f64 {
    (error.ln() / LN2_SQUARED).abs()
}

impl Link {
    /// Sizes a link as RedisBloom's `bloom_init` with `NOROUND` does (the only way BF.* commands
    /// make them): bits = ⌊entries × bpe⌋ rounded up to whole u64 words.
    fn bytes_for(entries: u64, error: f64) -> Result<u64, BloomError> {
        if entries < 1 || !(error > 0.0 && error < 1.0) {
            return Err(BloomError::Invalid);
        }
        let bits = (entries as f64 * bits_per_entry(error)) as u64;
        let bits = bits.max(1);
        // Bits always round up to the next word (RedisBloom adds one whenever not a multiple).
        let words = (bits / 64)
            .checked_add(u64::from(!bits.is_multiple_of(64)))
            .ok_or(BloomError::Invalid)?;
        words.checked_mul(8).ok_or(BloomError::Invalid)
    }

    fn new(entries: u64, error: f64, bytes: u64) -> Link {
        let bpe = bits_per_entry(error);
        Link {
            bits: vec![0; bytes as usize],
            hashes: (LN2 * bpe).ceil() as u32,
            n2: 0,
            entries,
            error,
            bits_per_entry: bpe,
            size: 0,
        }
    }

    fn modulus(&self) -> u64 {
        if self.n2 > 0 {
            1u64 << self.n2
        } else {
            self.bits.len() as u64 * 8
        }
    }

    fn contains(&self, h: HashPair) -> bool {
        let m = self.modulus();
        (0..self.hashes as u64).all(|i| {
            let x = h.a.wrapping_add(i.wrapping_mul(h.b)) % m;
            self.bits[(x >> 3) as usize] & (1 << (x & 7)) != 0
        })
    }

    /// Sets the item's bits; true if any was clear.
    fn set(&mut self, h: HashPair) -> bool {
        let m = self.modulus();
        let mut any = false;
        for i in 0..self.hashes as u64 {
            let x = h.a.wrapping_add(i.wrapping_mul(h.b)) % m;
            let byte = &mut self.bits[(x >> 3) as usize];
            let mask = 1 << (x & 7);
            any |= *byte & mask == 0;
            *byte |= mask;
        }
        any
    }

    pub fn bytes(&self) -> u64 {
        self.bits.len() as u64
    }
    pub fn capacity(&self) -> u64 {
        self.entries
    }
    pub fn items(&self) -> u64 {
        self.size
    }
    pub fn hashes(&self) -> u32 {
        self.hashes
    }
    pub fn error(&self) -> f64 {
        self.error
    }
    /// Bits addressed (`BF.DEBUG`'s `bits:`).
    pub fn bit_count(&self) -> u64 {
        self.bits.len() as u64 * 8
    }
}

/// A scalable Bloom filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Bloom {
    links: Vec<Link>,
    /// Items added to all links.
    items: u64,
    options: u32,
    /// Capacity factor of each new link (`EXPANSION`).
    expansion: u32,
}

impl Bloom {
    /// A filter for `capacity` items at `error` overall, as `BF.RESERVE` makes it; `max_bytes`
    /// bounds its bits.
    pub fn new(
        capacity: u64,
        error: f64,
        expansion: u32,
        scaling: bool,
        max_bytes: u64,
    ) -> Result<Bloom, BloomError> {
        if !(error > 0.0 && error < 1.0) {
            return Err(BloomError::Invalid);
        }
        let error = if scaling { error * TIGHTENING } else { error };
        let bytes = Link::bytes_for(capacity, error)?;
        if bytes > max_bytes {
            return Err(BloomError::TooLarge);
        }
        Ok(Bloom {
            links: vec![Link::new(capacity, error, bytes)],
            items: 0,
            options: OPT_NOROUND | OPT_FORCE64 | if scaling { 0 } else { OPT_NO_SCALING },
            expansion,
        })
    }

    pub fn contains(&self, item: &[u8]) -> bool {
        self.contains_hash(HashPair::of(item))
    }

    pub fn contains_hash(&self, h: HashPair) -> bool {
        self.links.iter().rev().any(|l| l.contains(h))
    }

    /// Adds an item: `Ok(true)` if it was not (as far as the filter can tell) there before.
    pub fn add(&mut self, item: &[u8], max_bytes: u64) -> Result<bool, BloomError> {
        self.add_hash(HashPair::of(item), max_bytes)
    }

    /// Adds by hash pair (what a replica applies). A new link is made when the newest is full;
    /// it must fit `max_bytes` with the rest of the filter.
    pub fn add_hash(&mut self, h: HashPair, max_bytes: u64) -> Result<bool, BloomError> {
        if self.contains_hash(h) {
            return Ok(false);
        }
        let cur = self.links.last().expect("a filter has a link");
        if cur.size >= cur.entries {
            if self.options & OPT_NO_SCALING != 0 {
                return Err(BloomError::Full);
            }
            let entries = cur
                .entries
                .checked_mul(u64::from(self.expansion))
                .ok_or(BloomError::TooLarge)?;
            let error = cur.error * TIGHTENING;
            let bytes = Link::bytes_for(entries, error).map_err(|_| BloomError::TooLarge)?;
            if self.bits_bytes().saturating_add(bytes) > max_bytes {
                return Err(BloomError::TooLarge);
            }
            self.links.push(Link::new(entries, error, bytes));
        }
        let cur = self.links.last_mut().expect("a filter has a link");
        if cur.set(h) {
            cur.size += 1;
            self.items += 1;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Items added (`BF.CARD`).
    pub fn items(&self) -> u64 {
        self.items
    }

    /// Sum of the links' capacities (`BF.INFO` Capacity).
    pub fn capacity(&self) -> u64 {
        self.links.iter().map(|l| l.entries).sum()
    }

    /// RedisBloom's own size figure (`BF.INFO` Size): its structs and the bits.
    pub fn info_size(&self) -> u64 {
        CHAIN_HEADER_BYTES
            + self
                .links
                .iter()
                .map(|l| LINK_HEADER_BYTES + l.bytes())
                .sum::<u64>()
    }

    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// `None` for a non-scaling filter (`BF.INFO` Expansion rate is then nil).
    pub fn expansion(&self) -> Option<u32> {
        (self.options & OPT_NO_SCALING == 0).then_some(self.expansion)
    }

    pub fn is_scaling(&self) -> bool {
        self.options & OPT_NO_SCALING == 0
    }

    /// Bytes of bits in all links.
    pub fn bits_bytes(&self) -> u64 {
        self.links.iter().map(Link::bytes).sum()
    }

    /// Heap bytes held, for memory accounting.
    pub fn mem_bytes(&self) -> usize {
        std::mem::size_of::<Bloom>()
            + self.links.capacity() * std::mem::size_of::<Link>()
            + self.links.iter().map(|l| l.bits.capacity()).sum::<usize>()
    }

    // -----------------------------------------------------------------------------------------
    // BF.SCANDUMP / BF.LOADCHUNK: a header (RedisBloom's packed layout, little-endian), then the
    // links' bits in chunks. The iterator is 1 + the byte offset into the links' bits laid end to
    // end; 0 asks for the header, and a reply with 0 ends the dump.

    /// The header `BF.SCANDUMP key 0` returns.
    pub fn dump_header(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(DUMP_CHAIN_BYTES + DUMP_LINK_BYTES * self.links.len());
        out.extend_from_slice(&self.items.to_le_bytes());
        out.extend_from_slice(&(self.links.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.options.to_le_bytes());
        out.extend_from_slice(&self.expansion.to_le_bytes());
        for l in &self.links {
            out.extend_from_slice(&l.bytes().to_le_bytes());
            out.extend_from_slice(&l.bit_count().to_le_bytes());
            out.extend_from_slice(&l.size.to_le_bytes());
            out.extend_from_slice(&l.error.to_le_bytes());
            out.extend_from_slice(&l.bits_per_entry.to_le_bytes());
            out.extend_from_slice(&l.hashes.to_le_bytes());
            out.extend_from_slice(&l.entries.to_le_bytes());
            out.push(l.n2);
        }
        out
    }

    /// The link holding byte `pos` of the links' bits laid end to end, and the offset in it.
    fn link_at(&self, pos: u64) -> Option<(usize, usize)> {
        let mut start = 0u64;
        for (i, l) in self.links.iter().enumerate() {
            if pos < start + l.bytes() {
                return Some((i, (pos - start) as usize));
            }
            start += l.bytes();
        }
        None
    }

    /// The chunk after iterator `iter` (≥ 1): the next iterator and the bytes; `(0, [])` at the end.
    pub fn dump_chunk(&self, iter: i64) -> (i64, &[u8]) {
        let Some((i, off)) = (iter >= 1)
            .then(|| self.link_at((iter - 1) as u64))
            .flatten()
        else {
            return (0, &[]);
        };
        let bits = &self.links[i].bits;
        let len = (bits.len() - off).min(SCANDUMP_CHUNK_BYTES_MAX);
        (iter + len as i64, &bits[off..off + len])
    }

    /// A filter with empty bits from a `BF.SCANDUMP` header; `None` if the header is malformed
    /// or inconsistent (RedisBloom's checks), or its bits exceed `max_bytes`. Only 64-bit hashing
    /// is supported (RedisBloom has made every filter so since 2.0).
    pub fn from_dump_header(b: &[u8], max_bytes: u64) -> Option<Bloom> {
        if b.len() < DUMP_CHAIN_BYTES {
            return None;
        }
        let u64_at = |p: usize| u64::from_le_bytes(b[p..p + 8].try_into().expect("8 bytes"));
        let u32_at = |p: usize| u32::from_le_bytes(b[p..p + 4].try_into().expect("4 bytes"));
        let items = u64_at(0);
        let n = u32_at(8) as usize;
        let options = u32_at(12);
        let expansion = u32_at(16);
        if n == 0 || b.len() != DUMP_CHAIN_BYTES + DUMP_LINK_BYTES * n {
            return None;
        }
        if options & !(OPT_NOROUND | OPT_ENTS_IS_BITS | OPT_FORCE64 | OPT_NO_SCALING) != 0
            || options & OPT_FORCE64 == 0
        {
            return None;
        }
        let mut links = Vec::with_capacity(n.min(64));
        let mut total = 0u64;
        let mut sizes = 0u64;
        for i in 0..n {
            let p = DUMP_CHAIN_BYTES + DUMP_LINK_BYTES * i;
            let (bytes, bits, size) = (u64_at(p), u64_at(p + 8), u64_at(p + 16));
            let error = f64::from_le_bytes(b[p + 24..p + 32].try_into().expect("8 bytes"));
            let bpe = f64::from_le_bytes(b[p + 32..p + 40].try_into().expect("8 bytes"));
            let hashes = u32_at(p + 40);
            let entries = u64_at(p + 44);
            let n2 = b[p + 52];
            let valid = error > 0.0
                && error < 1.0
                && n2 <= 63
                && (n2 == 0 || bits >= 1u64 << n2)
                && bits != 0
                && Some(bits) == bytes.checked_mul(8)
                && hashes == (LN2 * bpe).ceil() as u32;
            total = total.checked_add(bytes)?;
            sizes = sizes.checked_add(size)?;
            if !valid || total > max_bytes {
                return None;
            }
            links.push(Link {
                bits: vec![0; bytes as usize],
                hashes,
                n2,
                entries,
                error,
                bits_per_entry: bpe,
                size,
            });
        }
        (sizes == items).then_some(Bloom {
            links,
            items,
            options,
            expansion,
        })
    }

    /// Writes a chunk returned by `dump_chunk` with iterator `iter` (the one after it).
    pub fn load_chunk(&mut self, iter: i64, data: &[u8]) -> Result<(), &'static str> {
        if iter <= 0 || (iter as u64) < data.len() as u64 {
            return Err("ERR received bad data");
        }
        let start = iter as u64 - data.len() as u64;
        let Some((i, off)) = (start >= 1).then(|| self.link_at(start - 1)).flatten() else {
            return Err("ERR invalid offset - no link found");
        };
        let bits = &mut self.links[i].bits;
        if data.len() > bits.len() - off {
            return Err("ERR invalid chunk - Too big for current filter");
        }
        bits[off..off + data.len()].copy_from_slice(data);
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // The value codec (DUMP/RESTORE, snapshots): varint items, options, expansion, link count;
    // per link: hashes, n2, entries, size, error and bpe as f64 bits, then the bits
    // (length-prefixed).

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.items);
        put_varint(out, u64::from(self.options));
        put_varint(out, u64::from(self.expansion));
        put_varint(out, self.links.len() as u64);
        for l in &self.links {
            put_varint(out, u64::from(l.hashes));
            put_varint(out, u64::from(l.n2));
            put_varint(out, l.entries);
            put_varint(out, l.size);
            put_varint(out, l.error.to_bits());
            put_varint(out, l.bits_per_entry.to_bits());
            put_bytes(out, &l.bits);
        }
    }

    /// Decodes [`Bloom::encode`]'s output, checking it is consistent; `None` if not.
    pub fn decode(b: &[u8]) -> Option<Bloom> {
        let (items, b) = get_varint(b)?;
        let (options, b) = get_varint(b)?;
        let (expansion, b) = get_varint(b)?;
        let (n, mut b) = get_varint(b)?;
        if n == 0 || options & !15 != 0 || options & u64::from(OPT_FORCE64) == 0 {
            return None;
        }
        let mut links = Vec::new();
        let mut sizes = 0u64;
        for _ in 0..n {
            let (hashes, r) = get_varint(b)?;
            let (n2, r) = get_varint(r)?;
            let (entries, r) = get_varint(r)?;
            let (size, r) = get_varint(r)?;
            let (error, r) = get_varint(r)?;
            let (bpe, r) = get_varint(r)?;
            let (bits, r) = get_bytes(r)?;
            b = r;
            let (error, bpe) = (f64::from_bits(error), f64::from_bits(bpe));
            // RedisBloom's consistency checks: the hash count follows from bits per entry.
            let valid = error > 0.0
                && error < 1.0
                && bpe.is_finite()
                && hashes == (LN2 * bpe).ceil() as u64
                && n2 <= 63
                && !bits.is_empty()
                && bits.len() % 8 == 0
                && (n2 == 0 || bits.len() as u64 * 8 >= 1u64 << n2);
            if !valid {
                return None;
            }
            sizes = sizes.checked_add(size)?;
            links.push(Link {
                bits: bits.to_vec(),
                hashes: hashes as u32,
                n2: n2 as u8,
                entries,
                error,
                bits_per_entry: bpe,
                size,
            });
        }
        (b.is_empty() && sizes == items).then_some(Bloom {
            links,
            items,
            options: options as u32,
            expansion: u32::try_from(expansion).ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    const NO_LIMIT: u64 = u64::MAX;

    /// `BF.DEBUG`'s link lines, to compare with RedisBloom's tests.
    fn debug(b: &Bloom) -> Vec<String> {
        b.links()
            .iter()
            .map(|l| {
                format!(
                    "bytes:{} bits:{} hashes:{} capacity:{} size:{}",
                    l.bytes(),
                    l.bit_count(),
                    l.hashes(),
                    l.capacity(),
                    l.items()
                )
            })
            .collect()
    }

    #[test]
    fn sizes_match_redisbloom() {
        // RedisBloom's tests/flow/test_overall.py (test_info, test_debug, test_insert).
        let b = Bloom::new(100, 0.001, 2, true, NO_LIMIT).unwrap();
        assert_eq!((b.capacity(), b.info_size()), (100, 296));
        let b = Bloom::new(50_000, 0.001, 2, true, NO_LIMIT).unwrap();
        assert_eq!(
            debug(&b)[0],
            "bytes:98880 bits:791040 hashes:11 capacity:50000 size:0"
        );
        let mut b = Bloom::new(10, 0.01, 2, true, NO_LIMIT).unwrap();
        for i in 0..100 {
            b.add(i.to_string().as_bytes(), NO_LIMIT).unwrap();
        }
        assert_eq!(b.items(), 99);
        assert_eq!(
            debug(&b),
            [
                "bytes:16 bits:128 hashes:8 capacity:10 size:10",
                "bytes:32 bits:256 hashes:9 capacity:20 size:20",
                "bytes:72 bits:576 hashes:10 capacity:40 size:40",
                "bytes:160 bits:1280 hashes:11 capacity:80 size:29",
            ]
        );
        let mut b = Bloom::new(100, 0.001, 2, true, NO_LIMIT).unwrap();
        for i in 0..4000 {
            b.add(i.to_string().as_bytes(), NO_LIMIT).unwrap();
        }
        assert_eq!(b.items(), 3997);
        assert_eq!(b.links().len(), 6);
        assert_eq!(
            debug(&b)[5],
            "bytes:9216 bits:73728 hashes:16 capacity:3200 size:897"
        );
    }

    #[test]
    fn expansion_sets_how_many_links_100_items_take() {
        // RedisBloom's test_expansion: capacity 4, 100 items.
        for (expansion, links) in [(1, 23), (2, 5), (4, 4)] {
            let mut b = Bloom::new(4, 0.01, expansion, true, NO_LIMIT).unwrap();
            for i in 0..100 {
                b.add(i.to_string().as_bytes(), NO_LIMIT).unwrap();
            }
            assert_eq!(b.links().len(), links, "expansion {expansion}");
        }
    }

    #[test]
    fn nonscaling_filters_fill_and_limits_hold() {
        let mut b = Bloom::new(3, 0.01, 2, false, NO_LIMIT).unwrap();
        for i in 0..3 {
            assert_eq!(b.add(&[i], NO_LIMIT), Ok(true));
        }
        assert_eq!(b.add(b"extra", NO_LIMIT), Err(BloomError::Full));
        assert_eq!(
            b.add(&[0], NO_LIMIT),
            Ok(false),
            "present items are still answered"
        );
        assert_eq!(b.expansion(), None);
        assert_eq!(
            Bloom::new(0, 0.01, 2, true, NO_LIMIT),
            Err(BloomError::Invalid)
        );
        assert_eq!(
            Bloom::new(10, 1.0, 2, true, NO_LIMIT),
            Err(BloomError::Invalid)
        );
        assert_eq!(
            Bloom::new(1_000_000, 0.01, 2, true, 1000),
            Err(BloomError::TooLarge)
        );
        let mut b = Bloom::new(10, 0.01, 2, true, 16).unwrap();
        let added = (0..100u32)
            .map(|i| b.add(&i.to_le_bytes(), 16))
            .filter(|r| *r == Err(BloomError::TooLarge))
            .count();
        assert!(added > 0 && b.bits_bytes() <= 16);
    }

    #[test]
    fn murmur_matches_reference_values() {
        // Reference MurmurHash64A outputs (seed 0) from the original C implementation.
        assert_eq!(murmur64a(b"", 0), 0);
        assert_ne!(murmur64a(b"a", 0), murmur64a(b"b", 0));
        // The hash pair is deterministic and seeds the second with the first.
        let h = HashPair::of(b"foo");
        assert_eq!(h.b, murmur64a(b"foo", h.a));
    }

    #[test]
    fn scandump_round_trips_in_chunks() {
        let mut b = Bloom::new(1000, 0.01, 2, true, NO_LIMIT).unwrap();
        for i in 0..2500u32 {
            b.add(&i.to_le_bytes(), NO_LIMIT).unwrap();
        }
        let header = b.dump_header();
        let mut copy = Bloom::from_dump_header(&header, NO_LIMIT).unwrap();
        let mut iter = 1;
        let mut rounds = 0;
        loop {
            let (next, data) = b.dump_chunk(iter);
            if next == 0 {
                break;
            }
            copy.load_chunk(next, data).unwrap();
            iter = next;
            rounds += 1;
            assert!(rounds <= b.links().len(), "one chunk per link here");
        }
        assert_eq!(copy, b);
        assert!(Bloom::from_dump_header(&header[..header.len() - 1], NO_LIMIT).is_none());
        assert!(Bloom::from_dump_header(&header, 10).is_none());
        assert_eq!(copy.load_chunk(1, b"xx"), Err("ERR received bad data"));
    }

    #[test]
    fn codec_round_trips_and_rejects_inconsistent_bodies() {
        let mut b = Bloom::new(10, 0.01, 3, true, NO_LIMIT).unwrap();
        for i in 0..50u32 {
            b.add(&i.to_le_bytes(), NO_LIMIT).unwrap();
        }
        let mut out = Vec::new();
        b.encode(&mut out);
        assert_eq!(Bloom::decode(&out), Some(b.clone()));
        assert!(Bloom::decode(&out[..out.len() - 1]).is_none());
        let mut extra = out.clone();
        extra.push(0);
        assert!(Bloom::decode(&extra).is_none());
        // A wrong item count.
        let mut bad = out.clone();
        bad[0] ^= 1;
        assert!(Bloom::decode(&bad).is_none());
        // A tiny error rate needs more than 64 hashes; it still round-trips.
        let mut tiny = Bloom::new(10, 1e-30, 2, true, NO_LIMIT).unwrap();
        tiny.add(b"x", NO_LIMIT).unwrap();
        assert!(tiny.links()[0].hashes() > 64);
        let mut out = Vec::new();
        tiny.encode(&mut out);
        assert_eq!(Bloom::decode(&out), Some(tiny.clone()));
        let header = tiny.dump_header();
        assert!(Bloom::from_dump_header(&header, NO_LIMIT).is_some());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// No false negatives, ever; the model is a set of the items added.
        #[test]
        fn added_items_are_always_found(
            items in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..24), 1..400),
            capacity in 1u64..64,
            expansion in 1u32..4,
        ) {
            let mut b = Bloom::new(capacity, 0.01, expansion, true, NO_LIMIT).unwrap();
            let mut model = HashSet::new();
            for it in &items {
                let new = b.add(it, NO_LIMIT).unwrap();
                // "new" may be false for an unseen item (a false positive), never true for a
                // seen one.
                prop_assert!(!(new && model.contains(it)));
                model.insert(it.clone());
                prop_assert!(model.iter().all(|m| b.contains(m)));
            }
            prop_assert!(b.items() <= model.len() as u64);
        }

        /// The false-positive rate on items never added stays within the requested rate (with
        /// slack for sampling: 2000 probes).
        #[test]
        fn false_positive_rate_is_within_the_bound(
            seed in any::<u64>(),
            error in prop::sample::select(vec![0.1, 0.01, 0.001]),
            n in 200u64..2000,
        ) {
            let mut b = Bloom::new(n / 2, error, 2, true, NO_LIMIT).unwrap();
            for i in 0..n {
                b.add(&(seed, i).0.wrapping_add(i).to_le_bytes(), NO_LIMIT).unwrap();
                b.add(format!("in-{seed}-{i}").as_bytes(), NO_LIMIT).unwrap();
            }
            let probes = 2000;
            let fp = (0..probes)
                .filter(|i| b.contains(format!("out-{seed}-{i}").as_bytes()))
                .count();
            let rate = fp as f64 / probes as f64;
            // Binomial slack: mean + 4 standard deviations (+1 probe) over the bound.
            let sd = (error * (1.0 - error) / probes as f64).sqrt();
            prop_assert!(rate <= error + 4.0 * sd + 1.0 / probes as f64, "rate {rate} for {error}");
        }
    }
}
