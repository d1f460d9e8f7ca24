//! SORT and SORT_RO, as Redis 7.0 (`sort.c`): the elements of a list, set or sorted set, ordered
//! as numbers (ties by bytes) or with ALPHA as strings, optionally by weights read from other keys
//! (`BY weight_*`, `BY h_*->field`), answered as themselves or as values read from other keys
//! (`GET #`, `GET v_*`, `GET h_*->field`), cut with LIMIT, and with STORE saved as a list.
//!
//! Locking: without BY/GET patterns SORT touches only its own key and the STORE key, locked as
//! any command locks its keys. A BY or GET pattern names keys only the data knows, so the command
//! then takes the exec gate alone (as EXEC does): no other client's command runs while it reads
//! them one shard at a time, which gives the atomicity Redis's single thread gives it. Cluster mode
//! refuses those patterns, as Redis does.
//!
//! Order of equal elements: Redis sorts with an unstable quicksort, so elements that compare
//! equal (ALPHA by a weight two elements share) come out in an order it does not promise; shoal's
//! sort is stable. Without a sort (`BY nosort`) a set answers in shoal's own iteration order, as a
//! set answers in Redis's hash order; stored, or read by a script, it is sorted as strings.

use crate::args::{ERR_NOT_INTEGER, ERR_SYNTAX, parse_f64, parse_i64};
use crate::keyspec::{BadKeyArgs, KeyRef, KeyRefs, key::*};
use crate::notify;
use crate::table::{Group, KeySpec, Spec, flag::*};
use crate::{Args, CmdResult, Ctx, ReplyError};
use shoal_keyspace::{Entry, Object, Payload, ValueRef};

pub static COMMANDS: &[Spec] = &[
    Spec {
        name: "sort",
        arity: -2,
        flags: WRITE | DENYOOM | MOVABLEKEYS,
        keys: &[
            KeySpec::at(1, RO | ACCESS),
            KeySpec::unknown(RO | ACCESS).notes(
                "For the optional BY/GET keyword. It is marked 'unknown' because the key names derive from the content of the key we sort",
            ),
            KeySpec::unknown(OW | UPDATE).notes(
                "For the optional STORE keyword. It is marked 'unknown' because the keyword can appear anywhere in the argument array",
            ),
        ],
        key_finder: Some(sort_keys),
        group: Group::Generic,
        type_categories: Some(&["@set", "@sortedset", "@list", "@dangerous"]),
        since: "1.0.0",
        summary: "Sorts the elements in a list, a set, or a sorted set, optionally storing the result.",
        complexity: "O(N+M*log(M)) where N is the number of elements in the list or set to sort, and M the number of returned elements. When the elements are not sorted, complexity is O(N).",
        handler: Some(sort),
        ..Spec::DEFAULT
    },
    Spec {
        name: "sort_ro",
        arity: -2,
        flags: READONLY | MOVABLEKEYS,
        keys: &[
            KeySpec::at(1, RO | ACCESS),
            KeySpec::unknown(RO | ACCESS).notes(
                "For the optional BY/GET keyword. It is marked 'unknown' because the key names derive from the content of the key we sort",
            ),
        ],
        key_finder: Some(sort_ro_keys),
        group: Group::Generic,
        type_categories: Some(&["@set", "@sortedset", "@list", "@dangerous"]),
        since: "7.0.0",
        summary: "Returns the sorted elements of a list, a set, or a sorted set.",
        complexity: "O(N+M*log(M)) where N is the number of elements in the list or set to sort, and M the number of returned elements. When the elements are not sorted, complexity is O(N).",
        handler: Some(sort_ro),
        ..Spec::DEFAULT
    },
];

