//! The primary's side of a link to one replica, sans I/O: decide a partial (`+CONTINUE`) or full
//! (`+FULLRESYNC`, then a snapshot) synchronisation for `PSYNC replid offset`, produce the bytes to
//! send (snapshot chunks, then the stream from the backlog), and read the replica's
//! `REPLCONF ACK <offset>`. The I/O layer writes what [`Sender::poll`] returns and feeds what it reads
//! to [`AckReader::on_input`]; nothing here touches a socket or a clock.
//!
//! A full copy: write recording is switched on and the stream offset O is taken *before* the first
//! shard is serialised; the snapshot is then produced one shard lock at a time, and the stream from
//! O follows. Every write is either in the snapshot (its shard was read after it) or in the stream
//! after O, and the replica applies both by version, so nothing is lost and nothing counts twice.
//!
//! A replica's pending stream is read from the shared backlog, not copied per replica, so a replica
//! behind costs no memory of its own: the link is dropped only when its position leaves the backlog
//! (it then gets a full copy when it asks again). A replica that reconnects far behind therefore
//! catches up with one partial resynchronisation instead of being dropped again and again.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Waker;

use shoal_keyspace::Keyspace;
use shoal_resp::{Decoded, RequestDecoder};

use crate::snapshot;
use crate::state::{ReplState, ReplicaInfo};
use crate::stream;

/// Stream bytes handed to the connection per poll.
pub const SEND_CHUNK_BYTES: usize = 256 * 1024;
/// A replica only sends short REPLCONF frames; more unparsed bytes than this is garbage.
pub const ACK_BUFFER_BYTES_MAX: usize = 64 * 1024;

/// How a link ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEnd {
    /// The replica's position left the backlog: it must ask again (and will get a full copy).
    TooFarBehind { lag_bytes: u64 },
    /// This node's role or history changed; the replica asks again.
    RoleChanged,
    /// A SWAPDB ran while the snapshot was being produced: the copy is inconsistent; the replica
    /// asks again and gets a new one.
    SnapshotInvalidated,
    /// The replica sent something that is not an acknowledgement we can accept.
    Protocol(String),
}

/// Who is asking.
#[derive(Debug, Clone)]
pub struct ReplicaAddr {
    pub client_id: u64,
    pub ip: String,
    pub listening_port: u16,
}

enum Phase {
    /// Snapshot: the header, then shard `next`, ..., then the end marker; the stream follows from
    /// `offset`.
    Snapshot {
        writer: Box<snapshot::Writer>,
        replid: String,
        offset: u64,
        next: Option<usize>,
        /// SWAPDBs counted before `offset` was taken (see `Keyspace::swaps`).
        swaps: u64,
    },
    Stream,
}

/// Produces what goes to the replica.
pub struct Sender {
    info: Arc<ReplicaInfo>,
    phase: Phase,
    /// Offset just past the last stream byte handed out.
    sent: u64,
    history: u64,
    attached: bool,
}

/// Reads the replica's acknowledgements.
pub struct AckReader {
    info: Arc<ReplicaInfo>,
    inbuf: Vec<u8>,
    decoder: RequestDecoder,
    ranges: Vec<std::ops::Range<usize>>,
}

/// Answers `PSYNC replid offset`. Returns the sender, the ack reader, and the reply line to send
/// first (`+CONTINUE id` or `+FULLRESYNC id offset keys`).
pub fn accept(
    repl: &ReplState,
    ks: &Keyspace,
    who: ReplicaAddr,
    replid: &str,
    offset: i64,
    now_ms: u64,
) -> (Sender, AckReader, Vec<u8>) {
    // From now on writes must be recorded for the stream (a replica of ours, if we are a replica
    // ourselves, is fed from what we apply instead).
    repl.start_recording(ks);
    let history = repl.history();
    let partial = repl.can_continue(replid, offset);
    let (phase, start, line) = if partial {
        repl.counters.sync_partial_ok.fetch_add(1, Relaxed);
        let current = repl.ids().replid;
        (
            Phase::Stream,
            offset as u64,
            format!("+CONTINUE {current}\r\n").into_bytes(),
        )
    } else {
        if replid != "?" {
            repl.counters.sync_partial_err.fetch_add(1, Relaxed);
        }
        repl.counters.sync_full.fetch_add(1, Relaxed);
        let replid = repl.ids().replid;
        // The swap count first, then the offset: a SWAPDB between them is caught by the count
        // (a snapshot never mixes swapped and unswapped shards with a stream that swaps again).
        let swaps = ks.swaps();
        // Taken before any shard is read (see the module header).
        let offset = repl.offset();
        let keys: usize = (0..ks.databases()).map(|db| ks.db_size(db).0).sum();
        // The key count lets a replica refuse to be wiped by an empty primary.
        let line = format!("+FULLRESYNC {replid} {offset} {keys}\r\n").into_bytes();
        (
            Phase::Snapshot {
                writer: Box::new(snapshot::Writer::new()),
                replid,
                offset,
                next: None,
                swaps,
            },
            offset,
            line,
        )
    };
    let info = Arc::new(ReplicaInfo {
        id: who.client_id,
        ip: who.ip,
        listening_port: (who.listening_port as u64).into(),
        ack_offset: start.into(),
        last_ack_ms: now_ms.into(),
        sent_offset: start.into(),
        holds_acked: partial.into(),
        fack_offset: 0.into(),
    });
    let sender = Sender {
        info: info.clone(),
        phase,
        sent: start,
        history,
        attached: false,
    };
    let reader = AckReader {
        info,
        inbuf: Vec::new(),
        decoder: RequestDecoder::default(),
        ranges: Vec::new(),
    };
    (sender, reader, line)
}

