//! Raft messages over the cluster bus: a TCP listener that serves the group's RPCs ([`spawn_bus`])
//! and one client per peer that openraft drives ([`Peer`], made by [`Network`]).
//!
//! Framing: a request is a RESP array of three bulk strings, `RAFT <VERB> <json>`, with VERB one
//! of `VOTE`, `APPEND`, `SNAPSHOT` (a chunk of a snapshot), `PROPOSE` (a `Change` forwarded to
//! the leader) and `BEAT` (a node's heartbeat to a voter, answered with a write lease by the
//! leader: `crate::lease`). The answer is one bulk string holding the JSON of the `Result` the receiving node
//! returned. Both sides read with `shoal_resp::parse_reply` under [`bus_limits`], so nothing larger
//! than [`BUS_MESSAGE_BYTES_MAX`] is ever buffered. A request that is not such an array, names no
//! known verb or whose JSON does not decode gets `-ERR` and its connection is closed; the other
//! connections and the node go on. A client drops its connection after any error or timeout, so a
//! late reply can never be taken for the next one.
//!
//! Security (`super::bus_auth`): with `tls-cluster` both ends speak TLS; with `cluster-secret`
//! every connection opens with the `HELLO`/`PROVE` challenge before its first Raft request.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{RPCTypes, Raft};
use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_resp::{Reply, ReplyLimits, encode_request, parse_reply};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use super::bus_auth::{self, BusSecurity};
use super::state_machine::SNAPSHOT_BYTES_MAX;
use super::{
    BusNode, Error, Forwarded, PROPOSE_TIMEOUT_MAX_MS, Response, TypeConfig, propose_local,
};
use crate::lease::LeaseDesk;

/// The largest request or reply on the bus, in bytes of its JSON. Appends carry at most
/// `max_payload_entries` entries of at most `PROPOSAL_BYTES_MAX` each, snapshot chunks at most
/// `snapshot_max_chunk_size` bytes (about four bytes of JSON each); an append that would not fit
/// is sent in smaller batches.
pub const BUS_MESSAGE_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Inbound bus connections served at once; more are closed on accept.
pub const BUS_CONNECTIONS_MAX: usize = 64;
/// An inbound connection with no request for this long is closed (peers send heartbeats far
/// more often).
pub const BUS_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Connecting to a peer gives up after this long (openraft's own RPC deadline may be shorter).
pub const BUS_CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Writing one reply gives up after this long (the peer stopped reading).
pub const BUS_WRITE_TIMEOUT_MS: u64 = 5_000;
/// Bytes read from a bus socket at a time.
pub const BUS_READ_CHUNK_BYTES: usize = 64 * 1024;
/// An accepted bus connection must finish its TLS handshake within this (`tls-cluster`).
pub const BUS_TLS_HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// Wait before openraft retries a peer it could not reach.
pub const BUS_UNREACHABLE_BACKOFF_MS: u64 = 200;
/// Wait after a failed accept (out of file descriptors, say) before accepting again.
pub const BUS_ACCEPT_BACKOFF_MS: u64 = 100;
/// What a forwarded proposal may take beyond the leader's own proposal timeout (the hop).
pub const FORWARD_SLACK_MS: u64 = 1_000;

/// Bounds on what a bus peer may send: one array of three bulks, or one bulk or error back.
pub fn bus_limits() -> ReplyLimits {
    ReplyLimits {
        bulk_bytes_max: BUS_MESSAGE_BYTES_MAX,
        array_items_max: 3,
        depth_max: 1,
        line_bytes_max: 1024,
    }
}

/// Why a call over the bus failed.
#[derive(Debug)]
pub enum CallError {
    /// No connection could be made.
    Unreachable(io::Error),
    /// No whole reply within the deadline.
    Timeout,
    /// The connection broke, the peer answered `-ERR`, or the reply is not what was asked for.
    Failed(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(e) => write!(f, "unreachable: {e}"),
            CallError::Timeout => write!(f, "timed out"),
            CallError::Failed(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CallError {}

/// A connection to one peer's bus, made when first needed and dropped after any failure.
pub struct BusClient {
    addr: String,
    conn: Option<crate::tls::LinkStream>,
    buf: Vec<u8>,
}

impl BusClient {
    pub fn new(addr: String) -> BusClient {
        BusClient {
            addr,
            conn: None,
            buf: Vec::new(),
        }
    }

    /// Sends `RAFT <verb> <body>` and returns the bulk of the reply, all within `ttl`.
    pub async fn call(
        &mut self,
        verb: &[u8],
        body: &[u8],
        ttl: Duration,
    ) -> Result<Vec<u8>, CallError> {
        let r = match tokio::time::timeout(ttl, self.exchange(verb, body)).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout),
        };
        if r.is_err() {
            self.conn = None;
            self.buf = Vec::new();
        }
        r
    }

    async fn exchange(&mut self, verb: &[u8], body: &[u8]) -> Result<Vec<u8>, CallError> {
        if self.conn.is_none() {
            let BusSecurity { tls, key } = bus_auth::security();
            let (host, port) = self
                .addr
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
                .ok_or_else(|| {
                    CallError::Unreachable(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("bad bus address {}", self.addr),
                    ))
                })?;
            let s = crate::tls::LinkStream::connect(
                host,
                port,
                tls,
                Duration::from_millis(BUS_CONNECT_TIMEOUT_MS),
            )
            .await
            .map_err(CallError::Unreachable)?;
            let stream = self.conn.insert(s);
            if let Some(key) = key {
                // Reported as unreachable, so openraft backs off instead of retrying at once.
                prove(stream, &mut self.buf, &key).await.map_err(|e| {
                    bus_auth::log_refusal(&self.addr, &e.to_string());
                    CallError::Unreachable(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!("cluster bus authentication: {e}"),
                    ))
                })?;
            }
        }
        let stream = self.conn.as_mut().expect("connected above");
        roundtrip(stream, &mut self.buf, verb, body).await
    }
}

