//! Scripting over the wire: a script runs atomically (another client never sees its
//! intermediate state), a long script makes other clients wait then answers them `-BUSY`,
//! SCRIPT KILL stops a read-only script and is refused for one that wrote, and a script's
//! writes reach a replica as effects (a script using TIME and random draws leaves the same data
//! on the replica); SCRIPT DEBUG accepts NO and refuses the debugger shoal does not have.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::reference::Redis;
use common::{Raw, Shoal, caught_up, encode, follow, q, try_q};

/// A script that increments two keys with a busy loop between: a reader that checks both
/// keys with MGET in a loop never sees them differ.
#[test]
fn a_concurrent_client_never_sees_a_script_half_done() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let script = "redis.call('incr', KEYS[1]) local x = 0 for i = 1, 20000 do x = x + i end \
                  redis.call('incr', KEYS[2]) return x";
    let sha: String = q(&mut c, &["SCRIPT", "LOAD", script]);
    let reader = {
        let mut r = s.client();
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut seen = 0;
            while seen < 2000 && Instant::now() < deadline {
                let v: Vec<Option<i64>> = q(&mut r, &["MGET", "{t}a", "{t}b"]);
                assert_eq!(v[0], v[1], "the reader saw a script half done");
                seen += 1;
            }
            seen
        })
    };
    for _ in 0..300 {
        let _: i64 = q(&mut c, &["EVALSHA", &sha, "2", "{t}a", "{t}b"]);
    }
    assert!(reader.join().expect("reader") > 0);
    let v: Vec<i64> = q(&mut c, &["MGET", "{t}a", "{t}b"]);
    assert_eq!(v, vec![300, 300]);
}

/// Pipelines mixing scripts and plain commands on many connections over two worker threads:
/// a worker's batch of scripts holds the exec gate, and the other worker's requests wait for it
/// as tasks and run again (on the holder's thread, or after the batch). Every request is
/// answered once, in its connection's order: a connection's own counter reads 1, 2, 3, ...; the
/// shared counter the scripts increment only grows as each connection sees it; and it ends at
/// the number of scripts sent.
#[test]
fn pipelines_of_scripts_and_commands_on_two_workers_are_each_answered_once_in_order() {
    const CONNS: usize = 8;
    const ROUNDS: usize = 60;
    const PIPELINE: usize = 16;
    let s = Shoal::start(&["--threads", "2"]);
    let mut c = s.client();
    let sha: String = q(
        &mut c,
        &["SCRIPT", "LOAD", "return redis.call('incr', KEYS[1])"],
    );
    let workers: Vec<_> = (0..CONNS)
        .map(|n| {
            let mut raw = s.raw();
            let sha = sha.clone();
            thread::spawn(move || {
                let own = format!("own:{n}");
                let (mut scripts, mut own_count, mut last_shared) = (0u64, 0i64, 0i64);
                for round in 0..ROUNDS {
                    // Scripts, with a plain INCR of the connection's own key every fourth
                    // request (its place moving from round to round).
                    let kinds: Vec<bool> = (0..PIPELINE).map(|i| (i + round) % 4 != 0).collect();
                    let mut bytes = Vec::new();
                    for &script in &kinds {
                        bytes.extend(if script {
                            encode(&[b"EVALSHA", sha.as_bytes(), b"1", b"shared"])
                        } else {
                            encode(&[b"INCR", own.as_bytes()])
                        });
                    }
                    raw.send(&bytes);
                    for &script in &kinds {
                        let r = String::from_utf8(raw.reply()).expect("utf-8");
                        let v: i64 = r
                            .strip_prefix(':')
                            .and_then(|r| r.trim_end().parse().ok())
                            .unwrap_or_else(|| panic!("an integer reply, got {r:?}"));
                        if script {
                            assert!(
                                v > last_shared,
                                "the shared counter went {last_shared} -> {v}"
                            );
                            last_shared = v;
                            scripts += 1;
                        } else {
                            own_count += 1;
                            assert_eq!(v, own_count, "{own}: a reply lost, repeated or moved");
                        }
                    }
                }
                scripts
            })
        })
        .collect();
    let sent: u64 = workers
        .into_iter()
        .map(|w| w.join().expect("connection"))
        .sum();
    let shared: u64 = q(&mut c, &["GET", "shared"]);
    assert_eq!(shared, sent, "every script ran exactly once");
}

