//! Key specs, modelled on Redis 7's: where a command's keys are in a request and what it does to
//! them, as data in the command table. [`keys`] turns a spec and a full request into key positions
//! with their flags; `COMMAND GETKEYS`, `COMMAND INFO`, blocking wake-ups and (next) cluster
//! routing and ACL key patterns all read keys through it, so no caller walks arguments by itself.
//!
//! Each [`KeySpec`] first finds where its keys begin ([`BeginSearch`]: a fixed index, or after a
//! keyword), then which arguments from there are keys ([`FindKeys`]: a range, or a count read from
//! the request). The legacy `(first, last, step)` triple of `COMMAND INFO` is derived from the specs
//! exactly as Redis 7.0 derives it ([`legacy_range`]), so it cannot disagree with them.

use crate::Args;

/// Key-spec flags (Redis's names, in the order `COMMAND INFO` and `COMMAND GETKEYSANDFLAGS` list
/// them). One of RO/RW/OW/RM says how the value is used; the rest say what the command does to it.
pub mod key {
    /// Read-only: reads the value without changing it.
    pub const RO: u32 = 1 << 0;
    /// Read-write: reads the value, then may change or delete it.
    pub const RW: u32 = 1 << 1;
    /// Overwrite: writes without reading what was there.
    pub const OW: u32 = 1 << 2;
    /// Remove: deletes the key without reading it.
    pub const RM: u32 = 1 << 3;
    /// Returns or copies user data from the value.
    pub const ACCESS: u32 = 1 << 4;
    /// Updates the value (or replaces it).
    pub const UPDATE: u32 = 1 << 5;
    /// Adds data to the value without changing what was there.
    pub const INSERT: u32 = 1 << 6;
    /// Deletes data from the value (or the key).
    pub const DELETE: u32 = 1 << 7;
    /// Not a key (a channel name, say): routed like one but never looked up.
    pub const NOT_KEY: u32 = 1 << 8;
    /// The spec may miss keys: whoever needs every key must parse the request.
    pub const INCOMPLETE: u32 = 1 << 9;
    /// The flags depend on the arguments (SET with or without GET): see `Spec::key_flags`.
    pub const VARIABLE_FLAGS: u32 = 1 << 10;

    pub const NAMES: &[(u32, &str)] = &[
        (RO, "RO"),
        (RW, "RW"),
        (OW, "OW"),
        (RM, "RM"),
        (ACCESS, "access"),
        (UPDATE, "update"),
        (INSERT, "insert"),
        (DELETE, "delete"),
        (NOT_KEY, "not_key"),
        (INCOMPLETE, "incomplete"),
        (VARIABLE_FLAGS, "variable_flags"),
    ];
}

/// Where a spec's keys begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeginSearch {
    /// At this argument (the command name is argument 0).
    Index(i32),
    /// After the first argument equal to `keyword` (case-insensitive), searching forwards from
    /// `start_from`, or backwards from `argc + start_from` when it is negative.
    Keyword {
        keyword: &'static str,
        start_from: i32,
    },
    /// Only the command's own parser knows.
    Unknown,
}

/// Which arguments, from where the search began, are keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindKeys {
    /// Keys up to `last_key` (relative to the beginning; negative counts from the end of the
    /// request), every `step` arguments. With `limit` > 1 and `last_key` -1, only the first
    /// 1/`limit` of the remaining arguments are keys.
    Range {
        last_key: i32,
        step: i32,
        limit: i32,
    },
    /// The argument at `keynum_idx` (relative to the beginning) holds the number of keys; they
    /// start at `first_key` (relative to the beginning), every `step` arguments.
    Keynum {
        keynum_idx: i32,
        first_key: i32,
        step: i32,
    },
    /// Only the command's own parser knows.
    Unknown,
}

/// One key spec of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    /// [`key`] flags.
    pub flags: u32,
    pub begin_search: BeginSearch,
    pub find_keys: FindKeys,
    /// Shown by `COMMAND INFO` when not empty.
    pub notes: &'static str,
}

impl KeySpec {
    /// One key at argument `index`: the common case, completed by [`KeySpec::find`].
    pub const fn at(index: i32, flags: u32) -> KeySpec {
        KeySpec {
            flags,
            begin_search: BeginSearch::Index(index),
            find_keys: FindKeys::Range {
                last_key: 0,
                step: 1,
                limit: 0,
            },
            notes: "",
        }
    }