/// The client's half of the challenge (`bus_auth`): checks the server's proof, gives its own.
async fn prove<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    key: &ring::hmac::Key,
) -> Result<(), CallError> {
    let nc = bus_auth::nonce();
    let reply = roundtrip(stream, buf, b"HELLO", bus_auth::hex(&nc).as_bytes()).await?;
    let mut parts = reply.split(|&b| b == b' ');
    let (Some(ns), Some(proof), None) = (
        parts.next().and_then(bus_auth::unhex),
        parts.next().and_then(bus_auth::unhex),
        parts.next(),
    ) else {
        return Err(CallError::Failed("malformed challenge reply".into()));
    };
    if !bus_auth::check_server(key, &nc, &ns, &proof) {
        return Err(CallError::Failed(
            "the peer does not prove our cluster-secret".into(),
        ));
    }
    let mine = bus_auth::client_proof(key, &nc, &ns);
    roundtrip(stream, buf, b"PROVE", bus_auth::hex(&mine).as_bytes()).await?;
    Ok(())
}

/// Sends `RAFT <verb> <body>` on `stream` and returns the bulk of its reply.
async fn roundtrip<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    verb: &[u8],
    body: &[u8],
) -> Result<Vec<u8>, CallError> {
    let mut req = Vec::with_capacity(body.len() + 64);
    encode_request(&mut req, &[b"RAFT", verb, body]);
    stream
        .write_all(&req)
        .await
        .map_err(|e| CallError::Failed(format!("write: {e}")))?;
    stream
        .flush()
        .await
        .map_err(|e| CallError::Failed(format!("write: {e}")))?;
    buf.clear();
    let limits = bus_limits();
    loop {
        match parse_reply(buf, &limits) {
            Ok(Some((reply, used))) => {
                if used != buf.len() {
                    return Err(CallError::Failed("bytes after the reply".into()));
                }
                return match reply {
                    Reply::Bulk(Some(b)) => Ok(b),
                    Reply::Error(e) => Err(CallError::Failed(format!("peer: {e}"))),
                    _ => Err(CallError::Failed("reply is not a bulk string".into())),
                };
            }
            Ok(None) => {}
            Err(e) => return Err(CallError::Failed(format!("bad reply: {}", e.0))),
        }
        buf.reserve(BUS_READ_CHUNK_BYTES);
        let n = stream
            .read_buf(buf)
            .await
            .map_err(|e| CallError::Failed(format!("read: {e}")))?;
        if n == 0 {
            return Err(CallError::Failed("peer closed the connection".into()));
        }
    }
}