/// The long script is the second of a pipeline's scripts, so its batch holds the gate: a
/// request of another connection waits for it as a task and is still answered `-BUSY` past
/// the threshold; SCRIPT KILL stops the script; the pipeline's first script was answered.
#[test]
fn a_request_waiting_for_a_batch_of_scripts_gets_busy_past_the_threshold() {
    let s = Shoal::start(&["--busy-reply-threshold", "200", "--threads", "2"]);
    let mut other = s.client();
    let _: String = q(&mut other, &["SET", "k", "v"]);
    let mut runner = s.raw();
    let mut pipeline = encode(&[b"EVAL", b"return 1", b"0"]);
    pipeline.extend(encode(&[b"EVAL", b"while true do end", b"0"]));
    runner.send(&pipeline);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match try_q::<String>(&mut other, &["GET", "k"]) {
            Err(e) if e.to_string().contains("BUSY") => break,
            _ => {}
        }
        assert!(Instant::now() < deadline, "never answered BUSY");
        thread::sleep(Duration::from_millis(20));
    }
    let ok: String = q(&mut other, &["SCRIPT", "KILL"]);
    assert_eq!(ok, "OK");
    assert_eq!(runner.reply(), b":1\r\n");
    let killed = String::from_utf8(runner.reply()).expect("utf-8");
    assert!(
        killed.starts_with("-ERR Script killed by user with SCRIPT KILL"),
        "{killed}"
    );
    let v: String = q(&mut other, &["GET", "k"]);
    assert_eq!(v, "v");
}

/// A script looping past busy-reply-threshold: another client waits, then gets `-BUSY`; SCRIPT
/// KILL stops it; its caller gets Redis's "Script killed" error; the node serves again.
#[test]
fn a_long_script_answers_busy_and_script_kill_stops_it() {
    long_script_busy_then_killed(&[], "while true do end");
}

/// A script that catches errors (pcall, xpcall, nested) cannot catch SCRIPT KILL's: it is
/// killed all the same, as in Redis.
#[test]
fn a_script_catching_errors_is_still_killed() {
    for script in [
        "local f = function() while 1 do redis.call('ping') end end while 1 do pcall(f) end",
        "local f = function() while 1 do end end while 1 do xpcall(f, function(e) return e end) end",
        "while 1 do pcall(function() while 1 do pcall(function() while 1 do end end) end end) end",
    ] {
        long_script_busy_then_killed(&[], script);
    }
}

/// The same with one worker thread: the script's thread hands the runtime's duties over, so
/// the other connection is still answered.
#[test]
fn with_one_worker_thread_a_long_script_still_lets_others_get_busy() {
    long_script_busy_then_killed(&["--threads", "1"], "while true do end");
}

fn long_script_busy_then_killed(extra: &[&str], script: &'static str) {
    let mut args = vec!["--busy-reply-threshold", "200"];
    args.extend_from_slice(extra);
    let s = Shoal::start(&args);
    let mut other = s.client();
    let _: String = q(&mut other, &["SET", "k", "v"]);
    let runner = {
        let mut c = s.client();
        thread::spawn(move || try_q::<i64>(&mut c, &["EVAL", script, "0"]))
    };
    // Wait (bounded) until the node reports the script busy.
    let deadline = Instant::now() + Duration::from_secs(20);
    let busy = loop {
        let r = try_q::<String>(&mut other, &["GET", "k"]);
        match r {
            Err(e) if e.to_string().contains("BUSY") => break e.to_string(),
            _ => {}
        }
        assert!(Instant::now() < deadline, "never answered BUSY");
        thread::sleep(Duration::from_millis(20));
    };
    assert!(
        busy.contains(
            "Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."
        ),
        "{busy}"
    );
    let nope = try_q::<String>(&mut other, &["FUNCTION", "KILL"]);
    assert!(nope.is_err());
    let ok: String = q(&mut other, &["SCRIPT", "KILL"]);
    assert_eq!(ok, "OK");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !runner.is_finished() {
        assert!(Instant::now() < deadline, "{script:?} was not killed");
        thread::sleep(Duration::from_millis(10));
    }
    let killed = runner
        .join()
        .expect("runner")
        .expect_err("the script was killed");
    assert!(
        killed
            .to_string()
            .contains("Script killed by user with SCRIPT KILL... script: "),
        "{killed}"
    );
    let v: String = q(&mut other, &["GET", "k"]);
    assert_eq!(v, "v");
    let idle = try_q::<String>(&mut other, &["SCRIPT", "KILL"]).expect_err("nothing runs");
    assert!(
        idle.to_string()
            .contains("No scripts in execution right now."),
        "{idle}"
    );
}

