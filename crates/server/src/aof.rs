//! The append-only effect log on disk (`appendonly yes`): loading it at start, the writer thread
//! that appends the replication stream to it and fsyncs it by `appendfsync`, and its compaction
//! (BGREWRITEAOF and the `auto-aof-rewrite-*` rules). The formats are
//! `shoal_replication::aof`; what commands and INFO see is `shoal_commands::aof::AofShared`.
//!
//! The log is a local consumer of this node's replication stream, like a replica whose
//! acknowledgement is the fsynced offset: the writer reads the backlog from the offset it wrote
//! up to (so the stream is encoded once, for replicas and the log alike) and appends it as
//! checksummed records. Under `appendfsync always` a connection holds its batch's replies until
//! the log is fsynced past its last write (group commit: one fsync serves every writer waiting).
//!
//! On disk, in `dir`/`appenddirname`: a manifest (`appendfilename`.manifest) naming one base
//! snapshot (the snapshot format, with the replication id and offset it starts at) and the
//! incremental logs after it, in order. Every start begins a new incremental log; compaction
//! has the writer start a new incremental log where it is (`Rotation`), writes a new base (a
//! snapshot taken on its own thread, shard by shard) claiming that log's start offset, then
//! switches the manifest atomically (temporary file, fsync, rename, fsync of the folder) to the
//! new base and the logs from the rotated one on, and deletes the old files, so the folder never
//! grows without bound.
//!
//! Crash safety: a torn or damaged tail of the last log is cut at the last good record, with a
//! WARN naming the file, the offset and the bytes cut; a log that does not end with the close
//! record of a clean shutdown may lack bytes this node streamed to replicas, so the node then
//! takes a fresh replication id and continues the old one only up to what it loaded (a replica
//! that is further gets a full copy, never a stream with a hole). An unreadable manifest, base or
//! log in the middle stops the start with a message saying how to start anyway.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use shoal_commands::ServerState;
use shoal_commands::aof::AofShared;
use shoal_commands::config::AppendFsync;
use shoal_replication::aof::{self as format, Manifest, Record};
use shoal_replication::{snapshot, stream};
use shoal_resp::{Decoded, RequestDecoder};

use crate::now_ms;

/// The most stream bytes one pass of the writer takes (one write of the file).
pub const RECORD_STREAM_BYTES_MAX: usize = 1 << 20;
/// The stream bytes the writer copies out of the backlog under one hold of its lock (and so the
/// most one record holds): the workers' appends wait for at most one such copy.
pub const WRITER_READ_SLICE_BYTES: usize = 16 * 1024;
/// The writer looks at the stream at least this often even when not woken.
pub const WRITER_IDLE_MS: u64 = 100;
/// Under `everysec` and `no`: the writer takes the stream this often (under `always` each
/// append wakes it).
pub const WRITER_BATCH_MS: u64 = 2;
/// ... and, when it found nothing, looks again after this long (the most a write waits before it
/// reaches the file under `everysec`).
pub const WRITER_IDLE_BATCH_MS: u64 = 10;
/// `everysec`: the interval between fsyncs.
pub const FSYNC_INTERVAL_MS: u64 = 1000;
/// At a clean shutdown, how long the writer waits for a compaction to mend a log that cannot
/// continue (see `Writer::mend_before_close`); within [`STOP_WAIT_MS`].
pub const STOP_MEND_MS: u64 = 8_000;
/// More incremental logs than this (one per start, one per promotion) start a compaction.
pub const INCR_FILES_MAX: usize = 8;
/// A writer that cannot continue the log (it fell out of the backlog, or the history changed
/// under it) asks for a compaction at most this often.
pub const REWRITE_RETRY_MS: u64 = 1000;
/// How long a compaction waits for the writer to start a new incremental log for it (see
/// `Rotation`) before it falls back to copying the stream since its snapshot out of the backlog.
pub const ROTATE_WAIT_MS: u64 = 2_000;
/// Records (of up to `RECORD_STREAM_BYTES_MAX`) the writer appends before it rotates.
pub const ROTATE_CATCH_UP_RECORDS_MAX: usize = 16;
/// WAITAOF looks at the logs' fsynced offsets this often.
pub const WAITAOF_POLL_MS: u64 = 10;
/// A write waiting for the log's fsync looks again at least this often.
pub const WAITER_RECHECK_MS: u64 = 100;
/// How long a shutdown waits for the writer's last append and fsync.
pub const STOP_WAIT_MS: u64 = 10_000;

/// Where the log's files are.
#[derive(Debug, Clone)]
struct Paths {
    dir: PathBuf,
    prefix: String,
}

impl Paths {
    fn of(srv: &ServerState) -> Paths {
        let cfg = srv.config();
        Paths {
            dir: Path::new(&cfg.dir).join(&cfg.appenddirname),
            prefix: cfg.appendfilename.clone(),
        }
    }
    fn manifest(&self) -> PathBuf {
        self.dir.join(format!("{}.manifest", self.prefix))
    }
    fn base_name(&self, seq: u64) -> String {
        format!("{}.{seq}.base.shoal", self.prefix)
    }
    fn incr_name(&self, seq: u64) -> String {
        format!("{}.{seq}.incr.aof", self.prefix)
    }
    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

pub(crate) fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces the manifest atomically (temporary file, fsync, rename, fsync of the folder).
fn write_manifest(paths: &Paths, m: &Manifest) -> std::io::Result<()> {
    let tmp = paths.dir.join(format!(
        "{}.manifest.tmp-{}",
        paths.prefix,
        std::process::id()
    ));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(m.encode().as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, paths.manifest())?;
    fsync_dir(&paths.dir)
}

/// Creates an incremental log holding only its header (`replid`, `start_offset`), fsynced.
fn create_incr(path: &Path, replid: &str, start_offset: u64) -> std::io::Result<File> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)?;
    f.write_all(&format::encode_header(&format::Header {
        replid: replid.to_string(),
        start_offset,
    }))?;
    f.sync_all()?;
    Ok(f)
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Publishes the sizes INFO shows.
fn publish_sizes(a: &AofShared, paths: &Paths, m: &Manifest) {
    let base = file_len(&paths.file(&m.base.0));
    let incrs: u64 = m.incrs.iter().map(|(n, _)| file_len(&paths.file(n))).sum();
    a.base_size.store(base, Relaxed);
    a.current_size.store(base + incrs, Relaxed);
}

