//! TLS on the wire and authenticated internal links: a real shoal process with a TLS port, its
//! certificates made by the test itself with the `openssl` CLI, talked to by redis-rs over TLS
//! (`rediss://`), `redis-cli --tls`, redis-py (`ssl=True`) and a blocking rustls client for
//! byte-level checks; a replica following its primary over TLS; a replica refused by the
//! primary's ACL until it is given the rights; the cluster bus's shared-secret challenge; nodes
//! that serve TLS only (plain port closed with `CONFIG SET port 0`) forming a cluster whose
//! replication, slot migration and MIGRATE all go over TLS, authenticated; active-active peers
//! over TLS, and refused with a wrong password; and `CONFIG SET port`/`tls-port` at run time.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Shoal, WAIT_MAX, encode, info_field, q, reply_len, wait_until};

/// A CA, a server certificate (for `localhost` and 127.0.0.1) and a client certificate, both
/// signed by the CA, in a fresh directory.
struct Certs {
    dir: PathBuf,
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Certs {
    fn new() -> Certs {
        let dir = common::scratch_dir("tls");
        let c = Certs { dir };
        c.make_ca("ca");
        c.make_signed("ca", "server", "localhost");
        c.make_signed("ca", "client", "shoal-client");
        c
    }

    fn make_ca(&self, name: &str) {
        openssl(
            &self.dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
            ],
        );
    }

    fn make_signed(&self, ca: &str, name: &str, cn: &str) {
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        std::fs::write(
            self.dir.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.crt"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-out",
                &format!("{name}.crt"),
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
        );
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    fn read(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(file)).unwrap()
    }

