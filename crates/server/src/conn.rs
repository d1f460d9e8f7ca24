//! One client connection: read bytes, decode every complete request in the buffer, run each, and
//! answer the whole batch with one write (pipelining). Enforces the per-connection limits: query
//! buffer, output buffer, idle timeout; and closes on protocol errors after sending the error, as
//! Redis does.
//!
//! The task waits on two things at once: its socket and its wake-up (`Notify`), which fires for a
//! kill, a pub/sub message in its mailbox (written out between commands and when idle) and, while
//! it waits in a blocking command, a write to a key it waits for. A blocked client stops running its
//! pipeline (the rest stays in the buffer, as in Redis) but keeps reading, so a disconnect ends the
//! wait at once.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::tls::ClientStream;
use shoal_commands::blocking::BlockRequest;
use shoal_commands::error::ReplyError;
use shoal_commands::migration;
use shoal_commands::state::{ReplyMode, unblock};
use shoal_commands::{
    Action, Args, Client, ClientHandle, Outcome, OwnedArgs, RunMode, ServerState, config,
};
use shoal_resp::decode::peek_key;
use shoal_resp::{Decoded, Limits, ReplyWriter, RequestDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::now_ms;

/// Bytes read per socket read when no large bulk is pending.
pub const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Argument positions a connection keeps room for between batches (a request with more gives
/// the extra back once it is done).
const RANGES_KEEP: usize = 1024;
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
    /// An HTTP request (`POST`, `Host:`): someone tries cross-protocol scripting.
    SecurityAttack,
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
    /// `appendonly yes` with `appendfsync always`: a batch's replies to writes wait until the
    /// append-only log is fsynced past them.
    aof_always: bool,
}

fn current_limits(srv: &ServerState) -> ConnLimits {
    let cfg = srv.config();
    ConnLimits {
        decoder: Limits {
            bulk_bytes_max: cfg.proto_max_bulk_len as usize,
            ..Limits::default()
        },
        query_buf_bytes_max: cfg.client_query_buffer_limit as usize,
        output: cfg.client_output_buffer_limit.normal,
        idle_timeout_s: u64::from(cfg.timeout),
        aof_always: cfg.appendonly && cfg.appendfsync == config::AppendFsync::Always,
    }
}

/// What a connection reaches besides the command layer: the server's shutdown switch and, in
/// cluster mode, the node's member of the configuration group.
pub struct NodeIo {
    pub shutdown: tokio::sync::watch::Sender<bool>,
    pub cluster: Option<Arc<crate::cluster_node::ClusterNode>>,
}

/// The last time (unix seconds) the security warning was logged: at most once a minute, as Redis.
static SECURITY_WARNED_S: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn security_warning(peer: &str) {
    let now_s = now_ms() / 1000;
    let last = SECURITY_WARNED_S.load(Relaxed);
    if now_s.abs_diff(last) > 60
        && SECURITY_WARNED_S
            .compare_exchange(last, now_s, Relaxed, Relaxed)
            .is_ok()
    {
        tracing::warn!(
            %peer,
            "Possible SECURITY ATTACK detected. It looks like somebody is sending POST or Host: \
             commands to Redis. This is likely due to an attacker attempting to use Cross \
             Protocol Scripting to compromise your Redis instance. Connection aborted."
        );
    }
}

/// Turns on TCP keepalive probes for a client's connection, as Redis's `tcp-keepalive` does
/// (`anetKeepAlive`): the first probe after `interval_s` seconds of silence, then one every third
/// of that (at least a second), and the connection is dropped after 3 unanswered. 0 leaves the
/// socket as it is. Set when a connection is accepted: a `CONFIG SET` applies to new ones.
pub fn keepalive(tcp: &tokio::net::TcpStream, interval_s: u32) {
    use std::os::fd::AsRawFd;
    if interval_s == 0 {
        return;
    }
    let interval = interval_s.min(i32::MAX as u32) as libc::c_int;
    let fd = tcp.as_raw_fd();
    let options = [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, interval),
        (
            libc::IPPROTO_TCP,
            libc::TCP_KEEPINTVL,
            (interval / 3).max(1),
        ),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, KEEPALIVE_PROBES),
    ];
    for (level, name, value) in options {
        // SAFETY: `fd` is the open socket `tcp` owns for the whole call, and the option's value
        // is a live `c_int` whose size is passed with it.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "could not set a TCP keepalive option on a client connection"
            );
            return;
        }
    }
}

/// Unanswered keepalive probes before the kernel drops a client's connection (Redis's 3).
pub const KEEPALIVE_PROBES: libc::c_int = 3;

