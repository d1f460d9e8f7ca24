//! Server commands over the wire: INFO sections and the fields tools rely on, keyspace hit/miss
//! counting, CONFIG GET/SET/RESETSTAT (globs, errors, run-time effect), DBSIZE, FLUSHDB, FLUSHALL
//! SYNC/ASYNC, TIME, SLOWLOG, LATENCY, MEMORY USAGE, COMMAND COUNT/INFO/DOCS/GETKEYS/LIST; and the
//! process: SHUTDOWN and SIGTERM exit cleanly, a TOML `--config` file is read and flags override it.
//! Expected replies were checked against redis-server 7.0.15.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use common::{Shoal, info_u64, info_value, q, scratch_dir, try_q, wait_until};
use redis::Value;

#[test]
fn info_default_has_the_fields_tools_read() {
    let s = Shoal::start(&["--maxmemory", "3mb"]);
    let mut c = s.client();
    let info: String = q(&mut c, &["INFO"]);
    for section in [
        "# Server",
        "# Clients",
        "# Memory",
        "# Persistence",
        "# Stats",
        "# Replication",
        "# CPU",
        "# Errorstats",
        "# Cluster",
        "# Keyspace",
    ] {
        assert!(info.contains(section), "missing {section}");
    }
    for field in [
        "redis_version",
        "shoal_version",
        "arch_bits",
        "cluster_enabled",
        "used_memory",
        "maxmemory",
        "expired_keys",
        "evicted_keys",
        "keyspace_hits",
        "keyspace_misses",
        "connected_clients",
        "blocked_clients",
        "tcp_port",
        "uptime_in_seconds",
        "maxmemory_policy",
        "role",
    ] {
        assert!(info_value(&info, field).is_some(), "missing field {field}");
    }
    assert_eq!(info_value(&info, "redis_version").unwrap(), "7.0.15");
    assert!(!info_value(&info, "shoal_version").unwrap().is_empty());
    assert_eq!(info_value(&info, "arch_bits").unwrap(), "64");
    assert_eq!(info_value(&info, "cluster_enabled").unwrap(), "0");
    assert_eq!(info_value(&info, "maxmemory").unwrap(), "3145728");
    assert_eq!(info_value(&info, "tcp_port").unwrap(), s.port.to_string());
    assert_eq!(info_value(&info, "blocked_clients").unwrap(), "0");
    assert_eq!(info_value(&info, "connected_clients").unwrap(), "1");
    assert_eq!(
        info_value(&info, "maxmemory_policy").unwrap(),
        "allkeys-tinylfu"
    );
    let used: u64 = info_value(&info, "used_memory").unwrap().parse().unwrap();
    assert!(used > 0);
    // Lines are CRLF-terminated as in Redis.
    assert!(info.starts_with("# Server\r\n"), "{:?}", &info[..20]);
}

#[test]
fn info_sections_select_what_is_shown() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let server: String = q(&mut c, &["INFO", "server"]);
    assert!(server.starts_with("# Server\r\n"));
    assert!(!server.contains("# Clients"));
    assert!(!server.contains("used_memory:"));
    let two: String = q(&mut c, &["INFO", "SERVER", "stats"]);
    assert!(two.contains("# Server") && two.contains("# Stats"));
    assert!(!two.contains("# Memory"));
    let all: String = q(&mut c, &["INFO", "all"]);
    assert!(all.contains("# Server") && all.contains("# Keyspace"));
    let none: String = q(&mut c, &["INFO", "nosuchsection"]);
    assert_eq!(none, "");
    // The keyspace section lists databases holding keys, with expires.
    let _: () = q(&mut c, &["MSET", "a", "1", "b", "2"]);
    let _: () = q(&mut c, &["SET", "t", "1", "EX", "100"]);
    let _: () = q(&mut c, &["SELECT", "3"]);
    let _: () = q(&mut c, &["SET", "x", "1"]);
    let ks: String = q(&mut c, &["INFO", "keyspace"]);
    assert!(ks.contains("db0:keys=3,expires=1,avg_ttl="), "{ks}");
    assert!(ks.contains("db3:keys=1,expires=0,avg_ttl="), "{ks}");
    assert!(!ks.contains("db1:"), "{ks}");
}

#[test]
fn info_connected_clients_follows_connections() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    assert_eq!(info_u64(&mut c, "clients", "connected_clients"), 1);
    let extra: Vec<common::Raw> = (0..3)
        .map(|_| common::Raw::connect_ready(&s.addr()))
        .collect();
    assert_eq!(info_u64(&mut c, "clients", "connected_clients"), 4);
    drop(extra);
    wait_until("closed connections to be counted out", || {
        info_u64(&mut c, "clients", "connected_clients") == 1
    });
}

#[test]
fn keyspace_hits_and_misses_count_reads() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: () = q(&mut c, &["SET", "a", "1"]);
    let _: () = q(&mut c, &["CONFIG", "RESETSTAT"]);
    let _: String = q(&mut c, &["GET", "a"]);
    let _: Option<String> = q(&mut c, &["GET", "b"]);
    let _: Vec<Option<String>> = q(&mut c, &["MGET", "a", "b", "c"]);
    let _: i64 = q(&mut c, &["EXISTS", "a", "b"]);
    let _: i64 = q(&mut c, &["STRLEN", "a"]);
    let _: i64 = q(&mut c, &["TTL", "a"]);
    // Writes that do not return the value count nothing.
    let _: i64 = q(&mut c, &["INCR", "a"]);
    let _: i64 = q(&mut c, &["APPEND", "a", "x"]);
    let _: () = q(&mut c, &["SET", "a", "1"]);
    assert_eq!(info_u64(&mut c, "stats", "keyspace_hits"), 5);
    assert_eq!(info_u64(&mut c, "stats", "keyspace_misses"), 4);
    let _: () = q(&mut c, &["CONFIG", "RESETSTAT"]);
    assert_eq!(info_u64(&mut c, "stats", "keyspace_hits"), 0);
    assert_eq!(info_u64(&mut c, "stats", "keyspace_misses"), 0);
}