/// SORT's keys as Redis's `sortGetKeys`: the sorted key, and the last `STORE` destination, found
/// by skipping the arguments of LIMIT (2), GET and BY (1).
fn sort_keys(args: &Args<'_>) -> Result<KeyRefs, BadKeyArgs> {
    let mut out = KeyRefs::default();
    out.push(KeyRef {
        pos: 1,
        flags: RO | ACCESS,
    });
    let mut store = None;
    let mut i = 2;
    while i < args.len() {
        let a = args.get(i);
        if a.eq_ignore_ascii_case(b"limit") {
            i += 2;
        } else if a.eq_ignore_ascii_case(b"get") || a.eq_ignore_ascii_case(b"by") {
            i += 1;
        } else if a.eq_ignore_ascii_case(b"store") && i + 1 < args.len() {
            store = Some(i + 1);
        }
        i += 1;
    }
    if let Some(pos) = store {
        out.push(KeyRef {
            pos,
            flags: OW | UPDATE,
        });
    }
    Ok(out)
}

fn sort_ro_keys(_args: &Args<'_>) -> Result<KeyRefs, BadKeyArgs> {
    let mut out = KeyRefs::default();
    out.push(KeyRef {
        pos: 1,
        flags: RO | ACCESS,
    });
    Ok(out)
}

struct Options<'r> {
    desc: bool,
    alpha: bool,
    limit: Option<(i64, i64)>,
    store: Option<&'r [u8]>,
    by: Option<&'r [u8]>,
    dont_sort: bool,
    gets: Vec<&'r [u8]>,
}

fn parse_options<'r>(
    ctx: &Ctx<'_>,
    args: &'r Args<'_>,
    read_only: bool,
) -> Result<Options<'r>, ReplyError> {
    let cluster = ctx.srv.cluster.is_some();
    let mut o = Options {
        desc: false,
        alpha: false,
        limit: None,
        store: None,
        by: None,
        dont_sort: false,
        gets: Vec::new(),
    };
    let mut j = 2;
    while j < args.len() {
        let left = args.len() - j - 1;
        let a = args.get(j);
        if a.eq_ignore_ascii_case(b"asc") {
            o.desc = false;
        } else if a.eq_ignore_ascii_case(b"desc") {
            o.desc = true;
        } else if a.eq_ignore_ascii_case(b"alpha") {
            o.alpha = true;
        } else if a.eq_ignore_ascii_case(b"limit") && left >= 2 {
            let start = parse_i64(args.get(j + 1)).ok_or(ERR_NOT_INTEGER)?;
            let count = parse_i64(args.get(j + 2)).ok_or(ERR_NOT_INTEGER)?;
            o.limit = Some((start, count));
            j += 2;
        } else if !read_only && a.eq_ignore_ascii_case(b"store") && left >= 1 {
            o.store = Some(args.get(j + 1));
            j += 1;
        } else if a.eq_ignore_ascii_case(b"by") && left >= 1 {
            let pattern = args.get(j + 1);
            o.by = Some(pattern);
            // A pattern without '*' names one key for every element: nothing to sort by.
            // (As in Redis, a later BY with a pattern does not undo it.)
            if !pattern.contains(&b'*') {
                o.dont_sort = true;
            } else {
                if cluster {
                    return Err(ReplyError::err_static(
                        "BY option of SORT denied in Cluster mode.",
                    ));
                }
            }
            j += 1;
        } else if a.eq_ignore_ascii_case(b"get") && left >= 1 {
            if cluster {
                return Err(ReplyError::err_static(
                    "GET option of SORT denied in Cluster mode.",
                ));
            }
            o.gets.push(args.get(j + 1));
            j += 1;
        } else {
            return Err(ERR_SYNTAX);
        }
        j += 1;
    }
    Ok(o)
}

/// Where a pattern points for one element (Redis's `lookupKeyByPattern`): `#` is the element
/// itself; otherwise the first `*` is replaced by the element, and a `->field` after it reads
/// that field of a hash instead of a string. A pattern without `*` names nothing.
pub(crate) enum Target {
    Itself,
    Key {
        key: Vec<u8>,
        field: Option<Vec<u8>>,
    },
    Nothing,
}

