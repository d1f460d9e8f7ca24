//! Active-active groups over the wire: real shoal processes on loopback joined with
//! `active-peers`, written concurrently on every member, then checked for convergence (equal slot
//! digests, polled with a deadline), no lost increments, no resurrected deletes, links that drop
//! (CLIENT KILL, kill -9 and restart) and come back, and `shoal verify` on the group.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Shoal, q};

/// How long a group may take to converge once writes stop.
const CONVERGE_MAX: Duration = Duration::from_secs(20);

fn digests(s: &Shoal) -> Vec<String> {
    let mut c = s.client();
    q(&mut c, &["SLOTDIGEST", "0", "16383"])
}

/// Starts `n` members and joins each to all the others.
fn group(n: usize) -> Vec<Shoal> {
    let members: Vec<Shoal> = (0..n).map(|_| Shoal::start(&[])).collect();
    join(&members);
    members
}

/// Sets every member's `active-peers` to the others.
fn join(members: &[Shoal]) {
    for (i, m) in members.iter().enumerate() {
        let peers: Vec<String> = members
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| p.addr())
            .collect();
        let mut c = m.client();
        let _: () = q(&mut c, &["CONFIG", "SET", "active-peers", &peers.join(" ")]);
    }
}

fn peers_connected(m: &Shoal, n: usize) -> bool {
    let mut c = m.client();
    let text: String = q(&mut c, &["INFO", "active"]);
    text.lines()
        .filter(|l| l.starts_with("active_peer") && l.contains("state=connected"))
        .count()
        == n
}

