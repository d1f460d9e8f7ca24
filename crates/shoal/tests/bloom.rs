//! Bloom filters (BF.*) over the wire. redis-server here has no RedisBloom module, so replies are
//! checked byte for byte against RedisBloom 2.6's own tests and sources (tests/flow/
//! test_overall.py: BF.INFO and BF.DEBUG figures, error texts; src/rebloom.c: RESP3 replies);
//! then a filter is dumped and loaded in chunks, reaches a replica byte-identical (an add streams
//! its hash pair, not the filter), survives a snapshot restart and DUMP/RESTORE, and is bounded
//! by `bf-max-bytes`.

mod common;

use common::{Shoal, caught_up, follow, info_u64, q, scratch_dir};

/// Sends each request and compares its exact reply.
fn expect(c: &mut common::Raw, cases: &[(&[&str], &str)]) {
    for (args, want) in cases {
        assert_eq!(c.call(args), *want, "{args:?}");
    }
}

#[test]
fn replies_match_redisbloom_byte_for_byte() {
    let s = Shoal::start(&[]);
    let mut c = s.raw();
    expect(
        &mut c,
        &[
            (&["BF.RESERVE", "bf", "0.001", "100"], "+OK\r\n"),
            (
                &["BF.INFO", "bf"],
                "*10\r\n+Capacity\r\n:100\r\n+Size\r\n:296\r\n+Number of filters\r\n:1\r\n\
                 +Number of items inserted\r\n:0\r\n+Expansion rate\r\n:2\r\n",
            ),
            (&["BF.INFO", "bf", "capacity"], "*1\r\n:100\r\n"),
            (&["BF.INFO", "bf", "SIZE"], "*1\r\n:296\r\n"),
            (&["BF.INFO", "bf", "filters"], "*1\r\n:1\r\n"),
            (&["BF.INFO", "bf", "items"], "*1\r\n:0\r\n"),
            (&["BF.INFO", "bf", "expansion"], "*1\r\n:2\r\n"),
            (
                &["BF.INFO", "bf", "wrong_value"],
                "-Invalid information value\r\n",
            ),
            (
                &["BF.INFO", "bf", "capacity", "size"],
                "-ERR wrong number of arguments for 'bf.info' command\r\n",
            ),
            (&["BF.INFO", "missing"], "-ERR not found\r\n"),
            (&["BF.RESERVE", "bf", "0.01", "10"], "-ERR item exists\r\n"),
            (
                &["BF.RESERVE", "x", "blah", "10"],
                "-ERR bad error rate\r\n",
            ),
            (
                &["BF.RESERVE", "x", "7.7", "10"],
                "-ERR (0 < error rate range < 1) \r\n",
            ),
            (
                &["BF.RESERVE", "x", "1", "1000"],
                "-ERR (0 < error rate range < 1) \r\n",
            ),
            (
                &["BF.RESERVE", "x", "0.01", "blah"],
                "-ERR bad capacity\r\n",
            ),
            (
                &["BF.RESERVE", "x", "0.01", "0"],
                "-ERR (capacity should be larger than 0)\r\n",
            ),
            (
                &["BF.RESERVE", "x", "0.01", "18446744073709551616"],
                "-ERR bad capacity\r\n",
            ),
            (
                &["BF.RESERVE", "x", "0.01", "4", "expansion"],
                "-ERR no expansion\r\n",
            ),
            (
                &["BF.RESERVE", "x", "0.01", "4", "expansion", "0"],
                "-ERR expansion should be greater or equal to 1\r\n",
            ),
            (
                &["BF.RESERVE", "x", "0.01", "4", "expansion", "str"],
                "-ERR bad expansion\r\n",
            ),
            (
                &[
                    "BF.RESERVE",
                    "x",
                    "0.01",
                    "1000",
                    "nonscaling",
                    "expansion",
                    "2",
                ],
                "-Nonscaling filters cannot expand\r\n",
            ),
            (
                &["BF.RESERVE", "x", "0.01"],
                "-ERR wrong number of arguments for 'bf.reserve' command\r\n",
            ),
            // Items: added (1), already there (0); BF.MADD answers per item.
            (&["BF.ADD", "test", "foo"], ":1\r\n"),
            (&["BF.EXISTS", "test", "foo"], ":1\r\n"),
            (&["BF.EXISTS", "test", "bar"], ":0\r\n"),
            (&["BF.MADD", "test", "foo", "bar"], "*2\r\n:0\r\n:1\r\n"),
            (
                &["BF.MEXISTS", "test", "nonexist", "foo"],
                "*2\r\n:0\r\n:1\r\n",
            ),
            (
                &["BF.MEXISTS", "nokey", "a", "b", "c"],
                "*3\r\n:0\r\n:0\r\n:0\r\n",
            ),
            (&["BF.CARD", "test"], ":2\r\n"),
            (&["BF.CARD", "not_exist"], ":0\r\n"),
            (&["TYPE", "test"], "+MBbloom--\r\n"),
            (&["OBJECT", "ENCODING", "test"], "$3\r\nraw\r\n"),
            // Another type: WRONGTYPE, except BF.EXISTS which answers 0 as RedisBloom does.
            (&["SET", "str", "v"], "+OK\r\n"),
            (
                &["BF.ADD", "str", "a"],
                "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
            ),
            (
                &["BF.CARD", "str"],
                "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
            ),
            (
                &["BF.RESERVE", "str", "0.01", "10"],
                "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
            ),
            (&["BF.EXISTS", "str", "a"], ":0\r\n"),
            (
                &["GET", "test"],
                "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
            ),
            // BF.INSERT: options by their first letters; its own bare error texts.
            (
                &[
                    "BF.INSERT",
                    "missingFilter",
                    "NOCREATE",
                    "ITEMS",
                    "foo",
                    "bar",
                ],
                "-ERR not found\r\n",
            ),
            (
                &["BF.INSERT", "missingFilter", "DONTEXIST", "NOCREATE"],
                "-Unknown argument received\r\n",
            ),
            (
                &["BF.INSERT", "missingFilter", "NOCREATE", "ITEMS"],
                "-ERR wrong number of arguments for 'bf.insert' command\r\n",
            ),
            (
                &["BF.INSERT", "missingFilter", "NOCREATE", "CAPACITY"],
                "-ERR wrong number of arguments for 'bf.insert' command\r\n",
            ),
            (
                &[
                    "BF.INSERT",
                    "missingFilter",
                    "CAPACITY",
                    "0.3",
                    "ITEMS",
                    "a",
                ],
                "-Bad capacity\r\n",
            ),
            (
                &["BF.INSERT", "missingFilter", "ERROR", "big", "ITEMS", "a"],
                "-Bad error rate\r\n",
            ),
            (
                &[
                    "BF.INSERT",
                    "missingFilter",
                    "EXPANSION",
                    "0",
                    "ITEMS",
                    "foo",
                ],
                "-Bad argument received\r\n",
            ),
            (
                &[
                    "BF.INSERT",
                    "missingFilter",
                    "EXPANSION",
                    "big",
                    "ITEMS",
                    "a",
                ],
                "-Bad expansion\r\n",
            ),
            (
                &[
                    "BF.INSERT",
                    "missingFilter",
                    "ERROR",
                    "0.001",
                    "CAPACITY",
                    "50000",
                    "EXPANSION",
                    "2",
                    "ITEMS",
                    "foo",
                ],
                "*1\r\n:1\r\n",
            ),
            (
                &["BF.DEBUG", "missingFilter"],
                "*2\r\n$6\r\nsize:1\r\n$81\r\nbytes:98880 bits:791040 hashes:11 hashwidth:64 \
                 capacity:50000 size:1 ratio:0.0005\r\n",
            ),
            (
                &[
                    "BF.INSERT",
                    "missingFilter",
                    "ERROR",
                    "0.1",
                    "ITEMS",
                    "foo",
                    "bar",
                    "baz",
                ],
                "*3\r\n:0\r\n:1\r\n:1\r\n",
            ),
            // A full non-scaling filter: an error for the item, and BF.INSERT stops there.
            (&["BF.RESERVE", "ns", "0.01", "3", "NONSCALING"], "+OK\r\n"),
            (
                &["BF.MADD", "ns", "0", "1", "2"],
                "*3\r\n:1\r\n:1\r\n:1\r\n",
            ),
            (
                &["BF.ADD", "ns", "extra"],
                "-ERR non scaling filter is full\r\n",
            ),
            (
                &["BF.INSERT", "ns", "ITEMS", "1", "x", "y"],
                "*2\r\n:0\r\n-ERR non scaling filter is full\r\n",
            ),
            (&["BF.INFO", "ns", "expansion"], "*1\r\n$-1\r\n"),
            (
                &["BF.SCANDUMP", "ns"],
                "-ERR wrong number of arguments for 'bf.scandump' command\r\n",
            ),
            (
                &["BF.SCANDUMP", "ns", "str"],
                "-Second argument must be numeric\r\n",
            ),
            (&["BF.SCANDUMP", "nokey", "0"], "-ERR not found\r\n"),
            (
                &["BF.LOADCHUNK", "ns", "str", "data"],
                "-ERR Second argument must be numeric\r\n",
            ),
            (
                &["BF.LOADCHUNK", "new", "1", "junk"],
                "-ERR received bad data\r\n",
            ),
            (&["BF.LOADCHUNK", "new", "5", "junk"], "-ERR not found\r\n"),
        ],
    );
    // Sub-filters grow by the expansion with tighter error rates (test_debug's figures).
    expect(
        &mut c,
        &[(&["BF.RESERVE", "grow", "0.01", "10"], "+OK\r\n")],
    );
    for i in 0..100 {
        c.call(&["BF.ADD", "grow", &i.to_string()]);
    }
    let debug = c.call(&["BF.DEBUG", "grow"]);
    let lines: Vec<&str> = debug
        .split("\r\n")
        .filter(|l| l.starts_with(['s', 'b']))
        .collect();
    assert_eq!(
        lines,
        [
            "size:99",
            "bytes:16 bits:128 hashes:8 hashwidth:64 capacity:10 size:10 ratio:0.005",
            "bytes:32 bits:256 hashes:9 hashwidth:64 capacity:20 size:20 ratio:0.0025",
            "bytes:72 bits:576 hashes:10 hashwidth:64 capacity:40 size:40 ratio:0.00125",
            "bytes:160 bits:1280 hashes:11 hashwidth:64 capacity:80 size:29 ratio:0.000625",
        ]
    );
    // test_expansion: 100 items in filters of capacity 4 take 23, 5 and 4 sub-filters.
    for (exp, filters) in [("1", 23), ("2", 5), ("4", 4)] {
        let key = format!("exp{exp}");
        c.call(&["BF.RESERVE", &key, "0.01", "4", "expansion", exp]);
        for i in 0..100 {
            c.call(&["BF.ADD", &key, &i.to_string()]);
        }
        assert_eq!(
            c.call(&["BF.INFO", &key, "filters"]),
            format!("*1\r\n:{filters}\r\n"),
            "{key}"
        );
    }
}

