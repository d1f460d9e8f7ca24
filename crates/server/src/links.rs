//! The replication links' I/O: the only code that moves replication bytes over sockets. Each driver
//! runs a sans-IO session from `shoal_replication` (which decides everything) and carries its bytes:
//! the replica side ([`run_replica`]: connect, handshake, full or partial sync, apply, acknowledge,
//! reconnect with bounded backoff), the primary side ([`serve_replica`], on a connection that sent
//! PSYNC), FAILOVER ([`run_failover`]), and the writers' wait for acknowledgements ([`wait_acks`]).
//! The drivers are generic over the stream ([`Transport`]): plain TCP or TLS ([`Link`]).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use shoal_commands::{ClientHandle, ServerState};
use shoal_replication::primary_link::{self, LinkEnd, ReplicaAddr};
use shoal_replication::replica_link::{self, Handshake, LinkError, ReplicaLink, SyncEvent};
use shoal_replication::{FailoverRequest, LinkState, failover};
use shoal_resp::{Reply, ReplyLimits, parse_reply};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use crate::now_ms;

/// Connect timeout and the bounds of the reconnect backoff.
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;
pub const BACKOFF_MIN_MS: u64 = 100;
pub const BACKOFF_MAX_MS: u64 = 2_000;
/// A primary silent for this long (it pings every second) is considered gone.
pub const PRIMARY_SILENCE_MS: u64 = 30_000;
/// A primary-side link with nothing to send re-checks this often (role changes, keep-alive).
pub const IDLE_POLL_MS: u64 = 500;
/// Bytes read from a socket at a time.
pub const READ_CHUNK_BYTES: usize = 256 * 1024;

/// How internal links reach another node: plain TCP, TLS, a simulated network in tests.
pub trait Transport: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> impl std::future::Future<Output = std::io::Result<Self::Stream>> + Send;
}

/// Plain TCP.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tcp;

impl Transport for Tcp {
    type Stream = tokio::net::TcpStream;

    async fn connect(&self, host: &str, port: u16) -> std::io::Result<Self::Stream> {
        let s = tokio::time::timeout(
            Duration::from_millis(CONNECT_TIMEOUT_MS),
            tokio::net::TcpStream::connect((host, port)),
        )
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
        let _ = s.set_nodelay(true);
        Ok(s)
    }
}

/// A replication link to a primary: TLS when `tls-replication` is on (the primary's address is
/// then its TLS port), plain TCP otherwise. Decided when the link starts.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    pub tls: bool,
}

impl Link {
    /// The transport `tls-replication` asks for.
    pub fn replication(srv: &ServerState) -> Link {
        Link {
            tls: srv.config().tls_replication,
        }
    }
}

impl Transport for Link {
    type Stream = crate::tls::LinkStream;

    async fn connect(&self, host: &str, port: u16) -> std::io::Result<Self::Stream> {
        crate::tls::LinkStream::connect(
            host,
            port,
            self.tls,
            Duration::from_millis(CONNECT_TIMEOUT_MS),
        )
        .await
    }
}

/// The port a replica announces (`REPLCONF listening-port`): its TLS port under
/// `tls-replication`, as Redis, so its own replicas and tools reach it the way it is reached.
pub fn listening_port(srv: &ServerState) -> u16 {
    let tls = crate::listeners::tls_port();
    if srv.config().tls_replication && tls != 0 {
        tls
    } else {
        srv.tcp_port.load(Relaxed)
    }
}

/// Links whose TLS follows `tls-replication` as it is when each connects (the active-active
/// peer links, which outlive a `CONFIG SET`).
#[derive(Debug, Clone)]
pub struct ReplicationNow(pub std::sync::Weak<ServerState>);

impl Transport for ReplicationNow {
    type Stream = crate::tls::LinkStream;

    async fn connect(&self, host: &str, port: u16) -> std::io::Result<Self::Stream> {
        let tls = self.0.upgrade().is_some_and(|s| s.config().tls_replication);
        crate::tls::LinkStream::connect(host, port, tls, Duration::from_millis(CONNECT_TIMEOUT_MS))
            .await
    }
}