#[test]
fn keyspace_hits_count_reads_made_by_write_commands() {
    // Redis counts the lookup of SET ... GET, GETSET and LCS as a read (lookupKeyRead).
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: () = q(&mut c, &["SET", "a", "1"]);
    let cases: &[(&[&str], u64, u64)] = &[
        (&["SET", "a", "2", "GET"], 1, 0),
        (&["SET", "z", "2", "GET"], 0, 1),
        (&["GETSET", "a", "3"], 1, 0),
        (&["GETSET", "y", "3"], 0, 1),
        (&["LCS", "a", "nope"], 1, 1),
        (&["GETDEL", "nope"], 0, 1),
        (&["GETEX", "a"], 1, 0),
    ];
    let mut wrong = Vec::new();
    for (args, hits, misses) in cases {
        let _: () = q(&mut c, &["CONFIG", "RESETSTAT"]);
        let _: Value = q(&mut c, args);
        let got = (
            info_u64(&mut c, "stats", "keyspace_hits"),
            info_u64(&mut c, "stats", "keyspace_misses"),
        );
        if got != (*hits, *misses) {
            wrong.push(format!(
                "{args:?}: (hits, misses) = {got:?}, Redis gives {:?}",
                (hits, misses)
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn any_parameter_is_accepted_as_a_redis_style_option() {
    // As redis-server: `--name value...`, the words up to the next `--` making the value.
    let s = Shoal::start(&[
        "--hz",
        "20",
        "--save",
        "900",
        "1",
        "--maxmemory-policy",
        "allkeys-lru",
    ]);
    let mut c = s.client();
    let m: Vec<(String, String)> = q(&mut c, &["CONFIG", "GET", "hz", "save", "maxmemory-policy"]);
    let m: std::collections::BTreeMap<String, String> = m.into_iter().collect();
    assert_eq!(m["hz"], "20");
    assert_eq!(m["save"], "900 1");
    assert_eq!(m["maxmemory-policy"], "allkeys-lru");
}

#[test]
fn a_malformed_option_stops_the_server_from_starting() {
    for (args, says) in [
        (&["--dir"][..], "option --dir needs a value"),
        (
            &["--nosuch", "1"][..],
            "unknown configuration parameter 'nosuch'",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(["serve", "--port", "0"])
            .args(args)
            .output()
            .expect("run shoal");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn config_get_matches_globs_and_set_validates() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert_eq!(
        r.call(&["CONFIG", "GET", "maxmemory"]),
        "*2\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n"
    );
    assert_eq!(r.call(&["CONFIG", "GET", "nosuch"]), "*0\r\n");
    let mut c = s.client();
    let m: Vec<(String, String)> = q(&mut c, &["CONFIG", "GET", "maxmemory*"]);
    let names: BTreeSet<String> = m.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(
        names,
        [
            "maxmemory",
            "maxmemory-clients",
            "maxmemory-policy",
            "maxmemory-samples"
        ]
        .map(String::from)
        .into()
    );
    // Several patterns in one call, each parameter once.
    let m: Vec<(String, String)> = q(&mut c, &["CONFIG", "GET", "hz", "h?", "maxclients"]);
    assert_eq!(
        m,
        vec![
            ("hz".to_string(), "10".to_string()),
            ("maxclients".to_string(), "10000".to_string())
        ]
    );
    let all: Vec<(String, String)> = q(&mut c, &["CONFIG", "GET", "*"]);
    assert!(all.len() >= 20, "{all:?}");

    let cases: &[(&[&str], &str)] = &[
        (
            &["CONFIG", "SET", "maxmemory"],
            "-ERR wrong number of arguments for 'config|set' command\r\n",
        ),
        (
            &["CONFIG", "SET", "maxmemory", "lots"],
            "-ERR CONFIG SET failed (possibly related to argument 'maxmemory') - argument must be a memory value\r\n",
        ),
        (
            &["CONFIG", "SET", "nosuch", "1"],
            "-ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'\r\n",
        ),
        (
            &["CONFIG", "SET", "databases", "4"],
            "-ERR CONFIG SET failed (possibly related to argument 'databases') - can't set immutable config\r\n",
        ),
        (
            &["CONFIG", "SET", "maxmemory", "10mb", "maxmemory", "20mb"],
            "-ERR CONFIG SET failed (possibly related to argument 'maxmemory') - duplicate parameter\r\n",
        ),
        (
            &["CONFIG", "BOGUS"],
            "-ERR unknown subcommand 'BOGUS'. Try CONFIG HELP.\r\n",
        ),
        (
            &["CONFIG"],
            "-ERR wrong number of arguments for 'config' command\r\n",
        ),
    ];
    for (args, want) in cases {
        assert_eq!(r.call(args), *want, "{args:?}");
    }
    let e = r.call(&["CONFIG", "SET", "maxmemory-policy", "bogus"]);
    assert!(
        e.starts_with("-ERR CONFIG SET failed (possibly related to argument 'maxmemory-policy') - argument(s) must be one of the following: "),
        "{e}"
    );
    // Several parameters at once, all or nothing.
    assert_eq!(
        r.call(&["CONFIG", "SET", "maxmemory", "10mb", "hz", "20"]),
        "+OK\r\n"
    );
    assert_eq!(
        r.call(&["CONFIG", "GET", "maxmemory"]),
        "*2\r\n$9\r\nmaxmemory\r\n$8\r\n10485760\r\n"
    );
    assert!(
        r.call(&["CONFIG", "SET", "maxmemory", "1mb", "hz", "x"])
            .starts_with("-ERR")
    );
    assert_eq!(
        r.call(&["CONFIG", "GET", "maxmemory"]),
        "*2\r\n$9\r\nmaxmemory\r\n$8\r\n10485760\r\n",
        "a failed multi-parameter CONFIG SET changes nothing"
    );
}

#[test]
fn config_set_takes_effect_at_run_time() {
    let s = Shoal::start(&[]);
    let mut admin = s.raw();
    assert_eq!(
        admin.call(&["CONFIG", "SET", "maxmemory-policy", "ALLKEYS-LRU"]),
        "+OK\r\n"
    );
    let mut c = s.client();
    assert_eq!(
        common::info_field(&mut c, "memory", "maxmemory_policy").unwrap(),
        "allkeys-lru"
    );
    // requirepass set at run time: new connections must authenticate, this one stays in.
    assert_eq!(
        admin.call(&["CONFIG", "SET", "requirepass", "later"]),
        "+OK\r\n"
    );
    assert_eq!(admin.call(&["PING"]), "+PONG\r\n");
    let mut fresh = s.raw();
    assert_eq!(
        fresh.call(&["PING"]),
        "-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(fresh.call(&["AUTH", "later"]), "+OK\r\n");
    assert_eq!(admin.call(&["CONFIG", "SET", "requirepass", ""]), "+OK\r\n");
    let mut open = s.raw();
    assert_eq!(open.call(&["PING"]), "+PONG\r\n");
}

#[test]
fn config_resetstat_zeroes_counters() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    for _ in 0..20 {
        let _: Option<String> = q(&mut c, &["GET", "nope"]);
    }
    let _ = try_q::<()>(&mut c, &["NOSUCHCOMMAND"]);
    assert!(info_u64(&mut c, "stats", "total_commands_processed") >= 20);
    assert!(info_u64(&mut c, "stats", "total_error_replies") >= 1);
    let _: () = q(&mut c, &["CONFIG", "RESETSTAT"]);
    // INFO itself is the first command counted after the reset.
    assert!(info_u64(&mut c, "stats", "total_commands_processed") <= 2);
    assert_eq!(info_u64(&mut c, "stats", "total_error_replies"), 0);
    assert_eq!(info_u64(&mut c, "stats", "keyspace_misses"), 0);
}

/// The same requests sent to redis-server 7.0.15 gave the same counts and the same bytes.
#[test]
fn info_errorstats_counts_error_replies_by_kind() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert_eq!(r.call(&["SET", "k", "v"]), "+OK\r\n");
    for (cmd, reply) in [
        (
            &["LPUSH", "k", "x"][..],
            "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
        ),
        (
            &["FOO"],
            "-ERR unknown command 'FOO', with args beginning with: \r\n",
        ),
        (
            &["INCR", "k"],
            "-ERR value is not an integer or out of range\r\n",
        ),
        (
            &["GET"],
            "-ERR wrong number of arguments for 'get' command\r\n",
        ),
        (&["MULTI"], "+OK\r\n"),
        (
            &["EXEC", "x"],
            "-EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command\r\n",
        ),
        (&["MULTI"], "+OK\r\n"),
        (
            &["FOO"],
            "-ERR unknown command 'FOO', with args beginning with: \r\n",
        ),
        (
            &["EXEC"],
            "-EXECABORT Transaction discarded because of previous errors.\r\n",
        ),
        (&["HELLO", "9"], "-NOPROTO unsupported protocol version\r\n"),
    ] {
        assert_eq!(r.call(cmd), reply, "{cmd:?}");
    }
    // A protocol error closes its connection but still counts as an ERR reply.
    let mut bad = s.raw();
    bad.send(b"*1\r\n$abc\r\n");
    assert_eq!(
        bad.reply(),
        b"-ERR Protocol error: invalid bulk length\r\n".to_vec()
    );
    let body = "# Errorstats\r\nerrorstat_ERR:count=5\r\nerrorstat_EXECABORT:count=2\r\nerrorstat_NOPROTO:count=1\r\nerrorstat_WRONGTYPE:count=1\r\n";
    assert_eq!(
        r.call(&["INFO", "errorstats"]),
        format!("${}\r\n{body}\r\n", body.len())
    );
    let stats = r.call(&["INFO", "stats"]);
    assert!(stats.contains("\r\ntotal_error_replies:9\r\n"), "{stats}");
    // In the default sections and in `all`, between CPU and Cluster as in Redis.
    for section in [&["INFO"][..], &["INFO", "all"]] {
        let info = r.call(section);
        let (cpu, errs, cluster) = (
            info.find("# CPU").unwrap(),
            info.find("# Errorstats\r\nerrorstat_ERR:count=5\r\n")
                .unwrap(),
            info.find("# Cluster").unwrap(),
        );
        assert!(cpu < errs && errs < cluster, "{info}");
    }
    assert_eq!(r.call(&["CONFIG", "RESETSTAT"]), "+OK\r\n");
    assert_eq!(
        r.call(&["INFO", "errorstats"]),
        "$14\r\n# Errorstats\r\n\r\n"
    );
}

#[test]
fn dbsize_flushdb_and_flushall() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert_eq!(r.call(&["DBSIZE"]), ":0\r\n");
    assert_eq!(r.call(&["MSET", "a", "1", "b", "2", "c", "3"]), "+OK\r\n");
    assert_eq!(r.call(&["DBSIZE"]), ":3\r\n");
    assert_eq!(r.call(&["SELECT", "1"]), "+OK\r\n");
    assert_eq!(r.call(&["SET", "x", "1"]), "+OK\r\n");
    assert_eq!(r.call(&["DBSIZE"]), ":1\r\n");
    // FLUSHDB empties only the selected database.
    assert_eq!(r.call(&["FLUSHDB"]), "+OK\r\n");
    assert_eq!(r.call(&["DBSIZE"]), ":0\r\n");
    assert_eq!(r.call(&["SELECT", "0"]), "+OK\r\n");
    assert_eq!(r.call(&["DBSIZE"]), ":3\r\n");
    assert_eq!(r.call(&["FLUSHDB", "ASYNC"]), "+OK\r\n");
    assert_eq!(r.call(&["DBSIZE"]), ":0\r\n");
    assert_eq!(r.call(&["FLUSHDB", "BOGUS"]), "-ERR syntax error\r\n");
    assert_eq!(
        r.call(&["FLUSHALL", "SYNC", "ASYNC"]),
        "-ERR syntax error\r\n"
    );
    for mode in ["SYNC", "ASYNC"] {
        for db in ["0", "7"] {
            assert_eq!(r.call(&["SELECT", db]), "+OK\r\n");
            assert_eq!(r.call(&["SET", "k", "v"]), "+OK\r\n");
        }
        assert_eq!(r.call(&["FLUSHALL", mode]), "+OK\r\n");
        for db in ["0", "7"] {
            assert_eq!(r.call(&["SELECT", db]), "+OK\r\n");
            assert_eq!(r.call(&["DBSIZE"]), ":0\r\n", "FLUSHALL {mode}, db {db}");
        }
    }
}

#[test]
fn flushall_async_of_many_keys_returns_memory() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let empty = info_u64(&mut c, "memory", "used_memory");
    let value = "v".repeat(1000);
    let mut p = redis::pipe();
    for i in 0..5000 {
        p.cmd("SET").arg(format!("k{i}")).arg(&value).ignore();
    }
    p.exec(&mut c).unwrap();
    let full = info_u64(&mut c, "memory", "used_memory");
    assert!(full > empty + 5_000_000, "empty={empty} full={full}");
    let _: () = q(&mut c, &["FLUSHALL", "ASYNC"]);
    let n: i64 = q(&mut c, &["DBSIZE"]);
    assert_eq!(n, 0);
    wait_until("memory to be freed after FLUSHALL ASYNC", || {
        info_u64(&mut c, "memory", "used_memory") < empty + 1_000_000
    });
}

#[test]
fn time_returns_seconds_and_microseconds_of_now() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (secs, micros): (String, String) = q(&mut c, &["TIME"]);
    let secs: u64 = secs.parse().unwrap();
    let micros: u64 = micros.parse().unwrap();
    assert!(secs >= before && secs <= before + 2, "{secs} vs {before}");
    assert!(micros < 1_000_000);
    let mut r = s.raw();
    assert_eq!(
        r.call(&["TIME", "x"]),
        "-ERR wrong number of arguments for 'time' command\r\n"
    );
}

#[test]
fn slowlog_records_commands_newest_first() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: () = q(&mut c, &["CONFIG", "SET", "slowlog-log-slower-than", "-1"]);
    let _: () = q(&mut c, &["SLOWLOG", "RESET"]);
    let n: i64 = q(&mut c, &["SLOWLOG", "LEN"]);
    assert_eq!(n, 0);
    let _: () = q(&mut c, &["CLIENT", "SETNAME", "slowpoke"]);
    let _: () = q(&mut c, &["CONFIG", "SET", "slowlog-log-slower-than", "0"]);
    let _: () = q(&mut c, &["SET", "first", "1"]);
    let _: Option<String> = q(&mut c, &["GET", "second"]);
    let _: () = q(&mut c, &["CONFIG", "SET", "slowlog-log-slower-than", "-1"]);
    let n: i64 = q(&mut c, &["SLOWLOG", "LEN"]);
    assert!(n >= 2, "{n}");
    let entries: Vec<Value> = q(&mut c, &["SLOWLOG", "GET", "-1"]);
    let parsed: Vec<(i64, i64, i64, Vec<String>, String, String)> = entries
        .iter()
        .map(|e| redis::from_redis_value(e.clone()).unwrap())
        .collect();
    let pos = |cmd: &str| {
        parsed
            .iter()
            .position(|e| e.3.first().map(String::as_str) == Some(cmd))
            .unwrap_or_else(|| panic!("{cmd} not in slowlog: {parsed:?}"))
    };
    let (set, get) = (pos("SET"), pos("GET"));
    assert!(get < set, "newest first");
    assert!(parsed[get].0 > parsed[set].0, "ids grow");
    assert_eq!(parsed[set].3, vec!["SET", "first", "1"]);
    assert_eq!(parsed[get].3, vec!["GET", "second"]);
    assert_eq!(parsed[get].5, "slowpoke");
    assert!(parsed[get].4.starts_with("127.0.0.1:"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now - parsed[get].1).abs() <= 5,
        "timestamp is unix seconds"
    );
    // GET with a count limits the entries.
    let one: Vec<Value> = q(&mut c, &["SLOWLOG", "GET", "1"]);
    assert_eq!(one.len(), 1);
    let _: () = q(&mut c, &["SLOWLOG", "RESET"]);
    let n: i64 = q(&mut c, &["SLOWLOG", "LEN"]);
    assert_eq!(n, 0);
    let mut r = s.raw();
    assert_eq!(
        r.call(&["SLOWLOG", "GET", "-2"]),
        "-ERR count should be greater than or equal to -1\r\n"
    );
}

#[test]
fn slowlog_truncates_long_arguments_and_respects_max_len() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: () = q(&mut c, &["CONFIG", "SET", "slowlog-max-len", "3"]);
    let _: () = q(&mut c, &["CONFIG", "SET", "slowlog-log-slower-than", "0"]);
    let long = "x".repeat(200);
    let _: () = q(&mut c, &["SET", "k", &long]);
    let mut many = vec!["MSET"];
    let pairs: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    for p in &pairs {
        many.push(p);
        many.push("v");
    }
    let _: () = q(&mut c, &many);
    for _ in 0..5 {
        let _: () = q(&mut c, &["PING"]);
    }
    let _: () = q(&mut c, &["CONFIG", "SET", "slowlog-log-slower-than", "-1"]);
    let n: i64 = q(&mut c, &["SLOWLOG", "LEN"]);
    assert_eq!(n, 3, "slowlog-max-len bounds the log");
    let _: () = q(&mut c, &["SLOWLOG", "RESET"]);
    let _: () = q(&mut c, &["CONFIG", "SET", "slowlog-log-slower-than", "0"]);
    let _: () = q(&mut c, &["SET", "k", &long]);
    let _: () = q(&mut c, &many);
    let _: () = q(&mut c, &["CONFIG", "SET", "slowlog-log-slower-than", "-1"]);
    let entries: Vec<(i64, i64, i64, Vec<String>, String, String)> =
        q(&mut c, &["SLOWLOG", "GET", "-1"]);
    let set = entries.iter().find(|e| e.3[0] == "SET").unwrap();
    assert_eq!(set.3[2], format!("{}... (72 more bytes)", "x".repeat(128)));
    let mset = entries.iter().find(|e| e.3[0] == "MSET").unwrap();
    assert_eq!(mset.3.len(), 32);
    assert_eq!(mset.3[31], "... (50 more arguments)");
}

#[test]
fn latency_monitor_records_slow_commands_and_resets() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    // A slow command: LCS of two 2500-byte strings (over six million cells).
    let a: String = (0..2500)
        .map(|i| (b'a' + (i * 7 % 26) as u8) as char)
        .collect();
    let b: String = (0..2500)
        .map(|i| (b'a' + (i * 11 % 26) as u8) as char)
        .collect();
    let _: () = q(&mut c, &["MSET", "a", &a, "b", &b]);
    // Monitoring is off by default: nothing is recorded.
    let _: i64 = q(&mut c, &["LCS", "a", "b", "LEN"]);
    let latest: Vec<(String, i64, i64, i64)> = q(&mut c, &["LATENCY", "LATEST"]);
    assert!(latest.is_empty(), "{latest:?}");
    let _: () = q(&mut c, &["CONFIG", "SET", "latency-monitor-threshold", "1"]);
    let _: i64 = q(&mut c, &["LCS", "a", "b", "LEN"]);
    let latest: Vec<(String, i64, i64, i64)> = q(&mut c, &["LATENCY", "LATEST"]);
    let (_, at, last_ms, max_ms) = latest
        .iter()
        .find(|e| e.0 == "command")
        .unwrap_or_else(|| panic!("no 'command' event: {latest:?}"))
        .clone();
    assert!(last_ms >= 1 && max_ms >= last_ms, "{latest:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - at).abs() <= 5);
    let history: Vec<(i64, i64)> = q(&mut c, &["LATENCY", "HISTORY", "command"]);
    assert!(!history.is_empty());
    let n: i64 = q(&mut c, &["LATENCY", "RESET", "command"]);
    assert_eq!(n, 1);
    let latest: Vec<(String, i64, i64, i64)> = q(&mut c, &["LATENCY", "LATEST"]);
    // Whatever was recorded after the reset is not the slow LCS.
    assert!(
        latest.iter().all(|e| e.0 != "command" || e.3 < max_ms),
        "{latest:?}"
    );
    let n: i64 = q(&mut c, &["LATENCY", "RESET"]);
    assert!(n >= 0);
}

#[test]
fn memory_usage_grows_with_the_value() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: () = q(&mut c, &["SET", "small", "v"]);
    let big = "x".repeat(10_000);
    let _: () = q(&mut c, &["SET", "big", &big]);
    let small: i64 = q(&mut c, &["MEMORY", "USAGE", "small"]);
    let large: i64 = q(&mut c, &["MEMORY", "USAGE", "big"]);
    assert!(small > 0 && small < 200, "{small}");
    assert!((10_000..11_000).contains(&large), "{large}");
    let with_samples: i64 = q(&mut c, &["MEMORY", "USAGE", "big", "SAMPLES", "0"]);
    assert_eq!(with_samples, large);
    let nil: Value = q(&mut c, &["MEMORY", "USAGE", "nope"]);
    assert_eq!(nil, Value::Nil);
    let mut r = s.raw();
    assert_eq!(
        r.call(&["MEMORY", "USAGE", "big", "BOGUS"]),
        "-ERR syntax error\r\n"
    );
}

