//! The replica's side: connect to the primary, authenticate, `PSYNC <replid> <offset>`, load a
//! snapshot on a full resync, then apply the effect stream, acknowledging the applied offset after
//! every batch (group commit for the primary's `sync` strategy) and at least once a second. The link
//! reconnects with bounded backoff until the role changes (REPLICAOF NO ONE or another REPLICAOF).
//!
//! Received stream bytes also feed this node's own backlog at the primary's offsets, so that if it
//! is promoted, its former siblings continue from their offsets without a full copy.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use shoal_commands::ServerState;
use shoal_commands::repl::{self, LinkState};
use shoal_keyspace::{Entry, codec, key_slot};
use shoal_resp::{Decoded, RequestDecoder};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::now_ms;
use crate::snapshot::Loader;

/// Connect timeout and the bounds of the reconnect backoff.
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;
pub const BACKOFF_MIN_MS: u64 = 100;
pub const BACKOFF_MAX_MS: u64 = 2_000;
/// A handshake reply line longer than this is garbage.
pub const HANDSHAKE_LINE_BYTES_MAX: usize = 1024;
/// Acknowledge at least this often, even without new data.
pub const ACK_INTERVAL_MS: u64 = 1_000;

fn stale(srv: &ServerState, epoch: u64) -> bool {
    srv.repl.epoch.load(Relaxed) != epoch
}

/// Runs the link to `host:port` until the role epoch moves on.
pub async fn run(srv: Arc<ServerState>, host: String, port: u16, epoch: u64) {
    let mut backoff = BACKOFF_MIN_MS;
    while !stale(&srv, epoch) {
        *srv.repl.link.lock().expect("link lock") = LinkState::Connecting;
        match session(&srv, &host, port, epoch).await {
            Ok(()) => return,
            Err(e) => {
                if stale(&srv, epoch) {
                    return;
                }
                *srv.repl.link.lock().expect("link lock") = LinkState::Down;
                srv.repl.link_failures.fetch_add(1, Relaxed);
                tracing::warn!(primary = %format!("{host}:{port}"), error = %e, "replication link down; retrying");
            }
        }
        tokio::time::sleep(Duration::from_millis(backoff)).await;
        backoff = (backoff * 2).min(BACKOFF_MAX_MS);
    }
}

async fn read_line(r: &mut BufReader<TcpStream>) -> Result<String, String> {
    let mut line = Vec::new();
    let n = tokio::time::timeout(
        Duration::from_millis(CONNECT_TIMEOUT_MS * 6),
        r.take(HANDSHAKE_LINE_BYTES_MAX as u64)
            .read_until(b'\n', &mut line),
    )
    .await
    .map_err(|_| "timed out waiting for the primary".to_string())?
    .map_err(|e| e.to_string())?;
    if n == 0 || !line.ends_with(b"\n") {
        return Err("primary closed the connection during the handshake".into());
    }
    Ok(String::from_utf8_lossy(&line).trim_end().to_string())
}

async fn command(r: &mut BufReader<TcpStream>, args: &[&str]) -> Result<String, String> {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{}\r\n", a.len(), a));
    }
    r.get_mut()
        .write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    read_line(r).await
}

