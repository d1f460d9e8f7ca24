//! Connection commands over the wire: PING/ECHO, HELLO 2/3 and the RESP3 reply shapes, AUTH with
//! `requirepass`, SELECT isolation, QUIT, RESET and the CLIENT family (ID, SETNAME/GETNAME, LIST,
//! INFO, KILL, REPLY, NO-EVICT, NO-TOUCH, SETINFO). Expected bytes were checked against
//! redis-server 7.0.15 (NO-TOUCH, a Redis 7.2 command, against Redis 7.2's source).

mod common;

use common::{Raw, Shoal, q, try_q};

const HELLO3_PREFIX: &str = "%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:";
const HELLO2_PREFIX: &str = "*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n:2\r\n$2\r\nid\r\n:";
const HELLO_SUFFIX: &str =
    "\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n";

/// The integer of a `:<n>\r\n` reply.
fn int_of(reply: &str) -> i64 {
    reply
        .strip_prefix(':')
        .and_then(|r| r.strip_suffix("\r\n"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not an integer reply: {reply:?}"))
}

#[test]
fn ping_and_echo_answer_like_redis() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert_eq!(r.call(&["PING"]), "+PONG\r\n");
    assert_eq!(r.call(&["ping", "hello world"]), "$11\r\nhello world\r\n");
    assert_eq!(r.call(&["ECHO", ""]), "$0\r\n\r\n");
    assert_eq!(r.call(&["echo", "x y"]), "$3\r\nx y\r\n");
    assert_eq!(
        r.call(&["PING", "a", "b"]),
        "-ERR wrong number of arguments for 'ping' command\r\n"
    );
    assert_eq!(
        r.call(&["ECHO"]),
        "-ERR wrong number of arguments for 'echo' command\r\n"
    );
    // Errors are replies: the connection goes on.
    assert_eq!(r.call(&["PING"]), "+PONG\r\n");
    let mut c = s.client();
    let pong: String = q(&mut c, &["PING"]);
    assert_eq!(pong, "PONG");
}

#[test]
fn hello_3_switches_to_resp3_and_hello_2_switches_back() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    let id = int_of(&r.call(&["CLIENT", "ID"]));
    assert_eq!(
        r.call(&["HELLO", "3"]),
        format!("{HELLO3_PREFIX}{id}{HELLO_SUFFIX}")
    );
    // Now RESP3: a missing key is the RESP3 null.
    assert_eq!(r.call(&["GET", "missing"]), "_\r\n");
    // HELLO with no version reports the current protocol, in its shape.
    assert!(r.call(&["HELLO"]).starts_with(HELLO3_PREFIX));
    assert_eq!(
        r.call(&["HELLO", "2"]),
        format!("{HELLO2_PREFIX}{id}{HELLO_SUFFIX}")
    );
    assert_eq!(r.call(&["GET", "missing"]), "$-1\r\n");
}

#[test]
fn hello_rejects_bad_versions_and_options() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert_eq!(
        r.call(&["HELLO", "4"]),
        "-NOPROTO unsupported protocol version\r\n"
    );
    assert_eq!(
        r.call(&["HELLO", "x"]),
        "-ERR Protocol version is not an integer or out of range\r\n"
    );
    assert_eq!(
        r.call(&["HELLO", "3", "BOGUS"]),
        "-ERR Syntax error in HELLO option 'BOGUS'\r\n"
    );
    assert_eq!(
        r.call(&["HELLO", "3", "AUTH", "default"]),
        "-ERR Syntax error in HELLO option 'AUTH'\r\n"
    );
    // A failed HELLO leaves the protocol as it was.
    assert_eq!(r.call(&["GET", "missing"]), "$-1\r\n");
    // SETNAME inside HELLO names the connection.
    assert!(
        r.call(&["HELLO", "2", "SETNAME", "app"])
            .starts_with(HELLO2_PREFIX)
    );
    assert_eq!(r.call(&["CLIENT", "GETNAME"]), "$3\r\napp\r\n");
}

