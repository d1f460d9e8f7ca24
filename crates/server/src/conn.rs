//! One client connection: read bytes, decode every complete request in the buffer, run each, and
//! answer the whole batch with one write (pipelining). Enforces the per-connection limits: query
//! buffer, output buffer, idle timeout; and closes on protocol errors after sending the error, as
//! Redis does.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use shoal_commands::state::ReplyMode;
use shoal_commands::{Args, Client, ClientHandle, ServerState, config};
use shoal_resp::{Decoded, Limits, ReplyWriter, RequestDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::now_ms;

/// Bytes read per socket read when no large bulk is pending.
pub const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Replies accumulated within one batch before they are written out, so a long pipeline of large
/// replies never sits in memory at once.
pub const OUTPUT_FLUSH_BYTES: usize = 64 * 1024;
/// Largest single read reservation when a big bulk argument is arriving.
pub const READ_RESERVE_MAX_BYTES: usize = 16 * 1024 * 1024;

/// Why a connection ended (logged).
#[derive(Debug)]
enum End {
    Eof,
    Quit,
    Killed,
    Io(std::io::Error),
    Protocol,
    QueryBufferLimit(usize),
    OutputBufferLimit(usize),
    IdleTimeout,
    /// PSYNC: the connection becomes a replica link.
    Handoff(String, i64),
}

/// Limits read from config at connection start and refreshed per batch (CONFIG SET applies to
/// existing connections at their next batch).
struct ConnLimits {
    decoder: Limits,
    query_buf_bytes_max: usize,
    output: config::OutputLimit,
    idle_timeout_s: u64,
}

fn current_limits(srv: &ServerState) -> ConnLimits {
    let v = srv.values();
    ConnLimits {
        decoder: Limits {
            bulk_bytes_max: v.get_u64("proto-max-bulk-len") as usize,
            ..Limits::default()
        },
        query_buf_bytes_max: v.get_u64("client-query-buffer-limit") as usize,
        output: config::output_limit(v.get("client-output-buffer-limit"), "normal"),
        idle_timeout_s: v.get_u64("timeout"),
    }
}

/// Runs a connection to completion.
pub async fn serve(srv: Arc<ServerState>, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let local = stream
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let id = srv.new_client_id();
    let handle = Arc::new(ClientHandle::new(id, peer.clone(), local, now_ms()));
    let wake = Arc::new(Notify::new());
    {
        let w = wake.clone();
        *handle.waker.lock().expect("waker lock") = Some(Box::new(move || w.notify_one()));
    }
    srv.register_client(handle.clone());
    let authenticated = !srv.hot.requirepass_set.load(Relaxed);
    let mut client = Client::new(handle.clone(), authenticated);
    let end = run(&srv, &mut stream, &mut client, &wake).await;
    srv.unregister_client(id);
    if let End::Handoff(replid, offset) = end {
        let ip = peer.rsplit_once(':').map_or(peer.clone(), |(ip, _)| ip.to_string());
        let port = client.repl.listening_port.unwrap_or(0);
        shoal_replication::primary::serve(srv.clone(), stream, ip, port, id, replid, offset).await;
        return;
    }
    match end {
        End::Eof | End::Quit => tracing::debug!(client = id, %peer, "connection closed"),
        End::Killed => tracing::debug!(client = id, %peer, "connection killed"),
        End::Io(e) => tracing::debug!(client = id, %peer, error = %e, "connection error"),
        End::Protocol => tracing::debug!(client = id, %peer, "protocol error, connection closed"),
        End::IdleTimeout => tracing::debug!(client = id, %peer, "idle timeout"),
        End::Handoff(..) => {}
        End::QueryBufferLimit(n) => {
            srv.stats
                .client_query_limit_disconnections
                .fetch_add(1, Relaxed);
            tracing::warn!(client = id, %peer, bytes = n, "closing client that reached max query buffer length (client-query-buffer-limit)");
        }
        End::OutputBufferLimit(n) => {
            srv.stats
                .client_output_limit_disconnections
                .fetch_add(1, Relaxed);
            tracing::warn!(client = id, %peer, bytes = n, "client scheduled to be closed ASAP for overcoming of output buffer limits (client-output-buffer-limit)");
        }
    }
}

/// Writes `out` to the socket, enforcing the output buffer limits: over the hard limit closes at
/// once; over the soft limit, the write must finish within the soft seconds.
async fn flush(
    srv: &ServerState,
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    limits: &config::OutputLimit,
    handle: &ClientHandle,
) -> Result<(), End> {
    if out.is_empty() {
        return Ok(());
    }
    let n = out.len();
    if limits.hard_bytes > 0 && n as u64 > limits.hard_bytes {
        return Err(End::OutputBufferLimit(n));
    }
    handle.output_buf_bytes.store(n, Relaxed);
    let res = if limits.soft_bytes > 0 && n as u64 > limits.soft_bytes && limits.soft_seconds > 0 {
        match tokio::time::timeout(
            Duration::from_secs(limits.soft_seconds),
            stream.write_all(out),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => return Err(End::OutputBufferLimit(n)),
        }
    } else {
        stream.write_all(out).await
    };
    handle.output_buf_bytes.store(0, Relaxed);
    res.map_err(End::Io)?;
    srv.stats
        .total_net_output_bytes
        .fetch_add(n as u64, Relaxed);
    out.clear();
    Ok(())
}

async fn run(srv: &ServerState, stream: &mut TcpStream, client: &mut Client, wake: &Notify) -> End {
    let mut limits_epoch = srv.config_epoch.load(Relaxed);
    let mut limits = current_limits(srv);
    let mut decoder = RequestDecoder::new(limits.decoder);
    let mut inbuf: Vec<u8> = Vec::with_capacity(READ_CHUNK_BYTES);
    let mut out: Vec<u8> = Vec::with_capacity(READ_CHUNK_BYTES);
    let mut ranges = Vec::new();
    // Reply spans of the writes in the current batch (for the sync strategy).
    let mut writes: Vec<std::ops::Range<usize>> = Vec::new();
    loop {
        if client.handle.killed.load(Relaxed) {
            return End::Killed;
        }
        // Reserve room: normally a chunk; for a big bulk being received, what it still needs.
        let want = decoder
            .bulk_bytes_pending(inbuf.len())
            .clamp(READ_CHUNK_BYTES, READ_RESERVE_MAX_BYTES);
        if inbuf.capacity() - inbuf.len() < want / 2 {
            inbuf.reserve(want);
        }
        let read = async {
            if limits.idle_timeout_s > 0 {
                match tokio::time::timeout(
                    Duration::from_secs(limits.idle_timeout_s),
                    stream.read_buf(&mut inbuf),
                )
                .await
                {
                    Ok(r) => r.map_err(End::Io),
                    Err(_) => Err(End::IdleTimeout),
                }
            } else {
                stream.read_buf(&mut inbuf).await.map_err(End::Io)
            }
        };
        let n = tokio::select! {
            r = read => match r {
                Ok(0) => return End::Eof,
                Ok(n) => n,
                Err(e) => return e,
            },
            _ = wake.notified() => continue,
        };
        srv.stats.total_net_input_bytes.fetch_add(n as u64, Relaxed);
        let now = now_ms();
        client.handle.last_interaction_ms.store(now, Relaxed);
        // Run every complete request in the buffer.
        let mut pos = 0;
        let mut closing = None;
        loop {
            match decoder.decode(&inbuf, pos, &mut ranges) {
                Ok(Decoded::Frame { end, inline }) => {
                    let src: &[u8] = if inline {
                        decoder.inline_bytes()
                    } else {
                        &inbuf
                    };
                    let args = Args::new(src, &ranges);
                    // During a FAILOVER hand-over, writes wait until it is done.
                    if srv.repl.writes_paused_until_ms.load(Relaxed) > now
                        && shoal_commands::table::lookup(args.get(0))
                            .is_some_and(|s| s.has(shoal_commands::flag::WRITE))
                    {
                        if let Err(e) = settle_and_flush(srv, stream, &mut out, &limits, client, &mut writes).await {
                            return e;
                        }
                        pause_for_failover(srv).await;
                    }
                    let written_before = client.repl.last_write_offset;
                    let mark = out.len();
                    run_one(srv, client, &args, &mut out, now);
                    if client.repl.last_write_offset != written_before {
                        writes.push(mark..out.len());
                    }
                    pos = end;
                    if let Some((replid, offset)) = client.repl.handoff.take() {
                        if let Err(e) = settle_and_flush(srv, stream, &mut out, &limits, client, &mut writes).await {
                            return e;
                        }
                        return End::Handoff(replid, offset);
                    }
                    if let Some((offset, n, deadline)) = client.repl.wait.take() {
                        if let Err(e) = settle_and_flush(srv, stream, &mut out, &limits, client, &mut writes).await {
                            return e;
                        }
                        let have = shoal_replication::wait_acks(srv, offset, n, deadline).await;
                        ReplyWriter::new(&mut out, client.proto).int(have as i64);
                    }
                    if client.close_after_reply {
                        closing = Some(End::Quit);
                        break;
                    }
                    if out.len() >= OUTPUT_FLUSH_BYTES {
                        if let Err(e) = settle_and_flush(srv, stream, &mut out, &limits, client, &mut writes).await {
                            return e;
                        }
                    }
                }
                Ok(Decoded::Empty { end }) => pos = end,
                Ok(Decoded::Incomplete) => break,
                Err(e) => {
                    ReplyWriter::new(&mut out, client.proto).error(&e.message());
                    closing = Some(End::Protocol);
                    break;
                }
            }
        }
        if let Err(e) = settle_and_flush(srv, stream, &mut out, &limits, client, &mut writes).await {
            return e;
        }
        if let Some(end) = closing {
            let _ = stream.shutdown().await;
            return end;
        }
        inbuf.drain(..pos);
        decoder.shift(pos, &mut ranges);
        client.handle.query_buf_bytes.store(inbuf.len(), Relaxed);
        if inbuf.len() > limits.query_buf_bytes_max {
            return End::QueryBufferLimit(inbuf.len());
        }
        // Give memory back after a large request, instead of holding its buffer forever.
        if inbuf.capacity() > 4 * READ_CHUNK_BYTES && inbuf.len() < READ_CHUNK_BYTES {
            inbuf.shrink_to(READ_CHUNK_BYTES);
        }
        if out.capacity() > 4 * OUTPUT_FLUSH_BYTES {
            out.shrink_to(OUTPUT_FLUSH_BYTES);
        }
        let epoch = srv.config_epoch.load(Relaxed);
        if epoch != limits_epoch {
            limits_epoch = epoch;
            limits = current_limits(srv);
            decoder.set_limits(limits.decoder);
        }
    }
}

/// Before replies of writes leave: under the `sync` strategy, wait (once for the whole batch: group
/// commit) until `min-replicas-ack` replicas acknowledged the batch's last write; if they do not
/// within `ack-timeout-ms`, each write's reply becomes an error saying the write is applied on the
/// primary but not confirmed. Then flush.
async fn settle_and_flush(
    srv: &ServerState,
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    limits: &ConnLimits,
    client: &Client,
    writes: &mut Vec<std::ops::Range<usize>>,
) -> Result<(), End> {
    if !writes.is_empty() {
        let repl = &srv.repl;
        let sync = match client.repl.strategy {
            Some(s) => s == shoal_commands::repl::Strategy::Sync,
            None => repl.strategy_sync.load(Relaxed),
        };
        let need = repl.min_replicas_ack.load(Relaxed) as usize;
        if sync && need > 0 && !repl.is_replica() {
            let timeout_ms = repl.ack_timeout_ms.load(Relaxed);
            let deadline = now_ms() + timeout_ms;
            let have =
                shoal_replication::wait_acks(srv, client.repl.last_write_offset, need, deadline).await;
            if have < need {
                let msg = format!(
                    "-NOTDURABLE write applied on the primary but acknowledged by {have} of {need} required replicas within {timeout_ms} ms\r\n"
                );
                let mut rebuilt = Vec::with_capacity(out.len());
                let mut at = 0;
                for w in writes.iter() {
                    rebuilt.extend_from_slice(&out[at..w.start]);
                    rebuilt.extend_from_slice(msg.as_bytes());
                    at = w.end;
                }
                rebuilt.extend_from_slice(&out[at..]);
                *out = rebuilt;
            }
        }
        writes.clear();
    }
    flush(srv, stream, out, &limits.output, &client.handle).await
}

/// Waits (bounded by the pause deadline) while a FAILOVER pauses writes.
async fn pause_for_failover(srv: &ServerState) {
    loop {
        let until = srv.repl.writes_paused_until_ms.load(Relaxed);
        if until <= now_ms() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Runs one request, honouring `CLIENT REPLY OFF|SKIP`.
fn run_one(srv: &ServerState, client: &mut Client, args: &Args<'_>, out: &mut Vec<u8>, now: u64) {
    let mode = client.reply_mode;
    let mark = out.len();
    shoal_commands::execute(srv, client, args, out, now);
    let suppress = match mode {
        // CLIENT REPLY ON, sent while replies are off, does get its +OK.
        ReplyMode::Off => client.reply_mode == ReplyMode::Off,
        ReplyMode::SkipNext => true,
        _ => false,
    };
    if suppress {
        out.truncate(mark);
    }
    // SKIP applies to the command after CLIENT REPLY SKIP itself.
    client.reply_mode = match (mode, client.reply_mode) {
        (ReplyMode::SkipNext, ReplyMode::SkipNext) => ReplyMode::On,
        (_, ReplyMode::Skip) => ReplyMode::SkipNext,
        (_, m) => m,
    };
}
