//! The status page in a real browser: a local cluster of three primaries (and one replica, so
//! there is replication lag to show) formed with `shoal cluster create` and `add-node`; headless
//! Chromium (Debian's `chromium`, installed by `scripts/test` when missing) loads `/` from one
//! node, lets the page poll `/api/cluster`, and dumps the rendered DOM, which must list the four
//! nodes, draw a slot map with every slot owned by the three primaries, and show the replica's
//! lag. A screenshot is written to a temporary folder and checked to be a PNG. The same node's
//! `/metrics` exports the cluster families (slots per node, Raft, lease, failovers). Last, a
//! primary is stopped and the view shows it unreachable while the others still answer.

mod common;
mod http;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Shoal, wait_until};
use http::{Scrape, free_port, get};
use shoal_server::metrics::{FAMILIES, Kind};

/// How long one Chromium run may take before it is killed.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);

/// A temporary folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        TempDir(common::scratch_dir(tag))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs headless Chromium on `url` with `extra` arguments (a fresh profile in `dir`), killing it
/// after [`CHROMIUM_TIMEOUT`]; returns its standard output.
fn chromium(dir: &Path, url: &str, extra: &[&str]) -> String {
    let profile = dir.join(format!("profile-{}", extra.len()));
    let out_path = dir.join(format!("stdout-{}", extra.len()));
    let out_file = std::fs::File::create(&out_path).expect("chromium stdout file");
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            // Virtual time runs the page's timers (it polls every second) without waiting for
            // them; pending fetches hold it back until they finish.
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(out_file)
        .stderr(Stdio::null())
        .spawn()
        .expect("run chromium (Debian package `chromium`; scripts/test installs it)");
    let deadline = Instant::now() + CHROMIUM_TIMEOUT;
    loop {
        match child.try_wait().expect("wait for chromium") {
            Some(status) => {
                assert!(status.success(), "chromium exited with {status}");
                break;
            }
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium did not finish within {CHROMIUM_TIMEOUT:?}");
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    std::fs::read_to_string(&out_path).expect("chromium output")
}

/// Opening tags of `html` that contain `needle` (tags are on one line each in the dump).
fn tags_with<'a>(html: &'a str, needle: &str) -> Vec<&'a str> {
    html.split('<')
        .filter(|t| t.contains(needle))
        .map(|t| t.split('>').next().unwrap_or(t))
        .collect()
}

/// The value of attribute `name` in an opening tag.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let rest = &tag[start..];
    Some(&rest[..rest.find('"')?])
}

