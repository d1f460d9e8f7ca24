//! Replication defects of issue 9, as stories told with real processes on loopback: every write
//! command in the server's own table reaches a replica intact; collection writes travel as element
//! changes, not whole values; a replica further behind than its
//! output-buffer limit catches up without a drop-and-resync loop; a replica restarted after
//! `SHUTDOWN SAVE` continues with a partial resync; chained replication (A ← B ← C) keeps C on A's
//! history and survives B's promotion without a full copy.
//!
//! Every wait is bounded (`wait_until`), every process is stopped when its handle drops, and a
//! process paused with SIGSTOP is resumed by a guard whatever the outcome.

mod common;

use std::collections::BTreeSet;
use std::time::Instant;

use common::{Shoal, caught_up, follow, info_value as field, q, wait_link_up};
use redis::Value;

fn info(c: &mut redis::Connection, section: &str) -> String {
    q(c, &["INFO", section])
}

fn text(c: &mut redis::Connection, section: &str, name: &str) -> String {
    field(&info(c, section), name).unwrap_or_else(|| panic!("INFO {section} has no {name}"))
}

fn num(c: &mut redis::Connection, section: &str, name: &str) -> u64 {
    let v = text(c, section, name);
    v.parse()
        .unwrap_or_else(|_| panic!("INFO {section} {name} is not a number: {v:?}"))
}

/// One digest per slot of database `db`.
fn digests(s: &Shoal, db: usize) -> Vec<String> {
    let mut c = s.client();
    let _: () = q(&mut c, &["SELECT", &db.to_string()]);
    q(&mut c, &["SLOTDIGEST", "0", "16383"])
}

fn dbsize(s: &Shoal, db: usize) -> u64 {
    let mut c = s.client();
    let _: () = q(&mut c, &["SELECT", &db.to_string()]);
    q(&mut c, &["DBSIZE"])
}

/// The keys (with versions) of the slots whose digests differ, on both nodes: what a failure
/// message needs to name the culprit.
fn describe_difference(a: &Shoal, b: &Shoal, db: usize) -> String {
    let (da, db_) = (digests(a, db), digests(b, db));
    let mut out = String::new();
    let mut ca = a.client();
    let mut cb = b.client();
    let _: () = q(&mut ca, &["SELECT", &db.to_string()]);
    let _: () = q(&mut cb, &["SELECT", &db.to_string()]);
    for (slot, (x, y)) in da.iter().zip(&db_).enumerate().filter(|(_, (x, y))| x != y) {
        let ka: Vec<String> = q(&mut ca, &["SLOTKEYS", &slot.to_string()]);
        let kb: Vec<String> = q(&mut cb, &["SLOTKEYS", &slot.to_string()]);
        out.push_str(&format!(
            "\n  db {db} slot {slot}: primary {x} {ka:?} / replica {y} {kb:?}"
        ));
        if out.len() > 4000 {
            out.push_str("\n  ...");
            break;
        }
    }
    out
}

/// Asserts the replica holds what the primary holds in databases 0 and 1 (digests and sizes).
fn assert_same_data(primary: &Shoal, replica: &Shoal, when: &str) {
    caught_up(replica, primary);
    for db in 0..2 {
        let (p, r) = (digests(primary, db), digests(replica, db));
        assert!(
            p == r,
            "{when}: database {db} differs on the replica:{}",
            describe_difference(primary, replica, db)
        );
        assert_eq!(
            dbsize(primary, db),
            dbsize(replica, db),
            "{when}: DBSIZE of database {db}"
        );
    }
    // Function libraries too (they travel as SHOALFUNCTIONS frames, not as keys).
    let dump = |s: &Shoal| -> Vec<u8> { q(&mut s.client(), &["FUNCTION", "DUMP"]) };
    assert!(
        dump(primary) == dump(replica),
        "{when}: the replica's function libraries differ from the primary's"
    );
}

/// The names of every command (and subcommand, as `parent|sub`) whose flags include `write`,
/// read from the server's own `COMMAND` reply.
fn write_commands(c: &mut redis::Connection) -> BTreeSet<String> {
    fn s(v: &Value) -> String {
        match v {
            Value::BulkString(b) => String::from_utf8_lossy(b).to_lowercase(),
            Value::SimpleString(t) => t.to_lowercase(),
            other => panic!("expected a string in COMMAND, got {other:?}"),
        }
    }
    fn has_write(flags: &Value) -> bool {
        match flags {
            Value::Array(fs) | Value::Set(fs) => fs.iter().any(|f| s(f) == "write"),
            other => panic!("expected flags in COMMAND, got {other:?}"),
        }
    }
    let table: Vec<Value> = q(c, &["COMMAND"]);
    assert!(table.len() > 100, "COMMAND lists {} commands", table.len());
    let mut out = BTreeSet::new();
    for entry in &table {
        let Value::Array(e) = entry else {
            panic!("COMMAND entry {entry:?}")
        };
        if has_write(&e[2]) {
            out.insert(s(&e[0]));
        }
        if let Some(Value::Array(subs)) = e.get(9) {
            for sub in subs {
                let Value::Array(se) = sub else {
                    panic!("COMMAND subcommand {sub:?}")
                };
                if has_write(&se[2]) {
                    out.insert(s(&se[0]));
                }
            }
        }
    }
    out
}