fn wait_connected(members: &[Shoal]) {
    let deadline = Instant::now() + CONVERGE_MAX;
    for m in members {
        while !peers_connected(m, members.len() - 1) {
            assert!(Instant::now() < deadline, "peer links did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Polls until every member shows the same slot digests; panics after [`CONVERGE_MAX`].
fn converge(members: &[Shoal]) {
    let deadline = Instant::now() + CONVERGE_MAX;
    loop {
        let first = digests(&members[0]);
        if members[1..].iter().all(|m| digests(m) == first) {
            return;
        }
        if Instant::now() >= deadline {
            for m in members {
                eprintln!("member {}: {}", m.addr(), describe(m));
            }
            panic!("members did not converge within {CONVERGE_MAX:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every key's type, version, TTL and value, for a failure's message.
fn describe(m: &Shoal) -> String {
    let mut c = m.client();
    let keys: Vec<String> = q(&mut c, &["KEYS", "*"]);
    let mut out = String::new();
    let mut keys = keys;
    keys.sort();
    for k in keys {
        let ty: String = q(&mut c, &["TYPE", &k]);
        let ver: redis::Value = q(&mut c, &["GETVER", &k]);
        let ttl: i64 = q(&mut c, &["PEXPIRETIME", &k]);
        let v: redis::Value = match ty.as_str() {
            "string" => q(&mut c, &["GET", &k]),
            "set" => q(&mut c, &["SORT", &k, "ALPHA"]),
            "hash" => q(&mut c, &["HGETALL", &k]),
            "zset" => q(&mut c, &["ZRANGE", &k, "0", "-1", "WITHSCORES"]),
            "list" => q(&mut c, &["LRANGE", &k, "0", "-1"]),
            _ => redis::Value::Nil,
        };
        out.push_str(&format!("\n  {k} {ty} ver={ver:?} exp={ttl} {v:?}"));
    }
    out
}

fn verify(member: &Shoal) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["verify", "--quiet", &member.addr()])
        .output()
        .expect("run shoal verify");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Writes of every merged type from `clients` threads per member (bounded loops); returns the
/// increments made to `cnt` and to hash field `h`/`f`.
fn write_everything(members: &[Shoal], clients: usize, rounds: usize) -> (i64, i64) {
    let mut handles = Vec::new();
    for (mi, m) in members.iter().enumerate() {
        for ci in 0..clients {
            let url = m.url();
            handles.push(std::thread::spawn(move || {
                let mut c = common::connect(url);
                let mut rng = common::Rng::new((mi * 100 + ci) as u64 + 1);
                let (mut inc, mut hinc) = (0i64, 0i64);
                for i in 0..rounds {
                    let by = rng.below(5) as i64 - 1;
                    let _: i64 = q(&mut c, &["INCRBY", "cnt", &by.to_string()]);
                    inc += by;
                    let _: i64 = q(&mut c, &["HINCRBY", "h", "f", "2"]);
                    hinc += 2;
                    let m = format!("m{}", rng.below(20));
                    if rng.below(3) == 0 {
                        let _: i64 = q(&mut c, &["SREM", "set", &m]);
                        let _: i64 = q(&mut c, &["ZREM", "z", &m]);
                        let _: i64 = q(&mut c, &["HDEL", "h2", &m]);
                    } else {
                        let _: i64 = q(&mut c, &["SADD", "set", &m]);
                        let score = format!("{}", rng.below(100));
                        let _: i64 = q(&mut c, &["ZADD", "z", &score, &m]);
                        let _: i64 = q(&mut c, &["HSET", "h2", &m, &format!("{mi}-{i}")]);
                    }
                    let _: () = q(&mut c, &["SET", "str", &format!("{mi}-{ci}-{i}")]);
                    let _: i64 = q(&mut c, &["RPUSH", "list", &format!("{mi}-{i}")]);
                    if i % 10 == 0 {
                        let _: i64 = q(&mut c, &["DEL", "list"]);
                        let _: i64 = q(&mut c, &["PEXPIRE", "str", "600000"]);
                    }
                    let _: String = q(&mut c, &["INCRBYFLOAT", "fl", "0.5"]);
                }
                (inc, hinc)
            }));
        }
    }
    handles
        .into_iter()
        .map(|h| h.join().expect("writer"))
        .fold((0, 0), |(a, b), (x, y)| (a + x, b + y))
}

fn get(m: &Shoal, args: &[&str]) -> Option<String> {
    let mut c = m.client();
    q(&mut c, args)
}

#[test]
fn two_members_written_concurrently_converge_without_losing_increments() {
    let members = group(2);
    wait_connected(&members);
    let (inc, hinc) = write_everything(&members, 2, 150);
    converge(&members);
    for m in &members {
        assert_eq!(
            get(m, &["GET", "cnt"]),
            Some(inc.to_string()),
            "no lost INCR"
        );
        assert_eq!(get(m, &["HGET", "h", "f"]), Some(hinc.to_string()));
        // 4 clients × 150 × 0.5.
        assert_eq!(get(m, &["GET", "fl"]), Some("300".to_string()));
    }
    let (code, out) = verify(&members[0]);
    assert_eq!(code, 0, "verify: {out}");
    assert!(
        out.contains("verified 1 replica(s): 0 differing key(s)"),
        "{out}"
    );
    // A member cannot also be a replica: its stream carries merge effects.
    let mut c = members[0].client();
    let r: redis::RedisResult<()> = common::try_q(&mut c, &["REPLICAOF", "127.0.0.1", "1"]);
    assert!(r.is_err());
}

#[test]
fn three_members_converge_and_a_killed_link_resumes_from_the_backlog() {
    let members = group(3);
    wait_connected(&members);
    let (inc, _) = write_everything(&members, 1, 60);
    // Drop every link served by member 1 while the others keep writing: they continue from
    // member 1's backlog (a partial resync).
    let mut c1 = members[1].client();
    let _: i64 = q(&mut c1, &["CLIENT", "KILL", "TYPE", "replica"]);
    let (inc2, _) = write_everything(&members, 1, 40);
    converge(&members);
    for m in &members {
        assert_eq!(get(m, &["GET", "cnt"]), Some((inc + inc2).to_string()));
    }
    let mut partial = 0;
    for i in [0, 2] {
        let mut c = members[i].client();
        let text: String = q(&mut c, &["INFO", "active"]);
        let line = text
            .lines()
            .find(|l| l.contains(&members[1].addr()))
            .expect("peer line")
            .to_string();
        let n: u64 = line
            .split(',')
            .find_map(|f| f.strip_prefix("partial_syncs="))
            .and_then(|v| v.parse().ok())
            .expect("partial_syncs");
        partial += n;
    }
    assert!(
        partial >= 2,
        "both links to member 1 resumed by partial resync"
    );
    let (code, out) = verify(&members[2]);
    assert_eq!(code, 0, "verify: {out}");
    assert!(
        out.contains("verified 2 replica(s): 0 differing key(s)"),
        "{out}"
    );
}

#[test]
fn a_delete_is_not_undone_by_a_write_its_member_made_before_seeing_it() {
    let members = group(3);
    wait_connected(&members);
    let mut a = members[0].client();
    let _: i64 = q(&mut a, &["SADD", "k", "a"]);
    let _: i64 = q(&mut a, &["INCRBY", "n", "5"]);
    converge(&members);
    // Cut member 2 off: nobody pulls from it, it pulls from nobody.
    let mut c2 = members[2].client();
    let _: () = q(&mut c2, &["CONFIG", "SET", "active-peers", "127.0.0.1:1"]);
    for m in &members[..2] {
        let mut c = m.client();
        let other = if m.port == members[0].port { 1 } else { 0 };
        let _: () = q(
            &mut c,
            &["CONFIG", "SET", "active-peers", &members[other].addr()],
        );
    }
    // Member 2 writes the key on top of what it saw; then member 0 deletes it, later.
    let _: i64 = q(&mut c2, &["SADD", "k", "b"]);
    let _: i64 = q(&mut c2, &["INCR", "n"]);
    std::thread::sleep(Duration::from_millis(5));
    let _: i64 = q(&mut a, &["DEL", "k", "n"]);
    // Heal: every member pulls from every other again.
    join(&members);
    wait_connected(&members);
    converge(&members);
    for m in &members {
        assert_eq!(
            get(m, &["TYPE", "k"]),
            Some("none".to_string()),
            "no resurrection"
        );
        assert_eq!(get(m, &["GET", "n"]), None);
        let mut c = m.client();
        let held = common::info_u64(&mut c, "active", "active_tombstones");
        let collected = common::info_u64(&mut c, "active", "active_tombstones_collected");
        assert!(held + collected >= 2, "the deletes were held as tombstones");
    }
    // A write after the delete is kept everywhere.
    let mut c2 = members[2].client();
    let _: i64 = q(&mut c2, &["SADD", "k", "c"]);
    converge(&members);
    for m in &members {
        let mut c = m.client();
        let got: Vec<String> = q(&mut c, &["SMEMBERS", "k"]);
        assert_eq!(got, vec!["c".to_string()]);
    }
    // Every member has merged the deletions: each collects its tombstones.
    for m in &members {
        let mut c = m.client();
        let deadline = Instant::now() + CONVERGE_MAX;
        while common::info_u64(&mut c, "active", "active_tombstones") > 0 {
            assert!(Instant::now() < deadline, "tombstones were not collected");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(common::info_u64(&mut c, "active", "active_tombstones_collected") >= 1);
    }
}

#[test]
fn a_member_killed_and_restarted_gets_the_group_state_back_and_converges() {
    let mut members = group(2);
    wait_connected(&members);
    let (inc, _) = write_everything(&members, 1, 50);
    converge(&members);
    members[1].signal("-KILL");
    common::wait_until("killed", || !members[1].is_running());
    // The survivor keeps writing; the restarted member (empty, on a new port) joins the group.
    let mut a = members[0].client();
    let _: i64 = q(&mut a, &["INCRBY", "cnt", "7"]);
    members[1] = Shoal::start(&[]);
    join(&members);
    wait_connected(&members);
    converge(&members);
    let mut b = members[1].client();
    let _: i64 = q(&mut b, &["INCRBY", "cnt", "3"]);
    converge(&members);
    for m in &members {
        assert_eq!(get(m, &["GET", "cnt"]), Some((inc + 10).to_string()));
    }
    let (code, out) = verify(&members[1]);
    assert_eq!(code, 0, "verify: {out}");
}

#[test]
fn a_member_restarted_from_its_snapshot_loses_no_increment_made_while_it_was_down() {
    let dir = std::env::temp_dir().join(format!("shoal-active-snap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir_arg = format!("dir={}", dir.display());
    let mut members = vec![Shoal::start(&[]), Shoal::start(&["--set", &dir_arg])];
    join(&members);
    wait_connected(&members);
    let (mut a, mut b) = (members[0].client(), members[1].client());
    let _: i64 = q(&mut a, &["INCRBY", "c", "5"]);
    let _: i64 = q(&mut b, &["INCRBY", "c", "3"]);
    let _: () = q(&mut b, &["SET", "s", "v"]);
    converge(&members);
    let _: () = q(&mut b, &["SAVE"]);
    members[1].signal("-KILL");
    common::wait_until("killed", || !members[1].is_running());
    // While member 1 is down, member 0 increments; member 1 comes back from its snapshot
    // (which says 8) on a new port and increments too.
    let _: i64 = q(&mut a, &["INCR", "c"]);
    members[1] = Shoal::start(&["--set", &dir_arg]);
    join(&members);
    wait_connected(&members);
    converge(&members);
    let mut b = members[1].client();
    let _: i64 = q(&mut b, &["INCR", "c"]);
    converge(&members);
    for m in &members {
        assert_eq!(get(m, &["GET", "c"]), Some("10".to_string()));
        assert_eq!(get(m, &["GET", "s"]), Some("v".to_string()));
    }
    drop(members);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Cuts every member off from every other (nobody pulls from anybody).
fn cut(members: &[Shoal]) {
    for m in members {
        let mut c = m.client();
        let _: () = q(&mut c, &["CONFIG", "SET", "active-peers", "127.0.0.1:1"]);
    }
}

fn dbsize(m: &Shoal) -> i64 {
    let mut c = m.client();
    q(&mut c, &["DBSIZE"])
}

#[test]
fn a_flushall_resets_every_key_on_every_member_and_later_writes_survive_it() {
    let members = group(2);
    wait_connected(&members);
    let (mut a, mut b) = (members[0].client(), members[1].client());
    for i in 0..50 {
        let _: () = q(&mut a, &["SET", &format!("a{i}"), "v"]);
        let _: i64 = q(&mut b, &["SADD", &format!("s{i}"), "m"]);
    }
    let _: i64 = q(&mut b, &["INCRBY", "n", "5"]);
    let _: () = q(&mut b, &["SELECT", "1"]);
    let _: () = q(&mut b, &["SET", "in-db-1", "v"]);
    converge(&members);
    // Cut apart, member 1 writes keys before member 0's flush (in version order), then heals:
    // the flush resets them too, whatever order the effects arrive in.
    cut(&members);
    let _: () = q(&mut b, &["SELECT", "0"]);
    let _: () = q(&mut b, &["SET", "a1", "made-before-the-flush"]);
    let _: i64 = q(&mut b, &["INCR", "n"]);
    std::thread::sleep(Duration::from_millis(5));
    let _: () = q(&mut a, &["FLUSHALL"]);
    assert_eq!(dbsize(&members[0]), 0);
    join(&members);
    wait_connected(&members);
    converge(&members);
    for m in &members {
        assert_eq!(dbsize(m), 0, "the flush reached every key");
        let mut c = m.client();
        let _: () = q(&mut c, &["SELECT", "1"]);
        let n: i64 = q(&mut c, &["DBSIZE"]);
        assert_eq!(n, 0, "FLUSHALL empties every database");
    }
    // Writes after the flush, on either member, survive it everywhere.
    let _: () = q(&mut b, &["SET", "after", "1"]);
    let _: i64 = q(&mut a, &["INCRBY", "n", "2"]);
    converge(&members);
    for m in &members {
        assert_eq!(get(m, &["GET", "after"]), Some("1".to_string()));
        assert_eq!(get(m, &["GET", "n"]), Some("2".to_string()));
    }
    // FLUSHDB resets one database only.
    let _: () = q(&mut a, &["SELECT", "2"]);
    let _: () = q(&mut a, &["SET", "x", "1"]);
    converge(&members);
    let _: () = q(&mut b, &["SELECT", "2"]);
    let _: () = q(&mut b, &["FLUSHDB"]);
    converge(&members);
    for m in &members {
        assert_eq!(dbsize(m), 2, "database 0 kept its keys");
        let mut c = m.client();
        let _: () = q(&mut c, &["SELECT", "2"]);
        let n: i64 = q(&mut c, &["DBSIZE"]);
        assert_eq!(n, 0);
    }
    // The group checks out: no key differs.
    let (code, out) = verify(&members[0]);
    assert_eq!(code, 0, "verify: {out}");
}

#[test]
fn swapdb_is_refused_on_a_member() {
    let members = group(2);
    wait_connected(&members);
    let mut c = members[0].client();
    let r: redis::RedisResult<()> = common::try_q(&mut c, &["SWAPDB", "0", "1"]);
    let e = r.expect_err("refused");
    assert!(
        e.to_string()
            .contains("SWAPDB is not allowed in an active-active group"),
        "{e}"
    );
    // Outside a group it works.
    let plain = Shoal::start(&[]);
    let mut p = plain.client();
    let _: () = q(&mut p, &["SWAPDB", "0", "1"]);
}

/// `used_memory` growth per key for `n` SETs of 16-byte values to 16-byte keys made on `m`, on
/// `m` and on each of `peers` (once they hold every key).
fn bytes_per_key(m: &Shoal, peers: &[Shoal], n: usize) -> (f64, Vec<f64>) {
    let mut c = m.client();
    // Fill the replication backlog first, so its growth is not counted. Each junk value is
    // numbered and the peers are waited for before the next, so no peer ever lags by more than
    // one value and none falls out of the backlog into a full resync (which a busy machine
    // otherwise can bring about, and whose memory would then be counted below).
    let pad = "x".repeat(60_000);
    for i in 0..80 {
        let tag = format!("{i:04}");
        let _: () = q(&mut c, &["SET", "junk", &format!("{tag}{pad}")]);
        for s in peers {
            common::wait_until("the peer took the junk value", || {
                let got: Option<String> = q(&mut s.client(), &["GETRANGE", "junk", "0", "3"]);
                got.as_deref() == Some(tag.as_str())
            });
        }
    }
    let _: i64 = q(&mut c, &["DEL", "junk"]);
    let mut all = vec![m];
    all.extend(peers.iter());
    for s in peers {
        common::wait_until("the peer merged the junk", || {
            let v: Option<String> = q(&mut s.client(), &["GET", "junk"]);
            let ver: redis::Value = q(&mut s.client(), &["GETVER", "junk"]);
            v.is_none() && ver == redis::Value::Nil
        });
    }
    let used = |s: &Shoal| common::info_u64(&mut s.client(), "memory", "used_memory") as f64;
    let before: Vec<f64> = all.iter().map(|s| used(s)).collect();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut p = redis::pipe();
        for i in chunk {
            p.cmd("SET")
                .arg(format!("key:{i:012}"))
                .arg(format!("value-{i:010}"))
                .ignore();
        }
        let _: () = p.query(&mut c).expect("pipeline");
    }
    for s in peers {
        common::wait_until("the peer holds every key", || {
            let k: i64 = q(&mut s.client(), &["DBSIZE"]);
            k as usize == n
        });
    }
    let per: Vec<f64> = all
        .iter()
        .zip(&before)
        .map(|(s, b)| (used(s) - b) / n as f64)
        .collect();
    (per[0], per[1..].to_vec())
}

#[test]
fn a_string_key_on_a_member_costs_at_most_24_bytes_more_than_on_a_plain_node() {
    const KEYS: usize = 20_000;
    const BOUND: f64 = 24.0;
    // Small enough to fill first (bytes_per_key paces the fill so the peer keeps up).
    let backlog = ["--set", "repl-backlog-size=4mb"];
    let plain = Shoal::start(&backlog);
    let members: Vec<Shoal> = (0..2).map(|_| Shoal::start(&backlog)).collect();
    join(&members);
    wait_connected(&members);
    let (base, _) = bytes_per_key(&plain, &[], KEYS);
    let (local, peer) = bytes_per_key(&members[0], &members[1..], KEYS);
    eprintln!(
        "bytes per key: plain {base:.1}, member {local:.1}, its peer {:.1}",
        peer[0]
    );
    assert!(
        local - base <= BOUND,
        "a member's own SETs: {local:.1} B/key vs {base:.1} on a plain node"
    );
    // On the other member every key was written by a peer: it names its writer (8 bytes more).
    assert!(
        peer[0] - base <= BOUND + 8.0,
        "a peer's SETs: {:.1} B/key vs {base:.1} on a plain node",
        peer[0]
    );
    // The only merge state left is the deleted junk key's tombstone.
    let mut c = members[1].client();
    let keys = common::info_u64(&mut c, "active", "active_keys");
    let tombstones = common::info_u64(&mut c, "active", "active_tombstones");
    assert!(keys <= tombstones, "plain resets keep no merge state");
}
