//! Replication (DESIGN.md §4): the snapshot format, the links between a primary and its replicas
//! (full and partial resynchronisation, the effect stream, acknowledgements), coordinated failover,
//! snapshots on disk, and verification. The replication state itself (role, ids, offsets, backlog)
//! is plain data in `shoal_commands::repl`, so commands such as ROLE and WAIT read it without I/O;
//! this crate installs the callbacks through which that state reaches the network.

pub mod client;
pub mod failover;
pub mod primary;
pub mod replica;
pub mod snapshot;
pub mod verify;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal_commands::ServerState;
use tokio::sync::watch;

/// Interval of the stream's keep-alive PING while replicas are attached.
pub const PING_INTERVAL_MS: u64 = 1_000;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Signalled whenever stream bytes are appended (wakes replica links).
pub fn data_watch() -> &'static watch::Sender<()> {
    static W: OnceLock<watch::Sender<()>> = OnceLock::new();
    W.get_or_init(|| watch::channel(()).0)
}

/// Installs the replication callbacks and background tasks. Call inside the tokio runtime.
pub fn install(srv: &Arc<ServerState>) {
    let handle = tokio::runtime::Handle::current();
    let weak = Arc::downgrade(srv);
    {
        let mut hooks = srv.repl.hooks.lock().expect("hooks lock");
        let _ = srv
            .repl
            .on_append
            .set(shoal_commands::repl::Wake(Box::new(|| {
                data_watch().send_replace(());
            })));
        let (h, w) = (handle.clone(), weak.clone());
        hooks.start_link = Box::new(move |host, port, epoch| {
            if let Some(srv) = w.upgrade() {
                h.spawn(replica::run(srv, host, port, epoch));
            }
        });
        let (h, w) = (handle.clone(), weak.clone());
        hooks.failover = Box::new(move |req| {
            if let Some(srv) = w.upgrade() {
                h.spawn(failover::run(srv, req));
            }
        });
        let w = weak.clone();
        hooks.save = Box::new(move |foreground| match w.upgrade() {
            Some(srv) => save(&srv, foreground),
            None => Err("server is shutting down".into()),
        });
    }
    // Keep-alive PINGs in the stream, so replicas can tell a quiet primary from a dead link.
    let w = weak.clone();
    handle.spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(PING_INTERVAL_MS)).await;
            let Some(srv) = w.upgrade() else { return };
            if srv.repl.active.load(Relaxed)
                && !srv.repl.is_replica()
                && srv.repl.replica_count() > 0
            {
                let mut b = Vec::new();
                shoal_commands::repl::encode_ping(&mut b);
                srv.repl.append(&b);
            }
        }
    });
    if srv.repl.last_save_unix_s.load(Relaxed) == 0 {
        srv.repl.last_save_unix_s.store(now_ms() / 1000, Relaxed);
    }
    // A configured `replicaof` starts the link now.
    let replicaof = srv.config().replicaof.clone();
    let mut parts = replicaof.split_whitespace();
    if let (Some(host), Some(Ok(port))) = (parts.next(), parts.next().map(|p| p.parse::<u16>())) {
        let epoch = shoal_commands::replication::become_replica(srv, host.to_string(), port);
        handle.spawn(replica::run(srv.clone(), host.to_string(), port, epoch));
    }
}

/// Waits until `n` replicas acknowledged `offset` or the deadline (unix ms, 0 = none) passes;
/// returns how many did.
pub async fn wait_acks(srv: &ServerState, offset: u64, n: usize, deadline_ms: u64) -> usize {
    let mut wait = AckWait {
        repl: &srv.repl,
        id: srv.repl.new_ack_waiter(),
        offset,
        need: n,
    };
    loop {
        let now = now_ms();
        if deadline_ms != 0 && now >= deadline_ms {
            break;
        }
        // Re-check at least every 100 ms (a replica that detaches does not always signal).
        let ms = if deadline_ms == 0 {
            100
        } else {
            (deadline_ms - now).min(100)
        };
        if tokio::time::timeout(Duration::from_millis(ms), &mut wait)
            .await
            .is_ok()
        {
            break;
        }
    }
    srv.repl.acked(offset)
}