    /// One key right after `keyword`.
    pub const fn after(keyword: &'static str, start_from: i32, flags: u32) -> KeySpec {
        KeySpec {
            begin_search: BeginSearch::Keyword {
                keyword,
                start_from,
            },
            ..KeySpec::at(0, flags)
        }
    }

    /// Keys only the command's parser can find.
    pub const fn unknown(flags: u32) -> KeySpec {
        KeySpec {
            begin_search: BeginSearch::Unknown,
            find_keys: FindKeys::Unknown,
            ..KeySpec::at(0, flags)
        }
    }

    pub const fn find(self, find_keys: FindKeys) -> KeySpec {
        KeySpec { find_keys, ..self }
    }

    pub const fn notes(self, notes: &'static str) -> KeySpec {
        KeySpec { notes, ..self }
    }
}

/// A key argument of a request: its position (the command name is 0) and [`key`] flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyRef {
    pub pos: usize,
    pub flags: u32,
}

/// Keys held inline before spilling to the heap: most commands name one or two keys.
const KEYREFS_INLINE: usize = 4;

/// The keys of one request, in spec order. No allocation up to [`KEYREFS_INLINE`] keys.
#[derive(Debug, Clone, Default)]
pub struct KeyRefs {
    len: usize,
    inline: [KeyRef; KEYREFS_INLINE],
    spilled: Vec<KeyRef>,
}

impl KeyRefs {
    pub(crate) fn push(&mut self, k: KeyRef) {
        if self.len < KEYREFS_INLINE {
            self.inline[self.len] = k;
        } else {
            if self.spilled.is_empty() {
                self.spilled.extend_from_slice(&self.inline);
            }
            self.spilled.push(k);
        }
        self.len += 1;
    }

    pub fn as_slice(&self) -> &[KeyRef] {
        if self.len <= KEYREFS_INLINE {
            &self.inline[..self.len]
        } else {
            &self.spilled
        }
    }

    pub fn iter(&self) -> std::slice::Iter<'_, KeyRef> {
        self.as_slice().iter()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions only.
    pub fn positions(&self) -> impl Iterator<Item = usize> + '_ {
        self.iter().map(|k| k.pos)
    }
}