#[test]
fn resp3_replies_use_resp3_nulls_maps_and_verbatim_strings() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert!(r.call(&["HELLO", "3"]).starts_with('%'));
    assert_eq!(r.call(&["SET", "a", "1"]), "+OK\r\n");
    assert_eq!(r.call(&["MGET", "a", "nope"]), "*2\r\n$1\r\n1\r\n_\r\n");
    assert_eq!(r.call(&["CLIENT", "GETNAME"]), "_\r\n");
    assert_eq!(r.call(&["SET", "a", "2", "NX"]), "_\r\n");
    // INCRBYFLOAT replies a bulk string in both protocols, as Redis does.
    assert_eq!(r.call(&["INCRBYFLOAT", "f", "1.5"]), "$3\r\n1.5\r\n");
    assert_eq!(r.call(&["INCRBYFLOAT", "f", "0.25"]), "$4\r\n1.75\r\n");
    // CONFIG GET is a map in RESP3.
    assert_eq!(
        r.call(&["CONFIG", "GET", "maxmemory-policy"]),
        "%1\r\n$16\r\nmaxmemory-policy\r\n$15\r\nallkeys-tinylfu\r\n"
    );
    // CLIENT INFO is a verbatim string in RESP3.
    let info = r.call(&["CLIENT", "INFO"]);
    assert!(
        info.starts_with('=') && info.contains("\r\ntxt:id="),
        "{info:?}"
    );
    assert!(info.contains(" resp=3"), "{info:?}");
    // The same commands in RESP2.
    let mut r2 = s.raw();
    assert_eq!(r2.call(&["GET", "nope"]), "$-1\r\n");
    assert_eq!(r2.call(&["MGET", "a", "nope"]), "*2\r\n$1\r\n1\r\n$-1\r\n");
    assert_eq!(
        r2.call(&["CONFIG", "GET", "maxmemory-policy"]),
        "*2\r\n$16\r\nmaxmemory-policy\r\n$15\r\nallkeys-tinylfu\r\n"
    );
    assert!(r2.call(&["CLIENT", "INFO"]).starts_with('$'));
}

