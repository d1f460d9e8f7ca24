//! HyperLogLog over the wire, beyond the golden corpus (which compares replies and bytes with
//! redis-server): PFADD, PFMERGE and PFCOUNT's cached estimate reach a replica and leave it holding
//! the same bytes, a PFADD on a dense HLL streams a few bytes rather than the 12 KB value, and the
//! estimate of 100,000 distinct elements is within the standard error Redis promises (0.81%).

mod common;

use common::{Shoal, caught_up, follow, info_u64, q};

const DENSE_BYTES: usize = 12304;

fn elements(prefix: &str, from: usize, n: usize) -> Vec<String> {
    (from..from + n).map(|i| format!("{prefix}:{i}")).collect()
}

fn pfadd(c: &mut redis::Connection, key: &str, els: &[String]) -> i64 {
    redis::cmd("PFADD").arg(key).arg(els).query(c).unwrap()
}

#[test]
fn hll_writes_reach_a_replica_as_the_same_bytes() {
    let p = Shoal::start(&[]);
    let r = Shoal::start(&[]);
    follow(&r, &p);
    let mut c = p.client();
    // Sparse, then dense after enough elements; a merge of both; an empty one; a merge created.
    pfadd(&mut c, "small", &elements("s", 0, 20));
    for chunk in 0..10 {
        pfadd(&mut c, "big", &elements("b", chunk * 500, 500));
    }
    let _: i64 = q(&mut c, &["PFADD", "empty"]);
    let _: () = q(&mut c, &["PFMERGE", "merged", "small", "big"]);
    let _: () = q(&mut c, &["PFMERGE", "sparse_merged", "small", "empty"]);
    // PFCOUNT stores the estimate in the header: the replica gets those bytes too.
    let n: i64 = q(&mut c, &["PFCOUNT", "small"]);
    assert!((19..=21).contains(&n), "{n}");
    let _: i64 = q(&mut c, &["PFCOUNT", "big"]);
    pfadd(&mut c, "small", &elements("s", 20, 5));
    let _: String = q(&mut c, &["PFDEBUG", "ENCODING", "small"]);
    let _: i64 = q(&mut c, &["PFDEBUG", "TODENSE", "sparse_merged"]);
    caught_up(&r, &p);
    let mut rc = r.client();
    for key in ["small", "big", "empty", "merged", "sparse_merged"] {
        let on_primary: Vec<u8> = q(&mut c, &["GET", key]);
        let on_replica: Vec<u8> = q(&mut rc, &["GET", key]);
        assert_eq!(on_primary, on_replica, "{key}");
        assert_eq!(&on_primary[..4], b"HYLL", "{key}");
    }
    let big: Vec<u8> = q(&mut c, &["GET", "big"]);
    assert_eq!((big.len(), big[4]), (DENSE_BYTES, 0), "dense");
    let small: Vec<u8> = q(&mut c, &["GET", "small"]);
    assert_eq!(small[4], 1, "sparse");
    // The replica's PFCOUNT gives the primary's estimate without changing its bytes.
    let before: Vec<u8> = q(&mut rc, &["GET", "small"]);
    assert_eq!(
        before[15] & 0x80,
        0x80,
        "the estimate is stale after the last PFADD"
    );
    let on_replica: i64 = q(&mut rc, &["PFCOUNT", "small"]);
    let after: Vec<u8> = q(&mut rc, &["GET", "small"]);
    assert_eq!(before, after);
    let on_primary: i64 = q(&mut c, &["PFCOUNT", "small"]);
    assert_eq!(on_replica, on_primary);
}

#[test]
fn a_pfadd_on_a_dense_hll_streams_bytes_not_the_value() {
    let p = Shoal::start(&[]);
    let r = Shoal::start(&[]);
    follow(&r, &p);
    let mut c = p.client();
    for chunk in 0..10 {
        pfadd(&mut c, "d", &elements("d", chunk * 500, 500));
    }
    let enc: String = q(&mut c, &["PFDEBUG", "ENCODING", "d"]);
    assert_eq!(enc, "dense");
    caught_up(&r, &p);
    let before = info_u64(&mut c, "replication", "master_repl_offset");
    let mut written = 0;
    for i in 0..100 {
        written += pfadd(&mut c, "d", &[format!("new:{i}")]);
    }
    assert!(written > 0);
    let after = info_u64(&mut c, "replication", "master_repl_offset");
    // A hundred small changes, not a hundred copies of a 12 KB value.
    assert!(
        after - before < 100 * 200,
        "{} bytes streamed for 100 PFADDs",
        after - before
    );
    caught_up(&r, &p);
    let mut rc = r.client();
    let on_primary: Vec<u8> = q(&mut c, &["GET", "d"]);
    let on_replica: Vec<u8> = q(&mut rc, &["GET", "d"]);
    assert_eq!(on_primary, on_replica);
}

#[test]
fn the_estimate_of_100k_elements_is_within_the_standard_error() {
    let p = Shoal::start(&[]);
    let mut c = p.client();
    let n = 100_000usize;
    for chunk in 0..(n / 1000) {
        pfadd(&mut c, "e", &elements("e", chunk * 1000, 1000));
    }
    let est: i64 = q(&mut c, &["PFCOUNT", "e"]);
    let err = (est as f64 - n as f64).abs() / n as f64;
    // 0.81% is one standard error; these elements are fixed, so the estimate is too.
    assert!(err < 0.0081 * 3.0, "estimate {est} for {n}: error {err}");
    // Split in two and merged back, the estimate is the same.
    pfadd(&mut c, "half1", &elements("e", 0, n / 2));
    for chunk in (n / 2 / 1000)..(n / 1000) {
        pfadd(&mut c, "half2", &elements("e", chunk * 1000, 1000));
    }
    let union: i64 = q(&mut c, &["PFCOUNT", "half1", "half2"]);
    assert_eq!(union, est);
    let _: () = q(&mut c, &["PFMERGE", "m", "half1", "half2"]);
    let merged: i64 = q(&mut c, &["PFCOUNT", "m"]);
    assert_eq!(merged, est);
}
