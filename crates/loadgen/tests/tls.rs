//! `shoal-loadgen maxrate --tls` against a real shoal TLS port (mutual TLS, certificates made by
//! the test with the `openssl` CLI): the SETs arrive (the plain port counts the keys), and a client
//! without the certificate the server asks for ends with an error instead of a number.
//!
//! The shoal binary is the one built next to the load generator (`cargo test --workspace` builds
//! both; alone: `cargo build -p shoal && cargo test -p shoal-loadgen --test tls`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const START_MAX: Duration = Duration::from_secs(20);

struct Server {
    child: Child,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
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

/// A CA and a server and a client certificate signed by it (the server's for 127.0.0.1).
fn make_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=loadgen-ca",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    for name in ["server", "client"] {
        openssl(
            dir,
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
                &format!("/CN={name}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
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
}

/// Polls until `port` accepts connections, within [`START_MAX`].
fn wait_listening(port: u16) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < START_MAX,
            "shoal did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A shoal with a plain and a TLS port (client certificates required, its default).
fn start() -> (Server, u16, u16) {
    let shoal = Path::new(env!("CARGO_BIN_EXE_shoal-loadgen")).with_file_name("shoal");
    assert!(
        shoal.exists(),
        "no shoal binary at {} (cargo build -p shoal)",
        shoal.display()
    );
    let dir = std::env::temp_dir().join(format!("loadgen-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    make_certs(&dir);
    let (port, tls_port) = (free_port(), free_port());
    let p = |f: &str| dir.join(f).display().to_string();
    let child = Command::new(&shoal)
        .args(["serve", "--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--tls-port", &tls_port.to_string(), "--dir", &p("")])
        .args([
            "--tls-cert-file",
            &p("server.crt"),
            "--tls-key-file",
            &p("server.key"),
        ])
        .args(["--tls-ca-cert-file", &p("ca.crt")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start shoal");
    let server = Server { child, dir };
    wait_listening(port);
    wait_listening(tls_port);
    (server, port, tls_port)
}

fn dbsize(port: u16) -> u64 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"DBSIZE\r\n").unwrap();
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "connection closed");
        reply.push(byte[0]);
        assert!(reply.len() < 64, "{reply:?}");
    }
    let text = String::from_utf8(reply).unwrap();
    text.trim_start_matches(':').trim_end().parse().unwrap()
}

fn maxrate(server: &Server, tls_port: u16, with_cert: bool) -> std::process::Output {
    let p = |f: &str| server.dir.join(f).display().to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal-loadgen"));
    cmd.args(["maxrate", "--addr", &format!("127.0.0.1:{tls_port}")])
        .args(["--keys", "1000", "--get-ratio", "0", "--pipeline", "4"])
        .args([
            "--connections",
            "2",
            "--duration-s",
            "0.5",
            "--warmup-s",
            "0",
        ])
        .args(["--io-timeout-s", "10", "--tls", "--cacert", &p("ca.crt")]);
    if with_cert {
        cmd.args(["--cert", &p("client.crt"), "--key", &p("client.key")]);
    }
    cmd.output().expect("run shoal-loadgen")
}

#[test]
fn maxrate_over_mutual_tls_sets_keys_and_fails_without_a_client_certificate() {
    let (server, port, tls_port) = start();
    assert_eq!(dbsize(port), 0);

    let out = maxrate(&server, tls_port, true);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"tls\":true"), "{stdout}");
    assert!(stdout.contains("\"errors\":0"), "{stdout}");
    assert!(dbsize(port) > 0, "no SET reached the server: {stdout}");

    let out = maxrate(&server, tls_port, false);
    assert!(
        !out.status.success(),
        "a run without the client certificate succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
