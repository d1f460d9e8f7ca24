//! Property tests of the request decoder, driven the way a connection drives it: bytes arrive in
//! arbitrary chunks, the caller decodes from the start of the next frame, and between reads it may
//! drain consumed bytes from the front of its buffer and call `shift` to rebase a partial frame.
//!
//! Checked for any input: no panic; every `Frame`/`Empty` ends inside the buffer and after its
//! start (progress); argument ranges lie inside the bytes they index; partial-frame ranges survive
//! `shift` pointing at the same bytes; the outcome (frames, then the error if any) does not depend
//! on chunking or draining. For valid multibulk and inline frames, the decoded arguments are
//! exactly the encoded ones, also when garbage follows them. Case counts are bounded so the file
//! runs in seconds; the cargo-fuzz target (`fuzz/fuzz_targets/decoder.rs`) searches longer.
//!
//! The process's address space is capped ([`ADDRESS_SPACE_BYTES_MAX`]): a decoder that loops
//! allocating (a bug this file exists to catch) then aborts this binary within seconds instead of
//! exhausting the machine's memory and getting other processes killed.

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use shoal_resp::{Decoded, Limits, ProtocolError, RequestDecoder};

type Frame = Vec<Vec<u8>>;

/// Address space this test process may use; decoding inputs of a few hundred bytes needs far less.
const ADDRESS_SPACE_BYTES_MAX: u64 = 1 << 30;

/// Lowers the soft `RLIMIT_AS` of this process to [`ADDRESS_SPACE_BYTES_MAX`] (once).
fn cap_address_space() {
    #[cfg(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            /// `struct rlimit` on 64-bit Linux.
            #[repr(C)]
            struct Rlimit {
                cur: u64,
                max: u64,
            }
            unsafe extern "C" {
                fn getrlimit(resource: i32, rlim: *mut Rlimit) -> i32;
                fn setrlimit(resource: i32, rlim: *const Rlimit) -> i32;
            }
            const RLIMIT_AS: i32 = 9;
            let mut lim = Rlimit { cur: 0, max: 0 };
            // SAFETY: libc calls with a struct laid out as the kernel expects on these targets;
            // lowering a soft limit needs no privilege and touches only this process.
            unsafe {
                if getrlimit(RLIMIT_AS, &mut lim) == 0 {
                    lim.cur = lim.cur.min(ADDRESS_SPACE_BYTES_MAX);
                    setrlimit(RLIMIT_AS, &lim);
                }
            }
        });
    }
}

/// What a connection observes: the frames it ran, then the protocol error that closed it, if any.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    frames: Vec<Frame>,
    error: Option<ProtocolError>,
}

/// Feeds `input` in pieces ending at `cuts` (plus the end). After piece `i`, if `drains[i]`, the
/// consumed bytes are removed from the buffer front and the decoder is told with `shift`.
fn run(input: &[u8], cuts: &[usize], drains: &[bool], limits: Limits) -> Outcome {
    cap_address_space();
    let mut ends: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
    ends.push(input.len());
    ends.sort_unstable();
    ends.dedup();

    let mut d = RequestDecoder::new(limits);
    let mut buf: Vec<u8> = Vec::new();
    let mut args = Vec::new();
    let mut frames = Vec::new();
    // Start of the next (or current, partly decoded) frame in `buf`.
    let mut pos = 0;
    let mut fed = 0;
    for (i, &end_of_piece) in ends.iter().enumerate() {
        buf.extend_from_slice(&input[fed..end_of_piece]);
        fed = end_of_piece;
        loop {
            let _ = d.bulk_bytes_pending(buf.len());
            match d.decode(&buf, pos, &mut args) {
                Ok(Decoded::Frame { end, inline }) => {
                    assert!(
                        pos < end && end <= buf.len(),
                        "frame {pos}..{end} of {}",
                        buf.len()
                    );
                    let src: &[u8] = if inline { d.inline_bytes() } else { &buf };
                    for r in &args {
                        assert!(r.start <= r.end && r.end <= src.len(), "range {r:?}");
                        if !inline {
                            assert!(pos <= r.start && r.end <= end, "range {r:?} outside frame");
                        }
                    }
                    frames.push(args.iter().map(|r| src[r.clone()].to_vec()).collect());
                    pos = end;
                }
                Ok(Decoded::Empty { end }) => {
                    assert!(
                        pos < end && end <= buf.len(),
                        "empty {pos}..{end} of {}",
                        buf.len()
                    );
                    pos = end;
                }
                Ok(Decoded::Incomplete) => break,
                Err(e) => {
                    return Outcome {
                        frames,
                        error: Some(e),
                    };
                }
            }
        }
        // A partial frame's arguments so far lie in the unconsumed part of the buffer.
        for r in &args {
            assert!(
                pos <= r.start && r.start <= r.end && r.end <= buf.len(),
                "partial {r:?}"
            );
        }
        if drains.get(i).copied().unwrap_or(false) && pos > 0 {
            let before: Frame = args.iter().map(|r| buf[r.clone()].to_vec()).collect();
            buf.drain(..pos);
            d.shift(pos, &mut args);
            pos = 0;
            let after: Frame = args.iter().map(|r| buf[r.clone()].to_vec()).collect();
            assert_eq!(before, after, "shift must keep partial arguments in place");
        }
    }
    Outcome {
        frames,
        error: None,
    }
}