/// A script that wrote before looping cannot be killed; it is refused with `-UNKILLABLE`.
/// (The server is then stopped the hard way, as Redis advises: dropping it kills the process.)
#[test]
fn a_script_that_wrote_is_unkillable() {
    let s = Shoal::start(&["--busy-reply-threshold", "100"]);
    let _runner = {
        let mut c = s.client();
        thread::spawn(move || {
            try_q::<i64>(
                &mut c,
                &["EVAL", "redis.call('set', 'w', '1') while true do end", "0"],
            )
        })
    };
    let mut other = s.client();
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        match try_q::<String>(&mut other, &["SCRIPT", "KILL"]) {
            Err(e) if e.to_string().contains("UNKILLABLE") => break e.to_string(),
            _ => {}
        }
        assert!(Instant::now() < deadline, "never answered UNKILLABLE");
        thread::sleep(Duration::from_millis(20));
    };
    assert!(
        refused.contains("Sorry the script already executed write commands against the dataset."),
        "{refused}"
    );
    drop(s);
}

/// A script's writes replicate as effects: a value computed from TIME and a random draw is the
/// same on the replica, and set_repl(REPL_NONE) keeps a write on the primary only.
#[test]
fn script_effects_reach_the_replica() {
    let p = Shoal::start(&[]);
    let r = Shoal::start(&[]);
    follow(&r, &p);
    let mut c = p.client();
    let script = "local t = redis.call('time') \
                  local v = t[1] .. '.' .. t[2] .. ':' .. math.random(1000000) \
                  redis.call('set', KEYS[1], v) \
                  redis.call('rpush', KEYS[2], v, 'x') \
                  redis.set_repl(redis.REPL_NONE) \
                  redis.call('set', KEYS[3], 'primary-only') \
                  redis.set_repl(redis.REPL_ALL) \
                  redis.call('incr', KEYS[4]) \
                  return v";
    let v: String = q(&mut c, &["EVAL", script, "4", "s", "l", "local", "n"]);
    caught_up(&r, &p);
    let mut rc = r.client();
    let got: String = q(&mut rc, &["GET", "s"]);
    assert_eq!(got, v);
    let list: Vec<String> = q(&mut rc, &["LRANGE", "l", "0", "-1"]);
    assert_eq!(list, vec![v.clone(), "x".into()]);
    let n: i64 = q(&mut rc, &["GET", "n"]);
    assert_eq!(n, 1);
    let local: Option<String> = q(&mut rc, &["GET", "local"]);
    assert_eq!(local, None);
    let on_primary: String = q(&mut c, &["GET", "local"]);
    assert_eq!(on_primary, "primary-only");
}

