//! Deterministic simulation of one replica group — a primary and its replicas — running the
//! production code: the command layer executes the clients' writes and the replication handshake
//! (`REPLCONF`, `PSYNC`), and the sans-IO link sessions of `shoal-replication` produce and consume
//! every byte of the stream, exactly as the server's drivers use them. Only the network and the
//! clocks are simulated. One seed derives every choice (workload, latencies, faults), so a failing
//! seed replays exactly: it prints the command that does.
//!
//! Faults: link drops, partitions of a replica (its connection dies and reconnects fail until they
//! heal), message delays, restarts of a replica from the snapshot it last saved, clock steps.
//! Checked: after every step, each node's offset within one history never goes back; whenever a
//! `sync` write is acknowledged, every replica that acknowledged its offset holds it; at the end,
//! after healing, every replica holds every acknowledged write and its slot digests equal the
//! primary's. The role machine and backlog assert their own invariants as they run.
//!
//! Sources of nondeterminism closed: no threads (the lazy-free queue frees inline), no wall clock
//! (each node's `now` is the simulated time plus its own skew), ids and hashers seeded from the
//! seed, no iteration over randomly seeded hash maps in anything that reaches the output.

pub mod active;

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Wake, Waker};

use shoal_commands::{Client, ClientHandle, Hooks, OwnedArgs, ServerState, config};
use shoal_keyspace::{Rng, key_slot};
use shoal_replication::primary_link::{self, AckReader, ReplicaAddr, Sender};
use shoal_replication::replica_link::{self, Handshake, LinkError, ReplicaLink};
use shoal_replication::{Settle, settle, snapshot};
use shoal_resp::{Decoded, RequestDecoder};

/// Simulated milliseconds per step.
pub const STEP_MS: u64 = 1;

/// Parameters of a run, all derived from the seed unless set.
#[derive(Debug, Clone)]
pub struct Params {
    pub seed: u64,
    pub replicas: usize,
    /// Steps with writes and faults, then at most `heal_steps_max` to converge.
    pub steps: u64,
    pub heal_steps_max: u64,
    /// `sync` strategy (else `async`) for the clients' writes.
    pub sync: bool,
    pub min_replicas_ack: usize,
    pub ack_timeout_ms: u64,
    /// Per-step probabilities, in 1/10000.
    pub write_per_10k: u64,
    pub drop_per_10k: u64,
    pub partition_per_10k: u64,
    pub restart_per_10k: u64,
    pub clock_step_per_10k: u64,
    pub latency_ms_max: u64,
    /// Test of the checkers themselves: replica 0 silently loses the first acknowledged write.
    pub sabotage: bool,
    /// One more replica that follows replica 0 instead of the primary (chained replication).
    pub chained: bool,
}

impl Params {
    pub fn from_seed(seed: u64) -> Params {
        let mut r = Rng::new(seed ^ 0x51A1_0000);
        let sync = r.below(2) == 0;
        Params {
            seed,
            replicas: 2,
            steps: 1500 + r.below(1500) as u64,
            heal_steps_max: 60_000,
            sync,
            min_replicas_ack: 1 + r.below(2),
            ack_timeout_ms: 50 + r.below(200) as u64,
            write_per_10k: 1500 + r.below(4000) as u64,
            drop_per_10k: r.below(20) as u64,
            partition_per_10k: r.below(10) as u64,
            restart_per_10k: r.below(6) as u64,
            clock_step_per_10k: r.below(10) as u64,
            latency_ms_max: 1 + r.below(20) as u64,
            sabotage: false,
            chained: r.below(3) == 0,
        }
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        format!("cargo run -p shoal-sim -- --seed {}", self.seed)
    }
}

/// A waker that does nothing: the simulator polls every link each step.
struct NoopWake;
impl Wake for NoopWake {
    fn wake(self: Arc<Self>) {}
}

/// One direction of a connection: bytes in flight with their delivery times.
#[derive(Default)]
struct Pipe {
    queue: VecDeque<(u64, Vec<u8>)>,
}

impl Pipe {
    fn send(&mut self, at: u64, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        // In order, as TCP: never before what was sent earlier.
        let at = self.queue.back().map_or(at, |(last, _)| at.max(*last));
        self.queue.push_back((at, bytes));
    }

