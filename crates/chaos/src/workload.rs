//! The workload: client threads issuing SETs of unique values and GETs on shared registers,
//! INCRs on counters, SADDs of unique elements, and SETs of keys written once (the durability
//! probe), each request recorded as an `Op` with its outcome and the node that answered. Under
//! `sync` against redis-server a write is followed by `WAIT 1 <ack timeout>` on the same
//! connection and counts as acknowledged only if WAIT reports a replica. After the run, the final
//! reads record what the cluster holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::client::{ClusterClient, Routed, refused};
use crate::harness::{Strategy, Target};
use crate::history::{FINAL_CLIENT, FinalState, Kind, Op, Outcome, Shard};
use crate::resp::Reply;
use crate::rng::Rng;
use crate::slots::key_slot;

/// Attempts of each final read (the cluster is healthy by then; this absorbs a late redirect).
const FINAL_READ_ATTEMPTS: usize = 5;

#[derive(Clone, Debug)]
pub struct WorkloadOptions {
    pub clients: usize,
    pub target: Target,
    pub strategy: Strategy,
    pub request_timeout: Duration,
    pub ack_timeout_ms: u64,
    /// Pause between one client's requests, drawn in this range (keeps six nodes and the
    /// clients within two cores).
    pub pace_ms: (u64, u64),
}

/// The keys of one run: one register, counter and set per replica group, so every group is
/// exercised by every kind of op.
#[derive(Clone, Debug, Default)]
pub struct Keys {
    pub registers: Vec<String>,
    pub counters: Vec<String>,
    pub sets: Vec<String>,
}

fn key_in(prefix: &str, shard: &Shard) -> String {
    (0u32..)
        .map(|n| format!("{prefix}{n}"))
        .find(|k| shard.holds(key_slot(k.as_bytes())))
        .expect("some key hashes into any non-empty slot range")
}

pub fn keys_for(shards: &[Shard]) -> Keys {
    let mut k = Keys::default();
    for (g, s) in shards.iter().enumerate() {
        k.registers.push(key_in(&format!("reg{g}:"), s));
        k.counters.push(key_in(&format!("ctr{g}:"), s));
        k.sets.push(key_in(&format!("set{g}:"), s));
    }
    k
}

/// The clock every op is stamped with: microseconds since the run started.
#[derive(Clone, Copy)]
pub struct Clock(pub Instant);

impl Clock {
    pub fn now_us(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
}

struct Client {
    id: usize,
    cc: ClusterClient,
    opts: WorkloadOptions,
    clock: Clock,
}

impl Client {
    /// Runs one command and stamps its op; `write` decides how errors and lost replies count.
    fn run(&mut self, kind: Kind, key: &str, value: Option<String>, args: &[&str]) -> Op {
        let invoke_us = self.clock.now_us();
        let routed = self.cc.request(key.as_bytes(), args);
        let write = kind.is_write();
        let (mut outcome, node, mut error, reply) = match routed {
            Routed::Reply {
                reply: Reply::Error(e),
                node,
            } => {
                let o = if refused(&e) || !write {
                    Outcome::Fail
                } else {
                    Outcome::Unknown
                };
                (o, Some(node), Some(e), None)
            }
            Routed::Reply { reply, node } => (Outcome::Ok, Some(node), None, Some(reply)),
            Routed::Unknown { node, why } => {
                let o = if write {
                    Outcome::Unknown
                } else {
                    Outcome::Fail
                };
                (o, Some(node), Some(why), None)
            }
            Routed::Refused { why } => (Outcome::Fail, None, Some(why), None),
        };
        if write
            && outcome == Outcome::Ok
            && self.opts.target == Target::Redis
            && self.opts.strategy == Strategy::Sync
        {
            // redis-server's nearest thing to a sync write: the write, then WAIT on the same
            // connection. Applied but not confirmed is an unknown outcome, as in shoal.
            let addr = node.clone().unwrap_or_default();
            let ms = self.opts.ack_timeout_ms.to_string();
            match self.cc.on_node(&addr, &["WAIT", "1", &ms]) {
                Ok(Reply::Int(n)) if n >= 1 => {}
                Ok(other) => {
                    outcome = Outcome::Unknown;
                    error = Some(format!("WAIT: {other:?}"));
                }
                Err(e) => {
                    outcome = Outcome::Unknown;
                    error = Some(format!("WAIT: {e}"));
                }
            }
        }
        let value = match (kind, &reply) {
            (Kind::Read, Some(Reply::Bulk(b))) => {
                b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned())
            }
            (Kind::Incr, Some(Reply::Int(n))) => Some(n.to_string()),
            _ => value,
        };
        Op {
            client: self.id,
            kind,
            key: key.to_string(),
            value,
            invoke_us,
            complete_us: self.clock.now_us(),
            outcome,
            node,
            error,
        }
    }

