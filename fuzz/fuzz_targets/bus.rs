//! Fuzz target: what a node reads from a peer on the cluster bus. Arbitrary bytes are cut into
//! requests by the same reply parser and limits the bus uses (`bus_limits`), and each request is
//! decoded as the node decodes it (`decode_request`: `RAFT <verb> <json>` into openraft's vote,
//! append and snapshot requests, forwarded proposals and lease beats). Nothing may panic: a
//! malformed request is an error that closes the connection. The parser must consume what it
//! says it consumed and always make progress.
//!
//! Run on a machine with nightly: `cargo +nightly fuzz run bus` (from the repository root).

#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_resp::parse_reply;
use shoal_server::raft::network::{bus_limits, decode_request};

/// Requests decoded per input.
const REQUESTS_MAX: usize = 64;

fuzz_target!(|input: &[u8]| {
    let limits = bus_limits();
    let mut rest = input;
    for _ in 0..REQUESTS_MAX {
        match parse_reply(rest, &limits) {
            Ok(Some((req, used))) => {
                assert!(
                    used > 0 && used <= rest.len(),
                    "used {used} of {}",
                    rest.len()
                );
                let _ = decode_request(req);
                rest = &rest[used..];
            }
            Ok(None) | Err(_) => break,
        }
    }
});
