//! Log lines for changes the server notices rather than makes at one place: the replication role
//! (REPLICAOF, a failover, the cluster configuration and a promotion all change it), a cluster
//! primary's write lease lapsing and coming back (fencing), and eviction pressure. The cron
//! thread calls [`Watch::check`] every cycle; it compares with what it saw last and logs one line
//! per change (eviction: at most one line per [`EVICTION_LINE_EVERY`], with the count).

use std::time::{Duration, Instant};

use shoal_commands::ServerState;
use shoal_replication::Role;

/// At most one eviction line this often, while keys are being evicted.
pub const EVICTION_LINE_EVERY: Duration = Duration::from_secs(10);

/// What the cron saw last.
pub struct Watch {
    role_epoch: u64,
    role: Role,
    /// This node, a cluster primary, has held a write lease since it last became one (fencing
    /// is told only after that: a primary still waiting for its first lease is not news).
    held: bool,
    fenced: bool,
    evicted: u64,
    eviction_line: Option<Instant>,
    evicted_since_line: u64,
}

impl Watch {
    pub fn new(srv: &ServerState) -> Watch {
        Watch {
            role_epoch: srv.repl.epoch(),
            role: srv.repl.role(),
            held: false,
            fenced: false,
            evicted: srv.ks.stats().evicted_keys,
            eviction_line: None,
            evicted_since_line: 0,
        }
    }

    /// Role and fencing: cheap, every cycle.
    pub fn check(&mut self, srv: &ServerState) {
        let epoch = srv.repl.epoch();
        if epoch != self.role_epoch {
            self.role_epoch = epoch;
            let role = srv.repl.role();
            if role != self.role {
                let was = describe(&self.role);
                let now = describe(&role);
                tracing::info!(from = %was, to = %now, "role change");
                self.role = role;
            }
        }
        if let Some(cl) = srv.cluster.as_ref() {
            if !cl.lease.enforced.load(std::sync::atomic::Ordering::Relaxed) {
                // Not a primary (any more): a lease is not needed, nothing is fenced.
                self.held = false;
                self.fenced = false;
                return;
            }
            let fenced = !cl.lease.valid(crate::clock::mono_ms());
            if !self.held {
                self.held = !fenced;
                return;
            }
            if fenced != self.fenced {
                self.fenced = fenced;
                if fenced {
                    let why = cl
                        .lease
                        .last_refusal
                        .lock()
                        .map(|s| s.clone())
                        .unwrap_or_default();
                    tracing::warn!(reason = %why, "fenced: this primary's write lease lapsed; refusing its slots until it is renewed");
                } else {
                    tracing::info!("unfenced: this primary holds a write lease again");
                }
            }
        }
    }

    /// Eviction pressure: once a second (it sums every shard's counters).
    pub fn check_eviction(&mut self, srv: &ServerState) {
        let evicted = srv.ks.stats().evicted_keys;
        let new = evicted.saturating_sub(self.evicted);
        self.evicted = evicted;
        self.evicted_since_line += new;
        if self.evicted_since_line == 0 {
            return;
        }
        let due = self
            .eviction_line
            .is_none_or(|t| t.elapsed() >= EVICTION_LINE_EVERY);
        if due {
            tracing::warn!(
                evicted = self.evicted_since_line,
                evicted_total = evicted,
                used_memory = srv.used_memory() as u64,
                maxmemory = srv.maxmemory(),
                policy = srv.policy().name(),
                "evicting keys to stay under maxmemory"
            );
            self.eviction_line = Some(Instant::now());
            self.evicted_since_line = 0;
        }
    }
}

fn describe(role: &Role) -> String {
    match role {
        Role::Primary => "primary".into(),
        Role::Replica { host, port } => format!("replica of {host}:{port}"),
    }
}
