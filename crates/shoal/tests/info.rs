//! INFO against the reference: a redis-server 7.0 and shoal side by side, `INFO everything`
//! parsed on both, the same sections in the same order and every Redis field name in shoal's
//! section of the same name, in Redis's order (shoal adds its own `shoal_*` fields); section
//! selection as Redis 7 (default, all, everything, several names, unknown names); and the
//! figures shoal computes checked against what the test did.

mod common;

use std::process::Command;

use common::reference::Redis;
use common::{Shoal, WAIT_MAX, info_value, q};

/// Sections whose lines are per command (`cmdstat_*`, `latency_percentiles_usec_*`): compared by
/// name only, and allowed to be absent while they are built apart.
const PER_COMMAND_SECTIONS: &[&str] = &["commandstats", "latencystats"];

/// Field names that depend on what the instance did (one line per command, error, database or
/// replica): not compared.
const DYNAMIC_PREFIXES: &[&str] = &["cmdstat_", "errorstat_", "latency_percentiles_usec_"];

/// INFO text → sections in order, each with its field names in order.
fn parse(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(name) = line.strip_prefix("# ") {
            out.push((name.to_ascii_lowercase(), Vec::new()));
        } else if let Some((field, _)) = line.split_once(':') {
            out.last_mut()
                .expect("a field before any section header")
                .1
                .push(field.to_string());
        }
    }
    out
}

fn info(c: &mut redis::Connection, args: &[&str]) -> String {
    let mut cmd = redis::cmd("INFO");
    for a in args {
        cmd.arg(*a);
    }
    cmd.query(c).expect("INFO")
}

fn section_names(text: &str) -> Vec<String> {
    parse(text).into_iter().map(|(s, _)| s).collect()
}

/// Drops the per-command sections, which may be absent from shoal's reply.
fn without_per_command(names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter(|s| !PER_COMMAND_SECTIONS.contains(&s.as_str()))
        .cloned()
        .collect()
}

/// Whether `sub` appears in `seq` in the same order.
fn is_subsequence(sub: &[String], seq: &[String]) -> bool {
    let mut it = seq.iter();
    sub.iter().all(|s| it.any(|x| x == s))
}

/// The same traffic on both servers, so sections that list what happened are not empty.
fn exercise(c: &mut redis::Connection) {
    let _: () = q(c, &["SET", "k", "v"]);
    let _: () = q(c, &["SET", "t", "v", "EX", "1000"]);
    let _: Option<String> = q(c, &["GET", "k"]);
    let _: Option<String> = q(c, &["GET", "missing"]);
    let _ = redis::cmd("LPUSH").arg("k").arg("x").query::<i64>(c);
}

#[test]
fn info_everything_has_every_redis_section_and_field_in_order() {
    let redis = Redis::start();
    let shoal = Shoal::start(&[]);
    let (mut rc, mut sc) = (redis.client(), shoal.client());
    exercise(&mut rc);
    exercise(&mut sc);
    let theirs = parse(&info(&mut rc, &["everything"]));
    let ours = parse(&info(&mut sc, &["everything"]));
    let their_names: Vec<String> = theirs.iter().map(|(s, _)| s.clone()).collect();
    let our_names: Vec<String> = ours.iter().map(|(s, _)| s.clone()).collect();
    assert_eq!(their_names.len(), 13, "redis-server 7.0 has 13 sections");
    assert_eq!(
        without_per_command(&our_names),
        without_per_command(&their_names),
        "sections in Redis's order"
    );
    assert!(
        is_subsequence(&our_names, &their_names),
        "per-command sections, when present, sit where Redis has them: {our_names:?}"
    );
    let mut compared = 0;
    for (section, their_fields) in &theirs {
        if PER_COMMAND_SECTIONS.contains(&section.as_str()) {
            continue;
        }
        let our_fields = &ours
            .iter()
            .find(|(s, _)| s == section)
            .unwrap_or_else(|| panic!("no section {section}"))
            .1;
        let wanted: Vec<String> = their_fields
            .iter()
            .filter(|f| !DYNAMIC_PREFIXES.iter().any(|p| f.starts_with(p)))
            .filter(|f| !(section == "keyspace" && f.starts_with("db")))
            .filter(|f| !(section == "replication" && f.starts_with("slave")))
            .cloned()
            .collect();
        let missing: Vec<&String> = wanted.iter().filter(|f| !our_fields.contains(f)).collect();
        assert!(missing.is_empty(), "# {section}: shoal lacks {missing:?}");
        let ours_in_order: Vec<String> = our_fields
            .iter()
            .filter(|f| wanted.contains(f))
            .cloned()
            .collect();
        assert_eq!(ours_in_order, wanted, "# {section}: Redis's field order");
        // Besides Redis's fields, only shoal's own.
        let extra: Vec<&String> = our_fields
            .iter()
            .filter(|f| !their_fields.contains(f))
            .filter(|f| !f.starts_with("shoal_") && !f.starts_with("errorstat_"))
            .filter(|f| !(section == "keyspace" && f.starts_with("db")))
            .collect();
        // Later Redis versions' fields for features shoal has: 7.2's buffer-limit counters, 7.4's
        // hash-field expiry count.
        assert!(
            extra.iter().all(|f| (f.starts_with("client_")
                && f.ends_with("_buffer_limit_disconnections"))
                || *f == "expired_subkeys"),
            "# {section}: fields Redis 7.0 does not have: {extra:?}"
        );
        compared += wanted.len();
    }
    // 181 in redis-server 7.0.15 once per-command, per-error and per-db lines are left out.
    assert!(compared >= 180, "compared {compared} fields");
}

