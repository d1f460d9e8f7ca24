//! Bitmaps: SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP, BITFIELD and BITFIELD_RO, on string values as
//! Redis 7.0 has them (`bitops.c`): bit 0 is the most significant bit of byte 0, a string read
//! past its end reads as zeros, and a write past its end pads it with zero bytes. Writes change
//! the string in place and hand the stream only the bytes they changed (a SETRANGE effect), so a
//! SETBIT on a 512 MB bitmap costs a byte on the wire, not the bitmap.

use crate::args::{ERR_NOT_INTEGER, ERR_SYNTAX, parse_i64};
use crate::keyspec::{FindKeys, key::*};
use crate::notify;
use crate::strings::{ExpireOpt, store_string};
use crate::table::{Group, KeySpec, Spec, flag::*};
use crate::{Args, CmdResult, Ctx, ReplyError};

const BM: Group = Group::Bitmap;

pub static COMMANDS: &[Spec] = &[
    Spec {
        name: "bitcount",
        arity: -2,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: BM,
        since: "2.6.0",
        summary: "Counts the number of set bits (population counting) in a string.",
        complexity: "O(N)",
        handler: Some(bitcount),
        ..Spec::DEFAULT
    },
    Spec {
        name: "bitfield",
        arity: -2,
        flags: WRITE | DENYOOM,
        keys: &[KeySpec::at(1, RW | UPDATE | ACCESS | VARIABLE_FLAGS)
            .notes("This command allows both access and modification of the key")],
        key_flags: Some(bitfield_key_flags),
        group: BM,
        since: "3.2.0",
        summary: "Performs arbitrary bitfield integer operations on strings.",
        complexity: "O(1) for each subcommand specified",
        handler: Some(bitfield),
        ..Spec::DEFAULT
    },
    Spec {
        name: "bitfield_ro",
        arity: -2,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: BM,
        since: "6.0.0",
        summary: "Performs arbitrary read-only bitfield integer operations on strings.",
        complexity: "O(1) for each subcommand specified",
        handler: Some(bitfield_ro),
        ..Spec::DEFAULT
    },
    Spec {
        name: "bitop",
        arity: -4,
        flags: WRITE | DENYOOM,
        keys: &[
            KeySpec::at(2, OW | UPDATE),
            KeySpec::at(3, RO | ACCESS).find(FindKeys::Range {
                last_key: -1,
                step: 1,
                limit: 0,
            }),
        ],
        group: BM,
        since: "2.6.0",
        summary: "Performs bitwise operations on multiple strings, and stores the result.",
        complexity: "O(N)",
        handler: Some(bitop),
        ..Spec::DEFAULT
    },
    Spec {
        name: "bitpos",
        arity: -3,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: BM,
        since: "2.8.7",
        summary: "Finds the first set (1) or clear (0) bit in a string.",
        complexity: "O(N)",
        handler: Some(bitpos),
        ..Spec::DEFAULT
    },
    Spec {
        name: "getbit",
        arity: 3,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: BM,
        since: "2.2.0",
        summary: "Returns a bit value by offset.",
        complexity: "O(1)",
        handler: Some(getbit),
        ..Spec::DEFAULT
    },
    Spec {
        name: "setbit",
        arity: 4,
        flags: WRITE | DENYOOM,
        keys: &[KeySpec::at(1, RW | ACCESS | UPDATE)],
        group: BM,
        since: "2.2.0",
        summary: "Sets or clears the bit at offset of the string value. Creates the key if it doesn't exist.",
        complexity: "O(1)",
        handler: Some(setbit),
        ..Spec::DEFAULT
    },
];

const ERR_BIT_OFFSET: ReplyError =
    ReplyError::err_static("bit offset is not an integer or out of range");
const ERR_BIT_VALUE: ReplyError = ReplyError::err_static("bit is not an integer or out of range");
const ERR_BITFIELD_TYPE: ReplyError = ReplyError::err_static(
    "Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.",
);