/// Ready once `need` replicas acknowledged `offset`; woken only by an ack that satisfies it.
struct AckWait<'a> {
    repl: &'a shoal_commands::repl::ReplState,
    id: u64,
    offset: u64,
    need: usize,
}

impl std::future::Future for AckWait<'_> {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let w = &*self;
        if w.repl.poll_acked(w.id, w.offset, w.need, cx.waker()) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }
}

impl Drop for AckWait<'_> {
    fn drop(&mut self) {
        self.repl.drop_ack_waiter(self.id);
    }
}

/// Writes a snapshot to `dir`/`dbfilename` (through a temporary file and a rename, so a crash
/// never leaves a half-written snapshot under the real name).
pub fn save(srv: &Arc<ServerState>, foreground: bool) -> Result<(), String> {
    if srv.repl.saving.swap(true, Relaxed) {
        return Err("Background save already in progress".into());
    }
    let run = {
        let srv = srv.clone();
        move || -> Result<(), String> {
            let path = shoal_commands::replication::snapshot_path(&srv);
            let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
            // The offset is taken before the data: the data is at least that new, and a restarted
            // replica re-applies the stream from there (effects apply by version, so twice is fine).
            let (replid, offset) = {
                let ids = srv.repl.ids.lock().expect("ids lock");
                (ids.replid.clone(), srv.repl.offset())
            };
            let bytes = snapshot::write_all(&srv.ks, &replid, offset);
            let res = std::fs::write(&tmp, &bytes)
                .and_then(|_| std::fs::rename(&tmp, &path))
                .map_err(|e| format!("saving {}: {e}", path.display()));
            srv.repl.saving.store(false, Relaxed);
            match &res {
                Ok(()) => {
                    srv.repl.dirty.store(0, Relaxed);
                    srv.repl.last_save_unix_s.store(now_ms() / 1000, Relaxed);
                    tracing::info!(path = %path.display(), bytes = bytes.len(), "DB saved on disk");
                }
                Err(e) => tracing::warn!(error = %e, "background save failed"),
            }
            res
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
                srv.repl.saving.store(false, Relaxed);
                format!("could not start background save: {e}")
            })
    }
}

/// Loads `dir`/`dbfilename` at start-up if it exists. Returns the keys loaded.
pub fn load_at_startup(srv: &ServerState) -> Result<u64, String> {
    let path = shoal_commands::replication::snapshot_path(srv);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    let (n, replid, offset) =
        snapshot::load_all_meta(&srv.ks, &bytes, &srv.encoding_limits(), now_ms())
            .map_err(|e| format!("loading {}: {e}", path.display()))?;
    // Resume the replication history the data belongs to: a restarted replica asks its primary
    // to continue from `offset` instead of copying everything again.
    if replid.bytes().any(|b| b != b'0') {
        srv.repl.ids.lock().expect("ids lock").replid = replid;
        srv.repl.replica_offset.store(offset, Relaxed);
        srv.repl.backlog.lock().expect("backlog lock").reset(offset);
    }
    srv.repl.last_save_unix_s.store(now_ms() / 1000, Relaxed);
    tracing::info!(path = %path.display(), keys = n, "DB loaded from disk");
    Ok(n)
}

/// Called once a second by the cron: starts a background save when a `save` rule is met.
pub fn save_cron(srv: &Arc<ServerState>) {
    let cfg = srv.config();
    let rules = &cfg.save.0;
    srv.repl.save_rules_set.store(!rules.is_empty(), Relaxed);
    if rules.is_empty() || srv.repl.saving.load(Relaxed) {
        return;
    }
    let dirty = srv.repl.dirty.load(Relaxed);
    let since = (now_ms() / 1000).saturating_sub(srv.repl.last_save_unix_s.load(Relaxed));
    if rules
        .iter()
        .any(|r| dirty >= r.changes && since >= r.seconds)
    {
        let _ = save(srv, false);
    }
}
