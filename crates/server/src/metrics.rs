//! The Prometheus text of `/metrics`: every family shoal exports, read from the node's own
//! counters at scrape time.
//!
//! **The request path never touches the exporter.** Commands only add to shoal's lock-free
//! counters (`ServerState::stats`, the keyspace's, `cmdstats`, replication's, the lease's). A
//! scrape copies their values into a `metrics-exporter-prometheus` recorder built for that scrape
//! (`PrometheusBuilder::build_recorder`, never installed globally): `absolute` for counters,
//! `set` for gauges, with the families described so `# HELP`/`# TYPE` lines come out; then
//! renders it. A fresh recorder per scrape costs a few hundred microseconds and means a series
//! that went away (a replica that left, a node that lost its slots) is not exported forever
//! with its last value.
//!
//! **Latency histograms are rendered here, not fed to the exporter.** The exporter's histograms
//! take samples (`record`/`record_many`): replaying shoal's bucket counts into it would be
//! O(calls) per scrape or need synthetic sample values, and its summaries are not
//! aggregatable. shoal already keeps cumulative-ready buckets per command (`cmdstats`), so the
//! `shoal_command_duration_seconds` family is written directly with Prometheus's `_bucket{le}`,
//! `_sum` and `_count` lines and appended to the exporter's text. Buckets are powers of two of
//! microseconds, 1 µs to 2^20 µs (1.05 s), then `+Inf`; each counts calls whose real duration was
//! below its bound (see `cmdstats`'s header), which is what `le` means.
//!
//! **Cost.** Nothing here walks the keyspace: key counts, memory and hit/miss counters are kept
//! per shard (256 short lock holds per read), so a scrape costs the same on an empty node and on
//! one with millions of keys.
//!
//! Not exported yet, because the features are not there yet: per-tier memory other than RAM
//! (`shoal_memory_tier_bytes{tier="ram"}` is the only tier until a disk tier exists) and Bloom
//! filter counters (they come with the Bloom filter).

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use metrics::{Key, KeyName, Label, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use shoal_commands::ServerState;
use shoal_commands::cmdstats;
use shoal_commands::repl::{LinkState, Role};

/// Exponents k of the `le` = 2^k µs buckets of `shoal_command_duration_seconds`.
pub const DURATION_POW2_MAX: u32 = 20;

/// What one family is: its name, type and help text (the documented list: a test checks each is
/// exported).
#[derive(Debug, Clone, Copy)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    /// Exported only in cluster mode.
    ClusterGauge,
    ClusterCounter,
}

macro_rules! families {
    ($($name:literal $kind:ident $help:literal;)*) => {
        /// Every family `/metrics` exports.
        pub const FAMILIES: &[Family] = &[$(Family { name: $name, kind: Kind::$kind, help: $help }),*];
    };
}