/// Makes the client openraft uses for each peer.
pub struct Network {
    /// This node's Raft id (named in timeout errors).
    pub me: u64,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BusNode) -> Peer {
        Peer {
            me: self.me,
            target,
            client: BusClient::new(node.addr.clone()),
        }
    }
}

/// openraft's client for one peer.
pub struct Peer {
    me: u64,
    target: u64,
    client: BusClient,
}

impl Peer {
    async fn rpc<Req, Resp, E>(
        &mut self,
        kind: RPCTypes,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BusNode, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if body.len() > BUS_MESSAGE_BYTES_MAX {
            let e = io::Error::other(format!("{kind} request of {} bytes", body.len()));
            return Err(RPCError::Network(NetworkError::new(&e)));
        }
        let verb: &[u8] = match kind {
            RPCTypes::Vote => b"VOTE",
            RPCTypes::AppendEntries => b"APPEND",
            RPCTypes::InstallSnapshot => b"SNAPSHOT",
        };
        let ttl = option.hard_ttl();
        let reply = self
            .client
            .call(verb, &body, ttl)
            .await
            .map_err(|e| match e {
                CallError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
                CallError::Timeout => RPCError::Timeout(Timeout {
                    action: kind,
                    id: self.me,
                    target: self.target,
                    timeout: ttl,
                }),
                e @ CallError::Failed(_) => RPCError::Network(NetworkError::new(&e)),
            })?;
        let res: Result<Resp, RaftError<u64, E>> =
            serde_json::from_slice(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BusNode, RaftError<u64>>> {
        let entries = rpc.entries.len() as u64;
        match self.rpc(RPCTypes::AppendEntries, &rpc, &option).await {
            // Too big for one message: openraft sends fewer entries at a time.
            Err(RPCError::Network(_)) if entries > 1 && too_big(&rpc) => Err(
                RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(entries / 2)),
            ),
            r => r,
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BusNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.rpc(RPCTypes::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BusNode, RaftError<u64>>> {
        self.rpc(RPCTypes::Vote, &rpc, &option).await
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(Duration::from_millis(
            BUS_UNREACHABLE_BACKOFF_MS,
        )))
    }
}

/// Whether an append is over the bus's message bound (checked only after a failure).
fn too_big(rpc: &AppendEntriesRequest<TypeConfig>) -> bool {
    serde_json::to_vec(rpc).is_ok_and(|b| b.len() > BUS_MESSAGE_BYTES_MAX)
}

/// Serves the bus on `listener` until `stop` turns true. Each connection gets its own task, at
/// most [`BUS_CONNECTIONS_MAX`] at once.
pub fn spawn_bus(
    listener: TcpListener,
    raft: super::RaftCell,
    desk: Arc<LeaseDesk>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(BUS_CONNECTIONS_MAX));
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "cluster bus: accept failed");
                            tokio::time::sleep(Duration::from_millis(BUS_ACCEPT_BACKOFF_MS)).await;
                            continue;
                        }
                    };
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        tracing::warn!(%peer, "cluster bus: too many connections; closing one");
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let (raft, desk, stop) = (raft.clone(), desk.clone(), stop.clone());
                    tokio::spawn(async move {
                        let BusSecurity { tls, key } = bus_auth::security();
                        let peer = peer.to_string();
                        let stream = if tls {
                            let accepted = match crate::tls::loaded() {
                                Some(t) => crate::tls::accept(
                                    t.server,
                                    stream,
                                    Duration::from_millis(BUS_TLS_HANDSHAKE_TIMEOUT_MS),
                                )
                                .await,
                                None => Err(io::Error::other("TLS is not configured")),
                            };
                            match accepted {
                                Ok(s) => crate::tls::AcceptedStream::Tls(Box::new(s)),
                                Err(e) => {
                                    bus_auth::log_refusal(&peer, &format!("TLS handshake: {e}"));
                                    return;
                                }
                            }
                        } else {
                            crate::tls::AcceptedStream::Plain(stream)
                        };
                        let gate = Gate {
                            peer,
                            proven: key.is_none(),
                            key,
                            nonces: None,
                        };
                        serve_conn(stream, raft, desk, stop, gate).await;
                        drop(permit);
                    });
                }
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    })
}

