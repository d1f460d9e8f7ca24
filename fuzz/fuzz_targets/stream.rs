//! Fuzz target: the replication stream as a replica reads it. Arbitrary bytes are cut into frames
//! by the same RESP decoder the link uses, each frame decoded as an effect and applied to a
//! keyspace by version. Nothing may panic (a broken stream is an error the link acts on), and the
//! keyspace's accounting must equal a recount afterwards.
//!
//! Run on a machine with nightly: `cargo +nightly fuzz run stream` (from the repository root).

#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_keyspace::{EncodingLimits, Keyspace};
use shoal_replication::stream;
use shoal_resp::{Decoded, Limits, RequestDecoder};

/// Frames applied per input.
const FRAMES_MAX: usize = 256;

fuzz_target!(|input: &[u8]| {
    let ks = Keyspace::new(16, 16, 1);
    let limits = EncodingLimits::default();
    let mut decoder = RequestDecoder::new(Limits::default());
    let mut ranges = Vec::new();
    let mut pos = 0;
    for _ in 0..FRAMES_MAX {
        let (end, inline) = match decoder.decode(input, pos, &mut ranges) {
            Ok(Decoded::Frame { end, inline }) => (end, inline),
            Ok(Decoded::Empty { end }) => {
                pos = end;
                continue;
            }
            Ok(Decoded::Incomplete) | Err(_) => break,
        };
        let src: &[u8] = if inline { decoder.inline_bytes() } else { input };
        let args: Vec<&[u8]> = ranges.iter().map(|r| &src[r.clone()]).collect();
        if let Ok(effect) = stream::decode(&args, ks.databases()) {
            let _ = stream::apply(&ks, &effect, &limits, 1_000_000, pos % 2 == 0);
        }
        pos = end;
    }
    for i in 0..ks.shard_count() {
        ks.lock(i).check_invariants();
    }
});