/// Removes files of the log's folder that the manifest does not name (an earlier generation, a
/// temporary file of a crashed rewrite).
fn remove_unlisted(paths: &Paths, m: &Manifest) {
    let Ok(entries) = std::fs::read_dir(&paths.dir) else {
        return;
    };
    let manifest_name = format!("{}.manifest", paths.prefix);
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let listed =
            name == manifest_name || m.base.0 == name || m.incrs.iter().any(|(n, _)| *n == name);
        if !listed && name.starts_with(&paths.prefix) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

// ---- loading at start ----

/// How to start anyway, said with every refusal to start.
fn start_anyway(paths: &Paths) -> String {
    format!(
        "To start anyway, move the folder {} away (the node then starts from its snapshot file \
         if there is one, else empty), or start with --appendonly no.",
        paths.dir.display()
    )
}

/// With `appendonly yes`, at start: loads the base snapshot and replays the logs after it (or,
/// without a log yet, loads the snapshot file and makes the log's first generation from it),
/// then begins a new incremental log at the loaded offset for the writer.
pub fn load_at_startup(srv: &ServerState) -> Result<(), String> {
    let paths = Paths::of(srv);
    let manifest_path = paths.manifest();
    let text = match std::fs::read(&manifest_path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(format!(
                "the append-only log's manifest {} cannot be read: {e}. {}",
                manifest_path.display(),
                start_anyway(&paths)
            ));
        }
    };
    let mut manifest = match text {
        None => {
            // No log yet: the snapshot file (if any) is the data; it becomes the first base.
            crate::persist::load_at_startup(srv)?;
            std::fs::create_dir_all(&paths.dir)
                .map_err(|e| format!("creating {}: {e}", paths.dir.display()))?;
            let m = first_generation(srv, &paths).map_err(|e| {
                format!(
                    "creating the append-only log in {}: {e}",
                    paths.dir.display()
                )
            })?;
            tracing::info!(dir = %paths.dir.display(), "append-only log created");
            m
        }
        Some(text) => {
            let m = Manifest::parse(&text).map_err(|why| {
                format!(
                    "the append-only log's manifest {} is unreadable: {why}. {}",
                    manifest_path.display(),
                    start_anyway(&paths)
                )
            })?;
            replay(srv, &paths, &m)?;
            m
        }
    };
    // The writer appends to a new incremental log at the loaded offset, under the node's id now.
    let seq = manifest.incrs.last().map_or(manifest.base.1, |(_, s)| *s) + 1;
    let name = paths.incr_name(seq);
    let ids = srv.repl.ids();
    create_incr(&paths.file(&name), &ids.replid, srv.repl.offset())
        .map_err(|e| format!("creating {}: {e}", paths.file(&name).display()))?;
    manifest.incrs.push((name, seq));
    write_manifest(&paths, &manifest)
        .map_err(|e| format!("writing {}: {e}", manifest_path.display()))?;
    remove_unlisted(&paths, &manifest);
    let a = &srv.persist.aof;
    publish_sizes(a, &paths, &manifest);
    a.size_after_rewrite
        .store(a.current_size.load(Relaxed), Relaxed);
    let offset = srv.repl.offset();
    a.written_offset.store(offset, Relaxed);
    a.fsynced_offset.store(offset, Relaxed);
    srv.repl.aof_fsynced.store(offset, Relaxed);
    srv.repl.aof_on.store(true, Relaxed);
    a.enabled.store(true, Relaxed);
    // From now on every write's effect feeds the backlog, which the writer reads.
    srv.repl.start_recording_for_log(&srv.ks);
    Ok(())
}

/// The first generation of a log: a base snapshot of what the node holds now and an empty
/// incremental log after it (seq 1). The writer's own start then adds its log.
fn first_generation(srv: &ServerState, paths: &Paths) -> Result<Manifest, String> {
    let aux = crate::persist::aux_records(srv);
    let base = paths.base_name(1);
    write_snapshot_file(
        &srv.ks,
        &crate::persist::aux_refs(&aux),
        &paths.file(&base),
        None,
        || (srv.repl.ids().replid, srv.repl.offset()),
    )?;
    let m = Manifest {
        base: (base, 1),
        incrs: Vec::new(),
    };
    write_manifest(paths, &m).map_err(|e| format!("writing the manifest: {e}"))?;
    Ok(m)
}

/// Bytes a snapshot written to a file gathers before each write(2).
pub const SNAPSHOT_WRITE_BYTES: usize = 1 << 20;

/// Writes a snapshot of `ks` to `path` shard by shard as it is taken (never the whole snapshot
/// in memory: at most one shard's records and [`SNAPSHOT_WRITE_BYTES`]), then fsyncs it.
/// `replid_offset` is asked at each attempt's start (the header) and end (the end marker), as
/// `snapshot::write_all` does; a SWAPDB during an attempt starts the file again. Returns the
/// replication id and offset as the header holds them (the id in its 40 bytes).
pub(crate) fn write_snapshot_file(
    ks: &shoal_keyspace::Keyspace,
    aux: &[(&[u8], &[u8])],
    path: &Path,
    floor: Option<u64>,
    replid_offset: impl Fn() -> (String, u64),
) -> Result<(String, u64), String> {
    let io = |e: std::io::Error| format!("writing {}: {e}", path.display());
    'attempt: for _ in 0..snapshot::SNAPSHOT_ATTEMPTS_MAX {
        let swaps = ks.swaps();
        let (replid, offset) = replid_offset();
        // A snapshot may claim an earlier offset than its start (a log the writer started there
        // follows it), never a later one.
        let offset = floor.map_or(offset, |f| f.min(offset));
        let file = File::create(path).map_err(io)?;
        let mut f = std::io::BufWriter::with_capacity(SNAPSHOT_WRITE_BYTES, file);
        let mut w = snapshot::Writer::new();
        f.write_all(&w.header(&replid, offset)).map_err(io)?;
        for (name, value) in aux {
            f.write_all(&w.aux(name, value)).map_err(io)?;
        }
        for i in 0..ks.shard_count() {
            match w.shard(ks, i, swaps) {
                Some(chunk) => f.write_all(&chunk).map_err(io)?,
                None => continue 'attempt,
            }
        }
        let (_, end_offset) = replid_offset();
        f.write_all(&w.finish(end_offset.max(offset))).map_err(io)?;
        let file = f.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        let mut id = [b'0'; 40];
        for (d, s) in id.iter_mut().zip(replid.bytes()) {
            *d = s;
        }
        return Ok((String::from_utf8_lossy(&id).into_owned(), offset));
    }
    let _ = std::fs::remove_file(path);
    Err(format!(
        "SWAPDB ran during each of {} attempts to take a snapshot",
        snapshot::SNAPSHOT_ATTEMPTS_MAX
    ))
}

