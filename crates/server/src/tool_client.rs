//! A blocking RESP client for command-line tools (`shoal verify`) and tests: send a command, read
//! one reply. The reply parser is the one every internal link uses (`shoal_resp::parse_reply`);
//! this adds only a socket with timeouts.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub use shoal_resp::Reply;
use shoal_resp::{ReplyLimits, parse_reply};

pub struct Client {
    s: TcpStream,
    buf: Vec<u8>,
    pub addr: String,
}

fn bad(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

impl Client {
    pub fn connect(addr: &str, timeout: Duration) -> std::io::Result<Client> {
        let sa = std::net::ToSocketAddrs::to_socket_addrs(addr)?
            .next()
            .ok_or_else(|| bad("no address"))?;
        let s = TcpStream::connect_timeout(&sa, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        let _ = s.set_nodelay(true);
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
