//! Fuzz target: the command layer. The input is a stream of RESP requests (decoded by the server's
//! own decoder) run in order by two clients against an in-process server, with a clock that moves
//! forward. Whatever the requests, nothing may panic, and afterwards every shard's accounting must
//! equal a recount (`Shard::check_invariants`: key counts, volatile counts, memory bytes).
//!
//! The first input byte is control: bit 0 picks a server with a small `maxmemory` (so eviction
//! runs), bit 1 one with keyspace notifications on, bits 2-7 advance the clock per request (in ms).
//! The four servers are built once per process (building one per input made the target crawl)
//! and emptied with FLUSHALL before each input, so commands that change server-wide settings
//! (CONFIG, CLIENT, ...) are not run: a crash must replay from its input alone.
//!
//! Commands that could run without end on a fixed clock (scripts) or would wait on I/O are not
//! run either: the layer's answers for them are tested elsewhere.
//!
//! Run on a machine with nightly: `cargo +nightly fuzz run commands` (from the repository root).

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use shoal_commands::{Args, Client, ClientHandle, Hooks, ServerState, config, execute};
use shoal_resp::{Decoded, Limits, RequestDecoder};

/// Requests run per input: enough for interesting sequences, few enough to stay fast.
const REQUESTS_MAX: usize = 256;

/// Commands left out (see the header; PFSELFTEST takes seconds per call: a slow unit the
/// campaign found).
const SKIPPED: &[&[u8]] = &[
    b"eval", b"evalsha", b"eval_ro", b"evalsha_ro", b"fcall", b"fcall_ro", b"function",
    b"script", b"debug", b"shutdown", b"monitor", b"save", b"bgsave", b"replicaof", b"slaveof",
    b"migrate", b"failover", b"cluster", b"sync", b"psync", b"config", b"client", b"slowlog",
    b"latency", b"module", b"acl", b"hello", b"auth", b"reset", b"quit",
    b"pfselftest",
];

/// The four servers (see the header), built on first use.
fn servers() -> &'static [ServerState; 4] {
    static SERVERS: std::sync::OnceLock<[ServerState; 4]> = std::sync::OnceLock::new();
    SERVERS.get_or_init(|| {
        std::array::from_fn(|i| {
            let mut cfg = config::Config::default();
            // Bounded values: a fuzzer must not ask for gigabytes with SETRANGE or SETBIT.
            cfg.proto_max_bulk_len = 1 << 20;
            if i & 1 != 0 {
                cfg.maxmemory = 2 << 20;
            }
            if i & 2 != 0 {
                cfg.notify_keyspace_events = config::NotifyClasses(
                    shoal_keyspace::notify::parse_classes(b"KEAnm").expect("valid classes"),
                );
            }
            ServerState::new(cfg, 1_000_000, 7, Hooks::default())
        })
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, rest)) = input.split_first() else {
        return;
    };
    let srv = &servers()[usize::from(control & 3)];
    let step_ms = u64::from(control >> 2);
    let mut clients: Vec<Client> = (1..=2)
        .map(|id| {
            let h = Arc::new(ClientHandle::new(
                id,
                format!("127.0.0.1:{id}"),
                "127.0.0.1:6379".into(),
                0,
            ));
            Client::new(h, true)
        })
        .collect();
    let mut out = Vec::new();
    let flush = shoal_commands::OwnedArgs::new([b"FLUSHALL"].iter());
    let _ = execute(srv, &mut clients[0], &flush.args(), &mut out, 1_000_000);
    let mut decoder = RequestDecoder::new(Limits::default());
    let mut ranges = Vec::new();
    let mut pos = 0;
    let mut now_ms = 1_000_000u64;
    for n in 0..REQUESTS_MAX {
        let (end, inline) = match decoder.decode(rest, pos, &mut ranges) {
            Ok(Decoded::Frame { end, inline }) => (end, inline),
            Ok(Decoded::Empty { end }) => {
                pos = end;
                continue;
            }
            Ok(Decoded::Incomplete) | Err(_) => break,
        };
        let src: &[u8] = if inline { decoder.inline_bytes() } else { rest };
        let args = Args::new(src, &ranges);
        let name = args.get(0).to_ascii_lowercase();
        if !SKIPPED.contains(&name.as_slice()) {
            out.clear();
            let client = &mut clients[n % 2];
            let _ = execute(srv, client, &args, &mut out, now_ms);
            shoal_commands::effects::emit_logged(srv, now_ms);
            shoal_commands::notify::publish_pending(srv, now_ms);
        }
        now_ms += step_ms;
        pos = end;
    }
    for client in &mut clients {
        shoal_commands::client_closed(srv, client);
    }
    for i in 0..srv.ks.shard_count() {
        srv.ks.lock(i).check_invariants();
    }
});