/// Runs a connection to completion.
/// Generic over the stream: plain TCP or TLS (`crate::tls::ClientStream`), each compiled apart.
pub async fn serve<S: ClientStream>(srv: Arc<ServerState>, mut stream: S, io: Arc<NodeIo>) {
    // The accept loop counted this connection; it is released however the task ends.
    struct Open<'a>(&'a ServerState);
    impl Drop for Open<'_> {
        fn drop(&mut self) {
            self.0.open_connections.fetch_sub(1, Relaxed);
        }
    }
    let _open = Open(&srv);
    let _ = stream.tcp().set_nodelay(true);
    keepalive(stream.tcp(), srv.config().tcp_keepalive);
    let peer = stream
        .tcp()
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let local = stream
        .tcp()
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let id = srv.new_client_id();
    let handle = Arc::new(ClientHandle::new(id, peer.clone(), local, now_ms()));
    handle.fd.store(
        i64::from(std::os::fd::AsRawFd::as_raw_fd(stream.tcp())),
        Relaxed,
    );
    let wake = Arc::new(Notify::new());
    {
        let w = wake.clone();
        *handle.waker.lock().expect("waker lock") = Some(Box::new(move || w.notify_one()));
    }
    srv.register_client(handle.clone());
    let authenticated = !srv.hot.requirepass_set.load(Relaxed);
    let mut client = Client::new(handle.clone(), authenticated);
    client.gate_wait_as_task = true;
    let end = run(&srv, &mut stream, &mut client, &wake, &io).await;
    // A batch cut short (the output buffer limit, an HTTP request) may have left effects queued
    // (on this thread: nothing waited since the return).
    shoal_commands::effects::flush_deferred(&srv, &mut client, now_ms());
    shoal_commands::tracking::flush_broadcasts(&srv, now_ms());
    // A batch cut short (a protocol error, an HTTP request) may have left a script's hold.
    srv.gate.end_batch();
    shoal_commands::client_closed(&srv, &mut client);
    if let End::Handoff(replid, offset) = end {
        // The connection stays listed (flag S) and CLIENT KILL TYPE replica ends the link.
        handle
            .kind
            .store(shoal_commands::state::kind::REPLICA, Relaxed);
        let ip = peer
            .rsplit_once(':')
            .map_or(peer.clone(), |(ip, _)| ip.to_string());
        let who = shoal_replication::primary_link::ReplicaAddr {
            client_id: id,
            ip,
            listening_port: client.repl.listening_port.unwrap_or(0),
        };
        crate::links::serve_replica(srv.clone(), stream, who, replid, offset, &handle, &wake).await;
        srv.unregister_client(id);
        return;
    }
    srv.unregister_client(id);
    match end {
        End::Eof | End::Quit => tracing::debug!(client = id, %peer, "connection closed"),
        End::Killed => tracing::debug!(client = id, %peer, "connection killed"),
        End::Io(e) => tracing::debug!(client = id, %peer, error = %e, "connection error"),
        End::Protocol => tracing::debug!(client = id, %peer, "protocol error, connection closed"),
        End::SecurityAttack => security_warning(&peer),
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
async fn flush<S: ClientStream>(
    srv: &ServerState,
    stream: &mut S,
    out: &mut Vec<u8>,
    limits: &config::OutputLimit,
    handle: &ClientHandle,
    wake: &Notify,
) -> Result<(), End> {
    if out.is_empty() {
        // Replies a `try_flush` left in a TLS stream's buffer go out before the task waits.
        if stream.unflushed() {
            stream.flush().await.map_err(End::Io)?;
        }
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
            write_unless_killed(stream, out, handle, wake),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => return Err(End::OutputBufferLimit(n)),
        }
    } else {
        write_unless_killed(stream, out, handle, wake).await
    };
    handle.output_buf_bytes.store(0, Relaxed);
    res?;
    let slot = srv.gate.thread_slot();
    srv.stats.total_net_output_bytes.add(slot, n as u64);
    srv.stats.total_writes_processed.add(slot, 1);
    out.clear();
    Ok(())
}

/// Writes all of `out`, unless the client is killed meanwhile (a slow pub/sub subscriber cut off
/// for its output buffer, CLIENT KILL): a peer that stops reading must not keep the task stuck in
/// a write. Other wake-ups during the write are passed on once it is done.
async fn write_unless_killed<S: ClientStream>(
    stream: &mut S,
    out: &[u8],
    handle: &ClientHandle,
    wake: &Notify,
) -> Result<(), End> {
    let mut written = 0;
    let mut rewake = false;
    let res = loop {
        // A TLS stream may hold records after accepting every byte: they are flushed too.
        if written == out.len() {
            if !stream.unflushed() {
                break Ok(());
            }
            tokio::select! {
                biased;
                r = stream.flush() => match r {
                    Ok(()) => break Ok(()),
                    Err(e) => break Err(End::Io(e)),
                },
                _ = wake.notified() => {
                    if handle.killed.load(Relaxed) {
                        break Err(End::Killed);
                    }
                    rewake = true;
                }
            }
            continue;
        }
        tokio::select! {
            biased;
            r = stream.write(&out[written..]) => match r {
                Ok(0) => break Err(End::Io(std::io::ErrorKind::WriteZero.into())),
                Ok(n) => written += n,
                Err(e) => break Err(End::Io(e)),
            },
            _ = wake.notified() => {
                if handle.killed.load(Relaxed) {
                    break Err(End::Killed);
                }
                rewake = true;
            }
        }
    };
    if rewake {
        wake.notify_one();
    }
    res
}

/// Writes out the pub/sub messages waiting in the client's mailbox.
async fn deliver_messages<S: ClientStream>(
    srv: &ServerState,
    stream: &mut S,
    out: &mut Vec<u8>,
    limits: &ConnLimits,
    client: &Client,
    wake: &Notify,
) -> Result<(), End> {
    loop {
        let more = client.handle.mailbox.drain_into(out, OUTPUT_FLUSH_BYTES);
        flush(srv, stream, out, &limits.output, &client.handle, wake).await?;
        if !more {
            return Ok(());
        }
    }
}

