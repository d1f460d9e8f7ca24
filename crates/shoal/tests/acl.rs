//! ACL users over the wire: a restricted user through redis-rs (commands, categories, key patterns
//! with read/write permissions, channels, shoal's internal commands), AUTH on another connection,
//! the ACL log, `requirepass` as the default user's password, connections of a deleted user, and
//! `ACL SAVE`/`LOAD` through a real file (all or nothing, the bad line named). Expected texts were
//! checked against redis-server 7.0.15.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::{Raw, Shoal, q, try_q, wait_until};

/// A directory of its own under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("shoal-acl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        TempDir(d)
    }

    fn file(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn error_text<T: std::fmt::Debug>(r: redis::RedisResult<T>) -> String {
    let e = r.expect_err("an error reply");
    format!("{} {}", e.code().unwrap_or(""), e.detail().unwrap_or(""))
}

#[test]
fn a_restricted_user_runs_only_what_its_rules_allow() {
    let s = Shoal::start(&[]);
    let mut admin = s.client();
    let _: () = q(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "app",
            "on",
            ">secret",
            "~app:*",
            "%R~shared:*",
            "&news",
            "+@read",
            "+@write",
            "-@dangerous",
            "+publish",
            "+acl|whoami",
            "+client|list",
        ],
    );
    let url = format!("redis://app:secret@127.0.0.1:{}/", s.port);
    let mut app = common::connect(url.as_str());
    let who: String = q(&mut app, &["ACL", "WHOAMI"]);
    assert_eq!(who, "app");
    let _: () = q(&mut app, &["SET", "app:1", "v"]);
    let v: String = q(&mut app, &["GET", "app:1"]);
    assert_eq!(v, "v");
    let _: Option<String> = q(&mut app, &["GET", "shared:1"]);
    assert_eq!(
        error_text(try_q::<()>(&mut app, &["SET", "shared:1", "v"])),
        "NOPERM this user has no permissions to access one of the keys used as arguments"
    );
    assert_eq!(
        error_text(try_q::<()>(&mut app, &["GET", "other"])),
        "NOPERM this user has no permissions to access one of the keys used as arguments"
    );
    assert_eq!(
        error_text(try_q::<()>(&mut app, &["FLUSHALL"])),
        "NOPERM this user has no permissions to run the 'flushall' command"
    );
    assert_eq!(
        error_text(try_q::<()>(&mut app, &["CONFIG", "GET", "maxmemory"])),
        "NOPERM this user has no permissions to run the 'config|get' command"
    );
    let n: i64 = q(&mut app, &["PUBLISH", "news", "m"]);
    assert_eq!(n, 0);
    assert_eq!(
        error_text(try_q::<()>(&mut app, &["PUBLISH", "gossip", "m"])),
        "NOPERM this user has no permissions to access one of the channels used as arguments"
    );
    // shoal's internal commands are @admin @dangerous.
    for internal in [
        &["REPAIRPUT", "app:1", "7", "-1", "x"][..],
        &["REPAIRDEL", "app:1"],
        &["SLOTKEYS", "0"],
        &["SLOTDIGEST", "0"],
        &["REPLCONF", "listening-port", "1"],
    ] {
        let name = internal[0].to_ascii_lowercase();
        assert_eq!(
            error_text(try_q::<()>(&mut app, internal)),
            format!("NOPERM this user has no permissions to run the '{name}' command")
        );
    }
    let list: String = q(&mut admin, &["CLIENT", "LIST"]);
    assert!(list.contains(" user=app "), "{list}");
    // The log, newest first, with Redis's fields.
    let log: Vec<redis::Value> = q(&mut admin, &["ACL", "LOG", "2"]);
    assert_eq!(log.len(), 2);
    let first = format!("{:?}", log[0]);
    assert!(
        first.contains("replconf") && first.contains("app"),
        "{first}"
    );
    for field in [
        "count",
        "reason",
        "context",
        "object",
        "username",
        "age-seconds",
        "client-info",
    ] {
        assert!(first.contains(field), "{field} in {first}");
    }
    let _: () = q(&mut admin, &["ACL", "LOG", "RESET"]);
    let log: Vec<redis::Value> = q(&mut admin, &["ACL", "LOG"]);
    assert!(log.is_empty());
}

