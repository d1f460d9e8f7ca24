//! Fuzz target: the request decoder on arbitrary bytes, fed in two chunkings — whole, and in
//! pieces with the consumed bytes drained and `shift` called between reads, as a connection does.
//! Both must finish without panicking, keep every range inside the bytes it indexes, always make
//! progress, and observe the same frames and the same protocol error.
//!
//! The first input byte is control, not data: its low six bits give the piece size, bit 6 picks
//! small limits (so limit checks are reached) instead of the defaults.
//!
//! Run on a machine with nightly: `cargo +nightly fuzz run decoder` (from the repository root).

#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_resp::{Decoded, Limits, ProtocolError, RequestDecoder};

type Frame = Vec<Vec<u8>>;

/// Decodes `input` arriving in pieces of `piece` bytes; returns the frames and the closing error.
fn run(input: &[u8], piece: usize, limits: Limits) -> (Vec<Frame>, Option<ProtocolError>) {
    let mut d = RequestDecoder::new(limits);
    let mut buf: Vec<u8> = Vec::new();
    let mut args = Vec::new();
    let mut frames = Vec::new();
    let mut pos = 0;
    for chunk in input.chunks(piece.max(1)) {
        buf.extend_from_slice(chunk);
        loop {
            match d.decode(&buf, pos, &mut args) {
                Ok(Decoded::Frame { end, inline }) => {
                    assert!(pos < end && end <= buf.len(), "frame {pos}..{end}");
                    let src: &[u8] = if inline { d.inline_bytes() } else { &buf };
                    assert!(args.iter().all(|r| r.start <= r.end && r.end <= src.len()));
                    frames.push(args.iter().map(|r| src[r.clone()].to_vec()).collect());
                    pos = end;
                }
                Ok(Decoded::Empty { end }) => {
                    assert!(pos < end && end <= buf.len(), "empty {pos}..{end}");
                    pos = end;
                }
                Ok(Decoded::Incomplete) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
        assert!(args.iter().all(|r| pos <= r.start && r.end <= buf.len()));
        let _ = d.bulk_bytes_pending(buf.len());
        // Drain what was consumed, as the connection does between reads.
        if pos > 0 {
            buf.drain(..pos);
            d.shift(pos, &mut args);
            pos = 0;
        }
    }
    (frames, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let piece = usize::from(control & 0x3f) + 1;
    let limits = if control & 0x40 != 0 {
        Limits {
            bulk_bytes_max: 16,
            multibulk_args_max: 4,
            inline_bytes_max: 8,
        }
    } else {
        Limits::default()
    };
    let whole = run(input, input.len(), limits);
    let pieces = run(input, piece, limits);
    assert_eq!(whole, pieces, "outcome depends on chunking (piece {piece})");
});