families! {
    "shoal_commands_total" Counter "Commands that ran, by command (`cmd`, as INFO commandstats names it).";
    "shoal_commands_failed_total" Counter "Commands that ran and replied an error, by command.";
    "shoal_commands_rejected_total" Counter "Commands refused before running (arity, NOAUTH, OOM, MOVED, ...), by command.";
    "shoal_command_duration_seconds" Histogram "Time commands ran, by command (latency-tracking yes).";
    "shoal_commands_processed_total" Counter "Commands processed (INFO total_commands_processed).";
    "shoal_error_replies_total" Counter "Error replies sent.";
    "shoal_keyspace_hits_total" Counter "Lookups that found their key.";
    "shoal_keyspace_misses_total" Counter "Lookups that did not find their key.";
    "shoal_expired_keys_total" Counter "Keys deleted because their TTL passed.";
    "shoal_evicted_keys_total" Counter "Keys evicted to stay under maxmemory.";
    "shoal_oom_rejections_total" Counter "Commands refused with -OOM.";
    "shoal_hot_shard_claims_total" Counter "Hot shards claimed by one worker (INFO shoal_hot_shard_claims).";
    "shoal_hot_shard_moves_total" Counter "Requests that moved to the worker claiming their shard.";
    "shoal_connections_received_total" Counter "Client connections accepted.";
    "shoal_rejected_connections_total" Counter "Connections refused (maxclients).";
    "shoal_net_input_bytes_total" Counter "Bytes read from clients.";
    "shoal_net_output_bytes_total" Counter "Bytes written to clients.";
    "shoal_sync_full_total" Counter "Full copies served to replicas.";
    "shoal_sync_partial_ok_total" Counter "Partial resyncs accepted.";
    "shoal_sync_partial_err_total" Counter "Partial resyncs refused (a full copy followed).";
    "shoal_replication_link_failures_total" Counter "As a replica: sessions with the primary that failed.";
    "shoal_connected_clients" Gauge "Client connections open.";
    "shoal_blocked_clients" Gauge "Clients waiting in a blocking command.";
    "shoal_memory_used_bytes" Gauge "Bytes held by the allocator (INFO used_memory).";
    "shoal_memory_rss_bytes" Gauge "Resident set size of the process.";
    "shoal_memory_max_bytes" Gauge "maxmemory (0: no limit).";
    "shoal_memory_tier_bytes" Gauge "Bytes of keys and values by storage tier (`ram`, `disk`: the disk tier's estimate).";
    "shoal_tiered_enabled" Gauge "1 when the disk tier is on (tiered-storage yes).";
    "shoal_tiered_keys_on_disk" Gauge "Keys whose value is on the disk tier.";
    "shoal_tiered_writes_total" Counter "Values moved to the disk tier.";
    "shoal_tiered_reads_total" Counter "Reads of the disk tier.";
    "shoal_tiered_read_misses_total" Counter "Reads of the disk tier that found nothing (the key was then evicted).";
    "shoal_tiered_promotions_total" Counter "Values read from the disk tier and put back in memory.";
    "shoal_tiered_hit_ratio" Gauge "Share of disk tier reads that found their value.";
    "shoal_keys" Gauge "Keys by database.";
    "shoal_expiring_keys" Gauge "Keys with a TTL by database.";
    "shoal_instantaneous_ops_per_second" Gauge "Commands per second over the last sampling period.";
    "shoal_uptime_seconds" Gauge "Seconds since the node started.";
    "shoal_replication_role" Gauge "1 for this node's role (`role` = primary or replica), 0 for the other.";
    "shoal_replication_offset_bytes" Gauge "Replication stream offset (a primary's end, a replica's applied).";
    "shoal_replication_link_up" Gauge "As a replica: 1 while the link to the primary is up.";
    "shoal_connected_replicas" Gauge "Replicas attached to this node.";
    "shoal_replica_acked_offset_bytes" Gauge "Per replica (`replica` = ip:port): the offset it acknowledged.";
    "shoal_replica_lag_bytes" Gauge "Per replica: stream bytes it has not acknowledged.";
    "shoal_replica_lag_seconds" Gauge "Per replica: time since its last acknowledgement (ms resolution).";
    "shoal_cluster_enabled" Gauge "1 in cluster mode.";
    "shoal_aof_enabled" Gauge "1 while the append-only log is kept (appendonly yes).";
    "shoal_aof_size_bytes" Gauge "Bytes of the append-only log's files (INFO aof_current_size).";
    "shoal_aof_base_size_bytes" Gauge "Bytes of the append-only log's base snapshot (INFO aof_base_size).";
    "shoal_aof_fsync_lag_bytes" Gauge "Stream bytes written to the append-only log but not yet fsynced.";
    "shoal_aof_last_write_ok" Gauge "0 when the last write or fsync of the append-only log failed.";
    "shoal_aof_rewrites_total" Counter "Compactions of the append-only log (BGREWRITEAOF and the auto rules).";
    "shoal_cluster_state_ok" ClusterGauge "1 when every slot is served (CLUSTER INFO cluster_state:ok).";
    "shoal_cluster_slots_assigned" ClusterGauge "Slots with an owner.";
    "shoal_cluster_slots_migrating" ClusterGauge "Slots being moved.";
    "shoal_cluster_known_nodes" ClusterGauge "Nodes in the cluster configuration.";
    "shoal_cluster_epoch" ClusterGauge "Epoch of the cluster configuration.";
    "shoal_cluster_slots" ClusterGauge "Slots owned, per primary (`node` id, `addr`).";
    "shoal_cluster_failovers_total" ClusterCounter "Promotions applied in the cluster (manual and automatic).";
    "shoal_raft_term" ClusterGauge "Term of the configuration group's Raft.";
    "shoal_raft_leader" ClusterGauge "Raft id of the configuration group's leader (-1: none known).";
    "shoal_raft_commit_index" ClusterGauge "Raft commit index (-1: none).";
    "shoal_raft_last_applied" ClusterGauge "Raft log index last applied (-1: none).";
    "shoal_raft_voters" ClusterGauge "Voters of the configuration group.";
    "shoal_lease_held" ClusterGauge "1 while this primary holds its write lease.";
    "shoal_lease_remaining_seconds" ClusterGauge "Time left on the write lease.";
    "shoal_lease_grants_total" ClusterCounter "Write leases granted to this node.";
    "shoal_fenced_requests_total" ClusterCounter "Requests refused because the lease had lapsed.";
    "shoal_promotions_proposed_total" ClusterCounter "Promotions this node proposed.";
    "shoal_in_sync_changes_total" ClusterCounter "Changes of this group's in-sync set this node made.";
}