/// Function libraries reach replicas: one loaded before the replica follows (it comes with the
/// full copy), one loaded after (in the stream), a deletion; FCALL_RO runs them on the replica.
#[test]
fn function_libraries_reach_the_replica() {
    let p = Shoal::start(&[]);
    let r = Shoal::start(&[]);
    let mut c = p.client();
    let lib = |name: &str, f: &str, v: i64| {
        format!(
            "#!lua name={name}\nredis.register_function{{function_name='{f}', callback=function() return {v} end, flags={{'no-writes'}}}}"
        )
    };
    let _: String = q(&mut c, &["FUNCTION", "LOAD", &lib("before", "fb", 1)]);
    follow(&r, &p);
    let _: String = q(&mut c, &["FUNCTION", "LOAD", &lib("after", "fa", 2)]);
    let _: String = q(&mut c, &["SET", "marker", "1"]);
    caught_up(&r, &p);
    let mut rc = r.client();
    let one: i64 = q(&mut rc, &["FCALL_RO", "fb", "0"]);
    let two: i64 = q(&mut rc, &["FCALL_RO", "fa", "0"]);
    assert_eq!((one, two), (1, 2));
    let _: String = q(&mut c, &["FUNCTION", "DELETE", "before"]);
    let _: String = q(
        &mut c,
        &["FUNCTION", "LOAD", "REPLACE", &lib("after", "fa", 3)],
    );
    let _: i64 = q(&mut c, &["INCR", "marker"]);
    caught_up(&r, &p);
    let gone = try_q::<i64>(&mut rc, &["FCALL_RO", "fb", "0"]).expect_err("deleted");
    assert!(gone.to_string().contains("Function not found"), "{gone}");
    let three: i64 = q(&mut rc, &["FCALL_RO", "fa", "0"]);
    assert_eq!(three, 3);
    let dump_p: Vec<u8> = q(&mut c, &["FUNCTION", "DUMP"]);
    let dump_r: Vec<u8> = q(&mut rc, &["FUNCTION", "DUMP"]);
    assert_eq!(dump_p, dump_r);
}