impl<'a> IntoIterator for &'a KeyRefs {
    type Item = &'a KeyRef;
    type IntoIter = std::slice::Iter<'a, KeyRef>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// The request does not fit the command's key specs (a key count that is not a number, or
/// names more keys than there are arguments): the command itself will reply with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadKeyArgs;

/// The key arguments of `args`, a full request (`args.get(0)` is the command name, then the
/// subcommand name if `spec` is a subcommand) for `spec`, as Redis 7.0's `getKeysFromCommandWithSpecs`
/// finds them. Bounded by the request's length whatever a key count says; never panics.
pub fn keys(spec: &crate::Spec, args: &Args<'_>) -> Result<KeyRefs, BadKeyArgs> {
    if let Some(find) = spec.key_finder {
        return find(args);
    }
    let mut out = KeyRefs::default();
    match by_specs(spec.keys, args, &mut out) {
        Ok(()) if spec.has(crate::flag::EMPTY_KEY_NONE) => {
            // As Redis's own key finder for MIGRATE: the empty key before KEYS names no key, and
            // the KEYS list is then the whole (complete) list.
            let mut kept = KeyRefs::default();
            for k in out.iter().filter(|k| !args.get(k.pos).is_empty()) {
                kept.push(KeyRef {
                    pos: k.pos,
                    flags: k.flags & !key::INCOMPLETE,
                });
            }
            Ok(kept)
        }
        Ok(()) => {
            if let Some(resolve) = spec.key_flags {
                // Redis asks the command itself when a spec's flags vary with the arguments.
                for k in out.inline.iter_mut().chain(out.spilled.iter_mut()) {
                    if k.flags & key::VARIABLE_FLAGS != 0 {
                        k.flags = resolve(args);
                    }
                }
            }
            Ok(out)
        }
        Err(BadKeyArgs) => {
            out = KeyRefs::default();
            keynum_fallback(spec.keys, args, &mut out)?;
            Ok(out)
        }
    }
}

/// Whether `COMMAND GETKEYS` considers the command to take keys (a spec that is not `NOT_KEY`, or
/// keys found by parsing).
pub fn has_keys(spec: &crate::Spec) -> bool {
    spec.keys.iter().any(|k| k.flags & key::NOT_KEY == 0) || spec.has(crate::flag::MOVABLEKEYS)
}

/// The shard channels of a sharded pub/sub request (SSUBSCRIBE, SUNSUBSCRIBE, SPUBLISH): their
/// `not_key` key specs, which cluster routing treats as keys, as Redis 7.0 routes them by its
/// legacy key range.
pub fn shard_channels(spec: &crate::Spec, args: &Args<'_>) -> Result<KeyRefs, BadKeyArgs> {
    let mut out = KeyRefs::default();
    by_specs_with(spec.keys, args, &mut out, true)?;
    Ok(out)
}

/// Whether a command's keys are shard channels (see [`shard_channels`]).
pub fn is_shard_pubsub(spec: &crate::Spec) -> bool {
    spec.has(crate::flag::PUBSUB) && spec.keys.iter().any(|k| k.flags & key::NOT_KEY != 0)
}

/// Redis's `getKeysUsingKeySpecs`, in i64 arithmetic so no count can overflow.
fn by_specs(specs: &[KeySpec], args: &Args<'_>, out: &mut KeyRefs) -> Result<(), BadKeyArgs> {
    by_specs_with(specs, args, out, false)
}

/// [`by_specs`], also returning `not_key` arguments when `not_keys` (Redis's
/// `GET_KEYSPEC_INCLUDE_NOT_KEYS`).
fn by_specs_with(
    specs: &[KeySpec],
    args: &Args<'_>,
    out: &mut KeyRefs,
    not_keys: bool,
) -> Result<(), BadKeyArgs> {
    let argc = args.len() as i64;
    for ks in specs {
        if ks.flags & key::NOT_KEY != 0 && !not_keys {
            continue;
        }
        let first: i64 = match ks.begin_search {
            BeginSearch::Index(i) => i as i64,
            BeginSearch::Keyword {
                keyword,
                start_from,
            } => match find_keyword(args, keyword, start_from) {
                Some(i) => i + 1,
                // No keyword, no keys of this spec (an optional clause left out).
                None => continue,
            },
            BeginSearch::Unknown => return Err(BadKeyArgs),
        };
        let (first, last, step) = match ks.find_keys {
            FindKeys::Range {
                last_key,
                step,
                limit,
            } => {
                let last = if last_key >= 0 {
                    first + last_key as i64
                } else if limit <= 0 {
                    argc + last_key as i64
                } else {
                    first + ((argc - first) / limit as i64 + last_key as i64)
                };
                (first, last, step)
            }
            FindKeys::Keynum {
                keynum_idx,
                first_key,
                step,
            } => {
                let at = first + keynum_idx as i64;
                if !(1..argc).contains(&at) {
                    return Err(BadKeyArgs);
                }
                let n = strict_i64(args.get(at as usize)).ok_or(BadKeyArgs)?;
                if n < 0 {
                    return Err(BadKeyArgs);
                }
                // Redis stores the count in a C int: 2^32 + 2 keys is 2 keys there, and here.
                let n = n as i32 as i64;
                let first = first + first_key as i64;
                (first, first + n - 1, step)
            }
            FindKeys::Unknown => return Err(BadKeyArgs),
        };
        if first < 1 || last >= argc || last < first || step < 1 {
            return Err(BadKeyArgs);
        }
        for pos in (first..=last).step_by(step as usize) {
            out.push(KeyRef {
                pos: pos as usize,
                flags: ks.flags,
            });
        }
    }
    Ok(())
}

/// Redis falls back to each movable-key command's own key finder when the specs fail, and every
/// one of those with a key count (`genericGetKeys`) reads the count with `atoi`: `2abc` is 2 there.
/// Keys found that way carry no flags, and the spec at a fixed index (the destination of
/// ZUNIONSTORE and friends) comes last.
fn keynum_fallback(
    specs: &[KeySpec],
    args: &Args<'_>,
    out: &mut KeyRefs,
) -> Result<(), BadKeyArgs> {
    let argc = args.len() as i64;
    let Some((begin, keynum_idx, first_key, step)) =
        specs
            .iter()
            .find_map(|ks| match (ks.begin_search, ks.find_keys) {
                (
                    BeginSearch::Index(b),
                    FindKeys::Keynum {
                        keynum_idx,
                        first_key,
                        step,
                    },
                ) => Some((b as i64, keynum_idx as i64, first_key as i64, step as i64)),
                _ => None,
            })
    else {
        return Err(BadKeyArgs);
    };
    let at = begin + keynum_idx;
    let first = begin + first_key;
    if !(1..argc).contains(&at) || first > argc || step < 1 {
        return Err(BadKeyArgs);
    }
    let n = c_atoi(args.get(at as usize)) as i64;
    if n < 1 || n > (argc - first) / step {
        return Err(BadKeyArgs);
    }
    for i in 0..n {
        out.push(KeyRef {
            pos: (first + i * step) as usize,
            flags: 0,
        });
    }
    for ks in specs {
        if let (BeginSearch::Index(i), FindKeys::Range { last_key: 0, .. }) =
            (ks.begin_search, ks.find_keys)
            && i >= 1
            && (i as i64) < argc
        {
            out.push(KeyRef {
                pos: i as usize,
                flags: 0,
            });
        }
    }
    Ok(())
}

/// The keyword's position, searched as Redis does: forwards from `start_from` to the end, or
/// backwards from `argc + start_from` down to 2 when `start_from` is negative.
fn find_keyword(args: &Args<'_>, keyword: &str, start_from: i32) -> Option<i64> {
    let argc = args.len() as i64;
    let hit = |i: i64| {
        args.get(i as usize)
            .eq_ignore_ascii_case(keyword.as_bytes())
    };
    if start_from > 0 {
        (start_from as i64..argc - 1).find(|&i| hit(i))
    } else {
        let start = argc + start_from as i64;
        if start >= argc {
            return None;
        }
        (2..=start).rev().find(|&i| hit(i))
    }
}

/// Redis's `string2ll`: an optional `-`, digits, no leading zeros or spaces, within i64.
fn strict_i64(b: &[u8]) -> Option<i64> {
    let (neg, digits) = match b.strip_prefix(b"-") {
        Some(d) => (true, d),
        None => (false, b),
    };
    if digits.is_empty()
        || !digits.iter().all(u8::is_ascii_digit)
        || (digits[0] == b'0' && (digits.len() > 1 || neg))
    {
        return None;
    }
    let mut v: i64 = 0;
    for d in digits {
        let d = (d - b'0') as i64;
        v = if neg {
            v.checked_mul(10)?.checked_sub(d)?
        } else {
            v.checked_mul(10)?.checked_add(d)?
        };
    }
    Some(v)
}

/// C's `atoi` as glibc has it, `(int) strtol(s, NULL, 10)`: leading white space, a sign, digits up
/// to the first other byte, saturated to a 64-bit long, then truncated to 32 bits.
fn c_atoi(b: &[u8]) -> i32 {
    let mut i = 0;
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
        i += 1;
    }
    let neg = b.get(i) == Some(&b'-');
    if matches!(b.get(i), Some(b'-' | b'+')) {
        i += 1;
    }
    let mut v: i64 = 0;
    for &c in b[i..].iter().take_while(|c| c.is_ascii_digit()) {
        let d = (c - b'0') as i64;
        v = if neg {
            v.saturating_mul(10).saturating_sub(d)
        } else {
            v.saturating_mul(10).saturating_add(d)
        };
    }
    v as i32
}

/// The legacy `(first, last, step)` triple and whether the specs make the command's keys movable,
/// as Redis 7.0's `populateCommandLegacyRangeSpec` derives them: the specs that are plain
/// consecutive index ranges, merged; anything else leaves keys only a parser can find.
pub fn legacy_range(specs: &[KeySpec]) -> ((i32, i32, i32), bool) {
    let range = |ks: &KeySpec| match (ks.begin_search, ks.find_keys) {
        (BeginSearch::Index(pos), FindKeys::Range { last_key, step, .. }) => {
            Some((pos, last_key, step))
        }
        _ => None,
    };
    match specs {
        [] => return ((0, 0, 0), false),
        [only] => {
            if let Some((pos, last_key, step)) = range(only) {
                let last = if last_key >= 0 {
                    pos + last_key
                } else {
                    last_key
                };
                return ((pos, last, step), only.flags & key::INCOMPLETE != 0);
            }
        }
        _ => {}
    }
    let (mut first, mut last, mut prev_last) = (i32::MAX, 0i32, 0i32);
    let mut movable = false;
    for ks in specs {
        let Some((pos, last_key, step)) = range(ks) else {
            movable = true;
            continue;
        };
        if step != 1 || (prev_last != 0 && prev_last != pos - 1) {
            movable = true;
            continue;
        }
        movable |= ks.flags & key::INCOMPLETE != 0;
        first = first.min(pos);
        let abs_last = if last_key >= 0 {
            last_key + pos
        } else {
            last_key
        };
        // Redis compares as unsigned, so a negative (from the end) last key wins.
        last = (last as u32).max(abs_last as u32) as i32;
        prev_last = last;
    }
    if first == i32::MAX {
        return ((0, 0, 0), true);
    }
    ((first, last, 1), movable)
}

#[cfg(test)]
mod tests {
    use super::key::*;
    use super::*;
    use crate::OwnedArgs;
    use crate::table::{Group, Spec};