/// Loads the base and replays the incremental logs of `m`.
fn replay(srv: &ServerState, paths: &Paths, m: &Manifest) -> Result<(), String> {
    let replica = !srv.config().replicaof.trim().is_empty();
    let now = now_ms();
    let base_path = paths.file(&m.base.0);
    let bytes = std::fs::read(&base_path).map_err(|e| {
        format!(
            "the append-only log's base {} cannot be read: {e}. {}",
            base_path.display(),
            start_anyway(paths)
        )
    })?;
    let mut meter = crate::progress::Meter::start(
        "loading the append-only log's base",
        "bytes",
        Some(bytes.len() as u64),
    );
    let loaded = snapshot::load_all_progress(
        &srv.ks,
        &bytes,
        &srv.encoding_limits(),
        now,
        !replica,
        &mut |read, keys| meter.update(read, keys, read),
    )
    .map_err(|e| {
        format!(
            "the append-only log's base {} is damaged: {e}. {}",
            base_path.display(),
            start_anyway(paths)
        )
    })?;
    meter.finish(loaded.keys, bytes.len() as u64);
    drop(bytes);
    crate::persist::apply_aux(srv, &loaded, &base_path)?;
    srv.persist.loaded_keys.store(loaded.keys, Relaxed);
    srv.persist
        .loaded_keys_expired
        .store(loaded.expired, Relaxed);
    // The stream after the base, as one byte string from `loaded.offset`: each log holds the
    // stream from its header's offset; a later log may start before an earlier one's end (that
    // one ended inside a frame, cut by a crash), and then replaces its bytes from there.
    let mut tail: Vec<u8> = Vec::new();
    let start = loaded.offset;
    let mut replid = loaded.replid.clone();
    let mut clean = false;
    let mut cut_total = 0u64;
    let last = m.incrs.len().saturating_sub(1);
    for (i, (name, _)) in m.incrs.iter().enumerate() {
        let path = paths.file(name);
        let body = match std::fs::read(&path) {
            Ok(b) => b,
            // The last log missing: a crash between the manifest's switch and its creation
            // cannot happen (the log is created first), so this is damage.
            Err(e) => {
                return Err(format!(
                    "the append-only log {} cannot be read: {e}. {}",
                    path.display(),
                    start_anyway(paths)
                ));
            }
        };
        let header = match format::decode_header(&body) {
            Ok(h) => h,
            // A crash while the last log was being created leaves it short: it holds nothing.
            Err(format::HeaderError::Short) if i == last => {
                tracing::warn!(file = %path.display(), bytes = body.len(), "the append-only log's last file has no complete header: ignored");
                clean = false;
                continue;
            }
            Err(e) => {
                return Err(format!(
                    "the append-only log {} is damaged: {e}. {}",
                    path.display(),
                    start_anyway(paths)
                ));
            }
        };
        let held_end = start + tail.len() as u64;
        if header.start_offset < start || header.start_offset > held_end {
            return Err(format!(
                "the append-only log {} starts at offset {} but the log before it ends at {held_end}: \
                 a part of the log is missing. {}",
                path.display(),
                header.start_offset,
                start_anyway(paths)
            ));
        }
        tail.truncate((header.start_offset - start) as usize);
        replid = header.replid.clone();
        let scanned = format::scan(&body[format::HEADER_BYTES..]);
        clean = false;
        for r in &scanned.records {
            match r {
                Record::Stream(b) => {
                    tail.extend_from_slice(b);
                    clean = false;
                }
                Record::Close => clean = true,
            }
        }
        if let Some(why) = &scanned.cut {
            let good = format::HEADER_BYTES + scanned.good_len;
            let cut = body.len() - good;
            if i != last {
                return Err(format!(
                    "the append-only log {} is damaged at byte {good} ({why}) and is not the \
                     last log: what follows it cannot be trusted. {}",
                    path.display(),
                    start_anyway(paths)
                ));
            }
            tracing::warn!(
                file = %path.display(),
                offset = good,
                bytes_cut = cut,
                reason = %why,
                "the append-only log's tail is torn or damaged: cut at the last good record"
            );
            cut_total += cut as u64;
            // Cut the file too, so the next start reads a whole log.
            if let Err(e) = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| {
                    f.set_len(good as u64)?;
                    f.sync_all()
                })
            {
                tracing::warn!(file = %path.display(), error = %e, "could not cut the log's tail");
            }
        }
    }
    srv.persist.aof.loaded_cut_bytes.store(cut_total, Relaxed);
    // Replay every whole frame; a frame cut by the crash is left out.
    let dbs = srv.ks.databases();
    let limits = srv.encoding_limits();
    let mut decoder = RequestDecoder::default();
    let mut ranges = Vec::new();
    let mut pos = 0usize;
    let mut frames = 0u64;
    loop {
        match decoder.decode(&tail, pos, &mut ranges) {
            Ok(Decoded::Frame { end, inline }) => {
                let src: &[u8] = if inline {
                    decoder.inline_bytes()
                } else {
                    &tail
                };
                let args: Vec<&[u8]> = ranges.iter().map(|r| &src[r.clone()]).collect();
                let applied = stream::decode(&args, dbs).and_then(|effect| {
                    if let stream::Effect::Functions { payload } = &effect {
                        use shoal_replication::replica_link::FunctionsSink;
                        srv.replace_functions(payload)
                            .map_err(stream::StreamError)?;
                    }
                    let overlap = start + (pos as u64) < loaded.end_offset;
                    stream::apply(&srv.ks, &effect, &limits, now, overlap)
                });
                if let Err(e) = applied {
                    return Err(format!(
                        "the append-only log's effect at stream offset {} cannot be applied: {e}. {}",
                        start + pos as u64,
                        start_anyway(paths)
                    ));
                }
                pos = end;
                frames += 1;
            }
            Ok(Decoded::Empty { end }) => pos = end,
            Ok(Decoded::Incomplete) => break,
            Err(e) => {
                return Err(format!(
                    "the append-only log holds garbage at stream offset {}: {}. {}",
                    start + pos as u64,
                    e.0,
                    start_anyway(paths)
                ));
            }
        }
    }
    if pos < tail.len() {
        tracing::warn!(
            bytes_cut = tail.len() - pos,
            offset = start + pos as u64,
            "the append-only log ends inside an effect: that effect is left out"
        );
        clean = false;
    }
    let offset = start + pos as u64;
    if replid.bytes().any(|b| b != b'0') {
        // A replica's log is a prefix of its primary's stream whatever the cut: it continues.
        if clean || replica {
            srv.repl.resume(&replid, offset, loaded.end_offset);
        } else {
            srv.repl.resume_unclean(&replid, offset, loaded.end_offset);
        }
    }
    srv.persist.last_save_unix_s.store(now_ms() / 1000, Relaxed);
    tracing::info!(
        dir = %paths.dir.display(),
        keys = loaded.keys,
        effects = frames,
        offset,
        clean,
        "DB loaded from the append-only log"
    );
    Ok(())
}

// ---- the writer ----