/// Function libraries are kept in the snapshot file: after SAVE and a restart on the same
/// directory, FCALL finds them and FUNCTION DUMP is byte for byte the same.
#[test]
fn function_libraries_survive_a_restart() {
    let dir = common::scratch_dir("functions");
    let dir_arg = format!("dir={}", dir.display());
    let lib = "#!lua name=kept\nredis.register_function('kept_f', function(keys, args) \
               return redis.call('GET', keys[1]) end)";
    let dump_before: Vec<u8> = {
        let s = Shoal::start(&["--set", &dir_arg]);
        let mut c = s.client();
        let _: String = q(&mut c, &["FUNCTION", "LOAD", lib]);
        let _: String = q(&mut c, &["SET", "k", "v"]);
        let _: String = q(&mut c, &["SAVE"]);
        q(&mut c, &["FUNCTION", "DUMP"])
    };
    let s = Shoal::start(&["--set", &dir_arg]);
    let mut c = s.client();
    let v: String = q(&mut c, &["FCALL", "kept_f", "1", "k"]);
    assert_eq!(v, "v");
    let dump_after: Vec<u8> = q(&mut c, &["FUNCTION", "DUMP"]);
    assert_eq!(dump_before, dump_after);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A function past busy-reply-threshold: `-BUSY` names FUNCTION KILL, FUNCTION STATS shows it
/// running, SCRIPT KILL is refused, FUNCTION KILL stops it.
#[test]
fn a_long_function_answers_busy_and_function_kill_stops_it() {
    let s = Shoal::start(&["--busy-reply-threshold", "100"]);
    let mut other = s.client();
    let _: String = q(
        &mut other,
        &[
            "FUNCTION",
            "LOAD",
            "#!lua name=spin\nredis.register_function('spin', function() while true do end end)",
        ],
    );
    let runner = {
        let mut c = s.client();
        thread::spawn(move || try_q::<i64>(&mut c, &["FCALL", "spin", "0"]))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let busy = loop {
        match try_q::<String>(&mut other, &["GET", "k"]) {
            Err(e) if e.to_string().contains("BUSY") => break e.to_string(),
            _ => {}
        }
        assert!(Instant::now() < deadline, "never answered BUSY");
        thread::sleep(Duration::from_millis(20));
    };
    assert!(
        busy.contains("You can only call FUNCTION KILL or SHUTDOWN NOSAVE."),
        "{busy}"
    );
    let stats: redis::Value = q(&mut other, &["FUNCTION", "STATS"]);
    assert!(format!("{stats:?}").contains("spin"), "{stats:?}");
    let refused = try_q::<String>(&mut other, &["SCRIPT", "KILL"]).expect_err("a function runs");
    assert!(refused.to_string().contains("FUNCTION KILL"), "{refused}");
    let ok: String = q(&mut other, &["FUNCTION", "KILL"]);
    assert_eq!(ok, "OK");
    let killed = runner.join().expect("runner").expect_err("killed");
    assert!(
        killed.to_string().contains(
            "Script killed by user with SCRIPT KILL... script: spin, on @user_function:2."
        ),
        "{killed}"
    );
}

/// SCRIPT DEBUG: NO leaves debugging off (`+OK`, as Redis answers); YES and SYNC, which start
/// Redis's Lua debugger, are refused in one line since shoal has none, and scripts run as
/// before; a wrong mode, the arity, and a call behind replies not yet sent (a pipeline, or
/// inside EXEC) get redis-server 7.0's errors.
#[test]
fn script_debug_turns_debugging_off_and_refuses_the_debugger() {
    let redis = Redis::start();
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    let mut rr = Raw::connect(&format!("127.0.0.1:{}", redis.port));
    for mode in ["YES", "SYNC", "yes", "sync"] {
        assert_eq!(
            r.call(&["SCRIPT", "DEBUG", mode]),
            "-ERR the Lua debugger (SCRIPT DEBUG YES|SYNC) is not supported by shoal\r\n"
        );
    }
    assert_eq!(r.call(&["EVAL", "return 7", "0"]), ":7\r\n");
    assert_eq!(r.call(&["SCRIPT", "DEBUG", "NO"]), "+OK\r\n");
    assert_eq!(
        r.call(&["SCRIPT", "DEBUG", "maybe"]),
        "-ERR Use SCRIPT DEBUG YES/SYNC/NO\r\n"
    );
    assert_eq!(
        r.call(&["SCRIPT", "DEBUG"]),
        "-ERR wrong number of arguments for 'script|debug' command\r\n"
    );
    for args in [
        &["SCRIPT", "DEBUG", "no"][..],
        &["SCRIPT", "DEBUG", "maybe"],
        &["SCRIPT", "DEBUG"],
        &["SCRIPT", "DEBUG", "NO", "extra"],
        &["MULTI"],
        &["SCRIPT", "DEBUG", "NO"],
        &["EXEC"],
    ] {
        assert_eq!(r.call(args), rr.call(args), "{args:?}");
    }
    assert_eq!(
        r.call(&["MULTI"]) + &r.call(&["SCRIPT", "DEBUG", "YES"]) + &r.call(&["EXEC"]),
        "+OK\r\n+QUEUED\r\n*1\r\n-ERR SCRIPT DEBUG must be called outside a pipeline\r\n"
    );
    // Behind a reply of the same batch: one write, two commands.
    let pipeline = [encode(&[b"PING"]), encode(&[b"SCRIPT", b"DEBUG", b"NO"])].concat();
    let mut replies = Vec::new();
    for conn in [&mut r, &mut rr] {
        conn.send(&pipeline);
        replies.push([conn.reply(), conn.reply()].concat());
    }
    assert_eq!(
        String::from_utf8_lossy(&replies[0]),
        "+PONG\r\n-ERR SCRIPT DEBUG must be called outside a pipeline\r\n"
    );
    assert_eq!(replies[0], replies[1]);
    let help: Vec<String> = q(&mut s.client(), &["SCRIPT", "HELP"]);
    let theirs: Vec<String> = q(&mut redis.client(), &["SCRIPT", "HELP"]);
    assert_eq!(help, theirs);
    assert_eq!(
        help[1..3],
        [
            "DEBUG (YES|SYNC|NO)",
            "    Set the debug mode for subsequent scripts executed."
        ]
    );
}

/// The statistics one script run leaves: its reply, then `INFO errorstats`, `total_error_replies`
/// and the calls, rejected and failed calls of the commands it involved.
fn script_stats(port: u16, setup: &[&[&str]], script: &[&str]) -> Vec<String> {
    let mut c = Raw::connect(&format!("127.0.0.1:{port}"));
    for cmd in setup {
        c.call(cmd);
    }
    c.call(&["CONFIG", "RESETSTAT"]);
    let mut seen = vec![c.call(script)];
    c.call(&["CONFIG", "SET", "maxmemory", "0"]);
    let info = c.call(&["INFO", "errorstats"]);
    seen.extend(
        info.lines()
            .filter(|l| l.starts_with("errorstat_"))
            .map(str::to_string),
    );
    let stats = c.call(&["INFO", "stats"]);
    seen.push(format!(
        "total_error_replies={:?}",
        common::info_value(&stats, "total_error_replies")
    ));
    let cmds = c.call(&["INFO", "commandstats"]);
    for name in [
        "eval",
        "eval_ro",
        "set",
        "select",
        "geoadd",
        "ping",
        "nosuchcmd",
    ] {
        let line = cmds
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:")))
            .unwrap_or("");
        // calls, rejected_calls, failed_calls (not the timings).
        let counts: Vec<&str> = line.split(',').filter(|f| !f.starts_with("usec")).collect();
        seen.push(format!("{name}: {}", counts.join(",")));
    }
    seen
}

/// Errors of a script are counted once, where Redis 7.0 counts them: a command the script
/// called that was refused (OOM, a write from a read-only script) counts as that command's
/// rejected call and as one error reply; a command that ran and failed (SELECT 99, WRONGTYPE)
/// as its failed call and one error reply; the script that then fails with that error counts
/// as a failed call without a second error reply; an error the script makes itself
/// (`redis.error_reply`, `error()`) is one error reply under its own code. Each case is run on
/// shoal and on redis-server 7.0 and the statistics compared.
#[test]
fn script_errors_are_counted_once_where_redis_counts_them() {
    let shoal = Shoal::start(&["--maxmemory-policy", "noeviction"]);
    let redis = Redis::start();
    let oom: &[&[&str]] = &[&["CONFIG", "SET", "maxmemory", "1"]];
    let none: &[&[&str]] = &[];
    let wrongtype: &[&[&str]] = &[&["SET", "Sicily", "1"]];
    let pcall_oom = "local t = redis.pcall('set','x','y') \
                     if t['err'] == \"OOM command not allowed when used memory > 'maxmemory'.\" \
                     then return 1 else return 0 end";
    let cases: Vec<(&[&[&str]], Vec<&str>)> = vec![
        (
            oom,
            vec!["EVAL", "return redis.call('set','x','y')", "1", "x"],
        ),
        (oom, vec!["EVAL", pcall_oom, "1", "x"]),
        (
            oom,
            vec!["EVAL", "return redis.pcall('set','x','y')", "1", "x"],
        ),
        (none, vec!["EVAL", "return redis.call('select',99)", "0"]),
        (
            none,
            vec![
                "EVAL",
                "local t = redis.pcall('select',99) return t['err']",
                "0",
            ],
        ),
        (
            none,
            vec!["EVAL_RO", "return redis.call('set','x','y')", "1", "x"],
        ),
        (
            none,
            vec![
                "EVAL_RO",
                "local t = redis.pcall('set','x','y') return t['err']",
                "1",
                "x",
            ],
        ),
        (
            wrongtype,
            vec![
                "EVAL",
                "return redis.call('GEOADD', 'Sicily', '13.36', '38.11', 'Palermo')",
                "1",
                "x",
            ],
        ),
        (
            none,
            vec![
                "EVAL",
                "return redis.error_reply('MY_ERR_CODE custom msg')",
                "0",
            ],
        ),
        (none, vec!["EVAL", "return redis.error_reply('')", "0"]),
        (none, vec!["EVAL", "return {err='no code here'}", "0"]),
        (none, vec!["EVAL", "error('boom')", "0"]),
        (none, vec!["EVAL", "return redis.call('nosuchcmd')", "0"]),
        (none, vec!["EVAL", "return redis.call()", "0"]),
        (none, vec!["EVAL", "return redis.call('ping', {})", "0"]),
        (
            none,
            vec!["EVAL", "return redis.call('ping', 'a', 'b')", "0"],
        ),
    ];
    for (setup, script) in &cases {
        assert_eq!(
            script_stats(shoal.port, setup, script),
            script_stats(redis.port, setup, script),
            "{script:?} after {setup:?}: shoal (left) and redis-server (right) count differently"
        );
    }
}