#[test]
fn resp3_answers_booleans_and_maps() {
    let s = Shoal::start(&[]);
    let mut c = s.raw();
    c.call(&["HELLO", "3"]);
    expect(
        &mut c,
        &[
            (&["BF.ADD", "b", "x"], "#t\r\n"),
            (&["BF.ADD", "b", "x"], "#f\r\n"),
            (&["BF.MADD", "b", "x", "y"], "*2\r\n#f\r\n#t\r\n"),
            (&["BF.EXISTS", "b", "y"], "#t\r\n"),
            (&["BF.MEXISTS", "b", "y", "z"], "*2\r\n#t\r\n#f\r\n"),
            (&["BF.CARD", "b"], ":2\r\n"),
            (
                &["BF.INFO", "b"],
                "%5\r\n+Capacity\r\n:100\r\n+Size\r\n:240\r\n+Number of filters\r\n:1\r\n\
                 +Number of items inserted\r\n:2\r\n+Expansion rate\r\n:2\r\n",
            ),
            (
                &["BF.INFO", "b", "items"],
                "%1\r\n+Number of items inserted\r\n:2\r\n",
            ),
        ],
    );
}

/// BF.SCANDUMP key 0 gives the header, then chunks until the iterator comes back 0; feeding the
/// pairs to BF.LOADCHUNK rebuilds the same filter.
#[test]
fn scandump_and_loadchunk_copy_a_filter() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: () = q(&mut c, &["BF.RESERVE", "src", "0.001", "1000"]);
    for i in 0..3000 {
        let _: i64 = q(&mut c, &["BF.ADD", "src", &format!("item:{i}")]);
    }
    let mut chunks: Vec<(i64, Vec<u8>)> = Vec::new();
    let mut iter = 0i64;
    for _ in 0..100 {
        let (next, data): (i64, Vec<u8>) = redis::cmd("BF.SCANDUMP")
            .arg("src")
            .arg(iter)
            .query(&mut c)
            .unwrap();
        if next == 0 {
            assert!(data.is_empty());
            break;
        }
        chunks.push((next, data));
        iter = next;
    }
    let links: i64 = q::<Vec<i64>>(&mut c, &["BF.INFO", "src", "filters"])[0];
    assert_eq!(
        chunks.len() as i64,
        1 + links,
        "the header, then one chunk per sub-filter"
    );
    // RedisBloom's header layout: 20 bytes, then 53 per sub-filter.
    assert_eq!(chunks[0].1.len() as i64, 20 + 53 * links);
    for (it, data) in &chunks {
        let _: () = redis::cmd("BF.LOADCHUNK")
            .arg("dst")
            .arg(*it)
            .arg(data.as_slice())
            .query(&mut c)
            .unwrap();
    }
    let a: Vec<String> = q(&mut c, &["BF.DEBUG", "src"]);
    let b: Vec<String> = q(&mut c, &["BF.DEBUG", "dst"]);
    assert_eq!(a, b);
    for i in 0..3000 {
        let found: i64 = q(&mut c, &["BF.EXISTS", "dst", &format!("item:{i}")]);
        assert_eq!(found, 1, "item:{i}");
    }
    let src: Vec<u8> = q(&mut c, &["DUMP", "src"]);
    let dst: Vec<u8> = q(&mut c, &["DUMP", "dst"]);
    assert_eq!(src, dst);
    // A chunk past the end of its sub-filter is refused.
    let (_, data) = &chunks[1];
    let mut big = data.clone();
    big.push(0);
    let err = redis::cmd("BF.LOADCHUNK")
        .arg("dst")
        .arg(chunks[1].0 + 1)
        .arg(big)
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(
        err.to_string().contains("Too big for current filter"),
        "{err}"
    );
}