fn node(srv: &ServerState) -> replica_link::Node<'_> {
    replica_link::Node {
        ks: &srv.ks,
        functions: Some(srv),
        repl: &srv.repl,
        limits: srv.encoding_limits(),
        lazyfree: &srv.lazyfree,
        accept_empty_primary: srv.config().replica_accept_empty_primary,
    }
}

/// Runs the link to `host:port` until the role epoch moves on.
pub async fn run_replica<T: Transport>(
    srv: Arc<ServerState>,
    t: T,
    host: String,
    port: u16,
    epoch: u64,
) {
    let mut backoff = BACKOFF_MIN_MS;
    while srv.repl.epoch() == epoch {
        match session(&srv, &t, &host, port, epoch).await {
            Err(LinkError::Stale) => return,
            Ok(()) => return,
            Err(e) => {
                if !srv.repl.link_to(epoch, LinkState::Down) {
                    return;
                }
                srv.repl.counters.link_failures.fetch_add(1, Relaxed);
                tracing::warn!(primary = %format!("{host}:{port}"), error = %e, "replication link down; retrying");
            }
        }
        tokio::time::sleep(Duration::from_millis(backoff)).await;
        backoff = (backoff * 2).min(BACKOFF_MAX_MS);
        if !srv.repl.link_to(epoch, LinkState::Connecting) {
            return;
        }
    }
}

async fn session<T: Transport>(
    srv: &Arc<ServerState>,
    t: &T,
    host: &str,
    port: u16,
    epoch: u64,
) -> Result<(), LinkError> {
    let mut stream = t
        .connect(host, port)
        .await
        .map_err(|e| LinkError::Refused(format!("connect: {e}")))?;
    let hs = {
        let cfg = srv.config();
        let pass = cfg.masterauth.clone();
        Handshake {
            auth: (!pass.is_empty()).then(|| (cfg.masteruser.clone(), pass)),
            listening_port: listening_port(srv),
        }
    };
    // The link is listed among the clients (flag M); CLIENT KILL TYPE master drops it (it then
    // reconnects, as in Redis).
    let listed = ListedLink::new(srv, format!("{host}:{port}"));
    let mut link = ReplicaLink::new(epoch, hs);
    let first = link.start(&node(srv))?;
    write(&mut stream, &first).await?;
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let mut tick = tokio::time::interval(Duration::from_millis(replica_link::ACK_INTERVAL_MS));
    let mut last_read = now_ms();
    // The full copy being received, for its progress lines.
    let mut meter: Option<crate::progress::Meter> = None;
    loop {
        tokio::select! {
            r = stream.read(&mut buf) => {
                let n = r.map_err(|e| LinkError::Refused(e.to_string()))?;
                if n == 0 {
                    return Err(LinkError::Refused("primary closed the connection".into()));
                }
                last_read = now_ms();
                srv.stats.total_net_repl_input_bytes.fetch_add(n as u64, Relaxed);
                let p = link.on_input(&node(srv), &buf[..n], last_read)?;
                // Keys the applied writes changed invalidate client-side caches here.
                shoal_commands::notify::publish_pending(srv, last_read);
                for event in &p.events {
                    match *event {
                        SyncEvent::FullStarted { keys_total } => {
                            meter = Some(crate::progress::Meter::start(
                                "full resync from the primary",
                                "keys",
                                keys_total,
                            ));
                        }
                        SyncEvent::FullLoaded { keys, bytes } => {
                            if let Some(m) = meter.take() {
                                m.finish(keys, bytes);
                            }
                        }
                        SyncEvent::Continued { offset } => {
                            tracing::info!(primary = %format!("{host}:{port}"), offset, "partial resync: the primary continues from our offset");
                        }
                    }
                }
                if let (Some(m), Some((keys, bytes))) = (meter.as_mut(), link.loading()) {
                    m.update(keys, keys, bytes);
                }
                if p.applied_frames > 0 {
                    srv.persist
                        .changes
                        .add(srv.gate.thread_slot(), p.applied_frames);
                }
                write(&mut stream, &p.send).await?;
            }
            _ = listed.wake.notified() => {
                if listed.handle.killed.load(Relaxed) {
                    return Err(LinkError::Refused("killed by CLIENT KILL".into()));
                }
            }
            _ = tick.tick() => {
                listed.handle.last_interaction_ms.store(last_read, Relaxed);
                let now = now_ms();
                if now.saturating_sub(last_read) > PRIMARY_SILENCE_MS {
                    return Err(LinkError::Refused("primary silent for too long".into()));
                }
                let out = link.on_tick(&node(srv), now)?;
                write(&mut stream, &out).await?;
            }
        }
    }
}

