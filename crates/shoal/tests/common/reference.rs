//! A real redis-server 7.0 to compare shoal with, on a free port in a temporary directory,
//! stopped when dropped.

use std::process::{Child, Command, Stdio};

use super::{scratch_dir, wait_until};

/// A redis-server 7.0 on a free port in a temporary directory, stopped on drop.
pub struct Redis {
    child: Child,
    pub port: u16,
    dir: std::path::PathBuf,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// With more options (`--requirepass`, ...) after the defaults.
    pub fn start_with(extra: &[&str]) -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let dir = scratch_dir("info-redis");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&dir)
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server 7.0 (apt-get install redis-server)");
        let r = Redis { child, port, dir };
        // Any reply (a server with a password answers NOAUTH) means it is up.
        wait_until("redis-server answers", || {
            redis::Client::open(r.url())
                .and_then(|c| c.get_connection())
                .map(|mut c| {
                    !matches!(
                        redis::cmd("PING").query::<String>(&mut c),
                        Err(e) if e.is_io_error()
                    )
                })
                .unwrap_or(false)
        });
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("url")
            .get_connection()
            .expect("connect to redis-server")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
