//! Open-loop latency: requests leave at fixed times whatever the server does, and each latency is
//! measured from the time the request was *meant* to leave, so a server stall is charged to every
//! request scheduled during it (no coordinated omission). Latencies go into an HDR histogram.
//!
//! Two OS threads serve all connections: a sender, which sleeps until the next request is due and
//! then writes every request already due (round-robin over the connections), and a receiver, which
//! polls all sockets and matches replies to intended send times in order (RESP replies come back in
//! request order). Not tokio: its timer has millisecond granularity, so its wake-ups would batch
//! requests and add up to a millisecond of client-made latency, more than what is measured. Not a
//! thread pair per connection either: on a small machine the client shares the cores with the
//! server, and every extra runnable thread shows up as server latency. With the sender's timer
//! slack at 1 ns, `nanosleep` wakes within microseconds of the schedule.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::client::Outcome;
use crate::resp;
use crate::workload::{Mix, connection_seed, encode_op};

#[derive(Clone, Debug)]
pub struct Config {
    pub addr: String,
    /// Total requests per second over all connections.
    pub rate: f64,
    pub duration: Duration,
    pub connections: usize,
    pub keys: u64,
    pub skew: f64,
    pub get_ratio: f64,
    pub seed: u64,
    /// How long to wait for the replies still outstanding once sending has stopped.
    pub drain_timeout: Duration,
    /// Requests in flight per connection before the run is declared overloaded and sending
    /// stops; bounds the client's memory when the server cannot keep up.
    pub max_outstanding: usize,
    pub io_timeout: Duration,
}

pub struct Report {
    pub sent: u64,
    pub completed: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub unanswered: u64,
    pub overloaded: bool,
    /// From the first scheduled send to the last actual send.
    pub send_secs: f64,
    /// Nanoseconds from intended send time to reply.
    pub latency_ns: Histogram<u64>,
}

/// Latencies above a minute are clamped; a run that slow is broken anyway.
const MAX_LATENCY_NS: u64 = 60_000_000_000;
/// One wake-up of the sender sends at most this many requests, so catching up after a stall
/// stays bounded per write.
const MAX_BATCH: u64 = 4096;
/// How long the receiver's poll blocks before it checks whether the sender has finished.
const POLL_MS: i32 = 20;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("static histogram bounds are valid")
}

/// What the sender tells the receiver: how many requests went out, and that no more will.
struct Progress {
    sent: AtomicU64,
    done: AtomicBool,
}

struct SendResult {
    overloaded: bool,
    error: Option<String>,
    last_send: Instant,
}

struct RecvResult {
    completed: u64,
    errors: u64,
    first_error: Option<String>,
    unanswered: u64,
    latency_ns: Histogram<u64>,
}

pub fn run(cfg: &Config) -> io::Result<Report> {
    assert!(cfg.rate > 0.0 && cfg.connections >= 1 && cfg.max_outstanding >= 1);
    let addr = cfg.addr.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "address resolves to nothing")
    })?;
    let (mut writers, mut readers, mut senders) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..cfg.connections {
        let stream = TcpStream::connect_timeout(&addr, cfg.io_timeout)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(cfg.io_timeout))?;
        stream.set_read_timeout(Some(cfg.io_timeout))?;
        // Intended send times travel from sender to receiver per connection, in request order.
        let (tx, rx) = mpsc::sync_channel::<Instant>(cfg.max_outstanding);
        readers.push(ConnReader::new(stream.try_clone()?, rx));
        writers.push(stream);
        senders.push(tx);
    }
    let progress = Progress {
        sent: AtomicU64::new(0),
        done: AtomicBool::new(false),
    };
    let count = (cfg.duration.as_secs_f64() * cfg.rate).round() as u64;
    let mix = Mix::new(
        cfg.keys,
        cfg.skew,
        cfg.get_ratio,
        connection_seed(cfg.seed, 0),
    );
    // A start a little in the future, so thread start-up is not counted as latency.
    let start = Instant::now() + Duration::from_millis(50);
    let (sent, received) = thread::scope(|scope| {
        let receiver = scope.spawn(|| receive(readers, &progress, cfg.drain_timeout));
        let sent = send(writers, senders, mix, start, cfg.rate, count, &progress);
        progress.done.store(true, Ordering::Release);
        (sent, receiver.join().expect("receiver thread panicked"))
    });
    Ok(Report {
        sent: progress.sent.load(Ordering::Acquire),
        completed: received.completed,
        errors: received.errors,
        first_error: sent.error.or(received.first_error),
        unanswered: received.unanswered,
        overloaded: sent.overloaded,
        send_secs: sent
            .last_send
            .saturating_duration_since(start)
            .as_secs_f64(),
        latency_ns: received.latency_ns,
    })
}

