//! The cluster configuration's Raft group, end to end: real nodes (`ConfigGroup`) in one process,
//! talking over the cluster bus on 127.0.0.1, each with its own temporary directory (removed at
//! the end, pass or fail). Every wait polls a condition with a deadline; nothing sleeps and hopes.
//! Also: openraft's storage test suite against the log store and state machine, and a malformed
//! bus message, which closes its connection and nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::testing::{StoreBuilder, Suite};
use openraft::{SnapshotPolicy, StorageError, StorageIOError};
use shoal_cluster::{Change, Config, Node, SlotRange};
use shoal_server::raft::log_store::LogStore;
use shoal_server::raft::state_machine::StateMachine;
use shoal_server::raft::{BusNode, ConfigGroup, Error, TypeConfig, default_raft_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// Upper bound for any single wait.
const WAIT_MAX: Duration = Duration::from_secs(20);
/// How often a waited-for condition is checked.
const POLL: Duration = Duration::from_millis(20);
/// How long a proposal that cannot commit is given before it is declared not committed.
const NO_QUORUM_WAIT: Duration = Duration::from_millis(1_500);

/// A temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("shoal-raft-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Short timers, and snapshots every few entries so that catching up from a snapshot and
/// purging the log happen in these tests too.
fn test_raft_config() -> openraft::Config {
    openraft::Config {
        heartbeat_interval: 50,
        election_timeout_min: 300,
        election_timeout_max: 600,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(10),
        max_in_snapshot_log_to_keep: 3,
        purge_batch_size: 1,
        ..default_raft_config()
    }
}

fn cluster_id(n: u64) -> String {
    format!("{:040x}", 0xc0ffee_u64 + n)
}

fn cluster_node(n: u64) -> Node {
    Node {
        id: cluster_id(n),
        ip: "127.0.0.1".into(),
        port: 7000 + n as u16,
        bus_port: 17000 + n as u16,
        replica_of: None,
        config_epoch: 0,
    }
}

fn slots(node: u64, start: u16, end: u16) -> Change {
    Change::AssignSlots {
        node: cluster_id(node),
        ranges: vec![SlotRange::new(start, end).expect("range")],
    }
}

/// Polls `done` until it holds, failing the test after [`WAIT_MAX`].
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT_MAX;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// One node of a test group: its directory outlives its runs.
struct Member {
    raft_id: u64,
    dir: TempDir,
    addr: String,
    group: Option<ConfigGroup>,
}

impl Member {
    async fn start(raft_id: u64, dir: TempDir, addr: &str) -> Member {
        let mut m = Member {
            raft_id,
            dir,
            addr: addr.to_string(),
            group: None,
        };
        m.restart().await;
        m
    }

    /// Starts the node from its directory, on its address (retrying while the port is still
    /// held by the run before, within the bound).
    async fn restart(&mut self) {
        assert!(self.group.is_none(), "node {} is running", self.raft_id);
        let deadline = Instant::now() + WAIT_MAX;
        let group = loop {
            match ConfigGroup::start(
                &self.dir.0,
                self.raft_id,
                &cluster_id(self.raft_id),
                &self.addr,
                test_raft_config(),
            )
            .await
            {
                Ok(g) => break g,
                Err(Error::Io(e)) if e.contains("in use") && Instant::now() < deadline => {
                    tokio::time::sleep(POLL).await;
                }
                Err(e) => panic!("start node {}: {e}", self.raft_id),
            }
        };
        self.addr = group.bus_addr().to_string();
        self.group = Some(group);
    }

    async fn stop(&mut self) {
        let g = self.group.take().expect("running");
        g.shutdown().await.expect("shutdown");
    }

    fn group(&self) -> &ConfigGroup {
        self.group.as_ref().expect("running")
    }

    fn config(&self) -> Arc<Config> {
        self.group().committed().borrow().clone()
    }

    fn bus_node(&self) -> BusNode {
        BusNode {
            addr: self.addr.clone(),
            node_id: cluster_id(self.raft_id),
        }
    }
}

/// A test group; every node is stopped when the test ends.
struct Group {
    members: Vec<Member>,
}

impl Group {
    /// `n` nodes (Raft ids 1..=n) started on free ports, not yet a group.
    async fn start(tag: &str, n: u64) -> Group {
        let mut members = Vec::new();
        for id in 1..=n {
            members
                .push(Member::start(id, TempDir::new(&format!("{tag}-{id}")), "127.0.0.1:0").await);
        }
        Group { members }
    }

    /// `n` nodes initialised as voters of one group, with a leader elected.
    async fn formed(tag: &str, n: u64) -> Group {
        let g = Group::start(tag, n).await;
        let voters: BTreeMap<u64, BusNode> = g
            .members
            .iter()
            .map(|m| (m.raft_id, m.bus_node()))
            .collect();
        g.members[0]
            .group()
            .initialize(voters)
            .await
            .expect("initialize");
        g.leader().await;
        g
    }

    fn member(&mut self, raft_id: u64) -> &mut Member {
        self.members
            .iter_mut()
            .find(|m| m.raft_id == raft_id)
            .expect("member")
    }

    fn running(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.group.is_some())
    }

    /// The leader every running node agrees on (waits for one).
    async fn leader(&self) -> u64 {
        let mut found = None;
        wait_until("the running nodes agree on a leader", || {
            let leaders: BTreeSet<Option<u64>> =
                self.running().map(|m| m.group().metrics().leader).collect();
            found = match leaders.into_iter().collect::<Vec<_>>()[..] {
                [Some(l)] => self
                    .running()
                    .find(|m| m.raft_id == l)
                    .filter(|m| m.group().metrics().state == "leader")
                    .map(|_| l),
                _ => None,
            };
            found.is_some()
        })
        .await;
        found.expect("leader")
    }

    /// Waits until every running node's committed configuration equals `want`.
    async fn converged_on(&self, want: &Config) {
        wait_until("every running node holds the same configuration", || {
            self.running().all(|m| *m.config() == *want)
        })
        .await;
    }

    async fn stop_all(&mut self) {
        for m in &mut self.members {
            if m.group.is_some() {
                m.stop().await;
            }
        }
    }
}