async fn session(srv: &Arc<ServerState>, host: &str, port: u16, epoch: u64) -> Result<(), String> {
    let addr = format!("{host}:{port}");
    let stream = tokio::time::timeout(
        Duration::from_millis(CONNECT_TIMEOUT_MS),
        TcpStream::connect(&addr),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut r = BufReader::with_capacity(64 * 1024, stream);
    let (user, pass) = {
        let cfg = srv.config();
        (cfg.masteruser.clone(), cfg.masterauth.clone())
    };
    if !pass.is_empty() {
        let reply = if user.is_empty() {
            command(&mut r, &["AUTH", &pass]).await?
        } else {
            command(&mut r, &["AUTH", &user, &pass]).await?
        };
        if !reply.starts_with("+OK") {
            return Err(format!("authentication with the primary failed: {reply}"));
        }
    }
    let my_port = srv.tcp_port.to_string();
    let reply = command(&mut r, &["REPLCONF", "listening-port", &my_port]).await?;
    if !reply.starts_with("+OK") {
        return Err(format!("REPLCONF refused: {reply}"));
    }
    let (replid, offset) = {
        let ids = srv.repl.ids.lock().expect("ids lock");
        (ids.replid.clone(), srv.repl.replica_offset.load(Relaxed))
    };
    // A node that never synced asks for a full copy.
    let synced_before = srv.repl.sync_full.load(Relaxed) > 0 || offset > 0;
    let (req_id, req_off) = if synced_before {
        (replid.clone(), offset.to_string())
    } else {
        ("?".to_string(), "-1".to_string())
    };
    let reply = command(&mut r, &["PSYNC", &req_id, &req_off]).await?;
    let mut pending = Vec::new();
    if let Some(rest) = reply.strip_prefix("+FULLRESYNC ") {
        let parts: Vec<&str> = rest.split_whitespace().collect();
        let (Some(new_id), Some(Ok(new_off))) =
            (parts.first(), parts.get(1).map(|s| s.parse::<u64>()))
        else {
            return Err(format!("bad FULLRESYNC line: {reply}"));
        };
        let primary_keys: Option<u64> = parts.get(2).and_then(|s| s.parse().ok());
        let local_keys: usize = (0..srv.ks.databases()).map(|db| srv.ks.db_size(db).0).sum();
        let accept_empty = srv.config().replica_accept_empty_primary;
        if primary_keys == Some(0) && local_keys > 0 && !accept_empty {
            // A primary that restarted empty must not silently wipe its replicas.
            srv.repl.empty_copies_refused.fetch_add(1, Relaxed);
            tracing::error!(primary = %addr, local_keys, "refusing a full copy from an empty primary that would erase this replica's data; set replica-accept-empty-primary yes to allow it");
            return Err("primary is empty; refusing to wipe local data".into());
        }
        *srv.repl.link.lock().expect("link lock") = LinkState::Syncing;
        pending = load_snapshot(srv, &mut r, epoch).await?;
        {
            let mut ids = srv.repl.ids.lock().expect("ids lock");
            ids.replid = new_id.to_string();
            ids.replid2 = "0".repeat(40);
            ids.second_offset = -1;
        }
        srv.repl.replica_offset.store(new_off, Relaxed);
        srv.repl
            .backlog
            .lock()
            .expect("backlog lock")
            .reset(new_off);
        srv.repl.sync_full.fetch_add(1, Relaxed);
        tracing::info!(primary = %addr, offset = new_off, "full resynchronization done");
    } else if let Some(rest) = reply.strip_prefix("+CONTINUE") {
        let new_id = rest.trim();
        if !new_id.is_empty() && new_id != replid {
            // Our primary was promoted: its old id becomes our second id.
            let mut ids = srv.repl.ids.lock().expect("ids lock");
            ids.replid2 = std::mem::replace(&mut ids.replid, new_id.to_string());
            ids.second_offset = offset as i64;
        }
        srv.repl.sync_partial_ok.fetch_add(1, Relaxed);
        tracing::info!(primary = %addr, offset, "partial resynchronization");
    } else {
        return Err(format!("PSYNC refused: {reply}"));
    }
    *srv.repl.link.lock().expect("link lock") = LinkState::Connected;
    srv.repl.link_last_io_ms.store(now_ms(), Relaxed);
    apply_stream(srv, r, pending, epoch).await
}

/// Flushes local data and loads the snapshot that follows `+FULLRESYNC`. Returns the stream
/// bytes that arrived after the snapshot's end.
async fn load_snapshot(
    srv: &Arc<ServerState>,
    r: &mut BufReader<TcpStream>,
    epoch: u64,
) -> Result<Vec<u8>, String> {
    shoal_commands::server::flush(srv, None, true);
    let limits = srv.encoding_limits();
    let mut loader = Loader::new(srv.ks.databases());
    let mut buf = vec![0u8; 256 * 1024];
    let mut bad = false;
    loop {
        if stale(srv, epoch) {
            return Err("role changed during the full copy".into());
        }
        let n = r.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("primary closed the connection during the full copy".into());
        }
        srv.repl.link_last_io_ms.store(now_ms(), Relaxed);
        let now = now_ms();
        let done = loader
            .feed(&buf[..n], |rec| match rec.to_entry(&limits) {
                Some(entry) => {
                    srv.ks.hlc.observe(rec.version);
                    let slot = key_slot(rec.key);
                    srv.ks
                        .lock(srv.ks.shard_of(slot))
                        .apply_put(rec.db, slot, entry, now);
                }
                None => bad = true,
            })
            .map_err(|e| e.to_string())?;
        if bad {
            return Err("snapshot holds a malformed value".into());
        }
        if let Some(used) = done {
            tracing::info!(keys = loader.records, "snapshot loaded");
            return Ok(buf[used..n].to_vec());
        }
    }
}

async fn send_ack(w: &mut TcpStream, offset: u64) -> Result<(), String> {
    let off = offset.to_string();
    let frame = format!(
        "*3\r\n$8\r\nREPLCONF\r\n$3\r\nACK\r\n${}\r\n{}\r\n",
        off.len(),
        off
    );
    w.write_all(frame.as_bytes())
        .await
        .map_err(|e| e.to_string())
}