#[test]
fn auth_as_a_user_on_a_second_connection_and_deleting_it_disconnects() {
    let s = Shoal::start(&[]);
    let mut admin = s.raw();
    assert_eq!(
        admin.call(&["ACL", "SETUSER", "bob", "on", ">pw", "+@all", "~*"]),
        "+OK\r\n"
    );
    let mut bob = Raw::connect(&s.addr());
    assert_eq!(
        bob.call(&["AUTH", "bob", "nope"]),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(
        bob.call(&["AUTH", "ghost", "pw"]),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(bob.call(&["AUTH", "bob", "pw"]), "+OK\r\n");
    assert_eq!(bob.call(&["ACL", "WHOAMI"]), "$3\r\nbob\r\n");
    // Failed AUTHs are logged with reason `auth`, the object `auth` and the name given.
    let log = admin.call(&["ACL", "LOG"]);
    assert!(log.contains("$4\r\nauth\r\n$7\r\ncontext\r\n$8\r\ntoplevel\r\n$6\r\nobject\r\n$4\r\nauth\r\n$8\r\nusername\r\n$5\r\nghost\r\n"), "{log}");
    // HELLO AUTH authenticates too.
    let mut hello = Raw::connect(&s.addr());
    let r = hello.call(&["HELLO", "3", "AUTH", "bob", "pw"]);
    assert!(r.starts_with("%7\r\n"), "{r}");
    assert_eq!(hello.call(&["ACL", "WHOAMI"]), "$3\r\nbob\r\n");
    // An off user cannot log in.
    assert_eq!(admin.call(&["ACL", "SETUSER", "bob", "off"]), "+OK\r\n");
    let mut late = Raw::connect(&s.addr());
    assert_eq!(
        late.call(&["AUTH", "bob", "pw"]),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(admin.call(&["ACL", "DELUSER", "bob"]), ":1\r\n");
    assert!(bob.closed(), "a deleted user's connection is closed");
    assert!(hello.closed());
    assert_eq!(late.call(&["PING"]), "+PONG\r\n");
}

#[test]
fn requirepass_is_the_default_users_password() {
    let s = Shoal::start(&[]);
    let mut admin = s.raw();
    assert_eq!(
        admin.call(&["CONFIG", "SET", "requirepass", "pw"]),
        "+OK\r\n"
    );
    let getuser = admin.call(&["ACL", "GETUSER", "default"]);
    assert!(
        getuser.contains("30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4"),
        "{getuser}"
    );
    let mut c = Raw::connect(&s.addr());
    assert_eq!(
        c.call(&["GET", "k"]),
        "-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(c.call(&["AUTH", "default", "pw"]), "+OK\r\n");
    assert_eq!(c.call(&["CONFIG", "SET", "requirepass", ""]), "+OK\r\n");
    let list = c.call(&["ACL", "LIST"]);
    assert!(
        list.contains("user default on nopass ~* &* +@all"),
        "{list}"
    );
    // ACL SETUSER on the default user decides whether new connections must authenticate.
    assert_eq!(c.call(&["ACL", "SETUSER", "default", ">other"]), "+OK\r\n");
    let mut d = Raw::connect(&s.addr());
    assert_eq!(d.call(&["PING"]), "-NOAUTH Authentication required.\r\n");
    assert_eq!(d.call(&["AUTH", "other"]), "+OK\r\n");
    assert_eq!(d.call(&["ACL", "SETUSER", "default", "nopass"]), "+OK\r\n");
}

#[test]
fn acl_save_and_load_round_trip_through_a_file() {
    let dir = TempDir::new("file");
    let path = dir.file("users.acl");
    std::fs::write(&path, "user keep on nopass ~k* +get\n").expect("write acl file");
    let s = Shoal::start(&["--aclfile", &path]);
    let mut c = s.client();
    let users: Vec<String> = q(&mut c, &["ACL", "USERS"]);
    assert_eq!(users, ["default", "keep"]);
    let _: () = q(
        &mut c,
        &[
            "ACL", "SETUSER", "saved", "on", ">pw", "%R~r*", "&c", "+@hash",
        ],
    );
    let _: () = q(&mut c, &["ACL", "SAVE"]);
    let listed: Vec<String> = q(&mut c, &["ACL", "LIST"]);
    let text = std::fs::read_to_string(&path).expect("read saved file");
    assert_eq!(text, listed.join("\n") + "\n");
    let _: i64 = q(&mut c, &["ACL", "DELUSER", "saved", "keep"]);
    let _: () = q(&mut c, &["ACL", "LOAD"]);
    let again: Vec<String> = q(&mut c, &["ACL", "LIST"]);
    assert_eq!(again, listed);
    // A bad line: nothing changes, and the error names the file and the line.
    std::fs::write(&path, "user a on nopass\nuser b foo\n").expect("write bad file");
    assert_eq!(
        error_text(try_q::<()>(&mut c, &["ACL", "LOAD"])),
        format!(
            "ERR {path}:2: Syntax error. WARNING: ACL errors detected, no change to the previously active ACL rules was performed"
        )
    );
    let after: Vec<String> = q(&mut c, &["ACL", "LIST"]);
    assert_eq!(after, listed);
    // Start-up with the bad file fails, naming it.
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args([
            "serve",
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--aclfile",
            &path,
        ])
        .current_dir(&dir.0)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run shoal");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{path}:2: Syntax error")), "{err}");
    // Without an ACL file, SAVE and LOAD say so.
    let plain = Shoal::start(&[]);
    let mut p = plain.client();
    let e = error_text(try_q::<()>(&mut p, &["ACL", "SAVE"]));
    assert!(
        e.starts_with("ERR This Redis instance is not configured to use an ACL file."),
        "{e}"
    );
    wait_until("the first server still answers", || {
        q::<String>(&mut c, &["PING"]) == "PONG"
    });
}
