//! Cluster mode, for `bench/reshard`: `cluster-fill` loads a key space into a cluster, and
//! `cluster-load` runs closed-loop clients against it while slots move, recording what they see.
//!
//! The key space is built so that a chosen slot range holds a chosen number of keys: every key is
//! `{TAG}:r:ID` (in the range) or `{TAG}:e:ID` (elsewhere), where TAG is a hash tag found for each
//! slot at start-up, and key `ID` of a family sits in the `ID % width`-th slot of the range, or in
//! the `ID % (16384 - width)`-th slot outside it (scattered by a multiplier, so that a few keys
//! still spread over every slot). Keys `ID` and `ID + stride` of a family share a
//! slot, which is how MSET finds three keys of one slot. Values are `workload::value_for(ID)`
//! (64 bytes), so every GET can be checked.
//!
//! Each load client reads the slot map with `CLUSTER SLOTS`, keeps one connection per node, and
//! has one request in flight. It follows redirects as cluster clients do: `-MOVED` updates that
//! slot's owner and retries, `-ASK` sends `ASKING` and the command to the named node once, without
//! updating the map. Anything else the client has to handle is a *client-visible error*, counted
//! by kind (the first word of the reply): `TRYAGAIN` (retried after a short sleep, still counted),
//! `CLUSTERDOWN`, any other error reply, `IO` (a broken or timed-out connection), `REDIRECTS`
//! (more than [`REDIRECTS_MAX`] redirects in a row, without a TRYAGAIN between them), `MISSING`
//! (a loaded key read as absent) and `WRONGVALUE` (a value that is not the one written).
//!
//! The first few failed requests of each kind, and the slowest few of those over `--slow-ms`, are
//! kept with every reply they got (node, time, text), so a report can say what exactly a client
//! saw, and from which node.
//!
//! Latency is measured per request, from its first send to its final reply (redirects and retries
//! included), into HDR histograms per time window (`--report-ms`) and per *phase*. Phases are
//! named by the harness in a file it rewrites (`warmup`, `steady`, `move`, ... and `stop`, which
//! ends the run), so the numbers for "steady state" and "during the move" come from the same
//! clients without restarting them.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::client::Conn;
use crate::resp::{self, Reply};
use crate::workload::value_for;
use crate::zipf::WyRand;

pub const SLOTS: usize = 16384;
/// Redirects (`MOVED` or `ASK`) followed for one attempt of a request before it counts as failed.
pub const REDIRECTS_MAX: usize = 5;
/// `TRYAGAIN` replies retried for one request before it counts as failed.
pub const TRYAGAIN_RETRIES_MAX: usize = 20;
/// Distinct phase names; later ones are ignored (the harness uses five).
pub const PHASES_MAX: usize = 16;
/// Nodes a client may learn of from the map and redirects.
pub const NODES_MAX: usize = 64;
/// Failed requests described in the report, per error kind.
pub const SAMPLES_PER_KIND: usize = 8;
/// How often the phase file is read.
const PHASE_POLL: Duration = Duration::from_millis(10);
/// Latencies above a minute are clamped (a request is bounded well below that anyway).
const LATENCY_MAX_US: u64 = 60_000_000;
/// Integers tried as hash tags before giving up on covering every slot (about 110,000 suffice).
const TAG_CANDIDATES_MAX: u32 = 10_000_000;

/// CRC16/XMODEM, the cluster's key hash.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    InRange = 0,
    Elsewhere = 1,
}

/// Which key lives in which slot; see the module header.
pub struct KeySpace {
    lo: u16,
    width: u64,
    /// Keys loaded by `cluster-fill`, per family.
    pub loaded: [u64; 2],
    /// Further ids, per family, that SET and MSET of the load may create.
    pub added: [u64; 2],
    /// Per family, the multiplier that scatters ids over its slots.
    scatter: [u64; 2],
    /// One hash tag per slot.
    tags: Vec<String>,
}

impl KeySpace {
    pub fn new(
        lo: u16,
        hi: u16,
        in_range: u64,
        elsewhere: u64,
        new_fraction: f64,
    ) -> Result<Self, String> {
        if lo > hi || usize::from(hi) >= SLOTS || usize::from(hi - lo) + 1 >= SLOTS {
            return Err(format!(
                "slot range {lo}-{hi} must lie within 0-16383 and leave slots outside it"
            ));
        }
        if !(0.0..=1.0).contains(&new_fraction) {
            return Err("--new-fraction must be within 0..=1".into());
        }
        let added = |n: u64| (n as f64 * new_fraction).round() as u64;
        let width = u64::from(hi - lo) + 1;
        Ok(Self {
            lo,
            width,
            scatter: [scatter(width), scatter(SLOTS as u64 - width)],
            loaded: [in_range, elsewhere],
            added: [added(in_range), added(elsewhere)],
            tags: slot_tags()?,
        })
    }