/// The replica link's entry in the client list, removed when the session ends.
struct ListedLink<'a> {
    srv: &'a ServerState,
    handle: Arc<ClientHandle>,
    wake: Arc<Notify>,
}

impl<'a> ListedLink<'a> {
    fn new(srv: &'a ServerState, addr: String) -> Self {
        let handle = Arc::new(ClientHandle::new(
            srv.new_client_id(),
            addr,
            format!("0.0.0.0:{}", srv.tcp_port.load(Relaxed)),
            now_ms(),
        ));
        handle
            .kind
            .store(shoal_commands::state::kind::PRIMARY, Relaxed);
        let wake = Arc::new(Notify::new());
        let w = wake.clone();
        *handle.waker.lock().expect("waker lock") = Some(Box::new(move || w.notify_one()));
        srv.register_client(handle.clone());
        ListedLink { srv, handle, wake }
    }
}

impl Drop for ListedLink<'_> {
    fn drop(&mut self) {
        self.srv.unregister_client(self.handle.id);
    }
}

async fn write<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) -> Result<(), LinkError> {
    if bytes.is_empty() {
        return Ok(());
    }
    // A TLS stream may keep records it could not send yet until flushed.
    async {
        s.write_all(bytes).await?;
        s.flush().await
    }
    .await
    .map_err(|e| LinkError::Refused(e.to_string()))
}

