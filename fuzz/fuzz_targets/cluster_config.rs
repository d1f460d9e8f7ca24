//! Fuzz target: what a node reads back about the cluster (a configuration from the Raft log or a
//! snapshot, a change proposed by a peer). JSON that parses as a `Config` or a `Change` must be
//! checked, never trusted: applying arbitrary changes to a configuration either succeeds with the
//! invariants intact (one owner per slot, owners are primaries, the epoch grows) or is refused.
//!
//! Run on a machine with nightly: `cargo +nightly fuzz run cluster_config` (from the repository
//! root).

#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_cluster::{Change, Config};

fuzz_target!(|input: &[u8]| {
    // A configuration read back is checked as it is deserialised.
    if let Ok(cfg) = serde_json::from_slice::<Config>(input) {
        assert_eq!(cfg.invariant_violation(), None);
    }
    // A list of changes applied in order to a fresh configuration.
    if let Ok(changes) = serde_json::from_slice::<Vec<Change>>(input) {
        let mut cfg = Config::new();
        for change in changes.iter().take(64) {
            let before = cfg.epoch();
            if cfg.apply(change).is_ok() {
                assert!(cfg.epoch() >= before, "the epoch never goes back");
            }
            assert_eq!(cfg.invariant_violation(), None, "after {change:?}");
        }
    }
});