#[test]
fn info_selects_sections_as_redis_7_does() {
    let redis = Redis::start();
    let shoal = Shoal::start(&[]);
    let (mut rc, mut sc) = (redis.client(), shoal.client());
    let cases: &[&[&str]] = &[
        &[],
        &["default"],
        &["all"],
        &["everything"],
        &["server", "clients"],
        &["KEYSPACE", "Server"],
        &["modules"],
        &["cpu", "nosuch"],
        &["default", "commandstats"],
        &["all", "server"],
    ];
    for args in cases {
        let theirs = section_names(&info(&mut rc, args));
        let ours = section_names(&info(&mut sc, args));
        assert_eq!(
            without_per_command(&ours),
            without_per_command(&theirs),
            "INFO {args:?}"
        );
    }
    // An unknown section: an empty reply, not an error.
    assert_eq!(info(&mut rc, &["nosuch"]), "");
    assert_eq!(info(&mut sc, &["nosuch"]), "");
    let mut raw = shoal.raw();
    assert_eq!(raw.call(&["INFO", "nosuch"]), "$0\r\n\r\n");
}

fn field(text: &str, name: &str) -> String {
    info_value(text, name).unwrap_or_else(|| panic!("no field {name} in INFO"))
}

fn num(text: &str, name: &str) -> f64 {
    field(text, name)
        .trim_end_matches('%')
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number"))
}