#[test]
fn command_count_list_info_docs_and_getkeys() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let count: i64 = q(&mut c, &["COMMAND", "COUNT"]);
    let list: Vec<String> = q(&mut c, &["COMMAND", "LIST"]);
    let top: Vec<&String> = list.iter().filter(|n| !n.contains('|')).collect();
    assert_eq!(top.len() as i64, count, "COUNT counts top-level commands");
    for name in [
        "get",
        "set",
        "del",
        "expire",
        "scan",
        "info",
        "config",
        "config|get",
        "client|kill",
        "getver",
        "setifver",
    ] {
        assert!(list.iter().any(|n| n == name), "COMMAND LIST lacks {name}");
    }
    let all: Vec<Value> = q(&mut c, &["COMMAND"]);
    assert_eq!(all.len() as i64, count);
    // FILTERBY pattern selects exactly the matching names of the full list.
    let filtered: Vec<String> = q(
        &mut c,
        &["COMMAND", "LIST", "FILTERBY", "pattern", "config*"],
    );
    let want: BTreeSet<&String> = list.iter().filter(|n| n.starts_with("config")).collect();
    assert_eq!(filtered.iter().collect::<BTreeSet<_>>(), want);
    for name in ["config", "config|get", "config|set", "config|resetstat"] {
        assert!(filtered.iter().any(|n| n == name), "{name} not matched");
    }
    let keyspace: Vec<String> = q(
        &mut c,
        &["COMMAND", "LIST", "FILTERBY", "aclcat", "keyspace"],
    );
    assert!(keyspace.contains(&"del".to_string()) && !keyspace.contains(&"get".to_string()));

    // COMMAND INFO: name, arity, flags, first key, last key, step, ACL categories.
    let info: Vec<Value> = q(&mut c, &["COMMAND", "INFO", "get", "mset"]);
    let get = match &info[0] {
        Value::Array(v) => v,
        other => panic!("{other:?}"),
    };
    assert_eq!(get[0], Value::BulkString(b"get".to_vec()));
    assert_eq!(get[1], Value::Int(2));
    let flags: BTreeSet<String> = redis::from_redis_value(get[2].clone()).unwrap();
    assert_eq!(flags, ["readonly", "fast"].map(String::from).into());
    assert_eq!(&get[3..6], &[Value::Int(1), Value::Int(1), Value::Int(1)]);
    let cats: BTreeSet<String> = redis::from_redis_value(get[6].clone()).unwrap();
    assert_eq!(cats, ["@read", "@string", "@fast"].map(String::from).into());
    let mset = match &info[1] {
        Value::Array(v) => v,
        other => panic!("{other:?}"),
    };
    assert_eq!(mset[1], Value::Int(-3));
    assert_eq!(&mset[3..6], &[Value::Int(1), Value::Int(-1), Value::Int(2)]);

    let docs: Vec<(String, Vec<(String, Value)>)> = q(&mut c, &["COMMAND", "DOCS", "get"]);
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].0, "get");
    let field = |name: &str| {
        docs[0]
            .1
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| redis::from_redis_value::<String>(v.clone()).unwrap())
    };
    assert_eq!(field("since").as_deref(), Some("1.0.0"));
    assert_eq!(field("group").as_deref(), Some("string"));
    assert!(!field("summary").unwrap().is_empty());

    let keys: Vec<String> = q(&mut c, &["COMMAND", "GETKEYS", "MSET", "a", "1", "b", "2"]);
    assert_eq!(keys, vec!["a", "b"]);
    let keys: Vec<String> = q(&mut c, &["COMMAND", "GETKEYS", "GET", "k"]);
    assert_eq!(keys, vec!["k"]);
    let keys: Vec<String> = q(&mut c, &["COMMAND", "GETKEYS", "COPY", "src", "dst"]);
    assert_eq!(keys, vec!["src", "dst"]);
    let mut r = s.raw();
    assert_eq!(
        r.call(&["COMMAND", "GETKEYS", "NOSUCH", "k"]),
        "-ERR Invalid command specified\r\n"
    );
}