/// Fills a recorder from the node's counters, one family at a time.
struct Scrape {
    recorder: PrometheusRecorder,
}

const META: Metadata<'static> = Metadata::new("shoal", metrics::Level::INFO, None);

impl Scrape {
    fn new() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        for f in FAMILIES {
            let (name, help) = (KeyName::from(f.name), SharedString::from(f.help));
            let unit = unit_of(f.name);
            match f.kind {
                Kind::Counter | Kind::ClusterCounter => recorder.describe_counter(name, unit, help),
                Kind::Gauge | Kind::ClusterGauge => recorder.describe_gauge(name, unit, help),
                Kind::Histogram => {}
            }
        }
        Scrape { recorder }
    }

    fn key(name: &'static str, labels: &[(&'static str, String)]) -> Key {
        let labels: Vec<Label> = labels
            .iter()
            .map(|(k, v)| Label::new(*k, v.clone()))
            .collect();
        Key::from_parts(name, labels)
    }

    fn counter(&self, name: &'static str, labels: &[(&'static str, String)], v: u64) {
        self.recorder
            .register_counter(&Self::key(name, labels), &META)
            .absolute(v);
    }

    fn gauge(&self, name: &'static str, labels: &[(&'static str, String)], v: f64) {
        self.recorder
            .register_gauge(&Self::key(name, labels), &META)
            .set(v);
    }
}

/// Units are in the names already (`_bytes`, `_seconds`); the exporter is told none so it adds
/// no suffix of its own.
fn unit_of(_name: &str) -> Option<Unit> {
    None
}

