//! One multiplexed TCP connection: many callers share it, each batch of commands is queued to a
//! writer task, which writes every batch waiting at that moment in one `write_all` (so concurrent
//! callers pipeline without knowing it; with replies outstanding it first lets the other ready
//! callers queue theirs), and a reader task parses replies with shoal-resp's bounded parser and
//! hands each batch its replies in order. In-flight batches are bounded ([`IN_FLIGHT_MAX`]); a
//! connection that fails is dead for good (counted in its pool's `connections_lost`) and its
//! callers get `Error::Connection` (the pool opens a new one).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

use shoal_resp::{Reply, ReplyLimits, encode_request, parse_reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::error::{Error, Result};

/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Batches sent and not yet answered on one connection; callers beyond wait for a slot.
pub const IN_FLIGHT_MAX: usize = 1024;
/// Bytes the writer gathers from waiting batches before one write.
const WRITE_BATCH_BYTES_MAX: usize = 64 * 1024;

type Answer = oneshot::Sender<Result<Vec<Reply>>>;

struct Request {
    bytes: Vec<u8>,
    n: usize,
    answer: Answer,
    permit: OwnedSemaphorePermit,
}

/// A batch written and waiting for its `n` replies.
struct Pending {
    n: usize,
    answer: Answer,
    _permit: OwnedSemaphorePermit,
}

/// Whether a connection is dead; its death is counted once in the pool's `lost` counter (state a
/// connection held on the server, such as `CLIENT TRACKING`'s table of its reads, is gone).
pub(crate) struct Dead {
    flag: AtomicBool,
    lost: Arc<AtomicU64>,
}

impl Dead {
    fn is_set(&self) -> bool {
        self.flag.load(SeqCst)
    }

    fn set(&self) {
        if !self.flag.swap(true, SeqCst) {
            self.lost.fetch_add(1, SeqCst);
        }
    }
}

/// Why [`Conn::send`] failed.
pub(crate) enum SendError {
    /// The batch never left (the connection was closed): here it is back, safe to send elsewhere.
    NotSent(Vec<u8>),
    /// Sent, or perhaps sent: its fate is unknown.
    Failed(Error),
}

/// A handle to a multiplexed connection; clones share it.
#[derive(Clone)]
pub(crate) struct Conn {
    tx: mpsc::UnboundedSender<Request>,
    slots: Arc<Semaphore>,
    dead: Arc<Dead>,
    tasks: Arc<[AbortHandle; 2]>,
}

impl Conn {
    /// Connects to `addr`; when the connection dies, `lost` goes up by one.
    pub(crate) async fn connect(addr: &str, lost: Arc<AtomicU64>) -> Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| Error::Connection(format!("{addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        let (ptx, prx) = mpsc::unbounded_channel();
        let dead = Arc::new(Dead {
            flag: AtomicBool::new(false),
            lost,
        });
        let slots = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
        let w = tokio::spawn(writer(wr, rx, ptx, dead.clone(), slots.clone()));
        let r = tokio::spawn(reader(rd, prx, dead.clone()));
        Ok(Conn {
            tx,
            slots,
            dead,
            tasks: Arc::new([w.abort_handle(), r.abort_handle()]),
        })
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.dead.is_set()
    }

    /// Closes the connection: every caller waiting on it gets `Error::Connection`.
    pub(crate) fn kill(&self) {
        self.dead.set();
        for t in self.tasks.iter() {
            t.abort();
        }
    }

    /// Sends `bytes`, `n` commands encoded (in one write, possibly with other callers' batches),
    /// then waits for one reply per command. Error replies are values here; only I/O and
    /// protocol failures are errors.
    pub(crate) async fn send(
        &self,
        bytes: Vec<u8>,
        n: usize,
    ) -> std::result::Result<Vec<Reply>, SendError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        if self.is_dead() {
            return Err(SendError::NotSent(bytes));
        }
        let Ok(permit) = self.slots.clone().acquire_owned().await else {
            return Err(SendError::NotSent(bytes));
        };
        let (answer, rx) = oneshot::channel();
        let req = Request {
            bytes,
            n,
            answer,
            permit,
        };
        if let Err(mpsc::error::SendError(req)) = self.tx.send(req) {
            return Err(SendError::NotSent(req.bytes));
        }
        rx.await
            .unwrap_or_else(|_| Err(Error::Connection("connection closed".into())))
            .map_err(SendError::Failed)
    }

    /// [`Conn::send`] of owned commands.
    pub(crate) async fn pipeline(&self, cmds: &[Vec<Vec<u8>>]) -> Result<Vec<Reply>> {
        self.send(encode(cmds), cmds.len())
            .await
            .map_err(|e| match e {
                SendError::NotSent(_) => Error::Connection("connection closed".into()),
                SendError::Failed(e) => e,
            })
    }
}

/// Encodes commands as RESP multibulks, one after the other.
pub(crate) fn encode(cmds: &[Vec<Vec<u8>>]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for c in cmds {
        let args: Vec<&[u8]> = c.iter().map(Vec::as_slice).collect();
        encode_request(&mut bytes, &args);
    }
    bytes
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The last handle: stop both tasks (the pool drops a connection it replaced).
        if Arc::strong_count(&self.tasks) == 1 {
            self.kill();
        }
    }
}