#[test]
fn command_info_of_an_unknown_command_is_a_null_bulk() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert_eq!(r.call(&["COMMAND", "INFO", "nosuchcmd"]), "*1\r\n$-1\r\n");
}

#[test]
fn shutdown_closes_connections_and_exits_zero() {
    let mut s = Shoal::start(&[]);
    let mut bystander = s.raw();
    assert_eq!(bystander.call(&["PING"]), "+PONG\r\n");
    let mut r = s.raw();
    assert_eq!(
        r.call(&["SHUTDOWN", "ABORT"]),
        "-ERR No shutdown in progress.\r\n"
    );
    assert_eq!(r.call(&["SHUTDOWN", "BOGUS"]), "-ERR syntax error\r\n");
    assert!(s.is_running());
    r.cmd(&[b"SHUTDOWN", b"NOSAVE"]);
    assert!(r.closed(), "SHUTDOWN sends no reply; the connection closes");
    assert!(bystander.closed(), "other clients are disconnected too");
    assert!(s.wait_exit(), "exit status 0");
}

#[test]
fn sigterm_exits_gracefully() {
    let mut s = Shoal::start(&[]);
    let mut r = s.raw();
    assert_eq!(r.call(&["SET", "k", "v"]), "+OK\r\n");
    s.signal("-TERM");
    assert!(r.closed());
    assert!(s.wait_exit(), "exit status 0 after SIGTERM");
    assert!(
        std::net::TcpStream::connect(s.addr()).is_err(),
        "listener closed"
    );
}

