//! Configuration bounds at the boundaries: `CONFIG SET`, the command line and the TOML file refuse
//! a value Redis 7.0 refuses, with Redis's words, and the server goes on serving. The defect this
//! guards: `proto-max-bulk-len 0` was accepted, after which every request failed, including the
//! `CONFIG SET` that would have undone it.

mod common;

use common::{Shoal, q, scratch_dir};

/// Starts shoal with `args`, expecting it to refuse; returns its exit code and stderr.
fn refused_start(args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["serve", "--port", "0"])
        .args(args)
        .output()
        .expect("run shoal");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn proto_max_bulk_len_zero_is_refused_and_the_server_keeps_serving() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert_eq!(
        r.call(&["CONFIG", "SET", "proto-max-bulk-len", "0"]),
        "-ERR CONFIG SET failed (possibly related to argument 'proto-max-bulk-len') - argument must be between 1048576 and 9223372036854775807 inclusive\r\n"
    );
    // Nothing changed: requests still parse, bulks as large as before are still accepted.
    assert_eq!(r.call(&["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(r.call(&["GET", "k"]), "$1\r\nv\r\n");
    assert_eq!(
        r.call(&["CONFIG", "GET", "proto-max-bulk-len"]),
        "*2\r\n$18\r\nproto-max-bulk-len\r\n$9\r\n536870912\r\n"
    );
    let big = "x".repeat(2 << 20);
    assert_eq!(r.call(&["SET", "big", &big]), "+OK\r\n");
    // The smallest allowed limit still leaves room for the CONFIG SET that raises it again.
    assert_eq!(
        r.call(&["CONFIG", "SET", "proto-max-bulk-len", "1mb"]),
        "+OK\r\n"
    );
    assert_eq!(
        r.call(&["CONFIG", "SET", "proto-max-bulk-len", "512mb"]),
        "+OK\r\n"
    );
    assert_eq!(r.call(&["STRLEN", "big"]), ":2097152\r\n");
}

#[test]
fn a_value_out_of_bounds_stops_start_up_from_the_command_line_and_the_file() {
    let (code, err) = refused_start(&["--proto-max-bulk-len", "0"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("invalid value for 'proto-max-bulk-len': argument must be between 1048576 and 9223372036854775807 inclusive"),
        "{err}"
    );
    let (code, err) = refused_start(&["--set", "maxmemory-samples=0"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("argument must be between 1 and 2147483647"),
        "{err}"
    );
    let dir = scratch_dir("config-bounds");
    let file = dir.join("zero.toml");
    std::fs::write(&file, "proto-max-bulk-len = 0\n").unwrap();
    let (code, err) = refused_start(&["--config", file.to_str().unwrap()]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("proto-max-bulk-len") && err.contains("between 1048576"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bounds_wider_than_before_follow_redis() {
    // Redis allows up to INT_MAX samples and any list fill; shoal used to stop at 64 and -5.
    let dir = scratch_dir("config-wide");
    let file = dir.join("wide.toml");
    std::fs::write(&file, "maxmemory-samples = 100\nhz = 1000\n").unwrap();
    let s = Shoal::start(&["--config", file.to_str().unwrap()]);
    let mut c = s.client();
    let m: Vec<(String, String)> = q(&mut c, &["CONFIG", "GET", "maxmemory-samples", "hz"]);
    assert_eq!(
        m,
        vec![
            ("maxmemory-samples".to_string(), "100".to_string()),
            // Clamped to 1..=500, as Redis does.
            ("hz".to_string(), "500".to_string()),
        ]
    );
    let _: () = q(&mut c, &["CONFIG", "SET", "list-max-listpack-size", "-100"]);
    let _: () = q(&mut c, &["RPUSH", "l", "a", "b", "c"]);
    let n: i64 = q(&mut c, &["LLEN", "l"]);
    assert_eq!(n, 3);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A node started with `--port 0` (a free port) reports the port it bound in CONFIG GET, so
/// setting every parameter back to what CONFIG GET showed (config tools, Redis's own "CONFIG
/// sanity" test) leaves it listening where it was.
#[test]
fn config_get_port_shows_the_port_bound_for_port_zero() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let got: Vec<String> = q(&mut c, &["CONFIG", "GET", "port"]);
    assert_eq!(got, ["port".to_string(), s.port.to_string()]);
    let _: () = q(&mut c, &["CONFIG", "SET", "port", &s.port.to_string()]);
    // Still listening there: a new connection is served.
    let pong: String = q(&mut s.client(), &["PING"]);
    assert_eq!(pong, "PONG");
}