fn whole(input: &[u8], limits: Limits) -> Outcome {
    run(input, &[], &[], limits)
}

/// Default limits, or small ones so the limit checks are reached with short inputs.
fn limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        Just(Limits::default()),
        (0usize..64, 0usize..8, 1usize..48).prop_map(|(bulk, args, inline)| Limits {
            bulk_bytes_max: bulk,
            multibulk_args_max: args,
            inline_bytes_max: inline,
        }),
    ]
}

/// Bytes built from RESP-shaped tokens, so random inputs reach deep decoder states.
fn resp_ish() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"*".to_vec()),
        Just(b"$".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"-".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"'".to_vec()),
        Just(b"\\".to_vec()),
        Just(b"\\x4".to_vec()),
        Just(b"PING".to_vec()),
        Just(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n".to_vec()),
        (0u64..30).prop_map(|n| n.to_string().into_bytes()),
        Just(b"99999999999999999999".to_vec()),
        any::<u8>().prop_map(|b| vec![b]),
    ];
    prop::collection::vec(token, 0..80).prop_map(|t| t.concat())
}

/// Cut points and drain decisions for one chunking of an input of up to `len` bytes.
fn chunking(len: usize) -> impl Strategy<Value = (Vec<usize>, Vec<bool>)> {
    (
        prop::collection::vec(0..=len, 0..12),
        prop::collection::vec(any::<bool>(), 0..13),
    )
}

/// One request as sent, and the arguments it must decode to (`None`: nothing to run).
#[derive(Clone, Debug)]
struct Request {
    bytes: Vec<u8>,
    args: Option<Frame>,
}

fn multibulk(args: &[Vec<u8>]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

fn request() -> impl Strategy<Value = Request> {
    let bulk_args = prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..6);
    let word = prop::collection::vec(
        prop::sample::select(b"abcdefghijklmnopqrstuvwxyzABCXYZ0123456789-_:.".to_vec()),
        1..8,
    );
    let inline_args = prop::collection::vec(word, 1..5);
    prop_oneof![
        4 => bulk_args.prop_map(|a| Request { bytes: multibulk(&a), args: Some(a) }),
        2 => (inline_args, any::<bool>()).prop_map(|(a, crlf)| {
            let mut bytes = a.join(&b' ');
            bytes.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
            Request { bytes, args: Some(a) }
        }),
        1 => prop::sample::select(vec![&b"*0\r\n"[..], b"*-1\r\n", b"\r\n", b"  \n"])
            .prop_map(|b| Request { bytes: b.to_vec(), args: None }),
    ]
}

fn requests() -> impl Strategy<Value = (Vec<Request>, Vec<u8>, Vec<Frame>)> {
    prop::collection::vec(request(), 1..8).prop_map(|reqs| {
        let bytes = reqs.iter().flat_map(|r| r.bytes.clone()).collect();
        let frames = reqs.iter().filter_map(|r| r.args.clone()).collect();
        (reqs, bytes, frames)
    })
}

/// Cases per property unless `PROPTEST_CASES` says otherwise; keeps the file at a few seconds.
const CASES: u32 = 512;
/// Seed unless `PROPTEST_RNG_SEED` says otherwise: CI runs the same cases every time, and the
/// fuzz target is where new inputs are searched for.
const SEED: u64 = 0x5eed_5ba1;

fn config() -> ProptestConfig {
    let from_env = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            from_env.cases
        } else {
            CASES
        },
        rng_seed: if std::env::var_os("PROPTEST_RNG_SEED").is_some() {
            from_env.rng_seed
        } else {
            RngSeed::Fixed(SEED)
        },
        ..from_env
    }
}

