//! The replica's side of a link to its primary, sans I/O: the handshake (`AUTH`, `REPLCONF
//! listening-port`, `PSYNC <replid> <offset>`), loading a snapshot on a full resync, then applying
//! the effect stream and acknowledging the applied offset after every batch (group commit for the
//! primary's `sync` strategy) and at least every [`ACK_INTERVAL_MS`]. The I/O layer connects, writes
//! what this returns, feeds what it reads to [`ReplicaLink::on_input`], calls
//! [`ReplicaLink::on_tick`] with the time, and reconnects with bounded backoff when a session ends.
//!
//! Received stream bytes also feed this node's own backlog at the primary's offsets, so that if it
//! is promoted, its former siblings continue from their offsets without a full copy, and so that its
//! own replicas (chained replication) are served from the same history.

use shoal_keyspace::{EncodingLimits, Keyspace, LazyFree, key_slot};
use shoal_resp::{Decoded, Reply, ReplyLimits, RequestDecoder, parse_reply};

use crate::snapshot::Loader;
use crate::state::{LinkState, ReplState};
use crate::stream;

/// Room the link's input buffer keeps between bursts (past four times this, it shrinks back).
const INBUF_KEEP_BYTES: usize = 64 * 1024;

/// Acknowledge at least this often, even without new data.
pub const ACK_INTERVAL_MS: u64 = 1_000;
/// A handshake reply longer than this is garbage.
pub const HANDSHAKE_REPLY_BYTES_MAX: usize = 1024;

/// What the replica needs of its node while the link runs.
pub struct Node<'a> {
    pub ks: &'a Keyspace,
    /// Where the primary's function libraries go (`None`: the stream's `SHOALFUNCTIONS`
    /// frames are skipped).
    pub functions: Option<&'a dyn FunctionsSink>,
    pub repl: &'a ReplState,
    pub limits: EncodingLimits,
    pub lazyfree: &'a LazyFree,
    /// `replica-accept-empty-primary`.
    pub accept_empty_primary: bool,
}

/// What a replica does with the primary's function libraries (the command layer keeps them).
pub trait FunctionsSink: Sync {
    /// Replaces every library with those of a FUNCTION DUMP payload.
    fn replace_functions(&self, payload: &[u8]) -> Result<(), String>;
}

/// Settings of one session.
#[derive(Debug, Clone, Default)]
pub struct Handshake {
    /// `masteruser` (may be empty) and `masterauth`; `None` when no password is set.
    pub auth: Option<(String, String)>,
    /// Our port, announced with `REPLCONF listening-port`.
    pub listening_port: u16,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// Our role changed: stop, do not retry.
    Stale,
    /// The primary refused a step, or sent something we cannot use: retry later.
    Refused(String),
    /// A full copy from an empty primary would erase our data (`replica-accept-empty-primary no`).
    EmptyPrimary,
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::Stale => f.write_str("role changed"),
            LinkError::Refused(m) => f.write_str(m),
            LinkError::EmptyPrimary => f.write_str("primary is empty; refusing to wipe local data"),
        }
    }
}

#[derive(Debug)]
enum Step {
    Auth,
    ListeningPort,
    Psync,
    Snapshot { replid: String, offset: u64 },
    Stream,
}

/// What a call produced.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes to send to the primary.
    pub send: Vec<u8>,
    /// Stream frames applied (for `save` rules).
    pub applied_frames: u64,
    /// What happened to the session's sync in this call, in order (for the log).
    pub events: Vec<SyncEvent>,
}

/// A step of the session's synchronisation, for the node's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncEvent {
    /// The primary sends a full copy; it holds `keys_total` keys (when it says).
    FullStarted { keys_total: Option<u64> },
    /// The full copy is loaded: `keys` records in `bytes` bytes.
    FullLoaded { keys: u64, bytes: u64 },
    /// The primary continues from our offset (partial resync).
    Continued { offset: u64 },
}

pub struct ReplicaLink {
    epoch: u64,
    step: Step,
    inbuf: Vec<u8>,
    loader: Option<Loader>,
    decoder: RequestDecoder,
    ranges: Vec<std::ops::Range<usize>>,
    last_ack_ms: u64,
    hs: Handshake,
    /// Bytes of the full copy received so far.
    snapshot_bytes: u64,
}