/// Serves a replica on a connection that sent `PSYNC replid offset`, until the link ends.
pub async fn serve_replica<S: AsyncRead + AsyncWrite + Unpin + Send>(
    srv: Arc<ServerState>,
    stream: S,
    who: ReplicaAddr,
    replid: String,
    offset: i64,
    handle: &ClientHandle,
    wake: &Notify,
) {
    // Redis names a replica by its address and the port it listens on (REPLCONF listening-port).
    let ip = format!("{}:{}", who.ip, who.listening_port);
    tracing::info!(replica = %ip, "Replica {ip} asks for synchronization");
    let (mut sender, mut acks, line) =
        primary_link::accept(&srv.repl, &srv.ks, who, &replid, offset, now_ms());
    // A full copy carries keys only: the libraries follow in the stream, after its offset.
    if sender.in_snapshot() {
        shoal_commands::scripting::functions::announce(&srv);
    }
    let (mut rd, mut wr) = tokio::io::split(stream);
    // A full copy's progress lines; its key total is the one the FULLRESYNC line announced.
    let mut meter = if sender.in_snapshot() {
        let keys_total = std::str::from_utf8(&line)
            .ok()
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|k| k.parse::<u64>().ok());
        tracing::info!(replica = %ip, keys_total, "full resync: sending a copy to a replica");
        Some(crate::progress::Meter::start(
            "full resync to a replica",
            "keys",
            keys_total,
        ))
    } else {
        tracing::info!(replica = %ip, "partial resync: the replica continues from its offset");
        None
    };
    // Each side ends with why: the link's own decision, or an I/O or kill reason.
    let send = async {
        wr.write_all(&line)
            .await
            .map_err(|e| Ended::Io(e.to_string()))?;
        let mut copied = (0, 0);
        loop {
            let next = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(sender.poll(&srv.repl, &srv.ks, cx.waker()))
            })
            .await;
            if meter.is_some() {
                match sender.copy_progress() {
                    Some((keys, bytes)) => {
                        copied = (keys, bytes);
                        if let Some(m) = meter.as_mut() {
                            m.update(keys, keys, bytes);
                        }
                    }
                    None => {
                        if let Some(m) = meter.take() {
                            m.finish(copied.0, copied.1);
                        }
                    }
                }
            }
            match next {
                Ok(Some(bytes)) => {
                    wr.write_all(&bytes)
                        .await
                        .map_err(|e| Ended::Io(e.to_string()))?;
                    srv.stats
                        .total_net_repl_output_bytes
                        .fetch_add(bytes.len() as u64, Relaxed);
                }
                Ok(None) => {
                    // A TLS stream may hold records the socket did not take yet: out before
                    // sleeping.
                    wr.flush().await.map_err(|e| Ended::Io(e.to_string()))?;
                    // `poll` registered this task's waker for the next append; sleep until then,
                    // or re-check after a while (role changes, keep-alive).
                    let _ =
                        tokio::time::timeout(Duration::from_millis(IDLE_POLL_MS), Parked(false))
                            .await;
                    // Let the writers that are ready run first, so one send carries many effects.
                    tokio::task::yield_now().await;
                }
                Err(end) => return Err::<(), Ended>(Ended::Link(end)),
            }
        }
    };
    let read_acks = async {
        let mut buf = vec![0u8; 4096];
        loop {
            let n = rd
                .read(&mut buf)
                .await
                .map_err(|e| Ended::Io(e.to_string()))?;
            if n == 0 {
                return Err::<(), Ended>(Ended::Io("replica closed the connection".into()));
            }
            acks.on_input(&srv.repl, &buf[..n], now_ms())
                .map_err(Ended::Link)?;
        }
    };
    let killed = async {
        loop {
            wake.notified().await;
            if handle.killed.load(Relaxed) {
                return Err::<(), Ended>(Ended::Killed);
            }
        }
    };
    let end = tokio::select! {
        e = send => e,
        e = read_acks => e,
        e = killed => e,
    };
    sender.detach(&srv.repl);
    match end {
        Err(Ended::Link(LinkEnd::TooFarBehind { lag_bytes })) => {
            tracing::warn!(replica = %ip, lag_bytes, "replica link closed: replica fell out of the backlog; it will resynchronize")
        }
        Err(Ended::Io(e)) => tracing::info!(replica = %ip, error = %e, "replica link closed"),
        other => tracing::info!(replica = %ip, reason = ?other, "replica link closed"),
    }
}

/// Why a primary-side link ended.
#[derive(Debug)]
enum Ended {
    Link(LinkEnd),
    Io(String),
    Killed,
}

/// Pending until polled again: the task's waker was registered elsewhere (by `Sender::poll`).
struct Parked(bool);

impl std::future::Future for Parked {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            std::task::Poll::Ready(())
        } else {
            self.0 = true;
            std::task::Poll::Pending
        }
    }
}

/// Waits until `n` replicas acknowledged `offset` or the deadline (`clock::mono_ms`, 0 = none)
/// passes; returns how many did.
pub async fn wait_acks(srv: &ServerState, offset: u64, n: usize, deadline_ms: u64) -> usize {
    let mut wait = AckWait {
        repl: &srv.repl,
        id: srv.repl.new_ack_waiter(),
        offset,
        need: n,
    };
    loop {
        let now = crate::clock::mono_ms();
        if deadline_ms != 0 && now >= deadline_ms {
            break;
        }
        // Re-check at least every 100 ms (a replica that detaches does not always signal).
        let ms = if deadline_ms == 0 {
            100
        } else {
            (deadline_ms - now).min(100)
        };
        if tokio::time::timeout(Duration::from_millis(ms), &mut wait)
            .await
            .is_ok()
        {
            break;
        }
    }
    srv.repl.acked(offset)
}

/// Ready once `need` replicas acknowledged `offset`; woken only by an ack that satisfies it.
struct AckWait<'a> {
    repl: &'a shoal_replication::ReplState,
    id: u64,
    offset: u64,
    need: usize,
}