    fn take_due(&mut self, now: u64) -> Vec<u8> {
        let mut out = Vec::new();
        while self.queue.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, b)) = self.queue.pop_front() {
                out.extend_from_slice(&b);
            }
        }
        out
    }
}

/// The primary's end of a connection: a client of the command layer until PSYNC, then a link.
struct PrimaryEnd {
    client: Client,
    inbuf: Vec<u8>,
    decoder: RequestDecoder,
    ranges: Vec<std::ops::Range<usize>>,
    link: Option<(Sender, AckReader)>,
}

/// A connection from a replica to the primary.
struct Conn {
    replica: ReplicaLink,
    primary: PrimaryEnd,
    to_primary: Pipe,
    to_replica: Pipe,
}

struct Node {
    srv: ServerState,
    /// Clock skew against simulated time (ms; clock steps move it).
    skew: i64,
    /// The snapshot it last saved, to restart from.
    saved: Option<Vec<u8>>,
    /// (replication id, offset) last seen, for the monotonic-offset check.
    last_offset: (String, u64),
}

/// A write the workload made.
#[derive(Debug, Clone)]
struct Write {
    key: String,
    version: u64,
    offset: u64,
    deadline_ms: u64,
    acked: Option<bool>,
}

/// A failed run.
#[derive(Debug)]
pub struct Failure {
    pub params: Box<Params>,
    pub step: u64,
    pub what: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} failed at step {}: {}\n  params: {:?}\n  replay: {}",
            self.params.seed,
            self.step,
            self.what,
            self.params,
            self.params.replay_command()
        )
    }
}

/// What a run saw.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub writes: u64,
    pub acked: u64,
    pub not_durable: u64,
    pub drops: u64,
    pub partitions: u64,
    pub restarts: u64,
    pub clock_steps: u64,
    pub full_syncs: u64,
    pub partial_syncs: u64,
    pub heal_steps: u64,
}

pub struct Sim {
    p: Params,
    rng: Rng,
    t: u64,
    step: u64,
    primary: Node,
    primary_client: Client,
    /// Other traffic (counters, collections, short TTLs, deletions) on keys apart from the
    /// checked writes: it must converge too.
    mixed_client: Client,
    replicas: Vec<Node>,
    conns: Vec<Option<Conn>>,
    /// Per replica: partitioned until (sim ms), and when to try connecting next.
    partitioned_until: Vec<u64>,
    next_connect: Vec<u64>,
    epochs: Vec<u64>,
    /// Whom each replica follows: `None` the primary, `Some(j)` replica `j` (chained).
    upstream: Vec<Option<usize>>,
    writes: Vec<Write>,
    next_key: u64,
    next_client_id: u64,
    waker: Waker,
    pub summary: Summary,
}

const BASE_MS: u64 = 1_700_000_000_000;
/// Database 0 holds the checked writes; 1 and 2 the mixed traffic (flushed, swapped).
const DBS_CHECKED: [usize; 3] = [0, 1, 2];
const PRIMARY_PORT: u16 = 7000;

fn new_state(seed: u64, now: u64) -> ServerState {
    ServerState::new(config::Config::default(), now, seed, Hooks::default())
}

fn client(id: u64) -> Client {
    let h = Arc::new(ClientHandle::new(
        id,
        format!("10.0.0.{id}:1"),
        "sim:0".into(),
        0,
    ));
    Client::new(h, true)
}

fn exec(srv: &ServerState, c: &mut Client, args: &[&str], now: u64) -> Vec<u8> {
    let o = OwnedArgs::new(args.iter());
    let mut out = Vec::new();
    shoal_commands::execute(srv, c, &o.args(), &mut out, now);
    out
}

impl Node {
    fn now(&self, t: u64) -> u64 {
        (BASE_MS + t).saturating_add_signed(self.skew)
    }
}