#[test]
fn filters_reach_a_replica_byte_identical_and_adds_stream_hash_pairs() {
    let p = Shoal::start(&[]);
    let r = Shoal::start(&[]);
    follow(&r, &p);
    let mut c = p.client();
    let _: () = q(&mut c, &["BF.RESERVE", "big", "0.0001", "100000"]);
    let _: Vec<i64> = q(
        &mut c,
        &["BF.INSERT", "ins", "CAPACITY", "5", "ITEMS", "a", "b", "c"],
    );
    let _: () = q(&mut c, &["BF.RESERVE", "ns", "0.01", "2", "NONSCALING"]);
    caught_up(&r, &p);
    let before = info_u64(&mut c, "replication", "master_repl_offset");
    for i in 0..200 {
        let _: i64 = q(&mut c, &["BF.ADD", "big", &format!("x{i}")]);
    }
    let after = info_u64(&mut c, "replication", "master_repl_offset");
    // 200 adds to a filter of about 240 KB: hash pairs, not copies of the filter.
    assert!(
        after - before < 200 * 200,
        "{} bytes streamed",
        after - before
    );
    // Growth (new sub-filters) and a full non-scaling filter replicate the same way.
    for i in 0..40 {
        let _: i64 = q(&mut c, &["BF.ADD", "ins", &format!("y{i}")]);
    }
    let full = p.raw().call(&["BF.MADD", "ns", "1", "2", "3"]);
    assert!(
        full.ends_with("-ERR non scaling filter is full\r\n"),
        "{full}"
    );
    let _: Vec<i64> = q(&mut c, &["BF.MADD", "auto", "p", "q"]);
    caught_up(&r, &p);
    let mut rc = r.client();
    for key in ["big", "ins", "ns", "auto"] {
        let on_primary: Vec<u8> = q(&mut c, &["DUMP", key]);
        let on_replica: Vec<u8> = q(&mut rc, &["DUMP", key]);
        assert_eq!(on_primary, on_replica, "{key}");
    }
    let card: i64 = q(&mut rc, &["BF.CARD", "ins"]);
    assert!(card >= 40, "{card}");
    let digest = |c: &mut redis::Connection| -> String {
        q::<Vec<String>>(c, &["BF.DEBUG", "ins"]).join("|")
    };
    assert_eq!(digest(&mut c), digest(&mut rc));
}