async fn apply_stream(
    srv: &Arc<ServerState>,
    r: BufReader<TcpStream>,
    mut inbuf: Vec<u8>,
    epoch: u64,
) -> Result<(), String> {
    // Bytes the BufReader already holds belong to the stream too.
    let buffered = r.buffer().to_vec();
    inbuf.extend_from_slice(&buffered);
    let mut stream = r.into_inner();
    let mut decoder = RequestDecoder::default();
    let mut ranges = Vec::new();
    let mut last_ack = std::time::Instant::now();
    loop {
        if stale(srv, epoch) {
            return Ok(());
        }
        // Apply every complete frame.
        let mut pos = 0;
        let mut applied_any = false;
        loop {
            match decoder.decode(&inbuf, pos, &mut ranges) {
                Ok(Decoded::Frame { end, inline }) => {
                    let src: &[u8] = if inline {
                        decoder.inline_bytes()
                    } else {
                        &inbuf
                    };
                    let args: Vec<&[u8]> = ranges.iter().map(|r| &src[r.clone()]).collect();
                    apply_frame(srv, &args)?;
                    if srv.repl.save_rules_set.load(Relaxed) {
                        srv.repl.dirty.fetch_add(1, Relaxed);
                    }
                    pos = end;
                    applied_any = true;
                }
                Ok(Decoded::Empty { end }) => pos = end,
                Ok(Decoded::Incomplete) => break,
                Err(e) => return Err(format!("garbage in the replication stream: {}", e.0)),
            }
        }
        // The applied frames join our own backlog (at the primary's offsets) in one piece.
        if pos > 0 {
            srv.repl
                .backlog
                .lock()
                .expect("backlog lock")
                .append(&inbuf[..pos]);
            srv.repl.replica_offset.fetch_add(pos as u64, Relaxed);
        }
        inbuf.drain(..pos);
        decoder.shift(pos, &mut ranges);
        if applied_any || last_ack.elapsed() >= Duration::from_millis(ACK_INTERVAL_MS) {
            send_ack(&mut stream, srv.repl.replica_offset.load(Relaxed)).await?;
            last_ack = std::time::Instant::now();
        }
        let read = tokio::time::timeout(
            Duration::from_millis(ACK_INTERVAL_MS),
            stream.read_buf(&mut inbuf),
        )
        .await;
        match read {
            Err(_) => {}
            Ok(Ok(0)) => return Err("primary closed the connection".into()),
            Ok(Ok(_)) => srv.repl.link_last_io_ms.store(now_ms(), Relaxed),
            Ok(Err(e)) => return Err(e.to_string()),
        }
    }
}

fn parse_u64(b: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "bad number in the replication stream".to_string())
}

fn parse_opt(b: &[u8]) -> Result<Option<u64>, String> {
    if b == b"-1" {
        Ok(None)
    } else {
        parse_u64(b).map(Some)
    }
}

/// Applies one effect of the stream, by version.
fn apply_frame(srv: &ServerState, args: &[&[u8]]) -> Result<(), String> {
    let Some(name) = args.first() else {
        return Ok(());
    };
    let dbs = srv.ks.databases();
    let db_of = |b: &[u8]| -> Result<usize, String> {
        let d = parse_u64(b)? as usize;
        if d < dbs {
            Ok(d)
        } else {
            Err("database out of range in the stream".into())
        }
    };
    if name.eq_ignore_ascii_case(repl::PUT) && args.len() == 7 {
        let db = db_of(args[1])?;
        let version = parse_u64(args[3])?;
        let payload = codec::decode_value(args[6], &srv.encoding_limits())
            .ok_or_else(|| "bad value in the replication stream".to_string())?;
        let entry = Entry::new(
            args[2],
            payload,
            parse_opt(args[4])?,
            parse_opt(args[5])?,
            version,
            0,
        );
        srv.ks.hlc.observe(version);
        let slot = key_slot(args[2]);
        srv.ks
            .lock(srv.ks.shard_of(slot))
            .apply_put(db, slot, entry, now_ms());
    } else if name.eq_ignore_ascii_case(repl::DEL) && args.len() == 4 {
        let db = db_of(args[1])?;
        let version = parse_u64(args[3])?;
        srv.ks.hlc.observe(version);
        let slot = key_slot(args[2]);
        srv.ks
            .lock(srv.ks.shard_of(slot))
            .apply_del(db, slot, args[2], version);
    } else if name.eq_ignore_ascii_case(repl::FLUSH) && args.len() == 3 {
        let version = parse_u64(args[2])?;
        let db = parse_opt(args[1])?;
        for mut shard in srv.ks.lock_all() {
            for d in 0..dbs {
                if db.is_none_or(|x| x as usize == d) {
                    shard.apply_flush(d, version);
                }
            }
        }
    } else if name.eq_ignore_ascii_case(repl::SWAPDB) && args.len() == 3 {
        let (a, b) = (db_of(args[1])?, db_of(args[2])?);
        for mut shard in srv.ks.lock_all() {
            shard.swap_db(a, b);
        }
    } else if name.eq_ignore_ascii_case(b"PING") {
    } else {
        tracing::warn!(command = %String::from_utf8_lossy(name), "unknown effect in the replication stream; ignored");
    }
    Ok(())
}