/// Wakes the writer thread (a `Waker` the replication state and commands can hold).
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// A compaction's result, handed to the writer to switch to.
struct Handover {
    /// The new base, written and fsynced under a temporary name.
    tmp: PathBuf,
    replid: String,
    offset: u64,
    history: u64,
    /// The incremental log the writer started at `offset` for this compaction (`Rotation`):
    /// the new base goes before it, and it and the logs after it stay. `None`: the writer could
    /// not rotate, so the stream since `offset` is copied out of the backlog into a new log.
    from_incr: Option<u64>,
}

/// A compaction's request to the writer, as Redis 7 opens a new incremental file when its
/// rewrite starts: the writer ends its log file where it is and goes on in a new one, so the
/// log after the compaction's snapshot is already on disk when the snapshot is done, however
/// long it took and however much was written meanwhile. (Copying that stretch out of the
/// backlog at the switch failed whenever more was written during the snapshot than the
/// backlog keeps, and the compaction then started over and over under a steady write load.)
#[derive(Debug, Default)]
enum Rotation {
    #[default]
    Idle,
    Asked,
    /// The new log's sequence number, and the stream offset and history it starts at.
    Done {
        seq: u64,
        offset: u64,
        history: u64,
    },
    /// The log cannot continue (it waits for this compaction to mend it) or the new file could
    /// not be made.
    Refused,
}

/// Finished compactions waiting for the writer (at most one runs at a time).
type Handovers = std::sync::Mutex<Option<Handover>>;

/// What the writer thread owns.
struct Writer {
    srv: Arc<ServerState>,
    paths: Paths,
    manifest: Manifest,
    file: File,
    file_replid: String,
    /// The stream offset written up to, and the history it belongs to.
    pos: u64,
    history: u64,
    /// The log cannot continue (waiting for a compaction).
    broken: bool,
    last_rewrite_ask: Option<Instant>,
    last_fsync: Instant,
    handovers: Arc<Handovers>,
    /// The records of one batch (at most `RECORD_STREAM_BYTES_MAX` stream bytes, read out of
    /// the backlog into it): reused from batch to batch.
    rec_buf: Vec<u8>,
}

/// The writer's handle: how the rest of the node reaches it.
pub struct AofNode {
    handovers: Arc<Handovers>,
    rotation: std::sync::Mutex<Rotation>,
    stop: std::sync::atomic::AtomicBool,
    stopped: std::sync::atomic::AtomicBool,
}

/// Per node: the writer's handle, kept by the server (`Server::run`).
static NODES: std::sync::Mutex<Vec<(usize, Arc<AofNode>)>> = std::sync::Mutex::new(Vec::new());

fn node_of(srv: &ServerState) -> Option<Arc<AofNode>> {
    let key = srv as *const ServerState as usize;
    NODES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, n)| n.clone())
}

/// Starts the writer thread (after [`load_at_startup`]).
pub fn spawn_writer(srv: &Arc<ServerState>) -> Result<(), String> {
    let paths = Paths::of(srv);
    let text = std::fs::read(paths.manifest()).map_err(|e| format!("reading the manifest: {e}"))?;
    let manifest = Manifest::parse(&text)?;
    let (name, _) = manifest
        .incrs
        .last()
        .cloned()
        .ok_or("the manifest names no incremental log")?;
    let path = paths.file(&name);
    let body = std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let header = format::decode_header(&body).map_err(|e| format!("{}: {e}", path.display()))?;
    let scanned = format::scan(&body[format::HEADER_BYTES..]);
    let pos = header.start_offset
        + scanned
            .records
            .iter()
            .map(|r| match r {
                Record::Stream(b) => b.len() as u64,
                Record::Close => 0,
            })
            .sum::<u64>();
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    let node = Arc::new(AofNode {
        handovers: Arc::default(),
        rotation: Default::default(),
        stop: Default::default(),
        stopped: Default::default(),
    });
    let key = Arc::as_ptr(srv) as usize;
    NODES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((key, node.clone()));
    let mut w = Writer {
        srv: srv.clone(),
        paths,
        manifest,
        file,
        file_replid: header.replid,
        pos,
        history: srv.repl.read_history(pos, 0).history,
        broken: false,
        last_rewrite_ask: None,
        last_fsync: Instant::now(),
        handovers: node.handovers.clone(),
        rec_buf: Vec::new(),
    };
    std::thread::Builder::new()
        .name("shoal-aof".into())
        .spawn(move || w.run(&node))
        .map(|_| ())
        .map_err(|e| format!("could not start the append-only log's writer: {e}"))
}

impl Writer {
    fn run(&mut self, node: &AofNode) {
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let srv = self.srv.clone();
        let a = &srv.persist.aof;
        a.set_writer(Some(waker.clone()));
        srv.repl.pin_backlog(Some(self.pos));
        loop {
            if node.stop.load(Relaxed) {
                self.mend_before_close();
                self.finish();
                srv.repl.pin_backlog(None);
                a.enabled.store(false, Relaxed);
                srv.repl.aof_on.store(false, Relaxed);
                a.set_writer(None);
                a.wake_all_waiters();
                node.stopped.store(true, Relaxed);
                return;
            }
            self.take_handover();
            self.serve_rotation(node);
            // Under `always` a write waits for us: register before looking, so an append after
            // the look wakes us. Otherwise the stream is taken in batches every
            // `WRITER_BATCH_MS` (a wake-up and a write per append cost more than they give).
            let eager = srv.config().appendfsync == AppendFsync::Always;
            if eager {
                self.srv.repl.link_will_wait(&waker);
            }
            let wrote = self.append_available();
            self.sync_by_policy();
            // The growth rule is looked at as the log grows, not only by the cron's second:
            // under a fast churn a second is megabytes.
            if wrote && !a.rewriting.load(Relaxed) && grown_past_rule(&srv) {
                tracing::info!(
                    bytes = a.current_size.load(Relaxed),
                    "starting an automatic compaction of the append-only log"
                );
                let _ = start_rewrite(&srv);
            }
            if self.broken {
                self.ask_rewrite();
            }
            if eager && !wrote {
                std::thread::park_timeout(Duration::from_millis(WRITER_IDLE_MS));
            } else if !eager {
                let ms = if wrote {
                    WRITER_BATCH_MS
                } else {
                    WRITER_IDLE_BATCH_MS
                };
                std::thread::park_timeout(Duration::from_millis(ms));
            }
        }
    }