#[test]
fn info_figures_follow_what_the_server_did() {
    let shoal = Shoal::start(&[]);
    let mut c = shoal.client();
    let before = info(&mut c, &["everything"]);
    // A value large enough to move used memory, the peak and the dataset.
    let big = "x".repeat(4 << 20);
    let _: () = q(&mut c, &["SET", "big", &big]);
    for i in 0..100 {
        let _: () = q(&mut c, &["SET", &format!("k{i}"), "v", "EX", "1000"]);
    }
    for i in 0..30 {
        let _: Option<String> = q(&mut c, &["GET", &format!("k{i}")]);
    }
    for i in 0..7 {
        let _: Option<String> = q(&mut c, &["GET", &format!("absent{i}")]);
    }
    let after = info(&mut c, &["everything"]);
    let used = num(&after, "used_memory");
    let peak = num(&after, "used_memory_peak");
    assert!(peak >= used, "the peak is at least what is used now");
    assert!(used - num(&before, "used_memory") > 4e6, "4 MiB more used");
    assert!(num(&after, "used_memory_dataset") > 4e6);
    assert_eq!(
        num(&after, "used_memory_overhead"),
        used - num(&after, "used_memory_dataset")
    );
    assert!(num(&after, "used_memory_startup") > 0.0);
    assert!(num(&after, "used_memory_startup") <= num(&before, "used_memory"));
    let rss = num(&after, "used_memory_rss");
    assert!(rss > used);
    assert_eq!(num(&after, "mem_fragmentation_bytes"), rss - used);
    assert!(num(&after, "total_system_memory") > rss);
    assert!(
        num(&after, "allocator_active") >= used,
        "mimalloc's committed pages"
    );
    assert!(field(&after, "mem_allocator").starts_with("mimalloc-"));
    // Deleting the big value leaves the peak where it was.
    let _: i64 = q(&mut c, &["DEL", "big"]);
    let later = info(&mut c, &["memory"]);
    assert!(num(&later, "used_memory") < used - 4e6);
    assert!(num(&later, "used_memory_peak") >= peak);
    assert!(num(&later, "used_memory_peak_perc") < 50.0);
    // Stats: hits and misses of this test's reads, reads and writes of its requests.
    let d = |name: &str| num(&after, name) - num(&before, name);
    assert_eq!(d("keyspace_hits"), 30.0);
    assert_eq!(d("keyspace_misses"), 7.0);
    assert_eq!(
        d("total_commands_processed"),
        139.0,
        "138 commands and the first INFO"
    );
    assert!(d("total_reads_processed") >= 138.0);
    assert!(d("total_writes_processed") >= 138.0);
    assert!(d("total_net_input_bytes") > 4e6);
    // Keyspace and CPU.
    let db0 = field(&after, "db0");
    let (counts, avg_ttl) = db0.rsplit_once(",avg_ttl=").expect("avg_ttl");
    assert_eq!(counts, "keys=101,expires=100", "the keyspace line");
    // 100 keys with 1000 s to live, set moments ago: their average TTL in ms.
    let avg_ttl: u64 = avg_ttl.parse().expect("avg_ttl");
    assert!((990_000..=1_000_000).contains(&avg_ttl), "{db0}");
    assert!(num(&after, "used_cpu_user") + num(&after, "used_cpu_sys") > 0.0);
    num(&after, "used_cpu_user_main_thread");
    num(&after, "used_cpu_sys_main_thread");
    // The server section names the machine as uname does.
    let uname = Command::new("uname").args(["-s", "-r", "-m"]).output();
    if let Ok(out) = uname {
        assert_eq!(
            field(&after, "os"),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    assert_eq!(field(&after, "redis_mode"), "standalone");
    assert_eq!(num(&after, "connected_clients"), 1.0);
    assert!(num(&after, "client_recent_max_input_buffer") > 4e6);
    // A SAVE shows in the persistence section.
    assert_eq!(field(&after, "rdb_saves"), "0");
    assert_eq!(field(&after, "rdb_last_bgsave_time_sec"), "-1");
    let _: () = q(&mut c, &["SAVE"]);
    let saved = info(&mut c, &["persistence"]);
    assert_eq!(field(&saved, "rdb_saves"), "1");
    assert_eq!(field(&saved, "rdb_last_bgsave_status"), "ok");
    assert_eq!(field(&saved, "rdb_bgsave_in_progress"), "0");
    assert!(num(&saved, "rdb_last_bgsave_time_sec") >= 0.0);
}

#[test]
fn instantaneous_throughput_moves_with_traffic() {
    let shoal = Shoal::start(&[]);
    let mut c = shoal.client();
    let value = "v".repeat(10_000);
    // Sustained input for as long as it takes the once-a-second sample to see it (bounded).
    let deadline = std::time::Instant::now() + WAIT_MAX;
    let mut seen = None;
    while std::time::Instant::now() < deadline {
        for _ in 0..20 {
            let _: () = q(&mut c, &["SET", "k", &value]);
        }
        let text = info(&mut c, &["stats"]);
        let kbps = num(&text, "instantaneous_input_kbps");
        if kbps > 10.0 && num(&text, "instantaneous_ops_per_sec") > 0.0 {
            seen = Some(kbps);
            break;
        }
    }
    assert!(
        seen.is_some(),
        "instantaneous_input_kbps never reflected the traffic"
    );
}

#[test]
fn a_replica_shows_redis_replication_fields() {
    let (rp, rr) = (Redis::start(), Redis::start());
    let (sp, sr) = (Shoal::start(&[]), Shoal::start(&[]));
    let (mut rc, mut sc) = (rr.client(), sr.client());
    let _: () = q(&mut rc, &["REPLICAOF", "127.0.0.1", &rp.port.to_string()]);
    let _: () = q(&mut sc, &["REPLICAOF", "127.0.0.1", &sp.port.to_string()]);
    for c in [&mut rc, &mut sc] {
        common::wait_until("the replica's link is up", || {
            info_value(&info(c, &["replication"]), "master_link_status").as_deref() == Some("up")
        });
    }
    let fields_of = |c: &mut redis::Connection| -> Vec<String> {
        parse(&info(c, &["replication"]))
            .remove(0)
            .1
            .into_iter()
            .filter(|f| !f.starts_with("shoal_"))
            .collect()
    };
    assert_eq!(fields_of(&mut sc), fields_of(&mut rc));
    // HELLO names the role as INFO does.
    let role = "$4\r\nrole\r\n$7\r\nreplica\r\n";
    let theirs = common::Raw::connect(&format!("127.0.0.1:{}", rr.port)).call(&["HELLO", "2"]);
    let ours = sr.raw().call(&["HELLO", "2"]);
    assert!(
        theirs.contains(role) && ours.contains(role),
        "{theirs:?} {ours:?}"
    );
    // The primaries list their replica the same way.
    let line = |c: &mut redis::Connection| info_value(&info(c, &["replication"]), "slave0");
    let (theirs, ours) = (line(&mut rp.client()), line(&mut sp.client()));
    let keys = |l: Option<String>| -> Vec<String> {
        l.expect("slave0")
            .split(',')
            .map(|kv| kv.split('=').next().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(keys(ours), keys(theirs));
}
