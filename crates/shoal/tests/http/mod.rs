//! Test helpers for the node's HTTP listener: a plain-TCP HTTP/1.1 GET, a free port, and a small
//! parser of the Prometheus text format (every line is a comment or `name{labels} value`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A port nothing listens on right now (the system's pick, released at once).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// An HTTP response: status code, headers (lowercase names), body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

/// Sends `method path` to 127.0.0.1:`port` and reads the response to the end (the server
/// closes the connection after it). Retries the connection for a bounded time while the node
/// starts.
pub fn request(port: u16, method: &str, path: &str) -> Response {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("connect to the HTTP port {port}: {e}"),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the response");
    let text = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let r = Response {
        status,
        headers,
        body: body.to_string(),
    };
    if let Some(len) = r.headers.get("content-length").filter(|_| method != "HEAD") {
        assert_eq!(
            len.parse::<usize>().unwrap(),
            r.body.len(),
            "Content-Length"
        );
    }
    r
}

pub fn get(port: u16, path: &str) -> Response {
    request(port, "GET", path)
}

/// One sample line.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed scrape: samples, and the `# TYPE` of each family.
#[derive(Debug, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
    pub types: BTreeMap<String, String>,
}

impl Scrape {
    /// Parses Prometheus text; panics on a line that is neither a comment nor a sample.
    pub fn parse(text: &str) -> Scrape {
        let mut s = Scrape::default();
        for line in text.lines() {
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                let before = s.types.insert(name.to_string(), kind.to_string());
                assert!(before.is_none(), "family {name} typed twice");
                continue;
            }
            if line.starts_with('#') {
                assert!(line.starts_with("# HELP "), "unknown comment {line:?}");
                continue;
            }
            s.samples.push(parse_sample(line));
        }
        s
    }

    /// The samples named `name`.
    pub fn all(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|x| x.name == name).collect()
    }

    /// The value of `name` with exactly these labels.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|x| {
                x.name == name
                    && x.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| x.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|x| x.value)
    }

    /// Whether a family is exported: typed, with at least one sample (histograms by their
    /// `_count`).
    pub fn has_family(&self, name: &str) -> bool {
        let sample = match self.types.get(name).map(String::as_str) {
            Some("histogram") => format!("{name}_count"),
            Some(_) => name.to_string(),
            None => return false,
        };
        self.samples.iter().any(|x| x.name == sample)
    }
}

fn parse_sample(line: &str) -> Sample {
    fn fail(line: &str) -> ! {
        panic!("not a sample line: {line:?}")
    }
    let name_end = line.find(['{', ' ']).unwrap_or_else(|| fail(line));
    let name = &line[..name_end];
    assert!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "bad metric name in {line:?}"
    );
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        let mut r = r;
        loop {
            if let Some(after) = r.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = r.find('=').unwrap_or_else(|| fail(line));
            let key = r[..eq].trim_start_matches(',').to_string();
            let v = r[eq + 1..].strip_prefix('"').unwrap_or_else(|| fail(line));
            let mut value = String::new();
            let mut chars = v.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => fail(line),
                    },
                    Some((i, '"')) => break i,
                    Some((_, c)) => value.push(c),
                    None => fail(line),
                }
            };
            labels.insert(key, value);
            r = v[end + 1..].trim_start_matches(',');
        }
    }
    let value_text = rest.trim();
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        t => t.parse().unwrap_or_else(|_| fail(line)),
    };
    Sample {
        name: name.to_string(),
        labels,
        value,
    }
}

/// Checks every histogram of `family`: per label set, buckets cumulative in `le` order, the
/// `+Inf` bucket equal to `_count`. Returns the `_count` per `cmd` label.
pub fn check_histogram(s: &Scrape, family: &str) -> BTreeMap<String, f64> {
    let mut counts = BTreeMap::new();
    for c in s.all(&format!("{family}_count")) {
        let cmd = c.labels.get("cmd").cloned().unwrap_or_default();
        let mut buckets: Vec<(f64, f64)> = s
            .all(&format!("{family}_bucket"))
            .into_iter()
            .filter(|b| b.labels.get("cmd") == Some(&cmd))
            .map(|b| {
                let le = b.labels.get("le").expect("le label");
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().expect("numeric le")
                };
                (le, b.value)
            })
            .collect();
        assert!(buckets.len() >= 2, "{family}{{cmd={cmd}}} has buckets");
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        for w in buckets.windows(2) {
            assert!(
                w[0].1 <= w[1].1,
                "{family}{{cmd={cmd}}} not cumulative: {buckets:?}"
            );
        }
        let last = buckets.last().unwrap();
        assert!(last.0.is_infinite(), "{family}{{cmd={cmd}}} ends with +Inf");
        assert_eq!(
            last.1, c.value,
            "{family}{{cmd={cmd}}}: +Inf bucket = _count"
        );
        assert!(
            s.value(&format!("{family}_sum"), &[("cmd", &cmd)])
                .is_some_and(|v| v >= 0.0),
            "{family}_sum{{cmd={cmd}}}"
        );
        counts.insert(cmd, c.value);
    }
    counts
}

/// Listening TCP sockets that process `pid` holds (from /proc: its socket inodes, matched
/// against the kernel's table of sockets in state LISTEN).
pub fn listening_ports(pid: u32) -> Vec<u16> {
    let mut inodes = std::collections::BTreeSet::new();
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let t = target.to_string_lossy().to_string();
                if let Some(n) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                    inodes.insert(n.to_string());
                }
            }
        }
    }
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address, st (0A = LISTEN), ..., inode (field 9).
            if f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]) {
                let port = f[1].rsplit(':').next().unwrap_or("0");
                ports.push(u16::from_str_radix(port, 16).unwrap_or(0));
            }
        }
    }
    ports.sort_unstable();
    ports
}

#[test]
fn the_parser_reads_labels_values_and_escapes() {
    let s = Scrape::parse(
        "# HELP a_total A.\n# TYPE a_total counter\na_total{cmd=\"config|get\",x=\"q\\\"\"} 3\nb 1.5e-6\nc{le=\"+Inf\"} +Inf\n",
    );
    assert_eq!(
        s.value("a_total", &[("cmd", "config|get"), ("x", "q\"")]),
        Some(3.0)
    );
    assert_eq!(s.value("b", &[]), Some(1.5e-6));
    assert_eq!(s.types["a_total"], "counter");
    assert!(s.has_family("a_total"));
}