    /// Appends what the backlog holds past `pos`; true if it wrote anything. The backlog is
    /// read [`WRITER_READ_SLICE_BYTES`] at a time, each under its own hold of the backlog's lock
    /// (a copy of everything since the last pass held it for tens of µs, and every write of the
    /// workers waited), each slice a record, all of them one write.
    fn append_available(&mut self) -> bool {
        if self.broken {
            return false;
        }
        // The record buffer is the writer's own, reused: a fresh megabyte per batch costs its
        // pages' faults (and zeroing) every time. The backlog is read straight into it, each
        // slice after a record's frame, which is filled in once the slice is there.
        self.rec_buf.clear();
        // Stream bytes encoded into `rec_buf` so far.
        let mut taken = 0usize;
        loop {
            let at = format::begin_stream(&mut self.rec_buf);
            let payload = self.rec_buf.len();
            let r = self.srv.repl.read_history_append(
                self.pos + taken as u64,
                WRITER_READ_SLICE_BYTES,
                &mut self.rec_buf,
            );
            let read = self.rec_buf.len() - payload;
            if r.history != self.history {
                self.rec_buf.truncate(at);
                // What was read before the change is the old history's: written first.
                if taken > 0 {
                    break;
                }
                // Same id (or our id kept as the second, past where we are): the same stream
                // goes on at the same offsets. Anything else is another stream: compact.
                let ids = &r.ids;
                let same = ids.replid == self.file_replid
                    || (ids.replid2 == self.file_replid && ids.second_offset >= self.pos as i64);
                if !same {
                    self.break_log(
                        "the replication history changed (a full copy or a broken stream)",
                    );
                    return false;
                }
                if ids.replid != self.file_replid
                    && let Err(e) = self.roll(&ids.replid.clone())
                {
                    self.write_failed(&format!("starting a new log file: {e}"));
                    return false;
                }
                self.history = r.history;
                return true;
            }
            match r.bytes {
                None if taken > 0 => {
                    self.rec_buf.truncate(at);
                    break;
                }
                None => {
                    self.rec_buf.truncate(at);
                    self.break_log("the log fell behind the backlog (repl-backlog-size)");
                    return false;
                }
                Some(_) if read == 0 => {
                    self.rec_buf.truncate(at);
                    break;
                }
                Some(_) => {
                    format::seal_stream(&mut self.rec_buf, at);
                    taken += read;
                    if read < WRITER_READ_SLICE_BYTES || taken >= RECORD_STREAM_BYTES_MAX {
                        break;
                    }
                }
            }
        }
        if taken == 0 {
            return false;
        }
        match self.file.write_all(&self.rec_buf) {
            Ok(()) => {
                self.pos += taken as u64;
                self.srv.repl.pin_backlog(Some(self.pos));
                let a = &self.srv.persist.aof;
                a.written_offset.store(self.pos, Relaxed);
                a.current_size.fetch_add(self.rec_buf.len() as u64, Relaxed);
                if a.last_write_failed.swap(false, Relaxed) {
                    tracing::warn!("the append-only log is written again");
                }
                true
            }
            Err(e) => {
                // A partial record is cut at the next load; the next write goes after it, so
                // reopen at its end: stop here and compact instead.
                self.write_failed(&format!("writing: {e}"));
                self.break_log("a write of the log failed");
                false
            }
        }
    }

    fn write_failed(&self, why: &str) {
        let a = &self.srv.persist.aof;
        if !a.last_write_failed.swap(true, Relaxed) {
            tracing::warn!(error = why, "the append-only log could not be written");
        }
        a.wake_all_waiters();
    }

    fn break_log(&mut self, why: &str) {
        // Nothing to keep the backlog's bytes for until a compaction gives a new start.
        self.srv.repl.pin_backlog(None);
        if !self.broken {
            tracing::warn!(
                reason = why,
                offset = self.pos,
                "the append-only log cannot continue: compacting it"
            );
        }
        self.broken = true;
    }

    fn ask_rewrite(&mut self) {
        if self
            .last_rewrite_ask
            .is_some_and(|t| t.elapsed() < Duration::from_millis(REWRITE_RETRY_MS))
        {
            return;
        }
        self.last_rewrite_ask = Some(Instant::now());
        let _ = start_rewrite(&self.srv);
    }

    /// fsyncs as `appendfsync` says, and publishes what is on disk.
    fn sync_by_policy(&mut self) {
        let a = &self.srv.persist.aof;
        let written = self.pos;
        if a.fsynced_offset.load(Relaxed) >= written {
            return;
        }
        let policy = self.srv.config().appendfsync;
        let due = match policy {
            AppendFsync::Always => true,
            AppendFsync::Everysec => {
                self.last_fsync.elapsed() >= Duration::from_millis(FSYNC_INTERVAL_MS)
            }
            // The OS decides; what is written counts as done.
            AppendFsync::No => {
                published(&self.srv, written);
                return;
            }
        };
        if !due {
            return;
        }
        match self.file.sync_data() {
            Ok(()) => {
                self.last_fsync = Instant::now();
                published(&self.srv, written);
            }
            Err(e) => self.write_failed(&format!("fsync: {e}")),
        }
    }

    /// Starts a new incremental log where the writer is, if a compaction asked (see `Rotation`).
    fn serve_rotation(&mut self, node: &AofNode) {
        let mut r = node.rotation.lock().unwrap_or_else(|p| p.into_inner());
        if !matches!(*r, Rotation::Asked) {
            return;
        }
        if self.broken {
            *r = Rotation::Refused;
            return;
        }
        // What the stream holds now goes to the old file first: the new one, which the
        // snapshot's offset starts, then holds only what is written from here on.
        for _ in 0..ROTATE_CATCH_UP_RECORDS_MAX {
            if !self.append_available() {
                break;
            }
        }
        if self.broken {
            *r = Rotation::Refused;
            return;
        }
        let replid = self.file_replid.clone();
        *r = match self.roll(&replid) {
            Ok(()) => Rotation::Done {
                seq: self.manifest.incrs.last().map_or(0, |(_, s)| *s),
                offset: self.pos,
                history: self.history,
            },
            Err(e) => {
                self.write_failed(&format!("starting a new log file: {e}"));
                Rotation::Refused
            }
        };
    }

    /// Switches to the base a compaction handed over, if one is waiting; true if there was one.
    fn take_handover(&mut self) -> bool {
        let handover = self
            .handovers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(h) = handover else {
            return false;
        };
        self.switch(h);
        true
    }

    /// At a clean shutdown, a log that cannot continue (a full copy or a promotion changed the
    /// history under it, and its compaction has not handed over yet) would restart the node from
    /// the old history: a replica stopped soon after its first sync would come back for a full
    /// copy. So the writer waits for the compaction (starting it if none runs) and takes its
    /// handover, for at most [`STOP_MEND_MS`], before it closes.
    fn mend_before_close(&mut self) {
        let srv = self.srv.clone();
        let a = &srv.persist.aof;
        let deadline = Instant::now() + Duration::from_millis(STOP_MEND_MS);
        // A compaction of our own is started at most once; one that ends without a handover
        // failed (it said why), and the log closes as it is.
        let mut started = false;
        while self.broken && Instant::now() < deadline {
            if self.take_handover() {
                continue;
            }
            if !a.rewriting.load(Relaxed) {
                if started {
                    break;
                }
                started = true;
                if start_rewrite(&srv).is_err() {
                    continue;
                }
            }
            std::thread::park_timeout(Duration::from_millis(5));
        }
    }

