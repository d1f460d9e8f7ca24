//! The node's HTTP listener (`metrics-port`, off at 0; on `metrics-bind`, by default the data
//! `bind` address): `/metrics` (Prometheus text), `/` (the status page, `status/index.html`,
//! compiled into the binary: no external asset) and `/api/cluster` (the JSON the page polls).
//! Anything else is `404`; a method other than GET or HEAD is `405`.
//!
//! Hand-written HTTP/1.1 on tokio rather than a framework: three read-only routes need a request
//! line and a response with `Content-Length`, and a dependency such as hyper would cost more
//! build time than the whole listener. Every response closes the connection. Limits: at most
//! [`HTTP_CONNECTIONS_MAX`] connections at once (more are answered `503` and closed), a request
//! head of at most [`HTTP_REQUEST_BYTES_MAX`] bytes (else `431`) read within
//! [`HTTP_READ_TIMEOUT`], a response written within [`HTTP_WRITE_TIMEOUT`]. Work that blocks (a
//! scrape locks the keyspace shards briefly; the cluster view asks peers) runs on tokio's
//! blocking pool, never on a worker that serves clients.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shoal_commands::ServerState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// Connections served at once.
pub const HTTP_CONNECTIONS_MAX: usize = 64;
/// Bytes of a request's line and headers.
pub const HTTP_REQUEST_BYTES_MAX: usize = 8 * 1024;
/// Time a client has to send its request head.
pub const HTTP_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to take the response.
pub const HTTP_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The status page, served as it is.
const STATUS_PAGE: &str = include_str!("status/index.html");

/// The address the listener binds: `metrics-bind` (or the first `bind` address) and
/// `metrics-port`; `None` when `metrics-port` is 0.
pub fn listen_addr(cfg: &shoal_commands::config::Config) -> Option<String> {
    if cfg.metrics_port == 0 {
        return None;
    }
    let host = if cfg.metrics_bind.is_empty() {
        cfg.bind.split_whitespace().next().unwrap_or("127.0.0.1")
    } else {
        cfg.metrics_bind.as_str()
    };
    Some(if host.contains(':') {
        format!("[{host}]:{}", cfg.metrics_port)
    } else {
        format!("{host}:{}", cfg.metrics_port)
    })
}

/// Binds the listener at start-up, so a port in use stops the node (a fatal error).
pub fn bind(cfg: &shoal_commands::config::Config) -> Result<Option<std::net::TcpListener>, String> {
    let Some(addr) = listen_addr(cfg) else {
        return Ok(None);
    };
    let l = std::net::TcpListener::bind(&addr)
        .map_err(|e| format!("could not bind the metrics listener {addr}: {e}"))?;
    l.set_nonblocking(true)
        .map_err(|e| format!("metrics listener: {e}"))?;
    Ok(Some(l))
}

struct Http {
    srv: Arc<ServerState>,
    view: crate::status::ViewCache,
    slots: Arc<Semaphore>,
}

/// Serves until `shutdown` turns true.
pub async fn serve(
    srv: Arc<ServerState>,
    listener: std::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "metrics listener");
            return;
        }
    };
    let http = Arc::new(Http {
        srv,
        view: Default::default(),
        slots: Arc::new(Semaphore::new(HTTP_CONNECTIONS_MAX)),
    });
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let http = http.clone();
                match http.slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        tokio::spawn(async move {
                            http.connection(stream, peer).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        tokio::spawn(async move {
                            let mut s = stream;
                            let r = response(503, "text/plain; charset=utf-8", b"busy\n", false);
                            let _ = tokio::time::timeout(HTTP_WRITE_TIMEOUT, s.write_all(&r)).await;
                        });
                    }
                }
            }
        }
    }
}

/// A whole response: status line, headers, body (left out for HEAD).
fn response(code: u16, content_type: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        body.len()
    )
    .into_bytes();
    if code == 405 {
        out.extend_from_slice(b"Allow: GET, HEAD\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// Reads a request head (up to the blank line); `Err` holds the status to answer.
async fn read_head(s: &mut TcpStream) -> Result<Vec<u8>, u16> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let read = async {
        loop {
            if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
                return Ok(());
            }
            if buf.len() > HTTP_REQUEST_BYTES_MAX {
                return Err(431);
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return Err(400),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    match tokio::time::timeout(HTTP_READ_TIMEOUT, read).await {
        Ok(Ok(())) => Ok(buf),
        Ok(Err(code)) => Err(code),
        Err(_) => Err(408),
    }
}

impl Http {
    async fn connection(self: Arc<Self>, mut s: TcpStream, peer: SocketAddr) {
        let reply = match read_head(&mut s).await {
            Ok(head) => self.route(&head).await,
            Err(code) => response(code, "text/plain; charset=utf-8", b"bad request\n", false),
        };
        let write = async {
            s.write_all(&reply).await?;
            s.shutdown().await
        };
        if let Err(e) = tokio::time::timeout(HTTP_WRITE_TIMEOUT, write).await {
            tracing::debug!(%peer, error = %e, "metrics response not taken in time");
        }
    }

    async fn route(self: &Arc<Self>, head: &[u8]) -> Vec<u8> {
        let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let mut words = line.split_whitespace();
        let (Some(method), Some(target)) = (words.next(), words.next()) else {
            return response(400, "text/plain; charset=utf-8", b"bad request\n", false);
        };
        let head_only = method == "HEAD";
        if method != "GET" && !head_only {
            return response(
                405,
                "text/plain; charset=utf-8",
                b"method not allowed\n",
                false,
            );
        }
        let path = target.split(['?', '#']).next().unwrap_or("/");
        match path {
            "/metrics" => {
                let me = self.clone();
                let text = tokio::task::spawn_blocking(move || {
                    crate::metrics::render(&me.srv, crate::now_ms())
                })
                .await
                .unwrap_or_default();
                response(
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    text.as_bytes(),
                    head_only,
                )
            }
            "/" | "/index.html" => response(
                200,
                "text/html; charset=utf-8",
                STATUS_PAGE.as_bytes(),
                head_only,
            ),
            "/api/cluster" => {
                let me = self.clone();
                let json = tokio::task::spawn_blocking(move || me.view.get(&me.srv))
                    .await
                    .map(|v| v.as_bytes().to_vec())
                    .unwrap_or_default();
                response(200, "application/json", &json, head_only)
            }
            _ => response(404, "text/plain; charset=utf-8", b"not found\n", head_only),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listener_follows_metrics_port_and_bind() {
        let mut c = shoal_commands::config::Config::default();
        assert_eq!(listen_addr(&c), None, "metrics-port 0: no listener");
        c.metrics_port = 9121;
        assert_eq!(listen_addr(&c).as_deref(), Some("127.0.0.1:9121"));
        c.bind = "10.0.0.1 ::1".into();
        assert_eq!(listen_addr(&c).as_deref(), Some("10.0.0.1:9121"));
        c.metrics_bind = "::1".into();
        assert_eq!(listen_addr(&c).as_deref(), Some("[::1]:9121"));
    }

    #[test]
    fn responses_carry_length_and_close() {
        let r = String::from_utf8(response(404, "text/plain", b"nope", false)).unwrap();
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(r.contains("Content-Length: 4\r\n"));
        assert!(r.contains("Connection: close\r\n"));
        assert!(r.ends_with("\r\n\r\nnope"));
        let head = String::from_utf8(response(200, "text/html", b"abc", true)).unwrap();
        assert!(head.ends_with(
            "Content-Length: 3\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
        ));
    }
}
