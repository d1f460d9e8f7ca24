//! `/metrics` on the wire: a node started with `--metrics-port`, scraped with a plain TCP HTTP
//! GET and parsed as Prometheus text. Every documented family (`shoal_server::metrics::FAMILIES`)
//! is exported, counters move with traffic by exactly what was sent, and the latency histograms
//! are cumulative with `_count` matching the command counters. Also: the other routes, and
//! `metrics-port 0` (the default) opening no listener at all. Plus `INFO commandstats`,
//! `INFO latencystats` and `LATENCY HISTOGRAM` against the same traffic, and the sample Grafana
//! dashboard (`ops/grafana/shoal.json`) querying only metrics shoal exports.

mod common;
mod http;

use common::{Shoal, caught_up, info_value, q};
use http::{Scrape, check_histogram, free_port, get, listening_ports, request};
use shoal_server::metrics::{FAMILIES, Kind};

fn scrape(port: u16) -> Scrape {
    let r = get(port, "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers.get("content-type").map(String::as_str),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    Scrape::parse(&r.body)
}

fn counter(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.value(name, labels)
        .unwrap_or_else(|| panic!("{name}{labels:?} is exported"))
}

#[test]
fn every_documented_family_is_exported_and_counters_follow_traffic() {
    let port = free_port();
    let primary = Shoal::start(&["--metrics-port", &port.to_string()]);
    // A replica, so the per-replica families have a series.
    let replica = Shoal::start(&["--replicaof", "127.0.0.1", &primary.port.to_string()]);
    let mut c = primary.client();
    let _: () = q(&mut c, &["SET", "warm", "up"]);
    caught_up(&replica, &primary);
    common::wait_until("the replica acknowledged", || {
        let s = scrape(port);
        s.all("shoal_replica_acked_offset_bytes")
            .iter()
            .any(|x| x.value > 0.0)
    });

    let before = scrape(port);
    for f in FAMILIES {
        if matches!(f.kind, Kind::ClusterGauge | Kind::ClusterCounter) {
            // Cluster mode only (tests/status_page.rs checks them on a cluster).
            assert!(
                !before.has_family(f.name),
                "{} outside cluster mode",
                f.name
            );
            continue;
        }
        assert!(before.has_family(f.name), "{} is exported", f.name);
        let want = match f.kind {
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
            _ => "gauge",
        };
        assert_eq!(before.types[f.name], want, "{}", f.name);
        if f.kind == Kind::Counter {
            assert!(f.name.ends_with("_total"), "{}", f.name);
        }
    }
    for t in before.types.keys() {
        assert!(
            FAMILIES.iter().any(|f| f.name == t),
            "{t} is exported but not documented in FAMILIES"
        );
    }
    assert_eq!(
        counter(&before, "shoal_replication_role", &[("role", "primary")]),
        1.0
    );
    assert_eq!(counter(&before, "shoal_connected_replicas", &[]), 1.0);
    let replica_label = format!("127.0.0.1:{}", replica.port);
    assert!(
        before
            .value("shoal_replica_lag_bytes", &[("replica", &replica_label)])
            .is_some(),
        "lag of {replica_label}"
    );

    // Traffic: 100 SETs, 50 GETs that hit, 20 that miss, 5 refused for arity, 3 that fail.
    for i in 0..100 {
        let _: () = q(&mut c, &["SET", &format!("k{i}"), "v"]);
    }
    for i in 0..50 {
        let _: String = q(&mut c, &["GET", &format!("k{i}")]);
    }
    for i in 0..20 {
        let _: Option<String> = q(&mut c, &["GET", &format!("absent{i}")]);
    }
    for _ in 0..5 {
        assert!(common::try_q::<()>(&mut c, &["GET"]).is_err());
    }
    let _: () = q(&mut c, &["LPUSH", "list", "x"]);
    for _ in 0..3 {
        assert!(common::try_q::<String>(&mut c, &["GET", "list"]).is_err());
    }
    let after = scrape(port);
    let delta = |name: &str, l: &[(&str, &str)]| {
        counter(&after, name, l) - before.value(name, l).unwrap_or(0.0)
    };
    assert_eq!(delta("shoal_commands_total", &[("cmd", "set")]), 100.0);
    assert_eq!(delta("shoal_commands_total", &[("cmd", "get")]), 73.0);
    assert_eq!(
        delta("shoal_commands_rejected_total", &[("cmd", "get")]),
        5.0
    );
    assert_eq!(delta("shoal_commands_failed_total", &[("cmd", "get")]), 3.0);
    // The 3 GETs of a list find their key before failing on its type: hits, as in Redis.
    assert_eq!(delta("shoal_keyspace_hits_total", &[]), 53.0);
    assert_eq!(delta("shoal_keyspace_misses_total", &[]), 20.0);
    assert!(delta("shoal_net_input_bytes_total", &[]) > 100.0 * 20.0);
    assert!(delta("shoal_net_output_bytes_total", &[]) > 100.0 * 5.0);
    assert_eq!(counter(&after, "shoal_keys", &[("db", "0")]), 102.0);

    // Histograms: cumulative, `+Inf` = `_count` = the command counter (latency-tracking yes).
    let counts = check_histogram(&after, "shoal_command_duration_seconds");
    assert_eq!(
        counts["set"],
        counter(&after, "shoal_commands_total", &[("cmd", "set")])
    );
    assert_eq!(
        counts["get"],
        counter(&after, "shoal_commands_total", &[("cmd", "get")])
    );
    let les: Vec<String> = after
        .all("shoal_command_duration_seconds_bucket")
        .iter()
        .filter(|b| b.labels["cmd"] == "set")
        .map(|b| b.labels["le"].clone())
        .collect();
    assert_eq!(
        les.first().map(String::as_str),
        Some("0.000001"),
        "1 µs first"
    );
    assert!(
        les.contains(&"1.048576".to_string()),
        "up to 2^20 µs: {les:?}"
    );

    // The same counts through INFO and LATENCY HISTOGRAM.
    let stats: String = q(&mut c, &["INFO", "commandstats"]);
    let set_line = info_value(&stats, "cmdstat_set").expect("cmdstat_set");
    let calls = counter(&after, "shoal_commands_total", &[("cmd", "set")]);
    assert!(
        set_line.starts_with(&format!("calls={calls},usec=")),
        "{set_line}"
    );
    assert!(
        set_line.ends_with(",rejected_calls=0,failed_calls=0"),
        "{set_line}"
    );
    let get_line = info_value(&stats, "cmdstat_get").expect("cmdstat_get");
    assert!(
        get_line.ends_with(",rejected_calls=5,failed_calls=3"),
        "{get_line}"
    );
    let lat: String = q(&mut c, &["INFO", "latencystats"]);
    let p = info_value(&lat, "latency_percentiles_usec_set").expect("set percentiles");
    let names: Vec<&str> = p
        .split(',')
        .map(|kv| kv.split('=').next().unwrap())
        .collect();
    assert_eq!(names, ["p50", "p99", "p99.9"], "{p}");
    let hist: redis::Value = q(&mut c, &["LATENCY", "HISTOGRAM", "set"]);
    let text = format!("{hist:?}");
    assert!(
        text.contains("calls") && text.contains("histogram_usec"),
        "{text}"
    );

    // CONFIG RESETSTAT clears them.
    let _: () = q(&mut c, &["CONFIG", "RESETSTAT"]);
    let reset = scrape(port);
    assert_eq!(reset.value("shoal_commands_total", &[("cmd", "set")]), None);
    let stats: String = q(&mut c, &["INFO", "commandstats"]);
    assert_eq!(info_value(&stats, "cmdstat_set"), None, "{stats}");
}

#[test]
fn other_paths_are_404_other_methods_405_and_the_page_is_self_contained() {
    let port = free_port();
    let _s = Shoal::start(&["--metrics-port", &port.to_string()]);
    assert_eq!(get(port, "/nope").status, 404);
    assert_eq!(get(port, "/metrics/x").status, 404);
    assert_eq!(request(port, "POST", "/metrics").status, 405);
    let head = request(port, "HEAD", "/metrics");
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    let page = get(port, "/");
    assert_eq!(page.status, 200);
    assert!(page.headers["content-type"].starts_with("text/html"));
    assert!(page.body.contains("id=\"slotmap\""));
    for external in [
        "src=\"http",
        "href=\"http",
        "src=\"//",
        "href=\"//",
        "@import",
        "url(",
    ] {
        assert!(!page.body.contains(external), "external asset: {external}");
    }
    let api = get(port, "/api/cluster");
    assert_eq!(api.status, 200);
    assert!(api.body.contains("\"mode\":\"standalone\""), "{}", api.body);
    assert!(api.body.contains("\"reachable\":true"), "{}", api.body);
}

#[test]
fn metrics_port_0_opens_no_listener() {
    let off = Shoal::start(&["--metrics-port", "0"]);
    let default = Shoal::start(&[]);
    let port = free_port();
    let on = Shoal::start(&["--metrics-port", &port.to_string()]);
    assert_eq!(listening_ports(off.pid()), vec![off.port]);
    assert_eq!(listening_ports(default.pid()), vec![default.port]);
    let mut want = vec![on.port, port];
    want.sort_unstable();
    assert_eq!(listening_ports(on.pid()), want);
    let mut c = off.client();
    let v: Vec<String> = q(&mut c, &["CONFIG", "GET", "metrics-port"]);
    assert_eq!(v, ["metrics-port", "0"]);
}

/// Every string value in a JSON document whose key is `key`.
fn strings_at(v: &serde_json::Value, key: &str, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match x {
                    serde_json::Value::String(s) if k == key => out.push(s.clone()),
                    _ => strings_at(x, key, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| strings_at(x, key, out)),
        _ => {}
    }
}

#[test]
fn the_grafana_dashboard_parses_and_queries_only_exported_metrics() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ops/grafana/shoal.json");
    let text = std::fs::read_to_string(&path).expect("ops/grafana/shoal.json");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert!(dash["panels"].as_array().is_some_and(|p| p.len() >= 8));
    let mut exprs = Vec::new();
    strings_at(&dash, "expr", &mut exprs);
    strings_at(&dash, "definition", &mut exprs);
    assert!(exprs.len() >= 8, "{exprs:?}");
    let mut used = std::collections::BTreeSet::new();
    for e in &exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("shoal_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            used.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    for name in &used {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                let base = name.strip_suffix(s)?;
                FAMILIES
                    .iter()
                    .any(|f| f.name == base && f.kind == Kind::Histogram)
                    .then_some(base)
            })
            .unwrap_or(name);
        assert!(
            FAMILIES.iter().any(|f| f.name == family),
            "the dashboard queries {name}, which shoal does not export"
        );
    }
    // What the issue asks the dashboard to show.
    for needed in [
        "shoal_commands_total",
        "shoal_command_duration_seconds_bucket",
        "shoal_keyspace_hits_total",
        "shoal_keyspace_misses_total",
        "shoal_memory_used_bytes",
        "shoal_evicted_keys_total",
        "shoal_replica_lag_bytes",
        "shoal_cluster_slots",
        "shoal_cluster_failovers_total",
    ] {
        assert!(used.contains(needed), "the dashboard shows {needed}");
    }
}