/// The whole text of `/metrics`.
pub fn render(srv: &ServerState, now_ms: u64) -> String {
    let s = Scrape::new();
    let none: &[(&str, String)] = &[];
    let cmds = srv.cmdstats.totals();
    for c in &cmds {
        let l = [("cmd", c.name().to_string())];
        s.counter("shoal_commands_total", &l, c.calls);
        s.counter("shoal_commands_failed_total", &l, c.failed);
        s.counter("shoal_commands_rejected_total", &l, c.rejected);
    }
    let st = &srv.stats;
    let ks = srv.ks.stats();
    for (name, v) in [
        (
            "shoal_commands_processed_total",
            st.total_commands_processed.load(),
        ),
        (
            "shoal_error_replies_total",
            st.total_error_replies.load(Relaxed),
        ),
        ("shoal_keyspace_hits_total", ks.keyspace_hits),
        ("shoal_keyspace_misses_total", ks.keyspace_misses),
        ("shoal_expired_keys_total", ks.expired_keys),
        ("shoal_evicted_keys_total", ks.evicted_keys),
        (
            "shoal_oom_rejections_total",
            st.oom_rejections.load(Relaxed),
        ),
        ("shoal_hot_shard_claims_total", srv.ks.claims().counts().0),
        ("shoal_hot_shard_moves_total", srv.ks.claims().counts().1),
        (
            "shoal_connections_received_total",
            st.total_connections_received.load(Relaxed),
        ),
        (
            "shoal_rejected_connections_total",
            st.rejected_connections.load(Relaxed),
        ),
        (
            "shoal_net_input_bytes_total",
            st.total_net_input_bytes.load(),
        ),
        (
            "shoal_net_output_bytes_total",
            st.total_net_output_bytes.load(),
        ),
        (
            "shoal_sync_full_total",
            srv.repl.counters.sync_full.load(Relaxed),
        ),
        (
            "shoal_sync_partial_ok_total",
            srv.repl.counters.sync_partial_ok.load(Relaxed),
        ),
        (
            "shoal_sync_partial_err_total",
            srv.repl.counters.sync_partial_err.load(Relaxed),
        ),
        (
            "shoal_replication_link_failures_total",
            srv.repl.counters.link_failures.load(Relaxed),
        ),
    ] {
        s.counter(name, none, v);
    }
    let proc_info = (srv.hooks.process_info)();
    let dataset = srv.ks.mem_bytes() as f64;
    let aof = &srv.persist.aof;
    s.counter("shoal_aof_rewrites_total", none, aof.rewrites.load(Relaxed));
    for (name, v) in [
        ("shoal_connected_clients", srv.connected_clients() as f64),
        (
            "shoal_blocked_clients",
            srv.blocking.blocked_clients() as f64,
        ),
        ("shoal_memory_used_bytes", srv.used_memory() as f64),
        ("shoal_memory_rss_bytes", proc_info.rss_bytes as f64),
        ("shoal_memory_max_bytes", srv.maxmemory() as f64),
        (
            "shoal_instantaneous_ops_per_second",
            st.instantaneous_ops_per_sec.load(Relaxed) as f64,
        ),
        (
            "shoal_uptime_seconds",
            now_ms.saturating_sub(srv.started_ms) as f64 / 1000.0,
        ),
        ("shoal_cluster_enabled", srv.cluster.is_some() as u8 as f64),
        ("shoal_aof_enabled", aof.enabled.load(Relaxed) as u8 as f64),
        (
            "shoal_aof_size_bytes",
            aof.current_size.load(Relaxed) as f64,
        ),
        (
            "shoal_aof_base_size_bytes",
            aof.base_size.load(Relaxed) as f64,
        ),
        (
            "shoal_aof_fsync_lag_bytes",
            aof.written_offset
                .load(Relaxed)
                .saturating_sub(aof.fsynced_offset.load(Relaxed)) as f64,
        ),
        (
            "shoal_aof_last_write_ok",
            !aof.last_write_failed.load(Relaxed) as u8 as f64,
        ),
    ] {
        s.gauge(name, none, v);
    }
    s.gauge(
        "shoal_memory_tier_bytes",
        &[("tier", "ram".to_string())],
        dataset,
    );
    let tier = shoal_commands::tier::figures(srv);
    s.gauge(
        "shoal_memory_tier_bytes",
        &[("tier", "disk".to_string())],
        tier.bytes_on_disk as f64,
    );
    s.gauge("shoal_tiered_enabled", none, tier.enabled as u8 as f64);
    s.gauge("shoal_tiered_keys_on_disk", none, tier.keys_on_disk as f64);
    s.gauge("shoal_tiered_hit_ratio", none, tier.hit_ratio());
    s.counter("shoal_tiered_writes_total", none, tier.info.writes);
    s.counter("shoal_tiered_reads_total", none, tier.info.reads);
    s.counter(
        "shoal_tiered_read_misses_total",
        none,
        tier.info.read_misses,
    );
    s.counter("shoal_tiered_promotions_total", none, tier.info.promotions);
    for db in 0..srv.ks.databases() {
        let (keys, expires) = srv.ks.db_size(db);
        // Every database is listed (a fixed, small set), so a database that empties reads 0.
        let l = [("db", db.to_string())];
        s.gauge("shoal_keys", &l, keys as f64);
        s.gauge("shoal_expiring_keys", &l, expires as f64);
    }
    replication(&s, srv, now_ms);
    if srv.cluster.is_some() {
        cluster(&s, srv);
    }
    let mut text = s.recorder.handle().render();
    durations(&mut text, &cmds);
    text
}

fn replication(s: &Scrape, srv: &ServerState, now_ms: u64) {
    let repl = &srv.repl;
    let role = repl.role();
    let primary = matches!(role, Role::Primary);
    s.gauge(
        "shoal_replication_role",
        &[("role", "primary".to_string())],
        primary as u8 as f64,
    );
    s.gauge(
        "shoal_replication_role",
        &[("role", "replica".to_string())],
        !primary as u8 as f64,
    );
    let offset = repl.offset();
    s.gauge("shoal_replication_offset_bytes", &[], offset as f64);
    s.gauge(
        "shoal_replication_link_up",
        &[],
        (!primary && repl.link_state() == LinkState::Connected) as u8 as f64,
    );
    let replicas = repl.replicas();
    s.gauge("shoal_connected_replicas", &[], replicas.len() as f64);
    // A replica's lag is against this node's own stream (its backlog's end).
    let end = repl.stream_end();
    for r in &replicas {
        let l = [(
            "replica",
            format!("{}:{}", r.ip, r.listening_port.load(Relaxed)),
        )];
        let ack = r.ack_offset.load(Relaxed);
        s.gauge("shoal_replica_acked_offset_bytes", &l, ack as f64);
        s.gauge(
            "shoal_replica_lag_bytes",
            &l,
            end.saturating_sub(ack) as f64,
        );
        // Not before its first acknowledgement (there is no time to count from).
        let last_ack_ms = r.last_ack_ms.load(Relaxed);
        if last_ack_ms > 0 {
            let since_ms = now_ms.saturating_sub(last_ack_ms);
            s.gauge("shoal_replica_lag_seconds", &l, since_ms as f64 / 1000.0);
        }
    }
}