    fn spec(keys: &'static [KeySpec]) -> Spec {
        Spec {
            name: "t",
            arity: -1,
            keys,
            group: Group::Generic,
            ..Spec::DEFAULT
        }
    }

    fn found(s: &Spec, req: &[&str]) -> Result<Vec<(usize, u32)>, BadKeyArgs> {
        let o = OwnedArgs::new(req.iter());
        keys(s, &o.args()).map(|k| k.iter().map(|k| (k.pos, k.flags)).collect())
    }

    const KEYNUM: FindKeys = FindKeys::Keynum {
        keynum_idx: 0,
        first_key: 1,
        step: 1,
    };
    static STORE: &[KeySpec] = &[
        KeySpec::at(1, OW | UPDATE),
        KeySpec::at(2, RO | ACCESS).find(KEYNUM),
    ];

    #[test]
    fn keynum_counts_keys_and_rejects_bad_counts() {
        let s = spec(STORE);
        assert_eq!(
            found(
                &s,
                &["zunionstore", "d", "2", "a", "b", "weights", "1", "2"]
            ),
            Ok(vec![(1, OW | UPDATE), (3, RO | ACCESS), (4, RO | ACCESS)])
        );
        for n in [
            "0",
            "-1",
            "3",
            "99999999999",
            "-9223372036854775808",
            "",
            " ",
        ] {
            assert_eq!(
                found(&s, &["zunionstore", "d", n, "a", "b"]),
                Err(BadKeyArgs),
                "{n}"
            );
        }
        // Redis's C int: 2^32 + 2 is 2.
        assert_eq!(
            found(&s, &["zunionstore", "d", "4294967298", "a", "b"]).map(|v| v.len()),
            Ok(3)
        );
        // The atoi fallback: sources first, then the destination, without flags.
        assert_eq!(
            found(&s, &["zunionstore", "d", "2abc", "a", "b"]),
            Ok(vec![(3, 0), (4, 0), (1, 0)])
        );
        assert_eq!(
            found(&s, &["zunionstore", "d", "+1", "a"]),
            Ok(vec![(3, 0), (1, 0)])
        );
        // Too short for the count itself: bounded, no panic.
        assert_eq!(found(&s, &["zunionstore"]), Err(BadKeyArgs));
        assert_eq!(found(&s, &["zunionstore", "d"]), Err(BadKeyArgs));
    }