impl Sim {
    pub fn new(p: Params) -> Sim {
        let mut rng = Rng::new(p.seed);
        let primary = Node {
            srv: new_state(rng.next_u64(), BASE_MS),
            skew: 0,
            saved: None,
            last_offset: (String::new(), 0),
        };
        let mut primary_client = client(1);
        let strategy = if p.sync { "sync" } else { "async" };
        exec(
            &primary.srv,
            &mut primary_client,
            &["DURABILITY", strategy],
            BASE_MS,
        );
        let mut admin = client(2);
        let n = p.min_replicas_ack.to_string();
        exec(
            &primary.srv,
            &mut admin,
            &["CONFIG", "SET", "min-replicas-ack", &n],
            BASE_MS,
        );
        let count = p.replicas + p.chained as usize;
        let replicas: Vec<Node> = (0..count)
            .map(|_| Node {
                srv: new_state(rng.next_u64(), BASE_MS),
                skew: 0,
                saved: None,
                last_offset: (String::new(), 0),
            })
            .collect();
        let upstream: Vec<Option<usize>> =
            (0..count).map(|i| (i >= p.replicas).then_some(0)).collect();
        let mut epochs = Vec::new();
        for (r, up) in replicas.iter().zip(&upstream) {
            let (host, port) = upstream_addr(*up);
            epochs.push(r.srv.repl.become_replica(&r.srv.ks, host, port));
        }
        let n = replicas.len();
        Sim {
            rng,
            t: 0,
            step: 0,
            primary,
            primary_client,
            mixed_client: {
                // The mixed traffic lives in database 1, where it may be flushed and swapped
                // with database 2 without touching the checked writes in database 0.
                let mut c = client(3);
                c.select(1);
                // Its commands come in pipelined batches, as a connection's do: their effects
                // wait for the batch's end, or go to the stream at once (`write_log`), unless
                // the sync strategy is on (the server does not defer then either).
                c.repl.defer_effects = !p.sync;
                c
            },
            replicas,
            conns: (0..n).map(|_| None).collect(),
            partitioned_until: vec![0; n],
            next_connect: vec![0; n],
            epochs,
            upstream,
            writes: Vec::new(),
            next_key: 0,
            next_client_id: 10,
            waker: Waker::from(Arc::new(NoopWake)),
            summary: Summary::default(),
            p,
        }
    }

    fn fail(&self, what: String) -> Failure {
        Failure {
            params: Box::new(self.p.clone()),
            step: self.step,
            what,
        }
    }

    fn chance(&mut self, per_10k: u64) -> bool {
        per_10k > 0 && (self.rng.below(10_000) as u64) < per_10k
    }

    fn latency(&mut self) -> u64 {
        self.rng.below(self.p.latency_ms_max as usize + 1) as u64
    }

    /// Runs the whole schedule: the safety phase with faults, then healing until converged.
    pub fn run(mut self) -> Result<Summary, Failure> {
        while self.step < self.p.steps {
            self.faults();
            if self.chance(self.p.write_per_10k) {
                self.write();
            }
            if self.chance(self.p.write_per_10k / 2) {
                self.mixed();
            }
            self.tick()?;
        }
        // Heal: no more faults or writes; every replica must catch up and converge.
        self.partitioned_until.iter_mut().for_each(|p| *p = 0);
        let heal_start = self.step;
        loop {
            self.tick()?;
            self.settle_writes()?;
            if self.writes.iter().all(|w| w.acked.is_some()) && self.converged() {
                break;
            }
            if self.step - heal_start > self.p.heal_steps_max {
                return Err(self.fail(format!(
                    "did not converge within {} healing steps",
                    self.p.heal_steps_max
                )));
            }
        }
        self.summary.heal_steps = self.step - heal_start;
        self.final_checks()?;
        Ok(self.summary)
    }