    /// The server's TLS parameters, on `port`.
    fn server_args(&self, port: u16) -> Vec<String> {
        [
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &self.path("server.crt"),
            "--tls-key-file",
            &self.path("server.key"),
            "--tls-ca-cert-file",
            &self.path("ca.crt"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// shoal with a TLS port, plus `extra` arguments; returns it and its TLS port.
fn start_tls(certs: &Certs, extra: &[&str]) -> (Shoal, u16) {
    let port = free_port();
    let mut args = certs.server_args(port);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = Shoal::start(&args);
    wait_until("the TLS port listens", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (s, port)
}

/// A blocking TLS client with a raw RESP view.
struct TlsRaw {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

fn client_config(certs: &Certs, ca: &str, with_cert: bool) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(certs.path(ca)).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = if with_cert {
        let chain: Vec<_> = CertificateDer::pem_file_iter(certs.path("client.crt"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(certs.path("client.key")).unwrap();
        b.with_client_auth_cert(chain, key).unwrap()
    } else {
        b.with_no_client_auth()
    };
    Arc::new(config)
}

impl TlsRaw {
    /// Connects and completes the handshake (an error if the server refuses it).
    fn connect(port: u16, config: Arc<rustls::ClientConfig>) -> std::io::Result<TlsRaw> {
        let tcp = TcpStream::connect(("127.0.0.1", port))?;
        tcp.set_read_timeout(Some(WAIT_MAX))?;
        let conn = rustls::ClientConnection::new(config, "localhost".try_into().unwrap())
            .map_err(std::io::Error::other)?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(TlsRaw {
            stream,
            buf: Vec::new(),
        })
    }

    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    fn reply(&mut self) -> std::io::Result<Vec<u8>> {
        loop {
            if let Some(n) = reply_len(&self.buf) {
                return Ok(self.buf.drain(..n).collect());
            }
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn call(&mut self, args: &[&str]) -> std::io::Result<String> {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        self.send(&encode(&a))?;
        Ok(String::from_utf8_lossy(&self.reply()?).into_owned())
    }
}

/// redis-rs over TLS, presenting the client certificate.
fn rediss(certs: &Certs, port: u16) -> redis::Connection {
    redis::Client::build_with_tls(
        format!("rediss://127.0.0.1:{port}/"),
        redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: certs.read("client.crt"),
                client_key: certs.read("client.key"),
            }),
            root_cert: Some(certs.read("ca.crt")),
        },
    )
    .expect("tls client")
    .get_connection()
    .expect("connect over TLS")
}

#[test]
fn a_client_with_a_certificate_talks_to_the_tls_port_and_the_plain_port_stays() {
    let certs = Certs::new();
    let (s, port) = start_tls(&certs, &[]);
    let mut c = rediss(&certs, port);
    let _: () = q(&mut c, &["SET", "k", "over tls"]);
    let v: String = q(&mut c, &["GET", "k"]);
    assert_eq!(v, "over tls");
    // The plain port serves the same data.
    let mut plain = s.client();
    let v: String = q(&mut plain, &["GET", "k"]);
    assert_eq!(v, "over tls");
    // Redis shows the TLS parameters.
    let got: Vec<String> = q(&mut c, &["CONFIG", "GET", "tls-auth-clients"]);
    assert_eq!(got, ["tls-auth-clients", "yes"]);
    let got: Vec<String> = q(&mut c, &["CONFIG", "GET", "tls-port"]);
    assert_eq!(got, ["tls-port".to_string(), port.to_string()]);
}

#[test]
fn mutual_tls_refuses_a_client_without_a_certificate_unless_optional() {
    let certs = Certs::new();
    let (_s, port) = start_tls(&certs, &[]);
    // `tls-auth-clients yes` (the default): the handshake, or the first exchange, fails.
    let refused = TlsRaw::connect(port, client_config(&certs, "ca.crt", false))
        .and_then(|mut c| c.call(&["PING"]));
    assert!(refused.is_err(), "{refused:?}");
    let mut ok = TlsRaw::connect(port, client_config(&certs, "ca.crt", true)).unwrap();
    assert_eq!(ok.call(&["PING"]).unwrap(), "+PONG\r\n");

    let (_s2, port2) = start_tls(&certs, &["--tls-auth-clients", "optional"]);
    let mut anon = TlsRaw::connect(port2, client_config(&certs, "ca.crt", false)).unwrap();
    assert_eq!(anon.call(&["PING"]).unwrap(), "+PONG\r\n");
    let mut with = TlsRaw::connect(port2, client_config(&certs, "ca.crt", true)).unwrap();
    assert_eq!(with.call(&["PING"]).unwrap(), "+PONG\r\n");
}

#[test]
fn a_long_pipeline_and_a_large_value_over_tls_never_stall() {
    let certs = Certs::new();
    let (_s, port) = start_tls(&certs, &[]);
    let mut c = TlsRaw::connect(port, client_config(&certs, "ca.crt", true)).unwrap();
    // 5,000 requests in one write: far more than one read chunk or one TLS record, so replies
    // depend on bytes rustls holds decrypted after the socket is drained.
    const N: usize = 5_000;
    let mut batch = Vec::new();
    for i in 0..N {
        let (k, v) = (format!("key:{i}"), format!("value:{i}"));
        batch.extend_from_slice(&encode(&[b"SET", k.as_bytes(), v.as_bytes()]));
        batch.extend_from_slice(&encode(&[b"GET", k.as_bytes()]));
    }
    c.send(&batch).unwrap();
    for i in 0..N {
        assert_eq!(c.reply().unwrap(), b"+OK\r\n");
        let v = format!("value:{i}");
        assert_eq!(
            c.reply().unwrap(),
            format!("${}\r\n{v}\r\n", v.len()).into_bytes()
        );
    }
    // A request of exactly one read chunk (16 KB) followed by a small one, in one write: the
    // server's first read takes exactly the first request, and the second, already received and
    // decrypted, sits in rustls while the socket has nothing more to signal. A connection that
    // waited for the socket before reading again would never answer it.
    for round in 0..20 {
        let value = vec![b'x' + (round % 2) as u8; 16_384 - 30];
        let mut both = encode(&[b"SET", b"k", &value]);
        assert_eq!(both.len(), 16_384);
        both.extend_from_slice(&encode(&[b"PING"]));
        let mut fresh = TlsRaw::connect(port, client_config(&certs, "ca.crt", true)).unwrap();
        fresh.send(&both).unwrap();
        assert_eq!(fresh.reply().unwrap(), b"+OK\r\n");
        assert_eq!(fresh.reply().unwrap(), b"+PONG\r\n", "round {round}");
        // And on a connection that has been idle, with its buffers given back.
        fresh.send(&both).unwrap();
        assert_eq!(fresh.reply().unwrap(), b"+OK\r\n");
        assert_eq!(fresh.reply().unwrap(), b"+PONG\r\n", "round {round}");
    }
    // A 3 MB value both ways.
    let big: Vec<u8> = (0..3 * 1024 * 1024)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    c.send(&encode(&[b"SET", b"big", &big])).unwrap();
    assert_eq!(c.reply().unwrap(), b"+OK\r\n");
    c.send(&encode(&[b"GET", b"big"])).unwrap();
    let r = c.reply().unwrap();
    let head = format!("${}\r\n", big.len());
    assert!(r.starts_with(head.as_bytes()));
    assert_eq!(&r[head.len()..r.len() - 2], &big[..]);
    assert_eq!(c.call(&["DBSIZE"]).unwrap(), format!(":{}\r\n", N + 2));
}

/// Reads until EOF or error; true if the connection was closed within the wait bound.
fn closed_within(s: &mut TcpStream, bound: Duration) -> (bool, Vec<u8>) {
    s.set_read_timeout(Some(bound)).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let start = Instant::now();
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return (true, got),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (true, got),
            Err(_) => return (false, got),
        }
        if start.elapsed() > bound {
            return (false, got);
        }
    }
}

#[test]
fn plain_text_on_the_tls_port_is_closed_without_an_answer() {
    let certs = Certs::new();
    let (_s, port) = start_tls(&certs, &[]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let (closed, got) = closed_within(&mut s, WAIT_MAX);
    assert!(closed, "still open");
    assert!(
        !String::from_utf8_lossy(&got).contains("PONG"),
        "answered in plain text: {got:?}"
    );
}

#[test]
fn a_truncated_or_unfinished_handshake_is_closed_after_the_handshake_timeout() {
    let certs = Certs::new();
    let (_s, port) = start_tls(&certs, &["--tls-handshake-timeout-ms", "300"]);
    // Silent after connecting.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // The first bytes of a ClientHello record, then nothing.
    let mut truncated = TcpStream::connect(("127.0.0.1", port)).unwrap();
    truncated
        .write_all(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ])
        .unwrap();
    let start = Instant::now();
    for s in [&mut silent, &mut truncated] {
        let (closed, got) = closed_within(s, WAIT_MAX);
        assert!(closed, "not closed");
        assert!(got.is_empty() || got[0] == 0x15, "not an alert: {got:?}");
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn redis_cli_talks_to_shoal_over_tls() {
    let certs = Certs::new();
    let (_s, port) = start_tls(&certs, &[]);
    let run = |args: &[&str]| -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "--tls"])
            .args(["--cacert", &certs.path("ca.crt")])
            .args(["--cert", &certs.path("client.crt")])
            .args(["--key", &certs.path("client.key")])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(run(&["PING"]), "PONG");
    assert_eq!(run(&["SET", "cli", "yes"]), "OK");
    assert_eq!(run(&["GET", "cli"]), "yes");
}

#[test]
fn config_set_reloads_the_certificates_and_keeps_the_old_ones_when_a_file_is_bad() {
    let certs = Certs::new();
    certs.make_ca("ca2");
    certs.make_signed("ca2", "server2", "localhost");
    let (s, port) = start_tls(&certs, &["--tls-auth-clients", "no"]);
    let mut plain = s.raw();
    // A file that does not load: Redis's error, and the old certificates stay.
    assert_eq!(
        plain.call(&["CONFIG", "SET", "tls-cert-file", "/nonexistent/cert.pem"]),
        "-ERR CONFIG SET failed (possibly related to argument 'tls-cert-file') - Unable to \
         update TLS configuration. Check server logs.\r\n"
    );
    assert_eq!(
        plain.call(&["CONFIG", "GET", "tls-cert-file"]),
        format!(
            "*2\r\n$13\r\ntls-cert-file\r\n${}\r\n{}\r\n",
            certs.path("server.crt").len(),
            certs.path("server.crt")
        )
    );
    assert_eq!(
        plain.call(&["CONFIG", "SET", "tls-protocols", "TLSv9"]),
        "-ERR CONFIG SET failed (possibly related to argument 'tls-protocols') - Unable to \
         update TLS configuration. Check server logs.\r\n"
    );
    let mut old = TlsRaw::connect(port, client_config(&certs, "ca.crt", false)).unwrap();
    assert_eq!(old.call(&["PING"]).unwrap(), "+PONG\r\n");
    // A client trusting only the new CA is refused before the reload...
    assert!(TlsRaw::connect(port, client_config(&certs, "ca2.crt", false)).is_err());
    let reload = plain.call(&[
        "CONFIG",
        "SET",
        "tls-cert-file",
        &certs.path("server2.crt"),
        "tls-key-file",
        &certs.path("server2.key"),
        "tls-ca-cert-file",
        &certs.path("ca2.crt"),
    ]);
    assert_eq!(reload, "+OK\r\n");
    // ...and served after it, without a restart; one trusting only the old CA no longer is.
    let mut new = TlsRaw::connect(port, client_config(&certs, "ca2.crt", false)).unwrap();
    assert_eq!(new.call(&["PING"]).unwrap(), "+PONG\r\n");
    assert!(TlsRaw::connect(port, client_config(&certs, "ca.crt", false)).is_err());
    // A connection made before goes on with the certificates it started with.
    assert_eq!(old.call(&["PING"]).unwrap(), "+PONG\r\n");
}

#[test]
fn a_certificate_that_does_not_load_at_start_stops_the_server_naming_the_file() {
    let certs = Certs::new();
    let missing = certs.path("missing.crt");
    std::fs::write(certs.dir.join("garbage.crt"), "not a certificate\n").unwrap();
    let garbage = certs.path("garbage.crt");
    for bad in [&missing, &garbage] {
        let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args([
                "serve",
                "--port",
                "0",
                "--tls-port",
                &free_port().to_string(),
            ])
            .args(["--tls-cert-file", bad])
            .args(["--tls-key-file", &certs.path("server.key")])
            .args(["--tls-ca-cert-file", &certs.path("ca.crt")])
            .current_dir(&certs.dir)
            .output()
            .expect("run shoal");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(bad.as_str()), "{err}");
    }
}

#[test]
fn a_replica_follows_its_primary_over_tls() {
    let certs = Certs::new();
    let (primary, tls_port) = start_tls(&certs, &[]);
    let mut args = certs.server_args(free_port());
    args.extend(["--tls-replication", "yes"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let replica = Shoal::start(&args);
    let mut p = primary.client();
    let _: () = q(&mut p, &["SET", "before", "1"]);
    let mut r = replica.client();
    let _: () = q(&mut r, &["REPLICAOF", "127.0.0.1", &tls_port.to_string()]);
    common::wait_link_up(&mut r);
    let _: () = q(&mut p, &["SET", "after", "2"]);
    wait_until("the write reaches the replica", || {
        common::try_q::<Option<String>>(&mut r, &["GET", "after"])
            .ok()
            .flatten()
            .as_deref()
            == Some("2")
    });
    let v: String = q(&mut r, &["GET", "before"]);
    assert_eq!(v, "1");
}

#[test]
fn a_replica_without_replication_rights_is_refused_until_it_gets_them() {
    let logs = common::scratch_dir("refused-replica");
    let log = logs.join("primary.log").display().to_string();
    let primary = Shoal::start(&["--logfile", &log]);
    let mut p = primary.client();
    let _: () = q(
        &mut p,
        &[
            "ACL", "SETUSER", "repl", "on", ">pw", "~*", "+@read", "+ping",
        ],
    );
    let replica = Shoal::start(&["--masteruser", "repl", "--masterauth", "pw"]);
    let mut r = replica.client();
    let _: () = q(
        &mut r,
        &["REPLICAOF", "127.0.0.1", &primary.port.to_string()],
    );
    let _: () = q(&mut p, &["SET", "k", "v"]);
    // The primary refuses its REPLCONF/PSYNC: the link never comes up, nothing is copied, and
    // the primary's ACL LOG says why.
    wait_until("the primary logs the refusal", || {
        let log: Vec<redis::Value> = q(&mut p, &["ACL", "LOG"]);
        format!("{log:?}").contains("repl")
    });
    let deadline = Instant::now() + Duration::from_millis(1_500);
    while Instant::now() < deadline {
        assert_eq!(
            info_field(&mut r, "replication", "master_link_status").as_deref(),
            Some("down")
        );
        let n: u64 = q(&mut r, &["DBSIZE"]);
        assert_eq!(n, 0, "half-joined: the replica holds data");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        common::info_u64(&mut p, "replication", "connected_slaves"),
        0
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("replica refused: its user may not run"),
        "{text}"
    );
    // Given the rights, the replica's retries get in.
    let _: () = q(&mut p, &["ACL", "SETUSER", "repl", "+psync", "+replconf"]);
    common::wait_link_up(&mut r);
    wait_until("the data reaches the replica", || {
        common::try_q::<Option<String>>(&mut r, &["GET", "k"])
            .ok()
            .flatten()
            .as_deref()
            == Some("v")
    });
    let _ = std::fs::remove_dir_all(&logs);
}

// ---- the cluster bus ----

/// A cluster node with `extra` arguments; returns it and its bus port.
fn bus_node(extra: &[&str]) -> (Shoal, u16) {
    let mut args = vec!["--cluster-enabled", "yes"];
    args.extend_from_slice(extra);
    let s = Shoal::start(&args);
    let nodes = s.raw().call(&["CLUSTER", "NODES"]);
    let bus = nodes
        .lines()
        .find(|l| l.contains("myself"))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|a| a.split_once('@'))
        .and_then(|(_, b)| b.split(',').next()?.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no bus port in {nodes:?}"));
    (s, bus)
}

fn bus_call(s: &mut TcpStream, verb: &str, body: &str) -> (String, bool) {
    s.write_all(&encode(&[b"RAFT", verb.as_bytes(), body.as_bytes()]))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    s.set_read_timeout(Some(WAIT_MAX)).unwrap();
    loop {
        if let Some(n) = reply_len(&buf) {
            let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
            let (closed, _) = closed_within(s, Duration::from_millis(500));
            return (reply, closed);
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return (String::from_utf8_lossy(&buf).into_owned(), true),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[test]
fn the_cluster_bus_refuses_a_peer_that_does_not_prove_the_secret() {
    let (_s, bus) = bus_node(&["--cluster-secret", "s3cret"]);
    // A peer without the secret asks for a vote straight away.
    let mut c = TcpStream::connect(("127.0.0.1", bus)).unwrap();
    let (reply, closed) = bus_call(&mut c, "VOTE", "{}");
    assert_eq!(reply, "-ERR NOAUTH cluster bus authentication required\r\n");
    assert!(closed);
    // A peer with another secret: its proof does not check.
    let mut c = TcpStream::connect(("127.0.0.1", bus)).unwrap();
    let (reply, closed) = bus_call(&mut c, "HELLO", &"ab".repeat(32));
    assert!(reply.starts_with('$'), "{reply:?}");
    assert!(!closed);
    let (reply, closed) = bus_call(&mut c, "PROVE", &"00".repeat(32));
    assert_eq!(reply, "-ERR cluster bus authentication failed\r\n");
    assert!(closed);
    // A node without a secret refuses a challenge (a secret on one side only fails too).
    let (_open, open_bus) = bus_node(&[]);
    let mut c = TcpStream::connect(("127.0.0.1", open_bus)).unwrap();
    let (reply, closed) = bus_call(&mut c, "HELLO", &"ab".repeat(32));
    assert_eq!(reply, "-ERR no cluster-secret is set on this node\r\n");
    assert!(closed);
}

/// Meets `b` from `a`; waits until both know two nodes.
fn meet_and_form(a: &Shoal, b: &Shoal) {
    let mut r = a.raw();
    assert_eq!(
        r.call(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]),
        "+OK\r\n"
    );
    assert_eq!(
        r.call(&["CLUSTER", "MEET", "127.0.0.1", &b.port.to_string()]),
        "+OK\r\n"
    );
    for n in [a, b] {
        wait_until("both nodes know each other", || {
            n.raw()
                .call(&["CLUSTER", "INFO"])
                .contains("cluster_known_nodes:2\r\n")
        });
    }
}

#[test]
fn nodes_sharing_the_secret_form_a_cluster_over_a_tls_bus() {
    let certs = Certs::new();
    let args: Vec<String> = [
        "--tls-cluster",
        "yes",
        "--cluster-secret",
        "s3cret",
        "--tls-cert-file",
        &certs.path("server.crt"),
        "--tls-key-file",
        &certs.path("server.key"),
        "--tls-ca-cert-file",
        &certs.path("ca.crt"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (a, a_bus) = bus_node(&args);
    let (b, _) = bus_node(&args);
    meet_and_form(&a, &b);
    // The bus speaks only TLS: plain text is closed unanswered.
    let mut c = TcpStream::connect(("127.0.0.1", a_bus)).unwrap();
    c.write_all(&encode(&[b"RAFT", b"VOTE", b"{}"])).unwrap();
    let (closed, got) = closed_within(&mut c, WAIT_MAX);
    assert!(closed);
    assert!(!String::from_utf8_lossy(&got).contains("ERR"), "{got:?}");
}

#[test]
fn a_node_with_another_secret_is_never_joined() {
    let (a, _) = bus_node(&["--cluster-secret", "one"]);
    let (b, _) = bus_node(&["--cluster-secret", "two"]);
    let mut r = a.raw();
    assert_eq!(
        r.call(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]),
        "+OK\r\n"
    );
    // The meet cannot complete (its reply, if any, is an error); b never joins.
    let mut m = a.raw();
    m.stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    m.cmd(&[
        b"CLUSTER",
        b"MEET",
        b"127.0.0.1",
        b.port.to_string().as_bytes(),
    ]);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let info = b.raw().call(&["CLUSTER", "INFO"]);
        assert!(info.contains("cluster_known_nodes:1\r\n"), "{info}");
        let info = b.raw().call(&["INFO", "cluster"]);
        assert!(info.contains("shoal_cluster_formed:0\r\n"), "{info}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut chunk = [0u8; 512];
    if let Ok(n) = m.stream.read(&mut chunk) {
        let reply = String::from_utf8_lossy(&chunk[..n]);
        assert!(n == 0 || reply.starts_with("-ERR"), "{reply}");
    }
}

// ---- TLS-only nodes: every internal link over TLS ----

/// A node that serves TLS only: started with `extra` and the TLS parameters, then its plain port
/// closed (`CONFIG SET port 0`, over TLS). Returns it, its TLS port and an authenticated
/// connection.
fn tls_only(certs: &Certs, extra: &[&str], pass: &str) -> (Shoal, u16) {
    let mut args: Vec<&str> = vec!["--requirepass", pass];
    args.extend_from_slice(extra);
    let (s, port) = start_tls(certs, &args);
    let mut c = rediss(certs, port);
    let _: () = q(&mut c, &["AUTH", pass]);
    let _: () = q(&mut c, &["CONFIG", "SET", "port", "0"]);
    wait_until("the plain port closes", || {
        TcpStream::connect(("127.0.0.1", s.port)).is_err()
    });
    assert_eq!(common::info_u64(&mut c, "server", "tcp_port"), 0);
    (s, port)
}

/// An authenticated TLS connection.
fn tls_client(certs: &Certs, port: u16, pass: &str) -> redis::Connection {
    let mut c = rediss(certs, port);
    let _: () = q(&mut c, &["AUTH", pass]);
    c
}

/// The TLS and cluster parameters every node of a TLS-only cluster shares.
fn tls_cluster_args(certs: &Certs) -> Vec<String> {
    [
        "--cluster-enabled",
        "yes",
        "--tls-cluster",
        "yes",
        "--tls-replication",
        "yes",
        "--cluster-secret",
        "s3cret",
        "--masterauth",
        "pw",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(certs.server_args(0).into_iter().skip(2))
    .collect()
}

fn wait_known_nodes(c: &mut redis::Connection, n: usize) {
    let want = format!("cluster_known_nodes:{n}\r\n");
    wait_until("the nodes know each other", || {
        common::try_q::<String>(c, &["CLUSTER", "INFO"]).is_ok_and(|i| i.contains(&want))
    });
}

#[test]
fn a_tls_only_cluster_replicates_reshards_migrates_and_fails_over_over_tls() {
    let certs = Certs::new();
    let args = tls_cluster_args(&certs);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_a, a_port) = tls_only(&certs, &args, "pw");
    let (_b, b_port) = tls_only(&certs, &args, "pw");
    let (_r, r_port) = tls_only(&certs, &args, "pw");
    let mut a = tls_client(&certs, a_port, "pw");
    let mut b = tls_client(&certs, b_port, "pw");
    let mut r = tls_client(&certs, r_port, "pw");
    let _: () = q(&mut a, &["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]);
    // The nodes are met at their TLS ports, and announce them.
    for port in [b_port, r_port] {
        let _: () = q(&mut a, &["CLUSTER", "MEET", "127.0.0.1", &port.to_string()]);
    }
    for c in [&mut a, &mut b, &mut r] {
        wait_known_nodes(c, 3);
    }
    let slots: String = q(&mut a, &["CLUSTER", "NODES"]);
    assert!(slots.contains(&format!("127.0.0.1:{a_port}@")), "{slots}");
    let a_id: String = q(&mut a, &["CLUSTER", "MYID"]);
    let b_id: String = q(&mut b, &["CLUSTER", "MYID"]);
    for i in 0..200 {
        let _: () = q(&mut a, &["SET", &format!("key:{i}"), &i.to_string()]);
    }

    // Replication: the replica follows its primary at its TLS port, authenticated.
    let _: () = q(&mut r, &["CLUSTER", "REPLICATE", &a_id]);
    common::wait_link_up(&mut r);
    wait_until("the keys reach the replica", || {
        common::try_q::<u64>(&mut r, &["DBSIZE"]) == Ok(200)
    });
    assert_eq!(
        info_field(&mut r, "replication", "master_port").as_deref(),
        Some(a_port.to_string().as_str())
    );

    // A reshard: half the slots move to b over TLS.
    let ok: String = q(
        &mut a,
        &[
            "CLUSTER",
            "MIGRATESLOTS",
            "SLOTSRANGE",
            "0",
            "8191",
            "NODE",
            &b_id,
        ],
    );
    assert_eq!(ok, "OK");
    wait_until("the slots move", || {
        let jobs: Vec<Vec<String>> = q(&mut a, &["CLUSTER", "GETSLOTMIGRATIONS"]);
        let job = jobs.iter().find(|j| j.contains(&"0-8191".to_string()));
        job.is_some_and(|j| {
            let state = j
                .iter()
                .position(|f| f == "state")
                .map(|i| j[i + 1].as_str());
            assert_ne!(state, Some("failed"), "{j:?}");
            state == Some("success")
        })
    });
    let on_b: u64 = q(&mut b, &["DBSIZE"]);
    assert!(on_b > 0, "no key moved to b");
    wait_until("the source drops the moved keys", || {
        common::try_q::<u64>(&mut a, &["DBSIZE"]).is_ok_and(|n| n + on_b == 200)
    });

    // MIGRATE of a key a still owns, to b importing its slot, over TLS.
    let key = (0..200)
        .map(|i| format!("key:{i}"))
        .find(|k| {
            let slot: u64 = q(&mut a, &["CLUSTER", "KEYSLOT", k]);
            slot > 8191
        })
        .expect("a key a still owns");
    let slot: u64 = q(&mut a, &["CLUSTER", "KEYSLOT", &key]);
    let slot = slot.to_string();
    let _: () = q(&mut b, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &a_id]);
    let _: () = q(&mut a, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &b_id]);
    let ok: String = q(
        &mut a,
        &[
            "MIGRATE",
            "127.0.0.1",
            &b_port.to_string(),
            &key,
            "0",
            "5000",
            "AUTH",
            "pw",
        ],
    );
    assert_eq!(ok, "OK");
    let _: () = q(&mut b, &["ASKING"]);
    let moved: Option<String> = q(&mut b, &["GET", &key]);
    assert!(moved.is_some(), "{key} did not reach b");
    // A MIGRATE with the wrong password is refused by the target.
    let other = (0..200).map(|i| format!("key:{i}")).find(|k| {
        k != &key && {
            let s: u64 = q(&mut a, &["CLUSTER", "KEYSLOT", k]);
            s.to_string() == slot
        }
    });
    if let Some(other) = other {
        let e = common::try_q::<String>(
            &mut a,
            &[
                "MIGRATE",
                "127.0.0.1",
                &b_port.to_string(),
                &other,
                "0",
                "5000",
                "AUTH",
                "wrong",
            ],
        )
        .unwrap_err();
        assert!(e.to_string().contains("WRONGPASS"), "{e}");
    }

    // A manual failover: the replica asks its primary over TLS to pause, then takes over; the
    // old primary follows it at its TLS port.
    let ok: String = q(&mut r, &["CLUSTER", "FAILOVER"]);
    assert_eq!(ok, "OK");
    wait_until("the replica takes over", || {
        info_field(&mut r, "replication", "role").as_deref() == Some("master")
    });
    wait_until("the old primary follows it over TLS", || {
        info_field(&mut a, "replication", "master_port").as_deref()
            == Some(r_port.to_string().as_str())
            && info_field(&mut a, "replication", "master_link_status").as_deref() == Some("up")
    });

    // The tools reach a TLS-only cluster with redis-cli's flags, and fail clearly without them.
    let tool = |args: &[&str], tls: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
        cmd.args(args).args(["--password", "pw"]);
        if tls {
            cmd.args(["--tls", "--cacert", &certs.path("ca.crt")]);
            cmd.args(["--cert", &certs.path("client.crt")]);
            cmd.args(["--key", &certs.path("client.key")]);
        }
        cmd.output().expect("shoal runs")
    };
    let r_addr = format!("127.0.0.1:{r_port}");
    let out = tool(&["cluster", "check", &r_addr], true);
    let text = String::from_utf8_lossy(&out.stdout);
    // (1: the slot MIGRATE moved a key of is still marked importing/migrating.)
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("[OK] All nodes agree about slots configuration."),
        "{text}"
    );
    assert!(text.contains("[OK] All 16384 slots covered."), "{text}");
    assert!(
        text.contains(&format!("has slots moving: [{slot}]")),
        "{text}"
    );
    let out = tool(&["cluster", "check", &r_addr], false);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a plain connection to a TLS port"
    );
    // verify compares the new primary with its replica (the old primary) over TLS.
    let mut verified = None;
    wait_until("verify over TLS finds the replica equal", || {
        let out = tool(&["verify", "--quiet", &r_addr], true);
        verified = Some(String::from_utf8_lossy(&out.stdout).into_owned());
        out.status.code() == Some(0)
    });
    assert!(
        verified.is_some_and(|t| t.contains("verified 1 replica(s): 0 differing key(s)")),
        "verify over TLS"
    );
}

#[test]
fn a_cluster_node_without_the_password_is_refused_by_its_primary() {
    let certs = Certs::new();
    let args = tls_cluster_args(&certs);
    let mut wrong: Vec<String> = args.clone();
    let at = wrong.iter().position(|a| a == "--masterauth").unwrap();
    wrong[at + 1] = "not-the-password".into();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let wrong: Vec<&str> = wrong.iter().map(String::as_str).collect();
    let (_a, a_port) = tls_only(&certs, &args, "pw");
    let (_r, r_port) = tls_only(&certs, &wrong, "pw");
    let mut a = tls_client(&certs, a_port, "pw");
    let mut r = tls_client(&certs, r_port, "pw");
    let _: () = q(&mut a, &["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]);
    let _: () = q(
        &mut a,
        &["CLUSTER", "MEET", "127.0.0.1", &r_port.to_string()],
    );
    wait_known_nodes(&mut r, 2);
    let _: () = q(&mut a, &["SET", "k", "v"]);
    let a_id: String = q(&mut a, &["CLUSTER", "MYID"]);
    let _: () = q(&mut r, &["CLUSTER", "REPLICATE", &a_id]);
    // The primary refuses its AUTH: no link, no data, the refusal counted on the replica.
    wait_until("the replica's link fails", || {
        common::info_u64(&mut r, "replication", "shoal_link_failures") > 0
    });
    let deadline = Instant::now() + Duration::from_millis(1_500);
    while Instant::now() < deadline {
        assert_eq!(
            info_field(&mut r, "replication", "master_link_status").as_deref(),
            Some("down")
        );
        let n: u64 = q(&mut r, &["DBSIZE"]);
        assert_eq!(n, 0, "half-joined: the replica holds data");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Given the password, its retries get in.
    let _: () = q(&mut r, &["CONFIG", "SET", "masterauth", "pw"]);
    common::wait_link_up(&mut r);
    wait_until("the data reaches the replica", || {
        common::try_q::<u64>(&mut r, &["DBSIZE"]) == Ok(1)
    });
}

// ---- active-active peers over TLS ----

/// The lines of `INFO active` about peer links.
fn peer_lines(c: &mut redis::Connection) -> Vec<String> {
    let text: String = q(c, &["INFO", "active"]);
    text.lines()
        .filter(|l| l.starts_with("active_peer"))
        .map(str::to_string)
        .collect()
}

#[test]
fn active_active_peers_link_over_tls_and_a_peer_with_the_wrong_password_is_refused() {
    let certs = Certs::new();
    let base = ["--tls-replication", "yes", "--masterauth", "pw"];
    let (_a, a_port) = tls_only(&certs, &base, "pw");
    let (_b, b_port) = tls_only(&certs, &base, "pw");
    let mut a = tls_client(&certs, a_port, "pw");
    let mut b = tls_client(&certs, b_port, "pw");
    let _: () = q(&mut a, &["SET", "from-a", "1"]);
    let _: () = q(&mut b, &["SET", "from-b", "2"]);
    // Peers are reached at their TLS ports (the plain ones are closed).
    let _: () = q(
        &mut a,
        &[
            "CONFIG",
            "SET",
            "active-peers",
            &format!("127.0.0.1:{b_port}"),
        ],
    );
    let _: () = q(
        &mut b,
        &[
            "CONFIG",
            "SET",
            "active-peers",
            &format!("127.0.0.1:{a_port}"),
        ],
    );
    for (c, key, want) in [(&mut a, "from-b", "2"), (&mut b, "from-a", "1")] {
        wait_until("each member merges the other's writes", || {
            common::try_q::<Option<String>>(c, &["GET", key])
                .ok()
                .flatten()
                .as_deref()
                == Some(want)
        });
    }
    let _: () = q(&mut a, &["INCRBY", "n", "5"]);
    wait_until("a later write streams over the TLS link", || {
        common::try_q::<Option<String>>(&mut b, &["GET", "n"])
            .ok()
            .flatten()
            .as_deref()
            == Some("5")
    });
    assert!(
        peer_lines(&mut a)[0].contains("state=connected"),
        "{:?}",
        peer_lines(&mut a)
    );

    // A member whose masterauth is wrong: a refuses it; it merges nothing, says why (and logs
    // it), and a's ACL LOG records the refused authentication.
    let wrong = ["--tls-replication", "yes", "--masterauth", "wrong"];
    let (_c, c_port) = tls_only(&certs, &wrong, "pw");
    let mut c = tls_client(&certs, c_port, "pw");
    let _: () = q(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "active-peers",
            &format!("127.0.0.1:{a_port}"),
        ],
    );
    wait_until("the refusal is reported", || {
        peer_lines(&mut c)
            .first()
            .is_some_and(|l| l.contains("authentication with the peer failed"))
    });
    let deadline = Instant::now() + Duration::from_millis(1_000);
    while Instant::now() < deadline {
        let lines = peer_lines(&mut c);
        assert!(!lines[0].contains("state=connected"), "{lines:?}");
        let n: u64 = q(&mut c, &["DBSIZE"]);
        assert_eq!(n, 0, "merged from a peer that refused it");
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_until("a logs the failed AUTH", || {
        let log: Vec<redis::Value> = q(&mut a, &["ACL", "LOG"]);
        format!("{log:?}").contains("auth")
    });
}

// ---- CONFIG SET port / tls-port ----

#[test]
fn config_set_port_and_tls_port_move_the_listeners_and_a_busy_port_changes_nothing() {
    let certs = Certs::new();
    let (s, tls_port) = start_tls(&certs, &[]);
    let mut c = s.client();
    // The plain port moves: the new one answers, the old one is closed, INFO follows.
    let port = free_port();
    let _: () = q(&mut c, &["CONFIG", "SET", "port", &port.to_string()]);
    let mut moved = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    let pong: String = q(&mut moved, &["PING"]);
    assert_eq!(pong, "PONG");
    wait_until("the old port closes", || {
        TcpStream::connect(("127.0.0.1", s.port)).is_err()
    });
    assert_eq!(
        common::info_u64(&mut moved, "server", "tcp_port"),
        port as u64
    );
    let got: Vec<String> = q(&mut moved, &["CONFIG", "GET", "port"]);
    assert_eq!(got, ["port".to_string(), port.to_string()]);
    // The connection made before the move stays.
    let pong: String = q(&mut c, &["PING"]);
    assert_eq!(pong, "PONG");
    // A port something else holds: Redis's error, and the listener stays where it was.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port().to_string();
    for name in ["port", "tls-port"] {
        let mut r = common::Raw::connect(&format!("127.0.0.1:{port}"));
        assert_eq!(
            r.call(&["CONFIG", "SET", name, &busy_port]),
            format!(
                "-ERR CONFIG SET failed (possibly related to argument '{name}') - Unable to \
                 listen on this port\r\n"
            )
        );
    }
    let got: Vec<String> = q(&mut moved, &["CONFIG", "GET", "port"]);
    assert_eq!(got[1], port.to_string());
    let pong: String = q(
        &mut redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .unwrap()
            .get_connection()
            .unwrap(),
        &["PING"],
    );
    assert_eq!(pong, "PONG");
    let pong: String = q(&mut rediss(&certs, tls_port), &["PING"]);
    assert_eq!(pong, "PONG");
    // The TLS port moves too.
    let new_tls = free_port();
    let _: () = q(
        &mut moved,
        &["CONFIG", "SET", "tls-port", &new_tls.to_string()],
    );
    let mut t = rediss(&certs, new_tls);
    let pong: String = q(&mut t, &["PING"]);
    assert_eq!(pong, "PONG");
    wait_until("the old TLS port closes", || {
        TcpStream::connect(("127.0.0.1", tls_port)).is_err()
    });
    // tls-port 0 closes it; port 0 closes the plain one (then the node serves nothing new).
    let _: () = q(&mut t, &["CONFIG", "SET", "tls-port", "0"]);
    wait_until("the TLS port closes", || {
        TcpStream::connect(("127.0.0.1", new_tls)).is_err()
    });
    let _: () = q(&mut moved, &["CONFIG", "SET", "port", "0"]);
    wait_until("the plain port closes", || {
        TcpStream::connect(("127.0.0.1", port)).is_err()
    });
    assert_eq!(common::info_u64(&mut moved, "server", "tcp_port"), 0);
    drop(busy);
}

#[test]
fn a_first_tls_port_without_certificates_is_refused_as_redis_does() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    let port = free_port().to_string();
    assert_eq!(
        r.call(&["CONFIG", "SET", "tls-port", &port]),
        "-ERR CONFIG SET failed (possibly related to argument 'tls-port') - Unable to update \
         TLS configuration. Check server logs.\r\n"
    );
    assert!(TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_err());
    let got = r.call(&["CONFIG", "GET", "tls-port"]);
    assert!(got.ends_with("$1\r\n0\r\n"), "{got:?}");
}

// ---- redis-py ----

/// A Python with redis-py: Debian's (`python3-redis`, which `scripts/test` installs), else the
/// first `python3` on the path.
fn python_with_redis() -> String {
    for py in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(py)
            .args(["-c", "import redis"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return py.to_string();
        }
    }
    panic!("no python3 with redis-py (apt-get install python3-redis; scripts/test does)");
}

/// What the script does with redis-py over TLS: a command, a pipeline, a large value, and a
/// refused connection without a client certificate.
const REDIS_PY_SCRIPT: &str = r#"
import sys, ssl, redis
port, ca, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
r = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=ca, ssl_certfile=cert,
                ssl_keyfile=key, socket_timeout=5, socket_connect_timeout=5)
assert r.ping()
assert r.set("py:k", "v")
assert r.get("py:k") == b"v", r.get("py:k")
p = r.pipeline(transaction=False)
for _ in range(1000):
    p.incr("py:n")
assert p.execute()[-1] == 1000
big = b"x" * (1 << 20)
r.set("py:big", big)
assert r.get("py:big") == big
assert r.execute_command("CONFIG", "GET", "tls-port")[1] == str(port).encode()
anon = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=ca, socket_timeout=5,
                   socket_connect_timeout=5)
try:
    anon.ping()
    sys.exit("a client without a certificate got in")
except (redis.exceptions.ConnectionError, ssl.SSLError, OSError):
    pass
print("redis-py ok")
"#;

#[test]
fn redis_py_with_ssl_talks_to_the_tls_port() {
    let certs = Certs::new();
    let (s, port) = start_tls(&certs, &[]);
    let script = certs.dir.join("client.py");
    std::fs::write(&script, REDIS_PY_SCRIPT).unwrap();
    // Bounded: the script's sockets time out after 5 s, and `timeout` ends it after 60.
    let out = Command::new("timeout")
        .args(["60", &python_with_redis()])
        .arg(&script)
        .args([
            &port.to_string(),
            &certs.path("ca.crt"),
            &certs.path("client.crt"),
            &certs.path("client.key"),
        ])
        .output()
        .expect("run python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("redis-py ok"), "{text}");
    // What it wrote is there for any client.
    let n: u64 = q(&mut s.client(), &["GET", "py:n"]);
    assert_eq!(n, 1000);
}
