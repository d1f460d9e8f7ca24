//! Bitmaps over the wire, beyond the golden corpus (which compares replies with redis-server):
//! writes reach a replica as the bytes they changed and leave it holding the same strings, a bit
//! offset is bounded by `proto-max-bulk-len` as in Redis, and a large bitmap takes SETBIT without
//! its size showing on the replication stream.

mod common;

use common::{Shoal, caught_up, follow, info_u64, q};

#[test]
fn bitmap_writes_reach_a_replica_and_leave_equal_strings() {
    let p = Shoal::start(&[]);
    let r = Shoal::start(&[]);
    follow(&r, &p);
    let mut c = p.client();
    let writes: &[&[&str]] = &[
        &["SETBIT", "b", "7", "1"],
        &["SETBIT", "b", "1000", "1"],
        &["SETBIT", "b", "7", "0"],
        &["SET", "s", "foobar"],
        &["SETBIT", "s", "3", "1"],
        &[
            "BITFIELD", "f", "SET", "i8", "0", "-100", "INCRBY", "u4", "#3", "9",
        ],
        &[
            "BITFIELD", "f", "OVERFLOW", "FAIL", "INCRBY", "i8", "0", "-100",
        ],
        &[
            "BITFIELD", "f", "OVERFLOW", "SAT", "INCRBY", "u2", "100", "7",
        ],
        &["BITOP", "XOR", "x", "b", "s", "f"],
        &["BITOP", "NOT", "n", "s"],
        &["BITOP", "AND", "gone", "missing"],
    ];
    for w in writes {
        let _: redis::Value = q(&mut c, w);
    }
    caught_up(&r, &p);
    let mut rc = r.client();
    for key in ["b", "s", "f", "x", "n", "gone"] {
        let on_primary: Option<Vec<u8>> = q(&mut c, &["GET", key]);
        let on_replica: Option<Vec<u8>> = q(&mut rc, &["GET", key]);
        assert_eq!(on_primary, on_replica, "{key}");
    }
    let b: Vec<u8> = q(&mut c, &["GET", "b"]);
    assert_eq!(b.len(), 126, "bit 1000 lives in byte 125");
    let count: i64 = q(&mut rc, &["BITCOUNT", "b"]);
    assert_eq!(count, 1);
}

#[test]
fn a_bit_offset_is_bounded_by_proto_max_bulk_len_and_a_big_bitmap_streams_bytes() {
    let p = Shoal::start(&["--proto-max-bulk-len", "1mb"]);
    let r = Shoal::start(&[]);
    follow(&r, &p);
    let mut c = p.client();
    let limit_bits = (1u64 << 20) * 8;
    let err = redis::cmd("SETBIT")
        .arg("big")
        .arg(limit_bits)
        .arg(1)
        .query::<i64>(&mut c)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("bit offset is not an integer or out of range"),
        "{err}"
    );
    let old: i64 = q(
        &mut c,
        &["SETBIT", "big", &(limit_bits - 1).to_string(), "1"],
    );
    assert_eq!(old, 0);
    caught_up(&r, &p);
    let before = info_u64(&mut c, "replication", "master_repl_offset");
    for i in 0..100u64 {
        let _: i64 = q(&mut c, &["SETBIT", "big", &(i * 8191).to_string(), "1"]);
    }
    let after = info_u64(&mut c, "replication", "master_repl_offset");
    // A hundred one-byte changes, not a hundred copies of a 1 MB string.
    assert!(
        after - before < 100 * 1024,
        "stream grew {} bytes",
        after - before
    );
    caught_up(&r, &p);
    let mut rc = r.client();
    let count: i64 = q(&mut rc, &["BITCOUNT", "big"]);
    assert_eq!(count, 101);
    let len: i64 = q(&mut rc, &["STRLEN", "big"]);
    assert_eq!(len, 1 << 20);
}