    fn faults(&mut self) {
        let n = self.replicas.len();
        if self.chance(self.p.drop_per_10k) {
            let i = self.rng.below(n);
            if let Some(c) = self.conns[i].take() {
                self.summary.drops += 1;
                self.close(i, c);
            }
        }
        if self.chance(self.p.partition_per_10k) {
            let i = self.rng.below(n);
            let len = 50 + self.rng.below(2000) as u64;
            self.partitioned_until[i] = self.t + len;
            self.summary.partitions += 1;
            if let Some(c) = self.conns[i].take() {
                self.close(i, c);
            }
        }
        if self.chance(self.p.restart_per_10k) {
            let i = self.rng.below(n);
            self.restart(i);
        }
        if self.chance(self.p.clock_step_per_10k) {
            let i = self.rng.below(n + 1);
            let step = self.rng.below(10_000) as i64 - 5_000;
            let node = if i == n {
                &mut self.primary
            } else {
                &mut self.replicas[i]
            };
            node.skew += step;
            self.summary.clock_steps += 1;
        }
        // Replicas save a snapshot now and then (what a restart comes back from).
        if self.chance(20) {
            let i = self.rng.below(n);
            let r = &mut self.replicas[i];
            let srv = &r.srv;
            // Single-threaded: no SWAPDB can run during the walk.
            r.saved = Some(
                snapshot::write_all(&srv.ks, &[], || (srv.repl.ids().replid, srv.repl.offset()))
                    .expect("no SWAPDB during a simulated save"),
            );
        }
    }

    /// The link of replica `i` went away (both ends see it closed).
    fn close(&mut self, i: usize, mut conn: Conn) {
        if let Some((sender, _)) = conn.primary.link.as_mut() {
            sender.detach(&self.upstream_srv(i).repl);
        }
        let r = &self.replicas[i];
        let _ = r
            .srv
            .repl
            .link_to(self.epochs[i], shoal_replication::LinkState::Down);
        self.next_connect[i] = self.t + 10 + self.rng.below(200) as u64;
    }

    /// The node replica `i` follows.
    fn upstream_srv(&self, i: usize) -> &ServerState {
        match self.upstream[i] {
            None => &self.primary.srv,
            Some(j) => &self.replicas[j].srv,
        }
    }

    fn restart(&mut self, i: usize) {
        if let Some(c) = self.conns[i].take() {
            self.close(i, c);
        }
        // The process is gone: so are the connections of the replicas that followed it.
        for k in 0..self.replicas.len() {
            if self.upstream[k] == Some(i)
                && let Some(c) = self.conns[k].take()
            {
                self.close(k, c);
            }
        }
        let seed = self.rng.next_u64();
        let now = self.replicas[i].now(self.t);
        let srv = new_state(seed, now);
        if let Some(bytes) = &self.replicas[i].saved {
            match snapshot::load_all_meta(&srv.ks, bytes, &srv.encoding_limits(), now, false) {
                Ok(l) => {
                    if l.replid.bytes().any(|b| b != b'0') {
                        srv.repl.resume(&l.replid, l.offset, l.end_offset);
                    }
                }
                Err(e) => panic!("a snapshot the simulator saved does not load: {e}"),
            }
        }
        let (host, port) = upstream_addr(self.upstream[i]);
        self.epochs[i] = srv.repl.become_replica(&srv.ks, host, port);
        let r = &mut self.replicas[i];
        r.srv = srv;
        r.last_offset = (String::new(), 0);
        self.summary.restarts += 1;
    }

    fn write(&mut self) {
        let key = format!("k{}", self.next_key);
        self.next_key += 1;
        let now = self.primary.now(self.t);
        let value = format!("v{}", self.next_key);
        let reply = exec(
            &self.primary.srv,
            &mut self.primary_client,
            &["SET", &key, &value],
            now,
        );
        assert_eq!(reply, b"+OK\r\n", "a SET on the primary succeeds");
        let slot = key_slot(key.as_bytes());
        let version = self
            .primary
            .srv
            .ks
            .lock(self.primary.srv.ks.shard_of(slot))
            .peek_any(0, slot, key.as_bytes())
            .map(|e| e.version())
            .unwrap_or(0);
        self.writes.push(Write {
            key,
            version,
            offset: self.primary_client.repl.last_write_offset,
            deadline_ms: self.t + self.p.ack_timeout_ms,
            acked: if self.p.sync { None } else { Some(false) },
        });
        self.summary.writes += 1;
    }

    /// A batch of 1–4 writes of the mixed traffic, run as a connection runs a pipeline's: each
    /// data command's effects deferred to the batch's end, where they are appended (see
    /// `mixed_one`).
    fn mixed(&mut self) {
        for _ in 0..1 + self.rng.below(4) {
            self.mixed_one();
        }
        let now = self.primary.now(self.t);
        shoal_commands::effects::flush_deferred(&self.primary.srv, &mut self.mixed_client, now);
    }