/// For every write command, one or more example invocations. A line `1| ...` runs in database 1,
/// any other line in database 0. `{ver:KEY}` is replaced by the key's current version (GETVER),
/// `{lease:KEY}` by a lease token (GETLEASE) and `{dump:KEY}` by its DUMP payload, all read from
/// the primary just before the line runs.
/// Each example also sets up what it needs, so each runs on its own in this order.
fn examples() -> Vec<(&'static str, Vec<String>)> {
    let lines = |ls: &[&str]| ls.iter().map(|l| l.to_string()).collect::<Vec<_>>();
    let members = |prefix: &str, n: usize| {
        (0..n)
            .map(|i| format!("{prefix}{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    vec![
        // Function libraries (idempotent lines: the examples run twice).
        (
            "function|load",
            lines(&[
                "FUNCTION LOAD REPLACE {lib:la}",
                "FUNCTION LOAD REPLACE {lib:lb}",
            ]),
        ),
        (
            "function|delete",
            lines(&["FUNCTION LOAD REPLACE {lib:ld}", "FUNCTION DELETE ld"]),
        ),
        (
            "function|restore",
            lines(&["FUNCTION RESTORE {fdump} REPLACE"]),
        ),
        (
            "function|flush",
            lines(&["FUNCTION FLUSH", "FUNCTION LOAD REPLACE {lib:lc}"]),
        ),
        // Database-wide effects first, so the keys written below outlive them.
        (
            "flushdb",
            lines(&[
                "1|SET f:1 x",
                "1|FLUSHDB",
                "1|SET f:2 y",
                "1|FLUSHDB ASYNC",
                "1|SET f:3 z",
                "SET f:0 in-db-0",
            ]),
        ),
        (
            "pfadd",
            lines(&[
                "PFADD hl:1 a b c",
                "PFADD hl:1 c d",
                "PFADD hl:2",
                "PFCOUNT hl:1",
            ]),
        ),
        (
            "pfmerge",
            lines(&[
                "PFADD hl:3 x y z",
                "PFMERGE hl:4 hl:1 hl:3",
                "PFMERGE hl:4 hl:none",
            ]),
        ),
        ("pfdebug", lines(&["PFADD hl:5 q", "PFDEBUG TODENSE hl:5"])),
        // Bloom filters: created whole, adds as hash pairs, growth into new sub-filters.
        (
            "bf.reserve",
            lines(&[
                "BF.RESERVE bf:1 0.01 10",
                "BF.RESERVE bf:ns 0.01 5 NONSCALING",
            ]),
        ),
        (
            "bf.add",
            lines(&["BF.ADD bf:1 a", "BF.ADD bf:1 a", "BF.ADD bf:2 created"]),
        ),
        (
            "bf.madd",
            lines(&[
                "BF.MADD bf:1 a b c d e f g h i j k l m n o p",
                "BF.MADD bf:ns x y",
            ]),
        ),
        (
            "bf.insert",
            lines(&[
                "BF.INSERT bf:3 CAPACITY 3 ERROR 0.001 EXPANSION 3 ITEMS p q r s t u",
                "BF.INSERT bf:1 NOCREATE ITEMS z",
            ]),
        ),
        (
            "bf.loadchunk",
            lines(&[
                "DEL bf:copy",
                "BF.LOADCHUNK bf:copy 1 {scandump:bf:1:0}",
                "BF.LOADCHUNK bf:copy 17 {scandump:bf:1:1}",
            ]),
        ),
        (
            "geoadd",
            lines(&[
                "GEOADD geo:1 13.361389 38.115556 Palermo 15.087269 37.502669 Catania",
                "GEOADD geo:1 XX CH 13.4 38.2 Palermo 1 1 Nowhere",
                "GEOADD geo:1 NX 2.3522 48.8566 Paris 0 0 Palermo",
                "1|GEOADD geo:1 0 0 zero",
            ]),
        ),
        (
            "xadd",
            lines(&[
                "XADD xs:1 * f v",
                "XADD xs:1 MAXLEN 2 * f w",
                "XADD xs:1 99999999999999-* g x",
                "1|XADD xs:1 NOMKSTREAM * a b",
            ]),
        ),
        (
            "xtrim",
            lines(&[
                "XADD xs:2 1-1 a b",
                "XADD xs:2 2-1 a b",
                "XTRIM xs:2 MAXLEN 1",
            ]),
        ),
        (
            "xdel",
            lines(&["XADD xs:3 1-1 a b", "XADD xs:3 2-1 a b", "XDEL xs:3 1-1"]),
        ),
        (
            "xsetid",
            lines(&[
                "XADD xs:4 1-1 a b",
                "XSETID xs:4 5-0 ENTRIESADDED 9 MAXDELETEDID 2-0",
            ]),
        ),
        (
            "xgroup|create",
            lines(&[
                "XGROUP CREATE xs:5 g $ MKSTREAM",
                "XGROUP CREATE xs:5 h 0 ENTRIESREAD 3",
            ]),
        ),
        (
            "xgroup|createconsumer",
            lines(&[
                "XGROUP CREATE xs:6 g 0 MKSTREAM",
                "XGROUP CREATECONSUMER xs:6 g alice",
            ]),
        ),
        (
            "xgroup|setid",
            lines(&[
                "XGROUP CREATE xs:7 g 0 MKSTREAM",
                "XGROUP SETID xs:7 g 5-0 ENTRIESREAD 2",
            ]),
        ),
        (
            "xreadgroup",
            lines(&[
                "XADD xs:8 1-1 a b",
                "XADD xs:8 2-1 c d",
                "XGROUP CREATE xs:8 g 0",
                "XREADGROUP GROUP g alice COUNT 1 STREAMS xs:8 >",
                "XREADGROUP GROUP g bob NOACK STREAMS xs:8 >",
                "XREADGROUP GROUP g alice STREAMS xs:8 0",
            ]),
        ),
        (
            "xack",
            lines(&[
                "XADD xs:9 1-1 a b",
                "XGROUP CREATE xs:9 g 0",
                "XREADGROUP GROUP g alice STREAMS xs:9 >",
                "XACK xs:9 g 1-1",
            ]),
        ),
        (
            "xclaim",
            lines(&[
                "XADD xs:10 1-1 a b",
                "XADD xs:10 2-1 a b",
                "XGROUP CREATE xs:10 g 0",
                "XREADGROUP GROUP g alice STREAMS xs:10 >",
                "XCLAIM xs:10 g bob 0 1-1 TIME 1000 RETRYCOUNT 3",
                "XCLAIM xs:10 g bob 0 2-1 JUSTID LASTID 5-0",
            ]),
        ),
        (
            "xautoclaim",
            lines(&[
                "XADD xs:11 1-1 a b",
                "XADD xs:11 2-1 a b",
                "XGROUP CREATE xs:11 g 0",
                "XREADGROUP GROUP g alice STREAMS xs:11 >",
                "XDEL xs:11 2-1",
                "XAUTOCLAIM xs:11 g bob 0 0",
            ]),
        ),
        (
            "xgroup|delconsumer",
            lines(&[
                "XADD xs:12 1-1 a b",
                "XGROUP CREATE xs:12 g 0",
                "XREADGROUP GROUP g alice STREAMS xs:12 >",
                "XGROUP DELCONSUMER xs:12 g alice",
            ]),
        ),
        (
            "xgroup|destroy",
            lines(&["XGROUP CREATE xs:13 g 0 MKSTREAM", "XGROUP DESTROY xs:13 g"]),
        ),
        (
            "georadius",
            lines(&[
                "GEOADD geo:2 13.361389 38.115556 Palermo 15.087269 37.502669 Catania",
                "GEORADIUS geo:2 15 37 200 km STORE geo:3",
                "GEORADIUS geo:2 15 37 200 km COUNT 1 STOREDIST geo:4",
                "GEORADIUS geo:none 15 37 200 km STORE geo:4",
            ]),
        ),
        (
            "georadiusbymember",
            lines(&[
                "GEOADD geo:5 13.361389 38.115556 Palermo 15.087269 37.502669 Catania",
                "GEORADIUSBYMEMBER geo:5 Palermo 300 km STORE geo:6",
                "GEORADIUSBYMEMBER geo:5 Palermo 300 km DESC STOREDIST geo:7",
            ]),
        ),
        (
            "geosearchstore",
            lines(&[
                "GEOADD geo:8 13.361389 38.115556 Palermo 15.087269 37.502669 Catania",
                "GEOSEARCHSTORE geo:9 geo:8 FROMLONLAT 15 37 BYBOX 400 400 km",
                "GEOSEARCHSTORE geo:10 geo:8 FROMMEMBER Palermo BYRADIUS 100 km STOREDIST",
                "GEOSEARCHSTORE geo:9 geo:8 FROMLONLAT 0 0 BYRADIUS 1 m",
            ]),
        ),
        (
            "setbit",
            lines(&[
                "SETBIT b:1 7 1",
                "SETBIT b:1 1000 1",
                "SETBIT b:1 7 0",
                "SET b:2 abc",
                "SETBIT b:2 3 1",
            ]),
        ),
        (
            "bitfield",
            lines(&[
                "BITFIELD b:3 SET i8 0 -100 INCRBY u4 #3 9",
                "BITFIELD b:3 OVERFLOW SAT INCRBY u2 100 7",
                "BITFIELD b:3 OVERFLOW FAIL INCRBY i8 0 -100",
            ]),
        ),
        (
            "bitop",
            lines(&[
                "SET b:4 foobar",
                "SET b:5 abcdef",
                "BITOP XOR b:6 b:4 b:5",
                "BITOP NOT b:7 b:4",
                "BITOP AND b:6 b:none",
            ]),
        ),
        (
            "sort",
            lines(&[
                "RPUSH so:1 3 1 2",
                "SORT so:1 STORE so:2",
                "SET so:w1 30",
                "SET so:w2 10",
                "SORT so:1 BY so:w* DESC STORE so:3",
                "SORT so:none STORE so:2",
            ]),
        ),
        (
            "set",
            lines(&[
                "SET s:1 v EX 100000",
                "SET s:1 v2 KEEPTTL",
                "SET s:1 v3 GET",
                "SET s:1 v4 XX PX 90000000",
                "SET s:2 v NX",
                "SET s:3 v EXAT 4102444800",
                "1|SET s:1 in-db-1",
            ]),
        ),
        ("setnx", lines(&["SETNX sn:1 a", "SETNX sn:1 b"])),
        ("setex", lines(&["SETEX se:1 100000 v"])),
        ("psetex", lines(&["PSETEX pse:1 100000000 v"])),
        ("getset", lines(&["GETSET gs:1 a", "GETSET gs:1 b"])),
        (
            "getdel",
            lines(&["SET gd:1 x", "SET gd:2 y", "GETDEL gd:1"]),
        ),
        (
            "getex",
            lines(&[
                "SET ge:1 x",
                "GETEX ge:1 EX 100000",
                "SET ge:2 x EX 100000",
                "GETEX ge:2 PERSIST",
                "SET ge:3 x",
                "GETEX ge:3 PXAT 4102444800000",
            ]),
        ),
        (
            "append",
            lines(&[
                "APPEND ap:1 hello",
                "APPEND ap:1 -world",
                "1|APPEND ap:1 db1",
            ]),
        ),
        (
            "setrange",
            lines(&[
                "SET sr:1 hello",
                "SETRANGE sr:1 10 world",
                "SETRANGE sr:2 3 x",
            ]),
        ),
        ("incr", lines(&["INCR n:1", "INCR n:1"])),
        ("incrby", lines(&["INCRBY n:2 40", "INCRBY n:2 -3"])),
        ("decr", lines(&["SET n:3 10", "DECR n:3"])),
        ("decrby", lines(&["DECRBY n:4 7"])),
        (
            "incrbyfloat",
            lines(&[
                "INCRBYFLOAT nf:1 0.1",
                "INCRBYFLOAT nf:1 0.2",
                "INCRBYFLOAT nf:1 1e3",
                "SET nf:2 3.0e2 EX 100000",
                "INCRBYFLOAT nf:2 1.5",
            ]),
        ),
        (
            "mset",
            lines(&["MSET m:1 a m:2 b m:3 c", "1|MSET m:1 x m:4 y"]),
        ),
        (
            "msetnx",
            lines(&["MSETNX mn:1 a mn:2 b", "MSETNX mn:2 c mn:3 d"]),
        ),
        (
            "setifver",
            lines(&[
                "SETIFVER v:1 0 first",
                "SETIFVER v:1 {ver:v:1} second EX 100000",
                "SETIFVER v:1 1 stale",
            ]),
        ),
        (
            "setifnewer",
            lines(&[
                "SETIFNEWER vn:1 5 five",
                "SETIFNEWER vn:1 3 three",
                "SETIFNEWER vn:1 9 nine PX 90000000",
            ]),
        ),
        (
            "getlease",
            lines(&[
                "DEL gl:1",
                "GETLEASE gl:1",
                "SETSTALE gl:2 v PX 1 STALE 90000000",
                "GETLEASE gl:2",
            ]),
        ),
        (
            "setlease",
            lines(&[
                "DEL sl:1 sl:2",
                "SETLEASE sl:1 {lease:sl:1} loaded PX 90000000 STALE 60000",
                "SETLEASE sl:2 {lease:sl:2} loaded",
                "SETLEASE sl:2 1 refused",
            ]),
        ),
        (
            "setstale",
            lines(&[
                "SETSTALE ss:1 v EX 90000 STALE 1000",
                "SETSTALE ss:2 v PXAT 99999999999999 STALE 5",
            ]),
        ),
        (
            "delifver",
            lines(&[
                "SET vd:1 x",
                "SET vd:2 y",
                "DELIFVER vd:1 {ver:vd:1}",
                "DELIFVER vd:2 1",
            ]),
        ),
        (
            "del",
            lines(&["SET d:1 x", "SET d:2 y", "SET d:3 z", "DEL d:1 d:2 d:none"]),
        ),
        (
            "unlink",
            lines(&[
                &format!("SADD u:big {}", members("member-", 300)),
                "SET u:small x",
                "UNLINK u:big u:small u:none",
            ]),
        ),
        (
            "expire",
            lines(&[
                "SET e:1 x",
                "EXPIRE e:1 100000",
                "EXPIRE e:1 200000 GT",
                "EXPIRE e:1 50 NX",
                "SET e:2 x",
                "EXPIRE e:2 -1",
            ]),
        ),
        (
            "pexpire",
            lines(&[
                "SET pe:1 x",
                "PEXPIRE pe:1 100000000",
                "SET pe:2 x",
                "PEXPIRE pe:2 0",
            ]),
        ),
        (
            "expireat",
            lines(&[
                "SET ea:1 x",
                "EXPIREAT ea:1 4102444800",
                "SET ea:2 x",
                "EXPIREAT ea:2 1",
            ]),
        ),
        (
            "pexpireat",
            lines(&[
                "SET pea:1 x",
                "PEXPIREAT pea:1 4102444800123",
                "SET pea:2 x",
                "PEXPIREAT pea:2 1",
            ]),
        ),
        ("persist", lines(&["SET pp:1 x EX 100000", "PERSIST pp:1"])),
        (
            "rename",
            lines(&[
                "SET rn:1 x EX 100000",
                "RENAME rn:1 rn:2",
                "SET rn:3 y",
                "RENAME rn:3 rn:2",
            ]),
        ),
        (
            "renamenx",
            lines(&[
                "SET rx:1 x",
                "RENAMENX rx:1 rx:2",
                "SET rx:3 y",
                "RENAMENX rx:3 rx:2",
            ]),
        ),
        (
            "copy",
            lines(&[
                "SET c:1 x EX 100000",
                "COPY c:1 c:2",
                "COPY c:1 c:1 DB 1",
                "RPUSH c:l a b c",
                "COPY c:l c:2 REPLACE",
                "1|SET c:3 other",
                "COPY c:l c:3 DB 1 REPLACE",
            ]),
        ),
        (
            "move",
            lines(&[
                "SET mv:1 x EX 100000",
                "MOVE mv:1 1",
                "1|SET mv:2 y",
                "1|MOVE mv:2 0",
            ]),
        ),
        (
            // To the primary itself: COPY keeps the source, REPLACE overwrites the copy.
            "migrate",
            lines(&[
                "SET mg:1 one",
                "MIGRATE 127.0.0.1 {port} mg:1 0 5000 COPY REPLACE",
                "MIGRATE 127.0.0.1 {port} {empty} 0 5000 COPY REPLACE KEYS mg:1 mg:none",
            ]),
        ),
        (
            "restore-asking",
            lines(&["SET ra:src v", "RESTORE-ASKING ra:1 0 {dump:ra:src}"]),
        ),
        (
            "restore",
            lines(&[
                "SET rs:src hello",
                "HSET rs:hsrc a 1 b 2",
                "RESTORE rs:1 0 {dump:rs:src}",
                "RESTORE rs:2 100000000 {dump:rs:hsrc}",
                "RESTORE rs:1 0 {dump:rs:hsrc} REPLACE",
                "RESTORE rs:3 4102444800000 {dump:rs:src} ABSTTL",
            ]),
        ),
        // Hashes.
        (
            "hset",
            lines(&["HSET h:1 a 1 b 2 c 3", "HSET h:1 a 10", "1|HSET h:1 z 26"]),
        ),
        ("hsetnx", lines(&["HSETNX h:2 a 1", "HSETNX h:2 a 2"])),
        ("hmset", lines(&["HMSET h:3 a 1 b 2"])),
        (
            "hdel",
            lines(&[
                "HSET h:4 a 1 b 2 c 3",
                "HDEL h:4 a c",
                "HSET h:5 a 1",
                "HDEL h:5 a",
            ]),
        ),
        ("hincrby", lines(&["HINCRBY h:6 n 5", "HINCRBY h:6 n -2"])),
        // Field expiry (Redis 7.4): deadlines set, kept by HINCRBY, cleared, and a field deleted
        // by a time in the past.
        (
            "hexpire",
            lines(&[
                "HSET h:8 a 1 b 2 c 3 d 4",
                "HEXPIRE h:8 1000 FIELDS 2 a b",
                "HEXPIRE h:8 0 FIELDS 1 d",
                "HINCRBY h:8 a 1",
            ]),
        ),
        ("hpexpire", lines(&["HPEXPIRE h:8 900000 GT FIELDS 1 b"])),
        ("hexpireat", lines(&["HEXPIREAT h:8 9999999999 FIELDS 1 c"])),
        (
            "hpexpireat",
            lines(&["HPEXPIREAT h:8 9999999998000 XX FIELDS 1 c"]),
        ),
        ("hpersist", lines(&["HPERSIST h:8 FIELDS 2 b nope"])),
        (
            "hincrbyfloat",
            lines(&["HINCRBYFLOAT h:7 f 0.1", "HINCRBYFLOAT h:7 f 2.5e1"]),
        ),
        // Lists.
        (
            "rpush",
            lines(&["RPUSH l:1 a b c d e f g h", "1|RPUSH l:1 x"]),
        ),
        ("lpush", lines(&["LPUSH l:2 a b c"])),
        ("rpushx", lines(&["RPUSHX l:2 z", "RPUSHX l:none z"])),
        ("lpushx", lines(&["LPUSHX l:2 y"])),
        (
            "linsert",
            lines(&["RPUSH l:3 a c", "LINSERT l:3 BEFORE c b"]),
        ),
        ("lset", lines(&["RPUSH l:4 a b c", "LSET l:4 1 B"])),
        ("lrem", lines(&["RPUSH l:5 a b a c a", "LREM l:5 2 a"])),
        ("ltrim", lines(&["RPUSH l:6 a b c d e", "LTRIM l:6 1 3"])),
        (
            "lpop",
            lines(&["RPUSH l:7 a b c d", "LPOP l:7", "LPOP l:7 2"]),
        ),
        (
            "rpop",
            lines(&["RPUSH l:8 a b c d", "RPOP l:8", "RPUSH l:9 a", "RPOP l:9"]),
        ),
        (
            "rpoplpush",
            lines(&["RPUSH l:10 a b c", "RPOPLPUSH l:10 l:11"]),
        ),
        (
            "lmove",
            lines(&[
                "RPUSH l:12 a b c",
                "LMOVE l:12 l:13 LEFT RIGHT",
                "LMOVE l:12 l:12 RIGHT LEFT",
            ]),
        ),
        (
            "lmpop",
            lines(&["RPUSH l:14 a b c d", "LMPOP 2 l:none l:14 RIGHT COUNT 2"]),
        ),
        ("blpop", lines(&["RPUSH l:15 a b", "BLPOP l:none l:15 1"])),
        ("brpop", lines(&["RPUSH l:16 a b", "BRPOP l:16 1"])),
        (
            "brpoplpush",
            lines(&["RPUSH l:17 a b", "BRPOPLPUSH l:17 l:18 1"]),
        ),
        (
            "blmove",
            lines(&["RPUSH l:19 a b c", "BLMOVE l:19 l:20 RIGHT LEFT 1"]),
        ),
        (
            "blmpop",
            lines(&["RPUSH l:21 a b c d", "BLMPOP 1 2 l:none l:21 LEFT COUNT 3"]),
        ),
        // Sets: randomness decided on the primary must reach the replica as its outcome.
        (
            "sadd",
            lines(&[
                "SADD st:1 a b c",
                &format!("SADD st:ints {}", members("", 50)),
                "1|SADD st:1 z",
            ]),
        ),
        ("srem", lines(&["SADD st:2 a b c d", "SREM st:2 a d x"])),
        (
            "spop",
            lines(&[
                &format!("SADD sp:1 {}", members("m", 300)),
                "SPOP sp:1 40",
                "SPOP sp:1",
                &format!("SADD sp:2 {}", members("", 100)),
                "SPOP sp:2 7",
                "SADD sp:3 only",
                "SPOP sp:3",
            ]),
        ),
        (
            "smove",
            lines(&["SADD st:3 a b", "SMOVE st:3 st:4 a", "SMOVE st:3 st:4 b"]),
        ),
        (
            "sinterstore",
            lines(&[
                "SADD st:5 a b c",
                "SADD st:6 b c d",
                "SINTERSTORE st:7 st:5 st:6",
            ]),
        ),
        ("sunionstore", lines(&["SUNIONSTORE st:8 st:5 st:6"])),
        (
            "sdiffstore",
            lines(&["SDIFFSTORE st:9 st:5 st:6", "SDIFFSTORE st:9 st:5 st:5"]),
        ),
        // Sorted sets.
        (
            "zadd",
            lines(&[
                "ZADD z:1 1 a 2 b 3 c",
                "ZADD z:1 INCR 2.5 a",
                "ZADD z:1 GT CH 10 b 0 c",
                "ZADD z:1 NX 7 d",
                "1|ZADD z:1 1 one",
            ]),
        ),
        (
            "zincrby",
            lines(&["ZINCRBY z:2 1.5 a", "ZINCRBY z:2 -0.25 a"]),
        ),
        ("zrem", lines(&["ZADD z:3 1 a 2 b", "ZREM z:3 a x"])),
        (
            "zremrangebyscore",
            lines(&["ZADD z:4 1 a 2 b 3 c 4 d", "ZREMRANGEBYSCORE z:4 (1 3"]),
        ),
        (
            "zremrangebyrank",
            lines(&["ZADD z:5 1 a 2 b 3 c 4 d", "ZREMRANGEBYRANK z:5 0 1"]),
        ),
        (
            "zremrangebylex",
            lines(&["ZADD z:6 0 a 0 b 0 c 0 d", "ZREMRANGEBYLEX z:6 [b (d"]),
        ),
        (
            "zpopmin",
            lines(&["ZADD z:7 1 a 2 b 3 c", "ZPOPMIN z:7", "ZPOPMIN z:7 5"]),
        ),
        ("zpopmax", lines(&["ZADD z:8 1 a 2 b 3 c", "ZPOPMAX z:8 2"])),
        (
            "bzpopmin",
            lines(&["ZADD z:9 1 a 2 b", "BZPOPMIN z:none z:9 1"]),
        ),
        ("bzpopmax", lines(&["ZADD z:10 1 a 2 b", "BZPOPMAX z:10 1"])),
        (
            "zmpop",
            lines(&["ZADD z:11 1 a 2 b 3 c", "ZMPOP 2 z:none z:11 MAX COUNT 2"]),
        ),
        (
            "bzmpop",
            lines(&["ZADD z:12 1 a 2 b 3 c", "BZMPOP 1 1 z:12 MIN COUNT 2"]),
        ),
        (
            "zunionstore",
            lines(&[
                "ZADD z:13 1 a 2 b",
                "ZADD z:14 3 b 4 c",
                "ZUNIONSTORE z:15 2 z:13 z:14 WEIGHTS 2 3 AGGREGATE MAX",
            ]),
        ),
        ("zinterstore", lines(&["ZINTERSTORE z:16 2 z:13 z:14"])),
        ("zdiffstore", lines(&["ZDIFFSTORE z:17 2 z:13 z:14"])),
        (
            "zrangestore",
            lines(&[
                "ZRANGESTORE z:18 z:1 0 -1",
                "ZRANGESTORE z:19 z:1 (1 +inf BYSCORE LIMIT 0 2",
            ]),
        ),
        // Last: swap the two databases, then write to both.
        (
            "swapdb",
            lines(&["SWAPDB 0 1", "SET sw:1 after-swap", "1|SET sw:2 after-swap"]),
        ),
        // Run in the middle of the sequence (see the test).
        (
            "flushall",
            lines(&["FLUSHALL ASYNC", "SET after-flush 1", "1|SET after-flush 1"]),
        ),
    ]
}

/// Runs example lines on the primary, tracking the selected database. Every line must succeed
/// (an example that errors would test nothing).
struct Runner {
    c: redis::Connection,
    db: usize,
    /// The primary's port (`{port}` in an example: MIGRATE to the primary itself; `{empty}` is
    /// an empty argument).
    port: u16,
}

impl Runner {
    fn select(&mut self, db: usize) {
        if self.db != db {
            let _: () = q(&mut self.c, &["SELECT", &db.to_string()]);
            self.db = db;
        }
    }

    fn run(&mut self, line: &str) {
        let (db, cmdline) = match line.strip_prefix("1|") {
            Some(rest) => (1, rest),
            None => (0, line),
        };
        self.select(db);
        let mut args: Vec<Vec<u8>> = Vec::new();
        for tok in cmdline.split_whitespace() {
            if let Some(key) = tok.strip_prefix("{ver:").and_then(|t| t.strip_suffix('}')) {
                let r: Value = q(&mut self.c, &["GETVER", key]);
                let Value::Array(parts) = r else {
                    panic!("GETVER {key}: {r:?}")
                };
                let version = match &parts[1] {
                    Value::Int(v) => v.to_string(),
                    Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                    other => panic!("GETVER {key} version {other:?}"),
                };
                args.push(version.into_bytes());
            } else if let Some(key) = tok
                .strip_prefix("{lease:")
                .and_then(|t| t.strip_suffix('}'))
            {
                // A fresh cache-fill lease's token (the key must be absent or stale).
                let (_, _, token): (String, Option<Vec<u8>>, Option<i64>) =
                    q(&mut self.c, &["GETLEASE", key]);
                args.push(token.expect("a lease token").to_string().into_bytes());
            } else if tok == "{port}" {
                args.push(self.port.to_string().into_bytes());
            } else if let Some(n) = tok.strip_prefix("{lib:").and_then(|t| t.strip_suffix('}')) {
                // A function library named `n` with one function `n_f`.
                args.push(
                    format!(
                        "#!lua name={n}\nredis.register_function('{n}_f', function() return 1 end)"
                    )
                    .into_bytes(),
                );
            } else if tok == "{fdump}" {
                let payload: Vec<u8> = q(&mut self.c, &["FUNCTION", "DUMP"]);
                args.push(payload);
            } else if let Some(spec) = tok
                .strip_prefix("{scandump:")
                .and_then(|t| t.strip_suffix('}'))
            {
                // The data of `BF.SCANDUMP KEY ITER` (the key may hold ':').
                let (key, iter) = spec.rsplit_once(':').expect("{scandump:KEY:ITER}");
                let (_, data): (i64, Vec<u8>) = redis::cmd("BF.SCANDUMP")
                    .arg(key)
                    .arg(iter)
                    .query(&mut self.c)
                    .unwrap();
                args.push(data);
            } else if tok == "{empty}" {
                args.push(Vec::new());
            } else if let Some(key) = tok.strip_prefix("{dump:").and_then(|t| t.strip_suffix('}')) {
                let payload: Vec<u8> = q(&mut self.c, &["DUMP", key]);
                args.push(payload);
            } else {
                args.push(tok.as_bytes().to_vec());
            }
        }
        let mut cmd = redis::cmd(std::str::from_utf8(&args[0]).unwrap());
        for a in &args[1..] {
            cmd.arg(a.as_slice());
        }
        if let Err(e) = cmd.query::<Value>(&mut self.c) {
            panic!("example {line:?} failed on the primary: {e}");
        }
        // SWAPDB and FLUSH* do not change the selected database.
    }
}

#[test]
fn every_write_command_in_the_table_reaches_a_replica_with_the_same_outcome() {
    let p = Shoal::start(&[]);
    let r = Shoal::start(&[]);
    follow(&r, &p);
    let mut pc = p.client();
    let writes = write_commands(&mut pc);
    let examples = examples();
    let named: BTreeSet<String> = examples.iter().map(|(n, _)| n.to_string()).collect();
    let missing: Vec<&String> = writes.difference(&named).collect();
    assert!(
        missing.is_empty(),
        "write commands without an example here (add one, so no write command skips this test): {missing:?}"
    );
    let not_writes: Vec<&String> = named.difference(&writes).collect();
    assert!(
        not_writes.is_empty(),
        "examples for commands the table does not flag as writes: {not_writes:?}"
    );
    for (name, lines) in &examples {
        assert!(
            lines.iter().any(|l| {
                let cmd = l.strip_prefix("1|").unwrap_or(l);
                let mut words = cmd.split_whitespace();
                let first = words.next().unwrap_or("");
                // Subcommands (`function|load`) are named by their first two words.
                first.eq_ignore_ascii_case(name)
                    || words
                        .next()
                        .is_some_and(|w| format!("{first}|{w}").eq_ignore_ascii_case(name))
            }),
            "the example for {name} never runs {name}"
        );
    }
    let mut run = Runner {
        c: p.client(),
        db: 0,
        port: p.port,
    };
    let (flushall, rest): (Vec<_>, Vec<_>) =
        examples.iter().partition(|(name, _)| *name == "flushall");
    // First pass: after each command's example the replica must hold what the primary holds, so a
    // failure names the command.
    for (name, lines) in &rest {
        for l in lines {
            run.run(l);
        }
        assert_same_data(&p, &r, &format!("after the example of {name}"));
    }
    // SWAPDB ran last, so most of database 0's keys are now in database 1.
    assert!(
        dbsize(&p, 0) + dbsize(&p, 1) > 100,
        "the examples wrote data"
    );
    for (_, lines) in &flushall {
        for l in lines {
            run.run(l);
        }
    }
    assert_same_data(&p, &r, "after FLUSHALL ASYNC");
    // Second pass, after the flush, without waiting in between.
    for (_, lines) in &rest {
        for l in lines {
            run.run(l);
        }
    }
    assert_same_data(&p, &r, "after the second pass");
}

#[test]
fn a_set_stored_in_another_internal_order_on_the_replica_has_the_same_digest() {
    let p = Shoal::start(&[]);
    let r = Shoal::start(&[]);
    follow(&r, &p);
    let mut c = p.client();
    // Grow past the compact encodings, then punch holes: the primary's table keeps its history,
    // the replica builds each value from the effects (the first batch whole, then element
    // changes), so its internal order may differ.
    let batch = |lo: usize| lo..lo + 100;
    for lo in (0..2000).step_by(100) {
        let mut sadd = redis::cmd("SADD");
        sadd.arg("order:set");
        let mut ints = redis::cmd("SADD");
        ints.arg("order:ints");
        let mut hset = redis::cmd("HSET");
        hset.arg("order:hash");
        let mut zadd = redis::cmd("ZADD");
        zadd.arg("order:zset");
        for i in batch(lo) {
            sadd.arg(format!("member:{i}"));
            ints.arg(i);
            hset.arg(format!("f{i}")).arg(i);
            zadd.arg(i % 17).arg(format!("m{i}"));
        }
        for cmd in [sadd, ints, hset, zadd] {
            let _: () = cmd.query(&mut c).unwrap();
        }
    }
    for lo in (0..2000).step_by(100) {
        let mut srem = redis::cmd("SREM");
        srem.arg("order:set");
        let mut ints = redis::cmd("SREM");
        ints.arg("order:ints");
        let mut hdel = redis::cmd("HDEL");
        hdel.arg("order:hash");
        let mut zrem = redis::cmd("ZREM");
        zrem.arg("order:zset");
        for i in batch(lo).filter(|i| i % 3 != 0) {
            srem.arg(format!("member:{i}"));
            ints.arg(i);
            hdel.arg(format!("f{i}"));
            zrem.arg(format!("m{i}"));
        }
        for cmd in [srem, ints, hdel, zrem] {
            let _: () = cmd.query(&mut c).unwrap();
        }
    }
    let card: u64 = q(&mut c, &["SCARD", "order:set"]);
    assert_eq!(card, 667);
    assert_same_data(&p, &r, "after SADDs then SREMs");
    let mut rc = r.client();
    let mut on_p: Vec<String> = q(&mut c, &["SMEMBERS", "order:set"]);
    let mut on_r: Vec<String> = q(&mut rc, &["SMEMBERS", "order:set"]);
    on_p.sort();
    on_r.sort();
    assert_eq!(on_p, on_r, "the same members");
}

/// Stream bytes a primary appends for one small collection write, at most: a `SHOALDELTA` frame
/// (name, database, key, two versions, the ops) is about 120 bytes for the writes below. Redis
/// sends the command itself, 40 to 60 bytes here.
const STREAM_BYTES_PER_SMALL_WRITE_MAX: u64 = 200;

#[test]
fn collection_writes_reach_replicas_as_element_changes_not_whole_values() {
    let p = Shoal::start(&[]);
    let r = Shoal::start(&[]);
    follow(&r, &p);
    let mut c = p.client();
    let full_syncs = num(&mut c, "stats", "sync_full");
    // Each family: `writes` single-element commands against one growing (or shrinking) value,
    // pipelined 1000 at a time. A stream that carried whole values would grow with the square of
    // the collection's size (20,000 SADDs: gigabytes); element changes grow linearly.
    let mut family = |name: &str, writes: usize, cmd: &dyn Fn(usize) -> redis::Cmd| {
        let before = num(&mut c, "replication", "master_repl_offset");
        for lo in (0..writes).step_by(1000) {
            let mut pipe = redis::pipe();
            for i in lo..(lo + 1000).min(writes) {
                pipe.add_command(cmd(i)).ignore();
            }
            let _: () = pipe.query(&mut c).unwrap();
        }
        let grown = num(&mut c, "replication", "master_repl_offset") - before;
        assert!(
            grown <= writes as u64 * STREAM_BYTES_PER_SMALL_WRITE_MAX,
            "{writes} {name} writes grew the stream by {grown} bytes"
        );
    };
    family("SADD", 20_000, &|i| {
        redis::cmd("SADD")
            .arg("big:set")
            .arg(format!("member:{i}"))
            .clone()
    });
    family("SREM", 5_000, &|i| {
        redis::cmd("SREM")
            .arg("big:set")
            .arg(format!("member:{}", i * 3))
            .clone()
    });
    family("SPOP", 2_000, &|_| {
        redis::cmd("SPOP").arg("big:set").clone()
    });
    family("HSET", 10_000, &|i| {
        redis::cmd("HSET")
            .arg("big:hash")
            .arg(format!("f{i}"))
            .arg(i)
            .clone()
    });
    family("HINCRBY", 5_000, &|i| {
        redis::cmd("HINCRBY")
            .arg("big:hash")
            .arg(format!("f{}", i % 100))
            .arg(7)
            .clone()
    });
    family("HDEL", 3_000, &|i| {
        redis::cmd("HDEL")
            .arg("big:hash")
            .arg(format!("f{}", i * 2))
            .clone()
    });
    family("ZADD", 10_000, &|i| {
        redis::cmd("ZADD")
            .arg("big:zset")
            .arg(i % 97)
            .arg(format!("m{i}"))
            .clone()
    });
    family("ZINCRBY", 5_000, &|i| {
        redis::cmd("ZINCRBY")
            .arg("big:zset")
            .arg(1.5)
            .arg(format!("m{}", i % 500))
            .clone()
    });
    family("ZREM", 2_000, &|i| {
        redis::cmd("ZREM")
            .arg("big:zset")
            .arg(format!("m{}", i * 5))
            .clone()
    });
    family("ZPOPMIN", 1_000, &|_| {
        redis::cmd("ZPOPMIN").arg("big:zset").clone()
    });
    family("LPUSH/RPUSH", 10_000, &|i| {
        redis::cmd(if i % 2 == 0 { "LPUSH" } else { "RPUSH" })
            .arg("big:list")
            .arg(format!("element-{i}"))
            .clone()
    });
    family("LPOP/RPOP", 2_000, &|i| {
        redis::cmd(if i % 2 == 0 { "LPOP" } else { "RPOP" })
            .arg("big:list")
            .clone()
    });
    family("LSET/LINSERT/LREM", 1_500, &|i| match i % 3 {
        0 => redis::cmd("LSET").arg("big:list").arg(i).arg("set").clone(),
        1 => redis::cmd("LINSERT")
            .arg("big:list")
            .arg("BEFORE")
            .arg(format!("element-{}", i + 2))
            .arg("inserted")
            .clone(),
        _ => redis::cmd("LREM")
            .arg("big:list")
            .arg(1)
            .arg("inserted")
            .clone(),
    });
    family("LMOVE", 1_000, &|_| {
        redis::cmd("LMOVE")
            .arg("big:list")
            .arg("big:list")
            .arg("LEFT")
            .arg("RIGHT")
            .clone()
    });
    family("XADD", 10_000, &|i| {
        redis::cmd("XADD")
            .arg("big:stream")
            .arg(format!("{}-1", i + 1))
            .arg("field")
            .arg(i)
            .clone()
    });
    family("XGROUP CREATE", 1, &|_| {
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("big:stream")
            .arg("g")
            .arg(0)
            .clone()
    });
    family("XREADGROUP", 5_000, &|i| {
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg(format!("c{}", i % 3))
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg("big:stream")
            .arg(">")
            .clone()
    });
    family("XACK/XCLAIM/XDEL", 3_000, &|i| match i % 3 {
        0 => redis::cmd("XACK")
            .arg("big:stream")
            .arg("g")
            .arg(format!("{}-1", i + 1))
            .clone(),
        1 => redis::cmd("XCLAIM")
            .arg("big:stream")
            .arg("g")
            .arg("claimer")
            .arg(0)
            .arg(format!("{}-1", i + 1))
            .arg("JUSTID")
            .clone(),
        _ => redis::cmd("XDEL")
            .arg("big:stream")
            .arg(format!("{}-1", i + 1))
            .clone(),
    });
    family("XTRIM", 1_000, &|i| {
        redis::cmd("XTRIM")
            .arg("big:stream")
            .arg("MINID")
            .arg(format!("{}-1", i * 5))
            .clone()
    });
    family("APPEND", 10_000, &|i| {
        redis::cmd("APPEND")
            .arg("big:string")
            .arg(format!("chunk-{i};"))
            .clone()
    });
    family("SETRANGE", 1_000, &|i| {
        redis::cmd("SETRANGE")
            .arg("big:string")
            .arg(i * 7)
            .arg("XY")
            .clone()
    });
    family("EXPIRE/PERSIST", 1_000, &|i| {
        if i % 2 == 0 {
            redis::cmd("EXPIRE").arg("big:set").arg(100_000 + i).clone()
        } else {
            redis::cmd("PERSIST").arg("big:set").clone()
        }
    });
    family("LTRIM", 1, &|_| {
        redis::cmd("LTRIM").arg("big:list").arg(10).arg(-10).clone()
    });
    assert_same_data(&p, &r, "after element-level writes");
    let mut rc = r.client();
    assert_eq!(num(&mut rc, "replication", "shoal_stream_breaks"), 0);
    assert_eq!(
        num(&mut c, "stats", "sync_full"),
        full_syncs,
        "the replica never needed another full copy"
    );
    let on_p: Vec<String> = q(&mut c, &["LRANGE", "big:list", "0", "-1"]);
    let on_r: Vec<String> = q(&mut rc, &["LRANGE", "big:list", "0", "-1"]);
    assert_eq!(on_p, on_r, "the same list, in the same order");
    let on_p: String = q(&mut c, &["GET", "big:string"]);
    let on_r: String = q(&mut rc, &["GET", "big:string"]);
    assert_eq!(on_p, on_r);
    let on_p: Value = q(
        &mut c,
        &["XINFO", "STREAM", "big:stream", "FULL", "COUNT", "0"],
    );
    let on_r: Value = q(
        &mut rc,
        &["XINFO", "STREAM", "big:stream", "FULL", "COUNT", "0"],
    );
    assert_eq!(on_p, on_r, "the same stream, groups and PEL");
}

#[test]
fn concurrent_writers_of_the_same_collections_leave_the_replica_equal() {
    // Deltas only apply in the order they were made. Many connections (so several server
    // threads) writing the same few keys at once is where an ordering mistake would show: a
    // broken stream, a full copy, or different data.
    const WRITERS: usize = 8;
    const BATCHES: usize = 150;
    const PER_BATCH: usize = 10;
    let p = Shoal::start(&[]);
    let r = Shoal::start(&[]);
    follow(&r, &p);
    let mut c = p.client();
    let full_syncs = num(&mut c, "stats", "sync_full");
    std::thread::scope(|scope| {
        for w in 0..WRITERS {
            let p = &p;
            scope.spawn(move || {
                let mut c = p.client();
                for b in 0..BATCHES {
                    let mut pipe = redis::pipe();
                    for i in 0..PER_BATCH {
                        let n = (w * 7919 + b * 31 + i) % 64;
                        match (b + i) % 8 {
                            0 => pipe.cmd("LPUSH").arg("cc:list").arg(n),
                            1 => pipe.cmd("RPOP").arg("cc:list"),
                            2 => pipe.cmd("SADD").arg("cc:set").arg(n),
                            3 => pipe.cmd("SPOP").arg("cc:set"),
                            4 => pipe.cmd("HINCRBY").arg("cc:hash").arg(n % 8).arg(1),
                            5 => pipe.cmd("ZINCRBY").arg("cc:zset").arg(1).arg(n % 8),
                            6 => pipe.cmd("APPEND").arg("cc:str").arg(w),
                            _ => pipe.cmd("LREM").arg("cc:list").arg(1).arg(n),
                        };
                        pipe.ignore();
                    }
                    let _: () = pipe.query(&mut c).unwrap();
                }
            });
        }
    });
    assert_same_data(&p, &r, "after concurrent writers");
    let mut rc = r.client();
    assert_eq!(num(&mut rc, "replication", "shoal_stream_breaks"), 0);
    assert_eq!(num(&mut c, "stats", "sync_full"), full_syncs);
    let on_p: Vec<String> = q(&mut c, &["LRANGE", "cc:list", "0", "-1"]);
    let on_r: Vec<String> = q(&mut rc, &["LRANGE", "cc:list", "0", "-1"]);
    assert_eq!(on_p, on_r, "the same list, in the same order");
    let appended: String = q(&mut c, &["GET", "cc:str"]);
    let appends_per_writer = (0..BATCHES)
        .flat_map(|b| (0..PER_BATCH).map(move |i| (b + i) % 8))
        .filter(|&k| k == 6)
        .count();
    assert_eq!(appended.len(), WRITERS * appends_per_writer, "every APPEND");
}

/// Keeps a process paused with SIGSTOP; resumes it when dropped, pass or fail.
struct Paused<'a>(&'a Shoal);

impl<'a> Paused<'a> {
    fn new(s: &'a Shoal) -> Paused<'a> {
        s.signal("-STOP");
        Paused(s)
    }
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        self.0.signal("-CONT");
    }
}

#[test]
fn a_replica_further_behind_than_its_output_limit_catches_up_without_a_resync_loop() {
    let p = Shoal::start(&[]);
    let r = Shoal::start(&[]);
    let mut c = p.client();
    let _: () = q(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "client-output-buffer-limit",
            "slave 1mb 0 0",
        ],
    );
    let _: () = q(&mut c, &["SET", "seed", "1"]);
    follow(&r, &p);
    caught_up(&r, &p);
    let full_before = num(&mut c, "stats", "sync_full");
    let partial_before = num(&mut c, "stats", "sync_partial_ok");
    assert_eq!(full_before, 1, "the initial copy");
    let written_bytes;
    {
        let _paused = Paused::new(&r);
        // 16 MB: far beyond the 1 MB limit and beyond what loopback socket buffers hold.
        let value = "v".repeat(16 * 1024);
        let mut total = 0;
        for chunk in 0..32 {
            let mut pipe = redis::pipe();
            for i in 0..32 {
                pipe.cmd("SET")
                    .arg(format!("big:{chunk}:{i}"))
                    .arg(&value)
                    .ignore();
                total += value.len();
            }
            let _: () = pipe.query(&mut c).unwrap();
        }
        written_bytes = total;
        // While paused the replica acknowledged none of it: it is behind by more than the limit.
        let t = info(&mut c, "replication");
        let end: u64 = field(&t, "master_repl_offset").unwrap().parse().unwrap();
        let acked: u64 = field(&t, "slave0")
            .and_then(|s| {
                s.split(',')
                    .find_map(|kv| kv.strip_prefix("offset="))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or_else(|| panic!("no replica listed while paused: {t}"));
        assert!(
            end - acked > 8 * 1024 * 1024,
            "the paused replica is only {} bytes behind",
            end - acked
        );
    }
    assert!(written_bytes >= 16 * 1024 * 1024);
    // Bounded: the replica must catch up well within the harness's wait bound.
    let started = Instant::now();
    caught_up(&r, &p);
    let mut rc = r.client();
    wait_link_up(&mut rc);
    let took = started.elapsed();
    let full_after = num(&mut c, "stats", "sync_full");
    let partial_after = num(&mut c, "stats", "sync_partial_ok");
    assert_eq!(
        full_after, full_before,
        "no full copy after the pause (caught up in {took:?})"
    );
    assert!(
        partial_after <= partial_before + 1,
        "at most one partial resync, got {} (a drop-and-reconnect loop)",
        partial_after - partial_before
    );
    // And it stays caught up: no link flapping after the catch-up either.
    let _: () = q(&mut c, &["SET", "after", "1"]);
    assert_same_data(&p, &r, "after the paused replica caught up");
    assert_eq!(num(&mut c, "stats", "sync_full"), full_before);
    assert!(num(&mut c, "stats", "sync_partial_ok") <= partial_before + 1);
    assert!(
        num(&mut rc, "replication", "shoal_link_failures") <= 1,
        "the replica's link failed more than once"
    );
}

/// A directory for a node's snapshot that outlives the node's process (for restarts).
struct Dir(std::path::PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        Dir(common::scratch_dir(tag))
    }
    fn path(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_replica_restarted_after_shutdown_save_resumes_with_a_partial_resync() {
    let p = Shoal::start(&[]);
    let dir = Dir::new("shutdown-save");
    let mut r = Shoal::start(&["--dir", &dir.path()]);
    follow(&r, &p);
    let mut c = p.client();
    let mut pipe = redis::pipe();
    for i in 0..500 {
        pipe.cmd("SET").arg(format!("a:{i}")).arg(i).ignore();
        pipe.cmd("RPUSH").arg("list").arg(i).ignore();
    }
    let _: () = pipe.query(&mut c).unwrap();
    caught_up(&r, &p);
    {
        let mut rc = r.client();
        // No reply: the connection closes as the server exits.
        let _ = redis::cmd("SHUTDOWN").arg("SAVE").query::<()>(&mut rc);
    }
    assert!(
        r.wait_exit(),
        "the replica exits cleanly after SHUTDOWN SAVE"
    );
    assert!(
        dir.0.join("dump.shoal").exists(),
        "SHUTDOWN SAVE wrote the snapshot"
    );
    // Writes while the replica is away, well within the backlog.
    for i in 0..200 {
        let _: () = q(&mut c, &["SET", &format!("b:{i}"), "w"]);
    }
    let full_before = num(&mut c, "stats", "sync_full");
    let partial_before = num(&mut c, "stats", "sync_partial_ok");
    let r = Shoal::start(&[
        "--dir",
        &dir.path(),
        "--replicaof",
        "127.0.0.1",
        &p.port.to_string(),
    ]);
    let mut rc = r.client();
    wait_link_up(&mut rc);
    caught_up(&r, &p);
    assert_eq!(
        num(&mut c, "stats", "sync_full"),
        full_before,
        "the restarted replica got a full copy instead of continuing"
    );
    assert_eq!(num(&mut c, "stats", "sync_partial_ok"), partial_before + 1);
    let keys: u64 = q(&mut rc, &["DBSIZE"]);
    assert_eq!(keys, 701);
    assert_same_data(&p, &r, "after the restart");
}

/// `(replid, offset)` of a node as INFO replication reports them.
fn history(c: &mut redis::Connection) -> (String, u64) {
    let t = info(c, "replication");
    (
        field(&t, "master_replid").expect("master_replid"),
        field(&t, "master_repl_offset")
            .and_then(|v| v.parse().ok())
            .expect("master_repl_offset"),
    )
}

/// Waits until `down` is on exactly `up`'s history and offset (read before and after, so a
/// keep-alive in between does not count as agreement).
fn same_history(up: &mut redis::Connection, down: &mut redis::Connection, what: &str) {
    let mut last = None;
    let deadline = Instant::now() + common::WAIT_MAX;
    while Instant::now() < deadline {
        let a = history(up);
        let b = history(down);
        let a2 = history(up);
        if a == a2 && a == b {
            return;
        }
        last = Some((a, b, a2));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!("{what}: never on the same history and offset (up, down, up again): {last:?}");
}

#[test]
fn chained_replica_follows_a_replica_and_continues_when_it_is_promoted() {
    let a = Shoal::start(&[]);
    let b = Shoal::start(&[]);
    let cnode = Shoal::start(&[]);
    follow(&b, &a);
    follow(&cnode, &b);
    let mut ac = a.client();
    let mut bc = b.client();
    let mut cc = cnode.client();
    for i in 0..300 {
        let _: () = q(&mut ac, &["SET", &format!("k:{i}"), &format!("v{i}")]);
    }
    let _: () = q(&mut ac, &["HSET", "h", "a", "1", "b", "2"]);
    same_history(&mut ac, &mut cc, "C against A");
    assert_same_data(&a, &cnode, "C after writes on A");
    assert_eq!(num(&mut bc, "replication", "connected_slaves"), 1);
    assert!(
        text(&mut bc, "replication", "slave0").contains(&format!("port={}", cnode.port)),
        "B lists C: {}",
        info(&mut bc, "replication")
    );
    let role: Vec<Value> = q(&mut cc, &["ROLE"]);
    assert_eq!(role[0], Value::BulkString(b"slave".to_vec()));
    assert_eq!(
        role[2],
        Value::Int(b.port as i64),
        "ROLE on C names B: {role:?}"
    );
    assert_eq!(role[3], Value::BulkString(b"connected".to_vec()));

    // Promote B: C continues from B, on B's new history, without a full copy.
    let b_full = num(&mut bc, "stats", "sync_full");
    let b_partial_err = num(&mut bc, "stats", "sync_partial_err");
    let _: () = q(&mut bc, &["REPLICAOF", "NO", "ONE"]);
    for i in 0..100 {
        let _: () = q(&mut bc, &["SET", &format!("after:{i}"), "b"]);
    }
    let _: () = q(&mut bc, &["DEL", "k:0"]);
    same_history(&mut bc, &mut cc, "C against the promoted B");
    assert_same_data(&b, &cnode, "C after writes on the promoted B");
    assert_eq!(
        num(&mut bc, "stats", "sync_full"),
        b_full,
        "C needed a full copy from the promoted B"
    );
    assert_eq!(num(&mut bc, "stats", "sync_partial_err"), b_partial_err);
    assert_eq!(
        field(&info(&mut cc, "replication"), "master_link_status").as_deref(),
        Some("up")
    );
    let v: Option<String> = q(&mut cc, &["GET", "after:99"]);
    assert_eq!(v.as_deref(), Some("b"));
}