/// Proposes and expects the change to be applied.
async fn commit(m: &Member, change: Change) {
    let what = format!("{change:?}");
    match m.group().propose(change).await {
        Ok(Ok(())) => {}
        other => panic!("proposal {what} through node {}: {other:?}", m.raft_id),
    }
}

/// Three primaries and all 16384 slots split among them.
fn three_primaries() -> Vec<Change> {
    vec![
        Change::AddNode(cluster_node(1)),
        Change::AddNode(cluster_node(2)),
        Change::AddNode(cluster_node(3)),
        slots(1, 0, 5460),
        slots(2, 5461, 10922),
        slots(3, 10923, 16383),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_form_a_group_through_joint_consensus_and_agree_on_every_change() {
    let mut g = Group::start("form", 3).await;
    // One voter first, then two learners made voters (a joint configuration on the way).
    let one = BTreeMap::from([(1, g.members[0].bus_node())]);
    g.members[0]
        .group()
        .initialize(one)
        .await
        .expect("initialize");
    // Nodes 2 and 3 know of no group yet.
    wait_until("node 1 leads a group of one", || {
        g.members[0].group().metrics().state == "leader"
    })
    .await;
    for id in [2, 3] {
        let node = g.member(id).bus_node();
        g.members[0]
            .group()
            .add_learner(id, node)
            .await
            .expect("add learner");
    }
    g.members[0]
        .group()
        .change_membership(BTreeSet::from([1, 2, 3]))
        .await
        .expect("change membership");
    wait_until("every node sees three voters", || {
        g.running().all(|m| m.group().metrics().voters == [1, 2, 3])
    })
    .await;
    // A second initialisation is refused.
    let again = BTreeMap::from([(2, g.member(2).bus_node())]);
    assert!(matches!(
        g.member(2).group().initialize(again).await,
        Err(Error::Refused(_))
    ));

    // Proposals through every node: followers forward them to the leader.
    for (i, change) in three_primaries().into_iter().enumerate() {
        commit(&g.members[i % 3], change).await;
    }
    let leader = g.leader().await;
    let want = g.member(leader).config();
    assert_eq!(want.slots_assigned(), 16384);
    assert_eq!(want.size(), 3);
    assert_eq!(want.nodes().len(), 3);
    g.converged_on(&want).await;
    for m in g.running() {
        m.config().check_invariants();
        let metrics = m.group().metrics();
        assert!(metrics.term >= 1, "{metrics:?}");
        assert_eq!(metrics.leader, Some(leader));
        assert!(metrics.last_applied >= Some(6), "{metrics:?}");
    }
    wait_until("every node knows the commit index", || {
        g.running()
            .all(|m| m.group().metrics().commit_index >= Some(6))
    })
    .await;
    g.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_change_commits_as_a_no_op_and_answers_why() {
    let mut g = Group::formed("refused", 3).await;
    let leader = g.leader().await;
    let follower = g
        .running()
        .map(|m| m.raft_id)
        .find(|&id| id != leader)
        .expect("follower");
    commit(g.member(leader), Change::AddNode(cluster_node(1))).await;
    commit(g.member(leader), Change::AddNode(cluster_node(2))).await;
    commit(g.member(leader), slots(1, 0, 100)).await;
    let before = g.member(leader).config();

    // Through the leader, and through a follower (the reason crosses the forwarding hop).
    let busy = g.member(leader).group().propose(slots(2, 50, 60)).await;
    assert_eq!(busy, Ok(Err("Slot 50 is already busy".to_string())));
    let busy = g.member(follower).group().propose(slots(2, 100, 200)).await;
    assert_eq!(busy, Ok(Err("Slot 100 is already busy".to_string())));

    // Both refusals were committed (the log moved on) and changed nothing.
    let applied = g.member(leader).group().metrics().last_applied;
    wait_until("every node applied the refusals", || {
        g.running()
            .all(|m| m.group().metrics().last_applied >= applied)
    })
    .await;
    g.converged_on(&before).await;
    assert_eq!(g.member(leader).config().epoch(), before.epoch());
    g.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_voter_misses_nothing_once_restarted() {
    let mut g = Group::formed("one-down", 3).await;
    let leader = g.leader().await;
    let down = g
        .running()
        .map(|m| m.raft_id)
        .find(|&id| id != leader)
        .expect("follower");
    g.member(down).stop().await;

    // Two voters of three still commit. Enough entries for snapshots and purges to happen, so
    // the stopped node catches up from a snapshot (sent over the bus), then the log.
    for change in three_primaries() {
        commit(g.member(leader), change).await;
    }
    for n in 10..30 {
        commit(g.member(leader), Change::AddNode(cluster_node(n))).await;
    }
    let want = g.member(leader).config();
    assert_eq!(want.nodes().len(), 23);
    g.converged_on(&want).await;
    wait_until(
        "the leader took a snapshot and purged what the stopped node lacks",
        || {
            let m = g.member(leader).group().metrics();
            m.snapshot_index >= Some(15) && m.purged_index >= Some(10)
        },
    )
    .await;

    g.member(down).restart().await;
    g.converged_on(&want).await;
    wait_until(
        "the restarted node holds the snapshot it caught up from",
        || g.member(down).group().metrics().snapshot_index >= Some(15),
    )
    .await;
    g.member(down).config().check_invariants();
    // And it takes part again: a change commits on all three.
    commit(g.member(down), Change::RemoveNode(cluster_id(29))).await;
    let want = g.member(leader).config();
    assert_eq!(want.nodes().len(), 22);
    g.converged_on(&want).await;
    g.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_catches_up_from_a_snapshot_and_replaces_a_voter() {
    let mut g = Group::formed("replace", 3).await;
    let leader = g.leader().await;
    for n in 10..40 {
        commit(g.member(leader), Change::AddNode(cluster_node(n))).await;
    }
    wait_until("the leader snapshotted and purged its log", || {
        let m = g.member(leader).group().metrics();
        m.snapshot_index >= Some(20) && m.purged_index >= Some(10)
    })
    .await;
    let want = g.member(leader).config();

    // Node 4 starts empty; the log it lacks is gone, so it gets the snapshot over the bus.
    g.members
        .push(Member::start(4, TempDir::new("replace-4"), "127.0.0.1:0").await);
    let node = g.member(4).bus_node();
    g.member(leader)
        .group()
        .add_learner(4, node)
        .await
        .expect("add learner");
    g.converged_on(&want).await;
    wait_until("the new node holds the snapshot it caught up from", || {
        g.member(4).group().metrics().snapshot_index >= Some(20)
    })
    .await;

    // A voter that is not the leader leaves and node 4 takes its place (joint consensus).
    let gone = g
        .running()
        .map(|m| m.raft_id)
        .find(|&id| id != leader && id != 4)
        .expect("a follower");
    let voters: BTreeSet<u64> = [1, 2, 3, 4].into_iter().filter(|&id| id != gone).collect();
    g.member(leader)
        .group()
        .change_membership(voters.clone())
        .await
        .expect("change membership");
    g.member(gone).stop().await;
    wait_until("the remaining nodes see the new voters", || {
        g.running()
            .all(|m| m.group().metrics().voters == voters.iter().copied().collect::<Vec<_>>())
    })
    .await;
    commit(g.member(4), Change::RemoveNode(cluster_id(39))).await;
    let want = g.member(leader).config();
    assert_eq!(want.nodes().len(), 29);
    g.converged_on(&want).await;
    g.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_voters_of_three_stopped_block_commits_until_one_returns() {
    let mut g = Group::formed("two-down", 3).await;
    let leader = g.leader().await;
    commit(g.member(leader), Change::AddNode(cluster_node(1))).await;
    let followers: Vec<u64> = g
        .running()
        .map(|m| m.raft_id)
        .filter(|&id| id != leader)
        .collect();
    for &id in &followers {
        g.member(id).stop().await;
    }
    let before = g.member(leader).config();

    // One voter of three: the proposal is in the leader's log but cannot commit.
    let started = Instant::now();
    let r = g
        .member(leader)
        .group()
        .propose_within(Change::AddNode(cluster_node(2)), NO_QUORUM_WAIT)
        .await;
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    assert!(started.elapsed() < NO_QUORUM_WAIT + Duration::from_secs(2));
    assert_eq!(*g.member(leader).config(), *before, "nothing committed");

    // A second voter back: the pending change commits, and new ones too.
    g.member(followers[0]).restart().await;
    wait_until("the pending change commits", || {
        g.member(leader).config().node(&cluster_id(2)).is_some()
    })
    .await;
    let now = g.leader().await;
    commit(g.member(now), Change::AddNode(cluster_node(3))).await;
    let want = g.member(now).config();
    assert_eq!(want.nodes().len(), 3);
    g.converged_on(&want).await;
    g.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_group_restarts_from_disk_with_the_same_config() {
    let mut g = Group::formed("restart", 3).await;
    let leader = g.leader().await;
    for change in three_primaries() {
        commit(g.member(leader), change).await;
    }
    for n in 10..20 {
        commit(g.member(leader), Change::AddNode(cluster_node(n))).await;
    }
    let want = g.member(leader).config();
    g.converged_on(&want).await;
    g.stop_all().await;

    for m in &mut g.members {
        m.restart().await;
    }
    g.converged_on(&want).await;
    let leader = g.leader().await;
    for m in g.running() {
        m.config().check_invariants();
        assert_eq!(m.group().metrics().voters, [1, 2, 3]);
    }
    commit(g.member(leader), Change::RemoveNode(cluster_id(19))).await;
    assert_eq!(
        g.member(leader).config().nodes().len(),
        want.nodes().len() - 1
    );
    g.stop_all().await;
}

/// A node alone in a group it formed leaves it (`restart_fresh`: what `CLUSTER MEET` does for
/// a node `redis-cli --cluster create` gave slots before meeting the others): its log and
/// snapshot are gone, its watchers see an empty configuration and then, once another group
/// adds it, that group's, which it keeps through a restart. A member of a group of several is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_alone_in_its_group_starts_afresh_and_joins_another_group() {
    let mut g = Group::formed("fresh", 2).await;
    let leader = g.leader().await;
    for n in 1..=2 {
        commit(g.member(leader), Change::AddNode(cluster_node(n))).await;
    }
    commit(g.member(leader), slots(1, 0, 16383)).await;
    assert!(matches!(
        g.member(leader).group().restart_fresh().await,
        Err(Error::Refused(_))
    ));

    let mut lone = Member::start(3, TempDir::new("fresh-3"), "127.0.0.1:0").await;
    let me = BTreeMap::from([(3, lone.bus_node())]);
    lone.group().initialize(me).await.expect("initialize");
    wait_until("the lone node leads its group", || {
        lone.group().metrics().state == "leader"
    })
    .await;
    commit(&lone, Change::AddNode(cluster_node(3))).await;
    commit(&lone, slots(3, 0, 100)).await;
    let mut watcher = lone.group().committed();
    assert_eq!(watcher.borrow_and_update().nodes().len(), 1);

    lone.group().restart_fresh().await.expect("restart fresh");
    let m = lone.group().metrics();
    assert!(m.voters.is_empty() && m.learners.is_empty(), "{m:?}");
    assert_eq!(*lone.config(), Config::new());
    let mut files: Vec<String> = std::fs::read_dir(lone.dir.0.join("raft"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert!(
        files
            .iter()
            .all(|f| f == "identity" || f == "log" || f == "meta"),
        "{files:?}"
    );
    assert_eq!(
        std::fs::metadata(lone.dir.0.join("raft").join("log")).map_or(0, |m| m.len()),
        0
    );

    let node = lone.bus_node();
    g.member(leader)
        .group()
        .add_learner(3, node)
        .await
        .expect("add learner");
    commit(g.member(leader), Change::AddNode(cluster_node(3))).await;
    let want = g.member(leader).config();
    wait_until("the node that left its group applies the other's", || {
        *lone.config() == *want
    })
    .await;
    // The receiver taken before it left its group follows the new one.
    assert_eq!(**watcher.borrow_and_update(), *want);
    lone.stop().await;
    lone.restart().await;
    wait_until("the restarted node loads the group it joined", || {
        *lone.config() == *want
    })
    .await;
    lone.stop().await;
    g.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_bus_message_closes_its_connection_and_nothing_else() {
    let mut g = Group::formed("malformed", 1).await;
    let addr = g.member(1).addr.clone();
    for garbage in [
        &b"*1\r\n$4\r\nPING\r\n"[..],
        b"*3\r\n$4\r\nRAFT\r\n$4\r\nVOTE\r\n$5\r\n{nope\r\n",
        b"*3\r\n$4\r\nRAFT\r\n$5\r\nELECT\r\n$2\r\n{}\r\n",
        b"$999999999999\r\n",
        b"hello\r\n",
    ] {
        let mut s = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        s.write_all(garbage).await.expect("write");
        let mut reply = Vec::new();
        tokio::time::timeout(WAIT_MAX, s.read_to_end(&mut reply))
            .await
            .expect("the connection is closed in time")
            .expect("read");
        assert!(
            reply.starts_with(b"-ERR "),
            "{:?}",
            String::from_utf8_lossy(&reply)
        );
    }
    commit(g.member(1), Change::AddNode(cluster_node(1))).await;
    assert_eq!(g.member(1).config().nodes().len(), 1);
    g.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_is_never_reopened_under_another_identity() {
    let mut g = Group::formed("identity", 1).await;
    g.stop_all().await;
    let dir = &g.members[0].dir.0;
    let other = ConfigGroup::start(dir, 2, &cluster_id(2), "127.0.0.1:0", test_raft_config()).await;
    match other {
        Err(Error::Io(e)) => assert!(e.contains("belongs to raft node 1"), "{e}"),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("a second identity opened the directory"),
    }
    let bad = ConfigGroup::start(dir, 1, "not-a-node-id", "127.0.0.1:0", test_raft_config()).await;
    assert!(matches!(bad, Err(Error::Refused(_))));
}

/// Builds a fresh log store and state machine in a temporary directory for openraft's suite.
struct SuiteBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for SuiteBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = TempDir::new("suite");
        let io = |e: std::io::Error| StorageError::from(StorageIOError::write(&e));
        let raft_dir: &Path = &dir.0;
        let log = LogStore::open(raft_dir).map_err(io)?;
        let (tx, _rx) = watch::channel(Arc::new(Config::new()));
        let sm = StateMachine::open(raft_dir, tx).map_err(io)?;
        Ok((dir, log, sm))
    }
}

#[test]
fn the_log_store_and_state_machine_pass_openraft_s_storage_suite() {
    Suite::test_all(SuiteBuilder).expect("openraft storage suite");
}