async fn run<S: ClientStream>(
    srv: &Arc<ServerState>,
    stream: &mut S,
    client: &mut Client,
    wake: &Notify,
    io: &NodeIo,
) -> End {
    let mut limits_epoch = srv.config_epoch.load(Relaxed);
    let mut limits = current_limits(srv);
    let mut decoder = RequestDecoder::new(limits.decoder);
    // Both buffers come from the thread's pool when needed and go back when empty (`bufpool`):
    // an idle connection holds neither.
    let mut inbuf: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    let mut ranges = Vec::new();
    // Reply spans of the writes in the current batch (for the sync strategy).
    let mut writes = Settling::default();
    // When the pending output first went over the soft limit (`client-output-buffer-limit`).
    let mut over_soft_since: Option<std::time::Instant> = None;
    // The most the query buffer held (CLIENT LIST `rbp`), published when it grows.
    let mut qbuf_peak = 0;
    loop {
        if client.handle.killed.load(Relaxed) {
            return End::Killed;
        }
        // Reserve room: normally a chunk; for a big bulk being received, what it still needs.
        // With nothing pending, no buffer is held while waiting (the read below takes one).
        let want = decoder
            .bulk_bytes_pending(inbuf.len())
            .clamp(READ_CHUNK_BYTES, READ_RESERVE_MAX_BYTES);
        if inbuf.is_empty() {
            if inbuf.capacity() != 0 {
                // CLIENT LIST shows the connection holding no query buffer while it waits.
                client.handle.query_buf_capacity.store(0, Relaxed);
            }
            crate::bufpool::give(std::mem::take(&mut inbuf));
        } else if inbuf.capacity() - inbuf.len() < want / 2 {
            inbuf.reserve(want);
        }
        if out.is_empty() {
            crate::bufpool::give(std::mem::take(&mut out));
        }
        // A monitor is never idle-timed out (Redis exempts it as it does replicas).
        let idle_timeout_s = if client.monitor {
            0
        } else {
            limits.idle_timeout_s
        };
        let read = async {
            let fill = async {
                if inbuf.capacity() == 0 {
                    stream.readable().await?;
                    inbuf = crate::bufpool::take();
                }
                stream.read_buf(&mut inbuf).await
            };
            if idle_timeout_s > 0 {
                match tokio::time::timeout(Duration::from_secs(idle_timeout_s), fill).await {
                    Ok(r) => r.map_err(End::Io),
                    Err(_) => Err(End::IdleTimeout),
                }
            } else {
                fill.await.map_err(End::Io)
            }
        };
        let n = tokio::select! {
            r = read => match r {
                Ok(0) => return End::Eof,
                Ok(n) => n,
                Err(e) => return e,
            },
            _ = wake.notified() => {
                if client.handle.mailbox.has_pending()
                    && let Err(e) = deliver_messages(srv, stream, &mut out, &limits, client, wake).await
                {
                    return e;
                }
                continue;
            }
        };
        let slot = srv.gate.thread_slot();
        srv.stats.total_net_input_bytes.add(slot, n as u64);
        srv.stats.total_reads_processed.add(slot, 1);
        let now = now_ms();
        // What CLIENT LIST shows of this connection, published once per batch.
        let h = &client.handle;
        h.last_interaction_ms.store(now, Relaxed);
        h.query_buf_bytes.store(inbuf.len(), Relaxed);
        h.query_buf_capacity.store(inbuf.capacity(), Relaxed);
        if inbuf.len() > qbuf_peak {
            qbuf_peak = inbuf.len();
            h.query_buf_peak.store(qbuf_peak, Relaxed);
        }
        // `maxmemory-clients`: a request growing past what all clients may hold together
        // evicts the largest clients, this one first if it is the largest.
        if shoal_commands::client_eviction::account(srv, h) {
            return End::Killed;
        }
        if out.capacity() == 0 {
            out = crate::bufpool::take();
        }
        let out_capacity = out.capacity();
        // Run every complete request in the buffer.
        let mut pos = 0;
        // Requests decoded in this batch (the flush below defers only for a pipeline).
        let mut requests = 0usize;
        let mut closing = None;
        // Before anything that waits or hands the connection over: settle the batch's sync
        // acknowledgements and flush its replies.
        macro_rules! settle {
            () => {
                // Effects the batch's commands left queued reach the stream first (WAIT, a
                // blocked command, a hand-over may follow), then a shard kept between the
                // batch's commands and a script's hold on the exec gate end here (see
                // `shoal_keyspace::sticky`, `ExecGate`).
                shoal_commands::effects::flush_deferred(srv, client, now_ms());
                shoal_commands::tracking::flush_broadcasts(srv, now_ms());
                shoal_keyspace::sticky::release();
                srv.gate.end_batch();
                if let Err(e) =
                    settle_and_flush(srv, stream, &mut out, &limits, client, &mut writes, wake)
                        .await
                {
                    return e;
                }
            };
        }
        loop {
            // CONFIG SET (from any connection) applies from this connection's next command, not
            // its next batch: `appendfsync always` set a moment ago holds this batch's replies.
            let epoch = srv.config_epoch.load(Relaxed);
            if epoch != limits_epoch {
                limits_epoch = epoch;
                limits = current_limits(srv);
                decoder.set_limits(limits.decoder);
            }
            // Until the client authenticates, it may announce only small requests.
            decoder.set_authenticated(client.authenticated);
            match decoder.decode(&inbuf, pos, &mut ranges) {
                Ok(Decoded::Frame { end, inline }) => {
                    requests += 1;
                    let src: &[u8] = if inline {
                        decoder.inline_bytes()
                    } else {
                        &inbuf
                    };
                    let args = Args::new(src, &ranges);
                    // If it writes, its effect may go to the stream's tail at once.
                    srv.ks.prefetch_effects();
                    // The pipeline's next request is in the buffer: start loading the lines its
                    // lookup will read while this command runs (`shoal_keyspace::prefetch`).
                    // (Not for the same key as this one's: a hot key's lines are in cache.)
                    if let Some(key) = inbuf.get(end..).and_then(peek_key)
                        && (args.len() < 2 || key != args.get(1))
                    {
                        srv.ks.prefetch(client.db, key);
                    }
                    // A browser or proxy talking HTTP to the data port: close at once, as Redis.
                    if args.get(0).eq_ignore_ascii_case(b"post")
                        || args.get(0).eq_ignore_ascii_case(b"host:")
                    {
                        return End::SecurityAttack;
                    }
                    // The command, looked up once for everything below (and the run itself).
                    let spec = shoal_commands::table::lookup(args.get(0));
                    // During a FAILOVER hand-over, writes wait until it is done.
                    // EXEC waits too: it may run queued writes.
                    if srv.repl.failover.writes_paused_until_ms.load(Relaxed) > now
                        && spec.is_some_and(|s| {
                            s.has(shoal_commands::flag::WRITE)
                                || s.has(shoal_commands::flag::TX_EXEC)
                        })
                    {
                        settle!();
                        pause_for_failover(srv).await;
                    }
                    // CLIENT PAUSE: the command waits (the pause is bounded by its deadline, and
                    // CLIENT UNPAUSE ends it). Replicas' links do not come through here.
                    // Looked at with the batch's clock (a pause that ends during the batch is seen
                    // ended by the next); the wait below reads the clock itself.
                    if srv.client_pause.active(now).is_some()
                        && srv.client_pause.holds(
                            shoal_commands::pause_counts_as_write(srv, client, spec, &args),
                            now,
                        )
                    {
                        settle!();
                        let _blocked = srv.client_pause.wait_guard();
                        let writes =
                            shoal_commands::pause_counts_as_write(srv, client, spec, &args);
                        while srv.client_pause.holds(writes, now_ms()) {
                            if client.handle.killed.load(Relaxed) {
                                return End::Killed;
                            }
                            tokio::time::sleep(Duration::from_millis(CLIENT_PAUSE_POLL_MS)).await;
                        }
                    }
                    // Messages that arrived before this command go out before its reply.
                    if client.handle.mailbox.has_pending() {
                        client
                            .handle
                            .mailbox
                            .drain_into(&mut out, OUTPUT_FLUSH_BYTES);
                    }
                    // Under the sync strategy, remember where each write's reply is: it may have
                    // to become an error if replicas do not confirm it in time. In cluster mode
                    // reads of keys too: a value read must be acknowledged before it is shown,
                    // or a failover could take back what a client saw (a dirty read).
                    let sync = sync_strategy(srv, client);
                    let tracked = sync && spec.is_some_and(|s| s.has(shoal_commands::flag::WRITE));
                    let read_tracked = sync
                        && srv.cluster.is_some()
                        && spec.is_some_and(|s| {
                            !s.has(shoal_commands::flag::WRITE)
                                && shoal_commands::keyspec::has_keys(s)
                        });
                    let mut mark = out.len();
                    let wrote_before = client.repl.last_write_offset;
                    // A pipeline's effects are appended once at the end of the batch, unless a
                    // reply must wait for its own offset (the sync strategy, `appendfsync
                    // always`).
                    client.repl.defer_effects = !sync && !limits.aof_always;
                    let (mut outcome, mut suppress) =
                        run_one(srv, client, &args, spec, &mut out, now);
                    if matches!(
                        outcome,
                        Outcome::GateWait
                            | Outcome::ShardWait(_)
                            | Outcome::Fetch(_)
                            | Outcome::Paused
                    ) {
                        // Nothing ran: wait for what it needs (another worker's batch of
                        // scripts to end, or its claim on the key's shard, values from the disk
                        // tier, a slot's pause) and run it again.
                        settle!();
                        mark = out.len();
                        (outcome, suppress) =
                            run_again(srv, client, &args, spec, &mut out, outcome).await;
                    }
                    pos = end;
                    if out.get(mark) == Some(&b'-') {
                        refused_replica(client, &args, &out[mark..]);
                    }
                    if let Outcome::Block(mut req) = outcome {
                        let owned = req
                            .rewritten
                            .take()
                            .unwrap_or_else(|| OwnedArgs::from_args(&args));
                        settle!();
                        mark = out.len();
                        let blocked = Blocked {
                            args: owned,
                            req,
                            suppress,
                        };
                        if let Err(e) = wait_blocked(
                            srv, stream, client, wake, &mut inbuf, &limits, &mut out, blocked,
                        )
                        .await
                        {
                            return e;
                        }
                    }
                    if read_tracked && out.get(mark) != Some(&b'-') && !srv.repl.is_replica() {
                        writes.reads_up_to = writes.reads_up_to.max(srv.repl.stream_end());
                        writes.replies.push((mark..out.len(), true));
                    }
                    if tracked && out.get(mark) != Some(&b'-') {
                        writes.replies.push((mark..out.len(), false));
                    }
                    // Whatever put effects on the stream (a write, EXEC, a script, a read that
                    // expired a key) waits for the log's fsync under `appendfsync always`.
                    if limits.aof_always && client.repl.last_write_offset != wrote_before {
                        writes.aof_up_to = client.repl.last_write_offset;
                        writes.aof_replies.push(mark..out.len());
                    }
                    if let Some((replid, offset)) = client.repl.handoff.take() {
                        settle!();
                        return End::Handoff(replid, offset);
                    }
                    if let Some((offset, n, deadline)) = client.repl.wait.take() {
                        settle!();
                        let have = crate::links::wait_acks(srv, offset, n, deadline).await;
                        ReplyWriter::new(&mut out, client.proto).int(have as i64);
                    }
                    if let Some(action) = client.repl.action.take() {
                        settle!();
                        carry_out(srv, action, &mut out, client.proto, io).await;
                    }
                    if client.close_after_reply {
                        closing = Some(End::Quit);
                        break;
                    }
                    if out.len() >= OUTPUT_FLUSH_BYTES {
                        // Write what the socket takes now, without waiting, and keep running the
                        // batch: a client that does not read sees its output pile up here, where
                        // the output buffer limits cut it off (replies held for sync
                        // acknowledgements wait for the end of the batch).
                        if writes.replies.is_empty()
                            && let Err(e) = try_flush(srv, stream, &mut out)
                        {
                            return e;
                        }
                        if let Err(e) =
                            check_output_limits(&out, &limits.output, &mut over_soft_since)
                        {
                            return e;
                        }
                    }
                }
                Ok(Decoded::Empty { end }) => pos = end,
                Ok(Decoded::Incomplete) => break,
                Err(e) => {
                    // A protocol error closes the connection; its `-ERR Protocol error` line still
                    // counts as an ERR reply, as in Redis.
                    srv.stats.total_error_replies.fetch_add(1, Relaxed);
                    srv.stats.errors.record_err();
                    ReplyWriter::new(&mut out, client.proto).error(&e.message());
                    closing = Some(End::Protocol);
                    break;
                }
            }
        }
        // The batch's commands are done: their effects go to the stream, and a shard its
        // pipeline kept locked is released, before anything below waits (see
        // `shoal_keyspace::sticky`).
        shoal_commands::effects::flush_deferred(srv, client, now);
        // The batch's BCAST invalidations, one message per prefix (as Redis sends per event
        // loop), after the batch's replies.
        shoal_commands::tracking::flush_broadcasts(srv, now);
        shoal_keyspace::sticky::release();
        // A thread that a long script took off the runtime will not park: it gives up its holds
        // on the gate (batch and sticky) here, before the task may move to the thread that took
        // over.
        if OFFLOADED.replace(false) {
            srv.gate.release_thread();
            shoal_keyspace::claim::release_thread();
        }
        // Requests of other threads waiting for this thread's batch of scripts, or for its claim
        // on a hot shard, are queued here (woken from this task) and run on this thread.
        srv.gate.wake_tasks_here();
        shoal_keyspace::claim::batch_end();
        if closing.is_none() && requests > 1 && !out.is_empty() {
            // A pipeline's replies leave at the end of the worker's tick, not as each
            // connection finishes its batch (as Redis writes every client's replies before it
            // sleeps): the task lets the worker's other ready connections run first, so their
            // writes go out in one burst. A client waiting on several connections (every load
            // tool, a pooled application) is then woken once per burst instead of once per
            // reply; each wake of a sleeping process costs the writer several µs of kernel time
            // (an inter-processor interrupt in a VM). The yield is deferred by the runtime until
            // it has polled the other ready tasks and the I/O driver. Not for one request: at
            // one request per round trip the deferral cost more than it saved (the idle worker
            // woken to steal the deferred task, a later reply: p99 ×1.5 under redis-benchmark
            // -P 1).
            RequeueOnce(false).await;
        } else {
            // One request per round trip: a script's hold on the exec gate ends with it, so
            // another worker's waiting request goes next (a hold kept until this worker goes
            // idle made that request wait for the whole tick: EVALSHA -P 1 ran at ×0.8).
            srv.gate.end_batch();
        }
        // A pipeline's script batch holds the exec gate past the connection's batch: the
        // thread's next connections' scripts run under it too, until another thread waits for
        // the gate (`ExecGate::exclusive_batched`, `ExecGate::shared_unless`) or this one goes
        // idle.
        if let Err(e) =
            settle_and_flush(srv, stream, &mut out, &limits, client, &mut writes, wake).await
        {
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
        // The same for the argument positions of a request with very many arguments (16 bytes
        // each: 1.6 MB after an MGET of 100,000 keys), as Redis frees a command's argv.
        if ranges.capacity() > RANGES_KEEP && ranges.len() < RANGES_KEEP {
            ranges.shrink_to(RANGES_KEEP);
        }
        if out.capacity() > out_capacity {
            srv.stats.reply_buffer_expands.fetch_add(1, Relaxed);
        }
        if out.capacity() > 4 * OUTPUT_FLUSH_BYTES {
            out.shrink_to(OUTPUT_FLUSH_BYTES);
            srv.stats.reply_buffer_shrinks.fetch_add(1, Relaxed);
        }
        client
            .handle
            .query_buf_capacity
            .store(inbuf.capacity(), Relaxed);
        client
            .handle
            .output_buf_capacity
            .store(out.capacity(), Relaxed);
        // The batch's arguments, transaction and replies counted (the loop's top closes an
        // evicted connection).
        shoal_commands::client_eviction::account(srv, &client.handle);
        let epoch = srv.config_epoch.load(Relaxed);
        if epoch != limits_epoch {
            limits_epoch = epoch;
            limits = current_limits(srv);
            decoder.set_limits(limits.decoder);
        }
    }
}

/// Replies of the current batch that wait for replicas under the `sync` strategy.
#[derive(Default)]
struct Settling {
    /// Each reply's span, and whether it answers a read (cluster mode) rather than a write.
    replies: Vec<(std::ops::Range<usize>, bool)>,
    /// The stream's end after the batch's last tracked read: what it read is in the stream up
    /// to there.
    reads_up_to: u64,
    /// Under `appendfsync always`: the stream offset the append-only log must hold on disk
    /// before the batch's replies leave, and the replies of the commands that wrote.
    aof_up_to: u64,
    aof_replies: Vec<std::ops::Range<usize>>,
}

/// Before replies of writes leave: under the `sync` strategy, wait (once for the whole batch: group
/// commit) until `min-replicas-ack` replicas acknowledged the batch's last write (in cluster mode:
/// every replica of the in-sync set, `crate::in_sync`), and the stream up to its last read of a
/// key; if they do not within `ack-timeout-ms`, each such reply becomes an error saying the write
/// is applied on the primary but not confirmed (or that the value read is not). Then flush.
async fn settle_and_flush<S: ClientStream>(
    srv: &ServerState,
    stream: &mut S,
    out: &mut Vec<u8>,
    limits: &ConnLimits,
    client: &Client,
    pending: &mut Settling,
    wake: &Notify,
) -> Result<(), End> {
    if pending.aof_up_to > 0 {
        if !crate::aof::wait_fsynced(srv, pending.aof_up_to).await {
            // The write is applied in memory but not on disk: say so instead of `+OK` (Redis
            // exits here; shoal keeps serving reads and answers writes with the error).
            let error = shoal_commands::ReplyError::Other {
                code: "MISCONF",
                msg: "Errors writing to the AOF file".into(),
            };
            let mut msg = Vec::new();
            error.write_to(&mut ReplyWriter::new(&mut msg, client.proto));
            let mut rebuilt = Vec::with_capacity(out.len());
            let mut at = 0;
            for w in pending.aof_replies.iter() {
                srv.stats.error_reply(&error);
                rebuilt.extend_from_slice(&out[at..w.start]);
                rebuilt.extend_from_slice(&msg);
                at = w.end;
            }
            rebuilt.extend_from_slice(&out[at..]);
            *out = rebuilt;
            // The spans of the sync strategy moved; those replies are errors or not writes now.
            pending.replies.clear();
        }
        pending.aof_up_to = 0;
        pending.aof_replies.clear();
    }
    if !pending.replies.is_empty() {
        let repl = &srv.repl;
        let need = repl.settings.min_replicas_ack.load(Relaxed) as usize;
        if need > 0 && !repl.is_replica() {
            let writes = pending.replies.iter().any(|(_, read)| !read);
            let mut offset = pending.reads_up_to;
            if writes {
                offset = offset.max(client.repl.last_write_offset);
            }
            let timeout_ms = repl.settings.ack_timeout_ms.load(Relaxed);
            let deadline = crate::clock::mono_ms() + timeout_ms;
            let have = crate::in_sync::wait(srv, offset, need, deadline).await;
            if have < need {
                let mut rebuilt = Vec::with_capacity(out.len());
                let mut at = 0;
                for (w, read) in pending.replies.iter() {
                    let error = shoal_commands::ReplyError::NotDurable {
                        have,
                        need,
                        timeout_ms,
                        read: *read,
                    };
                    let mut msg = Vec::new();
                    error.write_to(&mut ReplyWriter::new(&mut msg, client.proto));
                    srv.stats.error_reply(&error);
                    rebuilt.extend_from_slice(&out[at..w.start]);
                    rebuilt.extend_from_slice(&msg);
                    at = w.end;
                }
                rebuilt.extend_from_slice(&out[at..]);
                *out = rebuilt;
            }
        }
        pending.replies.clear();
        pending.reads_up_to = 0;
    }
    flush(srv, stream, out, &limits.output, &client.handle, wake).await
}

/// Logs a replica's handshake refused for want of rights (`PSYNC`, `REPLCONF` and `SYNC` need
/// `@admin`/`@dangerous`): the replica retries, and the operator must see why it never joins.
fn refused_replica(client: &Client, args: &Args<'_>, reply: &[u8]) {
    let name = args.get(0);
    if (reply.starts_with(b"-NOPERM") || reply.starts_with(b"-NOAUTH"))
        && [&b"psync"[..], b"replconf", b"sync"]
            .iter()
            .any(|c| name.eq_ignore_ascii_case(c))
    {
        let end = reply.len().saturating_sub(2).min(200);
        tracing::warn!(
            client = client.handle.id,
            peer = %client.handle.addr,
            user = %client.handle.user.lock().map(|u| u.clone()).unwrap_or_default(),
            reply = %String::from_utf8_lossy(&reply[..end]),
            "replica refused: its user may not run {}",
            String::from_utf8_lossy(name).to_ascii_uppercase()
        );
    }
}

/// Writes as much of `out` as the socket accepts right now; keeps the rest.
fn try_flush<S: ClientStream>(
    srv: &ServerState,
    stream: &mut S,
    out: &mut Vec<u8>,
) -> Result<(), End> {
    let mut written = 0;
    while written < out.len() {
        match stream.try_write(&out[written..]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(End::Io(e)),
        }
    }
    if written > 0 {
        let slot = srv.gate.thread_slot();
        srv.stats.total_net_output_bytes.add(slot, written as u64);
        srv.stats.total_writes_processed.add(slot, 1);
        out.drain(..written);
    }
    Ok(())
}

/// Redis's output buffer rule: over the hard limit closes at once; over the soft limit for longer
/// than the soft seconds closes too.
fn check_output_limits(
    out: &[u8],
    limits: &config::OutputLimit,
    over_soft_since: &mut Option<std::time::Instant>,
) -> Result<(), End> {
    let n = out.len() as u64;
    if limits.hard_bytes > 0 && n > limits.hard_bytes {
        return Err(End::OutputBufferLimit(out.len()));
    }
    if limits.soft_bytes > 0 && n > limits.soft_bytes {
        let since = *over_soft_since.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() >= Duration::from_secs(limits.soft_seconds) {
            return Err(End::OutputBufferLimit(out.len()));
        }
    } else {
        *over_soft_since = None;
    }
    Ok(())
}

/// Whether this client's writes use the `sync` strategy (its DURABILITY, else the server's).
fn sync_strategy(srv: &ServerState, client: &Client) -> bool {
    match client.repl.strategy {
        Some(s) => s == shoal_commands::repl::Strategy::Sync,
        None => srv.repl.strategy_sync(),
    }
}

/// Carries out what a command decided on but cannot do without I/O (see `Action`).
async fn carry_out(
    srv: &Arc<ServerState>,
    action: Action,
    out: &mut Vec<u8>,
    proto: shoal_resp::Protocol,
    io: &NodeIo,
) {
    match action {
        Action::StartLink { host, port, epoch } => {
            tokio::spawn(crate::links::run_replica(
                srv.clone(),
                crate::links::Link::replication(srv),
                host,
                port,
                epoch,
            ));
        }
        Action::Failover(req) => {
            tokio::spawn(crate::links::run_failover(
                srv.clone(),
                crate::links::Link::replication(srv),
                req,
            ));
        }
        Action::Shutdown => {
            let _ = io.shutdown.send(true);
        }
        Action::ClusterFailover { force } => {
            // Already answered `+OK`, as Redis answers once the failover started.
            if let Some(node) = io.cluster.as_ref() {
                node.start_manual_failover(srv, force);
            }
        }
        Action::ClusterBumpEpoch(change) => {
            let r = match (io.cluster.as_ref(), srv.cluster.as_ref()) {
                (Some(node), Some(cl)) => node.propose(srv, change).await.map(|()| {
                    let me = cl.me();
                    cl.config().node(&me).map_or(0, |n| n.config_epoch)
                }),
                _ => Err("This instance has cluster support disabled".to_string()),
            };
            let mut w = ReplyWriter::new(out, proto);
            match r {
                Ok(epoch) => w.simple(&format!("BUMPED {epoch}")),
                Err(e) => w.error(&format!("ERR {e}")),
            }
        }
        Action::ClusterSaveConfig => {
            let r = match io.cluster.as_ref() {
                Some(node) => node.save_config(srv).await,
                None => Err("This instance has cluster support disabled".to_string()),
            };
            let mut w = ReplyWriter::new(out, proto);
            match r {
                Ok(()) => w.ok(),
                // Redis's wording for a nodes.conf it could not write.
                Err(e) => w.error(&format!("ERR error saving the cluster node config: {e}")),
            }
        }
        Action::ClusterChange(_)
        | Action::ClusterMeet { .. }
        | Action::ClusterForget(_)
        | Action::ClusterReset { .. } => {
            let r = match io.cluster.as_ref() {
                None => Err("This instance has cluster support disabled".to_string()),
                Some(node) => match action {
                    Action::ClusterChange(changes) => {
                        let mut r = Ok(());
                        for change in changes {
                            r = node.propose(srv, change).await;
                            if r.is_err() {
                                break;
                            }
                        }
                        if r.is_ok() {
                            crate::lease::await_first_lease(srv).await;
                        }
                        r
                    }
                    Action::ClusterMeet { ip, port } => node.meet(srv, ip, port).await,
                    Action::ClusterForget(id) => node.forget(srv, id).await,
                    Action::ClusterReset { hard } => node.reset(srv, hard).await,
                    _ => unreachable!("a cluster action"),
                },
            };
            let mut w = ReplyWriter::new(out, proto);
            match r {
                Ok(()) => w.ok(),
                Err(e) => w.error(&format!("ERR {e}")),
            }
        }
        Action::MigrateSlots(jobs) => {
            let mut w = ReplyWriter::new(out, proto);
            match io.cluster.as_ref() {
                None => w.error("ERR This instance has cluster support disabled"),
                Some(node) => {
                    crate::slot_migration::spawn_exports(srv, node, jobs);
                    w.ok();
                }
            }
        }
        Action::FinishImport { job, change } => {
            let r = match io.cluster.as_ref() {
                None => Err("This instance has cluster support disabled".to_string()),
                Some(node) => crate::slot_migration::finish_import(srv, node, &job, change).await,
            };
            let mut w = ReplyWriter::new(out, proto);
            match r {
                Ok(()) => w.ok(),
                Err(e) => w.error(&format!("ERR {e}")),
            }
        }
        Action::Migrate(req) => {
            let r = crate::migrate::run(srv, *req).await;
            let mut w = ReplyWriter::new(out, proto);
            match r {
                Ok(()) => w.ok(),
                Err(e) => w.error(&e),
            }
        }
        Action::WaitAof {
            offset,
            numlocal,
            numreplicas,
            deadline_ms,
        } => {
            let (local, replicas) =
                crate::aof::wait_aof(srv, offset, numlocal, numreplicas, deadline_ms).await;
            let mut w = ReplyWriter::new(out, proto);
            w.array(2);
            w.int(local as i64);
            w.int(replicas as i64);
        }
        Action::SetAppendonly(on) => crate::aof::set_appendonly(srv, on),
        Action::RewriteAof => {
            if let Err(e) = crate::aof::start_rewrite(srv) {
                tracing::warn!(error = %e, "BGREWRITEAOF");
            }
        }
        Action::Save { foreground } => {
            let res = crate::persist::save(srv, foreground);
            if foreground {
                let mut w = ReplyWriter::new(out, proto);
                match res {
                    Ok(()) => w.ok(),
                    Err(e) => w.error(&format!("ERR {e}")),
                }
            }
        }
    }
}

/// How often a request waiting for another thread's batch of scripts looks again without being
/// woken: a script past `busy-reply-threshold` keeps its hold, and the request is then to be
/// answered `-BUSY` (the look goes through the busy rule).
const GATE_WAIT_POLL_MS: u64 = 5;

/// The longest a request waits for the worker that claims its key's shard to take it (that
/// worker wakes it at the end of each of its connection batches, tens of µs apart).
const CLAIM_WAIT_MAX_MS: u64 = 2;

/// Runs a request that ran nothing ([`Outcome::GateWait`], [`Outcome::ShardWait`], [`Outcome::Fetch`],
/// [`Outcome::Paused`]) again once what it waits for is there, as often as it needs, in any
/// order:
/// - another thread's batch of scripts holds the exec gate: wait for the batch to end or for
///   its holder to wake this task (the runtime then queues it on the holder's thread, which
///   runs it under the hold), at most [`GATE_WAIT_POLL_MS`] per look; a batch lasts until its
///   thread runs out of ready connections;
/// - another worker claims its key's shard (`shoal_keyspace::claim`): wait, once, at most
///   [`CLAIM_WAIT_MAX_MS`], for that worker to wake this task (it then runs there) or the claim
///   to end;
/// - values on the disk tier: load them off-lock and put them back, at most `FETCH_ROUNDS_MAX`
///   rounds (then an error reply);
/// - its slot's move is flipping, or a script runs below `busy-reply-threshold`: wait, until
///   `PAUSE_WAIT_MAX_MS` (then `-TRYAGAIN`, unless a script still runs).
async fn run_again(
    srv: &ServerState,
    client: &mut Client,
    args: &Args<'_>,
    spec: Option<&'static shoal_commands::table::Spec>,
    out: &mut Vec<u8>,
    mut outcome: Outcome,
) -> (Outcome, bool) {
    let mut fetch_rounds = 0;
    let pause_deadline =
        tokio::time::Instant::now() + Duration::from_millis(migration::PAUSE_WAIT_MAX_MS);
    let mut registration = shoal_commands::multi::GateWaitRegistration::default();
    loop {
        match outcome {
            Outcome::GateWait => {
                let _ = tokio::time::timeout(
                    Duration::from_millis(GATE_WAIT_POLL_MS),
                    srv.gate.batch_ended(&mut registration),
                )
                .await;
            }
            Outcome::Fetch(req) => {
                if fetch_rounds == shoal_commands::tier::FETCH_ROUNDS_MAX {
                    let e = ReplyError::err_static(shoal_commands::tier::FETCH_ROUNDS_ERROR);
                    srv.stats.error_reply(&e);
                    e.write_to(&mut ReplyWriter::new(out, client.proto));
                    return (Outcome::Done, false);
                }
                fetch_rounds += 1;
                crate::tier::fetch(srv, &req, now_ms()).await;
            }
            Outcome::Paused => {
                wait_unpaused(srv, pause_deadline).await;
                if tokio::time::Instant::now() >= pause_deadline && !srv.scripts.busy.active() {
                    let e = ReplyError::TryAgain;
                    srv.stats.error_reply(&e);
                    e.write_to(&mut ReplyWriter::new(out, client.proto));
                    return (Outcome::Done, false);
                }
            }
            Outcome::ShardWait(shard) => {
                // Woken by the claimer from its thread (the task then runs there), or the claim
                // ended; either way the request runs next, claimed or not.
                let _ = tokio::time::timeout(
                    Duration::from_millis(CLAIM_WAIT_MAX_MS),
                    srv.ks.claims().released(shard),
                )
                .await;
                client.claim_waited = true;
            }
            // Only a request that ran nothing comes here.
            other => return (other, false),
        }
        let (next, suppress) = run_one(srv, client, args, spec, out, now_ms());
        client.claim_waited = false;
        if !matches!(
            next,
            Outcome::GateWait | Outcome::ShardWait(_) | Outcome::Fetch(_) | Outcome::Paused
        ) {
            return (next, suppress);
        }
        outcome = next;
    }
}

/// Waits until no slot is paused (a pause lasts milliseconds), or until `deadline`; and while
/// a script runs, until it ends or runs past `busy-reply-threshold` (the request is then
/// answered `-BUSY`, as Redis answers it then).
async fn wait_unpaused(srv: &ServerState, deadline: tokio::time::Instant) {
    loop {
        let paused = srv.cluster.as_ref().is_some_and(|cl| cl.paused.any())
            && tokio::time::Instant::now() < deadline;
        if !paused && !srv.scripts.busy.waiting(srv) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// How often a command held by `CLIENT PAUSE` looks whether the pause ended.
const CLIENT_PAUSE_POLL_MS: u64 = 2;

/// Waits (bounded by the pause deadline) while a FAILOVER pauses writes.
async fn pause_for_failover(srv: &ServerState) {
    loop {
        let until = srv.repl.failover.writes_paused_until_ms.load(Relaxed);
        if until <= now_ms() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A blocking command waiting: its arguments (the read buffer moves on), what it waits for, and
/// whether its reply is to be dropped (`CLIENT REPLY OFF|SKIP` as they were when it was sent).
struct Blocked {
    args: OwnedArgs,
    req: Box<BlockRequest>,
    suppress: bool,
}

/// Waits in a blocking command until it is served (its reply is then in `out`), times out (the
/// null reply), or the client goes away (`Err`). Registered on its keys for the whole wait, and
/// unregistered on every way out.
#[allow(clippy::too_many_arguments)]
async fn wait_blocked<S: ClientStream>(
    srv: &ServerState,
    stream: &mut S,
    client: &mut Client,
    wake: &Notify,
    inbuf: &mut Vec<u8>,
    limits: &ConnLimits,
    out: &mut Vec<u8>,
    b: Blocked,
) -> Result<(), End> {
    let registration = srv.blocking.register(client.handle.clone(), &b.req);
    // Its arguments stay held while it waits (CLIENT LIST `argv-mem`).
    client
        .handle
        .argv_bytes
        .store(b.args.args().bytes(), Relaxed);
    let _argv = ClearOnDrop(client.handle.clone());
    // The deadline is in whole wall-clock ms; one more ms makes sure the wait is never shorter
    // than asked, whatever fraction of a ms had passed when it was computed.
    let deadline = b.req.deadline_ms.map(|at| {
        tokio::time::Instant::now() + Duration::from_millis(at.saturating_sub(now_ms()) + 1)
    });
    // Run once more right after registering: a write between the command's look and the
    // registration signalled no one.
    let mut mode = RunMode::Recheck;
    let mut fetch_rounds = 0;
    loop {
        let mark = out.len();
        let outcome = shoal_commands::execute_as(srv, client, &b.args.args(), out, now_ms(), mode);
        if let Outcome::Fetch(req) = &outcome {
            // A key it waits on has its value on the disk tier: load it and look again (each
            // round promotes what it loads; a value moved out again meanwhile is loaded again).
            fetch_rounds += 1;
            if fetch_rounds > shoal_commands::tier::FETCH_ROUNDS_MAX {
                let e = ReplyError::err_static(shoal_commands::tier::FETCH_ROUNDS_ERROR);
                srv.stats.error_reply(&e);
                e.write_to(&mut ReplyWriter::new(out, client.proto));
                registration.served();
                return Ok(());
            }
            crate::tier::fetch(srv, req, now_ms()).await;
            continue;
        }
        if let Outcome::Paused = outcome {
            // Its slot is moving: look again shortly (a pause lasts milliseconds).
            wait_unpaused(
                srv,
                tokio::time::Instant::now() + Duration::from_millis(migration::PAUSE_WAIT_MAX_MS),
            )
            .await;
            continue;
        }
        if let Outcome::Done = outcome {
            registration.served();
            if b.suppress {
                out.truncate(mark);
            }
            return Ok(());
        }
        debug_assert_ne!(mode, RunMode::Timeout, "a timed-out command does not block");
        mode = loop {
            if client.handle.killed.load(Relaxed) {
                return Err(End::Killed);
            }
            match client.handle.unblock.swap(unblock::NONE, Relaxed) {
                unblock::TIMEOUT => break RunMode::Timeout,
                unblock::ERROR => {
                    if !b.suppress {
                        out.extend_from_slice(
                            b"-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n",
                        );
                    }
                    srv.stats.errors.record(&ReplyError::Other {
                        code: "UNBLOCKED",
                        msg: "client unblocked via CLIENT UNBLOCK".into(),
                    });
                    return Ok(());
                }
                _ => {}
            }
            if registration.take_signal() {
                break RunMode::Retry;
            }
            if inbuf.capacity() - inbuf.len() < READ_CHUNK_BYTES {
                inbuf.reserve(READ_CHUNK_BYTES);
            }
            let timeout = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = stream.read_buf(inbuf) => match r {
                    Ok(0) => return Err(End::Eof),
                    Ok(n) => {
                        srv.stats
                            .total_net_input_bytes
                            .add(srv.gate.thread_slot(), n as u64);
                        client.handle.query_buf_bytes.store(inbuf.len(), Relaxed);
                        if inbuf.len() > limits.query_buf_bytes_max {
                            return Err(End::QueryBufferLimit(inbuf.len()));
                        }
                    }
                    Err(e) => return Err(End::Io(e)),
                },
                _ = wake.notified() => {
                    if client.handle.mailbox.has_pending() {
                        deliver_messages(srv, stream, out, limits, client, wake).await?;
                    }
                }
                _ = timeout => break RunMode::Timeout,
            }
        };
    }
}

/// Clears the published `argv-mem` of a blocked client however its wait ends.
struct ClearOnDrop(Arc<ClientHandle>);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.argv_bytes.store(0, Relaxed);
    }
}

/// Runs one request, honouring `CLIENT REPLY OFF|SKIP`. Returns the outcome, and whether the
/// reply was (or, for a request that blocks, will be) dropped.
fn run_one(
    srv: &ServerState,
    client: &mut Client,
    args: &Args<'_>,
    spec: Option<&'static shoal_commands::table::Spec>,
    out: &mut Vec<u8>,
    now: u64,
) -> (Outcome, bool) {
    let mode = client.reply_mode;
    let mark = out.len();
    // A script that runs long asks, from its VM's hook, for the runtime's duties to leave its
    // thread ([`offload_long_script`]); short ones, nearly all, run here like any command.
    let outcome =
        shoal_commands::execute_looked_up(srv, client, args, spec, out, now, RunMode::Normal);
    if let Outcome::Fetch(_) | Outcome::GateWait | Outcome::ShardWait(_) | Outcome::Paused = outcome
    {
        // Nothing ran: the reply mode moves when it does.
        return (outcome, false);
    }
    let suppress = match mode {
        // CLIENT REPLY ON, sent while replies are off, does get its +OK.
        ReplyMode::Off => client.reply_mode == ReplyMode::Off,
        // So does a CLIENT REPLY ON right after a SKIP (it clears the skip, as in Redis).
        ReplyMode::SkipNext => client.reply_mode != ReplyMode::On,
        _ => false,
    } && !spec
        .is_some_and(|spec| spec.has(shoal_commands::table::flag::PUSH_REPLIES));
    if suppress {
        out.truncate(mark);
    }
    // SKIP applies to the command after CLIENT REPLY SKIP itself.
    client.reply_mode = match (mode, client.reply_mode) {
        (ReplyMode::SkipNext, ReplyMode::SkipNext) => ReplyMode::On,
        (_, ReplyMode::Skip) => ReplyMode::SkipNext,
        (_, m) => m,
    };
    (outcome, suppress)
}

/// How long a long script's thread waits, at an offload, for another thread to take the
/// runtime's duties (starting a blocking-pool thread takes well under this).
const OFFLOAD_HANDOFF: std::time::Duration = std::time::Duration::from_millis(1);

/// Called from the VM's hook of a script that has run a few milliseconds (the hook is set in
/// `Server::new`): hands this worker's duties (its task queue, the I/O driver) to another thread
/// with `block_in_place`, so the connections that must be answered `-BUSY` meanwhile are served,
/// and the script goes on here, off the runtime. `block_in_place` takes the duties back when its
/// closure returns before another thread took them; waiting [`OFFLOAD_HANDOFF`] inside lets it
/// happen (the hook asks again, a bounded number of times, if it did not). Outside a multi-thread
/// runtime there is nothing to hand over.
pub fn offload_long_script() {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let Ok(handle) = Handle::try_current() else {
        return;
    };
    if handle.runtime_flavor() != RuntimeFlavor::MultiThread {
        return;
    }
    // This thread may not be a worker any more once the script ends (another thread took the
    // runtime's duties): the connection loop then ends its batch hold on the gate itself, as no
    // park of this thread will.
    OFFLOADED.set(true);
    // A claim on a hot shard steers requests to this thread: no more, once it leaves the
    // runtime.
    shoal_keyspace::claim::release_thread();
    tokio::task::block_in_place(|| std::thread::sleep(OFFLOAD_HANDOFF));
}

thread_local! {
    /// A script on this thread handed the runtime's duties away ([`offload_long_script`]).
    static OFFLOADED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Puts the task at the back of its worker's run queue once: it runs again after the tasks
/// queued now (the connections that became ready in the same tick), not after the worker has
/// nothing else to do as with `yield_now`, whose deferral under a steady load let replies wait
/// behind new work (p99 ×1.6 at pipeline 16 into a full cache).
struct RequeueOnce(bool);

impl std::future::Future for RequeueOnce {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}