proptest! {
    #![proptest_config(config())]

    /// Arbitrary bytes, whole or in pieces: the checks inside `run` hold, and chunking and
    /// draining change nothing the connection observes.
    #[test]
    fn arbitrary_bytes_decode_the_same_in_any_chunking(
        input in prop::collection::vec(any::<u8>(), 0..400),
        (cuts, drains) in chunking(400),
        limits in limits(),
    ) {
        let expected = whole(&input, limits);
        prop_assert_eq!(run(&input, &cuts, &drains, limits), expected);
    }

    #[test]
    fn resp_shaped_bytes_decode_the_same_in_any_chunking(
        input in resp_ish(),
        (cuts, drains) in chunking(600),
        limits in limits(),
    ) {
        let expected = whole(&input, limits);
        prop_assert_eq!(run(&input, &cuts, &drains, limits), expected);
    }

    /// Valid requests decode to exactly their arguments, however the bytes are split.
    #[test]
    fn valid_requests_yield_their_arguments(
        (_reqs, bytes, frames) in requests(),
        (cuts, drains) in chunking(1200),
    ) {
        let out = run(&bytes, &cuts, &drains, Limits::default());
        prop_assert_eq!(out, Outcome { frames, error: None });
    }

    /// Garbage after valid requests cannot change the requests before it.
    #[test]
    fn garbage_after_valid_requests_leaves_them_intact(
        (_reqs, mut bytes, frames) in requests(),
        garbage in prop_oneof![resp_ish(), prop::collection::vec(any::<u8>(), 1..100)],
        (cuts, drains) in chunking(1300),
    ) {
        bytes.extend_from_slice(&garbage);
        let out = run(&bytes, &cuts, &drains, Limits::default());
        prop_assert!(out.frames.len() >= frames.len(), "lost frames: {:?}", out);
        prop_assert_eq!(&out.frames[..frames.len()], &frames[..]);
    }

    /// A request byte-at-a-time, draining after every byte, still decodes exactly.
    #[test]
    fn byte_at_a_time_with_drains_yields_the_arguments(
        (_reqs, bytes, frames) in requests(),
    ) {
        let cuts: Vec<usize> = (0..bytes.len()).collect();
        let drains = vec![true; bytes.len() + 1];
        let out = run(&bytes, &cuts, &drains, Limits::default());
        prop_assert_eq!(out, Outcome { frames, error: None });
    }
}

/// Lengths announced before their bytes arrive are never trusted for allocation or indexing.
#[test]
fn huge_announced_lengths_wait_for_bytes() {
    let limits = Limits::default();
    let out = run(
        b"*1073741824\r\n$536870912\r\nabc",
        &[3, 14, 20],
        &[true; 4],
        limits,
    );
    assert_eq!(
        out,
        Outcome {
            frames: vec![],
            error: None
        }
    );
    let out = whole(b"*1\r\n$536870913\r\n", limits);
    assert_eq!(out.error.map(|e| e.0), Some("invalid bulk length".into()));
}

/// A count line is limited by its length, wherever the read that completes it ends. (Whole, the
/// line `*1` passes a 2-byte limit; cut after its `\r`, the same line was rejected as too long.)
#[test]
fn count_line_limit_does_not_depend_on_read_boundaries() {
    let limits = Limits {
        inline_bytes_max: 2,
        ..Limits::default()
    };
    let input = b"*1\r\n$1\r\na\r\n";
    let expected = Outcome {
        frames: vec![vec![b"a".to_vec()]],
        error: None,
    };
    assert_eq!(whole(input, limits), expected);
    assert_eq!(
        run(input, &[3], &[], limits),
        expected,
        "cut after the count's \\r"
    );
    assert_eq!(
        run(input, &[7], &[], limits),
        expected,
        "cut after the bulk length's \\r"
    );
}

/// An inline request with a NUL byte is answered or rejected, not split forever: Redis's
/// `sdssplitargs` stops at NUL; the decoder once pushed empty arguments without end (and the
/// server, sent `GET a\0b\r\n`, allocated until it died).
#[test]
fn inline_nul_byte_terminates() {
    for input in [&b"GET a\0b\r\n"[..], b"\0\r\n", b"GET\0\r\nPING\r\n"] {
        let out = whole(input, Limits::default());
        assert!(out.frames.len() <= 2, "{input:?}: {out:?}");
    }
}
