//! The Raft log of the configuration group on disk, under `<dir>/raft/`: `log` holds the entries
//! as records (length, CRC-64, JSON of the entry; see `record.rs`), appended in order; `meta`
//! holds the vote, the committed log id and the purge point, replaced whole on every change.
//!
//! Durability: an append is written and `fdatasync`ed before openraft is told it is flushed; a
//! vote, a committed id or a purge point is on disk (temporary file, fsync, rename, fsync of the
//! directory) before the call returns; a truncation cuts the file and fsyncs it before returning.
//! A crash in the middle of an append leaves a torn last record: loading stops at the first record
//! that is cut short, fails its CRC, does not decode or does not follow its predecessor, cuts the
//! file there and goes on (openraft never acknowledged what was cut).
//!
//! Memory: the entries after the purge point are kept in memory too (readers serve replication
//! from there). Openraft purges the log after each snapshot, keeping
//! `max_in_snapshot_log_to_keep` entries, so what is held is bounded by the snapshot policy; the
//! file is rewritten without its purged prefix once that prefix passes [`LOG_COMPACT_BYTES_MIN`]
//! and half the file.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, RaftLogId, RaftLogReader, StorageError, StorageIOError, Vote,
};
use serde::{Deserialize, Serialize};

use super::TypeConfig;
use super::record::{self, Read};

/// The largest entry record accepted, in bytes of JSON. A proposal is refused above
/// `PROPOSAL_BYTES_MAX` (well below this) before it reaches the log; membership entries are
/// small.
pub const LOG_RECORD_BYTES_MAX: usize = 4 * 1024 * 1024;
/// The largest `meta` record, in bytes of JSON (a vote and two log ids).
pub const META_BYTES_MAX: usize = 64 * 1024;
/// The purged prefix of the log file is dropped (the file rewritten) once it is at least this
/// many bytes and at least half the file.
pub const LOG_COMPACT_BYTES_MIN: u64 = 1024 * 1024;

const LOG_FILE: &str = "log";
const META_FILE: &str = "meta";

/// What `meta` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Meta {
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
    purged: Option<LogId<u64>>,
}

/// The log's entries after the purge point, shared with the readers.
type Entries = Arc<Mutex<BTreeMap<u64, Entry<TypeConfig>>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves the data as consistent as any I/O error
    // would; the next write reports its own error if the file is in trouble.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs file I/O on the blocking pool: an fsync can take milliseconds, which a runtime worker
/// serving connections must not spend. On a current-thread runtime (the Raft simulator, which
/// runs every node on one thread in virtual time) it runs inline instead: work finishing on
/// another thread would make the order of events, and so a seed's run, vary from one replay to
/// the next. The server runs the group on its multi-thread runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let flavor = tokio::runtime::Handle::current().runtime_flavor();
    if flavor == tokio::runtime::RuntimeFlavor::CurrentThread {
        return f();
    }
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("blocking task failed: {e}")))?
}

fn write_err(e: impl Into<AnyError>) -> StorageError<u64> {
    StorageIOError::write_logs(e).into()
}

fn vote_err(e: impl Into<AnyError>) -> StorageError<u64> {
    StorageIOError::write_vote(e).into()
}

/// The log file and where each live entry's record starts in it.
struct LogFile {
    dir: PathBuf,
    file: File,
    len: u64,
    /// Index → offset of its record, for the entries after the purge point.
    offsets: BTreeMap<u64, u64>,
}