/// One accepted connection's standing in the challenge (`bus_auth`).
struct Gate {
    peer: String,
    key: Option<ring::hmac::Key>,
    /// Whether the peer proved the secret (always, when there is none).
    proven: bool,
    /// The client's and this side's nonce, between HELLO and PROVE.
    nonces: Option<(Vec<u8>, [u8; bus_auth::NONCE_BYTES])>,
}

impl Gate {
    /// Answers a challenge step, or refuses a request made before the peer proved the secret;
    /// `None` lets the request through. An `Err` closes the connection.
    fn step(&mut self, req: &Reply) -> Option<Result<Vec<u8>, String>> {
        let Reply::Array(Some(items)) = req else {
            return None;
        };
        let verb = items.get(1).and_then(Reply::as_bytes)?.to_ascii_uppercase();
        let body = items.get(2).and_then(Reply::as_bytes).unwrap_or_default();
        match verb.as_slice() {
            b"HELLO" => {
                Some(match &self.key {
                    None => {
                        bus_auth::log_refusal(
                            &self.peer,
                            "the peer has a cluster-secret and this node has none",
                        );
                        Err("no cluster-secret is set on this node".into())
                    }
                    Some(key) => match bus_auth::unhex(body) {
                        Some(nc) if nc.len() == bus_auth::NONCE_BYTES => {
                            let ns = bus_auth::nonce();
                            let proof = bus_auth::server_proof(key, &nc, &ns);
                            self.nonces = Some((nc, ns));
                            Ok(format!("{} {}", bus_auth::hex(&ns), bus_auth::hex(&proof))
                                .into_bytes())
                        }
                        _ => Err("malformed challenge".into()),
                    },
                })
            }
            b"PROVE" => {
                let ok = match (&self.key, self.nonces.take(), bus_auth::unhex(body)) {
                    (Some(key), Some((nc, ns)), Some(proof)) => {
                        bus_auth::check_client(key, &nc, &ns, &proof)
                    }
                    _ => false,
                };
                self.proven = ok;
                Some(if ok {
                    Ok(b"OK".to_vec())
                } else {
                    bus_auth::log_refusal(&self.peer, "the peer does not prove our cluster-secret");
                    Err("cluster bus authentication failed".into())
                })
            }
            _ if !self.proven => {
                bus_auth::log_refusal(
                    &self.peer,
                    "a request before authentication (the peer has no cluster-secret?)",
                );
                Some(Err("NOAUTH cluster bus authentication required".into()))
            }
            _ => None,
        }
    }
}

