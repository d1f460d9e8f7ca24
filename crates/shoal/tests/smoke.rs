//! Smoke test of the harness: the binary starts, answers, and stops on SHUTDOWN.

mod common;

use common::Shoal;

#[test]
fn starts_answers_and_shuts_down() {
    let mut s = Shoal::start(&[]);
    let mut raw = s.raw();
    assert_eq!(raw.call(&["PING"]), "+PONG\r\n");
    let mut c = s.client();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut c).unwrap();
    let v: String = redis::cmd("GET").arg("k").query(&mut c).unwrap();
    assert_eq!(v, "v");
    raw.cmd(&[b"SHUTDOWN"]);
    assert!(raw.closed());
    assert!(s.wait_exit());
}
