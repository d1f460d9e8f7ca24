//! The state machine of the configuration group: exactly a `shoal_cluster::Config`, changed only
//! by `Config::apply` of each committed `Change`, with the last applied log id and membership.
//! A refused change is applied as a no-op that answers its `ChangeError` text; nothing here
//! panics on a change.
//!
//! The state machine itself lives in memory; what is on disk is its last snapshot,
//! `<dir>/raft/snapshot`: a record with the JSON of the snapshot's metadata, then a record with
//! the snapshot's data (the JSON of the `Config`), replaced whole (temporary file, fsync, rename,
//! fsync of the directory). A restart loads it, and openraft applies the committed entries after
//! it again from the log. Every applied batch publishes the new configuration on a
//! `tokio::sync::watch` channel, which is how the rest of the server sees it.

use std::io::{self, Cursor, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use shoal_cluster::Config;
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use super::log_store::blocking;
use super::record::{self, Read};
use super::{BusNode, Response, TypeConfig};

/// The largest snapshot data accepted (built, loaded or received), in bytes. A configuration of
/// 16384 slots and a thousand nodes takes well under a MiB of JSON.
pub const SNAPSHOT_BYTES_MAX: usize = 32 * 1024 * 1024;
/// The largest snapshot metadata record, in bytes of JSON (membership of a few dozen nodes).
pub const SNAPSHOT_META_BYTES_MAX: usize = 1024 * 1024;

const SNAPSHOT_FILE: &str = "snapshot";

/// A snapshot's data as openraft moves it: the bytes, in memory. Chunks received are written at
/// their offsets, and a chunk that starts past the end of what was received is refused: a chunk
/// before it is missing (a late duplicate of a first chunk restarted the stream, or two senders'
/// chunks interleave), and taking it would install bytes with a hole of zeros in them, which no
/// longer decode, and stop the node. The sender is answered with an error and sends again. At
/// most [`SNAPSHOT_BYTES_MAX`] bytes are taken.
#[derive(Debug, Default)]
pub struct SnapshotData(Cursor<Vec<u8>>);

impl SnapshotData {
    pub fn new(bytes: Vec<u8>) -> SnapshotData {
        SnapshotData(Cursor::new(bytes))
    }

    pub fn get_ref(&self) -> &[u8] {
        self.0.get_ref()
    }

    pub fn into_inner(self) -> Vec<u8> {
        self.0.into_inner()
    }
}

impl AsyncRead for SnapshotData {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SnapshotData {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let end = self.0.position().saturating_add(buf.len() as u64);
        if end > SNAPSHOT_BYTES_MAX as u64 {
            let e = io::Error::other(format!("snapshot larger than {SNAPSHOT_BYTES_MAX} bytes"));
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncSeek for SnapshotData {
    fn start_seek(mut self: Pin<&mut Self>, pos: SeekFrom) -> io::Result<()> {
        let len = self.0.get_ref().len() as u64;
        let to = match pos {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => len.checked_add_signed(d),
            SeekFrom::Current(d) => self.0.position().checked_add_signed(d),
        };
        match to {
            Some(to) if to <= len => Pin::new(&mut self.0).start_seek(SeekFrom::Start(to)),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("snapshot chunk at {pos:?} past the {len} bytes received: one is missing"),
            )),
        }
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Pin::new(&mut self.0).poll_complete(cx)
    }
}

/// The metadata record of the snapshot file.
#[derive(Serialize, Deserialize)]
struct SnapshotHeader {
    meta: SnapshotMeta<u64, BusNode>,
}

/// A snapshot as held: metadata and data.
#[derive(Clone)]
struct Stored {
    meta: SnapshotMeta<u64, BusNode>,
    data: Vec<u8>,
}

impl Stored {
    fn to_snapshot(&self) -> Snapshot<TypeConfig> {
        Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(SnapshotData::new(self.data.clone())),
        }
    }
}

fn sm_write_err(e: impl Into<AnyError>) -> StorageError<u64> {
    StorageIOError::write_state_machine(e).into()
}

fn snapshot_write_err(e: impl Into<AnyError>) -> StorageError<u64> {
    StorageIOError::write_snapshot(None, e).into()
}

/// Writes the snapshot file.
fn write_snapshot(dir: &Path, s: &Stored) -> io::Result<()> {
    let header = serde_json::to_vec(&SnapshotHeader {
        meta: s.meta.clone(),
    })
    .map_err(io::Error::other)?;
    let mut bytes = Vec::with_capacity(header.len() + s.data.len() + 2 * record::HEADER_BYTES);
    record::encode(&mut bytes, &header);
    record::encode(&mut bytes, &s.data);
    record::replace_file(dir, SNAPSHOT_FILE, &bytes)
}

/// Reads the snapshot file, if there is one, with its configuration. The file is replaced whole,
/// so a damaged one is an error (the node does not start), not something to skip.
fn read_snapshot(dir: &Path) -> io::Result<Option<(Stored, Config)>> {
    let path = dir.join(SNAPSHOT_FILE);
    let len = match std::fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if len > (SNAPSHOT_BYTES_MAX + SNAPSHOT_META_BYTES_MAX + 2 * record::HEADER_BYTES) as u64 {
        return Err(record::corrupt(&path, "snapshot file larger than allowed"));
    }
    let bytes = std::fs::read(&path)?;
    let (header, used) = match record::read(&bytes, SNAPSHOT_META_BYTES_MAX) {
        Read::Record(p, n) => (p, n),
        Read::End => return Err(record::corrupt(&path, "empty snapshot file")),
        Read::Torn(why) => return Err(record::corrupt(&path, why)),
    };
    let data = match record::read(&bytes[used..], SNAPSHOT_BYTES_MAX) {
        Read::Record(p, n) if used + n == bytes.len() => p,
        Read::Record(..) => return Err(record::corrupt(&path, "bytes after the snapshot")),
        Read::End => return Err(record::corrupt(&path, "snapshot without data")),
        Read::Torn(why) => return Err(record::corrupt(&path, why)),
    };
    let header: SnapshotHeader =
        serde_json::from_slice(header).map_err(|e| record::corrupt(&path, &e.to_string()))?;
    let config: Config =
        serde_json::from_slice(data).map_err(|e| record::corrupt(&path, &e.to_string()))?;
    Ok(Some((
        Stored {
            meta: header.meta,
            data: data.to_vec(),
        },
        config,
    )))
}

/// The configuration group's state machine.
pub struct StateMachine {
    dir: PathBuf,
    config: Config,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BusNode>,
    /// The current snapshot, shared with the builders (which run beside the state machine).
    current: Arc<Mutex<Option<Stored>>>,
    /// Makes snapshot ids unique within this process.
    builds: Arc<AtomicU64>,
    /// Shared with the group handle, which gives it to the fresh state machine of a node that
    /// leaves its group of one (`ConfigGroup::restart_fresh`): its watchers stay subscribed.
    committed: Arc<watch::Sender<Arc<Config>>>,
}

impl StateMachine {
    /// Opens the state machine under `dir` from its snapshot (or empty) and publishes its
    /// configuration on `committed`. Blocking.
    pub fn open(
        dir: &Path,
        committed: impl Into<Arc<watch::Sender<Arc<Config>>>>,
    ) -> io::Result<StateMachine> {
        let committed = committed.into();
        std::fs::create_dir_all(dir)?;
        let mut sm = StateMachine {
            dir: dir.to_path_buf(),
            config: Config::new(),
            last_applied: None,
            membership: StoredMembership::default(),
            current: Arc::new(Mutex::new(None)),
            builds: Arc::new(AtomicU64::new(0)),
            committed,
        };
        if let Some((stored, config)) = read_snapshot(dir)? {
            sm.config = config;
            sm.last_applied = stored.meta.last_log_id;
            sm.membership = stored.meta.last_membership.clone();
            *sm.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(stored);
        }
        sm.publish();
        Ok(sm)
    }

    fn publish(&self) {
        self.committed.send_replace(Arc::new(self.config.clone()));
    }
}

/// Builds a snapshot of the state machine as it was when the builder was made.
pub struct SnapshotBuilder {
    dir: PathBuf,
    config: Config,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BusNode>,
    current: Arc<Mutex<Option<Stored>>>,
    builds: Arc<AtomicU64>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let data = serde_json::to_vec(&self.config).map_err(|e| snapshot_write_err(&e))?;
        if data.len() > SNAPSHOT_BYTES_MAX {
            let e = io::Error::other(format!("snapshot of {} bytes", data.len()));
            return Err(snapshot_write_err(&e));
        }
        let n = self.builds.fetch_add(1, Relaxed);
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{n}", l.leader_id, l.index),
            None => format!("none-{n}"),
        };
        let stored = Stored {
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
                snapshot_id,
            },
            data,
        };
        let (dir, s) = (self.dir.clone(), stored.clone());
        blocking(move || write_snapshot(&dir, &s))
            .await
            .map_err(|e| snapshot_write_err(&e))?;
        let snapshot = stored.to_snapshot();
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(stored);
        Ok(snapshot)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BusNode>), StorageError<u64>> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        let mut changed = false;
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            out.push(match entry.payload {
                EntryPayload::Blank => Ok(()),
                // A refused change is committed all the same: every node refuses it alike and
                // the proposer gets the reason.
                EntryPayload::Normal(change) => {
                    let r = self.config.apply(&change).map_err(|e| e.to_string());
                    changed |= r.is_ok();
                    r
                }
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    Ok(())
                }
            });
        }
        if changed {
            self.publish();
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            dir: self.dir.clone(),
            config: self.config.clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            current: self.current.clone(),
            builds: self.builds.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError<u64>> {
        Ok(Box::new(SnapshotData::default()))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BusNode>,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError<u64>> {
        let data = snapshot.into_inner();
        if data.len() > SNAPSHOT_BYTES_MAX {
            let e = io::Error::other(format!("received a snapshot of {} bytes", data.len()));
            return Err(sm_write_err(&e));
        }
        let config: Config = serde_json::from_slice(&data).map_err(|e| sm_write_err(&e))?;
        let stored = Stored {
            meta: meta.clone(),
            data,
        };
        let (dir, s) = (self.dir.clone(), stored.clone());
        blocking(move || write_snapshot(&dir, &s))
            .await
            .map_err(|e| snapshot_write_err(&e))?;
        self.config = config;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(stored);
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        Ok(self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(Stored::to_snapshot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncSeekExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_snapshot_chunk_past_what_was_received_is_refused() {
        // Found by the Raft simulator: a late first chunk restarted a finished stream, the
        // chunks of another sender went on past it, and the snapshot installed had a hole.
        let mut data = SnapshotData::default();
        data.write_all(&[1; 10]).await.unwrap();
        assert!(data.seek(SeekFrom::Start(20)).await.is_err(), "a hole");
        assert!(data.seek(SeekFrom::End(1)).await.is_err());
        // Writing a chunk again, or the next one, is fine.
        data.seek(SeekFrom::Start(5)).await.unwrap();
        data.write_all(&[1; 5]).await.unwrap();
        data.seek(SeekFrom::Start(10)).await.unwrap();
        data.write_all(&[2; 4]).await.unwrap();
        assert_eq!(data.into_inner(), [[1; 10].as_slice(), &[2; 4]].concat());
    }
}
