//! Snapshots on disk: SAVE/BGSAVE, the `save` rules, the snapshot written at shutdown, and loading
//! at start-up. The format is `shoal_replication::snapshot`; this is the file I/O around it.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use shoal_commands::ServerState;
use shoal_replication::snapshot;

use crate::now_ms;

/// Path of the snapshot file (`dir`/`dbfilename`).
pub fn snapshot_path(srv: &ServerState) -> std::path::PathBuf {
    let cfg = srv.config();
    std::path::Path::new(&cfg.dir).join(&cfg.dbfilename)
}

/// Writes a snapshot to `dir`/`dbfilename` (through a temporary file and a rename, so a crash never
/// leaves a half-written snapshot under the real name): here (`foreground`) or on its own thread.
pub fn save(srv: &Arc<ServerState>, foreground: bool) -> Result<(), String> {
    if srv.persist.saving.swap(true, Relaxed) {
        return Err("Background save already in progress".into());
    }
    let run = {
        let srv = srv.clone();
        move || -> Result<(), String> {
            let started = std::time::Instant::now();
            srv.persist.save_started_ms.store(now_ms(), Relaxed);
            // Writes from here on are not all in the snapshot: they stay counted after it.
            let changes_at_start = srv.persist.changes.load();
            let path = snapshot_path(&srv);
            let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
            // The offset is taken before the data: the data is at least that new, and a restarted
            // replica re-applies the stream from there (effects apply by version, so twice is fine).
            // Written to the file shard by shard as it is taken (never the whole snapshot in
            // memory) and fsynced before the rename; the folder is fsynced after it, as Redis 7
            // does, so the new name survives a power loss.
            let aux = aux_records(&srv);
            let written =
                crate::aof::write_snapshot_file(&srv.ks, &aux_refs(&aux), &tmp, None, || {
                    (srv.repl.ids().replid, srv.repl.offset())
                });
            let res = written
                .and_then(|_| {
                    let n = std::fs::metadata(&tmp).map(|m| m.len()).unwrap_or(0);
                    std::fs::rename(&tmp, &path)
                        .map(|_| n)
                        .map_err(|e| format!("saving {}: {e}", path.display()))
                })
                .inspect(|_| {
                    let dir = match path.parent() {
                        Some(d) if !d.as_os_str().is_empty() => d,
                        _ => std::path::Path::new("."),
                    };
                    if let Err(e) = crate::aof::fsync_dir(dir) {
                        tracing::warn!(dir = %dir.display(), error = %e, "could not fsync the snapshot's folder");
                    }
                });
            if res.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            let p = &srv.persist;
            p.saves.fetch_add(1, Relaxed);
            p.last_save_duration_s
                .store(started.elapsed().as_secs() as i64, Relaxed);
            p.last_save_failed.store(res.is_err(), Relaxed);
            p.saving.store(false, Relaxed);
            match &res {
                Ok(n) => {
                    srv.persist
                        .changes_saved
                        .fetch_max(changes_at_start, Relaxed);
                    srv.persist.last_save_unix_s.store(now_ms() / 1000, Relaxed);
                    tracing::info!(path = %path.display(), bytes = n, "DB saved on disk");
                }
                Err(e) => tracing::warn!(error = %e, "background save failed"),
            }
            res.map(|_| ())
        }
    };
    if foreground {
        run()
    } else {
        std::thread::Builder::new()
            .name("shoal-bgsave".into())
            .spawn(move || {
                let _ = run();
            })
            .map(|_| ())
            .map_err(|e| {
                srv.persist.saving.store(false, Relaxed);
                format!("could not start background save: {e}")
            })
    }
}

/// Node state a snapshot file keeps besides its keys, as aux records (name, value): the
/// function libraries, when there are any.
pub fn aux_records(srv: &ServerState) -> Vec<(&'static [u8], Vec<u8>)> {
    shoal_commands::scripting::functions::snapshot_payload(srv)
        .map(|f| (shoal_commands::scripting::functions::SNAPSHOT_AUX, f))
        .into_iter()
        .collect()
}