impl std::future::Future for AckWait<'_> {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let w = &*self;
        if w.repl.poll_acked(w.id, w.offset, w.need, cx.waker()) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }
}

impl Drop for AckWait<'_> {
    fn drop(&mut self) {
        self.repl.drop_ack_waiter(self.id);
    }
}

/// One request on a short-lived connection: send it, read one reply (bounded in time and size).
pub async fn request<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    args: &[&[u8]],
    timeout: Duration,
) -> Result<Reply, String> {
    let mut req = Vec::new();
    shoal_resp::encode_request(&mut req, args);
    s.write_all(&req).await.map_err(|e| e.to_string())?;
    s.flush().await.map_err(|e| e.to_string())?;
    let limits = ReplyLimits::default();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(timeout, async {
        loop {
            if let Some((r, _)) = parse_reply(&buf, &limits).map_err(|e| e.0)? {
                return Ok(r);
            }
            let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed".to_string());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .map_err(|_| "timed out".to_string())?
}

/// Carries out a FAILOVER: waits for the target to catch up, promotes it, follows it.
pub async fn run_failover<T: Transport>(srv: Arc<ServerState>, t: T, req: FailoverRequest) {
    let repl = &srv.repl;
    let plan = match failover::begin(repl, &req, now_ms()) {
        Ok(p) => p,
        Err(why) => {
            failover::finish(repl);
            tracing::warn!(outcome = %why, "failover finished");
            return;
        }
    };
    let (host, port) = loop {
        match plan.poll(repl, now_ms()) {
            failover::Step::Wait => tokio::time::sleep(Duration::from_millis(5)).await,
            failover::Step::Abort(why) => {
                failover::finish(repl);
                tracing::warn!(outcome = %why, "failover finished");
                return;
            }
            failover::Step::Promote { host, port } => break (host, port),
        }
    };
    let promoted = async {
        let mut s = t.connect(&host, port).await.map_err(|e| e.to_string())?;
        let pass = {
            let cfg = srv.config();
            if cfg.masterauth.is_empty() {
                cfg.requirepass.clone()
            } else {
                cfg.masterauth.clone()
            }
        };
        let timeout = Duration::from_secs(5);
        if !pass.is_empty() {
            request(&mut s, &[b"AUTH", pass.as_bytes()], timeout).await?;
        }
        let r = request(&mut s, &[b"REPLICAOF", b"NO", b"ONE"], timeout).await?;
        if r.is_ok() {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    }
    .await;
    if let Err(e) = promoted {
        failover::finish(repl);
        tracing::warn!(outcome = %format!("aborted: could not promote {host}:{port}: {e}"), "failover finished");
        return;
    }
    let epoch = repl.become_replica(&srv.ks, host.clone(), port);
    tokio::spawn(run_replica(srv.clone(), t, host.clone(), port, epoch));
    failover::finish(repl);
    tracing::warn!(outcome = %format!("{host}:{port} is the new primary"), "failover finished");
}

/// Keep-alive PINGs in the stream while replicas are attached, so replicas can tell a quiet
/// primary from a dead link. Not from a cluster primary without a write lease: it may have been
/// replaced, and a PING its heir never got would make its history longer than the heir's, so it
/// could not come back by partial resynchronisation.
pub async fn keepalive(srv: std::sync::Weak<ServerState>) {
    loop {
        tokio::time::sleep(Duration::from_millis(shoal_replication::PING_INTERVAL_MS)).await;
        let Some(srv) = srv.upgrade() else { return };
        let fenced = srv
            .cluster
            .as_ref()
            .is_some_and(|cl| !cl.lease.valid(crate::clock::mono_ms()));
        if srv.repl.active() && !srv.repl.is_replica() && srv.repl.replica_count() > 0 && !fenced {
            let mut b = Vec::new();
            shoal_replication::stream::encode_ping(&mut b);
            srv.repl.append(&b);
        }
    }
}