fn send(
    mut streams: Vec<TcpStream>,
    queues: Vec<SyncSender<Instant>>,
    mut mix: Mix,
    start: Instant,
    rate: f64,
    count: u64,
    progress: &Progress,
) -> SendResult {
    set_fine_timer_slack();
    let due = |i: u64| start + Duration::from_secs_f64(i as f64 / rate);
    let mut result = SendResult {
        overloaded: false,
        error: None,
        last_send: start,
    };
    let mut bufs: Vec<Vec<u8>> = streams
        .iter()
        .map(|_| Vec::with_capacity(16 * 1024))
        .collect();
    let mut key = Vec::with_capacity(32);
    let mut i = 0;
    // Bounded: each pass either sleeps until a due time inside the run or sends at least one of
    // the `count` requests.
    'run: while i < count {
        let now = Instant::now();
        let next = due(i);
        if next > now {
            thread::sleep(next - now);
            continue;
        }
        let batch_end = (i + MAX_BATCH).min(count);
        while i < batch_end && due(i) <= now {
            let conn = (i % streams.len() as u64) as usize;
            // The intended time is queued before the request is written, so it is always there
            // when the reply arrives.
            match queues[conn].try_send(due(i)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => result.overloaded = true,
                Err(TrySendError::Disconnected(_)) => {
                    result.error = Some("receiver stopped early".into())
                }
            }
            if result.overloaded || result.error.is_some() {
                break;
            }
            encode_op(mix.op(), &mut key, &mut bufs[conn]);
            i += 1;
        }
        progress.sent.store(i, Ordering::Release);
        for (stream, buf) in streams.iter_mut().zip(bufs.iter_mut()) {
            if buf.is_empty() {
                continue;
            }
            if let Err(e) = stream.write_all(buf) {
                result.error = Some(format!("write: {e}"));
                break 'run;
            }
            buf.clear();
        }
        result.last_send = Instant::now();
        if result.overloaded || result.error.is_some() {
            break;
        }
    }
    result
}

/// One connection's receive side: its unparsed bytes and the intended times of its requests.
struct ConnReader {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    filled: usize,
    intended: Receiver<Instant>,
}

impl ConnReader {
    fn new(stream: TcpStream, intended: Receiver<Instant>) -> Self {
        Self {
            stream,
            buf: vec![0; 256 * 1024],
            pos: 0,
            filled: 0,
            intended,
        }
    }

    /// Reads what the socket has (poll said it is readable, so this does not block) and records
    /// every complete reply. Err means this connection can deliver nothing more.
    fn read_replies(&mut self, arrived: Instant, r: &mut RecvResult) -> Result<(), String> {
        if self.pos == self.filled {
            (self.pos, self.filled) = (0, 0);
        } else if self.filled == self.buf.len() {
            self.buf.copy_within(self.pos..self.filled, 0);
            (self.pos, self.filled) = (0, self.filled - self.pos);
        }
        match self.stream.read(&mut self.buf[self.filled..]) {
            Ok(0) => return Err("server closed the connection".into()),
            Ok(n) => self.filled += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return Ok(());
            }
            Err(e) => return Err(format!("read: {e}")),
        }
        loop {
            match resp::parse_reply(&self.buf[self.pos..self.filled]) {
                Ok(Some((reply, used))) => {
                    if let Outcome::Error(e) = Outcome::of(&reply) {
                        note(r, e);
                    }
                    self.pos += used;
                    let Ok(intended) = self.intended.recv_timeout(Duration::from_secs(1)) else {
                        return Err("reply without a request: stream out of step".into());
                    };
                    r.latency_ns.saturating_record(
                        arrived.saturating_duration_since(intended).as_nanos() as u64,
                    );
                    r.completed += 1;
                }
                Ok(None) if self.pos == 0 && self.filled == self.buf.len() => {
                    return Err("reply larger than the receive buffer".into());
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(format!("protocol: {e}")),
            }
        }
    }
}

fn receive(mut conns: Vec<ConnReader>, progress: &Progress, drain_timeout: Duration) -> RecvResult {
    let mut r = RecvResult {
        completed: 0,
        errors: 0,
        first_error: None,
        unanswered: 0,
        latency_ns: new_histogram(),
    };
    let mut fds: Vec<libc::pollfd> = conns
        .iter()
        .map(|c| libc::pollfd {
            fd: c.stream.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut drain_deadline = None;
    // Bounded: ends when every sent request is answered, or `drain_timeout` after the sender
    // stopped, or on the first broken connection.
    loop {
        let done = progress.done.load(Ordering::Acquire);
        let sent = progress.sent.load(Ordering::Acquire);
        if done && r.completed >= sent {
            return r;
        }
        let now = Instant::now();
        if done && now >= *drain_deadline.get_or_insert(now + drain_timeout) {
            r.unanswered = sent - r.completed;
            return r;
        }
        // SAFETY: `fds` is a live, correctly sized array of pollfd for the duration of the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, POLL_MS) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            note(&mut r, format!("poll: {e}"));
            r.unanswered = progress.sent.load(Ordering::Acquire) - r.completed;
            return r;
        }
        // Every reply read in this pass arrived by now; stamping once per wake-up is also cheaper.
        let arrived = Instant::now();
        for (conn, fd) in conns.iter_mut().zip(fds.iter_mut()) {
            if fd.revents == 0 {
                continue;
            }
            fd.revents = 0;
            if let Err(e) = conn.read_replies(arrived, &mut r) {
                note(&mut r, e);
                r.unanswered = progress
                    .sent
                    .load(Ordering::Acquire)
                    .saturating_sub(r.completed);
                return r;
            }
        }
    }
}

fn note(r: &mut RecvResult, message: String) {
    r.errors += 1;
    r.first_error.get_or_insert(message);
}

/// Linux pads every sleep by the thread's timer slack (50 µs by default) to batch wake-ups; a
/// latency benchmark wants the wake-up at the scheduled time instead.
fn set_fine_timer_slack() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and only affects the calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
}