    /// Clean shutdown: everything the backlog holds is written, then the close record, fsynced.
    fn finish(&mut self) {
        for _ in 0..10_000 {
            if !self.append_available() {
                break;
            }
        }
        if self.broken {
            let _ = self.file.sync_data();
            return;
        }
        let mut rec = Vec::new();
        format::encode_close(&mut rec);
        let res = self
            .file
            .write_all(&rec)
            .and_then(|_| self.file.sync_data());
        match res {
            Ok(()) => {
                published(&self.srv, self.pos);
                tracing::info!(offset = self.pos, "append-only log closed");
            }
            Err(e) => self.write_failed(&format!("closing: {e}")),
        }
    }

    /// A new incremental log at `pos` under `replid` (a promotion changed the id).
    fn roll(&mut self, replid: &str) -> std::io::Result<()> {
        let _ = self.file.sync_data();
        let seq = self
            .manifest
            .incrs
            .last()
            .map_or(self.manifest.base.1, |(_, s)| *s)
            + 1;
        let name = self.paths.incr_name(seq);
        let file = create_incr(&self.paths.file(&name), replid, self.pos)?;
        let mut m = self.manifest.clone();
        m.incrs.push((name, seq));
        write_manifest(&self.paths, &m)?;
        self.manifest = m;
        self.file = file;
        self.file_replid = replid.to_string();
        publish_sizes(&self.srv.persist.aof, &self.paths, &self.manifest);
        Ok(())
    }

    /// Switches to a compaction's base and a fresh log after it; the old files go.
    fn switch(&mut self, h: Handover) {
        let srv = self.srv.clone();
        let a = &srv.persist.aof;
        let res = self.try_switch(&h);
        let took = (now_ms().saturating_sub(a.rewrite_started_ms.load(Relaxed)) / 1000) as i64;
        a.last_rewrite_time_s.store(took, Relaxed);
        match res {
            Ok(()) => {
                a.rewrites.fetch_add(1, Relaxed);
                a.rewrite_failures_consecutive.store(0, Relaxed);
                a.last_rewrite_failed.store(false, Relaxed);
                a.size_after_rewrite
                    .store(a.current_size.load(Relaxed), Relaxed);
                tracing::info!(
                    offset = h.offset,
                    bytes = a.current_size.load(Relaxed),
                    "append-only log compacted"
                );
            }
            Err(e) => {
                let _ = std::fs::remove_file(&h.tmp);
                a.rewrite_failures_consecutive.fetch_add(1, Relaxed);
                a.last_rewrite_failed.store(true, Relaxed);
                tracing::warn!(error = %e, "compacting the append-only log failed");
            }
        }
        a.rewriting.store(false, Relaxed);
    }

    fn try_switch(&mut self, h: &Handover) -> Result<(), String> {
        if let Some(from) = h.from_incr
            && !self.broken
            && self.history == h.history
            && self.manifest.incrs.iter().any(|(_, s)| *s == from)
        {
            return self.switch_base(h, from);
        }
        let seq = self
            .manifest
            .incrs
            .last()
            .map_or(self.manifest.base.1, |(_, s)| *s)
            + 1;
        let incr = self.paths.incr_name(seq);
        let incr_path = self.paths.file(&incr);
        let mut file = create_incr(&incr_path, &h.replid, h.offset).map_err(|e| format!("{e}"))?;
        // The stream from the snapshot's offset up to now, from the backlog, in the snapshot's
        // history only.
        let mut pos = h.offset;
        let end = self.srv.repl.read_history(pos, 0).end;
        while pos < end {
            let r = self.srv.repl.read_history(pos, RECORD_STREAM_BYTES_MAX);
            let Some(b) = r.bytes.filter(|_| r.history == h.history) else {
                let _ = std::fs::remove_file(&incr_path);
                return Err("the stream since the snapshot's offset is no longer held".into());
            };
            if b.is_empty() {
                break;
            }
            let mut rec = Vec::with_capacity(b.len() + 16);
            format::encode_stream(&mut rec, &b);
            file.write_all(&rec).map_err(|e| e.to_string())?;
            pos += b.len() as u64;
        }
        file.sync_data().map_err(|e| e.to_string())?;
        let base = self.paths.base_name(seq);
        std::fs::rename(&h.tmp, self.paths.file(&base)).map_err(|e| e.to_string())?;
        let m = Manifest {
            base: (base, seq),
            incrs: vec![(incr, seq)],
        };
        write_manifest(&self.paths, &m).map_err(|e| e.to_string())?;
        let old = std::mem::replace(&mut self.manifest, m);
        let _ = old;
        remove_unlisted(&self.paths, &self.manifest);
        self.file = file;
        self.file_replid = h.replid.clone();
        self.pos = pos;
        self.history = h.history;
        self.broken = false;
        self.srv.repl.pin_backlog(Some(pos));
        let a = &self.srv.persist.aof;
        a.written_offset.store(pos, Relaxed);
        // Written and fsynced above. The offsets start again here: after a full copy (a new
        // history) they may be lower than before, and a waiter must never see the old ones.
        a.fsynced_offset.store(pos, Relaxed);
        published(&self.srv, pos);
        publish_sizes(a, &self.paths, &self.manifest);
        Ok(())
    }
}

/// The log holds the stream up to `offset` on disk: writers waiting for it go on, and a replica
/// reports it to its primary (`FACK`).
impl Writer {
    /// The switch of a compaction the writer rotated for: the new base goes in front of the
    /// incremental log started at the snapshot's offset (`from`), the older files go. The log
    /// being written goes on untouched.
    fn switch_base(&mut self, h: &Handover, from: u64) -> Result<(), String> {
        let base = self.paths.base_name(from);
        std::fs::rename(&h.tmp, self.paths.file(&base)).map_err(|e| e.to_string())?;
        let m = Manifest {
            base: (base, from),
            incrs: self
                .manifest
                .incrs
                .iter()
                .filter(|(_, s)| *s >= from)
                .cloned()
                .collect(),
        };
        write_manifest(&self.paths, &m).map_err(|e| e.to_string())?;
        self.manifest = m;
        remove_unlisted(&self.paths, &self.manifest);
        publish_sizes(&self.srv.persist.aof, &self.paths, &self.manifest);
        Ok(())
    }
}