impl LogFile {
    fn append(&mut self, bytes: &[u8], records: &[(u64, usize)]) -> io::Result<()> {
        self.file.write_all_at(bytes, self.len)?;
        self.file.sync_data()?;
        for &(index, at) in records {
            self.offsets.insert(index, self.len + at as u64);
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Cuts the file before the record of `index` (and everything after it).
    fn truncate(&mut self, index: u64) -> io::Result<()> {
        let Some((_, &at)) = self.offsets.range(index..).next() else {
            return Ok(());
        };
        self.file.set_len(at)?;
        self.file.sync_all()?;
        self.len = at;
        self.offsets.split_off(&index);
        Ok(())
    }

    /// Forgets the records up to `index`; rewrites the file without them when they are big.
    fn purge(&mut self, index: u64) -> io::Result<()> {
        self.offsets = self.offsets.split_off(&(index.saturating_add(1)));
        let dead = self.offsets.values().next().copied().unwrap_or(self.len);
        let all_dead = dead == self.len;
        let worth_it = dead >= LOG_COMPACT_BYTES_MIN && dead * 2 >= self.len;
        if dead == 0 || !(all_dead || worth_it) {
            return Ok(());
        }
        let mut live = vec![0u8; (self.len - dead) as usize];
        self.file.read_exact_at(&mut live, dead)?;
        record::replace_file(&self.dir, LOG_FILE, &live)?;
        self.file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.dir.join(LOG_FILE))?;
        self.len = live.len() as u64;
        for at in self.offsets.values_mut() {
            *at -= dead;
        }
        Ok(())
    }
}

/// Reads as much of `r` as fits in `buf`, stopping early only at the end of the file.
fn read_up_to(r: &mut impl io::Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The loaded log: the file, the live entries and why loading stopped early, if it did.
struct Loaded {
    file: LogFile,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    cut: Option<(u64, &'static str)>,
}

/// Loads `dir/log`, skipping entries up to `purged` and cutting a torn tail off the file.
fn load_log(dir: &Path, purged: Option<u64>) -> io::Result<Loaded> {
    let path = dir.join(LOG_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    let file_len = file.metadata()?.len();
    let mut reader = io::BufReader::new(file.try_clone()?);
    let mut entries = BTreeMap::new();
    let mut offsets = BTreeMap::new();
    let mut at = 0u64;
    let mut prev: Option<u64> = None;
    let mut buf = Vec::new();
    let cut = loop {
        let mut header = [0u8; record::HEADER_BYTES];
        let n = read_up_to(&mut reader, &mut header)?;
        buf.clear();
        buf.extend_from_slice(&header[..n]);
        if n == record::HEADER_BYTES {
            let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
            if len <= LOG_RECORD_BYTES_MAX {
                buf.resize(n + len, 0);
                let got = read_up_to(&mut reader, &mut buf[n..])?;
                buf.truncate(n + got);
            }
        }
        let (payload, used) = match record::read(&buf, LOG_RECORD_BYTES_MAX) {
            Read::End => break None,
            Read::Torn(why) => break Some(why),
            Read::Record(p, used) => (p, used),
        };
        let Ok(entry) = serde_json::from_slice::<Entry<TypeConfig>>(payload) else {
            break Some("entry does not decode");
        };
        let index = entry.get_log_id().index;
        if prev.is_some_and(|p| index != p + 1) {
            break Some("entry does not follow the one before it");
        }
        prev = Some(index);
        if purged.is_none_or(|p| index > p) {
            offsets.insert(index, at);
            entries.insert(index, entry);
        }
        at += used as u64;
    };
    let cut = cut.map(|why| (file_len - at, why));
    if cut.is_some() {
        file.set_len(at)?;
        file.sync_all()?;
    }
    Ok(Loaded {
        file: LogFile {
            dir: dir.to_path_buf(),
            file,
            len: at,
            offsets,
        },
        entries,
        cut,
    })
}

fn read_meta(dir: &Path) -> io::Result<Meta> {
    let path = dir.join(META_FILE);
    match record::read_single(&path, META_BYTES_MAX)? {
        None => Ok(Meta::default()),
        Some(p) => serde_json::from_slice(&p).map_err(|e| record::corrupt(&path, &e.to_string())),
    }
}

fn write_meta(dir: &Path, meta: &Meta) -> io::Result<()> {
    let json = serde_json::to_vec(meta).map_err(io::Error::other)?;
    let mut bytes = Vec::with_capacity(json.len() + record::HEADER_BYTES);
    record::encode(&mut bytes, &json);
    record::replace_file(dir, META_FILE, &bytes)
}

/// The Raft log storage of the configuration group.
pub struct LogStore {
    dir: PathBuf,
    meta: Meta,
    file: Arc<Mutex<LogFile>>,
    entries: Entries,
    /// The committed index + 1 (0: nothing committed), for metrics.
    committed: Arc<AtomicU64>,
}

/// Reads entries for replication; clones share the store's memory.
#[derive(Clone)]
pub struct LogReader {
    entries: Entries,
}

impl LogStore {
    /// Opens (or creates) the log under `dir`, cutting a torn tail. Blocking: call it from the
    /// blocking pool or before the runtime serves anything.
    pub fn open(dir: &Path) -> io::Result<LogStore> {
        std::fs::create_dir_all(dir)?;
        let meta = read_meta(dir)?;
        let loaded = load_log(dir, meta.purged.map(|p| p.index))?;
        if let Some((bytes, why)) = loaded.cut {
            tracing::warn!(
                dir = %dir.display(),
                bytes,
                why,
                "raft log: dropped a torn tail (a write cut short by a crash)"
            );
        }
        let committed = Arc::new(AtomicU64::new(meta.committed.map_or(0, |c| c.index + 1)));
        Ok(LogStore {
            dir: dir.to_path_buf(),
            meta,
            file: Arc::new(Mutex::new(loaded.file)),
            entries: Arc::new(Mutex::new(loaded.entries)),
            committed,
        })
    }

    /// The committed index as last saved (shared: it stays readable while openraft owns the
    /// store).
    pub fn committed_index(&self) -> Arc<AtomicU64> {
        self.committed.clone()
    }

    /// How many entries are held in memory (those after the purge point).
    pub fn entries_in_memory(&self) -> usize {
        lock(&self.entries).len()
    }

    async fn save_meta(&self) -> io::Result<()> {
        let (dir, meta) = (self.dir.clone(), self.meta.clone());
        blocking(move || write_meta(&dir, &meta)).await
    }
}

fn read_range<RB: RangeBounds<u64>>(entries: &Entries, range: RB) -> Vec<Entry<TypeConfig>> {
    lock(entries).range(range).map(|(_, e)| e.clone()).collect()
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        Ok(read_range(&self.entries, range))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        Ok(read_range(&self.entries, range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let last = lock(&self.entries)
            .last_key_value()
            .map(|(_, e)| *e.get_log_id());
        Ok(LogState {
            last_purged_log_id: self.meta.purged,
            last_log_id: last.or(self.meta.purged),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            entries: self.entries.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        self.meta.vote = Some(*vote);
        self.save_meta().await.map_err(|e| vote_err(&e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        Ok(self.meta.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        self.meta.committed = committed;
        self.save_meta().await.map_err(|e| write_err(&e))?;
        self.committed
            .store(committed.map_or(0, |c| c.index + 1), Relaxed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        Ok(self.meta.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let mut bytes = Vec::new();
        let mut records = Vec::with_capacity(entries.len());
        let mut expect = lock(&self.entries).last_key_value().map(|(&i, _)| i + 1);
        for e in &entries {
            let index = e.get_log_id().index;
            if expect.is_some_and(|x| x != index) {
                let e = io::Error::other(format!("append of {index} leaves a hole in the log"));
                return Err(write_err(&e));
            }
            expect = Some(index + 1);
            let json = serde_json::to_vec(e).map_err(|e| write_err(&e))?;
            if json.len() > LOG_RECORD_BYTES_MAX {
                let e = io::Error::other(format!("log entry {index} is {} bytes", json.len()));
                return Err(write_err(&e));
            }
            records.push((index, bytes.len()));
            record::encode(&mut bytes, &json);
        }
        let file = self.file.clone();
        let written = blocking(move || lock(&file).append(&bytes, &records)).await;
        match written {
            Ok(()) => {
                let mut map = lock(&self.entries);
                for e in entries {
                    map.insert(e.get_log_id().index, e);
                }
                drop(map);
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = write_err(&e);
                callback.log_io_completed(Err(e));
                Err(err)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let file = self.file.clone();
        let index = log_id.index;
        blocking(move || lock(&file).truncate(index))
            .await
            .map_err(|e| write_err(&e))?;
        lock(&self.entries).split_off(&index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        // The purge point is durable before any record goes: a crash in between leaves records
        // that loading skips, never a log that starts after a gap.
        self.meta.purged = Some(log_id);
        self.save_meta().await.map_err(|e| write_err(&e))?;
        {
            let mut map = lock(&self.entries);
            *map = map.split_off(&(log_id.index + 1));
        }
        let file = self.file.clone();
        blocking(move || lock(&file).purge(log_id.index))
            .await
            .map_err(|e| write_err(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};
    use shoal_cluster::Change;

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Normal(Change::RemoveNode(format!("{index:040x}"))),
        }
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "shoal-raft-log-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Appends entries `from..to` straight through the file, as `append` does.
    fn append(store: &LogStore, from: u64, to: u64) {
        let mut bytes = Vec::new();
        let mut records = Vec::new();
        for i in from..to {
            let e = entry(i);
            records.push((i, bytes.len()));
            record::encode(&mut bytes, &serde_json::to_vec(&e).unwrap());
            lock(&store.entries).insert(i, e);
        }
        lock(&store.file).append(&bytes, &records).unwrap();
    }

    fn indexes(store: &LogStore) -> Vec<u64> {
        lock(&store.entries).keys().copied().collect()
    }

    #[test]
    fn a_torn_last_record_is_cut_off_on_load() {
        let dir = temp_dir("torn");
        let store = LogStore::open(&dir).unwrap();
        append(&store, 1, 6);
        drop(store);
        let path = dir.join(LOG_FILE);
        let whole = std::fs::metadata(&path).unwrap().len();
        let last_record = {
            let mut b = Vec::new();
            record::encode(&mut b, &serde_json::to_vec(&entry(5)).unwrap());
            b.len() as u64
        };
        // A crash in the middle of writing entry 5: only part of its record reached the disk.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(whole - 3).unwrap();
        drop(f);

        let store = LogStore::open(&dir).unwrap();
        assert_eq!(indexes(&store), [1, 2, 3, 4], "the torn record is dropped");
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            whole - last_record,
            "the file is cut where the torn record began"
        );
        // Writing goes on after the cut, and a reload sees it all.
        append(&store, 5, 7);
        drop(store);
        let store = LogStore::open(&dir).unwrap();
        assert_eq!(indexes(&store), [1, 2, 3, 4, 5, 6]);
        drop(store);

        // A record whose bytes were damaged (a CRC mismatch) ends the log there too, and garbage
        // after the last record (a header cut short) is dropped.
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 2] ^= 0x55;
        bytes.extend_from_slice(&[1, 2, 3]);
        std::fs::write(&path, &bytes).unwrap();
        let store = LogStore::open(&dir).unwrap();
        assert_eq!(indexes(&store), [1, 2, 3, 4, 5]);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn purged_records_leave_memory_and_then_the_file() {
        let dir = temp_dir("purge");
        let store = LogStore::open(&dir).unwrap();
        // Entries of about 100 bytes: enough of them pass the compaction threshold.
        let n = 2 * LOG_COMPACT_BYTES_MIN / 100;
        append(&store, 1, n);
        let before = std::fs::metadata(dir.join(LOG_FILE)).unwrap().len();
        let keep_from = n - 10;
        lock(&store.entries).retain(|&i, _| i >= keep_from);
        lock(&store.file).purge(keep_from - 1).unwrap();
        let after = std::fs::metadata(dir.join(LOG_FILE)).unwrap().len();
        assert!(after < before / 10, "compacted: {before} -> {after} bytes");
        write_meta(
            &dir,
            &Meta {
                purged: Some(*entry(keep_from - 1).get_log_id()),
                ..Meta::default()
            },
        )
        .unwrap();
        drop(store);
        let store = LogStore::open(&dir).unwrap();
        assert_eq!(indexes(&store), (keep_from..n).collect::<Vec<_>>());
        assert_eq!(store.entries_in_memory(), 10);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