/// [`aux_records`] as `snapshot::write_all` takes them.
pub fn aux_refs<'a>(aux: &'a [(&'static [u8], Vec<u8>)]) -> Vec<(&'a [u8], &'a [u8])> {
    aux.iter().map(|(n, v)| (*n, &v[..])).collect()
}

/// Applies the aux records of a loaded snapshot file (`path`, for errors).
pub fn apply_aux(
    srv: &ServerState,
    loaded: &snapshot::Loaded,
    path: &std::path::Path,
) -> Result<(), String> {
    for (name, value) in &loaded.aux {
        if name.as_slice() == shoal_commands::scripting::functions::SNAPSHOT_AUX {
            use shoal_replication::replica_link::FunctionsSink;
            srv.replace_functions(value)
                .map_err(|e| format!("loading {}: function libraries: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// Loads `dir`/`dbfilename` at start-up if it exists. Returns the keys loaded.
pub fn load_at_startup(srv: &ServerState) -> Result<u64, String> {
    let path = snapshot_path(srv);
    // A node that starts as a replica keeps keys past their deadline: its primary deletes them.
    let replica = !srv.config().replicaof.trim().is_empty();
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    let mut meter =
        crate::progress::Meter::start("loading the snapshot", "bytes", Some(bytes.len() as u64));
    let loaded = snapshot::load_all_progress(
        &srv.ks,
        &bytes,
        &srv.encoding_limits(),
        now_ms(),
        !replica,
        &mut |read, keys| meter.update(read, keys, read),
    )
    .map_err(|e| {
        format!(
            "the snapshot {} cannot be loaded: {e}. To start anyway, move the file away (the \
             node then starts empty, or from its replication primary), or start with \
             --dbfilename naming another file.",
            path.display()
        )
    })?;
    apply_aux(srv, &loaded, &path)?;
    let n = loaded.keys;
    srv.persist.loaded_keys.store(n, Relaxed);
    srv.persist
        .loaded_keys_expired
        .store(loaded.expired, Relaxed);
    meter.finish(n, bytes.len() as u64);
    // Resume the replication history the data belongs to: a restarted replica asks its primary
    // to continue from `offset` instead of copying everything again, and a restarted primary
    // keeps its id and offset, so its replicas continue too.
    if loaded.replid.bytes().any(|b| b != b'0') {
        srv.repl
            .resume(&loaded.replid, loaded.offset, loaded.end_offset);
    }
    srv.persist.last_save_unix_s.store(now_ms() / 1000, Relaxed);
    tracing::info!(path = %path.display(), keys = n, "DB loaded from disk");
    Ok(n)
}

/// Called once a second by the cron: starts a background save when a `save` rule is met.
pub fn save_cron(srv: &Arc<ServerState>) {
    let cfg = srv.config();
    let rules = &cfg.save.0;
    srv.persist.save_rules_set.store(!rules.is_empty(), Relaxed);
    if rules.is_empty() || srv.persist.saving.load(Relaxed) {
        return;
    }
    let dirty = srv.persist.dirty();
    let since = (now_ms() / 1000).saturating_sub(srv.persist.last_save_unix_s.load(Relaxed));
    if rules
        .iter()
        .any(|r| dirty >= r.changes && since >= r.seconds)
    {
        let _ = save(srv, false);
    }
}

/// At shutdown: SHUTDOWN SAVE, or the `save` rules without NOSAVE, write a final snapshot.
pub fn save_at_shutdown(srv: &Arc<ServerState>) {
    let asked = srv.persist.shutdown_save.load(Relaxed);
    let rules = !srv.config().save.0.is_empty();
    if asked == 1 || (asked == 0 && rules) {
        // A background save may be running: wait for it (bounded) rather than write twice.
        for _ in 0..1000 {
            if !srv.persist.saving.load(Relaxed) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        srv.persist.saving.store(false, Relaxed);
        if let Err(e) = save(srv, true) {
            tracing::warn!(error = %e, "saving at shutdown failed");
        }
    }
}