pub(crate) fn target(pattern: &[u8], element: &[u8]) -> Target {
    if pattern == b"#" {
        return Target::Itself;
    }
    let Some(star) = pattern.iter().position(|&c| c == b'*') else {
        return Target::Nothing;
    };
    let after = &pattern[star + 1..];
    let arrow = after
        .windows(2)
        .position(|w| w == b"->")
        .filter(|&i| i + 2 < after.len());
    let (postfix, field) = match arrow {
        Some(i) => (&after[..i], Some(after[i + 2..].to_vec())),
        None => (after, None),
    };
    let mut key = Vec::with_capacity(star + element.len() + postfix.len());
    key.extend_from_slice(&pattern[..star]);
    key.extend_from_slice(element);
    key.extend_from_slice(postfix);
    Target::Key { key, field }
}

/// The value a pattern gives for `element`, reading other keys; `None` when there is none (no
/// key, a key of another type, a missing field).
fn lookup_pattern(ctx: &mut Ctx<'_>, pattern: &[u8], element: &[u8]) -> Option<Vec<u8>> {
    let (key, field) = match target(pattern, element) {
        Target::Itself => return Some(element.to_vec()),
        Target::Nothing => return None,
        Target::Key { key, field } => (key, field),
    };
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let (mut shard, slot) = ctx.shard(&key);
    let e = shard.lookup_read(db, slot, &key, now)?;
    match (&field, e.value()) {
        (None, _) => e.string().map(<[u8]>::to_vec),
        // A field whose TTL has passed is not seen (Redis 7.4), whether or not deleted yet.
        (Some(f), ValueRef::Obj(Object::Hash(h))) => h
            .get(f)
            .filter(|_| h.field_expire_at(f).is_none_or(|at| at > now))
            .map(<[u8]>::to_vec),
        _ => None,
    }
}

