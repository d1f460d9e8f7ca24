//! Keyspace notifications (`notify-keyspace-events`): the event classes and the per-thread list of
//! events the running command raised.
//!
//! Redis publishes an event the moment it happens, from inside the command. shoal's commands run
//! under shard locks, so an event is noted here instead (in the order it happened, on the thread
//! running the command) and published by the caller once the command is done and its locks are
//! released, before its reply is sent: a subscriber that reads the key on hearing the event sees
//! the change. The keyspace raises its own events (`new`, `expired`, `evicted`, `keymiss`) when the
//! class is on in the shard's mask; the commands raise the rest. With no class on (the default),
//! nothing is noted and a check costs one load.
//!
//! The list holds what one command (or one pass of active expiry) raised: its size is bounded by
//! the keys the command names plus the keys it expired or evicted, and it is emptied after each
//! (and capped at [`PENDING_MAX`] whatever happens).

use std::cell::RefCell;

/// `K`: publish on `__keyspace@<db>__:<key>`.
pub const KEYSPACE: u32 = 1 << 0;
/// `E`: publish on `__keyevent@<db>__:<event>`.
pub const KEYEVENT: u32 = 1 << 1;
/// `g`: generic commands (DEL, EXPIRE, RENAME, ...).
pub const GENERIC: u32 = 1 << 2;
/// `$`: string commands.
pub const STRING: u32 = 1 << 3;
/// `l`: list commands.
pub const LIST: u32 = 1 << 4;
/// `s`: set commands.
pub const SET: u32 = 1 << 5;
/// `h`: hash commands.
pub const HASH: u32 = 1 << 6;
/// `z`: sorted set commands.
pub const ZSET: u32 = 1 << 7;
/// `x`: a key expired (lazily or actively).
pub const EXPIRED: u32 = 1 << 8;
/// `e`: a key was evicted for `maxmemory`.
pub const EVICTED: u32 = 1 << 9;
/// `t`: stream commands.
pub const STREAM: u32 = 1 << 10;
/// `m`: a read found no key (not part of `A`).
pub const KEY_MISS: u32 = 1 << 11;
/// `d`: module events (shoal loads no modules; accepted for compatibility).
pub const MODULE: u32 = 1 << 13;
/// `n`: a key was created (not part of `A`).
pub const NEW: u32 = 1 << 14;
/// Never published: a modification noted only so client-side caches are invalidated (a module
/// type's write, a write applied from a primary's stream); the command layer turns it on while a
/// client tracks keys (CLIENT TRACKING).
pub const TRACKING: u32 = 1 << 30;
/// The event name of a [`TRACKING`] event that stands for a whole flush (a replicated FLUSHALL or
/// FLUSHDB, a full resynchronisation): every client-side cache is invalidated.
pub const TRACKING_FLUSH: &str = "flush";
/// `A`: `g$lshzxetd`.
pub const ALL: u32 =
    GENERIC | STRING | LIST | SET | HASH | ZSET | EXPIRED | EVICTED | STREAM | MODULE;

/// Parses a `notify-keyspace-events` value (Redis's `keyspaceEventsStringToFlags`); `None` for a
/// character that names no class.
pub fn parse_classes(s: &[u8]) -> Option<u32> {
    let mut flags = 0;
    for c in s {
        flags |= match c {
            b'A' => ALL,
            b'g' => GENERIC,
            b'$' => STRING,
            b'l' => LIST,
            b's' => SET,
            b'h' => HASH,
            b'z' => ZSET,
            b'x' => EXPIRED,
            b'e' => EVICTED,
            b'K' => KEYSPACE,
            b'E' => KEYEVENT,
            b't' => STREAM,
            b'm' => KEY_MISS,
            b'd' => MODULE,
            b'n' => NEW,
            _ => return None,
        };
    }
    Some(flags)
}

/// The canonical text of a set of classes, as `CONFIG GET` shows it (Redis's
/// `keyspaceEventsFlagsToString`, including its quirk: with `A`, `n` is not shown).
pub fn format_classes(flags: u32) -> String {
    let mut s = String::new();
    if flags & ALL == ALL {
        s.push('A');
    } else {
        for (bit, c) in [
            (GENERIC, 'g'),
            (STRING, '$'),
            (LIST, 'l'),
            (SET, 's'),
            (HASH, 'h'),
            (ZSET, 'z'),
            (EXPIRED, 'x'),
            (EVICTED, 'e'),
            (STREAM, 't'),
            (MODULE, 'd'),
            (NEW, 'n'),
        ] {
            if flags & bit != 0 {
                s.push(c);
            }
        }
    }
    for (bit, c) in [(KEYSPACE, 'K'), (KEYEVENT, 'E'), (KEY_MISS, 'm')] {
        if flags & bit != 0 {
            s.push(c);
        }
    }
    s
}

/// Whether a mask publishes anything: a class and at least one of `K`/`E`.
pub fn publishes(mask: u32) -> bool {
    mask & (KEYSPACE | KEYEVENT) != 0 && mask & !(KEYSPACE | KEYEVENT) != 0
}

/// One event: its class, name, database and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub class: u32,
    pub event: &'static str,
    pub db: usize,
    pub key: Box<[u8]>,
}

thread_local! {
    static EVENTS: RefCell<Vec<Event>> = const { RefCell::new(Vec::new()) };
}

/// Most events noted on one thread before they are published. Commands and expiry passes stay far
/// below it; it only bounds a thread that raised events and nobody published them (a bug): the
/// excess is dropped, as Pub/Sub drops messages to a client over its output limit.
pub const PENDING_MAX: usize = 1 << 20;

/// Notes an event on this thread (the caller checked its class is on).
pub fn push(class: u32, event: &'static str, db: usize, key: &[u8]) {
    EVENTS.with(|e| {
        let mut e = e.borrow_mut();
        if e.len() >= PENDING_MAX {
            debug_assert!(false, "keyspace events raised and never published");
            return;
        }
        e.push(Event {
            class,
            event,
            db,
            key: key.into(),
        });
    });
}

/// Takes the events noted on this thread since the last call, oldest first.
pub fn take() -> Vec<Event> {
    EVENTS.with(|e| {
        let mut e = e.borrow_mut();
        if e.is_empty() {
            Vec::new()
        } else {
            std::mem::take(&mut *e)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_round_trip_as_redis_formats_them() {
        for (input, shown) in [
            ("", ""),
            ("KEA", "AKE"),
            ("Ex", "xE"),
            ("K$lshzxetdg", "AK"),
            ("AKEm", "AKEm"),
            ("An", "A"),
            ("gn", "gn"),
            ("Ken", "enK"),
        ] {
            let flags = parse_classes(input.as_bytes()).unwrap();
            assert_eq!(format_classes(flags), shown, "{input}");
        }
        assert_eq!(parse_classes(b"KEq"), None);
        assert!(!publishes(parse_classes(b"A").unwrap()));
        assert!(!publishes(parse_classes(b"KE").unwrap()));
        assert!(publishes(parse_classes(b"Kx").unwrap()));
    }

    #[test]
    fn events_come_back_in_order_once() {
        push(GENERIC, "del", 0, b"a");
        push(STRING, "set", 1, b"b");
        let got = take();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].event, got[1].db), ("del", 1));
        assert!(take().is_empty());
    }
}