impl Sender {
    pub fn info(&self) -> &Arc<ReplicaInfo> {
        &self.info
    }

    /// While the full copy is being produced: keys and bytes written so far.
    pub fn copy_progress(&self) -> Option<(u64, u64)> {
        match &self.phase {
            Phase::Snapshot { writer, .. } => Some((writer.keys_written, writer.bytes_written)),
            Phase::Stream => None,
        }
    }

    /// Whether the full copy is still being produced.
    pub fn in_snapshot(&self) -> bool {
        matches!(self.phase, Phase::Snapshot { .. })
    }

    /// The next bytes to send: `Ok(Some(bytes))`, or `Ok(None)` when there is nothing now — then
    /// `waker` is registered for the next append and the caller sleeps until woken (or a keep-alive
    /// tick). Errors end the link.
    pub fn poll(
        &mut self,
        repl: &ReplState,
        ks: &Keyspace,
        waker: &Waker,
    ) -> Result<Option<Vec<u8>>, LinkEnd> {
        if repl.history() != self.history {
            return Err(LinkEnd::RoleChanged);
        }
        if let Phase::Snapshot {
            writer,
            replid,
            offset,
            next,
            swaps,
        } = &mut self.phase
        {
            let chunk = match *next {
                None => {
                    *next = Some(0);
                    writer.header(replid, *offset)
                }
                Some(i) if i < ks.shard_count() => {
                    *next = Some(i + 1);
                    writer
                        .shard(ks, i, *swaps)
                        .ok_or(LinkEnd::SnapshotInvalidated)?
                }
                Some(_) => {
                    let end = writer.finish(repl.offset());
                    self.phase = Phase::Stream;
                    end
                }
            };
            return Ok(Some(chunk));
        }
        if !self.attached {
            // Streaming from here on: WAIT, ROLE and INFO count this replica.
            repl.attach(self.info.clone());
            self.attached = true;
        }
        let (chunk, end) = repl.read_backlog(self.sent, SEND_CHUNK_BYTES);
        // Read again after the bytes: a promotion between the check above and the read may have
        // appended bytes of the new history, which must not go out under the old id.
        if repl.history() != self.history {
            return Err(LinkEnd::RoleChanged);
        }
        let Some(chunk) = chunk else {
            return Err(LinkEnd::TooFarBehind {
                lag_bytes: end.saturating_sub(self.sent),
            });
        };
        if !chunk.is_empty() {
            self.sent += chunk.len() as u64;
            self.info.sent_offset.store(self.sent, Relaxed);
            return Ok(Some(chunk));
        }
        // Nothing to send: ask writers for a wake-up, then look once more before sleeping.
        repl.link_will_wait(waker);
        let (chunk, _) = repl.read_backlog(self.sent, SEND_CHUNK_BYTES);
        if repl.history() != self.history {
            return Err(LinkEnd::RoleChanged);
        }
        match chunk {
            Some(c) if !c.is_empty() => {
                self.sent += c.len() as u64;
                self.info.sent_offset.store(self.sent, Relaxed);
                Ok(Some(c))
            }
            _ => Ok(None),
        }
    }

    /// The link is over: the replica no longer counts.
    pub fn detach(&mut self, repl: &ReplState) {
        if self.attached {
            repl.detach(&self.info);
            self.attached = false;
        }
    }
}