/// A weight as C's `strtod` reads it for SORT: leading white space skipped, the whole rest a
/// number (an empty rest is 0), no NaN, nothing out of range (ERANGE, which glibc also reports
/// for subnormal results).
fn strtod_weight(s: &[u8]) -> Option<f64> {
    let start = s
        .iter()
        .position(|c| !matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'))
        .unwrap_or(s.len());
    let rest = &s[start..];
    if rest.is_empty() {
        return Some(0.0);
    }
    let v = parse_f64(rest).or_else(|| crate::blocking::parse_hex_float(rest))?;
    let hex = rest.iter().any(|c| matches!(c, b'x' | b'X'));
    let nonzero_digits = rest
        .iter()
        .take_while(|c| !matches!(c, b'p' | b'P') && (hex || !matches!(c, b'e' | b'E')))
        .any(|c| c.is_ascii_digit() && *c != b'0' || hex && matches!(c, b'a'..=b'f' | b'A'..=b'F'));
    let spelled_inf = rest.iter().any(|c| matches!(c, b'i' | b'I'));
    let out_of_range = (v.is_infinite() && !spelled_inf)
        || (v == 0.0 && nonzero_digits)
        || (v != 0.0 && v.is_finite() && v.abs() < f64::MIN_POSITIVE);
    if v.is_nan() || out_of_range {
        return None;
    }
    Some(v)
}

/// `strcmp`: C strings end at their first NUL (Redis compares ALPHA elements with `strcoll`,
/// which is `strcmp` in the C locale, unless it stores the result).
fn c_string(s: &[u8]) -> &[u8] {
    match s.iter().position(|&c| c == 0) {
        Some(i) => &s[..i],
        None => s,
    }
}

struct Item {
    element: Vec<u8>,
    score: f64,
    by: Option<Vec<u8>>,
}

fn sort(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    sort_generic(ctx, args, false)
}

fn sort_ro(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    sort_generic(ctx, args, true)
}

/// The elements of the sorted key, in its own order; `Err` for another type.
pub(crate) fn elements_of(e: Option<&Entry>) -> Result<(Vec<Vec<u8>>, Kind), ReplyError> {
    let Some(e) = e else {
        return Ok((Vec::new(), Kind::List));
    };
    match e.value() {
        ValueRef::Obj(Object::List(l)) => Ok((l.iter().map(<[u8]>::to_vec).collect(), Kind::List)),
        ValueRef::Obj(Object::Set(s)) => Ok((s.iter().map(|m| m.to_vec()).collect(), Kind::Set)),
        ValueRef::Obj(Object::ZSet(z)) => {
            Ok((z.iter().map(|(m, _)| m.to_vec()).collect(), Kind::ZSet))
        }
        _ => Err(ReplyError::WrongType),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    List,
    Set,
    ZSet,
}

fn sort_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, read_only: bool) -> CmdResult {
    let mut o = parse_options(ctx, args, read_only)?;
    let patterns = (o.by.is_some() && !o.dont_sort) || !o.gets.is_empty();
    // Keys named by the data: no other client's command runs until the reply is built.
    let _alone = if patterns && ctx.gate.is_some() {
        ctx.gate = None;
        Some(ctx.srv.gate.exclusive())
    } else {
        None
    };
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let (mut elements, kind) = {
        let (mut shard, slot) = ctx.shard(args.get(1));
        let e = shard.lookup_read(db, slot, args.get(1), now);
        elements_of(e.as_deref())?
    };
    // A set in no particular order is sorted as strings when the result is stored or a script
    // reads it, so neither depends on the set's layout (as Redis does).
    if o.dont_sort && kind == Kind::Set && (o.store.is_some() || ctx.client.in_script_call) {
        o.dont_sort = false;
        o.alpha = true;
        o.by = None;
    }
    let len = elements.len() as i64;
    let (limit_start, limit_count) = o.limit.unwrap_or((0, -1));
    let mut start = limit_start.max(0).min(len);
    let count = limit_count.max(-1).min(len);
    let mut end = if count < 0 {
        len - 1
    } else {
        start + count - 1
    };
    if start >= len {
        start = len - 1;
        end = len - 2;
    }
    if end >= len {
        end = len - 1;
    }
    let mut items: Vec<Item> = Vec::new();
    let mut conversion_error = false;
    if o.dont_sort {
        // Lists and sorted sets keep their order (reversed by DESC); LIMIT cuts it directly.
        if o.desc && kind != Kind::Set {
            elements.reverse();
        }
        items = elements
            .into_iter()
            .map(|element| Item {
                element,
                score: 0.0,
                by: None,
            })
            .collect();
    } else {
        for element in elements {
            let weight = match o.by {
                Some(pattern) => lookup_pattern(ctx, pattern, &element),
                None => None,
            };
            let mut item = Item {
                element,
                score: 0.0,
                by: None,
            };
            let source = match (o.by, &weight) {
                (Some(_), None) => None,
                (Some(_), Some(w)) => Some(w.as_slice()),
                (None, _) => Some(item.element.as_slice()),
            };
            if let Some(w) = source {
                if o.alpha {
                    if o.by.is_some() {
                        item.by = Some(w.to_vec());
                    }
                } else {
                    match strtod_weight(w) {
                        Some(v) => item.score = v,
                        None => conversion_error = true,
                    }
                }
            }
            items.push(item);
        }
        let by_pattern = o.by.is_some();
        let stored = o.store.is_some();
        let (alpha, desc) = (o.alpha, o.desc);
        items.sort_by(|a, b| {
            let cmp = if !alpha {
                a.score
                    .partial_cmp(&b.score)
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then_with(|| a.element.cmp(&b.element))
            } else if by_pattern {
                match (&a.by, &b.by) {
                    (None, None) => std::cmp::Ordering::Equal,
                    (None, Some(_)) => std::cmp::Ordering::Less,
                    (Some(_), None) => std::cmp::Ordering::Greater,
                    (Some(x), Some(y)) if stored => x.cmp(y),
                    (Some(x), Some(y)) => c_string(x).cmp(c_string(y)),
                }
            } else if stored {
                a.element.cmp(&b.element)
            } else {
                c_string(&a.element).cmp(c_string(&b.element))
            };
            if desc { cmp.reverse() } else { cmp }
        });
    }
    if conversion_error {
        return Err(ReplyError::err_static(
            "One or more scores can't be converted into double",
        ));
    }
    let chosen: &[Item] = if end >= start {
        &items[start as usize..=end as usize]
    } else {
        &[]
    };
    let Some(dest) = o.store else {
        let per = o.gets.len().max(1);
        let mut values: Vec<Option<Vec<u8>>> = Vec::with_capacity(chosen.len() * per);
        for item in chosen {
            if o.gets.is_empty() {
                values.push(Some(item.element.clone()));
            }
            for pattern in &o.gets {
                values.push(lookup_pattern(ctx, pattern, &item.element));
            }
        }
        ctx.out.array(values.len());
        for v in values {
            match v {
                Some(v) => ctx.out.bulk(&v),
                None => ctx.out.null(),
            }
        }
        return Ok(());
    };
    let mut list: Vec<Vec<u8>> = Vec::new();
    for item in chosen {
        if o.gets.is_empty() {
            list.push(item.element.clone());
        }
        for pattern in &o.gets {
            list.push(lookup_pattern(ctx, pattern, &item.element).unwrap_or_default());
        }
    }
    let stored = list.len();
    let limits = ctx.srv.encoding_limits();
    let (mut shard, slot) = ctx.shard(dest);
    let version = ctx.version();
    if list.is_empty() {
        if shard.lookup(db, slot, dest, now, false).is_some() {
            shard.remove(db, slot, dest);
            shard.note(notify::GENERIC, "del", db, dest);
        }
    } else {
        let mut l = shoal_keyspace::types::list::List::new(&limits);
        for v in &list {
            l.push_back(v);
        }
        let e = Entry::new(
            dest,
            Payload::Object(Box::new(Object::List(l))),
            None,
            None,
            version,
            0,
        );
        shard.insert(db, slot, e, now);
        shard.note(notify::LIST, "sortstore", db, dest);
    }
    drop(shard);
    ctx.out.int(stored as i64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_substitute_the_first_star_and_read_hash_fields() {
        let key = |p: &str, e: &str| match target(p.as_bytes(), e.as_bytes()) {
            Target::Key { key, field } => (
                String::from_utf8(key).unwrap(),
                field.map(|f| String::from_utf8(f).unwrap()),
            ),
            Target::Itself => ("#".into(), None),
            Target::Nothing => ("-".into(), None),
        };
        assert_eq!(key("w_*", "3"), ("w_3".into(), None));
        assert_eq!(key("h_*->f", "3"), ("h_3".into(), Some("f".into())));
        assert_eq!(key("h_*->", "3"), ("h_3->".into(), None));
        assert_eq!(key("*_*", "a"), ("a_*".into(), None));
        assert_eq!(key("#", "a"), ("#".into(), None));
        assert_eq!(key("nostar", "a"), ("-".into(), None));
        assert_eq!(key("a->b*", "x"), ("a->bx".into(), None));
    }

    #[test]
    fn weights_read_as_strtod_reads_them() {
        assert_eq!(strtod_weight(b"1.5"), Some(1.5));
        assert_eq!(strtod_weight(b"  7"), Some(7.0));
        assert_eq!(strtod_weight(b""), Some(0.0));
        assert_eq!(strtod_weight(b"-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(strtod_weight(b"0x10"), Some(16.0));
        assert_eq!(strtod_weight(b"1e400"), None);
        assert_eq!(strtod_weight(b"1e-400"), None);
        assert_eq!(strtod_weight(b"0e-400"), Some(0.0));
        assert_eq!(strtod_weight(b"7 "), None);
        assert_eq!(strtod_weight(b"x"), None);
        assert_eq!(strtod_weight(b"nan"), None);
    }
}