    /// Ids the load draws from: the loaded ones and those it may add.
    pub fn ids(&self, f: Family) -> u64 {
        self.loaded[f as usize] + self.added[f as usize]
    }

    /// Ids `id` and `id + stride` of a family share a slot.
    pub fn stride(&self, f: Family) -> u64 {
        match f {
            Family::InRange => self.width,
            Family::Elsewhere => SLOTS as u64 - self.width,
        }
    }

    pub fn slot(&self, f: Family, id: u64) -> u16 {
        // Scattered (multiplied by a number prime to the stride), so that a few keys still spread
        // over the whole family's slots rather than filling its first ones.
        let m = self.stride(f);
        let s = (id % m) * self.scatter[f as usize] % m;
        match f {
            Family::InRange => self.lo + s as u16,
            Family::Elsewhere if s < u64::from(self.lo) => s as u16,
            Family::Elsewhere => (s + self.width) as u16,
        }
    }

    /// Writes the key's name into `out`, replacing its contents.
    pub fn key(&self, f: Family, id: u64, out: &mut Vec<u8>) {
        let letter = match f {
            Family::InRange => 'r',
            Family::Elsewhere => 'e',
        };
        out.clear();
        let tag = &self.tags[usize::from(self.slot(f, id))];
        out.extend_from_slice(format!("{{{tag}}}:{letter}:{id:012}").as_bytes());
    }
}

/// A multiplier prime to `m` near `m` times the golden ratio's fraction, so consecutive ids land
/// far apart.
fn scatter(m: u64) -> u64 {
    let gcd = |mut a: u64, mut b: u64| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    // Ends by m + 1 at the latest, which is prime to m.
    let mut k = (m as f64 * 0.618_034) as u64 | 1;
    while gcd(k, m) != 1 {
        k += 1;
    }
    k
}

/// For each slot, the smallest integer whose decimal text hashes to it.
fn slot_tags() -> Result<Vec<String>, String> {
    let mut tags = vec![String::new(); SLOTS];
    let mut missing = SLOTS;
    for j in 0..TAG_CANDIDATES_MAX {
        let text = j.to_string();
        let slot = usize::from(crc16(text.as_bytes())) % SLOTS;
        if tags[slot].is_empty() {
            tags[slot] = text;
            missing -= 1;
            if missing == 0 {
                return Ok(tags);
            }
        }
    }
    Err(format!("no hash tag found for {missing} slots"))
}

/// Slot owners as one client knows them: node addresses, and each slot's index into them.
#[derive(Clone, Debug)]
pub struct Router {
    nodes: Vec<String>,
    owner: Vec<Option<u8>>,
    /// Host used when a node is announced without one (`:7001`).
    default_host: String,
}

impl Router {
    pub fn owner(&self, slot: u16) -> Option<usize> {
        self.owner[usize::from(slot)].map(usize::from)
    }

    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The index of `addr`, added if new; `None` past [`NODES_MAX`].
    fn node(&mut self, addr: &str) -> Option<usize> {
        let addr = if addr.starts_with(':') {
            format!("{}{addr}", self.default_host)
        } else {
            addr.to_string()
        };
        if let Some(i) = self.nodes.iter().position(|n| *n == addr) {
            return Some(i);
        }
        if self.nodes.len() >= NODES_MAX {
            return None;
        }
        self.nodes.push(addr);
        Some(self.nodes.len() - 1)
    }

