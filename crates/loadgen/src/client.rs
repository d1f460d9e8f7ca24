//! A pipelined RESP connection over tokio TCP, for the closed-loop runs (hit ratio, max rate,
//! cluster load).
//!
//! Commands are queued into a write buffer and sent with one `flush`, then replies are read one by
//! one; that is how pipelining works in RESP (replies come back in request order). Every read and
//! write has a timeout so a stuck server ends the run with an error instead of hanging it. The
//! connection is plain TCP or TLS (`crate::tls`, `--tls`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::resp::{self, Reply};
use crate::tls::Tls;

/// What the load generator needs to know about a reply; the payload itself is never needed.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Nil,
    Value,
    Error(String),
}

impl Outcome {
    pub fn of(reply: &Reply<'_>) -> Self {
        match reply {
            Reply::Bulk(None) | Reply::Array(None) => Outcome::Nil,
            Reply::Error(message) => Outcome::Error(String::from_utf8_lossy(message).into_owned()),
            _ => Outcome::Value,
        }
    }
}

/// Plain TCP, or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

pub struct Conn {
    stream: Stream,
    read_buf: Vec<u8>,
    /// Start of unparsed bytes in `read_buf`; consumed bytes are dropped lazily to avoid a memmove
    /// per reply.
    read_pos: usize,
    write_buf: Vec<u8>,
    io_timeout: Duration,
}

const READ_CHUNK: usize = 64 * 1024;

impl Conn {
    pub async fn connect(addr: &str, io_timeout: Duration) -> io::Result<Self> {
        Self::connect_with(addr, io_timeout, None).await
    }

    /// Connects over TLS when `tls` is given (the handshake is within `io_timeout` too).
    pub async fn connect_with(
        addr: &str,
        io_timeout: Duration,
        tls: Option<&Tls>,
    ) -> io::Result<Self> {
        let stream = tokio::time::timeout(io_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| timed_out("connect"))??;
        // Without NODELAY, Nagle holds small pipelined batches back and adds latency to every run.
        stream.set_nodelay(true)?;
        let stream = match tls {
            None => Stream::Plain(stream),
            Some(tls) => Stream::Tls(Box::new(
                tokio::time::timeout(io_timeout, tls.connect(addr, stream))
                    .await
                    .map_err(|_| timed_out("TLS handshake"))??,
            )),
        };
        Ok(Self {
            stream,
            read_buf: Vec::with_capacity(READ_CHUNK),
            read_pos: 0,
            write_buf: Vec::with_capacity(READ_CHUNK),
            io_timeout,
        })
    }

    pub fn queue(&mut self, args: &[&[u8]]) {
        resp::encode_command(&mut self.write_buf, args);
    }

    /// Direct access for callers that encode commands themselves (see `workload::encode_op`).
    pub fn write_buf(&mut self) -> &mut Vec<u8> {
        &mut self.write_buf
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        if self.write_buf.is_empty() {
            return Ok(());
        }
        // The flush sends what TLS still holds after accepting every byte (nothing for TCP).
        let write = async {
            self.stream.write_all(&self.write_buf).await?;
            self.stream.flush().await
        };
        tokio::time::timeout(self.io_timeout, write)
            .await
            .map_err(|_| timed_out("write"))??;
        self.write_buf.clear();
        Ok(())
    }

    /// The next reply, in request order.
    pub async fn reply(&mut self) -> io::Result<Outcome> {
        self.reply_with(Outcome::of).await
    }

    /// The next reply, in request order, as `read` sees it (the reply borrows the read buffer).
    pub async fn reply_with<T>(&mut self, read: impl FnOnce(&Reply<'_>) -> T) -> io::Result<T> {
        loop {
            match resp::parse_reply(&self.read_buf[self.read_pos..]) {
                Ok(Some((reply, used))) => {
                    let outcome = read(&reply);
                    self.read_pos += used;
                    return Ok(outcome);
                }
                Ok(None) => self.fill().await?,
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            }
        }
    }

    async fn fill(&mut self) -> io::Result<()> {
        if self.read_pos == self.read_buf.len() {
            self.read_buf.clear();
            self.read_pos = 0;
        } else if self.read_pos > READ_CHUNK {
            self.read_buf.drain(..self.read_pos);
            self.read_pos = 0;
        }
        self.read_buf.reserve(READ_CHUNK);
        let read = tokio::time::timeout(self.io_timeout, self.stream.read_buf(&mut self.read_buf))
            .await
            .map_err(|_| timed_out("read"))??;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        Ok(())
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
}
