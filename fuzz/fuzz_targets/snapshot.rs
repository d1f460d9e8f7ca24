//! Fuzz target: the snapshot loader (start-up loads and full syncs read it). Arbitrary bytes must
//! load or be refused as corrupt, never panic; whatever loads leaves a keyspace whose accounting
//! equals a recount. The first byte picks whether expired keys are skipped (start-up) or kept
//! (a replica's full sync).
//!
//! Run on a machine with nightly: `cargo +nightly fuzz run snapshot` (from the repository root).

#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_keyspace::{EncodingLimits, Keyspace};

fuzz_target!(|input: &[u8]| {
    let Some((&control, bytes)) = input.split_first() else {
        return;
    };
    let ks = Keyspace::new(16, 16, 1);
    let limits = EncodingLimits::default();
    let _ = shoal_replication::snapshot::load_all_meta(
        &ks,
        bytes,
        &limits,
        1_000_000,
        control & 1 == 0,
    );
    for i in 0..ks.shard_count() {
        ks.lock(i).check_invariants();
    }
});