    /// A write of the mixed traffic: element changes (sent as deltas), counters, random pops,
    /// appends, trims, short TTLs on strings and sets, deletes.
    fn mixed_one(&mut self) {
        let r = |s: &mut Self, n: usize| s.rng.below(n).to_string();
        let cmd: Vec<String> = match self.rng.below(16) {
            // Now and then a whole-database effect, racing nothing here but ordered in the
            // stream exactly as on the primary.
            _ if self.rng.below(200) == 0 => vec!["FLUSHDB".into()],
            _ if self.rng.below(200) == 0 => vec!["SWAPDB".into(), "1".into(), "2".into()],
            0 => vec!["INCR".into(), format!("c{}", r(self, 10))],
            1 => vec!["DEL".into(), format!("c{}", r(self, 10))],
            2 => vec![
                "SADD".into(),
                format!("s{}", r(self, 5)),
                format!("m{}", r(self, 50)),
            ],
            3 => vec![
                "SREM".into(),
                format!("s{}", r(self, 5)),
                format!("m{}", r(self, 50)),
            ],
            4 => vec!["SPOP".into(), format!("s{}", r(self, 5))],
            5 => vec![
                "SET".into(),
                format!("t{}", r(self, 20)),
                "x".into(),
                "PX".into(),
                (1 + self.rng.below(300)).to_string(),
            ],
            // A read: lazily expires a key whose deadline passed, which the replicas must see.
            6 => vec!["GET".into(), format!("t{}", r(self, 20))],
            7 => vec![
                "HSET".into(),
                format!("h{}", r(self, 5)),
                format!("f{}", r(self, 20)),
                r(self, 9),
            ],
            8 => vec![
                "HDEL".into(),
                format!("h{}", r(self, 5)),
                format!("f{}", r(self, 20)),
            ],
            9 => vec!["LPUSH".into(), format!("l{}", r(self, 3)), r(self, 9)],
            10 => vec!["RPOP".into(), format!("l{}", r(self, 3))],
            12 => vec!["APPEND".into(), format!("a{}", r(self, 3)), r(self, 9)],
            // Trimming and expiring collections: positions and deadlines travel as they were.
            13 => vec![
                "LTRIM".into(),
                format!("l{}", r(self, 3)),
                "0".into(),
                r(self, 6),
            ],
            // A string overwritten whole: in a batch after an APPEND to it (a delta in the
            // shard's queue), its effect must follow that delta, not skip ahead of it (the
            // replica would then find the delta's base gone: a broken stream).
            15 => vec![
                "SET".into(),
                format!("a{}", r(self, 3)),
                format!("{:020}", self.rng.next_u64()),
            ],
            14 => vec![
                "PEXPIRE".into(),
                format!("s{}", r(self, 5)),
                (1 + self.rng.below(2000)).to_string(),
            ],
            _ => vec![
                "ZINCRBY".into(),
                format!("z{}", r(self, 3)),
                r(self, 5),
                format!("m{}", r(self, 10)),
            ],
        };
        let args: Vec<&str> = cmd.iter().map(|a| a.as_str()).collect();
        let now = self.primary.now(self.t);
        let reply = exec(&self.primary.srv, &mut self.mixed_client, &args, now);
        assert_ne!(
            reply.first(),
            Some(&b'-'),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&reply)
        );
    }

    /// The primary's active expire cycle, as the server's cron runs it: due keys are deleted and
    /// their deletions sent.
    fn expire_cycle(&mut self) {
        let srv = &self.primary.srv;
        let now = self.primary.now(self.t);
        for i in 0..srv.ks.shard_count() {
            srv.ks.lock(i).expire_cycle(now, 64, |_, _| {});
            srv.ks
                .lock(i)
                .expire_fields_cycle(now, 64, || srv.ks.hlc.next(now), |_, _| {});
        }
        shoal_commands::effects::emit_logged(srv, now);
    }

    /// One step: connect, deliver, produce, acknowledge, settle, check.
    fn tick(&mut self) -> Result<(), Failure> {
        self.t += STEP_MS;
        self.step += 1;
        if self.t.is_multiple_of(100) {
            self.expire_cycle();
        }
        for i in 0..self.replicas.len() {
            self.connect_if_due(i);
            if let Err(e) = self.drive(i) {
                if let Some(c) = self.conns[i].take() {
                    self.close(i, c);
                }
                if e == LinkError::Stale {
                    return Err(self.fail("a link went stale while its role did not change".into()));
                }
            }
        }
        // No stream ever fails to apply: deltas follow the versions they were made from.
        for (i, r) in self.replicas.iter().enumerate() {
            if r.srv
                .repl
                .counters
                .stream_breaks
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
            {
                return Err(self.fail(format!("replica {i}'s stream could not be applied")));
            }
        }
        self.settle_writes()?;
        self.check_offsets()?;
        // No node counts a replica whose connection is gone.
        for up in std::iter::once(None).chain((0..self.replicas.len()).map(Some)) {
            let srv = match up {
                None => &self.primary.srv,
                Some(j) => &self.replicas[j].srv,
            };
            let attached = srv.repl.replica_count();
            let linked = (0..self.replicas.len())
                .filter(|&k| self.upstream[k] == up)
                .filter(|&k| {
                    self.conns[k]
                        .as_ref()
                        .is_some_and(|c| c.primary.link.is_some())
                })
                .count();
            if attached > linked {
                return Err(self.fail(format!(
                    "{up:?} lists {attached} replicas for {linked} live links"
                )));
            }
        }
        Ok(())
    }

    fn connect_if_due(&mut self, i: usize) {
        if self.conns[i].is_some()
            || self.t < self.next_connect[i]
            || self.t < self.partitioned_until[i]
        {
            return;
        }
        let r = &self.replicas[i];
        let node = replica_node(&r.srv);
        if !r
            .srv
            .repl
            .link_to(self.epochs[i], shoal_replication::LinkState::Connecting)
        {
            return;
        }
        let mut link = ReplicaLink::new(
            self.epochs[i],
            Handshake {
                auth: None,
                listening_port: 7001 + i as u16,
            },
        );
        let first = match link.start(&node) {
            Ok(b) => b,
            Err(_) => return,
        };
        self.next_client_id += 1;
        let mut conn = Conn {
            replica: link,
            primary: PrimaryEnd {
                client: client(self.next_client_id),
                inbuf: Vec::new(),
                decoder: RequestDecoder::default(),
                ranges: Vec::new(),
                link: None,
            },
            to_primary: Pipe::default(),
            to_replica: Pipe::default(),
        };
        let lat = self.latency();
        conn.to_primary.send(self.t + lat, first);
        self.conns[i] = Some(conn);
    }

    /// Moves bytes both ways on replica `i`'s connection.
    fn drive(&mut self, i: usize) -> Result<(), LinkError> {
        let Some(mut conn) = self.conns[i].take() else {
            return Ok(());
        };
        let res = self.drive_conn(i, &mut conn);
        self.conns[i] = Some(conn);
        res
    }

    fn drive_conn(&mut self, i: usize, conn: &mut Conn) -> Result<(), LinkError> {
        let t = self.t;
        let (lat_a, lat_b) = (self.latency(), self.latency());
        let (pnow, psrv) = match self.upstream[i] {
            None => (self.primary.now(t), &self.primary.srv),
            Some(j) => (self.replicas[j].now(t), &self.replicas[j].srv),
        };
        // Upstream side: requests until PSYNC, then acknowledgements.
        let input = conn.to_primary.take_due(t);
        if !input.is_empty() {
            match conn.primary.link.as_mut() {
                Some((_, acks)) => acks
                    .on_input(&psrv.repl, &input, pnow)
                    .map_err(|e| LinkError::Refused(format!("{e:?}")))?,
                None => {
                    conn.primary.inbuf.extend_from_slice(&input);
                    let out = primary_requests(psrv, &mut conn.primary, i, pnow)?;
                    conn.to_replica.send(t + lat_a, out);
                }
            }
        }
        if let Some((sender, _)) = conn.primary.link.as_mut() {
            // Up to a few chunks per step, as a socket would take.
            for _ in 0..4 {
                match sender.poll(&psrv.repl, &psrv.ks, &self.waker) {
                    Ok(Some(bytes)) => conn.to_replica.send(t + lat_a, bytes),
                    Ok(None) => break,
                    Err(e) => return Err(LinkError::Refused(format!("{e:?}"))),
                }
            }
        }
        // Replica side.
        let r = &self.replicas[i];
        let rnow = r.now(t);
        let node = replica_node(&r.srv);
        let input = conn.to_replica.take_due(t);
        if !input.is_empty() {
            let p = conn.replica.on_input(&node, &input, rnow)?;
            conn.to_primary.send(t + lat_b, p.send);
        }
        let out = conn.replica.on_tick(&node, rnow)?;
        conn.to_primary.send(t + lat_b, out);
        Ok(())
    }

    fn settle_writes(&mut self) -> Result<(), Failure> {
        let need = self.p.min_replicas_ack;
        let t = self.t;
        for idx in 0..self.writes.len() {
            if self.writes[idx].acked.is_some() {
                continue;
            }
            let w = self.writes[idx].clone();
            match settle(&self.primary.srv.repl, w.offset, need, w.deadline_ms, t) {
                Settle::Wait => {}
                Settle::NotDurable { .. } => {
                    self.writes[idx].acked = Some(false);
                    self.summary.not_durable += 1;
                }
                Settle::Durable => {
                    self.writes[idx].acked = Some(true);
                    self.summary.acked += 1;
                    if self.p.sabotage && self.summary.acked == 1 {
                        let srv = &self.replicas[0].srv;
                        let slot = key_slot(w.key.as_bytes());
                        srv.ks
                            .lock(srv.ks.shard_of(slot))
                            .remove(0, slot, w.key.as_bytes());
                        continue;
                    }
                    // Every replica that acknowledged this offset must hold the write now.
                    for info in self.primary.srv.repl.replicas() {
                        // The replicas that counted: they hold what they acknowledged.
                        if !info.holds_acked.load(std::sync::atomic::Ordering::Relaxed)
                            || info.ack_offset.load(std::sync::atomic::Ordering::Relaxed) < w.offset
                        {
                            continue;
                        }
                        let port = info
                            .listening_port
                            .load(std::sync::atomic::Ordering::Relaxed);
                        let r = (port as usize).wrapping_sub(7001);
                        if let Some(node) = self.replicas.get(r)
                            && !holds(&node.srv, &w)
                        {
                            return Err(self.fail(format!(
                                "replica {r} acknowledged offset {} but lacks {} (version {})",
                                w.offset, w.key, w.version
                            )));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn check_offsets(&mut self) -> Result<(), Failure> {
        for i in 0..self.replicas.len() {
            let repl = &self.replicas[i].srv.repl;
            let (id, off) = (repl.ids().replid, repl.replica_offset());
            let (last_id, last_off) = &self.replicas[i].last_offset;
            if *last_id == id && off < *last_off {
                return Err(self.fail(format!(
                    "replica {i}'s offset went back from {last_off} to {off} within history {id}"
                )));
            }
            self.replicas[i].last_offset = (id, off);
        }
        Ok(())
    }

    fn converged(&self) -> bool {
        let end = self.primary.srv.repl.offset();
        self.replicas.iter().all(|r| {
            r.srv.repl.link_state() == shoal_replication::LinkState::Connected
                && r.srv.repl.replica_offset() == end
        })
    }

    fn final_checks(&mut self) -> Result<(), Failure> {
        let pnow = self.primary.now(self.t);
        let live = |srv: &ServerState| -> usize {
            let mut n = 0;
            for db in DBS_CHECKED {
                for slot in 0..shoal_keyspace::SLOTS as u16 {
                    srv.ks
                        .lock(srv.ks.shard_of(slot))
                        .for_each_in_slot(db, slot, pnow, |_| n += 1);
                }
            }
            n
        };
        // Live keys at one time: a replica restarted from a snapshot skipped keys already expired
        // that the primary may still store until its expire cycle reaches them.
        let pkeys = live(&self.primary.srv);
        // Every slot: the mixed traffic's keys live anywhere.
        let slots: Vec<u16> = (0..shoal_keyspace::SLOTS as u16).collect();
        for (i, r) in self.replicas.iter().enumerate() {
            for w in self.writes.iter().filter(|w| w.acked == Some(true)) {
                if !holds(&r.srv, w) {
                    return Err(self.fail(format!(
                        "after healing, replica {i} lacks acknowledged write {} (version {})",
                        w.key, w.version
                    )));
                }
            }
            let rkeys = live(&r.srv);
            if rkeys != pkeys {
                return Err(self.fail(format!(
                    "after healing, replica {i} holds {rkeys} live keys, the primary {pkeys}"
                )));
            }
            // At one time for both: the nodes' clocks are skewed, and a key past its deadline on one
            // clock only is not a difference in data.
            for db in DBS_CHECKED {
                for &slot in &slots {
                    let a = shoal_replication::digest::slot_digest(
                        &self.primary.srv.ks,
                        db,
                        slot,
                        pnow,
                    );
                    let b = shoal_replication::digest::slot_digest(&r.srv.ks, db, slot, pnow);
                    if a != b {
                        return Err(self.fail(format!(
                            "after healing, db {db} slot {slot} digests differ: primary {a}, replica {i} {b}"
                        )));
                    }
                }
            }
        }
        let c = &self.primary.srv.repl.counters;
        self.summary.full_syncs = c.sync_full.load(std::sync::atomic::Ordering::Relaxed);
        self.summary.partial_syncs = c.sync_partial_ok.load(std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

fn replica_node(srv: &ServerState) -> replica_link::Node<'_> {
    replica_link::Node {
        functions: Some(srv),
        ks: &srv.ks,
        repl: &srv.repl,
        limits: srv.encoding_limits(),
        lazyfree: &srv.lazyfree,
        accept_empty_primary: true,
    }
}

/// The address a replica follows (only its shape matters to the simulator).
fn upstream_addr(up: Option<usize>) -> (String, u16) {
    match up {
        None => ("primary".into(), PRIMARY_PORT),
        Some(j) => (format!("replica{j}"), 7001 + j as u16),
    }
}

/// Whether `srv` holds `w` (or a newer version of its key).
fn holds(srv: &ServerState, w: &Write) -> bool {
    let slot = key_slot(w.key.as_bytes());
    srv.ks
        .lock(srv.ks.shard_of(slot))
        .peek_any(0, slot, w.key.as_bytes())
        .is_some_and(|e| e.version() >= w.version)
}

/// Runs the requests a replica sent the primary through the command layer, as a connection does,
/// until PSYNC hands the connection over to a link. Returns the replies.
fn primary_requests(
    srv: &ServerState,
    end: &mut PrimaryEnd,
    replica: usize,
    now: u64,
) -> Result<Vec<u8>, LinkError> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        match end.decoder.decode(&end.inbuf, pos, &mut end.ranges) {
            Ok(Decoded::Frame { end: e, inline }) => {
                let src: &[u8] = if inline {
                    end.decoder.inline_bytes()
                } else {
                    &end.inbuf
                };
                let args = shoal_commands::Args::new(src, &end.ranges);
                shoal_commands::execute(srv, &mut end.client, &args, &mut out, now);
                pos = e;
                if let Some((replid, offset)) = end.client.repl.handoff.take() {
                    let who = ReplicaAddr {
                        client_id: end.client.id(),
                        ip: format!("replica{replica}"),
                        listening_port: end.client.repl.listening_port.unwrap_or(0),
                    };
                    let (sender, mut acks, line) =
                        primary_link::accept(&srv.repl, &srv.ks, who, &replid, offset, now);
                    out.extend_from_slice(&line);
                    let rest = end.inbuf[pos..].to_vec();
                    acks.on_input(&srv.repl, &rest, now)
                        .map_err(|e| LinkError::Refused(format!("{e:?}")))?;
                    end.inbuf.clear();
                    end.link = Some((sender, acks));
                    return Ok(out);
                }
            }
            Ok(Decoded::Empty { end: e }) => pos = e,
            Ok(Decoded::Incomplete) => break,
            Err(e) => return Err(LinkError::Refused(e.message())),
        }
    }
    end.inbuf.drain(..pos);
    end.decoder.shift(pos, &mut end.ranges);
    Ok(out)
}

/// Runs one seed.
pub fn run_seed(seed: u64) -> Result<Summary, Failure> {
    Sim::new(Params::from_seed(seed)).run()
}