fn max_string_bytes(ctx: &Ctx<'_>) -> u64 {
    ctx.srv
        .hot
        .proto_max_bulk_bytes
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// A bit offset as Redis's `getBitOffsetFromArgument`: a non-negative integer whose byte lies
/// below `proto-max-bulk-len`; with `bits`, `#N` means the N-th field of that width (BITFIELD).
fn bit_offset(ctx: &Ctx<'_>, arg: &[u8], bits: Option<u32>) -> Result<u64, ReplyError> {
    let (hash, digits) = match (arg.first(), bits) {
        (Some(b'#'), Some(_)) => (true, &arg[1..]),
        _ => (false, arg),
    };
    let mut n = parse_i64(digits).ok_or(ERR_BIT_OFFSET)?;
    if hash {
        n = n.wrapping_mul(bits.unwrap_or(1) as i64);
    }
    if n < 0 || (n >> 3) as u64 >= max_string_bytes(ctx) {
        return Err(ERR_BIT_OFFSET);
    }
    Ok(n as u64)
}

/// Redis's `getLongLongFromObjectOrReply` on an argument.
fn int_arg(arg: &[u8]) -> Result<i64, ReplyError> {
    parse_i64(arg).ok_or(ERR_NOT_INTEGER)
}

fn get_bit(s: &[u8], offset: u64) -> bool {
    s.get((offset >> 3) as usize)
        .is_some_and(|b| b >> (7 - (offset & 7)) & 1 == 1)
}

/// Sets the bit in a string long enough to hold it.
fn put_bit(s: &mut [u8], offset: u64, on: bool) {
    let (byte, shift) = ((offset >> 3) as usize, 7 - (offset & 7));
    s[byte] = (s[byte] & !(1 << shift)) | ((on as u8) << shift);
}

fn setbit(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let offset = bit_offset(ctx, args.get(2), None)?;
    let on = match parse_i64(args.get(3)) {
        Some(v) if v & !1 == 0 => v == 1,
        _ => return Err(ERR_BIT_VALUE),
    };
    let key = args.get(1);
    let byte = (offset >> 3) as usize;
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let (mut shard, slot) = ctx.shard(key);
    // Taken under the lock: later writes to a key get larger versions.
    let version = ctx.version();
    let found = match shard.lookup(db, slot, key, now, true) {
        Some(mut e) => {
            let cur = e.string().ok_or(ReplyError::WrongType)?;
            let (old, len) = (get_bit(cur, offset), cur.len());
            // As Redis: nothing is written when the string already holds the bit.
            let changed = byte >= len || old != on;
            if changed {
                let mut ops = e.ops();
                let s = e.make_raw_string().ok_or(ReplyError::WrongType)?;
                if s.len() <= byte {
                    s.resize(byte + 1, 0);
                }
                put_bit(s, offset, on);
                ops.setrange(byte, &s[byte..=byte]);
                e.note(ops);
                e.set_version(version);
            }
            Some((old, changed))
        }
        None => None,
    };
    let (old, changed) = match found {
        Some(found) => found,
        None => {
            let mut s = vec![0u8; byte + 1];
            put_bit(&mut s, offset, on);
            store_string(&mut shard, db, slot, key, &s, ExpireOpt::None, version, now);
            (false, true)
        }
    };
    drop(shard);
    if changed {
        ctx.notify(notify::STRING, "setbit", key);
    }
    ctx.out.int(old as i64);
    Ok(())
}

fn getbit(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let offset = bit_offset(ctx, args.get(2), None)?;
    let (mut shard, slot) = ctx.shard(args.get(1));
    let bit = match shard.lookup_read(ctx.client.db, slot, args.get(1), ctx.now_ms) {
        Some(e) => get_bit(e.string().ok_or(ReplyError::WrongType)?, offset),
        None => false,
    };
    drop(shard);
    ctx.out.int(bit as i64);
    Ok(())
}

/// A `start end [BYTE|BIT]` range resolved as Redis's BITCOUNT/BITPOS do: the byte range to
/// scan, and for BIT ranges the bits of its first and last bytes that lie outside (masks with
/// those bits set).
struct ByteRange {
    start: i64,
    end: i64,
    first_mask: u8,
    last_mask: u8,
}

fn resolve_range(len: usize, start: i64, end: i64, bits: bool) -> ByteRange {
    let total = if bits { (len as i64) << 3 } else { len as i64 };
    let mut start = if start < 0 { total + start } else { start };
    let mut end = if end < 0 { total + end } else { end };
    start = start.max(0);
    end = end.max(0);
    if end >= total {
        end = total - 1;
    }
    let (mut first_mask, mut last_mask) = (0u8, 0u8);
    if bits && start <= end {
        first_mask = !(((1u16 << (8 - (start & 7))) - 1) as u8);
        last_mask = ((1u16 << (7 - (end & 7))) - 1) as u8;
        start >>= 3;
        end >>= 3;
    }
    ByteRange {
        start,
        end,
        first_mask,
        last_mask,
    }
}

fn bit_unit(arg: &[u8]) -> Result<bool, ReplyError> {
    if arg.eq_ignore_ascii_case(b"bit") {
        Ok(true)
    } else if arg.eq_ignore_ascii_case(b"byte") {
        Ok(false)
    } else {
        Err(ERR_SYNTAX)
    }
}

fn popcount(s: &[u8]) -> u64 {
    let (chunks, rest) = s.as_chunks::<8>();
    let words: u64 = chunks
        .iter()
        .map(|c| u64::from_ne_bytes(*c).count_ones() as u64)
        .sum();
    words + rest.iter().map(|b| b.count_ones() as u64).sum::<u64>()
}

fn bitcount(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (mut shard, slot) = ctx.shard(args.get(1));
    // Redis looks the key up first: a missing key counts 0 whatever the other arguments say.
    let Some(e) = shard.lookup_read(ctx.client.db, slot, args.get(1), ctx.now_ms) else {
        drop(shard);
        ctx.out.int(0);
        return Ok(());
    };
    let s = e.string().ok_or(ReplyError::WrongType)?;
    let range = match args.len() {
        4 | 5 => {
            let start = int_arg(args.get(2))?;
            let end = int_arg(args.get(3))?;
            if start < 0 && end < 0 && start > end {
                drop(e);
                drop(shard);
                ctx.out.int(0);
                return Ok(());
            }
            let bits = if args.len() == 5 {
                bit_unit(args.get(4))?
            } else {
                false
            };
            resolve_range(s.len(), start, end, bits)
        }
        2 => resolve_range(s.len(), 0, -1, false),
        _ => return Err(ERR_SYNTAX),
    };
    let count = if range.start > range.end {
        0
    } else {
        let (start, end) = (range.start as usize, range.end as usize);
        let mut n = popcount(&s[start..=end]);
        n -= (s[start] & range.first_mask).count_ones() as u64;
        n -= (s[end] & range.last_mask).count_ones() as u64;
        n
    };
    drop(e);
    drop(shard);
    ctx.out.int(count as i64);
    Ok(())
}

/// Position of the first bit equal to `bit` in `s` (Redis's `redisBitpos`): for a clear bit not
/// found, the first bit past the end (the string reads as zeros beyond it); for a set bit, -1.
fn first_bit(s: &[u8], bit: bool) -> i64 {
    let skip = if bit { 0x00 } else { 0xff };
    match s.iter().position(|&b| b != skip) {
        Some(i) => {
            let b = if bit { s[i] } else { !s[i] };
            (i as i64) * 8 + b.leading_zeros() as i64
        }
        None if bit => -1,
        None => (s.len() as i64) * 8,
    }
}

fn bitpos(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let bit = match parse_i64(args.get(2)) {
        Some(b @ (0 | 1)) => b == 1,
        Some(_) => {
            return Err(ReplyError::err_static("The bit argument must be 1 or 0."));
        }
        None => return Err(ERR_NOT_INTEGER),
    };
    let (mut shard, slot) = ctx.shard(args.get(1));
    let Some(e) = shard.lookup_read(ctx.client.db, slot, args.get(1), ctx.now_ms) else {
        drop(shard);
        ctx.out.int(if bit { -1 } else { 0 });
        return Ok(());
    };
    let s = e.string().ok_or(ReplyError::WrongType)?;
    let mut end_given = false;
    let range = match args.len() {
        4..=6 => {
            let start = int_arg(args.get(3))?;
            let bits = if args.len() == 6 {
                bit_unit(args.get(5))?
            } else {
                false
            };
            let end = if args.len() >= 5 {
                end_given = true;
                int_arg(args.get(4))?
            } else if bits {
                ((s.len() as i64) << 3) + 7
            } else {
                s.len() as i64 - 1
            };
            resolve_range(s.len(), start, end, bits)
        }
        3 => resolve_range(s.len(), 0, -1, false),
        _ => return Err(ERR_SYNTAX),
    };
    let pos = if range.start > range.end {
        -1
    } else {
        // The range's bytes, with the bits outside a BIT range forced to the value not sought.
        let (start, end) = (range.start as usize, range.end as usize);
        let force = |byte: u8, mask: u8| if bit { byte & !mask } else { byte | mask };
        let bytes = end - start + 1;
        let found = if range.first_mask == 0 && range.last_mask == 0 {
            first_bit(&s[start..=end], bit)
        } else {
            let mut window = s[start..=end].to_vec();
            window[0] = force(window[0], range.first_mask);
            window[bytes - 1] = force(window[bytes - 1], range.last_mask);
            first_bit(&window, bit)
        };
        // A clear bit sought in an explicit range that holds none: not past the end.
        if (end_given && !bit && found == (bytes as i64) * 8) || found == -1 {
            -1
        } else {
            found + (start as i64) * 8
        }
    };
    drop(e);
    drop(shard);
    ctx.out.int(pos);
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum BitOp {
    And,
    Or,
    Xor,
    Not,
}

fn bitop(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let name = args.get(1);
    let op = if name.eq_ignore_ascii_case(b"and") {
        BitOp::And
    } else if name.eq_ignore_ascii_case(b"or") {
        BitOp::Or
    } else if name.eq_ignore_ascii_case(b"xor") {
        BitOp::Xor
    } else if name.eq_ignore_ascii_case(b"not") {
        BitOp::Not
    } else {
        return Err(ERR_SYNTAX);
    };
    if op == BitOp::Not && args.len() != 4 {
        return Err(ReplyError::err_static(
            "BITOP NOT must be called with a single source key.",
        ));
    }
    let target = args.get(2);
    let sources = args.tail(3);
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let mut locked = ctx.lock_keys(std::iter::once(target).chain(sources.iter()));
    // Taken under the lock: later writes to a key get larger versions.
    let version = ctx.version();
    let mut values: Vec<Option<Vec<u8>>> = Vec::with_capacity(sources.len());
    for key in sources.iter() {
        let (shard, slot) = locked.shard(key);
        match shard.lookup_read(db, slot, key, now) {
            Some(e) => values.push(Some(e.string().ok_or(ReplyError::WrongType)?.to_vec())),
            None => values.push(None),
        }
    }
    let max = values.iter().flatten().map(Vec::len).max().unwrap_or(0);
    let (shard, slot) = locked.shard(target);
    if max == 0 {
        if shard.lookup(db, slot, target, now, false).is_some() {
            shard.remove(db, slot, target);
            shard.note(notify::GENERIC, "del", db, target);
        }
    } else {
        let byte_of =
            |v: &Option<Vec<u8>>, i: usize| v.as_ref().and_then(|v| v.get(i).copied()).unwrap_or(0);
        let mut out = vec![0u8; max];
        for (i, o) in out.iter_mut().enumerate() {
            let mut acc = byte_of(&values[0], i);
            for v in &values[1..] {
                let b = byte_of(v, i);
                match op {
                    BitOp::And => acc &= b,
                    BitOp::Or => acc |= b,
                    BitOp::Xor => acc ^= b,
                    BitOp::Not => {}
                }
            }
            *o = if op == BitOp::Not { !acc } else { acc };
        }
        store_string(shard, db, slot, target, &out, ExpireOpt::None, version, now);
        shard.note(notify::STRING, "set", db, target);
    }
    drop(locked);
    ctx.out.int(max as i64);
    Ok(())
}

/// BITFIELD's key is only read when every subcommand is a GET (Redis's `bitfieldGetKeys`).
fn bitfield_key_flags(args: &Args<'_>) -> u32 {
    let mut i = 2;
    while i < args.len() {
        let a = args.get(i);
        if a.eq_ignore_ascii_case(b"get") {
            i += 3;
        } else if a.eq_ignore_ascii_case(b"set") || a.eq_ignore_ascii_case(b"incrby") {
            return RW | ACCESS | UPDATE;
        } else {
            i += 1;
        }
    }
    RO | ACCESS
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Overflow {
    Wrap,
    Sat,
    Fail,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FieldOp {
    Get,
    Set(i64),
    IncrBy(i64),
}

#[derive(Clone, Copy)]
struct Field {
    op: FieldOp,
    signed: bool,
    bits: u32,
    offset: u64,
    overflow: Overflow,
}

/// `i8`..`i64` or `u1`..`u63` (a 64-bit unsigned value would not fit RESP's integers).
fn field_type(arg: &[u8]) -> Result<(bool, u32), ReplyError> {
    let signed = match arg.first() {
        Some(b'i') => true,
        Some(b'u') => false,
        _ => return Err(ERR_BITFIELD_TYPE),
    };
    match parse_i64(&arg[1..]) {
        Some(b) if b >= 1 && (b <= 63 || (signed && b == 64)) => Ok((signed, b as u32)),
        _ => Err(ERR_BITFIELD_TYPE),
    }
}

fn parse_fields(ctx: &Ctx<'_>, args: &Args<'_>) -> Result<Vec<Field>, ReplyError> {
    let mut fields = Vec::new();
    let mut overflow = Overflow::Wrap;
    let mut j = 2;
    while j < args.len() {
        let remaining = args.len() - j - 1;
        let sub = args.get(j);
        let op = if sub.eq_ignore_ascii_case(b"get") && remaining >= 2 {
            FieldOp::Get
        } else if sub.eq_ignore_ascii_case(b"set") && remaining >= 3 {
            FieldOp::Set(0)
        } else if sub.eq_ignore_ascii_case(b"incrby") && remaining >= 3 {
            FieldOp::IncrBy(0)
        } else if sub.eq_ignore_ascii_case(b"overflow") && remaining >= 1 {
            let kind = args.get(j + 1);
            overflow = if kind.eq_ignore_ascii_case(b"wrap") {
                Overflow::Wrap
            } else if kind.eq_ignore_ascii_case(b"sat") {
                Overflow::Sat
            } else if kind.eq_ignore_ascii_case(b"fail") {
                Overflow::Fail
            } else {
                return Err(ReplyError::err_static("Invalid OVERFLOW type specified"));
            };
            j += 2;
            continue;
        } else {
            return Err(ERR_SYNTAX);
        };
        let (signed, bits) = field_type(args.get(j + 1))?;
        let offset = bit_offset(ctx, args.get(j + 2), Some(bits))?;
        let op = match op {
            FieldOp::Get => FieldOp::Get,
            FieldOp::Set(_) => FieldOp::Set(int_arg(args.get(j + 3))?),
            FieldOp::IncrBy(_) => FieldOp::IncrBy(int_arg(args.get(j + 3))?),
        };
        fields.push(Field {
            op,
            signed,
            bits,
            offset,
            overflow,
        });
        j += if op == FieldOp::Get { 3 } else { 4 };
    }
    Ok(fields)
}

fn get_unsigned(s: &[u8], offset: u64, bits: u32) -> u64 {
    (0..bits as u64).fold(0u64, |v, j| (v << 1) | get_bit(s, offset + j) as u64)
}

fn get_signed(s: &[u8], offset: u64, bits: u32) -> i64 {
    let v = get_unsigned(s, offset, bits);
    if bits < 64 && v >> (bits - 1) & 1 == 1 {
        (v | (u64::MAX << bits)) as i64
    } else {
        v as i64
    }
}

fn set_unsigned(s: &mut [u8], offset: u64, bits: u32, value: u64) {
    for j in 0..bits as u64 {
        put_bit(s, offset + j, value >> (bits as u64 - 1 - j) & 1 == 1);
    }
}

/// Redis's `checkUnsignedBitfieldOverflow`: whether `value + incr` leaves `bits` bits, and the
/// value to store then (wrapped or saturated).
fn unsigned_overflow(value: u64, incr: i64, bits: u32, how: Overflow) -> Option<u64> {
    let max = if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let max_incr = max.wrapping_sub(value) as i64;
    let min_incr = (value as i64).wrapping_neg();
    let wrap = || value.wrapping_add(incr as u64) & max;
    if value > max || (incr > 0 && incr > max_incr) {
        Some(match how {
            Overflow::Wrap => wrap(),
            _ => max,
        })
    } else if incr < 0 && incr < min_incr {
        Some(match how {
            Overflow::Wrap => wrap(),
            _ => 0,
        })
    } else {
        None
    }
}

/// Redis's `checkSignedBitfieldOverflow`.
fn signed_overflow(value: i64, incr: i64, bits: u32, how: Overflow) -> Option<i64> {
    let max = if bits == 64 {
        i64::MAX
    } else {
        (1i64 << (bits - 1)) - 1
    };
    let min = -max - 1;
    let max_incr = (max as u64).wrapping_sub(value as u64) as i64;
    let min_incr = min.wrapping_sub(value);
    let wrap = || {
        let c = (value as u64).wrapping_add(incr as u64);
        if bits < 64 {
            let mask = u64::MAX << bits;
            if c >> (bits - 1) & 1 == 1 {
                (c | mask) as i64
            } else {
                (c & !mask) as i64
            }
        } else {
            c as i64
        }
    };
    if value > max || (bits != 64 && incr > max_incr) || (value >= 0 && incr > 0 && incr > max_incr)
    {
        Some(match how {
            Overflow::Wrap => wrap(),
            _ => max,
        })
    } else if value < min
        || (bits != 64 && incr < min_incr)
        || (value < 0 && incr < 0 && incr < min_incr)
    {
        Some(match how {
            Overflow::Wrap => wrap(),
            _ => min,
        })
    } else {
        None
    }
}

/// Runs a write field on `s` (long enough); `None` for an overflow under FAIL (nothing written).
fn write_field(s: &mut [u8], f: &Field) -> Option<i64> {
    let (by, is_set) = match f.op {
        FieldOp::Set(v) => (v, true),
        FieldOp::IncrBy(v) => (v, false),
        FieldOp::Get => unreachable!("a GET is not a write"),
    };
    if f.signed {
        let old = get_signed(s, f.offset, f.bits);
        let (new, over) = if is_set {
            match signed_overflow(by, 0, f.bits, f.overflow) {
                Some(w) => (w, true),
                None => (by, false),
            }
        } else {
            match signed_overflow(old, by, f.bits, f.overflow) {
                Some(w) => (w, true),
                None => (old.wrapping_add(by), false),
            }
        };
        if over && f.overflow == Overflow::Fail {
            return None;
        }
        set_unsigned(s, f.offset, f.bits, new as u64);
        Some(if is_set { old } else { new })
    } else {
        let old = get_unsigned(s, f.offset, f.bits);
        let (new, over) = if is_set {
            match unsigned_overflow(by as u64, 0, f.bits, f.overflow) {
                Some(w) => (w, true),
                None => (by as u64, false),
            }
        } else {
            match unsigned_overflow(old, by, f.bits, f.overflow) {
                Some(w) => (w, true),
                None => (old.wrapping_add(by as u64), false),
            }
        };
        if over && f.overflow == Overflow::Fail {
            return None;
        }
        set_unsigned(s, f.offset, f.bits, new);
        Some(if is_set { old as i64 } else { new as i64 })
    }
}

fn read_field(s: &[u8], f: &Field) -> i64 {
    if f.signed {
        get_signed(s, f.offset, f.bits)
    } else {
        get_unsigned(s, f.offset, f.bits) as i64
    }
}

fn bitfield(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    bitfield_generic(ctx, args, false)
}

fn bitfield_ro(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    bitfield_generic(ctx, args, true)
}

fn bitfield_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, read_only: bool) -> CmdResult {
    let fields = parse_fields(ctx, args)?;
    let writes = fields.iter().any(|f| f.op != FieldOp::Get);
    let key = args.get(1);
    let (db, now) = (ctx.client.db, ctx.now_ms);
    if !writes {
        let (mut shard, slot) = ctx.shard(key);
        let value = match shard.lookup_read(db, slot, key, now) {
            Some(e) => Some(e.string().ok_or(ReplyError::WrongType)?.to_vec()),
            None => None,
        };
        drop(shard);
        let s = value.as_deref().unwrap_or(&[]);
        ctx.out.array(fields.len());
        for f in &fields {
            ctx.out.int(read_field(s, f));
        }
        return Ok(());
    }
    if read_only {
        return Err(ReplyError::err_static(
            "BITFIELD_RO only supports the GET subcommand",
        ));
    }
    // The string grows to hold the farthest bit written, as Redis's `lookupStringForBitCommand`.
    let highest = fields
        .iter()
        .filter(|f| f.op != FieldOp::Get)
        .map(|f| f.offset + f.bits as u64 - 1)
        .max()
        .unwrap_or(0);
    let needed = (highest >> 3) as usize + 1;
    let (mut shard, slot) = ctx.shard(key);
    let version = ctx.version();
    let mut replies: Vec<Option<i64>> = Vec::with_capacity(fields.len());
    // Fields written (Redis's `changes`: a SET or INCRBY that did not fail on overflow).
    let mut changes = 0;
    // Runs the fields; returns the byte range written (growth included), for the stream.
    let mut run = |s: &mut Vec<u8>| -> Option<(usize, usize)> {
        let mut written: Option<(usize, usize)> = None;
        let mut widen = |lo: usize, hi: usize| {
            written = Some(written.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
        };
        if s.len() < needed {
            widen(s.len(), needed - 1);
            s.resize(needed, 0);
        }
        for f in &fields {
            let reply = match f.op {
                FieldOp::Get => Some(read_field(s, f)),
                _ => {
                    let r = write_field(s, f);
                    if r.is_some() {
                        changes += 1;
                        let last = f.offset + f.bits as u64 - 1;
                        widen((f.offset >> 3) as usize, (last >> 3) as usize);
                    }
                    r
                }
            };
            replies.push(reply);
        }
        written
    };
    let existed = match shard.lookup(db, slot, key, now, true) {
        Some(mut e) => {
            if e.string().is_none() {
                return Err(ReplyError::WrongType);
            }
            let mut ops = e.ops();
            let s = e.make_raw_string().ok_or(ReplyError::WrongType)?;
            if let Some((lo, hi)) = run(s) {
                ops.setrange(lo, &s[lo..=hi]);
                e.note(ops);
                e.set_version(version);
            }
            true
        }
        None => false,
    };
    if !existed {
        let mut s = Vec::new();
        run(&mut s);
        store_string(&mut shard, db, slot, key, &s, ExpireOpt::None, version, now);
    }
    drop(shard);
    if changes > 0 {
        ctx.notify(notify::STRING, "setbit", key);
    }
    ctx.out.array(replies.len());
    for r in replies {
        match r {
            Some(v) => ctx.out.int(v),
            None => ctx.out.null(),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The plain model: one bool per bit.
    fn bits_of(s: &[u8]) -> Vec<bool> {
        (0..s.len() as u64 * 8).map(|i| get_bit(s, i)).collect()
    }

    proptest! {
        #[test]
        fn first_bit_matches_a_scan(s in proptest::collection::vec(any::<u8>(), 0..40), bit: bool) {
            let model = bits_of(&s);
            let want = match model.iter().position(|&b| b == bit) {
                Some(i) => i as i64,
                None if bit => -1,
                None => model.len() as i64,
            };
            prop_assert_eq!(first_bit(&s, bit), want);
        }

        #[test]
        fn popcount_matches_a_scan(s in proptest::collection::vec(any::<u8>(), 0..100)) {
            prop_assert_eq!(popcount(&s), bits_of(&s).iter().filter(|&&b| b).count() as u64);
        }

        #[test]
        fn fields_round_trip(
            s in proptest::collection::vec(any::<u8>(), 16..24),
            offset in 0u64..64,
            bits in 1u32..=64,
            value: i64,
        ) {
            let mut s = s;
            set_unsigned(&mut s, offset, bits, value as u64);
            let mask = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
            prop_assert_eq!(get_unsigned(&s, offset, bits), value as u64 & mask);
            let signed = get_signed(&s, offset, bits);
            prop_assert_eq!(signed as u64 & mask, value as u64 & mask);
            // A bit outside the field is untouched: compare with a model write.
            let mut model = bits_of(&s);
            for j in 0..bits as u64 {
                model[(offset + j) as usize] = (value as u64) >> (bits as u64 - 1 - j) & 1 == 1;
            }
            prop_assert_eq!(bits_of(&s), model);
        }

        #[test]
        fn unsigned_increments_wrap_and_saturate(value in 0u64..256, incr in -600i64..600) {
            let (bits, max) = (8u32, 255i64);
            let sum = value as i64 + incr;
            let wrapped = unsigned_overflow(value, incr, bits, Overflow::Wrap);
            let sat = unsigned_overflow(value, incr, bits, Overflow::Sat);
            if (0..=max).contains(&sum) {
                prop_assert_eq!(wrapped, None);
            } else {
                prop_assert_eq!(wrapped, Some(sum.rem_euclid(max + 1) as u64));
                prop_assert_eq!(sat, Some(if sum > max { max as u64 } else { 0 }));
            }
        }

        #[test]
        fn signed_increments_wrap_and_saturate(value in -128i64..128, incr in -600i64..600) {
            let sum = value + incr;
            let wrapped = signed_overflow(value, incr, 8, Overflow::Wrap);
            let sat = signed_overflow(value, incr, 8, Overflow::Sat);
            if (-128..=127).contains(&sum) {
                prop_assert_eq!(wrapped, None);
            } else {
                prop_assert_eq!(wrapped, Some(((sum + 128).rem_euclid(256)) - 128));
                prop_assert_eq!(sat, Some(if sum > 127 { 127 } else { -128 }));
            }
        }
    }
}