fn cluster_node(metrics_port: Option<u16>) -> Shoal {
    let mut args = vec!["--cluster-enabled".to_string(), "yes".to_string()];
    if let Some(p) = metrics_port {
        args.extend(["--metrics-port".to_string(), p.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Shoal::start(&args)
}

fn shoal_tool(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .output()
        .expect("run shoal cluster");
    assert!(
        out.status.success(),
        "shoal {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_status_page_shows_a_three_primary_cluster_in_a_headless_browser() {
    let http_port = free_port();
    let primaries = [
        cluster_node(Some(http_port)),
        cluster_node(None),
        cluster_node(None),
    ];
    let mut create = vec!["cluster", "create", "--replicas", "0"];
    let addrs: Vec<String> = primaries.iter().map(Shoal::addr).collect();
    create.extend(addrs.iter().map(String::as_str));
    shoal_tool(&create);
    let replica = cluster_node(None);
    let first_id = {
        let mut r = primaries[0].raw();
        let reply = r.call(&["CLUSTER", "MYID"]);
        reply.lines().nth(1).expect("an id").to_string()
    };
    shoal_tool(&[
        "cluster",
        "add-node",
        &replica.addr(),
        &primaries[0].addr(),
        "--replica-of",
        &first_id,
    ]);
    // Writes to every primary's slots, so offsets move and the replica has a stream to follow.
    let client = common::cluster_client(vec![primaries[0].url()]).expect("client");
    let mut c = client.get_connection().expect("cluster connection");
    for i in 0..200 {
        let _: () = redis::cmd("SET")
            .arg(format!("key:{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    // The view the page will get: four reachable nodes and the replica's lag.
    wait_until(
        "the cluster view shows 4 reachable nodes and the replica",
        || {
            let body = get(http_port, "/api/cluster").body;
            body.matches("\"reachable\":true").count() == 4
                && body.contains(&format!("\"replica_addr\":\"{}\"", replica.addr()))
        },
    );

    let dir = TempDir::new("status-page");
    let url = format!("http://127.0.0.1:{http_port}/");
    let dom = chromium(&dir.0, &url, &["--dump-dom"]);
    let body = tags_with(&dom, "body data-loaded")
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no body in {dom}"));
    assert_eq!(
        attr(body, "data-loaded"),
        Some("true"),
        "the page rendered a view"
    );
    let nodes = tags_with(&dom, "tr class=\"node\"");
    assert_eq!(nodes.len(), 4, "4 nodes listed: {nodes:?}");
    let primary_rows: Vec<&&str> = nodes
        .iter()
        .filter(|t| attr(t, "data-role") == Some("primary"))
        .collect();
    assert_eq!(primary_rows.len(), 3);
    assert!(
        nodes
            .iter()
            .all(|t| attr(t, "data-reachable") == Some("true")),
        "{nodes:?}"
    );
    let slots: u32 = primary_rows
        .iter()
        .map(|t| attr(t, "data-slots").unwrap().parse::<u32>().unwrap())
        .sum();
    assert_eq!(slots, 16384);
    for p in &primaries {
        assert!(
            nodes
                .iter()
                .any(|t| attr(t, "data-addr") == Some(&p.addr())),
            "{} listed",
            p.addr()
        );
    }
    let canvas = tags_with(&dom, "canvas id=\"slotmap\"");
    assert_eq!(canvas.len(), 1);
    assert_eq!(
        attr(canvas[0], "data-slots-owned"),
        Some("16384"),
        "{}",
        canvas[0]
    );
    assert_eq!(attr(canvas[0], "data-slots-unowned"), Some("0"));
    assert_eq!(attr(canvas[0], "data-owners"), Some("3"));
    let legend = tags_with(&dom, "li data-node-id");
    assert_eq!(legend.len(), 3, "{legend:?}");
    let lag = tags_with(&dom, "tr class=\"replica\"");
    assert_eq!(lag.len(), 1, "the replica's lag is shown: {lag:?}");
    assert_eq!(
        attr(lag[0], "data-replica-addr"),
        Some(replica.addr().as_str())
    );
    assert_eq!(attr(lag[0], "data-primary-id"), Some(first_id.as_str()));
    assert!(
        attr(lag[0], "data-lag-bytes").is_some_and(|v| v.parse::<u64>().is_ok()),
        "{}",
        lag[0]
    );
    assert!(dom.contains("id=\"raft-term\""));

    let shot = dir.0.join("status.png");
    chromium(
        &dir.0,
        &url,
        &[
            "--window-size=1400,900",
            &format!("--screenshot={}", shot.display()),
        ],
    );
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(png.len() > 10_000, "a picture, not an empty page");
    if let Ok(keep) = std::env::var("SHOAL_STATUS_SCREENSHOT") {
        let _ = std::fs::copy(&shot, keep);
    }

    // The cluster families on the same node.
    let s = Scrape::parse(&get(http_port, "/metrics").body);
    for f in FAMILIES {
        assert!(s.has_family(f.name), "{} in cluster mode", f.name);
        if matches!(f.kind, Kind::ClusterCounter) {
            assert_eq!(s.types[f.name], "counter");
        }
    }
    let per_node = s.all("shoal_cluster_slots");
    assert_eq!(per_node.len(), 3, "one series per primary");
    assert_eq!(per_node.iter().map(|x| x.value).sum::<f64>(), 16384.0);
    assert_eq!(s.value("shoal_cluster_state_ok", &[]), Some(1.0));
    assert!(s.value("shoal_raft_term", &[]).is_some_and(|t| t >= 1.0));
    assert!(s.value("shoal_raft_leader", &[]).is_some_and(|l| l >= 0.0));

    // A node that stops answering is shown unreachable, and the view still comes back.
    let [first, second, third] = primaries;
    let gone = third.addr();
    drop(third);
    wait_until("the stopped node is shown unreachable", || {
        let view = get(http_port, "/api/cluster");
        assert_eq!(view.status, 200);
        let v: serde_json::Value = serde_json::from_str(&view.body).expect("JSON view");
        v["nodes"].as_array().is_some_and(|nodes| {
            nodes
                .iter()
                .any(|n| n["addr"] == gone.as_str() && n["reachable"] == false)
                && nodes.iter().filter(|n| n["reachable"] == true).count() == 3
        })
    });
    drop((first, second, replica));
}