    /// Reads `CLUSTER SLOTS` from the first seed that answers.
    pub async fn read(seeds: &[String], io_timeout: Duration) -> io::Result<Self> {
        let mut last = io::Error::other("no seed node given");
        for seed in seeds {
            match Self::read_one(seed, io_timeout).await {
                Ok(r) => return Ok(r),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn read_one(seed: &str, io_timeout: Duration) -> io::Result<Self> {
        let mut conn = Conn::connect(seed, io_timeout).await?;
        conn.queue(&[b"CLUSTER", b"SLOTS"]);
        conn.flush().await?;
        let ranges = conn
            .reply_with(slot_ranges)
            .await?
            .map_err(io::Error::other)?;
        let default_host = seed.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h);
        let mut router = Router {
            nodes: Vec::new(),
            owner: vec![None; SLOTS],
            default_host: default_host.to_string(),
        };
        for (lo, hi, addr) in ranges {
            let index = router
                .node(&addr)
                .ok_or_else(|| io::Error::other("too many nodes"))?;
            for s in lo..=hi {
                router.owner[usize::from(s)] = Some(index as u8);
            }
        }
        Ok(router)
    }
}

/// `CLUSTER SLOTS` as (first, last, primary's host:port).
fn slot_ranges(reply: &Reply<'_>) -> Result<Vec<(u16, u16, String)>, String> {
    let bad = || format!("unexpected CLUSTER SLOTS reply: {reply:?}");
    let Reply::Array(Some(entries)) = reply else {
        return Err(bad());
    };
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let Reply::Array(Some(fields)) = e else {
            return Err(bad());
        };
        let (Some(Reply::Integer(lo)), Some(Reply::Integer(hi)), Some(Reply::Array(Some(primary)))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            return Err(bad());
        };
        let (Some(Reply::Bulk(Some(host))), Some(Reply::Integer(port))) =
            (primary.first(), primary.get(1))
        else {
            return Err(bad());
        };
        let slot = |v: i64| u16::try_from(v).ok().filter(|s| usize::from(*s) < SLOTS);
        let (Some(lo), Some(hi)) = (slot(*lo), slot(*hi)) else {
            return Err(bad());
        };
        let host = String::from_utf8_lossy(host);
        out.push((lo, hi, format!("{host}:{port}")));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// cluster-fill

pub struct FillConfig {
    pub seeds: Vec<String>,
    pub space: Arc<KeySpace>,
    pub connections_per_node: usize,
    pub pipeline: usize,
    pub io_timeout: Duration,
    pub max_duration: Duration,
}

pub struct FillReport {
    pub keys: u64,
    pub secs: f64,
    /// Keys sent to each node, by address.
    pub per_node: Vec<(String, u64)>,
}

/// SETs every loaded key on its slot's owner, pipelined, over a few connections per node. Any
/// error reply fails the fill: the cluster must be stable while it is loaded.
pub async fn fill(cfg: FillConfig) -> io::Result<FillReport> {
    assert!(cfg.connections_per_node >= 1 && cfg.pipeline >= 1);
    let router = Arc::new(Router::read(&cfg.seeds, cfg.io_timeout).await?);
    for s in 0..SLOTS as u16 {
        if router.owner(s).is_none() {
            return Err(io::Error::other(format!("slot {s} has no owner")));
        }
    }
    let start = Instant::now();
    let deadline = start + cfg.max_duration;
    let mut tasks = Vec::new();
    for node in 0..router.nodes().len() {
        for part in 0..cfg.connections_per_node {
            let (router, space) = (router.clone(), cfg.space.clone());
            let (parts, pipeline, io_timeout) = (
                cfg.connections_per_node as u64,
                cfg.pipeline,
                cfg.io_timeout,
            );
            tasks.push(tokio::spawn(async move {
                let mut conn = Conn::connect(&router.nodes()[node], io_timeout).await?;
                let (mut key, mut queued, mut sent) = (Vec::with_capacity(40), 0usize, 0u64);
                for f in [Family::InRange, Family::Elsewhere] {
                    for id in (part as u64..space.loaded[f as usize]).step_by(parts as usize) {
                        if router.owner(space.slot(f, id)) != Some(node) {
                            continue;
                        }
                        space.key(f, id, &mut key);
                        conn.queue(&[b"SET", &key, &value_for(id)]);
                        queued += 1;
                        if queued == pipeline {
                            drain(&mut conn, queued).await?;
                            sent += queued as u64;
                            queued = 0;
                            if Instant::now() >= deadline {
                                return Err(io::Error::other("fill: time limit reached"));
                            }
                        }
                    }
                }
                drain(&mut conn, queued).await?;
                io::Result::Ok((node, sent + queued as u64))
            }));
        }
    }
    let mut per_node = vec![0u64; router.nodes().len()];
    for t in tasks {
        let (node, sent) = t.await.map_err(io::Error::other)??;
        per_node[node] += sent;
    }
    Ok(FillReport {
        keys: per_node.iter().sum(),
        secs: start.elapsed().as_secs_f64(),
        per_node: router.nodes().iter().cloned().zip(per_node).collect(),
    })
}

async fn drain(conn: &mut Conn, replies: usize) -> io::Result<()> {
    conn.flush().await?;
    for _ in 0..replies {
        if let crate::client::Outcome::Error(e) = conn.reply().await? {
            return Err(io::Error::other(format!("fill: error reply: {e}")));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// cluster-load

#[derive(Clone)]
pub struct LoadConfig {
    pub seeds: Vec<String>,
    pub space: Arc<KeySpace>,
    pub clients: usize,
    /// Fraction of GETs among the single-key requests; the rest are SETs.
    pub read_ratio: f64,
    /// Fraction of all requests that are MSETs of three keys of one slot.
    pub mset_ratio: f64,
    /// The run's deadline, if the phase file never says `stop`.
    pub duration: Duration,
    pub report: Duration,
    pub phase_file: Option<PathBuf>,
    pub tryagain_sleep: Duration,
    /// Requests taking this long or longer are described in the report (not counted as errors).
    pub slow: Duration,
    pub io_timeout: Duration,
    pub seed: u64,
}

/// What a set of requests saw.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    pub requests: u64,
    /// Requests that ended without success (after their retries).
    pub failed: u64,
    pub moved: u64,
    pub ask: u64,
    /// Client-visible errors by kind (a request retried after `TRYAGAIN` may count several).
    pub errors: BTreeMap<String, u64>,
}

impl Counts {
    fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_string()).or_default() += 1;
    }

    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    fn add(&mut self, o: &Counts) {
        self.requests += o.requests;
        self.failed += o.failed;
        self.moved += o.moved;
        self.ask += o.ask;
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
    }
}

pub struct Stats {
    pub counts: Counts,
    /// Microseconds per request.
    pub latency_us: Histogram<u64>,
}

impl Stats {
    fn new(significant_digits: u8) -> Self {
        Self {
            counts: Counts::default(),
            latency_us: Histogram::new_with_bounds(1, LATENCY_MAX_US, significant_digits)
                .expect("static histogram bounds are valid"),
        }
    }

    fn add(&mut self, o: &Stats) {
        self.counts.add(&o.counts);
        // Cannot fail: both histograms share the clamped range.
        let _ = self.latency_us.add(&o.latency_us);
    }
}

pub struct Phase {
    pub name: String,
    /// When the phase was first seen, from the start of the run.
    pub start_ms: u64,
    /// Time the phase was current (first seen to the next phase, or the end).
    pub secs: f64,
    pub stats: Stats,
}

pub struct Window {
    /// Start of the window from the start of the run.
    pub t_ms: u64,
    /// Names of the phases its requests completed in, joined by `+`.
    pub phases: String,
    pub stats: Stats,
}

pub struct LoadReport {
    pub secs: f64,
    pub total: Counts,
    pub phases: Vec<Phase>,
    pub windows: Vec<Window>,
    /// Ids past the loaded ones whose write was acknowledged: the keys the load added.
    pub keys_added: u64,
    /// Writes of not-yet-loaded ids that ended in an I/O error: they may or may not have landed.
    pub writes_unknown: u64,
    /// Whether the phase file said `stop` (rather than the deadline ending the run).
    pub stopped: bool,
    /// The first failed requests of each error kind: kind, start (ms into the run), the replies.
    pub samples: Vec<(String, u64, String)>,
}

/// A failed or slow request: start (ms into the run), latency (µs), description.
type Sample = (u64, u64, String);

/// State the clients and the phase watcher share.
struct Shared {
    start: Instant,
    stop: AtomicBool,
    phase: AtomicUsize,
    /// Name and first-seen time of each phase.
    phase_names: Mutex<Vec<(String, Instant)>>,
    phases: Mutex<Vec<Stats>>,
    windows: Mutex<Vec<(Stats, u32)>>,
    windows_max: usize,
    report: Duration,
    /// One bit per id that may be added, per family: set once a write of it is acknowledged.
    added: [Vec<AtomicU64>; 2],
    writes_unknown: AtomicU64,
    /// Failed and slow requests of each kind.
    samples: Mutex<BTreeMap<String, Vec<Sample>>>,
}

impl Shared {
    fn merge(&self, window: usize, phase: usize, local: &Stats) {
        {
            let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            let w = window.min(self.windows_max - 1);
            while windows.len() <= w {
                windows.push((Stats::new(2), 0));
            }
            windows[w].0.add(local);
            windows[w].1 |= 1 << phase;
        }
        let mut phases = self.phases.lock().unwrap_or_else(|p| p.into_inner());
        while phases.len() <= phase {
            phases.push(Stats::new(3));
        }
        phases[phase].add(local);
    }

    /// Keeps the first few failed requests of each kind, and the slowest few slow ones (the first
    /// slow ones would all come from the first stall).
    fn sample(&self, kind: String, t_ms: u64, latency_us: u64, text: String) {
        let slow = kind == "SLOW";
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let kept = samples.entry(kind).or_default();
        if kept.len() < SAMPLES_PER_KIND {
            kept.push((t_ms, latency_us, text));
        } else if slow
            && let Some(fastest) = kept.iter_mut().min_by_key(|k| k.1)
            && fastest.1 < latency_us
        {
            *fastest = (t_ms, latency_us, text);
        }
    }

    fn mark_added(&self, space: &KeySpace, f: Family, id: u64) {
        if let Some(bit) = id.checked_sub(space.loaded[f as usize]) {
            self.added[f as usize][(bit / 64) as usize].fetch_or(1 << (bit % 64), Relaxed);
        }
    }
}

/// Reads the phase file until it says `stop` or the run's deadline passes.
async fn watch_phases(shared: Arc<Shared>, file: Option<PathBuf>, deadline: Instant) {
    loop {
        if Instant::now() >= deadline || shared.stop.load(Relaxed) {
            return;
        }
        let text = file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .unwrap_or_default();
        let name = text.trim();
        if name == "stop" {
            shared.stop.store(true, Relaxed);
            return;
        }
        if !name.is_empty() {
            let mut names = shared.phase_names.lock().unwrap_or_else(|p| p.into_inner());
            let index = match names.iter().position(|(n, _)| n == name) {
                Some(i) => Some(i),
                None if names.len() < PHASES_MAX => {
                    names.push((name.to_string(), Instant::now()));
                    Some(names.len() - 1)
                }
                None => None,
            };
            if let Some(i) = index {
                shared.phase.store(i, Relaxed);
            }
        }
        tokio::time::sleep(PHASE_POLL).await;
    }
}

pub async fn load(cfg: LoadConfig) -> io::Result<LoadReport> {
    assert!(cfg.clients >= 1 && !cfg.report.is_zero());
    let bits = |n: u64| (0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let shared = Arc::new(Shared {
        start,
        stop: AtomicBool::new(false),
        phase: AtomicUsize::new(0),
        phase_names: Mutex::new(vec![("start".to_string(), start)]),
        phases: Mutex::new(Vec::new()),
        windows: Mutex::new(Vec::new()),
        windows_max: (cfg.duration.as_millis() / cfg.report.as_millis().max(1)) as usize + 2,
        report: cfg.report,
        added: [bits(cfg.space.added[0]), bits(cfg.space.added[1])],
        writes_unknown: AtomicU64::new(0),
        samples: Mutex::new(BTreeMap::new()),
    });
    let watcher = tokio::spawn(watch_phases(
        shared.clone(),
        cfg.phase_file.clone(),
        deadline,
    ));
    let mut tasks = Vec::with_capacity(cfg.clients);
    for index in 0..cfg.clients {
        let (cfg, shared) = (cfg.clone(), shared.clone());
        tasks.push(tokio::spawn(async move {
            let router = Router::read(&cfg.seeds, cfg.io_timeout).await?;
            let mut client = Client {
                conns: (0..NODES_MAX).map(|_| None).collect(),
                router,
                io_timeout: cfg.io_timeout,
            };
            let seed = crate::workload::connection_seed(cfg.seed, index);
            run_client(&cfg, &shared, &mut client, WyRand::new(seed), deadline).await;
            io::Result::Ok(())
        }));
    }
    let mut failure = None;
    for t in tasks {
        if let Err(e) = t.await.map_err(io::Error::other).and_then(|r| r) {
            failure.get_or_insert(e);
        }
    }
    let stopped = shared.stop.load(Relaxed);
    shared.stop.store(true, Relaxed);
    let _ = watcher.await;
    if let Some(e) = failure {
        return Err(e);
    }
    let end = Instant::now();
    let shared = Arc::into_inner(shared).expect("every task has ended");
    let names = shared
        .phase_names
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    let mut stats = shared
        .phases
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    stats.resize_with(names.len(), || Stats::new(3));
    let mut total = Counts::default();
    let phases = stats
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            total.add(&s.counts);
            let until = names.get(i + 1).map_or(end, |n| n.1);
            Phase {
                name: names[i].0.clone(),
                start_ms: names[i].1.duration_since(start).as_millis() as u64,
                secs: until.saturating_duration_since(names[i].1).as_secs_f64(),
                stats: s,
            }
        })
        .collect();
    let windows = shared
        .windows
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .enumerate()
        .map(|(i, (stats, mask))| Window {
            t_ms: i as u64 * shared.report.as_millis() as u64,
            phases: (0..names.len())
                .filter(|p| mask & (1 << p) != 0)
                .map(|p| names[p].0.as_str())
                .collect::<Vec<_>>()
                .join("+"),
            stats,
        })
        .collect();
    let keys_added = shared
        .added
        .iter()
        .flatten()
        .map(|w| u64::from(w.load(Relaxed).count_ones()))
        .sum();
    let samples = shared
        .samples
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flat_map(|(kind, mut kept)| {
            kept.sort_by_key(|k| k.0);
            kept.into_iter()
                .map(move |(t, _, text)| (kind.clone(), t, text))
        })
        .collect();
    Ok(LoadReport {
        samples,
        secs: end.duration_since(start).as_secs_f64(),
        total,
        phases,
        windows,
        keys_added,
        writes_unknown: shared.writes_unknown.load(Relaxed),
        stopped,
    })
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Get(Family, u64),
    Set(Family, u64),
    Mset(Family, [u64; 3]),
}

impl Op {
    fn draw(cfg: &LoadConfig, rng: &mut WyRand) -> Op {
        let space = &cfg.space;
        let (r, e) = (space.ids(Family::InRange), space.ids(Family::Elsewhere));
        // Uniform over all keys: a family is drawn in proportion to its size.
        let f = if rng.next_u64() % (r + e).max(1) < r {
            Family::InRange
        } else {
            Family::Elsewhere
        };
        let (ids, stride) = (space.ids(f).max(1), space.stride(f));
        if rng.next_f64() < cfg.mset_ratio && ids > 2 * stride {
            let id = rng.next_u64() % (ids - 2 * stride);
            return Op::Mset(f, [id, id + stride, id + 2 * stride]);
        }
        let id = rng.next_u64() % ids;
        if rng.next_f64() < cfg.read_ratio {
            Op::Get(f, id)
        } else {
            Op::Set(f, id)
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Op::Get(..) => "GET",
            Op::Set(..) => "SET",
            Op::Mset(..) => "MSET",
        }
    }

    fn slot(&self, space: &KeySpace) -> u16 {
        match *self {
            Op::Get(f, id) | Op::Set(f, id) => space.slot(f, id),
            Op::Mset(f, ids) => space.slot(f, ids[0]),
        }
    }

    fn encode(&self, space: &KeySpace, key: &mut Vec<u8>, out: &mut Vec<u8>) {
        out.clear();
        match *self {
            Op::Get(f, id) => {
                space.key(f, id, key);
                resp::encode_command(out, &[b"GET", key]);
            }
            Op::Set(f, id) => {
                space.key(f, id, key);
                resp::encode_command(out, &[b"SET", key, &value_for(id)]);
            }
            Op::Mset(f, ids) => {
                let mut keys = [Vec::new(), Vec::new(), Vec::new()];
                for (k, id) in keys.iter_mut().zip(ids) {
                    space.key(f, id, k);
                }
                let values = ids.map(value_for);
                resp::encode_command(
                    out,
                    &[
                        b"MSET", &keys[0], &values[0], &keys[1], &values[1], &keys[2], &values[2],
                    ],
                );
            }
        }
    }
}

/// A reply as the load needs it.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Done,
    Nil,
    WrongValue,
    Error(String),
}

struct Client {
    router: Router,
    conns: Vec<Option<Conn>>,
    io_timeout: Duration,
}

impl Client {
    /// Sends `cmd` (after `ASKING` if `asking`) to node `node` and reads its reply.
    async fn call(
        &mut self,
        node: usize,
        asking: bool,
        cmd: &[u8],
        expect: Option<[u8; 64]>,
    ) -> io::Result<Got> {
        if self.conns[node].is_none() {
            self.conns[node] =
                Some(Conn::connect(&self.router.nodes[node], self.io_timeout).await?);
        }
        let conn = self.conns[node].as_mut().expect("connected above");
        if asking {
            conn.queue(&[b"ASKING"]);
        }
        conn.write_buf().extend_from_slice(cmd);
        conn.flush().await?;
        let asked = if asking {
            Some(conn.reply_with(|r| got(r, None)).await?)
        } else {
            None
        };
        let reply = conn.reply_with(|r| got(r, expect.as_ref())).await?;
        Ok(match asked {
            Some(Got::Error(e)) => Got::Error(e),
            _ => reply,
        })
    }