#[test]
fn filters_survive_a_snapshot_restart_and_dump_restore() {
    let dir = scratch_dir("bloom");
    let set_dir = format!("dir={}", dir.display());
    let items: Vec<String> = (0..500).map(|i| format!("k{i}")).collect();
    let debug_before: Vec<String>;
    {
        let s = Shoal::start(&["--set", &set_dir]);
        let mut c = s.client();
        let _: () = q(&mut c, &["BF.RESERVE", "f", "0.01", "50", "EXPANSION", "3"]);
        let _: Vec<i64> = redis::cmd("BF.MADD")
            .arg("f")
            .arg(&items)
            .query(&mut c)
            .unwrap();
        debug_before = q(&mut c, &["BF.DEBUG", "f"]);
        let dump: Vec<u8> = q(&mut c, &["DUMP", "f"]);
        let _: () = redis::cmd("RESTORE")
            .arg("restored")
            .arg(0)
            .arg(dump)
            .query(&mut c)
            .unwrap();
        let _: () = q(&mut c, &["SAVE"]);
    }
    let s = Shoal::start(&["--set", &set_dir]);
    let mut c = s.client();
    for key in ["f", "restored"] {
        let debug: Vec<String> = q(&mut c, &["BF.DEBUG", key]);
        assert_eq!(debug, debug_before, "{key}");
        let found: Vec<i64> = redis::cmd("BF.MEXISTS")
            .arg(key)
            .arg(&items)
            .query(&mut c)
            .unwrap();
        assert!(found.iter().all(|&f| f == 1), "{key}: no false negatives");
        let t: String = q(&mut c, &["TYPE", key]);
        assert_eq!(t, "MBbloom--");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bf_max_bytes_bounds_a_filter_and_memory_is_accounted() {
    let s = Shoal::start(&["--bf-max-bytes", "4096"]);
    let mut c = s.raw();
    expect(
        &mut c,
        &[
            // 100,000 items at 1% need about 120 KB.
            (
                &["BF.RESERVE", "huge", "0.01", "100000"],
                "-ERR could not create filter\r\n",
            ),
            (&["BF.RESERVE", "f", "0.01", "1000"], "+OK\r\n"),
        ],
    );
    // The first sub-filter takes 1,440 bytes; the second (2,000 items, 0.25%) would pass 4 KB.
    let mut refused = 0;
    for i in 0..1500 {
        let r = c.call(&["BF.ADD", "f", &i.to_string()]);
        if r == "-ERR problem inserting into filter\r\n" {
            refused += 1;
        } else {
            assert!(r == ":1\r\n" || r == ":0\r\n", "{r}");
        }
    }
    assert!(refused > 0);
    assert_eq!(c.call(&["BF.INFO", "f", "filters"]), "*1\r\n:1\r\n");
    // MEMORY USAGE counts the bits.
    let mut rc = s.client();
    let _: () = q(&mut rc, &["CONFIG", "SET", "bf-max-bytes", "128mb"]);
    let _: () = q(&mut rc, &["BF.RESERVE", "m", "0.001", "100000"]);
    let usage: i64 = q(&mut rc, &["MEMORY", "USAGE", "m"]);
    let size: i64 = q::<Vec<i64>>(&mut rc, &["BF.INFO", "m", "size"])[0];
    assert!(
        usage >= size - 200 && usage < size + 1000,
        "{usage} vs {size}"
    );
}