#[test]
fn requirepass_gates_commands_until_auth() {
    let s = Shoal::start(&["--requirepass", "s3cret"]);
    let mut r = s.raw();
    assert_eq!(
        r.call(&["GET", "k"]),
        "-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(r.call(&["PING"]), "-NOAUTH Authentication required.\r\n");
    assert_eq!(
        r.call(&["AUTH", "wrong"]),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(
        r.call(&["AUTH", "someone", "s3cret"]),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(
        r.call(&["GET", "k"]),
        "-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(r.call(&["AUTH", "s3cret"]), "+OK\r\n");
    assert_eq!(r.call(&["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(r.call(&["GET", "k"]), "$1\r\nv\r\n");

    // AUTH with the user name.
    let mut r2 = s.raw();
    assert_eq!(r2.call(&["AUTH", "default", "s3cret"]), "+OK\r\n");
    assert_eq!(r2.call(&["GET", "k"]), "$1\r\nv\r\n");

    // A real client with the password in its URL.
    let mut c = common::connect(format!("redis://:s3cret@127.0.0.1:{}/", s.port));
    let v: String = q(&mut c, &["GET", "k"]);
    assert_eq!(v, "v");
}

#[test]
fn hello_needs_auth_or_authenticates_itself() {
    let s = Shoal::start(&["--requirepass", "pw"]);
    let mut r = s.raw();
    let refused = r.call(&["HELLO", "3"]);
    assert!(
        refused.starts_with("-NOAUTH HELLO must be called with the client already authenticated"),
        "{refused:?}"
    );
    assert_eq!(
        r.call(&["HELLO", "3", "AUTH", "default", "nope"]),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(
        r.call(&["GET", "k"]),
        "-NOAUTH Authentication required.\r\n"
    );
    assert!(
        r.call(&["HELLO", "3", "AUTH", "default", "pw"])
            .starts_with(HELLO3_PREFIX)
    );
    assert_eq!(r.call(&["GET", "k"]), "_\r\n");
}

#[test]
fn auth_without_a_password_configured_is_an_error() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert_eq!(
        r.call(&["AUTH", "x"]),
        "-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n"
    );
    assert_eq!(r.call(&["PING"]), "+PONG\r\n");
}

#[test]
fn select_isolates_databases() {
    let s = Shoal::start(&["--databases", "4"]);
    let mut r = s.raw();
    assert_eq!(r.call(&["SET", "k", "zero"]), "+OK\r\n");
    assert_eq!(r.call(&["SELECT", "1"]), "+OK\r\n");
    assert_eq!(r.call(&["GET", "k"]), "$-1\r\n");
    assert_eq!(r.call(&["SET", "k", "one"]), "+OK\r\n");
    assert_eq!(r.call(&["DBSIZE"]), ":1\r\n");
    assert_eq!(r.call(&["SELECT", "0"]), "+OK\r\n");
    assert_eq!(r.call(&["GET", "k"]), "$4\r\nzero\r\n");
    assert_eq!(r.call(&["SELECT", "3"]), "+OK\r\n");
    assert_eq!(
        r.call(&["SELECT", "4"]),
        "-ERR DB index is out of range\r\n"
    );
    assert_eq!(
        r.call(&["SELECT", "-1"]),
        "-ERR DB index is out of range\r\n"
    );
    assert_eq!(
        r.call(&["SELECT", "x"]),
        "-ERR value is not an integer or out of range\r\n"
    );
    // A failed SELECT keeps the current database (3, empty).
    assert_eq!(r.call(&["GET", "k"]), "$-1\r\n");

    // Each connection has its own selected database: a client opened on db 1 sees "one".
    let mut c = common::connect(format!("redis://127.0.0.1:{}/1", s.port));
    let v: String = q(&mut c, &["GET", "k"]);
    assert_eq!(v, "one");
    let mut c0 = s.client();
    let v: String = q(&mut c0, &["GET", "k"]);
    assert_eq!(v, "zero");
}

#[test]
fn quit_replies_ok_then_closes() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    // Commands pipelined after QUIT are not run.
    r.send(b"*1\r\n$4\r\nQUIT\r\n*3\r\n$3\r\nSET\r\n$5\r\nafter\r\n$1\r\nx\r\n");
    assert_eq!(r.reply(), b"+OK\r\n");
    assert!(r.closed());
    let mut c = s.client();
    let exists: i64 = q(&mut c, &["EXISTS", "after"]);
    assert_eq!(exists, 0);
}

#[test]
fn reset_restores_connection_defaults() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert_eq!(r.call(&["SELECT", "2"]), "+OK\r\n");
    assert_eq!(r.call(&["SET", "in2", "x"]), "+OK\r\n");
    assert!(r.call(&["HELLO", "3"]).starts_with('%'));
    assert_eq!(r.call(&["CLIENT", "SETNAME", "before"]), "+OK\r\n");
    assert_eq!(r.call(&["CLIENT", "NO-EVICT", "on"]), "+OK\r\n");
    assert_eq!(r.call(&["RESET"]), "+RESET\r\n");
    // Back to db 0, RESP2, no name, no no-evict flag.
    assert_eq!(r.call(&["GET", "in2"]), "$-1\r\n");
    assert_eq!(r.call(&["CLIENT", "GETNAME"]), "$-1\r\n");
    let info = r.call(&["CLIENT", "INFO"]);
    assert!(
        info.contains(" db=0 ") && info.contains(" resp=2"),
        "{info}"
    );
    assert!(info.contains(" flags=N "), "{info}");
    assert_eq!(
        r.call(&["RESET", "x"]),
        "-ERR wrong number of arguments for 'reset' command\r\n"
    );
}

#[test]
fn reset_drops_authentication() {
    let s = Shoal::start(&["--requirepass", "pw"]);
    let mut r = s.raw();
    assert_eq!(r.call(&["AUTH", "pw"]), "+OK\r\n");
    assert_eq!(r.call(&["GET", "k"]), "$-1\r\n");
    assert_eq!(r.call(&["RESET"]), "+RESET\r\n");
    assert_eq!(
        r.call(&["GET", "k"]),
        "-NOAUTH Authentication required.\r\n"
    );
}

#[test]
fn client_ids_are_unique_and_match_hello() {
    let s = Shoal::start(&[]);
    let mut a = s.raw();
    let mut b = s.raw();
    let ida = int_of(&a.call(&["CLIENT", "ID"]));
    let idb = int_of(&b.call(&["CLIENT", "ID"]));
    assert!(ida > 0 && idb > 0 && ida != idb);
    assert_eq!(
        int_of(&a.call(&["CLIENT", "ID"])),
        ida,
        "stable per connection"
    );
    let hello = b.call(&["HELLO", "2"]);
    assert!(
        hello.contains(&format!("$2\r\nid\r\n:{idb}\r\n")),
        "{hello}"
    );
}

#[test]
fn client_setname_and_getname() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert_eq!(r.call(&["CLIENT", "GETNAME"]), "$-1\r\n");
    assert_eq!(r.call(&["CLIENT", "SETNAME", "worker-1"]), "+OK\r\n");
    assert_eq!(r.call(&["CLIENT", "GETNAME"]), "$8\r\nworker-1\r\n");
    assert_eq!(
        r.call(&["CLIENT", "SETNAME", "has space"]),
        "-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
    );
    assert_eq!(
        r.call(&["CLIENT", "SETNAME"]),
        "-ERR wrong number of arguments for 'client|setname' command\r\n"
    );
    assert_eq!(r.call(&["CLIENT", "GETNAME"]), "$8\r\nworker-1\r\n");
    // An empty name clears it.
    assert_eq!(r.call(&["CLIENT", "SETNAME", ""]), "+OK\r\n");
    assert_eq!(r.call(&["CLIENT", "GETNAME"]), "$-1\r\n");
    assert_eq!(
        r.call(&["CLIENT", "NOPE"]),
        "-ERR unknown subcommand 'NOPE'. Try CLIENT HELP.\r\n"
    );
}

#[test]
fn client_list_shows_every_connection_with_its_name_db_and_last_command() {
    let s = Shoal::start(&[]);
    let mut a = s.raw();
    let mut b = s.raw();
    assert_eq!(a.call(&["CLIENT", "SETNAME", "alpha"]), "+OK\r\n");
    assert_eq!(b.call(&["CLIENT", "SETNAME", "beta"]), "+OK\r\n");
    assert_eq!(b.call(&["SELECT", "5"]), "+OK\r\n");
    assert_eq!(b.call(&["GET", "x"]), "$-1\r\n");
    let ida = int_of(&a.call(&["CLIENT", "ID"]));
    let idb = int_of(&b.call(&["CLIENT", "ID"]));
    // B's last command before the listing is a GET.
    assert_eq!(b.call(&["GET", "x"]), "$-1\r\n");
    let mut c = s.client();
    let list: String = q(&mut c, &["CLIENT", "LIST"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    let line_a = lines
        .iter()
        .find(|l| l.starts_with(&format!("id={ida} ")))
        .unwrap_or_else(|| panic!("no line for {ida}: {list}"));
    let line_b = lines
        .iter()
        .find(|l| l.starts_with(&format!("id={idb} ")))
        .unwrap_or_else(|| panic!("no line for {idb}: {list}"));
    assert!(
        line_a.contains(" name=alpha ") && line_a.contains(" db=0 "),
        "{line_a}"
    );
    assert!(
        line_b.contains(" name=beta ") && line_b.contains(" db=5 "),
        "{line_b}"
    );
    assert!(line_b.contains(" cmd=get "), "{line_b}");
    for l in &lines {
        assert!(
            l.contains(" addr=127.0.0.1:") && l.contains(" laddr=127.0.0.1:"),
            "{l}"
        );
    }
    // Filtered by ID.
    let only_a: String = q(&mut c, &["CLIENT", "LIST", "ID", &ida.to_string()]);
    assert_eq!(only_a.lines().count(), 1);
    assert!(only_a.starts_with(&format!("id={ida} ")));
    let mut r = s.raw();
    assert_eq!(
        r.call(&["CLIENT", "LIST", "ID", "x"]),
        "-ERR Invalid client ID\r\n"
    );
    assert_eq!(
        r.call(&["CLIENT", "LIST", "TYPE", "bogus"]),
        "-ERR Unknown client type 'bogus'\r\n"
    );
}

#[test]
fn client_info_describes_the_calling_connection() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    let id = int_of(&r.call(&["CLIENT", "ID"]));
    assert_eq!(r.call(&["CLIENT", "SETNAME", "me"]), "+OK\r\n");
    assert_eq!(r.call(&["SELECT", "3"]), "+OK\r\n");
    let info = r.call(&["CLIENT", "INFO"]);
    let body = info.split_once("\r\n").unwrap().1;
    assert!(
        body.starts_with(&format!("id={id} addr=127.0.0.1:")),
        "{body}"
    );
    assert!(
        body.ends_with("\n\r\n"),
        "one line ending in a newline: {body:?}"
    );
    for field in [" name=me ", " db=3 ", " resp=2", " user=default "] {
        assert!(body.contains(field), "missing {field:?} in {body}");
    }
    // Redis reports the command being run: cmd=client|info.
    assert!(body.contains(" cmd=client|info "), "{body}");
}

#[test]
fn client_kill_by_id_closes_that_connection_only() {
    let s = Shoal::start(&[]);
    let mut victim = s.raw();
    let mut killer = s.raw();
    let victim_id = int_of(&victim.call(&["CLIENT", "ID"]));
    assert_eq!(
        killer.call(&["CLIENT", "KILL", "ID", &victim_id.to_string()]),
        ":1\r\n"
    );
    assert!(
        victim.closed(),
        "the killed connection is closed by the server"
    );
    assert_eq!(killer.call(&["PING"]), "+PONG\r\n");
    // Killing it again finds nobody.
    assert_eq!(
        killer.call(&["CLIENT", "KILL", "ID", &victim_id.to_string()]),
        ":0\r\n"
    );
    assert_eq!(
        killer.call(&["CLIENT", "KILL", "ID", "0"]),
        "-ERR client-id should be greater than 0\r\n"
    );
    assert_eq!(
        killer.call(&["CLIENT", "KILL", "1.2.3.4:5"]),
        "-ERR No such client\r\n"
    );
    assert_eq!(
        killer.call(&["CLIENT", "KILL", "ID", "1", "SKIPME", "maybe"]),
        "-ERR syntax error\r\n"
    );
    // The connection count reflects the kill.
    let mut c = s.client();
    common::wait_until("connected_clients back to 2", || {
        common::info_u64(&mut c, "clients", "connected_clients") == 2
    });
}

#[test]
fn client_kill_by_address_and_skipme() {
    let s = Shoal::start(&[]);
    let mut victim = s.raw();
    let addr = victim.stream.local_addr().unwrap().to_string();
    assert_eq!(victim.call(&["PING"]), "+PONG\r\n");
    let mut killer = s.raw();
    // Old form: CLIENT KILL addr:port.
    assert_eq!(killer.call(&["CLIENT", "KILL", &addr]), "+OK\r\n");
    assert!(victim.closed());
    // SKIPME yes (the default) spares the caller; SKIPME no does not.
    let my_id = int_of(&killer.call(&["CLIENT", "ID"])).to_string();
    assert_eq!(killer.call(&["CLIENT", "KILL", "ID", &my_id]), ":0\r\n");
    assert_eq!(
        killer.call(&["CLIENT", "KILL", "ID", &my_id, "SKIPME", "no"]),
        ":1\r\n"
    );
    assert!(killer.closed());
}

#[test]
fn client_reply_off_on_and_skip() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    // OFF: nothing comes back until ON, whose +OK is the first reply we see.
    r.cmd(&[b"CLIENT", b"REPLY", b"OFF"]);
    r.cmd(&[b"SET", b"a", b"1"]);
    r.cmd(&[b"GET", b"a"]);
    r.cmd(&[b"NOSUCHCOMMAND"]);
    r.cmd(&[b"CLIENT", b"REPLY", b"ON"]);
    assert_eq!(r.reply(), b"+OK\r\n");
    assert_eq!(
        r.call(&["GET", "a"]),
        "$1\r\n1\r\n",
        "commands ran while silent"
    );
    // SKIP: the next command's reply is dropped, then replies resume.
    r.cmd(&[b"CLIENT", b"REPLY", b"SKIP"]);
    r.cmd(&[b"SET", b"b", b"2"]);
    r.cmd(&[b"GET", b"b"]);
    assert_eq!(r.reply(), b"$1\r\n2\r\n");
    // CLIENT REPLY ON right after a SKIP clears it and is answered (Redis's introspection unit).
    r.cmd(&[b"CLIENT", b"REPLY", b"SKIP"]);
    r.cmd(&[b"CLIENT", b"REPLY", b"ON"]);
    assert_eq!(r.reply(), b"+OK\r\n");
    assert_eq!(r.call(&["PING"]), "+PONG\r\n");
    assert_eq!(
        r.call(&["CLIENT", "REPLY", "maybe"]),
        "-ERR syntax error\r\n"
    );
}

#[test]
fn client_no_evict_sets_the_e_flag() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert!(r.call(&["CLIENT", "INFO"]).contains(" flags=N "));
    assert_eq!(r.call(&["CLIENT", "NO-EVICT", "on"]), "+OK\r\n");
    assert!(r.call(&["CLIENT", "INFO"]).contains(" flags=e "));
    assert_eq!(r.call(&["CLIENT", "NO-EVICT", "off"]), "+OK\r\n");
    assert!(r.call(&["CLIENT", "INFO"]).contains(" flags=N "));
    assert_eq!(
        r.call(&["CLIENT", "NO-EVICT", "maybe"]),
        "-ERR syntax error\r\n"
    );
}

#[test]
fn client_setinfo_records_library_name_and_version() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert_eq!(
        r.call(&["CLIENT", "SETINFO", "LIB-NAME", "mylib"]),
        "+OK\r\n"
    );
    assert_eq!(
        r.call(&["CLIENT", "SETINFO", "lib-ver", "1.2.3"]),
        "+OK\r\n"
    );
    let info = r.call(&["CLIENT", "INFO"]);
    assert!(info.contains(" lib-name=mylib lib-ver=1.2.3"), "{info}");
    assert_eq!(
        r.call(&["CLIENT", "SETINFO", "bogus", "x"]),
        "-ERR Unrecognized option 'bogus'\r\n"
    );
    assert_eq!(
        r.call(&["CLIENT", "SETINFO", "lib-name", "a b"]),
        "-ERR lib-name cannot contain spaces, newlines or special characters.\r\n"
    );
    // redis-rs announces itself with SETINFO when it connects.
    let mut c = s.client();
    let info: String = q(&mut c, &["CLIENT", "INFO"]);
    assert!(info.contains(" lib-name=redis-rs "), "{info}");
    // And a name-bearing error from redis-rs is a server error the connection survives.
    let e = try_q::<String>(&mut c, &["CLIENT", "SETNAME", "a b"]).unwrap_err();
    assert_eq!(e.code(), Some("ERR"));
    let pong: String = q(&mut c, &["PING"]);
    assert_eq!(pong, "PONG");
}

#[test]
fn errors_on_one_connection_do_not_disturb_another() {
    let s = Shoal::start(&[]);
    let mut noisy = s.raw();
    let mut quiet = Raw::connect(&s.addr());
    for i in 0..50 {
        assert!(
            noisy
                .call(&["NOPE", &i.to_string()])
                .starts_with("-ERR unknown command 'NOPE'")
        );
        assert_eq!(
            quiet.call(&["ECHO", &i.to_string()]),
            format!("${}\r\n{i}\r\n", i.to_string().len())
        );
    }
}

/// `CLIENT PAUSE timeout [WRITE|ALL]` holds clients' commands as Redis 7.0 does: under WRITE
/// only writes and commands that may replicate (PUBLISH) wait, reads are served; under ALL
/// everything waits (CLIENT UNPAUSE too); `CLIENT UNPAUSE` ends a WRITE pause at once; errors as
/// Redis's.
/// Under `CLIENT PAUSE WRITE`, what waits is decided as Redis 7.0 decides it: a script by the
/// flags it declared (`no-writes` runs; no shebang, or a shebang without `no-writes`, waits), a
/// no-writes function runs, a transaction of reads runs and one with a write waits at EXEC, a
/// request with the wrong arity is answered at once; waiting clients count in `blocked_clients`;
/// a read-only script may not PUBLISH. Expiry stops: a key past its TTL reads as absent but is
/// not deleted (`expired_keys` unchanged) until the pause ends.
#[test]
fn client_pause_write_judges_scripts_and_transactions_and_holds_expiry() {
    let s = Shoal::start(&[]);
    let mut admin = s.raw();
    let blocked = |a: &mut Raw| -> String {
        let info = a.call(&["INFO", "clients"]);
        common::info_value(&info, "blocked_clients").unwrap_or_default()
    };
    let expired = |a: &mut Raw| -> String {
        let info = a.call(&["INFO", "stats"]);
        common::info_value(&info, "expired_keys").unwrap_or_default()
    };
    assert_eq!(admin.call(&["SET", "x", "y"]), "+OK\r\n");
    assert_eq!(admin.call(&["SET", "e", "1", "PX", "150"]), "+OK\r\n");
    let lib = "#!lua name=plib\nredis.register_function{function_name='ro', \
               callback=function() return 'hello' end, flags={'no-writes'}}";
    assert_eq!(admin.call(&["FUNCTION", "LOAD", lib]), "$4\r\nplib\r\n");
    // A transaction with a write, queued before the pause (queueing a write waits too, as in
    // Redis).
    let mut tx = s.raw();
    assert_eq!(tx.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(tx.call(&["SET", "x", "z"]), "+QUEUED\r\n");
    let expired_before = expired(&mut admin);
    assert_eq!(
        admin.call(&["CLIENT", "PAUSE", "60000", "WRITE"]),
        "+OK\r\n"
    );
    // Served at once.
    let mut c = s.raw();
    for (args, want) in [
        (
            &["EVAL", "#!lua flags=no-writes\nreturn 1", "0"][..],
            ":1\r\n",
        ),
        (
            &["EVAL_RO", "return redis.call('get', KEYS[1])", "1", "x"],
            "$1\r\ny\r\n",
        ),
        (&["FCALL", "ro", "0"], "$5\r\nhello\r\n"),
        (
            &["SET", "x"],
            "-ERR wrong number of arguments for 'set' command\r\n",
        ),
        (
            &["EVAL_RO", "return redis.call('publish', 'ch', 'm')", "0"],
            "-ERR Write commands are not allowed from read-only scripts.",
        ),
        (&["MULTI"], "+OK\r\n"),
        (&["GET", "x"], "+QUEUED\r\n"),
        (&["EXEC"], "*1\r\n$1\r\ny\r\n"),
    ] {
        let got = c.call(args);
        // (An error raised in a script goes on with the script's name and line.)
        assert!(got.starts_with(want), "{args:?}: {got:?}");
    }
    // Held until UNPAUSE, each counted as blocked.
    let mut waiting = Vec::new();
    for args in [
        &["EVAL", "return 1", "0"][..],
        &["EVAL", "#!lua\nreturn 2", "0"],
        &["PUBLISH", "ch", "m"],
    ] {
        let mut w = s.raw();
        let a: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        w.cmd(&a);
        waiting.push(w);
    }
    tx.cmd(&[b"EXEC"]);
    let addr = s.addr();
    common::wait_until("four clients wait for the pause", || {
        blocked(&mut Raw::connect(&addr)) == "4"
    });
    // The key past its TTL reads as absent, and is not deleted while paused.
    common::wait_until("e is past its TTL", || {
        admin.call(&["GET", "e"]) == "$-1\r\n"
    });
    assert_eq!(expired(&mut admin), expired_before);
    assert_eq!(admin.call(&["CLIENT", "UNPAUSE"]), "+OK\r\n");
    let replies: Vec<String> = waiting
        .iter_mut()
        .map(|w| String::from_utf8(w.reply()).unwrap())
        .collect();
    assert_eq!(replies, [":1\r\n", ":2\r\n", ":0\r\n"]);
    assert_eq!(String::from_utf8(tx.reply()).unwrap(), "*1\r\n+OK\r\n");
    assert_eq!(blocked(&mut admin), "0");
    // Unpaused: the next read deletes it.
    assert_eq!(admin.call(&["GET", "e"]), "$-1\r\n");
    let after: u64 = expired(&mut admin).parse().unwrap();
    assert!(after > expired_before.parse::<u64>().unwrap());
}

#[test]
fn client_pause_holds_writes_or_everything_until_the_deadline_or_unpause() {
    use std::time::{Duration, Instant};
    let s = Shoal::start(&[]);
    let mut admin = s.raw();
    let mut c = s.client();
    let _: () = q(&mut c, &["SET", "k", "v"]);
    assert_eq!(admin.call(&["CLIENT", "PAUSE", "600", "WRITE"]), "+OK\r\n");
    let t0 = Instant::now();
    let v: String = q(&mut c, &["GET", "k"]);
    assert_eq!(v, "v");
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "a read is served"
    );
    let n: i64 = q(&mut c, &["PUBLISH", "ch", "m"]);
    assert_eq!(n, 0);
    assert!(
        t0.elapsed() >= Duration::from_millis(550),
        "PUBLISH waits for the pause"
    );
    // A write waiting on a long pause goes on as soon as another client unpauses.
    assert_eq!(
        admin.call(&["CLIENT", "PAUSE", "60000", "WRITE"]),
        "+OK\r\n"
    );
    let mut writer = s.raw();
    writer.cmd(&[b"SET", b"k", b"w"]);
    let t1 = Instant::now();
    std::thread::sleep(Duration::from_millis(100));
    let seen: String = q(&mut c, &["GET", "k"]);
    assert_eq!(seen, "v", "the write is still held");
    assert_eq!(admin.call(&["CLIENT", "UNPAUSE"]), "+OK\r\n");
    assert_eq!(String::from_utf8(writer.reply()).unwrap(), "+OK\r\n");
    assert!(t1.elapsed() < Duration::from_secs(30));
    // ALL holds every command, even CLIENT UNPAUSE, until the deadline.
    assert_eq!(admin.call(&["CLIENT", "PAUSE", "400", "ALL"]), "+OK\r\n");
    let t2 = Instant::now();
    assert_eq!(admin.call(&["CLIENT", "UNPAUSE"]), "+OK\r\n");
    assert!(
        t2.elapsed() >= Duration::from_millis(350),
        "{:?}",
        t2.elapsed()
    );
    for (args, want) in [
        (
            &["CLIENT", "PAUSE", "-1"][..],
            "-ERR timeout is negative\r\n",
        ),
        (
            &["CLIENT", "PAUSE", "x"][..],
            "-ERR timeout is not an integer or out of range\r\n",
        ),
        (
            &["CLIENT", "PAUSE", "10", "foo"][..],
            "-ERR CLIENT PAUSE mode must be WRITE or ALL\r\n",
        ),
        (
            &["CLIENT", "PAUSE", "10", "all", "extra"][..],
            "-ERR unknown subcommand or wrong number of arguments for 'PAUSE'. Try CLIENT HELP.\r\n",
        ),
    ] {
        assert_eq!(admin.call(args), want, "{args:?}");
    }
}

/// CLIENT NO-TOUCH (Redis 7.2): reads by a client in that mode leave a key's LFU counter alone,
/// TOUCH still counts, and the mode shows as flag `T` in CLIENT LIST until turned off or RESET.
#[test]
fn client_no_touch_reads_leave_access_info_alone_but_touch_counts() {
    let s = Shoal::start(&["--maxmemory-policy", "allkeys-lfu"]);
    let mut admin = s.raw();
    let mut quiet = s.raw();
    admin.call(&["SET", "k", "v"]);
    admin.call(&["HSET", "h", "f", "v"]);
    let freq = |c: &mut Raw, key: &str| int_of(&c.call(&["OBJECT", "FREQ", key]));
    let start = freq(&mut admin, "k");
    assert_eq!(quiet.call(&["CLIENT", "NO-TOUCH", "ON"]), "+OK\r\n");
    assert_eq!(
        quiet.call(&["CLIENT", "NO-TOUCH", "maybe"]),
        "-ERR syntax error\r\n"
    );
    for _ in 0..300 {
        assert_eq!(quiet.call(&["GET", "k"]), "$1\r\nv\r\n");
        quiet.call(&["HGET", "h", "f"]);
        quiet.call(&["MGET", "k", "h"]);
    }
    assert_eq!(freq(&mut admin, "k"), start, "NO-TOUCH reads do not count");
    assert_eq!(freq(&mut admin, "h"), start);
    let list = quiet.call(&["CLIENT", "LIST"]);
    let me = int_of(&quiet.call(&["CLIENT", "ID"]));
    let line = list
        .lines()
        .find(|l| l.contains(&format!("id={me} ")))
        .expect("own line");
    assert!(line.contains(" flags=T "), "{line}");
    // TOUCH always touches: the first access from the initial counter always increments.
    assert_eq!(quiet.call(&["TOUCH", "k"]), ":1\r\n");
    assert_eq!(freq(&mut admin, "k"), start + 1);
    // Off again: reads count (the counter is logarithmic, so only "grew" is certain).
    assert_eq!(quiet.call(&["CLIENT", "NO-TOUCH", "OFF"]), "+OK\r\n");
    for _ in 0..300 {
        quiet.call(&["GET", "k"]);
    }
    assert!(freq(&mut admin, "k") > start + 1);
    // RESET clears the mode.
    quiet.call(&["CLIENT", "NO-TOUCH", "ON"]);
    quiet.call(&["RESET"]);
    let list = quiet.call(&["CLIENT", "LIST", "ID", &me.to_string()]);
    assert!(list.contains(" flags=N "), "{list}");
    let help = admin.call(&["CLIENT", "HELP"]);
    assert!(
        help.contains(
            "+NO-TOUCH (ON|OFF)\r\n+    Will not touch LRU/LFU stats when this mode is on.\r\n"
        ),
        "{help}"
    );
}

/// The timer of the server's side of the connection `client` (from `/proc/net/tcp`): its kind
/// (0 none, 1 retransmit, 2 keepalive) and hundredths of a second until it fires. Waits, bounded,
/// while a retransmit timer runs (the client's ACK of the last reply may be delayed).
fn server_side_timer(server_port: u16, client: &std::net::TcpStream) -> (u32, u64) {
    let client_port = client.local_addr().expect("local address").port();
    let port_of = |field: &str| {
        let hex = field.rsplit(':').next().expect("ip:port");
        u16::from_str_radix(hex, 16).expect("hex port")
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
        let line = table
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| port_of(f[1]) == server_port && port_of(f[2]) == client_port)
            .expect("the server's socket of this connection");
        let (kind, when) = line[5].split_once(':').expect("tr:tm->when");
        let kind = u32::from_str_radix(kind, 16).expect("timer kind");
        let when = u64::from_str_radix(when, 16).expect("timer");
        if kind != 1 || std::time::Instant::now() > deadline {
            return (kind, when);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn tcp_keepalive_probes_idle_clients_and_config_set_applies_to_new_connections() {
    let s = Shoal::start(&[]);
    // The default, 300 s as in Redis: the server's socket runs a keepalive timer of at most 300 s.
    let mut a = s.raw();
    assert_eq!(a.call(&["PING"]), "+PONG\r\n");
    let (kind, when) = server_side_timer(s.port, &a.stream);
    assert_eq!(kind, 2, "a keepalive timer on the server's socket");
    assert!((25_000..=30_000).contains(&when), "300 s: {when}");
    // A new value applies to connections accepted after it.
    let mut c = s.raw();
    assert_eq!(c.call(&["CONFIG", "SET", "tcp-keepalive", "60"]), "+OK\r\n");
    let mut b = s.raw();
    assert_eq!(b.call(&["PING"]), "+PONG\r\n");
    let (kind, when) = server_side_timer(s.port, &b.stream);
    assert_eq!(kind, 2);
    assert!((5_000..=6_000).contains(&when), "60 s: {when}");
    // 0 turns it off.
    assert_eq!(c.call(&["CONFIG", "SET", "tcp-keepalive", "0"]), "+OK\r\n");
    let mut d = s.raw();
    assert_eq!(d.call(&["PING"]), "+PONG\r\n");
    assert_eq!(
        server_side_timer(s.port, &d.stream).0,
        0,
        "no timer without keepalive"
    );
    // The option as Redis spells it, at start.
    let off = Shoal::start(&["--tcp-keepalive", "0"]);
    let mut e = off.raw();
    assert_eq!(e.call(&["PING"]), "+PONG\r\n");
    assert_eq!(server_side_timer(off.port, &e.stream).0, 0);
}