fn published(srv: &ServerState, offset: u64) {
    srv.persist.aof.publish_fsynced(offset);
    srv.repl
        .aof_fsynced
        .store(srv.persist.aof.fsynced_offset.load(Relaxed), Relaxed);
}

// ---- compaction ----

/// Starts a compaction on its own thread: a new base snapshot, then (with the writer running)
/// the writer switches to it. With `appendonly no` (BGREWRITEAOF), the base and an empty log are
/// written into the log's folder, as Redis does.
pub fn start_rewrite(srv: &Arc<ServerState>) -> Result<(), String> {
    let a = &srv.persist.aof;
    if a.rewriting.swap(true, Relaxed) {
        return Err("Background append only file rewriting already in progress".into());
    }
    a.rewrite_scheduled.store(false, Relaxed);
    a.rewrite_started_ms.store(now_ms(), Relaxed);
    let srv2 = srv.clone();
    std::thread::Builder::new()
        .name("shoal-aof-rewrite".into())
        .spawn(move || rewrite(&srv2))
        .map(|_| ())
        .map_err(|e| {
            srv.persist.aof.rewriting.store(false, Relaxed);
            format!("could not start the rewrite: {e}")
        })
}

fn rewrite(srv: &Arc<ServerState>) {
    let a = &srv.persist.aof;
    let paths = Paths::of(srv);
    let fail = |e: String| {
        a.rewrite_failures_consecutive.fetch_add(1, Relaxed);
        a.last_rewrite_failed.store(true, Relaxed);
        a.last_rewrite_time_s.store(
            (now_ms().saturating_sub(a.rewrite_started_ms.load(Relaxed)) / 1000) as i64,
            Relaxed,
        );
        a.rewriting.store(false, Relaxed);
        tracing::warn!(error = %e, "compacting the append-only log failed");
    };
    if let Err(e) = std::fs::create_dir_all(&paths.dir) {
        return fail(format!("creating {}: {e}", paths.dir.display()));
    }
    // The history is read with the position at each attempt's start and at its end (the
    // snapshot's end marker): both must be the same history.
    let histories = std::sync::Mutex::new(Vec::new());
    let aux = crate::persist::aux_records(srv);
    let tmp = paths.dir.join(format!(
        "{}.rewrite-{}.tmp",
        paths.prefix,
        std::process::id()
    ));
    // The writer starts a new log file first, where it is: the snapshot then claims that
    // offset, a little before its own start (replaying the stretch between over it is
    // idempotent, as for any snapshot taken shard by shard under writes).
    let node = node_of(srv).filter(|_| a.enabled.load(Relaxed));
    let rotated = node.as_ref().and_then(|n| ask_rotation(srv, n));
    let floor = rotated.as_ref().map(|r| r.1);
    // Streamed to the file shard by shard: a large data set never sits in memory twice.
    let written = write_snapshot_file(
        &srv.ks,
        &crate::persist::aux_refs(&aux),
        &tmp,
        floor,
        || {
            let r = srv.repl.read_history(0, 0);
            let offset = srv.repl.offset();
            histories
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(r.history);
            (r.ids.replid, offset)
        },
    );
    let (replid, offset) = match written {
        Ok(p) => p,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return fail(e);
        }
    };
    let histories = histories.into_inner().unwrap_or_else(|p| p.into_inner());
    let history = match histories[..] {
        [.., start, end] if start == end => start,
        _ => {
            let _ = std::fs::remove_file(&tmp);
            return fail("the replication history changed during the snapshot".into());
        }
    };
    let from_incr = match rotated {
        Some((seq, _, rotated_history)) if rotated_history == history => Some(seq),
        Some(_) => {
            let _ = std::fs::remove_file(&tmp);
            return fail("the replication history changed during the snapshot".into());
        }
        None => None,
    };
    match node {
        Some(node) => {
            *node.handovers.lock().unwrap_or_else(|p| p.into_inner()) = Some(Handover {
                tmp,
                replid,
                offset,
                history,
                from_incr,
            });
            a.wake_writer();
        }
        None => {
            // No writer: the base alone, with an empty log after it.
            let res = (|| -> Result<(), String> {
                let seq = std::fs::read(paths.manifest())
                    .ok()
                    .and_then(|t| Manifest::parse(&t).ok())
                    .map_or(0, |m| m.incrs.last().map_or(m.base.1, |(_, s)| *s))
                    + 1;
                let base = paths.base_name(seq);
                std::fs::rename(&tmp, paths.file(&base)).map_err(|e| e.to_string())?;
                let incr = paths.incr_name(seq);
                create_incr(&paths.file(&incr), &replid, offset).map_err(|e| e.to_string())?;
                let m = Manifest {
                    base: (base, seq),
                    incrs: vec![(incr, seq)],
                };
                write_manifest(&paths, &m).map_err(|e| e.to_string())?;
                remove_unlisted(&paths, &m);
                Ok(())
            })();
            match res {
                Ok(()) => {
                    a.rewrites.fetch_add(1, Relaxed);
                    a.rewrite_failures_consecutive.store(0, Relaxed);
                    a.last_rewrite_failed.store(false, Relaxed);
                    a.last_rewrite_time_s.store(
                        (now_ms().saturating_sub(a.rewrite_started_ms.load(Relaxed)) / 1000) as i64,
                        Relaxed,
                    );
                    a.rewriting.store(false, Relaxed);
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    fail(e)
                }
            }
        }
    }
}