    /// Runs one request to its end: success, or a client-visible error.
    async fn execute(
        &mut self,
        cfg: &LoadConfig,
        op: Op,
        cmd: &[u8],
        counts: &mut Counts,
    ) -> Ended {
        let slot = op.slot(&cfg.space);
        let expect = match op {
            Op::Get(_, id) => Some(value_for(id)),
            _ => None,
        };
        let begun = Instant::now();
        // Every reply but the last, for the description of a failed request; bounded by the
        // redirect and retry limits.
        let mut trail: Vec<(usize, u64, String)> = Vec::new();
        let (mut ask, mut redirects, mut retries) = (None, 0, 0);
        loop {
            let Some(node) = ask.or_else(|| self.router.owner(slot)) else {
                counts.error("NOSLOT");
                return self.failed("NOSLOT", false, &trail);
            };
            let at_us = begun.elapsed().as_micros() as u64;
            let reply = match self.call(node, ask.is_some(), cmd, expect).await {
                Ok(r) => r,
                Err(e) => {
                    counts.error("IO");
                    self.conns[node] = None;
                    trail.push((node, at_us, e.to_string()));
                    return self.failed("IO", true, &trail);
                }
            };
            let message = match reply {
                Got::Done => return self.done(cfg, begun, node, at_us, trail),
                Got::Nil => {
                    if let Op::Get(f, id) = op
                        && id < cfg.space.loaded[f as usize]
                    {
                        counts.error("MISSING");
                        trail.push((node, at_us, "(nil)".into()));
                        return self.failed("MISSING", false, &trail);
                    }
                    return self.done(cfg, begun, node, at_us, trail);
                }
                Got::WrongValue => {
                    counts.error("WRONGVALUE");
                    trail.push((node, at_us, "(a value not written)".into()));
                    return self.failed("WRONGVALUE", false, &trail);
                }
                Got::Error(message) => message,
            };
            let mut words = message.split_ascii_whitespace();
            let kind = words.next().unwrap_or("ERR").to_string();
            let to = words.nth(1).and_then(|addr| self.router.node(addr));
            trail.push((node, at_us, message));
            match kind.as_str() {
                "MOVED" | "ASK" => {
                    let Some(to) = to else {
                        counts.error("BADREDIRECT");
                        return self.failed("BADREDIRECT", false, &trail);
                    };
                    if kind == "MOVED" {
                        counts.moved += 1;
                        self.router.owner[usize::from(slot)] = Some(to as u8);
                        ask = None;
                    } else {
                        counts.ask += 1;
                        ask = Some(to);
                    }
                    redirects += 1;
                    if redirects > REDIRECTS_MAX {
                        counts.error("REDIRECTS");
                        return self.failed("REDIRECTS", false, &trail);
                    }
                }
                "TRYAGAIN" => {
                    counts.error(&kind);
                    retries += 1;
                    if retries > TRYAGAIN_RETRIES_MAX {
                        return self.failed("TRYAGAIN", false, &trail);
                    }
                    // A retry starts over at the slot's owner, as cluster clients do, with its
                    // own redirect limit (a TRYAGAIN usually follows an ASK).
                    ask = None;
                    redirects = 0;
                    tokio::time::sleep(cfg.tryagain_sleep).await;
                }
                _ => {
                    counts.error(&kind);
                    return self.failed(&kind, false, &trail);
                }
            }
        }
    }

