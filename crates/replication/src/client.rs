//! A small blocking RESP2 client for tools (`shoal verify`) and tests: send a command, read one
//! reply. Every read has a timeout; replies are size-checked while parsing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Largest bulk reply accepted (matches `proto-max-bulk-len`'s default).
pub const BULK_BYTES_MAX: usize = 512 * 1024 * 1024;
/// Largest array reply accepted.
pub const ARRAY_ITEMS_MAX: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Bulk(Some(b)) => Some(b),
            Reply::Status(s) => Some(s.as_bytes()),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            Reply::Bulk(Some(b)) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }
    pub fn into_array(self) -> Option<Vec<Reply>> {
        match self {
            Reply::Array(Some(v)) => Some(v),
            _ => None,
        }
    }
}

pub struct Client {
    r: BufReader<TcpStream>,
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
            r: BufReader::new(s),
            addr: addr.to_string(),
        })
    }

    pub fn send(&mut self, args: &[&[u8]]) -> std::io::Result<()> {
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a);
            req.extend_from_slice(b"\r\n");
        }
        self.r.get_mut().write_all(&req)
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

    fn line(&mut self) -> std::io::Result<String> {
        let mut l = Vec::new();
        (&mut self.r).take(64 * 1024).read_until(b'\n', &mut l)?;
        if !l.ends_with(b"\r\n") {
            return Err(bad("truncated reply line"));
        }
        l.truncate(l.len() - 2);
        String::from_utf8(l).map_err(|_| bad("reply line is not UTF-8"))
    }

    pub fn read_reply(&mut self) -> std::io::Result<Reply> {
        let l = self.line()?;
        let (t, rest) = l.split_at(1.min(l.len()));
        let num = || rest.parse::<i64>().map_err(|_| bad("bad length"));
        Ok(match t {
            "+" => Reply::Status(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Int(num()?),
            "$" => {
                let n = num()?;
                if n < 0 {
                    Reply::Bulk(None)
                } else if n as usize > BULK_BYTES_MAX {
                    return Err(bad("bulk too large"));
                } else {
                    let mut b = vec![0u8; n as usize + 2];
                    self.r.read_exact(&mut b)?;
                    b.truncate(n as usize);
                    Reply::Bulk(Some(b))
                }
            }
            "*" => {
                let n = num()?;
                if n < 0 {
                    Reply::Array(None)
                } else if n as usize > ARRAY_ITEMS_MAX {
                    return Err(bad("array too large"));
                } else {
                    let mut v = Vec::with_capacity((n as usize).min(1024));
                    for _ in 0..n {
                        v.push(self.read_reply()?);
                    }
                    Reply::Array(Some(v))
                }
            }
            _ => return Err(bad("unknown reply type")),
        })
    }
}
