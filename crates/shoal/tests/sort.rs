//! SORT beyond the golden corpus: a STORE reaches a replica as a list, BY/GET patterns work inside
//! a transaction (which already holds the exec gate alone) and while other clients write (a SORT
//! with patterns takes the gate alone for its lookups), and cluster mode refuses the patterns.

mod common;

use std::time::{Duration, Instant};

use common::{Shoal, caught_up, follow, q, wait_until};

#[test]
fn sort_store_reaches_a_replica_and_patterns_work_in_a_transaction() {
    let p = Shoal::start(&[]);
    let r = Shoal::start(&[]);
    follow(&r, &p);
    let mut c = p.client();
    let _: i64 = q(&mut c, &["RPUSH", "ids", "3", "1", "2"]);
    let _: () = q(&mut c, &["MSET", "w_1", "30", "w_2", "10", "w_3", "20"]);
    let _: () = q(
        &mut c,
        &["MSET", "name_1", "one", "name_2", "two", "name_3", "three"],
    );
    let n: i64 = q(
        &mut c,
        &["SORT", "ids", "BY", "w_*", "GET", "name_*", "STORE", "out"],
    );
    assert_eq!(n, 3);
    caught_up(&r, &p);
    let mut rc = r.client();
    let on_replica: Vec<String> = q(&mut rc, &["LRANGE", "out", "0", "-1"]);
    assert_eq!(on_replica, ["two", "three", "one"]);
    let (sorted, names): (Vec<String>, Vec<String>) = redis::pipe()
        .atomic()
        .cmd("SORT")
        .arg("ids")
        .arg("DESC")
        .cmd("SORT")
        .arg("ids")
        .arg("BY")
        .arg("w_*")
        .arg("GET")
        .arg("#")
        .arg("GET")
        .arg("name_*")
        .query(&mut c)
        .unwrap();
    assert_eq!(sorted, ["3", "2", "1"]);
    assert_eq!(names, ["2", "two", "3", "three", "1", "one"]);
}

#[test]
fn sort_with_patterns_runs_while_others_write() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let ids: Vec<String> = (0..200).map(|i| i.to_string()).collect();
    let mut push = vec!["RPUSH", "ids"];
    push.extend(ids.iter().map(String::as_str));
    let _: i64 = q(&mut c, &push);
    let deadline = Instant::now() + Duration::from_secs(3);
    let writers: Vec<_> = (0..3)
        .map(|t| {
            let mut w = s.client();
            std::thread::spawn(move || {
                let mut n = 0u64;
                // Every weight is rewritten with the same value: a SORT sees a consistent map.
                while Instant::now() < deadline && n < 20_000 {
                    let i = (n * 7 + t) % 200;
                    let _: () = q(&mut w, &["SET", &format!("w_{i}"), &(1000 - i).to_string()]);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut sorts = 0;
    while Instant::now() < deadline && sorts < 200 {
        let got: Vec<String> = q(&mut c, &["SORT", "ids", "BY", "w_*", "LIMIT", "0", "3"]);
        assert_eq!(got.len(), 3);
        sorts += 1;
    }
    let written: u64 = writers.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(sorts > 0 && written > 0, "sorts {sorts}, writes {written}");
    let all: Vec<String> = q(&mut c, &["SORT", "ids", "BY", "w_*", "LIMIT", "0", "3"]);
    assert_eq!(all, ["199", "198", "197"]);
}

#[test]
fn cluster_mode_refuses_by_and_get_patterns() {
    let s = Shoal::start(&["--cluster-enabled", "yes"]);
    let mut r = s.raw();
    assert_eq!(
        r.call(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]),
        "+OK\r\n"
    );
    // Served once the node holds its first write lease.
    wait_until("slots served", || r.call(&["GET", "k"]) == "$-1\r\n");
    assert_eq!(
        r.call(&["SORT", "k", "BY", "w_*"]),
        "-ERR BY option of SORT denied in Cluster mode.\r\n"
    );
    assert_eq!(
        r.call(&["SORT", "k", "GET", "#"]),
        "-ERR GET option of SORT denied in Cluster mode.\r\n"
    );
}