    /// A successful request; described (kind `SLOW`, not an error) if it took `cfg.slow` or more.
    fn done(
        &self,
        cfg: &LoadConfig,
        begun: Instant,
        node: usize,
        at_us: u64,
        mut trail: Vec<(usize, u64, String)>,
    ) -> Ended {
        let took = begun.elapsed();
        if took < cfg.slow {
            return Ended {
                ok: true,
                maybe_applied: false,
                sample: None,
            };
        }
        let waited = took.as_micros() as u64 - at_us;
        trail.push((node, at_us, format!("replied after {waited}us")));
        Ended {
            ok: true,
            maybe_applied: false,
            sample: Some(("SLOW".into(), self.describe(&trail))),
        }
    }

    /// A failed request.
    fn failed(&self, kind: &str, maybe_applied: bool, trail: &[(usize, u64, String)]) -> Ended {
        Ended {
            ok: false,
            maybe_applied,
            sample: Some((kind.to_string(), self.describe(trail))),
        }
    }

    /// The replies a request got: `+µs node: reply`, oldest first (µs from its first send).
    fn describe(&self, trail: &[(usize, u64, String)]) -> String {
        let steps: Vec<String> = trail
            .iter()
            .map(|(node, at_us, text)| format!("+{at_us}us {}: {text}", self.router.nodes[*node]))
            .collect();
        steps.join(" -> ")
    }
}

/// How a request ended.
struct Ended {
    ok: bool,
    /// It failed in a way that leaves unknown whether a write was applied (I/O error).
    maybe_applied: bool,
    /// Its error kind (or `SLOW`) and the replies it got, if it failed or was slow.
    sample: Option<(String, String)>,
}

fn got(reply: &Reply<'_>, expect: Option<&[u8; 64]>) -> Got {
    match reply {
        Reply::Error(m) => Got::Error(String::from_utf8_lossy(m).into_owned()),
        Reply::Bulk(None) => Got::Nil,
        Reply::Bulk(Some(v)) => match expect {
            Some(e) if v != e => Got::WrongValue,
            _ => Got::Done,
        },
        _ => Got::Done,
    }
}

async fn run_client(
    cfg: &LoadConfig,
    shared: &Shared,
    client: &mut Client,
    mut rng: WyRand,
    deadline: Instant,
) {
    let (mut key, mut cmd) = (Vec::with_capacity(40), Vec::with_capacity(512));
    let mut local = Stats::new(3);
    let mut at = (0usize, 0usize);
    let report_ms = shared.report.as_millis().max(1);
    // Bounded by time: each iteration is one request, itself bounded by its retries and the
    // I/O timeout of each of them.
    while !shared.stop.load(Relaxed) && Instant::now() < deadline {
        let op = Op::draw(cfg, &mut rng);
        op.encode(&cfg.space, &mut key, &mut cmd);
        let begun = Instant::now();
        let mut counts = Counts {
            requests: 1,
            ..Counts::default()
        };
        let ended = client.execute(cfg, op, &cmd, &mut counts).await;
        let (ok, unknown) = (ended.ok, ended.maybe_applied);
        let done = Instant::now();
        if let Some((kind, trail)) = ended.sample {
            let t_ms = begun.duration_since(shared.start).as_millis() as u64;
            shared.sample(
                kind,
                t_ms,
                done.duration_since(begun).as_micros() as u64,
                format!("{} slot {}: {trail}", op.name(), op.slot(&cfg.space)),
            );
        }
        let latency_us = done.duration_since(begun).as_micros() as u64;
        match op {
            Op::Set(f, id) if ok => shared.mark_added(&cfg.space, f, id),
            Op::Mset(f, ids) if ok => ids
                .iter()
                .for_each(|&id| shared.mark_added(&cfg.space, f, id)),
            Op::Set(f, id) if unknown && id >= cfg.space.loaded[f as usize] => {
                shared.writes_unknown.fetch_add(1, Relaxed);
            }
            Op::Mset(f, ids)
                if unknown && ids.iter().any(|&id| id >= cfg.space.loaded[f as usize]) =>
            {
                shared.writes_unknown.fetch_add(1, Relaxed);
            }
            _ => {}
        }
        if !ok {
            counts.failed = 1;
        }
        let now = (
            (done.duration_since(shared.start).as_millis() / report_ms) as usize,
            shared.phase.load(Relaxed),
        );
        if now != at {
            shared.merge(at.0, at.1, &local);
            local.counts = Counts::default();
            local.latency_us.reset();
            at = now;
        }
        local.counts.add(&counts);
        local
            .latency_us
            .saturating_record(latency_us.clamp(1, LATENCY_MAX_US));
    }
    shared.merge(at.0, at.1, &local);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slot of a key, with the hash-tag rule (the first non-empty `{...}`).
    fn key_slot(key: &[u8]) -> u16 {
        if let Some(open) = key.iter().position(|&b| b == b'{')
            && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
            && len > 0
        {
            return crc16(&key[open + 1..open + 1 + len]) % SLOTS as u16;
        }
        crc16(key) % SLOTS as u16
    }

    #[test]
    fn crc16_and_slots_match_the_cluster_spec() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
    }