async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    raft: super::RaftCell,
    desk: Arc<LeaseDesk>,
    mut stop: watch::Receiver<bool>,
    mut gate: Gate,
) {
    let limits = bus_limits();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        match parse_reply(&buf, &limits) {
            Ok(Some((req, used))) => {
                buf.drain(..used);
                let mut out = Vec::new();
                let answer = match gate.step(&req) {
                    Some(a) => a,
                    None => handle(&raft.get(), &desk, req).await,
                };
                let close = match answer {
                    Ok(body) => {
                        out.extend_from_slice(format!("${}\r\n", body.len()).as_bytes());
                        out.extend_from_slice(&body);
                        out.extend_from_slice(b"\r\n");
                        false
                    }
                    Err(why) => {
                        let why = why.replace(['\r', '\n'], " ");
                        out.extend_from_slice(format!("-ERR {why}\r\n").as_bytes());
                        true
                    }
                };
                let written =
                    tokio::time::timeout(Duration::from_millis(BUS_WRITE_TIMEOUT_MS), async {
                        stream.write_all(&out).await?;
                        stream.flush().await
                    })
                    .await;
                if close || !matches!(written, Ok(Ok(()))) {
                    return;
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                let why = format!("-ERR malformed bus request: {}\r\n", e.0);
                let _ = tokio::time::timeout(Duration::from_millis(BUS_WRITE_TIMEOUT_MS), async {
                    stream.write_all(why.as_bytes()).await?;
                    stream.flush().await
                })
                .await;
                return;
            }
        }
        buf.reserve(BUS_READ_CHUNK_BYTES);
        tokio::select! {
            r = tokio::time::timeout(Duration::from_millis(BUS_IDLE_TIMEOUT_MS), stream.read_buf(&mut buf)) => {
                match r {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return,
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// A bus request, decoded and checked, before it runs.
#[derive(Debug)]
pub enum BusRequest {
    Vote(VoteRequest<u64>),
    Append(AppendEntriesRequest<TypeConfig>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    Propose(Forwarded),
    Beat(shoal_cluster::lease::Beat),
}

/// Decodes a bus request (`RAFT <verb> <json>`, as [`parse_reply`] read it with [`bus_limits`]):
/// pure, so the fuzz target `bus` runs exactly what a node runs on what a peer sends. `Err` is a
/// malformed request (the connection is then closed).
pub fn decode_request(req: Reply) -> Result<BusRequest, String> {
    let args = req
        .into_array()
        .ok_or("a bus request is an array of bulk strings")?;
    let mut bulks = args.into_iter().map(|a| match a {
        Reply::Bulk(Some(b)) => Ok(b),
        _ => Err("a bus request is an array of bulk strings".to_string()),
    });
    let (Some(name), Some(verb), Some(body), None) =
        (bulks.next(), bulks.next(), bulks.next(), bulks.next())
    else {
        return Err("a bus request is RAFT <verb> <json>".into());
    };
    let (name, verb, body) = (name?, verb?, body?);
    if !name.eq_ignore_ascii_case(b"RAFT") {
        return Err("unknown bus command".into());
    }
    fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
        serde_json::from_slice(body).map_err(|e| format!("bad JSON: {e}"))
    }
    Ok(match verb.to_ascii_uppercase().as_slice() {
        b"VOTE" => BusRequest::Vote(decode(&body)?),
        b"APPEND" => BusRequest::Append(decode(&body)?),
        b"SNAPSHOT" => {
            let rpc: InstallSnapshotRequest<TypeConfig> = decode(&body)?;
            let end = rpc.offset.saturating_add(rpc.data.len() as u64);
            if end > SNAPSHOT_BYTES_MAX as u64 {
                return Err(format!("snapshot larger than {SNAPSHOT_BYTES_MAX} bytes"));
            }
            BusRequest::Snapshot(rpc)
        }
        b"PROPOSE" => BusRequest::Propose(decode(&body)?),
        b"BEAT" => BusRequest::Beat(decode(&body)?),
        _ => return Err("unknown RAFT verb".into()),
    })
}

/// Runs one bus request; `Err` is a malformed request (the connection is then closed).
async fn handle(raft: &Raft<TypeConfig>, desk: &LeaseDesk, req: Reply) -> Result<Vec<u8>, String> {
    fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
        serde_json::to_vec(v).map_err(|e| format!("reply does not encode: {e}"))
    }
    match decode_request(req)? {
        BusRequest::Vote(rpc) => encode(&raft.vote(rpc).await),
        BusRequest::Append(rpc) => encode(&raft.append_entries(rpc).await),
        BusRequest::Snapshot(rpc) => encode(&raft.install_snapshot(rpc).await),
        BusRequest::Propose(fwd) => {
            let ms = fwd.timeout_ms.min(PROPOSE_TIMEOUT_MAX_MS);
            let res: Result<(u64, Response), Error> =
                propose_local(raft, fwd.change, Duration::from_millis(ms)).await;
            encode(&res)
        }
        BusRequest::Beat(beat) => encode(&desk.on_beat(beat)),
    }
}