impl ReplicaLink {
    /// A session for the role `epoch` (from [`ReplState::become_replica`]).
    pub fn new(epoch: u64, hs: Handshake) -> Self {
        ReplicaLink {
            epoch,
            step: Step::Auth,
            inbuf: Vec::new(),
            loader: None,
            decoder: RequestDecoder::default(),
            ranges: Vec::new(),
            last_ack_ms: 0,
            hs,
            snapshot_bytes: 0,
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether the stream is flowing (the handshake and any full copy are done).
    pub fn streaming(&self) -> bool {
        matches!(self.step, Step::Stream)
    }

    /// While a full copy is being loaded: records loaded and bytes received so far.
    pub fn loading(&self) -> Option<(u64, u64)> {
        self.loader
            .as_ref()
            .map(|l| (l.records, self.snapshot_bytes))
    }

    /// The connection is up: the first request to send.
    pub fn start(&mut self, node: &Node<'_>) -> Result<Vec<u8>, LinkError> {
        if !node.repl.link_to(self.epoch, LinkState::Handshake) {
            return Err(LinkError::Stale);
        }
        let mut out = Vec::new();
        match &self.hs.auth {
            Some((user, pass)) if user.is_empty() => {
                shoal_resp::encode_request(&mut out, &[b"AUTH", pass.as_bytes()]);
                self.step = Step::Auth;
            }
            Some((user, pass)) => {
                shoal_resp::encode_request(&mut out, &[b"AUTH", user.as_bytes(), pass.as_bytes()]);
                self.step = Step::Auth;
            }
            None => self.send_listening_port(&mut out),
        }
        Ok(out)
    }

    fn send_listening_port(&mut self, out: &mut Vec<u8>) {
        let port = self.hs.listening_port.to_string();
        shoal_resp::encode_request(out, &[b"REPLCONF", b"listening-port", port.as_bytes()]);
        self.step = Step::ListeningPort;
    }

    fn send_psync(&mut self, node: &Node<'_>, out: &mut Vec<u8>) {
        let ids = node.repl.ids();
        let offset = node.repl.replica_offset();
        // A node that never synced asks for a full copy.
        let synced_before = node
            .repl
            .counters
            .sync_full
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
            || offset > 0;
        let (id, off) = if synced_before {
            (ids.replid.clone(), offset.to_string())
        } else {
            ("?".to_string(), "-1".to_string())
        };
        shoal_resp::encode_request(out, &[b"PSYNC", id.as_bytes(), off.as_bytes()]);
        self.step = Step::Psync;
    }

    /// Bytes arrived from the primary.
    pub fn on_input(
        &mut self,
        node: &Node<'_>,
        bytes: &[u8],
        now_ms: u64,
    ) -> Result<Progress, LinkError> {
        if node.repl.epoch() != self.epoch {
            return Err(LinkError::Stale);
        }
        node.repl
            .link_last_io_ms
            .store(now_ms, std::sync::atomic::Ordering::Relaxed);
        self.inbuf.extend_from_slice(bytes);
        let mut progress = Progress::default();
        loop {
            match self.step {
                Step::Auth | Step::ListeningPort | Step::Psync => {
                    let limits = ReplyLimits {
                        line_bytes_max: HANDSHAKE_REPLY_BYTES_MAX,
                        ..ReplyLimits::default()
                    };
                    let parsed = parse_reply(&self.inbuf, &limits)
                        .map_err(|e| LinkError::Refused(format!("bad handshake reply: {}", e.0)))?;
                    let Some((reply, used)) = parsed else {
                        return Ok(progress);
                    };
                    self.inbuf.drain(..used);
                    self.handshake_reply(node, reply, &mut progress)?;
                }
                Step::Snapshot { .. } => {
                    if !self.load(node, now_ms, &mut progress)? {
                        return Ok(progress);
                    }
                }
                Step::Stream => {
                    progress.applied_frames += self.apply(node, now_ms)?;
                    if progress.applied_frames > 0 {
                        self.ack(node, now_ms, &mut progress.send);
                    }
                    return Ok(progress);
                }
            }
        }
    }

    fn handshake_reply(
        &mut self,
        node: &Node<'_>,
        reply: Reply,
        progress: &mut Progress,
    ) -> Result<(), LinkError> {
        let out = &mut progress.send;
        let text = match &reply {
            Reply::Status(s) => s.clone(),
            Reply::Error(e) => e.clone(),
            other => format!("{other:?}"),
        };
        match &self.step {
            Step::Auth => {
                if !reply.is_ok() {
                    return Err(LinkError::Refused(format!(
                        "authentication with the primary failed: {text}"
                    )));
                }
                self.send_listening_port(out);
            }
            Step::ListeningPort => {
                if !reply.is_ok() {
                    return Err(LinkError::Refused(format!("REPLCONF refused: {text}")));
                }
                self.send_psync(node, out);
            }
            Step::Psync => {
                if let Some(rest) = text.strip_prefix("FULLRESYNC ") {
                    let parts: Vec<&str> = rest.split_whitespace().collect();
                    let (Some(id), Some(Ok(offset))) =
                        (parts.first(), parts.get(1).map(|s| s.parse::<u64>()))
                    else {
                        return Err(LinkError::Refused(format!("bad FULLRESYNC line: {text}")));
                    };
                    let primary_keys: Option<u64> = parts.get(2).and_then(|s| s.parse().ok());
                    let local_keys: usize = (0..node.ks.databases())
                        .map(|db| node.ks.db_size(db).0)
                        .sum();
                    if primary_keys == Some(0) && local_keys > 0 && !node.accept_empty_primary {
                        // A primary that restarted empty must not silently wipe its replicas.
                        node.repl
                            .counters
                            .empty_copies_refused
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return Err(LinkError::EmptyPrimary);
                    }
                    if !node.repl.begin_full_sync(self.epoch) {
                        return Err(LinkError::Stale);
                    }
                    flush_all(node);
                    self.loader = Some(Loader::new(node.ks.databases()));
                    self.snapshot_bytes = 0;
                    progress.events.push(SyncEvent::FullStarted {
                        keys_total: primary_keys,
                    });
                    self.step = Step::Snapshot {
                        replid: id.to_string(),
                        offset,
                    };
                } else if let Some(rest) = text.strip_prefix("CONTINUE") {
                    if !node.repl.continued(self.epoch, rest.trim()) {
                        return Err(LinkError::Stale);
                    }
                    progress.events.push(SyncEvent::Continued {
                        offset: node.repl.replica_offset(),
                    });
                    self.step = Step::Stream;
                } else {
                    return Err(LinkError::Refused(format!("PSYNC refused: {text}")));
                }
            }
            Step::Snapshot { .. } | Step::Stream => unreachable!("not in the handshake"),
        }
        Ok(())
    }

    /// Feeds buffered bytes to the snapshot loader; true once the snapshot ended.
    fn load(
        &mut self,
        node: &Node<'_>,
        now_ms: u64,
        progress: &mut Progress,
    ) -> Result<bool, LinkError> {
        let Some(loader) = self.loader.as_mut() else {
            return Err(LinkError::Refused("no snapshot in progress".into()));
        };
        let data = std::mem::take(&mut self.inbuf);
        let mut bad = false;
        let done = loader
            .feed(&data, |rec| match rec.to_entry(&node.limits) {
                Some(entry) => {
                    node.ks.hlc.observe(rec.version);
                    let slot = key_slot(rec.key);
                    node.ks
                        .lock(node.ks.shard_of(slot))
                        .apply_put(rec.db, slot, entry, now_ms);
                }
                None => bad = true,
            })
            .map_err(|e| LinkError::Refused(format!("snapshot: {e}")))?;
        if bad {
            return Err(LinkError::Refused(
                "snapshot holds a malformed value".into(),
            ));
        }
        let Some(used) = done else {
            self.snapshot_bytes += data.len() as u64;
            return Ok(false);
        };
        self.snapshot_bytes += used as u64;
        progress.events.push(SyncEvent::FullLoaded {
            keys: loader.records,
            bytes: self.snapshot_bytes,
        });
        // What followed the snapshot is the stream.
        self.inbuf = data[used..].to_vec();
        let end_offset = loader.end_offset;
        self.loader = None;
        let Step::Snapshot { replid, offset } = std::mem::replace(&mut self.step, Step::Stream)
        else {
            unreachable!("loading a snapshot")
        };
        if !node
            .repl
            .full_sync_done(self.epoch, &replid, offset, end_offset)
        {
            return Err(LinkError::Stale);
        }
        Ok(true)
    }

    /// Applies every complete frame buffered; returns how many. A frame that cannot be applied
    /// breaks the stream: the history is forgotten (the next `PSYNC` asks for a full copy) and the
    /// link ends.
    fn apply(&mut self, node: &Node<'_>, now_ms: u64) -> Result<u64, LinkError> {
        let mut pos = 0;
        let mut frames = 0;
        let dbs = node.ks.databases();
        let start = node.repl.replica_offset();
        let overlap_until = node.repl.overlap_until();
        let broken = |why: String| {
            node.repl.stream_broken(self.epoch);
            LinkError::Refused(format!("replication stream broken: {why}"))
        };
        loop {
            match self.decoder.decode(&self.inbuf, pos, &mut self.ranges) {
                Ok(Decoded::Frame { end, inline }) => {
                    let src: &[u8] = if inline {
                        self.decoder.inline_bytes()
                    } else {
                        &self.inbuf
                    };
                    let args: Vec<&[u8]> = self.ranges.iter().map(|r| &src[r.clone()]).collect();
                    let effect = stream::decode(&args, dbs).map_err(|e| broken(e.0))?;
                    let overlap = start + (pos as u64) < overlap_until;
                    if let (stream::Effect::Functions { payload }, Some(sink)) =
                        (&effect, node.functions)
                    {
                        sink.replace_functions(payload).map_err(broken)?;
                    }
                    stream::apply(node.ks, &effect, &node.limits, now_ms, overlap)
                        .map_err(|e| broken(e.0))?;
                    pos = end;
                    frames += 1;
                }
                Ok(Decoded::Empty { end }) => pos = end,
                Ok(Decoded::Incomplete) => break,
                Err(e) => return Err(broken(format!("garbage: {}", e.0))),
            }
        }
        // The applied frames join our own backlog (at the primary's offsets) in one piece.
        if pos > 0 && node.repl.applied(self.epoch, &self.inbuf[..pos]).is_none() {
            return Err(LinkError::Stale);
        }
        self.inbuf.drain(..pos);
        self.decoder.shift(pos, &mut self.ranges);
        // Give memory back after a burst the link fell behind on (the buffer grew to hold it).
        if self.inbuf.capacity() > 4 * INBUF_KEEP_BYTES && self.inbuf.len() < INBUF_KEEP_BYTES {
            self.inbuf.shrink_to(INBUF_KEEP_BYTES);
        }
        Ok(frames)
    }

    fn ack(&mut self, node: &Node<'_>, now_ms: u64, out: &mut Vec<u8>) {
        let offset = node.repl.replica_offset();
        if node.repl.aof_on.load(std::sync::atomic::Ordering::Relaxed) {
            let fsynced = node
                .repl
                .aof_fsynced
                .load(std::sync::atomic::Ordering::Relaxed);
            stream::encode_ack_fack(out, offset, fsynced.min(offset));
        } else {
            stream::encode_ack(out, offset);
        }
        self.last_ack_ms = now_ms;
    }

    /// Time passed: an acknowledgement is due at least every [`ACK_INTERVAL_MS`] while streaming.
    pub fn on_tick(&mut self, node: &Node<'_>, now_ms: u64) -> Result<Vec<u8>, LinkError> {
        if node.repl.epoch() != self.epoch {
            return Err(LinkError::Stale);
        }
        let mut out = Vec::new();
        if self.streaming() && now_ms.saturating_sub(self.last_ack_ms) >= ACK_INTERVAL_MS {
            self.ack(node, now_ms, &mut out);
        }
        Ok(out)
    }
}

/// Empties the keyspace before a full copy; large values are freed off this thread.
fn flush_all(node: &Node<'_>) {
    let mut taken = Vec::new();
    for mut shard in node.ks.lock_all() {
        for d in 0..node.ks.databases() {
            if let Some(part) = shard.take_db(d) {
                taken.push(part);
            }
        }
    }
    if !taken.is_empty() {
        node.lazyfree.drop_in_background(Box::new(taken));
    }
    // Client-side caches of the old data are flushed (Redis's replica empties its data the same
    // way, invalidating every tracking client).
    node.ks.lock(0).note(
        shoal_keyspace::notify::TRACKING,
        shoal_keyspace::notify::TRACKING_FLUSH,
        0,
        b"",
    );
}
