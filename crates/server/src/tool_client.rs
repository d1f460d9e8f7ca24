//! A blocking RESP client for command-line tools (`shoal verify`) and tests: send a command, read
//! one reply. The reply parser is the one every internal link uses (`shoal_resp::parse_reply`);
//! this adds only a socket with timeouts, plain or TLS (a node's own links to its cluster peers
//! under `tls-cluster`: [`Client::connect_with`]).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub use shoal_resp::Reply;
use shoal_resp::{ReplyLimits, parse_reply};

/// The socket: plain, or TLS with the node's client configuration (`crate::tls`).
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

pub struct Client {
    s: Stream,
    buf: Vec<u8>,
    pub addr: String,
}

fn bad(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

impl Client {
    /// Connects to `addr`: plain, or over TLS in a tool started with `--tls`
    /// (`crate::tls::install_tool`).
    pub fn connect(addr: &str, timeout: Duration) -> std::io::Result<Client> {
        Client::connect_with(addr, timeout, crate::tls::tool_tls())
    }

    /// Connects to `addr`, over TLS if `tls` (with the certificates this process loaded: a node
    /// reaching its peers); the handshake is bounded by `timeout` like every read.
    pub fn connect_with(addr: &str, timeout: Duration, tls: bool) -> std::io::Result<Client> {
        let sa = std::net::ToSocketAddrs::to_socket_addrs(addr)?
            .next()
            .ok_or_else(|| bad("no address"))?;
        let s = TcpStream::connect_timeout(&sa, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        let _ = s.set_nodelay(true);
        let s = if tls {
            let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
            let conn = crate::tls::blocking_client(host)?;
            let mut t = rustls::StreamOwned::new(conn, s);
            // The handshake now, so a peer that does not speak TLS fails the connect.
            while t.conn.is_handshaking() {
                t.conn.complete_io(&mut t.sock)?;
            }
            Stream::Tls(Box::new(t))
        } else {
            Stream::Plain(s)
        };
        Ok(Client {
            s,
            buf: Vec::new(),
            addr: addr.to_string(),
        })
    }

    pub fn send(&mut self, args: &[&[u8]]) -> std::io::Result<()> {
        let mut req = Vec::new();
        shoal_resp::encode_request(&mut req, args);
        self.s.write_all(&req)
    }

    pub fn call(&mut self, args: &[&[u8]]) -> std::io::Result<Reply> {
        self.send(args)?;
        self.read_reply()
    }

    /// `call` with string arguments.
    pub fn cmd(&mut self, args: &[&str]) -> std::io::Result<Reply> {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        self.call(&a)
    }

    pub fn read_reply(&mut self) -> std::io::Result<Reply> {
        let limits = ReplyLimits::default();
        let mut chunk = [0u8; 64 * 1024];
        loop {
            if let Some((r, used)) = parse_reply(&self.buf, &limits).map_err(|e| bad(&e.0))? {
                self.buf.drain(..used);
                return Ok(r);
            }
            let n = self.s.read(&mut chunk)?;
            if n == 0 {
                return Err(bad("connection closed"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}