#[test]
fn sigint_exits_gracefully() {
    let mut s = Shoal::start(&[]);
    assert_eq!(s.raw().call(&["PING"]), "+PONG\r\n");
    s.signal("-INT");
    assert!(s.wait_exit());
}

#[test]
fn toml_config_file_is_read_and_flags_override_it() {
    let dir = scratch_dir("config");
    let path = dir.join("shoal.toml");
    std::fs::write(
        &path,
        "# a shoal config\nmaxmemory = \"3mb\"\nmaxmemory-policy = \"allkeys-lru\"\nhz = 25\nslowlog-max-len = 7\n",
    )
    .unwrap();
    let path_s = path.to_str().unwrap();
    let s = Shoal::start(&["--config", path_s, "--maxmemory", "5mb"]);
    let mut c = s.client();
    let get = |c: &mut redis::Connection, name: &str| -> String {
        let m: Vec<(String, String)> = q(c, &["CONFIG", "GET", name]);
        m.into_iter().next().unwrap().1
    };
    assert_eq!(
        get(&mut c, "maxmemory"),
        "5242880",
        "the flag wins over the file"
    );
    assert_eq!(get(&mut c, "maxmemory-policy"), "allkeys-lru");
    assert_eq!(get(&mut c, "hz"), "25");
    assert_eq!(get(&mut c, "slowlog-max-len"), "7");
    assert_eq!(
        common::info_field(&mut c, "server", "config_file").unwrap(),
        path_s
    );
    // --set overrides the file too.
    drop(c);
    drop(s);
    let s = Shoal::start(&["--config", path_s, "--set", "hz=40"]);
    let mut c = s.client();
    assert_eq!(get(&mut c, "hz"), "40");
    assert_eq!(get(&mut c, "maxmemory"), "3145728");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `shoal serve` with arguments expected to fail at start-up; returns (exit code, stderr).
fn failed_start(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("serve")
        .args(["--port", "0", "--bind", "127.0.0.1"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + common::WAIT_MAX;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (status.code(), err);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("shoal {args:?} kept running; expected a start-up failure");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn bad_configuration_stops_start_up_with_a_message() {
    let dir = scratch_dir("badconfig");
    let bad_value = dir.join("bad_value.toml");
    std::fs::write(&bad_value, "maxmemory = \"lots\"\n").unwrap();
    let (code, err) = failed_start(&["--config", bad_value.to_str().unwrap()]);
    assert_ne!(code, Some(0));
    assert!(err.contains("maxmemory"), "{err}");
    let unknown = dir.join("unknown.toml");
    std::fs::write(&unknown, "no-such-parameter = 1\n").unwrap();
    let (code, err) = failed_start(&["--config", unknown.to_str().unwrap()]);
    assert_ne!(code, Some(0));
    assert!(err.contains("no-such-parameter"), "{err}");
    let (code, _) = failed_start(&["--config", dir.join("missing.toml").to_str().unwrap()]);
    assert_ne!(code, Some(0));
    let (code, err) = failed_start(&["--maxmemory-policy", "sometimes"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("maxmemory-policy"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// As in Redis 7.0, the SLOWLOG commands are logged like any other (a RESET leaves itself as the
/// first entry), and so are a transaction's commands, but not EXEC itself.
#[test]
fn slowlog_records_its_own_reset_and_a_transactions_commands_but_not_exec() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: () = q(&mut c, &["CONFIG", "SET", "slowlog-log-slower-than", "0"]);
    let _: () = q(&mut c, &["SLOWLOG", "RESET"]);
    let _: (String, Option<String>) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("a")
        .arg("1")
        .cmd("GET")
        .arg("a")
        .query(&mut c)
        .unwrap();
    let n: i64 = q(&mut c, &["SLOWLOG", "LEN"]);
    assert_eq!(n, 4, "RESET, MULTI, SET, GET");
    let entries: Vec<Value> = q(&mut c, &["SLOWLOG", "GET", "10"]);
    let names: Vec<String> = entries
        .iter()
        .map(|e| {
            let (_, _, _, args, _, _): (i64, i64, i64, Vec<String>, String, String) =
                redis::from_redis_value(e.clone()).unwrap();
            args.join(" ").to_ascii_uppercase()
        })
        .collect();
    assert_eq!(
        names,
        ["SLOWLOG LEN", "GET A", "SET A 1", "MULTI", "SLOWLOG RESET"]
    );
}

/// DEBUG and MODULE as Redis 7.0 guards them: refused unless `enable-debug-command` /
/// `enable-module-command` allow them (`local`: loopback clients); MODULE LIST lists nothing;
/// an allowed MODULE LOAD fails as a missing library does; DEBUG SLEEP makes the whole server
/// wait; DEBUG OBJECT describes a key.
#[test]
fn debug_and_module_are_protected_commands() {
    use std::time::{Duration, Instant};
    let closed = Shoal::start(&[]);
    let mut r = closed.raw();
    assert_eq!(
        r.call(&["DEBUG", "SLEEP", "0"]),
        "-ERR DEBUG command not allowed. If the enable-debug-command option is set to \"local\", you can run it from a local connection, otherwise you need to set this option in the configuration file, and then restart the server.\r\n"
    );
    assert_eq!(
        r.call(&["MODULE", "LOAD", "/nowhere.so"]),
        "-ERR MODULE command not allowed. If the enable-module-command option is set to \"local\", you can run it from a local connection, otherwise you need to set this option in the configuration file, and then restart the server.\r\n"
    );
    assert_eq!(r.call(&["MODULE", "LIST"]), "*0\r\n");

    let open = Shoal::start(&[
        "--enable-debug-command",
        "local",
        "--enable-module-command",
        "yes",
    ]);
    let mut r = open.raw();
    let mut other = open.raw();
    assert_eq!(r.call(&["SET", "k", "hello"]), "+OK\r\n");
    let obj = r.call(&["DEBUG", "OBJECT", "k"]);
    assert!(
        obj.starts_with("+Value at:0x") && obj.contains(" refcount:1 encoding:embstr "),
        "{obj}"
    );
    assert_eq!(
        r.call(&["DEBUG", "OBJECT", "nokey"]),
        "-ERR no such key\r\n"
    );
    assert_eq!(
        r.call(&["DEBUG", "SLEEP"]),
        "-ERR unknown subcommand or wrong number of arguments for 'SLEEP'. Try DEBUG HELP.\r\n"
    );
    assert_eq!(
        r.call(&["MODULE", "LOAD", "/nowhere.so"]),
        "-ERR Error loading the extension. Please check the server logs.\r\n"
    );
    assert_eq!(
        r.call(&["MODULE", "UNLOAD", "nothing"]),
        "-ERR Error unloading module: no such module with that name\r\n"
    );
    // While one client sleeps, another's command waits too.
    r.cmd(&[b"DEBUG", b"SLEEP", b"0.4"]);
    std::thread::sleep(Duration::from_millis(50));
    let t0 = Instant::now();
    assert_eq!(other.call(&["GET", "k"]), "$5\r\nhello\r\n");
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(String::from_utf8(r.reply()).unwrap(), "+OK\r\n");
}

/// `--daemonize yes` detaches as Redis's: `shoal serve` itself exits 0 at once, the node goes
/// on in the background, writes its pid to `pidfile`, serves, and removes the file when it
/// shuts down. `daemonize` cannot be changed at run time.
#[test]
fn daemonize_detaches_writes_the_pidfile_and_removes_it_at_shutdown() {
    let dir = scratch_dir("daemonize");
    let pidfile = dir.join("shoal.pid");
    let log = dir.join("shoal.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let status = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["serve", "--port", &port.to_string(), "--dir"])
        .arg(&dir)
        .args(["--daemonize", "yes", "--pidfile"])
        .arg(&pidfile)
        .args(["--logfile"])
        .arg(&log)
        .stdout(Stdio::null())
        .status()
        .expect("shoal serve");
    assert!(status.success(), "{status}");
    // The daemon is not this test's child: it is stopped by pid, whatever the outcome.
    struct Daemon(std::path::PathBuf, Option<u32>);
    impl Drop for Daemon {
        fn drop(&mut self) {
            let pid = self.1.or_else(|| {
                std::fs::read_to_string(&self.0)
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
            });
            if let Some(pid) = pid {
                // SAFETY: a signal to a process id this test read from the daemon's pidfile.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
    let mut daemon = Daemon(pidfile.clone(), None);
    wait_until("the daemon writes its pidfile", || {
        std::fs::read_to_string(&pidfile).is_ok_and(|t| t.ends_with('\n'))
    });
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    daemon.1 = Some(pid);
    let mut c = common::connect(format!("redis://127.0.0.1:{port}"));
    assert_eq!(info_u64(&mut c, "server", "process_id"), pid as u64);
    let d: Vec<String> = q(&mut c, &["CONFIG", "GET", "daemonize"]);
    assert_eq!(d, ["daemonize", "yes"]);
    let e = try_q::<()>(&mut c, &["CONFIG", "SET", "daemonize", "no"]).unwrap_err();
    assert!(e.to_string().contains("can't set immutable config"), "{e}");
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("ready to accept connections")
    );
    let _ = try_q::<()>(&mut c, &["SHUTDOWN", "NOSAVE"]);
    wait_until("the daemon removes its pidfile as it stops", || {
        !pidfile.exists()
    });
    wait_until("the daemon is gone", || {
        // Exited: no such process, or a zombie its new parent has not reaped yet.
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z'))
        })
    });
    daemon.1 = None;
}

/// INFO `rdb_changes_since_last_save` counts writes whether or not `save` rules are set (as
/// Redis's `dirty`): successful write commands, not reads or refused writes; a SAVE takes it
/// back to what came after the save began.
#[test]
fn rdb_changes_since_last_save_counts_writes_and_save_resets_it() {
    let dir = scratch_dir("dirty");
    let s = Shoal::start(&["--dir", dir.to_str().unwrap(), "--save", ""]);
    let mut c = s.client();
    let changes =
        |c: &mut redis::Connection| info_u64(c, "persistence", "rdb_changes_since_last_save");
    assert_eq!(changes(&mut c), 0);
    let _: () = q(&mut c, &["SET", "a", "1"]);
    let _: () = q(&mut c, &["SET", "b", "2"]);
    let _: i64 = q(&mut c, &["INCR", "a"]);
    let _: Option<String> = q(&mut c, &["GET", "a"]);
    assert!(
        try_q::<i64>(&mut c, &["LPUSH", "a", "x"]).is_err(),
        "WRONGTYPE"
    );
    assert_eq!(changes(&mut c), 3);
    let _: () = q(&mut c, &["SAVE"]);
    assert_eq!(changes(&mut c), 0);
    let _: i64 = q(&mut c, &["DEL", "a"]);
    assert_eq!(changes(&mut c), 1);
}

/// `disable-thp yes` (the default, as Redis's) turns transparent huge pages off for the whole
/// process, as the kernel reports it (`THP_enabled` in /proc/PID/status); `no` leaves them on.
#[test]
fn disable_thp_turns_transparent_huge_pages_off_for_the_process() {
    let thp = |s: &Shoal| {
        let status = std::fs::read_to_string(format!("/proc/{}/status", s.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("THP_enabled:"))
            .map(|v| v.trim().to_string())
    };
    if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists() {
        eprintln!("this kernel has no transparent huge pages: nothing to turn off");
        return;
    }
    let on_by_default = Shoal::start(&[]);
    assert_eq!(
        thp(&on_by_default).as_deref(),
        Some("0"),
        "disable-thp yes is the default"
    );
    let mut c = on_by_default.client();
    let got: Vec<String> = q(&mut c, &["CONFIG", "GET", "disable-thp"]);
    assert_eq!(got, ["disable-thp", "yes"]);
    let kept = Shoal::start(&["--disable-thp", "no"]);
    assert_eq!(thp(&kept).as_deref(), Some("1"));
}

#[test]
fn the_default_worker_count_leaves_one_core_and_threads_sets_it() {
    // Runtime workers are named `shoal-worker`; `threads 0` (the default) runs one per core but
    // one, at least one.
    // A thread names itself once it first runs, so a worker that has not been scheduled yet
    // still bears the process's name: the count is read until it is the expected one, for at
    // most five seconds, and must then be exactly that.
    let workers = |s: &Shoal, expected: usize| {
        // Answered by a worker: the runtime is up (the port is bound before it starts).
        let _: String = q(&mut s.client(), &["PING"]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let tasks = std::fs::read_dir(format!("/proc/{}/task", s.pid())).unwrap();
            let n = tasks
                .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
                .filter(|name| name.trim() == "shoal-worker")
                .count();
            if n == expected || std::time::Instant::now() > deadline {
                return n;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let default = Shoal::start(&[]);
    let expected = cores.saturating_sub(1).max(1);
    assert_eq!(workers(&default, expected), expected);
    let three = Shoal::start(&["--threads", "3"]);
    assert_eq!(workers(&three, 3), 3);
}