    fn step(&mut self, rng: &mut Rng, keys: &Keys, n: u64) -> Op {
        let unique = format!("c{}-{n}", self.id);
        match rng.below(100) {
            0..=29 => {
                let key = format!("u:{}:{n}", self.id);
                self.run(
                    Kind::Unique,
                    &key,
                    Some(unique.clone()),
                    &["SET", &key, &unique],
                )
            }
            30..=49 => {
                let key = rng.pick(&keys.registers).clone();
                self.run(
                    Kind::Write,
                    &key,
                    Some(unique.clone()),
                    &["SET", &key, &unique],
                )
            }
            50..=69 => {
                let key = rng.pick(&keys.registers).clone();
                self.run(Kind::Read, &key, None, &["GET", &key])
            }
            70..=84 => {
                let key = rng.pick(&keys.counters).clone();
                self.run(Kind::Incr, &key, None, &["INCR", &key])
            }
            _ => {
                let key = rng.pick(&keys.sets).clone();
                self.run(
                    Kind::Sadd,
                    &key,
                    Some(unique.clone()),
                    &["SADD", &key, &unique],
                )
            }
        }
    }
}

/// Starts `opts.clients` threads that issue ops until `stop` is set; each returns its ops.
pub fn spawn_clients(
    opts: &WorkloadOptions,
    seeds: &[String],
    keys: &Keys,
    clock: Clock,
    rng: &mut Rng,
    stop: Arc<AtomicBool>,
) -> Vec<JoinHandle<Vec<Op>>> {
    (0..opts.clients)
        .map(|id| {
            let mut rng = rng.fork(id as u64);
            let mut cc = ClusterClient::new(seeds.to_vec(), opts.request_timeout, rng.fork(1000));
            cc.deadline = opts.request_timeout * 3;
            let mut client = Client {
                id,
                cc,
                opts: opts.clone(),
                clock,
            };
            let (keys, stop) = (keys.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut ops = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    ops.push(client.step(&mut rng, &keys, n));
                    n += 1;
                    let (lo, hi) = client.opts.pace_ms;
                    std::thread::sleep(Duration::from_millis(rng.range(lo, hi)));
                }
                ops
            })
        })
        .collect()
}

/// Reads back every key the clients wrote. Unique keys are read one by one (a few thousand);
/// a key that cannot be read is listed as unreadable rather than guessed.
pub fn final_reads(
    seeds: &[String],
    keys: &Keys,
    ops: &[Op],
    timeout: Duration,
    clock: Clock,
    rng: &mut Rng,
) -> (FinalState, Vec<Op>) {
    let mut cc = ClusterClient::new(seeds.to_vec(), timeout, rng.fork(7777));
    let mut fin = FinalState::default();
    let mut reads = Vec::new();
    let mut read = |cc: &mut ClusterClient, key: &str, args: &[&str]| -> Option<Reply> {
        for _ in 0..FINAL_READ_ATTEMPTS {
            let invoke_us = clock.now_us();
            if let Routed::Reply { reply, node } = cc.request(key.as_bytes(), args)
                && reply.error().is_none()
            {
                reads.push(Op {
                    client: FINAL_CLIENT,
                    kind: Kind::Read,
                    key: key.to_string(),
                    value: reply
                        .as_text()
                        .or_else(|| reply.as_int().map(|i| i.to_string())),
                    invoke_us,
                    complete_us: clock.now_us(),
                    outcome: Outcome::Ok,
                    node: Some(node),
                    error: None,
                });
                return Some(reply);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    };
    for key in &keys.registers {
        match read(&mut cc, key, &["GET", key]) {
            Some(r) => {
                fin.registers.insert(key.clone(), r.as_text());
            }
            None => fin.unreadable.push(key.clone()),
        }
    }
    for key in &keys.counters {
        match read(&mut cc, key, &["GET", key]) {
            Some(r) => {
                let v = r.as_text().and_then(|t| t.parse().ok());
                fin.counters.insert(key.clone(), v);
            }
            None => fin.unreadable.push(key.clone()),
        }
    }
    for key in &keys.sets {
        match read(&mut cc, key, &["SMEMBERS", key]) {
            Some(r) => {
                let members = r
                    .as_array()
                    .unwrap_or(&[])
                    .iter()
                    .filter_map(Reply::as_text)
                    .collect();
                fin.sets.insert(key.clone(), members);
            }
            None => fin.unreadable.push(key.clone()),
        }
    }
    let mut uniques: Vec<&str> = ops
        .iter()
        .filter(|o| o.kind == Kind::Unique && o.outcome != Outcome::Fail)
        .map(|o| o.key.as_str())
        .collect();
    uniques.sort_unstable();
    uniques.dedup();
    for key in uniques {
        match read(&mut cc, key, &["GET", key]) {
            Some(r) => {
                fin.uniques.insert(key.to_string(), r.as_text());
            }
            None => fin.unreadable.push(key.to_string()),
        }
    }
    (fin, reads)
}