impl AckReader {
    /// Feeds bytes read from the replica.
    pub fn on_input(&mut self, repl: &ReplState, bytes: &[u8], now_ms: u64) -> Result<(), LinkEnd> {
        self.inbuf.extend_from_slice(bytes);
        let mut pos = 0;
        loop {
            match self.decoder.decode(&self.inbuf, pos, &mut self.ranges) {
                Ok(Decoded::Frame { end, inline }) => {
                    let src: &[u8] = if inline {
                        self.decoder.inline_bytes()
                    } else {
                        &self.inbuf
                    };
                    let args: Vec<&[u8]> = self.ranges.iter().map(|r| &src[r.clone()]).collect();
                    if let Some(off) = stream::parse_ack(&args) {
                        if !repl.record_ack(&self.info, off, now_ms) {
                            return Err(LinkEnd::Protocol(format!(
                                "replica acknowledged offset {off} beyond what was sent ({})",
                                self.info.sent_offset.load(Relaxed)
                            )));
                        }
                        if let Some(fack) = stream::parse_fack(&args) {
                            self.info.fack_offset.fetch_max(fack.min(off), Relaxed);
                        }
                    }
                    pos = end;
                }
                Ok(Decoded::Empty { end }) => pos = end,
                Ok(Decoded::Incomplete) => break,
                Err(e) => return Err(LinkEnd::Protocol(e.message())),
            }
        }
        self.inbuf.drain(..pos);
        self.decoder.shift(pos, &mut self.ranges);
        if self.inbuf.len() > ACK_BUFFER_BYTES_MAX {
            return Err(LinkEnd::Protocol("unparsed bytes from the replica".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::LinkState;

    fn who() -> ReplicaAddr {
        ReplicaAddr {
            client_id: 7,
            ip: "127.0.0.1".into(),
            listening_port: 6380,
        }
    }

    fn drain(sender: &mut Sender, repl: &ReplState, ks: &Keyspace) -> Result<Vec<u8>, LinkEnd> {
        let mut out = Vec::new();
        for _ in 0..1000 {
            match sender.poll(repl, ks, Waker::noop())? {
                Some(bytes) => out.extend_from_slice(&bytes),
                None => return Ok(out),
            }
        }
        panic!("the sender never ran dry");
    }

    /// A ← B ← C: B serves C from what it applies; B promoted, C must leave the old id behind
    /// without a full copy.
    #[test]
    fn a_promotion_ends_the_links_of_chained_replicas_which_continue_on_the_new_id() {
        let ks = Keyspace::new(1, 4, 1);
        let b = ReplState::new("b".repeat(40));
        let e = b.become_replica(&ks, "a".into(), 1);
        assert!(b.link_to(e, LinkState::Handshake));
        assert!(b.link_to(e, LinkState::Syncing));
        let a_id = "a".repeat(40);
        assert!(b.full_sync_done(e, &a_id, 100, 100));
        // C asks B to continue on A's history at B's offset.
        let (mut sender, _acks, line) = accept(&b, &ks, who(), &a_id, 100, 0);
        assert_eq!(line, format!("+CONTINUE {a_id}\r\n").into_bytes());
        assert_eq!(b.applied(e, b"*1\r\n$4\r\nPING\r\n"), Some(114));
        assert_eq!(
            drain(&mut sender, &b, &ks).unwrap(),
            b"*1\r\n$4\r\nPING\r\n"
        );

        let new_id = "n".repeat(40);
        assert!(b.promote(&ks, new_id.clone()));
        b.append(b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            drain(&mut sender, &b, &ks),
            Err(LinkEnd::RoleChanged),
            "nothing of the new history goes out under the old id"
        );
        sender.detach(&b);
        // C asks again with A's id at 114: continued, and told the new id.
        let full = b.counters.sync_full.load(Relaxed);
        let (mut sender, _acks, line) = accept(&b, &ks, who(), &a_id, 114, 0);
        assert_eq!(line, format!("+CONTINUE {new_id}\r\n").into_bytes());
        assert_eq!(b.counters.sync_full.load(Relaxed), full, "no full copy");
        assert_eq!(
            drain(&mut sender, &b, &ks).unwrap(),
            b"*1\r\n$4\r\nPING\r\n"
        );
    }

    #[test]
    fn a_new_id_learnt_with_continue_ends_the_links_of_our_own_replicas() {
        let ks = Keyspace::new(1, 4, 1);
        let c = ReplState::new("c".repeat(40));
        let e = c.become_replica(&ks, "b".into(), 1);
        assert!(c.link_to(e, LinkState::Handshake));
        assert!(c.link_to(e, LinkState::Syncing));
        let a_id = "a".repeat(40);
        assert!(c.full_sync_done(e, &a_id, 50, 50));
        let (mut sender, _acks, _) = accept(&c, &ks, who(), &a_id, 50, 0);
        assert_eq!(drain(&mut sender, &c, &ks).unwrap(), b"");
        // Same id: nothing changes for our replicas.
        assert!(c.continued(e, &a_id));
        assert_eq!(drain(&mut sender, &c, &ks).unwrap(), b"");
        // Our primary was promoted: our replicas must learn its new id too.
        assert!(c.continued(e, &"n".repeat(40)));
        assert_eq!(drain(&mut sender, &c, &ks), Err(LinkEnd::RoleChanged));
        let (_, _, line) = accept(&c, &ks, who(), &a_id, 50, 0);
        assert_eq!(
            line,
            format!("+CONTINUE {}\r\n", "n".repeat(40)).into_bytes()
        );
    }
}
