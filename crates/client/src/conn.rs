//! One TCP connection: requests are encoded into one buffer and written at once, replies are read
//! with shoal-resp's parser (bounded by its `ReplyLimits`), so a batch of N commands costs one
//! write and as many reads as the bytes need (pipelining).

use shoal_resp::{Reply, ReplyLimits, encode_request, parse_reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Error, Result};

/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// A connected socket and its read buffer.
pub(crate) struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    out: Vec<u8>,
    limits: ReplyLimits,
}

impl Conn {
    pub(crate) async fn connect(addr: &str) -> Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| Error::Connection(format!("{addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(READ_CHUNK_BYTES),
            out: Vec::new(),
            limits: ReplyLimits::default(),
        })
    }

    /// Sends every command, then reads one reply per command. Error replies are values here;
    /// only I/O and protocol failures are errors (the caller then drops the connection).
    pub(crate) async fn pipeline(&mut self, cmds: &[Vec<Vec<u8>>]) -> Result<Vec<Reply>> {
        self.out.clear();
        for c in cmds {
            let args: Vec<&[u8]> = c.iter().map(Vec::as_slice).collect();
            encode_request(&mut self.out, &args);
        }
        self.stream
            .write_all(&self.out)
            .await
            .map_err(|e| Error::Connection(e.to_string()))?;
        let mut replies = Vec::with_capacity(cmds.len());
        let mut pos = 0;
        while replies.len() < cmds.len() {
            match parse_reply(&self.buf[pos..], &self.limits) {
                Ok(Some((r, used))) => {
                    pos += used;
                    replies.push(r);
                    continue;
                }
                Ok(None) => {}
                Err(e) => return Err(Error::Protocol(e.0)),
            }
            self.buf.drain(..pos);
            pos = 0;
            let start = self.buf.len();
            self.buf.resize(start + READ_CHUNK_BYTES, 0);
            let n = self
                .stream
                .read(&mut self.buf[start..])
                .await
                .map_err(|e| Error::Connection(e.to_string()));
            let n = match n {
                Ok(n) => n,
                Err(e) => {
                    self.buf.truncate(start);
                    return Err(e);
                }
            };
            self.buf.truncate(start + n);
            if n == 0 {
                return Err(Error::Connection("closed by the server".into()));
            }
        }
        self.buf.drain(..pos);
        Ok(replies)
    }
}
