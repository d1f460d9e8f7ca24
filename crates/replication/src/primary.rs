//! The primary's side of a replica link: answer PSYNC with a partial (`+CONTINUE`) or full
//! (`+FULLRESYNC` then a snapshot) synchronisation, then stream the backlog from the replica's offset
//! and read its `REPLCONF ACK <offset>` acknowledgements.
//!
//! A full copy: write recording is switched on and the stream offset O is taken *before* the first
//! shard is serialised; the snapshot is then written one shard lock at a time, and the stream from O
//! follows. Every write is either in the snapshot (its shard was read after it) or in the stream
//! after O, and the replica applies both by version, so nothing is lost and nothing counts twice.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use shoal_commands::ServerState;
use shoal_commands::repl::ReplicaInfo;
use shoal_resp::{Decoded, RequestDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::snapshot;
use crate::{data_watch, now_ms};

/// Stream bytes sent per write to a replica.
pub const SEND_CHUNK_BYTES: usize = 256 * 1024;

/// How a link ended.
#[derive(Debug)]
pub enum LinkEnd {
    Io(std::io::Error),
    /// The replica fell behind what the backlog holds, or past its output buffer limit.
    TooSlow(u64),
    Closed,
    RoleChanged,
}

/// Decides partial or full resync for `PSYNC replid offset`.
fn can_continue(srv: &ServerState, replid: &str, offset: i64) -> bool {
    if offset < 0 {
        return false;
    }
    let ids = srv.repl.ids.lock().expect("ids lock").clone();
    let id_ok = replid == ids.replid || (replid == ids.replid2 && offset <= ids.second_offset);
    id_ok
        && srv
            .repl
            .backlog
            .lock()
            .expect("backlog lock")
            .holds(offset as u64)
}

/// Runs the link until it ends. `ip` is the replica's address as seen from here.
pub async fn serve(
    srv: Arc<ServerState>,
    mut stream: TcpStream,
    ip: String,
    listening_port: u16,
    client_id: u64,
    replid: String,
    offset: i64,
) -> LinkEnd {
    let repl = &srv.repl;
    // From now on writes must be recorded for the stream.
    shoal_keyspace::write_log::set_enabled(true);
    repl.active.store(true, Relaxed);
    let start = if can_continue(&srv, &replid, offset) {
        repl.sync_partial_ok.fetch_add(1, Relaxed);
        let current = repl.ids.lock().expect("ids lock").replid.clone();
        let line = format!("+CONTINUE {current}\r\n");
        if let Err(e) = stream.write_all(line.as_bytes()).await {
            return LinkEnd::Io(e);
        }
        tracing::info!(replica = %ip, offset, "partial resynchronization accepted");
        offset as u64
    } else {
        if replid != "?" {
            repl.sync_partial_err.fetch_add(1, Relaxed);
        }
        repl.sync_full.fetch_add(1, Relaxed);
        match full_sync(&srv, &mut stream, &ip).await {
            Ok(o) => o,
            Err(e) => return LinkEnd::Io(e),
        }
    };
    let info = Arc::new(ReplicaInfo {
        id: client_id,
        ip: ip.clone(),
        listening_port: (listening_port as u64).into(),
        ack_offset: start.into(),
        last_ack_ms: now_ms().into(),
        online: true.into(),
    });
    repl.replicas
        .lock()
        .expect("replicas lock")
        .push(info.clone());
    let end = stream_loop(&srv, &mut stream, start, &info).await;
    repl.replicas
        .lock()
        .expect("replicas lock")
        .retain(|r| !Arc::ptr_eq(r, &info));
    repl.wake_ack_waiters(true);
    match &end {
        LinkEnd::TooSlow(lag) => {
            tracing::warn!(replica = %ip, lag_bytes = lag, "replica link closed: replica too far behind (backlog or client-output-buffer-limit slave); it will resynchronize")
        }
        other => tracing::info!(replica = %ip, reason = ?other, "replica link closed"),
    }
    end
}

async fn full_sync(srv: &ServerState, stream: &mut TcpStream, ip: &str) -> std::io::Result<u64> {
    let (replid, offset) = {
        let ids = srv.repl.ids.lock().expect("ids lock");
        (
            ids.replid.clone(),
            srv.repl.backlog.lock().expect("backlog lock").end_offset(),
        )
    };
    let (keys, _) = (0..srv.ks.databases()).fold((0, 0), |acc, db| {
        let (k, v) = srv.ks.db_size(db);
        (acc.0 + k, acc.1 + v)
    });
    tracing::info!(replica = %ip, offset, keys, "starting full resynchronization");
    // The key count lets a replica refuse to be wiped by an empty primary (see replica.rs).
    let line = format!("+FULLRESYNC {replid} {offset} {keys}\r\n");
    stream.write_all(line.as_bytes()).await?;
    let mut w = snapshot::Writer::new();
    stream.write_all(&w.header(&replid, offset)).await?;
    for i in 0..srv.ks.shard_count() {
        // One shard lock at a time; serialising happens off the async runtime's critical path.
        let chunk = w.shard(&srv.ks, i);
        stream.write_all(&chunk).await?;
    }
    stream.write_all(&w.finish()).await?;
    tracing::info!(replica = %ip, bytes = w.bytes_written, keys = w.keys_written, "snapshot sent");
    Ok(offset)
}

async fn stream_loop(
    srv: &ServerState,
    stream: &mut TcpStream,
    start: u64,
    info: &ReplicaInfo,
) -> LinkEnd {
    let (mut rd, mut wr) = stream.split();
    // Sending and reading acknowledgements run concurrently: a replica that is always behind
    // still has its acks read (the sync strategy depends on them).
    let send = async {
        let mut data = data_watch().subscribe();
        let epoch = srv.repl.epoch.load(Relaxed);
        let mut sent = start;
        loop {
            if srv.repl.epoch.load(Relaxed) != epoch {
                return LinkEnd::RoleChanged;
            }
            let (chunk, end) = {
                let b = srv.repl.backlog.lock().expect("backlog lock");
                (b.read(sent, SEND_CHUNK_BYTES), b.end_offset())
            };
            let limit = srv.config().client_output_buffer_limit.replica;
            let lag = end.saturating_sub(sent);
            let Some(chunk) = chunk else {
                return LinkEnd::TooSlow(lag);
            };
            if limit.hard_bytes > 0 && lag > limit.hard_bytes {
                return LinkEnd::TooSlow(lag);
            }
            if !chunk.is_empty() {
                if let Err(e) = wr.write_all(&chunk).await {
                    return LinkEnd::Io(e);
                }
                sent += chunk.len() as u64;
                continue;
            }
            // Nothing to send: ask writers for a wake-up, then look once more before sleeping.
            data.borrow_and_update();
            srv.repl.link_will_wait();
            if srv.repl.backlog.lock().expect("backlog lock").end_offset() > sent {
                continue;
            }
            tokio::select! {
                changed = data.changed() => {
                    if changed.is_err() {
                        return LinkEnd::Closed;
                    }
                    // Let the writers that are ready run first, so one send carries many of
                    // their effects instead of one syscall per write.
                    tokio::task::yield_now().await;
                }
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    };
    let acks = async {
        let mut inbuf = Vec::with_capacity(4096);
        let mut decoder = RequestDecoder::default();
        let mut ranges = Vec::new();
        loop {
            match rd.read_buf(&mut inbuf).await {
                Ok(0) => return LinkEnd::Closed,
                Ok(_) => {
                    if read_acks(srv, &mut inbuf, &mut decoder, &mut ranges, info).is_err() {
                        return LinkEnd::Closed;
                    }
                    if inbuf.len() > ACK_BUFFER_BYTES_MAX {
                        return LinkEnd::Closed;
                    }
                }
                Err(e) => return LinkEnd::Io(e),
            }
        }
    };
    tokio::select! {
        end = send => end,
        end = acks => end,
    }
}

/// A replica only sends short REPLCONF frames; more unparsed bytes than this is garbage.
pub const ACK_BUFFER_BYTES_MAX: usize = 64 * 1024;

/// Parses `REPLCONF ACK <offset>` frames from the replica.
fn read_acks(
    srv: &ServerState,
    inbuf: &mut Vec<u8>,
    decoder: &mut RequestDecoder,
    ranges: &mut Vec<std::ops::Range<usize>>,
    info: &ReplicaInfo,
) -> Result<(), ()> {
    let mut pos = 0;
    loop {
        match decoder.decode(inbuf, pos, ranges) {
            Ok(Decoded::Frame { end, inline }) => {
                let src: &[u8] = if inline {
                    decoder.inline_bytes()
                } else {
                    inbuf
                };
                let args: Vec<&[u8]> = ranges.iter().map(|r| &src[r.clone()]).collect();
                if args.len() >= 3
                    && args[0].eq_ignore_ascii_case(b"REPLCONF")
                    && args[1].eq_ignore_ascii_case(b"ACK")
                {
                    if let Some(off) = std::str::from_utf8(args[2])
                        .ok()
                        .and_then(|s| s.parse().ok())
                    {
                        info.ack_offset.fetch_max(off, Relaxed);
                        info.last_ack_ms.store(now_ms(), Relaxed);
                        srv.repl.wake_ack_waiters(false);
                    }
                }
                pos = end;
            }
            Ok(Decoded::Empty { end }) => pos = end,
            Ok(Decoded::Incomplete) => break,
            Err(_) => return Err(()),
        }
    }
    inbuf.drain(..pos);
    decoder.shift(pos, ranges);
    Ok(())
}