    #[test]
    fn ranges_from_the_end_with_steps_and_limits() {
        static MSET: &[KeySpec] = &[KeySpec::at(1, OW | UPDATE).find(FindKeys::Range {
            last_key: -1,
            step: 2,
            limit: 0,
        })];
        let s = spec(MSET);
        assert_eq!(
            found(&s, &["mset", "a", "1", "b", "2"]).map(|v| v.len()),
            Ok(2)
        );
        assert_eq!(found(&s, &["mset"]), Err(BadKeyArgs));
        // XREAD-like: keys are the first half after STREAMS.
        static HALF: &[KeySpec] = &[KeySpec::after("STREAMS", 1, RO).find(FindKeys::Range {
            last_key: -1,
            step: 1,
            limit: 2,
        })];
        let s = spec(HALF);
        assert_eq!(
            found(&s, &["xread", "count", "2", "streams", "a", "b", "0", "0"]),
            Ok(vec![(4, RO), (5, RO)])
        );
        // No keyword: no keys of that spec, not an error.
        assert_eq!(found(&s, &["xread", "count", "2"]), Ok(vec![]));
    }

    #[test]
    fn keyword_searched_backwards_from_the_end() {
        // MIGRATE's KEYS clause.
        static MIGRATE: &[KeySpec] = &[
            KeySpec::at(3, RW | ACCESS | DELETE),
            KeySpec::after("KEYS", -2, RW | ACCESS | DELETE | INCOMPLETE).find(FindKeys::Range {
                last_key: -1,
                step: 1,
                limit: 0,
            }),
        ];
        let s = spec(MIGRATE);
        let f = RW | ACCESS | DELETE;
        assert_eq!(
            found(&s, &["migrate", "h", "p", "", "0", "5", "keys", "a", "b"]),
            Ok(vec![(3, f), (7, f | INCOMPLETE), (8, f | INCOMPLETE)])
        );
        assert_eq!(
            found(&s, &["migrate", "h", "p", "k", "0", "5"]),
            Ok(vec![(3, f)])
        );
        assert_eq!(legacy_range(MIGRATE), ((3, 3, 1), true));
    }