/// Asks the writer to start a new incremental log where it is (see `Rotation`) and waits for
/// it, at most [`ROTATE_WAIT_MS`]: the new log's sequence number, start offset and history, or
/// `None` (the compaction then copies the stream since its snapshot out of the backlog).
fn ask_rotation(srv: &ServerState, node: &AofNode) -> Option<(u64, u64, u64)> {
    *node.rotation.lock().unwrap_or_else(|p| p.into_inner()) = Rotation::Asked;
    srv.persist.aof.wake_writer();
    let deadline = Instant::now() + Duration::from_millis(ROTATE_WAIT_MS);
    loop {
        {
            let mut r = node.rotation.lock().unwrap_or_else(|p| p.into_inner());
            match std::mem::take(&mut *r) {
                Rotation::Done {
                    seq,
                    offset,
                    history,
                } => return Some((seq, offset, history)),
                Rotation::Refused => return None,
                // Given up: back to idle, so a late writer does not rotate for nothing.
                Rotation::Asked if Instant::now() >= deadline || node.stop.load(Relaxed) => {
                    return None;
                }
                asked => *r = asked,
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Called once a second by the cron: compacts when the log grew by `auto-aof-rewrite-percentage`
/// since the last compaction and is over `auto-aof-rewrite-min-size`, or holds too many files.
pub fn cron(srv: &Arc<ServerState>) {
    let a = &srv.persist.aof;
    if !a.enabled.load(Relaxed) || a.rewriting.load(Relaxed) {
        return;
    }
    let grown = grown_past_rule(srv);
    let files = node_of(srv).is_some_and(|_| {
        std::fs::read(Paths::of(srv).manifest())
            .ok()
            .and_then(|t| Manifest::parse(&t).ok())
            .is_some_and(|m| m.incrs.len() > INCR_FILES_MAX)
    });
    if grown || files || a.rewrite_scheduled.load(Relaxed) {
        tracing::info!(
            bytes = a.current_size.load(Relaxed),
            "starting an automatic compaction of the append-only log"
        );
        let _ = start_rewrite(srv);
    }
}

/// Whether the log grew by `auto-aof-rewrite-percentage` since the last compaction and is over
/// `auto-aof-rewrite-min-size`.
fn grown_past_rule(srv: &ServerState) -> bool {
    let a = &srv.persist.aof;
    let cfg = srv.config();
    let size = a.current_size.load(Relaxed);
    let base = a.size_after_rewrite.load(Relaxed).max(1);
    cfg.auto_aof_rewrite_percentage > 0
        && size >= cfg.auto_aof_rewrite_min_size
        && size.saturating_sub(base) * 100 / base >= cfg.auto_aof_rewrite_percentage
}

/// `CONFIG SET appendonly yes|no` at run time, as Redis does. Turning the log on writes a new
/// base (a compaction, on its own thread) and starts the writer after it: the log then holds
/// everything from the base's offset (the backlog records from before the base was taken).
/// Turning it off stops the writer after it wrote what it had (the files stay, as in Redis).
pub fn set_appendonly(srv: &Arc<ServerState>, on: bool) {
    let a = &srv.persist.aof;
    if !on {
        let Some(node) = node_of(srv) else {
            return;
        };
        node.stop.store(true, Relaxed);
        a.wake_writer();
        let deadline = Instant::now() + Duration::from_millis(STOP_WAIT_MS);
        while !node.stopped.load(Relaxed) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let key = Arc::as_ptr(srv) as usize;
        NODES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(k, _)| *k != key);
        return;
    }
    if a.enabled.load(Relaxed) || node_of(srv).is_some() {
        return;
    }
    let srv = srv.clone();
    let started = std::thread::Builder::new()
        .name("shoal-aof-on".into())
        .spawn(move || {
            let a = &srv.persist.aof;
            // A compaction already running (BGREWRITEAOF) ends first: this one writes the base.
            let deadline = Instant::now() + Duration::from_millis(STOP_WAIT_MS * 30);
            while a.rewriting.swap(true, Relaxed) {
                if Instant::now() >= deadline {
                    tracing::warn!("appendonly yes: a compaction is still running; not started");
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            srv.repl.start_recording_for_log(&srv.ks);
            a.rewrite_scheduled.store(false, Relaxed);
            a.rewrite_started_ms.store(now_ms(), Relaxed);
            rewrite(&srv);
            if a.last_rewrite_failed.load(Relaxed) || !srv.config().appendonly {
                return;
            }
            let paths = Paths::of(&srv);
            let base_offset = std::fs::read(paths.manifest())
                .ok()
                .and_then(|t| Manifest::parse(&t).ok())
                .and_then(|m| m.incrs.last().map(|(n, _)| paths.file(n)))
                .and_then(|p| std::fs::read(p).ok())
                .and_then(|b| format::decode_header(&b).ok().map(|h| h.start_offset))
                .unwrap_or_else(|| srv.repl.offset());
            a.written_offset.store(base_offset, Relaxed);
            a.fsynced_offset.store(base_offset, Relaxed);
            srv.repl.aof_fsynced.store(base_offset, Relaxed);
            srv.repl.aof_on.store(true, Relaxed);
            a.enabled.store(true, Relaxed);
            if let Err(e) = spawn_writer(&srv) {
                a.enabled.store(false, Relaxed);
                srv.repl.aof_on.store(false, Relaxed);
                tracing::warn!(error = %e, "appendonly yes: the log's writer did not start");
            }
        });
    if let Err(e) = started {
        tracing::warn!(error = %e, "appendonly yes: could not start");
    }
}

/// At shutdown: the writer appends the rest of the stream and the close record, and fsyncs.
pub fn stop(srv: &ServerState) {
    let Some(node) = node_of(srv) else {
        return;
    };
    // Nothing streams past the close record: an effect made after it (the cron expiring a key)
    // would reach replicas and not the log, and a restart keeping the id would then serve those
    // replicas a stream with a hole.
    srv.ks.set_recording(false);
    node.stop.store(true, Relaxed);
    srv.persist.aof.wake_writer();
    let deadline = Instant::now() + Duration::from_millis(STOP_WAIT_MS);
    while !node.stopped.load(Relaxed) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let key = srv as *const ServerState as usize;
    NODES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|(k, _)| *k != key);
}

/// Under `appendfsync always`: waits until the log holds the stream up to `offset` on disk.
/// False if a write of the log failed meanwhile (the caller answers with an error).
pub async fn wait_fsynced(srv: &ServerState, offset: u64) -> bool {
    let a = &srv.persist.aof;
    loop {
        let woken = std::future::poll_fn(|cx| {
            if a.poll_fsynced(offset, cx.waker()) {
                return std::task::Poll::Ready(true);
            }
            if a.last_write_failed.load(Relaxed) || !a.enabled.load(Relaxed) {
                return std::task::Poll::Ready(false);
            }
            std::task::Poll::Pending
        });
        // Looked at again now and then: a waiter refused a place (`FSYNC_WAITERS_MAX`) is
        // woken by nobody.
        if let Ok(done) =
            tokio::time::timeout(Duration::from_millis(WAITER_RECHECK_MS), woken).await
        {
            return done;
        }
    }
}

/// WAITAOF: waits until this node's log (if `numlocal`) and `numreplicas` replicas' logs hold
/// `offset` fsynced, or until `deadline_ms` (`clock::mono_ms`; 0: no deadline). Replicas report
/// their fsynced offset with their acknowledgements, at least once a second.
pub async fn wait_aof(
    srv: &ServerState,
    offset: u64,
    numlocal: usize,
    numreplicas: usize,
    deadline_ms: u64,
) -> (usize, usize) {
    loop {
        let (local, replicas) = shoal_commands::aof::aof_acks(srv, offset);
        let done = local >= numlocal && replicas >= numreplicas;
        if done || (deadline_ms > 0 && crate::clock::mono_ms() >= deadline_ms) {
            return (local, replicas);
        }
        tokio::time::sleep(Duration::from_millis(WAITAOF_POLL_MS)).await;
    }
}