    #[test]
    fn keys_land_in_their_slots_and_strides_share_a_slot() {
        let space = KeySpace::new(100, 199, 1000, 500, 0.1).unwrap();
        let mut key = Vec::new();
        for f in [Family::InRange, Family::Elsewhere] {
            for id in 0..space.ids(f) {
                space.key(f, id, &mut key);
                let slot = key_slot(&key);
                assert_eq!(slot, space.slot(f, id));
                assert_eq!(
                    (100..=199).contains(&slot),
                    f == Family::InRange,
                    "{}",
                    String::from_utf8_lossy(&key)
                );
                assert_eq!(space.slot(f, id + space.stride(f)), slot);
            }
        }
        assert_eq!(space.added, [100, 50]);
        // Every slot outside the range is used by the elsewhere family.
        let outside: std::collections::BTreeSet<u16> = (0..16384 - 100)
            .map(|id| space.slot(Family::Elsewhere, id))
            .collect();
        assert_eq!(outside.len(), 16384 - 100);
    }

    #[test]
    fn a_range_must_leave_slots_outside_it() {
        assert!(KeySpace::new(0, 16383, 1, 1, 0.0).is_err());
        assert!(KeySpace::new(5, 4, 1, 1, 0.0).is_err());
    }

    #[test]
    fn cluster_slots_reply_is_read() {
        let text = b"*2\r\n*3\r\n:0\r\n:5460\r\n*3\r\n$9\r\n127.0.0.1\r\n:7000\r\n$3\r\nabc\r\n\
                     *4\r\n:5461\r\n:16383\r\n*2\r\n$0\r\n\r\n:7001\r\n*2\r\n$1\r\nh\r\n:1\r\n";
        let (reply, _) = resp::parse_reply(text).unwrap().unwrap();
        let ranges = slot_ranges(&reply).unwrap();
        assert_eq!(
            ranges,
            vec![
                (0, 5460, "127.0.0.1:7000".to_string()),
                (5461, 16383, ":7001".to_string())
            ]
        );
        let mut router = Router {
            nodes: Vec::new(),
            owner: vec![None; SLOTS],
            default_host: "10.0.0.1".into(),
        };
        assert_eq!(router.node(":7001"), Some(0));
        assert_eq!(router.node("10.0.0.1:7001"), Some(0));
        assert_eq!(router.nodes(), ["10.0.0.1:7001"]);
    }
}