    #[test]
    fn unknown_specs_are_not_guessed() {
        static SORT: &[KeySpec] = &[KeySpec::at(1, RO | ACCESS), KeySpec::unknown(OW | UPDATE)];
        assert_eq!(found(&spec(SORT), &["sort", "k"]), Err(BadKeyArgs));
        assert_eq!(legacy_range(SORT), ((1, 1, 1), true));
    }

    #[test]
    fn many_keys_spill_past_the_inline_array_in_order() {
        static DEL: &[KeySpec] = &[KeySpec::at(1, RM | DELETE).find(FindKeys::Range {
            last_key: -1,
            step: 1,
            limit: 0,
        })];
        let req: Vec<String> = std::iter::once("del".to_string())
            .chain((0..10).map(|i| i.to_string()))
            .collect();
        let o = OwnedArgs::new(req.iter());
        let k = keys(&spec(DEL), &o.args()).expect("keys");
        assert_eq!(
            k.positions().collect::<Vec<_>>(),
            (1..=10).collect::<Vec<_>>()
        );
        assert_eq!(legacy_range(DEL), ((1, -1, 1), false));
    }

    #[test]
    fn legacy_range_merges_consecutive_specs_only() {
        static RENAME: &[KeySpec] = &[KeySpec::at(1, RW), KeySpec::at(2, OW)];
        assert_eq!(legacy_range(RENAME), ((1, 2, 1), false));
        static GAP: &[KeySpec] = &[KeySpec::at(1, RW), KeySpec::at(3, OW)];
        assert_eq!(legacy_range(GAP), ((1, 1, 1), true));
        assert_eq!(legacy_range(STORE), ((1, 1, 1), true));
        assert_eq!(legacy_range(&[]), ((0, 0, 0), false));
    }

    #[test]
    fn number_parsers_match_redis() {
        assert_eq!(strict_i64(b"12"), Some(12));
        assert_eq!(strict_i64(b"-3"), Some(-3));
        for bad in [
            &b"+1"[..],
            b"01",
            b"-0",
            b" 1",
            b"1 ",
            b"",
            b"-",
            b"9223372036854775808",
        ] {
            assert_eq!(strict_i64(bad), None, "{:?}", bad);
        }
        assert_eq!(c_atoi(b" \t+7x"), 7);
        assert_eq!(c_atoi(b"-2"), -2);
        assert_eq!(c_atoi(b"abc"), 0);
        assert_eq!(c_atoi(b"4294967298"), 2);
        assert_eq!(c_atoi(b"99999999999999999999"), -1); // LONG_MAX truncated
    }
}