async fn writer(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Request>,
    pending: mpsc::UnboundedSender<Pending>,
    dead: Arc<Dead>,
    slots: Arc<Semaphore>,
) {
    let mut buf = Vec::new();
    while let Some(first) = rx.recv().await {
        // Woken by one caller while others wait for replies (so more are about to send): let
        // the callers ready to run queue theirs first, so that they go out in the same write —
        // fewer syscalls and wake-ups per request under load. A caller alone is not delayed.
        if rx.is_empty() && IN_FLIGHT_MAX - slots.available_permits() > 1 {
            tokio::task::yield_now().await;
        }
        buf.clear();
        let mut next = Some(first);
        while let Some(r) = next.take() {
            if dead.is_set() {
                let _ = r
                    .answer
                    .send(Err(Error::Connection("connection closed".into())));
                return;
            }
            buf.extend_from_slice(&r.bytes);
            // Queued before the bytes leave, so the reader always finds it.
            let _ = pending.send(Pending {
                n: r.n,
                answer: r.answer,
                _permit: r.permit,
            });
            if buf.len() < WRITE_BATCH_BYTES_MAX {
                next = rx.try_recv().ok();
            }
        }
        if wr.write_all(&buf).await.is_err() {
            dead.set();
            return;
        }
    }
}

async fn reader(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut pending: mpsc::UnboundedReceiver<Pending>,
    dead: Arc<Dead>,
) {
    let limits = ReplyLimits::default();
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK_BYTES);
    let mut current: Option<(Pending, Vec<Reply>)> = None;
    let failure = 'run: loop {
        let mut pos = 0;
        loop {
            match parse_reply(&buf[pos..], &limits) {
                Ok(Some((r, used))) => {
                    pos += used;
                    if current.is_none() {
                        match pending.try_recv() {
                            Ok(p) => current = Some((p, Vec::new())),
                            Err(_) => {
                                break 'run Error::Protocol("a reply nobody asked for".into());
                            }
                        }
                    }
                    let (p, got) = current.as_mut().expect("current batch");
                    got.push(r);
                    if got.len() == p.n {
                        let (p, got) = current.take().expect("current batch");
                        let _ = p.answer.send(Ok(got));
                    }
                }
                Ok(None) => break,
                Err(e) => break 'run Error::Protocol(e.0),
            }
        }
        buf.drain(..pos);
        // Read into spare capacity: nothing is zeroed first.
        buf.reserve(READ_CHUNK_BYTES);
        match rd.read_buf(&mut buf).await {
            Ok(0) => break Error::Connection("closed by the server".into()),
            Ok(_) => {}
            Err(e) => break Error::Connection(e.to_string()),
        }
    };
    dead.set();
    if let Some((p, _)) = current.take() {
        let _ = p.answer.send(Err(failure.clone()));
    }
    // Until the writer is gone, whatever it queued fails too.
    while let Some(p) = pending.recv().await {
        let _ = p.answer.send(Err(failure.clone()));
    }
}