fn cluster(s: &Scrape, srv: &ServerState) {
    let Some(cl) = &srv.cluster else {
        return;
    };
    let cfg = cl.config();
    let mono = (srv.clock.mono_ms)();
    let assigned = cfg.slots_assigned();
    let ok = assigned == shoal_keyspace::SLOTS && cl.lease.valid(mono);
    let migrating = (0..shoal_keyspace::SLOTS as u16)
        .filter(|&slot| cfg.migrating_to(slot).is_some())
        .count();
    let g = cl.group.lock().expect("group info lock").clone();
    let opt = |v: Option<u64>| v.map_or(-1.0, |v| v as f64);
    let l = &cl.lease;
    for (name, v) in [
        ("shoal_cluster_state_ok", ok as u8 as f64),
        ("shoal_cluster_slots_assigned", assigned as f64),
        ("shoal_cluster_slots_migrating", migrating as f64),
        ("shoal_cluster_known_nodes", cfg.nodes().len() as f64),
        ("shoal_cluster_epoch", cfg.epoch() as f64),
        ("shoal_raft_term", g.term as f64),
        ("shoal_raft_leader", opt(g.leader)),
        ("shoal_raft_commit_index", opt(g.commit_index)),
        ("shoal_raft_last_applied", opt(g.last_applied)),
        ("shoal_raft_voters", g.voters as f64),
        (
            "shoal_lease_held",
            (l.enforced.load(Relaxed) && l.valid(mono)) as u8 as f64,
        ),
        (
            "shoal_lease_remaining_seconds",
            l.remaining_ms(mono) as f64 / 1000.0,
        ),
    ] {
        s.gauge(name, &[], v);
    }
    for (name, v) in [
        ("shoal_cluster_failovers_total", cfg.failovers()),
        ("shoal_lease_grants_total", l.grants.load(Relaxed)),
        ("shoal_fenced_requests_total", l.refusals.load(Relaxed)),
        (
            "shoal_promotions_proposed_total",
            l.promotions_proposed.load(Relaxed),
        ),
        (
            "shoal_in_sync_changes_total",
            l.in_sync_changes.load(Relaxed),
        ),
    ] {
        s.counter(name, &[], v);
    }
    // Slots per primary: a count per node from one pass over the slot table.
    let mut owned = vec![0usize; cfg.nodes().len()];
    for slot in 0..shoal_keyspace::SLOTS as u16 {
        if let Some(n) = cfg.owner(slot)
            && let Some(i) = cfg.nodes().iter().position(|m| m.id == n.id)
        {
            owned[i] += 1;
        }
    }
    for (n, count) in cfg.nodes().iter().zip(owned) {
        if n.is_primary() {
            s.gauge(
                "shoal_cluster_slots",
                &[("node", n.id.clone()), ("addr", n.addr())],
                count as f64,
            );
        }
    }
}

/// Appends the `shoal_command_duration_seconds` histogram family (see the file's header).
fn durations(text: &mut String, cmds: &[cmdstats::CmdTotals]) {
    let name = "shoal_command_duration_seconds";
    let help = FAMILIES
        .iter()
        .find(|f| f.name == name)
        .map_or("", |f| f.help);
    if !text.is_empty() && !text.ends_with("\n\n") {
        text.push('\n');
    }
    let _ = write!(text, "# HELP {name} {help}\n# TYPE {name} histogram\n");
    for c in cmds.iter().filter(|c| c.hist_count() > 0) {
        let cmd = c.name();
        for k in 0..=DURATION_POW2_MAX {
            let le = (1u64 << k) as f64 / 1e6;
            let _ = writeln!(
                text,
                "{name}_bucket{{cmd=\"{cmd}\",le=\"{le}\"}} {}",
                c.below_pow2(k)
            );
        }
        let count = c.hist_count();
        let _ = writeln!(text, "{name}_bucket{{cmd=\"{cmd}\",le=\"+Inf\"}} {count}");
        let _ = writeln!(
            text,
            "{name}_sum{{cmd=\"{cmd}\"}} {}",
            c.hist_usec as f64 / 1e6
        );
        let _ = writeln!(text, "{name}_count{{cmd=\"{cmd}\"}} {count}");
    }
}
